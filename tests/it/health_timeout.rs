//! A health check that cannot get its lock reports unknown while the others
//! report. Once its own binary, so that the lock it holds open stayed out
//! of other tests' cluster-wide activity checks; the one test with such
//! checks (health::quiet_when_clean_...) now has a cluster of its own.
//! The check that waits is a custom one reading the locked table: no
//! built-in check waits for a table's lock any more (table-bloat did,
//! through pg_relation_size, and now reads pg_class.relpages).

use crate::common;

use common::TestDb;

use common::health_check as check;

#[tokio::test]
async fn a_check_that_cannot_get_its_lock_reports_unknown_and_the_others_still_report() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE big (id int); INSERT INTO big SELECT generate_series(1, 10);")
        .await
        .unwrap();
    db.config(
        "[health]\nstatement_timeout = \"300ms\"\n\n\
         [health.custom.big_rows]\nsql = \"SELECT 'big' AS object, count(*) AS value FROM big\"\nwarning = 1000\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let run = db
        .pgmaint(&[
            "health",
            "--json",
            "--check",
            "big_rows",
            "--check",
            "table-bloat",
            "--check",
            "connections",
            "--check",
            "database-size",
        ])
        .await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    let report = run.json();
    let waiting = check(&report, "big_rows");
    assert_eq!(waiting["status"], "unknown", "{report}");
    assert!(
        waiting["summary"]
            .as_str()
            .unwrap()
            .contains("lock timeout"),
        "{waiting}"
    );
    assert_eq!(check(&report, "table-bloat")["status"], "ok", "{report}");
    assert_eq!(check(&report, "connections")["status"], "ok");
    assert_eq!(check(&report, "database-size")["status"], "ok");
    assert!(
        check(&report, "database-size")["summary"]
            .as_str()
            .unwrap()
            .contains("the database takes")
    );
}

//! A health check that cannot get its lock reports unknown while the others
//! report. Once its own binary, so that the lock it holds open stayed out
//! of other tests' cluster-wide activity checks; the one test with such
//! checks (health::quiet_when_clean_...) now has a cluster of its own.

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
    db.config("[health]\nstatement_timeout = \"300ms\"\n");
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
            "table-bloat",
            "--check",
            "connections",
            "--check",
            "database-size",
        ])
        .await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    let report = run.json();
    let bloat = check(&report, "table-bloat");
    assert_eq!(bloat["status"], "unknown", "{report}");
    assert!(
        bloat["summary"].as_str().unwrap().contains("lock timeout"),
        "{bloat}"
    );
    assert_eq!(check(&report, "connections")["status"], "ok");
    assert_eq!(check(&report, "database-size")["status"], "ok");
    assert!(
        check(&report, "database-size")["summary"]
            .as_str()
            .unwrap()
            .contains("the database takes")
    );
}

//! `parallel = N` against a real PostgreSQL: N walkers over disjoint page
//! ranges, each batch its own transaction, remove exactly the rows the
//! plan counts (in the batches it counts), back them up into one backup a
//! restore gives back whole, move an archive's rows exactly once, and lose
//! or duplicate nothing when killed.

use crate::common;

use common::TestDb;

/// `tokens`: 60,000 rows, every third expired, on every page.
async fn tokens(task_keys: &str) -> TestDb {
    let db = TestDb::with_sql(
        "CREATE TABLE tokens (id bigint PRIMARY KEY, expired boolean NOT NULL, note text);
         INSERT INTO tokens SELECT i, i % 3 = 0, md5(i::text) FROM generate_series(1, 60000) i;
         ANALYZE tokens;",
    )
    .await;
    db.config(&format!(
        "[backups]\ndir = \"backups\"\n\n[tasks.expired]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\nbatch_size = 500\nparallel = 4\n{task_keys}\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

#[tokio::test]
async fn four_walkers_remove_exactly_the_planned_rows_into_one_restorable_backup() {
    let db = tokens("backup = true").await;
    let before = common::checksum(&db, "SELECT * FROM tokens").await;
    let kept = common::checksum(&db, "SELECT * FROM tokens WHERE NOT expired").await;

    let plan = db.pgmaint(&["plan", "expired", "--json"]).await;
    plan.assert_code(0);
    let planned = &plan.json()["tasks"][0];
    assert_eq!(planned["rows"], 20000);
    assert_eq!(planned["details"]["walkers"], 4);
    let text = db.pgmaint(&["plan", "expired"]).await;
    let flat = text.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("4 walkers at once"), "{flat}");

    let run = db.pgmaint(&["-v", "run", "expired", "--json"]).await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("4 walkers over pages 0.."),
        "{}",
        run.stderr
    );
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], 20000);
    assert_eq!(task["details"]["walkers"], 4);
    assert_eq!(task["batches"], planned["batches"], "{task}");
    assert_eq!(common::checksum(&db, "SELECT * FROM tokens").await, kept);
    // The audit trail has the walkers' sum.
    assert_eq!(
        db.count("SELECT rows FROM pgmaint.task_runs ORDER BY id DESC LIMIT 1")
            .await,
        20000
    );
    // One backup holds every walker's rows.
    let listed = db.pgmaint(&["backups", "--json"]).await;
    let backups = listed.json()["backups"].as_array().unwrap().clone();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(backups[0]["rows"], 20000);
    let id = backups[0]["id"].as_i64().unwrap().to_string();
    db.pgmaint(&["restore", &id]).await.assert_code(0);
    assert_eq!(common::checksum(&db, "SELECT * FROM tokens").await, before);
}

#[tokio::test]
async fn walkers_of_an_archive_move_each_row_exactly_once() {
    let db = TestDb::with_sql(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, booked_at timestamptz NOT NULL, amount numeric(12,2));
         INSERT INTO ledger SELECT i, now() - CASE WHEN i % 2 = 0 THEN interval '100 days' ELSE interval '1 day' END, i * 0.5
           FROM generate_series(1, 40000) i;
         ANALYZE ledger;",
    )
    .await;
    db.config("[tasks.old]\nkind = \"archive\"\ntable = \"ledger\"\ntime_column = \"booked_at\"\nolder_than = \"90 days\"\nbatch_size = 400\nparallel = 3\n");
    db.pgmaint(&["init"]).await.assert_code(0);
    let before = common::checksum(&db, "SELECT * FROM ledger").await;
    let run = db.pgmaint(&["run", "old", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], 20000);
    assert_eq!(task["details"]["walkers"], 3);
    assert_eq!(db.count("SELECT count(*) FROM ledger_archive").await, 20000);
    assert_eq!(
        common::checksum(
            &db,
            "SELECT * FROM ledger UNION ALL SELECT id, booked_at, amount FROM ledger_archive"
        )
        .await,
        before
    );
}

#[tokio::test]
async fn kill_9_during_parallel_walkers_never_loses_or_duplicates_a_row() {
    let db = tokens("backup = true\npause = \"20ms\"").await;
    let before = common::checksum(&db, "SELECT * FROM tokens").await;
    let delays = common::kill_delays(11, 8, 150, 500);
    let kills = common::kill_after_each(
        delays,
        || db.command(&["-q", "run", "expired", "--batch-size", "200"]),
        async |_| {},
    )
    .await;
    assert!(kills >= 4, "only {kills} runs were killed mid-way");
    db.pgmaint(&["run", "expired"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE expired").await,
        0
    );
    // Every removed row is in exactly one backup: restoring them all gives
    // the table back.
    let listed = db.pgmaint(&["backups", "--json"]).await;
    let backups = listed.json()["backups"].as_array().unwrap().clone();
    let saved: i64 = backups.iter().map(|b| b["rows"].as_i64().unwrap()).sum();
    assert_eq!(saved, 20000, "{backups:?}");
    for backup in &backups {
        let id = backup["id"].as_i64().unwrap().to_string();
        db.pgmaint(&["restore", &id]).await.assert_code(0);
    }
    assert_eq!(common::checksum(&db, "SELECT * FROM tokens").await, before);
}

#[tokio::test]
async fn parallel_outside_1_to_16_is_a_config_error_at_its_key() {
    let db = TestDb::with_sql("CREATE TABLE t (id int PRIMARY KEY);").await;
    db.config("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"id < 0\"\nparallel = 0\n\n[tasks.b]\nkind = \"orphans\"\ntable = \"t\"\ncolumn = \"id\"\nreferences = \"t(id)\"\nparallel = 40\n");
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    assert!(
        check
            .stderr
            .contains("tasks.a.parallel: `parallel = 0` is not between 1 and 16"),
        "{}",
        check.stderr
    );
    assert!(
        check
            .stderr
            .contains("tasks.b.parallel: `parallel = 40` is not between 1 and 16"),
        "{}",
        check.stderr
    );
}

#[tokio::test]
async fn a_walker_that_fails_stops_the_others_and_every_row_done_is_counted() {
    let db = tokens("on_referenced = \"fail\"").await;
    // An expired token near the end is still referenced: the last walker's
    // batch there fails, as one walker's would.
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE uses (token_id bigint REFERENCES tokens (id));
             INSERT INTO uses VALUES (59997);",
        )
        .await
        .unwrap();
    let run = db.pgmaint(&["run", "expired", "--json"]).await;
    run.assert_code(1);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["status"], "failed", "{task}");
    let left = db.count("SELECT count(*) FROM tokens WHERE expired").await;
    assert!(left > 0, "the failing batch's rows stay");
    assert_eq!(task["rows"].as_i64().unwrap(), 20000 - left, "{task}");
    assert_eq!(
        db.count("SELECT rows FROM pgmaint.task_runs ORDER BY id DESC LIMIT 1")
            .await,
        20000 - left
    );
    let error = task["details"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("uses_token_id_fkey"), "{error}");
}

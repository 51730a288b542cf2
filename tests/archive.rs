//! archive against a real PostgreSQL: rows move exactly once, the archive
//! table is created like the source, mismatches are refused, and kill -9 at
//! random moments never loses or duplicates a row.

mod common;

use std::time::Duration;

use common::TestDb;

/// 10,000 ledger entries, odd ids older than 90 days.
async fn ledger(task_keys: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE ledger (id bigint PRIMARY KEY, booked_at timestamptz NOT NULL, amount numeric(12,2), memo text);
             INSERT INTO ledger SELECT i, now() - CASE WHEN i % 2 = 1 THEN interval '100 days' ELSE interval '1 day' END,
                                       i * 1.25, CASE WHEN i % 7 = 0 THEN NULL ELSE 'memo ' || i END
               FROM generate_series(1, 10000) i;
             ANALYZE ledger;",
        )
        .await
        .unwrap();
    db.config(&format!(
        "[tasks.old_ledger]\nkind = \"archive\"\ntable = \"ledger\"\ntime_column = \"booked_at\"\nolder_than = \"90 days\"\nbatch_size = 700\n{task_keys}\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

/// A checksum over every row of the given query's rows, order-independent.
async fn checksum(db: &TestDb, rows: &str) -> (i64, i64, String) {
    let row = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT id), coalesce(md5(string_agg(r::text, '|' ORDER BY id)), '') FROM ({rows}) r"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn dry_run_changes_nothing_then_run_moves_exactly_the_matching_rows() {
    let db = ledger("archived_at = \"archived_at\"").await;
    let before = checksum(&db, "SELECT * FROM ledger").await;

    let plan = db.pgmaint(&["plan", "old_ledger", "--json"]).await;
    plan.assert_code(0);
    let task = &plan.json()["tasks"][0];
    assert_eq!(task["rows"], 5000);
    assert_eq!(task["details"]["rows_exact"], true);
    assert_eq!(task["details"]["archive_table"], "public.ledger_archive");
    assert_eq!(task["details"]["creates_archive_table"], true);
    assert_eq!(checksum(&db, "SELECT * FROM ledger").await, before);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'ledger_archive'")
            .await,
        0,
        "a dry run creates nothing"
    );

    let run = db.pgmaint(&["run", "old_ledger", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 5000);
    assert_eq!(
        db.count("SELECT count(*) FROM ledger WHERE booked_at < now() - interval '90 days'")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM ledger").await, 5000);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM ledger_archive WHERE id % 2 = 1 AND archived_at IS NOT NULL"
        )
        .await,
        5000
    );
    // Source and archive together hold the original rows, once each.
    let together = checksum(
        &db,
        "SELECT * FROM ledger UNION ALL SELECT id, booked_at, amount, memo FROM ledger_archive",
    )
    .await;
    assert_eq!(together, before);
    // Created like the source: same primary key.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indrelid = 'ledger_archive'::regclass AND indisprimary")
            .await,
        1
    );
    // Nothing left to move.
    let again = db.pgmaint(&["run", "old_ledger", "--json"]).await;
    assert_eq!(again.json()["tasks"][0]["rows"], 0);
}

#[tokio::test]
async fn an_archive_table_with_different_columns_is_refused_naming_the_differences() {
    let db = ledger("archive_table = \"ledger_old\"").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE ledger_old (id bigint PRIMARY KEY, booked_at timestamptz, amount text)",
        )
        .await
        .unwrap();
    let before = checksum(&db, "SELECT * FROM ledger").await;
    for command in ["check", "run"] {
        let out = db
            .pgmaint(&[command, "old_ledger"][..if command == "check" { 1 } else { 2 }])
            .await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("tasks.old_ledger.archive_table"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("\"amount\" is text in the archive but numeric(12,2) in the source")
                && out.stderr.contains("\"memo\" (text) is missing"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(checksum(&db, "SELECT * FROM ledger").await, before);
    assert_eq!(db.count("SELECT count(*) FROM ledger_old").await, 0);
}

/// A small deterministic generator, so the kill moments are random-looking
/// but the same on every run of the test.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test]
async fn kill_9_at_random_moments_never_loses_or_duplicates_a_row() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, payload jsonb, note text);
             INSERT INTO events SELECT i, now() - (i % 100) * interval '1 day', jsonb_build_object('n', i), md5(i::text)
               FROM generate_series(1, 200000) i;
             ANALYZE events;",
        )
        .await
        .unwrap();
    db.config(
        "[tasks.old_events]\nkind = \"archive\"\ntable = \"events\"\ntime_column = \"at\"\nolder_than = \"30 days\"\nbatch_size = 500\npause = \"20ms\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let before = checksum(&db, "SELECT * FROM events").await;
    let expected_moved = db
        .count("SELECT count(*) FROM events WHERE at < now() - interval '30 days'")
        .await;

    let mut random = Lcg(0x5eed);
    let mut kills = 0;
    for _ in 0..12 {
        let mut child = db.command(&["-q", "run", "old_events"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(150 + random.next(600))).await;
        if child.try_wait().unwrap().is_none() {
            child.start_kill().unwrap();
            kills += 1;
        }
        child.wait().await.unwrap();
        // At every moment, every row is in exactly one of the two tables.
        let together = checksum(
            &db,
            "SELECT * FROM events UNION ALL SELECT * FROM events_archive",
        )
        .await;
        assert_eq!(together, before, "after kill {kills}");
    }
    assert!(kills >= 10, "only {kills} runs were killed mid-way");
    assert!(
        db.count("SELECT count(*) FROM events_archive").await < expected_moved,
        "the kills should have stopped the work before the end"
    );
    db.pgmaint(&["run", "old_events"]).await.assert_code(0);
    assert_eq!(
        checksum(
            &db,
            "SELECT * FROM events UNION ALL SELECT * FROM events_archive"
        )
        .await,
        before
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events_archive").await,
        expected_moved
    );
    let history = db
        .pgmaint(&["history", "--json", "--limit", "50"])
        .await
        .json();
    let interrupted = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "interrupted")
        .count();
    assert!(
        interrupted >= 10,
        "killed runs show as interrupted: {interrupted}"
    );
}

//! The `migrate` paths every file format shares, beyond the matrix of
//! `migrate_matrix`: `format = "auto"` told by the ledger, and its
//! refusals; `down --to`; a file deleted after it ran; `repair` of a run
//! that stopped; the `-- pgmaint: irreversible` line; dependency cycles.

use std::time::Duration;

use crate::migrate_sqlx::{db_with, write};

const AUTO: &str = "[migrations]\ndir = \"migrations\"\nlock_timeout = \"300ms\"\n";

#[tokio::test]
async fn auto_reads_the_ledger_when_the_files_could_be_two_formats_and_refuses_what_it_cannot_tell()
{
    // Pairs could be sqlx's or golang-migrate's: the `dirty` column says.
    let db = db_with(AUTO).await;
    write(&db, "migrations/1_t.up.sql", "CREATE TABLE t (id int);\n");
    write(&db, "migrations/1_t.down.sql", "DROP TABLE t;\n");
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
        )
        .await
        .unwrap();
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    assert_eq!(
        status.json()["format"],
        "golang-migrate",
        "{}",
        status.stdout
    );

    // Simple files and that ledger disagree.
    std::fs::remove_file(db.dir.path().join("migrations/1_t.down.sql")).unwrap();
    std::fs::rename(
        db.dir.path().join("migrations/1_t.up.sql"),
        db.dir.path().join("migrations/1_t.sql"),
    )
    .unwrap();
    let refused = db.pgmaint(&["migrate", "status"]).await;
    refused.assert_code(2);
    assert!(
        refused
            .stderr
            .contains("look like sqlx migrations but the database keeps a golang-migrate ledger")
            && refused.stderr.contains("format = \"sqlx\""),
        "{}",
        refused.stderr
    );

    // Two ledgers: which one these files belong to is the user's to say.
    client
        .batch_execute("CREATE TABLE _sqlx_migrations (version bigint PRIMARY KEY)")
        .await
        .unwrap();
    let refused = db.pgmaint(&["migrate", "status"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("several migration ledgers")
            && refused.stderr.contains("_sqlx_migrations")
            && refused.stderr.contains("set [migrations] format"),
        "{}",
        refused.stderr
    );

    // No file any format reads, and no ledger.
    let db = db_with(AUTO).await;
    write(&db, "migrations/README.txt", "our migrations\n");
    let refused = db.pgmaint(&["migrate", "status"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("no migrations found")
            && refused.stderr.contains("format = \"command\""),
        "{}",
        refused.stderr
    );
    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(2);
}

const SQLX: &str =
    "[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\nlock_timeout = \"300ms\"\n";

fn three(db: &crate::common::TestDb) {
    for (v, name) in [(1, "a"), (2, "b"), (3, "c")] {
        write(
            db,
            &format!("migrations/000{v}_{name}.up.sql"),
            &format!("CREATE TABLE {name} (id int);\n"),
        );
        write(
            db,
            &format!("migrations/000{v}_{name}.down.sql"),
            &format!("DROP TABLE {name};\n"),
        );
    }
}

async fn states(db: &crate::common::TestDb) -> Vec<String> {
    let states = crate::migrate_matrix::states(db).await;
    crate::migrate_matrix::statuses(&states)
        .into_iter()
        .map(String::from)
        .collect()
}

/// A `users` table made by migration 0001, applied.
async fn users_applied(db: &crate::common::TestDb) {
    write(
        db,
        "migrations/0001_users.up.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    );
    write(db, "migrations/0001_users.down.sql", "DROP TABLE users;\n");
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
}

#[tokio::test]
async fn down_to_a_version_reverts_every_newer_one_newest_first() {
    let db = db_with(SQLX).await;
    three(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let plan = db
        .pgmaint(&["migrate", "down", "--to", "0001", "--dry-run"])
        .await;
    plan.assert_code(0);
    let (c, b) = (
        plan.stdout.find("0003").unwrap(),
        plan.stdout.find("0002").unwrap(),
    );
    assert!(c < b, "newest first: {}", plan.stdout);
    assert_eq!(states(&db).await, ["applied", "applied", "applied"]);
    let down = db
        .pgmaint(&["migrate", "down", "--to", "0001", "--yes"])
        .await;
    down.assert_code(0);
    assert_eq!(states(&db).await, ["applied", "pending", "pending"]);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname IN ('a', 'b', 'c')")
            .await,
        1
    );
}

#[tokio::test]
async fn a_file_deleted_after_it_ran_is_missing() {
    let db = db_with(SQLX).await;
    three(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    for file in ["0002_b.up.sql", "0002_b.down.sql"] {
        std::fs::remove_file(db.dir.path().join("migrations").join(file)).unwrap();
    }
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status
            .stdout
            .contains("missing: applied, but no file has this version"),
        "{}",
        status.stdout
    );
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(1);
}

#[tokio::test]
async fn repair_forgets_where_a_stopped_run_was_so_up_starts_it_over() {
    let db = db_with(SQLX).await;
    let file = write(
        &db,
        "migrations/0001_t.up.sql",
        "-- no-transaction\nCREATE TABLE IF NOT EXISTS t (id int);\nSELECT 1/0;\n",
    );
    write(&db, "migrations/0001_t.down.sql", "DROP TABLE t;\n");
    db.pgmaint(&["migrate", "up"]).await.assert_code(1);
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("statement 2 of 2")
            && status.stdout.contains("division by zero")
            && status
                .stdout
                .contains("`migrate up` resumes at statement 2"),
        "{}",
        status.stdout
    );
    std::fs::write(
        &file,
        "-- no-transaction\nCREATE TABLE IF NOT EXISTS t (id int);\nSELECT 1;\n",
    )
    .unwrap();
    let dry = db
        .pgmaint(&["migrate", "repair", "0001", "--dry-run"])
        .await;
    dry.assert_code(0);
    assert!(dry.stdout.contains("Would forget"), "{}", dry.stdout);
    let repair = db.pgmaint(&["migrate", "repair", "0001"]).await;
    repair.assert_code(0);
    assert!(
        repair
            .stdout
            .contains("Forgot where migration 0001's up stopped"),
        "{}",
        repair.stdout
    );
    let up = db.pgmaint(&["migrate", "up", "--json"]).await;
    up.assert_code(0);
    let details = &up.json()["migrations"][0]["details"];
    assert_eq!(details["resumed_at"], serde_json::Value::Null, "{details}");
    assert_eq!(details["statements"][0]["skipped"], false);
    assert_eq!(states(&db).await, ["applied"]);
    // One repair left sqlx's ledger as sqlx-cli itself reads it: applied.
    let info = crate::migrate_sqlx::sqlx_info(&db);
    assert!(info.len() == 1 && info[0].contains("installed"), "{info:?}");
}

const PGMAINT: &str = "[migrations]\ndir = \"migrations\"\nformat = \"pgmaint\"\n";

#[tokio::test]
async fn an_irreversible_line_stops_down_before_that_migration() {
    let db = db_with(PGMAINT).await;
    write(
        &db,
        "migrations/0001_a.up.sql",
        "CREATE TABLE a (id int);\n",
    );
    write(&db, "migrations/0001_a.down.sql", "DROP TABLE a;\n");
    write(
        &db,
        "migrations/0002_backfill.up.sql",
        "-- pgmaint: irreversible\nINSERT INTO a VALUES (1);\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(2);
    assert!(
        down.stderr
            .contains("migration 0002 (backfill) is irreversible")
            && down.stderr.contains("down stops before it"),
        "{}",
        down.stderr
    );
    assert_eq!(states(&db).await, ["applied", "applied"]);
    assert_eq!(db.count("SELECT count(*) FROM a").await, 1);
}

#[tokio::test]
async fn a_dependency_cycle_is_refused_naming_its_members() {
    let db = db_with(PGMAINT).await;
    write(
        &db,
        "migrations/0001_a.up.sql",
        "-- pgmaint: depends=0002\nCREATE TABLE a (id int);\n",
    );
    write(&db, "migrations/0001_a.down.sql", "DROP TABLE a;\n");
    write(
        &db,
        "migrations/0002_b.up.sql",
        "-- pgmaint: depends=0001\nCREATE TABLE b (id int);\n",
    );
    write(&db, "migrations/0002_b.down.sql", "DROP TABLE b;\n");
    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(2);
    assert!(
        up.stderr.contains("form a cycle among")
            && up.stderr.contains("0001")
            && up.stderr.contains("0002"),
        "{}",
        up.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname IN ('a', 'b')")
            .await,
        0
    );
}

#[tokio::test]
async fn a_no_transaction_file_meeting_a_busy_lock_retries_that_statement_only() {
    let db = db_with(SQLX).await;
    users_applied(&db).await;
    write(
        &db,
        "migrations/0002_more.up.sql",
        "-- no-transaction\nINSERT INTO applied_log SELECT 1 FROM (SELECT 1) s WHERE false;\nCREATE TABLE IF NOT EXISTS runs_of_one (n int);\nINSERT INTO runs_of_one VALUES (1);\nALTER TABLE users ADD COLUMN flag boolean;\n",
    );
    write(
        &db,
        "migrations/0002_more.down.sql",
        "ALTER TABLE users DROP COLUMN flag;\nDROP TABLE runs_of_one;\n",
    );
    db.client()
        .await
        .batch_execute("CREATE TABLE applied_log (n int)")
        .await
        .unwrap();
    let holder = db.client().await;
    let hold = tokio::spawn(async move {
        holder
            .batch_execute("BEGIN; SELECT count(*) FROM users; SELECT pg_sleep(1.5); COMMIT;")
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let up = db.pgmaint(&["migrate", "up", "--json"]).await;
    hold.await.unwrap();
    up.assert_code(0);
    let statements = up.json()["migrations"][0]["details"]["statements"].clone();
    let retries: Vec<u64> = statements
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["retries"].as_u64().unwrap())
        .collect();
    assert_eq!(retries[..3], [0, 0, 0], "{statements}");
    assert!(retries[3] >= 1, "the ALTER met the lock: {statements}");
    assert_eq!(
        db.count("SELECT count(*) FROM runs_of_one").await,
        1,
        "the statements before it ran once"
    );
}

#[tokio::test]
async fn blockers_wait_gives_up_after_blockers_wait_and_changes_nothing() {
    let db = db_with(&format!(
        "{SQLX}blockers = \"wait\"\nblockers_wait = \"1s\"\n"
    ))
    .await;
    users_applied(&db).await;
    write(
        &db,
        "migrations/0002_flag.up.sql",
        "ALTER TABLE users ADD COLUMN flag boolean;\n",
    );
    write(
        &db,
        "migrations/0002_flag.down.sql",
        "ALTER TABLE users DROP COLUMN flag;\n",
    );
    let idle = db.client().await;
    idle.batch_execute("BEGIN; SELECT * FROM users;")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = db.pgmaint(&["migrate", "up"]).await;
    let took = started.elapsed();
    refused.assert_code(2);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(15),
        "waited about blockers_wait: {took:?}"
    );
    assert!(
        refused.stderr.contains("idle in transaction")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(states(&db).await, ["applied", "pending"]);

    // A long transaction that is busy, not idle, counts too.
    idle.batch_execute("COMMIT").await.unwrap();
    db.config(&format!("{SQLX}blockers = \"stop\"\n"));
    let busy = db.client().await;
    let hold = tokio::spawn(async move {
        let _ = busy
            .batch_execute("BEGIN; SELECT count(*) FROM users; SELECT pg_sleep(70); COMMIT;")
            .await;
    });
    db.client()
        .await
        .batch_execute("SELECT pg_sleep(0.2)")
        .await
        .unwrap();
    // Age it: the check counts a transaction open for over a minute.
    let old = db
        .count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(70)%' AND state = 'active' AND pid <> pg_backend_pid()")
        .await;
    assert_eq!(old, 1);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    db.client()
        .await
        .batch_execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(70)%' AND pid <> pg_backend_pid()")
        .await
        .unwrap();
    let _ = hold.await;
    assert_eq!(states(&db).await, ["applied", "pending"]);
}

#[tokio::test]
async fn a_migration_run_is_in_history_with_who_ran_it_and_each_statement_s_duration() {
    let db = db_with(SQLX).await;
    write(
        &db,
        "migrations/0001_users.up.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\nSELECT pg_sleep(0.2);\n",
    );
    write(&db, "migrations/0001_users.down.sql", "DROP TABLE users;\n");
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let history = db.pgmaint(&["history", "--json", "--limit", "1"]).await;
    history.assert_code(0);
    let run = &history.json()["runs"][0];
    assert_eq!(run["trigger"], "cli", "{run}");
    assert!(
        !run["triggered_by"].as_str().unwrap_or("").is_empty(),
        "who: {run}"
    );
    let task = &run["tasks"][0];
    assert_eq!(task["name"], "migrate:0001");
    assert_eq!(task["status"], "succeeded");
    let statements = task["details"]["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{task}");
    assert!(
        statements[1]["duration_ms"].as_f64().unwrap() >= 200.0,
        "{task}"
    );
    // sqlx's execution_time is in nanoseconds: at least the 0.2 s sleep.
    let nanos = db
        .count("SELECT execution_time FROM _sqlx_migrations WHERE version = 1")
        .await;
    assert!(
        (200_000_000..20_000_000_000).contains(&nanos),
        "execution_time {nanos}"
    );
}

#[tokio::test]
async fn plan_shows_each_file_s_transaction_and_timeouts_and_its_statements_in_order() {
    let db = db_with(&format!("{SQLX}statement_timeout = \"10min\"\n")).await;
    write(
        &db,
        "migrations/0001_t.up.sql",
        "CREATE TABLE t (id bigint);\nINSERT INTO t VALUES (1);\n",
    );
    write(&db, "migrations/0001_t.down.sql", "DROP TABLE t;\n");
    write(
        &db,
        "migrations/0002_idx.up.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
    );
    write(
        &db,
        "migrations/0002_idx.down.sql",
        "DROP INDEX IF EXISTS t_id;\n",
    );
    let plan = db.pgmaint(&["migrate", "plan"]).await;
    plan.assert_code(0);
    let out = &plan.stdout;
    let first = out
        .find("Would apply 0001/t (one transaction with its ledger row; lock_timeout 300ms, statement_timeout 600000ms)")
        .unwrap_or_else(|| panic!("{out}"));
    let second = out
        .find("Would apply 0002/idx (statement by statement, no transaction; lock_timeout 300ms")
        .unwrap_or_else(|| panic!("{out}"));
    let (create, insert) = (
        out.find("1. line 1    CREATE TABLE t").unwrap(),
        out.find("2. line 2    INSERT INTO t").unwrap(),
    );
    assert!(
        first < create && create < insert && insert < second,
        "{out}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 't'")
            .await,
        0,
        "a plan changes nothing"
    );
}

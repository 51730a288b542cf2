//! `migrate test` and `migrate drift` against a real PostgreSQL: each
//! down tried against its up on a scratch copy of the live schema, and
//! the live schema against its migrations replayed on an empty scratch
//! cluster (also as the `schema-drift` health check); neither changes the
//! live database.

use crate::common;
use crate::migrate_sqlx::{db_with, write};

const SQLX: &str = "[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n";

fn users(db: &common::TestDb) {
    write(
        db,
        "migrations/0001_users.up.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\n",
    );
    write(db, "migrations/0001_users.down.sql", "DROP TABLE users;\n");
}

#[tokio::test]
async fn a_down_that_forgets_to_drop_an_index_fails_migrate_test_naming_that_index() {
    let db = db_with(SQLX).await;
    users(&db);
    write(
        &db,
        "migrations/0002_users_email.up.sql",
        "CREATE INDEX users_email_idx ON users (email);\nALTER TABLE users ADD COLUMN name text;\n",
    );
    write(
        &db,
        "migrations/0002_users_email.down.sql",
        "ALTER TABLE users DROP COLUMN name;\n",
    );
    let text = db.pgmaint(&["migrate", "test"]).await;
    text.assert_code(1);
    assert!(
        text.stdout.contains("0001/users: reversible")
            && text.stdout.contains("0002/users email: not reversible")
            && text
                .stdout
                .contains("index public.users_email_idx is left after the down of 0002"),
        "{}",
        text.stdout
    );
    let json = db.pgmaint(&["migrate", "test", "--json"]).await;
    json.assert_code(1);
    let report = json.json();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["migrations"][0]["status"], "reversible");
    assert_eq!(report["migrations"][1]["status"], "not reversible");
    // migrate plan carries the same verdict per migration.
    let plan = db.pgmaint(&["migrate", "plan", "--json"]).await;
    plan.assert_code(0);
    let tested = &plan.json()["migrations"][1]["reversibility_tested"];
    assert_eq!(tested["status"], "not reversible", "{tested}");
    assert!(
        tested["diff"].to_string().contains("users_email_idx"),
        "{tested}"
    );
    // Nothing ran on the live database: no table, nothing in the ledger.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'users'")
            .await,
        0
    );

    // With the index dropped too, the cycle comes back as it was.
    write(
        &db,
        "migrations/0002_users_email.down.sql",
        "ALTER TABLE users DROP COLUMN name;\nDROP INDEX users_email_idx;\n",
    );
    let passed = db.pgmaint(&["migrate", "test"]).await;
    passed.assert_code(0);
    assert!(passed.stdout.contains("Passed"), "{}", passed.stdout);
}

#[tokio::test]
async fn migrate_test_with_data_finds_a_down_that_loses_the_values_it_keeps() {
    let db = db_with(SQLX).await;
    users(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    write(
        &db,
        "migrations/0002_email_length.up.sql",
        "ALTER TABLE users ALTER COLUMN email TYPE varchar(200);\n",
    );
    // Back to text, but every address overwritten on the way.
    write(
        &db,
        "migrations/0002_email_length.down.sql",
        "ALTER TABLE users ALTER COLUMN email TYPE text;\nUPDATE users SET email = 'lost';\n",
    );
    // Without rows, the schema alone comes back as it was.
    db.pgmaint(&["migrate", "test"]).await.assert_code(0);
    let run = db.pgmaint(&["migrate", "test", "--data", "--json"]).await;
    run.assert_code(1);
    let report = run.json();
    assert_eq!(
        report["seeded"],
        serde_json::json!(["public.users"]),
        "{report}"
    );
    let diff = report["migrations"][0]["diff"].to_string();
    assert!(
        diff.contains("column public.users.email loses its values in the down of 0002"),
        "{report}"
    );
    // The seed rows went to the copy only.
    assert_eq!(db.count("SELECT count(*) FROM users").await, 0);

    // --last 1: the newest applied one, down then up, from the live copy.
    let last = db
        .pgmaint(&["migrate", "test", "--last", "1", "--json"])
        .await;
    last.assert_code(0);
    assert_eq!(last.json()["migrations"][0]["version"], "0001");
    assert_eq!(last.json()["migrations"][0]["status"], "reversible");
}

#[tokio::test]
async fn an_index_made_by_hand_shows_in_drift_and_in_health_and_pgmaints_own_tables_do_not() {
    let db = db_with(&format!(
        "{SQLX}[tasks.old_events]\nkind = \"archive\"\ntable = \"events\"\ntime_column = \"at\"\nolder_than = \"30 days\"\n\n[tasks.monthly]\nkind = \"partitions\"\ntable = \"measures\"\ninterval = \"1 month\"\npremake = 2\n"
    ))
    .await;
    write(
        &db,
        "migrations/0001_tables.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\n\
         CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL);\n\
         CREATE TABLE measures (at timestamptz NOT NULL, value float8) PARTITION BY RANGE (at);\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    // What pgmaint's own tasks make: partitions and an archive table.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO events SELECT g, now() - interval '60 days' FROM generate_series(1, 10) g",
        )
        .await
        .unwrap();
    db.pgmaint(&["run", "monthly"]).await.assert_code(0);
    db.pgmaint(&["run", "old_events", "--yes"])
        .await
        .assert_code(0);
    assert!(db.count("SELECT count(*) FROM events_archive").await == 10);

    let clean = db.pgmaint(&["migrate", "drift", "--json"]).await;
    clean.assert_code(0);
    assert_eq!(clean.json()["status"], "none", "{}", clean.json());
    let left_out = clean.json()["left_out"].to_string();
    assert!(
        left_out.contains("events_archive") && left_out.contains("measures_p"),
        "{left_out}"
    );

    // What one application does by hand when login is slow.
    db.client()
        .await
        .batch_execute("CREATE INDEX IF NOT EXISTS idx_users_email ON users (email)")
        .await
        .unwrap();
    let drift = db.pgmaint(&["migrate", "drift"]).await;
    drift.assert_code(1);
    assert!(
        drift
            .stdout
            .contains("index public.idx_users_email is not made by any migration"),
        "{}",
        drift.stdout
    );
    assert!(!drift.stdout.contains("events_archive"), "{}", drift.stdout);

    let health = db
        .pgmaint(&["health", "--check", "schema-drift", "--json"])
        .await;
    let check = &health.json()["checks"][0];
    assert_eq!(check["status"], "warning", "{check}");
    assert_eq!(
        check["findings"][0]["object"],
        "index public.idx_users_email"
    );
    assert!(check["summary"].as_str().unwrap().contains("replayed now"));
    // Within drift_every (a day), the next check reports what was found
    // without another replay, even after the index is gone.
    db.client()
        .await
        .batch_execute("DROP INDEX idx_users_email")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let cached = db
        .pgmaint(&["health", "--check", "schema-drift", "--json"])
        .await;
    let check = &cached.json()["checks"][0];
    assert_eq!(
        check["findings"][0]["object"],
        "index public.idx_users_email"
    );
    assert!(
        check["summary"].as_str().unwrap().contains("as replayed"),
        "{check}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.drift_checks").await,
        1
    );
}

#[tokio::test]
async fn without_migrations_the_drift_check_says_it_was_not_run() {
    let db = common::TestDb::new().await;
    db.config("");
    db.pgmaint(&["init"]).await.assert_code(0);
    let health = db
        .pgmaint(&["health", "--check", "schema-drift", "--json"])
        .await;
    health.assert_code(0);
    let check = &health.json()["checks"][0];
    assert_eq!(check["status"], "ok");
    assert!(check["summary"].as_str().unwrap().contains("[migrations]"));
}

//! `pgmaint migrate` on dbmate and golang-migrate folders against a real
//! PostgreSQL. dbmate is the real tool (pinned by scripts/test, from npm):
//! what pgmaint applies `dbmate status` reads as applied, and what dbmate
//! applies pgmaint reads. golang-migrate does not install here: its
//! ledger is checked against its published definition (one row
//! `schema_migrations (version bigint not null primary key, dirty boolean
//! not null)`, dirty while a migration runs outside a transaction) and
//! its advisory lock key (`GenerateAdvisoryLockId(database, schema,
//! table)`), cited in docs/migrations.md.

use crate::common;

use std::time::Duration;

use common::TestDb;

use crate::migrate_sqlx::{db_with, write};

fn dbmate(db: &TestDb, args: &[&str]) -> (i32, String) {
    common::require_tool(
        "dbmate",
        "these tests check pgmaint's dbmate ledger against dbmate's own reading",
        "-",
        "-",
    );
    let out = std::process::Command::new("dbmate")
        .arg("--url")
        .arg(&db.url)
        .arg("--migrations-dir")
        .arg(db.dir.path().join("migrations"))
        .arg("--no-dump-schema")
        .args(args)
        .output()
        .expect("run dbmate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn dbmate_migrations_and_dbmate_agree_both_ways() {
    let db = db_with("[migrations]\ndir = \"migrations\"\nlock_timeout = \"300ms\"\n").await;
    write(
        &db,
        "migrations/20240101000001_create_users.sql",
        "-- migrate:up\nCREATE TABLE users (id bigint PRIMARY KEY, email text);\nINSERT INTO users SELECT g, g || '@x' FROM generate_series(1, 20) g;\n\n-- migrate:down\nDROP TABLE users;\n",
    );
    write(
        &db,
        "migrations/20240101000002_email_index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n\n-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY users_email;\n",
    );
    write(
        &db,
        "migrations/20240101000003_bio.sql",
        "-- migrate:up\nALTER TABLE users ADD COLUMN bio text;\n-- migrate:down\nALTER TABLE users DROP COLUMN bio;\n",
    );
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    assert_eq!(status.json()["format"], "dbmate");

    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let versions: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        vec!["20240101000001", "20240101000002", "20240101000003"]
    );
    let (code, text) = dbmate(&db, &["status"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Applied: 3") && text.contains("Pending: 0"),
        "{text}"
    );

    // Down the last two; dbmate sees them pending and applies them again.
    db.client()
        .await
        .batch_execute("UPDATE users SET bio = 'b' || id")
        .await
        .unwrap();
    let down = db
        .pgmaint(&["migrate", "down", "--steps", "2", "--yes"])
        .await;
    down.assert_code(0);
    assert!(
        down.stdout
            .contains("backed up 20 row(s) of public.users column bio"),
        "{}",
        down.stdout
    );
    let (_, text) = dbmate(&db, &["status"]);
    assert!(
        text.contains("Applied: 1") && text.contains("Pending: 2"),
        "{text}"
    );
    let (code, text) = dbmate(&db, &["up"]);
    assert_eq!(code, 0, "{text}");
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('users_email') AND indisvalid").await,
        1
    );

    // A new file in dbmate's template, which dbmate reads.
    db.pgmaint(&["migrate", "new", "add_flag"])
        .await
        .assert_code(0);
    let (_, text) = dbmate(&db, &["status"]);
    assert!(
        text.contains("Pending: 1") && text.contains("add_flag"),
        "{text}"
    );
}

#[tokio::test]
async fn a_file_pgmaint_applied_and_then_changed_is_reported_without_a_checksum_column() {
    let db = db_with("[migrations]\ndir = \"migrations\"\nformat = \"dbmate\"\n").await;
    let text = "-- migrate:up\nCREATE TABLE t (id int);\n-- migrate:down\nDROP TABLE t;\n";
    write(&db, "migrations/001_t.sql", text);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    write(
        &db,
        "migrations/001_t.sql",
        &text.replace("(id int)", "(id  int)"),
    );
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("only whitespace changed"),
        "{}",
        status.stdout
    );
    db.pgmaint(&["migrate", "repair", "001"])
        .await
        .assert_code(0);
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
}

async fn golang_ledger(db: &TestDb) -> Vec<(i64, bool)> {
    db.client()
        .await
        .query("SELECT version, dirty FROM schema_migrations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

const GOLANG: &str =
    "[migrations]\ndir = \"migrations\"\nformat = \"golang-migrate\"\nlock_timeout = \"300ms\"\n";

#[tokio::test]
async fn golang_migrate_s_one_row_ledger_is_kept_as_it_keeps_it() {
    let db = db_with(GOLANG).await;
    write(
        &db,
        "migrations/1_users.up.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text);\nINSERT INTO users VALUES (1, 'a'), (2, 'a'), (3, 'c');\n",
    );
    write(&db, "migrations/1_users.down.sql", "DROP TABLE users;\n");
    write(
        &db,
        "migrations/2_email.up.sql",
        "CREATE UNIQUE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    write(
        &db,
        "migrations/2_email.down.sql",
        "DROP INDEX CONCURRENTLY users_email;\n",
    );
    write(
        &db,
        "migrations/3_bio.up.sql",
        "ALTER TABLE users ADD COLUMN bio text;\n",
    );
    write(
        &db,
        "migrations/3_bio.down.sql",
        "ALTER TABLE users DROP COLUMN bio;\n",
    );

    // The concurrent build fails on the duplicate: the ledger is left as
    // golang-migrate leaves a failed migration, dirty at its version.
    let failed = db.pgmaint(&["migrate", "up"]).await;
    failed.assert_code(1);
    assert_eq!(golang_ledger(&db).await, vec![(2, true)]);
    let definition: Vec<(String, String, String)> = db
        .client()
        .await
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns WHERE table_name = 'schema_migrations' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        definition,
        vec![
            ("version".into(), "bigint".into(), "NO".into()),
            ("dirty".into(), "boolean".into(), "NO".into())
        ]
    );
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(status.stdout.contains("failed"), "{}", status.stdout);

    db.client()
        .await
        .batch_execute("UPDATE users SET email = 'b' WHERE id = 2")
        .await
        .unwrap();
    let up = db.pgmaint(&["migrate", "up", "--json"]).await;
    up.assert_code(0);
    assert_eq!(
        up.json()["migrations"][0]["details"]["dropped_invalid_index"],
        "users_email"
    );
    assert_eq!(golang_ledger(&db).await, vec![(3, false)]);

    db.pgmaint(&["migrate", "down", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(golang_ledger(&db).await, vec![(2, false)]);
    db.pgmaint(&["migrate", "down", "--steps", "2", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(
        golang_ledger(&db).await,
        vec![],
        "no version: the table is empty, as golang-migrate leaves it"
    );
    // Migration 1's rows again hold the duplicate; up to 1 only.
    db.pgmaint(&["migrate", "up", "--to", "1"])
        .await
        .assert_code(0);
    assert_eq!(golang_ledger(&db).await, vec![(1, false)]);
}

#[tokio::test]
async fn golang_migrate_s_advisory_lock_holds_pgmaint_back() {
    let db = db_with(GOLANG).await;
    write(&db, "migrations/1_t.up.sql", "CREATE TABLE t (id int);\n");
    write(&db, "migrations/1_t.down.sql", "DROP TABLE t;\n");
    // GenerateAdvisoryLockId(database, schema, table), as golang-migrate's
    // postgres driver calls it.
    let names = format!("public\0schema_migrations\0{}", db.name);
    let key = i64::from(crc32fast::hash(names.as_bytes()).wrapping_mul(1_486_364_155));
    let holder = db.client().await;
    holder
        .query_one("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    let up = tokio::spawn({
        let mut command = db.command(&["migrate", "up"]);
        async move { command.output().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 't'")
            .await,
        0,
        "pgmaint waits while golang-migrate holds the lock"
    );
    holder
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
    let out: common::Run = up.await.unwrap().into();
    out.assert_code(0);
    assert!(
        out.stderr.contains("Waiting for another migrator"),
        "{}",
        out.stderr
    );
    assert_eq!(golang_ledger(&db).await, vec![(1, false)]);
}

#[tokio::test]
async fn pairs_with_no_ledger_ask_which_format_they_are() {
    let db = db_with("[migrations]\ndir = \"migrations\"\n").await;
    write(&db, "migrations/1_t.up.sql", "CREATE TABLE t (id int);\n");
    write(&db, "migrations/1_t.down.sql", "DROP TABLE t;\n");
    let status = db.pgmaint(&["migrate", "status"]).await;
    status.assert_code(2);
    assert!(
        status
            .stderr
            .contains("format = \"sqlx\" or format = \"golang-migrate\""),
        "{}",
        status.stderr
    );
}

#[tokio::test]
async fn new_writes_each_format_s_files_and_they_apply() {
    for (format, config) in [
        ("golang-migrate", GOLANG.to_string()),
        (
            "pgmaint",
            "[migrations]\ndir = \"migrations\"\nformat = \"pgmaint\"\n".to_string(),
        ),
    ] {
        let db = db_with(&config).await;
        let new = db
            .pgmaint(&["migrate", "new", "create_things", "--json"])
            .await;
        new.assert_code(0);
        let files: Vec<String> = new.json()["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        assert_eq!(files.len(), 2, "{format}: {files:?}");
        assert!(
            files[0].ends_with("_create_things.up.sql")
                && files[1].ends_with("_create_things.down.sql"),
            "{format}: {files:?}"
        );
        std::fs::write(
            &files[0],
            format!(
                "{}CREATE TABLE things (id int);\n",
                std::fs::read_to_string(&files[0]).unwrap()
            ),
        )
        .unwrap();
        std::fs::write(&files[1], "DROP TABLE things;\n").unwrap();
        db.pgmaint(&["migrate", "up"]).await.assert_code(0);
        db.pgmaint(&["migrate", "down", "--yes"])
            .await
            .assert_code(0);
        assert_eq!(
            db.count("SELECT count(*) FROM pg_class WHERE relname = 'things'")
                .await,
            0,
            "{format}"
        );
    }
}

#[tokio::test]
async fn a_down_s_truncate_schema_cascade_and_type_cascade_are_backed_up() {
    let db = db_with(
        "[migrations]\ndir = \"migrations\"\nformat = \"pgmaint\"\nlock_timeout = \"300ms\"\n",
    )
    .await;
    write(
        &db,
        "migrations/0001_app.up.sql",
        "CREATE SCHEMA app;\nCREATE TABLE app.events (id bigint PRIMARY KEY, what text);\nCREATE TABLE app.tags (id bigint PRIMARY KEY, tag text);\nCREATE TYPE mood AS ENUM ('happy', 'sad');\nCREATE TABLE people (id bigint PRIMARY KEY, feeling mood, name text);\nCREATE TABLE scratch (id bigint PRIMARY KEY);\n",
    );
    write(
        &db,
        "migrations/0001_app.down.sql",
        "TRUNCATE scratch;\nDROP TYPE mood CASCADE;\nDROP SCHEMA app CASCADE;\nDROP TABLE people;\nDROP TABLE scratch;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    db.client()
        .await
        .batch_execute(
            "INSERT INTO app.events SELECT g, 'event ' || g FROM generate_series(1, 30) g;
             INSERT INTO app.tags VALUES (1, 'a'), (2, 'b');
             INSERT INTO people SELECT g, CASE WHEN g % 2 = 0 THEN 'happy' ELSE 'sad' END::mood, 'p' || g FROM generate_series(1, 10) g;
             INSERT INTO scratch SELECT generate_series(1, 5);",
        )
        .await
        .unwrap();
    let plan = db.pgmaint(&["migrate", "down", "--dry-run"]).await;
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("backs up the rows of scratch first")
            && plan
                .stdout
                .contains("backs up every column of type mood first")
            && plan
                .stdout
                .contains("backs up the rows of every table in schema app first")
            && !plan.stdout.contains("NOT backed up"),
        "{}",
        plan.stdout
    );
    let down = db.pgmaint(&["migrate", "down", "--yes", "--json"]).await;
    down.assert_code(0);
    let report = down.json();
    let backups: Vec<(String, Option<String>, i64)> = report["migrations"][0]["details"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["table"].as_str().unwrap().to_string(),
                b["column"].as_str().map(String::from),
                b["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("scratch", None, 5),
        ("people", Some("feeling"), 10),
        ("app.events", None, 30),
        ("app.tags", None, 2),
    ] {
        assert!(
            backups.iter().any(|(t, c, n)| t.ends_with(expected.0)
                && c.as_deref() == expected.1
                && *n == expected.2),
            "{expected:?} in {backups:?}"
        );
    }
    // Up again, then the backups put the rows back.
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    for b in report["migrations"][0]["details"]["backups"]
        .as_array()
        .unwrap()
    {
        if b["table"].as_str().unwrap().ends_with("people") {
            continue; // the table itself was dropped after its column
        }
        db.pgmaint(&["restore", &b["backup_id"].to_string()])
            .await
            .assert_code(0);
    }
    assert_eq!(db.count("SELECT count(*) FROM app.events").await, 30);
    assert_eq!(db.count("SELECT count(*) FROM scratch").await, 5);
}

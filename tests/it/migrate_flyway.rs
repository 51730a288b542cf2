//! `pgmaint migrate` on a Flyway folder against a real PostgreSQL. Flyway
//! needs a JVM, which does not install here: its ledger is checked against
//! Flyway's published definition of `flyway_schema_history` (its
//! `createMetaDataTable.sql` for PostgreSQL), its checksum rule (CRC32 of
//! the lines without their line breaks, as a signed integer, computed here
//! independently with Python's zlib) and its advisory lock key, cited in
//! docs/migrations.md.

use crate::common;

use std::time::Duration;

use common::TestDb;

use crate::migrate_sqlx::{db_with, write};

const CONFIG: &str =
    "[migrations]\ndir = \"migrations\"\nformat = \"flyway\"\nlock_timeout = \"300ms\"\n";

const CREATE_USERS: &str = "CREATE TABLE users (id bigint PRIMARY KEY, email text);\nINSERT INTO users SELECT g, g || '@x' FROM generate_series(1, 20) g;\n";
/// `zlib.crc32` of CREATE_USERS's lines joined without their breaks, as a
/// signed 32-bit integer (computed with Python).
const CREATE_USERS_CHECKSUM: i32 = 1650668976;

fn flyway_folder(db: &TestDb) {
    write(db, "migrations/V1__create_users.sql", CREATE_USERS);
    write(db, "migrations/U1__create_users.sql", "DROP TABLE users;\n");
    write(
        db,
        "migrations/V1_1__add_bio.sql",
        "ALTER TABLE users ADD COLUMN bio text;\n",
    );
    write(
        db,
        "migrations/U1_1__add_bio.sql",
        "ALTER TABLE users DROP COLUMN bio;\n",
    );
    write(
        db,
        "migrations/V2__email_index.sql",
        "CREATE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    write(
        db,
        "migrations/U2__email_index.sql",
        "DROP INDEX CONCURRENTLY users_email;\n",
    );
    write(
        db,
        "migrations/R__user_emails.sql",
        "CREATE OR REPLACE VIEW user_emails AS SELECT email FROM users;\n",
    );
}

/// (installed_rank, version, description, type, script, checksum, success)
type HistoryRow = (
    i32,
    Option<String>,
    String,
    String,
    String,
    Option<i32>,
    bool,
);

async fn history(db: &TestDb) -> Vec<HistoryRow> {
    db.client()
        .await
        .query(
            "SELECT installed_rank, version, description, type, script, checksum, success FROM flyway_schema_history ORDER BY installed_rank",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

/// Each migration's (version, status) in `migrate status --json`.
pub(crate) fn states(status: &serde_json::Value) -> Vec<(String, String)> {
    status["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A history row, borrowed.
type RowRef<'a> = (i32, Option<&'a str>, &'a str, &'a str, &'a str, bool);

#[tokio::test]
async fn up_undo_up_keeps_the_history_flyway_keeps() {
    let db = db_with("[migrations]\ndir = \"migrations\"\nlock_timeout = \"300ms\"\n").await;
    flyway_folder(&db);
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    assert_eq!(status.json()["format"], "flyway", "found from the names");

    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let rows = history(&db).await;
    let expected: Vec<RowRef> = vec![
        (
            1,
            Some("1"),
            "create users",
            "SQL",
            "V1__create_users.sql",
            true,
        ),
        (2, Some("1.1"), "add bio", "SQL", "V1_1__add_bio.sql", true),
        (
            3,
            Some("2"),
            "email index",
            "SQL",
            "V2__email_index.sql",
            true,
        ),
        (4, None, "user emails", "SQL", "R__user_emails.sql", true),
    ];
    let got: Vec<RowRef> = rows
        .iter()
        .map(|r| {
            (
                r.0,
                r.1.as_deref(),
                r.2.as_str(),
                r.3.as_str(),
                r.4.as_str(),
                r.6,
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(rows[0].5, Some(CREATE_USERS_CHECKSUM), "Flyway's CRC32");
    // The table is Flyway's: its columns, types, key and index.
    let columns: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT column_name || ' ' || data_type || coalesce('(' || character_maximum_length || ')', '') || ' ' || is_nullable
               FROM information_schema.columns WHERE table_name = 'flyway_schema_history' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        vec![
            "installed_rank integer NO",
            "version character varying(50) YES",
            "description character varying(200) NO",
            "type character varying(20) NO",
            "script character varying(1000) NO",
            "checksum integer YES",
            "installed_by character varying(100) NO",
            "installed_on timestamp without time zone NO",
            "execution_time integer NO",
            "success boolean NO",
        ]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_indexes WHERE tablename = 'flyway_schema_history' AND indexname IN ('flyway_schema_history_pk', 'flyway_schema_history_s_idx')").await,
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM flyway_schema_history WHERE installed_by = current_user AND execution_time >= 0").await,
        4
    );

    // Undo newest first with the U files: two DELETE rows (what `flyway
    // repair` writes for a migration it forgets, which every Flyway reads
    // as not applied), the history kept.
    db.pgmaint(&["migrate", "down", "--steps", "2", "--yes"])
        .await
        .assert_code(0);
    let rows = history(&db).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(
        (
            rows[4].1.as_deref(),
            rows[4].3.as_str(),
            rows[4].4.as_str(),
            rows[4].5,
            rows[4].6
        ),
        (Some("2"), "DELETE", "V2__email_index.sql", rows[2].5, true)
    );
    assert_eq!(
        (rows[5].1.as_deref(), rows[5].3.as_str()),
        (Some("1.1"), "DELETE")
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'users_email'")
            .await,
        0,
        "the U file ran"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'bio'").await,
        0
    );
    let status = db.pgmaint(&["migrate", "status", "--json"]).await.json();
    assert_eq!(
        states(&status),
        vec![
            ("1".into(), "applied".into()),
            ("1.1".into(), "pending".into()),
            ("2".into(), "pending".into()),
            ("R__user_emails".into(), "applied".into()),
        ]
    );

    // And up again: new SQL rows after the undos.
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let rows = history(&db).await;
    assert_eq!(
        rows[6..]
            .iter()
            .map(|r| (r.1.as_deref(), r.3.as_str()))
            .collect::<Vec<_>>(),
        vec![(Some("1.1"), "SQL"), (Some("2"), "SQL")]
    );
    let status = db
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(0);
}

#[tokio::test]
async fn a_changed_repeatable_runs_again_and_line_endings_alone_change_nothing() {
    let db = db_with(CONFIG).await;
    flyway_folder(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    // Flyway's checksum reads lines: CRLF endings are the same file.
    write(
        &db,
        "migrations/V1__create_users.sql",
        &CREATE_USERS.replace('\n', "\r\n"),
    );
    write(
        &db,
        "migrations/R__user_emails.sql",
        "CREATE OR REPLACE VIEW user_emails AS SELECT email, id FROM users;\n",
    );
    let status = db.pgmaint(&["migrate", "status", "--json"]).await.json();
    let states = states(&status);
    assert_eq!(states[0], ("1".into(), "applied".into()), "{status}");
    assert_eq!(
        states[3],
        ("R__user_emails".into(), "pending".into()),
        "a changed repeatable is pending again: {status}"
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let rows = history(&db).await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last.0, last.1.as_deref(), last.2.as_str()),
        (5, None, "user emails")
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'user_emails'"
        )
        .await,
        2
    );
    // A real change to a versioned file is a modification.
    write(
        &db,
        "migrations/V1_1__add_bio.sql",
        "ALTER TABLE users ADD COLUMN bio varchar(200);\n",
    );
    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(2);
    assert!(
        up.stderr
            .contains("migration 1.1 (add bio) was applied and has been modified"),
        "{}",
        up.stderr
    );
    db.pgmaint(&["migrate", "repair", "1.1"])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM flyway_schema_history WHERE version = '1.1' AND checksum = (SELECT checksum FROM flyway_schema_history WHERE version = '1.1' ORDER BY installed_rank DESC LIMIT 1)").await,
        1
    );
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
}

#[tokio::test]
async fn a_failed_concurrent_build_leaves_a_failed_row_and_resumes() {
    let db = db_with(CONFIG).await;
    write(&db, "migrations/V1__create_users.sql", CREATE_USERS);
    write(
        &db,
        "migrations/V2__unique_email.sql",
        "UPDATE users SET email = 'same@x' WHERE id IN (1, 2);\n",
    );
    write(
        &db,
        "migrations/V3__email_index.sql",
        "CREATE INDEX CONCURRENTLY users_id_email ON users (id, email);\nCREATE UNIQUE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    let failed = db.pgmaint(&["migrate", "up"]).await;
    failed.assert_code(1);
    let rows = history(&db).await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last.1.as_deref(), last.6),
        (Some("3"), false),
        "what Flyway leaves for a migration that stopped part-way: {rows:?}"
    );
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("statement 2 of 2"),
        "{}",
        status.stdout
    );
    db.client()
        .await
        .batch_execute("UPDATE users SET email = 'two@x' WHERE id = 2")
        .await
        .unwrap();
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let rows = history(&db).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.1.as_deref() == Some("3"))
            .map(|r| r.6)
            .collect::<Vec<_>>(),
        vec![true],
        "the failed row is replaced, as `flyway repair` then `migrate` would: {rows:?}"
    );
}

#[tokio::test]
async fn dotted_versions_order_as_flyway_orders_them_and_to_stops_there() {
    let db =
        db_with("[migrations]\ndir = \"migrations\"\nformat = \"flyway\"\nrequire_down = false\n")
            .await;
    write(&db, "migrations/V1__a.sql", "CREATE TABLE seen (v text);\n");
    for v in ["1.9", "1.10", "1.2", "2"] {
        write(
            &db,
            &format!("migrations/V{}__step.sql", v.replace('.', "_")),
            &format!("INSERT INTO seen VALUES ('{v}');\n"),
        );
    }
    db.pgmaint(&["migrate", "up", "--to", "1.10"])
        .await
        .assert_code(0);
    let seen: Vec<String> = db
        .client()
        .await
        .query("SELECT v FROM seen", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec!["1.2", "1.9", "1.10"]);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM seen").await, 4);

    // `new` goes on after the highest version.
    let new = db.pgmaint(&["migrate", "new", "add_more"]).await;
    new.assert_code(0);
    assert!(
        db.dir.path().join("migrations/V3__add_more.sql").exists(),
        "{}",
        new.stdout
    );
}

#[tokio::test]
async fn flyway_s_lock_makes_pgmaint_wait() {
    let db = db_with(CONFIG).await;
    write(&db, "migrations/V1__create_users.sql", CREATE_USERS);
    // Flyway's key for "public"."flyway_schema_history": "Flyway" in
    // ASCII (0x466C79776179) plus Java's String.hashCode of the quoted
    // name, computed with Python.
    let holder = db.client().await;
    holder
        .batch_execute("SELECT pg_advisory_lock(77433833903597)")
        .await
        .unwrap();
    let mut up = db.command(&["migrate", "up"]);
    let child = up.output();
    let released = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'users'")
                .await,
            0,
            "nothing runs while Flyway holds its lock"
        );
        holder
            .batch_execute("SELECT pg_advisory_unlock(77433833903597)")
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(child, released);
    let out: common::Run = out.unwrap().into();
    out.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM users").await,
        20,
        "{}",
        out.stderr
    );
}

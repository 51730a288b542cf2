//! `pgmaint migrate` on sqlx migrations against a real PostgreSQL, checked
//! against the real sqlx-cli (pinned by scripts/test): a folder applied,
//! reverted and re-applied with `sqlx migrate info` agreeing at each step
//! and the other way round; a no-transaction concurrent index build that
//! fails half-way and resumes; busy locks retried, idle blockers refused;
//! kill -9 mid-migration; a down that drops data, restored; changed files
//! told apart; two `up` at once; baseline; new; out-of-order.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestDb;
use sha2::Digest;

const CONFIG: &str = "[migrations]\ndir = \"migrations\"\ndown_dir = \"rollback\"\nlock_timeout = \"300ms\"\nrequire_down = false\n";

/// A test database with pgmaint's state schema, a config, and empty
/// `migrations/` and `rollback/` folders (`migrate_formats` uses it too).
pub(crate) async fn db_with(config: &str) -> TestDb {
    let db = TestDb::new().await;
    db.config(config);
    std::fs::create_dir_all(db.dir.path().join("migrations")).unwrap();
    std::fs::create_dir_all(db.dir.path().join("rollback")).unwrap();
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

pub(crate) fn write(db: &TestDb, path: &str, text: &str) -> PathBuf {
    let path = db.dir.path().join(path);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the real sqlx-cli on this database's folder.
fn sqlx(db: &TestDb, args: &[&str]) -> (i32, String) {
    common::require_tool(
        "sqlx",
        "these tests check pgmaint's _sqlx_migrations against sqlx-cli's own reading",
        "-",
        "-",
    );
    let out = std::process::Command::new("sqlx")
        .args(args)
        .arg("--source")
        .arg(db.dir.path().join("migrations"))
        .arg("--database-url")
        .arg(&db.url)
        .output()
        .expect("run sqlx");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `sqlx migrate info`'s line for each migration.
pub(crate) fn sqlx_info(db: &TestDb) -> Vec<String> {
    let (code, text) = sqlx(db, &["migrate", "info"]);
    assert_eq!(code, 0, "sqlx migrate info: {text}");
    text.lines()
        .filter(|l| l.contains('/'))
        .map(|l| l.trim().to_string())
        .collect()
}

async fn ledger(db: &TestDb) -> Vec<(i64, String, bool, Vec<u8>, i64)> {
    db.client()
        .await
        .query("SELECT version, description, success, checksum, execution_time FROM _sqlx_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn sha384(path: &Path) -> Vec<u8> {
    sha2::Sha384::digest(std::fs::read(path).unwrap()).to_vec()
}

/// Three simple migrations with their rollbacks in `rollback/`, as one of
/// our applications keeps them.
fn three_migrations(db: &TestDb) -> Vec<PathBuf> {
    vec![
        write(
            db,
            "migrations/0001_create_users.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\nINSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 100) g;\n",
        ),
        write(
            db,
            "migrations/0002_add_bio.sql",
            "-- a column the down drops\nALTER TABLE users ADD COLUMN bio text;\n",
        ),
        write(
            db,
            "migrations/0003_notes.sql",
            "CREATE TABLE notes (id bigint PRIMARY KEY, body text);\n",
        ),
    ]
}

fn three_rollbacks(db: &TestDb) {
    write(
        db,
        "rollback/0002_add_bio_down.sql",
        "ALTER TABLE users DROP COLUMN bio;\n",
    );
    write(db, "rollback/0003_notes_down.sql", "DROP TABLE notes;\n");
    write(
        db,
        "rollback/0001_create_users_down.sql",
        "DROP TABLE users;\n",
    );
}

#[tokio::test]
async fn up_down_up_keeps_the_ledger_sqlx_reads() {
    let db = db_with(CONFIG).await;
    let files = three_migrations(&db);
    three_rollbacks(&db);

    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    assert_eq!(status.json()["format"], "sqlx");
    let pending = db.pgmaint(&["migrate", "status", "--exit-code"]).await;
    pending.assert_code(1);
    assert!(pending.stdout.contains("pending"), "{}", pending.stdout);

    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(0);
    assert!(
        up.stdout.contains("Applied 0001/create users ("),
        "{}",
        up.stdout
    );
    assert!(up.stdout.contains("Applied 0003/notes ("), "{}", up.stdout);
    // The ledger as sqlx writes it: its descriptions, SHA-384 of the bytes,
    // nanoseconds.
    let rows = ledger(&db).await;
    assert_eq!(rows.len(), 3);
    for ((version, description, success, checksum, nanos), file) in rows.iter().zip(&files) {
        assert!(*success);
        assert_eq!(checksum, &sha384(file), "version {version}");
        assert!(
            *nanos > 0,
            "execution_time in nanoseconds, written after the commit"
        );
        assert!(["create users", "add bio", "notes"].contains(&description.as_str()));
    }
    let info = sqlx_info(&db);
    assert_eq!(info.len(), 3, "{info:?}");
    assert!(
        info.iter()
            .all(|l| l.contains("installed") && !l.contains("different checksum")),
        "{info:?}"
    );
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
    let again = db.pgmaint(&["migrate", "up"]).await;
    again.assert_code(0);
    assert!(
        again.stdout.contains("Nothing to apply"),
        "{}",
        again.stdout
    );

    // Down without --yes and without a terminal changes nothing.
    let refused = db.pgmaint(&["migrate", "down"]).await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(ledger(&db).await.len(), 3);

    let down = db
        .pgmaint(&["migrate", "down", "--steps", "2", "--yes"])
        .await;
    down.assert_code(0);
    assert!(
        down.stdout.contains("Reverted 0003/notes"),
        "{}",
        down.stdout
    );
    assert!(
        down.stdout.contains("Reverted 0002/add bio"),
        "{}",
        down.stdout
    );
    assert_eq!(ledger(&db).await.len(), 1);
    let info = sqlx_info(&db);
    assert!(
        info[0].contains("installed") && info[1].contains("pending") && info[2].contains("pending"),
        "{info:?}"
    );

    // The other way round: sqlx applies what pgmaint reverted, and pgmaint
    // agrees it is applied.
    let (code, text) = sqlx(&db, &["migrate", "run"]);
    assert_eq!(code, 0, "{text}");
    let status = db.pgmaint(&["migrate", "status", "--exit-code"]).await;
    status.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM users").await, 100);

    // Every migration run is in the history, each statement with its time.
    let history = db.pgmaint(&["history", "--json", "--limit", "5"]).await;
    history.assert_code(0);
    let runs = history.json()["runs"].as_array().unwrap().clone();
    let commands: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        commands.contains(&"migrate:0003".to_string()),
        "{commands:?}"
    );
}

#[tokio::test]
async fn reversible_pairs_and_new_files_are_what_sqlx_reads() {
    // `.up.sql` pairs could be golang-migrate's too: the format is set.
    let db = db_with("[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n").await;
    let new = db.pgmaint(&["migrate", "new", "create_things"]).await;
    new.assert_code(0);
    assert!(
        new.stdout.contains(".up.sql") && new.stdout.contains(".down.sql"),
        "{}",
        new.stdout
    );
    let up_file = std::fs::read_dir(db.dir.path().join("migrations"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".up.sql"))
        .unwrap();
    std::fs::write(&up_file, "CREATE TABLE things (id int);\n").unwrap();
    let down_file = PathBuf::from(up_file.to_string_lossy().replace(".up.sql", ".down.sql"));
    std::fs::write(&down_file, "DROP TABLE things;\n").unwrap();
    let info = sqlx_info(&db);
    assert_eq!(info.len(), 1, "sqlx lists the new migration: {info:?}");
    assert!(
        info[0].contains("pending") && info[0].contains("create things"),
        "{info:?}"
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    assert!(sqlx_info(&db)[0].contains("installed"));
    db.pgmaint(&["migrate", "down", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'things'")
            .await,
        0
    );
    // sqlx reverts what pgmaint applied, too.
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let (code, text) = sqlx(&db, &["migrate", "revert"]);
    assert_eq!(code, 0, "{text}");
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    assert_eq!(status.json()["migrations"][0]["status"], "pending");
}

#[tokio::test]
async fn a_concurrent_index_build_that_fails_half_way_resumes_after_the_fix() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text, name text);\nINSERT INTO users VALUES (1, 'a@x', 'a'), (2, 'a@x', 'b'), (3, 'c@x', 'c');\n",
    );
    write(
        &db,
        "migrations/0002_indexes.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY users_name ON users (name);\nCREATE UNIQUE INDEX CONCURRENTLY users_email ON users (email);\nCREATE INDEX CONCURRENTLY users_both ON users (email, name);\n",
    );
    let failed = db.pgmaint(&["migrate", "up"]).await;
    failed.assert_code(1);
    assert!(
        failed.stderr.contains("0002_indexes.sql:3:"),
        "the failing statement's place: {}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("23505") || failed.stderr.contains("duplicate"),
        "{}",
        failed.stderr
    );
    let invalid = db.count("SELECT count(*) FROM pg_index WHERE indexrelid = 'users_email'::regclass AND NOT indisvalid").await;
    assert_eq!(invalid, 1, "the failed build left an invalid index");
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("statement 2 of 3"),
        "{}",
        status.stdout
    );
    let rows = ledger(&db).await;
    assert_eq!(
        rows.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(),
        vec![(1, true), (2, false)],
        "sqlx's ledger says the migration stopped part-way"
    );
    let (code, said) = sqlx(&db, &["migrate", "run"]);
    assert_ne!(
        code, 0,
        "sqlx refuses to start a partly applied file over: {said}"
    );
    assert!(
        said.contains("partially applied") || said.contains("dirty"),
        "{said}"
    );

    db.client()
        .await
        .batch_execute("UPDATE users SET email = 'b@x' WHERE id = 2")
        .await
        .unwrap();
    let resumed = db.pgmaint(&["migrate", "up", "--json"]).await;
    resumed.assert_code(0);
    let report = resumed.json();
    let details = &report["migrations"][0]["details"];
    assert_eq!(details["resumed_at"], 2, "{report}");
    assert_eq!(details["dropped_invalid_index"], "users_email");
    assert_eq!(
        details["statements"][0]["skipped"], true,
        "statement 1 is not run again"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indrelid = 'users'::regclass AND indisvalid")
            .await,
        4,
        "primary key and three valid indexes"
    );
    assert!(sqlx_info(&db).iter().all(|l| l.contains("installed")));
}

#[tokio::test]
async fn a_session_idle_in_a_transaction_on_the_table_stops_the_migration() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    write(
        &db,
        "migrations/0002_add_column.sql",
        "ALTER TABLE users ADD COLUMN flag boolean;\n",
    );
    let idle = db.client().await;
    idle.batch_execute("BEGIN; SELECT * FROM users;")
        .await
        .unwrap();
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("idle in transaction")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(ledger(&db).await.len(), 1);

    // With blockers = "wait", the migration waits for it to end.
    db.config(&format!(
        "{CONFIG}blockers = \"wait\"\nblockers_wait = \"20s\"\n"
    ));
    let up = tokio::spawn({
        let mut command = db.command(&["migrate", "up"]);
        async move { command.output().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    idle.batch_execute("COMMIT").await.unwrap();
    let out: common::Run = up.await.unwrap().into();
    out.assert_code(0);
    assert_eq!(ledger(&db).await.len(), 2);
}

#[tokio::test]
async fn kill_9_mid_migration_then_status_and_up_finish_it() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text);\nINSERT INTO users SELECT g, g::text FROM generate_series(1, 1000) g;\n",
    );
    write(
        &db,
        "migrations/0002_slow.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\nSELECT pg_sleep(3);\nCREATE TABLE after_sleep (id int);\n",
    );
    let mut child = db.command(&["migrate", "up"]).spawn().unwrap();
    db.wait_for_count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(3)%' AND state = 'active'",
        |n| n > 0,
        "the migration's second statement running",
    )
    .await;
    common::signal(child.id().unwrap(), libc::SIGKILL);
    let _ = child.wait().await;
    // The killed session's statement ends with its connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("0002") && status.stdout.contains("statement 2 of 3"),
        "{}",
        status.stdout
    );
    let up = db.pgmaint(&["migrate", "up", "--json"]).await;
    up.assert_code(0);
    assert_eq!(up.json()["migrations"][0]["details"]["resumed_at"], 2);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'after_sleep'")
            .await,
        1
    );
    assert!(sqlx_info(&db).iter().all(|l| l.contains("installed")));
}

#[tokio::test]
async fn what_a_down_drops_is_backed_up_and_restored() {
    let db = db_with(CONFIG).await;
    three_migrations(&db);
    three_rollbacks(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let c = db.client().await;
    c.batch_execute(
        "UPDATE users SET bio = CASE WHEN id % 3 = 0 THEN NULL ELSE 'bio of ' || id || E' \"quoted\", new\\nline' END;
         INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g;",
    )
    .await
    .unwrap();
    let bios = common::checksum(&db, "SELECT id, bio FROM users").await;
    let notes = common::checksum(&db, "SELECT * FROM notes").await;

    let plan = db
        .pgmaint(&["migrate", "down", "--steps", "2", "--dry-run"])
        .await;
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("backs up column bio of users first"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("backs up the rows of notes first"),
        "{}",
        plan.stdout
    );

    let down = db
        .pgmaint(&["migrate", "down", "--steps", "2", "--yes", "--json"])
        .await;
    down.assert_code(0);
    let report = down.json();
    let backup_of = |i: usize| {
        report["migrations"][i]["details"]["backups"][0]["backup_id"]
            .as_i64()
            .unwrap()
    };
    let (notes_backup, bio_backup) = (backup_of(0), backup_of(1));
    assert_eq!(
        report["migrations"][1]["details"]["backups"][0]["rows"], 67,
        "the non-NULL bios"
    );

    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    db.pgmaint(&["restore", &bio_backup.to_string()])
        .await
        .assert_code(0);
    db.pgmaint(&["restore", &notes_backup.to_string()])
        .await
        .assert_code(0);
    assert_eq!(
        common::checksum(&db, "SELECT id, bio FROM users").await,
        bios
    );
    assert_eq!(common::checksum(&db, "SELECT * FROM notes").await, notes);
    let listed = db.pgmaint(&["backups", "--json"]).await;
    assert_eq!(listed.json()["backups"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_down_that_fails_leaves_the_data_and_the_ledger_as_they_were() {
    let db = db_with(CONFIG).await;
    three_migrations(&db);
    three_rollbacks(&db);
    write(
        &db,
        "rollback/0003_notes_down.sql",
        "DROP TABLE notes;\nSELECT 1/0;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    db.client()
        .await
        .batch_execute("INSERT INTO notes VALUES (1, 'kept')")
        .await
        .unwrap();
    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(1);
    assert!(
        down.stderr.contains("0003_notes_down.sql:2:"),
        "{}",
        down.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM notes").await, 1);
    assert_eq!(ledger(&db).await.len(), 3);
    let listed = db.pgmaint(&["backups", "--json"]).await;
    assert_eq!(
        listed.json()["backups"].as_array().unwrap().len(),
        0,
        "the rolled-back down left no backup listed"
    );
}

#[tokio::test]
async fn changed_files_are_told_apart_and_repair_accepts_them() {
    let db = db_with(CONFIG).await;
    let files = three_migrations(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let original = std::fs::read_to_string(&files[1]).unwrap();

    let cases = [
        (
            original.replace('\n', "\r\n"),
            "only its line endings changed",
        ),
        (
            original.replace("ADD COLUMN bio", "ADD COLUMN   bio"),
            "only whitespace changed",
        ),
        (
            original.replace("-- a column the down drops", "-- the bio column"),
            "only comments",
        ),
        (
            original.replace("bio text", "bio varchar(10)"),
            "its statements changed",
        ),
    ];
    for (text, says) in &cases {
        std::fs::write(&files[1], text).unwrap();
        let status = db.pgmaint(&["migrate", "status"]).await;
        assert!(status.stdout.contains(says), "{says}: {}", status.stdout);
        db.pgmaint(&["migrate", "status", "--exit-code"])
            .await
            .assert_code(1);
        let up = db.pgmaint(&["migrate", "up"]).await;
        up.assert_code(2);
        assert!(up.stderr.contains("migrate repair 0002"), "{}", up.stderr);
        let (_, info) = sqlx(&db, &["migrate", "info"]);
        assert!(
            info.contains("different checksum"),
            "sqlx sees the change too: {info}"
        );
    }
    // Accepting the comment-only change: sqlx then agrees.
    std::fs::write(&files[1], &cases[2].0).unwrap();
    let dry = db
        .pgmaint(&["migrate", "repair", "0002", "--dry-run"])
        .await;
    dry.assert_code(0);
    assert!(dry.stdout.contains("Would accept"), "{}", dry.stdout);
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(1);
    let repair = db.pgmaint(&["migrate", "repair", "0002"]).await;
    repair.assert_code(0);
    assert!(repair.stdout.contains("only comments"), "{}", repair.stdout);
    assert!(
        sqlx_info(&db)
            .iter()
            .all(|l| l.contains("installed") && !l.contains("different"))
    );
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
    let history = db.pgmaint(&["history", "--json"]).await;
    assert!(
        history
            .stdout
            .contains("Accepted the changed file of migration 0002"),
        "audited: {}",
        history.stdout
    );
}

#[tokio::test]
async fn baseline_marks_a_database_migrated_by_hand() {
    let db = db_with(CONFIG).await;
    three_migrations(&db);
    db.client()
        .await
        .batch_execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, bio text)")
        .await
        .unwrap();
    let dry = db
        .pgmaint(&["migrate", "baseline", "0002", "--dry-run"])
        .await;
    dry.assert_code(0);
    assert!(
        dry.stdout.contains("Would mark 2 migration(s)"),
        "{}",
        dry.stdout
    );
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    assert!(
        status.json()["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "pending"),
        "the dry run changed nothing"
    );
    let baseline = db.pgmaint(&["migrate", "baseline", "0002"]).await;
    baseline.assert_code(0);
    assert!(
        baseline.stdout.contains("Marked 2 migration(s)"),
        "{}",
        baseline.stdout
    );
    let info = sqlx_info(&db);
    assert!(
        info[0].contains("installed")
            && info[1].contains("installed")
            && info[2].contains("pending"),
        "{info:?}"
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM users").await,
        0,
        "0001 did not run"
    );
}

#[tokio::test]
async fn out_of_order_pending_migrations_need_the_flag() {
    let db = db_with(CONFIG).await;
    write(&db, "migrations/0001_a.sql", "CREATE TABLE a (id int);\n");
    write(&db, "migrations/0003_c.sql", "CREATE TABLE c (id int);\n");
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    write(&db, "migrations/0002_b.sql", "CREATE TABLE b (id int);\n");
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(status.stdout.contains("out of order"), "{}", status.stdout);
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--allow-out-of-order") && refused.stderr.contains("0002"),
        "{}",
        refused.stderr
    );
    db.pgmaint(&["migrate", "up", "--allow-out-of-order"])
        .await
        .assert_code(0);
    assert_eq!(ledger(&db).await.len(), 3);
}

#[tokio::test]
async fn a_migration_without_a_down_is_refused_unless_irreversible() {
    let db = db_with(CONFIG).await;
    three_migrations(&db);
    write(
        &db,
        "rollback/0002_add_bio_down.sql",
        "ALTER TABLE users DROP COLUMN bio;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let refused = db.pgmaint(&["migrate", "down", "--yes"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("0003") && refused.stderr.contains("has no down"),
        "{}",
        refused.stderr
    );
    db.config(&format!("{CONFIG}irreversible = [\"0003\"]\n"));
    let stopped = db.pgmaint(&["migrate", "down", "--yes"]).await;
    stopped.assert_code(2);
    assert!(
        stopped.stderr.contains("irreversible"),
        "{}",
        stopped.stderr
    );
    assert_eq!(ledger(&db).await.len(), 3);
}

#[tokio::test]
async fn pgmaint_s_own_format_orders_by_dependencies() {
    let db = db_with("[migrations]\ndir = \"migrations\"\n").await;
    write(
        &db,
        "migrations/0001_b.up.sql",
        "-- pgmaint: depends=0002\nCREATE TABLE b (a_id int REFERENCES a (id));\n",
    );
    write(&db, "migrations/0001_b.down.sql", "DROP TABLE b;\n");
    write(
        &db,
        "migrations/0002_a.up.sql",
        "-- pgmaint: transaction=none\nCREATE TABLE a (id int PRIMARY KEY);\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
    );
    write(&db, "migrations/0002_a.down.sql", "DROP TABLE a;\n");
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    assert_eq!(status.json()["format"], "pgmaint");
    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(0);
    let a = up.stdout.find("0002/a").unwrap();
    let b = up.stdout.find("0001/b").unwrap();
    assert!(a < b, "the dependency first: {}", up.stdout);
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.migrations").await, 2);
    db.pgmaint(&["migrate", "down", "--steps", "2", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.migrations").await, 0);
}

#[tokio::test]
async fn a_transactional_migration_that_fails_is_rolled_back_whole() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_two.sql",
        "CREATE TABLE first_half (id int);\nCREATE TABLE first_half (id int);\n",
    );
    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(1);
    assert!(
        up.stderr.contains("0001_two.sql:2:1:") && up.stderr.contains("42P07"),
        "{}",
        up.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'first_half'")
            .await,
        0,
        "rolled back whole"
    );
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("rolled back whole"),
        "{}",
        status.stdout
    );
    write(
        &db,
        "migrations/0001_two.sql",
        "CREATE TABLE first_half (id int);\nCREATE TABLE second_half (id int);\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
}

const TOKEN: &str = "migrations-api-token-of-32-characters!";

#[tokio::test]
async fn a_big_table_s_lock_needs_confirmation_on_the_cli_and_through_the_api() {
    let config = format!("[api]\ntoken = \"{TOKEN}\"\n\n{CONFIG}confirm_above = \"8kB\"\n");
    let db = db_with(&config).await;
    write(
        &db,
        "migrations/0001_events.sql",
        "CREATE TABLE events (id bigint PRIMARY KEY, body text);\nINSERT INTO events SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    write(
        &db,
        "migrations/0002_flag.sql",
        "ALTER TABLE events ADD COLUMN flag boolean NOT NULL DEFAULT false;\n",
    );
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused
            .stderr
            .contains("holds ACCESS EXCLUSIVE on public.events")
            && refused.stderr.contains("traced on a scratch copy")
            && refused.stderr.contains("--yes"),
        "{}",
        refused.stderr
    );
    assert_eq!(ledger(&db).await.len(), 1);

    let daemon = db.daemon().await;
    let (code, body) = daemon
        .http("GET", "/api/v1/migrations", Some(TOKEN), "")
        .await;
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["migrations"][1]["status"], "pending", "{listed}");
    let (code, body) = daemon
        .http(
            "POST",
            "/api/v1/migrations/up",
            Some(TOKEN),
            r#"{"dry_run": true}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("holds ACCESS EXCLUSIVE on public.events"),
        "{body}"
    );
    let (code, body) = daemon
        .http("POST", "/api/v1/migrations/up", None, "{}")
        .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = daemon
        .http("POST", "/api/v1/migrations/up", Some(TOKEN), "{}")
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("confirm"), "{body}");
    assert_eq!(ledger(&db).await.len(), 1, "refused: nothing changed");
    let (code, body) = daemon
        .http(
            "POST",
            "/api/v1/migrations/up",
            Some(TOKEN),
            r#"{"confirm": true}"#,
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let run_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"]
        .as_i64()
        .unwrap();
    db.wait_for_count(
        "SELECT count(*) FROM _sqlx_migrations WHERE execution_time > 0",
        |n| n == 2,
        "the API's migration applied",
    )
    .await;
    let path = format!("/api/v1/runs/{run_id}");
    let run = common::wait_for(
        "the API's migration run to finish",
        Duration::from_secs(30),
        async || {
            let (code, body) = daemon.http("GET", &path, Some(TOKEN), "").await;
            (code == 200 && body.contains("\"succeeded\"")).then_some(body)
        },
    )
    .await;
    assert!(run.contains("migrate:0002") && run.contains("api"), "{run}");
    assert!(sqlx_info(&db).iter().all(|l| l.contains("installed")));
    let (_, doc) = daemon
        .http("GET", "/api/v1/openapi.json", Some(TOKEN), "")
        .await;
    assert!(
        doc.contains("/api/v1/migrations/up"),
        "in the OpenAPI document"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_failed_migration_notifies_as_a_failed_task_does() {
    let (url, mut inbox) = crate::daemon::receiver().await;
    let db = db_with(&format!(
        "[notifiers.hook]\nkind = \"webhook\"\nurl = \"{url}\"\n\n{CONFIG}"
    ))
    .await;
    write(
        &db,
        "migrations/0001_bad.sql",
        "CREATE TABLE t (id int);\nSELECT 1/0;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(1);
    let got = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the receiver runs");
    let text = got.json.to_string();
    assert!(
        text.contains("migrate up") && text.contains("failed") && text.contains("division by zero"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_no_transaction_file_resumes_after_a_fix_further_on_and_refuses_a_change_to_what_ran()
 {
    let db = db_with(CONFIG).await;
    write(&db, "migrations/0001_t.sql", "CREATE TABLE t (id int);\n");
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let file = "migrations/0002_fill.sql";
    write(
        &db,
        file,
        "-- no-transaction\nINSERT INTO t VALUES (2);\nSELECT 1/0;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(1);
    // The statement that ran is changed: refused, nothing runs again.
    write(
        &db,
        file,
        "-- no-transaction\nINSERT INTO t VALUES (3);\nSELECT 1;\n",
    );
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("changed among them"),
        "{}",
        refused.stderr
    );
    // Only what comes after it is fixed: resumes, the insert runs once.
    write(
        &db,
        file,
        "-- no-transaction\nINSERT INTO t VALUES (2);\nSELECT 1;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM t").await, 1);
}

#[tokio::test]
async fn transaction_control_in_a_file_is_refused_before_anything_runs() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_t.sql",
        "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n",
    );
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("0001_t.sql:1:1") && refused.stderr.contains("-- no-transaction"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 't'")
            .await,
        0
    );
}

#[tokio::test]
async fn an_irreversible_marker_does_not_make_sqlx_files_pgmaint_s() {
    let db = db_with("[migrations]\ndir = \"migrations\"\n").await;
    write(
        &db,
        "migrations/0001_t.sql",
        "-- pgmaint: irreversible\nCREATE TABLE t (id int);\n",
    );
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    assert_eq!(status.json()["format"], "sqlx");
    assert_eq!(status.json()["migrations"][0]["irreversible"], true);
}

#[tokio::test]
async fn a_dropped_column_comes_back_over_the_default_an_up_gave_it() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_orders.sql",
        "CREATE TABLE orders (id int PRIMARY KEY);\nINSERT INTO orders SELECT generate_series(1, 10);\n",
    );
    write(
        &db,
        "migrations/0002_status.sql",
        "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'new';\n",
    );
    write(
        &db,
        "rollback/0002_status_down.sql",
        "ALTER TABLE orders DROP COLUMN status;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    db.client()
        .await
        .batch_execute("UPDATE orders SET status = 'paid' WHERE id <= 5")
        .await
        .unwrap();
    let before = common::checksum(&db, "SELECT id, status FROM orders").await;
    let down = db.pgmaint(&["migrate", "down", "--yes", "--json"]).await;
    down.assert_code(0);
    let backup = down.json()["migrations"][0]["details"]["backups"][0]["backup_id"]
        .as_i64()
        .unwrap();
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    db.pgmaint(&["restore", &backup.to_string()])
        .await
        .assert_code(0);
    assert_eq!(
        common::checksum(&db, "SELECT id, status FROM orders").await,
        before
    );
}

#[tokio::test]
async fn a_failed_concurrent_build_in_another_schema_is_cleaned_up_and_resumed() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_app.sql",
        "CREATE SCHEMA app;\nCREATE TABLE app.u (id int PRIMARY KEY, v text);\nINSERT INTO app.u VALUES (1, 'a'), (2, 'a');\n",
    );
    write(
        &db,
        "migrations/0002_index.sql",
        "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY u_v ON app.u (v);\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(1);
    db.client()
        .await
        .batch_execute("UPDATE app.u SET v = 'b' WHERE id = 2")
        .await
        .unwrap();
    let up = db.pgmaint(&["migrate", "up", "--json"]).await;
    up.assert_code(0);
    assert_eq!(
        up.json()["migrations"][0]["details"]["dropped_invalid_index"],
        "u_v"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_index WHERE indexrelid = 'app.u_v'::regclass AND indisvalid"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_transactional_down_that_fails_leaves_the_migration_applied() {
    let db = db_with(CONFIG).await;
    write(&db, "migrations/0001_t.sql", "CREATE TABLE t (id int);\n");
    write(
        &db,
        "rollback/0001_t_down.sql",
        "DROP TABLE t;\nSELECT 1/0;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    db.pgmaint(&["migrate", "down", "--yes"])
        .await
        .assert_code(1);
    write(&db, "migrations/0002_u.sql", "CREATE TABLE u (id int);\n");
    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(0);
    assert_eq!(ledger(&db).await.len(), 2);
}

#[tokio::test]
async fn require_down_refuses_a_migration_without_one() {
    let db = db_with("[migrations]\ndir = \"migrations\"\ndown_dir = \"rollback\"\n").await;
    write(&db, "migrations/0001_t.sql", "CREATE TABLE t (id int);\n");
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("require_down"),
        "{}",
        refused.stderr
    );
    write(&db, "rollback/0001_t_down.sql", "DROP TABLE t;\n");
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
}

#[tokio::test]
async fn a_sqlx_toml_with_migrate_options_is_refused() {
    let db = db_with(CONFIG).await;
    write(&db, "migrations/0001_t.sql", "CREATE TABLE t (id int);\n");
    write(
        &db,
        "sqlx.toml",
        "[migrate]\ntable-name = \"app._sqlx_migrations\"\n",
    );
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("sqlx.toml"), "{}", refused.stderr);
}

#[tokio::test]
async fn a_concurrent_build_waits_out_an_old_snapshot_instead_of_rebuilding() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_t.sql",
        "CREATE TABLE t (id int);\nINSERT INTO t SELECT generate_series(1, 1000);\nCREATE TABLE other (id int);\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    write(
        &db,
        "migrations/0002_index.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
    );
    // A report's snapshot, on another table, held for 2 s: the build waits
    // for it to end (longer than lock_timeout = 300ms), once.
    let reporter = db.client().await;
    let report = tokio::spawn(async move {
        reporter
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other; SELECT pg_sleep(2); COMMIT;")
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let up = db.pgmaint(&["migrate", "up", "--json"]).await;
    report.await.unwrap();
    up.assert_code(0);
    let statement = &up.json()["migrations"][0]["details"]["statements"][0];
    assert_eq!(statement["retries"], 0, "{statement}");
    assert!(
        statement["duration_ms"].as_f64().unwrap() > 1000.0,
        "it waited for the snapshot: {statement}"
    );
}

#[tokio::test]
async fn the_api_says_when_another_migrator_holds_the_lock_before_its_request_times_out() {
    let db = db_with(&format!("[api]\ntoken = \"{TOKEN}\"\n\n{CONFIG}")).await;
    write(&db, "migrations/0001_t.sql", "CREATE TABLE t (id int);\n");
    // sqlx's own key for this database, held as `sqlx migrate run` holds it.
    let key = 0x3d32ad9e_i64 * i64::from(crc32fast::hash(db.name.as_bytes()));
    let holder = db.client().await;
    holder
        .query_one("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    let daemon = db.daemon().await;
    let started = std::time::Instant::now();
    let (code, body) = daemon
        .http("POST", "/api/v1/migrations/up", Some(TOKEN), "{}")
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("migration lock"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "answered before the request timeout"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 't'")
            .await,
        0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_down_dropping_a_column_of_a_table_without_a_primary_key_is_refused_naming_it() {
    let db = db_with(CONFIG).await;
    write(
        &db,
        "migrations/0001_events.sql",
        "CREATE TABLE events (at timestamptz NOT NULL, note text);\nINSERT INTO events SELECT now(), 'n' || g FROM generate_series(1, 20) g;\n",
    );
    write(
        &db,
        "rollback/0001_events_down.sql",
        "ALTER TABLE events DROP COLUMN note;\n",
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(2);
    assert!(
        down.stderr.contains(
            "the down 0001_events_down.sql drops column note of public.events, which has no primary key"
        ) && down.stderr.contains("-- pgmaint: irreversible")
            && down.stderr.contains("nothing was changed"),
        "{}",
        down.stderr
    );
    assert_eq!(db.count("SELECT count(note) FROM events").await, 20);
    assert_eq!(ledger(&db).await.len(), 1);
}

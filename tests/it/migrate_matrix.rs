//! The same scenarios on every file format pgmaint reads (sqlx, dbmate,
//! golang-migrate, Flyway, drizzle, pgmaint's own), each format's files
//! written as its tool lays them out: a folder applied, reverted and
//! applied again with what the down dropped restored to the same
//! checksum; a no-transaction concurrent index build that fails half-way
//! and resumes; kill -9 mid-migration; changed files told apart; two `up`
//! at once; `baseline`; out-of-order files; a busy lock; `new`. The
//! tools' own readings of the ledgers are in each format's own test file.

use crate::common;

use std::time::Duration;

use common::TestDb;

use crate::migrate_sqlx::db_with;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Sqlx,
    Dbmate,
    Golang,
    Flyway,
    Drizzle,
    Pgmaint,
}

/// One migration, in no format yet.
struct M {
    v: u32,
    name: &'static str,
    up: String,
    down: Option<String>,
    /// Outside a transaction: said by the format's marker where it has
    /// one (sqlx, dbmate, pgmaint); found from the statements elsewhere.
    no_tx: bool,
}

fn m(v: u32, name: &'static str, up: &str, down: &str) -> M {
    M {
        v,
        name,
        up: up.to_string(),
        down: Some(down.to_string()),
        no_tx: false,
    }
}

impl Fmt {
    fn name(self) -> &'static str {
        match self {
            Fmt::Sqlx => "sqlx",
            Fmt::Dbmate => "dbmate",
            Fmt::Golang => "golang-migrate",
            Fmt::Flyway => "flyway",
            Fmt::Drizzle => "drizzle",
            Fmt::Pgmaint => "pgmaint",
        }
    }

    fn config(self) -> String {
        format!(
            "[migrations]\ndir = \"migrations\"\nformat = \"{}\"\nlock_timeout = \"300ms\"\n",
            self.name()
        )
    }

    fn has_downs(self) -> bool {
        self != Fmt::Drizzle
    }

    /// The path of migration `mig`'s up file, relative to the folder.
    fn up_file(self, mig: &M) -> String {
        let (v, name) = (mig.v, mig.name);
        match self {
            Fmt::Sqlx | Fmt::Pgmaint => format!("{v:04}_{name}.up.sql"),
            Fmt::Dbmate => format!("2024010100000{v}_{name}.sql"),
            Fmt::Golang => format!("{v:06}_{name}.up.sql"),
            Fmt::Flyway => format!("V{v}__{name}.sql"),
            Fmt::Drizzle => format!("{:04}_{name}.sql", v - 1),
        }
    }

    /// The up file's text (dbmate's holds the down too).
    fn up_text(self, mig: &M) -> String {
        let statements = |sql: &str| match self {
            // drizzle-kit separates statements with a breakpoint line.
            Fmt::Drizzle => sql
                .trim_end()
                .replace(";\n", ";\n--> statement-breakpoint\n"),
            _ => sql.to_string(),
        };
        match self {
            Fmt::Sqlx if mig.no_tx => format!("-- no-transaction\n{}", mig.up),
            Fmt::Pgmaint if mig.no_tx => format!("-- pgmaint: transaction=none\n{}", mig.up),
            Fmt::Dbmate => format!(
                "-- migrate:up{}\n{}\n-- migrate:down\n{}",
                if mig.no_tx { " transaction:false" } else { "" },
                mig.up,
                mig.down.as_deref().unwrap_or("")
            ),
            _ => statements(&mig.up),
        }
    }

    /// Writes `migs` into `db`'s folder (drizzle's journal listing them).
    fn write(self, db: &TestDb, migs: &[M]) {
        let dir = db.dir.path().join("migrations");
        for mig in migs {
            std::fs::write(dir.join(self.up_file(mig)), self.up_text(mig)).unwrap();
            let down = match (self, &mig.down) {
                (Fmt::Sqlx | Fmt::Pgmaint, Some(_)) => {
                    Some(format!("{:04}_{}.down.sql", mig.v, mig.name))
                }
                (Fmt::Golang, Some(_)) => Some(format!("{:06}_{}.down.sql", mig.v, mig.name)),
                (Fmt::Flyway, Some(_)) => Some(format!("U{}__{}.sql", mig.v, mig.name)),
                _ => None,
            };
            if let (Some(file), Some(text)) = (down, &mig.down) {
                std::fs::write(dir.join(file), text).unwrap();
            }
        }
        if self == Fmt::Drizzle {
            std::fs::create_dir_all(dir.join("meta")).unwrap();
            let mut all: Vec<(u32, String)> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let tag = name.strip_suffix(".sql")?.to_string();
                    Some((tag[..4].parse::<u32>().ok()?, tag))
                })
                .collect();
            all.sort();
            let entries: Vec<serde_json::Value> = all
                .iter()
                .map(|(idx, tag)| {
                    serde_json::json!({"idx": idx, "version": "7", "when": 1_700_000_000_000u64 + u64::from(*idx) * 1000, "tag": tag, "breakpoints": true})
                })
                .collect();
            std::fs::write(
                dir.join("meta/_journal.json"),
                serde_json::to_string_pretty(
                    &serde_json::json!({"version": "7", "dialect": "postgresql", "entries": entries}),
                )
                .unwrap(),
            )
            .unwrap();
        }
    }
}

async fn db_for(fmt: Fmt) -> TestDb {
    db_with(&fmt.config()).await
}

/// Each migration's (version, status) from `migrate status --json`.
pub(crate) async fn states(db: &TestDb) -> Vec<(String, String)> {
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    crate::migrate_flyway::states(&status.json())
}

pub(crate) fn statuses(states: &[(String, String)]) -> Vec<&str> {
    states.iter().map(|(_, s)| s.as_str()).collect()
}

const USERS: &str = "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\nINSERT INTO users SELECT g, 'u' || g || '@x' FROM generate_series(1, 30) g;\n";

fn users() -> M {
    m(1, "users", USERS, "DROP TABLE users;\n")
}

async fn up_down_up_and_restore(fmt: Fmt) {
    let db = db_for(fmt).await;
    fmt.write(
        &db,
        &[
            users(),
            m(
                2,
                "bio",
                "ALTER TABLE users ADD COLUMN bio text;\n",
                "ALTER TABLE users DROP COLUMN bio;\n",
            ),
        ],
    );
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    assert_eq!(statuses(&states(&db).await), ["applied", "applied"]);
    db.client()
        .await
        .batch_execute(
            "UPDATE users SET bio = CASE WHEN id % 4 = 0 THEN NULL ELSE 'bio ' || id || E' \"q\"\\n' END",
        )
        .await
        .unwrap();
    let before = common::checksum(&db, "SELECT id, email, bio FROM users").await;
    if !fmt.has_downs() {
        let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
        down.assert_code(2);
        assert_eq!(statuses(&states(&db).await), ["applied", "applied"]);
        return;
    }
    let down = db.pgmaint(&["migrate", "down", "--yes", "--json"]).await;
    down.assert_code(0);
    let report = down.json();
    let backup = &report["migrations"][0]["details"]["backups"][0];
    assert_eq!(backup["rows"], 23, "{}: {report}", fmt.name());
    let backup_id = backup["backup_id"].as_i64().unwrap();
    assert_eq!(statuses(&states(&db).await), ["applied", "pending"]);

    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    assert_eq!(statuses(&states(&db).await), ["applied", "applied"]);
    db.pgmaint(&["restore", &backup_id.to_string()])
        .await
        .assert_code(0);
    assert_eq!(
        common::checksum(&db, "SELECT id, email, bio FROM users").await,
        before,
        "{}",
        fmt.name()
    );
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
}

/// Two concurrent builds, the second failing on a duplicate.
fn indexes(v: u32) -> M {
    M {
        v,
        name: "indexes",
        up: "CREATE INDEX CONCURRENTLY users_id_email ON users (id, email);\nCREATE UNIQUE INDEX CONCURRENTLY users_email ON users (email);\n".into(),
        down: Some("DROP INDEX CONCURRENTLY users_email;\nDROP INDEX CONCURRENTLY users_id_email;\n".into()),
        no_tx: true,
    }
}

async fn a_concurrent_build_fails_half_way_and_resumes(fmt: Fmt) {
    let db = db_for(fmt).await;
    fmt.write(
        &db,
        &[
            m(
                1,
                "users",
                "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\nINSERT INTO users VALUES (1, 'a@x'), (2, 'a@x'), (3, 'c@x');\n",
                "DROP TABLE users;\n",
            ),
            indexes(2),
        ],
    );
    let failed = db.pgmaint(&["migrate", "up", "--yes"]).await;
    failed.assert_code(1);
    assert!(
        failed.stderr.contains("23505") || failed.stderr.contains("duplicate"),
        "{}: {}",
        fmt.name(),
        failed.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indexrelid = 'users_email'::regclass AND NOT indisvalid").await,
        1
    );
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("statement 2 of 2"),
        "{}: {}",
        fmt.name(),
        status.stdout
    );
    db.client()
        .await
        .batch_execute("UPDATE users SET email = 'b@x' WHERE id = 2")
        .await
        .unwrap();
    let resumed = db.pgmaint(&["migrate", "up", "--yes", "--json"]).await;
    resumed.assert_code(0);
    let details = &resumed.json()["migrations"][0]["details"];
    assert_eq!(details["resumed_at"], 2, "{}: {details}", fmt.name());
    assert_eq!(details["dropped_invalid_index"], "users_email");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indrelid = 'users'::regclass AND indisvalid")
            .await,
        3,
        "primary key and two valid indexes"
    );
    assert_eq!(statuses(&states(&db).await), ["applied", "applied"]);
}

async fn kill_9_mid_migration_then_status_and_up(fmt: Fmt) {
    let db = db_for(fmt).await;
    fmt.write(
        &db,
        &[
            users(),
            M {
                v: 2,
                name: "slow",
                up: "CREATE INDEX CONCURRENTLY users_email ON users (email);\nSELECT pg_sleep(3);\nCREATE TABLE after_sleep (id int);\n".into(),
                down: Some("DROP TABLE after_sleep;\nDROP INDEX CONCURRENTLY users_email;\n".into()),
                no_tx: true,
            },
        ],
    );
    let mut child = db.command(&["migrate", "up", "--yes"]).spawn().unwrap();
    db.wait_for_count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(3)%' AND state = 'active'",
        |n| n > 0,
        "the migration's second statement running",
    )
    .await;
    common::signal(child.id().unwrap(), libc::SIGKILL);
    let _ = child.wait().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("statement 2 of 3"),
        "{}: {}",
        fmt.name(),
        status.stdout
    );
    let up = db.pgmaint(&["migrate", "up", "--yes", "--json"]).await;
    up.assert_code(0);
    assert_eq!(
        up.json()["migrations"][0]["details"]["resumed_at"],
        2,
        "{}",
        fmt.name()
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'after_sleep'")
            .await,
        1
    );
    assert_eq!(statuses(&states(&db).await), ["applied", "applied"]);
}

async fn changed_files_are_told_apart(fmt: Fmt) {
    let db = db_for(fmt).await;
    let first = m(
        1,
        "users",
        "-- the users\nCREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\n",
        "DROP TABLE users;\n",
    );
    let path = db.dir.path().join("migrations").join(fmt.up_file(&first));
    fmt.write(&db, &[first]);
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    let version = states(&db).await[0].0.clone();
    let original = std::fs::read_to_string(&path).unwrap();
    let mut cases = vec![
        (
            original.replace("PRIMARY KEY, email", "PRIMARY KEY,   email"),
            "only whitespace changed",
        ),
        (
            original.replace("-- the users", "-- the people"),
            "only comments",
        ),
        (
            original.replace("email text", "email varchar(100)"),
            "its statements changed",
        ),
    ];
    // Flyway's checksum reads lines, so line endings alone change nothing.
    if fmt != Fmt::Flyway {
        cases.insert(
            0,
            (
                original.replace('\n', "\r\n"),
                "only its line endings changed",
            ),
        );
    }
    for (text, says) in &cases {
        std::fs::write(&path, text).unwrap();
        let status = db.pgmaint(&["migrate", "status"]).await;
        assert!(
            status.stdout.contains(says),
            "{}: {says}: {}",
            fmt.name(),
            status.stdout
        );
        db.pgmaint(&["migrate", "status", "--exit-code"])
            .await
            .assert_code(1);
        let up = db.pgmaint(&["migrate", "up", "--yes"]).await;
        up.assert_code(2);
        assert!(
            up.stderr.contains(&format!("migrate repair {version}")),
            "{}: {}",
            fmt.name(),
            up.stderr
        );
    }
    std::fs::write(&path, &cases[cases.len() - 2].0).unwrap();
    let repair = db.pgmaint(&["migrate", "repair", &version]).await;
    repair.assert_code(0);
    assert!(repair.stdout.contains("only comments"), "{}", repair.stdout);
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
}

async fn two_ups_at_once_apply_each_migration_once(fmt: Fmt) {
    let db = db_for(fmt).await;
    fmt.write(
        &db,
        &[
            m(
                1,
                "log",
                "CREATE TABLE applied_log (n int);\nINSERT INTO applied_log VALUES (1);\n",
                "DROP TABLE applied_log;\n",
            ),
            m(
                2,
                "slow",
                "SELECT pg_sleep(1.5);\nINSERT INTO applied_log VALUES (2);\n",
                "DELETE FROM applied_log WHERE n = 2;\n",
            ),
            m(
                3,
                "more",
                "INSERT INTO applied_log VALUES (3);\n",
                "DELETE FROM applied_log WHERE n = 3;\n",
            ),
        ],
    );
    let mut a = db.command(&["migrate", "up", "--yes"]);
    let mut b = db.command(&["migrate", "up", "--yes"]);
    let (a, b) = tokio::join!(a.output(), b.output());
    let (a, b): (common::Run, common::Run) = (a.unwrap().into(), b.unwrap().into());
    a.assert_code(0);
    b.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM applied_log").await,
        3,
        "{}: {}\n{}",
        fmt.name(),
        a.stdout,
        b.stdout
    );
    assert_eq!(
        statuses(&states(&db).await),
        ["applied", "applied", "applied"]
    );
    let said = format!("{}{}{}{}", a.stdout, a.stderr, b.stdout, b.stderr);
    assert!(
        said.contains("Nothing to apply") || said.contains("Waiting for another migrator"),
        "{}: {said}",
        fmt.name()
    );
}

async fn baseline_marks_a_database_migrated_by_hand(fmt: Fmt) {
    let db = db_for(fmt).await;
    fmt.write(
        &db,
        &[
            users(),
            m(
                2,
                "bio",
                "ALTER TABLE users ADD COLUMN bio text;\n",
                "ALTER TABLE users DROP COLUMN bio;\n",
            ),
            m(
                3,
                "notes",
                "CREATE TABLE notes (id int);\n",
                "DROP TABLE notes;\n",
            ),
        ],
    );
    db.client()
        .await
        .batch_execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, bio text)")
        .await
        .unwrap();
    let second = states(&db).await[1].0.clone();
    let dry = db
        .pgmaint(&["migrate", "baseline", &second, "--dry-run"])
        .await;
    dry.assert_code(0);
    assert_eq!(
        statuses(&states(&db).await),
        ["pending", "pending", "pending"]
    );
    let baseline = db.pgmaint(&["migrate", "baseline", &second]).await;
    baseline.assert_code(0);
    assert!(
        baseline.stdout.contains("Marked 2 migration(s)"),
        "{}: {}",
        fmt.name(),
        baseline.stdout
    );
    assert_eq!(
        statuses(&states(&db).await),
        ["applied", "applied", "pending"]
    );
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM users").await,
        0,
        "{}: the first migration did not run",
        fmt.name()
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'notes'")
            .await,
        1
    );
}

async fn out_of_order_files_need_the_flag(fmt: Fmt) {
    let db = db_for(fmt).await;
    fmt.write(
        &db,
        &[
            m(1, "a", "CREATE TABLE a (id int);\n", "DROP TABLE a;\n"),
            m(3, "c", "CREATE TABLE c (id int);\n", "DROP TABLE c;\n"),
        ],
    );
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    fmt.write(
        &db,
        &[m(2, "b", "CREATE TABLE b (id int);\n", "DROP TABLE b;\n")],
    );
    if fmt == Fmt::Golang {
        // golang-migrate's ledger is one version, not a list: a file
        // below it reads as applied, as golang-migrate itself reads it
        // (it would never run it either).
        assert_eq!(
            statuses(&states(&db).await),
            ["applied", "applied", "applied"]
        );
        return;
    }
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        status.stdout.contains("out of order"),
        "{}: {}",
        fmt.name(),
        status.stdout
    );
    let refused = db.pgmaint(&["migrate", "up", "--yes"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--allow-out-of-order"),
        "{}: {}",
        fmt.name(),
        refused.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'b'")
            .await,
        0
    );
    db.pgmaint(&["migrate", "up", "--yes", "--allow-out-of-order"])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'b'")
            .await,
        1
    );
}

async fn a_busy_lock_is_retried_and_readers_wait_little(fmt: Fmt) {
    let db = db_for(fmt).await;
    fmt.write(&db, &[users()]);
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    fmt.write(
        &db,
        &[m(
            2,
            "flag",
            "ALTER TABLE users ADD COLUMN flag boolean;\n",
            "ALTER TABLE users DROP COLUMN flag;\n",
        )],
    );
    // A busy transaction (not idle) holds the table for 2 s.
    let holder = db.client().await;
    let hold = tokio::spawn(async move {
        holder
            .batch_execute("BEGIN; SELECT count(*) FROM users; SELECT pg_sleep(2); COMMIT;")
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let up = tokio::spawn({
        let mut command = db.command(&["migrate", "up", "--yes", "--json"]);
        async move { command.output().await.unwrap() }
    });
    let reader = db.client().await;
    let mut longest = Duration::ZERO;
    for _ in 0..12 {
        let started = std::time::Instant::now();
        reader
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .unwrap();
        longest = longest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hold.await.unwrap();
    let out: common::Run = up.await.unwrap().into();
    out.assert_code(0);
    let report = out.json();
    assert!(
        report["migrations"][0]["details"]["statements"][0]["retries"]
            .as_u64()
            .unwrap()
            >= 1,
        "{}: {report}",
        fmt.name()
    );
    assert!(
        longest < Duration::from_millis(900),
        "{}: a reader waited {longest:?}",
        fmt.name()
    );
    assert_eq!(db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'flag'").await, 1);
}

/// `migrate new` writes the format's files; filled in, they apply and
/// revert.
async fn new_files_apply_and_revert(fmt: Fmt) {
    let db = db_for(fmt).await;
    if fmt == Fmt::Drizzle {
        // drizzle-kit's journal and snapshots: migrate_drizzle's
        // `new_adds_what_drizzle_kit_and_its_migrator_accept`.
        return;
    }
    let new = db.pgmaint(&["migrate", "new", "things", "--json"]).await;
    new.assert_code(0);
    let mut files: Vec<String> = new.json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    if fmt == Fmt::Flyway {
        // Flyway's `new` writes the V file; undo (U) files are optional.
        assert_eq!(files.len(), 1, "{files:?}");
        let v = std::path::Path::new(&files[0]);
        let undo = v.with_file_name(format!(
            "U{}",
            &v.file_name().unwrap().to_string_lossy()[1..]
        ));
        std::fs::write(&undo, "").unwrap();
        files.push(undo.to_string_lossy().to_string());
    }
    const UP: &str = "CREATE TABLE things (id int);\n";
    const DOWN: &str = "DROP TABLE things;\n";
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = std::path::Path::new(file)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let filled = if fmt == Fmt::Dbmate {
            text.replacen("-- migrate:up\n", &format!("-- migrate:up\n{UP}"), 1)
                .replacen("-- migrate:down\n", &format!("-- migrate:down\n{DOWN}"), 1)
        } else if name.contains(".down.") || name.starts_with('U') {
            format!("{text}{DOWN}")
        } else {
            format!("{text}{UP}")
        };
        std::fs::write(file, filled).unwrap();
    }
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'things'")
            .await,
        1,
        "{}: {files:?}",
        fmt.name()
    );
    db.pgmaint(&["migrate", "down", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'things'")
            .await,
        0,
        "{}",
        fmt.name()
    );
}

/// One test per format for `scenario`, in a module named after it.
macro_rules! per_format {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::Fmt;
            #[tokio::test]
            async fn sqlx() {
                super::$scenario(Fmt::Sqlx).await
            }
            #[tokio::test]
            async fn dbmate() {
                super::$scenario(Fmt::Dbmate).await
            }
            #[tokio::test]
            async fn golang_migrate() {
                super::$scenario(Fmt::Golang).await
            }
            #[tokio::test]
            async fn flyway() {
                super::$scenario(Fmt::Flyway).await
            }
            #[tokio::test]
            async fn drizzle() {
                super::$scenario(Fmt::Drizzle).await
            }
            #[tokio::test]
            async fn pgmaint() {
                super::$scenario(Fmt::Pgmaint).await
            }
        }
    )*};
}

per_format!(
    up_down_up_and_restore,
    a_concurrent_build_fails_half_way_and_resumes,
    kill_9_mid_migration_then_status_and_up,
    changed_files_are_told_apart,
    two_ups_at_once_apply_each_migration_once,
    baseline_marks_a_database_migrated_by_hand,
    out_of_order_files_need_the_flag,
    a_busy_lock_is_retried_and_readers_wait_little,
    new_files_apply_and_revert,
);

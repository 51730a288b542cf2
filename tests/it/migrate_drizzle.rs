//! `pgmaint migrate` on a drizzle-kit folder against a real PostgreSQL and
//! the real tools (pinned in tests/tools/node, installed by scripts/test):
//! files made by `drizzle-kit generate`, and drizzle-orm's own migrator
//! (`migrate()`, what an application calls at start-up) reading the ledger
//! pgmaint keeps, and the other way round.

use crate::common;

use std::path::{Path, PathBuf};

use common::TestDb;
use sha2::Digest;

use crate::migrate_sqlx::{db_with, write};

const CONFIG: &str = "[migrations]\ndir = \"drizzle\"\nlock_timeout = \"300ms\"\n";

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/node")
}

/// Runs one of tests/tools/node's programs on this database.
fn node_tool(db: &TestDb, program: &str, args: &[&str]) -> (i32, String) {
    common::require_tool(
        "node",
        "these tests check pgmaint's drizzle ledger against drizzle-orm's own migrator",
        "nodejs",
        "node",
    );
    let out = std::process::Command::new("node")
        .arg(tools().join(program))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .current_dir(db.dir.path())
        .output()
        .expect("run a tests/tools/node program (scripts/test installs them)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// drizzle-orm's migrator on the folder.
fn drizzle_migrate(db: &TestDb) -> (i32, String) {
    let folder = db.dir.path().join("drizzle");
    node_tool(db, "drizzle-migrate.mjs", &[folder.to_str().unwrap()])
}

/// What drizzle-orm's migrator counts pending, per journal tag.
fn drizzle_pending(db: &TestDb) -> Vec<(String, bool)> {
    let folder = db.dir.path().join("drizzle");
    let (code, out) = node_tool(db, "drizzle-applied.mjs", &[folder.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    report["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["tag"].as_str().unwrap().to_string(),
                m["pending"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A copy of the folder `drizzle-kit generate` made (tests/tools/node).
fn generated_folder(db: &TestDb) {
    let from = tools().join("examples/drizzle/migrations");
    let to = db.dir.path().join("drizzle");
    std::fs::create_dir_all(to.join("meta")).unwrap();
    for name in ["0000_init.sql", "0001_add_posts.sql"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
    for name in ["_journal.json", "0000_snapshot.json", "0001_snapshot.json"] {
        std::fs::copy(from.join("meta").join(name), to.join("meta").join(name)).unwrap();
    }
}

async fn ledger(db: &TestDb) -> Vec<(String, i64)> {
    db.client()
        .await
        .query(
            "SELECT hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn pgmaint_and_drizzle_s_migrator_agree_both_ways() {
    let db = db_with(CONFIG).await;
    generated_folder(&db);
    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    assert_eq!(status.json()["format"], "drizzle", "found from the journal");

    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let dir = db.dir.path().join("drizzle");
    assert_eq!(
        ledger(&db).await,
        vec![
            (sha256_hex(&dir.join("0000_init.sql")), 1796324627345),
            (sha256_hex(&dir.join("0001_add_posts.sql")), 1796324627605),
        ],
        "drizzle's hash of each file and its journal `when`"
    );
    assert_eq!(
        drizzle_pending(&db),
        vec![
            ("0000_init".into(), false),
            ("0001_add_posts".into(), false)
        ]
    );
    let (code, out) = drizzle_migrate(&db);
    assert_eq!(code, 0, "drizzle's migrator finds nothing to do: {out}");
    assert_eq!(ledger(&db).await.len(), 2);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'users_email_idx'")
            .await,
        1
    );

    // The other way: what drizzle applied, pgmaint reads as applied.
    let other = db_with(CONFIG).await;
    generated_folder(&other);
    let (code, out) = drizzle_migrate(&other);
    assert_eq!(code, 0, "{out}");
    let status = other
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(0);
    let json = status.json();
    assert!(
        json["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "applied"),
        "{json}"
    );
    other.pgmaint(&["migrate", "up"]).await.assert_code(0);
    assert_eq!(ledger(&other).await.len(), 2, "nothing applied twice");
}

#[tokio::test]
async fn new_adds_what_drizzle_kit_and_its_migrator_accept() {
    let db = db_with(CONFIG).await;
    generated_folder(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let new = db.pgmaint(&["migrate", "new", "add bio", "--json"]).await;
    new.assert_code(0);
    let file = db.dir.path().join("drizzle/0002_add_bio.sql");
    assert!(file.exists(), "{}", new.stdout);
    assert!(
        db.dir
            .path()
            .join("drizzle/meta/0002_snapshot.json")
            .exists()
    );
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}\nALTER TABLE \"users\" ADD COLUMN \"bio\" text;"),
    )
    .unwrap();
    // drizzle-kit accepts the snapshot chain, and its migrator the entry.
    let out = std::process::Command::new(tools().join("node_modules/.bin/drizzle-kit"))
        .args(["check", "--config"])
        .arg(tools().join("drizzle.config.ts"))
        .env("DRIZZLE_OUT", db.dir.path().join("drizzle"))
        .current_dir(db.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "drizzle-kit check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(drizzle_pending(&db)[2], ("0002_add_bio".into(), true));
    let (code, out) = drizzle_migrate(&db);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'bio'").await,
        1
    );
    let status = db
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(0);
}

#[tokio::test]
async fn drizzle_has_no_downs_so_down_refuses_and_changes_nothing() {
    let db = db_with(CONFIG).await;
    generated_folder(&db);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(2);
    assert!(
        down.stderr.contains("has no down") && down.stderr.contains("nothing was changed"),
        "{}",
        down.stderr
    );
    assert_eq!(ledger(&db).await.len(), 2);
    // A changed applied file is told, as drizzle itself never does.
    write(
        &db,
        "drizzle/0000_init.sql",
        "CREATE TABLE \"users\" (\n\t\"id\" bigserial PRIMARY KEY NOT NULL,\n\t\"email\" text\n);\n",
    );
    let status = db.pgmaint(&["migrate", "status"]).await;
    assert!(status.stdout.contains("modified"), "{}", status.stdout);
}

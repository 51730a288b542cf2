//! `[migrations] format = "command"` with the real Django 5.2 migrator
//! (pinned in tests/tools/python, installed into its `.venv` by
//! scripts/test): `django_migrations` as Django writes it is what
//! `pgmaint migrate status` reads, Django's own `showmigrations` agrees
//! after pgmaint runs it, the ledger is found without `ledger = ...`, and
//! a down that drops a populated column has it backed up first.

use crate::common;

use std::path::{Path, PathBuf};

use common::TestDb;

use crate::migrate_sqlx::db_with;

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/python")
}

/// Django's `manage.py ARGS` on the tests' one-app project, as a shell
/// command (no bytecode written into the source tree).
fn django(args: &str) -> String {
    let python = tools().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing\n  help: python3 -m venv tests/tools/python/.venv && tests/tools/python/.venv/bin/pip install --no-deps -r tests/tools/python/requirements.txt (scripts/test does it)",
        python.display()
    );
    format!(
        "PYTHONDONTWRITEBYTECODE=1 '{}' '{}' {args}",
        python.display(),
        tools().join("djangoapp/manage.py").display()
    )
}

async fn django_db() -> TestDb {
    let db = db_with("").await;
    db.config(&format!(
        "[migrations]\nformat = \"command\"\nlock_timeout = \"700ms\"\n[migrations.command]\nup = \"{}\"\ndown = \"{}\"\nstatus = \"{}\"\n",
        django("migrate --noinput"),
        django("migrate --noinput shop 0001_initial"),
        django("showmigrations shop"),
    ));
    db
}

/// Django's own `showmigrations`, run directly.
fn showmigrations(db: &TestDb) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(django("showmigrations shop"))
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn django_runs_under_pgmaint_and_its_ledger_reads_as_django_wrote_it() {
    let db = django_db().await;
    let before = db.pgmaint(&["migrate", "status"]).await;
    before.assert_code(0);
    assert!(before.stdout.contains("none yet"), "{}", before.stdout);

    let up = db.pgmaint(&["migrate", "up", "--yes"]).await;
    up.assert_code(0);
    assert!(
        up.stdout.contains("Applying shop.0001_initial... OK")
            && up.stdout.contains("+ table public.shop_customer"),
        "Django's own output comes through, then the schema change: {}",
        up.stdout
    );

    // What Django wrote is what pgmaint reads, row for row.
    let written: Vec<(String, String)> = db
        .client()
        .await
        .query(
            "SELECT app || '.' || name, applied::text FROM django_migrations ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(written.len(), 2);
    let status = db
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(0);
    let json = status.json();
    assert_eq!(
        json["ledger"], "django_migrations (django)",
        "found without `ledger = ...`"
    );
    let read: Vec<(String, String)> = json["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["status"], "applied");
            assert_eq!(m["name"], "shop");
            (
                m["version"].as_str().unwrap().to_string(),
                m["applied_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(read, written);
    assert_eq!(read[1].0, "shop.0002_customer_nickname");
    assert!(
        json["status_command"]["output"]
            .as_str()
            .unwrap()
            .contains("[X] 0002_customer_nickname"),
        "{json}"
    );
    // Django, run directly, agrees.
    let shown = showmigrations(&db);
    assert!(
        shown.contains("[X] 0001_initial") && shown.contains("[X] 0002_customer_nickname"),
        "{shown}"
    );

    // Its down drops a populated column: the trace on the copy sees it,
    // the values are backed up before Django drops them, and the ledger
    // loses the row, as Django's own `showmigrations` then says.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO shop_customer (email, nickname) SELECT 'c' || g || '@example.com', 'nick ' || g FROM generate_series(1, 30) g",
        )
        .await
        .unwrap();
    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(0);
    assert!(
        down.stderr
            .contains("Backed up column public.shop_customer.nickname: 30 row(s)"),
        "{}{}",
        down.stdout,
        down.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM django_migrations").await, 1);
    let shown = showmigrations(&db);
    assert!(shown.contains("[ ] 0002_customer_nickname"), "{shown}");
    let history = db.pgmaint(&["history", "--json", "--limit", "1"]).await;
    let task = history.json()["runs"][0]["tasks"][0].clone();
    assert_eq!(task["name"], "migrate:down");
    assert_eq!(
        task["details"]["ledger"]["removed"],
        serde_json::json!(["shop.0002_customer_nickname"])
    );
    let backup_id = task["details"]["backups"][0]["backup_id"].as_i64().unwrap();

    // Up makes the column again, empty; the restore puts every value back.
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(nickname) FROM shop_customer").await,
        0
    );
    db.pgmaint(&["restore", &backup_id.to_string()])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM shop_customer WHERE nickname = 'nick ' || id")
            .await,
        30
    );
}

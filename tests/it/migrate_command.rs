//! `[migrations] format = "command"`: the application's own migrator, here
//! the real knex 3.3.0 (pinned in tests/tools/node, installed by
//! scripts/test), run by `pgmaint migrate up/down` under pgmaint's lock,
//! blocker check and `PGOPTIONS`, with the run and the catalog's
//! difference in the audit trail, and its ledger read by `migrate status`.
//! The tests that need no migrator run a plain shell command.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestDb;

use crate::migrate_sqlx::db_with;

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/node")
}

/// The knex CLI on `dir`'s migrations, as a shell command.
fn knex(dir: &Path, args: &str) -> String {
    common::require_tool(
        "node",
        "these tests run the real knex migrator through pgmaint",
        "nodejs",
        "node",
    );
    let bin = tools().join("node_modules/.bin/knex");
    assert!(
        bin.exists(),
        "{} is missing\n  help: npm ci --ignore-scripts --no-audit --no-fund --prefix tests/tools/node (scripts/test does it)",
        bin.display()
    );
    format!(
        "KNEX_MIGRATIONS_DIR='{}' '{}' --knexfile '{}' {args}",
        dir.display(),
        bin.display(),
        tools().join("knexfile.js").display()
    )
}

/// A database whose config runs knex on `db.dir/knex` (created, with
/// `files` in it).
async fn knex_db(files: &[(&str, &str)], extra: &str) -> (TestDb, PathBuf) {
    let db = db_with("").await;
    let dir = db.dir.path().join("knex");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    db.config(&format!(
        "[migrations]\nformat = \"command\"\nlock_timeout = \"700ms\"\nstatement_timeout = \"30s\"\n{extra}\n[migrations.command]\nup = \"{}\"\ndown = \"{}\"\nstatus = \"{}\"\nledger = \"knex\"\n",
        knex(&dir, "migrate:latest"),
        knex(&dir, "migrate:down"),
        knex(&dir, "migrate:list"),
    ));
    (db, dir)
}

fn example(name: &str) -> String {
    std::fs::read_to_string(tools().join("examples/knex").join(name)).unwrap()
}

const USERS: &str = "20240101000000_create_users.js";
const POSTS: &str = "20240102000000_create_posts.js";

/// knex's ledger rows: (name, batch), in the order knex wrote them.
async fn knex_rows(db: &TestDb) -> Vec<(String, i32)> {
    db.client()
        .await
        .query("SELECT name, batch FROM knex_migrations ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The task run of the newest run in `pgmaint history --json`.
async fn last_task(db: &TestDb) -> (serde_json::Value, serde_json::Value) {
    let history = db.pgmaint(&["history", "--json", "--limit", "1"]).await;
    history.assert_code(0);
    let run = history.json()["runs"][0].clone();
    let task = run["tasks"][0].clone();
    (run, task)
}

fn names(objects: &serde_json::Value, kind: &str) -> Vec<String> {
    objects
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn knex_runs_under_pgmaint_and_both_agree_on_what_is_applied() {
    let (db, dir) = knex_db(&[(USERS, &example(USERS)), (POSTS, &example(POSTS))], "").await;

    let plan = db.pgmaint(&["migrate", "up", "--dry-run"]).await;
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("migrate:latest")
            && plan
                .stdout
                .contains("PGOPTIONS=\"-c lock_timeout=700 -c statement_timeout=30000\""),
        "{}",
        plan.stdout
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('knex_migrations', 'users')")
            .await,
        0,
        "a dry run changes nothing"
    );

    let up = db.pgmaint(&["migrate", "up", "--yes"]).await;
    up.assert_code(0);
    assert!(
        up.stdout.contains("Batch 1 run: 2 migrations"),
        "knex's own output comes through: {}",
        up.stdout
    );
    assert!(up.stdout.contains("+ table public.users"), "{}", up.stdout);
    assert_eq!(
        knex_rows(&db).await,
        vec![(USERS.to_string(), 1), (POSTS.to_string(), 1)]
    );

    // knex itself, run directly, finds nothing pending.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(knex(&dir, "migrate:list"))
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("No Pending Migration files Found"), "{text}");

    let status = db
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["format"], "command");
    assert_eq!(json["ledger"], "knex_migrations (knex)");
    let versions: Vec<&str> = json["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, vec![USERS, POSTS]);
    assert_eq!(json["migrations"][0]["status"], "applied");
    assert_eq!(json["locked"], false);
    assert!(
        json["status_command"]["output"]
            .as_str()
            .unwrap()
            .contains("No Pending Migration files Found"),
        "{json}"
    );
    let text = db.pgmaint(&["migrate", "status"]).await;
    text.assert_code(0);
    assert!(
        text.stdout.contains("2 applied") && text.stdout.contains("create users"),
        "{}",
        text.stdout
    );

    // The run is in the audit trail, with the schema it changed.
    let (run, task) = last_task(&db).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(task["name"], "migrate:up");
    assert_eq!(task["kind"], "migration");
    let details = &task["details"];
    assert_eq!(details["exit_code"], 0);
    assert!(
        details["command"]
            .as_str()
            .unwrap()
            .contains("migrate:latest")
    );
    let added = names(&details["catalog"]["added"], "table");
    assert!(
        added.contains(&"public.users".to_string()) && added.contains(&"public.posts".to_string()),
        "{added:?}"
    );
    assert!(names(&details["catalog"]["added"], "column").contains(&"public.users.email".into()));
    assert_eq!(
        details["ledger"]["added"],
        serde_json::json!([USERS, POSTS])
    );

    // Nothing pending: knex runs, and the catalog did not change.
    let again = db.pgmaint(&["migrate", "up", "--json"]).await;
    again.assert_code(0);
    let json = again.json();
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["catalog"]["added"], serde_json::json!([]));

    // `new`, `repair` and `baseline` are knex's job.
    let new = db.pgmaint(&["migrate", "new", "add_things"]).await;
    new.assert_code(2);
    assert!(
        new.stderr.contains("npx knex migrate:make"),
        "{}",
        new.stderr
    );
}

#[tokio::test]
async fn down_runs_the_down_command_and_the_diff_shows_the_drop() {
    let (db, _dir) = knex_db(&[(USERS, &example(USERS)), (POSTS, &example(POSTS))], "").await;
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);

    let refused = db.pgmaint(&["migrate", "down"]).await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);

    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(0);
    assert!(
        down.stdout.contains("- table public.posts"),
        "{}",
        down.stdout
    );
    assert_eq!(
        db.count("SELECT count(*) FROM knex_migrations").await,
        1,
        "knex's migrate:down reverts the last one"
    );
    let (_, task) = last_task(&db).await;
    assert_eq!(task["name"], "migrate:down");
    assert_eq!(
        names(&task["details"]["catalog"]["dropped"], "table"),
        vec!["public.posts".to_string()]
    );
    assert_eq!(
        task["details"]["ledger"]["removed"],
        serde_json::json!([POSTS])
    );
}

#[tokio::test]
async fn the_migrator_runs_under_the_configured_timeouts() {
    let seen = r#"
exports.up = async function (knex) {
  const r = await knex.raw("SELECT current_setting('lock_timeout') AS lt, current_setting('statement_timeout') AS st");
  await knex.schema.createTable("settings_seen", (t) => { t.text("lock_timeout"); t.text("statement_timeout"); });
  await knex("settings_seen").insert({ lock_timeout: r.rows[0].lt, statement_timeout: r.rows[0].st });
};
exports.down = function (knex) { return knex.schema.dropTable("settings_seen"); };
"#;
    let (db, dir) = knex_db(&[("20240101000000_seen.js", seen)], "").await;
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    let row = db
        .client()
        .await
        .query_one(
            "SELECT lock_timeout, statement_timeout FROM settings_seen",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("700ms".to_string(), "30s".to_string()),
        "PGOPTIONS reached knex's connection"
    );

    // A busy lock: knex's ALTER gives up after lock_timeout instead of
    // queueing behind it, and pgmaint reports and records the failure.
    std::fs::write(
        dir.join("20240102000000_alter.js"),
        "exports.up = function (knex) { return knex.raw('ALTER TABLE settings_seen ADD COLUMN extra int'); };\nexports.down = function (knex) { return knex.raw('ALTER TABLE settings_seen DROP COLUMN extra'); };\n",
    )
    .unwrap();
    let holder = db.client().await;
    let busy = tokio::spawn(async move {
        // Active, not idle, and young: not a blocker; its lock is busy.
        let _ = holder
            .batch_execute(
                "BEGIN; LOCK TABLE settings_seen IN ACCESS SHARE MODE; SELECT pg_sleep(30); COMMIT;",
            )
            .await;
    });
    db.wait_for_count(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'settings_seen' AND l.granted AND l.mode = 'AccessShareLock'",
        |n| n >= 1,
        "the other session's lock",
    )
    .await;
    let started = Instant::now();
    let failed = db.pgmaint(&["migrate", "up", "--yes"]).await;
    let took = started.elapsed();
    failed.assert_code(1);
    assert!(
        took < Duration::from_secs(20),
        "failed within lock_timeout, not after the holder's 30 s: {took:?}"
    );
    assert!(
        failed.stderr.contains("exited with status") && failed.stderr.contains("lock timeout"),
        "{}",
        failed.stderr
    );
    let (run, task) = last_task(&db).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(task["status"], "failed");
    assert_ne!(task["details"]["exit_code"], 0);
    assert!(
        task["details"]["stderr_tail"]
            .as_array()
            .unwrap()
            .iter()
            .chain(task["details"]["stdout_tail"].as_array().unwrap())
            .any(|l| l.as_str().unwrap().contains("lock timeout")),
        "{task}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'settings_seen' AND column_name = 'extra'")
            .await,
        0
    );
    db.client()
        .await
        .batch_execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    let _ = busy.await;
}

#[tokio::test]
async fn a_command_table_without_up_is_a_config_error_naming_the_key() {
    let db = TestDb::new().await;
    db.config(
        "[migrations]\nformat = \"command\"\n\n[migrations.command]\nstatus = \"npx knex migrate:list\"\n",
    );
    let run = db.pgmaint(&["migrate", "status"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("[migrations.command] up is missing")
            && run.stderr.contains("pgmaint.toml:4:")
            && run.stderr.contains("migrations.command.up"),
        "{}",
        run.stderr
    );

    db.config("[migrations]\nformat = \"command\"\n");
    let run = db.pgmaint(&["migrate", "status"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("needs a [migrations.command] table"),
        "{}",
        run.stderr
    );

    db.config(
        "[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"true\"\nledger = \"sequelize\"\nupp = \"x\"\n",
    );
    let run = db.pgmaint(&["migrate", "status"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("\"sequelize\" is not a ledger") && run.stderr.contains("upp"),
        "{}",
        run.stderr
    );

    // A renamed ledger needs the tool that keeps it, and one that can.
    db.config(
        "[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"true\"\nledger_table = \"ops.ledger\"\n",
    );
    let run = db.pgmaint(&["migrate", "status"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("ledger_table needs `ledger`")
            && run.stderr.contains("migrations.command.ledger_table"),
        "{}",
        run.stderr
    );
    db.config(
        "[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"true\"\nledger = \"django\"\nledger_table = \"ops.ledger\"\n",
    );
    let run = db.pgmaint(&["migrate", "status"]).await;
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("django always keeps its ledger in django_migrations"),
        "{}",
        run.stderr
    );

    db.config("[migrations]\n[migrations.command]\nup = \"true\"\n");
    let run = db.pgmaint(&["migrate", "status"]).await;
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("[migrations.command] is read only with format = \"command\""),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_session_idle_in_transaction_stops_the_migrator_before_it_runs() {
    let db = db_with("").await;
    let marker = db.dir.path().join("ran");
    db.client()
        .await
        .batch_execute("CREATE TABLE accounts (id int primary key)")
        .await
        .unwrap();
    db.config(&format!(
        "[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"touch '{}'\"\n",
        marker.display()
    ));
    let idle = db.client().await;
    idle.batch_execute("BEGIN; SELECT * FROM accounts")
        .await
        .unwrap();
    let refused = db.pgmaint(&["migrate", "up", "--yes"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("idle in transaction")
            && refused.stderr.contains("accounts")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert!(!marker.exists(), "the command did not run");

    idle.batch_execute("COMMIT").await.unwrap();
    let up = db.pgmaint(&["migrate", "up", "--yes"]).await;
    up.assert_code(0);
    assert!(marker.exists(), "with the session gone it runs");
    assert!(up.stdout.contains("No schema changes"), "{}", up.stdout);

    // No ledger: status says so, and down without a down command refuses.
    let status = db.pgmaint(&["migrate", "status", "--exit-code"]).await;
    status.assert_code(0);
    assert!(status.stdout.contains("none yet"), "{}", status.stdout);
    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(2);
    assert!(
        down.stderr.contains("[migrations.command] has no `down`"),
        "{}",
        down.stderr
    );
}

#[tokio::test]
async fn a_migrator_that_drops_a_populated_column_has_it_backed_up_before_it_runs() {
    const NICKNAME: &str = "20240103000000_users_nickname.js";
    const DROP: &str = "20240104000000_drop_nickname.js";
    let (db, dir) = knex_db(
        &[
            (USERS, &example(USERS)),
            (
                NICKNAME,
                "exports.up = (knex) => knex.schema.alterTable(\"users\", (t) => { t.text(\"nickname\"); });\nexports.down = (knex) => knex.schema.alterTable(\"users\", (t) => { t.dropColumn(\"nickname\"); });\n",
            ),
        ],
        "",
    )
    .await;
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    db.client()
        .await
        .batch_execute(
            "INSERT INTO users (email, nickname) SELECT 'u' || g || '@example.com', 'nick ' || g FROM generate_series(1, 50) g;
             UPDATE users SET nickname = NULL WHERE id > 40;",
        )
        .await
        .unwrap();
    // It drops the column, then holds its lock a moment, so the trace's
    // lock sampling (every 10 ms) sees it.
    std::fs::write(
        dir.join(DROP),
        "exports.up = async (knex) => { await knex.schema.alterTable(\"users\", (t) => { t.dropColumn(\"nickname\"); }); await knex.raw(\"SELECT pg_sleep(0.3)\"); };\nexports.down = (knex) => knex.schema.alterTable(\"users\", (t) => { t.text(\"nickname\"); });\n",
    )
    .unwrap();

    let plan = db.pgmaint(&["migrate", "up", "--dry-run", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(plan.json()["trace"]["status"], "traced", "{}", plan.json());
    assert_eq!(
        plan.json()["trace"]["drops"],
        serde_json::json!(["column public.users.nickname"])
    );
    assert_eq!(
        plan.json()["trace"]["locks"],
        serde_json::json!([{"table": "public.users", "mode": "ACCESS EXCLUSIVE", "blocks": "reads_and_writes"}]),
        "{}",
        plan.json()
    );
    assert_eq!(plan.json()["trace"]["rewrites"], serde_json::json!([]));
    // The trace ran on a copy: the live column and the ledger are as they were.
    assert_eq!(db.count("SELECT count(nickname) FROM users").await, 40);
    assert_eq!(db.count("SELECT count(*) FROM knex_migrations").await, 2);

    let up = db.pgmaint(&["migrate", "up", "--yes"]).await;
    up.assert_code(0);
    assert!(
        up.stderr
            .contains("it drops column public.users.nickname there")
            && up
                .stderr
                .contains("Backed up column public.users.nickname: 40 row(s)"),
        "{}",
        up.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'nickname'")
            .await,
        0
    );
    let (_, task) = last_task(&db).await;
    let backup_id = task["details"]["backups"][0]["backup_id"].as_i64().unwrap();
    assert_eq!(task["details"]["backups"][0]["rows"], 40, "{task}");

    // Down makes the column again, empty; the restore sets every value back.
    db.pgmaint(&["migrate", "down", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(db.count("SELECT count(nickname) FROM users").await, 0);
    db.pgmaint(&["restore", &backup_id.to_string()])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM users WHERE nickname = 'nick ' || id")
            .await,
        40
    );
    assert_eq!(db.count("SELECT count(nickname) FROM users").await, 40);

    // The next down is the one that drops the column: its trace sees that,
    // and the 40 values are backed up before knex drops them.
    let down = db.pgmaint(&["migrate", "down", "--yes"]).await;
    down.assert_code(0);
    assert!(
        down.stderr
            .contains("Backed up column public.users.nickname: 40 row(s)"),
        "{}",
        down.stderr
    );
}

#[tokio::test]
async fn the_api_runs_the_migrator_as_migrate_up_does() {
    const TOKEN: &str = "command-api-token-of-32-characters!!";
    let (db, _dir) = knex_db(&[(USERS, &example(USERS))], "").await;
    let config = std::fs::read_to_string(db.dir.path().join("pgmaint.toml")).unwrap();
    db.config(&format!("[api]\ntoken = \"{TOKEN}\"\n\n{config}"));
    let daemon = db.daemon().await;
    let (code, body) = daemon
        .http(
            "POST",
            "/api/v1/migrations/up",
            Some(TOKEN),
            r#"{"dry_run": true}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let plan: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["format"], "command");
    assert_eq!(plan["trace"]["status"], "traced", "{plan}");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('knex_migrations', 'users')")
            .await,
        0,
        "a dry run changes nothing"
    );
    let (code, body) = daemon
        .http(
            "POST",
            "/api/v1/migrations/up",
            Some(TOKEN),
            r#"{"to": "20240101000000"}"#,
        )
        .await;
    assert_eq!(code, 409, "{body}");

    let (code, body) = daemon
        .http("POST", "/api/v1/migrations/up", Some(TOKEN), "{}")
        .await;
    assert_eq!(code, 202, "{body}");
    let run_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/runs/{run_id}");
    let run = common::wait_for(
        "the API's migrator run to finish",
        Duration::from_secs(60),
        async || {
            let (code, body) = daemon.http("GET", &path, Some(TOKEN), "").await;
            (code == 200 && body.contains("\"succeeded\"")).then_some(body)
        },
    )
    .await;
    assert!(run.contains("migrate:up") && run.contains("api"), "{run}");
    assert_eq!(db.count("SELECT count(*) FROM knex_migrations").await, 1);
    daemon.stop().await;
}

/// A migrator that says where it runs, then waits to be stopped and says
/// it was.
fn waiting_migrator(db: &TestDb) -> PathBuf {
    let script = db.dir.path().join("migrator.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nmarks=\"$(dirname \"$0\")\"\ntrap 'echo \"$PGHOST\" >> \"$marks/stopped\"; exit 1' TERM\necho \"$PGHOST\" >> \"$marks/started\"\nsleep 30 &\nwait\n",
    )
    .unwrap();
    script
}

/// `pgmaint migrate up` until `marker` appears, then a Ctrl-C; its output.
async fn interrupted_up(db: &TestDb, marker: &Path) -> common::Run {
    let child = db
        .command(&["migrate", "up"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(
        "the migrator to start",
        Duration::from_secs(30),
        async || marker.exists().then_some(()),
    )
    .await;
    common::signal(child.id().unwrap(), libc::SIGINT);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("pgmaint ends soon after a Ctrl-C")
        .unwrap();
    out.into()
}

#[tokio::test]
async fn a_ctrl_c_is_passed_on_to_the_migrator_on_the_copy_and_on_the_live_database() {
    let db = db_with("").await;
    let script = waiting_migrator(&db);
    let dir = db.dir.path();
    let config = |trace: bool| {
        format!(
            "[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"sh '{}'\"\nledger = \"knex\"\ntrace = {trace}\n",
            script.display()
        )
    };

    // While it runs on the scratch copy: stopped there, never run live.
    db.config(&config(true));
    let run = interrupted_up(&db, &dir.join("started")).await;
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("did not run on the live database"),
        "{}",
        run.stderr
    );
    let started = std::fs::read_to_string(dir.join("started")).unwrap();
    let stopped = std::fs::read_to_string(dir.join("stopped")).unwrap();
    assert_eq!(started.lines().count(), 1, "{started}");
    assert!(
        started.contains("pgmaint-scratch-"),
        "on the copy: {started}"
    );
    assert_eq!(stopped, started, "the migrator heard the stop");

    // On the live database: the stop reaches it and the run is failed.
    std::fs::remove_file(dir.join("started")).unwrap();
    std::fs::remove_file(dir.join("stopped")).unwrap();
    db.config(&config(false));
    let run = interrupted_up(&db, &dir.join("started")).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        std::fs::read_to_string(dir.join("stopped")).is_ok(),
        "the migrator heard the stop"
    );
    let (run, task) = last_task(&db).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        task["error"]
            .as_str()
            .unwrap()
            .contains("after pgmaint passed on a stop"),
        "{task}"
    );
}

#[tokio::test]
async fn a_knex_ledger_under_another_name_is_read_and_copied_for_the_trace() {
    let db = db_with("").await;
    db.client()
        .await
        .batch_execute("CREATE SCHEMA ops")
        .await
        .unwrap();
    let dir = db.dir.path().join("knex");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [USERS, POSTS] {
        std::fs::write(dir.join(name), example(name)).unwrap();
    }
    let renamed = |args: &str| {
        format!(
            "KNEX_MIGRATIONS_TABLE=app_ledger KNEX_MIGRATIONS_SCHEMA=ops {}",
            knex(&dir, args)
        )
    };
    let config = |ledger_table: &str| {
        format!(
            "[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"{}\"\ndown = \"{}\"\nledger = \"knex\"\n{ledger_table}",
            renamed("migrate:latest"),
            renamed("migrate:down"),
        )
    };
    db.config(&config("ledger_table = \"ops.app_ledger\"\n"));
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM ops.app_ledger").await, 2);

    let status = db.pgmaint(&["migrate", "status", "--json"]).await;
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["ledger"], "ops.app_ledger (knex)");
    assert_eq!(
        json["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["version"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec![USERS, POSTS]
    );
    assert_eq!(json["locked"], false, "ops.app_ledger_lock is read: {json}");

    // The copy the trace runs on holds the ledger's rows, so knex's down
    // there reverts what it reverts live: the posts table.
    let plan = db
        .pgmaint(&["migrate", "down", "--dry-run", "--json"])
        .await;
    plan.assert_code(0);
    assert_eq!(plan.json()["trace"]["status"], "traced", "{}", plan.json());
    assert_eq!(
        plan.json()["trace"]["drops"],
        serde_json::json!(["table public.posts"]),
        "{}",
        plan.json()
    );

    // Without ledger_table, status says where it looked.
    db.config(&config(""));
    let status = db.pgmaint(&["migrate", "status"]).await;
    status.assert_code(0);
    assert!(
        status.stdout.contains("knex_migrations does not exist yet")
            && status.stdout.contains("ledger_table"),
        "{}",
        status.stdout
    );
}

/// Rails and Prisma do not install here (RubyGems; Prisma's engine
/// downloads at install): their ledgers, as their published definitions
/// make them (Rails's ActiveRecord::SchemaMigration and InternalMetadata,
/// Prisma's schema engine), with the rows those tools write.
#[tokio::test]
async fn rails_and_prisma_ledgers_read_as_their_tools_define_them() {
    let db = db_with("").await;
    db.config("[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"true\"\n");
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE schema_migrations (version character varying NOT NULL PRIMARY KEY);
             CREATE TABLE ar_internal_metadata (key character varying NOT NULL PRIMARY KEY, value character varying,
                                                created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
             INSERT INTO schema_migrations VALUES ('20240215120000'), ('20240101000000');
             INSERT INTO ar_internal_metadata VALUES ('environment', 'production', now(), now())",
        )
        .await
        .unwrap();
    let status = db
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["ledger"], "schema_migrations (rails)", "{json}");
    assert_eq!(
        json["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (
                m["version"].as_str().unwrap(),
                m["status"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        vec![("20240101000000", "applied"), ("20240215120000", "applied")]
    );

    let db = db_with("").await;
    db.config("[migrations]\nformat = \"command\"\n[migrations.command]\nup = \"true\"\n");
    db.client()
        .await
        .batch_execute(
            r#"CREATE TABLE "_prisma_migrations" (
                 "id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL,
                 "finished_at" TIMESTAMPTZ, "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT,
                 "rolled_back_at" TIMESTAMPTZ, "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
                 "applied_steps_count" INTEGER NOT NULL DEFAULT 0);
               INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count) VALUES
                 ('a', repeat('0', 64), '2024-01-01 10:00:01+00', '20240101100000_init', NULL, NULL, '2024-01-01 10:00:00+00', 1),
                 ('b', repeat('1', 64), NULL, '20240201100000_add_orders', E'Database error code: 42P07\nrelation "orders" already exists', '2024-02-01 11:00:00+00', '2024-02-01 10:00:00+00', 0),
                 ('c', repeat('1', 64), NULL, '20240201100000_add_orders', E'Database error code: 42P07\nrelation "orders" already exists', NULL, '2024-02-02 10:00:00+00', 0)"#,
        )
        .await
        .unwrap();
    let status = db
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(1);
    let json = status.json();
    assert_eq!(json["ledger"], "_prisma_migrations (prisma)", "{json}");
    assert_eq!(
        json["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap(), m["status"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        vec![
            ("init", "applied"),
            ("add orders", "rolled_back"),
            ("add orders", "failed")
        ]
    );
    let text = db.pgmaint(&["migrate", "status"]).await;
    assert!(
        text.stdout.contains("1 applied, 1 failed")
            && text.stdout.contains("failed: Database error code: 42P07"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn a_migrator_dropping_a_column_of_a_table_without_a_primary_key_does_not_run() {
    const EVENTS: &str = "20240101000000_events.js";
    const DROP: &str = "20240102000000_drop_note.js";
    let (db, dir) = knex_db(
        &[(
            EVENTS,
            "exports.up = (knex) => knex.raw(\"CREATE TABLE events (at timestamptz NOT NULL, note text); INSERT INTO events SELECT now(), 'n' || g FROM generate_series(1, 20) g\");\nexports.down = (knex) => knex.raw('DROP TABLE events');\n",
        )],
        "",
    )
    .await;
    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    std::fs::write(
        dir.join(DROP),
        "exports.up = (knex) => knex.raw('ALTER TABLE events DROP COLUMN note');\nexports.down = (knex) => knex.raw('ALTER TABLE events ADD COLUMN note text');\n",
    )
    .unwrap();
    let up = db.pgmaint(&["migrate", "up", "--yes"]).await;
    up.assert_code(2);
    assert!(
        up.stderr.contains(
            "the migrator's up drops column note of public.events, which has no primary key"
        ) && up.stderr.contains("trace = false")
            && up.stderr.contains("nothing was changed"),
        "{}",
        up.stderr
    );
    assert_eq!(db.count("SELECT count(note) FROM events").await, 20);
    assert_eq!(db.count("SELECT count(*) FROM knex_migrations").await, 1);
}

#[tokio::test]
async fn two_ups_at_once_run_the_migrator_one_after_the_other() {
    const SLOW: &str = "20240103000000_slow.js";
    let (db, _dir) = knex_db(
        &[
            (USERS, &example(USERS)),
            (
                SLOW,
                "exports.up = async (knex) => { await knex.raw('SELECT pg_sleep(1.5)'); await knex.raw('CREATE TABLE slow_done (id int)'); };\nexports.down = (knex) => knex.raw('DROP TABLE slow_done');\n",
            ),
        ],
        "",
    )
    .await;
    let mut a = db.command(&["migrate", "up", "--yes"]);
    let mut b = db.command(&["migrate", "up", "--yes"]);
    let (a, b) = tokio::join!(a.output(), b.output());
    let (a, b): (common::Run, common::Run) = (a.unwrap().into(), b.unwrap().into());
    a.assert_code(0);
    b.assert_code(0);
    assert_eq!(
        knex_rows(&db).await,
        vec![(USERS.to_string(), 1), (SLOW.to_string(), 1)],
        "each migration once, in one batch: {}\n{}",
        a.stdout,
        b.stdout
    );
    let said = format!("{}{}", a.stdout, b.stdout);
    assert!(
        said.contains("Already up to date"),
        "the second run found nothing to do: {said}"
    );
}

#[tokio::test]
async fn kill_9_of_pgmaint_mid_migrator_leaves_what_the_migrator_does_and_up_runs_again() {
    const SLOW: &str = "20240103000000_slow.js";
    let (db, _dir) = knex_db(
        &[
            (USERS, &example(USERS)),
            (
                SLOW,
                "exports.up = async (knex) => { await knex.raw('SELECT pg_sleep(2)'); await knex.raw('CREATE TABLE slow_done (id int)'); };\nexports.down = (knex) => knex.raw('DROP TABLE slow_done');\n",
            ),
        ],
        "",
    )
    .await;
    let mut child = db.command(&["migrate", "up", "--yes"]).spawn().unwrap();
    db.wait_for_count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(2)%' AND state = 'active'",
        |n| n > 0,
        "knex running the slow migration on the live database",
    )
    .await;
    common::signal(child.id().unwrap(), libc::SIGKILL);
    let _ = child.wait().await;
    // knex runs in a process group of its own: it finishes its batch.
    db.wait_for_count(
        "SELECT count(*) FROM knex_migrations",
        |n| n == 2,
        "knex's batch committed",
    )
    .await;
    let status = db
        .pgmaint(&["migrate", "status", "--json", "--exit-code"])
        .await;
    status.assert_code(0);
    assert_eq!(status.json()["locked"], false, "{}", status.stdout);
    // pgmaint's lock went with its session: up runs knex, which finds
    // nothing to do, and nothing is applied twice.
    let again = db.pgmaint(&["migrate", "up", "--yes"]).await;
    again.assert_code(0);
    assert!(
        again.stdout.contains("Already up to date"),
        "{}",
        again.stdout
    );
    assert_eq!(
        db.count("SELECT count(*) FROM knex_migrations WHERE batch = 1")
            .await,
        2
    );
}

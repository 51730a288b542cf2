//! purge against a real PostgreSQL: exact rows, dry runs, locks, limits,
//! crashes and concurrent runs.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDb;

/// 10,000 tokens; odd ids expired. Returns the database, initialised.
/// `task_keys` are added to the task (batch_size defaults to 700).
async fn tokens(task_keys: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE tokens (id int PRIMARY KEY, expires_at timestamptz NOT NULL, note text);
             INSERT INTO tokens SELECT i, now() + CASE WHEN i % 2 = 1 THEN interval '-1 day' ELSE interval '1 day' END, 'n' || i
               FROM generate_series(1, 10000) i;
             ANALYZE tokens;",
        )
        .await
        .unwrap();
    let batch_size = if task_keys.contains("batch_size") {
        ""
    } else {
        "batch_size = 700"
    };
    db.config(&format!(
        "[tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expires_at < now()\"\n{batch_size}\n{task_keys}\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

/// (expired tokens left, valid tokens left).
async fn expired_and_valid(db: &TestDb) -> (i64, i64) {
    (
        db.count("SELECT count(*) FROM tokens WHERE id % 2 = 1")
            .await,
        db.count("SELECT count(*) FROM tokens WHERE id % 2 = 0")
            .await,
    )
}

#[tokio::test]
async fn dry_run_counts_exactly_and_changes_nothing_then_run_deletes_exactly_those_rows() {
    let db = tokens("").await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let plan = plan.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["tasks"][0]["rows"], 5000);
    assert_eq!(plan["tasks"][0]["details"]["rows_exact"], true);
    assert_eq!(
        plan["tasks"][0]["details"]["samples"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert!(
        plan["tasks"][0]["details"]["statements"]
            .to_string()
            .contains("DELETE FROM \\\"public\\\".\\\"tokens\\\"")
    );
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 10000);

    let run = db.pgmaint(&["run", "expired_tokens", "--json"]).await;
    run.assert_code(0);
    let run = run.json();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["tasks"][0]["rows"], 5000);
    assert!(
        run["tasks"][0]["batches"].as_u64().unwrap() >= 8,
        "batches of at most 700 rows: {run}"
    );
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 5000);
    assert_eq!(
        expired_and_valid(&db).await,
        (0, 5000),
        "expired rows gone, valid rows kept"
    );

    // The plan was recorded too; `--all` shows dry runs.
    let history = db.pgmaint(&["history", "--json", "--all"]).await.json();
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0]["dry_run"].as_bool(), runs[0]["status"].as_str()),
        (Some(false), Some("succeeded"))
    );
    assert_eq!(runs[0]["tasks"][0]["rows"], 5000);
    assert_eq!(runs[0]["trigger"], "cli");
    assert_eq!(runs[1]["dry_run"], true);
}

#[tokio::test]
async fn time_column_purge_uses_a_fixed_cutoff_and_keeps_newer_rows() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE request_logs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, created_at timestamp NOT NULL, path text);
             CREATE INDEX ON request_logs (created_at);
             INSERT INTO request_logs (created_at, path) SELECT now() - i * interval '1 hour', '/p' FROM generate_series(1, 2000) i;",
        )
        .await
        .unwrap();
    db.config("[tasks.logs]\nkind = \"purge\"\ntable = \"public.request_logs\"\ntime_column = \"created_at\"\nolder_than = \"30 days\"\nbatch_size = 100\n");
    db.pgmaint(&["init"]).await.assert_code(0);
    let expected_gone = db
        .count("SELECT count(*) FROM request_logs WHERE created_at < now() - interval '30 days'")
        .await;
    let plan = db.pgmaint(&["plan", "logs", "--json"]).await.json();
    assert_eq!(plan["tasks"][0]["rows"].as_i64(), Some(expected_gone));
    db.pgmaint(&["run", "logs"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM request_logs").await,
        2000 - expected_gone
    );
    assert_eq!(
        db.count("SELECT count(*) FROM request_logs WHERE created_at < now() - interval '30 days'")
            .await,
        0
    );
}

#[tokio::test]
async fn bad_config_and_bad_targets_exit_2_naming_each_problem_and_its_place() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE logs (id int PRIMARY KEY, created_at timestamptz, label text); INSERT INTO logs VALUES (1, now() - interval '1 year', 'x');")
        .await
        .unwrap();
    // Unknown key: refused before connecting.
    db.config("[tasks.a]\nkind = \"purge\"\ntable = \"logs\"\nwhere = \"true\"\nbatchsize = 10\n");
    let run = db.pgmaint(&["run", "a"]).await;
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("pgmaint.toml:5:1: tasks.a.batchsize: unknown key `batchsize` in a purge task; did you mean `batch_size`?"),
        "{}",
        run.stderr
    );

    db.config(
        r#"[tasks.missing_table]
kind = "purge"
table = "no_such_table"
where = "true"

[tasks.missing_column]
kind = "purge"
table = "logs"
time_column = "created"
older_than = "1 day"

[tasks.not_a_time]
kind = "purge"
table = "logs"
time_column = "label"
older_than = "1 day"

[tasks.bad_interval]
kind = "purge"
table = "logs"
time_column = "created_at"
older_than = "a fortnight"

[tasks.bad_predicate]
kind = "purge"
table = "logs"
where = "created_at < now() - 'nonsense'::interval AND nope = 1"
"#,
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    let err = &check.stderr;
    for expected in [
        "pgmaint.toml:3:9: tasks.missing_table.table: table \"no_such_table\" does not exist",
        "pgmaint.toml:9:15: tasks.missing_column.time_column: table public.logs has no column \"created\"; columns are: id, created_at, label",
        "pgmaint.toml:15:15: tasks.not_a_time.time_column: column \"label\" of public.logs is text, not a date or timestamp",
        "pgmaint.toml:22:14: tasks.bad_interval.older_than: `a fortnight` is not a PostgreSQL interval",
        "pgmaint.toml:27:9: tasks.bad_predicate.where: the condition is not valid for table public.logs",
        "5 problem(s) found; nothing was changed",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // run refuses the same way, before touching anything.
    let run = db.pgmaint(&["run", "--all"]).await;
    run.assert_code(2);
    assert_eq!(db.count("SELECT count(*) FROM logs").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.runs").await, 0);
}

#[tokio::test]
async fn a_table_name_smuggling_sql_is_harmless() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE x (id int); CREATE TABLE users (id int); INSERT INTO users VALUES (1);",
        )
        .await
        .unwrap();
    db.config(
        "[tasks.evil]\nkind = \"purge\"\ntable = \"users; drop table x\"\nwhere = \"true\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    for args in [&["check"][..], &["run", "evil"], &["plan", "evil"]] {
        let run = db.pgmaint(args).await;
        run.assert_code(2);
        assert!(run.stderr.contains("tasks.evil.table"), "{}", run.stderr);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM x").await,
        0,
        "table x must still exist"
    );
    assert_eq!(db.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn locked_rows_are_retried_and_the_other_session_waits_at_most_lock_timeout() {
    let db = tokens("lock_timeout = \"200ms\"\nmax_retries = 8\nbatch_size = 10000").await;
    let app = db.client().await;
    app.batch_execute("BEGIN; SELECT * FROM tokens WHERE id = 4001 FOR UPDATE;")
        .await
        .unwrap();
    let pgmaint = db.command(&["run", "expired_tokens", "--json"]).output();
    let pgmaint = tokio::spawn(pgmaint);
    db.wait_for_count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND wait_event_type = 'Lock' AND query ILIKE '%tokens%'",
        |n| n >= 1,
        "pgmaint to wait for the locked row",
    )
    .await;
    // Row 11 is in the same batch as the locked row 4001. Whatever pgmaint
    // is doing now, the application must not wait for it past lock_timeout.
    let started = Instant::now();
    app.batch_execute("SELECT * FROM tokens WHERE id = 11 FOR UPDATE")
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(200 + 300),
        "the application waited {waited:?}"
    );
    // Real time, not a condition: the row stays locked past several of
    // pgmaint's 200 ms lock timeouts, so that it retries.
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.batch_execute("COMMIT").await.unwrap();

    let run: common::Run = pgmaint.await.unwrap().unwrap().into();
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["tasks"][0]["status"], "succeeded");
    assert_eq!(json["tasks"][0]["rows"], 5000);
    assert!(
        json["tasks"][0]["details"]["retries"].as_u64().unwrap() >= 1,
        "{json}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE id % 2 = 1")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 5000);
}

#[tokio::test]
async fn rows_locked_for_longer_than_all_retries_fail_the_task_and_leave_the_rest_done() {
    let db = tokens("lock_timeout = \"100ms\"\nmax_retries = 1").await;
    let app = db.client().await;
    app.batch_execute("BEGIN; SELECT * FROM tokens WHERE id = 1 FOR UPDATE;")
        .await
        .unwrap();
    let run = db.pgmaint(&["run", "expired_tokens", "--json"]).await;
    app.batch_execute("COMMIT").await.unwrap();
    run.assert_code(1);
    let json = run.json();
    assert_eq!(json["tasks"][0]["status"], "failed");
    assert!(
        json["tasks"][0]["details"]["error"]
            .as_str()
            .unwrap()
            .contains("could not get their locks"),
        "{json}"
    );
    // Everything outside the locked batch went; the locked batch stayed whole.
    let left = db
        .count("SELECT count(*) FROM tokens WHERE id % 2 = 1")
        .await;
    assert!(left > 0 && left <= 700, "left {left}");
    db.pgmaint(&["run", "expired_tokens"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE id % 2 = 1")
            .await,
        0
    );
}

#[tokio::test]
async fn max_runtime_cancels_between_batches_and_the_next_run_finishes() {
    let db = tokens("batch_size = 200\npause = \"100ms\"").await;
    let run = db
        .pgmaint(&["run", "expired_tokens", "--max-runtime", "500ms", "--json"])
        .await;
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["status"], "cancelled");
    let task = &json["tasks"][0];
    assert_eq!(task["status"], "cancelled");
    let done = task["rows"].as_i64().unwrap();
    assert!(done > 0 && done < 5000, "{json}");
    assert!(
        task["details"]["error"]
            .as_str()
            .unwrap()
            .contains("max_runtime reached"),
        "{json}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM tokens").await,
        10000 - done,
        "what it reported is what it committed"
    );

    db.pgmaint(&["run", "expired_tokens"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 5000);
    let history = db.pgmaint(&["history", "--json"]).await.json();
    let statuses: Vec<&str> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "cancelled"]);
}

#[tokio::test]
async fn kill_9_mid_run_loses_nothing_and_shows_as_interrupted() {
    let db = tokens("batch_size = 100\npause = \"50ms\"").await;
    let mut child = db.command(&["run", "expired_tokens"]).spawn().unwrap();
    // Wait until some batches have committed, then kill without warning.
    db.wait_for_count(
        "SELECT count(*) FROM tokens",
        |n| n <= 9500,
        "pgmaint to make progress",
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let left = db
        .count("SELECT count(*) FROM tokens WHERE id % 2 = 1")
        .await;
    assert!(
        left > 0 && left < 5000,
        "the kill should land mid-run: {left} expired rows left"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE id % 2 = 0")
            .await,
        5000,
        "no valid row touched"
    );

    db.pgmaint(&["run", "expired_tokens"]).await.assert_code(0);
    assert_eq!(
        expired_and_valid(&db).await,
        (0, 5000),
        "expired rows gone, valid rows kept"
    );
    let history = db.pgmaint(&["history", "--json"]).await.json();
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs[1]["status"], "interrupted", "{history}");
    assert_eq!(runs[1]["tasks"][0]["status"], "interrupted");
    assert!(
        runs[1]["tasks"][0]["rows"].as_i64().unwrap() > 0,
        "progress was recorded before the kill"
    );
    assert_eq!(runs[0]["status"], "succeeded");
}

#[tokio::test]
async fn two_concurrent_runs_never_work_on_the_same_task() {
    let db = tokens("batch_size = 250\npause = \"30ms\"").await;
    let first = db.command(&["run", "expired_tokens", "--json"]).output();
    let second = db.command(&["run", "expired_tokens", "--json"]).output();
    let (first, second) = tokio::join!(first, second);
    let runs: Vec<common::Run> = vec![first.unwrap().into(), second.unwrap().into()];
    let mut rows = 0;
    let mut statuses = Vec::new();
    for run in &runs {
        run.assert_code(0);
        let json = run.json();
        rows += json["tasks"][0]["rows"].as_u64().unwrap();
        statuses.push(json["tasks"][0]["status"].as_str().unwrap().to_string());
        if json["tasks"][0]["status"] == "skipped" {
            assert!(
                json["tasks"][0]["details"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("already running"),
                "{json}"
            );
        }
    }
    statuses.sort();
    assert_eq!(statuses, ["skipped", "succeeded"]);
    assert_eq!(rows, 5000);
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 5000);
}

#[tokio::test]
async fn commands_that_need_the_state_schema_say_to_run_init() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    db.config("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"true\"\n");
    for args in [&["run", "a"][..], &["history"]] {
        let run = db.pgmaint(args).await;
        run.assert_code(2);
        assert!(run.stderr.contains("run `pgmaint init`"), "{}", run.stderr);
    }
    db.pgmaint(&["init"]).await.assert_code(0);
    let again = db.pgmaint(&["init"]).await;
    again.assert_code(0);
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
}

#[tokio::test]
async fn a_terminal_gets_a_progress_bar_and_a_pipe_does_not() {
    // 5,000 expired rows in batches of 250 with a 100ms pause: about 2s of
    // work, past the 1.5s after which the bar appears.
    let db = tokens("batch_size = 250\npause = \"100ms\"").await;
    let command = db.terminal_command("run expired_tokens");
    let transcript = db.dir.path().join("terminal.out");
    let status = tokio::process::Command::new("script")
        .args(["-qfec", &command])
        .arg(&transcript)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect(
            "the progress bar test runs pgmaint on a pseudo-terminal with `script` (util-linux)",
        );
    assert!(status.success());
    let seen = std::fs::read_to_string(&transcript).unwrap();
    assert!(
        seen.contains("rows/s") && seen.contains("ETA") && seen.contains("% of"),
        "no progress bar on the terminal:\n{seen}"
    );
    assert!(seen.contains("succeeded"), "{seen}");
    assert_eq!(expired_and_valid(&db).await, (0, 5000));

    // The same work with stderr piped: no bar, no escape codes.
    db.client()
        .await
        .batch_execute("INSERT INTO tokens SELECT i, now() - interval '1 day' FROM generate_series(10001, 15000) i")
        .await
        .unwrap();
    let run = db.pgmaint(&["run", "expired_tokens"]).await;
    run.assert_code(0);
    assert!(
        !run.stderr.contains("rows/s") && !run.stderr.contains('\u{1b}'),
        "{}",
        run.stderr
    );
}

//! The command line as people and scripts meet it: a closed pipe, an
//! 80-column terminal, `init` and `history` output, exit codes of
//! `restore` and `health`.

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::TestDb;

/// A config with enough tasks to fill more than a pipe's first write.
fn many_tasks() -> String {
    (0..60)
        .map(|i| {
            format!(
                "[tasks.expired_password_reset_tokens_{i}]\nkind = \"purge\"\ntable = \"password_reset_tokens\"\nwhere = \"expires_at < now() OR used_at IS NOT NULL\"\ndescription = \"tokens nobody can use any more, number {i}\"\n\n"
            )
        })
        .collect()
}

/// Runs pgmaint with stdout a pipe whose reader is already gone, as in
/// `pgmaint ... | head -0`.
fn with_closed_stdout(command: &mut Command) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    command
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run pgmaint")
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgmaint.toml");
    std::fs::write(&config, many_tasks()).unwrap();
    for args in [&["tasks"][..], &["tasks", "--json"]] {
        let output = with_closed_stdout(
            Command::new(env!("CARGO_BIN_EXE_pgmaint"))
                .arg("--config")
                .arg(&config)
                .args(args),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked") && stderr.is_empty(),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            output.status.signal(),
            Some(libc_sigpipe()),
            "{args:?} ends as `ls | head` does: {:?}",
            output.status
        );
    }
}

fn libc_sigpipe() -> i32 {
    13
}

#[tokio::test]
async fn plan_into_a_closed_pipe_does_not_panic() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE password_reset_tokens (id int, expires_at timestamptz, used_at timestamptz)")
        .await
        .unwrap();
    db.config(&many_tasks());
    db.pgmaint(&["init"]).await.assert_code(0);
    let mut command = db.command(&["plan"]).into_std();
    let output = tokio::task::spawn_blocking(move || with_closed_stdout(&mut command))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
    assert_eq!(output.status.signal(), Some(libc_sigpipe()), "{stderr}");
}

/// What pgmaint prints on a pseudo-terminal `columns` wide, without the
/// carriage returns the terminal adds.
fn on_terminal(db: &TestDb, args: &str, columns: usize) -> String {
    let command = db
        .terminal_command(args)
        .replace("stty cols 120", &format!("stty cols {columns}"));
    let output = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux)");
    String::from_utf8_lossy(&output.stdout).replace('\r', "")
}

fn assert_fits(text: &str, columns: usize) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= columns,
            "a line of {} characters on a {columns}-column terminal:\n{line}\n\n{text}",
            line.chars().count()
        );
    }
}

#[tokio::test]
async fn tables_and_prose_fit_an_80_column_terminal() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE password_reset_tokens (id int, expires_at timestamptz, used_at timestamptz);
             INSERT INTO password_reset_tokens SELECT g, now() - interval '1 day', NULL FROM generate_series(1, 100800) g;
             INSERT INTO password_reset_tokens VALUES (0, now() + interval '1 day', NULL);",
        )
        .await
        .unwrap();
    db.config(
        "[tasks.expired_password_reset_tokens]\nkind = \"purge\"\ntable = \"public.password_reset_tokens\"\nwhere = \"expires_at < now() OR used_at IS NOT NULL\"\nbatch_size = 100000\n\n[tasks.second_task_with_a_long_name]\nkind = \"purge\"\ntable = \"public.password_reset_tokens\"\nwhere = \"false\"\n\n[schedules.nightly_cleanup_of_everything]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\ntasks = [\"expired_password_reset_tokens\", \"second_task_with_a_long_name\"]\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["run", "--all"]).await.assert_code(0);

    let history = on_terminal(&db, "history", 80);
    assert_fits(&history, 80);
    // A name may be cut short with `…` to fit; a number or status never is,
    // and nothing continues on the next line.
    for whole in ["succeeded", "100,800", "expired_password_reset"] {
        assert!(history.contains(whole), "`{whole}` split:\n{history}");
    }
    let tasks = on_terminal(&db, "tasks", 80);
    assert_fits(&tasks, 80);
    assert!(
        tasks.contains("expired_password_reset_tokens")
            && tasks.contains("public.password_reset_tokens"),
        "\n{tasks}"
    );
    let schedules = on_terminal(&db, "schedules", 80);
    assert_fits(&schedules, 80);
    assert!(schedules.contains("Europe/Berlin"), "\n{schedules}");
    // A fire time is one line: date, time and zone together.
    assert!(
        schedules
            .lines()
            .any(|l| l.contains(" 03:00:00 CET") && l.contains("-")),
        "\n{schedules}"
    );
}

#[tokio::test]
async fn init_says_what_it_did_in_one_line() {
    let db = TestDb::new().await;
    db.config("");
    let first = db.pgmaint(&["init"]).await;
    first.assert_code(0);
    assert_eq!(first.stdout.lines().count(), 1, "{}", first.stdout);
    assert!(
        first
            .stdout
            .starts_with("Created state schema \"pgmaint\" at version"),
        "{}",
        first.stdout
    );
    let again = db.pgmaint(&["init"]).await;
    assert_eq!(again.stdout.lines().count(), 1, "{}", again.stdout);
    assert!(again.stdout.contains("is up to date"), "{}", again.stdout);
}

async fn history_db() -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE t (id int, expires_at timestamptz)")
        .await
        .unwrap();
    db.config(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"expires_at < now()\"\n[schedules.nightly]\ncron = \"0 3 * * *\"\ntasks = [\"a\"]\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

#[tokio::test]
async fn dry_runs_are_recorded_but_history_shows_them_only_with_all() {
    let db = history_db().await;
    for _ in 0..3 {
        db.pgmaint(&["plan"]).await.assert_code(0);
    }
    let empty = db.pgmaint(&["history"]).await;
    empty.assert_code(0);
    assert!(
        empty
            .stdout
            .contains("3 dry run(s) match; `--all` shows them"),
        "{}",
        empty.stdout
    );
    db.pgmaint(&["run", "a"]).await.assert_code(0);
    let runs = db.pgmaint(&["history", "--json"]).await.json();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["dry_run"], false);
    for flag in ["--all", "--dry-runs"] {
        let all = db.pgmaint(&["history", "--json", flag]).await.json();
        assert_eq!(all["runs"].as_array().unwrap().len(), 4, "{flag}");
    }
}

#[tokio::test]
async fn history_of_a_task_without_runs_says_so() {
    let db = history_db().await;
    db.pgmaint(&["run", "a"]).await.assert_code(0);
    let none = db.pgmaint(&["history", "--task", "nosuch"]).await;
    none.assert_code(0);
    assert!(
        none.stdout.starts_with("Task \"nosuch\" has no runs"),
        "{}",
        none.stdout
    );
    assert!(
        none.stdout
            .contains("It is not in the config; configured tasks: a."),
        "{}",
        none.stdout
    );
    assert!(
        !none.stdout.contains("No runs recorded yet"),
        "{}",
        none.stdout
    );
}

#[tokio::test]
async fn history_names_the_schedule_and_filters_by_status_schedule_and_trigger() {
    let db = history_db().await;
    db.pgmaint(&["run", "a"]).await.assert_code(0);
    // What a daemon records for a fire of `nightly` (the daemon's own
    // tests run fires for real; here only history's reading matters).
    db.client()
        .await
        .batch_execute(
            "INSERT INTO pgmaint.runs (trigger, triggered_by, command, status, dry_run, pgmaint_version, finished_at, error)
             VALUES ('schedule', 'daemon me@host pid 1', 'schedule nightly at 2026-01-01T03:00:00+00:00', 'failed', false, 'test', now(), 'boom');
             INSERT INTO pgmaint.task_runs (run_id, task, kind, status, dry_run, finished_at)
             SELECT max(id), 'a', 'purge', 'failed', false, now() FROM pgmaint.runs;",
        )
        .await
        .unwrap();
    let all = db.pgmaint(&["history", "--json"]).await.json();
    let runs = all["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["schedule"], "nightly");
    assert_eq!(runs[1]["schedule"], serde_json::Value::Null);
    let table = db.pgmaint(&["history"]).await.stdout;
    assert!(table.contains("schedule nightly"), "{table}");

    let ids = |args: &[&str]| {
        let db = &db;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let mut full = vec!["history", "--json"];
            full.extend(args.iter().map(String::as_str));
            db.pgmaint(&full).await.json()["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["trigger"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(&["--status", "failed"]).await, ["schedule"]);
    assert_eq!(ids(&["--status", "succeeded"]).await, ["cli"]);
    assert_eq!(ids(&["--schedule", "nightly"]).await, ["schedule"]);
    assert_eq!(ids(&["--trigger", "cli"]).await, ["cli"]);
    assert_eq!(
        ids(&["--task", "a", "--status", "failed"]).await,
        ["schedule"]
    );
    assert!(ids(&["--schedule", "weekly"]).await.is_empty());
    let none = db.pgmaint(&["history", "--schedule", "weekly"]).await;
    assert!(
        none.stdout.contains("fired by schedule \"weekly\""),
        "{}",
        none.stdout
    );
}

#[tokio::test]
async fn restoring_a_backup_that_does_not_exist_is_a_usage_error() {
    let db = TestDb::new().await;
    db.config("");
    db.pgmaint(&["init"]).await.assert_code(0);
    let restore = db.pgmaint(&["restore", "999"]).await;
    restore.assert_code(2);
    assert!(
        restore.stderr.contains("there is no backup 999"),
        "{}",
        restore.stderr
    );
    let json = db.pgmaint(&["restore", "999", "--json"]).await;
    json.assert_code(2);
    assert_eq!(json.json()["error"]["kind"], "usage");
    // Nothing was recorded for it.
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.runs").await, 0);
}

#[test]
fn health_without_a_database_says_how_to_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgmaint"));
    command.arg("health").current_dir(dir.path());
    for var in [
        "DATABASE_URL",
        "PGMAINT_CONFIG",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGSERVICE",
        "PGPASSFILE",
    ] {
        command.env_remove(var);
    }
    // No ~/.pgpass either. (This assumes no server accepts the OS user
    // on the default socket, as on a machine whose only servers are the
    // tests' own.)
    command.env("HOME", dir.path());
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nothing named a database") && stderr.contains("--database-url"),
        "{stderr}"
    );
    let output = command.arg("--json").output().unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON error document");
    assert_eq!(json["error"]["kind"], "connection");
}

#[test]
fn the_readme_stands_alone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // Every relative link points at a file of this repository.
    for link in readme.split("](").skip(1) {
        let target = link.split([')', '#']).next().unwrap_or_default();
        if target.contains("://") || target.is_empty() {
            continue;
        }
        let path = root.join(target);
        assert!(
            path.exists()
                && path
                    .canonicalize()
                    .unwrap()
                    .starts_with(root.canonicalize().unwrap()),
            "README links to {target}, which is not in the repository"
        );
    }
    for documented in [
        "`description`",
        "`enabled`",
        "`$${`",
        "name = \"",
        ".manifest.json",
    ] {
        assert!(
            readme.contains(documented),
            "README does not document {documented}"
        );
    }
}

//! Config errors as the binary reports them: every problem at once (the
//! file's and the database's), `${VAR}` in any value, checked after
//! expansion, a notifier's unset variable failing only what needs it, and
//! the JSON error document.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{Run, TestDb};

/// pgmaint with a config and no database, and no variables of the
/// caller's environment that a test does not set.
fn pgmaint(config: &Path, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgmaint"));
    command.arg("--config").arg(config).args(args);
    for var in [
        "DATABASE_URL",
        "PGMAINT_CONFIG",
        "FROM_EMAIL",
        "CRON",
        "RETENTION",
    ] {
        command.env_remove(var);
    }
    command.envs(vars.iter().copied());
    command.output().expect("run pgmaint").into()
}

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgmaint.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn json_config_errors_print_the_error_document_on_stdout() {
    let (_dir, path) = write_config(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nbatch_size = \"big\"\ntabel = 1\n",
    );
    let run = pgmaint(&path, &["tasks", "--json"], &[]);
    run.assert_code(2);
    let json = run.json();
    let error = &json["error"];
    assert_eq!(error["kind"], "config", "{json}");
    let problems = error["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{json}");
    assert_eq!(problems[0]["key"], "tasks.a.batch_size");
    assert_eq!(
        (problems[0]["line"].as_u64(), problems[0]["column"].as_u64()),
        (Some(5), Some(14))
    );
    assert_eq!(
        problems[0]["message"],
        "`batch_size` must be a whole number (0 or more), not the string \"big\""
    );
    assert!(
        problems[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("pgmaint.toml")
    );
    assert_eq!(
        problems[1]["message"],
        "unknown key `tabel` in a purge task; did you mean `table`?"
    );
    let help = problems[1]["help"].as_str().unwrap();
    assert!(
        !help.contains("views") && !help.contains("retention"),
        "only purge's keys: {help}"
    );
    // The human text still goes to stderr.
    assert!(
        run.stderr.contains("did you mean `table`?"),
        "{}",
        run.stderr
    );

    let usage = pgmaint(&path, &["history", "--bogus", "--json"], &[]);
    usage.assert_code(2);
    assert_eq!(usage.json()["error"]["kind"], "usage");
}

#[test]
fn a_notifiers_unset_variable_fails_only_the_commands_that_send_through_it() {
    let (_dir, path) = write_config(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\n[notifiers.mail]\nkind = \"email\"\nsmtp = \"smtp://localhost:2525\"\nfrom = \"${FROM_EMAIL}\"\nto = [\"oncall@example.com\"]\n[schedules.s]\ncron = \"0 3 * * *\"\ntasks = [\"a\"]\nnotify = [\"mail\"]\n",
    );
    pgmaint(&path, &["tasks"], &[]).assert_code(0);
    pgmaint(&path, &["schedules"], &[]).assert_code(0);
    for args in [&["notify", "test", "mail"][..], &["daemon"]] {
        let run = pgmaint(&path, args, &[]);
        run.assert_code(2);
        assert!(
            run.stderr
                .contains("notifiers.mail.from: environment variable `FROM_EMAIL` is not set"),
            "{args:?}: {}",
            run.stderr
        );
    }
    // Set, it is read as an address, and a bad one stops the daemon
    // before it starts rather than at the first fire.
    let run = pgmaint(&path, &["daemon"], &[("FROM_EMAIL", "not an address")]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("notifiers.mail.from: `not an address` is not an email address"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_variable_in_a_cron_is_checked_after_expansion() {
    let (_dir, path) = write_config(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\n[schedules.s]\ncron = \"${CRON}\"\ntasks = [\"a\"]\n",
    );
    let run = pgmaint(&path, &["schedules", "--json"], &[("CRON", "30 2 * * *")]);
    run.assert_code(0);
    assert_eq!(run.json()["schedules"][0]["cron"], "30 2 * * *");
    let run = pgmaint(&path, &["schedules"], &[("CRON", "61 * * * *")]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(":6:8: schedules.s.cron: invalid cron expression `61 * * * *`: the minute field `61` is not valid"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Component error"), "{}", run.stderr);
    let run = pgmaint(&path, &["schedules"], &[]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("environment variable `CRON` is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn thresholds_in_the_wrong_order_are_a_config_error() {
    let (_dir, path) = write_config("[health.checks.cache-hit]\nwarning = 0.90\ncritical = 0.95\n");
    let run = pgmaint(&path, &["tasks"], &[]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(
            "health.checks.cache-hit.warning: warning 0.9 and critical 0.95 are in the wrong order"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn check_lists_the_files_problems_and_the_databases_together() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE present (id int, created_at timestamptz)")
        .await
        .unwrap();
    db.config(
        "[tasks.typo]\nkind = \"purge\"\ntable = \"present\"\nwhere = \"true\"\ntabel = \"x\"\n\n[tasks.missing_table]\nkind = \"purge\"\ntable = \"absent\"\ntime_column = \"created_at\"\nolder_than = \"${RETENTION}\"\n\n[notifiers.mail]\nkind = \"email\"\nsmtp = \"smtp://localhost\"\nfrom = \"${FROM_EMAIL}\"\nto = [\"oncall@example.com\"]\n",
    );
    let check = db
        .command(&["check", "--json"])
        .env("RETENTION", "7 days")
        .env_remove("FROM_EMAIL")
        .output()
        .await
        .unwrap();
    let check: Run = check.into();
    check.assert_code(2);
    let json = check.json();
    let keys: Vec<&str> = json["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "tasks.typo.tabel",
            "tasks.missing_table.table",
            "notifiers.mail.from"
        ],
        "the static problem, the live one and the notifier's, at once: {json}"
    );
}

#[tokio::test]
async fn an_unset_database_url_variable_is_named_where_it_is_needed() {
    let db = TestDb::new().await;
    db.config("[database]\nurl = \"${PGMAINT_TEST_APP_URL}\"\n");
    // `tasks` needs no database.
    let tasks: Run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"))
        .arg("--config")
        .arg(db.dir.path().join("pgmaint.toml"))
        .arg("tasks")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap()
        .into();
    tasks.assert_code(0);
    let health: Run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"))
        .arg("--config")
        .arg(db.dir.path().join("pgmaint.toml"))
        .arg("health")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap()
        .into();
    health.assert_code(2);
    assert!(
        health
            .stderr
            .contains("database.url: environment variable `PGMAINT_TEST_APP_URL` is not set"),
        "{}",
        health.stderr
    );
    // --database-url replaces it.
    db.pgmaint(&["health", "--check", "connections"])
        .await
        .assert_code(0);
}

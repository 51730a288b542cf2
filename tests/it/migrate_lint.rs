//! `pgmaint migrate lint`, and the lint `migrate up`, `plan` and `check`
//! weigh, against a real PostgreSQL: squawk's rules told the server's
//! version and each file's transaction mode, pgmaint's own rules, the
//! levels, `-- squawk-ignore` and `lint_exclude`, and tables that do not
//! exist yet.

use crate::migrate_sqlx::{db_with, write};

/// A populated `users` table made by hand, as a live database has.
async fn live_users(db: &common::TestDb) {
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE users (id bigint PRIMARY KEY, email text);
             INSERT INTO users SELECT g, g || '@x' FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
}

use crate::common;

#[tokio::test]
async fn a_plain_index_on_a_live_table_is_an_error_and_up_needs_yes() {
    let db = db_with("[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n").await;
    live_users(&db).await;
    let file = write(
        &db,
        "migrations/0001_users_email.sql",
        "-- the login lookup\nCREATE INDEX users_email ON users (email);\n",
    );

    let lint = db.pgmaint(&["migrate", "lint"]).await;
    lint.assert_code(1);
    assert!(
        lint.stderr
            .contains("error[require-concurrent-index-creation]"),
        "{}",
        lint.stderr
    );
    assert!(
        lint.stderr.contains(&format!("--> {}:2:1", file.display())),
        "rustc-style place: {}",
        lint.stderr
    );
    assert!(lint.stderr.contains("= help:"), "{}", lint.stderr);
    assert!(
        lint.stdout.contains("for PostgreSQL 15."),
        "linted for the server's version: {}",
        lint.stdout
    );
    let json = db.pgmaint(&["migrate", "lint", "--json"]).await;
    json.assert_code(1);
    let report = json.json();
    assert!(
        report["pg_version"].as_str().unwrap().starts_with("15."),
        "{report}"
    );
    let finding = &report["findings"][0];
    assert_eq!(finding["rule"], "require-concurrent-index-creation");
    assert_eq!(finding["level"], "error");
    assert_eq!(
        (finding["line"].as_u64(), finding["column"].as_u64()),
        (Some(2), Some(1))
    );

    let plan = db.pgmaint(&["migrate", "plan"]).await;
    plan.assert_code(0);
    assert!(
        plan.stdout
            .contains("error[require-concurrent-index-creation]"),
        "{}",
        plan.stdout
    );

    let up = db.pgmaint(&["migrate", "up"]).await;
    up.assert_code(2);
    assert!(up.stderr.contains("nothing was changed"), "{}", up.stderr);
    assert!(up.stderr.contains("--yes"), "{}", up.stderr);
    let client = db.client().await;
    let index = "SELECT count(*) FROM pg_indexes WHERE indexname = 'users_email'";
    let count: i64 = client.query_one(index, &[]).await.unwrap().get(0);
    assert_eq!(count, 0, "refused before anything ran");
    let ledger: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = '_sqlx_migrations'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let applied: i64 = if ledger == 1 {
        client
            .query_one("SELECT count(*) FROM _sqlx_migrations", &[])
            .await
            .unwrap()
            .get(0)
    } else {
        0
    };
    assert_eq!(applied, 0);

    db.pgmaint(&["migrate", "up", "--yes"]).await.assert_code(0);
    let count: i64 = client.query_one(index, &[]).await.unwrap().get(0);
    assert_eq!(count, 1);
    // Applied: nothing pending is left to lint.
    db.pgmaint(&["migrate", "lint"]).await.assert_code(0);
    db.pgmaint(&["migrate", "lint", "--all"])
        .await
        .assert_code(1);
}

#[tokio::test]
async fn ignores_excludes_and_new_tables_are_not_errors() {
    let db = db_with(
        "[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\nlint_exclude = [\"prefer-robust-stmts\"]\n",
    )
    .await;
    live_users(&db).await;
    write(
        &db,
        "migrations/0001_users_email.sql",
        "-- squawk-ignore require-concurrent-index-creation\nCREATE INDEX users_email ON users (email);\n",
    );
    write(
        &db,
        "migrations/0002_posts.sql",
        "CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint);\n",
    );
    // A table an earlier migration of the same run makes: no one waits
    // on its lock.
    write(
        &db,
        "migrations/0003_posts_user.sql",
        "CREATE INDEX posts_user ON posts (user_id);\n",
    );
    let lint = db.pgmaint(&["migrate", "lint", "--json"]).await;
    lint.assert_code(0);
    let report = lint.json();
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.iter().any(|f| f["level"] == "error"), "{report}");
    let on_posts = findings
        .iter()
        .find(|f| f["rule"] == "require-concurrent-index-creation")
        .expect("still said, as a warning");
    assert_eq!(on_posts["level"], "warning");
    assert!(
        on_posts["message"]
            .as_str()
            .unwrap()
            .contains("does not exist yet"),
        "{on_posts}"
    );
    assert!(
        !findings.iter().any(|f| f["rule"] == "prefer-robust-stmts"),
        "excluded in the config: {report}"
    );
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
}

#[tokio::test]
async fn transaction_modes_decide_concurrently_and_downs_may_drop() {
    let db = db_with("[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n").await;
    live_users(&db).await;
    write(
        &db,
        "migrations/0001_email.up.sql",
        "CREATE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    write(
        &db,
        "migrations/0001_email.down.sql",
        "-- no-transaction\nDROP INDEX CONCURRENTLY users_email;\n",
    );
    write(
        &db,
        "migrations/0002_bio.up.sql",
        "ALTER TABLE users ADD COLUMN bio text;\n",
    );
    write(
        &db,
        "migrations/0002_bio.down.sql",
        "ALTER TABLE users DROP COLUMN bio;\n",
    );
    let report = db.pgmaint(&["migrate", "lint", "--json"]).await;
    report.assert_code(1);
    let report = report.json();
    let rules: Vec<(&str, &str, &str)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap(),
                f["level"].as_str().unwrap(),
                f["direction"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        rules.contains(&(
            "ban-concurrent-index-creation-in-transaction",
            "error",
            "up"
        )),
        "a lone CONCURRENTLY in a transactional file fails: {rules:?}"
    );
    assert!(
        !rules
            .iter()
            .any(|(r, _, d)| r.starts_with("ban-drop-") && *d == "down"),
        "a down drops what its up made: {rules:?}"
    );

    // The fix the help names: the up outside a transaction.
    write(
        &db,
        "migrations/0001_email.up.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    let lint = db.pgmaint(&["migrate", "lint"]).await;
    lint.assert_code(0);
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
}

#[tokio::test]
async fn files_are_linted_without_a_database_and_check_lints_pending_ones() {
    let db = db_with("[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n").await;
    live_users(&db).await;
    let file = write(
        &db,
        "migrations/0001_email_not_null.sql",
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n",
    );
    // No server on this port: the file alone is linted.
    let offline = db
        .command(&["migrate", "lint", file.to_str().unwrap()])
        .arg("--database-url")
        .arg("postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert_eq!(offline.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("note: linting the files alone"), "{stderr}");
    assert!(
        stderr.contains("error[adding-not-nullable-field]"),
        "{stderr}"
    );

    let other = write(&db, "elsewhere.sql", "SELECT 1;\n");
    let refused = db
        .pgmaint(&["migrate", "lint", other.to_str().unwrap()])
        .await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("is not one of the migrations"),
        "{}",
        refused.stderr
    );

    let check = db.pgmaint(&["check"]).await;
    check.assert_code(1);
    assert!(
        check.stderr.contains("error[adding-not-nullable-field]"),
        "{}",
        check.stderr
    );
    let json = db.pgmaint(&["check", "--json"]).await;
    json.assert_code(1);
    assert_eq!(json.json()["lint"][0]["rule"], "adding-not-nullable-field");
}

#[tokio::test]
async fn an_unknown_rule_in_lint_exclude_is_a_config_error() {
    let db = common::TestDb::new().await;
    db.config(
        "[migrations]\ndir = \"migrations\"\nlint_exclude = [\"require-concurent-index-creation\"]\n",
    );
    let run = db.pgmaint(&["migrate", "lint"]).await;
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("\"require-concurent-index-creation\" is not a lint rule"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("did you mean \"require-concurrent-index-creation\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("pgmaint.toml:3:16: migrations.lint_exclude"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn the_api_lists_lint_findings_and_needs_confirm_past_an_error() {
    let token = "lint-api-token-of-32-characters-long!";
    let db = db_with(&format!(
        "[api]\ntoken = \"{token}\"\n\n[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n"
    ))
    .await;
    live_users(&db).await;
    write(
        &db,
        "migrations/0001_users_email.sql",
        "CREATE INDEX users_email ON users (email);\n",
    );
    let daemon = db.daemon().await;
    let (code, body) = daemon
        .http(
            "POST",
            "/api/v1/migrations/up",
            Some(token),
            r#"{"dry_run": true}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let plan: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        plan["migrations"][0]["lint"][0]["rule"], "require-concurrent-index-creation",
        "{plan}"
    );
    assert!(
        plan["needs_confirmation"][0]
            .as_str()
            .unwrap()
            .contains("error[require-concurrent-index-creation]"),
        "{plan}"
    );
    let (code, body) = daemon
        .http("POST", "/api/v1/migrations/up", Some(token), "{}")
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("require-concurrent-index-creation"), "{body}");
    let client = db.client().await;
    let index = "SELECT count(*) FROM pg_indexes WHERE indexname = 'users_email'";
    let count: i64 = client.query_one(index, &[]).await.unwrap().get(0);
    assert_eq!(count, 0, "refused: nothing changed");
    let (code, body) = daemon
        .http(
            "POST",
            "/api/v1/migrations/up",
            Some(token),
            r#"{"confirm": true}"#,
        )
        .await;
    assert_eq!(code, 202, "{body}");
    db.wait_for_count(index, |n| n == 1, "the confirmed migration applied")
        .await;
    daemon.stop().await;
}

//! What a task may be told to remove (issue #10): a `where` that is one
//! boolean expression and calls nothing volatile, a retention age that is
//! positive, a files `path` that is the application's own directory. Each
//! refusal is a config error at its key (file:line:column), exit 2, from
//! `check`, `plan` and `run` alike, and nothing changes.

use crate::common;

use common::TestDb;

/// `pgmaint.toml:LINE:COLUMN: tasks.TASK.KEY: `, where the value of `key`
/// in `[tasks.TASK]` of `config` starts: how a problem is placed.
fn place(config: &str, task: &str, key: &str) -> String {
    let section = format!("[tasks.{task}]");
    let mut in_task = false;
    for (i, line) in config.lines().enumerate() {
        if line.starts_with('[') {
            in_task = line == section;
        } else if in_task && line.starts_with(&format!("{key} = ")) {
            return format!(
                "pgmaint.toml:{}:{}: tasks.{task}.{key}: ",
                i + 1,
                key.len() + 4
            );
        }
    }
    panic!("no {key} in [tasks.{task}] of:\n{config}");
}

/// A database with `setup` run and pgmaint's schema installed (from an
/// empty config, so a config that is refused can be written afterwards).
async fn database(setup: &str) -> TestDb {
    let db = TestDb::with_sql(setup).await;
    db.config("");
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

/// `check`, `plan TASK` and `run TASK` all exit 2 with a problem placed at
/// `key` of `task` whose text holds `message`.
async fn refused_everywhere(db: &TestDb, config: &str, task: &str, key: &str, message: &str) {
    db.config(config);
    let place = place(config, task, key);
    for args in [
        vec!["check"],
        vec!["plan", task],
        vec!["run", task, "--yes"],
    ] {
        let run = db.pgmaint(&args).await;
        assert_eq!(
            run.code, 2,
            "{args:?} must refuse\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        let problem = run
            .stderr
            .lines()
            .find(|line| line.contains(&place))
            .unwrap_or_else(|| panic!("{args:?}: no problem at {place}:\n{}", run.stderr));
        assert!(
            problem.contains(message),
            "{args:?}: expected {message:?} in {problem:?}"
        );
    }
}

#[tokio::test]
async fn a_where_that_breaks_out_of_its_parentheses_is_refused_and_nothing_changes() {
    let db = database(
        "CREATE TABLE notes (id int PRIMARY KEY, note text);
         INSERT INTO notes SELECT i, CASE WHEN i % 10 = 0 THEN 'drop' ELSE 'keep' END
           FROM generate_series(1, 5000) i;",
    )
    .await;
    let config = "[tasks.drops]\nkind = \"purge\"\ntable = \"notes\"\nwhere = \"note = 'drop') or (note = 'drop'\"\nbatch_size = 100\n";
    refused_everywhere(
        &db,
        config,
        "drops",
        "where",
        "the condition closes a parenthesis it did not open at column 14",
    )
    .await;
    assert_eq!(db.count("SELECT count(*) FROM notes").await, 5000);

    // The other ways out of the parentheses, and what is not a condition.
    for (condition, message) in [
        (
            "note = 'drop' /* ",
            "`/*` comment at column 15 that is never closed",
        ),
        (
            "(note = 'drop'",
            "the parenthesis opened at column 1 is never closed",
        ),
        (
            "note = 'drop'; DELETE FROM notes",
            "holds a `;` at column 14",
        ),
        ("id = $1", "refers to parameter `$1` at column 6"),
        (
            "note = 'drop' note = 'keep'",
            "is not one boolean expression",
        ),
        (" -- nothing\n", "the condition is empty"),
    ] {
        let config = format!(
            "[tasks.drops]\nkind = \"purge\"\ntable = \"notes\"\nwhere = {}\n",
            toml_edit::Value::from(condition)
        );
        db.config(&config);
        let check = db.pgmaint(&["check"]).await;
        check.assert_code(2);
        assert!(
            check.stderr.contains(&place(&config, "drops", "where"))
                && check.stderr.contains(message),
            "{condition:?}: expected {message:?}:\n{}",
            check.stderr
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM notes").await, 5000);
}

#[tokio::test]
async fn a_where_whose_literals_and_comments_hold_parentheses_quotes_and_markers_counts_right() {
    let db = database(
        "CREATE TABLE notes (id int PRIMARY KEY, note text);
         INSERT INTO notes SELECT i, 'keep ' || i FROM generate_series(1, 3000) i;
         INSERT INTO notes SELECT 10000 + i,
                (ARRAY[')', '(', 'it''s', '$1', '-- not a comment', 'größer ✓', 'dollar ) quoted', E'back\\\\slash''s'])[1 + i % 8]
           FROM generate_series(0, 799) i;",
    )
    .await;
    // A TOML literal string: the condition is exactly what is between the
    // triple quotes.
    let config = r#"[tasks.tricky]
kind = "purge"
table = "notes"
batch_size = 70
where = '''
note IN (')', '(', 'it''s', '$1', '-- not a comment', 'größer ✓') -- a comment with ) and (
   OR note = $q$dollar ) quoted$q$ /* a /* nested */ comment ( */
   OR note = E'back\\slash\'s'
'''
"#;
    db.config(config);
    db.pgmaint(&["check"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "tricky", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(plan.json()["tasks"][0]["rows"], 800, "{}", plan.stdout);
    let run = db.pgmaint(&["run", "tricky", "--json"]).await;
    run.assert_code(0);
    let run = run.json();
    assert_eq!(run["tasks"][0]["rows"], 800, "{run}");
    // The page windows still bound the batches: the condition stayed
    // inside its parentheses.
    assert!(
        run["tasks"][0]["batches"].as_u64().unwrap() > 1,
        "one batch took every row: {run}"
    );
    assert_eq!(db.count("SELECT count(*) FROM notes").await, 3000);
    assert_eq!(
        db.count("SELECT count(*) FROM notes WHERE note LIKE 'keep %'")
            .await,
        3000
    );
}

#[tokio::test]
async fn a_where_that_calls_a_volatile_function_is_refused_and_a_stable_one_runs() {
    let db = database(
        "CREATE TABLE tokens (id int PRIMARY KEY, expires_at timestamptz NOT NULL, used_at timestamptz);
         INSERT INTO tokens SELECT i, now() + (i % 2 * 2 - 1) * interval '1 day', NULL
           FROM generate_series(1, 1000) i;
         CREATE VIEW lucky AS SELECT id FROM tokens WHERE random() < 0.5;
         CREATE VIEW via_lucky AS SELECT id FROM lucky;
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE FUNCTION steady() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';",
    )
    .await;
    for (condition, message) in [
        ("random() < 0.5", "calls random(), which is VOLATILE"),
        (
            "expires_at < clock_timestamp()",
            "calls clock_timestamp(), which is VOLATILE",
        ),
        (
            "expires_at < now() AND id IN (SELECT id FROM tokens WHERE pg_catalog.timeofday() <> '')",
            "calls pg_catalog.timeofday()",
        ),
        ("bump() = 1", "calls bump()"),
        (
            "id IN (SELECT id FROM via_lucky)",
            "random() through view public.lucky",
        ),
    ] {
        let config = format!(
            "[tasks.expired]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = {}\n",
            toml_edit::Value::from(condition)
        );
        refused_everywhere(&db, &config, "expired", "where", message).await;
    }
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 1000);

    let config = "[tasks.expired]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"(expires_at < now() OR used_at IS NOT NULL) AND expires_at < current_timestamp AND expires_at::date <= current_date AND expires_at < statement_timestamp() AND steady() = 1\"\n";
    db.config(config);
    db.pgmaint(&["check"]).await.assert_code(0);
    let run = db.pgmaint(&["run", "expired", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 500);
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 500);
}

#[tokio::test]
async fn a_retention_age_that_is_not_positive_is_refused_and_nothing_is_removed() {
    let db = database(
        "CREATE TABLE logs (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO logs SELECT i, now() - i * interval '1 hour' FROM generate_series(1, 1000) i;
         CREATE TABLE events (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE events_old PARTITION OF events
           FOR VALUES FROM (now() - interval '30 days') TO (now() - interval '20 days');",
    )
    .await;
    // Refused when the config is read (the first three) or by the database
    // (the mixed signs, which only PostgreSQL's comparison decides).
    for age in ["-7 days", "0 days", "7 days ago", "1 day -25 hours"] {
        for kind in ["purge", "archive"] {
            let config = format!(
                "[tasks.old_logs]\nkind = \"{kind}\"\ntable = \"logs\"\ntime_column = \"created_at\"\nolder_than = \"{age}\"\n"
            );
            refused_everywhere(&db, &config, "old_logs", "older_than", &format!("`{age}`")).await;
        }
        let config = format!(
            "[tasks.events]\nkind = \"partitions\"\ntable = \"events\"\ninterval = \"1 day\"\npremake = 1\nretention = \"{age}\"\nretention_action = \"drop\"\n"
        );
        refused_everywhere(&db, &config, "events", "retention", "must be positive").await;
        let files = db.dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let config = format!(
            "[tasks.tmp]\nkind = \"files\"\npath = \"{}\"\nolder_than = \"{age}\"\n",
            files.display()
        );
        refused_everywhere(&db, &config, "tmp", "older_than", "must be positive").await;
    }
    assert_eq!(db.count("SELECT count(*) FROM logs").await, 1000);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'logs_archive'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_files_path_must_be_an_owned_directory_that_is_not_a_system_one() {
    let db = database("").await;
    let base = db.dir.path();
    let to_etc = base.join("to-etc");
    std::os::unix::fs::symlink("/etc", &to_etc).unwrap();
    let plain = base.join("a-file");
    std::fs::write(&plain, "x").unwrap();
    let cases = [
        ("/".to_string(), "the filesystem root, a system directory"),
        ("/etc".to_string(), "a system directory"),
        ("/tmp/../etc".to_string(), "resolved to /etc"),
        (to_etc.display().to_string(), "resolved to /etc"),
        (
            base.join("missing").display().to_string(),
            "No such file or directory",
        ),
        (plain.display().to_string(), "is not a directory"),
    ];
    for (path, message) in cases {
        let config = format!(
            "[tasks.clean]\nkind = \"files\"\npath = \"{path}\"\npattern = \"*\"\nolder_than = \"1 day\"\n"
        );
        refused_everywhere(&db, &config, "clean", "path", message).await;
    }
    assert!(plain.exists());

    // The application's own directory is fine; one another user owns is not.
    let own = base.join("uploads");
    std::fs::create_dir(&own).unwrap();
    let config = format!(
        "[tasks.clean]\nkind = \"files\"\npath = \"{}\"\nolder_than = \"1 day\"\n",
        own.display()
    );
    db.config(&config);
    db.pgmaint(&["check"]).await.assert_code(0);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&own, Some(4242), None).unwrap();
        refused_everywhere(&db, &config, "clean", "path", "is owned by uid 4242").await;
    }
}

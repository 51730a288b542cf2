//! orphans, sql, files, critical confirmation and the soft-delete recipe,
//! against a real PostgreSQL and a real directory.

use crate::common;

use std::time::{Duration, SystemTime};

use common::TestDb;

#[tokio::test]
async fn orphans_are_reported_then_deleted_and_null_references_are_not_orphans() {
    let db = TestDb::with_sql(
        "CREATE TABLE posts (id int PRIMARY KEY);
         INSERT INTO posts SELECT i FROM generate_series(1, 100) i;
         CREATE TABLE comments (id int PRIMARY KEY, post_id int, body text);
         INSERT INTO comments SELECT i, CASE WHEN i % 10 = 0 THEN NULL ELSE i % 150 + 1 END, 'c' || i FROM generate_series(1, 3000) i;
         ANALYZE comments;",
    )
    .await;
    // post_id in 101..150 has no post; NULL is not an orphan.
    let orphans = db
        .count("SELECT count(*) FROM comments c WHERE post_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.id = c.post_id)")
        .await;
    assert!(orphans > 0);
    db.config("[tasks.orphan_comments]\nkind = \"orphans\"\ntable = \"comments\"\ncolumn = \"post_id\"\nreferences = \"posts(id)\"\n\n[tasks.delete_orphans]\nkind = \"orphans\"\ntable = \"comments\"\ncolumn = \"post_id\"\nreferences = \"posts(id)\"\naction = \"delete\"\nbatch_size = 200\n");
    db.pgmaint(&["init"]).await.assert_code(0);

    let report = db.pgmaint(&["run", "orphan_comments", "--json"]).await;
    report.assert_code(0);
    let task = &report.json()["tasks"][0];
    assert_eq!(task["rows"], 0, "reporting changes nothing");
    assert_eq!(task["details"]["orphans"], orphans);
    let keys = task["details"]["sample_keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let id: i64 = key["post_id"].as_str().unwrap().parse().unwrap();
        assert!(id > 100, "{key}");
    }
    assert_eq!(db.count("SELECT count(*) FROM comments").await, 3000);

    let plan = db.pgmaint(&["plan", "delete_orphans", "--json"]).await;
    assert_eq!(plan.json()["tasks"][0]["rows"], orphans);
    assert_eq!(db.count("SELECT count(*) FROM comments").await, 3000);

    let run = db.pgmaint(&["run", "delete_orphans", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], orphans);
    assert_eq!(
        db.count("SELECT count(*) FROM comments").await,
        3000 - orphans
    );
    assert_eq!(
        db.count("SELECT count(*) FROM comments WHERE post_id IS NULL")
            .await,
        300
    );
    assert_eq!(
        db.count("SELECT count(*) FROM comments c WHERE NOT EXISTS (SELECT 1 FROM posts p WHERE p.id = c.post_id) AND post_id IS NOT NULL").await,
        0
    );
}

#[tokio::test]
async fn composite_orphans_and_a_missing_parent() {
    let db = TestDb::with_sql(
        "CREATE TABLE orders (shop int, number int, PRIMARY KEY (shop, number));
         INSERT INTO orders VALUES (1, 1), (1, 2), (2, 1);
         CREATE TABLE lines (id int PRIMARY KEY, shop int, number int);
         INSERT INTO lines VALUES (1, 1, 1), (2, 1, 2), (3, 2, 2), (4, 3, 1), (5, NULL, 1), (6, 2, 1);",
    )
    .await;
    db.config("[tasks.lines]\nkind = \"orphans\"\ntable = \"lines\"\ncolumn = [\"shop\", \"number\"]\nreferences = \"orders(shop, number)\"\naction = \"delete\"\n\n[tasks.bad]\nkind = \"orphans\"\ntable = \"lines\"\ncolumn = \"shop\"\nreferences = \"no_such_parent(id)\"\n");
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["run", "lines"]).await.assert_code(0);
    let left: Vec<i32> = db
        .client()
        .await
        .query("SELECT id FROM lines ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        vec![1, 2, 5, 6],
        "(2,2) and (3,1) were orphans; NULL is not"
    );

    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    assert!(
        check.stderr.contains("tasks.bad.references") && check.stderr.contains("no_such_parent"),
        "{}",
        check.stderr
    );
}

#[tokio::test]
async fn sql_runs_in_a_transaction_shows_its_rows_and_rolls_back_on_failure() {
    let db = TestDb::with_sql(
        "CREATE TABLE tokens (id int, expires_at timestamptz);
         INSERT INTO tokens SELECT i, now() + (i - 50) * interval '1 hour' FROM generate_series(1, 100) i;
         CREATE TABLE audit (note text);
         CREATE FUNCTION cleanup_all_expired_tokens() RETURNS TABLE (table_name text, deleted bigint) LANGUAGE sql AS $$
           WITH d AS (DELETE FROM tokens WHERE expires_at < now() RETURNING 1)
           SELECT 'tokens', count(*) FROM d $$;",
    )
    .await;
    db.config(
        "[tasks.cleanup]\nkind = \"sql\"\nsql = \"SELECT * FROM cleanup_all_expired_tokens()\"\n\n[tasks.fails]\nkind = \"sql\"\nsql = \"INSERT INTO audit VALUES ('before'); SELECT 1 / 0\"\n\n[tasks.vacuum]\nkind = \"sql\"\nsql = \"VACUUM ANALYZE tokens\"\ntransaction = false\n\n[tasks.bad]\nkind = \"sql\"\nsql = \"SELEC 1\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);

    let plan = db.pgmaint(&["plan", "cleanup", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM tokens").await,
        100,
        "a dry run does not run the SQL"
    );

    let run = db.pgmaint(&["run", "cleanup", "--json"]).await;
    run.assert_code(0);
    let result = &run.json()["tasks"][0]["details"]["result"];
    assert_eq!(
        result["columns"],
        serde_json::json!(["table_name", "deleted"])
    );
    assert_eq!(result["rows"], serde_json::json!([["tokens", "50"]]));
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 50);
    let table = db.pgmaint(&["run", "cleanup"]).await;
    assert!(
        table.stdout.contains("table_name") && table.stdout.contains("tokens"),
        "{}",
        table.stdout
    );

    let failed = db.pgmaint(&["run", "fails", "--json"]).await;
    failed.assert_code(1);
    let task = &failed.json()["tasks"][0];
    assert_eq!(task["status"], "failed");
    assert!(
        task["details"]["error"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{task}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit").await,
        0,
        "rolled back"
    );

    db.pgmaint(&["run", "vacuum"]).await.assert_code(0);

    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    assert!(
        check.stderr.contains("tasks.bad.sql") && check.stderr.contains("syntax error"),
        "{}",
        check.stderr
    );
}

fn touch(path: &std::path::Path, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"0123456789").unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn files_removes_old_unreferenced_matches_and_never_leaves_its_directory() {
    let db = TestDb::with_sql(
        "CREATE TABLE uploads (path text);
         INSERT INTO uploads VALUES ('keep/referenced.tmp'), ('./also-kept.tmp');",
    )
    .await;
    let root = db.dir.path().join("uploads");
    let day = Duration::from_secs(86_400);
    touch(&root.join("old.tmp"), 10 * day);
    touch(&root.join("sub/old2.tmp"), 10 * day);
    touch(&root.join("new.tmp"), Duration::ZERO);
    touch(&root.join("old.jpg"), 10 * day);
    touch(&root.join("keep/referenced.tmp"), 10 * day);
    touch(&root.join("also-kept.tmp"), 10 * day);
    // A symlink out of the directory, to a file that matches: never followed.
    let outside = db.dir.path().join("outside");
    touch(&outside.join("precious.tmp"), 10 * day);
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("precious.tmp"), root.join("link.tmp")).unwrap();

    db.config(&format!(
        "[tasks.tmp_files]\nkind = \"files\"\npath = \"{}\"\npattern = \"*.tmp\"\nolder_than = \"7 days\"\nkeep_referenced = \"SELECT path FROM uploads\"\n\n[tasks.missing]\nkind = \"files\"\npath = \"{}/nope\"\nolder_than = \"1 day\"\n",
        root.display(),
        root.display()
    ));
    db.pgmaint(&["init"]).await.assert_code(0);

    let plan = db.pgmaint(&["plan", "tmp_files", "--json"]).await;
    plan.assert_code(0);
    let details = &plan.json()["tasks"][0]["details"];
    assert_eq!(
        details["files"],
        serde_json::json!(["old.tmp", "sub/old2.tmp"])
    );
    assert_eq!(details["bytes"], 20);
    assert_eq!(details["kept_referenced"], 2);
    assert!(root.join("old.tmp").exists(), "a dry run removes nothing");

    let run = db.pgmaint(&["run", "tmp_files", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], 2);
    assert_eq!(task["details"]["bytes_freed"], 20);
    assert!(!root.join("old.tmp").exists() && !root.join("sub/old2.tmp").exists());
    for kept in [
        "new.tmp",
        "old.jpg",
        "keep/referenced.tmp",
        "also-kept.tmp",
        "link.tmp",
    ] {
        assert!(
            root.join(kept).symlink_metadata().is_ok(),
            "{kept} must stay"
        );
    }
    assert!(outside.join("precious.tmp").exists());

    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    assert!(
        check.stderr.contains("tasks.missing.path"),
        "{}",
        check.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_task_needs_yes_or_a_confirmation_on_a_terminal() {
    let db = TestDb::with_sql(
        "CREATE TABLE sessions (id int, expired bool);
         INSERT INTO sessions SELECT i, i % 2 = 0 FROM generate_series(1, 100) i;",
    )
    .await;
    db.config("[tasks.wipe]\nkind = \"purge\"\ntable = \"sessions\"\nwhere = \"expired\"\nseverity = \"critical\"\nbackup = false\n");
    db.pgmaint(&["init"]).await.assert_code(0);

    let refused = db.pgmaint(&["run", "wipe"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--yes") && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM sessions").await, 100);

    // On a terminal: the plan is shown, then a question. "n" changes nothing.
    let on_terminal = |answer: &str| {
        let command = db.terminal_command("run wipe");
        let mut child = std::process::Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        use std::io::{Read, Write};
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        // Should the question never come, this ends script, and the read.
        let pid = child.id();
        let (finished, done) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done.recv_timeout(Duration::from_secs(60)).is_err() {
                common::signal(pid, libc::SIGKILL);
            }
        });
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut answered = false;
        loop {
            let n = stdout.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&chunk[..n]);
            // Answer once the question is up; the pty echoes it into the output.
            if !answered && String::from_utf8_lossy(&seen).contains("Run now? [y/N]") {
                stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
                answered = true;
            }
        }
        // The output ended: pgmaint exited (and script with it).
        drop(stdin);
        let status = child.wait().unwrap();
        let _ = finished.send(());
        watchdog.join().unwrap();
        (status.code(), String::from_utf8_lossy(&seen).into_owned())
    };
    let (code, seen) = tokio::task::block_in_place(|| on_terminal("n"));
    assert!(
        seen.contains("Would delete 50 rows") && seen.contains("Run now? [y/N]"),
        "{seen}"
    );
    assert_eq!(code, Some(2), "{seen}");
    assert_eq!(db.count("SELECT count(*) FROM sessions").await, 100);
    let (code, seen) = tokio::task::block_in_place(|| on_terminal("y"));
    assert_eq!(code, Some(0), "{seen}");
    assert_eq!(db.count("SELECT count(*) FROM sessions").await, 50);

    db.client()
        .await
        .batch_execute("UPDATE sessions SET expired = true")
        .await
        .unwrap();
    db.pgmaint(&["run", "wipe", "--yes"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM sessions").await, 0);
}

/// A Prisma-style schema whose foreign key is DEFERRABLE INITIALLY
/// DEFERRED: PostgreSQL checks it at the batch's COMMIT, not at the DELETE.
/// The failure names the constraint with its schema-qualified table as the
/// config spells it, says that it is deferred, and does not tell the user
/// to alter a constraint the ORM's migrations own. Without `on_referenced`
/// the referenced users stay and the rest go, deferred or not.
#[tokio::test]
async fn a_deferred_foreign_key_that_blocks_a_purge_at_commit_is_named_with_its_table() {
    let db = TestDb::with_sql(
        r#"CREATE TABLE "User" (id int PRIMARY KEY, "deletedAt" timestamp(3));
         INSERT INTO "User" SELECT i, CASE WHEN i <= 40 THEN now() - interval '60 days' END FROM generate_series(1, 100) i;
         CREATE TABLE "Order" (id int PRIMARY KEY, "userId" int,
             CONSTRAINT "Order_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User" (id) DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO "Order" VALUES (1, 5), (2, 70);"#,
    )
    .await;
    let task = r#"[tasks.deleted_users]
kind = "purge"
table = '"User"'
where = "\"deletedAt\" < now() - interval '30 days'"
batch_size = 1000
"#;
    db.config(&format!("{task}on_referenced = \"fail\"\n"));
    db.pgmaint(&["init"]).await.assert_code(0);
    let run = db.pgmaint(&["run", "deleted_users"]).await;
    run.assert_code(1);
    // The message as one line, whatever the terminal's width wrapped.
    let said = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("rows of public.\"User\" are still referenced by public.\"Order\" through foreign key \"Order_userId_fkey\", a deferred constraint checked when the batch commits"),
        "{}",
        run.stdout
    );
    assert!(
        !said.contains("ON DELETE CASCADE") && !said.contains("SQLSTATE"),
        "{}",
        run.stdout
    );
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "User""#).await,
        100,
        "the batch rolled back"
    );

    db.config(task);
    db.pgmaint(&["run", "deleted_users"]).await.assert_code(0);
    assert_eq!(db.count(r#"SELECT count(*) FROM "User""#).await, 61);
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "User" WHERE id = 5"#)
            .await,
        1
    );
}

#[tokio::test]
async fn soft_deleted_users_still_referenced_stay_or_with_on_referenced_fail_fail_naming_the_constraint()
 {
    let db = TestDb::with_sql(
        "CREATE TABLE users (id int PRIMARY KEY, is_deleted bool NOT NULL DEFAULT false, deleted_at timestamptz);
         INSERT INTO users SELECT i, i <= 40, CASE WHEN i <= 40 THEN now() - interval '60 days' END FROM generate_series(1, 100) i;
         CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users (id));
         INSERT INTO orders VALUES (1, 5), (2, 70);
         CREATE TABLE sessions (id int PRIMARY KEY, user_id int REFERENCES users (id) ON DELETE CASCADE);
         INSERT INTO sessions SELECT i, i FROM generate_series(1, 100) i;",
    )
    .await;
    // on_referenced = "fail": PostgreSQL's own behaviour, the batch fails.
    db.config("[tasks.deleted_users]\nkind = \"purge\"\ntable = \"users\"\nwhere = \"is_deleted AND deleted_at < now() - interval '30 days'\"\nbatch_size = 1000\non_referenced = \"fail\"\n");
    db.pgmaint(&["init"]).await.assert_code(0);

    let run = db.pgmaint(&["run", "deleted_users"]).await;
    run.assert_code(1);
    assert!(
        run.stdout.contains("referenced by public.orders")
            && run.stdout.contains("\"orders_user_id_fkey\""),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("SQLSTATE 23503"), "{}", run.stdout);
    assert_eq!(
        db.count("SELECT count(*) FROM users").await,
        100,
        "the batch rolled back"
    );

    // The default: users something still references without cascade stay.
    db.config("[tasks.deleted_users]\nkind = \"purge\"\ntable = \"users\"\nwhere = \"is_deleted AND deleted_at < now() - interval '30 days'\"\n");
    db.pgmaint(&["run", "deleted_users"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM users").await, 61);
    assert_eq!(
        db.count("SELECT count(*) FROM sessions").await,
        61,
        "cascaded"
    );
}

#[tokio::test]
async fn set_null_orphans_are_refused_by_check_on_a_not_null_column_or_a_keyless_table() {
    let db = TestDb::with_sql(
        "CREATE TABLE orgs (id int PRIMARY KEY);
         CREATE TABLE sessions (id int PRIMARY KEY, org_id int, owner_id int NOT NULL);
         CREATE TABLE loose (org_id int);",
    )
    .await;
    db.config("[tasks.clear_owner]\nkind = \"orphans\"\ntable = \"sessions\"\ncolumn = \"owner_id\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\n\n[tasks.clear_loose]\nkind = \"orphans\"\ntable = \"loose\"\ncolumn = \"org_id\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\n\n[tasks.clear_org]\nkind = \"orphans\"\ntable = \"sessions\"\ncolumn = \"org_id\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\n");
    let run = db.pgmaint(&["check"]).await;
    run.assert_code(2);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("column \"owner_id\" is NOT NULL")
            && text.contains("use action = \"delete\""),
        "{text}"
    );
    assert!(
        text.contains("needs a primary key or a unique key"),
        "{text}"
    );
    // The nullable column of a keyed table passes check.
    assert!(!text.contains("\"org_id\" is NOT NULL"), "{text}");
    // Each problem is placed at its task's key in the file.
    assert!(text.contains("pgmaint.toml:"), "{text}");
}

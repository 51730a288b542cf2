//! What a removal may touch (PRODUCT.md): exactly the rows the predicate
//! names whatever its text holds, rows still referenced left in place and
//! counted, cascades counted and backed up so restore puts all of it back.

use crate::common;

use common::TestDb;

/// A database with `sql` loaded and `config` written, initialised.
async fn with(sql: &str, config: &str) -> TestDb {
    let db = TestDb::with_sql(sql).await;
    db.config(config);
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

#[tokio::test]
async fn a_dollar_sign_in_a_string_literal_is_the_users_text_not_a_parameter() {
    // 500 rows say 'costs $45', 500 say 'costs $35'; the cutoff makes the
    // walk bind $4, which a text replace once turned the literal into.
    let db = with(
        "CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL);
         INSERT INTO items SELECT i, CASE WHEN i % 2 = 0 THEN 'costs $45' ELSE 'costs $35' END, now() - interval '2 days'
           FROM generate_series(1, 1000) i;
         ANALYZE items;",
        "[tasks.by_note]\nkind = \"purge\"\ntable = \"items\"\nwhere = \"note = 'costs $45' AND note <> '$3'\"\nbatch_size = 100\n",
    )
    .await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(plan.json()["tasks"][0]["rows"], 500, "{}", plan.stdout);
    let run = db.pgmaint(&["run", "by_note", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 500, "{}", run.stdout);
    assert_eq!(
        db.count("SELECT count(*) FROM items WHERE note = 'costs $45'")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM items WHERE note = 'costs $35'")
            .await,
        500
    );
}

/// One text per table: every row, in a fixed order.
async fn checksum(db: &TestDb, tables: &[&str]) -> Vec<String> {
    let client = db.client().await;
    let mut sums = Vec::new();
    for table in tables {
        let row = client
            .query_one(
                &format!("SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"),
                &[],
            )
            .await
            .unwrap();
        sums.push(format!("{table}: {}", row.get::<_, String>(0)));
    }
    sums
}

const APP: &str = "
CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL, deleted_at timestamptz);
CREATE TABLE posts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE, title text,
                    title_length int GENERATED ALWAYS AS (length(title)) STORED);
CREATE TABLE comments (id bigint PRIMARY KEY, post_id bigint NOT NULL REFERENCES posts (id) ON DELETE CASCADE, body text);
CREATE TABLE reviews (id bigint PRIMARY KEY, reviewer_id bigint REFERENCES users (id) ON DELETE SET NULL, stars int);
INSERT INTO users (email, deleted_at)
SELECT 'u' || i || '@example.com', CASE WHEN i % 7 = 0 THEN now() - interval '3 days' END FROM generate_series(1, 1000) i;
INSERT INTO posts (user_id, title) SELECT 1 + i % 1000, 'post ' || i FROM generate_series(1, 5000) i;
INSERT INTO comments SELECT i, 1 + i % 5000, 'comment ' || i FROM generate_series(1, 8000) i;
INSERT INTO reviews SELECT i, CASE WHEN i % 10 <> 0 THEN 1 + i % 1000 END, i % 5 FROM generate_series(1, 3000) i;
ANALYZE;
";

const TABLES: [&str; 4] = ["users", "posts", "comments", "reviews"];

#[tokio::test]
async fn a_backed_up_purge_holds_what_cascades_take_and_restore_puts_all_of_it_back() {
    let db = with(
        APP,
        "[tasks.deleted_users]\nkind = \"purge\"\ntable = \"users\"\nwhere = \"deleted_at IS NOT NULL\"\nbackup = true\nbatch_size = 40\n",
    )
    .await;
    let before = checksum(&db, &TABLES).await;
    let users = db
        .count("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL")
        .await;
    let posts = db
        .count("SELECT count(*) FROM posts p JOIN users u ON u.id = p.user_id WHERE u.deleted_at IS NOT NULL")
        .await;
    let comments = db
        .count("SELECT count(*) FROM comments c JOIN posts p ON p.id = c.post_id JOIN users u ON u.id = p.user_id WHERE u.deleted_at IS NOT NULL")
        .await;
    let reviews = db
        .count("SELECT count(*) FROM reviews r JOIN users u ON u.id = r.reviewer_id WHERE u.deleted_at IS NOT NULL")
        .await;
    assert!(users > 100 && posts > 500 && comments > 500 && reviews > 200);

    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let plan = plan.json();
    let task = &plan["tasks"][0];
    assert_eq!(task["rows"], users);
    let cascade = task["details"]["references"]["cascade"].as_array().unwrap();
    let rows_of = |table: &str| {
        cascade
            .iter()
            .find(|p| p["table"] == table)
            .unwrap_or_else(|| panic!("no {table} in {cascade:?}"))["rows"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(rows_of("public.posts"), posts);
    assert_eq!(rows_of("public.comments"), comments);
    assert_eq!(rows_of("public.reviews"), reviews);

    let run = db.pgmaint(&["run", "deleted_users", "--json"]).await;
    run.assert_code(0);
    let run = run.json();
    assert_eq!(run["tasks"][0]["rows"], users);
    let backup = run["tasks"][0]["details"]["backup_id"].as_i64().unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM reviews WHERE reviewer_id IS NULL")
            .await,
        300 + reviews
    );

    let restore = db
        .pgmaint(&["restore", &backup.to_string(), "--json"])
        .await;
    restore.assert_code(0);
    let report = restore.json();
    assert_eq!(report["restored"], users, "{report}");
    assert_eq!(checksum(&db, &TABLES).await, before, "{report}");
    // A second restore finds everything in place and changes nothing.
    let again = db
        .pgmaint(&["restore", &backup.to_string(), "--json"])
        .await;
    again.assert_code(0);
    assert_eq!(again.json()["restored"], 0);
    for part in again.json()["cascade"].as_array().unwrap() {
        assert_eq!(part["restored"], 0, "{part}");
    }
    assert_eq!(checksum(&db, &TABLES).await, before);
}

#[tokio::test]
async fn rows_still_referenced_stay_and_are_counted_and_the_rest_go() {
    let setup = "
        CREATE TABLE customers (id int PRIMARY KEY, active boolean NOT NULL);
        CREATE TABLE invoices (id int PRIMARY KEY, customer_id int REFERENCES customers (id));
        CREATE TABLE carts (id int PRIMARY KEY, customer_id int REFERENCES customers (id) ON DELETE CASCADE);
        CREATE TABLE cart_audit (id int PRIMARY KEY, cart_id int REFERENCES carts (id) ON DELETE RESTRICT);
        INSERT INTO customers SELECT i, i > 150 FROM generate_series(1, 300) i;
        -- 9 inactive customers still have invoices; 4 more have a cart an audit row points at.
        INSERT INTO invoices SELECT i, i * 10 FROM generate_series(1, 9) i;
        INSERT INTO carts SELECT i, i FROM generate_series(1, 300) i;
        INSERT INTO cart_audit SELECT i, 100 + i FROM generate_series(1, 4) i;
        ANALYZE;";
    let config = "[tasks.inactive]\nkind = \"purge\"\ntable = \"customers\"\nwhere = \"NOT active\"\nbatch_size = 20\n";
    let db = with(setup, config).await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let plan = plan.json();
    let references = &plan["tasks"][0]["details"]["references"];
    assert_eq!(plan["tasks"][0]["rows"], 137, "{references}");
    assert_eq!(references["kept_referenced"], 13, "{references}");
    let by = references["kept_referenced_by"].as_array().unwrap();
    assert!(
        by.iter()
            .any(|b| b["constraint"] == "invoices_customer_id_fkey" && b["rows"] == 9),
        "{by:?}"
    );
    assert!(
        by.iter()
            .any(|b| b["constraint"] == "cart_audit_cart_id_fkey" && b["rows"] == 4),
        "{by:?}"
    );

    let run = db.pgmaint(&["run", "inactive", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 137, "{}", run.stdout);
    assert_eq!(
        db.count("SELECT count(*) FROM customers WHERE NOT active")
            .await,
        13
    );
    assert_eq!(
        db.count("SELECT count(*) FROM customers c WHERE NOT active AND (EXISTS (SELECT 1 FROM invoices i WHERE i.customer_id = c.id) OR c.id BETWEEN 101 AND 104)").await,
        13
    );

    // on_referenced = "fail" keeps PostgreSQL's behaviour: the batch that
    // meets a referenced row fails and removes nothing.
    let db = with(
        setup,
        &format!("{config}on_referenced = \"fail\"\nbatch_size = 1000\n")
            .replace("batch_size = 20\n", ""),
    )
    .await;
    let run = db.pgmaint(&["run", "inactive", "--json"]).await;
    run.assert_code(1);
    assert!(run.stdout.contains("still referenced"), "{}", run.stdout);
    assert_eq!(
        db.count("SELECT count(*) FROM customers WHERE NOT active")
            .await,
        150
    );
}

/// Waits until no session but the test's own is connected to the database.
async fn wait_for_no_other_sessions(db: &TestDb) {
    let client = db.client().await;
    common::wait_for(
        "a killed pgmaint's session to go",
        std::time::Duration::from_secs(10),
        async || {
            let others: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (others == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn kill_9_during_a_backed_up_purge_with_cascades_loses_and_doubles_nothing() {
    let big_app = APP
        .replace(
            "generate_series(1, 1000) i;\nINSERT INTO posts",
            "generate_series(1, 6000) i;\nINSERT INTO posts",
        )
        .replace("1 + i % 1000, 'post '", "1 + i % 6000, 'post '")
        .replace(
            "generate_series(1, 5000) i;\nINSERT INTO comments",
            "generate_series(1, 30000) i;\nINSERT INTO comments",
        )
        .replace("1 + i % 5000, 'comment '", "1 + i % 30000, 'comment '")
        .replace(
            "generate_series(1, 8000) i;\nINSERT INTO reviews",
            "generate_series(1, 40000) i;\nINSERT INTO reviews",
        )
        .replace("1 + i % 1000 END", "1 + i % 6000 END");
    let db = with(
        &big_app,
        "[tasks.deleted_users]\nkind = \"purge\"\ntable = \"users\"\nwhere = \"deleted_at IS NOT NULL\"\nbackup = true\nbatch_size = 5\npause = \"30ms\"\n",
    )
    .await;
    let before = checksum(&db, &TABLES).await;
    let original: Vec<i64> = {
        let mut counts = Vec::new();
        for table in TABLES {
            counts.push(db.count(&format!("SELECT count(*) FROM {table}")).await);
        }
        counts
    };
    let mut seed: u64 = 7;
    let delays: Vec<std::time::Duration> = (0..8)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            std::time::Duration::from_millis(200 + (seed >> 33) % 400)
        })
        .collect();
    let kills = common::kill_after_each(
        delays,
        || db.command(&["-q", "run", "deleted_users"]),
        // The server ends the killed session's statement and lock shortly
        // after; a run started before that is skipped, not killed.
        async |_| wait_for_no_other_sessions(&db).await,
    )
    .await;
    assert!(kills >= 6, "only {kills} runs were killed mid-way");
    db.pgmaint(&["run", "deleted_users", "--batch-size", "200"])
        .await
        .assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL")
            .await,
        0
    );

    // Every row removed is in exactly one backup: per table, the rows left
    // and the rows backed up add up to the rows there were.
    let backed_up = |table: &str| {
        format!(
            "SELECT coalesce(sum(f.rows), 0)::bigint FROM pgmaint.backup_files f
               JOIN pgmaint.backups b ON b.id = f.backup_id
               LEFT JOIN pgmaint.backup_parts p ON p.backup_id = f.backup_id AND p.part = f.part
              WHERE coalesce(p.table_name, b.table_name) = '{table}'"
        )
    };
    for (table, original) in TABLES.iter().zip(&original) {
        let left = if *table == "reviews" {
            // SET NULL changes rows rather than removing them.
            db.count("SELECT count(*) FROM reviews WHERE reviewer_id IS NOT NULL OR id % 10 = 0")
                .await
        } else {
            db.count(&format!("SELECT count(*) FROM {table}")).await
        };
        let saved = db.count(&backed_up(table)).await;
        assert_eq!(
            left + saved,
            *original,
            "{table}: {left} left + {saved} backed up"
        );
    }
    let backups = db.pgmaint(&["backups", "--json"]).await;
    backups.assert_code(0);
    for backup in backups.json()["backups"].as_array().unwrap() {
        let id = backup["id"].to_string();
        db.pgmaint(&["restore", &id]).await.assert_code(0);
    }
    assert_eq!(checksum(&db, &TABLES).await, before);
}

#[tokio::test]
async fn a_vacuum_after_purges_in_the_same_run_chooses_and_measures_what_they_changed() {
    let mut sql = String::new();
    let mut config = String::new();
    for (i, table) in ["events", "logins", "tokens"].iter().enumerate() {
        sql.push_str(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, at timestamptz NOT NULL) WITH (autovacuum_enabled = false);
             INSERT INTO {table} SELECT g, now() - (g % 100) * interval '1 day' FROM generate_series(1, 20000) g;
             "
        ));
        config.push_str(&format!(
            "[tasks.old_{table}]\nkind = \"purge\"\ntable = \"{table}\"\ntime_column = \"at\"\nolder_than = \"{} days\"\n\n",
            42 + i * 7
        ));
    }
    config.push_str("[tasks.tidy]\nkind = \"vacuum\"\nauto = true\n\n[tasks.listed]\nkind = \"vacuum\"\ntables = [\"events\"]\n");
    let db = with(&sql, &config).await;
    let client = db.client().await;
    for table in ["events", "logins", "tokens"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .unwrap();
    }
    let run = db
        .pgmaint(&[
            "run",
            "old_events",
            "old_logins",
            "old_tokens",
            "tidy",
            "--json",
        ])
        .await;
    run.assert_code(0);
    let run = run.json();
    let tidy = &run["tasks"][3]["details"];
    let vacuumed: Vec<&str> = tidy["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    for table in ["public.events", "public.logins", "public.tokens"] {
        assert!(vacuumed.contains(&table), "{table} not in {tidy}");
    }
    for table in tidy["tables"].as_array().unwrap() {
        assert!(
            table["dead_rows_before"].as_i64().unwrap() > 8000,
            "{table}"
        );
        assert_eq!(table["dead_rows_after"], 0, "{table}");
    }
    let health = db
        .pgmaint(&["health", "--json", "--check", "dead-tuples"])
        .await;
    let report = health.json();
    assert_eq!(
        common::health_check(&report, "dead-tuples")["status"],
        "ok",
        "{report}"
    );

    // A listed vacuum right after a purge measures the rows it removed.
    db.client()
        .await
        .batch_execute("INSERT INTO events SELECT g, now() - interval '90 days' FROM generate_series(100001, 110000) g")
        .await
        .unwrap();
    let run = db.pgmaint(&["run", "old_events", "listed", "--json"]).await;
    run.assert_code(0);
    let listed = &run.json()["tasks"][1]["details"];
    assert!(
        listed["tables"][0]["dead_rows_before"].as_i64().unwrap() >= 10000,
        "{listed}"
    );
}

#[tokio::test]
async fn an_archive_whose_rows_cascade_needs_a_backup_and_then_keeps_everything() {
    let setup = "
        CREATE TABLE orders (id int PRIMARY KEY, at timestamptz NOT NULL);
        CREATE TABLE order_lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders (id) ON DELETE CASCADE, sku text);
        INSERT INTO orders SELECT i, now() - (i % 60) * interval '1 day' FROM generate_series(1, 600) i;
        INSERT INTO order_lines SELECT i, 1 + i % 600, 'sku' || i FROM generate_series(1, 1800) i;
        ANALYZE;";
    let config = "[tasks.old_orders]\nkind = \"archive\"\ntable = \"orders\"\ntime_column = \"at\"\nolder_than = \"30 days\"\n";
    let db = with(setup, config).await;
    let run = db.pgmaint(&["run", "old_orders"]).await;
    run.assert_code(1);
    assert!(
        run.stdout.contains("order_lines_order_id_fkey") && run.stdout.contains("backup = true"),
        "{}",
        run.stdout
    );
    assert_eq!(db.count("SELECT count(*) FROM order_lines").await, 1800);
    assert_eq!(db.count("SELECT count(*) FROM orders").await, 600);

    db.config(&format!("{config}backup = true\n"));
    let before = checksum(&db, &["orders", "order_lines"]).await;
    let run = db.pgmaint(&["run", "old_orders", "--json"]).await;
    run.assert_code(0);
    let backup = run.json()["tasks"][0]["details"]["backup_id"]
        .as_i64()
        .unwrap();
    let lines_left = db.count("SELECT count(*) FROM order_lines").await;
    assert!(lines_left < 1800);
    // The archived orders are put back from the archive table by hand; the
    // cascaded lines come back from the backup.
    db.client()
        .await
        .batch_execute("INSERT INTO orders SELECT id, at FROM orders_archive")
        .await
        .unwrap();
    db.pgmaint(&["restore", &backup.to_string()])
        .await
        .assert_code(0);
    assert_eq!(checksum(&db, &["orders", "order_lines"]).await, before);
}

#[tokio::test]
async fn a_condition_that_matches_every_row_is_shown_and_needs_confirmation() {
    let db = with(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, 'n' || i FROM generate_series(1, 300) i;
         CREATE TABLE posts (id int PRIMARY KEY);
         CREATE TABLE comments (id int PRIMARY KEY, post_id int);
         INSERT INTO comments SELECT i, i FROM generate_series(1, 50) i;",
        "[tasks.everything]\nkind = \"purge\"\ntable = \"notes\"\nwhere = \"id > 0\"\n\n\
         [tasks.some]\nkind = \"purge\"\ntable = \"notes\"\nwhere = \"id > 200\"\n\n\
         [tasks.orphaned]\nkind = \"orphans\"\ntable = \"comments\"\ncolumn = \"post_id\"\nreferences = \"posts(id)\"\naction = \"delete\"\n",
    )
    .await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let plan = plan.json();
    let task = |name: &str| {
        plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["details"]
            .clone()
    };
    assert_eq!(task("everything")["matches_every_row"], true);
    assert!(
        task("everything")["needs_confirmation"]
            .as_str()
            .unwrap()
            .contains("every row of public.notes")
    );
    assert_eq!(task("some")["matches_every_row"], false);
    // Every comment is an orphan when the posts table is empty: the same rule.
    assert_eq!(task("orphaned")["matches_every_row"], true);

    for task in ["everything", "orphaned"] {
        let run = db.pgmaint(&["run", task]).await;
        run.assert_code(1);
        assert!(
            run.stdout.contains("matches every row") && run.stdout.contains("--yes"),
            "{}",
            run.stdout
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM notes").await, 300);
    assert_eq!(db.count("SELECT count(*) FROM comments").await, 50);
    db.pgmaint(&["run", "some"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM notes").await, 200);
    db.pgmaint(&["run", "everything", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM notes").await, 0);
}

#[tokio::test]
async fn cascades_down_a_thread_of_replies_are_counted_backed_up_and_restored() {
    // Comments reply to comments (ON DELETE CASCADE into the same table);
    // likes follow their comment. Removing a post takes its comments, every
    // reply under them at any depth, and all of their likes.
    let setup = "
        CREATE TABLE posts (id int PRIMARY KEY, old boolean NOT NULL);
        CREATE TABLE comments (id int PRIMARY KEY, post_id int REFERENCES posts (id) ON DELETE CASCADE,
                               parent_id int REFERENCES comments (id) ON DELETE CASCADE, at timestamptz NOT NULL);
        CREATE TABLE likes (id int PRIMARY KEY, comment_id int NOT NULL REFERENCES comments (id) ON DELETE CASCADE);
        INSERT INTO posts SELECT i, i % 3 = 0 FROM generate_series(1, 60) i;
        -- Top-level comments on posts; replies (no post_id) hang under them, five deep.
        INSERT INTO comments SELECT i, 1 + i % 60, NULL, now() - (i % 10) * interval '1 day' FROM generate_series(1, 300) i;
        INSERT INTO comments SELECT 300 * d + i, NULL, 300 * (d - 1) + i, now() FROM generate_series(1, 300) i, generate_series(1, 5) d;
        INSERT INTO likes SELECT i, 1 + i % 1800 FROM generate_series(1, 4000) i;
        ANALYZE;";
    let tables = ["posts", "comments", "likes"];
    let db = with(
        setup,
        "[tasks.old_posts]\nkind = \"purge\"\ntable = \"posts\"\nwhere = \"old\"\nbackup = true\nbatch_size = 7\n\n\
         [tasks.old_threads]\nkind = \"purge\"\ntable = \"comments\"\nwhere = \"post_id IS NOT NULL AND at < now() - interval '7 days'\"\nbackup = true\nbatch_size = 9\n",
    )
    .await;
    let before = checksum(&db, &tables).await;
    // Expected: comments under old posts, down the thread.
    let under = |roots: &str| {
        format!(
            "WITH RECURSIVE t AS (SELECT id FROM comments WHERE {roots} UNION SELECT c.id FROM comments c JOIN t ON c.parent_id = t.id) "
        )
    };
    let thread_of_old_posts = under("post_id IN (SELECT id FROM posts WHERE old)");
    let comments = db
        .count(&format!("{thread_of_old_posts}SELECT count(*) FROM t"))
        .await;
    let likes = db
        .count(&format!(
            "{thread_of_old_posts}SELECT count(*) FROM likes WHERE comment_id IN (SELECT id FROM t)"
        ))
        .await;
    assert_eq!(
        comments, 600,
        "100 comments on old posts, each five replies deep"
    );

    let plan = db.pgmaint(&["plan", "old_posts", "--json"]).await;
    plan.assert_code(0);
    let plan = plan.json();
    let cascade = plan["tasks"][0]["details"]["references"]["cascade"]
        .as_array()
        .unwrap()
        .clone();
    let rows_of = |table: &str| {
        cascade.iter().find(|p| p["table"] == table).unwrap()["rows"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(rows_of("public.comments"), comments, "{cascade:?}");
    assert_eq!(rows_of("public.likes"), likes, "{cascade:?}");

    let run = db.pgmaint(&["run", "old_posts", "--json"]).await;
    run.assert_code(0);
    let backup = run.json()["tasks"][0]["details"]["backup_id"].to_string();
    db.pgmaint(&["restore", &backup]).await.assert_code(0);
    assert_eq!(checksum(&db, &tables).await, before);

    // The removed table's own tree: old top-level comments take their
    // (new) replies with them; the plan counts those beyond the condition.
    let old_threads = under("post_id IS NOT NULL AND at < now() - interval '7 days'");
    let named = db
        .count("SELECT count(*) FROM comments WHERE post_id IS NOT NULL AND at < now() - interval '7 days'")
        .await;
    let replies = db
        .count(&format!("{old_threads}SELECT count(*) FROM t"))
        .await
        - named;
    let plan = db.pgmaint(&["plan", "old_threads", "--json"]).await;
    plan.assert_code(0);
    let plan = plan.json();
    assert_eq!(plan["tasks"][0]["rows"], named);
    let cascade = plan["tasks"][0]["details"]["references"]["cascade"]
        .as_array()
        .unwrap()
        .clone();
    let beyond = cascade
        .iter()
        .find(|p| p["table"] == "public.comments")
        .unwrap();
    assert_eq!(beyond["rows"], replies, "{cascade:?}");
    let run = db.pgmaint(&["run", "old_threads", "--json"]).await;
    run.assert_code(0);
    let backup = run.json()["tasks"][0]["details"]["backup_id"].to_string();
    db.pgmaint(&["restore", &backup]).await.assert_code(0);
    assert_eq!(checksum(&db, &tables).await, before);
}

#[tokio::test]
async fn restore_puts_tables_back_in_foreign_key_order_and_set_null_values_last() {
    // users -> posts (CASCADE) -> reviews (CASCADE), and reviews also point
    // at their reviewer (SET NULL); comments reach users twice (as author,
    // and through posts). A review by one deleted user on the post of
    // another is first SET NULL by one batch, then cascaded away by a later
    // one; a user's comment on their own post is reached both ways.
    let setup = "
        CREATE TABLE users (id int PRIMARY KEY, gone boolean NOT NULL);
        CREATE TABLE posts (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users (id) ON DELETE CASCADE);
        CREATE TABLE reviews (id int PRIMARY KEY, post_id int NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
                              reviewer_id int REFERENCES users (id) ON DELETE SET NULL);
        CREATE TABLE comments (id int PRIMARY KEY, author_id int NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                               post_id int NOT NULL REFERENCES posts (id) ON DELETE CASCADE);
        INSERT INTO users SELECT i, i % 2 = 1 FROM generate_series(1, 200) i;
        INSERT INTO posts SELECT i, i FROM generate_series(1, 200) i;
        -- Review i is on the post of user 201 - i, by user i.
        INSERT INTO reviews SELECT i, 201 - i, i FROM generate_series(1, 200) i;
        -- Comment i by user i on their own post, comment 1000 + i on the next user's post.
        INSERT INTO comments SELECT i, i, i FROM generate_series(1, 200) i;
        INSERT INTO comments SELECT 1000 + i, i, 1 + i % 200 FROM generate_series(1, 200) i;
        ANALYZE;";
    let tables = ["users", "posts", "reviews", "comments"];
    let db = with(
        setup,
        "[tasks.gone]\nkind = \"purge\"\ntable = \"users\"\nwhere = \"gone\"\nbackup = true\nbatch_size = 3\n",
    )
    .await;
    let before = checksum(&db, &tables).await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let plan = plan.json();
    let cascade = plan["tasks"][0]["details"]["references"]["cascade"]
        .as_array()
        .unwrap()
        .clone();
    let comments: Vec<_> = cascade
        .iter()
        .filter(|p| p["table"] == "public.comments")
        .collect();
    assert_eq!(comments.len(), 1, "one part per table: {cascade:?}");
    let expected = db
        .count("SELECT count(*) FROM comments c WHERE c.author_id % 2 = 1 OR c.post_id IN (SELECT id FROM posts WHERE user_id % 2 = 1)")
        .await;
    assert_eq!(comments[0]["rows"], expected, "{cascade:?}");
    let run = db.pgmaint(&["run", "gone", "--json"]).await;
    run.assert_code(0);
    let backup = run.json()["tasks"][0]["details"]["backup_id"].to_string();
    let restore = db.pgmaint(&["restore", &backup, "--json"]).await;
    restore.assert_code(0);
    assert_eq!(checksum(&db, &tables).await, before, "{}", restore.stdout);
}

#[tokio::test]
async fn a_purge_of_one_partition_follows_the_keys_into_its_partitioned_parent() {
    let setup = "
        CREATE TABLE measurements (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE measurements_2023 PARTITION OF measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
        CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE alerts (id int PRIMARY KEY, m_id int NOT NULL, m_at date NOT NULL,
                             FOREIGN KEY (m_id, m_at) REFERENCES measurements (id, at) ON DELETE CASCADE);
        CREATE TABLE notes (id int PRIMARY KEY, m_id int, m_at date,
                            FOREIGN KEY (m_id, m_at) REFERENCES measurements (id, at));
        INSERT INTO measurements SELECT i, date '2023-01-01' + (i % 700) FROM generate_series(1, 1400) i;
        INSERT INTO alerts SELECT i, i, date '2023-01-01' + (i % 700) FROM generate_series(1, 1400, 3) i;
        INSERT INTO notes SELECT i, i, date '2023-01-01' + (i % 700) FROM generate_series(1, 1400, 50) i;
        ANALYZE;";
    let db = with(
        setup,
        "[tasks.old]\nkind = \"purge\"\ntable = \"measurements_2023\"\nwhere = \"true\"\nbackup = true\nbatch_size = 50\n",
    )
    .await;
    let in_2023 = "m_at < date '2024-01-01'";
    let alerts_kept = db
        .count("SELECT count(*) FROM alerts a WHERE m_at < date '2024-01-01' AND EXISTS (SELECT 1 FROM notes n WHERE n.m_id = a.m_id AND n.m_at = a.m_at)")
        .await;
    let noted = db
        .count(&format!("SELECT count(*) FROM notes WHERE {in_2023}"))
        .await;
    let rows = db.count("SELECT count(*) FROM measurements_2023").await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let task = &plan.json()["tasks"][0];
    assert_eq!(task["rows"], rows - noted, "{task}");
    assert_eq!(task["details"]["references"]["kept_referenced"], noted);
    assert_eq!(
        task["details"]["references"]["cascade"][0]["table"],
        "public.alerts"
    );
    let before = checksum(&db, &["measurements", "alerts", "notes"]).await;
    let run = db.pgmaint(&["run", "old", "--json", "--yes"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], rows - noted);
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM alerts WHERE {in_2023}"))
            .await,
        alerts_kept,
        "the cascade took the alerts of every measurement removed"
    );
    let backup = run.json()["tasks"][0]["details"]["backup_id"].to_string();
    db.pgmaint(&["restore", &backup]).await.assert_code(0);
    assert_eq!(
        checksum(&db, &["measurements", "alerts", "notes"]).await,
        before
    );
}

#[tokio::test]
async fn named_replies_a_batch_takes_by_cascade_count_as_removed_once() {
    // Old comments whose (also old) replies sit on later pages: the batch
    // that removes a comment takes its replies, and the run's count is
    // still the plan's.
    let db = with(
        "CREATE TABLE comments (id int PRIMARY KEY, parent_id int REFERENCES comments (id) ON DELETE CASCADE, old boolean NOT NULL);
         INSERT INTO comments SELECT i, NULL, i % 2 = 0 FROM generate_series(1, 400) i;
         INSERT INTO comments SELECT 1000 + i, i, i % 3 = 0 FROM generate_series(1, 400) i;
         ANALYZE;",
        "[tasks.old]\nkind = \"purge\"\ntable = \"comments\"\nwhere = \"old\"\nbatch_size = 10\n",
    )
    .await;
    let named = db.count("SELECT count(*) FROM comments WHERE old").await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(plan.json()["tasks"][0]["rows"], named);
    let run = db.pgmaint(&["run", "old", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], named, "{}", run.stdout);
    assert_eq!(db.count("SELECT count(*) FROM comments WHERE old").await, 0);
}

#[tokio::test]
async fn a_keep_age_that_is_not_positive_is_a_config_error_before_any_backup_is_pruned() {
    let db = TestDb::new().await;
    for (section, key) in [
        ("backups", "keep"),
        ("state", "keep_runs"),
        ("health", "keep"),
    ] {
        db.config(&format!("[{section}]\n{key} = \"-1 day\"\n"));
        let check = db.pgmaint(&["check"]).await;
        check.assert_code(2);
        assert!(
            check.stderr.contains(&format!("{section}.{key}"))
                && check.stderr.contains("must be positive"),
            "{}",
            check.stderr
        );
    }
}

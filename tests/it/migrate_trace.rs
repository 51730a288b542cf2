//! `migrate plan`'s lock trace and estimate against a real PostgreSQL:
//! the pending migrations applied on a scratch cluster holding a copy of
//! the live schema, what each statement locked, rewrote, read or built,
//! scaled by the live tables' sizes; the scratch cluster never outlives
//! pgmaint.

use crate::common;
use crate::migrate_sqlx::{db_with, write};

const SQLX: &str = "[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n";

async fn live_orders(db: &common::TestDb, rows: i64) {
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE customers (id bigint PRIMARY KEY);
             INSERT INTO customers SELECT g FROM generate_series(1, 100) g;
             CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, total numeric, note text);
             INSERT INTO orders SELECT g, g % 100 + 1, g * 1.5, 'order ' || g FROM generate_series(1, {rows}) g;
             ANALYZE orders;"
        ))
        .await
        .unwrap();
}

/// The statements of the plan's JSON, in order.
fn statements(plan: &serde_json::Value) -> Vec<serde_json::Value> {
    plan["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["statements"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn a_volatile_default_on_a_populated_table_is_traced_as_a_rewrite_with_its_estimate() {
    let db = db_with(SQLX).await;
    live_orders(&db, 20_000).await;
    write(
        &db,
        "migrations/0001_order_tokens.sql",
        "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();\nALTER TABLE orders ADD COLUMN seen boolean DEFAULT false;\n",
    );
    let plan = db.pgmaint(&["migrate", "plan"]).await;
    plan.assert_code(0);
    println!("{}", plan.stdout);
    let text = &plan.stdout;
    assert!(
        text.contains("Traced on a scratch copy of the live schema"),
        "{text}"
    );
    assert!(
        text.contains("0001 line 1: rewrites public.orders (")
            && text.contains(") under ACCESS EXCLUSIVE: "),
        "the rewrite, its lock and its estimate come first: {text}"
    );
    assert!(text.contains("blocks reads and writes"), "{text}");

    let json = db.pgmaint(&["migrate", "plan", "--json"]).await;
    json.assert_code(0);
    let plan = json.json();
    let list = statements(&plan);
    let first = &list[0];
    assert_eq!(first["trace"]["rewrites"][0], "public.orders", "{first}");
    assert_eq!(
        first["trace"]["locks"][0]["mode"], "ACCESS EXCLUSIVE",
        "{first}"
    );
    assert_eq!(first["trace"]["locks"][0]["blocks"], "reads_and_writes");
    assert!(
        first["estimate"]["seconds"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    // A constant default is stored in the catalog: no rewrite, a brief lock.
    let second = &list[1];
    assert_eq!(
        second["trace"]["rewrites"],
        serde_json::json!([]),
        "{second}"
    );
    assert!(second["estimate"].is_null(), "{second}");
    assert_eq!(plan["migrations"][0]["trace"]["status"], "traced");
    // The live database is untouched.
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'token'")
            .await,
        0
    );
}

#[tokio::test]
async fn the_estimate_of_a_rewrite_of_two_million_rows_is_within_2x_of_the_real_time() {
    let _alone = common::alone().await;
    let db = db_with(SQLX).await;
    live_orders(&db, 2_000_000).await;
    let sql = "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();";
    write(&db, "migrations/0001_order_tokens.sql", &format!("{sql}\n"));
    let json = db.pgmaint(&["migrate", "plan", "--json"]).await;
    json.assert_code(0);
    let plan = json.json();
    let estimate = &statements(&plan)[0]["estimate"];
    let estimated = estimate["seconds"].as_f64().unwrap();

    // Under confirm_above (1 GB), but held over a second: up asks first.
    let refused = db.pgmaint(&["migrate", "up", "--json"]).await;
    refused.assert_code(2);
    assert!(
        refused
            .stderr
            .contains("holds ACCESS EXCLUSIVE on public.orders")
            && refused.stderr.contains("held over 1 s"),
        "{}",
        refused.stderr
    );

    let client = db.client().await;
    let started = std::time::Instant::now();
    client.batch_execute(sql).await.unwrap();
    let real = started.elapsed().as_secs_f64();
    println!("estimated {estimated:.2} s, real {real:.2} s: {estimate}");
    assert!(
        estimated <= real * 2.0 && estimated >= real / 2.0,
        "estimated {estimated:.2} s against {real:.2} s: {estimate}"
    );
}

#[tokio::test]
async fn concurrent_builds_not_valid_constraints_and_unindexed_foreign_keys_are_traced() {
    let db = db_with(SQLX).await;
    live_orders(&db, 5_000).await;
    write(
        &db,
        "migrations/0001_orders_customer.sql",
        "ALTER TABLE orders ADD CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id) NOT VALID;\nALTER TABLE orders ALTER COLUMN note SET NOT NULL;\n",
    );
    write(
        &db,
        "migrations/0002_orders_total.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY orders_total ON orders (total);\n",
    );
    let json = db.pgmaint(&["migrate", "plan", "--json"]).await;
    json.assert_code(0);
    let plan = json.json();
    let list = statements(&plan);
    let fk = &list[0]["trace"];
    assert_eq!(fk["not_valid"][0], "public.orders.orders_customer", "{fk}");
    assert_eq!(
        fk["unindexed_foreign_keys"][0], "public.orders.orders_customer",
        "{fk}"
    );
    assert_eq!(fk["locks"][0]["mode"], "SHARE ROW EXCLUSIVE", "{fk}");
    assert_eq!(
        fk["scans"],
        serde_json::json!([]),
        "NOT VALID reads nothing: {fk}"
    );
    let not_null = &list[1]["trace"];
    assert_eq!(
        not_null["scans"][0], "public.orders",
        "SET NOT NULL reads the table: {not_null}"
    );
    let build = &list[2]["trace"];
    assert_eq!(build["documented"], true, "{build}");
    assert_eq!(
        build["builds"][0]["index"], "public.orders_total",
        "{build}"
    );
    assert_eq!(
        build["locks"][0]["mode"], "SHARE UPDATE EXCLUSIVE",
        "{build}"
    );
    assert_eq!(build["locks"][0]["blocks"], "schema_changes", "{build}");
    assert!(
        list[2]["estimate"]["work"][0]
            .as_str()
            .unwrap()
            .starts_with("builds public.orders_total on public.orders")
    );
    let text = db.pgmaint(&["migrate", "plan"]).await;
    assert!(
        text.stdout.contains("has no index on its columns"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn a_migration_that_fails_on_the_copy_says_so_and_changes_nothing() {
    let db = db_with(SQLX).await;
    live_orders(&db, 10).await;
    write(
        &db,
        "migrations/0001_typo.sql",
        "ALTER TABLE orderz ADD COLUMN seen boolean;\n",
    );
    write(
        &db,
        "migrations/0002_next.sql",
        "CREATE TABLE next (id int);\n",
    );
    let json = db.pgmaint(&["migrate", "plan", "--json"]).await;
    json.assert_code(0);
    let plan = json.json();
    assert_eq!(plan["migrations"][0]["trace"]["status"], "failed", "{plan}");
    assert!(
        plan["migrations"][0]["trace"]["error"]
            .as_str()
            .unwrap()
            .contains("orderz"),
        "{plan}"
    );
    assert_eq!(plan["migrations"][1]["trace"]["status"], "not_reached");
    let text = db.pgmaint(&["migrate", "plan"]).await;
    assert!(
        text.stdout
            .contains("fails at line 1 on a copy of the live schema"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn without_local_server_binaries_the_plan_has_lint_and_a_size_based_estimate() {
    let db = db_with(SQLX).await;
    live_orders(&db, 20_000).await;
    write(
        &db,
        "migrations/0001_orders_total.sql",
        "CREATE INDEX orders_total ON orders (total);\n",
    );
    let empty = tempfile::tempdir().unwrap();
    let out = db
        .command(&["migrate", "plan"])
        .env("PGMAINT_PG_BIN", empty.path())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("not traced:"), "{text}");
    assert!(text.contains("install"), "says how to get a trace: {text}");
    assert!(
        text.contains("0001 line 1: locks out writes, may rewrite orders ("),
        "{text}"
    );
    assert!(
        text.contains("require-concurrent-index-creation"),
        "the lint is still there: {text}"
    );
}

/// The `pgmaint-scratch-*` directories in `dir`.
fn scratch_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pgmaint-scratch-"))
        })
        .collect()
}

#[tokio::test]
async fn kill_9_during_a_trace_leaves_no_cluster_after_the_next_start() {
    let db = db_with(SQLX).await;
    live_orders(&db, 300_000).await;
    write(
        &db,
        "migrations/0001_order_tokens.sql",
        "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    // The sweep's own test: pgmaint, its watchdog and the scratch server
    // killed together, as `kill -9 -PGID` does.
    let tmp_path = tmp.path().to_path_buf();
    #[cfg(unix)]
    std::fs::set_permissions(
        &tmp_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let mut child = db
        .command(&["migrate", "plan"])
        .env("TMPDIR", &tmp_path)
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    common::wait_for(
        "a scratch cluster to start",
        std::time::Duration::from_secs(30),
        async || (!scratch_dirs(&tmp_path).is_empty()).then_some(()),
    )
    .await;
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait().await;
    assert!(
        !scratch_dirs(&tmp_path).is_empty(),
        "left behind by kill -9"
    );

    let next = db
        .command(&["migrate", "plan"])
        .env("TMPDIR", &tmp_path)
        .output()
        .await
        .unwrap();
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert_eq!(
        scratch_dirs(&tmp_path),
        Vec::<std::path::PathBuf>::new(),
        "the next start swept what the killed one left, and removed its own"
    );
}

#[tokio::test]
async fn up_asks_for_yes_for_what_the_trace_sees_lock_a_big_table_and_not_for_a_lock_that_blocks_no_writes()
 {
    let db = db_with(&format!("{SQLX}confirm_above = \"8kB\"\n")).await;
    live_orders(&db, 2_000).await;
    // The parse cannot see into a DO block; the trace sees its lock.
    write(
        &db,
        "migrations/0001_lock.sql",
        "DO $$ BEGIN EXECUTE 'LOCK TABLE orders IN ACCESS EXCLUSIVE MODE'; END $$;\n",
    );
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused
            .stderr
            .contains("holds ACCESS EXCLUSIVE on public.orders")
            && refused.stderr.contains("traced on a scratch copy")
            && refused.stderr.contains("--yes"),
        "{}",
        refused.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM _sqlx_migrations").await, 0);

    // A storage parameter takes SHARE UPDATE EXCLUSIVE: reads and writes
    // go on, so no confirmation, whatever the table's size.
    write(
        &db,
        "migrations/0001_lock.sql",
        "ALTER TABLE orders SET (autovacuum_vacuum_scale_factor = 0.01);\n",
    );
    let applied = db.pgmaint(&["migrate", "up"]).await;
    applied.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM _sqlx_migrations").await, 1);
}

/// Objects of most kinds pgmaint's catalog copy makes, as ORMs make them.
const RICH_SCHEMA: &str = r#"
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA billing;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN billing.cents AS bigint CHECK (VALUE >= 0) NOT NULL DEFAULT 0;
CREATE SEQUENCE billing.invoice_no START 1000;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$;
CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email citext NOT NULL UNIQUE,
  name text COLLATE "C", mood mood DEFAULT 'happy', updated_at timestamptz,
  lower_email text GENERATED ALWAYS AS (lower(email::text)) STORED);
CREATE TABLE billing.invoices (id serial PRIMARY KEY, no bigint NOT NULL DEFAULT nextval('billing.invoice_no'),
  user_id bigint REFERENCES users ON DELETE CASCADE, total billing.cents, CHECK (no > 0));
CREATE INDEX invoices_user ON billing.invoices (user_id) WHERE total > 0;
CREATE TABLE events (at timestamptz NOT NULL, kind text, PRIMARY KEY (at, kind)) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX ON events (kind);
CREATE VIEW happy_count AS SELECT count(*) FROM (SELECT id FROM users WHERE mood = 'happy') u;
CREATE MATERIALIZED VIEW totals AS SELECT user_id, sum(total) AS s FROM billing.invoices GROUP BY user_id;
CREATE UNIQUE INDEX ON totals (user_id);
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'n' || g FROM generate_series(1, 1000) g;
"#;

#[tokio::test]
async fn without_a_pg_dump_of_the_live_major_pgmaints_catalog_copy_traces_the_same() {
    let db = db_with(SQLX).await;
    db.client().await.batch_execute(RICH_SCHEMA).await.unwrap();
    write(
        &db,
        "migrations/0001_users_token.sql",
        "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();\nALTER TABLE billing.invoices ADD CONSTRAINT invoices_total_small CHECK (total < 1000000);\nCREATE INDEX users_name ON users (name);\n",
    );
    let dumped = db.pgmaint(&["migrate", "plan", "--json"]).await;
    dumped.assert_code(0);
    let copied: common::Run = db
        .command(&["migrate", "plan", "--json"])
        .env("PGMAINT_PG_DUMP", "none")
        .output()
        .await
        .unwrap()
        .into();
    copied.assert_code(0);
    let (dumped, copied) = (dumped.json(), copied.json());
    assert!(
        copied["trace"]["copied_with"]
            .as_str()
            .unwrap()
            .starts_with("pgmaint's catalog copy"),
        "{copied}"
    );
    assert_eq!(
        copied["trace"]["not_copied"],
        serde_json::json!([]),
        "{copied}"
    );
    assert_eq!(copied["migrations"][0]["trace"]["status"], "traced");
    let traces = |plan: &serde_json::Value| -> Vec<serde_json::Value> {
        statements(plan)
            .iter()
            .map(|s| s["trace"].clone())
            .collect()
    };
    assert_eq!(traces(&copied), traces(&dumped));
    assert_eq!(
        traces(&copied)[0]["rewrites"],
        serde_json::json!(["public.users"])
    );
}

#[tokio::test]
async fn a_migration_on_what_the_copy_lacks_is_not_traced_and_says_why() {
    // pgmaint's catalog copy makes no composite types, so not the table
    // that uses one: a migration of that table cannot be traced.
    let db = db_with(SQLX).await;
    db.client()
        .await
        .batch_execute(
            "CREATE TYPE pair AS (a int, b int); CREATE TABLE pairs (id int PRIMARY KEY, p pair);",
        )
        .await
        .unwrap();
    write(
        &db,
        "migrations/0001_pairs_note.sql",
        "ALTER TABLE pairs ADD COLUMN note text;\n",
    );
    let plan: common::Run = db
        .command(&["migrate", "plan", "--json"])
        .env("PGMAINT_PG_DUMP", "none")
        .output()
        .await
        .unwrap()
        .into();
    plan.assert_code(0);
    let plan = plan.json();
    let not_copied = plan["trace"]["not_copied"].to_string();
    assert!(not_copied.contains("pair"), "{plan}");
    let migration = &plan["migrations"][0];
    assert_eq!(migration["trace"]["status"], "not_traced", "{plan}");
    assert!(
        migration["trace"]["reason"]
            .as_str()
            .unwrap()
            .contains("the scratch copy lacks what the live server has"),
        "{plan}"
    );
    // Nothing ran on the live database.
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'pairs' AND column_name = 'note'")
            .await,
        0
    );
}

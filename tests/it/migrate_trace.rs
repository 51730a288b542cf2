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
            && text.contains(") under ACCESS EXCLUSIVE: about "),
        "the rewrite, its lock and its estimate come first: {text}"
    );
    assert!(text.contains("blocks reads and writes"), "{text}");

    let json = db.pgmaint(&["migrate", "plan", "--json"]).await;
    json.assert_code(0);
    let plan = json.json();
    let list = statements(&plan);
    let first = &list[0];
    assert_eq!(first["trace"]["rewrites"][0], "public.orders", "{first}");
    assert_eq!(first["trace"]["locks"][0]["mode"], "ACCESS EXCLUSIVE", "{first}");
    assert_eq!(first["trace"]["locks"][0]["blocks"], "reads_and_writes");
    assert!(first["estimate"]["seconds"].as_f64().unwrap() > 0.0, "{first}");
    // A constant default is stored in the catalog: no rewrite, a brief lock.
    let second = &list[1];
    assert_eq!(second["trace"]["rewrites"], serde_json::json!([]), "{second}");
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
    let db = db_with(SQLX).await;
    live_orders(&db, 2_000_000).await;
    let sql = "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();";
    write(&db, "migrations/0001_order_tokens.sql", &format!("{sql}\n"));
    let json = db.pgmaint(&["migrate", "plan", "--json"]).await;
    json.assert_code(0);
    let plan = json.json();
    let estimate = &statements(&plan)[0]["estimate"];
    let estimated = estimate["seconds"].as_f64().unwrap();

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

//! Archives, exports and backups hold every row exactly as it was, and a
//! restore gives it back, on the column shapes ORMs make: a stored
//! generated column, an identity column, an enum, a domain, arrays, jsonb
//! and TOAST-sized values.

use crate::common;

use common::TestDb;

/// 2,000 orders, every column shape; a fiftieth of them carry 9.6 kB of
/// incompressible text (stored out of line).
const ORDERS: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE DOMAIN positive AS int CHECK (VALUE > 0);
    CREATE TABLE orders (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL,
        price numeric(10,2) NOT NULL,
        qty positive NOT NULL,
        total numeric GENERATED ALWAYS AS (price * qty) STORED,
        mood mood,
        tags text[],
        doc jsonb,
        big text);
    INSERT INTO orders (at, price, qty, mood, tags, doc, big)
      SELECT now() - (i % 100) * interval '1 day', i * 1.25, 1 + i % 7,
             (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood,
             ARRAY['a' || i, NULL, 'q\"uo,te'],
             jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'x', NULL)),
             CASE WHEN i % 50 = 0
                  THEN (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 300) g)
                  ELSE 'short' END
        FROM generate_series(1, 2000) i;
    ANALYZE orders;";

const OLD: &str = "at < now() - interval '60 days'";
const COLUMNS: &str = "id, at, price, qty, total, mood, tags, doc, big";

async fn orders(task: &str) -> TestDb {
    let db = TestDb::with_sql(ORDERS).await;
    db.config(&format!("[backups]\ndir = \"backups\"\n\n{task}"));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

/// (rows, rows with a NULL total, md5 of the rows' text in id order).
async fn checksum(db: &TestDb, rows: &str) -> (i64, i64, String) {
    let row = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE total IS NULL),
                        coalesce(md5(string_agg(r::text, '|' ORDER BY id)), '')
                   FROM ({rows}) r"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn an_archive_table_holds_generated_and_identity_values_as_they_were() {
    let db = orders(&format!(
        "[tasks.old_orders]\nkind = \"archive\"\ntable = \"orders\"\nwhere = \"{OLD}\"\nbatch_size = 300\n"
    ))
    .await;
    let moving = checksum(&db, &format!("SELECT {COLUMNS} FROM orders WHERE {OLD}")).await;
    let kept = checksum(
        &db,
        &format!("SELECT {COLUMNS} FROM orders WHERE NOT ({OLD})"),
    )
    .await;
    assert!(moving.0 > 500 && moving.1 == 0, "{moving:?}");
    db.pgmaint(&["run", "old_orders"]).await.assert_code(0);
    assert_eq!(
        checksum(&db, &format!("SELECT {COLUMNS} FROM orders_archive")).await,
        moving,
        "the archive's total and id are the source's, not NULL or new"
    );
    assert_eq!(
        checksum(&db, &format!("SELECT {COLUMNS} FROM orders")).await,
        kept
    );
    // A plain column in the archive, not computed there: the expression
    // may change later.
    let generated = db
        .count(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders_archive'::regclass AND attgenerated <> ''",
        )
        .await;
    assert_eq!(generated, 0);
}

#[tokio::test]
async fn an_archive_into_a_table_that_computes_the_column_itself_leaves_it_to_compute() {
    let db = orders(&format!(
        "[tasks.old_orders]\nkind = \"archive\"\ntable = \"orders\"\nwhere = \"{OLD}\"\narchive_table = \"kept_orders\"\n"
    ))
    .await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE kept_orders (LIKE orders INCLUDING GENERATED INCLUDING IDENTITY)",
        )
        .await
        .unwrap();
    let moving = checksum(&db, &format!("SELECT {COLUMNS} FROM orders WHERE {OLD}")).await;
    db.pgmaint(&["run", "old_orders"]).await.assert_code(0);
    assert_eq!(
        checksum(&db, &format!("SELECT {COLUMNS} FROM kept_orders")).await,
        moving,
        "identity values kept (OVERRIDING SYSTEM VALUE), total computed again"
    );
}

#[tokio::test]
async fn an_export_holds_every_row_whole_generated_values_included() {
    let db = orders(&format!(
        "[tasks.old_orders]\nkind = \"archive\"\ntable = \"orders\"\nwhere = \"{OLD}\"\narchive_table = false\nexport = \"exports\"\nbatch_size = 400\n"
    ))
    .await;
    std::fs::create_dir(db.dir.path().join("exports")).unwrap();
    let moving = checksum(&db, &format!("SELECT {COLUMNS} FROM orders WHERE {OLD}")).await;
    db.pgmaint(&["run", "old_orders"]).await.assert_code(0);
    // Loaded into a table LIKE the source (total a plain column there).
    let manifests =
        crate::archive::load_exports(&db, &db.dir.path().join("exports"), "from_files", "orders")
            .await;
    let names = manifests[0]["columns"].to_string();
    assert!(
        names.contains("\"total\""),
        "the export holds the row whole: {names}"
    );
    assert_eq!(
        checksum(&db, &format!("SELECT {COLUMNS} FROM from_files")).await,
        moving
    );
}

#[tokio::test]
async fn a_backup_restores_every_shape_byte_for_byte() {
    let db = orders(&format!(
        "[tasks.old_orders]\nkind = \"purge\"\ntable = \"orders\"\nwhere = \"{OLD}\"\nbatch_size = 250\nbackup = true\n"
    ))
    .await;
    let original = checksum(&db, &format!("SELECT {COLUMNS} FROM orders")).await;
    let run = db.pgmaint(&["run", "old_orders", "--json"]).await;
    run.assert_code(0);
    let id = run.json()["tasks"][0]["details"]["backup_id"]
        .as_i64()
        .expect("a backup");
    assert!(db.count("SELECT count(*) FROM orders").await < original.0);
    db.pgmaint(&["restore", &id.to_string()])
        .await
        .assert_code(0);
    assert_eq!(
        checksum(&db, &format!("SELECT {COLUMNS} FROM orders")).await,
        original
    );
}

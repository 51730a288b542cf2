//! What a removal may touch (PRODUCT.md): exactly the rows the predicate
//! names whatever its text holds, rows still referenced left in place and
//! counted, cascades counted and backed up so restore puts all of it back.

mod common;

use common::TestDb;

/// A database with `sql` loaded and `config` written, initialised.
async fn with(sql: &str, config: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client().await.batch_execute(sql).await.unwrap();
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

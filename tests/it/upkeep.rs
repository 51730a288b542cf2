//! refresh, vacuum, analyze and reindex against a real PostgreSQL.

use crate::common;

use common::TestDb;

#[tokio::test]
async fn refresh_goes_concurrently_where_it_can_in_dependency_order_and_records_it() {
    let db = TestDb::with_sql(
        "CREATE TABLE scores (player int, points int);
         INSERT INTO scores SELECT i % 50, i FROM generate_series(1, 1000) i;
         CREATE MATERIALIZED VIEW leaderboard AS SELECT player, sum(points) AS total FROM scores GROUP BY player;
         CREATE UNIQUE INDEX ON leaderboard (player);
         CREATE VIEW top_players AS SELECT * FROM leaderboard WHERE total > 9000;
         CREATE MATERIALIZED VIEW top_summary AS SELECT count(*) AS n FROM top_players;",
    )
    .await;
    db.config(
        "[tasks.views]\nkind = \"refresh\"\nviews = [\"top_summary\", \"leaderboard\"]\nmax_staleness = \"5min\"\n\n[tasks.strict]\nkind = \"refresh\"\nviews = [\"top_summary\"]\nconcurrently = true\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);

    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    assert!(
        check.stderr.contains("tasks.strict.views")
            && check
                .stderr
                .contains("CREATE UNIQUE INDEX ON \"public\".\"top_summary\""),
        "{}",
        check.stderr
    );

    let plan = db.pgmaint(&["plan", "views", "--json"]).await;
    plan.assert_code(0);
    let views = plan.json()["tasks"][0]["details"]["views"].clone();
    assert_eq!(
        views[0]["view"], "public.leaderboard",
        "read first: {views}"
    );
    assert_eq!(views[0]["concurrently"], true);
    assert_eq!(views[1]["view"], "public.top_summary");
    assert_eq!(views[1]["concurrently"], false);
    assert!(
        views[1]["reason"]
            .as_str()
            .unwrap()
            .contains("no unique index"),
        "{views}"
    );

    // A reader in an open transaction on the leaderboard is not blocked by
    // a concurrent refresh (a plain one would wait for it).
    let reader = db.client().await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM leaderboard;")
        .await
        .unwrap();
    db.client()
        .await
        .batch_execute("INSERT INTO scores SELECT 7, 100000")
        .await
        .unwrap();
    let run = db.pgmaint(&["run", "views", "--json"]).await;
    run.assert_code(0);
    let refreshed = &run.json()["tasks"][0]["details"]["refreshed"];
    assert_eq!(refreshed[0]["mode"], "concurrently");
    assert_eq!(refreshed[1]["mode"], "plain");
    reader.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        db.count("SELECT total FROM leaderboard WHERE player = 7")
            .await,
        db.count("SELECT sum(points) FROM scores WHERE player = 7")
            .await
    );
    assert_eq!(
        db.count("SELECT n FROM top_summary").await,
        db.count("SELECT count(*) FROM top_players").await
    );

    // Recorded, and shown by `tasks`.
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.refreshes").await, 2);
    let tasks = db.pgmaint(&["tasks", "--json"]).await.json();
    let ages = &tasks["tasks"][0]["last_refresh"];
    assert!(
        ages["public.leaderboard"].as_f64().unwrap() < 60.0,
        "{tasks}"
    );
    let table = db.pgmaint(&["tasks"]).await;
    assert!(
        table.stdout.contains("public.leaderboard: "),
        "{}",
        table.stdout
    );
}

/// Waits until the statistics show `n_dead_tup` for `table`.
async fn dead_rows_visible(db: &TestDb, table: &str) -> i64 {
    db.wait_for_count(
        &format!("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = '{table}'"),
        |dead| dead > 0,
        &format!("dead rows in the statistics of {table}"),
    )
    .await
}

#[tokio::test]
async fn auto_vacuum_and_analyze_pick_the_tables_that_need_it() {
    let db = TestDb::with_sql(
        "CREATE TABLE dirty (id int, pad text) WITH (autovacuum_enabled = false);
         CREATE TABLE clean (id int, pad text) WITH (autovacuum_enabled = false);
         INSERT INTO dirty SELECT i, repeat('x', 100) FROM generate_series(1, 20000) i;
         INSERT INTO clean SELECT i, repeat('x', 100) FROM generate_series(1, 20000) i;",
    )
    .await;
    // The inserts must be in the statistics before the ANALYZE resets the
    // change counters, or they would count as changes made after it.
    db.wait_for_count(
        "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables WHERE relname IN ('dirty', 'clean')",
        |inserted| inserted == 40000,
        "the inserts in the statistics",
    )
    .await;
    let writer = db.client().await;
    writer.batch_execute("ANALYZE dirty").await.unwrap();
    writer.batch_execute("ANALYZE clean").await.unwrap();
    writer
        .batch_execute("DELETE FROM dirty WHERE id % 2 = 0")
        .await
        .unwrap();
    writer
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    dead_rows_visible(&db, "dirty").await;
    db.config(
        "[tasks.vacuum]\nkind = \"vacuum\"\nauto = true\ndead_ratio = 0.2\nmin_dead_rows = 1000\n\n[tasks.analyze]\nkind = \"analyze\"\nauto = true\nmod_ratio = 0.2\n\n[tasks.full]\nkind = \"vacuum\"\ntables = [\"clean\"]\nfull = true\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);

    let plan = db.pgmaint(&["plan", "vacuum", "analyze", "--json"]).await;
    plan.assert_code(0);
    let json = plan.json();
    for task in json["tasks"].as_array().unwrap() {
        let tables = task["details"]["tables"].as_array().unwrap();
        assert_eq!(tables.len(), 1, "{task}");
        assert_eq!(tables[0]["table"], "public.dirty", "{task}");
    }
    assert!(
        json["tasks"][0]["details"]["tables"][0]["why"]
            .as_str()
            .unwrap()
            .contains("10000 dead rows"),
        "{json}"
    );
    assert!(
        json["tasks"][1]["details"]["tables"][0]["why"]
            .as_str()
            .unwrap()
            .contains("changed since the last analyze"),
        "{json}"
    );

    let run = db.pgmaint(&["run", "vacuum", "--json"]).await;
    run.assert_code(0);
    let table = &run.json()["tasks"][0]["details"]["tables"][0];
    assert_eq!(table["dead_rows_before"], 10000, "{table}");
    assert_eq!(table["dead_rows_after"], 0, "{table}");

    // VACUUM FULL is critical: it needs confirmation.
    let tasks = db.pgmaint(&["tasks", "--json"]).await.json();
    assert_eq!(
        tasks["tasks"][2]["name"], "full",
        "tasks in the order written: {tasks}"
    );
    assert_eq!(tasks["tasks"][2]["severity"], "critical");
    db.pgmaint(&["run", "full"]).await.assert_code(2);
    db.pgmaint(&["run", "full", "--yes"]).await.assert_code(0);
}

#[tokio::test]
async fn an_invalid_index_is_rebuilt_once_its_duplicates_are_gone_and_leftovers_dropped() {
    let db = TestDb::with_sql(
        "CREATE TABLE accounts (id int, email text);
         INSERT INTO accounts SELECT i, 'user' || (i % 900) || '@example.com' FROM generate_series(1, 1000) i;",
    )
    .await;
    let client = db.client().await;
    let failed = client
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY accounts_email ON accounts (email)")
        .await;
    assert!(failed.is_err(), "duplicates make the build fail");
    // A failed REINDEX CONCURRENTLY of it leaves an invalid _ccnew copy.
    assert!(
        client
            .batch_execute("REINDEX INDEX CONCURRENTLY accounts_email")
            .await
            .is_err()
    );
    let invalid = "SELECT string_agg(relname::text, ',' ORDER BY relname) FROM pg_index JOIN pg_class ON oid = indexrelid WHERE NOT indisvalid";
    let names: String = client.query_one(invalid, &[]).await.unwrap().get(0);
    assert_eq!(names, "accounts_email,accounts_email_ccnew");

    db.config("[tasks.indexes]\nkind = \"reindex\"\ntables = [\"accounts\"]\n");
    db.pgmaint(&["init"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "indexes", "--json"]).await;
    plan.assert_code(0);
    let indexes = plan.json()["tasks"][0]["details"]["indexes"].clone();
    assert_eq!(indexes[0]["index"], "public.accounts_email_ccnew");
    assert_eq!(indexes[0]["action"], "drop");
    assert_eq!(indexes[1]["index"], "public.accounts_email");
    assert_eq!(indexes[1]["action"], "rebuild");

    // Still duplicates: the rebuild fails, and its own leftover is dropped.
    let run = db.pgmaint(&["run", "indexes", "--json"]).await;
    run.assert_code(1);
    assert!(
        run.json()["tasks"][0]["details"]["error"]
            .as_str()
            .unwrap()
            .contains("could not create unique index"),
        "{}",
        run.stdout
    );
    let names: String = client.query_one(invalid, &[]).await.unwrap().get(0);
    assert_eq!(names, "accounts_email", "no _ccnew left behind");

    client
        .batch_execute("DELETE FROM accounts WHERE id > 900")
        .await
        .unwrap();
    db.pgmaint(&["run", "indexes"]).await.assert_code(0);
    let left: Option<String> = client.query_one(invalid, &[]).await.unwrap().get(0);
    assert_eq!(left, None, "the index is valid now");
    assert!(
        client
            .batch_execute("INSERT INTO accounts VALUES (1, 'user1@example.com')")
            .await
            .is_err(),
        "and enforced"
    );
}

#[tokio::test]
async fn bloated_indexes_are_measured_by_pgstattuple_or_estimated_and_rebuilt() {
    let db = TestDb::with_sql(
        "CREATE TABLE events (id int, note text) WITH (autovacuum_enabled = false);
         INSERT INTO events SELECT i, 'n' FROM generate_series(1, 200000) i;
         CREATE INDEX events_id ON events (id);
         DELETE FROM events WHERE id % 10 <> 0;",
    )
    .await;
    let client = db.client().await;
    client.batch_execute("VACUUM events").await.unwrap();
    client.batch_execute("ANALYZE events").await.unwrap();
    db.config("[tasks.bloat]\nkind = \"reindex\"\nindexes = [\"events_id\"]\nbloat_ratio = 0.5\n");
    db.pgmaint(&["init"]).await.assert_code(0);

    let estimated = db.pgmaint(&["plan", "bloat", "--json"]).await.json();
    let index = &estimated["tasks"][0]["details"]["indexes"][0];
    assert_eq!(index["measured_by"], "estimate", "{estimated}");
    assert!(index["bloat"].as_f64().unwrap() > 0.5, "{index}");

    client
        .batch_execute("CREATE EXTENSION pgstattuple")
        .await
        .unwrap();
    let measured = db.pgmaint(&["plan", "bloat", "--json"]).await.json();
    let index = &measured["tasks"][0]["details"]["indexes"][0];
    assert_eq!(index["measured_by"], "pgstattuple", "{measured}");
    assert!(index["bloat"].as_f64().unwrap() > 0.5, "{index}");

    let run = db.pgmaint(&["run", "bloat", "--json"]).await;
    run.assert_code(0);
    let done = &run.json()["tasks"][0]["details"]["indexes"][0];
    assert!(
        done["size_bytes_after"].as_i64().unwrap() * 3
            < done["size_bytes_before"].as_i64().unwrap(),
        "{done}"
    );
    let after = db.pgmaint(&["plan", "bloat", "--json"]).await.json();
    assert_eq!(
        after["tasks"][0]["details"]["indexes"],
        serde_json::json!([]),
        "{after}"
    );
    // An empty selection says why: the rebuilt index is under the floor.
    let summary = after["tasks"][0]["details"]["summary"].as_str().unwrap();
    assert!(
        summary.ends_with("; passed over: 1 under the 1 MiB size floor"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_reindex_that_selects_nothing_says_what_it_passed_over_and_why() {
    let db = TestDb::with_sql(
        "CREATE TABLE events (id int, note text);
         INSERT INTO events SELECT i, 'n' FROM generate_series(1, 200000) i;
         CREATE INDEX events_id ON events (id);
         CREATE INDEX events_id_hash ON events USING hash (id);
         CREATE TABLE small (id int PRIMARY KEY);
         ANALYZE events;",
    )
    .await;
    db.config(
        "[tasks.bloat]\nkind = \"reindex\"\ntables = [\"events\", \"small\"]\nbloat_ratio = 0.5\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "bloat", "--json"]).await.json();
    let details = &plan["tasks"][0]["details"];
    assert_eq!(details["indexes"], serde_json::json!([]), "{plan}");
    assert_eq!(
        details["summary"],
        "would rebuild 0 index(es) and drop 0 leftover(s); passed over: 1 under the 1 MiB size floor, 1 at or under bloat_ratio 0.5, 1 not B-tree",
        "{plan}"
    );
    assert_eq!(details["passed_over"]["not_btree"], 1, "{plan}");
    let text = db.pgmaint(&["plan", "bloat"]).await;
    assert!(
        text.stdout.contains("1 at or under bloat_ratio 0.5"),
        "{}",
        text.stdout
    );
}

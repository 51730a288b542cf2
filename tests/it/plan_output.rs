//! What `plan` (and `run --dry-run`) tells a person: a summary per task in
//! words, the statements only with `-v`, every line within 80 columns, and
//! a batch count the run then keeps to.

use crate::common;

use common::TestDb;

#[track_caller]
fn assert_fits_80_columns(text: &str) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "a line of {} columns:\n{line}\nin:\n{text}",
            line.chars().count()
        );
    }
}

/// The output's words one space apart: prose is wrapped, so a sentence
/// is looked for in this.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Matches interleaved unevenly over the pages: a stretch where every
/// other row matches, one where every tenth does, one where none does and
/// a dense one. Rows / batch_size is far from what the walk takes here.
const INTERLEAVED: &str = "
    CREATE TABLE tokens (id int PRIMARY KEY, expired bool NOT NULL, pad text)
      WITH (autovacuum_enabled = off);
    INSERT INTO tokens
    SELECT i,
           CASE WHEN i <= 6000 THEN i % 2 = 0
                WHEN i <= 12000 THEN i % 10 = 0
                WHEN i <= 18000 THEN false
                ELSE true END,
           repeat('x', 40)
      FROM generate_series(1, 24000) i;
    ANALYZE tokens;";

#[tokio::test]
async fn the_plans_batch_count_is_the_runs_on_a_table_where_matches_are_interleaved() {
    for backup in [false, true] {
        let db = TestDb::with_sql(INTERLEAVED).await;
        db.config(&format!(
            "[backups]\ndir = \"backups\"\n\n[tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\nbatch_size = 700\nbackup = {backup}\n"
        ));
        db.pgmaint(&["init"]).await.assert_code(0);
        let plan = db.pgmaint(&["plan", "expired_tokens", "--json"]).await;
        plan.assert_code(0);
        let planned = &plan.json()["tasks"][0];
        let rows = planned["rows"].as_u64().unwrap();
        assert_eq!(rows, 3000 + 600 + 6000);
        let batches = planned["batches"].as_u64().unwrap();

        let run = db.pgmaint(&["run", "expired_tokens", "--json"]).await;
        run.assert_code(0);
        let ran = &run.json()["tasks"][0];
        assert_eq!(ran["rows"].as_u64().unwrap(), rows);
        let took = ran["batches"].as_u64().unwrap();
        assert!(
            took > rows.div_ceil(700),
            "the table should need more batches than rows / batch_size: {took}"
        );
        // The walk halves its window after a batch slower than 150ms, which
        // only a loaded machine does here: then the plan is a floor.
        if ran["details"]["longest_batch_ms"].as_u64().unwrap() <= 150 {
            assert_eq!(
                batches, took,
                "backup = {backup}: plan {planned}\nrun {ran}"
            );
        } else {
            assert!(
                batches <= took,
                "backup = {backup}: plan {planned}\nrun {ran}"
            );
        }
        assert_eq!(
            planned["details"]["batches_estimate"]["batches"], batches,
            "{planned}"
        );
        assert_eq!(planned["details"]["batches_estimate"]["at_least"], false);
        let largest = planned["details"]["batches_estimate"]["largest_batch"]
            .as_u64()
            .unwrap();
        // A window is deleted whole up to two batches' worth of pages at
        // the table's average density; denser pages take a bigger batch.
        assert!(largest > 0 && largest <= 1400, "{planned}");
    }
}

#[tokio::test]
async fn above_the_exact_count_limit_the_plan_says_at_least() {
    let db = TestDb::with_sql(INTERLEAVED).await;
    db.config("[tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\nbatch_size = 700\nexact_count_limit = 1000\n");
    db.pgmaint(&["init"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "expired_tokens"]).await;
    plan.assert_code(0);
    let prose = words(&plan.stdout);
    assert!(
        prose.contains("about 9,600 rows (the planner's estimate)")
            && prose.contains("in at least 14 batches"),
        "{}",
        plan.stdout
    );
    assert_fits_80_columns(&plan.stdout);
}

const SOFT_DELETED_USERS: &str = "
    CREATE TABLE users (id int PRIMARY KEY, is_deleted bool NOT NULL DEFAULT false,
                        email text NOT NULL DEFAULT 'someone-with-a-long-address@example.com');
    INSERT INTO users (id, is_deleted) SELECT i, i <= 40 FROM generate_series(1, 100) i;
    CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users (id));
    INSERT INTO orders VALUES (1, 5), (2, 6), (3, 70);
    CREATE TABLE sessions (id int PRIMARY KEY,
                           user_id int REFERENCES users (id) ON DELETE CASCADE);
    INSERT INTO sessions SELECT i, i FROM generate_series(1, 100) i;
    CREATE TABLE invites (id int PRIMARY KEY,
                          invited_by int REFERENCES users (id) ON DELETE SET NULL);
    INSERT INTO invites SELECT i, i FROM generate_series(1, 20) i;
    CREATE TABLE scratch (id int);
    INSERT INTO scratch SELECT generate_series(1, 10);
    CREATE MATERIALIZED VIEW user_counts AS SELECT count(*) AS n FROM users;";

const SOFT_DELETED_CONFIG: &str = r#"
[database]
lock_timeout = "2s"

[tasks.deleted_users]
kind = "purge"
table = "users"
where = "is_deleted"
batch_size = 1000

[tasks.wipe_scratch]
kind = "purge"
table = "scratch"
where = "true"

[tasks.counts]
kind = "refresh"
views = ["user_counts"]

[tasks.vacuum_users]
kind = "vacuum"
tables = ["users"]
"#;

#[tokio::test]
async fn the_plan_says_in_words_what_a_run_would_do_and_shows_statements_only_with_v() {
    let db = TestDb::with_sql(SOFT_DELETED_USERS).await;
    db.config(SOFT_DELETED_CONFIG);
    db.pgmaint(&["init"]).await.assert_code(0);

    let plan = db.pgmaint(&["plan"]).await;
    plan.assert_code(0);
    let text = &plan.stdout;
    assert_fits_80_columns(text);
    let prose = words(text);
    for expected in [
        // 40 soft-deleted users, two of them still referenced by an order.
        "Would delete 38 rows of public.users in 1 batch.",
        "Keeps 2 rows still referenced",
        "2 by public.orders (\"orders_user_id_fkey\")",
        "Also deletes 38 rows of public.sessions (ON DELETE CASCADE through \"sessions_user_id_fkey\")",
        "Sets invited_by to NULL in 18 rows of public.invites (ON DELETE SET NULL through \"invites_invited_by_fkey\")",
        "Locks: each batch (one transaction) takes ROW EXCLUSIVE on public.users and locks the rows it deletes and those its cascades change until it commits",
        "waits at most lock_timeout 2s",
        "For example (3 of 38):",
        "The condition matches every row of public.scratch",
        "pgmaint run wipe_scratch --yes",
        "Would refresh 1 materialized view(s)",
        "takes EXCLUSIVE on its view",
        "Would vacuum 1 table(s)",
        "SHARE UPDATE EXCLUSIVE",
        "`-v` adds the statements",
    ] {
        assert!(prose.contains(expected), "no {expected:?} in:\n{text}");
    }
    // No time estimate without a run to measure it from.
    assert!(!prose.contains("Takes about"), "{text}");
    // What only pgmaint's walk needs stays out of the summary.
    for internal in ["ctid", "$3", "SET lock_timeout", "Statements:"] {
        assert!(!text.contains(internal), "{internal:?} in:\n{text}");
    }

    let verbose = db.pgmaint(&["plan", "deleted_users", "-v"]).await;
    verbose.assert_code(0);
    assert_fits_80_columns(&verbose.stdout);
    for expected in [
        "Statements:",
        "ORDER BY ctid LIMIT $3",
        "Parameters of both batch statements:",
        "$3 the batch size, 1,000",
        "$4 the cutoff: none",
    ] {
        assert!(
            verbose.stdout.contains(expected),
            "no {expected:?} in:\n{}",
            verbose.stdout
        );
    }

    // `run --dry-run` is the plan.
    let dry = db.pgmaint(&["run", "--all", "--dry-run"]).await;
    dry.assert_code(0);
    let dry_prose = words(&dry.stdout);
    assert!(
        dry_prose.contains("Would delete 38 rows of public.users in 1 batch."),
        "{}",
        dry.stdout
    );

    // The JSON keeps its shape.
    let json = db.pgmaint(&["plan", "--json"]).await.json();
    for key in ["run_id", "dry_run", "status", "tasks"] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    for task in json["tasks"].as_array().unwrap() {
        for key in [
            "name",
            "kind",
            "status",
            "rows",
            "batches",
            "duration_ms",
            "details",
        ] {
            assert!(task.get(key).is_some(), "no {key} in {task}");
        }
    }
}

#[tokio::test]
async fn after_a_run_the_plan_estimates_the_time_from_that_run() {
    let db = TestDb::with_sql(INTERLEAVED).await;
    db.config("[tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\nbatch_size = 700\n");
    db.pgmaint(&["init"]).await.assert_code(0);
    let json = db
        .pgmaint(&["plan", "expired_tokens", "--json"])
        .await
        .json();
    assert!(
        json["tasks"][0]["details"]["time_estimate"].is_null(),
        "{json}"
    );

    let run = db
        .pgmaint(&["run", "expired_tokens", "--json"])
        .await
        .json();
    let (rows, ms) = (
        run["tasks"][0]["rows"].as_f64().unwrap(),
        run["tasks"][0]["duration_ms"].as_f64().unwrap(),
    );
    // As many rows again, for the next run to find.
    db.client()
        .await
        .batch_execute("UPDATE tokens SET expired = true WHERE id % 3 = 0 AND id > 18000; INSERT INTO tokens SELECT i, i % 2 = 0, 'x' FROM generate_series(30001, 49000) i")
        .await
        .unwrap();
    let plan = db
        .pgmaint(&["plan", "expired_tokens", "--json"])
        .await
        .json();
    let estimate = &plan["tasks"][0]["details"]["time_estimate"];
    assert_eq!(estimate["runs"], 1, "{plan}");
    let rate = rows * 1000.0 / ms;
    assert!(
        (estimate["rows_per_second"].as_f64().unwrap() - rate).abs() <= 1.0,
        "{estimate} against {rate}"
    );
    let text = db.pgmaint(&["plan", "expired_tokens"]).await;
    let prose = words(&text.stdout);
    assert!(
        prose.contains("Takes about") && prose.contains("rows/s of its last successful run"),
        "{}",
        text.stdout
    );
    assert_fits_80_columns(&text.stdout);
}

#[tokio::test]
async fn the_plans_time_estimate_is_within_2x_of_the_run_on_a_table_of_500k_rows() {
    // 500,000 sessions, one per day of age 0..89 in turn: the first run
    // takes those older than 45 days (half the rows, on every page), the
    // next those older than 22 (half of those left). The estimate is the
    // rate of past runs, so it holds where they met a similar share of
    // matching rows (a run at another density can take another batch form).
    // Both runs are measured with no other test beside them.
    let _alone = common::alone().await;
    let db = TestDb::with_sql(
        "CREATE TABLE sessions (id bigint PRIMARY KEY, seen_at timestamptz NOT NULL, data text);
         INSERT INTO sessions SELECT i, now() - (i % 90 + 0.5) * interval '1 day', md5(i::text)
           FROM generate_series(1, 500000) i;
         CREATE INDEX ON sessions (seen_at);
         ANALYZE sessions;",
    )
    .await;
    let config = |older_than: &str| {
        format!(
            "[tasks.stale]\nkind = \"purge\"\ntable = \"sessions\"\ntime_column = \"seen_at\"\nolder_than = \"{older_than}\"\n"
        )
    };
    db.config(&config("45 days"));
    db.pgmaint(&["init"]).await.assert_code(0);
    // Each run starts on a vacuumed table, as the other will: a first pass
    // over freshly loaded pages also sets their hint bits.
    db.client()
        .await
        .batch_execute("VACUUM ANALYZE sessions")
        .await
        .unwrap();
    let first = db.pgmaint(&["run", "stale", "--json"]).await;
    first.assert_code(0);
    assert!(first.json()["tasks"][0]["rows"].as_i64().unwrap() > 100_000);
    db.client()
        .await
        .batch_execute("VACUUM ANALYZE sessions")
        .await
        .unwrap();

    db.config(&config("22 days"));
    let plan = db.pgmaint(&["plan", "stale", "--json"]).await;
    plan.assert_code(0);
    let planned = &plan.json()["tasks"][0];
    assert!(planned["rows"].as_i64().unwrap() > 100_000, "{planned}");
    let estimate = planned["details"]["time_estimate"]["ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no estimate: {planned}"));
    let run = db.pgmaint(&["run", "stale", "--json"]).await;
    run.assert_code(0);
    let took = run.json()["tasks"][0]["duration_ms"].as_f64().unwrap();
    let ratio = estimate / took;
    assert!(
        (0.5..=2.0).contains(&ratio),
        "estimated {estimate} ms, took {took} ms ({ratio:.2}x)"
    );
}

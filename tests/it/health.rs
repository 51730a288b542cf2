//! Health checks against a real PostgreSQL: quiet on a clean database, each
//! made to fire by a condition the test builds, and a check that cannot get
//! its lock reports unknown while the others report.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDb;

use common::health_check as check;

/// Fails unless `name` reports `status` with a finding whose object
/// contains `object`.
fn fired(report: &serde_json::Value, name: &str, object: &str) {
    let c = check(report, name);
    assert!(
        c["status"] == "warning" || c["status"] == "critical",
        "{name} should fire: {c}"
    );
    assert!(
        c["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["object"].as_str().unwrap().contains(object)),
        "{name} should name {object}: {c}"
    );
}

const QUIET_ON_A_CLEAN_DATABASE: &[&str] = &[
    "connections",
    "long-running-queries",
    "idle-in-transaction",
    "blocked-queries",
    "prepared-transactions",
    "xid-wraparound",
    "multixact-age",
    "sequences",
    "invalid-indexes",
    "invalid-constraints",
    "duplicate-indexes",
    "unused-indexes",
    "missing-indexes",
    "cache-hit",
    "dead-tuples",
    "vacuum-age",
    "analyze-age",
    "table-bloat",
    "index-bloat",
    "replication",
    "database-size",
    "matview-staleness",
    "task-backlog",
];

// On a cluster of its own, so the cluster-wide checks (activity, roles,
// replication slots) see only its sessions and objects, and other tests
// never see its.
#[tokio::test]
async fn quiet_when_clean_then_every_check_fires_on_the_condition_built_for_it() {
    let cluster = common::own_cluster();
    let db = TestDb::on(&cluster).await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, customer int, placed_at timestamptz DEFAULT now());
             INSERT INTO orders (customer) SELECT i % 100 FROM generate_series(1, 1000) i;
             CREATE TABLE tokens (id int, expires_at timestamptz);
             INSERT INTO tokens SELECT i, now() + interval '1 day' FROM generate_series(1, 50) i;
             CREATE MATERIALIZED VIEW order_stats AS SELECT customer, count(*) FROM orders GROUP BY customer;",
        )
        .await
        .unwrap();
    db.config(
        "[tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expires_at < now()\"\n\n\
         [tasks.stats]\nkind = \"refresh\"\nviews = [\"order_stats\"]\nmax_staleness = \"1s\"\n\n\
         [health.checks.idle-in-transaction]\nwarning = 0\n\n[health.checks.blocked-queries]\nwarning = 0\n\n\
         [health.checks.task-backlog]\nwarning = 10\n\n[health.checks.long-running-queries]\nwarning = 1\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["run", "stats"]).await.assert_code(0);

    let mut args = vec!["health", "--json"];
    for name in QUIET_ON_A_CLEAN_DATABASE {
        if *name != "matview-staleness" {
            args.extend(["--check", name]);
        }
    }
    let clean = db.pgmaint(&args).await;
    clean.assert_code(0);
    let report = clean.json();
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "ok", "quiet on a clean database: {c}");
    }

    // Now build each condition.
    setup
        .batch_execute(
            "CREATE TABLE accounts (id int, email text);
             INSERT INTO accounts VALUES (1, 'a'), (2, 'a');
             CREATE INDEX orders_customer ON orders (customer);
             CREATE INDEX orders_customer_placed ON orders (customer, placed_at);
             SELECT setval('orders_id_seq', 2000000000);
             CREATE TABLE churn (id int, pad text) WITH (autovacuum_enabled = false);
             INSERT INTO churn SELECT i, 'x' FROM generate_series(1, 5000) i;
             CREATE ROLE no_password LOGIN;
             INSERT INTO tokens SELECT i, now() - interval '1 day' FROM generate_series(1, 50) i;",
        )
        .await
        .unwrap();
    assert!(
        setup
            .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY accounts_email ON accounts (email)")
            .await
            .is_err()
    );
    setup
        .batch_execute("DELETE FROM churn WHERE id % 5 <> 0")
        .await
        .unwrap();
    // A big table mostly deleted (bloat), read only by sequential scans
    // (missing index), with an index never used; an inactive replication
    // slot; a query running long.
    setup
        .batch_execute(
            "CREATE TABLE wide (id int, v int, pad text) WITH (autovacuum_enabled = false);
             INSERT INTO wide SELECT i, i % 10, repeat('x', 200) FROM generate_series(1, 60000) i;
             CREATE INDEX wide_id ON wide (id);",
        )
        .await
        .unwrap();
    setup
        .batch_execute("DELETE FROM wide WHERE id % 10 <> 0")
        .await
        .unwrap();
    setup.batch_execute("VACUUM wide").await.unwrap();
    setup.batch_execute("ANALYZE wide").await.unwrap();
    setup
        .batch_execute("INSERT INTO wide SELECT i, i % 10, 'y' FROM generate_series(1, 10000) i")
        .await
        .unwrap();
    for _ in 0..12 {
        setup
            .query_one("SELECT count(*) FROM wide WHERE v = 3", &[])
            .await
            .unwrap();
    }
    setup
        .batch_execute("SELECT pg_create_physical_replication_slot('health_test_slot', true)")
        .await
        .unwrap();
    let sleeper = db.client().await;
    // Long enough to outlast the polling below on a loaded machine (it once
    // slept 3 s and had ended before the report); cancelled at the end.
    let sleeping = tokio::spawn(async move { sleeper.batch_execute("SELECT pg_sleep(120)").await });
    // The view was refreshed an hour ago, as far as the records go.
    setup
        .batch_execute("UPDATE pgmaint.refreshes SET refreshed_at = now() - interval '1 hour'")
        .await
        .unwrap();
    setup
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    let idle = db.client().await;
    idle.batch_execute("BEGIN; UPDATE orders SET customer = customer WHERE id = 1;")
        .await
        .unwrap();
    let blocked = db.client().await;
    let waiting = tokio::spawn(async move {
        blocked
            .batch_execute("UPDATE orders SET customer = 7 WHERE id = 1")
            .await
    });
    // Dead rows and the blocked update take a moment to show.
    // Polled for 30 s at most; the assertions below then say what is missing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut report;
    loop {
        report = db.pgmaint(&["health", "--json"]).await.json();
        let showing = check(&report, "dead-tuples")["status"] != "ok"
            && check(&report, "blocked-queries")["status"] != "ok"
            && check(&report, "long-running-queries")["status"] != "ok"
            && check(&report, "missing-indexes")["status"] != "ok";
        if showing || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fired(
        &report,
        "idle-in-transaction",
        "UPDATE orders SET customer = customer",
    );
    fired(&report, "blocked-queries", "UPDATE orders SET customer = 7");
    fired(&report, "invalid-indexes", "accounts_email");
    fired(&report, "duplicate-indexes", "orders_customer on");
    fired(
        &report,
        "sequences",
        "public.orders_id_seq feeding public.orders (integer)",
    );
    fired(&report, "dead-tuples", "public.churn");
    fired(&report, "matview-staleness", "public.order_stats");
    fired(&report, "security", "role no_password");
    fired(&report, "task-backlog", "expired_tokens");
    fired(&report, "long-running-queries", "pg_sleep(120)");
    fired(&report, "unused-indexes", "wide_id");
    fired(&report, "missing-indexes", "public.wide");
    fired(&report, "table-bloat", "public.wide");
    fired(&report, "replication", "health_test_slot");
    assert_eq!(
        check(&report, "sequences")["findings"][0]["status"],
        "critical",
        "{report}"
    );
    assert_ne!(report["status"], "ok");

    // --fail-on sets the exit code; the terminal report lists the worst first.
    db.pgmaint(&["health", "--fail-on", "critical", "--check", "sequences"])
        .await
        .assert_code(1);
    db.pgmaint(&["health", "--fail-on", "critical", "--check", "connections"])
        .await
        .assert_code(0);
    let text = db.pgmaint(&["health"]).await;
    assert!(
        text.stdout.find("CRITICAL").unwrap() < text.stdout.find("OK").unwrap(),
        "{}",
        text.stdout
    );

    idle.batch_execute("ROLLBACK").await.unwrap();
    waiting.await.unwrap().unwrap();
    setup
        .batch_execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'",
        )
        .await
        .unwrap();
    let cancelled = sleeping.await.unwrap().unwrap_err();
    assert_eq!(
        cancelled.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{cancelled}"
    );
    setup.batch_execute("DROP ROLE no_password").await.unwrap();
    setup
        .batch_execute("SELECT pg_drop_replication_slot('health_test_slot')")
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_check_names_are_refused() {
    let db = TestDb::new().await;
    db.config("[health.checks.conections]\nwarning = 0.5\n");
    let run = db.pgmaint(&["health"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("health.checks.conections") && run.stderr.contains("connections"),
        "{}",
        run.stderr
    );
    db.config("");
    db.pgmaint(&["health", "--check", "nope"])
        .await
        .assert_code(2);
}

#[tokio::test]
async fn size_growth_compares_with_a_snapshot_a_day_old() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE events (id int, pad text); INSERT INTO events SELECT i, repeat('x', 100) FROM generate_series(1, 5000) i;")
        .await
        .unwrap();
    db.config("");
    db.pgmaint(&["init"]).await.assert_code(0);
    let early = db
        .pgmaint(&["health", "--json", "--check", "size-growth"])
        .await
        .json();
    assert_eq!(
        check(&early, "size-growth")["status"],
        "unknown",
        "no snapshots yet: {early}"
    );
    db.pgmaint(&["snapshot"]).await.assert_code(0);
    // As if that snapshot were a day old; then the table grows past 10 MB.
    client
        .batch_execute(
            "UPDATE pgmaint.snapshots SET taken_at = now() - interval '1 day 1 hour';
             INSERT INTO events SELECT i, repeat('x', 100) FROM generate_series(1, 100000) i;
             ANALYZE events;",
        )
        .await
        .unwrap();
    let report = db
        .pgmaint(&["health", "--json", "--check", "size-growth"])
        .await
        .json();
    fired(&report, "size-growth", "public.events");
    let value = check(&report, "size-growth")["findings"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(value.contains("a day"), "{value}");
}

/// task-backlog asks the task's kind, which counts with its walk's own
/// filter and fixed cutoff: the backlog is the dry run's count, exact up
/// to the task's `exact_count_limit` and the planner's estimate above it
/// (it once compared with `now() - interval` and counted exactly below a
/// hard-coded million rows whatever the task said).
#[tokio::test]
async fn task_backlog_counts_what_the_dry_run_counts() {
    let db = TestDb::new().await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "CREATE TABLE events (id int, at timestamp);
             INSERT INTO events SELECT i, now()::timestamp - i * interval '1 hour' FROM generate_series(1, 500) i;
             ANALYZE events;",
        )
        .await
        .unwrap();
    let config = |limit: u64| {
        format!(
            "[tasks.old_events]\nkind = \"purge\"\ntable = \"events\"\ntime_column = \"at\"\nolder_than = \"10 days\"\nexact_count_limit = {limit}\n\n\
             [health.checks.task-backlog]\nwarning = 1\n"
        )
    };
    db.config(&config(1_000_000));
    db.pgmaint(&["init"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "old_events", "--json"]).await;
    plan.assert_code(0);
    let rows = plan.json()["tasks"][0]["rows"].as_u64().unwrap();
    assert_eq!(rows, 261, "{}", plan.stdout);

    let backlog = |limit: u64| {
        db.config(&config(limit));
        async {
            let health = db
                .pgmaint(&["health", "--json", "--check", "task-backlog"])
                .await;
            let c = check(&health.json(), "task-backlog").clone();
            c["findings"][0]["value"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(
        backlog(1_000_000).await,
        format!("{rows} rows qualify (exact)")
    );
    // Above the task's exact_count_limit, the planner's estimate.
    let estimated = backlog(100).await;
    assert!(
        estimated.ends_with("rows qualify (estimate)"),
        "{estimated}"
    );
}

/// The findings of one check.
fn findings<'a>(report: &'a serde_json::Value, name: &str) -> &'a Vec<serde_json::Value> {
    check(report, name)["findings"].as_array().unwrap()
}

#[tokio::test]
async fn a_new_table_counts_its_vacuum_age_from_its_creation_not_never() {
    let db = TestDb::new().await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "CREATE TABLE fresh (id int) WITH (autovacuum_enabled = false);
             INSERT INTO fresh SELECT generate_series(1, 5000);
             DELETE FROM fresh WHERE id <= 100;",
        )
        .await
        .unwrap();
    setup
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    db.config("");
    db.pgmaint(&["init"]).await.assert_code(0);
    let seen = |report: &serde_json::Value| {
        findings(report, "vacuum-age")
            .iter()
            .find(|f| f["object"] == "public.fresh")
            .cloned()
    };
    // Never vacuumed, and no record of its age: ok, listed only with --all,
    // saying why.
    let report = db
        .pgmaint(&["health", "--json", "--check", "vacuum-age"])
        .await
        .json();
    assert_eq!(check(&report, "vacuum-age")["status"], "ok", "{report}");
    assert!(
        seen(&report).is_none(),
        "ok findings are not listed: {report}"
    );
    let all = db
        .pgmaint(&["health", "--json", "--all", "--check", "vacuum-age"])
        .await
        .json();
    let f = seen(&all).unwrap_or_else(|| panic!("--all lists it: {all}"));
    assert_eq!(f["status"], "ok", "{f}");
    assert!(
        f["value"].as_str().unwrap().contains("age is unknown"),
        "{f}"
    );
    assert!(
        f["threshold"].as_str().unwrap().contains("1000+ live rows"),
        "the minimum is in the output: {f}"
    );
    // A snapshot starts the count: seconds old is ok.
    db.pgmaint(&["snapshot"]).await.assert_code(0);
    let all = db
        .pgmaint(&["health", "--json", "--all", "--check", "vacuum-age"])
        .await
        .json();
    let f = seen(&all).unwrap();
    assert_eq!(f["status"], "ok", "{f}");
    assert!(
        f["value"]
            .as_str()
            .unwrap()
            .contains("since it was created"),
        "{f}"
    );
    // Seen ten days ago and never vacuumed since: a warning.
    setup
        .batch_execute("UPDATE pgmaint.snapshots SET taken_at = now() - interval '10 days'")
        .await
        .unwrap();
    let report = db
        .pgmaint(&["health", "--json", "--check", "vacuum-age"])
        .await
        .json();
    fired(&report, "vacuum-age", "public.fresh");
    let f = seen(&report).unwrap();
    assert_eq!(f["status"], "warning", "{f}");
    assert!(
        f["value"]
            .as_str()
            .unwrap()
            .starts_with("no vacuum yet, 10.0 days"),
        "{f}"
    );
    // Vacuumed now: quiet again.
    setup.batch_execute("VACUUM fresh").await.unwrap();
    let report = db
        .pgmaint(&["health", "--json", "--check", "vacuum-age"])
        .await
        .json();
    assert_eq!(check(&report, "vacuum-age")["status"], "ok", "{report}");
}

#[tokio::test]
async fn dead_rows_a_purge_just_left_wait_for_autovacuum() {
    let db = TestDb::new().await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "CREATE TABLE sessions (id int PRIMARY KEY, expired boolean);
             INSERT INTO sessions SELECT i, i > 1000 FROM generate_series(1, 6000) i;
             ANALYZE sessions;",
        )
        .await
        .unwrap();
    setup
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    db.config(
        "[tasks.old_sessions]\nkind = \"purge\"\ntable = \"sessions\"\nwhere = \"expired\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["run", "old_sessions"]).await.assert_code(0);
    let dead = || async {
        db.count("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'sessions'")
            .await
    };
    let report = db
        .pgmaint(&["health", "--json", "--all", "--check", "dead-tuples"])
        .await
        .json();
    assert_eq!(check(&report, "dead-tuples")["status"], "ok", "{report}");
    if dead().await >= 1000 {
        let f = &findings(&report, "dead-tuples")[0];
        assert!(
            f["value"]
                .as_str()
                .unwrap()
                .contains("pgmaint's `old_sessions` removed rows"),
            "{f}"
        );
        assert!(
            f["threshold"]
                .as_str()
                .unwrap()
                .contains("at least 1000 dead rows"),
            "{f}"
        );
    }
    // An hour later, still there: autovacuum is behind, and it fires.
    setup
        .batch_execute("UPDATE pgmaint.task_runs SET finished_at = now() - interval '1 hour'")
        .await
        .unwrap();
    let report = db
        .pgmaint(&["health", "--json", "--check", "dead-tuples"])
        .await
        .json();
    if dead().await >= 1000 {
        fired(&report, "dead-tuples", "public.sessions");
    }
}

#[tokio::test]
async fn trust_on_the_local_socket_and_loopback_is_a_warning_not_critical() {
    // The test cluster's pg_hba.conf is initdb's with -A trust: local,
    // 127.0.0.1/32 and ::1/128.
    let db = TestDb::new().await;
    db.config("");
    let report = db
        .pgmaint(&["health", "--json", "--check", "security"])
        .await
        .json();
    let lines: Vec<_> = findings(&report, "security")
        .iter()
        .filter(|f| f["object"].as_str().unwrap().starts_with("pg_hba.conf"))
        .collect();
    assert!(!lines.is_empty(), "{report}");
    for line in lines {
        assert_eq!(line["status"], "warning", "{line}");
    }
}

#[tokio::test]
async fn a_sequence_feeding_bigint_is_not_told_to_widen_to_bigint() {
    let db = TestDb::new().await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "CREATE TABLE big (id bigserial PRIMARY KEY);
             CREATE TABLE small (id serial PRIMARY KEY);
             SELECT setval('big_id_seq', 9000000000000000000);
             SELECT setval('small_id_seq', 2000000000);",
        )
        .await
        .unwrap();
    db.config("");
    let report = db
        .pgmaint(&["health", "--json", "--check", "sequences"])
        .await
        .json();
    let advice = |object: &str| {
        findings(&report, "sequences")
            .iter()
            .find(|f| f["object"].as_str().unwrap().starts_with(object))
            .unwrap_or_else(|| panic!("{object} in {report}"))["advice"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(!advice("public.big_id_seq").contains("widen"), "{report}");
    assert!(
        advice("public.big_id_seq").contains("bigint itself runs out"),
        "{report}"
    );
    assert!(
        advice("public.small_id_seq").contains("widen the column and its sequence to bigint"),
        "{report}"
    );
}

/// A Prisma-style table whose `"Recipient_email_idx"` two other indexes
/// cover: one finding, named as it is pasted back (`public."..."`), naming
/// an index that covers it, with advice to drop it where the ORM's
/// migrations would (a bare DROP INDEX makes their schema drift).
#[tokio::test]
async fn a_duplicate_index_covered_twice_is_one_finding_with_advice_for_migrations() {
    let db = TestDb::with_sql(
        r#"CREATE TABLE "Recipient" (id int PRIMARY KEY, email text, name text);
         CREATE INDEX "Recipient_email_idx" ON "Recipient" (email);
         CREATE INDEX "Recipient_email_name_idx" ON "Recipient" (email, name);
         CREATE UNIQUE INDEX "Recipient_email_key" ON "Recipient" (email);"#,
    )
    .await;
    db.config("");
    let report = db
        .pgmaint(&["health", "--json", "--check", "duplicate-indexes"])
        .await
        .json();
    let findings = check(&report, "duplicate-indexes")["findings"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = &findings[0];
    assert_eq!(
        finding["object"], r#"public."Recipient_email_idx" on public."Recipient""#,
        "{finding}"
    );
    let advice = finding["advice"].as_str().unwrap();
    assert!(
        advice.contains(r#"public."Recipient_email_"#)
            && advice.contains("in the migration that made it")
            && advice.contains(r#"DROP INDEX CONCURRENTLY public."Recipient_email_idx""#),
        "{advice}"
    );
}

/// A NOT VALID constraint of a table and one of a domain are both named as
/// they are pasted back, each with the statement that validates it (a
/// domain's has no table: the check must not fail on it).
#[tokio::test]
async fn invalid_constraints_name_table_and_domain_constraints_with_their_fix() {
    let db = TestDb::with_sql(
        r#"CREATE TABLE "Order" (id int PRIMARY KEY, total int);
           ALTER TABLE "Order" ADD CONSTRAINT "totalPositive" CHECK (total > 0) NOT VALID;
           CREATE DOMAIN cents AS int;
           ALTER DOMAIN cents ADD CONSTRAINT cents_positive CHECK (VALUE >= 0) NOT VALID;"#,
    )
    .await;
    db.config("");
    let report = db
        .pgmaint(&["health", "--json", "--check", "invalid-constraints"])
        .await
        .json();
    let c = check(&report, "invalid-constraints");
    assert_eq!(c["status"], "warning", "{c}");
    let findings = c["findings"].as_array().unwrap();
    let on_table = findings
        .iter()
        .find(|f| f["object"] == r#""totalPositive" on public."Order""#)
        .unwrap_or_else(|| panic!("{c}"));
    assert!(on_table["advice"].as_str().unwrap().contains("ALTER TABLE"));
    let on_domain = findings
        .iter()
        .find(|f| f["object"] == "cents_positive on domain public.cents")
        .unwrap_or_else(|| panic!("{c}"));
    assert!(
        on_domain["advice"]
            .as_str()
            .unwrap()
            .contains("ALTER DOMAIN")
    );
}

// check_postgres's txn_time finds a transaction open long whose statements
// are each short (a batch job in one transaction), which
// long-running-queries once missed: it measured the current statement.
// (docs/health.md, "long transaction of short queries")
#[tokio::test]
async fn a_long_transaction_of_short_statements_is_a_long_running_finding() {
    let db = TestDb::new().await;
    db.config("[health.checks.long-running-queries]\nwarning = 1\n");
    // Active: a statement just begun in a transaction open for seconds.
    let active = db.client().await;
    active
        .batch_execute("BEGIN; SELECT 'the batch begins'")
        .await
        .unwrap();
    // Idle in its transaction for less than idle-in-transaction's warning
    // (60 s): judged here by the transaction's age.
    let idle = db.client().await;
    idle.batch_execute("BEGIN; SELECT 'idle in a long transaction'")
        .await
        .unwrap();
    // Real time must pass: the transactions' age is what is measured.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let running = tokio::spawn(async move {
        active
            .batch_execute("SELECT pg_sleep(60) AS a_short_step")
            .await
    });
    let ours = |report: &serde_json::Value, text: &str| {
        findings(report, "long-running-queries")
            .iter()
            .find(|f| f["object"].as_str().unwrap().contains(text))
            .cloned()
    };
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        report = db
            .pgmaint(&["health", "--json", "--check", "long-running-queries"])
            .await
            .json();
        if ours(&report, "a_short_step").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fired(&report, "long-running-queries", "a_short_step");
    let step = ours(&report, "a_short_step").unwrap();
    assert_eq!(step["status"], "warning", "{step}");
    let value = step["value"].as_str().unwrap();
    assert!(
        value.starts_with("transaction open ") && value.contains("; its current statement "),
        "{step}"
    );
    assert!(
        step["advice"]
            .as_str()
            .unwrap()
            .contains("commit in smaller transactions"),
        "{step}"
    );
    let waiting = ours(&report, "idle in a long transaction")
        .unwrap_or_else(|| panic!("the idle one is judged by its transaction's age: {report}"));
    assert!(
        waiting["value"]
            .as_str()
            .unwrap()
            .contains("; idle in it for "),
        "{waiting}"
    );
    // Left to idle-in-transaction once idle past its warning: one finding,
    // not two.
    db.config(
        "[health.checks.long-running-queries]\nwarning = 1\n\n[health.checks.idle-in-transaction]\nwarning = 1\n",
    );
    let report = db
        .pgmaint(&[
            "health",
            "--json",
            "--check",
            "long-running-queries",
            "--check",
            "idle-in-transaction",
        ])
        .await
        .json();
    assert!(
        ours(&report, "idle in a long transaction").is_none(),
        "{report}"
    );
    fired(&report, "idle-in-transaction", "idle in a long transaction");

    db.client()
        .await
        .batch_execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60) AS a_short_step'",
        )
        .await
        .unwrap();
    assert!(running.await.unwrap().is_err());
    idle.batch_execute("ROLLBACK").await.unwrap();
}

// check_postgres's bloat reads pg_class.relpages and reported a bloated
// table while a migration held another table ACCESS EXCLUSIVE; table-bloat
// asked pg_relation_size, waited for that lock and reported unknown.
// Now neither bloat check takes a lock, even on the bloated table itself.
// (docs/health.md, "table bloat")
#[tokio::test]
async fn bloat_is_reported_while_a_migration_holds_the_bloated_table() {
    let db = TestDb::new().await;
    let setup = db.client().await;
    setup
        .batch_execute(
            "CREATE TABLE wide (id int, pad text) WITH (autovacuum_enabled = false);
             INSERT INTO wide SELECT i, repeat('x', 200) || i FROM generate_series(1, 60000) i;
             CREATE INDEX wide_pad ON wide (pad);
             DELETE FROM wide WHERE id % 10 <> 0;",
        )
        .await
        .unwrap();
    setup.batch_execute("VACUUM wide").await.unwrap();
    setup.batch_execute("ANALYZE wide").await.unwrap();
    db.config("[health]\nstatement_timeout = \"300ms\"\n");
    let migration = db.client().await;
    migration
        .batch_execute("BEGIN; DROP INDEX wide_pad;")
        .await
        .unwrap();
    let run = db
        .pgmaint(&[
            "health",
            "--json",
            "--check",
            "table-bloat",
            "--check",
            "index-bloat",
        ])
        .await;
    migration.batch_execute("ROLLBACK").await.unwrap();
    let report = run.json();
    fired(&report, "table-bloat", "public.wide");
    fired(&report, "index-bloat", "public.wide_pad");
}

// No database here is near wraparound (2^31 transaction IDs), so the
// threshold comes down to a few IDs, as docs/health.md's comparison does
// with check_postgres's txn_wraparound. The value gives the age in IDs
// beside the share, which reads 0.0% for the first 10 million.
#[tokio::test]
async fn xid_wraparound_fires_past_a_lowered_threshold_with_the_age_in_ids() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE burn (id int);
             INSERT INTO burn VALUES (1); INSERT INTO burn VALUES (2); INSERT INTO burn VALUES (3);",
        )
        .await
        .unwrap();
    db.config("[health.checks.xid-wraparound]\nwarning = 0.000000001\n");
    let report = db
        .pgmaint(&["health", "--json", "--check", "xid-wraparound"])
        .await
        .json();
    let name = db
        .client()
        .await
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    fired(&report, "xid-wraparound", &format!("database {name}"));
    let f = findings(&report, "xid-wraparound")
        .iter()
        .find(|f| f["object"] == format!("database {name}"))
        .unwrap();
    let value = f["value"].as_str().unwrap();
    assert!(
        value.starts_with("0.0% (") && value.ends_with(" of 2147483648 IDs)"),
        "{f}"
    );
}

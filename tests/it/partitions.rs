//! partitions against a real PostgreSQL: premake across month and year
//! boundaries, retention that keeps a partition straddling the cutoff,
//! draining the default partition, lock retries, and the same partitions
//! as pg_partman given the same premake and retention.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDb;

/// The parent's partitions as `name [from, to)`, in bound order.
async fn partitions(db: &TestDb, parent: &str) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = $1::text::regclass ORDER BY pg_get_expr(c.relpartbound, c.oid)",
            &[&parent],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// What PostgreSQL itself says the periods are: `k` periods from the
/// current one, as `name FROM ... TO ...` strings for a timestamptz key.
async fn expected(
    db: &TestDb,
    parent: &str,
    unit: &str,
    from: i32,
    to: i32,
    tz: &str,
) -> Vec<String> {
    let client = db.client().await;
    client
        .query(
            "SELECT format('%s_p%s FOR VALUES FROM (%L) TO (%L)', $1::text, to_char(b, 'YYYYMMDD'),
                           (b AT TIME ZONE $5)::timestamptz, ((b + ('1 ' || $2)::interval) AT TIME ZONE $5)::timestamptz)
               FROM (SELECT date_trunc($2, now() AT TIME ZONE $5) + k * ('1 ' || $2)::interval AS b
                       FROM generate_series($3::int, $4::int) k) s ORDER BY b",
            &[&parent, &unit, &from, &to, &tz],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn premake_crosses_month_and_year_boundaries_in_the_stated_zone() {
    let db = TestDb::with_sql(
        "SET TimeZone = 'UTC';
         CREATE TABLE daily (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE monthly (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);",
    )
    .await;
    // 31 days ahead always crosses a month boundary; 12 months a year one.
    db.config(
        "[tasks.daily]\nkind = \"partitions\"\ntable = \"daily\"\ninterval = \"1 day\"\npremake = 31\ntimezone = \"Europe/Berlin\"\n\n[tasks.monthly]\nkind = \"partitions\"\ntable = \"monthly\"\ninterval = \"1 month\"\npremake = 12\ntimezone = \"America/New_York\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(
        plan.json()["tasks"][0]["details"]["plan"]["create"]
            .as_array()
            .unwrap()
            .len(),
        32
    );
    assert!(
        partitions(&db, "daily").await.is_empty(),
        "a dry run creates nothing"
    );

    db.pgmaint(&["run", "--all"]).await.assert_code(0);
    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    // Compare bounds as PostgreSQL prints them in one zone.
    let normalize = |rows: Vec<String>| {
        rows.into_iter()
            .map(|r| r.replace("+00", ""))
            .collect::<Vec<_>>()
    };
    let daily = normalize(partitions(&db, "daily").await);
    assert_eq!(
        daily,
        normalize(expected(&db, "daily", "day", 0, 31, "Europe/Berlin").await)
    );
    let monthly = normalize(partitions(&db, "monthly").await);
    assert_eq!(
        monthly,
        normalize(expected(&db, "monthly", "month", 0, 12, "America/New_York").await)
    );
    assert_eq!(monthly.len(), 13);
    // Boundaries are local midnights: in Berlin 22:00 or 23:00 UTC.
    assert!(
        daily
            .iter()
            .all(|d| d.contains(" 22:00:00") || d.contains(" 23:00:00")),
        "{daily:?}"
    );
    // Idempotent: nothing more to do.
    let again = db.pgmaint(&["run", "--all", "--json"]).await.json();
    assert_eq!(
        again["tasks"][0]["details"]["created"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn retention_drops_only_fully_expired_partitions_and_drains_the_default() {
    let db = TestDb::with_sql(
        "CREATE TABLE events (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE events_default PARTITION OF events DEFAULT;",
    )
    .await;
    let client = db.client().await;
    // Rows for the last 10 days land in the default partition.
    client
        .batch_execute("INSERT INTO events SELECT i, now() - (i % 240) * interval '1 hour' FROM generate_series(1, 2400) i")
        .await
        .unwrap();
    let checksum = "SELECT count(*)::text || md5(string_agg(id::text || at::text, ',' ORDER BY id)) FROM events";
    let before: String = client.query_one(checksum, &[]).await.unwrap().get(0);
    db.config(
        "[tasks.events]\nkind = \"partitions\"\ntable = \"events\"\ninterval = \"1 day\"\npremake = 2\nretention = \"3 days 12 hours\"\nretention_action = \"drop\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);

    // Without drain_default, the periods with rows in the default cannot be
    // created: the run says so.
    let plan = db.pgmaint(&["plan", "events", "--json"]).await.json();
    assert_eq!(plan["tasks"][0]["details"]["plan"]["default_rows"], 2400);
    let refused = db.pgmaint(&["run", "events", "--json"]).await;
    refused.assert_code(1);
    assert!(
        refused.stdout.contains("drain_default"),
        "{}",
        refused.stdout
    );

    let path = db.dir.path().join("pgmaint.toml");
    std::fs::write(
        &path,
        std::fs::read_to_string(&path).unwrap() + "drain_default = true\n",
    )
    .unwrap();
    db.pgmaint(&["run", "events"]).await.assert_code(0);
    let after: String = client.query_one(checksum, &[]).await.unwrap().get(0);
    assert_eq!(after, before, "every row kept, none twice");
    assert_eq!(
        db.count("SELECT count(*) FROM events_default").await,
        0,
        "drained"
    );

    // Retention, on the next run: every partition whose upper bound is
    // before now - 3.5 days goes; the one holding that moment stays.
    db.pgmaint(&["run", "events"]).await.assert_code(0);
    let oldest_kept: bool = client
        .query_one(
            "SELECT bool_and(upper > now() - interval '3 days 12 hours')
               FROM (SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1]::timestamptz AS upper
                       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      WHERE i.inhparent = 'events'::regclass AND c.relname <> 'events_default') p",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(oldest_kept, "{:?}", partitions(&db, "events").await);
    let straddling = db
        .count("SELECT count(*) FROM events WHERE at < now() - interval '3 days 12 hours'")
        .await;
    assert!(
        straddling > 0,
        "the partition straddling the cutoff keeps its older rows"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE at < date_trunc('day', now() - interval '3 days 12 hours')").await,
        0,
        "fully expired days are gone"
    );
}

#[tokio::test]
async fn a_lock_on_the_parent_makes_it_retry_then_report_without_blocking_readers() {
    let db = TestDb::with_sql(
        "CREATE TABLE metrics (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);",
    )
    .await;
    db.config(
        "[tasks.metrics]\nkind = \"partitions\"\ntable = \"metrics\"\ninterval = \"1 day\"\npremake = 1\nlock_timeout = \"200ms\"\nmax_retries = 2\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE metrics IN SHARE MODE;")
        .await
        .unwrap();

    let run = tokio::spawn({
        let command = db.command(&["run", "metrics", "--json"]);
        async move {
            let mut command = command;
            command.output().await.unwrap()
        }
    });
    // Readers of the parent are not held up behind pgmaint's waiting DDL:
    // read while it waits for its lock.
    db.wait_for_count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND wait_event_type = 'Lock' AND query ILIKE '%metrics%'",
        |n| n >= 1,
        "pgmaint's DDL to wait for its lock on metrics",
    )
    .await;
    let reader = db.client().await;
    let started = Instant::now();
    reader
        .query_one("SELECT count(*) FROM metrics", &[])
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );

    let run: common::Run = run.await.unwrap().into();
    run.assert_code(1);
    let task = &run.json()["tasks"][0];
    assert!(task["details"]["retries"].as_u64().unwrap() >= 2, "{task}");
    assert!(
        task["details"]["error"].as_str().unwrap().contains("lock"),
        "{task}"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    db.pgmaint(&["run", "metrics"]).await.assert_code(0);
    assert_eq!(partitions(&db, "metrics").await.len(), 2);
}

#[tokio::test]
async fn the_same_partitions_as_pg_partman_given_the_same_premake_and_retention() {
    common::require_extension(
        "pg_partman",
        "this test compares pgmaint's partitions with pg_partman's",
        "postgresql-{major}-partman",
        "pg_partman",
    )
    .await;
    let db = TestDb::with_sql("CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;")
        .await;
    let client = db.client().await;
    // Debian 12 ships pg_partman 4, Homebrew 5, which renamed the type
    // `native` to `range` and takes the interval as an interval.
    let version: String = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (kind, interval) = if version.starts_with("4.") {
        ("native", "monthly")
    } else {
        ("range", "1 month")
    };
    // pg_partman sets up its table (partitions from premake months back to
    // premake months ahead, and a default); pgmaint gets an identical copy.
    client
        .batch_execute(&format!(
            "CREATE TABLE by_partman (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
             SELECT partman.create_parent(p_parent_table := 'public.by_partman', p_control := 'at',
                                          p_type := '{kind}', p_interval := '{interval}', p_premake := 4);
             UPDATE partman.part_config SET retention = '3 months', retention_keep_table = false
              WHERE parent_table = 'public.by_partman';
             CREATE TABLE by_pgmaint (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
             CREATE TABLE by_pgmaint_default PARTITION OF by_pgmaint DEFAULT;"
        ))
        .await
        .unwrap();
    for row in client
        .query(
            "SELECT replace(c.relname, 'by_partman', 'by_pgmaint'), pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'by_partman'::regclass AND c.relname <> 'by_partman_default'",
            &[],
        )
        .await
        .unwrap()
    {
        let (name, bound): (String, String) = (row.get(0), row.get(1));
        client
            .batch_execute(&format!("CREATE TABLE \"{name}\" PARTITION OF by_pgmaint {bound}"))
            .await
            .unwrap();
    }
    // Time passes for neither; both do their maintenance.
    client
        .batch_execute("SELECT partman.run_maintenance()")
        .await
        .unwrap();
    db.config(
        "[tasks.monthly]\nkind = \"partitions\"\ntable = \"by_pgmaint\"\ninterval = \"1 month\"\npremake = 4\nretention = \"3 months\"\nretention_action = \"drop\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["run", "monthly"]).await.assert_code(0);

    let by_partman: Vec<String> = partitions(&db, "by_partman")
        .await
        .into_iter()
        .map(|p| p.replace("by_partman", "by_pgmaint"))
        .collect();
    assert_eq!(partitions(&db, "by_pgmaint").await, by_partman);
    assert!(by_partman.len() >= 8, "{by_partman:?}");
}

#[tokio::test]
async fn expired_partitions_are_detached_concurrently_or_archived_to_files_then_dropped() {
    let db = TestDb::with_sql(
        "CREATE TABLE logs (id bigint, at timestamptz NOT NULL, line text) PARTITION BY RANGE (at);
         CREATE TABLE logs_old PARTITION OF logs FOR VALUES FROM (now() - interval '400 days') TO (now() - interval '300 days');
         INSERT INTO logs SELECT i, now() - interval '350 days', 'line ' || i FROM generate_series(1, 500) i;
         CREATE TABLE audit (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE audit_old PARTITION OF audit FOR VALUES FROM (now() - interval '400 days') TO (now() - interval '300 days');
         INSERT INTO audit SELECT i, now() - interval '350 days' FROM generate_series(1, 10) i;",
    )
    .await;
    std::fs::create_dir(db.dir.path().join("exports")).unwrap();
    db.config(
        "[tasks.logs]\nkind = \"partitions\"\ntable = \"logs\"\ninterval = \"1 month\"\npremake = 1\nretention = \"6 months\"\nretention_action = \"archive\"\nexport = \"exports\"\n\n[tasks.audit]\nkind = \"partitions\"\ntable = \"audit\"\ninterval = \"1 month\"\npremake = 1\nretention = \"6 months\"\nretention_action = \"detach\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "--json"]).await.json();
    let task = |name: &str| {
        plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    let statements = task("audit")["details"]["statements"].to_string();
    assert!(
        statements.contains("DETACH PARTITION \\\"public\\\".\\\"audit_old\\\" CONCURRENTLY"),
        "{statements}"
    );

    let statements = task("logs")["details"]["statements"].to_string();
    assert!(
        statements.contains("export the rows of public.logs_old"),
        "{statements}"
    );
    db.pgmaint(&["run", "--all"]).await.assert_code(0);
    // Archived: the partition is gone and its rows are in the files.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'logs_old'")
            .await,
        0
    );
    let manifests: Vec<serde_json::Value> = std::fs::read_dir(db.dir.path().join("exports"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["rows"], 500);
    assert_eq!(manifests[0]["table"], "public.logs_old");
    // Detached: the table is kept, no longer a partition.
    assert_eq!(db.count("SELECT count(*) FROM audit_old").await, 10);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_inherits WHERE inhrelid = 'audit_old'::regclass")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM audit").await, 0);
}

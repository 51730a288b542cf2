//! `time_zone`: the zone `timestamp without time zone` values are meant
//! in (#20 item 3), on a database whose own `TimeZone` is Europe/Berlin
//! while the application (Prisma, Rails) writes UTC wall-clock time.

use crate::common;

use common::TestDb;

/// 300 rows half an hour older than 7 days in UTC wall-clock time, 60
/// half an hour younger (older than 7 days in Berlin's wall-clock time,
/// an hour or two ahead), 100 fresh; the database's sessions run in
/// Europe/Berlin.
async fn prisma_events(task_keys: &str, database_keys: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET TimeZone = 'Europe/Berlin';
             CREATE TABLE events (id int PRIMARY KEY, at timestamp(3) NOT NULL);
             INSERT INTO events SELECT i, (now() AT TIME ZONE 'UTC') - interval '7 days 30 minutes' FROM generate_series(1, 300) i;
             INSERT INTO events SELECT i, (now() AT TIME ZONE 'UTC') - interval '7 days' + interval '30 minutes' FROM generate_series(301, 360) i;
             INSERT INTO events SELECT i, now() AT TIME ZONE 'UTC' FROM generate_series(361, 460) i;
             ANALYZE events;",
            name = db.name
        ))
        .await
        .unwrap();
    db.config(&format!(
        "[database]\n{database_keys}\n[tasks.old_events]\nkind = \"purge\"\ntable = \"events\"\n{task_keys}\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

const OLDER_THAN: &str = "time_column = \"at\"\nolder_than = \"7 days\"";

async fn planned_then_run(db: &TestDb) -> (serde_json::Value, serde_json::Value) {
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let run = db.pgmaint(&["run", "--all", "--json"]).await;
    run.assert_code(0);
    (plan.json(), run.json())
}

#[tokio::test]
async fn without_time_zone_the_session_zone_applies_as_in_psql() {
    let db = prisma_events(OLDER_THAN, "").await;
    let (plan, run) = planned_then_run(&db).await;
    assert_eq!(plan["tasks"][0]["rows"], 360, "{plan}");
    assert_eq!(run["tasks"][0]["rows"], 360, "{run}");
    // The cutoff is shown where it is compared: Berlin's wall clock (+01:00
    // in winter, +02:00 in summer), not UTC.
    let cutoff = plan["tasks"][0]["details"]["cutoff"].as_str().unwrap();
    assert!(
        cutoff.ends_with("+01:00") || cutoff.ends_with("+02:00"),
        "{cutoff}"
    );
}

#[tokio::test]
async fn database_time_zone_utc_purges_what_the_application_means_and_plan_equals_run() {
    let db = prisma_events(OLDER_THAN, "time_zone = \"UTC\"").await;
    let (plan, run) = planned_then_run(&db).await;
    assert_eq!(plan["tasks"][0]["rows"], 300, "{plan}");
    assert_eq!(run["tasks"][0]["rows"], 300, "{run}");
    assert_eq!(db.count("SELECT count(*) FROM events").await, 160);
}

#[tokio::test]
async fn a_task_time_zone_overrides_the_database_one() {
    let db = prisma_events(
        &format!("{OLDER_THAN}\ntime_zone = \"UTC\""),
        "time_zone = \"Asia/Tokyo\"",
    )
    .await;
    let (plan, run) = planned_then_run(&db).await;
    assert_eq!(plan["tasks"][0]["rows"], 300, "{plan}");
    assert_eq!(run["tasks"][0]["rows"], 300, "{run}");
}

#[tokio::test]
async fn defaults_time_zone_applies_to_tasks() {
    let db = prisma_events(OLDER_THAN, "").await;
    db.config(&format!(
        "[defaults]\ntime_zone = \"UTC\"\n[tasks.old_events]\nkind = \"purge\"\ntable = \"events\"\n{OLDER_THAN}\n"
    ));
    let (plan, run) = planned_then_run(&db).await;
    assert_eq!(plan["tasks"][0]["rows"], 300, "{plan}");
    assert_eq!(run["tasks"][0]["rows"], 300, "{run}");
}

#[tokio::test]
async fn a_where_using_now_sees_the_time_zone() {
    let keys = "where = \"at < (now() - interval '7 days')::timestamp\"";
    let without = prisma_events(keys, "").await;
    let plan = without.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(plan.json()["tasks"][0]["rows"], 360, "{}", plan.stdout);

    let with = prisma_events(keys, "time_zone = \"UTC\"").await;
    let (plan, run) = planned_then_run(&with).await;
    assert_eq!(plan["tasks"][0]["rows"], 300, "{plan}");
    assert_eq!(run["tasks"][0]["rows"], 300, "{run}");
}

#[tokio::test]
async fn an_unknown_time_zone_is_a_config_error_at_its_line() {
    let db = TestDb::new().await;
    db.config(
        "[database]\ntime_zone = \"Mars/Olympus\"\n[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"true\"\ntime_zone = \"Europe/Berlln\"\n",
    );
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    assert!(check.stderr.contains("pgmaint.toml:2:"), "{}", check.stderr);
    assert!(check.stderr.contains("Mars/Olympus"), "{}", check.stderr);
    assert!(check.stderr.contains("pgmaint.toml:7:"), "{}", check.stderr);
    assert!(check.stderr.contains("Europe/Berlln"), "{}", check.stderr);
    assert!(check.stderr.contains("IANA"), "{}", check.stderr);
}

#[tokio::test]
async fn check_warns_of_a_timestamp_column_read_in_a_zone_that_is_not_utc() {
    let db = prisma_events(OLDER_THAN, "").await;
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(0);
    for word in [
        "at",
        "Europe/Berlin",
        "Prisma",
        "Rails",
        "Drizzle",
        "TypeORM",
        "time_zone = \"UTC\"",
    ] {
        assert!(check.stderr.contains(word), "{word}: {}", check.stderr);
    }
    let json = db.pgmaint(&["check", "--json"]).await;
    json.assert_code(0);
    assert_eq!(
        json.json()["warnings"].as_array().unwrap().len(),
        1,
        "{}",
        json.stdout
    );
}

#[tokio::test]
async fn check_warns_of_a_quoted_camel_case_column_as_the_task_reads_it() {
    let db = prisma_events(OLDER_THAN, "").await;
    db.client()
        .await
        .batch_execute(
            r#"CREATE TABLE "Session" (id int PRIMARY KEY, "expiresAt" timestamp(3) NOT NULL)"#,
        )
        .await
        .unwrap();
    db.config(
        "[tasks.sessions]\nkind = \"purge\"\ntable = '\"Session\"'\ntime_column = '\"expiresAt\"'\nolder_than = \"1 day\"\n",
    );
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(0);
    assert!(
        check
            .stderr
            .contains(r#"column "expiresAt" of public."Session" is `timestamp without time zone`"#),
        "{}",
        check.stderr
    );
}

#[tokio::test]
async fn check_does_not_warn_with_a_time_zone_or_on_a_utc_session() {
    let with = prisma_events(OLDER_THAN, "time_zone = \"UTC\"").await;
    no_warnings(&with).await;

    let utc = prisma_events(OLDER_THAN, "").await;
    utc.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} SET TimeZone = 'Etc/UTC'",
            utc.name
        ))
        .await
        .unwrap();
    no_warnings(&utc).await;
}

/// `check --json` passes with no warning.
async fn no_warnings(db: &TestDb) {
    let check = db.pgmaint(&["check", "--json"]).await;
    check.assert_code(0);
    assert_eq!(
        check.json()["warnings"],
        serde_json::json!([]),
        "{}",
        check.stdout
    );
}

#[tokio::test]
async fn the_cutoff_is_printed_in_the_time_zone_it_is_compared_in() {
    let db = prisma_events(OLDER_THAN, "time_zone = \"Asia/Tokyo\"").await;
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let cutoff = plan.json()["tasks"][0]["details"]["cutoff"].clone();
    assert!(cutoff.as_str().unwrap().ends_with("+09:00"), "{cutoff}");
    let text = db.pgmaint(&["plan"]).await;
    text.assert_code(0);
    assert!(text.stdout.contains("+09:00"), "{}", text.stdout);
    assert!(!text.stdout.contains(" UTC"), "{}", text.stdout);
}

#[tokio::test]
async fn a_backup_taken_under_a_time_zone_restores_identical_values() {
    let db = TestDb::with_sql(
        "CREATE TABLE stamps (id int PRIMARY KEY, at timestamp(3) NOT NULL, tz timestamptz NOT NULL, d date NOT NULL);
         INSERT INTO stamps SELECT i, timestamp '2001-01-01 00:00:00.123' + i * interval '37 hours 11 minutes',
                timestamptz '1850-06-01 12:00:00+00' + i * interval '71 days 5 hours', date '2000-02-29' + i
           FROM generate_series(1, 300) i;",
    )
    .await;
    let digest =
        "SELECT md5(string_agg(format('%s|%s|%s|%s', id, at, tz, d), ',' ORDER BY id)) FROM stamps";
    let client = db.client().await;
    let before: String = client.query_one(digest, &[]).await.unwrap().get(0);
    db.config(
        "[database]\ntime_zone = \"Asia/Kolkata\"\n[tasks.old_stamps]\nkind = \"purge\"\ntable = \"stamps\"\nwhere = \"true\"\nbackup = true\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let run = db.pgmaint(&["run", "old_stamps", "--yes", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 300, "{}", run.stdout);
    let list = db.pgmaint(&["backups", "--json"]).await;
    list.assert_code(0);
    let id = list.json()["backups"][0]["id"].to_string();
    db.pgmaint(&["restore", &id, "--json"]).await.assert_code(0);
    let after: String = client.query_one(digest, &[]).await.unwrap().get(0);
    assert_eq!(before, after);
}

/// health's task-backlog counts what the dry run counts, in the task's
/// time_zone, and leaves the session's zone as it was for the tasks after.
#[tokio::test]
async fn task_backlog_counts_in_the_tasks_time_zone() {
    let db = prisma_events(OLDER_THAN, "").await;
    db.config(&format!(
        "[tasks.in_utc]\nkind = \"purge\"\ntable = \"events\"\n{OLDER_THAN}\ntime_zone = \"UTC\"\n\n\
         [tasks.in_session]\nkind = \"purge\"\ntable = \"events\"\n{OLDER_THAN}\n\n\
         [health.checks.task-backlog]\nwarning = 1\n"
    ));
    let health = db
        .pgmaint(&["health", "--json", "--check", "task-backlog"])
        .await;
    let report = health.json();
    let c = common::health_check(&report, "task-backlog");
    let value = |task: &str| {
        c["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["object"].as_str().unwrap().starts_with(task))
            .unwrap_or_else(|| panic!("{c}"))["value"]
            .clone()
    };
    assert_eq!(value("in_utc"), "300 rows qualify (exact)", "{c}");
    assert_eq!(value("in_session"), "360 rows qualify (exact)", "{c}");
}

//! The shapes real applications' schemas have (#15): Rails' `timestamp(6)`
//! and Prisma's `timestamp(3)` and quoted PascalCase names, domains over
//! time types, a table partitioned by a `"timestamp"` column with a default
//! partition, and a parent pg_partman manages. Exact row counts, and
//! check's help for names PostgreSQL would not resolve.

use crate::common;

use common::TestDb;

/// Shared set-up: the database's `timezone` far from UTC, so a
/// `timestamp without time zone` compared as if it were UTC would be off
/// by 14 hours and the counts below would differ.
const SCHEMA: &str = r#"
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'Pacific/Kiritimati'); END $$;
SET timezone = 'Pacific/Kiritimati';
CREATE TABLE webhooks (id bigserial PRIMARY KEY, updated_at timestamp(6) without time zone NOT NULL);
INSERT INTO webhooks (updated_at)
     SELECT localtimestamp - interval '7 days 1 hour' - i * interval '1 minute' FROM generate_series(1, 100) i;
INSERT INTO webhooks (updated_at)
     SELECT localtimestamp - interval '7 days' + interval '1 hour' FROM generate_series(1, 40) i;
CREATE TABLE "Session" (id text PRIMARY KEY, "userId" text NOT NULL, "createdAt" timestamp(3) NOT NULL);
INSERT INTO "Session"
     SELECT 'c' || i, 'u' || i % 7, localtimestamp - CASE WHEN i <= 30 THEN interval '31 days' ELSE interval '29 days' END
       FROM generate_series(1, 50) i;
CREATE DOMAIN moment AS timestamptz;
CREATE DOMAIN audited_moment AS moment CHECK (VALUE > '2000-01-01');
CREATE TABLE audit_log (id bigserial PRIMARY KEY, at audited_moment NOT NULL);
INSERT INTO audit_log (at) SELECT now() - (i || ' days')::interval FROM generate_series(1, 20) i;
CREATE TABLE daily_stats (day date NOT NULL, n int);
INSERT INTO daily_stats SELECT current_date - 8, i FROM generate_series(1, 5) i;
INSERT INTO daily_stats SELECT current_date - 7, i FROM generate_series(1, 6) i;
"#;

#[tokio::test]
async fn purge_and_archive_by_age_on_rails_prisma_domain_and_date_columns() {
    let db = TestDb::with_sql(SCHEMA).await;
    db.config(
        r#"[tasks.webhooks]
kind = "purge"
table = "webhooks"
time_column = "updated_at"
older_than = "7 days"

[tasks.sessions]
kind = "archive"
table = '"Session"'
time_column = '"createdAt"'
older_than = "30 days"

[tasks.audit]
kind = "purge"
table = "audit_log"
time_column = "at"
older_than = "10 days 1 hour"

[tasks.stats]
kind = "purge"
table = "daily_stats"
time_column = "day"
older_than = "7 days"
"#,
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(0);
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    db.pgmaint(&["run", "--all"]).await.assert_code(0);
    // timestamp(6): the cutoff is the server zone's local time 7 days ago.
    assert_eq!(db.count("SELECT count(*) FROM webhooks").await, 40);
    // timestamp(3), quoted PascalCase table and camelCase column.
    assert_eq!(db.count(r#"SELECT count(*) FROM "Session""#).await, 20);
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "Session_archive""#).await,
        30
    );
    // A domain over a domain over timestamptz: days 11..20 go.
    assert_eq!(db.count("SELECT count(*) FROM audit_log").await, 10);
    // date: compared with the cutoff's date, so the cutoff's own day stays.
    assert_eq!(db.count("SELECT count(*) FROM daily_stats").await, 6);
}

#[tokio::test]
async fn partitions_on_a_timestamp6_column_named_timestamp_with_a_default() {
    let db = TestDb::with_sql(
        r#"CREATE TABLE "user" (id text PRIMARY KEY, name text NOT NULL, created_at text NOT NULL);
CREATE TABLE "Account" (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "userId" text,
    "updatedAt" timestamp(3) NOT NULL, "balanceCents" bigint NOT NULL,
    balance numeric GENERATED ALWAYS AS ("balanceCents" / 100.0) STORED);
CREATE TABLE enriched_events (id bigint NOT NULL, "timestamp" timestamp(6) without time zone NOT NULL)
             PARTITION BY RANGE ("timestamp");
           CREATE TABLE enriched_events_default PARTITION OF enriched_events DEFAULT;
           INSERT INTO enriched_events
                SELECT i, date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 hour' + i * interval '1 second'
                  FROM generate_series(1, 30) i;"#,
    )
    .await;
    db.config(
        "[tasks.events]\nkind = \"partitions\"\ntable = \"enriched_events\"\ninterval = \"1 day\"\npremake = 2\ndrain_default = true\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["check"]).await.assert_code(0);
    let plan = db.pgmaint(&["plan", "--json"]).await;
    plan.assert_code(0);
    let details = &plan.json()["tasks"][0]["details"]["plan"];
    assert_eq!(details["create"].as_array().unwrap().len(), 3, "{details}");
    assert_eq!(details["default_rows"], 30);
    db.pgmaint(&["run", "--all"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM enriched_events_default")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM enriched_events").await, 30);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'enriched_events'::regclass")
            .await,
        4
    );
    // Today's partition holds the 30 rows.
    let today: String = db
        .client()
        .await
        .query_one(
            "SELECT 'enriched_events_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM \"{today}\"")).await,
        30
    );
}

#[tokio::test]
async fn check_says_how_to_quote_mixed_case_names_and_suggests_near_misses() {
    let db = TestDb::with_sql(
        r#"CREATE TABLE "Session" (id text PRIMARY KEY, "createdAt" timestamp(3) NOT NULL);
           CREATE TABLE webhooks (id bigint PRIMARY KEY, updated_at timestamp(6) NOT NULL);
           CREATE MATERIALIZED VIEW "DailyStats" AS SELECT 1 AS n;
           CREATE MATERIALIZED VIEW user_counts AS SELECT 1 AS n;
           CREATE TABLE "user" (id text PRIMARY KEY, created_at text NOT NULL);"#,
    )
    .await;
    db.config(
        r#"[tasks.unquoted]
kind = "purge"
table = "Session"
time_column = "createdAt"
older_than = "7 days"

[tasks.typo]
kind = "purge"
table = "webhook"
time_column = "updated_at"
older_than = "7 days"

[tasks.column]
kind = "purge"
table = '"Session"'
time_column = "created_at"
older_than = "7 days"

[tasks.views]
kind = "refresh"
views = ["DailyStats"]

[tasks.view_typo]
kind = "refresh"
views = ["user_count"]

[tasks.reindex]
kind = "reindex"
tables = ["Session"]
indexes = ["webhooks_pkeys"]

[tasks.folded_where]
kind = "purge"
table = '"Session"'
where = "createdAt < now() - interval '7 days'"

[tasks.text_dates]
kind = "purge"
table = "user"
time_column = "created_at"
older_than = "30 days"

[tasks.lower_archive]
kind = "archive"
table = '"Session"'
time_column = '"createdAt"'
older_than = "7 days"
archive_table = "session_archive"
archived_at = '"archivedAt"'
"#,
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    let err = &check.stderr;
    for expected in [
        "pgmaint.toml:3:9: tasks.unquoted.table: table \"Session\" does not exist",
        "help: mixed-case names must be quoted: table = '\"Session\"'",
        "pgmaint.toml:9:9: tasks.typo.table: table \"webhook\" does not exist",
        "help: did you mean table = 'webhooks'?",
        "pgmaint.toml:16:15: tasks.column.time_column: table public.",
        "has no column \"created_at\"; columns are: id, \"createdAt\"",
        "help: did you mean time_column = '\"createdAt\"'?",
        "tasks.views.views: materialized view \"DailyStats\" does not exist",
        "help: mixed-case names must be quoted: views = ['\"DailyStats\"']",
        "tasks.view_typo.views: materialized view \"user_count\" does not exist",
        "help: did you mean views = ['user_counts']?",
        "tasks.reindex.tables: table \"Session\" does not exist",
        "help: mixed-case names must be quoted: tables = ['\"Session\"']",
        "tasks.reindex.indexes: index \"webhooks_pkeys\" does not exist",
        "help: did you mean indexes = ['webhooks_pkey']?",
        "tasks.folded_where.where: the condition is not valid for table public.\"Session\": column \"createdat\" does not exist",
        "help: the column is \"createdAt\"; quote it",
        "tasks.text_dates.time_column: column \"created_at\" of public.\"user\" is text, not a date or timestamp",
        "help: dates kept as text compare as text, not by age: write a `where` condition that casts them, e.g. where = '''created_at::timestamptz < now() - interval '30 days''''",
        "9 problem(s) found; nothing was changed",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("tasks.lower_archive"), "{err}");
    // What check accepts runs: the lower-case archive table is made with
    // the quoted archived_at column.
    db.client()
        .await
        .batch_execute(
            r#"INSERT INTO "Session" VALUES ('s1', now() - interval '8 days'), ('s2', now())"#,
        )
        .await
        .unwrap();
    let run = db.pgmaint(&["run", "lower_archive", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 1);
    assert_eq!(
        db.count(r#"SELECT count("archivedAt") FROM session_archive"#)
            .await,
        1
    );
    // A mixed-case name in a key that creates a table is refused before
    // anything runs: PostgreSQL would fold it.
    db.config(
        "[tasks.folding_archive]\nkind = \"archive\"\ntable = '\"Session\"'\ntime_column = '\"createdAt\"'\nolder_than = \"1 day\"\narchive_table = \"Session_archive\"\n",
    );
    let run = db.pgmaint(&["run", "--all"]).await;
    run.assert_code(2);
    for expected in [
        "pgmaint.toml:6:17: tasks.folding_archive.archive_table: `Session_archive` is not quoted, so PostgreSQL would fold it to `session_archive`",
        "help: mixed-case names must be quoted: archive_table = '\"Session_archive\"' (or write it in lower case: archive_table = 'session_archive')",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }
    assert_eq!(db.count(r#"SELECT count(*) FROM "Session""#).await, 1);
}

#[tokio::test]
async fn partitions_refuses_a_parent_pg_partman_manages() {
    common::require_extension(
        "pg_partman",
        "this test gives pgmaint a table pg_partman manages",
        "postgresql-{major}-partman",
        "pg_partman",
    )
    .await;
    let db = TestDb::with_sql("CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;")
        .await;
    let client = db.client().await;
    let version: String = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (kind, interval) = if version.starts_with("4.") {
        ("native", "daily")
    } else {
        ("range", "1 day")
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE managed (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
             SELECT partman.create_parent(p_parent_table := 'public.managed', p_control := 'at',
                                          p_type := '{kind}', p_interval := '{interval}', p_premake := 2);"
        ))
        .await
        .unwrap();
    let partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'managed'::regclass";
    let before = db.count(partitions).await;
    db.config(
        "[tasks.managed]\nkind = \"partitions\"\ntable = \"managed\"\ninterval = \"1 day\"\npremake = 7\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    for expected in [
        "pgmaint.toml:3:9: tasks.managed.table: public.managed is managed by pg_partman (partman.part_config: control column at",
        "so pgmaint leaves it alone",
        "help: leave the table to pg_partman",
    ] {
        assert!(
            check.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            check.stderr
        );
    }
    let plan = db.pgmaint(&["plan"]).await;
    assert!(
        format!("{}{}", plan.stdout, plan.stderr).contains("is managed by pg_partman"),
        "{}{}",
        plan.stdout,
        plan.stderr
    );
    let _ = db.pgmaint(&["run", "--all"]).await;
    assert_eq!(
        db.count(partitions).await,
        before,
        "nothing created beside pg_partman's"
    );
}

/// The conventions of several frameworks in one database, written from
/// their documentation (tests/it/conventions.rs has one fixture per
/// framework, each running every kind): Rails 7 (bigint ids,
/// `timestamp(6)`, `index_x_on_y`, `schema_migrations`,
/// `ar_internal_metadata`), Prisma (quoted PascalCase tables, camelCase
/// columns, `timestamp(3)`, text ids, `_prisma_migrations`), Django
/// (`app_model`, timestamptz, a deferred FK), Drizzle/TypeORM (uuid keys,
/// `"createdAt"`), an enum, a generated column, a domain, a second schema,
/// a table without a primary key, TOAST-sized rows and a table partitioned
/// by a `"timestamp"` column with a default partition. The server's zone is
/// America/New_York while the ORMs write UTC wall-clock time into their
/// `timestamp` columns (`now() AT TIME ZONE 'UTC'`), so the config names
/// `time_zone = "UTC"`.
const CONVENTIONS: &str = r#"
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'America/New_York'); END $$;
CREATE TABLE schema_migrations (version varchar PRIMARY KEY);
CREATE TABLE ar_internal_metadata (key varchar PRIMARY KEY, value varchar,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE TABLE users (id bigserial PRIMARY KEY, email varchar NOT NULL,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE UNIQUE INDEX index_users_on_email ON users (email);
CREATE TABLE webhooks (id bigserial PRIMARY KEY, user_id bigint REFERENCES users,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE INDEX index_webhooks_on_user_id ON webhooks (user_id);
CREATE TABLE "_prisma_migrations" (id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL,
    finished_at timestamptz, migration_name varchar(255) NOT NULL, started_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE "User" (id text PRIMARY KEY, "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Session" (id text PRIMARY KEY, "userId" text NOT NULL,
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "expiresAt" timestamp(3) NOT NULL);
CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app varchar(255), name varchar(255), applied timestamptz NOT NULL);
CREATE TYPE order_status AS ENUM ('open', 'paid', 'void');
CREATE DOMAIN moment AS timestamptz;
CREATE TABLE shop_order (id bigserial PRIMARY KEY, status order_status NOT NULL, placed_at moment NOT NULL,
    total numeric(12,2), total_cents bigint GENERATED ALWAYS AS ((total * 100)::bigint) STORED);
CREATE TABLE shop_orderline (id bigserial PRIMARY KEY,
    order_id bigint REFERENCES shop_order DEFERRABLE INITIALLY DEFERRED, note text);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id uuid NOT NULL DEFAULT gen_random_uuid(), "createdAt" timestamptz NOT NULL, payload text);
CREATE MATERIALIZED VIEW "UserCounts" AS SELECT count(*) AS n FROM "User";
CREATE TABLE "user" (id text PRIMARY KEY, name text NOT NULL, created_at text NOT NULL);
CREATE TABLE "Account" (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "userId" text,
    "updatedAt" timestamp(3) NOT NULL, "balanceCents" bigint NOT NULL,
    balance numeric GENERATED ALWAYS AS ("balanceCents" / 100.0) STORED);
CREATE TABLE enriched_events (id bigint NOT NULL, "timestamp" timestamp(6) NOT NULL) PARTITION BY RANGE ("timestamp");
CREATE TABLE enriched_events_default PARTITION OF enriched_events DEFAULT;
INSERT INTO users (email, created_at, updated_at) SELECT 'u' || i, (now() AT TIME ZONE 'UTC') - i * interval '1 day', (now() AT TIME ZONE 'UTC') FROM generate_series(1, 60) i;
INSERT INTO webhooks (user_id, created_at, updated_at) SELECT 1 + i % 60, (now() AT TIME ZONE 'UTC'), (now() AT TIME ZONE 'UTC') - i * interval '1 day' FROM generate_series(1, 60) i;
INSERT INTO "User" (id, "createdAt") SELECT 'c' || i, (now() AT TIME ZONE 'UTC') FROM generate_series(1, 10) i;
INSERT INTO "Session" SELECT 's' || i, 'c' || (1 + i % 12), (now() AT TIME ZONE 'UTC') - i * interval '1 day', (now() AT TIME ZONE 'UTC') - i * interval '1 hour' FROM generate_series(1, 40) i;
INSERT INTO shop_order (status, placed_at, total) SELECT 'paid', now() - i * interval '1 day', i FROM generate_series(1, 50) i;
INSERT INTO shop_orderline (order_id, note) SELECT 1 + i % 20, repeat('x', 3000) FROM generate_series(1, 100) i;
INSERT INTO audit.events ("createdAt", payload) SELECT now() - i * interval '1 day', repeat(md5(i::text), 200) FROM generate_series(1, 30) i;
INSERT INTO "user" SELECT 'u' || i, 'name ' || i, (now() - i * interval '1 day')::text FROM generate_series(1, 60) i;
INSERT INTO "Account" ("userId", "updatedAt", "balanceCents") SELECT 'c' || (1 + i % 12), (now() AT TIME ZONE 'UTC') - i * interval '1 day', i * 101 FROM generate_series(1, 30) i;
INSERT INTO enriched_events SELECT i, date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 hour' FROM generate_series(1, 5) i;
"#;

#[tokio::test]
async fn every_task_kind_checks_plans_and_runs_over_framework_conventions() {
    let db = TestDb::with_sql(CONVENTIONS).await;
    db.config(
        r#"[database]
time_zone = "UTC"

[tasks.rails_webhooks]
kind = "purge"
table = "webhooks"
time_column = "updated_at"
older_than = "30 days"

[tasks.prisma_sessions]
kind = "purge"
table = '"Session"'
where = "\"expiresAt\" < now() - interval '1 day'"

[tasks.prisma_orphans]
kind = "orphans"
table = '"Session"'
column = "userId"
references = '"User"(id)'
action = "delete"

[tasks.django_orders]
kind = "archive"
table = "shop_order"
time_column = "placed_at"
older_than = "40 days"

[tasks.drizzle_events]
kind = "purge"
table = 'audit.events'
time_column = "createdAt"
older_than = "20 days"

[tasks.drizzle_users]
kind = "purge"
table = "user"
where = "created_at::timestamptz < now() - interval '30 days'"

[tasks.prisma_accounts]
kind = "archive"
table = '"Account"'
time_column = '"updatedAt"'
older_than = "20 days"

[tasks.account_orphans]
kind = "orphans"
table = '"Account"'
column = '"userId"'
references = '"User"(id)'

[tasks.account_pointers]
kind = "orphans"
table = '"Account"'
column = "userId"
references = '"User"(id)'
action = "set_null"

[tasks.partitions]
kind = "partitions"
table = "enriched_events"
interval = "1 day"
premake = 1
drain_default = true

[tasks.counts]
kind = "refresh"
views = ['"UserCounts"']

[tasks.vacuum]
kind = "vacuum"
auto = true

[tasks.analyze]
kind = "analyze"
auto = true

[tasks.reindex]
kind = "reindex"
tables = ['"Session"', "users"]
"#,
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let check = db.pgmaint(&["check"]).await;
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(!check.stderr.contains("warning"), "{}", check.stderr);
    let plan = db.pgmaint(&["plan"]).await;
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let run = db.pgmaint(&["run", "--all", "--yes"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // webhooks: updated i days before the set-up for i = 1..60; the cutoff
    // is 30 days before the run, a moment later, so i >= 30 go.
    assert_eq!(db.count("SELECT count(*) FROM webhooks").await, 29);
    // Sessions that expired i hours before the set-up went for i >= 24 (a
    // day before the run, a moment later); of the other 23, the four whose
    // "userId" names no "User" (c11, c12: i = 10, 11, 22, 23) went as orphans.
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "Session" s WHERE NOT EXISTS (SELECT FROM "User" u WHERE u.id = s."userId")"#)
            .await,
        0
    );
    assert_eq!(db.count(r#"SELECT count(*) FROM "Session""#).await, 19);
    // Orders 40..50 (a domain over timestamptz; none has order lines).
    assert_eq!(db.count("SELECT count(*) FROM shop_order").await, 39);
    assert_eq!(
        db.count("SELECT count(*) FROM shop_order_archive").await,
        11
    );
    assert_eq!(db.count("SELECT count(*) FROM audit.events").await, 19);
    assert_eq!(
        db.count("SELECT count(*) FROM enriched_events_default")
            .await,
        0
    );
    assert_eq!(db.count(r#"SELECT n FROM "UserCounts""#).await, 10);
    // Drizzle's "user" with dates kept as text: created i days before the
    // set-up, i >= 30 went.
    assert_eq!(db.count(r#"SELECT count(*) FROM "user""#).await, 29);
    // Accounts updated i days before the set-up, i >= 20 moved, with the
    // identity values and the stored generated column's values as they were.
    assert_eq!(db.count(r#"SELECT count(*) FROM "Account""#).await, 19);
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "Account_archive" WHERE id BETWEEN 20 AND 30 AND balance = "balanceCents" / 100.0"#)
            .await,
        11
    );
    // Of the accounts left, those of c11 and c12 (i = 10, 11) pointed at no
    // "User": set to NULL, every other column as it was.
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "Account" WHERE "userId" IS NULL AND id IN (10, 11) AND balance = "balanceCents" / 100.0"#)
            .await,
        2
    );
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "Account" WHERE "userId" IS NOT NULL"#)
            .await,
        17
    );
    // Health reads the same schema without failing (without --fail-on its
    // findings do not change the exit code).
    let health = db.pgmaint(&["health", "--json"]).await;
    health.assert_code(0);
    assert!(health.json().is_object(), "{}", health.stdout);
}

#[tokio::test]
async fn orphans_take_quoted_camel_case_columns_as_written_or_quoted() {
    let db = TestDb::with_sql(
        r#"CREATE TABLE "User" (id text PRIMARY KEY);
           CREATE TABLE "Session" (id text PRIMARY KEY, "userId" text);
           INSERT INTO "User" SELECT 'u' || i FROM generate_series(1, 10) i;
           INSERT INTO "Session" SELECT 's' || i, 'u' || (i % 20) FROM generate_series(1, 200) i;"#,
    )
    .await;
    db.config(
        "[tasks.quoted]\nkind = \"orphans\"\ntable = '\"Session\"'\ncolumn = '\"userId\"'\nreferences = '\"User\"(id)'\naction = \"delete\"\n\n\
         [tasks.as_written]\nkind = \"orphans\"\ntable = '\"Session\"'\ncolumn = \"userId\"\nreferences = '\"User\"(id)'\n\n\
         [tasks.near_miss]\nkind = \"orphans\"\ntable = '\"Session\"'\ncolumn = '\"userID\"'\nreferences = '\"User\"(id)'\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let expected = db
        .count(r#"SELECT count(*) FROM "Session" s WHERE NOT EXISTS (SELECT 1 FROM "User" u WHERE u.id = s."userId")"#)
        .await;
    assert!(expected > 0);
    let check = db.pgmaint(&["check"]).await;
    assert!(
        check.stdout.contains("did you mean column = '\"userId\"'")
            || check.stderr.contains("did you mean column = '\"userId\"'"),
        "{}{}",
        check.stdout,
        check.stderr
    );
    assert!(!check.stderr.contains("tasks.quoted"), "{}", check.stderr);
    let report = db.pgmaint(&["run", "as_written", "--json"]).await;
    report.assert_code(0);
    assert_eq!(report.json()["tasks"][0]["details"]["orphans"], expected);
    let run = db.pgmaint(&["run", "quoted", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], expected);
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "Session""#).await,
        200 - expected
    );
}

/// pgmaint writes a name as the server's `quote_ident` does, so what it
/// prints can be pasted back: every keyword PostgreSQL has, and the shapes
/// ORMs make.
#[tokio::test]
async fn names_are_printed_as_the_server_quotes_them() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let mut words: Vec<String> = client
        .query("SELECT word FROM pg_get_keywords()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    words.extend(
        [
            "Session",
            "createdAt",
            "user_id",
            "_prisma_migrations",
            "2fa",
            "a$b",
            "é",
            "we\"ird",
        ]
        .map(String::from),
    );
    for word in &words {
        let quoted: String = client
            .query_one("SELECT quote_ident($1)", &[word])
            .await
            .unwrap()
            .get(0);
        assert_eq!(pgmaint::sql::as_written(word), quoted, "{word}");
    }
}

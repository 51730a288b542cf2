//! Every task kind over the schema each framework makes (#15 item 3), one
//! fixture per framework, written by us from its documented conventions:
//! Rails 7, Prisma, Django, and Drizzle/TypeORM, with a table laid out as
//! pg_partman 5 names its partitions, citext, enums, domains, identity and
//! generated columns, several schemas, a table without a primary key and
//! TOAST-sized rows. Each fixture's config names all eleven kinds; `check`,
//! `plan`, `run --all` and `health` pass over it, and what the removals did
//! is counted. The databases' zone is not UTC while the ORMs write UTC
//! wall-clock time into `timestamp` columns, so the configs set
//! `time_zone = "UTC"`.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::TestDb;

const KINDS: [&str; 11] = [
    "analyze",
    "archive",
    "files",
    "orphans",
    "partitions",
    "purge",
    "refresh",
    "reindex",
    "sessions",
    "sql",
    "vacuum",
];

/// A file of `age` under `root`.
fn file(root: &Path, name: &str, age: Duration) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"0123456789").unwrap();
    let opened = std::fs::File::options().write(true).open(&path).unwrap();
    opened.set_modified(SystemTime::now() - age).unwrap();
}

/// Three files under the fixture's upload directory: an old one the
/// database references (kept), an old one it does not (removed) and a new
/// one (kept). Returns the directory.
fn uploads(db: &TestDb, referenced: &str) -> std::path::PathBuf {
    let root = db.dir.path().join("uploads");
    let day = Duration::from_secs(86_400);
    file(&root, referenced, 10 * day);
    file(&root, "forgotten.bin", 10 * day);
    file(&root, "fresh.bin", Duration::ZERO);
    root
}

/// `check`, `plan`, `run --all --yes` and `health` over a fixture whose
/// config names every kind: each passes, every task succeeds, no line of
/// the plan is wider than 80 columns. Returns the run's tasks.
async fn every_kind(db: &TestDb) -> Vec<serde_json::Value> {
    db.pgmaint(&["init"]).await.assert_code(0);
    let check = db.pgmaint(&["check"]).await;
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(!check.stderr.contains("warning"), "{}", check.stderr);
    let plan = db.pgmaint(&["plan"]).await;
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    for line in plan.stdout.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line}");
    }
    let run = db.pgmaint(&["run", "--all", "--yes", "--json"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let tasks = run.json()["tasks"].as_array().unwrap().clone();
    for task in &tasks {
        assert_eq!(task["status"], "succeeded", "{task}");
    }
    let kinds: BTreeSet<&str> = tasks.iter().filter_map(|t| t["kind"].as_str()).collect();
    assert_eq!(kinds, KINDS.into_iter().collect(), "every kind runs");
    let health = db.pgmaint(&["health", "--json"]).await;
    health.assert_code(0);
    assert!(health.json()["checks"].is_array(), "{}", health.stdout);
    tasks
}

fn task<'a>(tasks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    tasks
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name}"))
}

/// Rails 7: bigint ids, `timestamp(6)` created_at/updated_at,
/// `index_x_on_y` names, `schema_migrations`, `ar_internal_metadata`, the
/// activerecord session store, paper_trail's `versions` (a nullable
/// created_at), Active Storage blobs, a citext email, associations without
/// foreign keys, and a partitioned table named as pg_partman 4 does.
const RAILS: &str = r#"
CREATE EXTENSION citext;
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'Europe/Berlin'); END $$;
CREATE TABLE schema_migrations (version varchar PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('20260101000000'), ('20260201000000');
CREATE TABLE ar_internal_metadata (key varchar PRIMARY KEY, value varchar,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE TABLE users (id bigserial PRIMARY KEY, email citext NOT NULL,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE UNIQUE INDEX index_users_on_email ON users (email);
CREATE TABLE sessions (id bigserial PRIMARY KEY, session_id varchar NOT NULL, data text,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE UNIQUE INDEX index_sessions_on_session_id ON sessions (session_id);
CREATE INDEX index_sessions_on_updated_at ON sessions (updated_at);
CREATE TABLE posts (id bigserial PRIMARY KEY, user_id bigint, title varchar, body text,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE INDEX index_posts_on_user_id ON posts (user_id);
CREATE TABLE comments (id bigserial PRIMARY KEY, post_id bigint, body text,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE INDEX index_comments_on_post_id ON comments (post_id);
CREATE TABLE active_storage_blobs (id bigserial PRIMARY KEY, key varchar NOT NULL,
    filename varchar NOT NULL, created_at timestamp(6) NOT NULL);
CREATE UNIQUE INDEX index_active_storage_blobs_on_key ON active_storage_blobs (key);
CREATE TABLE versions (id bigserial PRIMARY KEY, item_type varchar NOT NULL, item_id bigint NOT NULL,
    event varchar NOT NULL, whodunnit varchar, object jsonb, created_at timestamp(6));
CREATE INDEX index_versions_on_item_type_and_item_id ON versions (item_type, item_id);
CREATE TABLE page_views (id bigint GENERATED BY DEFAULT AS IDENTITY, path varchar NOT NULL,
    created_at timestamp(6) NOT NULL) PARTITION BY RANGE (created_at);
DO $$ DECLARE m date := date_trunc('month', now() AT TIME ZONE 'UTC')::date; BEGIN
  EXECUTE format('CREATE TABLE %I PARTITION OF page_views FOR VALUES FROM (%L) TO (%L)',
    'page_views_p' || to_char(m, 'YYYY_MM'), m, m + interval '1 month');
END $$;
CREATE TABLE page_views_default PARTITION OF page_views DEFAULT;
INSERT INTO page_views (path, created_at)
SELECT '/p/' || i, date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month' + i * interval '1 hour'
  FROM generate_series(1, 12) i;
INSERT INTO users (email, created_at, updated_at)
SELECT 'User' || i || '@Example.com', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM generate_series(1, 10) i;
INSERT INTO sessions (session_id, data, created_at, updated_at)
SELECT md5(i::text), repeat('BAh7', 500), now() AT TIME ZONE 'UTC',
       (now() AT TIME ZONE 'UTC') - (i + 0.5) * interval '1 day'
  FROM generate_series(1, 100) i;
INSERT INTO posts (user_id, title, body, created_at, updated_at)
SELECT i % 12, 'Post ' || i, repeat('lorem ', 2000), now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
  FROM generate_series(1, 20) i;
INSERT INTO comments (post_id, body, created_at, updated_at)
SELECT CASE WHEN i % 13 = 0 THEN NULL ELSE i % 25 END, 'c' || i, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
  FROM generate_series(1, 40) i;
INSERT INTO active_storage_blobs (key, filename, created_at)
VALUES ('kept-blob', 'avatar.png', now() AT TIME ZONE 'UTC');
INSERT INTO versions (item_type, item_id, event, object, created_at)
SELECT 'Post', i, 'update', jsonb_build_object('title', 'Post ' || i),
       CASE WHEN i > 50 THEN NULL ELSE (now() AT TIME ZONE 'UTC') - (i * 5 + 0.5) * interval '1 day' END
  FROM generate_series(1, 55) i;
CREATE MATERIALIZED VIEW leaderboards AS
  SELECT user_id, count(*) AS posts_count FROM posts WHERE user_id IS NOT NULL GROUP BY user_id;
CREATE UNIQUE INDEX index_leaderboards_on_user_id ON leaderboards (user_id);
"#;

#[tokio::test]
async fn every_kind_over_a_rails_7_schema() {
    let db = TestDb::with_sql(RAILS).await;
    let root = uploads(&db, "kept-blob");
    db.config(&format!(
        r#"[database]
time_zone = "UTC"

[backups]
dir = "backups"

[tasks.expired_sessions]
kind = "purge"
table = "sessions"
time_column = "updated_at"
older_than = "30 days"

[tasks.old_versions]
kind = "archive"
table = "versions"
time_column = "created_at"
older_than = "90 days"

[tasks.orphan_comments]
kind = "orphans"
table = "comments"
column = "post_id"
references = "posts(id)"
action = "delete"

[tasks.posts_of_gone_users]
kind = "orphans"
table = "posts"
column = "user_id"
references = "users(id)"
action = "set_null"
backup = true

[tasks.page_views]
kind = "partitions"
table = "page_views"
interval = "1 month"
premake = 2
drain_default = true

[tasks.leaderboards]
kind = "refresh"
views = ["leaderboards"]

[tasks.vacuum]
kind = "vacuum"
tables = ["sessions", "comments"]

[tasks.analyze]
kind = "analyze"
auto = true

[tasks.reindex]
kind = "reindex"
tables = ["sessions"]

[tasks.pending_migrations]
kind = "sql"
sql = "SELECT count(*) FROM schema_migrations"

[tasks.storage]
kind = "files"
path = "{}"
pattern = "*"
older_than = "7 days"
keep_referenced = "SELECT key FROM active_storage_blobs"

[tasks.idle]
kind = "sessions"
idle_in_transaction = "1h"
action = "terminate"
"#,
        root.display()
    ));
    let tasks = every_kind(&db).await;
    // Sessions updated i + 0.5 days ago went for i >= 30.
    assert_eq!(task(&tasks, "expired_sessions")["rows"], 71);
    assert_eq!(db.count("SELECT count(*) FROM sessions").await, 29);
    // Versions i * 5 + 0.5 days old moved for i >= 18; those without a
    // created_at stay (NULL is not older than anything).
    assert_eq!(task(&tasks, "old_versions")["rows"], 33);
    assert_eq!(db.count("SELECT count(*) FROM versions_archive").await, 33);
    assert_eq!(
        db.count("SELECT count(*) FROM versions WHERE created_at IS NULL")
            .await,
        5
    );
    // Comments on posts 21..24 and 0 (i = 21..25) had no post.
    assert_eq!(task(&tasks, "orphan_comments")["rows"], 5);
    // Posts of users 0 and 11 (i = 11, 12) lost their user, not their row.
    assert_eq!(task(&tasks, "posts_of_gone_users")["rows"], 2);
    assert_eq!(db.count("SELECT count(*) FROM posts").await, 20);
    assert_eq!(
        db.count("SELECT count(*) FROM posts WHERE user_id IS NULL")
            .await,
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM leaderboards WHERE user_id IN (0, 11)")
            .await,
        0
    );
    // Next month's rows left the default for a partition named as the
    // others are; the month after exists too.
    assert_eq!(db.count("SELECT count(*) FROM page_views_default").await, 0);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_class WHERE relname IN (
               'page_views_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month', 'YYYY_MM'),
               'page_views_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months', 'YYYY_MM'))"
        )
        .await,
        2
    );
    assert_eq!(db.count("SELECT count(*) FROM page_views").await, 12);
    assert!(root.join("kept-blob").exists() && root.join("fresh.bin").exists());
    assert!(!root.join("forgotten.bin").exists());
}

/// Prisma: quoted PascalCase models and camelCase fields, `timestamp(3)`,
/// cuid text ids, `_prisma_migrations`, an enum, a `@db.Citext` email,
/// NextAuth's `VerificationToken` (no primary key, a unique pair), a
/// relation without a foreign key (`relationMode = "prisma"`), and a
/// partitioned table added by a raw-SQL migration, named as pg_partman 5
/// names its partitions.
const PRISMA: &str = r#"
CREATE EXTENSION citext;
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'America/Los_Angeles'); END $$;
CREATE TABLE "_prisma_migrations" (id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL,
    finished_at timestamptz, migration_name varchar(255) NOT NULL, logs text,
    rolled_back_at timestamptz, started_at timestamptz NOT NULL DEFAULT now(),
    applied_steps_count integer NOT NULL DEFAULT 0);
INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name)
VALUES ('a1', 'x', now(), '20260101000000_init');
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN');
CREATE TABLE "User" (id text PRIMARY KEY, email citext NOT NULL, role "Role" NOT NULL DEFAULT 'USER',
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" timestamp(3) NOT NULL);
CREATE UNIQUE INDEX "User_email_key" ON "User" (email);
CREATE TABLE "Session" (id text PRIMARY KEY, "sessionToken" text NOT NULL, "userId" text NOT NULL,
    expires timestamp(3) NOT NULL);
CREATE UNIQUE INDEX "Session_sessionToken_key" ON "Session" ("sessionToken");
CREATE INDEX "Session_userId_idx" ON "Session" ("userId");
CREATE TABLE "VerificationToken" (identifier text NOT NULL, token text NOT NULL, expires timestamp(3) NOT NULL);
CREATE UNIQUE INDEX "VerificationToken_identifier_token_key" ON "VerificationToken" (identifier, token);
CREATE TABLE "Post" (id text PRIMARY KEY, "authorId" text, title text NOT NULL, content text,
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX "Post_authorId_idx" ON "Post" ("authorId");
CREATE TABLE "AuditLog" (id serial PRIMARY KEY, action text NOT NULL, meta jsonb,
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Upload" (id text PRIMARY KEY, "storageKey" text NOT NULL);
CREATE TABLE "Event" (id text NOT NULL, "createdAt" timestamp(3) NOT NULL, payload jsonb)
    PARTITION BY RANGE ("createdAt");
DO $$ DECLARE d date := (now() AT TIME ZONE 'UTC')::date; BEGIN
  EXECUTE format('CREATE TABLE %I PARTITION OF "Event" FOR VALUES FROM (%L) TO (%L)',
    'Event_p' || to_char(d, 'YYYYMMDD'), d, d + 1);
END $$;
CREATE TABLE "Event_default" PARTITION OF "Event" DEFAULT;
INSERT INTO "Event" SELECT 'e' || i, (now() AT TIME ZONE 'UTC')::date + 1 + i * interval '1 hour', '{}'
  FROM generate_series(1, 6) i;
INSERT INTO "User" (id, email, "updatedAt")
SELECT 'cl' || i, 'Person' || i || '@Mail.com', now() AT TIME ZONE 'UTC' FROM generate_series(1, 8) i;
INSERT INTO "Session" SELECT 'cs' || i, md5(i::text), 'cl' || (1 + i % 8), (now() AT TIME ZONE 'UTC') + (12.5 - i) * interval '1 hour'
  FROM generate_series(1, 24) i;
INSERT INTO "VerificationToken" SELECT 'p' || i || '@mail.com', md5(i::text), (now() AT TIME ZONE 'UTC') + (5.5 - i) * interval '1 hour'
  FROM generate_series(1, 10) i;
INSERT INTO "Post" (id, "authorId", title, content)
SELECT 'cp' || i, CASE WHEN i % 5 = 0 THEN NULL ELSE 'cl' || i END, 'Title ' || i, repeat('body ', 3000)
  FROM generate_series(1, 15) i;
INSERT INTO "AuditLog" (action, meta, "createdAt")
SELECT 'login', jsonb_build_object('ip', '10.0.0.' || i), (now() AT TIME ZONE 'UTC') - (i + 0.5) * interval '1 day'
  FROM generate_series(1, 40) i;
INSERT INTO "Upload" VALUES ('u1', 'kept-upload');
CREATE MATERIALIZED VIEW "PostCounts" AS SELECT "authorId", count(*) AS n FROM "Post" GROUP BY "authorId";
"#;

#[tokio::test]
async fn every_kind_over_a_prisma_schema() {
    let db = TestDb::with_sql(PRISMA).await;
    let root = uploads(&db, "kept-upload");
    db.config(&format!(
        r#"[database]
time_zone = "UTC"

[backups]
dir = "backups"

[tasks.expired_sessions]
kind = "purge"
table = '"Session"'
time_column = "expires"
older_than = "1 minute"

[tasks.expired_tokens]
kind = "purge"
table = '"VerificationToken"'
where = "expires < now() AT TIME ZONE 'UTC'"
backup = true

[tasks.audit_log]
kind = "archive"
table = '"AuditLog"'
time_column = '"createdAt"'
older_than = "30 days"

[tasks.sessions_of_gone_users]
kind = "orphans"
table = '"Session"'
column = "userId"
references = '"User"(id)'
action = "report"

[tasks.posts_of_gone_authors]
kind = "orphans"
table = '"Post"'
column = '"authorId"'
references = '"User"(id)'
action = "set_null"
backup = true

[tasks.events]
kind = "partitions"
table = '"Event"'
interval = "1 day"
premake = 2
drain_default = true

[tasks.post_counts]
kind = "refresh"
views = ['"PostCounts"']

[tasks.vacuum]
kind = "vacuum"
tables = ['"Session"', '"VerificationToken"']

[tasks.analyze]
kind = "analyze"
tables = ['"AuditLog"']

[tasks.reindex]
kind = "reindex"
tables = ['"Session"']

[tasks.failed_migrations]
kind = "sql"
sql = 'SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NULL AND rolled_back_at IS NULL'

[tasks.uploads]
kind = "files"
path = "{}"
pattern = "*"
older_than = "7 days"
keep_referenced = 'SELECT "storageKey" FROM "Upload"'

[tasks.long_queries]
kind = "sessions"
running = "1h"
"#,
        root.display()
    ));
    let tasks = every_kind(&db).await;
    // Sessions expiring 12.5 - i hours from the set-up: i >= 13 expired.
    assert_eq!(task(&tasks, "expired_sessions")["rows"], 12);
    assert_eq!(db.count(r#"SELECT count(*) FROM "Session""#).await, 12);
    // A table without a primary key, found again by its unique pair.
    assert_eq!(task(&tasks, "expired_tokens")["rows"], 5);
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "VerificationToken""#)
            .await,
        5
    );
    assert_eq!(task(&tasks, "audit_log")["rows"], 11);
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "AuditLog_archive""#).await,
        11
    );
    // Authors cl9..cl14 (not cl10: a NULL author) do not exist.
    assert_eq!(task(&tasks, "posts_of_gone_authors")["rows"], 5);
    assert_eq!(
        db.count(r#"SELECT count(*) FROM "Post" WHERE "authorId" IS NULL"#)
            .await,
        8
    );
    assert_eq!(db.count(r#"SELECT count(*) FROM "Post""#).await, 15);
    // pg_partman 5's names, followed: tomorrow's and the day after's.
    assert_eq!(db.count(r#"SELECT count(*) FROM "Event_default""#).await, 0);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_class WHERE relname IN (
               'Event_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD'),
               'Event_p' || to_char((now() AT TIME ZONE 'UTC')::date + 2, 'YYYYMMDD'))"
        )
        .await,
        2
    );
    assert!(root.join("kept-upload").exists() && root.join("fresh.bin").exists());
    assert!(!root.join("forgotten.bin").exists());
}

/// Django: `app_model` tables, timestamptz, `django_migrations`,
/// `django_session` (what `clearsessions` empties), `django_admin_log`
/// with the deferred foreign keys Django makes, a domain over timestamptz
/// and a second schema.
const DJANGO: &str = r#"
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'Asia/Kolkata'); END $$;
CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app varchar(255) NOT NULL,
    name varchar(255) NOT NULL, applied timestamptz NOT NULL);
INSERT INTO django_migrations (app, name, applied) VALUES ('auth', '0001_initial', now());
CREATE TABLE django_content_type (id serial PRIMARY KEY, app_label varchar(100) NOT NULL, model varchar(100) NOT NULL);
INSERT INTO django_content_type (app_label, model) VALUES ('shop', 'order');
CREATE TABLE auth_user (id serial PRIMARY KEY, password varchar(128) NOT NULL, last_login timestamptz,
    username varchar(150) NOT NULL UNIQUE, date_joined timestamptz NOT NULL);
CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY, session_data text NOT NULL,
    expire_date timestamptz NOT NULL);
CREATE INDEX django_session_expire_date_a5c62663 ON django_session (expire_date);
CREATE TABLE django_admin_log (id serial PRIMARY KEY, action_time timestamptz NOT NULL,
    object_id text, object_repr varchar(200) NOT NULL, action_flag smallint NOT NULL,
    change_message text NOT NULL,
    content_type_id integer REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    user_id integer NOT NULL REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED);
CREATE DOMAIN placed_moment AS timestamptz;
CREATE TABLE shop_order (id bigserial PRIMARY KEY, customer_id integer, placed_at placed_moment NOT NULL,
    total numeric(12, 2) NOT NULL);
CREATE INDEX shop_order_customer_id_4c5e1f0a ON shop_order (customer_id);
CREATE SCHEMA analytics;
CREATE TABLE analytics.analytics_pageview (id bigint NOT NULL, created timestamptz NOT NULL, url text)
    PARTITION BY RANGE (created);
DO $$ DECLARE m date := date_trunc('month', now() AT TIME ZONE 'UTC')::date; BEGIN
  EXECUTE format('CREATE TABLE analytics.%I PARTITION OF analytics.analytics_pageview FOR VALUES FROM (%L) TO (%L)',
    'analytics_pageview_p' || to_char(m, 'YYYYMMDD'), m::timestamptz, (m + interval '1 month')::timestamptz);
END $$;
CREATE TABLE analytics.analytics_pageview_default PARTITION OF analytics.analytics_pageview DEFAULT;
INSERT INTO auth_user (password, username, date_joined)
SELECT 'pbkdf2_sha256$x', 'user' || i, now() FROM generate_series(1, 6) i;
INSERT INTO django_session SELECT md5(i::text), repeat('e30:', 400), now() + (20.5 - i) * interval '1 day'
  FROM generate_series(1, 30) i;
INSERT INTO django_admin_log (action_time, object_id, object_repr, action_flag, change_message, content_type_id, user_id)
SELECT now() - (i + 0.5) * interval '1 week', i::text, 'Order ' || i, 2, '[]', 1, 1 + i % 6
  FROM generate_series(1, 20) i;
INSERT INTO shop_order (customer_id, placed_at, total)
SELECT i % 9, now() - i * interval '1 day', i FROM generate_series(1, 30) i;
CREATE MATERIALIZED VIEW shop_daily_totals AS
  SELECT placed_at::date AS day, sum(total) AS total FROM shop_order GROUP BY 1;
"#;

#[tokio::test]
async fn every_kind_over_a_django_schema() {
    let db = TestDb::with_sql(DJANGO).await;
    let root = uploads(&db, "media/kept.pdf");
    db.config(&format!(
        r#"[tasks.clearsessions]
kind = "purge"
table = "django_session"
time_column = "expire_date"
older_than = "1 minute"

[tasks.admin_log]
kind = "archive"
table = "django_admin_log"
time_column = "action_time"
older_than = "8 weeks"

[tasks.orders_of_gone_customers]
kind = "orphans"
table = "shop_order"
column = "customer_id"
references = "auth_user(id)"
action = "delete"
backup = true

[backups]
dir = "backups"

[tasks.pageviews]
kind = "partitions"
table = "analytics.analytics_pageview"
interval = "1 month"
premake = 1

[tasks.daily_totals]
kind = "refresh"
views = ["shop_daily_totals"]

[tasks.vacuum]
kind = "vacuum"
auto = true

[tasks.analyze]
kind = "analyze"
auto = true

[tasks.reindex]
kind = "reindex"
tables = ["django_session"]

[tasks.unapplied]
kind = "sql"
sql = "SELECT app, name FROM django_migrations WHERE applied > now()"

[tasks.media]
kind = "files"
path = "{}"
pattern = "*"
older_than = "7 days"
keep_referenced = "SELECT 'media/kept.pdf'"

[tasks.idle]
kind = "sessions"
idle_in_transaction = "30min"
action = "terminate"
"#,
        root.display()
    ));
    let tasks = every_kind(&db).await;
    // Sessions expiring 20.5 - i days from the set-up: i >= 21 expired.
    assert_eq!(task(&tasks, "clearsessions")["rows"], 10);
    // Log entries i + 0.5 weeks old moved for i >= 8, their deferred keys
    // to users and content types satisfied in the archive's transaction.
    assert_eq!(task(&tasks, "admin_log")["rows"], 13);
    assert_eq!(
        db.count("SELECT count(*) FROM django_admin_log_archive")
            .await,
        13
    );
    // Customers 0, 7 and 8 do not exist: i % 9 in (0, 7, 8) for i = 1..30.
    assert_eq!(task(&tasks, "orders_of_gone_customers")["rows"], 9);
    assert_eq!(db.count("SELECT count(*) FROM shop_order").await, 21);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_class WHERE relname =
               'analytics_pageview_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month', 'YYYYMMDD')"
        )
        .await,
        1
    );
    assert!(root.join("media/kept.pdf").exists() && root.join("fresh.bin").exists());
    assert!(!root.join("forgotten.bin").exists());
}

/// Drizzle and TypeORM: uuid keys, `"createdAt"`, better-auth's `"user"`
/// and `session` tables (a reserved word for a name, text ids), dates kept
/// as text, Drizzle's `drizzle.__drizzle_migrations`, TypeORM's
/// `migrations` and a relation it made without a foreign key
/// (`createForeignKeyConstraints: false`), a stored generated column, an
/// identity column, a table without a primary key and a partitioned table
/// named as pg_partman 5 does.
const DRIZZLE_TYPEORM: &str = r#"
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'Australia/Sydney'); END $$;
CREATE SCHEMA drizzle;
CREATE TABLE drizzle.__drizzle_migrations (id serial PRIMARY KEY, hash text NOT NULL, created_at bigint);
INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('abc', 1767225600000);
CREATE TABLE migrations (id serial PRIMARY KEY, "timestamp" bigint NOT NULL, name varchar NOT NULL);
CREATE TABLE "user" (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE,
    "emailVerified" boolean NOT NULL, "createdAt" timestamp NOT NULL, "updatedAt" timestamp NOT NULL);
CREATE TABLE session (id text PRIMARY KEY, "expiresAt" timestamp NOT NULL, token text NOT NULL UNIQUE,
    "userId" text NOT NULL REFERENCES "user" (id) ON DELETE CASCADE);
CREATE TABLE photo (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), url varchar NOT NULL,
    "userId" text, "createdAt" timestamp NOT NULL DEFAULT now(),
    "sizeBytes" integer NOT NULL, "sizeKb" integer GENERATED ALWAYS AS ("sizeBytes" / 1024) STORED);
CREATE TABLE audit_log (seq int GENERATED ALWAYS AS IDENTITY, actor text, created_at text NOT NULL);
CREATE TABLE metrics (id uuid NOT NULL DEFAULT gen_random_uuid(), "recordedAt" timestamptz NOT NULL, value double precision)
    PARTITION BY RANGE ("recordedAt");
DO $$ DECLARE d date := (now() AT TIME ZONE 'UTC')::date; BEGIN
  EXECUTE format('CREATE TABLE %I PARTITION OF metrics FOR VALUES FROM (%L) TO (%L)',
    'metrics_p' || to_char(d - 1, 'YYYYMMDD'), (d - 1)::timestamp AT TIME ZONE 'UTC', d::timestamp AT TIME ZONE 'UTC');
  EXECUTE format('CREATE TABLE %I PARTITION OF metrics FOR VALUES FROM (%L) TO (%L)',
    'metrics_p' || to_char(d, 'YYYYMMDD'), d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
END $$;
CREATE TABLE metrics_default PARTITION OF metrics DEFAULT;
INSERT INTO "user" SELECT 'u' || i, 'Name ' || i, 'u' || i || '@mail.com', true,
       now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM generate_series(1, 5) i;
INSERT INTO session SELECT 's' || i, (now() AT TIME ZONE 'UTC') + (3.5 - i) * interval '1 day', md5(i::text), 'u' || (1 + i % 5)
  FROM generate_series(1, 10) i;
INSERT INTO photo (url, "userId", "sizeBytes")
SELECT 'https://cdn/p' || i, 'u' || i, i * 4096 FROM generate_series(1, 9) i;
INSERT INTO audit_log (actor, created_at)
SELECT 'u' || i, to_char((now() AT TIME ZONE 'UTC') - (i + 0.5) * interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
  FROM generate_series(1, 50) i;
INSERT INTO metrics ("recordedAt", value) SELECT now() - i * interval '1 minute', i FROM generate_series(1, 30) i;
CREATE MATERIALIZED VIEW user_photo_counts AS SELECT "userId", count(*) AS n FROM photo GROUP BY "userId";
"#;

#[tokio::test]
async fn every_kind_over_a_drizzle_and_typeorm_schema() {
    let db = TestDb::with_sql(DRIZZLE_TYPEORM).await;
    let root = uploads(&db, "p1.jpg");
    db.config(&format!(
        r#"[database]
time_zone = "UTC"

[backups]
dir = "backups"

[tasks.expired_sessions]
kind = "purge"
table = "session"
time_column = '"expiresAt"'
older_than = "1 minute"

[tasks.audit_log]
kind = "archive"
table = "audit_log"
where = "created_at::timestamptz < now() - interval '30 days'"
backup = true

[tasks.photos_of_gone_users]
kind = "orphans"
table = "photo"
column = "userId"
references = '"user"(id)'
action = "set_null"
backup = true

[tasks.metrics]
kind = "partitions"
table = "metrics"
interval = "1 day"
premake = 3
retention = "30 days"

[tasks.photo_counts]
kind = "refresh"
views = ["user_photo_counts"]

[tasks.vacuum]
kind = "vacuum"
tables = ["session", '"user"']

[tasks.analyze]
kind = "analyze"
tables = ["photo"]

[tasks.reindex]
kind = "reindex"
tables = ["session"]

[tasks.migrations_seen]
kind = "sql"
sql = "SELECT count(*) FROM drizzle.__drizzle_migrations"

[tasks.photo_files]
kind = "files"
path = "{}"
pattern = "*"
older_than = "7 days"
keep_referenced = "SELECT substr(url, 13) || '.jpg' FROM photo"

[tasks.idle]
kind = "sessions"
idle_in_transaction = "10min"
action = "terminate"
"#,
        root.display()
    ));
    let tasks = every_kind(&db).await;
    // Sessions expiring 3.5 - i days from the set-up: i >= 4 expired.
    assert_eq!(task(&tasks, "expired_sessions")["rows"], 7);
    // Text dates, cast in the where: i + 0.5 days old, i >= 30 moved (the
    // identity values with them).
    assert_eq!(task(&tasks, "audit_log")["rows"], 21);
    assert_eq!(
        db.count("SELECT count(*) FROM audit_log_archive WHERE seq >= 30")
            .await,
        21
    );
    // Photos of u6..u9 (no such users) keep their row, lose the pointer;
    // the generated column stays computed.
    assert_eq!(task(&tasks, "photos_of_gone_users")["rows"], 4);
    assert_eq!(
        db.count(
            r#"SELECT count(*) FROM photo WHERE "userId" IS NULL AND "sizeKb" = "sizeBytes" / 1024"#
        )
        .await,
        4
    );
    // pg_partman 5's names, followed for the days premade.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_class WHERE relname IN (
               'metrics_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD'),
               'metrics_p' || to_char((now() AT TIME ZONE 'UTC')::date + 3, 'YYYYMMDD'))"
        )
        .await,
        2
    );
    assert!(root.join("p1.jpg").exists() && root.join("fresh.bin").exists());
    assert!(!root.join("forgotten.bin").exists());
}

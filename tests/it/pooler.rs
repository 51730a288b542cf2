//! pgmaint through a real PgBouncer in `pool_mode = transaction` (as the
//! pooled endpoints of hosted databases are): three daemons fire each
//! second exactly once with no overlapping runs and no claim left
//! `running`; a purge with backup and its restore count exactly; an expired
//! lease is taken over (its run marked interrupted once), a live one holds;
//! a vacuum and `migrate` need `[database] direct_url` and `check` says so; no session
//! setting pgmaint makes reaches another client of the pooler; a locked
//! state table stops a run within lock_timeout.

use crate::common;

use common::TestDb;
use common::pgbouncer::PgBouncer;

#[tokio::test]
async fn three_daemons_through_a_transaction_pooler_run_each_fire_exactly_once() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE marks (at timestamptz NOT NULL)")
        .await
        .unwrap();
    let bouncer = PgBouncer::start(common::cluster(), 6);
    let mut db = db;
    db.pgmaint_url = Some(bouncer.url(&db.name));
    db.config(
        "[tasks.mark]\nkind = \"sql\"\nsql = \"INSERT INTO marks SELECT clock_timestamp() FROM pg_sleep(0.3)\"\n\n\
         [schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"mark\"]\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(db.daemon().await);
    }
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'succeeded'",
        |n| n >= 30,
        "thirty fires",
    )
    .await;
    for d in &daemons {
        d.terminate();
    }
    let mut logs = String::new();
    for mut d in daemons {
        assert!(d.child.wait().await.unwrap().success(), "SIGTERM exits 0");
        logs.push_str(&d.log_text());
    }
    let fires = db
        .count("SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'succeeded'")
        .await;
    assert!(fires >= 30);
    crate::daemon::assert_each_fire_ran_once(&db, fires, &logs).await;
    // None was skipped, interrupted or left running.
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.schedule_fires WHERE status NOT IN ('succeeded', 'cancelled')")
            .await,
        0,
        "{logs}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.runs WHERE status = 'running'")
            .await,
        0
    );
    // No two runs of the schedule overlapped.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pgmaint.runs a JOIN pgmaint.runs b ON a.id < b.id
              WHERE a.trigger = 'schedule' AND b.trigger = 'schedule'
                AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)"
        )
        .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.leases").await,
        0,
        "every lease given back"
    );
    for bad in ["prepared statement", "advisory", "ExclusiveLock"] {
        assert!(!logs.contains(bad), "{bad} in the daemons' logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_purge_with_backup_and_its_restore_through_a_transaction_pooler_count_exactly() {
    let db = TestDb::with_sql(
        "CREATE TABLE tokens (id bigint PRIMARY KEY, expired boolean NOT NULL, note text, day date, span interval, blob bytea);
         INSERT INTO tokens SELECT i, i % 3 = 0, 'token ' || i, date '2024-03-04' + i, i * interval '1 day 3 hours', decode(lpad(to_hex(i), 4, '0'), 'hex')
           FROM generate_series(1, 5000) i;",
    )
    .await;
    // Server defaults that print values differently (day before month):
    // the backup's text must not depend on which backend a batch lands on.
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {0} SET DateStyle = 'SQL, DMY'; ALTER DATABASE {0} SET IntervalStyle = 'sql_standard';
             ALTER DATABASE {0} SET bytea_output = 'escape';",
            db.name
        ))
        .await
        .unwrap();
    let all_rows = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM tokens t";
    let before: String = db
        .client()
        .await
        .query_one(all_rows, &[])
        .await
        .unwrap()
        .get(0);
    let bouncer = PgBouncer::start(common::cluster(), 2);
    let mut db = db;
    db.pgmaint_url = Some(bouncer.url(&db.name));
    db.config(
        "[database]\nlock_timeout = \"2s\"\nstatement_timeout = \"1min\"\n\n[backups]\ndir = \"backups\"\n\n\
         [tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\nbatch_size = 200\nbackup = true\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    // Another client of the pooler sharing its two server connections all
    // along, in transactions of its own.
    let busy = tokio::spawn({
        let url = bouncer.url(&db.name);
        async move {
            let client = common::connect(&url).await;
            for _ in 0..200 {
                client
                    .simple_query("BEGIN; SELECT count(*) FROM tokens; COMMIT")
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    });
    let run = db.pgmaint(&["run", "expired_tokens", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], 1666, "{}", run.json());
    let backup_id = task["details"]["backup_id"].as_i64().expect("a backup id");
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 5000 - 1666);
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE expired").await,
        0
    );

    let id = backup_id.to_string();
    let dry = db.pgmaint(&["restore", &id, "--dry-run", "--json"]).await;
    dry.assert_code(0);
    assert_eq!(dry.json()["restored"], 1666);
    let restore = db.pgmaint(&["restore", &id, "--json"]).await;
    restore.assert_code(0);
    assert_eq!(restore.json()["restored"], 1666);
    assert_eq!(restore.json()["already_present"], 0);
    assert_eq!(db.count("SELECT count(*) FROM tokens").await, 5000);
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE expired").await,
        1666
    );
    let after: String = db
        .client()
        .await
        .query_one(all_rows, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before, "every value back as it was");
    let again = db.pgmaint(&["restore", &id, "--json"]).await;
    assert_eq!(again.json()["restored"], 0);
    assert_eq!(again.json()["already_present"], 1666);
    busy.await.unwrap();
    let history = db.pgmaint(&["history", "--json"]).await.json();
    let statuses: Vec<&str> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    // The purge and the two restores (history leaves dry runs out).
    assert_eq!(
        statuses,
        ["succeeded", "succeeded", "succeeded"],
        "{history}"
    );
    assert!(
        !bouncer.log().contains("prepared statement"),
        "{}",
        bouncer.log()
    );
}

#[tokio::test]
async fn through_a_pooler_a_vacuum_needs_direct_url_and_check_says_so() {
    let db =
        TestDb::with_sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);")
            .await;
    let bouncer = PgBouncer::start(common::cluster(), 4);
    let mut db = db;
    db.pgmaint_url = Some(bouncer.url(&db.name));
    let tasks = "[tasks.vacuum_t]\nkind = \"vacuum\"\ntables = [\"t\"]\n";
    db.config(tasks);
    db.pgmaint(&["init"]).await.assert_code(0);
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(0);
    assert!(
        check.stdout.contains("transaction pooler"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("direct_url"), "{}", check.stdout);
    let refused = db.pgmaint(&["run", "vacuum_t"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("[database] direct_url"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.runs").await,
        0,
        "nothing ran"
    );
    // Directly, check sees no pooler.
    let direct = db.url.clone();
    db.config(&format!("[database]\ndirect_url = \"{direct}\"\n\n{tasks}"));
    db.pgmaint(&["run", "vacuum_t"]).await.assert_code(0);
    let mut direct_db = db;
    direct_db.pgmaint_url = None;
    let check = direct_db.pgmaint(&["check"]).await;
    assert!(
        check.stdout.contains("direct (no transaction pooler seen)"),
        "{}",
        check.stdout
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_run_marked_interrupted_once() {
    let db = TestDb::with_sql(
        "CREATE TABLE tokens (id bigint PRIMARY KEY, expired boolean NOT NULL);
         INSERT INTO tokens SELECT i, i % 2 = 0 FROM generate_series(1, 1000) i;",
    )
    .await;
    let bouncer = PgBouncer::start(common::cluster(), 3);
    let mut db = db;
    db.pgmaint_url = Some(bouncer.url(&db.name));
    db.config(
        "[tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\n\n\
         [tasks.other]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"false\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    // Two runs of processes on another machine: one whose lease expired
    // (it died, or lost the database), one alive (its lease holds).
    db.client()
        .await
        .batch_execute(
            "INSERT INTO pgmaint.runs (id, trigger, triggered_by, command, status, dry_run, pgmaint_version, owner, lease_until)
             VALUES (101, 'cli', 'x@elsewhere', 'run expired_tokens', 'running', false, '0', 'x@elsewhere #1-0 @far:pid:[1]/7', now() - interval '1 minute'),
                    (102, 'cli', 'y@elsewhere', 'run other', 'running', false, '0', 'y@elsewhere #1-0 @far:pid:[1]/8', now() + interval '10 minutes');
             INSERT INTO pgmaint.task_runs (run_id, task, kind, status, dry_run)
             VALUES (101, 'expired_tokens', 'purge', 'running', false), (102, 'other', 'purge', 'running', false);
             INSERT INTO pgmaint.leases (name, owner, run_id, expires_at)
             VALUES ('task:expired_tokens', 'x@elsewhere #1-0 @far:pid:[1]/7', 101, now() - interval '1 minute'),
                    ('task:other', 'y@elsewhere #1-0 @far:pid:[1]/8', 102, now() + interval '10 minutes');",
        )
        .await
        .unwrap();
    let run = db
        .pgmaint(&["run", "expired_tokens", "other", "--json"])
        .await;
    run.assert_code(0);
    let tasks = &run.json()["tasks"];
    assert_eq!(tasks[0]["status"], "succeeded", "{}", run.json());
    assert_eq!(tasks[0]["rows"], 500);
    assert_eq!(
        tasks[1]["status"],
        "skipped",
        "the live lease holds: {}",
        run.json()
    );
    assert!(
        tasks[1]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("already running in run 102"),
        "{}",
        run.json()
    );
    let status = |id: i64| {
        format!("SELECT count(*) FROM pgmaint.runs WHERE id = {id} AND status = 'interrupted'")
    };
    assert_eq!(db.count(&status(101)).await, 1, "the expired run is marked");
    assert_eq!(db.count(&status(102)).await, 0, "the live one is not");
    // Looking again marks nothing twice.
    db.pgmaint(&["history", "--json"]).await.assert_code(0);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pgmaint.task_runs WHERE run_id = 101 AND status = 'interrupted'"
        )
        .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.leases WHERE name = 'task:other'")
            .await,
        1,
        "the live lease is left alone"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.leases WHERE name = 'task:expired_tokens'")
            .await,
        0,
        "taken over, then given back"
    );
}

/// What a client of the pooler sees of the session settings on the one
/// server connection: `lock_timeout` and `statement_timeout`.
async fn settings_seen(client: &tokio_postgres::Client) -> (String, String) {
    let show = |name: &'static str| async move {
        client
            .simple_query(&format!("SHOW {name}"))
            .await
            .unwrap()
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap()
    };
    (show("lock_timeout").await, show("statement_timeout").await)
}

#[tokio::test]
async fn through_a_transaction_pooler_no_session_setting_of_pgmaint_reaches_another_client() {
    let db = TestDb::with_sql(
        "CREATE TABLE tokens (id bigint PRIMARY KEY, expired boolean NOT NULL);
         INSERT INTO tokens SELECT i, i % 3 = 0 FROM generate_series(1, 2000) i;",
    )
    .await;
    let defaults = settings_seen(&db.client().await).await;
    // One server connection: whatever pgmaint left on it, the next client
    // of the pooler gets.
    let bouncer = PgBouncer::start(common::cluster(), 1);
    let mut db = db;
    db.pgmaint_url = Some(bouncer.url(&db.name));
    db.config(
        "[database]\nlock_timeout = \"7s\"\nstatement_timeout = \"3min\"\n\n\
         [tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\nbatch_size = 100\n\
         lock_timeout = \"3s\"\nstatement_timeout = \"2min\"\n",
    );
    let other = common::connect(&bouncer.url(&db.name)).await;
    assert_eq!(settings_seen(&other).await, defaults, "before pgmaint");
    db.pgmaint(&["init"]).await.assert_code(0);
    for args in [
        &["check"][..],
        &["plan", "expired_tokens", "--json"],
        &["run", "expired_tokens", "--json"],
        &["health", "--json"],
        &["history", "--json"],
    ] {
        let ran = db.pgmaint(args).await;
        assert!(
            ran.code == 0 || (args[0] == "health" && ran.code <= 2),
            "{args:?}: {}\n{}",
            ran.stdout,
            ran.stderr
        );
        for _ in 0..5 {
            assert_eq!(
                settings_seen(&other).await,
                defaults,
                "after pgmaint {args:?}: a session setting stayed on the server connection"
            );
        }
    }
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE expired").await,
        0,
        "the purge ran"
    );
}

/// pgmaint's own bookkeeping (reading the runs left behind, recording a
/// run) is bounded by lock_timeout through a pooler too, where no session
/// setting holds: a state table locked by someone else stops the run with
/// the lock named, in about a second, instead of a wait for ever.
#[tokio::test]
async fn through_a_transaction_pooler_a_locked_state_table_stops_the_run_within_lock_timeout() {
    let db = TestDb::with_sql(
        "CREATE TABLE tokens (id bigint PRIMARY KEY, expired boolean NOT NULL);
         INSERT INTO tokens SELECT i, i % 3 = 0 FROM generate_series(1, 300) i;",
    )
    .await;
    let bouncer = PgBouncer::start(common::cluster(), 2);
    let mut db = db;
    db.pgmaint_url = Some(bouncer.url(&db.name));
    db.config(
        "[tasks.expired_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"expired\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE pgmaint.runs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let ran = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        db.pgmaint(&["run", "expired_tokens", "--json"]),
    )
    .await
    .expect("the run waited on the locked state table for over 30 s");
    assert_ne!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("lock") && ran.stdout.contains("55P03"),
        "the lock timeout is named: {}\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE expired").await,
        100,
        "nothing was removed"
    );
    db.pgmaint(&["run", "expired_tokens"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM tokens WHERE expired").await,
        0
    );
}

#[tokio::test]
async fn through_a_pooler_migrations_need_direct_url_and_then_run_on_it() {
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start(common::cluster(), 4);
    let mut db = db;
    db.pgmaint_url = Some(bouncer.url(&db.name));
    let migrations = "[migrations]\ndir = \"migrations\"\nformat = \"sqlx\"\n";
    db.config(migrations);
    std::fs::create_dir_all(db.dir.path().join("migrations")).unwrap();
    std::fs::write(
        db.dir.path().join("migrations/0001_users.sql"),
        "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    )
    .unwrap();
    db.pgmaint(&["init"]).await.assert_code(0);
    let refused = db.pgmaint(&["migrate", "up"]).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("[database] direct_url")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('users', '_sqlx_migrations')")
            .await,
        0
    );
    let direct = db.url.clone();
    db.config(&format!(
        "[database]\ndirect_url = \"{direct}\"\n\n{migrations}"
    ));
    db.pgmaint(&["migrate", "up"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .await,
        1
    );
    db.pgmaint(&["migrate", "status", "--exit-code"])
        .await
        .assert_code(0);
}

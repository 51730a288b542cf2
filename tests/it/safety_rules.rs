//! The safety rules every run follows, whoever starts it (CLI, schedule,
//! API, a library caller): a lock another session holds is waited on for at
//! most `lock_timeout`, from the first catalog lookup on, and the wait counts
//! in the task's duration; a critical task runs only when confirmed, and a
//! schedule that lists one without `allow_critical` is a `check` error; on a
//! standby nothing is written, by `run`, by a daemon's fires or by the API.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, TestDb};
use pgmaint::cluster::Cluster;
use pgmaint::config::Config;
use pgmaint::output::Progress;
use pgmaint::runner::{self, Confirmation, Refusal, RunError, RunRequest};
use pgmaint::stop::Stop;
use pgmaint::store::Trigger;

const TOKEN: &str = "a-token-that-is-at-least-32-characters-long";

/// A table of 100 rows, half of them expired, and a purge task on it.
async fn with_table(extra: &str) -> TestDb {
    with_table_on(common::cluster(), extra).await
}

/// [`with_table`] in a database of `cluster`.
async fn with_table_on(cluster: &Cluster, extra: &str) -> TestDb {
    let db = TestDb::on(cluster).await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, expired bool);
             INSERT INTO t SELECT i, i % 2 = 0 FROM generate_series(1, 100) i;",
        )
        .await
        .unwrap();
    db.config(&format!(
        "[database]\nlock_timeout = \"1s\"\n\n[api]\ntoken = \"{TOKEN}\"\n\n\
         [tasks.purge_t]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"expired\"\nbackup = false\n\n{extra}"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

/// Another session holding `ACCESS EXCLUSIVE` on `t` until dropped.
async fn lock_table(db: &TestDb) -> tokio_postgres::Client {
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    holder
}

/// Runs pgmaint, failing the test if it is still waiting after 30 s.
async fn bounded(db: &TestDb, args: &[&str]) -> (common::Run, Duration) {
    let started = Instant::now();
    let run = tokio::time::timeout(Duration::from_secs(30), db.pgmaint(args))
        .await
        .unwrap_or_else(|_| panic!("pgmaint {args:?} still waited after 30 s behind the lock"));
    (run, started.elapsed())
}

#[track_caller]
fn assert_reports_the_lock(task: &serde_json::Value, error: &str) {
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        error.contains("lock_timeout 1s") && error.contains("could not get its locks on t"),
        "{error}"
    );
    let duration = task["duration_ms"].as_u64().unwrap();
    assert!(
        (900..10_000).contains(&duration),
        "duration_ms {duration} should hold the 1 s wait for the lock: {task}"
    );
}

#[tokio::test]
async fn a_run_behind_an_exclusive_lock_waits_lock_timeout_and_counts_the_wait() {
    let db = with_table("").await;
    let holder = lock_table(&db).await;

    let (run, took) = bounded(&db, &["-v", "run", "purge_t", "--json"]).await;
    run.assert_code(1);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        run.stderr.contains("SET LOCAL lock_timeout = '1000ms'")
            && run
                .stderr
                .contains("SET LOCAL statement_timeout = '300000ms'"),
        "-v shows the session settings: {}",
        run.stderr
    );
    let report = run.json();
    let task = &report["tasks"][0];
    assert_reports_the_lock(task, task["details"]["error"].as_str().unwrap());
    // The audit trail keeps the same duration.
    let recorded = db
        .count("SELECT duration_ms FROM pgmaint.task_runs ORDER BY id DESC LIMIT 1")
        .await;
    assert_eq!(recorded as u64, task["duration_ms"].as_u64().unwrap());

    let (plan, took) = bounded(&db, &["plan", "purge_t", "--json"]).await;
    plan.assert_code(1);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let report = plan.json();
    let task = &report["tasks"][0];
    assert_reports_the_lock(task, task["details"]["error"].as_str().unwrap());

    // `check` cannot check the table now; that is not a config problem.
    let (check, _) = bounded(&db, &["check"]).await;
    check.assert_code(1);
    assert!(
        check.stderr.contains("locked by another session"),
        "{}",
        check.stderr
    );

    drop(holder);
    // The server lets go of the lock once it sees the session gone.
    db.wait_for_count(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
          WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND c.relname = 't' AND l.mode = 'AccessExclusiveLock'",
        |n| n == 0,
        "the lock on t to go",
    )
    .await;
    db.pgmaint(&["run", "purge_t"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM t").await, 50);
}

/// pgmaint with the test database's config, connecting to `url` (the
/// primary's database or the standby's copy of it).
fn at(db: &TestDb, url: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"));
    command
        .arg("--config")
        .arg(db.dir.path().join("pgmaint.toml"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PGMAINT_CONFIG")
        .kill_on_drop(true);
    command
}

/// A daemon of the test database's config connecting to `url`, on a port
/// the OS picks.
async fn daemon_at(db: &TestDb, url: &str) -> Daemon {
    let command = at(db, url, &["daemon", "--listen", "127.0.0.1:0"]);
    Daemon::spawn(command, &db.log_path()).await
}

/// An API request with the token; the status and the body as JSON.
async fn api(daemon: &Daemon, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, body) = daemon.http(method, path, Some(TOKEN), body).await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// Polls a run through the API until it is no longer running.
async fn finished_run(daemon: &Daemon, run_id: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, run) = api(daemon, "GET", &format!("/api/v1/runs/{run_id}"), "").await;
        assert_eq!(status, 200, "{run}");
        if run["status"] != "running" {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} still running after 30 s: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_api_run_behind_an_exclusive_lock_waits_lock_timeout_and_counts_the_wait() {
    let db = with_table("").await;
    let daemon = daemon_at(&db, &db.url).await;
    let holder = lock_table(&db).await;
    let started = Instant::now();
    let (status, body) = api(&daemon, "POST", "/api/v1/tasks/purge_t/run", "{}").await;
    assert_eq!(status, 202, "{body}");
    let run = finished_run(&daemon, body["run_id"].as_i64().unwrap()).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run["status"], "failed", "{run}");
    let task = &run["tasks"][0];
    assert_reports_the_lock(task, task["error"].as_str().unwrap());
    drop(holder);
    daemon.stop().await;
    assert_eq!(db.count("SELECT count(*) FROM t").await, 100);
}

async fn library_client(db: &TestDb) -> tokio_postgres::Client {
    let target = pgmaint::connect::resolve(Some(&db.url), None).unwrap();
    pgmaint::connect::connect(&target).await.unwrap()
}

fn request<'c>(config: &'c Config, confirmation: Confirmation) -> RunRequest<'c> {
    RunRequest {
        tasks: vec![
            config.task("wipe").unwrap(),
            config.task("purge_t").unwrap(),
        ],
        dry_run: false,
        batch_size: None,
        max_runtime: None,
        trigger: Trigger::cli("safety_rules test"),
        confirmation,
        check_first: false,
        verbose: false,
        started: None,
        lease: None,
        target: None,
        notice: pgmaint::runner::Notice {
            started: pgmaint::runner::Started::Cli {
                schedule: None,
                tasks: vec!["wipe".into(), "purge_t".into()],
            },
            origin: pgmaint::notify::Origin::of(
                &pgmaint::connect::resolve(None, None).unwrap(),
                None,
            ),
        },
    }
}

#[tokio::test]
async fn the_runner_itself_refuses_a_critical_task_nobody_confirmed() {
    let db = with_table(
        "[tasks.wipe]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"id <= 50\"\nseverity = \"critical\"\nbackup = false\n",
    )
    .await;
    let config = Config::load(&db.dir.path().join("pgmaint.toml")).unwrap();
    let mut client = library_client(&db).await;
    let (stop, progress) = (Stop::default(), Progress::disabled());

    // A caller that forgot to ask: nothing starts, nothing is recorded.
    let refused = runner::run(
        &mut client,
        &config,
        request(&config, Confirmation::default()),
        &stop,
        &progress,
    )
    .await;
    match refused {
        Err(RunError::Refused(Refusal::Unconfirmed(names))) => assert_eq!(names, ["wipe"]),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(db.count("SELECT count(*) FROM t").await, 100);
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.runs").await, 0);

    // A schedule without allow_critical: the critical task is skipped, and
    // says why in the audit trail; the others run.
    let report = runner::run(
        &mut client,
        &config,
        request(
            &config,
            Confirmation::Schedule {
                allow_critical: false,
            },
        ),
        &stop,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(report.unconfirmed, ["wipe"]);
    assert_eq!(report.tasks[0].status.as_str(), "skipped");
    assert_eq!(report.tasks[1].status.as_str(), "succeeded");
    assert_eq!(db.count("SELECT count(*) FROM t").await, 50);
    let reason: String = db
        .client()
        .await
        .query_one(
            "SELECT details->>'reason' FROM pgmaint.task_runs WHERE task = 'wipe' AND status = 'skipped'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("allow_critical = true"), "{reason}");

    // Confirmed, it runs.
    runner::run(
        &mut client,
        &config,
        request(&config, Confirmation::Yes),
        &stop,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM t").await, 25);
}

#[tokio::test]
async fn a_critical_task_in_a_schedule_without_allow_critical_is_a_check_error_and_excluded() {
    let schedules = "[tasks.wipe]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"id <= 50\"\nseverity = \"critical\"\nbackup = false\n\n\
                     [schedules.nightly]\ncron = \"0 3 * * *\"\ntasks = [\"purge_t\", \"wipe\"]\n\n\
                     [schedules.allowed]\ncron = \"0 4 * * *\"\ntasks = [\"wipe\"]\nallow_critical = true\n";
    let db = with_table(schedules).await;
    let text = std::fs::read_to_string(db.dir.path().join("pgmaint.toml")).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("tasks = [\"purge_t\", \"wipe\"]"))
        .unwrap()
        + 1;

    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    let place = format!("pgmaint.toml:{line}:9: schedules.nightly.tasks: task wipe is critical");
    assert!(check.stderr.contains(&place), "{place}\n{}", check.stderr);
    assert!(
        check.stderr.contains("allow_critical = true"),
        "{}",
        check.stderr
    );
    assert!(
        !check.stderr.contains("schedules.allowed"),
        "{}",
        check.stderr
    );

    let listed = db.pgmaint(&["schedules", "--json"]).await;
    listed.assert_code(0);
    let listed = listed.json();
    let excluded = |name: &str| {
        listed["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["excluded"]
            .clone()
    };
    assert_eq!(excluded("nightly")[0]["task"], "wipe");
    assert!(
        excluded("nightly")[0]["reason"]
            .as_str()
            .unwrap()
            .contains("allow_critical"),
    );
    assert_eq!(excluded("allowed"), serde_json::json!([]));
    let table = db.pgmaint(&["schedules"]).await;
    table.assert_code(0);
    assert!(table.stdout.contains("wipe (excluded"), "{}", table.stdout);
}

async fn rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

/// A hot standby streaming from the test cluster, made with pg_basebackup;
/// stopped and removed when dropped (or when the test process dies).
struct Standby {
    watchdog: std::process::Child,
    port: u16,
}

/// Starts the standby server and stops it (removing its directory) once
/// stdin closes, as the test cluster's own watchdog does.
const STANDBY_WATCHDOG: &str = r#"
"$1/postgres" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 -c hot_standby=on >"$2/server.log" 2>&1 &
pid=$!
read _ignored || true
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2"
"#;

fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Standby {
    fn start(primary: &Cluster) -> Standby {
        Standby::start_attempt(primary, 1)
    }

    fn start_attempt(primary: &Cluster, attempt: u32) -> Standby {
        let bin = pgmaint::cluster::find_bin_dir().unwrap();
        let dir: PathBuf = tempfile::Builder::new()
            .prefix("pgmaint-standby-")
            .tempdir()
            .unwrap()
            .keep();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let backup = as_postgres(&bin.join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-R", "-X", "stream", "-c", "fast"])
            .output()
            .unwrap();
        assert!(
            backup.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&backup.stderr)
        );
        // Found free and let go: another process may take it before the
        // standby binds it; then it starts again on another port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let watchdog = as_postgres(Path::new("sh"))
            .args(["-c", STANDBY_WATCHDOG, "sh"])
            .arg(&bin)
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let standby = Standby { watchdog, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        // Ready, and ours (its postmaster.pid says so, whoever answers on the port).
        let ours = || {
            std::fs::read_to_string(dir.join("data/postmaster.pid"))
                .is_ok_and(|pid| pid.lines().nth(7).is_some_and(|s| s.trim() == "ready"))
        };
        while !(ours()
            && Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1", "-q"])
                .status()
                .is_ok_and(|s| s.success()))
        {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            if log.contains("could not create any TCP/IP sockets") && attempt < 5 {
                // Its watchdog removes the directory when dropped.
                drop(standby);
                return Standby::start_attempt(primary, attempt + 1);
            }
            assert!(
                Instant::now() < deadline,
                "the standby did not start: {log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        standby
    }

    fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_standby_run_the_daemon_and_the_api_write_nothing_and_say_why() {
    // A primary of its own: the base backup copies this test's database
    // alone, not every other test's.
    let primary = std::sync::Arc::new(
        tokio::task::spawn_blocking(common::own_cluster)
            .await
            .unwrap(),
    );
    let db = with_table_on(
        &primary,
        "[schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"purge_t\"]\n",
    )
    .await;
    let standby = tokio::task::spawn_blocking({
        let primary = primary.clone();
        move || Standby::start(&primary)
    })
    .await
    .unwrap();
    let url = standby.url(&db.name);
    let on_standby = common::connect(&url).await;
    let in_recovery: bool = on_standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery);
    assert_eq!(rows(&on_standby).await, 100);

    // The CLI: reports the standby, exit 0, nothing done.
    let run: common::Run = at(&db, &url, &["run", "purge_t", "--json"])
        .output()
        .await
        .unwrap()
        .into();
    run.assert_code(0);
    assert_eq!(run.json()["reason"], "standby", "{}", run.stdout);

    // The daemon: claims no fire, says so once, keeps going; the API's run
    // is refused with the reason.
    let daemon = daemon_at(&db, &url).await;
    let (status, body) = api(&daemon, "POST", "/api/v1/tasks/purge_t/run", "{}").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("standby"),
        "{body}"
    );
    // The scheduler's line, then real time in which an every-second
    // schedule would have claimed fires, were it to claim any.
    common::wait_for(
        "the scheduler's standby line",
        Duration::from_secs(30),
        async || {
            let standby = daemon
                .log_text()
                .lines()
                .filter(|l| l.contains("is a standby"))
                .count();
            (standby >= 2).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = api(&daemon, "GET", "/api/v1/status", "").await;
    assert_eq!(status, 200, "the daemon keeps serving");
    let log = daemon.stop().await;
    let standby_lines = log.lines().filter(|l| l.contains("is a standby")).count();
    assert_eq!(
        standby_lines, 2,
        "one line for the scheduler, one for the API's run:\n{log}"
    );
    assert!(
        !log.contains("read-only transaction") && !log.contains("went away"),
        "no write was tried:\n{log}"
    );

    // Nothing happened on the primary either (the standby replays it).
    assert_eq!(db.count("SELECT count(*) FROM t").await, 100);
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.runs").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.schedule_fires")
            .await,
        0
    );
    assert_eq!(rows(&on_standby).await, 100);
}

//! Test harness: one throwaway PostgreSQL cluster per test binary, a fresh
//! database per test, the real `pgmaint` binary to run against it, and
//! the helpers every module shares (polling with a deadline, killing
//! processes, a daemon on a port the OS picked, an HTTP client).
//!
//! The shared cluster lives in a static, which Rust never drops: it is
//! stopped by the watchdog `Cluster::start` puts beside the server, which
//! stops the server and removes its directory once this process exits for
//! any reason (its pipe from us closes, even on kill -9 or a panic).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod pgbouncer;

use pgmaint::cluster::{Cluster, ClusterOptions, install_hint};
use tokio_postgres::{Client, NoTls};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

/// Held shared by every test database for its life, and exclusively by a
/// test that measures time (`alone()`): on two cores, the tests beside a
/// measured run can double its duration.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

thread_local! {
    /// Set on a test's thread while it holds `LOAD` exclusively, so its own
    /// databases do not wait for it (each `#[tokio::test]` runs on its own
    /// thread, in a current-thread runtime).
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The thread's shared hold of `LOAD`, one for all its databases: a
    /// second `read()` queued behind a waiting `alone()` would deadlock.
    static HELD: std::cell::RefCell<std::sync::Weak<Shared>> =
        const { std::cell::RefCell::new(std::sync::Weak::new()) };
}

type Shared = tokio::sync::RwLockReadGuard<'static, ()>;

/// This thread's shared hold of `LOAD`, taken if it has none.
async fn shared_load() -> Option<std::sync::Arc<Shared>> {
    if ALONE.with(|alone| alone.get()) {
        return None;
    }
    if let Some(held) = HELD.with(|held| held.borrow().upgrade()) {
        return Some(held);
    }
    let held = std::sync::Arc::new(LOAD.read().await);
    HELD.with(|slot| *slot.borrow_mut() = std::sync::Arc::downgrade(&held));
    Some(held)
}

/// Runs the rest of the calling test with no other test database in use:
/// waits for those open to be dropped and holds new ones back until the
/// returned guard is dropped. For tests that compare a duration with an
/// estimate; call it before making the test's databases.
pub async fn alone() -> Alone {
    let guard = LOAD.write().await;
    ALONE.with(|alone| alone.set(true));
    Alone { _guard: guard }
}

pub struct Alone {
    _guard: tokio::sync::RwLockWriteGuard<'static, ()>,
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.with(|alone| alone.set(false));
    }
}

/// The cluster shared by this test binary. It stops when the binary exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        Cluster::start(ClusterOptions {
            fsync: false,
            keep: false,
            scratch: false,
        })
        .unwrap_or_else(|err| {
            panic!("cannot start a throwaway PostgreSQL for the tests: {err}\n  {SCRIPTS_TEST}")
        })
    })
}

/// A cluster of the test's own, for what must not share the server with
/// other tests: server-wide settings (TLS), a standby of it, or checks of
/// server-wide activity that other tests' sessions would disturb. Stopped
/// and removed when dropped (or when the binary exits).
pub fn own_cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        fsync: false,
        keep: false,
        scratch: false,
    })
    .unwrap_or_else(|err| {
        panic!("cannot start a throwaway PostgreSQL for the test: {err}\n  {SCRIPTS_TEST}")
    })
}

pub struct TestDb {
    pub url: String,
    /// Where pgmaint (`command`, `pgmaint`, `daemon`) connects when not
    /// `url`: a pooler in front of it. The test's own clients stay direct.
    pub pgmaint_url: Option<String>,
    pub name: String,
    pub dir: tempfile::TempDir,
    /// `LOAD` held shared, unless this test runs `alone()`.
    _load: Option<std::sync::Arc<Shared>>,
}

impl TestDb {
    /// A new, empty database of the shared cluster.
    pub async fn new() -> TestDb {
        TestDb::on(cluster()).await
    }

    /// A new database of the shared cluster, made by `sql`.
    pub async fn with_sql(sql: &str) -> TestDb {
        let db = TestDb::new().await;
        db.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("setting up the test database: {e}\n{sql}"));
        db
    }

    /// A new, empty database of `cluster` (the shared one or the test's own).
    pub async fn on(cluster: &Cluster) -> TestDb {
        let load = shared_load().await;
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let admin = connect(&cluster.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: cluster.url(&name),
            pgmaint_url: None,
            name,
            dir: tempfile::tempdir().expect("temp dir"),
            _load: load,
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Writes `pgmaint.toml` for this database and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("pgmaint.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Runs the pgmaint binary with this database and `pgmaint.toml`.
    pub async fn pgmaint(&self, args: &[&str]) -> Run {
        self.command(args)
            .output()
            .await
            .expect("run pgmaint")
            .into()
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"));
        command
            .arg("--config")
            .arg(self.dir.path().join("pgmaint.toml"))
            .arg("--database-url")
            .arg(self.pgmaint_url.as_deref().unwrap_or(&self.url))
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("PGMAINT_CONFIG")
            .kill_on_drop(true);
        command
    }

    /// A shell command line that runs pgmaint with `args` on a terminal 120
    /// columns wide (for `script`, which gives it a pseudo-terminal).
    pub fn terminal_command(&self, args: &str) -> String {
        require_tool(
            "script",
            "this test runs pgmaint on a pseudo-terminal with it",
            "bsdutils",
            "-",
        );
        format!(
            "stty cols 120 rows 40; {} --config {} --database-url '{}' {args}",
            env!("CARGO_BIN_EXE_pgmaint"),
            self.dir.path().join("pgmaint.toml").display(),
            self.url
        )
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }

    /// Polls the count `sql` returns until `want` holds (60 s at most);
    /// returns that count.
    #[track_caller]
    pub fn wait_for_count(
        &self,
        sql: &str,
        want: impl Fn(i64) -> bool,
        what: &str,
    ) -> impl Future<Output = i64> {
        let caller = std::panic::Location::caller();
        async move {
            let client = self.client().await;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let value: i64 = client.query_one(sql, &[]).await.expect(sql).get(0);
                if want(value) {
                    return value;
                }
                assert!(
                    Instant::now() < deadline,
                    "{caller}: timed out after 60 s waiting for {what} (last {value})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A daemon of this database and `pgmaint.toml` on a port the OS picks,
    /// logging (text lines) to a file of its own.
    pub async fn daemon(&self) -> Daemon {
        self.daemon_with(&[], &self.log_path()).await
    }

    /// A daemon as [`TestDb::daemon`], with `args` after `daemon` and its
    /// stderr in `log`.
    pub async fn daemon_with(&self, args: &[&str], log: &Path) -> Daemon {
        let mut command = self.command(&["daemon", "--listen", "127.0.0.1:0"]);
        command.args(args);
        Daemon::spawn(command, log).await
    }

    /// A fresh file name for a daemon's log in this test's directory.
    pub fn log_path(&self) -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        self.dir.path().join(format!(
            "daemon-{}.log",
            NEXT.fetch_add(1, Ordering::SeqCst)
        ))
    }
}

/// Polls `probe` every 50 ms until it gives a value, and returns it; fails
/// the test naming `what` once `timeout` has passed.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> impl Future<Output = T> {
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{caller}: timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `signal` to the process `pid` (a child of the test).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory preconditions; the pid is our child's.
    let sent = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(
        sent,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// `count` delays of `least_ms` plus up to `spread_ms` more, from a fixed
/// seed (so every run of a test kills at the same moments): the moments a
/// kill -9 test kills at.
pub fn kill_delays(seed: u64, count: usize, least_ms: u64, spread_ms: u64) -> Vec<Duration> {
    let mut seed = seed;
    (0..count)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Duration::from_millis(least_ms + (seed >> 33) % spread_ms)
        })
        .collect()
}

/// (rows, md5 of the rows' text in `id` order) of the query `rows`.
pub async fn checksum(db: &TestDb, rows: &str) -> (i64, String) {
    let row = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(r::text, '|' ORDER BY id)), '') FROM ({rows}) r"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Starts a process `delays.len()` times, kills it with SIGKILL after each
/// delay unless it finished first, waits for it, and calls `after` with the
/// kills so far. Returns how many runs were killed mid-way. The delays are
/// the point of such a test (a kill at a random moment), not a wait for
/// something that could be polled.
pub async fn kill_after_each(
    delays: impl IntoIterator<Item = Duration>,
    mut start: impl FnMut() -> tokio::process::Command,
    mut after: impl AsyncFnMut(u32),
) -> u32 {
    let mut kills = 0;
    for delay in delays {
        let mut child = start().spawn().expect("start pgmaint");
        tokio::time::sleep(delay).await;
        if child.try_wait().expect("poll pgmaint").is_none() {
            child.start_kill().expect("kill pgmaint");
            kills += 1;
        }
        child.wait().await.expect("wait for pgmaint");
        after(kills).await;
    }
    kills
}

/// A `pgmaint daemon` child listening where the OS put it (`--listen
/// 127.0.0.1:0`): its address is read from its "pgmaint daemon started"
/// log line, so no port is picked and freed first for someone else to
/// take. Killed when dropped.
pub struct Daemon {
    pub child: tokio::process::Child,
    pub address: SocketAddr,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl Daemon {
    /// Spawns `command` (a `pgmaint daemon` listening on port 0) with its
    /// stderr in `log`, and waits until it listens.
    pub async fn spawn(mut command: tokio::process::Command, log: &Path) -> Daemon {
        let file =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let mut child = command
            // The start line is logged at info, the daemon's default level.
            .env_remove("PGMAINT_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start pgmaint daemon");
        let address = wait_for(
            "the daemon's \"pgmaint daemon started\" line",
            Duration::from_secs(30),
            async || {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if let Some(address) = listen_address(&text) {
                    return Some(address);
                }
                if let Some(status) = child.try_wait().expect("poll the daemon") {
                    panic!("the daemon exited ({status}) before listening:\n{text}");
                }
                None
            },
        )
        .await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Daemon {
            child,
            address,
            log: log.to_path_buf(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGTERM: the daemon stops as it would under systemd.
    pub fn terminate(&self) {
        signal(
            self.child.id().expect("the daemon is running"),
            libc::SIGTERM,
        );
    }

    /// SIGTERM, then waits for the exit; fails unless it exits 0. Returns
    /// what it logged.
    pub async fn stop(mut self) -> String {
        self.terminate();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the daemon exits within 60 s of SIGTERM")
            .expect("wait for the daemon");
        let log = self.log_text();
        assert!(status.success(), "the daemon exits 0 on SIGTERM\n{log}");
        log
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP request's status code.
    pub async fn code(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> u16 {
        self.http(method, path, token, body).await.0
    }

    /// An HTTP request with a JSON body (empty for none); returns (status, body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        request(&self.http, method, &self.url(path), token, body).await
    }
}

/// The address in a daemon's "pgmaint daemon started" line, text or JSON.
fn listen_address(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("pgmaint daemon started"))?;
    let (_, rest) = line
        .split_once("listen=")
        .or_else(|| line.split_once("\"listen\":\""))?;
    let end = rest.find([' ', '"']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One HTTP request with reqwest: the status and the body.
pub async fn request(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = client
        .request(method, url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{url}: reading the body: {e}"));
    (status, body)
}

/// A GET from a test without a runtime of its own: (status, body).
pub fn get_blocking(url: &str, token: Option<&str>) -> (u16, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client");
            request(&client, "GET", url, token, "").await
        })
}

const SCRIPTS_TEST: &str =
    "or run `scripts/test`, which installs everything the tests need and runs them";

/// Fails the test unless `program` is on PATH, naming it and the command
/// that installs it (`brew_package` "-" where Homebrew has none). A test
/// whose tool is missing fails; it never passes by skipping.
#[track_caller]
pub fn require_tool(program: &str, why: &str, apt_package: &str, brew_package: &str) {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .any(|dir| dir.join(program).is_file());
    assert!(
        found,
        "`{program}` is not installed (not on PATH); {why}\n  help: install it with {}, {SCRIPTS_TEST}",
        install_hint(apt_package, brew_package)
    );
}

/// Fails the test unless the shared cluster's server can `CREATE EXTENSION
/// extension`, naming it, the server, and the command that installs it.
/// `apt_package` may hold `{major}`, the server's major version.
pub async fn require_extension(extension: &str, why: &str, apt_package: &str, brew_package: &str) {
    let admin = connect(&cluster().url("postgres")).await;
    let row = admin
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000,
                    EXISTS (SELECT FROM pg_available_extensions WHERE name = $1)",
            &[&extension],
        )
        .await
        .expect("ask the server for its extensions");
    let (major, available): (i32, bool) = (row.get(0), row.get(1));
    assert!(
        available,
        "the extension {extension} is not installed for PostgreSQL {major} ({}); {why}\n  help: install it with {}, {SCRIPTS_TEST}",
        cluster().bin.display(),
        install_hint(
            &apt_package.replace("{major}", &major.to_string()),
            brew_package
        )
    );
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to test cluster");
    tokio::spawn(connection);
    client
}

/// A finished pgmaint process, with its output as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// One check of a `pgmaint health --json` report.
pub fn health_check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

/// A local port that is bound but never listened on, held for as long as
/// this lives: connecting to it is refused at once, and no other process
/// can take it meanwhile (a port found free and let go could be).
pub struct ClosedPort {
    fd: i32,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        // SAFETY: plain socket calls on a descriptor we own; the address
        // structures are initialized and sized as bind/getsockname expect.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut address: libc::sockaddr_in = std::mem::zeroed();
            address.sin_family = libc::AF_INET as libc::sa_family_t;
            address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(
                fd,
                &address as *const libc::sockaddr_in as *const libc::sockaddr,
                length,
            );
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            let named = libc::getsockname(
                fd,
                &mut address as *mut libc::sockaddr_in as *mut libc::sockaddr,
                &mut length,
            );
            assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                fd,
                port: u16::from_be(address.sin_port),
            }
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this owns, once.
        unsafe { libc::close(self.fd) };
    }
}

/// Restarts a cluster started with `keep: true` (pg_ctl manages it), fast,
/// and waits until it accepts connections again.
pub fn restart_cluster(cluster: &Cluster) {
    let restart = cluster.stop_command().replace(
        " stop",
        &format!(
            " -l {}/restart.log -m fast -w restart",
            cluster.dir.display()
        ),
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &restart])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{restart}");
}

/// Stops a cluster started with `keep: true` and removes its directory.
pub fn remove_kept_cluster(cluster: &Cluster) {
    let _ = std::process::Command::new("sh")
        .args(["-c", &cluster.stop_command()])
        .status();
    let _ = std::fs::remove_dir_all(&cluster.dir);
}

//! Test harness: one throwaway PostgreSQL cluster per test binary, a fresh
//! database per test, and the real `pgmaint` binary to run against it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use pgmaint::cluster::{Cluster, ClusterOptions, install_hint};
use tokio_postgres::{Client, NoTls};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

/// The cluster shared by this test binary. It stops when the binary exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        Cluster::start(ClusterOptions {
            fsync: false,
            keep: false,
        })
        .unwrap_or_else(|err| {
            panic!("cannot start a throwaway PostgreSQL for the tests: {err}\n  {SCRIPTS_TEST}")
        })
    })
}

pub struct TestDb {
    pub url: String,
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    /// A new, empty database of the shared cluster.
    pub async fn new() -> TestDb {
        let cluster = cluster();
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
            name,
            dir: tempfile::tempdir().expect("temp dir"),
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
            .arg(&self.url)
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

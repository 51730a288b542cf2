//! A throwaway PostgreSQL cluster from the installed server binaries, for
//! `pgmaint demo`, the tests and the benchmarks: initdb in a temp dir, a free
//! port, its own socket dir, trust auth. As root it runs as the `postgres`
//! user, since initdb refuses root.
//!
//! Unless kept, the server is started under a small shell watchdog that
//! holds a pipe from this process: when this process exits for any reason
//! (even kill -9) the pipe closes, and the watchdog stops the server and
//! removes the directory. Nothing is left running.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found\n  help: install them: `apt-get install postgresql` (Debian/Ubuntu), `dnf install postgresql-server` (Fedora), `brew install postgresql@16` (macOS); or set PGMAINT_PG_BIN to the directory holding initdb"
    )]
    NoBinaries,
    #[error(
        "running as root, but there is no `postgres` user to run the server as\n  help: create one (`useradd -m postgres`) or run as an ordinary user"
    )]
    NoPostgresUser,
    #[error("{step} failed: {output}")]
    Step { step: &'static str, output: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct ClusterOptions {
    /// Off makes tests faster; benchmarks keep it on to measure real commits.
    pub fsync: bool,
    /// Leave the server running after this process exits (`demo --keep`).
    pub keep: bool,
}

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    pub bin: PathBuf,
    watchdog: Option<Child>,
}

/// The directory holding `initdb`: `$PGMAINT_PG_BIN`, the newest
/// /usr/lib/postgresql/*/bin, then `PATH`.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("PGMAINT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .find(|p| p.join("initdb").exists() && p.join("postgres").exists())
        })
        .ok_or(ClusterError::NoBinaries)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the `postgres` user when we are root.
fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run_step(step: &'static str, command: &mut Command) -> Result<(), ClusterError> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Err(ClusterError::Step {
        step,
        output: text.trim().to_string(),
    })
}

const WATCHDOG: &str = r#"
"$1/postgres" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 -c fsync="$4" -c full_page_writes="$4" -c synchronous_commit=on >"$2/server.log" 2>&1 &
pid=$!
read _ignored || true
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2"
"#;

impl Cluster {
    pub fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let bin = find_bin_dir()?;
        if !bin.join("initdb").exists() {
            return Err(ClusterError::NoBinaries);
        }
        let dir = tempfile::Builder::new()
            .prefix("pgmaint-pg-")
            .tempdir()?
            .keep();
        if running_as_root() {
            let user = std::ffi::CString::new("postgres").expect("no NUL");
            // SAFETY: getpwnam reads a static record; we copy the ids out at once.
            let entry = unsafe { libc::getpwnam(user.as_ptr()) };
            if entry.is_null() {
                return Err(ClusterError::NoPostgresUser);
            }
            let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        run_step(
            "initdb",
            as_server_user(&bin.join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-N",
                ]),
        )?;
        let port = free_port()?;
        let fsync = if options.fsync { "on" } else { "off" };
        let watchdog = if options.keep {
            let server_options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1",
                dir.display()
            );
            run_step(
                "pg_ctl start",
                as_server_user(&bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(dir.join("data"))
                    .arg("-l")
                    .arg(dir.join("server.log"))
                    .args(["-o", &server_options, "-w", "start"]),
            )?;
            None
        } else {
            let mut command = as_server_user(Path::new("sh"));
            command
                .args(["-c", WATCHDOG, "sh"])
                .arg(&bin)
                .arg(&dir)
                .arg(port.to_string())
                .arg(fsync);
            Some(
                command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            )
        };
        let cluster = Cluster {
            port,
            dir,
            bin,
            watchdog,
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn wait_ready(&self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-t",
                    "1",
                    "-q",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(ClusterError::Step {
                    step: "starting postgres",
                    output: log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A URL for a database of this cluster, as the `postgres` superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// The command that stops a kept cluster.
    pub fn stop_command(&self) -> String {
        let prefix = if running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "{prefix}{} -D {} stop",
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display()
        )
    }

    /// Stops the server and removes its directory, waiting until both are done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut child) = self.watchdog.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"stop\n");
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

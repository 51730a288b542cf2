//! A throwaway PostgreSQL cluster from the installed server binaries, for
//! `pgmaint demo`, the tests and the benchmarks: initdb in a temp dir, a free
//! port, its own socket dir, trust auth. As root it runs as the `postgres`
//! user, since initdb refuses root.
//!
//! Unless kept, the server is started under a small shell watchdog that
//! holds a pipe from this process: when this process exits for any reason
//! (even kill -9) the pipe closes, and the watchdog stops the server and
//! removes the directory. Nothing is left running.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_isready) were not found in PGMAINT_PG_BIN, PATH, /usr/lib/postgresql/*/bin or Homebrew's prefixes\n  help: install them with {}, or set PGMAINT_PG_BIN to the directory holding initdb",
        install_hint(SERVER_APT, SERVER_BREW)
    )]
    NoBinaries,
    #[error(
        "PGMAINT_PG_BIN is {}, which holds no {missing}\n  help: set PGMAINT_PG_BIN to the directory holding initdb, postgres, pg_ctl and pg_isready, or unset it to search PATH, /usr/lib/postgresql/*/bin and Homebrew's prefixes; to install them: {}",
        dir.display(),
        install_hint(SERVER_APT, SERVER_BREW)
    )]
    BadPgBin { dir: PathBuf, missing: &'static str },
    #[error(
        "running as root, but there is no `postgres` user to run the server as\n  help: create one (`useradd -m postgres`) or run as an ordinary user"
    )]
    NoPostgresUser,
    #[error(
        "running as root, but `runuser` (which runs the server as the `postgres` user) was not found\n  help: install it with {}, or run as an ordinary user",
        install_hint("util-linux", "-")
    )]
    NoRunuser,
    #[error("{step} failed: {output}")]
    Step { step: &'static str, output: String },
    /// The free port picked was taken by another process before the
    /// server bound it; `start` tries again with another.
    #[error("port {0} was taken before the server could listen on it")]
    PortTaken(u16),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClusterError {
    /// Whether this machine lacks something the cluster needs (binaries, a
    /// user), as opposed to a step that failed while starting it.
    pub(crate) fn is_setup(&self) -> bool {
        matches!(
            self,
            ClusterError::NoBinaries
                | ClusterError::BadPgBin { .. }
                | ClusterError::NoPostgresUser
                | ClusterError::NoRunuser
        )
    }
}

/// The packages that hold the server binaries. Homebrew's is 15, the
/// version developed and tested here, which its pg_partman is built for.
const SERVER_APT: &str = "postgresql";
const SERVER_BREW: &str = "postgresql@15";

/// The one command that installs a package on this machine, in backticks:
/// Homebrew on macOS, apt-get (with sudo unless root) where it exists.
/// Elsewhere both are named. `-` is a package the platform does not have.
pub fn install_hint(apt_package: &str, brew_package: &str) -> String {
    let apt = || {
        let sudo = if running_as_root() { "" } else { "sudo " };
        format!("`{sudo}apt-get install {apt_package}`")
    };
    if cfg!(target_os = "macos") && brew_package != "-" {
        format!("`brew install {brew_package}`")
    } else if Path::new("/usr/bin/apt-get").exists() && apt_package != "-" {
        apt()
    } else if brew_package == "-" {
        format!("{} (Debian, Ubuntu)", apt())
    } else {
        format!(
            "{} (Debian, Ubuntu) or `brew install {brew_package}` (macOS)",
            apt()
        )
    }
}
pub struct ClusterOptions {
    /// Off makes tests faster; benchmarks keep it on to measure real commits.
    pub fsync: bool,
    /// Leave the server running after this process exits (`demo --keep`).
    pub keep: bool,
    /// A scratch cluster of `pgmaint migrate` (the lock trace, `test`,
    /// `drift`): no TCP listener, only the socket in its own private
    /// directory, named `pgmaint-scratch-*` with this process's id in
    /// `owner.pid`, so that [`sweep_scratch`] at a later start removes it
    /// if both this process and its watchdog were killed.
    pub scratch: bool,
}

/// The prefix of a scratch cluster's directory in the temp dir.
const SCRATCH_PREFIX: &str = "pgmaint-scratch-";

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    pub bin: PathBuf,
    watchdog: Option<Child>,
    /// Listens on its socket directory only (a scratch cluster).
    socket_only: bool,
}

/// The directory holding the server binaries, searched for in this order:
/// `$PGMAINT_PG_BIN` (which must hold them: a wrong setting is an error, not
/// a reason to look elsewhere), `PATH`, the newest /usr/lib/postgresql/*/bin
/// (Debian, Ubuntu), then Homebrew's: the newest postgresql@N keg (they are
/// keg-only, so not on PATH) under /opt/homebrew (Apple silicon) or
/// /usr/local (Intel), then their linked bin directories. `scripts/test`
/// searches the same way.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    search_bin_dir(
        std::env::var_os("PGMAINT_PG_BIN"),
        std::env::var_os("PATH"),
        Path::new("/"),
    )
}

/// [`find_bin_dir`] with the environment and the file system's root given.
fn search_bin_dir(
    pg_bin: Option<OsString>,
    path: Option<OsString>,
    root: &Path,
) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = pg_bin.filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        return match SERVER_PROGRAMS.iter().find(|p| !dir.join(p).is_file()) {
            Some(missing) => Err(ClusterError::BadPgBin { dir, missing }),
            None => Ok(dir),
        };
    }
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| holds_server(dir));
    on_path
        .or_else(|| newest_versioned(&root.join("usr/lib/postgresql"), ""))
        .or_else(|| newest_versioned(&root.join("opt/homebrew/opt"), "postgresql@"))
        .or_else(|| newest_versioned(&root.join("usr/local/opt"), "postgresql@"))
        .or_else(|| {
            ["opt/homebrew/bin", "usr/local/bin"]
                .into_iter()
                .map(|dir| root.join(dir))
                .find(|dir| holds_server(dir))
        })
        .ok_or(ClusterError::NoBinaries)
}

/// What a cluster runs. A directory with only some of them (a few symlinks
/// in /usr/local/bin, say) is passed over.
const SERVER_PROGRAMS: [&str; 4] = ["initdb", "postgres", "pg_ctl", "pg_isready"];

fn holds_server(dir: &Path) -> bool {
    SERVER_PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

/// `parent/<prefix><N>/bin` with the highest version N that holds the server.
fn newest_versioned(parent: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: u32 = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| holds_server(bin))
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .any(|dir| dir.join(program).is_file())
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

/// Removes the scratch clusters in the temp dir whose owner is gone: a
/// process killed with its watchdog (kill -9 of a whole process group)
/// leaves its directory, and possibly its server, behind. A cluster whose
/// owner still runs is left alone. Returns how many were removed.
pub fn sweep_scratch() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
        if !named || !dir.is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok());
        if owner.is_some_and(process_alive) {
            continue;
        }
        // A directory still being made has no owner.pid for a moment.
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(10));
        if owner.is_none() && young {
            continue;
        }
        let server = std::fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = server.filter(|pid| process_alive(*pid)) {
            // SAFETY: kill has no memory preconditions. SIGQUIT is the
            // server's immediate shutdown: nothing in it is worth keeping.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
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
"$1/postgres" -D "$2/data" -p "$3" -k "$2" -c listen_addresses="$5" -c fsync="$4" -c full_page_writes="$4" -c synchronous_commit=on >"$2/server.log" 2>&1 &
pid=$!
read _ignored || true
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2"
"#;

/// How many times `start` picks another port when the one it picked is
/// taken before the server binds it (a port is found free by binding and
/// letting go of it; another process may take it in between).
const PORT_ATTEMPTS: usize = 5;

/// The server's log line when it could bind none of its addresses.
const NO_SOCKETS: &str = "could not create any TCP/IP sockets";

impl Cluster {
    pub fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let mut attempt = 1;
        loop {
            match Cluster::start_once(&options) {
                Err(ClusterError::PortTaken(_)) if attempt < PORT_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    fn start_once(options: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let bin = find_bin_dir()?;
        if running_as_root() && !on_path("runuser") {
            return Err(ClusterError::NoRunuser);
        }
        let dir = tempfile::Builder::new()
            .prefix(if options.scratch {
                SCRATCH_PREFIX
            } else {
                "pgmaint-pg-"
            })
            .tempdir()?
            .keep();
        if options.scratch {
            std::fs::write(dir.join("owner.pid"), std::process::id().to_string())?;
        }
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
            let started = run_step(
                "pg_ctl start",
                as_server_user(&bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(dir.join("data"))
                    .arg("-l")
                    .arg(dir.join("server.log"))
                    .args(["-o", &server_options, "-w", "start"]),
            );
            if let Err(err) = started {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                if log.contains(NO_SOCKETS) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(ClusterError::PortTaken(port));
                }
                return Err(err);
            }
            None
        } else {
            let mut command = as_server_user(Path::new("sh"));
            command
                .args(["-c", WATCHDOG, "sh"])
                .arg(&bin)
                .arg(&dir)
                .arg(port.to_string())
                .arg(fsync)
                .arg(if options.scratch { "" } else { "127.0.0.1" });
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
            socket_only: options.scratch,
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn wait_ready(&self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let host = if self.socket_only {
                self.dir.display().to_string()
            } else {
                "127.0.0.1".to_string()
            };
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", &host, "-p", &self.port.to_string(), "-t", "1", "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            // Ready, and ours: had another server taken the port, pg_isready
            // would answer for it, but our postmaster would never say ready.
            if ready && self.postmaster_ready() {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            if log.contains(NO_SOCKETS) {
                // Dropping this cluster stops the watchdog, which removes the directory.
                return Err(ClusterError::PortTaken(self.port));
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Step {
                    step: "starting postgres",
                    output: log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether this cluster's own postmaster says it accepts connections
    /// (the status line of postmaster.pid, as `pg_ctl -w` reads it).
    fn postmaster_ready(&self) -> bool {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .is_ok_and(|pid| pid.lines().nth(7).is_some_and(|s| s.trim() == "ready"))
    }

    /// A URL for a database of this cluster, as the `postgres` superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// libpq's key=value connection string for a database of this cluster
    /// through its socket directory, as the `postgres` superuser: the only
    /// way into a scratch cluster.
    pub fn socket_conninfo(&self, database: &str) -> String {
        format!(
            "host='{}' port={} user=postgres dbname='{database}'",
            self.dir.display(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake server directory under `root`.
    fn server(root: &Path, dir: &str) -> PathBuf {
        let bin = root.join(dir);
        std::fs::create_dir_all(&bin).unwrap();
        for program in SERVER_PROGRAMS {
            std::fs::write(bin.join(program), "").unwrap();
        }
        bin
    }

    fn search(
        root: &Path,
        pg_bin: Option<&Path>,
        path: &[PathBuf],
    ) -> Result<PathBuf, ClusterError> {
        search_bin_dir(
            pg_bin.map(OsString::from),
            Some(std::env::join_paths(path).unwrap()),
            root,
        )
    }

    #[test]
    fn the_search_order_is_pgmaint_pg_bin_path_debian_then_homebrew() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let linked = server(root, "opt/homebrew/bin");
        assert_eq!(search(root, None, &[]).unwrap(), linked);
        server(root, "usr/local/opt/postgresql@17/bin");
        let keg = server(root, "opt/homebrew/opt/postgresql@15/bin");
        server(root, "opt/homebrew/opt/postgresql@9/bin");
        assert_eq!(search(root, None, &[]).unwrap(), keg);
        server(root, "usr/lib/postgresql/14/bin");
        let debian = server(root, "usr/lib/postgresql/16/bin");
        std::fs::create_dir_all(root.join("usr/lib/postgresql/17/bin")).unwrap();
        assert_eq!(search(root, None, &[]).unwrap(), debian);
        // A few symlinks on PATH (initdb and postgres, no pg_isready) are
        // not a server.
        let partial = root.join("partial");
        std::fs::create_dir_all(&partial).unwrap();
        for program in ["initdb", "postgres"] {
            std::fs::write(partial.join(program), "").unwrap();
        }
        assert_eq!(search(root, None, &[partial]).unwrap(), debian);
        let on_path = server(root, "custom/bin");
        let path = [root.join("empty"), on_path.clone()];
        assert_eq!(search(root, None, &path).unwrap(), on_path);
        let chosen = server(root, "chosen");
        assert_eq!(search(root, Some(&chosen), &path).unwrap(), chosen);
        // Set but empty is unset, as in a shell.
        assert_eq!(search(root, Some(Path::new("")), &path).unwrap(), on_path);
    }

    #[test]
    fn a_pgmaint_pg_bin_without_initdb_is_an_error_not_a_reason_to_look_elsewhere() {
        let root = tempfile::tempdir().unwrap();
        let debian = server(root.path(), "usr/lib/postgresql/15/bin");
        let empty = root.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = search(root.path(), Some(&empty), &[debian]).unwrap_err();
        assert!(
            matches!(
                err,
                ClusterError::BadPgBin {
                    missing: "initdb",
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("PGMAINT_PG_BIN is {}", empty.display())),
            "{message}"
        );
        assert!(message.contains("install"), "{message}");
    }

    #[test]
    fn no_binaries_anywhere_says_the_command_that_installs_them() {
        let root = tempfile::tempdir().unwrap();
        let err = search(root.path(), None, &[root.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, ClusterError::NoBinaries), "{err}");
        let hint = install_hint(SERVER_APT, SERVER_BREW);
        assert!(err.to_string().contains(&hint), "{err}");
        if cfg!(target_os = "macos") {
            assert_eq!(hint, "`brew install postgresql@15`");
        } else if Path::new("/usr/bin/apt-get").exists() {
            assert!(hint.ends_with("apt-get install postgresql`"), "{hint}");
        }
    }
}

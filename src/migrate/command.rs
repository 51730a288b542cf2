//! The application's own migrator as a child process (`format =
//! "command"`): its shell command run by `sh -c` in its working directory,
//! with the connection pgmaint uses (`DATABASE_URL` and libpq's `PG*`
//! variables) and `PGOPTIONS` carrying `[migrations]`'s `lock_timeout` and
//! `statement_timeout`, so every statement the migrator sends runs under
//! them; its output streamed through and its last lines kept for the
//! record; its exit status. A stop (Ctrl-C, SIGTERM) is passed on to it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_postgres::config::Host;

use super::Settings;
use super::ledger::app::AppLedger;
use crate::connect::{SslMode, Target};

/// `[migrations.command]`, resolved.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// Applies the pending migrations (`npx knex migrate:latest`).
    pub up: String,
    /// Reverts (`npx knex migrate:down`); without it `migrate down` refuses.
    pub down: Option<String>,
    /// Shown by `migrate status` under the ledger's rows.
    pub status: Option<String>,
    /// Which ledger to read; `None`: found from the database's tables.
    pub ledger: Option<AppLedger>,
    /// `ledger_table`: the ledger under another name than the tool's
    /// default, as PostgreSQL reads a name (`ops."KnexLog"`).
    pub ledger_table: Option<String>,
    /// Where the commands run (the config file's folder by default).
    pub workdir: PathBuf,
    /// Run `up`/`down` on a scratch copy of the live schema first, to back
    /// up what they drop (`trace = false`: a command with effects outside
    /// the database, such as Rails rewriting db/schema.rb, runs once).
    pub trace: bool,
}

/// How many of the last lines of each stream are kept for the record.
pub const TAIL_LINES: usize = 40;
/// A longer line is cut to this many characters in the record.
const TAIL_LINE_CHARS: usize = 500;

/// One command, as it will run: what `--dry-run` shows and the run does.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: String,
    pub workdir: PathBuf,
    /// Set in the child's environment, over what pgmaint's own holds.
    env: Vec<(&'static str, String)>,
}

impl Invocation {
    /// `command` with the connection of `target` (the session pgmaint's
    /// migrations use: `[database] direct_url` when set) and the timeouts
    /// of `settings`.
    pub fn new(
        command: &str,
        workdir: &std::path::Path,
        target: &Target,
        settings: &Settings,
    ) -> Self {
        let inherited = std::env::var("PGOPTIONS").ok();
        let from_url = target.config.get_options();
        let existing = match (inherited.as_deref(), from_url) {
            (Some(a), Some(b)) => Some(format!("{a} {b}")),
            (a, b) => a.or(b).map(str::to_string),
        };
        let mut env = libpq_env(target);
        env.push((
            "PGOPTIONS",
            pgoptions(
                existing.as_deref(),
                settings.lock_timeout,
                settings.statement_timeout,
            ),
        ));
        Invocation {
            command: command.to_string(),
            workdir: if workdir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                workdir.to_path_buf()
            },
            env,
        }
    }

    pub fn pgoptions(&self) -> &str {
        self.var("PGOPTIONS").unwrap_or("")
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The variables it sets, with the password left out: for the dry run
    /// and the record.
    pub fn shown_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|(k, _)| *k != "PGPASSWORD")
            .map(|(k, v)| {
                let v = if *k == "DATABASE_URL" {
                    without_password(v)
                } else {
                    v.clone()
                };
                (k.to_string(), v)
            })
            .collect()
    }
}

/// `PGOPTIONS` with `-c lock_timeout=<ms> -c statement_timeout=<ms>`
/// after what it already holds (the last `-c` of a setting wins).
pub fn pgoptions(
    existing: Option<&str>,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> String {
    let ours = format!(
        "-c lock_timeout={} -c statement_timeout={}",
        lock_timeout.as_millis(),
        statement_timeout.as_millis()
    );
    match existing.map(str::trim).filter(|e| !e.is_empty()) {
        Some(existing) => format!("{existing} {ours}"),
        None => ours,
    }
}

/// `DATABASE_URL` and libpq's variables for `target`. `sslmode` is left
/// out when it is `prefer` (libpq's default): node-postgres reads
/// `sslmode=prefer` as "require TLS", which would fail on a server
/// without it.
pub(crate) fn libpq_env(target: &Target) -> Vec<(&'static str, String)> {
    let config = &target.config;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let user = config.get_user().unwrap_or_default();
    let database = config.get_dbname().unwrap_or_default();
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let sslmode = match target.ssl_mode {
        SslMode::Disable => Some("disable"),
        SslMode::Prefer => None,
        SslMode::Require => Some("require"),
        SslMode::VerifyCa => Some("verify-ca"),
        SslMode::VerifyFull => Some("verify-full"),
    };
    let mut env = vec![(
        "DATABASE_URL",
        database_url(
            &hosts,
            &ports,
            user,
            password.as_deref(),
            database,
            sslmode,
            target.root_cert.as_deref(),
        ),
    )];
    env.push(("PGHOST", hosts.join(",")));
    env.push(("PGPORT", ports.join(",")));
    env.push(("PGUSER", user.to_string()));
    env.push(("PGDATABASE", database.to_string()));
    if let Some(password) = password {
        env.push(("PGPASSWORD", password));
    }
    if let Some(mode) = sslmode {
        env.push(("PGSSLMODE", mode.to_string()));
    }
    if let Some(cert) = &target.root_cert {
        env.push(("PGSSLROOTCERT", cert.clone()));
    }
    env
}

/// `postgresql://user:password@host:port/database?sslmode=...`, each part
/// percent-encoded (a Unix-socket directory as the host, `%2Ftmp`, which
/// libpq and node-postgres both read).
fn database_url(
    hosts: &[String],
    ports: &[String],
    user: &str,
    password: Option<&str>,
    database: &str,
    sslmode: Option<&str>,
    root_cert: Option<&str>,
) -> String {
    let mut url = String::from("postgresql://");
    if !user.is_empty() {
        url.push_str(&encode(user));
        if let Some(password) = password {
            url.push(':');
            url.push_str(&encode(password));
        }
        url.push('@');
    }
    let authority: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = if host.contains(':') && !host.starts_with('/') {
                format!("[{host}]")
            } else {
                encode(host)
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    url.push_str(&authority.join(","));
    url.push('/');
    url.push_str(&encode(database));
    let mut query = Vec::new();
    if let Some(mode) = sslmode {
        query.push(format!("sslmode={mode}"));
    }
    if let Some(cert) = root_cert {
        query.push(format!("sslrootcert={}", encode(cert)));
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL with its password replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// How the command ended, and what it said last.
#[derive(Debug, Clone, Serialize)]
pub struct Ran {
    /// `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: f64,
    pub stdout_tail: Vec<String>,
    pub stderr_tail: Vec<String>,
    /// A stop (Ctrl-C, SIGTERM) was passed on to it.
    pub stopped: bool,
}

impl Ran {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// `exited with status 1`, `ended by signal 15`.
    pub fn says(&self) -> String {
        match (self.exit_code, self.signal) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("ended by signal {signal}"),
            (None, None) => "ended".to_string(),
        }
    }

    /// The last few lines of its error output (else of its output), for a
    /// failure's message.
    pub fn last_words(&self, lines: usize) -> Vec<String> {
        let tail = if self.stderr_tail.is_empty() {
            &self.stdout_tail
        } else {
            &self.stderr_tail
        };
        tail.iter()
            .skip(tail.len().saturating_sub(lines))
            .cloned()
            .collect()
    }
}

/// Runs `invocation` with stdin closed (a migrator that asks a question
/// gets end of file: give it its non-interactive flag), its output passed
/// through to pgmaint's own stdout and stderr when `echo`, and kept
/// (the last `TAIL_LINES` of each). On a stop request the command's
/// process group gets SIGTERM.
pub async fn run(
    invocation: &Invocation,
    echo: bool,
    stop: &crate::stop::Stop,
) -> std::io::Result<Ran> {
    let started = Instant::now();
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&invocation.command)
        .current_dir(&invocation.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in &invocation.env {
        command.env(k, v);
    }
    let mut child = command.spawn().map_err(|e| invocation.cannot_run(e))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = tokio::spawn(tail(stdout, echo.then(tokio::io::stdout)));
    let err = tokio::spawn(tail(stderr, echo.then(tokio::io::stderr)));
    let mut stopped = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = stop.sleep(Duration::from_secs(365 * 24 * 3600)), if !stopped => {
                if stop.requested().is_some() {
                    stopped = true;
                    if let Some(pid) = pid {
                        // The whole group: `sh -c` may have children of its own.
                        unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
                    }
                }
            }
        }
    };
    let stdout_tail = out.await.unwrap_or_default();
    let stderr_tail = err.await.unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    Ok(Ran {
        exit_code: status.code(),
        signal: status.signal(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        stdout_tail,
        stderr_tail,
        stopped,
    })
}

impl Invocation {
    /// The error of a command that could not be started.
    fn cannot_run(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot run `sh -c {}` in {}: {e}",
                self.command,
                self.workdir.display()
            ),
        )
    }
}

/// Runs `invocation` (a `status` command) with its output and error
/// output captured together, as it would show on a terminal: its exit
/// code and that text.
pub async fn run_captured(invocation: &Invocation) -> std::io::Result<(Option<i32>, String)> {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("exec 2>&1; {}", invocation.command))
        .current_dir(&invocation.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in &invocation.env {
        command.env(k, v);
    }
    let out = command
        .output()
        .await
        .map_err(|e| invocation.cannot_run(e))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Reads a stream to its end, writing it through to `echo`, and returns
/// its last lines.
async fn tail<R, W>(stream: R, mut echo: Option<W>) -> Vec<String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let mut kept = VecDeque::with_capacity(TAIL_LINES);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(out) = echo.as_mut() {
            let _ = out.write_all(&line).await;
            let _ = out.flush().await;
        }
        let text = String::from_utf8_lossy(&line);
        let text: String = text
            .trim_end_matches(['\n', '\r'])
            .chars()
            .take(TAIL_LINE_CHARS)
            .collect();
        if kept.len() == TAIL_LINES {
            kept.pop_front();
        }
        kept.push_back(text);
    }
    kept.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgoptions_carry_the_timeouts_after_what_was_there() {
        assert_eq!(
            pgoptions(None, Duration::from_secs(2), Duration::from_secs(3600)),
            "-c lock_timeout=2000 -c statement_timeout=3600000"
        );
        assert_eq!(
            pgoptions(
                Some("-c search_path=app"),
                Duration::from_millis(300),
                Duration::ZERO
            ),
            "-c search_path=app -c lock_timeout=300 -c statement_timeout=0"
        );
        assert_eq!(
            pgoptions(Some("  "), Duration::from_secs(1), Duration::from_secs(1)),
            "-c lock_timeout=1000 -c statement_timeout=1000"
        );
    }

    #[test]
    fn the_url_is_encoded_and_shown_without_its_password() {
        let url = database_url(
            &["127.0.0.1".into()],
            &["5433".into()],
            "app user",
            Some("p@ss:w/rd"),
            "my-db",
            Some("disable"),
            None,
        );
        assert_eq!(
            url,
            "postgresql://app%20user:p%40ss%3Aw%2Frd@127.0.0.1:5433/my-db?sslmode=disable"
        );
        assert_eq!(
            without_password(&url),
            "postgresql://app%20user:***@127.0.0.1:5433/my-db?sslmode=disable"
        );
        let socket = database_url(
            &["/var/run/postgresql".into()],
            &["5432".into()],
            "postgres",
            None,
            "app",
            None,
            None,
        );
        assert_eq!(
            socket,
            "postgresql://postgres@%2Fvar%2Frun%2Fpostgresql:5432/app"
        );
        assert_eq!(without_password(&socket), socket);
    }

    #[tokio::test]
    async fn a_command_s_output_and_status_are_kept() {
        let target = crate::connect::resolve(
            Some("postgres://u:secret@127.0.0.1:1/db?sslmode=disable"),
            None,
        )
        .unwrap();
        let settings = Settings::defaults(std::path::Path::new("/tmp"), PathBuf::from("/tmp"));
        let invocation = Invocation::new(
            "echo \"$PGOPTIONS\"; echo \"$DATABASE_URL\"; for i in $(seq 1 60); do echo line $i >&2; done; exit 3",
            std::path::Path::new(""),
            &target,
            &settings,
        );
        let ran = run(&invocation, false, &crate::stop::Stop::default())
            .await
            .unwrap();
        assert_eq!(ran.exit_code, Some(3));
        assert!(!ran.succeeded());
        assert_eq!(
            ran.stdout_tail,
            vec![
                "-c lock_timeout=2000 -c statement_timeout=3600000".to_string(),
                "postgresql://u:secret@127.0.0.1:1/db?sslmode=disable".to_string()
            ]
        );
        assert_eq!(ran.stderr_tail.len(), TAIL_LINES);
        assert_eq!(ran.stderr_tail.last().unwrap(), "line 60");
        assert_eq!(ran.last_words(1), vec!["line 60".to_string()]);
        assert!(
            invocation
                .shown_env()
                .iter()
                .all(|(k, v)| k != "PGPASSWORD" && !v.contains("secret"))
        );
    }
}

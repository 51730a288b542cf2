//! `pgmaint demo`: a newcomer's first command, the product in a few
//! seconds. It starts a throwaway cluster, loads a small app with expired
//! data, writes a `pgmaint.toml` beside it, and then runs pgmaint as a
//! person would type it there: each step is this binary started in that
//! directory, so what it prints and what the audit trail records are what a
//! user gets. The tour: a plan, the nightly schedule's tasks (purges, one
//! backed up with its cascades, an archive, a refresh, partitions, and a
//! vacuum of what the purges changed), a restore of that backup, a health
//! report, the history, and the daemon answering on its API and /metrics.
//!
//! Every line fits 80 columns. Commands whose own output is wider (history
//! and health are tables of many columns) are shown in short from their
//! `--json`, and say so. Without `--keep` the daemon is stopped and the
//! cluster and its directory are removed.

use crate::unnamed::Unnamed;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::CliError;
use super::run::wrap;
use crate::cli::{Cli, DemoArgs};
use crate::cluster::{Cluster, ClusterOptions};
use crate::output;

/// Output is read on an 80-column terminal.
const WIDTH: usize = 80;

const SAMPLE_APP: &str = r#"
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    is_deleted boolean NOT NULL DEFAULT false,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    total numeric(10, 2) NOT NULL,
    placed_at timestamptz NOT NULL
);
CREATE TABLE password_reset_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE TABLE sessions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
CREATE TABLE request_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL,
    path text NOT NULL,
    status int NOT NULL
);
CREATE INDEX ON request_logs (created_at);
CREATE TABLE ledger (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    booked_at timestamptz NOT NULL
);
CREATE TABLE events (
    at timestamptz NOT NULL,
    kind text NOT NULL
) PARTITION BY RANGE (at);
-- A partition for each of the last eight months and this one.
DO $$
DECLARE month timestamptz;
BEGIN
    FOR i IN 0..8 LOOP
        month := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - i * interval '1 month';
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                       'events_p' || to_char(month AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       month, month + interval '1 month');
    END LOOP;
END $$;

-- 500 users; the last 40 deleted their accounts two months ago.
INSERT INTO users (email, is_deleted, deleted_at)
SELECT 'user' || i || '@example.com', i > 460, CASE WHEN i > 460 THEN now() - interval '60 days' END
  FROM generate_series(1, 500) i;
-- Orders of the others, and two of deleted users: those two must stay.
INSERT INTO orders (user_id, total, placed_at)
SELECT 1 + i % 460, (i % 90) + 9.99, now() - (i % 300) * interval '1 day' FROM generate_series(1, 2000) i;
INSERT INTO orders (user_id, total, placed_at) VALUES (461, 19.99, now() - interval '70 days'), (462, 5.00, now() - interval '65 days');
-- A third of the tokens expired, a third used, a third still valid.
INSERT INTO password_reset_tokens (user_id, token, expires_at, used_at)
SELECT 1 + i % 500, md5(i::text),
       now() + CASE i % 3 WHEN 0 THEN interval '-2 days' ELSE interval '1 day' END,
       CASE WHEN i % 3 = 1 THEN now() - interval '1 hour' END
  FROM generate_series(1, 3000) i;
INSERT INTO sessions (user_id, expires_at)
SELECT 1 + i % 500, now() + (i % 20 - 10) * interval '1 day' FROM generate_series(1, 20000) i;
-- Two weeks of request logs, oldest first, as an app writes them.
INSERT INTO request_logs (created_at, path, status)
SELECT now() - interval '14 days' + i * interval '6 seconds', '/api/items/' || i % 97, (ARRAY[200, 200, 200, 404, 500])[1 + i % 5]
  FROM generate_series(1, 200000) i;
-- Two years of bookings.
INSERT INTO ledger (account, amount, booked_at)
SELECT 'acct-' || i % 50, (i % 400) - 200.5, now() - (730 - i * 730 / 5000) * interval '1 day'
  FROM generate_series(1, 5000) i;
INSERT INTO events (at, kind)
SELECT now() - (i % 240) * interval '1 day', (ARRAY['signup', 'login', 'purchase'])[1 + i % 3]
  FROM generate_series(1, 24000) i;
CREATE MATERIALIZED VIEW leaderboard AS
SELECT user_id, count(*) AS orders, sum(total) AS spent FROM orders GROUP BY user_id;
CREATE UNIQUE INDEX ON leaderboard (user_id);
ANALYZE;
"#;

const SAMPLE_CONFIG: &str = r#"# pgmaint's config for the demo app. Every key is explained in the README.
[database]
url = "{url}"
lock_timeout = "1s"

[defaults]
batch_size = 5000

[backups]
dir = "backups"

[api]
listen = "{listen}"
token = "{token}"                 # a real deployment: "${PGMAINT_API_TOKEN}"

[tasks.reset_tokens]
kind = "purge"
description = "Reset tokens that expired or were used"
table = "password_reset_tokens"
where = "expires_at < now() OR used_at IS NOT NULL"

[tasks.sessions]
kind = "purge"
table = "sessions"
where = "expires_at < now()"

[tasks.request_logs]
kind = "purge"
description = "Request logs are kept for 7 days"
table = "request_logs"
time_column = "created_at"
older_than = "7 days"
batch_size = 10000

[tasks.deleted_users]
kind = "purge"
description = "Accounts deleted more than 30 days ago"
table = "users"
where = "is_deleted AND deleted_at < now() - interval '30 days'"
severity = "high"                 # so it backs up what it removes

[tasks.old_ledger]
kind = "archive"
table = "ledger"                  # to ledger_archive, created like ledger
time_column = "booked_at"
older_than = "1 year"

[tasks.leaderboard]
kind = "refresh"
views = ["leaderboard"]

[tasks.events]
kind = "partitions"
table = "events"
interval = "1 month"
premake = 3
retention = "6 months"
retention_action = "drop"

[tasks.vacuum]
kind = "vacuum"
auto = true                       # the tables the tasks before it changed

[schedules.nightly]
cron = "0 3 * * *"
timezone = "UTC"
tasks = ["reset_tokens", "sessions", "request_logs", "deleted_users", "old_ledger", "leaderboard", "events", "vacuum"]
"#;

pub async fn demo(cli: &Cli, args: &DemoArgs) -> Result<bool, CliError> {
    let started = Instant::now();
    let tour = Tour {
        exe: std::env::current_exe()
            .map_err(|e| CliError::Failed(format!("cannot find the pgmaint binary: {e}")))?,
        dir: PathBuf::new(),
        quiet: cli.quiet || cli.json,
        steps: Vec::new(),
    };
    tour.say("Starting a throwaway PostgreSQL cluster...");
    let cluster = tokio::task::spawn_blocking({
        let keep = args.keep;
        move || {
            Cluster::start(ClusterOptions {
                fsync: false,
                keep,
                scratch: false,
            })
        }
    })
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?
    .map_err(|e| {
        // A machine without the server binaries (or a user to run them as)
        // is a setup problem, exit 2: nothing was started or changed.
        if e.is_setup() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    })?;
    let mut tour = Tour {
        dir: cluster.dir.clone(),
        ..tour
    };
    let mut daemon = None;
    let result = tour.run(&cluster, &mut daemon).await;
    if args.keep {
        tour.kept(&cluster, daemon.as_ref());
        std::mem::forget(cluster);
    } else {
        if let Some(daemon) = daemon.take() {
            daemon.stop();
        }
        cluster.stop();
        // The server's own files went with it; what pgmaint wrote here
        // (config, backups, the daemon's log) goes too.
        let _ = std::fs::remove_dir_all(&tour.dir);
        tour.say(&format!(
            "\nThe daemon and the throwaway cluster were stopped and {} removed.\nRun `pgmaint demo --keep` to explore them yourself.",
            tour.dir.display()
        ));
    }
    tour.say(&format!("Done in {:.1}s.", started.elapsed().as_secs_f64()));
    if cli.json {
        super::print_json(&serde_json::json!({
            "status": if result.is_ok() { "succeeded" } else { "failed" },
            "kept": args.keep,
            "dir": tour.dir.display().to_string(),
            "steps": tour.steps,
            "duration_ms": started.elapsed().as_millis() as u64,
        }));
    }
    result
}

/// The daemon the tour started.
struct Daemon {
    child: std::process::Child,
    url: String,
    token: String,
}

impl Daemon {
    /// SIGTERM, as systemd or Kubernetes stops it, then its exit.
    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child we started and still own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Where the tour runs, and what it has run.
struct Tour {
    exe: PathBuf,
    dir: PathBuf,
    quiet: bool,
    /// Each command run, for `--json`.
    steps: Vec<serde_json::Value>,
}

impl Tour {
    async fn run(
        &mut self,
        cluster: &Cluster,
        daemon: &mut Option<Daemon>,
    ) -> Result<bool, CliError> {
        let loading = Instant::now();
        let admin = crate::connect::connect(&crate::connect::resolve(
            Some(&cluster.url("postgres")),
            None,
        )?)
        .await?;
        admin.batch_execute("CREATE DATABASE demo_app").await?;
        let url = cluster.url("demo_app");
        let app = crate::connect::connect(&crate::connect::resolve(Some(&url), None)?).await?;
        app.batch_execute(SAMPLE_APP).await?;
        let listen = free_address()?;
        let token = api_token()?;
        let config_path = self.dir.join("pgmaint.toml");
        std::fs::write(
            &config_path,
            SAMPLE_CONFIG
                .replace("{url}", &url)
                .replace("{listen}", &listen)
                .replace("{token}", &token),
        )
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", config_path.display())))?;
        self.say(&format!(
            "Loaded a sample app into database demo_app in {:.1}s: 500 users (40 deleted their accounts two months ago), 2,002 orders, 3,000 password reset tokens (2,000 expired or used), 20,000 sessions (half expired), 200,000 request logs over 14 days, 5,000 ledger entries over two years, a leaderboard materialized view, and events partitioned by month over the last 9 months.",
            loading.elapsed().as_secs_f64()
        ));
        self.say(&format!(
            "The config is {}; every step below runs in {}, as you would.",
            config_path.display(),
            self.dir.display()
        ));

        self.step(
            &["init", "-q"],
            "pgmaint's own schema: runs, audit trail, backups index",
        )?;
        self.step(
            &["plan", "deleted_users", "request_logs"],
            "what a run would do; changes nothing",
        )?;
        self.step(
            &["run", "--schedule", "nightly"],
            "the nightly schedule's tasks, now",
        )?;

        let backups = self.json(&["backups", "--json"])?;
        let backup = backups["backups"]
            .as_array()
            .and_then(|list| list.iter().find(|b| b["task"] == "deleted_users"))
            .ok_or_else(|| CliError::Failed("the nightly run made no backup".into()))?;
        let id = backup["id"].to_string();
        let users_before: i64 = app.row("SELECT count(*) FROM users", &[]).await?.get(0);
        self.say(&format!(
            "\nBackup {id} holds {} rows: the users deleted_users removed and what their ON DELETE CASCADE took. Restore puts all of it back:",
            backup["rows"]
        ));
        self.step(&["restore", &id], "rows still there are left alone")?;
        let users_after: i64 = app.row("SELECT count(*) FROM users", &[]).await?.get(0);
        self.say(&format!(
            "  users: {users_before} before the restore, {users_after} after."
        ));

        self.health()?;
        self.history()?;
        *daemon = Some(self.daemon(&listen, &token).await?);

        self.say(
            "\nWhat happened: the plan said what each task would remove, and the run removed exactly that, in batches under lock_timeout; deleted_users kept the 2 users whose orders still reference them, and its backup put the others back. History records every run. In production, put your tasks and schedules in pgmaint.toml and run `pgmaint daemon` (deploy/ has a systemd unit and a Kubernetes Deployment): it runs each fire once however many daemons run, and serves /api/v1 and /metrics.",
        );
        Ok(true)
    }

    /// Runs `pgmaint ARGS` in the tour's directory, showing the command
    /// and its output; fails the demo if it fails.
    fn step(&mut self, args: &[&str], why: &str) -> Result<String, CliError> {
        self.say(&format!("\n$ pgmaint {}   # {why}", args.join(" ")));
        let stdout = self.pgmaint(args)?;
        if !self.quiet {
            for line in stdout.lines() {
                println!("{}", fit(line));
            }
        }
        Ok(stdout)
    }

    /// Runs `pgmaint ARGS` (with `--json`) without showing it.
    fn json(&mut self, args: &[&str]) -> Result<serde_json::Value, CliError> {
        let stdout = self.pgmaint(args)?;
        serde_json::from_str(&stdout).map_err(|e| {
            CliError::Failed(format!(
                "pgmaint {} printed no JSON ({e}):\n{stdout}",
                args.join(" ")
            ))
        })
    }

    fn pgmaint(&mut self, args: &[&str]) -> Result<String, CliError> {
        let started = Instant::now();
        let output = self
            .command(args)
            .output()
            .map_err(|e| CliError::Failed(format!("cannot run {}: {e}", self.exe.display())))?;
        let code = output.status.code().unwrap_or(-1);
        self.steps.push(serde_json::json!({
            "command": format!("pgmaint {}", args.join(" ")),
            "exit_code": code,
            "duration_ms": started.elapsed().as_millis() as u64,
        }));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if code != 0 {
            return Err(CliError::Failed(format!(
                "the demo's step `pgmaint {}` exited {code}:\n{stdout}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(stdout)
    }

    /// `pgmaint ARGS` in the tour's directory, where it finds
    /// `pgmaint.toml`, with nothing from the caller's environment that
    /// would point it elsewhere.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .current_dir(&self.dir)
            .env_remove("DATABASE_URL")
            .env_remove("PGMAINT_CONFIG")
            // Tables and prose fit the 80 columns the demo is read in.
            .env("COLUMNS", WIDTH.to_string())
            .stdin(Stdio::null());
        command
    }

    /// The health report, in short: its status, then each check that is
    /// not ok with what it found.
    fn health(&mut self) -> Result<(), CliError> {
        self.say("\n$ pgmaint health   # in short, from --json; without it, every check");
        let report = self.json(&["health", "--json"])?;
        let checks = report["checks"].as_array().cloned().unwrap_or_default();
        let count = |status: &str| checks.iter().filter(|c| c["status"] == status).count();
        let counts: Vec<String> = ["ok", "warning", "critical", "unknown"]
            .into_iter()
            .filter(|s| count(s) > 0)
            .map(|s| format!("{} {s}", count(s)))
            .collect();
        self.say(&format!(
            "Health: {} ({} checks: {})",
            report["status"].as_str().unwrap_or("?"),
            checks.len(),
            counts.join(", ")
        ));
        for check in checks.iter().filter(|c| c["status"] != "ok") {
            let example = check["findings"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["status"] != "ok"))
                .map(|f| {
                    format!(
                        "; e.g. {}: {}; {}",
                        f["object"].as_str().unwrap_or("?"),
                        f["value"].as_str().unwrap_or("?"),
                        f["advice"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            self.say_indented(&format!(
                "{} {}: {}{example}",
                check["status"].as_str().unwrap_or("?"),
                check["name"].as_str().unwrap_or("?"),
                check["summary"].as_str().unwrap_or("")
            ));
        }
        if checks
            .iter()
            .any(|c| c["name"] == "security" && c["status"] != "ok")
        {
            self.say("(The throwaway cluster lets local connections in without a password, which the security check rightly reports.)");
        }
        Ok(())
    }

    /// The audit trail, in short: one line per run.
    fn history(&mut self) -> Result<(), CliError> {
        self.say("\n$ pgmaint history   # in short, from --json: the audit trail");
        let history = self.json(&["history", "--limit", "5", "--json"])?;
        for run in history["runs"].as_array().into_iter().flatten() {
            let tasks = run["tasks"].as_array().cloned().unwrap_or_default();
            let rows: i64 = tasks.iter().filter_map(|t| t["rows"].as_i64()).sum();
            let ms: i64 = tasks.iter().filter_map(|t| t["duration_ms"].as_i64()).sum();
            let names: Vec<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
            let what = if names.len() == 1 {
                names[0].to_string()
            } else {
                format!("{} tasks", names.len())
            };
            self.say_indented(&format!(
                "run {} by {} {}: {}{}, {what}, {} rows, {}",
                run["run_id"],
                run["trigger"].as_str().unwrap_or("?"),
                run["triggered_by"].as_str().unwrap_or("?"),
                run["status"].as_str().unwrap_or("?"),
                if run["dry_run"] == true {
                    " (dry run)"
                } else {
                    ""
                },
                output::count(rows.max(0) as u64),
                output::duration_ms(ms.max(0) as u64)
            ));
        }
        Ok(())
    }

    /// Starts `pgmaint daemon` in the tour's directory and asks it what a
    /// monitor would: its status through the API (with the token) and
    /// /metrics.
    async fn daemon(&mut self, listen: &str, token: &str) -> Result<Daemon, CliError> {
        self.say("\n$ pgmaint daemon &   # runs the schedules, serves the API and /metrics");
        let log = std::fs::File::create(self.dir.join("daemon.log"))
            .map_err(|e| CliError::Failed(format!("cannot write the daemon's log: {e}")))?;
        let mut command = self.command(&["daemon"]);
        command
            .stdout(
                log.try_clone()
                    .map_err(|e| CliError::Failed(e.to_string()))?,
            )
            .stderr(log);
        // Its own process group: a Ctrl-C meant for the terminal later does
        // not reach a daemon left running by --keep.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .map_err(|e| CliError::Failed(format!("cannot start the daemon: {e}")))?;
        self.steps
            .push(serde_json::json!({"command": "pgmaint daemon", "pid": child.id()}));
        let daemon = Daemon {
            child,
            url: format!("http://{listen}"),
            token: token.to_string(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let up = http.get(format!("{}/healthz", daemon.url)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
                daemon.stop();
                return Err(CliError::Failed(format!(
                    "the daemon did not answer on {listen} within 15s; its log:\n{log}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let failed = |e: reqwest::Error| CliError::Failed(format!("asking the daemon: {e}"));
        self.say(&format!(
            "\n$ curl -H \"Authorization: Bearer $TOKEN\" {}/api/v1/status",
            daemon.url
        ));
        let status: serde_json::Value = http
            .get(format!("{}/api/v1/status", daemon.url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)?;
        let pretty = serde_json::to_string_pretty(&status).unwrap_or_default();
        if !self.quiet {
            for line in pretty.lines() {
                println!("{}", fit(line));
            }
        }
        self.say(&format!(
            "\n$ curl {}/metrics   # Prometheus; a few of its lines",
            daemon.url
        ));
        let metrics = http
            .get(format!("{}/metrics", daemon.url))
            .send()
            .await
            .map_err(failed)?
            .text()
            .await
            .map_err(failed)?;
        let shown: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("pgmaint_up ")
                    || (l.starts_with("pgmaint_task_rows_total") && l.contains("request_logs"))
                    || (l.starts_with("pgmaint_task_runs_total") && l.contains("deleted_users"))
            })
            .collect();
        for line in shown {
            self.say(&fit(line));
        }
        Ok(daemon)
    }

    /// What `--keep` leaves running, and how to use and stop it.
    fn kept(&self, cluster: &Cluster, daemon: Option<&Daemon>) {
        if self.quiet {
            return;
        }
        let dir = self.dir.display();
        let lines = |text: String| {
            for line in text.lines() {
                println!("{}", fit(line));
            }
        };
        lines(format!(
            "\nLeft running for you:\n  database URL: {}\n  config:       {dir}/pgmaint.toml\n  try:          cd {dir} && pgmaint tasks",
            cluster.url("demo_app")
        ));
        if let Some(daemon) = daemon {
            let pid = daemon.child.id();
            lines(format!(
                "  daemon:       pid {pid}, its log in {dir}/daemon.log\n  API token:    {}\n  its status:",
                daemon.token
            ));
            self.shell(&format!(
                "curl -H \"Authorization: Bearer {}\" {}/api/v1/status",
                daemon.token, daemon.url
            ));
            self.say("  its metrics:");
            self.shell(&format!("curl {}/metrics", daemon.url));
            self.say("  to stop it:");
            self.shell(&format!("kill {pid}"));
        }
        self.say("  to stop the cluster and remove what the demo made:");
        self.shell(&cluster.stop_command());
        self.shell(&format!("rm -rf {dir}"));
    }

    /// A shell command to copy, broken at spaces with ` \` where it is
    /// wider than a line.
    fn shell(&self, command: &str) {
        if self.quiet {
            return;
        }
        let mut lines: Vec<String> = Vec::new();
        let mut line = "    ".to_string();
        for word in command.split(' ') {
            if line.trim().is_empty() {
                line.push_str(word);
            } else if line.chars().count() + 1 + word.chars().count() + 2 > WIDTH {
                lines.push(format!("{line} \\"));
                line = format!("      {word}");
            } else {
                line.push(' ');
                line.push_str(word);
            }
        }
        lines.push(line);
        for line in lines {
            println!("{line}");
        }
    }

    fn say(&self, text: &str) {
        if self.quiet {
            return;
        }
        for paragraph in text.split('\n') {
            let indent: String = paragraph.chars().take_while(|c| *c == ' ').collect();
            println!("{}", wrap(paragraph, &indent, &indent));
        }
    }

    fn say_indented(&self, text: &str) {
        if !self.quiet {
            println!("{}", wrap(text, "  ", "    "));
        }
    }
}

/// A line of another command's output within [`WIDTH`] columns: prose is
/// wrapped under its own indent. Tables (pgmaint's own output module sizes
/// them) are left as they are.
fn fit(line: &str) -> String {
    if line.chars().count() <= WIDTH || line.contains(['│', '┆', '─', '═']) {
        return line.to_string();
    }
    let indent: String = line.chars().take_while(|c| *c == ' ').collect();
    wrap(line.trim_start(), &indent, &format!("{indent}  "))
}

/// A free local address for the daemon to listen on.
fn free_address() -> Result<String, CliError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| CliError::Failed(format!("no free local port: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(address.to_string())
}

/// A random API token (the API wants at least 32 characters).
fn api_token() -> Result<String, CliError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open(Path::new("/dev/urandom"))
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CliError::Failed(format!("cannot read /dev/urandom: {e}")))?;
    Ok(format!(
        "demo-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

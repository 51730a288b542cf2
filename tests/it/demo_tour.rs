//! `pgmaint demo` on a real cluster: one command that shows the product
//! (purges with a backup and its restore, an archive, a refresh, partitions,
//! a vacuum after the purges, a health report, the history, the daemon's
//! API and /metrics) in seconds, within 80 columns when its output is not a
//! terminal, and leaves nothing behind unless `--keep`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn demo(args: &[&str]) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_pgmaint"))
        .arg("demo")
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PGMAINT_CONFIG")
        .output()
        .expect("run pgmaint demo");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

/// The output's words one space apart: prose is wrapped.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The word after `marker` in `text`, without trailing punctuation.
fn after<'t>(text: &'t str, marker: &str) -> &'t str {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"))
        + marker.len();
    text[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches([',', '.', ':', ';', ')', '"'])
}

/// The directory the demo made: the first path under the temp dir that
/// its output names.
fn demo_dir(stdout: &str) -> Option<PathBuf> {
    let prefix = std::env::temp_dir().join("pgmaint-pg-");
    let prefix = prefix.to_str()?;
    let start = stdout.find(prefix)?;
    let name: String = stdout[start + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    Some(PathBuf::from(format!("{prefix}{name}")))
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn the_demo_shows_each_part_of_the_product_in_seconds_within_80_columns() {
    let (code, stdout, stderr, took) = demo(&[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("pgmaint demo took {:.1}s", took.as_secs_f64());
    assert!(took < Duration::from_secs(60), "took {took:?}");
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 80,
            "a line of {} columns:\n{line}\nin:\n{stdout}",
            line.chars().count()
        );
    }
    let prose = words(&stdout);
    let has = |expected: &str| {
        assert!(prose.contains(expected), "no {expected:?} in:\n{stdout}");
    };

    // The plan, in words.
    has("$ pgmaint plan deleted_users request_logs");
    has("Would delete 38 rows of public.users in 1 batch, backing each batch up");
    has("Keeps 2 rows still referenced");
    // The run of the nightly schedule: every task succeeded.
    has("$ pgmaint run --schedule nightly");
    has("Run 2 succeeded");
    for task in [
        "reset_tokens",
        "sessions",
        "request_logs",
        "deleted_users",
        "old_ledger",
        "leaderboard",
        "events",
        "vacuum",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("│ {task} ")))
            .unwrap_or_else(|| panic!("no row for {task} in:\n{stdout}"));
        assert!(row.contains("succeeded"), "{row}");
    }
    // The archive moved rows.
    let archive = stdout
        .lines()
        .find(|l| l.starts_with("│ old_ledger "))
        .unwrap();
    assert!(archive.contains(" archive "), "{archive}");
    let moved: u64 = archive
        .split('┆')
        .nth(3)
        .unwrap()
        .trim()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(moved > 2000, "{archive}");
    // The refresh, the partitions, the vacuum after the purges.
    has("leaderboard: refreshed 1 of 1 materialized view(s)");
    has("events: created 3 partition(s), dropped 2 partition(s)");
    let vacuumed = after(&prose, "vacuum: vacuumed ");
    assert!(vacuumed.parse::<u32>().unwrap() >= 4, "{stdout}");
    // The backup, and the restore of that very backup.
    let backup = after(&prose, "removed rows are in backup ");
    has(&format!("$ pgmaint restore {backup}"));
    has(&format!(
        "Backup {backup} into public.users: put back 38 of 38 row(s)"
    ));
    has("users: 462 before the restore, 500 after.");
    // Health, history, the daemon.
    let health = after(&prose, "Health: ");
    // A fresh database pgmaint just cleaned is never critical (#14): no
    // "never vacuumed" on new tables, no dead rows the purges just left,
    // no critical `trust` in the throwaway cluster's pg_hba.conf.
    assert!(
        ["ok", "warning"].contains(&health),
        "health {health:?} in:\n{stdout}"
    );
    has("$ pgmaint history");
    has("succeeded, 8 tasks");
    has("/api/v1/status");
    has("\"reachable\": true");
    has("pgmaint_up 1");
    // The closing lines point to the daemon, not to cron.
    let closing = &prose[prose.find("What happened").expect("a closing")..];
    assert!(closing.contains("run `pgmaint daemon`"), "{closing}");
    assert!(!prose.contains("cron"), "{stdout}");

    // Nothing is left: no daemon, no cluster, no directory.
    // The status the daemon answered names it: "daemon": "user@host pid N".
    let daemon: u32 = after(&prose, " pid ").parse().unwrap();
    assert!(!process_exists(daemon), "daemon {daemon} still runs");
    let dir = demo_dir(&stdout).expect("the demo names its directory");
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

/// What `demo --keep` leaves running, stopped and removed when the test
/// ends however it ends.
struct Kept {
    daemon: Option<u32>,
    stop_cluster: Option<String>,
    dir: Option<PathBuf>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        match (&self.stop_cluster, &self.dir) {
            (Some(stop), _) => {
                let _ = Command::new("sh").args(["-c", stop]).status();
            }
            // The test failed before it read the stop command: stop the
            // server in the directory as the demo would have said.
            (None, Some(dir)) => {
                if let Ok(bin) = pgmaint::cluster::find_bin_dir() {
                    let pg_ctl = format!(
                        "{} -D {}/data stop -m fast",
                        bin.join("pg_ctl").display(),
                        dir.display()
                    );
                    let _ = Command::new("sh")
                        .args([
                            "-c",
                            &format!("runuser -u postgres -- {pg_ctl} || {pg_ctl}"),
                        ])
                        .status();
                }
            }
            (None, None) => {}
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn with_keep_the_daemon_stays_up_serving_its_api_and_metrics() {
    let (code, stdout, stderr, _) = demo(&["--keep"]);
    let prose = words(&stdout);
    let mut kept = Kept {
        daemon: None,
        stop_cluster: None,
        dir: demo_dir(&stdout),
    };
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    kept.daemon = Some(after(&prose, "daemon: pid ").parse().unwrap());
    // The printed stop command, its ` \` continuations joined.
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("to stop the cluster"))
        .unwrap_or_else(|| panic!("no stop command in:\n{stdout}"));
    let mut stop = String::new();
    for line in &lines[at + 1..] {
        let line = line.trim();
        match line.strip_suffix(" \\") {
            Some(part) => {
                stop.push_str(part);
                stop.push(' ');
            }
            None => {
                stop.push_str(line);
                break;
            }
        }
    }
    kept.stop_cluster = Some(stop);
    for line in stdout.lines() {
        assert!(line.chars().count() <= 80, "{line}");
    }

    let token = after(&prose, "API token: ");
    assert!(token.len() >= 32, "{token}");
    let status = format!(
        "http://{}",
        after(&prose, "http://")
            .split('/')
            .next()
            .map(|host| format!("{host}/api/v1/status"))
            .unwrap()
    );
    let (code, body) = common::get_blocking(&status, Some(token));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"reachable\":true"), "{body}");
    let (code, _) = common::get_blocking(&status, None);
    assert_eq!(code, 401, "the API needs its token");
    let metrics = status.replace("/api/v1/status", "/metrics");
    let (code, body) = common::get_blocking(&metrics, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("pgmaint_up 1"), "{body}");

    // The printed commands stop what was kept.
    let daemon = kept.daemon.take().unwrap();
    assert!(
        Command::new("kill")
            .arg(daemon.to_string())
            .status()
            .unwrap()
            .success()
    );
    let stop = kept.stop_cluster.clone().unwrap();
    let stopped = Command::new("sh").args(["-c", &stop]).output().unwrap();
    assert!(
        stopped.status.success(),
        "{stop}: {}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    // Stopped: what is left to do at the end is removing the directory.
    kept.stop_cluster = Some("true".into());
}

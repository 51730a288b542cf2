//! What the runner does around every run, whatever started it (a fire, the
//! API's run-now of a schedule or a task, or `pgmaint run`): one log line
//! when the run is recorded, one when it ends, and its outcome sent to the
//! notifiers and recorded in `notifications`. A dry run is logged and
//! notifies nobody: it changed nothing. Only the runner calls this, so no
//! trigger can forget it.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::config::{Config, ScheduleConfig};
use crate::notify::{self, Event, Origin};
use crate::status::{RunReport, Status};

/// What started a run.
pub enum Started {
    /// A schedule's fire, claimed by this daemon.
    Fire {
        schedule: ScheduleConfig,
        at: DateTime<Utc>,
    },
    /// `POST /api/v1/schedules/{name}/run`: the schedule's tasks, now.
    Schedule(ScheduleConfig),
    /// `POST /api/v1/tasks/{name}/run`.
    Task(String),
    /// `pgmaint run` (or `plan`): a config schedule's tasks when it named
    /// one with `--schedule`, which then routes the outcome as a fire
    /// would, or the tasks it named.
    Cli {
        schedule: Option<ScheduleConfig>,
        tasks: Vec<String>,
    },
    /// `pgmaint migrate up/down`, or `POST /api/v1/migrations/up`.
    Migrate { command: String, via_api: bool },
}

/// Who started a run and the database it runs on, for its log lines and
/// notifications.
pub struct Notice {
    pub started: Started,
    pub origin: Origin,
}

impl Started {
    fn trigger(&self) -> &'static str {
        match self {
            Started::Fire { .. } => "schedule",
            Started::Schedule(_) | Started::Task(_) => "api",
            Started::Cli { .. } => "cli",
            Started::Migrate { via_api: true, .. } => "api",
            Started::Migrate { .. } => "cli",
        }
    }

    /// `schedule nightly` or `task mark`, as titles and log lines say it.
    fn subject(&self) -> String {
        match self {
            Started::Fire { schedule, .. } | Started::Schedule(schedule) => {
                format!("schedule {}", schedule.name)
            }
            Started::Task(name) => format!("task {name}"),
            Started::Cli {
                schedule: Some(schedule),
                ..
            } => format!("schedule {}", schedule.name),
            Started::Cli { tasks, .. } => match tasks.as_slice() {
                [one] => format!("task {one}"),
                many => format!("tasks {}", many.join(", ")),
            },
            Started::Migrate { command, .. } => command.clone(),
        }
    }

    /// The notifiers that hear of an outcome at `level`.
    fn recipients(&self, config: &Config, level: &str) -> Vec<String> {
        let notifiers = &config.notifiers;
        match self {
            Started::Fire { schedule, .. }
            | Started::Schedule(schedule)
            | Started::Cli {
                schedule: Some(schedule),
                ..
            } => {
                // A config schedule's notify may be a plain list; an API
                // schedule's list is every outcome.
                let plain = config.schedule(&schedule.name).is_some()
                    && notify::looks_plain(&schedule.notify);
                notify::for_schedule(notifiers, &schedule.notify, plain, level)
            }
            Started::Task(_) | Started::Cli { .. } | Started::Migrate { .. } => {
                notify::every_wanting(notifiers, level)
            }
        }
    }
}

/// Logs a run that was just recorded.
pub(crate) fn started(what: &Started, run_id: i64, dry_run: bool) {
    match what {
        Started::Fire { at, .. } => {
            tracing::info!(run_id, trigger = what.trigger(), fire = %at, dry_run, "run started: {}", what.subject())
        }
        _ => tracing::info!(
            run_id,
            trigger = what.trigger(),
            dry_run,
            "run started: {}",
            what.subject()
        ),
    }
}

/// The event's level for a run's outcome.
fn level(report: &RunReport) -> &'static str {
    match report.status {
        Status::Succeeded if report.unconfirmed.is_empty() => notify::SUCCESS,
        Status::Succeeded | Status::Cancelled | Status::Skipped => notify::WARNING,
        _ => notify::FAILURE,
    }
}

/// Logs a finished run and sends its outcome; `book` records what was
/// sent.
pub(crate) async fn finished(
    config: &Config,
    notice: &Notice,
    book: &Client,
    report: &RunReport,
    since: Instant,
) {
    let what = &notice.started;
    let rows: u64 = report.tasks.iter().map(|t| t.rows).sum();
    let duration_ms = since.elapsed().as_millis() as u64;
    let subject = what.subject();
    let status = report.status;
    // The CLI prints its own report; its log stays at warnings.
    let cli = matches!(
        what,
        Started::Cli { .. } | Started::Migrate { via_api: false, .. }
    );
    if matches!(status, Status::Failed | Status::Interrupted) && !cli {
        tracing::warn!(run_id = report.run_id, trigger = what.trigger(), %status, rows, duration_ms, "run finished: {subject} {status}");
    } else {
        tracing::info!(run_id = report.run_id, trigger = what.trigger(), %status, rows, duration_ms, "run finished: {subject} {status}");
    }
    if report.dry_run {
        return;
    }
    crate::task_alerts::evaluate(config, &notice.origin, book, report).await;
    let level = level(report);
    let recipients = what.recipients(config, level);
    if recipients.is_empty() {
        return;
    }
    let failures: Vec<String> = report
        .tasks
        .iter()
        .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.name)))
        .collect();
    let text = if failures.is_empty() {
        report
            .tasks
            .iter()
            .map(|t| format!("{}: {} ({} rows)", t.name, t.status, t.rows))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        failures.join("\n")
    };
    let mut details = serde_json::json!({ "trigger": what.trigger(), "run": report });
    match what {
        Started::Fire { schedule, at } => {
            details["schedule"] = schedule.name.clone().into();
            details["scheduled_for"] = at.to_rfc3339().into();
        }
        Started::Schedule(schedule) => details["schedule"] = schedule.name.clone().into(),
        Started::Task(name) => details["task"] = name.clone().into(),
        Started::Cli { schedule, tasks } => match schedule {
            Some(schedule) => details["schedule"] = schedule.name.clone().into(),
            None => details["tasks"] = tasks.clone().into(),
        },
        Started::Migrate { command, .. } => details["command"] = command.clone().into(),
    }
    let event = Event {
        level,
        title: format!("pgmaint: {subject} {status} (run {})", report.run_id),
        text,
        details,
    }
    .about(&notice.origin);
    notify::send(
        &config.notifiers,
        &recipients,
        &event,
        Some((book, &config.state_schema)),
    )
    .await;
}

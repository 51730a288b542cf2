//! What the daemon does around every run it starts, whatever started it (a
//! fire, or the API's run-now of a schedule or a task): one log line when
//! the run is recorded, one when it ends, and its outcome sent to the
//! notifiers and recorded in `notifications`. A dry run is logged and
//! notifies nobody: it changed nothing.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::Shared;
use crate::config::ScheduleConfig;
use crate::notify::{self, Event};
use crate::runner::RunReport;
use crate::status::Status;

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
}

impl Started {
    fn trigger(&self) -> &'static str {
        match self {
            Started::Fire { .. } => "schedule",
            Started::Schedule(_) | Started::Task(_) => "api",
        }
    }

    /// `schedule nightly` or `task mark`, as titles and log lines say it.
    fn subject(&self) -> String {
        match self {
            Started::Fire { schedule, .. } | Started::Schedule(schedule) => {
                format!("schedule {}", schedule.name)
            }
            Started::Task(name) => format!("task {name}"),
        }
    }

    /// The notifiers that hear of an outcome at `level`.
    fn recipients(&self, shared: &Shared, level: &str) -> Vec<String> {
        let notifiers = &shared.config.notifiers;
        match self {
            Started::Fire { schedule, .. } | Started::Schedule(schedule) => {
                // A config schedule's notify may be a plain list; an API
                // schedule's list is every outcome.
                let plain = shared.config.schedule(&schedule.name).is_some()
                    && notify::looks_plain(&schedule.notify);
                notify::for_schedule(notifiers, &schedule.notify, plain, level)
            }
            Started::Task(_) => notify::every_wanting(notifiers, level),
        }
    }
}

/// Logs a run that was just recorded.
pub fn started(what: &Started, run_id: i64, dry_run: bool) {
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
pub async fn finished(
    shared: &Shared,
    book: &Client,
    what: &Started,
    report: &RunReport,
    since: Instant,
) {
    let rows: u64 = report.tasks.iter().map(|t| t.rows).sum();
    let duration_ms = since.elapsed().as_millis() as u64;
    let subject = what.subject();
    let status = report.status;
    if matches!(status, Status::Failed | Status::Interrupted) {
        tracing::warn!(run_id = report.run_id, trigger = what.trigger(), %status, rows, duration_ms, "run finished: {subject} {status}");
    } else {
        tracing::info!(run_id = report.run_id, trigger = what.trigger(), %status, rows, duration_ms, "run finished: {subject} {status}");
    }
    if report.dry_run {
        return;
    }
    let level = level(report);
    let recipients = what.recipients(shared, level);
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
    }
    let event = Event {
        level,
        title: format!("pgmaint: {subject} {status} (run {})", report.run_id),
        text,
        details,
    }
    .about(&shared.origin);
    notify::send(
        &shared.config.notifiers,
        &recipients,
        &event,
        Some((book, &shared.config.state_schema)),
    )
    .await;
}

//! Carries out a run: records it, takes each task's lock so no two
//! processes work on one task, runs (or dry-runs) the tasks in order and
//! records each outcome. The CLI, the daemon's scheduler and the API all
//! start runs through here.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, Severity, TaskConfig};
use crate::output::Progress;
use crate::state::{self, StateError, Trigger};
use crate::status::Status;
use crate::stop::Stop;
use crate::tasks::{Outcome, ProgressRecord, TaskContext};

/// What the caller asked for, already checked against the config.
pub struct RunRequest<'a> {
    pub tasks: Vec<&'a TaskConfig>,
    pub dry_run: bool,
    pub batch_size: Option<u64>,
    pub max_runtime: Option<Duration>,
    pub trigger: Trigger,
    pub verbose: bool,
    /// Told the run's id as soon as it is recorded (the API answers with it
    /// while the run goes on).
    pub started: Option<tokio::sync::oneshot::Sender<i64>>,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub run_id: i64,
    pub dry_run: bool,
    pub status: Status,
    pub tasks: Vec<TaskReport>,
}

#[derive(Debug, Serialize)]
pub struct TaskReport {
    pub name: String,
    pub kind: &'static str,
    pub status: Status,
    pub rows: u64,
    pub batches: u64,
    pub duration_ms: u64,
    pub details: serde_json::Value,
    #[serde(skip)]
    pub severity: Severity,
    #[serde(skip)]
    pub error: Option<String>,
    #[serde(skip)]
    pub retries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for RunError {
    fn from(err: tokio_postgres::Error) -> Self {
        RunError::Database(crate::db::describe(&err))
    }
}

pub async fn run(
    client: &mut Client,
    config: &Config,
    request: RunRequest<'_>,
    stop: &Stop,
    progress: &Progress,
) -> Result<RunReport, RunError> {
    let schema = config.state_schema.as_str();
    state::ensure_ready(client, schema).await?;
    for id in state::mark_interrupted(client, schema).await? {
        tracing::warn!(
            "run {id} was left running by a process that is gone; marked it interrupted"
        );
    }
    let mut request = request;
    let run_id = state::start_run(client, schema, &request.trigger, request.dry_run).await?;
    if let Some(started) = request.started.take() {
        let _ = started.send(run_id);
    }
    let mut reports = Vec::new();
    for task in &request.tasks {
        let report = if stop.requested().is_some() {
            skipped(task, "the run was stopped before this task started".into())
        } else {
            run_task(client, config, run_id, task, &request, stop, progress).await?
        };
        reports.push(report);
    }
    if !request.dry_run && request.tasks.iter().any(|t| t.backup) {
        match crate::backup::prune(client, schema, &config.backups.keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} backup(s) older than {}", config.backups.keep),
            Err(err) => tracing::warn!("could not prune old backups: {err}"),
        }
    }
    let status = Status::combine(reports.iter().map(|r| r.status));
    let failures: Vec<String> = reports
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
        .collect();
    let error = (!failures.is_empty()).then(|| failures.join("; "));
    state::finish_run(client, schema, run_id, status, error.as_deref()).await?;
    Ok(RunReport {
        run_id,
        dry_run: request.dry_run,
        status,
        tasks: reports,
    })
}

fn skipped(task: &TaskConfig, reason: String) -> TaskReport {
    TaskReport {
        name: task.name.clone(),
        kind: task.spec.kind().as_str(),
        status: Status::Skipped,
        rows: 0,
        batches: 0,
        duration_ms: 0,
        details: serde_json::json!({ "reason": reason }),
        severity: task.severity,
        error: None,
        retries: 0,
    }
}

async fn run_task(
    client: &mut Client,
    config: &Config,
    run_id: i64,
    task: &TaskConfig,
    request: &RunRequest<'_>,
    stop: &Stop,
    progress: &Progress,
) -> Result<TaskReport, RunError> {
    let schema = config.state_schema.as_str();
    let backups_dir = config.backups.dir.as_path();
    let kind = task.spec.kind().as_str();
    let task_run_id =
        state::start_task_run(client, schema, run_id, &task.name, kind, request.dry_run).await?;
    let started = Instant::now();
    // A dry run only reads, so it does not compete for the task.
    let locked = request.dry_run || state::try_lock_task(client, schema, &task.name).await?;
    let outcome = if !locked {
        let holder = state::holder_of_task(client, schema, &task.name).await?;
        let reason = match holder {
            Some((id, who)) => format!("task is already running in run {id} ({who}); skipped"),
            None => "task is already running in another pgmaint process; skipped".to_string(),
        };
        Outcome {
            status: Status::Skipped,
            rows: 0,
            batches: 0,
            retries: 0,
            error: None,
            details: serde_json::json!({ "reason": reason }),
        }
    } else {
        let mut options = task.options;
        if let Some(batch_size) = request.batch_size {
            options.batch_size = batch_size;
        }
        let max_runtime = request.max_runtime.or(options.max_runtime.map(|d| d.0));
        let mut ctx = TaskContext {
            client,
            task_name: &task.name,
            options,
            stop,
            deadline: max_runtime.map(|d| started + d),
            progress,
            record: (!request.dry_run)
                .then(|| ProgressRecord::new(schema.to_string(), task_run_id)),
            verbose: request.verbose,
            backup_dir: task.backup.then(|| backups_dir.to_path_buf()),
            state_schema: schema.to_string(),
            task_run_id: Some(task_run_id),
        };
        let result = if request.dry_run {
            task.spec.dry_run(&mut ctx).await
        } else {
            task.spec.run(&mut ctx).await
        };
        progress.finish();
        let outcome = result.unwrap_or_else(|err| Outcome {
            status: Status::Failed,
            rows: 0,
            batches: 0,
            retries: 0,
            error: Some(err.to_string()),
            details: serde_json::json!({}),
        });
        if !request.dry_run {
            state::unlock_task(client, schema, &task.name).await?;
        }
        outcome
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let mut details = outcome.details.clone();
    if let Some(map) = details.as_object_mut() {
        map.insert("retries".into(), outcome.retries.into());
        if let Some(error) = &outcome.error {
            map.insert("error".into(), error.clone().into());
        }
    }
    let recorded = Outcome {
        details: details.clone(),
        ..outcome.clone()
    };
    state::finish_task_run(client, schema, task_run_id, &recorded, duration_ms as i64).await?;
    Ok(TaskReport {
        name: task.name.clone(),
        kind,
        status: outcome.status,
        rows: outcome.rows,
        batches: outcome.batches,
        duration_ms,
        details,
        severity: task.severity,
        error: outcome.error,
        retries: outcome.retries,
    })
}

/// The daemon spawns runs onto tokio's multi-threaded runtime, which needs
/// their futures to be `Send`; this fails to compile if one stops being.
#[allow(dead_code)]
fn runs_are_send(
    client: &mut Client,
    config: &Config,
    request: RunRequest<'_>,
    stop: &Stop,
    progress: &Progress,
) {
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&run(client, config, request, stop, progress));
}

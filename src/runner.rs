//! Carries out a run: records it, takes each task's lock so no two
//! processes work on one task, runs (or dry-runs) the tasks in order and
//! records each outcome, then logs it and sends it to the notifiers
//! (`outcome`). The CLI, the daemon's scheduler and the API all start runs
//! through here, so the safety rules and notifications live here, once, for
//! every trigger:
//!
//! - a task that needs confirmation (`needs_confirmation`: today, a critical
//!   one) runs only when the request carries it: `--yes` or a yes on a
//!   terminal, the API's `{"yes": true}`, or a schedule with
//!   `allow_critical = true`;
//! - on a standby (`pg_is_in_recovery()`) nothing runs and nothing is
//!   written, not even the audit trail (the state schema is read-only there);
//! - every statement waits at most `lock_timeout` for a lock: each task runs
//!   under its own (`db::under`), SET LOCAL in every transaction it opens
//!   and in each catalog lookup, with no session setting (only a
//!   `[database] direct_url` session gets the config's at connect); a task
//!   whose table stays locked fails saying so, its duration counting the
//!   wait.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::config::{Config, Problem, Problems, Severity, TaskConfig};
use crate::db::{self, SessionTimeouts};
pub use crate::outcome::{Notice, Started};
use crate::output::Progress;
use crate::status::Status;
pub(crate) use crate::status::{RunReport, TaskReport};
use crate::stop::Stop;
use crate::store::{self, StateError, Trigger};
use crate::tasks::{Outcome, ProgressRecord, TaskContext};

/// What the caller asked for, already checked against the config.
pub struct RunRequest<'a> {
    pub tasks: Vec<&'a TaskConfig>,
    pub dry_run: bool,
    pub batch_size: Option<u64>,
    pub max_runtime: Option<Duration>,
    pub trigger: Trigger,
    /// How the run was confirmed, for tasks that need it.
    pub confirmation: Confirmation,
    /// Check every task against the live database before starting, and
    /// refuse the whole run (recording nothing) if the config is wrong for
    /// any: the CLI's "bad config: nothing was changed".
    pub check_first: bool,
    pub verbose: bool,
    /// Told the run's id as soon as it is recorded (the API answers with it
    /// while the run goes on).
    pub started: Option<tokio::sync::oneshot::Sender<i64>>,
    /// Who started the run, for its log lines and the notifications of its
    /// outcome, which the runner sends for every trigger.
    pub notice: Notice,
    /// Who holds the run's leases, renewed by the caller's `lease::Keeper`
    /// for as long as the run goes. None: an owner of the run's own that
    /// nobody renews (its leases expire after their ttl), for tests.
    pub lease: Option<&'a store::LeaseOwner>,
    /// The database the run's client is connected to, for tasks that open
    /// more connections (a walk's `parallel = N`); None: they walk alone.
    pub target: Option<&'a crate::connect::Target>,
}

/// How a run was confirmed, which decides whether the tasks that need
/// confirmation may run. A dry run needs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Confirmation {
    /// Nobody confirmed: a run with a task that needs confirmation is
    /// refused before it starts.
    #[default]
    None,
    /// A person confirmed: `--yes`, a yes on a terminal, or the API's
    /// `{"yes": true}`.
    Yes,
    /// A schedule fired (or was run now): there is nobody to ask, so tasks
    /// that need confirmation run only where the schedule allows them, and
    /// are otherwise skipped (recorded, with the reason) while the rest run.
    Schedule { allow_critical: bool },
}

/// Whether a task runs only when confirmed. The one place this rule is
/// written; every caller and the runner itself ask here.
pub(crate) fn needs_confirmation(task: &TaskConfig) -> bool {
    task.severity == Severity::Critical
}

impl Confirmation {
    /// Whether a removal whose condition turns out to match every row of
    /// its table may go ahead: the confirmation a critical task needs.
    pub(crate) fn confirms_every_row(&self) -> bool {
        match self {
            Confirmation::None => false,
            Confirmation::Yes => true,
            Confirmation::Schedule { allow_critical } => *allow_critical,
        }
    }

    /// Whether this confirmation lets `task` run for real.
    pub(crate) fn covers(&self, task: &TaskConfig) -> bool {
        !needs_confirmation(task)
            || match self {
                Confirmation::None => false,
                Confirmation::Yes => true,
                Confirmation::Schedule { allow_critical } => *allow_critical,
            }
    }
}

/// The tasks the runner would not run under this confirmation (none in a
/// dry run), in order. Callers use it to ask before they start a run.
pub(crate) fn unconfirmed<'t>(
    tasks: &[&'t TaskConfig],
    dry_run: bool,
    confirmation: Confirmation,
) -> Vec<&'t TaskConfig> {
    if dry_run {
        return Vec::new();
    }
    tasks
        .iter()
        .copied()
        .filter(|t| !confirmation.covers(t))
        .collect()
}

/// Why a task named by a schedule is left out of its fires, if it is.
pub fn left_out_by_schedule(
    task: &TaskConfig,
    schedule: &crate::config::ScheduleConfig,
) -> Option<String> {
    let confirmation = Confirmation::Schedule {
        allow_critical: schedule.allow_critical,
    };
    (!confirmation.covers(task)).then(|| {
        format!(
            "task {} is {} and this schedule does not set allow_critical = true",
            task.name,
            task.severity.as_str()
        )
    })
}

/// A run the runner would not start; nothing was recorded or changed.
#[derive(Debug)]
pub enum Refusal {
    /// These tasks need a confirmation the request does not carry.
    Unconfirmed(Vec<String>),
    /// The server is a standby: pgmaint writes nothing there.
    Standby,
    /// `check_first` found these problems in the config.
    Problems(Vec<Problem>),
}

/// What the refusals say; callers add how to confirm in their own terms.
pub(crate) const STANDBY: &str = "this server is a standby (pg_is_in_recovery() is true): pgmaint does not write here; nothing was done";

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unconfirmed(names) => write!(
                f,
                "critical task(s) {} run only when confirmed; nothing was changed",
                names.join(", ")
            ),
            Refusal::Standby => f.write_str(STANDBY),
            Refusal::Problems(problems) => write!(
                f,
                "{}\n{} problem(s) found; nothing was changed",
                Problems(problems.clone()),
                problems.len()
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Refused(Refusal),
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

/// What checking one task against the live database found.
pub(crate) struct LiveCheck {
    /// Config problems, each placed at its key in the file.
    pub problems: Vec<Problem>,
    /// Problems that are a lock another session holds, not the config.
    pub busy: Vec<Problem>,
    /// The server or the connection failed a check's statement
    /// (`db::server_fault`): not a config problem, and not a pass.
    pub server: Vec<String>,
    pub took: Duration,
}

/// Checks one task against the live database (under the session's
/// timeouts, so a locked table is a bounded wait reported as `busy`).
pub(crate) async fn check_task(client: &Client, config: &Config, task: &TaskConfig) -> LiveCheck {
    let started = Instant::now();
    let mut check = LiveCheck {
        problems: Vec::new(),
        busy: Vec::new(),
        server: Vec::new(),
        took: Duration::ZERO,
    };
    for found in db::under(task_timeouts(task), task.spec.check(client)).await {
        if db::server_fault(&found.message) {
            check.server.push(format!(
                "task {} ({}): {}",
                task.name, found.key, found.message
            ));
            continue;
        }
        let busy = db::gave_up_on_a_lock(&found.message);
        let problem = config.problem(&["tasks", &task.name, found.key], found.message);
        let problem = match found.help {
            Some(help) if !busy => problem.with_help(help),
            _ => problem,
        };
        if busy {
            check.busy.push(problem);
        } else {
            check.problems.push(problem);
        }
    }
    check.took = started.elapsed();
    check
}

/// A task's statement gave up on a lock: say which lock and what it means.
fn lock_busy(task: &TaskConfig, cause: &str) -> String {
    format!(
        "could not get its locks on {}: another session held a conflicting lock past lock_timeout {}; the task stopped there and the next run tries again ({cause})",
        task.spec.target(),
        task.options.lock_timeout
    )
}

fn task_timeouts(task: &TaskConfig) -> SessionTimeouts {
    task.options.session()
}

pub async fn run(
    client: &mut Client,
    config: &Config,
    request: RunRequest<'_>,
    stop: &Stop,
    progress: &Progress,
) -> Result<RunReport, RunError> {
    let since = Instant::now();
    let unconfirmed = unconfirmed(&request.tasks, request.dry_run, request.confirmation);
    if !unconfirmed.is_empty() && request.confirmation == Confirmation::None {
        return Err(RunError::Refused(Refusal::Unconfirmed(
            unconfirmed.iter().map(|t| t.name.clone()).collect(),
        )));
    }
    // Once per run, before anything is written. A dry run records its plan
    // in the state schema too, so it does not run on a standby either.
    if db::in_recovery(client).await? {
        return Err(RunError::Refused(Refusal::Standby));
    }
    // What each task's live check took, and the lock it found busy: the
    // task's duration includes it, and a busy task is not looked up again.
    let mut checked: Vec<(Duration, Option<String>)> = Vec::new();
    if request.check_first {
        let mut problems = Vec::new();
        for task in &request.tasks {
            let check = check_task(client, config, task).await;
            if !check.server.is_empty() {
                return Err(RunError::Database(check.server.join("\n")));
            }
            problems.extend(check.problems);
            let busy = (!check.busy.is_empty()).then(|| {
                check
                    .busy
                    .iter()
                    .map(|p| format!("{}: {}", p.key, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            checked.push((check.took, busy));
        }
        if !problems.is_empty() {
            return Err(RunError::Refused(Refusal::Problems(problems)));
        }
    }
    let schema = config.state_schema.as_str();
    store::ensure_ready(client, schema).await?;
    for id in store::mark_interrupted(client, schema).await? {
        tracing::warn!(
            "run {id} was left running by a process that is gone; marked it interrupted"
        );
    }
    let mut request = request;
    let own_owner;
    let owner = match request.lease {
        Some(owner) => owner,
        None => {
            own_owner = store::LeaseOwner::new();
            &own_owner
        }
    };
    let run_id = store::start_run(client, schema, &request.trigger, request.dry_run, owner).await?;
    crate::outcome::started(&request.notice.started, run_id, request.dry_run);
    if let Some(started) = request.started.take() {
        let _ = started.send(run_id);
    }
    let mut reports: Vec<TaskReport> = Vec::new();
    // What the removals so far changed, for a vacuum or analyze after them.
    let mut changed_tables: Vec<String> = Vec::new();
    for (index, task) in request.tasks.iter().enumerate() {
        let (checking, busy) = checked.get(index).cloned().unwrap_or_default();
        let report = if stop.requested().is_some() {
            skipped(task, "the run was stopped before this task started".into())
        } else if unconfirmed.iter().any(|t| t.name == task.name) {
            let reason = format!(
                "critical task left out: the schedule does not set allow_critical = true ({} runs only when confirmed)",
                task.name
            );
            record_skipped(client, schema, run_id, task, &request, reason).await?
        } else {
            if request.verbose {
                for statement in task_timeouts(task).statements() {
                    eprintln!("[{}] {statement}", task.name);
                }
            }
            // The task's timeouts are SET LOCAL in each transaction it
            // opens (no session setting, which a pooler would pass on).
            let ran = db::under(
                task_timeouts(task),
                run_task(
                    client,
                    config,
                    (run_id, owner),
                    task,
                    &request,
                    stop,
                    progress,
                    (checking, busy),
                    &changed_tables,
                ),
            )
            .await;
            ran?
        };
        if !request.dry_run && report.rows > 0 {
            for table in report.details["changed_tables"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(table) = table.as_str()
                    && !changed_tables.iter().any(|t| t == table)
                {
                    changed_tables.push(table.to_string());
                }
            }
        }
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
    store::finish_run(client, schema, run_id, status, error.as_deref()).await?;
    let report = RunReport {
        run_id,
        dry_run: request.dry_run,
        status,
        tasks: reports,
        unconfirmed: unconfirmed.iter().map(|t| t.name.clone()).collect(),
    };
    crate::outcome::finished(config, &request.notice, client, &report, since).await;
    Ok(report)
}

fn skipped(task: &TaskConfig, reason: String) -> TaskReport {
    TaskReport {
        name: task.name.clone(),
        kind: task.spec.kind(),
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

/// A task skipped for a reason the audit trail should keep.
async fn record_skipped(
    client: &mut Client,
    schema: &str,
    run_id: i64,
    task: &TaskConfig,
    request: &RunRequest<'_>,
    reason: String,
) -> Result<TaskReport, RunError> {
    let report = skipped(task, reason);
    let task_run_id = store::start_task_run(
        client,
        schema,
        run_id,
        &task.name,
        report.kind,
        request.dry_run,
    )
    .await?;
    let outcome = Outcome {
        status: Status::Skipped,
        rows: 0,
        batches: 0,
        retries: 0,
        error: None,
        details: report.details.clone(),
    };
    store::finish_task_run(client, schema, task_run_id, &outcome, 0).await?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_task(
    client: &mut Client,
    config: &Config,
    (run_id, owner): (i64, &store::LeaseOwner),
    task: &TaskConfig,
    request: &RunRequest<'_>,
    stop: &Stop,
    progress: &Progress,
    (checking, busy): (Duration, Option<String>),
    changed_tables: &[String],
) -> Result<TaskReport, RunError> {
    let schema = config.state_schema.as_str();
    let backups_dir = config.backups.dir.as_path();
    let kind = task.spec.kind();
    let task_run_id =
        store::start_task_run(client, schema, run_id, &task.name, kind, request.dry_run).await?;
    let started = Instant::now();
    // A dry run only reads, so it does not compete for the task.
    let locked = busy.is_some()
        || request.dry_run
        || store::try_lock_task(client, schema, &task.name, owner, run_id).await?;
    let outcome = if let Some(cause) = &busy {
        // Its check found the table locked: do not queue on it again.
        Outcome {
            status: Status::Failed,
            rows: 0,
            batches: 0,
            retries: 0,
            error: Some(lock_busy(task, cause)),
            details: serde_json::json!({}),
        }
    } else if !locked {
        let holder = store::holder_of_task(client, schema, &task.name, run_id).await?;
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
        let deadline = max_runtime.map(|d| started + d);
        // The task's pauses and backoffs end at its deadline, not only at a
        // signal.
        let stop = stop.until(deadline);
        let mut ctx = TaskContext {
            client,
            task_name: &task.name,
            options,
            stop: &stop,
            deadline,
            progress,
            record: (!request.dry_run)
                .then(|| ProgressRecord::new(schema.to_string(), task_run_id)),
            verbose: request.verbose,
            backup_dir: task.backup.then(|| backups_dir.to_path_buf()),
            state_schema: schema.to_string(),
            task_run_id: Some(task_run_id),
            confirmed: request.confirmation.confirms_every_row(),
            changed_tables: changed_tables.to_vec(),
            target: request.target,
        };
        let result = if request.dry_run {
            task.spec.dry_run(&mut ctx).await
        } else {
            task.spec.run(&mut ctx).await
        };
        progress.finish();
        let outcome = result.unwrap_or_else(|err| {
            let error = err.to_string();
            Outcome {
                status: Status::Failed,
                rows: 0,
                batches: 0,
                retries: 0,
                error: Some(if db::gave_up_on_a_lock(&error) {
                    lock_busy(task, &error)
                } else {
                    error
                }),
                details: serde_json::json!({}),
            }
        });
        if !request.dry_run {
            store::unlock_task(client, schema, &task.name, owner).await?;
        }
        outcome
    };
    let duration_ms = (checking + started.elapsed()).as_millis() as u64;
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
    store::finish_task_run(client, schema, task_run_id, &recorded, duration_ms as i64).await?;
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

/// The tasks of a run that need a session of their own (`Task::needs_session`):
/// none for a dry run, which runs no such statement.
pub fn needing_a_session<'a>(tasks: &[&'a TaskConfig], dry_run: bool) -> Vec<&'a str> {
    if dry_run {
        return Vec::new();
    }
    tasks
        .iter()
        .filter(|t| t.spec.needs_session())
        .map(|t| t.name.as_str())
        .collect()
}

/// The refusal of a run whose tasks need a session when the connection
/// looks like a transaction pooler (`seen`) and `[database] direct_url` is
/// not set: nothing runs half-protected.
pub fn needs_direct_url(tasks: &[&str], seen: &str) -> String {
    format!(
        "{} cannot run through a transaction pooler: they run statements that cannot be in a transaction block (VACUUM, ... CONCURRENTLY) under session timeouts that a pooler does not keep ({seen}); nothing was changed\n  help: set [database] direct_url to a connection that is a session of its own (the database's direct endpoint, not the pooler's), as Prisma's directUrl",
        tasks.join(", ")
    )
}

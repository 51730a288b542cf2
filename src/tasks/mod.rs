//! Task kinds: one file each, all behind the `Task` trait. A kind first
//! `prepare`s (cheap, read-only: resolve the table, fix the cutoff), then a
//! dry run `describe`s that plan and a real run `execute`s the same plan, so
//! what the dry run says is what the run does. `TaskSpec` is the registry:
//! its exhaustive `match`es are where a new kind must be wired in.

pub mod purge;

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{TaskKind, TaskOptions, file::TaskFile};
use crate::output::Progress;
use crate::status::Status;
use crate::stop::Stop;

/// A task as configured, resolved and typed; serialized tagged by `kind`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    Purge(purge::PurgeSpec),
}

/// Reports a config problem: key within the task, message, optional help.
pub type ReportProblem<'a> = dyn FnMut(&str, String, Option<String>) + 'a;

impl TaskSpec {
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskSpec::Purge(_) => TaskKind::Purge,
        }
    }

    /// The table (or other object) the task works on, for listings.
    pub fn target(&self) -> String {
        match self {
            TaskSpec::Purge(p) => p.target(),
        }
    }

    pub fn resolve(file: &TaskFile, report: &mut ReportProblem<'_>) -> Option<TaskSpec> {
        match file.kind {
            TaskKind::Purge => purge::PurgeSpec::resolve(file, report).map(TaskSpec::Purge),
        }
    }

    /// Problems found by checking the config against the live database.
    pub async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        match self {
            TaskSpec::Purge(p) => p.check(client).await,
        }
    }

    pub async fn dry_run(&self, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
        match self {
            TaskSpec::Purge(p) => {
                let plan = p.prepare(ctx).await?;
                p.describe(ctx, &plan).await
            }
        }
    }

    pub async fn run(&self, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
        match self {
            TaskSpec::Purge(p) => {
                let plan = p.prepare(ctx).await?;
                p.execute(ctx, plan).await
            }
        }
    }
}

/// What every task kind implements.
// Only used with static dispatch inside this crate, so the futures' auto
// traits need no spelling out.
#[allow(async_fn_in_trait)]
pub trait Task {
    type Plan;

    /// Reads what the task needs to know (never writes, takes no lock beyond
    /// reading) and fixes the plan both a dry run and a run follow.
    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<Self::Plan, TaskError>;
    /// The dry run: what a run of this plan would do, changing nothing.
    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &Self::Plan,
    ) -> Result<Outcome, TaskError>;
    /// The run: carries the plan out in bounded batches.
    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: Self::Plan,
    ) -> Result<Outcome, TaskError>;
    async fn check(&self, client: &Client) -> Vec<CheckProblem>;
}

/// A problem `check` finds for one key of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckProblem {
    pub key: &'static str,
    pub message: String,
    pub help: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The database refused something; the text is already readable.
    #[error("{0}")]
    Database(String),
    /// The configured target is not what the config says (missing table...).
    #[error("{0}")]
    Target(String),
}

impl From<tokio_postgres::Error> for TaskError {
    fn from(err: tokio_postgres::Error) -> Self {
        TaskError::Database(crate::db::describe(&err))
    }
}

/// What a task did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Status,
    /// Rows changed, or in a dry run the rows that would be.
    pub rows: u64,
    pub batches: u64,
    pub retries: u64,
    pub error: Option<String>,
    pub details: serde_json::Value,
}

/// Running totals a task reports while it works.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub rows: u64,
    pub batches: u64,
    pub retries: u64,
}

/// Where a running task records its progress in the state schema.
pub struct ProgressRecord {
    pub schema: String,
    pub task_run_id: i64,
    last: Option<Instant>,
}

impl ProgressRecord {
    pub fn new(schema: String, task_run_id: i64) -> Self {
        Self {
            schema,
            task_run_id,
            last: None,
        }
    }
}

/// Everything a task gets to do its work.
pub struct TaskContext<'a> {
    pub client: &'a mut Client,
    pub task_name: &'a str,
    pub options: TaskOptions,
    pub stop: &'a Stop,
    pub deadline: Option<Instant>,
    pub progress: &'a Progress,
    pub record: Option<ProgressRecord>,
    /// Echo each statement (`-v`).
    pub verbose: bool,
}

impl TaskContext<'_> {
    /// Why the task must stop now, if it must: a signal, or `max_runtime`.
    pub fn should_stop(&self) -> Option<&'static str> {
        if self.stop.requested().is_some() {
            return Some("stopped by a signal");
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some("max_runtime reached");
        }
        None
    }

    pub fn log_statement(&self, sql: &str) {
        if self.verbose {
            eprintln!(
                "[{}] {}",
                self.task_name,
                sql.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
    }

    /// Saves the running totals to the task's history row, at most once a
    /// second, so a run that dies still shows how far it got.
    pub async fn record_progress(&mut self, counters: Counters) -> Result<(), TaskError> {
        let Some(record) = self.record.as_mut() else {
            return Ok(());
        };
        if record
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        record.last = Some(Instant::now());
        crate::state::record_progress(self.client, &record.schema, record.task_run_id, counters)
            .await?;
        Ok(())
    }
}

//! Task kinds: one file each, all behind the `Task` trait. A kind first
//! `prepare`s (cheap, read-only: resolve the table, fix the cutoff), then a
//! dry run `describe`s that plan and a real run `execute`s the same plan, so
//! what the dry run says is what the run does. `TaskSpec` is the registry:
//! its exhaustive `match`es are where a new kind must be wired in.

pub mod archive;
pub mod files;
pub mod orphans;
pub mod partitions;
pub mod purge;
pub mod references;
pub mod refresh;
pub mod reindex;
pub mod rows;
pub mod sql;
pub mod utility;
pub mod vacuum;
pub mod walk;

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{TaskKind, TaskOptions, file::TaskFile};
use crate::output::Progress;
use crate::stop::Stop;

/// A task as configured, resolved and typed; serialized tagged by `kind`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    Purge(purge::PurgeSpec),
    Archive(archive::ArchiveSpec),
    Orphans(orphans::OrphansSpec),
    Sql(sql::SqlSpec),
    Files(files::FilesSpec),
    Refresh(refresh::RefreshSpec),
    Vacuum(vacuum::VacuumSpec),
    Analyze(vacuum::VacuumSpec),
    Reindex(reindex::ReindexSpec),
    Partitions(partitions::PartitionsSpec),
}

/// Reports a config problem: key within the task, message, optional help.
pub type ReportProblem<'a> = dyn FnMut(&str, String, Option<String>) + 'a;

/// "a" or "an", for messages that name a kind.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

impl TaskSpec {
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskSpec::Purge(_) => TaskKind::Purge,
            TaskSpec::Archive(_) => TaskKind::Archive,
            TaskSpec::Orphans(_) => TaskKind::Orphans,
            TaskSpec::Sql(_) => TaskKind::Sql,
            TaskSpec::Files(_) => TaskKind::Files,
            TaskSpec::Refresh(_) => TaskKind::Refresh,
            TaskSpec::Vacuum(_) => TaskKind::Vacuum,
            TaskSpec::Analyze(_) => TaskKind::Analyze,
            TaskSpec::Reindex(_) => TaskKind::Reindex,
            TaskSpec::Partitions(_) => TaskKind::Partitions,
        }
    }

    /// The table (or other object) the task works on, for listings.
    pub fn target(&self) -> String {
        match self {
            TaskSpec::Purge(t) => t.target(),
            TaskSpec::Archive(t) => t.target(),
            TaskSpec::Orphans(t) => t.target(),
            TaskSpec::Sql(t) => t.target(),
            TaskSpec::Files(t) => t.target(),
            TaskSpec::Refresh(t) => t.target(),
            TaskSpec::Vacuum(t) | TaskSpec::Analyze(t) => t.target(),
            TaskSpec::Reindex(t) => t.target(),
            TaskSpec::Partitions(t) => t.target(),
        }
    }

    /// Makes relative paths in the task relative to the config file's
    /// directory, as `[backups] dir` is.
    pub fn anchor_paths(&mut self, base: &std::path::Path) {
        let anchor = |path: &mut String| {
            if std::path::Path::new(path.as_str()).is_relative() {
                *path = base.join(path.as_str()).display().to_string();
            }
        };
        match self {
            TaskSpec::Archive(t) => {
                if let Some(export) = t.export.as_mut() {
                    anchor(export);
                }
            }
            TaskSpec::Files(t) => anchor(&mut t.path),
            TaskSpec::Partitions(t) => {
                if let Some(export) = t.export.as_mut() {
                    anchor(export);
                }
            }
            _ => {}
        }
    }

    /// The least severity this task can have: a VACUUM FULL rewrites the
    /// table under an exclusive lock, so it is always critical.
    pub fn minimum_severity(&self) -> crate::config::Severity {
        match self {
            TaskSpec::Vacuum(t) if t.full => crate::config::Severity::Critical,
            _ => crate::config::Severity::Low,
        }
    }

    /// Whether this kind removes rows that a backup could hold.
    pub fn can_back_up(&self) -> bool {
        self.kind().keys().contains(&"backup")
    }

    /// `written` is the task's keys as the file has them, beyond the ones
    /// every task takes: each must be one of its kind's.
    pub fn resolve(
        file: &TaskFile,
        written: &[String],
        report: &mut ReportProblem<'_>,
    ) -> Option<TaskSpec> {
        let allowed = file.kind.keys();
        let mut foreign = false;
        for key in written {
            if !allowed.contains(&key.as_str()) {
                foreign = true;
                report(
                    key,
                    format!(
                        "`{key}` is not a key of {} {} task",
                        article(file.kind.as_str()),
                        file.kind.as_str()
                    ),
                    Some(format!(
                        "{} tasks take: {}",
                        file.kind.as_str(),
                        allowed.join(", ")
                    )),
                );
            }
        }
        let spec = match file.kind {
            TaskKind::Purge => purge::PurgeSpec::resolve(file, report).map(TaskSpec::Purge),
            TaskKind::Archive => archive::ArchiveSpec::resolve(file, report).map(TaskSpec::Archive),
            TaskKind::Orphans => orphans::OrphansSpec::resolve(file, report).map(TaskSpec::Orphans),
            TaskKind::Sql => sql::SqlSpec::resolve(file, report).map(TaskSpec::Sql),
            TaskKind::Files => files::FilesSpec::resolve(file, report).map(TaskSpec::Files),
            TaskKind::Refresh => refresh::RefreshSpec::resolve(file, report).map(TaskSpec::Refresh),
            TaskKind::Vacuum => {
                vacuum::VacuumSpec::resolve(file, false, report).map(TaskSpec::Vacuum)
            }
            TaskKind::Analyze => {
                vacuum::VacuumSpec::resolve(file, true, report).map(TaskSpec::Analyze)
            }
            TaskKind::Reindex => reindex::ReindexSpec::resolve(file, report).map(TaskSpec::Reindex),
            TaskKind::Partitions => {
                partitions::PartitionsSpec::resolve(file, report).map(TaskSpec::Partitions)
            }
        };
        spec.filter(|_| !foreign)
    }

    /// The rows this task would act on now, for health's task-backlog:
    /// `Some` for the kinds whose work is the rows a filter names, counted
    /// with the kind's own filter and cutoff.
    pub async fn backlog(
        &self,
        client: &Client,
        options: &TaskOptions,
    ) -> Result<Option<(crate::sql::TableName, rows::Backlog)>, tokio_postgres::Error> {
        match self {
            TaskSpec::Purge(t) => t.backlog(client, options.exact_count_limit).await,
            TaskSpec::Archive(t) => t.backlog(client, options.exact_count_limit).await,
            TaskSpec::Orphans(_)
            | TaskSpec::Sql(_)
            | TaskSpec::Files(_)
            | TaskSpec::Refresh(_)
            | TaskSpec::Vacuum(_)
            | TaskSpec::Analyze(_)
            | TaskSpec::Reindex(_)
            | TaskSpec::Partitions(_) => Ok(None),
        }
    }

    /// Problems found by checking the config against the live database.
    pub async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        match self {
            TaskSpec::Purge(t) => t.check(client).await,
            TaskSpec::Archive(t) => t.check(client).await,
            TaskSpec::Orphans(t) => t.check(client).await,
            TaskSpec::Sql(t) => t.check(client).await,
            TaskSpec::Files(t) => t.check(client).await,
            TaskSpec::Refresh(t) => t.check(client).await,
            TaskSpec::Vacuum(t) | TaskSpec::Analyze(t) => t.check(client).await,
            TaskSpec::Reindex(t) => t.check(client).await,
            TaskSpec::Partitions(t) => t.check(client).await,
        }
    }

    pub async fn dry_run(&self, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
        match self {
            TaskSpec::Purge(t) => dry_run(t, ctx).await,
            TaskSpec::Archive(t) => dry_run(t, ctx).await,
            TaskSpec::Orphans(t) => dry_run(t, ctx).await,
            TaskSpec::Sql(t) => dry_run(t, ctx).await,
            TaskSpec::Files(t) => dry_run(t, ctx).await,
            TaskSpec::Refresh(t) => dry_run(t, ctx).await,
            TaskSpec::Vacuum(t) | TaskSpec::Analyze(t) => dry_run(t, ctx).await,
            TaskSpec::Reindex(t) => dry_run(t, ctx).await,
            TaskSpec::Partitions(t) => dry_run(t, ctx).await,
        }
    }

    pub async fn run(&self, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
        match self {
            TaskSpec::Purge(t) => run(t, ctx).await,
            TaskSpec::Archive(t) => run(t, ctx).await,
            TaskSpec::Orphans(t) => run(t, ctx).await,
            TaskSpec::Sql(t) => run(t, ctx).await,
            TaskSpec::Files(t) => run(t, ctx).await,
            TaskSpec::Refresh(t) => run(t, ctx).await,
            TaskSpec::Vacuum(t) | TaskSpec::Analyze(t) => run(t, ctx).await,
            TaskSpec::Reindex(t) => run(t, ctx).await,
            TaskSpec::Partitions(t) => run(t, ctx).await,
        }
    }
}

async fn dry_run<T: Task>(task: &T, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
    let plan = task.prepare(ctx).await?;
    task.describe(ctx, &plan).await
}

async fn run<T: Task>(task: &T, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
    let plan = task.prepare(ctx).await?;
    task.execute(ctx, plan).await
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
    /// A backup could not be written: the batch removed nothing.
    #[error("{0}")]
    Backup(String),
    /// Something outside the database (files) failed.
    #[error("{0}")]
    Io(String),
}

impl TaskError {
    /// `check`'s problems as one line, for a run that finds its target is
    /// not what the config says.
    pub fn from_problems(problems: &[CheckProblem]) -> TaskError {
        TaskError::Target(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// A batch's error, with a foreign key that blocks a delete named in
    /// words a person can act on.
    pub fn from_batch(err: &tokio_postgres::Error, table: &crate::sql::TableName) -> TaskError {
        if let Some(db) = err.as_db_error()
            && *db.code() == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION
        {
            let constraint = db.constraint().unwrap_or("?");
            let referencing = db.table().unwrap_or("another table");
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            return TaskError::Database(format!(
                "rows of {table} are still referenced by table \"{referencing}\" through foreign key \"{constraint}\"{detail}; the batch was rolled back (on_referenced = \"fail\"). Leave out `on_referenced` to keep referenced rows in place and remove the rest, or delete or re-point the referencing rows first (another task, ON DELETE CASCADE / SET NULL on the constraint)"
            ));
        }
        TaskError::Database(crate::db::describe(err))
    }
}

impl From<crate::backup::BackupError> for TaskError {
    fn from(err: crate::backup::BackupError) -> Self {
        TaskError::Backup(err.to_string())
    }
}

impl From<tokio_postgres::Error> for TaskError {
    fn from(err: tokio_postgres::Error) -> Self {
        TaskError::Database(crate::db::describe(&err))
    }
}

// Outcome and Counters live in the leaf `status` module, so the store can
// record them without depending on the tasks.
pub use crate::status::{Counters, Outcome};

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
    /// Where removed rows are backed up (`[backups] dir`), when this task
    /// backs up.
    pub backup_dir: Option<std::path::PathBuf>,
    /// pgmaint's state schema, and this task's run in it.
    pub state_schema: String,
    pub task_run_id: Option<i64>,
    /// The run was confirmed as a critical task's must be (`--yes`, the
    /// API's `yes`, a schedule with `allow_critical`): what a removal whose
    /// condition matches every row of its table needs.
    pub confirmed: bool,
    /// Tables earlier tasks of this run removed rows from (or changed
    /// through foreign keys), for a vacuum or analyze that follows.
    pub changed_tables: Vec<String>,
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

    /// The writer of this task run's backup, when the task backs up.
    pub async fn backup_writer(
        &self,
        table: &crate::sql::TableName,
        columns: &[crate::db::Column],
    ) -> Result<Option<crate::backup::BackupWriter>, TaskError> {
        let Some(dir) = &self.backup_dir else {
            return Ok(None);
        };
        let writer = crate::backup::BackupWriter::start(
            self.client,
            &self.state_schema,
            self.task_run_id,
            dir,
            self.task_name,
            table,
            columns,
        )
        .await?;
        Ok(Some(writer))
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
        crate::store::record_progress(self.client, &record.schema, record.task_run_id, counters)
            .await?;
        Ok(())
    }
}

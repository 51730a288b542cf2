//! Task kinds: one file each, all behind the `Task` trait, listed in
//! `registry` (one line per kind). A kind first `prepare`s (cheap,
//! read-only: resolve the table, fix the cutoff), then a dry run
//! `describe`s that plan and a real run `execute`s the same plan, so what
//! the dry run says is what the run does. `TaskSpec` is a configured task
//! of any kind; nothing outside a kind's file matches on kinds.
//!
//! Tasks depend on nothing in `config`: config hands each task's own keys
//! to the registry, which reads them into the kind's struct.

pub(crate) mod analyze;
pub(crate) mod archive;
pub(crate) mod files;
pub(crate) mod leaves;
pub(crate) mod orphans;
pub(crate) mod partitions;
pub(crate) mod purge;
pub(crate) mod references;
pub(crate) mod refresh;
pub(crate) mod registry;
pub(crate) mod reindex;
pub(crate) mod rows;
pub(crate) mod sessions;
pub(crate) mod sql;
pub(crate) mod utility;
pub(crate) mod vacuum;
pub(crate) mod values;
pub(crate) mod walk;
pub(crate) mod walk_text;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

pub(crate) use crate::options::{Severity, TaskOptions};
use crate::output::Progress;
use crate::stop::Stop;
use registry::Kind;

/// A task as configured, resolved and typed, of whichever kind; serialized
/// as its spec tagged by `kind`.
#[derive(Clone)]
pub struct TaskSpec {
    kind: &'static Kind,
    task: Arc<dyn DynTask>,
}

impl std::fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.task.fmt(f)
    }
}

impl Serialize for TaskSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = self.task.to_json();
        if let Some(map) = value.as_object_mut() {
            map.insert("kind".into(), self.kind.name.into());
        }
        value.serialize(serializer)
    }
}

/// Reports a config problem: key within the task, message, optional help.
pub(crate) type ReportProblem<'a> = dyn FnMut(&str, String, Option<String>) + 'a;

impl TaskSpec {
    /// What `kind = "..."` said.
    pub(crate) fn kind(&self) -> &'static str {
        self.kind.name
    }

    /// The spec of one kind, for the few places that show a kind's own
    /// figures (refresh ages in `pgmaint tasks` and health).
    pub fn downcast_ref<T: Task>(&self) -> Option<&T> {
        self.task.as_any().downcast_ref()
    }

    /// The table (or other object) the task works on, for listings.
    pub(crate) fn target(&self) -> String {
        self.task.target()
    }

    /// The least severity this task can have (a VACUUM FULL is always
    /// critical).
    pub fn minimum_severity(&self) -> Severity {
        self.task.minimum_severity()
    }

    /// Whether the task runs statements that cannot run in a transaction
    /// block (VACUUM, `... CONCURRENTLY`) under session timeouts: through a
    /// transaction pooler it needs `[database] direct_url`.
    pub fn needs_session(&self) -> bool {
        self.task.needs_session()
    }

    /// Whether this kind removes rows that a backup could hold.
    pub fn can_back_up(&self) -> bool {
        self.kind.can_back_up()
    }

    /// `backup = ...` as written, for the kinds that take it.
    pub fn backup(&self) -> Option<bool> {
        self.task.backup()
    }

    /// The rows this task would act on now, for health's task-backlog:
    /// `Some` for the kinds whose work is the rows a filter names, counted
    /// with the kind's own filter and cutoff.
    pub async fn backlog(
        &self,
        client: &Client,
        options: &TaskOptions,
    ) -> Result<Option<(crate::sql::TableName, rows::Backlog)>, tokio_postgres::Error> {
        self.task.backlog(client, options).await
    }

    /// The table as written and the filter that names its rows, for the
    /// kinds whose work is the rows a filter names.
    pub(crate) fn rows_filter(&self) -> Option<(&str, &rows::Filter)> {
        self.task.rows_filter()
    }

    /// The tables this task makes in the user's schema, which `migrate
    /// drift` never reports.
    pub(crate) fn makes(&self) -> Vec<Made> {
        self.task.makes()
    }

    /// Problems found by checking the config against the live database.
    pub(crate) async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.task.check(client).await
    }

    pub(crate) async fn dry_run(&self, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
        self.task.dry_run(ctx).await
    }

    pub(crate) async fn run(&self, ctx: &mut TaskContext<'_>) -> Result<Outcome, TaskError> {
        self.task.run(ctx).await
    }
}

/// A table a task makes, named as its config writes it: found in the
/// live catalog by `migrate::drift`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// `name` (`table` or `schema.table`) in the schema of `beside` when
    /// unqualified; `None`: `<beside's name>_archive` beside it.
    Beside {
        beside: String,
        name: Option<String>,
    },
    /// Every partition of this table.
    PartitionsOf(String),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `Task` as a trait object: what `TaskSpec` holds. Implemented for every
/// `Task`, so a kind never writes it.
trait DynTask: std::fmt::Debug + Send + Sync {
    fn target(&self) -> String;
    fn minimum_severity(&self) -> Severity;
    fn backup(&self) -> Option<bool>;
    fn needs_session(&self) -> bool;
    fn to_json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
    fn backlog<'a>(
        &'a self,
        client: &'a Client,
        options: &'a TaskOptions,
    ) -> BoxFuture<'a, Result<Option<(crate::sql::TableName, rows::Backlog)>, tokio_postgres::Error>>;
    fn rows_filter(&self) -> Option<(&str, &rows::Filter)>;
    fn makes(&self) -> Vec<Made>;
    fn check<'a>(&'a self, client: &'a Client) -> BoxFuture<'a, Vec<CheckProblem>>;
    fn dry_run<'a, 'c>(
        &'a self,
        ctx: &'a mut TaskContext<'c>,
    ) -> BoxFuture<'a, Result<Outcome, TaskError>>;
    fn run<'a, 'c>(
        &'a self,
        ctx: &'a mut TaskContext<'c>,
    ) -> BoxFuture<'a, Result<Outcome, TaskError>>;
}

impl<T: Task> DynTask for T {
    fn target(&self) -> String {
        Task::target(self)
    }

    fn minimum_severity(&self) -> Severity {
        Task::minimum_severity(self)
    }

    fn backup(&self) -> Option<bool> {
        Task::backup(self)
    }

    fn needs_session(&self) -> bool {
        Task::needs_session(self)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn backlog<'a>(
        &'a self,
        client: &'a Client,
        options: &'a TaskOptions,
    ) -> BoxFuture<'a, Result<Option<(crate::sql::TableName, rows::Backlog)>, tokio_postgres::Error>>
    {
        Box::pin(Task::backlog(self, client, options))
    }

    fn rows_filter(&self) -> Option<(&str, &rows::Filter)> {
        Task::rows_filter(self)
    }

    fn makes(&self) -> Vec<Made> {
        Task::makes(self)
    }

    fn check<'a>(&'a self, client: &'a Client) -> BoxFuture<'a, Vec<CheckProblem>> {
        Box::pin(Task::check(self, client))
    }

    fn dry_run<'a, 'c>(
        &'a self,
        ctx: &'a mut TaskContext<'c>,
    ) -> BoxFuture<'a, Result<Outcome, TaskError>> {
        Box::pin(async move {
            let plan = self.prepare(ctx).await?;
            self.describe(ctx, &plan).await
        })
    }

    fn run<'a, 'c>(
        &'a self,
        ctx: &'a mut TaskContext<'c>,
    ) -> BoxFuture<'a, Result<Outcome, TaskError>> {
        Box::pin(async move {
            let plan = self.prepare(ctx).await?;
            self.execute(ctx, plan).await
        })
    }
}

/// What every task kind implements. The futures are `Send` so a run can
/// go to another thread (the daemon, the API).
pub trait Task: std::fmt::Debug + Serialize + Send + Sync + 'static {
    type Plan: Send + Sync;

    /// The table (or other object) the task works on, for listings.
    fn target(&self) -> String;

    /// The least severity a task of this spec can have.
    fn minimum_severity(&self) -> Severity {
        Severity::Low
    }

    /// `backup = ...` as written, for the kinds that take it.
    fn backup(&self) -> Option<bool> {
        None
    }

    /// Whether the kind runs statements outside any transaction (VACUUM,
    /// `... CONCURRENTLY`; `utility::run`), which need a session of their
    /// own: `[database] direct_url` behind a transaction pooler.
    fn needs_session(&self) -> bool {
        false
    }

    /// Makes relative paths in the task relative to the config file's
    /// directory, as `[backups] dir` is.
    fn anchor_paths(&mut self, _base: &std::path::Path) {}

    /// The rows this task would act on now, for health's task-backlog:
    /// `Some` for the kinds whose work is rows a filter names
    /// ([`Task::rows_filter`]), counted as their dry run counts.
    fn backlog(
        &self,
        client: &Client,
        options: &TaskOptions,
    ) -> impl Future<
        Output = Result<Option<(crate::sql::TableName, rows::Backlog)>, tokio_postgres::Error>,
    > + Send {
        let limit = options.exact_count_limit;
        let filtered = self.rows_filter();
        async move {
            match filtered {
                Some((table, filter)) => rows::pending(client, table, filter, limit).await,
                None => Ok(None),
            }
        }
    }

    /// The table as written and the filter naming its rows, for the kinds
    /// whose work is the rows a filter names (`check` reads its column).
    fn rows_filter(&self) -> Option<(&str, &rows::Filter)> {
        None
    }

    /// The tables the task makes (an archive table, partitions), as
    /// written in its config.
    fn makes(&self) -> Vec<Made> {
        Vec::new()
    }

    /// Reads what the task needs to know (never writes, takes no lock beyond
    /// reading) and fixes the plan both a dry run and a run follow.
    fn prepare(
        &self,
        ctx: &mut TaskContext<'_>,
    ) -> impl Future<Output = Result<Self::Plan, TaskError>> + Send;
    /// The dry run: what a run of this plan would do, changing nothing.
    fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &Self::Plan,
    ) -> impl Future<Output = Result<Outcome, TaskError>> + Send;
    /// The run: carries the plan out in bounded batches.
    fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: Self::Plan,
    ) -> impl Future<Output = Result<Outcome, TaskError>> + Send;
    fn check(&self, client: &Client) -> impl Future<Output = Vec<CheckProblem>> + Send;

    /// The dry run's text, from this kind's own `details` (read back into
    /// the kind's plan type): what `pgmaint plan` prints under the task.
    /// `None` leaves it to the printer's generic text (summary, lists).
    fn plan_lines(_details: &serde_json::Value, _plan: &PlanContext<'_>) -> Option<Vec<PlanLine>>
    where
        Self: Sized,
    {
        None
    }

    /// What a finished run of this kind says beyond its summary and its
    /// row in the table, from its own `details` (orphans found, a sql
    /// task's result rows).
    fn outcome_lines(_details: &serde_json::Value) -> Vec<OutcomeLine>
    where
        Self: Sized,
    {
        Vec::new()
    }
}

/// One line of what a finished task says, as the printer lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeLine {
    /// Prose after the task's name (`old_logs: ...`).
    Named(String),
    /// Prose on its own.
    Plain(String),
    /// An indented item under the line before.
    Item(String),
    /// Printed as it is (a table, already fitted to the terminal).
    Block(String),
}

/// What a kind's plan text may use beyond its `details`: the task's name,
/// its row and batch counts, and the options it runs with.
pub struct PlanContext<'a> {
    pub name: &'a str,
    pub rows: u64,
    pub batches: u64,
    pub options: &'a TaskOptions,
}

/// One line of a task's plan as a person reads it: prose, or an item of a
/// list under it. The printer indents and wraps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanLine {
    Say(String),
    Item(String),
}

/// Objects (tables, views, files) a plan lists before "and N more".
pub(crate) const LISTED: usize = 10;

impl PlanLine {
    /// A list under a plan: the first `LISTED` items, then how many more.
    pub(crate) fn list(items: impl IntoIterator<Item = String>) -> Vec<PlanLine> {
        let items: Vec<String> = items.into_iter().collect();
        let more = items.len().saturating_sub(LISTED);
        let mut lines: Vec<PlanLine> = items.into_iter().take(LISTED).map(PlanLine::Item).collect();
        if more > 0 {
            lines.push(PlanLine::Item(format!(
                "and {} more (--json lists them)",
                crate::output::count(more as u64)
            )));
        }
        lines
    }

    /// What an upkeep plan's statements lock, and how long each waits.
    pub(crate) fn locks(locks: &str, options: &TaskOptions) -> PlanLine {
        PlanLine::Say(format!(
            "Locks: {locks}; each statement waits at most lock_timeout {} for its lock, and is retried (up to {} times).",
            options.lock_timeout, options.max_retries
        ))
    }

    /// A summary as the first line of a plan: capitalized, with a period.
    pub(crate) fn summary(summary: &str) -> PlanLine {
        let mut chars = summary.chars();
        let capitalized: String = match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        };
        PlanLine::Say(format!("{capitalized}."))
    }
}

/// Makes a relative path relative to `base`.
pub(crate) fn anchor(base: &std::path::Path, path: &mut String) {
    if std::path::Path::new(path.as_str()).is_relative() {
        *path = base.join(path.as_str()).display().to_string();
    }
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
    /// words a person can act on: the referencing table schema-qualified as
    /// the config spells it, and whether the constraint is deferred (its
    /// check came at the batch's COMMIT), read from the catalog.
    pub async fn from_batch(
        err: &tokio_postgres::Error,
        table: &crate::sql::TableName,
        client: &Client,
    ) -> TaskError {
        let Some(db) = err
            .as_db_error()
            .filter(|db| *db.code() == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
        else {
            return TaskError::Database(crate::db::describe(err));
        };
        let constraint = db.constraint().unwrap_or("?");
        let referencing = match (db.schema(), db.table()) {
            (Some(schema), Some(name)) => format!(
                "{}.{}",
                crate::sql::as_written(schema),
                crate::sql::as_written(name)
            ),
            (None, Some(name)) => crate::sql::as_written(name),
            _ => "another table".into(),
        };
        let deferred = match (db.schema(), db.table()) {
            (Some(schema), Some(name)) => {
                crate::db::constraint_is_deferred(client, schema, name, constraint)
                    .await
                    .unwrap_or(false)
            }
            _ => false,
        };
        let when = if deferred {
            ", a deferred constraint checked when the batch commits"
        } else {
            ""
        };
        let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
        let source = format!(
            "{}.{}",
            crate::sql::as_written(&table.schema),
            crate::sql::as_written(&table.name)
        );
        TaskError::Database(format!(
            "rows of {source} are still referenced by {referencing} through foreign key \"{constraint}\"{when}{detail}; the batch was rolled back (on_referenced = \"fail\"). Leave out `on_referenced` to keep referenced rows in place and remove the rest, or remove or re-point the rows of {referencing} first (a task listed before this one, or the application itself); if an ORM's migrations manage the schema, a change to the constraint belongs in them"
        ))
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
pub(crate) use crate::status::{Counters, Outcome};

/// Where a running task records its progress in the state schema.
pub struct ProgressRecord {
    pub schema: String,
    pub task_run_id: i64,
    last: Option<Instant>,
}

impl ProgressRecord {
    pub(crate) fn new(schema: String, task_run_id: i64) -> Self {
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
    /// Where more connections to the same database come from (a walk's
    /// `parallel = N` walkers); None where there is none to open.
    pub target: Option<&'a crate::connect::Target>,
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
        self.backup_writer_as(table, columns, &crate::store::backups::SavedAs::REMOVED)
            .await
    }

    /// As `backup_writer`, for rows saved as `saved_as` says (an orphans
    /// task's `set_null` saves the values it clears, with the row's key).
    pub(crate) async fn backup_writer_as(
        &self,
        table: &crate::sql::TableName,
        columns: &[crate::db::Column],
        saved_as: &crate::store::backups::SavedAs<'_>,
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
            saved_as,
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

//! What `migrate up`, `down` and `status` do with `format = "command"`:
//! the application's own migrator run as one audited run under pgmaint's
//! safety net (pgmaint's migration lock, so two `migrate up` never run at
//! once; the blocker check over every user table, since which tables the
//! migrator touches is unknown; `PGOPTIONS` with the timeouts), the
//! catalog compared before and after it, the run recorded with the
//! command, its exit status, its duration, its last lines and that
//! difference; and the migrator's own ledger read for `status`.

use serde::Serialize;
use tokio_postgres::Client;

use super::apply::Direction;
use super::catalog::{self, Diff};
use super::command::{CommandSettings, Invocation, Ran};
use super::ledger::Ledger;
use super::ledger::app::{AppLedger, AppLedgerView, ToolTask};
use super::runs::Audit;
use super::{Format, MigrateError, Settings, blockers};
use crate::status::{Outcome, Status, TaskReport};
use crate::store;
use crate::unnamed::Unnamed;

/// `[migrations.command] ledger_table`, when the migrator's config
/// renames its ledger.
pub fn ledger_table(settings: &Settings) -> Option<&str> {
    settings.command.as_ref()?.ledger_table.as_deref()
}

/// The `[migrations.command]` table of settings made with `format =
/// "command"`.
pub fn command_of(settings: &Settings) -> Result<&CommandSettings, MigrateError> {
    settings
        .command
        .as_ref()
        .ok_or_else(|| MigrateError::Files("[migrations] format is not \"command\"".into()))
}

/// The command `direction` runs; a down without `[migrations.command]
/// down` is refused.
pub fn invocation(
    settings: &Settings,
    direction: Direction,
    target: &crate::connect::Target,
) -> Result<Invocation, MigrateError> {
    let command = command_of(settings)?;
    let text = match direction {
        Direction::Up => command.up.as_str(),
        Direction::Down => command.down.as_deref().ok_or_else(|| {
            MigrateError::Refused(format!(
                "[migrations.command] has no `down`, so pgmaint does not know how to revert; nothing was changed\n  help: add down = \"{}\" (the migrator's own revert), or revert with the migrator itself",
                match command.ledger {
                    Some(AppLedger::Knex) | None => "npx knex migrate:down",
                    Some(AppLedger::Rails) => "bin/rails db:rollback",
                    Some(AppLedger::Django) => "python manage.py migrate APP PREVIOUS",
                    Some(AppLedger::Prisma) => "a script: prisma has no down migrations",
                }
            ))
        })?,
    };
    Ok(Invocation::new(text, &command.workdir, target, settings))
}

/// The message for `migrate new`, `repair` and `baseline`, which the
/// application's own tool does.
pub fn left_to_the_tool(settings: &Settings, what: ToolTask, asked: &str) -> MigrateError {
    let ledger = settings.command.as_ref().and_then(|c| c.ledger);
    let how = match ledger {
        Some(ledger) => format!("`{}`", ledger.tool_command(what)),
        None => AppLedger::ALL
            .iter()
            .map(|l| format!("{}: `{}`", l.as_str(), l.tool_command(what)))
            .collect::<Vec<_>>()
            .join("; "),
    };
    MigrateError::Refused(format!(
        "`pgmaint migrate {asked}` is the application's own migrator's job with format = \"command\"; nothing was changed\n  help: use {how}"
    ))
}

/// pgmaint's own migration lock (the key `format = "pgmaint"` takes for
/// the state schema): two `migrate up` never run at once.
async fn lock_key(client: &Client, state_schema: &str) -> Result<i64, MigrateError> {
    let database: String = client
        .row("SELECT current_database()::text", &[])
        .await?
        .get(0);
    Ok(Ledger::of(Format::Pgmaint, state_schema).lock_key(&database, state_schema))
}

pub async fn lock(
    client: &Client,
    state_schema: &str,
    waiting: impl FnOnce(Option<i32>),
    give_up: Option<std::time::Duration>,
) -> Result<(), MigrateError> {
    let key = lock_key(client, state_schema).await?;
    super::engine::advisory_lock(client, key, waiting, give_up).await
}

pub async fn unlock(client: &Client, state_schema: &str) -> Result<(), MigrateError> {
    let key = lock_key(client, state_schema).await?;
    client.row("SELECT pg_advisory_unlock($1)", &[&key]).await?;
    Ok(())
}

/// Stops (or waits, as `[migrations] blockers` says) while a session
/// holds any user table in a transaction that is idle or long.
pub async fn clear_blockers(
    client: &Client,
    settings: &Settings,
    state_schema: &str,
    direction: Direction,
) -> Result<(), MigrateError> {
    let what = match direction {
        Direction::Up => "the migrator",
        Direction::Down => "the migrator's down",
    };
    crate::db::under(
        settings.timeouts(),
        blockers::clear(
            client,
            blockers::Held::AnyUserTable {
                except_schema: state_schema,
            },
            settings.lock_timeout,
            settings.blockers,
            settings.blockers_wait,
            what,
        ),
    )
    .await
}

/// The ledger to read: `[migrations.command] ledger`, else the one the
/// database has (`None` before the migrator first ran).
pub async fn ledger_of(
    client: &Client,
    settings: &Settings,
) -> Result<Option<AppLedger>, MigrateError> {
    let command = command_of(settings)?;
    if let Some(ledger) = command.ledger {
        return Ok(Some(ledger));
    }
    let dir = settings.dir.clone();
    let found = crate::db::under(
        settings.timeouts(),
        crate::db::read_only(client, async { Ok(AppLedger::found(client, &dir).await) }),
    )
    .await?;
    found.map_err(MigrateError::Files)
}

/// The ledger's rows, in one read-only transaction under the timeouts.
pub async fn read_ledger(
    client: &Client,
    settings: &Settings,
    ledger: AppLedger,
) -> Result<AppLedgerView, MigrateError> {
    Ok(crate::db::under(
        settings.timeouts(),
        crate::db::read_only(client, ledger.read(client, ledger_table(settings))),
    )
    .await?)
}

/// What the ledger gained and lost over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerChange {
    pub ledger: Option<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

fn ledger_change(
    settings: &Settings,
    ledger: Option<AppLedger>,
    before: &AppLedgerView,
    after: &AppLedgerView,
) -> LedgerChange {
    let keys = |v: &AppLedgerView| -> Vec<String> {
        v.entries
            .iter()
            .filter(|e| e.status == super::ledger::app::AppState::Applied)
            .map(|e| e.version.clone())
            .collect()
    };
    let (was, now) = (keys(before), keys(after));
    LedgerChange {
        ledger: ledger.map(|l| l.name(ledger_table(settings))),
        added: now.iter().filter(|k| !was.contains(k)).cloned().collect(),
        removed: was.iter().filter(|k| !now.contains(k)).cloned().collect(),
    }
}

/// What one run of the migrator did.
#[derive(Debug, Serialize)]
pub struct CommandSummary {
    pub run_id: i64,
    pub task_run_id: i64,
    pub status: Status,
    pub direction: Direction,
    pub command: String,
    pub workdir: String,
    pub pgoptions: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: f64,
    pub catalog: Diff,
    pub ledger: LedgerChange,
    pub error: Option<String>,
    /// What the trace on a scratch copy found it drops, or why there is
    /// no trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<super::command_trace::CommandTrace>,
    /// What was backed up on the live database before it ran.
    pub backups: Vec<super::drops::Saved>,
    #[serde(skip)]
    pub ran: Option<Ran>,
}

impl CommandSummary {
    fn task(&self) -> String {
        format!("migrate:{}", self.direction.as_str())
    }

    /// The run as the runner reports task runs, for notifications.
    pub fn report(&self, details: &serde_json::Value) -> crate::status::RunReport {
        crate::status::RunReport {
            run_id: self.run_id,
            dry_run: false,
            status: self.status,
            tasks: vec![TaskReport {
                name: self.task(),
                kind: "migration",
                status: self.status,
                rows: 0,
                batches: 0,
                duration_ms: self.duration_ms as u64,
                details: details.clone(),
                severity: crate::options::Severity::default(),
                error: self.error.clone(),
                retries: 0,
            }],
            unconfirmed: Vec::new(),
        }
    }

    /// The notice its outcome is sent with.
    pub fn notice(&self, via_api: bool, origin: crate::notify::Origin) -> crate::outcome::Notice {
        super::runs::notice(self.direction, via_api, origin)
    }

    /// What the audit trail keeps in the task run's details.
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "format": "command",
            "direction": self.direction,
            "command": self.command,
            "workdir": self.workdir,
            "pgoptions": self.pgoptions,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "duration_ms": self.duration_ms,
            "stdout_tail": self.ran.as_ref().map(|r| r.stdout_tail.clone()).unwrap_or_default(),
            "stderr_tail": self.ran.as_ref().map(|r| r.stderr_tail.clone()).unwrap_or_default(),
            "catalog": self.catalog,
            "ledger": self.ledger,
            "trace": self.trace,
            "backups": self.backups,
        })
    }
}

/// Where and how a command runs.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    /// pgmaint's session, holding the lock.
    pub session: &'a Client,
    pub settings: &'a Settings,
    pub state_schema: &'a str,
    pub stop: &'a crate::stop::Stop,
    /// Pass the command's output through to pgmaint's own (not with
    /// `--json`).
    pub echo: bool,
    /// Its trace on a scratch copy, and what was backed up from it.
    pub trace: Option<&'a super::command_trace::CommandTrace>,
    pub backups: &'a [super::drops::Saved],
}

/// Runs `invocation` as one audited run: the catalog and the ledger read
/// before and after it, the run and its task run (`migrate:up` or
/// `migrate:down`, kind `migration`) recorded on the audit's own
/// connection. The caller holds the lock (`lock`) and has cleared the
/// blockers; it releases the lock after and sends the outcome
/// (`CommandSummary::report`). `Ok` with the error when the command
/// failed.
pub async fn execute(
    job: &Job<'_>,
    invocation: &Invocation,
    direction: Direction,
    audit: Audit<'_>,
) -> Result<(CommandSummary, Option<MigrateError>), MigrateError> {
    let Job {
        session,
        settings,
        state_schema,
        stop,
        echo,
        trace,
        backups,
    } = *job;
    let exclude = vec![state_schema.to_string()];
    let timeouts = settings.timeouts();
    let snapshot = || async {
        crate::db::under(timeouts, catalog::snapshot(session, &exclude))
            .await
            .map_err(MigrateError::from)
    };
    let before = snapshot().await?;
    let ledger_before = ledger_of(session, settings).await?;
    let rows_before = match ledger_before {
        Some(l) => read_ledger(session, settings, l).await?,
        None => AppLedgerView::default(),
    };
    let run_id = store::start_run(
        audit.recorder,
        state_schema,
        &audit.trigger,
        false,
        audit.owner,
    )
    .await?;
    if let Some(tell) = audit.started {
        let _ = tell.send(run_id);
    }
    let recorder = &*audit.recorder;
    let task = format!("migrate:{}", direction.as_str());
    let task_run_id =
        store::start_task_run(recorder, state_schema, run_id, &task, "migration", false).await?;
    let ran = super::command::run(invocation, echo, stop).await;
    // What the migrator did, whatever its exit status says.
    let after = snapshot().await;
    let ledger_after = match ledger_before {
        Some(l) => Ok(Some(l)),
        None => ledger_of(session, settings).await,
    };
    let rows_after = match &ledger_after {
        Ok(Some(l)) => read_ledger(session, settings, *l).await,
        _ => Ok(AppLedgerView::default()),
    };
    let (catalog, mut problems) = match &after {
        Ok(after) => (catalog::diff(&before, after), Vec::new()),
        Err(err) => (
            Diff::default(),
            vec![format!(
                "the catalog could not be read after the run: {err}"
            )],
        ),
    };
    let ledger = match (&ledger_after, &rows_after) {
        (Ok(l), Ok(rows)) => ledger_change(settings, *l, &rows_before, rows),
        (Err(err), _) | (_, Err(err)) => {
            problems.push(format!("the ledger could not be read after the run: {err}"));
            LedgerChange::default()
        }
    };
    let (ran, error) = match ran {
        Ok(ran) if ran.succeeded() => (Some(ran), None),
        Ok(ran) => {
            let words = ran.last_words(5);
            let error = format!(
                "the migrator `{}` {}{}{}",
                invocation.command,
                ran.says(),
                if ran.stopped {
                    " after pgmaint passed on a stop"
                } else {
                    ""
                },
                if words.is_empty() {
                    String::new()
                } else {
                    format!("; its last lines:\n    {}", words.join("\n    "))
                }
            );
            (Some(ran), Some(error))
        }
        Err(err) => (None, Some(err.to_string())),
    };
    let error = match (error, problems.is_empty()) {
        (error, true) => error,
        (Some(error), false) => Some(format!("{error}; {}", problems.join("; "))),
        (None, false) => Some(problems.join("; ")),
    };
    let status = if error.is_some() {
        Status::Failed
    } else {
        Status::Succeeded
    };
    let summary = CommandSummary {
        run_id,
        task_run_id,
        status,
        direction,
        command: invocation.command.clone(),
        workdir: invocation.workdir.display().to_string(),
        pgoptions: invocation.pgoptions().to_string(),
        exit_code: ran.as_ref().and_then(|r| r.exit_code),
        signal: ran.as_ref().and_then(|r| r.signal),
        duration_ms: ran.as_ref().map(|r| r.duration_ms).unwrap_or_default(),
        catalog,
        ledger,
        error: error.clone(),
        trace: trace.cloned(),
        backups: backups.to_vec(),
        ran,
    };
    let outcome = Outcome {
        status,
        rows: 0,
        batches: 0,
        retries: 0,
        error: error.clone(),
        details: summary.details(),
    };
    store::finish_task_run(
        recorder,
        state_schema,
        task_run_id,
        &outcome,
        summary.duration_ms as i64,
    )
    .await?;
    store::finish_run(recorder, state_schema, run_id, status, error.as_deref()).await?;
    let failed = error.map(|text| {
        MigrateError::Failed(format!(
            "{text}\n  help: the run is in `pgmaint history`, with what changed in the schema; fix the cause, then `pgmaint migrate {}` again",
            direction.as_str()
        ))
    });
    Ok((summary, failed))
}

/// What `migrate status` shows with `format = "command"`.
#[derive(Debug, Serialize)]
pub struct CommandStatus {
    pub ledger: Option<AppLedger>,
    #[serde(flatten)]
    pub view: AppLedgerView,
    /// The `status` command's output, verbatim, and how it ended.
    pub status_command: Option<StatusCommand>,
}

#[derive(Debug, Serialize)]
pub struct StatusCommand {
    pub command: String,
    pub exit_code: Option<i32>,
    pub output: String,
}

impl CommandStatus {
    /// What `status --exit-code` passes with: no failed row, no knex lock
    /// left behind, and the status command (when there is one) exited 0
    /// (`prisma migrate status` exits 1 while migrations are pending).
    pub fn is_clean(&self) -> bool {
        self.view.is_clean()
            && self
                .status_command
                .as_ref()
                .is_none_or(|s| s.exit_code == Some(0))
    }
}

/// The ledger's rows, and, given the target to run it with (the same
/// environment as `up`), the `status` command's output when there is one.
pub async fn status(
    client: &Client,
    settings: &Settings,
    run_status_with: Option<&crate::connect::Target>,
) -> Result<CommandStatus, MigrateError> {
    let command = command_of(settings)?;
    let ledger = ledger_of(client, settings).await?;
    let view = match ledger {
        Some(l) => read_ledger(client, settings, l).await?,
        None => AppLedgerView::default(),
    };
    let status_command = match (&command.status, run_status_with) {
        (None, _) | (_, None) => None,
        (Some(text), Some(target)) => {
            let invocation = Invocation::new(text, &command.workdir, target, settings);
            let ran = super::command::run_captured(&invocation)
                .await
                .map_err(|e| MigrateError::Failed(e.to_string()))?;
            Some(StatusCommand {
                command: text.clone(),
                exit_code: ran.0,
                output: ran.1,
            })
        }
    };
    Ok(CommandStatus {
        ledger,
        view,
        status_command,
    })
}

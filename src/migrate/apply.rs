//! Applying or reverting one migration on a session of its own, under the
//! safety net: every statement under `lock_timeout` (a busy lock is
//! retried with the shared policy, never queued behind), a transactional
//! file as one transaction with its ledger row (retried whole), a
//! non-transactional one statement by statement with its progress in
//! pgmaint's store (retried from the statement that met the lock; a rerun
//! resumes at the first unfinished statement, after dropping the invalid
//! index a failed concurrent build left), and what a down drops backed up
//! first (`drops`).

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::drops::{self, Saved};
use super::ledger::Ledger;
use super::statements::{self, Statement};
use super::{MigrateError, Migration, Script, Settings};
use crate::db::SessionTimeouts;
use crate::store::schema_migrations as store;
use crate::unnamed::Unnamed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// One statement as it ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatementRun {
    pub line: usize,
    pub column: usize,
    /// Its first line, for the audit trail and the output.
    pub head: String,
    pub duration_ms: f64,
    /// Tries that met a busy lock before the one that went through.
    pub retries: u32,
    /// Found already done by an earlier run (a resumed migration).
    pub skipped: bool,
}

/// What applying or reverting one migration did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MigrationRun {
    pub statements: Vec<StatementRun>,
    pub retries: u32,
    pub backups: Vec<Saved>,
    pub duration_ms: f64,
    /// Statements an earlier run had finished, not run again.
    pub resumed_at: Option<usize>,
    /// The invalid index an earlier failed concurrent build left, dropped.
    pub dropped_invalid_index: Option<String>,
}

/// Everything one migration needs to run.
pub struct Job<'a> {
    pub client: &'a Client,
    pub settings: &'a Settings,
    pub state_schema: &'a str,
    pub ledger: &'a Ledger,
    pub run_id: Option<i64>,
    pub stop: &'a crate::stop::Stop,
}

impl Job<'_> {
    fn timeouts(&self) -> SessionTimeouts {
        self.settings.timeouts()
    }
}

/// The statements of a script; a transactional file the parser cannot
/// read runs as one piece (PostgreSQL parses it), a non-transactional one
/// is refused, since it could not be resumed statement by statement.
pub fn statements_of(script: &Script) -> Result<Vec<Statement>, MigrateError> {
    match statements::split(&script.text) {
        Ok(statements) => {
            if let Some(s) = statements.iter().find(|s| s.controls_transaction) {
                return Err(MigrateError::Files(format!(
                    "{}:{}:{}: `{}` controls the transaction, and pgmaint runs each migration in one transaction with its ledger row (or, outside one, each statement with its progress)\n  help: remove the BEGIN/COMMIT lines; for a file that must run outside a transaction, mark it so (sqlx: a first line `-- no-transaction`; dbmate: `transaction:false`; pgmaint: `-- pgmaint: transaction=none`)",
                    script.path.display(),
                    s.line,
                    s.column,
                    s.text.trim()
                )));
            }
            Ok(statements)
        }
        Err(_) if script.transactional => Ok(vec![Statement {
            text: script.text.clone(),
            line: 1,
            column: 1,
            touches: Vec::new(),
            drops: Vec::new(),
            concurrent_index: None,
            needs_own_transaction: false,
            concurrently: false,
            locks_out_writes: false,
            controls_transaction: false,
            unseen_drop: Some("a file pgmaint's parser cannot read"),
        }]),
        Err(at) => Err(MigrateError::Files(format!(
            "{}:{at}\n  help: a file that runs outside a transaction is run statement by statement, so pgmaint must be able to split it; fix the statement, or if PostgreSQL accepts it, put it in a file of its own",
            script.path.display()
        ))),
    }
}

/// Applies (`Up`) or reverts (`Down`) `migration`, recording it in the
/// ledger and in pgmaint's store.
pub async fn run(
    job: &Job<'_>,
    migration: &Migration,
    direction: Direction,
    previous: Option<i64>,
) -> Result<MigrationRun, (MigrationRun, MigrateError)> {
    let script = match direction {
        Direction::Up => &migration.up,
        Direction::Down => match &migration.down {
            Some(down) => down,
            None => {
                return Err((
                    MigrationRun::default(),
                    MigrateError::Refused(format!("migration {} has no down", migration.written)),
                ));
            }
        },
    };
    let statements = statements_of(script).map_err(|e| (MigrationRun::default(), e))?;
    let started = Instant::now();
    let ledger_name = job.ledger.name();
    let checksum = script_checksum(migration, direction);
    let earlier = crate::db::under(job.timeouts(), async {
        crate::db::read_only(
            job.client,
            store::runs_of(job.client, job.state_schema, &ledger_name),
        )
        .await
    })
    .await
    .map(|runs| {
        runs.into_iter().find(|r| {
            r.version == migration.version
                && r.status != "done"
                && r.direction == direction.as_str()
        })
    });
    let earlier = match earlier {
        Ok(earlier) => earlier,
        Err(err) => return Err((MigrationRun::default(), err.into())),
    };
    let done = if script.transactional {
        0
    } else {
        resume_point(earlier.as_ref(), &checksum, &statements, script)
            .map_err(|e| (MigrationRun::default(), e))?
    };
    let recorded = crate::db::under(job.timeouts(), async {
        crate::db::committed(job.client, async {
            store::start_migration_run(
                job.client,
                job.state_schema,
                &ledger_name,
                migration.version,
                direction.as_str(),
                &checksum,
                &script.text,
                statements.len() as i32,
                done as i32,
                job.run_id,
            )
            .await
        })
        .await
    })
    .await;
    if let Err(err) = recorded {
        return Err((MigrationRun::default(), err.into()));
    }
    let resuming = earlier.is_some();
    let mut report = MigrationRun::default();
    let result = if script.transactional {
        in_one_transaction(
            job,
            migration,
            direction,
            previous,
            &statements,
            &mut report,
        )
        .await
    } else {
        statement_by_statement(
            job,
            migration,
            direction,
            previous,
            &statements,
            (done, resuming),
            &mut report,
        )
        .await
    };
    report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => {
            if direction == Direction::Up {
                // As sqlx: the time is written after the commit.
                let timed = crate::db::under(job.timeouts(), async {
                    crate::db::committed(
                        job.client,
                        job.ledger
                            .record_time(job.client, migration, started.elapsed()),
                    )
                    .await
                })
                .await;
                if let Err(err) = timed {
                    tracing::warn!(
                        "migration {} applied; its execution time was not recorded: {}",
                        migration.written,
                        crate::db::describe(&err)
                    );
                }
            }
            Ok(report)
        }
        Err(err) => {
            let text = err.to_string();
            let _ = crate::db::under(job.timeouts(), async {
                crate::db::committed(
                    job.client,
                    store::migration_failed(
                        job.client,
                        job.state_schema,
                        &ledger_name,
                        migration.version,
                        &text,
                    ),
                )
                .await
            })
            .await;
            Err((report, err))
        }
    }
}

/// Where a non-transactional script resumes: after the statements an
/// unfinished earlier run of it finished, when those statements still
/// read as they did (the rest of the file may have been fixed); refused
/// when one of them changed, since running them again is not safe.
fn resume_point(
    earlier: Option<&store::MigrationRun>,
    checksum: &[u8],
    statements: &[Statement],
    script: &Script,
) -> Result<usize, MigrateError> {
    let Some(earlier) = earlier else { return Ok(0) };
    let done = earlier.statements_done.max(0) as usize;
    if done == 0 || earlier.checksum == checksum {
        return Ok(done);
    }
    let before = statements::split(&earlier.sql_text).unwrap_or_default();
    let unchanged = before.len() >= done
        && statements.len() >= done
        && before[..done]
            .iter()
            .zip(&statements[..done])
            .all(|(a, b)| a.text == b.text);
    if unchanged {
        return Ok(done);
    }
    Err(MigrateError::Refused(format!(
        "{}: an earlier run finished its first {done} statement(s), and the file changed among them since; nothing was run\n  help: restore those statements as they ran (fix only what comes after them), or, once you have checked that running them again is safe, `pgmaint migrate repair` the migration to start it from its first statement",
        script.path.display()
    )))
}

/// The checksum recorded with a run: the up's (what the ledger keeps), or
/// for a down the down file's.
fn script_checksum(migration: &Migration, direction: Direction) -> Vec<u8> {
    match (direction, &migration.down) {
        (Direction::Down, Some(down)) => down.checksum(),
        _ => migration.up.checksum(),
    }
}

impl StatementRun {
    /// A statement that ran (since `started`, after `retries` busy
    /// locks), or that an earlier run had finished (`None`: skipped).
    fn of(statement: &Statement, started: Option<Instant>, retries: u32) -> StatementRun {
        let first = statement.first_line();
        let mut head: String = first.chars().take(72).collect();
        if first.chars().count() > 72 {
            head.push('…');
        }
        StatementRun {
            line: statement.line,
            column: statement.column,
            head,
            duration_ms: started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
            retries,
            skipped: started.is_none(),
        }
    }
}

/// Backs up what `statement` drops, in the open transaction.
async fn save_drops(
    job: &Job<'_>,
    migration: &Migration,
    statement: &Statement,
) -> Result<Vec<Saved>, MigrateError> {
    let mut saved = Vec::new();
    let task = task_of(migration);
    let dropper = match &migration.down {
        Some(down) => format!(
            "the down {}",
            down.path.file_name().unwrap_or_default().to_string_lossy()
        ),
        None => format!("the down of {}", migration.written),
    };
    for written in &statement.drops {
        let found = crate::db::under(job.timeouts(), drops::expand(job.client, written)).await?;
        for drop in &found {
            let backup = drops::save(
                job.client,
                job.state_schema,
                &job.settings.backup_dir,
                &task,
                drop,
                (
                    &dropper,
                    "mark the migration irreversible (`-- pgmaint: irreversible`) and back the column up yourself",
                ),
            );
            if let Some(s) = crate::db::under(job.timeouts(), backup).await? {
                saved.push(s);
            }
        }
    }
    Ok(saved)
}

fn task_of(migration: &Migration) -> String {
    format!("migrate:{}", migration.written)
}

/// A whole file and its ledger row in one transaction, retried whole when
/// a lock stays busy past `lock_timeout`.
async fn in_one_transaction(
    job: &Job<'_>,
    migration: &Migration,
    direction: Direction,
    previous: Option<i64>,
    statements: &[Statement],
    report: &mut MigrationRun,
) -> Result<(), MigrateError> {
    let mut waits = crate::retry::lock_waits(job.settings.max_retries);
    let mut retries = 0u32;
    loop {
        let mut runs = Vec::new();
        let mut backups = Vec::new();
        let attempt = async {
            job.client.batch_execute("BEGIN").await?;
            crate::db::set_local_timeouts(job.client, &job.timeouts()).await?;
            for statement in statements {
                if direction == Direction::Down {
                    backups.extend(save_drops(job, migration, statement).await?);
                }
                let started = Instant::now();
                job.client
                    .batch_execute(&statement.text)
                    .await
                    .map_err(|e| at_statement(migration, direction, statement, &e))?;
                runs.push(StatementRun::of(statement, Some(started), retries));
            }
            record_ledger(job, migration, direction, previous).await?;
            job.client.batch_execute("COMMIT").await?;
            Ok::<(), MigrateError>(())
        }
        .await;
        match attempt {
            Ok(()) => {
                report.statements = runs;
                report.backups = backups;
                report.retries = retries;
                return Ok(());
            }
            Err(err) => {
                let _ = job.client.batch_execute("ROLLBACK").await;
                if lock_busy(&err)
                    && let Some(wait) = waits.next()
                {
                    retries += 1;
                    report.retries = retries;
                    tracing::info!(
                        "migration {}: a lock stayed busy; trying again in {} ms",
                        migration.written,
                        wait.as_millis()
                    );
                    job.stop.sleep(wait).await;
                    if job.stop.requested().is_some() {
                        return Err(MigrateError::Failed(format!(
                            "stopped while waiting for a lock; migration {} was not applied",
                            migration.written
                        )));
                    }
                    continue;
                }
                report.retries = retries;
                return Err(err);
            }
        }
    }
}

/// The ledger row and pgmaint's record of a finished migration, in the
/// open transaction.
async fn record_ledger(
    job: &Job<'_>,
    migration: &Migration,
    direction: Direction,
    previous: Option<i64>,
) -> Result<(), MigrateError> {
    match direction {
        Direction::Up => job.ledger.record_up(job.client, migration).await?,
        Direction::Down => {
            job.ledger
                .record_down(job.client, migration, previous)
                .await?
        }
    }
    store::migration_done(
        job.client,
        job.state_schema,
        &job.ledger.name(),
        migration.version,
    )
    .await?;
    Ok(())
}

/// Statement by statement, each in its own implicit transaction (or, for
/// one that drops data, an explicit one with its backup), from `done`;
/// the ledger row last.
async fn statement_by_statement(
    job: &Job<'_>,
    migration: &Migration,
    direction: Direction,
    previous: Option<i64>,
    statements: &[Statement],
    (done, resuming): (usize, bool),
    report: &mut MigrationRun,
) -> Result<(), MigrateError> {
    let timeouts = job.timeouts();
    if done > 0 {
        report.resumed_at = Some(done + 1);
        for statement in &statements[..done.min(statements.len())] {
            report.statements.push(StatementRun::of(statement, None, 0));
        }
    }
    // golang-migrate's ledger says dirty while the statements run, and
    // Flyway's has a failed row, as their own runs leave them.
    let target = match direction {
        Direction::Up => Some(migration.version),
        Direction::Down => previous,
    };
    crate::db::under(
        timeouts,
        crate::db::committed(
            job.client,
            job.ledger
                .mark_dirty(job.client, migration, direction == Direction::Up, target),
        ),
    )
    .await?;
    // A session of its own: these settings hold for its statements, and
    // the session's own come back after them.
    let before = job
        .client
        .row(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')",
            &[],
        )
        .await?;
    let (lock_before, statement_before): (String, String) = (before.get(0), before.get(1));
    job.client
        .row(
            "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
            &[&timeouts.lock_timeout.as_pg_setting(), &timeouts.statement_timeout.as_pg_setting()],
        )
        .await?;
    let result = async {
        for (index, statement) in statements.iter().enumerate().skip(done) {
            if job.stop.requested().is_some() {
                return Err(MigrateError::Failed(format!(
                    "stopped before statement {} of {}; `migrate {}` resumes there",
                    index + 1,
                    statements.len(),
                    direction.as_str()
                )));
            }
            if let Some(index_name) = &statement.concurrent_index {
                match index_state(job.client, statement).await? {
                    Some(true) if index == done && resuming => {
                        // Built by the run that stopped before recording it.
                        report.statements.push(StatementRun::of(statement, None, 0));
                        mark_done(job, migration, index + 1).await?;
                        continue;
                    }
                    Some(false) => {
                        drop_invalid_index(job.client, statement).await?;
                        report.dropped_invalid_index = Some(index_name.clone());
                    }
                    _ => {}
                }
            }
            let mut waits = crate::retry::lock_waits(job.settings.max_retries);
            let mut retries = 0u32;
            let recorded_with_it = loop {
                let started = Instant::now();
                let attempt =
                    run_one(job, migration, direction, statement, index + 1, report).await;
                match attempt {
                    Ok(recorded) => {
                        report
                            .statements
                            .push(StatementRun::of(statement, Some(started), retries));
                        break recorded;
                    }
                    Err(err) if lock_busy(&err) => {
                        let Some(wait) = waits.next() else {
                            return Err(err);
                        };
                        retries += 1;
                        report.retries += 1;
                        if let Some(index_name) = &statement.concurrent_index
                            && index_state(job.client, statement).await? == Some(false)
                        {
                            drop_invalid_index(job.client, statement).await?;
                            report.dropped_invalid_index = Some(index_name.clone());
                        }
                        job.stop.sleep(wait).await;
                        if job.stop.requested().is_some() {
                            return Err(err);
                        }
                    }
                    Err(err) => return Err(err),
                }
            };
            if !recorded_with_it {
                mark_done(job, migration, index + 1).await?;
            }
        }
        crate::db::under(timeouts, async {
            crate::db::committed(
                job.client,
                record_ledger(job, migration, direction, previous),
            )
            .await
        })
        .await
    }
    .await;
    let _ = job
        .client
        .row(
            "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
            &[&lock_before, &statement_before],
        )
        .await;
    result
}

async fn mark_done(job: &Job<'_>, migration: &Migration, done: usize) -> Result<(), MigrateError> {
    let ledger = job.ledger.name();
    crate::db::under(job.timeouts(), async {
        crate::db::committed(
            job.client,
            store::statement_done(
                job.client,
                job.state_schema,
                &ledger,
                migration.version,
                done as i32,
            ),
        )
        .await
    })
    .await?;
    Ok(())
}

/// One statement of a non-transactional file. One that can run in a
/// transaction block runs in one with its progress record (`done`), and
/// for a down with the backup of what it drops, so a kill between the
/// statement and its record cannot run it twice; `Ok(true)` says the
/// progress is recorded. One that cannot (`CREATE INDEX CONCURRENTLY`,
/// `VACUUM`, ... or one PostgreSQL refuses in a block, SQLSTATE 25001)
/// runs on its own (`Ok(false)`).
async fn run_one(
    job: &Job<'_>,
    migration: &Migration,
    direction: Direction,
    statement: &Statement,
    done: usize,
    report: &mut MigrationRun,
) -> Result<bool, MigrateError> {
    let alone = async {
        job.client
            .batch_execute(&statement.text)
            .await
            .map_err(|e| at_statement(migration, direction, statement, &e))
            .map(|()| false)
    };
    if statement.concurrently {
        // A concurrent build's first lock (SHARE UPDATE EXCLUSIVE) queues
        // no reader or writer behind it; its later waits are for every
        // older snapshot in the database to end, which lock_timeout would
        // cut short and retry from scratch. So it runs without one (its
        // statement_timeout holds).
        job.client
            .row("SELECT set_config('lock_timeout', '0', false)", &[])
            .await?;
        let result = alone.await;
        let timeout = job.timeouts().lock_timeout.as_pg_setting();
        job.client
            .row("SELECT set_config('lock_timeout', $1, false)", &[&timeout])
            .await?;
        return result;
    }
    if statement.needs_own_transaction {
        return alone.await;
    }
    let mut refused_in_block = false;
    let attempt = async {
        job.client.batch_execute("BEGIN").await?;
        crate::db::set_local_timeouts(job.client, &job.timeouts()).await?;
        let saved = if direction == Direction::Down {
            save_drops(job, migration, statement).await?
        } else {
            Vec::new()
        };
        if let Err(err) = job.client.batch_execute(&statement.text).await {
            refused_in_block = err.code()
                == Some(&tokio_postgres::error::SqlState::ACTIVE_SQL_TRANSACTION)
                && saved.is_empty();
            return Err(at_statement(migration, direction, statement, &err));
        }
        store::statement_done(
            job.client,
            job.state_schema,
            &job.ledger.name(),
            migration.version,
            done as i32,
        )
        .await?;
        job.client.batch_execute("COMMIT").await?;
        Ok::<_, MigrateError>(saved)
    }
    .await;
    match attempt {
        Ok(saved) => {
            report.backups.extend(saved);
            Ok(true)
        }
        Err(err) => {
            let _ = job.client.batch_execute("ROLLBACK").await;
            if refused_in_block {
                return alone.await;
            }
            Err(err)
        }
    }
}

/// Whether an index of that name exists and is valid (`None`: none).
async fn index_state(client: &Client, statement: &Statement) -> Result<Option<bool>, MigrateError> {
    Ok(built_index(client, statement)
        .await?
        .map(|(valid, _)| valid))
}

/// The index a concurrent build makes, found beside its table (an index
/// lives in its table's schema, which may not be on the search path):
/// whether it is valid, and its qualified name.
async fn built_index(
    client: &Client,
    statement: &Statement,
) -> Result<Option<(bool, String)>, MigrateError> {
    let (Some(index), Some(table)) = (&statement.concurrent_index, statement.touches.first())
    else {
        return Ok(None);
    };
    Ok(client
        .row_opt(
            "SELECT i.indisvalid, format('%I.%I', n.nspname, c.relname)
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE i.indrelid = to_regclass($1) AND c.relname = $2",
            &[table, &statements::folded(index)],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

async fn drop_invalid_index(
    client: &Client,
    statement: &Statement,
) -> Result<Option<String>, MigrateError> {
    let Some((false, name)) = built_index(client, statement).await? else {
        return Ok(None);
    };
    tracing::info!("dropping the invalid index {name} a failed concurrent build left");
    client
        .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
        .await?;
    Ok(Some(name))
}

/// A statement's error, saying which statement of which file.
fn at_statement(
    migration: &Migration,
    direction: Direction,
    statement: &Statement,
    err: &tokio_postgres::Error,
) -> MigrateError {
    let script = match direction {
        Direction::Up => &migration.up,
        Direction::Down => migration.down.as_ref().unwrap_or(&migration.up),
    };
    let text = crate::db::describe(err);
    let at = match err.as_db_error().and_then(|db| match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p as usize),
        _ => None,
    }) {
        // The server's position is in characters, from the statement's start.
        Some(position) => {
            let offset: usize = statement
                .text
                .chars()
                .take(position.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            let (line, column) = statements::position(&statement.text, offset);
            if line == 1 {
                (statement.line, statement.column + column - 1)
            } else {
                (statement.line + line - 1, column)
            }
        }
        None => (statement.line, statement.column),
    };
    let message = format!("{}:{}:{}: {text}", display(&script.path), at.0, at.1);
    if crate::db::is_transient(err) {
        MigrateError::Database(message)
    } else {
        MigrateError::Failed(message)
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Whether the error is a lock that stayed busy (or a lost deadlock).
fn lock_busy(err: &MigrateError) -> bool {
    match err {
        MigrateError::Database(text) => {
            crate::db::gave_up_on_a_lock(text) || text.contains("[SQLSTATE 40P01]")
        }
        _ => false,
    }
}

/// How long a session lock wait for another migrator may last before
/// pgmaint says it is waiting.
pub const LOCK_NOTICE_AFTER: Duration = Duration::from_secs(1);

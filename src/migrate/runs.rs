//! One audited migration run, whoever asked (`pgmaint migrate up/down`,
//! `POST /api/v1/migrations/up`): the migration lock taken, the selection
//! checked (ledger against files, out of order, a down for each, the
//! sessions in the way), then each migration applied in order on the
//! session as a task run of its own (`migrate:<version>`, kind
//! `migration`, each statement with its duration in its details), the run
//! recorded on a second connection so its records commit whatever the
//! migration's session is doing; the caller sends its outcome to the
//! notifiers as a task run's is (`RunSummary::report`).

use tokio_postgres::Client;

use super::apply::{self, Direction, Job, MigrationRun};
use super::engine::Migrator;
use super::status::State;
use super::{MigrateError, Migration, blockers, lint};
use crate::status::{Outcome, Status, TaskReport};
use crate::store::{self, LeaseOwner, Trigger};
use crate::unnamed::Unnamed;

/// What `up` or `down` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub to: Option<i64>,
    pub steps: Option<usize>,
    pub allow_out_of_order: bool,
    /// How long to wait for another migrator's lock; `None`: as long as
    /// it takes (the CLI, which Ctrl-C stops). The API answers before its
    /// request timeout.
    pub lock_wait: Option<std::time::Duration>,
}

/// What a run did to one migration.
#[derive(Debug, serde::Serialize)]
pub struct Done {
    pub version: String,
    pub name: String,
    pub task_run_id: i64,
    pub status: Status,
    pub error: Option<String>,
    pub duration_ms: f64,
    pub details: serde_json::Value,
    #[serde(skip)]
    pub run: MigrationRun,
}

#[derive(Debug, serde::Serialize)]
pub struct RunSummary {
    pub run_id: i64,
    pub status: Status,
    pub direction: Direction,
    pub migrations: Vec<Done>,
}

impl RunSummary {
    /// The run as the runner reports task runs, for its log lines and
    /// notifications (`outcome::finished`, which the caller sends: the
    /// config it needs is the caller's).
    pub fn report(&self) -> crate::status::RunReport {
        crate::status::RunReport {
            run_id: self.run_id,
            dry_run: false,
            status: self.status,
            tasks: self
                .migrations
                .iter()
                .map(|d| TaskReport {
                    name: format!("migrate:{}", d.version),
                    kind: "migration",
                    status: d.status,
                    rows: 0,
                    batches: d.run.statements.len() as u64,
                    duration_ms: d.duration_ms as u64,
                    details: d.details.clone(),
                    severity: crate::options::Severity::default(),
                    error: d.error.clone(),
                    retries: u64::from(d.run.retries),
                })
                .collect(),
            unconfirmed: Vec::new(),
        }
    }

    /// The notice its outcome is sent with.
    pub fn notice(&self, via_api: bool, origin: crate::notify::Origin) -> crate::outcome::Notice {
        notice(self.direction, via_api, origin)
    }
}

/// The notice a migration run's outcome is sent with, whatever ran it.
pub fn notice(
    direction: Direction,
    via_api: bool,
    origin: crate::notify::Origin,
) -> crate::outcome::Notice {
    crate::outcome::Notice {
        started: crate::outcome::Started::Migrate {
            command: format!("migrate {}", direction.as_str()),
            via_api,
        },
        origin,
    }
}

/// Takes the migration lock and chooses what `direction` would run
/// (nothing changed yet; the lock stays held until `unlock`). `Ok` with
/// the chosen migrations and, for a down, why it stops early.
pub async fn choose<'m>(
    client: &Client,
    migrator: &'m Migrator,
    direction: Direction,
    selection: &Selection,
    lock: bool,
    waiting: impl FnOnce(Option<i32>),
) -> Result<(Vec<&'m Migration>, Option<String>), MigrateError> {
    if lock {
        migrator.lock(client, waiting, selection.lock_wait).await?;
        if direction == Direction::Up {
            migrator.ensure_ledger(client).await?;
        }
    }
    let entries = migrator.entries(client).await?;
    let (chosen, stopped) = match direction {
        Direction::Up => (
            migrator.to_apply(&entries, selection.to, selection.allow_out_of_order)?,
            None,
        ),
        Direction::Down => migrator.to_revert(&entries, selection.to, selection.steps)?,
    };
    for m in &chosen {
        apply::statements_of(script_of(m, direction))?;
    }
    Ok((chosen, stopped))
}

pub fn script_of(m: &Migration, direction: Direction) -> &super::Script {
    match direction {
        Direction::Up => &m.up,
        Direction::Down => m.down.as_ref().unwrap_or(&m.up),
    }
}

/// Every table the chosen statements name.
pub fn touched(chosen: &[&Migration], direction: Direction) -> Vec<String> {
    let mut tables = Vec::new();
    for m in chosen {
        for statement in apply::statements_of(script_of(m, direction)).unwrap_or_default() {
            for t in statement.touches {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
    }
    tables
}

/// Stops (or waits, as `[migrations] blockers` says) while sessions hold
/// the chosen migrations' tables in open transactions.
pub async fn clear_blockers(
    client: &Client,
    migrator: &Migrator,
    chosen: &[&Migration],
    direction: Direction,
) -> Result<(), MigrateError> {
    let settings = &migrator.settings;
    let what = match direction {
        Direction::Up => "the migration",
        Direction::Down => "the down",
    };
    blockers::clear(
        client,
        blockers::Held::Tables(&touched(chosen, direction)),
        settings.lock_timeout,
        settings.blockers,
        settings.blockers_wait,
        what,
    )
    .await
}

/// How `migrator`'s files are linted: for the server's version (`None`
/// when linting without a database), with `[migrations] lint_exclude`.
pub async fn lint_options(
    client: Option<&Client>,
    migrator: &Migrator,
) -> Result<lint::Options, MigrateError> {
    let pg_version = match client {
        Some(client) => Some(lint::server_version(client).await?),
        None => None,
    };
    Ok(lint::Options {
        pg_version,
        exclude: migrator.settings.lint_exclude.clone(),
        require_down: migrator.require_down(),
    })
}

/// The lint findings of what `direction` runs of `chosen`: their ups (and
/// a missing down), or their downs.
pub async fn lint(
    client: &Client,
    migrator: &Migrator,
    chosen: &[&Migration],
    direction: Direction,
) -> Result<Vec<lint::Finding>, MigrateError> {
    let options = lint_options(Some(client), migrator).await?;
    let mut findings = Vec::new();
    for m in chosen {
        match direction {
            Direction::Up => findings.extend(lint::up(m, &options)),
            Direction::Down => {
                if let Some(down) = &m.down {
                    findings.extend(lint::script(m, down, Direction::Down, &options));
                }
            }
        }
    }
    on_new_tables(client, chosen, &mut findings).await?;
    Ok(findings)
}

/// The lint of what `up` would run next (pending, failed or dirty
/// migrations; every one with `all`), ups and downs, for the server's
/// version: how many migrations were linted, and the findings.
pub async fn lint_pending(
    client: &Client,
    migrator: &Migrator,
    all: bool,
) -> Result<(usize, Vec<lint::Finding>), MigrateError> {
    let options = lint_options(Some(client), migrator).await?;
    let entries = migrator.entries(client).await?;
    let next: Vec<&Migration> = migrator
        .migrations
        .iter()
        .filter(|m| {
            all || entries.iter().any(|e| {
                e.version == m.version
                    && matches!(
                        e.state,
                        State::Pending | State::Dirty | State::Failed { .. }
                    )
            })
        })
        .collect();
    let mut findings: Vec<lint::Finding> = next
        .iter()
        .flat_map(|m| lint::migration(m, &options))
        .collect();
    let every: Vec<&Migration> = migrator.migrations.iter().collect();
    on_new_tables(client, &every, &mut findings).await?;
    Ok((next.len(), findings))
}

/// Lowers to warnings the lock findings of statements whose tables do not
/// exist yet (an earlier migration of the same run creates them): no one
/// reads or writes a table before it exists, so its lock blocks no one.
pub async fn on_new_tables(
    client: &Client,
    migrations: &[&Migration],
    findings: &mut [lint::Finding],
) -> Result<(), MigrateError> {
    let mut at = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        if f.level != lint::Level::Error || !lint::is_about_locks(&f.rule) {
            continue;
        }
        let Some(m) = migrations.iter().find(|m| m.written == f.version) else {
            continue;
        };
        let script = match f.direction {
            Direction::Up => &m.up,
            Direction::Down => match &m.down {
                Some(down) => down,
                None => continue,
            },
        };
        let Ok(statements) = apply::statements_of(script) else {
            continue;
        };
        if let Some(s) = statements
            .iter()
            .find(|s| (s.line..s.line + s.text.lines().count().max(1)).contains(&f.line))
            .filter(|s| !s.touches.is_empty())
        {
            at.push((i, s.touches.clone()));
        }
    }
    if at.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = at.iter().flat_map(|(_, t)| t.clone()).collect();
    let missing: Vec<String> = crate::db::read_only(client, async {
        client
            .rows(
                "SELECT n FROM unnest($1::text[]) n WHERE to_regclass(n) IS NULL",
                &[&names],
            )
            .await
    })
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    for (i, touches) in at {
        if touches.iter().all(|t| missing.contains(t)) {
            let f = &mut findings[i];
            f.level = lint::Level::Warning;
            f.message.push_str(&format!(
                " (not an error here: {} does not exist yet, so its lock blocks no one)",
                touches.join(", ")
            ));
        }
    }
    Ok(())
}

/// What runs only when confirmed (`--yes`, `confirm: true`), each as a
/// sentence: an error-level finding of `findings` (the lint of `chosen`),
/// and a statement that would lock out writes on a table bigger than
/// `confirm_above`.
pub async fn needing_confirmation(
    client: &Client,
    migrator: &Migrator,
    chosen: &[&Migration],
    direction: Direction,
    findings: &[lint::Finding],
) -> Result<Vec<String>, MigrateError> {
    let mut reasons: Vec<String> = findings
        .iter()
        .filter(|f| f.level == lint::Level::Error)
        .map(lint::Finding::one_line)
        .collect();
    for m in chosen {
        let script = script_of(m, direction);
        for statement in apply::statements_of(script)? {
            if !statement.locks_out_writes || statement.touches.is_empty() {
                continue;
            }
            let limit = migrator.settings.confirm_above as i64;
            let sizes = crate::db::read_only(client, async {
                client
                    .rows(
                        "SELECT r::regclass::text, pg_total_relation_size(r) FROM (SELECT to_regclass(n) AS r FROM unnest($1::text[]) n) t WHERE r IS NOT NULL AND pg_total_relation_size(r) > $2",
                        &[&statement.touches, &limit],
                    )
                    .await
            })
            .await?;
            for row in sizes {
                let (table, bytes): (String, i64) = (row.get(0), row.get(1));
                reasons.push(format!(
                    "{}:{}: `{}` locks out writes on {table} ({} with its indexes, over confirm_above) for as long as it runs",
                    script.path.display(),
                    statement.line,
                    statement.first_line(),
                    crate::output::human_bytes(bytes as f64)
                ));
            }
        }
    }
    Ok(reasons)
}

/// Where the run's outcome goes.
pub struct Audit<'a> {
    /// A connection of its own for the run's records.
    pub recorder: &'a mut Client,
    pub trigger: Trigger,
    pub owner: &'a LeaseOwner,
    /// Told the run's id as soon as it is recorded (the API answers then).
    pub started: Option<tokio::sync::oneshot::Sender<i64>>,
}

/// Runs `chosen` in order as one run, stopping at the first that fails;
/// `each` hears of every migration as it ends; the error is the failure
/// that stopped it. The caller holds the lock (`choose`) and releases it
/// after, and sends the outcome (`RunSummary::report`).
pub async fn execute(
    session: &Client,
    migrator: &Migrator,
    chosen: &[&Migration],
    direction: Direction,
    audit: Audit<'_>,
    stop: &crate::stop::Stop,
    mut each: impl FnMut(&Migration, &Done),
) -> Result<(RunSummary, Option<MigrateError>), MigrateError> {
    let schema = migrator.state_schema.as_str();
    let run_id =
        store::start_run(audit.recorder, schema, &audit.trigger, false, audit.owner).await?;
    if let Some(tell) = audit.started {
        let _ = tell.send(run_id);
    }
    let recorder = &*audit.recorder;
    let job = Job {
        client: session,
        settings: &migrator.settings,
        state_schema: schema,
        ledger: &migrator.ledger,
        run_id: Some(run_id),
        stop,
    };
    let mut done = Vec::new();
    let mut failed = None;
    for m in chosen {
        let task = format!("migrate:{}", m.written);
        let task_run_id =
            store::start_task_run(recorder, schema, run_id, &task, "migration", false).await?;
        let (run, error) = match apply::run(&job, m, direction, migrator.previous(m)).await {
            Ok(run) => (run, None),
            Err((run, err)) => (run, Some(err)),
        };
        let details = serde_json::json!({
            "version": m.written,
            "name": m.name,
            "direction": direction,
            "ledger": migrator.ledger.name(),
            "file": script_of(m, direction).path.display().to_string(),
            "statements": run.statements,
            "backups": run.backups,
            "resumed_at": run.resumed_at,
            "dropped_invalid_index": run.dropped_invalid_index,
        });
        let outcome = Outcome {
            status: if error.is_some() {
                Status::Failed
            } else {
                Status::Succeeded
            },
            rows: 0,
            batches: run.statements.len() as u64,
            retries: u64::from(run.retries),
            error: error.as_ref().map(|e| e.to_string()),
            details: details.clone(),
        };
        store::finish_task_run(
            recorder,
            schema,
            task_run_id,
            &outcome,
            run.duration_ms as i64,
        )
        .await?;
        let entry = Done {
            version: m.written.clone(),
            name: m.name.clone(),
            task_run_id,
            status: outcome.status,
            error: outcome.error.clone(),
            duration_ms: run.duration_ms,
            details,
            run,
        };
        each(m, &entry);
        done.push(entry);
        if let Some(err) = error {
            failed = Some(err);
            break;
        }
    }
    let status = if failed.is_some() {
        Status::Failed
    } else {
        Status::Succeeded
    };
    let text = failed.as_ref().map(|e| e.to_string());
    store::finish_run(recorder, schema, run_id, status, text.as_deref()).await?;
    let summary = RunSummary {
        run_id,
        status,
        direction,
        migrations: done,
    };
    let failed = failed.map(|err| match err {
        // Refused before it ran anything: still a refusal.
        MigrateError::Refused(text) => MigrateError::Refused(text),
        MigrateError::Files(text) => MigrateError::Files(text),
        err => MigrateError::Failed(format!(
            "{err}\n  help: `pgmaint migrate status` says which statement failed and why; fix the cause, then `pgmaint migrate {}` {}",
            direction.as_str(),
            match direction {
                Direction::Up => "resumes there",
                Direction::Down => "again",
            }
        )),
    });
    Ok((summary, failed))
}

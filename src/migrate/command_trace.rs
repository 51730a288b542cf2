//! What an application's own migrator (`format = "command"`) will drop,
//! learnt before it runs: its command runs against a scratch cluster
//! holding the live schema and the rows of its ledger (so it sees what
//! is applied), and the tables and columns gone afterwards, found by oid
//! and attribute number (a rename is not a drop), are what the real run
//! is expected to drop. `migrate up` and `down` back those up on the
//! live database before the real run (`drops::save`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::Client;

use super::command::Invocation;
use super::command_runs;
use super::scratch::{Scratch, ScratchError};
use super::statements::Drop;
use super::{MigrateError, Settings};
use crate::connect::Target;
use crate::unnamed::Unnamed;

/// What the trace of a command found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandTrace {
    /// The migrator ran on the copy: what it dropped there, the tables it
    /// rewrote, and the strongest lock seen on each table it locked that
    /// blocks the application (sampled every 10 ms while it ran: a lock
    /// held for less can be missed).
    Traced {
        #[serde(serialize_with = "drops_as_text")]
        drops: Vec<Drop>,
        rewrites: Vec<String>,
        locks: Vec<super::trace::TracedLock>,
        copied_with: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        not_copied: Vec<String>,
    },
    /// No trace (no local server binaries, or the migrator failed on the
    /// copy): what it drops is not known, so not backed up.
    NotTraced { reason: String },
}

fn drops_as_text<S: serde::Serializer>(drops: &[Drop], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(drops.iter().map(describe))
}

/// `table public.sessions` or `column public.users.nickname`.
pub fn describe(drop: &Drop) -> String {
    match drop {
        Drop::Table(t) => format!("table {t}"),
        Drop::Column(t, c) => format!("column {t}.{c}"),
        Drop::Schema(s) => format!("schema {s}"),
        Drop::Type(t) => format!("type {t}"),
    }
}

/// Runs `command` (the migrator's up or down) against a scratch copy of
/// the live schema and its ledger, and says what it dropped there.
/// A stop (Ctrl-C, SIGTERM) is passed on to the command on the copy, and
/// then refuses: the migrator has not run on the live database.
pub async fn run(
    live: &Client,
    target: &Target,
    settings: &Settings,
    state_schema: &str,
    command: &str,
    stop: &crate::stop::Stop,
) -> Result<CommandTrace, MigrateError> {
    if !command_runs::command_of(settings)?.trace {
        return Ok(CommandTrace::NotTraced {
            reason: "[migrations.command] trace = false".into(),
        });
    }
    let scratch = match Scratch::with_schema_of(live, target, settings, state_schema).await {
        Ok(scratch) => scratch,
        Err(ScratchError::Setup(why)) => return Ok(CommandTrace::NotTraced { reason: why }),
        Err(err) => return Err(err.into()),
    };
    if let Some(ledger) = command_runs::ledger_of(live, settings).await? {
        // The copy gets the rows of the ledger and of the table beside it.
        let tables = crate::db::under(
            settings.timeouts(),
            crate::db::read_only(
                live,
                ledger.tables(live, command_runs::ledger_table(settings)),
            ),
        )
        .await?;
        for table in [tables.ledger, tables.beside].into_iter().flatten() {
            copy_rows(live, &scratch.client, &table, settings).await?;
        }
    }
    let before = tables(&scratch.client, state_schema).await?;
    let scratch_target = scratch.target()?;
    let workdir = command_runs::command_of(settings)?.workdir.clone();
    let invocation = Invocation::new(command, &workdir, &scratch_target, settings);
    let watcher = scratch.session().await?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let sampling = tokio::spawn(sample_locks(watcher, finished));
    let ran = super::command::run(&invocation, false, stop).await;
    let _ = done.send(());
    let seen = sampling.await.unwrap_or_default();
    if stop.requested().is_some() {
        return Err(MigrateError::Refused(
            "stopped while the migrator ran on a scratch copy of the live schema; it did not run on the live database, and nothing was changed".into(),
        ));
    }
    let ran = ran.map_err(|e| MigrateError::Failed(format!("running `{command}`: {e}")))?;
    if !ran.succeeded() {
        // A stack trace's frames say little; the lines before them more.
        let words: Vec<String> = ran
            .last_words(30)
            .into_iter()
            .filter(|w| !w.trim_start().starts_with("at "))
            .collect();
        let words = &words[words.len().saturating_sub(3)..];
        return Ok(CommandTrace::NotTraced {
            reason: format!(
                "the migrator {} on the scratch copy{}",
                ran.says(),
                if words.is_empty() {
                    String::new()
                } else {
                    format!(": {}", words.join(" / "))
                }
            ),
        });
    }
    let after = tables(&scratch.client, state_schema).await?;
    let mut drops = Vec::new();
    let mut rewrites = Vec::new();
    for (oid, (name, filenode, columns)) in &before {
        match after.get(oid) {
            None => drops.push(Drop::Table(name.clone())),
            Some((_, now, kept)) => {
                if now != filenode {
                    rewrites.push(name.clone());
                }
                let kept: BTreeSet<i16> = kept.keys().copied().collect();
                for (attnum, column) in columns {
                    if !kept.contains(attnum) {
                        drops.push(Drop::Column(name.clone(), column.clone()));
                    }
                }
            }
        }
    }
    // Only tables that were there before: a new one blocks no one.
    let locks = seen
        .into_iter()
        .filter(|(table, _)| before.values().any(|(name, _, _)| name == table))
        .map(|(table, mode)| {
            let (mode, blocks) = super::trace::lock_mode(&mode);
            super::trace::TracedLock {
                table,
                mode,
                blocks,
            }
        })
        .filter(|lock| lock.blocks > super::trace::Blocks::Nothing)
        .collect();
    Ok(CommandTrace::Traced {
        drops,
        rewrites,
        locks,
        copied_with: scratch.copied_with.clone(),
        not_copied: scratch.not_copied.clone(),
    })
}

/// Copies `table`'s rows (as the catalog names it: `"public"."x"`) from
/// the live database to the scratch one (a ledger is small).
async fn copy_rows(
    live: &Client,
    scratch: &Client,
    table: &str,
    settings: &Settings,
) -> Result<(), MigrateError> {
    let rows: String = crate::db::under(
        settings.timeouts(),
        crate::db::read_only(live, async {
            let row = live
                .row(
                    &format!("SELECT coalesce(json_agg(t), '[]')::text FROM {table} t"),
                    &[],
                )
                .await?;
            Ok(row.get(0))
        }),
    )
    .await?;
    let failed = |what: &str, e: tokio_postgres::Error| {
        MigrateError::Failed(format!(
            "{what} the ledger {table} on the scratch cluster: {}",
            crate::db::describe(&e)
        ))
    };
    scratch
        .exec(
            &format!(
                "INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, $1::text::json)"
            ),
            &[&rows],
        )
        .await
        .map_err(|e| failed("copying", e))?;
    // A schema-only copy starts its sequences at 1: each serial or
    // identity column's goes past the copied rows, as on the live one.
    let sequences = scratch
        .rows(
            "SELECT a.attname::text, pg_get_serial_sequence($1::text, a.attname)
               FROM pg_attribute a
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                AND pg_get_serial_sequence($1::text, a.attname) IS NOT NULL",
            &[&table],
        )
        .await
        .map_err(|e| failed("reading the sequences of", e))?;
    for row in sequences {
        let (column, sequence): (String, String) = (row.get(0), row.get(1));
        scratch
            .row(
                &format!(
                    "SELECT setval($1::text::regclass, coalesce((SELECT max({}) FROM {table}), 0) + 1, false)",
                    crate::sql::quote_ident(&column)
                ),
                &[&sequence],
            )
            .await
            .map_err(|e| failed("setting the sequences of", e))?;
    }
    Ok(())
}

/// The strongest lock each table was seen under, sampled from another
/// session until `finished`.
async fn sample_locks(
    watcher: Client,
    mut finished: tokio::sync::oneshot::Receiver<()>,
) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if let Ok(rows) = watcher
            .rows(
                "SELECT format('%I.%I', n.nspname, c.relname), l.mode
                   FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE l.pid <> pg_backend_pid() AND l.locktype = 'relation' AND c.relkind IN ('r', 'p')
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'",
                &[],
            )
            .await
        {
            for r in rows {
                let (table, mode): (String, String) = (r.get(0), r.get(1));
                let stronger = seen.get(&table).is_none_or(|m| {
                    super::trace::strength(&mode) > super::trace::strength(m)
                });
                if stronger {
                    seen.insert(table, mode);
                }
            }
        }
        tokio::select! {
            _ = &mut finished => return seen,
            _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
        }
    }
}

/// Each user table's name, file node and columns by attribute number,
/// by oid.
type Tables = BTreeMap<u32, (String, u32, BTreeMap<i16, String>)>;

async fn tables(client: &Client, state_schema: &str) -> Result<Tables, MigrateError> {
    let rows = client
        .rows(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname), a.attnum, a.attname::text, c.relfilenode
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
                AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
            &[&state_schema],
        )
        .await?;
    let mut out = Tables::new();
    for r in rows {
        let entry = out
            .entry(r.get(0))
            .or_insert_with(|| (r.get(1), r.get(4), BTreeMap::new()));
        if let (Some(attnum), Some(name)) =
            (r.get::<_, Option<i16>>(2), r.get::<_, Option<String>>(3))
        {
            entry.2.insert(attnum, name);
        }
    }
    Ok(out)
}

/// Backs up on the live database what `trace` saw the migrator drop, each
/// table or column in a transaction of its own under a SHARE lock (reads
/// go on); what holds nothing is not saved. Writes made between this and
/// the migrator's own drop are not in the backup.
pub async fn back_up(
    live: &Client,
    settings: &Settings,
    state_schema: &str,
    trace: &CommandTrace,
    direction: super::apply::Direction,
) -> Result<Vec<super::drops::Saved>, MigrateError> {
    let CommandTrace::Traced { drops, .. } = trace else {
        return Ok(Vec::new());
    };
    let task = format!("migrate:{}", direction.as_str());
    let mut saved = Vec::new();
    for drop in drops {
        let backup = crate::db::under(
            settings.timeouts(),
            crate::db::committed(
                live,
                super::drops::save(
                    live,
                    state_schema,
                    &settings.backup_dir,
                    &task,
                    drop,
                    (
                        &format!("the migrator's {}", direction.as_str()),
                        "back the column up yourself and run it with [migrations.command] trace = false",
                    ),
                ),
            ),
        )
        .await?;
        saved.extend(backup);
    }
    Ok(saved)
}

/// `run`, then `back_up`: what a real run of `command` needs first.
pub async fn run_and_back_up(
    live: &Client,
    target: &Target,
    settings: &Settings,
    state_schema: &str,
    command: &str,
    direction: super::apply::Direction,
    stop: &crate::stop::Stop,
) -> Result<(CommandTrace, Vec<super::drops::Saved>), MigrateError> {
    let trace = run(live, target, settings, state_schema, command, stop).await?;
    let backups = back_up(live, settings, state_schema, &trace, direction).await?;
    Ok((trace, backups))
}

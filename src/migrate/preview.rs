//! What `migrate plan` knows about the chosen migrations before anything
//! runs: their lock trace on a scratch cluster holding the live schema
//! and each traced statement's estimate from the live tables' sizes; or,
//! on a machine without the local server binaries, why there is no trace
//! and a size-based estimate of the statements that lock out writes.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::apply::{self, Direction};
use super::engine::Migrator;
use super::estimate::{self, Estimate, Throughput};
use super::scratch::{Scratch, ScratchError};
use super::trace::{self, Trace};
use super::{MigrateError, Migration, runs};
use crate::connect::Target;
use crate::unnamed::Unnamed;

pub struct Preview {
    pub trace: Option<Trace>,
    /// Why there is no trace, with how to get one.
    pub untraced: Option<String>,
    /// By version and statement line.
    pub estimates: BTreeMap<(String, usize), Estimate>,
    /// `migrate test`'s verdict on each pending migration (`migrate
    /// plan` only: `with_reversibility`).
    pub reversibility: Option<super::reversibility::Report>,
}

impl Preview {
    pub fn estimate(&self, version: &str, line: usize) -> Option<&Estimate> {
        self.estimates.get(&(version.to_string(), line))
    }
}

/// Traces `chosen` in `direction` and estimates each statement.
pub async fn of(
    live: &Client,
    target: &Target,
    migrator: &Migrator,
    chosen: &[&Migration],
    direction: Direction,
) -> Result<Preview, MigrateError> {
    let scratch =
        Scratch::with_schema_of(live, target, &migrator.settings, &migrator.state_schema).await;
    let scratch = match scratch {
        Ok(scratch) => scratch,
        Err(ScratchError::Setup(why)) => return untraced(live, chosen, direction, why).await,
        Err(err) => return Err(err.into()),
    };
    let trace = trace::run(&scratch, chosen, |m| runs::script_of(m, direction)).await?;
    let throughput = if trace
        .migrations
        .iter()
        .flat_map(|m| &m.statements)
        .any(|s| estimate::of_traced(s, &BTreeMap::new(), &Throughput::CAUTIOUS).is_some())
    {
        estimate::throughput(&scratch.client, &scratch.local_version).await
    } else {
        Throughput::CAUTIOUS
    };
    drop(scratch);
    let mut tables: Vec<String> = trace
        .migrations
        .iter()
        .flat_map(|m| &m.statements)
        .flat_map(estimate::tables_of)
        .collect();
    tables.sort();
    tables.dedup();
    let sizes = estimate::sizes(live, &tables).await?;
    let mut estimates = BTreeMap::new();
    for m in &trace.migrations {
        for s in &m.statements {
            if let Some(e) = estimate::of_traced(s, &sizes, &throughput) {
                estimates.insert((m.version.clone(), s.line), e);
            }
        }
    }
    Ok(Preview {
        trace: Some(trace),
        untraced: None,
        estimates,
        reversibility: None,
    })
}

/// `of`, with each pending migration's up, down and up tried on another
/// scratch copy as `migrate test` does (the ledger table left unseeded).
pub async fn with_reversibility(
    live: &Client,
    target: &Target,
    migrator: &Migrator,
    chosen: &[&Migration],
) -> Result<Preview, MigrateError> {
    let mut preview = of(live, target, migrator, chosen, Direction::Up).await?;
    if preview.trace.is_none() {
        return Ok(preview);
    }
    // The plan stands without it: the trace had a copy; a second one
    // that fails leaves the verdicts out.
    let Ok(scratch) =
        Scratch::with_schema_of(live, target, &migrator.settings, &migrator.state_schema).await
    else {
        return Ok(preview);
    };
    let tested: Vec<&Migration> = chosen.iter().copied().filter(|m| !m.repeatable).collect();
    preview.reversibility = super::reversibility::pending(&scratch.client, &tested, None)
        .await
        .ok();
    Ok(preview)
}

/// Without a scratch cluster: the size-based estimate of each statement
/// that locks out writes on an existing table.
async fn untraced(
    live: &Client,
    chosen: &[&Migration],
    direction: Direction,
    why: String,
) -> Result<Preview, MigrateError> {
    let mut estimates = BTreeMap::new();
    for m in chosen {
        for s in apply::statements_of(runs::script_of(m, direction))? {
            if !s.locks_out_writes || s.touches.is_empty() {
                continue;
            }
            let sizes = estimate::sizes(live, &s.touches).await?;
            if let Some(e) = estimate::of_untraced(&s.touches, &sizes) {
                estimates.insert((m.written.clone(), s.line), e);
            }
        }
    }
    Ok(Preview {
        trace: None,
        untraced: Some(format!(
            "not traced: {why}\n  the estimates below are from the tables' sizes alone"
        )),
        estimates,
        reversibility: None,
    })
}

/// The size of a table a statement could take over a second to rewrite
/// (at the untraced estimate's cautious 40 MB/s): below it, nothing can
/// need confirming for its duration.
const SLOW_ENOUGH_BYTES: i64 = 40 * 1024 * 1024;

/// What runs only when confirmed (`--yes`, `confirm: true`), each as a
/// sentence: the lint's errors, and the statements that would lock out
/// writes on a table over `confirm_above`. When the database has such a
/// table and `target` is given, the migrations are traced on a scratch
/// copy and a traced one needs confirming for each lock the trace saw
/// that blocks writes on such a table, or on any table for an estimated
/// second or more, with how long it is estimated to hold it (a `DO` block the parse cannot see into takes what it takes;
/// `SET (autovacuum_enabled = ...)` takes a lock that blocks no writes).
/// A migration the trace could not run keeps the parse's reasons.
pub async fn confirmation(
    live: &Client,
    target: Option<&Target>,
    migrator: &Migrator,
    chosen: &[&Migration],
    direction: Direction,
    findings: &[super::lint::Finding],
) -> Result<Vec<String>, MigrateError> {
    let parsed = runs::needing_confirmation(live, migrator, chosen, direction, findings).await?;
    let errors = findings
        .iter()
        .filter(|f| f.level == super::lint::Level::Error)
        .count();
    let Some(target) = target else {
        return Ok(parsed);
    };
    // Without a table over confirm_above, or one that could take over a
    // second to rewrite at a cautious 40 MB/s, no lock can need
    // confirming: no trace (seconds) for the common case.
    let limit = migrator.settings.confirm_above as i64;
    let worth_a_trace = limit.min(SLOW_ENOUGH_BYTES);
    let any_big: bool = crate::db::read_only(
        live,
        live.row(
            "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE c.relkind IN ('r', 'p', 'm')
                               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
                               AND pg_total_relation_size(c.oid) > $1)",
            &[&worth_a_trace],
        ),
    )
    .await?
    .get(0);
    if !any_big {
        return Ok(parsed);
    }
    // A trace that cannot run leaves the parse's reasons, which ask for
    // confirmation: never fewer than without it.
    let Ok(preview) = of(live, target, migrator, chosen, direction).await else {
        return Ok(parsed);
    };
    let Some(trace) = &preview.trace else {
        return Ok(parsed);
    };
    let traced = |version: &str| {
        trace
            .migrations
            .iter()
            .find(|t| t.version == version && matches!(t.status, trace::TraceStatus::Traced))
    };
    // The lint's errors, and the parse's reasons for migrations the trace
    // did not run, in their order.
    let mut reasons: Vec<String> = parsed[..errors].to_vec();
    for m in chosen {
        let script = runs::script_of(m, direction);
        let place = format!("{}:", script.path.display());
        if traced(&m.written).is_none() {
            reasons.extend(
                parsed[errors..]
                    .iter()
                    .filter(|r| r.starts_with(&place))
                    .cloned(),
            );
        }
    }
    let statements: BTreeMap<(String, usize), String> = chosen
        .iter()
        .flat_map(|m| {
            apply::statements_of(runs::script_of(m, direction))
                .unwrap_or_default()
                .into_iter()
                .map(|s| ((m.written.clone(), s.line), s.first_line().to_string()))
        })
        .collect();
    for m in chosen {
        let Some(t) = traced(&m.written) else {
            continue;
        };
        let path = runs::script_of(m, direction).path.display().to_string();
        for s in &t.statements {
            let blocking: Vec<String> = s
                .locks
                .iter()
                .filter(|l| l.blocks >= trace::Blocks::Writes)
                .map(|l| l.table.clone())
                .collect();
            if blocking.is_empty() {
                continue;
            }
            let estimate = preview.estimate(&m.written, s.line);
            let sizes = estimate::sizes(live, &blocking).await?;
            let over_a_second = estimate.is_some_and(|e| e.seconds > 1.0);
            for lock in s.locks.iter().filter(|l| l.blocks >= trace::Blocks::Writes) {
                let Some(size) = sizes.get(&lock.table) else {
                    continue;
                };
                let why = if size.total_bytes > limit {
                    "over confirm_above"
                } else if over_a_second {
                    "held over 1 s"
                } else {
                    continue;
                };
                let how_long = match estimate {
                    Some(e) => e.sentence(),
                    None => "for as long as it runs".into(),
                };
                reasons.push(format!(
                    "{path}:{}: `{}` holds {} on {} ({} with its indexes, {why}), traced on a scratch copy: {how_long}",
                    s.line,
                    statements
                        .get(&(m.written.clone(), s.line))
                        .map(String::as_str)
                        .unwrap_or(""),
                    lock.mode,
                    lock.table,
                    crate::output::human_bytes(size.total_bytes as f64),
                ));
            }
        }
    }
    Ok(reasons)
}

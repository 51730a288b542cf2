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

pub struct Preview {
    pub trace: Option<Trace>,
    /// Why there is no trace, with how to get one.
    pub untraced: Option<String>,
    /// By version and statement line.
    pub estimates: BTreeMap<(String, usize), Estimate>,
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
    })
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
    })
}

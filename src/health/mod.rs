//! `pgmaint health`: checks of a database's health, each a few catalog or
//! statistics queries, with findings of the form object, value, threshold,
//! advice. Thresholds have defaults (after PgHero and check_postgres) that
//! `[health.checks.NAME]` overrides. Each check runs under its own
//! `statement_timeout` and `lock_timeout`; one that fails or times out
//! reports `unknown` with the reason, and the others still report.
//!
//! The checks live in files by area: `activity` (sessions and locks),
//! `wraparound`, `schema` (indexes, constraints, sequences), `drift` (the
//! schema against its migrations), `tables`
//! (dead rows, vacuum and analyze age, bloat, cache), `storage` (sizes,
//! growth, replication), `statements` (pg_stat_statements), `pgmaint`
//! (the tasks' own figures) and `security`. Each check is a unit struct
//! implementing `Check` (its `CheckName` and its queries); `CHECKS` lists
//! them in report order and `run` iterates it, so a new check is its
//! struct, a `CheckName` variant and its place in `ALL` (the compiler asks
//! for its name and defaults), and one line in the list (a test holds the
//! list to `ALL`).

mod activity;
pub(crate) mod custom;
mod drift;
mod pgmaint;
mod schema;
mod security;
pub(crate) mod snapshot;
mod statements;
mod storage;
mod tables;
mod wraparound;

use crate::unnamed::Unnamed;
use std::time::Instant;

use futures_util::future::BoxFuture;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use tokio_postgres::Client;

pub(crate) use crate::check_name::{CheckName, Level, Thresholds};
use crate::config::Config;
use crate::config::file::HealthCheckFile;
use crate::db;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub object: String,
    pub value: String,
    pub threshold: String,
    pub advice: String,
    pub status: Level,
    /// The value as a number, where it is one (kept with snapshots).
    #[serde(skip)]
    pub measure: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// A built-in check's name, or a `[health.custom.NAME]`'s.
    pub name: String,
    pub status: Level,
    pub summary: String,
    pub findings: Vec<Finding>,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub status: Level,
    pub checks: Vec<CheckReport>,
}

impl Report {
    /// The report as listed: each check's findings that are warning,
    /// critical or unknown, or (with `all`) every finding, ok ones too.
    /// Statuses and summaries stay what they were.
    pub fn listed(mut self, all: bool) -> Report {
        if !all {
            for check in &mut self.checks {
                check.findings.retain(|f| f.status > Level::Ok);
            }
        }
        self
    }
}

/// What one check gets.
pub(crate) struct CheckContext<'a> {
    pub client: &'a Client,
    pub config: &'a Config,
    pub thresholds: Thresholds,
    pub exact: bool,
    /// What `schema-drift` reports from, when it is selected.
    pub drift: Option<&'a drift::Prepared>,
}

/// What one check returns: its findings (of any level), an optional
/// summary, or a reason it cannot tell (`unknown`).
pub(crate) enum Outcome {
    Findings(Vec<Finding>, Option<String>),
    Unknown(String),
}

pub(crate) use crate::output::human_bytes;

pub(crate) fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

pub(crate) fn seconds(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0}s"),
        s if s < 7200.0 => format!("{:.0}min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

/// One built-in check: its name and the queries that find its findings.
/// Each runs under the timeouts and with the thresholds `run` sets up.
pub(crate) trait Check: Sync {
    fn name(&self) -> CheckName;
    fn run(
        &self,
        ctx: &CheckContext<'_>,
    ) -> impl Future<Output = Result<Outcome, tokio_postgres::Error>> + Send;
}

/// A `Check` as the list holds it: the same, with its future boxed so
/// checks of different types sit in one slice.
trait Listed: Sync {
    fn name(&self) -> CheckName;
    fn run<'a>(
        &'a self,
        ctx: &'a CheckContext<'a>,
    ) -> BoxFuture<'a, Result<Outcome, tokio_postgres::Error>>;
}

impl<C: Check> Listed for C {
    fn name(&self) -> CheckName {
        Check::name(self)
    }

    fn run<'a>(
        &'a self,
        ctx: &'a CheckContext<'a>,
    ) -> BoxFuture<'a, Result<Outcome, tokio_postgres::Error>> {
        Box::pin(Check::run(self, ctx))
    }
}

/// Every check, in report order (`CheckName::ALL`'s, which a test holds
/// this to).
const CHECKS: [&dyn Listed; 27] = [
    &activity::Connections,
    &activity::LongRunningQueries,
    &activity::IdleInTransaction,
    &activity::BlockedQueries,
    &activity::PreparedTransactions,
    &wraparound::XidWraparound,
    &wraparound::MultixactAge,
    &schema::Sequences,
    &schema::InvalidIndexes,
    &schema::InvalidConstraints,
    &schema::DuplicateIndexes,
    &schema::UnusedIndexes,
    &schema::MissingIndexes,
    &drift::SchemaDrift,
    &statements::SlowQueries,
    &tables::CacheHit,
    &tables::DeadTuples,
    &tables::VacuumAge,
    &tables::AnalyzeAge,
    &tables::TableBloat,
    &tables::IndexBloat,
    &storage::Replication,
    &storage::DatabaseSize,
    &storage::SizeGrowth,
    &pgmaint::MatviewStaleness,
    &pgmaint::TaskBacklog,
    &security::Security,
];

/// Runs the selected checks (all enabled ones when `only` is empty), each
/// under its own timeouts, and puts the session's own back afterwards.
pub(crate) async fn run(
    client: &Client,
    config: &Config,
    only: &[CheckName],
    exact: bool,
) -> Report {
    run_selected(client, config, only, &[], exact).await
}

/// `run`, with custom checks selected by name as well: every check when
/// both lists are empty, else those the two lists name.
pub(crate) async fn run_selected(
    client: &Client,
    config: &Config,
    only: &[CheckName],
    only_custom: &[String],
    exact: bool,
) -> Report {
    let timeouts = CheckTimeouts::new(config.health.statement_timeout);
    let mut checks = Vec::new();
    // schema-drift's replay on a scratch cluster, outside any check's
    // transaction (it records what it found) and only when selected.
    let drift_settings = config
        .health
        .checks
        .get(CheckName::SchemaDrift.as_str())
        .cloned()
        .unwrap_or_default();
    let drift = if (only_custom.is_empty() || !only.is_empty())
        && selected(CheckName::SchemaDrift, only, &drift_settings)
    {
        Some(drift::prepare(client, config).await)
    } else {
        None
    };
    for check in CHECKS {
        let name = check.name();
        let settings = config
            .health
            .checks
            .get(name.as_str())
            .cloned()
            .unwrap_or_default();
        if !selected(name, only, &settings) || (only.is_empty() && !only_custom.is_empty()) {
            continue;
        }
        let ctx = CheckContext {
            client,
            config,
            thresholds: thresholds(name, &settings),
            exact,
            drift: drift.as_ref(),
        };
        let started = Instant::now();
        // Each check in a read-only transaction of its own, its timeouts
        // SET LOCAL in it: nothing outlives it behind a transaction pooler.
        let outcome = db::read_only(client, async {
            timeouts.apply(client).await?;
            check.run(&ctx).await
        })
        .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        checks.push(report(
            name.as_str().to_string(),
            outcome,
            &settings.exclude,
            duration_ms,
        ));
    }
    let custom_selected = |name: &str| {
        if only.is_empty() && only_custom.is_empty() {
            true
        } else {
            only_custom.iter().any(|n| n == name)
        }
    };
    for custom in config
        .health
        .custom
        .iter()
        .filter(|c| custom_selected(&c.name))
    {
        let settings = config
            .health
            .checks
            .get(&custom.name)
            .cloned()
            .unwrap_or_default();
        if only_custom.is_empty() && settings.enabled == Some(false) {
            continue;
        }
        let started = Instant::now();
        let outcome = custom::run(client, custom, &timeouts.statement, &timeouts.lock).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        checks.push(report(
            custom.name.clone(),
            outcome,
            &settings.exclude,
            duration_ms,
        ));
    }
    Report {
        status: overall(&checks),
        checks,
    }
}

/// Named by `only`, or (when `only` is empty) not disabled in the config.
fn selected(name: CheckName, only: &[CheckName], settings: &HealthCheckFile) -> bool {
    if only.is_empty() {
        settings.enabled != Some(false)
    } else {
        only.contains(&name)
    }
}

/// The check's defaults, with what the config sets in their place.
fn thresholds(name: CheckName, settings: &HealthCheckFile) -> Thresholds {
    let mut thresholds = name.defaults();
    thresholds.warning = settings.warning.or(thresholds.warning);
    thresholds.critical = settings.critical.or(thresholds.critical);
    thresholds
}

/// The timeouts each check runs under: `[health] statement_timeout`, and
/// half of it for locks, so a lock wait says so rather than running into
/// the statement timeout.
struct CheckTimeouts {
    statement: String,
    lock: String,
}

impl CheckTimeouts {
    fn new(statement_timeout: std::time::Duration) -> CheckTimeouts {
        CheckTimeouts {
            statement: format!("{}ms", statement_timeout.as_millis()),
            lock: format!("{}ms", (statement_timeout.as_millis() / 2).max(1)),
        }
    }

    /// Sets both for the current transaction only (`set_config(..., true)`),
    /// and drops the statistics snapshot so the check reads fresh figures.
    async fn apply(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        client
            .row(
                "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true), pg_stat_clear_snapshot()",
                &[&self.statement, &self.lock],
            )
            .await?;
        Ok(())
    }
}

/// The report's status: the worst check's, with `unknown` counted as a
/// warning (a check that cannot tell is worth a look).
fn overall(checks: &[CheckReport]) -> Level {
    checks
        .iter()
        .map(|c| {
            if c.status == Level::Unknown {
                Level::Warning
            } else {
                c.status
            }
        })
        .max()
        .unwrap_or(Level::Ok)
}

fn report(
    name: String,
    outcome: Result<Outcome, tokio_postgres::Error>,
    exclude: &[String],
    duration_ms: u64,
) -> CheckReport {
    let excluded = exclusions(exclude);
    match outcome {
        Ok(Outcome::Findings(findings, summary)) => {
            let mut findings: Vec<Finding> = findings
                .into_iter()
                .filter(|f| !excluded.is_match(&f.object))
                .collect();
            findings.sort_by_key(|f| std::cmp::Reverse(f.status));
            let status = findings.iter().map(|f| f.status).max().unwrap_or(Level::Ok);
            let problems = findings.iter().filter(|f| f.status > Level::Ok).count();
            let summary = summary.unwrap_or_else(|| match problems {
                0 => "no problems found".into(),
                n => format!("{n} finding(s) past the thresholds"),
            });
            CheckReport {
                name,
                status,
                summary,
                findings,
                duration_ms,
            }
        }
        Ok(Outcome::Unknown(reason)) => CheckReport {
            name,
            status: Level::Unknown,
            summary: reason,
            findings: Vec::new(),
            duration_ms,
        },
        Err(err) => {
            let reason = match err.code() {
                Some(c) if *c == tokio_postgres::error::SqlState::QUERY_CANCELED => {
                    format!(
                        "timed out after the check's statement_timeout: {}",
                        db::describe(&err)
                    )
                }
                Some(c) if *c == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE => {
                    format!(
                        "could not get a lock within the check's lock_timeout: {}",
                        db::describe(&err)
                    )
                }
                Some(c) if *c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
                    format!("pgmaint's role lacks the privilege: {}", db::describe(&err))
                }
                _ => db::describe(&err),
            };
            CheckReport {
                name,
                status: Level::Unknown,
                summary: reason,
                findings: Vec::new(),
                duration_ms,
            }
        }
    }
}

fn exclusions(patterns: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        if let Ok(glob) = Glob::new(pattern) {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

/// A finding whose level comes from the thresholds.
pub(crate) fn measured(
    ctx: &CheckContext<'_>,
    object: String,
    value: f64,
    show: impl Fn(f64) -> String,
    advice: &str,
) -> Finding {
    Finding {
        measure: Some(value),
        status: ctx.thresholds.level(value),
        value: show(value),
        threshold: ctx.thresholds.describe(&show),
        object,
        advice: advice.to_string(),
    }
}

/// A finding that is a problem by being there (an invalid index, ...): a
/// warning, or whatever the config sets `warning`/`critical` to mean.
pub(crate) fn found(
    ctx: &CheckContext<'_>,
    object: String,
    value: String,
    advice: &str,
) -> Finding {
    let status = if ctx.thresholds.critical.is_some() {
        Level::Critical
    } else {
        Level::Warning
    };
    Finding {
        object,
        value,
        threshold: "any".into(),
        advice: advice.to_string(),
        status,
        measure: None,
    }
}

/// Whether an extension is installed in this database.
pub(crate) async fn has_extension(
    client: &Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .row(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1)",
            &[&name],
        )
        .await?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_every_check_once_in_report_order() {
        let listed = CHECKS.map(|c| c.name());
        assert_eq!(listed, CheckName::ALL);
    }
}

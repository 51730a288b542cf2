//! `pgmaint health`: checks of a database's health, each a few catalog or
//! statistics queries, with findings of the form object, value, threshold,
//! advice. Thresholds have defaults (after PgHero and check_postgres) that
//! `[health.checks.NAME]` overrides. Each check runs under its own
//! `statement_timeout` and `lock_timeout`; one that fails or times out
//! reports `unknown` with the reason, and the others still report.
//!
//! The checks live in files by area: `activity` (sessions and locks),
//! `wraparound`, `schema` (indexes, constraints, sequences), `tables`
//! (dead rows, vacuum and analyze age, bloat, cache), `storage` (sizes,
//! growth, replication), `statements` (pg_stat_statements), `pgmaint`
//! (the tasks' own figures) and `security`.

mod activity;
mod pgmaint;
mod schema;
mod security;
pub mod snapshot;
mod statements;
mod storage;
mod tables;
mod wraparound;

use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::Config;
use crate::db;

/// Every check, in report order.
pub const CHECK_NAMES: &[&str] = &[
    "connections",
    "long-running-queries",
    "idle-in-transaction",
    "blocked-queries",
    "prepared-transactions",
    "xid-wraparound",
    "multixact-age",
    "sequences",
    "invalid-indexes",
    "invalid-constraints",
    "duplicate-indexes",
    "unused-indexes",
    "missing-indexes",
    "slow-queries",
    "cache-hit",
    "dead-tuples",
    "vacuum-age",
    "analyze-age",
    "table-bloat",
    "index-bloat",
    "replication",
    "database-size",
    "size-growth",
    "matview-staleness",
    "task-backlog",
    "security",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Unknown => "unknown",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub object: String,
    pub value: String,
    pub threshold: String,
    pub advice: String,
    pub status: Level,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: &'static str,
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

/// The thresholds a check works with: its defaults, overridden by config.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// Lower values are worse (cache hit ratio).
    pub lower_is_worse: bool,
}

impl Thresholds {
    /// The level of a value against the thresholds.
    pub fn level(&self, value: f64) -> Level {
        let past = |limit: Option<f64>| {
            limit.is_some_and(|l| {
                if self.lower_is_worse {
                    value < l
                } else {
                    value >= l
                }
            })
        };
        if past(self.critical) {
            Level::Critical
        } else if past(self.warning) {
            Level::Warning
        } else {
            Level::Ok
        }
    }

    /// "warning 80%, critical 95%", with values formatted by `show`.
    pub fn describe(&self, show: impl Fn(f64) -> String) -> String {
        let mut parts = Vec::new();
        let word = if self.lower_is_worse { "below" } else { "at" };
        if let Some(w) = self.warning {
            parts.push(format!("warning {word} {}", show(w)));
        }
        if let Some(c) = self.critical {
            parts.push(format!("critical {word} {}", show(c)));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Built-in thresholds per check.
pub(crate) fn defaults(name: &str) -> Thresholds {
    let t = |w: f64, c: f64| Thresholds {
        warning: Some(w),
        critical: Some(c),
        lower_is_worse: false,
    };
    match name {
        "connections" => t(0.8, 0.95),
        "long-running-queries" => t(300.0, 1800.0),
        "idle-in-transaction" => t(60.0, 600.0),
        "blocked-queries" => t(10.0, 60.0),
        "prepared-transactions" => t(300.0, 3600.0),
        "xid-wraparound" | "multixact-age" => t(0.5, 0.75),
        "sequences" => t(0.75, 0.9),
        // Found or not: every finding is a warning.
        "invalid-indexes"
        | "invalid-constraints"
        | "duplicate-indexes"
        | "missing-indexes"
        | "security" => Thresholds {
            warning: Some(0.0),
            critical: None,
            lower_is_worse: false,
        },
        // The size above which an unused index is worth reporting.
        "unused-indexes" => Thresholds {
            warning: Some(1_048_576.0),
            critical: None,
            lower_is_worse: false,
        },
        "slow-queries" => t(100.0, 1000.0),
        "cache-hit" => Thresholds {
            warning: Some(0.99),
            critical: Some(0.95),
            lower_is_worse: true,
        },
        // Dead rows as a multiple of the table's autovacuum threshold.
        "dead-tuples" => t(1.0, 5.0),
        "vacuum-age" | "analyze-age" => t(7.0, 30.0),
        "table-bloat" | "index-bloat" => t(0.5, 0.8),
        // Replication lag in seconds.
        "replication" => t(60.0, 300.0),
        "database-size" => Thresholds {
            warning: None,
            critical: None,
            lower_is_worse: false,
        },
        // Growth over a day, as a fraction of the size a day before.
        "size-growth" => t(0.5, 1.0),
        // Age of the last refresh as a multiple of the task's max_staleness.
        "matview-staleness" => t(1.0, 2.0),
        // Rows already qualifying for a purge or archive task.
        "task-backlog" => t(100_000.0, 1_000_000.0),
        _ => Thresholds {
            warning: None,
            critical: None,
            lower_is_worse: false,
        },
    }
}

/// What one check gets.
pub struct CheckContext<'a> {
    pub client: &'a Client,
    pub config: &'a Config,
    pub thresholds: Thresholds,
    pub exact: bool,
}

/// What one check returns: its findings (of any level), an optional
/// summary, or a reason it cannot tell (`unknown`).
pub enum Outcome {
    Findings(Vec<Finding>, Option<String>),
    Unknown(String),
}

pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", units[0])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

pub fn seconds(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0}s"),
        s if s < 7200.0 => format!("{:.0}min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

async fn run_one(
    name: &'static str,
    ctx: &CheckContext<'_>,
) -> Result<Outcome, tokio_postgres::Error> {
    Ok(match name {
        "connections" => activity::connections(ctx).await?,
        "long-running-queries" => activity::long_running(ctx).await?,
        "idle-in-transaction" => activity::idle_in_transaction(ctx).await?,
        "blocked-queries" => activity::blocked(ctx).await?,
        "prepared-transactions" => activity::prepared(ctx).await?,
        "xid-wraparound" => wraparound::xid(ctx).await?,
        "multixact-age" => wraparound::multixact(ctx).await?,
        "sequences" => schema::sequences(ctx).await?,
        "invalid-indexes" => schema::invalid_indexes(ctx).await?,
        "invalid-constraints" => schema::invalid_constraints(ctx).await?,
        "duplicate-indexes" => schema::duplicate_indexes(ctx).await?,
        "unused-indexes" => schema::unused_indexes(ctx).await?,
        "missing-indexes" => schema::missing_indexes(ctx).await?,
        "slow-queries" => statements::slow_queries(ctx).await?,
        "cache-hit" => tables::cache_hit(ctx).await?,
        "dead-tuples" => tables::dead_tuples(ctx).await?,
        "vacuum-age" => tables::maintenance_age(ctx, "vacuum").await?,
        "analyze-age" => tables::maintenance_age(ctx, "analyze").await?,
        "table-bloat" => tables::table_bloat(ctx).await?,
        "index-bloat" => tables::index_bloat(ctx).await?,
        "replication" => storage::replication(ctx).await?,
        "database-size" => storage::database_size(ctx).await?,
        "size-growth" => storage::size_growth(ctx).await?,
        "matview-staleness" => pgmaint::matview_staleness(ctx).await?,
        "task-backlog" => pgmaint::task_backlog(ctx).await?,
        "security" => security::security(ctx).await?,
        _ => Outcome::Unknown(format!("no check named {name}")),
    })
}

/// Runs the selected checks (all enabled ones when `only` is empty).
pub async fn run(client: &Client, config: &Config, only: &[String], exact: bool) -> Report {
    let timeout = format!("{}ms", config.health.statement_timeout.as_millis());
    // Half the time for locks, so a lock wait says so rather than
    // running into the statement timeout.
    let lock_timeout = format!(
        "{}ms",
        (config.health.statement_timeout.as_millis() / 2).max(1)
    );
    // The session's own timeouts (set at connect), put back afterwards.
    let session: Option<(String, String)> = client
        .query_one(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')",
            &[],
        )
        .await
        .ok()
        .map(|row| (row.get(0), row.get(1)));
    let mut checks = Vec::new();
    for &name in CHECK_NAMES {
        let settings = config.health.checks.get(name).cloned().unwrap_or_default();
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        if only.is_empty() && settings.enabled == Some(false) {
            continue;
        }
        let mut thresholds = defaults(name);
        thresholds.warning = settings.warning.or(thresholds.warning);
        thresholds.critical = settings.critical.or(thresholds.critical);
        let ctx = CheckContext {
            client,
            config,
            thresholds,
            exact,
        };
        let started = Instant::now();
        let prepared = async {
            db::set_session(client, "statement_timeout", &timeout).await?;
            db::set_session(client, "lock_timeout", &lock_timeout).await?;
            client
                .batch_execute("SELECT pg_stat_clear_snapshot()")
                .await
        }
        .await;
        let outcome = match prepared {
            Ok(()) => run_one(name, &ctx).await,
            Err(err) => Err(err),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        checks.push(report(name, outcome, &settings.exclude, duration_ms));
    }
    if let Some((lock_timeout, statement_timeout)) = &session {
        let _ = db::set_session(client, "statement_timeout", statement_timeout).await;
        let _ = db::set_session(client, "lock_timeout", lock_timeout).await;
    }
    let status = checks
        .iter()
        .map(|c| {
            if c.status == Level::Unknown {
                Level::Warning
            } else {
                c.status
            }
        })
        .max()
        .unwrap_or(Level::Ok);
    Report { status, checks }
}

fn report(
    name: &'static str,
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
pub fn measured(
    ctx: &CheckContext<'_>,
    object: String,
    value: f64,
    show: impl Fn(f64) -> String,
    advice: &str,
) -> Finding {
    Finding {
        status: ctx.thresholds.level(value),
        value: show(value),
        threshold: ctx.thresholds.describe(&show),
        object,
        advice: advice.to_string(),
    }
}

/// A finding that is a problem by being there (an invalid index, ...): a
/// warning, or whatever the config sets `warning`/`critical` to mean.
pub fn found(ctx: &CheckContext<'_>, object: String, value: String, advice: &str) -> Finding {
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
    }
}

/// Whether an extension is installed in this database.
pub async fn has_extension(client: &Client, name: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
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
    fn levels_follow_thresholds_in_both_directions() {
        let up = Thresholds {
            warning: Some(0.8),
            critical: Some(0.95),
            lower_is_worse: false,
        };
        assert_eq!(up.level(0.5), Level::Ok);
        assert_eq!(up.level(0.8), Level::Warning);
        assert_eq!(up.level(0.99), Level::Critical);
        let down = Thresholds {
            warning: Some(0.99),
            critical: Some(0.95),
            lower_is_worse: true,
        };
        assert_eq!(down.level(0.999), Level::Ok);
        assert_eq!(down.level(0.97), Level::Warning);
        assert_eq!(down.level(0.5), Level::Critical);
    }

    #[test]
    fn every_check_has_a_distinct_name() {
        let mut names = CHECK_NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CHECK_NAMES.len());
    }
}

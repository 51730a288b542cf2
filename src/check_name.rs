//! The names of the built-in health checks, in report order, with the
//! thresholds each starts from and the levels those give. A leaf module:
//! the config checks `[health.checks.NAME]`, `[alerts.NAME] checks` and a
//! threshold's order against it without importing `health` (which reads
//! the config); `health` re-exports all of it.

use serde::Serialize;

/// A built-in check, as `[health.checks.NAME]` and `--check NAME` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckName {
    Connections,
    LongRunningQueries,
    IdleInTransaction,
    BlockedQueries,
    PreparedTransactions,
    XidWraparound,
    MultixactAge,
    Sequences,
    InvalidIndexes,
    InvalidConstraints,
    DuplicateIndexes,
    UnusedIndexes,
    MissingIndexes,
    SchemaDrift,
    SlowQueries,
    CacheHit,
    DeadTuples,
    VacuumAge,
    AnalyzeAge,
    TableBloat,
    IndexBloat,
    Replication,
    DatabaseSize,
    SizeGrowth,
    MatviewStaleness,
    TaskBacklog,
    Security,
}

impl CheckName {
    /// Every check, in report order.
    pub const ALL: [CheckName; 27] = [
        CheckName::Connections,
        CheckName::LongRunningQueries,
        CheckName::IdleInTransaction,
        CheckName::BlockedQueries,
        CheckName::PreparedTransactions,
        CheckName::XidWraparound,
        CheckName::MultixactAge,
        CheckName::Sequences,
        CheckName::InvalidIndexes,
        CheckName::InvalidConstraints,
        CheckName::DuplicateIndexes,
        CheckName::UnusedIndexes,
        CheckName::MissingIndexes,
        CheckName::SchemaDrift,
        CheckName::SlowQueries,
        CheckName::CacheHit,
        CheckName::DeadTuples,
        CheckName::VacuumAge,
        CheckName::AnalyzeAge,
        CheckName::TableBloat,
        CheckName::IndexBloat,
        CheckName::Replication,
        CheckName::DatabaseSize,
        CheckName::SizeGrowth,
        CheckName::MatviewStaleness,
        CheckName::TaskBacklog,
        CheckName::Security,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Connections => "connections",
            CheckName::LongRunningQueries => "long-running-queries",
            CheckName::IdleInTransaction => "idle-in-transaction",
            CheckName::BlockedQueries => "blocked-queries",
            CheckName::PreparedTransactions => "prepared-transactions",
            CheckName::XidWraparound => "xid-wraparound",
            CheckName::MultixactAge => "multixact-age",
            CheckName::Sequences => "sequences",
            CheckName::InvalidIndexes => "invalid-indexes",
            CheckName::InvalidConstraints => "invalid-constraints",
            CheckName::DuplicateIndexes => "duplicate-indexes",
            CheckName::UnusedIndexes => "unused-indexes",
            CheckName::MissingIndexes => "missing-indexes",
            CheckName::SchemaDrift => "schema-drift",
            CheckName::SlowQueries => "slow-queries",
            CheckName::CacheHit => "cache-hit",
            CheckName::DeadTuples => "dead-tuples",
            CheckName::VacuumAge => "vacuum-age",
            CheckName::AnalyzeAge => "analyze-age",
            CheckName::TableBloat => "table-bloat",
            CheckName::IndexBloat => "index-bloat",
            CheckName::Replication => "replication",
            CheckName::DatabaseSize => "database-size",
            CheckName::SizeGrowth => "size-growth",
            CheckName::MatviewStaleness => "matview-staleness",
            CheckName::TaskBacklog => "task-backlog",
            CheckName::Security => "security",
        }
    }

    /// The check a name as written means, if any.
    pub fn parse(name: &str) -> Option<CheckName> {
        CheckName::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Every name, in report order, comma-separated (for help texts).
    pub fn list() -> String {
        CheckName::ALL.map(CheckName::as_str).join(", ")
    }

    /// Built-in thresholds (after PgHero and check_postgres).
    pub fn defaults(self) -> Thresholds {
        let t = |w: f64, c: f64| Thresholds {
            warning: Some(w),
            critical: Some(c),
            lower_is_worse: false,
        };
        match self {
            CheckName::Connections => t(0.8, 0.95),
            CheckName::LongRunningQueries => t(300.0, 1800.0),
            CheckName::IdleInTransaction => t(60.0, 600.0),
            CheckName::BlockedQueries => t(10.0, 60.0),
            CheckName::PreparedTransactions => t(300.0, 3600.0),
            CheckName::XidWraparound | CheckName::MultixactAge => t(0.5, 0.75),
            CheckName::Sequences => t(0.75, 0.9),
            // Found or not: every finding is a warning.
            CheckName::InvalidIndexes
            | CheckName::InvalidConstraints
            | CheckName::DuplicateIndexes
            | CheckName::MissingIndexes
            | CheckName::SchemaDrift
            | CheckName::Security => Thresholds {
                warning: Some(0.0),
                critical: None,
                lower_is_worse: false,
            },
            // The size above which an unused index is worth reporting.
            CheckName::UnusedIndexes => Thresholds {
                warning: Some(1_048_576.0),
                critical: None,
                lower_is_worse: false,
            },
            CheckName::SlowQueries => t(100.0, 1000.0),
            CheckName::CacheHit => Thresholds {
                warning: Some(0.99),
                critical: Some(0.95),
                lower_is_worse: true,
            },
            // Dead rows as a multiple of the table's autovacuum threshold.
            CheckName::DeadTuples => t(1.0, 5.0),
            CheckName::VacuumAge | CheckName::AnalyzeAge => t(7.0, 30.0),
            CheckName::TableBloat | CheckName::IndexBloat => t(0.5, 0.8),
            // Replication lag in seconds.
            CheckName::Replication => t(60.0, 300.0),
            CheckName::DatabaseSize => Thresholds {
                warning: None,
                critical: None,
                lower_is_worse: false,
            },
            // Growth over a day, as a fraction of the size a day before.
            CheckName::SizeGrowth => t(0.5, 1.0),
            // Age of the last refresh as a multiple of the task's max_staleness.
            CheckName::MatviewStaleness => t(1.0, 2.0),
            // Rows already qualifying for a purge or archive task.
            CheckName::TaskBacklog => t(100_000.0, 1_000_000.0),
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    fn every_check_has_a_distinct_name_that_parses_back() {
        let mut names = CheckName::ALL.map(CheckName::as_str).to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CheckName::ALL.len());
        for check in CheckName::ALL {
            assert_eq!(CheckName::parse(check.as_str()), Some(check));
        }
        assert_eq!(CheckName::parse("no-such-check"), None);
    }
}

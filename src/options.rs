//! What every task runs with, whatever its kind: its options (batch size,
//! timeouts, retries) and its severity. Config layers them from
//! `[database]`, `[defaults]` and the task; the tasks obey them. They live
//! below both so the tasks need nothing from config.

use crate::duration::Duration;

/// The options every task runs with, after defaults are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOptions {
    pub batch_size: u64,
    pub max_runtime: Option<Duration>,
    pub pause: Duration,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    /// How often one batch is retried when it cannot get its locks.
    pub max_retries: u32,
    /// A dry run counts matching rows exactly up to a table of this many
    /// rows (by the planner's estimate); above it, it shows the estimate.
    pub exact_count_limit: u64,
    /// The zone `timestamp without time zone` values are meant in, set
    /// LOCAL as `TimeZone` in each of the task's transactions; `None`
    /// leaves the session's own (as psql does).
    pub time_zone: Option<chrono_tz::Tz>,
}

impl TaskOptions {
    /// pgmaint's own defaults, before `[database]`, `[defaults]` and tasks.
    pub(crate) const BUILT_IN: TaskOptions = TaskOptions {
        batch_size: 5000,
        max_runtime: None,
        pause: Duration(std::time::Duration::ZERO),
        lock_timeout: crate::db::SessionTimeouts::BUILT_IN.lock_timeout,
        statement_timeout: crate::db::SessionTimeouts::BUILT_IN.statement_timeout,
        max_retries: 5,
        exact_count_limit: 10_000_000,
        time_zone: None,
    };

    /// What each of the task's transactions sets LOCAL.
    pub(crate) fn session(&self) -> crate::db::SessionTimeouts {
        crate::db::SessionTimeouts {
            lock_timeout: self.lock_timeout,
            statement_timeout: self.statement_timeout,
            time_zone: self.time_zone,
        }
    }
}

/// How much a task can hurt: what confirmation and backups follow.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

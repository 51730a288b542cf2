//! The statuses a run or task run can have, as PRODUCT.md names them, and
//! what a task did: shared by the tasks, the runner and the store, and
//! depending on none of them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    /// Stopped on purpose: a signal or `max_runtime`.
    Cancelled,
    /// Its process died; found and marked later.
    Interrupted,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
            Status::Skipped => "skipped",
        }
    }

    /// The run's status from its tasks' statuses: the worst one wins.
    pub(crate) fn combine(statuses: impl IntoIterator<Item = Status>) -> Status {
        let rank = |s: Status| match s {
            Status::Failed => 5,
            Status::Interrupted => 4,
            Status::Cancelled => 3,
            Status::Running => 2,
            Status::Succeeded => 1,
            Status::Skipped => 0,
        };
        statuses
            .into_iter()
            .max_by_key(|s| rank(*s))
            .map_or(Status::Succeeded, |s| {
                if s == Status::Skipped {
                    Status::Succeeded
                } else {
                    s
                }
            })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Status,
    /// Rows changed, or in a dry run the rows that would be.
    pub rows: u64,
    pub batches: u64,
    pub retries: u64,
    pub error: Option<String>,
    pub details: serde_json::Value,
}

/// Running totals a task reports while it works.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub rows: u64,
    pub batches: u64,
    pub retries: u64,
}

/// What one run did, task by task: what the runner returns and what
/// `run --json` prints.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub run_id: i64,
    pub dry_run: bool,
    pub status: Status,
    pub tasks: Vec<TaskReport>,
    /// Tasks skipped because the schedule does not allow them.
    #[serde(skip)]
    pub unconfirmed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TaskReport {
    pub name: String,
    pub kind: &'static str,
    pub status: Status,
    pub rows: u64,
    pub batches: u64,
    pub duration_ms: u64,
    pub details: serde_json::Value,
    #[serde(skip)]
    pub severity: crate::options::Severity,
    #[serde(skip)]
    pub error: Option<String>,
    #[serde(skip)]
    pub retries: u64,
}

//! The statuses a run or task run can have, as PRODUCT.md names them.

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
    pub fn combine(statuses: impl IntoIterator<Item = Status>) -> Status {
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

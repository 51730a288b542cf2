//! Running one utility statement (REFRESH, VACUUM, REINDEX, DROP INDEX
//! CONCURRENTLY, ...) outside any transaction, under the task's timeouts,
//! retried with backoff while its locks are busy. Shared by the upkeep
//! kinds.

use std::time::{Duration, Instant};

use super::{TaskContext, TaskError};
use crate::db;
use crate::status::Status;

/// Sets the task's `lock_timeout` and `statement_timeout` for the session.
pub async fn set_timeouts(ctx: &TaskContext<'_>) -> Result<(), TaskError> {
    db::set_session(
        ctx.client,
        "lock_timeout",
        &ctx.options.lock_timeout.as_pg_setting(),
    )
    .await?;
    db::set_session(
        ctx.client,
        "statement_timeout",
        &ctx.options.statement_timeout.as_pg_setting(),
    )
    .await?;
    Ok(())
}

pub async fn clear_timeouts(ctx: &TaskContext<'_>) -> Result<(), TaskError> {
    db::set_session(ctx.client, "lock_timeout", "0").await?;
    db::set_session(ctx.client, "statement_timeout", "0").await?;
    Ok(())
}

/// Runs `statement` as a simple query (so outside a transaction), retrying
/// lock timeouts under the one retry policy (`retry.rs`) up to
/// `max_retries`; counts the retries.
/// Returns how long it took; locks that stayed busy through every retry
/// are an error that says so (the statement changed nothing).
pub async fn run(
    ctx: &mut TaskContext<'_>,
    statement: &str,
    retries: &mut u64,
) -> Result<Duration, TaskError> {
    ctx.log_statement(statement);
    let mut waits = crate::retry::lock_waits(ctx.options.max_retries);
    loop {
        let started = Instant::now();
        match ctx.client.batch_execute(statement).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(err) if db::is_transient(&err) => {
                *retries += 1;
                tracing::info!(task = ctx.task_name, "{statement}: {}", db::describe(&err));
                match waits.next() {
                    Some(wait) if ctx.should_stop().is_none() => ctx.stop.sleep(wait).await,
                    _ => break,
                }
            }
            Err(err) => {
                return Err(TaskError::Database(format!(
                    "{statement}: {}",
                    db::describe(&err)
                )));
            }
        }
    }
    Err(TaskError::Database(format!(
        "its locks stayed busy past lock_timeout {} after {} retries",
        ctx.options.lock_timeout, ctx.options.max_retries
    )))
}

/// The status of an upkeep task that worked through a list of objects:
/// failed if any object failed, cancelled if it stopped early, else
/// succeeded; with the error to record.
pub fn verdict(
    failed: &[String],
    stopped: Option<&str>,
    done: usize,
    noun: &str,
) -> (Status, Option<String>) {
    if !failed.is_empty() {
        (Status::Failed, Some(failed.join("; ")))
    } else if let Some(reason) = stopped {
        (
            Status::Cancelled,
            Some(format!("{reason} after {done} {noun}")),
        )
    } else {
        (Status::Succeeded, None)
    }
}

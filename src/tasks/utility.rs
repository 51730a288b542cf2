//! Running one utility statement (REFRESH, VACUUM, REINDEX, DROP INDEX
//! CONCURRENTLY, ...) outside any transaction, under the task's timeouts,
//! retried with backoff while its locks are busy. Shared by the upkeep
//! kinds.

use std::time::{Duration, Instant};

use super::{TaskContext, TaskError};
use crate::db;

/// What happened to one utility statement.
pub enum Ran {
    /// It ran, taking this long.
    Done(Duration),
    /// Its locks stayed busy through every retry; it changed nothing.
    LocksBusy,
}

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
/// lock timeouts with backoff up to `max_retries`; counts the retries.
pub async fn run(
    ctx: &mut TaskContext<'_>,
    statement: &str,
    retries: &mut u64,
) -> Result<Ran, TaskError> {
    ctx.log_statement(statement);
    for attempt in 0..=ctx.options.max_retries {
        let started = Instant::now();
        match ctx.client.batch_execute(statement).await {
            Ok(()) => return Ok(Ran::Done(started.elapsed())),
            Err(err) if db::is_transient(&err) => {
                *retries += 1;
                tracing::info!(task = ctx.task_name, "{statement}: {}", db::describe(&err));
                if attempt == ctx.options.max_retries || ctx.should_stop().is_some() {
                    break;
                }
                let backoff = Duration::from_millis(100 * 2u64.pow(attempt.min(6)))
                    .min(Duration::from_secs(5));
                ctx.stop.sleep(backoff).await;
            }
            Err(err) => {
                return Err(TaskError::Database(format!(
                    "{statement}: {}",
                    db::describe(&err)
                )));
            }
        }
    }
    Ok(Ran::LocksBusy)
}

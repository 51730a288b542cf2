//! pgmaint's advisory locks on its own work: one per live run (its process
//! holds it as long as it lives) and one per task (a task runs in one
//! process at a time).

use crate::unnamed::Unnamed;
use tokio_postgres::Client;

/// First key of pgmaint's two-key advisory locks that mark a live run ("pgmr").
pub(super) const RUN_LOCK_CLASS: i32 = 0x7067_6d72;
/// First key of the advisory locks that keep a task to one runner ("pgmt").
const TASK_LOCK_CLASS: i32 = 0x7067_6d74;

pub(super) fn run_lock_key(run_id: i64) -> i32 {
    (run_id % i32::MAX as i64) as i32
}

/// Takes the lock that keeps one task to one runner, without waiting.
/// Returns false when another process holds it.
pub(crate) async fn try_lock_task(
    client: &Client,
    schema: &str,
    task: &str,
) -> Result<bool, tokio_postgres::Error> {
    let key = format!("{schema}.{task}");
    Ok(client
        .row(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&TASK_LOCK_CLASS, &key],
        )
        .await?
        .get(0))
}

pub(crate) async fn unlock_task(
    client: &Client,
    schema: &str,
    task: &str,
) -> Result<(), tokio_postgres::Error> {
    let key = format!("{schema}.{task}");
    client
        .exec(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&TASK_LOCK_CLASS, &key],
        )
        .await?;
    Ok(())
}

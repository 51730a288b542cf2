//! `refreshes`: each materialized view refresh pgmaint made, which is what
//! a view's staleness is measured from.

use crate::unnamed::Unnamed;
use std::collections::BTreeMap;

use tokio_postgres::{Error, GenericClient};

use crate::sql::quote_ident;

/// Records one refresh of a view: how long it took and its mode
/// (`concurrently` or `plain`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_refresh(
    client: &impl GenericClient,
    schema: &str,
    view_schema: &str,
    view_name: &str,
    task: &str,
    task_run_id: Option<i64>,
    duration_ms: i64,
    mode: &str,
) -> Result<(), Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("INSERT INTO {q}.refreshes (view_schema, view_name, task, task_run_id, duration_ms, mode) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[&view_schema, &view_name, &task, &task_run_id, &duration_ms, &mode],
        )
        .await?;
    Ok(())
}

/// Each view's last refresh by pgmaint and its age in seconds, for `tasks`
/// and (later) the staleness check.
pub async fn refresh_ages(
    client: &impl GenericClient,
    schema: &str,
) -> Result<BTreeMap<String, f64>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT DISTINCT ON (view_schema, view_name) format('%I.%I', view_schema, view_name),
                        extract(epoch FROM now() - refreshed_at)::float8
                   FROM {q}.refreshes ORDER BY view_schema, view_name, refreshed_at DESC"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

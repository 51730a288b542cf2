//! Snapshots: the sizes, row estimates and dead rows of every table, index
//! and materialized view, pg_stat_statements' counters, and the custom
//! checks' findings, stored in the state schema. Growth and slow queries
//! are computed by comparing them with now; a dashboard will chart them.
//! Old ones are pruned after `[health] keep`.

use tokio_postgres::Client;

use super::CheckReport;
use crate::store::health_reads::{self, CheckRow};
pub(crate) use crate::store::snapshots::Snapshot;

/// Takes a snapshot and keeps with it the findings of the custom checks
/// among `checks` (a report's; the other checks are left out).
pub(crate) async fn take(
    client: &mut Client,
    config: &crate::config::Config,
    checks: &[CheckReport],
) -> Result<Snapshot, tokio_postgres::Error> {
    let schema = &config.state_schema;
    let statements = super::has_extension(client, "pg_stat_statements").await?;
    let snapshot =
        crate::store::snapshots::take_snapshot(client, schema, &config.health.keep, statements)
            .await?;
    let rows: Vec<CheckRow<'_>> = checks
        .iter()
        .filter(|c| config.health.custom.iter().any(|k| k.name == c.name))
        .flat_map(|c| {
            c.findings.iter().map(|f| CheckRow {
                check: &c.name,
                object: &f.object,
                value: f.measure,
                status: f.status.as_str(),
            })
        })
        .collect();
    health_reads::record_check_findings(&*client, schema, snapshot.id, &rows).await?;
    Ok(snapshot)
}

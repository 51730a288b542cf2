//! What the health checks read from pgmaint's own records to avoid false
//! alarms: when pgmaint first saw each table (the earliest snapshot that
//! holds it, a creation estimate for tables never vacuumed) and which tasks
//! removed rows a moment ago (dead rows autovacuum has not had its turn at).

use std::collections::HashMap;

use crate::unnamed::Unnamed;
use tokio_postgres::{Error, GenericClient};

use crate::sql::quote_ident;

/// Seconds since the earliest snapshot holding each relation, by oid.
pub(crate) async fn first_seen(
    client: &impl GenericClient,
    schema: &str,
) -> Result<HashMap<u32, f64>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT r.relid, extract(epoch FROM now() - min(s.taken_at))::float8
                   FROM {q}.snapshot_relations r JOIN {q}.snapshots s ON s.id = r.snapshot_id
                  GROUP BY r.relid"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Tasks whose real (not dry) run removed or changed rows within the last
/// `seconds`, with the seconds since each finished.
pub(crate) async fn recent_removals(
    client: &impl GenericClient,
    schema: &str,
    seconds: f64,
) -> Result<HashMap<String, f64>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT task, extract(epoch FROM now() - max(finished_at))::float8
                   FROM {q}.task_runs
                  WHERE NOT dry_run AND rows > 0 AND finished_at > now() - $1::float8 * interval '1 second'
                  GROUP BY task"
            ),
            &[&seconds],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

//! What the health checks read from pgmaint's own records to avoid false
//! alarms: when pgmaint first saw each table (the earliest snapshot that
//! holds it, a creation estimate for tables never vacuumed) and which tasks
//! removed rows a moment ago (dead rows autovacuum has not had its turn at);
//! and the custom checks' findings kept with each snapshot.

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

/// One custom check's finding, as a snapshot keeps it.
pub(crate) struct CheckRow<'a> {
    pub check: &'a str,
    pub object: &'a str,
    pub value: Option<f64>,
    pub status: &'a str,
}

/// Keeps the custom checks' findings with snapshot `snapshot`.
pub(crate) async fn record_check_findings(
    client: &impl GenericClient,
    schema: &str,
    snapshot: i64,
    rows: &[CheckRow<'_>],
) -> Result<u64, Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let q = quote_ident(schema);
    let checks: Vec<&str> = rows.iter().map(|r| r.check).collect();
    let objects: Vec<&str> = rows.iter().map(|r| r.object).collect();
    let values: Vec<f64> = rows.iter().map(|r| r.value.unwrap_or(f64::NAN)).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status).collect();
    client
        .exec(
            &format!(
                "INSERT INTO {q}.snapshot_checks (snapshot_id, check_name, object, value, status)
                 SELECT $1, c, o, nullif(v, 'NaN'), s FROM unnest($2::text[], $3::text[], $4::float8[], $5::text[]) AS u (c, o, v, s)"
            ),
            &[&snapshot, &checks, &objects, &values, &statuses],
        )
        .await
}

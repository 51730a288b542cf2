//! Snapshots: the sizes, row estimates and dead rows of every table, index
//! and materialized view, and pg_stat_statements' counters, stored in the
//! state schema. Growth and slow queries are computed by comparing them
//! with now; a dashboard will chart them. Old ones are pruned after
//! `[health] keep`.

use tokio_postgres::Client;

pub(crate) use crate::store::snapshots::Snapshot;

pub(crate) async fn take(
    client: &mut Client,
    schema: &str,
    keep: &str,
) -> Result<Snapshot, tokio_postgres::Error> {
    let statements = super::has_extension(client, "pg_stat_statements").await?;
    crate::store::snapshots::take_snapshot(client, schema, keep, statements).await
}

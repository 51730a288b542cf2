//! Snapshots: `snapshots`, `snapshot_relations` and
//! `snapshot_statements`, taken by `pgmaint snapshot` and the daemon and
//! read by the growth and slow-query checks.

use crate::unnamed::Unnamed;
use serde::Serialize;
use tokio_postgres::{Client, Error, GenericClient};

use crate::sql::quote_ident;

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub id: i64,
    pub relations: u64,
    pub statements: Option<u64>,
    pub pruned: u64,
}

/// Stores one snapshot of every relation's size, rows and dead rows (and,
/// with `statements`, of pg_stat_statements) and prunes those older than
/// `keep`, a PostgreSQL interval, in one transaction.
pub(crate) async fn take_snapshot(
    client: &mut Client,
    schema: &str,
    keep: &str,
    statements: bool,
) -> Result<Snapshot, Error> {
    let q = quote_ident(schema);
    let tx = crate::db::begin(client).await?;
    let id: i64 = tx
        .row(
            &format!("INSERT INTO {q}.snapshots (statements) VALUES ($1) RETURNING id"),
            &[&statements],
        )
        .await?
        .get(0);
    let relations = tx
        .exec(
            &format!(
                "INSERT INTO {q}.snapshot_relations (snapshot_id, relid, schema_name, name, kind, total_bytes, rows_estimate, dead_rows)
                 SELECT $1, c.oid, n.nspname, c.relname, c.relkind, pg_total_relation_size(c.oid), greatest(c.reltuples, 0), s.n_dead_tup
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
                  WHERE c.relkind IN ('r', 'm', 'p', 'i') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg_toast%'"
            ),
            &[&id],
        )
        .await?;
    let statement_rows = if statements {
        Some(
            tx.exec(
                &format!(
                    "INSERT INTO {q}.snapshot_statements (snapshot_id, queryid, userid, dbid, calls, total_exec_time, rows, query)
                     SELECT $1, queryid, userid, dbid, sum(calls), sum(total_exec_time), sum(rows), min(left(query, 1000))
                       FROM pg_stat_statements WHERE queryid IS NOT NULL GROUP BY queryid, userid, dbid"
                ),
                &[&id],
            )
            .await?,
        )
    } else {
        None
    };
    let pruned = tx
        .exec(
            &format!("DELETE FROM {q}.snapshots WHERE taken_at < now() - $1::text::interval"),
            &[&keep],
        )
        .await?;
    tx.commit().await?;
    Ok(Snapshot {
        id,
        relations,
        statements: statement_rows,
        pruned,
    })
}

/// How many snapshots were taken in the last 8 days; an error when the
/// state schema has none (no `pgmaint init` yet).
pub(crate) async fn snapshots_in_last_8_days(
    client: &impl GenericClient,
    schema: &str,
) -> Result<i64, Error> {
    let q = quote_ident(schema);
    Ok(client
        .row(
            &format!(
                "SELECT count(*) FROM {q}.snapshots WHERE taken_at > now() - interval '8 days'"
            ),
            &[],
        )
        .await?
        .get(0))
}

/// How many snapshots are at least a day old.
pub(crate) async fn snapshots_a_day_old(
    client: &impl GenericClient,
    schema: &str,
) -> Result<i64, Error> {
    let q = quote_ident(schema);
    Ok(client
        .row(
            &format!(
                "SELECT count(*) FROM {q}.snapshots WHERE taken_at <= now() - interval '1 day'"
            ),
            &[],
        )
        .await?
        .get(0))
}

/// Each table of 10 MiB or more (and 1280 pages): its name, its size now,
/// and its size in the latest snapshot at least a day old and a week old.
pub(crate) async fn table_sizes_against_snapshots(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<(String, f64, f64, Option<f64>)>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "WITH now_ AS (SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name, pg_total_relation_size(c.oid)::float8 AS size
                                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                WHERE c.relkind IN ('r', 'm', 'p') AND c.relpages >= 1280
                                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                                  AND n.nspname NOT LIKE 'pg_toast%'),
                      past AS (SELECT DISTINCT ON (r.relid, w.days) r.relid, w.days, r.total_bytes::float8 AS size
                                 FROM {q}.snapshot_relations r JOIN {q}.snapshots s ON s.id = r.snapshot_id
                                 CROSS JOIN (VALUES (1), (7)) w(days)
                                WHERE s.taken_at <= now() - make_interval(days => w.days)
                                  AND s.taken_at > now() - make_interval(days => w.days * 2)
                                ORDER BY r.relid, w.days, s.taken_at DESC)
                 SELECT n.name, n.size, d.size, w.size
                   FROM now_ n
                   LEFT JOIN past d ON d.relid = n.oid AND d.days = 1
                   LEFT JOIN past w ON w.relid = n.oid AND w.days = 7
                  WHERE d.size IS NOT NULL AND d.size > 0 AND n.size >= 10485760"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// The latest snapshot that holds pg_stat_statements' counters.
pub(crate) async fn latest_statements_snapshot(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<i64>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .row(
            &format!("SELECT max(id) FROM {q}.snapshots WHERE statements"),
            &[],
        )
        .await?
        .get(0))
}

/// Statements called fewer times than this since the snapshot are too few
/// to judge a mean by (slow-queries).
pub(crate) const SLOW_MIN_CALLS: i64 = 5;

/// This database's statements called `SLOW_MIN_CALLS` times or more since snapshot
/// `snapshot`: their text (200 characters), calls and total time since.
pub(crate) async fn statements_since_snapshot(
    client: &impl GenericClient,
    schema: &str,
    snapshot: i64,
) -> Result<Vec<(String, f64, f64)>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT left(regexp_replace(s.query, '\\s+', ' ', 'g'), 200),
                        (s.calls - coalesce(p.calls, 0))::float8,
                        (s.total_exec_time - coalesce(p.total_exec_time, 0))::float8
                   FROM pg_stat_statements s
                   LEFT JOIN {q}.snapshot_statements p
                          ON p.snapshot_id = $1 AND p.queryid = s.queryid AND p.userid = s.userid AND p.dbid = s.dbid
                  WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND s.calls - coalesce(p.calls, 0) >= $2
                  ORDER BY 3 DESC LIMIT 200"
            ),
            &[&snapshot, &SLOW_MIN_CALLS],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Whether a snapshot is due: none yet, or the latest older than
/// `every_seconds`.
pub(crate) async fn snapshot_due(
    client: &impl GenericClient,
    schema: &str,
    every_seconds: f64,
) -> Result<bool, Error> {
    let q = quote_ident(schema);
    Ok(client
        .row(
            &format!("SELECT coalesce(max(taken_at) < now() - $1::float8 * interval '1 second', true) FROM {q}.snapshots"),
            &[&every_seconds],
        )
        .await?
        .get(0))
}

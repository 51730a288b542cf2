//! Snapshots: the sizes, row estimates and dead rows of every table, index
//! and materialized view, and pg_stat_statements' counters, stored in the
//! state schema. Growth and slow queries are computed by comparing them
//! with now; a dashboard will chart them. Old ones are pruned after
//! `[health] keep`.

use serde::Serialize;
use tokio_postgres::Client;

use crate::sql::quote_ident;

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub id: i64,
    pub relations: u64,
    pub statements: Option<u64>,
    pub pruned: u64,
}

pub async fn take(
    client: &mut Client,
    schema: &str,
    keep: &str,
) -> Result<Snapshot, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let statements = super::has_extension(client, "pg_stat_statements").await?;
    let tx = client.transaction().await?;
    let id: i64 = tx
        .query_one(
            &format!("INSERT INTO {q}.snapshots (statements) VALUES ($1) RETURNING id"),
            &[&statements],
        )
        .await?
        .get(0);
    let relations = tx
        .execute(
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
            tx.execute(
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
        .execute(
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

//! Slow queries from pg_stat_statements, measured between the latest
//! stored snapshot and now (never by resetting the view, which would take
//! the figures away from everyone else).

use super::{CheckContext, Level, Outcome, has_extension, measured};
use crate::sql::quote_ident;

pub async fn slow_queries(ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
    if !has_extension(ctx.client, "pg_stat_statements").await? {
        return Ok(Outcome::Unknown(
            "pg_stat_statements is not installed (shared_preload_libraries = 'pg_stat_statements', then CREATE EXTENSION pg_stat_statements)".into(),
        ));
    }
    let q = quote_ident(&ctx.config.state_schema);
    let latest: Option<i64> = match ctx
        .client
        .query_one(
            &format!("SELECT max(id) FROM {q}.snapshots WHERE statements"),
            &[],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(_) => None,
    };
    let Some(latest) = latest else {
        return Ok(Outcome::Unknown("no snapshot of pg_stat_statements yet: run `pgmaint snapshot`, and again after a while".into()));
    };
    let rows = ctx
        .client
        .query(
            &format!(
                "SELECT left(regexp_replace(s.query, '\\s+', ' ', 'g'), 200),
                        (s.calls - coalesce(p.calls, 0))::float8,
                        (s.total_exec_time - coalesce(p.total_exec_time, 0))::float8
                   FROM pg_stat_statements s
                   LEFT JOIN {q}.snapshot_statements p
                          ON p.snapshot_id = $1 AND p.queryid = s.queryid AND p.userid = s.userid AND p.dbid = s.dbid
                  WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND s.calls - coalesce(p.calls, 0) >= 5
                  ORDER BY 3 DESC LIMIT 200"
            ),
            &[&latest],
        )
        .await?;
    let findings = rows
        .iter()
        .filter_map(|r| {
            let (calls, total): (f64, f64) = (r.get(1), r.get(2));
            let mean = total / calls.max(1.0);
            let mut f = measured(
                ctx,
                r.get(0),
                mean,
                |ms| format!("{ms:.1} ms"),
                "EXPLAIN (ANALYZE, BUFFERS) it; an index on its WHERE or JOIN columns often helps",
            );
            f.value = format!("{mean:.1} ms mean over {calls:.0} calls since the last snapshot");
            (f.status > Level::Ok).then_some(f)
        })
        .collect();
    Ok(Outcome::Findings(findings, None))
}

//! Sessions and locks: connections against max_connections, long-running
//! queries, idle-in-transaction sessions, blocked queries, and prepared
//! transactions left behind.

use super::{Check, CheckContext, CheckName, Outcome, measured, percent, seconds};
use crate::unnamed::Unnamed;

pub(super) struct Connections;

impl Check for Connections {
    fn name(&self) -> CheckName {
        CheckName::Connections
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let row = ctx
            .client
            .row(
                "SELECT count(*)::float8, current_setting('max_connections')::float8,
                    current_setting('superuser_reserved_connections')::float8
               FROM pg_stat_activity WHERE backend_type = 'client backend'",
                &[],
            )
            .await?;
        let (used, max, reserved): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
        let available = (max - reserved).max(1.0);
        let finding = measured(
            ctx,
            "max_connections".into(),
            used / available,
            percent,
            "use a connection pooler (PgBouncer), or lower the applications' pool sizes",
        );
        let summary = format!("{used:.0} of {available:.0} connections in use");
        Ok(Outcome::Findings(vec![finding], Some(summary)))
    }
}

/// Sessions in `state` for longer than the thresholds.
async fn sessions_in(
    ctx: &CheckContext<'_>,
    state_sql: &str,
    since: &str,
    advice: &str,
) -> Result<Outcome, tokio_postgres::Error> {
    let low = ctx.thresholds.warning.unwrap_or(0.0);
    let rows = ctx
        .client
        .rows(
            &format!(
                "SELECT pid, coalesce(usename::text, '?'), coalesce(datname::text, '?'),
                        extract(epoch FROM now() - {since})::float8, left(query, 200)
                   FROM pg_stat_activity
                  WHERE {state_sql} AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                    AND extract(epoch FROM now() - {since}) >= $1::float8
                  ORDER BY 4 DESC LIMIT 50"
            ),
            &[&low],
        )
        .await?;
    let findings = rows
        .iter()
        .map(|r| {
            let object = format!(
                "pid {} ({}@{}): {}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(4)
            );
            measured(ctx, object, r.get(3), seconds, advice)
        })
        .collect();
    Ok(Outcome::Findings(findings, None))
}

pub(super) struct LongRunningQueries;

impl Check for LongRunningQueries {
    fn name(&self) -> CheckName {
        CheckName::LongRunningQueries
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        sessions_in(
            ctx,
            "state = 'active'",
            "query_start",
            "check the query's plan; cancel it with pg_cancel_backend(pid) if it is stuck",
        )
        .await
    }
}

pub(super) struct IdleInTransaction;

impl Check for IdleInTransaction {
    fn name(&self) -> CheckName {
        CheckName::IdleInTransaction
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        sessions_in(
            ctx,
            "state IN ('idle in transaction', 'idle in transaction (aborted)')",
            "state_change",
            "the application left a transaction open: it holds locks and stops vacuum; set idle_in_transaction_session_timeout, or end it with pg_terminate_backend(pid)",
        )
        .await
    }
}

pub(super) struct BlockedQueries;

impl Check for BlockedQueries {
    fn name(&self) -> CheckName {
        CheckName::BlockedQueries
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let low = ctx.thresholds.warning.unwrap_or(0.0);
        let rows = ctx
            .client
            .rows(
                "SELECT pid, pg_blocking_pids(pid)::text, extract(epoch FROM now() - coalesce(query_start, state_change))::float8, left(query, 200)
               FROM pg_stat_activity
              WHERE cardinality(pg_blocking_pids(pid)) > 0
                AND extract(epoch FROM now() - coalesce(query_start, state_change)) >= $1::float8
              ORDER BY 3 DESC LIMIT 50",
                &[&low],
            )
            .await?;
        let findings = rows
            .iter()
            .map(|r| {
                let object = format!("pid {} blocked by {}: {}", r.get::<_, i32>(0), r.get::<_, String>(1), r.get::<_, String>(3));
                measured(ctx, object, r.get(2), seconds, "look at what the blocking sessions are doing (pg_stat_activity); keep transactions short and set lock_timeout")
            })
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

pub(super) struct PreparedTransactions;

impl Check for PreparedTransactions {
    fn name(&self) -> CheckName {
        CheckName::PreparedTransactions
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let rows = ctx
            .client
            .rows(
                "SELECT gid, database::text, extract(epoch FROM now() - prepared)::float8 FROM pg_prepared_xacts ORDER BY prepared",
                &[],
            )
            .await?;
        let findings = rows
            .iter()
            .map(|r| {
                measured(ctx, format!("{} in {}", r.get::<_, String>(0), r.get::<_, String>(1)), r.get(2), seconds,
                    "a forgotten prepared transaction holds locks and stops vacuum: COMMIT PREPARED or ROLLBACK PREPARED it")
            })
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

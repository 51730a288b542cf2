//! Sessions and locks: connections against max_connections, long-running
//! queries and transactions, idle-in-transaction sessions, blocked queries, and prepared
//! transactions left behind.

use super::{Check, CheckContext, CheckName, Outcome, measured, percent, seconds};
use crate::config::Config;
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

    /// A query running, or a transaction open, longer than the thresholds:
    /// a transaction of many short statements holds its locks and the xmin
    /// horizon as long as one long query does, and no statement of it is
    /// ever old. Each session is measured from its transaction's start
    /// (its query's, outside one). A session idle in its transaction is
    /// idle-in-transaction's once it has been idle past that check's
    /// warning; before that it is judged here by its transaction's age.
    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let low = ctx.thresholds.warning.unwrap_or(0.0);
        let idle_limit = idle_in_transaction_warning(ctx.config);
        let rows = ctx
            .client
            .rows(
                "SELECT pid, coalesce(usename::text, '?'), coalesce(datname::text, '?'),
                        extract(epoch FROM now() - coalesce(xact_start, query_start))::float8,
                        extract(epoch FROM now() - query_start)::float8,
                        extract(epoch FROM now() - state_change)::float8,
                        state = 'active', left(query, 200)
                   FROM pg_stat_activity
                  WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
                    AND (state = 'active'
                         OR (state IN ('idle in transaction', 'idle in transaction (aborted)')
                             AND extract(epoch FROM now() - state_change) < $2::float8))
                    AND extract(epoch FROM now() - coalesce(xact_start, query_start)) >= $1::float8
                  ORDER BY 4 DESC LIMIT 50",
                &[&low, &idle_limit],
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
                    r.get::<_, String>(7)
                );
                let (age, query_age, idle, active): (f64, f64, f64, bool) =
                    (r.get(3), r.get(4), r.get(5), r.get(6));
                // One statement that is the whole transaction is a long query.
                if active && age - query_age < 1.0 {
                    return measured(ctx, object, age, seconds, "check the query's plan; cancel it with pg_cancel_backend(pid) if it is stuck");
                }
                let mut f = measured(ctx, object, age, seconds,
                    "a transaction open this long keeps its locks and holds back vacuum (rows dead since it began stay): commit in smaller transactions, or end it with pg_terminate_backend(pid)");
                f.value = if active {
                    format!("transaction open {}; its current statement {}", seconds(age), seconds(query_age))
                } else {
                    format!("transaction open {}; idle in it for {}", seconds(age), seconds(idle))
                };
                f
            })
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

/// The idle time from which idle-in-transaction reports a session: its
/// warning, or never when it is disabled or has no warning.
fn idle_in_transaction_warning(config: &Config) -> f64 {
    let name = CheckName::IdleInTransaction;
    let settings = config
        .health
        .checks
        .get(name.as_str())
        .cloned()
        .unwrap_or_default();
    if settings.enabled == Some(false) {
        return f64::INFINITY;
    }
    super::thresholds(name, &settings)
        .warning
        .unwrap_or(f64::INFINITY)
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

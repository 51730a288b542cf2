//! Slow queries from pg_stat_statements, measured between the latest
//! stored snapshot and now (never by resetting the view, which would take
//! the figures away from everyone else).

use super::{Check, CheckContext, CheckName, Level, Outcome, has_extension, measured};
use crate::store::snapshots;
use crate::unnamed::Unnamed;

pub(super) struct SlowQueries;

impl Check for SlowQueries {
    fn name(&self) -> CheckName {
        CheckName::SlowQueries
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let created = has_extension(ctx.client, "pg_stat_statements").await?;
        let loaded = preloaded(ctx.client).await?;
        // Only the step that is missing, so nobody restarts a server that
        // already loads the library.
        let missing = match (loaded, created) {
            (Some(true) | None, true) => None,
            (Some(true), false) => Some(
                "pg_stat_statements is loaded (shared_preload_libraries) but not created in this database: CREATE EXTENSION pg_stat_statements",
            ),
            (Some(false), true) => Some(
                "pg_stat_statements is created in this database but not loaded: add it to shared_preload_libraries and restart the server",
            ),
            (Some(false), false) => Some(
                "pg_stat_statements is not installed: add it to shared_preload_libraries, restart the server, then CREATE EXTENSION pg_stat_statements",
            ),
            (None, false) => Some(
                "pg_stat_statements is not created in this database: CREATE EXTENSION pg_stat_statements (the server must also list it in shared_preload_libraries, which this role cannot read)",
            ),
        };
        if let Some(missing) = missing {
            return Ok(Outcome::Unknown(missing.into()));
        }
        let schema = &ctx.config.state_schema;
        // No state schema yet reads as no snapshot yet.
        let latest: Option<i64> = snapshots::latest_statements_snapshot(ctx.client, schema)
            .await
            .unwrap_or_default();
        let Some(latest) = latest else {
            return Ok(Outcome::Unknown("no snapshot of pg_stat_statements yet: run `pgmaint snapshot`, and again after a while".into()));
        };
        let rows = snapshots::statements_since_snapshot(ctx.client, schema, latest).await?;
        let findings: Vec<_> = rows
            .into_iter()
            .filter_map(|(query, calls, total)| {
                let mean = total / calls.max(1.0);
                let mut f = measured(
                    ctx,
                    query,
                    mean,
                    |ms| format!("{ms:.1} ms"),
                    "EXPLAIN (ANALYZE, BUFFERS) it; an index on its WHERE or JOIN columns often helps",
                );
                f.value = format!("{mean:.1} ms mean over {calls:.0} calls since the last snapshot");
                f.threshold = format!(
                    "{}; statements of {} calls or more since the snapshot",
                    f.threshold,
                    snapshots::SLOW_MIN_CALLS
                );
                (f.status > Level::Ok).then_some(f)
            })
            .collect();
        let summary = format!(
            "{} statement(s) past the thresholds; statements called fewer than {} times since the last snapshot are not judged",
            findings.len(),
            snapshots::SLOW_MIN_CALLS
        );
        Ok(Outcome::Findings(findings, Some(summary)))
    }
}

/// Whether the server loaded pg_stat_statements at start, or None when
/// this role may not read `shared_preload_libraries` (pg_settings hides it
/// without superuser or pg_read_all_settings). An entry may be a path
/// (`$libdir/pg_stat_statements`).
async fn preloaded(client: &tokio_postgres::Client) -> Result<Option<bool>, tokio_postgres::Error> {
    let libraries: Option<String> = client
        .row_opt(
            "SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'",
            &[],
        )
        .await?
        .and_then(|row| row.get(0));
    Ok(libraries.map(|libraries| {
        libraries.split(',').any(|entry| {
            let entry = entry.trim().trim_matches('"');
            entry.rsplit('/').next() == Some("pg_stat_statements")
        })
    }))
}

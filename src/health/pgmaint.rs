//! Figures from pgmaint's own tasks: materialized views older than their
//! refresh task's `max_staleness`, and how many rows already qualify for
//! each purge and archive task (a cheap planner estimate on big tables).

use super::{CheckContext, Outcome, measured, seconds};
use crate::config::Config;
use crate::sql::{self, quote_ident};
use crate::tasks::TaskSpec;
use crate::tasks::rows::Filter;

pub async fn matview_staleness(ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let config: &Config = ctx.config;
    // No state schema yet means no refresh recorded yet.
    let ages = crate::tasks::refresh::refresh_ages(ctx.client, &config.state_schema)
        .await
        .unwrap_or_default();
    let mut findings = Vec::new();
    for task in &config.tasks {
        let TaskSpec::Refresh(spec) = &task.spec else {
            continue;
        };
        let Some(max) = spec.max_staleness else {
            continue;
        };
        let views: Vec<String> = if spec.views.is_empty() {
            ctx.client
                .query(
                    "SELECT schemaname || '.' || matviewname FROM pg_matviews",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect()
        } else {
            let mut resolved = Vec::new();
            for view in &spec.views {
                let row = ctx
                    .client
                    .query_one("SELECT (SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1))", &[view])
                    .await?;
                if let Some(name) = row.get::<_, Option<String>>(0) {
                    resolved.push(name);
                }
            }
            resolved
        };
        for view in views {
            let age = ages.get(&view).copied();
            let limit = max.0.as_secs_f64().max(1.0);
            let age = age.unwrap_or(f64::INFINITY);
            let mut f = measured(
                ctx,
                view.clone(),
                age / limit,
                |x| format!("{x:.1}x max_staleness"),
                &format!(
                    "run the `{}` task more often (a schedule), or check why it fails (`pgmaint history --task {}`)",
                    task.name, task.name
                ),
            );
            f.value = if age.is_finite() {
                format!("refreshed {} ago; max_staleness {max}", seconds(age))
            } else {
                format!("never refreshed by pgmaint; max_staleness {max}")
            };
            findings.push(f);
        }
    }
    let summary = if findings.is_empty() {
        Some("no refresh task sets max_staleness".into())
    } else {
        None
    };
    Ok(Outcome::Findings(findings, summary))
}

pub async fn task_backlog(ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let mut findings = Vec::new();
    for task in &ctx.config.tasks {
        let (table, filter) = match &task.spec {
            TaskSpec::Purge(p) => (&p.table, &p.filter),
            TaskSpec::Archive(a) => (&a.table, &a.filter),
            _ => continue,
        };
        let Ok(info) = crate::db::lookup_table(ctx.client, table).await else {
            continue;
        };
        let (predicate, params): (String, Vec<String>) = match filter {
            Filter::Where { predicate } => (sql::predicate(predicate), vec![]),
            Filter::OlderThan {
                time_column,
                older_than,
            } => (
                format!("{} < now() - $1::text::interval", quote_ident(time_column)),
                vec![older_than.clone()],
            ),
        };
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        // Exact below a million rows (by the planner's estimate), else the
        // planner's own estimate of the matching rows.
        let (rows, how) = if info.estimated_rows < 1_000_000.0 {
            let row = ctx
                .client
                .query_one(&sql::count_matching(&info.name, &predicate), &params)
                .await?;
            (row.get::<_, i64>(0) as f64, "exact")
        } else {
            let plan: serde_json::Value = ctx
                .client
                .query_one(&sql::explain_matching(&info.name, &predicate), &params)
                .await?
                .get(0);
            (
                plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0),
                "estimate",
            )
        };
        let mut f = measured(
            ctx,
            format!("{} ({})", task.name, info.name),
            rows,
            |x| format!("{x:.0} rows"),
            &format!(
                "run `pgmaint run {}` (or schedule it more often)",
                task.name
            ),
        );
        f.value = format!("{rows:.0} rows qualify ({how})");
        findings.push(f);
    }
    let summary = if findings.is_empty() {
        Some("no purge or archive task configured".into())
    } else {
        None
    };
    Ok(Outcome::Findings(findings, summary))
}

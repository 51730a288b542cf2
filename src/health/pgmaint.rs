//! Figures from pgmaint's own tasks: materialized views older than their
//! refresh task's `max_staleness`, and how many rows already qualify for
//! each purge and archive task (a cheap planner estimate on big tables).

use super::{Check, CheckContext, CheckName, Outcome, measured, seconds};
use crate::config::Config;
use crate::tasks::refresh::RefreshSpec;
use crate::unnamed::Unnamed;

pub(super) struct MatviewStaleness;

impl Check for MatviewStaleness {
    fn name(&self) -> CheckName {
        CheckName::MatviewStaleness
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        matview_staleness(ctx).await
    }
}

pub(super) struct TaskBacklog;

impl Check for TaskBacklog {
    fn name(&self) -> CheckName {
        CheckName::TaskBacklog
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        task_backlog(ctx).await
    }
}

async fn matview_staleness(ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let config: &Config = ctx.config;
    // No state schema yet means no refresh recorded yet.
    let ages = crate::tasks::refresh::refresh_ages(ctx.client, &config.state_schema)
        .await
        .unwrap_or_default();
    let mut findings = Vec::new();
    for task in &config.tasks {
        let Some(spec) = task.spec.downcast_ref::<RefreshSpec>() else {
            continue;
        };
        let Some(max) = spec.max_staleness else {
            continue;
        };
        let views: Vec<String> = if spec.views.is_empty() {
            ctx.client
                .rows(
                    "SELECT format('%I.%I', schemaname, matviewname) FROM pg_matviews",
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
                    .row("SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1))", &[view])
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

async fn task_backlog(ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let mut findings = Vec::new();
    for task in &ctx.config.tasks {
        // The kind counts its own rows, with the filter and cutoff its walk
        // uses, so the backlog is what a dry run would say.
        // In the task's time_zone, as its dry run counts: set LOCAL in the
        // check's own transaction, and the session's zone put back after.
        let session_zone = match task.options.time_zone {
            Some(zone) => Some(
                ctx.client
                    .row(
                        "SELECT current_setting('TimeZone'), set_config('TimeZone', $1, true)",
                        &[&zone.name()],
                    )
                    .await?
                    .get::<_, String>(0),
            ),
            None => None,
        };
        let counted = task.spec.backlog(ctx.client, &task.options).await;
        if let Some(zone) = session_zone {
            ctx.client
                .exec("SELECT set_config('TimeZone', $1, true)", &[&zone])
                .await?;
        }
        let Some((table, backlog)) = counted? else {
            continue;
        };
        let (rows, how) = (
            backlog.rows,
            if backlog.exact { "exact" } else { "estimate" },
        );
        let mut f = measured(
            ctx,
            format!("{} ({table})", task.name),
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

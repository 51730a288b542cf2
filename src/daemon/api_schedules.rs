//! Schedules created through the API: stored in the state schema, checked
//! exactly as config schedules are (cron, time zone, task and notifier
//! names), and each change written to the audit table.
//!
//! A change reaches every daemon at once: its transaction also sends
//! `NOTIFY pgmaint_schedules` (the payload is the state schema), which each
//! scheduler LISTENs for. Where notifications do not arrive (a transaction
//! pooler, a listening connection that dropped), a scheduler also compares
//! `digest` every few seconds.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_postgres::Client;

use crate::config::file::Misfire;
use crate::config::{Config, Duration, NotifyTargets, ScheduleConfig};
use crate::schedule::Schedule;
use crate::sql::quote_ident;

/// The channel a change to the API's schedules is notified on.
pub const CHANNEL: &str = "pgmaint_schedules";

/// A schedule kept in the state schema, and since when it reads as it does
/// (its creation or last change): no fire before that is its.
pub struct ApiSchedule {
    pub config: ScheduleConfig,
    pub since: DateTime<Utc>,
}

/// A schedule as the API receives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    pub name: Option<String>,
    pub cron: String,
    pub timezone: Option<String>,
    pub tasks: Vec<String>,
    pub enabled: Option<bool>,
    pub allow_critical: Option<bool>,
    pub misfire: Option<Misfire>,
    pub misfire_grace: Option<String>,
    pub max_runtime: Option<String>,
    #[serde(default)]
    pub notify: Vec<String>,
}

/// Checks a body the way the config is checked; every problem, joined.
pub fn validate(config: &Config, name: &str, body: ScheduleBody) -> Result<ScheduleConfig, String> {
    let mut problems = Vec::new();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push(format!("name `{name}`: use letters, digits, `_` and `-`"));
    }
    let duration = |key: &str, value: &Option<String>, problems: &mut Vec<String>| {
        value.as_ref().and_then(|v| match v.parse::<Duration>() {
            Ok(d) => Some(d.0),
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                None
            }
        })
    };
    let misfire_grace = duration("misfire_grace", &body.misfire_grace, &mut problems);
    let max_runtime = duration("max_runtime", &body.max_runtime, &mut problems);
    for task in &body.tasks {
        if config.task(task).is_none() {
            problems.push(format!("tasks: no task named `{task}` in the config"));
        }
    }
    if body.tasks.is_empty() {
        problems.push("tasks: name at least one task".into());
    }
    for notifier in &body.notify {
        if !config.notifiers.iter().any(|n| &n.name == notifier) {
            problems.push(format!(
                "notify: no notifier named `{notifier}` in the config"
            ));
        }
    }
    let schedule = ScheduleConfig {
        name: name.to_string(),
        cron: body.cron,
        timezone: body.timezone.unwrap_or_else(|| "UTC".into()),
        tasks: body.tasks,
        enabled: body.enabled.unwrap_or(true),
        allow_critical: body.allow_critical.unwrap_or(false),
        max_runtime,
        misfire: body.misfire.unwrap_or_default(),
        misfire_grace: misfire_grace.unwrap_or(std::time::Duration::from_secs(3600)),
        notify: NotifyTargets::all(body.notify),
    };
    if let Err(err) = Schedule::new(&schedule) {
        problems.push(err);
    }
    if problems.is_empty() {
        Ok(schedule)
    } else {
        Err(problems.join("; "))
    }
}

pub async fn load(
    client: &Client,
    schema: &str,
) -> Result<Vec<ApiSchedule>, tokio_postgres::Error> {
    let q = quote_ident(schema);
    Ok(client
        .query(
            &format!(
                "SELECT name, cron, timezone, tasks, enabled, allow_critical, misfire, misfire_grace_seconds, max_runtime_seconds, notify, updated_at
                   FROM {q}.api_schedules ORDER BY name"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| ApiSchedule { since: r.get(10), config: ScheduleConfig {
            name: r.get(0),
            cron: r.get(1),
            timezone: r.get(2),
            tasks: r.get(3),
            enabled: r.get(4),
            allow_critical: r.get(5),
            misfire: if r.get::<_, String>(6) == "skip" { Misfire::Skip } else { Misfire::RunOnce },
            misfire_grace: std::time::Duration::from_secs_f64(r.get(7)),
            max_runtime: r.get::<_, Option<f64>>(8).map(std::time::Duration::from_secs_f64),
            notify: NotifyTargets::all(r.get(9)),
        }})
        .collect())
}

/// What the API's schedules are now, in one short value: any change
/// (created, changed, deleted; committed in any order) changes it.
pub async fn digest(client: &Client, schema: &str) -> Result<String, tokio_postgres::Error> {
    let q = quote_ident(schema);
    Ok(client
        .query_one(
            &format!(
                "SELECT coalesce(md5(string_agg(name || ' ' || updated_at::text, ',' ORDER BY name)), '') FROM {q}.api_schedules"
            ),
            &[],
        )
        .await?
        .get(0))
}

/// Tells every daemon, when `tx` commits, that the schedules changed.
async fn announce(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &schema])
        .await?;
    Ok(())
}

/// Creates or replaces a schedule; `create` refuses one that exists.
pub async fn save(
    client: &mut Client,
    schema: &str,
    s: &ScheduleConfig,
    create: bool,
    who: &str,
) -> Result<bool, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let misfire = match s.misfire {
        Misfire::Skip => "skip",
        Misfire::RunOnce => "run_once",
    };
    let conflict = if create {
        "DO NOTHING"
    } else {
        "DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, tasks = excluded.tasks, enabled = excluded.enabled,
                      allow_critical = excluded.allow_critical, misfire = excluded.misfire,
                      misfire_grace_seconds = excluded.misfire_grace_seconds, max_runtime_seconds = excluded.max_runtime_seconds,
                      notify = excluded.notify, updated_at = now()"
    };
    let tx = client.transaction().await?;
    let changed = tx
        .execute(
            &format!(
                "INSERT INTO {q}.api_schedules (name, cron, timezone, tasks, enabled, allow_critical, misfire, misfire_grace_seconds, max_runtime_seconds, notify)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) {conflict}"
            ),
            &[&s.name, &s.cron, &s.timezone, &s.tasks, &s.enabled, &s.allow_critical, &misfire,
              &s.misfire_grace.as_secs_f64(), &s.max_runtime.map(|d| d.as_secs_f64()), &s.notify.on_failure],
        )
        .await?
        == 1;
    if changed {
        audit(&tx, schema, who, if create { "create schedule" } else { "update schedule" }, &s.name,
            serde_json::json!({"cron": s.cron, "timezone": s.timezone, "tasks": s.tasks, "enabled": s.enabled})).await?;
        announce(&tx, schema).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

pub async fn delete(
    client: &mut Client,
    schema: &str,
    name: &str,
    who: &str,
) -> Result<bool, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let tx = client.transaction().await?;
    let deleted = tx
        .execute(
            &format!("DELETE FROM {q}.api_schedules WHERE name = $1"),
            &[&name],
        )
        .await?
        == 1;
    if deleted {
        audit(
            &tx,
            schema,
            who,
            "delete schedule",
            name,
            serde_json::json!({}),
        )
        .await?;
        announce(&tx, schema).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

pub async fn audit(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    who: &str,
    action: &str,
    object: &str,
    details: serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .execute(
            &format!(
                "INSERT INTO {q}.audit (who, action, object, details) VALUES ($1, $2, $3, $4)"
            ),
            &[&who, &action, &object, &details],
        )
        .await?;
    Ok(())
}

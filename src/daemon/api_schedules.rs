//! Schedules created through the API: stored in the state schema, checked
//! exactly as config schedules are (cron, time zone, task and notifier
//! names), and each change written to the audit table.
//!
//! A change reaches every daemon at once: its transaction also sends
//! `NOTIFY pgmaint_schedules` (the payload is the state schema), which each
//! scheduler LISTENs for. Where notifications do not arrive (a transaction
//! pooler, a listening connection that dropped), a scheduler also compares
//! `digest` every few seconds. The SQL is `store::api_schedules`'; this
//! module checks bodies and turns rows into schedules and back.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_postgres::Client;

use crate::config::file::Misfire;
use crate::config::{Config, Duration, NotifyTargets, ScheduleConfig};
use crate::schedule::Schedule;
use crate::store::{self, StoredSchedule};

/// The channel a change to the API's schedules is notified on.
pub(crate) use crate::store::SCHEDULES_CHANNEL as CHANNEL;

/// A schedule kept in the state schema, and since when it reads as it does
/// (its creation or last change): no fire before that is its.
pub struct ApiSchedule {
    pub config: ScheduleConfig,
    pub since: DateTime<Utc>,
}

/// A schedule as the API receives it (POST creates, PUT replaces); read
/// as JSON whatever its Content-Type.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Required on POST; on PUT, the path's name if given.
    pub name: Option<String>,
    /// 5 fields, or 6 with seconds first.
    pub cron: String,
    /// An IANA name; UTC when left out.
    pub timezone: Option<String>,
    pub tasks: Vec<String>,
    /// True when left out.
    pub enabled: Option<bool>,
    /// False when left out.
    pub allow_critical: Option<bool>,
    /// `skip` or `run_once` (the default).
    #[schema(value_type = Option<String>, example = "run_once")]
    pub misfire: Option<Misfire>,
    #[schema(example = "1h")]
    pub misfire_grace: Option<String>,
    #[schema(example = "30min")]
    pub max_runtime: Option<String>,
    /// Notifiers told of this schedule's outcomes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// Checks a body the way the config is checked; every problem, joined.
pub fn validate(config: &Config, name: &str, body: ScheduleBody) -> Result<ScheduleConfig, String> {
    let mut problems = Vec::new();
    if let Some(problem) = crate::config::name_problem(name) {
        problems.push(format!("name: {problem}"));
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

/// The API's schedules, by name.
pub async fn load(
    client: &Client,
    schema: &str,
) -> Result<Vec<ApiSchedule>, tokio_postgres::Error> {
    Ok(store::load_api_schedules(client, schema)
        .await?
        .into_iter()
        .map(|(r, since)| ApiSchedule {
            since,
            config: ScheduleConfig {
                name: r.name,
                cron: r.cron,
                timezone: r.timezone,
                tasks: r.tasks,
                enabled: r.enabled,
                allow_critical: r.allow_critical,
                misfire: if r.misfire == "skip" {
                    Misfire::Skip
                } else {
                    Misfire::RunOnce
                },
                misfire_grace: std::time::Duration::from_secs_f64(r.misfire_grace_seconds),
                max_runtime: r
                    .max_runtime_seconds
                    .map(std::time::Duration::from_secs_f64),
                notify: NotifyTargets::all(r.notify),
            },
        })
        .collect())
}

/// What the API's schedules are now, in one short value: any change
/// (created, changed, deleted; committed in any order) changes it.
pub async fn digest(client: &Client, schema: &str) -> Result<String, tokio_postgres::Error> {
    store::api_schedules_digest(client, schema).await
}

/// Creates or replaces a schedule; `create` refuses one that exists.
pub async fn save(
    client: &mut Client,
    schema: &str,
    s: &ScheduleConfig,
    create: bool,
    who: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = StoredSchedule {
        name: s.name.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        tasks: s.tasks.clone(),
        enabled: s.enabled,
        allow_critical: s.allow_critical,
        misfire: match s.misfire {
            Misfire::Skip => "skip",
            Misfire::RunOnce => "run_once",
        }
        .to_string(),
        misfire_grace_seconds: s.misfire_grace.as_secs_f64(),
        max_runtime_seconds: s.max_runtime.map(|d| d.as_secs_f64()),
        notify: s.notify.on_failure.clone(),
    };
    store::save_api_schedule(client, schema, &row, create, who).await
}

pub async fn delete(
    client: &mut Client,
    schema: &str,
    name: &str,
    who: &str,
) -> Result<bool, tokio_postgres::Error> {
    store::delete_api_schedule(client, schema, name, who).await
}

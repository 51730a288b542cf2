//! Alerts on what tasks do: `[alerts.NAME] tasks = [...]` fires when one
//! of those tasks fails (critical), when a report (an orphans task with
//! `action = "report"`) finds `found_rows` rows or more, or when a run
//! takes longer than `max_duration` (both warnings). As for checks, it
//! notifies once, again every `repeat` while the task's runs keep firing
//! it (or at once when the level changes), and sends a recovery when a run
//! of the task is clean again. The state is `alert_state`, keyed by the
//! alert and `task NAME`, so several daemons notify once. Dry runs change
//! nothing and alert nobody.

use tokio_postgres::Client;

use crate::config::file::AlertLevel;
use crate::config::{AlertConfig, Config};
use crate::notify::{self, Event, Origin};
use crate::status::{RunReport, Status, TaskReport};
use crate::store;

/// What a task run did that an alert fires on, worst first: the level
/// (`critical` or `warning`) and the reasons.
pub(crate) fn judge(alert: &AlertConfig, task: &TaskReport) -> Option<(&'static str, Vec<String>)> {
    let mut reasons = Vec::new();
    let mut level = "warning";
    if matches!(task.status, Status::Failed | Status::Interrupted) {
        level = "critical";
        reasons.push(match &task.error {
            Some(error) => format!("the task {}: {error}", task.status),
            None => format!("the task {}", task.status),
        });
    }
    if let Some(found) = task.details.get("orphans").and_then(|v| v.as_u64())
        && found >= alert.found_rows
    {
        reasons.push(format!(
            "the report found {found} row(s) (the alert's found_rows is {})",
            alert.found_rows
        ));
    }
    if let Some(max) = alert.max_duration
        && task.duration_ms as u128 > max.as_millis()
    {
        reasons.push(format!(
            "the run took {:.1}s, longer than max_duration {:.1}s",
            task.duration_ms as f64 / 1000.0,
            max.as_secs_f64()
        ));
    }
    if reasons.is_empty() || (alert.level == AlertLevel::Critical && level != "critical") {
        return None;
    }
    Some((level, reasons))
}

/// Evaluates every alert naming a task of this (real) run.
pub(crate) async fn evaluate(
    config: &Config,
    origin: &Origin,
    client: &Client,
    report: &RunReport,
) {
    if report.dry_run {
        return;
    }
    for alert in config.alerts.iter().filter(|a| !a.tasks.is_empty()) {
        for task in report
            .tasks
            .iter()
            .filter(|t| alert.tasks.contains(&t.name))
        {
            // A skipped task did nothing to judge: neither fire nor clear.
            if task.status == Status::Skipped {
                continue;
            }
            if let Err(err) = one(config, origin, client, alert, task).await {
                tracing::warn!(
                    alert = alert.name,
                    task = task.name,
                    "task alert: {}",
                    crate::db::describe(&err)
                );
            }
        }
    }
}

async fn one(
    config: &Config,
    origin: &Origin,
    client: &Client,
    alert: &AlertConfig,
    task: &TaskReport,
) -> Result<(), tokio_postgres::Error> {
    let schema = &config.state_schema;
    let key = format!("task {}", task.name);
    let (event, heard_by) = match judge(alert, task) {
        Some((level, reasons)) => {
            let Some(first) = store::raise_alert(
                client,
                schema,
                &alert.name,
                &key,
                level,
                alert.repeat.as_secs_f64(),
            )
            .await?
            else {
                return Ok(()); // already sent, and not yet due again
            };
            let notify_level = if level == "critical" {
                notify::FAILURE
            } else {
                notify::WARNING
            };
            let event = Event {
                level: notify_level,
                title: format!(
                    "pgmaint task {}: {}{}",
                    task.name,
                    reasons[0],
                    if first { "" } else { " (still)" }
                ),
                text: reasons.join("\n"),
                details: serde_json::json!({ "alert": alert.name, "task": task, "reasons": reasons, "kind": if first { "alert" } else { "repeat" } }),
            };
            (event, notify_level)
        }
        None => {
            let Some(was) = store::clear_alert(client, schema, &alert.name, &key).await? else {
                return Ok(());
            };
            let heard_by = notify::alerted_at(&was);
            let event = Event {
                level: notify::RECOVERY,
                title: format!("pgmaint task {} recovered (was {was})", task.name),
                text: format!("{}: {} ({} rows)", task.name, task.status, task.rows),
                details: serde_json::json!({ "alert": alert.name, "task": task, "kind": "recovery", "was": was }),
            };
            (event, heard_by)
        }
    };
    let event = event.about(origin);
    notify::send(
        &config.notifiers,
        &notify::by_own_flags(&config.notifiers, &alert.notify, heard_by),
        &event,
        Some((client, schema)),
    )
    .await;
    Ok(())
}

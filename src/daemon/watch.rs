//! The daemon's health watch: every `[health] check_every` it runs the
//! checks, keeps the report for /metrics, sends alerts, and takes a
//! snapshot when the latest is older than `[health] snapshot_every`.
//!
//! Alerts: `[alerts.NAME]` names checks and a minimum level. A check that
//! reaches the level notifies once, again every `repeat` while it stays (or
//! at once if its level changes), and a recovery notice goes out when it
//! clears (level `recovery`, sent to the notifiers that took the level it
//! recovers from). Which alerts fire is kept in `alert_state`; the daemon
//! whose upsert (or delete) changes a row is the one that notifies, so
//! several daemons never send the same notice twice.

use crate::unnamed::Unnamed;
use std::sync::Arc;

use tokio_postgres::Client;

use super::Shared;
use crate::config::AlertConfig;
use crate::config::file::AlertLevel;
use crate::health::{self, Level, Report};
use crate::notify::{self, Event};
use crate::store;

pub async fn watch(shared: Arc<Shared>) {
    while shared.stop.requested().is_none() {
        match shared.connect().await {
            Ok(mut client) => {
                if let Err(err) = once(&shared, &mut client).await {
                    tracing::warn!("health watch: {err}");
                }
            }
            Err(err) => tracing::debug!("health watch: {err}"),
        }
        shared.stop.sleep(shared.config.health.check_every).await;
    }
}

async fn once(shared: &Shared, client: &mut Client) -> Result<(), String> {
    let config = &shared.config;
    let report = health::run(client, config, &[], false).await;
    // Alerts and snapshots are written to the state schema; a standby is
    // read-only, so there the watch only keeps the report for /metrics.
    let standby = crate::db::in_recovery(client)
        .await
        .map_err(|e| crate::db::describe(&e))?;
    for alert in config.alerts.iter().filter(|_| !standby) {
        evaluate(shared, client, alert, &report)
            .await
            .map_err(|e| crate::db::describe(&e))?;
    }
    let sizes = client
        .rows(
            "SELECT format('%I.%I', n.nspname, c.relname), (c.relpages::float8 * current_setting('block_size')::float8)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 2 DESC",
            &[],
        )
        .await
        .map_err(|e| crate::db::describe(&e))?;
    let sizes: Vec<(String, f64)> = sizes.iter().map(|r| (r.get(0), r.get(1))).collect();
    *shared.health.lock().expect("health lock") = Some(Watched {
        report,
        sizes,
        at: chrono::Utc::now(),
    });
    if standby {
        return Ok(());
    }
    let due = crate::db::read_only(
        client,
        store::snapshots::snapshot_due(
            client,
            &config.state_schema,
            config.health.snapshot_every.as_secs_f64(),
        ),
    )
    .await
    .map_err(|e| crate::db::describe(&e))?;
    if due {
        let checks = shared
            .health
            .lock()
            .expect("health lock")
            .as_ref()
            .map(|w| w.report.checks.clone())
            .unwrap_or_default();
        let snapshot = health::snapshot::take(client, config, &checks)
            .await
            .map_err(|e| crate::db::describe(&e))?;
        tracing::info!(
            snapshot = snapshot.id,
            relations = snapshot.relations,
            "snapshot taken"
        );
    }
    Ok(())
}

/// The latest health report, for /metrics.
pub struct Watched {
    pub report: Report,
    /// Tables by size (from pg_class), largest first.
    pub sizes: Vec<(String, f64)>,
    pub at: chrono::DateTime<chrono::Utc>,
}

async fn evaluate(
    shared: &Shared,
    client: &Client,
    alert: &AlertConfig,
    report: &Report,
) -> Result<(), tokio_postgres::Error> {
    let schema = &shared.config.state_schema;
    let minimum = match alert.level {
        AlertLevel::Warning => Level::Warning,
        AlertLevel::Critical => Level::Critical,
    };
    for check in report
        .checks
        .iter()
        .filter(|_| alert.watches_checks)
        .filter(|c| alert.checks.is_empty() || alert.checks.contains(&c.name))
    {
        if check.status == Level::Unknown {
            continue; // cannot tell: neither fire nor clear
        }
        if check.status >= minimum {
            let sent = store::raise_alert(
                client,
                schema,
                &alert.name,
                &check.name,
                check.status.as_str(),
                alert.repeat.as_secs_f64(),
            )
            .await?;
            if let Some(first) = sent {
                let findings: Vec<String> = check
                    .findings
                    .iter()
                    .filter(|f| f.status >= minimum)
                    .take(10)
                    .map(|f| format!("{}: {} ({})", f.object, f.value, f.advice))
                    .collect();
                let level = if check.status == Level::Critical {
                    notify::FAILURE
                } else {
                    notify::WARNING
                };
                let event = Event {
                    level,
                    title: format!(
                        "pgmaint health: {} is {}{}",
                        check.name,
                        check.status.as_str(),
                        if first { "" } else { " (still)" }
                    ),
                    text: format!("{}\n{}", check.summary, findings.join("\n")),
                    details: serde_json::json!({ "alert": alert.name, "check": check, "kind": if first { "alert" } else { "repeat" } }),
                }
                .about(&shared.origin);
                notify::send(
                    &shared.config.notifiers,
                    &notify::by_own_flags(&shared.config.notifiers, &alert.notify, level),
                    &event,
                    Some((client, &shared.config.state_schema)),
                )
                .await;
            }
        } else {
            let cleared = store::clear_alert(client, schema, &alert.name, &check.name).await?;
            if let Some(was) = cleared {
                // Whoever heard the alert hears that it cleared.
                let alerted_at = notify::alerted_at(&was);
                let event = Event {
                    level: notify::RECOVERY,
                    title: format!("pgmaint health: {} recovered (was {was})", check.name),
                    text: check.summary.clone(),
                    details: serde_json::json!({ "alert": alert.name, "check": check, "kind": "recovery", "was": was }),
                }
                .about(&shared.origin);
                notify::send(
                    &shared.config.notifiers,
                    &notify::by_own_flags(&shared.config.notifiers, &alert.notify, alerted_at),
                    &event,
                    Some((client, &shared.config.state_schema)),
                )
                .await;
            }
        }
    }
    Ok(())
}

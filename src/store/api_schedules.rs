//! `api_schedules` (the schedules created through the API) and `audit`
//! (each change the API made): their SQL, and the NOTIFY that tells every
//! daemon a schedule changed (sent in the change's transaction, so it is
//! delivered at commit).

use crate::unnamed::Unnamed;
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::sql::quote_ident;

/// The channel a change to the API's schedules is notified on; the payload
/// is the state schema.
pub const SCHEDULES_CHANNEL: &str = "pgmaint_schedules";

/// One row of `api_schedules`, as stored (the daemon turns it into a
/// schedule and back).
pub(crate) struct StoredSchedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub tasks: Vec<String>,
    pub enabled: bool,
    pub allow_critical: bool,
    /// `skip` or `run_once`.
    pub misfire: String,
    pub misfire_grace_seconds: f64,
    pub max_runtime_seconds: Option<f64>,
    pub notify: Vec<String>,
}

/// Every API schedule by name, with since when it reads as it does
/// (`updated_at`: its creation or last change).
pub(crate) async fn load_api_schedules(
    client: &Client,
    schema: &str,
) -> Result<Vec<(StoredSchedule, DateTime<Utc>)>, tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        Ok(client
            .rows(
                &format!(
                    "SELECT name, cron, timezone, tasks, enabled, allow_critical, misfire, misfire_grace_seconds, max_runtime_seconds, notify, updated_at
                       FROM {q}.api_schedules ORDER BY name"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                (
                    StoredSchedule {
                        name: r.get(0),
                        cron: r.get(1),
                        timezone: r.get(2),
                        tasks: r.get(3),
                        enabled: r.get(4),
                        allow_critical: r.get(5),
                        misfire: r.get(6),
                        misfire_grace_seconds: r.get(7),
                        max_runtime_seconds: r.get(8),
                        notify: r.get(9),
                    },
                    r.get(10),
                )
            })
            .collect())
    })
    .await
}

/// What the API's schedules are now, in one short value: any change
/// (created, changed, deleted; committed in any order) changes it.
pub(crate) async fn api_schedules_digest(
    client: &Client,
    schema: &str,
) -> Result<String, tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        Ok(client
            .row(
                &format!(
                    "SELECT coalesce(md5(string_agg(name || ' ' || updated_at::text, ',' ORDER BY name)), '') FROM {q}.api_schedules"
                ),
                &[],
            )
            .await?
            .get(0))
    })
    .await
}

/// Tells every daemon, when `tx` commits, that the schedules changed.
async fn announce(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.exec("SELECT pg_notify($1, $2)", &[&SCHEDULES_CHANNEL, &schema])
        .await?;
    Ok(())
}

/// Creates or replaces a schedule; `create` refuses one that exists. The
/// change is audited and announced in its own transaction.
pub(crate) async fn save_api_schedule(
    client: &mut Client,
    schema: &str,
    s: &StoredSchedule,
    create: bool,
    who: &str,
) -> Result<bool, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let misfire = s.misfire.as_str();
    let conflict = if create {
        "DO NOTHING"
    } else {
        "DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, tasks = excluded.tasks, enabled = excluded.enabled,
                      allow_critical = excluded.allow_critical, misfire = excluded.misfire,
                      misfire_grace_seconds = excluded.misfire_grace_seconds, max_runtime_seconds = excluded.max_runtime_seconds,
                      notify = excluded.notify, updated_at = now()"
    };
    let tx = crate::db::begin(client).await?;
    let changed = tx
        .exec(
            &format!(
                "INSERT INTO {q}.api_schedules (name, cron, timezone, tasks, enabled, allow_critical, misfire, misfire_grace_seconds, max_runtime_seconds, notify)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) {conflict}"
            ),
            &[&s.name, &s.cron, &s.timezone, &s.tasks, &s.enabled, &s.allow_critical, &misfire,
              &s.misfire_grace_seconds, &s.max_runtime_seconds, &s.notify],
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

/// Deletes a schedule; false when there was none of that name.
pub(crate) async fn delete_api_schedule(
    client: &mut Client,
    schema: &str,
    name: &str,
    who: &str,
) -> Result<bool, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let tx = crate::db::begin(client).await?;
    let deleted = tx
        .exec(
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

/// One line of the audit trail: who changed what through the API.
pub(crate) async fn audit(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    who: &str,
    action: &str,
    object: &str,
    details: serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!(
                "INSERT INTO {q}.audit (who, action, object, details) VALUES ($1, $2, $3, $4)"
            ),
            &[&who, &action, &object, &details],
        )
        .await?;
    Ok(())
}

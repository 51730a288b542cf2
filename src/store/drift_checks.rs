//! `drift_checks`: what the `schema-drift` health check last found, so it
//! replays the migrations on a scratch cluster at most once per
//! `[health] drift_every`, whichever process (the CLI, a daemon) asks.

use serde::{Deserialize, Serialize};
use tokio_postgres::{Error, GenericClient};

use crate::sql::quote_ident;
use crate::unnamed::Unnamed;

/// One object that differs, as the check reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DriftFinding {
    pub object: String,
    pub value: String,
    pub advice: String,
}

/// The last check: its findings, or why it could not tell.
#[derive(Debug, Clone)]
pub(crate) struct DriftCheck {
    pub age_secs: f64,
    pub findings: Vec<DriftFinding>,
    pub error: Option<String>,
}

/// The newest recorded check, if any.
pub(crate) async fn latest(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<DriftCheck>, Error> {
    let q = quote_ident(schema);
    let row = client
        .row_opt(
            &format!(
                "SELECT extract(epoch FROM now() - checked_at)::float8, findings::text, error
                   FROM {q}.drift_checks ORDER BY checked_at DESC, id DESC LIMIT 1"
            ),
            &[],
        )
        .await?;
    Ok(row.map(|r| DriftCheck {
        age_secs: r.get(0),
        findings: serde_json::from_str(r.get::<_, &str>(1)).unwrap_or_default(),
        error: r.get(2),
    }))
}

/// Records a check and keeps the last 30.
pub(crate) async fn record(
    client: &impl GenericClient,
    schema: &str,
    findings: &[DriftFinding],
    error: Option<&str>,
) -> Result<(), Error> {
    let q = quote_ident(schema);
    let findings = serde_json::to_string(findings).unwrap_or_else(|_| "[]".into());
    client
        .exec(
            &format!("INSERT INTO {q}.drift_checks (findings, error) VALUES ($1::text::jsonb, $2)"),
            &[&findings, &error],
        )
        .await?;
    client
        .exec(
            &format!(
                "DELETE FROM {q}.drift_checks WHERE id NOT IN (SELECT id FROM {q}.drift_checks ORDER BY id DESC LIMIT 30)"
            ),
            &[],
        )
        .await?;
    Ok(())
}

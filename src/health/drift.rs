//! The `schema-drift` check: the live schema against what its migrations
//! make (`migrate::drift`, a replay on a scratch cluster). The replay takes
//! seconds, so it runs at most once per `[health] drift_every` and what it
//! found is kept in the state store (`store::drift_checks`) for the checks
//! in between, whichever process runs them.

use super::{Check, CheckContext, CheckName, Finding, Level, Outcome};
use crate::config::Config;
use crate::migrate::catalog::{Diff, Kind, Object};
use crate::migrate::engine::Migrator;
use crate::store::drift_checks::{self, DriftCheck, DriftFinding};
use tokio_postgres::Client;

pub(crate) struct SchemaDrift;

/// What the check reports from: the last replay's findings, or nothing
/// when no migrations are configured.
pub(crate) enum Prepared {
    NotConfigured(&'static str),
    Checked(DriftCheck),
}

/// The last replay when it is younger than `drift_every`, else a new one
/// (recorded when the state schema is there).
pub(crate) async fn prepare(client: &Client, config: &Config) -> Prepared {
    if !config.migrations.configured {
        return Prepared::NotConfigured("not run: the config has no [migrations]");
    }
    if config.migrations.command.is_some() {
        return Prepared::NotConfigured(
            "not run: format = \"command\" migrations are code pgmaint cannot replay",
        );
    }
    let schema = &config.state_schema;
    let last = crate::db::read_only(client, drift_checks::latest(client, schema)).await;
    if let Ok(Some(last)) = &last
        && last.age_secs < config.health.drift_every.as_secs_f64()
    {
        return Prepared::Checked(last.clone());
    }
    let (findings, error) = match replay(client, config).await {
        Ok(findings) => (findings, None),
        Err(error) => (Vec::new(), Some(error)),
    };
    if last.is_ok() {
        // The state schema is there: keep what was found for the checks
        // until the next replay is due. Failing to, the check still reports.
        let _ = crate::db::committed(
            client,
            drift_checks::record(client, schema, &findings, error.as_deref()),
        )
        .await;
    }
    Prepared::Checked(DriftCheck {
        age_secs: 0.0,
        findings,
        error,
    })
}

async fn replay(client: &Client, config: &Config) -> Result<Vec<DriftFinding>, String> {
    let migrator = Migrator::open(client, &config.migrations, &config.state_schema)
        .await
        .map_err(|e| e.to_string())?;
    let drift = crate::migrate::drift::find(client, &migrator, &config.made_by_tasks())
        .await
        .map_err(|e| e.to_string())?;
    Ok(findings_of(&drift.diff))
}

/// One finding per object, an object of a table that is itself added or
/// missing left to its table's.
fn findings_of(diff: &Diff) -> Vec<DriftFinding> {
    let side = |objects: &[Object], value: &str, advice: &dyn Fn(&Object) -> String| {
        let tables: Vec<&str> = objects
            .iter()
            .filter(|o| o.kind == Kind::Table)
            .map(|o| o.name.as_str())
            .collect();
        objects
            .iter()
            .filter(|o| !o.table.as_deref().is_some_and(|t| tables.contains(&t)))
            .map(|o| DriftFinding {
                object: format!("{} {}", o.kind.as_str(), o.name),
                value: value.to_string(),
                advice: advice(o),
            })
            .collect::<Vec<_>>()
    };
    let mut out = side(&diff.added, "not made by any migration", &|o| {
        format!(
            "made by hand? add it to a migration ({}), or drop it",
            o.definition
        )
    });
    out.extend(side(&diff.dropped, "missing", &|o| {
        format!(
            "the migrations make it ({}): was it dropped by hand?",
            o.definition
        )
    }));
    out.extend(diff.changed.iter().map(|c| DriftFinding {
        object: format!("{} {}", c.kind.as_str(), c.name),
        value: "differs".into(),
        advice: format!(
            "the migrations make {}; the live one is {}",
            c.before, c.after
        ),
    }));
    out
}

impl Check for SchemaDrift {
    fn name(&self) -> CheckName {
        CheckName::SchemaDrift
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let checked = match ctx.drift {
            None => return Ok(Outcome::Findings(Vec::new(), Some("not run".into()))),
            Some(Prepared::NotConfigured(why)) => {
                return Ok(Outcome::Findings(Vec::new(), Some((*why).into())));
            }
            Some(Prepared::Checked(checked)) => checked,
        };
        if let Some(error) = &checked.error {
            return Ok(Outcome::Unknown(error.clone()));
        }
        let when = if checked.age_secs < 1.0 {
            "replayed now".to_string()
        } else {
            format!(
                "as replayed {} ago; again after [health] drift_every ({})",
                super::seconds(checked.age_secs),
                super::seconds(ctx.config.health.drift_every.as_secs_f64())
            )
        };
        let summary = match checked.findings.len() {
            0 => format!("the live schema is what the migrations make ({when})"),
            n => format!("{n} object(s) differ from what the migrations make ({when})"),
        };
        let findings = checked
            .findings
            .iter()
            .map(|f| Finding {
                object: f.object.clone(),
                value: f.value.clone(),
                threshold: "none".into(),
                advice: f.advice.clone(),
                status: Level::Warning,
                measure: None,
            })
            .collect();
        Ok(Outcome::Findings(findings, Some(summary)))
    }
}

//! `POST /api/v1/migrations/up` when `[migrations] format = "command"`:
//! the application's own migrator run by the daemon as `pgmaint migrate
//! up` runs it (pgmaint's migration lock, the blocker check, its trace on
//! a scratch copy and the backup of what it drops, `PGOPTIONS`, the
//! audited run), answered 202 with the run's id once it is recorded; a
//! dry run answers what would run and what the trace saw.

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::api::{Answer, Api, ApiError};
use super::api_migrations::refused;
use crate::migrate::apply::Direction;
use crate::migrate::command_runs::{self, Job};
use crate::migrate::command_trace;
use crate::migrate::runs::Audit;
use crate::store::Trigger;

/// The command format's `up`, `dry_run` or not (`to`, `confirm` and
/// `allow_out_of_order` do not apply: the command says how far it goes,
/// and an up needs no confirmation).
pub(super) async fn up(shared: &Api, dry_run: bool, to: Option<&str>) -> Answer {
    if to.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "\"to\" selects files, and with format = \"command\" the migrator's own command says how far it goes; nothing was changed".to_string(),
        ));
    }
    let settings = &shared.config.migrations;
    let schema = shared.config.state_schema.clone();
    let client = shared
        .session()
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    let target = shared.session_target();
    let invocation = command_runs::invocation(settings, Direction::Up, target).map_err(refused)?;
    if dry_run {
        let trace = command_trace::run(
            &client,
            target,
            settings,
            &schema,
            &invocation.command,
            &shared.stop,
        )
        .await
        .map_err(refused)?;
        return Ok(Json(serde_json::json!({
            "dry_run": true,
            "format": "command",
            "command": invocation.command,
            "workdir": invocation.workdir.display().to_string(),
            "pgoptions": invocation.pgoptions(),
            "trace": trace,
        }))
        .into_response());
    }
    // Answered (409) well before the request's 30 s timeout.
    command_runs::lock(
        &client,
        &schema,
        |_| {},
        Some(std::time::Duration::from_secs(10)),
    )
    .await
    .map_err(refused)?;
    let prepared = async {
        command_runs::clear_blockers(&client, settings, &schema, Direction::Up).await?;
        command_trace::run_and_back_up(
            &client,
            target,
            settings,
            &schema,
            &invocation.command,
            Direction::Up,
            &shared.stop,
        )
        .await
    }
    .await;
    let (trace, backups) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            let _ = command_runs::unlock(&client, &schema).await;
            return Err(refused(err));
        }
    };
    let (tell, run_id) = tokio::sync::oneshot::channel();
    let background = shared.clone();
    tokio::spawn(async move {
        let shared = background;
        let settings = &shared.config.migrations;
        let mut recorder = match crate::connect::connect(shared.session_target()).await {
            Ok(recorder) => recorder,
            Err(err) => {
                tracing::warn!(
                    "migrate up from the API could not connect to record its run: {err}"
                );
                let _ = command_runs::unlock(&client, &schema).await;
                return;
            }
        };
        let audit = Audit {
            recorder: &mut recorder,
            trigger: Trigger::api("POST /api/v1/migrations/up"),
            owner: shared.keeper.owner(),
            started: Some(tell),
        };
        let job = Job {
            session: &client,
            settings,
            state_schema: &schema,
            stop: &shared.stop,
            echo: false,
            trace: Some(&trace),
            backups: &backups,
        };
        let since = std::time::Instant::now();
        let result = command_runs::execute(&job, &invocation, Direction::Up, audit).await;
        let _ = command_runs::unlock(&client, &schema).await;
        match result {
            Ok((summary, failed)) => {
                if let Some(err) = failed {
                    tracing::warn!("migrate up from the API failed: {err}");
                }
                let details = summary.details();
                let notice = summary.notice(true, shared.origin.clone());
                crate::outcome::finished(
                    &shared.config,
                    &notice,
                    &recorder,
                    &summary.report(&details),
                    since,
                )
                .await;
            }
            Err(err) => tracing::warn!("migrate up from the API could not run: {err}"),
        }
    });
    super::api_migrations::started(run_id).await
}

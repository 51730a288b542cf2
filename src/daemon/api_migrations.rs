//! `GET /api/v1/migrations` and `POST /api/v1/migrations/up`, for CI
//! pipelines: the application's migrations as `pgmaint migrate status`
//! sees them, and `migrate up` run by the daemon on a session of its own.
//! What would refuse the CLI refuses here, before anything changes: a
//! ledger that disagrees with the files (409), sessions in the way (409),
//! a statement that locks out writes on a big table without `confirm:
//! true` (409). Otherwise the run is recorded, the answer is 202 with its
//! id, and it goes on in the background (`GET /api/v1/runs/{id}`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Answer, Api, ApiError, Body, ErrorBody, not_stopping};
use crate::migrate::MigrateError;
use crate::migrate::apply::Direction;
use crate::migrate::engine::Migrator;
use crate::migrate::runs::{self, Audit, Selection};
use crate::store::Trigger;

/// The migrations and their state.
#[derive(Serialize, ToSchema)]
#[schema(as = Migrations)]
pub(super) struct MigrationsBody {
    /// `sqlx`, `dbmate`, `golang-migrate`, `flyway`, `drizzle`,
    /// `pgmaint` or `command`.
    format: String,
    /// The migrations' folder (`command`: the migrator's working directory).
    dir: String,
    ledger: String,
    /// Each: `version`, `written`, `name`, `status` (`applied`, `pending`,
    /// `failed`, `modified`, `missing`, `dirty`), `out_of_order`,
    /// `has_down`, `transactional`, `irreversible`, and for a failed one
    /// the statement a rerun starts at and the error.
    #[schema(value_type = Vec<Object>)]
    migrations: Vec<serde_json::Value>,
}

/// `POST /api/v1/migrations/up`'s body; every field may be left out.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(as = MigrationsUp)]
pub(super) struct UpBody {
    /// Answer what would run, change nothing.
    dry_run: bool,
    /// Run statements that lock out writes on tables over confirm_above
    /// (the CLI's --yes).
    confirm: bool,
    /// Up to and including this version.
    to: Option<String>,
    allow_out_of_order: bool,
}

/// What a dry run would apply.
#[derive(Serialize, ToSchema)]
#[schema(as = MigrationsPlan)]
pub(super) struct PlanBody {
    dry_run: bool,
    /// Each: `version`, `name`, `transaction`, `statements`, `lint` (the
    /// findings of `pgmaint migrate lint --json`).
    #[schema(value_type = Vec<Object>)]
    migrations: Vec<serde_json::Value>,
    /// What needs `confirm: true`: error-level lint findings, and
    /// statements that lock out writes on a table over `confirm_above`.
    needs_confirmation: Vec<String>,
}

/// A migration error as the API answers it: 503 when the database went
/// away, else 409 with the reason.
pub(super) fn refused(err: MigrateError) -> ApiError {
    match err {
        MigrateError::Database(text) => ApiError::unreachable(text),
        other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
    }
}

async fn open(shared: &Api) -> Result<(tokio_postgres::Client, Migrator), ApiError> {
    let client = shared
        .session()
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    let migrator = Migrator::open(
        &client,
        &shared.config.migrations,
        &shared.config.state_schema,
    )
    .await
    .map_err(refused)?;
    Ok((client, migrator))
}

#[utoipa::path(get, path = "/api/v1/migrations", tag = "api",
    summary = "the application's migrations: applied, pending, failed, modified, missing, out of order",
    responses((status = 200, description = "migrations", body = MigrationsBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "the migrations cannot be read (their folder, their format, two ledgers)", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
pub(super) async fn migrations(State(shared): State<Api>) -> Answer {
    if shared.config.migrations.command.is_some() {
        return command_migrations(&shared).await;
    }
    let (client, migrator) = open(&shared).await?;
    let entries = migrator.entries(&client).await.map_err(refused)?;
    Ok(Json(MigrationsBody {
        format: migrator.format.as_str().into(),
        dir: migrator.settings.dir.display().to_string(),
        ledger: migrator.ledger.name(),
        migrations: entries
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect(),
    })
    .into_response())
}

/// `format = "command"`: the migrator's ledger as `migrate status --json`
/// lists it (its `status` command is not run: the API answers from the
/// database alone).
async fn command_migrations(shared: &Api) -> Answer {
    let client = shared
        .session()
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    let settings = &shared.config.migrations;
    let report = crate::migrate::command_runs::status(&client, settings, None)
        .await
        .map_err(refused)?;
    Ok(Json(MigrationsBody {
        format: "command".into(),
        dir: settings
            .command
            .as_ref()
            .map(|c| c.workdir.display().to_string())
            .unwrap_or_default(),
        ledger: report
            .ledger
            .map(|l| l.name(crate::migrate::command_runs::ledger_table(settings)))
            .unwrap_or_default(),
        migrations: report
            .view
            .entries
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect(),
    })
    .into_response())
}

#[utoipa::path(post, path = "/api/v1/migrations/up", tag = "api",
    summary = "apply the pending migrations (as `pgmaint migrate up`)",
    description = "refused before anything changes while the ledger and the files disagree, while sessions hold the tables in open transactions, or when a statement would lock out writes on a table over confirm_above and `confirm` is not true",
    request_body(content = UpBody, description = "may be empty", content_type = "application/json"),
    responses((status = 202, description = "started: the run goes on", body = super::api::RunStarted),
        (status = 200, description = "a dry run: what would be applied", body = PlanBody),
        (status = 400, description = "a body that is not JSON, or has an unknown field", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "refused; nothing was changed (the reason)", body = ErrorBody),
        (status = 413, description = "a body over 16 KiB", body = ErrorBody),
        (status = 503, description = "the database is unreachable, or the daemon is stopping", body = ErrorBody)))]
pub(super) async fn migrations_up(State(shared): State<Api>, Body(body): Body<UpBody>) -> Answer {
    not_stopping(&shared)?;
    if shared.config.migrations.command.is_some() {
        return super::api_migrations_command::up(&shared, body.dry_run, body.to.as_deref()).await;
    }
    let (client, mut migrator) = open(&shared).await?;
    // The API answers within its 30 s request timeout: waits for
    // sessions in the way (and for another migrator's lock) end earlier,
    // with the 409 that says why.
    migrator.settings.blockers_wait = migrator
        .settings
        .blockers_wait
        .min(std::time::Duration::from_secs(10));
    let to = match &body.to {
        None => None,
        Some(written) => Some(
            migrator
                .migrations
                .iter()
                .find(|m| &m.written == written)
                .map(|m| m.version)
                .or_else(|| written.parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("\"{written}\" is not a migration version"))
                })?,
        ),
    };
    let selection = Selection {
        to,
        steps: None,
        allow_out_of_order: body.allow_out_of_order,
        // Answered (409) well before the request's 30 s timeout.
        lock_wait: Some(std::time::Duration::from_secs(10)),
    };
    let (chosen, _) = runs::choose(
        &client,
        &migrator,
        Direction::Up,
        &selection,
        !body.dry_run,
        |_| {},
    )
    .await
    .map_err(refused)?;
    let findings = runs::lint(&client, &migrator, &chosen, Direction::Up)
        .await
        .map_err(refused)?;
    // Traced on a scratch copy when the parse names a table over
    // confirm_above (seconds, well within the request's 30 s).
    let big = if body.confirm && !body.dry_run {
        Vec::new()
    } else {
        crate::migrate::preview::confirmation(
            &client,
            Some(shared.session_target()),
            &migrator,
            &chosen,
            Direction::Up,
            &findings,
        )
        .await
        .map_err(refused)?
    };
    if body.dry_run {
        let migrations = chosen
            .iter()
            .map(|m| {
                let statements = crate::migrate::apply::statements_of(&m.up).unwrap_or_default();
                serde_json::json!({
                    "version": m.written,
                    "name": m.name,
                    "transaction": m.up.transactional,
                    "statements": statements.iter().map(|s| serde_json::json!({"line": s.line, "sql": s.text})).collect::<Vec<_>>(),
                    "lint": findings.iter().filter(|f| f.version == m.written).collect::<Vec<_>>(),
                })
            })
            .collect();
        return Ok(Json(PlanBody {
            dry_run: true,
            migrations,
            needs_confirmation: big,
        })
        .into_response());
    }
    let refuse = |client: tokio_postgres::Client, migrator: Migrator, err: ApiError| async move {
        let _ = migrator.unlock(&client).await;
        Err::<axum::response::Response, ApiError>(err)
    };
    if !big.is_empty() && !body.confirm {
        let text = format!(
            "{}\nthese run only with \"confirm\": true; nothing was changed",
            big.join("\n")
        );
        return refuse(client, migrator, ApiError::new(StatusCode::CONFLICT, text)).await;
    }
    if chosen.is_empty() {
        let _ = migrator.unlock(&client).await;
        return Ok(Json(PlanBody {
            dry_run: false,
            migrations: Vec::new(),
            needs_confirmation: Vec::new(),
        })
        .into_response());
    }
    if let Err(err) = runs::clear_blockers(&client, &migrator, &chosen, Direction::Up).await {
        return refuse(client, migrator, refused(err)).await;
    }
    let versions: Vec<i64> = chosen.iter().map(|m| m.version).collect();
    let (tell, run_id) = tokio::sync::oneshot::channel();
    let background = shared.clone();
    tokio::spawn(async move {
        let shared = background;
        let mut recorder = match crate::connect::connect(shared.session_target()).await {
            Ok(recorder) => recorder,
            Err(err) => {
                tracing::warn!(
                    "migrate up from the API could not connect to record its run: {err}"
                );
                let _ = migrator.unlock(&client).await;
                return;
            }
        };
        let chosen: Vec<&crate::migrate::Migration> = versions
            .iter()
            .filter_map(|v| migrator.migration(*v))
            .collect();
        let audit = Audit {
            recorder: &mut recorder,
            trigger: Trigger::api("POST /api/v1/migrations/up"),
            owner: shared.keeper.owner(),
            started: Some(tell),
        };
        let since = std::time::Instant::now();
        let result = runs::execute(
            &client,
            &migrator,
            &chosen,
            Direction::Up,
            audit,
            &shared.stop,
            |_, _| {},
        )
        .await;
        let _ = migrator.unlock(&client).await;
        match result {
            Ok((summary, failed)) => {
                if let Some(err) = failed {
                    tracing::warn!("migrate up from the API failed: {err}");
                }
                let notice = summary.notice(true, shared.origin.clone());
                crate::outcome::finished(
                    &shared.config,
                    &notice,
                    &recorder,
                    &summary.report(),
                    since,
                )
                .await;
            }
            Err(err) => tracing::warn!("migrate up from the API could not run: {err}"),
        }
    });
    started(run_id).await
}

/// 202 with the run's id once the background run has recorded it.
pub(super) async fn started(run_id: tokio::sync::oneshot::Receiver<i64>) -> Answer {
    match run_id.await {
        Ok(run_id) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"run_id": run_id, "dry_run": false})),
        )
            .into_response()),
        Err(_) => Err(ApiError::unreachable(
            "the migration run could not be recorded",
        )),
    }
}

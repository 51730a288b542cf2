//! The daemon's HTTP API (axum): `/healthz` and `/metrics` without auth,
//! and under `/api/v1` (bearer token, compared in constant time) status,
//! tasks, runs, schedules, and starting a task or a schedule now. Every run
//! started here is recorded in the audit trail with trigger `api`. Request
//! bodies are limited to 16 KiB.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::api_schedules::{self, ScheduleBody};
use super::{Shared, StartError};
use crate::config::ScheduleConfig;
use crate::runner::{Confirmation, Refusal};
use crate::schedule::Schedule;
use crate::state;

type Api = Arc<Shared>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unavailable(err: impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the database is not reachable: {err}"),
    )
}

pub async fn serve(listener: tokio::net::TcpListener, shared: Api) {
    let v1 = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/status", get(status))
        .route("/tasks", get(tasks))
        .route("/tasks/{name}/run", post(run_task))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(one_run))
        .route("/schedules", get(schedules).post(create_schedule))
        .route(
            "/schedules/{name}",
            get(one_schedule)
                .put(update_schedule)
                .delete(delete_schedule),
        )
        .route("/schedules/{name}/run", post(run_schedule))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(shared);
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!("the HTTP server stopped: {err}");
    }
}

/// The API's OpenAPI 3 description; a test checks that it names every
/// route. Like every /api/v1 route it needs the token.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Who made an API change, for the audit table.
const API_CALLER: &str = "api (bearer token)";

/// Equal without taking longer for a closer guess: both sides are hashed
/// (so their lengths do not matter) and every byte is compared.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn authorize(State(shared): State<Api>, request: Request, next: Next) -> Response {
    let Some(expected) = shared.config.api.token.as_deref().filter(|t| !t.is_empty()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "the API is closed: set [api] token (e.g. token = \"${PGMAINT_API_TOKEN}\") to open it",
        );
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same_secret(token, expected) => next.run(request).await,
        _ => error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        ),
    }
}

async fn metrics(State(shared): State<Api>) -> Response {
    let client = match shared.connect().await {
        Ok(c) => c,
        Err(err) => {
            return (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                format!("pgmaint_up 1\npgmaint_database_up 0\n# {err}\n"),
            )
                .into_response();
        }
    };
    match super::metrics::render(&client, &shared).await {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            format!("{text}pgmaint_database_up 1\n"),
        )
            .into_response(),
        Err(err) => unavailable(crate::db::describe(&err)),
    }
}

async fn status(State(shared): State<Api>) -> Response {
    let database = match shared.connect().await {
        Ok(client) => match state::ensure_ready(&client, &shared.config.state_schema).await {
            Ok(()) => json!({"reachable": true}),
            Err(err) => json!({"reachable": true, "error": err.to_string()}),
        },
        Err(err) => json!({"reachable": false, "error": err.to_string()}),
    };
    Json(json!({
        "daemon": shared.id,
        "version": env!("CARGO_PKG_VERSION"),
        "stopping": shared.stop.requested().is_some(),
        "database": database,
        "tasks": shared.config.tasks.len(),
        "schedules": shared.config.schedules.len(),
    }))
    .into_response()
}

async fn tasks(State(shared): State<Api>) -> Response {
    let list: Vec<_> = shared
        .config
        .tasks
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "kind": t.spec.kind().as_str(),
                "target": t.spec.target(),
                "severity": t.severity.as_str(),
                "backup": t.backup,
                "enabled": t.enabled,
                "schedules": shared.config.schedules.iter().filter(|s| s.tasks.contains(&t.name)).map(|s| s.name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "tasks": list })).into_response()
}

#[derive(Deserialize)]
struct RunsQuery {
    task: Option<String>,
    status: Option<String>,
    trigger: Option<String>,
    limit: Option<i64>,
}

async fn runs(State(shared): State<Api>, Query(query): Query<RunsQuery>) -> Response {
    let client = match shared.connect().await {
        Ok(c) => c,
        Err(err) => return unavailable(err),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    match state::history(
        &client,
        &shared.config.state_schema,
        query.task.as_deref(),
        limit * 4,
    )
    .await
    {
        Ok(runs) => {
            let runs: Vec<_> = runs
                .into_iter()
                .filter(|r| query.status.as_ref().is_none_or(|s| &r.status == s))
                .filter(|r| query.trigger.as_ref().is_none_or(|t| &r.trigger == t))
                .take(limit as usize)
                .collect();
            Json(json!({ "runs": runs })).into_response()
        }
        Err(err) => unavailable(err),
    }
}

async fn one_run(State(shared): State<Api>, Path(id): Path<i64>) -> Response {
    let client = match shared.connect().await {
        Ok(c) => c,
        Err(err) => return unavailable(err),
    };
    match state::run_by_id(&client, &shared.config.state_schema, id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("there is no run {id}")),
        Err(err) => unavailable(err),
    }
}

fn schedule_json(shared: &Shared, config: &ScheduleConfig, from_config: bool) -> serde_json::Value {
    let excluded: Vec<_> = config
        .tasks
        .iter()
        .filter_map(|name| shared.config.task(name))
        .filter_map(|task| {
            crate::runner::left_out_by_schedule(task, config)
                .map(|reason| json!({ "task": task.name, "reason": reason }))
        })
        .collect();
    let next: Vec<String> = Schedule::new(config)
        .map(|s| {
            s.upcoming(chrono::Utc::now(), 5)
                .iter()
                .map(|t| t.to_rfc3339())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": config.name,
        "cron": config.cron,
        "timezone": config.timezone,
        "tasks": config.tasks,
        "excluded": excluded,
        "enabled": config.enabled,
        "allow_critical": config.allow_critical,
        "misfire": config.misfire,
        "misfire_grace_seconds": config.misfire_grace.as_secs_f64(),
        "max_runtime_seconds": config.max_runtime.map(|d| d.as_secs_f64()),
        "notify": {
            "on_failure": config.notify.on_failure,
            "on_warning": config.notify.on_warning,
            "on_success": config.notify.on_success,
        },
        "source": if from_config { "config" } else { "api" },
        "read_only": from_config,
        "next": next,
    })
}

/// Every schedule, config ones first; needs the database for API ones.
async fn every_schedule(shared: &Shared) -> Result<Vec<(ScheduleConfig, bool)>, Response> {
    let client = shared.connect().await.map_err(unavailable)?;
    let all = super::all_schedules(shared, &client)
        .await
        .map_err(|e| unavailable(crate::db::describe(&e)))?;
    Ok(all
        .into_iter()
        .map(|s| {
            let from_config = shared.config.schedule(&s.name).is_some();
            (s, from_config)
        })
        .collect())
}

async fn schedules(State(shared): State<Api>) -> Response {
    match every_schedule(&shared).await {
        Ok(all) => Json(json!({ "schedules": all.iter().map(|(s, c)| schedule_json(&shared, s, *c)).collect::<Vec<_>>() })).into_response(),
        Err(response) => response,
    }
}

async fn one_schedule(State(shared): State<Api>, Path(name): Path<String>) -> Response {
    match every_schedule(&shared).await {
        Ok(all) => match all.iter().find(|(s, _)| s.name == name) {
            Some((s, c)) => Json(schedule_json(&shared, s, *c)).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("there is no schedule {name}"),
            ),
        },
        Err(response) => response,
    }
}

async fn create_schedule(
    State(shared): State<Api>,
    body: Result<Json<ScheduleBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let Some(name) = body.name.clone() else {
        return error(StatusCode::BAD_REQUEST, "the schedule needs a `name`");
    };
    save_schedule(&shared, &name, body, true).await
}

async fn update_schedule(
    State(shared): State<Api>,
    Path(name): Path<String>,
    body: Result<Json<ScheduleBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if body.name.as_ref().is_some_and(|n| n != &name) {
        return error(
            StatusCode::BAD_REQUEST,
            "the body's `name` differs from the path's; a schedule cannot be renamed",
        );
    }
    save_schedule(&shared, &name, body, false).await
}

async fn save_schedule(shared: &Shared, name: &str, body: ScheduleBody, create: bool) -> Response {
    if shared.config.schedule(name).is_some() {
        return error(
            StatusCode::FORBIDDEN,
            format!("schedule {name} comes from the config file and is read-only through the API"),
        );
    }
    let schedule = match api_schedules::validate(&shared.config, name, body) {
        Ok(s) => s,
        Err(problems) => return error(StatusCode::BAD_REQUEST, problems),
    };
    let mut client = match shared.connect().await {
        Ok(c) => c,
        Err(err) => return unavailable(err),
    };
    if !create {
        let exists = api_schedules::load(&client, &shared.config.state_schema)
            .await
            .map(|all| all.iter().any(|s| s.name == name));
        match exists {
            Ok(true) => {}
            Ok(false) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("there is no schedule {name}"),
                );
            }
            Err(err) => return unavailable(crate::db::describe(&err)),
        }
    }
    match api_schedules::save(
        &mut client,
        &shared.config.state_schema,
        &schedule,
        create,
        API_CALLER,
    )
    .await
    {
        Ok(true) => {
            shared.schedules_changed.notify_one();
            (
                if create {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                Json(schedule_json(shared, &schedule, false)),
            )
                .into_response()
        }
        Ok(false) => error(
            StatusCode::CONFLICT,
            format!("schedule {name} exists; PUT /api/v1/schedules/{name} replaces it"),
        ),
        Err(err) => unavailable(crate::db::describe(&err)),
    }
}

async fn delete_schedule(State(shared): State<Api>, Path(name): Path<String>) -> Response {
    if shared.config.schedule(&name).is_some() {
        return error(
            StatusCode::FORBIDDEN,
            format!("schedule {name} comes from the config file and is read-only through the API"),
        );
    }
    let mut client = match shared.connect().await {
        Ok(c) => c,
        Err(err) => return unavailable(err),
    };
    match api_schedules::delete(&mut client, &shared.config.state_schema, &name, API_CALLER).await {
        Ok(true) => {
            shared.schedules_changed.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("there is no schedule {name}"),
        ),
        Err(err) => unavailable(crate::db::describe(&err)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    dry_run: bool,
    /// Confirms a critical task, as `--yes` does on the command line.
    #[serde(default)]
    yes: bool,
}

/// The answer to a run the runner refused: 409, saying why and, for a
/// critical task, how to confirm it here.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unconfirmed(names) => error(
            StatusCode::CONFLICT,
            format!(
                "task {} is critical: send {{\"yes\": true}} to confirm (or {{\"dry_run\": true}} to see its plan)",
                names.join(", ")
            ),
        ),
        other => error(StatusCode::CONFLICT, other.to_string()),
    }
}

fn started(result: Result<i64, StartError>, dry_run: bool) -> Response {
    match result {
        Ok(run_id) => (
            StatusCode::ACCEPTED,
            Json(json!({ "run_id": run_id, "dry_run": dry_run })),
        )
            .into_response(),
        Err(StartError::Refused(refusal)) => refused(refusal),
        Err(StartError::Failed(err)) => unavailable(err),
    }
}

async fn run_task(
    State(shared): State<Api>,
    Path(name): Path<String>,
    body: Option<Json<RunBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    if shared.config.task(&name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("there is no task {name}"));
    }
    if shared.stop.requested().is_some() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    let confirmation = if body.yes {
        Confirmation::Yes
    } else {
        Confirmation::None
    };
    let command = format!("POST /api/v1/tasks/{name}/run dry_run={}", body.dry_run);
    let result = super::start_now(
        shared.clone(),
        vec![name],
        body.dry_run,
        confirmation,
        command,
    )
    .await;
    started(result, body.dry_run)
}

async fn run_schedule(
    State(shared): State<Api>,
    Path(name): Path<String>,
    body: Option<Json<RunBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let Some(schedule) = shared.config.schedule(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("there is no schedule {name}"),
        );
    };
    let tasks = schedule
        .tasks
        .iter()
        .filter_map(|t| shared.config.task(t))
        .filter(|t| t.enabled)
        .map(|t| t.name.clone())
        .collect();
    // Run now as the schedule would run: its critical tasks only where it
    // allows them (the runner skips the others and says so).
    let confirmation = Confirmation::Schedule {
        allow_critical: schedule.allow_critical,
    };
    let command = format!("POST /api/v1/schedules/{name}/run dry_run={}", body.dry_run);
    let result = super::start_now(shared.clone(), tasks, body.dry_run, confirmation, command).await;
    started(result, body.dry_run)
}

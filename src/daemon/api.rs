//! The daemon's HTTP API (axum): `/healthz` and `/metrics` without auth,
//! and under `/api/v1` (bearer token, compared in constant time) status,
//! tasks, runs, schedules, and starting a task or a schedule now. Every run
//! started here is recorded in the audit trail with trigger `api`. Request
//! bodies are limited to 16 KiB. Every error, whatever refused the request
//! (a handler, a body that does not parse, an unknown route), is the same
//! JSON `{"error": "..."}`, and none names the database's host, name or
//! user: the daemon's log has the details.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, ToSchema};

use super::api_schedules::{self, ScheduleBody};
use super::{RunNow, Shared, StartError};
use crate::config::ScheduleConfig;
use crate::runner::{Confirmation, Refusal, Started};
use crate::schedule::Schedule;
use crate::status::Status;
use crate::store;

pub(super) type Api = Arc<Shared>;

/// The largest request body.
const BODY_LIMIT: usize = 16 * 1024;

/// What every refused request gets: a status and a message a client can
/// show, as `{"error": message}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// The database cannot be used. The cause names the server (host,
    /// port, database, user), so it goes to the log and not to the client.
    pub(super) fn unreachable(cause: impl std::fmt::Display) -> ApiError {
        tracing::warn!("an API request could not use the database: {cause}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, UNREACHABLE)
    }
}

/// What the API and /metrics say when the database cannot be used.
const UNREACHABLE: &str = "the database is unreachable (the daemon's log says why)";

/// The body of every error the API answers, whatever refused the request.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(super) struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

pub(super) type Answer = Result<Response, ApiError>;

/// A JSON request body, read whatever its Content-Type says (`curl -d`
/// sends form-urlencoded) and refused as the API's JSON error. An empty
/// body is `{}`.
pub(super) struct Body<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(r.body_text())
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).into_response()
}

/// Every route the daemon serves, in one place: `/healthz` and `/metrics`
/// open, `/api/v1/*` behind the token; anything else is the API's JSON 404
/// or 405, a body over `BODY_LIMIT` its JSON 413, and a request that takes
/// longer than `REQUEST_TIMEOUT` its JSON 408.
pub fn router(shared: Api) -> Router {
    router_with(shared, REQUEST_TIMEOUT)
}

/// `router` with each request limited to `timeout` (a test's is short).
pub(super) fn router_with(shared: Api, timeout: std::time::Duration) -> Router {
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
        .route("/migrations", get(super::api_migrations::migrations))
        .route("/migrations/up", post(super::api_migrations::migrations_up))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(limit_body))
        // Outermost last: the token is marked sensitive before the trace
        // layer sees the request, so it never reaches a log line.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        // Outside the timeout: its bare 408 becomes the API's JSON error.
        .layer(middleware::map_response(
            move |response: Response| async move { timed_out(response, timeout) },
        ))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .with_state(shared)
}

/// The longest a request may take. Runs answer once recorded and go on in
/// the background, so only a stuck database read comes near it.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The timeout layer's 408 (no handler answers 408 itself) as the API's
/// JSON error; every other answer as it is.
fn timed_out(response: Response, timeout: std::time::Duration) -> Response {
    if response.status() != StatusCode::REQUEST_TIMEOUT {
        return response;
    }
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request took longer than {} s and was stopped; a run started earlier goes on (GET /api/v1/runs)",
            timeout.as_secs_f64()
        ),
    )
    .into_response()
}

/// Serves `app` on `listener` until `shutdown` completes; both come from
/// the caller, so a test can bind `127.0.0.1:0` and stop it when it likes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(err) = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    {
        tracing::error!("the HTTP server stopped: {err}");
    }
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "there is no route {}; GET /api/v1/openapi.json lists them",
        request.uri().path()
    ))
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {}; GET /api/v1/openapi.json lists what each route takes",
            request.uri().path(),
            request.method()
        ),
    )
}

/// The API's OpenAPI 3 description, generated from the handlers' types
/// (`super::openapi`); a test checks that it names every route and that
/// the main answers have its shapes. Like every /api/v1 route it needs the
/// token.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "api",
    summary = "this document",
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json"),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody)))]
async fn openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(super::openapi::document);
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str(),
    )
        .into_response()
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub(super) struct Liveness {
    /// `ok`, or `degraded` while the daemon's database work keeps failing.
    status: &'static str,
    /// Why it is degraded (the error and since when); absent when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Liveness {
    fn of(shared: &Shared) -> Liveness {
        let reason = shared.trouble();
        Liveness {
            status: if reason.is_some() { "degraded" } else { "ok" },
            reason,
        }
    }
}

#[utoipa::path(get, path = "/healthz", tag = "daemon", security(()),
    summary = "liveness: 200 while the process works, degraded while its database work fails",
    responses((status = 200, description = "the process works; `status` says whether its database work does", body = Liveness)))]
async fn healthz(State(shared): State<Api>) -> Json<Liveness> {
    Json(Liveness::of(&shared))
}

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[utoipa::path(get, path = "/readyz", tag = "daemon", security(()),
    summary = "readiness: 503 while the database cannot be used",
    responses((status = 200, description = "the database and the state schema can be used", body = Liveness),
        (status = 503, description = "the database cannot be used; `reason` says why", body = Liveness)))]
async fn readyz(State(shared): State<Api>) -> Response {
    let mut liveness = Liveness::of(&shared);
    if liveness.reason.is_none() {
        let checked = tokio::time::timeout(READY_TIMEOUT, async {
            let client = shared.pooled().await.map_err(|_| UNREACHABLE.to_string())?;
            store::ensure_ready(&client, &shared.config.state_schema)
                .await
                .map_err(|err| not_ready(&err).to_string())
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the database did not answer within {}s",
                READY_TIMEOUT.as_secs()
            ))
        });
        if let Err(reason) = checked {
            liveness = Liveness {
                status: "degraded",
                reason: Some(reason),
            };
        }
    }
    let status = if liveness.reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(liveness)).into_response()
}

/// Failed authentications from one address that close the API to it for
/// the rest of the minute.
pub(super) const AUTH_FAILURES_PER_MINUTE: u32 = 10;
const AUTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// One address's failed authentications in the current minute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthWindow {
    started: std::time::Instant,
    failures: u32,
}

fn client_address(request: &Request) -> std::net::IpAddr {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// Whether `address` used up its failures for this minute.
fn locked_out(shared: &Shared, address: std::net::IpAddr) -> bool {
    let windows = shared.auth_failures.lock().expect("not poisoned");
    windows.get(&address).is_some_and(|w| {
        w.started.elapsed() < AUTH_WINDOW && w.failures >= AUTH_FAILURES_PER_MINUTE
    })
}

/// Counts a failed authentication; the one that reaches the limit is
/// logged, once per address and minute.
fn failed_authentication(shared: &Shared, address: std::net::IpAddr) {
    let mut windows = shared.auth_failures.lock().expect("not poisoned");
    if windows.len() > 4096 {
        windows.retain(|_, w| w.started.elapsed() < AUTH_WINDOW);
    }
    let window = windows.entry(address).or_insert(AuthWindow {
        started: std::time::Instant::now(),
        failures: 0,
    });
    if window.started.elapsed() >= AUTH_WINDOW {
        *window = AuthWindow {
            started: std::time::Instant::now(),
            failures: 0,
        };
    }
    window.failures += 1;
    if window.failures == AUTH_FAILURES_PER_MINUTE {
        tracing::warn!(
            address = %address,
            "{AUTH_FAILURES_PER_MINUTE} failed API authentications within a minute from {address}: answering it 429 for the rest of the minute"
        );
    }
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
    let address = client_address(&request);
    if locked_out(&shared, address) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {AUTH_FAILURES_PER_MINUTE} failed authentications within a minute from this address; try again in a minute"
            ),
        );
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same_secret(token, expected) => next.run(request).await,
        _ => {
            failed_authentication(&shared, address);
            error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            )
        }
    }
}

/// A body whose Content-Length is over `BODY_LIMIT` is refused before any
/// route reads it, whatever the route (one that reads its body refuses a
/// longer one without a Content-Length the same way).
async fn limit_body(request: Request, next: Next) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|l| l > BODY_LIMIT as u64) {
        drain(request).await;
        return too_large().into_response();
    }
    next.run(request).await
}

/// Most of a refused body read and dropped before the answer.
const DRAIN_LIMIT: u64 = 8 << 20;

/// Reads and drops what the client is still sending of a refused body (up
/// to `DRAIN_LIMIT`, for at most 2 s), as a lingering close does: closing
/// with it unread resets the connection, and the client would see the reset
/// instead of the 413.
async fn drain(request: Request) {
    use futures_util::StreamExt;
    let mut stream = request.into_body().into_data_stream();
    let mut read = 0u64;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {} KiB", BODY_LIMIT / 1024),
    )
}

/// Prometheus text. Without the database only this process's own figures,
/// and a comment that the database is unreachable: /metrics needs no token,
/// so it names nothing of the server (the log has the cause).
#[utoipa::path(get, path = "/metrics", tag = "daemon", security(()),
    summary = "Prometheus text format",
    description = "without the database, only pgmaint_up 1, pgmaint_database_up 0 and a comment that the database is unreachable (nothing of its host, name or user)",
    responses((status = 200, description = "metrics", content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(shared): State<Api>) -> Response {
    let text = match shared.pooled().await {
        Ok(client) => {
            match crate::db::read_only(&client, super::metrics::render(&*client, &shared)).await {
                Ok(text) => format!("{text}pgmaint_database_up 1\n"),
                Err(err) => metrics_unreachable(crate::db::describe(&err)),
            }
        }
        Err(err) => metrics_unreachable(err),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn metrics_unreachable(cause: impl std::fmt::Display) -> String {
    tracing::debug!("/metrics could not use the database: {cause}");
    "pgmaint_up 1\npgmaint_database_up 0\n# the database is unreachable\n".into()
}

/// `GET /api/v1/status`.
#[derive(Serialize, ToSchema)]
#[schema(as = Status)]
pub(super) struct StatusBody {
    /// This daemon (user, host and pid).
    daemon: String,
    version: &'static str,
    /// A stop was asked for: no new fires or runs.
    stopping: bool,
    database: DatabaseStatus,
    /// How many tasks and schedules the config has.
    tasks: usize,
    schedules: usize,
}

/// Whether the daemon can use its database; the error, when there is one,
/// is a stable message (the daemon's log has the cause).
#[derive(Serialize, ToSchema)]
pub(super) struct DatabaseStatus {
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[utoipa::path(get, path = "/api/v1/status", tag = "api",
    summary = "the daemon and its database",
    responses((status = 200, description = "status", body = StatusBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody)))]
async fn status(State(shared): State<Api>) -> Json<StatusBody> {
    let database = match shared.pooled().await {
        Ok(client) => match store::ensure_ready(&client, &shared.config.state_schema).await {
            Ok(()) => DatabaseStatus {
                reachable: true,
                error: None,
            },
            Err(err) => {
                // The cause may quote the server; the log has it, the
                // client a stable message.
                tracing::warn!("/api/v1/status: the state schema is not ready: {err}");
                DatabaseStatus {
                    reachable: true,
                    error: Some(not_ready(&err)),
                }
            }
        },
        Err(err) => {
            tracing::warn!("an API request could not use the database: {err}");
            DatabaseStatus {
                reachable: false,
                error: Some(UNREACHABLE),
            }
        }
    };
    Json(StatusBody {
        daemon: shared.id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        stopping: shared.stop.requested().is_some(),
        database,
        tasks: shared.config.tasks.len(),
        schedules: shared.config.schedules.len(),
    })
}

/// What the status says of a state schema that cannot be used, in words
/// that do not change with the server or the driver.
fn not_ready(err: &store::StateError) -> &'static str {
    match err {
        store::StateError::Missing(_) => {
            "pgmaint's state schema does not exist in this database: run `pgmaint init`"
        }
        store::StateError::Outdated { .. } => {
            "pgmaint's state schema is older than this pgmaint: run `pgmaint init` to upgrade it"
        }
        store::StateError::TooNew { .. } => {
            "pgmaint's state schema is newer than this pgmaint: upgrade pgmaint"
        }
        store::StateError::Database(_) => {
            "pgmaint's state schema could not be read (the daemon's log says why)"
        }
    }
}

/// `GET /api/v1/tasks`.
#[derive(Serialize, ToSchema)]
pub(super) struct Tasks {
    tasks: Vec<TaskBody>,
}

/// A configured task.
#[derive(Serialize, ToSchema)]
#[schema(as = Task)]
pub(super) struct TaskBody {
    name: String,
    /// `purge`, `archive`, `vacuum`...
    kind: &'static str,
    /// What it works on (a table, views, a directory), as `tasks` prints it.
    target: String,
    /// `low`, `medium`, `high` or `critical`.
    severity: &'static str,
    backup: bool,
    enabled: bool,
    /// The config schedules that list it.
    schedules: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "api",
    summary = "the configured tasks",
    responses((status = 200, description = "tasks", body = Tasks),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody)))]
async fn tasks(State(shared): State<Api>) -> Json<Tasks> {
    let tasks = shared
        .config
        .tasks
        .iter()
        .map(|t| TaskBody {
            name: t.name.clone(),
            kind: t.spec.kind(),
            target: t.spec.target(),
            severity: t.severity.as_str(),
            backup: t.backup,
            enabled: t.enabled,
            schedules: shared
                .config
                .schedules
                .iter()
                .filter(|s| s.tasks.contains(&t.name))
                .map(|s| s.name.clone())
                .collect(),
        })
        .collect();
    Json(Tasks { tasks })
}

/// Which runs `GET /api/v1/runs` lists: the filters apply before `limit`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Runs of this task.
    task: Option<String>,
    /// `running`, `succeeded`, `failed`, `cancelled`, `interrupted` or `skipped`.
    status: Option<String>,
    /// Runs a schedule fired, or the API ran now.
    schedule: Option<String>,
    /// `cli`, `schedule` or `api`.
    trigger: Option<String>,
    /// At most this many, newest first (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// `GET /api/v1/runs`.
#[derive(Serialize, ToSchema)]
pub(super) struct Runs {
    runs: Vec<store::RunRecord>,
}

const STATUSES: &[Status] = &[
    Status::Running,
    Status::Succeeded,
    Status::Failed,
    Status::Cancelled,
    Status::Interrupted,
    Status::Skipped,
];
const TRIGGERS: &[&str] = &["cli", "schedule", "api"];

#[utoipa::path(get, path = "/api/v1/runs", tag = "api",
    summary = "runs, newest first",
    description = "filters apply before limit: the newest `limit` runs that match",
    params(RunsQuery),
    responses((status = 200, description = "runs", body = Runs),
        (status = 400, description = "an unknown status or trigger, or a limit that is not a number", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
async fn runs(
    State(shared): State<Api>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query?;
    if let Some(status) = &query.status
        && !STATUSES.iter().any(|s| s.as_str() == status)
    {
        let known: Vec<_> = STATUSES.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "there is no status `{status}`; statuses are {}",
            known.join(", ")
        )));
    }
    if let Some(trigger) = &query.trigger
        && !TRIGGERS.contains(&trigger.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "there is no trigger `{trigger}`; triggers are {}",
            TRIGGERS.join(", ")
        )));
    }
    let client = shared.pooled().await.map_err(ApiError::unreachable)?;
    // Filtered in the query, before its LIMIT: a filter never shortens the
    // answer while older matching runs exist. Dry runs are runs here too.
    let filter = store::HistoryFilter {
        task: query.task,
        status: query.status,
        schedule: query.schedule,
        trigger: query.trigger,
        dry_runs: true,
        limit: query.limit.unwrap_or(50).clamp(1, 1000),
    };
    let runs = store::history_filtered(&client, &shared.config.state_schema, &filter)
        .await
        .map_err(ApiError::unreachable)?;
    Ok(Json(Runs { runs }).into_response())
}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "api",
    summary = "one run",
    params(("id" = i64, Path, description = "the run's id")),
    responses((status = 200, description = "run", body = store::RunRecord),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
async fn one_run(State(shared): State<Api>, id: Result<Path<i64>, PathRejection>) -> Answer {
    let Path(id) = id?;
    let client = shared.pooled().await.map_err(ApiError::unreachable)?;
    match store::run_by_id(&client, &shared.config.state_schema, id)
        .await
        .map_err(ApiError::unreachable)?
    {
        Some(run) => Ok(Json(run).into_response()),
        None => Err(ApiError::not_found(format!("there is no run {id}"))),
    }
}

/// A schedule, from the config or the API, as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Schedule)]
pub(super) struct ScheduleView {
    name: String,
    cron: String,
    timezone: String,
    tasks: Vec<String>,
    /// Tasks listed that the schedule's fires leave out (critical, without
    /// allow_critical), with the reason.
    excluded: Vec<Excluded>,
    enabled: bool,
    allow_critical: bool,
    /// `skip` or `run_once`.
    #[schema(value_type = String, example = "run_once")]
    misfire: crate::config::file::Misfire,
    misfire_grace_seconds: f64,
    max_runtime_seconds: Option<f64>,
    notify: ScheduleNotify,
    /// `config` or `api`.
    source: &'static str,
    /// A config schedule cannot be changed through the API.
    read_only: bool,
    /// The next 5 fires (UTC, RFC 3339) that will happen; none while
    /// disabled.
    next: Vec<String>,
}

/// A task a schedule lists but leaves out, and why.
#[derive(Serialize, ToSchema)]
pub(super) struct Excluded {
    task: String,
    reason: String,
}

/// Which notifiers hear of each outcome of the schedule's runs.
#[derive(Serialize, ToSchema)]
pub(super) struct ScheduleNotify {
    on_failure: Vec<String>,
    on_warning: Vec<String>,
    on_success: Vec<String>,
}

/// `GET /api/v1/schedules`.
#[derive(Serialize, ToSchema)]
pub(super) struct Schedules {
    schedules: Vec<ScheduleView>,
}

fn schedule_json(shared: &Shared, config: &ScheduleConfig, from_config: bool) -> ScheduleView {
    let excluded = config
        .tasks
        .iter()
        .filter_map(|name| shared.config.task(name))
        .filter_map(|task| {
            crate::runner::left_out_by_schedule(task, config).map(|reason| Excluded {
                task: task.name.clone(),
                reason,
            })
        })
        .collect();
    // The fires that will happen: none while it is disabled.
    let next: Vec<String> = Schedule::new(config)
        .ok()
        .filter(|_| config.enabled)
        .map(|s| {
            s.upcoming(chrono::Utc::now(), 5)
                .iter()
                .map(|t| t.to_rfc3339())
                .collect()
        })
        .unwrap_or_default();
    ScheduleView {
        name: config.name.clone(),
        cron: config.cron.clone(),
        timezone: config.timezone.clone(),
        tasks: config.tasks.clone(),
        excluded,
        enabled: config.enabled,
        allow_critical: config.allow_critical,
        misfire: config.misfire,
        misfire_grace_seconds: config.misfire_grace.as_secs_f64(),
        max_runtime_seconds: config.max_runtime.map(|d| d.as_secs_f64()),
        notify: ScheduleNotify {
            on_failure: config.notify.on_failure.clone(),
            on_warning: config.notify.on_warning.clone(),
            on_success: config.notify.on_success.clone(),
        },
        source: if from_config { "config" } else { "api" },
        read_only: from_config,
        next,
    }
}

/// Every schedule, config ones first; needs the database for API ones.
async fn every_schedule(shared: &Shared) -> Result<Vec<(ScheduleConfig, bool)>, ApiError> {
    let client = shared.pooled().await.map_err(ApiError::unreachable)?;
    let all = super::all_schedules(shared, &client)
        .await
        .map_err(|e| ApiError::unreachable(crate::db::describe(&e)))?;
    Ok(all
        .into_iter()
        .map(|s| {
            let from_config = s.since.is_none();
            (s.config, from_config)
        })
        .collect())
}

async fn find_schedule(shared: &Shared, name: &str) -> Result<(ScheduleConfig, bool), ApiError> {
    every_schedule(shared)
        .await?
        .into_iter()
        .find(|(s, _)| s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("there is no schedule {name}")))
}

#[utoipa::path(get, path = "/api/v1/schedules", tag = "api",
    summary = "every schedule, the config's first",
    responses((status = 200, description = "schedules", body = Schedules),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
async fn schedules(State(shared): State<Api>) -> Answer {
    let all = every_schedule(&shared).await?;
    let schedules = all
        .iter()
        .map(|(s, c)| schedule_json(&shared, s, *c))
        .collect();
    Ok(Json(Schedules { schedules }).into_response())
}

#[utoipa::path(get, path = "/api/v1/schedules/{name}", tag = "api",
    summary = "one schedule",
    params(("name" = String, Path, description = "the schedule's name")),
    responses((status = 200, description = "schedule", body = ScheduleView),
        (status = 404, description = "no such schedule", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
async fn one_schedule(
    State(shared): State<Api>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let Path(name) = name?;
    let (schedule, from_config) = find_schedule(&shared, &name).await?;
    Ok(Json(schedule_json(&shared, &schedule, from_config)).into_response())
}

#[utoipa::path(post, path = "/api/v1/schedules", tag = "api",
    summary = "create an API schedule",
    description = "takes effect at once on every daemon of the database",
    request_body = ScheduleBody,
    responses((status = 201, description = "created", body = ScheduleView),
        (status = 400, description = "invalid (every problem, joined), or a body that is not JSON", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "a config schedule has the name: read-only", body = ErrorBody),
        (status = 409, description = "a schedule of that name exists", body = ErrorBody),
        (status = 413, description = "a body over 16 KiB", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
async fn create_schedule(State(shared): State<Api>, Body(body): Body<ScheduleBody>) -> Answer {
    let Some(name) = body.name.clone() else {
        return Err(ApiError::bad_request("the schedule needs a `name`"));
    };
    save_schedule(&shared, &name, body, true).await
}

#[utoipa::path(put, path = "/api/v1/schedules/{name}", tag = "api",
    summary = "replace an API schedule",
    description = "takes effect at once on every daemon of the database",
    params(("name" = String, Path, description = "the schedule's name")),
    request_body = ScheduleBody,
    responses((status = 200, description = "replaced", body = ScheduleView),
        (status = 400, description = "invalid", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "read-only", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
        (status = 413, description = "a body over 16 KiB", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
async fn update_schedule(
    State(shared): State<Api>,
    name: Result<Path<String>, PathRejection>,
    Body(body): Body<ScheduleBody>,
) -> Answer {
    let Path(name) = name?;
    if body.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::bad_request(
            "the body's `name` differs from the path's; a schedule cannot be renamed",
        ));
    }
    save_schedule(&shared, &name, body, false).await
}

fn read_only(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("schedule {name} comes from the config file and is read-only through the API"),
    )
}

async fn save_schedule(shared: &Shared, name: &str, body: ScheduleBody, create: bool) -> Answer {
    if shared.config.schedule(name).is_some() {
        return Err(read_only(name));
    }
    let schedule =
        api_schedules::validate(&shared.config, name, body).map_err(ApiError::bad_request)?;
    let mut client = shared.pooled().await.map_err(ApiError::unreachable)?;
    let schema = &shared.config.state_schema;
    if !create {
        let exists = api_schedules::load(&client, schema)
            .await
            .map_err(|e| ApiError::unreachable(crate::db::describe(&e)))?
            .iter()
            .any(|s| s.config.name == name);
        if !exists {
            return Err(ApiError::not_found(format!("there is no schedule {name}")));
        }
    }
    let saved = api_schedules::save(&mut client, schema, &schedule, create, API_CALLER)
        .await
        .map_err(|e| ApiError::unreachable(crate::db::describe(&e)))?;
    if !saved {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("schedule {name} exists; PUT /api/v1/schedules/{name} replaces it"),
        ));
    }
    shared.schedules_changed.notify_one();
    let status = if create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(schedule_json(shared, &schedule, false))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/schedules/{name}", tag = "api",
    summary = "delete an API schedule",
    description = "takes effect at once on every daemon of the database",
    params(("name" = String, Path, description = "the schedule's name")),
    responses((status = 204, description = "deleted"),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "read-only", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
        (status = 503, description = "the database is unreachable", body = ErrorBody)))]
async fn delete_schedule(
    State(shared): State<Api>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let Path(name) = name?;
    if shared.config.schedule(&name).is_some() {
        return Err(read_only(&name));
    }
    let mut client = shared.pooled().await.map_err(ApiError::unreachable)?;
    let deleted =
        api_schedules::delete(&mut client, &shared.config.state_schema, &name, API_CALLER)
            .await
            .map_err(|e| ApiError::unreachable(crate::db::describe(&e)))?;
    if !deleted {
        return Err(ApiError::not_found(format!("there is no schedule {name}")));
    }
    shared.schedules_changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A run-now request: what `pgmaint run` takes on its command line. The
/// body may be empty (all defaults); it is read as JSON whatever its
/// Content-Type.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RunRequest)]
struct RunBody {
    #[serde(default)]
    dry_run: bool,
    /// Confirms a critical task, as `--yes` does on the command line.
    #[serde(default)]
    yes: bool,
    /// As `--batch-size`: every task's batch size for this run.
    #[schema(minimum = 1)]
    batch_size: Option<u64>,
    /// As `--max-runtime` (`"30s"`, `"5min"`): each task's limit; for a
    /// schedule, its own max_runtime by default.
    #[schema(value_type = Option<String>, example = "5min")]
    max_runtime: Option<crate::config::Duration>,
}

/// A run the API started: it goes on after the answer.
#[derive(Serialize, ToSchema)]
pub(super) struct RunStarted {
    run_id: i64,
    dry_run: bool,
}

impl RunBody {
    fn check(&self) -> Result<(), ApiError> {
        if self.batch_size == Some(0) {
            return Err(ApiError::bad_request("batch_size must be at least 1"));
        }
        if self.max_runtime.is_some_and(|d| d.0.is_zero()) {
            return Err(ApiError::bad_request(
                "max_runtime must be longer than 0 (leave it out for the task's own)",
            ));
        }
        Ok(())
    }

    /// How the request is written in the run's audit record.
    fn command(&self, path: &str) -> String {
        let mut command = format!("POST {path} dry_run={}", self.dry_run);
        if let Some(n) = self.batch_size {
            command.push_str(&format!(" batch_size={n}"));
        }
        if let Some(d) = self.max_runtime {
            command.push_str(&format!(" max_runtime={d}"));
        }
        command
    }
}

/// The answer to a run the runner refused: 409, saying why and, for a
/// critical task, how to confirm it here.
fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unconfirmed(names) => ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "task {} is critical: send {{\"yes\": true}} to confirm (or {{\"dry_run\": true}} to see its plan)",
                names.join(", ")
            ),
        ),
        other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
    }
}

fn started(result: Result<i64, StartError>, dry_run: bool) -> Answer {
    match result {
        Ok(run_id) => {
            Ok((StatusCode::ACCEPTED, Json(RunStarted { run_id, dry_run })).into_response())
        }
        Err(StartError::Refused(refusal)) => Err(refused(refusal)),
        Err(StartError::Failed(err)) => Err(ApiError::unreachable(err)),
    }
}

pub(super) fn not_stopping(shared: &Shared) -> Result<(), ApiError> {
    match shared.stop.requested() {
        Some(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping",
        )),
        None => Ok(()),
    }
}

#[utoipa::path(post, path = "/api/v1/tasks/{name}/run", tag = "api",
    summary = "run a task now (also for external schedulers)",
    params(("name" = String, Path, description = "the task's name")),
    request_body(content = RunBody, description = "may be empty", content_type = "application/json"),
    responses((status = 202, description = "started: the run goes on", body = RunStarted),
        (status = 400, description = "a body that is not JSON, has an unknown field or a wrong value", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "no such task", body = ErrorBody),
        (status = 409, description = "refused: a critical task not confirmed, or the server is a standby", body = ErrorBody),
        (status = 413, description = "a body over 16 KiB", body = ErrorBody),
        (status = 503, description = "the database is unreachable, or the daemon is stopping", body = ErrorBody)))]
async fn run_task(
    State(shared): State<Api>,
    name: Result<Path<String>, PathRejection>,
    Body(body): Body<RunBody>,
) -> Answer {
    let Path(name) = name?;
    body.check()?;
    if shared.config.task(&name).is_none() {
        return Err(ApiError::not_found(format!("there is no task {name}")));
    }
    not_stopping(&shared)?;
    let confirmation = if body.yes {
        Confirmation::Yes
    } else {
        Confirmation::None
    };
    let run = RunNow {
        command: body.command(&format!("/api/v1/tasks/{name}/run")),
        tasks: vec![name.clone()],
        dry_run: body.dry_run,
        confirmation,
        batch_size: body.batch_size,
        max_runtime: body.max_runtime.map(|d| d.0),
        started: Started::Task(name),
    };
    started(super::start_now(shared.clone(), run).await, body.dry_run)
}

#[utoipa::path(post, path = "/api/v1/schedules/{name}/run", tag = "api",
    summary = "run a schedule now, as its fire would",
    description = "its critical tasks only where it sets allow_critical, under its max_runtime unless the body gives one",
    params(("name" = String, Path, description = "the schedule's name")),
    request_body(content = RunBody, description = "may be empty", content_type = "application/json"),
    responses((status = 202, description = "started: the run goes on", body = RunStarted),
        (status = 400, description = "a body that is not JSON, has an unknown field or a wrong value", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
        (status = 409, description = "refused: the server is a standby", body = ErrorBody),
        (status = 413, description = "a body over 16 KiB", body = ErrorBody),
        (status = 503, description = "the database is unreachable, or the daemon is stopping", body = ErrorBody)))]
async fn run_schedule(
    State(shared): State<Api>,
    name: Result<Path<String>, PathRejection>,
    Body(body): Body<RunBody>,
) -> Answer {
    let Path(name) = name?;
    body.check()?;
    let (schedule, _) = find_schedule(&shared, &name).await?;
    not_stopping(&shared)?;
    let tasks = schedule
        .tasks
        .iter()
        .filter_map(|t| shared.config.task(t))
        .filter(|t| t.enabled)
        .map(|t| t.name.clone())
        .collect();
    // Run now as the schedule would run: its critical tasks only where it
    // allows them (the runner skips the others and says so), under its
    // max_runtime unless the request gives one.
    let run = RunNow {
        command: body.command(&format!("/api/v1/schedules/{name}/run")),
        tasks,
        dry_run: body.dry_run,
        confirmation: Confirmation::Schedule {
            allow_critical: schedule.allow_critical,
        },
        batch_size: body.batch_size,
        max_runtime: body.max_runtime.map(|d| d.0).or(schedule.max_runtime),
        started: Started::Schedule(schedule),
    };
    started(super::start_now(shared.clone(), run).await, body.dry_run)
}

#[cfg(test)]
mod tests {
    use axum::body::Body as HttpBody;
    use tower::ServiceExt;

    use serde_json::json;

    use super::*;

    /// The router over a config with a token and a database nobody
    /// listens on: none of these requests reach it.
    fn app() -> Router {
        let config = crate::config::Config::parse(
            std::path::Path::new("pgmaint.toml"),
            "[api]\ntoken = \"s3cret-an-api-token-of-32-characters\"\n",
        )
        .expect("a minimal config");
        let target = crate::connect::resolve(Some("postgres://u@127.0.0.1:1/db"), None).unwrap();
        router(Arc::new(Shared::new(config, target, "test".into())))
    }

    async fn answer(request: axum::http::Request<HttpBody>) -> (StatusCode, serde_json::Value) {
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    fn request(
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> axum::http::Request<HttpBody> {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(HttpBody::from(body)).unwrap()
    }

    #[tokio::test]
    async fn the_api_needs_its_token() {
        let (status, body) = answer(request("GET", "/api/v1/tasks", None, vec![])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].is_string(), "{body}");
        let (status, _) = answer(request("GET", "/api/v1/tasks", Some("wrong"), vec![])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn ten_failed_authentications_in_a_minute_close_the_api_to_that_address() {
        let app = app();
        let from = |ip: [u8; 4], token: Option<&str>| {
            let mut request = request("GET", "/api/v1/status", token, vec![]);
            request.extensions_mut().insert(axum::extract::ConnectInfo(
                std::net::SocketAddr::from((ip, 4000)),
            ));
            request
        };
        for _ in 0..AUTH_FAILURES_PER_MINUTE {
            let response = app
                .clone()
                .oneshot(from([10, 0, 0, 1], Some("wrong")))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        // The rest of the minute: 429, even with the right token.
        for token in [Some("wrong"), Some("s3cret-an-api-token-of-32-characters")] {
            let response = app
                .clone()
                .oneshot(from([10, 0, 0, 1], token))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        }
        // Another address is not held up.
        let response = app
            .clone()
            .oneshot(from([10, 0, 0, 2], Some("wrong")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_huge_body_is_413_on_every_route_by_its_length() {
        for (method, uri) in [
            ("POST", "/api/v1/schedules"),
            ("PUT", "/api/v1/schedules/x"),
            ("POST", "/api/v1/schedules/x/run"),
            ("POST", "/api/v1/tasks/t/run"),
            ("GET", "/healthz"),
        ] {
            let mut req = request(
                method,
                uri,
                Some("s3cret-an-api-token-of-32-characters"),
                vec![b'a'; 5 << 20],
            );
            req.headers_mut().insert(
                header::CONTENT_LENGTH,
                (5u64 << 20).to_string().parse().unwrap(),
            );
            let (status, body) = answer(req).await;
            assert_eq!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{method} {uri}: {body}"
            );
            assert!(body["error"].as_str().unwrap().contains("KiB"), "{body}");
        }
    }

    #[tokio::test]
    async fn healthz_is_200_and_degraded_with_the_reason_while_readyz_is_503() {
        let (status, body) = answer(request("GET", "/healthz", None, vec![])).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );
        // Nobody listens on the test's database.
        let (status, body) = answer(request("GET", "/readyz", None, vec![])).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["reason"].is_string(), "{body}");
        let config = crate::config::Config::parse(std::path::Path::new("pgmaint.toml"), "")
            .expect("an empty config");
        let target = crate::connect::resolve(Some("postgres://u@127.0.0.1:1/db"), None).unwrap();
        let shared = Arc::new(Shared::new(config, target, "test".into()));
        shared.set_trouble(Some(
            "a scheduling pass failed: relation does not exist".into(),
        ));
        let response = router(shared.clone())
            .oneshot(request("GET", "/healthz", None, vec![]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["status"], "degraded", "{body}");
        assert!(
            body["reason"].as_str().unwrap().contains("does not exist"),
            "{body}"
        );
        assert!(super::super::openapi::value()["paths"]["/readyz"]["get"].is_object());
    }

    #[tokio::test]
    async fn an_unknown_route_is_a_json_404() {
        let (status, body) = answer(request("GET", "/nope", None, vec![])).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_json_413() {
        let big = vec![b' '; BODY_LIMIT + 1];
        let (status, body) = answer(request(
            "POST",
            "/api/v1/schedules",
            Some("s3cret-an-api-token-of-32-characters"),
            big,
        ))
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body["error"].as_str().unwrap().contains("KiB"), "{body}");
    }

    /// A request that outlives the timeout gets the API's JSON error: here
    /// the "database" accepts the connection and never answers, so the
    /// handler waits until the (short) timeout stops it.
    #[tokio::test]
    async fn a_request_over_the_timeout_is_a_json_408() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let config = crate::config::Config::parse(
            std::path::Path::new("pgmaint.toml"),
            "[api]\ntoken = \"s3cret-an-api-token-of-32-characters\"\n",
        )
        .expect("a minimal config");
        let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable");
        let target = crate::connect::resolve(Some(&url), None).unwrap();
        let app = router_with(
            Arc::new(Shared::new(config, target, "test".into())),
            std::time::Duration::from_millis(200),
        );
        let response = app
            .oneshot(request(
                "GET",
                "/api/v1/runs",
                Some("s3cret-an-api-token-of-32-characters"),
                vec![],
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("0.2 s"), "{body}");
        held.abort();
    }

    /// Every route `router_with` serves, read from its source: the paths
    /// of its `.route("..")` calls, those before the outer router under
    /// `/api/v1`.
    fn routed_paths() -> Vec<String> {
        let source = include_str!("api.rs");
        let body = &source[source.find("pub(super) fn router_with(").unwrap()..];
        let body = &body[..body.find("\n}\n").unwrap()];
        let outer = body.rfind("Router::new()").unwrap();
        body.match_indices(".route(")
            .map(|(at, m)| {
                // rustfmt may put the path on a line of its own.
                let rest = body[at + m.len()..].trim_start().strip_prefix('"').unwrap();
                let path = &rest[..rest.find('"').unwrap()];
                if at < outer {
                    format!("/api/v1{path}")
                } else {
                    path.to_string()
                }
            })
            .collect()
    }

    /// The document lists exactly what the router serves: each path with
    /// each method it takes (a method is served when the answer is not the
    /// router's 404 or 405 fallback).
    #[tokio::test]
    async fn the_openapi_document_lists_every_route() {
        use std::collections::BTreeSet;
        let doc = super::super::openapi::value();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, operations)| {
                operations
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect();
        let paths = routed_paths();
        assert!(paths.len() >= 10, "{paths:?}");
        let mut routed = BTreeSet::new();
        for path in paths {
            let concrete = path.replace("{name}", "no_such").replace("{id}", "1");
            for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                let (status, body) = answer(request(
                    method,
                    &concrete,
                    Some("s3cret-an-api-token-of-32-characters"),
                    vec![],
                ))
                .await;
                let error = body["error"].as_str().unwrap_or_default();
                let fallback = (status == StatusCode::NOT_FOUND
                    && error.starts_with("there is no route"))
                    || (status == StatusCode::METHOD_NOT_ALLOWED
                        && error.contains("does not take"));
                if !fallback {
                    routed.insert((method.to_string(), path.clone()));
                }
            }
        }
        assert_eq!(routed, documented);
        // The open routes say so; the rest need the bearer token.
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
        assert_eq!(doc["security"], json!([{"bearer": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}

//! The daemon's HTTP API in-process (tower's `oneshot` against
//! `daemon::app`, no socket, no scheduler) over a real PostgreSQL: the
//! status never quotes the driver, requests share a few pooled connections
//! instead of one each, and the OpenAPI document lists every route and
//! describes what the main routes answer.

use std::time::Duration;

use crate::common::TestDb;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use pgmaint::config::Config;
use tower::ServiceExt;

const TOKEN: &str = "an-api-token-of-at-least-32-characters";

fn config(db: &TestDb, extra: &str) -> Config {
    let text = format!(
        "[api]\ntoken = \"{TOKEN}\"\n\n[tasks.old_logs]\nkind = \"purge\"\ntable = \"logs\"\nwhere = \"true\"\n{extra}"
    );
    let path = db.config(&text);
    Config::parse(&path, &text).expect("the test's config")
}

fn app(db: &TestDb, extra: &str) -> axum::Router {
    let target = pgmaint::connect::resolve(Some(&db.url), None).expect("the test's URL");
    pgmaint::daemon::app(config(db, extra), target, Duration::from_secs(30))
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

/// The backends of this database's sessions with pgmaint's
/// application_name, apart from the one asking.
async fn pgmaint_pids(db: &TestDb) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgmaint' AND pid <> pg_backend_pid() ORDER BY pid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn the_status_names_no_driver_error() {
    let db = TestDb::new().await;
    // A state schema whose version cannot be read: the driver's error
    // ("division by zero", with its SQLSTATE) must stay in the log.
    db.client()
        .await
        .batch_execute(
            "CREATE SCHEMA pgmaint; CREATE VIEW pgmaint.schema_version AS SELECT (1 / 0)::int AS version",
        )
        .await
        .unwrap();
    let app = app(&db, "");
    let (status, body) = get(&app, "/api/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["database"]["reachable"], true, "{body}");
    let error = body["database"]["error"].as_str().expect("an error");
    assert_eq!(
        error,
        "pgmaint's state schema could not be read (the daemon's log says why)"
    );
    let text = body.to_string();
    for secret in ["division", "22012", &db.name, "127.0.0.1", "SQLSTATE"] {
        assert!(!text.contains(secret), "{secret} in {body}");
    }

    // Missing: the same words whatever the server, and still how to fix it.
    db.client()
        .await
        .batch_execute("DROP SCHEMA pgmaint CASCADE")
        .await
        .unwrap();
    let (_, body) = get(&app, "/api/v1/status").await;
    assert_eq!(
        body["database"]["error"],
        "pgmaint's state schema does not exist in this database: run `pgmaint init`",
        "{body}"
    );
}

#[tokio::test]
async fn requests_share_a_few_pooled_connections() {
    let db = TestDb::new().await;
    let app = app(&db, "");
    db.pgmaint(&["init"]).await.assert_code(0);
    // `init`'s session ends with its process; nothing of the app's yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pgmaint_pids(&db).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "a session lingers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = get(&app, "/api/v1/runs").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = pgmaint_pids(&db).await;
    assert_eq!(first.len(), 1, "one pooled connection: {first:?}");
    for _ in 0..20 {
        let (status, body) = get(&app, "/api/v1/runs").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = get(&app, "/api/v1/status").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["database"], serde_json::json!({"reachable": true}));
    }
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("pgmaint_database_up 1"),
        "{text:?}"
    );
    // One after the other, 42 requests used the one session, still open in
    // the pool for the next.
    assert_eq!(pgmaint_pids(&db).await, first);

    // Concurrent requests open at most the pool's size.
    let requests = (0..24).map(|_| {
        let app = app.clone();
        async move { get(&app, "/api/v1/schedules").await.0 }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK);
    }
    let open = pgmaint_pids(&db).await;
    assert!((1..=4).contains(&open.len()), "{open:?}");
    assert!(open.contains(&first[0]), "{open:?}");
}

#[tokio::test]
async fn a_pool_connection_that_died_is_replaced() {
    let db = TestDb::new().await;
    let app = app(&db, "");
    db.pgmaint(&["init"]).await.assert_code(0);
    let (status, _) = get(&app, "/api/v1/runs").await;
    assert_eq!(status, StatusCode::OK);
    db.client()
        .await
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'pgmaint' AND pid <> pg_backend_pid()",
            db.name
        ))
        .await
        .unwrap();
    // The closed connection is dropped when it comes back to the pool or
    // is next taken; the request gets a new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&app, "/api/v1/runs").await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

/// A schema with its `$ref` followed, and an optional one (`oneOf` with
/// null) as its other variant.
fn resolve<'a>(doc: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
    if let Some(reference) = schema["$ref"].as_str() {
        return resolve(doc, doc.pointer(reference.trim_start_matches('#')).unwrap());
    }
    if let Some(variants) = schema["oneOf"].as_array() {
        let other: Vec<_> = variants.iter().filter(|v| v["type"] != "null").collect();
        if other.len() == 1 {
            return resolve(doc, other[0]);
        }
    }
    schema
}

/// Checks `value` against `schema`: each object's keys are the schema's
/// properties (none unknown, every required one there), each array's items
/// and each scalar's type as the schema says.
fn conforms(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) {
    use serde_json::Value;
    let schema = resolve(doc, schema);
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert!(
        types.contains(&kind) || (kind == "integer" && types.contains(&"number")),
        "{at}: {value} is {kind}, the schema says {types:?}"
    );
    match value {
        Value::Object(map) => {
            // A free-form object (a task's details) has no properties.
            let Some(properties) = schema["properties"].as_object() else {
                return;
            };
            for key in map.keys() {
                assert!(
                    properties.contains_key(key),
                    "{at}: `{key}` is answered but not in the schema"
                );
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().unwrap();
                assert!(
                    map.contains_key(required),
                    "{at}: the schema requires `{required}`, the answer has none"
                );
            }
            for (key, item) in map {
                conforms(doc, &properties[key], item, &format!("{at}.{key}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// The document's schema for an answer.
fn answer_schema<'a>(
    doc: &'a serde_json::Value,
    path: &str,
    method: &str,
    status: StatusCode,
) -> &'a serde_json::Value {
    let schema = &doc["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]
        ["schema"];
    assert!(!schema.is_null(), "{method} {path} {status}: no schema");
    schema
}

#[tokio::test]
async fn the_openapi_document_describes_the_answers() {
    let db = TestDb::new().await;
    let app = app(
        &db,
        "\n[schedules.nightly]\ncron = \"0 3 * * *\"\ntasks = [\"old_logs\"]\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    db.client()
        .await
        .batch_execute("CREATE TABLE logs (id bigint PRIMARY KEY); INSERT INTO logs SELECT generate_series(1, 10)")
        .await
        .unwrap();
    let (status, doc) = get(&app, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");

    let mut checked = Vec::new();
    let mut check = |template: &str, method: &str, status: StatusCode, body: &serde_json::Value| {
        conforms(
            &doc,
            answer_schema(&doc, template, method, status),
            body,
            &format!("{method} {template}"),
        );
        checked.push(format!("{method} {template} {status}"));
    };

    let (status, body) = call(&app, "GET", "/api/v1/status", "").await;
    check("/api/v1/status", "get", status, &body);
    let (status, body) = call(&app, "GET", "/api/v1/tasks", "").await;
    check("/api/v1/tasks", "get", status, &body);
    assert_eq!(body["tasks"].as_array().unwrap().len(), 1, "{body}");

    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/schedules",
        r#"{"name": "hourly", "cron": "0 * * * *", "tasks": ["old_logs"], "max_runtime": "5min"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    check("/api/v1/schedules", "post", status, &body);
    let (status, body) = call(&app, "GET", "/api/v1/schedules", "").await;
    assert_eq!(body["schedules"].as_array().unwrap().len(), 2, "{body}");
    check("/api/v1/schedules", "get", status, &body);
    let (status, body) = call(&app, "GET", "/api/v1/schedules/nightly", "").await;
    check("/api/v1/schedules/{name}", "get", status, &body);
    let (status, body) = call(
        &app,
        "PUT",
        "/api/v1/schedules/hourly",
        r#"{"cron": "30 * * * *", "tasks": ["old_logs"]}"#,
    )
    .await;
    check("/api/v1/schedules/{name}", "put", status, &body);

    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/tasks/old_logs/run",
        r#"{"dry_run": true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    check("/api/v1/tasks/{name}/run", "post", status, &body);
    let run_id = body["run_id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let (status, run) = call(&app, "GET", &format!("/api/v1/runs/{run_id}"), "").await;
        if status == StatusCode::OK && run["status"] != "running" {
            check("/api/v1/runs/{id}", "get", status, &run);
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run}");
    let (status, body) = call(&app, "GET", "/api/v1/runs", "").await;
    assert!(!body["runs"].as_array().unwrap().is_empty(), "{body}");
    check("/api/v1/runs", "get", status, &body);

    // Errors have the one error schema.
    let (status, body) = call(&app, "GET", "/api/v1/runs/999999", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    check("/api/v1/runs/{id}", "get", status, &body);
    let (status, body) = call(&app, "POST", "/api/v1/schedules", r#"{"cron": "x"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    check("/api/v1/schedules", "post", status, &body);
    assert_eq!(checked.len(), 11, "{checked:?}");
}

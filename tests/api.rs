//! The daemon's HTTP API in-process (tower's `oneshot` against
//! `daemon::app`, no socket, no scheduler) over a real PostgreSQL: the
//! status never quotes the driver, requests share a few pooled connections
//! instead of one each, and the OpenAPI document lists every route and
//! describes what the main routes answer.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestDb;
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

//! The `sessions` kind against a real PostgreSQL: sessions idle in a
//! transaction or running past a limit are terminated or cancelled, those
//! `except` names, younger ones, other databases' and idle ones are not;
//! the dry run lists exactly what the run then does, and changes nothing.

use std::time::Duration;

use crate::common::TestDb;
use tokio_postgres::{Client, NoTls};

/// A session of the test database with its own application name.
async fn session(url: &str, app: &str) -> (Client, i32) {
    let (client, connection) =
        tokio_postgres::connect(&format!("{url}&application_name={app}"), NoTls)
            .await
            .expect("connect a test session");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    (client, pid)
}

/// Opens a transaction and leaves the session idle in it.
async fn idle_in_transaction(client: &Client) {
    client
        .batch_execute("BEGIN; SELECT count(*) FROM accounts")
        .await
        .unwrap();
}

/// Ends the session's transaction and opens a new one: young again.
async fn restart(client: &Client) {
    client.batch_execute("ROLLBACK").await.unwrap();
    idle_in_transaction(client).await;
}

fn pids(value: &serde_json::Value) -> Vec<i64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list of sessions: {value}"))
        .iter()
        .map(|s| s["pid"].as_i64().or_else(|| s.as_i64()).unwrap())
        .collect()
}

#[tokio::test]
async fn sessions_idle_in_transaction_past_the_limit_are_terminated_except_the_spared() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE accounts (id int); INSERT INTO accounts VALUES (1)")
        .await
        .unwrap();
    db.config(
        "[tasks.sweep]\nkind = \"sessions\"\nidle_in_transaction = \"4s\"\naction = \"terminate\"\nexcept = [\"app=etl*\", \"user=nobody_here\"]\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);

    let (stale, stale_pid) = session(&db.url, "worker").await;
    let (etl, etl_pid) = session(&db.url, "etl_loader").await;
    let (idle, idle_pid) = session(&db.url, "idle_one").await;
    let other_db_url = db.url.replace(&format!("/{}?", db.name), "/postgres?");
    let (elsewhere, elsewhere_pid) = session(&other_db_url, "worker").await;
    idle_in_transaction(&stale).await;
    idle_in_transaction(&etl).await;
    elsewhere.batch_execute("BEGIN; SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Younger than the limit when the task looks.
    let (young, young_pid) = session(&db.url, "young").await;
    idle_in_transaction(&young).await;

    let plan = db.pgmaint(&["plan", "sweep", "--json"]).await;
    plan.assert_code(0);
    let json = plan.json();
    let task = &json["tasks"][0];
    assert_eq!(task["kind"], "sessions", "{json}");
    let details = &task["details"];
    assert_eq!(pids(&details["sessions"]), [stale_pid as i64], "{json}");
    assert_eq!(pids(&details["spared"]), [etl_pid as i64], "{json}");
    let listed = &details["sessions"][0];
    assert_eq!(listed["application"], "worker");
    assert_eq!(listed["state"], "idle in transaction");
    assert!(
        listed["query"]
            .as_str()
            .unwrap()
            .contains("SELECT count(*) FROM accounts"),
        "{listed}"
    );
    assert!(listed["for_ms"].as_u64().unwrap() >= 4000, "{listed}");
    for pid in [idle_pid, young_pid, elsewhere_pid] {
        assert!(
            !plan.stdout.contains(&format!("\"pid\": {pid},")),
            "pid {pid} is not to be touched: {json}"
        );
    }
    // The dry run changed nothing (asked from outside, so the session's
    // own state stays as it was).
    let state: Option<String> = db
        .client()
        .await
        .query_one(
            "SELECT state FROM pg_stat_activity WHERE pid = $1",
            &[&stale_pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state.as_deref(), Some("idle in transaction"));

    // The text plan lists the session it would end. The young session
    // starts its transaction again before each command, so it stays young
    // however slow the machine is.
    restart(&young).await;
    let text = db.pgmaint(&["plan", "sweep"]).await;
    text.assert_code(0);
    assert!(
        text.stdout
            .contains("Would terminate 1 session(s); 1 spared by `except`")
            && text.stdout.contains(&format!("pid {stale_pid} "))
            && text.stdout.contains(&format!("spared: pid {etl_pid} ")),
        "{}",
        text.stdout
    );

    restart(&young).await;
    let run = db.pgmaint(&["run", "sweep", "--json"]).await;
    run.assert_code(0);
    let json = run.json();
    let task = &json["tasks"][0];
    assert_eq!(task["status"], "succeeded", "{json}");
    assert_eq!(task["batches"], 1, "{json}");
    assert_eq!(
        pids(&task["details"]["signalled"]),
        [stale_pid as i64],
        "{json}"
    );

    let gone = stale.query_one("SELECT 1", &[]).await;
    assert!(gone.is_err(), "the stale session was terminated");
    for (client, what) in [
        (&etl, "spared by except"),
        (&young, "younger than the limit"),
        (&idle, "idle, not in a transaction"),
        (&elsewhere, "in another database"),
    ] {
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap_or_else(|err| panic!("the session {what} was hit: {err}"));
    }

    // The audit trail has the task run with its count.
    let history = db.pgmaint(&["history", "--task", "sweep", "--json"]).await;
    history.assert_code(0);
    let history = history.json();
    let recorded = &history["runs"][0]["tasks"][0];
    assert_eq!(recorded["status"], "succeeded", "{history}");
    assert_eq!(recorded["batches"], 1, "{history}");
}

#[tokio::test]
async fn a_query_running_past_the_limit_is_cancelled_and_its_session_kept() {
    let db = TestDb::new().await;
    db.config("[tasks.slow]\nkind = \"sessions\"\nrunning = \"1s\"\naction = \"cancel\"\n");
    db.pgmaint(&["init"]).await.assert_code(0);
    let (runner, runner_pid) = session(&db.url, "reports").await;
    let runner = std::sync::Arc::new(runner);
    let sleeping = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.query_one("SELECT pg_sleep(60)", &[]).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    let plan = db.pgmaint(&["plan", "slow", "--json"]).await;
    plan.assert_code(0);
    let json = plan.json();
    assert_eq!(
        pids(&json["tasks"][0]["details"]["sessions"]),
        [runner_pid as i64],
        "{json}"
    );
    assert!(!sleeping.is_finished(), "the dry run cancelled nothing");

    let run = db.pgmaint(&["run", "slow", "--json"]).await;
    run.assert_code(0);
    let err = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .expect("the query was cancelled")
        .unwrap()
        .expect_err("a cancelled query fails");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
    runner
        .query_one("SELECT 1", &[])
        .await
        .expect("a cancel keeps the session");
}

#[tokio::test]
async fn sessions_config_errors_name_their_place() {
    let db = TestDb::new().await;
    db.config(
        "[tasks.none]\nkind = \"sessions\"\naction = \"terminate\"\n\n[tasks.bad]\nkind = \"sessions\"\nidle_in_transaction = \"5min\"\naction = \"terminate\"\nexcept = [\"etl\", \"host=x\"]\n\n[tasks.gentle]\nkind = \"sessions\"\nidle_in_transaction = \"5min\"\naction = \"cancel\"\n\n[tasks.typo]\nkind = \"sessions\"\nrunning = \"1h\"\nactoin = \"cancel\"\ntable = \"t\"\n",
    );
    let run = db.pgmaint(&["tasks", "--json"]).await;
    run.assert_code(2);
    let json = run.json();
    let problems: Vec<(String, u64, u64, String)> = json["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_string(),
                p["line"].as_u64().unwrap(),
                p["column"].as_u64().unwrap(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let at = |key: &str| {
        problems
            .iter()
            .filter(|p| p.0 == key)
            .map(|p| (p.1, p.2, p.3.as_str()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        at("tasks.none.idle_in_transaction"),
        [(
            1,
            8,
            "a sessions task needs `idle_in_transaction` or `running` (or both)"
        )],
        "a missing key points at the task's header: {problems:#?}"
    );
    let except = at("tasks.bad.except");
    assert_eq!(except.len(), 2, "{problems:#?}");
    assert_eq!((except[0].0, except[0].1), (9, 10), "{problems:#?}");
    assert!(except[0].2.contains("`etl` is not of the form FIELD=GLOB"));
    assert!(except[1].2.contains("`host`"), "{problems:#?}");
    let gentle = at("tasks.gentle.action");
    assert_eq!((gentle[0].0, gentle[0].1), (14, 10), "{problems:#?}");
    assert!(
        gentle[0]
            .2
            .contains("a cancel does nothing to a session idle in transaction")
    );
    assert_eq!(
        at("tasks.typo.actoin"),
        [(
            19,
            1,
            "unknown key `actoin` in a sessions task; did you mean `action`?"
        )],
        "{problems:#?}"
    );
    assert_eq!(
        at("tasks.typo.table"),
        [(20, 1, "`table` is not a key of a sessions task")],
        "{problems:#?}"
    );
}

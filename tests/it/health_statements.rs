//! slow-queries names the one step pg_stat_statements is missing: the
//! library in `shared_preload_libraries` (a restart), the extension in this
//! database (`CREATE EXTENSION`), or both. On a cluster of its own, whose
//! setting the test changes and which it restarts with pg_ctl.

use crate::common;

use common::health_check as check;
use pgmaint::cluster::{Cluster, ClusterOptions};
use tokio_postgres::NoTls;

/// slow-queries' status and summary from `pgmaint health --json`.
async fn slow_queries(url: &str, config: &std::path::Path) -> (String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"))
        .arg("--config")
        .arg(config)
        .args(["--database-url", url, "health", "--json", "--all"])
        .output()
        .await
        .unwrap();
    let run: common::Run = output.into();
    let report = run.json();
    let c = check(&report, "slow-queries");
    (
        c["status"].as_str().unwrap().to_string(),
        c["summary"].as_str().unwrap().to_string(),
    )
}

async fn execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn slow_queries_names_the_missing_step_of_pg_stat_statements() {
    let cluster = Cluster::start(ClusterOptions {
        fsync: false,
        keep: true,
        scratch: false,
    })
    .expect("a throwaway cluster");
    let url = cluster.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgmaint.toml");
    std::fs::write(&config, "").unwrap();

    let (status, summary) = slow_queries(&url, &config).await;
    assert_eq!(status, "unknown");
    assert!(
        summary.contains("add it to shared_preload_libraries, restart the server, then CREATE EXTENSION pg_stat_statements"),
        "{summary}"
    );

    execute(
        &url,
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
    )
    .await;
    common::restart_cluster(&cluster);

    // Loaded, not created: only CREATE EXTENSION is asked for.
    let (status, summary) = slow_queries(&url, &config).await;
    assert_eq!(status, "unknown");
    assert!(
        summary.contains("is loaded (shared_preload_libraries) but not created in this database: CREATE EXTENSION pg_stat_statements")
            && !summary.contains("restart"),
        "{summary}"
    );

    execute(&url, "CREATE EXTENSION pg_stat_statements").await;
    let (_, summary) = slow_queries(&url, &config).await;
    assert!(
        !summary.contains("shared_preload_libraries") && !summary.contains("CREATE EXTENSION"),
        "{summary}"
    );

    common::remove_kept_cluster(&cluster);
}

/// slow-queries fires on a statement slower than its warning (100 ms mean)
/// called at least `SLOW_MIN_CALLS` (5) times since the last snapshot, and
/// is quiet before it: right after the snapshot, and while the slow
/// statement has been called fewer than 5 times.
#[tokio::test]
async fn slow_queries_fires_on_a_statement_slow_over_five_calls_and_is_quiet_before() {
    let cluster = Cluster::start(ClusterOptions {
        fsync: false,
        keep: true,
        scratch: false,
    })
    .expect("a throwaway cluster");
    let url = cluster.url("postgres");
    execute(
        &url,
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
    )
    .await;
    common::restart_cluster(&cluster);
    execute(&url, "CREATE EXTENSION pg_stat_statements").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgmaint.toml");
    std::fs::write(&config, "").unwrap();
    let pgmaint = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"));
        command
            .arg("--config")
            .arg(&config)
            .args(["--database-url", &url])
            .args(args);
        command
    };
    assert!(pgmaint(&["init"]).output().unwrap().status.success());
    assert!(pgmaint(&["snapshot"]).output().unwrap().status.success());

    let (status, summary) = slow_queries(&url, &config).await;
    assert_eq!(status, "ok", "quiet right after the snapshot: {summary}");

    // Four calls of 150 ms: slow, but too few to judge.
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..4 {
        client.batch_execute("SELECT pg_sleep(0.15)").await.unwrap();
    }
    let (status, summary) = slow_queries(&url, &config).await;
    assert_eq!(status, "ok", "4 calls are not judged: {summary}");
    assert!(summary.contains("called fewer than 5 times"), "{summary}");

    // The fifth: judged, 150 ms mean against the 100 ms warning.
    client.batch_execute("SELECT pg_sleep(0.15)").await.unwrap();
    let output = pgmaint(&["health", "--json", "--check", "slow-queries"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let c = check(&report, "slow-queries");
    assert_eq!(c["status"], "warning", "{c}");
    let finding = c["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["object"].as_str().unwrap().contains("pg_sleep"))
        .unwrap_or_else(|| panic!("the pg_sleep statement is named: {c}"));
    assert!(
        finding["value"]
            .as_str()
            .unwrap()
            .contains("mean over 5 calls since the last snapshot"),
        "{finding}"
    );
    assert!(
        finding["threshold"]
            .as_str()
            .unwrap()
            .contains("statements of 5 calls or more"),
        "{finding}"
    );

    // A new snapshot starts the count again: quiet.
    assert!(pgmaint(&["snapshot"]).output().unwrap().status.success());
    let (status, summary) = slow_queries(&url, &config).await;
    assert_eq!(status, "ok", "{summary}");

    common::remove_kept_cluster(&cluster);
}

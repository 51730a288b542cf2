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

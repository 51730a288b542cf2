//! The PostgreSQL server restarted under a running daemon: the daemon
//! recovers on its own, and a fire the restart cut short is marked lost to
//! it. Each test has its own cluster, which it restarts with pg_ctl.

use crate::common;

use std::time::Duration;

use common::Daemon;
use pgmaint::cluster::{Cluster, ClusterOptions};
use tokio_postgres::NoTls;

async fn count(url: &str, sql: &str) -> Option<i64> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.ok()?;
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.ok().map(|r| r.get(0))
}

/// Polls the count `sql` returns (none while the server is down) until
/// `want` holds.
/// `pgmaint init`, then a daemon, with `config` against `url`; its log in
/// `dir`.
async fn init_and_start_daemon(
    config: &std::path::Path,
    url: &str,
    dir: &std::path::Path,
) -> Daemon {
    let pgmaint = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"));
        command
            .arg("--config")
            .arg(config)
            .arg("--database-url")
            .arg(url)
            .args(args)
            .kill_on_drop(true);
        command
    };
    assert!(pgmaint(&["-q", "init"]).status().await.unwrap().success());
    Daemon::spawn(
        pgmaint(&["daemon", "--listen", "127.0.0.1:0"]),
        &dir.join("daemon.log"),
    )
    .await
}

async fn wait_for(url: &str, sql: &str, want: impl Fn(i64) -> bool, what: &str) -> i64 {
    common::wait_for(what, Duration::from_secs(60), async || {
        count(url, sql).await.filter(|value| want(*value))
    })
    .await
}

#[tokio::test]
async fn the_daemon_recovers_from_a_server_restart_without_being_restarted() {
    // pg_ctl manages this one, so it can be restarted; removed at the end.
    let cluster = Cluster::start(ClusterOptions {
        fsync: false,
        keep: true,
        scratch: false,
    })
    .expect("a throwaway cluster");
    let url = cluster.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgmaint.toml");
    std::fs::write(
        &config,
        "[tasks.mark]\nkind = \"sql\"\nsql = \"INSERT INTO marks DEFAULT VALUES\"\n\n[schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"mark\"]\n",
    )
    .unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE marks (at timestamptz DEFAULT now())")
        .await
        .unwrap();
    let mut daemon = init_and_start_daemon(&config, &url, dir.path()).await;
    wait_for(
        &url,
        "SELECT count(*) FROM marks",
        |n| n >= 1,
        "a first fire",
    )
    .await;

    common::restart_cluster(&cluster);
    let before = wait_for(
        &url,
        "SELECT count(*) FROM marks",
        |_| true,
        "the server back",
    )
    .await;
    wait_for(
        &url,
        "SELECT count(*) FROM marks",
        |n| n >= before + 2,
        "fires after the restart",
    )
    .await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );
    daemon.stop().await;
    common::remove_kept_cluster(&cluster);
}

#[tokio::test]
async fn a_fire_running_when_the_server_restarts_is_marked_lost_to_the_restart() {
    let cluster = Cluster::start(ClusterOptions {
        fsync: false,
        keep: true,
        scratch: false,
    })
    .expect("a throwaway cluster");
    let url = cluster.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgmaint.toml");
    std::fs::write(
        &config,
        "[tasks.slow]\nkind = \"sql\"\nsql = \"SELECT pg_sleep(60)\"\nstatement_timeout = \"5min\"\n\n[schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"slow\"]\n",
    )
    .unwrap();
    let mut daemon = init_and_start_daemon(&config, &url, dir.path()).await;
    // The slow task is running: its fire is `running`, its sleep under way.
    wait_for(
        &url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(60)%'",
        |n| n >= 1,
        "the slow task running",
    )
    .await;
    let running = wait_for(
        &url,
        "SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'running'",
        |n| n >= 1,
        "its fire running",
    )
    .await;
    assert_eq!(running, 1);
    common::restart_cluster(&cluster);
    wait_for(
        &url,
        "SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'interrupted'",
        |n| n >= 1,
        "the lost fire recorded",
    )
    .await;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let reasons: Vec<String> = client
        .query(
            "SELECT coalesce(reason, '') FROM pgmaint.schedule_fires WHERE status = 'interrupted' ORDER BY scheduled_for",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(
        reasons[0].contains("lost to a database server restart"),
        "{reasons:?}\n{log}"
    );
    assert!(
        reasons
            .iter()
            .all(|r| !r.contains("stopped renewing its lease")),
        "{reasons:?}\n{log}"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );
    daemon.stop().await;
    common::remove_kept_cluster(&cluster);
}

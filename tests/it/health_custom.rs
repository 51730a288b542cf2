//! Custom checks (`[health.custom.NAME]`) against a real PostgreSQL: rows
//! become findings by their thresholds, the query runs read-only under the
//! health timeouts, `check` validates its columns and EXPLAIN at its key,
//! and the daemon's /metrics and alerts see it like a built-in check.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDb;
use common::health_check as check;

const LOGINS: &str =
    "CREATE TABLE login_attempts (ip inet, ok boolean, at timestamptz DEFAULT now());
     INSERT INTO login_attempts (ip, ok) SELECT '10.0.0.1', false FROM generate_series(1, 120);
     INSERT INTO login_attempts (ip, ok) SELECT '10.0.0.2', false FROM generate_series(1, 30);
     INSERT INTO login_attempts (ip, ok) SELECT '10.0.0.3', false FROM generate_series(1, 3);";

const FAILED_LOGINS: &str = "[health.custom.failed_logins]\n\
    sql = \"SELECT ip AS object, count(*) AS value, 'in the last hour' AS detail FROM login_attempts WHERE NOT ok AND at > now() - interval '1 hour' GROUP BY ip ORDER BY ip\"\n\
    warning = 20\ncritical = 100\nadvice = \"block the address at the proxy\"\n";

#[tokio::test]
async fn a_custom_checks_rows_are_findings_by_its_thresholds() {
    let db = TestDb::with_sql(LOGINS).await;
    db.config(FAILED_LOGINS);
    let report = db.pgmaint(&["health", "--json"]).await.json();
    let c = check(&report, "failed_logins");
    assert_eq!(c["status"], "critical", "{c}");
    let findings = c["findings"].as_array().unwrap();
    // 10.0.0.3's 3 attempts are ok: not listed.
    assert_eq!(findings.len(), 2, "{c}");
    assert_eq!(findings[0]["object"], "10.0.0.1");
    assert_eq!(findings[0]["status"], "critical");
    assert_eq!(findings[0]["value"], "120 (in the last hour)");
    assert_eq!(findings[0]["advice"], "block the address at the proxy");
    assert_eq!(findings[0]["threshold"], "warning at 20, critical at 100");
    assert_eq!(findings[1]["object"], "10.0.0.2");
    assert_eq!(findings[1]["status"], "warning");
    assert_eq!(report["status"], "critical");
    // --check selects it alone; --all lists the ok row too.
    let only = db
        .pgmaint(&["health", "--json", "--all", "--check", "failed_logins"])
        .await
        .json();
    assert_eq!(only["checks"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(
        check(&only, "failed_logins")["findings"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The text report shows it with the others.
    let text = db.pgmaint(&["health", "--check", "failed_logins"]).await;
    assert!(text.stdout.contains("failed_logins"), "{}", text.stdout);
    assert!(text.stdout.contains("10.0.0.1"), "{}", text.stdout);
    // A snapshot keeps every row's finding (ok ones too), for the dashboard.
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["snapshot"]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.snapshot_checks WHERE check_name = 'failed_logins'")
            .await,
        3
    );
    assert_eq!(
        db.count("SELECT value::bigint FROM pgmaint.snapshot_checks WHERE object = '10.0.0.1' AND status = 'critical'")
            .await,
        120
    );
    // Quiet when the rows are under the thresholds.
    db.client()
        .await
        .batch_execute("UPDATE login_attempts SET ok = true")
        .await
        .unwrap();
    let report = db
        .pgmaint(&["health", "--json", "--check", "failed_logins"])
        .await
        .json();
    assert_eq!(check(&report, "failed_logins")["status"], "ok", "{report}");
    db.pgmaint(&["health", "--fail-on", "warning", "--check", "failed_logins"])
        .await
        .assert_code(0);
}

#[tokio::test]
async fn a_custom_check_runs_read_only_under_the_health_timeout() {
    let db =
        TestDb::with_sql("CREATE SEQUENCE s; CREATE TABLE q (id int); INSERT INTO q VALUES (1);")
            .await;
    db.config(
        "[health]\nstatement_timeout = \"300ms\"\n\n\
         [health.custom.writes]\nsql = \"SELECT 'x' AS object, nextval('s') AS value\"\n\n\
         [health.custom.sleeps]\nsql = \"SELECT 'x' AS object, 1 AS value FROM pg_sleep(5)\"\n\n\
         [health.custom.queue]\nsql = \"SELECT 'q' AS object, count(*) AS value FROM q\"\nwarning = 1\n",
    );
    let started = Instant::now();
    let report = db.pgmaint(&["health", "--json"]).await.json();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout held"
    );
    let writes = check(&report, "writes");
    assert_eq!(writes["status"], "unknown", "{writes}");
    assert!(
        writes["summary"]
            .as_str()
            .unwrap()
            .contains("read-only transaction"),
        "{writes}"
    );
    assert_eq!(
        db.count("SELECT last_value FROM s").await,
        1,
        "nextval never ran"
    );
    let sleeps = check(&report, "sleeps");
    assert_eq!(sleeps["status"], "unknown", "{sleeps}");
    assert!(
        sleeps["summary"].as_str().unwrap().contains("timed out"),
        "{sleeps}"
    );
    // The checks after them still ran.
    assert_eq!(check(&report, "queue")["status"], "warning", "{report}");
}

#[tokio::test]
async fn check_validates_a_custom_checks_query_at_its_key() {
    let db = TestDb::with_sql(LOGINS).await;
    let path = db.config(
        "[health.custom.bad_columns]\nsql = \"SELECT ip, count(*) AS value FROM login_attempts GROUP BY ip\"\n\n\
         [health.custom.no_table]\nsql = \"SELECT 'x' AS object, 1 AS value FROM no_such_table\"\n\n\
         [health.custom.text_value]\nsql = \"SELECT 'x' AS object, 'high' AS value\"\n",
    );
    let run = db.pgmaint(&["check"]).await;
    run.assert_code(2);
    let file = path.display().to_string();
    assert!(
        run.stderr.contains(&format!("{file}:2:7"))
            && run.stderr.contains("health.custom.bad_columns.sql")
            && run.stderr.contains("no column named `object`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("health.custom.no_table.sql") && run.stderr.contains("no_such_table"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("health.custom.text_value.sql")
            && run.stderr.contains("column `value` is of type text"),
        "{}",
        run.stderr
    );
    // A name of a built-in check, thresholds out of order: config errors.
    db.config(
        "[health.custom.connections]\nsql = \"SELECT 'x' AS object, 1 AS value\"\n\n\
         [health.custom.rate]\nsql = \"SELECT 'x' AS object, 1 AS value\"\nwarning = 5\ncritical = 1\n",
    );
    let run = db.pgmaint(&["health"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("name of a built-in check"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("health.custom.rate.warning"),
        "{}",
        run.stderr
    );
    // A good one passes, and an alert may name it.
    db.config(&format!(
        "{FAILED_LOGINS}\n[notifiers.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\n\
         [alerts.logins]\nchecks = [\"failed_logins\"]\nnotify = [\"hook\"]\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db.pgmaint(&["check"]).await.assert_code(0);
}

#[tokio::test]
async fn the_daemon_shows_a_custom_check_on_metrics_and_alerts_on_it() {
    let (url, mut inbox) = crate::daemon::receiver().await;
    let db = TestDb::with_sql(LOGINS).await;
    db.config(&format!(
        "{FAILED_LOGINS}\n[api]\ntoken = \"s3cret-s3cret-s3cret-s3cret-s3cret\"\n\n\
         [notifiers.hook]\nkind = \"webhook\"\nurl = \"{url}\"\n\n\
         [health]\ncheck_every = \"300ms\"\n\n\
         [alerts.logins]\nchecks = [\"failed_logins\"]\nnotify = [\"hook\"]\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    let daemon = db.daemon().await;
    let alert = crate::daemon::next(&mut inbox).await;
    assert_eq!(alert["details"]["kind"], "alert", "{alert}");
    assert!(
        alert["title"]
            .as_str()
            .unwrap()
            .contains("failed_logins is critical"),
        "{alert}"
    );
    assert!(
        alert["text"].as_str().unwrap().contains("10.0.0.1"),
        "{alert}"
    );
    let (_, metrics) = daemon.http("GET", "/metrics", None, "").await;
    assert!(
        metrics.contains("pgmaint_health_check_status{check=\"failed_logins\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgmaint_health_check_findings{check=\"failed_logins\"} 2"),
        "{metrics}"
    );
    db.client()
        .await
        .batch_execute("DELETE FROM login_attempts")
        .await
        .unwrap();
    let recovery = crate::daemon::next(&mut inbox).await;
    assert_eq!(recovery["details"]["kind"], "recovery", "{recovery}");
    daemon.stop().await;
}

//! The daemon against a real PostgreSQL: each fire runs once across three
//! daemons, misfires follow the schedule's policy, overlapping fires are
//! skipped, a killed daemon's run is marked interrupted by another, SIGTERM
//! stops cleanly, the API needs its token, and failures reach a webhook.

use crate::common;

use std::time::{Duration, Instant};

use common::{Daemon, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(extra: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE marks (at timestamptz DEFAULT clock_timestamp())")
        .await
        .unwrap();
    db.config(&format!(
        "[api]\ntoken = \"s3cret-an-api-token-of-32-characters\"\n\n[tasks.mark]\nkind = \"sql\"\nsql = \"INSERT INTO marks DEFAULT VALUES\"\n\n{extra}"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

#[tokio::test]
async fn each_fire_runs_exactly_once_across_three_daemons() {
    let db = setup("[schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"mark\"]\n").await;
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(db.daemon().await);
    }
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'succeeded'",
        |n| n >= 5,
        "five fires",
    )
    .await;
    for d in &daemons {
        d.terminate();
    }
    for mut d in daemons {
        assert!(d.child.wait().await.unwrap().success(), "SIGTERM exits 0");
    }
    let fires = db
        .count("SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'succeeded'")
        .await;
    assert_each_fire_ran_once(&db, fires, "").await;
}

#[tokio::test]
async fn missed_fires_follow_misfire_and_grace() {
    let db = setup(
        "[schedules.new_year]\ncron = \"0 0 1 1 *\"\ntasks = [\"mark\"]\nmisfire_grace = \"1h\"\n\n\
         [schedules.new_year_late_ok]\ncron = \"0 0 1 1 *\"\ntasks = [\"mark\"]\nmisfire_grace = \"400 days\"\n\n\
         [schedules.new_year_skip]\ncron = \"0 0 1 1 *\"\ntasks = [\"mark\"]\nmisfire = \"skip\"\nmisfire_grace = \"400 days\"\n",
    )
    .await;
    // As if the daemons last ran two and a half years ago.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO pgmaint.schedule_state SELECT s, now() - interval '900 days'
               FROM unnest(ARRAY['new_year', 'new_year_late_ok', 'new_year_skip']) s",
        )
        .await
        .unwrap();
    let mut daemon = db.daemon().await;
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.schedule_fires WHERE status <> 'running'",
        |n| n >= 6,
        "the missed fires",
    )
    .await;
    // Real time, not a condition: room for a wrong extra fire to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.terminate();
    daemon.child.wait().await.unwrap();
    let by = |schedule: &str, status: &str| {
        format!(
            "SELECT count(*) FROM pgmaint.schedule_fires WHERE schedule = '{schedule}' AND status = '{status}'"
        )
    };
    // Two or three New Years missed: the older ones are skipped; the latest
    // runs only where it is within misfire_grace and misfire is run_once.
    assert_eq!(db.count(&by("new_year", "succeeded")).await, 0);
    assert_eq!(db.count(&by("new_year_late_ok", "succeeded")).await, 1);
    assert_eq!(db.count(&by("new_year_skip", "succeeded")).await, 0);
    assert!(db.count(&by("new_year", "skipped")).await >= 2);
    assert_eq!(db.count("SELECT count(*) FROM marks").await, 1);
    let reason: String = db
        .client()
        .await
        .query_one("SELECT reason FROM pgmaint.schedule_fires WHERE schedule = 'new_year' ORDER BY scheduled_for DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("misfire_grace"), "{reason}");
}

#[tokio::test]
async fn a_fire_whose_previous_run_still_goes_is_skipped_and_a_killed_daemons_run_is_interrupted() {
    let db = setup(
        "[tasks.slow]\nkind = \"sql\"\nsql = \"SELECT pg_sleep(3)\"\nstatement_timeout = \"1min\"\n\n\
         [schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"slow\"]\n",
    )
    .await;
    let mut first = db.daemon().await;
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'skipped'",
        |n| n >= 1,
        "a skipped fire",
    )
    .await;
    let reason: String = db
        .client()
        .await
        .query_one(
            "SELECT reason FROM pgmaint.schedule_fires WHERE status = 'skipped' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("still going"), "{reason}");
    // kill -9 the daemon in the middle of a run; another daemon finds it.
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.runs WHERE status = 'running'",
        |n| n >= 1,
        "a running run",
    )
    .await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let mut second = db.daemon().await;
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.runs WHERE status = 'interrupted'",
        |n| n >= 1,
        "the dead run marked",
    )
    .await;
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.schedule_fires WHERE status = 'interrupted'",
        |n| n >= 1,
        "the dead fire marked",
    )
    .await;
    second.terminate();
    assert!(second.child.wait().await.unwrap().success());
    // Stopped mid-run by SIGTERM: the run is cancelled, not left running.
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.runs WHERE status = 'running'")
            .await,
        0
    );
}

#[tokio::test]
async fn the_api_needs_its_token_and_records_what_it_starts() {
    let db = setup("[tasks.dangerous]\nkind = \"sql\"\nsql = \"SELECT 1\"\nseverity = \"critical\"\n\n[schedules.nightly]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\ntasks = [\"mark\"]\n").await;
    let mut daemon = db.daemon().await;
    let (status, body) = daemon.http("GET", "/healthz", None, "").await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(daemon.code("GET", "/readyz", None, "").await, 200);
    let (status, body) = daemon.http("GET", "/api/v1/status", None, "").await;
    assert_eq!(status, 401);
    assert!(body.contains("\"error\""), "{body}");
    assert_eq!(
        daemon
            .code("GET", "/api/v1/status", Some("wrong"), "")
            .await,
        401
    );
    assert_eq!(
        daemon
            .code(
                "GET",
                "/api/v1/status",
                Some("s3cret-an-api-token-of-32-characters"),
                ""
            )
            .await,
        200
    );

    let (status, body) = daemon
        .http(
            "POST",
            "/api/v1/tasks/mark/run",
            Some("s3cret-an-api-token-of-32-characters"),
            "{\"dry_run\": false}",
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"]
        .as_i64()
        .unwrap();
    db.wait_for_count("SELECT count(*) FROM marks", |n| n == 1, "the API's run")
        .await;
    let (status, body) = daemon
        .http(
            "GET",
            &format!("/api/v1/runs/{run_id}"),
            Some("s3cret-an-api-token-of-32-characters"),
            "",
        )
        .await;
    assert_eq!(status, 200);
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["trigger"], "api");
    assert_eq!(run["tasks"][0]["name"], "mark");

    assert_eq!(
        daemon
            .code(
                "POST",
                "/api/v1/tasks/nope/run",
                Some("s3cret-an-api-token-of-32-characters"),
                "{}"
            )
            .await,
        404
    );
    assert_eq!(
        daemon
            .code(
                "POST",
                "/api/v1/tasks/dangerous/run",
                Some("s3cret-an-api-token-of-32-characters"),
                "{}"
            )
            .await,
        409
    );
    assert_eq!(
        daemon
            .code(
                "POST",
                "/api/v1/tasks/dangerous/run",
                Some("s3cret-an-api-token-of-32-characters"),
                "{\"yes\": true}"
            )
            .await,
        202
    );
    let big = format!("{{\"dry_run\": false, \"x\": \"{}\"}}", "a".repeat(20_000));
    assert_eq!(
        daemon
            .code(
                "POST",
                "/api/v1/tasks/mark/run",
                Some("s3cret-an-api-token-of-32-characters"),
                &big
            )
            .await,
        413
    );

    let (status, body) = daemon
        .http(
            "GET",
            "/api/v1/schedules/nightly",
            Some("s3cret-an-api-token-of-32-characters"),
            "",
        )
        .await;
    assert_eq!(status, 200);
    let schedule: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(schedule["read_only"], true);
    assert_eq!(schedule["next"].as_array().unwrap().len(), 5);
    let (status, metrics) = daemon.http("GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pgmaint_up 1")
            && metrics.contains("pgmaint_task_runs_total{task=\"mark\",status=\"succeeded\"}")
            && metrics.contains("pgmaint_task_run_duration_seconds_count{task=\"mark\"} ")
            && metrics
                .contains("pgmaint_task_run_duration_seconds_bucket{task=\"mark\",le=\"+Inf\"} "),
        "{metrics}"
    );
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

#[tokio::test]
async fn a_failed_scheduled_run_reaches_the_webhook_signed() {
    use hmac::{KeyInit, Mac};
    let (url, mut inbox) = receiver().await;
    let db = setup(&format!(
        "[tasks.broken]\nkind = \"sql\"\nsql = \"SELECT 1 / 0\"\n\n[notifiers.ops]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"hook-secret\"\n\n\
         [schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"broken\"]\nnotify = {{ on_failure = [\"ops\"] }}\n"
    ))
    .await;
    let mut daemon = db.daemon().await;
    let received = next_request(&mut inbox).await;
    assert!(received.head.starts_with("POST /hook"), "{}", received.head);
    let signature = received
        .head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-pgmaint-signature:")
                .map(|v| v.trim().to_string())
        })
        .expect("a signature header");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(received.raw.as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(signature, format!("sha256={expected}"));
    let body = received.json;
    assert_eq!(body["level"], "failure", "{body}");
    assert!(
        body["text"].as_str().unwrap().contains("division by zero"),
        "{body}"
    );
    daemon.terminate();
    daemon.child.wait().await.unwrap();
    // Recorded in the state schema.
    assert!(
        db.count("SELECT count(*) FROM pgmaint.notifications WHERE notifier = 'ops' AND ok")
            .await
            >= 1
    );
    // `pgmaint notify test` sends one too.
    db.pgmaint(&["notify", "test", "ops"]).await.assert_code(0);
    let test = next_request(&mut inbox).await;
    assert!(
        test.json["title"]
            .as_str()
            .unwrap()
            .contains("test message"),
        "{}",
        test.json
    );
    db.pgmaint(&["notify", "test", "nope"]).await.assert_code(2);
}

#[tokio::test]
async fn schedules_created_through_the_api_are_checked_run_and_audited() {
    let db = setup("[schedules.nightly]\ncron = \"0 3 * * *\"\ntasks = [\"mark\"]\n").await;
    let mut daemon = db.daemon().await;
    let token = Some("s3cret-an-api-token-of-32-characters");
    let (status, body) = daemon
        .http(
            "POST",
            "/api/v1/schedules",
            token,
            r#"{"name": "bad", "cron": "61 * * * *", "tasks": ["mark", "nope"]}"#,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("invalid cron expression") && body.contains("no task named `nope`"),
        "{body}"
    );
    assert_eq!(
        daemon
            .code(
                "POST",
                "/api/v1/schedules",
                token,
                r#"{"name": "x", "cron": "* * * * *", "tasks": ["mark"], "bogus": 1}"#
            )
            .await,
        400
    );
    assert_eq!(
        daemon
            .code(
                "PUT",
                "/api/v1/schedules/nightly",
                token,
                r#"{"cron": "* * * * *", "tasks": ["mark"]}"#
            )
            .await,
        403
    );
    assert_eq!(
        daemon
            .code("DELETE", "/api/v1/schedules/nightly", token, "")
            .await,
        403
    );

    let (status, body) = daemon
        .http("POST", "/api/v1/schedules", token, r#"{"name": "every_second", "cron": "* * * * * *", "timezone": "Europe/Berlin", "tasks": ["mark"]}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        daemon
            .code(
                "POST",
                "/api/v1/schedules",
                token,
                r#"{"name": "every_second", "cron": "* * * * *", "tasks": ["mark"]}"#
            )
            .await,
        409
    );
    db.wait_for_count("SELECT count(*) FROM pgmaint.schedule_fires WHERE schedule = 'every_second' AND status = 'succeeded'", |n| n >= 2, "fires of the API schedule").await;
    let (_, list) = daemon.http("GET", "/api/v1/schedules", token, "").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let sources: Vec<(&str, &str)> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sources,
        vec![("nightly", "config"), ("every_second", "api")]
    );

    let (status, _) = daemon
        .http(
            "PUT",
            "/api/v1/schedules/every_second",
            token,
            r#"{"cron": "0 0 1 1 *", "tasks": ["mark"]}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        daemon
            .code("DELETE", "/api/v1/schedules/every_second", token, "")
            .await,
        204
    );
    assert_eq!(
        daemon
            .code("DELETE", "/api/v1/schedules/every_second", token, "")
            .await,
        404
    );
    let actions: Vec<String> = db
        .client()
        .await
        .query("SELECT action FROM pgmaint.audit ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        vec!["create schedule", "update schedule", "delete schedule"]
    );

    assert_eq!(
        daemon.code("GET", "/api/v1/openapi.json", None, "").await,
        401
    );
    let (status, doc) = daemon.http("GET", "/api/v1/openapi.json", token, "").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    for path in [
        "/api/v1/tasks/{name}/run",
        "/api/v1/schedules/{name}",
        "/api/v1/runs/{id}",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

/// A request the local receiver got.
pub(crate) struct Received {
    head: String,
    raw: String,
    pub(crate) json: serde_json::Value,
}

/// A local HTTP receiver: every request, in order.
pub(crate) async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    buffer.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            let _ = stream
                                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                                .await;
                            if let Ok(json) = serde_json::from_str(body) {
                                let _ = tx.send(Received {
                                    head: head.to_string(),
                                    raw: body.to_string(),
                                    json,
                                });
                            }
                            return;
                        }
                    }
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

async fn next_request(inbox: &mut tokio::sync::mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(20), inbox.recv())
        .await
        .expect("a notification")
        .unwrap()
}

pub(crate) async fn next(
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
) -> serde_json::Value {
    next_request(inbox).await.json
}

#[tokio::test]
async fn a_health_alert_is_sent_once_repeated_after_its_interval_and_recovers() {
    let (url, mut inbox) = receiver().await;
    let db = setup(&format!(
        "[notifiers.hook]\nkind = \"webhook\"\nurl = \"{url}\"\n\n\
         [health]\ncheck_every = \"300ms\"\n\n\
         [alerts.indexes]\nchecks = [\"invalid-indexes\"]\nlevel = \"warning\"\nnotify = [\"hook\"]\nrepeat = \"2s\"\n"
    ))
    .await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE u (e text); INSERT INTO u VALUES ('a'), ('a');")
        .await
        .unwrap();
    assert!(
        client
            .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY u_e ON u (e)")
            .await
            .is_err()
    );
    let mut daemons = vec![db.daemon().await, db.daemon().await];
    let first = next(&mut inbox).await;
    let started = Instant::now();
    assert_eq!(first["details"]["kind"], "alert", "{first}");
    // It names the database: host, port, name; no user, no password.
    let port = common::cluster().port;
    assert_eq!(
        first["details"]["database"],
        serde_json::json!({"host": "127.0.0.1", "port": port, "database": db.name}),
        "{first}"
    );
    assert!(
        first["title"]
            .as_str()
            .unwrap()
            .ends_with(&format!(" on {} at 127.0.0.1:{port}", db.name)),
        "{first}"
    );
    assert!(!first.to_string().contains("postgres@"), "{first}");
    assert!(
        first["title"]
            .as_str()
            .unwrap()
            .contains("invalid-indexes is warning"),
        "{first}"
    );
    assert!(first["text"].as_str().unwrap().contains("u_e"), "{first}");
    let repeat = next(&mut inbox).await;
    assert_eq!(repeat["details"]["kind"], "repeat", "{repeat}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "repeated too soon: {:?}",
        started.elapsed()
    );
    client.batch_execute("DROP INDEX u_e").await.unwrap();
    let mut recovery = next(&mut inbox).await;
    while recovery["details"]["kind"] == "repeat" {
        recovery = next(&mut inbox).await;
    }
    assert_eq!(recovery["details"]["kind"], "recovery", "{recovery}");
    assert_eq!(recovery["level"], "recovery", "{recovery}");
    assert_eq!(
        recovery["details"]["database"]["database"],
        db.name.as_str()
    );
    assert!(
        recovery["title"].as_str().unwrap().contains("recovered"),
        "{recovery}"
    );
    // Two daemons, one notice each time: nothing else arrived (real time
    // for a second daemon's duplicate to arrive, were there one).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        inbox.try_recv().is_err(),
        "a second daemon sent the same notice"
    );
    let (_, metrics) = daemons[0].http("GET", "/metrics", None, "").await;
    assert!(
        metrics.contains("pgmaint_health_check_status{check=\"invalid-indexes\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgmaint_table_size_bytes{table=\"public.u\"}"),
        "{metrics}"
    );
    for d in &daemons {
        d.terminate();
    }
    for d in daemons.iter_mut() {
        d.child.wait().await.unwrap();
    }
}

/// A fake SMTP server that accepts one message and hands over its DATA.
async fn smtp_server() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read);
        write.write_all(b"220 fake ESMTP\r\n").await.unwrap();
        let mut data = String::new();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
                .await
                .unwrap()
                == 0
            {
                break;
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                }
                continue;
            }
            let command = line.to_ascii_uppercase();
            let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
                b"250 fake\r\n"
            } else if command.starts_with("DATA") {
                in_data = true;
                b"354 go on\r\n"
            } else if command.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            write.write_all(reply).await.unwrap();
        }
        let _ = tx.send(data);
    });
    (port, rx)
}

#[tokio::test]
async fn a_failed_scheduled_run_is_emailed() {
    let (port, message) = smtp_server().await;
    let db = setup(&format!(
        "[tasks.broken]\nkind = \"sql\"\nsql = \"SELECT 1 / 0\"\n\n\
         [notifiers.mail]\nkind = \"email\"\nsmtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"pgmaint@example.com\"\nto = [\"oncall@example.com\"]\n\n\
         [schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"broken\"]\nnotify = [\"mail\"]\n"
    ))
    .await;
    let mut daemon = db.daemon().await;
    let data = tokio::time::timeout(Duration::from_secs(20), message)
        .await
        .unwrap()
        .unwrap();
    assert!(
        data.contains("Subject: pgmaint: schedule every_second failed"),
        "{data}"
    );
    assert!(
        data.contains("To: oncall@example.com") && data.contains("division by zero"),
        "{data}"
    );
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

#[tokio::test]
async fn the_daemon_rides_out_a_database_outage_logging_once_each_way() {
    let db = setup("[state]\nkeep_runs = \"1 day\"\n\n[schedules.every_second]\ncron = \"* * * * * *\"\ntasks = [\"mark\"]\n").await;
    // An old run, for keep_runs to delete.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO pgmaint.runs (started_at, finished_at, trigger, triggered_by, command, status, dry_run, pgmaint_version)
             VALUES (now() - interval '3 days', now() - interval '3 days', 'cli', 'x', 'old', 'succeeded', false, '0')",
        )
        .await
        .unwrap();
    let log = db.dir.path().join("daemon.log");
    let daemon = logging_daemon(&db, &log).await;
    db.wait_for_count("SELECT count(*) FROM marks", |n| n >= 1, "a first fire")
        .await;
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.runs WHERE command = 'old'")
            .await,
        0,
        "keep_runs pruned it"
    );

    // The outage: no new connections, and the daemon's are cut.
    let admin = common::connect(&common::cluster().url("postgres")).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            db.name
        ))
        .await
        .unwrap();
    admin
        .query(
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                db.name
            ),
            &[],
        )
        .await
        .unwrap();
    // The outage lasts until the daemon has noticed it.
    logged(&log, "went away", Duration::from_secs(30)).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    let before = db.count("SELECT count(*) FROM marks").await;
    db.wait_for_count(
        "SELECT count(*) FROM marks",
        |n| n > before,
        "fires after the outage",
    )
    .await;

    let text = daemon.stop().await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    let went = messages.iter().filter(|m| m.contains("went away")).count();
    let back = messages.iter().filter(|m| m.contains("reachable")).count();
    assert_eq!(went, 1, "{messages:#?}");
    assert_eq!(
        back, 2,
        "once at start, once after the outage: {messages:#?}"
    );
}

/// Waits for run `id` to finish; returns it as the API shows it.
async fn finished_run(daemon: &Daemon, id: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = daemon
            .http(
                "GET",
                &format!("/api/v1/runs/{id}"),
                Some("s3cret-an-api-token-of-32-characters"),
                "",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let run: serde_json::Value = serde_json::from_str(&body).unwrap();
        if run["status"] != "running" {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a run through the API; returns its id.
async fn start_run(daemon: &Daemon, path: &str, body: &str) -> i64 {
    let (status, answer) = daemon
        .http(
            "POST",
            path,
            Some("s3cret-an-api-token-of-32-characters"),
            body,
        )
        .await;
    assert_eq!(status, 202, "{path} {body}: {answer}");
    serde_json::from_str::<serde_json::Value>(&answer).unwrap()["run_id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn max_runtime_ends_a_pause_between_batches() {
    let db = setup(
        "[tasks.slow_purge]\nkind = \"purge\"\ntable = \"items\"\nwhere = \"id % 2 = 0\"\n\
         batch_size = 10\npause = \"30s\"\nmax_runtime = \"1s\"\n",
    )
    .await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 1000)",
        )
        .await
        .unwrap();
    let mut daemon = db.daemon().await;
    let started = Instant::now();
    let id = start_run(&daemon, "/api/v1/tasks/slow_purge/run", "{}").await;
    let run = finished_run(&daemon, id).await;
    let took = started.elapsed();
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        run["tasks"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("max_runtime reached"),
        "{run}"
    );
    assert!(
        took < Duration::from_secs(10),
        "max_runtime 1s, but the run took {took:?} (it slept through its 30s pause)"
    );
    assert!(
        db.count("SELECT count(*) FROM items").await > 500,
        "it stopped early"
    );
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

/// Asserts an API answer is the API's JSON error with this status.
#[track_caller]
fn assert_json_error((status, body): &(u16, String), want: u16, what: &str) {
    assert_eq!(*status, want, "{what}: {body}");
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: not the API's JSON error ({e}): {body}"));
    assert!(
        json["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn every_api_error_is_the_apis_json_error() {
    let db = setup("").await;
    let mut daemon = db.daemon().await;
    let token = Some("s3cret-an-api-token-of-32-characters");
    for (body, what) in [
        (r#"{"dry_run": "yes"}"#, "a wrong type"),
        (r#"{"bogus": 1}"#, "an unknown field"),
        ("not json", "not JSON"),
        (r#"{"batch_size": 0}"#, "a zero batch size"),
        (r#"{"max_runtime": "soon"}"#, "a bad duration"),
    ] {
        let answer = daemon
            .http("POST", "/api/v1/tasks/mark/run", token, body)
            .await;
        assert_json_error(&answer, 400, what);
    }
    let big = format!("{{\"dry_run\": false, \"x\": \"{}\"}}", "a".repeat(20_000));
    assert_json_error(
        &daemon
            .http("POST", "/api/v1/tasks/mark/run", token, &big)
            .await,
        413,
        "a body over 16 KiB",
    );
    // 413 on every route, whatever the body: 5 MB of a schedule.
    let huge = format!(
        "{{\"name\": \"n\", \"cron\": \"* * * * *\", \"tasks\": [\"mark\"], \"x\": \"{}\"}}",
        "a".repeat(5 << 20)
    );
    for (method, path) in [
        ("POST", "/api/v1/schedules"),
        ("PUT", "/api/v1/schedules/n"),
        ("POST", "/api/v1/schedules/n/run"),
        ("POST", "/api/v1/tasks/mark/run"),
        ("GET", "/api/v1/status"),
    ] {
        assert_json_error(
            &daemon.http(method, path, token, &huge).await,
            413,
            &format!("5 MB to {method} {path}"),
        );
    }
    let long_name = format!(
        "{{\"name\": \"{}\", \"cron\": \"* * * * *\", \"tasks\": [\"mark\"]}}",
        "a".repeat(10_000)
    );
    let answer = daemon
        .http("POST", "/api/v1/schedules", token, &long_name)
        .await;
    assert_json_error(&answer, 400, "a 10,000-character schedule name");
    assert!(answer.1.contains("1 to 63"), "{}", answer.1);
    assert_json_error(
        &daemon.http("GET", "/api/v1/runs/abc", token, "").await,
        400,
        "a run id that is not a number",
    );
    assert_json_error(
        &daemon
            .http("GET", "/api/v1/runs?limit=many", token, "")
            .await,
        400,
        "a limit that is not a number",
    );
    assert_json_error(
        &daemon
            .http("GET", "/api/v1/runs?status=fine", token, "")
            .await,
        400,
        "an unknown status",
    );
    assert_json_error(
        &daemon.http("GET", "/api/v1/nothing-here", token, "").await,
        404,
        "an unknown route",
    );
    assert_json_error(
        &daemon.http("DELETE", "/api/v1/tasks", token, "").await,
        405,
        "a wrong method",
    );
    assert_json_error(
        &daemon.http("POST", "/api/v1/schedules", token, "{").await,
        400,
        "a schedule body that is not JSON",
    );
    // Nothing ran: every request above was refused.
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.runs").await, 0);
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

#[tokio::test]
async fn run_now_takes_api_schedules_batch_size_and_max_runtime() {
    let db = setup(
        "[tasks.purge_some]\nkind = \"purge\"\ntable = \"items\"\nwhere = \"id <= 100\"\n\n\
         [tasks.slow_purge]\nkind = \"purge\"\ntable = \"items\"\nwhere = \"id > 100 AND id % 2 = 0\"\nbatch_size = 10\npause = \"2s\"\n",
    )
    .await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 1000)",
        )
        .await
        .unwrap();
    let mut daemon = db.daemon().await;
    let token = Some("s3cret-an-api-token-of-32-characters");
    let (status, body) = daemon
        .http(
            "POST",
            "/api/v1/schedules",
            token,
            r#"{"name": "yearly", "cron": "0 0 1 1 *", "tasks": ["mark"]}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = start_run(&daemon, "/api/v1/schedules/yearly/run", "{}").await;
    let run = finished_run(&daemon, id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "api", "{run}");
    assert_eq!(db.count("SELECT count(*) FROM marks").await, 1);
    assert_json_error(
        &daemon
            .http("POST", "/api/v1/schedules/nope/run", token, "{}")
            .await,
        404,
        "an unknown schedule",
    );

    let id = start_run(
        &daemon,
        "/api/v1/tasks/purge_some/run",
        r#"{"batch_size": 10}"#,
    )
    .await;
    let run = finished_run(&daemon, id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["tasks"][0]["rows"], 100, "{run}");
    // In one batch without it (batch_size 5000).
    assert!(
        run["tasks"][0]["batches"].as_i64().unwrap() >= 2,
        "batch_size 10 takes 100 rows in several batches: {run}"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pgmaint.runs WHERE id = {id} AND command LIKE '%batch_size=10%'"
        ))
        .await,
        1,
        "the audit trail records the batch size"
    );

    let id = start_run(
        &daemon,
        "/api/v1/tasks/slow_purge/run",
        r#"{"max_runtime": "1s"}"#,
    )
    .await;
    let run = finished_run(&daemon, id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(db.count("SELECT count(*) FROM items").await > 100);
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

#[tokio::test]
async fn runs_are_filtered_before_the_limit() {
    let db = setup("[schedules.nightly]\ncron = \"0 3 * * *\"\ntasks = [\"mark\"]\n").await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO pgmaint.runs (trigger, triggered_by, command, status, dry_run, pgmaint_version)
             SELECT 'cli', 'x', 'old failure', 'failed', false, '0' FROM generate_series(1, 3);
             INSERT INTO pgmaint.runs (trigger, triggered_by, command, status, dry_run, pgmaint_version)
             SELECT 'api', 'x', 'new success', 'succeeded', false, '0' FROM generate_series(1, 20);",
        )
        .await
        .unwrap();
    let mut daemon = db.daemon().await;
    let token = Some("s3cret-an-api-token-of-32-characters");
    let runs = |path: &'static str| {
        let daemon = &daemon;
        async move {
            let (status, body) = daemon.http("GET", path, token, "").await;
            assert_eq!(status, 200, "{path}: {body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            json["runs"].as_array().unwrap().clone()
        }
    };
    let failed = runs("/api/v1/runs?status=failed&limit=2").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|r| r["status"] == "failed"), "{failed:?}");
    assert_eq!(runs("/api/v1/runs?trigger=cli&limit=5").await.len(), 3);
    assert_eq!(
        runs("/api/v1/runs?trigger=api&status=failed").await.len(),
        0
    );
    assert_eq!(runs("/api/v1/runs?limit=7").await.len(), 7);
    // A run-now of a schedule is found by its schedule.
    let id = start_run(&daemon, "/api/v1/schedules/nightly/run", "{}").await;
    finished_run(&daemon, id).await;
    let nightly = runs("/api/v1/runs?schedule=nightly").await;
    assert_eq!(nightly.len(), 1, "{nightly:?}");
    assert_eq!(nightly[0]["run_id"], id);
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

#[tokio::test]
async fn metrics_and_status_without_the_database_name_nothing_of_it() {
    let db = setup("").await;
    // A port bound but not listening: connecting there is refused at once.
    let closed = common::ClosedPort::new();
    let dead = closed.port;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgmaint"));
    command
        .arg("--config")
        .arg(db.dir.path().join("pgmaint.toml"))
        .arg("--database-url")
        .arg(format!(
            "postgres://secret_user:secret_pw@127.0.0.1:{dead}/secret_db"
        ))
        .args(["daemon", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL");
    let mut daemon = Daemon::spawn(command, &db.log_path()).await;
    let leaks = |body: &str| {
        [
            "secret_user",
            "secret_pw",
            "secret_db",
            "127.0.0.1",
            &dead.to_string(),
        ]
        .into_iter()
        .filter(|s| body.contains(s))
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let (status, metrics) = daemon.http("GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("pgmaint_up 1") && metrics.contains("pgmaint_database_up 0"),
        "{metrics}"
    );
    assert!(metrics.contains("unreachable"), "{metrics}");
    assert_eq!(leaks(&metrics), Vec::<String>::new(), "{metrics}");
    for path in ["/api/v1/status", "/api/v1/runs", "/api/v1/schedules"] {
        let (_, body) = daemon
            .http(
                "GET",
                path,
                Some("s3cret-an-api-token-of-32-characters"),
                "",
            )
            .await;
        assert!(body.contains("unreachable"), "{path}: {body}");
        assert_eq!(leaks(&body), Vec::<String>::new(), "{path}: {body}");
    }
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

/// A daemon on a port the OS picks writing JSON log lines to `log`.
async fn logging_daemon(db: &TestDb, log: &std::path::Path) -> Daemon {
    db.daemon_with(&["--log-format", "json"], log).await
}

/// The messages of a JSON log, each with its fields.
fn log_lines(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The next notification whose details say `key` is `value`.
async fn next_where(
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
    key: &str,
    value: &str,
) -> serde_json::Value {
    loop {
        let event = next(inbox).await;
        if event["details"][key] == value {
            return event;
        }
    }
}

#[tokio::test]
async fn a_failed_api_run_notifies_and_logs_as_a_fire_does() {
    let (url, mut inbox) = receiver().await;
    let db = setup(&format!(
        "[tasks.broken]\nkind = \"sql\"\nsql = \"SELECT 1 / 0\"\n\n[notifiers.ops]\nkind = \"webhook\"\nurl = \"{url}\"\n\n\
         [schedules.nightly]\ncron = \"0 3 * * *\"\ntasks = [\"broken\"]\nnotify = {{ on_failure = [\"ops\"] }}\n"
    ))
    .await;
    // A top-level `name`, which notifications carry beside the database.
    let written = std::fs::read_to_string(db.dir.path().join("pgmaint.toml")).unwrap();
    db.config(&format!("name = \"shop-eu\"\n{written}"));
    let log = db.dir.path().join("daemon.log");
    let mut daemon = logging_daemon(&db, &log).await;
    // What a GitHub Actions cron or a Kubernetes CronJob calls.
    let task_run = start_run(&daemon, "/api/v1/tasks/broken/run", "{}").await;
    let event = next(&mut inbox).await;
    assert_eq!(event["level"], "failure", "{event}");
    assert_eq!(event["details"]["trigger"], "api", "{event}");
    assert_eq!(event["details"]["task"], "broken", "{event}");
    assert_eq!(event["details"]["run"]["run_id"], task_run, "{event}");
    assert_eq!(event["details"]["database"]["database"], db.name.as_str());
    // The config's name comes with it.
    assert_eq!(event["details"]["database"]["name"], "shop-eu", "{event}");
    assert!(
        event["title"].as_str().unwrap().contains("shop-eu"),
        "{event}"
    );
    assert!(
        event["text"].as_str().unwrap().contains("division by zero"),
        "{event}"
    );
    let schedule_run = start_run(&daemon, "/api/v1/schedules/nightly/run", "{}").await;
    let event = next(&mut inbox).await;
    assert_eq!(event["level"], "failure", "{event}");
    assert_eq!(event["details"]["schedule"], "nightly", "{event}");
    assert!(
        event["title"].as_str().unwrap().starts_with(&format!(
            "pgmaint: schedule nightly failed (run {schedule_run})"
        )),
        "{event}"
    );
    db.wait_for_count(
        "SELECT count(*) FROM pgmaint.notifications WHERE notifier = 'ops' AND ok",
        |n| n == 2,
        "both recorded",
    )
    .await;
    daemon.terminate();
    daemon.child.wait().await.unwrap();
    let lines = log_lines(&log);
    for id in [task_run, schedule_run] {
        for message in ["run started", "run finished"] {
            assert!(
                lines.iter().any(|l| l["fields"]["run_id"] == id
                    && l["fields"]["trigger"] == "api"
                    && l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))),
                "no `{message}` line for run {id}: {lines:#?}"
            );
        }
    }
}

#[tokio::test]
async fn a_failed_cli_run_notifies_as_a_fire_does_and_a_dry_run_nobody() {
    let (url, mut inbox) = receiver().await;
    let db = setup(&format!(
        "[tasks.broken]\nkind = \"sql\"\nsql = \"SELECT 1 / 0\"\n\n[notifiers.ops]\nkind = \"webhook\"\nurl = \"{url}\"\n"
    ))
    .await;
    // A dry run changed nothing, so it tells nobody.
    db.pgmaint(&["plan", "broken"]).await;
    // `pgmaint run`, from a shell or a CronJob, goes through the runner too.
    db.pgmaint(&["run", "broken"]).await.assert_code(1);
    let event = next(&mut inbox).await;
    assert_eq!(event["level"], "failure", "{event}");
    assert_eq!(event["details"]["trigger"], "cli", "{event}");
    assert_eq!(event["details"]["tasks"][0], "broken", "{event}");
    assert_eq!(event["details"]["run"]["dry_run"], false, "{event}");
    assert!(
        event["text"].as_str().unwrap().contains("division by zero"),
        "{event}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.notifications WHERE notifier = 'ops' AND ok")
            .await,
        1
    );
}

/// A webhook that takes every connection and never answers, until
/// `release` is sent; then it goes away, and later attempts are refused.
async fn silent_receiver() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (release, mut released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => return,
                },
                _ = &mut released => return,
            }
        }
    });
    (url, release)
}

#[tokio::test]
async fn a_notifier_that_never_answers_does_not_delay_the_next() {
    let (silent, release) = silent_receiver().await;
    let (url, mut inbox) = receiver().await;
    // `a_silent` comes first in the file and by name.
    let db = setup(&format!(
        "[tasks.broken]\nkind = \"sql\"\nsql = \"SELECT 1 / 0\"\n\n\
         [notifiers.a_silent]\nkind = \"webhook\"\nurl = \"{silent}\"\n\n\
         [notifiers.ops]\nkind = \"webhook\"\nurl = \"{url}\"\n"
    ))
    .await;
    let run = tokio::spawn({
        let mut command = db.command(&["run", "broken"]);
        async move { command.output().await.unwrap() }
    });
    // Sent one after the other, `ops` would wait out the silent one's
    // 10 s timeout, four times; 8 s leaves a loaded CI machine room while
    // still failing a send that waited even once.
    let event = tokio::time::timeout(Duration::from_secs(8), inbox.recv())
        .await
        .expect("ops is told while the silent notifier still says nothing")
        .unwrap()
        .json;
    assert_eq!(event["level"], "failure", "{event}");
    let _ = release.send(());
    let output = run.await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.notifications WHERE notifier = 'ops' AND ok")
            .await,
        1
    );
    // The silent one was retried, then recorded as failed.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pgmaint.notifications WHERE notifier = 'a_silent' AND NOT ok AND attempts = 4"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_schedules_list_for_an_outcome_is_what_it_says() {
    let (url, mut inbox) = receiver().await;
    let (quiet_url, mut quiet_inbox) = receiver().await;
    // Neither notifier sets on_success (it defaults to false).
    let db = setup(&format!(
        "[notifiers.ops]\nkind = \"webhook\"\nurl = \"{url}\"\n\n\
         [notifiers.quiet]\nkind = \"webhook\"\nurl = \"{quiet_url}\"\n\n\
         [schedules.explicit]\ncron = \"* * * * * *\"\ntasks = [\"mark\"]\nnotify = {{ on_success = [\"ops\"] }}\n\n\
         [schedules.plain]\ncron = \"* * * * * *\"\ntasks = [\"mark\"]\nnotify = [\"quiet\"]\n"
    ))
    .await;
    let mut daemon = db.daemon().await;
    let event = next_where(&mut inbox, "schedule", "explicit").await;
    assert_eq!(event["level"], "success", "{event}");
    // An API schedule's list is every outcome, success included.
    let (status, body) = daemon
        .http(
            "POST",
            "/api/v1/schedules",
            Some("s3cret-an-api-token-of-32-characters"),
            r#"{"name": "from_api", "cron": "* * * * * *", "tasks": ["mark"], "notify": ["ops"]}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let event = next_where(&mut inbox, "schedule", "from_api").await;
    assert_eq!(event["level"], "success", "{event}");
    // A plain config list leaves success to the notifier, which does not
    // take it.
    db.wait_for_count("SELECT count(*) FROM pgmaint.schedule_fires WHERE schedule = 'plain' AND status = 'succeeded'",
        |n| n >= 3,
        "fires of the plain schedule",
    )
    .await;
    // Real time, not a condition: room for a wrong success notice to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        quiet_inbox.try_recv().is_err(),
        "a plain list sent a success its notifier does not take"
    );
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

/// Waits until the JSON log at `log` has a message containing `text`.
async fn logged(log: &std::path::Path, text: &str, within: Duration) {
    logged_times(log, text, 1, within).await
}

/// Waits until the JSON log at `log` has `times` messages containing `text`.
async fn logged_times(log: &std::path::Path, text: &str, times: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = log_lines(log)
            .iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .count();
        if seen >= times {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not {times} `{text}` in the log within {within:?}: {:#?}",
            log_lines(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `daemons` daemons LISTEN for the API's schedule changes.
async fn listening(db: &TestDb, daemons: i64) {
    db.wait_for_count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND query = 'LISTEN pgmaint_schedules'",
        |n| n >= daemons,
        "the daemons to LISTEN for schedule changes",
    )
    .await;
}

/// The fires GET listed for a schedule, as a SQL array literal.
fn listed_fires(schedule: &serde_json::Value, n: usize) -> String {
    let fires: Vec<&str> = schedule["next"].as_array().unwrap()[..n]
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    format!("'{{{}}}'::timestamptz[]", fires.join(","))
}

#[tokio::test]
async fn api_schedule_changes_take_effect_at_once_on_every_daemon() {
    let db = setup("").await;
    let token = Some("s3cret-an-api-token-of-32-characters");
    let log = db.dir.path().join("b.log");
    let mut a = db.daemon().await;
    let mut b = logging_daemon(&db, &log).await;
    // Both LISTEN, so each hears of a change the other's API makes.
    listening(&db, 2).await;
    let (status, body) = a
        .http(
            "POST",
            "/api/v1/schedules",
            token,
            r#"{"name": "slow", "cron": "0 0 1 1 *", "tasks": ["mark"]}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(b.code("GET", "/healthz", None, "").await, 200);
    // The other daemon heard of it (and now waits for a fire months away).
    logged_times(
        &log,
        "schedules changed (notified)",
        1,
        Duration::from_secs(10),
    )
    .await;

    // Created through one daemon: the fires GET lists are the ones that
    // happen, and the other daemon heard of it at once.
    let (status, body) = a
        .http(
            "POST",
            "/api/v1/schedules",
            token,
            r#"{"name": "fast", "cron": "* * * * * *", "tasks": ["mark"]}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    logged_times(
        &log,
        "schedules changed (notified)",
        2,
        Duration::from_secs(2),
    )
    .await;
    let listed = listed_fires(&created, 3);
    db.wait_for_count(&format!(
            "SELECT count(*) FROM pgmaint.schedule_fires WHERE schedule = 'fast' AND status = 'succeeded' AND scheduled_for = ANY({listed})"
        ),
        |n| n == 3,
        "the three fires GET listed",
    )
    .await;

    // Changed through the other: from a yearly cron to every second, it
    // fires from its change on, and never for a time before it.
    let (status, body) = b
        .http(
            "PUT",
            "/api/v1/schedules/slow",
            token,
            r#"{"cron": "* * * * * *", "tasks": ["mark"]}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed = listed_fires(&changed, 2);
    db.wait_for_count(&format!(
            "SELECT count(*) FROM pgmaint.schedule_fires WHERE schedule = 'slow' AND status = 'succeeded' AND scheduled_for = ANY({listed})"
        ),
        |n| n == 2,
        "the fires GET listed after the change",
    )
    .await;
    for (schedule, since) in [("fast", "created_at"), ("slow", "updated_at")] {
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM pgmaint.schedule_fires f JOIN pgmaint.api_schedules s ON s.name = f.schedule
                  WHERE f.schedule = '{schedule}' AND f.scheduled_for <= s.{since}"
            ))
            .await,
            0,
            "{schedule}: a fire (run or skipped) for a time before it read as it does"
        );
    }

    // Deleted: no daemon fires it again.
    assert_eq!(
        a.code("DELETE", "/api/v1/schedules/fast", token, "").await,
        204
    );
    let deleted_at = db.count("SELECT extract(epoch FROM now())::bigint").await;
    // Real time, not a condition: seconds in which a deleted every-second
    // schedule would have fired.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pgmaint.schedule_fires WHERE schedule = 'fast' AND scheduled_for > to_timestamp({deleted_at} + 1)"
        ))
        .await,
        0,
        "a deleted schedule fired"
    );
    for d in [&a, &b] {
        d.terminate();
    }
    a.child.wait().await.unwrap();
    b.child.wait().await.unwrap();
}

#[tokio::test]
async fn a_schedule_change_no_notification_told_of_is_seen_within_seconds() {
    let db = setup("").await;
    let log = db.dir.path().join("daemon.log");
    let mut daemon = db.daemon_with(&["--log-format", "json", "-vv"], &log).await;
    assert_eq!(daemon.code("GET", "/healthz", None, "").await, 200);
    // Its scheduler has read the (no) API schedules and waits: the row
    // below is a change to what it read, not part of its first read.
    listening(&db, 1).await;
    logged(
        &log,
        "read the schedules and the API's digest",
        Duration::from_secs(30),
    )
    .await;
    // As through a transaction pooler, where LISTEN hears nothing: the row
    // appears without a NOTIFY.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO pgmaint.api_schedules (name, cron, timezone, tasks, enabled, allow_critical, misfire, misfire_grace_seconds, notify)
             VALUES ('behind', '* * * * * *', 'UTC', '{mark}', true, false, 'run_once', 3600, '{}')",
        )
        .await
        .unwrap();
    logged(
        &log,
        "schedules changed (rechecked)",
        Duration::from_secs(5),
    )
    .await;
    db.wait_for_count("SELECT count(*) FROM pgmaint.schedule_fires WHERE schedule = 'behind' AND status = 'succeeded'",
        |n| n >= 1,
        "a fire of the schedule",
    )
    .await;
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pgmaint.schedule_fires f JOIN pgmaint.api_schedules s ON s.name = f.schedule
              WHERE f.scheduled_for <= s.created_at"
        )
        .await,
        0,
        "a fire (run or skipped) for a time before it existed"
    );
    assert!(
        db.count(
            "SELECT count(*) FROM pgmaint.schedule_fires f JOIN pgmaint.api_schedules s ON s.name = f.schedule
              WHERE f.status = 'succeeded' AND f.claimed_at <= s.created_at + interval '5 seconds'"
        )
        .await
            >= 1,
        "not seen within seconds"
    );
    daemon.terminate();
    daemon.child.wait().await.unwrap();
}

/// `fires` fires, each run exactly once: one mark and one succeeded run
/// per fire, and every second from the first fire to the last claimed
/// (none lost between daemons), each once (the primary key makes sure).
/// `logs` is shown when an assertion fails.
pub(crate) async fn assert_each_fire_ran_once(db: &TestDb, fires: i64, logs: &str) {
    assert_eq!(
        db.count("SELECT count(*) FROM marks").await,
        fires,
        "one run per fire\n{logs}"
    );
    assert_eq!(
        db.count(
            "SELECT count(DISTINCT run_id) FROM pgmaint.schedule_fires WHERE status = 'succeeded'"
        )
        .await,
        fires
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pgmaint.runs WHERE trigger = 'schedule' AND status = 'succeeded'"
        )
        .await,
        fires
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.schedule_fires").await,
        db.count(
            "SELECT extract(epoch FROM max(scheduled_for) - min(scheduled_for))::bigint + 1 FROM pgmaint.schedule_fires"
        )
        .await
    );
}

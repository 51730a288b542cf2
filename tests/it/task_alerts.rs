//! Alerts on task outcomes (`[alerts.NAME] tasks = [...]`) against a real
//! PostgreSQL: a report that finds rows, a failed run and a run longer
//! than `max_duration` each notify once, repeat only after `repeat`, and
//! recover when the task's next run is clean.

use crate::common;

use std::time::Duration;

use common::TestDb;

/// The next notification that comes from an alert (a run's own outcome
/// notices are skipped).
async fn next_alert(
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<crate::daemon::Received>,
) -> serde_json::Value {
    loop {
        let event = crate::daemon::next(inbox).await;
        if event["details"]["alert"].is_string() {
            return event;
        }
    }
}

/// Nothing from an alert arrives within a moment.
async fn no_alert(inbox: &mut tokio::sync::mpsc::UnboundedReceiver<crate::daemon::Received>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(event) = inbox.try_recv() {
        assert!(
            !event.json["details"]["alert"].is_string(),
            "unexpected alert: {}",
            event.json
        );
    }
}

#[tokio::test]
async fn task_outcomes_alert_once_repeat_and_recover() {
    let (url, mut inbox) = crate::daemon::receiver().await;
    let db = TestDb::with_sql(
        "CREATE TABLE posts (id int PRIMARY KEY);
         CREATE TABLE comments (id int, post_id int);
         INSERT INTO posts VALUES (1);
         INSERT INTO comments VALUES (1, 1), (2, 7), (3, 8);
         CREATE TABLE flag (fail boolean); INSERT INTO flag VALUES (true);",
    )
    .await;
    db.config(&format!(
        "[notifiers.hook]\nkind = \"webhook\"\nurl = \"{url}\"\n\n\
         [tasks.orphan_progress]\nkind = \"orphans\"\ntable = \"comments\"\ncolumn = \"post_id\"\nreferences = \"posts(id)\"\naction = \"report\"\n\n\
         [tasks.flaky]\nkind = \"sql\"\nsql = \"SELECT 1 / (CASE WHEN fail THEN 0 ELSE 1 END) FROM flag\"\n\n\
         [tasks.slow]\nkind = \"sql\"\nsql = \"SELECT pg_sleep(0.4)\"\n\n\
         [alerts.outcomes]\ntasks = [\"orphan_progress\", \"flaky\", \"slow\"]\nmax_duration = \"200ms\"\nfound_rows = 2\nnotify = [\"hook\"]\nrepeat = \"1h\"\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);

    // A report that finds 2 rows (found_rows = 2): a warning, once.
    db.pgmaint(&["run", "orphan_progress"]).await.assert_code(0);
    let alert = next_alert(&mut inbox).await;
    assert_eq!(alert["details"]["kind"], "alert", "{alert}");
    assert_eq!(alert["level"], "warning", "{alert}");
    assert!(
        alert["title"].as_str().unwrap().contains("orphan_progress")
            && alert["text"].as_str().unwrap().contains("found 2 row(s)"),
        "{alert}"
    );
    db.pgmaint(&["run", "orphan_progress"]).await.assert_code(0);
    no_alert(&mut inbox).await;
    // A dry run alerts nobody and clears nothing.
    db.pgmaint(&["plan", "orphan_progress"])
        .await
        .assert_code(0);
    no_alert(&mut inbox).await;
    // Below found_rows: it recovers.
    db.client()
        .await
        .batch_execute("DELETE FROM comments WHERE post_id = 8")
        .await
        .unwrap();
    db.pgmaint(&["run", "orphan_progress"]).await.assert_code(0);
    let recovery = next_alert(&mut inbox).await;
    assert_eq!(recovery["details"]["kind"], "recovery", "{recovery}");
    assert_eq!(recovery["level"], "recovery", "{recovery}");
    assert!(
        recovery["title"]
            .as_str()
            .unwrap()
            .contains("recovered (was warning)"),
        "{recovery}"
    );

    // A failed run: critical, naming the error; recovered by a good run.
    db.pgmaint(&["run", "flaky"]).await.assert_code(1);
    let alert = next_alert(&mut inbox).await;
    assert_eq!(alert["level"], "failure", "{alert}");
    assert!(
        alert["text"].as_str().unwrap().contains("division by zero"),
        "{alert}"
    );
    db.client()
        .await
        .batch_execute("UPDATE flag SET fail = false")
        .await
        .unwrap();
    db.pgmaint(&["run", "flaky"]).await.assert_code(0);
    let recovery = next_alert(&mut inbox).await;
    assert!(
        recovery["title"]
            .as_str()
            .unwrap()
            .contains("flaky recovered (was critical)"),
        "{recovery}"
    );

    // Longer than max_duration: a warning.
    db.pgmaint(&["run", "slow"]).await.assert_code(0);
    let alert = next_alert(&mut inbox).await;
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .contains("longer than max_duration 0.2s"),
        "{alert}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pgmaint.alert_state WHERE alert = 'outcomes' AND check_name = 'task slow'")
            .await,
        1
    );
}

#[tokio::test]
async fn an_alert_naming_an_unknown_task_is_a_config_error() {
    let db = TestDb::new().await;
    let path = db.config(
        "[notifiers.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\n\
         [alerts.outcomes]\ntasks = [\"nope\"]\nnotify = [\"hook\"]\n\n\
         [alerts.stray]\nmax_duration = \"1min\"\nnotify = [\"hook\"]\n",
    );
    let run = db.pgmaint(&["check"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains(&format!("{}:6:", path.display()))
            && run.stderr.contains("alerts.outcomes.tasks")
            && run.stderr.contains("`nope`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("alerts.stray.max_duration"),
        "{}",
        run.stderr
    );
}

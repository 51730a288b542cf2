//! purge, archive and orphans on a partitioned parent: each leaf walked in
//! turn, pruned leaves untouched, exact counts, one backup named by the
//! parent that restores through it.

use crate::common;

use common::TestDb;

/// `events` by RANGE on `at`: 2024, 2025 and 2026 partitions and a
/// default holding 2010 and 2030 rows. 10,000 rows, 1,000 a user.
const EVENTS: &str = "
    CREATE TABLE users (id int PRIMARY KEY);
    INSERT INTO users SELECT generate_series(0, 9);
    CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL, user_id int NOT NULL, payload jsonb,
                         PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
    CREATE TABLE events_default PARTITION OF events DEFAULT;
    INSERT INTO events
      SELECT i,
             CASE i % 5 WHEN 0 THEN timestamptz '2024-01-01' + (i % 360) * interval '1 day'
                        WHEN 1 THEN timestamptz '2025-01-01' + (i % 360) * interval '1 day'
                        WHEN 2 THEN timestamptz '2026-01-01' + (i % 300) * interval '1 day'
                        WHEN 3 THEN timestamptz '2010-01-01' + (i % 360) * interval '1 day'
                        ELSE timestamptz '2030-01-01' + (i % 360) * interval '1 day' END,
             i % 10,
             jsonb_build_object('n', i, 'pad', repeat('x', i % 50))
        FROM generate_series(1, 10000) i;
    ANALYZE events;";

const OLD: &str = "at < '2025-06-01'";

async fn events(config: &str) -> TestDb {
    let db = TestDb::with_sql(EVENTS).await;
    db.config(config);
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

fn partitions_of(task: &serde_json::Value) -> Vec<String> {
    task["details"]["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("partitions listed: {task}"))
        .iter()
        .map(|p| p["table"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_purge_of_a_partitioned_table_walks_the_leaves_it_can_match_and_restores_through_the_parent()
 {
    let db = events(&format!(
        "[backups]\ndir = \"backups\"\n\n[tasks.old_events]\nkind = \"purge\"\ntable = \"events\"\nwhere = \"{OLD}\"\nbatch_size = 300\nbackup = true\n"
    ))
    .await;
    let original = common::checksum(&db, "SELECT * FROM events").await;
    let named = db
        .count(&format!("SELECT count(*) FROM events WHERE {OLD}"))
        .await;
    let kept = common::checksum(&db, &format!("SELECT * FROM events WHERE NOT ({OLD})")).await;
    let untouched = common::checksum(&db, "SELECT * FROM events_2026").await;

    let plan = db.pgmaint(&["plan", "old_events", "--json"]).await;
    plan.assert_code(0);
    let task = &plan.json()["tasks"][0];
    assert_eq!(task["rows"], named, "{task}");
    assert_eq!(task["details"]["table"], "public.events");
    assert_eq!(task["details"]["rows_exact"], true);
    assert_eq!(task["details"]["partitions_total"], 4);
    assert_eq!(
        partitions_of(task),
        [
            "public.events_2024",
            "public.events_2025",
            "public.events_default"
        ],
        "the 2026 partition cannot hold a row before June 2025"
    );
    // Every row of events_2024 matches, but not every row of the table.
    assert_eq!(task["details"]["matches_every_row"], false);
    assert!(task["details"]["needs_confirmation"].is_null());
    let text = db.pgmaint(&["plan", "old_events"]).await;
    text.assert_code(0);
    assert!(
        text.stdout.contains("walks 3 of its 4 partitions"),
        "{}",
        text.stdout
    );
    assert_eq!(
        common::checksum(&db, "SELECT * FROM events").await,
        original
    );

    let run = db.pgmaint(&["run", "old_events", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], named, "{task}");
    assert!(task["batches"].as_u64().unwrap() >= 6, "{task}");
    assert_eq!(
        common::checksum(&db, "SELECT * FROM events").await,
        kept,
        "exactly the named rows went"
    );
    assert_eq!(
        common::checksum(&db, "SELECT * FROM events_2026").await,
        untouched
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events_2024").await,
        0,
        "the whole 2024 partition matched"
    );
    let changed = task["details"]["changed_tables"].to_string();
    assert!(changed.contains("public.events"), "{changed}");

    let backup = task["details"]["backup_id"].as_i64().expect("one backup");
    let list = db.pgmaint(&["backups", "--json"]).await.json();
    assert_eq!(list["backups"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["backups"][0]["table"], "public.events");
    assert_eq!(list["backups"][0]["rows"], named);
    let restore = db
        .pgmaint(&["restore", &backup.to_string(), "--json"])
        .await;
    restore.assert_code(0);
    assert_eq!(restore.json()["restored"], named);
    assert_eq!(
        common::checksum(&db, "SELECT * FROM events").await,
        original
    );
    assert_eq!(db.count("SELECT count(*) FROM events_2024").await, 2000);
}

#[tokio::test]
async fn an_older_than_cutoff_prunes_by_the_bounds_and_an_archive_moves_every_leaf_s_rows() {
    let db = events(
        "[tasks.old_events]\nkind = \"archive\"\ntable = \"events\"\ntime_column = \"at\"\nolder_than = \"600 days\"\nbatch_size = 250\n",
    )
    .await;
    let cutoff = "now() - interval '600 days'";
    let named = common::checksum(&db, &format!("SELECT * FROM events WHERE at < {cutoff}")).await;
    let kept = common::checksum(&db, &format!("SELECT * FROM events WHERE at >= {cutoff}")).await;
    let plan = db.pgmaint(&["plan", "old_events", "--json"]).await;
    plan.assert_code(0);
    let task = &plan.json()["tasks"][0];
    assert_eq!(task["rows"], named.0, "{task}");
    let walked = partitions_of(task);
    assert!(
        !walked.contains(&"public.events_2026".to_string()),
        "pruned by the cutoff parameter: {walked:?}"
    );

    let run = db.pgmaint(&["run", "old_events", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], named.0, "{task}");
    assert_eq!(common::checksum(&db, "SELECT * FROM events").await, kept);
    let archive = task["details"]["archive_table"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        common::checksum(
            &db,
            &format!("SELECT id, at, user_id, payload FROM {archive}")
        )
        .await,
        named,
        "the archive holds exactly the moved rows, as they were"
    );
}

#[tokio::test]
async fn orphans_of_a_partitioned_child_are_found_in_every_leaf_and_an_every_row_purge_asks_first()
{
    let db = events(
        "[tasks.orphan_events]\nkind = \"orphans\"\ntable = \"events\"\ncolumn = \"user_id\"\nreferences = \"users(id)\"\naction = \"delete\"\nbatch_size = 400\n\n\
         [tasks.everything]\nkind = \"purge\"\ntable = \"events\"\nwhere = \"at > '1990-01-01'\"\n",
    )
    .await;
    db.client()
        .await
        .batch_execute("DELETE FROM users WHERE id IN (3, 4)")
        .await
        .unwrap();
    let kept = common::checksum(&db, "SELECT * FROM events WHERE user_id NOT IN (3, 4)").await;
    let plan = db.pgmaint(&["plan", "orphan_events", "--json"]).await;
    plan.assert_code(0);
    let task = &plan.json()["tasks"][0];
    assert_eq!(task["rows"], 2000, "{task}");
    assert_eq!(partitions_of(task).len(), 4);
    let run = db.pgmaint(&["run", "orphan_events", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 2000);
    assert_eq!(common::checksum(&db, "SELECT * FROM events").await, kept);

    // A condition every row meets empties the parent: refused unconfirmed,
    // though no single leaf decides it.
    let plan = db.pgmaint(&["plan", "everything", "--json"]).await;
    assert_eq!(
        plan.json()["tasks"][0]["details"]["matches_every_row"],
        true
    );
    let refused = db.pgmaint(&["run", "everything"]).await;
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("matches every row of public.events")
            || refused
                .stdout
                .contains("matches every row of public.events"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert_eq!(common::checksum(&db, "SELECT * FROM events").await, kept);
    db.pgmaint(&["run", "everything", "--yes"])
        .await
        .assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn what_a_cascade_takes_from_each_leaf_is_backed_up_and_restored() {
    let db = events(&format!(
        "[backups]\ndir = \"backups\"\n\n[tasks.old_events]\nkind = \"purge\"\ntable = \"events\"\nwhere = \"{OLD}\"\nbatch_size = 500\nbackup = true\n"
    ))
    .await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, event_id bigint NOT NULL, event_at timestamptz NOT NULL,
                                 FOREIGN KEY (event_id, event_at) REFERENCES events ON DELETE CASCADE);
             INSERT INTO notes SELECT row_number() OVER (), id, at FROM events WHERE id % 3 = 0;",
        )
        .await
        .unwrap();
    let events_before = common::checksum(&db, "SELECT * FROM events").await;
    let notes_before = common::checksum(&db, "SELECT * FROM notes").await;
    let going = db
        .count(&format!(
            "SELECT count(*) FROM notes n JOIN events e ON (e.id, e.at) = (n.event_id, n.event_at) WHERE {OLD}"
        ))
        .await;
    assert!(going > 0);
    let plan = db.pgmaint(&["plan", "old_events", "--json"]).await;
    plan.assert_code(0);
    let cascade = &plan.json()["tasks"][0]["details"]["references"]["cascade"];
    let counted: u64 = cascade
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(counted as i64, going, "{cascade}");

    let run = db.pgmaint(&["run", "old_events", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    let notes_left = db.count("SELECT count(*) FROM notes").await;
    assert_eq!(notes_left, notes_before.0 - going);
    let backup = task["details"]["backup_id"].as_i64().expect("one backup");
    db.pgmaint(&["restore", &backup.to_string()])
        .await
        .assert_code(0);
    assert_eq!(
        common::checksum(&db, "SELECT * FROM events").await,
        events_before
    );
    assert_eq!(
        common::checksum(&db, "SELECT * FROM notes").await,
        notes_before
    );
}

#[tokio::test]
async fn a_cascade_of_a_partitioned_table_into_itself_is_refused_before_anything_goes() {
    let db = events(&format!(
        "[tasks.old_events]\nkind = \"purge\"\ntable = \"events\"\nwhere = \"{OLD}\"\n"
    ))
    .await;
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE events ADD COLUMN parent_id bigint, ADD COLUMN parent_at timestamptz;
             ALTER TABLE events ADD FOREIGN KEY (parent_id, parent_at) REFERENCES events ON DELETE CASCADE;",
        )
        .await
        .unwrap();
    let before = common::checksum(&db, "SELECT * FROM events").await;
    let run = db.pgmaint(&["run", "old_events"]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("foreign key into itself")
            || run.stdout.contains("foreign key into itself"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(common::checksum(&db, "SELECT * FROM events").await, before);
}

#[tokio::test]
async fn check_says_a_condition_naming_the_parent_does_not_run_on_its_partitions() {
    let db = events(
        "[tasks.qualified]\nkind = \"purge\"\ntable = \"events\"\nwhere = \"events.at < '2025-06-01'\"\n",
    )
    .await;
    let check = db.pgmaint(&["check"]).await;
    assert_eq!(check.code, 2, "{}{}", check.stdout, check.stderr);
    let text = format!("{}{}", check.stdout, check.stderr);
    assert!(text.contains("not for its partition"), "{text}");
    assert!(text.contains("write the columns unqualified"), "{text}");
    let before = common::checksum(&db, "SELECT * FROM events").await;
    db.pgmaint(&["run", "qualified"]).await;
    assert_eq!(common::checksum(&db, "SELECT * FROM events").await, before);
}

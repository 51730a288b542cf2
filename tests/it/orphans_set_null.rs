//! orphans with `action = "set_null"` against a real PostgreSQL: exactly
//! the dangling pointers are cleared (the plan's count is the run's), every
//! other value stays byte-identical, the earlier values are backed up and a
//! restore sets them back (leaving a pointer changed since alone), on
//! composite and unique keys, in batches, and on a partitioned table.

use crate::common;

use common::TestDb;

/// 3,000 sessions whose `org_id` points at 60 organisations of which the
/// odd ones are gone (interleaved on every page), some NULL already, with
/// values of awkward types beside them.
async fn sessions(task_keys: &str) -> TestDb {
    let db = TestDb::with_sql(
        "CREATE TABLE orgs (id int PRIMARY KEY);
         INSERT INTO orgs SELECT i FROM generate_series(0, 58, 2) i;
         CREATE TABLE sessions (
             id bigint PRIMARY KEY,
             org_id int,
             seen_at timestamptz NOT NULL,
             data jsonb,
             tags text[],
             note text
         );
         INSERT INTO sessions
         SELECT i, CASE WHEN i % 11 = 0 THEN NULL ELSE i % 60 END,
                timestamptz '2026-01-01 00:00:00+00' + i * interval '37 seconds',
                jsonb_build_object('n', i, 'nested', jsonb_build_array(i, 'x')),
                ARRAY['a' || i, NULL, 'quote\"d'],
                CASE WHEN i % 7 = 0 THEN NULL ELSE repeat('note ', i % 5) END
           FROM generate_series(1, 3000) i;
         ANALYZE sessions;",
    )
    .await;
    db.config(&format!(
        "[backups]\ndir = \"backups\"\n\n[tasks.stale_orgs]\nkind = \"orphans\"\ntable = \"sessions\"\ncolumn = \"org_id\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\nbatch_size = 200\n{task_keys}\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

const DANGLING: &str = "SELECT count(*) FROM sessions s WHERE org_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM orgs o WHERE o.id = s.org_id)";

#[tokio::test]
async fn set_null_clears_exactly_the_dangling_pointers_and_restore_sets_them_back() {
    let db = sessions("backup = true").await;
    let dangling = db.count(DANGLING).await;
    assert!(dangling > 1000, "{dangling}");
    let before = common::checksum(&db, "SELECT * FROM sessions").await;
    let kept = common::checksum(
        &db,
        "SELECT * FROM sessions s WHERE org_id IS NULL OR EXISTS (SELECT 1 FROM orgs o WHERE o.id = s.org_id)",
    )
    .await;
    // What the run should leave: the same rows, the dangling pointers NULL.
    let expected = common::checksum(
        &db,
        "SELECT id, CASE WHEN EXISTS (SELECT 1 FROM orgs o WHERE o.id = s.org_id) THEN org_id END AS org_id,
                seen_at, data, tags, note FROM sessions s",
    )
    .await;

    let plan = db.pgmaint(&["plan", "stale_orgs", "--json"]).await;
    plan.assert_code(0);
    let planned = &plan.json()["tasks"][0];
    assert_eq!(planned["rows"], dangling);
    assert_eq!(planned["details"]["action"], "set_null");
    assert_eq!(planned["details"]["orphans"], dangling);
    assert_eq!(planned["details"]["set_null_columns"][0], "org_id");
    assert_eq!(planned["details"]["key_columns"][0], "id");
    assert_eq!(planned["details"]["backup"], true);
    assert_eq!(
        common::checksum(&db, "SELECT * FROM sessions").await,
        before
    );
    let text = db.pgmaint(&["plan", "stale_orgs"]).await;
    text.assert_code(0);
    let flat = text.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!(
            "Would set org_id to NULL in {} rows of public.sessions whose reference has no parent row in",
            common_count(dangling)
        )),
        "{}",
        text.stdout
    );
    assert!(flat.contains("locks the rows it updates"), "{flat}");
    assert!(
        text.stdout.lines().all(|l| l.chars().count() <= 80),
        "{}",
        text.stdout
    );

    let run = db.pgmaint(&["run", "stale_orgs", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], dangling);
    assert_eq!(task["batches"], planned["batches"], "{task}");
    assert!(task["batches"].as_i64().unwrap() > 5, "{task}");
    assert_eq!(task["details"]["action"], "set_null");
    assert_eq!(db.count(DANGLING).await, 0);
    assert_eq!(db.count("SELECT count(*) FROM sessions").await, 3000);
    assert_eq!(
        common::checksum(&db, "SELECT * FROM sessions").await,
        expected
    );
    // The rows that pointed somewhere (or nowhere) are untouched.
    assert_eq!(
        common::checksum(
            &db,
            "SELECT * FROM sessions s WHERE org_id IS NOT NULL OR id % 11 = 0"
        )
        .await,
        kept
    );
    let id = task["details"]["backup_id"]
        .as_i64()
        .expect("a backup id")
        .to_string();

    let listed = db.pgmaint(&["backups", "--json"]).await;
    assert_eq!(listed.json()["backups"][0]["rows"], dangling);

    let dry = db.pgmaint(&["restore", &id, "--dry-run", "--json"]).await;
    dry.assert_code(0);
    assert_eq!(dry.json()["action"], "set_null");
    assert_eq!(dry.json()["restored"], dangling);
    assert_eq!(
        common::checksum(&db, "SELECT * FROM sessions").await,
        expected
    );

    let restore = db.pgmaint(&["restore", &id]).await;
    restore.assert_code(0);
    assert!(
        restore
            .stdout
            .contains("set back the columns set to NULL in"),
        "{}",
        restore.stdout
    );
    assert_eq!(
        common::checksum(&db, "SELECT * FROM sessions").await,
        before
    );
    // A second restore changes nothing.
    let again = db.pgmaint(&["restore", &id, "--json"]).await;
    assert_eq!(again.json()["restored"], 0);
    assert_eq!(again.json()["already_present"], dangling);
    assert_eq!(
        common::checksum(&db, "SELECT * FROM sessions").await,
        before
    );
}

/// `1,234` as pgmaint prints counts.
fn common_count(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn a_pointer_set_again_after_the_run_is_left_alone_by_restore() {
    let db = sessions("backup = true").await;
    let dangling = db.count(DANGLING).await;
    let run = db.pgmaint(&["run", "stale_orgs", "--json"]).await;
    run.assert_code(0);
    let id = run.json()["tasks"][0]["details"]["backup_id"]
        .as_i64()
        .unwrap()
        .to_string();
    // The application points two cleared sessions at live organisations,
    // and deletes a third.
    db.client()
        .await
        .batch_execute(
            "UPDATE sessions SET org_id = 2 WHERE id IN (1, 3); DELETE FROM sessions WHERE id = 5;",
        )
        .await
        .unwrap();
    let restore = db.pgmaint(&["restore", &id, "--json"]).await;
    restore.assert_code(0);
    assert_eq!(restore.json()["restored"], dangling - 3);
    assert_eq!(restore.json()["already_present"], 3);
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE id IN (1, 3) AND org_id = 2")
            .await,
        2
    );
    assert_eq!(db.count(DANGLING).await, dangling - 3);
}

#[tokio::test]
async fn without_a_backup_set_null_still_counts_exactly_and_names_no_backup() {
    let db = sessions("").await;
    let dangling = db.count(DANGLING).await;
    let plan = db.pgmaint(&["plan", "stale_orgs", "--json"]).await;
    assert_eq!(plan.json()["tasks"][0]["rows"], dangling);
    assert_eq!(plan.json()["tasks"][0]["details"]["backup"], false);
    let run = db.pgmaint(&["run", "stale_orgs"]).await;
    run.assert_code(0);
    assert!(!run.stdout.contains("backup"), "{}", run.stdout);
    assert_eq!(db.count(DANGLING).await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE org_id IS NULL")
            .await,
        dangling + 3000 / 11
    );
}

#[tokio::test]
async fn set_null_clears_a_composite_pointer_found_by_a_unique_key() {
    // No primary key: the unique key on NOT NULL `code` finds each row.
    let db = TestDb::with_sql(
        "CREATE TABLE teams (tenant int, no int, PRIMARY KEY (tenant, no));
         INSERT INTO teams SELECT t, n FROM generate_series(1, 3) t, generate_series(1, 5) n;
         CREATE TABLE members (code text NOT NULL UNIQUE, tenant int, team_no int, name text);
         INSERT INTO members SELECT 'm' || i, i % 4, i % 7, 'name ' || i FROM generate_series(1, 900) i;
         ANALYZE members;",
    )
    .await;
    db.config(
        "[backups]\ndir = \"backups\"\n\n[tasks.lost_teams]\nkind = \"orphans\"\ntable = \"members\"\ncolumn = [\"tenant\", \"team_no\"]\nreferences = \"teams(tenant, no)\"\naction = \"set_null\"\nbatch_size = 50\nbackup = true\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let dangling = db
        .count("SELECT count(*) FROM members m WHERE tenant IS NOT NULL AND team_no IS NOT NULL AND NOT EXISTS (SELECT 1 FROM teams t WHERE t.tenant = m.tenant AND t.no = m.team_no)")
        .await;
    assert!(dangling > 100, "{dangling}");
    let before = db
        .count("SELECT hashtext(string_agg(m::text, '|' ORDER BY code))::bigint FROM members m")
        .await;
    let plan = db.pgmaint(&["plan", "lost_teams", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(plan.json()["tasks"][0]["rows"], dangling);
    assert_eq!(plan.json()["tasks"][0]["details"]["key_columns"][0], "code");
    let run = db.pgmaint(&["run", "lost_teams", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], dangling);
    // Both columns of each dangling pointer are cleared, nothing else.
    assert_eq!(
        db.count("SELECT count(*) FROM members WHERE tenant IS NULL AND team_no IS NULL")
            .await,
        dangling
    );
    assert_eq!(
        db.count("SELECT count(*) FROM members WHERE (tenant IS NULL) <> (team_no IS NULL)")
            .await,
        0
    );
    let id = task["details"]["backup_id"].as_i64().unwrap().to_string();
    db.pgmaint(&["restore", &id]).await.assert_code(0);
    assert_eq!(
        db.count("SELECT hashtext(string_agg(m::text, '|' ORDER BY code))::bigint FROM members m")
            .await,
        before
    );
}

#[tokio::test]
async fn set_null_walks_each_partition_and_restores_into_the_parent() {
    let db = TestDb::with_sql(
        "CREATE TABLE orgs (id int PRIMARY KEY);
         INSERT INTO orgs SELECT i FROM generate_series(0, 18, 2) i;
         CREATE TABLE visits (id bigint, at date NOT NULL, org_id int, PRIMARY KEY (id, at))
           PARTITION BY RANGE (at);
         CREATE TABLE visits_2025 PARTITION OF visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE visits_2026 PARTITION OF visits FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         INSERT INTO visits SELECT i, date '2025-06-01' + (i % 400), i % 20 FROM generate_series(1, 2000) i;
         ANALYZE visits;",
    )
    .await;
    db.config(
        "[backups]\ndir = \"backups\"\n\n[tasks.stale]\nkind = \"orphans\"\ntable = \"visits\"\ncolumn = \"org_id\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\nbatch_size = 150\nbackup = true\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let dangling = db
        .count("SELECT count(*) FROM visits v WHERE NOT EXISTS (SELECT 1 FROM orgs o WHERE o.id = v.org_id)")
        .await;
    assert_eq!(dangling, 1000);
    let before = common::checksum(&db, "SELECT * FROM visits").await;
    let plan = db.pgmaint(&["plan", "stale", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(plan.json()["tasks"][0]["rows"], dangling);
    assert_eq!(
        plan.json()["tasks"][0]["details"]["partitions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let run = db.pgmaint(&["run", "stale", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], dangling);
    assert_eq!(
        db.count("SELECT count(*) FROM visits WHERE org_id IS NULL")
            .await,
        dangling
    );
    // Every row is still in the partition it was in.
    assert_eq!(
        db.count("SELECT count(*) FROM visits_2025").await
            + db.count("SELECT count(*) FROM visits_2026").await,
        2000
    );
    let id = task["details"]["backup_id"].as_i64().unwrap().to_string();
    db.pgmaint(&["restore", &id]).await.assert_code(0);
    assert_eq!(common::checksum(&db, "SELECT * FROM visits").await, before);
}

#[tokio::test]
async fn set_null_of_every_pointer_needs_confirmation_and_unsafe_columns_are_refused() {
    let db = TestDb::with_sql(
        "CREATE TABLE orgs (id int PRIMARY KEY);
         CREATE TABLE sessions (id int PRIMARY KEY, org_id int, code int UNIQUE);
         INSERT INTO sessions SELECT i, i, i FROM generate_series(1, 100) i;
         CREATE TABLE badges (session_code int REFERENCES sessions (code));
         CREATE TABLE hits (id int, org_id int, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id);
         CREATE TABLE hits_rest PARTITION OF hits DEFAULT;",
    )
    .await;
    db.config(
        "[tasks.every]\nkind = \"orphans\"\ntable = \"sessions\"\ncolumn = \"org_id\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    // The parent is empty: every pointer dangles. A wrong `references`
    // looks like this, so the run is refused until confirmed.
    let plan = db.pgmaint(&["plan", "every"]).await;
    plan.assert_code(0);
    let flat = plan.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(
            "matches every row of public.sessions: the run would set org_id to NULL in every row"
        ),
        "{flat}"
    );
    let refused = db.pgmaint(&["run", "every"]).await;
    refused.assert_code(1);
    let text = format!("{} {}", refused.stdout, refused.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains("would set org_id to NULL in every row") && text.contains("--yes"),
        "{text}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE org_id IS NULL")
            .await,
        0
    );
    let confirmed = db.pgmaint(&["run", "every", "--yes", "--json"]).await;
    confirmed.assert_code(0);
    assert_eq!(confirmed.json()["tasks"][0]["rows"], 100);

    // A column another table's key references, and a partition key.
    db.config(
        "[tasks.referenced]\nkind = \"orphans\"\ntable = \"sessions\"\ncolumn = \"code\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\n\n[tasks.partition_key]\nkind = \"orphans\"\ntable = \"hits\"\ncolumn = \"org_id\"\nreferences = \"orgs(id)\"\naction = \"set_null\"\n",
    );
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    let text = format!("{}{}", check.stdout, check.stderr);
    assert!(
        text.contains("column \"code\" is referenced by foreign key \"badges_session_code_fkey\" of public.badges"),
        "{text}"
    );
    assert!(
        text.contains("column \"org_id\" is part of the partition key"),
        "{text}"
    );
    let run = db.pgmaint(&["run", "referenced"]).await;
    run.assert_code(2);
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE code IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn kill_9_during_set_null_never_loses_a_value_or_saves_one_twice() {
    let db = sessions("backup = true\npause = \"30ms\"").await;
    let dangling = db.count(DANGLING).await;
    let before = common::checksum(&db, "SELECT * FROM sessions").await;
    let delays = common::kill_delays(7, 8, 120, 400);
    let kills = common::kill_after_each(
        delays,
        || db.command(&["-q", "run", "stale_orgs", "--batch-size", "60"]),
        async |_| {},
    )
    .await;
    assert!(kills >= 4, "only {kills} runs were killed mid-way");
    db.pgmaint(&["run", "stale_orgs"]).await.assert_code(0);
    assert_eq!(db.count(DANGLING).await, 0);
    // Each cleared value is in exactly one backup.
    let listed = db.pgmaint(&["backups", "--json"]).await;
    listed.assert_code(0);
    let backups = listed.json()["backups"].as_array().unwrap().clone();
    let saved: i64 = backups.iter().map(|b| b["rows"].as_i64().unwrap()).sum();
    assert_eq!(saved, dangling, "{backups:?}");
    for backup in &backups {
        let id = backup["id"].as_i64().unwrap().to_string();
        db.pgmaint(&["restore", &id]).await.assert_code(0);
    }
    assert_eq!(
        common::checksum(&db, "SELECT * FROM sessions").await,
        before
    );
}

#[tokio::test]
async fn a_pointer_the_application_sets_during_the_run_is_left_alone() {
    let db = sessions("backup = true").await;
    let dangling = db.count(DANGLING).await;
    // Session 1 points at organisation 1, which is gone. The application
    // points it at organisation 2 in a transaction that commits while the
    // run waits for the row (or before the run reaches it).
    let app = db.client().await;
    app.batch_execute("BEGIN; UPDATE sessions SET org_id = 2 WHERE id = 1")
        .await
        .unwrap();
    let run = tokio::spawn({
        let mut command = db.command(&["run", "stale_orgs", "--json"]);
        async move { command.output().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    app.batch_execute("COMMIT").await.unwrap();
    let output = run.await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["tasks"][0]["rows"], dangling - 1);
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE id = 1 AND org_id = 2")
            .await,
        1
    );
    assert_eq!(db.count(DANGLING).await, 0);
    let listed = db.pgmaint(&["backups", "--json"]).await;
    assert_eq!(listed.json()["backups"][0]["rows"], dangling - 1);
}

//! archive against a real PostgreSQL: rows move exactly once, the archive
//! table is created like the source, mismatches are refused, and kill -9 at
//! random moments never loses or duplicates a row.

use crate::common;

use std::time::Duration;

use common::TestDb;

/// 10,000 ledger entries, odd ids older than 90 days.
async fn ledger(task_keys: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE ledger (id bigint PRIMARY KEY, booked_at timestamptz NOT NULL, amount numeric(12,2), memo text);
             INSERT INTO ledger SELECT i, now() - CASE WHEN i % 2 = 1 THEN interval '100 days' ELSE interval '1 day' END,
                                       i * 1.25, CASE WHEN i % 7 = 0 THEN NULL ELSE 'memo ' || i END
               FROM generate_series(1, 10000) i;
             ANALYZE ledger;",
        )
        .await
        .unwrap();
    db.config(&format!(
        "[tasks.old_ledger]\nkind = \"archive\"\ntable = \"ledger\"\ntime_column = \"booked_at\"\nolder_than = \"90 days\"\nbatch_size = 700\n{task_keys}\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

/// A checksum over every row of the given query's rows, order-independent.
async fn checksum(db: &TestDb, rows: &str) -> (i64, i64, String) {
    let row = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT id), coalesce(md5(string_agg(r::text, '|' ORDER BY id)), '') FROM ({rows}) r"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn dry_run_changes_nothing_then_run_moves_exactly_the_matching_rows() {
    let db = ledger("archived_at = \"archived_at\"").await;
    let before = checksum(&db, "SELECT * FROM ledger").await;

    let plan = db.pgmaint(&["plan", "old_ledger", "--json"]).await;
    plan.assert_code(0);
    let task = &plan.json()["tasks"][0];
    assert_eq!(task["rows"], 5000);
    assert_eq!(task["details"]["rows_exact"], true);
    assert_eq!(task["details"]["archive_table"], "public.ledger_archive");
    assert_eq!(task["details"]["creates_archive_table"], true);
    assert_eq!(checksum(&db, "SELECT * FROM ledger").await, before);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'ledger_archive'")
            .await,
        0,
        "a dry run creates nothing"
    );

    let run = db.pgmaint(&["run", "old_ledger", "--json"]).await;
    run.assert_code(0);
    assert_eq!(run.json()["tasks"][0]["rows"], 5000);
    assert_eq!(
        db.count("SELECT count(*) FROM ledger WHERE booked_at < now() - interval '90 days'")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM ledger").await, 5000);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM ledger_archive WHERE id % 2 = 1 AND archived_at IS NOT NULL"
        )
        .await,
        5000
    );
    // Source and archive together hold the original rows, once each.
    let together = checksum(
        &db,
        "SELECT * FROM ledger UNION ALL SELECT id, booked_at, amount, memo FROM ledger_archive",
    )
    .await;
    assert_eq!(together, before);
    // Created like the source: same primary key.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indrelid = 'ledger_archive'::regclass AND indisprimary")
            .await,
        1
    );
    // Nothing left to move.
    let again = db.pgmaint(&["run", "old_ledger", "--json"]).await;
    assert_eq!(again.json()["tasks"][0]["rows"], 0);
}

#[tokio::test]
async fn an_archive_table_with_different_columns_is_refused_naming_the_differences() {
    let db = ledger("archive_table = \"ledger_old\"").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE ledger_old (id bigint PRIMARY KEY, booked_at timestamptz, amount text)",
        )
        .await
        .unwrap();
    let before = checksum(&db, "SELECT * FROM ledger").await;
    for command in ["check", "run"] {
        let out = db
            .pgmaint(&[command, "old_ledger"][..if command == "check" { 1 } else { 2 }])
            .await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("tasks.old_ledger.archive_table"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("\"amount\" is text in the archive but numeric(12,2) in the source")
                && out.stderr.contains("\"memo\" (text) is missing"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(checksum(&db, "SELECT * FROM ledger").await, before);
    assert_eq!(db.count("SELECT count(*) FROM ledger_old").await, 0);
}

/// A small deterministic generator, so the kill moments are random-looking
/// but the same on every run of the test.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test]
async fn kill_9_at_random_moments_never_loses_or_duplicates_a_row() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, payload jsonb, note text);
             INSERT INTO events SELECT i, now() - (i % 100) * interval '1 day', jsonb_build_object('n', i), md5(i::text)
               FROM generate_series(1, 200000) i;
             ANALYZE events;",
        )
        .await
        .unwrap();
    db.config(
        "[tasks.old_events]\nkind = \"archive\"\ntable = \"events\"\ntime_column = \"at\"\nolder_than = \"30 days\"\nbatch_size = 500\npause = \"20ms\"\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let before = checksum(&db, "SELECT * FROM events").await;
    let expected_moved = db
        .count("SELECT count(*) FROM events WHERE at < now() - interval '30 days'")
        .await;

    let mut random = Lcg(0x5eed);
    let delays: Vec<Duration> = (0..12)
        .map(|_| Duration::from_millis(150 + random.next(600)))
        .collect();
    let kills = common::kill_after_each(
        delays,
        || db.command(&["-q", "run", "old_events"]),
        async |kills| {
            // At every moment, every row is in exactly one of the two tables.
            let together = checksum(
                &db,
                "SELECT * FROM events UNION ALL SELECT * FROM events_archive",
            )
            .await;
            assert_eq!(together, before, "after kill {kills}");
        },
    )
    .await;
    assert!(kills >= 10, "only {kills} runs were killed mid-way");
    assert!(
        db.count("SELECT count(*) FROM events_archive").await < expected_moved,
        "the kills should have stopped the work before the end"
    );
    db.pgmaint(&["run", "old_events"]).await.assert_code(0);
    assert_eq!(
        checksum(
            &db,
            "SELECT * FROM events UNION ALL SELECT * FROM events_archive"
        )
        .await,
        before
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events_archive").await,
        expected_moved
    );
    let history = db
        .pgmaint(&["history", "--json", "--limit", "50"])
        .await
        .json();
    let interrupted = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "interrupted")
        .count();
    assert!(
        interrupted >= 10,
        "killed runs show as interrupted: {interrupted}"
    );
}

/// Every export data file in `dir` (none may be left `.partial`), loaded
/// into a new table `into` shaped like `like`; returns the manifests.
pub(crate) async fn load_exports(
    db: &TestDb,
    dir: &std::path::Path,
    into: &str,
    like: &str,
) -> Vec<serde_json::Value> {
    use futures_util::SinkExt;
    use sha2::Digest;
    use std::io::Read;
    let client = db.client().await;
    client
        .batch_execute(&format!("CREATE TABLE {into} (LIKE {like})"))
        .await
        .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
    let mut manifests = Vec::new();
    for name in names.iter().filter(|n| n.contains(".csv.")) {
        let file = std::fs::File::open(dir.join(name)).unwrap();
        let mut csv = Vec::new();
        if name.ends_with(".zst") {
            zstd::Decoder::new(file)
                .unwrap()
                .read_to_end(&mut csv)
                .unwrap();
        } else {
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut csv)
                .unwrap();
        }
        let stem = name.split(".csv.").next().unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{stem}.manifest.json"))).unwrap(),
        )
        .unwrap();
        let sha: String = sha2::Sha256::digest(&csv)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(manifest["sha256_of_csv"], sha, "{name}");
        assert_eq!(manifest["file"], name.as_str());
        let sink = client
            .copy_in(&format!("COPY {into} FROM STDIN (FORMAT csv, HEADER true)"))
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(csv)).await.unwrap();
        sink.finish().await.unwrap();
        manifests.push(manifest);
    }
    manifests
}

#[tokio::test]
async fn export_writes_checksummed_files_with_manifests_beside_the_archive_table() {
    let db = ledger("export = \"exports\"").await;
    std::fs::create_dir(db.dir.path().join("exports")).unwrap();
    let plan = db.pgmaint(&["plan", "old_ledger", "--json"]).await;
    plan.assert_code(0);
    assert_eq!(
        plan.json()["tasks"][0]["details"]["export"],
        db.dir.path().join("exports").display().to_string()
    );
    assert_eq!(
        std::fs::read_dir(db.dir.path().join("exports"))
            .unwrap()
            .count(),
        0
    );

    db.pgmaint(&["run", "old_ledger"]).await.assert_code(0);
    let manifests = load_exports(&db, &db.dir.path().join("exports"), "from_files", "ledger").await;
    let rows: u64 = manifests.iter().map(|m| m["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 5000);
    assert_eq!(manifests[0]["table"], "public.ledger");
    assert_eq!(
        manifests[0]["columns"][2],
        serde_json::json!({"name": "amount", "type": "numeric(12,2)"})
    );
    // The files hold exactly what the archive table holds.
    assert_eq!(
        checksum(&db, "SELECT * FROM from_files").await,
        checksum(&db, "SELECT * FROM ledger_archive").await
    );
}

#[tokio::test]
async fn export_only_survives_kill_9_with_every_row_in_the_table_or_one_file() {
    let db = ledger(
        "archive_table = false\nexport = \"exports\"\ncompression = \"zstd\"\npause = \"30ms\"",
    )
    .await;
    std::fs::create_dir(db.dir.path().join("exports")).unwrap();
    let path = db.dir.path().join("pgmaint.toml");
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("batch_size = 700", "batch_size = 20"),
    )
    .unwrap();
    let before = checksum(&db, "SELECT * FROM ledger").await;
    let mut random = Lcg(7);
    let delays: Vec<Duration> = (0..5)
        .map(|_| Duration::from_millis(150 + random.next(400)))
        .collect();
    let kills = common::kill_after_each(
        delays,
        || db.command(&["-q", "run", "old_ledger"]),
        async |_| {},
    )
    .await;
    assert_eq!(kills, 5, "every run should be killed mid-way");
    // The next run tidies what the kills left (.partial files), then finishes.
    db.pgmaint(&["run", "old_ledger"]).await.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM ledger").await, 5000);
    load_exports(&db, &db.dir.path().join("exports"), "from_files", "ledger").await;
    assert_eq!(
        checksum(
            &db,
            "SELECT * FROM ledger UNION ALL SELECT * FROM from_files"
        )
        .await,
        before
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = 'ledger_archive'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_missing_export_directory_is_refused_before_anything_moves() {
    let db = ledger("export = \"no/such/dir\"").await;
    let check = db.pgmaint(&["check"]).await;
    check.assert_code(2);
    assert!(
        check.stderr.contains("tasks.old_ledger.export"),
        "{}",
        check.stderr
    );
    db.pgmaint(&["run", "old_ledger"]).await.assert_code(2);
    assert_eq!(db.count("SELECT count(*) FROM ledger").await, 10000);
}

#[tokio::test]
async fn an_export_is_listed_with_its_files_and_run_and_restore_refuses_it_with_help() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            r#"CREATE TABLE "WebhookCall" (id bigint PRIMARY KEY, "createdAt" timestamp(3) NOT NULL, body text);
               INSERT INTO "WebhookCall" SELECT i, now() - CASE WHEN i <= 400 THEN interval '40 days' ELSE interval '1 day' END, 'call ' || i
                 FROM generate_series(1, 1000) i;
               CREATE TABLE tokens (id int PRIMARY KEY, used boolean NOT NULL);
               INSERT INTO tokens SELECT i, i % 4 = 0 FROM generate_series(1, 100) i;"#,
        )
        .await
        .unwrap();
    std::fs::create_dir(db.dir.path().join("exports")).unwrap();
    db.config(
        "[backups]\ndir = \"backups\"\n\n\
         [tasks.used_tokens]\nkind = \"purge\"\ntable = \"tokens\"\nwhere = \"used\"\nbackup = true\n\n\
         [tasks.old_calls]\nkind = \"archive\"\ntable = '\"WebhookCall\"'\ntime_column = '\"createdAt\"'\nolder_than = \"30 days\"\n\
         archive_table = false\nexport = \"exports\"\ncompression = \"zstd\"\nbatch_size = 150\n",
    );
    db.pgmaint(&["init"]).await.assert_code(0);
    let run = db.pgmaint(&["run", "--all", "--json"]).await;
    run.assert_code(0);
    let run = run.json();
    let run_id = run["run_id"].as_i64().unwrap();
    let archive = &run["tasks"][1];
    assert_eq!(archive["name"], "old_calls", "{run}");
    let export_id = archive["details"]["export_id"]
        .as_i64()
        .expect("an export id");
    assert!(archive["details"]["backup_id"].is_null(), "{run}");
    let backup_id = run["tasks"][0]["details"]["backup_id"].as_i64().unwrap();

    // Both are listed, each with its rows, files and run.
    let list = db.pgmaint(&["backups", "--json"]).await;
    list.assert_code(0);
    let list = list.json();
    let entries = list["backups"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    let export = entries.iter().find(|b| b["id"] == export_id).unwrap();
    assert_eq!(export["kind"], "export");
    assert_eq!(export["task"], "old_calls");
    assert_eq!(export["table"], r#"public."WebhookCall""#);
    assert_eq!(export["rows"], 400);
    assert_eq!(export["files"], 3);
    assert_eq!(export["run_id"], run_id);
    let backup = entries.iter().find(|b| b["id"] == backup_id).unwrap();
    assert_eq!(backup["kind"], "backup");
    assert_eq!(backup["rows"], 25);
    assert_eq!(backup["files"], 1);
    assert_eq!(backup["run_id"], run_id);

    // The files are named as the README says: `<schema>_<table>-<id>-<NNNNNN>`.
    let exports = db.dir.path().join("exports");
    for batch in 1..=3 {
        for suffix in ["csv.zst", "manifest.json"] {
            let name = format!("public_WebhookCall-{export_id}-{batch:06}.{suffix}");
            assert!(exports.join(&name).is_file(), "{name} is missing");
        }
    }
    assert_eq!(
        export["path"],
        format!("{}/public_WebhookCall-{export_id}-*", exports.display())
    );
    let text = db.pgmaint(&["backups"]).await;
    text.assert_code(0);
    assert!(text.stdout.contains("export"), "{}", text.stdout);

    // A restore of an export is a usage error that says what it is, and
    // records nothing.
    let runs = db.count("SELECT count(*) FROM pgmaint.runs").await;
    let refused = db.pgmaint(&["restore", &export_id.to_string()]).await;
    refused.assert_code(2);
    assert!(
        refused
            .stderr
            .contains(&format!("{export_id} is an export, not a backup")),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("help:"), "{}", refused.stderr);
    assert_eq!(db.count("SELECT count(*) FROM pgmaint.runs").await, runs);
    // The backup beside it restores.
    let restored = db
        .pgmaint(&["restore", &backup_id.to_string(), "--json"])
        .await;
    restored.assert_code(0);
    assert_eq!(restored.json()["restored"], 25);
}

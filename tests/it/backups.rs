//! Backups against a real PostgreSQL: what a purge removes comes back
//! byte-identical, a backup that cannot be written deletes nothing, kill -9
//! never loses or duplicates a row across table and backups, old backups
//! are pruned.

use crate::common;

use std::time::Duration;

use common::TestDb;
use futures_util::SinkExt;

/// Rows with every awkward value: NULLs, empty strings, quotes, commas,
/// newlines and backslashes, numerics, time zones, json, arrays, bytea.
const AWKWARD: &str = r#"
CREATE TABLE things (
    id bigint PRIMARY KEY,
    old boolean NOT NULL,
    label text,
    amount numeric,
    ratio double precision,
    at timestamptz,
    local timestamp,
    doc jsonb,
    raw json,
    tags text[],
    grid int[][],
    blob bytea,
    span interval
);
INSERT INTO things SELECT i, i % 3 <> 0,
    CASE i % 6 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'say "hi", then
leave \ now' ELSE 'plain ' || i END,
    CASE WHEN i % 5 = 0 THEN NULL ELSE 12345678901234567890.123456789 / i END,
    CASE WHEN i % 4 = 0 THEN 'NaN'::float8 ELSE 1.0 / 3 * i END,
    timestamptz '2024-03-31 01:59:59.123456+00' + i * interval '37 minutes',
    timestamp '1999-12-31 23:59:59.999999' + i * interval '1 second',
    jsonb_build_object('i', i, 'nested', jsonb_build_array(1, 'two', NULL, 'quote"d')),
    '{ "spacing" :  "kept",  "dup": 1, "dup": 2 }'::json,
    ARRAY['a,b', NULL, '', 'c"d', 'e\f'],
    ARRAY[[i, NULL], [3, 4]],
    decode('00ff' || lpad(to_hex(i), 4, '0'), 'hex'),
    i * interval '1 day 2 hours 3.5 seconds'
  FROM generate_series(1, 3000) i;
ANALYZE things;
"#;

async fn awkward_db(task_keys: &str) -> TestDb {
    let db = TestDb::with_sql(AWKWARD).await;
    db.config(&format!(
        "[backups]\ndir = \"backups\"\n\n[tasks.old_things]\nkind = \"purge\"\ntable = \"things\"\nwhere = \"old\"\nbatch_size = 400\nbackup = true\n{task_keys}\n"
    ));
    db.pgmaint(&["init"]).await.assert_code(0);
    db
}

/// Every row as PostgreSQL's own text for it, in id order, printed with
/// fixed settings so the text is comparable across server settings.
async fn rows_as_text(db: &TestDb, table: &str) -> Vec<String> {
    let client = db.client().await;
    client
        .batch_execute(
            "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC';
             SET extra_float_digits = 3; SET bytea_output = 'hex';",
        )
        .await
        .unwrap();
    client
        .query(&format!("SELECT t::text FROM {table} t ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn backup_then_restore_gives_back_byte_identical_rows() {
    let db = awkward_db("").await;
    // Server settings that change how values print must not change them.
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {0} SET DateStyle = 'SQL, DMY';
             ALTER DATABASE {0} SET IntervalStyle = 'sql_standard';
             ALTER DATABASE {0} SET TimeZone = 'America/St_Johns';
             ALTER DATABASE {0} SET extra_float_digits = 0;
             ALTER DATABASE {0} SET bytea_output = 'escape';",
            db.name
        ))
        .await
        .unwrap();
    let before = rows_as_text(&db, "things").await;

    let plan = db.pgmaint(&["plan", "old_things", "--json"]).await;
    assert_eq!(plan.json()["tasks"][0]["details"]["backup"], true);
    let run = db.pgmaint(&["run", "old_things", "--json"]).await;
    run.assert_code(0);
    let task = &run.json()["tasks"][0];
    assert_eq!(task["rows"], 2000);
    let backup_id = task["details"]["backup_id"].as_i64().expect("a backup id");
    assert_eq!(db.count("SELECT count(*) FROM things").await, 1000);
    // The restore happens under other settings than the backup: day-month
    // order flips, intervals print differently.
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {0} SET DateStyle = 'SQL, MDY';
             ALTER DATABASE {0} SET IntervalStyle = 'postgres_verbose';
             ALTER DATABASE {0} SET TimeZone = 'Asia/Kathmandu';",
            db.name
        ))
        .await
        .unwrap();

    let list = db.pgmaint(&["backups", "--json"]).await;
    list.assert_code(0);
    let entry = &list.json()["backups"][0];
    assert_eq!(entry["id"], backup_id);
    assert_eq!(entry["task"], "old_things");
    assert_eq!(entry["table"], "public.things");
    assert_eq!(entry["rows"], 2000);
    assert!(entry["path"].as_str().unwrap().contains("backups"));
    assert!(entry["created_at"].is_string());

    // A dry run counts and changes nothing.
    let id = backup_id.to_string();
    let dry = db.pgmaint(&["restore", &id, "--dry-run", "--json"]).await;
    dry.assert_code(0);
    assert_eq!(dry.json()["restored"], 2000);
    assert_eq!(db.count("SELECT count(*) FROM things").await, 1000);

    let restore = db.pgmaint(&["restore", &id, "--json"]).await;
    restore.assert_code(0);
    assert_eq!(restore.json()["restored"], 2000);
    assert_eq!(restore.json()["already_present"], 0);
    assert_eq!(rows_as_text(&db, "things").await, before);

    // Again: everything is already there, left alone and counted.
    let again = db.pgmaint(&["restore", &id, "--json"]).await;
    assert_eq!(again.json()["restored"], 0);
    assert_eq!(again.json()["already_present"], 2000);
    assert_eq!(rows_as_text(&db, "things").await, before);

    // Restores are in the audit trail.
    let history = db.pgmaint(&["history", "--json"]).await.json();
    assert_eq!(history["runs"][0]["tasks"][0]["kind"], "restore");
}

#[tokio::test]
async fn a_backup_that_cannot_be_written_deletes_nothing() {
    let db = awkward_db("").await;
    // The backup directory's place is taken by a file: nothing can be
    // created there (this fails even for root, unlike permissions).
    std::fs::write(db.dir.path().join("backups"), "not a directory").unwrap();
    let before = rows_as_text(&db, "things").await;
    let run = db.pgmaint(&["run", "old_things"]).await;
    run.assert_code(1);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("cannot write the backup to") && said.contains("nothing was removed"),
        "{said}"
    );
    assert_eq!(rows_as_text(&db, "things").await, before);
}

#[tokio::test]
async fn old_backups_are_pruned_after_a_run() {
    let db = awkward_db("").await;
    let path = db.dir.path().join("pgmaint.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("dir = \"backups\"", "dir = \"backups\"\nkeep = \"1 hour\""),
    )
    .unwrap();
    db.pgmaint(&["run", "old_things"]).await.assert_code(0);
    let first = db.pgmaint(&["backups", "--json"]).await.json();
    let old_dir = first["backups"][0]["path"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&old_dir).is_dir());
    db.client()
        .await
        .batch_execute(
            "UPDATE pgmaint.backups SET created_at = now() - interval '2 hours';
             UPDATE things SET old = true WHERE id <= 30;",
        )
        .await
        .unwrap();
    db.pgmaint(&["run", "old_things"]).await.assert_code(0);
    let list = db.pgmaint(&["backups", "--json"]).await.json();
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{list}");
    assert_eq!(backups[0]["rows"], 10);
    assert!(
        !std::path::Path::new(&old_dir).exists(),
        "the old backup's files are gone"
    );
}

/// Loads every committed backup file (those the index names) into a table.
async fn load_backups(db: &TestDb, into: &str) {
    let client = db.client().await;
    client
        .batch_execute(&format!("CREATE TABLE {into} (LIKE things)"))
        .await
        .unwrap();
    let files = client
        .query(
            "SELECT b.dir || '/' || f.file FROM pgmaint.backup_files f JOIN pgmaint.backups b ON b.id = f.backup_id",
            &[],
        )
        .await
        .unwrap();
    for file in files {
        let path: String = file.get(0);
        let mut csv = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_end(&mut csv)
            .unwrap();
        let sink = client
            .copy_in(&format!("COPY {into} FROM STDIN (FORMAT csv, HEADER true)"))
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(csv)).await.unwrap();
        sink.finish().await.unwrap();
    }
}

#[tokio::test]
async fn kill_9_during_a_purge_with_backup_never_loses_or_duplicates_a_row() {
    let db = awkward_db("pause = \"20ms\"").await;
    db.client()
        .await
        .batch_execute("INSERT INTO things SELECT i + 3000, i % 3 <> 0, 'more ' || i FROM generate_series(1, 100000) i")
        .await
        .unwrap();
    let before = rows_as_text(&db, "things").await;
    let mut seed: u64 = 42;
    let delays: Vec<Duration> = (0..10)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Duration::from_millis(150 + (seed >> 33) % 500)
        })
        .collect();
    let kills = common::kill_after_each(
        delays,
        || db.command(&["-q", "run", "old_things", "--batch-size", "200"]),
        async |_| {},
    )
    .await;
    assert!(kills >= 8, "only {kills} runs were killed mid-way");
    db.pgmaint(&["run", "old_things"]).await.assert_code(0);
    load_backups(&db, "from_backups").await;
    // Table plus backups: every original row, exactly once.
    let mut together = db
        .client()
        .await
        .query(
            "SELECT t::text FROM (SELECT * FROM things UNION ALL SELECT * FROM from_backups) t ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>();
    together.dedup();
    assert_eq!(
        db.count("SELECT (SELECT count(*) FROM things) + (SELECT count(*) FROM from_backups)")
            .await,
        before.len() as i64,
        "no row twice"
    );
    assert_eq!(together, before);
    // No file is left that the index does not name.
    let indexed = db.count("SELECT count(*) FROM pgmaint.backup_files").await;
    let on_disk: usize = std::fs::read_dir(db.dir.path().join("backups"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum();
    assert_eq!(on_disk as i64, indexed);
}

//! The predicate is law, tested on generated cases: predicates whose string
//! literals and comments hold `$N`, quotes, `--`, `/*`, parentheses, casts
//! and non-ASCII text, over tables whose rows lie in generated layouts
//! (clustered by the predicate's columns, interleaved, random, with dead
//! tuples). For purge, archive (to a table, and to export files) and
//! orphans: the dry run's count, the rows the run removes and `SELECT
//! count(*) ... WHERE predicate` beforehand agree, and the rows left are
//! exactly those the predicate does not name; orphans' `set_null` keeps
//! every row, clears exactly the orphans' references, and its restore gives
//! back every row as it was. The seed is fixed, so every run tries the
//! same cases.

use crate::common;

use std::io::Read;

use common::TestDb;
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Notes rows hold and predicates name: what a text replace or a naive
/// tokenizer would trip over.
const NOTES: &[&str] = &[
    "costs $45",
    "costs $35",
    "$1",
    "$4",
    "$3::int",
    "it's",
    "''",
    "-- not a comment",
    "/* nor this */",
    "a)b(",
    ") OR (true",
    "naïve ☃ 日本語",
    "",
    "$$dollar$$",
    "back\\slash",
    "semi;colon",
    "%_",
];

#[derive(Debug, Clone)]
enum Predicate {
    NoteIs(usize),
    NoteLike(usize),
    NoteIsNull,
    NBelow(i32),
    NAsText(i32),
    OlderThanDays(i32),
    Not(Box<Predicate>),
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    /// The predicate, then a line comment and a block comment that quote a
    /// note (so `$4`, `)` and `'` appear outside any literal too).
    Commented(Box<Predicate>, usize),
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Predicate {
    fn sql(&self) -> String {
        match self {
            Predicate::NoteIs(i) => format!("note = {}", literal(NOTES[*i])),
            Predicate::NoteLike(i) => {
                let prefix: String = NOTES[*i].chars().take(3).collect();
                format!("note LIKE {} || '%'", literal(&prefix))
            }
            Predicate::NoteIsNull => "note IS NULL".into(),
            Predicate::NBelow(k) => format!("n < {k}"),
            Predicate::NAsText(k) => format!("n::text = '{k}'"),
            Predicate::OlderThanDays(d) => format!("at < now() - interval '{d} days'"),
            Predicate::Not(p) => format!("NOT ({})", p.sql()),
            Predicate::And(a, b) => format!("({}) AND ({})", a.sql(), b.sql()),
            Predicate::Or(a, b) => format!("({}) OR\n({})", a.sql(), b.sql()),
            Predicate::Commented(p, i) => format!(
                "{} /* {} */ -- {}\n",
                p.sql(),
                NOTES[*i].replace("*/", "* /").replace("/*", "/ *"),
                NOTES[*i]
            ),
        }
    }
}

fn predicate() -> impl Strategy<Value = Predicate> {
    let note = 0..NOTES.len();
    let leaf = prop_oneof![
        note.clone().prop_map(Predicate::NoteIs),
        note.clone().prop_map(Predicate::NoteLike),
        Just(Predicate::NoteIsNull),
        (0..100i32).prop_map(Predicate::NBelow),
        (0..100i32).prop_map(Predicate::NAsText),
        (-5..30i32).prop_map(Predicate::OlderThanDays),
    ];
    leaf.prop_recursive(3, 12, 2, move |inner| {
        prop_oneof![
            inner.clone().prop_map(|p| Predicate::Not(Box::new(p))),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| Predicate::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| Predicate::Or(Box::new(a), Box::new(b))),
            (inner, 0..NOTES.len()).prop_map(|(p, i)| Predicate::Commented(Box::new(p), i)),
        ]
    })
}

/// How the rows lie in the table's pages.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// As generated: every property spread over every page.
    Random,
    /// Sorted by `n`: predicates on `n` match contiguous pages.
    ByN,
    /// Sorted by note: predicates on notes match contiguous pages.
    ByNote,
    /// Random, then every third row updated, so live rows sit among dead
    /// ones and past the table's first pages.
    Churned,
    /// Random, in a table partitioned BY RANGE (n) with a default
    /// partition: each leaf walked in turn, pruned ones skipped.
    Partitioned,
}

#[derive(Debug, Clone)]
struct Row {
    note: Option<usize>,
    n: i32,
    age_days: i32,
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (
            prop::option::weighted(0.9, 0..NOTES.len()),
            0..100i32,
            -10..40i32,
        )
            .prop_map(|(note, n, age_days)| Row { note, n, age_days }),
        1..400,
    )
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::Random),
        Just(Layout::ByN),
        Just(Layout::ByNote),
        Just(Layout::Churned),
        Just(Layout::Partitioned),
    ]
}

/// A TOML basic string holding `text` exactly.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Creates `t` with the rows in the layout's order; `analyzed` decides
/// whether the planner knows its size.
async fn load(db: &TestDb, mut rows: Vec<Row>, layout: Layout, analyzed: bool) {
    match layout {
        Layout::ByN => rows.sort_by_key(|r| r.n),
        Layout::ByNote => rows.sort_by_key(|r| r.note),
        Layout::Random | Layout::Churned | Layout::Partitioned => {}
    }
    let client = db.client().await;
    let create = if let Layout::Partitioned = layout {
        "CREATE TABLE t (id int, note text, n int NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (id, n)) PARTITION BY RANGE (n);
         CREATE TABLE t_low PARTITION OF t FOR VALUES FROM (MINVALUE) TO (30);
         CREATE TABLE t_mid PARTITION OF t FOR VALUES FROM (30) TO (60);
         CREATE TABLE t_rest PARTITION OF t DEFAULT;"
    } else {
        "CREATE TABLE t (id int PRIMARY KEY, note text, n int NOT NULL, at timestamptz NOT NULL);"
    };
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS t, t_archive, exported, parents CASCADE; {create}"
        ))
        .await
        .unwrap();
    let ids: Vec<i32> = (1..=rows.len() as i32).collect();
    let notes: Vec<Option<&str>> = rows.iter().map(|r| r.note.map(|i| NOTES[i])).collect();
    let ns: Vec<i32> = rows.iter().map(|r| r.n).collect();
    let ages: Vec<i32> = rows.iter().map(|r| r.age_days).collect();
    client
        .execute(
            "INSERT INTO t SELECT id, note, n, now() - age * interval '1 day'
               FROM unnest($1::int[], $2::text[], $3::int[], $4::int[]) u(id, note, n, age)",
            &[&ids, &notes, &ns, &ages],
        )
        .await
        .unwrap();
    if let Layout::Churned = layout {
        client
            .batch_execute("UPDATE t SET n = n WHERE id % 3 = 0")
            .await
            .unwrap();
    }
    if analyzed {
        client.batch_execute("ANALYZE t").await.unwrap();
    }
}

async fn ids(db: &TestDb, sql: &str) -> Vec<i32> {
    db.client()
        .await
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Where a removal's rows go.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Purge,
    ArchiveTable,
    ArchiveExport,
}

async fn one_removal(
    db: &TestDb,
    kind: Kind,
    predicate: &Predicate,
    rows: Vec<Row>,
    layout: Layout,
    analyzed: bool,
    batch_size: u64,
) -> Result<(), TestCaseError> {
    load(db, rows, layout, analyzed).await;
    let text = predicate.sql();
    let named = ids(
        db,
        &format!("SELECT id FROM t WHERE ({text}\n) ORDER BY id"),
    )
    .await;
    let others = ids(
        db,
        &format!("SELECT id FROM t WHERE NOT coalesce(({text}\n), false) ORDER BY id"),
    )
    .await;
    let exports = db.dir.path().join("exports");
    let _ = std::fs::remove_dir_all(&exports);
    let keys = match kind {
        Kind::Purge => "kind = \"purge\"".to_string(),
        Kind::ArchiveTable => "kind = \"archive\"".to_string(),
        Kind::ArchiveExport => {
            std::fs::create_dir(&exports).unwrap();
            "kind = \"archive\"\narchive_table = false\nexport = \"exports\"".to_string()
        }
    };
    db.config(&format!(
        "[tasks.generated]\n{keys}\ntable = \"t\"\nwhere = {}\nbatch_size = {batch_size}\n",
        toml_string(&text)
    ));
    let plan = db.pgmaint(&["plan", "--json"]).await;
    prop_assert_eq!(plan.code, 0, "plan of {}: {}", text, plan.stderr);
    let planned = &plan.json()["tasks"][0];
    prop_assert_eq!(planned["details"]["rows_exact"].as_bool(), Some(true));
    prop_assert_eq!(
        planned["rows"].as_u64(),
        Some(named.len() as u64),
        "plan of {}",
        text
    );
    let run = db.pgmaint(&["run", "generated", "--json", "--yes"]).await;
    prop_assert_eq!(run.code, 0, "run of {}: {}{}", text, run.stdout, run.stderr);
    prop_assert_eq!(
        run.json()["tasks"][0]["rows"].as_u64(),
        Some(named.len() as u64),
        "run of {}",
        text
    );
    let left = ids(db, "SELECT id FROM t ORDER BY id").await;
    prop_assert_eq!(&left, &others, "rows left after {}", text);
    let moved = match kind {
        Kind::Purge => return Ok(()),
        Kind::ArchiveTable => ids(db, "SELECT id FROM t_archive ORDER BY id").await,
        Kind::ArchiveExport => {
            load_exported(db, &exports).await;
            ids(db, "SELECT id FROM exported ORDER BY id").await
        }
    };
    prop_assert_eq!(&moved, &named, "rows moved by {}", text);
    Ok(())
}

/// Loads every export file under `dir` into a new table `exported`.
async fn load_exported(db: &TestDb, dir: &std::path::Path) {
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE exported (LIKE t)")
        .await
        .unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".partial"), "{name}");
        if !name.ends_with(".csv.gz") {
            continue;
        }
        let mut csv = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(entry.path()).unwrap())
            .read_to_end(&mut csv)
            .unwrap();
        let sink = client
            .copy_in("COPY exported FROM STDIN (FORMAT csv, HEADER true)")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(csv)).await.unwrap();
        sink.finish().await.unwrap();
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            max_shrink_iters: 64,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

fn removals(kind: Kind, cases: u32) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::new().await;
        db.config("");
        db.pgmaint(&["init"]).await.assert_code(0);
        db
    });
    let cases_strategy = (predicate(), rows(), layout(), any::<bool>(), 1..60u64);
    runner(cases)
        .run(
            &cases_strategy,
            |(predicate, rows, layout, analyzed, batch_size)| {
                runtime.block_on(one_removal(
                    &db, kind, &predicate, rows, layout, analyzed, batch_size,
                ))
            },
        )
        .unwrap();
}

#[test]
fn purge_removes_exactly_what_generated_predicates_name() {
    removals(Kind::Purge, 64);
}

#[test]
fn archive_moves_exactly_what_generated_predicates_name() {
    removals(Kind::ArchiveTable, 32);
}

#[test]
fn archive_exports_exactly_what_generated_predicates_name() {
    removals(Kind::ArchiveExport, 24);
}

/// Children with references to parents that may be gone, NULL, or there.
/// `clear` sets the orphans' references to NULL (backed up, then
/// restored) instead of deleting them.
async fn one_orphan_case(
    db: &TestDb,
    parents: Vec<bool>,
    children: Vec<Option<usize>>,
    analyzed: bool,
    batch_size: u64,
    clear: bool,
) -> Result<(), TestCaseError> {
    let client = db.client().await;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS children, parents CASCADE;
             CREATE TABLE parents (id int PRIMARY KEY);
             CREATE TABLE children (id int PRIMARY KEY, parent_id int, note text);",
        )
        .await
        .unwrap();
    let kept: Vec<i32> = parents
        .iter()
        .enumerate()
        .filter(|(_, kept)| **kept)
        .map(|(i, _)| i as i32 + 1)
        .collect();
    client
        .execute("INSERT INTO parents SELECT unnest($1::int[])", &[&kept])
        .await
        .unwrap();
    let ids: Vec<i32> = (1..=children.len() as i32).collect();
    let refs: Vec<Option<i32>> = children
        .iter()
        .map(|c| c.map(|p| (p % parents.len()) as i32 + 1))
        .collect();
    let notes: Vec<&str> = (0..children.len())
        .map(|i| NOTES[i % NOTES.len()])
        .collect();
    client
        .execute(
            "INSERT INTO children SELECT * FROM unnest($1::int[], $2::int[], $3::text[])",
            &[&ids, &refs, &notes],
        )
        .await
        .unwrap();
    if analyzed {
        client.batch_execute("ANALYZE").await.unwrap();
    }
    let orphans = self::ids(
        db,
        "SELECT id FROM children c WHERE parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM parents p WHERE p.id = c.parent_id) ORDER BY id",
    )
    .await;
    let others = self::ids(
        db,
        "SELECT id FROM children c WHERE parent_id IS NULL OR EXISTS (SELECT 1 FROM parents p WHERE p.id = c.parent_id) ORDER BY id",
    )
    .await;
    let as_text = "SELECT string_agg(c::text, '|' ORDER BY id) FROM children c";
    let before = text_of(db, as_text).await;
    let expected = text_of(
        db,
        "SELECT string_agg(c::text, '|' ORDER BY id) FROM (
           SELECT id, CASE WHEN EXISTS (SELECT 1 FROM parents p WHERE p.id = x.parent_id) THEN parent_id END AS parent_id, note
             FROM children x) c",
    )
    .await;
    let action = if clear {
        "set_null\"\nbackup = true"
    } else {
        "delete\""
    };
    db.config(&format!(
        "[backups]\ndir = \"backups\"\n\n[tasks.orphaned]\nkind = \"orphans\"\ntable = \"children\"\ncolumn = \"parent_id\"\nreferences = \"parents(id)\"\naction = \"{action}\nbatch_size = {batch_size}\n"
    ));
    let plan = db.pgmaint(&["plan", "--json"]).await;
    prop_assert_eq!(plan.code, 0, "{}", plan.stderr);
    prop_assert_eq!(
        plan.json()["tasks"][0]["rows"].as_u64(),
        Some(orphans.len() as u64)
    );
    let run = db.pgmaint(&["run", "orphaned", "--json", "--yes"]).await;
    prop_assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    prop_assert_eq!(
        run.json()["tasks"][0]["rows"].as_u64(),
        Some(orphans.len() as u64)
    );
    if !clear {
        prop_assert_eq!(
            self::ids(db, "SELECT id FROM children ORDER BY id").await,
            others
        );
        return Ok(());
    }
    // Every row stays; exactly the orphans lost their reference.
    prop_assert_eq!(text_of(db, as_text).await, expected);
    if let Some(id) = run.json()["tasks"][0]["details"]["backup_id"].as_i64() {
        let restore = db.pgmaint(&["restore", &id.to_string()]).await;
        prop_assert_eq!(restore.code, 0, "{}", restore.stderr);
    }
    prop_assert_eq!(text_of(db, as_text).await, before);
    Ok(())
}

/// The one text value `sql` returns (NULL as empty).
async fn text_of(db: &TestDb, sql: &str) -> String {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
}

#[test]
fn orphans_removes_exactly_the_children_whose_parent_is_gone() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::new().await;
        db.config("");
        db.pgmaint(&["init"]).await.assert_code(0);
        db
    });
    let cases = (
        prop::collection::vec(any::<bool>(), 1..60),
        prop::collection::vec(prop::option::weighted(0.85, 0..1000usize), 1..400),
        any::<bool>(),
        1..60u64,
        any::<bool>(),
    );
    runner(32)
        .run(
            &cases,
            |(parents, children, analyzed, batch_size, clear)| {
                runtime.block_on(one_orphan_case(
                    &db, parents, children, analyzed, batch_size, clear,
                ))
            },
        )
        .unwrap();
}

/// What a child table's foreign key does when its parent row goes.
#[derive(Debug, Clone, Copy)]
enum ChildKey {
    NoAction,
    Cascade,
    SetNull,
}

/// A purge of `t` that other rows reference: generated predicates over
/// generated layouts, with a child table whose key is NO ACTION, CASCADE
/// or SET NULL. The plan and the run remove exactly the named rows no
/// NO ACTION child still references; children go, or lose their
/// reference, exactly for the parents removed.
async fn one_referenced_removal(
    db: &TestDb,
    predicate: &Predicate,
    rows: Vec<Row>,
    children: Vec<Option<usize>>,
    key: ChildKey,
    batch_size: u64,
) -> Result<(), TestCaseError> {
    load(db, rows.clone(), Layout::Random, true).await;
    let action = match key {
        ChildKey::NoAction => "",
        ChildKey::Cascade => " ON DELETE CASCADE",
        ChildKey::SetNull => " ON DELETE SET NULL",
    };
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS kids; CREATE TABLE kids (id int PRIMARY KEY, t_id int REFERENCES t (id){action});"
        ))
        .await
        .unwrap();
    let kid_ids: Vec<i32> = (1..=children.len() as i32).collect();
    let refs: Vec<Option<i32>> = children
        .iter()
        .map(|c| c.map(|p| (p % rows.len()) as i32 + 1))
        .collect();
    client
        .execute(
            "INSERT INTO kids SELECT * FROM unnest($1::int[], $2::int[])",
            &[&kid_ids, &refs],
        )
        .await
        .unwrap();
    let text = predicate.sql();
    let kept_by_kids = match key {
        ChildKey::NoAction => " AND NOT EXISTS (SELECT 1 FROM kids k WHERE k.t_id = t.id)",
        _ => "",
    };
    let removed = ids(
        db,
        &format!("SELECT id FROM t WHERE ({text}\n){kept_by_kids} ORDER BY id"),
    )
    .await;
    let left_expected = ids(
        db,
        &format!(
            "SELECT id FROM t WHERE NOT (coalesce(({text}\n), false){kept_by_kids}) ORDER BY id"
        ),
    )
    .await;
    let kids_untouched = ids(
        db,
        &format!(
            "SELECT id FROM kids WHERE t_id IS NULL OR t_id <> ALL ('{{{}}}'::int[]) ORDER BY id",
            removed
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .await;
    db.config(&format!(
        "[tasks.generated]\nkind = \"purge\"\ntable = \"t\"\nwhere = {}\nbatch_size = {batch_size}\n",
        toml_string(&text)
    ));
    let plan = db.pgmaint(&["plan", "--json"]).await;
    prop_assert_eq!(plan.code, 0, "plan of {}: {}", text, plan.stderr);
    prop_assert_eq!(
        plan.json()["tasks"][0]["rows"].as_u64(),
        Some(removed.len() as u64),
        "plan of {} ({:?})",
        text,
        key
    );
    let run = db.pgmaint(&["run", "generated", "--json", "--yes"]).await;
    prop_assert_eq!(run.code, 0, "run of {}: {}{}", text, run.stdout, run.stderr);
    prop_assert_eq!(
        run.json()["tasks"][0]["rows"].as_u64(),
        Some(removed.len() as u64),
        "run of {} ({:?})",
        text,
        key
    );
    prop_assert_eq!(
        &ids(db, "SELECT id FROM t ORDER BY id").await,
        &left_expected
    );
    match key {
        ChildKey::NoAction => prop_assert_eq!(
            db.count("SELECT count(*) FROM kids").await,
            children.len() as i64
        ),
        ChildKey::Cascade => prop_assert_eq!(
            &ids(db, "SELECT id FROM kids ORDER BY id").await,
            &kids_untouched
        ),
        ChildKey::SetNull => {
            // Every kid stays; exactly those of removed parents lost their reference.
            prop_assert_eq!(
                db.count("SELECT count(*) FROM kids").await,
                children.len() as i64
            );
            let still_pointing: Vec<i32> = kids_untouched
                .iter()
                .copied()
                .filter(|k| refs[*k as usize - 1].is_some())
                .collect();
            prop_assert_eq!(
                &ids(db, "SELECT id FROM kids WHERE t_id IS NOT NULL ORDER BY id").await,
                &still_pointing
            );
        }
    }
    Ok(())
}

#[test]
fn purge_of_referenced_rows_removes_exactly_the_named_rows_nothing_still_references() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::new().await;
        db.config("");
        db.pgmaint(&["init"]).await.assert_code(0);
        db
    });
    let cases = (
        predicate(),
        rows(),
        prop::collection::vec(prop::option::weighted(0.8, 0..400usize), 0..200),
        prop_oneof![
            Just(ChildKey::NoAction),
            Just(ChildKey::Cascade),
            Just(ChildKey::SetNull)
        ],
        1..60u64,
    );
    runner(30)
        .run(&cases, |(predicate, rows, children, key, batch_size)| {
            runtime.block_on(one_referenced_removal(
                &db, &predicate, rows, children, key, batch_size,
            ))
        })
        .unwrap();
}

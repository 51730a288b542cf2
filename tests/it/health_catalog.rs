//! The shapes of a large production schema (issue #14): a generated catalog
//! of hundreds of tables, partitioned ones with a default partition, and
//! indexes of every kind that are not duplicates of each other, beside a
//! few that are. The health run finishes in seconds, no check fails, and
//! duplicate-indexes names exactly the true duplicates.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::TestDb;

use common::health_check as check;

/// Plain tables in the catalog, spread over `SCHEMAS` schemas.
pub const TABLES: usize = 300;
const SCHEMAS: usize = 3;
/// Partitioned tables, each with two ranges and a default partition.
const PARTITIONED: usize = 4;

/// Checks that report unknown on a fresh cluster, and why.
const LACKING: &[(&str, &str)] = &[
    ("slow-queries", "pg_stat_statements is not installed"),
    ("size-growth", "no snapshots in the last"),
];

/// One plain table and its indexes, none redundant to another.
fn table_sql(i: usize, trgm: bool) -> String {
    let t = format!("s{}.t{i}", i % SCHEMAS);
    let n = format!("t{i}");
    let mut sql = format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, a int, b int, c text, d text, status text,
                           j jsonb, r tsrange, created timestamptz);
         CREATE INDEX {n}_a_open ON {t} (a) WHERE status = 'open';
         CREATE INDEX {n}_a_closed ON {t} (a) WHERE status = 'closed';
         CREATE INDEX {n}_a_b ON {t} (a, b);
         CREATE INDEX {n}_a_b_desc ON {t} (a, b DESC);
         CREATE INDEX {n}_lower_c ON {t} (lower(c));
         CREATE INDEX {n}_upper_c ON {t} (upper(c));
         CREATE INDEX {n}_c_pattern ON {t} (c text_pattern_ops);
         CREATE INDEX {n}_c_collate ON {t} (c COLLATE \"C\");
         CREATE INDEX {n}_c ON {t} (c);
         CREATE INDEX {n}_b_incl_c ON {t} (b) INCLUDE (c);
         CREATE INDEX {n}_b_incl_d ON {t} (b) INCLUDE (d);
         CREATE UNIQUE INDEX {n}_d_unique ON {t} (d);
         CREATE INDEX {n}_d_a ON {t} (d, a);
         CREATE UNIQUE INDEX {n}_id_a_unique ON {t} (id, a);
         CREATE INDEX {n}_j_gin ON {t} USING gin (j);
         CREATE INDEX {n}_j_path ON {t} USING gin (j jsonb_path_ops);
         CREATE INDEX {n}_j_btree ON {t} (j);
         CREATE INDEX {n}_r_gist ON {t} USING gist (r);
         CREATE INDEX {n}_r_btree ON {t} (r);
         CREATE INDEX {n}_created_brin ON {t} USING brin (created);
         CREATE INDEX {n}_created ON {t} (created);
         CREATE INDEX {n}_created_desc ON {t} (created DESC NULLS LAST);
         CREATE INDEX {n}_d_hash ON {t} USING hash (d);
         CREATE INDEX {n}_lower_c_open ON {t} (lower(c)) WHERE status = 'open';"
    );
    if trgm {
        sql.push_str(&format!(
            "CREATE INDEX {n}_c_trgm ON {t} USING gin (c gin_trgm_ops);
             CREATE INDEX {n}_c_trgm_gist ON {t} USING gist (c gist_trgm_ops);"
        ));
    }
    sql
}

/// One partitioned table: indexes on the parent reach every partition,
/// the default one too, and one partition has an index of its own.
fn partitioned_sql(k: usize) -> String {
    let t = format!("s0.p{k}");
    let n = format!("p{k}");
    format!(
        "CREATE TABLE {t} (id int, a int, b int, c text, status text, j jsonb, created timestamptz NOT NULL,
                           PRIMARY KEY (id, created)) PARTITION BY RANGE (created);
         CREATE TABLE s0.{n}_2024 PARTITION OF {t} FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE s0.{n}_2025 PARTITION OF {t} FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE s0.{n}_default PARTITION OF {t} DEFAULT;
         CREATE INDEX {n}_a ON {t} (a);
         CREATE INDEX {n}_b_a_desc ON {t} (b, a DESC);
         CREATE INDEX {n}_a_open ON {t} (a) WHERE status = 'open';
         CREATE INDEX {n}_lower_c ON {t} (lower(c));
         CREATE INDEX {n}_j ON {t} USING gin (j);
         CREATE INDEX {n}_2025_b_incl_c ON s0.{n}_2025 (b) INCLUDE (c);
         INSERT INTO {t} (id, a, b, c, status, created)
              SELECT g, g % 7, g % 11, 'c' || g, 'open', timestamptz '2024-06-01' + g * interval '1 day'
                FROM generate_series(1, 900) g;"
    )
}

/// The true duplicates, each as `pgmaint health` names it, and the SQL
/// that makes it. Each is redundant by the check's own definition.
fn true_duplicates() -> Vec<(String, String)> {
    let on = |i: usize| format!("s{}.t{i}", i % SCHEMAS);
    let dup = |name: &str, table: String, def: &str| {
        let schema = table.split('.').next().unwrap().to_string();
        (
            format!("{schema}.{name} on {table}"),
            format!("CREATE {def}"),
        )
    };
    vec![
        // The same definition again.
        dup(
            "dup_t0_a_b",
            on(0),
            &format!("INDEX dup_t0_a_b ON {} (a, b)", on(0)),
        ),
        // A leading prefix of a plain B-tree with no predicate.
        dup(
            "dup_t1_a",
            on(1),
            &format!("INDEX dup_t1_a ON {} (a)", on(1)),
        ),
        // A unique index again.
        dup(
            "dup_t2_d",
            on(2),
            &format!("UNIQUE INDEX dup_t2_d ON {} (d)", on(2)),
        ),
        // The same expression again.
        dup(
            "dup_t5_lower",
            on(5),
            &format!("INDEX dup_t5_lower ON {} (lower(c))", on(5)),
        ),
        // The same predicate again.
        dup(
            "dup_t7_open",
            on(7),
            &format!("INDEX dup_t7_open ON {} (a) WHERE status = 'open'", on(7)),
        ),
        // A key the INCLUDE index already has first.
        dup(
            "dup_t8_b",
            on(8),
            &format!("INDEX dup_t8_b ON {} (b)", on(8)),
        ),
        // On a partition, the parent's index again.
        dup(
            "dup_p0_2024_a",
            "s0.p0_2024".into(),
            "INDEX dup_p0_2024_a ON s0.p0_2024 (a)",
        ),
    ]
}

#[tokio::test]
async fn a_large_catalog_of_every_index_kind_has_only_its_true_duplicates_reported_in_seconds() {
    let db = TestDb::new().await;
    let setup = db.client().await;
    let trgm = setup
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await
        .is_ok();
    for s in 0..SCHEMAS {
        setup
            .batch_execute(&format!("CREATE SCHEMA s{s}"))
            .await
            .unwrap();
    }
    let built = Instant::now();
    for i in 0..TABLES {
        setup.batch_execute(&table_sql(i, trgm)).await.unwrap();
    }
    for k in 0..PARTITIONED {
        setup.batch_execute(&partitioned_sql(k)).await.unwrap();
    }
    let expected = true_duplicates();
    for (_, sql) in &expected {
        setup.batch_execute(sql).await.unwrap();
    }
    setup.batch_execute("ANALYZE").await.unwrap();
    let built = built.elapsed();
    let counts = setup
        .query_one(
            "SELECT count(*) FILTER (WHERE relkind IN ('r', 'p')), count(*) FILTER (WHERE relkind IN ('i', 'I'))
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE 's_'",
            &[],
        )
        .await
        .unwrap();
    let (tables, indexes): (i64, i64) = (counts.get(0), counts.get(1));
    assert!(
        tables >= TABLES as i64 && indexes >= 25 * TABLES as i64,
        "{tables} {indexes}"
    );

    db.config("");
    db.pgmaint(&["init"]).await.assert_code(0);
    let started = Instant::now();
    let run = db.pgmaint(&["health", "--json"]).await;
    let took = started.elapsed();
    let report = run.json();
    eprintln!(
        "catalog: {tables} tables, {indexes} indexes (pg_trgm: {trgm}), built in {built:?}; \
         pgmaint health took {took:?}"
    );

    for c in report["checks"].as_array().unwrap() {
        // Unknown is allowed only for what this fresh cluster lacks, and
        // never for a failure or a timeout.
        let summary = c["summary"].as_str().unwrap();
        let absent = LACKING
            .iter()
            .any(|(name, why)| c["name"] == *name && summary.contains(why));
        assert!(
            c["status"] != "unknown" || absent,
            "every check runs on a large catalog: {c}"
        );
    }
    let found: BTreeSet<String> = check(&report, "duplicate-indexes")["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["object"].as_str().unwrap().to_string())
        .collect();
    let wanted: BTreeSet<String> = expected.into_iter().map(|(o, _)| o).collect();
    assert_eq!(
        found,
        wanted,
        "exactly the true duplicates: {}",
        check(&report, "duplicate-indexes")
    );
    assert!(
        took < Duration::from_secs(10),
        "pgmaint health on {indexes} indexes took {took:?}"
    );
}

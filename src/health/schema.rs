//! Indexes, constraints and sequences: invalid indexes and constraints,
//! duplicate indexes, unused ones, tables that look like they miss one, and
//! sequences close to the maximum of the column they feed.

use super::{
    Check, CheckContext, CheckName, Finding, Outcome, found, has_extension, human_bytes, measured,
    percent,
};
use crate::unnamed::Unnamed;

pub(super) struct Sequences;

impl Check for Sequences {
    fn name(&self) -> CheckName {
        CheckName::Sequences
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        // The usable maximum is the smaller of the sequence's own and the
        // maximum of every column it feeds (owned by, identity, or a default).
        let rows = ctx
            .client
            .rows(
                "WITH seqs AS (
                 SELECT s.oid, format('%I.%I', n.nspname, s.relname) AS name, ps.last_value::float8 AS last, ps.max_value::float8 AS seq_max
                   FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
                   JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = s.relname
                  WHERE s.relkind = 'S' AND ps.last_value IS NOT NULL),
             feeds AS (
                 SELECT d.objid AS seq, a.attrelid, a.atttypid
                   FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
                 UNION
                 SELECT d.refobjid, a.attrelid, a.atttypid
                   FROM pg_depend d JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                   JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                  WHERE d.refclassid = 'pg_class'::regclass)
             SELECT s.name, s.last, least(s.seq_max, coalesce(min(CASE f.atttypid WHEN 'int2'::regtype THEN 32767
                                                                                WHEN 'int4'::regtype THEN 2147483647
                                                                                ELSE 9223372036854775807 END)::float8, s.seq_max)),
                    coalesce(string_agg(DISTINCT (SELECT format('%I.%I', fn.nspname, fc.relname) FROM pg_class fc JOIN pg_namespace fn ON fn.oid = fc.relnamespace WHERE fc.oid = f.attrelid) || ' (' || format_type(f.atttypid, NULL) || ')', ', '), ''),
                    s.seq_max, coalesce(bool_or(f.atttypid IN ('int2'::regtype, 'int4'::regtype)), false)
               FROM seqs s LEFT JOIN feeds f ON f.seq = s.oid
              GROUP BY s.oid, s.name, s.last, s.seq_max",
                &[],
            )
            .await?;
        let findings = rows
            .iter()
            .map(|r| {
                let (last, max): (f64, f64) = (r.get(1), r.get(2));
                let feeds: String = r.get(3);
                let object = if feeds.is_empty() { r.get::<_, String>(0) } else { format!("{} feeding {feeds}", r.get::<_, String>(0)) };
                let (seq_max, narrow): (f64, bool) = (r.get(4), r.get(5));
                // What runs out first decides what to do: a column narrower
                // than bigint, the sequence's own MAXVALUE, or bigint itself.
                let advice = if narrow {
                    "widen the column and its sequence to bigint (ALTER TABLE ... ALTER COLUMN ... TYPE bigint; ALTER SEQUENCE ... AS bigint) before the sequence runs out"
                } else if seq_max < 9.2e18 {
                    "the sequence's own MAXVALUE is the limit: raise it (ALTER SEQUENCE ... AS bigint MAXVALUE ...) before nextval fails"
                } else {
                    "bigint itself runs out: plan a new key range (ALTER SEQUENCE ... MINVALUE ... RESTART on negative values) or a new key (uuid)"
                };
                let mut f = measured(ctx, object, last / max, percent, advice);
                f.value = format!("{} used ({last:.0} of {max:.0})", percent(last / max));
                f
            })
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

pub(super) struct InvalidIndexes;

impl Check for InvalidIndexes {
    fn name(&self) -> CheckName {
        CheckName::InvalidIndexes
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let rows = ctx
            .client
            .rows(
                "SELECT format('%I.%I', n.nspname, ic.relname), format('%I.%I', n.nspname, tc.relname), pg_relation_size(i.indexrelid)::float8
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class tc ON tc.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = tc.relnamespace
              WHERE NOT i.indisvalid
                AND i.indexrelid NOT IN (SELECT index_relid FROM pg_stat_progress_create_index)",
                &[],
            )
            .await?;
        let findings = rows
            .iter()
            .map(|r| found(ctx, format!("{} on {}", r.get::<_, String>(0), r.get::<_, String>(1)), human_bytes(r.get(2)),
                "a failed CREATE INDEX CONCURRENTLY or REINDEX left it: it is maintained on every write but never used. Rebuild it (a `reindex` task does) or drop it"))
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

pub(super) struct InvalidConstraints;

impl Check for InvalidConstraints {
    fn name(&self) -> CheckName {
        CheckName::InvalidConstraints
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let rows = ctx
            .client
            .rows(
                "SELECT CASE WHEN c.conrelid <> 0 THEN format('%I.%I', n.nspname, r.relname) ELSE format('domain %I.%I', n.nspname, d.typname) END,
                        quote_ident(c.conname), c.contype::text
               FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
               LEFT JOIN pg_class r ON r.oid = c.conrelid LEFT JOIN pg_type d ON d.oid = c.contypid
              WHERE NOT c.convalidated AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                &[],
            )
            .await?;
        let findings = rows
            .iter()
            .map(|r| {
                let on: String = r.get(0);
                let advice = if on.starts_with("domain ") {
                    "existing values are not checked: run ALTER DOMAIN ... VALIDATE CONSTRAINT"
                } else {
                    "existing rows are not checked: run ALTER TABLE ... VALIDATE CONSTRAINT (it takes only a SHARE UPDATE EXCLUSIVE lock)"
                };
                found(ctx, format!("{} on {on}", r.get::<_, String>(1)), "NOT VALID".into(), advice)
            })
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

pub(super) struct DuplicateIndexes;

impl Check for DuplicateIndexes {
    fn name(&self) -> CheckName {
        CheckName::DuplicateIndexes
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        // `a` is redundant when `b` is on the same table with the same access
        // method, predicate and expressions, and a's key columns (each with
        // its operator class, collation and order) are b's key columns, or
        // for B-tree a leading prefix of them; a's INCLUDE columns are among
        // b's columns; and a unique `a` only when `b` is unique on the same
        // key. Of two that are each other's duplicate, the newer is reported;
        // an index covered by several is reported once.
        let rows = ctx
            .client
            .rows(
                "WITH ix AS (
                 SELECT i.indexrelid AS oid, i.indrelid AS rel, c.relam AS am, i.indisunique AS uniq,
                        coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS pred,
                        coalesce(pg_get_expr(i.indexprs, i.indrelid), '') AS exprs,
                        ARRAY(SELECT concat_ws('/', u.k, u.cl, u.co, u.op)
                                FROM unnest(string_to_array(i.indkey::text, ' '), string_to_array(i.indclass::text, ' '),
                                            string_to_array(i.indcollation::text, ' '), string_to_array(i.indoption::text, ' '))
                                     WITH ORDINALITY AS u(k, cl, co, op, n)
                               WHERE u.n <= i.indnkeyatts ORDER BY u.n) AS keys,
                        (string_to_array(i.indkey::text, ' '))[i.indnkeyatts + 1:i.indnatts] AS incl,
                        string_to_array(i.indkey::text, ' ') AS cols
                   FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indexrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg_toast%'
               ), pair AS (
                 SELECT a.oid AS a, b.oid AS b, a.rel,
                        (b.keys = a.keys AND b.incl <@ a.cols AND (NOT b.uniq OR a.uniq)) AS mutual
                   FROM ix a JOIN ix b ON b.rel = a.rel AND b.am = a.am AND b.keys[1] = a.keys[1] AND b.oid <> a.oid
                  WHERE a.pred = b.pred AND a.exprs = b.exprs
                    AND (a.keys = b.keys
                         OR (a.am = (SELECT oid FROM pg_am WHERE amname = 'btree')
                             AND cardinality(a.keys) < cardinality(b.keys)
                             AND a.keys = b.keys[1:cardinality(a.keys)]))
                    AND a.incl <@ b.cols
                    AND (NOT a.uniq OR (b.uniq AND a.keys = b.keys))
               )
               , named AS (
                 SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               )
               SELECT * FROM (
                 SELECT DISTINCT ON (a) na.name, nb.name AS covered_by, nt.name AS tab,
                        pg_relation_size(a)::float8
                   FROM pair
                   JOIN named na ON na.oid = pair.a
                   JOIN named nb ON nb.oid = pair.b
                   JOIN named nt ON nt.oid = pair.rel
                  WHERE NOT mutual OR a > b ORDER BY a, b
               ) d ORDER BY 3, 1",
                &[],
            )
            .await?;
        let findings = rows
            .iter()
            .map(|r| found(ctx, format!("{} on {}", r.get::<_, String>(0), r.get::<_, String>(2)), human_bytes(r.get(3)),
                &format!("{} covers the same columns first; drop {} in the migration that made it when migrations manage the schema (a bare DROP INDEX makes the ORM's schema drift), or else DROP INDEX CONCURRENTLY {}", r.get::<_, String>(1), r.get::<_, String>(0), r.get::<_, String>(0))))
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

/// Sizes come from pg_class.relpages (kept by VACUUM and ANALYZE): asking
/// the file system for 20,000 indexes' sizes takes a second.
pub(super) struct UnusedIndexes;

impl Check for UnusedIndexes {
    fn name(&self) -> CheckName {
        CheckName::UnusedIndexes
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let min_size = ctx.thresholds.warning.unwrap_or(0.0);
        let since: Option<String> = ctx
            .client
            .row(
                "SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await?
            .get(0);
        let rows = ctx
            .client
            .rows(
                "SELECT format('%I.%I', s.schemaname, s.indexrelname), format('%I.%I', s.schemaname, s.relname),
                    c.relpages::float8 * current_setting('block_size')::float8
               FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
               JOIN pg_class c ON c.oid = s.indexrelid
              WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid
                AND c.relpages::float8 * current_setting('block_size')::float8 >= $1
              ORDER BY 3 DESC",
                &[&min_size],
            )
            .await?;
        let findings: Vec<Finding> = rows
            .iter()
            .map(|r| {
                let mut f = found(ctx, format!("{} on {}", r.get::<_, String>(0), r.get::<_, String>(1)), human_bytes(r.get(2)),
                    "never scanned since the statistics were reset: check replicas too, then drop it (DROP INDEX CONCURRENTLY)");
                f.threshold = format!("unused and at least {}", human_bytes(min_size));
                f
            })
            .collect();
        let summary = format!(
            "{} unused index(es) of {} or more since {}",
            findings.len(),
            human_bytes(min_size),
            since.unwrap_or_else(|| "the statistics began".into())
        );
        Ok(Outcome::Findings(findings, Some(summary)))
    }
}

pub(super) struct MissingIndexes;

impl Check for MissingIndexes {
    fn name(&self) -> CheckName {
        CheckName::MissingIndexes
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        // Large tables read mostly by sequential scans that each read many rows.
        let rows = ctx
            .client
            .rows(
                "SELECT format('%I.%I', schemaname, relname), relname::text, seq_scan::float8, coalesce(idx_scan, 0)::float8,
                    (seq_tup_read / greatest(seq_scan, 1))::float8, n_live_tup::float8
               FROM pg_stat_user_tables
              WHERE n_live_tup >= 10000 AND seq_scan >= 10
                AND seq_scan > 0.95 * (seq_scan + coalesce(idx_scan, 0))
                AND seq_tup_read / greatest(seq_scan, 1) >= 1000
              ORDER BY seq_tup_read DESC LIMIT 20",
                &[],
            )
            .await?;
        let statements = has_extension(ctx.client, "pg_stat_statements").await?;
        let mut findings = Vec::new();
        for r in &rows {
            let table: String = r.get(0);
            let mut advice = "most reads are sequential scans: find the queries behind them and index their WHERE columns".to_string();
            if statements {
                let queries = ctx
                    .client
                    .rows(
                        "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 120) FROM pg_stat_statements
                      WHERE query ILIKE '%' || $1 || '%' ORDER BY total_exec_time DESC LIMIT 3",
                        &[&r.get::<_, String>(1)],
                    )
                    .await
                    .map(|rows| rows.iter().map(|q| q.get::<_, String>(0)).collect::<Vec<_>>())
                    .unwrap_or_default();
                if !queries.is_empty() {
                    advice = format!(
                        "{advice}; the busiest queries on it: {}",
                        queries.join(" | ")
                    );
                }
            } else {
                advice.push_str(" (install pg_stat_statements to see them here)");
            }
            let value = format!(
                "{:.0} sequential scans reading {:.0} rows each, {:.0} index scans, {:.0} rows",
                r.get::<_, f64>(2),
                r.get::<_, f64>(4),
                r.get::<_, f64>(3),
                r.get::<_, f64>(5)
            );
            let mut f = found(ctx, table, value, &advice);
            f.threshold = "tables of 10000+ rows with 10+ sequential scans of 1000+ rows each, 95% of their scans".into();
            findings.push(f);
        }
        Ok(Outcome::Findings(findings, None))
    }
}

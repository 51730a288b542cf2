//! Tables and their indexes: cache hit ratio, dead rows past the autovacuum
//! threshold, the age of the last vacuum and analyze, and bloat (estimated
//! from the planner's statistics, or with `--exact` measured by pgstattuple
//! within a time budget; each figure says which).

use crate::unnamed::Unnamed;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{
    Check, CheckContext, CheckName, Level, Outcome, has_extension, human_bytes, measured, percent,
    seconds,
};
use crate::store;

/// Bloat is only worth reporting for relations at least this big.
const BLOAT_MIN_BYTES: i64 = 10 << 20;
/// `--exact` measures for at most this long, then estimates the rest.
// Sizes are pg_class.relpages (kept by VACUUM and ANALYZE, with the
// reltuples the expected size comes from), never pg_relation_size: that
// asks the file system, slowly across 20,000 relations, and waits for a
// lock on each relation, so one table a migration holds ACCESS EXCLUSIVE
// made the whole check unknown (check_postgres's bloat, reading relpages,
// still reported).
const EXACT_BUDGET: Duration = Duration::from_secs(10);

pub(super) struct CacheHit;

impl Check for CacheHit {
    fn name(&self) -> CheckName {
        CheckName::CacheHit
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let row = ctx
            .client
            .row(
                "SELECT coalesce(sum(heap_blks_hit), 0)::float8, coalesce(sum(heap_blks_read), 0)::float8,
                    coalesce(sum(idx_blks_hit), 0)::float8, coalesce(sum(idx_blks_read), 0)::float8
               FROM pg_statio_user_tables",
                &[],
            )
            .await?;
        let mut findings = Vec::new();
        for (object, hit, read) in [
            ("tables", row.get::<_, f64>(0), row.get::<_, f64>(1)),
            ("indexes", row.get(2), row.get(3)),
        ] {
            if hit + read < 1000.0 {
                continue; // too few reads to say anything
            }
            let mut f = measured(
                ctx,
                object.into(),
                hit / (hit + read),
                percent,
                "the working set does not fit in shared_buffers: raise shared_buffers (about 25% of RAM), or find the queries reading the most",
            );
            f.threshold.push_str("; judged from 1000 block reads on");
            findings.push(f);
        }
        let summary = if findings.is_empty() {
            Some("too few reads since the statistics were reset to judge".into())
        } else {
            None
        };
        Ok(Outcome::Findings(findings, summary))
    }
}

pub(super) struct DeadTuples;

/// Dead rows below this many are never worth a finding, whatever the
/// table's autovacuum threshold (a small table's threshold is 50 rows).
pub(crate) const DEAD_MIN_ROWS: i64 = 1000;
/// A table a pgmaint task removed rows from this recently is left to
/// autovacuum: it looks at each table once per `autovacuum_naptime` (1
/// minute by default), more slowly with many databases.
pub(crate) const RECENT_REMOVAL_SECONDS: f64 = 15.0 * 60.0;

impl Check for DeadTuples {
    fn name(&self) -> CheckName {
        CheckName::DeadTuples
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let low = ctx.thresholds.warning.unwrap_or(1.0);
        let rows = ctx
            .client
            .rows(
                "SELECT * FROM (
                 SELECT format('%I.%I', s.schemaname, s.relname) AS name, s.n_dead_tup::float8 AS dead,
                        coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_vacuum_threshold'),
                                 current_setting('autovacuum_vacuum_threshold'))::float8
                      + coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_vacuum_scale_factor'),
                                 current_setting('autovacuum_vacuum_scale_factor'))::float8 * greatest(c.reltuples, 0) AS threshold,
                        coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_enabled'), 'true') AS autovacuum
                   FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                  WHERE s.n_dead_tup >= $2) t
              WHERE dead / greatest(threshold, 1) >= $1::float8
              ORDER BY dead DESC LIMIT 100",
                &[&low, &DEAD_MIN_ROWS],
            )
            .await?;
        let recent = recently_changed_by_pgmaint(ctx).await?;
        let autovacuum_on: bool = ctx
            .client
            .row("SELECT current_setting('autovacuum') = 'on'", &[])
            .await?
            .get(0);
        let findings = rows
            .iter()
            .map(|r| {
                let (name, dead, threshold): (String, f64, f64) = (r.get(0), r.get(1), r.get(2));
                let autovacuum = autovacuum_on && r.get::<_, String>(3) != "false";
                let advice = if !autovacuum {
                    "autovacuum is off for this table (autovacuum_enabled = false, or autovacuum = off): VACUUM it (a `vacuum` task can), or turn autovacuum back on".to_string()
                } else {
                    "autovacuum is behind: check for long transactions holding it back, or make it more aggressive for this table (autovacuum_vacuum_scale_factor)".to_string()
                };
                let ratio = dead / threshold.max(1.0);
                let mut f = measured(ctx, name.clone(), ratio, |x| format!("{x:.1}x"), &advice);
                f.value = format!("{dead:.0} dead rows, {ratio:.1}x the autovacuum threshold of {threshold:.0}");
                f.threshold = format!(
                    "{}, of the autovacuum threshold; at least {DEAD_MIN_ROWS} dead rows",
                    f.threshold
                );
                if let Some((task, ago)) = recent.get(&name).filter(|_| autovacuum) {
                    f.status = Level::Ok;
                    f.value = format!(
                        "{}; pgmaint's `{task}` removed rows {} ago and autovacuum has not had its turn yet",
                        f.value,
                        seconds(*ago)
                    );
                    f.advice = "none yet: this is what the task left; it is reported if it is still there after 15 minutes".into();
                }
                f
            })
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

/// The tables (as `schema.name`) a pgmaint task removed rows from in the
/// last `RECENT_REMOVAL_SECONDS`, with the task and how long ago. No
/// state schema reads as none.
async fn recently_changed_by_pgmaint(
    ctx: &CheckContext<'_>,
) -> Result<HashMap<String, (String, f64)>, tokio_postgres::Error> {
    let recent = store::health_reads::recent_removals(
        ctx.client,
        &ctx.config.state_schema,
        RECENT_REMOVAL_SECONDS,
    )
    .await
    .unwrap_or_default();
    let mut tables = HashMap::new();
    for task in &ctx.config.tasks {
        let Some(ago) = recent.get(&task.name) else {
            continue;
        };
        let resolved = ctx
            .client
            .row(
                "SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1))",
                &[&task.spec.target()],
            )
            .await
            .ok()
            .and_then(|r| r.get::<_, Option<String>>(0));
        if let Some(table) = resolved {
            tables.insert(table, (task.name.clone(), *ago));
        }
    }
    Ok(tables)
}

pub(super) struct VacuumAge;

impl Check for VacuumAge {
    fn name(&self) -> CheckName {
        CheckName::VacuumAge
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        maintenance_age(ctx, "vacuum").await
    }
}

pub(super) struct AnalyzeAge;

impl Check for AnalyzeAge {
    fn name(&self) -> CheckName {
        CheckName::AnalyzeAge
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        maintenance_age(ctx, "analyze").await
    }
}

/// Only tables with at least this many live rows have an age worth telling.
pub(crate) const AGE_MIN_LIVE_ROWS: i64 = 1000;

/// `vacuum` or `analyze`: days since the last one (manual or auto), for
/// tables of `AGE_MIN_LIVE_ROWS` or more that changed since.
///
/// A table never vacuumed (or analyzed) counts from when it began, not
/// from "never": the later of its creation and the statistics reset
/// (`pg_stat_database.stats_reset`, which forgets the last vacuum). Its
/// creation is estimated from below by the earliest pgmaint snapshot that
/// holds it and, with `track_commit_timestamp = on`, the commit time of its
/// pg_class row (created or last altered). With neither, its age cannot be
/// told: it is listed as ok with that said (dead rows past autovacuum's
/// threshold are still dead-tuples' finding).
async fn maintenance_age(
    ctx: &CheckContext<'_>,
    kind: &str,
) -> Result<Outcome, tokio_postgres::Error> {
    let (last, changed) = match kind {
        "vacuum" => (
            "greatest(s.last_vacuum, s.last_autovacuum)",
            "s.n_dead_tup > 0",
        ),
        _ => (
            "greatest(s.last_analyze, s.last_autoanalyze)",
            "s.n_mod_since_analyze > 0",
        ),
    };
    let low = ctx.thresholds.warning.unwrap_or(0.0);
    let rows = ctx
        .client
        .rows(
            &format!(
                "SELECT format('%I.%I', s.schemaname, s.relname), s.relid, extract(epoch FROM now() - {last})::float8 / 86400,
                        CASE WHEN current_setting('track_commit_timestamp') = 'on'
                             THEN extract(epoch FROM now() - pg_xact_commit_timestamp(c.xmin))::float8 / 86400 END,
                        (SELECT extract(epoch FROM now() - stats_reset)::float8 / 86400 FROM pg_stat_database WHERE datname = current_database())
                   FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                  WHERE s.n_live_tup >= $2 AND {changed}
                    AND ({last} IS NULL OR extract(epoch FROM now() - {last}) / 86400 >= $1::float8)
                  ORDER BY 3 DESC NULLS FIRST LIMIT 100"
            ),
            &[&low, &AGE_MIN_LIVE_ROWS],
        )
        .await?;
    let first_seen = store::health_reads::first_seen(ctx.client, &ctx.config.state_schema)
        .await
        .unwrap_or_default();
    let advice = format!(
        "{} it (a `{kind}` task can), and check that autovacuum reaches it",
        kind.to_uppercase()
    );
    let days = |d: f64| format!("{d:.1} days");
    let minimum = format!("; tables of {AGE_MIN_LIVE_ROWS}+ live rows changed since");
    let mut untold = 0;
    let mut findings = Vec::new();
    for r in &rows {
        let (name, relid): (String, u32) = (r.get(0), r.get(1));
        let mut f = match r.get::<_, Option<f64>>(2) {
            Some(age) => {
                let mut f = measured(ctx, name, age, days, &advice);
                f.value = format!("last {kind} {age:.1} days ago");
                f
            }
            None => {
                let seen = first_seen.get(&relid).map(|s| s / 86_400.0);
                let committed: Option<f64> = r.get(3);
                let reset: Option<f64> = r.get(4);
                let created = match (seen, committed) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                match created {
                    Some(created) => {
                        let (age, from) = match reset {
                            Some(reset) if reset < created => (reset, "the statistics reset"),
                            _ => (created, "it was created (at least)"),
                        };
                        let mut f = measured(ctx, name, age, days, &advice);
                        f.value = format!("no {kind} yet, {} since {from}", days(age));
                        f
                    }
                    None => {
                        untold += 1;
                        let mut f = measured(ctx, name, 0.0, days, &advice);
                        f.status = Level::Ok;
                        f.value = format!(
                            "no {kind} yet; its age is unknown (no pgmaint snapshot holds it, track_commit_timestamp is off)"
                        );
                        f
                    }
                }
            }
        };
        f.threshold.push_str(&minimum);
        findings.push(f);
    }
    let summary = (untold > 0).then(|| {
        let problems = findings.iter().filter(|f| f.status > Level::Ok).count();
        format!(
            "{problems} finding(s) past the thresholds; {untold} table(s) never {kind}d whose age cannot be told yet (`pgmaint snapshot` starts the count)"
        )
    });
    Ok(Outcome::Findings(findings, summary))
}

pub(super) struct TableBloat;

impl Check for TableBloat {
    fn name(&self) -> CheckName {
        CheckName::TableBloat
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        // Expected size: rows x (average width + 24-byte header + 4-byte line
        // pointer), packed into 8 kB pages.
        bloat(
            ctx,
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relpages::float8 * current_setting('block_size')::float8,
                greatest(c.reltuples, 0)::float8 * (coalesce(w.width, 0) + 28) * 8192 / 8168 AS expected
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN (SELECT schemaname, tablename, sum(avg_width)::float8 AS width FROM pg_stats GROUP BY 1, 2) w
                  ON w.schemaname = n.nspname AND w.tablename = c.relname
          WHERE c.relkind IN ('r', 'm') AND c.relpages::bigint * current_setting('block_size')::bigint >= $1
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
            "SELECT (approx_free_percent + dead_tuple_percent) / 100 FROM pgstattuple_approx($1::oid::regclass)",
            "VACUUM FULL or pg_repack rewrites it (VACUUM FULL locks it); then keep autovacuum ahead of it",
        )
        .await
    }
}

pub(super) struct IndexBloat;

impl Check for IndexBloat {
    fn name(&self) -> CheckName {
        CheckName::IndexBloat
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        // Expected size: entries x (key width + 8-byte tuple header + 4-byte
        // line pointer), leaves filled to 90%, plus the meta page. Measured: a
        // fresh B-tree packs its leaves to 90%.
        bloat(
            ctx,
            "SELECT i.indexrelid, format('%I.%I', n.nspname, c.relname), c.relpages::float8 * current_setting('block_size')::float8,
                greatest(c.reltuples, 0)::float8 * (coalesce((SELECT sum(s.avg_width) FROM pg_attribute a
                    JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname AND s.attname = a.attname
                   WHERE a.attrelid = t.oid AND a.attnum = ANY (i.indkey)), 0) + 12) / 0.9 + 8192
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam
          WHERE am.amname = 'btree' AND i.indisvalid AND c.relpages::bigint * current_setting('block_size')::bigint >= $1
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
            "SELECT greatest(0, 1 - avg_leaf_density / 90) FROM pgstatindex($1::oid::regclass)",
            "REINDEX INDEX CONCURRENTLY rebuilds it without blocking writes (a `reindex` task can)",
        )
        .await
    }
}

/// Bloat of the relations `list` returns (oid, name, size, expected size;
/// `$1` the minimum size): measured by `exact` (`$1` the oid, the bloat as
/// a fraction) with `--exact` and pgstattuple, within the time budget, and
/// estimated from the expected size otherwise. Each figure says which.
async fn bloat(
    ctx: &CheckContext<'_>,
    list: &str,
    exact: &str,
    advice: &str,
) -> Result<Outcome, tokio_postgres::Error> {
    let rows = ctx.client.rows(list, &[&BLOAT_MIN_BYTES]).await?;
    let measure = ctx.exact && has_extension(ctx.client, "pgstattuple").await?;
    let started = Instant::now();
    let mut findings = Vec::new();
    for r in rows {
        let (oid, size, expected): (u32, f64, f64) = (r.get(0), r.get(2), r.get(3));
        let (bloat, how) = if measure && started.elapsed() < EXACT_BUDGET {
            let measured: f64 = ctx.client.row(exact, &[&oid]).await?.get(0);
            (measured, "exact")
        } else {
            ((1.0 - expected / size).max(0.0), "estimate")
        };
        let mut f = measured(ctx, r.get(1), bloat, percent, advice);
        f.value = format!("{} ({how}) of {}", percent(bloat), human_bytes(size));
        f.threshold = format!(
            "{}; relations of {} or more",
            f.threshold,
            human_bytes(BLOAT_MIN_BYTES as f64)
        );
        if f.status > Level::Ok {
            findings.push(f);
        }
    }
    let summary = (ctx.exact && !measure).then(|| {
        "pgstattuple is not installed: figures are estimates (CREATE EXTENSION pgstattuple for --exact)".to_string()
    });
    Ok(Outcome::Findings(findings, summary))
}

//! `vacuum` and `analyze`: VACUUM or ANALYZE the listed tables, or with
//! `auto = true` the tables whose statistics say they need it (dead rows
//! past `dead_ratio` and `min_dead_rows`, rows changed since the last
//! analyze past `mod_ratio`, or a last run, manual or auto, older than
//! `max_age`). One file for both kinds: they choose and report tables the
//! same way and differ in the statement. Each table runs outside any
//! transaction, under the task's timeouts, and reports dead rows and size
//! before and after.

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::utility;
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::config::file::{AutoOr, TaskFile};
use crate::db;
use crate::sql::TableName;
use crate::status::Status;

/// Fewer changed rows than this never choose a table for analyze
/// (autovacuum_analyze_threshold's default).
const ANALYZE_MIN_ROWS: i64 = 50;

#[derive(Debug, Clone, Serialize)]
pub struct VacuumSpec {
    /// ANALYZE only (the `analyze` kind), rather than VACUUM.
    pub analyze_only: bool,
    pub tables: Vec<String>,
    pub auto: bool,
    pub dead_ratio: f64,
    pub min_dead_rows: i64,
    pub mod_ratio: f64,
    pub max_age: Option<String>,
    /// VACUUM options.
    pub analyze: bool,
    pub freeze: bool,
    pub full: bool,
    pub parallel: Option<i32>,
    pub index_cleanup: AutoOr,
    pub skip_locked: bool,
}

/// A chosen table, with the figure that chose it.
#[derive(Debug, Clone, Serialize)]
pub struct Chosen {
    pub table: String,
    #[serde(skip)]
    name: TableName,
    pub why: String,
    pub dead_rows: i64,
    pub size_bytes: i64,
}

impl VacuumSpec {
    fn verb(&self) -> &'static str {
        if self.analyze_only {
            "analyze"
        } else {
            "vacuum"
        }
    }

    pub fn target(&self) -> String {
        if self.auto {
            "tables over thresholds".into()
        } else {
            self.tables.join(", ")
        }
    }

    pub fn resolve(
        file: &TaskFile,
        analyze_only: bool,
        report: &mut ReportProblem<'_>,
    ) -> Option<VacuumSpec> {
        let kind = if analyze_only { "analyze" } else { "vacuum" };
        let auto = file.auto.unwrap_or(false);
        let tables = file.tables.clone().unwrap_or_default();
        if auto != tables.is_empty() {
            report(
                "tables",
                format!("a {kind} task needs either `tables` or `auto = true`"),
                Some("list tables, `tables = [\"orders\"]`, or let pgmaint choose with `auto = true`".into()),
            );
            return None;
        }
        for (key, ratio) in [
            ("dead_ratio", file.dead_ratio),
            ("mod_ratio", file.mod_ratio),
        ] {
            if ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                report(
                    key,
                    format!("`{key}` is a fraction between 0 and 1"),
                    Some("e.g. 0.1 for 10%".into()),
                );
                return None;
            }
        }
        Some(VacuumSpec {
            analyze_only,
            tables,
            auto,
            dead_ratio: file.dead_ratio.unwrap_or(0.1),
            min_dead_rows: file.min_dead_rows.unwrap_or(1000),
            mod_ratio: file.mod_ratio.unwrap_or(0.1),
            max_age: file.max_age.clone(),
            analyze: file.analyze.unwrap_or(false),
            freeze: file.freeze.unwrap_or(false),
            full: file.full.unwrap_or(false),
            parallel: file.parallel,
            index_cleanup: file.index_cleanup.unwrap_or_default(),
            skip_locked: file.skip_locked.unwrap_or(false),
        })
    }

    fn statement(&self, table: &TableName) -> String {
        let mut options = Vec::new();
        if self.analyze_only {
            if self.skip_locked {
                options.push("SKIP_LOCKED".to_string());
            }
            let options = if options.is_empty() {
                String::new()
            } else {
                format!("({}) ", options.join(", "))
            };
            return format!("ANALYZE {options}{}", table.quoted());
        }
        if self.full {
            options.push("FULL".into());
        }
        if self.freeze {
            options.push("FREEZE".into());
        }
        if self.analyze {
            options.push("ANALYZE".into());
        }
        if let Some(workers) = self.parallel {
            options.push(format!("PARALLEL {workers}"));
        }
        match self.index_cleanup {
            AutoOr::Auto => {}
            AutoOr::Set(true) => options.push("INDEX_CLEANUP ON".into()),
            AutoOr::Set(false) => options.push("INDEX_CLEANUP OFF".into()),
        }
        if self.skip_locked {
            options.push("SKIP_LOCKED".into());
        }
        let options = if options.is_empty() {
            String::new()
        } else {
            format!("({}) ", options.join(", "))
        };
        format!("VACUUM {options}{}", table.quoted())
    }

    /// The tables to work on, each with the figure that chose it.
    /// `changed` names the tables earlier tasks of the run removed rows
    /// from: with `auto`, they are chosen whatever the statistics say (on
    /// PostgreSQL 14 those can lag the removal by a moment).
    async fn choose(
        &self,
        client: &Client,
        changed: &[String],
    ) -> Result<Vec<Chosen>, Vec<CheckProblem>> {
        let problem = |key, message: String| CheckProblem {
            key,
            message,
            help: None,
        };
        if let Some(age) = &self.max_age
            && let Err(err) = client.query_one("SELECT $1::text::interval", &[age]).await
        {
            return Err(vec![problem(
                "max_age",
                format!(
                    "`{age}` is not a PostgreSQL interval: {}",
                    db::describe(&err)
                ),
            )]);
        }
        let _ = client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await;
        let stats = "SELECT s.relid, s.schemaname::text, s.relname::text, s.n_dead_tup, s.n_live_tup, s.n_mod_since_analyze,
                            greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze),
                            pg_total_relation_size(s.relid),
                            CASE WHEN $1::text IS NULL THEN false
                                 ELSE coalesce(greatest(s.last_vacuum, s.last_autovacuum), '-infinity') < now() - $1::text::interval END,
                            CASE WHEN $1::text IS NULL THEN false
                                 ELSE coalesce(greatest(s.last_analyze, s.last_autoanalyze), '-infinity') < now() - $1::text::interval END
                       FROM pg_stat_user_tables s";
        let mut chosen = Vec::new();
        if self.auto {
            let rows = client
                .query(&format!("{stats} ORDER BY 2, 3"), &[&self.max_age])
                .await
                .map_err(|e| vec![problem("auto", db::describe(&e))])?;
            for row in rows {
                let (dead, live, modified): (i64, i64, i64) = (row.get(3), row.get(4), row.get(5));
                let total = (dead + live).max(1);
                let why = if self.analyze_only {
                    // Like autovacuum's analyze threshold: a floor of 50 rows
                    // keeps tiny tables from being chosen for every change.
                    if modified >= ANALYZE_MIN_ROWS
                        && modified as f64 >= self.mod_ratio * live.max(1) as f64
                    {
                        Some(format!(
                            "{modified} rows changed since the last analyze ({:.0}% of {live})",
                            100.0 * modified as f64 / live.max(1) as f64
                        ))
                    } else if row.get::<_, bool>(10) {
                        Some(format!(
                            "not analyzed within {}",
                            self.max_age.as_deref().unwrap_or("?")
                        ))
                    } else {
                        None
                    }
                } else if dead >= self.min_dead_rows
                    && dead as f64 >= self.dead_ratio * total as f64
                {
                    Some(format!(
                        "{dead} dead rows ({:.0}% of {total})",
                        100.0 * dead as f64 / total as f64
                    ))
                } else if row.get::<_, bool>(9) {
                    Some(format!(
                        "not vacuumed within {}",
                        self.max_age.as_deref().unwrap_or("?")
                    ))
                } else {
                    None
                };
                let name = TableName::new(row.get::<_, String>(1), row.get::<_, String>(2));
                let why = why.or_else(|| {
                    changed.contains(&name.to_string()).then(|| {
                        format!(
                            "rows removed by an earlier task of this run ({dead} dead rows counted so far)"
                        )
                    })
                });
                if let Some(why) = why {
                    chosen.push(Chosen {
                        table: name.to_string(),
                        name,
                        why,
                        dead_rows: dead,
                        size_bytes: row.get(8),
                    });
                }
            }
            return Ok(chosen);
        }
        let mut problems = Vec::new();
        for written in &self.tables {
            match db::lookup_table(client, written).await {
                Err(err) => problems.push(problem("tables", err.to_string())),
                Ok(info) => {
                    let row = client
                        .query_opt(
                            &format!("{stats} WHERE s.relid = $2"),
                            &[&self.max_age, &info.oid],
                        )
                        .await
                        .map_err(|e| vec![problem("tables", db::describe(&e))])?;
                    let (dead, size) = row.map(|r| (r.get(3), r.get(8))).unwrap_or((0, 0));
                    chosen.push(Chosen {
                        table: info.name.to_string(),
                        name: info.name,
                        why: "listed".into(),
                        dead_rows: dead,
                        size_bytes: size,
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(chosen)
        } else {
            Err(problems)
        }
    }
}

/// Dead rows and total size of a table now.
async fn measure(client: &Client, table: &TableName) -> Result<(i64, i64), tokio_postgres::Error> {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = client
        .query_one(
            "SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = $1::text::regclass), 0),
                    pg_total_relation_size($1::text::regclass)",
            &[&table.quoted()],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

impl Task for VacuumSpec {
    type Plan = Vec<Chosen>;

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<Vec<Chosen>, TaskError> {
        self.choose(ctx.client, &ctx.changed_tables)
            .await
            .map_err(|p| TaskError::from_problems(&p))
    }

    async fn describe(
        &self,
        _: &mut TaskContext<'_>,
        plan: &Vec<Chosen>,
    ) -> Result<Outcome, TaskError> {
        Ok(Outcome {
            status: Status::Succeeded,
            rows: 0,
            batches: plan.len() as u64,
            retries: 0,
            error: None,
            details: json!({
                "summary": format!("would {} {} table(s)", self.verb(), plan.len()),
                "tables": plan,
                "statements": plan.iter().map(|c| self.statement(&c.name)).collect::<Vec<_>>(),
            }),
        })
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: Vec<Chosen>,
    ) -> Result<Outcome, TaskError> {
        utility::set_timeouts(ctx).await?;
        let mut retries = 0;
        let mut reports = Vec::new();
        let mut failed = Vec::new();
        let mut stopped = None;
        for chosen in &plan {
            if let Some(reason) = ctx.should_stop() {
                stopped = Some(reason);
                break;
            }
            let (dead_before, size_before) = measure(ctx.client, &chosen.name).await?;
            match utility::run(ctx, &self.statement(&chosen.name), &mut retries).await {
                Ok(took) => {
                    let (dead_after, size_after) = measure(ctx.client, &chosen.name).await?;
                    reports.push(json!({
                        "table": chosen.table, "why": chosen.why, "duration_ms": took.as_millis() as u64,
                        "dead_rows_before": dead_before, "dead_rows_after": dead_after,
                        "size_bytes_before": size_before, "size_bytes_after": size_after,
                    }));
                }
                Err(err) => failed.push(format!("{}: {err}", chosen.table)),
            }
        }
        utility::clear_timeouts(ctx).await?;
        let (status, error) = utility::verdict(&failed, stopped, reports.len(), "table(s)");
        let dead_removed: i64 = reports
            .iter()
            .map(|r| {
                r["dead_rows_before"].as_i64().unwrap_or(0)
                    - r["dead_rows_after"].as_i64().unwrap_or(0)
            })
            .sum();
        Ok(Outcome {
            status,
            rows: 0,
            batches: reports.len() as u64,
            retries,
            error,
            details: json!({
                "summary": format!("{} {} of {} table(s); dead rows down by {dead_removed}", if self.analyze_only { "analyzed" } else { "vacuumed" }, reports.len(), plan.len()),
                "tables": reports,
            }),
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.choose(client, &[]).await.err().unwrap_or_default()
    }
}

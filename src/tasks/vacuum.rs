//! `vacuum`: VACUUM the listed tables, or with `auto = true` the tables
//! whose statistics say they need it (dead rows past `dead_ratio` and
//! `min_dead_rows`, or a last vacuum, manual or auto, older than
//! `max_age`). Choosing tables, running one statement per table and
//! reporting it are shared with `analyze` (`analyze.rs`), which differs in
//! its threshold and its statement. Each table runs outside any
//! transaction, under the task's timeouts, and reports dead rows and size
//! before and after.

use crate::unnamed::Unnamed;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::utility;
use super::values::AutoOr;
use super::{CheckProblem, Outcome, ReportProblem, Severity, Task, TaskContext, TaskError};
use crate::db;
use crate::sql::TableName;
use crate::status::Status;

/// Fewer changed rows than this never choose a table for analyze
/// (autovacuum_analyze_threshold's default).
const ANALYZE_MIN_ROWS: i64 = 50;

/// The keys of a vacuum task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VacuumFile {
    tables: Option<Vec<String>>,
    auto: Option<bool>,
    dead_ratio: Option<f64>,
    min_dead_rows: Option<i64>,
    max_age: Option<String>,
    analyze: Option<bool>,
    freeze: Option<bool>,
    full: Option<bool>,
    parallel: Option<i32>,
    index_cleanup: Option<AutoOr>,
    skip_locked: Option<bool>,
}

impl super::registry::KindFile for VacuumFile {
    const NAME: &'static str = "vacuum";
    type Spec = VacuumSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<VacuumSpec> {
        VacuumSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VacuumSpec {
    pub tables: Vec<String>,
    pub auto: bool,
    pub dead_ratio: f64,
    pub min_dead_rows: i64,
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
    pub(crate) name: TableName,
    pub why: String,
    pub dead_rows: i64,
    pub size_bytes: i64,
}

/// A vacuum or analyze dry run's `details`, read back for its text.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct PlanDetails {
    summary: String,
    tables: Vec<ChosenTable>,
    statements: Vec<String>,
}

/// A chosen table as the details hold it.
#[derive(Debug, serde::Deserialize)]
struct ChosenTable {
    table: String,
    why: String,
    dead_rows: i64,
    size_bytes: i64,
}

/// The dry run's text of a vacuum or analyze: what it would do, each table
/// and why, and what the statements lock.
pub(crate) fn plan_lines(
    kind: &str,
    details: &serde_json::Value,
    context: &super::PlanContext<'_>,
) -> Option<Vec<super::PlanLine>> {
    use super::PlanLine;
    let plan: PlanDetails = serde_json::from_value(details.clone()).ok()?;
    let mut lines = vec![PlanLine::summary(&plan.summary)];
    lines.extend(PlanLine::list(plan.tables.iter().map(|t| {
        format!(
            "{}: {} ({} dead rows, {} bytes)",
            t.table,
            t.why,
            crate::output::count(t.dead_rows.max(0) as u64),
            crate::output::count(t.size_bytes.max(0) as u64)
        )
    })));
    let locks = if plan.statements.iter().any(|s| s.contains("FULL")) {
        "VACUUM FULL rewrites each table under ACCESS EXCLUSIVE: reads and writes wait until it is done".to_string()
    } else {
        format!(
            "{} takes SHARE UPDATE EXCLUSIVE: reads and writes go on",
            kind.to_uppercase()
        )
    };
    lines.push(PlanLine::locks(&locks, context.options));
    Some(lines)
}

/// What chooses a table with `auto = true`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Threshold {
    /// vacuum: dead rows past a share of the table and a floor.
    Dead { ratio: f64, min_rows: i64 },
    /// analyze: rows changed since the last analyze past a share.
    Modified { ratio: f64 },
}

/// How a vacuum or analyze task chooses its tables.
pub(crate) struct Selection<'a> {
    pub tables: &'a [String],
    pub auto: bool,
    pub max_age: Option<&'a String>,
    pub threshold: Threshold,
}

/// `tables` or `auto = true`, and a ratio between 0 and 1: what both kinds
/// check the same way.
pub(crate) fn check_selection(
    kind: &str,
    tables: &[String],
    auto: bool,
    ratio: (&str, Option<f64>),
    report: &mut ReportProblem<'_>,
) -> bool {
    if auto != tables.is_empty() {
        report(
            "tables",
            format!("a {kind} task needs either `tables` or `auto = true`"),
            Some(
                "list tables, `tables = [\"orders\"]`, or let pgmaint choose with `auto = true`"
                    .into(),
            ),
        );
        return false;
    }
    let (key, ratio) = ratio;
    if ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        report(
            key,
            format!("`{key}` is a fraction between 0 and 1"),
            Some("e.g. 0.1 for 10%".into()),
        );
        return false;
    }
    true
}

impl VacuumSpec {
    pub(crate) fn resolve(file: VacuumFile, report: &mut ReportProblem<'_>) -> Option<VacuumSpec> {
        let auto = file.auto.unwrap_or(false);
        let tables = file.tables.clone().unwrap_or_default();
        if !check_selection(
            "vacuum",
            &tables,
            auto,
            ("dead_ratio", file.dead_ratio),
            report,
        ) {
            return None;
        }
        Some(VacuumSpec {
            tables,
            auto,
            dead_ratio: file.dead_ratio.unwrap_or(0.1),
            min_dead_rows: file.min_dead_rows.unwrap_or(1000),
            max_age: file.max_age.clone(),
            analyze: file.analyze.unwrap_or(false),
            freeze: file.freeze.unwrap_or(false),
            full: file.full.unwrap_or(false),
            parallel: file.parallel,
            index_cleanup: file.index_cleanup.unwrap_or_default(),
            skip_locked: file.skip_locked.unwrap_or(false),
        })
    }

    fn selection(&self) -> Selection<'_> {
        Selection {
            tables: &self.tables,
            auto: self.auto,
            max_age: self.max_age.as_ref(),
            threshold: Threshold::Dead {
                ratio: self.dead_ratio,
                min_rows: self.min_dead_rows,
            },
        }
    }

    fn statement(&self, table: &TableName) -> String {
        let mut options = Vec::new();
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
}

/// The tables to work on, each with the figure that chose it.
/// `changed` names the tables earlier tasks of the run removed rows
/// from: with `auto`, they are chosen whatever the statistics say (on
/// PostgreSQL 14 those can lag the removal by a moment).
pub(crate) async fn choose(
    selection: Selection<'_>,
    client: &Client,
    changed: &[String],
) -> Result<Vec<Chosen>, Vec<CheckProblem>> {
    let problem = |key, message: String| CheckProblem {
        key,
        message,
        help: None,
    };
    if let Some(age) = selection.max_age
        && let Err(err) = client.row("SELECT $1::text::interval", &[age]).await
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
    if selection.auto {
        let rows = client
            .rows(&format!("{stats} ORDER BY 2, 3"), &[&selection.max_age])
            .await
            .map_err(|e| vec![problem("auto", db::describe(&e))])?;
        for row in rows {
            let (dead, live, modified): (i64, i64, i64) = (row.get(3), row.get(4), row.get(5));
            let total = (dead + live).max(1);
            let why = if let Threshold::Modified { ratio } = selection.threshold {
                // Like autovacuum's analyze threshold: a floor of 50 rows
                // keeps tiny tables from being chosen for every change.
                if modified >= ANALYZE_MIN_ROWS && modified as f64 >= ratio * live.max(1) as f64 {
                    Some(format!(
                        "{modified} rows changed since the last analyze ({:.0}% of {live})",
                        100.0 * modified as f64 / live.max(1) as f64
                    ))
                } else if row.get::<_, bool>(10) {
                    Some(format!(
                        "not analyzed within {}",
                        selection.max_age.map_or("?", |a| a.as_str())
                    ))
                } else {
                    None
                }
            } else if let Threshold::Dead { ratio, min_rows } = selection.threshold
                && dead >= min_rows
                && dead as f64 >= ratio * total as f64
            {
                Some(format!(
                    "{dead} dead rows ({:.0}% of {total})",
                    100.0 * dead as f64 / total as f64
                ))
            } else if row.get::<_, bool>(9) {
                Some(format!(
                    "not vacuumed within {}",
                    selection.max_age.map_or("?", |a| a.as_str())
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
    for written in selection.tables {
        match db::lookup_table(client, written).await {
            Err(err) => problems.push(problem("tables", err.to_string())),
            Ok(info) => {
                let row = client
                    .row_opt(
                        &format!("{stats} WHERE s.relid = $2"),
                        &[&selection.max_age, &info.oid],
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

/// Dead rows and total size of a table now.
async fn measure(client: &Client, table: &TableName) -> Result<(i64, i64), tokio_postgres::Error> {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = client
        .row(
            "SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = $1::text::regclass), 0),
                    pg_total_relation_size($1::text::regclass)",
            &[&table.quoted()],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The dry run of a vacuum or analyze: the chosen tables and statements.
pub(crate) fn describe(
    verb: &str,
    plan: &[Chosen],
    statement: impl Fn(&TableName) -> String,
) -> Outcome {
    Outcome {
        status: Status::Succeeded,
        rows: 0,
        batches: plan.len() as u64,
        retries: 0,
        error: None,
        details: json!({
            "summary": format!("would {verb} {} table(s)", plan.len()),
            "tables": plan,
            "statements": plan.iter().map(|c| statement(&c.name)).collect::<Vec<_>>(),
        }),
    }
}

/// The run of a vacuum or analyze: each chosen table's statement, outside
/// any transaction, measured before and after.
pub(crate) async fn execute(
    ctx: &mut TaskContext<'_>,
    done: &str,
    plan: Vec<Chosen>,
    statement: impl Fn(&TableName) -> String,
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
        match utility::run(ctx, &statement(&chosen.name), &mut retries).await {
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
            r["dead_rows_before"].as_i64().unwrap_or(0) - r["dead_rows_after"].as_i64().unwrap_or(0)
        })
        .sum();
    Ok(Outcome {
        status,
        rows: 0,
        batches: reports.len() as u64,
        retries,
        error,
        details: json!({
            "summary": format!("{done} {} of {} table(s); dead rows down by {dead_removed}", reports.len(), plan.len()),
            "tables": reports,
        }),
    })
}

impl Task for VacuumSpec {
    type Plan = Vec<Chosen>;

    fn needs_session(&self) -> bool {
        true
    }

    fn target(&self) -> String {
        if self.auto {
            "tables over thresholds".into()
        } else {
            self.tables.join(", ")
        }
    }

    /// A VACUUM FULL rewrites the table under an exclusive lock, so it is
    /// always critical.
    fn minimum_severity(&self) -> Severity {
        if self.full {
            Severity::Critical
        } else {
            Severity::Low
        }
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<Vec<Chosen>, TaskError> {
        choose(self.selection(), ctx.client, &ctx.changed_tables)
            .await
            .map_err(|p| TaskError::from_problems(&p))
    }

    async fn describe(
        &self,
        _: &mut TaskContext<'_>,
        plan: &Vec<Chosen>,
    ) -> Result<Outcome, TaskError> {
        Ok(describe("vacuum", plan, |t| self.statement(t)))
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: Vec<Chosen>,
    ) -> Result<Outcome, TaskError> {
        execute(ctx, "vacuumed", plan, |t| self.statement(t)).await
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        choose(self.selection(), client, &[])
            .await
            .err()
            .unwrap_or_default()
    }

    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        plan_lines("vacuum", details, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{PlanLine, TaskOptions};

    #[test]
    fn a_plan_lists_each_table_and_what_its_statement_locks() {
        let context = crate::tasks::PlanContext {
            name: "v",
            rows: 0,
            batches: 1,
            options: &TaskOptions::BUILT_IN,
        };
        let details = json!({
            "summary": "would vacuum 1 table(s)",
            "tables": [{"table": "public.users", "why": "listed", "dead_rows": 1200, "size_bytes": 8192}],
            "statements": ["VACUUM \"public\".\"users\""],
        });
        let lines = plan_lines("vacuum", &details, &context).unwrap();
        assert_eq!(
            lines,
            [
                PlanLine::Say("Would vacuum 1 table(s).".into()),
                PlanLine::Item("public.users: listed (1,200 dead rows, 8,192 bytes)".into()),
                PlanLine::Say("Locks: VACUUM takes SHARE UPDATE EXCLUSIVE: reads and writes go on; each statement waits at most lock_timeout 1s for its lock, and is retried (up to 5 times).".into()),
            ]
        );
        let full = json!({"summary": "would vacuum 0 table(s)", "tables": [], "statements": ["VACUUM (FULL) x"]});
        let lines = plan_lines("vacuum", &full, &context).unwrap();
        assert!(matches!(&lines[1], PlanLine::Say(s) if s.contains("VACUUM FULL rewrites")));
    }
}

//! `reindex`: rebuild invalid indexes and bloated ones with `REINDEX INDEX
//! CONCURRENTLY`, and drop the invalid `_ccnew`/`_ccold` leftovers a failed
//! concurrent rebuild leaves behind. Bloat is measured with pgstattuple's
//! `pgstatindex` when the extension is installed, and estimated from the
//! planner's statistics otherwise; the output says which.

use crate::unnamed::Unnamed;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::utility;
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::db;
use crate::sql::TableName;
use crate::status::Status;

/// Indexes smaller than this are not worth rebuilding for bloat.
const MIN_BLOAT_BYTES: i64 = 1 << 20;

/// The keys of a reindex task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexFile {
    tables: Option<Vec<String>>,
    indexes: Option<Vec<String>>,
    bloat_ratio: Option<f64>,
}

impl super::registry::KindFile for ReindexFile {
    const NAME: &'static str = "reindex";
    type Spec = ReindexSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<ReindexSpec> {
        ReindexSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReindexSpec {
    pub tables: Vec<String>,
    pub indexes: Vec<String>,
    pub bloat_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Rebuild,
    /// A leftover of a failed concurrent rebuild: dropped, not rebuilt.
    Drop,
}

/// What a reindex will do, and how many indexes in scope it passes over
/// and why, so an empty selection says why it is empty.
#[derive(Debug, Clone)]
pub struct Selection {
    indexes: Vec<IndexPlan>,
    passed_over: PassedOver,
}

/// Indexes in scope that are left alone, by reason.
#[derive(Debug, Clone, Default, Serialize)]
struct PassedOver {
    /// Valid B-trees under `MIN_BLOAT_BYTES`.
    small: u64,
    /// Valid B-trees at or under `bloat_ratio`.
    under_ratio: u64,
    /// Valid indexes of another access method (bloat is measured on B-trees).
    not_btree: u64,
    /// Being built by someone's CREATE INDEX CONCURRENTLY right now.
    building: u64,
}

impl PassedOver {
    /// The reasons, in words, or None when nothing was passed over.
    fn words(&self, bloat_ratio: f64) -> Option<String> {
        let parts: Vec<String> = [
            (
                self.small,
                format!("under the {} MiB size floor", MIN_BLOAT_BYTES >> 20),
            ),
            (
                self.under_ratio,
                format!("at or under bloat_ratio {bloat_ratio}"),
            ),
            (self.not_btree, "not B-tree".to_string()),
            (self.building, "being built".to_string()),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
        (!parts.is_empty()).then(|| format!("passed over: {}", parts.join(", ")))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexPlan {
    pub index: String,
    #[serde(skip)]
    name: TableName,
    pub table: String,
    pub action: Action,
    pub why: String,
    pub size_bytes: i64,
    pub bloat: Option<f64>,
    /// "pgstattuple" or "estimate".
    pub measured_by: Option<&'static str>,
}

impl ReindexSpec {
    pub(crate) fn resolve(
        file: ReindexFile,
        report: &mut ReportProblem<'_>,
    ) -> Option<ReindexSpec> {
        let bloat_ratio = file.bloat_ratio.unwrap_or(0.3);
        if !(0.0..1.0).contains(&bloat_ratio) {
            report(
                "bloat_ratio",
                "`bloat_ratio` is a fraction between 0 and 1".into(),
                Some("e.g. 0.3: rebuild indexes more than 30% bloated".into()),
            );
            return None;
        }
        Some(ReindexSpec {
            tables: file.tables.clone().unwrap_or_default(),
            indexes: file.indexes.clone().unwrap_or_default(),
            bloat_ratio,
        })
    }

    /// The indexes in scope: their oids, or every user index.
    async fn scope(&self, client: &Client) -> Result<Option<Vec<u32>>, Vec<CheckProblem>> {
        if self.tables.is_empty() && self.indexes.is_empty() {
            return Ok(None);
        }
        let mut oids = Vec::new();
        let mut problems = Vec::new();
        for (key, list, kind) in [
            ("tables", &self.tables, "r"),
            ("indexes", &self.indexes, "i"),
        ] {
            for written in list {
                let row = client
                    .row(
                        "SELECT c.oid, c.relkind::text FROM (SELECT to_regclass($1) AS oid) r LEFT JOIN pg_class c ON c.oid = r.oid",
                        &[written],
                    )
                    .await;
                match row {
                    Ok(row)
                        if row.get::<_, Option<u32>>(0).is_some()
                            && row.get::<_, String>(1) == kind =>
                    {
                        let oid: u32 = row.get(0);
                        if kind == "i" {
                            oids.push(oid);
                        } else {
                            let indexes = client
                                .rows(
                                    "SELECT indexrelid FROM pg_index WHERE indrelid = $1",
                                    &[&oid],
                                )
                                .await
                                .map_err(|e| {
                                    vec![CheckProblem {
                                        key,
                                        message: db::describe(&e),
                                        help: None,
                                    }]
                                })?;
                            oids.extend(indexes.iter().map(|r| r.get::<_, u32>(0)));
                        }
                    }
                    Ok(_) => problems.push(CheckProblem {
                        key,
                        message: format!(
                            "{} \"{written}\" does not exist",
                            if kind == "i" { "index" } else { "table" }
                        ),
                        help: Some(
                            db::relation_help(client, key, true, written, &[kind])
                                .await
                                .unwrap_or_else(|| {
                                    "check the name, or qualify it as schema.name".into()
                                }),
                        ),
                    }),
                    Err(err) => problems.push(CheckProblem {
                        key,
                        message: format!("\"{written}\": {}", db::describe(&err)),
                        help: None,
                    }),
                }
            }
        }
        if problems.is_empty() {
            Ok(Some(oids))
        } else {
            Err(problems)
        }
    }

    async fn plan(&self, client: &Client) -> Result<Selection, Vec<CheckProblem>> {
        let scope = self.scope(client).await?;
        let fail = |e: tokio_postgres::Error| {
            vec![CheckProblem {
                key: "kind",
                message: db::describe(&e),
                help: None,
            }]
        };
        let pgstattuple: bool = client
            .row(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple')",
                &[],
            )
            .await
            .map_err(fail)?
            .get(0);
        let rows = client
            .rows(
                "SELECT i.indexrelid, n.nspname::text, c.relname::text, t.relname::text, i.indisvalid,
                        c.relname ~ '_cc(new|old)[0-9]*$', pg_relation_size(i.indexrelid), am.amname = 'btree',
                        i.indexrelid IN (SELECT index_relid FROM pg_stat_progress_create_index),
                        c.reltuples::float8,
                        (SELECT coalesce(sum(s.avg_width), 0)::float8 FROM pg_attribute a
                           JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname AND s.attname = a.attname
                          WHERE a.attrelid = t.oid AND a.attnum = ANY (i.indkey))
                   FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indexrelid
                   JOIN pg_class t ON t.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_am am ON am.oid = c.relam
                  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
                    AND ($1::oid[] IS NULL OR i.indexrelid = ANY ($1))
                  ORDER BY 2, 3",
                &[&scope],
            )
            .await
            .map_err(fail)?;
        let mut plans = Vec::new();
        let mut passed_over = PassedOver::default();
        for row in rows {
            let oid: u32 = row.get(0);
            let name = TableName::new(row.get::<_, String>(1), row.get::<_, String>(2));
            let table =
                TableName::new(row.get::<_, String>(1), row.get::<_, String>(3)).to_string();
            let (valid, leftover, size, btree, building): (bool, bool, i64, bool, bool) =
                (row.get(4), row.get(5), row.get(6), row.get(7), row.get(8));
            let mut plan = IndexPlan {
                index: name.to_string(),
                name,
                table,
                action: Action::Rebuild,
                why: String::new(),
                size_bytes: size,
                bloat: None,
                measured_by: None,
            };
            if building {
                // Someone's CREATE INDEX CONCURRENTLY is running right now.
                passed_over.building += 1;
                continue;
            }
            if !valid && leftover {
                plan.action = Action::Drop;
                plan.why = "invalid leftover of a failed REINDEX CONCURRENTLY".into();
                plans.push(plan);
                continue;
            }
            if !valid {
                plan.why = "invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX)".into();
                plans.push(plan);
                continue;
            }
            if !btree {
                passed_over.not_btree += 1;
                continue;
            }
            if size < MIN_BLOAT_BYTES {
                passed_over.small += 1;
                continue;
            }
            let (bloat, measured_by) = if pgstattuple {
                let density: f64 = client
                    .row(
                        "SELECT avg_leaf_density FROM pgstatindex($1::oid::regclass)",
                        &[&oid],
                    )
                    .await
                    .map_err(fail)?
                    .get(0);
                // A fresh B-tree packs leaves to its fillfactor, 90%.
                ((1.0 - density / 90.0).max(0.0), "pgstattuple")
            } else {
                let (tuples, width): (f64, f64) = (row.get(9), row.get(10));
                // Each entry: its key, an 8-byte tuple header, a 4-byte line
                // pointer; leaves filled to 90%, plus the meta page.
                let expected = tuples.max(0.0) * (width + 12.0) / (8192.0 * 0.9) * 8192.0 + 8192.0;
                ((1.0 - expected / size as f64).max(0.0), "estimate")
            };
            plan.bloat = Some((bloat * 1000.0).round() / 1000.0);
            plan.measured_by = Some(measured_by);
            if bloat > self.bloat_ratio {
                plan.why = format!(
                    "{:.0}% bloated ({measured_by}), over bloat_ratio {}",
                    bloat * 100.0,
                    self.bloat_ratio
                );
                plans.push(plan);
            } else {
                passed_over.under_ratio += 1;
            }
        }
        // Drop leftovers before rebuilding anything.
        plans.sort_by_key(|p| p.action == Action::Rebuild);
        Ok(Selection {
            indexes: plans,
            passed_over,
        })
    }
}

fn statement(plan: &IndexPlan) -> String {
    match plan.action {
        Action::Drop => format!("DROP INDEX CONCURRENTLY IF EXISTS {}", plan.name.quoted()),
        Action::Rebuild => format!("REINDEX INDEX CONCURRENTLY {}", plan.name.quoted()),
    }
}

/// Drops the invalid `_ccnew` copy a failed REINDEX CONCURRENTLY of `index` left.
async fn drop_failed_copy(
    ctx: &mut TaskContext<'_>,
    index: &TableName,
    retries: &mut u64,
) -> Result<(), TaskError> {
    let copies = ctx
        .client
        .rows(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_index i ON i.indexrelid = c.oid
              WHERE n.nspname = $1 AND NOT i.indisvalid AND c.relname ~ ('^' || $2 || '_ccnew[0-9]*$')",
            &[&index.schema, &regex_escape(&index.name)],
        )
        .await?;
    for copy in copies {
        let copy = TableName::new(&index.schema, copy.get::<_, String>(0));
        utility::run(
            ctx,
            &format!("DROP INDEX CONCURRENTLY IF EXISTS {}", copy.quoted()),
            retries,
        )
        .await?;
    }
    Ok(())
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

impl Task for ReindexSpec {
    type Plan = Selection;

    fn needs_session(&self) -> bool {
        true
    }

    fn target(&self) -> String {
        match (self.tables.is_empty(), self.indexes.is_empty()) {
            (true, true) => "every index".into(),
            _ => [self.tables.clone(), self.indexes.clone()]
                .concat()
                .join(", "),
        }
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<Selection, TaskError> {
        self.plan(ctx.client)
            .await
            .map_err(|p| TaskError::from_problems(&p))
    }

    async fn describe(
        &self,
        _: &mut TaskContext<'_>,
        selection: &Selection,
    ) -> Result<Outcome, TaskError> {
        let plan = &selection.indexes;
        let rebuilds = plan.iter().filter(|p| p.action == Action::Rebuild).count();
        let mut summary = format!(
            "would rebuild {rebuilds} index(es) and drop {} leftover(s)",
            plan.len() - rebuilds
        );
        if let Some(why) = selection.passed_over.words(self.bloat_ratio) {
            summary.push_str(&format!("; {why}"));
        }
        Ok(Outcome {
            status: Status::Succeeded,
            rows: 0,
            batches: plan.len() as u64,
            retries: 0,
            error: None,
            details: json!({
                "summary": summary,
                "indexes": plan,
                "passed_over": selection.passed_over,
                "statements": plan.iter().map(statement).collect::<Vec<_>>(),
            }),
        })
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        selection: Selection,
    ) -> Result<Outcome, TaskError> {
        let plan = selection.indexes;
        utility::set_timeouts(ctx).await?;
        let mut retries = 0;
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut stopped = None;
        for index in &plan {
            if let Some(reason) = ctx.should_stop() {
                stopped = Some(reason);
                break;
            }
            let before = index.size_bytes;
            match utility::run(ctx, &statement(index), &mut retries).await {
                Ok(took) => {
                    let after: i64 = if index.action == Action::Rebuild {
                        ctx.client
                            .row(
                                "SELECT coalesce(pg_relation_size(to_regclass($1)), 0)",
                                &[&index.name.quoted()],
                            )
                            .await?
                            .get(0)
                    } else {
                        0
                    };
                    done.push(json!({"index": index.index, "action": index.action, "why": index.why, "duration_ms": took.as_millis() as u64, "size_bytes_before": before, "size_bytes_after": after}));
                }
                Err(err) => {
                    if index.action == Action::Rebuild {
                        drop_failed_copy(ctx, &index.name, &mut retries).await?;
                    }
                    failed.push(format!("{}: {err}", index.index));
                }
            }
        }
        utility::clear_timeouts(ctx).await?;
        let (status, error) = utility::verdict(&failed, stopped, done.len(), "index(es)");
        Ok(Outcome {
            status,
            rows: 0,
            batches: done.len() as u64,
            retries,
            error,
            details: json!({
                "summary": format!("{} of {} index(es) rebuilt or dropped", done.len(), plan.len()),
                "indexes": done,
            }),
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.scope(client).await.err().unwrap_or_default()
    }

    /// Each index, what is done to it and why, and the locks.
    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        use super::PlanLine;
        let plan: PlanDetails = serde_json::from_value(details.clone()).ok()?;
        let mut lines = vec![PlanLine::summary(&plan.summary)];
        lines.extend(PlanLine::list(plan.indexes.iter().map(|index| {
            let bloat = match index.bloat {
                Some(_) if index.why.contains("bloat") => String::new(),
                Some(b) => format!(
                    ", {:.0}% bloat by {}",
                    b * 100.0,
                    index.measured_by.as_deref().unwrap_or("?")
                ),
                None => String::new(),
            };
            format!(
                "{} {}: {} ({} bytes{bloat})",
                index.action,
                index.index,
                index.why,
                crate::output::count(index.size_bytes.max(0) as u64)
            )
        })));
        lines.push(PlanLine::locks(
            "REINDEX and DROP INDEX CONCURRENTLY take SHARE UPDATE EXCLUSIVE: reads and writes go on",
            context.options,
        ));
        Some(lines)
    }
}

/// A reindex dry run's `details`, read back for its text.
#[derive(Debug, serde::Deserialize)]
struct PlanDetails {
    summary: String,
    indexes: Vec<PlannedIndex>,
}

/// An index as the details hold it.
#[derive(Debug, serde::Deserialize)]
struct PlannedIndex {
    index: String,
    action: String,
    why: String,
    size_bytes: i64,
    bloat: Option<f64>,
    measured_by: Option<String>,
}

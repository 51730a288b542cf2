//! `refresh`: REFRESH MATERIALIZED VIEW for the listed views (or all of
//! them), views that read other views after those, CONCURRENTLY whenever
//! the view allows it (populated, with a unique index on plain columns and
//! no WHERE), so readers are never blocked. Every refresh is recorded in the
//! state schema, which is what staleness is measured from.

use crate::unnamed::Unnamed;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::utility;
use super::values::{AutoOr, OneOrMany};
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::db;
use crate::duration::Duration;
use crate::sql::TableName;
use crate::status::Status;

/// The keys of a refresh task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshFile {
    views: Option<OneOrMany>,
    concurrently: Option<AutoOr>,
    max_staleness: Option<Duration>,
}

impl super::registry::KindFile for RefreshFile {
    const NAME: &'static str = "refresh";
    type Spec = RefreshSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<RefreshSpec> {
        RefreshSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RefreshSpec {
    /// Names as written, or empty for every materialized view (`"*"`).
    pub views: Vec<String>,
    pub concurrently: AutoOr,
    pub max_staleness: Option<Duration>,
}

/// One view, as the catalog describes it, and how it will be refreshed.
#[derive(Debug, Clone, Serialize)]
pub struct ViewPlan {
    pub view: String,
    #[serde(skip)]
    name: TableName,
    pub concurrently: bool,
    pub reason: String,
    /// Seconds since pgmaint last refreshed it, if it has.
    pub last_refreshed_seconds_ago: Option<f64>,
}

impl RefreshSpec {
    pub(crate) fn resolve(
        file: RefreshFile,
        report: &mut ReportProblem<'_>,
    ) -> Option<RefreshSpec> {
        let views = match &file.views {
            Some(OneOrMany::One(all)) if all == "*" => Vec::new(),
            Some(OneOrMany::Many(list)) if !list.is_empty() => list.clone(),
            Some(OneOrMany::One(one)) => vec![one.clone()],
            _ => {
                report(
                    "views",
                    "a refresh task needs `views`".into(),
                    Some("list them, `views = [\"leaderboard\"]`, or `views = \"*\"` for every materialized view".into()),
                );
                return None;
            }
        };
        Some(RefreshSpec {
            views,
            concurrently: file.concurrently.unwrap_or_default(),
            max_staleness: file.max_staleness,
        })
    }

    /// The views in refresh order (a view after every view it reads), each
    /// with its mode and (given the state schema) its last refresh; or the
    /// problems that stop it.
    async fn plan(
        &self,
        client: &Client,
        state_schema: Option<&str>,
    ) -> Result<Vec<ViewPlan>, Vec<CheckProblem>> {
        let problem = |message: String, help: Option<String>| CheckProblem {
            key: "views",
            message,
            help,
        };
        let mut found: Vec<(u32, TableName, bool)> = Vec::new();
        let mut problems = Vec::new();
        if self.views.is_empty() {
            let rows = client
                .rows(
                    "SELECT c.oid, n.nspname::text, c.relname::text, c.relispopulated
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.relkind = 'm' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                      ORDER BY 2, 3",
                    &[],
                )
                .await
                .map_err(|e| vec![problem(db::describe(&e), None)])?;
            found.extend(rows.iter().map(|r| {
                (
                    r.get(0),
                    TableName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
                    r.get(3),
                )
            }));
        }
        for written in &self.views {
            let row = client
                .row(
                    "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relispopulated
                       FROM (SELECT to_regclass($1) AS oid) r
                       LEFT JOIN pg_class c ON c.oid = r.oid
                       LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
                    &[written],
                )
                .await;
            match row {
                Err(err) => problems.push(problem(
                    format!("\"{written}\" is not a valid name: {}", db::describe(&err)),
                    None,
                )),
                Ok(row) if row.get::<_, Option<u32>>(0).is_none() => problems.push(problem(
                    format!("materialized view \"{written}\" does not exist"),
                    Some(
                        db::relation_help(client, "views", true, written, &["m"])
                            .await
                            .unwrap_or_else(|| {
                                "check the name, or qualify it as schema.view".into()
                            }),
                    ),
                )),
                Ok(row) if row.get::<_, String>(3) != "m" => problems.push(problem(
                    format!("\"{written}\" is not a materialized view"),
                    None,
                )),
                Ok(row) => found.push((
                    row.get(0),
                    TableName::new(row.get::<_, String>(1), row.get::<_, String>(2)),
                    row.get(4),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let oids: Vec<u32> = found.iter().map(|(oid, ..)| *oid).collect();
        let order = dependency_order(client, &oids)
            .await
            .map_err(|e| vec![problem(db::describe(&e), None)])?;
        let last = match state_schema {
            Some(schema) => db::read_only(client, refresh_ages(client, schema))
                .await
                .unwrap_or_default(),
            None => Default::default(),
        };
        let mut plans = Vec::new();
        for oid in order {
            let (_, name, populated) = found
                .iter()
                .find(|(o, ..)| *o == oid)
                .expect("ordered from found")
                .clone();
            let unique: bool = client
                .row(
                    "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1 AND indisunique AND indisvalid
                                       AND indpred IS NULL AND indexprs IS NULL)",
                    &[&oid],
                )
                .await
                .map_err(|e| vec![problem(db::describe(&e), None)])?
                .get(0);
            let (concurrently, reason) = match (self.concurrently, populated, unique) {
                (AutoOr::Set(false), ..) => (false, "concurrently = false".to_string()),
                (_, true, true) => (true, "populated, with a unique index on plain columns".to_string()),
                (AutoOr::Set(true), false, _) => {
                    problems.push(problem(
                        format!("{name} cannot be refreshed CONCURRENTLY: it has never been populated"),
                        Some(format!("run `REFRESH MATERIALIZED VIEW {}` once, or set concurrently = \"auto\"", name.quoted())),
                    ));
                    continue;
                }
                (AutoOr::Set(true), true, false) => {
                    problems.push(problem(
                        format!("{name} cannot be refreshed CONCURRENTLY: it has no unique index on plain columns without a WHERE clause"),
                        Some(format!("create one on the columns that identify a row, e.g. `CREATE UNIQUE INDEX ON {} (id)`, or set concurrently = \"auto\"", name.quoted())),
                    ));
                    continue;
                }
                (_, false, _) => (false, "not populated yet, and CONCURRENTLY needs a populated view".to_string()),
                (_, true, false) => (false, "no unique index on plain columns without a WHERE clause, which CONCURRENTLY needs".to_string()),
            };
            plans.push(ViewPlan {
                view: name.to_string(),
                last_refreshed_seconds_ago: last.get(&name.to_string()).copied(),
                name,
                concurrently,
                reason,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(plans)
    }
}

/// The views ordered so that each comes after the views it reads, directly
/// or through plain views; otherwise by name.
async fn dependency_order(
    client: &Client,
    oids: &[u32],
) -> Result<Vec<u32>, tokio_postgres::Error> {
    let edges = client
        .rows(
            "WITH RECURSIVE reads(view, ref) AS (
                 SELECT r.ev_class, d.refobjid
                   FROM pg_rewrite r
                   JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                   AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
                  WHERE r.ev_class = ANY ($1)
               UNION
                 SELECT reads.view, d.refobjid
                   FROM reads
                   JOIN pg_class c ON c.oid = reads.ref AND c.relkind = 'v'
                   JOIN pg_rewrite r ON r.ev_class = c.oid
                   JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                   AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class)
             SELECT DISTINCT view, ref FROM reads WHERE ref = ANY ($1)",
            &[&oids],
        )
        .await?;
    let mut needs: BTreeMap<u32, BTreeSet<u32>> =
        oids.iter().map(|o| (*o, BTreeSet::new())).collect();
    for edge in edges {
        let (view, reads): (u32, u32) = (edge.get(0), edge.get(1));
        if view != reads {
            needs.entry(view).or_default().insert(reads);
        }
    }
    // Kahn's algorithm, in the given (name) order among equals.
    let mut order = Vec::new();
    let mut left: Vec<u32> = oids.to_vec();
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|v| needs[v].iter().all(|r| order.contains(r)))
            .unwrap_or(0); // a cycle cannot happen between matviews; never stall
        order.push(left.remove(ready));
    }
    Ok(order)
}

// Where `tasks` and the health checks have long found it.
pub(crate) use crate::store::refreshes::refresh_ages;

fn statement(view: &ViewPlan) -> String {
    format!(
        "REFRESH MATERIALIZED VIEW {}{}",
        if view.concurrently {
            "CONCURRENTLY "
        } else {
            ""
        },
        view.name.quoted()
    )
}

impl Task for RefreshSpec {
    type Plan = Vec<ViewPlan>;

    fn needs_session(&self) -> bool {
        true
    }

    fn target(&self) -> String {
        if self.views.is_empty() {
            "every materialized view".into()
        } else {
            self.views.join(", ")
        }
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<Vec<ViewPlan>, TaskError> {
        self.plan(ctx.client, Some(&ctx.state_schema))
            .await
            .map_err(|p| TaskError::from_problems(&p))
    }

    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &Vec<ViewPlan>,
    ) -> Result<Outcome, TaskError> {
        let _ = ctx;
        Ok(Outcome {
            status: Status::Succeeded,
            rows: 0,
            batches: plan.len() as u64,
            retries: 0,
            error: None,
            details: json!({
                "summary": format!("would refresh {} materialized view(s), in this order", plan.len()),
                "views": plan,
                "max_staleness": self.max_staleness.map(|d| d.to_string()),
                "statements": plan.iter().map(statement).collect::<Vec<_>>(),
            }),
        })
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: Vec<ViewPlan>,
    ) -> Result<Outcome, TaskError> {
        utility::set_timeouts(ctx).await?;
        let mut retries = 0;
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut stopped = None;
        for view in &plan {
            if let Some(reason) = ctx.should_stop() {
                stopped = Some(reason);
                break;
            }
            match utility::run(ctx, &statement(view), &mut retries).await {
                Ok(took) => {
                    let mode = if view.concurrently {
                        "concurrently"
                    } else {
                        "plain"
                    };
                    crate::store::refreshes::record_refresh(
                        &*ctx.client,
                        &ctx.state_schema,
                        &view.name.schema,
                        &view.name.name,
                        ctx.task_name,
                        ctx.task_run_id,
                        took.as_millis() as i64,
                        mode,
                    )
                    .await?;
                    done.push(json!({"view": view.view, "mode": mode, "reason": view.reason, "duration_ms": took.as_millis() as u64}));
                }
                Err(err) => failed.push(format!("{}: {err}", view.view)),
            }
        }
        utility::clear_timeouts(ctx).await?;
        let (status, error) = utility::verdict(&failed, stopped, done.len(), "view(s)");
        Ok(Outcome {
            status,
            rows: 0,
            batches: done.len() as u64,
            retries,
            error,
            details: json!({
                "summary": format!("refreshed {} of {} materialized view(s)", done.len(), plan.len()),
                "refreshed": done,
            }),
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.plan(client, None).await.err().unwrap_or_default()
    }

    /// Each view in order, how it is refreshed and why, and the locks.
    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        use super::PlanLine;
        let plan: PlanDetails = serde_json::from_value(details.clone()).ok()?;
        let mut lines = vec![PlanLine::summary(&plan.summary)];
        lines.extend(PlanLine::list(plan.views.iter().map(|view| {
            let ago = view
                .last_refreshed_seconds_ago
                .map(|s| {
                    format!(
                        "; refreshed {} ago",
                        crate::output::duration_ms((s * 1000.0) as u64)
                    )
                })
                .unwrap_or_default();
            format!(
                "{} {}: {}{ago}",
                view.view,
                if view.concurrently {
                    "CONCURRENTLY"
                } else {
                    "plain"
                },
                view.reason
            )
        })));
        lines.push(PlanLine::locks(
            "a CONCURRENTLY refresh takes EXCLUSIVE on its view (reads go on, writes wait), a plain one ACCESS EXCLUSIVE (reads of the view wait until it is done)",
            context.options,
        ));
        Some(lines)
    }
}

/// A refresh dry run's `details`, read back for its text.
#[derive(Debug, serde::Deserialize)]
struct PlanDetails {
    summary: String,
    views: Vec<PlannedView>,
}

/// A view as the details hold it.
#[derive(Debug, serde::Deserialize)]
struct PlannedView {
    view: String,
    concurrently: bool,
    reason: String,
    last_refreshed_seconds_ago: Option<f64>,
}

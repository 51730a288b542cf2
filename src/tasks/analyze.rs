//! `analyze`: ANALYZE the listed tables, or with `auto = true` those whose
//! statistics are stale (rows changed since the last analyze past
//! `mod_ratio`, or a last analyze, manual or auto, older than `max_age`).
//! It chooses, runs and reports tables the way `vacuum` does (the shared
//! part lives in `vacuum.rs`); what is its own is the threshold and the
//! statement.

use serde::Serialize;
use tokio_postgres::Client;

use super::vacuum::{self, Chosen, Selection, Threshold};
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::sql::TableName;

/// The keys of an analyze task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeFile {
    tables: Option<Vec<String>>,
    auto: Option<bool>,
    mod_ratio: Option<f64>,
    max_age: Option<String>,
    skip_locked: Option<bool>,
}

impl super::registry::KindFile for AnalyzeFile {
    const NAME: &'static str = "analyze";
    type Spec = AnalyzeSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<AnalyzeSpec> {
        let auto = self.auto.unwrap_or(false);
        let tables = self.tables.unwrap_or_default();
        if !vacuum::check_selection(
            "analyze",
            &tables,
            auto,
            ("mod_ratio", self.mod_ratio),
            report,
        ) {
            return None;
        }
        Some(AnalyzeSpec {
            tables,
            auto,
            mod_ratio: self.mod_ratio.unwrap_or(0.1),
            max_age: self.max_age,
            skip_locked: self.skip_locked.unwrap_or(false),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeSpec {
    pub tables: Vec<String>,
    pub auto: bool,
    pub mod_ratio: f64,
    pub max_age: Option<String>,
    pub skip_locked: bool,
}

impl AnalyzeSpec {
    fn selection(&self) -> Selection<'_> {
        Selection {
            tables: &self.tables,
            auto: self.auto,
            max_age: self.max_age.as_ref(),
            threshold: Threshold::Modified {
                ratio: self.mod_ratio,
            },
        }
    }

    fn statement(&self, table: &TableName) -> String {
        let options = if self.skip_locked {
            "(SKIP_LOCKED) "
        } else {
            ""
        };
        format!("ANALYZE {options}{}", table.quoted())
    }
}

impl Task for AnalyzeSpec {
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

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<Vec<Chosen>, TaskError> {
        vacuum::choose(self.selection(), ctx.client, &ctx.changed_tables)
            .await
            .map_err(|p| TaskError::from_problems(&p))
    }

    async fn describe(
        &self,
        _: &mut TaskContext<'_>,
        plan: &Vec<Chosen>,
    ) -> Result<Outcome, TaskError> {
        Ok(vacuum::describe("analyze", plan, |t| self.statement(t)))
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: Vec<Chosen>,
    ) -> Result<Outcome, TaskError> {
        vacuum::execute(ctx, "analyzed", plan, |t| self.statement(t)).await
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        vacuum::choose(self.selection(), client, &[])
            .await
            .err()
            .unwrap_or_default()
    }

    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        vacuum::plan_lines("analyze", details, context)
    }
}

//! `purge`: delete the rows that match `where`, or whose `time_column` is
//! older than `older_than`, in bounded batches (the ctid walk of
//! `walk.rs`), backing them up first when the task backs up.

use serde::Serialize;
use tokio_postgres::Client;

use super::leaves::{Walks, same_filter};
use super::references;
use super::references::OnReferenced;
use super::rows::{Filter, walkable_table};
use super::walk::{Copy, WalkPlan};
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::db::{self, TableInfo};
use crate::sql::Destination;

/// The keys of a purge task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeFile {
    table: Option<String>,
    #[serde(rename = "where")]
    where_: Option<String>,
    time_column: Option<String>,
    older_than: Option<String>,
    backup: Option<bool>,
    on_referenced: Option<OnReferenced>,
    parallel: Option<u32>,
}

impl super::registry::KindFile for PurgeFile {
    const NAME: &'static str = "purge";
    type Spec = PurgeSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<PurgeSpec> {
        PurgeSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PurgeSpec {
    /// As written in the config; resolved against the catalog at run time.
    pub table: String,
    #[serde(flatten)]
    pub filter: Filter,
    pub on_referenced: OnReferenced,
    /// Walkers over disjoint page ranges (`parallel = N`).
    pub parallel: u32,
    /// `backup = ...` as written.
    #[serde(skip)]
    pub backup: Option<bool>,
}

impl PurgeSpec {
    pub(crate) fn resolve(file: PurgeFile, report: &mut ReportProblem<'_>) -> Option<PurgeSpec> {
        let table = file.table.clone();
        if table.is_none() {
            report(
                "table",
                "a purge task needs `table`".into(),
                Some("add `table = \"schema.table\"`".into()),
            );
        }
        let filter = Filter::resolve(
            file.where_.as_ref(),
            file.time_column.as_ref(),
            file.older_than.as_ref(),
            "purge",
            report,
        );
        Some(PurgeSpec {
            table: table?,
            filter: filter?,
            on_referenced: file.on_referenced.unwrap_or_default(),
            parallel: super::walk::parallel_of(file.parallel, report),
            backup: file.backup,
        })
    }

    /// Finds the table and checks the filter against it.
    async fn validate(&self, client: &Client) -> Result<(TableInfo, String), Vec<CheckProblem>> {
        let info = walkable_table(client, &self.table)
            .await
            .map_err(|p| vec![p])?;
        let filter_sql = self.filter.validate(client, &info).await?;
        Ok((info, filter_sql))
    }
}

pub struct PurgePlan {
    walk: Walks,
    info: TableInfo,
}

impl Task for PurgeSpec {
    type Plan = PurgePlan;

    fn rows_filter(&self) -> Option<(&str, &super::rows::Filter)> {
        Some((&self.table, &self.filter))
    }

    fn backup(&self) -> Option<bool> {
        self.backup
    }

    fn target(&self) -> String {
        self.table.clone()
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<PurgePlan, TaskError> {
        let (info, filter_sql) = self
            .validate(ctx.client)
            .await
            .map_err(|p| TaskError::from_problems(&p))?;
        // Fixed in the task's time_zone: `now() - interval` of days and
        // months follows the zone's clock changes.
        let (cutoff, session_zone) =
            db::read_only(ctx.client, self.filter.cutoff_in_session(ctx.client)).await?;
        let references = references::load(ctx.client, &info.name, info.oid).await?;
        let whole = WalkPlan {
            table: info.name.clone(),
            filter_sql: filter_sql.clone(),
            cutoff,
            session_zone,
            pages: info.pages,
            estimated_rows: info.estimated_rows,
            columns: info.insertable_columns(),
            destination: Destination::Delete,
            references,
            on_referenced: self.on_referenced,
            parallel: self.parallel,
        };
        Ok(PurgePlan {
            walk: Walks::of(ctx.client, whole, &info, same_filter(&filter_sql)).await?,
            info,
        })
    }

    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &PurgePlan,
    ) -> Result<Outcome, TaskError> {
        let backup = ctx.backup_dir.is_some();
        let copy = || if backup { Copy::Backup } else { Copy::Nowhere };
        plan.walk.describe(ctx, "delete", copy).await
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: PurgePlan,
    ) -> Result<Outcome, TaskError> {
        let writer = ctx
            .backup_writer(&plan.info.name, &plan.info.columns)
            .await?;
        plan.walk.execute(ctx, writer).await
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.validate(client).await.err().unwrap_or_default()
    }

    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        super::walk_text::plan_lines(details, context)
    }
}

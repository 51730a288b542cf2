//! `purge`: delete the rows that match `where`, or whose `time_column` is
//! older than `older_than`, in bounded batches (the ctid walk of
//! `walk.rs`), backing them up first when the task backs up.

use serde::Serialize;
use tokio_postgres::Client;

use super::references;
use super::rows::{Filter, walkable_table};
use super::walk::{Copy, WalkPlan};
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::config::file::{OnReferenced, TaskFile};
use crate::db::TableInfo;
use crate::sql::Destination;

#[derive(Debug, Clone, Serialize)]
pub struct PurgeSpec {
    /// As written in the config; resolved against the catalog at run time.
    pub table: String,
    #[serde(flatten)]
    pub filter: Filter,
    pub on_referenced: OnReferenced,
}

impl PurgeSpec {
    /// The rows this task would remove now, for health's task-backlog:
    /// the walk's own filter and cutoff.
    pub async fn backlog(
        &self,
        client: &Client,
        exact_count_limit: u64,
    ) -> Result<Option<(crate::sql::TableName, super::rows::Backlog)>, tokio_postgres::Error> {
        super::rows::pending(client, &self.table, &self.filter, exact_count_limit).await
    }

    pub fn target(&self) -> String {
        self.table.clone()
    }

    pub fn resolve(file: &TaskFile, report: &mut ReportProblem<'_>) -> Option<PurgeSpec> {
        let table = file.table.clone();
        if table.is_none() {
            report(
                "table",
                "a purge task needs `table`".into(),
                Some("add `table = \"schema.table\"`".into()),
            );
        }
        let filter = Filter::resolve(file, "purge", report);
        Some(PurgeSpec {
            table: table?,
            filter: filter?,
            on_referenced: file.on_referenced.unwrap_or_default(),
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
    walk: WalkPlan,
    info: TableInfo,
}

impl Task for PurgeSpec {
    type Plan = PurgePlan;

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<PurgePlan, TaskError> {
        let (info, filter_sql) = self
            .validate(ctx.client)
            .await
            .map_err(|p| TaskError::from_problems(&p))?;
        let cutoff = self.filter.cutoff(ctx.client).await?;
        let references = references::load(ctx.client, &info.name, info.oid).await?;
        Ok(PurgePlan {
            walk: WalkPlan {
                table: info.name.clone(),
                filter_sql,
                cutoff,
                pages: info.pages,
                estimated_rows: info.estimated_rows,
                columns: info.insertable_columns(),
                destination: Destination::Delete,
                references,
                on_referenced: self.on_referenced,
            },
            info,
        })
    }

    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &PurgePlan,
    ) -> Result<Outcome, TaskError> {
        let copy = if ctx.backup_dir.is_some() {
            Copy::Backup
        } else {
            Copy::Nowhere
        };
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
}

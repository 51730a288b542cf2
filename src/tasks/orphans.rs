//! `orphans`: rows of `table` whose `column` (or columns) match no row of
//! `references = "parent(col)"`, for relations without a foreign key. A
//! NULL reference is not an orphan (as with a foreign key's MATCH SIMPLE).
//! `action = "report"` counts them and shows sample keys; `"delete"` removes
//! them with the same batched ctid walk as purge, the anti-join as filter;
//! `"set_null"` walks the same way and sets the reference columns to NULL
//! instead, backing up their earlier values with each row's key (a
//! primary key or a unique key on NOT NULL columns) so `restore` can set
//! them back.

use crate::unnamed::Unnamed;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::leaves::Walks;
use super::references::OnReferenced;
use super::rows::walkable_table;
use super::values::OneOrMany;
use super::walk::{Copy, WalkPlan};
use super::{CheckProblem, Outcome, PlanLine, ReportProblem, Task, TaskContext, TaskError};
use crate::db::{self, Column, TableInfo};
use crate::sql::{self, Destination, TableName};
use crate::status::Status;
use crate::store::backups::SavedAs;

const SAMPLE_KEYS: i64 = 10;

/// The keys of an orphans task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrphansFile {
    table: Option<String>,
    column: Option<OneOrMany>,
    references: Option<String>,
    action: Option<OrphanAction>,
    backup: Option<bool>,
    on_referenced: Option<OnReferenced>,
    parallel: Option<u32>,
}

impl super::registry::KindFile for OrphansFile {
    const NAME: &'static str = "orphans";
    type Spec = OrphansSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<OrphansSpec> {
        OrphansSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OrphansSpec {
    pub table: String,
    pub columns: Vec<String>,
    /// The parent table as written, and its columns.
    pub parent: String,
    pub parent_columns: Vec<String>,
    pub action: OrphanAction,
    pub on_referenced: OnReferenced,
    /// Walkers over disjoint page ranges (`parallel = N`).
    pub parallel: u32,
    /// `backup = ...` as written.
    #[serde(skip)]
    pub backup: Option<bool>,
}

pub struct OrphansPlan {
    child: TableInfo,
    parent: TableName,
    filter_sql: String,
    walks: Walks,
    /// The child's and the parent's key columns, as the catalog names them.
    columns: Vec<String>,
    parent_columns: Vec<String>,
    /// For `set_null`: the columns each batch's backup saves (the row's
    /// key, then the columns cleared) and the key among them.
    saved: Vec<Column>,
    key: Vec<String>,
}

/// What `validate` found.
struct Validated {
    child: TableInfo,
    parent: TableName,
    filter: String,
    columns: Vec<String>,
    parent_columns: Vec<String>,
}

/// `parent(col)` or `schema.parent(a, b)` into the table and its columns.
fn parse_references(text: &str) -> Option<(String, Vec<String>)> {
    let open = text.find('(')?;
    let inner = text[open + 1..].trim_end().strip_suffix(')')?;
    let table = text[..open].trim().to_string();
    let columns: Vec<String> = inner
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect();
    if table.is_empty() || columns.iter().any(String::is_empty) {
        return None;
    }
    Some((table, columns))
}

impl OrphansSpec {
    pub(crate) fn resolve(
        file: OrphansFile,
        report: &mut ReportProblem<'_>,
    ) -> Option<OrphansSpec> {
        let table = file.table.clone();
        if table.is_none() {
            report(
                "table",
                "an orphans task needs `table`".into(),
                Some("add `table = \"comments\"`".into()),
            );
        }
        let columns = file.column.as_ref().map(|c| c.to_vec());
        if columns.as_ref().is_none_or(|c| c.is_empty()) {
            report(
                "column",
                "an orphans task needs `column`, the child's reference".into(),
                Some(
                    "add `column = \"post_id\"` (or `column = [\"a\", \"b\"]` for a composite key)"
                        .into(),
                ),
            );
        }
        let references = match &file.references {
            None => {
                report(
                    "references",
                    "an orphans task needs `references`".into(),
                    Some("add `references = \"posts(id)\"`".into()),
                );
                None
            }
            Some(text) => {
                let parsed = parse_references(text);
                if parsed.is_none() {
                    report(
                        "references",
                        format!("`{text}` is not of the form parent(column) or parent(a, b)"),
                        Some("write e.g. `references = \"public.posts(id)\"`".into()),
                    );
                }
                parsed
            }
        };
        if let (Some(columns), Some((_, parent_columns))) = (&columns, &references)
            && columns.len() != parent_columns.len()
        {
            report(
                "references",
                format!(
                    "`column` names {} column(s) but `references` names {}",
                    columns.len(),
                    parent_columns.len()
                ),
                Some("name the same number of columns on both sides, in matching order".into()),
            );
            return None;
        }
        let (parent, parent_columns) = references?;
        Some(OrphansSpec {
            table: table?,
            columns: columns?,
            parent,
            parent_columns,
            action: file.action.unwrap_or_default(),
            on_referenced: file.on_referenced.unwrap_or_default(),
            parallel: super::walk::parallel_of(file.parallel, report),
            backup: file.backup,
        })
    }

    /// Checks both tables and their columns. Returns the child, the
    /// parent's name, the orphans' condition, and the columns of each as
    /// the catalog names them (`"userId"` or `userId` as written).
    async fn validate(&self, client: &Client) -> Result<Validated, Vec<CheckProblem>> {
        let mut problems = Vec::new();
        let child = walkable_table(client, &self.table).await;
        let parent = db::lookup_table(client, &self.parent).await;
        let mut columns = Vec::new();
        if let Ok(child) = &child {
            for column in &self.columns {
                match child.named_column("column", column) {
                    Ok(found) => columns.push(found.name.clone()),
                    Err(missing) => problems.push(CheckProblem {
                        key: "column",
                        message: missing.message,
                        help: missing.help,
                    }),
                }
            }
        }
        let mut parent_columns = Vec::new();
        match &parent {
            Ok(parent) => {
                for column in &self.parent_columns {
                    match parent.named_column("references", column) {
                        Ok(found) => parent_columns.push(found.name.clone()),
                        Err(missing) => problems.push(CheckProblem {
                            key: "references",
                            message: format!("parent {}", missing.message),
                            help: missing.help,
                        }),
                    }
                }
            }
            Err(err) => problems.push(CheckProblem {
                key: "references",
                message: format!("parent {err}"),
                help: Some("check the parent table's name in `references`".into()),
            }),
        }
        let child = match child {
            Ok(child) => child,
            Err(problem) => {
                problems.insert(0, problem);
                return Err(problems);
            }
        };
        let Ok(parent) = parent else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        if self.action == OrphanAction::SetNull {
            problems.extend(
                set_null_problems(client, child.oid, &columns)
                    .await
                    .map_err(|err| {
                        vec![CheckProblem {
                            key: "action",
                            message: format!("cannot read the columns of {}: {err}", child.name),
                            help: None,
                        }]
                    })?,
            );
            if !problems.is_empty() {
                return Err(problems);
            }
        }
        let filter = sql::orphan_predicate(&child.name, &columns, &parent.name, &parent_columns);
        Ok(Validated {
            child,
            parent: parent.name,
            filter,
            columns,
            parent_columns,
        })
    }

    /// The orphans' count and a few of their keys, read-only.
    async fn count_and_samples(
        &self,
        client: &Client,
        plan: &OrphansPlan,
    ) -> Result<(u64, Vec<serde_json::Value>), tokio_postgres::Error> {
        crate::db::read_only(client, async {
            let count: i64 = client
                .row(
                    &sql::count_matching(&plan.child.name, &plan.filter_sql),
                    &[],
                )
                .await?
                .get(0);
            let keys = plan
                .columns
                .iter()
                .map(|c| format!("{}::text", sql::quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let samples = client
                .rows(
                    &format!(
                        "SELECT DISTINCT {keys} FROM {} WHERE {} LIMIT {SAMPLE_KEYS}",
                        plan.child.name.quoted(),
                        plan.filter_sql
                    ),
                    &[],
                )
                .await?
                .iter()
                .map(|row| {
                    let key: serde_json::Map<_, _> = self
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.clone(), json!(row.get::<_, Option<String>>(i))))
                        .collect();
                    serde_json::Value::Object(key)
                })
                .collect();
            Ok((count as u64, samples))
        })
        .await
    }

    fn report_outcome(
        &self,
        plan: &OrphansPlan,
        count: u64,
        samples: Vec<serde_json::Value>,
    ) -> Outcome {
        let report = Report {
            table: plan.child.name.to_string(),
            references: format!("{}({})", plan.parent, plan.parent_columns.join(", ")),
            action: OrphanAction::Report,
            orphans: count,
            sample_keys: samples,
            statements: vec![sql::count_matching(&plan.child.name, &plan.filter_sql)],
        };
        Outcome {
            status: Status::Succeeded,
            // Reporting changes no row.
            rows: 0,
            batches: 0,
            retries: 0,
            error: None,
            details: serde_json::to_value(report).unwrap_or_default(),
        }
    }
}

impl OrphansSpec {
    /// For `set_null`: the columns cleared, and the key a restore finds
    /// each row by, in the run's and the dry run's details.
    fn describe_set_null(&self, plan: &OrphansPlan, details: &mut serde_json::Value) {
        if self.action != OrphanAction::SetNull {
            return;
        }
        let written = |names: &[String]| -> Vec<String> {
            names.iter().map(|c| sql::as_written(c)).collect()
        };
        details["set_null_columns"] = json!(written(&plan.columns));
        details["key_columns"] = json!(written(&plan.key));
    }
}

/// What `action = "report"` found: the `details` of its run and dry run.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Report {
    pub table: String,
    pub references: String,
    pub action: OrphanAction,
    pub orphans: u64,
    pub sample_keys: Vec<serde_json::Value>,
    pub statements: Vec<String>,
}

/// Sample keys a plan shows (the JSON has all the dry run read).
const SAMPLES_SHOWN: usize = 3;

impl Task for OrphansSpec {
    type Plan = OrphansPlan;

    fn backup(&self) -> Option<bool> {
        self.backup
    }

    fn target(&self) -> String {
        format!(
            "{}({}) -> {}({})",
            self.table,
            self.columns.join(", "),
            self.parent,
            self.parent_columns.join(", ")
        )
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<OrphansPlan, TaskError> {
        let Validated {
            child,
            parent,
            filter: filter_sql,
            columns,
            parent_columns,
        } = self
            .validate(ctx.client)
            .await
            .map_err(|p| TaskError::from_problems(&p))?;
        let (key, saved, destination, references) = if self.action == OrphanAction::SetNull {
            // Setting columns removes no row: no foreign key into the table
            // is reached (validate refuses columns a key references).
            let key = row_key(ctx.client, child.oid, &columns).await?;
            let saved: Vec<Column> = key
                .iter()
                .chain(&columns)
                .filter_map(|name| child.column(name).cloned())
                .collect();
            let destination = Destination::Clear {
                columns: columns.clone(),
            };
            (key, saved, destination, Default::default())
        } else {
            let references = super::references::load(ctx.client, &child.name, child.oid).await?;
            (Vec::new(), Vec::new(), Destination::Delete, references)
        };
        let whole = WalkPlan {
            table: child.name.clone(),
            filter_sql: filter_sql.clone(),
            cutoff: None,
            session_zone: None,
            pages: child.pages,
            estimated_rows: child.estimated_rows,
            columns: if saved.is_empty() {
                child.insertable_columns()
            } else {
                saved.iter().map(|c| c.name.clone()).collect()
            },
            destination,
            references,
            on_referenced: self.on_referenced,
            parallel: self.parallel,
        };
        // The predicate names the child table: each leaf reads it with its
        // own name.
        let for_leaf =
            |leaf: &TableName| sql::orphan_predicate(leaf, &columns, &parent, &parent_columns);
        let walks = Walks::of(ctx.client, whole, &child, for_leaf).await?;
        Ok(OrphansPlan {
            child,
            parent,
            filter_sql,
            walks,
            columns,
            parent_columns,
            saved,
            key,
        })
    }

    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &OrphansPlan,
    ) -> Result<Outcome, TaskError> {
        let (count, samples) = self.count_and_samples(ctx.client, plan).await?;
        if self.action == OrphanAction::Report {
            return Ok(self.report_outcome(plan, count, samples));
        }
        let backup = ctx.backup_dir.is_some();
        let copy = || if backup { Copy::Backup } else { Copy::Nowhere };
        let verb = match self.action {
            OrphanAction::SetNull => "set_null",
            _ => "delete",
        };
        let mut outcome = plan.walks.describe(ctx, verb, copy).await?;
        outcome.details["orphans"] = json!(count);
        outcome.details["sample_keys"] = json!(samples);
        self.describe_set_null(plan, &mut outcome.details);
        Ok(outcome)
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: OrphansPlan,
    ) -> Result<Outcome, TaskError> {
        if self.action == OrphanAction::Report {
            // Reporting changes nothing: a run and a dry run say the same.
            let (count, samples) = self.count_and_samples(ctx.client, &plan).await?;
            return Ok(self.report_outcome(&plan, count, samples));
        }
        let writer = if self.action == OrphanAction::SetNull {
            let saved_as = SavedAs {
                action: "set_null",
                key_columns: &plan.key,
            };
            ctx.backup_writer_as(&plan.child.name, &plan.saved, &saved_as)
                .await?
        } else {
            ctx.backup_writer(&plan.child.name, &plan.child.columns)
                .await?
        };
        let mut outcome = plan.walks.execute(ctx, writer).await?;
        if self.action == OrphanAction::SetNull {
            outcome.details["action"] = json!("set_null");
        }
        self.describe_set_null(&plan, &mut outcome.details);
        Ok(outcome)
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.validate(client).await.err().unwrap_or_default()
    }

    /// A report's run: how many it found, and their keys.
    fn outcome_lines(details: &serde_json::Value) -> Vec<super::OutcomeLine> {
        use super::OutcomeLine;
        let Ok(report) = serde_json::from_value::<Report>(details.clone()) else {
            return Vec::new();
        };
        if report.action != OrphanAction::Report {
            return Vec::new();
        }
        let mut lines = vec![OutcomeLine::Named(format!(
            "{} orphan row(s) found (action = \"report\": nothing was deleted)",
            crate::output::count(report.orphans)
        ))];
        if !report.sample_keys.is_empty() {
            let keys: Vec<String> = report.sample_keys.iter().map(|k| k.to_string()).collect();
            lines.push(OutcomeLine::Item(format!(
                "sample keys: {}",
                keys.join(", ")
            )));
        }
        lines
    }

    /// A report: how many, and a few keys. A delete is a walk, which the
    /// printer renders as it does purge's.
    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<PlanLine>> {
        if details["action"] != "report" {
            return super::walk_text::plan_lines(details, context);
        }
        let report: Report = serde_json::from_value(details.clone()).ok()?;
        let mut lines = vec![PlanLine::Say(format!(
            "Would report {} orphan row{} of {} (rows whose reference matches no row of {}); action = \"report\" changes nothing.",
            crate::output::count(report.orphans),
            if report.orphans == 1 { "" } else { "s" },
            report.table,
            report.references,
        ))];
        if !report.sample_keys.is_empty() {
            let keys: Vec<String> = report
                .sample_keys
                .iter()
                .take(SAMPLES_SHOWN)
                .map(|k| k.to_string())
                .collect();
            lines.push(PlanLine::Say(format!("Sample keys: {}.", keys.join(", "))));
        }
        Some(lines)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanAction {
    #[default]
    Report,
    Delete,
    /// Sets the reference column(s) to NULL; the rows stay.
    SetNull,
}

/// Why `action = "set_null"` cannot clear these reference columns: a NOT
/// NULL or generated column, or a table without a primary key or unique
/// not-null key (which a restore needs to find each row again).
async fn set_null_problems(
    client: &Client,
    oid: u32,
    columns: &[String],
) -> Result<Vec<CheckProblem>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    let rows = client
        .rows(
            "SELECT attname::text, attnotnull, attgenerated <> '' FROM pg_attribute
              WHERE attrelid = $1 AND attname::text = ANY($2) AND attnum > 0 AND NOT attisdropped",
            &[&oid, &columns],
        )
        .await?;
    for column in columns {
        let Some(row) = rows.iter().find(|r| r.get::<_, String>(0) == *column) else {
            continue;
        };
        if row.get::<_, bool>(1) {
            problems.push(CheckProblem {
                key: "column",
                message: format!(
                    "column \"{column}\" is NOT NULL: action = \"set_null\" cannot clear it"
                ),
                help: Some(
                    "use action = \"delete\", or make the column nullable (ALTER TABLE ... ALTER COLUMN ... DROP NOT NULL)"
                        .into(),
                ),
            });
        } else if row.get::<_, bool>(2) {
            problems.push(CheckProblem {
                key: "column",
                message: format!(
                    "column \"{column}\" is a generated column: action = \"set_null\" cannot set it"
                ),
                help: Some("name the stored reference column, or use action = \"delete\"".into()),
            });
        }
    }
    let keyed = !row_key(client, oid, columns).await?.is_empty();
    if !keyed {
        problems.push(CheckProblem {
            key: "action",
            message: "action = \"set_null\" needs a primary key or a unique key on NOT NULL columns, to find each row again on restore; the table has none".into(),
            help: Some("add a primary key to the table, or use action = \"report\" or \"delete\"".into()),
        });
    }
    // Other tables' foreign keys onto a cleared column would block the
    // update or carry it on (ON UPDATE), changing rows no backup holds.
    let referenced = client
        .rows(
            "SELECT DISTINCT a.attname::text, c.conname::text, format('%I.%I', n.nspname, r.relname)
               FROM pg_constraint c
               JOIN pg_class r ON r.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = r.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = ANY(c.confkey)
              WHERE c.contype = 'f' AND c.confrelid = $1 AND a.attname::text = ANY($2)",
            &[&oid, &columns],
        )
        .await?;
    for row in &referenced {
        problems.push(CheckProblem {
            key: "column",
            message: format!(
                "column \"{}\" is referenced by foreign key \"{}\" of {}: setting it to NULL would change or block rows there that no backup holds",
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2)
            ),
            help: Some("use action = \"report\", or clear the referencing rows first".into()),
        });
    }
    // A partition key column set to NULL would move the row to another
    // partition, or fail.
    let keyed_by: Vec<String> = client
        .rows(
            "SELECT DISTINCT a.attname::text
               FROM pg_partition_ancestors($1::oid::regclass) t
               JOIN pg_partitioned_table p ON p.partrelid = t.relid
               JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = ANY(p.partattrs)
              WHERE a.attname::text = ANY($2)",
            &[&oid, &columns],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for column in keyed_by {
        problems.push(CheckProblem {
            key: "column",
            message: format!(
                "column \"{column}\" is part of the partition key: action = \"set_null\" cannot clear it"
            ),
            help: Some("use action = \"delete\" or \"report\"".into()),
        });
    }
    Ok(problems)
}

/// The key `set_null` saves with each row, by which a restore finds it
/// again: the primary key, else a unique index on NOT NULL stored columns
/// (without predicate or expression), none of them a column it clears.
/// Empty when the table has none.
async fn row_key(
    client: &Client,
    oid: u32,
    cleared: &[String],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client
        .row_opt(
            "SELECT ARRAY(SELECT a.attname::text
                            FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                           WHERE k.position <= i.indnkeyatts
                           ORDER BY k.position)
               FROM pg_index i
              WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                AND i.indexprs IS NULL
                AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                    AND (NOT a.attnotnull OR a.attgenerated <> '' OR a.attname::text = ANY($2)))
              ORDER BY i.indisprimary DESC, i.indnkeyatts, i.indexrelid
              LIMIT 1",
            &[&oid, &cleared],
        )
        .await?;
    Ok(row.map(|r| r.get(0)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_run_says_how_many_it_found_and_their_keys() {
        let details = json!({
            "table": "public.comments", "references": "posts(id)", "action": "report",
            "orphans": 1200, "sample_keys": [[7]], "statements": [],
        });
        assert_eq!(
            <OrphansSpec as Task>::outcome_lines(&details),
            [
                super::super::OutcomeLine::Named(
                    "1,200 orphan row(s) found (action = \"report\": nothing was deleted)".into()
                ),
                super::super::OutcomeLine::Item("sample keys: [7]".into()),
            ]
        );
    }

    #[test]
    fn a_report_plan_is_told_from_its_own_details() {
        let context = super::super::PlanContext {
            name: "a",
            rows: 0,
            batches: 0,
            options: &super::super::TaskOptions::BUILT_IN,
        };
        let details = json!({
            "table": "public.comments", "references": "posts(id)", "action": "report",
            "orphans": 2, "sample_keys": [[7], [9]], "statements": ["SELECT 1"],
        });
        let lines = <OrphansSpec as Task>::plan_lines(&details, &context).unwrap();
        assert_eq!(
            lines,
            [
                PlanLine::Say("Would report 2 orphan rows of public.comments (rows whose reference matches no row of posts(id)); action = \"report\" changes nothing.".into()),
                PlanLine::Say("Sample keys: [7], [9].".into()),
            ]
        );
        let delete = json!({"action": "delete", "table": "public.comments"});
        // A delete is a walk, told as purge's is.
        let lines = <OrphansSpec as Task>::plan_lines(&delete, &context).unwrap();
        assert_eq!(
            lines[0],
            PlanLine::Say("Nothing to delete: no row of public.comments matches.".into())
        );
    }

    #[test]
    fn references_parse_simple_qualified_and_composite() {
        assert_eq!(
            parse_references("posts(id)"),
            Some(("posts".into(), vec!["id".into()]))
        );
        assert_eq!(
            parse_references("app.orders (a, \"B\")"),
            Some(("app.orders".into(), vec!["a".into(), "B".into()]))
        );
        assert_eq!(parse_references("posts"), None);
        assert_eq!(parse_references("posts()"), None);
    }
}

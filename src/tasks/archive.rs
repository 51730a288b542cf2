//! `archive`: move the rows that match `where`, or whose `time_column` is
//! older than `older_than`, into an archive table. Each batch is one
//! statement that deletes from the source and inserts what it deleted into
//! the archive, so every row is in exactly one of the two tables at every
//! moment. The archive table is created like the source (columns, primary
//! key) when missing.

use crate::unnamed::Unnamed;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::leaves::{Walks, same_filter};
use super::references::OnReferenced;
use super::rows::{Filter, walkable_table};
use super::walk::{Copy, WalkPlan};
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::backup::{BackupWriter, Compression};
use crate::db::{self, TableInfo};
use crate::sql::{Destination, TableName, quote_ident};

/// The keys of an archive task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    table: Option<String>,
    #[serde(rename = "where")]
    where_: Option<String>,
    time_column: Option<String>,
    older_than: Option<String>,
    archive_table: Option<ArchiveTableFile>,
    archived_at: Option<String>,
    export: Option<String>,
    compression: Option<Compression>,
    backup: Option<bool>,
    on_referenced: Option<OnReferenced>,
    parallel: Option<u32>,
}

impl super::registry::KindFile for ArchiveFile {
    const NAME: &'static str = "archive";
    type Spec = ArchiveSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<ArchiveSpec> {
        ArchiveSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveSpec {
    pub table: String,
    #[serde(flatten)]
    pub filter: Filter,
    /// As written; `None` means `<table>_archive` beside the source.
    /// `None` with an export: the rows go to files only.
    pub archive_table: Option<String>,
    /// `archive_table = false`: export only.
    pub to_table: bool,
    pub archived_at: Option<String>,
    /// A directory for compressed CSV files of the moved rows.
    pub export: Option<String>,
    pub compression: Compression,
    pub on_referenced: OnReferenced,
    /// Walkers over disjoint page ranges (`parallel = N`).
    pub parallel: u32,
    /// `backup = ...` as written.
    #[serde(skip)]
    pub backup: Option<bool>,
}

/// The archive table: found, or to be created by the run.
pub struct ArchivePlan {
    walk: Walks,
    source: TableInfo,
    create: Option<String>,
}

/// Where the archive goes besides (or instead of) a table.
fn export_problem(export: &str) -> Option<CheckProblem> {
    match std::fs::metadata(export) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(CheckProblem {
            key: "export",
            message: format!("{export} is not a directory"),
            help: None,
        }),
        Err(err) => Some(CheckProblem {
            key: "export",
            message: format!("cannot use export directory {export}: {err}"),
            help: Some("create it (relative paths are relative to the config file)".into()),
        }),
    }
}

impl ArchiveSpec {
    pub(crate) fn resolve(
        file: ArchiveFile,
        report: &mut ReportProblem<'_>,
    ) -> Option<ArchiveSpec> {
        let table = file.table.clone();
        if table.is_none() {
            report(
                "table",
                "an archive task needs `table`".into(),
                Some("add `table = \"schema.table\"`".into()),
            );
        }
        let filter = Filter::resolve(
            file.where_.as_ref(),
            file.time_column.as_ref(),
            file.older_than.as_ref(),
            "archive",
            report,
        );
        let archive_table = match &file.archive_table {
            None | Some(ArchiveTableFile::Enabled(true)) => Some((None, true)),
            Some(ArchiveTableFile::Name(name)) if !name.trim().is_empty() => {
                // A name that makes a table is taken as PostgreSQL reads it,
                // so an unquoted mixed-case one would quietly fold.
                if let Some(quoted) = db::quoted_if_folded(name) {
                    report(
                        "archive_table",
                        format!(
                            "`{name}` is not quoted, so PostgreSQL would fold it to `{}`",
                            name.to_lowercase()
                        ),
                        Some(format!(
                            "mixed-case names must be quoted: archive_table = '{quoted}' (or write it in lower case: archive_table = '{}')",
                            name.to_lowercase()
                        )),
                    );
                    None
                } else {
                    Some((Some(name.clone()), true))
                }
            }
            Some(ArchiveTableFile::Name(_)) => {
                report("archive_table", "`archive_table` is empty".into(), None);
                None
            }
            Some(ArchiveTableFile::Enabled(false)) if file.export.is_some() => Some((None, false)),
            Some(ArchiveTableFile::Enabled(false)) => {
                report(
                    "archive_table",
                    "`archive_table = false` needs `export`: the rows must go somewhere".into(),
                    Some("add `export = \"/path/to/dir\"`, or name an archive table".into()),
                );
                None
            }
        };
        if file.compression.is_some() && file.export.is_none() {
            report(
                "compression",
                "`compression` applies to `export` files, and there is no `export`".into(),
                Some("add `export = \"DIR\"`, or remove `compression`".into()),
            );
        }
        if file.archived_at.is_some() && matches!(archive_table, Some((_, false))) {
            report(
                "archived_at",
                "`archived_at` is a column of the archive table, and `archive_table = false`"
                    .into(),
                None,
            );
        }
        let (archive_table, to_table) = archive_table?;
        Some(ArchiveSpec {
            table: table?,
            filter: filter?,
            archive_table,
            to_table,
            // A quoted name (`'"archivedAt"'`) is that column.
            archived_at: file.archived_at.as_deref().map(|at| {
                at.trim()
                    .strip_prefix('"')
                    .and_then(|a| a.strip_suffix('"'))
                    .map_or_else(|| at.to_string(), |inner| inner.replace("\"\"", "\""))
            }),
            export: file.export.clone(),
            compression: file.compression.unwrap_or_default(),
            on_referenced: file.on_referenced.unwrap_or_default(),
            parallel: super::walk::parallel_of(file.parallel, report),
            backup: file.backup,
        })
    }

    /// The archive table's name: as configured (resolved like PostgreSQL
    /// resolves names), or `<table>_archive` in the source's schema.
    async fn archive_name(
        &self,
        client: &Client,
        source: &TableName,
    ) -> Result<TableName, CheckProblem> {
        let Some(written) = &self.archive_table else {
            return Ok(TableName::new(
                &source.schema,
                format!("{}_archive", source.name),
            ));
        };
        let parts: Vec<String> = client
            .row("SELECT parse_ident($1)", &[written])
            .await
            .map_err(|err| CheckProblem {
                key: "archive_table",
                message: format!(
                    "\"{written}\" is not a valid table name: {}",
                    db::describe(&err)
                ),
                help: None,
            })?
            .get(0);
        match parts.as_slice() {
            [name] => Ok(TableName::new(&source.schema, name)),
            [schema, name] => Ok(TableName::new(schema, name)),
            _ => Err(CheckProblem {
                key: "archive_table",
                message: format!(
                    "\"{written}\" is not a table name (write `name` or `schema.name`)"
                ),
                help: None,
            }),
        }
    }

    /// Checks source, filter and archive table. Returns the source, the
    /// filter's SQL, the archive's name, whether it must be created, and
    /// the archive's columns a move inserts into.
    async fn validate(
        &self,
        client: &Client,
    ) -> Result<(TableInfo, String, TableName, bool, Vec<String>), Vec<CheckProblem>> {
        let source = walkable_table(client, &self.table)
            .await
            .map_err(|p| vec![p])?;
        let filter_sql = self.filter.validate(client, &source).await?;
        if let Some(problem) = self.export.as_deref().and_then(export_problem) {
            return Err(vec![problem]);
        }
        let archive = self
            .archive_name(client, &source.name)
            .await
            .map_err(|p| vec![p])?;
        if archive == source.name {
            return Err(vec![CheckProblem {
                key: "archive_table",
                message: "the archive table is the source table".into(),
                help: Some("name another table".into()),
            }]);
        }
        if !self.to_table {
            return Ok((source, filter_sql, archive, false, Vec::new()));
        }
        let (missing, moved) = match db::lookup_table(client, &archive.quoted()).await {
            Ok(found) => {
                let problems = differences(&source, &found, self.archived_at.as_deref());
                if !problems.is_empty() {
                    return Err(problems);
                }
                (false, moved_columns(&source, Some(&found)))
            }
            Err(db::LookupError::Missing(..)) => (true, moved_columns(&source, None)),
            Err(err) => {
                return Err(vec![CheckProblem {
                    key: "archive_table",
                    message: err.to_string(),
                    help: None,
                }]);
            }
        };
        Ok((source, filter_sql, archive, missing, moved))
    }
}

/// The archive's columns a move inserts into: every stored column of the
/// source, and each generated one the archive holds as a plain column (a
/// created archive holds them all so: `LIKE` copies no generation
/// expression), whose value is copied as it was, since the expression can
/// change later. One the archive computes itself is left to it.
fn moved_columns(source: &TableInfo, archive: Option<&TableInfo>) -> Vec<String> {
    source
        .columns
        .iter()
        .filter(|c| {
            !c.generated
                || archive.is_none_or(|a| a.column(&c.name).is_some_and(|mine| !mine.generated))
        })
        .map(|c| c.name.clone())
        .collect()
}

/// How an existing archive table fails to take the source's rows: each
/// source column must be there with the same type, and `archived_at` must
/// be a timestamp column.
fn differences(
    source: &TableInfo,
    archive: &TableInfo,
    archived_at: Option<&str>,
) -> Vec<CheckProblem> {
    let mut found = Vec::new();
    // A generated column the archive holds as a plain one is copied into
    // it, so its type must match too; one the archive lacks or computes
    // itself is left out of the move.
    let copied = |c: &&crate::db::Column| {
        !c.generated || archive.column(&c.name).is_some_and(|a| !a.generated)
    };
    for column in source.columns.iter().filter(copied) {
        match archive.column(&column.name) {
            None => found.push(format!(
                "column \"{}\" ({}) is missing",
                column.name, column.type_name
            )),
            Some(other) if other.type_name != column.type_name => found.push(format!(
                "column \"{}\" is {} in the archive but {} in the source",
                column.name, other.type_name, column.type_name
            )),
            Some(_) => {}
        }
    }
    if let Some(at) = archived_at {
        match archive.column(at) {
            None => found.push(format!("the archived_at column \"{at}\" is missing")),
            Some(c)
                if !matches!(
                    c.time,
                    Some(crate::sql::TimeKind::Timestamp | crate::sql::TimeKind::Timestamptz)
                ) =>
            {
                found.push(format!(
                    "the archived_at column \"{at}\" is {}, not a timestamp",
                    c.type_name
                ))
            }
            Some(_) => {}
        }
    }
    if found.is_empty() {
        return Vec::new();
    }
    vec![CheckProblem {
        key: "archive_table",
        message: format!(
            "archive table {} does not match {}: {}",
            archive.name,
            source.name,
            found.join("; ")
        ),
        help: Some(
            "alter the archive table to match, or name a new one (pgmaint creates it)".into(),
        ),
    }]
}

/// The DDL that creates the archive table like the source: same columns
/// and primary key, no defaults, indexes or triggers of its own.
fn create_statement(
    source: &TableName,
    archive: &TableName,
    key: &[String],
    archived_at: Option<&str>,
) -> String {
    let mut statement = format!(
        "CREATE TABLE {} (LIKE {} INCLUDING COMMENTS",
        archive.quoted(),
        source.quoted()
    );
    if let Some(at) = archived_at {
        statement.push_str(&format!(
            ", {} timestamptz NOT NULL DEFAULT now()",
            quote_ident(at)
        ));
    }
    if !key.is_empty() {
        statement.push_str(&format!(", PRIMARY KEY ({})", crate::sql::column_list(key)));
    }
    statement.push(')');
    statement
}

impl Task for ArchiveSpec {
    type Plan = ArchivePlan;

    fn makes(&self) -> Vec<super::Made> {
        if !self.to_table {
            return Vec::new();
        }
        vec![super::Made::Beside {
            beside: self.table.clone(),
            name: self.archive_table.clone(),
        }]
    }

    fn rows_filter(&self) -> Option<(&str, &super::rows::Filter)> {
        Some((&self.table, &self.filter))
    }

    fn backup(&self) -> Option<bool> {
        self.backup
    }

    fn anchor_paths(&mut self, base: &std::path::Path) {
        if let Some(export) = self.export.as_mut() {
            super::anchor(base, export);
        }
    }

    fn target(&self) -> String {
        let mut to = Vec::new();
        if self.to_table {
            to.push(
                self.archive_table
                    .clone()
                    .unwrap_or_else(|| format!("{}_archive", self.table)),
            );
        }
        if let Some(export) = &self.export {
            to.push(format!("{export}/"));
        }
        format!("{} -> {}", self.table, to.join(" + "))
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<ArchivePlan, TaskError> {
        let (source, filter_sql, archive, missing, moved) = self
            .validate(ctx.client)
            .await
            .map_err(|p| TaskError::from_problems(&p))?;
        let create = if missing {
            let key = db::primary_key(&*ctx.client, source.oid).await?;
            Some(create_statement(
                &source.name,
                &archive,
                &key,
                self.archived_at.as_deref(),
            ))
        } else {
            None
        };
        // Fixed in the task's time_zone: `now() - interval` of days and
        // months follows the zone's clock changes.
        let (cutoff, session_zone) =
            db::read_only(ctx.client, self.filter.cutoff_in_session(ctx.client)).await?;
        let references = super::references::load(ctx.client, &source.name, source.oid).await?;
        // An archive keeps what it moves; rows a cascade would delete (or
        // columns a SET NULL would clear) in other tables would be kept
        // nowhere unless a backup or an export holds them.
        // A table that cascades into itself loses a named row's replies
        // (named or not) to the cascade rather than to the archive.
        if references.has_own_tree() {
            return Err(TaskError::Target(format!(
                "{} cascades into itself (a row's replies go with it), so moving a row would delete the rows under it instead of moving them; nothing was moved. Use a purge with `backup = true`, or drop the ON DELETE CASCADE of its self-reference",
                source.name
            )));
        }
        if self.export.is_none()
            && ctx.backup_dir.is_none()
            && let Some(part) = references.parts.first()
        {
            return Err(TaskError::Target(format!(
                "moving rows out of {} would also {} rows of {} through foreign key \"{}\", and nothing would keep them; nothing was moved. Set `backup = true` (the backup then holds them and `pgmaint restore` puts them back), or archive {} first",
                source.name,
                if part.action == super::references::OnDelete::Cascade {
                    "delete"
                } else {
                    "change"
                },
                part.table,
                part.constraint,
                part.table
            )));
        }
        let whole = WalkPlan {
            table: source.name.clone(),
            filter_sql: filter_sql.clone(),
            cutoff,
            session_zone,
            pages: source.pages,
            estimated_rows: source.estimated_rows,
            // An export keeps generated columns' values; a backup leaves
            // them to be computed again.
            columns: if self.export.is_some() {
                source.columns.iter().map(|c| c.name.clone()).collect()
            } else {
                source.insertable_columns()
            },
            destination: if self.to_table {
                Destination::Move {
                    archive,
                    archived_at: self.archived_at.clone(),
                    columns: moved,
                }
            } else {
                Destination::Delete
            },
            references,
            on_referenced: self.on_referenced,
            parallel: self.parallel,
        };
        Ok(ArchivePlan {
            walk: Walks::of(ctx.client, whole, &source, same_filter(&filter_sql)).await?,
            source,
            create,
        })
    }

    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &ArchivePlan,
    ) -> Result<Outcome, TaskError> {
        // An export is the rows' copy; a backup is only taken without one.
        let backup = ctx.backup_dir.is_some();
        let copy = || match &self.export {
            Some(export) => Copy::Export(format!(
                "-- with each batch, before it commits: its rows written to {export} as {:?}-compressed CSV with a manifest, flushed to disk, and recorded in the state schema; files keep a .partial suffix until the batch commits",
                self.compression
            )),
            None if backup => Copy::Backup,
            None => Copy::Nowhere,
        };
        let mut outcome = plan.walk.describe(ctx, "move", copy).await?;
        if let Some(export) = &self.export {
            outcome.details["export"] = json!(export);
        }
        if !self.to_table {
            outcome.details["archive_table"] = json!(null);
            outcome.details["action"] = json!("export");
        }
        if let Destination::Move { archive, .. } = &plan.walk.whole().destination {
            outcome.details["archive_table"] = json!(archive.to_string());
        }
        if let Some(create) = &plan.create {
            outcome.details["creates_archive_table"] = json!(true);
            if let Some(list) = outcome.details["statements"].as_array_mut() {
                list.insert(
                    0,
                    json!(format!("{create}  -- the archive table does not exist yet")),
                );
            }
        }
        Ok(outcome)
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: ArchivePlan,
    ) -> Result<Outcome, TaskError> {
        if let Some(create) = &plan.create {
            ctx.log_statement(create);
            let tx = ctx.client.transaction().await?;
            tx.exec(
                "SELECT set_config('lock_timeout', $1, true)",
                &[&ctx.options.lock_timeout.as_pg_setting()],
            )
            .await?;
            tx.batch_execute(create).await?;
            tx.commit().await?;
        }
        let writer = match &self.export {
            Some(export) => Some(
                BackupWriter::start_export(
                    ctx.client,
                    &ctx.state_schema,
                    ctx.task_run_id,
                    ctx.task_name,
                    &plan.source.name,
                    &plan.source.columns,
                    std::path::Path::new(export),
                    self.compression,
                )
                .await?,
            ),
            None => {
                ctx.backup_writer(&plan.source.name, &plan.source.columns)
                    .await?
            }
        };
        let mut outcome = plan.walk.execute(ctx, writer).await?;
        if let Some(export) = &self.export {
            outcome.details["export"] = json!(export);
        }
        if plan.create.is_some() {
            outcome.details["created_archive_table"] = json!(true);
        }
        Ok(outcome)
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

/// `archive_table = "name"`, or `archive_table = false` for no table.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum ArchiveTableFile {
    Name(String),
    Enabled(bool),
}

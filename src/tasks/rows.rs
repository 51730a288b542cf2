//! Which rows a batched task works on: `where`, or `time_column` with
//! `older_than`. Shared by purge and archive, so both read, validate and
//! describe their rows the same way.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::{CheckProblem, ReportProblem};
use crate::config::file::TaskFile;
use crate::db::{self, TableInfo};
use crate::sql;

const TIME_TYPES: &[&str] = &[
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
];

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Filter {
    Where {
        #[serde(rename = "where")]
        predicate: String,
    },
    OlderThan {
        time_column: String,
        older_than: String,
    },
}

impl Filter {
    /// Reads `where` or `time_column` + `older_than`, reporting any mix-up.
    pub fn resolve(file: &TaskFile, kind: &str, report: &mut ReportProblem<'_>) -> Option<Filter> {
        match (&file.where_, &file.time_column, &file.older_than) {
            (Some(predicate), None, None) if !predicate.trim().is_empty() => Some(Filter::Where {
                predicate: predicate.clone(),
            }),
            (Some(_), None, None) => {
                report(
                    "where",
                    "`where` is empty".into(),
                    Some("write the condition rows must meet".into()),
                );
                None
            }
            (None, Some(column), Some(age)) => Some(Filter::OlderThan {
                time_column: column.clone(),
                older_than: age.clone(),
            }),
            (None, Some(_), None) => {
                report(
                    "time_column",
                    "`time_column` needs `older_than`".into(),
                    Some("add e.g. `older_than = \"30 days\"`".into()),
                );
                None
            }
            (None, None, Some(_)) => {
                report(
                    "older_than",
                    "`older_than` needs `time_column`".into(),
                    Some("add e.g. `time_column = \"created_at\"`".into()),
                );
                None
            }
            (None, None, None) => {
                report(
                    "kind",
                    format!("a {kind} task needs `where`, or `time_column` and `older_than`"),
                    Some("add `where = \"expires_at < now()\"` or `time_column = \"created_at\"` with `older_than = \"7 days\"`".into()),
                );
                None
            }
            (Some(_), _, _) => {
                report(
                    "where",
                    "`where` cannot be combined with `time_column`/`older_than`".into(),
                    Some("keep one: put the age condition into `where`, or drop `where`".into()),
                );
                None
            }
        }
    }

    /// Checks the filter against the table and returns its SQL, in which the
    /// cutoff (if any) is `$4`.
    pub async fn validate(
        &self,
        client: &Client,
        info: &TableInfo,
    ) -> Result<String, Vec<CheckProblem>> {
        let problem =
            |key, message: String, help: Option<String>| CheckProblem { key, message, help };
        match self {
            Filter::Where { predicate } => {
                let filter_sql = sql::predicate(predicate);
                let explain = sql::explain_matching(&info.name, &filter_sql);
                if let Err(err) = db::read_only(client, client.query(&explain, &[])).await {
                    return Err(vec![problem(
                        "where",
                        format!(
                            "the condition is not valid for table {}: {}",
                            info.name,
                            db::describe(&err)
                        ),
                        Some(format!(
                            "columns of {} are: {}",
                            info.name,
                            info.column_list()
                        )),
                    )]);
                }
                Ok(filter_sql)
            }
            Filter::OlderThan {
                time_column,
                older_than,
            } => {
                let mut problems = Vec::new();
                match info.column(time_column) {
                    None => problems.push(problem(
                        "time_column",
                        format!("table {} has no column \"{time_column}\"; columns are: {}", info.name, info.column_list()),
                        None,
                    )),
                    Some(column) if !TIME_TYPES.contains(&column.type_name.as_str()) => problems.push(problem(
                        "time_column",
                        format!("column \"{time_column}\" of {} is {}, not a date or timestamp", info.name, column.type_name),
                        Some("use a column of type date, timestamp or timestamptz, or write a `where` condition".into()),
                    )),
                    Some(_) => {}
                }
                if let Err(err) = client
                    .query_one("SELECT $1::text::interval", &[older_than])
                    .await
                {
                    problems.push(problem(
                        "older_than",
                        format!(
                            "`{older_than}` is not a PostgreSQL interval: {}",
                            db::describe(&err)
                        ),
                        Some("write e.g. \"7 days\", \"12 hours\", \"1 month\"".into()),
                    ));
                }
                if !problems.is_empty() {
                    return Err(problems);
                }
                Ok(sql::older_than_predicate(time_column, 4))
            }
        }
    }

    /// The cutoff for `older_than`, fixed once per run so every batch uses
    /// the same one.
    pub async fn cutoff(
        &self,
        client: &Client,
    ) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
        Ok(match self {
            Filter::OlderThan { older_than, .. } => Some(
                client
                    .query_one(
                        "SELECT (now() - $1::text::interval)::timestamptz",
                        &[older_than],
                    )
                    .await?
                    .get(0),
            ),
            Filter::Where { .. } => None,
        })
    }
}

/// Looks the table up for a batched task, refusing what a page walk cannot
/// handle.
pub async fn walkable_table(client: &Client, written: &str) -> Result<TableInfo, CheckProblem> {
    let info = db::lookup_table(client, written)
        .await
        .map_err(|err| CheckProblem {
            key: "table",
            message: err.to_string(),
            help: Some("check the name, or set search_path / qualify it as schema.table".into()),
        })?;
    if info.kind == 'p' {
        return Err(CheckProblem {
            key: "table",
            message: format!(
                "{} is a partitioned table; batched tasks walk one table's pages",
                info.name
            ),
            help: Some("configure a task per partition".into()),
        });
    }
    Ok(info)
}

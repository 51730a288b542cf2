//! `sql`: run SQL the application already has (often a cleanup function,
//! `SELECT * FROM cleanup_all_expired_tokens()`), under the task's timeouts,
//! in a transaction unless `transaction = false` (VACUUM, procedures that
//! COMMIT). Its result rows are shown and kept in the run's details, capped.

use serde::Serialize;
use serde_json::json;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::db;
use crate::status::Status;

/// At most this many result rows are kept in the run's details...
const MAX_ROWS: usize = 100;
/// ...and at most this many bytes of their text.
const MAX_BYTES: usize = 64 * 1024;

/// The keys of a sql task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlFile {
    sql: Option<String>,
    transaction: Option<bool>,
}

impl super::registry::KindFile for SqlFile {
    const NAME: &'static str = "sql";
    type Spec = SqlSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<SqlSpec> {
        SqlSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SqlSpec {
    pub sql: String,
    pub transaction: bool,
}

impl SqlSpec {
    pub(crate) fn resolve(file: SqlFile, report: &mut ReportProblem<'_>) -> Option<SqlSpec> {
        match &file.sql {
            Some(sql) if !sql.trim().is_empty() => Some(SqlSpec {
                sql: sql.clone(),
                transaction: file.transaction.unwrap_or(true),
            }),
            _ => {
                report(
                    "sql",
                    "a sql task needs `sql`, the statement to run".into(),
                    Some("add e.g. `sql = \"SELECT * FROM cleanup_expired_tokens()\"`".into()),
                );
                None
            }
        }
    }

    /// Parses the statement on the server without running it: a Parse
    /// message checks syntax, and for queries also tables, columns and
    /// functions. Several statements in one string cannot be parsed that
    /// way; they are only checked when run.
    async fn validate(&self, client: &Client) -> Vec<CheckProblem> {
        match crate::db::parse_columns(client, &self.sql).await {
            Ok(_) => Vec::new(),
            Err(err) if db::describe(&err).contains("cannot insert multiple commands") => {
                Vec::new()
            }
            Err(err) => vec![CheckProblem {
                key: "sql",
                message: format!("the SQL does not parse: {}", db::describe(&err)),
                help: Some("try it in psql first".into()),
            }],
        }
    }
}

/// The last result set of a simple query, capped, and the total row count
/// of every statement.
fn collect(messages: &[SimpleQueryMessage]) -> (u64, serde_json::Value) {
    let mut affected = 0;
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    let mut bytes = 0;
    let mut truncated = false;
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(description) => {
                columns = description.iter().map(|c| c.name().to_string()).collect();
                rows.clear();
                truncated = false;
                bytes = 0;
            }
            SimpleQueryMessage::Row(row) => {
                let values: Vec<Option<String>> = (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect();
                let size: usize = values.iter().flatten().map(String::len).sum();
                if rows.len() >= MAX_ROWS || bytes + size > MAX_BYTES {
                    truncated = true;
                } else {
                    bytes += size;
                    rows.push(values);
                }
            }
            SimpleQueryMessage::CommandComplete(n) => affected += n,
            _ => {}
        }
    }
    (
        affected,
        json!({ "columns": columns, "rows": rows, "truncated": truncated }),
    )
}

impl Task for SqlSpec {
    type Plan = ();

    fn needs_session(&self) -> bool {
        !self.transaction
    }

    fn target(&self) -> String {
        let flat = self.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        if flat.chars().count() > 60 {
            format!("{}...", flat.chars().take(57).collect::<String>())
        } else {
            flat
        }
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let problems = self.validate(ctx.client).await;
        match problems.first() {
            Some(problem) => Err(TaskError::Target(problem.message.clone())),
            None => Ok(()),
        }
    }

    async fn describe(&self, ctx: &mut TaskContext<'_>, _: &()) -> Result<Outcome, TaskError> {
        let (lock, statement) = (
            ctx.options.lock_timeout.as_pg_setting(),
            ctx.options.statement_timeout.as_pg_setting(),
        );
        // In a transaction the timeouts are its own (SET LOCAL); outside
        // one they are the session's, which is why such a task needs a
        // session of its own (`needs_session`).
        let mut statements = Vec::new();
        if self.transaction {
            statements.push("BEGIN".into());
            statements.push(format!("SET LOCAL lock_timeout = '{lock}'"));
            statements.push(format!("SET LOCAL statement_timeout = '{statement}'"));
        } else {
            statements.push(format!("SET lock_timeout = '{lock}'"));
            statements.push(format!("SET statement_timeout = '{statement}'"));
        }
        statements.push(self.sql.clone());
        if self.transaction {
            statements.push("COMMIT".into());
        }
        Ok(Outcome {
            status: Status::Succeeded,
            rows: 0,
            batches: 0,
            retries: 0,
            error: None,
            details: json!({
                "summary": format!(
                    "would run the SQL{} (a dry run does not run it: its effects are its own)",
                    if self.transaction { " in one transaction" } else { " outside a transaction" }
                ),
                "transaction": self.transaction,
                "statements": statements,
            }),
        })
    }

    async fn execute(&self, ctx: &mut TaskContext<'_>, _: ()) -> Result<Outcome, TaskError> {
        let client = &*ctx.client;
        let (lock, statement) = (&ctx.options.lock_timeout, &ctx.options.statement_timeout);
        let session = ctx.options.session();
        ctx.log_statement(&self.sql);
        let result = if self.transaction {
            // The timeouts for this transaction only: nothing is left on
            // the session (or, behind a pooler, on another client's).
            let (begun, local) = tokio::join!(
                client.batch_execute("BEGIN"),
                db::set_local_timeouts(client, &session)
            );
            begun?;
            let ran = match local {
                Ok(()) => client.simple_query(&self.sql).await,
                Err(err) => Err(err),
            };
            match ran {
                Ok(messages) => client.batch_execute("COMMIT").await.map(|_| messages),
                Err(err) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    Err(err)
                }
            }
        } else {
            // Outside a transaction (VACUUM, a procedure that commits): a
            // session of its own, `[database] direct_url` behind a pooler.
            db::set_session(client, "lock_timeout", &lock.as_pg_setting()).await?;
            db::set_session(client, "statement_timeout", &statement.as_pg_setting()).await?;
            let ran = client.simple_query(&self.sql).await;
            db::set_session(client, "lock_timeout", "0").await?;
            db::set_session(client, "statement_timeout", "0").await?;
            ran
        };
        let messages = result.map_err(|err| {
            TaskError::Database(format!(
                "the SQL failed{}: {}",
                if self.transaction {
                    " and was rolled back"
                } else {
                    ""
                },
                db::describe(&err)
            ))
        })?;
        let (affected, result) = collect(&messages);
        Ok(Outcome {
            status: Status::Succeeded,
            rows: affected,
            batches: 1,
            retries: 0,
            error: None,
            details: json!({ "transaction": self.transaction, "result": result }),
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.validate(client).await
    }

    /// Its result rows, as a table.
    fn outcome_lines(details: &serde_json::Value) -> Vec<super::OutcomeLine> {
        use super::OutcomeLine;
        #[derive(serde::Deserialize)]
        struct RunDetails {
            result: Option<ResultRows>,
        }
        #[derive(serde::Deserialize)]
        struct ResultRows {
            columns: Vec<String>,
            rows: Vec<Vec<Option<String>>>,
            #[serde(default)]
            truncated: bool,
        }
        let Ok(RunDetails {
            result: Some(result),
        }) = serde_json::from_value(details.clone())
        else {
            return Vec::new();
        };
        if result.columns.is_empty() {
            return Vec::new();
        }
        let headers: Vec<&str> = result.columns.iter().map(String::as_str).collect();
        let mut table = crate::output::Table::new(&headers);
        for row in result.rows {
            table.add_row(row.into_iter().map(|v| v.unwrap_or_else(|| "NULL".into())));
        }
        let mut lines = vec![
            OutcomeLine::Named("result".into()),
            OutcomeLine::Block(table.render(crate::output::stdout_width())),
        ];
        if result.truncated {
            lines.push(OutcomeLine::Plain(
                "(more rows than shown; the run's details keep the first ones)".into(),
            ));
        }
        lines
    }

    /// What it would run, and that its locks are its SQL's own.
    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        use super::PlanLine;
        #[derive(serde::Deserialize)]
        struct PlanDetails {
            summary: String,
        }
        let plan: PlanDetails = serde_json::from_value(details.clone()).ok()?;
        Some(vec![
            PlanLine::summary(&plan.summary),
            PlanLine::Say(format!(
                "Locks: what its SQL takes, each waited for at most lock_timeout {}.",
                context.options.lock_timeout
            )),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::OutcomeLine;

    #[test]
    fn a_run_shows_its_result_rows_as_a_table() {
        let details = json!({
            "transaction": true,
            "result": {"columns": ["deleted"], "rows": [["3"], [null]], "truncated": true},
        });
        let lines = <SqlSpec as Task>::outcome_lines(&details);
        assert_eq!(lines[0], OutcomeLine::Named("result".into()));
        assert!(
            matches!(&lines[1], OutcomeLine::Block(table) if table.contains("deleted") && table.contains("NULL")),
            "{lines:?}"
        );
        assert_eq!(
            lines[2],
            OutcomeLine::Plain(
                "(more rows than shown; the run's details keep the first ones)".into()
            )
        );
        assert!(<SqlSpec as Task>::outcome_lines(&json!({"transaction": true})).is_empty());
    }
}

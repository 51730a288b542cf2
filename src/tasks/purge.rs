//! `purge`: delete the rows that match `where`, or whose `time_column` is
//! older than `older_than`, in bounded batches.
//!
//! The batches walk the table's pages in order (a ctid walk): each batch
//! deletes matching rows from a window of pages, found by a TID Range Scan,
//! so it never re-reads the dead tuples earlier batches left behind. The
//! window adapts so a batch deletes about `batch_size` rows. Wide windows
//! carry a `LIMIT` that caps the batch; a narrow window, sized to hold at
//! most a batch at the table's average rows per page, is deleted whole, so
//! pages much denser than average can take a batch somewhat over. docs/architecture.md has the
//! measurements behind this choice.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::{CheckProblem, Counters, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::config::file::TaskFile;
use crate::db::{self, TableInfo};
use crate::sql::{self, TableName};
use crate::status::Status;

/// Largest page window one batch scans (64 MiB of 8 KiB pages).
const MAX_WINDOW_PAGES: i64 = 8192;
/// A batch slower than this scans a smaller window next time.
const SLOW_BATCH: Duration = Duration::from_millis(150);
const SAMPLE_ROWS: u32 = 5;
const TIME_TYPES: &[&str] = &[
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
];

#[derive(Debug, Clone, Serialize)]
pub struct PurgeSpec {
    /// As written in the config; resolved against the catalog at run time.
    pub table: String,
    #[serde(flatten)]
    pub filter: Filter,
}

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

/// What `prepare` fixed: the table as found in the catalog, the filter's
/// SQL and its cutoff, and the pages to walk.
pub struct PurgePlan {
    table: TableName,
    filter_sql: String,
    cutoff: Option<DateTime<Utc>>,
    pages: i64,
    estimated_rows: f64,
}

impl PurgePlan {
    /// The parameters of the filter, numbered after the batch's own three.
    fn filter_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match &self.cutoff {
            Some(cutoff) => vec![cutoff],
            None => vec![],
        }
    }

    /// The filter's SQL for a statement where it is the only parameter user.
    fn filter_alone(&self) -> String {
        self.filter_sql.replace("$4", "$1")
    }

    fn batch_statement(&self) -> String {
        sql::delete_batch_in_pages(&self.table, &self.filter_sql)
    }

    /// The statement for windows that cannot hold more than a batch.
    fn narrow_statement(&self) -> String {
        sql::delete_in_pages(&self.table, &self.filter_sql.replace("$4", "$3"))
    }
}

impl PurgeSpec {
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
        let filter = match (&file.where_, &file.time_column, &file.older_than) {
            (Some(predicate), None, None) if !predicate.trim().is_empty() => Some(Filter::Where {
                predicate: predicate.clone(),
            }),
            (Some(_), None, None) => {
                report(
                    "where",
                    "`where` is empty".into(),
                    Some("write the condition rows must meet to be deleted".into()),
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
                    "a purge task needs `where`, or `time_column` and `older_than`".into(),
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
        };
        Some(PurgeSpec {
            table: table?,
            filter: filter?,
        })
    }

    /// Finds the table and checks the filter against it. Every problem is
    /// returned with the key it belongs to.
    async fn validate(&self, client: &Client) -> Result<(TableInfo, String), Vec<CheckProblem>> {
        let problem =
            |key, message: String, help: Option<String>| CheckProblem { key, message, help };
        let info = db::lookup_table(client, &self.table).await.map_err(|err| {
            vec![problem(
                "table",
                err.to_string(),
                Some("check the name, or set search_path / qualify it as schema.table".into()),
            )]
        })?;
        if info.kind == 'p' {
            return Err(vec![problem(
                "table",
                format!(
                    "{} is a partitioned table; purge walks one table's pages",
                    info.name
                ),
                Some("configure a purge task per partition".into()),
            )]);
        }
        let filter_sql = match &self.filter {
            Filter::Where { predicate } => sql::predicate(predicate),
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
                sql::older_than_predicate(time_column, 4)
            }
        };
        if let Filter::Where { .. } = &self.filter {
            let explain = sql::explain_matching(&info.name, &filter_sql);
            if let Err(err) = read_only(client, &explain).await {
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
        }
        Ok((info, filter_sql))
    }
}

/// Runs one statement in a read-only transaction and discards the result.
async fn read_only(client: &Client, statement: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN READ ONLY").await?;
    let result = client.query(statement, &[]).await;
    client.batch_execute("ROLLBACK").await?;
    result.map(|_| ())
}

impl Task for PurgeSpec {
    type Plan = PurgePlan;

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<PurgePlan, TaskError> {
        let (info, filter_sql) = self.validate(ctx.client).await.map_err(|problems| {
            TaskError::Target(
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.key, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let cutoff = match &self.filter {
            Filter::OlderThan { older_than, .. } => Some(
                ctx.client
                    .query_one(
                        "SELECT (now() - $1::text::interval)::timestamptz",
                        &[older_than],
                    )
                    .await?
                    .get::<_, DateTime<Utc>>(0),
            ),
            Filter::Where { .. } => None,
        };
        Ok(PurgePlan {
            table: info.name,
            filter_sql,
            cutoff,
            pages: info.pages,
            estimated_rows: info.estimated_rows,
        })
    }

    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &PurgePlan,
    ) -> Result<Outcome, TaskError> {
        let client = &*ctx.client;
        let transaction_start = "BEGIN READ ONLY";
        client.batch_execute(transaction_start).await?;
        let described = async {
            let filter = plan.filter_alone();
            let params = plan.filter_params();
            let explain: serde_json::Value = client
                .query_one(&sql::explain_matching(&plan.table, &filter), &params)
                .await?
                .get(0);
            let estimate = explain[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as u64;
            let exact = plan.estimated_rows <= ctx.options.exact_count_limit as f64;
            let rows = if exact {
                let count: i64 = client
                    .query_one(&sql::count_matching(&plan.table, &filter), &params)
                    .await?
                    .get(0);
                count as u64
            } else {
                estimate
            };
            let samples: Vec<serde_json::Value> = client
                .query(
                    &sql::sample_matching(&plan.table, &filter, SAMPLE_ROWS),
                    &params,
                )
                .await?
                .iter()
                .map(|row| {
                    serde_json::from_str(row.get::<_, &str>(0)).unwrap_or(serde_json::Value::Null)
                })
                .collect();
            Ok::<_, tokio_postgres::Error>((rows, exact, samples))
        }
        .await;
        client.batch_execute("ROLLBACK").await?;
        let (rows, exact, samples) = described?;
        let batches = rows.div_ceil(ctx.options.batch_size);
        let mut params = json!({
            "$1": "first page of the batch",
            "$2": "page after the batch",
            "$3": ctx.options.batch_size,
        });
        if let Some(cutoff) = plan.cutoff {
            params["$4"] = json!(cutoff.to_rfc3339());
        }
        Ok(Outcome {
            status: Status::Succeeded,
            rows,
            batches,
            retries: 0,
            error: None,
            details: json!({
                "table": plan.table.to_string(),
                "rows_exact": exact,
                "cutoff": plan.cutoff.map(|c| c.to_rfc3339()),
                "pages": plan.pages,
                "samples": samples,
                "statements": [
                    format!("SET lock_timeout = '{}'", ctx.options.lock_timeout.as_pg_setting()),
                    format!("SET statement_timeout = '{}'", ctx.options.statement_timeout.as_pg_setting()),
                    format!("-- each batch, one transaction, walking pages 0..{} of {}; windows that can hold more than a batch:", plan.pages, plan.table),
                    plan.batch_statement(),
                    "-- windows that cannot hold more than a batch ($3 is then the cutoff, if any):".to_string(),
                    plan.narrow_statement(),
                ],
                "parameters": params,
            }),
        })
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: PurgePlan,
    ) -> Result<Outcome, TaskError> {
        db::set_session(
            ctx.client,
            "lock_timeout",
            &ctx.options.lock_timeout.as_pg_setting(),
        )
        .await?;
        db::set_session(
            ctx.client,
            "statement_timeout",
            &ctx.options.statement_timeout.as_pg_setting(),
        )
        .await?;
        let statements = Statements {
            limited: ctx.client.prepare(&plan.batch_statement()).await?,
            narrow: ctx.client.prepare(&plan.narrow_statement()).await?,
        };
        ctx.log_statement(&plan.batch_statement());
        ctx.log_statement(&plan.narrow_statement());
        let mut walk = Walk::new(&plan, ctx.options.batch_size);
        ctx.progress.start(plan.pages as u64, "pages");

        let mut stopped = walk.pages(ctx, &statements, 0, plan.pages).await?;
        // Rows inserted or moved (by an update) past the end while the walk
        // ran: walk the pages added since, until the table stops growing.
        let mut end = plan.pages;
        while stopped.is_none() {
            let now: i64 = ctx
                .client
                .query_one("SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint", &[&plan.table.quoted()])
                .await?
                .get(0);
            if now <= end {
                break;
            }
            stopped = walk.pages(ctx, &statements, end, now).await?;
            end = now;
        }
        // Ranges whose locks stayed busy get one more round at the end.
        let deferred = std::mem::take(&mut walk.deferred);
        for (from, to) in deferred {
            if stopped.is_some() {
                walk.deferred.push((from, to));
                continue;
            }
            stopped = walk.pages(ctx, &statements, from, to).await?;
        }
        ctx.progress.finish();
        db::set_session(ctx.client, "lock_timeout", "0").await?;
        db::set_session(ctx.client, "statement_timeout", "0").await?;

        let mut details = json!({
            "table": plan.table.to_string(),
            "cutoff": plan.cutoff.map(|c| c.to_rfc3339()),
            "pages": plan.pages,
            "longest_batch_ms": walk.longest_batch.as_millis() as u64,
        });
        let counters = walk.counters;
        let (status, error) = if let Some(reason) = stopped {
            let remaining = estimate_remaining(ctx.client, &plan).await.unwrap_or(0);
            details["remaining_rows_estimate"] = json!(remaining);
            (
                Status::Cancelled,
                Some(format!(
                    "{reason} after {} rows; about {remaining} matching rows remain for the next run",
                    counters.rows
                )),
            )
        } else if !walk.deferred.is_empty() {
            let pages: i64 = walk.deferred.iter().map(|(a, b)| b - a).sum();
            details["locked_pages"] = json!(pages);
            (
                Status::Failed,
                Some(format!(
                    "{} batch(es) covering {pages} pages could not get their locks within lock_timeout {} after {} retries each; those rows remain and the next run retries them",
                    walk.deferred.len(),
                    ctx.options.lock_timeout,
                    ctx.options.max_retries
                )),
            )
        } else {
            (Status::Succeeded, None)
        };
        Ok(Outcome {
            status,
            rows: counters.rows,
            batches: counters.batches,
            retries: counters.retries,
            error,
            details,
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.validate(client).await.err().unwrap_or_default()
    }
}

async fn estimate_remaining(
    client: &Client,
    plan: &PurgePlan,
) -> Result<u64, tokio_postgres::Error> {
    let explain: serde_json::Value = client
        .query_one(
            &sql::explain_matching(&plan.table, &plan.filter_alone()),
            &plan.filter_params(),
        )
        .await?
        .get(0);
    Ok(explain[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as u64)
}

/// The two prepared forms of a batch.
struct Statements {
    /// `ORDER BY ctid LIMIT batch_size`: for windows that might hold more.
    limited: tokio_postgres::Statement,
    /// A plain DELETE over the page range: for windows that cannot.
    narrow: tokio_postgres::Statement,
}

/// The state of one ctid walk over a table.
struct Walk<'p> {
    plan: &'p PurgePlan,
    batch_size: u64,
    window: i64,
    /// The widest window that cannot hold more than a batch of rows, at the
    /// table's average rows per page.
    narrow_window: i64,
    counters: Counters,
    longest_batch: Duration,
    deferred: Vec<(i64, i64)>,
}

enum Attempt {
    Done {
        rows: u64,
        last_page: Option<i64>,
        took: Duration,
    },
    LocksBusy,
}

impl<'p> Walk<'p> {
    fn new(plan: &'p PurgePlan, batch_size: u64) -> Self {
        // Start as if every row matched: the smallest window that could hold
        // a full batch. It grows where matches are sparse.
        let rows_per_page = if plan.pages > 0 && plan.estimated_rows > 0.0 {
            (plan.estimated_rows / plan.pages as f64).max(1.0)
        } else {
            100.0
        };
        let window =
            ((batch_size as f64 / rows_per_page).floor() as i64).clamp(1, MAX_WINDOW_PAGES);
        Walk {
            plan,
            batch_size,
            window,
            narrow_window: window,
            counters: Counters::default(),
            longest_batch: Duration::ZERO,
            deferred: Vec::new(),
        }
    }

    /// Walks pages `[from, to)`. Returns why it stopped early, if it did.
    async fn pages(
        &mut self,
        ctx: &mut TaskContext<'_>,
        statements: &Statements,
        from: i64,
        to: i64,
    ) -> Result<Option<&'static str>, TaskError> {
        let mut page = from;
        while page < to {
            if let Some(reason) = ctx.should_stop() {
                return Ok(Some(reason));
            }
            let upper = (page + self.window).min(to);
            match self
                .batch_with_retries(ctx, statements, page, upper)
                .await?
            {
                Attempt::Done {
                    rows,
                    last_page,
                    took,
                } => {
                    self.counters.rows += rows;
                    self.counters.batches += 1;
                    self.longest_batch = self.longest_batch.max(took);
                    page = self.next_page(page, upper, rows, last_page, took);
                }
                Attempt::LocksBusy => {
                    self.deferred.push((page, upper));
                    page = upper;
                }
            }
            ctx.progress.update(page as u64, self.counters.rows);
            ctx.record_progress(self.counters).await?;
            if !ctx.options.pause.0.is_zero() && page < to {
                ctx.stop.sleep(ctx.options.pause.0).await;
            }
        }
        Ok(None)
    }

    /// Where the next batch starts, and how wide it is.
    fn next_page(
        &mut self,
        page: i64,
        upper: i64,
        rows: u64,
        last_page: Option<i64>,
        took: Duration,
    ) -> i64 {
        if rows >= self.batch_size && last_page.is_some() {
            // The LIMIT cut the batch short: resume on the last page it
            // touched (its other rows may still match) with a window that
            // matches what one batch actually covered.
            let last = last_page.unwrap_or(page).clamp(page, upper);
            self.window = (last - page + 1).clamp(1, MAX_WINDOW_PAGES);
            return last;
        }
        let covered = (upper - page).max(1);
        let grown = if rows == 0 {
            covered * 4
        } else {
            let density = rows as f64 / covered as f64;
            ((self.batch_size as f64 * 0.9 / density) as i64).min(covered * 4)
        };
        self.window = if took > SLOW_BATCH {
            covered / 2
        } else {
            grown
        }
        .clamp(1, MAX_WINDOW_PAGES);
        upper
    }

    /// One batch, retried with backoff while its locks are busy.
    async fn batch_with_retries(
        &mut self,
        ctx: &mut TaskContext<'_>,
        statements: &Statements,
        from: i64,
        to: i64,
    ) -> Result<Attempt, TaskError> {
        let limit = self.batch_size as i64;
        let narrow = to - from <= self.narrow_window;
        let mut params: Vec<&(dyn ToSql + Sync)> = if narrow {
            vec![&from, &to]
        } else {
            vec![&from, &to, &limit]
        };
        params.extend(self.plan.filter_params());
        for attempt in 0..=ctx.options.max_retries {
            if ctx.verbose {
                eprintln!(
                    "[{}] batch pages {from}..{to} (attempt {})",
                    ctx.task_name,
                    attempt + 1
                );
            }
            let started = Instant::now();
            let result = async {
                // One statement is its own transaction: it commits whole or
                // not at all, without BEGIN and COMMIT round trips.
                let done = if narrow {
                    (ctx.client.execute(&statements.narrow, &params).await?, None)
                } else {
                    let row = ctx.client.query_one(&statements.limited, &params).await?;
                    (row.get::<_, i64>(0) as u64, row.get(1))
                };
                Ok::<_, tokio_postgres::Error>(done)
            }
            .await;
            match result {
                Ok((rows, last_page)) => {
                    return Ok(Attempt::Done {
                        rows,
                        last_page,
                        took: started.elapsed(),
                    });
                }
                Err(err) if db::is_transient(&err) => {
                    self.counters.retries += 1;
                    tracing::info!(
                        task = ctx.task_name,
                        from,
                        to,
                        "batch could not get its locks: {}",
                        db::describe(&err)
                    );
                    if attempt == ctx.options.max_retries || ctx.should_stop().is_some() {
                        break;
                    }
                    let backoff = Duration::from_millis(100 * 2u64.pow(attempt.min(6)))
                        .min(Duration::from_secs(5));
                    ctx.stop.sleep(backoff).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(Attempt::LocksBusy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pages: i64, rows: f64) -> PurgePlan {
        PurgePlan {
            table: TableName::new("public", "t"),
            filter_sql: "true".into(),
            cutoff: None,
            pages,
            estimated_rows: rows,
        }
    }

    #[test]
    fn first_window_fits_one_batch_of_dense_rows() {
        let p = plan(1000, 100_000.0);
        assert_eq!(Walk::new(&p, 5000).window, 50);
    }

    #[test]
    fn window_grows_over_sparse_pages_and_shrinks_when_the_limit_cuts() {
        let p = plan(100_000, 1_000_000.0);
        let mut walk = Walk::new(&p, 1000);
        assert_eq!(walk.window, 100);
        let next = walk.next_page(0, 100, 0, None, Duration::from_millis(1));
        assert_eq!((next, walk.window), (100, 400));
        let next = walk.next_page(100, 500, 1000, Some(150), Duration::from_millis(1));
        assert_eq!((next, walk.window), (150, 51));
    }

    #[test]
    fn slow_batches_halve_the_window() {
        let p = plan(100_000, 1_000_000.0);
        let mut walk = Walk::new(&p, 1000);
        walk.next_page(0, 100, 10, None, Duration::from_secs(1));
        assert_eq!(walk.window, 50);
    }
}

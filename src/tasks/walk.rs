//! The ctid walk that purge, archive and orphans share: batches over a
//! window of the table's pages, found by a TID Range Scan, so a batch never
//! re-reads the dead tuples earlier batches left behind. The window adapts
//! so a batch removes about `batch_size` rows. Wide windows carry a `LIMIT`
//! that caps the batch; a narrow window, up to two batches' worth of pages
//! at the table's average rows per page, goes whole, so a batch can take up
//! to about twice `batch_size`. docs/architecture.md has the measurements
//! behind this.
//!
//! Each batch is one transaction: a single statement when nothing else has
//! to happen, or, when the removed rows are also backed up, the statement
//! plus the backup's index row, committed only after the backup file is on
//! disk.

use crate::unnamed::Unnamed;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_postgres::types::{ToSql, Type};

use super::references::OnReferenced;
use super::references::{OnDelete, Part, References};
use super::{Counters, Outcome, TaskContext, TaskError};
use crate::backup::{BackupPart, BackupWriter};
use crate::db;
use crate::sql::{self, Destination, TableName, WalkBatch};
use crate::status::Status;

/// Largest page window one batch scans (64 MiB of 8 KiB pages).
const MAX_WINDOW_PAGES: i64 = 8192;
/// A window of up to this many batches' worth of pages (at the table's
/// average rows per page) is deleted whole, without a LIMIT.
const NARROW_BATCHES: i64 = 2;
/// A batch slower than this scans a smaller window next time.
const SLOW_BATCH: Duration = Duration::from_millis(150);
const SAMPLE_ROWS: u32 = 5;
/// The last pages looked at first for a row a condition leaves.
const TAIL_PAGES: i64 = 64;

/// Where a batch's removed rows are copied before it commits, for the dry
/// run to say.
pub enum Copy {
    Nowhere,
    Backup,
    /// An archive's export files, described by the sentence given.
    Export(String),
}

/// What `prepare` fixed for a walk: the table as found in the catalog, the
/// filter's SQL and its cutoff, the pages to walk, and where rows go.
#[derive(Clone)]
pub struct WalkPlan {
    pub table: TableName,
    pub filter_sql: String,
    pub cutoff: Option<DateTime<Utc>>,
    /// The session's `TimeZone` when the cutoff was fixed: where it is
    /// shown without a task `time_zone`.
    pub session_zone: Option<chrono_tz::Tz>,
    pub pages: i64,
    pub estimated_rows: f64,
    /// The columns a move copies and a backup saves (generated ones left out).
    pub columns: Vec<String>,
    pub destination: Destination,
    /// What the removal reaches through foreign keys into the table.
    pub references: References,
    pub on_referenced: OnReferenced,
    /// How many walkers may share the pages (`parallel = N`).
    pub parallel: u32,
}

/// The most walkers one task may run (`parallel`), each a connection.
const MAX_PARALLEL: u32 = 16;

/// `parallel = N` as the config gives it: 1 to [`MAX_PARALLEL`], 1 when
/// unset; anything else is reported at the key (and 1 returned).
pub(crate) fn parallel_of(value: Option<u32>, report: &mut super::ReportProblem<'_>) -> u32 {
    match value {
        None => 1,
        Some(n @ 1..=MAX_PARALLEL) => n,
        Some(n) => {
            report(
                "parallel",
                format!("`parallel = {n}` is not between 1 and {MAX_PARALLEL}"),
                Some(format!(
                    "each walker is a connection and a backend busy with the table; 2 to 4 is usually plenty (at most {MAX_PARALLEL})"
                )),
            );
            1
        }
    }
}

/// Walkers' running totals, summed for the progress bar and the task's
/// history row while they go.
#[derive(Default)]
struct Tally {
    pages: std::sync::atomic::AtomicU64,
    rows: std::sync::atomic::AtomicU64,
    batches: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
    /// A walker failed: the others stop at their next batch.
    failed: std::sync::atomic::AtomicBool,
}

impl Tally {
    /// Adds one batch of a walker (the pages it moved on, its counters
    /// before and after); returns the pages and rows all walkers did.
    fn add(&self, pages: i64, before: Counters, after: Counters) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.batches
            .fetch_add(after.batches - before.batches, Relaxed);
        self.retries
            .fetch_add(after.retries - before.retries, Relaxed);
        let rows =
            self.rows.fetch_add(after.rows - before.rows, Relaxed) + after.rows - before.rows;
        let pages = self.pages.fetch_add(pages.max(0) as u64, Relaxed) + pages.max(0) as u64;
        (pages, rows)
    }

    fn counters(&self) -> Counters {
        use std::sync::atomic::Ordering::Relaxed;
        Counters {
            rows: self.rows.load(Relaxed),
            batches: self.batches.load(Relaxed),
            retries: self.retries.load(Relaxed),
        }
    }
}

impl WalkPlan {
    /// The cutoff as the plan and the run show it: in the task's
    /// `time_zone` when it has one (the zone a `timestamp` column is read
    /// in), else in the session's zone, where it is compared.
    pub(crate) fn cutoff_text(&self, zone: Option<chrono_tz::Tz>) -> Option<String> {
        self.cutoff.map(|c| match zone.or(self.session_zone) {
            Some(zone) => c.with_timezone(&zone).to_rfc3339(),
            None => c.to_rfc3339(),
        })
    }

    /// The cutoff, as the `$4` every walk statement takes ([`sql::WALK_PARAMS`]).
    fn cutoff_param(&self) -> &(dyn ToSql + Sync) {
        &self.cutoff
    }

    /// Runs one of the dry run's reads of the matching rows: prepared with
    /// the walk's parameters so the filter's text is the batches' own, the
    /// page and limit parameters left NULL.
    async fn read_matching(
        &self,
        client: &tokio_postgres::Client,
        statement: &str,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        super::rows::read_matching(client, statement, &self.cutoff).await
    }

    /// The condition rows must meet to go: the user's filter as written,
    /// then (unless `on_referenced = "fail"`) pgmaint's own `AND NOT` for
    /// rows a blocking foreign key still references.
    pub fn batch_filter(&self) -> String {
        match (
            self.on_referenced,
            self.references.referenced_condition(&self.table),
        ) {
            (OnReferenced::Keep, Some(referenced)) => {
                format!("{} AND NOT {referenced}", self.filter_sql)
            }
            _ => self.filter_sql.clone(),
        }
    }

    fn statement(&self, limited: bool, returning: bool) -> String {
        let filter = self.batch_filter();
        sql::walk_batch(
            &WalkBatch {
                table: &self.table,
                filter: &filter,
                columns: &self.columns,
                destination: &self.destination,
                returning,
            },
            limited,
        )
    }

    /// A batch's `WHERE` condition over the table's own name, as its
    /// statement has it, for the reads that go with the batch.
    fn batch_condition(&self, limited: bool) -> String {
        let filter = self.batch_filter();
        sql::walk_condition(
            &WalkBatch {
                table: &self.table,
                filter: &filter,
                columns: &self.columns,
                destination: &self.destination,
                returning: true,
            },
            limited,
        )
    }

    /// The read, in a batch's transaction and before its statement, of the
    /// rows `part` loses when the batch's rows go.
    fn part_statement(&self, part: &Part, columns: &[String], limited: bool) -> String {
        let condition = self.batch_condition(limited);
        // Locked as read: a row the application deletes or moves after the
        // batch's snapshot fails the batch (40001, retried) instead of
        // landing in the backup although the cascade no longer takes it.
        format!(
            "{} FOR NO KEY UPDATE OF pgmaint_part",
            self.references
                .part_rows(part, &self.table, columns, &condition)
        )
    }

    /// Whether the condition names every row of a table that has rows (the
    /// user's condition, before pgmaint keeps referenced rows): such a
    /// removal empties the table, and runs only when confirmed. It reads
    /// until the first row the condition leaves, so it is quick unless
    /// nearly every row matches. Not `thorough`: only the last pages are
    /// read, and None means they did not decide it.
    pub(crate) async fn matches_every_row(
        &self,
        client: &tokio_postgres::Client,
        thorough: bool,
    ) -> Result<Option<bool>, tokio_postgres::Error> {
        let t = self.table.quoted();
        // Rows are usually removed oldest first and appended newest last:
        // a row the condition leaves is then found at once among the last
        // pages, without reading the table from its start.
        let tail = format!(
            "SELECT EXISTS (SELECT 1 FROM {t} WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ({}) IS NOT TRUE)",
            self.filter_sql
        );
        let from = (self.pages - TAIL_PAGES).max(0);
        let none: Option<i64> = None;
        let kept_at_the_end: bool = client
            .query_typed_one(
                &tail,
                &walk_params(&from, &none, &none, self.cutoff_param()),
            )
            .await?
            .get(0);
        if kept_at_the_end {
            return Ok(Some(false));
        }
        if !thorough {
            return Ok(None);
        }
        let statement = format!(
            "SELECT EXISTS (SELECT 1 FROM {t}) AND NOT EXISTS (SELECT 1 FROM {t} WHERE ({}) IS NOT TRUE)",
            self.filter_sql
        );
        Ok(Some(
            self.read_matching(client, &statement).await?[0].get(0),
        ))
    }

    /// The count, in a batch's transaction, of rows the condition names that
    /// the batch takes through the table's cascade into itself.
    fn named_beyond_statement(&self, limited: bool) -> String {
        self.references.named_beyond(
            &self.table,
            &self.batch_condition(limited),
            &self.batch_filter(),
        )
    }

    /// How many rows match `filter`, read as the dry run reads.
    async fn count(
        &self,
        client: &tokio_postgres::Client,
        statement: &str,
    ) -> Result<u64, tokio_postgres::Error> {
        Ok(self.read_matching(client, statement).await?[0].get::<_, i64>(0) as u64)
    }

    /// The dry run's account of foreign keys: rows kept because they are
    /// still referenced (per constraint), and per table what cascades take.
    async fn describe_references(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<serde_json::Value, tokio_postgres::Error> {
        let mut kept = Vec::new();
        let mut kept_total = 0;
        if let Some(referenced) = self.references.referenced_condition(&self.table) {
            kept_total = self
                .count(
                    client,
                    &sql::count_matching(
                        &self.table,
                        &format!("{} AND {referenced}", self.filter_sql),
                    ),
                )
                .await?;
            for blocker in &self.references.blockers {
                let condition = References::blocked_by(blocker, &self.table);
                let rows = self
                    .count(
                        client,
                        &sql::count_matching(
                            &self.table,
                            &format!("{} AND {condition}", self.filter_sql),
                        ),
                    )
                    .await?;
                kept.push(json!({
                    "constraint": blocker.constraint,
                    "table": blocker.table.to_string(),
                    "rows": rows,
                }));
            }
        }
        let mut cascade = Vec::new();
        let filter = self.batch_filter();
        for part in &self.references.parts {
            let rows = self
                .count(
                    client,
                    &self.references.part_count(part, &self.table, &filter),
                )
                .await?;
            cascade.push(References::describe_part(part, rows));
        }
        Ok(json!({
            "on_referenced": self.on_referenced,
            "kept_referenced": kept_total,
            "kept_referenced_by": kept,
            "cascade": cascade,
            "cascade_cycle": self.references.cycle,
        }))
    }

    /// The dry run: how many rows match (exactly, or the planner's estimate
    /// above `exact_count_limit`), a few of them, and the statements a run
    /// would issue, including where each batch's rows are copied before it
    /// commits. Read-only.
    pub async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        verb: &str,
        copy: Copy,
    ) -> Result<Outcome, TaskError> {
        let returning = !matches!(copy, Copy::Nowhere);
        let client = &*ctx.client;
        let filter = self.batch_filter();
        let described = db::read_only(client, async {
            let explain: serde_json::Value = self
                .read_matching(client, &sql::explain_matching(&self.table, &filter))
                .await?[0]
                .get(0);
            let estimate = explain[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as u64;
            let exact = self.estimated_rows <= ctx.options.exact_count_limit as f64;
            let rows = if exact {
                self.count(client, &sql::count_matching(&self.table, &filter))
                    .await?
            } else {
                estimate
            };
            let samples: Vec<serde_json::Value> = self
                .read_matching(
                    client,
                    &sql::sample_matching(&self.table, &filter, SAMPLE_ROWS),
                )
                .await?
                .iter()
                .map(|row| {
                    serde_json::from_str(row.get::<_, &str>(0)).unwrap_or(serde_json::Value::Null)
                })
                .collect();
            let references = if exact {
                self.describe_references(client).await?
            } else {
                json!({"on_referenced": self.on_referenced, "counted": false})
            };
            // Above exact_count_limit the plan reads only the last pages;
            // the run decides before it starts, reading as far as it must.
            let every_row = self.matches_every_row(client, exact).await?;
            // Where the matching rows lie, to walk the pages as the run
            // will; only where the rows are counted exactly.
            let per_page = if exact {
                Some(
                    self.read_matching(client, &matches_per_page(&self.table, &filter))
                        .await?
                        .iter()
                        .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1) as u64))
                        .collect::<Vec<_>>(),
                )
            } else {
                None
            };
            Ok((rows, exact, samples, references, every_row, per_page))
        })
        .await;
        let (rows, exact, samples, references, every_row, per_page) = described?;
        let plain =
            matches!(self.destination, Destination::Delete) && matches!(copy, Copy::Nowhere);
        let estimate = match &per_page {
            Some(per_page) => self.simulate(ctx.options.batch_size, plain, per_page),
            None => BatchEstimate {
                batches: rows.div_ceil(ctx.options.batch_size),
                largest: rows.min(ctx.options.batch_size),
                at_least: true,
            },
        };
        let batches = estimate.batches;
        let rate = recent_rate(client, &ctx.state_schema, ctx.task_name).await;
        let mut params = json!({
            "$1": "first page of the batch",
            "$2": "page after the batch",
            "$3": ctx.options.batch_size,
        });
        if let Some(cutoff) = self.cutoff {
            params["$4"] = json!(cutoff.to_rfc3339());
        }
        let mut statements = ctx.options.session().statements();
        if !matches!(copy, Copy::Export(_)) {
            // Each batch's commit does not wait for the disk (`in_transaction`).
            statements.push("SET LOCAL synchronous_commit = off".into());
        }
        statements.extend([
            format!(
                "-- each batch, one transaction, walking pages 0..{} of {}; windows that can hold more than a batch:",
                self.pages, self.table
            ),
            self.statement(true, returning),
            "-- windows of at most two batches' worth of pages at the table's average rows per page ($3 unused):".to_string(),
            self.statement(false, returning),
        ]);
        match &copy {
            Copy::Nowhere => {}
            Copy::Backup => {
                if !self.references.parts.is_empty() {
                    statements.push("-- with each batch, in its REPEATABLE READ transaction and before its statement, what it takes from other tables through foreign keys (backed up with it):".into());
                    for part in &self.references.parts {
                        statements.push(self.part_statement(part, &["…".into()], true));
                    }
                }
                statements.push("-- with each batch, before it commits: its rows written to a backup file and flushed to disk, and the file recorded in the state schema".into());
            }
            Copy::Export(sentence) => statements.push(sentence.clone()),
        }
        Ok(Outcome {
            status: Status::Succeeded,
            rows,
            batches,
            retries: 0,
            error: None,
            details: json!({
                "table": self.table.to_string(),
                "action": verb,
                "rows_exact": exact,
                "cutoff": self.cutoff_text(ctx.options.time_zone),
                "pages": self.pages,
                "backup": matches!(copy, Copy::Backup),
                "samples": samples,
                "statements": statements,
                "parameters": params,
                "references": references,
                "matches_every_row": every_row,
                "batch_size": ctx.options.batch_size,
                "walkers": self.walkers(ctx.options.batch_size),
                "batches_estimate": {
                    "batches": estimate.batches,
                    "largest_batch": estimate.largest,
                    "at_least": estimate.at_least,
                    "from": if estimate.at_least { "rows" } else { "pages" },
                },
                "lock_timeout": ctx.options.lock_timeout.to_string(),
                "max_retries": ctx.options.max_retries,
                "time_estimate": rate.map(|rate| json!({
                    "ms": (rows as f64 / rate.rows_per_second * 1000.0).round() as u64,
                    "rows_per_second": rate.rows_per_second.round() as u64,
                    "runs": rate.runs,
                })),
                "needs_confirmation": (every_row == Some(true)).then(|| format!("the condition matches every row of {}: the run {}, and runs only when confirmed (--yes, the API's \"yes\", or a schedule with allow_critical = true)", self.table, self.every_row_effect(false))),
            }),
        })
    }

    /// The run: walks every page, then pages added meanwhile, then ranges
    /// whose locks stayed busy. A failure part-way keeps what was done.
    pub async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        mut backup: Option<BackupWriter>,
    ) -> Result<Outcome, TaskError> {
        if let Err(refused) = self.refuse_unconfirmed(ctx).await {
            if let Some(writer) = backup {
                writer.finish(ctx.client).await?;
            }
            return Err(refused);
        }
        let walked = self.walk_pages(ctx, &mut backup).await;
        let mut outcome = match walked {
            Ok(outcome) => outcome,
            Err(err) => {
                if let Some(writer) = backup {
                    writer.finish(ctx.client).await?;
                }
                return Err(err);
            }
        };
        if let Some(writer) = backup {
            writer.finish_into(ctx.client, &mut outcome.details).await?;
        }
        Ok(outcome)
    }

    /// How many walkers go: `parallel`, fewer when the table is too small
    /// for each to have several batches' worth of pages, and one where
    /// walkers could meet in the same rows (a table that cascades into
    /// itself).
    pub(crate) fn walkers(&self, batch_size: u64) -> usize {
        if self.references.has_own_tree() {
            return 1;
        }
        let window = Walk::new(self, batch_size).window;
        let most = (self.pages / (4 * window).max(1)).max(1);
        i64::from(self.parallel).min(most) as usize
    }

    /// The page ranges a walk takes in turn: the whole table for one
    /// walker; for several, chunks of about an eighth of a walker's share
    /// (at least four batches' worth of pages), which each walker claims
    /// one after another as it finishes the last, so walkers whose pages
    /// match little take more of them and none waits with work left.
    pub(crate) fn ranges(&self, batch_size: u64) -> Vec<(i64, i64)> {
        let walkers = self.walkers(batch_size) as i64;
        if walkers == 1 {
            return vec![(0, self.pages)];
        }
        let window = Walk::new(self, batch_size).window;
        let chunk = (self.pages / (8 * walkers)).max(4 * window).max(1);
        (0..self.pages)
            .step_by(chunk as usize)
            .map(|from| (from, (from + chunk).min(self.pages)))
            .collect()
    }

    /// What a run whose condition names every row does to the table
    /// ("would" do, when `refused`).
    fn every_row_effect(&self, refused: bool) -> String {
        match &self.destination {
            Destination::Clear { columns } => format!(
                "{} {} to NULL in every row",
                if refused { "would set" } else { "sets" },
                columns
                    .iter()
                    .map(|c| sql::as_written(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ if refused => "would empty the table".to_string(),
            _ => "empties the table".to_string(),
        }
    }

    /// Refuses, before anything is removed, a removal that cascades round a
    /// cycle or that names every row of the table, unless the run is
    /// confirmed.
    pub(crate) async fn refuse_unconfirmed(
        &self,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        if let Some(cycle) = &self.references.cycle
            && !ctx.confirmed
        {
            return Err(TaskError::Target(format!(
                "removing rows of {} cascades round a cycle ({cycle}), so it can remove rows no condition names and that the plan cannot count; nothing was removed. Remove the rows of the cycle's other tables first, or confirm: `pgmaint run {} --yes`",
                self.table, ctx.task_name
            )));
        }
        // Read as the plan reads it: in a transaction with the task's
        // timeouts and time_zone, so plan and run agree.
        if !ctx.confirmed
            && crate::db::read_only(ctx.client, self.matches_every_row(ctx.client, true)).await?
                == Some(true)
        {
            return Err(TaskError::Target(format!(
                "the condition matches every row of {}, so this run {}; nothing was changed. If that is meant, confirm it as a critical task is confirmed: `pgmaint run {} --yes` (after `pgmaint plan {}`), {{\"yes\": true}} through the API, or allow_critical = true on the schedule",
                self.table,
                self.every_row_effect(true),
                ctx.task_name,
                ctx.task_name
            )));
        }
        Ok(())
    }

    /// Walks the table's pages into `backup` (left open: the caller
    /// finishes it), after the checks of [`Self::refuse_unconfirmed`].
    pub(crate) async fn walk_pages(
        &self,
        ctx: &mut TaskContext<'_>,
        backup: &mut Option<BackupWriter>,
    ) -> Result<Outcome, TaskError> {
        // The task's timeouts are set in each batch's own transaction
        // (`in_transaction`, SET LOCAL): no session setting, which behind a
        // transaction pooler would land on whichever backend and stay there
        // for other clients.
        let returning = backup.is_some();
        // Each batch is an unnamed statement (`crate::unnamed`), planned
        // for its own page range and cutoff: no prepared statement outlives
        // a transaction behind a pooler, and no generic plan hides how
        // narrow the range is.
        let statements = Statements {
            durable: backup.as_ref().is_some_and(|w| w.is_export()),
            limited: self.statement(true, returning),
            narrow: self.statement(false, returning),
            parts: match backup.as_mut() {
                Some(writer) => self.prepare_parts(ctx, writer).await?,
                None => Vec::new(),
            },
            named_beyond: if self.references.has_own_tree() {
                Some((
                    self.named_beyond_statement(true),
                    self.named_beyond_statement(false),
                ))
            } else {
                None
            },
        };
        ctx.log_statement(&self.statement(true, returning));
        ctx.log_statement(&self.statement(false, returning));
        let mut walk = Walk::new(self, ctx.options.batch_size);
        ctx.progress.start(self.pages as u64, "pages");
        // Shared by the walkers; each batch holds it only to write and
        // record its files.
        let writer = backup.take().map(tokio::sync::Mutex::new);

        let ranges = self.ranges(ctx.options.batch_size);
        let walkers = if ctx.target.is_some() {
            self.walkers(ctx.options.batch_size)
        } else {
            1
        };
        let walked = async {
            let mut stopped = if walkers > 1 {
                self.walk_in_parallel(
                    ctx,
                    &statements,
                    writer.as_ref(),
                    (walkers, &ranges),
                    &mut walk,
                )
                .await?
            } else {
                walk.pages(ctx, &statements, writer.as_ref(), 0, self.pages)
                    .await?
            };
            // Rows inserted or moved (by an update) past the end while the
            // walk ran: walk the pages added since, until the table stops
            // growing.
            let mut end = self.pages;
            // Not for a walk that sets columns to NULL: its own updates put
            // the rows' new versions there, which no longer match.
            let follows_growth = !matches!(self.destination, Destination::Clear { .. });
            while stopped.is_none() && follows_growth {
                let now: i64 = ctx
                    .client
                    .row("SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint", &[&self.table.quoted()])
                    .await?
                    .get(0);
                if now <= end {
                    break;
                }
                stopped = walk
                    .pages(ctx, &statements, writer.as_ref(), end, now)
                    .await?;
                end = now;
            }
            // Ranges whose locks stayed busy get one more round at the end.
            let deferred = std::mem::take(&mut walk.deferred);
            for (from, to) in deferred {
                if stopped.is_some() {
                    walk.deferred.push((from, to));
                    continue;
                }
                stopped = walk
                    .pages(ctx, &statements, writer.as_ref(), from, to)
                    .await?;
            }
            Ok::<_, TaskError>(stopped)
        }
        .await;
        *backup = writer.map(tokio::sync::Mutex::into_inner);
        ctx.progress.finish();
        flush_statistics(ctx.client).await?;

        let mut details = json!({
            "table": self.table.to_string(),
            "cutoff": self.cutoff_text(ctx.options.time_zone),
            "pages": self.pages,
            "longest_batch_ms": walk.longest_batch.as_millis() as u64,
            "walkers": walkers,
        });
        if let Destination::Move { archive, .. } = &self.destination {
            details["archive_table"] = json!(archive.to_string());
        }
        // What later tasks of the run (a vacuum, an analyze) should look at.
        let mut changed = vec![self.table.to_string()];
        changed.extend(self.references.parts.iter().map(|p| p.table.to_string()));
        details["changed_tables"] = json!(changed);
        let counters = walk.counters;
        let (status, error) = match walked {
            Err(err) => (
                Status::Failed,
                Some(format!(
                    "{err}; {} rows were done before this batch, the rest remain for the next run",
                    counters.rows
                )),
            ),
            Ok(Some(reason)) => {
                let remaining = self.estimate_remaining(ctx.client).await.unwrap_or(0);
                details["remaining_rows_estimate"] = json!(remaining);
                (
                    Status::Cancelled,
                    Some(format!(
                        "{reason} after {} rows; about {remaining} matching rows remain for the next run",
                        counters.rows
                    )),
                )
            }
            Ok(None) if !walk.deferred.is_empty() => {
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
            }
            Ok(None) => (Status::Succeeded, None),
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

    /// Walks `ranges` at once, each on a connection of its own (`parallel
    /// = N`), each batch its own transaction under the same rules as one
    /// walker's. Their counts, longest batch and busy ranges end up in
    /// `walk`, which goes on alone from there (pages added meanwhile, busy
    /// ranges). Returns why a walker stopped early, if one did: the others
    /// stop at their next batch too.
    async fn walk_in_parallel(
        &self,
        ctx: &mut TaskContext<'_>,
        statements: &Statements,
        writer: Option<&tokio::sync::Mutex<BackupWriter>>,
        (count, ranges): (usize, &[(i64, i64)]),
        walk: &mut Walk<'_>,
    ) -> Result<Option<&'static str>, TaskError> {
        let Some(target) = ctx.target else {
            // No way to open more connections here: one walker.
            return walk.pages(ctx, statements, writer, 0, self.pages).await;
        };
        let mut clients = Vec::new();
        for _ in 0..count {
            clients.push(crate::connect::connect(target).await.map_err(|err| {
                TaskError::Target(format!(
                    "parallel = {count}: could not open a connection for another walker: {err}; nothing more was done"
                ))
            })?);
        }
        if ctx.verbose {
            eprintln!(
                "[{}] {count} walkers over pages 0..{} in {} chunks of {} pages",
                ctx.task_name,
                self.pages,
                ranges.len(),
                ranges.first().map_or(0, |(a, b)| b - a)
            );
        }
        // The next chunk to claim.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let tally = Tally::default();
        let (task_name, stop, progress, options) =
            (ctx.task_name, ctx.stop, ctx.progress, ctx.options);
        let (deadline, verbose, target) = (ctx.deadline, ctx.verbose, ctx.target);
        let mut contexts: Vec<TaskContext<'_>> = clients
            .iter_mut()
            .map(|client| TaskContext {
                client,
                task_name,
                options,
                stop,
                deadline,
                progress,
                record: None,
                verbose,
                backup_dir: ctx.backup_dir.clone(),
                state_schema: ctx.state_schema.clone(),
                task_run_id: ctx.task_run_id,
                confirmed: ctx.confirmed,
                changed_tables: Vec::new(),
                target,
            })
            .collect();
        let mut walkers: Vec<Walk<'_>> = (0..count)
            .map(|_| {
                let mut walker = Walk::new(self, options.batch_size);
                walker.tally = Some(&tally);
                walker
            })
            .collect();
        let results = {
            let tally = &tally;
            let next = &next;
            let all =
                futures_util::future::join_all(walkers.iter_mut().zip(contexts.iter_mut()).map(
                    |(walker, sub)| async move {
                        let walked: Result<Option<&'static str>, TaskError> = async {
                            while let Some(&(from, to)) =
                                ranges.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                            {
                                // Each chunk starts as a walk of its own, as the
                                // plan walks it.
                                walker.window = Walk::new(self, walker.batch_size).window;
                                if let Some(reason) =
                                    walker.pages(sub, statements, writer, from, to).await?
                                {
                                    return Ok(Some(reason));
                                }
                            }
                            Ok(None)
                        }
                        .await;
                        if walked.is_err() {
                            // The others stop at their next batch.
                            tally
                                .failed
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        walked
                    },
                ));
            futures_util::pin_mut!(all);
            // The main connection keeps the task's history row current while
            // the walkers go.
            loop {
                tokio::select! {
                    done = &mut all => break done,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        ctx.record_progress(tally.counters()).await?;
                    }
                }
            }
        };
        // What every walker did counts, whether or not another failed.
        for walker in walkers {
            walk.counters.rows += walker.counters.rows;
            walk.counters.batches += walker.counters.batches;
            walk.counters.retries += walker.counters.retries;
            walk.longest_batch = walk.longest_batch.max(walker.longest_batch);
            walk.deferred.extend(walker.deferred);
        }
        let mut stopped = None;
        for result in results {
            if let Some(reason) = result? {
                stopped.get_or_insert(reason);
            }
        }
        Ok(stopped)
    }

    /// Registers each table the removal reaches with the backup and
    /// prepares the reads of what a batch takes from it. A cascade that
    /// loops back, or a SET NULL on a table without a primary key to find
    /// its rows again, cannot be backed up whole: the task stops before it
    /// removes anything.
    async fn prepare_parts(
        &self,
        ctx: &mut TaskContext<'_>,
        writer: &mut BackupWriter,
    ) -> Result<Vec<PartStatements>, TaskError> {
        if writer.is_export() && !self.references.parts.is_empty() {
            return Err(TaskError::Target(format!(
                "moving rows out of {} also removes or changes rows of {} through foreign keys, and an export keeps only the moved table's rows; nothing was moved. Archive the referencing tables first, or use `backup = true` without `export`",
                self.table, self.references.parts[0].table
            )));
        }
        if let Some(cycle) = &self.references.cycle {
            return Err(TaskError::Target(format!(
                "the backup cannot hold everything a removal from {} takes: {cycle}, and pgmaint does not follow cascades round a cycle yet; nothing was removed. Set `backup = false` to remove without a backup, or remove the referencing rows first with their own task",
                self.table
            )));
        }
        let mut prepared = Vec::new();
        for part in &self.references.parts {
            let info = db::lookup_table(&*ctx.client, &part.table.quoted())
                .await
                .map_err(|e| TaskError::Target(e.to_string()))?;
            let (columns, key_columns, action) = match part.action {
                OnDelete::SetNull | OnDelete::SetDefault => {
                    let key = db::primary_key(&*ctx.client, part.oid).await?;
                    if key.is_empty() {
                        return Err(TaskError::Target(format!(
                            "foreign key \"{}\" of {} sets columns when rows of {} go, and {} has no primary key by which a restore could find those rows again; nothing was removed. Add a primary key to {}, or set `backup = false`",
                            part.constraint, part.table, self.table, part.table, part.table
                        )));
                    }
                    let mut saved: Vec<crate::db::Column> = Vec::new();
                    for name in key.iter().chain(part.changed.iter()) {
                        if let Some(column) = info.column(name)
                            && !saved.iter().any(|c| &c.name == name)
                        {
                            saved.push(column.clone());
                        }
                    }
                    let action = if part.action == OnDelete::SetNull {
                        "set_null"
                    } else {
                        "set_default"
                    };
                    (saved, key, action)
                }
                _ => (info.columns.clone(), Vec::new(), "cascade"),
            };
            let names: Vec<String> = columns
                .iter()
                .filter(|c| !c.generated)
                .map(|c| c.name.clone())
                .collect();
            let number = writer
                .add_part(
                    &*ctx.client,
                    BackupPart {
                        table: &part.table,
                        columns,
                        action,
                        key_columns,
                        via: &part.constraint,
                    },
                )
                .await?;
            let limited = self.part_statement(part, &names, true);
            let narrow = self.part_statement(part, &names, false);
            ctx.log_statement(&limited);
            prepared.push(PartStatements {
                number,
                limited,
                narrow,
            });
        }
        Ok(prepared)
    }

    async fn estimate_remaining(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<u64, tokio_postgres::Error> {
        let explain: serde_json::Value = self
            .read_matching(
                client,
                &sql::explain_matching(&self.table, &self.filter_sql),
            )
            .await?[0]
            .get(0);
        Ok(explain[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as u64)
    }
}

/// What the dry run expects of the walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchEstimate {
    pub batches: u64,
    /// The most rows one batch takes (a narrow window over pages denser
    /// than average goes whole, so this can pass `batch_size`).
    pub largest: u64,
    /// Only a floor (rows / batch_size): the rows were estimated, not
    /// counted page by page.
    pub at_least: bool,
}

/// The matching rows per page, `(page, rows)` in page order: what the
/// dry run walks instead of the rows themselves.
fn matches_per_page(table: &TableName, filter: &str) -> String {
    format!(
        "SELECT (ctid::text::point)[0]::bigint, count(*) FROM {} WHERE {filter} GROUP BY 1 ORDER BY 1",
        table.quoted()
    )
}

impl WalkPlan {
    /// Walks the pages as `execute` will, over the dry run's count of
    /// matching rows per page: the same first window, the same growth over
    /// sparse pages, the same `LIMIT` cuts and resumes, then the pages past
    /// the end the run would find. What it cannot know is time (a batch
    /// slower than [`SLOW_BATCH`] halves the next window) and rows that
    /// change meanwhile, so the run can take more batches than this, not
    /// fewer, on a quiet table.
    fn simulate(&self, batch_size: u64, plain: bool, per_page: &[(i64, u64)]) -> BatchEstimate {
        let mut left: std::collections::BTreeMap<i64, u64> = per_page
            .iter()
            .copied()
            .filter(|(_, rows)| *rows > 0)
            .collect();
        let mut estimate = BatchEstimate::default();
        let end = per_page.last().map_or(0, |(page, _)| page + 1);
        // Each walker starts afresh on its range; with several, the pages
        // past the end are walked afterwards by a walker of its own.
        let shared = self.ranges(batch_size);
        let alone = self.walkers(batch_size) == 1;
        let mut ranges: Vec<(i64, i64, bool)> = shared
            .into_iter()
            .map(|(from, to)| (from, to, true))
            .collect();
        if end > self.pages {
            ranges.push((self.pages, end, !alone));
        }
        let mut walk = Walk::new(self, batch_size);
        for (from, to, fresh) in ranges {
            if fresh {
                walk = Walk::new(self, batch_size);
            }
            let mut page = from;
            while page < to {
                let upper = (page + walk.window).min(to);
                let narrow = upper - page <= walk.narrow_window;
                let (rows, last_page) =
                    take(&mut left, page, upper, (!narrow).then_some(batch_size));
                // A plain DELETE of a narrow window reports only its count.
                let last_page = if plain && narrow { None } else { last_page };
                estimate.batches += 1;
                estimate.largest = estimate.largest.max(rows);
                page = walk.next_page(page, upper, rows, last_page, Duration::ZERO);
            }
        }
        estimate
    }
}

/// Takes the matching rows of pages `[from, to)` in page order, at most
/// `limit` of them: what one batch removes. Returns how many, and the last
/// page it took from.
fn take(
    left: &mut std::collections::BTreeMap<i64, u64>,
    from: i64,
    to: i64,
    limit: Option<u64>,
) -> (u64, Option<i64>) {
    let mut taken = 0;
    let mut last = None;
    let pages: Vec<(i64, u64)> = left.range(from..to).map(|(p, n)| (*p, *n)).collect();
    for (page, rows) in pages {
        let want = limit.map_or(rows, |limit| (limit - taken).min(rows));
        if want == 0 {
            break;
        }
        taken += want;
        last = Some(page);
        if want == rows {
            left.remove(&page);
        } else if let Some(rest) = left.get_mut(&page) {
            *rest -= want;
        }
    }
    (taken, last)
}

/// How fast the task's last successful runs removed rows.
struct Rate {
    rows_per_second: f64,
    runs: usize,
}

/// Up to five of the task's latest successful runs that changed rows,
/// from the audit trail: their rows over their time, for the dry run's
/// "about how long". None without such a run.
async fn recent_rate(client: &tokio_postgres::Client, schema: &str, task: &str) -> Option<Rate> {
    let runs = crate::store::history(client, schema, Some(task), 50)
        .await
        .ok()?;
    let measured: Vec<(i64, i64)> = runs
        .iter()
        .filter(|run| !run.dry_run)
        .flat_map(|run| &run.tasks)
        .filter(|t| t.status == "succeeded" && t.rows > 0)
        .filter_map(|t| t.duration_ms.filter(|ms| *ms > 0).map(|ms| (t.rows, ms)))
        .take(5)
        .collect();
    let rows: i64 = measured.iter().map(|(rows, _)| rows).sum();
    let ms: i64 = measured.iter().map(|(_, ms)| ms).sum();
    (ms > 0).then(|| Rate {
        rows_per_second: rows as f64 * 1000.0 / ms as f64,
        runs: measured.len(),
    })
}

/// Makes this session's counts of the rows it removed visible in
/// `pg_stat_user_tables` now. PostgreSQL 15+ sends a session's statistics
/// at most once a second; without this, a VACUUM that follows in the same
/// run would choose tables by figures from before the removal, and the
/// late counts, arriving after its own report, would show the dead rows it
/// just removed as still there. (14's statistics collector has no such
/// call; the runner also tells later tasks what changed.)
async fn flush_statistics(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let version: i32 = client
        .row("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    if version >= 150000 {
        client
            .batch_execute("SELECT pg_stat_force_next_flush()")
            .await?;
    }
    Ok(())
}

/// The walk's four parameters with their types ([`sql::WALK_PARAMS`]):
/// page range, limit and cutoff, sent with each unnamed statement.
fn walk_params<'a>(
    from: &'a (dyn ToSql + Sync),
    to: &'a (dyn ToSql + Sync),
    limit: &'a (dyn ToSql + Sync),
    cutoff: &'a (dyn ToSql + Sync),
) -> [(&'a (dyn ToSql + Sync), Type); 4] {
    let [a, b, c, d] = sql::WALK_PARAMS;
    [(from, a), (to, b), (limit, c), (cutoff, d)]
}

/// The two forms of a batch.
struct Statements {
    /// `ORDER BY ctid LIMIT batch_size`: for windows that might hold more.
    limited: String,
    /// The whole window: for windows that cannot.
    narrow: String,
    /// With a backup: the reads of what each batch takes from other tables.
    parts: Vec<PartStatements>,
    /// For a table that cascades into itself: the count of named rows a
    /// batch takes by cascade (limited, narrow).
    named_beyond: Option<(String, String)>,
    /// Each batch's commit waits for the disk: an export's files are final
    /// once renamed, so the rows they hold must be gone for good.
    durable: bool,
}

/// The two forms of the read of one backup part, as for the batch.
struct PartStatements {
    number: usize,
    limited: String,
    narrow: String,
}

/// The state of one ctid walk over a table.
struct Walk<'p> {
    plan: &'p WalkPlan,
    batch_size: u64,
    window: i64,
    /// The widest window deleted whole, without a LIMIT: two batches of
    /// rows at the table's average rows per page.
    narrow_window: i64,
    counters: Counters,
    longest_batch: Duration,
    deferred: Vec<(i64, i64)>,
    /// With other walkers: the totals all of them add to.
    tally: Option<&'p Tally>,
}

enum Attempt {
    Done {
        rows: u64,
        /// Rows the condition names that the batch's cascade into its own
        /// table took (they count as removed; no later batch meets them).
        by_cascade: u64,
        last_page: Option<i64>,
        took: Duration,
    },
    LocksBusy,
}

impl<'p> Walk<'p> {
    fn new(plan: &'p WalkPlan, batch_size: u64) -> Self {
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
            // Whole up to twice that: where half the rows match (rows of
            // different lifetimes on every page) a batch's window is about
            // 1.8 times it, and the LIMIT form's sort and second visit of
            // each row cost three times the plain DELETE of the window
            // (docs/benchmarks.md). A window of pages denser than average
            // then takes at most about two batches.
            narrow_window: (window * NARROW_BATCHES).min(MAX_WINDOW_PAGES),
            counters: Counters::default(),
            longest_batch: Duration::ZERO,
            deferred: Vec::new(),
            tally: None,
        }
    }

    /// Walks pages `[from, to)`. Returns why it stopped early, if it did.
    async fn pages(
        &mut self,
        ctx: &mut TaskContext<'_>,
        statements: &Statements,
        backup: Option<&tokio::sync::Mutex<BackupWriter>>,
        from: i64,
        to: i64,
    ) -> Result<Option<&'static str>, TaskError> {
        let mut page = from;
        while page < to {
            if let Some(reason) = ctx.should_stop() {
                return Ok(Some(reason));
            }
            if self
                .tally
                .is_some_and(|t| t.failed.load(std::sync::atomic::Ordering::Relaxed))
            {
                // Another walker's error ends the walk; it is the one told.
                return Ok(None);
            }
            let upper = (page + self.window).min(to);
            let (started_at, before) = (page, self.counters);
            match self
                .batch_with_retries(ctx, statements, backup, page, upper)
                .await?
            {
                Attempt::Done {
                    rows,
                    by_cascade,
                    last_page,
                    took,
                } => {
                    self.counters.rows += rows + by_cascade;
                    self.counters.batches += 1;
                    self.longest_batch = self.longest_batch.max(took);
                    page = self.next_page(page, upper, rows, last_page, took);
                }
                Attempt::LocksBusy => {
                    self.deferred.push((page, upper));
                    page = upper;
                }
            }
            match self.tally {
                None => {
                    ctx.progress.update(page as u64, self.counters.rows);
                    ctx.record_progress(self.counters).await?;
                }
                Some(tally) => {
                    let (pages, rows) = tally.add(page - started_at, before, self.counters);
                    ctx.progress.update(pages, rows);
                }
            }
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
        backup: Option<&tokio::sync::Mutex<BackupWriter>>,
        from: i64,
        to: i64,
    ) -> Result<Attempt, TaskError> {
        let limit = self.batch_size as i64;
        let narrow = to - from <= self.narrow_window;
        let params = walk_params(&from, &to, &limit, self.plan.cutoff_param());
        let statement = if narrow {
            &statements.narrow
        } else {
            &statements.limited
        };
        let plain = matches!(self.plan.destination, Destination::Delete) && backup.is_none();
        let mut waits = crate::retry::lock_waits(ctx.options.max_retries);
        for attempt in 1.. {
            if ctx.verbose {
                eprintln!(
                    "[{}] batch pages {from}..{to} (attempt {attempt})",
                    ctx.task_name
                );
            }
            let started = Instant::now();
            let named_beyond = statements
                .named_beyond
                .as_ref()
                .map(|(limited, narrow_form)| {
                    if narrow {
                        narrow_form.as_str()
                    } else {
                        limited.as_str()
                    }
                });
            let result = match backup {
                None if named_beyond.is_some() => {
                    let parts = Vec::new();
                    in_transaction(
                        ctx,
                        statement,
                        &parts,
                        named_beyond,
                        &params,
                        None,
                        (plain && narrow, statements.durable),
                    )
                    .await
                }
                // A transaction of its own even for one statement: the
                // task's timeouts are SET LOCAL in it (BEGIN and the
                // settings go in one round trip).
                None => {
                    in_transaction(
                        ctx,
                        statement,
                        &[],
                        None,
                        &params,
                        None,
                        (plain && narrow, statements.durable),
                    )
                    .await
                }
                Some(writer) => {
                    let parts: Vec<(usize, &str)> = statements
                        .parts
                        .iter()
                        .map(|p| {
                            (
                                p.number,
                                if narrow {
                                    p.narrow.as_str()
                                } else {
                                    p.limited.as_str()
                                },
                            )
                        })
                        .collect();
                    in_transaction(
                        ctx,
                        statement,
                        &parts,
                        named_beyond,
                        &params,
                        Some(writer),
                        (false, statements.durable),
                    )
                    .await
                }
            };
            match result {
                Ok(Ok((rows, last_page, by_cascade))) => {
                    return Ok(Attempt::Done {
                        rows,
                        by_cascade,
                        last_page,
                        took: started.elapsed(),
                    });
                }
                Ok(Err(fatal)) => return Err(fatal),
                // A reference committed after the batch's snapshot fails
                // its foreign-key check; the next attempt's snapshot sees it
                // and keeps the row.
                Err(err)
                    if db::is_transient(&err)
                        || (self.plan.on_referenced == OnReferenced::Keep
                            && err.code()
                                == Some(
                                    &tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION,
                                )
                            && self
                                .plan
                                .references
                                .referenced_condition(&self.plan.table)
                                .is_some()) =>
                {
                    self.counters.retries += 1;
                    tracing::info!(
                        task = ctx.task_name,
                        from,
                        to,
                        "batch could not get its locks: {}",
                        db::describe(&err)
                    );
                    match waits.next() {
                        Some(wait) if ctx.should_stop().is_none() => ctx.stop.sleep(wait).await,
                        _ => break,
                    }
                }
                Err(err) => {
                    return Err(TaskError::from_batch(&err, &self.plan.table, &*ctx.client).await);
                }
            }
        }
        Ok(Attempt::LocksBusy)
    }
}

/// A batch as an explicit transaction, for when more than the statement
/// must happen: with a backup, the statement returns every row, the backup
/// files are written, flushed and recorded, and only then does the
/// transaction commit (a backup that cannot be written rolls the batch
/// back); for a table that cascades into itself, the named rows the
/// cascade takes are counted first. Returns (rows, last page, named rows
/// taken by cascade). The outer `Result` is the database's (retryable when
/// transient), the inner one a backup failure, which ends the task.
#[allow(clippy::too_many_arguments)]
async fn in_transaction(
    ctx: &mut TaskContext<'_>,
    statement: &str,
    parts: &[(usize, &str)],
    named_beyond: Option<&str>,
    params: &[(&(dyn ToSql + Sync), Type)],
    writer: Option<&tokio::sync::Mutex<BackupWriter>>,
    (bare_delete, durable): (bool, bool),
) -> Result<Result<(u64, Option<i64>, u64), TaskError>, tokio_postgres::Error> {
    // What cascades and SET NULL take is read before the statement, from
    // the snapshot the statement and PostgreSQL's own foreign-key actions
    // then work on: under REPEATABLE READ those actions either touch
    // exactly the rows read here or fail with a serialization error (a
    // row changed meanwhile), which is retried like a busy lock.
    let isolated = !parts.is_empty() || named_beyond.is_some();
    // A batch commits without waiting for its WAL to reach disk: a server
    // crash can undo the last batches (their rows are back in the table,
    // and a backup file whose index row is lost is removed when the task
    // next starts), never half of one. The run's own records commit as
    // usual, and their flush takes every earlier batch with it. An
    // export's files are final once renamed from `.partial`, so its
    // batches wait for the disk.
    let begin = match (isolated, durable) {
        (false, false) => "BEGIN; SET LOCAL synchronous_commit = off",
        (true, false) => {
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL synchronous_commit = off"
        }
        (false, true) => "BEGIN",
        (true, true) => "BEGIN ISOLATION LEVEL REPEATABLE READ",
    };
    // BEGIN and the task's timeouts for this transaction only, pipelined.
    let client = &*ctx.client;
    let session = ctx.options.session();
    let (begun, local) = tokio::join!(
        client.batch_execute(begin),
        db::set_local_timeouts(client, &session)
    );
    begun?;
    // The text of the rows a backup file holds, fixed in this transaction.
    let local = match (local, writer.is_some()) {
        (Ok(()), true) => crate::backup::set_local_text_settings(&*ctx.client).await,
        (local, _) => local,
    };
    if let Err(err) = local {
        ctx.client.batch_execute("ROLLBACK").await?;
        return Err(err);
    }
    let mut by_cascade = 0;
    if let Some(named) = named_beyond {
        match ctx.client.query_typed_one(named, params).await {
            Ok(row) => by_cascade = row.get::<_, i64>(0) as u64,
            Err(err) => {
                ctx.client.batch_execute("ROLLBACK").await?;
                return Err(err);
            }
        }
    }
    let Some(writer) = writer else {
        // No backup: the statement's own count is the batch's.
        let done = if bare_delete {
            ctx.client
                .execute_typed(statement, params)
                .await
                .map(|rows| (rows, None))
        } else {
            ctx.client
                .query_typed_one(statement, params)
                .await
                .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, Option<i64>>(1)))
        };
        return match done {
            Ok((rows, last_page)) => {
                ctx.client.batch_execute("COMMIT").await?;
                Ok(Ok((rows, last_page, by_cascade)))
            }
            Err(err) => {
                ctx.client.batch_execute("ROLLBACK").await?;
                Err(err)
            }
        };
    };
    let mut reached = Vec::new();
    for (number, part) in parts {
        match ctx.client.query_typed(part, params).await {
            Ok(rows) => reached.push((*number, rows)),
            Err(err) => {
                ctx.client.batch_execute("ROLLBACK").await?;
                return Err(err);
            }
        }
    }
    let rows = match ctx.client.query_typed(statement, params).await {
        Ok(rows) => rows,
        Err(err) => {
            ctx.client.batch_execute("ROLLBACK").await?;
            return Err(err);
        }
    };
    let last_page = rows.iter().map(|r| r.get::<_, i64>(0)).max();
    let count = rows.len() as u64;
    if count == 0 {
        ctx.client.batch_execute("COMMIT").await?;
        return Ok(Ok((0, None, by_cascade)));
    }
    let mut written = Vec::new();
    let mut failed = None;
    {
        // Other walkers wait only while this batch's files are written and
        // recorded, not for its commit.
        let mut writer = writer.lock().await;
        match writer.write_batch(ctx.client, &rows).await {
            Ok(w) => written.push(w),
            Err(err) => failed = Some(err),
        }
        for (number, rows) in &reached {
            if failed.is_some() || rows.is_empty() {
                continue;
            }
            match writer.write_part(ctx.client, *number, rows).await {
                Ok(w) => written.push(w),
                Err(err) => failed = Some(err),
            }
        }
    }
    if let Some(err) = failed {
        ctx.client.batch_execute("ROLLBACK").await?;
        for w in &written {
            w.remove();
        }
        return Ok(Err(TaskError::Backup(err.to_string())));
    }
    // Whether it committed is unknown if the connection broke: the files
    // stay, and the next start of the task keeps those whose index rows
    // committed and removes the others.
    ctx.client.batch_execute("COMMIT").await?;
    let writer = writer.lock().await;
    for w in &written {
        writer.committed(w);
    }
    Ok(Ok((count, last_page, by_cascade)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pages: i64, rows: f64) -> WalkPlan {
        WalkPlan {
            table: TableName::new("public", "t"),
            filter_sql: "true".into(),
            cutoff: None,
            session_zone: None,
            pages,
            estimated_rows: rows,
            columns: vec![],
            destination: Destination::Delete,
            references: References::default(),
            on_referenced: OnReferenced::Keep,
            parallel: 1,
        }
    }

    #[test]
    fn walkers_claim_chunks_of_several_batches_each() {
        // 100 rows a page, batches of 1,000: ten pages a batch.
        let mut p = plan(1000, 100_000.0);
        assert_eq!((p.walkers(1000), p.ranges(1000)), (1, vec![(0, 1000)]));
        p.parallel = 4;
        assert_eq!(p.walkers(1000), 4);
        // An eighth of a walker's share, at least four batches: 40 pages.
        let chunks = p.ranges(1000);
        assert_eq!(chunks.len(), 25);
        assert_eq!(chunks[0], (0, 40));
        assert_eq!(chunks[24], (960, 1000));
        let mut big = plan(64_000, 6_400_000.0);
        big.parallel = 2;
        assert_eq!(big.ranges(1000)[0], (0, 4000));
        // Too few pages for four walkers of several batches each.
        let mut small = plan(60, 6000.0);
        small.parallel = 4;
        assert_eq!(
            (small.walkers(1000), small.ranges(1000)),
            (1, vec![(0, 60)])
        );
        let mut some = plan(100, 10_000.0);
        some.parallel = 4;
        assert_eq!(some.walkers(1000), 2);
        assert_eq!(some.ranges(1000), vec![(0, 40), (40, 80), (80, 100)]);
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
    fn the_estimate_walks_sparse_matches_as_the_run_does() {
        // 100 rows a page, every other row matching: the first window holds
        // half a batch, later ones grow to about 90% of one. Rows / batch
        // size would say 5; the walk takes more.
        let p = plan(100, 10_000.0);
        let per_page: Vec<(i64, u64)> = (0..100).map(|page| (page, 50)).collect();
        let estimate = p.simulate(1000, true, &per_page);
        assert!(estimate.batches > 5, "{estimate:?}");
        assert!(estimate.largest <= 1000, "{estimate:?}");
        // Matches only at the start: the windows over the rest are batches
        // too, each four times wider than the one before.
        let front: Vec<(i64, u64)> = (0..10).map(|page| (page, 100)).collect();
        let estimate = p.simulate(1000, true, &front);
        assert_eq!(estimate.batches, 4, "{estimate:?}");
        // Nothing to walk, nothing to count.
        assert_eq!(plan(0, 0.0).simulate(1000, true, &[]).batches, 0);
    }

    #[test]
    fn a_limited_batch_takes_rows_in_page_order_and_resumes_on_its_last_page() {
        let mut left: std::collections::BTreeMap<i64, u64> =
            [(3, 400), (5, 400), (8, 400)].into_iter().collect();
        assert_eq!(take(&mut left, 0, 10, Some(1000)), (1000, Some(8)));
        assert_eq!(left.get(&8), Some(&200));
        assert_eq!(take(&mut left, 8, 9, None), (200, Some(8)));
        assert!(left.is_empty());
    }

    #[test]
    fn slow_batches_halve_the_window() {
        let p = plan(100_000, 1_000_000.0);
        let mut walk = Walk::new(&p, 1000);
        walk.next_page(0, 100, 10, None, Duration::from_secs(1));
        assert_eq!(walk.window, 50);
    }
}

//! `partitions`: keep a table range-partitioned by time the way pg_partman
//! does, without an extension. The current period and `premake` periods
//! after it always have a partition (named `<table>_pYYYYMMDD`, or after the
//! scheme existing partitions use), with boundaries in `timezone`. A
//! default partition is reported with its rows, and `drain_default` moves
//! them into proper partitions, one period per transaction. Partitions whose
//! every possible row is older than `retention` are detached, dropped, or
//! exported to files and dropped. Each DDL runs under `lock_timeout` with
//! retries, one partition per transaction.
//!
//! DDL takes no bind parameters, so its boundary literals are formatted by
//! PostgreSQL itself (`format('%L')`), never pasted from Rust.

use crate::unnamed::Unnamed;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::utility;
use super::{CheckProblem, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::backup::{BackupWriter, Compression};
use crate::db;
use crate::sql::{TableName, TimeKind, quote_ident};
use crate::status::Status;

/// The keys of a partitions task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionsFile {
    table: Option<String>,
    interval: Option<String>,
    premake: Option<u32>,
    timezone: Option<String>,
    retention: Option<String>,
    retention_action: Option<RetentionAction>,
    drain_default: Option<bool>,
    export: Option<String>,
    compression: Option<Compression>,
}

impl super::registry::KindFile for PartitionsFile {
    const NAME: &'static str = "partitions";
    type Spec = PartitionsSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<PartitionsSpec> {
        PartitionsSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionsSpec {
    pub table: String,
    /// `day`, `week`, `month` or `year`.
    pub unit: &'static str,
    pub premake: u32,
    pub timezone: String,
    pub retention: Option<String>,
    pub retention_action: RetentionAction,
    pub drain_default: bool,
    pub export: Option<String>,
    pub compression: Compression,
}

/// The partition key's column and type (one of three, by OID: any
/// precision, or a domain over one).
struct Key {
    column: String,
    kind: TimeKind,
}

impl Key {
    /// A period start, a local timestamp in the task's zone, as a value of
    /// the key's type (SQL, `$n` being the local timestamp text).
    fn value_of_local(&self, param: &str) -> String {
        match self.kind {
            TimeKind::Timestamptz => {
                format!("({param}::text::timestamp AT TIME ZONE $tz::text)")
            }
            TimeKind::Date => format!("{param}::text::timestamp::date"),
            TimeKind::Timestamp => format!("{param}::text::timestamp"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Existing {
    pub name: String,
    #[serde(skip)]
    table: TableName,
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(skip)]
    range: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub name: String,
    pub from: String,
    pub to: String,
    #[serde(skip)]
    range: (f64, f64),
}

#[derive(Debug, Default, Serialize)]
pub struct PartitionsPlan {
    pub parent: String,
    pub key: String,
    pub create: Vec<Period>,
    /// Periods whose rows sit in the default partition (drained first).
    pub drain: Vec<Period>,
    pub remove: Vec<Existing>,
    pub default_partition: Option<String>,
    #[serde(skip)]
    default_table: Option<TableName>,
    pub default_rows: i64,
    pub conflicts: Vec<String>,
    #[serde(skip)]
    parent_name: Option<TableName>,
    #[serde(skip)]
    key_type: String,
    #[serde(skip)]
    key_column: String,
}

impl PartitionsSpec {
    pub(crate) fn resolve(
        file: PartitionsFile,
        report: &mut ReportProblem<'_>,
    ) -> Option<PartitionsSpec> {
        if file.table.is_none() {
            report(
                "table",
                "a partitions task needs `table`, the partitioned parent".into(),
                None,
            );
        }
        let unit = match file
            .interval
            .as_deref()
            .map(|i| i.trim().trim_start_matches("1 ").trim())
        {
            Some("day") | Some("daily") => Some("day"),
            Some("week") | Some("weekly") => Some("week"),
            Some("month") | Some("monthly") => Some("month"),
            Some("year") | Some("yearly") => Some("year"),
            other => {
                report(
                    "interval",
                    match other {
                        None => "a partitions task needs `interval`".to_string(),
                        Some(i) => format!("`{i}` is not an interval partitions supports"),
                    },
                    Some("use \"1 day\", \"1 week\", \"1 month\" or \"1 year\"".into()),
                );
                None
            }
        };
        let timezone = file.timezone.clone().unwrap_or_else(|| "UTC".into());
        if timezone.parse::<chrono_tz::Tz>().is_err() {
            report(
                "timezone",
                format!("unknown time zone `{timezone}`"),
                Some("use an IANA name such as \"UTC\" or \"Europe/Berlin\"".into()),
            );
            return None;
        }
        if let Some(retention) = &file.retention
            && let Err(age) = crate::retention::check_written(retention)
        {
            report("retention", age.message, Some(age.help));
            return None;
        }
        let action = file.retention_action.unwrap_or_default();
        if action == RetentionAction::Archive && file.export.is_none() {
            report(
                "retention_action",
                "`retention_action = \"archive\"` needs `export`, the directory for the files"
                    .into(),
                Some("add `export = \"/path/to/dir\"`".into()),
            );
            return None;
        }
        Some(PartitionsSpec {
            table: file.table.clone()?,
            unit: unit?,
            premake: file.premake.unwrap_or(4),
            timezone,
            retention: file.retention.clone(),
            retention_action: action,
            drain_default: file.drain_default.unwrap_or(false),
            export: file.export.clone(),
            compression: file.compression.unwrap_or_default(),
        })
    }

    fn interval(&self) -> String {
        format!("1 {}", self.unit)
    }

    async fn plan(&self, client: &Client) -> Result<PartitionsPlan, Vec<CheckProblem>> {
        let problem =
            |key, message: String, help: Option<String>| vec![CheckProblem { key, message, help }];
        let fail = |e: tokio_postgres::Error| problem("table", db::describe(&e), None);
        let info = db::lookup_table(client, &self.table)
            .await
            .map_err(|e| problem("table", e.to_string(), e.help(None)))?;
        if info.kind != 'p' {
            return Err(problem(
                "table",
                format!("{} is not a partitioned table", info.name),
                Some("create it with `PARTITION BY RANGE (created_at)`".into()),
            ));
        }
        let key = client
            .row(
                &format!("SELECT p.partstrat::text, p.partnatts::int, a.attname::text, format_type(a.atttypid, a.atttypmod), {}
                   FROM pg_partitioned_table p
                   LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                  WHERE p.partrelid = $1", db::base_type_sql("a.atttypid")),
                &[&info.oid],
            )
            .await
            .map_err(fail)?;
        let (strategy, columns): (String, i32) = (key.get(0), key.get(1));
        let column: Option<String> = key.get(2);
        let type_name: Option<String> = key.get(3);
        let kind = key.get::<_, Option<u32>>(4).and_then(TimeKind::of_oid);
        let (Some(column), Some(kind), "r", 1) = (column.clone(), kind, strategy.as_str(), columns)
        else {
            let found = match (strategy.as_str(), columns, &column, &type_name) {
                ("l", ..) => "it is partitioned BY LIST".to_string(),
                ("h", ..) => "it is partitioned BY HASH".to_string(),
                (_, n, ..) if n != 1 => format!("its key has {n} columns"),
                (_, _, None, _) => "its key is an expression".to_string(),
                (_, _, Some(c), Some(t)) => format!("its key column \"{c}\" is {t}"),
                _ => "its key is of another kind".to_string(),
            };
            return Err(problem(
                "table",
                format!(
                    "{} must be partitioned BY RANGE on one date or timestamp column; {found}",
                    info.name
                ),
                Some("partitions manages range partitions of a date, timestamp or timestamptz column (any precision, or a domain over one)".into()),
            ));
        };
        let key = Key { column, kind };
        if let Some(partman) = managed_by_partman(client, info.oid).await.map_err(fail)? {
            return Err(problem(
                "table",
                format!(
                    "{} is managed by pg_partman ({}.part_config: control column {}, interval {}, premake {}); pgmaint's partitions would sit next to pg_partman's under other names and bounds, and each would drop or drain the other's, so pgmaint leaves it alone",
                    info.name, partman.schema, partman.control, partman.interval, partman.premake
                ),
                Some(format!(
                    "leave the table to pg_partman (its run_maintenance() or background worker) and remove this task; or, to hand it to pgmaint, delete its row from {}.part_config first",
                    quote_ident(&partman.schema)
                )),
            ));
        }
        if let Some(retention) = &self.retention
            && let Err(age) = crate::retention::check_live(client, retention).await
        {
            return Err(problem("retention", age.message, Some(age.help)));
        }
        if self.retention_action == RetentionAction::Archive
            && let Some(export) = &self.export
            && !std::path::Path::new(export).is_dir()
        {
            return Err(problem(
                "export",
                format!("export directory {export} does not exist"),
                Some("create it (relative paths are relative to the config file)".into()),
            ));
        }

        let existing = self.existing(client, &info.oid, &key).await.map_err(fail)?;
        let scheme = naming_scheme(
            &info.name.name,
            existing.iter().map(|e| e.table.name.as_str()),
        );
        let mut plan = PartitionsPlan {
            parent: info.name.to_string(),
            key: key.column.clone(),
            parent_name: Some(info.name.clone()),
            key_type: key.kind.sql_type().to_string(),
            key_column: key.column.clone(),
            ..Default::default()
        };
        let default = existing.iter().find(|e| e.range.is_none());
        if let Some(default) = default {
            plan.default_partition = Some(default.name.clone());
            plan.default_table = Some(default.table.clone());
            plan.default_rows = client
                .row(
                    &format!("SELECT count(*) FROM {}", default.table.quoted()),
                    &[],
                )
                .await
                .map_err(fail)?
                .get(0);
            if plan.default_rows > 0 {
                plan.drain = self
                    .default_periods(client, default, &key, &info.name, &scheme)
                    .await
                    .map_err(fail)?;
            }
        }
        // The current period and `premake` after it.
        let wanted = self
            .periods(client, &key, &info.name, &scheme, 0, self.premake as i32)
            .await
            .map_err(fail)?;
        for period in wanted.into_iter().chain(plan.drain.clone()) {
            let same = existing.iter().any(|e| e.range == Some(period.range));
            let overlapping: Vec<&Existing> = existing
                .iter()
                .filter(|e| {
                    e.range.is_some_and(|(lo, hi)| {
                        lo < period.range.1 && period.range.0 < hi && e.range != Some(period.range)
                    })
                })
                .collect();
            let planned = plan.create.iter().any(|p| p.range == period.range);
            if same || planned {
                continue;
            }
            if let Some(other) = overlapping.first() {
                plan.conflicts.push(format!(
                    "{} [{}, {}) overlaps existing partition {}; not created",
                    period.name, period.from, period.to, other.name
                ));
                continue;
            }
            plan.create.push(period);
        }
        plan.create.sort_by(|a, b| a.range.0.total_cmp(&b.range.0));
        if let Some(retention) = &self.retention {
            let cutoff_sql = match key.kind {
                TimeKind::Timestamptz => {
                    "SELECT extract(epoch FROM now() - $1::text::interval)::float8"
                }
                _ => {
                    "SELECT extract(epoch FROM (now() AT TIME ZONE $2) - $1::text::interval)::float8"
                }
            };
            let cutoff: f64 = if key.kind == TimeKind::Timestamptz {
                client.row(cutoff_sql, &[retention]).await
            } else {
                client.row(cutoff_sql, &[retention, &self.timezone]).await
            }
            .map_err(fail)?
            .get(0);
            plan.remove = existing
                .iter()
                .filter(|e| e.range.is_some_and(|(_, hi)| hi <= cutoff))
                .cloned()
                .collect();
        }
        Ok(plan)
    }

    /// The parent's partitions, each with its bounds as epochs (None for
    /// the default partition).
    async fn existing(
        &self,
        client: &Client,
        parent: &u32,
        key: &Key,
    ) -> Result<Vec<Existing>, tokio_postgres::Error> {
        let rows = client
            .rows(
                "SELECT n.nspname::text, c.relname::text, m[1], m[2], pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
                   FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                                  'FROM \\(''([^'']*)''\\) TO \\(''([^'']*)''\\)') m ON true
                  WHERE i.inhparent = $1
                  ORDER BY 2",
                &[parent],
            )
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let table = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let (from, to): (Option<String>, Option<String>) = (row.get(2), row.get(3));
            let is_default: bool = row.get(4);
            let range = match (&from, &to) {
                (Some(from), Some(to)) if !is_default => {
                    let epochs = client
                        .row(
                            &format!(
                                "SELECT extract(epoch FROM $1::text::{t})::float8, extract(epoch FROM $2::text::{t})::float8",
                                t = key.kind.sql_type()
                            ),
                            &[from, to],
                        )
                        .await?;
                    Some((epochs.get(0), epochs.get(1)))
                }
                // MINVALUE/MAXVALUE bounds: never created over, never expired.
                _ if !is_default => Some((f64::NEG_INFINITY, f64::INFINITY)),
                _ => None,
            };
            out.push(Existing {
                name: table.to_string(),
                table,
                from,
                to,
                range,
            });
        }
        Ok(out)
    }

    /// Periods `first..=last` relative to the current one, in the zone.
    async fn periods(
        &self,
        client: &Client,
        key: &Key,
        parent: &TableName,
        scheme: &str,
        first: i32,
        last: i32,
    ) -> Result<Vec<Period>, tokio_postgres::Error> {
        let rows = client
            .rows(
                "SELECT to_char(b, $5), b::text, (b + $4::text::interval)::text
                   FROM (SELECT date_trunc($3, now() AT TIME ZONE $6) + k * $4::text::interval AS b
                           FROM generate_series($1::int, $2::int) k) s",
                &[
                    &first,
                    &last,
                    &self.unit,
                    &self.interval(),
                    &scheme,
                    &self.timezone,
                ],
            )
            .await?;
        let mut out = Vec::new();
        for row in rows {
            out.push(
                self.period(client, key, parent, row.get(0), row.get(1), row.get(2))
                    .await?,
            );
        }
        Ok(out)
    }

    /// The periods that rows of the default partition fall in.
    async fn default_periods(
        &self,
        client: &Client,
        default: &Existing,
        key: &Key,
        parent: &TableName,
        scheme: &str,
    ) -> Result<Vec<Period>, tokio_postgres::Error> {
        let local = match key.kind {
            TimeKind::Timestamptz => format!("({} AT TIME ZONE $3)", quote_ident(&key.column)),
            _ => format!("{}::timestamp", quote_ident(&key.column)),
        };
        let rows = client
            .rows(
                &format!(
                    "SELECT to_char(b, $2), b::text, (b + $4::text::interval)::text
                       FROM (SELECT DISTINCT date_trunc($1, {local}) AS b FROM {} WHERE {} IS NOT NULL) s ORDER BY b",
                    default.table.quoted(),
                    quote_ident(&key.column)
                ),
                &[&self.unit, &scheme, &self.timezone, &self.interval()],
            )
            .await?;
        let mut out = Vec::new();
        for row in rows {
            out.push(
                self.period(client, key, parent, row.get(0), row.get(1), row.get(2))
                    .await?,
            );
        }
        Ok(out)
    }

    /// A period from its local start and end, with its bounds in the key's
    /// type (as text) and as epochs.
    async fn period(
        &self,
        client: &Client,
        key: &Key,
        parent: &TableName,
        suffix: String,
        start: String,
        end: String,
    ) -> Result<Period, tokio_postgres::Error> {
        let sql = format!(
            "SELECT {lo}::text, {hi}::text, extract(epoch FROM {lo})::float8, extract(epoch FROM {hi})::float8",
            lo = key.value_of_local("$1").replace("$tz", "$3"),
            hi = key.value_of_local("$2").replace("$tz", "$3")
        );
        let row = if key.kind == TimeKind::Timestamptz {
            client.row(&sql, &[&start, &end, &self.timezone]).await?
        } else {
            client.row(&sql, &[&start, &end]).await?
        };
        Ok(Period {
            name: format!("{}_p{suffix}", parent.name),
            from: row.get(0),
            to: row.get(1),
            range: (row.get(2), row.get(3)),
        })
    }
}

/// A pg_partman `part_config` row for a parent.
struct Partman {
    schema: String,
    control: String,
    interval: String,
    premake: i32,
}

/// pg_partman's configuration of `parent`, when the extension is installed
/// and has a `part_config` row for it (matched by OID, so a name written
/// in any case or schema form is found).
async fn managed_by_partman(
    client: &Client,
    parent: u32,
) -> Result<Option<Partman>, tokio_postgres::Error> {
    let Some(schema) = client
        .row_opt(
            "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
              WHERE e.extname = 'pg_partman'",
            &[],
        )
        .await?
        .map(|r| r.get::<_, String>(0))
    else {
        return Ok(None);
    };
    let row = client
        .row_opt(
            &format!(
                "SELECT control::text, partition_interval::text, premake::int
                   FROM {}.part_config WHERE to_regclass(parent_table)::oid = $1",
                quote_ident(&schema)
            ),
            &[&parent],
        )
        .await?;
    Ok(row.map(|r| Partman {
        schema,
        control: r.get(0),
        interval: r.get(1),
        premake: r.get(2),
    }))
}

/// The `to_char` format of partition suffixes: the scheme most existing
/// partitions use (pg_partman 4's `_pYYYY_MM`, `_pYYYY_MM_DD`, `_pIYYYwIW`,
/// `_pYYYY`), else `_pYYYYMMDD`.
fn naming_scheme<'a>(parent: &str, names: impl Iterator<Item = &'a str>) -> String {
    let prefix = format!("{parent}_p");
    let mut counts = std::collections::BTreeMap::new();
    for name in names {
        let Some(suffix) = name.strip_prefix(&prefix) else {
            continue;
        };
        let shape: String = suffix
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        let scheme = match shape.as_str() {
            "99999999" => "YYYYMMDD",
            "9999_99_99" => "YYYY_MM_DD",
            "9999_99" => "YYYY_MM",
            "9999w99" => "IYYY\"w\"IW",
            "9999" => "YYYY",
            _ => continue,
        };
        *counts.entry(scheme).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(s, _)| s.to_string())
        .unwrap_or_else(|| "YYYYMMDD".into())
}

/// `CREATE TABLE ... PARTITION OF ...`, its literals formatted by PostgreSQL.
async fn create_statement(
    client: &Client,
    plan: &PartitionsPlan,
    period: &Period,
) -> Result<String, tokio_postgres::Error> {
    let parent = plan.parent_name.as_ref().expect("planned from a parent");
    Ok(client
        .row(
            "SELECT format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)', $1::text, $2::text, $1::text, $3::text, $4::text, $5::text)",
            &[&parent.schema, &period.name, &parent.name, &period.from, &period.to],
        )
        .await?
        .get(0))
}

impl Task for PartitionsSpec {
    type Plan = PartitionsPlan;

    fn anchor_paths(&mut self, base: &std::path::Path) {
        if let Some(export) = self.export.as_mut() {
            super::anchor(base, export);
        }
    }

    fn needs_session(&self) -> bool {
        true
    }

    fn makes(&self) -> Vec<super::Made> {
        vec![super::Made::PartitionsOf(self.table.clone())]
    }

    fn target(&self) -> String {
        format!("{} ({}ly, {} ahead)", self.table, self.unit, self.premake)
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<PartitionsPlan, TaskError> {
        self.plan(ctx.client)
            .await
            .map_err(|p| TaskError::from_problems(&p))
    }

    async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &PartitionsPlan,
    ) -> Result<Outcome, TaskError> {
        let mut statements = Vec::new();
        for period in &plan.create {
            statements.push(create_statement(ctx.client, plan, period).await?);
        }
        let parent = plan.parent_name.as_ref().expect("planned from a parent");
        for old in &plan.remove {
            if self.retention_action == RetentionAction::Archive {
                statements.push(format!(
                    "-- export the rows of {} to {} as compressed CSV with a manifest, flushed and recorded, then in the same transaction:",
                    old.name,
                    self.export.as_deref().unwrap_or("?")
                ));
            }
            statements.push(self.remove_statement(
                parent,
                &old.table,
                plan.default_partition.is_some(),
            ));
        }
        let drain = if self.drain_default {
            plan.drain.len()
        } else {
            0
        };
        Ok(Outcome {
            status: Status::Succeeded,
            rows: if self.drain_default {
                plan.default_rows as u64
            } else {
                0
            },
            batches: (plan.create.len() + plan.remove.len()) as u64,
            retries: 0,
            error: None,
            details: json!({
                "summary": format!(
                    "would create {} partition(s){}, {} {} partition(s) past retention{}",
                    plan.create.len(),
                    if drain > 0 { format!(" ({drain} by draining the default partition)") } else { String::new() },
                    match self.retention_action { RetentionAction::Detach => "detach", RetentionAction::Drop => "drop", RetentionAction::Archive => "archive and drop" },
                    plan.remove.len(),
                    match &plan.default_partition {
                        Some(d) => format!("; default partition {d} holds {} row(s)", plan.default_rows),
                        None => String::new(),
                    }
                ),
                "plan": plan,
                "statements": statements,
            }),
        })
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: PartitionsPlan,
    ) -> Result<Outcome, TaskError> {
        utility::set_timeouts(ctx).await?;
        let parent = plan.parent_name.clone().expect("planned from a parent");
        let mut retries = 0;
        let mut created = Vec::new();
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        let mut moved = 0u64;
        let mut stopped = None;
        for period in &plan.create {
            if let Some(reason) = ctx.should_stop() {
                stopped = Some(reason);
                break;
            }
            let drains = plan.drain.iter().any(|d| d.range == period.range);
            if drains && !self.drain_default {
                failed.push(format!("{}: the default partition holds rows for [{}, {}); set drain_default = true to move them", period.name, period.from, period.to));
                continue;
            }
            let result = if drains {
                self.drain(ctx, &plan, period, &mut retries)
                    .await
                    .inspect(|rows| moved += rows)
            } else {
                let statement = create_statement(ctx.client, &plan, period).await?;
                utility::run(ctx, &statement, &mut retries).await.map(|_| 0)
            };
            match result {
                Ok(_) => created.push(period.name.clone()),
                Err(err) => failed.push(format!("{}: {err}", period.name)),
            }
        }
        for old in &plan.remove {
            if stopped.is_some() || ctx.should_stop().is_some() {
                stopped = stopped.or(ctx.should_stop());
                break;
            }
            let result = if self.retention_action == RetentionAction::Archive {
                self.archive(ctx, &parent, old).await
            } else {
                let statement =
                    self.remove_statement(&parent, &old.table, plan.default_partition.is_some());
                utility::run(ctx, &statement, &mut retries)
                    .await
                    .map(|_| ())
            };
            match result {
                Ok(()) => removed.push(old.name.clone()),
                Err(err) => failed.push(format!("{}: {err}", old.name)),
            }
        }
        utility::clear_timeouts(ctx).await?;
        failed.extend(plan.conflicts.iter().cloned());
        let (status, error) = utility::verdict(
            &failed,
            stopped,
            created.len() + removed.len(),
            "partition(s)",
        );
        Ok(Outcome {
            status,
            rows: moved,
            batches: (created.len() + removed.len()) as u64,
            retries,
            error,
            details: json!({
                "summary": format!("created {} partition(s), {} {} partition(s), moved {moved} row(s) out of the default partition", created.len(), match self.retention_action { RetentionAction::Detach => "detached", RetentionAction::Drop => "dropped", RetentionAction::Archive => "archived and dropped" }, removed.len()),
                "created": created,
                "removed": removed,
                "default_partition": plan.default_partition,
            }),
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.plan(client).await.err().unwrap_or_default()
    }

    /// Partitions to create, partitions past retention, conflicts, and
    /// what the statements lock.
    fn plan_lines(
        details: &serde_json::Value,
        context: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        use super::PlanLine;
        let details: PlanDetails = serde_json::from_value(details.clone()).ok()?;
        let plan = &details.plan;
        let mut lines = vec![PlanLine::summary(&details.summary)];
        let create = plan.create.iter().map(|p| {
            format!(
                "create {}: from {} to {}",
                p.name,
                p.from.as_deref().unwrap_or("?"),
                p.to.as_deref().unwrap_or("?")
            )
        });
        let remove = plan.remove.iter().map(|old| {
            format!(
                "past retention: {} (up to {})",
                old.name,
                old.to.as_deref().unwrap_or("?")
            )
        });
        lines.extend(PlanLine::list(
            create.chain(remove).chain(plan.conflicts.iter().cloned()),
        ));
        let statements = details.statements.join("\n");
        let detach = if statements.contains("DROP TABLE") {
            ", as does dropping one (on it and on the parent)"
        } else if statements.contains("DETACH PARTITION") && statements.contains("CONCURRENTLY") {
            "; detaching one CONCURRENTLY takes SHARE UPDATE EXCLUSIVE (reads and writes go on)"
        } else if statements.contains("DETACH PARTITION") {
            ", as does detaching one (there is a default partition, so not CONCURRENTLY)"
        } else {
            ""
        };
        lines.push(PlanLine::locks(
            &format!(
                "creating a partition takes ACCESS EXCLUSIVE on {} for that statement{detach}",
                plan.parent
            ),
            context.options,
        ));
        Some(lines)
    }
}

/// A partitions dry run's `details`, read back for its text.
#[derive(Debug, serde::Deserialize)]
struct PlanDetails {
    summary: String,
    plan: PlannedPartitions,
    statements: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct PlannedPartitions {
    parent: String,
    create: Vec<PlannedPeriod>,
    remove: Vec<PlannedPeriod>,
    conflicts: Vec<String>,
}

/// A partition to create (`to` always set) or past retention.
#[derive(Debug, serde::Deserialize)]
struct PlannedPeriod {
    name: String,
    #[serde(default)]
    from: Option<String>,
    to: Option<String>,
}

impl PartitionsSpec {
    fn remove_statement(
        &self,
        parent: &TableName,
        partition: &TableName,
        has_default: bool,
    ) -> String {
        match self.retention_action {
            RetentionAction::Detach => format!(
                "ALTER TABLE {} DETACH PARTITION {}{}",
                parent.quoted(),
                partition.quoted(),
                // CONCURRENTLY is refused while a default partition exists.
                if has_default { "" } else { " CONCURRENTLY" }
            ),
            RetentionAction::Drop | RetentionAction::Archive => {
                format!("DROP TABLE {}", partition.quoted())
            }
        }
    }

    /// Moves a period's rows out of the default partition into a new
    /// partition for it, in one transaction: rows out into a temporary
    /// table, the partition created, rows back in through the parent.
    async fn drain(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: &PartitionsPlan,
        period: &Period,
        retries: &mut u64,
    ) -> Result<u64, TaskError> {
        let parent = plan.parent_name.as_ref().expect("planned from a parent");
        let default = plan
            .default_table
            .clone()
            .expect("drained only when there is a default partition");
        let create = create_statement(ctx.client, plan, period).await?;
        let key = quote_ident(&plan.key_column);
        let mut waits = crate::retry::lock_waits(ctx.options.max_retries);
        loop {
            let tx = ctx.client.transaction().await?;
            let result = async {
                tx.batch_execute(&format!("CREATE TEMP TABLE pgmaint_drain (LIKE {}) ON COMMIT DROP", parent.quoted())).await?;
                let rows = tx
                    .exec(
                        &format!(
                            "WITH moved AS (DELETE FROM {d} WHERE {key} >= $1::text::{t} AND {key} < $2::text::{t} RETURNING *)
                             INSERT INTO pgmaint_drain SELECT * FROM moved",
                            d = default.quoted(),
                            t = plan.key_type
                        ),
                        &[&period.from, &period.to],
                    )
                    .await?;
                tx.batch_execute(&create).await?;
                tx.batch_execute(&format!("INSERT INTO {} SELECT * FROM pgmaint_drain", parent.quoted())).await?;
                Ok::<_, tokio_postgres::Error>(rows)
            }
            .await;
            match result {
                Ok(rows) => {
                    tx.commit().await?;
                    return Ok(rows);
                }
                Err(err) if db::is_transient(&err) => {
                    drop(tx);
                    *retries += 1;
                    match waits.next() {
                        Some(wait) if ctx.should_stop().is_none() => ctx.stop.sleep(wait).await,
                        _ => return Err(TaskError::Database(db::describe(&err))),
                    }
                }
                Err(err) => return Err(TaskError::Database(db::describe(&err))),
            }
        }
    }

    /// Exports an expired partition's rows to compressed files with a
    /// manifest, then drops it, in one transaction: the files are indexed
    /// and flushed before the DROP commits.
    async fn archive(
        &self,
        ctx: &mut TaskContext<'_>,
        _parent: &TableName,
        old: &Existing,
    ) -> Result<(), TaskError> {
        let export = self
            .export
            .as_deref()
            .expect("checked when the config was read");
        let info = db::lookup_table(&*ctx.client, &old.table.quoted())
            .await
            .map_err(|e| TaskError::Target(e.to_string()))?;
        let mut writer = BackupWriter::start_export(
            ctx.client,
            &ctx.state_schema,
            ctx.task_run_id,
            ctx.task_name,
            &old.table,
            &info.columns,
            std::path::Path::new(export),
            self.compression,
        )
        .await?;
        let columns: Vec<String> = info
            .insertable_columns()
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect();
        ctx.client.batch_execute("BEGIN").await?;
        let result = async {
            crate::backup::set_local_text_settings(&*ctx.client).await?;
            let rows = ctx
                .client
                .rows(
                    &format!(
                        "SELECT 0::bigint, {} FROM {}",
                        columns.join(", "),
                        old.table.quoted()
                    ),
                    &[],
                )
                .await?;
            let written = if rows.is_empty() {
                None
            } else {
                Some(writer.write_batch(ctx.client, &rows).await?)
            };
            ctx.client
                .batch_execute(&format!("DROP TABLE {}", old.table.quoted()))
                .await?;
            Ok::<_, TaskError>(written)
        }
        .await;
        match result {
            Ok(written) => {
                if let Err(err) = ctx.client.batch_execute("COMMIT").await {
                    // Unknown whether it committed: the next start of the
                    // task keeps the files if their index row did, else
                    // removes them.
                    return Err(err.into());
                }
                if let Some(w) = &written {
                    writer.committed(w);
                }
                writer.finish(ctx.client).await?;
                Ok(())
            }
            Err(err) => {
                ctx.client.batch_execute("ROLLBACK").await?;
                writer.finish(ctx.client).await?;
                Err(err)
            }
        }
    }
}

/// What `partitions` does with a partition past its retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionAction {
    #[default]
    Detach,
    Drop,
    Archive,
}

#[cfg(test)]
mod tests {
    use super::naming_scheme;

    #[test]
    fn the_naming_scheme_follows_existing_partitions() {
        assert_eq!(
            naming_scheme("t", ["t_p2026_01", "t_p2026_02", "t_default"].into_iter()),
            "YYYY_MM"
        );
        assert_eq!(naming_scheme("t", ["t_p20260101"].into_iter()), "YYYYMMDD");
        assert_eq!(naming_scheme("t", std::iter::empty()), "YYYYMMDD");
        assert_eq!(
            naming_scheme("t", ["t_p2026w05"].into_iter()),
            "IYYY\"w\"IW"
        );
    }
}

//! Which rows a batched task works on: `where`, or `time_column` with
//! `older_than`. Shared by purge and archive, so both read, validate and
//! describe their rows the same way.

use crate::unnamed::Unnamed;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::{CheckProblem, ReportProblem};
use crate::db::{self, TableInfo};
use crate::predicate::{self, Calls, FunctionName};
use crate::retention;
use crate::sql;

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
    pub fn resolve(
        where_: Option<&String>,
        time_column: Option<&String>,
        older_than: Option<&String>,
        kind: &str,
        report: &mut ReportProblem<'_>,
    ) -> Option<Filter> {
        match (where_, time_column, older_than) {
            (Some(predicate), None, None) => match predicate::check(predicate) {
                Ok(()) => Some(Filter::Where {
                    predicate: predicate.clone(),
                }),
                Err(refusal) => {
                    report("where", refusal.message, Some(refusal.help));
                    None
                }
            },
            (None, Some(column), Some(age)) => match retention::check_written(age) {
                Ok(()) => Some(Filter::OlderThan {
                    time_column: column.clone(),
                    older_than: age.clone(),
                }),
                Err(problem) => {
                    report("older_than", problem.message, Some(problem.help));
                    None
                }
            },
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
                let filter_sql = self.sql(info);
                let explain = sql::explain_matching(&info.name, &filter_sql);
                if let Err(err) = db::read_only(client, client.rows(&explain, &[])).await {
                    return Err(vec![problem(
                        "where",
                        format!(
                            "the condition is not valid for table {}: {}",
                            info.name,
                            db::describe(&err)
                        ),
                        Some(info.folded_column_help(&err).unwrap_or_else(|| {
                            format!("columns of {} are: {}", info.name, info.column_list())
                        })),
                    )]);
                }
                // A partitioned table's condition runs on each leaf as
                // written: one that names the parent does not resolve there.
                if info.kind == 'p'
                    && let Some(leaf) = super::leaves::first_leaf(client, info.oid).await
                {
                    let explain = sql::explain_matching(&leaf, &filter_sql);
                    if let Err(err) = db::read_only(client, client.rows(&explain, &[])).await {
                        return Err(vec![problem(
                            "where",
                            format!(
                                "the condition is valid for {} but not for its partition {leaf}, where each batch runs it: {}",
                                info.name,
                                db::describe(&err)
                            ),
                            Some(format!(
                                "write the columns unqualified (`at < ...`, not `{}.at < ...`): the condition is pasted into each partition's statements as written",
                                info.name.name
                            )),
                        )]);
                    }
                }
                if let Some(problem) = calls_volatile(client, predicate).await {
                    return Err(vec![problem]);
                }
                Ok(filter_sql)
            }
            Filter::OlderThan {
                time_column,
                older_than,
            } => {
                let mut problems = Vec::new();
                match info.named_column("time_column", time_column) {
                    Err(missing) => problems.push(problem("time_column", missing.message, missing.help)),
                    Ok(column) if column.time.is_none() => problems.push(problem(
                        "time_column",
                        format!("column \"{}\" of {} is {}, not a date or timestamp", column.name, info.name, column.type_name),
                        Some(if is_text(&column.type_name) {
                            // Drizzle's and others' dates kept as ISO text.
                            format!(
                                "dates kept as text compare as text, not by age: write a `where` condition that casts them, e.g. where = '''{}::timestamptz < now() - interval '{older_than}'''' (it reads every row: no index on the text serves the cast)",
                                sql::as_written(&column.name)
                            )
                        } else {
                            "use a column of type date, timestamp or timestamptz (any precision, or a domain over one), or write a `where` condition".into()
                        }),
                    )),
                    Ok(_) => {}
                }
                if let Err(age) = retention::check_live(client, older_than).await {
                    problems.push(problem("older_than", age.message, Some(age.help)));
                }
                if !problems.is_empty() {
                    return Err(problems);
                }
                Ok(self.sql(info))
            }
        }
    }

    /// The filter as every walk statement has it: the user's `where` in
    /// pgmaint's parentheses, or the age comparison with the cutoff as `$4`
    /// ([`sql::WALK_PARAMS`]), the cutoff cast to the column's own type
    /// ([`sql::older_than_predicate`]).
    pub fn sql(&self, info: &TableInfo) -> String {
        match self {
            Filter::Where { predicate } => sql::predicate(predicate),
            Filter::OlderThan { time_column, .. } => {
                match info.named_column("time_column", time_column) {
                    Ok(column) => sql::older_than_predicate(
                        &column.name,
                        column.time.unwrap_or(sql::TimeKind::Timestamptz),
                        4,
                    ),
                    // validate refuses this before any statement runs.
                    Err(_) => sql::older_than_predicate(time_column, sql::TimeKind::Timestamptz, 4),
                }
            }
        }
    }

    /// The rows of `info` the filter names now, counted as a dry run counts
    /// them: the same filter text and the same fixed cutoff, exactly up to
    /// `exact_count_limit` (by the planner's estimate of the table), above
    /// it the planner's estimate of the matching rows.
    pub async fn backlog(
        &self,
        client: &Client,
        info: &TableInfo,
        exact_count_limit: u64,
    ) -> Result<Backlog, tokio_postgres::Error> {
        let cutoff = self.cutoff(client).await?;
        let filter = self.sql(info);
        if info.estimated_rows <= exact_count_limit as f64 {
            let rows = read_matching(client, &sql::count_matching(&info.name, &filter), &cutoff)
                .await?[0]
                .get::<_, i64>(0);
            return Ok(Backlog {
                rows: rows as f64,
                exact: true,
            });
        }
        let plan: serde_json::Value =
            read_matching(client, &sql::explain_matching(&info.name, &filter), &cutoff).await?[0]
                .get(0);
        Ok(Backlog {
            rows: plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0),
            exact: false,
        })
    }

    /// The cutoff for `older_than`, fixed once per run so every batch uses
    /// the same one.
    pub async fn cutoff(
        &self,
        client: &Client,
    ) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
        Ok(self.cutoff_in_session(client).await?.0)
    }

    /// The cutoff, and the session's `TimeZone` it is compared in (the
    /// wall-clock time a `timestamp` column is compared with is the cutoff
    /// there), when that is a zone name chrono knows.
    pub async fn cutoff_in_session(
        &self,
        client: &Client,
    ) -> Result<(Option<DateTime<Utc>>, Option<chrono_tz::Tz>), tokio_postgres::Error> {
        Ok(match self {
            Filter::OlderThan { older_than, .. } => {
                let row = client
                    .row(
                        "SELECT (now() - $1::text::interval)::timestamptz, current_setting('TimeZone')",
                        &[older_than],
                    )
                    .await?;
                let zone: String = row.get(1);
                (Some(row.get(0)), zone.parse().ok())
            }
            Filter::Where { .. } => (None, None),
        })
    }
}

/// How many rows a task's filter names right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub rows: f64,
    /// Counted, rather than the planner's estimate.
    pub exact: bool,
}

/// The rows of `table` that `filter` names now (see [`Filter::backlog`]),
/// with the table as the catalog names it; `None` when the table is not
/// there (`check` reports that).
pub async fn pending(
    client: &Client,
    table: &str,
    filter: &Filter,
    exact_count_limit: u64,
) -> Result<Option<(sql::TableName, Backlog)>, tokio_postgres::Error> {
    let Ok(info) = db::lookup_table(client, table).await else {
        return Ok(None);
    };
    let backlog = filter.backlog(client, &info, exact_count_limit).await?;
    Ok(Some((info.name, backlog)))
}

/// Runs a read of the rows a filter names, prepared with the walk's
/// parameters ([`sql::WALK_PARAMS`]) so the filter's text is the batches'
/// own: the page and limit parameters NULL, the cutoff as `$4`.
pub async fn read_matching(
    client: &Client,
    statement: &str,
    cutoff: &Option<DateTime<Utc>>,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let none: Option<i64> = None;
    let [a, b, c, d] = sql::WALK_PARAMS;
    client
        .query_typed(
            statement,
            &[(&none, a), (&none, b), (&none, c), (cutoff, d)],
        )
        .await
}

/// The most views followed from one condition (views reading views).
const MAX_VIEWS: usize = 64;

/// Refuses a `where` whose rows can change between two evaluations: a
/// volatile function (`random()`, `clock_timestamp()`, `nextval()`, one with
/// side effects) makes the dry run's count, each batch and the final count
/// disagree by construction, and the walk evaluates the condition more than
/// once per row. Also refuses a backslash in a plain string literal when the
/// server reads backslashes as escapes, where the config-time check read
/// the literal differently.
async fn calls_volatile(client: &Client, text: &str) -> Option<CheckProblem> {
    match volatile_call(client, text).await {
        Ok(Some(what)) => return Some(CheckProblem {
            key: "where",
            message: format!(
                "the condition calls {what}, which is VOLATILE: it can give another answer each time it is evaluated, so the dry run, every batch and the final count would not agree"
            ),
            help: Some("use a stable equivalent: `now()` or `statement_timestamp()` instead of `clock_timestamp()`/`timeofday()`, a fixed value instead of `random()`; a function with side effects does not belong in a condition".into()),
        }),
        Ok(None) => {}
        Err(err) => return Some(CheckProblem {
            key: "where",
            message: format!(
                "cannot check which functions the condition calls: {}",
                db::describe(&err)
            ),
            help: None,
        }),
    }
    let at = predicate::backslash_in_plain_string(text)?;
    let conforming = client
        .row(
            "SELECT current_setting('standard_conforming_strings') = 'on'",
            &[],
        )
        .await
        .map(|row| row.get::<_, bool>(0));
    (!matches!(conforming, Ok(true))).then(|| CheckProblem {
        key: "where",
        message: format!(
            "the string literal at {at} holds a backslash, and this server may read it as an escape (standard_conforming_strings is not on)"
        ),
        help: Some("write the literal as E'...' with the backslash doubled, or turn standard_conforming_strings on".into()),
    })
}

/// The first volatile function or operator the condition calls, in words.
///
/// How volatility is found, and why so: PostgreSQL offers no read-only way
/// to ask whether an expression is volatile (a temporary view and its
/// `pg_depend` rows would be DDL on the user's database, and EXPLAIN does
/// not show volatility), so the condition's own syntax tree names what it
/// calls and the catalog says what that is:
/// - functions by name (`schema.name` as qualified, else every schema on
///   this session's search path, which is the one the batches run with),
///   over every overload: if any overload of that name is VOLATILE the
///   condition is refused. Resolving the overload PostgreSQL picks would
///   need the argument types; refusing on any is conservative, and in
///   pg_catalog only `ts_rewrite` has overloads of both kinds.
/// - operators by their characters: an operator whose function is
///   VOLATILE (none is built in) refuses the condition when its name
///   appears in a run of operator characters of the condition.
/// - views the condition's subqueries read, and the views they read: their
///   definitions (`pg_get_viewdef`) are read the same way. (`pg_depend`
///   would not do: it records no dependency on built-in functions such as
///   `random()`.)
///
/// Not examined: casts (a type's input or cast function), functions a
/// STABLE function calls in its body (PostgreSQL trusts the label, and so
/// does pgmaint), row-level security policies and the attribute notation
/// `row.function`.
async fn volatile_call(
    client: &Client,
    text: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    // What the condition calls, then what each view it reads calls.
    let own = Calls::of_condition(text);
    let mut pending = own.relations.clone();
    let mut read: Vec<(String, Calls)> = vec![(String::new(), own)];
    while let Some(relation) = pending.pop() {
        if read.len() > MAX_VIEWS {
            break;
        }
        let Some(view) = client
            .row_opt(
                "SELECT format('%I.%I', n.nspname, c.relname), pg_get_viewdef(c.oid)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = to_regclass($1) AND c.relkind = 'v'",
                &[&relation],
            )
            .await?
        else {
            continue;
        };
        let name: String = view.get(0);
        if read.iter().any(|(seen, _)| *seen == name) {
            continue;
        }
        let calls = Calls::of_query(&view.get::<_, String>(1));
        pending.extend(calls.relations.iter().cloned());
        read.push((name, calls));
    }
    let through = |view: &str| {
        if view.is_empty() {
            String::new()
        } else {
            format!(" through view {view}")
        }
    };

    let (mut views, mut schemas, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for (view, calls) in &read {
        for function in &calls.functions {
            views.push(view.clone());
            schemas.push(function.schema.clone().unwrap_or_default());
            names.push(function.name.clone());
        }
    }
    if !names.is_empty() {
        let volatile = client
            .row_opt(
                "SELECT c.view, c.schema, c.name
                   FROM unnest($1::text[], $2::text[], $3::text[]) AS c(view, schema, name)
                   JOIN pg_proc p ON p.proname = c.name
                   JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE p.provolatile = 'v'
                    AND CASE WHEN c.schema = '' THEN n.nspname = ANY (current_schemas(true))
                             ELSE n.nspname = c.schema END
                  ORDER BY 1, 2, 3
                  LIMIT 1",
                &[&views, &schemas, &names],
            )
            .await?;
        if let Some(row) = volatile {
            let (view, schema): (String, String) = (row.get(0), row.get(1));
            let function = FunctionName {
                schema: (!schema.is_empty()).then_some(schema),
                name: row.get(2),
            };
            return Ok(Some(format!("{function}{}", through(&view))));
        }
    }

    if read.iter().all(|(_, calls)| calls.operator_runs.is_empty()) {
        return Ok(None);
    }
    let operators = client
        .rows(
            "SELECT DISTINCT o.oprname::text, p.oid::regproc::text
               FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode
              WHERE p.provolatile = 'v'
              ORDER BY 1",
            &[],
        )
        .await?;
    for row in &operators {
        let (operator, function): (String, String) = (row.get(0), row.get(1));
        if let Some((view, _)) = read.iter().find(|(_, calls)| {
            calls
                .operator_runs
                .iter()
                .any(|run| run.contains(&operator))
        }) {
            return Ok(Some(format!(
                "operator {operator} (function {function}()){}",
                through(view)
            )));
        }
    }
    Ok(None)
}

/// Looks the table up for a batched task, refusing what a page walk cannot
/// handle.
pub async fn walkable_table(client: &Client, written: &str) -> Result<TableInfo, CheckProblem> {
    let info = db::lookup_table(client, written)
        .await
        .map_err(|err| CheckProblem {
            key: "table",
            help: err.help(Some(
                "check the name, or set search_path / qualify it as schema.table",
            )),
            message: err.to_string(),
        })?;
    Ok(info)
}

/// Whether a column's printed type is a string type (`text`, `varchar(n)`,
/// `character(n)`).
fn is_text(type_name: &str) -> bool {
    type_name == "text"
        || type_name.starts_with("character varying")
        || type_name.starts_with("character(")
        || type_name == "character"
}

//! `[health.custom.NAME]`: the application's own signals (failed logins,
//! an error rate, a queue that should be empty) as a query whose rows are
//! findings. The query runs unchanged, as one statement, in a READ ONLY
//! transaction under the health timeouts (SET LOCAL); each row's `object`
//! and `value` (and optional `detail`) make a finding whose level comes
//! from the check's `warning`/`critical` (higher is worse; with neither,
//! every row is a warning). A row whose value is NULL is not a finding.

use tokio_postgres::Client;
use tokio_postgres::types::{FromSql, Type};

use super::{Finding, Level, Outcome, Thresholds};
use crate::config::problem::Problem;
use crate::config::{Config, CustomCheck};
use crate::unnamed::Unnamed;

/// The types `object` and `detail` may have.
pub(crate) const TEXT_TYPES: &[Type] = &[
    Type::TEXT,
    Type::VARCHAR,
    Type::BPCHAR,
    Type::NAME,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::INET,
];
/// The types `value` may have.
pub(crate) const NUMBER_TYPES: &[Type] = &[
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
];

/// What is wrong with a query's result columns, for `check`: `object` and
/// `value` present with usable types, `detail` (if present) too.
pub(crate) fn column_problems(columns: &[(String, Type)]) -> Vec<String> {
    let mut problems = Vec::new();
    let names = |types: &[Type]| {
        types
            .iter()
            .map(|t| t.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (column, types, required) in [
        ("object", TEXT_TYPES, true),
        ("value", NUMBER_TYPES, true),
        ("detail", TEXT_TYPES, false),
    ] {
        match columns.iter().find(|(name, _)| name == column) {
            None if required => problems.push(format!(
                "the query returns no column named `{column}` (it returns: {})",
                columns
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => {}
            Some((_, ty)) if !types.contains(ty) => problems.push(format!(
                "column `{column}` is of type {}; it must be one of {} (cast it in the query: ... ::{} AS {column})",
                ty.name(),
                names(types),
                if column == "value" { "float8" } else { "text" }
            )),
            Some(_) => {}
        }
    }
    problems
}

/// `check`: each custom check's query parsed on the server (one
/// statement; its columns by name and type) and EXPLAINed, in a read-only
/// transaction; a problem at its `sql` key for each that fails.
pub(crate) async fn check_queries(client: &Client, config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for check in &config.health.custom {
        let key = ["health", "custom", check.name.as_str(), "sql"];
        let columns = match crate::db::parse_columns(client, &check.sql).await {
            Ok(columns) => columns,
            Err(err) => {
                problems.push(
                    config
                        .problem(&key, format!("the query does not parse: {}", crate::db::describe(&err)))
                        .with_help("one SELECT returning object and value (and optionally detail); try it in psql first"),
                );
                continue;
            }
        };
        for message in column_problems(&columns) {
            problems.push(
                config
                    .problem(&key, message)
                    .with_help("name the columns with AS: SELECT ... AS object, ... AS value"),
            );
        }
        let explained = crate::db::read_only(client, async {
            client.rows(&format!("EXPLAIN {}", check.sql), &[]).await
        })
        .await;
        if let Err(err) = explained {
            problems.push(
                config
                    .problem(
                        &key,
                        format!("EXPLAIN of the query fails: {}", crate::db::describe(&err)),
                    )
                    .with_help("the query must run read-only, with no parameters"),
            );
        }
    }
    problems
}

pub(crate) fn thresholds(check: &CustomCheck) -> Thresholds {
    Thresholds {
        warning: check.warning,
        critical: check.critical,
        lower_is_worse: false,
    }
}

/// Runs one custom check's query in a read-only transaction, under the
/// health timeouts SET LOCAL to it.
pub(crate) async fn run(
    client: &Client,
    check: &CustomCheck,
    statement_timeout: &str,
    lock_timeout: &str,
) -> Result<Outcome, tokio_postgres::Error> {
    let rows = crate::db::read_only(client, async {
        client
            .row(
                "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true)",
                &[&statement_timeout, &lock_timeout],
            )
            .await?;
        client.rows(&check.sql, &[]).await
    })
    .await?;
    let Some(first) = rows.first() else {
        return Ok(Outcome::Findings(
            Vec::new(),
            Some("no rows: nothing to report".into()),
        ));
    };
    let columns: Vec<(String, Type)> = first
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let problems = column_problems(&columns);
    if !problems.is_empty() {
        return Ok(Outcome::Unknown(format!(
            "{} (`pgmaint check` checks the query)",
            problems.join("; ")
        )));
    }
    let thresholds = thresholds(check);
    let threshold = thresholds.describe(number);
    let has_detail = columns.iter().any(|(n, _)| n == "detail");
    let mut findings = Vec::new();
    for row in &rows {
        let Some(Number(value)) = row.try_get::<_, Option<Number>>("value")? else {
            continue;
        };
        let object = row
            .try_get::<_, Option<Shown>>("object")?
            .map(|s| s.0)
            .unwrap_or_else(|| "(null)".into());
        let mut shown = number(value);
        if has_detail && let Some(Shown(detail)) = row.try_get::<_, Option<Shown>>("detail")? {
            shown = format!("{shown} ({detail})");
        }
        let status = if thresholds.warning.is_none() && thresholds.critical.is_none() {
            Level::Warning
        } else {
            thresholds.level(value)
        };
        findings.push(Finding {
            object,
            value: shown,
            threshold: if threshold == "none" {
                "any row".into()
            } else {
                threshold.clone()
            },
            advice: check.advice.clone(),
            status,
            measure: Some(value),
        });
    }
    Ok(Outcome::Findings(findings, None))
}

/// A whole number without decimals, others with up to three.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let s = format!("{value:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `value` as a float, from any of `NUMBER_TYPES`.
struct Number(f64);

impl<'a> FromSql<'a> for Number {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Number(match *ty {
            Type::INT2 => i16::from_sql(ty, raw)? as f64,
            Type::INT4 => i32::from_sql(ty, raw)? as f64,
            Type::INT8 => i64::from_sql(ty, raw)? as f64,
            Type::FLOAT4 => f32::from_sql(ty, raw)? as f64,
            Type::FLOAT8 => f64::from_sql(ty, raw)?,
            _ => numeric(raw)?,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        NUMBER_TYPES.contains(ty)
    }
}

/// A binary `numeric`: digit count, weight, sign, scale, then base-10000
/// digits.
fn numeric(raw: &[u8]) -> Result<f64, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value too short".into())
    };
    let (ndigits, weight, sign) = (word(0)? as usize, word(1)? as i32, word(2)? as u16);
    if sign == 0xC000 {
        return Ok(f64::NAN);
    }
    let mut value = 0.0;
    for i in 0..ndigits {
        value += word(4 + i)? as f64 * 10_000f64.powi(weight - i as i32);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

/// `object` or `detail` as text, from any of `TEXT_TYPES`.
struct Shown(String);

impl<'a> FromSql<'a> for Shown {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Shown(match *ty {
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            Type::INET => std::net::IpAddr::from_sql(ty, raw)?.to_string(),
            _ => String::from_sql(ty, raw)?,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        TEXT_TYPES.contains(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_show_whole_or_with_up_to_three_decimals() {
        assert_eq!(number(20.0), "20");
        assert_eq!(number(0.0526), "0.053");
        assert_eq!(number(5.5), "5.5");
    }

    #[test]
    fn columns_are_checked_by_name_and_type() {
        let ok = vec![
            ("object".to_string(), Type::TEXT),
            ("value".to_string(), Type::INT8),
        ];
        assert!(column_problems(&ok).is_empty());
        let missing = vec![
            ("ip".to_string(), Type::TEXT),
            ("value".to_string(), Type::INT8),
        ];
        assert!(column_problems(&missing)[0].contains("no column named `object`"));
        let wrong = vec![
            ("object".to_string(), Type::TEXT),
            ("value".to_string(), Type::TEXT),
        ];
        assert!(column_problems(&wrong)[0].contains("column `value` is of type text"));
    }
}

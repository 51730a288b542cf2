//! The dry-run text of the walk purge, archive and orphans (`action =
//! "delete"` or `"set_null"`) share: rows and batches, what foreign keys
//! keep or take, the every-row warning, a time estimate, locks, and a few
//! of the rows. It reads the walk's `details` (their JSON is the `--json`
//! contract) back into `WalkDetails`, so no key is read as an untyped
//! string.

use serde::Deserialize;

use super::{PlanContext, PlanLine};
use crate::options::TaskOptions;

/// Sample rows shown per task (the JSON has all the dry run read).
const SAMPLES_SHOWN: usize = 3;

/// A walk's dry-run `details`, as far as its text needs them. Every field
/// is optional: archive and orphans add theirs to the walk's.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WalkDetails {
    table: Option<String>,
    action: Option<String>,
    rows_exact: Option<bool>,
    cutoff: Option<String>,
    archive_table: Option<String>,
    export: Option<String>,
    orphans: Option<u64>,
    /// An orphans task's `action = "set_null"`: the columns it clears.
    set_null_columns: Vec<String>,
    batches_estimate: BatchesEstimate,
    batch_size: Option<u64>,
    /// Walkers sharing the pages (`parallel = N`), when more than one.
    walkers: Option<u64>,
    backup: Option<bool>,
    creates_archive_table: Option<bool>,
    references: ReferencesDetails,
    matches_every_row: Option<bool>,
    time_estimate: Option<TimeEstimate>,
    lock_timeout: Option<String>,
    max_retries: Option<u64>,
    samples: Vec<serde_json::Value>,
    /// A partitioned table's leaves that can hold matching rows.
    partitions: Option<Vec<PartitionDetails>>,
    partitions_total: Option<u64>,
}

/// One leaf partition's share of the plan.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PartitionDetails {
    table: Option<String>,
    rows: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BatchesEstimate {
    batches: Option<u64>,
    largest_batch: Option<u64>,
    at_least: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReferencesDetails {
    counted: Option<bool>,
    kept_referenced: Option<u64>,
    kept_referenced_by: Vec<Kept>,
    on_referenced: Option<String>,
    cascade: Vec<CascadePart>,
    cascade_cycle: Option<String>,
}

/// Rows a foreign key without an ON DELETE action keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Kept {
    rows: Option<u64>,
    table: Option<String>,
    constraint: Option<String>,
}

/// What a removal's cascade deletes or changes in one table.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CascadePart {
    rows: Option<u64>,
    table: Option<String>,
    constraint: Option<String>,
    changed_columns: Vec<String>,
    action: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TimeEstimate {
    ms: Option<u64>,
    runs: Option<u64>,
    rows_per_second: Option<u64>,
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `2026-11-25T03:51:35.682280+00:00` as `2026-11-25 03:51:35 UTC`.
fn readable_time(rfc3339: &str) -> String {
    // A cutoff in a task's time_zone keeps its offset: it is the
    // wall-clock time a `timestamp` column is compared with.
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            if t.offset().local_minus_utc() == 0 {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string()
            } else {
                t.format("%Y-%m-%d %H:%M:%S %:z").to_string()
            }
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// What a purge, archive or orphans delete would do.
pub(crate) fn plan_lines(
    details: &serde_json::Value,
    context: &PlanContext<'_>,
) -> Option<Vec<PlanLine>> {
    let details: WalkDetails = serde_json::from_value(details.clone()).ok()?;
    let table = details.table.as_deref().unwrap_or("?");
    let rows = context.rows;
    let mut lines = vec![summary_line(&details, context, table)];
    if details.creates_archive_table == Some(true) {
        lines.push(PlanLine::Say(format!(
            "Creates {} first, like {table}.",
            details.archive_table.as_deref().unwrap_or("?")
        )));
    }
    lines.extend(partition_lines(&details));
    lines.extend(reference_lines(&details.references));
    if details.matches_every_row == Some(true) {
        let effect = if details.action.as_deref() == Some("set_null") {
            format!(
                "would set {} to NULL in every row",
                details.set_null_columns.join(", ")
            )
        } else {
            "would empty it".to_string()
        };
        lines.push(PlanLine::Say(format!(
            "The condition matches every row of {table}: the run {effect}, so it runs only when confirmed, as a critical task does (`pgmaint run {} --yes`).",
            context.name
        )));
    }
    if rows > 0 {
        lines.extend(time_line(&details));
        lines.push(lock_line(&details, context.options, table));
    }
    lines.extend(sample_lines(&details.samples, rows));
    Some(lines)
}

/// Which leaf partitions a partitioned table's walk visits, with their
/// rows; the rest the planner's pruning rules out.
fn partition_lines(details: &WalkDetails) -> Vec<PlanLine> {
    let Some(partitions) = &details.partitions else {
        return Vec::new();
    };
    let total = details.partitions_total.unwrap_or(partitions.len() as u64);
    let mut lines = vec![PlanLine::Say(format!(
        "Partitioned: walks {} of its {total} partition{}, each in turn; the others cannot hold a matching row.",
        partitions.len(),
        plural(total)
    ))];
    for partition in partitions {
        lines.push(PlanLine::Item(format!(
            "{}: {} row{}",
            partition.table.as_deref().unwrap_or("?"),
            crate::output::count(partition.rows.unwrap_or(0)),
            plural(partition.rows.unwrap_or(0))
        )));
    }
    lines
}

/// The plan's first line: what would go where, in how many batches.
fn summary_line(details: &WalkDetails, context: &PlanContext<'_>, table: &str) -> PlanLine {
    let options = context.options;
    let exact = details.rows_exact != Some(false);
    let rows = context.rows;
    let cutoff = details
        .cutoff
        .as_deref()
        .map(|c| format!(" older than {}", readable_time(c)))
        .unwrap_or_default();
    let how_many = if exact {
        format!("{} row{}", crate::output::count(rows), plural(rows))
    } else {
        format!(
            "about {} rows (the planner's estimate)",
            crate::output::count(rows)
        )
    };
    let source = format!("{how_many} of {table}{cutoff}");
    let what = match details.action.as_deref() {
        Some("move") => format!(
            "move {source} to {}{}",
            details.archive_table.as_deref().unwrap_or("?"),
            details
                .export
                .as_deref()
                .map(|dir| format!(" and to files in {dir}"))
                .unwrap_or_default()
        ),
        Some("export") => format!(
            "move {source} to files in {}",
            details.export.as_deref().unwrap_or("?")
        ),
        Some("set_null") => format!(
            "set {} to NULL in {source} whose reference has no parent row",
            details.set_null_columns.join(", ")
        ),
        _ if details.orphans.is_some() => {
            format!("delete {source} whose reference has no parent row")
        }
        _ => format!("delete {source}"),
    };
    let estimate = &details.batches_estimate;
    let batches = estimate.batches.unwrap_or(context.batches);
    let largest = estimate
        .largest_batch
        .unwrap_or(0)
        .max(details.batch_size.unwrap_or(options.batch_size));
    if rows == 0 {
        PlanLine::Say(format!(
            "Nothing to {}: no row of {table} matches{cutoff}.",
            match details.action.as_deref() {
                Some("delete") => "delete",
                Some("set_null") => "set to NULL",
                _ => "move",
            }
        ))
    } else {
        let in_batches = match (batches, estimate.at_least == Some(true)) {
            (1, false) => " in 1 batch".to_string(),
            (n, false) => format!(
                " in {} batches of up to {} rows (counted from the pages they are on)",
                crate::output::count(n),
                crate::output::count(largest)
            ),
            (n, true) => format!(
                " in at least {} batches of about {} rows (rows / batch_size: the rows were not counted)",
                crate::output::count(n),
                crate::output::count(options.batch_size)
            ),
        };
        let walkers = match details.walkers {
            Some(n) if n > 1 => format!(
                ", {n} walkers at once (each a connection of its own, over its own share of the pages)"
            ),
            _ => String::new(),
        };
        PlanLine::Say(format!(
            "Would {what}{in_batches}{walkers}{}.",
            if details.backup == Some(true) {
                ", backing each batch up before it commits"
            } else {
                ""
            }
        ))
    }
}

/// What the foreign keys into the table keep, cascade or leave uncounted.
fn reference_lines(references: &ReferencesDetails) -> Vec<PlanLine> {
    let mut lines = Vec::new();
    if references.counted == Some(false) {
        lines.push(PlanLine::Say(
            "Foreign keys into the table were not counted (the rows were estimated).".to_string(),
        ));
    }
    let kept = references.kept_referenced.unwrap_or(0);
    if kept > 0 {
        let by: Vec<String> = references
            .kept_referenced_by
            .iter()
            .filter(|k| k.rows.unwrap_or(0) > 0)
            .map(|k| {
                format!(
                    "{} by {} (\"{}\")",
                    crate::output::count(k.rows.unwrap_or(0)),
                    k.table.as_deref().unwrap_or("?"),
                    k.constraint.as_deref().unwrap_or("?")
                )
            })
            .collect();
        if references.on_referenced.as_deref() == Some("fail") {
            lines.push(PlanLine::Say(format!(
                "{} of these rows {} still referenced: {}. With on_referenced = \"fail\" the first batch that meets one fails and is rolled back.",
                crate::output::count(kept),
                if kept == 1 { "is" } else { "are" },
                by.join(", ")
            )));
        } else {
            lines.push(PlanLine::Say(format!(
                "Keeps {} row{} still referenced through a foreign key without ON DELETE action: {}.",
                crate::output::count(kept),
                plural(kept),
                by.join(", ")
            )));
        }
    }
    for part in &references.cascade {
        let part_rows = part.rows.unwrap_or(0);
        let part_table = part.table.as_deref().unwrap_or("?");
        let via = part.constraint.as_deref().unwrap_or("?");
        let columns: Vec<&str> = part.changed_columns.iter().map(String::as_str).collect();
        let set_null = part.action.as_deref() == Some("set_null");
        lines.push(PlanLine::Say(match part.action.as_deref() {
            Some("set_null") | Some("set_default") => format!(
                "Sets {} to {} in {} row{} of {part_table} (ON DELETE {} through \"{via}\").",
                columns.join(", "),
                if set_null { "NULL" } else { "its default" },
                crate::output::count(part_rows),
                plural(part_rows),
                if set_null { "SET NULL" } else { "SET DEFAULT" }
            ),
            _ => format!(
                "Also deletes {} row{} of {part_table} (ON DELETE CASCADE through \"{via}\").",
                crate::output::count(part_rows),
                plural(part_rows)
            ),
        }));
    }
    if let Some(cycle) = &references.cascade_cycle {
        lines.push(PlanLine::Say(format!(
            "The cascade counts are not complete: {cycle}."
        )));
    }
    lines
}

/// How long the run would take, from this task's past runs.
fn time_line(details: &WalkDetails) -> Option<PlanLine> {
    let time = details.time_estimate.as_ref()?;
    let ms = time.ms?;
    let runs = time.runs.unwrap_or(0);
    let measured = if runs == 1 {
        "its last successful run".to_string()
    } else {
        format!("its last {runs} successful runs")
    };
    Some(PlanLine::Say(format!(
        "Takes about {}, at the {} rows/s of {measured}.",
        crate::output::duration_ms(ms.max(1)),
        crate::output::count(time.rows_per_second.unwrap_or(0)),
    )))
}

/// The locks each batch takes and what happens when it cannot get them.
fn lock_line(details: &WalkDetails, options: &TaskOptions, table: &str) -> PlanLine {
    let moving = !matches!(details.action.as_deref(), Some("delete" | "set_null"));
    let cascades = !details.references.cascade.is_empty();
    PlanLine::Say(format!(
        "Locks: each batch (one transaction) takes ROW EXCLUSIVE on {table}{} and locks the rows it {}{} until it commits{}; a lock it cannot get within lock_timeout {} rolls it back, to be retried (up to {} times).",
        if moving {
            details
                .archive_table
                .as_deref()
                .map(|a| format!(" and {a}"))
                .unwrap_or_default()
        } else {
            String::new()
        },
        match details.action.as_deref() {
            Some("delete") => "deletes",
            Some("set_null") => "updates",
            _ => "moves",
        },
        if cascades {
            " and those its cascades change"
        } else {
            ""
        },
        if details.backup == Some(true) || details.export.is_some() {
            ", after its rows are written to disk"
        } else {
            ""
        },
        details
            .lock_timeout
            .clone()
            .unwrap_or_else(|| options.lock_timeout.to_string()),
        details.max_retries.unwrap_or(options.max_retries as u64)
    ))
}

/// A few of the named rows, so a person sees what the condition means.
fn sample_lines(samples: &[serde_json::Value], rows: u64) -> Vec<PlanLine> {
    let mut lines = Vec::new();
    if !samples.is_empty() {
        let shown = samples.len().min(SAMPLES_SHOWN);
        lines.push(PlanLine::Say(if shown as u64 >= rows {
            "They are:".to_string()
        } else {
            format!("For example ({shown} of {}):", crate::output::count(rows))
        }));
        for sample in samples.iter().take(SAMPLES_SHOWN) {
            lines.push(PlanLine::Item(sample_row(sample)));
        }
    }
    lines
}

/// A sample row as `column=value` pairs, long values shortened, so a few
/// columns of each row fit a line.
pub(crate) fn sample_row(row: &serde_json::Value) -> String {
    let Some(columns) = row.as_object() else {
        return row.to_string();
    };
    columns
        .iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(text) => readable_value(text),
                other => other.to_string(),
            };
            let text = if text.chars().count() > 24 {
                format!("{}…", text.chars().take(23).collect::<String>())
            } else {
                text
            };
            format!("{name}={text}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A timestamp as PostgreSQL's JSON writes it, to the second; anything
/// else as it is.
fn readable_value(text: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(time) => {
            let offset = time.offset().local_minus_utc();
            let zone = if offset % 3600 == 0 {
                format!("{:+03}", offset / 3600)
            } else {
                time.format("%:z").to_string()
            };
            format!("{}{zone}", time.format("%Y-%m-%d %H:%M:%S"))
        }
        Err(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskOptions;

    #[test]
    fn an_archive_walk_is_told_from_its_details() {
        let details = serde_json::json!({
            "table": "public.logs", "action": "move", "archive_table": "public.logs_archive",
            "export": null, "rows_exact": true, "cutoff": null, "backup": false,
            "batches_estimate": {"batches": 1, "largest_batch": 3, "at_least": false, "from": "pages"},
            "references": {"on_referenced": "keep", "kept_referenced": 0, "kept_referenced_by": [], "cascade": []},
            "samples": [{"id": 1}], "statements": [], "lock_timeout": "1s", "max_retries": 5,
        });
        let context = PlanContext {
            name: "old_logs",
            rows: 3,
            batches: 1,
            options: &TaskOptions::BUILT_IN,
        };
        let lines = plan_lines(&details, &context).unwrap();
        assert_eq!(
            lines[0],
            PlanLine::Say(
                "Would move 3 rows of public.logs to public.logs_archive in 1 batch.".into()
            )
        );
        assert!(lines.contains(&PlanLine::Item("id=1".into())), "{lines:?}");
    }
}

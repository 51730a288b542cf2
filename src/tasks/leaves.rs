//! Partitioned parents: purge, archive and orphans walk each leaf
//! partition in turn (ctids belong to one partition), skipping the leaves
//! the planner prunes for the filter, into one backup named by the parent.
//! An ordinary table is one walk of its own.

use serde_json::json;
use tokio_postgres::Client;

use super::walk::{Copy, WalkPlan};
use super::{Outcome, TaskContext, TaskError};
use crate::backup::BackupWriter;
use crate::db::TableInfo;
use crate::sql::TableName;
use crate::status::Status;
use crate::unnamed::Unnamed;

/// The walks one task makes: the table's own, or one per leaf partition
/// its filter can match.
pub(crate) struct Walks {
    /// The whole table's plan: what the every-row and cycle checks read.
    whole: WalkPlan,
    /// None for an ordinary table; else the leaves walked, in order.
    leaves: Option<Partitions>,
}

struct Partitions {
    walks: Vec<WalkPlan>,
    /// Every leaf partition of the parent, walked or pruned.
    all: Vec<String>,
}

impl Walks {
    /// The walks of `whole` over `info`: for a partitioned table, one per
    /// leaf the filter can reach, each with the filter `filter_for` gives
    /// for that leaf (the same text, unless the filter names the table).
    pub(crate) async fn of(
        client: &Client,
        whole: WalkPlan,
        info: &TableInfo,
        filter_for: impl Fn(&TableName) -> String,
    ) -> Result<Walks, TaskError> {
        if info.kind != 'p' {
            return Ok(Walks {
                whole,
                leaves: None,
            });
        }
        let leaves = client
            .rows(
                "SELECT n.nspname::text, c.relname::text, c.oid, c.relkind::text,
                        pg_relation_size(c.oid) / current_setting('block_size')::bigint,
                        c.reltuples::float8
                   FROM pg_partition_tree($1::oid::regclass) t
                   JOIN pg_class c ON c.oid = t.relid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE t.isleaf
                  ORDER BY t.level, n.nspname, c.relname",
                &[&info.oid],
            )
            .await?;
        // Pruning compares with the cutoff in the task's time_zone.
        let reached = crate::db::read_only(client, reached_leaves(client, &whole)).await?;
        let mut walks = Vec::new();
        let mut all = Vec::new();
        for row in &leaves {
            let name = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            all.push(name.to_string());
            if !reached.contains(&name) {
                continue;
            }
            if row.get::<_, &str>(3) != "r" {
                return Err(TaskError::Target(format!(
                    "partition {name} of {} is not an ordinary table (a foreign table?), and the filter can match its rows; nothing was removed. Narrow the filter to the other partitions, or detach {name}",
                    info.name
                )));
            }
            let oid: u32 = row.get(2);
            let mut walk = whole.clone();
            walk.filter_sql = filter_for(&name);
            walk.pages = row.get(4);
            walk.estimated_rows = row.get(5);
            // Setting columns to NULL removes no row: no foreign key into
            // the table is reached (set_null refuses referenced columns).
            if !matches!(walk.destination, crate::sql::Destination::Clear { .. }) {
                walk.references = super::references::load(client, &name, oid).await?;
            }
            // A key of the parent into itself is cloned onto each leaf as a
            // key of the parent into the leaf: the walk would take the
            // cascade for another table's and count named rows twice.
            if walk.references.parts.iter().any(|p| p.table == info.name) {
                return Err(TaskError::Target(format!(
                    "{} has a foreign key into itself with an ON DELETE action, and pgmaint does not yet follow such a cascade across its partitions; nothing was removed. Remove the rows with a task per partition, or make the key ON DELETE NO ACTION (then referenced rows are kept)",
                    info.name
                )));
            }
            walk.table = name;
            walks.push(walk);
        }
        Ok(Walks {
            whole: WalkPlan { pages: 0, ..whole },
            leaves: Some(Partitions { walks, all }),
        })
    }

    /// The plan of the whole table the task names.
    pub(crate) fn whole(&self) -> &WalkPlan {
        &self.whole
    }

    /// The plan of the walk, or of the walks with their sums.
    pub(crate) async fn describe(
        &self,
        ctx: &mut TaskContext<'_>,
        verb: &str,
        copy: impl Fn() -> Copy,
    ) -> Result<Outcome, TaskError> {
        let Some(partitions) = &self.leaves else {
            return self.whole.describe(ctx, verb, copy()).await;
        };
        let mut combined: Option<Outcome> = None;
        let mut listed = Vec::new();
        for walk in &partitions.walks {
            let outcome = walk.describe(ctx, verb, copy()).await?;
            listed.push(json!({
                "table": walk.table.to_string(),
                "rows": outcome.rows,
                "batches": outcome.batches,
                "pages": walk.pages,
                "rows_exact": outcome.details["rows_exact"],
            }));
            combined = Some(match combined {
                None => outcome,
                Some(sum) => add_described(sum, outcome),
            });
        }
        let mut outcome = match combined {
            Some(outcome) => outcome,
            // No leaf can hold a matching row: the whole table's plan says
            // there is nothing to do.
            None => self.whole.describe(ctx, verb, copy()).await?,
        };
        let every_row =
            crate::db::read_only(ctx.client, self.whole.matches_every_row(ctx.client, true))
                .await?;
        let details = &mut outcome.details;
        details["table"] = json!(self.whole.table.to_string());
        details["pages"] = json!(partitions.walks.iter().map(|w| w.pages).sum::<i64>());
        details["matches_every_row"] = json!(every_row);
        details["needs_confirmation"] = json!((every_row == Some(true)).then(|| format!("the condition matches every row of {}: the run empties the table, and runs only when confirmed (--yes, the API's \"yes\", or a schedule with allow_critical = true)", self.whole.table)));
        details["partitions"] = json!(listed);
        details["partitions_total"] = json!(partitions.all.len());
        details["partitions_pruned"] = json!(
            partitions
                .all
                .iter()
                .filter(|name| !partitions
                    .walks
                    .iter()
                    .any(|w| &w.table.to_string() == *name))
                .collect::<Vec<_>>()
        );
        Ok(outcome)
    }

    /// The run: the walk, or each leaf's walk in turn into one backup. A
    /// leaf's walk that fails or is stopped ends the run there, with what
    /// the walks before it did.
    pub(crate) async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        mut backup: Option<BackupWriter>,
    ) -> Result<Outcome, TaskError> {
        let Some(partitions) = &self.leaves else {
            return self.whole.execute(ctx, backup).await;
        };
        if let Err(refused) = self.whole.refuse_unconfirmed(ctx).await {
            if let Some(writer) = backup {
                writer.finish(ctx.client).await?;
            }
            return Err(refused);
        }
        let mut combined = Outcome {
            status: Status::Succeeded,
            rows: 0,
            batches: 0,
            retries: 0,
            error: None,
            details: json!({}),
        };
        let mut reached = Vec::new();
        let mut changed = vec![self.whole.table.to_string()];
        let mut longest = 0;
        for walk in &partitions.walks {
            let outcome = match walk.walk_pages(ctx, &mut backup).await {
                Ok(outcome) => outcome,
                Err(err) if combined.batches == 0 => {
                    if let Some(writer) = backup {
                        writer.finish(ctx.client).await?;
                    }
                    return Err(err);
                }
                // Earlier leaves committed: the outcome keeps their rows and
                // the backup that holds them.
                Err(err) => {
                    combined.status = Status::Failed;
                    combined.error = Some(format!(
                        "partition {}: {err}; {} rows of {} were done before it, the rest remain for the next run",
                        walk.table, combined.rows, self.whole.table
                    ));
                    break;
                }
            };
            combined.rows += outcome.rows;
            combined.batches += outcome.batches;
            combined.retries += outcome.retries;
            longest = longest.max(outcome.details["longest_batch_ms"].as_u64().unwrap_or(0));
            reached.push(json!({"table": walk.table.to_string(), "rows": outcome.rows}));
            for table in outcome.details["changed_tables"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if !changed.iter().any(|c| json!(c) == *table) {
                    changed.push(table.as_str().unwrap_or_default().to_string());
                }
            }
            for key in ["archive_table", "remaining_rows_estimate", "locked_pages"] {
                if !outcome.details[key].is_null() {
                    combined.details[key] = outcome.details[key].clone();
                }
            }
            if outcome.status != Status::Succeeded {
                combined.status = outcome.status;
                combined.error = outcome.error.map(|e| {
                    format!(
                        "partition {}: {e}; {} rows of {} were done in all",
                        walk.table, combined.rows, self.whole.table
                    )
                });
                break;
            }
        }
        let details = &mut combined.details;
        details["table"] = json!(self.whole.table.to_string());
        details["cutoff"] = json!(self.whole.cutoff_text(ctx.options.time_zone));
        details["longest_batch_ms"] = json!(longest);
        details["changed_tables"] = json!(changed);
        details["partitions"] = json!(reached);
        details["partitions_total"] = json!(partitions.all.len());
        if let Some(writer) = backup {
            writer
                .finish_into(ctx.client, &mut combined.details)
                .await?;
        }
        Ok(combined)
    }
}

/// One leaf partition of a partitioned table, if it has any: where
/// `check` tries the condition as each batch will run it.
pub(crate) async fn first_leaf(client: &Client, oid: u32) -> Option<TableName> {
    let row = client
        .row_opt(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_partition_tree($1::oid::regclass) t
               JOIN pg_class c ON c.oid = t.relid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE t.isleaf ORDER BY t.level, n.nspname, c.relname LIMIT 1",
            &[&oid],
        )
        .await
        .ok()??;
    Some(TableName::new(
        row.get::<_, String>(0),
        row.get::<_, String>(1),
    ))
}

/// The leaf partitions the planner keeps for the filter: those named in
/// the plan of a read of the matching rows, after pruning by the
/// partition bounds (at plan time, and at executor start for stable
/// expressions such as `now()`).
async fn reached_leaves(
    client: &Client,
    whole: &WalkPlan,
) -> Result<Vec<TableName>, tokio_postgres::Error> {
    let statement = format!(
        "EXPLAIN (FORMAT JSON, VERBOSE) SELECT 1 FROM {} WHERE {}",
        whole.table.quoted(),
        whole.filter_sql
    );
    let rows = super::rows::read_matching(client, &statement, &whole.cutoff).await?;
    let plan: serde_json::Value = rows[0].get(0);
    let mut found = Vec::new();
    relations(&plan, &mut found);
    Ok(found)
}

/// Every `Schema`.`Relation Name` of a JSON plan, depth first.
fn relations(node: &serde_json::Value, found: &mut Vec<TableName>) {
    match node {
        serde_json::Value::Object(map) => {
            if let (Some(schema), Some(name)) = (
                map.get("Schema").and_then(|s| s.as_str()),
                map.get("Relation Name").and_then(|s| s.as_str()),
            ) {
                let table = TableName::new(schema, name);
                if !found.contains(&table) {
                    found.push(table);
                }
            }
            map.values().for_each(|v| relations(v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| relations(v, found)),
        _ => {}
    }
}

/// Two leaves' plans as one: rows, batches and the estimates summed, the
/// samples and the kept and cascaded rows together.
fn add_described(mut sum: Outcome, next: Outcome) -> Outcome {
    sum.rows += next.rows;
    sum.batches += next.batches;
    let (a, b) = (&mut sum.details, &next.details);
    a["rows_exact"] = json!(a["rows_exact"] != json!(false) && b["rows_exact"] != json!(false));
    for key in ["batches", "largest_batch"] {
        let (x, y) = (
            a["batches_estimate"][key].as_u64().unwrap_or(0),
            b["batches_estimate"][key].as_u64().unwrap_or(0),
        );
        a["batches_estimate"][key] = json!(if key == "batches" { x + y } else { x.max(y) });
    }
    if b["batches_estimate"]["at_least"] == json!(true) {
        a["batches_estimate"]["at_least"] = json!(true);
        a["batches_estimate"]["from"] = json!("rows");
    }
    if let (Some(samples), Some(more)) = (a["samples"].as_array_mut(), b["samples"].as_array()) {
        samples.extend(more.iter().cloned());
        samples.truncate(5);
    }
    let kept = a["references"]["kept_referenced"].as_u64().unwrap_or(0)
        + b["references"]["kept_referenced"].as_u64().unwrap_or(0);
    if !a["references"]["kept_referenced"].is_null() {
        a["references"]["kept_referenced"] = json!(kept);
    }
    for key in ["kept_referenced_by", "cascade"] {
        let more = b["references"][key].as_array().cloned().unwrap_or_default();
        if let Some(list) = a["references"][key].as_array_mut() {
            for entry in more {
                match list
                    .iter_mut()
                    .find(|e| e["table"] == entry["table"] && e["action"] == entry["action"])
                {
                    Some(same) => {
                        same["rows"] = json!(
                            same["rows"].as_u64().unwrap_or(0)
                                + entry["rows"].as_u64().unwrap_or(0)
                        );
                    }
                    None => list.push(entry),
                }
            }
        }
    }
    sum
}

/// The filter as a leaf reads it: the text as written.
pub(crate) fn same_filter(filter: &str) -> impl Fn(&TableName) -> String + '_ {
    move |_| filter.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plans_relations_are_found_at_every_depth_once() {
        let plan = json!([{"Plan": {"Node Type": "Append", "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "events_2026_01", "Schema": "public"},
            {"Node Type": "Seq Scan", "Relation Name": "events_default", "Schema": "public",
             "Plans": [{"Relation Name": "events_2026_01", "Schema": "public"}]}
        ]}}]);
        let mut found = Vec::new();
        relations(&plan, &mut found);
        assert_eq!(
            found,
            vec![
                TableName::new("public", "events_2026_01"),
                TableName::new("public", "events_default")
            ]
        );
    }
}

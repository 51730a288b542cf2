//! What else a removal touches through foreign keys: the rows other tables
//! still reference (which a `NO ACTION`/`RESTRICT` key would make the whole
//! batch fail on), and the rows `ON DELETE CASCADE` removes and
//! `SET NULL`/`SET DEFAULT` changes in other tables, level by level.
//!
//! Read once from the catalog when a walk is prepared. The SQL it adds is
//! pgmaint's own, appended after the user's predicate with `AND`; the
//! predicate's text is never touched.

use crate::unnamed::Unnamed;
use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use crate::sql::{TableName, quote_ident};

/// How deep a cascade is followed (tables reached through tables).
const MAX_DEPTH: usize = 8;

/// What a foreign key does to its rows when the row they reference goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// `NO ACTION` or `RESTRICT`: the delete fails while a row references it.
    Block,
    Cascade,
    SetNull,
    SetDefault,
}

/// One foreign key into a table a removal touches.
#[derive(Debug, Clone)]
struct ForeignKey {
    constraint: String,
    child: TableName,
    child_oid: u32,
    /// The referencing columns, in key order.
    columns: Vec<String>,
    /// The referenced columns of the parent, in the same order.
    parent_columns: Vec<String>,
    on_delete: OnDelete,
    /// The columns SET NULL/SET DEFAULT change (all of `columns`, or the
    /// list PostgreSQL 15's `SET NULL (col)` names).
    changed: Vec<String>,
}

/// One step from a table to the rows of another that reference it.
#[derive(Debug, Clone)]
struct Step {
    child: TableName,
    columns: Vec<String>,
    parent_columns: Vec<String>,
    /// The child's foreign keys into itself with ON DELETE CASCADE: the
    /// rows reached are closed under them (a thread's replies, theirs...).
    tree: Vec<SelfCascade>,
}

/// A table's foreign key into itself with `ON DELETE CASCADE`: a removed
/// row takes the rows that reference it, and theirs, down the tree.
#[derive(Debug, Clone)]
struct SelfCascade {
    columns: Vec<String>,
    parent_columns: Vec<String>,
}

/// A table whose rows a removal deletes (by cascade) or changes (by
/// `SET NULL`/`SET DEFAULT`), reached from the removed table by `path`. An
/// empty path is the removed table itself: the rows its own cascade into
/// itself takes beyond those the condition names.
#[derive(Debug, Clone)]
pub struct Part {
    pub table: TableName,
    pub oid: u32,
    pub constraint: String,
    pub action: OnDelete,
    /// For SET NULL/SET DEFAULT: the columns changed.
    pub changed: Vec<String>,
    /// Every way the removal reaches the table (a table referenced through
    /// two others is one part, reached two ways, so each row is in it once).
    paths: Vec<Vec<Step>>,
}

/// A foreign key that keeps rows in place, reached through cascades.
#[derive(Debug, Clone)]
pub struct Blocker {
    pub constraint: String,
    pub table: TableName,
    path: Vec<Step>,
}

/// Everything a removal from one table reaches through foreign keys.
#[derive(Debug, Clone, Default)]
pub struct References {
    pub parts: Vec<Part>,
    pub blockers: Vec<Blocker>,
    /// The removed table's own cascades into itself.
    root_tree: Vec<SelfCascade>,
    /// A cascade that comes back to a table already on its way (a table
    /// referencing itself, say): where, in words.
    pub cycle: Option<String>,
}

/// `EXISTS (...)`-ready conditions over one step: the child's columns
/// equal the parent's, the parent named `parent`.
fn joins(step: &Step, alias: &str, parent: &str) -> String {
    step.columns
        .iter()
        .zip(&step.parent_columns)
        .map(|(c, p)| format!("{alias}.{} = {parent}.{}", quote_ident(c), quote_ident(p)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

impl References {
    /// The condition, over the removed table's own name, that is true for a
    /// row some blocking foreign key still reaches, directly or through
    /// rows a cascade would remove. None without blockers.
    pub fn referenced_condition(&self, table: &TableName) -> Option<String> {
        if self.blockers.is_empty() {
            return None;
        }
        let conditions: Vec<String> = self
            .blockers
            .iter()
            .map(|b| chain_exists(&b.path, &table.quoted()))
            .collect();
        Some(format!("({})", conditions.join(" OR ")))
    }

    /// Adds a part, or another way to reach a part already there: one
    /// table's cascaded rows (or one key's SET NULL) are one part.
    fn add_part(&mut self, part: Part) {
        match self.parts.iter_mut().find(|p| {
            p.oid == part.oid
                && p.action == part.action
                && (p.action == OnDelete::Cascade || p.constraint == part.constraint)
        }) {
            Some(existing) => existing.paths.extend(part.paths),
            None => self.parts.push(part),
        }
    }

    /// Whether the table cascades into itself, so a batch can take rows
    /// the condition names on pages the walk has not reached yet.
    pub fn has_own_tree(&self) -> bool {
        !self.root_tree.is_empty()
    }

    /// `SELECT count(*)` of the rows a batch (`condition`) takes through the
    /// table's cascade into itself that `filter` names: rows its own later
    /// batches would have removed, counted with this one.
    pub fn named_beyond(&self, table: &TableName, condition: &str, filter: &str) -> String {
        let t = table.quoted();
        format!(
            "SELECT count(*) FROM {t} pgmaint_part WHERE {} AND (pgmaint_part.tableoid, pgmaint_part.ctid) IN (SELECT {t}.tableoid, {t}.ctid FROM {t} WHERE {filter})",
            self.reached(&[], "pgmaint_part", table, condition)
        )
    }

    /// The condition that `blocker` still references a row of `table`.
    pub fn blocked_by(blocker: &Blocker, table: &TableName) -> String {
        chain_exists(&blocker.path, &table.quoted())
    }

    /// `SELECT` of the rows of `part` that a removal of the rows of `table`
    /// matching `condition` would delete or change, each column as text
    /// after a leading 0 (the shape a backup file is written from). The
    /// condition is pasted as it is.
    pub fn part_rows(
        &self,
        part: &Part,
        table: &TableName,
        columns: &[String],
        condition: &str,
    ) -> String {
        let as_text = columns
            .iter()
            .map(|c| format!("pgmaint_part.{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT 0::bigint, {as_text} FROM {} pgmaint_part WHERE {}",
            part.table.quoted(),
            self.reached_any(&part.paths, "pgmaint_part", table, condition)
        )
    }

    /// `SELECT count(*)` of the rows of `part` a removal would reach.
    pub fn part_count(&self, part: &Part, table: &TableName, condition: &str) -> String {
        format!(
            "SELECT count(*) FROM {} pgmaint_part WHERE {}",
            part.table.quoted(),
            self.reached_any(&part.paths, "pgmaint_part", table, condition)
        )
    }

    /// The plan's account of what the removal reaches, per table.
    pub fn describe_part(part: &Part, rows: u64) -> serde_json::Value {
        json!({
            "table": part.table.to_string(),
            "constraint": part.constraint,
            "action": part.action,
            "changed_columns": part.changed,
            "rows": rows,
        })
    }
}

/// `EXISTS (SELECT 1 FROM c1 r1 WHERE r1.fk = <parent>.pk AND EXISTS (...))`
/// down the path: true when the chain reaches at least one row at its end.
fn chain_exists(path: &[Step], parent: &str) -> String {
    let mut condition = String::new();
    for (depth, step) in path.iter().enumerate().rev() {
        let alias = format!("pgmaint_ref{}", depth + 1);
        let outer = if depth == 0 {
            parent.to_string()
        } else {
            format!("pgmaint_ref{depth}")
        };
        let inner = if condition.is_empty() {
            String::new()
        } else {
            format!(" AND {condition}")
        };
        condition = format!(
            "EXISTS (SELECT 1 FROM {} {alias} WHERE {}{inner})",
            step.child.quoted(),
            joins(step, &alias, &outer)
        );
    }
    condition
}

impl References {
    fn reached_any(
        &self,
        paths: &[Vec<Step>],
        alias: &str,
        table: &TableName,
        condition: &str,
    ) -> String {
        let each: Vec<String> = paths
            .iter()
            .map(|path| self.reached(path, alias, table, condition))
            .collect();
        if each.len() == 1 {
            return each.into_iter().next().unwrap_or_default();
        }
        format!("(({}))", each.join(") OR ("))
    }

    /// The condition on `alias` (the last table of `path`) that its row
    /// references, through the path, a row of `table` matching
    /// `condition`, every table's rows closed under its cascades into
    /// itself. With an empty path: `alias` is a row of `table` the removed
    /// rows' cascade into their own table reaches, not one of them.
    fn reached(&self, path: &[Step], alias: &str, table: &TableName, condition: &str) -> String {
        let t = table.quoted();
        // Rows are told apart by (tableoid, ctid): a ctid alone repeats
        // across the partitions of a partitioned table.
        let removed = format!("SELECT {t}.tableoid, {t}.ctid FROM {t} WHERE {condition}");
        if path.is_empty() {
            return format!(
                "({alias}.tableoid, {alias}.ctid) IN ({}) AND ({alias}.tableoid, {alias}.ctid) NOT IN ({removed})",
                tree(table, &self.root_tree, &removed, 0)
            );
        }
        // Innermost: the removed rows, unaliased so the condition (which
        // names the table as it is) applies to them.
        let mut inner = if self.root_tree.is_empty() {
            format!("{t} WHERE {condition}")
        } else {
            format!(
                "{t} WHERE ({t}.tableoid, {t}.ctid) IN ({})",
                tree(table, &self.root_tree, &removed, 0)
            )
        };
        let mut inner_name = t.clone();
        for (depth, step) in path.iter().enumerate() {
            let last = depth + 1 == path.len();
            let this = if last {
                alias.to_string()
            } else {
                format!("pgmaint_via{}", depth + 1)
            };
            let keys = |name: &str, cols: &[String]| {
                cols.iter()
                    .map(|c| format!("{name}.{}", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let references = |name: &str| {
                format!(
                    "({}) IN (SELECT {} FROM {inner})",
                    keys(name, &step.columns),
                    keys(&inner_name, &step.parent_columns)
                )
            };
            let membership = if step.tree.is_empty() {
                references(&this)
            } else {
                let seed_alias = format!("pgmaint_seed{}", depth + 1);
                let seed = format!(
                    "SELECT {seed_alias}.tableoid, {seed_alias}.ctid FROM {} {seed_alias} WHERE {}",
                    step.child.quoted(),
                    references(&seed_alias)
                );
                format!(
                    "({this}.tableoid, {this}.ctid) IN ({})",
                    tree(&step.child, &step.tree, &seed, depth + 1)
                )
            };
            if last {
                return membership;
            }
            inner = format!("{} {this} WHERE {membership}", step.child.quoted());
            inner_name = this;
        }
        condition.to_string()
    }
}

/// The (tableoid, ctid) of `table`'s rows that `seed` (a SELECT of
/// both) selects,
/// and of every row that references one of them through the table's
/// cascades into itself, down to the leaves. UNION (not UNION ALL) ends a
/// loop in the data.
fn tree(table: &TableName, loops: &[SelfCascade], seed: &str, level: usize) -> String {
    if loops.is_empty() {
        return seed.to_string();
    }
    let t = table.quoted();
    let name = format!("pgmaint_tree{level}");
    let joins = loops
        .iter()
        .map(|l| {
            let pairs = l
                .columns
                .iter()
                .zip(&l.parent_columns)
                .map(|(c, p)| {
                    format!(
                        "pgmaint_down.{} = pgmaint_up.{}",
                        quote_ident(c),
                        quote_ident(p)
                    )
                })
                .collect::<Vec<_>>()
                .join(" AND ");
            format!("({pairs})")
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    format!(
        "WITH RECURSIVE {name}(o, c) AS ({seed} UNION SELECT pgmaint_down.tableoid, pgmaint_down.ctid FROM {t} pgmaint_down JOIN {t} pgmaint_up ON {joins} JOIN {name} ON (pgmaint_up.tableoid, pgmaint_up.ctid) = ({name}.o, {name}.c)) SELECT o, c FROM {name}"
    )
}

/// Reads the foreign keys into `oid`, and through cascades into the tables
/// they reach.
pub async fn load(
    client: &Client,
    table: &TableName,
    oid: u32,
) -> Result<References, tokio_postgres::Error> {
    let mut found = References::default();
    let mut keys_of: HashMap<u32, Vec<ForeignKey>> = HashMap::new();
    let root_keys = foreign_keys_into(client, oid).await?;
    found.root_tree = self_cascades(&root_keys, oid);
    if let Some(first) = root_keys
        .iter()
        .find(|k| k.child_oid == oid && k.on_delete == OnDelete::Cascade)
    {
        found.parts.push(Part {
            table: table.clone(),
            oid,
            constraint: first.constraint.clone(),
            action: OnDelete::Cascade,
            changed: Vec::new(),
            paths: vec![Vec::new()],
        });
    }
    keys_of.insert(oid, root_keys);
    let mut queue: Vec<(u32, Vec<Step>, Vec<u32>)> = vec![(oid, Vec::new(), vec![oid])];
    while let Some((parent_oid, path, seen)) = queue.pop() {
        let keys = match keys_of.get(&parent_oid) {
            Some(keys) => keys.clone(),
            None => foreign_keys_into(client, parent_oid).await?,
        };
        for key in keys {
            if key.child_oid == parent_oid && key.on_delete == OnDelete::Cascade {
                // The table's tree of rows: followed in every step into it.
                continue;
            }
            let child_keys = match (key.on_delete, keys_of.get(&key.child_oid)) {
                (OnDelete::Cascade, Some(keys)) => keys.clone(),
                (OnDelete::Cascade, None) => {
                    let fetched = foreign_keys_into(client, key.child_oid).await?;
                    keys_of.insert(key.child_oid, fetched.clone());
                    fetched
                }
                _ => Vec::new(),
            };
            let mut steps = path.clone();
            steps.push(Step {
                child: key.child.clone(),
                columns: key.columns.clone(),
                parent_columns: key.parent_columns.clone(),
                tree: self_cascades(&child_keys, key.child_oid),
            });
            match key.on_delete {
                OnDelete::Block => found.blockers.push(Blocker {
                    constraint: key.constraint.clone(),
                    table: key.child.clone(),
                    path: steps,
                }),
                OnDelete::SetNull | OnDelete::SetDefault => found.add_part(Part {
                    table: key.child.clone(),
                    oid: key.child_oid,
                    constraint: key.constraint.clone(),
                    action: key.on_delete,
                    changed: key.changed.clone(),
                    paths: vec![steps],
                }),
                OnDelete::Cascade => {
                    if seen.contains(&key.child_oid) || steps.len() > MAX_DEPTH {
                        found.cycle.get_or_insert_with(|| {
                            if steps.len() > MAX_DEPTH {
                                format!(
                                    "cascades go deeper than {MAX_DEPTH} tables (at foreign key \"{}\" of {})",
                                    key.constraint, key.child
                                )
                            } else {
                                format!(
                                    "foreign key \"{}\" cascades from {} back into a table the cascade came through",
                                    key.constraint, key.child
                                )
                            }
                        });
                        continue;
                    }
                    found.add_part(Part {
                        table: key.child.clone(),
                        oid: key.child_oid,
                        constraint: key.constraint.clone(),
                        action: OnDelete::Cascade,
                        changed: Vec::new(),
                        paths: vec![steps.clone()],
                    });
                    let mut seen = seen.clone();
                    seen.push(key.child_oid);
                    queue.push((key.child_oid, steps, seen));
                }
            }
        }
    }
    // Parents before children: restore puts rows back in this order.
    found
        .parts
        .sort_by_key(|p| p.paths.iter().map(Vec::len).min().unwrap_or(0));
    Ok(found)
}

/// The cascades of the table `oid` into itself, among its foreign keys.
fn self_cascades(keys: &[ForeignKey], oid: u32) -> Vec<SelfCascade> {
    keys.iter()
        .filter(|k| k.child_oid == oid && k.on_delete == OnDelete::Cascade)
        .map(|k| SelfCascade {
            columns: k.columns.clone(),
            parent_columns: k.parent_columns.clone(),
        })
        .collect()
}

async fn foreign_keys_into(
    client: &Client,
    oid: u32,
) -> Result<Vec<ForeignKey>, tokio_postgres::Error> {
    // confdelsetcols is PostgreSQL 15's; read through to_jsonb so 14 works.
    let rows = client
        .rows(
            "SELECT c.conname::text, c.confdeltype::text, n.nspname::text, r.relname::text, r.oid,
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, i)
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.i),
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(attnum, i)
                            JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.i),
                    ARRAY(SELECT a.attname::text FROM jsonb_array_elements_text(to_jsonb(c) -> 'confdelsetcols') k(attnum)
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum::int2
                           WHERE jsonb_typeof(to_jsonb(c) -> 'confdelsetcols') = 'array')
               FROM pg_constraint c
               JOIN pg_class r ON r.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = r.relnamespace
              WHERE c.contype = 'f' AND c.confrelid = $1
                -- A key into a partitioned table is cloned onto each of its
                -- partitions (same referencing table); a key of a partitioned
                -- referencing table is cloned onto its partitions (another
                -- referencing table), which the parent's row covers.
                AND NOT EXISTS (SELECT 1 FROM pg_constraint p WHERE p.oid = c.conparentid AND p.conrelid <> c.conrelid)
              ORDER BY n.nspname, r.relname, c.conname",
            &[&oid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let columns: Vec<String> = row.get(5);
            let set_columns: Vec<String> = row.get(7);
            let on_delete = match row.get::<_, &str>(1) {
                "c" => OnDelete::Cascade,
                "n" => OnDelete::SetNull,
                "d" => OnDelete::SetDefault,
                _ => OnDelete::Block,
            };
            ForeignKey {
                constraint: row.get(0),
                child: TableName::new(row.get::<_, String>(2), row.get::<_, String>(3)),
                child_oid: row.get(4),
                changed: if set_columns.is_empty() {
                    columns.clone()
                } else {
                    set_columns
                },
                columns,
                parent_columns: row.get(6),
                on_delete,
            }
        })
        .collect())
}

/// What a removal does with rows a foreign key without an ON DELETE action
/// still references.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReferenced {
    /// Leave them in place and count them; remove the rest.
    #[default]
    Keep,
    /// Fail the batch that meets one (PostgreSQL's own behaviour).
    Fail,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(child: &str, column: &str, parent_column: &str) -> Step {
        Step {
            child: TableName::new("public", child),
            columns: vec![column.into()],
            parent_columns: vec![parent_column.into()],
            tree: vec![],
        }
    }

    #[test]
    fn a_blocker_two_cascades_away_is_one_nested_exists() {
        let refs = References {
            blockers: vec![Blocker {
                constraint: "audit_comment_fk".into(),
                table: TableName::new("public", "audit"),
                path: vec![
                    step("comments", "user_id", "id"),
                    step("audit", "comment_id", "id"),
                ],
            }],
            ..References::default()
        };
        let users = TableName::new("public", "users");
        assert_eq!(
            refs.referenced_condition(&users).unwrap(),
            "(EXISTS (SELECT 1 FROM \"public\".\"comments\" pgmaint_ref1 WHERE pgmaint_ref1.\"user_id\" = \"public\".\"users\".\"id\" AND EXISTS (SELECT 1 FROM \"public\".\"audit\" pgmaint_ref2 WHERE pgmaint_ref2.\"comment_id\" = pgmaint_ref1.\"id\")))"
        );
    }

    #[test]
    fn a_part_two_levels_down_selects_through_the_level_between() {
        let part = Part {
            table: TableName::new("public", "likes"),
            oid: 0,
            constraint: "likes_comment_fk".into(),
            action: OnDelete::Cascade,
            changed: vec![],
            paths: vec![vec![
                step("comments", "user_id", "id"),
                step("likes", "comment_id", "id"),
            ]],
        };
        let users = TableName::new("public", "users");
        assert_eq!(
            References::default().part_count(&part, &users, "(\nx\n)"),
            "SELECT count(*) FROM \"public\".\"likes\" pgmaint_part WHERE (pgmaint_part.\"comment_id\") IN (SELECT pgmaint_via1.\"id\" FROM \"public\".\"comments\" pgmaint_via1 WHERE (pgmaint_via1.\"user_id\") IN (SELECT \"public\".\"users\".\"id\" FROM \"public\".\"users\" WHERE (\nx\n)))"
        );
    }
}

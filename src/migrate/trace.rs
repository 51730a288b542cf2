//! The lock trace: the pending migrations applied statement by statement
//! on a scratch cluster holding the live schema, and after each statement
//! what it did to the tables that already existed: the locks it took
//! (`pg_locks`, by relation), the tables it rewrote (their `relfilenode`
//! changed) or read whole (a `SET NOT NULL`, a `VALIDATE`, an index
//! build: the transaction's own sequential scans), the indexes it built,
//! the `NOT VALID` constraints it added and the foreign keys it left
//! without an index. Tables a migration creates block no one and are left
//! out. A statement PostgreSQL runs only outside a transaction (`CREATE
//! INDEX CONCURRENTLY`, `VACUUM`) cannot be watched from inside one: its
//! lock is PostgreSQL's documented one, and what it built or rewrote is
//! read after it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::Client;

use super::scratch::Scratch;
use super::statements::Statement;
use super::{MigrateError, Migration, Script};
use crate::unnamed::Unnamed;

/// A table lock one statement took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TracedLock {
    pub table: String,
    /// As PostgreSQL's documentation names it: `ACCESS EXCLUSIVE`.
    pub mode: String,
    pub blocks: Blocks,
}

/// What a lock stops the application doing while it is held (or waited
/// for: a queued lock blocks what it would block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocks {
    /// Only other schema changes (and the strongest locks).
    Nothing,
    /// Other schema changes, VACUUM and ANALYZE.
    SchemaChanges,
    /// INSERT, UPDATE, DELETE; reads go on.
    Writes,
    /// Every read and write.
    ReadsAndWrites,
}

impl Blocks {
    pub fn says(self) -> &'static str {
        match self {
            Blocks::Nothing => "blocks no reads or writes",
            Blocks::SchemaChanges => "blocks schema changes and vacuum, not reads or writes",
            Blocks::Writes => "blocks writes",
            Blocks::ReadsAndWrites => "blocks reads and writes",
        }
    }
}

/// `pg_locks.mode` (`AccessExclusiveLock`) as the documentation writes
/// it, and what it blocks.
pub(crate) fn lock_mode(mode: &str) -> (String, Blocks) {
    let name = mode.strip_suffix("Lock").unwrap_or(mode);
    let mut words = String::new();
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_uppercase());
    }
    let blocks = match name {
        "AccessExclusive" => Blocks::ReadsAndWrites,
        "Exclusive" | "ShareRowExclusive" | "Share" => Blocks::Writes,
        "ShareUpdateExclusive" => Blocks::SchemaChanges,
        _ => Blocks::Nothing,
    };
    (words, blocks)
}

/// What one statement did to the tables that existed before its
/// migration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TracedStatement {
    pub line: usize,
    /// The strongest lock on each table, strongest first.
    pub locks: Vec<TracedLock>,
    /// Tables written anew (every row copied, every index rebuilt).
    pub rewrites: Vec<String>,
    /// Tables read whole, not rewritten.
    pub scans: Vec<String>,
    /// Indexes built on an existing table: `index on table`.
    pub builds: Vec<IndexBuild>,
    /// Constraints added `NOT VALID`: checked for new rows only until a
    /// `VALIDATE CONSTRAINT`.
    pub not_valid: Vec<String>,
    /// Foreign keys added whose columns lead no index: every delete or
    /// key update on the referenced table scans this one.
    pub unindexed_foreign_keys: Vec<String>,
    /// The statement runs only outside a transaction, so its locks are
    /// PostgreSQL's documented ones rather than seen.
    pub documented: bool,
}

impl TracedStatement {
    /// The strongest thing it blocks, and on which table.
    pub fn worst(&self) -> Option<&TracedLock> {
        self.locks.iter().max_by_key(|l| l.blocks)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexBuild {
    pub index: String,
    pub table: String,
}

/// How one migration's trace went.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TraceStatus {
    Traced,
    /// It failed on the copy because the copy lacks something (an
    /// extension missing locally): the trace says nothing of it.
    NotTraced {
        reason: String,
    },
    /// It failed on a complete copy of the live schema, as it would on
    /// the live database.
    Failed {
        line: usize,
        error: String,
    },
    /// An earlier migration was not traced or failed.
    NotReached,
}

#[derive(Debug, Clone, Serialize)]
pub struct TracedMigration {
    pub version: String,
    #[serde(flatten)]
    pub status: TraceStatus,
    pub statements: Vec<TracedStatement>,
}

/// The trace of every chosen migration, and how the copy was made.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub migrations: Vec<TracedMigration>,
    /// The scratch server's version.
    pub local_version: String,
    /// The live server's, when its major version differs.
    pub live_version: Option<String>,
    pub copied_with: String,
    /// What the copy of the live schema lacks.
    pub not_copied: Vec<String>,
}

impl Trace {
    pub fn of(&self, version: &str) -> Option<&TracedMigration> {
        self.migrations.iter().find(|m| m.version == version)
    }
}

/// Applies `chosen` (each with the script `script_of` gives) in order on
/// `scratch`, tracing each statement; stops at the first that fails.
pub async fn run(
    scratch: &Scratch,
    chosen: &[&Migration],
    script_of: impl Fn(&Migration) -> &Script,
) -> Result<Trace, MigrateError> {
    let client = &scratch.client;
    let mut migrations = Vec::new();
    let mut stopped = false;
    for m in chosen {
        if stopped {
            migrations.push(TracedMigration {
                version: m.written.clone(),
                status: TraceStatus::NotReached,
                statements: Vec::new(),
            });
            continue;
        }
        let script = script_of(m);
        let statements = super::apply::statements_of(script)?;
        let (status, traced) = trace_script(client, script, &statements).await?;
        let status = match status {
            Err((_, error)) if !scratch.not_copied.is_empty() => {
                stopped = true;
                TraceStatus::NotTraced {
                    reason: format!(
                        "{error} (the scratch copy lacks what the live server has: {})",
                        scratch.not_copied.join("; ")
                    ),
                }
            }
            Err((line, error)) => {
                stopped = true;
                TraceStatus::Failed { line, error }
            }
            Ok(()) => TraceStatus::Traced,
        };
        migrations.push(TracedMigration {
            version: m.written.clone(),
            status,
            statements: traced,
        });
    }
    Ok(Trace {
        migrations,
        local_version: scratch.local_version.clone(),
        live_version: scratch.live_version.clone(),
        copied_with: scratch.copied_with.clone(),
        not_copied: scratch.not_copied.clone(),
    })
}

type Failure = (usize, String);

/// One script on the scratch database: one transaction when it is
/// transactional, else each statement in its own (those that need to be
/// outside one run bare). Committed, so the next migration sees it.
async fn trace_script(
    client: &Client,
    script: &Script,
    statements: &[Statement],
) -> Result<(Result<(), Failure>, Vec<TracedStatement>), MigrateError> {
    let existing = Relations::read(client).await?.oids();
    let mut traced = Vec::new();
    let fail = |s: &Statement, e: tokio_postgres::Error| (s.line, crate::db::describe(&e));
    if script.transactional {
        client.batch_execute("BEGIN").await?;
        for s in statements {
            match trace_in_transaction(client, s, &existing).await? {
                Ok(t) => traced.push(t),
                Err(e) => {
                    client.batch_execute("ROLLBACK").await?;
                    return Ok((Err(fail(s, e)), traced));
                }
            }
        }
        client.batch_execute("COMMIT").await?;
        return Ok((Ok(()), traced));
    }
    for s in statements {
        let result = if s.needs_own_transaction {
            trace_bare(client, s, &existing).await?
        } else {
            client.batch_execute("BEGIN").await?;
            let result = trace_in_transaction(client, s, &existing).await?;
            client
                .batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })
                .await?;
            result
        };
        match result {
            Ok(t) => traced.push(t),
            Err(e) => return Ok((Err(fail(s, e)), traced)),
        }
    }
    Ok((Ok(()), traced))
}

/// A statement inside the open transaction: its locks, scans and what
/// changed, from the transaction's own view.
async fn trace_in_transaction(
    client: &Client,
    s: &Statement,
    existing: &BTreeSet<u32>,
) -> Result<Result<TracedStatement, tokio_postgres::Error>, MigrateError> {
    let before = Relations::read(client).await?;
    let locks_before = held_locks(client).await?;
    let constraints_before = Constraints::read(client).await?;
    if let Err(e) = client.batch_execute(&s.text).await {
        return Ok(Err(e));
    }
    let after = Relations::read(client).await?;
    let constraints = Constraints::read(client).await?;
    let mut traced = changes(
        s,
        existing,
        &before,
        &after,
        &constraints_before,
        &constraints,
    );
    let mut strongest: BTreeMap<String, (u8, String, Blocks)> = BTreeMap::new();
    for (oid, mode) in held_locks(client).await? {
        if locks_before.contains(&(oid, mode.clone())) || !existing.contains(&oid) {
            continue;
        }
        let Some(rel) = after.by_oid.get(&oid) else {
            continue;
        };
        if rel.kind == 'i' {
            continue;
        }
        let (name, blocks) = lock_mode(&mode);
        let rank = strength(&mode);
        let entry = strongest
            .entry(rel.name.clone())
            .or_insert((rank, name.clone(), blocks));
        if rank > entry.0 {
            *entry = (rank, name, blocks);
        }
    }
    let mut locks: Vec<TracedLock> = strongest
        .into_iter()
        .map(|(table, (_, mode, blocks))| TracedLock {
            table,
            mode,
            blocks,
        })
        .collect();
    locks.sort_by(|a, b| b.blocks.cmp(&a.blocks).then(a.table.cmp(&b.table)));
    traced.locks = locks;
    Ok(Ok(traced))
}

/// A statement that runs only outside a transaction: run as it is; its
/// lock from the documentation, on the tables it names.
async fn trace_bare(
    client: &Client,
    s: &Statement,
    existing: &BTreeSet<u32>,
) -> Result<Result<TracedStatement, tokio_postgres::Error>, MigrateError> {
    let before = Relations::read(client).await?;
    let constraints_before = Constraints::read(client).await?;
    if let Err(e) = client.batch_execute(&s.text).await {
        return Ok(Err(e));
    }
    let after = Relations::read(client).await?;
    let constraints = Constraints::read(client).await?;
    let mut traced = changes(
        s,
        existing,
        &before,
        &after,
        &constraints_before,
        &constraints,
    );
    traced.documented = true;
    if let Some(mode) = documented_lock(&s.text) {
        let (name, blocks) = lock_mode(mode);
        let mut tables = BTreeSet::new();
        for written in &s.touches {
            let row = client
                .row_opt(
                    "SELECT format('%I.%I', tn.nspname, t.relname)
                     FROM pg_class c
                     LEFT JOIN pg_index x ON x.indexrelid = c.oid
                     JOIN pg_class t ON t.oid = coalesce(x.indrelid, c.oid)
                     JOIN pg_namespace tn ON tn.oid = t.relnamespace
                     WHERE c.oid = to_regclass($1)",
                    &[written],
                )
                .await?;
            // A dropped index no longer resolves: the table it named was
            // read before.
            match row {
                Some(row) => tables.insert(row.get::<_, String>(0)),
                None => before
                    .table_of_index(written)
                    .map(|t| tables.insert(t))
                    .unwrap_or(false),
            };
        }
        traced.locks = tables
            .into_iter()
            .map(|table| TracedLock {
                table,
                mode: name.clone(),
                blocks,
            })
            .collect();
    }
    Ok(Ok(traced))
}

/// PostgreSQL's documented lock for the statements that run only outside
/// a transaction block.
fn documented_lock(text: &str) -> Option<&'static str> {
    let upper = text.to_ascii_uppercase();
    let words: Vec<&str> = upper
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .flat_map(str::split_whitespace)
        .collect();
    let starts = |prefix: &[&str]| words.starts_with(prefix);
    if starts(&["VACUUM"]) {
        let full = words
            .iter()
            .any(|w| w.trim_matches(['(', ')', ',']) == "FULL");
        return Some(if full {
            "AccessExclusiveLock"
        } else {
            "ShareUpdateExclusiveLock"
        });
    }
    if words.contains(&"CONCURRENTLY") {
        return Some("ShareUpdateExclusiveLock");
    }
    None
}

/// How strong a lock mode is, in PostgreSQL's order.
pub(crate) fn strength(mode: &str) -> u8 {
    match mode {
        "AccessShareLock" => 1,
        "RowShareLock" => 2,
        "RowExclusiveLock" => 3,
        "ShareUpdateExclusiveLock" => 4,
        "ShareLock" => 5,
        "ShareRowExclusiveLock" => 6,
        "ExclusiveLock" => 7,
        "AccessExclusiveLock" => 8,
        _ => 0,
    }
}

/// What changed between two reads, on the tables that existed before
/// the migration.
fn changes(
    s: &Statement,
    existing: &BTreeSet<u32>,
    before: &Relations,
    after: &Relations,
    constraints_before: &Constraints,
    constraints: &Constraints,
) -> TracedStatement {
    let mut traced = TracedStatement {
        line: s.line,
        ..TracedStatement::default()
    };
    for (oid, rel) in &after.by_oid {
        if !existing.contains(oid) {
            if rel.kind == 'i'
                && let Some(table) = rel.table.filter(|t| existing.contains(t))
                && !before.by_oid.contains_key(oid)
                && let Some(t) = after.by_oid.get(&table)
            {
                traced.builds.push(IndexBuild {
                    index: rel.name.clone(),
                    table: t.name.clone(),
                });
            }
            continue;
        }
        let Some(was) = before.by_oid.get(oid) else {
            continue;
        };
        if rel.kind == 'i' {
            continue;
        }
        if rel.filenode != was.filenode && was.filenode != 0 {
            traced.rewrites.push(rel.name.clone());
        } else if rel.seq_scans > was.seq_scans {
            traced.scans.push(rel.name.clone());
        }
    }
    // A table whose index was built was read for it: the build says so.
    let built: BTreeSet<&String> = traced.builds.iter().map(|b| &b.table).collect();
    traced.scans.retain(|t| !built.contains(t));
    for (oid, c) in &constraints.by_oid {
        if constraints_before.by_oid.contains_key(oid) {
            continue;
        }
        if !c.validated {
            traced.not_valid.push(c.name.clone());
        }
        if c.unindexed_foreign_key {
            traced.unindexed_foreign_keys.push(c.name.clone());
        }
    }
    traced
}

#[derive(Debug, Clone)]
struct Relation {
    name: String,
    kind: char,
    filenode: u32,
    seq_scans: i64,
    /// An index's table.
    table: Option<u32>,
}

/// The user schemas' tables, materialized views and indexes.
#[derive(Debug, Default)]
struct Relations {
    by_oid: BTreeMap<u32, Relation>,
}

impl Relations {
    async fn read(client: &Client) -> Result<Relations, MigrateError> {
        let rows = client
            .rows(
                "SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind::text, c.relfilenode,
                        coalesce(s.seq_scan, 0), x.indrelid
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_stat_xact_user_tables s ON s.relid = c.oid
                 LEFT JOIN pg_index x ON x.indexrelid = c.oid
                 WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg\\_toast%'",
                &[],
            )
            .await?;
        let mut by_oid = BTreeMap::new();
        for row in rows {
            let kind: String = row.get(2);
            let kind = match kind.as_str() {
                "I" => 'i',
                other => other.chars().next().unwrap_or('r'),
            };
            by_oid.insert(
                row.get::<_, u32>(0),
                Relation {
                    name: row.get(1),
                    kind,
                    filenode: row.get(3),
                    seq_scans: row.get(4),
                    table: row.get(5),
                },
            );
        }
        Ok(Relations { by_oid })
    }

    fn oids(&self) -> BTreeSet<u32> {
        self.by_oid.keys().copied().collect()
    }

    /// The table of an index named as written, when it was read.
    fn table_of_index(&self, written: &str) -> Option<String> {
        let folded = super::statements::folded(written.rsplit('.').next().unwrap_or(written));
        let index = self.by_oid.values().find(|r| {
            r.kind == 'i'
                && r.name.rsplit('.').next().map(super::statements::folded) == Some(folded.clone())
        })?;
        Some(self.by_oid.get(&index.table?)?.name.clone())
    }
}

/// This session's granted relation locks.
async fn held_locks(client: &Client) -> Result<BTreeSet<(u32, String)>, MigrateError> {
    Ok(client
        .rows(
            "SELECT relation, mode FROM pg_locks
             WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

#[derive(Debug)]
struct Constraint {
    name: String,
    validated: bool,
    unindexed_foreign_key: bool,
}

#[derive(Debug, Default)]
struct Constraints {
    by_oid: BTreeMap<u32, Constraint>,
}

impl Constraints {
    async fn read(client: &Client) -> Result<Constraints, MigrateError> {
        let rows = client
            .rows(
                "SELECT k.oid, format('%I.%I.%I', n.nspname, c.relname, k.conname), k.convalidated,
                        k.contype = 'f' AND NOT EXISTS (
                          SELECT FROM pg_index x
                          WHERE x.indrelid = k.conrelid
                            AND (string_to_array(x.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] @> k.conkey
                            AND (string_to_array(x.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] <@ k.conkey)
                 FROM pg_constraint k
                 JOIN pg_class c ON c.oid = k.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
                &[],
            )
            .await?;
        Ok(Constraints {
            by_oid: rows
                .iter()
                .map(|r| {
                    (
                        r.get::<_, u32>(0),
                        Constraint {
                            name: r.get(1),
                            validated: r.get(2),
                            unindexed_foreign_key: r.get(3),
                        },
                    )
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_modes_read_as_the_documentation_writes_them() {
        assert_eq!(
            lock_mode("AccessExclusiveLock"),
            ("ACCESS EXCLUSIVE".to_string(), Blocks::ReadsAndWrites)
        );
        assert_eq!(
            lock_mode("ShareUpdateExclusiveLock"),
            ("SHARE UPDATE EXCLUSIVE".to_string(), Blocks::SchemaChanges)
        );
        assert_eq!(lock_mode("ShareLock").1, Blocks::Writes);
        assert_eq!(lock_mode("RowExclusiveLock").1, Blocks::Nothing);
        assert!(strength("AccessExclusiveLock") > strength("ShareRowExclusiveLock"));
    }

    #[test]
    fn statements_outside_a_transaction_have_their_documented_lock() {
        assert_eq!(
            documented_lock("CREATE INDEX CONCURRENTLY i ON t (a);"),
            Some("ShareUpdateExclusiveLock")
        );
        assert_eq!(
            documented_lock("-- tidy\nVACUUM (FULL, ANALYZE) t;"),
            Some("AccessExclusiveLock")
        );
        assert_eq!(
            documented_lock("vacuum t;"),
            Some("ShareUpdateExclusiveLock")
        );
        assert_eq!(documented_lock("ALTER TYPE mood ADD VALUE 'meh';"), None);
    }
}

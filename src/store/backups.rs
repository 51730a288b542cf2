//! The backups index: `backups`, `backup_parts` and `backup_files`. The
//! files themselves, their CSV and their checksums are `backup.rs`'s; this
//! is only where they are recorded.

use crate::unnamed::Unnamed;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Error, GenericClient};

use crate::sql::quote_ident;

/// A backup or an export as `pgmaint backups` lists it.
#[derive(Debug, Serialize)]
pub struct BackupRecord {
    pub id: i64,
    /// `backup` (rows a task removed, for `restore`) or `export` (an
    /// archive's files, kept as its copy of the rows).
    pub kind: String,
    pub task: String,
    /// Schema-qualified, written as the config takes it.
    pub table: String,
    pub rows: i64,
    pub files: i64,
    /// The run that made it; `None` once that run has been pruned.
    pub run_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// A backup's directory; for an export, its files' pattern
    /// (`DIR/public_ledger-7-*`).
    pub path: String,
}

/// A task's backup (or export) with the files its index names, for the
/// sweep that settles files of batches that never committed.
pub(crate) struct IndexedBackup {
    pub id: i64,
    pub dir: String,
    pub files: i32,
    pub prefix: String,
    pub purpose: String,
    pub indexed: Vec<String>,
}

/// What a backup's own rows are: rows removed from its table (`delete`,
/// put back by insert), or rows that stayed with columns set to NULL
/// (`set_null`, set back by `key_columns`).
pub(crate) struct SavedAs<'a> {
    pub action: &'a str,
    pub key_columns: &'a [String],
}

impl SavedAs<'static> {
    /// Rows removed from the table.
    pub(crate) const REMOVED: SavedAs<'static> = SavedAs {
        action: "delete",
        key_columns: &[],
    };
}

/// A backup's own table, as recorded when it started.
pub(crate) struct BackupTable {
    pub table_schema: String,
    pub table_name: String,
    pub columns: serde_json::Value,
    pub dir: String,
    pub action: String,
    pub key_columns: serde_json::Value,
}

/// A table a backup's cascades reached, as recorded.
pub(crate) struct BackupPartRecord {
    pub part: i32,
    pub table_schema: String,
    pub table_name: String,
    pub columns: serde_json::Value,
    pub action: String,
    pub key_columns: serde_json::Value,
    pub via: String,
}

/// Records a new backup (its directory not yet known). Returns its id.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_backup(
    client: &impl GenericClient,
    schema: &str,
    task_run_id: Option<i64>,
    task: &str,
    table_schema: &str,
    table_name: &str,
    columns: &serde_json::Value,
    purpose: &str,
    saved_as: &SavedAs<'_>,
) -> Result<i64, Error> {
    let q = quote_ident(schema);
    Ok(client
        .row(
            &format!(
                "INSERT INTO {q}.backups (task_run_id, task, table_schema, table_name, columns, dir, purpose, action, key_columns)
                     VALUES ($1, $2, $3, $4, $5, '', $6, $7, $8) RETURNING id"
            ),
            &[
                &task_run_id,
                &task,
                &table_schema,
                &table_name,
                columns,
                &purpose,
                &saved_as.action,
                &serde_json::json!(saved_as.key_columns),
            ],
        )
        .await?
        .get(0))
}

/// Removes a backup from the index, with its parts and files.
pub(crate) async fn delete_backup(
    client: &impl GenericClient,
    schema: &str,
    id: i64,
) -> Result<(), Error> {
    let q = quote_ident(schema);
    client
        .exec(&format!("DELETE FROM {q}.backups WHERE id = $1"), &[&id])
        .await?;
    Ok(())
}

/// Records where a backup's files go.
pub(crate) async fn place_backup(
    client: &impl GenericClient,
    schema: &str,
    id: i64,
    dir: &str,
    prefix: &str,
) -> Result<(), Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("UPDATE {q}.backups SET dir = $2, file_prefix = $3 WHERE id = $1"),
            &[&id, &dir, &prefix],
        )
        .await?;
    Ok(())
}

/// Records one table a backup's cascades reach.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn add_backup_part(
    client: &impl GenericClient,
    schema: &str,
    backup_id: i64,
    part: i32,
    table_schema: &str,
    table_name: &str,
    columns: &serde_json::Value,
    action: &str,
    key_columns: &serde_json::Value,
    via: &str,
) -> Result<(), Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!(
                "INSERT INTO {q}.backup_parts (backup_id, part, table_schema, table_name, columns, action, key_columns, via)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &backup_id,
                &part,
                &table_schema,
                &table_name,
                columns,
                &action,
                key_columns,
                &via,
            ],
        )
        .await?;
    Ok(())
}

/// Records one file written for a batch, in the batch's transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_backup_file(
    client: &impl GenericClient,
    schema: &str,
    backup_id: i64,
    seq: i32,
    file: &str,
    rows: i64,
    sha256: &str,
    part: i32,
) -> Result<(), Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("INSERT INTO {q}.backup_files (backup_id, seq, file, rows, sha256, part) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[&backup_id, &seq, &file, &rows, &sha256, &part],
        )
        .await?;
    Ok(())
}

/// A task's backups and exports, each with the files its index names.
pub(crate) async fn backups_of_task(
    client: &impl GenericClient,
    schema: &str,
    task: &str,
) -> Result<Vec<IndexedBackup>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT b.id, b.dir, count(f.file)::int, b.file_prefix, b.purpose,
                        coalesce(array_agg(f.file) FILTER (WHERE f.file IS NOT NULL), '{{}}')
                   FROM {q}.backups b LEFT JOIN {q}.backup_files f ON f.backup_id = b.id
                  WHERE b.task = $1 GROUP BY b.id"
            ),
            &[&task],
        )
        .await?
        .iter()
        .map(|backup| IndexedBackup {
            id: backup.get(0),
            dir: backup.get(1),
            files: backup.get(2),
            prefix: backup.get(3),
            purpose: backup.get(4),
            indexed: backup.get(5),
        })
        .collect())
}

/// Every backup and export, newest first.
pub(crate) async fn list_backups(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<BackupRecord>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT b.id, b.purpose, b.task, b.table_schema, b.table_name,
                        coalesce(sum(f.rows), 0)::bigint, count(f.file),
                        (SELECT t.run_id FROM {q}.task_runs t WHERE t.id = b.task_run_id),
                        b.created_at,
                        CASE b.purpose WHEN 'export' THEN b.dir || '/' || b.file_prefix || '*' ELSE b.dir END
                   FROM {q}.backups b LEFT JOIN {q}.backup_files f ON f.backup_id = b.id
                  GROUP BY b.id ORDER BY b.id DESC"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| BackupRecord {
            id: r.get(0),
            kind: r.get(1),
            task: r.get(2),
            table: crate::sql::TableName::new(r.get::<_, String>(3), r.get::<_, String>(4))
                .to_string(),
            rows: r.get(5),
            files: r.get(6),
            run_id: r.get(7),
            created_at: r.get(8),
            path: r.get(9),
        })
        .collect())
}

/// Backups (not exports) older than `keep`, a PostgreSQL interval: their
/// ids and directories.
pub(crate) async fn backups_older_than(
    client: &impl GenericClient,
    schema: &str,
    keep: &str,
) -> Result<Vec<(i64, String)>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT id, dir FROM {q}.backups WHERE purpose = 'backup' AND created_at < now() - $1::text::interval"
            ),
            &[&keep],
        )
        .await?
        .iter()
        .map(|backup| (backup.get(0), backup.get(1)))
        .collect())
}

/// A backup's own table, columns and directory, if there is such a backup.
pub(crate) async fn backup_table(
    client: &impl GenericClient,
    schema: &str,
    id: i64,
) -> Result<Option<BackupTable>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .row_opt(
            &format!(
                "SELECT table_schema, table_name, columns, dir, action, key_columns FROM {q}.backups WHERE id = $1"
            ),
            &[&id],
        )
        .await?
        .map(|backup| BackupTable {
            table_schema: backup.get(0),
            table_name: backup.get(1),
            columns: backup.get(2),
            dir: backup.get(3),
            action: backup.get(4),
            key_columns: backup.get(5),
        }))
}

/// The tables a backup's cascades reached, in part order.
pub(crate) async fn backup_parts(
    client: &impl GenericClient,
    schema: &str,
    id: i64,
) -> Result<Vec<BackupPartRecord>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT part, table_schema, table_name, columns, action, key_columns, via
                   FROM {q}.backup_parts WHERE backup_id = $1 ORDER BY part"
            ),
            &[&id],
        )
        .await?
        .iter()
        .map(|row| BackupPartRecord {
            part: row.get(0),
            table_schema: row.get(1),
            table_name: row.get(2),
            columns: row.get(3),
            action: row.get(4),
            key_columns: row.get(5),
            via: row.get(6),
        })
        .collect())
}

/// One part's files, in the order they were written: name and sha256.
pub(crate) async fn backup_files_of_part(
    client: &impl GenericClient,
    schema: &str,
    id: i64,
    part: i32,
) -> Result<Vec<(String, String)>, Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT file, sha256 FROM {q}.backup_files WHERE backup_id = $1 AND part = $2 ORDER BY seq"
            ),
            &[&id, &part],
        )
        .await?
        .iter()
        .map(|file| (file.get(0), file.get(1)))
        .collect())
}

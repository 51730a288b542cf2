//! Backups of the rows destructive tasks remove, and putting them back.
//!
//! A backup belongs to one task run and is a directory of gzip'd CSV files,
//! one per batch, indexed in the state schema (`backups`, `backup_files`).
//! A batch's file is written and flushed to disk, then recorded in the same
//! transaction that removes its rows, so a file is in the index exactly when
//! its rows left the table. A file a crash left behind without an index row
//! is removed when the task next starts.
//!
//! Values are written as PostgreSQL's own text output of each column, in
//! PostgreSQL's CSV dialect with every value quoted and NULL left empty, so
//! `COPY ... FROM ... (FORMAT csv, HEADER)` reads them back exactly (and a
//! person can too, with `\copy`). The session's DateStyle, IntervalStyle,
//! extra_float_digits and bytea_output are fixed while writing so the text
//! does not depend on the server's settings.

use crate::unnamed::Unnamed;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use futures_util::SinkExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, Row};

use crate::db::{self, Column};
use crate::sql::{TableName, column_list, quote_ident};
use crate::store::backups as store;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackupError {
    #[error(
        "cannot write the backup to {path}: {cause}; nothing was removed by this batch (check that the directory exists, is writable and has space, or set [backups] dir)"
    )]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Database(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<tokio_postgres::Error> for BackupError {
    fn from(err: tokio_postgres::Error) -> Self {
        BackupError::Database(db::describe(&err))
    }
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |cause| BackupError::Write {
        path: path.to_path_buf(),
        cause,
    }
}

/// The settings that shape the text output of values, fixed while rows are
/// written so the files read back the same whatever the server's defaults.
/// TimeZone is left alone: timestamptz text carries its offset, and the
/// task's `where` may depend on the zone.
const TEXT_SETTINGS: [(&str, &str); 4] = [
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
];

/// Sets the text settings for the current transaction only (as SET
/// LOCAL), in the transaction whose rows a backup file holds: no session
/// setting, which behind a transaction pooler would land on another
/// backend than the batch's and stay there for other clients.
pub(crate) async fn set_local_text_settings(
    client: &impl tokio_postgres::GenericClient,
) -> Result<(), tokio_postgres::Error> {
    use crate::unnamed::Unnamed;
    let [(n1, v1), (n2, v2), (n3, v3), (n4, v4)] = TEXT_SETTINGS;
    client
        .row(
            "SELECT set_config($1, $2, true), set_config($3, $4, true), set_config($5, $6, true), set_config($7, $8, true)",
            &[&n1, &v1, &n2, &v2, &n3, &v3, &n4, &v4],
        )
        .await?;
    Ok(())
}

/// How batch files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => "csv.gz",
            Compression::Zstd => "csv.zst",
        }
    }

    fn of(file: &str) -> Compression {
        if file.ends_with(".zst") {
            Compression::Zstd
        } else {
            Compression::Gzip
        }
    }
}

/// What a set of batch files is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// pgmaint's own copy, in its own directory, pruned after `keep`.
    Backup,
    /// The user's archive files (`export = "DIR"`): each with a manifest,
    /// and visible under its final name only once its batch committed.
    Export,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Backup => "backup",
            Purpose::Export => "export",
        }
    }
}

/// A file a batch wrote, kept until the batch commits or not.
pub(crate) struct Written {
    paths: Vec<PathBuf>,
}

impl Written {
    /// The batch rolled back: its files go.
    pub(crate) fn remove(&self) {
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes one task run's removed rows to files, batch by batch.
pub struct BackupWriter {
    schema: String,
    id: i64,
    dir: PathBuf,
    /// Prepended to each file's name (exports share their directory).
    prefix: String,
    purpose: Purpose,
    compression: Compression,
    /// The tables files are written for: the backup's own first (part 0),
    /// then those `add_part` registered, each with the columns it saves.
    parts: Vec<(TableName, Vec<(String, String)>)>,
    files: u32,
}

/// A table of a removal beyond the removed one: rows an `ON DELETE
/// CASCADE` deleted, or the earlier values of the columns a `SET NULL` /
/// `SET DEFAULT` changed, with the key that finds their rows again.
pub(crate) struct BackupPart<'a> {
    pub table: &'a TableName,
    /// The columns saved: every stored column for a cascade; the key and
    /// the changed columns for SET NULL/SET DEFAULT.
    pub columns: Vec<Column>,
    /// `cascade`, `set_null` or `set_default`.
    pub action: &'static str,
    pub key_columns: Vec<String>,
    /// The foreign key that reaches the table.
    pub via: &'a str,
}

impl BackupWriter {
    /// Records a new backup and creates its directory. Files earlier runs
    /// of this task left without an index row (a crash between writing and
    /// committing) are removed first; the caller holds the task's lock.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        client: &Client,
        schema: &str,
        task_run_id: Option<i64>,
        root: &Path,
        task: &str,
        table: &TableName,
        columns: &[Column],
        saved_as: &store::SavedAs<'_>,
    ) -> Result<BackupWriter, BackupError> {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Self::begin(
            client,
            schema,
            task_run_id,
            task,
            table,
            (columns, saved_as),
            Purpose::Backup,
            Compression::Gzip,
            |id| {
                (
                    root.join(format!("{id}-{}", safe_file_name(task))),
                    String::new(),
                )
            },
        )
        .await
    }

    /// Starts an export into `dir` (which must exist): files named
    /// `<schema>_<table>-<id>-<batch>.csv.gz` (or `.zst`; the name made
    /// safe by `safe_file_name`), each with a `.manifest.json`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_export(
        client: &Client,
        schema: &str,
        task_run_id: Option<i64>,
        task: &str,
        table: &TableName,
        columns: &[Column],
        dir: &Path,
        compression: Compression,
    ) -> Result<BackupWriter, BackupError> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let stem = safe_file_name(&format!("{}.{}", table.schema, table.name));
        Self::begin(
            client,
            schema,
            task_run_id,
            task,
            table,
            (columns, &store::SavedAs::REMOVED),
            Purpose::Export,
            compression,
            |id| (dir.clone(), format!("{stem}-{id}-")),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn begin(
        client: &Client,
        schema: &str,
        task_run_id: Option<i64>,
        task: &str,
        table: &TableName,
        (columns, saved_as): (&[Column], &store::SavedAs<'_>),
        purpose: Purpose,
        compression: Compression,
        place: impl FnOnce(i64) -> (PathBuf, String),
    ) -> Result<BackupWriter, BackupError> {
        sweep(client, schema, task).await?;
        let (columns, described) = saved_columns_of(columns, purpose);
        let id = store::insert_backup(
            client,
            schema,
            task_run_id,
            task,
            &table.schema,
            &table.name,
            &serde_json::Value::Array(described),
            purpose.as_str(),
            saved_as,
        )
        .await?;
        let (dir, prefix) = place(id);
        let created = match purpose {
            Purpose::Backup => {
                std::fs::create_dir_all(&dir).and_then(|_| sync_dir(dir.parent().unwrap_or(&dir)))
            }
            Purpose::Export if dir.is_dir() => Ok(()),
            Purpose::Export => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such directory",
            )),
        }
        .map_err(write_error(&dir));
        if let Err(err) = created {
            store::delete_backup(client, schema, id).await?;
            return Err(err);
        }
        store::place_backup(client, schema, id, &dir.display().to_string(), &prefix).await?;
        Ok(BackupWriter {
            schema: schema.to_string(),
            id,
            dir,
            prefix,
            purpose,
            compression,
            parts: vec![(table.clone(), columns)],
            files: 0,
        })
    }

    /// Whether this writes an archive's export files (not a backup).
    pub(crate) fn is_export(&self) -> bool {
        self.purpose == Purpose::Export
    }

    /// Registers another table this backup saves rows of; returns the part
    /// number its batches are written under.
    pub(crate) async fn add_part(
        &mut self,
        client: &Client,
        part: BackupPart<'_>,
    ) -> Result<usize, BackupError> {
        let number = self.parts.len();
        let (columns, described) = saved_columns_of(&part.columns, Purpose::Backup);
        store::add_backup_part(
            client,
            &self.schema,
            self.id,
            number as i32,
            &part.table.schema,
            &part.table.name,
            &serde_json::Value::Array(described),
            part.action,
            &serde_json::json!(part.key_columns),
            part.via,
        )
        .await?;
        self.parts.push((part.table.clone(), columns));
        Ok(number)
    }

    /// Writes a batch's rows (column 0 the page, then each column as text)
    /// to a new file, flushes it, and records it inside the caller's open
    /// transaction. An export's files keep a `.partial` suffix until
    /// `committed`.
    pub(crate) async fn write_batch(
        &mut self,
        client: &Client,
        rows: &[Row],
    ) -> Result<Written, BackupError> {
        self.write_part(client, 0, rows).await
    }

    /// As `write_batch`, for the rows of part `part` (see `add_part`).
    pub(crate) async fn write_part(
        &mut self,
        client: &Client,
        part: usize,
        rows: &[Row],
    ) -> Result<Written, BackupError> {
        let (table, columns) = &self.parts[part];
        let seq = self.files as i32 + 1;
        let name = format!("{}{seq:06}.{}", self.prefix, self.compression.extension());
        let mut csv = Vec::with_capacity(rows.len() * 64);
        csv_line(
            &mut csv,
            columns.iter().map(|(name, _)| Some(name.as_str())),
        );
        for row in rows {
            csv_line(
                &mut csv,
                (1..row.len()).map(|i| row.get::<_, Option<&str>>(i)),
            );
        }
        let sha256 = hex(&Sha256::digest(&csv));
        let partial = |name: &str| match self.purpose {
            Purpose::Backup => self.dir.join(name),
            Purpose::Export => self.dir.join(format!("{name}.partial")),
        };
        let mut paths = vec![partial(&name)];
        if self.purpose == Purpose::Export {
            paths.push(partial(&manifest_name(&name)));
        }
        let manifest = serde_json::json!({
            "table": table.to_string(),
            "columns": columns.iter().map(|(n, t)| serde_json::json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "rows": rows.len(),
            "file": name,
            "format": "csv (PostgreSQL dialect: header line, every value quoted, NULL an empty unquoted field)",
            "compression": self.compression,
            "sha256_of_csv": sha256,
            "created_at": Utc::now().to_rfc3339(),
        });
        let written = (|| {
            write_compressed(&paths[0], &csv, self.compression)?;
            if let Some(path) = paths.get(1) {
                let file = File::create(path)?;
                serde_json::to_writer_pretty(&file, &manifest)?;
                file.sync_all()?;
            }
            sync_dir(&self.dir)
        })();
        if let Err(cause) = written {
            for path in &paths {
                let _ = std::fs::remove_file(path);
            }
            return Err(BackupError::Write {
                path: paths[0].clone(),
                cause,
            });
        }
        let recorded = store::record_backup_file(
            client,
            &self.schema,
            self.id,
            seq,
            &name,
            rows.len() as i64,
            &sha256,
            part as i32,
        )
        .await;
        if let Err(err) = recorded {
            for path in &paths {
                let _ = std::fs::remove_file(path);
            }
            return Err(err.into());
        }
        self.files += 1;
        Ok(Written { paths })
    }

    /// The batch committed: an export's files take their final names.
    pub(crate) fn committed(&self, written: &Written) {
        if self.purpose != Purpose::Export {
            return;
        }
        for path in &written.paths {
            let done = path.with_extension("");
            if let Err(err) = std::fs::rename(path, &done) {
                tracing::warn!(
                    "cannot rename {} (the next run will): {err}",
                    path.display()
                );
            }
        }
        let _ = sync_dir(&self.dir);
    }

    /// Ends the backup. One that holds no rows is removed; returns the id
    /// of one that does.
    pub(crate) async fn finish(self, client: &Client) -> Result<Option<i64>, BackupError> {
        if self.files > 0 {
            return Ok(Some(self.id));
        }
        store::delete_backup(client, &self.schema, self.id).await?;
        if self.purpose == Purpose::Backup {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(None)
    }

    /// Ends the backup and names it in a task's details: `backup_id` for a
    /// backup, `export_id` for an archive's export.
    pub(crate) async fn finish_into(
        self,
        client: &Client,
        details: &mut serde_json::Value,
    ) -> Result<(), BackupError> {
        let key = match self.purpose {
            Purpose::Backup => "backup_id",
            Purpose::Export => "export_id",
        };
        if let Some(id) = self.finish(client).await? {
            details[key] = serde_json::json!(id);
        }
        Ok(())
    }
}

/// The columns a backup saves (generated ones are computed again on
/// restore; an export keeps them, as an archive holds a row whole), as
/// (name, type) and as the index records them.
fn saved_columns_of(
    columns: &[Column],
    purpose: Purpose,
) -> (Vec<(String, String)>, Vec<serde_json::Value>) {
    let saved: Vec<(String, String)> = columns
        .iter()
        .filter(|c| purpose == Purpose::Export || !c.generated)
        .map(|c| (c.name.clone(), c.type_name.clone()))
        .collect();
    let described = saved
        .iter()
        .map(|(name, type_name)| serde_json::json!({"name": name, "type": type_name}))
        .collect();
    (saved, described)
}

fn manifest_name(file: &str) -> String {
    let stem = file
        .strip_suffix(".csv.gz")
        .or_else(|| file.strip_suffix(".csv.zst"))
        .unwrap_or(file);
    format!("{stem}.manifest.json")
}

fn write_compressed(path: &Path, csv: &[u8], compression: Compression) -> std::io::Result<()> {
    let file = File::create(path)?;
    let file = match compression {
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            encoder.write_all(csv)?;
            encoder.finish()?
        }
        Compression::Zstd => {
            let mut encoder = zstd::Encoder::new(file, 3)?;
            encoder.write_all(csv)?;
            encoder.finish()?
        }
    };
    file.sync_all()
}

fn read_compressed(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut csv = Vec::new();
    let file = File::open(path)?;
    match Compression::of(&path.to_string_lossy()) {
        Compression::Gzip => flate2::read::GzDecoder::new(file).read_to_end(&mut csv)?,
        Compression::Zstd => zstd::Decoder::new(file)?.read_to_end(&mut csv)?,
    };
    Ok(csv)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Tidies what crashed runs of a task left: an export file still `.partial`
/// takes its final name when the index has it (its batch committed) and is
/// removed otherwise; a backup file no index row names is removed; a backup
/// that never recorded a file goes.
async fn sweep(client: &Client, schema: &str, task: &str) -> Result<(), BackupError> {
    for backup in store::backups_of_task(client, schema, task).await? {
        let store::IndexedBackup {
            id,
            dir,
            files,
            prefix,
            purpose,
            indexed,
        } = backup;
        let dir = PathBuf::from(dir);
        let known = |name: &str| {
            indexed
                .iter()
                .any(|f| f == name || manifest_name(f) == name)
        };
        if !dir.as_os_str().is_empty() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with(&prefix) {
                    continue;
                }
                match name.strip_suffix(".partial") {
                    Some(done) if known(done) => {
                        let _ = std::fs::rename(entry.path(), dir.join(done));
                    }
                    Some(_) => {
                        tracing::info!(
                            "removing {}: its batch never committed",
                            entry.path().display()
                        );
                        let _ = std::fs::remove_file(entry.path());
                    }
                    None if !known(&name) => {
                        tracing::info!(
                            "removing {}: its batch never committed",
                            entry.path().display()
                        );
                        let _ = std::fs::remove_file(entry.path());
                    }
                    None => {}
                }
            }
        }
        if files == 0 {
            store::delete_backup(client, schema, id).await?;
            if purpose == "backup" && !dir.as_os_str().is_empty() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    Ok(())
}

/// One line of PostgreSQL-dialect CSV: every value quoted (so an empty
/// string stays distinct from NULL), NULL as an empty unquoted field. The
/// csv crate cannot mark a single field unquoted, which NULL needs.
fn csv_line<'a>(out: &mut Vec<u8>, values: impl Iterator<Item = Option<&'a str>>) {
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(value) = value {
            out.push(b'"');
            out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'\n');
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A task name as a file name: anything but letters, digits, `-` and `_`
/// becomes `_`.
fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) use crate::store::backups::BackupRecord;

pub(crate) async fn list(client: &Client, schema: &str) -> Result<Vec<BackupRecord>, BackupError> {
    Ok(store::list_backups(client, schema).await?)
}

/// Deletes backups older than `keep` (a PostgreSQL interval), files first.
/// Returns how many went.
pub(crate) async fn prune(client: &Client, schema: &str, keep: &str) -> Result<u64, BackupError> {
    let old = store::backups_older_than(client, schema, keep).await?;
    for (id, dir) in &old {
        if !dir.is_empty() {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(BackupError::Invalid(format!(
                        "cannot remove old backup {dir}: {err}"
                    )));
                }
            }
        }
        store::delete_backup(client, schema, *id).await?;
    }
    Ok(old.len() as u64)
}

/// What a restore did, or in a dry run would do.
#[derive(Debug, Serialize)]
pub(crate) struct RestoreReport {
    pub backup_id: i64,
    pub table: String,
    /// `delete`: the backup holds removed rows, put back by insert;
    /// `set_null`: the earlier values of columns an orphans task set to
    /// NULL, set back in rows that still hold NULL.
    pub action: String,
    pub dry_run: bool,
    pub rows_in_backup: u64,
    /// Rows put back.
    pub restored: u64,
    /// Rows already in the table (same key, or same values without a key),
    /// left alone.
    pub already_present: u64,
    /// What the removal took from other tables (cascades, SET NULL), put
    /// back after the table's own rows, parents first.
    pub cascade: Vec<PartRestore>,
}

/// A restore's account of one table beyond the backup's own.
#[derive(Debug, Serialize)]
pub(crate) struct PartRestore {
    pub table: String,
    pub action: String,
    pub via: String,
    pub rows_in_backup: u64,
    /// Rows put back (cascade), or rows whose columns were set back.
    pub restored: u64,
    /// Already there (cascade), or already holding other values that a
    /// later change gave them (SET NULL/SET DEFAULT): left alone.
    pub already_present: u64,
}

/// A part's files read and verified, whether its table has a unique key,
/// and its table's oid: what a restore needs before it writes.
/// A part's verified files, whether its table has a unique key, its oid,
/// and its columns that are generated now (computed again, never put back).
type ReadPart = (Vec<Vec<u8>>, bool, u32, Vec<String>);

/// One table's part of a backup, as the index describes it.
struct SavedPart {
    part: i32,
    table: TableName,
    columns: Vec<(String, String)>,
    action: String,
    key_columns: Vec<String>,
    via: String,
}

fn saved_columns(saved: &serde_json::Value) -> Vec<(String, String)> {
    saved
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A JSON array of column names.
fn names_of(names: &serde_json::Value) -> Vec<String> {
    names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(String::from))
        .collect()
}

/// Puts a backup's rows back: the table's own first, then what cascades
/// took from other tables (parents before children), then the values
/// SET NULL/SET DEFAULT changed. One transaction under `lock_timeout`;
/// rows already there are left alone and counted, so a second restore
/// changes nothing. Every file's checksum is verified before anything is
/// written.
pub(crate) async fn restore(
    client: &mut Client,
    schema: &str,
    id: i64,
    dry_run: bool,
    lock_timeout: &str,
) -> Result<RestoreReport, BackupError> {
    let Some(backup) = store::backup_table(&*client, schema, id).await? else {
        return Err(BackupError::Invalid(format!(
            "there is no backup {id}; `pgmaint backups` lists them"
        )));
    };
    let table = TableName::new(backup.table_schema, backup.table_name);
    let dir = PathBuf::from(backup.dir);
    let mut parts = vec![SavedPart {
        part: 0,
        table: table.clone(),
        columns: saved_columns(&backup.columns),
        action: backup.action,
        key_columns: names_of(&backup.key_columns),
        via: String::new(),
    }];
    parts.extend(cascaded_parts(&*client, schema, id).await?);
    // Check every table and read and verify every file before touching any.
    let mut prepared = Vec::new();
    for part in &parts {
        prepared.push(read_part(&*client, schema, id, &dir, part).await?);
    }
    let tx = client.transaction().await?;
    tx.exec(
        "SELECT set_config('lock_timeout', $1, true)",
        &[&lock_timeout],
    )
    .await?;
    for (name, value) in TEXT_SETTINGS {
        tx.exec("SELECT set_config($1, $2, true)", &[&name, &value])
            .await?;
    }
    let order = restore_order(&tx, &parts, &prepared).await?;
    let mut counts = vec![(0u64, 0u64); parts.len()];
    let mut prepared: Vec<Option<ReadPart>> = prepared.into_iter().map(Some).collect();
    for index in order {
        let Some((contents, has_key, _, generated)) = prepared[index].take() else {
            continue;
        };
        counts[index] = restore_part(&tx, id, &parts[index], contents, has_key, &generated).await?;
    }
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    let (rows_in_backup, restored) = counts[0];
    Ok(RestoreReport {
        backup_id: id,
        table: table.to_string(),
        action: parts[0].action.clone(),
        dry_run,
        rows_in_backup,
        restored,
        already_present: rows_in_backup - restored,
        cascade: parts
            .iter()
            .zip(&counts)
            .skip(1)
            .map(|(part, &(total, restored))| PartRestore {
                table: part.table.to_string(),
                action: part.action.clone(),
                via: part.via.clone(),
                rows_in_backup: total,
                restored,
                already_present: total - restored,
            })
            .collect(),
    })
}

/// The parts a backup saved besides the table's own rows: what cascades
/// took from other tables, and the values SET NULL/SET DEFAULT changed.
async fn cascaded_parts(
    client: &Client,
    schema: &str,
    id: i64,
) -> Result<Vec<SavedPart>, BackupError> {
    Ok(store::backup_parts(client, schema, id)
        .await?
        .into_iter()
        .map(|row| SavedPart {
            part: row.part,
            table: TableName::new(row.table_schema, row.table_name),
            columns: saved_columns(&row.columns),
            action: row.action,
            key_columns: names_of(&row.key_columns),
            via: row.via,
        })
        .collect())
}

/// One part, ready to put back: its table still has the columns it had,
/// and its files read and match their checksums.
async fn read_part(
    client: &Client,
    schema: &str,
    id: i64,
    dir: &Path,
    part: &SavedPart,
) -> Result<ReadPart, BackupError> {
    let info = db::lookup_table(client, &part.table.quoted())
        .await
        .map_err(|e| BackupError::Invalid(format!("cannot restore backup {id}: {e}")))?;
    let differences: Vec<String> = part
        .columns
        .iter()
        .filter_map(|(name, type_name)| match info.column(name) {
            None => Some(format!("column \"{name}\" is gone")),
            Some(c) if &c.type_name != type_name => Some(format!(
                "column \"{name}\" was {type_name} and is now {}",
                c.type_name
            )),
            Some(_) => None,
        })
        .collect();
    if !differences.is_empty() {
        return Err(BackupError::Invalid(format!(
            "cannot restore backup {id} into {}: {}",
            part.table,
            differences.join("; ")
        )));
    }
    let files = store::backup_files_of_part(client, schema, id, part.part).await?;
    let mut contents = Vec::new();
    for (file, sha256) in &files {
        contents.push(read_verified(&dir.join(file), sha256)?);
    }
    let has_key = db::has_unique_key(client, info.oid).await?;
    let generated = info
        .columns
        .iter()
        .filter(|c| c.generated)
        .map(|c| c.name.clone())
        .collect();
    Ok((contents, has_key, info.oid, generated))
}

/// A backup file's CSV, refused unless it matches its checksum.
fn read_verified(path: &Path, sha256: &str) -> Result<Vec<u8>, BackupError> {
    let csv = read_compressed(path)
        .map_err(|e| BackupError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    if hex(&Sha256::digest(&csv)) != *sha256 {
        return Err(BackupError::Invalid(format!(
            "{} does not match its checksum; it was changed or damaged, nothing was restored",
            path.display()
        )));
    }
    Ok(csv)
}

/// Copies one part's files into a temporary table and puts back what is
/// not there yet: the rows in the backup, and how many were put back.
async fn restore_part(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    part: &SavedPart,
    contents: Vec<Vec<u8>>,
    has_key: bool,
    generated: &[String],
) -> Result<(u64, u64), BackupError> {
    let names: Vec<String> = part.columns.iter().map(|(n, _)| n.clone()).collect();
    let list = column_list(&names);
    let temp = format!("pgmaint_restore_{}", part.part);
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {list} FROM {} WITH NO DATA",
        part.table.quoted()
    ))
    .await?;
    for csv in contents {
        let sink = tx
            .copy_in(&format!(
                "COPY {temp} ({list}) FROM STDIN (FORMAT csv, HEADER true)"
            ))
            .await?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(csv)).await?;
        sink.finish().await?;
    }
    let total: i64 = tx
        .row(&format!("SELECT count(*) FROM {temp}"), &[])
        .await?
        .get(0);
    let statement = match part.action.as_str() {
        "set_null" | "set_default" | "set_back" => set_back(part, &temp),
        _ => {
            // An export keeps a stored generated column's value; the table
            // computes it again.
            let stored: Vec<String> = names
                .iter()
                .filter(|n| !generated.contains(n))
                .cloned()
                .collect();
            Some(put_back(&part.table, &stored, &temp, has_key))
        }
    };
    let restored = match statement {
        Some(statement) => tx.exec(&statement, &[]).await.map_err(|err| {
            BackupError::Invalid(format!(
                "cannot restore backup {id}: putting back the rows of {} failed: {}; nothing was restored",
                part.table,
                db::describe(&err)
            ))
        })?,
        None => 0,
    };
    Ok((total as u64, restored))
}

/// The order a restore handles a backup's parts in: first every part whose
/// rows are put back, each table after the tables it references (so its
/// foreign keys find their rows; the order of the parts breaks a cycle),
/// then every SET NULL/SET DEFAULT part, whose rows must all be back before
/// their columns are set back (a row a later batch cascaded away was saved
/// with the NULL already in it).
async fn restore_order(
    tx: &tokio_postgres::Transaction<'_>,
    parts: &[SavedPart],
    prepared: &[ReadPart],
) -> Result<Vec<usize>, BackupError> {
    let oids: Vec<u32> = prepared.iter().map(|(_, _, oid, _)| *oid).collect();
    let edges: Vec<(u32, u32)> = tx
        .rows(
            "SELECT conrelid, confrelid FROM pg_constraint
              WHERE contype = 'f' AND conrelid = ANY($1) AND confrelid = ANY($1) AND conrelid <> confrelid",
            &[&oids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let inserts: Vec<usize> = (0..parts.len())
        .filter(|&i| {
            !matches!(
                parts[i].action.as_str(),
                "set_null" | "set_default" | "set_back"
            )
        })
        .collect();
    let mut order: Vec<usize> = Vec::new();
    let mut left = inserts;
    while !left.is_empty() {
        // The first part none of whose referenced tables is still to come.
        let ready = left
            .iter()
            .position(|&i| {
                !left
                    .iter()
                    .any(|&j| j != i && oids[j] != oids[i] && edges.contains(&(oids[i], oids[j])))
            })
            .unwrap_or(0);
        order.push(left.remove(ready));
    }
    order.extend((0..parts.len()).filter(|&i| {
        matches!(
            parts[i].action.as_str(),
            "set_null" | "set_default" | "set_back"
        )
    }));
    Ok(order)
}

/// Inserts the saved rows that are not there. Identity columns keep their
/// saved values (`OVERRIDING SYSTEM VALUE`, which `GENERATED ALWAYS`
/// needs); with a unique key a row is there when its key is, without one
/// when a row has the same values.
fn put_back(table: &TableName, names: &[String], temp: &str, has_key: bool) -> String {
    let list = column_list(names);
    let t = table.quoted();
    if has_key {
        return format!(
            "INSERT INTO {t} ({list}) OVERRIDING SYSTEM VALUE SELECT {list} FROM {temp} ON CONFLICT DO NOTHING"
        );
    }
    let row_of = |alias: &str| {
        names
            .iter()
            .map(|n| format!("{alias}.{}", quote_ident(n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "INSERT INTO {t} ({list}) OVERRIDING SYSTEM VALUE SELECT {list} FROM {temp} r
          WHERE NOT EXISTS (SELECT 1 FROM {t} x WHERE ROW({x})::text = ROW({r})::text)",
        x = row_of("x"),
        r = row_of("r")
    )
}

/// Sets the columns a SET NULL/SET DEFAULT changed back to their saved
/// values, found by key. A SET NULL row whose columns are no longer all
/// NULL was changed again since, and is left alone. None when there is
/// nothing to set (every changed column is part of the key).
fn set_back(part: &SavedPart, temp: &str) -> Option<String> {
    let changed: Vec<&String> = part
        .columns
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !part.key_columns.contains(n))
        .collect();
    if changed.is_empty() {
        return None;
    }
    let assignments = changed
        .iter()
        .map(|c| format!("{} = r.{}", quote_ident(c), quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let by_key = part
        .key_columns
        .iter()
        .map(|k| format!("t.{} = r.{}", quote_ident(k), quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let current = changed
        .iter()
        .map(|c| format!("t.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let saved = changed
        .iter()
        .map(|c| format!("r.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let untouched = if part.action == "set_null" {
        changed
            .iter()
            .map(|c| format!(" AND t.{} IS NULL", quote_ident(c)))
            .collect::<String>()
    } else {
        String::new()
    };
    Some(format!(
        "UPDATE {} t SET {assignments} FROM {temp} r WHERE {by_key} AND ROW({current}) IS DISTINCT FROM ROW({saved}){untouched}",
        part.table.quoted()
    ))
}

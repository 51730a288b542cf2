//! Before a down drops a table or a column that holds data, pgmaint's
//! backup module saves it, inside the down's own transaction and after a
//! SHARE lock on the table (reads go on, writes wait), so the backup holds
//! exactly what the drop removes. A dropped table is saved as removed rows
//! (`pgmaint restore` inserts them once an up has made the table again); a
//! dropped column as its non-NULL values with the row's primary key
//! (restore sets them back by that key, whatever the column holds then:
//! an up that made the column again may have given it a default). A
//! `TRUNCATE` is saved as a dropped table's rows are; a `DROP SCHEMA ...
//! CASCADE` as each of its tables, and a `DROP TYPE`/`DOMAIN ... CASCADE`
//! as each column of that type, found in the catalog as the statement is
//! about to run (`expand`).

use std::path::Path;

use tokio_postgres::Client;

use super::MigrateError;
use super::statements::Drop;
use crate::backup::BackupWriter;
use crate::sql::quote_ident;
use crate::store::backups::SavedAs;
use crate::unnamed::Unnamed;

/// Rows read from the table per backup file.
const ROWS_PER_FILE: usize = 10_000;

/// A backup made of what a statement drops.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Saved {
    pub backup_id: i64,
    pub table: String,
    /// The dropped column; `None` for a whole table.
    pub column: Option<String>,
    pub rows: u64,
}

/// The tables and columns `drop` removes, found in the catalog now.
pub async fn expand(client: &Client, drop: &Drop) -> Result<Vec<Drop>, MigrateError> {
    Ok(match drop {
        Drop::Table(_) | Drop::Column(..) => vec![drop.clone()],
        Drop::Schema(schema) => client
            .rows(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname",
                &[schema],
            )
            .await?
            .iter()
            .map(|r| Drop::Table(r.get(0)))
            .collect(),
        Drop::Type(name) => client
            .rows(
                "SELECT format('%I.%I', n.nspname, c.relname), a.attname::text
                   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_type t ON t.oid = a.atttypid
                  WHERE to_regtype($1) IS NOT NULL AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
                    AND (t.oid = to_regtype($1) OR t.typbasetype = to_regtype($1) OR t.typelem = to_regtype($1))
                  ORDER BY 1, a.attnum",
                &[name],
            )
            .await?
            .iter()
            .map(|r| Drop::Column(r.get(0), r.get(1)))
            .collect(),
    })
}

/// Backs up what `drop` removes; `None` when it holds nothing (an empty
/// table, a column that is NULL in every row, or a table that does not
/// exist: the statement's own `IF EXISTS` or error says the rest). Runs
/// inside the caller's open transaction. `what` names the dropper in a
/// refusal (`the down 0007_users.down.sql`), `instead` what else to do.
pub async fn save(
    client: &Client,
    state_schema: &str,
    backup_dir: &Path,
    task: &str,
    drop: &Drop,
    (what, instead): (&str, &str),
) -> Result<Option<Saved>, MigrateError> {
    let written = match drop {
        Drop::Table(table) | Drop::Column(table, _) => table,
        // `expand` makes these tables and columns.
        Drop::Schema(_) | Drop::Type(_) => return Ok(None),
    };
    let exists: bool = client
        .row("SELECT to_regclass($1) IS NOT NULL", &[written])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let info = crate::db::lookup_table(client, written)
        .await
        .map_err(|e| MigrateError::Failed(e.to_string()))?;
    let table = info.name.quoted();
    client
        .batch_execute(&format!("LOCK TABLE {table} IN SHARE MODE"))
        .await?;
    let (columns, saved_as_key, filter): (Vec<crate::db::Column>, Vec<String>, String) = match drop
    {
        Drop::Table(_) | Drop::Schema(_) | Drop::Type(_) => (
            info.columns
                .iter()
                .filter(|c| !c.generated)
                .cloned()
                .collect(),
            Vec::new(),
            "true".into(),
        ),
        Drop::Column(_, column) => {
            let Some(dropped) = info.column(column) else {
                return Ok(None);
            };
            let key = crate::db::primary_key(client, info.oid).await?;
            if key.is_empty() {
                return Err(MigrateError::Refused(format!(
                    "{what} drops column {column} of {}, which has no primary key, so a backup could not find its rows again; nothing was changed\n  help: give {} a primary key, or {instead}",
                    info.name, info.name
                )));
            }
            let mut columns: Vec<crate::db::Column> =
                key.iter().filter_map(|k| info.column(k).cloned()).collect();
            columns.push(dropped.clone());
            (columns, key, format!("{} IS NOT NULL", quote_ident(column)))
        }
    };
    let count: i64 = client
        .row(&format!("SELECT count(*) FROM {table} WHERE {filter}"), &[])
        .await?
        .get(0);
    if count == 0 {
        return Ok(None);
    }
    let saved_as = match drop {
        Drop::Table(_) | Drop::Schema(_) | Drop::Type(_) => SavedAs::REMOVED,
        Drop::Column(..) => SavedAs {
            action: "set_back",
            key_columns: &saved_as_key,
        },
    };
    let mut writer = BackupWriter::start(
        client,
        state_schema,
        None,
        backup_dir,
        task,
        &info.name,
        &columns,
        &saved_as,
    )
    .await?;
    let as_text: Vec<String> = columns
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect();
    client
        .batch_execute(&format!(
            "DECLARE pgmaint_dropped NO SCROLL CURSOR FOR SELECT (ctid::text::point)[0]::bigint, {} FROM {table} WHERE {filter}",
            as_text.join(", ")
        ))
        .await?;
    let mut rows = 0u64;
    loop {
        let batch = client
            .rows(&format!("FETCH {ROWS_PER_FILE} FROM pgmaint_dropped"), &[])
            .await?;
        if batch.is_empty() {
            break;
        }
        rows += batch.len() as u64;
        writer.write_batch(client, &batch).await?;
    }
    client.batch_execute("CLOSE pgmaint_dropped").await?;
    let backup_id = writer.finish(client).await?;
    Ok(backup_id.map(|backup_id| Saved {
        backup_id,
        table: info.name.to_string(),
        column: match drop {
            Drop::Column(_, c) => Some(c.clone()),
            Drop::Table(_) | Drop::Schema(_) | Drop::Type(_) => None,
        },
        rows,
    }))
}

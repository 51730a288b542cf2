//! I/O with PostgreSQL that several modules share: catalog lookups, session
//! settings, and turning driver errors into sentences a person can act on.

use crate::unnamed::Unnamed;
use tokio_postgres::{Client, GenericClient, error::SqlState};

use crate::duration::Duration;
use crate::sql::TableName;

/// A driver error as one readable line: the server's message, its detail and
/// hint, and the SQLSTATE for searching. Never includes connection secrets.
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        text.push_str(&format!(" [SQLSTATE {}]", db.code().code()));
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Errors worth retrying after a pause: the batch could not get its locks,
/// or lost a deadlock or serialization race. Its work was rolled back.
pub(crate) fn is_transient(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// A statement's error, as `describe` words it, says that it gave up
/// waiting for a lock (`lock_timeout`, SQLSTATE 55P03). Checks and tasks
/// report errors as text; this is how the runner tells a busy lock from a
/// wrong config in that text.
pub(crate) fn gave_up_on_a_lock(text: &str) -> bool {
    text.contains("[SQLSTATE 55P03]")
}

/// Whether an error's text, as `describe` words it, is the server or the
/// connection failing rather than something the config says: a SQLSTATE
/// of a class no config value causes (connection 08, transaction state 25,
/// prepared statements 26 and 42P05, rollbacks 40, resources 53/54, object
/// state 55 but a busy lock, operator intervention 57, system 58, internal
/// XX), or a connection that closed. `check` reports these as server
/// errors, never as a problem to fix in the file.
pub(crate) fn server_fault(text: &str) -> bool {
    let connection = [
        "connection closed",
        "error communicating with the server",
        "timeout waiting for server",
    ];
    if connection.iter().any(|c| text.contains(c)) {
        return true;
    }
    let Some(at) = text.rfind("[SQLSTATE ") else {
        return false;
    };
    let code = text[at + 10..].split(']').next().unwrap_or_default();
    if code.len() != 5 || code == "55P03" {
        return false;
    }
    code == "42P05"
        || ["08", "25", "26", "40", "53", "54", "55", "57", "58", "XX"]
            .iter()
            .any(|class| code.starts_with(class))
}

/// The timeouts every session pgmaint opens on a user's database runs
/// under from its first statement on: the catalog lookups a task starts
/// with take locks too, and must not queue behind an `ACCESS EXCLUSIVE`
/// lock (and the application traffic queued behind that) any longer than a
/// batch would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        SessionTimeouts::BUILT_IN
    }
}

impl SessionTimeouts {
    /// pgmaint's own defaults, which a task's options also start from
    /// (`config::TaskOptions::BUILT_IN`): a lock waited for at most 1 s, a
    /// statement cut off after 5 min.
    pub(crate) const BUILT_IN: SessionTimeouts = SessionTimeouts {
        lock_timeout: Duration(std::time::Duration::from_secs(1)),
        statement_timeout: Duration(std::time::Duration::from_secs(300)),
    };

    /// The settings as the SQL a person would type, for `-v`.
    pub(crate) fn statements(&self) -> [String; 2] {
        [
            format!("SET lock_timeout = '{}'", self.lock_timeout.as_pg_setting()),
            format!(
                "SET statement_timeout = '{}'",
                self.statement_timeout.as_pg_setting()
            ),
        ]
    }

    /// Sets both for the session, in one round trip, through parameters.
    pub(crate) async fn apply(
        &self,
        client: &impl GenericClient,
    ) -> Result<(), tokio_postgres::Error> {
        client
            .row(
                "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
                &[
                    &self.lock_timeout.as_pg_setting(),
                    &self.statement_timeout.as_pg_setting(),
                ],
            )
            .await?;
        Ok(())
    }
}

/// Runs `work` in a read-only transaction that is rolled back afterwards,
/// so what a dry run or check reads can change nothing. `work` is a future:
/// it does nothing until awaited here, after BEGIN.
pub(crate) async fn read_only<T>(
    client: &Client,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    client.batch_execute("BEGIN READ ONLY").await?;
    let result = work.await;
    client.batch_execute("ROLLBACK").await?;
    result
}

/// Sets a session setting through a parameter (`set_config`), so no value
/// is pasted into SQL.
pub(crate) async fn set_session(
    client: &impl GenericClient,
    name: &str,
    value: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .row("SELECT set_config($1, $2, false)", &[&name, &value])
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_name: String,
    /// A generated column: computed by PostgreSQL, never inserted.
    pub generated: bool,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub oid: u32,
    pub name: TableName,
    /// `r` table, `p` partitioned table, `v` view, ... (pg_class.relkind).
    pub kind: char,
    pub columns: Vec<Column>,
    /// The planner's row estimate (pg_class.reltuples); -1 when never analyzed.
    pub estimated_rows: f64,
    pub pages: i64,
}

impl TableInfo {
    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The columns an INSERT can name: all but generated ones.
    pub(crate) fn insertable_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| c.name.clone())
            .collect()
    }

    pub(crate) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a table name given in the config does not lead to a table.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("table \"{0}\" does not exist (looked in the search_path: {1})")]
    Missing(String, String),
    #[error("\"{0}\" is not a valid table name: {1}")]
    BadName(String, String),
    #[error("\"{0}\" is a {1}, not a table")]
    NotATable(String, &'static str),
    #[error(
        "table \"{0}\" is locked by another session; its catalog lookup gave up after lock_timeout ({1})"
    )]
    Locked(String, String),
    #[error("{0}")]
    Database(String),
}

/// Resolves a table name the way PostgreSQL would (`to_regclass`, so
/// quoting, case folding and the search_path all behave as in psql) and
/// reads its columns.
pub(crate) async fn lookup_table(
    client: &impl GenericClient,
    written: &str,
) -> Result<TableInfo, LookupError> {
    let row = client
        .row(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.reltuples::float8,
                    (pg_relation_size(c.oid) / current_setting('block_size')::bigint)
               FROM (SELECT to_regclass($1) AS oid) r
               LEFT JOIN pg_class c ON c.oid = r.oid
               LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
            &[&written],
        )
        .await
        .map_err(|err| match err.as_db_error() {
            // pg_relation_size opens the table, so it waits on its locks.
            Some(db) if *db.code() == SqlState::LOCK_NOT_AVAILABLE => {
                LookupError::Locked(written.into(), describe(&err))
            }
            // Only what to_regclass says of the name itself is about the name.
            Some(db)
                if [
                    SqlState::SYNTAX_ERROR,
                    SqlState::INVALID_NAME,
                    SqlState::INVALID_SCHEMA_NAME,
                    SqlState::FEATURE_NOT_SUPPORTED,
                    SqlState::UNDEFINED_OBJECT,
                ]
                .contains(db.code()) =>
            {
                LookupError::BadName(written.into(), db.message().into())
            }
            _ => LookupError::Database(describe(&err)),
        })?;
    let Some(oid) = row.get::<_, Option<u32>>(0) else {
        let path: String = client
            .row("SELECT current_setting('search_path')", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or_default();
        return Err(LookupError::Missing(written.into(), path));
    };
    let kind = row.get::<_, String>(3).chars().next().unwrap_or('r');
    let kind_name = match kind {
        'r' | 'p' => None,
        'v' => Some("view"),
        'm' => Some("materialized view"),
        'f' => Some("foreign table"),
        'S' => Some("sequence"),
        'i' | 'I' => Some("index"),
        _ => Some("relation of another kind"),
    };
    if let Some(kind_name) = kind_name {
        return Err(LookupError::NotATable(written.into(), kind_name));
    }
    let columns = client
        .rows(
            "SELECT attname::text, format_type(atttypid, atttypmod), attgenerated <> ''
               FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| LookupError::Database(describe(&e)))?
        .iter()
        .map(|r| Column { name: r.get(0), type_name: r.get(1), generated: r.get(2) })
        .collect();
    Ok(TableInfo {
        oid,
        name: TableName::new(row.get::<_, String>(1), row.get::<_, String>(2)),
        kind,
        columns,
        estimated_rows: row.get(4),
        pages: row.get(5),
    })
}

/// The columns of the table's primary key, in key order (empty without one).
pub(crate) async fn primary_key(
    client: &impl GenericClient,
    oid: u32,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .rows(
            "SELECT a.attname::text
               FROM pg_index i
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = $1 AND i.indisprimary
              ORDER BY k.position",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Whether the table has a primary key or a unique constraint, so that
/// `INSERT ... ON CONFLICT DO NOTHING` can tell a row that is already there.
pub(crate) async fn has_unique_key(
    client: &impl GenericClient,
    oid: u32,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .row(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1 AND indisunique AND indpred IS NULL AND indisvalid)",
            &[&oid],
        )
        .await?
        .get(0))
}

/// Whether the server is a standby; pgmaint never writes on one.
pub(crate) async fn in_recovery(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.row("SELECT pg_is_in_recovery()", &[]).await?.get(0))
}

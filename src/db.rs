//! I/O with PostgreSQL that several modules share: catalog lookups, session
//! settings, and turning driver errors into sentences a person can act on.

use crate::unnamed::Unnamed;
use tokio_postgres::{Client, GenericClient, error::SqlState};

use crate::duration::Duration;
use crate::sql::{TableName, TimeKind};

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
    /// `time_zone`: the `TimeZone` each transaction sets LOCAL, so
    /// `timestamp without time zone` values, casts and `now()` in a `where`
    /// are read in the zone the application meant; `None` keeps the
    /// session's own.
    pub time_zone: Option<chrono_tz::Tz>,
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
        time_zone: None,
    };

    /// The settings as each transaction sets them, for `-v` (a
    /// connection that may be pooled carries no session setting).
    pub(crate) fn statements(&self) -> Vec<String> {
        let mut statements = vec![
            format!(
                "SET LOCAL lock_timeout = '{}'",
                self.lock_timeout.as_pg_setting()
            ),
            format!(
                "SET LOCAL statement_timeout = '{}'",
                self.statement_timeout.as_pg_setting()
            ),
        ];
        if let Some(zone) = self.time_zone {
            statements.push(format!("SET LOCAL TimeZone = '{}'", zone.name()));
        }
        statements
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

tokio::task_local! {
    /// The timeouts of the work under way (a task's, while it is checked or
    /// runs): what `read_only` and `lookup_table` set LOCAL.
    static TIMEOUTS: SessionTimeouts;
}

/// Runs `work` with `timeouts` as the ones each transaction it opens
/// through `read_only` (and each catalog lookup) sets LOCAL.
pub(crate) async fn under<F: Future>(timeouts: SessionTimeouts, work: F) -> F::Output {
    TIMEOUTS.scope(timeouts, work).await
}

/// The `[database]` timeouts of the config this process loaded: what
/// pgmaint's own transactions set outside any task (a run's bookkeeping,
/// `init`, the daemon's claims and the API's reads), so a user's
/// `lock_timeout` or `statement_timeout = 0` holds there too. One value per
/// process while a process serves one config; a fleet of databases will
/// carry it with each database's target instead.
static CONFIGURED: std::sync::OnceLock<SessionTimeouts> = std::sync::OnceLock::new();

/// Records the loaded config's `[database]` timeouts (the first call wins).
pub(crate) fn configure_timeouts(timeouts: SessionTimeouts) {
    let _ = CONFIGURED.set(timeouts);
}

/// The timeouts of the work under way; outside `under`, the config's
/// `[database]` ones, else pgmaint's built-in ones.
pub(crate) fn current_timeouts() -> SessionTimeouts {
    TIMEOUTS.try_with(|t| *t).unwrap_or_else(|_| {
        CONFIGURED
            .get()
            .copied()
            .unwrap_or(SessionTimeouts::BUILT_IN)
    })
}

/// Runs `work` in a read-only transaction that is rolled back afterwards,
/// so what a dry run or check reads can change nothing; its first
/// statement sets the timeouts of the work under way LOCAL to it
/// (`current_timeouts`), so no session setting is needed or left behind a
/// transaction pooler. `work` is a future: it does nothing until awaited
/// here, after BEGIN.
pub(crate) async fn read_only<T>(
    client: &Client,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    bounded(client, "BEGIN READ ONLY", "ROLLBACK", work).await
}

/// Runs `work`, pgmaint's own bookkeeping (a run's start and end, its
/// progress, a lease given back), in a transaction of its own that commits
/// when `work` succeeds and rolls back when it fails. Its first statement
/// sets the timeouts of the work under way LOCAL, as `read_only` does:
/// behind a transaction pooler no session setting holds, and a statement
/// outside a transaction would wait on a lock for ever. Never call it
/// inside a transaction: its COMMIT would end that one.
pub(crate) async fn committed<T, E: From<tokio_postgres::Error>>(
    client: &Client,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    bounded(client, "BEGIN", "COMMIT", work).await
}

/// `committed` of one statement that changes rows, in one round trip:
/// BEGIN, the timeouts SET LOCAL, the statement and COMMIT are sent
/// together and answered in order (pipelined). A statement that fails
/// leaves the transaction aborted, which the COMMIT then rolls back; its
/// error is returned. pgmaint's one-statement records (a run's start and
/// end, a task run's, its progress, a lease given back) go through here or
/// `committed_row`.
pub(crate) async fn committed_exec(
    client: &Client,
    sql: &str,
    params: &[&dyn crate::unnamed::Param],
) -> Result<u64, tokio_postgres::Error> {
    in_one_round_trip(client, ("BEGIN", "COMMIT"), client.exec(sql, params)).await
}

/// `committed_exec` of a statement that returns exactly one row.
pub(crate) async fn committed_row(
    client: &Client,
    sql: &str,
    params: &[&dyn crate::unnamed::Param],
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    in_one_round_trip(client, ("BEGIN", "COMMIT"), client.row(sql, params)).await
}

/// `read_only` of one statement that returns exactly one row, in one round
/// trip as `committed_exec`: BEGIN READ ONLY, the timeouts, the statement
/// and ROLLBACK sent together.
pub(crate) async fn read_only_row(
    client: &Client,
    sql: &str,
    params: &[&dyn crate::unnamed::Param],
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    in_one_round_trip(
        client,
        ("BEGIN READ ONLY", "ROLLBACK"),
        client.row(sql, params),
    )
    .await
}

/// `statement` must send its one statement when first polled (as
/// `query_typed` does), so it goes after the timeouts and before `end`.
/// The statement cannot run without its timeouts: a BEGIN fails only on a
/// broken connection or inside an aborted transaction, where the
/// statement fails as well.
async fn in_one_round_trip<T>(
    client: &Client,
    (begin, end): (&str, &str),
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let timeouts = current_timeouts();
    let (began, set, done, committed) = futures_util::join!(
        client.batch_execute(begin),
        set_local_timeouts(client, &timeouts),
        statement,
        client.batch_execute(end),
    );
    began?;
    set?;
    let value = done?;
    committed?;
    Ok(value)
}

/// `begin`, the timeouts of the work under way SET LOCAL, `work`, then
/// `end` when it succeeds or ROLLBACK when it fails: `read_only` and
/// `committed`.
async fn bounded<T, E: From<tokio_postgres::Error>>(
    client: &Client,
    begin: &str,
    end: &str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    // BEGIN and the timeouts are sent together and answered in order: one
    // round trip. The timeouts are set before `work` sends anything.
    let timeouts = current_timeouts();
    let (began, set) = futures_util::join!(
        client.batch_execute(begin),
        set_local_timeouts(client, &timeouts)
    );
    let result = match began.and(set) {
        Ok(()) => work.await,
        Err(err) => Err(err.into()),
    };
    match result {
        Ok(value) => {
            client.batch_execute(end).await?;
            Ok(value)
        }
        Err(err) => {
            // A failed ROLLBACK leaves nothing to undo: the connection is gone.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(err)
        }
    }
}

/// Opens a transaction whose first statement sets the timeouts of the work
/// under way LOCAL: every transaction pgmaint's state store opens.
pub(crate) async fn begin(
    client: &mut Client,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    set_local_timeouts(&tx, &current_timeouts()).await?;
    Ok(tx)
}

/// Sets `lock_timeout` and `statement_timeout` for the current transaction
/// only (`set_config(..., true)`, as SET LOCAL), through parameters: what
/// each transaction pgmaint opens starts with, so nothing of it outlives
/// the transaction behind a transaction pooler. A `time_zone` is set the
/// same way as `TimeZone`; without one the session's zone stays.
pub(crate) async fn set_local_timeouts(
    client: &impl GenericClient,
    timeouts: &SessionTimeouts,
) -> Result<(), tokio_postgres::Error> {
    client
        .row(
            "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true),
                    CASE WHEN $3::text IS NOT NULL THEN set_config('TimeZone', $3, true) END",
            &[
                &timeouts.lock_timeout.as_pg_setting(),
                &timeouts.statement_timeout.as_pg_setting(),
                &timeouts.time_zone.map(|zone| zone.name()),
            ],
        )
        .await?;
    Ok(())
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
    /// Which time type the column holds, by its type's OID (through
    /// domains); `None` for every other type.
    pub time: Option<TimeKind>,
}

/// SQL for the OID of `type_oid`'s base type: the type itself, or for a
/// domain the type it is over, followed through domains over domains.
pub(crate) fn base_type_sql(type_oid: &str) -> String {
    format!(
        "(WITH RECURSIVE d(oid, base, typtype) AS (
              SELECT t.oid, t.typbasetype, t.typtype FROM pg_type t WHERE t.oid = {type_oid}
              UNION ALL
              SELECT t.oid, t.typbasetype, t.typtype FROM pg_type t JOIN d ON t.oid = d.base WHERE d.typtype = 'd')
          SELECT oid FROM d WHERE typtype <> 'd' LIMIT 1)"
    )
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

    /// The columns, each written as a condition names it (`id, "createdAt"`).
    pub(crate) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| crate::sql::as_written(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Help for a condition that names a column PostgreSQL folded: the
    /// server says `column "createdat" does not exist` and the table has
    /// `"createdAt"`.
    pub(crate) fn folded_column_help(&self, err: &tokio_postgres::Error) -> Option<String> {
        let db = err.as_db_error()?;
        if *db.code() != tokio_postgres::error::SqlState::UNDEFINED_COLUMN {
            return None;
        }
        // `column "createdat" does not exist`, or `column s.createdat ...`.
        let named = db
            .message()
            .strip_prefix("column ")?
            .strip_suffix(" does not exist")?;
        let named = named.rsplit('.').next()?.trim_matches('"');
        let column = self
            .columns
            .iter()
            .find(|c| c.name != named && c.name.to_lowercase() == named)?;
        let quoted = crate::sql::quote_ident(&column.name);
        Some(format!(
            "the column is {quoted}; quote it: PostgreSQL folds an unquoted name to lower case (a TOML '...' string keeps double quotes as they are)"
        ))
    }
}

/// Why a table name given in the config does not lead to a table.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    /// The name, the search_path looked in, and help for a name written in
    /// the wrong case or near another ([`relation_help`]).
    #[error("table \"{0}\" does not exist (looked in the search_path: {1})")]
    Missing(String, String, Option<String>),
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

impl LookupError {
    /// What to do about it: for a missing table the quoting or near miss
    /// when there is one, else `otherwise`.
    pub(crate) fn help(&self, otherwise: Option<&str>) -> Option<String> {
        match self {
            LookupError::Missing(_, _, Some(help)) => Some(help.clone()),
            _ => otherwise.map(str::to_string),
        }
    }
}

/// Resolves a table name the way PostgreSQL would (`to_regclass`, so
/// quoting, case folding and the search_path all behave as in psql) and
/// reads its columns. The lookup waits on the table's lock (in
/// `pg_relation_size`, after the FROM list) at most the `lock_timeout` of
/// the work under way, set LOCAL in the statement itself: outside a
/// transaction that is the statement's own implicit one, so nothing of it
/// stays on the session (behind a transaction pooler).
pub(crate) async fn lookup_table(
    client: &impl GenericClient,
    written: &str,
) -> Result<TableInfo, LookupError> {
    let row = client
        .row(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.reltuples::float8,
                    (pg_relation_size(c.oid) / current_setting('block_size')::bigint)
               FROM (SELECT set_config('lock_timeout', $2, true) OFFSET 0) t
              CROSS JOIN (SELECT to_regclass($1) AS oid) r
               LEFT JOIN pg_class c ON c.oid = r.oid
               LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
            &[&written, &current_timeouts().lock_timeout.as_pg_setting()],
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
        let help = relation_help(client, "table", false, written, &["r", "p"]).await;
        return Err(LookupError::Missing(written.into(), path, help));
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
            &format!(
                "SELECT attname::text, format_type(atttypid, atttypmod), attgenerated <> '', {}
                   FROM pg_attribute a WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                base_type_sql("a.atttypid")
            ),
            &[&oid],
        )
        .await
        .map_err(|e| LookupError::Database(describe(&e)))?
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            generated: r.get(2),
            time: r.get::<_, Option<u32>>(3).and_then(TimeKind::of_oid),
        })
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
    Ok(read_only_row(client, "SELECT pg_is_in_recovery()", &[])
        .await?
        .get(0))
}

/// Whether foreign key `constraint` of `schema`.`table` is INITIALLY
/// DEFERRED, so PostgreSQL checks it at COMMIT.
pub(crate) async fn constraint_is_deferred(
    client: &Client,
    schema: &str,
    table: &str,
    constraint: &str,
) -> Result<bool, tokio_postgres::Error> {
    read_only(client, async {
        Ok(client
            .row_opt(
                "SELECT c.condeferred FROM pg_constraint c
                   JOIN pg_class t ON t.oid = c.conrelid
                   JOIN pg_namespace n ON n.oid = t.relnamespace
                  WHERE n.nspname = $1 AND t.relname = $2 AND c.conname = $3",
                &[&schema, &table, &constraint],
            )
            .await?
            .is_some_and(|row| row.get(0)))
    })
    .await
}

/// The candidate nearest to `word` (case ignored) by edit distance, when
/// near enough to be a typo: at most a third of its length, at least 1.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (strsim::osa_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The spelling that keeps the case of a dotted name PostgreSQL would fold
/// (an unquoted part with an upper-case letter: `WebhookCall_archive` gives
/// `"WebhookCall_archive"`); `None` when nothing folds.
pub(crate) fn quoted_if_folded(written: &str) -> Option<String> {
    let folds = |p: &String| !p.starts_with('"') && p.chars().any(char::is_uppercase);
    let parts = name_parts(written);
    if !parts.iter().any(folds) {
        return None;
    }
    let quoted: Vec<String> = parts
        .iter()
        .map(|p| {
            if folds(p) {
                crate::sql::quote_ident(p)
            } else {
                p.clone()
            }
        })
        .collect();
    Some(quoted.join("."))
}

/// The parts of a dotted name as written, quotes kept (`public."Session"`
/// gives `public` and `"Session"`).
fn name_parts(written: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in written.trim().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                parts.last_mut().expect("one part").push(c);
            }
            '.' if !quoted => parts.push(String::new()),
            _ => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}

/// One part of a name as PostgreSQL reads it: inside quotes exactly,
/// otherwise folded to lowercase.
fn read_part(part: &str) -> String {
    match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => part.to_lowercase(),
    }
}

/// Help for a relation name that names nothing, as `key = '...'` the user
/// can paste: an unquoted mixed-case name whose quoted form exists gets
/// `mixed-case names must be quoted`; else the nearest relation of the
/// `kinds` (pg_class.relkind) in the named schema or the search_path gets
/// `did you mean`. `None` when nothing is near. `list`: the key takes an
/// array of names (`views = ['...']`).
pub(crate) async fn relation_help(
    client: &impl GenericClient,
    key: &str,
    list: bool,
    written: &str,
    kinds: &[&str],
) -> Option<String> {
    let value = |name: &str| {
        if list {
            format!("{key} = ['{name}']")
        } else {
            format!("{key} = '{name}'")
        }
    };
    let parts = name_parts(written);
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    if let Some(quoted) = quoted_if_folded(written) {
        let exists = client
            .row_opt(
                "SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind::text = ANY ($2)",
                &[&quoted, &kinds],
            )
            .await
            .ok()
            .flatten()
            .is_some();
        if exists {
            return Some(format!(
                "mixed-case names must be quoted: {}",
                value(&quoted)
            ));
        }
    }
    let (schema, name) = match parts.as_slice() {
        [schema, name] => (read_part(schema), name.clone()),
        [name] => (String::new(), name.clone()),
        _ => return None,
    };
    let rows = client
        .rows(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind::text = ANY ($1)
                AND CASE WHEN $2 = '' THEN n.nspname = ANY (current_schemas(false)) ELSE n.nspname = $2 END
              ORDER BY 1, 2",
            &[&kinds, &schema],
        )
        .await
        .ok()?;
    let names: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let word = name.trim_matches('"');
    let found = nearest(word, names.iter().map(|(_, n)| n.as_str()))?;
    let suggestion = if schema.is_empty() {
        crate::sql::as_written(found)
    } else {
        format!(
            "{}.{}",
            crate::sql::as_written(&schema),
            crate::sql::as_written(found)
        )
    };
    Some(format!("did you mean {}?", value(&suggestion)))
}

impl TableInfo {
    /// The column a config key names, read as PostgreSQL reads an
    /// identifier: `"createdAt"` (quotes in the value) exactly; unquoted,
    /// folded to lowercase (`Created_At` is `created_at`), else the name as
    /// stored (`createdAt` is that column too, when no `createdat`). When none
    /// is found, the error says which columns there are and, for a near
    /// miss, `did you mean key = '...'`.
    pub(crate) fn named_column(&self, key: &str, written: &str) -> Result<&Column, ColumnMissing> {
        let trimmed = written.trim();
        let quoted = trimmed.len() >= 2 && trimmed.starts_with('"') && trimmed.ends_with('"');
        let found = if quoted {
            self.column(&read_part(trimmed))
        } else {
            // Folded as PostgreSQL folds it; the spelling as written only
            // when no column has the folded name (`createdAt` unquoted).
            self.column(&trimmed.to_lowercase())
                .or_else(|| self.column(trimmed))
        };
        found.ok_or_else(|| {
            let word = trimmed.trim_matches('"');
            let help = nearest(word, self.columns.iter().map(|c| c.name.as_str()))
                .map(|near| format!("did you mean {key} = '{}'?", crate::sql::as_written(near)));
            ColumnMissing {
                message: format!(
                    "table {} has no column {}; columns are: {}",
                    self.name,
                    if quoted {
                        trimmed.to_string()
                    } else {
                        format!("\"{trimmed}\"")
                    },
                    self.column_list()
                ),
                help,
            }
        })
    }
}

/// A column the config names that the table does not have.
#[derive(Debug, Clone)]
pub(crate) struct ColumnMissing {
    pub message: String,
    pub help: Option<String>,
}

/// Parses `sql` on the server without running it and returns its result
/// columns (name and type), for `check`. A Parse that reports columns needs
/// a named statement: it is made inside a read-only transaction and closed
/// before the transaction ends, so behind a pooler it never outlives the
/// backend that parsed it.
pub(crate) async fn parse_columns(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<(String, tokio_postgres::types::Type)>, tokio_postgres::Error> {
    read_only(client, async {
        #[allow(clippy::disallowed_methods)]
        let statement = client.prepare(sql).await?;
        let columns = statement
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect();
        drop(statement);
        Ok(columns)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_written_back_as_postgresql_reads_them() {
        assert_eq!(
            name_parts(r#"public."Se.ssion""#),
            ["public", r#""Se.ssion""#]
        );
        assert_eq!(read_part(r#""A""b""#), r#"A"b"#);
        assert_eq!(read_part("Created_At"), "created_at");
    }

    #[test]
    fn near_misses_within_a_third_of_the_length() {
        let names = ["webhooks", "users", "Session"];
        assert_eq!(nearest("webhook", names.iter().copied()), Some("webhooks"));
        assert_eq!(nearest("session", names.iter().copied()), Some("Session"));
        assert_eq!(nearest("orders", names.iter().copied()), None);
    }
}

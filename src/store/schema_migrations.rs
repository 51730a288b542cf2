//! The application's migrations as pgmaint knows them: the ledger of
//! pgmaint's own format (`migrations`), and for every format what pgmaint
//! last ran of each migration (`migration_runs`): the direction, the text
//! it ran, how many statements of it finished, and the error that stopped
//! it. Other formats' ledgers are the application's tables, kept by
//! `migrate::ledger`.

use tokio_postgres::GenericClient;

use crate::sql::quote_ident;
use crate::unnamed::Unnamed;

/// A row of pgmaint's own ledger.
pub(crate) struct OwnApplied {
    pub version: i64,
    pub checksum: Vec<u8>,
}

pub(crate) async fn own_applied(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<OwnApplied>, tokio_postgres::Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!("SELECT version, checksum FROM {q}.migrations ORDER BY version"),
            &[],
        )
        .await?
        .iter()
        .map(|r| OwnApplied {
            version: r.get(0),
            checksum: r.get(1),
        })
        .collect())
}

pub(crate) async fn own_insert(
    client: &impl GenericClient,
    schema: &str,
    version: i64,
    name: &str,
    checksum: &[u8],
    execution_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("INSERT INTO {q}.migrations (version, name, checksum, execution_ms) VALUES ($1, $2, $3, $4)"),
            &[&version, &name, &checksum, &execution_ms],
        )
        .await?;
    Ok(())
}

pub(crate) async fn own_delete(
    client: &impl GenericClient,
    schema: &str,
    version: i64,
) -> Result<u64, tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("DELETE FROM {q}.migrations WHERE version = $1"),
            &[&version],
        )
        .await
}

pub(crate) async fn own_set_checksum(
    client: &impl GenericClient,
    schema: &str,
    version: i64,
    checksum: &[u8],
) -> Result<u64, tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("UPDATE {q}.migrations SET checksum = $2 WHERE version = $1"),
            &[&version, &checksum],
        )
        .await
}

pub(crate) async fn own_set_time(
    client: &impl GenericClient,
    schema: &str,
    version: i64,
    execution_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("UPDATE {q}.migrations SET execution_ms = $2 WHERE version = $1"),
            &[&version, &execution_ms],
        )
        .await?;
    Ok(())
}

/// What pgmaint last ran of one migration.
#[derive(Debug, Clone)]
pub(crate) struct MigrationRun {
    pub version: i64,
    pub direction: String,
    /// `running` (its process died), `failed` or `done`.
    pub status: String,
    pub checksum: Vec<u8>,
    pub sql_text: String,
    pub statements_total: i32,
    pub statements_done: i32,
    pub error: Option<String>,
}

pub(crate) async fn runs_of(
    client: &impl GenericClient,
    schema: &str,
    ledger: &str,
) -> Result<Vec<MigrationRun>, tokio_postgres::Error> {
    let q = quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT version, direction, status, checksum, sql_text, statements_total, statements_done, error
                 FROM {q}.migration_runs WHERE ledger = $1 ORDER BY version"
            ),
            &[&ledger],
        )
        .await?
        .iter()
        .map(|r| MigrationRun {
            version: r.get(0),
            direction: r.get(1),
            status: r.get(2),
            checksum: r.get(3),
            sql_text: r.get(4),
            statements_total: r.get(5),
            statements_done: r.get(6),
            error: r.get(7),
        })
        .collect())
}

/// Starts (or resumes, from `done` statements: the caller checked that
/// they are what ran) a migration's run, `running`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_migration_run(
    client: &impl GenericClient,
    schema: &str,
    ledger: &str,
    version: i64,
    direction: &str,
    checksum: &[u8],
    sql_text: &str,
    statements_total: i32,
    done: i32,
    run_id: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!(
                "INSERT INTO {q}.migration_runs AS m (ledger, version, direction, status, checksum, sql_text, statements_total, statements_done, run_id)
                 VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8)
                 ON CONFLICT (ledger, version) DO UPDATE SET
                     statements_done = excluded.statements_done,
                     direction = excluded.direction, status = 'running', checksum = excluded.checksum,
                     sql_text = excluded.sql_text, statements_total = excluded.statements_total,
                     error = NULL, run_id = excluded.run_id, updated_at = now()"
            ),
            &[&ledger, &version, &direction, &checksum, &sql_text, &statements_total, &done, &run_id],
        )
        .await?;
    Ok(())
}

pub(crate) async fn statement_done(
    client: &impl GenericClient,
    schema: &str,
    ledger: &str,
    version: i64,
    done: i32,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("UPDATE {q}.migration_runs SET statements_done = $3, updated_at = now() WHERE ledger = $1 AND version = $2"),
            &[&ledger, &version, &done],
        )
        .await?;
    Ok(())
}

pub(crate) async fn migration_failed(
    client: &impl GenericClient,
    schema: &str,
    ledger: &str,
    version: i64,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("UPDATE {q}.migration_runs SET status = 'failed', error = $3, updated_at = now() WHERE ledger = $1 AND version = $2"),
            &[&ledger, &version, &error],
        )
        .await?;
    Ok(())
}

pub(crate) async fn migration_done(
    client: &impl GenericClient,
    schema: &str,
    ledger: &str,
    version: i64,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("UPDATE {q}.migration_runs SET status = 'done', statements_done = statements_total, error = NULL, updated_at = now() WHERE ledger = $1 AND version = $2"),
            &[&ledger, &version],
        )
        .await?;
    Ok(())
}

/// Forgets a failed or interrupted run (`migrate repair`): the next `up`
/// starts the migration from its first statement.
pub(crate) async fn forget_migration_run(
    client: &impl GenericClient,
    schema: &str,
    ledger: &str,
    version: i64,
) -> Result<u64, tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!("DELETE FROM {q}.migration_runs WHERE ledger = $1 AND version = $2 AND status <> 'done'"),
            &[&ledger, &version],
        )
        .await
}

/// Records the text a migration was applied with when pgmaint did not run
/// it (`baseline`, or `repair` accepting a changed file).
pub(crate) async fn record_applied_text(
    client: &impl GenericClient,
    schema: &str,
    ledger: &str,
    version: i64,
    checksum: &[u8],
    sql_text: &str,
    run_id: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    client
        .exec(
            &format!(
                "INSERT INTO {q}.migration_runs (ledger, version, direction, status, checksum, sql_text, statements_total, run_id)
                 VALUES ($1, $2, 'up', 'done', $3, $4, 0, $5)
                 ON CONFLICT (ledger, version) DO UPDATE SET direction = 'up', status = 'done', checksum = excluded.checksum,
                     sql_text = excluded.sql_text, error = NULL, run_id = excluded.run_id, updated_at = now()"
            ),
            &[&ledger, &version, &checksum, &sql_text, &run_id],
        )
        .await?;
    Ok(())
}

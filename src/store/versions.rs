//! The state schema's versions: `init` applies the missing steps of
//! `migrations.rs` under a lock; every other command checks the schema is
//! there and current.

use crate::unnamed::Unnamed;
use tokio_postgres::{Client, GenericClient};

use super::migrations;
use crate::sql::quote_ident;

/// Serializes concurrent `init`s.
const INIT_LOCK: i64 = 0x7067_6d69_6e69_7400;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "pgmaint's state schema \"{0}\" does not exist in this database\n  help: run `pgmaint init` to create it"
    )]
    Missing(String),
    #[error(
        "pgmaint's state schema \"{schema}\" is at version {found}; this pgmaint needs version {wanted}\n  help: run `pgmaint init` to upgrade it"
    )]
    Outdated {
        schema: String,
        found: i32,
        wanted: i32,
    },
    #[error(
        "pgmaint's state schema \"{schema}\" is at version {found}, newer than this pgmaint knows ({wanted})\n  help: upgrade pgmaint"
    )]
    TooNew {
        schema: String,
        found: i32,
        wanted: i32,
    },
    #[error("{0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for StateError {
    fn from(err: tokio_postgres::Error) -> Self {
        StateError::Database(crate::db::describe(&err))
    }
}

pub(crate) fn latest_version() -> i32 {
    migrations::STEPS.len() as i32
}

async fn current_version(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<i32>, StateError> {
    let exists: bool = client
        .row(
            "SELECT to_regclass(format('%I.schema_version', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let q = format!(
        "SELECT coalesce(max(version), 0) FROM {}.schema_version",
        quote_ident(schema)
    );
    Ok(Some(client.row(&q, &[]).await?.get(0)))
}

/// Creates or upgrades the schema. Returns the versions it applied.
pub async fn init(client: &mut Client, schema: &str) -> Result<Vec<i32>, StateError> {
    let tx = crate::db::begin(client).await?;
    // Another `init` holds the lock for as long as its steps take, which may
    // be longer than the session's lock_timeout: wait by polling, which no
    // lock_timeout cuts short, up to the statement_timeout's worth of time.
    let patience: f64 = tx
        .row(
            "SELECT extract(epoch FROM current_setting('statement_timeout')::interval)::float8",
            &[],
        )
        .await?
        .get(0);
    let patience = if patience > 0.0 { patience } else { 300.0 };
    let waiting_since = std::time::Instant::now();
    loop {
        let locked: bool = tx
            .row("SELECT pg_try_advisory_xact_lock($1)", &[&INIT_LOCK])
            .await?
            .get(0);
        if locked {
            break;
        }
        if waiting_since.elapsed().as_secs_f64() > patience {
            return Err(StateError::Database(
                "another `pgmaint init` has held the state schema's lock past statement_timeout; try again when it is done".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let quoted = quote_ident(schema);
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.schema_version (
             version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await?;
    let found = current_version(&tx, schema).await?.unwrap_or(0);
    if found > latest_version() {
        return Err(StateError::TooNew {
            schema: schema.into(),
            found,
            wanted: latest_version(),
        });
    }
    let mut applied = Vec::new();
    for (index, step) in migrations::STEPS.iter().enumerate().skip(found as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(&step.replace("{schema}", &quoted)).await?;
        tx.exec(
            &format!("INSERT INTO {quoted}.schema_version (version) VALUES ($1)"),
            &[&version],
        )
        .await?;
        applied.push(version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// Fails with a message saying to run `pgmaint init` unless the schema is
/// there and current.
pub(crate) async fn ensure_ready(client: &Client, schema: &str) -> Result<(), StateError> {
    crate::db::committed(client, async {
        match current_version(client, schema).await? {
            None => Err(StateError::Missing(schema.into())),
            Some(found) if found < latest_version() => Err(StateError::Outdated {
                schema: schema.into(),
                found,
                wanted: latest_version(),
            }),
            Some(found) if found > latest_version() => Err(StateError::TooNew {
                schema: schema.into(),
                found,
                wanted: latest_version(),
            }),
            Some(_) => Ok(()),
        }
    })
    .await
}

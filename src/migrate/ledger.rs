//! The ledger each format's own tool keeps, kept exactly as that tool
//! keeps it, so the application's migrator agrees on what is applied:
//! sqlx's `_sqlx_migrations` (its table definition, SHA-384 checksums,
//! `execution_time` in nanoseconds written after the commit, and the
//! session advisory lock sqlx takes, with the same key), and pgmaint's
//! own, in the state schema (through `store::schema_migrations`).

use tokio_postgres::GenericClient;

use super::Format;
use crate::store::schema_migrations as store;
use crate::unnamed::Unnamed;

/// sqlx's table, unqualified as sqlx writes it: the first schema of the
/// search path, as for sqlx.
const SQLX_TABLE: &str = "_sqlx_migrations";

/// A migration the ledger says is applied.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: i64,
    pub checksum: Vec<u8>,
    /// sqlx's `success = false`: a migration it left partly applied.
    pub success: bool,
}

/// Where a format keeps what is applied.
#[derive(Debug, Clone)]
pub enum Ledger {
    Sqlx,
    Pgmaint { schema: String },
}

impl Ledger {
    pub fn of(format: Format, state_schema: &str) -> Ledger {
        match format {
            Format::Sqlx => Ledger::Sqlx,
            Format::Pgmaint => Ledger::Pgmaint {
                schema: state_schema.to_string(),
            },
        }
    }

    /// Its name in messages, and the key of pgmaint's records of it.
    pub fn name(&self) -> String {
        match self {
            Ledger::Sqlx => SQLX_TABLE.to_string(),
            Ledger::Pgmaint { schema } => format!("{schema}.migrations"),
        }
    }

    /// Whether the database already has this ledger.
    pub async fn exists(&self, client: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
        let name = match self {
            Ledger::Sqlx => SQLX_TABLE.to_string(),
            Ledger::Pgmaint { schema } => format!("{}.migrations", crate::sql::quote_ident(schema)),
        };
        Ok(client
            .row("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await?
            .get(0))
    }

    /// Creates the ledger when it is missing, with the definition its
    /// tool uses (pgmaint's own is part of the state schema).
    pub async fn ensure(&self, client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
        if let Ledger::Sqlx = self {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)",
                )
                .await?;
        }
        Ok(())
    }

    /// What it says is applied, in version order; empty when it does not
    /// exist yet.
    pub async fn applied(
        &self,
        client: &impl GenericClient,
    ) -> Result<Vec<Applied>, tokio_postgres::Error> {
        if !self.exists(client).await? {
            return Ok(Vec::new());
        }
        match self {
            Ledger::Sqlx => Ok(client
                .rows(
                    &format!(
                        "SELECT version, checksum, success FROM {SQLX_TABLE} ORDER BY version"
                    ),
                    &[],
                )
                .await?
                .iter()
                .map(|r| Applied {
                    version: r.get(0),
                    checksum: r.get(1),
                    success: r.get(2),
                })
                .collect()),
            Ledger::Pgmaint { schema } => Ok(store::own_applied(client, schema)
                .await?
                .into_iter()
                .map(|a| Applied {
                    version: a.version,
                    checksum: a.checksum,
                    success: true,
                })
                .collect()),
        }
    }

    /// Records an applied migration, inside the migration's own
    /// transaction when it has one. sqlx writes `execution_time` -1 here
    /// and the real time after the commit (`record_time`).
    pub async fn record_up(
        &self,
        client: &impl GenericClient,
        version: i64,
        name: &str,
        checksum: &[u8],
    ) -> Result<(), tokio_postgres::Error> {
        match self {
            Ledger::Sqlx => {
                client
                    .exec(
                        &format!("INSERT INTO {SQLX_TABLE} ( version, description, success, checksum, execution_time ) VALUES ( $1, $2, TRUE, $3, -1 )"),
                        &[&version, &name, &checksum],
                    )
                    .await?;
            }
            Ledger::Pgmaint { schema } => {
                store::own_insert(client, schema, version, name, checksum, -1).await?
            }
        }
        Ok(())
    }

    /// The time the migration took, written after its commit as sqlx does.
    pub async fn record_time(
        &self,
        client: &impl GenericClient,
        version: i64,
        elapsed: std::time::Duration,
    ) -> Result<(), tokio_postgres::Error> {
        match self {
            Ledger::Sqlx => {
                client
                    .exec(
                        &format!("UPDATE {SQLX_TABLE} SET execution_time = $1 WHERE version = $2"),
                        &[&(elapsed.as_nanos() as i64), &version],
                    )
                    .await?;
            }
            Ledger::Pgmaint { schema } => {
                store::own_set_time(client, schema, version, elapsed.as_millis() as i64).await?
            }
        }
        Ok(())
    }

    /// Removes a reverted migration's row (or, in `repair`, a row sqlx
    /// left with `success = false`).
    pub async fn remove(
        &self,
        client: &impl GenericClient,
        version: i64,
    ) -> Result<u64, tokio_postgres::Error> {
        match self {
            Ledger::Sqlx => {
                client
                    .exec(
                        &format!("DELETE FROM {SQLX_TABLE} WHERE version = $1"),
                        &[&version],
                    )
                    .await
            }
            Ledger::Pgmaint { schema } => store::own_delete(client, schema, version).await,
        }
    }

    /// Accepts a changed file (`repair`).
    pub async fn set_checksum(
        &self,
        client: &impl GenericClient,
        version: i64,
        checksum: &[u8],
    ) -> Result<u64, tokio_postgres::Error> {
        match self {
            Ledger::Sqlx => {
                client
                    .exec(
                        &format!("UPDATE {SQLX_TABLE} SET checksum = $2 WHERE version = $1"),
                        &[&version, &checksum],
                    )
                    .await
            }
            Ledger::Pgmaint { schema } => {
                store::own_set_checksum(client, schema, version, checksum).await
            }
        }
    }

    /// The session advisory lock the format's tool takes while it
    /// migrates: sqlx's key is `0x3d32ad9e * crc32(current_database())`.
    pub fn lock_key(&self, database: &str) -> i64 {
        match self {
            Ledger::Sqlx => 0x3d32ad9e * i64::from(crc32fast::hash(database.as_bytes())),
            Ledger::Pgmaint { schema } => {
                0x7067_6d00_0000_0000
                    | i64::from(crc32fast::hash(format!("{database}\0{schema}").as_bytes()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_is_sqlx_s() {
        // sqlx: 0x3d32ad9e * CRC-32/ISO-HDLC("postgres") as i64.
        assert_eq!(
            crc32fast::hash(b"123456789"),
            0xCBF4_3926,
            "CRC-32/ISO-HDLC check value"
        );
        assert_eq!(
            Ledger::Sqlx.lock_key("postgres"),
            0x3d32ad9e * i64::from(crc32fast::hash(b"postgres"))
        );
    }
}

//! drizzle-orm's `drizzle.__drizzle_migrations`, kept as its migrator
//! keeps it: a row per applied migration with the SHA-256 (hex) of its
//! file and its journal entry's `when` as `created_at`.

use tokio_postgres::GenericClient;

use super::Applied;
use crate::migrate::Migration;
use crate::migrate::source::drizzle_hash;
use crate::unnamed::Unnamed;

pub(super) const TABLE: &str = r#""drizzle"."__drizzle_migrations""#;
pub(super) const REGCLASS: &str = "drizzle.__drizzle_migrations";

/// drizzle-orm's own statements (its pg dialect's `migrate`).
pub(super) const DEFINITION: &str = r#"CREATE SCHEMA IF NOT EXISTS "drizzle";
CREATE TABLE IF NOT EXISTS "drizzle"."__drizzle_migrations" (
    id SERIAL PRIMARY KEY,
    hash text NOT NULL,
    created_at bigint
)"#;

pub(super) async fn applied(
    client: &impl GenericClient,
    known: &[Migration],
) -> Result<Vec<Applied>, tokio_postgres::Error> {
    Ok(client
        .rows(
            &format!("SELECT created_at, hash FROM {TABLE} WHERE created_at IS NOT NULL ORDER BY created_at, id"),
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let version: i64 = r.get(0);
            let hash: String = r.get(1);
            Applied {
                version,
                written: known
                    .iter()
                    .find(|m| m.version == version)
                    .map(|m| m.written.clone())
                    .unwrap_or_else(|| version.to_string()),
                checksum: Some(hash.into_bytes()),
                success: true,
            }
        })
        .collect())
}

pub(super) async fn insert(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            &format!(r#"INSERT INTO {TABLE} ("hash", "created_at") VALUES ($1, $2)"#),
            &[&drizzle_hash(&m.up.text), &m.version],
        )
        .await?;
    Ok(())
}

pub(super) async fn delete(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            &format!("DELETE FROM {TABLE} WHERE created_at = $1"),
            &[&m.version],
        )
        .await?;
    Ok(())
}

pub(super) async fn set_hash(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            &format!("UPDATE {TABLE} SET hash = $1 WHERE created_at = $2"),
            &[&drizzle_hash(&m.up.text), &m.version],
        )
        .await?;
    Ok(())
}

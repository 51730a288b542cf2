//! The ledger each format's own tool keeps, kept exactly as that tool
//! keeps it, so the application's migrator agrees on what is applied:
//! - sqlx's `_sqlx_migrations` (its table definition, SHA-384 checksums,
//!   `execution_time` in nanoseconds written after the commit, and the
//!   session advisory lock sqlx takes, with the same key);
//! - dbmate's `schema_migrations (version varchar)`, one row per applied
//!   version as the file name writes it (dbmate keeps no checksum and
//!   takes no lock);
//! - golang-migrate's one-row `schema_migrations (version bigint, dirty
//!   boolean)`: the last applied version, dirty while a migration runs
//!   outside a transaction (and after one failed), with golang-migrate's
//!   advisory lock key;
//! - Flyway's `flyway_schema_history` (`flyway`) and drizzle-orm's
//!   `drizzle.__drizzle_migrations` (`drizzle`);
//! - pgmaint's own, in the state schema (through `store::schema_migrations`).
//!
//! Every table but drizzle's is named unqualified, as these tools name it
//! by default: the first schema of the search path.

pub(crate) mod app;
mod drizzle;
mod flyway;

use tokio_postgres::GenericClient;

use super::{Format, Migration};
use crate::store::schema_migrations as store;
use crate::unnamed::Unnamed;

const SQLX_TABLE: &str = "_sqlx_migrations";
const SCHEMA_MIGRATIONS: &str = "schema_migrations";

/// A migration the ledger says is applied.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: i64,
    /// The version as the ledger writes it.
    pub written: String,
    /// The checksum the ledger keeps; `None` for ledgers that keep none
    /// (dbmate, golang-migrate), where pgmaint's own record of the text it
    /// ran tells a changed file.
    pub checksum: Option<Vec<u8>>,
    /// sqlx's `success = false`, golang-migrate's `dirty`: a migration its
    /// tool left partly applied.
    pub success: bool,
}

/// Where a format keeps what is applied.
#[derive(Debug, Clone)]
pub enum Ledger {
    Sqlx,
    Dbmate,
    GolangMigrate,
    Flyway,
    Drizzle,
    Pgmaint { schema: String },
}

impl Ledger {
    pub fn of(format: Format, state_schema: &str) -> Ledger {
        match format {
            Format::Sqlx => Ledger::Sqlx,
            Format::Dbmate => Ledger::Dbmate,
            Format::GolangMigrate => Ledger::GolangMigrate,
            Format::Flyway => Ledger::Flyway,
            Format::Drizzle => Ledger::Drizzle,
            Format::Pgmaint => Ledger::Pgmaint {
                schema: state_schema.to_string(),
            },
        }
    }

    /// The format whose ledger this database already has, if one: `Err`
    /// names the ledgers when it has several.
    pub async fn found(
        client: &impl GenericClient,
        state_schema: &str,
    ) -> Result<Option<Format>, String> {
        let mut found = Vec::new();
        let row = client
            .row(
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL,
                        to_regclass('schema_migrations') IS NOT NULL,
                        EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('schema_migrations') AND attname = 'dirty' AND NOT attisdropped),
                        to_regclass($1) IS NOT NULL,
                        to_regclass($2) IS NOT NULL",
                &[&flyway::TABLE, &drizzle::REGCLASS],
            )
            .await
            .map_err(|e| crate::db::describe(&e))?;
        if row.get::<_, bool>(0) {
            found.push(Format::Sqlx);
        }
        if row.get::<_, bool>(1) {
            found.push(if row.get::<_, bool>(2) {
                Format::GolangMigrate
            } else {
                Format::Dbmate
            });
        }
        if row.get::<_, bool>(3) {
            found.push(Format::Flyway);
        }
        if row.get::<_, bool>(4) {
            found.push(Format::Drizzle);
        }
        let own = Ledger::of(Format::Pgmaint, state_schema);
        if own
            .exists(client)
            .await
            .map_err(|e| crate::db::describe(&e))?
            && !store::own_applied(client, state_schema)
                .await
                .map_err(|e| crate::db::describe(&e))?
                .is_empty()
        {
            found.push(Format::Pgmaint);
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(format!(
                "this database keeps several migration ledgers ({})\n  help: set [migrations] format to say which one these files belong to",
                many.iter()
                    .map(|f| Ledger::of(*f, state_schema).name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Its name in messages, and the key of pgmaint's records of it.
    pub fn name(&self) -> String {
        match self {
            Ledger::Sqlx => SQLX_TABLE.to_string(),
            Ledger::Dbmate => format!("{SCHEMA_MIGRATIONS} (dbmate)"),
            Ledger::GolangMigrate => format!("{SCHEMA_MIGRATIONS} (golang-migrate)"),
            Ledger::Flyway => flyway::TABLE.to_string(),
            Ledger::Drizzle => drizzle::REGCLASS.to_string(),
            Ledger::Pgmaint { schema } => format!("{schema}.migrations"),
        }
    }

    pub(crate) fn table(&self) -> String {
        match self {
            Ledger::Sqlx => SQLX_TABLE.to_string(),
            Ledger::Dbmate | Ledger::GolangMigrate => SCHEMA_MIGRATIONS.to_string(),
            Ledger::Flyway => flyway::TABLE.to_string(),
            Ledger::Drizzle => drizzle::REGCLASS.to_string(),
            Ledger::Pgmaint { schema } => format!("{}.migrations", crate::sql::quote_ident(schema)),
        }
    }

    /// Whether the database already has this ledger.
    pub async fn exists(&self, client: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
        Ok(client
            .row("SELECT to_regclass($1) IS NOT NULL", &[&self.table()])
            .await?
            .get(0))
    }

    /// Creates the ledger when it is missing, with the definition its
    /// tool uses (pgmaint's own is part of the state schema).
    pub async fn ensure(&self, client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
        let definition = match self {
            Ledger::Sqlx => {
                "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)"
            }
            Ledger::Dbmate => {
                "create table if not exists schema_migrations (version varchar primary key)"
            }
            Ledger::GolangMigrate => {
                "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint not null primary key, dirty boolean not null)"
            }
            Ledger::Flyway => {
                if self.exists(client).await? {
                    return Ok(());
                }
                flyway::DEFINITION
            }
            Ledger::Drizzle => drizzle::DEFINITION,
            Ledger::Pgmaint { .. } => return Ok(()),
        };
        client.batch_execute(definition).await
    }

    /// The checksum this ledger keeps of a script's text (`None`: it keeps
    /// none): SHA-384 of the bytes for sqlx and pgmaint's own, Flyway's
    /// CRC32, drizzle's hex SHA-256.
    pub fn checksum(&self, text: &str) -> Option<Vec<u8>> {
        match self {
            Ledger::Sqlx | Ledger::Pgmaint { .. } => Some(super::source::sha384(text)),
            Ledger::Flyway => Some(flyway::checksum(text)),
            Ledger::Drizzle => Some(super::source::drizzle_hash(text).into_bytes()),
            Ledger::Dbmate | Ledger::GolangMigrate => None,
        }
    }

    /// What it says is applied, in version order; empty when it does not
    /// exist yet. golang-migrate keeps one version: every migration of
    /// `known` up to it is applied.
    pub async fn applied(
        &self,
        client: &impl GenericClient,
        known: &[Migration],
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
                    written: r.get::<_, i64>(0).to_string(),
                    checksum: Some(r.get(1)),
                    success: r.get(2),
                })
                .collect()),
            Ledger::Dbmate => Ok(client
                .rows(
                    &format!("SELECT version::text FROM {SCHEMA_MIGRATIONS}"),
                    &[],
                )
                .await?
                .iter()
                .filter_map(|r| {
                    let written: String = r.get(0);
                    written.parse::<i64>().ok().map(|version| Applied {
                        version,
                        written: written.clone(),
                        checksum: None,
                        success: true,
                    })
                })
                .collect()),
            Ledger::GolangMigrate => {
                let Some(row) = client
                    .row_opt(
                        &format!("SELECT version, dirty FROM {SCHEMA_MIGRATIONS} LIMIT 1"),
                        &[],
                    )
                    .await?
                else {
                    return Ok(Vec::new());
                };
                let (current, dirty): (i64, bool) = (row.get(0), row.get(1));
                let mut applied: Vec<Applied> = known
                    .iter()
                    .filter(|m| m.version < current)
                    .map(|m| Applied {
                        version: m.version,
                        written: m.written.clone(),
                        checksum: None,
                        success: true,
                    })
                    .collect();
                if current >= 0 {
                    applied.push(Applied {
                        version: current,
                        written: current.to_string(),
                        checksum: None,
                        success: !dirty,
                    });
                }
                Ok(applied)
            }
            Ledger::Flyway => flyway::applied(client, known).await,
            Ledger::Drizzle => drizzle::applied(client, known).await,
            Ledger::Pgmaint { schema } => Ok(store::own_applied(client, schema)
                .await?
                .into_iter()
                .map(|a| Applied {
                    version: a.version,
                    written: a.version.to_string(),
                    checksum: Some(a.checksum),
                    success: true,
                })
                .collect()),
        }
    }

    /// Before a migration runs outside a transaction: golang-migrate's
    /// ledger says the version it goes to (`target`), dirty, as
    /// golang-migrate does; Flyway's and sqlx's get a failed row
    /// (`success` false) for an up, which the finished run's row replaces
    /// (what a Flyway run that stopped there leaves, and what makes sqlx
    /// refuse to start the file over).
    pub async fn mark_dirty(
        &self,
        client: &impl GenericClient,
        m: &Migration,
        up: bool,
        target: Option<i64>,
    ) -> Result<(), tokio_postgres::Error> {
        match self {
            Ledger::GolangMigrate => set_golang_version(client, target, true).await?,
            Ledger::Flyway if up => {
                flyway::remove_failed(client, m).await?;
                flyway::insert(client, m, flyway::Mark::Failed).await?;
            }
            // sqlx itself then refuses to run the file again from its
            // start (its "dirty" migration) while pgmaint resumes it.
            Ledger::Sqlx if up => {
                sqlx_remove_failed(client, m).await?;
                client
                    .exec(
                        &format!("INSERT INTO {SQLX_TABLE} ( version, description, success, checksum, execution_time ) VALUES ( $1, $2, FALSE, $3, -1 )"),
                        &[&m.version, &m.name, &m.up.checksum()],
                    )
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Records an applied migration, inside the migration's own
    /// transaction when it has one. sqlx writes `execution_time` -1 here
    /// and the real time after the commit (`record_time`).
    pub async fn record_up(
        &self,
        client: &impl GenericClient,
        m: &Migration,
    ) -> Result<(), tokio_postgres::Error> {
        let checksum = m.up.checksum();
        match self {
            Ledger::Flyway => {
                flyway::remove_failed(client, m).await?;
                flyway::insert(client, m, flyway::Mark::Applied).await?;
            }
            Ledger::Drizzle => drizzle::insert(client, m).await?,
            Ledger::Sqlx => {
                sqlx_remove_failed(client, m).await?;
                client
                    .exec(
                        &format!("INSERT INTO {SQLX_TABLE} ( version, description, success, checksum, execution_time ) VALUES ( $1, $2, TRUE, $3, -1 )"),
                        &[&m.version, &m.name, &checksum],
                    )
                    .await?;
            }
            Ledger::Dbmate => {
                client
                    .exec(
                        &format!("insert into {SCHEMA_MIGRATIONS} (version) values ($1)"),
                        &[&m.written],
                    )
                    .await?;
            }
            Ledger::GolangMigrate => set_golang_version(client, Some(m.version), false).await?,
            Ledger::Pgmaint { schema } => {
                store::own_insert(client, schema, m.version, &m.name, &checksum, -1).await?
            }
        }
        Ok(())
    }

    /// The time the migration took, written after its commit as sqlx does
    /// (dbmate and golang-migrate keep none).
    pub async fn record_time(
        &self,
        client: &impl GenericClient,
        m: &Migration,
        elapsed: std::time::Duration,
    ) -> Result<(), tokio_postgres::Error> {
        let version = m.version;
        match self {
            Ledger::Flyway => {
                flyway::set_time(
                    client,
                    m,
                    i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
                )
                .await?
            }
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
            Ledger::Dbmate | Ledger::GolangMigrate | Ledger::Drizzle => {}
        }
        Ok(())
    }

    /// Records a reverted migration: its row removed, or golang-migrate's
    /// version set back to `previous` (none: the table emptied).
    pub async fn record_down(
        &self,
        client: &impl GenericClient,
        m: &Migration,
        previous: Option<i64>,
    ) -> Result<(), tokio_postgres::Error> {
        match self {
            Ledger::Sqlx => {
                client
                    .exec(
                        &format!("DELETE FROM {SQLX_TABLE} WHERE version = $1"),
                        &[&m.version],
                    )
                    .await?;
            }
            Ledger::Dbmate => {
                client
                    .exec(
                        &format!("delete from {SCHEMA_MIGRATIONS} where version = $1"),
                        &[&m.written],
                    )
                    .await?;
            }
            Ledger::GolangMigrate => set_golang_version(client, previous, false).await?,
            // Flyway keeps its history: the revert is a row of its own.
            Ledger::Flyway => flyway::insert(client, m, flyway::Mark::Reverted).await?,
            Ledger::Drizzle => drizzle::delete(client, m).await?,
            Ledger::Pgmaint { schema } => {
                store::own_delete(client, schema, m.version).await?;
            }
        }
        Ok(())
    }

    /// `repair` of a migration its tool left partly applied: sqlx's
    /// `success = false` row removed, golang-migrate's dirty version set
    /// back to `previous`, clean. The migration is pending again.
    pub async fn clear_partial(
        &self,
        client: &impl GenericClient,
        m: &Migration,
        previous: Option<i64>,
    ) -> Result<(), tokio_postgres::Error> {
        match self {
            Ledger::Sqlx => {
                client
                    .exec(
                        &format!("DELETE FROM {SQLX_TABLE} WHERE version = $1 AND NOT success"),
                        &[&m.version],
                    )
                    .await?;
            }
            Ledger::GolangMigrate => set_golang_version(client, previous, false).await?,
            Ledger::Flyway => flyway::remove_failed(client, m).await?,
            Ledger::Dbmate | Ledger::Drizzle | Ledger::Pgmaint { .. } => {}
        }
        Ok(())
    }

    /// Accepts a changed file (`repair`): the ledger's checksum, where it
    /// keeps one.
    pub async fn set_checksum(
        &self,
        client: &impl GenericClient,
        m: &Migration,
    ) -> Result<(), tokio_postgres::Error> {
        let (version, checksum) = (m.version, m.up.checksum());
        match self {
            Ledger::Flyway => flyway::set_checksum(client, m).await?,
            Ledger::Drizzle => drizzle::set_hash(client, m).await?,
            Ledger::Sqlx => {
                client
                    .exec(
                        &format!("UPDATE {SQLX_TABLE} SET checksum = $2 WHERE version = $1"),
                        &[&version, &checksum],
                    )
                    .await?;
            }
            Ledger::Pgmaint { schema } => {
                store::own_set_checksum(client, schema, version, &checksum).await?;
            }
            Ledger::Dbmate | Ledger::GolangMigrate => {}
        }
        Ok(())
    }

    /// The session advisory lock the format's tool takes while it
    /// migrates: sqlx's key is `0x3d32ad9e * crc32(current_database())`;
    /// golang-migrate's `crc32(schema \0 table \0 database) * 1486364155`
    /// in 32 bits; Flyway's "Flyway" in ASCII plus the Java hash of the
    /// quoted table name. dbmate and drizzle take none; pgmaint then takes
    /// a key of its own, so two pgmaints never race.
    pub fn lock_key(&self, database: &str, schema: &str) -> i64 {
        match self {
            Ledger::Sqlx => 0x3d32ad9e * i64::from(crc32fast::hash(database.as_bytes())),
            Ledger::GolangMigrate => {
                let names = format!("{schema}\0{SCHEMA_MIGRATIONS}\0{database}");
                i64::from(crc32fast::hash(names.as_bytes()).wrapping_mul(1_486_364_155))
            }
            Ledger::Flyway => flyway::lock_key(schema),
            Ledger::Dbmate | Ledger::Drizzle => {
                let tool = if let Ledger::Dbmate = self {
                    "dbmate"
                } else {
                    "drizzle"
                };
                0x7067_6d00_0000_0000
                    | i64::from(crc32fast::hash(
                        format!("{tool}\0{database}\0{schema}").as_bytes(),
                    ))
            }
            Ledger::Pgmaint { schema } => {
                0x7067_6d00_0000_0000
                    | i64::from(crc32fast::hash(format!("{database}\0{schema}").as_bytes()))
            }
        }
    }
}

/// sqlx's row of a migration that stopped part-way.
async fn sqlx_remove_failed(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            &format!("DELETE FROM {SQLX_TABLE} WHERE version = $1 AND NOT success"),
            &[&m.version],
        )
        .await?;
    Ok(())
}

/// golang-migrate's SetVersion: the table emptied, then the one row.
async fn set_golang_version(
    client: &impl GenericClient,
    version: Option<i64>,
    dirty: bool,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("TRUNCATE {SCHEMA_MIGRATIONS}"))
        .await?;
    if let Some(version) = version {
        client
            .exec(
                &format!("INSERT INTO {SCHEMA_MIGRATIONS} (version, dirty) VALUES ($1, $2)"),
                &[&version, &dirty],
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_the_tools_own() {
        assert_eq!(
            crc32fast::hash(b"123456789"),
            0xCBF4_3926,
            "CRC-32/ISO-HDLC check value"
        );
        // sqlx: 0x3d32ad9e * CRC-32/ISO-HDLC("postgres") as i64.
        assert_eq!(
            Ledger::Sqlx.lock_key("postgres", "public"),
            0x3d32ad9e * i64::from(crc32fast::hash(b"postgres"))
        );
        // golang-migrate: GenerateAdvisoryLockId(db, schema, table), a uint32.
        let key = Ledger::GolangMigrate.lock_key("app", "public");
        assert!((0..=i64::from(u32::MAX)).contains(&key));
        assert_eq!(
            key,
            i64::from(
                crc32fast::hash(b"public\0schema_migrations\0app").wrapping_mul(1_486_364_155)
            )
        );
    }
}

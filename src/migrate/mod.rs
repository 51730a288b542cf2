//! The application's own schema migrations, run safely: read in the format
//! the application already uses (`source`), recorded in that tool's own
//! ledger (`ledger`) so its migrator agrees on what is applied, applied
//! statement by statement under `lock_timeout` with the shared retry
//! policy (`apply`), with the data a down drops backed up first (`drops`),
//! and every run in the audit trail. pgmaint is the executor and auditor
//! of the migrations a team already has, not another migrator.
//!
//! Formats: sqlx (simple and reversible files, `-- no-transaction`,
//! `down_dir` for rollbacks kept elsewhere), dbmate, golang-migrate,
//! Flyway (`V`, `U` and `R__` files), drizzle-kit (its journal) and
//! pgmaint's own; and `command`, the application's own migrator (knex,
//! Rails, Django, Prisma) run under the same lock, blocker check and audit
//! (`command`, `command_runs`), its schema changes found by comparing the
//! catalog before and after (`catalog`), its ledger read (`ledger::app`).

pub(crate) mod apply;
pub(crate) mod blockers;
pub(crate) mod catalog;
pub(crate) mod catalog_copy;
pub(crate) mod command;
pub(crate) mod command_runs;
pub(crate) mod command_trace;
pub(crate) mod drift;
pub(crate) mod drops;
pub(crate) mod engine;
pub(crate) mod estimate;
pub(crate) mod ledger;
pub(crate) mod lint;
pub(crate) mod new;
pub(crate) mod preview;
pub(crate) mod reversibility;
pub(crate) mod runs;
pub(crate) mod scratch;
pub(crate) mod source;
pub(crate) mod statements;
pub(crate) mod status;
pub(crate) mod trace;

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use source::{Migration, Script};

/// A migration format: how files are named and split, and which ledger
/// keeps what is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// sqlx-cli: `<version>_<name>.sql` or `.up.sql` + `.down.sql`;
    /// `_sqlx_migrations`.
    Sqlx,
    /// pgmaint's own: `<version>_<name>.up.sql` + `.down.sql` with an
    /// optional `-- pgmaint: transaction=none depends=0007` header; the
    /// state schema's `migrations` table.
    Pgmaint,
    /// dbmate: `<version>_<name>.sql` with `-- migrate:up` and
    /// `-- migrate:down` blocks (`transaction:false`); `schema_migrations
    /// (version varchar)`, one row per applied version as written.
    Dbmate,
    /// golang-migrate: `<version>_<title>.up.sql` + `.down.sql`; the
    /// one-row `schema_migrations (version bigint, dirty boolean)`.
    GolangMigrate,
    /// Flyway: `V<version>__<description>.sql`, `U<version>__` undo files,
    /// `R__<description>.sql` repeatables; `flyway_schema_history` with
    /// Flyway's CRC32 checksums.
    Flyway,
    /// drizzle-kit: `meta/_journal.json` listing `<NNNN>_<tag>.sql` files
    /// split at `--> statement-breakpoint`; `drizzle.__drizzle_migrations`
    /// with the SHA-256 of each file.
    Drizzle,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Sqlx,
        Format::Dbmate,
        Format::GolangMigrate,
        Format::Flyway,
        Format::Drizzle,
        Format::Pgmaint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Sqlx => "sqlx",
            Format::Pgmaint => "pgmaint",
            Format::Dbmate => "dbmate",
            Format::GolangMigrate => "golang-migrate",
            Format::Flyway => "flyway",
            Format::Drizzle => "drizzle",
        }
    }

    /// Whether a migration of this format has a down unless it says
    /// otherwise: `require_down`'s default.
    pub(crate) fn downs_expected(self, reversible_files: bool) -> bool {
        match self {
            // Flyway's undo files are optional (a Teams feature); drizzle
            // has no downs.
            Format::Sqlx | Format::Flyway => reversible_files,
            Format::Drizzle => false,
            Format::Pgmaint | Format::Dbmate | Format::GolangMigrate => true,
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// `format = "..."` for each of `formats`, joined with "or".
    pub(crate) fn settings(formats: &[Format]) -> String {
        formats
            .iter()
            .map(|f| format!("format = \"{}\"", f.as_str()))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// What to do about sessions that hold a migration's tables in an open
/// transaction when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blockers {
    /// Change nothing and say who they are (the default).
    Stop,
    /// Wait up to `blockers_wait` for them to finish, then stop.
    Wait,
}

/// `[migrations]`, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The migrations' folder (relative paths are the config file's).
    pub dir: PathBuf,
    /// `None`: found from the files and the ledgers (`format = "auto"`),
    /// or the application's own migrator when `command` is set.
    pub format: Option<Format>,
    /// `format = "command"`: the application's migrator and its ledger,
    /// instead of files.
    pub command: Option<command::CommandSettings>,
    /// Simple sqlx migrations' rollbacks, `<version>_<name>_down.sql`.
    pub down_dir: Option<PathBuf>,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    /// `None`: the format's default (`Format::downs_expected`).
    pub require_down: Option<bool>,
    /// Versions marked irreversible in the config.
    pub irreversible: Vec<String>,
    pub blockers: Blockers,
    pub blockers_wait: Duration,
    /// Tries after a busy lock, per statement (or per transactional file).
    pub max_retries: u32,
    /// Where a down's dropped data is backed up.
    pub backup_dir: PathBuf,
    /// A statement that locks out writes on a table bigger than this (in
    /// bytes, with its indexes and TOAST) needs `--yes` (`confirm: true`).
    pub confirm_above: u64,
    /// Lint rules silenced for every file (`[migrations] lint_exclude`).
    pub lint_exclude: Vec<String>,
    /// Whether the config has a `[migrations]` table (`check` then says
    /// when the folder cannot be read).
    pub configured: bool,
}

impl Settings {
    /// What every migration statement runs under.
    pub(crate) fn timeouts(&self) -> crate::db::SessionTimeouts {
        crate::db::SessionTimeouts {
            lock_timeout: crate::duration::Duration(self.lock_timeout),
            statement_timeout: crate::duration::Duration(self.statement_timeout),
            time_zone: None,
        }
    }

    /// The settings of a config without `[migrations]`, in `base`.
    pub fn defaults(base: &std::path::Path, backup_dir: PathBuf) -> Settings {
        Settings {
            dir: base.join("migrations"),
            format: None,
            command: None,
            down_dir: None,
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(3600),
            require_down: None,
            irreversible: Vec::new(),
            blockers: Blockers::Stop,
            blockers_wait: Duration::from_secs(30),
            max_retries: 10,
            backup_dir,
            confirm_above: 1 << 30,
            lint_exclude: Vec::new(),
            configured: false,
        }
    }
}

/// Why a migration command stopped before or while changing anything.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The files or the config cannot be used; nothing was changed.
    #[error("{0}")]
    Files(String),
    /// The ledger and the files disagree, or the command was asked for
    /// something the state forbids; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A statement failed; what ran before it is recorded.
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(err: tokio_postgres::Error) -> Self {
        MigrateError::Database(crate::db::describe(&err))
    }
}

impl From<crate::store::StateError> for MigrateError {
    fn from(err: crate::store::StateError) -> Self {
        match err {
            crate::store::StateError::Database(text) => MigrateError::Database(text),
            other => MigrateError::Refused(other.to_string()),
        }
    }
}

impl From<crate::backup::BackupError> for MigrateError {
    fn from(err: crate::backup::BackupError) -> Self {
        MigrateError::Failed(format!("backing up what the down drops: {err}"))
    }
}

/// `"1GB"`, `"512 MB"`, `"10kB"`, `"100"` (bytes) as a number of bytes,
/// with PostgreSQL's units (powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim();
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_postgresql_writes_them() {
        assert_eq!(super::parse_size("1GB"), Some(1 << 30));
        assert_eq!(super::parse_size("512 MB"), Some(512 << 20));
        assert_eq!(super::parse_size("100"), Some(100));
        assert_eq!(super::parse_size("1.5GB"), None);
        assert_eq!(super::parse_size("1 parsec"), None);
    }
}

//! The ledgers of the application migrators `format = "command"` runs,
//! read as those tools write them (pgmaint never writes them: the tool
//! does, as it runs): knex's `knex_migrations (name, batch,
//! migration_time)` and its `knex_migrations_lock`, Rails's
//! `schema_migrations (version)`, Django's `django_migrations (app, name,
//! applied)`, Prisma's `_prisma_migrations` (a row neither finished nor
//! rolled back is a failed migration). Each is named unqualified, as the
//! tools do by default (the first schema of the search path), or where
//! `[migrations.command] ledger_table` says (knex's `tableName` and
//! `schemaName`, its lock table `<table>_lock` beside it; Rails's
//! `schema_migrations_table_name`).

use std::path::Path;

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::unnamed::Unnamed;

/// Which migrator's ledger to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppLedger {
    Knex,
    Rails,
    Django,
    Prisma,
}

/// What one ledger row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    Applied,
    /// Prisma: started, neither finished nor rolled back.
    Failed,
    /// Prisma: marked rolled back (`prisma migrate resolve --rolled-back`).
    RolledBack,
}

/// One row of the ledger, as the tool wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppEntry {
    /// The ledger's key as written: knex's file name, Rails's version,
    /// Django's `app.name`, Prisma's migration name.
    pub version: String,
    /// The readable part: the name after the timestamp, Django's app.
    pub name: String,
    pub status: AppState,
    pub applied_at: Option<String>,
    /// knex's batch (what `migrate:rollback` reverts together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<i32>,
    /// Prisma's logs of a failed migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

/// The ledger's rows and what else its tool keeps.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppLedgerView {
    pub exists: bool,
    pub entries: Vec<AppEntry>,
    /// knex's `knex_migrations_lock.is_locked` (a migrator that died
    /// holding it leaves it set, and knex then waits forever).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

impl AppLedgerView {
    /// Nothing failed and no lock is left behind: what `status
    /// --exit-code` passes with (pending is known only to the tool).
    pub fn is_clean(&self) -> bool {
        self.locked != Some(true) && self.entries.iter().all(|e| e.status != AppState::Failed)
    }
}

impl AppLedger {
    pub const ALL: [AppLedger; 4] = [
        AppLedger::Knex,
        AppLedger::Rails,
        AppLedger::Django,
        AppLedger::Prisma,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppLedger::Knex => "knex",
            AppLedger::Rails => "rails",
            AppLedger::Django => "django",
            AppLedger::Prisma => "prisma",
        }
    }

    pub fn from_name(name: &str) -> Option<AppLedger> {
        AppLedger::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The table as the tool names it by default.
    pub fn table(self) -> &'static str {
        match self {
            AppLedger::Knex => "knex_migrations",
            AppLedger::Rails => "schema_migrations",
            AppLedger::Django => "django_migrations",
            AppLedger::Prisma => "_prisma_migrations",
        }
    }

    /// Whether the tool lets its ledger be renamed: Django's and Prisma's
    /// names are fixed.
    pub fn can_be_renamed(self) -> bool {
        matches!(self, AppLedger::Knex | AppLedger::Rails)
    }

    /// The table as written in `[migrations.command] ledger_table`, else
    /// the tool's default.
    pub fn table_or(self, configured: Option<&str>) -> &str {
        configured.unwrap_or(self.table())
    }

    /// Its name in messages: `knex_migrations (knex)`.
    pub fn name(self, configured: Option<&str>) -> String {
        format!("{} ({})", self.table_or(configured), self.as_str())
    }

    /// The ledger and the table its tool keeps beside it (knex's lock,
    /// Rails's `ar_internal_metadata`), each as the catalog names it
    /// (`"public"."knex_migrations"`), or `None` while it does not exist.
    pub async fn tables(
        self,
        client: &impl GenericClient,
        configured: Option<&str>,
    ) -> Result<AppTables, tokio_postgres::Error> {
        const NAMED: &str = "SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1))";
        let ledger: Option<String> = client
            .row(NAMED, &[&self.table_or(configured)])
            .await?
            .get(0);
        let beside = match (self, &ledger) {
            (_, None) | (AppLedger::Django | AppLedger::Prisma, _) => None,
            // knex names its lock `<tableName>_lock`, in the same schema.
            (AppLedger::Knex, Some(ledger)) => client
                .row(
                    "SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                              WHERE c.oid = (SELECT to_regclass(format('%I.%I', n2.nspname, c2.relname || '_lock')) FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace WHERE c2.oid = to_regclass($1)))",
                    &[ledger],
                )
                .await?
                .get(0),
            (AppLedger::Rails, Some(_)) => client
                .row(NAMED, &[&"ar_internal_metadata"])
                .await?
                .get(0),
        };
        Ok(AppTables { ledger, beside })
    }

    /// The tool's own command for what pgmaint leaves to it (`migrate
    /// new`, `repair`, `baseline`).
    pub fn tool_command(self, what: ToolTask) -> &'static str {
        match (self, what) {
            (AppLedger::Knex, ToolTask::New) => "npx knex migrate:make NAME",
            (AppLedger::Rails, ToolTask::New) => "bin/rails generate migration NAME",
            (AppLedger::Django, ToolTask::New) => "python manage.py makemigrations",
            (AppLedger::Prisma, ToolTask::New) => {
                "npx prisma migrate dev --create-only --name NAME"
            }
            (AppLedger::Knex, ToolTask::Repair) => {
                "npx knex migrate:unlock (a lock left behind); knex keeps no checksums"
            }
            (AppLedger::Rails, ToolTask::Repair) => {
                "bin/rails db:migrate:down VERSION=... / db:migrate:up VERSION=..."
            }
            (AppLedger::Django, ToolTask::Repair) => "python manage.py migrate --fake APP NAME",
            (AppLedger::Prisma, ToolTask::Repair) => {
                "npx prisma migrate resolve --rolled-back NAME (or --applied NAME)"
            }
            (AppLedger::Knex, ToolTask::Baseline) => {
                "insert the rows into knex_migrations (knex has no baseline command)"
            }
            (AppLedger::Rails, ToolTask::Baseline) => "bin/rails db:schema:load",
            (AppLedger::Django, ToolTask::Baseline) => "python manage.py migrate --fake-initial",
            (AppLedger::Prisma, ToolTask::Baseline) => "npx prisma migrate resolve --applied NAME",
        }
    }

    /// The ledger this database keeps, if one: `Err` says why it cannot
    /// tell (several, or Rails's `schema_migrations` that could be
    /// dbmate's, whose files are in `migrations_dir`).
    pub async fn found(
        client: &impl GenericClient,
        migrations_dir: &Path,
    ) -> Result<Option<AppLedger>, String> {
        let row = client
            .row(
                "SELECT to_regclass('knex_migrations') IS NOT NULL,
                        to_regclass('schema_migrations') IS NOT NULL
                          AND NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('schema_migrations') AND attname = 'dirty' AND NOT attisdropped),
                        to_regclass('ar_internal_metadata') IS NOT NULL,
                        to_regclass('django_migrations') IS NOT NULL,
                        to_regclass('_prisma_migrations') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| crate::db::describe(&e))?;
        let mut found = Vec::new();
        if row.get::<_, bool>(0) {
            found.push(AppLedger::Knex);
        }
        if row.get::<_, bool>(1) {
            // Rails and dbmate keep the same one-column table: Rails's
            // `ar_internal_metadata` beside it, or no dbmate files, tell.
            let rails_metadata: bool = row.get(2);
            if !rails_metadata && has_sql_files(migrations_dir) {
                return Err(format!(
                    "schema_migrations (version) is the ledger of both Rails and dbmate, and {} holds .sql files\n  help: set [migrations.command] ledger = \"rails\" if Rails keeps it",
                    migrations_dir.display()
                ));
            }
            found.push(AppLedger::Rails);
        }
        if row.get::<_, bool>(3) {
            found.push(AppLedger::Django);
        }
        if row.get::<_, bool>(4) {
            found.push(AppLedger::Prisma);
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(format!(
                "this database keeps several migrators' ledgers ({})\n  help: set [migrations.command] ledger to the one the command keeps",
                many.iter()
                    .map(|l| l.name(None))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Its rows, oldest first; empty (and `exists` false) before the tool
    /// first ran. `configured`: `[migrations.command] ledger_table`.
    pub async fn read(
        self,
        client: &impl GenericClient,
        configured: Option<&str>,
    ) -> Result<AppLedgerView, tokio_postgres::Error> {
        let AppTables { ledger, beside } = self.tables(client, configured).await?;
        let Some(table) = ledger else {
            return Ok(AppLedgerView::default());
        };
        let mut locked = None;
        let entries = match self {
            AppLedger::Knex => {
                // The lock table may be missing (made by another knex
                // setup); the rows still say what is applied.
                if let Some(lock) = &beside {
                    locked = Some(
                        client
                            .row(
                                &format!("SELECT coalesce(bool_or(is_locked <> 0), false) FROM {lock}"),
                                &[],
                            )
                            .await?
                            .get(0),
                    );
                }
                client
                    .rows(
                        &format!("SELECT name, batch, migration_time::text FROM {table} ORDER BY id"),
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| {
                        let written: String = r.get(0);
                        AppEntry {
                            name: readable(&written),
                            version: written,
                            status: AppState::Applied,
                            applied_at: r.get(2),
                            batch: r.get(1),
                            logs: None,
                        }
                    })
                    .collect()
            }
            AppLedger::Rails => client
                .rows(
                    &format!("SELECT version::text FROM {table} ORDER BY version"),
                    &[],
                )
                .await?
                .iter()
                .map(|r| AppEntry {
                    version: r.get(0),
                    name: String::new(),
                    status: AppState::Applied,
                    applied_at: None,
                    batch: None,
                    logs: None,
                })
                .collect(),
            AppLedger::Django => client
                .rows(
                    &format!("SELECT app, name, applied::text FROM {table} ORDER BY id"),
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    let (app, name): (String, String) = (r.get(0), r.get(1));
                    AppEntry {
                        version: format!("{app}.{name}"),
                        name: app,
                        status: AppState::Applied,
                        applied_at: r.get(2),
                        batch: None,
                        logs: None,
                    }
                })
                .collect(),
            AppLedger::Prisma => client
                .rows(
                    &format!("SELECT migration_name, finished_at::text, rolled_back_at IS NOT NULL, logs FROM {table} ORDER BY started_at, migration_name"),
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    let written: String = r.get(0);
                    let finished: Option<String> = r.get(1);
                    let rolled_back: bool = r.get(2);
                    let status = match (&finished, rolled_back) {
                        (_, true) => AppState::RolledBack,
                        (Some(_), false) => AppState::Applied,
                        (None, false) => AppState::Failed,
                    };
                    AppEntry {
                        name: readable(&written),
                        version: written,
                        status,
                        applied_at: finished,
                        batch: None,
                        logs: r.get(3),
                    }
                })
                .collect(),
        };
        Ok(AppLedgerView {
            exists: true,
            entries,
            locked,
        })
    }
}

/// The tables of one migrator's ledger, as the catalog names them.
#[derive(Debug, Clone, Default)]
pub struct AppTables {
    pub ledger: Option<String>,
    pub beside: Option<String>,
}

/// What pgmaint leaves to the application's tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolTask {
    New,
    Repair,
    Baseline,
}

/// `20240101000000_create_users.js` reads `create users`.
fn readable(written: &str) -> String {
    let stem = written
        .strip_suffix(".js")
        .or_else(|| written.strip_suffix(".ts"))
        .or_else(|| written.strip_suffix(".cjs"))
        .or_else(|| written.strip_suffix(".mjs"))
        .unwrap_or(written);
    let rest = match stem.split_once('_') {
        Some((head, rest)) if head.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => stem,
    };
    rest.replace('_', " ")
}

fn has_sql_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_without_their_timestamp() {
        assert_eq!(readable("20240101000000_create_users.js"), "create users");
        assert_eq!(readable("20240101000000_init"), "init");
        assert_eq!(readable("setup.js"), "setup");
    }

    #[test]
    fn ledgers_by_name() {
        for ledger in AppLedger::ALL {
            assert_eq!(AppLedger::from_name(ledger.as_str()), Some(ledger));
        }
        assert_eq!(AppLedger::from_name("sequelize"), None);
    }
}

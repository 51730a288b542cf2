//! One migrations folder against one database: its format and ledger
//! found, its files read, each migration's state, the selection `up` and
//! `down` work on, and the migration lock the format's tool takes (a
//! second `migrate up` waits for the first and then finds nothing to do).

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::ledger::Ledger;
use super::status::{self, Entry, State};
use super::{Format, MigrateError, Migration, Settings, source};
use crate::unnamed::Unnamed;

pub struct Migrator {
    pub settings: Settings,
    pub format: Format,
    pub ledger: Ledger,
    pub migrations: Vec<Migration>,
    pub state_schema: String,
}

impl Migrator {
    /// Reads the folder in its format (`format = "auto"`: from the files,
    /// then the ledger the database has).
    pub async fn open(
        client: &Client,
        settings: &Settings,
        state_schema: &str,
    ) -> Result<Migrator, MigrateError> {
        if settings.command.is_some() {
            return Err(MigrateError::Refused(
                "[migrations] format = \"command\" runs the application's own migrator, which has no files for pgmaint to read; nothing was changed\n  help: `pgmaint migrate up`, `down` and `status` (and POST /api/v1/migrations/up) run and read it".into(),
            ));
        }
        let format = match settings.format {
            Some(format) => format,
            None => {
                let ledger_says = Ledger::found(client, state_schema)
                    .await
                    .map_err(MigrateError::Files)?;
                source::detect(&settings.dir, ledger_says)?
            }
        };
        Migrator::read(settings, format, state_schema)
    }

    /// Reads the folder without a database (`migrate lint FILE..` when
    /// the server cannot be reached): `format = "auto"` from the files
    /// alone.
    pub fn offline(settings: &Settings, state_schema: &str) -> Result<Migrator, MigrateError> {
        let format = match settings.format {
            Some(format) => format,
            None => source::detect(&settings.dir, None)?,
        };
        Migrator::read(settings, format, state_schema)
    }

    /// The folder's files read in `format`.
    fn read(
        settings: &Settings,
        format: Format,
        state_schema: &str,
    ) -> Result<Migrator, MigrateError> {
        if format == Format::Sqlx {
            refuse_sqlx_toml(settings)?;
        }
        let migrations = source::read(settings, format)?;
        Ok(Migrator {
            settings: settings.clone(),
            format,
            ledger: Ledger::of(format, state_schema),
            migrations,
            state_schema: state_schema.to_string(),
        })
    }

    /// Whether a migration must have a down (`require_down`, or the
    /// format's default).
    pub fn require_down(&self) -> bool {
        let reversible = self.migrations.iter().any(|m| m.down.is_some());
        self.settings
            .require_down
            .unwrap_or(self.format.downs_expected(reversible) || self.settings.down_dir.is_some())
    }

    /// Every migration's state, read in one read-only transaction.
    pub async fn entries(&self, client: &Client) -> Result<Vec<Entry>, MigrateError> {
        let ledger_name = self.ledger.name();
        let (applied, runs) = crate::db::read_only(client, async {
            let applied = self.ledger.applied(client, &self.migrations).await?;
            let runs =
                crate::store::schema_migrations::runs_of(client, &self.state_schema, &ledger_name)
                    .await?;
            Ok((applied, runs))
        })
        .await?;
        Ok(status::entries(
            &self.migrations,
            &applied,
            &runs,
            &self.ledger,
        ))
    }

    pub fn migration(&self, version: i64) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.version == version)
    }

    /// Where a version comes in the order `up` applies migrations (the
    /// format's own order: versions, Flyway's dotted ones, dependencies);
    /// a ledger row without a file comes after every file.
    pub fn position(&self, version: i64) -> usize {
        self.migrations
            .iter()
            .position(|m| m.version == version)
            .unwrap_or(usize::MAX)
    }

    /// What `up [--to V]` applies, in order; refused (changing nothing)
    /// while the ledger and the files disagree.
    pub fn to_apply<'a>(
        &'a self,
        entries: &[Entry],
        to: Option<i64>,
        allow_out_of_order: bool,
    ) -> Result<Vec<&'a Migration>, MigrateError> {
        let mut problems = Vec::new();
        for e in entries {
            match &e.state {
                State::Modified { change } => problems.push(format!(
                    "migration {} ({}) was applied and has been modified: {}\n  help: restore the file as it was applied, or accept it with `pgmaint migrate repair {}`",
                    e.written, e.name, change.says(), e.written
                )),
                State::Missing => problems.push(format!(
                    "migration {} is in the ledger {} but no file has that version\n  help: restore the file, or remove its row from the ledger once you know what it did",
                    e.written,
                    self.ledger.name()
                )),
                State::Dirty => problems.push(format!(
                    "migration {} is marked partly applied in {} (success = false)\n  help: check what it left, then `pgmaint migrate repair {}` clears it",
                    e.written,
                    self.ledger.name(),
                    e.written
                )),
                State::Failed { direction, .. } if direction == "down" => problems.push(format!(
                    "migration {}'s down stopped part-way; `pgmaint migrate down` finishes it, or `pgmaint migrate repair {}` forgets it",
                    e.written, e.written
                )),
                _ => {}
            }
        }
        let pending: Vec<&Entry> = entries
            .iter()
            .filter(|e| {
                matches!(e.state, State::Pending | State::Failed { .. })
                    && to.is_none_or(|to| self.position(e.version) <= self.position(to))
            })
            .collect();
        if self.require_down() {
            let without: Vec<&str> = pending
                .iter()
                .filter(|e| {
                    !e.has_down
                        && !e.irreversible
                        && self.migration(e.version).is_some_and(|m| !m.repeatable)
                })
                .map(|e| e.written.as_str())
                .collect();
            if !without.is_empty() {
                problems.push(format!(
                    "migration(s) {} have no down, and require_down is on\n  help: write the down, mark the migration irreversible (`-- pgmaint: irreversible` or [migrations] irreversible = [\"{}\"]), or set [migrations] require_down = false",
                    without.join(", "),
                    without[0]
                ));
            }
        }
        let out_of_order: Vec<&str> = pending
            .iter()
            .filter(|e| e.out_of_order)
            .map(|e| e.written.as_str())
            .collect();
        if !out_of_order.is_empty() && !allow_out_of_order {
            problems.push(format!(
                "migration(s) {} are pending with versions lower than one already applied\n  help: check they do not depend on the later ones, then pass --allow-out-of-order",
                out_of_order.join(", ")
            ));
        }
        if let Some(to) = to
            && self.migration(to).is_none()
        {
            problems.push(format!("--to {to}: no migration has that version"));
        }
        if !problems.is_empty() {
            return Err(MigrateError::Refused(format!(
                "{}\nnothing was changed",
                problems.join("\n")
            )));
        }
        Ok(pending
            .iter()
            .filter_map(|e| self.migration(e.version))
            .collect())
    }

    /// What `down` reverts, newest first: those after `to`, or the last
    /// `steps` (one by default). A migration without a down is refused,
    /// unless it is irreversible: the selection stops before it (`Err`
    /// names it when it is the first).
    pub fn to_revert<'a>(
        &'a self,
        entries: &[Entry],
        to: Option<i64>,
        steps: Option<usize>,
    ) -> Result<(Vec<&'a Migration>, Option<String>), MigrateError> {
        // Repeatables (Flyway's `R__`) have no undo: a down leaves them.
        let mut applied: Vec<&Entry> = entries
            .iter()
            .filter(|e| self.migration(e.version).is_none_or(|m| !m.repeatable))
            .filter(|e| {
                matches!(e.state, State::Applied | State::Modified { .. })
                    || matches!(&e.state, State::Failed { direction, .. } if direction == "down")
            })
            .collect();
        // Newest first: the reverse of the order `up` applies them in
        // (dependencies included), then ledger rows without a file.
        let position = |e: &Entry| self.position(e.version);
        applied.sort_by_key(|e| {
            std::cmp::Reverse((position(e) != usize::MAX, position(e), e.version))
        });
        let chosen: Vec<&Entry> = match (to, steps) {
            (Some(to), _) => applied
                .into_iter()
                .filter(|e| self.position(e.version) > self.position(to))
                .collect(),
            (None, steps) => applied.into_iter().take(steps.unwrap_or(1)).collect(),
        };
        let mut selected = Vec::new();
        let mut stopped = None;
        for e in chosen {
            let Some(m) = self.migration(e.version) else {
                return Err(MigrateError::Refused(format!(
                    "migration {} has no file; nothing was changed",
                    e.written
                )));
            };
            if m.down.is_none() {
                if m.irreversible {
                    stopped = Some(format!(
                        "migration {} ({}) is irreversible{}: down stops before it",
                        m.written,
                        m.name,
                        if self.settings.irreversible.contains(&m.written) {
                            " ([migrations] irreversible)"
                        } else {
                            " (-- pgmaint: irreversible)"
                        }
                    ));
                    break;
                }
                return Err(MigrateError::Refused(format!(
                    "migration {} ({}) has no down{}; nothing was changed\n  help: write its down, or mark it irreversible with a `-- pgmaint: irreversible` line or [migrations] irreversible = [\"{}\"]",
                    m.written,
                    m.name,
                    match (self.format, &self.settings.down_dir) {
                        (Format::Sqlx, Some(dir)) => format!(
                            " (looked for {})",
                            dir.join(format!(
                                "{}_{}_down.sql",
                                m.written,
                                m.up.path
                                    .file_stem()
                                    .and_then(|s| s.to_str())
                                    .and_then(|s| s.split_once('_'))
                                    .map(|(_, n)| n)
                                    .unwrap_or("")
                            ))
                            .display()
                        ),
                        _ => String::new(),
                    },
                    m.written
                )));
            }
            selected.push(m);
        }
        if selected.is_empty()
            && let Some(reason) = &stopped
        {
            return Err(MigrateError::Refused(format!(
                "{reason}; nothing was changed"
            )));
        }
        Ok((selected, stopped))
    }

    /// Takes the migration lock the format's tool takes (sqlx's advisory
    /// lock key), waiting for another migrator that holds it; `waiting` is
    /// told once when that wait starts. Held until `unlock` or the session
    /// ends.
    pub async fn lock(
        &self,
        client: &Client,
        waiting: impl FnOnce(Option<i32>),
        give_up: Option<Duration>,
    ) -> Result<(), MigrateError> {
        let key = self.lock_key(client).await?;
        advisory_lock(client, key, waiting, give_up).await
    }

    pub async fn unlock(&self, client: &Client) -> Result<(), MigrateError> {
        let key = self.lock_key(client).await?;
        client.row("SELECT pg_advisory_unlock($1)", &[&key]).await?;
        Ok(())
    }

    async fn lock_key(&self, client: &Client) -> Result<i64, MigrateError> {
        let row = client
            .row(
                "SELECT current_database()::text, coalesce(current_schema()::text, 'public')",
                &[],
            )
            .await?;
        Ok(self.ledger.lock_key(row.get(0), row.get(1)))
    }

    /// The migration applied before `m` (what golang-migrate's version goes
    /// back to when `m` is reverted).
    pub fn previous(&self, m: &Migration) -> Option<i64> {
        let at = self
            .migrations
            .iter()
            .position(|x| x.version == m.version)?;
        at.checked_sub(1).map(|i| self.migrations[i].version)
    }

    /// Creates the ledger if it is missing (sqlx's table as sqlx makes it).
    pub async fn ensure_ledger(&self, client: &Client) -> Result<(), MigrateError> {
        let timeouts = self.settings.timeouts();
        crate::db::under(
            timeouts,
            crate::db::committed(client, self.ledger.ensure(client)),
        )
        .await?;
        Ok(())
    }
}

/// sqlx 0.9 reads `[migrate]` from a `sqlx.toml` beside the migrations
/// folder (its table name, characters left out of checksums, schemas):
/// pgmaint does not read it yet, so a folder that has one is refused
/// rather than kept in a second ledger or with checksums sqlx rejects.
fn refuse_sqlx_toml(settings: &Settings) -> Result<(), MigrateError> {
    let Some(root) = settings.dir.parent() else {
        return Ok(());
    };
    let path = root.join("sqlx.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let configures_migrate = text
        .lines()
        .any(|l| l.trim_start().starts_with("[migrate") || l.trim_start().starts_with("migrate."));
    if configures_migrate {
        return Err(MigrateError::Files(format!(
            "{} sets sqlx's [migrate] options (its table name, ignored characters, schemas), which this version of pgmaint does not read; nothing was changed\n  help: keep running these migrations with sqlx-cli for now, or remove the [migrate] table if it only repeats sqlx's defaults",
            path.display()
        )));
    }
    Ok(())
}

/// Takes the session advisory lock `key`, waiting while another session
/// holds it (`waiting` is told the holder's pid once the wait has lasted
/// `LOCK_NOTICE_AFTER`), up to `give_up` when given.
pub(crate) async fn advisory_lock(
    client: &Client,
    key: i64,
    waiting: impl FnOnce(Option<i32>),
    give_up: Option<Duration>,
) -> Result<(), MigrateError> {
    let started = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        let got: bool = client
            .row("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0);
        if got {
            return Ok(());
        }
        if started.elapsed() >= super::apply::LOCK_NOTICE_AFTER
            && let Some(tell) = waiting.take()
        {
            let holder: Option<i32> = client
                .row_opt(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                       AND ((classid::bigint << 32) | objid::bigint) = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    &[&key],
                )
                .await?
                .map(|r| r.get(0));
            tell(holder);
        }
        if give_up.is_some_and(|limit| started.elapsed() >= limit) {
            return Err(MigrateError::Refused(format!(
                "another migrator has held the migration lock for {:.0} s; nothing was changed\n  help: try again once it is done (`pgmaint migrate status` shows what it applied)",
                started.elapsed().as_secs_f64()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! `migrate drift` and the `schema-drift` health check: the live schema
//! against what its migrations make. Every migration the ledger says is
//! applied is replayed, in order, on an empty scratch cluster; the two
//! catalogs (`catalog`) differ by what was made by hand (an index someone
//! created when login was slow), what is missing, and what was changed.
//!
//! pgmaint's own objects are never drift: its state schema, the
//! migration tool's ledger (and drizzle's schema), the partitions its
//! `partitions` tasks make and the archive tables of its `archive` tasks.

use serde::Serialize;
use tokio_postgres::Client;

use super::catalog::{self, Diff};
use super::engine::Migrator;
use super::scratch::Scratch;
use super::status::State;
use super::{Format, MigrateError};
use crate::tasks::Made;
use crate::unnamed::Unnamed;

/// What the live schema has that the migrations do not make, and the
/// other way round.
#[derive(Debug, Serialize)]
pub(crate) struct Drift {
    /// The migrations replayed, by version as written.
    pub replayed: Vec<String>,
    pub diff: Diff,
    /// pgmaint's own objects left out, by name.
    pub own: Vec<String>,
    /// What the scratch server could not make (an extension missing
    /// locally): drift there cannot be told.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Drift {
    /// One line per object, naming it first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.diff.phrased(
            "is not made by any migration (made by hand?)",
            "is missing: the migrations make it",
            "differs from what the migrations make (migrations -> live)",
        )
    }
}

/// The ledger of a `format = "command"` migrator is its own, and its
/// migrations are code pgmaint cannot replay.
pub(crate) fn unsupported_for_command() -> MigrateError {
    MigrateError::Refused(
        "drift compares the live schema with the migration files replayed on a scratch cluster, and format = \"command\" migrations are the application's code, which pgmaint cannot replay; nothing was compared\n  help: run the migrator against an empty database and compare its schema with `pg_dump --schema-only`".into(),
    )
}

/// The live schema of `live` against `migrator`'s applied migrations
/// replayed on an empty scratch cluster.
pub(crate) async fn find(
    live: &Client,
    migrator: &Migrator,
    made: &[Made],
) -> Result<Drift, MigrateError> {
    let entries = migrator.entries(live).await?;
    let mut applied: Vec<_> = entries
        .iter()
        .filter(|e| matches!(e.state, State::Applied | State::Modified { .. }))
        .filter_map(|e| migrator.migration(e.version))
        .collect();
    applied.sort_by_key(|m| migrator.position(m.version));
    let scratch = Scratch::empty().await?;
    scratch.copy_roles_of(live).await?;
    let mut notes = Vec::new();
    for m in &applied {
        if let Err(e) = super::scratch::apply(&scratch.client, &m.up).await {
            return Err(MigrateError::Failed(format!(
                "replaying migration {} on an empty scratch cluster failed: {e}; drift cannot be told\n  help: a migration that depends on what was made by hand is itself drift: add that to a migration",
                m.written
            )));
        }
    }
    if entries
        .iter()
        .any(|e| matches!(e.state, State::Modified { .. }))
    {
        notes.push(
            "a migration was modified since it was applied: its file as it is now was replayed"
                .into(),
        );
    }
    let mut exclude = vec![migrator.state_schema.clone()];
    if migrator.format == Format::Drizzle {
        exclude.push("drizzle".into());
    }
    let replayed = catalog::snapshot(&scratch.client, &exclude).await?;
    let now = catalog::snapshot(live, &exclude).await?;
    let own = own_tables(live, migrator, made).await?;
    let is_own = |name: &str| own.iter().any(|o| o == name);
    let diff = catalog::diff(&replayed.without(is_own), &now.without(is_own));
    Ok(Drift {
        replayed: applied.iter().map(|m| m.written.clone()).collect(),
        diff,
        own,
        notes,
    })
}

/// pgmaint's own tables in the live schema, quoted as the catalog names
/// them: the ledger, archive tables and partitions its tasks make.
async fn own_tables(
    live: &Client,
    migrator: &Migrator,
    made: &[Made],
) -> Result<Vec<String>, MigrateError> {
    let ledger = migrator.ledger.table();
    let found = crate::db::read_only(live, async {
        let mut out = Vec::new();
        let name_of = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";
        if let Some(row) = live.row_opt(name_of, &[&ledger]).await? {
            out.push(row.get(0));
        }
        for m in made {
            match m {
                Made::Beside { beside, name } => {
                    let row = live
                        .row_opt(
                            "SELECT format('%I.%I', coalesce(CASE WHEN array_length(p.parts, 1) = 2 THEN p.parts[1] END, n.nspname),
                                                    coalesce(p.parts[array_length(p.parts, 1)], c.relname || '_archive'))
                               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                               LEFT JOIN LATERAL (SELECT parse_ident($2) AS parts WHERE $2 IS NOT NULL) p ON true
                              WHERE c.oid = to_regclass($1)",
                            &[beside, name],
                        )
                        .await?;
                    if let Some(row) = row {
                        out.push(row.get(0));
                    }
                }
                Made::PartitionsOf(parent) => {
                    for row in live
                        .rows(
                            "SELECT format('%I.%I', n.nspname, c.relname)
                               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                              WHERE i.inhparent = to_regclass($1)",
                            &[parent],
                        )
                        .await?
                    {
                        out.push(row.get(0));
                    }
                }
            }
        }
        Ok::<_, tokio_postgres::Error>(out)
    })
    .await?;
    Ok(found)
}

//! drizzle-kit's folder, read as drizzle-orm's migrator reads it: the
//! journal `meta/_journal.json` lists the migrations in order, each entry's
//! `tag` naming `<tag>.sql` and its `when` (milliseconds) the value the
//! ledger's `created_at` keeps; the file's statements are split at
//! `--> statement-breakpoint`, and the ledger's hash is the SHA-256 (hex)
//! of the whole file. drizzle has no downs.

use serde::{Deserialize, Serialize};

use super::{Migration, Script, marked_irreversible, needs_own_session, problems_error};
use crate::migrate::{MigrateError, Settings};

/// `meta/_journal.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Journal {
    pub version: String,
    pub dialect: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub idx: i64,
    pub version: String,
    pub when: i64,
    pub tag: String,
    pub breakpoints: bool,
}

pub(crate) fn journal_path(settings: &Settings) -> std::path::PathBuf {
    settings.dir.join("meta").join("_journal.json")
}

pub(crate) fn journal(settings: &Settings) -> Result<Journal, MigrateError> {
    let path = journal_path(settings);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        MigrateError::Files(format!(
            "cannot read drizzle's journal {}: {e}\n  help: set [migrations] dir to drizzle-kit's `out` folder (the one holding meta/_journal.json)",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        MigrateError::Files(format!(
            "{}: not a drizzle-kit journal: {e}",
            path.display()
        ))
    })
}

/// The ledger's hash of a file's text.
pub(crate) fn hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every migration the journal lists, in its order.
pub(super) fn read(settings: &Settings) -> Result<Vec<Migration>, MigrateError> {
    let journal = journal(settings)?;
    if journal.dialect != "postgresql" {
        return Err(MigrateError::Files(format!(
            "{}: these drizzle migrations are for {}, not PostgreSQL",
            journal_path(settings).display(),
            journal.dialect
        )));
    }
    let mut problems = Vec::new();
    let mut migrations: Vec<Migration> = Vec::new();
    for entry in &journal.entries {
        let path = settings.dir.join(format!("{}.sql", entry.tag));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!(
                    "the journal lists {}, which cannot be read: {e}",
                    path.display()
                ));
                continue;
            }
        };
        if migrations.iter().any(|m| m.version == entry.when) {
            problems.push(format!(
                "{} has the same `when` ({}) as an earlier entry: drizzle's ledger could not tell them apart",
                entry.tag, entry.when
            ));
            continue;
        }
        if let Some(last) = migrations.last()
            && last.version > entry.when
        {
            problems.push(format!(
                "{}'s `when` is earlier than {}'s: drizzle would skip it once the later one is applied",
                entry.tag, last.name
            ));
        }
        let (written, name) = entry
            .tag
            .split_once('_')
            .unwrap_or((entry.tag.as_str(), ""));
        migrations.push(Migration {
            version: entry.when,
            written: written.to_string(),
            name: name.to_string(),
            irreversible: marked_irreversible(&text)
                || settings
                    .irreversible
                    .iter()
                    .any(|v| v == written || *v == entry.tag),
            up: Script {
                transactional: !needs_own_session(&text),
                path,
                text,
            },
            down: None,
            depends: Vec::new(),
            repeatable: false,
        });
    }
    if !problems.is_empty() {
        return Err(problems_error(settings, &problems));
    }
    Ok(migrations)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hash_is_hex_sha256_of_the_file() {
        assert_eq!(
            super::hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

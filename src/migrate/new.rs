//! `migrate new NAME`: the files of a new migration in the folder's
//! format, as that format's own tool names them (sqlx-cli: a UTC
//! timestamp version, or the next sequential number with the same width
//! when the folder already numbers them so; reversible pairs when the
//! folder has them; Flyway: the next `V<n>__` and a `U<n>__` when the
//! folder has undo files; drizzle-kit: the next `<NNNN>_<name>.sql` added
//! to the journal, as `drizzle-kit generate --custom` adds it).

use std::path::PathBuf;

use super::{Format, MigrateError, Migration, Settings};

/// The version of the next migration after `existing`, at `now`.
fn next_version(existing: &[Migration], now: chrono::DateTime<chrono::Utc>) -> String {
    let timestamp = now.format("%Y%m%d%H%M%S").to_string();
    match existing.iter().max_by_key(|m| m.version) {
        // Sequential versions (0001, 0002...) stay sequential.
        Some(last) if last.written.len() < 14 => {
            format!("{:0width$}", last.version + 1, width = last.written.len())
        }
        Some(last) if last.version >= timestamp.parse::<i64>().unwrap_or(0) => {
            (last.version + 1).to_string()
        }
        _ => timestamp,
    }
}

/// Writes the new files and returns their paths; nothing is overwritten.
pub fn create(
    settings: &Settings,
    format: Format,
    existing: &[Migration],
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<PathBuf>, MigrateError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' ')
    {
        return Err(MigrateError::Files(format!(
            "\"{name}\" cannot name a migration file: use letters, digits, `_` and `-`, as in `add_users_email`"
        )));
    }
    let name = name.replace([' ', '-'], "_");
    match format {
        Format::Flyway => return flyway(settings, existing, &name, now),
        Format::Drizzle => return drizzle(settings, &name, now),
        _ => {}
    }
    let version = next_version(existing, now);
    let reversible = match format {
        Format::Pgmaint | Format::GolangMigrate => true,
        Format::Dbmate | Format::Flyway | Format::Drizzle => false,
        Format::Sqlx => {
            existing.is_empty() && settings.down_dir.is_none()
                || existing
                    .iter()
                    .any(|m| m.up.path.to_string_lossy().ends_with(".up.sql"))
        }
    };
    let mut files: Vec<(PathBuf, &str)> = Vec::new();
    let (up_text, down_text) = match format {
        Format::Sqlx => (
            "-- Add up migration script here\n",
            "-- Add down migration script here\n",
        ),
        Format::Pgmaint => (
            "-- pgmaint: transaction=one\n-- Add the up migration here; `transaction=none` runs it statement by statement.\n",
            "-- Add the down migration here: it undoes the up.\n",
        ),
        Format::GolangMigrate | Format::Dbmate | Format::Flyway | Format::Drizzle => ("", ""),
    };
    // dbmate's own template: both blocks in one file.
    let simple_text = match format {
        Format::Dbmate => "-- migrate:up\n\n\n-- migrate:down\n\n",
        _ => "-- Add migration script here\n",
    };
    if reversible {
        files.push((
            settings.dir.join(format!("{version}_{name}.up.sql")),
            up_text,
        ));
        files.push((
            settings.dir.join(format!("{version}_{name}.down.sql")),
            down_text,
        ));
    } else {
        files.push((
            settings.dir.join(format!("{version}_{name}.sql")),
            simple_text,
        ));
        if let Some(down_dir) = &settings.down_dir {
            files.push((
                down_dir.join(format!("{version}_{name}_down.sql")),
                down_text,
            ));
        }
    }
    write_new(files)
}

/// Writes each file, none when one already exists.
fn write_new(files: Vec<(PathBuf, &str)>) -> Result<Vec<PathBuf>, MigrateError> {
    for (path, _) in &files {
        if path.exists() {
            return Err(MigrateError::Files(format!(
                "{} already exists; nothing was written",
                path.display()
            )));
        }
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                MigrateError::Files(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        std::fs::write(path, text)
            .map_err(|e| MigrateError::Files(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// Flyway's next version: one more than the highest versioned
/// migration's first part (`V7__` after `V6_2__`), a UTC timestamp in a
/// folder versioned by timestamps or an empty one.
fn flyway(
    settings: &Settings,
    existing: &[Migration],
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<PathBuf>, MigrateError> {
    let firsts: Vec<Migration> = existing
        .iter()
        .filter(|m| !m.repeatable)
        .filter_map(|m| {
            let first = m.written.split('.').next()?;
            let mut m = m.clone();
            m.version = first.parse().ok()?;
            m.written = first.to_string();
            Some(m)
        })
        .collect();
    let version = next_version(&firsts, now);
    let mut files = vec![(settings.dir.join(format!("V{version}__{name}.sql")), "")];
    if existing.iter().any(|m| m.down.is_some()) {
        files.push((settings.dir.join(format!("U{version}__{name}.sql")), ""));
    }
    write_new(files)
}

/// What `drizzle-kit generate --custom` writes into a new file.
const DRIZZLE_CUSTOM: &str = "-- Custom SQL migration file, put your code below! --";

/// The next drizzle migration: its file, its journal entry (`when` now,
/// later than the last one), and a copy of the last snapshot as the new
/// one's, so `drizzle-kit generate` goes on from it.
fn drizzle(
    settings: &Settings,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<PathBuf>, MigrateError> {
    let mut journal = super::source::drizzle_journal(settings)?;
    let idx = journal.entries.len() as i64;
    // drizzle-kit's default prefix is the entry's index; `--prefix
    // timestamp` makes it a UTC timestamp, which the next one follows.
    let prefix_of = |tag: &str| tag.split('_').next().unwrap_or("").to_string();
    let prefix = match journal.entries.last() {
        Some(last) if prefix_of(&last.tag).len() == 14 => now.format("%Y%m%d%H%M%S").to_string(),
        _ => format!("{idx:04}"),
    };
    let tag = format!("{prefix}_{name}");
    let when = journal
        .entries
        .last()
        .map(|e| e.when + 1)
        .unwrap_or(0)
        .max(now.timestamp_millis());
    let path = settings.dir.join(format!("{tag}.sql"));
    if path.exists() {
        return Err(MigrateError::Files(format!(
            "{} already exists; nothing was written",
            path.display()
        )));
    }
    let meta = settings.dir.join("meta");
    let snapshot = match journal.entries.last() {
        Some(last) => {
            let previous = meta.join(format!("{}_snapshot.json", prefix_of(&last.tag)));
            std::fs::read_to_string(&previous)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        }
        None => None,
    };
    journal.entries.push(super::source::JournalEntry {
        idx,
        version: journal.version.clone(),
        when,
        tag: tag.clone(),
        breakpoints: true,
    });
    let write = |path: &PathBuf, text: &str| {
        std::fs::write(path, text)
            .map_err(|e| MigrateError::Files(format!("cannot write {}: {e}", path.display())))
    };
    write(&path, DRIZZLE_CUSTOM)?;
    let mut written = vec![path];
    if let Some(mut snapshot) = snapshot {
        let id = snapshot_id(&tag, when);
        let previous_id = snapshot.get("id").cloned().unwrap_or_default();
        snapshot["prevId"] = previous_id;
        snapshot["id"] = serde_json::Value::String(id);
        let path = meta.join(format!("{prefix}_snapshot.json"));
        write(
            &path,
            &serde_json::to_string_pretty(&snapshot).unwrap_or_default(),
        )?;
        written.push(path);
    }
    let journal_path = super::source::drizzle_journal_path(settings);
    write(
        &journal_path,
        &serde_json::to_string_pretty(&journal).unwrap_or_default(),
    )?;
    written.push(journal_path);
    Ok(written)
}

/// A UUID-shaped id for a new snapshot (drizzle-kit's are random v4s).
fn snapshot_id(tag: &str, when: i64) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{tag}\0{when}").as_bytes());
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(version: i64, written: &str) -> Migration {
        let script = super::super::Script {
            path: PathBuf::from("x.sql"),
            text: String::new(),
            transactional: true,
        };
        Migration {
            version,
            written: written.into(),
            name: String::new(),
            up: script,
            down: None,
            irreversible: false,
            depends: Vec::new(),
            repeatable: false,
        }
    }

    #[test]
    fn versions_follow_the_folder_s_numbering() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 3, 17, 0, 0).unwrap();
        assert_eq!(next_version(&[], now), "20261203170000");
        assert_eq!(next_version(&[at(6, "0006")], now), "0007");
        assert_eq!(
            next_version(&[at(20261203170000, "20261203170000")], now),
            "20261203170001"
        );
    }
}

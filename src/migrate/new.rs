//! `migrate new NAME`: the files of a new migration in the folder's
//! format, as that format's own tool names them (sqlx-cli: a UTC
//! timestamp version, or the next sequential number with the same width
//! when the folder already numbers them so; reversible pairs when the
//! folder has them).

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
    let version = next_version(existing, now);
    let reversible = match format {
        Format::Pgmaint | Format::GolangMigrate => true,
        Format::Dbmate => false,
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
        Format::GolangMigrate | Format::Dbmate => ("", ""),
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

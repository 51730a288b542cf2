//! Flyway's folder, read as Flyway reads it: `V<version>__<description>.sql`
//! (versions of dot- or underscore-separated integers, compared part by
//! part, `1.0` the same as `1`), `U<version>__` undo files for downs, and
//! `R__<description>.sql` repeatables, applied after every versioned
//! migration whenever their checksum changes. The checksum is Flyway's:
//! CRC32 over each line's UTF-8 bytes without its line break, a leading
//! BOM dropped, as a signed 32-bit integer.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{Migration, Script, files_of, marked_irreversible, needs_own_session, problems_error};
use crate::migrate::{MigrateError, Settings};

/// A Flyway version's integer parts, trailing zeros dropped (`1.0` is `1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version(Vec<u64>);

impl Version {
    /// `1`, `1.1`, `2_0_3` (underscores are dots); `None` when a part is
    /// not an integer.
    pub(crate) fn parse(text: &str) -> Option<Version> {
        let mut parts = text
            .split(['.', '_'])
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()?;
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        Some(Version(parts))
    }

    /// The key pgmaint's records and selections use for this version: the
    /// number itself for a one-part version that fits (`V7`,
    /// `V20240101120000`), otherwise a stable negative hash of the
    /// canonical text (ordering always comes from the files' order, never
    /// from the key).
    pub(crate) fn key(&self) -> i64 {
        match self.0.as_slice() {
            [one] if *one <= i64::MAX as u64 => *one as i64,
            parts => {
                let text = parts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                hashed_key(&text)
            }
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.0.len().max(other.0.len());
        (0..len)
            .map(|i| {
                let a = self.0.get(i).copied().unwrap_or(0);
                let b = other.0.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A negative key from `text` (never a real version's).
fn hashed_key(text: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    -1 - (u64::from_be_bytes(bytes) >> 2) as i64
}

/// The key of a repeatable migration, from its description.
pub(crate) fn repeatable_key(description: &str) -> i64 {
    hashed_key(&format!("R__{description}"))
}

/// The ledger's key for a row: its version, or a repeatable's description.
pub(crate) fn row_key(version: Option<&str>, description: &str) -> i64 {
    match version {
        Some(text) => Version::parse(text)
            .map(|v| v.key())
            .unwrap_or_else(|| hashed_key(text)),
        None => repeatable_key(description),
    }
}

/// Flyway's checksum of a script's text.
pub(crate) fn checksum(text: &str) -> i32 {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut crc = crc32fast::Hasher::new();
    // Java's readLine: a line ends at \n, \r or \r\n.
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        crc.update(&rest.as_bytes()[..end]);
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix("\r\n") {
            rest = after;
        } else if !rest.is_empty() {
            rest = &rest[1..];
        }
    }
    crc.finalize() as i32
}

/// One file's name as Flyway reads it.
pub(super) struct Named {
    prefix: char,
    version: Option<(String, Version)>,
    description: String,
}

/// `V1_1__add_users.sql` → prefix `V`, version `1.1`, description
/// `add users`; `None` for a file that is not a migration.
pub(super) fn named(file: &str) -> Result<Option<Named>, String> {
    let Some(stem) = file.strip_suffix(".sql") else {
        return Ok(None);
    };
    let mut chars = stem.chars();
    let Some(prefix) = chars.next().filter(|c| matches!(c, 'V' | 'U' | 'R')) else {
        return Ok(None);
    };
    let Some((version, description)) = chars.as_str().split_once("__") else {
        return Ok(None);
    };
    let description = description.replace('_', " ");
    if prefix == 'R' {
        if !version.is_empty() {
            return Err(format!(
                "{file}: a repeatable migration has no version (`R__<description>.sql`)"
            ));
        }
        return Ok(Some(Named {
            prefix,
            version: None,
            description,
        }));
    }
    let Some(parsed) = Version::parse(version) else {
        return Err(format!(
            "{file}: Flyway versions are integers separated by `.` or `_` (as in `V1__init.sql`, `V1_1__add_users.sql`)"
        ));
    };
    Ok(Some(Named {
        prefix,
        version: Some((version.replace('_', "."), parsed)),
        description,
    }))
}

/// A script of Flyway's: non-transactional when it holds a statement
/// PostgreSQL runs only outside a transaction (Flyway's own detection), or
/// when its `.sql.conf` says `executeInTransaction=false`.
fn script(settings: &Settings, file: &str) -> Result<Script, MigrateError> {
    let path = settings.dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        MigrateError::Files(format!("cannot read migration {}: {e}", path.display()))
    })?;
    let conf =
        std::fs::read_to_string(settings.dir.join(format!("{file}.conf"))).unwrap_or_default();
    let off = conf.lines().any(|l| {
        l.split_once('=').is_some_and(|(k, v)| {
            k.trim() == "executeInTransaction" && v.trim().eq_ignore_ascii_case("false")
        })
    });
    Ok(Script {
        transactional: !off && !needs_own_session(&text),
        path,
        text,
    })
}

/// Every migration in the folder: versioned ones in version order with
/// their undo files as downs, then the repeatables by description.
pub(super) fn read(settings: &Settings) -> Result<Vec<Migration>, MigrateError> {
    let mut problems = Vec::new();
    let mut versioned: BTreeMap<i64, (Version, String, String, Script)> = BTreeMap::new();
    let mut undos: BTreeMap<i64, Script> = BTreeMap::new();
    let mut repeatables: BTreeMap<String, Script> = BTreeMap::new();
    for file in files_of(&settings.dir)? {
        let parsed = match named(&file) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => continue,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let script = script(settings, &file)?;
        if script.text.contains("${") {
            // Flyway replaces `${name}` placeholders before it runs a file
            // (and checksums a repeatable after): running the text as
            // written would not be what Flyway runs.
            problems.push(format!(
                "{file}: uses a Flyway placeholder (`${{...}}`), which pgmaint does not replace\n    help: run this folder with Flyway, or write the value into the file"
            ));
            continue;
        }
        match (parsed.prefix, parsed.version) {
            // Each arm is a block of its own: a guard calling `insert`
            // would fall through to the next arm when it is false.
            ('R', _) => {
                let twice = repeatables
                    .insert(parsed.description.clone(), script)
                    .is_some();
                if twice {
                    problems.push(format!(
                        "two repeatable migrations are described \"{}\"",
                        parsed.description
                    ));
                }
            }
            ('U', Some((_, version))) => {
                let twice = undos.insert(version.key(), script).is_some();
                if twice {
                    problems.push(format!("{file}: a second undo file for its version"));
                }
            }
            (_, Some((written, version))) => {
                let key = version.key();
                if let Some((_, other, _, _)) = versioned.get(&key) {
                    problems.push(format!(
                        "version {written} is used twice: V{other} and {file}"
                    ));
                    continue;
                }
                versioned.insert(key, (version, written, parsed.description, script));
            }
            _ => {}
        }
    }
    let mut ordered: Vec<(Version, String, String, Script)> = versioned.into_values().collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut migrations = Vec::new();
    for (version, written, description, up) in ordered {
        let key = version.key();
        migrations.push(Migration {
            version: key,
            irreversible: marked_irreversible(&up.text)
                || settings
                    .irreversible
                    .iter()
                    .any(|v| Version::parse(v).is_some_and(|v| v == version) || *v == written),
            written,
            name: description,
            up,
            down: undos.remove(&key),
            depends: Vec::new(),
            repeatable: false,
        });
    }
    for script in undos.into_values() {
        problems.push(format!(
            "{}: an undo file without its versioned migration",
            script.path.display()
        ));
    }
    for (description, up) in repeatables {
        migrations.push(Migration {
            version: repeatable_key(&description),
            written: format!("R__{}", description.replace(' ', "_")),
            name: description,
            irreversible: false,
            up,
            down: None,
            depends: Vec::new(),
            repeatable: true,
        });
    }
    if !problems.is_empty() {
        return Err(problems_error(settings, &problems));
    }
    Ok(migrations)
}

/// The file name a migration's row records in `script`.
pub(crate) fn script_name(script: &Script) -> String {
    script
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_flyway_compares_them() {
        let v = |t: &str| Version::parse(t).unwrap();
        assert!(v("1.1") > v("1"));
        assert!(v("1.10") > v("1.9"));
        assert!(v("2") > v("1.9.9"));
        assert_eq!(v("1.0"), v("1"));
        assert_eq!(v("1_1"), v("1.1"));
        assert_eq!(v("7").key(), 7);
        assert!(v("1.1").key() < 0);
        assert_eq!(v("1.1").key(), v("1_1").key());
        assert!(Version::parse("1a").is_none());
    }

    #[test]
    fn names_split_as_flyway_splits_them() {
        let n = named("V1_1__add_users_table.sql").unwrap().unwrap();
        assert_eq!(n.prefix, 'V');
        assert_eq!(n.version.unwrap().0, "1.1");
        assert_eq!(n.description, "add users table");
        let r = named("R__refresh_views.sql").unwrap().unwrap();
        assert!(r.version.is_none() && r.description == "refresh views");
        assert!(named("README.md").unwrap().is_none());
        assert!(named("Vx__bad.sql").is_err());
    }

    #[test]
    fn the_checksum_ignores_line_breaks_and_a_bom() {
        // zlib.crc32(b"ab") as a signed 32-bit integer.
        let ab = crc32fast::hash(b"ab") as i32;
        assert_eq!(checksum("a\nb\n"), ab);
        assert_eq!(checksum("a\r\nb"), ab);
        assert_eq!(checksum("\u{feff}a\rb\n"), ab);
        assert_ne!(checksum("a b"), ab);
    }
}

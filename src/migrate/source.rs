//! Reading a migrations folder in its format: each migration's version,
//! name, up and down scripts, transaction mode and dependencies, exactly as
//! the format's own tool reads them (sqlx: the version is the integer
//! before the first `_`, the name the rest with `_` as spaces, the
//! checksum SHA-384 of the file's bytes, `-- no-transaction` at the very
//! start).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha384};

use super::{Format, MigrateError, Settings};

/// One script (an up or a down) as read from its file.
#[derive(Debug, Clone)]
pub struct Script {
    pub path: PathBuf,
    pub text: String,
    /// Runs in one transaction with its ledger row (the default).
    pub transactional: bool,
}

impl Script {
    fn read(path: &Path, format: Format) -> Result<Script, MigrateError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            MigrateError::Files(format!("cannot read migration {}: {e}", path.display()))
        })?;
        let transactional = match format {
            Format::Sqlx => !text.starts_with("-- no-transaction"),
            Format::Pgmaint => header(&text).transaction,
        };
        Ok(Script {
            path: path.to_path_buf(),
            text,
            transactional,
        })
    }

    /// The checksum the format's ledger keeps: SHA-384 of the file's bytes
    /// (sqlx's, which pgmaint's own format shares).
    pub fn checksum(&self) -> Vec<u8> {
        Sha384::digest(self.text.as_bytes()).to_vec()
    }
}

/// One migration: its up, and its down when it has one.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The version as its ledger orders it.
    pub version: i64,
    /// As written in the file name (`0006`, `20240101120000`).
    pub written: String,
    /// As the ledger records it (sqlx: the name with `_` as spaces).
    pub name: String,
    pub up: Script,
    pub down: Option<Script>,
    /// `-- pgmaint: irreversible`, or `[migrations] irreversible`.
    pub irreversible: bool,
    /// pgmaint's own format: `depends=0007,0008`.
    pub depends: Vec<i64>,
}

/// What a `-- pgmaint:` header line says.
struct Header {
    transaction: bool,
    irreversible: bool,
    depends: Vec<String>,
}

/// Reads every `-- pgmaint: key=value ...` line before the first statement.
fn header(text: &str) -> Header {
    let mut header = Header {
        transaction: true,
        irreversible: false,
        depends: Vec::new(),
    };
    for line in text
        .lines()
        .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
    {
        let Some(rest) = line.trim_start().strip_prefix("-- pgmaint:") else {
            continue;
        };
        for word in rest.split_whitespace() {
            match word.split_once('=') {
                Some(("transaction", "none")) => header.transaction = false,
                Some(("depends", list)) => header
                    .depends
                    .extend(list.split(',').filter(|v| !v.is_empty()).map(String::from)),
                None if word == "irreversible" => header.irreversible = true,
                _ => {}
            }
        }
    }
    header
}

/// Whether `text` is marked irreversible by a `-- pgmaint: irreversible` line.
fn marked_irreversible(text: &str) -> bool {
    header(text).irreversible
}

/// A file name as `<version>_<name><suffix>`.
struct Named<'a> {
    written: &'a str,
    version: i64,
    name: &'a str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Simple,
    Up,
    Down,
}

/// Splits a file name the way sqlx does: the integer before the first
/// `_`, then the rest without `.up.sql`, `.down.sql` or `.sql`. `None` for
/// a file that is not a migration (sqlx ignores those); an error for a
/// migration-looking name whose version is not an integer.
fn named(file: &str) -> Result<Option<Named<'_>>, String> {
    let Some((written, rest)) = file.split_once('_') else {
        return Ok(None);
    };
    if !rest.ends_with(".sql") {
        return Ok(None);
    }
    let version = written.parse::<i64>().map_err(|_| {
        format!("{file}: a migration's name starts with an integer version and `_` (for example `0001_create_users.sql`)")
    })?;
    let (name, kind) = if let Some(name) = rest.strip_suffix(".up.sql") {
        (name, Kind::Up)
    } else if let Some(name) = rest.strip_suffix(".down.sql") {
        (name, Kind::Down)
    } else {
        (rest.strip_suffix(".sql").unwrap_or(rest), Kind::Simple)
    };
    Ok(Some(Named {
        written,
        version,
        name,
        kind,
    }))
}

/// The migration files of `dir`, sorted by name.
fn files_of(dir: &Path) -> Result<Vec<String>, MigrateError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        MigrateError::Files(format!(
            "cannot read the migrations folder {}: {e}\n  help: set [migrations] dir to the folder that holds them",
            dir.display()
        ))
    })?;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The format the files are written in, when `format = "auto"`: a
/// `-- pgmaint:` header says pgmaint's own; otherwise integer-versioned
/// `.sql` files are sqlx's (`ledger_says` is the ledger found in the
/// database, which settles files that fit both).
pub(crate) fn detect(dir: &Path, ledger_says: Option<Format>) -> Result<Format, MigrateError> {
    let names = files_of(dir)?;
    let mut pgmaint = false;
    let mut migrations = 0;
    for name in &names {
        if let Ok(Some(_)) = named(name) {
            migrations += 1;
            let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.trim_start().starts_with("-- pgmaint:"))
            {
                pgmaint = true;
            }
            if text.contains("-- migrate:up") {
                return Err(MigrateError::Files(format!(
                    "{} holds `-- migrate:up`: these are dbmate migrations, which this version of pgmaint does not run yet\n  help: keep running them with dbmate for now",
                    dir.join(name).display()
                )));
            }
        } else if name.starts_with('V') && name.contains("__") && name.ends_with(".sql") {
            return Err(MigrateError::Files(format!(
                "{} is named as a Flyway migration, which this version of pgmaint does not run yet",
                dir.join(name).display()
            )));
        }
    }
    if dir.join("meta").join("_journal.json").exists() {
        return Err(MigrateError::Files(format!(
            "{} holds meta/_journal.json: these are drizzle-kit migrations, which this version of pgmaint does not run yet",
            dir.display()
        )));
    }
    match (pgmaint, ledger_says) {
        (true, Some(Format::Sqlx)) => Err(MigrateError::Files(format!(
            "the files in {} carry `-- pgmaint:` headers but the database keeps a sqlx ledger (_sqlx_migrations)\n  help: set [migrations] format = \"sqlx\" or \"pgmaint\"",
            dir.display()
        ))),
        (true, _) => Ok(Format::Pgmaint),
        (false, Some(format)) => Ok(format),
        (false, None) if migrations > 0 => Ok(Format::Sqlx),
        (false, None) => Err(MigrateError::Files(format!(
            "no migrations found in {} and no ledger in the database to tell their format\n  help: set [migrations] format = \"sqlx\" or \"pgmaint\" (`pgmaint migrate new NAME` then writes the first one)",
            dir.display()
        ))),
    }
}

/// Every migration in `settings.dir`, in version order, as `format` reads
/// them: an up from a simple or `.up.sql` file, its down from the
/// `.down.sql` beside it or, for a simple one, `down_dir`'s
/// `<version>_<name>_down.sql`.
pub(crate) fn read(settings: &Settings, format: Format) -> Result<Vec<Migration>, MigrateError> {
    let mut problems = Vec::new();
    let mut ups: BTreeMap<i64, (String, String, Script, Kind)> = BTreeMap::new();
    let mut downs: BTreeMap<i64, Script> = BTreeMap::new();
    for file in files_of(&settings.dir)? {
        let parsed = match named(&file) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => continue,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        if format == Format::Pgmaint && parsed.kind == Kind::Simple {
            problems.push(format!("{file}: pgmaint's own migrations come in pairs, `<version>_<name>.up.sql` and `.down.sql`"));
            continue;
        }
        let script = Script::read(&settings.dir.join(&file), format)?;
        match parsed.kind {
            Kind::Down => {
                if downs.insert(parsed.version, script).is_some() {
                    problems.push(format!("version {} has two down files", parsed.version));
                }
            }
            kind => {
                if let Some((_, _, other, _)) = ups.get(&parsed.version) {
                    problems.push(format!(
                        "version {} is used twice: {} and {file}",
                        parsed.version,
                        other.path.file_name().unwrap_or_default().to_string_lossy()
                    ));
                    continue;
                }
                ups.insert(
                    parsed.version,
                    (
                        parsed.written.to_string(),
                        parsed.name.to_string(),
                        script,
                        kind,
                    ),
                );
            }
        }
    }
    let mut migrations = Vec::new();
    for (version, (written, name, up, kind)) in ups {
        let mut down = downs.remove(&version);
        if kind == Kind::Simple && down.is_some() {
            problems.push(format!(
                "version {version} has a simple file and a .down.sql: name the up `.up.sql`"
            ));
        }
        if kind == Kind::Simple
            && let Some(dir) = &settings.down_dir
        {
            let path = dir.join(format!("{written}_{name}_down.sql"));
            if path.exists() {
                down = Some(Script::read(&path, format)?);
            }
        }
        let header = header(&up.text);
        let mut depends = Vec::new();
        for dep in &header.depends {
            match dep.parse::<i64>() {
                Ok(v) => depends.push(v),
                Err(_) => problems.push(format!(
                    "{}: depends={dep} is not a version",
                    up.path.display()
                )),
            }
        }
        let irreversible = marked_irreversible(&up.text)
            || settings
                .irreversible
                .iter()
                .any(|v| *v == written || v.parse::<i64>().ok() == Some(version));
        migrations.push(Migration {
            version,
            written,
            name: match format {
                Format::Sqlx => name.replace('_', " "),
                Format::Pgmaint => name,
            },
            up,
            down,
            irreversible,
            depends,
        });
    }
    for (version, script) in downs {
        problems.push(format!(
            "{}: a down without an up (version {version})",
            script.path.display()
        ));
    }
    if !problems.is_empty() {
        return Err(MigrateError::Files(format!(
            "the migrations in {} cannot be used:\n{}",
            settings.dir.display(),
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    order(migrations)
}

/// Version order, with `depends=` respected: a migration whose dependency
/// has a higher version comes after it (topologically); a cycle is an error
/// naming its members.
fn order(migrations: Vec<Migration>) -> Result<Vec<Migration>, MigrateError> {
    let versions: Vec<i64> = migrations.iter().map(|m| m.version).collect();
    for m in &migrations {
        for dep in &m.depends {
            if !versions.contains(dep) {
                return Err(MigrateError::Files(format!(
                    "{}: depends on {dep}, which is not among the migrations",
                    m.up.path.display()
                )));
            }
        }
    }
    let mut done: Vec<i64> = Vec::new();
    let mut left: Vec<Migration> = migrations;
    let mut ordered = Vec::new();
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|m| m.depends.iter().all(|d| done.contains(d)));
        match ready {
            Some(at) => {
                let m = left.remove(at);
                done.push(m.version);
                ordered.push(m);
            }
            None => {
                let members: Vec<String> = left.iter().map(|m| m.written.clone()).collect();
                return Err(MigrateError::Files(format!(
                    "the migrations' depends= form a cycle among {}\n  help: remove one of the dependencies",
                    members.join(", ")
                )));
            }
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_split_as_sqlx_splits_them() {
        let n = named("20240101120000_add_users.up.sql").unwrap().unwrap();
        assert_eq!(
            (n.version, n.name, n.kind),
            (20240101120000, "add_users", Kind::Up)
        );
        let n = named("0006_name.sql").unwrap().unwrap();
        assert_eq!((n.written, n.version, n.kind), ("0006", 6, Kind::Simple));
        assert!(named("README.md").unwrap().is_none());
        assert!(named("abc_x.sql").is_err());
    }

    #[test]
    fn headers_say_the_transaction_mode_and_dependencies() {
        let h = header(
            "-- pgmaint: transaction=none depends=0007,0008\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
        );
        assert!(!h.transaction);
        assert_eq!(h.depends, vec!["0007", "0008"]);
        let h = header("CREATE TABLE t ();\n-- pgmaint: transaction=none\n");
        assert!(
            h.transaction,
            "a header after the first statement is not one"
        );
        assert!(header("-- pgmaint: irreversible\nDROP TABLE t;").irreversible);
    }

    fn migration(version: i64, depends: Vec<i64>) -> Migration {
        let script = Script {
            path: PathBuf::from(format!("{version}.up.sql")),
            text: String::new(),
            transactional: true,
        };
        Migration {
            version,
            written: version.to_string(),
            name: String::new(),
            up: script,
            down: None,
            irreversible: false,
            depends,
        }
    }

    #[test]
    fn dependencies_order_topologically_and_cycles_name_their_members() {
        let ordered = order(vec![
            migration(1, vec![3]),
            migration(2, vec![]),
            migration(3, vec![]),
        ])
        .unwrap();
        assert_eq!(
            ordered.iter().map(|m| m.version).collect::<Vec<_>>(),
            vec![2, 3, 1]
        );
        let err = order(vec![
            migration(1, vec![2]),
            migration(2, vec![1]),
            migration(3, vec![]),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("cycle among 1, 2"), "{err}");
    }
}

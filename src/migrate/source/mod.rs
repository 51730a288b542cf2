//! Reading a migrations folder in its format: each migration's version,
//! name, up and down scripts, transaction mode and dependencies, exactly as
//! the format's own tool reads them (sqlx: the version is the integer
//! before the first `_`, the name the rest with `_` as spaces, the
//! checksum SHA-384 of the file's bytes, `-- no-transaction` at the very
//! start). Flyway's and drizzle-kit's folders are read in their own
//! modules.

mod drizzle;
mod flyway;

pub(crate) use drizzle::{
    Entry as JournalEntry, hash as drizzle_hash, journal as drizzle_journal,
    journal_path as drizzle_journal_path,
};
pub(crate) use flyway::{checksum as flyway_checksum, row_key as flyway_key, script_name};

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
            // golang-migrate runs a file as one statement batch, which
            // PostgreSQL runs in one implicit transaction; a file whose
            // statement cannot be in one (a lone CREATE INDEX
            // CONCURRENTLY) runs on its own.
            Format::GolangMigrate => !needs_own_session(&text),
            Format::Dbmate => true,
            Format::Flyway | Format::Drizzle => !needs_own_session(&text),
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
        sha384(&self.text)
    }
}

/// SHA-384 of a text's bytes.
pub(crate) fn sha384(text: &str) -> Vec<u8> {
    Sha384::digest(text.as_bytes()).to_vec()
}

pub(super) fn needs_own_session(text: &str) -> bool {
    super::statements::split(text)
        .map(|list| list.iter().any(|s| s.needs_own_transaction))
        .unwrap_or(false)
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
    /// Flyway's `R__`: applied again whenever its checksum changes, after
    /// every versioned migration; never reverted.
    pub repeatable: bool,
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
pub(super) fn marked_irreversible(text: &str) -> bool {
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
pub(super) fn files_of(dir: &Path) -> Result<Vec<String>, MigrateError> {
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

/// The format the files are written in, when `format = "auto"`: from the
/// files first (drizzle-kit's journal, Flyway's `V<version>__` and `R__`
/// names, dbmate's `-- migrate:up` markers, pgmaint's `-- pgmaint:`
/// headers, `.up.sql`/`.down.sql` pairs, simple `.sql` files), then the
/// ledger the database has (`ledger_says`); several candidates, or files
/// that fit none, stop with the `format` to set.
pub(crate) fn detect(dir: &Path, ledger_says: Option<Format>) -> Result<Format, MigrateError> {
    let names = files_of(dir)?;
    let (mut pgmaint, mut dbmate, mut pairs, mut simple, mut flyway) =
        (false, false, false, false, false);
    for name in &names {
        if matches!(flyway::named(name), Ok(Some(_)) | Err(_)) {
            flyway = true;
            continue;
        }
        if !name.ends_with(".sql") || !name.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        // Only pgmaint's own files say how they run or what they depend
        // on; `-- pgmaint: irreversible` is at home in any format.
        if text.lines().any(|l| {
            l.trim_start()
                .strip_prefix("-- pgmaint:")
                .is_some_and(|rest| rest.contains("transaction=") || rest.contains("depends="))
        }) {
            pgmaint = true;
        }
        if text
            .lines()
            .any(|l| l.trim_start().starts_with("-- migrate:up"))
        {
            dbmate = true;
        }
        if name.ends_with(".up.sql") || name.ends_with(".down.sql") {
            pairs = true;
        } else {
            simple = true;
        }
    }
    let mut from_files: Vec<Format> = if dir.join("meta").join("_journal.json").exists() {
        // drizzle's files are numbered as sqlx's are: the journal decides.
        vec![Format::Drizzle]
    } else if dbmate {
        vec![Format::Dbmate]
    } else if pgmaint {
        vec![Format::Pgmaint]
    } else if pairs {
        if simple {
            vec![Format::Sqlx]
        } else {
            vec![Format::Sqlx, Format::GolangMigrate]
        }
    } else if simple {
        vec![Format::Sqlx]
    } else {
        Vec::new()
    };
    if flyway && from_files != [Format::Drizzle] {
        from_files.insert(0, Format::Flyway);
    }
    let set = Format::settings;
    match (from_files.as_slice(), ledger_says) {
        ([], Some(format)) => Ok(format),
        ([], None) => Err(MigrateError::Files(format!(
            "no migrations found in {} and no ledger in the database to tell their format\n  help: set [migrations] {} (`pgmaint migrate new NAME` then writes the first one); for migrations that are code (knex, Rails, Django, Prisma), format = \"command\" runs the application's own migrator, which auto never picks",
            dir.display(),
            set(&Format::ALL)
        ))),
        ([only], None) => Ok(*only),
        (candidates, Some(format)) if candidates.contains(&format) => Ok(format),
        (candidates, Some(format)) => Err(MigrateError::Files(format!(
            "the files in {} look like {} migrations but the database keeps a {} ledger\n  help: set [migrations] {}",
            dir.display(),
            candidates
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
            format.as_str(),
            set(&[candidates[0], format])
        ))),
        (candidates, None) => Err(MigrateError::Files(format!(
            "the files in {} could be {} migrations, and the database has no ledger yet to tell\n  help: set [migrations] {}",
            dir.display(),
            candidates
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
            set(candidates)
        ))),
    }
}

/// Every migration in `settings.dir`, in version order, as `format` reads
/// them: an up from a simple or `.up.sql` file, its down from the
/// `.down.sql` beside it or, for a simple one, `down_dir`'s
/// `<version>_<name>_down.sql`.
pub(crate) fn read(settings: &Settings, format: Format) -> Result<Vec<Migration>, MigrateError> {
    match format {
        Format::Dbmate => return read_dbmate(settings),
        Format::Flyway => return flyway::read(settings),
        Format::Drizzle => return drizzle::read(settings),
        _ => {}
    }
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
        if matches!(format, Format::Pgmaint | Format::GolangMigrate) && parsed.kind == Kind::Simple
        {
            problems.push(format!(
                "{file}: {} migrations come in pairs, `<version>_<name>.up.sql` and `.down.sql`",
                format.as_str()
            ));
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
        // Other formats' tools order by version alone.
        let listed = if format == Format::Pgmaint {
            header.depends.clone()
        } else {
            Vec::new()
        };
        for dep in &listed {
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
                _ => name,
            },
            up,
            down,
            irreversible,
            depends,
            repeatable: false,
        });
    }
    for (version, script) in downs {
        problems.push(format!(
            "{}: a down without an up (version {version})",
            script.path.display()
        ));
    }
    if !problems.is_empty() {
        return Err(problems_error(settings, &problems));
    }
    order(migrations)
}

/// dbmate's folder: every `<digits>...sql` file, its version the leading
/// digits as written (the ledger keeps that text), its up the block from
/// `-- migrate:up` to `-- migrate:down` and its down the rest, each with
/// its `transaction:false` option, as dbmate splits them.
fn read_dbmate(settings: &Settings) -> Result<Vec<Migration>, MigrateError> {
    let mut problems = Vec::new();
    let mut migrations: Vec<Migration> = Vec::new();
    for file in files_of(&settings.dir)? {
        let digits = file
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(file.len());
        if digits == 0 || !file.ends_with(".sql") {
            continue;
        }
        let written = &file[..digits];
        let Ok(version) = written.parse::<i64>() else {
            problems.push(format!("{file}: its version {written} is too long"));
            continue;
        };
        let path = settings.dir.join(&file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            MigrateError::Files(format!("cannot read migration {}: {e}", path.display()))
        })?;
        let (up, down) = match dbmate_blocks(&text) {
            Ok(blocks) => blocks,
            Err(problem) => {
                problems.push(format!("{file}: {problem}"));
                continue;
            }
        };
        if migrations.iter().any(|m| m.version == version) {
            problems.push(format!("version {written} is used twice"));
            continue;
        }
        let name = file[digits..]
            .trim_start_matches('_')
            .trim_end_matches(".sql")
            .to_string();
        let script = |(text, transactional): (String, bool)| Script {
            path: path.clone(),
            text,
            transactional,
        };
        let down = script(down);
        let has_down = down.text.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with("--")
        });
        migrations.push(Migration {
            version,
            written: written.to_string(),
            name,
            irreversible: marked_irreversible(&text)
                || settings.irreversible.iter().any(|v| v == written),
            up: script(up),
            down: has_down.then_some(down),
            depends: Vec::new(),
            repeatable: false,
        });
    }
    if !problems.is_empty() {
        return Err(problems_error(settings, &problems));
    }
    migrations.sort_by_key(|m| m.version);
    Ok(migrations)
}

/// The error listing why a folder's migrations cannot be used.
pub(super) fn problems_error(settings: &Settings, problems: &[String]) -> MigrateError {
    MigrateError::Files(format!(
        "the migrations in {} cannot be used:\n{}",
        settings.dir.display(),
        problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

/// A block's text and whether it runs in a transaction.
type Block = (String, bool);

/// A dbmate file's up and down blocks (each from its marker line on) and
/// whether each runs in a transaction.
fn dbmate_blocks(text: &str) -> Result<(Block, Block), String> {
    let marker = |name: &str| {
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            let rest = line.trim_start_matches([' ', '\t']);
            if let Some(after) = rest.strip_prefix("--")
                && let Some(options) = after.trim_start().strip_prefix(name)
                && (options.trim().is_empty() || options.starts_with([' ', '\t']))
            {
                return Some((
                    at,
                    !options.split_whitespace().any(|o| o == "transaction:false"),
                ));
            }
            at += line.len();
        }
        None
    };
    let Some((up_at, up_tx)) = marker("migrate:up") else {
        return Err("dbmate migrations define an up block with `-- migrate:up`".into());
    };
    let Some((down_at, down_tx)) = marker("migrate:down") else {
        return Err("dbmate migrations define a down block with `-- migrate:down`".into());
    };
    if up_at > down_at {
        return Err("`-- migrate:up` comes before `-- migrate:down`".into());
    }
    if text[down_at..].matches("migrate:up").count() > 0 {
        return Err(
            "several up/down sections in one file are not supported: split them into files".into(),
        );
    }
    Ok((
        (text[up_at..down_at].to_string(), up_tx),
        (text[down_at..].to_string(), down_tx),
    ))
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
    fn dbmate_blocks_split_as_dbmate_splits_them() {
        let ((up, up_tx), (down, down_tx)) = dbmate_blocks(
            "-- a comment\n-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (a);\n\n-- migrate:down\nDROP INDEX i;\n",
        )
        .unwrap();
        assert!(
            up.starts_with("-- migrate:up") && up.contains("CONCURRENTLY") && !up.contains("DROP")
        );
        assert!(!up_tx && down_tx);
        assert_eq!(down, "-- migrate:down\nDROP INDEX i;\n");
        assert!(dbmate_blocks("CREATE TABLE t ();").is_err());
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
            repeatable: false,
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

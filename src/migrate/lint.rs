//! The lock and safety lint of a migration's files: squawk's rules (the
//! pure-Rust `squawk-linter`, told the server's version and whether each
//! file runs in a transaction) plus pgmaint's own, each given a level in
//! `LEVELS` (squawk has none): an error for what takes a long lock or
//! rewrites an existing table, a warning for the rest. `-- squawk-ignore
//! RULE` in a file and `[migrations] lint_exclude` silence a rule.

use serde::Serialize;
use squawk_linter::{Linter, Rule};

use super::apply::Direction;
use super::{Migration, Script};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// The rules that are errors: each takes a lock that blocks the table's
/// writes (or reads) for as long as it works through the table, rewrites
/// it, or cannot run as written. Every other rule is a warning.
pub const ERRORS: &[(&str, &str)] = &[
    (
        "require-concurrent-index-creation",
        "builds an index under a SHARE lock: writes wait for the whole build",
    ),
    (
        "require-concurrent-index-deletion",
        "drops an index under ACCESS EXCLUSIVE: reads and writes wait",
    ),
    (
        "require-concurrent-reindex",
        "rebuilds indexes under a lock that blocks writes",
    ),
    (
        "require-concurrent-partition-detach",
        "detaches a partition under ACCESS EXCLUSIVE on the parent",
    ),
    (
        "constraint-missing-not-valid",
        "checks every row under a lock that blocks writes",
    ),
    (
        "adding-foreign-key-constraint",
        "checks every row under a lock on both tables",
    ),
    (
        "adding-field-with-default",
        "a volatile default rewrites the table under ACCESS EXCLUSIVE",
    ),
    (
        "changing-column-type",
        "rewrites the table under ACCESS EXCLUSIVE",
    ),
    (
        "adding-not-nullable-field",
        "SET NOT NULL scans the table under ACCESS EXCLUSIVE",
    ),
    (
        "adding-required-field",
        "a NOT NULL column without a default fails on a table with rows",
    ),
    (
        "disallowed-unique-constraint",
        "builds the unique index in place under ACCESS EXCLUSIVE",
    ),
    (
        "adding-serial-primary-key-field",
        "builds the primary key's index in place under ACCESS EXCLUSIVE",
    ),
    (
        "prefer-repack",
        "VACUUM FULL and CLUSTER rewrite the table under ACCESS EXCLUSIVE",
    ),
    (
        "ban-concurrent-index-creation-in-transaction",
        "CONCURRENTLY cannot run inside a transaction: the file fails",
    ),
    (
        MISSING_DOWN,
        "`migrate up` refuses a migration without a down while require_down is on",
    ),
    (
        NOT_IN_TRANSACTION,
        "PostgreSQL refuses this statement inside a transaction: the file fails",
    ),
    (
        "transaction-nesting",
        "pgmaint runs each file in its own transaction",
    ),
    (
        "ban-uncommitted-transaction",
        "pgmaint runs each file in its own transaction",
    ),
];

/// squawk's rules pgmaint turns off: it sets both timeouts itself on
/// every statement.
const OFF: &[Rule] = &[
    Rule::RequireLockTimeout,
    Rule::RequireStatementTimeout,
    Rule::RequireTimeoutSettings,
];

/// pgmaint's own rules.
pub const MISSING_DOWN: &str = "pgmaint-missing-down";
pub const NOT_RESUMABLE: &str = "pgmaint-not-resumable";
pub const NOT_IN_TRANSACTION: &str = "pgmaint-not-in-transaction";
const CONCURRENT_IN_TRANSACTION: &str = "ban-concurrent-index-creation-in-transaction";

/// Whether an error-level rule is about the locks it takes on a table
/// with readers and writers (and not about a statement that fails).
pub fn is_about_locks(rule: &str) -> bool {
    ![
        CONCURRENT_IN_TRANSACTION,
        MISSING_DOWN,
        NOT_IN_TRANSACTION,
        "transaction-nesting",
        "ban-uncommitted-transaction",
    ]
    .contains(&rule)
}

/// The level of a rule, by name.
pub fn level_of(rule: &str) -> Level {
    if ERRORS.iter().any(|(name, _)| *name == rule) {
        Level::Error
    } else {
        Level::Warning
    }
}

/// One finding, at a place in a file.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: String,
    pub level: Level,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
    /// The migration, as written, and whether its up or its down.
    pub version: String,
    pub direction: Direction,
    /// The text the finding points at (its first line), for the caret.
    #[serde(skip)]
    pub source_line: String,
    #[serde(skip)]
    pub width: usize,
}

impl Finding {
    /// `file:line:col: error[rule]: message`, for a list of reasons.
    pub fn one_line(&self) -> String {
        format!(
            "{}:{}:{}: {}[{}]: {}",
            self.file,
            self.line,
            self.column,
            self.level.as_str(),
            self.rule,
            self.message
        )
    }

    /// rustc's layout: the rule, the place, the line with a caret, the fix.
    pub fn render(&self) -> String {
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        let mut text = format!(
            "{}[{}]: {}\n{pad}--> {}:{}:{}\n{pad} |\n{} | {}\n{pad} | {}{}",
            self.level.as_str(),
            self.rule,
            self.message,
            self.file,
            self.line,
            self.column,
            self.line,
            self.source_line,
            " ".repeat(self.column.saturating_sub(1)),
            "^".repeat(self.width.max(1)),
        );
        if let Some(why) = ERRORS.iter().find(|(r, _)| *r == self.rule).map(|(_, w)| w) {
            text.push_str(&format!("\n{pad} = why: {why}"));
        }
        if let Some(help) = &self.help {
            text.push_str(&format!("\n{pad} = help: {help}"));
        }
        text
    }
}

/// What linting needs beyond the files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The server's version (`15.4`); `None`: squawk's default.
    pub pg_version: Option<String>,
    /// `[migrations] lint_exclude`.
    pub exclude: Vec<String>,
    /// Whether a migration without a down is a finding.
    pub require_down: bool,
}

/// The findings of `m`'s up and down, in file order.
pub fn migration(m: &Migration, options: &Options) -> Vec<Finding> {
    let mut findings = up(m, options);
    if let Some(down) = &m.down {
        findings.extend(script(m, down, Direction::Down, options));
    }
    findings
}

/// The findings of `m`'s up, and of its missing down: what `up` weighs.
pub fn up(m: &Migration, options: &Options) -> Vec<Finding> {
    let mut findings = script(m, &m.up, Direction::Up, options);
    if options.require_down
        && m.down.is_none()
        && !m.irreversible
        && !m.repeatable
        && !excluded(MISSING_DOWN, options)
    {
        findings.push(own_finding(
            m,
            &m.up,
            Direction::Up,
            MISSING_DOWN,
            (1, 1),
            "this migration has no down, and require_down is on",
            "write its down, mark it irreversible with a `-- pgmaint: irreversible` line, or set [migrations] require_down = false",
        ));
    }
    findings
}

fn excluded(rule: &str, options: &Options) -> bool {
    options.exclude.iter().any(|r| r == rule)
}

/// Whether a file says `-- squawk-ignore RULE` (or the file-wide form).
fn ignored_in(text: &str, rule: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start()
            .strip_prefix("--")
            .map(str::trim_start)
            .and_then(|l| {
                l.strip_prefix("squawk-ignore-file")
                    .or_else(|| l.strip_prefix("squawk-ignore"))
            })
            .is_some_and(|names| names.split([',', ' ']).any(|n| n.trim() == rule))
    })
}

fn own_finding(
    m: &Migration,
    script: &Script,
    direction: Direction,
    rule: &str,
    (line, column): (usize, usize),
    message: &str,
    help: &str,
) -> Finding {
    let source_line = script.text.lines().nth(line - 1).unwrap_or("").to_string();
    Finding {
        rule: rule.to_string(),
        level: level_of(rule),
        file: script.path.display().to_string(),
        line,
        column,
        message: message.to_string(),
        help: Some(help.to_string()),
        version: m.written.clone(),
        direction,
        width: source_line.chars().count().saturating_sub(column - 1),
        source_line,
    }
}

/// The findings of one script.
pub fn script(
    m: &Migration,
    script: &Script,
    direction: Direction,
    options: &Options,
) -> Vec<Finding> {
    let mut off: Vec<Rule> = OFF.to_vec();
    for name in &options.exclude {
        if let Ok(rule) = name.parse::<Rule>() {
            off.push(rule);
        }
    }
    let mut linter = Linter::with_rules(&[], &off);
    if direction == Direction::Down {
        // A down exists to drop what its up made.
        linter
            .rules
            .retain(|rule| !rule.to_string().starts_with("ban-drop-"));
    }
    linter.settings.assume_in_transaction = script.transactional;
    if let Some(version) = options.pg_version.as_deref().and_then(|v| v.parse().ok()) {
        linter.settings.pg_version = version;
    }
    let parse = squawk_syntax::SourceFile::parse(&script.text);
    let mut findings: Vec<Finding> = linter
        .lint(&parse, &script.text)
        .into_iter()
        .map(|v| {
            let start = usize::from(v.text_range.start());
            let end = usize::from(v.text_range.end());
            let (line, column) = super::statements::position(&script.text, start);
            let source_line = script.text.lines().nth(line - 1).unwrap_or("").to_string();
            let on_line = script.text[start..end.min(script.text.len())]
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .count();
            Finding {
                rule: v.code.to_string(),
                level: level_of(&v.code.to_string()),
                file: script.path.display().to_string(),
                line,
                column,
                message: v.message,
                help: v.help,
                version: m.written.clone(),
                direction,
                source_line,
                width: on_line,
            }
        })
        .collect();
    if script.transactional {
        for (rule, offset, width, what) in not_in_transaction(&parse) {
            let already = findings.iter().any(|f| {
                f.rule == rule
                    && (f.line, f.column) == super::statements::position(&script.text, offset)
            });
            if already || excluded(rule, options) || ignored_in(&script.text, rule) {
                continue;
            }
            let mut f = own_finding(
                m,
                script,
                direction,
                rule,
                super::statements::position(&script.text, offset),
                &format!("{what} cannot run inside a transaction, and this file runs in one"),
                "start the file with the format's no-transaction marker (sqlx: `-- no-transaction`, dbmate: `-- migrate:up transaction:false`, pgmaint: `-- pgmaint: transaction=none`) and keep the statement alone in it",
            );
            f.width = width;
            findings.push(f);
        }
    }
    if !script.transactional
        && !excluded(NOT_RESUMABLE, options)
        && !ignored_in(&script.text, NOT_RESUMABLE)
    {
        findings.extend(not_resumable(m, script, direction));
    }
    findings
}

/// The statements PostgreSQL refuses inside a transaction block, with the
/// offset and width of the word that makes them so. squawk reports a
/// `CREATE INDEX CONCURRENTLY` only in files of several statements (a
/// lone statement runs in its own implicit transaction); pgmaint runs a
/// transactional file with its ledger row in one, so a lone one fails too.
fn not_in_transaction(
    parse: &squawk_syntax::Parse<squawk_syntax::SourceFile>,
) -> Vec<(&'static str, usize, usize, &'static str)> {
    use squawk_syntax::SyntaxKind;
    use squawk_syntax::ast::{self, AstNode};
    let concurrently = |node: &squawk_syntax::SyntaxNode| {
        node.descendants_with_tokens()
            .filter_map(|e| e.into_token())
            .find(|t| t.kind() == SyntaxKind::CONCURRENTLY_KW)
    };
    let first_word = |node: &squawk_syntax::SyntaxNode| {
        node.descendants_with_tokens()
            .filter_map(|e| e.into_token())
            .find(|t| !t.kind().is_trivia())
    };
    let mut found = Vec::new();
    for stmt in parse.tree().stmts() {
        let node = stmt.syntax().clone();
        let hit = match stmt {
            ast::Stmt::CreateIndex(_) => concurrently(&node)
                .map(|t| (CONCURRENT_IN_TRANSACTION, t, "CREATE INDEX CONCURRENTLY")),
            ast::Stmt::DropIndex(_) => {
                concurrently(&node).map(|t| (NOT_IN_TRANSACTION, t, "DROP INDEX CONCURRENTLY"))
            }
            ast::Stmt::Reindex(_) => {
                concurrently(&node).map(|t| (NOT_IN_TRANSACTION, t, "REINDEX CONCURRENTLY"))
            }
            ast::Stmt::AlterTable(_) => concurrently(&node)
                .map(|t| (NOT_IN_TRANSACTION, t, "DETACH PARTITION ... CONCURRENTLY")),
            ast::Stmt::Vacuum(_) => first_word(&node).map(|t| (NOT_IN_TRANSACTION, t, "VACUUM")),
            ast::Stmt::CreateDatabase(_) => {
                first_word(&node).map(|t| (NOT_IN_TRANSACTION, t, "CREATE DATABASE"))
            }
            ast::Stmt::DropDatabase(_) => {
                first_word(&node).map(|t| (NOT_IN_TRANSACTION, t, "DROP DATABASE"))
            }
            ast::Stmt::AlterSystem(_) => {
                first_word(&node).map(|t| (NOT_IN_TRANSACTION, t, "ALTER SYSTEM"))
            }
            _ => None,
        };
        if let Some((rule, token, what)) = hit {
            let range = token.text_range();
            found.push((
                rule,
                usize::from(range.start()),
                usize::from(range.len()),
                what,
            ));
        }
    }
    found
}

/// In a file run statement by statement, a statement that leaves session
/// state later statements may rely on (`SET`, a temporary table, a
/// prepared statement, a cursor): a rerun resumes after it, without it.
fn not_resumable(m: &Migration, script: &Script, direction: Direction) -> Vec<Finding> {
    let Ok(statements) = super::statements::split(&script.text) else {
        return Vec::new();
    };
    if statements.len() < 2 {
        return Vec::new();
    }
    let last = statements.len() - 1;
    statements
        .iter()
        .take(last)
        .filter(|s| {
            let words: Vec<String> = s
                .first_line()
                .split_whitespace()
                .take(3)
                .map(|w| w.to_ascii_uppercase())
                .collect();
            let starts = |p: &[&str]| words.len() >= p.len() && words.iter().zip(p).all(|(w, p)| w == p);
            (starts(&["SET"]) && !starts(&["SET", "LOCAL"]))
                || starts(&["CREATE", "TEMP"])
                || starts(&["CREATE", "TEMPORARY"])
                || starts(&["PREPARE"])
                || starts(&["DECLARE"])
        })
        .map(|s| {
            own_finding(
                m,
                script,
                direction,
                NOT_RESUMABLE,
                (s.line, s.column),
                "this file runs statement by statement, and this statement leaves session state for the ones after it: a rerun after a failure resumes past it, without it",
                "move what the later statements need into each of them, or run the file in one transaction",
            )
        })
        .collect()
}

/// Every rule's name, squawk's and pgmaint's: what `lint_exclude` and
/// `-- squawk-ignore` may name.
pub fn known_rules() -> Vec<String> {
    let mut names: Vec<String> = Linter::with_rules(&[], &[])
        .rules
        .iter()
        .map(|r| r.to_string())
        .collect();
    names.extend([MISSING_DOWN, NOT_RESUMABLE, NOT_IN_TRANSACTION].map(String::from));
    names.sort();
    names
}

/// The server's version as squawk reads it (`15.18`), from
/// `server_version_num`.
pub async fn server_version(
    client: &tokio_postgres::Client,
) -> Result<String, tokio_postgres::Error> {
    let row = crate::db::read_only_row(
        client,
        "SELECT current_setting('server_version_num')::int",
        &[],
    )
    .await?;
    Ok(version_from_num(row.get(0)))
}

pub(crate) fn version_from_num(num: i32) -> String {
    if num >= 100_000 {
        format!("{}.{}", num / 10_000, num % 10_000)
    } else {
        format!("{}.{}.{}", num / 10_000, num / 100 % 100, num % 100)
    }
}

/// Any error among `findings`.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn migration(up: &str, transactional: bool) -> Migration {
        Migration {
            version: 2,
            written: "0002".into(),
            name: "x".into(),
            up: Script {
                path: PathBuf::from("migrations/0002_x.sql"),
                text: up.into(),
                transactional,
            },
            down: None,
            irreversible: true,
            depends: Vec::new(),
            repeatable: false,
        }
    }

    #[test]
    fn a_plain_index_build_is_an_error_at_its_place() {
        let m = migration(
            "-- users\nCREATE INDEX users_email ON users (email);\n",
            true,
        );
        let found = super::migration(&m, &Options::default());
        let f = found
            .iter()
            .find(|f| f.rule == "require-concurrent-index-creation")
            .expect("flagged");
        assert_eq!((f.level, f.line, f.column), (Level::Error, 2, 1));
        let text = f.render();
        assert!(
            text.starts_with("error[require-concurrent-index-creation]"),
            "{text}"
        );
        assert!(text.contains("--> migrations/0002_x.sql:2:1"), "{text}");
        assert!(text.contains("^^^^"), "{text}");
        assert!(
            !found
                .iter()
                .any(|f| f.rule.starts_with("require-lock-timeout")),
            "pgmaint sets the timeouts itself"
        );
    }

    #[test]
    fn ignores_and_excludes_silence_a_rule() {
        let m = migration(
            "-- squawk-ignore require-concurrent-index-creation\nCREATE INDEX users_email ON users (email);\n",
            true,
        );
        assert!(!has_errors(&super::migration(&m, &Options::default())));
        let m = migration("CREATE INDEX users_email ON users (email);\n", true);
        let options = Options {
            exclude: vec!["require-concurrent-index-creation".into()],
            ..Options::default()
        };
        assert!(!has_errors(&super::migration(&m, &options)));
    }

    #[test]
    fn concurrently_in_a_transactional_file_is_an_error_and_fine_outside() {
        let text = "CREATE INDEX CONCURRENTLY users_email ON users (email);\n";
        let inside = super::migration(&migration(text, true), &Options::default());
        assert!(
            inside
                .iter()
                .any(|f| f.rule == "ban-concurrent-index-creation-in-transaction"
                    && f.level == Level::Error)
        );
        assert!(!has_errors(&super::migration(
            &migration(text, false),
            &Options::default()
        )));
    }

    #[test]
    fn the_server_version_reaches_squawk() {
        assert_eq!(version_from_num(150018), "15.18");
        assert_eq!(version_from_num(90624), "9.6.24");
        // Before PostgreSQL 11 any default rewrote the table.
        let m = migration("ALTER TABLE users ADD COLUMN n int DEFAULT 0;\n", true);
        let on = |v: &str| {
            super::migration(
                &m,
                &Options {
                    pg_version: Some(v.into()),
                    ..Options::default()
                },
            )
            .iter()
            .any(|f| f.rule == "adding-field-with-default")
        };
        assert!(on("10.0"), "a default rewrites on 10");
        assert!(!on("15.18"), "a constant default is free on 15");
    }

    #[test]
    fn vacuum_and_concurrent_drops_in_a_transactional_file_are_errors() {
        for text in [
            "VACUUM users;\n",
            "DROP INDEX CONCURRENTLY users_email;\n",
            "REINDEX INDEX CONCURRENTLY users_email;\n",
        ] {
            let inside = super::migration(&migration(text, true), &Options::default());
            assert!(
                inside
                    .iter()
                    .any(|f| f.rule == NOT_IN_TRANSACTION && f.level == Level::Error),
                "{text}: {inside:?}"
            );
            let outside = super::migration(&migration(text, false), &Options::default());
            assert!(
                !outside.iter().any(|f| f.rule == NOT_IN_TRANSACTION),
                "{text}: {outside:?}"
            );
        }
    }

    #[test]
    fn session_state_in_a_statement_by_statement_file_is_not_resumable() {
        let m = migration(
            "SET maintenance_work_mem = '1GB';\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
            false,
        );
        let found = super::migration(&m, &Options::default());
        assert!(
            found.iter().any(|f| f.rule == NOT_RESUMABLE && f.line == 1),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_down_is_a_finding_unless_irreversible() {
        let mut m = migration("CREATE TABLE t (id bigint);\n", true);
        m.irreversible = false;
        let required = Options {
            require_down: true,
            ..Options::default()
        };
        let found = super::migration(&m, &required);
        assert!(
            found
                .iter()
                .any(|f| f.rule == MISSING_DOWN && f.level == Level::Error)
        );
        assert!(
            !super::migration(&m, &Options::default())
                .iter()
                .any(|f| f.rule == MISSING_DOWN),
            "a format without downs"
        );
        m.irreversible = true;
        assert!(
            !super::migration(&m, &required)
                .iter()
                .any(|f| f.rule == MISSING_DOWN)
        );
    }

    #[test]
    fn downs_may_drop_what_their_up_made() {
        let mut m = migration("ALTER TABLE users ADD COLUMN bio text;\n", true);
        m.down = Some(Script {
            path: PathBuf::from("migrations/0002_x.down.sql"),
            text: "ALTER TABLE users DROP COLUMN bio;\n".into(),
            transactional: true,
        });
        let found = super::migration(&m, &Options::default());
        assert!(
            !found.iter().any(|f| f.rule.starts_with("ban-drop-")),
            "{found:?}"
        );
    }
}

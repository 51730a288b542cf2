//! Where each migration stands: the files against the ledger and against
//! what pgmaint last ran of each (`store::schema_migrations`). Applied,
//! pending, failed (which statement, why, and what `up` does next),
//! modified (and whether only line endings, whitespace or comments
//! changed), missing, out of order.

use serde::Serialize;

use super::Migration;
use super::ledger::{Applied, Ledger};
use crate::store::schema_migrations::MigrationRun;

/// What changed in a file since it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    LineEndings,
    Whitespace,
    Comments,
    Statements,
    /// pgmaint did not apply it, so it does not have the applied text.
    Unknown,
}

impl Change {
    pub fn says(self) -> &'static str {
        match self {
            Change::LineEndings => "only its line endings changed",
            Change::Whitespace => "only whitespace changed",
            Change::Comments => "only comments (and whitespace) changed",
            Change::Statements => "its statements changed",
            Change::Unknown => {
                "changed since it was applied (pgmaint did not apply it, so it cannot tell how)"
            }
        }
    }
}

/// One migration's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum State {
    Applied,
    Pending,
    /// A run stopped at a statement (or its process died while running it).
    Failed {
        direction: String,
        statement: i32,
        statements: i32,
        /// Whether the file ran in one transaction (rolled back whole, so
        /// a rerun starts at its first statement).
        transactional: bool,
        error: Option<String>,
    },
    Modified {
        change: Change,
    },
    /// In the ledger, no file.
    Missing,
    /// sqlx's `success = false`.
    Dirty,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The key pgmaint's records use (not shown: Flyway's dotted versions
    /// are keyed by a hash).
    #[serde(skip)]
    pub version: i64,
    /// The version as the files and the ledger write it.
    #[serde(rename = "version")]
    pub written: String,
    pub name: String,
    #[serde(flatten)]
    pub state: State,
    /// Pending with a lower version than one applied.
    pub out_of_order: bool,
    pub has_down: bool,
    pub transactional: bool,
    pub irreversible: bool,
}

impl Entry {
    /// What `status` prints after the version and name.
    pub fn says(&self) -> String {
        let mut text = match &self.state {
            State::Applied => "applied".to_string(),
            State::Pending => "pending".to_string(),
            State::Failed {
                direction,
                statement,
                statements,
                transactional: false,
                error,
            } => format!(
                "failed: its {direction} stopped at statement {statement} of {statements}{}; `migrate {direction}` resumes at statement {statement}",
                error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            State::Failed {
                direction,
                transactional: true,
                error,
                ..
            } => format!(
                "failed: its {direction} was rolled back whole{}; `migrate {direction}` runs it again from its first statement",
                error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            State::Modified { change } => format!("modified: {}", change.says()),
            State::Missing => "missing: applied, but no file has this version".to_string(),
            State::Dirty => {
                "dirty: the ledger says it was partly applied (success = false)".to_string()
            }
        };
        if self.out_of_order {
            text.push_str(" (out of order: a later version is applied)");
        }
        text
    }

    /// Whether this is what `status --exit-code` passes with.
    pub fn is_clean(&self) -> bool {
        self.state == State::Applied
    }
}

/// The state of every migration, files and ledger rows, in the files'
/// order then the missing ones.
pub fn entries(
    migrations: &[Migration],
    applied: &[Applied],
    runs: &[MigrationRun],
    kept_by: &Ledger,
) -> Vec<Entry> {
    let done = |version: i64| applied.iter().any(|a| a.version == version && a.success);
    // The last file (in the format's order) the ledger says is applied,
    // and the highest version of an applied row whose file is gone.
    // Repeatables come last and are never out of order.
    let last_applied = migrations
        .iter()
        .rposition(|m| !m.repeatable && done(m.version));
    let highest_missing = applied
        .iter()
        .filter(|a| a.success && !migrations.iter().any(|m| m.version == a.version))
        .map(|a| a.version)
        .max();
    let mut entries = Vec::new();
    for (at, m) in migrations.iter().enumerate() {
        let ledger = applied.iter().find(|a| a.version == m.version);
        let run = runs.iter().find(|r| r.version == m.version);
        let checksum = m.up.checksum();
        let kept_now = kept_by.checksum(&m.up.text);
        let script_of = |direction: &str| match direction {
            "down" => m.down.as_ref().is_none_or(|d| d.transactional),
            _ => m.up.transactional,
        };
        let unfinished = run.filter(|r| r.status != "done");
        let state = match (ledger, unfinished) {
            // A run pgmaint can resume says more than a dirty flag.
            // A transactional down that failed changed nothing: the
            // migration is as applied as it was.
            (_, Some(r))
                if (r.direction == "down" && !script_of("down"))
                    || ledger.is_none_or(|a| !a.success) =>
            {
                failed(r, script_of(&r.direction))
            }
            (Some(a), _) if !a.success => State::Dirty,
            (Some(a), _) => {
                // What pgmaint last ran of the up, when it still stands.
                let ran = run.filter(|r| r.direction == "up" && r.status == "done");
                match &a.checksum {
                    Some(kept) if Some(kept) == kept_now.as_ref() => State::Applied,
                    Some(kept) => State::Modified {
                        change: match ran
                            .filter(|r| kept_by.checksum(&r.sql_text).as_ref() == Some(kept))
                        {
                            Some(r) => change(&r.sql_text, &m.up.text),
                            None => Change::Unknown,
                        },
                    },
                    // A ledger without checksums: pgmaint's record of the
                    // text it applied tells a changed file.
                    None => match ran {
                        Some(r) if r.checksum != checksum => State::Modified {
                            change: change(&r.sql_text, &m.up.text),
                        },
                        _ => State::Applied,
                    },
                }
            }
            (None, _) => State::Pending,
        };
        let out_of_order = matches!(state, State::Pending | State::Failed { .. })
            && !m.repeatable
            && ledger.is_none()
            && (last_applied.is_some_and(|last| last > at)
                // Versions are comparable when they are numbers (Flyway's
                // dotted ones are keyed otherwise, see source::flyway).
                || highest_missing.is_some_and(|h| m.version >= 0 && h > m.version));
        entries.push(Entry {
            version: m.version,
            written: m.written.clone(),
            name: m.name.clone(),
            state,
            out_of_order,
            has_down: m.down.is_some(),
            transactional: m.up.transactional,
            irreversible: m.irreversible,
        });
    }
    for a in applied {
        if !migrations.iter().any(|m| m.version == a.version) {
            entries.push(Entry {
                version: a.version,
                written: a.written.clone(),
                name: String::new(),
                state: State::Missing,
                out_of_order: false,
                has_down: false,
                transactional: true,
                irreversible: false,
            });
        }
    }
    entries
}

fn failed(run: &MigrationRun, transactional: bool) -> State {
    State::Failed {
        direction: run.direction.clone(),
        statement: if transactional {
            1
        } else {
            (run.statements_done + 1).min(run.statements_total.max(1))
        },
        statements: run.statements_total,
        transactional,
        error: run.error.clone().or_else(|| {
            (run.status == "running").then(|| "its process stopped while running it".to_string())
        }),
    }
}

/// How `now` differs from the `applied` text.
pub fn change(applied: &str, now: &str) -> Change {
    if applied == now {
        return Change::Statements;
    }
    if applied.replace("\r\n", "\n") == now.replace("\r\n", "\n") {
        return Change::LineEndings;
    }
    if tokens(applied, false) == tokens(now, false) {
        return Change::Whitespace;
    }
    if tokens(applied, true) == tokens(now, true) {
        return Change::Comments;
    }
    Change::Statements
}

/// The text's tokens without whitespace, and without comments when asked.
fn tokens(text: &str, drop_comments: bool) -> Vec<&str> {
    use squawk_lexer::TokenKind;
    let mut at = 0usize;
    let mut out = Vec::new();
    for token in squawk_lexer::tokenize(text) {
        let piece = &text[at..at + token.len as usize];
        at += token.len as usize;
        match token.kind {
            TokenKind::Whitespace => {}
            TokenKind::LineComment | TokenKind::BlockComment { .. } if drop_comments => {}
            TokenKind::LineComment => out.push(piece.trim_end()),
            _ => out.push(piece),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_told_apart() {
        let applied = "CREATE TABLE t (id int);\n-- the users\nCREATE INDEX ON t (id);\n";
        assert_eq!(
            change(applied, &applied.replace('\n', "\r\n")),
            Change::LineEndings
        );
        assert_eq!(
            change(
                applied,
                "CREATE TABLE t (id   int);\n-- the users\n\nCREATE INDEX ON t (id);\n"
            ),
            Change::Whitespace
        );
        assert_eq!(
            change(
                applied,
                "CREATE TABLE t (id int); -- users\nCREATE INDEX ON t (id);"
            ),
            Change::Comments
        );
        assert_eq!(
            change(
                applied,
                "CREATE TABLE t (id bigint);\nCREATE INDEX ON t (id);"
            ),
            Change::Statements
        );
        assert_eq!(
            change("SELECT 'a  b';", "SELECT 'a b';"),
            Change::Statements,
            "inside a string whitespace counts"
        );
    }
}

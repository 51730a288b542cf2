//! A config problem with its place in the file, printed the way compilers
//! print errors: `file:line:column: key: what is wrong`, then how to fix it.

use std::{fmt, ops::Range, path::Path, sync::Arc};

use serde::Serialize;

/// Where in a file: the file alone when no position is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// One problem; serialized as the `problems` of the JSON error document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub location: Location,
    /// Dotted key path, e.g. `tasks.old_logs.older_than`.
    pub key: String,
    pub message: String,
    pub help: Option<String>,
    /// A name that may be a typo of one of these: the nearest is added to
    /// the message if the problem is listed (`suggest_for_listed`).
    #[serde(skip)]
    near: Option<(String, Arc<[String]>)>,
}

/// The most problems an error lists; the rest are counted.
pub const LISTED_PROBLEMS: usize = 100;

/// Adds "did you mean" to the first `LISTED_PROBLEMS` problems (in file
/// order) that may name a typo: finding the nearest of 100,000 task
/// names for each of 10,000 schedules took minutes, and only the listed
/// ones are shown. Problems found later (by `check`, in the database)
/// only push these further down the list, never up.
pub(crate) fn suggest_for_listed(problems: &mut [Problem]) {
    for (i, problem) in problems.iter_mut().enumerate() {
        let Some((word, among)) = problem.near.take() else {
            continue;
        };
        if i < LISTED_PROBLEMS
            && let Some(near) = super::source::nearest(&word, among.iter().map(String::as_str))
        {
            problem
                .message
                .push_str(&format!("; did you mean `{near}`?"));
        }
    }
}

impl Problem {
    pub(crate) fn new(
        location: Location,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            location,
            key: key.into(),
            message: message.into(),
            help: None,
            near: None,
        }
    }

    /// `word` may be a typo of one of `among` (see `suggest_for_listed`).
    pub(crate) fn suggesting(mut self, word: &str, among: &Arc<[String]>) -> Self {
        self.near = Some((word.to_string(), among.clone()));
        self
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:column`, or just the file.
    pub fn place(&self) -> String {
        self.location.to_string()
    }

    /// Orders problems as they appear in the file (file-wide ones first).
    pub fn position(&self) -> (usize, usize) {
        (
            self.location.line.unwrap_or(0),
            self.location.column.unwrap_or(0),
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one config, shown together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The location of a byte offset (1-based line and column, counting
/// characters, as editors do).
pub(crate) fn place(file: &Path, text: &str, span: Option<Range<usize>>) -> Location {
    let file = file.display().to_string();
    let Some(span) = span else {
        return Location {
            file,
            line: None,
            column: None,
        };
    };
    let offset = span.start.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Location {
        file,
        line: Some(line),
        column: Some(column),
    }
}

/// Where each line of a text starts, so that placing a problem costs a
/// binary search rather than a scan of the text before it (a config with
/// tens of thousands of problems is placed in linear time).
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        LineIndex {
            starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        }
    }

    /// `place`, through the index of `text`.
    pub(crate) fn place(&self, file: &Path, text: &str, span: Option<Range<usize>>) -> Location {
        let Some(span) = span else {
            return place(file, text, None);
        };
        let offset = span.start.min(text.len());
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts[line - 1];
        Location {
            file: file.display().to_string(),
            line: Some(line),
            column: Some(text[start..offset].chars().count() + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_index_places_as_place_does() {
        let text = "a = 1\nbb = 2\n\nü = 3\n";
        let index = LineIndex::new(text);
        for offset in 0..=text.len() {
            if text.is_char_boundary(offset) {
                let span = Some(offset..offset);
                assert_eq!(
                    index.place(Path::new("f"), text, span.clone()).to_string(),
                    place(Path::new("f"), text, span).to_string(),
                    "{offset}"
                );
            }
        }
    }

    #[test]
    fn place_counts_lines_and_columns_from_one() {
        let text = "a = 1\nbb = 2\n";
        let at = |span| place(Path::new("f.toml"), text, span).to_string();
        assert_eq!(at(Some(6..8)), "f.toml:2:1");
        assert_eq!(at(Some(11..12)), "f.toml:2:6");
        assert_eq!(at(None), "f.toml");
    }

    #[test]
    fn a_problem_serializes_as_the_error_document_lists_it() {
        let problem = Problem::new(
            place(Path::new("f.toml"), "a = 1\n", Some(4..5)),
            "a",
            "wrong",
        )
        .with_help("fix it");
        assert_eq!(
            serde_json::to_value(&problem).unwrap(),
            serde_json::json!({"file": "f.toml", "line": 1, "column": 5, "key": "a", "message": "wrong", "help": "fix it"})
        );
    }
}

//! A config problem with its place in the file, printed the way compilers
//! print errors: `file:line:column: key: what is wrong`, then how to fix it.

use std::{fmt, ops::Range, path::Path};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line:column`, or just the file when no position is known.
    pub place: String,
    /// Dotted key path, e.g. `tasks.old_logs.older_than`.
    pub key: String,
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    pub fn new(place: String, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            place,
            key: key.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.place)?;
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

/// `file:line:column` for a byte offset (1-based line and column, counting
/// characters, as editors do).
pub fn place(file: &Path, text: &str, span: Option<Range<usize>>) -> String {
    let Some(span) = span else {
        return file.display().to_string();
    };
    let offset = span.start.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{column}", file.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_counts_lines_and_columns_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(place(Path::new("f.toml"), text, Some(6..8)), "f.toml:2:1");
        assert_eq!(place(Path::new("f.toml"), text, Some(11..12)), "f.toml:2:6");
        assert_eq!(place(Path::new("f.toml"), text, None), "f.toml");
    }
}

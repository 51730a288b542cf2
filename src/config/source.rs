//! Reading the TOML text in a way that finds every problem, not just the
//! first: when serde rejects a key, that key is blanked out of the text (same
//! length, so every other position stays right) and the file is read again.
//! The parsed document is kept so later checks can point at a key's line.

use std::{collections::BTreeSet, ops::Range, path::Path};

use toml_edit::{Document, Item, TableLike};

use super::file::ConfigFile;
use super::problem::{Problem, place};

pub struct Source {
    pub path: std::path::PathBuf,
    pub text: String,
    doc: Option<Document<String>>,
}

/// What one entry in the document covers: its key path and byte range.
struct Entry {
    path: Vec<String>,
    range: Range<usize>,
    is_table: bool,
}

impl Source {
    /// `file:line:column` of a key (its value when it has one), or the file.
    pub fn place_of(&self, key_path: &[&str]) -> String {
        let span = self
            .doc
            .as_ref()
            .and_then(|doc| span_of(doc.as_item(), key_path));
        place(&self.path, &self.text, span)
    }

    pub fn problem(&self, key_path: &[&str], message: impl Into<String>) -> Problem {
        Problem::new(self.place_of(key_path), key_path.join("."), message)
    }
}

/// `file:line:column` of a key in a config text that parsed before.
pub fn locate(path: &Path, text: &str, key_path: &[&str]) -> String {
    let doc = Document::parse(text.to_string()).ok();
    let span = doc
        .as_ref()
        .and_then(|doc| span_of(doc.as_item(), key_path));
    place(path, text, span)
}

/// Parses and deserializes `text`, collecting every problem serde finds.
/// Returns the config built from what remained valid, and the problems.
pub fn read(path: &Path, text: &str) -> (Source, Option<ConfigFile>, Vec<Problem>) {
    let mut working = text.to_string();
    let mut problems = Vec::new();
    let mut removed: BTreeSet<(Vec<String>, String)> = BTreeSet::new();
    let original_doc = Document::parse(text.to_string()).ok();
    let mut source = Source {
        path: path.to_path_buf(),
        text: text.to_string(),
        doc: original_doc,
    };

    // Each round removes at least one entry, so the number of entries bounds it.
    for _ in 0..=text.len() {
        let doc = match Document::parse(working.clone()) {
            Ok(doc) => doc,
            Err(err) => {
                let message = err.message().trim().to_string();
                problems.push(
                    Problem::new(place(path, text, err.span()), "", message)
                        .with_help("this is not valid TOML; see https://toml.io for the syntax"),
                );
                return (source, None, problems);
            }
        };
        let err = match toml_edit::de::from_document::<ConfigFile>(doc.clone()) {
            Ok(file) => {
                if source.doc.is_none() {
                    source.doc = Some(doc);
                }
                return (source, Some(file), problems);
            }
            Err(err) => err,
        };
        let Some(span) = err.span() else {
            problems.push(Problem::new(
                place(path, text, None),
                "",
                err.message().to_string(),
            ));
            return (source, None, problems);
        };
        let entries = entries(doc.as_item(), &mut Vec::new());
        let innermost = entries
            .iter()
            .filter(|e| e.range.contains(&span.start))
            .min_by_key(|e| (e.is_table, e.range.len()));
        let Some(entry) = innermost else {
            problems.push(Problem::new(
                place(path, text, Some(span)),
                "",
                err.message().to_string(),
            ));
            return (source, None, problems);
        };
        // A value that serde rejected is removed alone; an error that belongs
        // to a whole table (say a missing key) removes that table, so the
        // tables after it are still checked.
        let target = if entry.is_table {
            table_to_drop(&entries, span.start).unwrap_or(entry)
        } else {
            entry
        };
        let message = err.message().to_string();
        let parent = target.path[..target.path.len().saturating_sub(1)].to_vec();
        let already_reported = missing_field(&message)
            .is_some_and(|field| removed.contains(&(target.path.clone(), field.to_string())));
        if !already_reported {
            let key = target.path.join(".");
            problems.push(
                Problem::new(place(path, text, Some(span.clone())), key, message)
                    .with_help_opt(help_for(&err)),
            );
        }
        if let Some(last) = target.path.last() {
            removed.insert((parent, last.clone()));
        }
        if target.path.is_empty() {
            return (source, None, problems);
        }
        blank(&mut working, target.range.clone());
    }
    (source, None, problems)
}

impl Problem {
    fn with_help_opt(self, help: Option<String>) -> Self {
        match help {
            Some(help) => self.with_help(help),
            None => self,
        }
    }
}

fn help_for(err: &toml_edit::de::Error) -> Option<String> {
    let message = err.message();
    if message.starts_with("unknown field") {
        Some(
            "remove the key or fix its spelling; the keys this table accepts are listed above"
                .into(),
        )
    } else if message.starts_with("unknown variant") {
        Some("use one of the values listed above".into())
    } else {
        None
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The deepest task or schedule table (or top-level section) around `offset`.
fn table_to_drop(entries: &[Entry], offset: usize) -> Option<&Entry> {
    entries
        .iter()
        .filter(|e| e.is_table && e.range.contains(&offset))
        .filter(|e| match e.path.first().map(String::as_str) {
            Some("tasks") | Some("schedules") => e.path.len() == 2,
            _ => e.path.len() == 1,
        })
        .min_by_key(|e| e.range.len())
}

/// Replaces a byte range with spaces, keeping newlines so lines do not move.
fn blank(text: &mut String, range: Range<usize>) {
    let replaced: String = text[range.clone()]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(range, &replaced);
}

fn entries(item: &Item, path: &mut Vec<String>) -> Vec<Entry> {
    let mut out = Vec::new();
    let Some(table) = item.as_table_like() else {
        return out;
    };
    collect(table, path, &mut out);
    out
}

fn collect(table: &dyn TableLike, path: &mut Vec<String>, out: &mut Vec<Entry>) {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        path.push(name.to_string());
        let mut range = merge(key.span(), item.span());
        if let Some(child) = item.as_table_like() {
            let before = out.len();
            collect(child, path, out);
            for e in &out[before..] {
                range = merge(range, Some(e.range.clone()));
            }
        }
        if let Some(range) = range {
            out.push(Entry {
                path: path.clone(),
                range,
                is_table: item.is_table_like(),
            });
        }
        path.pop();
    }
}

fn merge(a: Option<Range<usize>>, b: Option<Range<usize>>) -> Option<Range<usize>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.start.min(b.start)..a.end.max(b.end)),
        (a, b) => a.or(b),
    }
}

fn span_of(item: &Item, key_path: &[&str]) -> Option<Range<usize>> {
    let (first, rest) = key_path.split_first()?;
    let table = item.as_table_like()?;
    let (key, child) = table.get_key_value(first)?;
    if rest.is_empty() {
        return child
            .span()
            .filter(|_| !child.is_table())
            .or_else(|| key.span());
    }
    span_of(child, rest).or_else(|| key.span())
}

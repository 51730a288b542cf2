//! Reading the TOML text in a way that finds every problem, not just the
//! first: when serde rejects a key, that key is blanked out of the text (same
//! length, so every other position stays right) and the file is read again.
//! The parsed document is kept so later checks can point at a key's line.
//!
//! A task table is read in two parts. The whole file is deserialized with
//! each task's kind-specific keys blanked (so `TaskFile` sees only the keys
//! every task takes); then `read_kind` takes the task's other keys out of
//! the same document (toml_edit keeps their spans) and hands them to the
//! kind in `tasks::registry`, blanking (removing) each key serde refuses
//! and reading again, as for the file.
//!
//! `${VAR}` is replaced in every string value before serde reads it, so a
//! duration, a cron expression or a retention age can come from the
//! environment like a URL. The replacement is made in the text serde reads
//! (each string token swapped for the quoted expanded value), with a map
//! from its offsets back to the file's, so every problem still points at
//! the file as written. A variable that is not set leaves its value as
//! written and is recorded in `Source::unset`; `resolve` decides whether
//! that is a problem now or only for the commands that need the key.

use std::{
    collections::BTreeSet,
    ops::Range,
    path::Path,
    sync::{Arc, OnceLock},
};

use toml_edit::{Document, Item, TableLike, Value};

use super::file::{ConfigFile, TaskFile};
use super::problem::{LineIndex, Location, Problem, place};
use crate::tasks::TaskSpec;
use crate::tasks::registry::{self, Kind};

pub struct Source {
    pub path: std::path::PathBuf,
    pub text: String,
    doc: Option<Document<String>>,
    /// The text serde read (variables expanded, refused entries blanked),
    /// parsed, and how its offsets map back to the file's.
    working: Option<Document<String>>,
    offsets: Offsets,
    /// Where the file's lines start, to place problems.
    lines: LineIndex,
    /// The `${VAR}`s that are not set, at the keys that use them.
    pub unset: Vec<Unset>,
}

/// A `${VAR}` whose variable is not set.
#[derive(Debug, Clone)]
pub struct Unset {
    pub key_path: Vec<String>,
    pub var: String,
    pub location: Location,
}

/// What one entry in the document covers: its key path and byte range.
struct Entry {
    path: Vec<String>,
    range: Range<usize>,
    is_table: bool,
}

impl Source {
    /// `file:line:column` of a key (its value when it has one), or the file.
    pub fn place_of(&self, key_path: &[&str]) -> Location {
        let span = self
            .doc
            .as_ref()
            .and_then(|doc| span_of(doc.as_item(), key_path));
        self.lines.place(&self.path, &self.text, span)
    }

    pub fn problem(&self, key_path: &[&str], message: impl Into<String>) -> Problem {
        Problem::new(self.place_of(key_path), key_path.join("."), message)
    }

    /// A string value as written in the file (before `${VAR}`s).
    pub fn raw_str(&self, key_path: &[&str]) -> Option<String> {
        let mut item = self.doc.as_ref().map(|doc| doc.as_item());
        for key in key_path {
            item = item
                .and_then(Item::as_table_like)
                .and_then(|table| table.get(key));
        }
        item.and_then(Item::as_str).map(str::to_string)
    }

    /// The names of a table's entries as written (`tasks` gives every task
    /// name), including entries serde refused.
    pub fn names_in(&self, key_path: &[&str]) -> Vec<String> {
        let mut item = self.doc.as_ref().map(|doc| doc.as_item());
        for key in key_path {
            item = item
                .and_then(Item::as_table_like)
                .and_then(|table| table.get(key));
        }
        item.and_then(Item::as_table_like)
            .map(|table| table.iter().map(|(name, _)| name.to_string()).collect())
            .unwrap_or_default()
    }
}

/// Places the keys of a config text that parsed before: the text is parsed
/// once, the first time a problem is placed, however many problems `check`
/// finds in the database afterwards (one parse per problem made a config of
/// 10,000 tasks quadratic).
#[derive(Clone, Default)]
pub(crate) struct Locator(Arc<OnceLock<(Option<Document<String>>, LineIndex)>>);

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locator")
    }
}

impl Locator {
    /// `file:line:column` of a key in `text` (always the same text).
    pub(crate) fn locate(&self, path: &Path, text: &str, key_path: &[&str]) -> Location {
        let (doc, lines) = self
            .0
            .get_or_init(|| (Document::parse(text.to_string()).ok(), LineIndex::new(text)));
        let span = doc
            .as_ref()
            .and_then(|doc| span_of(doc.as_item(), key_path));
        lines.place(path, text, span)
    }
}

/// Parses and deserializes `text`, collecting every problem serde finds.
/// Returns the config built from what remained valid, and the problems.
pub fn read(
    path: &Path,
    text: &str,
    env: &super::Env<'_>,
) -> (Source, Option<ConfigFile>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut removed: BTreeSet<(Vec<String>, String)> = BTreeSet::new();
    let mut source = Source {
        path: path.to_path_buf(),
        text: text.to_string(),
        doc: None,
        working: None,
        offsets: Offsets::default(),
        lines: LineIndex::new(text),
        unset: Vec::new(),
    };
    let original = match Document::parse(text.to_string()) {
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
    let expansion = expand(&original, text, path, env);
    source.doc = Some(original);
    source.unset = expansion.unset;
    let offsets = expansion.offsets;
    let mut working = expansion.text;
    let lines = LineIndex::new(text);
    let at =
        |span: Option<Range<usize>>| lines.place(path, text, span.map(|s| offsets.original(s)));
    // Each task, schedule or section on its own first, so a file with many
    // problems is read in time linear in its size; then the whole once
    // more, for what only the whole shows.
    if let Some(found) = by_unit(&working, &at) {
        working = found.working;
        problems.extend(found.problems);
        removed.extend(found.removed);
    }

    // Each round removes at least one entry, so the number of entries bounds it.
    for _ in 0..=working.len() {
        let doc = match Document::parse(working.clone()) {
            Ok(doc) => doc,
            Err(err) => {
                let message = err.message().trim().to_string();
                problems.push(
                    Problem::new(at(err.span()), "", message)
                        .with_help("this is not valid TOML; see https://toml.io for the syntax"),
                );
                return (source, None, problems);
            }
        };
        let entries = entries(doc.as_item(), &mut Vec::new());
        let err = match toml_edit::de::from_document::<ConfigFile>(common_part(&working, &entries))
        {
            Ok(file) => {
                source.working = Some(doc);
                source.offsets = offsets;
                return (source, Some(file), problems);
            }
            Err(err) => err,
        };
        let Some(span) = err.span() else {
            problems.push(Problem::new(at(None), "", err.message().to_string()));
            return (source, None, problems);
        };
        let innermost = entries
            .iter()
            .filter(|e| e.range.contains(&span.start))
            .min_by_key(|e| (e.is_table, e.range.len()));
        let Some(entry) = innermost else {
            problems.push(Problem::new(at(Some(span)), "", err.message().to_string()));
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
        let raw = err.message().to_string();
        let parent = target.path[..target.path.len().saturating_sub(1)].to_vec();
        let already_reported = missing_field(&raw)
            .is_some_and(|field| removed.contains(&(target.path.clone(), field.to_string())));
        if !already_reported {
            let key = target.path.join(".");
            let (message, help) = explain(&raw, &target.path);
            problems.push(Problem::new(at(Some(span.clone())), key, message).with_help_opt(help));
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

/// What `by_unit` found: the problems, the working text with each refused
/// entry blanked, and the keys removed.
struct ByUnit {
    working: String,
    problems: Vec<Problem>,
    removed: BTreeSet<(Vec<String>, String)>,
}

/// The top-level tables whose entries are named tables read on their own.
const NAMED_TABLES: &[&str] = &["tasks", "schedules", "notifiers", "alerts"];

/// Reads each unit of the file (a named task, schedule, notifier or alert,
/// or another top-level entry) as a text of its own, removing each entry
/// serde refuses as `read` does: one refused value costs a parse of its
/// unit, not of the file. `None` when the file has no problem serde finds,
/// or a unit cannot be read alone (the caller then reads the whole).
fn by_unit(working: &str, at: &dyn Fn(Option<Range<usize>>) -> Location) -> Option<ByUnit> {
    let doc = Document::parse(working.to_string()).ok()?;
    let all = entries(doc.as_item(), &mut Vec::new());
    if toml_edit::de::from_document::<ConfigFile>(common_part(working, &all)).is_ok() {
        return None;
    }
    let named = |e: &Entry| e.is_table && NAMED_TABLES.contains(&e.path[0].as_str());
    let mut units: Vec<Range<usize>> = Vec::new();
    for top in all.iter().filter(|e| e.path.len() == 1) {
        if named(top) {
            units.extend(
                all.iter()
                    .filter(|e| e.path.len() == 2 && e.path[0] == top.path[0])
                    .map(|e| e.range.clone()),
            );
        } else {
            units.push(top.range.clone());
        }
    }
    units.sort_by_key(|r| r.start);
    let mut found = ByUnit {
        working: working.to_string(),
        problems: Vec::new(),
        removed: BTreeSet::new(),
    };
    let mut blanks: Vec<Range<usize>> = Vec::new();
    for unit in units {
        // From the start of its line, so a table's header comes along.
        let base = working[..unit.start].rfind('\n').map_or(0, |i| i + 1);
        let mut text = working[base..unit.end].to_string();
        let shift = |r: &Range<usize>| r.start + base..r.end + base;
        for _ in 0..=text.len() {
            let doc = Document::parse(text.clone()).ok()?;
            let entries = entries(doc.as_item(), &mut Vec::new());
            let err = match toml_edit::de::from_document::<ConfigFile>(common_part(&text, &entries))
            {
                Ok(_) => break,
                Err(err) => err,
            };
            let span = err.span()?;
            let entry = entries
                .iter()
                .filter(|e| e.range.contains(&span.start))
                .min_by_key(|e| (e.is_table, e.range.len()))?;
            let target = if entry.is_table {
                table_to_drop(&entries, span.start).unwrap_or(entry)
            } else {
                entry
            };
            if target.path.len() <= 1 && named(target) {
                // The whole `[tasks]` table, say: only the file shows why.
                return None;
            }
            let raw = err.message().to_string();
            let parent = target.path[..target.path.len().saturating_sub(1)].to_vec();
            let already_reported = missing_field(&raw).is_some_and(|field| {
                found
                    .removed
                    .contains(&(target.path.clone(), field.to_string()))
            });
            if !already_reported {
                let (message, help) = explain(&raw, &target.path);
                found.problems.push(
                    Problem::new(at(Some(shift(&span))), target.path.join("."), message)
                        .with_help_opt(help),
                );
            }
            if let Some(last) = target.path.last() {
                found.removed.insert((parent, last.clone()));
            }
            blank(&mut text, target.range.clone());
            blanks.push(shift(&target.range));
        }
    }
    for range in blanks {
        blank(&mut found.working, range);
    }
    Some(found)
}

impl Problem {
    fn with_help_opt(self, help: Option<String>) -> Self {
        match help {
            Some(help) => self.with_help(help),
            None => self,
        }
    }
}

/// The text serde reads, how its offsets map back, and the variables unset.
struct Expansion {
    text: String,
    offsets: Offsets,
    unset: Vec<Unset>,
}

/// The string tokens replaced by their expansion, in order.
#[derive(Default)]
struct Offsets {
    edits: Vec<Edit>,
}

struct Edit {
    original: Range<usize>,
    expanded: Range<usize>,
}

impl Offsets {
    /// The original offset of an offset in the expanded text; anywhere
    /// inside a replaced token is the start of the token as written.
    fn original_offset(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for edit in &self.edits {
            if offset < edit.expanded.start {
                break;
            }
            if offset < edit.expanded.end {
                return edit.original.start;
            }
            shift = edit.original.end as isize - edit.expanded.end as isize;
        }
        (offset as isize + shift).max(0) as usize
    }

    fn original(&self, span: Range<usize>) -> Range<usize> {
        let start = self.original_offset(span.start);
        start..self.original_offset(span.end).max(start)
    }
}

fn expand(doc: &Document<String>, text: &str, path: &Path, env: &super::Env<'_>) -> Expansion {
    let mut strings = Vec::new();
    if let Some(table) = doc.as_item().as_table_like() {
        strings_in_table(table, &mut Vec::new(), &mut strings);
    }
    strings.sort_by_key(|(_, span, _)| span.start);
    let mut out = String::with_capacity(text.len());
    let mut offsets = Offsets::default();
    let mut unset = Vec::new();
    let mut copied = 0;
    for (key_path, span, value) in strings {
        if span.start < copied || !value.contains('$') {
            continue;
        }
        match super::interpolate_with(&value, env) {
            Ok(expanded) if expanded == value => {}
            Ok(expanded) => {
                out.push_str(&text[copied..span.start]);
                let token = Value::from(expanded).to_string();
                let token = token.trim();
                let start = out.len();
                out.push_str(token);
                offsets.edits.push(Edit {
                    original: span.clone(),
                    expanded: start..out.len(),
                });
                copied = span.end;
            }
            Err(var) => unset.push(Unset {
                key_path,
                var,
                location: place(path, text, Some(span)),
            }),
        }
    }
    out.push_str(&text[copied..]);
    Expansion {
        text: out,
        offsets,
        unset,
    }
}

type StringValue = (Vec<String>, Range<usize>, String);

fn strings_in_table(table: &dyn TableLike, path: &mut Vec<String>, out: &mut Vec<StringValue>) {
    for (name, item) in table.iter() {
        path.push(name.to_string());
        strings_in_item(item, path, out);
        path.pop();
    }
}

fn strings_in_item(item: &Item, path: &mut Vec<String>, out: &mut Vec<StringValue>) {
    match item {
        Item::Value(value) => strings_in_value(value, path, out),
        Item::Table(table) => strings_in_table(table, path, out),
        Item::ArrayOfTables(tables) => {
            for table in tables.iter() {
                strings_in_table(table, path, out);
            }
        }
        Item::None => {}
    }
}

fn strings_in_value(value: &Value, path: &mut Vec<String>, out: &mut Vec<StringValue>) {
    match value {
        Value::String(s) => {
            if let Some(span) = s.span() {
                out.push((path.clone(), span, s.value().clone()));
            }
        }
        Value::Array(array) => {
            for value in array.iter() {
                strings_in_value(value, path, out);
            }
        }
        Value::InlineTable(table) => strings_in_table(table, path, out),
        _ => {}
    }
}

/// A serde message, reworded to name the key and say what it takes.
fn explain(raw: &str, key_path: &[String]) -> (String, Option<String>) {
    let key = key_path.last().map(String::as_str).unwrap_or("");
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return unknown_key(field, &quoted_words(raw)[1..], key_path, None);
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let value = rest.split('`').next().unwrap_or_default();
        let choices = &quoted_words(raw)[1..];
        let mut message = format!(
            "`{value}` is not a valid `{key}`; it takes {}",
            one_of(choices)
        );
        if let Some(near) = nearest(value, choices.iter().map(String::as_str)) {
            message.push_str(&format!("; did you mean `{near}`?"));
        }
        return (message, None);
    }
    if let Some(field) = missing_field(raw) {
        let help = if field == "kind" && key_path.first().is_some_and(|k| k == "tasks") {
            Some(format!("add `kind = \"...\"`: {}", one_of(&kind_names())))
        } else {
            None
        };
        return (format!("`{field}` is missing: this table needs it"), help);
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return (
            format!(
                "`{key}` must be {}, not {}",
                expectation(expected),
                found_phrase(found)
            ),
            None,
        );
    }
    if let Some(rest) = raw.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return (
            format!(
                "`{key}` must be {}, not {}",
                expectation(expected),
                found_phrase(found)
            ),
            None,
        );
    }
    if let Some(name) = raw.strip_prefix("data did not match any variant of untagged enum ") {
        let takes = match name.trim() {
            "OneOrMany" => "a name or a list of names",
            "ArchiveTableFile" => "a table name, or false for no archive table",
            "AutoOr" => "\"auto\", true or false",
            "NotifyFile" => {
                "a list of notifier names, or { on_failure = [...], on_warning = [...], on_success = [...] }"
            }
            _ => "something else",
        };
        return (format!("`{key}` must be {takes}"), None);
    }
    (raw.to_string(), None)
}

/// The words between backticks, in order.
fn quoted_words(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn one_of(choices: &[String]) -> String {
    match choices {
        [] => "nothing".into(),
        [one] => format!("`{one}`"),
        _ => format!(
            "one of {}",
            choices
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// serde's name for what it wanted, in words.
fn expectation(expected: &str) -> String {
    match expected.trim() {
        "u64" | "usize" => "a whole number (0 or more)".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "i64" | "i32" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list (`[...]`)".into(),
        "a map" => "a table".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.to_string(),
    }
}

/// serde's description of what it found (`string "big"`), in words.
fn found_phrase(found: &str) -> String {
    let found = found.trim();
    let unquote = |s: &str| s.trim_matches('`').to_string();
    if let Some(s) = found.strip_prefix("string ") {
        format!("the string {s}")
    } else if let Some(n) = found.strip_prefix("integer ") {
        unquote(n)
    } else if let Some(n) = found.strip_prefix("floating point ") {
        unquote(n)
    } else if let Some(b) = found.strip_prefix("boolean ") {
        unquote(b)
    } else if found == "sequence" {
        "a list".into()
    } else if found == "map" {
        "a table".into()
    } else {
        found.to_string()
    }
}

/// An unknown key: the keys the table takes (for a task, those of its
/// kind), and the nearest one when it looks like a misspelling.
fn unknown_key(
    field: &str,
    expected: &[String],
    key_path: &[String],
    task_kind: Option<&Kind>,
) -> (String, Option<String>) {
    let common = TaskFile::keys();
    let (what, keys): (String, Vec<String>) = match task_kind {
        Some(kind) => (
            format!("{} {} task", article(kind.name), kind.name),
            common
                .iter()
                .chain(kind.keys())
                .map(|k| k.to_string())
                .collect(),
        ),
        None => {
            let table = &key_path[..key_path.len().saturating_sub(1)];
            let what = if table.is_empty() {
                "the top level".to_string()
            } else {
                format!("[{}]", table.join("."))
            };
            (what, expected.to_vec())
        }
    };
    let mut message = format!("unknown key `{field}` in {what}");
    if let Some(near) = nearest(field, keys.iter().map(String::as_str)) {
        message.push_str(&format!("; did you mean `{near}`?"));
    }
    let ticked = |keys: &[&str]| {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let help = match task_kind {
        Some(kind) => format!(
            "{} tasks take: {}; every task takes: {}",
            kind.name,
            ticked(kind.keys()),
            ticked(common)
        ),
        None if keys.is_empty() => "remove the key".to_string(),
        None => format!(
            "{what} takes: {}",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    (message, Some(help))
}

/// A key of a kind's table that serde refused: a key of another kind, an
/// unknown key, or a value of the wrong type.
fn explain_kind_key(raw: &str, key_path: &[String], kind: &Kind) -> (String, Option<String>) {
    let key = key_path.last().map(String::as_str).unwrap_or("");
    if raw.starts_with("unknown field `") {
        if registry::kinds_with(key).next().is_some() {
            return (
                format!(
                    "`{key}` is not a key of {} {} task",
                    article(kind.name),
                    kind.name
                ),
                Some(format!(
                    "{} tasks take: {}",
                    kind.name,
                    kind.keys().join(", ")
                )),
            );
        }
        return unknown_key(key, &[], key_path, Some(kind));
    }
    explain(raw, key_path)
}

/// The kinds this build has, for messages.
fn kind_names() -> Vec<String> {
    registry::KINDS.iter().map(|k| k.name.to_string()).collect()
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The candidate closest to `word` by edit distance (a swap of two
/// neighbours counts as one edit), if it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The text with each task's kind-specific keys blanked: what `ConfigFile`
/// (whose tasks are `TaskFile`, the keys every task takes) reads.
fn common_part(working: &str, entries: &[Entry]) -> toml_edit::de::Deserializer {
    let common = TaskFile::keys();
    let mut text = working.to_string();
    for entry in entries {
        if let [tasks, _, key] = entry.path.as_slice()
            && tasks == "tasks"
            && !common.contains(&key.as_str())
        {
            blank(&mut text, entry.range.clone());
        }
    }
    match Document::parse(text) {
        Ok(doc) => doc.into(),
        // Blanking whole entries keeps the TOML valid; should it not, the
        // file as it is still gives serde's problems.
        Err(_) => Document::parse(working.to_string())
            .expect("the working text parsed a moment ago")
            .into(),
    }
}

impl Source {
    /// `file:line:column` of a span of the text serde read.
    fn at(&self, span: Option<Range<usize>>) -> Location {
        self.lines.place(
            &self.path,
            &self.text,
            span.map(|s| self.offsets.original(s)),
        )
    }

    /// Reads task `name`'s own keys (all but the ones every task takes)
    /// into its kind's spec. Every problem goes to `problems`: each key
    /// serde refuses is reported at its place and removed, and the rest
    /// read again; then the kind's own checks report theirs.
    pub fn read_kind(
        &self,
        name: &str,
        kind: &'static Kind,
        problems: &mut Vec<Problem>,
    ) -> Option<TaskSpec> {
        let mut table = self.task_table(name)?;
        for key in TaskFile::keys() {
            table.remove(key);
        }
        let base = self.path.parent().unwrap_or(Path::new("."));
        let mut refused = false;
        // Each round removes a key, so the number of keys bounds it.
        for _ in 0..=table.len() {
            let mut reported: Vec<(String, String, Option<String>)> = Vec::new();
            let result = kind.read(
                toml_edit::DocumentMut::from(table.clone()),
                base,
                &mut |key: &str, message: String, help: Option<String>| {
                    reported.push((key.to_string(), message, help));
                },
            );
            for (key, message, help) in reported {
                problems.push(
                    self.problem(&["tasks", name, &key], message)
                        .with_help_opt(help),
                );
            }
            let err = match result {
                Ok(spec) => return spec.filter(|_| !refused),
                Err(err) => err,
            };
            refused = true;
            let span = err.span();
            let raw = err.message().to_string();
            let item = Item::Table(table.clone());
            let key = span.as_ref().and_then(|span| {
                entries(&item, &mut Vec::new())
                    .into_iter()
                    .filter(|e| e.path.len() == 1 && e.range.contains(&span.start))
                    .map(|e| e.path[0].clone())
                    .next()
            });
            let Some(key) = key else {
                // The table as a whole (a key the kind requires is missing).
                let path = vec!["tasks".to_string(), name.to_string()];
                let (message, help) = explain(&raw, &path);
                problems
                    .push(Problem::new(self.at(span), path.join("."), message).with_help_opt(help));
                return None;
            };
            let path = vec!["tasks".to_string(), name.to_string(), key.clone()];
            let (message, help) = explain_kind_key(&raw, &path, kind);
            problems.push(Problem::new(self.at(span), path.join("."), message).with_help_opt(help));
            table.remove(&key);
        }
        None
    }

    /// Task `name`'s table as serde read it.
    fn task_table(&self, name: &str) -> Option<toml_edit::Table> {
        let tasks = self.working.as_ref()?.as_item().get("tasks")?;
        match tasks.get(name)? {
            Item::Table(table) => Some(table.clone()),
            Item::Value(Value::InlineTable(table)) => Some(table.clone().into_table()),
            _ => None,
        }
    }

    /// The problem for a `kind` this build does not have.
    pub fn unknown_kind(&self, name: &str, kind: &str) -> Problem {
        let choices = kind_names();
        let mut message = format!(
            "`{kind}` is not a valid `kind`; it takes {}",
            one_of(&choices)
        );
        if let Some(near) = nearest(kind, choices.iter().map(String::as_str)) {
            message.push_str(&format!("; did you mean `{near}`?"));
        }
        self.problem(&["tasks", name, "kind"], message)
    }
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

/// Replaces a byte range with spaces, keeping newlines so lines do not
/// move, and one space per byte so no offset after it moves either.
fn blank(text: &mut String, range: Range<usize>) {
    let replaced: String = text[range.clone()]
        .chars()
        .map(|c| {
            if c == '\n' {
                "\n".to_string()
            } else {
                " ".repeat(c.len_utf8())
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_back_through_replaced_tokens() {
        let offsets = Offsets {
            edits: vec![Edit {
                original: 4..10,
                expanded: 4..20,
            }],
        };
        assert_eq!(offsets.original_offset(2), 2);
        assert_eq!(offsets.original_offset(7), 4);
        assert_eq!(offsets.original_offset(20), 10);
        assert_eq!(offsets.original_offset(25), 15);
    }

    #[test]
    fn typos_find_their_key() {
        let keys = ["table", "where", "time_column", "older_than"];
        assert_eq!(nearest("tabel", keys.into_iter()), Some("table"));
        assert_eq!(nearest("older_then", keys.into_iter()), Some("older_than"));
        assert_eq!(nearest("colour", keys.into_iter()), None);
    }
}

//! Reading the TOML text in a way that finds every problem, not just the
//! first: when serde rejects a key, that key is taken out of the parsed
//! tree (which keeps every other key's span) and the tree is read again.
//! The parsed document is kept so later checks can point at a key's line.
//! A file of the plain shape is read one unit at a time (see `units`): each
//! task, schedule, notifier and alert as a text of its own, placed back in
//! the file by `Placer`, so no tree of the whole file is built.
//!
//! A task table is read in two parts. The document is deserialized with
//! each task's kind-specific keys taken out (so `TaskFile` sees only the
//! keys every task takes); then `read_kind` takes the task's other keys
//! (toml_edit keeps their spans) and hands them to the kind in
//! `tasks::registry`, removing each key serde refuses and reading again,
//! as for the file.
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
    cell::RefCell,
    collections::{BTreeSet, HashMap},
    ops::Range,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use toml_edit::{Document, Item, Table, TableLike, Value};

use super::file::{ConfigFile, TaskFile};
use super::problem::{LineIndex, Location, Problem};
use super::units::{self, Units};
use crate::tasks::TaskSpec;
use crate::tasks::registry::{self, Kind};

pub struct Source {
    pub path: PathBuf,
    /// The text this source read: the file, or one unit of it.
    pub text: String,
    doc: Option<Document<String>>,
    /// What serde read (variables expanded, refused entries removed), and
    /// how the offsets of its spans map back to `text`'s.
    working: Option<Table>,
    offsets: Offsets,
    /// Places offsets of `text` in the file.
    placer: Placer,
    /// Set when the file was read unit by unit (see `units`): then `doc`
    /// is `None` and the keys are found through this.
    units: Option<UnitKeys>,
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

/// Places an offset of a text that is the file, or a unit of it (its
/// sections one after another), at its line and column in the file.
#[derive(Clone)]
struct Placer {
    path: PathBuf,
    file: Arc<str>,
    lines: Arc<LineIndex>,
    /// Where each piece of the text starts: (in the text, in the file).
    pieces: Vec<(usize, usize)>,
}

impl Placer {
    fn whole(path: &Path, text: &str) -> Placer {
        Placer {
            path: path.to_path_buf(),
            file: Arc::from(text),
            lines: Arc::new(LineIndex::new(text)),
            pieces: vec![(0, 0)],
        }
    }

    /// The text of a unit of the file and its placer.
    fn unit(&self, sections: &[Range<usize>]) -> (String, Placer) {
        let mut text = String::with_capacity(sections.iter().map(|r| r.len()).sum());
        let mut pieces = Vec::with_capacity(sections.len());
        for section in sections {
            pieces.push((text.len(), section.start));
            text.push_str(&self.file[section.clone()]);
        }
        if pieces.is_empty() {
            pieces.push((0, 0));
        }
        let placer = Placer {
            pieces,
            ..self.clone()
        };
        (text, placer)
    }

    fn file_offset(&self, offset: usize) -> usize {
        let i = self.pieces.partition_point(|p| p.0 <= offset).max(1) - 1;
        let (text, file) = self.pieces[i];
        file + (offset - text)
    }

    fn file_span(&self, span: Range<usize>) -> Range<usize> {
        let start = self.file_offset(span.start);
        start..self.file_offset(span.end).max(start)
    }

    fn place(&self, span: Option<Range<usize>>) -> Location {
        self.lines
            .place(&self.path, &self.file, span.map(|s| self.file_span(s)))
    }
}

/// How the keys of a file read unit by unit are found again.
struct UnitKeys {
    units: Units,
    /// The unit of everything but the named tables, as read.
    rest: Box<Source>,
    /// For each named unit (`tasks.NAME`): where it is and where each of
    /// its keys is (its value when it has one), as file spans, so placing
    /// a problem of a task parses nothing.
    places: HashMap<String, Places>,
    /// Each task's own keys as its kind read them, with their problems
    /// (see `read_kind`), taken once by `resolve`.
    kinds: RefCell<HashMap<String, KindRead>>,
}

/// A named unit's own span (key `""`) and each of its keys' spans.
type Places = Vec<(String, Option<Range<usize>>)>;

/// What a task's kind made of its keys, and the problems it found.
type KindRead = (Vec<Problem>, Option<TaskSpec>);

impl UnitKeys {
    fn named_path<'k>(&self, key_path: &'k [&'k str]) -> Option<&units::Named> {
        match key_path {
            [table, name, ..] => self.units.named(table, name),
            _ => None,
        }
    }

    /// A named unit parsed again, for the rare key `places` does not hold.
    fn named_doc(
        &self,
        named: &units::Named,
        placer: &Placer,
    ) -> Option<(Document<String>, Placer)> {
        let (text, placer) = placer.unit(&named.sections);
        Some((Document::parse(text).ok()?, placer))
    }
}

impl Source {
    /// `file:line:column` of a key (its value when it has one), or the file.
    pub fn place_of(&self, key_path: &[&str]) -> Location {
        if let Some(keys) = &self.units {
            let Some(named) = keys.named_path(key_path) else {
                return keys.rest.place_of(key_path);
            };
            let places = keys.places.get(&format!("{}.{}", named.table, named.name));
            if let Some(places) = places
                && key_path.len() <= 3
            {
                let own = |key: &str| {
                    places
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, span)| span.clone())
                };
                let span = key_path.get(2).and_then(|key| own(key)).or_else(|| own(""));
                return self.placer.place(span);
            }
            return match keys.named_doc(named, &self.placer) {
                Some((doc, placer)) => placer.place(span_of(doc.as_item(), key_path)),
                None => self.placer.place(None),
            };
        }
        let span = self
            .doc
            .as_ref()
            .and_then(|doc| span_of(doc.as_item(), key_path));
        self.placer.place(span)
    }

    pub fn problem(&self, key_path: &[&str], message: impl Into<String>) -> Problem {
        Problem::new(self.place_of(key_path), key_path.join("."), message)
    }

    /// A string value as written in the file (before `${VAR}`s).
    pub fn raw_str(&self, key_path: &[&str]) -> Option<String> {
        if let Some(keys) = &self.units {
            let Some(named) = keys.named_path(key_path) else {
                return keys.rest.raw_str(key_path);
            };
            let (doc, _) = keys.named_doc(named, &self.placer)?;
            return str_at(doc.as_item(), key_path);
        }
        str_at(self.doc.as_ref()?.as_item(), key_path)
    }

    /// The names of a table's entries as written (`tasks` gives every task
    /// name), including entries serde refused.
    pub fn names_in(&self, key_path: &[&str]) -> Vec<String> {
        if let Some(keys) = &self.units {
            if let [table] = key_path
                && NAMED_TABLES.contains(table)
            {
                return keys
                    .units
                    .named
                    .iter()
                    .filter(|n| n.table == *table)
                    .map(|n| n.name.clone())
                    .collect();
            }
            return keys.rest.names_in(key_path);
        }
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

    /// Where the named unit `table.name` and each of its keys are, as
    /// file spans (see `UnitKeys::places`).
    fn places_in(&self, table: &str, name: &str) -> Places {
        let Some(doc) = &self.doc else {
            return Vec::new();
        };
        let file = |span: Option<Range<usize>>| span.map(|s| self.placer.file_span(s));
        let mut places = vec![(String::new(), file(span_of(doc.as_item(), &[table, name])))];
        if let Some(own) = doc
            .as_item()
            .get(table)
            .and_then(|t| t.get(name))
            .and_then(Item::as_table_like)
        {
            for (key, _) in own.iter() {
                let span = span_of(doc.as_item(), &[table, name, key]);
                places.push((key.to_string(), file(span)));
            }
        }
        places
    }
}

fn str_at(item: &Item, key_path: &[&str]) -> Option<String> {
    let mut item = Some(item);
    for key in key_path {
        item = item
            .and_then(Item::as_table_like)
            .and_then(|table| table.get(key));
    }
    item.and_then(Item::as_str).map(str::to_string)
}

/// Places the keys of a config text that parsed before: the text is split
/// into its units once, the first time a problem is placed, and each
/// problem parses only its own unit, however many problems `check` finds
/// in the database afterwards (one parse of the file per problem made a
/// config of 10,000 tasks quadratic; one parse of a 10 MB file takes a
/// second and half a gigabyte).
#[derive(Clone, Default)]
pub(crate) struct Locator(Arc<OnceLock<Located>>);

/// The file as `Locator` finds keys in it.
enum Located {
    Whole(Option<Document<String>>, Placer),
    Units {
        units: Units,
        placer: Placer,
        rest: Option<(Document<String>, Placer)>,
    },
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locator")
    }
}

impl Locator {
    /// `file:line:column` of a key in `text` (always the same text).
    pub(crate) fn locate(&self, path: &Path, text: &str, key_path: &[&str]) -> Location {
        let located = self.0.get_or_init(|| {
            let placer = Placer::whole(path, text);
            match units::split(text, NAMED_TABLES) {
                Some(units) => {
                    let (rest, rest_placer) = placer.unit(&units.rest);
                    let rest = Document::parse(rest).ok().map(|doc| (doc, rest_placer));
                    Located::Units {
                        units,
                        placer,
                        rest,
                    }
                }
                None => Located::Whole(Document::parse(text.to_string()).ok(), placer),
            }
        });
        match located {
            Located::Whole(doc, placer) => placer.place(
                doc.as_ref()
                    .and_then(|doc| span_of(doc.as_item(), key_path)),
            ),
            Located::Units {
                units,
                placer,
                rest,
            } => {
                let named = match key_path {
                    [table, name, ..] => units.named(table, name),
                    _ => None,
                };
                match named {
                    Some(named) => {
                        let (text, placer) = placer.unit(&named.sections);
                        let doc = Document::parse(text).ok();
                        placer.place(
                            doc.as_ref()
                                .and_then(|doc| span_of(doc.as_item(), key_path)),
                        )
                    }
                    None => match rest {
                        Some((doc, rest_placer)) => {
                            rest_placer.place(span_of(doc.as_item(), key_path))
                        }
                        None => placer.place(None),
                    },
                }
            }
        }
    }
}

/// Parses and deserializes `text`, collecting every problem serde finds.
/// Returns the config built from what remained valid, and the problems.
///
/// A file of the plain shape is read unit by unit (see `units`): each
/// task, schedule, notifier and alert as a text of its own, then the
/// rest, so each refused key costs a read of its unit, not of the file,
/// and no tree of the whole file is ever built.
pub fn read(
    path: &Path,
    text: &str,
    env: &super::Env<'_>,
) -> (Source, Option<ConfigFile>, Vec<Problem>) {
    let placer = Placer::whole(path, text);
    if let Some(units) = units::split(text, NAMED_TABLES)
        && let Some(read) = read_units(path, text, units, &placer, env)
    {
        return read;
    }
    read_text(path, text, placer, env, true)
}

/// `read` unit by unit; `None` when a unit is not TOML on its own, or
/// has a problem only the whole file can explain (then the whole is read).
fn read_units(
    path: &Path,
    text: &str,
    units: Units,
    placer: &Placer,
    env: &super::Env<'_>,
) -> Option<(Source, Option<ConfigFile>, Vec<Problem>)> {
    let (rest_text, rest_placer) = placer.unit(&units.rest);
    let (mut rest, file, mut problems) = read_text(path, &rest_text, rest_placer, env, true);
    let mut file = file?;
    let mut unset = std::mem::take(&mut rest.unset);
    let mut places = HashMap::with_capacity(units.named.len());
    let mut kinds = HashMap::new();
    for run in read_named(path, &units.named, placer, env)? {
        problems.extend(run.problems);
        unset.extend(run.unset);
        places.extend(run.places);
        kinds.extend(run.kinds);
        if let Some(unit_file) = run.file {
            file.absorb(unit_file);
        }
    }
    let source = Source {
        path: path.to_path_buf(),
        text: text.to_string(),
        doc: None,
        working: None,
        offsets: Offsets::default(),
        placer: placer.clone(),
        units: Some(UnitKeys {
            units,
            rest: Box::new(rest),
            places,
            kinds: RefCell::new(kinds),
        }),
        unset,
    };
    Some((source, Some(file), problems))
}

/// What reading a run of named units found (see `read_units`), each
/// unit's findings appended in file order.
#[derive(Default)]
struct RunRead {
    /// Each unit's places, by `TABLE.NAME` as `UnitKeys::places` is keyed.
    places: Vec<(String, Places)>,
    problems: Vec<Problem>,
    unset: Vec<Unset>,
    /// Each task's own keys as its kind read them, by task name.
    kinds: Vec<(String, KindRead)>,
    /// The units' tables, absorbed one after another (a unit's
    /// `ConfigFile` is a few kilobytes: 100,000 of them kept till the end
    /// would be half a gigabyte).
    file: Option<ConfigFile>,
}

/// Runs of at most this many units are read on this thread alone.
const UNITS_PER_THREAD: usize = 1000;

/// Reads the named units; `None` as soon as one is not TOML on its own
/// (`read_units`). Each unit is read alone, so a big file's are read on
/// every core (half the time on two), each thread a run of consecutive
/// units, joined in file order: what comes back is what one thread would
/// have read.
fn read_named(
    path: &Path,
    named: &[units::Named],
    placer: &Placer,
    env: &super::Env<'_>,
) -> Option<Vec<RunRead>> {
    let read_run = |run: &[units::Named]| -> Option<RunRead> {
        let mut read = RunRead::default();
        for unit in run {
            read_named_unit(path, unit, placer, env, &mut read)?;
        }
        Some(read)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(named.len() / UNITS_PER_THREAD)
        .max(1);
    if threads == 1 {
        return Some(vec![read_run(named)?]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = named
            .chunks(named.len().div_ceil(threads))
            .map(|run| scope.spawn(move || read_run(run)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Reads one named unit into `read`: its keys as serde reads them, where
/// each is, and for a task of a known kind, its kind's keys.
fn read_named_unit(
    path: &Path,
    named: &units::Named,
    placer: &Placer,
    env: &super::Env<'_>,
    read: &mut RunRead,
) -> Option<()> {
    let (unit_text, unit_placer) = placer.unit(&named.sections);
    let (mut unit, file, problems) = read_text(path, &unit_text, unit_placer, env, false);
    let file = file?;
    read.problems.extend(problems);
    read.unset.append(&mut unit.unset);
    read.places.push((
        format!("{}.{}", named.table, named.name),
        unit.places_in(named.table, &named.name),
    ));
    if let Some(task) = file.tasks.get(&named.name)
        && let Some(kind) = registry::find(&task.kind)
    {
        // The unit's tree is not needed after this: taken, not copied.
        let mut found = Vec::new();
        let spec = unit
            .take_task_table(&named.name)
            .and_then(|table| unit.read_kind_from(&named.name, kind, table, &mut found));
        read.kinds.push((named.name.clone(), (found, spec)));
    }
    match &mut read.file {
        Some(all) => all.absorb(file),
        None => read.file = Some(file),
    }
    Some(())
}

/// Reads one text (the file, or a unit of it) as `read` describes; with
/// `split`, each of its own units first (see `by_unit`).
fn read_text(
    path: &Path,
    text: &str,
    placer: Placer,
    env: &super::Env<'_>,
    split: bool,
) -> (Source, Option<ConfigFile>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut removed: BTreeSet<(Vec<String>, String)> = BTreeSet::new();
    let mut source = Source {
        path: path.to_path_buf(),
        text: text.to_string(),
        doc: None,
        working: None,
        offsets: Offsets::default(),
        placer: placer.clone(),
        units: None,
        unset: Vec::new(),
    };
    let not_toml = |span: Option<Range<usize>>, message: &str| {
        Problem::new(placer.place(span), "", message.trim().to_string())
            .with_help("this is not valid TOML; see https://toml.io for the syntax")
    };
    let original = match Document::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(err) => {
            problems.push(not_toml(err.span(), err.message()));
            return (source, None, problems);
        }
    };
    let expansion = expand(&original, text, &placer, env);
    let offsets = expansion.offsets;
    let mut working_text = expansion.text;
    let at = |span: Option<Range<usize>>| placer.place(span.map(|s| offsets.original(s)));
    // Each task, schedule or section on its own first, so a file with many
    // problems is read in time linear in its size; then the whole once
    // more, for what only the whole shows.
    let mut reparse = !offsets.edits.is_empty();
    if split && let Some(found) = by_unit(&working_text, &at) {
        working_text = found.working;
        problems.extend(found.problems);
        removed.extend(found.removed);
        reparse = true;
    }
    let mut working = if reparse {
        match Document::parse(working_text) {
            Ok(doc) => doc.into_table(),
            Err(err) => {
                problems.push(not_toml(err.span(), err.message()));
                source.doc = Some(original);
                source.unset = expansion.unset;
                return (source, None, problems);
            }
        }
    } else {
        original.as_table().clone()
    };
    source.doc = Some(original);
    source.unset = expansion.unset;

    // Each round removes at least one entry, so the number of entries bounds it.
    for _ in 0..=text.len() {
        let err = match toml_edit::de::from_document::<ConfigFile>(common_part(&working)) {
            Ok(file) => {
                source.working = Some(working);
                source.offsets = offsets;
                return (source, Some(file), problems);
            }
            Err(err) => err,
        };
        let Some(span) = err.span() else {
            problems.push(Problem::new(at(None), "", err.message().to_string()));
            return (source, None, problems);
        };
        let entries = entries_of(&working, &mut Vec::new());
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
        remove_entry(&mut working, &target.path);
    }
    (source, None, problems)
}

/// Takes the entry at `path` out of `table`.
fn remove_entry(table: &mut Table, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current: &mut dyn TableLike = table;
    for key in parents {
        match current.get_mut(key).and_then(Item::as_table_like_mut) {
            Some(child) => current = child,
            None => return,
        }
    }
    current.remove(last);
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
    if toml_edit::de::from_document::<ConfigFile>(common_part(doc.as_table())).is_ok() {
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
            let err = match toml_edit::de::from_document::<ConfigFile>(common_part(doc.as_table()))
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

fn expand(doc: &Document<String>, text: &str, placer: &Placer, env: &super::Env<'_>) -> Expansion {
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
                location: placer.place(Some(span)),
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
        // Only a value with a `$` can hold a `${VAR}`.
        Value::String(s) if s.value().contains('$') => {
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
    let word: Vec<char> = word.chars().collect();
    let limit = (word.len() / 3).max(1);
    let mut distance = Distance::default();
    candidates
        // The distance is at least the difference in length.
        .filter(|c| c.chars().count().abs_diff(word.len()) <= limit)
        .map(|c| (distance.between(&word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance, computed in three rows that are
/// kept from one candidate to the next.
#[derive(Default)]
struct Distance {
    b: Vec<char>,
    two_back: Vec<usize>,
    back: Vec<usize>,
    row: Vec<usize>,
}

impl Distance {
    fn between(&mut self, a: &[char], b: &str) -> usize {
        self.b.clear();
        self.b.extend(b.chars());
        let n = self.b.len();
        self.two_back.clear();
        self.two_back.resize(n + 1, 0);
        self.back.clear();
        self.back.extend(0..=n);
        self.row.clear();
        self.row.resize(n + 1, 0);
        for i in 1..=a.len() {
            self.row[0] = i;
            for j in 1..=n {
                let cost = usize::from(a[i - 1] != self.b[j - 1]);
                let mut d = (self.back[j] + 1)
                    .min(self.row[j - 1] + 1)
                    .min(self.back[j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == self.b[j - 2] && a[i - 2] == self.b[j - 1] {
                    d = d.min(self.two_back[j - 2] + 1);
                }
                self.row[j] = d;
            }
            std::mem::swap(&mut self.two_back, &mut self.back);
            std::mem::swap(&mut self.back, &mut self.row);
        }
        self.back[n]
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The document with each task's kind-specific keys taken out: what
/// `ConfigFile` (whose tasks are `TaskFile`, the keys every task takes)
/// reads.
fn common_part(working: &Table) -> toml_edit::de::Deserializer {
    let common = TaskFile::keys();
    let mut table = working.clone();
    if let Some(tasks) = table.get_mut("tasks").and_then(Item::as_table_like_mut) {
        for (_, task) in tasks.iter_mut() {
            if let Some(task) = task.as_table_like_mut() {
                let own: Vec<String> = task
                    .iter()
                    .map(|(key, _)| key.to_string())
                    .filter(|key| !common.contains(&key.as_str()))
                    .collect();
                for key in own {
                    task.remove(&key);
                }
            }
        }
    }
    toml_edit::DocumentMut::from(table).into()
}

impl Source {
    /// `file:line:column` of a span of the text serde read.
    fn at(&self, span: Option<Range<usize>>) -> Location {
        self.placer.place(span.map(|s| self.offsets.original(s)))
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
        if let Some(keys) = &self.units {
            // Read with the task's unit (see `read_units`).
            let (found, spec) = keys.kinds.borrow_mut().remove(name)?;
            problems.extend(found);
            return spec;
        }
        let table = self.task_table(name)?;
        self.read_kind_from(name, kind, table, problems)
    }

    /// `read_kind` of the task's table as serde read it.
    fn read_kind_from(
        &self,
        name: &str,
        kind: &'static Kind,
        mut table: Table,
        problems: &mut Vec<Problem>,
    ) -> Option<TaskSpec> {
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

    /// Task `name`'s table as serde read it, taken out of the tree.
    fn take_task_table(&mut self, name: &str) -> Option<Table> {
        let tasks = self
            .working
            .as_mut()?
            .get_mut("tasks")?
            .as_table_like_mut()?;
        match tasks.remove(name)? {
            Item::Table(table) => Some(table),
            Item::Value(Value::InlineTable(table)) => Some(table.into_table()),
            _ => None,
        }
    }

    /// Task `name`'s table as serde read it.
    fn task_table(&self, name: &str) -> Option<toml_edit::Table> {
        let tasks = self.working.as_ref()?.get("tasks")?;
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

fn entries_of(table: &dyn TableLike, path: &mut Vec<String>) -> Vec<Entry> {
    let mut out = Vec::new();
    collect(table, path, &mut out);
    out
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

    /// Reading unit by unit finds what reading the whole finds, at the
    /// same places, in the shapes a file can take.
    #[test]
    fn units_read_as_the_whole_does() {
        let env = |name: &str| (name == "SET").then(|| "5min".to_string());
        let texts = [
            "name = \"x\"\n[database]\nlock_timeout = \"0ms\"\ntime_zone = \"Mars\"\n[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\ntabel = 1\nbatch_size = \"big\"\n[schedules.s]\ncron = \"0 2 * *\"\ntasks = [\"a\", \"b\"]\n[tasks.b]\nkind = \"purg\"\n",
            "[tasks.a]\nkind = \"sql\"\nsql = \"\"\"\n[tasks.c]\n\"\"\"\nmax_runtime = \"${SET}\"\npause = \"${UNSET}\"\n[defaults]\nbatch_size = 0\n[tasks.a.export]\nx = 1\n",
            "[tasks.x]\ntable = \"t\"\n[tasks.y]\nkind = \"archive\"\ntable = \"t\"\nwhere = \"x\"\ncolumn = \"c\"\nseverity = \"hgh\"\n[notifiers.n]\nkind = \"webhook\"\n[alerts.al]\nnotify = [\"nope\"]\ntasks = [\"x\"]\nfoo = 1\n[api]\ntoken = \"short\"\n",
            "[tasks.T1]\nkind = \"vacuum\"\ntables = [\"a\"]\ntable = \"a\"\n[schedules.s]\ncron = \"0 2 * * *\"\ntasks = [\"t1\"]\nbogus = true\n[health.checks.nope]\nwarning = 1\n",
        ];
        let path = Path::new("f.toml");
        for text in texts {
            // The same length either way; a quoted key is read whole.
            let by_units = format!("name   = \"n\"\n{text}");
            let whole = format!("\"name\" = \"n\"\n{text}");
            assert!(units::split(&by_units, NAMED_TABLES).is_some(), "{text}");
            assert!(units::split(&whole, NAMED_TABLES).is_none(), "{text}");
            let (units_config, units_problems) =
                super::super::Config::parse_all_with(path, &by_units, &env);
            let (whole_config, whole_problems) =
                super::super::Config::parse_all_with(path, &whole, &env);
            assert!(!units_problems.is_empty(), "{text}");
            assert_eq!(units_problems, whole_problems, "{text}");
            let names = |config: Option<super::super::Config>| {
                config.map(|c| c.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>())
            };
            assert_eq!(names(units_config), names(whole_config), "{text}");
        }
    }

    /// Enough units to be read on several threads (`read_named`) find what
    /// the whole file read at once finds, in the same order.
    #[test]
    fn units_read_on_several_threads_as_the_whole_does() {
        let env = |_: &str| None;
        let mut text = String::new();
        for i in 0..3 * UNITS_PER_THREAD {
            text.push_str(&match i % 4 {
                0 => format!("[tasks.t{i}]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nbatch_size = \"big\"\ntabel = 1\n"),
                1 => format!("[tasks.t{i}]\nkind = \"purg\"\ntable = \"t\"\n"),
                2 => format!("[tasks.t{i}]\nkind = \"sql\"\nsql = \"SELECT {i}\"\n"),
                _ => format!("[schedules.s{i}]\ncron = \"0 2 * *\"\ntasks = [\"t{i}x\", \"t2\"]\n"),
            });
        }
        let path = Path::new("f.toml");
        let by_units = format!("name   = \"n\"\n{text}");
        let whole = format!("\"name\" = \"n\"\n{text}");
        assert!(units::split(&whole, NAMED_TABLES).is_none());
        let (units_config, units_problems) =
            super::super::Config::parse_all_with(path, &by_units, &env);
        let (whole_config, whole_problems) =
            super::super::Config::parse_all_with(path, &whole, &env);
        // Two problems in each purge and schedule, one in each `purg`.
        assert_eq!(units_problems.len(), 5 * (3 * UNITS_PER_THREAD) / 4);
        assert_eq!(units_problems, whole_problems);
        let names = |config: Option<super::super::Config>| {
            config.map(|c| c.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(names(units_config), names(whole_config));
    }

    #[test]
    fn typos_find_their_key() {
        let keys = ["table", "where", "time_column", "older_than"];
        assert_eq!(nearest("tabel", keys.into_iter()), Some("table"));
        assert_eq!(nearest("older_then", keys.into_iter()), Some("older_than"));
        assert_eq!(nearest("colour", keys.into_iter()), None);
    }
}

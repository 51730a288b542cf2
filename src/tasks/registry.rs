//! The list of task kinds: one line per kind. A kind is its config struct
//! (serde, `deny_unknown_fields`, one field per key) and the `Task` it
//! resolves to; everything else (its keys for messages, reading its part of
//! a `[tasks.NAME]` table, dispatching to it) follows from that line.
//!
//! Config depends on this module, never the other way: config splits each
//! task table into the keys every task takes and the kind's keys, and hands
//! the latter to `Kind::read` here.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{OutcomeLine, PlanContext, PlanLine, ReportProblem, Task, TaskSpec};

/// Every kind this build knows, in the order messages list them.
pub static KINDS: &[Kind] = &[
    Kind::of::<super::purge::PurgeFile>(),
    Kind::of::<super::archive::ArchiveFile>(),
    Kind::of::<super::orphans::OrphansFile>(),
    Kind::of::<super::sql::SqlFile>(),
    Kind::of::<super::files::FilesFile>(),
    Kind::of::<super::refresh::RefreshFile>(),
    Kind::of::<super::vacuum::VacuumFile>(),
    Kind::of::<super::analyze::AnalyzeFile>(),
    Kind::of::<super::reindex::ReindexFile>(),
    Kind::of::<super::partitions::PartitionsFile>(),
    Kind::of::<super::sessions::SessionsFile>(),
];

/// A kind's config struct: the keys of `[tasks.NAME]` beyond the ones every
/// task takes, and how they become the kind's `Task`.
pub(crate) trait KindFile: DeserializeOwned + 'static {
    /// What `kind = "..."` says.
    const NAME: &'static str;
    type Spec: Task;
    /// Checks what serde cannot (keys that go together, values that must
    /// parse) and reports each problem at its key.
    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<Self::Spec>;
}

/// Reads one kind's keys, already split from the common ones.
type Read = fn(
    toml_edit::DocumentMut,
    &Path,
    &mut ReportProblem<'_>,
) -> Result<Option<TaskSpec>, toml_edit::de::Error>;

/// One kind, as the registry holds it.
pub struct Kind {
    pub name: &'static str,
    keys: fn() -> &'static [&'static str],
    read: Read,
    plan_lines: fn(&serde_json::Value, &PlanContext<'_>) -> Option<Vec<PlanLine>>,
    outcome_lines: fn(&serde_json::Value) -> Vec<OutcomeLine>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kind {
    const fn of<K: KindFile>() -> Kind {
        Kind {
            name: K::NAME,
            keys: fields_of::<K>,
            read: read::<K>,
            plan_lines: <K::Spec as Task>::plan_lines,
            outcome_lines: <K::Spec as Task>::outcome_lines,
        }
    }

    /// The kind's keys, in the order its struct declares them.
    pub fn keys(&self) -> &'static [&'static str] {
        (self.keys)()
    }

    /// Deserializes the kind's keys (a table holding only those) and
    /// resolves them. `Err` is serde's refusal of one key (or of the table),
    /// with its span: the caller reports it, removes that key and reads
    /// again, so every problem is found. Relative paths are made relative to
    /// `base`, the config file's directory.
    pub fn read(
        &self,
        table: toml_edit::DocumentMut,
        base: &Path,
        report: &mut ReportProblem<'_>,
    ) -> Result<Option<TaskSpec>, toml_edit::de::Error> {
        (self.read)(table, base, report)
    }

    /// The dry run's text this kind renders itself from its `details`.
    pub fn plan_lines(
        &self,
        details: &serde_json::Value,
        context: &PlanContext<'_>,
    ) -> Option<Vec<PlanLine>> {
        (self.plan_lines)(details, context)
    }

    /// What a finished run of this kind says from its `details`.
    pub fn outcome_lines(&self, details: &serde_json::Value) -> Vec<OutcomeLine> {
        (self.outcome_lines)(details)
    }

    /// Whether tasks of this kind remove rows that a backup could hold.
    pub fn can_back_up(&self) -> bool {
        self.keys().contains(&"backup")
    }
}

/// The kind named `name`, if this build has it.
pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The kinds that take `key`.
pub fn kinds_with(key: &str) -> impl Iterator<Item = &'static Kind> + '_ {
    KINDS.iter().filter(move |k| k.keys().contains(&key))
}

fn read<K: KindFile>(
    table: toml_edit::DocumentMut,
    base: &Path,
    report: &mut ReportProblem<'_>,
) -> Result<Option<TaskSpec>, toml_edit::de::Error> {
    let file: K = toml_edit::de::from_document(table)?;
    Ok(file.resolve(report).map(|mut spec| {
        spec.anchor_paths(base);
        TaskSpec {
            kind: find(K::NAME).expect("a kind reads only through its registry line"),
            task: Arc::new(spec),
        }
    }))
}

/// The field names serde knows for a struct (after `rename`), so a key's
/// name is written once, as its field.
pub(crate) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the field list serde passes to
/// `deserialize_struct`, then stops.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only field names are read"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("only field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_and_knows_its_keys() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        assert_eq!(
            find("purge").unwrap().keys(),
            [
                "table",
                "where",
                "time_column",
                "older_than",
                "backup",
                "on_referenced",
                "parallel"
            ]
        );
        assert!(find("purge").unwrap().can_back_up());
        assert!(!find("sql").unwrap().can_back_up());
    }
}

//! `migrate test`: whether each migration's down undoes its up, tried on a
//! scratch cluster that holds a copy of the live schema, so nothing on the
//! live database changes. The pending migrations go up (oldest first),
//! down (newest first) and up again, and the catalog (`catalog`) must come
//! back as it was at each step: after a migration's down as it was before
//! its up, after its second up as after its first. With `--last N` the
//! newest applied ones go down and up again instead, from the live copy.
//!
//! A migration without a down stops the cycle there: marked irreversible,
//! it is said so; not marked, it fails. With seeded rows (`--data`) a down
//! must also keep the rows and values of what exists before and after it.

use serde::Serialize;
use tokio_postgres::Client;

use super::Migration;
use super::catalog::{self, Diff, Snapshot};
use super::scratch;
use crate::unnamed::Unnamed;

/// What became of one migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Verdict {
    #[serde(rename = "reversible")]
    Reversible,
    #[serde(rename = "not reversible")]
    NotReversible,
    #[serde(rename = "irreversible")]
    Irreversible,
    #[serde(rename = "not tested")]
    NotTested,
}

impl Verdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Reversible => "reversible",
            Verdict::NotReversible => "not reversible",
            Verdict::Irreversible => "irreversible",
            Verdict::NotTested => "not tested",
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Tested {
    pub version: String,
    pub name: String,
    pub status: Verdict,
    /// What was not as it should be, one line per object.
    pub diff: Vec<String>,
    /// Column order changes: said, not failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub migrations: Vec<Tested>,
    /// Where the cycle stopped and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// With `--data`: the tables given rows, and those that could not be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seeded: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_seeded: Vec<String>,
    /// An up or down failed on the copy (its migration says where).
    #[serde(skip)]
    failed: bool,
}

impl Report {
    pub(crate) fn passed(&self) -> bool {
        !self.failed
            && self
                .migrations
                .iter()
                .all(|m| m.status != Verdict::NotReversible)
    }
}

/// What `--data` leaves unseeded: the migration tool's ledger (as
/// `Ledger::table` names it), whose rows the migrations never touch.
pub(crate) struct Seeding<'a> {
    pub ledger: &'a str,
}

/// How many rows `--data` gives each table.
const SEED_ROWS: i64 = 3;

fn tested(chosen: &[&Migration]) -> Vec<Tested> {
    chosen
        .iter()
        .map(|m| Tested {
            version: m.written.clone(),
            name: m.name.clone(),
            status: Verdict::NotTested,
            diff: Vec::new(),
            warnings: Vec::new(),
        })
        .collect()
}

async fn snap(client: &Client) -> Result<Snapshot, String> {
    catalog::snapshot(client, &[])
        .await
        .map_err(|e| format!("reading the scratch catalog: {}", crate::db::describe(&e)))
}

/// The pending migrations `chosen` (in the order `up` applies them): up,
/// down newest first, up again, on `client`, a scratch database holding
/// the live schema.
pub(crate) async fn pending(
    client: &Client,
    chosen: &[&Migration],
    data: Option<&Seeding<'_>>,
) -> Result<Report, String> {
    let mut report = Report {
        migrations: tested(chosen),
        ..Report::default()
    };
    let (mut before_up, mut after_up) = (Vec::new(), Vec::new());
    for (i, m) in chosen.iter().enumerate() {
        before_up.push(snap(client).await?);
        if let Err(e) = scratch::apply(client, &m.up).await {
            report.migrations[i]
                .diff
                .push(format!("its up failed on the copy of the live schema: {e}"));
            report.failed = true;
            break;
        }
        after_up.push(snap(client).await?);
    }
    if let Some(seeding) = data
        && let Some(last) = after_up.last()
    {
        seed(client, last, seeding, &mut report).await;
    }
    let mut left = Diff::default();
    let mut reverted = Vec::new();
    for i in (0..after_up.len()).rev() {
        let v = &chosen[i].written;
        let Some((_, rows)) = down_step(client, &mut report, chosen, i, data.is_some()).await?
        else {
            break;
        };
        let now = snap(client).await?;
        let d = catalog::diff(&before_up[i], &now).minus(&left);
        let t = &mut report.migrations[i];
        t.diff = d.phrased(
            &format!("is left after the down of {v}"),
            &format!("is missing after the down of {v} (it was there before the up)"),
            &format!("is not put back by the down of {v}"),
        );
        t.warnings = warned(&d, &format!("after the down of {v}"));
        if let Some(rows) = rows {
            t.diff
                .extend(lost_rows(client, &rows, &now, &format!("the down of {v}")).await);
        }
        t.status = if t.diff.is_empty() {
            Verdict::Reversible
        } else {
            Verdict::NotReversible
        };
        left.extend(d);
        reverted.push(i);
    }
    for &i in reverted.iter().rev() {
        let m = chosen[i];
        let v = &m.written;
        let t = &mut report.migrations[i];
        if let Err(e) = scratch::apply(client, &m.up).await {
            t.status = Verdict::NotReversible;
            t.diff
                .push(format!("its second up, after its down, failed: {e}"));
            report.notes.push(format!(
                "the second ups stop at {v}: it failed after its down"
            ));
            break;
        }
        let now = snap(client).await?;
        let d = catalog::diff(&after_up[i], &now).minus(&left);
        t.diff.extend(d.phrased(
            &format!("is new on the second up of {v}"),
            &format!("is missing on the second up of {v}"),
            &format!("differs on the second up of {v}"),
        ));
        t.warnings
            .extend(warned(&d, &format!("on the second up of {v}")));
        if !t.diff.is_empty() {
            t.status = Verdict::NotReversible;
        }
    }
    Ok(report)
}

/// The newest applied migrations `chosen` (newest first): down, then up
/// again oldest first, from the live schema's copy; after each second up
/// the catalog must be as it was before that migration's down.
pub(crate) async fn last(
    client: &Client,
    chosen: &[&Migration],
    data: Option<&Seeding<'_>>,
) -> Result<Report, String> {
    let mut report = Report {
        migrations: tested(chosen),
        ..Report::default()
    };
    if let Some(seeding) = data {
        let live = snap(client).await?;
        seed(client, &live, seeding, &mut report).await;
    }
    let mut before_down = Vec::new();
    for (i, m) in chosen.iter().enumerate() {
        let v = &m.written;
        let Some((before, rows)) =
            down_step(client, &mut report, chosen, i, data.is_some()).await?
        else {
            break;
        };
        if let Some(rows) = rows {
            let now = snap(client).await?;
            let lost = lost_rows(client, &rows, &now, &format!("the down of {v}")).await;
            report.migrations[i].diff.extend(lost);
        }
        before_down.push(before);
    }
    for i in (0..before_down.len()).rev() {
        let m = chosen[i];
        let v = &m.written;
        let t = &mut report.migrations[i];
        if let Err(e) = scratch::apply(client, &m.up).await {
            t.status = Verdict::NotReversible;
            t.diff.push(format!("its up, after its down, failed: {e}"));
            report
                .notes
                .push(format!("the ups stop at {v}: it failed after its down"));
            break;
        }
        let now = snap(client).await?;
        let d = catalog::diff(&before_down[i], &now);
        t.diff.extend(d.phrased(
            &format!("is left over after the down and up of {v}"),
            &format!("is missing after the down and up of {v}"),
            &format!("differs after the down and up of {v}"),
        ));
        t.warnings
            .extend(warned(&d, &format!("after the down and up of {v}")));
        t.status = if t.diff.is_empty() {
            Verdict::Reversible
        } else {
            Verdict::NotReversible
        };
    }
    Ok(report)
}

/// `chosen[i]`'s down on the copy, and the catalog before it (with
/// `seeded`, its rows' fingerprints too); `None` when the cycle stops
/// there (no down, or it failed), which the report then says.
async fn down_step(
    client: &Client,
    report: &mut Report,
    chosen: &[&Migration],
    i: usize,
    seeded: bool,
) -> Result<Option<(Snapshot, Option<Vec<Fingerprint>>)>, String> {
    let m = chosen[i];
    let Some(down) = &m.down else {
        stop_without_down(report, chosen, i);
        return Ok(None);
    };
    let before = snap(client).await?;
    let rows = if seeded {
        Some(fingerprints(client, &before).await)
    } else {
        None
    };
    if let Err(e) = scratch::apply(client, down).await {
        let t = &mut report.migrations[i];
        t.status = Verdict::NotReversible;
        t.diff.push(format!("its down failed: {e}"));
        report.notes.push(format!(
            "the cycle stops at {}: its down failed, so older migrations are not tested",
            m.written
        ));
        return Ok(None);
    }
    Ok(Some((before, rows)))
}

/// The cycle meets `chosen[i]` without a down: irreversible (said) or a
/// failure; the older ones are not tested either way.
fn stop_without_down(report: &mut Report, chosen: &[&Migration], i: usize) {
    let m = chosen[i];
    let older: Vec<&str> = chosen
        .iter()
        .enumerate()
        .filter(|(j, _)| report.migrations[*j].status == Verdict::NotTested && *j != i)
        .filter(|(j, _)| report.migrations[*j].diff.is_empty())
        .map(|(_, m)| m.written.as_str())
        .collect();
    let untested = if older.is_empty() {
        String::new()
    } else {
        format!("; not tested: {}", older.join(", "))
    };
    if m.irreversible {
        report.migrations[i].status = Verdict::Irreversible;
        report.notes.push(format!(
            "migration {} is marked irreversible: the cycle stops at it{untested}",
            m.written
        ));
    } else {
        let t = &mut report.migrations[i];
        t.status = Verdict::NotReversible;
        t.diff.push(format!(
            "migration {} has no down and is not marked irreversible",
            m.written
        ));
        report.notes.push(format!(
            "the cycle stops at {}: it has no down (write one, or mark it irreversible with `-- pgmaint: irreversible` or [migrations] irreversible = [\"{}\"]){untested}",
            m.written, m.written
        ));
    }
}

fn warned(d: &Diff, when: &str) -> Vec<String> {
    d.order_warnings()
        .into_iter()
        .map(|w| format!("{w} {when}"))
        .collect()
}

/// A table's row count and, per column, a digest of its values (sorted,
/// NULLs counted).
struct Fingerprint {
    table: String,
    rows: i64,
    columns: Vec<(String, String)>,
}

async fn fingerprint(
    client: &Client,
    table: &str,
    columns: &[String],
) -> Result<Fingerprint, tokio_postgres::Error> {
    let digests: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "coalesce(md5(string_agg(coalesce({c}::text, '<null>'), ',' ORDER BY coalesce({c}::text, '<null>'))), '')"
            )
        })
        .collect();
    let sql = format!(
        "SELECT count(*)::int8, ARRAY[{}]::text[] FROM {table}",
        if digests.is_empty() {
            "NULL".to_string()
        } else {
            digests.join(", ")
        }
    );
    let row = client.row(&sql, &[]).await?;
    let values: Vec<Option<String>> = row.get(1);
    Ok(Fingerprint {
        table: table.to_string(),
        rows: row.get(0),
        columns: columns
            .iter()
            .cloned()
            .zip(values.into_iter().map(Option::unwrap_or_default))
            .collect(),
    })
}

/// Every seeded table's fingerprint before a down.
async fn fingerprints(client: &Client, now: &Snapshot) -> Vec<Fingerprint> {
    let mut out = Vec::new();
    for table in now.tables() {
        if let Ok(f) = fingerprint(client, table, now.columns_of(table)).await
            && f.rows > 0
        {
            out.push(f);
        }
    }
    out
}

/// What a down lost of the rows before it: of the tables and columns that
/// exist before and after it, a changed count or changed values.
async fn lost_rows(
    client: &Client,
    before: &[Fingerprint],
    after: &Snapshot,
    step: &str,
) -> Vec<String> {
    let mut lines = Vec::new();
    for was in before {
        if !after.tables().any(|t| t == was.table) {
            continue;
        }
        let kept: Vec<String> = after
            .columns_of(&was.table)
            .iter()
            .filter(|c| was.columns.iter().any(|(name, _)| name == *c))
            .cloned()
            .collect();
        let now = match fingerprint(client, &was.table, &kept).await {
            Ok(now) => now,
            Err(e) => {
                lines.push(format!(
                    "table {} cannot be read after {step}: {}",
                    was.table,
                    crate::db::describe(&e)
                ));
                continue;
            }
        };
        if now.rows != was.rows {
            lines.push(format!(
                "table {} has {} row(s) after {step}, {} before",
                was.table, now.rows, was.rows
            ));
            continue;
        }
        for (column, digest) in &now.columns {
            let before = was.columns.iter().find(|(c, _)| c == column);
            if before.is_some_and(|(_, d)| d != digest) {
                lines.push(format!(
                    "column {}.{column} loses its values in {step} ({} row(s) seeded)",
                    was.table, was.rows
                ));
            }
        }
    }
    lines
}

/// One column as the seeding sees it.
struct SeedColumn {
    name: String,
    category: String,
    type_name: String,
    base_type: String,
    has_default: bool,
    generated: bool,
    references: Option<(String, String)>,
}

/// Gives each table of `now` a few generated rows, parents before the
/// tables that reference them; a table whose insert fails is left empty
/// and named in `not_seeded`.
async fn seed(client: &Client, now: &Snapshot, seeding: &Seeding<'_>, report: &mut Report) {
    let ledger: Option<String> = client
        .row_opt(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
            &[&seeding.ledger],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0));
    let tables: Vec<String> = now
        .tables()
        .filter(|t| ledger.as_deref() != Some(*t))
        .map(String::from)
        .collect();
    let edges: Vec<(String, String)> = match client
        .rows(
            "SELECT format('%I.%I', cn.nspname, c.relname), format('%I.%I', pn.nspname, p.relname)
               FROM pg_constraint k
               JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
               JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
              WHERE k.contype = 'f' AND k.conrelid <> k.confrelid",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(_) => Vec::new(),
    };
    for table in parents_first(&tables, &edges) {
        match seed_table(client, &table).await {
            Ok(()) => report.seeded.push(table),
            Err(e) => report.not_seeded.push(format!("{table}: {e}")),
        }
    }
}

/// `tables` ordered so that a table comes after those it references
/// (cycles at the end, in name order).
fn parents_first(tables: &[String], edges: &[(String, String)]) -> Vec<String> {
    let mut placed: Vec<String> = Vec::new();
    let mut left: Vec<&String> = tables.iter().collect();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .copied()
            .filter(|t| {
                edges.iter().all(|(child, parent)| {
                    child != *t || placed.contains(parent) || !tables.contains(parent)
                })
            })
            .collect();
        let next: Vec<&String> = if ready.is_empty() {
            left.clone()
        } else {
            ready
        };
        for t in next {
            placed.push(t.clone());
            left.retain(|l| *l != t);
        }
    }
    placed
}

async fn seed_table(client: &Client, table: &str) -> Result<(), String> {
    let columns: Vec<SeedColumn> = client
        .rows(
            "SELECT format('%I', a.attname), bt.typcategory::text, format_type(a.atttypid, a.atttypmod), bt.typname::text,
                    d.adbin IS NOT NULL OR a.attidentity <> '', a.attgenerated <> '',
                    (SELECT format('%I.%I', rn.nspname, rc.relname) FROM pg_constraint k JOIN pg_class rc ON rc.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                      WHERE k.conrelid = a.attrelid AND k.contype = 'f' AND k.conkey = ARRAY[a.attnum] LIMIT 1),
                    (SELECT format('%I', ra.attname) FROM pg_constraint k JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = k.confkey[1]
                      WHERE k.conrelid = a.attrelid AND k.contype = 'f' AND k.conkey = ARRAY[a.attnum] LIMIT 1)
               FROM pg_attribute a
               JOIN pg_type t ON t.oid = a.atttypid
               JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(|e| crate::db::describe(&e))?
        .iter()
        .map(|r| SeedColumn {
            name: r.get(0),
            category: r.get(1),
            type_name: r.get(2),
            base_type: r.get(3),
            has_default: r.get(4),
            generated: r.get(5),
            references: r
                .get::<_, Option<String>>(6)
                .zip(r.get::<_, Option<String>>(7)),
        })
        .collect();
    let filled: Vec<&SeedColumn> = columns
        .iter()
        .filter(|c| !c.generated && !c.has_default)
        .collect();
    let names: Vec<&str> = filled.iter().map(|c| c.name.as_str()).collect();
    for i in 1..=SEED_ROWS {
        let sql = if filled.is_empty() {
            format!("INSERT INTO {table} DEFAULT VALUES")
        } else {
            let values: Vec<String> = filled.iter().map(|c| seed_value(c, i)).collect();
            format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                values.join(", ")
            )
        };
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| crate::db::describe(&e))?;
    }
    Ok(())
}

/// The value of row `i` for a column: its referenced row's key, or one
/// made from `i` by type; NULL for a type it does not know.
fn seed_value(c: &SeedColumn, i: i64) -> String {
    let ty = &c.type_name;
    if let Some((parent, key)) = &c.references {
        return format!(
            "(SELECT {key} FROM {parent} ORDER BY 1 OFFSET {} LIMIT 1)",
            i - 1
        );
    }
    match (c.category.as_str(), c.base_type.as_str()) {
        ("N", _) => format!("{i}::{ty}"),
        ("S", _) => format!("'seed {i}'::{ty}"),
        ("B", _) => format!("{}", i % 2 == 0),
        ("D", _) => format!("(timestamp '2024-01-01' + interval '{i} day')::{ty}"),
        ("T", _) => format!("interval '{i} hour'"),
        ("I", _) => format!("'10.0.0.{i}'::{ty}"),
        ("E", _) => format!(
            "(enum_range(NULL::{ty}))[1 + ({i} - 1) % array_length(enum_range(NULL::{ty}), 1)]"
        ),
        ("A", _) => format!("'{{}}'::{ty}"),
        ("U", "uuid") => format!("md5('{i}')::uuid"),
        ("U", "json" | "jsonb") => format!("'{{\"seed\": {i}}}'::{ty}"),
        _ => "NULL".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_seeded_before_the_tables_that_reference_them() {
        let tables = ["public.b", "public.a", "public.c"].map(String::from);
        let edges = [
            ("public.b".to_string(), "public.a".to_string()),
            ("public.c".to_string(), "public.b".to_string()),
        ];
        assert_eq!(
            parents_first(&tables, &edges),
            ["public.a", "public.b", "public.c"]
        );
    }
}

//! Flyway's `flyway_schema_history`, kept as Flyway keeps it: one row per
//! run of a migration (`installed_rank` counting up), `type` `SQL` for a
//! versioned or repeatable migration, Flyway's CRC32 checksum,
//! `execution_time` in milliseconds, `success` false for a migration that
//! stopped part-way. A reverted migration gets a `DELETE` row, the row
//! `flyway repair` writes for a migration it forgets: every Flyway (the
//! free one too) then counts the version pending again, where an undo's
//! `UNDO_SQL` row is a Teams type the free Flyway cannot read. What is
//! applied is read as Flyway reads it: a version's rows up to a `DELETE`
//! are forgotten, everything up to a `BASELINE` is applied, and a
//! repeatable is applied while its newest row has the file's checksum.

use tokio_postgres::GenericClient;

use super::Applied;
use crate::migrate::Migration;
use crate::migrate::source::{flyway_checksum, flyway_key, script_name};
use crate::unnamed::Unnamed;

pub(super) const TABLE: &str = "flyway_schema_history";

/// Flyway's definition for PostgreSQL (its `createMetaDataTable.sql`).
pub(super) const DEFINITION: &str = r#"CREATE TABLE IF NOT EXISTS "flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success");"#;

/// The advisory lock Flyway takes on PostgreSQL while it migrates:
/// `"Flyway"` in ASCII plus Java's `hashCode` of the quoted table name
/// (`"public"."flyway_schema_history"`).
pub(super) fn lock_key(schema: &str) -> i64 {
    const MAGIC: i64 =
        (0x46 << 40) + (0x6C << 32) + (0x79 << 24) + (0x77 << 16) + (0x61 << 8) + 0x79;
    let quoted = format!("\"{schema}\".\"{TABLE}\"");
    let hash = quoted.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    MAGIC + i64::from(hash)
}

/// The checksum the ledger keeps of a script, as its 4 bytes.
pub(super) fn checksum(text: &str) -> Vec<u8> {
    flyway_checksum(text).to_be_bytes().to_vec()
}

struct Row {
    version: Option<String>,
    description: String,
    kind: String,
    checksum: Option<i32>,
    success: bool,
}

/// What the rows say is applied, against the files `known`.
pub(super) async fn applied(
    client: &impl GenericClient,
    known: &[Migration],
) -> Result<Vec<Applied>, tokio_postgres::Error> {
    let rows: Vec<Row> = client
        .rows(
            &format!(
                "SELECT version, description, type, checksum, success FROM {TABLE} ORDER BY installed_rank"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| Row {
            version: r.get(0),
            description: r.get(1),
            kind: r.get(2),
            checksum: r.get(3),
            success: r.get(4),
        })
        .collect();
    // Newest row per key, in the order keys first appear.
    let mut latest: Vec<(i64, &Row)> = Vec::new();
    let mut baseline: Option<i64> = None;
    for row in &rows {
        match row.kind.as_str() {
            // Flyway's marker of the schemas it created.
            "SCHEMA" => continue,
            "BASELINE" => {
                baseline = Some(flyway_key(row.version.as_deref(), &row.description));
                continue;
            }
            _ => {}
        }
        let key = flyway_key(row.version.as_deref(), &row.description);
        let forgets = matches!(row.kind.as_str(), "DELETE" | "UNDO_SQL") && row.success;
        if forgets {
            latest.retain(|(k, _)| *k != key);
            continue;
        }
        match latest.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = row,
            None => latest.push((key, row)),
        }
    }
    let mut applied = Vec::new();
    if let Some(baseline) = baseline {
        // Every versioned file up to the baseline's version is applied.
        let upto = known
            .iter()
            .position(|m| m.version == baseline)
            .map(|at| at + 1)
            .unwrap_or(0);
        for m in known[..upto].iter().filter(|m| !m.repeatable) {
            if !latest.iter().any(|(k, _)| *k == m.version) {
                applied.push(Applied {
                    version: m.version,
                    written: m.written.clone(),
                    checksum: None,
                    success: true,
                });
            }
        }
    }
    for (key, row) in latest {
        let file = known.iter().find(|m| m.version == key);
        let kept = row.checksum.map(|c| c.to_be_bytes().to_vec());
        if row.version.is_none()
            && row.success
            && let Some(m) = file
            && kept.as_deref() != Some(checksum(&m.up.text).as_slice())
        {
            // A changed repeatable is pending again: Flyway reapplies it.
            continue;
        }
        applied.push(Applied {
            version: key,
            written: match (&row.version, file) {
                (_, Some(m)) => m.written.clone(),
                (Some(v), None) => v.clone(),
                (None, None) => format!("R__{}", row.description.replace(' ', "_")),
            },
            checksum: kept,
            success: row.success,
        });
    }
    Ok(applied)
}

/// What a row says of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Applied,
    /// It stopped part-way (`success` false).
    Failed,
    /// Reverted: a `DELETE` row.
    Reverted,
}

/// Inserts one row for `m`'s up, as the next `installed_rank`.
pub(super) async fn insert(
    client: &impl GenericClient,
    m: &Migration,
    mark: Mark,
) -> Result<(), tokio_postgres::Error> {
    let script = &m.up;
    let version = (!m.repeatable).then_some(m.written.as_str());
    let kind = if mark == Mark::Reverted {
        "DELETE"
    } else {
        "SQL"
    };
    let success = mark != Mark::Failed;
    client
        .exec(
            &format!(
                "INSERT INTO {TABLE} (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success)
                 SELECT coalesce(max(installed_rank), 0) + 1, $1, $2, $3, $4, $5, current_user, 0, $6 FROM {TABLE}"
            ),
            &[
                &version,
                &abbreviated(&m.name, 200),
                &kind,
                &abbreviated_path(&script_name(script), 1000),
                &flyway_checksum(&script.text),
                &success,
            ],
        )
        .await?;
    Ok(())
}

/// A description over its column's width as Flyway shortens it: the
/// first characters, then `...`.
fn abbreviated(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let head: String = text.chars().take(width - 3).collect();
    format!("{head}...")
}

/// A script name over its column's width as Flyway shortens it: `...`
/// then the name from its fourth character.
fn abbreviated_path(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let tail: String = text.chars().skip(3).take(width - 3).collect();
    format!("...{tail}")
}

/// The failed rows of `m` (what `flyway repair` removes): before a new
/// run's row, and for `migrate repair`.
pub(super) async fn remove_failed(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<(), tokio_postgres::Error> {
    if m.repeatable {
        client
            .exec(
                &format!(
                    "DELETE FROM {TABLE} WHERE NOT success AND version IS NULL AND description = $1"
                ),
                &[&m.name],
            )
            .await?;
    } else {
        client
            .exec(
                &format!("DELETE FROM {TABLE} WHERE NOT success AND version = $1"),
                &[&m.written],
            )
            .await?;
    }
    Ok(())
}

/// The newest row of `m` gets its execution time.
pub(super) async fn set_time(
    client: &impl GenericClient,
    m: &Migration,
    millis: i32,
) -> Result<(), tokio_postgres::Error> {
    let (test, value): (&str, &str) = if m.repeatable {
        ("version IS NULL AND description = $2", &m.name)
    } else {
        ("version = $2", &m.written)
    };
    client
        .exec(
            &format!(
                "UPDATE {TABLE} SET execution_time = $1 WHERE installed_rank = (SELECT max(installed_rank) FROM {TABLE} WHERE {test})"
            ),
            &[&millis, &value],
        )
        .await?;
    Ok(())
}

/// `repair` of a changed file: the newest row of its version gets the
/// file's checksum (as `flyway repair` realigns checksums).
pub(super) async fn set_checksum(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            &format!(
                "UPDATE {TABLE} SET checksum = $1 WHERE installed_rank = (SELECT max(installed_rank) FROM {TABLE} WHERE version = $2 AND type = 'SQL')"
            ),
            &[&flyway_checksum(&m.up.text), &m.written],
        )
        .await?;
    Ok(())
}

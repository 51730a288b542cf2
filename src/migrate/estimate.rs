//! How long a statement will hold its lock on the live database: what the
//! trace saw it do (a rewrite, a full read, an index build) scaled by the
//! live table's size, at a throughput measured on a scratch cluster,
//! never on the live database (a timed sample rewrite, scan and index
//! build, cached per host in `~/.cache/pgmaint/throughput.json`). Without
//! a trace, the statements that lock out writes are estimated from the
//! sizes alone at a fixed, cautious throughput, and say so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::MigrateError;
use super::trace::{Blocks, TracedLock, TracedStatement};
use crate::unnamed::Unnamed;

/// Bytes a second this host's server rewrites, reads and indexes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// A table rewrite with its indexes, per byte of the table with them.
    pub rewrite: f64,
    /// A full read (a validation), per byte of the table's heap.
    pub scan: f64,
    /// An index build, per byte of the table's heap.
    pub index: f64,
    /// Whether it was measured here (else the cautious defaults).
    pub measured: bool,
}

impl Throughput {
    /// What a modest server manages, for a plan without a scratch
    /// cluster: better to say too long than too short.
    pub const CAUTIOUS: Throughput = Throughput {
        rewrite: 40.0 * MB,
        scan: 200.0 * MB,
        index: 40.0 * MB,
        measured: false,
    };
}

const MB: f64 = 1024.0 * 1024.0;

/// The live size of one table.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Size {
    /// The heap and its TOAST.
    pub table_bytes: i64,
    /// With every index.
    pub total_bytes: i64,
    pub rows: i64,
}

/// One statement's estimate.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub seconds: f64,
    pub low_seconds: f64,
    pub high_seconds: f64,
    /// The strongest lock it holds meanwhile, when it blocks anything.
    pub lock: Option<TracedLock>,
    /// `rewrites public.orders (12 GB)`, one per piece of work.
    pub work: Vec<String>,
    /// Measured on this host, or the cautious defaults.
    pub measured: bool,
}

impl Estimate {
    /// `rewrites public.orders (12 GB) under ACCESS EXCLUSIVE: about 4–7
    /// min; blocks reads and writes`.
    pub fn sentence(&self) -> String {
        let under = match &self.lock {
            Some(lock) if lock.blocks > Blocks::Nothing => format!(" under {}", lock.mode),
            _ => String::new(),
        };
        let blocks = match &self.lock {
            Some(lock) if lock.blocks > Blocks::Nothing => format!("; {}", lock.blocks.says()),
            _ => String::new(),
        };
        format!(
            "{}{under}: {}{blocks}",
            self.work.join(", "),
            range(self.low_seconds, self.high_seconds)
        )
    }
}

/// The live sizes of `tables` (as the trace names them, `public.users`),
/// read under the session's lock_timeout.
pub async fn sizes(
    live: &Client,
    tables: &[String],
) -> Result<BTreeMap<String, Size>, MigrateError> {
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = crate::db::read_only(
        live,
        live.rows(
            "SELECT n, pg_table_size(r), pg_total_relation_size(r), greatest(c.reltuples, 0)::int8
             FROM unnest($1::text[]) n
             CROSS JOIN LATERAL (SELECT to_regclass(n) AS r) t
             JOIN pg_class c ON c.oid = t.r",
            &[&tables.to_vec()],
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                Size {
                    table_bytes: r.get(1),
                    total_bytes: r.get(2),
                    rows: r.get(3),
                },
            )
        })
        .collect())
}

/// The tables a traced statement works on, for [`sizes`].
pub fn tables_of(statement: &TracedStatement) -> Vec<String> {
    let mut tables: Vec<String> = statement
        .rewrites
        .iter()
        .chain(&statement.scans)
        .chain(statement.builds.iter().map(|b| &b.table))
        .chain(statement.locks.iter().map(|l| &l.table))
        .cloned()
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

/// What a traced statement will take on the live tables, when it does
/// any work that grows with their size.
pub fn of_traced(
    statement: &TracedStatement,
    sizes: &BTreeMap<String, Size>,
    throughput: &Throughput,
) -> Option<Estimate> {
    let size = |t: &String| sizes.get(t).copied().unwrap_or_default();
    let mut seconds = 0.0;
    let mut work = Vec::new();
    for t in &statement.rewrites {
        let s = size(t);
        seconds += s.total_bytes as f64 / throughput.rewrite;
        work.push(format!("rewrites {t} ({})", bytes(s.total_bytes)));
    }
    for b in &statement.builds {
        let s = size(&b.table);
        seconds += s.table_bytes as f64 / throughput.index;
        work.push(format!(
            "builds {} on {} ({})",
            b.index,
            b.table,
            bytes(s.table_bytes)
        ));
    }
    for t in &statement.scans {
        let s = size(t);
        seconds += s.table_bytes as f64 / throughput.scan;
        work.push(format!("reads all of {t} ({})", bytes(s.table_bytes)));
    }
    if work.is_empty() {
        return None;
    }
    Some(Estimate {
        seconds,
        low_seconds: seconds * 0.7,
        high_seconds: seconds * 1.5,
        lock: statement.worst().cloned(),
        work,
        measured: throughput.measured,
    })
}

/// Without a trace: a statement that locks out writes on `tables`, taken
/// as rewriting them at the cautious throughput (an upper bound for most
/// DDL; an index build or a validation is faster).
pub fn of_untraced(tables: &[String], sizes: &BTreeMap<String, Size>) -> Option<Estimate> {
    let mut seconds = 0.0;
    let mut work = Vec::new();
    for t in tables {
        let s = sizes.get(t)?;
        seconds += s.total_bytes as f64 / Throughput::CAUTIOUS.rewrite;
        work.push(format!("may rewrite {t} ({})", bytes(s.total_bytes)));
    }
    if work.is_empty() {
        return None;
    }
    Some(Estimate {
        seconds,
        low_seconds: 0.0,
        high_seconds: seconds * 1.5,
        lock: None,
        work,
        measured: false,
    })
}

/// This host's throughput: from the cache, else measured on `scratch`
/// (a few seconds, once) and cached.
pub async fn throughput(scratch: &Client, local_version: &str) -> Throughput {
    let key = cache_key(local_version);
    if let Some(cached) = read_cache().get(&key) {
        return *cached;
    }
    match measure(scratch).await {
        Ok(measured) => {
            write_cache(&key, measured);
            measured
        }
        Err(_) => Throughput::CAUTIOUS,
    }
}

/// Rows of the sample table: enough for the times to be the server's
/// rather than its fixed costs (about 40 MB with its index).
const SAMPLE_ROWS: i64 = 400_000;

async fn measure(client: &Client) -> Result<Throughput, tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS pgmaint_throughput CASCADE;
             CREATE SCHEMA pgmaint_throughput;
             CREATE TABLE pgmaint_throughput.sample (id bigint PRIMARY KEY, body text, at timestamptz, n int);
             INSERT INTO pgmaint_throughput.sample
               SELECT g, md5(g::text) || md5((g * 7)::text), now() - (random() * 1000) * interval '1 day', (random() * 1000)::int
               FROM generate_series(1, {SAMPLE_ROWS}) g;"
        ))
        .await?;
    // On its own: VACUUM cannot run in the implicit transaction of a
    // multi-statement query.
    client
        .batch_execute("VACUUM ANALYZE pgmaint_throughput.sample")
        .await?;
    let size = |total: bool| {
        let f = if total {
            "pg_total_relation_size"
        } else {
            "pg_table_size"
        };
        format!("SELECT {f}('pgmaint_throughput.sample')")
    };
    let table: i64 = client.row(&size(false), &[]).await?.get(0);
    let timed = |sql: &'static str| async move {
        let started = Instant::now();
        client.batch_execute(sql).await?;
        Ok::<f64, tokio_postgres::Error>(started.elapsed().as_secs_f64().max(1e-3))
    };
    let scan =
        timed("ALTER TABLE pgmaint_throughput.sample ADD CONSTRAINT sample_n CHECK (n >= 0)")
            .await?;
    let index = timed("CREATE INDEX sample_at ON pgmaint_throughput.sample (at)").await?;
    let total: i64 = client.row(&size(true), &[]).await?.get(0);
    let rewrite = timed(
        "ALTER TABLE pgmaint_throughput.sample ADD COLUMN token uuid DEFAULT gen_random_uuid()",
    )
    .await?;
    client
        .batch_execute("DROP SCHEMA pgmaint_throughput CASCADE")
        .await?;
    Ok(Throughput {
        rewrite: total as f64 / rewrite,
        scan: table as f64 / scan,
        index: table as f64 / index,
        measured: true,
    })
}

fn cache_key(local_version: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let major = local_version.split('.').next().unwrap_or(local_version);
    format!("{host} PostgreSQL {major}")
}

fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("pgmaint").join("throughput.json"))
}

fn read_cache() -> BTreeMap<String, Throughput> {
    cache_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Best effort: a host that cannot keep it measures again next time.
fn write_cache(key: &str, throughput: Throughput) {
    let Some(path) = cache_path() else {
        return;
    };
    let mut all = read_cache();
    all.insert(key.to_string(), throughput);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string_pretty(&all) {
        let temp = path.with_extension("json.tmp");
        if std::fs::write(&temp, text).is_ok() {
            let _ = std::fs::rename(temp, path);
        }
    }
}

fn bytes(n: i64) -> String {
    crate::output::human_bytes(n as f64)
}

/// `about 4–7 min`, `under 1 s`, `up to 30 s`.
pub fn range(low: f64, high: f64) -> String {
    if high < 1.0 {
        return "under 1 s".into();
    }
    let (unit, div) = if high >= 7200.0 {
        ("h", 3600.0)
    } else if high >= 120.0 {
        ("min", 60.0)
    } else {
        ("s", 1.0)
    };
    let (lo, hi) = ((low / div).floor().max(0.0), (high / div).ceil());
    if lo >= hi || lo == 0.0 {
        format!("up to {hi} {unit}")
    } else {
        format!("about {lo}–{hi} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_in_the_unit_a_person_would_use() {
        assert_eq!(range(0.1, 0.5), "under 1 s");
        assert_eq!(range(2.1, 4.5), "about 2–5 s");
        assert_eq!(range(250.0, 400.0), "about 4–7 min");
        assert_eq!(range(0.0, 30.0), "up to 30 s");
        assert_eq!(range(3.0 * 3600.0, 5.0 * 3600.0), "about 3–5 h");
    }

    #[test]
    fn a_rewrite_scales_with_the_table_and_says_its_lock() {
        let statement = TracedStatement {
            line: 3,
            rewrites: vec!["public.orders".into()],
            locks: vec![TracedLock {
                table: "public.orders".into(),
                mode: "ACCESS EXCLUSIVE".into(),
                blocks: Blocks::ReadsAndWrites,
            }],
            ..TracedStatement::default()
        };
        let sizes = BTreeMap::from([(
            "public.orders".to_string(),
            Size {
                table_bytes: 9 << 30,
                total_bytes: 12 << 30,
                rows: 100_000_000,
            },
        )]);
        let throughput = Throughput {
            rewrite: 40.0 * MB,
            scan: 400.0 * MB,
            index: 60.0 * MB,
            measured: true,
        };
        let e = of_traced(&statement, &sizes, &throughput).unwrap();
        assert!((e.seconds - 307.2).abs() < 0.1, "{}", e.seconds);
        assert_eq!(
            e.sentence(),
            "rewrites public.orders (12.0 GB) under ACCESS EXCLUSIVE: about 3–8 min; blocks reads and writes"
        );
    }
}

//! What unnamed statements cost against named prepared ones (#22): the
//! same purge-like batch, run as pgmaint runs it (its own transaction,
//! `set_config(..., true)` for its timeouts, then a DELETE over a window
//! of pages, then COMMIT), N times per round, in three ways:
//!
//! - `unnamed`: `query_typed`, the unnamed statement, parsed and planned
//!   at every execution (what pgmaint does, so a transaction pooler can
//!   hand each transaction to another server connection);
//! - `named`: `prepare` once, then `query` (parse once; PostgreSQL may
//!   switch to a generic plan after five executions);
//! - `named, custom plans`: the same with `plan_cache_mode =
//!   force_custom_plan`, as pgmaint's moves and backed-up batches ran.
//!
//! The DELETE's cutoff is before every row, so no batch deletes anything
//! and the timing is the statements' own cost. The order of the three
//! rotates each round. Run by `bench/unnamed`, which starts a throwaway
//! cluster: `cargo run --release --example unnamed -- URL [BATCHES] [ROUNDS]`.

// This measures the named forms on purpose; pgmaint itself never uses them.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

const SET_TIMEOUTS: &str =
    "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)";
const BATCH: &str = "DELETE FROM bench_unnamed WHERE ctid >= format('(%s,0)', $1::int8)::tid \
     AND ctid < format('(%s,0)', $2::int8)::tid AND created_at < $3::timestamptz";
/// Pages per batch: about 5,000 rows of the table below.
const WINDOW: i64 = 50;

#[derive(Clone, Copy, Debug)]
enum Way {
    Unnamed,
    Named,
    NamedCustom,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Unnamed => "unnamed (query_typed)",
            Way::Named => "named (prepare + query)",
            Way::NamedCustom => "named, force_custom_plan",
        }
    }
}

async fn round(client: &Client, way: Way, batches: i64, pages: i64) -> Duration {
    let mode = match way {
        Way::NamedCustom => "force_custom_plan",
        _ => "auto",
    };
    client
        .batch_execute(&format!("SET plan_cache_mode = {mode}"))
        .await
        .unwrap();
    let cutoff = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z").unwrap();
    let named = match way {
        Way::Unnamed => None,
        _ => Some((
            client.prepare(SET_TIMEOUTS).await.unwrap(),
            client.prepare(BATCH).await.unwrap(),
        )),
    };
    let started = Instant::now();
    for i in 0..batches {
        let from = (i * WINDOW) % pages;
        let to = from + WINDOW;
        client.batch_execute("BEGIN").await.unwrap();
        match &named {
            None => {
                client
                    .query_typed(SET_TIMEOUTS, &[(&"1s", Type::TEXT), (&"5min", Type::TEXT)])
                    .await
                    .unwrap();
                client
                    .query_typed(
                        BATCH,
                        &[
                            (&from, Type::INT8),
                            (&to, Type::INT8),
                            (&cutoff, Type::TIMESTAMPTZ),
                        ],
                    )
                    .await
                    .unwrap();
            }
            Some((set, batch)) => {
                client.query(set, &[&"1s", &"5min"]).await.unwrap();
                client.query(batch, &[&from, &to, &cutoff]).await.unwrap();
            }
        }
        client.batch_execute("COMMIT").await.unwrap();
    }
    started.elapsed()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: unnamed URL [BATCHES] [ROUNDS]");
    let batches: i64 = args.next().map_or(2000, |n| n.parse().unwrap());
    let rounds: usize = args.next().map_or(5, |n| n.parse().unwrap());
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS bench_unnamed;
             CREATE TABLE bench_unnamed (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, payload text NOT NULL);
             INSERT INTO bench_unnamed SELECT i, now() - i * interval '1 minute', md5(i::text) FROM generate_series(1, 200000) i;",
        )
        .await
        .unwrap();
    client
        .batch_execute("VACUUM ANALYZE bench_unnamed")
        .await
        .unwrap();
    let pages: i64 = client
        .query_one(
            "SELECT relpages::int8 FROM pg_class WHERE relname = 'bench_unnamed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ways = [Way::Unnamed, Way::Named, Way::NamedCustom];
    let mut times: Vec<(Way, Vec<Duration>)> = ways.iter().map(|w| (*w, Vec::new())).collect();
    // A round of each first, untimed, so caches are warm for all three.
    for way in ways {
        round(&client, way, batches / 10, pages).await;
    }
    for r in 0..rounds {
        for k in 0..ways.len() {
            let at = (r + k) % ways.len();
            let took = round(&client, ways[at], batches, pages).await;
            times[at].1.push(took);
        }
    }
    println!(
        "{batches} batches per round, {rounds} rounds, table of {pages} pages, {WINDOW} pages a batch"
    );
    println!(
        "| statements | per batch (median of {rounds} rounds) | fastest round | slowest round |"
    );
    println!("|---|---|---|---|");
    let per_batch = |d: Duration| d.as_secs_f64() * 1e6 / batches as f64;
    let mut medians = Vec::new();
    for (way, mut rounds) in times {
        rounds.sort();
        let median = per_batch(rounds[rounds.len() / 2]);
        medians.push(median);
        println!(
            "| {} | {median:.0} µs | {:.0} µs | {:.0} µs |",
            way.label(),
            per_batch(rounds[0]),
            per_batch(rounds[rounds.len() - 1]),
        );
    }
    println!(
        "unnamed - named: {:+.0} µs per batch; unnamed - named with custom plans: {:+.0} µs per batch",
        medians[0] - medians[1],
        medians[0] - medians[2]
    );
}

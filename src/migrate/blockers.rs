//! Before a migration starts: the sessions that hold one of its tables in
//! a transaction that is idle, or that has run for more than a minute
//! (`LONG_TRANSACTION`): a busy statement that ends soon is what
//! `lock_timeout` and its retries wait out; these are not. A migration that queued behind them would stall every
//! reader behind itself; `[migrations] blockers` says whether to stop
//! (the default) or wait for them a while. An application's own migrator
//! (`format = "command"`) touches tables pgmaint cannot know in advance,
//! so for it every user table counts.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{Blockers, MigrateError};
use crate::unnamed::Unnamed;

/// A session in the way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Blocker {
    pub pid: i32,
    pub state: String,
    pub user: String,
    pub application: String,
    pub table: String,
    pub transaction_secs: f64,
    pub query: String,
}

impl Blocker {
    pub fn line(&self) -> String {
        format!(
            "pid {} ({}{}, {}) holds {} in a transaction open for {:.0} s; last query: {}",
            self.pid,
            self.user,
            if self.application.is_empty() {
                String::new()
            } else {
                format!(" via {}", self.application)
            },
            self.state,
            self.table,
            self.transaction_secs,
            self.query
        )
    }
}

/// A transaction open this long is a blocker even when it is busy.
pub const LONG_TRANSACTION: Duration = Duration::from_secs(60);

/// Whose locks count.
#[derive(Debug, Clone, Copy)]
pub enum Held<'a> {
    /// The tables the migration's statements name (as written).
    Tables(&'a [String]),
    /// Every table, view, sequence or index of the database outside the
    /// system schemas and `except_schema` (pgmaint's state schema): what
    /// a migrator pgmaint cannot read may touch.
    AnyUserTable { except_schema: &'a str },
}

impl Held<'_> {
    fn says(&self) -> &'static str {
        match self {
            Held::Tables(_) => "holding its tables",
            Held::AnyUserTable { .. } => "holding the database's tables",
        }
    }
}

/// The sessions in the way of statements touching what `held` says.
pub async fn find(
    client: &Client,
    held: Held<'_>,
    lock_timeout: Duration,
) -> Result<Vec<Blocker>, tokio_postgres::Error> {
    let long = LONG_TRANSACTION.max(lock_timeout);
    let (tables, any, except): (Vec<String>, bool, String) = match held {
        Held::Tables([]) => return Ok(Vec::new()),
        Held::Tables(tables) => (tables.to_vec(), false, String::new()),
        Held::AnyUserTable { except_schema } => (Vec::new(), true, except_schema.to_string()),
    };
    let rows = crate::db::read_only(client, async {
        client
            .rows(
                "WITH wanted AS (
                   SELECT to_regclass(n) AS rel FROM unnest($1::text[]) AS n
                   UNION ALL
                   SELECT c.oid FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                   WHERE $3 AND s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg\\_toast%'
                     AND s.nspname NOT LIKE 'pg\\_temp\\_%' AND s.nspname <> $4)
                 SELECT DISTINCT ON (a.pid) a.pid, coalesce(a.state, ''), coalesce(a.usename::text, ''),
                        coalesce(a.application_name, ''), l.relation::regclass::text,
                        extract(epoch FROM now() - a.xact_start)::float8, left(coalesce(a.query, ''), 200)
                 FROM pg_locks l
                 JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.relation IN (SELECT rel FROM wanted WHERE rel IS NOT NULL)
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.granted AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
                   AND (a.state LIKE 'idle in transaction%' OR a.xact_start < now() - make_interval(secs => $2))
                 ORDER BY a.pid",
                &[&tables, &long.as_secs_f64(), &any, &except],
            )
            .await
    })
    .await?;
    Ok(rows
        .iter()
        .map(|r| Blocker {
            pid: r.get(0),
            state: r.get(1),
            user: r.get(2),
            application: r.get(3),
            table: r.get(4),
            transaction_secs: r.get(5),
            query: r.get(6),
        })
        .collect())
}

/// Stops, or waits up to `wait`, while sessions are in the way.
pub async fn clear(
    client: &Client,
    held: Held<'_>,
    lock_timeout: Duration,
    mode: Blockers,
    wait: Duration,
    what: &str,
) -> Result<(), MigrateError> {
    let started = Instant::now();
    loop {
        let found = find(client, held, lock_timeout).await?;
        if found.is_empty() {
            return Ok(());
        }
        let waited_enough = mode == Blockers::Stop || started.elapsed() >= wait;
        if waited_enough {
            let lines: Vec<String> = found.iter().map(|b| format!("  - {}", b.line())).collect();
            let help = match mode {
                Blockers::Stop => {
                    "  help: end those transactions (or wait for them), then run it again; `[migrations] blockers = \"wait\"` waits up to blockers_wait for them"
                }
                Blockers::Wait => {
                    "  help: end those transactions, or raise [migrations] blockers_wait"
                }
            };
            return Err(MigrateError::Refused(format!(
                "{what} would wait behind {} session(s) {} in open transactions, and every query on those tables would queue behind it; nothing was changed{}\n{}\n{help}",
                found.len(),
                held.says(),
                if mode == Blockers::Wait {
                    format!(" (waited {:.0} s)", started.elapsed().as_secs_f64())
                } else {
                    String::new()
                },
                lines.join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! `sessions`: cancel or terminate the sessions of the configured database
//! that sit idle in a transaction, or run one query, longer than a limit,
//! except those `except` names. Such sessions hold locks and keep VACUUM
//! from removing dead rows; this is the kill switch people otherwise write
//! as a cron'd `pg_terminate_backend` one-liner.
//!
//! Only client backends of the current database are considered: never
//! walsenders, autovacuum or other background workers, never this session
//! and never another pgmaint's (application name `pgmaint...`, or this
//! session's own). The dry run lists each session it would act on; the run
//! signals exactly those, each only if it is still the same session in the
//! same state (pid, backend start, state and the start of its transaction
//! and query unchanged), so a reused pid or a session that moved on is not
//! hit.

use crate::unnamed::Unnamed;
use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::Client;

use super::{CheckProblem, Outcome, PlanLine, ReportProblem, Task, TaskContext, TaskError};
use crate::db;
use crate::duration::Duration;
use crate::status::Status;

/// The keys of a sessions task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsFile {
    idle_in_transaction: Option<Duration>,
    running: Option<Duration>,
    action: Option<Action>,
    except: Option<Vec<String>>,
}

impl super::registry::KindFile for SessionsFile {
    const NAME: &'static str = "sessions";
    type Spec = SessionsSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<SessionsSpec> {
        let mut fine = true;
        if self.idle_in_transaction.is_none() && self.running.is_none() {
            report(
                "idle_in_transaction",
                "a sessions task needs `idle_in_transaction` or `running` (or both)".into(),
                Some("add e.g. `idle_in_transaction = \"5min\"` or `running = \"1h\"`".into()),
            );
            fine = false;
        }
        for (key, limit) in [
            ("idle_in_transaction", self.idle_in_transaction),
            ("running", self.running),
        ] {
            if limit.is_some_and(|d| d.0.is_zero()) {
                report(
                    key,
                    format!("`{key}` must be longer than 0: every such session would be hit"),
                    Some("write a limit such as \"5min\"".into()),
                );
                fine = false;
            }
        }
        let action = self.action.unwrap_or(Action::Cancel);
        if action == Action::Cancel && self.idle_in_transaction.is_some() {
            report(
                if self.action.is_some() {
                    "action"
                } else {
                    "idle_in_transaction"
                },
                "a cancel does nothing to a session idle in transaction: PostgreSQL ignores it while the session waits for its client".into(),
                Some("write `action = \"terminate\"` to end such sessions, or set only `running` to cancel long queries".into()),
            );
            fine = false;
        }
        let mut except = Vec::new();
        for written in self.except.unwrap_or_default() {
            match Except::parse(&written) {
                Ok(rule) => except.push(rule),
                Err(why) => {
                    report(
                        "except",
                        format!("`{written}` {why}"),
                        Some("write FIELD=GLOB with FIELD one of app, user, client, db, e.g. \"app=etl*\" or \"user=admin\"".into()),
                    );
                    fine = false;
                }
            }
        }
        fine.then_some(SessionsSpec {
            idle_in_transaction: self.idle_in_transaction,
            running: self.running,
            action,
            except,
        })
    }
}

/// What is done to a session past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `pg_cancel_backend`: stop its query; the session stays.
    Cancel,
    /// `pg_terminate_backend`: end the session (its transaction rolls back).
    Terminate,
}

impl Action {
    /// The server function; a fixed name, never from the config.
    fn function(self) -> &'static str {
        match self {
            Action::Cancel => "pg_cancel_backend",
            Action::Terminate => "pg_terminate_backend",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Terminate => "terminate",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Action::Cancel => "cancelled",
            Action::Terminate => "terminated",
        }
    }
}

/// What an `except` rule matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    App,
    User,
    Client,
    Db,
}

/// One `except` entry: `app=etl*`, a glob on one field of the session.
#[derive(Debug, Clone)]
pub struct Except {
    written: String,
    field: Field,
    matcher: GlobMatcher,
}

impl Serialize for Except {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(s)
    }
}

impl Except {
    fn parse(written: &str) -> Result<Except, String> {
        let Some((field, pattern)) = written.split_once('=') else {
            return Err("is not of the form FIELD=GLOB".into());
        };
        let field = match field.trim() {
            "app" | "application_name" => Field::App,
            "user" | "usename" => Field::User,
            "client" | "client_addr" => Field::Client,
            "db" | "datname" => Field::Db,
            other => {
                return Err(format!(
                    "names `{other}`, which is not a field sessions match on (app, user, client, db)"
                ));
            }
        };
        let glob = Glob::new(pattern.trim())
            .map_err(|err| format!("has a pattern that is not a valid glob: {err}"))?;
        Ok(Except {
            written: written.to_string(),
            field,
            matcher: glob.compile_matcher(),
        })
    }

    fn matches(&self, session: &Session) -> bool {
        let value = match self.field {
            Field::App => session.application.as_str(),
            Field::User => session.user.as_str(),
            Field::Client => session.client.as_deref().unwrap_or(""),
            Field::Db => session.database.as_str(),
        };
        self.matcher.is_match(value)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionsSpec {
    pub idle_in_transaction: Option<Duration>,
    pub running: Option<Duration>,
    pub action: Action,
    pub except: Vec<Except>,
}

/// A session past a limit, as the dry run saw it; the run signals it only
/// if these still hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub pid: i32,
    pub backend_start: DateTime<Utc>,
    pub user: String,
    pub application: String,
    pub client: Option<String>,
    pub database: String,
    pub state: String,
    pub xact_start: Option<DateTime<Utc>>,
    pub query_start: Option<DateTime<Utc>>,
    /// Idle in transaction or running, for this long (ms).
    pub for_ms: u64,
    /// Which limit it is past.
    pub why: String,
    /// Its query, shortened.
    pub query: String,
}

/// What a sessions task found: the sessions to act on, and those its
/// `except` rules spare. It is the dry run's `details`, and what the plan
/// printer reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionsPlan {
    pub summary: String,
    pub action: Action,
    pub sessions: Vec<Session>,
    /// Past a limit but named by `except`: left alone.
    pub spared: Vec<Session>,
    pub statements: Vec<String>,
}

/// Characters of a session's query kept in the plan.
const QUERY_SHOWN: usize = 120;

/// The sessions of this database past a limit; the statement's only
/// values are parameters ($1 idle limit, $2 running limit, in ms).
const FIND: &str = "SELECT pid, backend_start, coalesce(usename::text, ''), application_name,
        host(client_addr), datname::text, state, xact_start, query_start,
        (extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start ELSE state_change END) * 1000)::bigint,
        query
   FROM pg_stat_activity
  WHERE backend_type = 'client backend'
    AND datname = current_database()
    AND pid <> pg_backend_pid()
    AND application_name NOT LIKE 'pgmaint%'
    AND application_name <> current_setting('application_name')
    AND ((state IN ('idle in transaction', 'idle in transaction (aborted)')
          AND $1::bigint IS NOT NULL
          AND state_change < now() - $1::bigint * interval '1 millisecond')
      OR (state = 'active'
          AND $2::bigint IS NOT NULL
          AND query_start < now() - $2::bigint * interval '1 millisecond'))
  ORDER BY backend_start, pid";

impl SessionsSpec {
    fn millis(limit: Option<Duration>) -> Option<i64> {
        limit.map(|d| d.0.as_millis().min(i64::MAX as u128) as i64)
    }

    /// The statement that signals one session, only if it is still the one
    /// the plan saw: `$1` pid, `$2` backend start, `$3` state, `$4` the
    /// transaction's start, `$5` the query's start.
    fn signal(&self) -> String {
        format!(
            "SELECT {}(pid) FROM pg_stat_activity
  WHERE pid = $1 AND backend_start = $2 AND state = $3
    AND xact_start IS NOT DISTINCT FROM $4 AND query_start IS NOT DISTINCT FROM $5
    AND backend_type = 'client backend' AND datname = current_database()",
            self.action.function()
        )
    }

    async fn find(&self, client: &Client) -> Result<SessionsPlan, tokio_postgres::Error> {
        let rows = client
            .rows(
                FIND,
                &[
                    &Self::millis(self.idle_in_transaction),
                    &Self::millis(self.running),
                ],
            )
            .await?;
        let mut sessions = Vec::new();
        let mut spared = Vec::new();
        for row in rows {
            let state: String = row.get(6);
            let for_ms = row.get::<_, Option<i64>>(9).unwrap_or(0).max(0) as u64;
            let (limit, what) = if state == "active" {
                (self.running, "running")
            } else {
                (self.idle_in_transaction, "idle in transaction")
            };
            let query: String = row.get::<_, Option<String>>(10).unwrap_or_default();
            let session = Session {
                pid: row.get(0),
                backend_start: row.get(1),
                user: row.get(2),
                application: row.get::<_, Option<String>>(3).unwrap_or_default(),
                client: row.get(4),
                database: row.get(5),
                state,
                xact_start: row.get(7),
                query_start: row.get(8),
                for_ms,
                why: format!(
                    "{what} longer than {}",
                    limit.map(|d| d.to_string()).unwrap_or_default()
                ),
                query: shorten(&query),
            };
            if self.except.iter().any(|rule| rule.matches(&session)) {
                spared.push(session);
            } else {
                sessions.push(session);
            }
        }
        let summary = format!(
            "would {} {} session(s){}",
            self.action.verb(),
            sessions.len(),
            if spared.is_empty() {
                String::new()
            } else {
                format!("; {} spared by `except`", spared.len())
            }
        );
        Ok(SessionsPlan {
            summary,
            action: self.action,
            statements: vec![self.signal()],
            sessions,
            spared,
        })
    }
}

/// A query on one line, cut to `QUERY_SHOWN` characters.
fn shorten(query: &str) -> String {
    let line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= QUERY_SHOWN {
        line
    } else {
        format!(
            "{}…",
            line.chars().take(QUERY_SHOWN - 1).collect::<String>()
        )
    }
}

impl Task for SessionsSpec {
    type Plan = SessionsPlan;

    fn target(&self) -> String {
        let mut limits = Vec::new();
        if let Some(d) = self.idle_in_transaction {
            limits.push(format!("idle in transaction > {d}"));
        }
        if let Some(d) = self.running {
            limits.push(format!("running > {d}"));
        }
        format!("sessions {}", limits.join(", "))
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<SessionsPlan, TaskError> {
        Ok(self.find(ctx.client).await?)
    }

    async fn describe(
        &self,
        _: &mut TaskContext<'_>,
        plan: &SessionsPlan,
    ) -> Result<Outcome, TaskError> {
        Ok(Outcome {
            status: Status::Succeeded,
            rows: 0,
            batches: plan.sessions.len() as u64,
            retries: 0,
            error: None,
            details: serde_json::to_value(plan).unwrap_or_default(),
        })
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: SessionsPlan,
    ) -> Result<Outcome, TaskError> {
        let statement = self.signal();
        ctx.log_statement(&statement);
        let mut signalled = Vec::new();
        let mut moved_on = Vec::new();
        let mut failed = Vec::new();
        let mut stopped = None;
        for session in &plan.sessions {
            if let Some(reason) = ctx.should_stop() {
                stopped = Some(reason);
                break;
            }
            let result = ctx
                .client
                .row_opt(
                    &statement,
                    &[
                        &session.pid,
                        &session.backend_start,
                        &session.state,
                        &session.xact_start,
                        &session.query_start,
                    ],
                )
                .await;
            match result {
                Ok(Some(row)) if row.get::<_, bool>(0) => signalled.push(session.pid),
                Ok(Some(_)) => failed.push(format!(
                    "pid {}: the server did not signal it (it may have just ended)",
                    session.pid
                )),
                Ok(None) => moved_on.push(session.pid),
                Err(err) => failed.push(format!("pid {}: {}", session.pid, db::describe(&err))),
            }
        }
        let (status, error) =
            super::utility::verdict(&failed, stopped, signalled.len(), "session(s)");
        Ok(Outcome {
            status,
            rows: 0,
            batches: signalled.len() as u64,
            retries: 0,
            error,
            details: json!({
                "summary": format!(
                    "{} {} of {} session(s){}",
                    self.action.done(),
                    signalled.len(),
                    plan.sessions.len(),
                    if moved_on.is_empty() {
                        String::new()
                    } else {
                        format!("; {} had moved on and were left alone", moved_on.len())
                    }
                ),
                "action": self.action,
                "signalled": signalled,
                "moved_on": moved_on,
                "spared": plan.spared.len(),
                "sessions": plan.sessions,
            }),
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        match client
            .row("SELECT pg_has_role('pg_signal_backend', 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)", &[])
            .await
        {
            Ok(row) if row.get::<_, Option<bool>>(0) == Some(true) => Vec::new(),
            Ok(_) => vec![CheckProblem {
                key: "action",
                message: format!(
                    "the connecting role may {} only its own sessions: it is neither a superuser nor a member of pg_signal_backend",
                    self.action.verb()
                ),
                help: Some("GRANT pg_signal_backend TO the role pgmaint connects as".into()),
            }],
            Err(err) => vec![CheckProblem {
                key: "action",
                message: db::describe(&err),
                help: None,
            }],
        }
    }

    fn plan_lines(
        details: &serde_json::Value,
        _: &super::PlanContext<'_>,
    ) -> Option<Vec<PlanLine>> {
        let plan: SessionsPlan = serde_json::from_value(details.clone()).ok()?;
        let mut lines = vec![PlanLine::Say(format!("{}.", capitalized(&plan.summary)))];
        for session in &plan.sessions {
            lines.push(PlanLine::Item(session_line(session)));
        }
        for session in &plan.spared {
            lines.push(PlanLine::Item(format!("spared: {}", session_line(session))));
        }
        if !plan.sessions.is_empty() {
            lines.push(PlanLine::Say(format!(
                "Each is {} only if it is still the same session in the same state (pid, start, transaction and query unchanged); {}.",
                plan.action.done(),
                match plan.action {
                    Action::Cancel => "a cancel stops its query and keeps the session",
                    Action::Terminate => "a terminate ends the session and rolls back its transaction",
                }
            )));
        }
        Some(lines)
    }
}

fn session_line(session: &Session) -> String {
    format!(
        "pid {} {}@{}{} ({}) {} for {}: {}",
        session.pid,
        session.user,
        session.database,
        if session.application.is_empty() {
            String::new()
        } else {
            format!(" app {}", session.application)
        },
        session.client.as_deref().unwrap_or("local"),
        session.state,
        crate::output::duration_ms(session.for_ms),
        session.query
    )
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn except_rules_are_field_equals_glob() {
        assert!(Except::parse("app=etl*").is_ok());
        assert!(Except::parse("user=admin").is_ok());
        assert!(Except::parse("admin").unwrap_err().contains("FIELD=GLOB"));
        assert!(Except::parse("host=x").unwrap_err().contains("`host`"));
        assert!(Except::parse("app=[").unwrap_err().contains("glob"));
    }

    #[test]
    fn long_queries_are_shortened_to_one_line() {
        assert_eq!(shorten("SELECT\n  1"), "SELECT 1");
        assert_eq!(shorten(&"x ".repeat(200)).chars().count(), QUERY_SHOWN);
    }
}

//! Runs, task runs and their progress: the audit trail of everything
//! pgmaint does, and the history read back from it.

use crate::unnamed::Unnamed;
use serde::Serialize;
use tokio_postgres::Client;

use super::StateError;
use super::locks::LeaseOwner;
use crate::sql::quote_ident;
use crate::status::{Counters, Outcome, Status};

/// Who started a run: `cli`, `schedule` or `api`, and the OS user and host.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub kind: &'static str,
    pub who: String,
    pub command: String,
}

impl Trigger {
    /// This process, as `user@host`.
    pub fn who() -> String {
        let user = whoami::username().unwrap_or_else(|_| "unknown".into());
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        format!("{user}@{host}")
    }

    pub fn schedule(schedule: &str, scheduled_for: &str) -> Trigger {
        Trigger {
            kind: "schedule",
            who: format!("daemon {} pid {}", Self::who(), std::process::id()),
            command: format!("schedule {schedule} at {scheduled_for}"),
        }
    }

    pub fn api(command: &str) -> Trigger {
        Trigger {
            kind: "api",
            who: format!("api token holder via daemon {}", Self::who()),
            command: command.into(),
        }
    }

    pub fn cli(command: &str) -> Trigger {
        Trigger {
            kind: "cli",
            who: Self::who(),
            command: command.into(),
        }
    }
}

/// Records a new run, leased to `owner` (who renews it while the run goes;
/// whoever finds it `running` past its lease marks it interrupted).
pub(crate) async fn start_run(
    client: &mut Client,
    schema: &str,
    trigger: &Trigger,
    dry_run: bool,
    owner: &LeaseOwner,
) -> Result<i64, StateError> {
    let q = quote_ident(schema);
    Ok(crate::db::committed_row(
        client,
        &format!(
            "INSERT INTO {q}.runs (trigger, triggered_by, command, status, dry_run, pgmaint_version, owner, lease_until)
             VALUES ($1, $2, $3, 'running', $4, $5, $6, now() + make_interval(secs => $7)) RETURNING id"
        ),
        &[&trigger.kind, &trigger.who, &trigger.command, &dry_run, &env!("CARGO_PKG_VERSION"), &owner.owner, &owner.ttl_secs()],
    )
    .await?
    .get(0))
}

pub(crate) async fn finish_run(
    client: &Client,
    schema: &str,
    run_id: i64,
    status: Status,
    error: Option<&str>,
) -> Result<(), StateError> {
    let q = quote_ident(schema);
    crate::db::committed_exec(
        client,
        &format!("UPDATE {q}.runs SET status = $2, finished_at = now(), error = $3 WHERE id = $1"),
        &[&run_id, &status.as_str(), &error],
    )
    .await?;
    Ok(())
}

pub(crate) async fn start_task_run(
    client: &Client,
    schema: &str,
    run_id: i64,
    task: &str,
    kind: &str,
    dry_run: bool,
) -> Result<i64, StateError> {
    let q = quote_ident(schema);
    Ok(crate::db::committed_row(
        client,
        &format!(
            "INSERT INTO {q}.task_runs (run_id, task, kind, status, dry_run) VALUES ($1, $2, $3, 'running', $4) RETURNING id"
        ),
        &[&run_id, &task, &kind, &dry_run],
    )
    .await?
    .get(0))
}

pub async fn record_progress(
    client: &Client,
    schema: &str,
    task_run_id: i64,
    counters: Counters,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    crate::db::committed_exec(
        client,
        &format!("UPDATE {q}.task_runs SET rows = $2, batches = $3, retries = $4 WHERE id = $1"),
        &[
            &task_run_id,
            &(counters.rows as i64),
            &(counters.batches as i64),
            &(counters.retries as i64),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn finish_task_run(
    client: &Client,
    schema: &str,
    task_run_id: i64,
    outcome: &Outcome,
    duration_ms: i64,
) -> Result<(), StateError> {
    let q = quote_ident(schema);
    crate::db::committed_exec(
        client,
        &format!(
            "UPDATE {q}.task_runs SET status = $2, rows = $3, batches = $4, retries = $5, duration_ms = $6,
                    error = $7, details = $8, finished_at = now() WHERE id = $1"
        ),
        &[
            &task_run_id,
            &outcome.status.as_str(),
            &(outcome.rows as i64),
            &(outcome.batches as i64),
            &(outcome.retries as i64),
            &duration_ms,
            &outcome.error,
            &outcome.details,
        ],
    )
    .await?;
    Ok(())
}

/// Marks `interrupted` every run still `running` whose lease expired (its
/// owner stopped renewing it: killed, crashed or cut off from the
/// database), each exactly once: the rows are locked `FOR UPDATE SKIP
/// LOCKED` and re-checked by the UPDATE, so two processes looking at once
/// mark each run once between them. A run from before leases (no
/// `lease_until`) counts as expired, and so does one whose owner's process
/// is known gone (`locks::holder_is_gone`: same machine, pid free). Returns the ids it marked.
pub(crate) async fn mark_interrupted(
    client: &mut Client,
    schema: &str,
) -> Result<Vec<i64>, StateError> {
    let q = quote_ident(schema);
    let message = "its process ended without finishing (killed, crashed or lost its connection: its lease expired); uncommitted batches were rolled back";
    // BEGIN and the timeouts go out together (`db::committed`).
    let marked: Vec<i64> = crate::db::committed(&*client, async {
        // Runs whose lease still holds but whose owner's process is known gone.
        let gone: Vec<i64> = client
            .rows(
                &format!(
                    "SELECT id, owner FROM {q}.runs WHERE status = 'running' AND lease_until >= now()"
                ),
                &[],
            )
            .await?
            .iter()
            .filter(|r| {
                r.get::<_, Option<&str>>(1)
                    .is_some_and(super::locks::holder_is_gone)
            })
            .map(|r| r.get(0))
            .collect();
        let marked: Vec<i64> = client
            .rows(
                &format!(
                    "WITH dead AS (
                       SELECT id FROM {q}.runs
                        WHERE status = 'running' AND (coalesce(lease_until, '-infinity') < now() OR id = ANY($2))
                        ORDER BY id FOR UPDATE SKIP LOCKED)
                     UPDATE {q}.runs r SET status = 'interrupted', finished_at = now(), error = $1
                       FROM dead WHERE r.id = dead.id AND r.status = 'running'
                     RETURNING r.id"
                ),
                &[&message, &gone],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !marked.is_empty() {
            client.exec(
                &format!(
                    "UPDATE {q}.task_runs SET status = 'interrupted', finished_at = now(), error = $2,
                            duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint
                      WHERE run_id = ANY($1) AND status = 'running'"
                ),
                &[&marked, &message],
            )
            .await?;
        }
        Ok::<_, StateError>(marked)
    })
    .await?;
    let mut marked = marked;
    marked.sort();
    Ok(marked)
}

/// The run that currently holds a task, for the message of the one that
/// has to skip it.
pub(crate) async fn holder_of_task(
    client: &Client,
    schema: &str,
    task: &str,
    this_run: i64,
) -> Result<Option<(i64, String)>, StateError> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        Ok(client
            .row_opt(
                &format!(
                    "SELECT r.id, r.triggered_by FROM {q}.task_runs t JOIN {q}.runs r ON r.id = t.run_id
                      WHERE t.task = $1 AND t.status = 'running' AND NOT t.dry_run AND r.id <> $2
                      ORDER BY t.id DESC LIMIT 1"
                ),
                &[&task, &this_run],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    })
    .await
}

/// One task of a run, as `history` and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskRunRecord {
    pub name: String,
    pub kind: String,
    pub status: String,
    pub rows: i64,
    pub batches: i64,
    pub retries: i64,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// What the task kind reports (its plan, counts, per-table figures).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// A run, as `history` and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Run)]
pub struct RunRecord {
    pub run_id: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `cli`, `schedule` or `api`.
    pub trigger: String,
    pub triggered_by: String,
    /// The schedule that fired the run (or that the API ran), if any.
    pub schedule: Option<String>,
    /// `running`, `succeeded`, `failed`, `cancelled`, `interrupted` or
    /// `skipped`.
    pub status: String,
    pub dry_run: bool,
    pub error: Option<String>,
    pub tasks: Vec<TaskRunRecord>,
}

/// Which runs `history` shows. The default shows real runs only: every
/// `plan` is recorded too, and would crowd them out.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only runs of this task, and only its rows of them.
    pub task: Option<String>,
    /// The run's status; with `task`, that task's status in the run.
    pub status: Option<String>,
    pub schedule: Option<String>,
    pub trigger: Option<String>,
    pub dry_runs: bool,
    pub limit: i64,
}

/// The latest runs, newest first; with `task`, only runs that ran it (and
/// only that task's rows). Dry runs included.
pub async fn history(
    client: &Client,
    schema: &str,
    task: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRecord>, StateError> {
    crate::db::committed(client, async {
        let filter = HistoryFilter {
            task: task.map(str::to_string),
            dry_runs: true,
            limit,
            ..HistoryFilter::default()
        };
        runs(client, schema, &filter, None).await
    })
    .await
}

/// The latest runs the filter lets through, newest first.
pub async fn history_filtered(
    client: &Client,
    schema: &str,
    filter: &HistoryFilter,
) -> Result<Vec<RunRecord>, StateError> {
    crate::db::committed(client, async { runs(client, schema, filter, None).await }).await
}

/// How many dry runs the filter would show with `dry_runs` set: what a
/// `history` that shows none says it left out.
pub async fn hidden_dry_runs(
    client: &Client,
    schema: &str,
    filter: &HistoryFilter,
) -> Result<i64, StateError> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        let filter = HistoryFilter {
            dry_runs: true,
            ..filter.clone()
        };
        Ok(client
            .row(
                &format!(
                    "SELECT count(*) FROM {q}.runs r WHERE r.dry_run AND {}",
                    run_conditions(&q)
                ),
                &[
                    &filter.task,
                    &filter.status,
                    &filter.schedule,
                    &filter.trigger,
                    &filter.dry_runs,
                    &None::<i64>,
                ],
            )
            .await?
            .get(0))
    })
    .await
}

/// One run with its tasks.
pub async fn run_by_id(
    client: &Client,
    schema: &str,
    id: i64,
) -> Result<Option<RunRecord>, StateError> {
    crate::db::committed(client, async {
        let filter = HistoryFilter {
            dry_runs: true,
            limit: 1,
            ..HistoryFilter::default()
        };
        Ok(runs(client, schema, &filter, Some(id)).await?.pop())
    })
    .await
}

/// The schedule behind a run: the fire that started it (the daemon links
/// its claim to the run), else what the trigger recorded, `schedule NAME
/// at TIME` for a fire or the API's `POST /api/v1/schedules/NAME/run`.
fn schedule_of_run(q: &str) -> String {
    format!(
        "coalesce(
            (SELECT f.schedule FROM {q}.schedule_fires f WHERE f.run_id = r.id LIMIT 1),
            CASE WHEN r.trigger = 'schedule' THEN substring(r.command FROM '^schedule (\\S+) at ')
                 WHEN r.trigger = 'api' THEN substring(r.command FROM '^POST /api/v1/schedules/([^/ ]+)/run')
            END)"
    )
}

/// The conditions of a history query on runs `r`: $1 task, $2 status,
/// $3 schedule, $4 trigger, $5 dry runs too, $6 one run's id.
fn run_conditions(q: &str) -> String {
    let schedule = schedule_of_run(q);
    format!(
        "($1::text IS NULL OR EXISTS (SELECT 1 FROM {q}.task_runs t WHERE t.run_id = r.id AND t.task = $1
                                     AND ($2::text IS NULL OR t.status = $2)))
         AND ($2::text IS NULL OR $1::text IS NOT NULL OR r.status = $2)
         AND ($3::text IS NULL OR {schedule} = $3)
         AND ($4::text IS NULL OR r.trigger = $4)
         AND ($5 OR NOT r.dry_run)
         AND ($6::bigint IS NULL OR r.id = $6)"
    )
}

async fn runs(
    client: &Client,
    schema: &str,
    filter: &HistoryFilter,
    id: Option<i64>,
) -> Result<Vec<RunRecord>, StateError> {
    let q = quote_ident(schema);
    let runs = client
        .rows(
            &format!(
                "SELECT id, started_at, finished_at, trigger, triggered_by, status, dry_run, error, {}
                   FROM {q}.runs r
                  WHERE {}
                  ORDER BY id DESC LIMIT $7",
                schedule_of_run(&q),
                run_conditions(&q)
            ),
            &[
                &filter.task,
                &filter.status,
                &filter.schedule,
                &filter.trigger,
                &filter.dry_runs,
                &id,
                &filter.limit,
            ],
        )
        .await?;
    let ids: Vec<i64> = runs.iter().map(|r| r.get(0)).collect();
    let task_rows = client
        .rows(
            &format!(
                "SELECT run_id, task, kind, status, rows, batches, retries, duration_ms, error, details
                   FROM {q}.task_runs WHERE run_id = ANY($1) AND ($2::text IS NULL OR task = $2) ORDER BY id"
            ),
            &[&ids, &filter.task],
        )
        .await?;
    Ok(runs
        .iter()
        .map(|r| {
            let run_id: i64 = r.get(0);
            RunRecord {
                run_id,
                started_at: r.get(1),
                finished_at: r.get(2),
                trigger: r.get(3),
                triggered_by: r.get(4),
                status: r.get(5),
                dry_run: r.get(6),
                error: r.get(7),
                schedule: r.get(8),
                tasks: task_rows
                    .iter()
                    .filter(|t| t.get::<_, i64>(0) == run_id)
                    .map(|t| TaskRunRecord {
                        name: t.get(1),
                        kind: t.get(2),
                        status: t.get(3),
                        rows: t.get(4),
                        batches: t.get(5),
                        retries: t.get(6),
                        duration_ms: t.get(7),
                        error: t.get(8),
                        details: t.get(9),
                    })
                    .collect(),
            }
        })
        .collect())
}

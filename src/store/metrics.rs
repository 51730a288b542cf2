//! The reads `/metrics` renders: task runs and schedule fires, counted in
//! the state schema at scrape time (so every daemon reports every run).

use crate::unnamed::Unnamed;
use tokio_postgres::GenericClient;

/// Task runs by task and status, dry runs excluded.
pub(crate) async fn task_run_counts(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<(String, String, i64)>, tokio_postgres::Error> {
    let q = crate::sql::quote_ident(schema);
    Ok(client
        .rows(&format!("SELECT task, status, count(*) FROM {q}.task_runs WHERE NOT dry_run GROUP BY 1, 2 ORDER BY 1, 2"), &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Each task's rows changed and when it last succeeded (epoch seconds).
pub(crate) async fn task_totals(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<(String, i64, Option<f64>)>, tokio_postgres::Error> {
    let q = crate::sql::quote_ident(schema);
    Ok(client
        .rows(
            &format!(
                "SELECT task, sum(rows)::bigint, extract(epoch FROM max(finished_at) FILTER (WHERE status = 'succeeded'))::float8
                   FROM {q}.task_runs WHERE NOT dry_run GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// One task's run durations as a histogram: the count at or under each
/// bound (seconds), the count and the sum (seconds).
pub(crate) struct Durations {
    pub task: String,
    pub counts: Vec<i64>,
    pub total: i64,
    pub sum: f64,
}

pub(crate) async fn task_durations(
    client: &impl GenericClient,
    schema: &str,
    bounds: &[f64],
) -> Result<Vec<Durations>, tokio_postgres::Error> {
    let q = crate::sql::quote_ident(schema);
    let bounds: Vec<f64> = bounds.to_vec();
    Ok(client
        .rows(
            &format!(
                "SELECT task, array_agg(within ORDER BY i), max(total), max(seconds)
                   FROM (SELECT r.task, u.i, count(*) FILTER (WHERE r.duration_ms <= u.b * 1000) AS within,
                                count(*) AS total, coalesce(sum(r.duration_ms), 0)::float8 / 1000 AS seconds
                           FROM {q}.task_runs r CROSS JOIN unnest($1::float8[]) WITH ORDINALITY u(b, i)
                          WHERE NOT r.dry_run AND r.duration_ms IS NOT NULL
                          GROUP BY r.task, u.i) per_bound
                  GROUP BY task ORDER BY task"
            ),
            &[&bounds],
        )
        .await?
        .iter()
        .map(|r| Durations {
            task: r.get(0),
            counts: r.get(1),
            total: r.get(2),
            sum: r.get(3),
        })
        .collect())
}

/// Scheduled fires by schedule and status.
pub(crate) async fn fire_counts(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<(String, String, i64)>, tokio_postgres::Error> {
    let q = crate::sql::quote_ident(schema);
    Ok(client
        .rows(&format!("SELECT schedule, status, count(*) FROM {q}.schedule_fires GROUP BY 1, 2 ORDER BY 1, 2"), &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// When each schedule's fire last succeeded (epoch seconds).
pub(crate) async fn schedule_last_success(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<(String, f64)>, tokio_postgres::Error> {
    let q = crate::sql::quote_ident(schema);
    Ok(client
        .rows(
            &format!("SELECT schedule, extract(epoch FROM max(scheduled_for))::float8 FROM {q}.schedule_fires WHERE status = 'succeeded' GROUP BY 1 ORDER BY 1"),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

//! The state of scheduled fires in the database: each schedule's last
//! fire, and the claim on each fire. A claim is a row keyed by (schedule,
//! scheduled_for): the daemon whose INSERT wins runs the fire, every other
//! daemon's INSERT finds the row and does nothing. No in-process lock is
//! involved, so any number of daemons can run against one database. A
//! running fire is leased to its daemon's owner (`locks::LeaseOwner`),
//! renewed while it runs; one whose lease expired is marked interrupted.
//! Also the lease a schedule's running fire holds, so the next fire of the
//! schedule is skipped while it goes.

use crate::unnamed::Unnamed;
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::sql::quote_ident;
use crate::status::Status;

use super::locks::{LeaseOwner, schedule_lease};

/// The schedule's last fire, or None before its first.
pub(crate) async fn last_fire(
    client: &Client,
    schema: &str,
    schedule: &str,
) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        Ok(client
            .row_opt(
                &format!("SELECT last_fire FROM {q}.schedule_state WHERE schedule = $1"),
                &[&schedule],
            )
            .await?
            .map(|r| r.get(0)))
    })
    .await
}

/// Starts counting a schedule's fires from `from` (its first sight).
pub(crate) async fn begin_schedule(
    client: &Client,
    schema: &str,
    schedule: &str,
    from: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        client
            .exec(
                &format!("INSERT INTO {q}.schedule_state (schedule, last_fire) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
                &[&schedule, &from],
            )
            .await?;
        Ok(())
    })
    .await
}

/// Claims a fire with the given status; true when this daemon won it. The
/// schedule's last fire moves forward in the same transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn claim_fire(
    client: &mut Client,
    schema: &str,
    schedule: &str,
    at: DateTime<Utc>,
    by: &str,
    status: Status,
    reason: Option<&str>,
    owner: &LeaseOwner,
) -> Result<bool, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let tx = crate::db::begin(client).await?;
    let won = tx
        .exec(
            &format!(
                "INSERT INTO {q}.schedule_fires (schedule, scheduled_for, claimed_by, status, reason, owner, lease_until)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) ON CONFLICT DO NOTHING"
            ),
            &[&schedule, &at, &by, &status.as_str(), &reason, &owner.owner, &owner.ttl_secs()],
        )
        .await?
        == 1;
    tx.exec(
        &format!(
            "INSERT INTO {q}.schedule_state (schedule, last_fire) VALUES ($1, $2)
             ON CONFLICT (schedule) DO UPDATE SET last_fire = greatest({q}.schedule_state.last_fire, excluded.last_fire)"
        ),
        &[&schedule, &at],
    )
    .await?;
    tx.commit().await?;
    Ok(won)
}

pub(crate) async fn set_fire_run(
    client: &Client,
    schema: &str,
    schedule: &str,
    at: DateTime<Utc>,
    run_id: i64,
) -> Result<(), tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        client
            .exec(
                &format!("UPDATE {q}.schedule_fires SET run_id = $3 WHERE schedule = $1 AND scheduled_for = $2"),
                &[&schedule, &at, &run_id],
            )
            .await?;
        Ok(())
    })
    .await
}

pub(crate) async fn finish_fire(
    client: &Client,
    schema: &str,
    schedule: &str,
    at: DateTime<Utc>,
    status: Status,
    reason: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        client
            .exec(
                &format!("UPDATE {q}.schedule_fires SET status = $3, reason = coalesce($4, reason) WHERE schedule = $1 AND scheduled_for = $2"),
                &[&schedule, &at, &status.as_str(), &reason],
            )
            .await?;
        Ok(())
    })
    .await
}

/// Fires left `running` by a daemon that died or lost the database: their
/// lease expired (or, before leases, their run was marked interrupted or
/// never started). Each is marked once: the rows are locked `FOR UPDATE
/// SKIP LOCKED` and the UPDATE re-checks the status.
pub(crate) async fn mark_fires_interrupted(
    client: &Client,
    schema: &str,
) -> Result<u64, tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        client
            .exec(
                &format!(
                    "WITH dead AS (
                       SELECT f.schedule, f.scheduled_for FROM {q}.schedule_fires f
                        WHERE f.status = 'running'
                          AND (f.lease_until < now()
                               OR EXISTS (SELECT 1 FROM {q}.runs r WHERE r.id = f.run_id AND r.status = 'interrupted')
                               OR (f.lease_until IS NULL AND f.run_id IS NULL AND f.claimed_at < now() - interval '5 minutes'))
                        FOR UPDATE OF f SKIP LOCKED)
                     UPDATE {q}.schedule_fires f SET status = 'interrupted',
                            reason = 'the daemon running it stopped renewing its lease (it died, or lost the database)'
                       FROM dead
                      WHERE f.schedule = dead.schedule AND f.scheduled_for = dead.scheduled_for AND f.status = 'running'"
                ),
                &[],
            )
            .await
    })
    .await
}

/// Deletes runs (with their task runs) and fires older than `keep`.
pub(crate) async fn prune_runs_and_fires(
    client: &Client,
    schema: &str,
    keep: &str,
) -> Result<u64, tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        let runs = client
            .exec(
                &format!("DELETE FROM {q}.runs WHERE status <> 'running' AND coalesce(finished_at, started_at) < now() - $1::text::interval"),
                &[&keep],
            )
            .await?;
        client
            .exec(
                &format!("DELETE FROM {q}.schedule_fires WHERE status <> 'running' AND scheduled_for < now() - $1::text::interval"),
                &[&keep],
            )
            .await?;
        Ok(runs)
    })
    .await
}

/// Takes the lease a schedule's running fire holds, without waiting;
/// false while the previous run of the schedule still goes (its owner
/// renews the lease; one whose owner died expires and is taken over).
pub(crate) async fn try_lock_schedule(
    client: &mut Client,
    schema: &str,
    schedule: &str,
    owner: &LeaseOwner,
) -> Result<bool, tokio_postgres::Error> {
    super::locks::try_take(client, schema, &schedule_lease(schedule), owner, None).await
}

pub(crate) async fn unlock_schedule(
    client: &Client,
    schema: &str,
    schedule: &str,
    owner: &LeaseOwner,
) -> Result<(), tokio_postgres::Error> {
    super::locks::release(client, schema, &schedule_lease(schedule), owner).await
}

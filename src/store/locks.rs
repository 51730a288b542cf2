//! Leases on pgmaint's own work, in place of session advisory locks (which
//! a transaction pooler cannot keep: the lock stays on whichever backend
//! took it): a task runs in one process at a time, a schedule's fire runs
//! while the previous one of that schedule does not. A lease is a row of
//! `leases` with an owner and an expiry; its owner renews it while it works
//! (`renew`), and an expired one may be taken over. Live runs and claimed
//! fires carry the same owner and expiry on their own rows.

use std::time::Duration;

use crate::unnamed::Unnamed;
use tokio_postgres::Client;

use crate::sql::quote_ident;

/// Who holds leases, and for how long each take or renewal holds.
#[derive(Debug, Clone)]
pub struct LeaseOwner {
    /// Unique per process and database: `user@host #K-RANDOM @MACHINE/PID`,
    /// where MACHINE names this kernel's boot and pid namespace, so another
    /// process in the same pid space can tell at once that the owner's
    /// process is gone (`holder_is_gone`) instead of waiting for the lease
    /// to expire.
    pub owner: String,
    pub ttl: Duration,
}

/// This kernel boot and pid namespace: pids are comparable within it.
fn pid_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let boot = boot.trim();
    if boot.is_empty() || namespace.is_empty() {
        // Without both, no other process can be sure it shares our pids.
        return format!("unknown-{}", gethostname::gethostname().to_string_lossy());
    }
    format!("{boot}:{namespace}")
}

/// True when `owner` is a process of this pid space that no longer exists:
/// its leases can be taken over now. A process elsewhere (another machine,
/// container or boot) or alive here is never called gone; its leases wait
/// for their expiry. Correctness never depends on it: through a pooler or
/// not, it only shortens the wait after a crash on the same machine.
pub(crate) fn holder_is_gone(owner: &str) -> bool {
    let Some((_, place)) = owner.rsplit_once(" @") else {
        return false;
    };
    let Some((space, pid)) = place.rsplit_once('/') else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if space.starts_with("unknown-") || space != pid_space() || pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks the pid.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    !alive
}

impl LeaseOwner {
    /// How long a lease holds when nothing says otherwise: renewed every
    /// third of it, so two renewals may fail before another process takes
    /// over. `PGMAINT_LEASE_TTL` (seconds) overrides it, for tests.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// A new owner for this process, unique even among several owners of
    /// one process (one per database it serves).
    pub fn new() -> LeaseOwner {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let ttl = std::env::var("PGMAINT_LEASE_TTL")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Self::DEFAULT_TTL);
        LeaseOwner {
            owner: format!(
                "{} #{n}-{nanos:08x} @{}/{}",
                super::Trigger::who(),
                pid_space(),
                std::process::id()
            ),
            ttl,
        }
    }

    pub(crate) fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }
}

impl Default for LeaseOwner {
    fn default() -> Self {
        LeaseOwner::new()
    }
}

/// Takes the lease `name` for `owner`, without waiting, when it is free,
/// expired or its holder's process is gone (`holder_is_gone`). False while a lease holds, even the same owner's (two runs of
/// one process exclude each other as two processes do), or while another
/// process is taking it at this moment (`SKIP LOCKED`).
pub(crate) async fn try_take(
    client: &mut Client,
    schema: &str,
    name: &str,
    owner: &LeaseOwner,
    run_id: Option<i64>,
) -> Result<bool, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let tx = crate::db::begin(client).await?;
    let inserted = tx
        .exec(
            &format!(
                "INSERT INTO {q}.leases (name, owner, run_id, expires_at)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT DO NOTHING"
            ),
            &[&name, &owner.owner, &run_id, &owner.ttl_secs()],
        )
        .await?
        == 1;
    let taken = inserted
        || {
            let current = tx
            .row_opt(
                &format!(
                    "SELECT expires_at < now(), owner FROM {q}.leases WHERE name = $1 FOR UPDATE SKIP LOCKED"
                ),
                &[&name],
            )
            .await?;
            match current {
                Some(row) if row.get::<_, bool>(0) || holder_is_gone(row.get(1)) => {
                    tx.exec(
                        &format!(
                            "UPDATE {q}.leases SET owner = $2, run_id = $3, taken_at = now(),
                                expires_at = now() + make_interval(secs => $4) WHERE name = $1"
                        ),
                        &[&name, &owner.owner, &run_id, &owner.ttl_secs()],
                    )
                    .await?;
                    true
                }
                _ => false,
            }
        };
    tx.commit().await?;
    Ok(taken)
}

/// Gives the lease back, if `owner` still holds it.
pub(crate) async fn release(
    client: &Client,
    schema: &str,
    name: &str,
    owner: &LeaseOwner,
) -> Result<(), tokio_postgres::Error> {
    let q = quote_ident(schema);
    crate::db::committed_exec(
        client,
        &format!("DELETE FROM {q}.leases WHERE name = $1 AND owner = $2"),
        &[&name, &owner.owner],
    )
    .await?;
    Ok(())
}

/// The lease that keeps a task to one runner.
pub(crate) fn task_lease(task: &str) -> String {
    format!("task:{task}")
}

/// The lease a schedule's running fire holds.
pub(crate) fn schedule_lease(schedule: &str) -> String {
    format!("schedule:{schedule}")
}

/// Takes the lease that keeps one task to one runner, without waiting.
/// Returns false when another process holds it.
pub(crate) async fn try_lock_task(
    client: &mut Client,
    schema: &str,
    task: &str,
    owner: &LeaseOwner,
    run_id: i64,
) -> Result<bool, tokio_postgres::Error> {
    try_take(client, schema, &task_lease(task), owner, Some(run_id)).await
}

pub(crate) async fn unlock_task(
    client: &Client,
    schema: &str,
    task: &str,
    owner: &LeaseOwner,
) -> Result<(), tokio_postgres::Error> {
    release(client, schema, &task_lease(task), owner).await
}

/// Moves every expiry `owner` holds forward by its ttl, in one
/// transaction: its leases, its live runs and its running fires. What
/// another process took over (or marked interrupted) meanwhile is no longer
/// the owner's and is left alone. Returns how many rows it renewed.
pub(crate) async fn renew(
    client: &mut Client,
    schema: &str,
    owner: &LeaseOwner,
) -> Result<u64, tokio_postgres::Error> {
    let q = quote_ident(schema);
    let tx = crate::db::begin(client).await?;
    let mut renewed = 0;
    for table in [
        "leases SET expires_at",
        "runs SET lease_until",
        "schedule_fires SET lease_until",
    ] {
        let running = if table.starts_with("leases") {
            ""
        } else {
            " AND status = 'running'"
        };
        renewed += tx
            .exec(
                &format!(
                    "UPDATE {q}.{table} = now() + make_interval(secs => $2) WHERE owner = $1{running}"
                ),
                &[&owner.owner, &owner.ttl_secs()],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_gone_only_when_its_pid_space_is_ours_and_the_pid_is_free() {
        let me = LeaseOwner::new();
        assert!(!holder_is_gone(&me.owner), "this process is alive");
        let (head, _) = me.owner.rsplit_once('/').unwrap();
        // Pids wrap well below this.
        assert!(holder_is_gone(&format!("{head}/{}", i32::MAX - 1)));
        assert!(!holder_is_gone(&format!(
            "someone #1-0 @another-machine:pid:[1]/{}",
            i32::MAX - 1
        )));
        assert!(!holder_is_gone("an owner from before leases"));
    }
}

//! A persistent failure of the daemon's database work, retried on the
//! shared policy (`retry::reconnect_waits`: jittered, capped, slept through
//! the stop) and logged as people can read it: the first failure, a change
//! of error, a summary every `SUMMARY_EVERY` ("failing for 5 min, 12
//! tries"), and the recovery; never a line per try. While it lasts the
//! daemon's `/healthz` says degraded and `/readyz` answers 503.

use std::time::{Duration, Instant};

use super::Shared;

/// How often a failure that goes on is summed up in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(300);

/// The failure under way, if any.
#[derive(Default)]
pub(crate) struct Failing {
    current: Option<Current>,
}

struct Current {
    since: Instant,
    since_wall: chrono::DateTime<chrono::Utc>,
    tries: u32,
    last_logged: Instant,
    error: String,
    waits: Box<dyn Iterator<Item = Duration> + Send>,
}

/// A duration as the log says it: `40s`, `5 min`, `2 h 5 min`.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

impl Failing {
    /// Records a failed try of `what` (`err` its full text), logs it if
    /// that is news, and sleeps the policy's next wait (a stop ends it).
    pub(crate) async fn failed(&mut self, shared: &Shared, what: &str, err: &str) {
        let now = Instant::now();
        let current = self.current.get_or_insert_with(|| {
            tracing::error!("{what}: {err}; retrying with backoff");
            Current {
                since: now,
                since_wall: chrono::Utc::now(),
                tries: 0,
                last_logged: now,
                error: err.to_string(),
                waits: Box::new(crate::retry::reconnect_waits()),
            }
        });
        current.tries += 1;
        if current.error != err {
            tracing::error!(
                "{what}: {err} (failing for {}, {} tries; the error changed)",
                human(current.since.elapsed()),
                current.tries
            );
            current.error = err.to_string();
            current.last_logged = now;
        } else if current.last_logged.elapsed() >= SUMMARY_EVERY {
            tracing::warn!(
                "{what}: failing for {}, {} tries: {err}",
                human(current.since.elapsed()),
                current.tries
            );
            current.last_logged = now;
        }
        shared.set_trouble(Some(format!(
            "{what}: {err} (failing since {}, {} tries)",
            current
                .since_wall
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            current.tries
        )));
        let wait = current.waits.next().unwrap_or(Duration::from_secs(30));
        shared.stop.sleep(wait).await;
    }

    /// The work went through: logs the recovery of a failure, if any, and
    /// says whether there was one.
    pub(crate) fn recovered(&mut self, shared: &Shared) -> bool {
        let Some(current) = self.current.take() else {
            return false;
        };
        tracing::info!(
            "the database is reachable and the daemon's work on it succeeds again, after failing for {} ({} tries); scheduling",
            human(current.since.elapsed()),
            current.tries
        );
        shared.set_trouble(None);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::from_secs(40)), "40s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(7500)), "2 h 5 min");
    }
}

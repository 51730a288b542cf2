//! The one retry policy for statements that meet busy locks (a batch, a
//! utility statement, a partition's DDL): wait, then try again, a bounded
//! number of times. Exponential from 100 ms to at most 5 s, with jitter so
//! that several pgmaint processes (or a process and the application) do not
//! retry in step. The caller sleeps through its `Stop`, so a signal or
//! `max_runtime` ends the wait. Notifications retry the same way, on
//! bounds of their own (`notify_waits`), and so do the daemon's reconnects
//! to a database that went away (`reconnect_waits`, without end).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The first wait after a busy lock.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// The waits between attempts of a statement whose locks stayed busy:
/// `max_retries` of them, then none (give up).
pub(crate) fn lock_waits(max_retries: u32) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_WAIT)
        .with_max_delay(LONGEST_WAIT)
        .with_factor(2.0)
        .with_max_times(max_retries as usize)
        .with_jitter()
        .build()
}

/// The first wait after a notifier failed.
const FIRST_NOTIFY_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between two attempts at a notification.
const LONGEST_NOTIFY_WAIT: Duration = Duration::from_secs(2);
/// Retries of a notification after its first attempt.
pub(crate) const NOTIFY_RETRIES: usize = 3;

/// The waits between attempts at one notification: about 0.5 s, 1 s and
/// 2 s, with jitter so that daemons that saw the same failure do not call
/// a struggling notifier in step.
pub(crate) fn notify_waits() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_NOTIFY_WAIT)
        .with_max_delay(LONGEST_NOTIFY_WAIT)
        .with_factor(2.0)
        .with_max_times(NOTIFY_RETRIES)
        .with_jitter()
        .build()
}

/// The first wait after the daemon lost its database.
const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between two reconnects.
const LONGEST_RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// The waits between the daemon's attempts to reach its database again:
/// from about 0.5 s doubling to 30 s, then every 30 s for as long as it
/// takes (the daemon sleeps them through its `Stop`, so a signal ends the
/// wait), with jitter so that the daemons of one database do not knock in
/// step when it comes back.
pub(crate) fn reconnect_waits() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_RECONNECT_WAIT)
        .with_max_delay(LONGEST_RECONNECT_WAIT)
        .with_factor(2.0)
        .without_max_times()
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_stay_bounded_and_end_after_max_retries() {
        let waits: Vec<Duration> = lock_waits(8).collect();
        assert_eq!(waits.len(), 8);
        assert!(
            waits[0] >= FIRST_WAIT && waits[0] < FIRST_WAIT * 2,
            "{waits:?}"
        );
        // Jitter adds up to one more wait's worth; the cap bounds the base.
        assert!(waits.iter().all(|w| *w <= LONGEST_WAIT * 2), "{waits:?}");
        assert!(waits[5] >= Duration::from_millis(3200), "{waits:?}");
        assert_eq!(lock_waits(0).count(), 0);
    }

    #[test]
    fn notification_waits_are_bounded_and_few() {
        let waits: Vec<Duration> = notify_waits().collect();
        assert_eq!(waits.len(), NOTIFY_RETRIES, "{waits:?}");
        assert!(waits[0] >= FIRST_NOTIFY_WAIT, "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= LONGEST_NOTIFY_WAIT * 2),
            "{waits:?}"
        );
    }

    #[test]
    fn two_policies_do_not_wait_in_step() {
        let a: Vec<Duration> = lock_waits(6).collect();
        let b: Vec<Duration> = lock_waits(6).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn reconnect_waits_grow_to_a_bound_and_never_end() {
        let waits: Vec<Duration> = reconnect_waits().take(50).collect();
        assert_eq!(waits.len(), 50, "reconnects never give up");
        assert!(
            waits[0] >= FIRST_RECONNECT_WAIT && waits[0] < FIRST_RECONNECT_WAIT * 2,
            "{waits:?}"
        );
        assert!(
            waits.iter().all(|w| *w <= LONGEST_RECONNECT_WAIT * 2),
            "{waits:?}"
        );
        assert!(waits[49] >= LONGEST_RECONNECT_WAIT, "{waits:?}");
        let again: Vec<Duration> = reconnect_waits().take(50).collect();
        assert_ne!(waits, again, "jittered");
    }
}

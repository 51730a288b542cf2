//! Stopping work cleanly: Ctrl-C, SIGTERM and `max_runtime` all ask the
//! running task to stop between batches. Sleeps (pauses, retry backoff) end
//! early when a stop is asked for, or when the task's `max_runtime` is
//! reached, so stopping is never delayed by them.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal,
}

/// A stop request shared by everything a process runs, and optionally a
/// deadline of one task's own (`Stop::until`): a signal reaches every
/// clone, a deadline only the clone that carries it.
#[derive(Clone)]
pub struct Stop {
    sender: std::sync::Arc<watch::Sender<Option<StopReason>>>,
    receiver: watch::Receiver<Option<StopReason>>,
    deadline: Option<Instant>,
}

impl Default for Stop {
    fn default() -> Self {
        let (sender, receiver) = watch::channel(None);
        Stop {
            sender: std::sync::Arc::new(sender),
            receiver,
            deadline: None,
        }
    }
}

impl Stop {
    pub fn request(&self, reason: StopReason) {
        self.sender.send_replace(Some(reason));
    }

    /// Whether a stop was asked for (a deadline is not a request: a task
    /// asks `TaskContext::should_stop`, which tells the two apart).
    pub(crate) fn requested(&self) -> Option<StopReason> {
        *self.receiver.borrow()
    }

    /// The same stop, whose sleeps also end at `deadline` (the earlier one,
    /// if it already has one). The runner gives each task this, with the
    /// task's `max_runtime`, so a pause or a backoff never outlasts it.
    pub(crate) fn until(&self, deadline: Option<std::time::Instant>) -> Stop {
        let deadline = deadline.map(Instant::from_std);
        Stop {
            deadline: match (self.deadline, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            ..self.clone()
        }
    }

    /// Sleeps for `duration`, or less if a stop is asked for or the
    /// deadline comes meanwhile.
    pub async fn sleep(&self, duration: Duration) {
        let mut receiver = self.receiver.clone();
        let wake = match self.deadline {
            Some(deadline) => deadline.min(Instant::now() + duration),
            None => Instant::now() + duration,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = receiver.wait_for(Option::is_some) => {}
        }
    }

    /// Asks for a stop on the first Ctrl-C or SIGTERM, after calling
    /// `announce` (which tells the user, in the command's own way). A second
    /// signal ends the process at once: the open batch's transaction is
    /// rolled back by the server and the next pgmaint marks the run
    /// interrupted.
    pub fn on_signals(&self, announce: fn()) {
        let stop = self.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => return,
                };
            for count in 0.. {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                if count == 0 {
                    announce();
                    stop.request(StopReason::Signal);
                } else {
                    std::process::exit(130);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_ends_at_the_deadline_or_at_a_stop_request() {
        let stop = Stop::default();
        let task = stop.until(Some(std::time::Instant::now() + Duration::from_millis(100)));
        let started = std::time::Instant::now();
        task.sleep(Duration::from_secs(30)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(90) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // The deadline is not a stop request, and stays with its clone.
        assert_eq!(task.requested(), None);
        assert!(stop.deadline.is_none());
        // A later deadline does not move an earlier one.
        let earlier = task.until(Some(std::time::Instant::now() + Duration::from_secs(60)));
        assert_eq!(earlier.deadline, task.deadline);

        let sleeper = {
            let task = stop.until(None);
            tokio::spawn(async move { task.sleep(Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        stop.request(StopReason::Signal);
        sleeper.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

//! Stopping work cleanly: Ctrl-C, SIGTERM and `max_runtime` all ask the
//! running task to stop between batches. Sleeps (pauses, retry backoff) end
//! early when a stop is asked for, so stopping is never delayed by them.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal,
}

#[derive(Clone)]
pub struct Stop {
    sender: std::sync::Arc<watch::Sender<Option<StopReason>>>,
    receiver: watch::Receiver<Option<StopReason>>,
}

impl Default for Stop {
    fn default() -> Self {
        let (sender, receiver) = watch::channel(None);
        Stop {
            sender: std::sync::Arc::new(sender),
            receiver,
        }
    }
}

impl Stop {
    pub fn request(&self, reason: StopReason) {
        self.sender.send_replace(Some(reason));
    }

    pub fn requested(&self) -> Option<StopReason> {
        *self.receiver.borrow()
    }

    /// Sleeps for `duration`, or less if a stop is asked for meanwhile.
    pub async fn sleep(&self, duration: Duration) {
        let mut receiver = self.receiver.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
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

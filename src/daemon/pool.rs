//! The connections the API's handlers and `/metrics` use: a small
//! deadpool pool whose connections are opened by `connect::connect`, so each
//! has today's session setup (TLS as `sslmode` says, `lock_timeout` and
//! `statement_timeout` SET at connect, server notices to the log). A
//! connection that closed, or that a handler cut short left inside a
//! transaction, is dropped when it is next taken, not handed out again. Sessions that hold advisory locks or LISTEN (the scheduler, a
//! fire, a run) stay dedicated connections of their own.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::Client;

use crate::connect::{self, ConnectError, Target};

/// The most connections the API and /metrics hold at once.
const SIZE: usize = 4;
/// The longest a request waits for a free connection of the pool.
const WAIT: Duration = Duration::from_secs(10);

/// Opens the pool's connections with the daemon's target.
pub(crate) struct Manager {
    target: Target,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = ConnectError;

    async fn create(&self) -> Result<Client, ConnectError> {
        connect::connect(&self.target).await
    }

    async fn recycle(&self, client: &mut Client, _: &Metrics) -> RecycleResult<ConnectError> {
        if client.is_closed() {
            return Err(RecycleError::message("the connection closed"));
        }
        // A handler cut short (a request timeout) can leave its transaction
        // open: inside one, now() is the transaction's start, not this
        // statement's. Such a connection is dropped, which ends it.
        // One Query message (the simple protocol): outside a transaction its
        // implicit one starts with it, so the two times are the same.
        let idle = client
            .simple_query("SELECT now() = statement_timestamp()")
            .await
            .ok()
            .and_then(|messages| {
                messages.into_iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
                    _ => None,
                })
            });
        match idle {
            Some(true) => Ok(()),
            _ => Err(RecycleError::message(
                "the connection was left inside a transaction",
            )),
        }
    }
}

pub(crate) type Pool = managed::Pool<Manager>;
/// A connection of the pool; back to it when dropped.
pub(crate) type Pooled = managed::Object<Manager>;
pub(crate) type PoolError = managed::PoolError<ConnectError>;

/// A pool over `target`. Nothing connects until the first request.
pub(crate) fn new(target: Target) -> Pool {
    Pool::builder(Manager { target })
        .max_size(SIZE)
        .wait_timeout(Some(WAIT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a runtime is set, so the pool's timeouts can work")
}

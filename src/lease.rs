//! The keeper of one process's leases on one database: a task with a
//! connection of its own that renews every lease, live run and running fire
//! of its owner (`store::LeaseOwner`) every third of their ttl, so the
//! connection that runs the work can sit in a transaction or a long
//! statement meanwhile. One keeper per database a process serves; nothing
//! is global. Dropping the keeper stops renewing (what it held then expires
//! and may be taken over).

use std::sync::Arc;

use crate::connect::{self, Target};
use crate::store::{self, LeaseOwner};

pub struct Keeper {
    owner: Arc<LeaseOwner>,
    renewing: Option<tokio::task::JoinHandle<()>>,
}

impl Keeper {
    /// Starts renewing `owner`'s leases in `schema` of `target`'s database.
    /// It connects when it first renews and again after a lost connection;
    /// a failed renewal is logged and tried again at the next beat.
    pub fn start(target: &Target, schema: &str, owner: LeaseOwner) -> Keeper {
        let owner = Arc::new(owner);
        // Outside a runtime (a router built for a test) nothing renews.
        let renewing = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            runtime.spawn(renew_forever(
                target.clone(),
                schema.to_string(),
                owner.clone(),
            ))
        });
        Keeper { owner, renewing }
    }

    pub fn owner(&self) -> &LeaseOwner {
        &self.owner
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(renewing) = &self.renewing {
            renewing.abort();
        }
    }
}

async fn renew_forever(target: Target, schema: String, owner: Arc<LeaseOwner>) {
    let beat = owner.ttl / 3;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut failing = false;
    loop {
        tokio::time::sleep(beat).await;
        let mut db = match client.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match connect::connect(&target).await {
                Ok(c) => c,
                Err(err) => {
                    if !failing {
                        tracing::warn!(
                            "could not renew leases: {err}; trying again every {beat:?}"
                        );
                        failing = true;
                    }
                    continue;
                }
            },
        };
        match store::renew(&mut db, &schema, &owner).await {
            Ok(_) => {
                if failing {
                    tracing::info!("renewing leases again");
                    failing = false;
                }
                client = Some(db);
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(
                        "could not renew leases: {}; trying again every {beat:?}",
                        crate::db::describe(&err)
                    );
                    failing = true;
                }
            }
        }
    }
}

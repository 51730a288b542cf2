//! The keeper of one process's leases on one database: a task (a thread,
//! under a command's single-threaded runtime) with a connection of its own
//! that renews every lease, live run and running fire
//! of its owner (`store::LeaseOwner`) every third of their ttl, so the
//! connection that runs the work can sit in a transaction or a long
//! statement meanwhile. One keeper per database a process serves; nothing
//! is global. Dropping the keeper stops renewing (what it held then expires
//! and may be taken over).

use std::sync::Arc;

use tokio::runtime::RuntimeFlavor;

use crate::connect::{self, Target};
use crate::store::{self, LeaseOwner};

pub struct Keeper {
    owner: Arc<LeaseOwner>,
    renewing: Renewing,
}

/// Where the renewals run. On a multi-threaded runtime (the daemon) a task
/// beside the others; on a single-threaded one (a command) a thread of its
/// own with its own runtime, so a stretch of blocking work on the command's
/// thread (writing a backup, walking a directory) cannot hold a renewal
/// back past the lease's expiry.
enum Renewing {
    Nothing,
    Task(tokio::task::JoinHandle<()>),
    Thread(Option<tokio::sync::oneshot::Sender<()>>),
}

impl Keeper {
    /// Starts renewing `owner`'s leases in `schema` of `target`'s database.
    /// It connects when it first renews and again after a lost connection;
    /// a failed renewal is logged and tried again at the next beat.
    pub fn start(target: &Target, schema: &str, owner: LeaseOwner) -> Keeper {
        let owner = Arc::new(owner);
        let renew = {
            let (target, schema, owner) = (target.clone(), schema.to_string(), owner.clone());
            move || renew_forever(target, schema, owner)
        };
        // Outside a runtime (a router built for a test) nothing renews.
        let renewing = match tokio::runtime::Handle::try_current() {
            Err(_) => Renewing::Nothing,
            Ok(runtime) if runtime.runtime_flavor() != RuntimeFlavor::CurrentThread => {
                Renewing::Task(runtime.spawn(renew()))
            }
            Ok(runtime) => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let on_thread = renew.clone();
                let thread = std::thread::Builder::new()
                    .name("pgmaint-leases".into())
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime for the lease renewals");
                        runtime.block_on(async {
                            tokio::select! {
                                _ = on_thread() => {}
                                _ = stopped => {}
                            }
                        })
                    });
                match thread {
                    Ok(_) => Renewing::Thread(Some(stop)),
                    // No thread to be had: renew beside the command instead.
                    Err(_) => Renewing::Task(runtime.spawn(renew())),
                }
            }
        };
        Keeper { owner, renewing }
    }

    pub fn owner(&self) -> &LeaseOwner {
        &self.owner
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        match &mut self.renewing {
            Renewing::Nothing => {}
            Renewing::Task(renewing) => renewing.abort(),
            Renewing::Thread(stop) => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
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

//! pgmaint's own schema, and the only SQL against it.
//!
//! A run's process holds a session advisory lock keyed on the run's id for
//! as long as it lives. Whoever later finds a run still marked `running`
//! tries that lock: getting it proves the owner's session is gone (process
//! killed, machine lost), so the run is marked `interrupted`. No heartbeat
//! and no clock comparison is involved. docs/architecture.md explains more.
//!
//! This module owns pgmaint's schema: every query against it is one of the
//! named functions here, by area (`backups`, `refreshes`, `snapshots`, runs,
//! locks, versions, and the daemon's: fires and the schedule lock, API
//! schedules and the audit, alerts, notifications, metrics reads). They take the client and the schema on each call, so a
//! caller can use them inside its own transaction and keep one store per
//! database.

mod alerts;
mod api_schedules;
pub(crate) mod backups;
mod fires;
pub(crate) mod health_reads;
mod locks;
mod metrics;
mod migrations;
mod notifications;
pub(crate) mod refreshes;
mod runs;
pub(crate) mod snapshots;
mod versions;

pub(crate) use alerts::*;
pub(crate) use api_schedules::*;
pub(crate) use fires::*;
pub(crate) use locks::{try_lock_task, unlock_task};
pub(crate) use metrics::*;
pub(crate) use notifications::*;
pub use runs::*;
pub(crate) use versions::*;

//! pgmaint's own schema, and the only SQL against it.
//!
//! A run, a task and a schedule's running fire are leased (`locks`): rows
//! with an owner and an expiry on the server's clock, renewed by the owner
//! while it works (`lease::Keeper`). Whoever later finds a run still marked
//! `running` past its lease marks it `interrupted`, once. No session
//! advisory lock is involved, so it all works through a transaction
//! pooler. docs/architecture.md explains more.
//!
//! This module owns pgmaint's schema: every query against it is one of the
//! named functions here, by area (`backups`, `refreshes`, `snapshots`, runs,
//! leases, versions, the application's migrations as pgmaint ran them (`schema_migrations`), and the daemon's: fires and the schedule lease, API
//! schedules and the audit, alerts, notifications, metrics reads). They take the client and the schema on each call, so a
//! caller can use them inside its own transaction and keep one store per
//! database.

mod alerts;
mod api_schedules;
pub(crate) mod backups;
pub(crate) mod drift_checks;
mod fires;
pub(crate) mod health_reads;
mod locks;
mod metrics;
mod migrations;
mod notifications;
pub(crate) mod refreshes;
mod runs;
pub(crate) mod schema_migrations;
pub(crate) mod snapshots;
mod versions;

pub(crate) use alerts::*;
pub(crate) use api_schedules::*;
pub(crate) use fires::*;
pub use locks::LeaseOwner;
pub(crate) use locks::{renew, try_lock_task, unlock_task};
pub(crate) use metrics::*;
pub(crate) use notifications::*;
pub use runs::*;
pub(crate) use versions::*;

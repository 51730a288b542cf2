//! pgmaint keeps PostgreSQL databases healthy: it purges expired data in
//! safe batches, records every run in an audit trail, and shows what it
//! would do before doing it. The `pgmaint` binary is a thin shell around
//! this library; tests and (later) the daemon call the same functions.

pub mod backup;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod db;
pub mod health;
pub mod notify;
pub mod output;
pub mod runner;
pub mod schedule;
pub mod sql;
pub mod state;
pub mod status;
pub mod stop;
pub mod tasks;

//! pgmaint keeps PostgreSQL databases healthy: it purges, archives and
//! backs up expired data in safe batches, keeps views, indexes, statistics
//! and partitions in shape, runs all of it on schedules, records every run
//! in an audit trail, shows what it would do before doing it, and checks
//! the database's health. The `pgmaint` binary is a thin shell around this
//! library; the tests, the daemon and its API call the same functions.

pub mod backup;
pub(crate) mod check_name;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod connect;
pub(crate) mod cron;
pub mod daemon;
pub mod db;
pub mod duration;
pub mod health;
pub mod lease;
pub mod migrate;
pub mod notify;
pub mod options;
pub(crate) mod outcome;
pub mod output;
pub(crate) mod predicate;
pub(crate) mod retention;
pub(crate) mod retry;
pub mod runner;
pub mod schedule;
pub mod sql;
pub mod status;
pub mod stop;
pub mod store;
pub(crate) mod task_alerts;
pub mod tasks;
pub(crate) mod unnamed;

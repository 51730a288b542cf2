//! The integration tests, one binary: `cargo test --test it`. Each module
//! was once its own binary with its own cluster; together they start one
//! throwaway PostgreSQL (`common::cluster()`), give each test a fresh
//! database of it, and link pgmaint's test code once. A test that needs a
//! server of its own (TLS on, a standby, a restart, or server-wide state
//! that others' sessions would disturb) starts one with `common::own_cluster()`.
//! docs/development.md describes the layout and how to add a module.

// The tests talk to their own cluster directly, never through a pooler:
// the named statements clippy.toml refuses in src/ are fine here.
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod api;
mod archive;
mod backups;
mod cli;
mod config_errors;
mod connect;
mod conventions;
mod daemon;
mod daemon_restart;
mod demo;
mod demo_tour;
mod errors;
mod health;
mod health_catalog;
mod health_custom;
mod health_statements;
mod health_timeout;
mod lifecycle;
mod migrate_command;
mod migrate_django;
mod migrate_drizzle;
mod migrate_edges;
mod migrate_flyway;
mod migrate_formats;
mod migrate_lint;
mod migrate_matrix;
mod migrate_schema;
mod migrate_sqlx;
mod migrate_trace;
mod orphans_set_null;
mod parallel;
mod partitioned;
mod partitions;
mod plan_output;
mod pooler;
mod predicates;
mod purge;
mod real_schemas;
mod removal;
mod removal_properties;
mod row_shapes;
mod run_order;
mod safety_rules;
mod sessions;
mod task_alerts;
mod time_zones;
mod tls;
mod upkeep;

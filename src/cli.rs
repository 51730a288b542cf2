//! The command line, as clap types only: what the user typed, validated for
//! form. `commands` turns it into settings and work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Duration;

const EXAMPLES: &str = "\
Examples:
  pgmaint demo                                 see pgmaint work on a throwaway database
  pgmaint init                                 create pgmaint's state schema
  pgmaint check                                validate pgmaint.toml against the database
  pgmaint plan old_request_logs                what a run would delete, changing nothing
  pgmaint run --all                            run every enabled task
  pgmaint run old_request_logs --max-runtime 10min
  pgmaint history --task old_request_logs --json
  pgmaint history --status failed --schedule nightly
  pgmaint health --fail-on critical            the database's health; exit 1 if critical
  pgmaint backups                              backups of removed rows
  pgmaint restore 12 --dry-run                 what restoring backup 12 would put back
  pgmaint migrate status                       the application's migrations: applied, pending
  pgmaint migrate up                           apply them, under lock_timeout, audited

Exit codes: 0 success; 1 a task failed; 2 bad usage or bad config (nothing was changed).";

#[derive(Debug, Parser)]
#[command(name = "pgmaint", version, about = "Keeps PostgreSQL databases healthy: batched purges and archives, upkeep, schedules, health checks, with an audit trail.", after_help = EXAMPLES)]
pub struct Cli {
    /// Config file [default: $PGMAINT_CONFIG, then ./pgmaint.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Connection URL; overrides DATABASE_URL and the config's [database] url
    #[arg(long, global = true, value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Print one JSON document on stdout instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// Show each statement pgmaint issues (-vv for debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or upgrade pgmaint's own schema (idempotent)
    Init,
    /// Validate the config against the live database; list every problem
    Check,
    /// The configured tasks: kind, target, severity, schedules
    Tasks,
    /// Run tasks (by name, by schedule, or all)
    #[command(
        after_help = "Examples:\n  pgmaint run expired_password_resets\n  pgmaint run --schedule daily\n  pgmaint run --all --dry-run\n  pgmaint run old_request_logs --batch-size 1000 --max-runtime 5min"
    )]
    Run(RunArgs),
    /// What a run would do, changing nothing (run --dry-run)
    #[command(after_help = "Examples:\n  pgmaint plan\n  pgmaint plan old_request_logs --json")]
    Plan(PlanArgs),
    /// Past runs and what each task did
    #[command(
        after_help = "Dry runs are recorded too, and shown with --all (or --dry-runs).\nExamples:\n  pgmaint history\n  pgmaint history --task old_request_logs --limit 5 --json\n  pgmaint history --schedule nightly --status failed\n  pgmaint history --all --trigger cli"
    )]
    History(HistoryArgs),
    /// List backups: the rows destructive tasks removed, kept on disk
    #[command(after_help = "Examples:\n  pgmaint backups\n  pgmaint backups --json")]
    Backups,
    /// Put back the rows a backup saved (rows already present are left alone)
    #[command(
        after_help = "Examples:\n  pgmaint restore 12 --dry-run     how many rows would come back, changing nothing\n  pgmaint restore 12"
    )]
    Restore(RestoreArgs),
    /// Each schedule with its next fire times, in its time zone and in UTC
    #[command(after_help = "Examples:\n  pgmaint schedules\n  pgmaint schedules --json")]
    Schedules,
    /// Run the schedules and serve the HTTP API and /metrics
    #[command(
        after_help = "Several daemons may run against one database: each scheduled fire runs once.\nExamples:\n  pgmaint daemon\n  PGMAINT_API_TOKEN=secret pgmaint daemon --log-format json"
    )]
    Daemon(DaemonArgs),
    /// Notifiers: send a test message
    #[command(subcommand, after_help = "Examples:\n  pgmaint notify test ops")]
    Notify(NotifyCommand),
    /// Check the database's health: each check's findings, worst first
    #[command(
        after_help = "Examples:\n  pgmaint health\n  pgmaint health --check idle-in-transaction --check blocked-queries\n  pgmaint health --fail-on warning --json     for monitoring: exit 1 at warning or worse\n  pgmaint health --exact                     measure bloat with pgstattuple"
    )]
    Health(HealthArgs),
    /// Store sizes, dead rows and pg_stat_statements counters for growth and slow-query checks
    #[command(after_help = "Examples:\n  pgmaint snapshot\n  pgmaint snapshot --json")]
    Snapshot,
    /// The application's schema migrations, in its own format and ledger, run safely
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// A throwaway local PostgreSQL with a sample app, maintained end to end
    #[command(
        after_help = "Needs the PostgreSQL server binaries (initdb, postgres).\nExamples:\n  pgmaint demo\n  pgmaint demo --keep"
    )]
    Demo(DemoArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct Selection {
    /// Tasks to run, by name
    pub tasks: Vec<String>,
    /// Run the tasks of this schedule
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tasks", "all"])]
    pub schedule: Option<String>,
    /// Run every enabled task
    #[arg(long, conflicts_with = "tasks")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Show what would happen, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm tasks of severity critical
    #[arg(long)]
    pub yes: bool,
    /// Rows per batch, for every task of this run
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Stop cleanly between batches after this long (e.g. 10min)
    #[arg(long, value_name = "DURATION")]
    pub max_runtime: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Tasks to plan [default: every enabled task]
    pub tasks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only runs of this task (with --status: runs where this task had that status)
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
    /// Only runs with this status
    #[arg(long, value_name = "STATUS", value_parser = ["running", "succeeded", "failed", "cancelled", "interrupted", "skipped"])]
    pub status: Option<String>,
    /// Only runs this schedule fired
    #[arg(long, value_name = "NAME")]
    pub schedule: Option<String>,
    /// Only runs started this way
    #[arg(long, value_name = "TRIGGER", value_parser = ["cli", "schedule", "api"])]
    pub trigger: Option<String>,
    /// Include dry runs (`plan`, `run --dry-run`), which are hidden otherwise
    #[arg(long = "all", visible_alias = "dry-runs")]
    pub all: bool,
    /// How many runs to show (at least 1)
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub limit: i64,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup's id, as `pgmaint backups` lists it
    pub backup: i64,
    /// Count what would come back, change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message through a notifier
    Test {
        /// The notifier's name, as in [notifiers.NAME]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Log lines as `text` or `json`
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Address to serve HTTP on [default: the config's [api] listen, or 127.0.0.1:9187]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Run only these checks (repeatable)
    #[arg(long = "check", value_name = "NAME")]
    pub checks: Vec<String>,
    /// Exit 1 when a check is at this level or worse
    #[arg(long, value_name = "LEVEL", value_parser = ["warning", "critical"])]
    pub fail_on: Option<String>,
    /// Measure bloat with pgstattuple (within a time budget) instead of estimating it
    #[arg(long)]
    pub exact: bool,
    /// List ok findings too (by default only warning, critical and unknown ones)
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the cluster running and print its URL and the config path
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Each migration: applied, pending, failed, modified, missing, out of order
    #[command(
        after_help = "Examples:\n  pgmaint migrate status\n  pgmaint migrate status --exit-code     exit 1 unless everything is applied\n  pgmaint migrate status --json"
    )]
    Status(MigrateStatusArgs),
    /// What `up` would run: statements in order, transaction boundaries, timeouts
    #[command(
        after_help = "Examples:\n  pgmaint migrate plan\n  pgmaint migrate plan --to 20240101120000"
    )]
    Plan(MigratePlanArgs),
    /// Apply the pending migrations, oldest first
    #[command(
        after_help = "Examples:\n  pgmaint migrate up\n  pgmaint migrate up --to 0007 --dry-run\n  pgmaint migrate up --allow-out-of-order"
    )]
    Up(MigrateUpArgs),
    /// Revert applied migrations, newest first; what a down drops is backed up first
    #[command(
        after_help = "Examples:\n  pgmaint migrate down                  the newest one\n  pgmaint migrate down --steps 3 --dry-run\n  pgmaint migrate down --to 0005 --yes   every one after 0005\n  pgmaint restore 12                     put back what a down dropped, once an up made it again"
    )]
    Down(MigrateDownArgs),
    /// Lock and safety lint: squawk's rules and pgmaint's, each an error or a warning
    #[command(
        after_help = "Lints the pending migrations (what `up` would run) and their downs, or the\nfiles named; exits 1 when a finding is an error. Silence a rule with a\n`-- squawk-ignore RULE` line in the file or [migrations] lint_exclude.\nExamples:\n  pgmaint migrate lint\n  pgmaint migrate lint migrations/0007_users_email.sql\n  pgmaint migrate lint --all --json"
    )]
    Lint(MigrateLintArgs),
    /// Up, down, up on a scratch copy of the live schema: does each down undo its up?
    #[command(
        after_help = "Copies the live schema (pg_dump --schema-only) to a throwaway local cluster\nand applies the pending migrations' ups, their downs newest first, and the\nups again; the catalog must come back identical at each step. Exits 1 when\na migration is not reversible, 2 on bad usage. Nothing changes on the\nlive database. Needs the local PostgreSQL server binaries.\nExamples:\n  pgmaint migrate test\n  pgmaint migrate test --to 0007 --data    seeded rows must survive the downs\n  pgmaint migrate test --last 2            the newest 2 applied: down, then up\n  pgmaint migrate test --json"
    )]
    Test(MigrateTestArgs),
    /// The live schema against the applied migrations replayed on a scratch cluster
    #[command(
        after_help = "Replays every migration the ledger says is applied on an empty throwaway\nlocal cluster and compares its catalog with the live one: objects made by\nhand, missing or changed, one line each. pgmaint's own objects (its state\nschema, the ledger, partitions and archive tables its tasks make) are never\ndrift. Exits 1 on drift, 0 when there is none. Needs the local PostgreSQL\nserver binaries.\nExamples:\n  pgmaint migrate drift\n  pgmaint migrate drift --json"
    )]
    Drift,
    /// Write the files of a new migration in the folder's format
    #[command(after_help = "Examples:\n  pgmaint migrate new add_users_email")]
    New {
        /// What the migration does, as a file name: letters, digits, `_`, `-`
        name: String,
    },
    /// Accept a changed file's checksum, or clear a failed migration (audited)
    #[command(
        after_help = "Examples:\n  pgmaint migrate repair 0006 --dry-run\n  pgmaint migrate repair 0006"
    )]
    Repair {
        /// The migration's version
        version: String,
        /// Say what it would do, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Mark a database migrated by hand as applied up to VERSION (audited)
    #[command(
        after_help = "Examples:\n  pgmaint migrate baseline 0012 --dry-run\n  pgmaint migrate baseline 0012"
    )]
    Baseline {
        /// The last version the database already has
        version: String,
        /// Say what it would mark applied, change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct MigrateStatusArgs {
    /// Exit 1 unless every migration is applied and unchanged
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
pub struct MigrateLintArgs {
    /// Migration files to lint (ups or downs); without a database, the
    /// files alone are read
    #[arg(value_name = "FILE", conflicts_with = "all")]
    pub files: Vec<std::path::PathBuf>,
    /// Every migration, applied or not
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct MigrateTestArgs {
    /// Test the pending migrations up to and including this version
    #[arg(long, value_name = "VERSION", conflicts_with = "last")]
    pub to: Option<String>,
    /// Test the newest N applied migrations instead: down, then up again
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub last: Option<u64>,
    /// Seed a few rows per table before the downs; a down must keep the
    /// rows and values of what exists before and after it
    #[arg(long)]
    pub data: bool,
}

#[derive(Debug, Args)]
pub struct MigratePlanArgs {
    /// Up to and including this version
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigrateUpArgs {
    /// Up to and including this version
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Show what would run, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Apply pending migrations whose versions are lower than one applied
    #[arg(long)]
    pub allow_out_of_order: bool,
    /// Confirm without asking
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct MigrateDownArgs {
    /// Revert every migration after this version (it stays applied)
    #[arg(long, value_name = "VERSION", conflicts_with = "steps")]
    pub to: Option<String>,
    /// Revert this many, newest first [default: 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Show what would run, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm without asking
    #[arg(long)]
    pub yes: bool,
}

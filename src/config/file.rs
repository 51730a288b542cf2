//! The config file exactly as written: serde types with `deny_unknown_fields`
//! and nothing resolved yet. `super::resolve` turns them into settings.
//!
//! A task here is only the keys every task takes (`TaskFile`); each kind's
//! own keys are that kind's struct in `tasks/`, read from the same table
//! (see `source`). Not an enum tagged by `kind`: serde buffers internally
//! tagged enums, which loses the source positions that errors must report,
//! and `flatten` does not work with `deny_unknown_fields`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// A human name for this database or config, shown in notifications.
    pub name: Option<String>,
    #[serde(default)]
    pub database: DatabaseFile,
    #[serde(default)]
    pub defaults: DefaultsFile,
    #[serde(default)]
    pub state: StateFile,
    #[serde(default)]
    pub backups: BackupsFile,
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskFile>,
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleFile>,
    #[serde(default)]
    pub health: HealthFile,
    #[serde(default)]
    pub api: ApiFile,
    #[serde(default)]
    pub notifiers: BTreeMap<String, NotifierFile>,
    #[serde(default)]
    pub alerts: BTreeMap<String, AlertFile>,
    pub migrations: Option<MigrationsFile>,
}

impl ConfigFile {
    /// Takes in the named tables (`super::source::NAMED_TABLES`) of a
    /// config read from one unit of the file.
    pub(crate) fn absorb(&mut self, unit: ConfigFile) {
        self.tasks.extend(unit.tasks);
        self.schedules.extend(unit.schedules);
        self.notifiers.extend(unit.notifiers);
        self.alerts.extend(unit.alerts);
    }
}

/// `[alerts.NAME]`: which checks, from which level, to whom, how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFile {
    /// Check names (built-in or `[health.custom.NAME]`), or `["*"]` (the
    /// default unless `tasks` is set) for all.
    pub checks: Option<Vec<String>>,
    pub level: Option<AlertLevel>,
    pub notify: Vec<String>,
    pub repeat: Option<Duration>,
    /// Tasks whose outcomes alert: a failure, a report finding
    /// `found_rows` rows or more, a run longer than `max_duration`.
    pub tasks: Option<Vec<String>>,
    pub max_duration: Option<Duration>,
    pub found_rows: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    Warning,
    Critical,
}

/// `[health]`: snapshots, and per-check thresholds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub snapshot_every: Option<Duration>,
    pub keep: Option<String>,
    /// Each check's own `statement_timeout` (default 5s).
    pub statement_timeout: Option<Duration>,
    /// How often the daemon runs the checks (for alerts and /metrics).
    pub check_every: Option<Duration>,
    /// How often `schema-drift` replays the migrations (default 1 day).
    pub drift_every: Option<Duration>,
    /// /metrics lists this many largest tables by name; the rest are totals.
    pub metrics_top: Option<usize>,
    #[serde(default)]
    pub checks: BTreeMap<String, HealthCheckFile>,
    #[serde(default)]
    pub custom: BTreeMap<String, CustomCheckFile>,
}

/// `[health.custom.NAME]`: a read-only query whose rows (`object`,
/// `value`, optional `detail`) are findings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCheckFile {
    pub sql: String,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    pub advice: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// Object patterns (globs such as `public.audit_*`) the check ignores.
    #[serde(default)]
    pub exclude: Vec<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    pub url: Option<String>,
    /// A connection that is a session of its own (not through a transaction
    /// pooler), for what cannot run in a transaction: Prisma's `directUrl`.
    pub direct_url: Option<String>,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    /// The IANA zone `timestamp without time zone` values are meant in.
    pub time_zone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub schema: Option<String>,
    /// Runs older than this (a PostgreSQL interval) are deleted by the daemon.
    pub keep_runs: Option<String>,
}

/// `[migrations]`: the application's own schema migrations (`migrate`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationsFile {
    pub dir: Option<String>,
    pub format: Option<String>,
    /// Simple sqlx migrations' rollbacks, `<version>_<name>_down.sql`.
    pub down_dir: Option<String>,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub require_down: Option<bool>,
    #[serde(default)]
    pub irreversible: Vec<String>,
    /// `stop` (the default) or `wait`: sessions holding the migration's
    /// tables in an open transaction.
    pub blockers: Option<String>,
    pub blockers_wait: Option<Duration>,
    pub max_retries: Option<u32>,
    /// `"1GB"`: a statement locking out writes on a bigger table needs --yes.
    pub confirm_above: Option<String>,
    /// Lint rules silenced for every file.
    #[serde(default)]
    pub lint_exclude: Vec<String>,
    /// `[migrations.command]`: the application's own migrator, with
    /// `format = "command"`.
    pub command: Option<MigrationsCommandFile>,
}

/// `[migrations.command]`: the shell commands that run the application's
/// own migrator (`up` required, checked by `resolve` so the error names
/// the key), the ledger it keeps, and where to run them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationsCommandFile {
    pub up: Option<String>,
    pub down: Option<String>,
    pub status: Option<String>,
    /// `knex`, `rails`, `django` or `prisma`; found from the database's
    /// tables when left out.
    pub ledger: Option<String>,
    /// The ledger's table when the tool's config renames it (knex's
    /// `tableName`, with `schemaName`: `"ops.knex_log"`), as PostgreSQL
    /// reads a name.
    pub ledger_table: Option<String>,
    /// Relative to the config file; the config's folder by default.
    pub workdir: Option<String>,
    /// Run the command on a scratch copy first, to back up what it drops
    /// (default true).
    pub trace: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsFile {
    pub dir: Option<String>,
    pub keep: Option<String>,
}

/// Declares a struct holding the options every task accepts, plus its own
/// fields, so `[defaults]` and `[tasks.*]` cannot drift apart.
macro_rules! with_task_options {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            pub severity: Option<Severity>,
            pub batch_size: Option<u64>,
            pub max_runtime: Option<Duration>,
            pub pause: Option<Duration>,
            pub lock_timeout: Option<Duration>,
            pub statement_timeout: Option<Duration>,
            pub max_retries: Option<u32>,
            pub exact_count_limit: Option<u64>,
            pub time_zone: Option<String>,
        }

        impl $name {
            pub fn options(&self) -> OptionsFile {
                OptionsFile {
                    batch_size: self.batch_size,
                    max_runtime: self.max_runtime,
                    pause: self.pause,
                    lock_timeout: self.lock_timeout,
                    statement_timeout: self.statement_timeout,
                    max_retries: self.max_retries,
                    exact_count_limit: self.exact_count_limit,
                    time_zone: self.time_zone.as_deref().and_then(|z| z.parse().ok()),
                }
            }
        }
    };
}

/// The options shared by `[defaults]` and every task, each still optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct OptionsFile {
    pub batch_size: Option<u64>,
    pub max_runtime: Option<Duration>,
    pub pause: Option<Duration>,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub max_retries: Option<u32>,
    pub exact_count_limit: Option<u64>,
    /// An unknown zone is left out here; `resolve` reports it.
    pub time_zone: Option<chrono_tz::Tz>,
}

with_task_options! {
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DefaultsFile {}
}

with_task_options! {
    /// The keys every `[tasks.NAME]` takes, whatever its kind. The kind's
    /// own keys are its struct's (`tasks::registry`): the file is read with
    /// them blanked out here, and they are read on their own afterwards.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskFile {
        kind: String,
        description: Option<String>,
        enabled: Option<bool>,
    }
}

impl TaskFile {
    /// The names of the keys every task takes, in the order messages list
    /// them.
    pub fn keys() -> &'static [&'static str] {
        crate::tasks::registry::fields_of::<TaskFile>()
    }
}

pub use crate::options::Severity;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    pub cron: String,
    pub timezone: Option<String>,
    pub tasks: Vec<String>,
    pub enabled: Option<bool>,
    pub allow_critical: Option<bool>,
    pub max_runtime: Option<Duration>,
    pub description: Option<String>,
    pub misfire: Option<Misfire>,
    pub misfire_grace: Option<Duration>,
    pub notify: Option<NotifyFile>,
}

/// `notify = ["ops"]` (every outcome, as each notifier's own `on_*` flags
/// allow), or `notify = { on_failure = [...], on_warning = [...],
/// on_success = [...] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NotifyFile {
    All(Vec<String>),
    ByOutcome(NotifyByOutcome),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyByOutcome {
    #[serde(default)]
    pub on_failure: Vec<String>,
    #[serde(default)]
    pub on_warning: Vec<String>,
    #[serde(default)]
    pub on_success: Vec<String>,
}

/// What a daemon does with fires missed while no daemon ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    Skip,
    #[default]
    RunOnce,
}

/// `[api]`: where the daemon listens, and the token `/api/v1` needs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    pub listen: Option<String>,
    pub token: Option<String>,
}

/// `[notifiers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierFile {
    pub kind: NotifierKind,
    /// Webhook or Slack incoming-webhook URL.
    pub url: Option<String>,
    /// Email: the SMTP server, `smtp://host:25`, `smtp://host:587?tls=required`
    /// or `smtps://user:password@host:465`.
    pub smtp: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Webhook: signs each body with HMAC-SHA256 in `X-Pgmaint-Signature`.
    pub secret: Option<String>,
    pub on_success: Option<bool>,
    pub on_failure: Option<bool>,
    pub on_warning: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    Webhook,
    Slack,
    Email,
}

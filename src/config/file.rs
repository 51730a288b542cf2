//! The config file exactly as written: serde types with `deny_unknown_fields`
//! and nothing resolved yet. `super::resolve` turns them into settings.
//!
//! A task is one flat struct with every kind's keys rather than an enum
//! tagged by `kind`: serde buffers internally tagged enums, which loses the
//! source positions that errors must report. `resolve` checks that each key
//! belongs to the task's kind.

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
}

/// `[alerts.NAME]`: which checks, from which level, to whom, how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFile {
    /// Check names, or `["*"]` (the default) for all.
    pub checks: Option<Vec<String>>,
    pub level: Option<AlertLevel>,
    pub notify: Vec<String>,
    pub repeat: Option<Duration>,
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
    /// /metrics lists this many largest tables by name; the rest are totals.
    pub metrics_top: Option<usize>,
    #[serde(default)]
    pub checks: BTreeMap<String, HealthCheckFile>,
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
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub schema: Option<String>,
    /// Runs older than this (a PostgreSQL interval) are deleted by the daemon.
    pub keep_runs: Option<String>,
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
            pub batch_size: Option<u64>,
            pub max_runtime: Option<Duration>,
            pub pause: Option<Duration>,
            pub lock_timeout: Option<Duration>,
            pub statement_timeout: Option<Duration>,
            pub max_retries: Option<u32>,
            pub exact_count_limit: Option<u64>,
            pub severity: Option<Severity>,
            $($(#[$fmeta])* pub $field: $ty,)*
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
}

with_task_options! {
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DefaultsFile {}
}

with_task_options! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskFile {
        kind: TaskKind,
        description: Option<String>,
        enabled: Option<bool>,
        backup: Option<bool>,
        table: Option<String>,
        #[serde(rename = "where")]
        where_: Option<String>,
        time_column: Option<String>,
        older_than: Option<String>,
        archive_table: Option<ArchiveTableFile>,
        archived_at: Option<String>,
        export: Option<String>,
        compression: Option<crate::backup::Compression>,
        column: Option<OneOrMany>,
        references: Option<String>,
        action: Option<OrphanAction>,
        sql: Option<String>,
        transaction: Option<bool>,
        path: Option<String>,
        pattern: Option<String>,
        keep_referenced: Option<String>,
        views: Option<OneOrMany>,
        concurrently: Option<AutoOr>,
        max_staleness: Option<Duration>,
        tables: Option<Vec<String>>,
        indexes: Option<Vec<String>>,
        auto: Option<bool>,
        dead_ratio: Option<f64>,
        min_dead_rows: Option<i64>,
        mod_ratio: Option<f64>,
        max_age: Option<String>,
        analyze: Option<bool>,
        freeze: Option<bool>,
        full: Option<bool>,
        parallel: Option<i32>,
        index_cleanup: Option<AutoOr>,
        skip_locked: Option<bool>,
        bloat_ratio: Option<f64>,
        interval: Option<String>,
        premake: Option<u32>,
        timezone: Option<String>,
        retention: Option<String>,
        retention_action: Option<RetentionAction>,
        drain_default: Option<bool>,
        on_referenced: Option<OnReferenced>,
    }
}

/// What a removal does with rows a foreign key without an ON DELETE action
/// still references.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReferenced {
    /// Leave them in place and count them; remove the rest.
    #[default]
    Keep,
    /// Fail the batch that meets one (PostgreSQL's own behaviour).
    Fail,
}

/// What `partitions` does with a partition past its retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionAction {
    #[default]
    Detach,
    Drop,
    Archive,
}

/// `"auto"`, or a boolean that overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum AutoOr {
    Set(bool),
    #[default]
    #[serde(with = "auto_word")]
    Auto,
}

mod auto_word {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let word = String::deserialize(d)?;
        if word == "auto" {
            Ok(())
        } else {
            Err(D::Error::custom(format!(
                "expected \"auto\", true or false, found \"{word}\""
            )))
        }
    }
}

/// `archive_table = "name"`, or `archive_table = false` for no table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ArchiveTableFile {
    Name(String),
    Enabled(bool),
}

/// `column = "a"` or `column = ["a", "b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanAction {
    #[default]
    Report,
    Delete,
}

/// Every task kind this build knows. A kind named in PRODUCT.md but not yet
/// built is refused by serde with the list of kinds that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Purge,
    Archive,
    Orphans,
    Sql,
    Files,
    Refresh,
    Vacuum,
    Analyze,
    Reindex,
    Partitions,
}

impl TaskKind {
    pub const ALL: [TaskKind; 10] = [
        TaskKind::Purge,
        TaskKind::Archive,
        TaskKind::Orphans,
        TaskKind::Sql,
        TaskKind::Files,
        TaskKind::Refresh,
        TaskKind::Vacuum,
        TaskKind::Analyze,
        TaskKind::Reindex,
        TaskKind::Partitions,
    ];

    /// The keys every task takes, whatever its kind.
    pub const COMMON_KEYS: &'static [&'static str] = &[
        "kind",
        "description",
        "enabled",
        "severity",
        "batch_size",
        "max_runtime",
        "pause",
        "lock_timeout",
        "statement_timeout",
        "max_retries",
        "exact_count_limit",
    ];

    /// The keys that belong to this kind, beyond `COMMON_KEYS`: what an
    /// unknown key's error lists and suggests from.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            TaskKind::Purge => &[
                "table",
                "where",
                "time_column",
                "older_than",
                "backup",
                "on_referenced",
            ],
            TaskKind::Archive => &[
                "table",
                "where",
                "time_column",
                "older_than",
                "archive_table",
                "archived_at",
                "export",
                "compression",
                "backup",
                "on_referenced",
            ],
            TaskKind::Orphans => &[
                "table",
                "column",
                "references",
                "action",
                "backup",
                "on_referenced",
            ],
            TaskKind::Sql => &["sql", "transaction"],
            TaskKind::Files => &["path", "pattern", "older_than", "keep_referenced"],
            TaskKind::Refresh => &["views", "concurrently", "max_staleness"],
            TaskKind::Vacuum => &[
                "tables",
                "auto",
                "dead_ratio",
                "min_dead_rows",
                "max_age",
                "analyze",
                "freeze",
                "full",
                "parallel",
                "index_cleanup",
                "skip_locked",
            ],
            TaskKind::Analyze => &["tables", "auto", "mod_ratio", "max_age", "skip_locked"],
            TaskKind::Reindex => &["tables", "indexes", "bloat_ratio"],
            TaskKind::Partitions => &[
                "table",
                "interval",
                "premake",
                "timezone",
                "retention",
                "retention_action",
                "drain_default",
                "export",
                "compression",
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Purge => "purge",
            TaskKind::Archive => "archive",
            TaskKind::Orphans => "orphans",
            TaskKind::Sql => "sql",
            TaskKind::Files => "files",
            TaskKind::Refresh => "refresh",
            TaskKind::Vacuum => "vacuum",
            TaskKind::Analyze => "analyze",
            TaskKind::Reindex => "reindex",
            TaskKind::Partitions => "partitions",
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

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

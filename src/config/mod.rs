//! The config in two stages: `file` is the TOML as written, `resolve` applies
//! defaults and interpolation and returns typed, validated settings. Nothing
//! after this module parses strings from the config again.

pub mod duration;
pub mod file;
pub mod problem;
mod source;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use duration::Duration;
use file::{OptionsFile, TaskFile};
pub use file::{Severity, TaskKind};
pub use problem::{Problem, Problems};
use source::Source;

use crate::tasks::TaskSpec;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "config file {0} does not exist\n  help: pass --config FILE, set PGMAINT_CONFIG, or create ./pgmaint.toml (`pgmaint demo` writes an example)"
    )]
    NotFound(PathBuf),
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Problems),
}

/// Connection and timeout settings from `[database]`.
#[derive(Clone, Default)]
pub struct DatabaseSettings {
    /// After `${VAR}` interpolation. May hold a password: never print it.
    pub url: Option<String>,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// The options every task runs with, after defaults are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOptions {
    pub batch_size: u64,
    pub max_runtime: Option<Duration>,
    pub pause: Duration,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    /// How often one batch is retried when it cannot get its locks.
    pub max_retries: u32,
    /// A dry run counts matching rows exactly up to a table of this many
    /// rows (by the planner's estimate); above it, it shows the estimate.
    pub exact_count_limit: u64,
}

impl TaskOptions {
    /// pgmaint's own defaults, before `[database]`, `[defaults]` and tasks.
    pub const BUILT_IN: TaskOptions = TaskOptions {
        batch_size: 5000,
        max_runtime: None,
        pause: Duration(std::time::Duration::ZERO),
        lock_timeout: Duration(std::time::Duration::from_secs(1)),
        statement_timeout: Duration(std::time::Duration::from_secs(300)),
        max_retries: 5,
        exact_count_limit: 10_000_000,
    };

    fn layered(base: TaskOptions, over: OptionsFile) -> TaskOptions {
        TaskOptions {
            batch_size: over.batch_size.unwrap_or(base.batch_size),
            max_runtime: over.max_runtime.or(base.max_runtime),
            pause: over.pause.unwrap_or(base.pause),
            lock_timeout: over.lock_timeout.unwrap_or(base.lock_timeout),
            statement_timeout: over.statement_timeout.unwrap_or(base.statement_timeout),
            max_retries: over.max_retries.unwrap_or(base.max_retries),
            exact_count_limit: over.exact_count_limit.unwrap_or(base.exact_count_limit),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskConfig {
    pub name: String,
    pub spec: TaskSpec,
    pub options: TaskOptions,
    pub severity: Severity,
    pub enabled: bool,
    pub description: Option<String>,
    pub backup: bool,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub tasks: Vec<String>,
    pub enabled: bool,
    pub allow_critical: bool,
    pub max_runtime: Option<std::time::Duration>,
    pub misfire: file::Misfire,
    pub misfire_grace: std::time::Duration,
    pub notify: NotifyTargets,
}

/// Which notifiers hear of each outcome of a schedule's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyTargets {
    pub on_failure: Vec<String>,
    pub on_warning: Vec<String>,
    pub on_success: Vec<String>,
}

impl NotifyTargets {
    /// The same notifiers for every outcome.
    pub fn all(names: Vec<String>) -> Self {
        NotifyTargets {
            on_failure: names.clone(),
            on_warning: names.clone(),
            on_success: names,
        }
    }

    /// The notifiers for an event level (`success`, `warning`, `failure`).
    pub fn for_level(&self, level: &str) -> &[String] {
        match level {
            "success" => &self.on_success,
            "failure" => &self.on_failure,
            _ => &self.on_warning,
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.on_failure
            .iter()
            .chain(&self.on_warning)
            .chain(&self.on_success)
    }
}

/// `[api]`, resolved.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: String,
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub name: String,
    pub kind: file::NotifierKind,
    /// The webhook URL, or for email the SMTP server URL.
    pub url: String,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub secret: Option<String>,
    pub on_success: bool,
    pub on_failure: bool,
    pub on_warning: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` when running without one.
    pub path: Option<PathBuf>,
    /// Its text, to point at keys in problems found later (by `check`).
    pub text: String,
    pub database: DatabaseSettings,
    pub state_schema: String,
    pub backups: BackupSettings,
    pub tasks: Vec<TaskConfig>,
    pub schedules: Vec<ScheduleConfig>,
    pub health: HealthSettings,
    pub api: ApiSettings,
    pub notifiers: Vec<NotifierConfig>,
    pub keep_runs: Option<String>,
    pub alerts: Vec<AlertConfig>,
}

/// `[alerts.NAME]`, resolved.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub name: String,
    /// Empty means every check.
    pub checks: Vec<String>,
    pub level: file::AlertLevel,
    pub notify: Vec<String>,
    pub repeat: std::time::Duration,
}

/// `[health]`, resolved: check overrides by name (names checked against
/// the checks that exist).
#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub check_every: std::time::Duration,
    pub metrics_top: usize,
    pub snapshot_every: std::time::Duration,
    pub keep: String,
    pub statement_timeout: std::time::Duration,
    pub checks: std::collections::BTreeMap<String, file::HealthCheckFile>,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            check_every: std::time::Duration::from_secs(5 * 60),
            metrics_top: 20,
            snapshot_every: std::time::Duration::from_secs(15 * 60),
            keep: "90 days".into(),
            statement_timeout: std::time::Duration::from_secs(5),
            checks: Default::default(),
        }
    }
}

/// `[backups]`: where backups are written and how long they are kept.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Relative paths in the file are relative to the file's directory.
    pub dir: PathBuf,
    /// A PostgreSQL interval; older backups are pruned after each run.
    pub keep: String,
}

impl BackupSettings {
    fn new(base: &std::path::Path, dir: Option<String>, keep: Option<String>) -> Self {
        BackupSettings {
            dir: base.join(dir.unwrap_or_else(|| "pgmaint-backups".into())),
            keep: keep.unwrap_or_else(|| "30 days".into()),
        }
    }
}

impl Config {
    /// Settings when no config file exists: connect from flags and libpq's
    /// variables, no tasks.
    pub fn without_file() -> Config {
        Config {
            path: None,
            text: String::new(),
            database: DatabaseSettings::default(),
            state_schema: "pgmaint".into(),
            backups: BackupSettings::new(std::path::Path::new("."), None, None),
            tasks: Vec::new(),
            schedules: Vec::new(),
            health: HealthSettings::default(),
            api: ApiSettings {
                listen: "127.0.0.1:9187".into(),
                token: None,
            },
            notifiers: Vec::new(),
            keep_runs: None,
            alerts: Vec::new(),
        }
    }

    /// The timeouts every session starts with: `[database]` lock_timeout
    /// and statement_timeout, else pgmaint's defaults. A task sets its own
    /// while it runs.
    pub fn session_timeouts(&self) -> crate::db::SessionTimeouts {
        let built_in = TaskOptions::BUILT_IN;
        crate::db::SessionTimeouts {
            lock_timeout: self.database.lock_timeout.unwrap_or(built_in.lock_timeout),
            statement_timeout: self
                .database
                .statement_timeout
                .unwrap_or(built_in.statement_timeout),
        }
    }

    pub fn task(&self, name: &str) -> Option<&TaskConfig> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub fn schedule(&self, name: &str) -> Option<&ScheduleConfig> {
        self.schedules.iter().find(|s| s.name == name)
    }

    /// A problem with a key of this config, placed at its line.
    pub fn problem(&self, key_path: &[&str], message: impl Into<String>) -> Problem {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("(no config file)"));
        Problem::new(
            source::locate(&path, &self.text, key_path),
            key_path.join("."),
            message,
        )
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ConfigError::NotFound(path.to_path_buf()),
            _ => ConfigError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
        })?;
        Config::parse(path, &text).map_err(ConfigError::Invalid)
    }

    /// Reads and resolves a config text, reporting every problem in it.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        let (source, file, mut problems) = source::read(path, text);
        let config = file.map(|file| resolve(&source, file, &mut problems));
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(Problems(problems)),
        }
    }
}

fn resolve(source: &Source, file: file::ConfigFile, problems: &mut Vec<Problem>) -> Config {
    let mut interpolate = |value: Option<String>, key: &[&str]| -> Option<String> {
        let value = value?;
        match interpolate_env(&value) {
            Ok(value) => Some(value),
            Err(missing) => {
                problems.push(
                    source
                        .problem(key, format!("environment variable `{missing}` is not set"))
                        .with_help(format!(
                            "export {missing}=... before running pgmaint, or write the value here"
                        )),
                );
                None
            }
        }
    };
    let url = interpolate(file.database.url, &["database", "url"]);
    let state_schema =
        interpolate(file.state.schema, &["state", "schema"]).unwrap_or_else(|| "pgmaint".into());
    let api = ApiSettings {
        listen: file
            .api
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9187".into()),
        token: interpolate(file.api.token.clone(), &["api", "token"]),
    };
    let keep_runs = interpolate(file.state.keep_runs.clone(), &["state", "keep_runs"]);
    // Each notifier's address (`url`, or `smtp` for email) and secret, with
    // `${VAR}`s replaced; read here, while `interpolate` may report.
    let notifier_values: std::collections::BTreeMap<String, (Option<String>, Option<String>)> =
        file.notifiers
            .iter()
            .map(|(name, n)| {
                let (address, key) = match n.kind {
                    file::NotifierKind::Email => (n.smtp.clone(), "smtp"),
                    _ => (n.url.clone(), "url"),
                };
                let address = interpolate(address, &["notifiers", name, key]);
                let secret = interpolate(n.secret.clone(), &["notifiers", name, "secret"]);
                (name.clone(), (address, secret))
            })
            .collect();

    let database_timeouts = OptionsFile {
        lock_timeout: file.database.lock_timeout,
        statement_timeout: file.database.statement_timeout,
        ..OptionsFile::default()
    };
    let backups = BackupSettings::new(
        source.path.parent().unwrap_or(std::path::Path::new(".")),
        interpolate(file.backups.dir, &["backups", "dir"]),
        interpolate(file.backups.keep, &["backups", "keep"]),
    );
    let base = TaskOptions::layered(TaskOptions::BUILT_IN, database_timeouts);
    let defaults = TaskOptions::layered(base, file.defaults.options());
    let default_severity = file.defaults.severity.unwrap_or_default();

    let mut tasks = Vec::new();
    for (name, task) in file.tasks {
        let options = TaskOptions::layered(defaults, task.options());
        if options.batch_size == 0 {
            problems.push(source.problem(
                &["tasks", &name, "batch_size"],
                "batch_size must be at least 1",
            ));
        }
        if let Some(task) = resolve_task(source, &name, task, options, default_severity, problems) {
            tasks.push(task);
        }
    }

    for (name, check) in &file.health.checks {
        if !crate::health::CHECK_NAMES.contains(&name.as_str()) {
            problems.push(
                source
                    .problem(
                        &["health", "checks", name],
                        format!("there is no health check named `{name}`"),
                    )
                    .with_help(format!(
                        "checks are: {}",
                        crate::health::CHECK_NAMES.join(", ")
                    )),
            );
        }
        for pattern in &check.exclude {
            if let Err(err) = globset::Glob::new(pattern) {
                problems.push(source.problem(
                    &["health", "checks", name, "exclude"],
                    format!("`{pattern}` is not a valid pattern: {err}"),
                ));
            }
        }
    }
    let defaults = HealthSettings::default();
    let health = HealthSettings {
        check_every: file
            .health
            .check_every
            .map(|d| d.0)
            .unwrap_or(defaults.check_every),
        metrics_top: file.health.metrics_top.unwrap_or(defaults.metrics_top),
        snapshot_every: file
            .health
            .snapshot_every
            .map(|d| d.0)
            .unwrap_or(defaults.snapshot_every),
        keep: file.health.keep.unwrap_or(defaults.keep),
        statement_timeout: file
            .health
            .statement_timeout
            .map(|d| d.0)
            .unwrap_or(defaults.statement_timeout),
        checks: file.health.checks,
    };

    let mut schedules = Vec::new();
    for (name, schedule) in file.schedules {
        let key = |k: &'static str| ["schedules", name.as_str(), k];
        let parser = crate::schedule::parser();
        if let Err(err) = parser.parse(&schedule.cron) {
            problems.push(
                source
                    .problem(&key("cron"), format!("invalid cron expression `{}`: {err}", schedule.cron))
                    .with_help("write 5 fields (minute hour day month weekday) or 6 with seconds first, e.g. \"0 2 * * *\""),
            );
        }
        let timezone = schedule.timezone.unwrap_or_else(|| "UTC".into());
        if timezone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(
                source
                    .problem(&key("timezone"), format!("unknown time zone `{timezone}`"))
                    .with_help("use an IANA name such as \"UTC\" or \"Europe/Berlin\""),
            );
        }
        for task in &schedule.tasks {
            if !tasks.iter().any(|t: &TaskConfig| &t.name == task) {
                problems.push(source.problem(
                    &key("tasks"),
                    format!("schedule names task `{task}`, which is not configured"),
                ));
            }
        }
        schedules.push(ScheduleConfig {
            name: name.clone(),
            cron: schedule.cron,
            timezone,
            tasks: schedule.tasks,
            enabled: schedule.enabled.unwrap_or(true),
            allow_critical: schedule.allow_critical.unwrap_or(false),
            max_runtime: schedule.max_runtime.map(|d| d.0),
            misfire: schedule.misfire.unwrap_or_default(),
            misfire_grace: schedule
                .misfire_grace
                .map(|d| d.0)
                .unwrap_or(std::time::Duration::from_secs(3600)),
            notify: match schedule.notify.clone() {
                None => NotifyTargets::default(),
                Some(file::NotifyFile::All(names)) => NotifyTargets::all(names),
                Some(file::NotifyFile::ByOutcome(by)) => NotifyTargets {
                    on_failure: by.on_failure,
                    on_warning: by.on_warning,
                    on_success: by.on_success,
                },
            },
        });
        let targets = schedules
            .last()
            .map(|s: &ScheduleConfig| s.notify.clone())
            .unwrap_or_default();
        for notifier in targets.names() {
            if !file.notifiers.contains_key(notifier) {
                problems.push(source.problem(
                    &["schedules", &name, "notify"],
                    format!("schedule names notifier `{notifier}`, which is not configured"),
                ));
            }
        }
    }

    let mut alerts = Vec::new();
    for (name, alert) in &file.alerts {
        let checks: Vec<String> = alert
            .checks
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c != "*")
            .collect();
        for check in &checks {
            if !crate::health::CHECK_NAMES.contains(&check.as_str()) {
                problems.push(
                    source
                        .problem(
                            &["alerts", name, "checks"],
                            format!("there is no health check named `{check}`"),
                        )
                        .with_help(format!(
                            "checks are: {}, or \"*\"",
                            crate::health::CHECK_NAMES.join(", ")
                        )),
                );
            }
        }
        for notifier in &alert.notify {
            if !file.notifiers.contains_key(notifier) {
                problems.push(source.problem(
                    &["alerts", name, "notify"],
                    format!("alert names notifier `{notifier}`, which is not configured"),
                ));
            }
        }
        alerts.push(AlertConfig {
            name: name.clone(),
            checks,
            level: alert.level.unwrap_or(file::AlertLevel::Warning),
            notify: alert.notify.clone(),
            repeat: alert
                .repeat
                .map(|d| d.0)
                .unwrap_or(std::time::Duration::from_secs(4 * 3600)),
        });
    }

    let mut notifiers = Vec::new();
    for (name, notifier) in &file.notifiers {
        let email = notifier.kind == file::NotifierKind::Email;
        let (address, secret) = notifier_values.get(name).cloned().unwrap_or_default();
        let Some(url) = address else {
            let (key, help) = if email {
                (
                    "smtp",
                    "add `smtp = \"smtp://mail.example.com:587?tls=required\"`",
                )
            } else {
                (
                    "url",
                    "add `url = \"https://...\"` (a webhook, or a Slack incoming-webhook URL)",
                )
            };
            problems.push(
                source
                    .problem(&["notifiers", name], format!("this notifier needs `{key}`"))
                    .with_help(help),
            );
            continue;
        };
        if email && (notifier.from.is_none() || notifier.to.is_empty()) {
            problems.push(
                source
                    .problem(
                        &["notifiers", name],
                        "an email notifier needs `from` and `to`",
                    )
                    .with_help(
                        "add `from = \"pgmaint@example.com\"` and `to = [\"oncall@example.com\"]`",
                    ),
            );
            continue;
        }
        notifiers.push(NotifierConfig {
            name: name.clone(),
            kind: notifier.kind,
            url,
            from: notifier.from.clone(),
            to: notifier.to.clone(),
            secret,
            on_success: notifier.on_success.unwrap_or(false),
            on_failure: notifier.on_failure.unwrap_or(true),
            on_warning: notifier.on_warning.unwrap_or(true),
        });
    }

    Config {
        path: Some(source.path.clone()),
        text: source.text.clone(),
        database: DatabaseSettings {
            url,
            lock_timeout: file.database.lock_timeout,
            statement_timeout: file.database.statement_timeout,
            connect_timeout: file.database.connect_timeout,
        },
        state_schema,
        backups,
        tasks,
        schedules,
        health,
        api,
        notifiers,
        keep_runs,
        alerts,
    }
}

fn resolve_task(
    source: &Source,
    name: &str,
    task: TaskFile,
    options: TaskOptions,
    default_severity: Severity,
    problems: &mut Vec<Problem>,
) -> Option<TaskConfig> {
    let severity = task.severity.unwrap_or(default_severity);
    let backup = task.backup.unwrap_or(severity >= Severity::High);
    let before = problems.len();
    let spec = TaskSpec::resolve(
        &task,
        &mut |key: &str, message: String, help: Option<String>| {
            let problem = source.problem(&["tasks", name, key], message);
            problems.push(match help {
                Some(help) => problem.with_help(help),
                None => problem,
            });
        },
    );
    let backup = backup && spec.as_ref().is_none_or(TaskSpec::can_back_up);
    if task.backup == Some(true)
        && let Some(spec) = &spec
        && !spec.can_back_up()
    {
        problems.push(source.problem(
            &["tasks", name, "backup"],
            format!(
                "a {} task removes no rows, so it has nothing to back up",
                spec.kind().as_str()
            ),
        ));
    }
    let mut spec = spec.filter(|_| problems.len() == before)?;
    let severity = severity.max(spec.minimum_severity());
    spec.anchor_paths(source.path.parent().unwrap_or(std::path::Path::new(".")));
    Some(TaskConfig {
        name: name.to_string(),
        spec,
        options,
        severity,
        enabled: task.enabled.unwrap_or(true),
        description: task.description,
        backup,
    })
}

/// Replaces `${VAR}` with the variable's value; `$${` keeps a literal `${`.
/// Returns the name of the first variable that is not set.
pub fn interpolate_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(stripped) = after.strip_prefix("${") {
            let Some(end) = stripped.find('}') else {
                out.push_str(after);
                return Ok(out);
            };
            let name = &stripped[..end];
            out.push_str(&std::env::var(name).map_err(|_| name.to_string())?);
            rest = &stripped[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;

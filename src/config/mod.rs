//! The config in two stages: `file` is the TOML as written (with `${VAR}`
//! replaced in every string value as it is read), `resolve` applies
//! defaults and returns typed, validated settings. Nothing after this
//! module parses strings from the config again.
//!
//! A few keys are used by some commands only: notifiers (the daemon,
//! `notify test`), `[api]` (the daemon) and `[database] url` (whatever
//! connects without `--database-url`). A variable they use that is not set,
//! or an address that does not parse, is kept as a `Deferred` problem: the
//! commands that need the key refuse to start with it, `check` lists it,
//! and the others work.

pub mod file;
mod migrations;
pub(crate) mod problem;
mod source;
mod units;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

pub(crate) use crate::duration::{self, Duration};
pub(crate) use file::Severity;
use file::{OptionsFile, TaskFile};
pub use problem::{LISTED_PROBLEMS, Location, Problem, Problems};
use source::Source;

use crate::check_name::CheckName;
use crate::db::SessionTimeouts;
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
    /// `direct_url`: a session of its own (not through a transaction
    /// pooler), for the runs that need one. May hold a password.
    pub direct_url: Option<String>,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field(
                "direct_url",
                &self.direct_url.as_ref().map(|_| "<redacted>"),
            )
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

pub(crate) use crate::options::TaskOptions;

/// A task's options layered over `base`: what the task sets wins.
fn layered(base: TaskOptions, over: OptionsFile) -> TaskOptions {
    TaskOptions {
        batch_size: over.batch_size.unwrap_or(base.batch_size),
        max_runtime: over.max_runtime.or(base.max_runtime),
        pause: over.pause.unwrap_or(base.pause),
        lock_timeout: over.lock_timeout.unwrap_or(base.lock_timeout),
        statement_timeout: over.statement_timeout.unwrap_or(base.statement_timeout),
        max_retries: over.max_retries.unwrap_or(base.max_retries),
        exact_count_limit: over.exact_count_limit.unwrap_or(base.exact_count_limit),
        time_zone: over.time_zone.or(base.time_zone),
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
    pub(crate) fn for_level(&self, level: &str) -> &[String] {
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

/// What a deferred problem keeps from working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Sending through this notifier.
    Notifier(String),
    /// Serving the API (`[api]`).
    Api,
    /// Connecting with the config's `[database] url`.
    DatabaseUrl,
}

/// A problem with a key only some commands use, reported by those.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub need: Need,
    pub problem: Problem,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` when running without one.
    pub path: Option<PathBuf>,
    /// Its text, to point at keys in problems found later (by `check`).
    pub text: String,
    /// Where the keys of `text` are, parsed once for all those problems.
    locator: source::Locator,
    /// `name = "..."`: what people call this database (for notifications).
    pub name: Option<String>,
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
    /// `[migrations]` (defaults when the file has none).
    pub migrations: crate::migrate::Settings,
    /// Problems only the commands that need these keys report.
    pub deferred: Vec<Deferred>,
}

/// `[alerts.NAME]`, resolved.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub name: String,
    /// Empty means every check (unless `watches_checks` is false).
    pub checks: Vec<String>,
    /// False when the alert names `tasks` and no `checks`.
    pub watches_checks: bool,
    /// Tasks whose outcomes alert (see `task_alerts`).
    pub tasks: Vec<String>,
    pub max_duration: Option<std::time::Duration>,
    pub found_rows: u64,
    pub level: file::AlertLevel,
    pub notify: Vec<String>,
    pub repeat: std::time::Duration,
}

/// `[health]`, resolved: check overrides by name (names checked against
/// the checks that exist).
#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub check_every: std::time::Duration,
    /// At most this often, `schema-drift` replays the migrations on a
    /// scratch cluster; in between it reports what it last found.
    pub drift_every: std::time::Duration,
    pub metrics_top: usize,
    pub snapshot_every: std::time::Duration,
    pub keep: String,
    pub statement_timeout: std::time::Duration,
    pub checks: std::collections::BTreeMap<String, file::HealthCheckFile>,
    /// `[health.custom.NAME]`, in name order, the enabled ones.
    pub custom: Vec<CustomCheck>,
}

/// `[health.custom.NAME]`, resolved.
#[derive(Debug, Clone)]
pub struct CustomCheck {
    pub name: String,
    pub sql: String,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    pub advice: String,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            check_every: std::time::Duration::from_secs(5 * 60),
            drift_every: std::time::Duration::from_secs(24 * 60 * 60),
            metrics_top: 20,
            snapshot_every: std::time::Duration::from_secs(15 * 60),
            keep: "90 days".into(),
            statement_timeout: std::time::Duration::from_secs(5),
            checks: Default::default(),
            custom: Vec::new(),
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
    /// The tables the tasks make in the user's schema (archive tables,
    /// partitions): pgmaint's own, never schema drift.
    pub(crate) fn made_by_tasks(&self) -> Vec<crate::tasks::Made> {
        self.tasks.iter().flat_map(|t| t.spec.makes()).collect()
    }

    /// Settings when no config file exists: connect from flags and libpq's
    /// variables, no tasks.
    pub fn without_file() -> Config {
        Config {
            path: None,
            text: String::new(),
            locator: source::Locator::default(),
            name: None,
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
            migrations: crate::migrate::Settings::defaults(
                std::path::Path::new("."),
                std::path::PathBuf::from("pgmaint-backups"),
            ),
            deferred: Vec::new(),
        }
    }

    /// The deferred problems that keep `need` from working.
    pub fn problems_for(&self, need: impl Fn(&Need) -> bool) -> Vec<Problem> {
        self.deferred
            .iter()
            .filter(|d| need(&d.need))
            .map(|d| d.problem.clone())
            .collect()
    }

    /// The timeouts every session starts with: `[database]` lock_timeout
    /// and statement_timeout, else pgmaint's defaults. A task sets its own
    /// while it runs.
    pub(crate) fn session_timeouts(&self) -> SessionTimeouts {
        let built_in = TaskOptions::BUILT_IN;
        SessionTimeouts {
            lock_timeout: self.database.lock_timeout.unwrap_or(built_in.lock_timeout),
            statement_timeout: self
                .database
                .statement_timeout
                .unwrap_or(built_in.statement_timeout),
            time_zone: None,
        }
    }

    pub fn task(&self, name: &str) -> Option<&TaskConfig> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub(crate) fn schedule(&self, name: &str) -> Option<&ScheduleConfig> {
        self.schedules.iter().find(|s| s.name == name)
    }

    /// A problem with a key of this config, placed at its line.
    pub(crate) fn problem(&self, key_path: &[&str], message: impl Into<String>) -> Problem {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("(no config file)"));
        Problem::new(
            self.locator.locate(&path, &self.text, key_path),
            key_path.join("."),
            message,
        )
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        Config::parse(path, &text).map_err(ConfigError::Invalid)
    }

    /// Reads and resolves a config text, reporting every problem in it.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        match Config::parse_all(path, text) {
            (Some(config), problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(Problems(problems)),
        }
    }

    /// The config built from what is valid (tasks with a problem left
    /// out), and every problem, in file order: so `check` can test the
    /// rest against the database and list both kinds at once.
    pub fn parse_all(path: &Path, text: &str) -> (Option<Config>, Vec<Problem>) {
        Config::parse_all_with(path, text, &real_env)
    }

    /// `parse_all` with the variables `env` gives for `${VAR}`.
    pub fn parse_all_with(
        path: &Path,
        text: &str,
        env: &Env<'_>,
    ) -> (Option<Config>, Vec<Problem>) {
        let (source, file, mut problems) = source::read(path, text, env);
        let config = file.map(|file| resolve(&source, file, &mut problems));
        problem::suggest_for_listed(&mut problems);
        (config, problems)
    }

    /// `load`, keeping a config with problems (see `parse_all`).
    pub fn load_all(path: &Path) -> Result<(Option<Config>, Vec<Problem>), ConfigError> {
        let text = read_file(path)?;
        Ok(Config::parse_all(path, &text))
    }
}

/// Where a key that only some commands use belongs: an unset variable or a
/// bad value there fails those commands, not every command.
fn need_of(key_path: &[String]) -> Option<Need> {
    match key_path {
        [section, name, ..] if section == "notifiers" => Some(Need::Notifier(name.clone())),
        [section, ..] if section == "api" => Some(Need::Api),
        [section, key] if section == "database" && key == "url" => Some(Need::DatabaseUrl),
        _ => None,
    }
}

fn starts_with(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

fn resolve(source: &Source, file: file::ConfigFile, problems: &mut Vec<Problem>) -> Config {
    let (mut deferred, unset_problems) = unset_variables(source);
    let database = database_settings(source, &file.database);
    let state_schema = file
        .state
        .schema
        .clone()
        .unwrap_or_else(|| "pgmaint".into());
    let api = api_settings(source, &file.api);
    let keep_runs = file.state.keep_runs.clone();

    let database_timeouts = OptionsFile {
        lock_timeout: file.database.lock_timeout,
        statement_timeout: file.database.statement_timeout,
        time_zone: file
            .database
            .time_zone
            .as_deref()
            .and_then(|z| z.parse().ok()),
        ..OptionsFile::default()
    };
    let backups = BackupSettings::new(
        source.path.parent().unwrap_or(std::path::Path::new(".")),
        file.backups.dir.clone(),
        file.backups.keep.clone(),
    );
    let migrations = migrations::resolve(source, file.migrations.as_ref(), &backups.dir, problems);
    check_retention_ages(source, &file, problems);
    check_timeouts(source, &file, problems);
    check_time_zones(source, &file, problems);
    check_names(source, problems);
    check_api_token(source, &api, problems);
    let base = layered(TaskOptions::BUILT_IN, database_timeouts);
    let defaults = layered(base, file.defaults.options());
    let default_severity = file.defaults.severity.unwrap_or_default();

    let mut tasks = Vec::new();
    for (name, task) in file.tasks {
        let options = layered(defaults, task.options());
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

    let custom_names: Vec<String> = file.health.custom.keys().cloned().collect();
    check_health_checks(source, &file.health.checks, &custom_names, problems);
    let custom = resolve_custom_checks(source, &file.health.custom, problems);
    let mut health = health_settings(file.health);
    health.custom = custom;

    // Names as written, including tables that had problems of their own,
    // so a schedule naming a task with a typo in it is not also told the
    // task does not exist.
    let task_names = source.names_in(&["tasks"]);
    // In the order the file lists them: `run --all` and `plan` go in that
    // order (a vacuum written after the purges runs after them).
    let written: std::collections::HashMap<&str, usize> = task_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    tasks.sort_by_cached_key(|t: &TaskConfig| {
        written.get(t.name.as_str()).copied().unwrap_or(usize::MAX)
    });
    let notifier_names = source.names_in(&["notifiers"]);
    let task_names: Arc<[String]> = task_names.into();
    let task_set: HashSet<&str> = task_names.iter().map(String::as_str).collect();
    let notifier_set: HashSet<&str> = notifier_names.iter().map(String::as_str).collect();
    let named = Named {
        tasks: &task_names,
        task_set: &task_set,
        notifiers: &notifier_set,
    };
    let mut schedules = Vec::new();
    for (name, schedule) in file.schedules {
        schedules.push(resolve_schedule(source, name, schedule, named, problems));
    }
    let mut alerts = Vec::new();
    for (name, alert) in &file.alerts {
        alerts.push(resolve_alert(
            source,
            name,
            alert,
            named,
            &custom_names,
            problems,
        ));
    }
    let notifiers = resolve_notifiers(source, &file.notifiers, problems, &mut deferred);
    settle_problems(source, problems, unset_problems);

    Config {
        path: Some(source.path.clone()),
        text: source.text.clone(),
        locator: source::Locator::default(),
        name: file.name,
        database,
        state_schema,
        backups,
        tasks,
        schedules,
        health,
        api,
        notifiers,
        keep_runs,
        alerts,
        migrations,
        deferred,
    }
}

/// A problem for each `${VAR}` that is not set: deferred when only some
/// commands use its key (see `Need`), else a problem of the file.
fn unset_variables(source: &Source) -> (Vec<Deferred>, Vec<Problem>) {
    let mut deferred = Vec::new();
    let mut problems = Vec::new();
    for unset in &source.unset {
        let problem = Problem::new(
            unset.location.clone(),
            unset.key_path.join("."),
            format!("environment variable `{}` is not set", unset.var),
        )
        .with_help(format!(
            "export {}=... before running pgmaint, or write the value here (`$${{` writes a literal `${{`)",
            unset.var
        ));
        match need_of(&unset.key_path) {
            Some(need) => deferred.push(Deferred { need, problem }),
            None => problems.push(problem),
        }
    }
    (deferred, problems)
}

/// `[database]`; a `url` whose variable is not set is left out (the
/// commands that need it say so).
fn database_settings(source: &Source, database: &file::DatabaseFile) -> DatabaseSettings {
    DatabaseSettings {
        url: if unset_at(source, &["database", "url"]) {
            None
        } else {
            database.url.clone()
        },
        direct_url: if unset_at(source, &["database", "direct_url"]) {
            None
        } else {
            database.direct_url.clone()
        },
        lock_timeout: database.lock_timeout,
        statement_timeout: database.statement_timeout,
        connect_timeout: database.connect_timeout,
    }
}

/// Whether the value at exactly `path` used a variable that is not set.
fn unset_at(source: &Source, path: &[&str]) -> bool {
    source.unset.iter().any(|u| {
        u.key_path
            .iter()
            .map(String::as_str)
            .eq(path.iter().copied())
    })
}

fn api_settings(source: &Source, api: &file::ApiFile) -> ApiSettings {
    ApiSettings {
        listen: api
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9187".into()),
        token: api
            .token
            .clone()
            .filter(|_| !unset_at(source, &["api", "token"])),
    }
}

/// Task and schedule names: 1–63 characters of `a-z`, `0-9`, `_` and `-`
/// (the API holds its schedules to the same rule).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some(format!(
            "a name is 1 to 63 characters; this one has {}",
            name.chars().count()
        ));
    }
    let bad: BTreeSet<char> = name
        .chars()
        .filter(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let bad: String = bad.into_iter().collect();
    Some(format!(
        "`{name}` is not a valid name: it has {bad:?}; names are made of a-z, 0-9, `_` and `-`"
    ))
}

/// The help that goes with `name_problem`.
pub const NAME_HELP: &str =
    "rename it with lower-case letters, digits, `_` and `-` only, at most 63 characters";

fn check_names(source: &Source, problems: &mut Vec<Problem>) {
    for section in ["tasks", "schedules"] {
        for name in source.names_in(&[section]) {
            if let Some(message) = name_problem(&name) {
                problems.push(
                    source
                        .problem(&[section, &name], message)
                        .with_help(NAME_HELP),
                );
            }
        }
    }
}

/// The shortest `[api] token` accepted.
pub const MIN_TOKEN_LEN: usize = 32;

fn check_api_token(source: &Source, api: &ApiSettings, problems: &mut Vec<Problem>) {
    if let Some(token) = &api.token
        && token.chars().count() < MIN_TOKEN_LEN
    {
        problems.push(
            source
                .problem(
                    &["api", "token"],
                    format!(
                        "the API token is {} characters; it must be at least {MIN_TOKEN_LEN}, so that it cannot be guessed",
                        token.chars().count()
                    ),
                )
                .with_help(
                    "make one with `openssl rand -hex 32` and pass it in a variable: token = \"${PGMAINT_API_TOKEN}\"",
                ),
        );
    }
}

/// A zero `lock_timeout` means "wait for ever" to PostgreSQL, which is
/// what the timeout is there to prevent; a zero `statement_timeout` is
/// the same unless written `"off"` on purpose.
fn check_timeouts(source: &Source, file: &file::ConfigFile, problems: &mut Vec<Problem>) {
    let mut at: Vec<(Vec<String>, Option<Duration>)> = vec![
        (
            vec!["database".into(), "lock_timeout".into()],
            file.database.lock_timeout,
        ),
        (
            vec!["database".into(), "statement_timeout".into()],
            file.database.statement_timeout,
        ),
        (
            vec!["defaults".into(), "lock_timeout".into()],
            file.defaults.lock_timeout,
        ),
        (
            vec!["defaults".into(), "statement_timeout".into()],
            file.defaults.statement_timeout,
        ),
        (
            vec!["health".into(), "statement_timeout".into()],
            file.health.statement_timeout,
        ),
    ];
    for (name, task) in &file.tasks {
        at.push((
            vec!["tasks".into(), name.clone(), "lock_timeout".into()],
            task.lock_timeout,
        ));
        at.push((
            vec!["tasks".into(), name.clone(), "statement_timeout".into()],
            task.statement_timeout,
        ));
    }
    for (key_path, value) in at {
        let Some(value) = value.filter(|d| d.0.is_zero()) else {
            continue;
        };
        let path: Vec<&str> = key_path.iter().map(String::as_str).collect();
        let key = *path.last().expect("a key");
        let written_off = || {
            source
                .raw_str(&path)
                .is_some_and(|raw| raw.trim().eq_ignore_ascii_case("off"))
        };
        if key == "statement_timeout" && written_off() {
            continue;
        }
        let _ = value;
        let problem = if key == "lock_timeout" {
            source
                .problem(&path, "a zero lock_timeout means waiting for a lock for ever, in front of the application's traffic")
                .with_help("write a short positive duration, e.g. lock_timeout = \"1s\"")
        } else {
            source
                .problem(&path, "a zero statement_timeout means no limit on a statement")
                .with_help("write a positive duration, e.g. statement_timeout = \"5min\", or \"off\" to mean no limit on purpose")
        };
        problems.push(problem);
    }
}

/// `time_zone` in `[database]`, `[defaults]` and each task: an IANA name.
fn check_time_zones(source: &Source, file: &file::ConfigFile, problems: &mut Vec<Problem>) {
    let mut at: Vec<(Vec<String>, Option<&str>)> = vec![
        (
            vec!["database".into(), "time_zone".into()],
            file.database.time_zone.as_deref(),
        ),
        (
            vec!["defaults".into(), "time_zone".into()],
            file.defaults.time_zone.as_deref(),
        ),
    ];
    for (name, task) in &file.tasks {
        at.push((
            vec!["tasks".into(), name.clone(), "time_zone".into()],
            task.time_zone.as_deref(),
        ));
    }
    for (key_path, zone) in at {
        let Some(zone) = zone.filter(|z| z.parse::<chrono_tz::Tz>().is_err()) else {
            continue;
        };
        let path: Vec<&str> = key_path.iter().map(String::as_str).collect();
        problems.push(
            source
                .problem(&path, format!("unknown time zone `{zone}`"))
                .with_help("use an IANA name such as \"UTC\" or \"Europe/Berlin\": the zone the application writes `timestamp without time zone` values in"),
        );
    }
}

/// Ages that decide what pgmaint deletes of its own: a negative `keep`
/// would make every backup (or run record) older than the future.
fn check_retention_ages(source: &Source, file: &file::ConfigFile, problems: &mut Vec<Problem>) {
    for (key_path, age) in [
        (["backups", "keep"], file.backups.keep.as_deref()),
        (["state", "keep_runs"], file.state.keep_runs.as_deref()),
        (["health", "keep"], file.health.keep.as_deref()),
    ] {
        if let Some(age) = age
            && let Err(problem) = crate::retention::check_written(age)
        {
            problems.push(
                source
                    .problem(&key_path, problem.message)
                    .with_help(problem.help),
            );
        }
    }
}

/// `[health.checks.NAME]`: a check that exists, thresholds in the order
/// its direction needs, `exclude` patterns that parse.
fn check_health_checks(
    source: &Source,
    checks: &std::collections::BTreeMap<String, file::HealthCheckFile>,
    custom_names: &[String],
    problems: &mut Vec<Problem>,
) {
    for (name, check) in checks {
        match CheckName::parse(name) {
            Some(check_name) => {
                if let Some(problem) = threshold_order(source, check_name, check) {
                    problems.push(problem);
                }
            }
            // A custom check's thresholds are its own keys; only `exclude`
            // and `enabled` mean something here.
            None if custom_names.contains(name) => {}
            None => {
                problems.push(unknown_check(source, name));
                continue;
            }
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
}

fn unknown_check(source: &Source, name: &str) -> Problem {
    let mut problem = source.problem(
        &["health", "checks", name],
        format!("there is no health check named `{name}`"),
    );
    if let Some(near) = source::nearest(name, CheckName::ALL.iter().map(|c| c.as_str())) {
        problem
            .message
            .push_str(&format!("; did you mean `{near}`?"));
    }
    problem.with_help(format!("checks are: {}", CheckName::list()))
}

/// `[health.custom.NAME]`: a name of the task-name form that no built-in
/// check has, a query, thresholds in order (higher is worse). Disabled
/// ones are left out.
fn resolve_custom_checks(
    source: &Source,
    custom: &std::collections::BTreeMap<String, file::CustomCheckFile>,
    problems: &mut Vec<Problem>,
) -> Vec<CustomCheck> {
    let mut resolved = Vec::new();
    for (name, check) in custom {
        let key = |k: &'static str| ["health", "custom", name.as_str(), k];
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            problems.push(
                source
                    .problem(
                        &["health", "custom", name],
                        format!("`{name}` is not a valid check name"),
                    )
                    .with_help("use 1-63 characters of a-z, 0-9, _ and -"),
            );
            continue;
        }
        if CheckName::parse(name).is_some() {
            problems.push(
                source
                    .problem(
                        &["health", "custom", name],
                        format!("`{name}` is the name of a built-in check"),
                    )
                    .with_help("give the custom check a name of its own"),
            );
            continue;
        }
        if check.sql.trim().is_empty() {
            problems.push(source.problem(&key("sql"), "the query is empty").with_help(
                "a SELECT returning the columns object and value (and optionally detail)",
            ));
            continue;
        }
        if let (Some(w), Some(c)) = (check.warning, check.critical)
            && w > c
        {
            problems.push(
                source
                    .problem(
                        &key("warning"),
                        format!("warning {w} and critical {c} are in the wrong order: higher values are worse, so warning must be below critical"),
                    )
                    .with_help("swap the two values"),
            );
        }
        if check.enabled == Some(false) {
            continue;
        }
        resolved.push(CustomCheck {
            name: name.clone(),
            sql: check.sql.clone(),
            warning: check.warning,
            critical: check.critical,
            advice: check.advice.clone().unwrap_or_default(),
        });
    }
    resolved
}

/// `[health]` over the defaults.
fn health_settings(health: file::HealthFile) -> HealthSettings {
    let defaults = HealthSettings::default();
    HealthSettings {
        check_every: health
            .check_every
            .map(|d| d.0)
            .unwrap_or(defaults.check_every),
        drift_every: health
            .drift_every
            .map(|d| d.0)
            .unwrap_or(defaults.drift_every),
        metrics_top: health.metrics_top.unwrap_or(defaults.metrics_top),
        snapshot_every: health
            .snapshot_every
            .map(|d| d.0)
            .unwrap_or(defaults.snapshot_every),
        keep: health.keep.unwrap_or(defaults.keep),
        statement_timeout: health
            .statement_timeout
            .map(|d| d.0)
            .unwrap_or(defaults.statement_timeout),
        checks: health.checks,
        custom: Vec::new(),
    }
}

/// The names a schedule may refer to, as written in the file.
#[derive(Clone, Copy)]
struct Named<'a> {
    /// Shared by the problems that may suggest one of them.
    tasks: &'a Arc<[String]>,
    task_set: &'a HashSet<&'a str>,
    notifiers: &'a HashSet<&'a str>,
}

/// `[schedules.NAME]`: its cron and time zone checked, the tasks and
/// notifiers it names looked up.
fn resolve_schedule(
    source: &Source,
    name: String,
    schedule: file::ScheduleFile,
    named: Named<'_>,
    problems: &mut Vec<Problem>,
) -> ScheduleConfig {
    let key = |k: &'static str| ["schedules", name.as_str(), k];
    if let Err(err) = crate::cron::parse_cron(&schedule.cron) {
        problems.push(
            source
                .problem(&key("cron"), err)
                .with_help("write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"0 2 * * *\""),
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
        if !named.task_set.contains(task.as_str()) {
            // Among thousands of tasks the nearest name is looked for only
            // if the problem is listed (see `Problem::suggesting`).
            problems.push(
                source
                    .problem(
                        &key("tasks"),
                        format!("schedule names task `{task}`, which is not configured"),
                    )
                    .suggesting(task, named.tasks),
            );
        }
    }
    let notify = notify_targets(schedule.notify.clone());
    let mut reported = BTreeSet::new();
    for notifier in notify.names() {
        if !named.notifiers.contains(notifier.as_str()) && reported.insert(notifier.clone()) {
            problems.push(source.problem(
                &["schedules", &name, "notify"],
                format!("schedule names notifier `{notifier}`, which is not configured"),
            ));
        }
    }
    ScheduleConfig {
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
        notify,
    }
}

fn notify_targets(notify: Option<file::NotifyFile>) -> NotifyTargets {
    match notify {
        None => NotifyTargets::default(),
        Some(file::NotifyFile::All(names)) => NotifyTargets::all(names),
        Some(file::NotifyFile::ByOutcome(by)) => NotifyTargets {
            on_failure: by.on_failure,
            on_warning: by.on_warning,
            on_success: by.on_success,
        },
    }
}

/// `[alerts.NAME]`: the checks (`"*"` or none for all) and notifiers it
/// names looked up.
fn resolve_alert(
    source: &Source,
    name: &str,
    alert: &file::AlertFile,
    named: Named<'_>,
    custom_names: &[String],
    problems: &mut Vec<Problem>,
) -> AlertConfig {
    let notifier_names = named.notifiers;
    let checks: Vec<String> = alert
        .checks
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c != "*")
        .collect();
    for check in &checks {
        if CheckName::parse(check).is_none() && !custom_names.contains(check) {
            problems.push(
                source
                    .problem(
                        &["alerts", name, "checks"],
                        format!("there is no health check named `{check}`"),
                    )
                    .with_help(format!("checks are: {}, or \"*\"", CheckName::list())),
            );
        }
    }
    for notifier in &alert.notify {
        if !notifier_names.contains(notifier.as_str()) {
            problems.push(source.problem(
                &["alerts", name, "notify"],
                format!("alert names notifier `{notifier}`, which is not configured"),
            ));
        }
    }
    let tasks = alert.tasks.clone().unwrap_or_default();
    for task in &tasks {
        if !named.task_set.contains(task.as_str()) {
            problems.push(
                source
                    .problem(
                        &["alerts", name, "tasks"],
                        format!("alert names task `{task}`, which is not configured"),
                    )
                    .with_help("name a task of [tasks]"),
            );
        }
    }
    if tasks.is_empty() && (alert.max_duration.is_some() || alert.found_rows.is_some()) {
        let key = if alert.max_duration.is_some() {
            "max_duration"
        } else {
            "found_rows"
        };
        problems.push(
            source
                .problem(
                    &["alerts", name, key],
                    format!("`{key}` applies to tasks, and the alert names none"),
                )
                .with_help("add tasks = [\"...\"] to the alert"),
        );
    }
    AlertConfig {
        name: name.to_string(),
        watches_checks: alert.checks.is_some() || alert.tasks.is_none(),
        tasks,
        max_duration: alert.max_duration.map(|d| d.0),
        found_rows: alert.found_rows.unwrap_or(1).max(1),
        checks,
        level: alert.level.unwrap_or(file::AlertLevel::Warning),
        notify: alert.notify.clone(),
        repeat: alert
            .repeat
            .map(|d| d.0)
            .unwrap_or(std::time::Duration::from_secs(4 * 3600)),
    }
}

/// `[notifiers.NAME]`: the usable ones; a problem for each refused, and a
/// deferred problem for each whose address does not parse.
fn resolve_notifiers(
    source: &Source,
    written: &std::collections::BTreeMap<String, file::NotifierFile>,
    problems: &mut Vec<Problem>,
    deferred: &mut Vec<Deferred>,
) -> Vec<NotifierConfig> {
    let mut notifiers = Vec::new();
    for (name, notifier) in written {
        match resolve_notifier(source, name, notifier) {
            Resolved::Ready(notifier) => notifiers.push(notifier),
            Resolved::Refused(problem) => problems.push(problem),
            Resolved::Deferred(bad) => deferred.extend(bad),
            Resolved::Unset => {}
        }
    }
    notifiers
}

/// What became of one `[notifiers.NAME]`.
enum Resolved {
    Ready(NotifierConfig),
    /// Missing a key every notifier of its kind needs: a problem of the file.
    Refused(Problem),
    /// An address that does not parse: only what sends through it fails.
    Deferred(Vec<Deferred>),
    /// A variable in it is not set, which `unset_variables` reported.
    Unset,
}

fn resolve_notifier(source: &Source, name: &str, notifier: &file::NotifierFile) -> Resolved {
    let email = notifier.kind == file::NotifierKind::Email;
    let address = if email {
        notifier.smtp.clone()
    } else {
        notifier.url.clone()
    };
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
        return Resolved::Refused(
            source
                .problem(&["notifiers", name], format!("this notifier needs `{key}`"))
                .with_help(help),
        );
    };
    if email && (notifier.from.is_none() || notifier.to.is_empty()) {
        return Resolved::Refused(
            source
                .problem(
                    &["notifiers", name],
                    "an email notifier needs `from` and `to`",
                )
                .with_help(
                    "add `from = \"pgmaint@example.com\"` and `to = [\"oncall@example.com\"]`",
                ),
        );
    }
    // A notifier with a variable unset cannot be used; the commands
    // that send through it say so (see `Need`), the others work.
    if source
        .unset
        .iter()
        .any(|u| starts_with(&u.key_path, &["notifiers", name]))
    {
        return Resolved::Unset;
    }
    let bad = notifier_values(source, name, notifier, &url);
    if !bad.is_empty() {
        return Resolved::Deferred(
            bad.into_iter()
                .map(|problem| Deferred {
                    need: Need::Notifier(name.to_string()),
                    problem,
                })
                .collect(),
        );
    }
    Resolved::Ready(NotifierConfig {
        name: name.to_string(),
        kind: notifier.kind,
        url,
        from: notifier.from.clone(),
        to: notifier.to.clone(),
        secret: notifier.secret.clone(),
        on_success: notifier.on_success.unwrap_or(false),
        on_failure: notifier.on_failure.unwrap_or(true),
        on_warning: notifier.on_warning.unwrap_or(true),
    })
}

/// A value whose variable is not set was read as written (`${X}`); what
/// else is said about that key follows from that, so only the missing
/// variable is reported. Then every problem in file order.
fn settle_problems(source: &Source, problems: &mut Vec<Problem>, unset_problems: Vec<Problem>) {
    let unset: HashSet<String> = source.unset.iter().map(|u| u.key_path.join(".")).collect();
    if !unset.is_empty() {
        // The key, or a table it is in.
        problems.retain(|p| {
            !std::iter::once(p.key.as_str())
                .chain(p.key.match_indices('.').map(|(i, _)| &p.key[..i]))
                .any(|key| unset.contains(key))
        });
    }
    problems.extend(unset_problems);
    problems.sort_by_key(Problem::position);
}

/// A check's warning and critical thresholds, its defaults overridden,
/// must be in the order its direction needs: for most checks higher is
/// worse (warning below critical); for cache-hit lower is worse.
fn threshold_order(
    source: &Source,
    name: CheckName,
    check: &file::HealthCheckFile,
) -> Option<Problem> {
    let defaults = name.defaults();
    let warning = check.warning.or(defaults.warning)?;
    let critical = check.critical.or(defaults.critical)?;
    let wrong = if defaults.lower_is_worse {
        warning < critical
    } else {
        warning > critical
    };
    if !wrong {
        return None;
    }
    let key = if check.critical.is_some() && check.warning.is_none() {
        "critical"
    } else {
        "warning"
    };
    let shown = |value: f64, set: bool| {
        if set {
            format!("{value}")
        } else {
            format!("{value} (the default)")
        }
    };
    let (direction, order) = if defaults.lower_is_worse {
        ("lower values are worse", "above")
    } else {
        ("higher values are worse", "below")
    };
    Some(
        source
            .problem(
                &["health", "checks", name.as_str(), key],
                format!(
                    "warning {} and critical {} are in the wrong order: for {name} {direction}, so warning must be {order} critical",
                    shown(warning, check.warning.is_some()),
                    shown(critical, check.critical.is_some()),
                ),
            )
            .with_help("swap the two values, or set both"),
    )
}

/// A notifier's addresses, after `${VAR}`s: URLs that parse with the
/// scheme their kind needs, email addresses that parse as mailboxes.
fn notifier_values(
    source: &Source,
    name: &str,
    notifier: &file::NotifierFile,
    url: &str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let at = |key: &str, message: String, help: &str| {
        source
            .problem(&["notifiers", name, key], message)
            .with_help(help)
    };
    match notifier.kind {
        file::NotifierKind::Webhook | file::NotifierKind::Slack => {
            let parsed = reqwest::Url::parse(url);
            let fine = parsed
                .as_ref()
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !fine {
                let why = match parsed {
                    Err(err) => err.to_string(),
                    Ok(u) => format!("the scheme `{}` is not http or https", u.scheme()),
                };
                problems.push(at(
                    "url",
                    format!("this is not an http(s) URL: {why}"),
                    "write the full URL, e.g. https://hooks.example.com/pgmaint",
                ));
            }
        }
        file::NotifierKind::Email => {
            if let Err(err) = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url) {
                problems.push(at(
                    "smtp",
                    format!("this is not an SMTP URL: {err}"),
                    "write smtp://host:25, smtp://host:587?tls=required or smtps://user:password@host:465",
                ));
            }
            let mailbox = |address: &str| address.parse::<lettre::message::Mailbox>().err();
            if let Some(from) = &notifier.from
                && let Some(err) = mailbox(from)
            {
                problems.push(at(
                    "from",
                    format!("`{from}` is not an email address: {err}"),
                    "write an address such as pgmaint@example.com or \"pgmaint <pgmaint@example.com>\"",
                ));
            }
            for to in &notifier.to {
                if let Some(err) = mailbox(to) {
                    problems.push(at(
                        "to",
                        format!("`{to}` is not an email address: {err}"),
                        "write addresses such as [\"oncall@example.com\"]",
                    ));
                }
            }
        }
    }
    problems
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound(path.to_path_buf()),
        _ => ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn resolve_task(
    source: &Source,
    name: &str,
    task: TaskFile,
    options: TaskOptions,
    default_severity: Severity,
    problems: &mut Vec<Problem>,
) -> Option<TaskConfig> {
    let Some(kind) = crate::tasks::registry::find(&task.kind) else {
        problems.push(source.unknown_kind(name, &task.kind));
        return None;
    };
    let before = problems.len();
    let spec = source.read_kind(name, kind, problems);
    let spec = spec.filter(|_| problems.len() == before)?;
    let severity = task
        .severity
        .unwrap_or(default_severity)
        .max(spec.minimum_severity());
    let backup = spec.can_back_up()
        && spec
            .backup()
            .unwrap_or(task.severity.unwrap_or(default_severity) >= Severity::High);
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
    interpolate_with(value, &real_env)
}

/// A variable of this process's environment.
fn real_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Looks a variable up: the process's environment, or a test's. `Sync`,
/// as the units of a file are read on several threads (`source::read`).
pub type Env<'a> = dyn Fn(&str) -> Option<String> + Sync + 'a;

/// `interpolate_env` with the variables `env` gives.
pub fn interpolate_with(value: &str, env: &Env<'_>) -> Result<String, String> {
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
            out.push_str(&env(name).ok_or_else(|| name.to_string())?);
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

//! One function per command. Each turns the parsed command line into
//! settings (config, connection), calls the library, and prints the result
//! as a table or as one JSON document. Errors carry their exit code.

mod backups;
mod check;
mod daemon;
mod demo;
mod health;
mod history;
mod init;
mod migrate;
mod migrate_command;
mod migrate_schema;
mod notify;
mod run;
mod schedules;
mod tasks;

use std::path::PathBuf;

use tokio_postgres::Client;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError, Need, Problem, Problems};
use crate::connect;

/// An error and the exit code it ends the process with. With `--json` it
/// is also printed on stdout as the error document (`to_json`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage: nothing was changed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something failed while working (exit 1).
    #[error("{0}")]
    Failed(String),
    /// A config that cannot be used, or the problems `check` found: each
    /// with its place, then a summary (exit 2).
    #[error("{}", config_text(.problems, .summary))]
    Config {
        summary: String,
        problems: Vec<Problem>,
    },
    /// The connection could not be made: exit 1 when the server did not
    /// answer, 2 when the settings are wrong or name no database.
    #[error("{message}")]
    Connection { message: String, code: u8 },
    /// The server failed a statement (exit 1).
    #[error("{0}")]
    Server(String),
}

pub use crate::config::LISTED_PROBLEMS;

/// The first `LISTED_PROBLEMS`, and a line saying how many more.
fn listed(problems: &[Problem]) -> (&[Problem], Option<String>) {
    let shown = &problems[..problems.len().min(LISTED_PROBLEMS)];
    let more = problems.len() - shown.len();
    (
        shown,
        (more > 0).then(|| format!("... and {more} more problem(s), not listed")),
    )
}

fn config_text(problems: &[Problem], summary: &str) -> String {
    if problems.is_empty() {
        return summary.to_string();
    }
    let (shown, more) = listed(problems);
    match more {
        Some(more) => format!("{}\n{more}\n{summary}", Problems(shown.to_vec())),
        None => format!("{}\n{summary}", Problems(shown.to_vec())),
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config { .. } => 2,
            CliError::Failed(_) | CliError::Server(_) => 1,
            CliError::Connection { code, .. } => *code,
        }
    }

    /// The `kind` of the JSON error document.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Failed(_) => "task",
            CliError::Config { .. } => "config",
            CliError::Connection { .. } => "connection",
            CliError::Server(_) => "server",
        }
    }

    /// `{"error": {"kind", "message", "sqlstate"?, "problems": [...]}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let (message, problems) = match self {
            CliError::Config { summary, problems } => {
                let (shown, more) = listed(problems);
                let summary = match more {
                    Some(more) => format!("{summary} ({more})"),
                    None => summary.clone(),
                };
                (summary, shown.to_vec())
            }
            other => (other.to_string(), Vec::new()),
        };
        let mut error = serde_json::json!({
            "kind": self.kind(),
            "message": message,
            "problems": problems,
        });
        if let Some(code) = sqlstate(&message) {
            error["sqlstate"] = code.into();
        }
        serde_json::json!({ "error": error })
    }

    /// The usage error that lists config problems; nothing was changed.
    pub fn problems(problems: Vec<Problem>) -> CliError {
        let count = problems.len();
        CliError::Config {
            summary: format!("{count} problem(s) found; nothing was changed"),
            problems,
        }
    }
}

/// The SQLSTATE that `db::describe` puts at the end of a server's message.
fn sqlstate(message: &str) -> Option<String> {
    let at = message.rfind("[SQLSTATE ")?;
    let code = message[at + 10..].split(']').next()?;
    (code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric())).then(|| code.into())
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::Invalid(problems) => CliError::problems(problems.0),
            other => CliError::Config {
                summary: other.to_string(),
                problems: Vec::new(),
            },
        }
    }
}

impl From<connect::ConnectError> for CliError {
    fn from(err: connect::ConnectError) -> Self {
        let code = match err {
            connect::ConnectError::Unreachable { .. } => 1,
            _ => 2,
        };
        CliError::Connection {
            message: err.to_string(),
            code,
        }
    }
}

impl From<crate::store::StateError> for CliError {
    fn from(err: crate::store::StateError) -> Self {
        match err {
            crate::store::StateError::Database(_) => CliError::Server(err.to_string()),
            _ => CliError::Usage(err.to_string()),
        }
    }
}

impl From<crate::runner::RunError> for CliError {
    fn from(err: crate::runner::RunError) -> Self {
        match err {
            crate::runner::RunError::State(state) => state.into(),
            crate::runner::RunError::Refused(crate::runner::Refusal::Standby) => {
                CliError::Failed(err.to_string())
            }
            crate::runner::RunError::Refused(crate::runner::Refusal::Problems(problems)) => {
                CliError::problems(problems)
            }
            crate::runner::RunError::Refused(_) => CliError::Usage(err.to_string()),
            crate::runner::RunError::Database(text) => CliError::Server(text),
        }
    }
}

impl From<tokio_postgres::Error> for CliError {
    fn from(err: tokio_postgres::Error) -> Self {
        CliError::Server(crate::db::describe(&err))
    }
}

/// Runs the command; `Ok(true)` means success, `Ok(false)` a failed task.
pub async fn execute(cli: Cli) -> Result<bool, CliError> {
    match &cli.command {
        Command::Init => init::init(&cli).await,
        Command::Check => check::check(&cli).await,
        Command::Tasks => tasks::tasks(&cli).await,
        Command::Run(args) => run::run(&cli, args).await,
        Command::Plan(args) => run::plan(&cli, args).await,
        Command::History(args) => history::history(&cli, args).await,
        Command::Backups => backups::backups(&cli).await,
        Command::Restore(args) => backups::restore(&cli, args).await,
        Command::Schedules => schedules::schedules(&cli).await,
        Command::Notify(crate::cli::NotifyCommand::Test { name }) => notify::test(&cli, name).await,
        Command::Daemon(args) => daemon::daemon(&cli, args).await,
        Command::Health(args) => health::health(&cli, args).await,
        Command::Snapshot => health::snapshot(&cli).await,
        Command::Migrate(command) => migrate::migrate(&cli, command).await,
        Command::Demo(args) => demo::demo(&cli, args).await,
    }
}

/// The config file: `--config`, then `$PGMAINT_CONFIG`, then `./pgmaint.toml`.
/// Without `required`, a missing default file means "no config" (`None`).
fn config_path(cli: &Cli, required: bool) -> Option<PathBuf> {
    let explicit = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("PGMAINT_CONFIG").map(PathBuf::from));
    let path = explicit
        .clone()
        .unwrap_or_else(|| PathBuf::from("pgmaint.toml"));
    if explicit.is_none() && !required && !path.exists() {
        return None;
    }
    Some(path)
}

/// The config, refused when it has a problem, or when a key this command
/// needs cannot be used (a notifier for `daemon` and `notify test`, whose
/// variable is not set); keys the command does not use do not hold it up.
pub fn load_config(cli: &Cli, required: bool) -> Result<Config, CliError> {
    let Some(path) = config_path(cli, required) else {
        return Ok(Config::without_file());
    };
    let config = Config::load(&path)?;
    crate::db::configure_timeouts(config.session_timeouts());
    let needed = config.problems_for(|need| needs(cli, need));
    if !needed.is_empty() {
        return Err(CliError::problems(needed));
    }
    Ok(config)
}

/// The config as far as it is valid, with every problem in it, for
/// `check`, which lists these with what it finds in the database.
pub fn load_config_with_problems(cli: &Cli) -> Result<(Option<Config>, Vec<Problem>), CliError> {
    let path = config_path(cli, true).unwrap_or_else(|| PathBuf::from("pgmaint.toml"));
    let (config, problems) = Config::load_all(&path)?;
    if let Some(config) = &config {
        crate::db::configure_timeouts(config.session_timeouts());
    }
    Ok((config, problems))
}

fn needs(cli: &Cli, need: &Need) -> bool {
    match (&cli.command, need) {
        (Command::Daemon(_), Need::DatabaseUrl) => url_comes_from_config(cli),
        (Command::Daemon(_), _) => true,
        (Command::Notify(crate::cli::NotifyCommand::Test { name }), Need::Notifier(n)) => name == n,
        _ => false,
    }
}

/// No `--database-url` and no `DATABASE_URL`: the config's URL is the one.
pub(super) fn url_comes_from_config(cli: &Cli) -> bool {
    cli.database_url.is_none()
        && std::env::var("DATABASE_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .is_none()
}

/// Whether anything names a database: a URL, or libpq's variables.
fn database_named(url: Option<&str>) -> bool {
    url.is_some()
        || [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGDATABASE",
            "PGUSER",
            "PGSERVICE",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()))
}

/// What to say when nothing named a database and libpq's defaults failed.
const NAME_A_DATABASE: &str = "  help: nothing named a database, so libpq's defaults were tried; point pgmaint at one with --database-url postgres://USER@HOST:5432/DBNAME, the DATABASE_URL variable, `[database] url` in pgmaint.toml (or --config FILE), or libpq's PGHOST, PGDATABASE and PGUSER";

/// The database the flags and config name, as notifications name it.
pub(crate) fn origin(cli: &Cli, config: &Config) -> Result<crate::notify::Origin, CliError> {
    let url = connect::choose_url(cli.database_url.as_deref(), config.database.url.as_deref());
    let target = connect::resolve(url.as_deref(), config.database.connect_timeout.map(|d| d.0))?;
    Ok(crate::notify::Origin::of(&target, config.name.as_deref()))
}

/// Connects as the flags and config say; the session starts under the
/// config's timeouts, which `-v` shows.
pub async fn connect(cli: &Cli, config: &Config) -> Result<Client, CliError> {
    let (target, named) = target(cli, config)?;
    connect_to(&target, named).await
}

/// Where `connect` goes: the flag's, the environment's or the config's
/// URL, with the config's session timeouts; and whether it names a
/// database.
pub(crate) fn target(cli: &Cli, config: &Config) -> Result<(connect::Target, bool), CliError> {
    if url_comes_from_config(cli) {
        let unusable = config.problems_for(|need| *need == Need::DatabaseUrl);
        if !unusable.is_empty() {
            return Err(CliError::Config {
                summary: "cannot connect: the config's [database] url cannot be used; pass --database-url or set DATABASE_URL to connect anyway".into(),
                problems: unusable,
            });
        }
    }
    let url = connect::choose_url(cli.database_url.as_deref(), config.database.url.as_deref());
    let named = database_named(url.as_deref());
    let mut target =
        connect::resolve(url.as_deref(), config.database.connect_timeout.map(|d| d.0))?;
    target.session = config.session_timeouts();
    if cli.verbose > 0 {
        for statement in target.session.statements() {
            eprintln!("{statement}");
        }
    }
    Ok((target, named))
}

pub(crate) async fn connect_to(target: &connect::Target, named: bool) -> Result<Client, CliError> {
    connect::connect(target).await.map_err(|err| match err {
        connect::ConnectError::Unreachable { .. } if !named => CliError::Connection {
            message: format!("{err}\n{NAME_A_DATABASE}"),
            code: 2,
        },
        other => other.into(),
    })
}

/// Asks `question` on the terminal (stderr, then a line of stdin); `Ok`
/// only for y or yes, else the usage error that nothing was changed.
pub(crate) fn ask_yes(question: &str) -> Result<(), CliError> {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Usage("not confirmed; nothing was changed".into()))
    }
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    crate::output::println(&serde_json::to_string_pretty(value).expect("serializable output"));
}

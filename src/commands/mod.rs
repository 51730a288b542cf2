//! One function per command. Each turns the parsed command line into
//! settings (config, connection), calls the library, and prints the result
//! as a table or as one JSON document. Errors carry their exit code.

mod backups;
mod check;
mod demo;
mod health;
mod history;
mod init;
mod notify;
mod run;
mod schedules;
mod tasks;

use std::path::PathBuf;

use tokio_postgres::Client;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use crate::connect;

/// An error and the exit code it ends the process with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or bad config: nothing was changed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something failed while working (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        CliError::Usage(err.to_string())
    }
}

impl From<connect::ConnectError> for CliError {
    fn from(err: connect::ConnectError) -> Self {
        match err {
            connect::ConnectError::Unreachable { .. } => CliError::Failed(err.to_string()),
            _ => CliError::Usage(err.to_string()),
        }
    }
}

impl From<crate::state::StateError> for CliError {
    fn from(err: crate::state::StateError) -> Self {
        match err {
            crate::state::StateError::Database(_) => CliError::Failed(err.to_string()),
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
            crate::runner::RunError::Refused(_) => CliError::Usage(err.to_string()),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for CliError {
    fn from(err: tokio_postgres::Error) -> Self {
        CliError::Failed(crate::db::describe(&err))
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
        Command::Daemon(args) => crate::daemon::run(&cli, args).await,
        Command::Health(args) => health::health(&cli, args).await,
        Command::Snapshot => health::snapshot(&cli).await,
        Command::Demo(args) => demo::demo(&cli, args).await,
    }
}

/// The config file: `--config`, then `$PGMAINT_CONFIG`, then `./pgmaint.toml`.
/// Without `required`, a missing default file means "no config".
pub fn load_config(cli: &Cli, required: bool) -> Result<Config, CliError> {
    let explicit = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("PGMAINT_CONFIG").map(PathBuf::from));
    let path = explicit
        .clone()
        .unwrap_or_else(|| PathBuf::from("pgmaint.toml"));
    if explicit.is_none() && !required && !path.exists() {
        return Ok(Config::without_file());
    }
    Ok(Config::load(&path)?)
}

/// Connects as the flags and config say; the session starts under the
/// config's timeouts, which `-v` shows.
pub async fn connect(cli: &Cli, config: &Config) -> Result<Client, CliError> {
    let url = connect::choose_url(cli.database_url.as_deref(), config.database.url.as_deref());
    let mut target =
        connect::resolve(url.as_deref(), config.database.connect_timeout.map(|d| d.0))?;
    target.session = config.session_timeouts();
    if cli.verbose > 0 {
        for statement in target.session.statements() {
            eprintln!("{statement}");
        }
    }
    Ok(connect::connect(&target).await?)
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable output")
    );
}

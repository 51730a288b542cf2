//! `pgmaint daemon`: resolves the config and the connection, binds the
//! listen address, and hands them to `crate::daemon::run`, which knows
//! nothing of the command line; its errors become exit codes here.

use super::{CliError, load_config};
use crate::cli::{Cli, DaemonArgs};
use crate::connect;
use crate::daemon::{self, DaemonError};

pub async fn daemon(cli: &Cli, args: &DaemonArgs) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let url = connect::choose_url(cli.database_url.as_deref(), config.database.url.as_deref());
    let mut target =
        connect::resolve(url.as_deref(), config.database.connect_timeout.map(|d| d.0))?;
    target.session = config.session_timeouts();
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| config.api.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
        CliError::Usage(format!(
            "cannot listen on {listen}: {e}\n  help: set [api] listen or --listen to a free address"
        ))
    })?;
    daemon::run(config, target, listener)
        .await
        .map_err(|err| match err {
            DaemonError::Schedule(message) => CliError::Usage(message),
        })?;
    Ok(true)
}

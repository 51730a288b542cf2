//! `pgmaint init`: create or upgrade the state schema.

use super::{CliError, connect, load_config, print_json};
use crate::cli::Cli;
use crate::state;

pub async fn init(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let mut client = connect(cli, &config).await?;
    if crate::db::in_recovery(&client).await? {
        return Err(CliError::Failed("this server is a standby (pg_is_in_recovery() is true); run `pgmaint init` against the primary".into()));
    }
    let schema = &config.state_schema;
    let applied = state::init(&mut client, schema).await?;
    let version = state::latest_version();
    if cli.json {
        print_json(
            &serde_json::json!({ "schema": schema, "version": version, "applied": applied }),
        );
    } else if !cli.quiet {
        if applied.is_empty() {
            println!("State schema \"{schema}\" is up to date (version {version}).");
        } else {
            for step in &applied {
                println!("Applied state schema step {step} to \"{schema}\".");
            }
            println!("State schema \"{schema}\" is at version {version}.");
        }
    }
    Ok(true)
}

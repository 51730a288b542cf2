//! `pgmaint init`: create or upgrade the state schema.

use super::{CliError, connect, load_config, print_json};
use crate::cli::Cli;
use crate::output;
use crate::store;

pub async fn init(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let mut client = connect(cli, &config).await?;
    if crate::db::in_recovery(&client).await? {
        return Err(CliError::Failed("this server is a standby (pg_is_in_recovery() is true); run `pgmaint init` against the primary".into()));
    }
    let schema = &config.state_schema;
    let applied = store::init(&mut client, schema).await?;
    let version = store::latest_version();
    if cli.json {
        print_json(
            &serde_json::json!({ "schema": schema, "version": version, "applied": applied }),
        );
    } else if !cli.quiet {
        output::paragraph(&init_line(schema, version, &applied));
    }
    Ok(true)
}

/// One line, whatever the number of steps applied.
fn init_line(schema: &str, version: i32, applied: &[i32]) -> String {
    match applied {
        [] => format!("State schema \"{schema}\" is up to date (version {version})."),
        [step] => {
            format!("Applied state schema step {step} to \"{schema}\"; it is at version {version}.")
        }
        [first, .., last] if *first == 1 => format!(
            "Created state schema \"{schema}\" at version {version} (steps {first}-{last})."
        ),
        [first, .., last] => format!(
            "Upgraded state schema \"{schema}\" to version {version} (steps {first}-{last})."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::init_line;

    #[test]
    fn init_says_what_it_did_in_one_line() {
        let steps: Vec<i32> = (1..=10).collect();
        assert_eq!(
            init_line("pgmaint", 10, &steps),
            "Created state schema \"pgmaint\" at version 10 (steps 1-10)."
        );
        assert_eq!(
            init_line("pgmaint", 10, &[9, 10]),
            "Upgraded state schema \"pgmaint\" to version 10 (steps 9-10)."
        );
        assert!(!init_line("pgmaint", 10, &[]).contains('\n'));
    }
}

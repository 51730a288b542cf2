//! `pgmaint notify test NAME`: send a test message through a notifier, to
//! check its URL, SMTP server and credentials before a failure needs them.

use super::{CliError, load_config, print_json};
use crate::cli::Cli;
use crate::notify::{self, Event};

pub async fn test(cli: &Cli, name: &str) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let Some(notifier) = config.notifiers.iter().find(|n| n.name == name) else {
        let names: Vec<&str> = config.notifiers.iter().map(|n| n.name.as_str()).collect();
        return Err(CliError::Usage(format!(
            "no notifier named \"{name}\"; configured notifiers: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let event = Event {
        level: "warning",
        title: format!("pgmaint: test message from notifier {name}"),
        text: "If you can read this, pgmaint's notifications reach you.".into(),
        details: serde_json::json!({ "test": true, "notifier": name }),
    };
    let (result, attempts) = notify::send_one(notifier, &event).await;
    if cli.json {
        print_json(
            &serde_json::json!({ "notifier": name, "ok": result.is_ok(), "attempts": attempts, "error": result.as_ref().err() }),
        );
    } else if !cli.quiet {
        match &result {
            Ok(()) => crate::output::paragraph(&format!("Sent a test message through {name}.")),
            Err(err) => {
                crate::output::eprint_wrapped(&format!("{name}: {err} (after {attempts} attempts)"))
            }
        }
    }
    Ok(result.is_ok())
}

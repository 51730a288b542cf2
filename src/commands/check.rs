//! `pgmaint check`: the config against the live database. Read-only; lists
//! every problem and exits 2 when there is one.

use super::{connect, load_config, print_json, CliError};
use crate::cli::Cli;
use crate::config::Problems;

pub async fn check(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let client = connect(cli, &config).await?;
    let mut problems = Vec::new();
    for task in &config.tasks {
        for found in task.spec.check(&client).await {
            let problem = config.problem(&["tasks", &task.name, found.key], found.message);
            problems.push(match found.help {
                Some(help) => problem.with_help(help),
                None => problem,
            });
        }
    }
    let state_note = match crate::state::ensure_ready(&client, &config.state_schema).await {
        Ok(()) => None,
        Err(err) => Some(err.to_string()),
    };
    if cli.json {
        print_json(&serde_json::json!({
            "ok": problems.is_empty(),
            "tasks": config.tasks.len(),
            "problems": problems.iter().map(|p| serde_json::json!({
                "place": p.place, "key": p.key, "message": p.message, "help": p.help,
            })).collect::<Vec<_>>(),
            "state": state_note,
        }));
    } else if problems.is_empty() && !cli.quiet {
        println!("ok: {} task(s) checked against the database; no problems found", config.tasks.len());
        if let Some(note) = &state_note {
            println!("note: {note}");
        }
    }
    if problems.is_empty() {
        Ok(true)
    } else {
        let count = problems.len();
        let text = Problems(problems).to_string();
        Err(CliError::Usage(format!("{text}\n{count} problem(s) found; nothing was changed")))
    }
}

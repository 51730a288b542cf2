//! `pgmaint check`: the config against the live database. Read-only; lists
//! every problem and exits 2 when there is one.

use tokio_postgres::Client;

use super::{CliError, connect, load_config, print_json};
use crate::cli::Cli;
use crate::config::{Config, Problem, Problems, TaskConfig};

/// Every problem the live database shows in these tasks' config, each
/// placed at its key in the file.
pub async fn live_problems(
    client: &Client,
    config: &Config,
    tasks: &[&TaskConfig],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for task in tasks {
        for found in task.spec.check(client).await {
            let problem = config.problem(&["tasks", &task.name, found.key], found.message);
            problems.push(match found.help {
                Some(help) => problem.with_help(help),
                None => problem,
            });
        }
    }
    problems
}

/// The usage error that lists problems and says nothing was changed.
pub fn refuse(problems: Vec<Problem>) -> CliError {
    let count = problems.len();
    let text = Problems(problems).to_string();
    CliError::Usage(format!(
        "{text}\n{count} problem(s) found; nothing was changed"
    ))
}

pub async fn check(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let client = connect(cli, &config).await?;
    let all: Vec<&TaskConfig> = config.tasks.iter().collect();
    let problems = live_problems(&client, &config, &all).await;
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
        println!(
            "ok: {} task(s) checked against the database; no problems found",
            config.tasks.len()
        );
        if let Some(note) = &state_note {
            println!("note: {note}");
        }
    }
    if problems.is_empty() {
        Ok(true)
    } else {
        Err(refuse(problems))
    }
}

//! `pgmaint check`: the config against the live database. Read-only; lists
//! every problem and exits 2 when there is one.

use super::{CliError, connect, load_config, print_json};
use crate::cli::Cli;
use crate::config::{Config, Problem, Problems};
use crate::runner;

/// A critical task in a schedule that does not allow it: its fires leave
/// it out, which is a mistake in the config unless said otherwise.
fn schedule_problems(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for schedule in &config.schedules {
        for task in schedule.tasks.iter().filter_map(|t| config.task(t)) {
            if let Some(reason) = runner::left_out_by_schedule(task, schedule) {
                problems.push(
                    config
                        .problem(
                            &["schedules", &schedule.name, "tasks"],
                            format!("{reason}: its fires leave it out"),
                        )
                        .with_help(format!(
                            "set `allow_critical = true` in [schedules.{}] to run it unattended, or remove it from `tasks` and run it with `pgmaint run {} --yes`",
                            schedule.name, task.name
                        )),
                );
            }
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
    let mut problems = schedule_problems(&config);
    // A table another session has locked cannot be checked now; that is
    // not a config problem, but it is not a pass either.
    let mut busy = Vec::new();
    for task in &config.tasks {
        let check = runner::check_task(&client, &config, task).await;
        problems.extend(check.problems);
        busy.extend(check.busy);
    }
    let state_note = match crate::state::ensure_ready(&client, &config.state_schema).await {
        Ok(()) => None,
        Err(err) => Some(err.to_string()),
    };
    if cli.json {
        let listed = |list: &[Problem]| {
            list.iter()
                .map(|p| {
                    serde_json::json!({
                        "place": p.place, "key": p.key, "message": p.message, "help": p.help,
                    })
                })
                .collect::<Vec<_>>()
        };
        print_json(&serde_json::json!({
            "ok": problems.is_empty() && busy.is_empty(),
            "tasks": config.tasks.len(),
            "problems": listed(&problems),
            "busy": listed(&busy),
            "state": state_note,
        }));
    } else if problems.is_empty() && busy.is_empty() && !cli.quiet {
        println!(
            "ok: {} task(s) checked against the database; no problems found",
            config.tasks.len()
        );
        if let Some(note) = &state_note {
            println!("note: {note}");
        }
    }
    if !problems.is_empty() {
        if !busy.is_empty() && !cli.json {
            eprintln!("{}", Problems(busy));
        }
        return Err(refuse(problems));
    }
    if !busy.is_empty() {
        let count = busy.len();
        return Err(CliError::Failed(format!(
            "{}\n{count} check(s) could not finish: a lock another session holds stayed busy past lock_timeout; try again later",
            Problems(busy)
        )));
    }
    Ok(true)
}

//! `pgmaint history`: past runs from the state schema. Dry runs are
//! recorded like every run, but every `plan` is one, so they are shown
//! only with `--all`.

use super::{CliError, connect, load_config, print_json};
use crate::cli::{Cli, HistoryArgs};
use crate::output;
use crate::store::{self, HistoryFilter, RunRecord};

pub async fn history(cli: &Cli, args: &HistoryArgs) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let mut client = connect(cli, &config).await?;
    let schema = &config.state_schema;
    store::ensure_ready(&client, schema).await?;
    if !crate::db::in_recovery(&client).await? {
        store::mark_interrupted(&mut client, schema).await?;
    }
    let filter = HistoryFilter {
        task: args.task.clone(),
        status: args.status.clone(),
        schedule: args.schedule.clone(),
        trigger: args.trigger.clone(),
        dry_runs: args.all,
        limit: args.limit.max(1),
    };
    let runs = store::history_filtered(&client, schema, &filter).await?;
    if cli.json {
        print_json(&serde_json::json!({ "runs": runs }));
        return Ok(true);
    }
    if runs.is_empty() {
        let hidden = if args.all {
            0
        } else {
            store::hidden_dry_runs(&client, schema, &filter).await?
        };
        output::paragraph(&nothing_found(args, &config, hidden));
        return Ok(true);
    }
    print_runs(&runs);
    Ok(true)
}

/// What an empty history says: which filter found nothing, and where the
/// runs might be instead.
fn nothing_found(args: &HistoryArgs, config: &crate::config::Config, hidden: i64) -> String {
    let mut what = Vec::new();
    if let Some(status) = &args.status {
        what.push(format!("with status {status}"));
    }
    if let Some(schedule) = &args.schedule {
        what.push(format!("fired by schedule \"{schedule}\""));
    }
    if let Some(trigger) = &args.trigger {
        what.push(format!("started by {trigger}"));
    }
    let runs = if args.all {
        "runs"
    } else {
        "runs (dry runs aside)"
    };
    let mut text = match &args.task {
        Some(task) => format!("Task \"{task}\" has no {runs} recorded"),
        None if what.is_empty() => format!("No {runs} recorded yet"),
        None => format!("No {runs} recorded"),
    };
    if !what.is_empty() {
        text.push(' ');
        text.push_str(&what.join(", "));
    }
    text.push('.');
    if let Some(task) = &args.task
        && config.path.is_some()
        && config.task(task).is_none()
    {
        let names: Vec<&str> = config.tasks.iter().map(|t| t.name.as_str()).collect();
        text.push_str(&format!(
            " It is not in the config; configured tasks: {}.",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    if hidden > 0 {
        text.push_str(&format!(" {hidden} dry run(s) match; `--all` shows them."));
    } else if args.task.is_none() && what.is_empty() {
        text.push_str(" Try `pgmaint run --all`.");
    }
    text
}

fn print_runs(runs: &[RunRecord]) {
    let mut table = output::Table::new(&[
        "run",
        "started (UTC)",
        "by",
        "status",
        "task",
        "task status",
        "rows",
        "batches",
        "duration",
    ])
    .optional(&["by", "duration", "batches"]);
    for run in runs {
        let mode = if run.dry_run { " (dry run)" } else { "" };
        let by = match &run.schedule {
            Some(schedule) => format!("{} {schedule}", run.trigger),
            None => format!("{} {}", run.trigger, run.triggered_by),
        };
        let first = [
            run.run_id.to_string(),
            run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            by,
            format!("{}{mode}", run.status),
        ];
        if run.tasks.is_empty() {
            table.add_row(first.iter().cloned().chain(["-".to_string()]));
        }
        for (i, task) in run.tasks.iter().enumerate() {
            let lead: Vec<String> = if i == 0 {
                first.to_vec()
            } else {
                vec![String::new(); 4]
            };
            table.add_row(
                lead.into_iter().chain([
                    task.name.clone(),
                    task.status.clone(),
                    output::count(task.rows as u64),
                    output::count(task.batches as u64),
                    task.duration_ms
                        .map(|d| output::duration_ms(d as u64))
                        .unwrap_or_default(),
                ]),
            );
        }
    }
    table.print();
    for run in runs.iter().filter(|r| r.error.is_some()) {
        output::paragraph(&format!(
            "run {}: {}",
            run.run_id,
            run.error.as_deref().unwrap_or_default()
        ));
    }
}

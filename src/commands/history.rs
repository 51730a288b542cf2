//! `pgmaint history`: past runs from the state schema.

use super::{CliError, connect, load_config, print_json};
use crate::cli::{Cli, HistoryArgs};
use crate::output;
use crate::state;

pub async fn history(cli: &Cli, args: &HistoryArgs) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let client = connect(cli, &config).await?;
    let schema = &config.state_schema;
    state::ensure_ready(&client, schema).await?;
    if !crate::db::in_recovery(&client).await? {
        state::mark_interrupted(&client, schema).await?;
    }
    let runs = state::history(&client, schema, args.task.as_deref(), args.limit.max(1)).await?;
    if cli.json {
        print_json(&serde_json::json!({ "runs": runs }));
        return Ok(true);
    }
    if runs.is_empty() {
        println!("No runs recorded yet. Try `pgmaint plan` or `pgmaint run --all`.");
        return Ok(true);
    }
    let mut table = output::table(&[
        "run",
        "started (UTC)",
        "by",
        "status",
        "task",
        "task status",
        "rows",
        "batches",
        "duration",
    ]);
    for run in &runs {
        let mode = if run.dry_run { " (dry run)" } else { "" };
        let first = [
            run.run_id.to_string(),
            run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            format!("{} {}", run.trigger, run.triggered_by),
            format!("{}{mode}", run.status),
        ];
        if run.tasks.is_empty() {
            table.add_row(
                first
                    .iter()
                    .cloned()
                    .chain(["-".into(), "".into(), "".into(), "".into(), "".into()])
                    .collect::<Vec<_>>(),
            );
        }
        for (i, task) in run.tasks.iter().enumerate() {
            let lead: Vec<String> = if i == 0 {
                first.to_vec()
            } else {
                vec![String::new(); 4]
            };
            table.add_row(
                lead.into_iter()
                    .chain([
                        task.name.clone(),
                        task.status.clone(),
                        output::count(task.rows as u64),
                        output::count(task.batches as u64),
                        task.duration_ms
                            .map(|d| output::duration_ms(d as u64))
                            .unwrap_or_default(),
                    ])
                    .collect::<Vec<_>>(),
            );
        }
    }
    println!("{table}");
    for run in runs.iter().filter(|r| r.error.is_some()) {
        println!(
            "run {}: {}",
            run.run_id,
            run.error.as_deref().unwrap_or_default()
        );
    }
    Ok(true)
}

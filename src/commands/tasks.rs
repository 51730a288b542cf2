//! `pgmaint tasks`: the configured tasks at a glance.

use serde::Serialize;

use super::{CliError, load_config, print_json};
use crate::cli::Cli;
use crate::output;

#[derive(Serialize)]
struct TaskLine {
    name: String,
    kind: &'static str,
    target: String,
    severity: &'static str,
    backup: bool,
    enabled: bool,
    schedules: Vec<String>,
    description: Option<String>,
    spec: serde_json::Value,
}

pub async fn tasks(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let lines: Vec<TaskLine> = config
        .tasks
        .iter()
        .map(|t| TaskLine {
            name: t.name.clone(),
            kind: t.spec.kind().as_str(),
            target: t.spec.target(),
            severity: t.severity.as_str(),
            backup: t.backup,
            enabled: t.enabled,
            schedules: config
                .schedules
                .iter()
                .filter(|s| s.tasks.contains(&t.name))
                .map(|s| s.name.clone())
                .collect(),
            description: t.description.clone(),
            spec: serde_json::to_value(&t.spec).unwrap_or_default(),
        })
        .collect();
    if cli.json {
        print_json(&serde_json::json!({ "tasks": lines }));
        return Ok(true);
    }
    let mut table = output::table(&[
        "task",
        "kind",
        "target",
        "severity",
        "backup",
        "enabled",
        "schedules",
    ]);
    for line in &lines {
        table.add_row(vec![
            line.name.clone(),
            line.kind.to_string(),
            line.target.clone(),
            line.severity.to_string(),
            if line.backup { "yes" } else { "no" }.to_string(),
            if line.enabled { "yes" } else { "no" }.to_string(),
            line.schedules.join(", "),
        ]);
    }
    println!("{table}");
    Ok(true)
}

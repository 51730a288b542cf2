//! `pgmaint tasks`: the configured tasks at a glance.

use serde::Serialize;

use super::{CliError, load_config, print_json};
use crate::cli::Cli;
use crate::output;
use crate::tasks::refresh::{self, RefreshSpec};

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
    /// Refresh tasks: each view's last refresh by pgmaint, seconds ago.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_refresh: Option<std::collections::BTreeMap<String, f64>>,
}

/// Seconds as `45s`, `12min`, `3h`, `2 days`.
fn age(seconds: f64) -> String {
    match seconds as u64 {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}min", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

pub async fn tasks(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    // Refresh ages need the database; without it the list still shows.
    let ages = if config
        .tasks
        .iter()
        .any(|t| t.spec.downcast_ref::<RefreshSpec>().is_some())
    {
        match super::connect(cli, &config).await {
            Ok(client) => refresh::refresh_ages(&client, &config.state_schema)
                .await
                .ok(),
            Err(err) => {
                output::eprint_wrapped(&format!("(last refresh times need the database: {err})"));
                None
            }
        }
    } else {
        None
    };
    let lines: Vec<TaskLine> = config
        .tasks
        .iter()
        .map(|t| TaskLine {
            name: t.name.clone(),
            kind: t.spec.kind(),
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
            last_refresh: match (t.spec.downcast_ref::<RefreshSpec>(), &ages) {
                (Some(spec), Some(ages)) => Some(
                    ages.iter()
                        .filter(|(view, _)| {
                            spec.views.is_empty()
                                || spec
                                    .views
                                    .iter()
                                    .any(|v| *view == v || view.ends_with(&format!(".{v}")))
                        })
                        .map(|(view, secs)| (view.clone(), *secs))
                        .collect(),
                ),
                _ => None,
            },
        })
        .collect();
    if cli.json {
        print_json(&serde_json::json!({ "tasks": lines }));
        return Ok(true);
    }
    let refreshes = lines.iter().any(|l| l.last_refresh.is_some());
    let mut headers = vec![
        "task",
        "kind",
        "target",
        "severity",
        "backup",
        "enabled",
        "schedules",
    ];
    if refreshes {
        headers.push("last refresh");
    }
    let mut table = output::Table::new(&headers).optional(&[
        "severity",
        "schedules",
        "last refresh",
        "enabled",
        "backup",
    ]);
    for line in &lines {
        table.add_row([
            line.name.clone(),
            line.kind.to_string(),
            line.target.clone(),
            line.severity.to_string(),
            if line.backup { "yes" } else { "no" }.to_string(),
            if line.enabled { "yes" } else { "no" }.to_string(),
            line.schedules.join(", "),
            line.last_refresh
                .as_ref()
                .map(|views| {
                    if views.is_empty() {
                        "never".to_string()
                    } else {
                        views
                            .iter()
                            .map(|(v, s)| format!("{v}: {} ago", age(*s)))
                            .collect::<Vec<_>>()
                            .join("\n")
                    }
                })
                .unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(true)
}

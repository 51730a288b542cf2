//! `pgmaint schedules`: each schedule with its next five fire times, in its
//! own time zone and in UTC.

use serde::Serialize;

use super::{CliError, load_config, print_json};
use crate::cli::Cli;
use crate::output;
use crate::runner;
use crate::schedule::Schedule;

#[derive(Serialize)]
struct Line {
    name: String,
    cron: String,
    timezone: String,
    enabled: bool,
    tasks: Vec<String>,
    /// Tasks listed that the schedule's fires leave out, and why.
    excluded: Vec<Excluded>,
    next: Vec<Fire>,
}

#[derive(Serialize)]
struct Excluded {
    task: String,
    reason: String,
}

#[derive(Serialize)]
struct Fire {
    local: String,
    utc: String,
}

pub async fn schedules(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let now = chrono::Utc::now();
    let mut lines = Vec::new();
    for s in &config.schedules {
        let schedule = Schedule::new(s).map_err(CliError::Usage)?;
        let next = schedule
            .upcoming(now, 5)
            .into_iter()
            .map(|t| Fire {
                local: t
                    .with_timezone(&schedule.tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string(),
                utc: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            })
            .collect();
        let excluded = s
            .tasks
            .iter()
            .filter_map(|name| config.task(name))
            .filter_map(|task| {
                runner::left_out_by_schedule(task, s).map(|reason| Excluded {
                    task: task.name.clone(),
                    reason,
                })
            })
            .collect();
        lines.push(Line {
            name: s.name.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            enabled: s.enabled,
            tasks: s.tasks.clone(),
            excluded,
            next,
        });
    }
    if cli.json {
        print_json(&serde_json::json!({ "schedules": lines }));
        return Ok(true);
    }
    let mut table =
        output::Table::new(&["schedule", "cron", "tasks", "next fires (local)", "(UTC)"])
            .optional(&["(UTC)"])
            .unwrapped(&["next fires (local)", "(UTC)"]);
    for line in &lines {
        table.add_row([
            format!(
                "{}{}",
                line.name,
                if line.enabled { "" } else { " (disabled)" }
            ),
            format!("{}\n{}", line.cron, line.timezone),
            line.tasks
                .iter()
                .map(|task| {
                    if line.excluded.iter().any(|e| &e.task == task) {
                        format!("{task} (excluded: critical, needs allow_critical = true)")
                    } else {
                        task.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            line.next
                .iter()
                .map(|f| f.local.clone())
                .collect::<Vec<_>>()
                .join("\n"),
            line.next
                .iter()
                .map(|f| f.utc.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        ]);
    }
    table.print();
    Ok(true)
}

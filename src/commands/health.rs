//! `pgmaint health` and `pgmaint snapshot`.

use std::io::IsTerminal;

use super::{CliError, connect, load_config, print_json};
use crate::cli::{Cli, HealthArgs};
use crate::health::{self, CheckName, Level, Report};
use crate::output::{self, TableCell};
use comfy_table::Color;

pub async fn health(cli: &Cli, args: &HealthArgs) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let mut only = Vec::new();
    let mut only_custom = Vec::new();
    for name in &args.checks {
        if config.health.custom.iter().any(|c| &c.name == name) {
            only_custom.push(name.clone());
            continue;
        }
        let Some(check) = CheckName::parse(name) else {
            let custom: Vec<&str> = config
                .health
                .custom
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            let custom = if custom.is_empty() {
                String::new()
            } else {
                format!("; custom checks: {}", custom.join(", "))
            };
            return Err(CliError::Usage(format!(
                "there is no health check named \"{name}\"\n  help: checks are: {}{custom}",
                CheckName::list()
            )));
        };
        only.push(check);
    }
    let client = connect(cli, &config).await?;
    let report = health::run_selected(&client, &config, &only, &only_custom, args.exact)
        .await
        .listed(args.all);
    if cli.json {
        print_json(&report);
    } else if !cli.quiet {
        print_report(&report);
    }
    let fail_at = match args.fail_on.as_deref() {
        Some("warning") => Some(Level::Warning),
        Some("critical") => Some(Level::Critical),
        _ => None,
    };
    let worst = report
        .checks
        .iter()
        .map(|c| {
            if c.status == Level::Unknown {
                Level::Ok
            } else {
                c.status
            }
        })
        .max()
        .unwrap_or(Level::Ok);
    Ok(fail_at.is_none_or(|level| worst < level))
}

/// Checks grouped by status, worst first, with colour on a terminal.
fn print_report(report: &Report) {
    let colour = std::io::stdout().is_terminal();
    let paint = |level: Level, text: &str| -> String {
        if !colour {
            return text.to_string();
        }
        let code = match level {
            Level::Critical => "31",
            Level::Warning => "33",
            Level::Unknown => "35",
            Level::Ok => "32",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    let cell_colour = |level: Level| {
        colour.then_some(match level {
            Level::Critical => Color::Red,
            Level::Warning => Color::Yellow,
            Level::Unknown => Color::Magenta,
            Level::Ok => Color::Green,
        })
    };
    let width = output::stdout_width();
    let mut checks: Vec<_> = report.checks.iter().collect();
    checks.sort_by_key(|c| std::cmp::Reverse(c.status));
    output::println(&format!(
        "Health: {}",
        paint(report.status, report.status.as_str())
    ));
    let mut current = None;
    for check in checks {
        if current != Some(check.status) {
            current = Some(check.status);
            output::println("");
            output::println(&paint(check.status, &check.status.as_str().to_uppercase()));
        }
        output::println(&output::wrap(
            &format!("  {}: {}", check.name, check.summary),
            width,
        ));
        // `listed` has already left out the ok findings unless --all.
        let problems: Vec<_> = check.findings.iter().collect();
        if problems.is_empty() {
            continue;
        }
        let mut table = output::Table::new(&["", "object", "value", "threshold", "advice"])
            .optional(&["advice", "threshold"]);
        for finding in problems.iter().take(20) {
            table.add_row([
                TableCell::coloured(finding.status.as_str(), cell_colour(finding.status)),
                finding.object.clone().into(),
                finding.value.clone().into(),
                finding.threshold.clone().into(),
                finding.advice.clone().into(),
            ]);
        }
        // Indented under its check, so four columns fewer.
        for line in table.render(width.map(|w| w.saturating_sub(4))).lines() {
            output::println(&format!("    {line}"));
        }
        if problems.len() > 20 {
            output::println(&format!(
                "    ... and {} more (--json lists them all)",
                problems.len() - 20
            ));
        }
    }
}

pub async fn snapshot(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let mut client = connect(cli, &config).await?;
    crate::store::ensure_ready(&client, &config.state_schema).await?;
    // The custom checks' findings are kept with the snapshot.
    let custom: Vec<String> = config
        .health
        .custom
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let checks = if custom.is_empty() {
        Vec::new()
    } else {
        health::run_selected(&client, &config, &[], &custom, false)
            .await
            .checks
    };
    let snapshot = health::snapshot::take(&mut client, &config, &checks).await?;
    if cli.json {
        print_json(&snapshot);
    } else if !cli.quiet {
        output::paragraph(&format!(
            "Snapshot {}: {} relations{}; {} old snapshot(s) pruned.",
            snapshot.id,
            snapshot.relations,
            snapshot
                .statements
                .map(|n| format!(", {n} pg_stat_statements entries"))
                .unwrap_or_else(|| " (pg_stat_statements is not installed)".into()),
            snapshot.pruned
        ));
    }
    Ok(true)
}

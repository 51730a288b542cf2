//! `pgmaint run` and `pgmaint plan` (a run with `--dry-run`).

use super::{CliError, connect, load_config, print_json};
use crate::cli::{Cli, PlanArgs, RunArgs, Selection};
use crate::config::{Config, TaskConfig};
use crate::output::{self, Progress};
use crate::runner::{self, Confirmation, Refusal, RunError, RunReport, RunRequest};
use crate::state::Trigger;
use crate::status::Status;
use crate::stop::Stop;

pub async fn run(cli: &Cli, args: &RunArgs) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let tasks = select(&config, &args.selection)?;
    let mut confirmation = if args.yes {
        Confirmation::Yes
    } else {
        Confirmation::None
    };
    let unconfirmed: Vec<&str> = runner::unconfirmed(&tasks, args.dry_run, confirmation)
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    if !unconfirmed.is_empty() {
        confirm(cli, &config, &unconfirmed).await?;
        confirmation = Confirmation::Yes;
    }
    let request = RunRequest {
        tasks,
        dry_run: args.dry_run,
        batch_size: args.batch_size,
        max_runtime: args.max_runtime.map(|d| d.0),
        trigger: Trigger::cli(&command_line()),
        confirmation,
        check_first: true,
        verbose: cli.verbose > 0,
        started: None,
    };
    execute(cli, &config, request).await
}

/// The help of a refused critical task, in command-line terms.
fn confirm_help(critical: &[&str]) -> String {
    format!(
        "  help: review `pgmaint plan {}`, then pass --yes",
        critical.join(" ")
    )
}

/// A critical task runs only when confirmed: `--yes`, or on a terminal a
/// yes/no asked after showing the plan. Anything else changes nothing.
async fn confirm(cli: &Cli, config: &Config, critical: &[&str]) -> Result<(), CliError> {
    use std::io::{BufRead, IsTerminal, Write};
    let names = critical.join(", ");
    let interactive =
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && !cli.json;
    if !interactive {
        return Err(CliError::Usage(format!(
            "critical task(s) {names} run only when confirmed, and there is no terminal to ask on; nothing was changed\n{}",
            confirm_help(critical)
        )));
    }
    let request = RunRequest {
        tasks: critical
            .iter()
            .filter_map(|name| config.task(name))
            .collect(),
        dry_run: true,
        batch_size: None,
        max_runtime: None,
        trigger: Trigger::cli(&command_line()),
        confirmation: Confirmation::None,
        check_first: true,
        verbose: cli.verbose > 0,
        started: None,
    };
    execute(cli, config, request).await?;
    eprint!(
        "\n{names} {} critical. Run now? [y/N] ",
        if critical.len() == 1 { "is" } else { "are" }
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Usage("not confirmed; nothing was changed".into()))
    }
}

pub async fn plan(cli: &Cli, args: &PlanArgs) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let selection = Selection {
        tasks: args.tasks.clone(),
        schedule: None,
        all: args.tasks.is_empty(),
    };
    let request = RunRequest {
        tasks: select(&config, &selection)?,
        dry_run: true,
        batch_size: None,
        max_runtime: None,
        trigger: Trigger::cli(&command_line()),
        confirmation: Confirmation::None,
        check_first: true,
        verbose: cli.verbose > 0,
        started: None,
    };
    execute(cli, &config, request).await
}

/// The command line as recorded in the audit trail. The connection URL may
/// hold a password, so its value is never recorded.
pub(super) fn command_line() -> String {
    redact_command_line(std::env::args().skip(1))
}

fn redact_command_line(args: impl Iterator<Item = String>) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in args {
        if hide_next {
            out.push("<url>".to_string());
            hide_next = false;
        } else if arg == "--database-url" {
            hide_next = true;
            out.push(arg);
        } else if arg.starts_with("--database-url=") {
            out.push("--database-url=<url>".to_string());
        } else {
            out.push(arg);
        }
    }
    out.join(" ")
}

/// The tasks a selection names, in config order; unknown names are a usage
/// error that lists the configured ones.
fn select<'c>(config: &'c Config, selection: &Selection) -> Result<Vec<&'c TaskConfig>, CliError> {
    let known = || {
        config
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = &selection.schedule {
        let schedule = config.schedule(name).ok_or_else(|| {
            let names = config
                .schedules
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            CliError::Usage(format!(
                "no schedule named \"{name}\"; configured schedules: {names}"
            ))
        })?;
        return Ok(schedule
            .tasks
            .iter()
            .filter_map(|t| config.task(t))
            .filter(|t| t.enabled)
            .collect());
    }
    if selection.all {
        return Ok(config.tasks.iter().filter(|t| t.enabled).collect());
    }
    if selection.tasks.is_empty() {
        return Err(CliError::Usage(format!(
            "name the tasks to run, or pass --schedule NAME or --all\n  help: configured tasks: {}",
            known()
        )));
    }
    selection
        .tasks
        .iter()
        .map(|name| {
            config.task(name).ok_or_else(|| {
                CliError::Usage(format!(
                    "no task named \"{name}\" in the config; configured tasks: {}",
                    known()
                ))
            })
        })
        .collect()
}

async fn execute(cli: &Cli, config: &Config, request: RunRequest<'_>) -> Result<bool, CliError> {
    if request.tasks.is_empty() {
        if !cli.quiet && !cli.json {
            println!("No enabled tasks selected; nothing to do.");
        }
        return Ok(true);
    }
    let mut client = connect(cli, config).await?;
    let stop = Stop::default();
    stop.on_signals(|| {
        eprintln!("stopping after the current batch (signal again to stop at once)")
    });
    let progress = Progress::new(cli.json, cli.quiet);
    let dry_run = request.dry_run;
    let report = match runner::run(&mut client, config, request, &stop, &progress).await {
        Ok(report) => report,
        Err(RunError::Refused(Refusal::Standby)) => {
            if cli.json {
                print_json(
                    &serde_json::json!({ "run_id": null, "dry_run": dry_run, "status": "skipped", "tasks": [], "reason": "standby" }),
                );
            } else {
                eprintln!("{}", runner::STANDBY);
            }
            return Ok(true);
        }
        Err(RunError::Refused(Refusal::Problems(problems))) => {
            return Err(super::check::refuse(problems));
        }
        Err(RunError::Refused(Refusal::Unconfirmed(names))) => {
            let help = confirm_help(&names.iter().map(String::as_str).collect::<Vec<_>>());
            return Err(CliError::Usage(format!(
                "{}\n{help}",
                Refusal::Unconfirmed(names)
            )));
        }
        Err(err) => return Err(err.into()),
    };
    if cli.json {
        print_json(&report);
    } else if !cli.quiet {
        print_report(&report, cli.verbose > 0);
    }
    // A run stopped by max_runtime did what it was allowed to; a signal or
    // a failure did not finish the job.
    let stopped_by_signal = stop.requested().is_some() && report.status == Status::Cancelled;
    Ok(!matches!(report.status, Status::Failed | Status::Interrupted) && !stopped_by_signal)
}

fn print_report(report: &RunReport, verbose: bool) {
    let mut table = output::table(&[
        "task",
        "kind",
        "severity",
        "status",
        if report.dry_run {
            "rows (would change)"
        } else {
            "rows"
        },
        "batches",
        "duration",
    ]);
    for task in &report.tasks {
        let rows = if report.dry_run && task.details["rows_exact"] == false {
            format!("~{} (estimate)", output::count(task.rows))
        } else {
            output::count(task.rows)
        };
        table.add_row(vec![
            task.name.clone(),
            task.kind.to_string(),
            task.severity.as_str().to_string(),
            task.status.to_string(),
            rows,
            output::count(task.batches),
            output::duration_ms(task.duration_ms),
        ]);
    }
    let title = if report.dry_run { "Dry run" } else { "Run" };
    println!("{title} {} {}", report.run_id, report.status);
    println!("{table}");
    for task in &report.tasks {
        if let Some(error) = &task.error {
            println!("{}: {error}", task.name);
        }
        if let Some(reason) = task.details["reason"].as_str() {
            println!("{}: {reason}", task.name);
        }
        if task.retries > 0 {
            println!(
                "{}: {} batch attempt(s) could not get their locks and were retried",
                task.name, task.retries
            );
        }
        if report.dry_run && task.status == Status::Succeeded {
            print_plan(task, verbose);
        } else if !report.dry_run {
            print_outcome(task);
        }
        if let Some(ms) = task.details["longest_batch_ms"].as_u64()
            && verbose
        {
            println!(
                "{}: longest batch held its locks for {}",
                task.name,
                output::duration_ms(ms)
            );
        }
    }
    if report.dry_run {
        println!("Nothing was changed. `pgmaint run` with the same tasks would do the above.");
    }
}

fn print_plan(task: &runner::TaskReport, verbose: bool) {
    let details = &task.details;
    println!();
    if let Some(summary) = details["summary"].as_str() {
        println!("{}: {summary}", task.name);
    } else {
        let action = match details["action"].as_str() {
            Some("move") => format!(
                "move {} row(s) from {} to {}{}",
                output::count(task.rows),
                details["table"].as_str().unwrap_or("?"),
                details["archive_table"].as_str().unwrap_or("?"),
                details["export"]
                    .as_str()
                    .map(|dir| format!(" and to files in {dir}"))
                    .unwrap_or_default()
            ),
            Some("export") => format!(
                "move {} row(s) from {} to files in {}",
                output::count(task.rows),
                details["table"].as_str().unwrap_or("?"),
                details["export"].as_str().unwrap_or("?")
            ),
            _ => format!(
                "delete {} row(s) from {}",
                output::count(task.rows),
                details["table"].as_str().unwrap_or("?")
            ),
        };
        println!(
            "{} would {action}{}{}",
            task.name,
            if details["rows_exact"] == false {
                " (planner's estimate)"
            } else {
                ""
            },
            if details["backup"] == true {
                ", backing each batch up first"
            } else {
                ""
            }
        );
    }
    if let Some(cutoff) = details["cutoff"].as_str() {
        println!("  cutoff: rows older than {cutoff}");
    }
    if let Some(orphans) = details["orphans"].as_u64() {
        println!("  orphans: {}", output::count(orphans));
    }
    for view in details["views"].as_array().into_iter().flatten() {
        println!(
            "  {} {}: {}",
            view["view"].as_str().unwrap_or("?"),
            if view["concurrently"] == true {
                "CONCURRENTLY"
            } else {
                "plain"
            },
            view["reason"].as_str().unwrap_or("")
        );
    }
    for table in details["tables"].as_array().into_iter().flatten() {
        println!(
            "  {}: {} ({} dead rows, {} bytes)",
            table["table"].as_str().unwrap_or("?"),
            table["why"].as_str().unwrap_or(""),
            table["dead_rows"],
            output::count(table["size_bytes"].as_u64().unwrap_or(0))
        );
    }
    for index in details["indexes"].as_array().into_iter().flatten() {
        let bloat = match index["bloat"].as_f64() {
            Some(b) => format!(
                ", {:.0}% bloat ({})",
                b * 100.0,
                index["measured_by"].as_str().unwrap_or("?")
            ),
            None => String::new(),
        };
        println!(
            "  {} {}: {} ({} bytes{bloat})",
            index["action"].as_str().unwrap_or("?"),
            index["index"].as_str().unwrap_or("?"),
            index["why"].as_str().unwrap_or(""),
            output::count(index["size_bytes"].as_u64().unwrap_or(0))
        );
    }
    for (key, label) in [
        ("samples", "for example"),
        ("sample_keys", "sample keys"),
        ("files", "files"),
    ] {
        if let Some(samples) = details[key].as_array()
            && !samples.is_empty()
        {
            println!("  {label}:");
            for sample in samples {
                match sample.as_str() {
                    Some(text) => println!("    {text}"),
                    None => println!("    {sample}"),
                }
            }
        }
    }
    if let Some(statements) = details["statements"].as_array() {
        println!("  statements:");
        for statement in statements {
            let text = statement.as_str().unwrap_or_default();
            let text = if verbose {
                text.to_string()
            } else {
                text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
            };
            println!("    {text}");
        }
        if !details["parameters"].is_null() {
            println!("  parameters: {}", details["parameters"]);
        }
    }
}

/// What a finished task has to say beyond its row in the table: a summary
/// line, an orphan count, or the result rows of its SQL.
fn print_outcome(task: &runner::TaskReport) {
    let details = &task.details;
    if let Some(summary) = details["summary"].as_str() {
        println!("{}: {summary}", task.name);
    }
    if details["action"] == "report" {
        println!(
            "{}: {} orphan row(s) found (action = \"report\": nothing was deleted)",
            task.name,
            output::count(details["orphans"].as_u64().unwrap_or(0))
        );
        if let Some(keys) = details["sample_keys"].as_array()
            && !keys.is_empty()
        {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            println!("  sample keys: {}", keys.join(", "));
        }
    }
    if let Some(id) = details["backup_id"].as_i64() {
        println!(
            "{}: removed rows are in backup {id} (`pgmaint restore {id}` puts them back)",
            task.name
        );
    }
    let result = &details["result"];
    if let Some(columns) = result["columns"].as_array()
        && !columns.is_empty()
    {
        let headers: Vec<&str> = columns.iter().map(|c| c.as_str().unwrap_or("?")).collect();
        let mut table = output::table(&headers);
        for row in result["rows"].as_array().into_iter().flatten() {
            table.add_row(
                row.as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>(),
            );
        }
        println!("{}: result", task.name);
        println!("{table}");
        if result["truncated"] == true {
            println!("  (more rows than shown; the run's details keep the first ones)");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_connection_url_is_never_recorded() {
        let args = [
            "run",
            "--database-url",
            "postgres://u:pw@h/d",
            "a",
            "--database-url=postgres://u:pw@h/d",
        ];
        let line = super::redact_command_line(args.iter().map(|s| s.to_string()));
        assert_eq!(line, "run --database-url <url> a --database-url=<url>");
    }
}

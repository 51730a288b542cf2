//! `pgmaint run` and `pgmaint plan` (a run with `--dry-run`).

use super::{CliError, connect, load_config, print_json};
use crate::cli::{Cli, PlanArgs, RunArgs, Selection};
use crate::config::{Config, Severity, TaskConfig};
use crate::output::{self, Progress};
use crate::runner::{self, RunReport, RunRequest};
use crate::state::Trigger;
use crate::status::Status;
use crate::stop::Stop;

pub async fn run(cli: &Cli, args: &RunArgs) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let tasks = select(&config, &args.selection)?;
    if !args.dry_run
        && !args.yes
        && let Some(task) = tasks.iter().find(|t| t.severity == Severity::Critical)
    {
        return Err(CliError::Usage(format!(
            "task \"{}\" is critical: it runs only when confirmed\n  help: review `pgmaint plan {}`, then pass --yes",
            task.name, task.name
        )));
    }
    let request = RunRequest {
        tasks,
        dry_run: args.dry_run,
        batch_size: args.batch_size,
        max_runtime: args.max_runtime.map(|d| d.0),
        trigger: Trigger::cli(&command_line()),
        verbose: cli.verbose > 0,
    };
    execute(cli, &config, request).await
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
        verbose: cli.verbose > 0,
    };
    execute(cli, &config, request).await
}

/// The command line as recorded in the audit trail. The connection URL may
/// hold a password, so its value is never recorded.
fn command_line() -> String {
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
    if crate::db::in_recovery(&client).await? {
        if cli.json {
            print_json(
                &serde_json::json!({ "run_id": null, "dry_run": request.dry_run, "status": "skipped", "tasks": [], "reason": "standby" }),
            );
        } else {
            eprintln!(
                "this server is a standby (pg_is_in_recovery() is true): pgmaint does not write here; nothing was done"
            );
        }
        return Ok(true);
    }
    let problems = super::check::live_problems(&client, config, &request.tasks).await;
    if !problems.is_empty() {
        return Err(super::check::refuse(problems));
    }
    let stop = Stop::default();
    stop.on_signals();
    let progress = Progress::new(cli.json, cli.quiet);
    let report = runner::run(&mut client, config, request, &stop, &progress).await?;
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
            "rows to delete"
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
        } else if let Some(ms) = task.details["longest_batch_ms"].as_u64()
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
    println!(
        "{} would delete {} row(s) from {}{}",
        task.name,
        output::count(task.rows),
        details["table"].as_str().unwrap_or("?"),
        if details["rows_exact"] == false {
            " (planner's estimate)"
        } else {
            ""
        }
    );
    if let Some(cutoff) = details["cutoff"].as_str() {
        println!("  cutoff: rows older than {cutoff}");
    }
    if let Some(samples) = details["samples"].as_array()
        && !samples.is_empty()
    {
        println!("  for example:");
        for sample in samples {
            println!("    {sample}");
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
        println!("  parameters: {}", details["parameters"]);
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

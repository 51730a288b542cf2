//! `pgmaint run` and `pgmaint plan` (a run with `--dry-run`).

use super::{CliError, load_config, print_json};
use crate::cli::{Cli, PlanArgs, RunArgs, Selection};
use crate::config::{Config, TaskConfig};
use crate::output::{self, Progress};
use crate::runner::{
    self, Confirmation, Notice, Refusal, RunError, RunReport, RunRequest, Started,
};
use crate::status::Status;
use crate::stop::Stop;
use crate::store::Trigger;
use crate::tasks::{OutcomeLine, PlanContext, PlanLine};

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
    let notice = notice(
        cli,
        &config,
        args.selection
            .schedule
            .as_deref()
            .and_then(|name| config.schedule(name)),
        &tasks,
    )?;
    let request = RunRequest {
        notice,
        tasks,
        dry_run: args.dry_run,
        batch_size: args.batch_size,
        max_runtime: args.max_runtime.map(|d| d.0),
        trigger: Trigger::cli(&command_line()),
        confirmation,
        check_first: true,
        verbose: cli.verbose > 0,
        started: None,
        lease: None,
        target: None,
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
    use std::io::IsTerminal;
    let names = critical.join(", ");
    let interactive =
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && !cli.json;
    if !interactive {
        return Err(CliError::Usage(format!(
            "critical task(s) {names} run only when confirmed, and there is no terminal to ask on; nothing was changed\n{}",
            confirm_help(critical)
        )));
    }
    let tasks: Vec<&TaskConfig> = critical
        .iter()
        .filter_map(|name| config.task(name))
        .collect();
    let request = RunRequest {
        notice: notice(cli, config, None, &tasks)?,
        tasks,
        dry_run: true,
        batch_size: None,
        max_runtime: None,
        trigger: Trigger::cli(&command_line()),
        confirmation: Confirmation::None,
        check_first: true,
        verbose: cli.verbose > 0,
        started: None,
        lease: None,
        target: None,
    };
    execute(cli, config, request).await?;
    super::ask_yes(&format!(
        "\n{names} {} critical. Run now?",
        if critical.len() == 1 { "is" } else { "are" }
    ))
}

pub async fn plan(cli: &Cli, args: &PlanArgs) -> Result<bool, CliError> {
    let config = load_config(cli, true)?;
    let selection = Selection {
        tasks: args.tasks.clone(),
        schedule: None,
        all: args.tasks.is_empty(),
    };
    let tasks = select(&config, &selection)?;
    let request = RunRequest {
        notice: notice(cli, &config, None, &tasks)?,
        tasks,
        dry_run: true,
        batch_size: None,
        max_runtime: None,
        trigger: Trigger::cli(&command_line()),
        confirmation: Confirmation::None,
        check_first: true,
        verbose: cli.verbose > 0,
        started: None,
        lease: None,
        target: None,
    };
    execute(cli, &config, request).await
}

/// Who started the run, for the runner's log lines and notifications: a
/// `--schedule` run routes its outcome as the schedule's fires do.
fn notice(
    cli: &Cli,
    config: &Config,
    schedule: Option<&crate::config::ScheduleConfig>,
    tasks: &[&TaskConfig],
) -> Result<Notice, CliError> {
    Ok(Notice {
        started: Started::Cli {
            schedule: schedule.cloned(),
            tasks: tasks.iter().map(|t| t.name.clone()).collect(),
        },
        origin: super::origin(cli, config)?,
    })
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
    let (target, named) = super::target(cli, config)?;
    // A task that needs a session runs on `[database] direct_url`; without
    // one, through what looks like a pooler, the run is refused.
    let needing = runner::needing_a_session(&request.tasks, request.dry_run);
    let target = match (&config.database.direct_url, needing.is_empty()) {
        (_, true) => target,
        (Some(direct), false) => {
            let mut direct = crate::connect::resolve(
                Some(direct),
                config.database.connect_timeout.map(|d| d.0),
            )?;
            direct.session = target.session;
            direct.direct = true;
            direct
        }
        (None, false) => {
            if let Some(seen) = crate::connect::detect_pooler(&target).await {
                return Err(CliError::Usage(runner::needs_direct_url(&needing, &seen)));
            }
            target
        }
    };
    let mut client = super::connect_to(&target, named).await?;
    // The run's leases, renewed on a connection of their own while it goes.
    let keeper = crate::lease::Keeper::start(
        &target,
        &config.state_schema,
        crate::store::LeaseOwner::new(),
    );
    let request = RunRequest {
        lease: Some(keeper.owner()),
        target: Some(&target),
        ..request
    };
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
        print_report(&report, config, cli.verbose > 0);
    } else {
        // Quiet hides progress, never errors.
        for task in report.tasks.iter().filter(|t| t.status == Status::Failed) {
            let error = task.error.as_deref().unwrap_or("failed");
            output::eprint_wrapped(&format!("error: task {}: {error}", task.name));
        }
    }
    // A run stopped by max_runtime did what it was allowed to; a signal or
    // a failure did not finish the job.
    let stopped_by_signal = stop.requested().is_some() && report.status == Status::Cancelled;
    Ok(!matches!(report.status, Status::Failed | Status::Interrupted) && !stopped_by_signal)
}

/// Prose is wrapped to 80 columns, or to a narrower terminal.
fn width() -> usize {
    output::stdout_width().map_or(80, |columns| columns.min(80))
}

fn print_report(report: &RunReport, config: &Config, verbose: bool) {
    if report.dry_run {
        print_dry_run(report, config, verbose);
        return;
    }
    // On a narrow terminal the severity (config, as `pgmaint tasks` shows
    // it) goes first, the kind next.
    let mut table = output::Table::new(&[
        "task", "kind", "severity", "status", "rows", "batches", "duration",
    ])
    .optional(&["kind", "severity"]);
    for task in &report.tasks {
        table.add_row([
            task.name.clone(),
            task.kind.to_string(),
            task.severity.as_str().to_string(),
            task.status.to_string(),
            output::count(task.rows),
            output::count(task.batches),
            output::duration_ms(task.duration_ms),
        ]);
    }
    output::println(&format!("Run {} {}", report.run_id, report.status));
    table.print();
    for task in &report.tasks {
        for line in notes(task) {
            say(&format!("{}: {line}", task.name));
        }
        print_outcome(task);
        if let Some(ms) = task.details["longest_batch_ms"].as_u64()
            && verbose
        {
            say(&format!(
                "{}: longest batch held its locks for {}",
                task.name,
                output::duration_ms(ms)
            ));
        }
    }
}

/// Prints a line of prose, wrapped with a hanging indent.
fn say(text: &str) {
    output::println(&wrap(text, "", "  "));
}

/// One line of a task's plan: prose, or an item of a list (a sample row,
/// a view, a file), indented under it. Both are wrapped to the width.
enum Line {
    Say(String),
    Item(String),
}

impl Line {
    fn render(&self) -> String {
        match self {
            Line::Say(text) => wrap(text, "  ", "    "),
            Line::Item(text) => wrap(text, "    ", "      "),
        }
    }
}

/// A dry run: one block per task saying what a run would do, in words;
/// the statements themselves only with `-v`.
fn print_dry_run(report: &RunReport, config: &Config, verbose: bool) {
    let tasks = report.tasks.len();
    output::println(&format!(
        "Dry run {} of {tasks} task{}: nothing was changed.",
        report.run_id,
        if tasks == 1 { "" } else { "s" }
    ));
    for task in &report.tasks {
        output::println("");
        let options = config
            .task(&task.name)
            .map(|t| t.options)
            .unwrap_or(crate::config::TaskOptions::BUILT_IN);
        for line in plan_lines(task, &options, verbose) {
            output::println(&line);
        }
    }
    output::println("");
    output::println(&wrap(
        &format!(
            "`pgmaint run` with the same tasks would do the above.{}",
            if verbose {
                ""
            } else {
                " `-v` adds the statements it would issue."
            }
        ),
        "",
        "",
    ));
}

/// The lines of one task's plan, none wider than the output.
fn plan_lines(
    task: &runner::TaskReport,
    options: &crate::config::TaskOptions,
    verbose: bool,
) -> Vec<String> {
    let details = &task.details;
    let mut out = vec![cut(&format!(
        "{} ({}, {})",
        task.name,
        task.kind,
        task.severity.as_str()
    ))];
    let context = PlanContext {
        name: &task.name,
        rows: task.rows,
        batches: task.batches,
        options,
    };
    let own =
        crate::tasks::registry::find(task.kind).and_then(|kind| kind.plan_lines(details, &context));
    let lines = if task.status != Status::Succeeded {
        std::iter::once(Line::Say(format!("{}:", capitalized(task.status.as_str()))))
            .chain(notes(task).into_iter().map(Line::Say))
            .collect()
    } else if let Some(own) = own {
        own.into_iter()
            .map(|line| match line {
                PlanLine::Say(text) => Line::Say(text),
                PlanLine::Item(text) => Line::Item(text),
            })
            .collect()
    } else {
        upkeep_plan(task)
    };
    out.extend(lines.iter().map(Line::render));
    if verbose {
        out.extend(statement_lines(details));
    }
    out
}

/// The plan of a kind that renders nothing of its own: its summary.
fn upkeep_plan(task: &runner::TaskReport) -> Vec<Line> {
    task.details["summary"]
        .as_str()
        .map(|summary| Line::Say(format!("{}.", capitalized(summary))))
        .into_iter()
        .collect()
}

/// With `-v`: the statements, then what each parameter of the batch
/// statements stands for.
fn statement_lines(details: &serde_json::Value) -> Vec<String> {
    let Some(statements) = details["statements"].as_array() else {
        return Vec::new();
    };
    let mut out = vec!["  Statements:".to_string()];
    for statement in statements {
        for line in statement.as_str().unwrap_or_default().lines() {
            out.push(wrap_sql(line, "    "));
        }
    }
    let params = &details["parameters"];
    if params.is_object() {
        out.push("  Parameters of both batch statements:".to_string());
        let batch_size = params["$3"].as_u64().map(output::count).unwrap_or_default();
        out.push(wrap(
            "$1 the first page of the batch's window",
            "    ",
            "       ",
        ));
        out.push(wrap("$2 the page after the window", "    ", "       "));
        out.push(wrap(
            &format!("$3 the batch size, {batch_size}: the LIMIT of the first form, which the second (a narrow window, deleted whole) does not use"),
            "    ",
            "       ",
        ));
        out.push(wrap(
            &match params["$4"].as_str() {
                Some(cutoff) => format!("$4 the cutoff, {cutoff}"),
                None => "$4 the cutoff: none for this task (NULL)".to_string(),
            },
            "    ",
            "       ",
        ));
    }
    out
}

/// What a task report says whatever its kind: its error, why it was
/// skipped, retries.
fn notes(task: &runner::TaskReport) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(error) = &task.error {
        lines.push(error.clone());
    }
    if let Some(reason) = task.details["reason"].as_str() {
        lines.push(reason.to_string());
    }
    if task.retries > 0 {
        lines.push(format!(
            "{} batch attempt(s) could not get their locks and were retried",
            task.retries
        ));
    }
    lines
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Wraps prose at spaces to 80 columns (or a narrower terminal): the
/// first line after `first`, the others after `rest`. Unlike
/// `output::wrap`, it wraps when stdout is a pipe too, and splits a word
/// longer than a line, so no line is ever wider.
pub(super) fn wrap(text: &str, first: &str, rest: &str) -> String {
    let columns = width();
    let mut lines: Vec<String> = Vec::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !empty && line.chars().count() + 1 + word.chars().count() > columns {
            lines.push(std::mem::replace(&mut line, rest.to_string()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        // A word longer than a whole line (a path, a URL) is split.
        let mut chars = word.chars().peekable();
        while chars.peek().is_some() {
            let room = columns.saturating_sub(line.chars().count()).max(1);
            line.extend(chars.by_ref().take(room));
            if chars.peek().is_some() {
                lines.push(std::mem::replace(&mut line, rest.to_string()));
            }
        }
        empty = false;
    }
    lines.push(line);
    lines.join("\n")
}

/// One line no wider than the output, cut with `…` if longer.
fn cut(line: &str) -> String {
    if line.chars().count() <= width() {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(width() - 1).collect();
    cut.push('…');
    cut
}

/// A line of SQL wrapped at spaces outside quotes (so a literal shows as
/// written), continuation lines indented two more.
fn wrap_sql(line: &str, indent: &str) -> String {
    let text = line.trim_end();
    let lead = text.len() - text.trim_start().len();
    let first = format!("{indent}{}", &text[..lead]);
    let rest = format!("{first}  ");
    // Words, each with whether a `--` comment began before it: such a word
    // starting a line goes after a `-- ` of its own, so a copied line is
    // still a comment.
    let mut words: Vec<(String, bool)> = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut commented_before = false;
    let mut previous = ' ';
    for c in text.trim_start().chars() {
        match (quote, c) {
            (None, ' ') if !comment || !word.is_empty() => {
                if !word.is_empty() {
                    words.push((std::mem::take(&mut word), commented_before));
                }
                commented_before = comment;
            }
            (None, ' ') => {}
            (None, '\'' | '"') if !comment => {
                quote = Some(c);
                word.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                word.push(c);
            }
            (None, '-') if previous == '-' => {
                comment = true;
                word.push(c);
            }
            (_, c) => word.push(c),
        }
        previous = c;
    }
    if !word.is_empty() {
        words.push((word, commented_before));
    }
    let columns = width();
    let mut out: Vec<String> = Vec::new();
    let mut current = first.clone();
    for (word, in_comment) in words {
        let at_start = current.trim().is_empty();
        if !at_start && current.chars().count() + 1 + word.chars().count() > columns {
            out.push(std::mem::replace(&mut current, rest.clone()));
            if in_comment {
                current.push_str("-- ");
            }
        } else if !at_start {
            current.push(' ');
        }
        current.push_str(&word);
    }
    out.push(current);
    out.join("\n")
}

/// What a finished task has to say beyond its row in the table: a summary
/// line, an orphan count, or the result rows of its SQL.
fn print_outcome(task: &runner::TaskReport) {
    let details = &task.details;
    if let Some(summary) = details["summary"].as_str() {
        say(&format!("{}: {summary}", task.name));
    }
    let own = crate::tasks::registry::find(task.kind)
        .map(|kind| kind.outcome_lines(details))
        .unwrap_or_default();
    for line in own {
        match line {
            OutcomeLine::Named(text) => say(&format!("{}: {text}", task.name)),
            OutcomeLine::Plain(text) => say(&text),
            OutcomeLine::Item(text) => output::println(&wrap(&text, "  ", "    ")),
            OutcomeLine::Block(text) => output::println(&text),
        }
    }
    if let Some(id) = details["backup_id"].as_i64() {
        if details["action"] == "set_null" {
            say(&format!(
                "{}: the values it set to NULL are in backup {id} (`pgmaint restore {id}` sets them back)",
                task.name
            ));
        } else {
            say(&format!(
                "{}: removed rows are in backup {id} (`pgmaint restore {id}` puts them back)",
                task.name
            ));
        }
    }
    if let Some(id) = details["export_id"].as_i64() {
        say(&format!(
            "{}: export {id} holds the rows it moved, in files (`pgmaint backups` lists them)",
            task.name
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prose_wraps_at_80_columns_and_keeps_every_word() {
        let text = "Would delete 5,000 rows of public.tokens in 8 batches of up to 700 rows, and a path /a/very/long/path/that/does/not/fit/on/one/line/of/eighty/columns/at/all/anywhere.csv";
        let wrapped = super::wrap(text, "  ", "    ");
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= 80),
            "{wrapped}"
        );
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("    ")));
        let joined: String = wrapped.split_whitespace().collect();
        assert_eq!(joined, text.split_whitespace().collect::<String>());
    }

    #[test]
    fn sql_wraps_outside_literals_only() {
        let line = format!(
            "DELETE FROM t WHERE {} AND note = 'a literal  with two spaces and many words in it, long enough to be split'",
            "x = 1 AND ".repeat(6)
        );
        let wrapped = super::wrap_sql(&line, "    ");
        assert!(
            wrapped.contains(
                "'a literal  with two spaces and many words in it, long enough to be split'"
            ),
            "{wrapped}"
        );
        assert!(wrapped.lines().count() > 1, "{wrapped}");
        let comment = format!(
            "x = 1 -- {}",
            "a comment that goes on and on past the end of the line ".repeat(2)
        );
        let wrapped = super::wrap_sql(&comment, "    ");
        assert!(wrapped.lines().count() > 1, "{wrapped}");
        assert!(
            wrapped
                .lines()
                .skip(1)
                .all(|l| l.trim_start().starts_with("-- ")),
            "{wrapped}"
        );
    }

    #[test]
    fn sample_rows_are_column_value_pairs_with_long_values_shortened() {
        let row = serde_json::json!({"id": 1, "at": "2026-11-25T03:51:35.682280+00:00", "token": "c4ca4238a0b923820dcc509a6f75849b", "used": null});
        assert_eq!(
            crate::tasks::walk_text::sample_row(&row),
            "at=2026-11-25 03:51:35+00 id=1 token=c4ca4238a0b923820dcc509… used=null"
        );
    }

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

//! `pgmaint migrate ...` with `format = "command"`: the application's own
//! migrator run through `migrate::command_runs` (its output streamed
//! through, then the schema changes it made, one line each), its ledger
//! read for `status`; `new`, `repair` and `baseline` left to the tool.

use std::io::IsTerminal;

use serde_json::json;
use tokio_postgres::Client;

use super::{CliError, print_json};
use crate::cli::{Cli, MigrateCommand, MigrateDownArgs, MigrateStatusArgs, MigrateUpArgs};
use crate::config::Config;
use crate::migrate::apply::Direction;
use crate::migrate::command::Invocation;
use crate::migrate::command_runs::{self, CommandSummary};
use crate::migrate::command_trace::{self, CommandTrace};
use crate::migrate::drops::Saved;
use crate::migrate::ledger::app::{AppLedger, AppLedgerView, AppState, ToolTask};
use crate::migrate::runs::Audit;
use crate::store::{self, LeaseOwner, Trigger};

struct Context<'a> {
    cli: &'a Cli,
    config: &'a Config,
    client: &'a Client,
    target: &'a crate::connect::Target,
}

pub(super) async fn migrate(
    cli: &Cli,
    config: &Config,
    command: &MigrateCommand,
) -> Result<bool, CliError> {
    let settings = &config.migrations;
    let refuse = |what, asked: &str| -> Result<bool, CliError> {
        Err(command_runs::left_to_the_tool(settings, what, asked).into())
    };
    match command {
        MigrateCommand::New { .. } => return refuse(ToolTask::New, "new"),
        MigrateCommand::Repair { .. } => return refuse(ToolTask::Repair, "repair"),
        MigrateCommand::Baseline { .. } => return refuse(ToolTask::Baseline, "baseline"),
        MigrateCommand::Drift => {
            return Err(crate::migrate::drift::unsupported_for_command().into());
        }
        MigrateCommand::Test(_) => {
            return Err(CliError::Usage(
                "migrate test replays migration files on a scratch cluster, and format = \"command\" migrations are the application's code, which pgmaint cannot replay; nothing was tested\n  help: run the migrator's up, down and up against a scratch database yourself; `migrate plan` traces its up on one".into(),
            ));
        }
        MigrateCommand::Lint(_) => {
            return Err(CliError::Usage(
                "format = \"command\" migrations are the application's code, not SQL files pgmaint can lint; nothing was linted\n  help: lint the SQL the migrator writes with its own tooling, or move the SQL into files of a format pgmaint reads".into(),
            ));
        }
        _ => {}
    }
    let (client, target) = super::migrate::session(cli, config).await?;
    store::ensure_ready(&client, &config.state_schema).await?;
    let ctx = Context {
        cli,
        config,
        client: &client,
        target: &target,
    };
    match command {
        MigrateCommand::Status(args) => status(&ctx, args).await,
        MigrateCommand::Plan(args) => {
            let plan = MigrateUpArgs {
                to: args.to.clone(),
                dry_run: true,
                allow_out_of_order: false,
                yes: false,
            };
            up(&ctx, &plan).await
        }
        MigrateCommand::Up(args) => up(&ctx, args).await,
        MigrateCommand::Down(args) => down(&ctx, args).await,
        MigrateCommand::New { .. }
        | MigrateCommand::Repair { .. }
        | MigrateCommand::Baseline { .. }
        | MigrateCommand::Lint(_)
        | MigrateCommand::Test(_)
        | MigrateCommand::Drift => unreachable!("refused above"),
    }
}

/// The ledger's name for messages, or what pgmaint looks for.
fn ledger_label(settings: &crate::migrate::Settings, ledger: Option<AppLedger>) -> String {
    match ledger {
        Some(l) => l.name(command_runs::ledger_table(settings)),
        None => format!(
            "none yet ({} not found)",
            AppLedger::ALL
                .iter()
                .map(|l| l.table())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn print_ledger(view: &AppLedgerView) {
    let mut table = crate::output::Table::new(&["VERSION", "NAME", "STATUS", "APPLIED AT"]);
    for e in &view.entries {
        let status = match e.status {
            AppState::Applied => match e.batch {
                Some(batch) => format!("applied (batch {batch})"),
                None => "applied".to_string(),
            },
            AppState::Failed => format!(
                "failed{}",
                e.logs
                    .as_deref()
                    .and_then(|l| l.lines().next())
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ),
            AppState::RolledBack => "rolled back".to_string(),
        };
        table.add_row([
            e.version.clone(),
            e.name.clone(),
            status,
            e.applied_at.clone().unwrap_or_default(),
        ]);
    }
    if !view.entries.is_empty() {
        table.print();
    }
    if view.locked == Some(true) {
        println!(
            "note: knex's lock table is locked: a knex migrator is running, or one died holding it (`npx knex migrate:unlock` frees it)"
        );
    }
}

async fn status(ctx: &Context<'_>, args: &MigrateStatusArgs) -> Result<bool, CliError> {
    let settings = &ctx.config.migrations;
    let command = command_runs::command_of(settings)?;
    let report = command_runs::status(ctx.client, settings, Some(ctx.target)).await?;
    let clean = report.is_clean();
    if ctx.cli.json {
        print_json(&json!({
            "format": "command",
            "ledger": report.ledger.map(|l| l.name(command.ledger_table.as_deref())),
            "command": {
                "up": command.up,
                "down": command.down,
                "status": command.status,
                "workdir": command.workdir.display().to_string(),
            },
            "migrations": report.view.entries,
            "locked": report.view.locked,
            "pending": null,
            "status_command": report.status_command,
        }));
    } else if !ctx.cli.quiet {
        let applied = report
            .view
            .entries
            .iter()
            .filter(|e| e.status == AppState::Applied)
            .count();
        let failed = report
            .view
            .entries
            .iter()
            .filter(|e| e.status == AppState::Failed)
            .count();
        println!(
            "The application's migrator (`{}`), ledger {}: {applied} applied{}; pending is known only to the migrator{}.",
            command.up,
            ledger_label(settings, report.ledger),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            },
            if command.status.is_some() {
                " (its status below)"
            } else {
                " ([migrations.command] status shows it here)"
            }
        );
        print_ledger(&report.view);
        if let Some(ledger) = report.ledger
            && !report.view.exists
        {
            println!(
                "note: {} does not exist yet: the migrator makes it when it first runs (if the migrator's config names its ledger otherwise, set [migrations.command] ledger_table)",
                ledger.table_or(command.ledger_table.as_deref())
            );
        }
        if let Some(s) = &report.status_command {
            println!(
                "\n$ {}{}",
                s.command,
                match s.exit_code {
                    Some(0) => String::new(),
                    Some(code) => format!("   (exit {code})"),
                    None => "   (ended by a signal)".to_string(),
                }
            );
            print!("{}", s.output);
            if !s.output.is_empty() && !s.output.ends_with('\n') {
                println!();
            }
        }
    }
    Ok(!args.exit_code || clean)
}

/// `--to`, `--steps` and `--allow-out-of-order` are the migrator's own
/// business: its command says how far it goes.
fn refuse_selection(flag: Option<&str>) -> Result<(), CliError> {
    match flag {
        None => Ok(()),
        Some(flag) => Err(CliError::Usage(format!(
            "{flag} selects files, and with format = \"command\" the migrator's own command says how far it goes; nothing was changed\n  help: put the target in [migrations.command] (e.g. `npx knex migrate:up NAME`), or run the migrator itself"
        ))),
    }
}

async fn up(ctx: &Context<'_>, args: &MigrateUpArgs) -> Result<bool, CliError> {
    refuse_selection(args.to.as_ref().map(|_| "--to"))?;
    refuse_selection(args.allow_out_of_order.then_some("--allow-out-of-order"))?;
    let settings = &ctx.config.migrations;
    let invocation = command_runs::invocation(settings, Direction::Up, ctx.target)?;
    if args.dry_run {
        return dry_run(ctx, &invocation, Direction::Up).await;
    }
    run(ctx, &invocation, Direction::Up).await
}

async fn down(ctx: &Context<'_>, args: &MigrateDownArgs) -> Result<bool, CliError> {
    refuse_selection(args.to.as_ref().map(|_| "--to"))?;
    refuse_selection(args.steps.map(|_| "--steps"))?;
    let settings = &ctx.config.migrations;
    let invocation = command_runs::invocation(settings, Direction::Down, ctx.target)?;
    if args.dry_run {
        return dry_run(ctx, &invocation, Direction::Down).await;
    }
    if !args.yes {
        let interactive =
            std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && !ctx.cli.json;
        if !interactive {
            return Err(CliError::Usage(format!(
                "running the down command `{}` runs only when confirmed, and there is no terminal to ask on; nothing was changed\n  help: review `pgmaint migrate down --dry-run`, then pass --yes",
                invocation.command
            )));
        }
        let _ = dry_run(ctx, &invocation, Direction::Down).await;
        super::ask_yes(&format!(
            "\nRun `{}` (what its trace on a scratch copy drops is backed up first)?",
            invocation.command
        ))?;
    }
    run(ctx, &invocation, Direction::Down).await
}

/// What a run would do, changing nothing: the command, where, with which
/// environment, and what the ledger says is applied.
async fn dry_run(
    ctx: &Context<'_>,
    invocation: &Invocation,
    direction: Direction,
) -> Result<bool, CliError> {
    let settings = &ctx.config.migrations;
    let ledger = command_runs::ledger_of(ctx.client, settings).await?;
    let view = match ledger {
        Some(l) => command_runs::read_ledger(ctx.client, settings, l).await?,
        None => AppLedgerView::default(),
    };
    let env = invocation.shown_env();
    let stop = crate::stop::Stop::default();
    stop.on_signals(|| eprintln!("Stopping: passing the stop on to the migrator on the copy."));
    let trace = traced(ctx, invocation, !ctx.cli.json && !ctx.cli.quiet, &stop).await?;
    if ctx.cli.json {
        print_json(&json!({
            "dry_run": true,
            "format": "command",
            "direction": direction,
            "command": invocation.command,
            "workdir": invocation.workdir.display().to_string(),
            "pgoptions": invocation.pgoptions(),
            "env": env.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "ledger": ledger.map(|l| l.name(command_runs::ledger_table(settings))),
            "applied": view.entries,
            "pending": null,
            "trace": trace,
        }));
        return Ok(true);
    }
    if ctx.cli.quiet {
        return Ok(true);
    }
    println!(
        "Would run `{}` (with sh -c) in {}",
        invocation.command,
        invocation.workdir.display()
    );
    println!(
        "  with PGOPTIONS=\"{}\" (every statement the migrator sends runs under [migrations] lock_timeout and statement_timeout)",
        invocation.pgoptions()
    );
    for (k, v) in env.iter().filter(|(k, _)| k != "PGOPTIONS") {
        println!("  and {k}={v}");
    }
    println!(
        "  after taking pgmaint's migration lock and checking for sessions holding the database's tables in open transactions;"
    );
    println!(
        "  the catalog is compared before and after, and the run is recorded in `pgmaint history`."
    );
    if let CommandTrace::Traced { drops, .. } = &trace
        && !drops.is_empty()
    {
        println!(
            "  what its trace drops is backed up first where it holds data: {}.",
            drops
                .iter()
                .map(command_trace::describe)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "Ledger {}: {} applied; which migrations are pending is known only to the migrator.",
        ledger_label(settings, ledger),
        view.entries
            .iter()
            .filter(|e| e.status == AppState::Applied)
            .count()
    );
    print_ledger(&view);
    Ok(true)
}

/// The migrator traced on a scratch copy of the live schema, and what it
/// drops there backed up on the live database, each said on stderr.
async fn trace_and_back_up(
    ctx: &Context<'_>,
    invocation: &Invocation,
    direction: Direction,
    print: bool,
    stop: &crate::stop::Stop,
) -> Result<(CommandTrace, Vec<Saved>), crate::migrate::MigrateError> {
    let trace = traced(ctx, invocation, print, stop).await?;
    let settings = &ctx.config.migrations;
    let backups = command_trace::back_up(
        ctx.client,
        settings,
        &ctx.config.state_schema,
        &trace,
        direction,
    )
    .await?;
    if print {
        for b in &backups {
            let what = match &b.column {
                Some(c) => format!("column {}.{c}", b.table),
                None => format!("table {}", b.table),
            };
            eprintln!(
                "Backed up {what}: {} row(s) as backup {} (`pgmaint restore {}` puts it back).",
                b.rows, b.backup_id, b.backup_id
            );
        }
    }
    Ok((trace, backups))
}

/// The migrator's command run on a scratch copy, and what it dropped
/// there said on stderr.
async fn traced(
    ctx: &Context<'_>,
    invocation: &Invocation,
    print: bool,
    stop: &crate::stop::Stop,
) -> Result<CommandTrace, crate::migrate::MigrateError> {
    if print {
        eprintln!(
            "Tracing `{}` on a scratch copy of the live schema...",
            invocation.command
        );
    }
    let trace = command_trace::run(
        ctx.client,
        ctx.target,
        &ctx.config.migrations,
        &ctx.config.state_schema,
        &invocation.command,
        stop,
    )
    .await?;
    if print {
        let said = match &trace {
            CommandTrace::Traced {
                drops,
                rewrites,
                locks,
                ..
            } => {
                let mut said = if drops.is_empty() {
                    "  it drops no table or column there".to_string()
                } else {
                    format!(
                        "  it drops {} there: backed up first where it holds data",
                        drops
                            .iter()
                            .map(command_trace::describe)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                for lock in locks {
                    said.push_str(&format!(
                        "; {} on {} ({})",
                        lock.mode,
                        lock.table,
                        lock.blocks.says()
                    ));
                }
                for table in rewrites {
                    said.push_str(&format!("; rewrites {table}"));
                }
                said.push('.');
                said
            }
            CommandTrace::NotTraced { reason } => {
                format!("  not traced ({reason}): what it drops is not known, and not backed up.")
            }
        };
        eprintln!(
            "{}",
            crate::output::wrap(&said, crate::output::stderr_width())
        );
    }
    Ok(trace)
}

/// Says once that another migrator holds the lock.
fn waiting(ctx: &Context<'_>) -> impl FnOnce(Option<i32>) + use<> {
    let quiet = ctx.cli.quiet || ctx.cli.json;
    move |holder| {
        if !quiet {
            eprintln!(
                "Waiting for another migrator{} to finish (it holds the migration lock)...",
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
        }
    }
}

/// The run: lock, blockers, the command as an audited run, the lock
/// given back, the outcome sent, what changed printed.
async fn run(
    ctx: &Context<'_>,
    invocation: &Invocation,
    direction: Direction,
) -> Result<bool, CliError> {
    let settings = &ctx.config.migrations;
    let schema = &ctx.config.state_schema;
    command_runs::lock(ctx.client, schema, waiting(ctx), None).await?;
    if let Err(err) = command_runs::clear_blockers(ctx.client, settings, schema, direction).await {
        let _ = command_runs::unlock(ctx.client, schema).await;
        return Err(err.into());
    }
    let print = !ctx.cli.json && !ctx.cli.quiet;
    let stop = crate::stop::Stop::default();
    stop.on_signals(|| eprintln!("Stopping: passing the stop on to the migrator."));
    let (trace, backups) = match trace_and_back_up(ctx, invocation, direction, print, &stop).await {
        Ok(done) => done,
        Err(err) => {
            let _ = command_runs::unlock(ctx.client, schema).await;
            return Err(err.into());
        }
    };
    let keeper = crate::lease::Keeper::start(ctx.target, schema, LeaseOwner::new());
    let mut recorder = match crate::connect::connect(ctx.target).await {
        Ok(recorder) => recorder,
        Err(err) => {
            let _ = command_runs::unlock(ctx.client, schema).await;
            return Err(err.into());
        }
    };
    let audit = Audit {
        recorder: &mut recorder,
        trigger: Trigger::cli(&super::run::command_line()),
        owner: keeper.owner(),
        started: None,
    };
    if print {
        eprintln!(
            "Running `{}` in {}",
            invocation.command,
            invocation.workdir.display()
        );
    }
    let since = std::time::Instant::now();
    let job = command_runs::Job {
        session: ctx.client,
        settings,
        state_schema: schema,
        stop: &stop,
        echo: !ctx.cli.json,
        trace: Some(&trace),
        backups: &backups,
    };
    let result = command_runs::execute(&job, invocation, direction, audit).await;
    let _ = command_runs::unlock(ctx.client, schema).await;
    let (summary, failed) = result?;
    let details = summary.details();
    let notice = summary.notice(false, super::origin(ctx.cli, ctx.config)?);
    crate::outcome::finished(
        ctx.config,
        &notice,
        &recorder,
        &summary.report(&details),
        since,
    )
    .await;
    if ctx.cli.json {
        let mut doc = serde_json::to_value(&summary).unwrap_or_default();
        doc["dry_run"] = json!(false);
        doc["format"] = json!("command");
        print_json(&doc);
    } else if print {
        print_summary(&summary);
    }
    match failed {
        None => Ok(true),
        Some(err) => Err(err.into()),
    }
}

fn print_summary(summary: &CommandSummary) {
    let ran = summary
        .ran
        .as_ref()
        .map(|r| r.says())
        .unwrap_or_else(|| "did not start".into());
    println!(
        "{} `{}` ({ran}, {})",
        if summary.error.is_none() {
            "Ran"
        } else {
            "Failed:"
        },
        summary.command,
        crate::output::duration_ms(summary.duration_ms as u64)
    );
    if let Some(ledger) = &summary.ledger.ledger {
        if !summary.ledger.added.is_empty() {
            println!("  {ledger}: applied {}", summary.ledger.added.join(", "));
        }
        if !summary.ledger.removed.is_empty() {
            println!("  {ledger}: reverted {}", summary.ledger.removed.join(", "));
        }
    }
    if summary.catalog.is_empty() {
        println!("No schema changes.");
    } else {
        println!("Schema changes:");
        for line in summary.catalog.lines() {
            println!("  {line}");
        }
    }
}

//! `pgmaint migrate ...`: the application's migrations through
//! `migrate::engine`, on a session of its own (`[database] direct_url`
//! behind a transaction pooler), each run in the audit trail, one line per
//! migration with its duration (`Applied 0006/add users (12 ms)`).

use std::io::IsTerminal;

use serde_json::json;
use tokio_postgres::Client;

use super::{CliError, load_config, print_json};
use crate::cli::{
    Cli, MigrateCommand, MigrateDownArgs, MigrateLintArgs, MigrateStatusArgs, MigrateUpArgs,
};
use crate::config::Config;
use crate::migrate::apply::{self, Direction};
use crate::migrate::engine::Migrator;
use crate::migrate::estimate::{self, Estimate};
use crate::migrate::preview::{self, Preview};
use crate::migrate::runs::{self, Selection};
use crate::migrate::status::Entry;
use crate::migrate::trace::{Blocks, TraceStatus, TracedStatement};
use crate::migrate::{MigrateError, Migration, lint, statements};
use crate::status::{Outcome, Status};
use crate::store::{self, LeaseOwner, Trigger};

impl From<MigrateError> for CliError {
    fn from(err: MigrateError) -> Self {
        match err {
            MigrateError::Files(text) | MigrateError::Refused(text) => CliError::Usage(text),
            MigrateError::Failed(text) => CliError::Failed(text),
            MigrateError::Database(text) => CliError::Server(text),
        }
    }
}

pub async fn migrate(cli: &Cli, command: &MigrateCommand) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    if config.migrations.command.is_some() {
        return super::migrate_command::migrate(cli, &config, command).await;
    }
    if let MigrateCommand::New { name } = command {
        return new(cli, &config, name).await;
    }
    if let MigrateCommand::Lint(args) = command {
        return lint(cli, &config, args).await;
    }
    let (client, keeper_target) = session(cli, &config).await?;
    store::ensure_ready(&client, &config.state_schema).await?;
    let migrator = Migrator::open(&client, &config.migrations, &config.state_schema).await?;
    let ctx = Context {
        cli,
        config: &config,
        client: &client,
        migrator: &migrator,
        target: &keeper_target,
    };
    match command {
        MigrateCommand::Status(args) => status(&ctx, args).await,
        MigrateCommand::Plan(args) => {
            let up = MigrateUpArgs {
                to: args.to.clone(),
                dry_run: true,
                allow_out_of_order: true,
                yes: false,
            };
            up_or_plan(&ctx, &up).await
        }
        MigrateCommand::Up(args) => up_or_plan(&ctx, args).await,
        MigrateCommand::Down(args) => down(&ctx, args).await,
        MigrateCommand::Repair { version, dry_run } => repair(&ctx, version, *dry_run).await,
        MigrateCommand::Baseline { version, dry_run } => baseline(&ctx, version, *dry_run).await,
        MigrateCommand::Test(args) => super::migrate_schema::test(&ctx, args).await,
        MigrateCommand::Drift => super::migrate_schema::drift(&ctx).await,
        MigrateCommand::New { .. } | MigrateCommand::Lint(_) => unreachable!("handled above"),
    }
}

pub(super) struct Context<'a> {
    pub(super) cli: &'a Cli,
    pub(super) config: &'a Config,
    pub(super) client: &'a Client,
    pub(super) migrator: &'a Migrator,
    pub(super) target: &'a crate::connect::Target,
}

/// A session of its own: `[database] direct_url` when set; otherwise the
/// URL, refused when it looks like a transaction pooler (the migration
/// lock and non-transactional files need a session).
pub(super) async fn session(
    cli: &Cli,
    config: &Config,
) -> Result<(Client, crate::connect::Target), CliError> {
    let (target, named) = super::target(cli, config)?;
    let target = match &config.database.direct_url {
        Some(direct) => {
            let mut direct = crate::connect::resolve(
                Some(direct),
                config.database.connect_timeout.map(|d| d.0),
            )?;
            direct.session = target.session;
            direct.direct = true;
            direct
        }
        None => {
            if let Some(seen) = crate::connect::detect_pooler(&target).await {
                return Err(CliError::Usage(format!(
                    "migrations need a session of their own (the migration lock, files that run outside a transaction), and this connection looks like a transaction pooler ({seen}); nothing was changed\n  help: set [database] direct_url to the database's direct endpoint, as Prisma's directUrl"
                )));
            }
            target
        }
    };
    let client = super::connect_to(&target, named).await?;
    Ok((client, target))
}

pub(super) fn parse_version(ctx: &Context<'_>, written: &str) -> Result<i64, CliError> {
    if let Some(m) = ctx
        .migrator
        .migrations
        .iter()
        .find(|m| m.written == written)
    {
        return Ok(m.version);
    }
    written.parse::<i64>().map_err(|_| {
        CliError::Usage(format!(
            "\"{written}\" is not a migration version; `pgmaint migrate status` lists them"
        ))
    })
}

async fn status(ctx: &Context<'_>, args: &MigrateStatusArgs) -> Result<bool, CliError> {
    let entries = ctx.migrator.entries(ctx.client).await?;
    let clean = entries.iter().all(Entry::is_clean);
    if ctx.cli.json {
        print_json(&json!({
            "format": ctx.migrator.format,
            "dir": ctx.migrator.settings.dir.display().to_string(),
            "ledger": ctx.migrator.ledger.name(),
            "require_down": ctx.migrator.require_down(),
            "migrations": entries,
        }));
    } else if !ctx.cli.quiet {
        println!(
            "{} migrations in {}, ledger {}:",
            ctx.migrator.format.as_str(),
            ctx.migrator.settings.dir.display(),
            ctx.migrator.ledger.name()
        );
        let mut table = crate::output::Table::new(&["VERSION", "NAME", "STATUS"]);
        for e in &entries {
            table.add_row([e.written.clone(), e.name.clone(), e.says()]);
        }
        table.print();
        let require = ctx.migrator.require_down();
        for e in &entries {
            if require
                && !e.has_down
                && !e.irreversible
                && e.state != crate::migrate::status::State::Missing
            {
                println!(
                    "note: migration {} has no down and is not marked irreversible; `migrate down` refuses to go past it",
                    e.written
                );
            }
        }
    }
    Ok(!args.exit_code || clean)
}

/// `migrate up` and `migrate plan` (a dry run of it).
async fn up_or_plan(ctx: &Context<'_>, args: &MigrateUpArgs) -> Result<bool, CliError> {
    let selection = Selection {
        to: args
            .to
            .as_deref()
            .map(|v| parse_version(ctx, v))
            .transpose()?,
        steps: None,
        allow_out_of_order: args.allow_out_of_order,
        lock_wait: None,
    };
    let (chosen, _) = runs::choose(
        ctx.client,
        ctx.migrator,
        Direction::Up,
        &selection,
        !args.dry_run,
        waiting(ctx),
    )
    .await?;
    if chosen.is_empty() {
        let entries = ctx.migrator.entries(ctx.client).await?;
        let applied = entries.iter().filter(|e| e.is_clean()).count();
        if ctx.cli.json {
            print_json(&json!({"dry_run": args.dry_run, "status": "succeeded", "migrations": []}));
        } else if !ctx.cli.quiet {
            println!("Nothing to apply: {applied} migration(s) applied, none pending.");
        }
        return Ok(true);
    }
    let findings = runs::lint(ctx.client, ctx.migrator, &chosen, Direction::Up).await?;
    if args.dry_run {
        let preview =
            preview::with_reversibility(ctx.client, ctx.target, ctx.migrator, &chosen).await?;
        return print_plan(ctx, &chosen, Direction::Up, &findings, Some(&preview));
    }
    let big = if args.yes {
        Vec::new()
    } else {
        preview::confirmation(
            ctx.client,
            Some(ctx.target),
            ctx.migrator,
            &chosen,
            Direction::Up,
            &findings,
        )
        .await?
    };
    if !big.is_empty() {
        let _ = ctx.migrator.unlock(ctx.client).await;
        let mut reasons = big;
        if !ctx.cli.json {
            let errors: Vec<&lint::Finding> = findings
                .iter()
                .filter(|f| f.level == lint::Level::Error)
                .collect();
            for f in &errors {
                eprintln!(
                    "{}\n",
                    crate::output::wrap(&f.render(), crate::output::stderr_width())
                );
            }
            // Shown above in full.
            reasons.retain(|r| !errors.iter().any(|f| f.one_line() == *r));
            if !errors.is_empty() {
                reasons.insert(0, format!("{} lint error(s), above", errors.len()));
            }
        }
        return Err(CliError::Usage(format!(
            "{}\nthese run only when confirmed; nothing was changed\n  help: fix what the lint says (build indexes CONCURRENTLY in a no-transaction file, add constraints NOT VALID and VALIDATE them after), silence a rule with `-- squawk-ignore RULE`, or run it at a quiet time with --yes; [migrations] confirm_above sets the size that needs it",
            reasons.join("\n")
        )));
    }
    runs::clear_blockers(ctx.client, ctx.migrator, &chosen, Direction::Up).await?;
    execute(ctx, &chosen, Direction::Up).await
}

async fn down(ctx: &Context<'_>, args: &MigrateDownArgs) -> Result<bool, CliError> {
    let selection = Selection {
        to: args
            .to
            .as_deref()
            .map(|v| parse_version(ctx, v))
            .transpose()?,
        steps: args.steps.map(|s| s as usize),
        allow_out_of_order: false,
        lock_wait: None,
    };
    // Asked before the migration lock is taken, so nothing (an
    // application starting and running its migrations) waits on the
    // answer; the selection is chosen again under the lock and must not
    // have changed meanwhile.
    let asked = if !args.dry_run && !args.yes {
        let (chosen, _) = runs::choose(
            ctx.client,
            ctx.migrator,
            Direction::Down,
            &selection,
            false,
            |_| {},
        )
        .await?;
        if !chosen.is_empty() {
            confirm_down(ctx, &chosen)?;
        }
        Some(chosen.iter().map(|m| m.version).collect::<Vec<_>>())
    } else {
        None
    };
    let (chosen, stopped) = runs::choose(
        ctx.client,
        ctx.migrator,
        Direction::Down,
        &selection,
        !args.dry_run,
        waiting(ctx),
    )
    .await?;
    if let Some(asked) = &asked
        && *asked != chosen.iter().map(|m| m.version).collect::<Vec<_>>()
    {
        let _ = ctx.migrator.unlock(ctx.client).await;
        return Err(CliError::Usage("the applied migrations changed while you were asked (another migrator ran); nothing was changed\n  help: run `pgmaint migrate down` again".into()));
    }
    if chosen.is_empty() {
        if ctx.cli.json {
            print_json(&json!({"dry_run": args.dry_run, "status": "succeeded", "migrations": []}));
        } else if !ctx.cli.quiet {
            println!("Nothing to revert: no migration is applied.");
        }
        return Ok(true);
    }
    if let Some(reason) = &stopped
        && !ctx.cli.quiet
    {
        eprintln!("note: {reason}");
    }
    if args.dry_run {
        let findings = runs::lint(ctx.client, ctx.migrator, &chosen, Direction::Down).await?;
        let preview = preview::of(
            ctx.client,
            ctx.target,
            ctx.migrator,
            &chosen,
            Direction::Down,
        )
        .await?;
        return print_plan(ctx, &chosen, Direction::Down, &findings, Some(&preview));
    }
    if !ctx.cli.quiet {
        for m in &chosen {
            let script = runs::script_of(m, Direction::Down);
            for st in apply::statements_of(script)? {
                if let Some(what) = st.unseen_drop {
                    eprintln!(
                        "warning: {}:{}: {what}; pgmaint cannot see what it removes, so it is not backed up",
                        script.path.display(),
                        st.line
                    );
                }
            }
        }
    }
    runs::clear_blockers(ctx.client, ctx.migrator, &chosen, Direction::Down).await?;
    execute(ctx, &chosen, Direction::Down).await
}

/// A down changes the schema and may drop data: confirmed by `--yes`, or
/// on a terminal by a yes/no after showing the plan.
fn confirm_down(ctx: &Context<'_>, chosen: &[&Migration]) -> Result<(), CliError> {
    let names: Vec<String> = chosen.iter().map(|m| m.written.clone()).collect();
    let interactive =
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && !ctx.cli.json;
    if !interactive {
        return Err(CliError::Usage(format!(
            "reverting {} runs only when confirmed, and there is no terminal to ask on; nothing was changed\n  help: review `pgmaint migrate down --dry-run`, then pass --yes",
            names.join(", ")
        )));
    }
    let _ = print_plan(ctx, chosen, Direction::Down, &[], None);
    super::ask_yes(&format!(
        "\nRevert {} (data they drop is backed up first)?",
        names.join(", ")
    ))
}

/// Says once that another migrator holds the lock.
fn waiting(ctx: &Context<'_>) -> impl FnOnce(Option<i32>) {
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

async fn lock(ctx: &Context<'_>) -> Result<(), CliError> {
    ctx.migrator.lock(ctx.client, waiting(ctx), None).await?;
    Ok(())
}

/// The dry run: each migration's statements with their transaction
/// boundaries and timeouts, and what a down backs up.
fn print_plan(
    ctx: &Context<'_>,
    chosen: &[&Migration],
    direction: Direction,
    findings: &[lint::Finding],
    preview: Option<&Preview>,
) -> Result<bool, CliError> {
    let settings = &ctx.migrator.settings;
    if let Some(preview) = preview
        && !ctx.cli.json
        && !ctx.cli.quiet
    {
        print_blocking(chosen, preview);
    }
    let verb = match direction {
        Direction::Up => "apply",
        Direction::Down => "revert",
    };
    let mut out = Vec::new();
    for m in chosen {
        let script = runs::script_of(m, direction);
        let list = apply::statements_of(script)?;
        let traced = preview.and_then(|p| p.trace.as_ref()?.of(&m.written));
        let traced_statement =
            |line: usize| traced.and_then(|t| t.statements.iter().find(|s| s.line == line));
        let estimate = |line: usize| preview.and_then(|p| p.estimate(&m.written, line));
        let tested = preview
            .and_then(|p| p.reversibility.as_ref())
            .and_then(|r| r.migrations.iter().find(|t| t.version == m.written));
        out.push(json!({
            "version": m.written,
            "name": m.name,
            "file": script.path.display().to_string(),
            "transaction": script.transactional,
            "statements": list.iter().map(|s| json!({
                "line": s.line,
                "column": s.column,
                "sql": s.text,
                "drops": s.drops.iter().map(|d| match d {
                    statements::Drop::Table(t) => json!({"table": t}),
                    statements::Drop::Column(t, c) => json!({"table": t, "column": c}),
                    statements::Drop::Schema(n) => json!({"schema": n}),
                    statements::Drop::Type(t) => json!({"type": t}),
                }).collect::<Vec<_>>(),
                "own_transaction": s.needs_own_transaction,
                "trace": traced_statement(s.line),
                "estimate": estimate(s.line),
            })).collect::<Vec<_>>(),
            "lint": findings.iter().filter(|f| f.version == m.written).collect::<Vec<_>>(),
            "trace": traced.map(|t| &t.status),
            "reversibility": reversibility(m, ctx.migrator.require_down()),
            "reversibility_tested": tested,
        }));
        if ctx.cli.json || ctx.cli.quiet {
            continue;
        }
        crate::output::paragraph(&format!(
            "Would {verb} {}/{} ({}; lock_timeout {}, statement_timeout {}):",
            m.written,
            m.name,
            if script.transactional {
                "one transaction with its ledger row"
            } else {
                "statement by statement, no transaction"
            },
            crate::duration::Duration(settings.lock_timeout).as_pg_setting(),
            crate::duration::Duration(settings.statement_timeout).as_pg_setting(),
        ));
        if let Some(t) = tested {
            crate::output::paragraph(&format!(
                "  up, down, up on a scratch copy: {}",
                t.status.as_str()
            ));
            for line in &t.diff {
                crate::output::paragraph(&format!("    {line}"));
            }
        }
        for (i, s) in list.iter().enumerate() {
            let first: String = s.first_line().chars().take(60).collect();
            println!("  {:>2}. line {:<4} {first}", i + 1, s.line);
            print_traced(traced_statement(s.line), estimate(s.line));
            if direction == Direction::Down
                && let Some(what) = s.unseen_drop
            {
                println!("      NOT backed up: {what}; pgmaint cannot see what it removes");
            }
            // Only a down backs up what it drops.
            for d in s.drops.iter().filter(|_| direction == Direction::Down) {
                match d {
                    statements::Drop::Table(t) => println!("      backs up the rows of {t} first"),
                    statements::Drop::Column(t, c) => {
                        println!("      backs up column {c} of {t} first")
                    }
                    statements::Drop::Schema(n) => {
                        println!("      backs up the rows of every table in schema {n} first")
                    }
                    statements::Drop::Type(t) => {
                        println!("      backs up every column of type {t} first")
                    }
                }
            }
        }
        match traced.map(|t| &t.status) {
            Some(TraceStatus::NotTraced { reason }) => {
                crate::output::paragraph(&format!("      not traced: {reason}"))
            }
            Some(TraceStatus::Failed { line, error }) => crate::output::paragraph(&format!(
                "      fails at line {line} on a copy of the live schema: {error}"
            )),
            Some(TraceStatus::NotReached) => {
                println!("      not traced: an earlier migration stopped the trace")
            }
            Some(TraceStatus::Traced) | None => {}
        }
        let path = script.path.display().to_string();
        for f in findings.iter().filter(|f| f.file == path) {
            let line = format!(
                "line {}: {}[{}]: {}",
                f.line,
                f.level.as_str(),
                f.rule,
                f.message
            );
            crate::output::paragraph(&format!("      {line}"));
        }
    }
    if !ctx.cli.json && !ctx.cli.quiet && lint::has_errors(findings) {
        crate::output::paragraph(
            "Lint errors: `pgmaint migrate up` needs --yes; `pgmaint migrate lint` shows each with its fix.",
        );
    }
    if ctx.cli.json {
        let trace = preview.and_then(|p| p.trace.as_ref()).map(|t| {
            json!({
                "local_version": t.local_version,
                "live_version": t.live_version,
                "copied_with": t.copied_with,
                "not_copied": t.not_copied,
            })
        });
        print_json(&json!({
            "dry_run": true,
            "direction": direction,
            "trace": trace,
            "untraced": preview.and_then(|p| p.untraced.as_deref()),
            "migrations": out,
        }));
    }
    Ok(true)
}

/// Whether a migration can be reverted, as its files say (`migrate test`
/// checks that its down really undoes it).
fn reversibility(m: &Migration, require_down: bool) -> &'static str {
    match (&m.down, m.irreversible) {
        (_, true) => "irreversible",
        (Some(_), false) => "has a down",
        (None, false) if require_down => "no down",
        (None, false) => "no down (not required)",
    }
}

/// What a person decides on, first: each statement that blocks reads or
/// writes on an existing table, and for how long.
fn print_blocking(chosen: &[&Migration], preview: &Preview) {
    match (&preview.trace, &preview.untraced) {
        (Some(trace), _) => {
            let versions = match &trace.live_version {
                Some(live) => format!(
                    "PostgreSQL {} here, {live} live: locks can differ",
                    trace.local_version
                ),
                None => format!("PostgreSQL {}", trace.local_version),
            };
            crate::output::paragraph(&format!(
                "Traced on a scratch copy of the live schema ({versions}; copied with {}).",
                trace.copied_with
            ));
            if !trace.not_copied.is_empty() {
                crate::output::paragraph(&format!("  not copied: {}", trace.not_copied.join("; ")));
            }
        }
        (None, Some(why)) => crate::output::paragraph(why),
        (None, None) => {}
    }
    let mut lines = Vec::new();
    for m in chosen {
        let traced = preview.trace.as_ref().and_then(|t| t.of(&m.written));
        for s in traced.iter().flat_map(|t| &t.statements) {
            let Some(lock) = s.worst().filter(|l| l.blocks >= Blocks::Writes) else {
                continue;
            };
            let what = match preview.estimate(&m.written, s.line) {
                Some(e) => e.sentence(),
                None => format!(
                    "{} on {}, briefly: no work that grows with the table; {}",
                    lock.mode,
                    lock.table,
                    lock.blocks.says()
                ),
            };
            lines.push(format!("  {} line {}: {what}", m.written, s.line));
        }
        if traced.is_none() {
            for ((version, line), e) in &preview.estimates {
                if version == &m.written {
                    lines.push(format!(
                        "  {version} line {line}: locks out writes, {}: {}",
                        e.work.join(", "),
                        estimate::range(e.low_seconds, e.high_seconds)
                    ));
                }
            }
        }
    }
    if lines.is_empty() && preview.trace.is_none() {
        crate::output::paragraph(
            "Nothing found that locks out writes on an existing table (from the statements' parse; a trace would tell more).",
        );
    } else if lines.is_empty() {
        println!("Nothing blocks reads or writes on an existing table.");
    } else {
        println!("What blocks the application:");
        for line in lines {
            crate::output::paragraph(&line);
        }
    }
    println!();
}

/// Under one statement of the plan: what the trace saw it do.
fn print_traced(traced: Option<&TracedStatement>, estimate: Option<&Estimate>) {
    let Some(t) = traced else {
        return;
    };
    let seen = if t.documented {
        " (PostgreSQL's documented lock; it runs outside a transaction)"
    } else {
        ""
    };
    for lock in t.locks.iter().filter(|l| l.blocks > Blocks::Nothing) {
        crate::output::paragraph(&format!(
            "      {} on {}: {}{seen}",
            lock.mode,
            lock.table,
            lock.blocks.says()
        ));
    }
    if let Some(e) = estimate {
        crate::output::paragraph(&format!(
            "      {}: {}",
            e.work.join(", "),
            estimate::range(e.low_seconds, e.high_seconds)
        ));
    }
    for c in &t.not_valid {
        crate::output::paragraph(&format!(
            "      adds {c} NOT VALID: checked for new rows only until VALIDATE CONSTRAINT"
        ));
    }
    for c in &t.unindexed_foreign_keys {
        crate::output::paragraph(&format!(
            "      foreign key {c} has no index on its columns: each delete on the table it references reads this one whole"
        ));
    }
}

/// Runs the chosen migrations in order as one audited run, stopping at
/// the first that fails, one line each as it ends.
async fn execute(
    ctx: &Context<'_>,
    chosen: &[&Migration],
    direction: Direction,
) -> Result<bool, CliError> {
    let keeper =
        crate::lease::Keeper::start(ctx.target, &ctx.config.state_schema, LeaseOwner::new());
    let mut recorder = connect_recorder(ctx).await?;
    let stop = crate::stop::Stop::default();
    stop.on_signals(|| eprintln!("Stopping after the statement under way."));
    let audit = runs::Audit {
        recorder: &mut recorder,
        trigger: Trigger::cli(&super::run::command_line()),
        owner: keeper.owner(),
        started: None,
    };
    let print = !ctx.cli.json && !ctx.cli.quiet;
    let since = std::time::Instant::now();
    let result = runs::execute(
        ctx.client,
        ctx.migrator,
        chosen,
        direction,
        audit,
        &stop,
        |m, done| {
            if print && done.error.is_none() {
                print_done(m, done, direction);
            }
        },
    )
    .await;
    let _ = ctx.migrator.unlock(ctx.client).await;
    let (summary, failed) = result?;
    let notice = summary.notice(false, super::origin(ctx.cli, ctx.config)?);
    crate::outcome::finished(ctx.config, &notice, &recorder, &summary.report(), since).await;
    if ctx.cli.json {
        print_json(
            &json!({"run_id": summary.run_id, "dry_run": false, "status": summary.status, "direction": direction, "migrations": summary.migrations}),
        );
    }
    match failed {
        None => Ok(true),
        Some(err) => Err(err.into()),
    }
}

fn print_done(m: &Migration, done: &runs::Done, direction: Direction) {
    let verb = match direction {
        Direction::Up => "Applied",
        Direction::Down => "Reverted",
    };
    let report = &done.run;
    let resumed = report
        .resumed_at
        .map(|s| format!(", resumed at statement {s}"))
        .unwrap_or_default();
    let retries = if report.retries > 0 {
        format!(", {} retries on busy locks", report.retries)
    } else {
        String::new()
    };
    println!(
        "{verb} {}/{} ({}{resumed}{retries})",
        m.written,
        m.name,
        ms(report.duration_ms)
    );
    for saved in &report.backups {
        println!(
            "  backed up {} row(s) of {}{} first: backup {} (`pgmaint restore {}` puts them back)",
            saved.rows,
            saved.table,
            saved
                .column
                .as_deref()
                .map(|c| format!(" column {c}"))
                .unwrap_or_default(),
            saved.backup_id,
            saved.backup_id
        );
    }
}

/// A second connection for the run's own records, so they commit whatever
/// the migration's session is doing.
async fn connect_recorder(ctx: &Context<'_>) -> Result<Client, CliError> {
    Ok(crate::connect::connect(ctx.target).await?)
}

fn ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        crate::output::duration_ms(ms as u64)
    }
}

async fn repair(ctx: &Context<'_>, written: &str, dry_run: bool) -> Result<bool, CliError> {
    let version = parse_version(ctx, written)?;
    if !dry_run {
        lock(ctx).await?;
    }
    let timeouts = ctx.migrator.settings.timeouts();
    let entries = ctx.migrator.entries(ctx.client).await?;
    let Some(entry) = entries.iter().find(|e| e.version == version) else {
        return Err(CliError::Usage(format!(
            "no migration has version {written}; `pgmaint migrate status` lists them"
        )));
    };
    use crate::migrate::status::State;
    let schema = &ctx.config.state_schema;
    let ledger = &ctx.migrator.ledger;
    let ledger_name = ledger.name();
    let said = match &entry.state {
        State::Modified { change } => {
            let m = ctx
                .migrator
                .migration(version)
                .expect("a modified migration has a file");
            let checksum = m.up.checksum();
            let write = crate::db::committed(ctx.client, async {
                ledger.set_checksum(ctx.client, m).await?;
                store::schema_migrations::record_applied_text(
                    ctx.client,
                    schema,
                    &ledger_name,
                    version,
                    &checksum,
                    &m.up.text,
                    None,
                )
                .await
            });
            if !dry_run {
                crate::db::under(timeouts, write).await?;
            }
            format!(
                "{} the changed file of migration {written} ({}): the ledger {} its new checksum.",
                if dry_run { "Would accept" } else { "Accepted" },
                change.says(),
                if dry_run { "would hold" } else { "now holds" }
            )
        }
        State::Dirty => {
            let m = ctx
                .migrator
                .migration(version)
                .expect("a partly applied migration has a file");
            let previous = ctx.migrator.previous(m);
            let write = crate::db::committed(ctx.client, async {
                ledger.clear_partial(ctx.client, m, previous).await?;
                store::schema_migrations::forget_migration_run(
                    ctx.client,
                    schema,
                    &ledger_name,
                    version,
                )
                .await
            });
            if !dry_run {
                crate::db::under(timeouts, write).await?;
            }
            format!(
                "{} migration {written}'s partly-applied row from {ledger_name}: `migrate up` runs it again from its first statement.",
                if dry_run { "Would clear" } else { "Cleared" }
            )
        }
        State::Failed { direction, .. } => {
            let m = ctx
                .migrator
                .migration(version)
                .expect("a failed migration has a file");
            let previous = ctx.migrator.previous(m);
            let write = crate::db::committed(ctx.client, async {
                // An up that stopped part-way may have left the tool's
                // partial row (sqlx's success = false, golang-migrate's
                // dirty flag, Flyway's failed row): one repair clears both.
                if direction == "up" {
                    ledger.clear_partial(ctx.client, m, previous).await?;
                }
                store::schema_migrations::forget_migration_run(
                    ctx.client,
                    schema,
                    &ledger_name,
                    version,
                )
                .await
            });
            if !dry_run {
                crate::db::under(timeouts, write).await?;
            }
            format!(
                "{} where migration {written}'s {direction} stopped: `migrate {direction}` runs it from its first statement.",
                if dry_run { "Would forget" } else { "Forgot" }
            )
        }
        other => {
            let _ = ctx.migrator.unlock(ctx.client).await;
            return Err(CliError::Usage(format!(
                "migration {written} is {}: there is nothing to repair",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(String::from))
                    .unwrap_or_default()
            )));
        }
    };
    if dry_run {
        if ctx.cli.json {
            print_json(&json!({"version": written, "dry_run": true, "would": said}));
        } else if !ctx.cli.quiet {
            println!("{said}");
        }
        return Ok(true);
    }
    audit(
        ctx,
        &format!("migrate repair {written}"),
        &format!("migrate:{written}"),
        json!({"version": written, "repair": said}),
    )
    .await?;
    let _ = ctx.migrator.unlock(ctx.client).await;
    if ctx.cli.json {
        print_json(&json!({"version": written, "repaired": said}));
    } else if !ctx.cli.quiet {
        println!("{said}");
    }
    Ok(true)
}

async fn baseline(ctx: &Context<'_>, written: &str, dry_run: bool) -> Result<bool, CliError> {
    let version = parse_version(ctx, written)?;
    if ctx.migrator.migration(version).is_none() {
        return Err(CliError::Usage(format!(
            "no migration has version {written}; `pgmaint migrate status` lists them"
        )));
    }
    if !dry_run {
        lock(ctx).await?;
        ctx.migrator.ensure_ledger(ctx.client).await?;
    }
    let entries = ctx.migrator.entries(ctx.client).await?;
    let marked: Vec<&Migration> = entries
        .iter()
        .filter(|e| {
            ctx.migrator.position(e.version) <= ctx.migrator.position(version)
                && matches!(e.state, crate::migrate::status::State::Pending)
        })
        .filter_map(|e| ctx.migrator.migration(e.version))
        .filter(|m| !m.repeatable)
        .collect();
    let schema = &ctx.config.state_schema;
    let ledger = &ctx.migrator.ledger;
    let ledger_name = ledger.name();
    if dry_run {
        let versions: Vec<&str> = marked.iter().map(|m| m.written.as_str()).collect();
        if ctx.cli.json {
            print_json(
                &json!({"baseline": written, "dry_run": true, "would_mark_applied": versions}),
            );
        } else if !ctx.cli.quiet {
            println!(
                "Would mark {} migration(s) up to {written} as applied without running them{}.",
                versions.len(),
                if versions.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", versions.join(", "))
                }
            );
        }
        return Ok(true);
    }
    let write = crate::db::committed(ctx.client, async {
        for m in &marked {
            let checksum = m.up.checksum();
            ledger.record_up(ctx.client, m).await?;
            ledger
                .record_time(ctx.client, m, std::time::Duration::ZERO)
                .await?;
            store::schema_migrations::record_applied_text(
                ctx.client,
                schema,
                &ledger_name,
                m.version,
                &checksum,
                &m.up.text,
                None,
            )
            .await?;
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    crate::db::under(ctx.migrator.settings.timeouts(), write).await?;
    let versions: Vec<&str> = marked.iter().map(|m| m.written.as_str()).collect();
    audit(
        ctx,
        &format!("migrate baseline {written}"),
        &format!("migrate:{written}"),
        json!({"baseline": written, "marked_applied": versions}),
    )
    .await?;
    let _ = ctx.migrator.unlock(ctx.client).await;
    if ctx.cli.json {
        print_json(&json!({"baseline": written, "marked_applied": versions}));
    } else if !ctx.cli.quiet {
        println!(
            "Marked {} migration(s) up to {written} as applied without running them{}.",
            versions.len(),
            if versions.is_empty() {
                String::new()
            } else {
                format!(" ({})", versions.join(", "))
            }
        );
    }
    Ok(true)
}

/// Records a `repair` or `baseline` as a run of its own.
async fn audit(
    ctx: &Context<'_>,
    command: &str,
    task: &str,
    details: serde_json::Value,
) -> Result<(), CliError> {
    let schema = &ctx.config.state_schema;
    let mut recorder = connect_recorder(ctx).await?;
    let owner = LeaseOwner::new();
    let run_id =
        store::start_run(&mut recorder, schema, &Trigger::cli(command), false, &owner).await?;
    let task_run =
        store::start_task_run(&recorder, schema, run_id, task, "migration", false).await?;
    let outcome = Outcome {
        status: Status::Succeeded,
        rows: 0,
        batches: 0,
        retries: 0,
        error: None,
        details,
    };
    store::finish_task_run(&recorder, schema, task_run, &outcome, 0).await?;
    store::finish_run(&recorder, schema, run_id, Status::Succeeded, None).await?;
    Ok(())
}

/// `migrate lint`: the pending migrations' ups and downs (or every one,
/// or the files named), linted for the server's version; `Ok(false)`
/// (exit 1) when a finding is an error. Files named are linted from the
/// folder alone when the database cannot be reached.
async fn lint(cli: &Cli, config: &Config, args: &MigrateLintArgs) -> Result<bool, CliError> {
    let client = if args.files.is_empty() {
        Some(super::connect(cli, config).await?)
    } else {
        match super::connect(cli, config).await {
            Ok(client) => Some(client),
            Err(err) => {
                if !cli.quiet && !cli.json {
                    crate::output::eprint_wrapped(&format!(
                        "note: linting the files alone, for squawk's default PostgreSQL version: the database could not be reached ({err})"
                    ));
                }
                None
            }
        }
    };
    let migrator = match &client {
        Some(client) => Migrator::open(client, &config.migrations, &config.state_schema).await?,
        None => Migrator::offline(&config.migrations, &config.state_schema)?,
    };
    let options = runs::lint_options(client.as_ref(), &migrator).await?;
    let (mut linted, mut findings) = (0, Vec::new());
    if args.files.is_empty() {
        let client = client.as_ref().expect("connected above");
        (linted, findings) = runs::lint_pending(client, &migrator, args.all).await?;
    } else {
        for file in &args.files {
            let wanted = std::fs::canonicalize(file)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let same =
                |path: &std::path::Path| std::fs::canonicalize(path).is_ok_and(|p| p == wanted);
            let found = migrator.migrations.iter().find_map(|m| {
                if same(&m.up.path) {
                    Some((m, Direction::Up))
                } else {
                    m.down
                        .as_ref()
                        .filter(|d| same(&d.path))
                        .map(|_| (m, Direction::Down))
                }
            });
            let Some((m, direction)) = found else {
                return Err(CliError::Usage(format!(
                    "{} is not one of the migrations in {} ({} format); nothing was linted\n  help: name a migration's file, or set [migrations] dir and format",
                    file.display(),
                    migrator.settings.dir.display(),
                    migrator.format.as_str()
                )));
            };
            linted += 1;
            findings.extend(match direction {
                Direction::Up => lint::up(m, &options),
                Direction::Down => {
                    lint::script(m, m.down.as_ref().expect("found"), direction, &options)
                }
            });
        }
    }
    if let Some(client) = client.as_ref().filter(|_| !args.files.is_empty()) {
        let all: Vec<&Migration> = migrator.migrations.iter().collect();
        runs::on_new_tables(client, &all, &mut findings).await?;
    }
    let errors = findings
        .iter()
        .filter(|f| f.level == lint::Level::Error)
        .count();
    let warnings = findings.len() - errors;
    if cli.json {
        print_json(&json!({
            "pg_version": options.pg_version,
            "linted": linted,
            "errors": errors,
            "warnings": warnings,
            "findings": findings,
        }));
    } else {
        for f in &findings {
            eprintln!(
                "{}\n",
                crate::output::wrap(&f.render(), crate::output::stderr_width())
            );
        }
        if !cli.quiet {
            println!(
                "{linted} migration file(s) linted{}: {errors} error(s), {warnings} warning(s)",
                options
                    .pg_version
                    .as_deref()
                    .map(|v| format!(" for PostgreSQL {v}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(!lint::has_errors(&findings))
}

async fn new(cli: &Cli, config: &Config, name: &str) -> Result<bool, CliError> {
    let settings = &config.migrations;
    let format = match settings.format {
        Some(format) => format,
        None => match crate::migrate::source::detect(&settings.dir, None) {
            Ok(format) => format,
            Err(_)
                if !settings.dir.exists()
                    || std::fs::read_dir(&settings.dir)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(true) =>
            {
                crate::migrate::Format::Sqlx
            }
            Err(err) => return Err(err.into()),
        },
    };
    std::fs::create_dir_all(&settings.dir)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", settings.dir.display())))?;
    let existing = crate::migrate::source::read(settings, format)?;
    let files = crate::migrate::new::create(settings, format, &existing, name, chrono::Utc::now())?;
    if cli.json {
        print_json(
            &json!({"format": format, "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>()}),
        );
    } else if !cli.quiet {
        for file in files {
            println!("Created {}", file.display());
        }
    }
    Ok(true)
}

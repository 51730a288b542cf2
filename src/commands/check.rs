//! `pgmaint check`: the config against the live database. Read-only; lists
//! every problem, those of the file and those the database shows, together,
//! and exits 2 when there is one; lints the pending migrations, and exits
//! 1 when one of them has an error-level finding.

use super::{CliError, connect, load_config_with_problems, print_json};
use crate::cli::Cli;
use crate::config::{Config, Problem, Problems};
use crate::migrate::lint::{Finding, Level};
use crate::output;
use crate::runner;
use crate::unnamed::Unnamed;

/// A critical task in a schedule that does not allow it: its fires leave
/// it out, which is a mistake in the config unless said otherwise.
fn schedule_problems(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let tasks: std::collections::HashMap<&str, &crate::config::TaskConfig> =
        config.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    for schedule in &config.schedules {
        for task in schedule.tasks.iter().filter_map(|t| tasks.get(t.as_str())) {
            if let Some(reason) = runner::left_out_by_schedule(task, schedule) {
                problems.push(
                    config
                        .problem(
                            &["schedules", &schedule.name, "tasks"],
                            format!("{reason}: its fires leave it out"),
                        )
                        .with_help(format!(
                            "set `allow_critical = true` in [schedules.{}] to run it unattended, or remove it from `tasks` and run it with `pgmaint run {} --yes`",
                            schedule.name, task.name
                        )),
                );
            }
        }
    }
    problems
}

/// The usage error that lists problems and says nothing was changed.
pub fn refuse(problems: Vec<Problem>) -> CliError {
    CliError::problems(problems)
}

pub async fn check(cli: &Cli) -> Result<bool, CliError> {
    let (config, mut problems) = load_config_with_problems(cli)?;
    // Without a config (the file is not TOML) there is nothing to check
    // against the database.
    let Some(config) = config else {
        return Err(refuse(problems));
    };
    // Keys only some commands use (notifiers, the API token) are checked
    // here as the commands that use them will.
    // The config's URL only counts when no flag or DATABASE_URL replaces it.
    let url_from_config = super::url_comes_from_config(cli);
    problems.extend(
        config
            .deferred
            .iter()
            .filter(|d| url_from_config || d.need != crate::config::Need::DatabaseUrl)
            .map(|d| d.problem.clone()),
    );
    problems.extend(schedule_problems(&config));
    let client = match connect(cli, &config).await {
        Ok(client) => client,
        Err(err) if problems.is_empty() => return Err(err),
        Err(err) => {
            let err = match err {
                CliError::Config { .. } => "its [database] url cannot be used".to_string(),
                other => other.to_string(),
            };
            problems.sort_by_key(Problem::position);
            let count = problems.len();
            return Err(CliError::Config {
                summary: format!(
                    "{count} problem(s) found; the database was not checked: {err}\nnothing was changed"
                ),
                problems,
            });
        }
    };
    // A table another session has locked cannot be checked now; that is
    // not a config problem, but it is not a pass either.
    let mut busy = Vec::new();
    // The server failing a check's statement is neither a config problem
    // nor a pass: `check` says so and exits 1, whatever else it found.
    let mut server = Vec::new();
    for task in &config.tasks {
        let check = runner::check_task(&client, &config, task).await;
        problems.extend(check.problems);
        busy.extend(check.busy);
        server.extend(check.server);
    }
    problems.extend(crate::health::custom::check_queries(&client, &config).await);
    problems.sort_by_key(Problem::position);
    let state_note = match crate::store::ensure_ready(&client, &config.state_schema).await {
        Ok(()) => None,
        Err(err @ crate::store::StateError::Database(_)) => {
            server.push(format!("pgmaint's state schema could not be read: {err}"));
            None
        }
        Err(err) => Some(err.to_string()),
    };
    if !server.is_empty() {
        if !problems.is_empty() && !cli.json {
            let (shown, more) = super::listed(&problems);
            let mut text = Problems(shown.to_vec()).to_string();
            if let Some(more) = more {
                text.push('\n');
                text.push_str(&more);
            }
            output::eprint_wrapped(&text);
        }
        let count = server.len();
        return Err(CliError::Server(format!(
            "{}\n{count} check(s) failed on the server, not because of the config; the database was not fully checked",
            server.join("\n")
        )));
    }
    if !problems.is_empty() {
        if !busy.is_empty() && !cli.json {
            output::eprint_wrapped(&Problems(busy).to_string());
        }
        return Err(refuse(problems));
    }
    if !busy.is_empty() {
        let count = busy.len();
        return Err(CliError::Server(format!(
            "{}\n{count} check(s) could not finish: a lock another session holds stayed busy past lock_timeout; try again later [SQLSTATE 55P03]",
            Problems(busy)
        )));
    }
    let connection = connection_line(cli, &config).await;
    let mut warnings = time_zone_warnings(&client, &config).await;
    let lint = migrations_lint(&client, &config, &mut warnings).await;
    if !cli.json {
        for warning in &warnings {
            output::eprint_wrapped(warning);
        }
        for finding in &lint {
            eprintln!(
                "{}\n",
                output::wrap(&finding.render(), output::stderr_width())
            );
        }
    }
    let lint_errors = lint.iter().filter(|f| f.level == Level::Error).count();
    if cli.json {
        print_json(&serde_json::json!({
            "ok": lint_errors == 0,
            "warnings": warnings,
            "lint": lint,
            "tasks": config.tasks.len(),
            "problems": [],
            "state": state_note,
            "connection": connection,
        }));
    } else if !cli.quiet {
        output::paragraph(&format!(
            "ok: {} task(s) checked against the database; no problems found",
            config.tasks.len()
        ));
        if let Some(note) = &state_note {
            output::paragraph(&format!("note: {note}"));
        }
        output::paragraph(&format!("connection: {connection}"));
        if lint_errors > 0 {
            output::paragraph(&format!(
                "lint: {lint_errors} error(s) in the pending migrations (above): `pgmaint migrate up` refuses them without --yes"
            ));
        }
    }
    Ok(lint_errors == 0)
}

/// The lint of the pending migrations, when there is a migrations folder;
/// a folder `[migrations]` names that cannot be read is a warning.
async fn migrations_lint(
    client: &tokio_postgres::Client,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Vec<Finding> {
    let settings = &config.migrations;
    // A `command` migrator's migrations are code, not SQL to lint.
    if settings.command.is_some() || (!settings.configured && !settings.dir.is_dir()) {
        return Vec::new();
    }
    let linted = async {
        let migrator =
            crate::migrate::engine::Migrator::open(client, settings, &config.state_schema).await?;
        crate::migrate::runs::lint_pending(client, &migrator, false).await
    }
    .await;
    match linted {
        Ok((_, findings)) => findings,
        Err(err) if settings.configured => {
            warnings.push(format!(
                "warning: the migrations in {} were not linted: {err}",
                settings.dir.display()
            ));
            Vec::new()
        }
        // A folder of another tool's migrations, not configured here.
        Err(_) => Vec::new(),
    }
}

/// What `check` says of the connection: direct, or what it saw of a
/// transaction pooler and whether `[database] direct_url` covers the tasks
/// that need a session. For the message only (detection can miss).
async fn connection_line(cli: &Cli, config: &Config) -> String {
    let Ok((target, _)) = super::target(cli, config) else {
        return "not checked".into();
    };
    let Some(seen) = crate::connect::detect_pooler(&target).await else {
        return "direct (no transaction pooler seen)".into();
    };
    let tasks: Vec<&crate::config::TaskConfig> = config.tasks.iter().collect();
    let needing = runner::needing_a_session(&tasks, false);
    if config.database.direct_url.is_some() {
        format!("{seen}; tasks that need a session use [database] direct_url")
    } else if needing.is_empty() {
        format!("{seen}; no task here needs a session of its own")
    } else {
        format!(
            "{seen}; {} need a session of their own and are refused until [database] direct_url is set",
            needing.join(", ")
        )
    }
}

/// Zone names whose offset from UTC is always zero.
const UTC_NAMES: &[&str] = &[
    "UTC",
    "Etc/UTC",
    "UCT",
    "Etc/UCT",
    "Universal",
    "Etc/Universal",
    "Zulu",
    "Etc/Zulu",
    "GMT",
    "Etc/GMT",
    "GMT0",
    "Etc/GMT0",
    "GMT+0",
    "Etc/GMT+0",
    "GMT-0",
    "Etc/GMT-0",
    "Greenwich",
    "Etc/Greenwich",
];

/// A task comparing a `timestamp without time zone` column (or a domain
/// over it) with its cutoff, with no `time_zone`, on a session whose
/// `TimeZone` is not UTC: the ORMs that fill such columns write UTC
/// wall-clock time, so the cutoff is read off by the zone's offset.
async fn time_zone_warnings(client: &tokio_postgres::Client, config: &Config) -> Vec<String> {
    let Ok(row) = client.row("SELECT current_setting('TimeZone')", &[]).await else {
        return Vec::new();
    };
    let zone: String = row.get(0);
    if UTC_NAMES.iter().any(|n| n.eq_ignore_ascii_case(&zone)) {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    for task in config
        .tasks
        .iter()
        .filter(|t| t.options.time_zone.is_none())
    {
        let Some((table, filter)) = task.spec.rows_filter() else {
            continue;
        };
        let crate::tasks::rows::Filter::OlderThan { time_column, .. } = filter else {
            continue;
        };
        // The column as the task reads it (`'"createdAt"'` quoted, a
        // domain over `timestamp` told by its base type).
        let Ok(info) = crate::db::lookup_table(client, table).await else {
            continue;
        };
        let Ok(column) = info.named_column("time_column", time_column) else {
            continue;
        };
        if column.time == Some(crate::sql::TimeKind::Timestamp) {
            let (table, time_column) = (&info.name, crate::sql::as_written(&column.name));
            warnings.push(format!(
                "warning: task {}: column {time_column} of {table} is `timestamp without time zone` and the session's TimeZone is {zone}, with no time_zone set: its cutoff is read in {zone}; Prisma, Rails (ActiveRecord), Drizzle's `timestamp()` and TypeORM write UTC wall-clock time into such columns\n  help: set time_zone = \"UTC\" under [database] (or the zone the application writes in)",
                task.name
            ));
        }
    }
    warnings
}

//! `[migrations]` resolved into `migrate::Settings`: the folder and
//! `down_dir` relative to the config file, the format by name (or
//! `"command"` with its `[migrations.command]` table: the application's
//! own migrator), the timeouts, and the blocker policy.

use std::path::Path;

use super::file::{MigrationsCommandFile, MigrationsFile};
use super::problem::Problem;
use super::source::Source;
use crate::migrate::command::CommandSettings;
use crate::migrate::ledger::app::AppLedger;
use crate::migrate::{Blockers, Format, Settings};

pub(super) fn resolve(
    source: &Source,
    file: Option<&MigrationsFile>,
    backup_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Settings {
    let base = source.path.parent().unwrap_or(Path::new("."));
    let mut settings = Settings::defaults(base, backup_dir.to_path_buf());
    let Some(file) = file else {
        return settings;
    };
    settings.configured = true;
    let key = |k: &'static str| ["migrations", k];
    if let Some(dir) = &file.dir {
        settings.dir = base.join(dir);
    }
    settings.down_dir = file.down_dir.as_ref().map(|d| base.join(d));
    settings.format = match file.format.as_deref() {
        None | Some("auto") | Some("command") => None,
        Some(name) if Format::from_name(name).is_some() => Format::from_name(name),
        Some(other) => {
            problems.push(
                source
                    .problem(
                        &key("format"),
                        format!("\"{other}\" is not a migration format"),
                    )
                    .with_help(
                        "use \"auto\", \"sqlx\", \"dbmate\", \"golang-migrate\", \"flyway\", \"drizzle\", \"pgmaint\", or \"command\" (the application's own migrator, with a [migrations.command] table)",
                    ),
            );
            None
        }
    };
    settings.command = command(
        source,
        base,
        file.format.as_deref() == Some("command"),
        file.command.as_ref(),
        problems,
    );
    if settings.down_dir.is_some() && settings.command.is_some() {
        problems.push(
            source
                .problem(&key("down_dir"), "down_dir is for simple sqlx migrations; with format = \"command\" the application's migrator has its own")
                .with_help("remove down_dir; [migrations.command] down is the command that reverts"),
        );
    }
    if settings.down_dir.is_some() && settings.format.is_some_and(|f| f != Format::Sqlx) {
        problems.push(
            source
                .problem(&key("down_dir"), "down_dir is for simple sqlx migrations; pgmaint's own keep their down beside the up")
                .with_help("remove down_dir, or set format = \"sqlx\""),
        );
    }
    if let Some(timeout) = file.lock_timeout {
        if timeout.0.is_zero() {
            problems.push(
                source
                    .problem(&key("lock_timeout"), "lock_timeout = 0 would let a migration queue behind a long transaction, and every query on its table behind it")
                    .with_help("set a bound, such as \"2s\" (the default)"),
            );
        } else {
            settings.lock_timeout = timeout.0;
        }
    }
    if let Some(timeout) = file.statement_timeout {
        settings.statement_timeout = timeout.0;
    }
    settings.require_down = file.require_down;
    settings.irreversible = file.irreversible.clone();
    match file.blockers.as_deref() {
        None | Some("stop") => {}
        Some("wait") => settings.blockers = Blockers::Wait,
        Some(other) => problems.push(
            source
                .problem(&key("blockers"), format!("\"{other}\" is not a blocker policy"))
                .with_help("use \"stop\" (the default: change nothing and say who is in the way) or \"wait\" (up to blockers_wait)"),
        ),
    }
    if let Some(wait) = file.blockers_wait {
        settings.blockers_wait = wait.0;
    }
    if let Some(text) = &file.confirm_above {
        match crate::migrate::parse_size(text) {
            Some(bytes) => settings.confirm_above = bytes,
            None => problems.push(
                source
                    .problem(&key("confirm_above"), format!("\"{text}\" is not a size"))
                    .with_help("write a size as PostgreSQL does, such as \"1GB\" or \"512MB\""),
            ),
        }
    }
    let known = crate::migrate::lint::known_rules();
    for rule in &file.lint_exclude {
        if known.contains(rule) {
            settings.lint_exclude.push(rule.clone());
            continue;
        }
        let help = match super::source::nearest(rule, known.iter().map(String::as_str)) {
            Some(near) => format!("did you mean \"{near}\"? the rules are listed in docs/migrations.md"),
            None => "the rules are listed in docs/migrations.md, and `pgmaint migrate lint` names the rule of each finding".to_string(),
        };
        problems.push(
            source
                .problem(
                    &key("lint_exclude"),
                    format!("\"{rule}\" is not a lint rule"),
                )
                .with_help(help),
        );
    }
    if let Some(retries) = file.max_retries {
        settings.max_retries = retries;
    }
    settings
}

/// `[migrations.command]`, read only with `format = "command"` (and
/// refused without it, so a table that does nothing is not left in the
/// file unnoticed).
fn command(
    source: &Source,
    base: &Path,
    chosen: bool,
    file: Option<&MigrationsCommandFile>,
    problems: &mut Vec<Problem>,
) -> Option<CommandSettings> {
    let key = |k: &'static str| ["migrations", "command", k];
    let file = match (chosen, file) {
        (false, None) => return None,
        (false, Some(_)) => {
            problems.push(
                source
                    .problem(&["migrations", "command"], "[migrations.command] is read only with format = \"command\"")
                    .with_help("set [migrations] format = \"command\" to run the application's own migrator, or remove the table"),
            );
            return None;
        }
        (true, None) => {
            problems.push(
                source
                    .problem(&["migrations", "format"], "format = \"command\" needs a [migrations.command] table with `up`, the command that applies the migrations")
                    .with_help("add\n    [migrations.command]\n    up = \"npx knex migrate:latest\"   # or bin/rails db:migrate, python manage.py migrate --noinput, npx prisma migrate deploy"),
            );
            return None;
        }
        (true, Some(file)) => file,
    };
    let non_empty =
        |name: &'static str, value: &Option<String>, problems: &mut Vec<Problem>| match value
            .as_deref()
            .map(str::trim)
        {
            Some("") => {
                problems.push(
                    source
                        .problem(&key(name), format!("[migrations.command] {name} is empty"))
                        .with_help("write the shell command, or leave the key out"),
                );
                None
            }
            Some(_) => value.clone(),
            None => None,
        };
    let up = non_empty("up", &file.up, problems);
    if file.up.is_none() {
        problems.push(
            source
                .problem(&key("up"), "[migrations.command] up is missing: the command that applies the migrations")
                .with_help("add up = \"npx knex migrate:latest\" (or bin/rails db:migrate, python manage.py migrate --noinput, npx prisma migrate deploy)"),
        );
    }
    let down = non_empty("down", &file.down, problems);
    let status = non_empty("status", &file.status, problems);
    let ledger = match file.ledger.as_deref() {
        None => None,
        Some(name) => match AppLedger::from_name(name) {
            Some(ledger) => Some(ledger),
            None => {
                problems.push(
                    source
                        .problem(&key("ledger"), format!("\"{name}\" is not a ledger pgmaint reads"))
                        .with_help("use \"knex\", \"rails\", \"django\" or \"prisma\", or leave it out to find it from the database's tables"),
                );
                None
            }
        },
    };
    let ledger_table = non_empty("ledger_table", &file.ledger_table, problems);
    match (&ledger_table, ledger) {
        (Some(_), None) if file.ledger.is_none() => problems.push(
            source
                .problem(&key("ledger_table"), "[migrations.command] ledger_table needs `ledger`: pgmaint finds a ledger by its tool's default table name")
                .with_help("add ledger = \"knex\" (or \"rails\"), the migrator that keeps that table"),
        ),
        (Some(_), Some(tool)) if !tool.can_be_renamed() => problems.push(
            source
                .problem(&key("ledger_table"), format!("{} always keeps its ledger in {}", tool.as_str(), tool.table()))
                .with_help("remove ledger_table"),
        ),
        _ => {}
    }
    let workdir = match &file.workdir {
        Some(dir) => base.join(dir),
        None => base.to_path_buf(),
    };
    Some(CommandSettings {
        up: up?,
        down,
        status,
        ledger,
        ledger_table,
        workdir,
        trace: file.trace.unwrap_or(true),
    })
}

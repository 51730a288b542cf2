//! `[migrations]` resolved into `migrate::Settings`: the folder and
//! `down_dir` relative to the config file, the format by name (the ones
//! PRODUCT.md names that this version does not read yet are refused at
//! the key), the timeouts, and the blocker policy.

use std::path::Path;

use super::file::MigrationsFile;
use super::problem::Problem;
use super::source::Source;
use crate::migrate::{Blockers, Format, LATER_FORMATS, Settings};

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
        None | Some("auto") => None,
        Some(name) if Format::from_name(name).is_some() => Format::from_name(name),
        Some(later) if LATER_FORMATS.contains(&later) => {
            problems.push(
                source
                    .problem(
                        &key("format"),
                        format!(
                            "format \"{later}\" is not supported by this version of pgmaint yet"
                        ),
                    )
                    .with_help(
                        "formats read today: \"sqlx\", \"dbmate\", \"golang-migrate\", \"flyway\", \"drizzle\", \"pgmaint\" (or \"auto\" to find which)",
                    ),
            );
            None
        }
        Some(other) => {
            problems.push(
                source
                    .problem(
                        &key("format"),
                        format!("\"{other}\" is not a migration format"),
                    )
                    .with_help(
                        "use \"auto\", \"sqlx\", \"dbmate\", \"golang-migrate\", \"flyway\", \"drizzle\" or \"pgmaint\"",
                    ),
            );
            None
        }
    };
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

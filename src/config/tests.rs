//! Config reading: every problem reported with its place, defaults layered.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, Problems> {
    Config::parse(Path::new("pgmaint.toml"), text)
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("config should be refused").0
}

/// Parses with these variables as the whole environment.
fn parse_with(text: &str, vars: &[(&str, &str)]) -> (Option<Config>, Vec<Problem>) {
    let env = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    Config::parse_all_with(Path::new("pgmaint.toml"), text, &env)
}

#[test]
fn a_good_config_resolves_with_layered_defaults() {
    let config = parse(
        r#"
[database]
lock_timeout = "2s"
[defaults]
batch_size = 100
[tasks.a]
kind = "purge"
table = "t"
where = "x"
[tasks.b]
kind = "purge"
table = "t"
time_column = "created_at"
older_than = "7 days"
batch_size = 7
pause = "10ms"
"#,
    )
    .unwrap();
    let a = config.task("a").unwrap();
    assert_eq!(a.options.batch_size, 100);
    assert_eq!(a.options.lock_timeout.0.as_millis(), 2000);
    let b = config.task("b").unwrap();
    assert_eq!(
        (b.options.batch_size, b.options.pause.0.as_millis()),
        (7, 10)
    );
    assert_eq!(config.state_schema, "pgmaint");
}

#[test]
fn every_problem_in_the_file_is_reported_with_line_and_column() {
    let found = problems(
        r#"[database]
lock_timeout = "soon"

[tasks.a]
kind = "purge"
tabel = "t"
where = "x"

[tasks.b]
kind = "purge"
table = 5
where = "x"
colour = "red"
"#,
    );
    let text: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t
                .starts_with("pgmaint.toml:2:16: database.lock_timeout: invalid duration `soon`")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with(
            "pgmaint.toml:6:1: tasks.a.tabel: unknown key `tabel` in a purge task; did you mean `table`?"
        )),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t
                .starts_with("pgmaint.toml:11:9: tasks.b.table: `table` must be a string, not 5")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with(
            "pgmaint.toml:13:1: tasks.b.colour: unknown key `colour` in a purge task"
        )),
        "{text:#?}"
    );
}

#[test]
fn a_task_missing_its_kind_does_not_hide_the_next_task() {
    let found = problems(
        "[tasks.a]\ntable = \"t\"\n\n[tasks.b]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nbogus = 1\n",
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["tasks.a", "tasks.b.bogus"], "{found:#?}");
}

#[test]
fn unknown_kinds_are_refused_with_the_known_ones() {
    let found = problems("[tasks.a]\nkind = \"compact\"\ntable = \"t\"\n");
    assert!(
        found[0]
            .message
            .starts_with("`compact` is not a valid `kind`; it takes one of `purge`")
            && found[0].message.contains("`partitions`"),
        "{found:#?}"
    );
    let found = problems("[tasks.a]\nkind = \"purg\"\ntable = \"t\"\n");
    assert!(
        found[0].message.ends_with("did you mean `purge`?"),
        "{found:#?}"
    );
}

#[test]
fn orphans_need_matching_column_counts() {
    let found = problems(
        "[tasks.a]\nkind = \"orphans\"\ntable = \"c\"\ncolumn = [\"a\", \"b\"]\nreferences = \"p(x)\"\n",
    );
    assert_eq!(found[0].key, "tasks.a.references", "{found:#?}");
}

#[test]
fn purge_needs_exactly_one_filter() {
    let found = problems(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\ntime_column = \"c\"\nolder_than = \"1 day\"\n",
    );
    assert_eq!(found[0].key, "tasks.a.where");
    let found = problems("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\ntime_column = \"c\"\n");
    assert!(
        found[0].message.contains("needs `older_than`"),
        "{found:#?}"
    );
}

#[test]
fn a_missing_environment_variable_is_named_and_nothing_else_at_its_key() {
    let (_, found) = parse_with(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\ntime_column = \"c\"\nolder_than = \"${RETENTION}\"\n",
        &[],
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "tasks.a.older_than");
    assert_eq!(
        found[0].message,
        "environment variable `RETENTION` is not set"
    );
    assert_eq!(found[0].place(), "pgmaint.toml:5:14");
}

#[test]
fn variables_expand_in_every_string_value() {
    let text = r#"name = "${APP} production"
[database]
lock_timeout = "${LOCK}"
[tasks.old]
kind = "purge"
table = "${TABLE}"
time_column = "created_at"
older_than = "${RETENTION}"
description = "keeps ${RETENTION}; $${literal}"
[tasks.expired]
kind = "purge"
table = "t"
where = "expires_at < now() - interval '${GRACE}'"
[schedules.nightly]
cron = "${CRON}"
tasks = ["${TASK}"]
[notifiers.mail]
kind = "email"
smtp = "${SMTP}"
from = "${FROM_EMAIL}"
to = ["${ONCALL}"]
"#;
    let vars = [
        ("APP", "billing"),
        ("LOCK", "2s"),
        ("TABLE", "sessions"),
        ("RETENTION", "30 days"),
        ("GRACE", "1 hour"),
        ("CRON", "0 3 * * *"),
        ("TASK", "old"),
        ("SMTP", "smtp://mail.example.com:587"),
        ("FROM_EMAIL", "pgmaint@example.com"),
        ("ONCALL", "oncall@example.com"),
    ];
    let (config, found) = parse_with(text, &vars);
    assert!(found.is_empty(), "{found:#?}");
    let config = config.unwrap();
    assert_eq!(config.name.as_deref(), Some("billing production"));
    assert_eq!(config.database.lock_timeout.unwrap().0.as_millis(), 2000);
    let old = config.task("old").unwrap();
    assert_eq!(old.spec.target(), "sessions");
    assert_eq!(
        old.description.as_deref(),
        Some("keeps 30 days; ${literal}")
    );
    let spec = serde_json::to_value(&old.spec).unwrap();
    assert!(spec.to_string().contains("30 days"), "{spec}");
    let expired = serde_json::to_value(&config.task("expired").unwrap().spec).unwrap();
    assert!(
        expired.to_string().contains("interval '1 hour'"),
        "{expired}"
    );
    assert_eq!(config.schedule("nightly").unwrap().cron, "0 3 * * *");
    assert_eq!(config.schedule("nightly").unwrap().tasks, ["old"]);
    assert_eq!(
        config.notifiers[0].from.as_deref(),
        Some("pgmaint@example.com")
    );
    assert_eq!(config.notifiers[0].to, ["oncall@example.com"]);
    assert!(config.deferred.is_empty(), "{:#?}", config.deferred);
}

#[test]
fn problems_after_an_expanded_value_point_at_the_file_as_written() {
    let text = "[tasks.a]\nkind = \"purge\"\ntable = \"${TABLE}\"\nwhere = \"x\"\ntabel = 1\n[schedules.s]\ncron = \"${CRON}\"\ntasks = [\"a\"]\n";
    let (_, found) = parse_with(
        text,
        &[
            ("TABLE", "a_much_longer_table_name"),
            ("CRON", "61 * * * *"),
        ],
    );
    let places: Vec<(String, String)> = found.iter().map(|p| (p.place(), p.key.clone())).collect();
    assert_eq!(
        places,
        [
            ("pgmaint.toml:5:1".to_string(), "tasks.a.tabel".to_string()),
            (
                "pgmaint.toml:7:8".to_string(),
                "schedules.s.cron".to_string()
            ),
        ],
        "{found:#?}"
    );
    assert!(
        found[1]
            .message
            .contains("the minute field `61` is not valid")
            && found[1].message.contains("0-59"),
        "the cron is checked after expansion: {found:#?}"
    );
}

#[test]
fn a_notifier_whose_variable_is_unset_holds_up_only_what_sends_through_it() {
    let text = "[notifiers.mail]\nkind = \"email\"\nsmtp = \"smtp://mail.example.com\"\nfrom = \"${FROM_EMAIL}\"\nto = [\"oncall@example.com\"]\n[api]\ntoken = \"${API_TOKEN}\"\n";
    let (config, found) = parse_with(text, &[]);
    assert!(found.is_empty(), "{found:#?}");
    let config = config.unwrap();
    assert!(config.notifiers.is_empty());
    let mail = config.problems_for(|need| *need == Need::Notifier("mail".into()));
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].key, "notifiers.mail.from");
    assert!(mail[0].message.contains("FROM_EMAIL"));
    assert_eq!(config.problems_for(|need| *need == Need::Api).len(), 1);
    assert_eq!(config.api.token, None);
}

#[test]
fn notifier_addresses_and_urls_are_checked_after_expansion() {
    let text = "[notifiers.mail]\nkind = \"email\"\nsmtp = \"${SMTP}\"\nfrom = \"${FROM_EMAIL}\"\nto = [\"oncall@example.com\", \"nobody\"]\n[notifiers.hook]\nkind = \"webhook\"\nurl = \"${HOOK}\"\n";
    let (config, found) = parse_with(
        text,
        &[
            ("SMTP", "imap://mail.example.com"),
            ("FROM_EMAIL", "not an address"),
            ("HOOK", "hooks.example.com/x"),
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
    let config = config.unwrap();
    let keys: Vec<String> = config
        .problems_for(|_| true)
        .iter()
        .map(|p| p.key.clone())
        .collect();
    assert_eq!(
        keys,
        [
            "notifiers.hook.url",
            "notifiers.mail.smtp",
            "notifiers.mail.from",
            "notifiers.mail.to"
        ],
        "{:#?}",
        config.deferred
    );
    assert!(config.notifiers.is_empty());
}

#[test]
fn thresholds_in_the_wrong_order_are_refused_for_every_check() {
    let found = problems(
        "[health.checks.cache-hit]\nwarning = 0.90\ncritical = 0.95\n[health.checks.connections]\nwarning = 0.99\n[health.checks.long-running-queries]\nwarning = 600\ncritical = 60\n",
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "health.checks.cache-hit.warning",
            "health.checks.connections.warning",
            "health.checks.long-running-queries.warning"
        ],
        "{found:#?}"
    );
    assert!(
        found[0].message.contains("lower values are worse"),
        "{found:#?}"
    );
    assert!(
        found[1].message.contains("0.95 (the default)"),
        "{found:#?}"
    );
    parse("[health.checks.cache-hit]\nwarning = 0.995\ncritical = 0.9\n[health.checks.connections]\ncritical = 0.99\n")
        .expect("thresholds in order");
}

#[test]
fn wrong_types_are_told_in_words_naming_the_key() {
    let found = problems(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nbatch_size = \"big\"\nenabled = \"yes\"\n",
    );
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`batch_size` must be a whole number (0 or more), not the string \"big\"",
            "`enabled` must be true or false, not the string \"yes\"",
        ],
        "{found:#?}"
    );
}

#[test]
fn an_unknown_key_lists_the_keys_of_its_kind_only() {
    let found = problems("[tasks.a]\nkind = \"sql\"\nsqll = \"select 1\"\n");
    let unknown = found.iter().find(|p| p.key == "tasks.a.sqll").unwrap();
    assert_eq!(
        unknown.message,
        "unknown key `sqll` in a sql task; did you mean `sql`?"
    );
    let help = unknown.help.as_deref().unwrap();
    assert!(
        help.starts_with("sql tasks take: `sql`, `transaction`"),
        "{help}"
    );
    assert!(
        !help.contains("older_than") && !help.contains("views"),
        "{help}"
    );
    let found = problems("[database]\nurll = \"x\"\n");
    assert!(
        found[0].message.ends_with("did you mean `url`?"),
        "{found:#?}"
    );
}

#[test]
fn a_schedule_naming_a_task_with_a_problem_is_not_told_it_is_missing() {
    let found = problems(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nbogus = 1\n[schedules.s]\ncron = \"0 2 * * *\"\ntasks = [\"a\"]\n",
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["tasks.a.bogus"], "{found:#?}");
}

#[test]
fn a_blanked_value_with_non_ascii_text_keeps_later_places_right() {
    let found = problems(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nbatch_size = \"größe\"\ntabel = 1\n",
    );
    let places: Vec<String> = found.iter().map(|p| p.place()).collect();
    assert_eq!(
        places,
        ["pgmaint.toml:5:14", "pgmaint.toml:6:1"],
        "{found:#?}"
    );
}

#[test]
fn the_config_may_name_its_database() {
    let config = parse("name = \"billing\"\n").unwrap();
    assert_eq!(config.name.as_deref(), Some("billing"));
}

#[test]
fn interpolation_replaces_set_variables_and_keeps_escapes() {
    let home = std::env::var("HOME").unwrap_or_default();
    assert_eq!(interpolate_env("a${HOME}b").unwrap(), format!("a{home}b"));
    assert_eq!(
        interpolate_env("$${HOME} costs $5").unwrap(),
        "${HOME} costs $5"
    );
}

#[test]
fn bad_cron_and_time_zone_are_reported() {
    let found = problems(
        "[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\n[schedules.s]\ncron = \"61 * * * *\"\ntimezone = \"Mars/Olympus\"\ntasks = [\"a\", \"nope\"]\n",
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "schedules.s.cron",
            "schedules.s.timezone",
            "schedules.s.tasks"
        ],
        "{found:#?}"
    );
}

#[test]
fn high_severity_backs_up_by_default_and_keys_must_belong_to_the_kind() {
    let config =
        parse("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nseverity = \"high\"\n")
            .unwrap();
    assert!(config.task("a").unwrap().backup);
    let config = parse("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"x\"\nseverity = \"high\"\nbackup = false\n").unwrap();
    assert!(!config.task("a").unwrap().backup);
    let config =
        parse("[tasks.a]\nkind = \"sql\"\nsql = \"select 1\"\nseverity = \"critical\"\n").unwrap();
    assert!(
        !config.task("a").unwrap().backup,
        "a sql task has nothing to back up"
    );
    let found = problems("[tasks.a]\nkind = \"sql\"\nsql = \"select 1\"\ntable = \"t\"\n");
    assert_eq!(found[0].key, "tasks.a.table", "{found:#?}");
    assert!(
        found[0].message.contains("not a key of a sql task"),
        "{found:#?}"
    );
}

#[test]
fn syntax_errors_name_their_place() {
    let found = problems("[tasks.a\nkind = 1\n");
    assert!(
        found[0].place().starts_with("pgmaint.toml:1:"),
        "{found:#?}"
    );
}

#[test]
fn a_key_of_another_kind_is_refused_with_the_keys_of_this_kind() {
    let found =
        problems("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"true\"\nviews = [\"v\"]\n");
    let foreign = found.iter().find(|p| p.key == "tasks.a.views").unwrap();
    assert_eq!(foreign.message, "`views` is not a key of a purge task");
    assert_eq!(
        foreign.help.as_deref(),
        Some(
            "purge tasks take: table, where, time_column, older_than, backup, on_referenced, parallel"
        )
    );
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn a_foreign_key_that_serde_refused_is_reported_once() {
    let found =
        problems("[tasks.a]\nkind = \"purge\"\ntable = \"t\"\nwhere = \"true\"\nviews = 5\n");
    let at_views: Vec<_> = found.iter().filter(|p| p.key == "tasks.a.views").collect();
    assert_eq!(at_views.len(), 1, "{found:#?}");
    // The key does not belong to a purge task at all, whatever its value:
    // that is what is said (before #12 item 1 it was the value's type).
    assert_eq!(at_views[0].message, "`views` is not a key of a purge task");
}

#[test]
fn a_zero_timeout_is_an_error_at_its_key_unless_statement_timeout_says_off() {
    let found = problems(
        r#"
[database]
lock_timeout = "0ms"
statement_timeout = "0s"
[tasks.a]
kind = "purge"
table = "t"
where = "x"
lock_timeout = "off"
"#,
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "database.lock_timeout",
            "database.statement_timeout",
            "tasks.a.lock_timeout"
        ],
        "{found:?}"
    );
    assert_eq!(found[0].location.line, Some(3));
    assert!(
        found[1].help.as_deref().unwrap().contains("\"off\""),
        "{found:?}"
    );
    let config =
        parse("[database]\nstatement_timeout = \"off\"\n[health]\nstatement_timeout = \"OFF\"\n")
            .expect("off is a deliberate no-limit");
    assert!(config.session_timeouts().statement_timeout.0.is_zero());
}

#[test]
fn names_are_1_to_63_characters_of_lower_case_digits_underscore_and_dash() {
    let long = "a".repeat(64);
    let text = format!(
        "[tasks.\"Bad.Name\"]\nkind = \"sql\"\nsql = \"SELECT 1\"\n[tasks.{long}]\nkind = \"sql\"\nsql = \"SELECT 1\"\n[tasks.ok-name_2]\nkind = \"sql\"\nsql = \"SELECT 1\"\n[schedules.\"nightly run\"]\ncron = \"0 2 * * *\"\ntasks = [\"ok-name_2\"]\n"
    );
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tasks.Bad.Name",
            &format!("tasks.{long}"),
            "schedules.nightly run"
        ],
        "{found:?}"
    );
    assert!(found[1].message.contains("1 to 63"), "{found:?}");
    assert!(super::name_problem(&"a".repeat(63)).is_none());
    assert!(super::name_problem("").is_some());
}

#[test]
fn a_short_api_token_is_an_error_saying_how_to_make_one() {
    let found = problems("[api]\ntoken = \"x\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "api.token");
    assert!(found[0].message.contains("at least 32"), "{found:?}");
    assert!(
        found[0]
            .help
            .as_deref()
            .unwrap()
            .contains("openssl rand -hex 32"),
        "{found:?}"
    );
    parse(&format!("[api]\ntoken = \"{}\"\n", "a".repeat(32))).expect("32 characters");
}

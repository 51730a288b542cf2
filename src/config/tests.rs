//! Config reading: every problem reported with its place, defaults layered.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, Problems> {
    Config::parse(Path::new("pgmaint.toml"), text)
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("config should be refused").0
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
        text.iter()
            .any(|t| t.starts_with("pgmaint.toml:6:1: tasks.a.tabel: unknown field `tabel`")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("pgmaint.toml:11:9: tasks.b.table: invalid type")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("pgmaint.toml:13:1: tasks.b.colour: unknown field `colour`")),
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
        found[0].message.contains("unknown variant `compact`")
            && found[0].message.contains("partitions"),
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
fn a_missing_environment_variable_is_named() {
    let found = problems("[database]\nurl = \"${PGMAINT_TEST_SURELY_UNSET}\"\n");
    assert_eq!(found[0].key, "database.url");
    assert!(found[0].message.contains("PGMAINT_TEST_SURELY_UNSET"));
    assert!(found[0].place.starts_with("pgmaint.toml:2:"));
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
    assert!(found[0].place.starts_with("pgmaint.toml:1:"), "{found:#?}");
}

//! `pgmaint demo`: a newcomer's first command. Starts a throwaway cluster,
//! loads a small app with expired data, writes a config beside it, and runs
//! init, plan, run and history on it, saying what happens.

use std::path::PathBuf;

use super::{CliError, execute};
use crate::cli::{Cli, Command, DemoArgs, PlanArgs, RunArgs, Selection};
use crate::cluster::{Cluster, ClusterOptions};

const SAMPLE_APP: &str = r#"
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE password_reset_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    token text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE TABLE sessions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    expires_at timestamptz NOT NULL
);
CREATE TABLE request_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL,
    path text NOT NULL,
    status int NOT NULL
);
CREATE INDEX ON request_logs (created_at);

INSERT INTO users (email) SELECT 'user' || i || '@example.com' FROM generate_series(1, 500) i;
-- A third of the tokens expired, a third used, a third still valid.
INSERT INTO password_reset_tokens (user_id, token, expires_at, used_at)
SELECT 1 + i % 500, md5(i::text),
       now() + CASE i % 3 WHEN 0 THEN interval '-2 days' ELSE interval '1 day' END,
       CASE WHEN i % 3 = 1 THEN now() - interval '1 hour' END
  FROM generate_series(1, 3000) i;
INSERT INTO sessions (user_id, expires_at)
SELECT 1 + i % 500, now() + (i % 20 - 10) * interval '1 day' FROM generate_series(1, 20000) i;
-- Two weeks of request logs, oldest first, as an app would write them.
INSERT INTO request_logs (created_at, path, status)
SELECT now() - interval '14 days' + i * interval '6 seconds', '/api/items/' || i % 97, (ARRAY[200, 200, 200, 404, 500])[1 + i % 5]
  FROM generate_series(1, 200000) i;
ANALYZE;
"#;

const SAMPLE_CONFIG: &str = r#"# pgmaint's config for the demo app. Every key is explained in the README.
[database]
url = "{url}"
lock_timeout = "1s"

[defaults]
batch_size = 5000

[tasks.expired_password_resets]
kind = "purge"
description = "Reset tokens that expired or were used"
table = "password_reset_tokens"
where = "expires_at < now() OR used_at IS NOT NULL"

[tasks.expired_sessions]
kind = "purge"
table = "sessions"
where = "expires_at < now()"

[tasks.old_request_logs]
kind = "purge"
description = "Request logs are kept for 7 days"
table = "request_logs"
time_column = "created_at"
older_than = "7 days"
batch_size = 10000

[schedules.nightly]
cron = "0 3 * * *"
timezone = "UTC"
tasks = ["expired_password_resets", "expired_sessions", "old_request_logs"]
"#;

pub async fn demo(cli: &Cli, args: &DemoArgs) -> Result<bool, CliError> {
    say(cli, "Starting a throwaway PostgreSQL cluster...");
    let cluster = tokio::task::spawn_blocking({
        let keep = args.keep;
        move || Cluster::start(ClusterOptions { fsync: false, keep })
    })
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?
    .map_err(|e| {
        // A machine without the server binaries (or a user to run them as)
        // is a setup problem, exit 2: nothing was started or changed.
        if e.is_setup() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    })?;
    let result = demo_on(cli, &cluster).await;
    if args.keep {
        let url = cluster.url("demo_app");
        println!();
        println!("The cluster keeps running:");
        println!("  database URL: {url}");
        println!(
            "  config:       {}",
            cluster.dir.join("pgmaint.toml").display()
        );
        println!(
            "  try:          pgmaint --config {} tasks",
            cluster.dir.join("pgmaint.toml").display()
        );
        println!("  stop it with: {}", cluster.stop_command());
        std::mem::forget(cluster);
    } else {
        cluster.stop();
        say(
            cli,
            "\nThe throwaway cluster was stopped and removed. Run `pgmaint demo --keep` to explore it yourself.",
        );
    }
    result
}

async fn demo_on(cli: &Cli, cluster: &Cluster) -> Result<bool, CliError> {
    let admin_target = crate::connect::resolve(Some(&cluster.url("postgres")), None)?;
    let admin = crate::connect::connect(&admin_target).await?;
    admin.batch_execute("CREATE DATABASE demo_app").await?;
    let url = cluster.url("demo_app");
    let app = crate::connect::connect(&crate::connect::resolve(Some(&url), None)?).await?;
    app.batch_execute(SAMPLE_APP).await?;
    let config_path: PathBuf = cluster.dir.join("pgmaint.toml");
    std::fs::write(&config_path, SAMPLE_CONFIG.replace("{url}", &url))
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", config_path.display())))?;

    say(
        cli,
        &format!(
            "Loaded a sample app into database demo_app: 500 users, 3,000 password reset tokens (2,000 expired or used),\n20,000 sessions (half expired) and 200,000 request logs over 14 days. Config written to {}.\n",
            config_path.display()
        ),
    );
    let step = |command: Command| Cli {
        config: Some(config_path.clone()),
        database_url: None,
        json: cli.json,
        verbose: cli.verbose,
        quiet: cli.quiet,
        command,
    };
    say(
        cli,
        "$ pgmaint init          # pgmaint's own schema: where runs are recorded",
    );
    Box::pin(execute(step(Command::Init))).await?;
    say(
        cli,
        "\n$ pgmaint plan          # what a run would delete; changes nothing",
    );
    Box::pin(execute(step(Command::Plan(PlanArgs { tasks: vec![] })))).await?;
    say(
        cli,
        "\n$ pgmaint run --all     # deletes in batches, each its own short transaction under lock_timeout",
    );
    let ok = Box::pin(execute(step(Command::Run(RunArgs {
        selection: Selection {
            tasks: vec![],
            schedule: None,
            all: true,
        },
        dry_run: false,
        yes: false,
        batch_size: None,
        max_runtime: None,
    }))))
    .await?;
    say(
        cli,
        "\n$ pgmaint history       # the audit trail: who ran what, when, and what it did",
    );
    let history = <Cli as clap::Parser>::try_parse_from(["pgmaint", "history", "--limit", "5"])
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Box::pin(execute(step(history.command))).await?;
    let remaining: i64 = app
        .query_one(
            "SELECT count(*) FROM request_logs WHERE created_at < now() - interval '7 days'",
            &[],
        )
        .await?
        .get(0);
    say(
        cli,
        &format!(
            "\nWhat happened: the plan counted the expired rows and showed the statements; the run deleted exactly those rows\n\
         in batches (request logs older than 7 days left now: {remaining}); history shows both runs, the dry run marked as such.\n\
         A real deployment puts these tasks in pgmaint.toml and runs `pgmaint run --schedule nightly` from cron."
        ),
    );
    Ok(ok)
}

fn say(cli: &Cli, text: &str) {
    if !cli.quiet && !cli.json {
        println!("{text}");
    }
}

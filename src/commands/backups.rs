//! `pgmaint backups` and `pgmaint restore`: what destructive tasks saved,
//! and putting it back. A restore is recorded in the audit trail like a run.

use super::{CliError, connect, load_config, print_json};
use crate::backup;
use crate::cli::{Cli, RestoreArgs};
use crate::output;
use crate::status::Status;
use crate::store::{self, Trigger};
use crate::tasks::Outcome;

pub async fn backups(cli: &Cli) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let client = connect(cli, &config).await?;
    store::ensure_ready(&client, &config.state_schema).await?;
    let list = backup::list(&client, &config.state_schema)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if cli.json {
        print_json(&serde_json::json!({ "backups": list }));
        return Ok(true);
    }
    if list.is_empty() {
        output::paragraph(&format!(
            "No backups. Tasks with `backup = true` (the default for high and critical ones) write them to {}.",
            config.backups.dir.display()
        ));
        return Ok(true);
    }
    let mut table = output::Table::new(&[
        "id", "kind", "task", "table", "rows", "files", "run", "created", "path",
    ])
    .optional(&["files", "run", "created", "path"]);
    for b in &list {
        table.add_row([
            b.id.to_string(),
            b.kind.clone(),
            b.task.clone(),
            b.table.clone(),
            output::count(b.rows as u64),
            b.files.to_string(),
            b.run_id.map_or_else(|| "-".into(), |id| id.to_string()),
            b.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            b.path.clone(),
        ]);
    }
    table.print();
    output::paragraph(
        "Restore a backup with `pgmaint restore ID` (try --dry-run first). An export is an archive's own copy of the rows it moved, kept with the archive and never pruned.",
    );
    Ok(true)
}

pub async fn restore(cli: &Cli, args: &RestoreArgs) -> Result<bool, CliError> {
    let config = load_config(cli, false)?;
    let (target, named) = super::target(cli, &config)?;
    let mut client = super::connect_to(&target, named).await?;
    let schema = config.state_schema.as_str();
    // The restore's run is leased, renewed on a connection of its own.
    let keeper = crate::lease::Keeper::start(&target, schema, crate::store::LeaseOwner::new());
    store::ensure_ready(&client, schema).await?;
    if !args.dry_run && crate::db::in_recovery(&client).await? {
        return Err(CliError::Failed(
            "this server is a standby; restore into the primary".into(),
        ));
    }
    // A backup that does not exist is a usage error: nothing is recorded
    // or changed.
    let known = backup::list(&client, schema)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(export) = known
        .iter()
        .find(|b| b.id == args.backup && b.kind == "export")
    {
        return Err(CliError::Usage(format!(
            "{} is an export, not a backup: archive task `{}` wrote the rows it moved from {} to {} ({} file(s)), as its copy of them\n  help: restore takes the id of a backup (kind `backup` in `pgmaint backups`); to load an export's rows into a table, read each file with `\\copy TABLE FROM PROGRAM 'zstd -dc FILE' (FORMAT csv, HEADER)` (`gzip -dc` for .csv.gz)",
            export.id, export.task, export.table, export.path, export.files
        )));
    }
    if !known
        .iter()
        .any(|b| b.id == args.backup && b.kind == "backup")
    {
        return Err(CliError::Usage(format!(
            "there is no backup {}\n  help: `pgmaint backups` lists them{}",
            args.backup,
            match known.iter().find(|b| b.kind == "backup") {
                Some(latest) => format!(" (the latest is {})", latest.id),
                None => " (there are none yet)".to_string(),
            }
        )));
    }
    let trigger = Trigger::cli(&super::run::command_line());
    let run_id =
        store::start_run(&mut client, schema, &trigger, args.dry_run, keeper.owner()).await?;
    let task = format!("restore {}", args.backup);
    let task_run_id =
        store::start_task_run(&client, schema, run_id, &task, "restore", args.dry_run).await?;
    let started = std::time::Instant::now();
    let lock_timeout = config
        .database
        .lock_timeout
        .unwrap_or(crate::config::TaskOptions::BUILT_IN.lock_timeout)
        .as_pg_setting();
    let result = backup::restore(
        &mut client,
        schema,
        args.backup,
        args.dry_run,
        &lock_timeout,
    )
    .await;
    let outcome = match &result {
        Ok(report) => Outcome {
            status: Status::Succeeded,
            rows: report.restored + report.cascade.iter().map(|p| p.restored).sum::<u64>(),
            batches: 1,
            retries: 0,
            error: None,
            details: serde_json::to_value(report).unwrap_or_default(),
        },
        Err(err) => Outcome {
            status: Status::Failed,
            rows: 0,
            batches: 0,
            retries: 0,
            error: Some(err.to_string()),
            details: serde_json::json!({ "backup_id": args.backup, "error": err.to_string() }),
        },
    };
    store::finish_task_run(
        &client,
        schema,
        task_run_id,
        &outcome,
        started.elapsed().as_millis() as i64,
    )
    .await?;
    store::finish_run(
        &client,
        schema,
        run_id,
        outcome.status,
        outcome.error.as_deref(),
    )
    .await?;
    let report = result.map_err(|e| CliError::Failed(e.to_string()))?;
    if cli.json {
        print_json(&report);
    } else if !cli.quiet {
        let verb = if report.dry_run {
            "would put back"
        } else {
            "put back"
        };
        if report.action == "set_null" {
            let verb = if report.dry_run {
                "would set back"
            } else {
                "set back"
            };
            output::paragraph(&format!(
                "Backup {} into {}: {verb} the columns set to NULL in {} of {} row(s); {} hold a value again (set back before, or changed since) or are gone: left alone.",
                report.backup_id,
                report.table,
                output::count(report.restored),
                output::count(report.rows_in_backup),
                output::count(report.already_present)
            ));
        } else {
            output::paragraph(&format!(
                "Backup {} into {}: {verb} {} of {} row(s); {} already present (left alone).",
                report.backup_id,
                report.table,
                output::count(report.restored),
                output::count(report.rows_in_backup),
                output::count(report.already_present)
            ));
        }
        for part in &report.cascade {
            let what = if part.action == "cascade" {
                "row(s) its ON DELETE CASCADE removed"
            } else {
                "row(s) whose columns it changed"
            };
            output::paragraph(&format!(
                "  {} ({}): {verb} {} of {} {what}; {} left alone.",
                part.table,
                part.via,
                output::count(part.restored),
                output::count(part.rows_in_backup),
                output::count(part.already_present)
            ));
        }
        if report.dry_run {
            output::println("Nothing was changed.");
        }
    }
    Ok(true)
}

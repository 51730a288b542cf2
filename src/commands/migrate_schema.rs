//! `pgmaint migrate test` and `migrate drift`: what the migrations do to
//! a schema, learnt on a scratch cluster (`migrate::reversibility`,
//! `migrate::drift`) and printed one line per object; nothing changes on
//! the live database.

use serde_json::json;

use super::migrate::{Context, parse_version};
use super::{CliError, print_json};
use crate::cli::MigrateTestArgs;
use crate::migrate::reversibility::{self, Verdict};
use crate::migrate::scratch::Scratch;
use crate::migrate::status::State;
use crate::migrate::{Migration, drift};
use crate::output::paragraph;

pub(super) async fn test(ctx: &Context<'_>, args: &MigrateTestArgs) -> Result<bool, CliError> {
    let migrator = ctx.migrator;
    let entries = migrator.entries(ctx.client).await?;
    let to = args
        .to
        .as_deref()
        .map(|v| parse_version(ctx, v))
        .transpose()?;
    if let Some(to) = to
        && migrator.migration(to).is_none()
    {
        return Err(CliError::Usage(format!(
            "--to {to}: no migration has that version; `pgmaint migrate status` lists them"
        )));
    }
    let chosen: Vec<&Migration> = match args.last {
        Some(n) => {
            let mut applied: Vec<&Migration> = entries
                .iter()
                .filter(|e| matches!(e.state, State::Applied | State::Modified { .. }))
                .filter_map(|e| migrator.migration(e.version))
                .filter(|m| !m.repeatable)
                .collect();
            applied.sort_by_key(|m| std::cmp::Reverse(migrator.position(m.version)));
            applied.into_iter().take(n as usize).collect()
        }
        None => {
            let mut pending: Vec<&Migration> = entries
                .iter()
                .filter(|e| matches!(e.state, State::Pending | State::Failed { .. }))
                .filter(|e| {
                    to.is_none_or(|to| migrator.position(e.version) <= migrator.position(to))
                })
                .filter_map(|e| migrator.migration(e.version))
                .filter(|m| !m.repeatable)
                .collect();
            pending.sort_by_key(|m| migrator.position(m.version));
            pending
        }
    };
    if chosen.is_empty() {
        let said = if args.last.is_some() {
            "Nothing to test: no migration is applied."
        } else {
            "Nothing to test: no migration is pending (`--last N` tests the newest N applied ones: down, then up)."
        };
        if ctx.cli.json {
            print_json(&json!({"status": "passed", "migrations": [], "notes": [said]}));
        } else if !ctx.cli.quiet {
            paragraph(said);
        }
        return Ok(true);
    }
    let scratch = Scratch::with_schema_of(
        ctx.client,
        ctx.target,
        &migrator.settings,
        &ctx.config.state_schema,
    )
    .await
    .map_err(crate::migrate::MigrateError::from)?;
    let ledger = migrator.ledger.table();
    let seeding = args
        .data
        .then_some(reversibility::Seeding { ledger: &ledger });
    let report = match args.last {
        Some(_) => reversibility::last(&scratch.client, &chosen, seeding.as_ref()).await,
        None => reversibility::pending(&scratch.client, &chosen, seeding.as_ref()).await,
    }
    .map_err(CliError::Failed)?;
    let passed = report.passed();
    if ctx.cli.json {
        print_json(&json!({
            "status": if passed { "passed" } else { "failed" },
            "mode": if args.last.is_some() { "last" } else { "pending" },
            "copied_with": scratch.copied_with,
            "not_copied": scratch.not_copied,
            "migrations": report.migrations,
            "notes": report.notes,
            "seeded": report.seeded,
            "not_seeded": report.not_seeded,
        }));
        return Ok(passed);
    }
    if ctx.cli.quiet && passed {
        return Ok(true);
    }
    paragraph(&format!(
        "Tested {} migration(s) on a scratch copy of the live schema ({}){}:",
        chosen.len(),
        scratch.copied_with,
        if args.last.is_some() {
            ": down, then up"
        } else {
            ": up, down, up"
        }
    ));
    for t in &report.migrations {
        paragraph(&format!(
            "  {}/{}: {}",
            t.version,
            t.name,
            t.status.as_str()
        ));
        for line in &t.diff {
            paragraph(&format!("    {line}"));
        }
        for w in &t.warnings {
            paragraph(&format!("    warning: {w}"));
        }
    }
    for note in &report.notes {
        paragraph(&format!("note: {note}"));
    }
    for refused in &scratch.not_copied {
        paragraph(&format!(
            "note: not copied to the scratch cluster: {refused}"
        ));
    }
    if args.data {
        paragraph(&format!(
            "Seeded {} table(s) with a few rows each.",
            report.seeded.len()
        ));
        for skipped in &report.not_seeded {
            paragraph(&format!(
                "note: not seeded (its rows not checked): {skipped}"
            ));
        }
    }
    let failed = report
        .migrations
        .iter()
        .filter(|t| t.status == Verdict::NotReversible)
        .count();
    if passed {
        paragraph("Passed: every migration tested comes back as it was.");
    } else if failed > 0 {
        paragraph(&format!("Failed: {failed} migration(s) not reversible."));
    } else {
        paragraph("Failed: a migration could not be applied to the copy.");
    }
    Ok(passed)
}

pub(super) async fn drift(ctx: &Context<'_>) -> Result<bool, CliError> {
    let found = drift::find(ctx.client, ctx.migrator, &ctx.config.made_by_tasks()).await?;
    let lines = found.lines();
    let warnings = found.diff.order_warnings();
    let clean = found.diff.is_empty();
    if ctx.cli.json {
        print_json(&json!({
            "status": if clean { "none" } else { "drift" },
            "replayed": found.replayed,
            "lines": lines,
            "warnings": warnings,
            "added": found.diff.added,
            "missing": found.diff.dropped,
            "changed": found.diff.changed,
            "left_out": found.own,
            "notes": found.notes,
        }));
        return Ok(clean);
    }
    if ctx.cli.quiet && clean {
        return Ok(true);
    }
    for line in &lines {
        paragraph(line);
    }
    for w in &warnings {
        paragraph(&format!("warning: {w}"));
    }
    for note in &found.notes {
        paragraph(&format!("note: {note}"));
    }
    if clean {
        paragraph(&format!(
            "No drift: the live schema is what the {} applied migration(s) make.",
            found.replayed.len()
        ));
    } else {
        paragraph(&format!(
            "Drift: {} object(s) differ from what the {} applied migration(s) make.\n  help: add what was made by hand to a migration, or drop it",
            lines.len(),
            found.replayed.len()
        ));
    }
    Ok(clean)
}

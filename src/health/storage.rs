//! Sizes and replication: database size, table growth over a day and a
//! week (from stored snapshots), and per standby lag, inactive replication
//! slots and the WAL they retain.

use super::{
    Check, CheckContext, CheckName, Finding, Level, Outcome, human_bytes, measured, percent,
    seconds,
};
use crate::store::snapshots;
use crate::unnamed::Unnamed;

pub(super) struct DatabaseSize;

impl Check for DatabaseSize {
    fn name(&self) -> CheckName {
        CheckName::DatabaseSize
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let size: f64 = ctx
            .client
            .row("SELECT pg_database_size(current_database())::float8", &[])
            .await?
            .get(0);
        let finding = measured(
            ctx,
            "current database".into(),
            size,
            human_bytes,
            "plan storage; archive or purge what the application no longer reads",
        );
        Ok(Outcome::Findings(
            vec![finding],
            Some(format!("the database takes {}", human_bytes(size))),
        ))
    }
}

pub(super) struct SizeGrowth;

impl Check for SizeGrowth {
    fn name(&self) -> CheckName {
        CheckName::SizeGrowth
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let schema = &ctx.config.state_schema;
        let snapshots: i64 = match snapshots::snapshots_in_last_8_days(ctx.client, schema).await {
            Ok(count) => count,
            Err(_) => return Ok(Outcome::Unknown("no snapshots yet: run `pgmaint init`, then `pgmaint snapshot` (the daemon takes them on its own)".into())),
        };
        if snapshots == 0 {
            return Ok(Outcome::Unknown(
                "no snapshots in the last 8 days: run `pgmaint snapshot` regularly (the daemon does)"
                    .into(),
            ));
        }
        let day_old = snapshots::snapshots_a_day_old(ctx.client, schema).await?;
        if day_old == 0 {
            return Ok(Outcome::Unknown("the snapshots do not reach a day back yet: growth is measured against one at least a day old".into()));
        }
        // For each table, its size now against the latest snapshot at least a
        // day (and a week) old.
        let rows = snapshots::table_sizes_against_snapshots(ctx.client, schema).await?;
        let mut findings: Vec<Finding> = Vec::new();
        for (name, now, day, week) in rows {
            let growth = (now - day) / day;
            let mut f = measured(
                ctx,
                name,
                growth,
                percent,
                "find what writes it (pg_stat_user_tables n_tup_ins); a purge or archive task can bound it",
            );
            f.value = format!(
                "{} a day ({} to {}){}",
                percent(growth),
                human_bytes(day),
                human_bytes(now),
                week.map(|w| format!(", {} a week", percent((now - w) / w.max(1.0))))
                    .unwrap_or_default()
            );
            if f.status > Level::Ok {
                findings.push(f);
            }
        }
        Ok(Outcome::Findings(findings, None))
    }
}

pub(super) struct Replication;

impl Check for Replication {
    fn name(&self) -> CheckName {
        CheckName::Replication
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let standby: bool = ctx
            .client
            .row("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0);
        if standby {
            let lag: Option<f64> = ctx
                .client
                .row(
                    "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
                    &[],
                )
                .await?
                .get(0);
            let findings = lag
                .map(|l| {
                    vec![measured(
                        ctx,
                        "this standby".into(),
                        l,
                        seconds,
                        "check the primary's WAL sender and the network",
                    )]
                })
                .unwrap_or_default();
            return Ok(Outcome::Findings(
                findings,
                Some("this server is a standby".into()),
            ));
        }
        let mut findings = Vec::new();
        for r in ctx
            .client
            .rows(
                "SELECT coalesce(application_name, '') || ' ' || coalesce(client_addr::text, 'local'),
                    coalesce(extract(epoch FROM replay_lag), 0)::float8,
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8
               FROM pg_stat_replication",
                &[],
            )
            .await?
        {
            let mut f = measured(
                ctx,
                format!("standby {}", r.get::<_, String>(0)),
                r.get(1),
                seconds,
                "check the standby's disk and network; a lagging standby keeps WAL on the primary",
            );
            f.value = format!(
                "{} behind, {} of WAL",
                seconds(r.get(1)),
                human_bytes(r.get(2))
            );
            findings.push(f);
        }
        for r in ctx
            .client
            .rows(
                "SELECT slot_name::text, active, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::float8
               FROM pg_replication_slots",
                &[],
            )
            .await?
        {
            let (active, retained): (bool, f64) = (r.get(1), r.get(2));
            let status = if !active && retained >= 10.0 * 1024.0 * 1024.0 * 1024.0 {
                Level::Critical
            } else if !active {
                Level::Warning
            } else {
                Level::Ok
            };
            findings.push(Finding {
                object: format!("replication slot {}", r.get::<_, String>(0)),
                value: format!("{}, retaining {} of WAL", if active { "active" } else { "inactive" }, human_bytes(retained)),
                threshold: "inactive: warning; inactive with 10 GB retained: critical".into(),
                advice: "an inactive slot keeps every WAL file since it stopped: reconnect its consumer or drop it (pg_drop_replication_slot)".into(),
                status,
                measure: Some(retained),
            });
        }
        let summary = if findings.is_empty() {
            Some("no standbys and no replication slots".into())
        } else {
            None
        };
        Ok(Outcome::Findings(findings, summary))
    }
}

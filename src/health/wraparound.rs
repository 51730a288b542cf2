//! Transaction ID and multixact ID age, for databases and tables, as a
//! share of the 2^31 IDs before wraparound, and tables older than
//! autovacuum_freeze_max_age (autovacuum should have frozen them).

use super::{Check, CheckContext, CheckName, Finding, Level, Outcome, measured, percent};
use crate::unnamed::Unnamed;

const LIMIT: f64 = 2_147_483_648.0;

pub(super) struct XidWraparound;

impl Check for XidWraparound {
    fn name(&self) -> CheckName {
        CheckName::XidWraparound
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let advice = "VACUUM (FREEZE) the oldest tables; look for long transactions, prepared transactions or replication slots holding the horizon back";
        let mut findings: Vec<Finding> = ctx
            .client
            .rows(
                "SELECT datname::text, age(datfrozenxid)::float8 FROM pg_database WHERE datallowconn",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let age: f64 = r.get(1);
                let mut f = measured(
                    ctx,
                    format!("database {}", r.get::<_, String>(0)),
                    age / LIMIT,
                    percent,
                    advice,
                );
                f.value = of_the_limit(age);
                f
            })
            .collect();
        let freeze_max: f64 = ctx
            .client
            .row(
                "SELECT current_setting('autovacuum_freeze_max_age')::float8",
                &[],
            )
            .await?
            .get(0);
        for row in ctx
            .client
            .rows(
                "SELECT format('%I.%I', n.nspname, c.relname), age(c.relfrozenxid)::float8
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'm', 't') AND age(c.relfrozenxid) > least($1::float8, 0.5 * $2::float8)
              ORDER BY 2 DESC LIMIT 20",
                &[&freeze_max, &LIMIT],
            )
            .await?
        {
            let age: f64 = row.get(1);
            let mut finding = measured(ctx, format!("table {}", row.get::<_, String>(0)), age / LIMIT, percent, advice);
            finding.value = of_the_limit(age);
            if age > freeze_max && finding.status < Level::Warning {
                finding.status = Level::Warning;
                finding.threshold = format!("autovacuum_freeze_max_age {freeze_max:.0}");
            }
            findings.push(finding);
        }
        Ok(Outcome::Findings(findings, None))
    }
}

/// "0.0% (1022 of 2147483648 IDs)": the share alone reads 0.0% for
/// the first 10 million.
fn of_the_limit(age: f64) -> String {
    format!("{} ({age:.0} of {LIMIT:.0} IDs)", percent(age / LIMIT))
}

pub(super) struct MultixactAge;

impl Check for MultixactAge {
    fn name(&self) -> CheckName {
        CheckName::MultixactAge
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let findings = ctx
            .client
            .rows("SELECT datname::text, mxid_age(datminmxid)::float8 FROM pg_database WHERE datallowconn", &[])
            .await?
            .iter()
            .map(|r| measured(ctx, format!("database {}", r.get::<_, String>(0)), r.get::<_, f64>(1) / LIMIT, percent,
                "VACUUM (FREEZE) the tables with the oldest relminmxid; row locks (SELECT ... FOR SHARE) consume multixacts"))
            .collect();
        Ok(Outcome::Findings(findings, None))
    }
}

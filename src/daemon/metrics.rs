//! `/metrics` in Prometheus' text format. The figures come from the state
//! schema at scrape time, so every daemon of a database reports the same
//! runs whichever one ran them; only `pgmaint_daemon_fires_claimed_total`
//! and `pgmaint_up` are this process's own. Written by hand rather than
//! with a metrics registry: the values are read, not counted in-process.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use tokio_postgres::GenericClient;

use super::Shared;
use crate::store;

/// Upper bounds (seconds) of the run duration histogram.
const BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn render(
    client: &impl GenericClient,
    shared: &Shared,
) -> Result<String, tokio_postgres::Error> {
    let schema = &shared.config.state_schema;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP pgmaint_up Whether this pgmaint daemon is up.\n# TYPE pgmaint_up gauge\npgmaint_up 1"
    );
    let _ = writeln!(
        out,
        "# HELP pgmaint_daemon_fires_claimed_total Scheduled fires this daemon claimed.\n# TYPE pgmaint_daemon_fires_claimed_total counter\npgmaint_daemon_fires_claimed_total {}",
        shared.fires_claimed.load(Ordering::Relaxed)
    );

    let _ = writeln!(
        out,
        "# HELP pgmaint_task_runs_total Task runs by task and status (dry runs excluded).\n# TYPE pgmaint_task_runs_total counter"
    );
    for (task, status, count) in store::task_run_counts(client, schema).await? {
        let _ = writeln!(
            out,
            "pgmaint_task_runs_total{{task=\"{}\",status=\"{}\"}} {count}",
            label(&task),
            label(&status)
        );
    }
    let _ = writeln!(
        out,
        "# HELP pgmaint_task_rows_total Rows changed by each task.\n# TYPE pgmaint_task_rows_total counter"
    );
    let _ = writeln!(
        out,
        "# HELP pgmaint_task_last_success_timestamp_seconds When each task last succeeded.\n# TYPE pgmaint_task_last_success_timestamp_seconds gauge"
    );
    for (task, rows, last_success) in store::task_totals(client, schema).await? {
        let task = label(&task);
        let _ = writeln!(out, "pgmaint_task_rows_total{{task=\"{task}\"}} {rows}");
        if let Some(at) = last_success {
            let _ = writeln!(
                out,
                "pgmaint_task_last_success_timestamp_seconds{{task=\"{task}\"}} {at}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP pgmaint_task_run_duration_seconds How long task runs took.\n# TYPE pgmaint_task_run_duration_seconds histogram"
    );
    for d in store::task_durations(client, schema, BUCKETS).await? {
        let task = label(&d.task);
        for (bound, count) in BUCKETS.iter().zip(d.counts) {
            let _ = writeln!(
                out,
                "pgmaint_task_run_duration_seconds_bucket{{task=\"{task}\",le=\"{bound}\"}} {count}"
            );
        }
        let total = d.total;
        let _ = writeln!(
            out,
            "pgmaint_task_run_duration_seconds_bucket{{task=\"{task}\",le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "pgmaint_task_run_duration_seconds_sum{{task=\"{task}\"}} {}",
            d.sum
        );
        let _ = writeln!(
            out,
            "pgmaint_task_run_duration_seconds_count{{task=\"{task}\"}} {total}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP pgmaint_schedule_fires_total Scheduled fires by schedule and status.\n# TYPE pgmaint_schedule_fires_total counter"
    );
    let _ = writeln!(
        out,
        "# HELP pgmaint_schedule_last_success_timestamp_seconds When each schedule's fire last succeeded.\n# TYPE pgmaint_schedule_last_success_timestamp_seconds gauge"
    );
    for (schedule, status, count) in store::fire_counts(client, schema).await? {
        let _ = writeln!(
            out,
            "pgmaint_schedule_fires_total{{schedule=\"{}\",status=\"{}\"}} {count}",
            label(&schedule),
            label(&status)
        );
    }
    for (schedule, at) in store::schedule_last_success(client, schema).await? {
        let _ = writeln!(
            out,
            "pgmaint_schedule_last_success_timestamp_seconds{{schedule=\"{}\"}} {at}",
            label(&schedule)
        );
    }
    health(&mut out, shared);
    Ok(out)
}

/// The health watch's latest figures: each check's status and findings,
/// and table sizes with bounded cardinality (the largest `metrics_top` by
/// name, the rest only in the totals).
fn health(out: &mut String, shared: &Shared) {
    let guard = shared.health.lock().expect("health lock");
    let Some(watched) = guard.as_ref() else {
        return;
    };
    let _ = writeln!(
        out,
        "# HELP pgmaint_health_check_status Each health check: 0 ok, 1 warning, 2 critical, 3 unknown.\n# TYPE pgmaint_health_check_status gauge"
    );
    for check in &watched.report.checks {
        let value = match check.status {
            crate::health::Level::Ok => 0,
            crate::health::Level::Warning => 1,
            crate::health::Level::Critical => 2,
            crate::health::Level::Unknown => 3,
        };
        let _ = writeln!(
            out,
            "pgmaint_health_check_status{{check=\"{}\"}} {value}",
            check.name
        );
    }
    let _ = writeln!(
        out,
        "# HELP pgmaint_health_check_findings Findings past the thresholds, per check.\n# TYPE pgmaint_health_check_findings gauge"
    );
    for check in &watched.report.checks {
        let count = check
            .findings
            .iter()
            .filter(|f| f.status > crate::health::Level::Ok)
            .count();
        let _ = writeln!(
            out,
            "pgmaint_health_check_findings{{check=\"{}\"}} {count}",
            check.name
        );
    }
    let _ = writeln!(
        out,
        "# HELP pgmaint_health_checked_timestamp_seconds When the checks last ran.\n# TYPE pgmaint_health_checked_timestamp_seconds gauge\npgmaint_health_checked_timestamp_seconds {}",
        watched.at.timestamp()
    );
    let top = shared.config.health.metrics_top;
    let _ = writeln!(
        out,
        "# HELP pgmaint_table_size_bytes Size of the largest tables (heap, from pg_class).\n# TYPE pgmaint_table_size_bytes gauge"
    );
    for (table, bytes) in watched.sizes.iter().take(top) {
        let _ = writeln!(
            out,
            "pgmaint_table_size_bytes{{table=\"{}\"}} {bytes}",
            label(table)
        );
    }
    let total: f64 = watched.sizes.iter().map(|(_, b)| b).sum();
    let _ = writeln!(
        out,
        "# HELP pgmaint_tables_size_bytes_total Size of all tables.\n# TYPE pgmaint_tables_size_bytes_total gauge\npgmaint_tables_size_bytes_total {total}"
    );
    let _ = writeln!(
        out,
        "# HELP pgmaint_tables Number of tables.\n# TYPE pgmaint_tables gauge\npgmaint_tables {}",
        watched.sizes.len()
    );
}

//! What people see: tables on a terminal, a progress bar for long work, and
//! numbers formatted for reading. `--json` output is built by the commands
//! from their serde types and printed as one document.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shown only on a terminal, and only once work has lasted this long.
const SHOW_AFTER: Duration = Duration::from_millis(1500);

pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(headers);
    // Fit the terminal's width, unless it reports none or an absurd one (a
    // pseudo-terminal nobody sized says 0 columns, which would put one
    // character per line).
    if table.width().is_some_and(|width| width >= 40) {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    table
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `850ms`, `12.3s`, `4m05s`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// A progress bar on stderr for one task's work, with rows/s and ETA.
pub struct Progress {
    enabled: bool,
    state: Mutex<Option<Bar>>,
}

struct Bar {
    bar: ProgressBar,
    started: Instant,
    visible: bool,
}

impl Progress {
    /// Enabled when stderr is a terminal and output is not for machines.
    pub fn new(json: bool, quiet: bool) -> Self {
        Progress {
            enabled: !json && !quiet && std::io::stderr().is_terminal(),
            state: Mutex::new(None),
        }
    }

    pub fn disabled() -> Self {
        Progress {
            enabled: false,
            state: Mutex::new(None),
        }
    }

    pub fn start(&self, total: u64, unit: &str) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{bar:30}} {{percent:>3}}% of {{human_len}} {unit}  {{msg}}  ETA {{eta}}"
            ))
            .expect("valid template"),
        );
        *self.state.lock().expect("progress lock") = Some(Bar {
            bar,
            started: Instant::now(),
            visible: false,
        });
    }

    pub fn update(&self, position: u64, rows: u64) {
        let mut state = self.state.lock().expect("progress lock");
        let Some(bar) = state.as_mut() else { return };
        let elapsed = bar.started.elapsed();
        if !bar.visible && elapsed >= SHOW_AFTER {
            bar.bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.visible = true;
        }
        let rate = rows as f64 / elapsed.as_secs_f64().max(0.001);
        bar.bar.set_message(format!(
            "{} rows, {} rows/s",
            count(rows),
            count(rate as u64)
        ));
        bar.bar.set_position(position);
    }

    pub fn finish(&self) {
        if let Some(bar) = self.state.lock().expect("progress lock").take() {
            bar.bar.finish_and_clear();
        }
    }
}

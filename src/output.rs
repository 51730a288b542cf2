//! What people see: tables on a terminal, a progress bar for long work, and
//! numbers formatted for reading. `--json` output is built by the commands
//! from their serde types and printed as one document.
//!
//! Everything bound for stdout goes through `print`/`println`: when the
//! reader has gone (`pgmaint history | head -5`), the program ends as `ls`
//! does, by SIGPIPE, quietly. pgmaint does not simply restore SIGPIPE's
//! default action at start: it is a tokio program with sockets to
//! PostgreSQL (std writes Unix sockets without MSG_NOSIGNAL), HTTP clients
//! and child processes, where a signal would kill a daemon that should get
//! an error and carry on. Only a write to stdout that fails with EPIPE ends
//! the process; `main` also catches the panic of a `println!` that does.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comfy_table::{Cell, Color, ContentArrangement, Table as Grid, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shown only on a terminal, and only once work has lasted this long.
const SHOW_AFTER: Duration = Duration::from_millis(1500);

/// Narrower than this, a terminal is taken as unsized (a pseudo-terminal
/// nobody sized says 0 columns).
const NARROWEST: usize = 20;

/// Writes to stdout; a closed stdout ends the program quietly.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && err.kind() == std::io::ErrorKind::BrokenPipe
    {
        stdout_closed();
    }
}

/// `print` with a newline.
pub(crate) fn println(text: &str) {
    print(&format!("{text}\n"));
}

/// Ends the process as a closed pipe ends `ls`: by SIGPIPE, so a shell
/// with `pipefail` sees it, and with no message.
pub(crate) fn stdout_closed() -> ! {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default action and raising it has no
    // preconditions; the process ends there.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

/// A panic from `println!` on a closed stdout ends the program as
/// `stdout_closed` does, instead of printing a panic and exiting 101.
pub fn end_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.starts_with("failed printing to stdout")
            && text.to_ascii_lowercase().contains("broken pipe")
        {
            stdout_closed();
        }
        default(info)
    }));
}

/// The width of the terminal on stdout, or `COLUMNS` when set; `None`
/// when output goes to a file or pipe (nothing is wrapped then).
pub(crate) fn stdout_width() -> Option<usize> {
    width_of(&std::io::stdout())
}

/// The same for stderr, where errors go.
pub(crate) fn stderr_width() -> Option<usize> {
    width_of(&std::io::stderr())
}

fn width_of(stream: &(impl IsTerminal + std::os::fd::AsRawFd)) -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c >= NARROWEST)
    {
        return Some(columns);
    }
    if !stream.is_terminal() {
        return None;
    }
    // SAFETY: TIOCGWINSZ fills the winsize it is given and nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0;
    Some(size.ws_col as usize).filter(|&c| ok && c >= NARROWEST)
}

/// Prose for stdout, wrapped to the terminal (see `wrap`).
pub(crate) fn paragraph(text: &str) {
    println(&wrap(text, stdout_width()));
}

/// An error or warning for stderr, wrapped to its terminal.
pub fn eprint_wrapped(text: &str) {
    eprintln!("{}", wrap(text, stderr_width()));
}

/// Wraps each line of `text` at spaces to `width` columns; a wrapped line
/// continues under its own indentation (two more spaces for a `help:`
/// line). A word longer than the line stays whole. Without a width the
/// text is unchanged.
pub(crate) fn wrap(text: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return text.to_string();
    };
    let mut out = Vec::new();
    for line in text.split('\n') {
        let indent: String = line.chars().take_while(|c| *c == ' ').collect();
        let body = &line[indent.len()..];
        // A line that fits keeps its spacing (a caret under its column);
        // a code frame's lines (`--> file:1:2`, `2 | SQL`, `| ^^^`) are
        // never broken, as rustc does not break them.
        let gutter = body
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        if line.chars().count() <= width
            || body.starts_with("-->")
            || gutter.starts_with("| ")
            || gutter == "|"
        {
            out.push(line.to_string());
            continue;
        }
        let hanging = if body.starts_with("help: ") || body.starts_with("note: ") {
            format!("{indent}      ")
        } else {
            format!("{indent}  ")
        };
        let mut current = indent.clone();
        let mut empty = true;
        for word in body.split(' ').filter(|w| !w.is_empty()) {
            let needed = current.chars().count() + usize::from(!empty) + word.chars().count();
            if !empty && needed > width {
                out.push(std::mem::replace(&mut current, hanging.clone()));
                empty = true;
            }
            if !empty {
                current.push(' ');
            }
            current.push_str(word);
            empty = false;
        }
        out.push(current);
    }
    out.join("\n")
}

/// A table for the terminal. Columns wrap at spaces only, so a number or a
/// word is never split; when the columns' longest words do not fit the
/// terminal, the columns marked `optional` go (last first), then long
/// words that are not numbers are cut with `…`.
pub(crate) struct Table {
    headers: Vec<String>,
    optional: Vec<usize>,
    whole: Vec<usize>,
    rows: Vec<Vec<TableCell>>,
}

/// One cell's text, and its colour on a terminal.
#[derive(Debug, Clone)]
pub(crate) struct TableCell {
    text: String,
    colour: Option<Color>,
}

impl TableCell {
    pub(crate) fn coloured(text: impl Into<String>, colour: Option<Color>) -> Self {
        TableCell {
            text: text.into(),
            colour,
        }
    }
}

impl From<String> for TableCell {
    fn from(text: String) -> Self {
        TableCell { text, colour: None }
    }
}

impl From<&str> for TableCell {
    fn from(text: &str) -> Self {
        TableCell::from(text.to_string())
    }
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            optional: Vec::new(),
            whole: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Columns (by header) whose lines are never wrapped (a timestamp
    /// with its zone, one per line).
    pub(crate) fn unwrapped(mut self, headers: &[&str]) -> Self {
        self.whole = headers
            .iter()
            .filter_map(|h| self.headers.iter().position(|x| x == h))
            .collect();
        self
    }

    /// Columns (by header) that may be left out on a narrow terminal, the
    /// first named the last to go.
    pub(crate) fn optional(mut self, headers: &[&str]) -> Self {
        self.optional = headers
            .iter()
            .filter_map(|h| self.headers.iter().position(|x| x == h))
            .collect();
        self
    }

    pub(crate) fn add_row<C: Into<TableCell>>(&mut self, cells: impl IntoIterator<Item = C>) {
        let mut row: Vec<TableCell> = cells.into_iter().map(Into::into).collect();
        row.resize(self.headers.len(), TableCell::from(""));
        self.rows.push(row);
    }

    /// Prints the table on stdout, fitted to its terminal.
    pub(crate) fn print(&self) {
        println(&self.render(stdout_width()));
    }

    /// The table fitted to `width` columns (unbounded without one).
    pub(crate) fn render(&self, width: Option<usize>) -> String {
        let natural: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.texts(i)
                    .flat_map(str::lines)
                    .map(chars)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let (shown, widths) = match width {
            Some(width) => self.layout(width, &natural),
            None => ((0..self.headers.len()).collect(), natural),
        };
        self.draw(&shown, &widths)
    }

    /// Column `i`'s header and cells.
    fn texts(&self, i: usize) -> impl Iterator<Item = &str> {
        std::iter::once(self.headers[i].as_str())
            .chain(self.rows.iter().map(move |r| r[i].text.as_str()))
    }

    /// Each column's width with its words whole, and the least it may be
    /// cut to: numbers are never cut; other words may be, down to a few
    /// letters. A column kept whole is never narrower than its text.
    fn word_widths(&self, natural: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let widest_word = |i: usize, width: &dyn Fn(&str) -> usize| {
            self.texts(i)
                .flat_map(str::split_whitespace)
                .map(width)
                .max()
                .unwrap_or(0)
        };
        (0..self.headers.len())
            .map(|i| {
                if self.whole.contains(&i) {
                    return (natural[i], natural[i]);
                }
                let longest = widest_word(i, &chars);
                let floor = widest_word(i, &|w| {
                    if is_number(w) {
                        chars(w)
                    } else {
                        chars(w).min(6)
                    }
                });
                (longest, floor.max(1))
            })
            .unzip()
    }

    /// The columns shown and their widths within `width`: optional
    /// columns left out while the words do not fit, then the widest
    /// columns' long words cut, then the room left given to the columns
    /// that want it, a column at a time to the one short of the most.
    fn layout(&self, width: usize, natural: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let (longest_word, floor) = self.word_widths(natural);
        let overhead = |n: usize| 3 * n + 1;
        let sum = |shown: &[usize], of: &[usize]| shown.iter().map(|&i| of[i]).sum::<usize>();
        let mut shown: Vec<usize> = (0..self.headers.len()).collect();
        for &drop in self.optional.iter().rev() {
            if sum(&shown, &longest_word) + overhead(shown.len()) <= width {
                break;
            }
            shown.retain(|&i| i != drop);
        }
        let mut widths = longest_word;
        while sum(&shown, &widths) + overhead(shown.len()) > width {
            let Some(&widest) = shown
                .iter()
                .filter(|&&i| widths[i] > floor[i])
                .max_by_key(|&&i| widths[i])
            else {
                break;
            };
            widths[widest] -= 1;
        }
        let mut room = width.saturating_sub(sum(&shown, &widths) + overhead(shown.len()));
        while room > 0 {
            let Some(&short) = shown
                .iter()
                .filter(|&&i| natural[i] > widths[i])
                .max_by_key(|&&i| natural[i] - widths[i])
            else {
                break;
            };
            widths[short] += 1;
            room -= 1;
        }
        (shown, widths)
    }

    /// The shown columns at their widths, with the rows' colours.
    fn draw(&self, shown: &[usize], widths: &[usize]) -> String {
        let mut grid = Grid::new();
        grid.load_style(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        grid.set_header(
            shown
                .iter()
                .map(|&i| Cell::new(fit(&self.headers[i], widths[i]))),
        );
        for row in &self.rows {
            grid.add_row(shown.iter().map(|&i| {
                let cell = Cell::new(fit(&row[i].text, widths[i]));
                match row[i].colour {
                    Some(colour) => cell.fg(colour),
                    None => cell,
                }
            }));
        }
        grid.to_string()
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// `1,234`, `~12`, `850ms`, `-3`, `12.5%`: a number, maybe with a unit.
fn is_number(word: &str) -> bool {
    word.trim_start_matches(['~', '-', '+'])
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit())
}

/// A cell's text wrapped at spaces to `width`, words that are longer cut
/// with `…`.
fn fit(text: &str, width: usize) -> String {
    let mut lines = Vec::new();
    for line in text.lines() {
        let mut current = String::new();
        for word in line.split_whitespace() {
            let word = if chars(word) > width {
                let cut: String = word.chars().take(width.saturating_sub(1)).collect();
                format!("{cut}…")
            } else {
                word.to_string()
            };
            if !current.is_empty() && chars(&current) + 1 + chars(&word) > width {
                lines.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(&word);
        }
        lines.push(current);
    }
    lines.join("\n")
}

/// A comfy-table that fits the terminal by comfy-table's own rules (which
/// may split words). Prefer `Table`, which never splits a number or word.
pub fn table(headers: &[&str]) -> Grid {
    let mut table = Grid::new();
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
pub(crate) fn count(n: u64) -> String {
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
pub(crate) fn duration_ms(ms: u64) -> String {
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
    pub(crate) fn new(json: bool, quiet: bool) -> Self {
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

    pub(crate) fn start(&self, total: u64, unit: &str) {
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

    pub(crate) fn update(&self, position: u64, rows: u64) {
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

    pub(crate) fn finish(&self) {
        if let Some(bar) = self.state.lock().expect("progress lock").take() {
            bar.bar.finish_and_clear();
        }
    }
}

/// Bytes in the largest unit that keeps the number at or above 1.
pub(crate) fn human_bytes(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", units[0])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_frame_keeps_its_caret_under_its_column_and_its_long_lines_whole() {
        let frame = format!(
            " --> m.sql:2:50\n  |\n2 | ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();\n  |{}^^^^^^^^^^^^^^^^^\n2 | {}\n  = help: {}",
            " ".repeat(49),
            "x ".repeat(60),
            "word ".repeat(20)
        );
        let wrapped = wrap(&frame, Some(80));
        let lines: Vec<&str> = wrapped.lines().collect();
        assert_eq!(lines[..5], frame.lines().collect::<Vec<_>>()[..5]);
        assert!(lines[5].len() <= 80 && lines.len() > 6, "{wrapped}");
    }

    fn widest_line(text: &str) -> usize {
        text.lines().map(chars).max().unwrap_or(0)
    }

    #[test]
    fn a_table_fits_its_width_without_splitting_a_word_or_number() {
        let mut table = Table::new(&[
            "run",
            "started (UTC)",
            "by",
            "status",
            "task",
            "task status",
            "rows",
            "batches",
            "duration",
        ])
        .optional(&["by", "duration", "batches"]);
        table.add_row([
            "12",
            "2026-01-02 03:04:05",
            "cli someone@a-rather-long-host-name.example.com",
            "succeeded",
            "expired_password_resets",
            "succeeded",
            "100,800",
            "20",
            "1m05s",
        ]);
        let text = table.render(Some(80));
        assert!(widest_line(&text) <= 80, "\n{text}");
        for whole in [
            "succeeded",
            "100,800",
            "expired_password_resets",
            "2026-01-02",
        ] {
            assert!(text.contains(whole), "`{whole}` was split:\n{text}");
        }
        // Without a width nothing is dropped or wrapped.
        let wide = table.render(None);
        assert!(
            wide.contains("duration") && wide.lines().count() == 5,
            "\n{wide}"
        );
    }

    #[test]
    fn optional_columns_go_before_words_are_cut() {
        let mut table = Table::new(&["object", "value", "advice"]).optional(&["advice"]);
        table.add_row([
            "public.a_table_with_a_long_name",
            "1,234,567",
            "run VACUUM (ANALYZE) on it, then consider lowering autovacuum_vacuum_scale_factor",
        ]);
        let text = table.render(Some(40));
        assert!(widest_line(&text) <= 40, "\n{text}");
        assert!(!text.contains("advice"), "\n{text}");
        assert!(text.contains("1,234,567"), "\n{text}");
        let text = table.render(Some(24));
        assert!(text.contains("1,234,567") && text.contains('…'), "\n{text}");
    }

    #[test]
    fn prose_wraps_at_spaces_under_its_indentation() {
        let text = "error: something long went wrong with the table public.request_logs\n  help: do this and then that and the other";
        let wrapped = wrap(text, Some(30));
        assert!(widest_line(&wrapped) <= 30, "\n{wrapped}");
        assert!(wrapped.contains("public.request_logs"), "\n{wrapped}");
        assert!(
            wrapped.lines().any(|l| l.starts_with("        ")),
            "\n{wrapped}"
        );
        assert_eq!(wrap(text, None), text);
    }
}

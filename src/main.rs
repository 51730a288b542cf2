//! The `pgmaint` binary: parse the command line, set up logging, run the
//! command, map the outcome to an exit code (0 ok, 1 failed, 2 bad usage).
//! An error goes to stderr, and with `--json` also to stdout as the JSON
//! error document, so a script reading stdout always gets one document.

use std::process::ExitCode;

use clap::Parser;
use pgmaint::cli::Cli;
use pgmaint::commands::CliError;
use pgmaint::output;

// Reading a config is mostly small allocations and frees (every unit's
// TOML tree, every problem's text): mimalloc takes a third off `check` of
// a 10 MB config against glibc's allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    output::end_quietly_on_closed_stdout();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            // clap has not said whether --json was given; the raw
            // arguments do.
            if std::env::args_os().any(|arg| arg == "--json") {
                let text = err.render().to_string();
                let message = text.trim().trim_start_matches("error: ");
                pgmaint::commands::print_json(&CliError::Usage(message.into()).to_json());
            }
            let _ = err.print();
            return ExitCode::from(2);
        }
        Err(help) => {
            let _ = help.print();
            return ExitCode::SUCCESS;
        }
    };
    init_logging(&cli);
    // A command is one client talking to its database: on one thread each
    // answer wakes the task that waits for it directly, where a
    // multi-threaded runtime hands it from the connection's thread to the
    // caller's at every round trip (about 7 ms of a 45 ms no-op run,
    // bench/fixedcost). The daemon (and the demo, which runs one) serves
    // schedules, the API and many targets at once, on every core.
    let runtime = match &cli.command {
        pgmaint::cli::Command::Daemon(_) | pgmaint::cli::Command::Demo(_) => {
            tokio::runtime::Builder::new_multi_thread()
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            output::eprint_wrapped(&format!("error: could not start the runtime: {err}"));
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    match runtime.block_on(pgmaint::commands::execute(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            output::eprint_wrapped(&format!("error: {err}"));
            if json {
                pgmaint::commands::print_json(&err.to_json());
            }
            // The error may hold every problem of a huge config (243,558
            // of them in bench/config's dense one): the process ends here
            // rather than free them one by one on the way out.
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            std::process::exit(i32::from(err.exit_code()))
        }
    }
}

/// Commands log warnings to stderr (`-v` more); the daemon logs what it
/// does at info level with timestamps, as text or JSON lines.
fn init_logging(cli: &Cli) {
    let daemon = match &cli.command {
        pgmaint::cli::Command::Daemon(args) => Some(args.log_format == "json"),
        _ => None,
    };
    let level = match (cli.quiet, cli.verbose, daemon.is_some()) {
        (true, _, _) => "error",
        // A daemon logs at info by default; -v adds the statements to it.
        (_, 0 | 1, true) => "info",
        (_, 0 | 1, false) => "warn",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PGMAINT_LOG").unwrap_or_else(|_| level.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match daemon {
        Some(true) => builder.json().init(),
        Some(false) => builder.init(),
        None => builder.without_time().init(),
    }
}

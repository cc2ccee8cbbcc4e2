//! The `subvol` command: parses arguments, calls the pool layer, prints.
//! No logic of its own beyond choosing words and columns.

mod background;
mod cli;
mod commands;
mod logline;
mod manpages;
mod output;
mod progress;
mod replication;
mod scrub;
mod shell;
mod sync;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Usage errors: one line, like every other error.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("subvol: error: {first}; see `subvol --help`");
            return ExitCode::from(2);
        }
    };
    match commands::run(args) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("subvol: error: {}", e.message);
            ExitCode::from(e.kind.exit_code())
        }
    }
}

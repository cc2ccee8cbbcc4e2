//! The `subvol` command: parses arguments, calls the pool layer, prints.
//! No logic of its own beyond choosing words and columns.

mod cli;
mod commands;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("subvol: error: {}", e.message);
            ExitCode::from(output::exit_code(e.kind))
        }
    }
}

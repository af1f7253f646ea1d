//! The `tokend` command: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tokend::cli::Cli::parse();
    tokend::cli::run(cli)
}

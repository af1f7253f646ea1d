//! The `tokend-gate` binary: serve Envoy's Check calls, or check a policy.

use std::process::ExitCode;

use clap::Parser;
use tokend_gate::config::{Cli, Command, PolicyCommand};
use tokend_gate::policy::Policy;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Policy {
            action: PolicyCommand::Check { file },
        }) => match Policy::load(&file) {
            Ok(policy) => {
                println!(
                    "{}: ok, {} rules, audience {}",
                    file.display(),
                    policy.len(),
                    policy.audience().unwrap_or("from --audience")
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        },
        None => match tokend_gate::serve::main(cli.args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("tokend-gate: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

//! `tokend-chaos`: one randomized fault-injection run (`make chaos SEED=N
//! DURATION=60s TOPOLOGY=cluster|sentinel`). Prints the checker's summary
//! and every violation with the history lines that prove it; exits 1 if
//! there is any.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use testkit::chaos::{self, Config, Topology};

fn main() -> ExitCode {
    let mut config = Config {
        seed: 1,
        duration: Duration::from_secs(60),
        topology: Topology::Cluster,
        clients: 8,
        users: 4,
        history: PathBuf::from("target/chaos/history.jsonl"),
    };
    let mut args = std::env::args().skip(1).peekable();
    // `--check FILE`: only check a history written before.
    if args.peek().is_some_and(|a| a == "--check") {
        let Some(path) = args.nth(1) else {
            eprintln!("usage: tokend-chaos --check HISTORY");
            return ExitCode::from(2);
        };
        return match chaos::history::read(std::path::Path::new(&path)) {
            Ok(entries) => report(&chaos::checker::check(&entries)),
            Err(err) => {
                eprintln!("tokend-chaos: {path}: {err}");
                ExitCode::from(2)
            }
        };
    }
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let parsed = match flag.as_str() {
            "--seed" => value
                .parse()
                .map(|v| config.seed = v)
                .map_err(|e| e.to_string()),
            "--duration" => humantime::parse_duration(&value)
                .map(|v| config.duration = v)
                .map_err(|e| e.to_string()),
            "--topology" => value.parse().map(|v| config.topology = v),
            "--clients" => value
                .parse()
                .map(|v| config.clients = v)
                .map_err(|e| e.to_string()),
            "--users" => value
                .parse()
                .map(|v| config.users = v)
                .map_err(|e| e.to_string()),
            "--history" => {
                config.history = PathBuf::from(value);
                Ok(())
            }
            other => Err(format!("unknown flag {other}")),
        };
        if let Err(err) = parsed {
            eprintln!("tokend-chaos: {flag}: {err}");
            eprintln!(
                "usage: tokend-chaos [--seed N] [--duration 60s] [--topology cluster|sentinel] \
                 [--clients N] [--users N] [--history FILE] | --check HISTORY"
            );
            return ExitCode::from(2);
        }
    }
    if let Some(dir) = config.history.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    println!(
        "chaos: seed {} for {:?} on {:?}, {} clients",
        config.seed, config.duration, config.topology, config.clients
    );
    chaos::keep_redis_logs(&config.history);
    let run = chaos::run(&config);
    println!("history: {}", run.history.display());
    report(&run.report)
}

/// Prints the summary and every violation; the exit code says whether
/// there was any.
fn report(report: &chaos::checker::Report) -> ExitCode {
    print!("{}", report.summary);
    if report.violations.is_empty() {
        println!("no violation");
        return ExitCode::SUCCESS;
    }
    for v in &report.violations {
        println!(
            "VIOLATION [{}] {} (history lines {:?})",
            v.invariant, v.message, v.lines
        );
    }
    ExitCode::from(1)
}

//! `make bench`: starts its own redis-server, tokend and example resource
//! server (release builds), drives them with closed-loop tonic clients, and
//! prints a table and `target/bench/summary.json`. Every target is a ratio to
//! a limit measured in the same run. See BENCHMARKS.md for the method.
//!
//! The phases, by module: [`service`] (the core figures), [`accounts`]
//! (what account control costs), [`transport`] (what TLS, bound tokens
//! and feed watchers cost), [`observability`] (what Prometheus metrics
//! cost), [`exchange`] (on-behalf-of calls against Refresh, and the
//! exchanging token source's cached cost), [`introspect`] (Introspect
//! against the no-op), [`gate`] (tokend-gate behind a
//! real Envoy against the same Envoy alone) and [`scale`] (Redis Cluster,
//! replica acknowledgements, fan-out to 1,000 watchers).

// Test infrastructure: a failed expectation here is a failed test or
// benchmark run, so unwrap, expect and panic are the right tools.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A binary: `pub` marks what its modules share.
#![allow(unreachable_pub)]

mod accounts;
mod exchange;
mod gate;
mod introspect;
mod load;
mod measure;
mod observability;
mod report;
mod scale;
mod service;
mod setup;
mod transport;
mod workers;

use std::error::Error;
use std::time::Duration;

/// Calls in flight in the throughput phases.
pub const CONCURRENCY: usize = 200;
/// Calls before this are not counted.
pub const WARMUP: Duration = Duration::from_secs(2);
/// How long each phase is measured.
pub const MEASURE: Duration = Duration::from_secs(6);

/// Whether to run the phase `name`: all by default, or those listed in
/// `BENCH_PHASES` (comma-separated), for working on one of them.
fn phase(name: &str) -> bool {
    std::env::var("BENCH_PHASES").map_or(true, |list| list.split(',').any(|p| p.trim() == name))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let deployment = setup::Deployment::start().await?;
    eprintln!(
        "tokend bench: {} cores, binaries in {}",
        deployment.cores,
        testkit::tokend_bin().display()
    );
    let mut report = report::Report::default();
    if phase("service") {
        service::measure(&deployment, &mut report).await?;
    }
    if phase("accounts") {
        accounts::measure(&deployment, &mut report).await?;
    }
    if phase("transport") {
        transport::measure(&deployment, &mut report).await?;
    }
    if phase("metrics") {
        observability::measure(&deployment, &mut report).await?;
    }
    if phase("exchange") {
        exchange::measure(&deployment, &mut report).await?;
    }
    if phase("introspect") {
        introspect::measure(&deployment, &mut report).await?;
    }
    if phase("gate") {
        gate::measure(&deployment, &mut report).await?;
    }
    if phase("cluster") {
        scale::cluster_refresh(&deployment, &mut report).await?;
    }
    if phase("fanout") {
        scale::fanout(&deployment, &mut report).await?;
    }
    report.finish()
}

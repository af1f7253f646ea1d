//! A short randomized fault-injection run with a fixed seed (the long runs
//! are `make chaos`): real faults on a Redis Cluster under two tokend
//! replicas and retrying clients, resource servers watching the feed,
//! every call in a history, and the checker proving that nothing was
//! revived, resurrected or lost.

use std::time::Duration;

use testkit::chaos::{self, Config, Topology};

#[test]
fn a_short_seeded_fault_schedule_on_a_cluster_breaks_no_promise() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        seed: 1,
        duration: Duration::from_secs(12),
        topology: Topology::Cluster,
        clients: 6,
        users: 3,
        history: dir.path().join("history.jsonl"),
    };
    let run = chaos::run(&config);
    println!("{}", run.report.summary);
    let faults = std::fs::read_to_string(&run.history)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""op":"fault""#))
        .filter(|l| {
            ["SIGKILL", "SIGSTOP", "partition", "cut the feed"]
                .iter()
                .any(|f| l.contains(f))
        })
        .count();
    assert!(
        faults >= 2,
        "the nemesis applied faults:\n{}",
        run.report.summary
    );
    assert!(
        run.report.summary.contains("Refresh Ok"),
        "the workload refreshed:\n{}",
        run.report.summary
    );
    assert!(
        run.report.summary.contains("Access Ok") && run.report.summary.contains("SESSION_REVOKED"),
        "the resource servers accepted live sessions and refused ended ones:\n{}",
        run.report.summary
    );
    assert!(
        run.report.violations.is_empty(),
        "violations (history kept at {}):\n{:#?}",
        run.history.display(),
        run.report.violations
    );
}

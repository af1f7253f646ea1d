//! The nemesis: real faults on a schedule drawn from the run's seed,
//! applied to the Redis deployment and the tokend replicas, each healed
//! before the next (the deployment waits until healthy again), every one
//! recorded in the history.
//!
//! Faults: SIGKILL of a Redis primary (one with a replica in sync: the
//! nodes run without persistence, so a lone primary takes its data with
//! it, which no client of Redis survives) or replica (restarted after the
//! hold), SIGSTOP of a primary (SIGCONT after the hold: a primary that
//! stalls past the failover timeout and comes back demoted), SIGSTOP of a
//! sentinel, SIGKILL of a tokend replica mid-call (restarted on its
//! address).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::history::{Entry, History, Op, Outcome};
use crate::{Deployment, RedisCluster, RedisSentinel, Tokend};

/// The process number of the nemesis in the history.
pub const NEMESIS: usize = usize::MAX;

/// The Redis deployment under test.
pub enum Target {
    /// Three primaries with a replica each.
    Cluster(RedisCluster),
    /// A primary, its replica and three sentinels.
    Sentinel(RedisSentinel),
}

impl Target {
    /// The flags that point tokend at it.
    pub fn tokend_args(&self) -> Vec<String> {
        match self {
            Target::Cluster(c) => c.tokend_args(),
            Target::Sentinel(s) => s.tokend_args(),
        }
    }

    fn wait_healthy(&self) {
        match self {
            Target::Cluster(c) => c.wait_healthy(),
            Target::Sentinel(s) => s.wait_healthy(),
        }
    }

    /// The data nodes that are primaries now.
    fn primaries(&self) -> Vec<usize> {
        match self {
            Target::Cluster(c) => (0..c.len())
                .filter(|i| {
                    c.node(*i).running()
                        && c.node(*i).info_field("replication", "role").as_deref() == Some("master")
                })
                .collect(),
            Target::Sentinel(s) => vec![s.primary()],
        }
    }

    /// The primaries with a replica in sync: the ones a replicated
    /// deployment survives losing. (A primary without one takes its data
    /// with it, whatever tokend does: the nodes run without persistence.)
    fn replicated_primaries(&self) -> Vec<usize> {
        self.primaries()
            .into_iter()
            .filter(|i| {
                self.data_node(*i)
                    .info_field("replication", "slave0")
                    .is_some_and(|line| line.contains("state=online"))
            })
            .collect()
    }

    fn replicas(&self) -> Vec<usize> {
        match self {
            Target::Cluster(c) => {
                let primaries = self.primaries();
                (0..c.len()).filter(|i| !primaries.contains(i)).collect()
            }
            Target::Sentinel(s) => vec![s.replica()],
        }
    }

    fn kill(&mut self, i: usize) {
        match self {
            Target::Cluster(c) => c.kill(i),
            Target::Sentinel(s) => s.kill(i),
        }
    }

    fn restart(&mut self, i: usize) {
        match self {
            Target::Cluster(c) => c.restart(i),
            Target::Sentinel(s) => s.restart(i),
        }
    }

    fn data_node(&self, i: usize) -> &testkit_redis::Node {
        match self {
            Target::Cluster(c) => c.node(i),
            Target::Sentinel(s) => s.data(i),
        }
    }
}

/// One fault, as applied.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillData(usize),
    PauseData(usize),
    PauseSentinel(usize),
    KillTokend(usize),
}

/// A tokend replica the nemesis may kill, and how to start it again.
pub struct Replica {
    /// The running process (`None` while killed).
    pub process: Option<Tokend>,
    /// Starts it again on its address.
    pub start: Box<dyn Fn() -> Tokend + Send>,
    /// Its name in the history.
    pub name: String,
}

/// Applies faults drawn from `rng` until `stop`, each held 1-4 s, healed,
/// and followed by a pause of 1-3 s; then heals everything and records
/// [`Op::Heal`].
pub fn run(
    target: &mut Target,
    replicas: &mut [Replica],
    rng: &mut fastrand::Rng,
    history: &History,
    stop: &Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        sleep_unless(stop, Duration::from_millis(rng.u64(1_000..3_000)));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let fault = draw(target, replicas.len(), rng);
        let start_ms = history.now_ms();
        let detail = apply(target, replicas, fault);
        std::thread::sleep(Duration::from_millis(rng.u64(1_000..4_000)));
        heal(target, replicas, fault);
        history.record(Entry {
            start_ms,
            end_ms: history.now_ms(),
            detail,
            ..Entry::new(Op::Fault, NEMESIS, Outcome::Ok)
        });
    }
    target.wait_healthy();
    let now = history.now_ms();
    history.record(Entry {
        start_ms: now,
        end_ms: now,
        ..Entry::new(Op::Heal, NEMESIS, Outcome::Ok)
    });
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

fn draw(target: &Target, replicas: usize, rng: &mut fastrand::Rng) -> Fault {
    let pick = |rng: &mut fastrand::Rng, from: &[usize]| from[rng.usize(..from.len())];
    loop {
        let primaries = target.replicated_primaries();
        match rng.u8(0..10) {
            0..=2 if !primaries.is_empty() => return Fault::KillData(pick(rng, &primaries)),
            3..=4 if !primaries.is_empty() => return Fault::PauseData(pick(rng, &primaries)),
            0..=4 => {}
            5..=6 => {
                let candidates = target.replicas();
                if !candidates.is_empty() {
                    return Fault::KillData(pick(rng, &candidates));
                }
            }
            7 if matches!(target, Target::Sentinel(_)) => {
                return Fault::PauseSentinel(rng.usize(0..3));
            }
            7 => {}
            _ if replicas > 0 => return Fault::KillTokend(rng.usize(..replicas)),
            _ => {}
        }
    }
}

fn apply(target: &mut Target, replicas: &mut [Replica], fault: Fault) -> String {
    match fault {
        Fault::KillData(i) => {
            let role = target
                .data_node(i)
                .info_field("replication", "role")
                .unwrap_or_default();
            target.kill(i);
            format!("SIGKILL redis {i} ({role})")
        }
        Fault::PauseData(i) => {
            target.data_node(i).pause();
            format!("SIGSTOP redis {i} (master)")
        }
        Fault::PauseSentinel(i) => {
            if let Target::Sentinel(s) = target {
                s.sentinel(i).pause();
            }
            format!("SIGSTOP sentinel {i}")
        }
        Fault::KillTokend(j) => {
            if let Some(mut process) = replicas[j].process.take() {
                process.kill();
            }
            format!("SIGKILL {}", replicas[j].name)
        }
    }
}

fn heal(target: &mut Target, replicas: &mut [Replica], fault: Fault) {
    match fault {
        Fault::KillData(i) => target.restart(i),
        Fault::PauseData(i) => {
            target.data_node(i).resume();
            target.wait_healthy();
        }
        Fault::PauseSentinel(i) => {
            if let Target::Sentinel(s) = target {
                s.sentinel(i).resume();
            }
            target.wait_healthy();
        }
        Fault::KillTokend(j) => {
            replicas[j].process = Some((replicas[j].start)());
        }
    }
}

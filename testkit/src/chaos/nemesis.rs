//! The nemesis: real faults on a schedule drawn from the run's seed,
//! applied to the Redis deployment and the tokend replicas, each healed
//! before the next (the deployment waits until healthy again), every one
//! recorded in the history.
//!
//! Faults: SIGKILL of a Redis primary (one with a replica in sync: the
//! nodes run without persistence, so a lone primary takes its data with
//! it, which no client of Redis survives; restarted once the replica took
//! over) or of a replica (restarted after the hold); SIGSTOP of a primary
//! (SIGCONT after the hold: a primary that stalls past the failover
//! timeout and comes back demoted) or of a replica; SIGSTOP or SIGKILL of
//! a sentinel; SIGKILL of a tokend replica mid-call (restarted on its
//! address); and, where the firewall can be changed ([`network`]),
//! partitions: a tokend replica cut from a primary, a primary cut from its
//! replica (their replication link), a resource server's feed connection
//! cut from its tokend.
//!
//! [`network`]: super::network

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::history::{Entry, History, Op, Outcome};
use super::network::{Cut, Firewall, Groups};
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

    /// Waits until a running primary serves every slot (after a
    /// primary's kill: its replica was promoted).
    fn wait_serving(&self) {
        match self {
            Target::Cluster(c) => c.wait_serving(),
            Target::Sentinel(s) => s.wait_serving(),
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

    /// The port of the replication link from primary `i`'s replica (its
    /// end of the connection), if one is connected.
    fn replication_port(&self, i: usize) -> Option<u16> {
        let list: String = self
            .data_node(i)
            .query(redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("replica"))?;
        list.lines().find_map(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("addr="))
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|port| port.parse().ok())
        })
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
#[derive(Debug, Clone)]
enum Fault {
    KillData(usize),
    PauseData(usize),
    PauseSentinel(usize),
    KillSentinel(usize),
    KillTokend(usize),
    /// Tokend replica `.0` cut from data node `.1` (a primary).
    PartitionTokend(usize, usize),
    /// Primary `.0`'s replication link (to its replica's port `.1`) cut.
    PartitionReplication(usize, u16),
    /// Resource server `.0`'s connections to its tokend replica cut.
    CutFeed(usize),
}

/// What the network faults need: the firewall, the processes' groups and
/// how many resource servers watch (resource server `k` watches tokend
/// replica `k`).
pub struct Network {
    /// The run's firewall.
    pub firewall: Firewall,
    /// The groups the processes run with.
    pub groups: Groups,
    /// How many resource servers watch the feed.
    pub resource_servers: usize,
}

/// A tokend replica the nemesis may kill, and how to start it again.
pub struct Replica {
    /// The running process (`None` while killed).
    pub process: Option<Tokend>,
    /// Starts it again on its address.
    pub start: Box<dyn Fn() -> Tokend + Send>,
    /// Its name in the history.
    pub name: String,
    /// The port it listens on (the same after a restart).
    pub port: u16,
    /// Where its logs are kept, every process's after the other (next to
    /// the history), for reading a failed run.
    pub log: std::path::PathBuf,
}

impl Replica {
    /// Appends `process`'s logs to [`log`](Self::log).
    pub fn keep_log(&self, process: &Tokend) {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = file.write_all(process.logs().as_bytes());
        }
    }
}

/// Applies faults drawn from `rng` until `stop`, each held 1-4 s, healed,
/// and followed by a pause of 1-3 s; then heals everything and records
/// [`Op::Heal`].
pub fn run(
    target: &mut Target,
    replicas: &mut [Replica],
    network: &Network,
    rng: &mut fastrand::Rng,
    history: &History,
    stop: &Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        sleep_unless(stop, Duration::from_millis(rng.u64(1_000..3_000)));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let fault = draw(target, replicas.len(), network, rng);
        let start_ms = history.now_ms();
        let detail = apply(target, replicas, network, &fault);
        std::thread::sleep(Duration::from_millis(rng.u64(1_000..4_000)));
        heal(target, replicas, network, &fault);
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

fn draw(target: &Target, replicas: usize, network: &Network, rng: &mut fastrand::Rng) -> Fault {
    let pick = |rng: &mut fastrand::Rng, from: &[usize]| from[rng.usize(..from.len())];
    let partitions = network.firewall.available();
    loop {
        let primaries = target.replicated_primaries();
        match rng.u8(0..14) {
            10 if partitions && replicas > 0 => {
                let all = target.primaries();
                if !all.is_empty() {
                    return Fault::PartitionTokend(rng.usize(..replicas), pick(rng, &all));
                }
            }
            11 if partitions && !primaries.is_empty() => {
                let primary = pick(rng, &primaries);
                if let Some(port) = target.replication_port(primary) {
                    return Fault::PartitionReplication(primary, port);
                }
            }
            12..=13 if partitions && network.resource_servers > 0 => {
                return Fault::CutFeed(rng.usize(..network.resource_servers.min(replicas)));
            }
            10..=13 => {}
            0..=2 if !primaries.is_empty() => return Fault::KillData(pick(rng, &primaries)),
            3..=4 if !primaries.is_empty() => return Fault::PauseData(pick(rng, &primaries)),
            0..=4 => {}
            5..=6 => {
                let candidates = target.replicas();
                if !candidates.is_empty() {
                    let replica = pick(rng, &candidates);
                    return if rng.bool() {
                        Fault::KillData(replica)
                    } else {
                        Fault::PauseData(replica)
                    };
                }
            }
            7 if matches!(target, Target::Sentinel(_)) => {
                let sentinel = rng.usize(0..3);
                return if rng.bool() {
                    Fault::PauseSentinel(sentinel)
                } else {
                    Fault::KillSentinel(sentinel)
                };
            }
            7 => {}
            _ if replicas > 0 => return Fault::KillTokend(rng.usize(..replicas)),
            _ => {}
        }
    }
}

fn apply(
    target: &mut Target,
    replicas: &mut [Replica],
    network: &Network,
    fault: &Fault,
) -> String {
    let refused = |done: bool| {
        if done {
            ""
        } else {
            " (refused by the firewall)"
        }
    };
    match *fault {
        Fault::KillData(i) => {
            let role = target
                .data_node(i)
                .info_field("replication", "role")
                .unwrap_or_default();
            target.kill(i);
            format!("SIGKILL redis {i} ({role})")
        }
        Fault::PauseData(i) => {
            let role = target
                .data_node(i)
                .info_field("replication", "role")
                .unwrap_or_default();
            target.data_node(i).pause();
            format!("SIGSTOP redis {i} ({role})")
        }
        Fault::PauseSentinel(i) => {
            if let Target::Sentinel(s) = target {
                s.sentinel(i).pause();
            }
            format!("SIGSTOP sentinel {i}")
        }
        Fault::KillSentinel(i) => {
            if let Target::Sentinel(s) = target {
                s.kill_sentinel(i);
            }
            format!("SIGKILL sentinel {i}")
        }
        Fault::KillTokend(j) => {
            if let Some(mut process) = replicas[j].process.take() {
                process.kill();
                replicas[j].keep_log(&process);
            }
            format!("SIGKILL {}", replicas[j].name)
        }
        Fault::PartitionTokend(..) | Fault::PartitionReplication(..) | Fault::CutFeed(_) => {
            let done = network.firewall.cut(cut(target, replicas, network, fault));
            match *fault {
                Fault::PartitionTokend(j, i) => format!(
                    "partition {} from redis {i} (master){}",
                    replicas[j].name,
                    refused(done)
                ),
                Fault::PartitionReplication(i, _) => {
                    format!(
                        "partition redis {i} (master) from its replica{}",
                        refused(done)
                    )
                }
                Fault::CutFeed(k) => format!(
                    "cut the feed of rs-{k} from {}{}",
                    replicas[k].name,
                    refused(done)
                ),
                _ => String::new(),
            }
        }
    }
}

/// The firewall cut a partition fault makes.
fn cut(target: &Target, replicas: &[Replica], network: &Network, fault: &Fault) -> Cut {
    match *fault {
        Fault::PartitionTokend(j, i) => Cut::Group {
            gid: network.groups.tokend(j),
            port: target.data_node(i).port(),
        },
        Fault::PartitionReplication(i, port) => Cut::Link {
            from: port,
            to: target.data_node(i).port(),
        },
        Fault::CutFeed(k) => Cut::Group {
            gid: network.groups.resource_server(k),
            port: replicas[k].port,
        },
        // Not a partition: nothing to cut (never asked).
        _ => Cut::Link { from: 0, to: 0 },
    }
}

fn heal(target: &mut Target, replicas: &mut [Replica], network: &Network, fault: &Fault) {
    match *fault {
        Fault::KillData(i) => {
            // A killed primary comes back only after its replica took
            // over: the nodes save nothing themselves, so one restarted
            // before the failover would come back empty (or with the old
            // RDB file its last full sync as a replica left), still
            // primary, and its replica would copy that data set (Redis's
            // documented hazard of a primary without persistence that is
            // restarted automatically). That loses the shard for every
            // client, whatever tokend does.
            target.wait_serving();
            target.restart(i);
        }
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
        Fault::KillSentinel(i) => {
            if let Target::Sentinel(s) = target {
                s.restart_sentinel(i);
            }
        }
        Fault::KillTokend(j) => {
            replicas[j].process = Some((replicas[j].start)());
        }
        Fault::PartitionTokend(..) | Fault::PartitionReplication(..) | Fault::CutFeed(_) => {
            network
                .firewall
                .lift(&cut(target, replicas, network, fault));
            target.wait_healthy();
        }
    }
}

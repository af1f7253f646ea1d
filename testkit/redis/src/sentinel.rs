//! A primary with one replica under three sentinels (`redis-server
//! --sentinel`), with short timeouts so a killed primary is replaced within
//! a few seconds.

use std::time::Duration;

use crate::node::{MAX_START_TRIES, Node, WOULD_NOT_START, free_port, wait_until};

/// The name the sentinels know the primary by.
pub(crate) const MASTER_NAME: &str = "tokend-primary";

/// How long a primary may be silent before a sentinel counts it as down.
/// Above one second: a sentinel pings every second at most, and times a
/// newly named primary from the moment it named it, so with one second
/// (or less) every sentinel counted the new primary down right after a
/// failover, just before its first ping was answered, and started another
/// failover at once, to any node listed as its replica, even one just
/// restarted from an old RDB file (found by `make chaos TOPOLOGY=sentinel
/// SEED=13`: the writes the new primary took were lost).
pub(crate) const DOWN_AFTER_MS: u64 = 2000;

/// How long forming, failing over or rejoining may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Two data nodes (a primary and a replica, either way round after a
/// failover) and three sentinels.
pub struct RedisSentinel {
    data: Vec<Node>,
    sentinels: Vec<Node>,
}

impl RedisSentinel {
    /// Starts the primary, its replica (synced) and three sentinels that
    /// know each other and the replica.
    pub fn start() -> RedisSentinel {
        let primary = start_node(&[]);
        let port = primary.port().to_string();
        let replica = start_node(&["--replicaof", "127.0.0.1", &port]);
        let mut sentinels = Vec::new();
        let mut tries = 0;
        while sentinels.len() < 3 {
            tries += 1;
            assert!(tries <= MAX_START_TRIES, "{WOULD_NOT_START}");
            let config = format!(
                "sentinel monitor {MASTER_NAME} 127.0.0.1 {port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 4000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n"
            );
            if let Some(node) = Node::start_with_config(free_port(), Some(config), &["--sentinel"])
            {
                sentinels.push(node);
            }
        }
        let fixture = RedisSentinel {
            data: vec![primary, replica],
            sentinels,
        };
        fixture.wait_healthy();
        fixture
    }

    /// `redis://127.0.0.1:PORT` of each sentinel.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::url).collect()
    }

    /// The sentinels comma-separated, as `--redis-sentinel` takes them.
    pub fn sentinels(&self) -> String {
        self.urls().join(",")
    }

    /// The primary's name, for `--redis-sentinel-master`.
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// Data node `i` (0 was the primary at the start).
    pub fn data(&self, i: usize) -> &Node {
        &self.data[i]
    }

    /// Sentinel `i`.
    pub fn sentinel(&self, i: usize) -> &Node {
        &self.sentinels[i]
    }

    /// Kills sentinel `i` (SIGKILL).
    pub fn kill_sentinel(&mut self, i: usize) {
        self.sentinels[i].kill();
    }

    /// Restarts sentinel `i` with the configuration it rewrote, and waits
    /// until the deployment is healthy.
    pub fn restart_sentinel(&mut self, i: usize) {
        self.sentinels[i].restart();
        self.wait_healthy();
    }

    /// The port the sentinels name as primary now, as the first that answers
    /// says.
    fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let addr: Vec<String> = s.query(
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME),
            )?;
            addr.get(1)?.parse().ok()
        })
    }

    /// The data node the sentinels name primary now.
    pub fn primary(&self) -> usize {
        let port = self.primary_port().expect("a sentinel names a primary");
        self.data
            .iter()
            .position(|n| n.port() == port)
            .expect("the primary is one of ours")
    }

    /// The other data node.
    pub fn replica(&self) -> usize {
        1 - self.primary()
    }

    /// Kills data node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.data[i].kill();
    }

    /// Restarts data node `i` on its port; the sentinels make it a replica
    /// of the current primary, and this waits until it has synced.
    pub fn restart(&mut self, i: usize) {
        self.data[i].restart();
        self.wait_healthy();
    }

    /// Waits until the sentinels name a running primary that calls itself
    /// primary (after a kill: the replica was promoted).
    pub fn wait_serving(&self) {
        wait_until("a promoted primary", PATIENCE, || self.serving());
    }

    fn serving(&self) -> bool {
        let Some(port) = self.primary_port() else {
            return false;
        };
        self.data.iter().any(|n| {
            n.port() == port
                && n.running()
                && n.info_field("replication", "role").as_deref() == Some("master")
        })
    }

    /// Waits until the primary serves, every running data node besides it
    /// is its synced replica, and each sentinel knows the two others and
    /// the replicas (so the next failover can be agreed on).
    pub fn wait_healthy(&self) {
        wait_until("a healthy sentinel deployment", PATIENCE, || {
            if !self.serving() {
                return false;
            }
            let Some(port) = self.primary_port() else {
                return false;
            };
            let replicas_synced = self
                .data
                .iter()
                .filter(|n| n.running() && n.port() != port)
                .all(|n| {
                    n.info_field("replication", "master_port").as_deref()
                        == Some(port.to_string().as_str())
                        && n.info_field("replication", "master_link_status").as_deref()
                            == Some("up")
                });
            let running_replicas = self
                .data
                .iter()
                .filter(|n| n.running() && n.port() != port)
                .count();
            let sentinels_agree = self.sentinels.iter().all(|s| {
                let others: Option<Vec<redis::Value>> =
                    s.query(redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME));
                let replicas: Option<Vec<redis::Value>> =
                    s.query(redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME));
                others.is_some_and(|o| o.len() >= 2)
                    && replicas.is_some_and(|r| r.len() >= running_replicas)
            });
            replicas_synced && sentinels_agree
        });
    }
}

fn start_node(args: &[&str]) -> Node {
    for _ in 0..5 {
        if let Some(node) = Node::start(free_port(), args) {
            return node;
        }
    }
    panic!("could not start redis-server");
}

/// A sentinel of its own watching the node on `port` as `master`, with a
/// quorum of one and a minute before it would call the node down: tests
/// give several of them different nodes to make the sentinels disagree
/// for good.
pub fn lone_sentinel(master: &str, port: u16) -> Node {
    let config = format!(
        "sentinel monitor {master} 127.0.0.1 {port} 1\n\
         sentinel down-after-milliseconds {master} 60000\n"
    );
    (0..MAX_START_TRIES)
        .find_map(|_| Node::start_with_config(free_port(), Some(config.clone()), &["--sentinel"]))
        .expect(WOULD_NOT_START)
}

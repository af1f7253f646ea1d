//! A real Redis Cluster: six `redis-server --cluster-enabled yes` processes
//! (three primaries, a replica each), formed with `redis-cli --cluster
//! create`, with a short node timeout so a killed primary's replica takes
//! over within a few seconds.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::node::{MAX_START_TRIES, Node, WOULD_NOT_START, port_is_free, wait_until};

/// How long a node may be silent before the others count it as failed.
pub(crate) const NODE_TIMEOUT_MS: u64 = 1500;

/// How long forming, failing over or rejoining may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where the next search for a pair of free ports starts.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port `p` below 55536 with `p` and its cluster bus port `p + 10000`
/// both free.
fn cluster_port() -> u16 {
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        // Spread concurrent test processes over the range.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id();
        let start = 20_000 + u16::try_from(seed % 20_000).unwrap_or(0);
        let _ = NEXT_PORT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        if port >= 45_000 {
            NEXT_PORT.store(20_000, Ordering::Relaxed);
            continue;
        }
        if port_is_free(port) && port_is_free(port + 10_000) {
            return port;
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    primary: bool,
    failed: bool,
    /// Slot ranges served, for a primary.
    slots: Vec<(u16, u16)>,
    /// The primary's node id, for a replica.
    primary_id: Option<String>,
    id: String,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let id = (*parts.first()?).to_owned();
            let addr = parts.get(1)?;
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = parts.get(2)?;
            let slots = parts
                .iter()
                .skip(8)
                .filter(|p| !p.starts_with('['))
                .filter_map(|range| {
                    let mut ends = range.split('-');
                    let from = ends.next()?.parse().ok()?;
                    let to = ends.next().map_or(Some(from), |t| t.parse().ok())?;
                    Some((from, to))
                })
                .collect();
            Some(NodeLine {
                port,
                primary: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
                primary_id: parts.get(3).filter(|p| **p != "-").map(|p| (*p).to_owned()),
                id,
            })
        })
        .collect()
}

/// Three primaries and three replicas.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster and waits until every slot is
    /// served and every replica has finished its first sync.
    pub fn start() -> RedisCluster {
        let timeout = NODE_TIMEOUT_MS.to_string();
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            timeout.as_str(),
            // A replica takes over however long its link to the primary
            // looked idle: on a loaded test machine the default (ten node
            // timeouts) can leave a killed primary's slots unserved for good.
            "--cluster-replica-validity-factor",
            "0",
        ];
        let mut nodes = Vec::new();
        let mut tries = 0;
        while nodes.len() < 6 {
            tries += 1;
            assert!(tries <= MAX_START_TRIES, "{WOULD_NOT_START}");
            if let Some(node) = Node::start(cluster_port(), &args) {
                nodes.push(node);
            }
        }
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(Node::addr))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli (installed with redis-server)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.wait_healthy();
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node: seeds for clients.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The seeds comma-separated, as `--redis-cluster` takes them.
    pub fn seeds(&self) -> String {
        self.urls().join(",")
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: the cluster always has six nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// The cluster as a running node sees it.
    fn view(&self) -> Vec<NodeLine> {
        self.nodes
            .iter()
            .filter(|n| n.running())
            .find_map(|n| n.query::<String>(redis::cmd("CLUSTER").arg("NODES")))
            .map(|text| parse_nodes(&text))
            .unwrap_or_default()
    }

    /// The slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        self.nodes
            .iter()
            .filter(|n| n.running())
            .find_map(|n| n.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)))
            .expect("a node answers CLUSTER KEYSLOT")
    }

    /// The node serving `key`'s slot now.
    pub fn primary_for(&self, key: &str) -> usize {
        self.serving_node(key).expect("a primary serves the slot")
    }

    /// The node serving `key`'s slot now, if one does (none while its
    /// failed primary is not yet replaced).
    pub fn serving_node(&self, key: &str) -> Option<usize> {
        let slot = self.slot(key);
        self.view()
            .iter()
            .find(|line| {
                line.primary
                    && !line.failed
                    && line.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .and_then(|line| self.index_of_port(line.port))
    }

    /// A replica of node `i`, if it has one.
    pub fn replica_of(&self, i: usize) -> Option<usize> {
        let view = self.view();
        let id = view
            .iter()
            .find(|l| l.port == self.nodes[i].port())?
            .id
            .clone();
        view.iter()
            .find(|l| l.primary_id.as_deref() == Some(id.as_str()) && !l.failed)
            .and_then(|l| self.index_of_port(l.port))
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` on its port with its `nodes.conf`: it rejoins (as a
    /// replica if its slots moved meanwhile) and this waits until it has
    /// synced.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
        self.wait_healthy();
    }

    /// Waits until every slot is served by a running primary, every running
    /// node sees every other in its role, and every running replica is
    /// synced.
    pub fn wait_healthy(&self) {
        wait_until("a healthy cluster", PATIENCE, || self.healthy());
    }

    /// Waits until every slot is served by a running primary again (after
    /// a kill: the failed primary's replica took over), without waiting for
    /// replicas.
    pub fn wait_serving(&self) {
        wait_until("the cluster to serve every slot", PATIENCE, || {
            self.serving()
        });
    }

    fn serving(&self) -> bool {
        let running = |port: u16| {
            self.index_of_port(port)
                .is_some_and(|i| self.nodes[i].running())
        };
        let view = self.view();
        let covered: usize = view
            .iter()
            .filter(|l| l.primary && !l.failed && running(l.port))
            .flat_map(|l| l.slots.iter())
            .map(|(a, b)| usize::from(b - a) + 1)
            .sum();
        covered == 16_384
            && self.nodes.iter().filter(|n| n.running()).all(|n| {
                n.query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
    }

    /// Whether every running node sees every running node in its role: a
    /// primary serving slots, or a replica of one. Right after `--cluster
    /// create` gossip may not have told every node yet which nodes became
    /// replicas (a client that maps the cluster then sees a primary
    /// without a replica, or a primary without slots).
    fn agreed(&self) -> bool {
        let running: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(Node::port)
            .collect();
        self.nodes.iter().filter(|n| n.running()).all(|n| {
            let Some(text) = n.query::<String>(redis::cmd("CLUSTER").arg("NODES")) else {
                return false;
            };
            let view = parse_nodes(&text);
            let serves = |id: &str| {
                view.iter()
                    .any(|l| l.id == id && l.primary && !l.failed && !l.slots.is_empty())
            };
            running.iter().all(|port| {
                view.iter().find(|l| l.port == *port).is_some_and(|l| {
                    !l.failed
                        && if l.primary {
                            !l.slots.is_empty()
                        } else {
                            l.primary_id.as_deref().is_some_and(serves)
                        }
                })
            })
        })
    }

    fn healthy(&self) -> bool {
        if !self.serving() || !self.agreed() {
            return false;
        }
        let view = self.view();
        self.nodes.iter().filter(|n| n.running()).all(|n| {
            let primary = view.iter().any(|l| l.port == n.port() && l.primary);
            if primary {
                // Every replica it has is online (synced, acknowledging).
                // No answer is not "no replicas": not healthy yet.
                let Some(replicas) = n
                    .info_field("replication", "connected_slaves")
                    .and_then(|v| v.parse::<usize>().ok())
                else {
                    return false;
                };
                (0..replicas).all(|i| {
                    n.info_field("replication", &format!("slave{i}"))
                        .is_some_and(|line| line.contains("state=online"))
                })
            } else {
                n.info_field("replication", "master_link_status").as_deref() == Some("up")
            }
        })
    }

    /// A cluster connection for inspecting what tokend wrote.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClientBuilder::new(self.urls())
            .response_timeout(Duration::from_secs(30))
            .build()
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the cluster")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master,fail - 0 0 2 connected 5461-10922 [5461->-x]
c3 127.0.0.1:30004@40004 slave a1 0 0 1 connected
";
        let lines = parse_nodes(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].slots, vec![(0, 5460)]);
        assert!(lines[1].failed && lines[1].primary);
        assert_eq!(lines[1].slots, vec![(5461, 10922)]);
        assert_eq!(lines[2].primary_id.as_deref(), Some("a1"));
        assert!(!lines[2].primary);
    }
}

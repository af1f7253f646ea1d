//! Whether a Redis Cluster still names a node the owner of a slot, asked
//! of the other nodes.
//!
//! A primary that stalls (SIGSTOP, a long pause) past its failover comes
//! back believing it still serves its slots: until the cluster bus tells
//! it about the promoted replica, it takes the writes already queued on
//! its connections. It has no replica then, so with
//! `--redis-replica-acks auto` no `WAIT` would catch such a write, and its
//! demotion moments later discards it. The other nodes know sooner: the
//! promoted replica announces itself to every node as it takes over. So a
//! write no replica confirmed is answered OK only while no other node that
//! answers says another node owns its slot.

use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisResult, Value};

/// How long another node may take to answer `CLUSTER NODES` before it
/// counts as silent: a node answers at once, and one that does not is
/// stalled or gone (waiting longer would fail the caller's call).
const PEER_PATIENCE: Duration = Duration::from_millis(200);

/// One line of `CLUSTER NODES`, the fields this needs.
#[derive(Debug, PartialEq, Eq)]
struct NodeLine {
    id: String,
    host: String,
    port: u16,
    /// Flagged `fail`, `handshake` or `noaddr`: not worth asking.
    unreachable: bool,
    primary: bool,
    /// Inclusive slot ranges served (a primary's).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn serves(&self, slot: u16) -> bool {
        self.primary
            && self
                .slots
                .iter()
                .any(|(from, to)| (*from..=*to).contains(&slot))
    }
}

/// Parses `CLUSTER NODES`: `id ip:port@bus[,hostname] flags primary
/// ping pong epoch state slot...`, skipping lines it cannot read and
/// slots being imported or migrated (`[slot->-id]`).
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?.to_owned();
            let addr = fields.next()?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let flags = fields.next()?;
            let flag = |name: &str| flags.split(',').any(|f| f == name);
            let slots = fields
                .skip(5)
                .filter(|s| !s.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(NodeLine {
                id,
                host: host.to_owned(),
                port: port.parse().ok()?,
                unreachable: flag("fail") || flag("handshake") || flag("noaddr"),
                primary: flag("master"),
                slots,
            })
        })
        .collect()
}

/// Whether `view` (one node's `CLUSTER NODES`) leaves `slot` to node `id`:
/// it names no other primary serving it.
fn leaves_slot_to(view: &[NodeLine], id: &str, slot: u16) -> bool {
    view.iter()
        .filter(|line| line.serves(slot))
        .all(|line| line.id == id)
}

/// `CLUSTER NODES`.
fn nodes_command() -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("NODES");
    cmd
}

/// `CLUSTER NODES` of the node at `host:port` over the cluster client's own
/// connection to it, or `None` if it has none or the node does not answer
/// within `within`.
async fn view_of(
    conn: &ClusterConnection,
    host: &str,
    port: u16,
    within: Duration,
) -> Option<Vec<NodeLine>> {
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    });
    let mut conn = conn.clone();
    let ask = async move { conn.route_command(nodes_command(), route).await };
    match tokio::time::timeout(within, ask).await {
        Ok(Ok(reply)) => listing(reply),
        _ => None,
    }
}

/// The nodes a `CLUSTER NODES` reply lists, if it is one.
fn listing(reply: Value) -> Option<Vec<NodeLine>> {
    match reply {
        Value::BulkString(text) => Some(parse_nodes(&String::from_utf8_lossy(&text))),
        Value::VerbatimString { text, .. } => Some(parse_nodes(&text)),
        _ => None,
    }
}

/// Whether every other node that answers within [`PEER_PATIENCE`] still
/// leaves `slot` to node `id` (see the module's doc). The nodes asked are
/// those the slot's primary, as the client routes to it now, lists; one
/// that does not answer counts as agreeing (a replica that is down is what
/// leaves a primary alone in the first place). Fails if that list cannot
/// be had in `within`.
pub(super) async fn others_leave_slot_to(
    conn: &ClusterConnection,
    id: &str,
    slot: u16,
    within: Duration,
) -> RedisResult<bool> {
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot,
        SlotAddr::Master,
    )));
    let mut lister = conn.clone();
    let asked = async move { lister.route_command(nodes_command(), route).await };
    let listed = match tokio::time::timeout(within, asked).await {
        Ok(Ok(reply)) => listing(reply).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER NODES reply"))
        })?,
        Ok(Err(err)) => return Err(err),
        Err(_) => {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out listing the cluster's nodes",
            )));
        }
    };
    if !leaves_slot_to(&listed, id, slot) {
        return Ok(false);
    }
    let patience = within.min(PEER_PATIENCE);
    let asks = listed
        .iter()
        .filter(|line| line.id != id && !line.unreachable)
        .map(|line| view_of(conn, &line.host, line.port, patience));
    Ok(futures_util::future::join_all(asks)
        .await
        .iter()
        .flatten()
        .all(|view| leaves_slot_to(view, id, slot)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,host-b master,fail - 0 0 2 connected 5461-10922 [5461->-c3]
c3 127.0.0.1:30003@40003 master - 0 0 3 connected 10923-16383
d4 127.0.0.1:30004@40004 slave a1 0 0 1 connected
e5 127.0.0.1:30005@40005 master - 0 0 4 connected 7000
";

    #[test]
    fn cluster_nodes_lines_parse() {
        let lines = parse_nodes(NODES);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0].slots, vec![(0, 5460)]);
        assert!(lines[0].primary && !lines[0].unreachable);
        assert_eq!(
            (lines[1].host.as_str(), lines[1].port),
            ("127.0.0.1", 30002)
        );
        assert!(lines[1].unreachable);
        assert_eq!(lines[1].slots, vec![(5461, 10922)]);
        assert!(!lines[3].primary && lines[3].slots.is_empty());
        assert_eq!(lines[4].slots, vec![(7000, 7000)]);
    }

    #[test]
    fn a_view_leaves_a_slot_only_to_the_node_it_names() {
        let view = parse_nodes(NODES);
        assert!(leaves_slot_to(&view, "a1", 100));
        assert!(
            !leaves_slot_to(&view, "d4", 100),
            "a replica serves nothing"
        );
        // Two primaries claim 7000 (one took it over): neither alone has it.
        assert!(!leaves_slot_to(&view, "b2", 7000));
        assert!(!leaves_slot_to(&view, "e5", 7000));
        // A view that names nobody (an unassigned slot) leaves it to anyone.
        assert!(leaves_slot_to(&parse_nodes(""), "a1", 100));
    }
}

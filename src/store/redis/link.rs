//! How tokend reaches Redis, whatever the deployment's shape: one node, a
//! Redis Cluster (redis-rs's own cluster client routes every command by its
//! key's slot and follows MOVED/ASK redirections and failovers), or a
//! primary under Sentinel (looked up through the sentinels, and again when
//! it stops answering as primary).
//!
//! A [`Connector`] knows the deployment and opens [`Link`]s to it: a link is
//! one multiplexed connection (per node, on a cluster) that any number of
//! callers share. The store keeps one link for most traffic, a few for
//! writes that wait for replicas (`WAIT` blocks the link it is sent on), and
//! the feed follower opens one for its blocking reads.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

use super::{cluster_view, replicas};
use crate::store::StoreError;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTarget {
    /// One node: `redis://[user:password@]host:port[/db]`.
    Node(String),
    /// Seed nodes of a Redis Cluster (any reachable one suffices).
    Cluster(Vec<String>),
    /// Sentinels watching the primary called `master`. Credentials and
    /// database in the sentinel URLs are used for the primary too.
    Sentinel {
        /// `redis://host:port` of each sentinel.
        sentinels: Vec<String>,
        /// The name the sentinels know the primary by.
        master: String,
    },
}

impl RedisTarget {
    /// What kind of deployment, for logs (never the URLs: they may hold a
    /// password).
    pub fn kind(&self) -> &'static str {
        match self {
            RedisTarget::Node(_) => "redis",
            RedisTarget::Cluster(_) => "redis-cluster",
            RedisTarget::Sentinel { .. } => "redis-sentinel",
        }
    }

    /// Where it is, for error messages an operator reads: every URL with
    /// its password replaced by `***` (the user name and host stay, so the
    /// operator sees which Redis and which account were tried).
    pub fn shown(&self) -> String {
        match self {
            RedisTarget::Node(url) => redacted(url),
            RedisTarget::Cluster(urls) => urls
                .iter()
                .map(|u| redacted(u))
                .collect::<Vec<_>>()
                .join(", "),
            RedisTarget::Sentinel { sentinels, master } => format!(
                "{} (sentinels of {master:?})",
                sentinels
                    .iter()
                    .map(|u| redacted(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// `url` with its secrets replaced by `***`: the password of its user info
/// (`redis://app:s3cret@host:6379/0` becomes `redis://app:***@host:6379/0`)
/// and any query (unix-socket URLs carry the password as `?pass=`). The
/// user info ends at the last `@`, so a password holding `/`, `?`, `#` or
/// `@` is never taken for the host or the path; when in doubt, more is
/// hidden, never less.
pub(super) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: it may be anything, say nothing of it.
        return "(an unparsable URL)".to_owned();
    };
    let (user_info, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let after = match after.find(['?', '#']) {
        Some(i) => format!("{}?***", &after[..i]),
        None => after.to_owned(),
    };
    match user_info {
        None => format!("{scheme}://{after}"),
        Some(info) => match info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{after}"),
            // A lone user info is a password to Redis (`redis://pw@host`).
            None => format!("{scheme}://***@{after}"),
        },
    }
}

/// Opens links to one deployment.
#[derive(Clone)]
pub(super) struct Connector {
    kind: Kind,
    /// How long a connection attempt or a reply may take.
    timeout: Duration,
}

#[derive(Clone)]
enum Kind {
    Node(redis::Client),
    Cluster(Vec<redis::ConnectionInfo>),
    Sentinel(Arc<Sentinels>),
}

impl Connector {
    /// A connector for `target`; fails only on malformed URLs.
    pub(super) fn new(target: &RedisTarget, timeout: Duration) -> Result<Connector, StoreError> {
        let bad = |e: RedisError| {
            StoreError::Unavailable(format!("bad Redis URL {}: {e}", target.shown()))
        };
        let kind = match target {
            RedisTarget::Node(url) => Kind::Node(redis::Client::open(url.as_str()).map_err(bad)?),
            RedisTarget::Cluster(seeds) => {
                if seeds.is_empty() {
                    return Err(StoreError::Unavailable(
                        "--redis-cluster needs at least one seed node".into(),
                    ));
                }
                let infos = seeds
                    .iter()
                    .map(|url| url.as_str().into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(bad)?;
                Kind::Cluster(infos)
            }
            RedisTarget::Sentinel { sentinels, master } => {
                Kind::Sentinel(Arc::new(Sentinels::new(sentinels, master).map_err(bad)?))
            }
        };
        Ok(Connector { kind, timeout })
    }

    /// A link for everyday traffic; replies slower than the timeout fail.
    pub(super) async fn link(&self) -> RedisResult<Link> {
        self.open(self.timeout, false).await
    }

    /// A link whose replies may take `reply_within` (blocking reads), and
    /// that the caller drops and reopens after an error.
    pub(super) async fn blocking_link(&self, reply_within: Duration) -> RedisResult<Link> {
        self.open(reply_within, true).await
    }

    /// Asks every primary how many replicas it has in sync (`ROLE`), which
    /// also checks that each answers. On a cluster the primaries are those
    /// `CLUSTER SLOTS` names, each asked on a connection of its own (the
    /// cluster client skips nodes it has no connection to, which would hide
    /// a dead primary).
    pub(super) async fn survey(&self, link: &mut Link) -> RedisResult<Vec<Shard>> {
        let Kind::Cluster(seeds) = &self.kind else {
            let role: Value = redis::cmd("ROLE").query_async(link).await?;
            return Ok(vec![Shard {
                slots: vec![(0, MAX_SLOT)],
                replicas_in_sync: replicas_in_sync(&role)?,
            }]);
        };
        let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(link).await?;
        let mut primaries: Vec<(NodeAddr, Vec<(u16, u16)>)> = Vec::new();
        for range in &ranges {
            let Some((primary, slots)) = primary_of_range(range) else {
                continue;
            };
            match primaries.iter_mut().find(|(p, _)| *p == primary) {
                Some((_, all)) => all.push(slots),
                None => primaries.push((primary, vec![slots])),
            }
        }
        let template = seeds
            .first()
            .ok_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no seeds")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let asks = primaries.into_iter().map(|((host, port), slots)| {
            let info = template
                .clone()
                .set_addr(redis::ConnectionAddr::Tcp(host, port));
            let config = config.clone();
            async move {
                let mut conn = redis::Client::open(info)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let role: Value = redis::cmd("ROLE").query_async(&mut conn).await?;
                Ok::<_, RedisError>(Shard {
                    slots,
                    replicas_in_sync: replicas_in_sync(&role)?,
                })
            }
        });
        futures_util::future::try_join_all(asks).await
    }

    async fn open(&self, reply_within: Duration, blocking: bool) -> RedisResult<Link> {
        let connect = async {
            match &self.kind {
                Kind::Node(client) if blocking => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(reply_within));
                    let conn = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    Ok(Link::Direct(conn))
                }
                Kind::Node(client) => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(reply_within))
                        // Fail fast while Redis is down; the next call tries again.
                        .set_number_of_retries(1)
                        .set_min_delay(Duration::from_millis(50))
                        .set_max_delay(Duration::from_millis(250));
                    let manager =
                        ConnectionManager::new_with_config(client.clone(), config).await?;
                    Ok(Link::Node(manager))
                }
                Kind::Cluster(seeds) => {
                    let client = ClusterClientBuilder::new(seeds.clone())
                        .connection_timeout(self.timeout)
                        .response_timeout(reply_within)
                        // Never send a command again on its own: a script
                        // whose connection broke may have run, and a
                        // pipeline is repeated whole when one of its
                        // commands is redirected, running the others twice.
                        // A redirection still refreshes the slot map, so
                        // the caller's retry goes to the right node.
                        .retries(0)
                        .build()?;
                    Ok(Link::Cluster(client.get_async_connection().await?))
                }
                Kind::Sentinel(sentinels) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(reply_within));
                    Ok(Link::Sentinel(SentinelLink::new(
                        Arc::clone(sentinels),
                        config,
                    )))
                }
            }
        };
        // Everything above gives up by itself, but a sentinel or a cluster
        // seed that accepts and never answers must not hang a caller.
        let patience = self.timeout.saturating_mul(4);
        tokio::time::timeout(patience, connect)
            .await
            .map_err(|_| timed_out("connecting to Redis"))?
    }
}

/// A node's `(host, port)`.
type NodeAddr = (String, u16);

/// The highest hash slot.
pub(super) const MAX_SLOT: u16 = 16_383;

/// One primary and the slots it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shard {
    /// Inclusive slot ranges (all of them, on one node or under Sentinel).
    pub slots: Vec<(u16, u16)>,
    /// Replicas `ROLE` lists as connected and in sync.
    pub replicas_in_sync: usize,
}

/// How many replicas `ROLE` (asked of a primary) lists; an error if the
/// node is no primary.
pub(super) fn replicas_in_sync(role: &Value) -> RedisResult<usize> {
    let Value::Array(parts) = role else {
        return Err(RedisError::from((
            ErrorKind::Parse,
            "unexpected ROLE reply",
        )));
    };
    match (parts.first(), parts.get(2)) {
        (Some(Value::BulkString(kind)), Some(Value::Array(replicas))) if kind == b"master" => {
            Ok(replicas.len())
        }
        _ => Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "the node is not a primary",
        ))),
    }
}

/// The primary's `(host, port)` and the slot range of one entry of
/// `CLUSTER SLOTS` (`[from, to, [host, port, id, ...], replicas...]`).
fn primary_of_range(range: &[Value]) -> Option<(NodeAddr, (u16, u16))> {
    let (Some(Value::Int(from)), Some(Value::Int(to))) = (range.first(), range.get(1)) else {
        return None;
    };
    let slots = (u16::try_from(*from).ok()?, u16::try_from(*to).ok()?);
    let Some(Value::Array(primary)) = range.get(2) else {
        return None;
    };
    let host = match primary.first()? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
        Value::SimpleString(text) => text.clone(),
        _ => return None,
    };
    let Value::Int(port) = primary.get(1)? else {
        return None;
    };
    Some(((host, u16::try_from(*port).ok()?), slots))
}

/// A `RedisError` for an operation that ran out of time.
fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("timed out {what}"),
    ))
}

/// One connection to the deployment, shared by every clone.
#[derive(Clone)]
pub(super) enum Link {
    /// One node; reconnects by itself.
    Node(ConnectionManager),
    /// One node, for blocking reads; dropped and reopened after an error.
    Direct(MultiplexedConnection),
    /// A Redis Cluster: a connection per node, routed by slot.
    Cluster(ClusterConnection),
    /// The primary under Sentinel.
    Sentinel(SentinelLink),
}

/// The node a pipeline ran on, where the link can tell: what
/// [`Link::still_primary`] asks about. Not the node the link leads to by
/// the time the answer is judged, which another call may have moved
/// meanwhile.
#[derive(Debug, Clone, Default)]
pub(super) enum RanOn {
    /// Where the link cannot tell (one node: always that one).
    #[default]
    Unknown,
    /// Under Sentinel, whose link moves from node to node: its address.
    Addr(redis::ConnectionAddr),
    /// On a cluster: the node's id (`CLUSTER MYID`, asked in the same
    /// pipeline) and the slot the pipeline was for.
    ClusterNode { id: String, slot: u16 },
}

impl Link {
    /// Whether the node a pipeline ran on (`ran`) is still the
    /// deployment's primary, for a write no replica confirmed or a read
    /// from a node without replicas: under Sentinel, asks the sentinels
    /// (see [`SentinelLink::still_named`]); on a cluster, the other nodes
    /// (see [`cluster_view::others_leave_slot_to`]: a node failed over
    /// hears of it on the cluster bus only moments later); a lone node is
    /// its own primary.
    pub(super) async fn still_primary(&self, ran: &RanOn, within: Duration) -> RedisResult<bool> {
        match (self, ran) {
            // Boxed, like the pipeline: deep enough to overflow the
            // compiler's layout limit otherwise.
            (Link::Sentinel(link), RanOn::Addr(addr)) => {
                Box::pin(link.still_named(addr, within)).await
            }
            // Under Sentinel a pipeline always says where it ran.
            (Link::Sentinel(_), _) => Ok(false),
            (Link::Cluster(cluster), RanOn::ClusterNode { id, slot }) => {
                Box::pin(cluster_view::others_leave_slot_to(
                    cluster, id, *slot, within,
                ))
                .await
            }
            // On a cluster a pipeline always says where it ran.
            (Link::Cluster(_), _) => Ok(false),
            _ => Ok(true),
        }
    }

    /// Runs `pipeline` on the node that owns `key` (on a cluster, the
    /// commands without a key, like `ROLE`, go there too). Commands that
    /// failed come back as [`Value::ServerError`] in their place: the
    /// others ran all the same.
    /// Says which node ran it, where the link can tell ([`RanOn`]).
    pub(super) async fn pipeline_at(
        &mut self,
        key: &[u8],
        pipeline: &Pipeline,
    ) -> RedisResult<(Vec<Value>, RanOn)> {
        match self {
            Link::Cluster(cluster) => {
                let slot = replicas::slot(key);
                let route = Route::new(slot, SlotAddr::Master);
                // Which node ran it, in the same round trip.
                let mut with_id = redis::pipe();
                with_id.cmd("CLUSTER").arg("MYID");
                for cmd in pipeline.cmd_iter() {
                    with_id.add_command(cmd.clone());
                }
                let mut values = cluster
                    .route_pipeline(
                        with_id.clone(),
                        0,
                        with_id.len(),
                        SingleNodeRoutingInfo::SpecificNode(route),
                    )
                    .await?
                    .into_iter();
                let id = match values.next() {
                    Some(Value::BulkString(id)) => String::from_utf8_lossy(&id).into_owned(),
                    Some(Value::SimpleString(id)) => id,
                    _ => {
                        return Err(RedisError::from((
                            ErrorKind::Parse,
                            "unexpected CLUSTER MYID reply",
                        )));
                    }
                };
                Ok((values.collect(), RanOn::ClusterNode { id, slot }))
            }
            Link::Sentinel(link) => {
                // Boxed: the future nests deep enough inside the servers'
                // to overflow the compiler's layout limit otherwise.
                let (values, addr) =
                    Box::pin(link.commands_on(pipeline, 0, pipeline.len())).await?;
                Ok((values, RanOn::Addr(addr)))
            }
            _ => {
                let values = self
                    .req_packed_commands(pipeline, 0, pipeline.len())
                    .await?;
                Ok((values, RanOn::default()))
            }
        }
    }

    /// Runs `cmd` on the node that owns `key`.
    pub(super) async fn command_at(&mut self, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Cluster(cluster) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                match cluster.route_command(cmd.clone(), route).await? {
                    // Routed commands hand back errors as values.
                    Value::ServerError(err) => Err(RedisError::from(err)),
                    value => Ok(value),
                }
            }
            _ => cmd.query_async(self).await,
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Node(c) => c.req_packed_command(cmd),
            Link::Direct(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
            Link::Sentinel(c) => Box::pin(c.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(c) => Box::pin(c.commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(c) => c.get_db(),
            Link::Direct(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Sentinel(c) => c.sentinels.db,
        }
    }
}

/// How the sentinels name a node (see [`Sentinels::majority_names`]).
#[derive(Debug, Clone, Copy)]
struct Naming {
    /// A majority of them name it, seeing it up with no failover under way.
    by_majority: bool,
    /// So does every one that answered (a majority did): none is leading
    /// a failover away from it.
    by_all_that_answered: bool,
}

/// How long another data node may take to answer `ROLE` before it counts
/// as down (see [`Sentinels::others_defer`]).
const ROLE_PATIENCE: Duration = Duration::from_millis(200);

/// The sentinels of one primary, shared by every link to it.
struct Sentinels {
    client: tokio::sync::Mutex<SentinelClient>,
    db: i64,
    /// The sentinels themselves, and the primary's name, for asking which
    /// node they name now without connecting to it.
    infos: Vec<redis::ConnectionInfo>,
    master: String,
    /// The data nodes' credentials and database (the sentinel URLs'), for
    /// asking the other data nodes what they are.
    node: redis::RedisConnectionInfo,
}

impl Sentinels {
    fn new(urls: &[String], master: &str) -> RedisResult<Sentinels> {
        let infos = urls
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let Some(first) = infos.first() else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "--redis-sentinel needs at least one sentinel",
            )));
        };
        // The primary takes the credentials and database of the sentinel
        // URLs (deployments usually share one password).
        let redis = first.redis_settings().clone();
        let db = redis.db();
        let node_settings = redis.clone();
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
        let client = SentinelClient::build(
            infos.clone(),
            master.to_owned(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Sentinels {
            client: tokio::sync::Mutex::new(client),
            db,
            infos,
            master: master.to_owned(),
            node: node_settings,
        })
    }

    /// Whether a majority of the sentinels name `host:port` as primary and
    /// see it up, with no failover under way (`SENTINEL MASTER`: its
    /// address and `flags`, asked of all at once, each answering within
    /// `within`). One sentinel's word is not enough: in a failover, or one
    /// that is undone, sentinels name different nodes for a while; and
    /// while a failover runs they still name the old primary, though a
    /// replica was promoted already. A write answered on a node the
    /// deployment then demotes is discarded by its resync. Fails if no
    /// majority answered at all.
    async fn majority_names(&self, host: &str, port: u16, within: Duration) -> RedisResult<Naming> {
        let asks = self.infos.iter().map(|info| async move {
            let ask = async {
                let client = redis::Client::open(info.clone())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let fields: Vec<String> = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(&self.master)
                    .query_async(&mut conn)
                    .await?;
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|pair| pair.first().map(String::as_str) == Some(name))
                        .and_then(|pair| pair.get(1))
                };
                let (Some(ip), Some(p), Some(flags)) = (field("ip"), field("port"), field("flags"))
                else {
                    return Err(RedisError::from((
                        ErrorKind::Parse,
                        "the sentinel names no primary",
                    )));
                };
                let settled = !flags
                    .split(',')
                    .any(|flag| matches!(flag, "s_down" | "o_down" | "failover_in_progress"));
                Ok::<bool, RedisError>(settled && ip == host && p.parse::<u16>().ok() == Some(port))
            };
            tokio::time::timeout(within, ask)
                .await
                .ok()
                .and_then(Result::ok)
        });
        let answers = futures_util::future::join_all(asks).await;
        let majority = self.infos.len() / 2 + 1;
        let answered = answers.iter().flatten().count();
        let naming = answers.iter().flatten().filter(|named| **named).count();
        if answered >= majority {
            Ok(Naming {
                by_majority: naming >= majority,
                by_all_that_answered: naming == answered,
            })
        } else {
            Err(RedisError::from((
                ErrorKind::Io,
                "no majority of the sentinels answered in time",
            )))
        }
    }

    /// Whether every other data node the sentinels know of defers to
    /// `host:port`: none answers calling itself primary, and none answers
    /// as a replica not connected to it. A primary that stalled past the
    /// start of a failover comes back before the sentinels that are not
    /// leading it hear of it: they still name it, with no failover flag,
    /// while the replica they will name next was already told to take
    /// over (or is about to be, its link to the stalled node still down).
    /// A write taken meanwhile without a replica's confirmation is then
    /// discarded. A node that does not answer within `within` defers: a
    /// replica that is down is what leaves a primary alone in the first
    /// place. Fails if no sentinel lists the replicas in time.
    async fn others_defer(&self, host: &str, port: u16, within: Duration) -> RedisResult<bool> {
        let replicas = self.listed_replicas(within).await?;
        let asks = replicas
            .into_iter()
            .filter(|(h, p)| !(h == host && *p == port))
            .map(|(h, p)| async move {
                let ask = async {
                    let info = redis::ConnectionAddr::Tcp(h, p)
                        .into_connection_info()?
                        .set_redis_settings(self.node.clone());
                    let client = redis::Client::open(info)?;
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("ROLE").query_async::<Value>(&mut conn).await
                };
                // A data node answers ROLE at once; one that does not is
                // stalled or gone (waiting longer would fail the call).
                match tokio::time::timeout(within.min(ROLE_PATIENCE), ask).await {
                    Ok(Ok(role)) => defers_to(&role, host, port),
                    // Down, stalled or unreachable: it takes no writes and
                    // the sentinels promote no node they see down.
                    _ => true,
                }
            });
        Ok(futures_util::future::join_all(asks)
            .await
            .into_iter()
            .all(|defers| defers))
    }

    /// The replicas' addresses, as the first sentinel to answer
    /// `SENTINEL REPLICAS` lists them.
    async fn listed_replicas(&self, within: Duration) -> RedisResult<Vec<NodeAddr>> {
        for info in &self.infos {
            let ask = async {
                let client = redis::Client::open(info.clone())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(&self.master)
                    .query_async::<Vec<Vec<String>>>(&mut conn)
                    .await
            };
            if let Ok(Ok(listed)) = tokio::time::timeout(within, ask).await {
                return Ok(listed
                    .iter()
                    .filter_map(|fields| {
                        let field = |name: &str| {
                            fields
                                .chunks(2)
                                .find(|pair| pair.first().map(String::as_str) == Some(name))
                                .and_then(|pair| pair.get(1))
                        };
                        Some((field("ip")?.clone(), field("port")?.parse().ok()?))
                    })
                    .collect());
            }
        }
        Err(RedisError::from((
            ErrorKind::Io,
            "no sentinel listed the replicas in time",
        )))
    }

    /// A client for the node the sentinels name primary now (checked to
    /// call itself primary).
    async fn primary(&self) -> RedisResult<redis::Client> {
        self.client.lock().await.async_get_client().await
    }
}

/// A link to the primary under Sentinel: one multiplexed connection, looked
/// up again through the sentinels after it fails, times out or answers
/// `READONLY` (a demoted primary). A `READONLY` write was not applied, so it
/// is retried once on the new primary: callers never see it.
#[derive(Clone)]
pub(super) struct SentinelLink {
    sentinels: Arc<Sentinels>,
    config: AsyncConnectionConfig,
    /// The connection, and the address of the node it leads to.
    current: Arc<Mutex<Option<(redis::ConnectionAddr, MultiplexedConnection)>>>,
}

impl SentinelLink {
    fn new(sentinels: Arc<Sentinels>, config: AsyncConnectionConfig) -> SentinelLink {
        SentinelLink {
            sentinels,
            config,
            current: Arc::new(Mutex::new(None)),
        }
    }

    fn cached(&self) -> Option<(redis::ConnectionAddr, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the node at `addr` is still the one the sentinels name
    /// primary, and the one the other data nodes defer to (see
    /// [`Sentinels::others_defer`]). A primary that stalled past a failover
    /// and came back calls itself primary (with no replica) until the
    /// sentinels demote it, and takes writes that its resync then
    /// discards: a write it took without a replica's confirmation must not
    /// be answered as done.
    /// The node asked about is `addr`, the one the call ran on: by now
    /// the link may lead elsewhere (another call found the old node gone
    /// and looked the primary up again), and asking about that one would
    /// vouch for a node the call never reached. If the link still leads to
    /// `addr` and it is not named, the link forgets it (the next call
    /// looks the primary up again).
    pub(super) async fn still_named(
        &self,
        addr: &redis::ConnectionAddr,
        within: Duration,
    ) -> RedisResult<bool> {
        let (host, port) = match addr {
            redis::ConnectionAddr::Tcp(h, p) => (h.as_str(), *p),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.as_str(), *port),
            _ => return Ok(false),
        };
        // Only the sentinel leading a failover knows it runs: while every
        // one that answers names the node, none is; otherwise the other
        // data nodes are asked too (see `Sentinels::others_defer`).
        let naming = self.sentinels.majority_names(host, port, within).await?;
        let same = naming.by_all_that_answered
            || (naming.by_majority && self.sentinels.others_defer(host, port, within).await?);
        if !same {
            self.forget_if(addr);
        }
        Ok(same)
    }

    /// The connection to the primary and the address it leads to, looked
    /// up if there is none.
    async fn connection(&self) -> RedisResult<(redis::ConnectionAddr, MultiplexedConnection)> {
        if let Some(cached) = self.cached() {
            return Ok(cached);
        }
        let client = self.sentinels.primary().await?;
        let addr = client.get_connection_info().addr().clone();
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((addr.clone(), conn.clone()));
        Ok((addr, conn))
    }

    /// Forgets the connection if it still leads to `addr` (not one another
    /// call opened since to the new primary), so the next call looks the
    /// primary up again.
    fn forget_if(&self, addr: &redis::ConnectionAddr) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(at, _)| at == addr) {
            *current = None;
        }
    }

    /// Whether `err` means this connection no longer leads to a primary.
    fn lost(err: &RedisError) -> bool {
        demoted(err) || err.is_io_error() || err.is_connection_dropped() || err.is_timeout()
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut retried = false;
        loop {
            let (addr, mut conn) = self.connection().await?;
            match conn.send_packed_command(cmd).await {
                Err(err) if Self::lost(&err) => {
                    self.forget_if(&addr);
                    if demoted(&err) && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(err);
                }
                answer => return answer,
            }
        }
    }

    async fn commands(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        Ok(self.commands_on(pipeline, offset, count).await?.0)
    }

    /// Runs a pipeline and says on which node it ran (the last one tried,
    /// after a `READONLY`).
    async fn commands_on(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<(Vec<Value>, redis::ConnectionAddr)> {
        let mut retried = false;
        loop {
            let (addr, mut conn) = self.connection().await?;
            match conn.send_packed_commands(pipeline, offset, count).await {
                Err(err) if Self::lost(&err) => {
                    self.forget_if(&addr);
                    if demoted(&err) && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(err);
                }
                // Errors of single commands come back in their place: a
                // write refused with READONLY means a demoted primary too
                // (and no write of the pipeline ran there).
                Ok(values) if values.iter().any(is_read_only) => {
                    self.forget_if(&addr);
                    if !retried {
                        retried = true;
                        continue;
                    }
                    return Ok((values, addr));
                }
                answer => return answer.map(|values| (values, addr)),
            }
        }
    }
}

/// Whether a data node's `ROLE` says it defers to the primary at
/// `host:port`: a replica connected to it, or a sentinel (never a data
/// node; listed by mistake). A primary, or a replica of another node or
/// not connected, does not.
fn defers_to(role: &Value, host: &str, port: u16) -> bool {
    let Value::Array(parts) = role else {
        return false;
    };
    let text = |i: usize| match parts.get(i) {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
        Some(Value::SimpleString(s)) => Some(s.as_str()),
        _ => None,
    };
    match text(0) {
        Some("slave") => {
            let same_port = matches!(parts.get(2), Some(Value::Int(p)) if *p == i64::from(port));
            text(1) == Some(host) && same_port && text(3) == Some("connected")
        }
        Some("sentinel") => true,
        _ => false,
    }
}

/// Whether a reply is a write refused by a replica.
fn is_read_only(value: &Value) -> bool {
    matches!(value, Value::ServerError(err) if err.kind() == Some(ServerErrorKind::ReadOnly))
}

/// Whether `err` is a write refused by a replica (a demoted primary).
pub(super) fn demoted(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn passwords_never_reach_an_error_message() {
        assert_eq!(
            redacted("redis://app:s3cret@db.example:6379/0"),
            "redis://app:***@db.example:6379/0"
        );
        assert_eq!(
            redacted("redis://:s3cret@127.0.0.1:1/"),
            "redis://:***@127.0.0.1:1/"
        );
        assert_eq!(redacted("redis://s3cret@host"), "redis://***@host");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        assert_eq!(redacted("rediss://u:p@w@host/"), "rediss://u:***@host/");
        // A base64 password holds '/': still hidden.
        assert_eq!(
            redacted("redis://app:ab/cd+e=@host:1/2"),
            "redis://app:***@host:1/2"
        );
        assert_eq!(redacted("redis://app:a?b#c@host"), "redis://app:***@host");
        // Unix sockets carry the password in the query.
        assert_eq!(
            redacted("redis+unix:///run/redis.sock?pass=s3cret&db=1"),
            "redis+unix:///run/redis.sock?***"
        );
        assert_eq!(redacted("s3cret"), "(an unparsable URL)");
        let target = RedisTarget::Sentinel {
            sentinels: vec!["redis://:pw@a:1".into(), "redis://b:2".into()],
            master: "mymaster".into(),
        };
        assert_eq!(
            target.shown(),
            "redis://:***@a:1, redis://b:2 (sentinels of \"mymaster\")"
        );
    }
}

#[cfg(test)]
mod ran_on_tests {
    use super::*;
    use testkit_redis::{RedisServer, lone_sentinel};

    fn addr_of(node: &RedisServer) -> redis::ConnectionAddr {
        redis::ConnectionAddr::Tcp("127.0.0.1".into(), node.port())
    }

    /// Found by `make chaos TOPOLOGY=sentinel` (seeds 4 and 17): tokend
    /// exchanged a session's token two seconds after its Revoke was
    /// acknowledged. A read (does the session exist?) ran on a primary that
    /// had stalled past its failover, while another call had already moved
    /// the shared link to the new primary; whether the node read was still
    /// the primary was then asked about the node the link led to by then
    /// (the new one, which the sentinels do name), not the one the read
    /// ran on. The same held for writes answered without a replica's
    /// confirmation. Here the sentinels name Y; the call runs on X; the
    /// link moves to Y before the answer is judged.
    #[tokio::test]
    async fn a_node_is_judged_by_where_the_call_ran_not_where_the_link_leads_now() {
        let x = RedisServer::start();
        let y = RedisServer::start();
        let sentinels: Vec<_> = (0..3)
            .map(|_| lone_sentinel("split-view", y.port()))
            .collect();
        let urls: Vec<String> = sentinels.iter().map(|s| s.url()).collect();
        let inner = SentinelLink::new(
            Arc::new(Sentinels::new(&urls, "split-view").unwrap()),
            AsyncConnectionConfig::new(),
        );
        // When the call began, the link led to X.
        let to_x = redis::Client::open(x.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        *inner.current.lock().unwrap() = Some((addr_of(&x), to_x));
        let mut link = Link::Sentinel(inner.clone());
        let mut pipe = redis::pipe();
        pipe.cmd("ROLE");
        let (_, ran) = link.pipeline_at(b"any", &pipe).await.unwrap();

        // Another call found X gone and looked the primary up again: Y.
        inner.forget_if(&addr_of(&x));
        let (now_at, _) = inner.connection().await.unwrap();
        assert_eq!(now_at, addr_of(&y));

        let within = Duration::from_secs(5);
        assert!(
            !link.still_primary(&ran, within).await.unwrap(),
            "X, where the call ran, is not the primary the sentinels name"
        );
        let on_y = RanOn::Addr(addr_of(&y));
        assert!(link.still_primary(&on_y, within).await.unwrap());
        // Judging X did not make the link forget its connection to Y.
        assert_eq!(inner.cached().map(|(at, _)| at), Some(addr_of(&y)));
    }
}

#[cfg(test)]
mod role_tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn only_a_connected_replica_of_the_primary_defers_to_it() {
        let replica = |host: &str, port: i64, state: &str| {
            Value::Array(vec![
                bulk("slave"),
                bulk(host),
                Value::Int(port),
                bulk(state),
                Value::Int(10),
            ])
        };
        assert!(defers_to(
            &replica("127.0.0.1", 6379, "connected"),
            "127.0.0.1",
            6379
        ));
        // Its link down (it may be promoted without what the primary took).
        for state in ["connect", "connecting", "sync", "handshake"] {
            assert!(!defers_to(
                &replica("127.0.0.1", 6379, state),
                "127.0.0.1",
                6379
            ));
        }
        // A replica of another node, or a primary itself.
        assert!(!defers_to(
            &replica("127.0.0.1", 6380, "connected"),
            "127.0.0.1",
            6379
        ));
        let primary = Value::Array(vec![bulk("master"), Value::Int(5), Value::Array(vec![])]);
        assert!(!defers_to(&primary, "127.0.0.1", 6379));
        // Garbage is not deference.
        assert!(!defers_to(&Value::Nil, "127.0.0.1", 6379));
        assert!(!defers_to(&Value::Array(vec![]), "127.0.0.1", 6379));
    }
}

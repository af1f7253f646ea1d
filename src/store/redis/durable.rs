//! Writes that must survive a failover.
//!
//! Redis replicates asynchronously: a write its primary acknowledged can
//! vanish when a replica that had not received it is promoted. For a token
//! service that is a revoked session coming back or a consumed refresh
//! token working again. So every write that creates, rotates or ends a
//! session, announces a revocation or changes an account is confirmed by a
//! replica (`WAIT`) before tokend answers; if none confirms in time the
//! call fails `STORE_UNAVAILABLE` (the write may or may not have happened;
//! a retry is safe: a repeated Revoke is a no-op, a repeated Refresh inside
//! the grace window gets the same successor).
//!
//! `WAIT` blocks the connection it is sent on until the replicas have
//! everything written on that connection before it, so:
//! - confirmed writes go over links of their own, never the one everything
//!   else shares;
//! - on each link, writes for one primary are sent in batches (group
//!   commit): one pipeline of `ROLE`, the scripts and one `WAIT`, so a
//!   wait covers every write of its batch, on the connection that ran them
//!   (never a `WAIT` on a connection that might have been replaced since);
//! - while a batch is out, the next one gathers; each caller's answer comes
//!   from the batch that carried its write.
//!
//! `ROLE`, run just before the scripts, says how many replicas the node
//! that ran them has in sync; with `--redis-replica-acks auto` that decides
//! whether a confirmation is needed, and corrects the [`ReplicaMap`].

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::{FromRedisValue, RedisError, Value};
use tokio::sync::oneshot;

use super::link::{Connector, Link, RanOn, Shard, replicas_in_sync};
use super::replicas::{self, ReplicaMap};
use super::reply;
use super::script::{ScriptCall, no_script, parse};
use crate::store::StoreError;

/// Links reserved for confirmed writes.
const LINKS: usize = 8;

/// The most writes one batch carries.
const MAX_BATCH: usize = 64;

/// How many replicas must confirm a write before tokend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplicaAcks {
    /// One whenever the primary that took the write has a replica in sync;
    /// none when it has none (a lone node, or a primary whose replica is
    /// gone until it or a new one is back).
    #[default]
    Auto,
    /// This many, always: a write is refused while fewer replicas can
    /// confirm it. 0 never waits.
    Exactly(u32),
}

impl FromStr for ReplicaAcks {
    type Err = String;

    fn from_str(text: &str) -> Result<ReplicaAcks, String> {
        if text == "auto" {
            return Ok(ReplicaAcks::Auto);
        }
        text.parse()
            .map(ReplicaAcks::Exactly)
            .map_err(|_| format!("expected `auto` or a number of replicas, not {text:?}"))
    }
}

impl std::fmt::Display for ReplicaAcks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaAcks::Auto => f.write_str("auto"),
            ReplicaAcks::Exactly(n) => write!(f, "{n}"),
        }
    }
}

/// A write waiting for its batch.
struct Job {
    call: ScriptCall,
    answer: oneshot::Sender<Result<Value, StoreError>>,
}

/// The writes for one primary over one link: a queue, and the right to
/// send the next batch.
#[derive(Default)]
struct Lane {
    queue: Mutex<Vec<Job>>,
    sending: Arc<tokio::sync::Mutex<()>>,
}

/// One link and its lanes, by primary (the first slot of its shard).
struct LinkLanes {
    link: Link,
    lanes: Mutex<HashMap<u16, Arc<Lane>>>,
}

impl LinkLanes {
    fn lane(&self, shard: u16) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(lanes.entry(shard).or_default())
    }
}

/// Runs confirmed writes.
#[derive(Clone)]
pub(super) struct Durable {
    links: Arc<[LinkLanes]>,
    next: Arc<AtomicUsize>,
    acks: ReplicaAcks,
    /// Which primaries have replicas, for [`ReplicaAcks::Auto`].
    replicas: Arc<ReplicaMap>,
    /// Set while a write surveys a stale map, so only one does.
    surveying: Arc<AtomicBool>,
    connector: Connector,
    /// How long `WAIT` may block, in ms.
    wait_ms: u64,
}

impl Durable {
    /// Opens the links (none if writes are never confirmed).
    pub(super) async fn open(
        connector: &Connector,
        acks: ReplicaAcks,
        timeout: Duration,
    ) -> redis::RedisResult<Durable> {
        let mut links = Vec::new();
        if acks != ReplicaAcks::Exactly(0) {
            for _ in 0..LINKS {
                links.push(LinkLanes {
                    link: connector.link().await?,
                    lanes: Mutex::new(HashMap::new()),
                });
            }
        }
        let replicas = Arc::new(ReplicaMap::new());
        if acks == ReplicaAcks::Auto
            && let Some(first) = links.first()
        {
            // Know from the start which primaries have replicas: a guess
            // would make the first writes to a lone node wait in vain.
            let mut link = first.link.clone();
            if let Ok(shards) = connector.survey(&mut link).await {
                replicas.surveyed(shards);
            }
        }
        // Half the store's timeout: the call still has time to say
        // STORE_UNAVAILABLE before the caller's own deadline.
        let wait_ms = u64::try_from((timeout / 2).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Ok(Durable {
            links: links.into(),
            next: Arc::new(AtomicUsize::new(0)),
            acks,
            replicas,
            surveying: Arc::new(AtomicBool::new(false)),
            connector: connector.clone(),
            wait_ms,
        })
    }

    /// Whether writes wait for replicas at all.
    pub(super) fn confirms(&self) -> bool {
        !self.links.is_empty()
    }

    /// Takes a survey's result (the health check runs one every second).
    pub(super) fn surveyed(&self, shards: Vec<Shard>) {
        self.replicas.surveyed(shards);
    }

    /// Runs `call` in the next batch for its primary on one of the links,
    /// and answers once the replicas it needs confirmed it.
    pub(super) async fn run<T: FromRedisValue>(&self, call: ScriptCall) -> Result<T, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.links.len().max(1);
        let Some(link) = self.links.get(i) else {
            return Err(StoreError::Unavailable(
                "no link for confirmed writes".into(),
            ));
        };
        if self.acks == ReplicaAcks::Auto && self.replicas.stale() {
            self.survey(&mut link.link.clone()).await;
        }
        let slot = replicas::slot(call.first_key());
        let lane = link.lane(self.replicas.shard_of(slot));
        let (answer, mut answered) = oneshot::channel();
        let job = Job { call, answer };
        lane.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(job);
        // Whoever holds `sending` sends what is queued; a caller whose write
        // is still queued when it is free sends the next batch itself. The
        // batch is sent by a task of its own: a caller that gives up (a
        // cancelled call) must not take other callers' writes with it.
        let value = loop {
            tokio::select! {
                biased;
                value = &mut answered => break value,
                sending = Arc::clone(&lane.sending).lock_owned() => {
                    let jobs = {
                        let mut queue = lane.queue.lock().unwrap_or_else(PoisonError::into_inner);
                        let take = queue.len().min(MAX_BATCH);
                        queue.drain(..take).collect::<Vec<_>>()
                    };
                    if jobs.is_empty() {
                        continue;
                    }
                    let (durable, link) = (self.clone(), link.link.clone());
                    tokio::spawn(async move {
                        durable.send(&link, jobs).await;
                        drop(sending);
                    });
                }
            }
        };
        let value = value.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the batch carrying this write was abandoned".into(),
            ))
        })?;
        T::from_redis_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Sends one batch and answers each of its writes; writes the node did
    /// not have the script for go again, once, after loading it.
    async fn send(&self, link: &Link, jobs: Vec<Job>) {
        let mut link = link.clone();
        let retry = self.send_once(&mut link, jobs).await;
        if retry.is_empty() {
            return;
        }
        for job in &retry {
            if let Err(err) = job.call.load(&mut link).await {
                for job in retry {
                    let _ = job.answer.send(Err(reply::unavailable(err.clone())));
                }
                return;
            }
        }
        for job in self.send_once(&mut link, retry).await {
            let _ = job.answer.send(Err(StoreError::Unavailable(
                "script could not be loaded".into(),
            )));
        }
    }

    /// One pipeline for `jobs`: answers each, and returns those that found
    /// no script (they did not run).
    async fn send_once(&self, link: &mut Link, jobs: Vec<Job>) -> Vec<Job> {
        let Some(first) = jobs.first() else {
            return Vec::new();
        };
        let key = first.call.first_key().to_vec();
        let slot = replicas::slot(&key);
        let wait_for = match self.acks {
            ReplicaAcks::Exactly(n) => n,
            // As the map says now: a batch that found a primary without a
            // replica corrected it for the batches queued behind it.
            ReplicaAcks::Auto => u32::from(jobs.iter().any(|job| {
                self.replicas
                    .expects_replica(replicas::slot(job.call.first_key()))
            })),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("ROLE");
        for job in &jobs {
            pipe.add_command(job.call.evalsha());
        }
        if wait_for > 0 {
            pipe.cmd("WAIT").arg(wait_for).arg(self.wait_ms);
        }
        let (replies, ran) = match link.pipeline_at(&key, &pipe).await {
            Ok(answer) => answer,
            Err(err) => {
                for job in jobs {
                    let _ = job.answer.send(Err(reply::unavailable(err.clone())));
                }
                return Vec::new();
            }
        };
        let mut replies = replies.into_iter();
        let role = replies.next().unwrap_or(Value::Nil);
        let values: Vec<Value> = replies.by_ref().take(jobs.len()).collect();
        let confirmed = match replies.next() {
            Some(count) => parse::<i64>(count).unwrap_or(0),
            None => 0,
        };
        let verdict = match replicas_in_sync(&role) {
            Err(err) => Err(reply::unavailable(err)),
            Ok(in_sync) => {
                let needed = match self.acks {
                    ReplicaAcks::Exactly(n) => n,
                    ReplicaAcks::Auto => {
                        self.replicas.learned(slot, in_sync);
                        u32::from(in_sync > 0)
                    }
                };
                if confirmed < i64::from(needed) {
                    Err(StoreError::Unavailable(format!(
                        "{confirmed} of the {needed} replicas needed confirmed the write within {} ms",
                        self.wait_ms
                    )))
                } else if needed == 0 && self.acks == ReplicaAcks::Auto {
                    // Unconfirmed: only answered as done if the node is
                    // still the primary (not one that stalled past a
                    // failover, whose writes its resync discards): see
                    // `Link::still_primary`.
                    self.still_primary(link, &ran).await
                } else {
                    Ok(())
                }
            }
        };
        // For failure testing: what each batch was told (counts only).
        tracing::debug!(
            writes = jobs.len(),
            slot,
            wait_for,
            in_sync = replicas_in_sync(&role).ok(),
            confirmed,
            answered = verdict.is_ok(),
            "confirmed-write batch"
        );
        let mut retry = Vec::new();
        let mut values = values.into_iter();
        for job in jobs {
            let answer = match values.next() {
                Some(Value::ServerError(err)) => {
                    let err = RedisError::from(err);
                    if no_script(&err) {
                        retry.push(job);
                        continue;
                    }
                    Err(reply::unavailable(err))
                }
                Some(value) => verdict.clone().map(|()| value),
                None => Err(StoreError::Corrupt("short reply to a batch".into())),
            };
            let _ = job.answer.send(answer);
        }
        retry
    }

    /// Whether `link`'s node is still the primary, as an answer for the
    /// writes it took without a replica's confirmation.
    async fn still_primary(&self, link: &Link, ran: &RanOn) -> Result<(), StoreError> {
        match link
            .still_primary(ran, Duration::from_millis(self.wait_ms.saturating_mul(2)))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Unavailable(
                "the node that took the write is no longer the primary the deployment names".into(),
            )),
            Err(err) => Err(reply::unavailable(err)),
        }
    }

    /// Surveys the primaries, unless another write is at it; a failed
    /// survey leaves the map as it was (the writes' own `ROLE` decides).
    async fn survey(&self, link: &mut Link) {
        /// Clears the flag however the survey ends (a caller's timeout
        /// drops it midway).
        struct Surveying<'a>(&'a AtomicBool);
        impl Drop for Surveying<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        if self.surveying.swap(true, Ordering::AcqRel) {
            return;
        }
        let _surveying = Surveying(&self.surveying);
        if let Ok(shards) = self.connector.survey(link).await {
            self.replicas.surveyed(shards);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_acks_parse() {
        assert_eq!("auto".parse::<ReplicaAcks>(), Ok(ReplicaAcks::Auto));
        assert_eq!("0".parse::<ReplicaAcks>(), Ok(ReplicaAcks::Exactly(0)));
        assert_eq!("2".parse::<ReplicaAcks>(), Ok(ReplicaAcks::Exactly(2)));
        assert!("-1".parse::<ReplicaAcks>().is_err());
        assert!("all".parse::<ReplicaAcks>().is_err());
        assert_eq!(ReplicaAcks::Auto.to_string(), "auto");
    }

    #[test]
    fn role_replies_count_replicas_in_sync() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let replica = Value::Array(vec![bulk("127.0.0.1"), bulk("7001"), bulk("42")]);
        let master = Value::Array(vec![
            bulk("master"),
            Value::Int(42),
            Value::Array(vec![replica]),
        ]);
        assert_eq!(replicas_in_sync(&master).unwrap(), 1);
        let alone = Value::Array(vec![bulk("master"), Value::Int(1), Value::Array(vec![])]);
        assert_eq!(replicas_in_sync(&alone).unwrap(), 0);
        let slave = Value::Array(vec![bulk("slave"), bulk("127.0.0.1"), Value::Int(7000)]);
        assert!(replicas_in_sync(&slave).is_err());
        assert!(replicas_in_sync(&Value::Nil).is_err());
    }

    /// `calls=N` of `cmdstat_NAME` in `INFO commandstats`.
    async fn calls(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_give_up_do_not_fail_the_writes_batched_with_theirs() {
        let primary = testkit_redis::RedisServer::start();
        let _replica = testkit_redis::RedisServer::replica_of(&primary);
        let store =
            crate::store::RedisStore::connect(&primary.url(), "cancel", Duration::from_secs(5))
                .await
                .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400 {
            let store = store.clone();
            tasks.spawn(async move {
                let event = crate::store::FeedEvent::Session {
                    session_id: format!("s{i}"),
                };
                let now = crate::clock::Clock::system().now_ms();
                let write = store.publish_revocation(&event, now, now + 60_000);
                if i % 2 == 0 {
                    // Gives up almost at once, often while leading a batch.
                    let _ = tokio::time::timeout(Duration::from_micros(200), write).await;
                    None
                } else {
                    Some(write.await)
                }
            });
        }
        let mut kept = 0;
        while let Some(done) = tasks.join_next().await {
            if let Some(result) = done.unwrap() {
                result.expect("a patient caller's write is confirmed");
                kept += 1;
            }
        }
        assert_eq!(kept, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_their_waits_and_all_are_confirmed() {
        let primary = testkit_redis::RedisServer::start();
        let _replica = testkit_redis::RedisServer::replica_of(&primary);
        let store =
            crate::store::RedisStore::connect(&primary.url(), "batch", Duration::from_secs(5))
                .await
                .unwrap();
        let writes = 400;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..writes {
            let store = store.clone();
            tasks.spawn(async move {
                let event = crate::store::FeedEvent::Session {
                    session_id: format!("s{i}"),
                };
                let now = crate::clock::Clock::system().now_ms();
                store.publish_revocation(&event, now, now + 60_000).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let mut conn = primary.connection().await;
        let (evals, waits) = (
            calls(&mut conn, "evalsha").await,
            calls(&mut conn, "wait").await,
        );
        assert!(evals >= writes, "{evals} scripts for {writes} writes");
        assert!(
            waits * 4 <= writes,
            "{waits} WAITs for {writes} concurrent writes: batches share them"
        );
        assert!(waits >= 1, "writes to a primary with a replica wait for it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_node_is_never_sent_a_wait() {
        let lone = testkit_redis::RedisServer::start();
        let store = crate::store::RedisStore::connect(&lone.url(), "lone", Duration::from_secs(5))
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let store = store.clone();
            tasks.spawn(async move {
                let event = crate::store::FeedEvent::Session {
                    session_id: format!("s{i}"),
                };
                let now = crate::clock::Clock::system().now_ms();
                store.publish_revocation(&event, now, now + 60_000).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let mut conn = lone.connection().await;
        assert_eq!(calls(&mut conn, "wait").await, 0, "nothing to wait for");
        assert!(calls(&mut conn, "evalsha").await >= 100);
    }
}

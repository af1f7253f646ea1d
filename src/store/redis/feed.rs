//! The revocation feed in Redis: one stream, appended by `publish.lua`,
//! followed by each tokend with a blocking `XREAD` on a link of its own (on
//! a cluster, routed to the stream's slot wherever it moves).

use std::time::Duration;

use super::RedisStore;
use redis::{FromRedisValue, Value};

use super::link::{Connector, Link, replicas_in_sync};
use super::reply;
use super::script::ScriptCall;
use crate::store::{FEED_RETENTION_MARGIN_MS, FeedCursor, FeedEntry, FeedEvent, StoreError};

/// Stream entries as Redis returns them: id and flat field/value list.
type StreamEntries = Vec<(String, Vec<Vec<u8>>)>;

/// How long a feed follower blocks on Redis waiting for new entries. Short,
/// because it is also how long a follower whose primary stalled (and was
/// failed over) waits before it notices and reads from the new one: every
/// revocation announced meanwhile reaches the watchers that much later
/// (found by `make chaos`: up to 7 s with 5 s blocks). An idle follower
/// pays one empty `XREAD` a second.
const FOLLOW_BLOCK_MS: u64 = 1000;

/// How long past its block a follower's read may take before the link is
/// taken for dead.
const FOLLOW_GRACE_MS: u64 = 500;

impl RedisStore {
    /// Appends to the revocation feed with `publish.lua`.
    pub async fn publish_revocation(
        &self,
        event: &FeedEvent,
        at_ms: i64,
        until_ms: i64,
    ) -> Result<FeedCursor, StoreError> {
        let mut invocation = ScriptCall::new(&self.scripts.publish);
        let relevance = until_ms.saturating_sub(at_ms).max(1000);
        let oldest = at_ms
            .saturating_sub(relevance)
            .saturating_sub(FEED_RETENTION_MARGIN_MS)
            .max(0);
        let supersedes = event.live_key().unwrap_or_default();
        let version = event.version().map(|v| v.to_string()).unwrap_or_default();
        invocation
            .key(self.keys.feed())
            .key(self.keys.feed_origin())
            .key(self.keys.feed_live())
            .arg(relevance.saturating_add(FEED_RETENTION_MARGIN_MS))
            .arg(FeedCursor::at_ms(oldest).to_string())
            .arg(supersedes)
            .arg(version);
        match event {
            FeedEvent::Session { session_id } => {
                invocation.arg("k").arg("s").arg("id").arg(session_id);
            }
            FeedEvent::Subject { subject, version } => {
                invocation
                    .arg("k")
                    .arg("u")
                    .arg("id")
                    .arg(subject)
                    .arg("av")
                    .arg(*version);
            }
            FeedEvent::Account { subject } => {
                invocation.arg("k").arg("a").arg("id").arg(subject);
            }
            FeedEvent::Actor { actor, version } => {
                invocation
                    .arg("k")
                    .arg("t")
                    .arg("id")
                    .arg(actor)
                    .arg("av")
                    .arg(*version);
            }
        }
        invocation.arg("at").arg(at_ms).arg("until").arg(until_ms);
        let id: String = self.write(invocation).await?;
        FeedCursor::parse(&id).ok_or_else(|| StoreError::Corrupt("bad stream id".into()))
    }

    /// Feed entries after `cursor`, oldest first.
    pub async fn revocations_after(
        &self,
        cursor: Option<FeedCursor>,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let mut conn = self.conn();
        let start = match cursor {
            Some(cursor) => format!("({cursor}"),
            None => "-".to_owned(),
        };
        let raw: StreamEntries = self
            .bounded(
                redis::cmd("XRANGE")
                    .arg(self.keys.feed())
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(id, fields)| feed_entry(&id, &fields))
            .collect())
    }

    /// How many entries the stream keeps (`XLEN`), and the newest.
    pub async fn feed_tail(&self) -> Result<(u64, Option<FeedEntry>), StoreError> {
        let mut conn = self.conn();
        let key = self.keys.feed();
        let (length, raw): (u64, StreamEntries) = self
            .bounded(async {
                let length = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await?;
                let raw = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                Ok((length, raw))
            })
            .await?;
        let newest = raw
            .into_iter()
            .find_map(|(id, fields)| feed_entry(&id, &fields));
        Ok((length, newest))
    }

    /// Since when the stream holds everything published to it.
    pub async fn feed_origin(&self) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let origin: Option<String> = self
            .bounded(
                redis::cmd("GET")
                    .arg(self.keys.feed_origin())
                    .query_async(&mut conn),
            )
            .await?;
        origin
            .map(|text| reply::number_or(Some(&text), 0))
            .transpose()
    }

    /// A follower of the entries appended after this call, reading on a
    /// connection of its own (it blocks).
    pub async fn follow(&self) -> Result<RedisFollower, StoreError> {
        let mut conn = self.conn();
        let newest: StreamEntries = self
            .bounded(
                redis::cmd("XREVRANGE")
                    .arg(self.keys.feed())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        // Start after the newest entry; not "$", which would miss entries
        // appended between two reads.
        let position = newest
            .into_iter()
            .next()
            .and_then(|(id, _)| FeedCursor::parse(&id))
            .unwrap_or_default();
        Ok(RedisFollower {
            connector: self.connector.clone(),
            key: self.keys.feed(),
            link: None,
            position,
        })
    }
}

/// Waits for new feed entries with `XREAD BLOCK` on its own link.
pub struct RedisFollower {
    connector: Connector,
    key: String,
    /// Opened on first use, dropped after an error (a failover moves the
    /// stream; the next link finds it).
    link: Option<Link>,
    /// The last entry seen.
    position: FeedCursor,
}

impl std::fmt::Debug for RedisFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFollower")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisFollower {
    /// The last entry seen.
    pub fn position(&self) -> FeedCursor {
        self.position
    }

    /// Entries appended since the last call (since creation, the first
    /// time); blocks up to [`FOLLOW_BLOCK_MS`] and may return none.
    pub async fn next(&mut self) -> Result<Vec<FeedEntry>, StoreError> {
        let link = match &mut self.link {
            Some(link) => link,
            None => {
                let reply_within = Duration::from_millis(FOLLOW_BLOCK_MS + FOLLOW_GRACE_MS);
                let link = self
                    .connector
                    .blocking_link(reply_within)
                    .await
                    .map_err(reply::unavailable)?;
                self.link.insert(link)
            }
        };
        // ROLE goes along: a node without a replica in sync may be a
        // primary that stalled past its failover and came back calling
        // itself primary, whose stream no longer grows (found by `make chaos
        // TOPOLOGY=sentinel SEED=10`: a resource server heard of nothing
        // for ten seconds, until the sentinels demoted the node). Such a
        // node is asked whether the deployment still names it.
        let mut pipe = redis::pipe();
        pipe.cmd("ROLE")
            .cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(FOLLOW_BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(self.position.to_string());
        let read = async {
            let (replies, ran) = link.pipeline_at(self.key.as_bytes(), &pipe).await?;
            let mut replies = replies.into_iter();
            let role = replies.next().unwrap_or(Value::Nil);
            let streams = match replies.next() {
                Some(Value::ServerError(err)) => return Err(redis::RedisError::from(err)),
                Some(value) => Option::<Vec<(String, StreamEntries)>>::from_redis_value(value)?,
                None => None,
            };
            let followed = Duration::from_millis(FOLLOW_GRACE_MS);
            if replicas_in_sync(&role).is_ok_and(|n| n == 0)
                && !link.still_primary(&ran, followed).await?
            {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "the node followed is no longer the primary the deployment names",
                )));
            }
            Ok(streams)
        };
        match read.await {
            Ok(streams) => {
                let raw: StreamEntries = streams
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(_, entries)| entries)
                    .collect();
                if let Some(last) = raw.last().and_then(|(id, _)| FeedCursor::parse(id)) {
                    self.position = last;
                }
                Ok(raw
                    .into_iter()
                    .filter_map(|(id, fields)| feed_entry(&id, &fields))
                    .collect())
            }
            Err(err) => {
                self.link = None;
                Err(reply::unavailable(err))
            }
        }
    }
}

/// Parses one stream entry; `None` for entries this version does not know.
fn feed_entry(id: &str, fields: &[Vec<u8>]) -> Option<FeedEntry> {
    let get = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.first().is_some_and(|k| k == name.as_bytes()))
            .and_then(|pair| pair.get(1))
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let number = |name: &str| get(name).and_then(|v| v.parse::<i64>().ok());
    let subject = get("id")?.to_owned();
    let event = match get("k")? {
        "s" => FeedEvent::Session {
            session_id: subject,
        },
        "u" => FeedEvent::Subject {
            subject,
            version: number("av")?,
        },
        "a" => FeedEvent::Account { subject },
        "t" => FeedEvent::Actor {
            actor: subject,
            version: number("av")?,
        },
        _ => return None,
    };
    Some(FeedEntry {
        cursor: FeedCursor::parse(id)?,
        event,
        at_ms: number("at")?,
        until_ms: number("until")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<Vec<u8>> {
        pairs
            .iter()
            .flat_map(|(k, v)| [k.as_bytes().to_vec(), v.as_bytes().to_vec()])
            .collect()
    }

    #[test]
    fn entries_parse_and_unknown_ones_are_skipped() {
        let entry = feed_entry(
            "5-1",
            &fields(&[
                ("k", "u"),
                ("id", "alice"),
                ("av", "7"),
                ("at", "5"),
                ("until", "9"),
            ]),
        )
        .unwrap();
        assert_eq!(
            entry.event,
            FeedEvent::Subject {
                subject: "alice".into(),
                version: 7
            }
        );
        assert_eq!(entry.cursor, FeedCursor { ms: 5, seq: 1 });
        for bad in [
            fields(&[("k", "x"), ("id", "a"), ("at", "5"), ("until", "9")]),
            fields(&[("k", "u"), ("id", "a"), ("at", "5"), ("until", "9")]),
            fields(&[("k", "s"), ("at", "5"), ("until", "9")]),
            fields(&[("k", "s"), ("id", "a"), ("at", "x"), ("until", "9")]),
        ] {
            assert_eq!(feed_entry("5-1", &bad), None);
        }
        assert_eq!(
            feed_entry(
                "nope",
                &fields(&[("k", "s"), ("id", "a"), ("at", "5"), ("until", "9")])
            ),
            None
        );
    }
}

#[cfg(test)]
mod stale_primary_tests {
    use super::*;
    use crate::store::{RedisConfig, RedisTarget};
    use testkit_redis::{RedisServer, lone_sentinel};

    /// Found by `make chaos TOPOLOGY=sentinel SEED=10`: after a primary
    /// stalled past its failover and came back, the feed followers that
    /// reconnected to it (the sentinels still named it a moment longer)
    /// blocked there for ten seconds, until the sentinels demoted it, and
    /// missed every revocation announced on the new primary meanwhile.
    /// Here X calls itself primary, with no replica, and only the first
    /// sentinel (the one the link asks) names it; the two others name Y.
    #[tokio::test]
    async fn a_follower_leaves_a_node_the_deployment_no_longer_names() {
        let x = RedisServer::start();
        let y = RedisServer::start();
        let names_x = lone_sentinel("split-view", x.port());
        let names_y = [
            lone_sentinel("split-view", y.port()),
            lone_sentinel("split-view", y.port()),
        ];
        let sentinels = [&names_x, &names_y[0], &names_y[1]]
            .iter()
            .map(|s| s.url())
            .collect();
        let store = RedisStore::open(&RedisConfig::new(RedisTarget::Sentinel {
            sentinels,
            master: "split-view".into(),
        }))
        .await
        .unwrap();
        let mut follower = store.follow().await.unwrap();
        let read = follower.next().await;
        assert!(
            matches!(read, Err(StoreError::Unavailable(_))),
            "followed X though a majority of the sentinels name Y: {read:?}"
        );
        assert!(follower.link.is_none(), "the link to X is dropped");
    }
}

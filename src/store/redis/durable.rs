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
//! `WAIT` blocks the connection it is sent on, and covers every write sent
//! on that connection before it. Confirmed writes therefore go over a small
//! pool of links of their own, never the one everything else shares; each
//! runs as `ROLE` + the script in one round trip, then `WAIT` on the same
//! link (on a cluster, routed to the same node), so a wait delays only the
//! writes queued behind it on its link, and those it then confirms too.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind, ToRedisArgs,
    Value,
};

use super::link::{Connector, Link};
use crate::store::StoreError;

/// Links reserved for confirmed writes.
const LINKS: usize = 8;

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

/// A Lua script call: run by hash (`EVALSHA`), loaded on `NOSCRIPT`.
pub(super) struct ScriptCall<'s> {
    script: &'s Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl<'s> ScriptCall<'s> {
    /// A call of `script`, keys and arguments to follow.
    pub(super) fn new(script: &'s Script) -> ScriptCall<'s> {
        ScriptCall {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds a key (`KEYS[n]`).
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// The first key: where the call runs (all keys share its slot).
    fn first_key(&self) -> &[u8] {
        self.keys.first().map_or(&[], Vec::as_slice)
    }

    fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// Runs the call on `link`, loading the script if the node lacks it (a
    /// new node, a promoted replica).
    pub(super) async fn run<T: FromRedisValue>(&self, link: &mut Link) -> RedisResult<T> {
        let cmd = self.evalsha();
        match link.command_at(self.first_key(), &cmd).await {
            Err(err) if no_script(&err) => {
                self.load(link).await?;
                parse(link.command_at(self.first_key(), &cmd).await?)
            }
            answer => parse(answer?),
        }
    }

    /// Loads the script (on a cluster, into every node).
    async fn load(&self, link: &mut Link) -> RedisResult<()> {
        self.script.load_async(link).await.map(|_| ())
    }
}

/// A reply as `T`.
fn parse<T: FromRedisValue>(value: Value) -> RedisResult<T> {
    Ok(T::from_redis_value(value)?)
}

fn no_script(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Runs confirmed writes.
#[derive(Clone)]
pub(super) struct Durable {
    links: std::sync::Arc<[Link]>,
    next: std::sync::Arc<AtomicUsize>,
    acks: ReplicaAcks,
    /// How long `WAIT` may block.
    wait: Duration,
}

impl Durable {
    /// Opens the links (none if writes are never confirmed).
    pub(super) async fn open(
        connector: &Connector,
        acks: ReplicaAcks,
        timeout: Duration,
    ) -> RedisResult<Durable> {
        let mut links = Vec::new();
        if acks != ReplicaAcks::Exactly(0) {
            for _ in 0..LINKS {
                links.push(connector.link().await?);
            }
        }
        Ok(Durable {
            links: links.into(),
            next: std::sync::Arc::new(AtomicUsize::new(0)),
            acks,
            // Half the store's timeout: the call still has time to say
            // STORE_UNAVAILABLE before the caller's own deadline.
            wait: timeout / 2,
        })
    }

    /// Whether writes wait for replicas at all.
    pub(super) fn confirms(&self) -> bool {
        !self.links.is_empty()
    }

    /// Runs `call` and waits for the replicas its primary has (see
    /// [`ReplicaAcks`]); `Ok` only once they confirmed it.
    pub(super) async fn run<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
    ) -> Result<T, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.links.len().max(1);
        let Some(link) = self.links.get(i) else {
            return Err(StoreError::Unavailable(
                "no link for confirmed writes".into(),
            ));
        };
        let mut link = link.clone();
        let key = call.first_key();
        let mut pipe = redis::pipe();
        pipe.cmd("ROLE").add_command(call.evalsha());
        let replies = match link.pipeline_at(key, &pipe).await {
            Err(err) if no_script(&err) => {
                call.load(&mut link)
                    .await
                    .map_err(super::reply::unavailable)?;
                link.pipeline_at(key, &pipe).await
            }
            replies => replies,
        }
        .map_err(super::reply::unavailable)?;
        let mut replies = replies.into_iter();
        let (Some(role), Some(value)) = (replies.next(), replies.next()) else {
            return Err(StoreError::Corrupt("short reply to ROLE + EVALSHA".into()));
        };
        let in_sync = replicas_in_sync(&role)?;
        let needed = match self.acks {
            ReplicaAcks::Auto => u32::from(in_sync > 0),
            ReplicaAcks::Exactly(n) => n,
        };
        if needed > 0 {
            let mut wait = redis::cmd("WAIT");
            let wait_ms = u64::try_from(self.wait.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            wait.arg(needed).arg(wait_ms);
            let confirmed: i64 = link
                .command_at(key, &wait)
                .await
                .and_then(parse::<i64>)
                .map_err(super::reply::unavailable)?;
            if confirmed < i64::from(needed) {
                return Err(StoreError::Unavailable(format!(
                    "{confirmed} of the {needed} replicas needed confirmed the write within {wait_ms} ms"
                )));
            }
        }
        T::from_redis_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// How many replicas `ROLE` (asked of a primary) lists as in sync; an error
/// if the node is no primary (the write was refused anyway).
fn replicas_in_sync(role: &Value) -> Result<usize, StoreError> {
    let Value::Array(parts) = role else {
        return Err(StoreError::Corrupt("unexpected ROLE reply".into()));
    };
    match (parts.first(), parts.get(2)) {
        (Some(Value::BulkString(kind)), Some(Value::Array(replicas))) if kind == b"master" => {
            Ok(replicas.len())
        }
        _ => Err(StoreError::Unavailable(
            "the node holding the key is not a primary".into(),
        )),
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
        assert!(matches!(
            replicas_in_sync(&slave),
            Err(StoreError::Unavailable(_))
        ));
        assert!(replicas_in_sync(&Value::Nil).is_err());
    }
}

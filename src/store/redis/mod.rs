//! The Redis store.
//!
//! Key layout (`P` is the configurable prefix, default `tokend`); the part in
//! braces is the Redis Cluster hash tag, so every key one script touches lives
//! in one slot:
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `P:session:{SID}` | hash | `sub`, `scp`, `aud`, `ct` (created), `ax` (absolute expiry), `av` (account version at login), `ua` (user agent), `rt` (last refresh, once refreshed), `cur` / `prv` (SHA-256 of the current / just-consumed refresh token), `gu` + `suc` (grace window end, sealed successor) | idle lifetime, capped by the absolute expiry; renewed by each refresh |
//! | `P:session:{SID}:spent` | string | the older consumed tokens: per token the first 16 bytes of its SHA-256 and when it was consumed (13 decimal digits of ms); a log of the 64 newest is 1,856 bytes (an earlier layout kept `P:session:{SID}:consumed`, without times: such a log is not read and expires with its session, so its tokens count as unknown rather than reused) | same as the session |
//! | `P:session:{SID}:revoked` | hash | how an ended session ended, for a repeated Revoke, reuse or RevokeSession whose first answer may have been lost: `h` (SHA-256 of the token that ended it, or empty), `sub`, `why` (`revoked`, `reused`, `ended`), `t` (when a repeat was last let through to announce the end, ms by Redis's clock), `a` (a repeat's announcement was confirmed); see `lua/ended.lua` | 10 minutes |
//! | `P:{revocations}` | stream | the revocation feed: `k` (`s` session / `u` subject cut-off / `a` account changed), `id`, `av`, `at`, `until` | the newest entry's relevance, renewed by each append; entries trimmed by time only |
//! | `P:{revocations}:origin` | string | when the stream began holding everything (ms) | as the stream |
//! | `P:{revocations}:live` | hash | `KIND:SUBJECT` → the stream id of the subject's live cut-off (or account notice): a newer one supersedes it | as the stream |
//! | `P:user:{NAME}` | hash | `ph` (argon2id PHC), `scope`, `disabled`, `dl` (being deleted), `ep` (account version), `ct` (created, ms); and `s:SID` → absolute expiry for each session (the index behind ListSessions and revoke-all) | none: accounts are configuration, created by the CLI; session entries are pruned as sessions end |
//! | `P:client:{ID}` | hash | `sd` (SHA-256 of the secret), `scope`, `ep`, `rc` (require a certificate), `disabled`, `ci` (certificate identities, space-separated), `ct` (created, ms) | none, as above |
//! | `P:{accounts}:users`, `P:{accounts}:clients` | sorted set | every user's / client's name (score 0, listed by name), added before the account is created and removed after it is | none |
//! | `P:cert:{SHA256}` | string | the client that claimed the certificate identity with this SHA-256 (hex) | none, as above |
//! | `P:throttle:{KIND:NAME}` | hash | failed logins on the account (`KIND` is `user` or `client`: counted apart): `c` (count), `t` (last, ms) | an hour after the last failure |
//! | `P:throttle:{KIND:NAME}:src:SOURCE` | hash | failed logins on the account from one source | as above |
//! | `P:throttle:{KIND:NAME}:known:SOURCE` | string | a source that logged in to the account | 30 days |
//! | `P:throttle:{KIND:NAME}:turn` | string | the throttled account's one login in progress | seconds |
//! | `P:throttle-source:{SOURCE}` | hash | failed logins from one source, any account | an hour after the last failure |
//! | `P:cut-off-slot:{NAME}` | string | a log-out-everywhere of the account just happened | 5 s |
//!
//! Every refresh and revoke is one Lua script (`lua/rotate.lua`,
//! `lua/revoke.lua`): one round trip, atomic, so concurrent calls with one
//! token serialize in Redis and at most one successor chain exists.
//!
//! The deployment may be one node, a Redis Cluster or a primary under
//! Sentinel ([`link`]); writes that must survive a failover are confirmed
//! by a replica ([`durable`]). The operations are grouped by concept:
//! [`accounts`], [`sessions`], [`throttle`] and [`feed`]; [`reply`] parses
//! what Redis answers.

mod accounts;
mod cluster_view;
mod durable;
mod feed;
mod link;
mod replicas;
mod reply;
mod script;
mod sessions;
mod throttle;

use crate::clock::Clock;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, FromRedisValue, Script, Value};

use super::{AccountKind, StoreError};
use durable::Durable;
use link::{Connector, Link, replicas_in_sync};
use script::ScriptCall;

pub use durable::ReplicaAcks;
pub use feed::RedisFollower;
pub use link::RedisTarget;

/// How to reach Redis and use it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis is.
    pub target: RedisTarget,
    /// Prefix of every key tokend writes.
    pub prefix: String,
    /// How long one store operation may take before the call fails with
    /// `STORE_UNAVAILABLE`.
    pub timeout: Duration,
    /// How many replicas confirm a write before tokend answers.
    pub replica_acks: ReplicaAcks,
}

impl RedisConfig {
    /// `target` with the defaults: prefix `tokend`, 1 s, [`ReplicaAcks::Auto`].
    pub fn new(target: RedisTarget) -> RedisConfig {
        RedisConfig {
            target,
            prefix: "tokend".into(),
            timeout: Duration::from_secs(1),
            replica_acks: ReplicaAcks::Auto,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    /// Never prints the URLs: they may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("target", &self.target.kind())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("replica_acks", &self.replica_acks)
            .finish()
    }
}

/// The Lua scripts, each loaded once and run by SHA (reloaded on NOSCRIPT).
#[derive(Clone)]
struct Scripts {
    session_create: Arc<Script>,
    rotate: Arc<Script>,
    revoke: Arc<Script>,
    index: Arc<Script>,
    end_session: Arc<Script>,
    publish: Arc<Script>,
    account_create: Arc<Script>,
    account_change: Arc<Script>,
    cert_owner: Arc<Script>,
    ended_announced: Arc<Script>,
}

impl Scripts {
    fn new() -> Scripts {
        let consumed = include_str!("lua/consumed.lua");
        let ended = include_str!("lua/ended.lua");
        let consumed_and_ended = format!("{consumed}\n{ended}");
        let account = include_str!("lua/account.lua");
        let with = |prelude: &str, body: &str| Arc::new(Script::new(&format!("{prelude}\n{body}")));
        let alone = |body: &str| Arc::new(Script::new(body));
        Scripts {
            session_create: alone(include_str!("lua/session_create.lua")),
            rotate: with(&consumed_and_ended, include_str!("lua/rotate.lua")),
            revoke: with(&consumed_and_ended, include_str!("lua/revoke.lua")),
            index: with(account, include_str!("lua/index.lua")),
            end_session: with(ended, include_str!("lua/end_session.lua")),
            publish: alone(include_str!("lua/publish.lua")),
            account_create: with(account, include_str!("lua/account_create.lua")),
            account_change: with(account, include_str!("lua/account_change.lua")),
            cert_owner: alone(include_str!("lua/cert_owner.lua")),
            ended_announced: alone(include_str!("lua/ended_announced.lua")),
        }
    }
}

/// The names of every key tokend writes, under one prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, session_id: &str) -> String {
        format!("{}:session:{{{session_id}}}", self.prefix)
    }

    /// A session's consumed-token log (see `lua/consumed.lua`).
    fn consumed(&self, session_id: &str) -> String {
        format!("{}:session:{{{session_id}}}:spent", self.prefix)
    }

    /// An ended session's marker: how it ended, for a repeated call (see
    /// `lua/ended.lua`).
    fn revoked(&self, session_id: &str) -> String {
        format!("{}:session:{{{session_id}}}:revoked", self.prefix)
    }

    fn user(&self, name: &str) -> String {
        format!("{}:user:{{{name}}}", self.prefix)
    }

    fn client(&self, id: &str) -> String {
        format!("{}:client:{{{id}}}", self.prefix)
    }

    /// A certificate identity's owner: keyed by the identity's SHA-256, so
    /// that any identity makes a key of fixed length without braces.
    fn directory(&self, kind: AccountKind) -> String {
        match kind {
            AccountKind::User => format!("{}:{{accounts}}:users", self.prefix),
            AccountKind::Client => format!("{}:{{accounts}}:clients", self.prefix),
        }
    }

    fn cert_owner(&self, identity: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(identity.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:cert:{{{hex}}}", self.prefix)
    }

    fn feed(&self) -> String {
        format!("{}:{{revocations}}", self.prefix)
    }

    fn feed_origin(&self) -> String {
        format!("{}:{{revocations}}:origin", self.prefix)
    }

    fn feed_live(&self) -> String {
        format!("{}:{{revocations}}:live", self.prefix)
    }

    fn throttle(&self, name: &str) -> String {
        format!("{}:throttle:{{{name}}}", self.prefix)
    }

    fn throttle_source(&self, name: &str, source: &str) -> String {
        format!("{}:throttle:{{{name}}}:src:{source}", self.prefix)
    }

    fn known_source(&self, name: &str, source: &str) -> String {
        format!("{}:throttle:{{{name}}}:known:{source}", self.prefix)
    }

    fn login_turn(&self, name: &str) -> String {
        format!("{}:throttle:{{{name}}}:turn", self.prefix)
    }

    fn cut_off_slot(&self, subject: &str) -> String {
        format!("{}:cut-off-slot:{{{subject}}}", self.prefix)
    }

    fn source(&self, source: &str) -> String {
        format!("{}:throttle-source:{{{source}}}", self.prefix)
    }
}

/// The Redis store. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    connector: Connector,
    /// Most traffic: reads, throttle counters, unconfirmed writes.
    link: Link,
    /// Writes confirmed by replicas.
    durable: Durable,
    keys: Keys,
    timeout: Duration,
    scripts: Scripts,
    /// What "now" is for the checks made here (the scripts get it passed in).
    clock: Clock,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to one Redis node at `url`, with the defaults of
    /// [`RedisConfig::new`] otherwise.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        RedisStore::open(&RedisConfig {
            prefix: prefix.to_owned(),
            timeout,
            ..RedisConfig::new(RedisTarget::Node(url.to_owned()))
        })
        .await
    }

    /// Connects to the deployment `config` names. Every call then fails
    /// with [`StoreError::Unavailable`] after at most the timeout when Redis
    /// does not answer, and connections re-establish themselves when it is
    /// back (on a cluster or under Sentinel, to wherever the data moved).
    pub async fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        RedisStore::open_with_clock(config, Clock::system()).await
    }

    /// Like [`RedisStore::open`], with the time read from `clock`.
    pub async fn open_with_clock(config: &RedisConfig, clock: Clock) -> Result<Self, StoreError> {
        let connector = Connector::new(&config.target, config.timeout)?;
        // Which Redis could not be reached, named (password redacted): the
        // operator's first question.
        let unreachable = |err: redis::RedisError| {
            StoreError::Unavailable(format!("cannot reach {}: {err}", config.target.shown()))
        };
        let link = connector.link().await.map_err(unreachable)?;
        let durable = Durable::open(&connector, config.replica_acks, config.timeout)
            .await
            .map_err(unreachable)?;
        Ok(RedisStore {
            connector,
            link,
            durable,
            keys: Keys {
                prefix: config.prefix.clone(),
            },
            timeout: config.timeout,
            scripts: Scripts::new(),
            clock,
        })
    }

    /// The clock the store reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A handle on the shared link.
    fn conn(&self) -> Link {
        self.link.clone()
    }

    /// Runs one Redis operation within the timeout.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.within(async { op.await.map_err(reply::unavailable) })
            .await
    }

    /// Runs one store step within the timeout.
    async fn within<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::TimedOut),
        }
    }

    /// Runs a script that writes what must survive a failover: confirmed by
    /// replicas (see [`durable`]) unless `--redis-replica-acks 0`.
    async fn write<T: FromRedisValue>(&self, call: ScriptCall) -> Result<T, StoreError> {
        if self.durable.confirms() {
            self.within(self.durable.run(call)).await
        } else {
            let mut link = self.conn();
            self.bounded(call.run(&mut link)).await
        }
    }

    /// Runs `cmd`, a read whose answer decides whether something ended is
    /// still honoured (a session's existence), on the node that is the
    /// primary for `key` now: a `ROLE` goes with it, and a node that is no
    /// longer a primary (demoted after a failover: its data lag, or its
    /// resync is under way) answers `STORE_UNAVAILABLE` instead of a stale
    /// yes. A primary without a replica is also asked the question its
    /// unconfirmed writes are (see `durable`): is it still the primary the
    /// deployment names? Without confirmed writes (`--redis-replica-acks
    /// 0`) a plain read.
    async fn read_on_primary<T: FromRedisValue>(
        &self,
        key: &str,
        cmd: Cmd,
    ) -> Result<T, StoreError> {
        let mut link = self.conn();
        if !self.durable.confirms() {
            return self.bounded(cmd.query_async(&mut link)).await;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ROLE").add_command(cmd);
        let (replies, ran) = self
            .bounded(link.pipeline_at(key.as_bytes(), &pipe))
            .await?;
        let mut replies = replies.into_iter();
        let role = replies.next().unwrap_or(Value::Nil);
        let answer = replies.next().unwrap_or(Value::Nil);
        let in_sync = replicas_in_sync(&role).map_err(reply::unavailable)?;
        if in_sync == 0 && !self.bounded(link.still_primary(&ran, self.timeout)).await? {
            return Err(StoreError::Unavailable(
                "the node read is no longer the primary the deployment names".into(),
            ));
        }
        if let Value::ServerError(err) = answer {
            return Err(reply::unavailable(redis::RedisError::from(err)));
        }
        T::from_redis_value(answer).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Checks that Redis answers.
    /// On a cluster, every primary serving slots must answer: a call could
    /// need any of them.
    /// Also refreshes which primaries have replicas in sync.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let shards = self.bounded(self.connector.survey(&mut conn)).await?;
        self.durable.surveyed(shards);
        Ok(())
    }
}

//! The Redis store.
//!
//! Key layout (`P` is the configurable prefix, default `tokend`); the part in
//! braces is the Redis Cluster hash tag, so every key one script touches lives
//! in one slot:
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `P:session:{SID}` | hash | `sub`, `scp`, `aud`, `ct` (created), `ax` (absolute expiry), `av` (account version at login), `ua` (user agent), `rt` (last refresh, once refreshed), `cur` / `prv` (SHA-256 of the current / just-consumed refresh token), `gu` + `suc` (grace window end, sealed successor) | idle lifetime, capped by the absolute expiry; renewed by each refresh |
//! | `P:session:{SID}:consumed` | string | 16-byte SHA-256 prefixes of older consumed tokens | same as the session |
//! | `P:{revocations}` | stream | the revocation feed: `k` (`s` session / `u` subject cut-off / `a` account changed), `id`, `av`, `at`, `until` | the newest entry's relevance, renewed by each append; entries trimmed by time only |
//! | `P:{revocations}:origin` | string | when the stream began holding everything (ms) | as the stream |
//! | `P:user:{NAME}` | hash | `ph` (argon2id PHC), `scope`, `disabled`, `dl` (being deleted), `ep` (account version); and `s:SID` → absolute expiry for each session (the index behind ListSessions and revoke-all) | none: accounts are configuration, created by the CLI; session entries are pruned as sessions end |
//! | `P:client:{ID}` | hash | `sd` (SHA-256 of the secret), `scope`, `ep` | none, as above |
//! | `P:throttle:{NAME}` | hash | failed logins on the account: `c` (count), `t` (last, ms) | an hour after the last failure |
//! | `P:throttle:{NAME}:src:SOURCE` | hash | failed logins on the account from one source | as above |
//! | `P:throttle:{NAME}:known:SOURCE` | string | a source that logged in to the account | 30 days |
//! | `P:throttle:{NAME}:turn` | string | the throttled account's one login in progress | seconds |
//! | `P:throttle-source:{SOURCE}` | hash | failed logins from one source, any account | an hour after the last failure |
//!
//! Every refresh and revoke is one Lua script (`lua/rotate.lua`,
//! `lua/revoke.lua`): one round trip, atomic, so concurrent calls with one
//! token serialize in Redis and at most one successor chain exists.
//!
//! The operations are grouped by concept: [`accounts`], [`sessions`],
//! [`throttle`] and [`feed`]; [`reply`] parses what Redis answers.

mod accounts;
mod feed;
mod reply;
mod sessions;
mod throttle;

use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StoreError;

pub use feed::RedisFollower;

/// The Lua scripts, each loaded once and run by SHA (reloaded on NOSCRIPT).
#[derive(Clone)]
struct Scripts {
    session_create: Script,
    rotate: Script,
    revoke: Script,
    index: Script,
    end_session: Script,
    publish: Script,
    account_create: Script,
    account_change: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let consumed = include_str!("lua/consumed.lua");
        let account = include_str!("lua/account.lua");
        let with = |prelude: &str, body: &str| Script::new(&format!("{prelude}\n{body}"));
        Scripts {
            session_create: Script::new(include_str!("lua/session_create.lua")),
            rotate: with(consumed, include_str!("lua/rotate.lua")),
            revoke: with(consumed, include_str!("lua/revoke.lua")),
            index: with(account, include_str!("lua/index.lua")),
            end_session: Script::new(include_str!("lua/end_session.lua")),
            publish: Script::new(include_str!("lua/publish.lua")),
            account_create: with(account, include_str!("lua/account_create.lua")),
            account_change: with(account, include_str!("lua/account_change.lua")),
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

    fn consumed(&self, session_id: &str) -> String {
        format!("{}:session:{{{session_id}}}:consumed", self.prefix)
    }

    fn user(&self, name: &str) -> String {
        format!("{}:user:{{{name}}}", self.prefix)
    }

    fn client(&self, id: &str) -> String {
        format!("{}:client:{{{id}}}", self.prefix)
    }

    fn feed(&self) -> String {
        format!("{}:{{revocations}}", self.prefix)
    }

    fn feed_origin(&self) -> String {
        format!("{}:{{revocations}}:origin", self.prefix)
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

    fn source(&self, source: &str) -> String {
        format!("{}:throttle-source:{{{source}}}", self.prefix)
    }
}

/// The Redis store. Cheap to clone; clones share one auto-reconnecting,
/// multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    connection: ConnectionManager,
    keys: Keys,
    timeout: Duration,
    scripts: Scripts,
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
    /// Connects to `url`. Every call then fails with
    /// [`StoreError::Unavailable`] after at most `timeout` when Redis does not
    /// answer, and the connection re-establishes itself when Redis is back.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Fail fast while Redis is down; the next call tries again.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(250));
        let connect = ConnectionManager::new_with_config(client.clone(), config);
        let connection = tokio::time::timeout(timeout.saturating_mul(4), connect)
            .await
            .map_err(|_| StoreError::Unavailable("timed out connecting to Redis".into()))?
            .map_err(reply::unavailable)?;
        Ok(RedisStore {
            client,
            connection,
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            timeout,
            scripts: Scripts::new(),
        })
    }

    /// A handle on the shared connection.
    fn conn(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Runs one Redis operation within the timeout.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(reply::unavailable),
            Err(_) => Err(StoreError::Unavailable(
                "Redis did not answer in time".into(),
            )),
        }
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: String = self
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }
}

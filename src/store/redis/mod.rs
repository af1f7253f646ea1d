//! The Redis store.
//!
//! Key layout (`P` is the configurable prefix, default `tokend`); the part in
//! braces is the Redis Cluster hash tag, so every key one script touches lives
//! in one slot:
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `P:session:{SID}` | hash | `sub`, `scp`, `aud`, `ct` (created), `ax` (absolute expiry), `ua` (user agent), `rt` (last refresh, once refreshed), `cur` / `prv` (SHA-256 of the current / just-consumed refresh token), `gu` + `suc` (grace window end, sealed successor) | idle lifetime, capped by the absolute expiry; renewed by each refresh |
//! | `P:session:{SID}:consumed` | string | 16-byte SHA-256 prefixes of older consumed tokens | same as the session |
//! | `P:revocations` | stream | the revocation feed: `k` (`s` session / `u` subject), `id`, `at`, `until`, `nb` | the newest entry's relevance, renewed by each append; at most ~100,000 entries |
//! | `P:user:{NAME}` | hash | `ph` (argon2id PHC), `scope`, `disabled`; and `s:SID` → absolute expiry for each session (the index behind ListSessions and revoke-all) | none: accounts are configuration, created by the CLI; session entries are pruned as sessions end |
//! | `P:client:{ID}` | hash | `sd` (SHA-256 of the secret), `scope` | none, as above |
//!
//! Every refresh and revoke is one Lua script (`rotate.lua`, `revoke.lua`):
//! one round trip, atomic, so concurrent calls with one token serialize in
//! Redis and at most one successor chain exists.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig, Script};

use super::{
    CONSUMED_LOG_CAP, ClientRecord, FEED_MAX_ENTRIES, FeedEntry, FeedEvent, NewSession, Revocation,
    Rotate, Rotation, SessionGrant, SessionInfo, StoreError, UserRecord,
};

/// Stream entries as Redis returns them: id and flat field/value list.
type StreamEntries = Vec<(String, Vec<Vec<u8>>)>;

/// Feed entries are kept this much longer than they matter (clock
/// differences between tokend hosts and Redis).
const FEED_MARGIN_MS: i64 = 60_000;

/// How long a feed follower blocks on Redis waiting for new entries.
const FOLLOW_BLOCK_MS: u64 = 5000;
use crate::tokens::{SealedSecret, TokenHash};

const CONSUMED_LUA: &str = include_str!("consumed.lua");

/// The Redis store. Cheap to clone; clones share one auto-reconnecting,
/// multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    rotate: Script,
    revoke: Script,
    index: Script,
    end_session: Script,
    publish: Script,
    set_disabled: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
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
        let connection = tokio::time::timeout(timeout * 4, connect)
            .await
            .map_err(|_| StoreError::Unavailable("timed out connecting to Redis".into()))?
            .map_err(unavailable)?;
        Ok(RedisStore {
            client,
            connection,
            prefix: prefix.to_owned(),
            timeout,
            rotate: Script::new(&format!("{CONSUMED_LUA}\n{}", include_str!("rotate.lua"))),
            revoke: Script::new(&format!("{CONSUMED_LUA}\n{}", include_str!("revoke.lua"))),
            index: Script::new(include_str!("index.lua")),
            end_session: Script::new(include_str!("end_session.lua")),
            publish: Script::new(include_str!("publish.lua")),
            set_disabled: Script::new(include_str!("set_disabled.lua")),
        })
    }

    fn feed_key(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    fn session_key(&self, session_id: &str) -> String {
        format!("{}:session:{{{session_id}}}", self.prefix)
    }

    fn consumed_key(&self, session_id: &str) -> String {
        format!("{}:session:{{{session_id}}}:consumed", self.prefix)
    }

    fn user_key(&self, name: &str) -> String {
        format!("{}:user:{{{name}}}", self.prefix)
    }

    fn client_key(&self, id: &str) -> String {
        format!("{}:client:{{{id}}}", self.prefix)
    }

    /// Runs one Redis operation within the timeout.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(
                "Redis did not answer in time".into(),
            )),
        }
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        let _: String = self
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// The user called `name`, if any.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.connection.clone();
        let key = self.user_key(name);
        let (hash, scope, disabled): (Option<String>, Option<String>, Option<String>) = self
            .bounded(conn.hmget(&key, &["ph", "scope", "disabled"]))
            .await?;
        Ok(hash.map(|password_hash| UserRecord {
            password_hash,
            scope: scope.unwrap_or_default(),
            disabled: disabled.as_deref() == Some("1"),
        }))
    }

    /// Creates or replaces a user. Only the account fields are written, so
    /// the user's session index survives a password change.
    pub async fn put_user(&self, name: &str, user: &UserRecord) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        let key = self.user_key(name);
        let disabled = if user.disabled { "1" } else { "0" };
        let fields = [
            ("ph", user.password_hash.as_str()),
            ("scope", user.scope.as_str()),
            ("disabled", disabled),
        ];
        self.bounded(conn.hset_multiple::<_, _, _, ()>(&key, &fields))
            .await
    }

    /// The service client `id`, if any.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let mut conn = self.connection.clone();
        let key = self.client_key(id);
        let (digest, scope): (Option<Vec<u8>>, Option<String>) =
            self.bounded(conn.hmget(&key, &["sd", "scope"])).await?;
        let Some(digest) = digest else {
            return Ok(None);
        };
        let secret_digest = <[u8; 32]>::try_from(digest.as_slice())
            .map_err(|_| StoreError::Corrupt(format!("client {id}: bad secret digest")))?;
        Ok(Some(ClientRecord {
            secret_digest,
            scope: scope.unwrap_or_default(),
        }))
    }

    /// Creates or replaces a service client.
    pub async fn put_client(&self, id: &str, client: &ClientRecord) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        let key = self.client_key(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .hset(&key, "sd", client.secret_digest.as_slice())
            .ignore()
            .hset(&key, "scope", client.scope.as_str())
            .ignore();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Starts a refresh session (one atomic HSET + PEXPIRE), then lists it
    /// under the user's account with `index.lua`; drops it again if the user
    /// was disabled in between.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        let key = self.session_key(new.session_id);
        let grant = new.grant;
        let ttl = (new.idle_ttl_ms).min(grant.absolute_expiry_ms - grant.created_ms);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("sub")
            .arg(&grant.subject)
            .arg("scp")
            .arg(&grant.scope)
            .arg("aud")
            .arg(&grant.audience)
            .arg("ct")
            .arg(grant.created_ms)
            .arg("ax")
            .arg(grant.absolute_expiry_ms)
            .arg("cur")
            .arg(new.token.0.as_slice());
        if !new.client.is_empty() {
            pipe.arg("ua").arg(new.client);
        }
        pipe.ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.max(1))
            .ignore();
        self.bounded(pipe.query_async::<()>(&mut conn)).await?;
        // The index lives in the user's slot, so it is a second call.
        let mut invocation = self.index.prepare_invoke();
        invocation
            .key(self.user_key(&grant.subject))
            .arg(new.session_id)
            .arg(grant.absolute_expiry_ms)
            .arg(grant.created_ms);
        let listed: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        if listed < 0 {
            let _: i64 = self.bounded(conn.del(&key)).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Rotates a refresh token with `rotate.lua`.
    pub async fn rotate(&self, r: &Rotate<'_>) -> Result<Rotation, StoreError> {
        let mut conn = self.connection.clone();
        let mut invocation = self.rotate.prepare_invoke();
        invocation
            .key(self.session_key(r.session_id))
            .key(self.consumed_key(r.session_id))
            .arg(r.presented.0.as_slice())
            .arg(r.successor.0.as_slice())
            .arg(r.sealed_successor.0.as_slice())
            .arg(r.now_ms)
            .arg(r.idle_ttl_ms)
            .arg(r.grace_ms)
            .arg(CONSUMED_LOG_CAP);
        let reply: Vec<Vec<u8>> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        parse_rotation(reply)
    }

    /// Ends a session with `revoke.lua`.
    pub async fn revoke(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Revocation, StoreError> {
        let mut conn = self.connection.clone();
        let mut invocation = self.revoke.prepare_invoke();
        invocation
            .key(self.session_key(session_id))
            .key(self.consumed_key(session_id))
            .arg(presented.0.as_slice());
        let reply: Vec<Vec<u8>> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        match reply.first().map(Vec::as_slice) {
            Some(b"revoked") => Ok(Revocation::Revoked {
                subject: text(reply.get(1))?,
            }),
            Some(b"unknown") => Ok(Revocation::Unknown),
            _ => Err(StoreError::Corrupt("unexpected revoke reply".into())),
        }
    }
}

impl RedisStore {
    /// The live sessions of `subject`, oldest first; prunes the index.
    pub async fn list_sessions(&self, subject: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let mut conn = self.connection.clone();
        let account = self.user_key(subject);
        let fields: Vec<String> = self.bounded(conn.hkeys(&account)).await?;
        let ids: Vec<&str> = fields.iter().filter_map(|f| f.strip_prefix("s:")).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in &ids {
            let key = self.session_key(sid);
            pipe.cmd("HMGET")
                .arg(&key)
                .arg(&["sub", "scp", "aud", "ct", "ax", "rt", "ua"])
                .cmd("PTTL")
                .arg(&key);
        }
        let replies: Vec<redis::Value> = self.bounded(pipe.query_async(&mut conn)).await?;
        let now = crate::now_ms();
        let mut sessions = Vec::new();
        let mut dead = Vec::new();
        for (sid, pair) in ids.iter().zip(replies.chunks(2)) {
            let fields: Vec<Option<String>> = match pair.first() {
                Some(value) => redis::from_redis_value(value.clone())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                None => Vec::new(),
            };
            let ttl: i64 = match pair.get(1) {
                Some(value) => redis::from_redis_value(value.clone()).unwrap_or(-2),
                None => -2,
            };
            let get = |i: usize| fields.get(i).cloned().flatten();
            let owned = get(0).as_deref() == Some(subject);
            if !owned || ttl <= 0 {
                dead.push(format!("s:{sid}"));
                continue;
            }
            let number = |i: usize| get(i).and_then(|v| v.parse::<i64>().ok());
            let created_ms = number(3).unwrap_or(0);
            sessions.push(SessionInfo {
                session_id: (*sid).to_owned(),
                grant: SessionGrant {
                    subject: subject.to_owned(),
                    scope: get(1).unwrap_or_default(),
                    audience: get(2).unwrap_or_default(),
                    created_ms,
                    absolute_expiry_ms: number(4).unwrap_or(0),
                },
                refreshed_ms: number(5).unwrap_or(created_ms),
                idle_expiry_ms: now + ttl,
                client: get(6).unwrap_or_default(),
            });
        }
        if !dead.is_empty() {
            let _: i64 = self.bounded(conn.hdel(&account, &dead)).await?;
        }
        sessions.sort_by_key(|s| s.grant.created_ms);
        Ok(sessions)
    }

    /// Whether the session is alive.
    pub async fn session_exists(&self, session_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        self.bounded(conn.exists(self.session_key(session_id)))
            .await
    }

    /// Ends the session if it belongs to `subject`, with `end_session.lua`.
    pub async fn end_session_of(
        &self,
        session_id: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        let mut invocation = self.end_session.prepare_invoke();
        invocation
            .key(self.session_key(session_id))
            .key(self.consumed_key(session_id))
            .arg(subject);
        let ended: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(ended == 1)
    }

    /// Disables or enables a user with `set_disabled.lua`.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        let key = self.user_key(name);
        let mut invocation = self.set_disabled.prepare_invoke();
        invocation.key(&key).arg(if disabled { "1" } else { "0" });
        let found: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(found == 1)
    }

    /// Appends to the revocation feed with `publish.lua`.
    pub async fn publish_revocation(
        &self,
        event: &FeedEvent,
        at_ms: i64,
        until_ms: i64,
    ) -> Result<String, StoreError> {
        let mut conn = self.connection.clone();
        let mut invocation = self.publish.prepare_invoke();
        let relevance = (until_ms - at_ms).max(1000);
        let oldest = (at_ms - relevance - FEED_MARGIN_MS).max(0);
        invocation
            .key(self.feed_key())
            .arg(FEED_MAX_ENTRIES)
            .arg(relevance)
            .arg(format!("{oldest}-0"));
        match event {
            FeedEvent::Session { session_id } => {
                invocation.arg("k").arg("s").arg("id").arg(session_id);
            }
            FeedEvent::Subject {
                subject,
                not_before_s,
            } => {
                invocation
                    .arg("k")
                    .arg("u")
                    .arg("id")
                    .arg(subject)
                    .arg("nb")
                    .arg(*not_before_s);
            }
        }
        invocation.arg("at").arg(at_ms).arg("until").arg(until_ms);
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// Feed entries after `cursor`, oldest first.
    pub async fn revocations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let mut conn = self.connection.clone();
        let start = match cursor {
            Some(cursor) => format!("({cursor}"),
            None => "-".to_owned(),
        };
        let raw: StreamEntries = self
            .bounded(
                redis::cmd("XRANGE")
                    .arg(self.feed_key())
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(id, fields)| feed_entry(id, &fields))
            .collect())
    }

    /// A follower of the entries appended after this call, reading on a
    /// connection of its own (it blocks).
    pub async fn follow(&self) -> Result<RedisFollower, StoreError> {
        let mut conn = self.connection.clone();
        let newest: StreamEntries = self
            .bounded(
                redis::cmd("XREVRANGE")
                    .arg(self.feed_key())
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
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
        Ok(RedisFollower {
            client: self.client.clone(),
            key: self.feed_key(),
            connection: None,
            position,
        })
    }
}

/// Waits for new feed entries with `XREAD BLOCK` on its own connection.
pub struct RedisFollower {
    client: redis::Client,
    key: String,
    connection: Option<MultiplexedConnection>,
    /// The last entry seen.
    position: String,
}

impl std::fmt::Debug for RedisFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFollower")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisFollower {
    /// Entries appended since the last call (since creation, the first
    /// time); blocks up to five seconds and may return none.
    pub async fn next(&mut self) -> Result<Vec<FeedEntry>, StoreError> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_millis(FOLLOW_BLOCK_MS + 2000)));
                let connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?;
                self.connection.insert(connection)
            }
        };
        let reply: redis::RedisResult<Option<Vec<(String, StreamEntries)>>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(FOLLOW_BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.position)
            .query_async(connection)
            .await;
        match reply {
            Ok(streams) => {
                let raw: StreamEntries = streams
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(_, entries)| entries)
                    .collect();
                if let Some((id, _)) = raw.last() {
                    self.position.clone_from(id);
                }
                Ok(raw
                    .into_iter()
                    .filter_map(|(id, fields)| feed_entry(id, &fields))
                    .collect())
            }
            Err(err) => {
                self.connection = None;
                Err(unavailable(err))
            }
        }
    }
}

/// Parses one stream entry; `None` for entries this version does not know.
fn feed_entry(cursor: String, fields: &[Vec<u8>]) -> Option<FeedEntry> {
    let get = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.first().is_some_and(|k| k == name.as_bytes()))
            .and_then(|pair| pair.get(1))
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let number = |name: &str| get(name).and_then(|v| v.parse::<i64>().ok());
    let id = get("id")?.to_owned();
    let event = match get("k")? {
        "s" => FeedEvent::Session { session_id: id },
        "u" => FeedEvent::Subject {
            subject: id,
            not_before_s: number("nb")?,
        },
        _ => return None,
    };
    Some(FeedEntry {
        cursor,
        event,
        at_ms: number("at")?,
        until_ms: number("until")?,
    })
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn text(field: Option<&Vec<u8>>) -> Result<String, StoreError> {
    let bytes = field.ok_or_else(|| StoreError::Corrupt("missing field".into()))?;
    String::from_utf8(bytes.clone()).map_err(|_| StoreError::Corrupt("non-UTF-8 field".into()))
}

fn number(field: Option<&Vec<u8>>) -> Result<i64, StoreError> {
    text(field)?
        .parse()
        .map_err(|_| StoreError::Corrupt("non-numeric field".into()))
}

fn hash32(field: Option<&Vec<u8>>) -> Result<[u8; 32], StoreError> {
    let bytes = field.ok_or_else(|| StoreError::Corrupt("missing field".into()))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupt("field is not 32 bytes".into()))
}

fn parse_grant(reply: &[Vec<u8>]) -> Result<SessionGrant, StoreError> {
    Ok(SessionGrant {
        subject: text(reply.get(1))?,
        scope: text(reply.get(2))?,
        audience: text(reply.get(3))?,
        created_ms: number(reply.get(4))?,
        absolute_expiry_ms: number(reply.get(5))?,
    })
}

fn parse_rotation(reply: Vec<Vec<u8>>) -> Result<Rotation, StoreError> {
    match reply.first().map(Vec::as_slice) {
        Some(b"rotated") => Ok(Rotation::Rotated(parse_grant(&reply)?)),
        Some(b"replayed") => Ok(Rotation::Replayed {
            grant: parse_grant(&reply)?,
            sealed_successor: SealedSecret(hash32(reply.get(6))?),
            current: TokenHash(hash32(reply.get(7))?),
        }),
        Some(b"reused") => Ok(Rotation::Reused {
            subject: text(reply.get(1))?,
        }),
        Some(b"invalid") => Ok(Rotation::Invalid),
        _ => Err(StoreError::Corrupt("unexpected rotate reply".into())),
    }
}

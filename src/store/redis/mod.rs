//! The Redis store.
//!
//! Key layout (`P` is the configurable prefix, default `tokend`); the part in
//! braces is the Redis Cluster hash tag, so every key one script touches lives
//! in one slot:
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `P:session:{SID}` | hash | `sub`, `scp`, `aud`, `ct` (created), `ax` (absolute expiry), `rt` (last refresh), `cur` / `prv` (SHA-256 of the current / just-consumed refresh token), `gu` + `suc` (grace window end, sealed successor) | idle lifetime, capped by the absolute expiry; renewed by each refresh |
//! | `P:session:{SID}:consumed` | string | 16-byte SHA-256 prefixes of older consumed tokens | same as the session |
//! | `P:user:{NAME}` | hash | `ph` (argon2id PHC), `scope`, `disabled` | none: accounts are configuration, written by the CLI |
//! | `P:client:{ID}` | hash | `sd` (SHA-256 of the secret), `scope` | none, as above |
//!
//! Every refresh and revoke is one Lua script (`rotate.lua`, `revoke.lua`):
//! one round trip, atomic, so concurrent calls with one token serialize in
//! Redis and at most one successor chain exists.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::{
    CONSUMED_LOG_CAP, ClientRecord, NewSession, Revocation, Rotate, Rotation, SessionGrant,
    StoreError, UserRecord,
};
use crate::tokens::{SealedSecret, TokenHash};

const CONSUMED_LUA: &str = include_str!("consumed.lua");

/// The Redis store. Cheap to clone; clones share one auto-reconnecting,
/// multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    rotate: Script,
    revoke: Script,
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
        let connect = ConnectionManager::new_with_config(client, config);
        let connection = tokio::time::timeout(timeout * 4, connect)
            .await
            .map_err(|_| StoreError::Unavailable("timed out connecting to Redis".into()))?
            .map_err(unavailable)?;
        Ok(RedisStore {
            connection,
            prefix: prefix.to_owned(),
            timeout,
            rotate: Script::new(&format!("{CONSUMED_LUA}\n{}", include_str!("rotate.lua"))),
            revoke: Script::new(&format!("{CONSUMED_LUA}\n{}", include_str!("revoke.lua"))),
        })
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

    /// Creates or replaces a user.
    pub async fn put_user(&self, name: &str, user: &UserRecord) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        let key = self.user_key(name);
        let disabled = if user.disabled { "1" } else { "0" };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .hset_multiple(
                &key,
                &[
                    ("ph", user.password_hash.as_str()),
                    ("scope", user.scope.as_str()),
                    ("disabled", disabled),
                ],
            )
            .ignore();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
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

    /// Starts a refresh session: one atomic HSET + PEXPIRE.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<(), StoreError> {
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
            .arg("rt")
            .arg(grant.created_ms)
            .arg("cur")
            .arg(new.token.0.as_slice())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.max(1))
            .ignore();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
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

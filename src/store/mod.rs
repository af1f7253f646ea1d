//! Where accounts and refresh sessions live: Redis in production, memory for
//! development. Both implement the same semantics, checked by one conformance
//! suite (`tests/integration/conformance.rs`).
//!
//! A refresh session holds what its tokens grant (subject, scope, audience),
//! its lifetimes, and hashes of its refresh tokens: the current one, the one
//! just consumed (for the grace window and reuse detection) and a capped log
//! of older consumed ones (for reuse detection).

pub mod memory;
pub mod redis;

use crate::tokens::{SealedSecret, TokenHash};

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// How many consumed refresh tokens per session are remembered for reuse
/// detection, besides the one consumed last. Replaying an older one is
/// answered as an unknown token.
pub const CONSUMED_LOG_CAP: usize = 64;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, or slower than the configured timeout: safe to retry.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this version does not understand.
    #[error("session store returned unexpected data: {0}")]
    Corrupt(String),
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// argon2id PHC string.
    pub password_hash: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// A disabled user cannot log in.
    pub disabled: bool,
}

/// A service-client account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// SHA-256 of the client secret.
    pub secret_digest: [u8; 32],
    /// Granted scopes, space-separated.
    pub scope: String,
}

/// What a refresh session grants, and its absolute end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// The user.
    pub subject: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The audience of its access tokens.
    pub audience: String,
    /// When the session started, ms since the epoch.
    pub created_ms: i64,
    /// When the session ends however often it is refreshed, ms since the epoch.
    pub absolute_expiry_ms: i64,
}

/// A session to create at login.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// The session id (also inside its refresh tokens).
    pub session_id: &'a str,
    /// What the session grants; `created_ms` is now.
    pub grant: &'a SessionGrant,
    /// Hash of the first refresh token.
    pub token: TokenHash,
    /// Idle lifetime, ms: the session ends this long after its last use.
    pub idle_ttl_ms: i64,
}

/// One refresh: consume `presented`, install `successor`.
#[derive(Debug, Clone)]
pub struct Rotate<'a> {
    /// The session named by the presented token.
    pub session_id: &'a str,
    /// Hash of the presented token.
    pub presented: TokenHash,
    /// Hash of the successor.
    pub successor: TokenHash,
    /// The successor's secret sealed under the presented token, kept for the
    /// grace window.
    pub sealed_successor: SealedSecret,
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// Idle lifetime, ms.
    pub idle_ttl_ms: i64,
    /// Reuse grace window, ms; 0 for strict rotation.
    pub grace_ms: i64,
}

/// The outcome of [`Store::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current; the successor is now.
    Rotated(SessionGrant),
    /// The presented token was consumed within the grace window: the caller
    /// should answer with the successor it sealed back then.
    Replayed {
        /// What the session grants.
        grant: SessionGrant,
        /// The sealed successor.
        sealed_successor: SealedSecret,
        /// Hash of the session's current token (the successor, unless broken).
        current: TokenHash,
    },
    /// A consumed token was replayed; the session is now revoked.
    Reused {
        /// Whose session it was, for the log.
        subject: String,
    },
    /// No such session, or not one of its tokens, or expired.
    Invalid,
}

/// The outcome of [`Store::revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The session existed and is now gone.
    Revoked {
        /// Whose session it was, for the log.
        subject: String,
    },
    /// Nothing to revoke: unknown session or not one of its tokens.
    Unknown,
}

/// The session store: one of the two implementations.
#[derive(Debug, Clone)]
pub enum Store {
    /// In-process, for development and `make run`; lost on restart.
    Memory(MemoryStore),
    /// Redis, for production.
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Memory($store) => $call,
            Store::Redis($store) => $call,
        }
    };
}

impl Store {
    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// The user called `name`, if any.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        dispatch!(self, s => s.user(name).await)
    }

    /// Creates or replaces the user called `name`.
    pub async fn put_user(&self, name: &str, user: &UserRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_user(name, user).await)
    }

    /// The service client `id`, if any.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        dispatch!(self, s => s.client(id).await)
    }

    /// Creates or replaces the service client `id`.
    pub async fn put_client(&self, id: &str, client: &ClientRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_client(id, client).await)
    }

    /// Starts a refresh session.
    pub async fn create_session(&self, session: &NewSession<'_>) -> Result<(), StoreError> {
        dispatch!(self, s => s.create_session(session).await)
    }

    /// Rotates a session's refresh token atomically; see [`Rotation`].
    pub async fn rotate(&self, rotate: &Rotate<'_>) -> Result<Rotation, StoreError> {
        dispatch!(self, s => s.rotate(rotate).await)
    }

    /// Ends the session if `presented` is, or was, one of its refresh tokens.
    pub async fn revoke(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Revocation, StoreError> {
        dispatch!(self, s => s.revoke(session_id, presented).await)
    }
}

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
    /// The user agent that logged in, already truncated.
    pub client: &'a str,
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

/// A live session as its owner sees it (`ListSessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    pub session_id: String,
    /// What it grants and when it started and ends at the latest.
    pub grant: SessionGrant,
    /// Last refresh (or login), ms since the epoch.
    pub refreshed_ms: i64,
    /// When it ends if not refreshed, ms since the epoch.
    pub idle_expiry_ms: i64,
    /// The user agent that logged in.
    pub client: String,
}

/// What a revocation-feed entry revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// Every access token of this session.
    Session {
        /// The session id.
        session_id: String,
    },
    /// Every access token of this subject issued before `not_before_s`.
    Subject {
        /// User name or client id.
        subject: String,
        /// Seconds since the epoch.
        not_before_s: i64,
    },
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Position in the feed (a Redis stream id, `MS-SEQ`); resume after it.
    pub cursor: String,
    /// What is revoked.
    pub event: FeedEvent,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// After this no token it covers can be unexpired, ms since the epoch.
    pub until_ms: i64,
}

/// How many feed entries the store keeps at most (older ones are trimmed;
/// entries also stop mattering after the longest access-token lifetime).
pub const FEED_MAX_ENTRIES: usize = 100_000;

/// A feed position `MS-SEQ` (decimal digits only) as numbers, for ordering;
/// `None` if malformed or the largest possible position (nothing can follow
/// it, and Redis refuses to read after it).
pub fn parse_cursor(cursor: &str) -> Option<(u64, u64)> {
    let (ms, seq) = cursor.split_once('-')?;
    let number = |part: &str| {
        (!part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u64>().ok())
            .flatten()
    };
    let position = (number(ms)?, number(seq)?);
    (position != (u64::MAX, u64::MAX)).then_some(position)
}

/// The session store: one of the two implementations.
#[derive(Debug, Clone)]
pub enum Store {
    /// In-process, for development and `make run`; lost on restart.
    Memory(MemoryStore),
    /// Redis, for production.
    Redis(Box<RedisStore>),
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

    /// Starts a refresh session and lists it under the user's account.
    /// Returns `false`, and keeps nothing, if the user was disabled meanwhile
    /// (so a login racing `user disable` cannot leave a session behind).
    pub async fn create_session(&self, session: &NewSession<'_>) -> Result<bool, StoreError> {
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

    /// The live sessions of `subject`, oldest first.
    pub async fn list_sessions(&self, subject: &str) -> Result<Vec<SessionInfo>, StoreError> {
        dispatch!(self, s => s.list_sessions(subject).await)
    }

    /// Whether session `session_id` is alive.
    pub async fn session_exists(&self, session_id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.session_exists(session_id).await)
    }

    /// Ends session `session_id` if it belongs to `subject`; returns whether
    /// it did. Checked and deleted atomically.
    pub async fn end_session_of(
        &self,
        session_id: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.end_session_of(session_id, subject).await)
    }

    /// Ends every session of `subject`; returns their ids.
    pub async fn end_sessions_of(&self, subject: &str) -> Result<Vec<String>, StoreError> {
        let sessions = self.list_sessions(subject).await?;
        let mut ended = Vec::with_capacity(sessions.len());
        for session in sessions {
            if self.end_session_of(&session.session_id, subject).await? {
                ended.push(session.session_id);
            }
        }
        Ok(ended)
    }

    /// Disables or enables the user `name`; returns whether the user exists.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        dispatch!(self, s => s.set_user_disabled(name, disabled).await)
    }

    /// Appends to the revocation feed; returns the entry's cursor.
    pub async fn publish_revocation(
        &self,
        event: &FeedEvent,
        at_ms: i64,
        until_ms: i64,
    ) -> Result<String, StoreError> {
        dispatch!(self, s => s.publish_revocation(event, at_ms, until_ms).await)
    }

    /// Feed entries after `cursor` (from the start with `None`), oldest first,
    /// at most `limit`.
    pub async fn revocations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        dispatch!(self, s => s.revocations_after(cursor, limit).await)
    }

    /// A reader of the feed entries appended after this call.
    pub async fn feed_follower(&self) -> Result<FeedFollower, StoreError> {
        Ok(match self {
            Store::Memory(s) => FeedFollower::Memory(s.follow()),
            Store::Redis(s) => FeedFollower::Redis(Box::new(s.follow().await?)),
        })
    }
}

/// Waits for new revocation-feed entries, as they are appended by any
/// process sharing the store.
#[derive(Debug)]
pub enum FeedFollower {
    /// In-process notifications.
    Memory(memory::MemoryFollower),
    /// Blocking reads on a connection of its own.
    Redis(Box<redis::RedisFollower>),
}

impl FeedFollower {
    /// Entries appended since the last call (since creation, the first
    /// time); waits up to a few seconds and may return none.
    pub async fn next(&mut self) -> Result<Vec<FeedEntry>, StoreError> {
        match self {
            FeedFollower::Memory(f) => f.next().await,
            FeedFollower::Redis(f) => f.next().await,
        }
    }
}

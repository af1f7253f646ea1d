//! Where accounts, refresh sessions, login-failure counters and the
//! revocation feed live: Redis in production, memory for development. Both
//! implement the same semantics, checked by one conformance suite
//! (`src/store/conformance.rs`, run against every store).
//!
//! A refresh session holds what its tokens grant (subject, scope, audience),
//! the account version it began under, its lifetimes, and hashes of its
//! refresh tokens: the current one, the one just consumed (for the grace
//! window and reuse detection) and a capped log of older consumed ones (for
//! reuse detection).
//!
//! Every account has a **version**. Each cut-off (log out everywhere,
//! disable, delete, password change, secret rotation) raises it; sessions
//! and access tokens carry the version they began under, so "everything
//! from before the cut-off" is exact and needs no clock. Versions are
//! microseconds since the epoch when raised, and always grow (`max(old + 1,
//! now)`), so an account re-created under a deleted one's name starts above
//! every version the old one had.

mod error;
mod feed;
pub mod memory;
mod records;
pub mod redis;

#[cfg(test)]
mod conformance;

pub use error::StoreError;
pub use feed::{FEED_RETENTION_MARGIN_MS, FeedCursor, FeedEntry, FeedEvent, FeedFollower};
pub use memory::MemoryStore;
pub use records::*;
pub use redis::{RedisConfig, RedisStore, RedisTarget, ReplicaAcks};

use crate::tokens::TokenHash;

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

/// Runs one store operation through [`dispatch!`], timing it and counting
/// its failures for the metrics.
macro_rules! observed {
    ($self:ident, $op:literal, $store:ident => $call:expr) => {{
        let started = std::time::Instant::now();
        let result = dispatch!($self, $store => $call);
        crate::telemetry::record(&crate::facts::Fact::StoreCall(crate::facts::StoreCall {
            op: $op,
            elapsed: started.elapsed(),
            failure: result.as_ref().err().map(StoreError::failure),
        }));
        result
    }};
}

/// The deployment's clock.
impl Store {
    /// The clock this store judges expiry by; the authority and the feed
    /// built on it read the same one.
    pub fn clock(&self) -> &crate::clock::Clock {
        dispatch!(self, s => s.clock())
    }
}

/// Accounts.
impl Store {
    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        observed!(self, "ping", s => s.ping().await)
    }

    /// The user called `name`, if any.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        observed!(self, "user", s => s.user(name).await)
    }

    /// The service client `id`, if any.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        observed!(self, "client", s => s.client(id).await)
    }

    /// What Refresh and the session RPCs need to know about an account.
    pub async fn account(
        &self,
        kind: AccountKind,
        name: &str,
    ) -> Result<Option<AccountState>, StoreError> {
        Ok(match kind {
            AccountKind::User => self.user(name).await?.as_ref().map(AccountState::from),
            AccountKind::Client => self.client(name).await?.as_ref().map(AccountState::from),
        })
    }

    /// Creates an account with `scope`, unless one of that kind and name
    /// exists. Returns its version, or `None` if it already existed.
    pub async fn create_account(
        &self,
        name: &str,
        account: NewAccount<'_>,
        scope: &str,
    ) -> Result<Option<i64>, StoreError> {
        observed!(self, "create_account", s => s.create_account(name, account, scope).await)
    }

    /// Changes an existing account atomically; returns its version after the
    /// change, or `None` if there is no such account (or it is being deleted
    /// and the change is not [`AccountChange::Delete`]).
    pub async fn change_account(
        &self,
        kind: AccountKind,
        name: &str,
        change: AccountChange<'_>,
    ) -> Result<Option<i64>, StoreError> {
        observed!(self, "change_account", s => s.change_account(kind, name, change).await)
    }

    /// Removes an account record (after its sessions were swept).
    pub async fn remove_account(&self, kind: AccountKind, name: &str) -> Result<(), StoreError> {
        observed!(self, "remove_account", s => s.remove_account(kind, name).await)
    }

    /// Up to `limit` names of `kind` accounts that start with `prefix`, in
    /// byte order, after `after` (exclusive; `None`: from the first). A
    /// name may be listed whose account is gone or not yet made (the
    /// directory is kept beside the accounts, not with them): read the
    /// account to be sure.
    pub async fn account_names(
        &self,
        kind: AccountKind,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        observed!(self, "account_names", s => s.account_names(kind, prefix, after, limit).await)
    }

    /// The service client that claimed the certificate identity
    /// `identity`, if any. A hint only: the client's record must list the
    /// identity too (an entry can outlive a change that failed half way).
    pub async fn certificate_owner(&self, identity: &str) -> Result<Option<String>, StoreError> {
        observed!(self, "certificate_owner", s => s.certificate_owner(identity).await)
    }

    /// Sets the owner of `identity` to `owner` (`None`: nobody) if it is
    /// `expected` now; returns whether it was.
    pub async fn swap_certificate_owner(
        &self,
        identity: &str,
        expected: Option<&str>,
        owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        observed!(self, "swap_certificate_owner", s => s.swap_certificate_owner(identity, expected, owner).await)
    }
}

/// Refresh sessions.
impl Store {
    /// Starts a refresh session and lists it under the user's account, if the
    /// account is still active at the version the login read. Keeps nothing
    /// otherwise (so a login racing `user disable` leaves no session behind).
    pub async fn create_session(
        &self,
        session: &NewSession<'_>,
    ) -> Result<SessionCreated, StoreError> {
        observed!(self, "create_session", s => s.create_session(session).await)
    }

    /// Rotates a session's refresh token atomically; see [`Rotation`].
    pub async fn rotate(&self, rotate: &Rotate<'_>) -> Result<Rotation, StoreError> {
        observed!(self, "rotate", s => s.rotate(rotate).await)
    }

    /// Ends the session if `presented` is, or was, one of its refresh tokens.
    pub async fn revoke(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Revocation, StoreError> {
        observed!(self, "revoke", s => s.revoke(session_id, presented).await)
    }

    /// The live sessions of the user `subject`, oldest first; drops index
    /// entries of sessions that ended (expired, revoked, or from before the
    /// account's latest cut-off).
    pub async fn list_sessions(&self, subject: &str) -> Result<Vec<SessionInfo>, StoreError> {
        observed!(self, "list_sessions", s => s.list_sessions(subject).await)
    }

    /// Up to `limit` live sessions of the user `subject` with ids after
    /// `after` (exclusive; `None`: from the first), in session-id order;
    /// prunes index entries of sessions that ended.
    pub async fn sessions_page(
        &self,
        subject: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SessionsPage, StoreError> {
        observed!(self, "sessions_page", s => s.sessions_page(subject, after, limit).await)
    }

    /// How many live sessions the user `subject` has, counted a page at a
    /// time (so bounded per step, like a sweep).
    pub async fn count_sessions(&self, subject: &str) -> Result<usize, StoreError> {
        const STEP: usize = 500;
        let mut count = 0usize;
        let mut after: Option<String> = None;
        loop {
            let page = self.sessions_page(subject, after.as_deref(), STEP).await?;
            count = count.saturating_add(page.sessions.len());
            match page.sessions.last() {
                Some(last) if page.more => after = Some(last.session_id.clone()),
                _ => return Ok(count),
            }
        }
    }

    /// The live session whose current refresh token hashes to `presented`,
    /// if any (for introspection: reads only, consumes nothing).
    pub async fn current_session(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Option<SessionInfo>, StoreError> {
        observed!(self, "current_session", s => s.current_session(session_id, presented).await)
    }

    /// Whether session `session_id` is alive.
    pub async fn session_exists(&self, session_id: &str) -> Result<bool, StoreError> {
        observed!(self, "session_exists", s => s.session_exists(session_id).await)
    }

    /// Ends each of `session_ids` that belongs to `subject` and began under
    /// an account version below `below_version` (`i64::MAX`: whatever its
    /// version), and drops from the user's session index every id that is
    /// now gone; returns how many ended. Checked and deleted atomically per
    /// session, so a sweep after a cut-off never ends a session that began
    /// after it.
    pub async fn end_sessions(
        &self,
        subject: &str,
        session_ids: &[String],
        below_version: i64,
    ) -> Result<usize, StoreError> {
        observed!(self, "end_sessions", s => s.end_sessions(subject, session_ids, below_version).await)
    }

    /// Ends `subject`'s session `session_id` at the owner's (or an
    /// administrator's) request and drops it from the index; returns
    /// whether it ended. The end is remembered for
    /// [`REVOKED_REMEMBERED_MS`] like a revoke's: a repeat (a retry whose
    /// first answer was lost: it may have ended the session without the
    /// end being announced) is answered as ended again, so the caller
    /// announces it, until a repeat's announcement is recorded
    /// ([`Store::end_announced`]); then repeats find nothing. A repeat
    /// while another is announcing is [`StoreError::another_announces`].
    pub async fn end_own_session(
        &self,
        subject: &str,
        session_id: &str,
    ) -> Result<bool, StoreError> {
        observed!(self, "end_own_session", s => s.end_own_session(subject, session_id).await)
    }

    /// Records that the end of `session_id` was announced after a
    /// repeated Revoke, reuse or RevokeSession: later repeats have nothing
    /// to announce. An end never repeated is left as it is (its first
    /// repeat may be the retry of a call whose answer was lost).
    pub async fn end_announced(&self, session_id: &str) -> Result<(), StoreError> {
        observed!(self, "end_announced", s => s.end_announced(session_id).await)
    }

    /// A page of at most about `count` ids from the user's session index,
    /// starting at `from` (0 for the first page). Pages stay valid while
    /// entries are removed, so a sweep can end each page's sessions before
    /// reading the next.
    pub async fn session_index_page(
        &self,
        subject: &str,
        from: u64,
        count: usize,
    ) -> Result<IndexPage, StoreError> {
        observed!(self, "session_index_page", s => s.session_index_page(subject, from, count).await)
    }
}

/// Failed-login counters (throttling). Every counter expires `ttl_ms`
/// after its last failure.
impl Store {
    /// The counters of `scopes`, in order (zero where none).
    pub async fn failures(&self, scopes: &[FailureScope]) -> Result<Vec<Failures>, StoreError> {
        observed!(self, "failures", s => s.failures(scopes).await)
    }

    /// Counts one failure at `now_ms` in each of `scopes`.
    pub async fn record_failure(
        &self,
        scopes: &[FailureScope],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        observed!(self, "record_failure", s => s.record_failure(scopes, now_ms, ttl_ms).await)
    }

    /// Forgets the counters of `scopes`.
    pub async fn clear_failures(&self, scopes: &[FailureScope]) -> Result<(), StoreError> {
        observed!(self, "clear_failures", s => s.clear_failures(scopes).await)
    }

    /// Whether `source` logged in to `account` successfully recently.
    pub async fn is_known_source(&self, account: &str, source: &str) -> Result<bool, StoreError> {
        observed!(self, "is_known_source", s => s.is_known_source(account, source).await)
    }

    /// Remembers that `source` logged in to `account` successfully, for `ttl_ms`.
    pub async fn remember_source(
        &self,
        account: &str,
        source: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        observed!(self, "remember_source", s => s.remember_source(account, source, ttl_ms).await)
    }

    /// Takes the account's login turn for `ttl_ms` unless someone holds it:
    /// while an account is throttled, one attempt at a time is let through.
    pub async fn take_login_turn(&self, account: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        observed!(self, "take_login_turn", s => s.take_login_turn(account, ttl_ms).await)
    }

    /// Gives the account's login turn back.
    pub async fn release_login_turn(&self, account: &str) -> Result<(), StoreError> {
        observed!(self, "release_login_turn", s => s.release_login_turn(account).await)
    }

    /// Takes `subject`'s one self cut-off (log out everywhere) for `ttl_ms`,
    /// unless one was taken within it: the rate limit of self cut-offs.
    pub async fn take_cut_off_slot(&self, subject: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        observed!(self, "take_cut_off_slot", s => s.take_cut_off_slot(subject, ttl_ms).await)
    }
}

/// The revocation feed.
impl Store {
    /// Appends to the revocation feed; returns the entry's cursor. Entries
    /// are kept until `until_ms` plus a margin, however many there are.
    pub async fn publish_revocation(
        &self,
        event: &FeedEvent,
        at_ms: i64,
        until_ms: i64,
    ) -> Result<FeedCursor, StoreError> {
        observed!(self, "publish_revocation", s => s.publish_revocation(event, at_ms, until_ms).await)
    }

    /// Feed entries after `cursor` (from the start with `None`), oldest first,
    /// at most `limit`.
    pub async fn revocations_after(
        &self,
        cursor: Option<FeedCursor>,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        observed!(self, "revocations_after", s => s.revocations_after(cursor, limit).await)
    }

    /// How many entries the feed keeps, and the newest one (if any).
    pub async fn feed_tail(&self) -> Result<(u64, Option<FeedEntry>), StoreError> {
        observed!(self, "feed_tail", s => s.feed_tail().await)
    }

    /// Since when (ms since the epoch) the feed holds every entry published
    /// to it: entries from before were lost if they still mattered (the
    /// store restarted empty). `None` if nothing was published yet.
    pub async fn feed_origin(&self) -> Result<Option<i64>, StoreError> {
        observed!(self, "feed_origin", s => s.feed_origin().await)
    }

    /// A reader of the feed entries appended after this call.
    pub async fn feed_follower(&self) -> Result<FeedFollower, StoreError> {
        Ok(match self {
            Store::Memory(s) => FeedFollower::Memory(s.follow()),
            Store::Redis(s) => FeedFollower::Redis(Box::new(s.follow().await?)),
        })
    }
}

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

pub mod memory;
pub mod redis;

#[cfg(test)]
mod conformance;

use crate::tokens::{SealedSecret, TokenHash};

pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore, RedisTarget, ReplicaAcks};

/// Feed entries are kept this much longer than they matter (clock
/// differences between tokend hosts and the store, verifier leeways). No
/// entry that still matters is ever dropped, however many there are.
pub const FEED_RETENTION_MARGIN_MS: i64 = 60_000;

/// How many consumed refresh tokens per session are remembered for reuse
/// detection, besides the one consumed last. Replaying an older one is
/// answered as an unknown token.
pub const CONSUMED_LOG_CAP: usize = 64;

/// Why the store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Unreachable: safe to retry.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Slower than the configured timeout: safe to retry.
    #[error("session store unavailable: Redis did not answer in time")]
    TimedOut,
    /// The store answered something this version does not understand.
    #[error("session store returned unexpected data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// How it failed, for the facts (`tokend_store_errors_total`'s `kind`).
    pub fn failure(&self) -> crate::facts::StoreFailure {
        match self {
            StoreError::TimedOut => crate::facts::StoreFailure::Timeout,
            StoreError::Unavailable(_) => crate::facts::StoreFailure::Unavailable,
            StoreError::Corrupt(_) => crate::facts::StoreFailure::Corrupt,
        }
    }
}

/// The two kinds of account. They share one namespace of names, since both
/// become the `sub` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// A person: password logins, refresh sessions.
    User,
    /// A service client: client-credential logins, no sessions.
    Client,
}

impl AccountKind {
    /// "user" or "service client", for messages.
    pub fn noun(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Client => "service client",
        }
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// argon2id PHC string.
    pub password_hash: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// A disabled user cannot log in or refresh.
    pub disabled: bool,
    /// Being deleted: refused like a disabled user until the record is gone.
    pub deleting: bool,
    /// The account version (see the module docs).
    pub version: i64,
}

impl UserRecord {
    /// Whether the user may log in and refresh.
    pub fn active(&self) -> bool {
        !self.disabled && !self.deleting
    }
}

/// A service-client account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// SHA-256 of the client secret.
    pub secret_digest: [u8; 32],
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The account version (see the module docs).
    pub version: i64,
    /// Logins must present a client certificate over mTLS (and its tokens
    /// are bound to it).
    pub require_cert: bool,
    /// A disabled client cannot log in or exchange, and its tokens and the
    /// delegated tokens it obtained are cut off.
    pub disabled: bool,
    /// The certificate identities (subject alternative names) that are
    /// the client's own (`client add --cert-san`); none: the default
    /// naming rule (`tokend_interceptor::certs::CertificateNaming`).
    pub cert_identities: Vec<String>,
}

/// What a Refresh or a session RPC needs to know about an account now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The account version: sessions and tokens from below it are cut off.
    pub version: i64,
    /// Not disabled and not being deleted.
    pub active: bool,
    /// A service client's recorded certificate identities (none for users).
    pub cert_identities: Vec<String>,
}

impl From<&UserRecord> for AccountState {
    fn from(user: &UserRecord) -> AccountState {
        AccountState {
            scope: user.scope.clone(),
            version: user.version,
            active: user.active(),
            cert_identities: Vec::new(),
        }
    }
}

impl From<&ClientRecord> for AccountState {
    fn from(client: &ClientRecord) -> AccountState {
        AccountState {
            scope: client.scope.clone(),
            version: client.version,
            active: !client.disabled,
            cert_identities: client.cert_identities.clone(),
        }
    }
}

/// A new account's secret.
#[derive(Debug, Clone, Copy)]
pub enum NewAccount<'a> {
    /// A user with this argon2id PHC string.
    User {
        /// The password hash.
        password_hash: &'a str,
    },
    /// A service client with this secret digest.
    Client {
        /// SHA-256 of the secret.
        secret_digest: &'a [u8; 32],
        /// Logins must present a client certificate over mTLS.
        require_cert: bool,
        /// Its certificate identities (claimed in the identity index first).
        cert_identities: &'a [String],
    },
}

impl NewAccount<'_> {
    /// Which kind of account this creates.
    pub fn kind(&self) -> AccountKind {
        match self {
            NewAccount::User { .. } => AccountKind::User,
            NewAccount::Client { .. } => AccountKind::Client,
        }
    }
}

/// A change to an existing account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange<'a> {
    /// A user's new password hash. Raises the version.
    Password(&'a str),
    /// A client's new secret digest. Raises the version.
    Secret(&'a [u8; 32]),
    /// New scopes. The version stays: live sessions are narrowed at their
    /// next refresh.
    Scopes(&'a str),
    /// A client's new certificate identities (claimed in the identity
    /// index first). Raises the version: what was bound to a certificate
    /// that is no longer the client's is cut off.
    CertIdentities(&'a [String]),
    /// Disable a user or service client. Raises the version.
    Disable,
    /// Let a disabled account log in again.
    Enable,
    /// Raise the version only: log out everywhere.
    CutOff,
    /// Mark the account as being deleted. Raises the version. Sessions are
    /// swept next, then the record is removed.
    Delete,
}

impl AccountChange<'_> {
    /// Whether the change raises the account version (a cut-off).
    pub fn cuts_off(&self) -> bool {
        !matches!(self, AccountChange::Scopes(_) | AccountChange::Enable)
    }
}

/// What a refresh session grants, and its absolute end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// The user.
    pub subject: String,
    /// Space-separated scopes asked for at login.
    pub scope: String,
    /// The audience of its access tokens.
    pub audience: String,
    /// When the session started, ms since the epoch.
    pub created_ms: i64,
    /// When the session ends however often it is refreshed, ms since the epoch.
    pub absolute_expiry_ms: i64,
    /// The account version when the session began.
    pub account_version: i64,
}

/// A session to create at login.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// The session id (also inside its refresh tokens).
    pub session_id: &'a str,
    /// What the session grants; `created_ms` is now; `account_version` is the
    /// version the login read, which must still be current.
    pub grant: &'a SessionGrant,
    /// The user agent that logged in, already truncated.
    pub client: &'a str,
    /// Hash of the first refresh token.
    pub token: TokenHash,
    /// Idle lifetime, ms: the session ends this long after its last use.
    pub idle_ttl_ms: i64,
}

/// The outcome of [`Store::create_session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCreated {
    /// Created and listed; the user now has this many sessions listed
    /// (counting this one and perhaps some that ended and are not pruned yet).
    Listed(usize),
    /// Nothing kept: the account was disabled, deleted or cut off after the
    /// login read it (a login racing an administrator).
    AccountChanged,
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

/// One page of a user's session index, for sweeping it in bounded steps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexPage {
    /// Session ids listed on this page.
    pub session_ids: Vec<String>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<u64>,
}

/// What a revocation-feed entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// Every access token of this session is revoked.
    Session {
        /// The session id.
        session_id: String,
    },
    /// A subject cut-off: every token of this subject with an account version
    /// below `version` is revoked.
    Subject {
        /// User name or client id.
        subject: String,
        /// The account's new version.
        version: i64,
    },
    /// An actor cut-off: every delegated token with this service client in
    /// its actor chain, exchanged under an account version below
    /// `version`, is revoked.
    Actor {
        /// The service client's id.
        actor: String,
        /// Its new account version.
        version: i64,
    },
    /// An account changed in a way that revokes nothing (new scopes,
    /// enabled): tokend replicas forget what they cached about it. Never sent
    /// to watchers.
    Account {
        /// User name or client id.
        subject: String,
    },
}

impl FeedEvent {
    /// What a newer entry of the same kind and subject supersedes this one
    /// by (`u:NAME`, `t:ID`, `a:NAME`): the feed keeps one live cut-off per
    /// subject and kind, so its size depends on how many accounts were cut
    /// off, not on how often. `None` for sessions (each is its own).
    pub fn live_key(&self) -> Option<String> {
        match self {
            FeedEvent::Session { .. } => None,
            FeedEvent::Subject { subject, .. } => Some(format!("u:{subject}")),
            FeedEvent::Actor { actor, .. } => Some(format!("t:{actor}")),
            FeedEvent::Account { subject } => Some(format!("a:{subject}")),
        }
    }

    /// The account version a cut-off carries.
    pub fn version(&self) -> Option<i64> {
        match self {
            FeedEvent::Subject { version, .. } | FeedEvent::Actor { version, .. } => Some(*version),
            FeedEvent::Session { .. } | FeedEvent::Account { .. } => None,
        }
    }

    /// Whether this (newer) entry may replace `older` of the same live key:
    /// never by a lower account version (a late retry), which covers less.
    pub fn supersedes(&self, older: &FeedEvent) -> bool {
        match (self.version(), older.version()) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        }
    }
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Position in the feed; resume after it.
    pub cursor: FeedCursor,
    /// What it says.
    pub event: FeedEvent,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// After this no token it covers can be unexpired, ms since the epoch.
    pub until_ms: i64,
}

/// A position in the revocation feed: a Redis stream id `MS-SEQ`, parsed
/// once and ordered as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedCursor {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl FeedCursor {
    /// The position just before everything appended at or after `ms`.
    pub fn at_ms(ms: i64) -> FeedCursor {
        FeedCursor {
            ms: u64::try_from(ms).unwrap_or(0),
            seq: 0,
        }
    }

    /// Parses `MS-SEQ` (decimal digits only); `None` if malformed or the
    /// largest possible position (nothing can follow it, and Redis refuses
    /// to read after it).
    pub fn parse(text: &str) -> Option<FeedCursor> {
        let (ms, seq) = text.split_once('-')?;
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        let cursor = FeedCursor {
            ms: number(ms)?,
            seq: number(seq)?,
        };
        (cursor != FeedCursor::MAX).then_some(cursor)
    }

    /// The largest position.
    pub const MAX: FeedCursor = FeedCursor {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The position right after this one.
    pub fn next(self) -> FeedCursor {
        match self.seq.checked_add(1) {
            Some(seq) => FeedCursor { ms: self.ms, seq },
            None => FeedCursor {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What counts failed logins. Users and clients share one namespace, so an
/// account name identifies either.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureScope {
    /// Every failure on an account, from any source.
    Account(String),
    /// Failures on an account from one source.
    AccountSource(String, String),
    /// Every failure from a source, on any account.
    Source(String),
}

/// Failed logins counted under one [`FailureScope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    /// How many, since the counter was last cleared or expired.
    pub count: u32,
    /// When the last one happened, ms since the epoch.
    pub last_ms: i64,
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
    /// The last entry seen: entries after it are what [`next`](Self::next)
    /// returns.
    pub fn position(&self) -> FeedCursor {
        match self {
            FeedFollower::Memory(f) => f.position(),
            FeedFollower::Redis(f) => f.position(),
        }
    }

    /// Entries appended since the last call (since creation, the first
    /// time); waits up to a few seconds and may return none.
    pub async fn next(&mut self) -> Result<Vec<FeedEntry>, StoreError> {
        match self {
            FeedFollower::Memory(f) => f.next().await,
            FeedFollower::Redis(f) => f.next().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_strictly_and_order_as_numbers() {
        let a = FeedCursor::parse("1700000000000-9").unwrap();
        let b = FeedCursor::parse("1700000000000-10").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-9");
        assert_eq!(a.next(), FeedCursor::parse("1700000000000-10").unwrap());
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", " 1-2", "+1-2"] {
            assert_eq!(FeedCursor::parse(bad), None, "{bad:?}");
        }
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        assert_eq!(FeedCursor::parse(&max), None);
        assert_eq!(
            FeedCursor::parse(&"9".repeat(21).replace("99", "9-9")),
            None
        );
    }

    #[test]
    fn only_scopes_and_enabling_keep_the_version() {
        assert!(AccountChange::Password("x").cuts_off());
        assert!(AccountChange::Secret(&[0; 32]).cuts_off());
        assert!(AccountChange::Disable.cuts_off());
        assert!(AccountChange::CutOff.cuts_off());
        assert!(AccountChange::Delete.cuts_off());
        assert!(!AccountChange::Scopes("a").cuts_off());
        assert!(!AccountChange::Enable.cuts_off());
    }
}

//! Typed facts: what happened, stated once by the layer that knows it (a
//! login decided, a session ended and why, an exchange decided, a store
//! call, ...) and heard by every listener (`metrics`, `audit` and the
//! service log, wired in `telemetry::record`).
//!
//! This module imports nothing of the crate: the layers below (store,
//! credentials, revocations) and above (authority, api, cli) all state facts,
//! and the listeners depend only on this vocabulary. A layer never counts,
//! audits and logs the same decision in three places; it builds one
//! [`Fact`] and calls `telemetry::record`.
//!
//! Facts borrow what they name (subjects, session ids, token ids): never a
//! password, secret, token or key. Labels the metrics use are small fixed
//! sets (`as_str` below), so no caller can grow a series.

use std::time::Duration;

// The contract's reasons are tokend-interceptor's (a crate below this one,
// not a module of it): a fact names the reason the caller got.
use tokend_interceptor::Reason;

/// Something that happened, for the listeners.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Fact<'a> {
    /// A Login was decided.
    Login(Login<'a>),
    /// A Refresh was decided.
    Refresh(Refresh<'a>),
    /// Sessions ended (one, or a batch of an account's).
    SessionsEnded(SessionsEnded<'a>),
    /// An Exchange was decided.
    Exchange(Exchange<'a>),
    /// An administrator changed an account.
    AccountChanged(AccountChanged<'a>),
    /// One store operation ended.
    StoreCall(StoreCall),
    /// The health check did (`true`) or did not reach the store.
    StoreUp(bool),
    /// Something happened to a password-hashing job.
    Hash(Hash),
    /// The revocation feed: watchers, publications, lag.
    Feed(Feed),
    /// The exchange policy in force has this many rows.
    ExchangePolicyRows(usize),
    /// The keys in use at start.
    Keys(Keys<'a>),
    /// A gRPC call was answered.
    RpcAnswered(RpcAnswered),
    /// An administration call was decided (allowed and done, or refused).
    AdminCall(AdminCall<'a>),
}

/// An administration call, allowed or refused.
#[derive(Debug, Clone)]
pub struct AdminCall<'a> {
    /// The method (`DisableUser`, ...).
    pub method: &'static str,
    /// The administrator, when its credential named one (a refused
    /// caller's token may still name its subject).
    pub caller: Option<&'a str>,
    /// How the caller proved who it is: `token`, `certificate` or `none`.
    pub via: &'static str,
    /// The account (or account and session) the call is about, if any.
    pub target: Option<&'a str>,
    /// Done, or refused for this reason.
    pub outcome: Result<(), Refused>,
    /// The caller's address.
    pub peer: &'a str,
}

/// Login by password (a user, a session) or by client credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginKind {
    /// A user's name and password.
    Password,
    /// A service client's id and secret.
    Client,
}

impl LoginKind {
    /// The `kind` label and audit field.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginKind::Password => "password",
            LoginKind::Client => "client",
        }
    }
}

/// A Login was decided.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    /// Which kind.
    pub kind: LoginKind,
    /// The account, when it exists (a name that matches none is often a
    /// password typed into the wrong field: it is not repeated).
    pub subject: Option<&'a str>,
    /// The caller's address, as shown.
    pub peer: &'a str,
    /// Issued, or refused.
    pub outcome: Result<Issued<'a>, Refused>,
}

/// What a successful call issued.
#[derive(Debug, Clone, Copy)]
pub struct Issued<'a> {
    /// The session (password logins and refreshes), if any.
    pub session: Option<&'a str>,
    /// The new access token's id (`jti`).
    pub token_id: &'a str,
}

/// Why a call was refused: the contract's reason the caller gets, or
/// `None` when it failed inside tokend (answered INTERNAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The reason, e.g. `INVALID_CREDENTIALS`.
    pub reason: Option<Reason>,
}

impl Refused {
    /// The reason for the audit log (`INTERNAL` for an internal failure).
    pub fn reason_or_internal(self) -> &'static str {
        self.reason.map_or("INTERNAL", Reason::as_str)
    }
}

/// A Refresh was decided.
#[derive(Debug, Clone)]
pub struct Refresh<'a> {
    /// The session of the presented token, when it parsed.
    pub session: Option<&'a str>,
    /// The session's subject, when known.
    pub subject: Option<&'a str>,
    /// How it ended.
    pub outcome: RefreshOutcome<'a>,
}

/// How a Refresh ended.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RefreshOutcome<'a> {
    /// Rotated: a new pair was issued (this access token id).
    Rotated(&'a str),
    /// A retry within the grace window got the same successor again.
    GraceRetry(&'a str),
    /// A consumed token was presented again: the session is revoked.
    Reused,
    /// Unknown, malformed, expired or revoked, or its account is cut off;
    /// says which, for the log.
    Invalid(&'static str),
}

impl RefreshOutcome<'_> {
    /// The `outcome` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefreshOutcome::Rotated(_) => "rotated",
            RefreshOutcome::GraceRetry(_) => "grace_retry",
            RefreshOutcome::Reused => "reused",
            RefreshOutcome::Invalid(_) => "invalid",
        }
    }
}

/// Why sessions ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndCause {
    /// `Revoke` with the session's refresh token.
    Revoke,
    /// A consumed refresh token was reused.
    Reuse,
    /// `RevokeSession` by its owner.
    RevokeSession,
    /// `RevokeAllSessions` by their owner (log out everywhere).
    RevokeAll,
    /// Over the per-user session cap: the oldest ended.
    SessionCap,
    /// An administrator's `RevokeUserSession`.
    Admin,
}

impl EndCause {
    /// The `cause` label and audit field.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Revoke => "revoke",
            EndCause::Reuse => "reuse",
            EndCause::RevokeSession => "revoke_session",
            EndCause::RevokeAll => "revoke_all",
            EndCause::SessionCap => "session_cap",
            EndCause::Admin => "admin",
        }
    }
}

/// Sessions of one subject ended.
#[derive(Debug, Clone)]
pub struct SessionsEnded<'a> {
    /// Why.
    pub cause: EndCause,
    /// Whose.
    pub subject: &'a str,
    /// Which: one session, or how many (a log-out-everywhere, where the
    /// sweep ends them by the thousand).
    pub sessions: Ended<'a>,
    /// Whether the caller waited for this (the answer), or a background
    /// sweep finished the rest after it.
    pub in_background: bool,
}

/// Which sessions ended.
#[derive(Debug, Clone, Copy)]
pub enum Ended<'a> {
    /// These sessions, by id, of which the store ended `count` (others had
    /// ended already).
    Ids {
        /// The sessions.
        ids: &'a [String],
        /// How many of them the store ended.
        count: usize,
    },
    /// This session.
    One(&'a str),
    /// This many.
    Count(usize),
}

impl Ended<'_> {
    /// How many sessions ended.
    pub fn count(&self) -> usize {
        match self {
            Ended::Ids { count, .. } => *count,
            Ended::One(_) => 1,
            Ended::Count(n) => *n,
        }
    }
}

/// An Exchange was decided.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    /// The caller (a service client), as shown.
    pub caller: &'a str,
    /// The audience asked for.
    pub audience: &'a str,
    /// What it handed out, or why not.
    pub outcome: Result<Exchanged<'a>, Refused>,
}

/// A delegated token handed out by an Exchange.
#[derive(Debug, Clone)]
pub struct Exchanged<'a> {
    /// The user it speaks for.
    pub subject: &'a str,
    /// The actor chain, outermost first.
    pub actor_chain: &'a [String],
    /// Its scopes.
    pub scopes: &'a [String],
    /// Its id.
    pub token_id: &'a str,
    /// The id of the subject token it was exchanged for.
    pub subject_token_id: &'a str,
}

/// An administrator's change to an account.
#[derive(Debug, Clone)]
pub struct AccountChanged<'a> {
    /// The audit event name (`user_added`, `client_disabled`, ...).
    pub event: &'static str,
    /// The account.
    pub subject: &'a str,
    /// Sessions the change ended, where it ends any.
    pub sessions_ended: Option<usize>,
}

/// One store operation ended.
#[derive(Debug, Clone, Copy)]
pub struct StoreCall {
    /// The operation (a fixed name, the `op` label).
    pub op: &'static str,
    /// How long it took.
    pub elapsed: Duration,
    /// How it failed, if it did.
    pub failure: Option<StoreFailure>,
}

/// How a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFailure {
    /// No answer in time.
    Timeout,
    /// Unreachable, or refused the call.
    Unavailable,
    /// An answer tokend cannot read.
    Corrupt,
}

impl StoreFailure {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreFailure::Timeout => "timeout",
            StoreFailure::Unavailable => "unavailable",
            StoreFailure::Corrupt => "corrupt",
        }
    }
}

/// A password-hashing job's life.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Hash {
    /// This many jobs are running or queued now.
    InProgress(usize),
    /// A job waited this long for its thread.
    Waited(Duration),
    /// A job ran.
    Ran,
    /// A job was skipped: its caller had gone.
    Dropped,
}

/// The revocation feed on this replica.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Feed {
    /// This many watchers are connected now.
    Watchers(usize),
    /// An entry was published (`true`), or its publication failed and is
    /// retried in the background.
    Published(bool),
    /// The feed was last read from the store this long ago.
    Lag(Duration),
}

/// The keys in use at start.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// The id of the key access tokens are signed with.
    pub signing_key_id: &'a str,
    /// How many keys GetPublicKeys publishes.
    pub published: usize,
}

/// A gRPC call was answered.
#[derive(Debug, Clone, Copy)]
pub struct RpcAnswered {
    /// The method label (a fixed set: see `api::method_label`).
    pub method: &'static str,
    /// The status code's canonical name (`OK`, `UNAUTHENTICATED`).
    pub code: &'static str,
    /// The tokend reason, or `""`.
    pub reason: &'static str,
    /// From the call's arrival to its answer's headers.
    pub elapsed: Duration,
}

//! What the store keeps and answers, as both implementations speak it:
//! account records and their changes, refresh sessions and their
//! outcomes, failed-login counters.

use crate::tokens::{SealedSecret, TokenHash};

/// How many consumed refresh tokens per session are remembered for reuse
/// detection, besides the one consumed last. Replaying an older one is
/// answered as an unknown token.
pub const CONSUMED_LOG_CAP: usize = 64;

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
    /// When it was created, ms since the epoch (0: before tokend kept it).
    pub created_ms: i64,
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
    /// When it was created, ms since the epoch (0: before tokend kept it).
    pub created_ms: i64,
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
    /// The presented token was consumed within the grace window, but
    /// before the previous one: the session rotated past it since. A call
    /// its caller gave up on, delivered late (held up in a partition), whose
    /// retry was answered with the successor; nothing changes and the token
    /// yields nothing. Past the window such a token is [`Rotation::Reused`].
    Superseded {
        /// Whose session it is, for the log.
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
    /// The session was ended by an earlier revoke of this same token (it
    /// is remembered for [`REVOKED_REMEMBERED_MS`]), presented again: the
    /// caller may be retrying one whose answer it lost, which may have
    /// ended the session without announcing it, so it is announced again.
    /// Repeats are let through one at a time (another meanwhile is
    /// [`crate::store::StoreError::another_announces`]) until one's
    /// announcement is recorded (`Store::end_announced`); later ones are
    /// [`Revocation::Unknown`]: a caller cannot make the feed grow call by
    /// call, and an announcement that failed is made by the next repeat.
    AlreadyRevoked {
        /// Whose session it was.
        subject: String,
    },
    /// Nothing to revoke: unknown session or not one of its tokens.
    Unknown,
}

/// How long a revoked session's revoking token is remembered, for a
/// repeated revoke ([`Revocation::AlreadyRevoked`]): far longer than any
/// client retries a call whose answer it lost.
pub const REVOKED_REMEMBERED_MS: i64 = 10 * 60 * 1000;

/// How long a repeated end let through to announce the session's end holds
/// off other repeats (they are told to come back, see
/// [`crate::store::StoreError::another_announces`]): longer than an
/// announcement takes before it gives up (the store's timeout, 1 s by
/// default), so two repeats rarely announce at once. Measured on the clock
/// of the replica answering each repeat.
pub const REPEAT_ANNOUNCING_MS: i64 = 2_000;

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

/// One page of a user's live sessions, in session-id order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionsPage {
    /// At most the page's size, each live.
    pub sessions: Vec<SessionInfo>,
    /// Whether sessions after the page's last may follow.
    pub more: bool,
}

//! The decisions of the token service, independent of gRPC: who may log in
//! ([`login`]), refresh and revoke ([`refresh`]), manage their sessions
//! ([`sessions`]) and obtain tokens on a user's behalf ([`exchange`]). The [`api`](crate::api) module turns requests into calls
//! here and [`AuthError`]s into statuses.

mod exchange;
#[cfg(test)]
mod exchange_tests;
mod feed;
mod login;
mod refresh;
mod session_cap;
mod sessions;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokend_interceptor::{CertificateNaming, Reason, Verifier};

use crate::accounts::AccountStates;
use crate::credentials::{HashError, PasswordHasher};
use crate::exchange::PolicySource;
use crate::revocations::{RevocationFeed, TooManyWatchers};
use crate::store::{Store, StoreError};
use crate::throttle::{LoginThrottle, Refusal};
use crate::tokens::access::SignError;
use crate::tokens::{AccessToken, AccessTokenIssuer, PublishedKey, RefreshToken};

pub use exchange::{Caller, Certificate, ExchangeRequest, Exchanged};
pub use feed::FeedCaller;
pub use login::LoginRequest;

/// Why a login, refresh, revoke or session call failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password or secret, unknown or disabled account: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failed logins for this account or from this source.
    #[error("too many failed logins; retry in {0:?}")]
    LoginThrottled(Duration),
    /// Unknown, malformed, expired or revoked refresh token, or its account
    /// was disabled, deleted or cut off.
    #[error("refresh token is invalid, expired or revoked")]
    RefreshTokenInvalid,
    /// A consumed refresh token was replayed; its session is now revoked.
    #[error("refresh token was already used; the session is revoked")]
    RefreshTokenReused,
    /// The request is malformed; the message says how (never echoing a secret).
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller's own session (of the access token used) has ended, or its
    /// account was cut off since the token was issued.
    #[error("the session of this access token was revoked")]
    SessionRevoked,
    /// The caller's token is for another audience than tokend's own.
    #[error("this method needs an access token whose audience is tokend's issuer name")]
    WrongAudience,
    /// No such session among the caller's.
    #[error("no such session")]
    SessionNotFound,
    /// Exchange: the subject token is not a valid, unexpired tokend access
    /// token (what the interceptor would say of it).
    #[error("subject_token: {0}")]
    SubjectToken(tokend_interceptor::AuthError),
    /// Exchange without a token, and the client certificate names no
    /// single enabled service client; says why.
    #[error("{0}")]
    NoCaller(&'static str),
    /// Exchange: the subject token's audience is not the caller.
    #[error("the subject token was not issued to the caller")]
    SubjectNotForCaller,
    /// Exchange: no policy row lets the caller obtain this audience.
    #[error("the exchange policy does not let the caller obtain tokens for this audience")]
    ExchangeNotAllowed,
    /// A delegation chain that may not be made or used here; says why.
    #[error("{0}")]
    ChainNotAllowed(String),
    /// Exchange: scopes outside what the subject and the policy allow;
    /// says which.
    #[error("{0}")]
    ScopeNotAllowed(String),
    /// The session store is unreachable or too slow.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing could not run (or is saturated).
    #[error(transparent)]
    Hash(#[from] HashError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// This replica serves as many feed watchers as it may (or the caller
    /// has as many as it may).
    #[error(transparent)]
    TooManyWatchers(#[from] TooManyWatchers),
    /// The same call for the same account came too soon after the last;
    /// retry after this long.
    #[error("too soon after the last; retry in {0:?}")]
    RateLimited(Duration),
    /// The caller lacks a scope the call needs; says which.
    #[error("the scope {0:?} is required")]
    InsufficientScope(String),
}

impl AuthError {
    /// The contract's reason this error is answered with (as
    /// `api::error` maps it), for the audit log; `None` for internal
    /// failures, answered INTERNAL without one.
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            AuthError::InvalidCredentials => Reason::InvalidCredentials,
            AuthError::LoginThrottled(_) => Reason::LoginThrottled,
            AuthError::Hash(HashError::Overloaded { .. }) | AuthError::TooManyWatchers(_) => {
                Reason::Overloaded
            }
            AuthError::WrongAudience => Reason::WrongAudience,
            AuthError::RefreshTokenInvalid => Reason::RefreshTokenInvalid,
            AuthError::RefreshTokenReused => Reason::RefreshTokenReused,
            AuthError::InvalidRequest(_) => Reason::InvalidRequest,
            AuthError::SessionRevoked => Reason::SessionRevoked,
            AuthError::SessionNotFound => Reason::SessionNotFound,
            AuthError::SubjectToken(err) => err.reason(),
            AuthError::NoCaller(_) => Reason::AccessTokenMissing,
            AuthError::SubjectNotForCaller => Reason::SubjectNotForCaller,
            AuthError::ExchangeNotAllowed => Reason::ExchangeNotAllowed,
            AuthError::ChainNotAllowed(_) => Reason::ChainNotAllowed,
            AuthError::ScopeNotAllowed(_) => Reason::ScopeNotAllowed,
            AuthError::InsufficientScope(_) => Reason::InsufficientScope,
            AuthError::RateLimited(_) => Reason::RateLimited,
            AuthError::Store(StoreError::Unavailable(_) | StoreError::TimedOut) => {
                Reason::StoreUnavailable
            }
            AuthError::Store(StoreError::Corrupt(_)) | AuthError::Hash(_) | AuthError::Sign(_) => {
                return None;
            }
        })
    }
}

impl From<Refusal> for AuthError {
    fn from(refusal: Refusal) -> AuthError {
        match refusal {
            Refusal::Throttled(wait) => AuthError::LoginThrottled(wait),
            Refusal::Store(err) => AuthError::Store(err),
        }
    }
}

/// How long tokens and sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Access-token lifetime.
    pub access: Duration,
    /// A session ends this long after its last refresh.
    pub refresh_idle: Duration,
    /// A session ends this long after login, however often it is refreshed.
    pub refresh_absolute: Duration,
    /// How long the just-consumed refresh token may be retried for the same
    /// successor (10 s by default, so that a retry after STORE_UNAVAILABLE
    /// or a lost answer is safe); zero makes every replay a reuse.
    pub reuse_grace: Duration,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            access: Duration::from_secs(15 * 60),
            refresh_idle: Duration::from_secs(7 * 24 * 3600),
            refresh_absolute: Duration::from_secs(30 * 24 * 3600),
            reuse_grace: Duration::from_secs(10),
        }
    }
}

/// What Login and Refresh hand out.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The access token.
    pub access: AccessToken,
    /// The session's refresh token and session, for password logins and refreshes.
    pub session: Option<IssuedSession>,
}

/// The refresh half of [`IssuedTokens`].
#[derive(Debug)]
pub struct IssuedSession {
    /// The session id.
    pub session_id: String,
    /// The refresh token to present next.
    pub refresh_token: RefreshToken,
    /// When the session ends if not refreshed before, ms since the epoch.
    pub expires_at_ms: i64,
}

/// Everything the authority decides with.
#[derive(Debug)]
pub struct Parts {
    /// Accounts and sessions.
    pub store: Store,
    /// The revocation feed.
    pub feed: RevocationFeed,
    /// What this replica knows of accounts' state (kept fresh by the feed).
    pub accounts: AccountStates,
    /// Counts failed logins.
    pub throttle: LoginThrottle,
    /// Signs access tokens.
    pub issuer: AccessTokenIssuer,
    /// Hashes passwords.
    pub hasher: PasswordHasher,
    /// The audience when Login names none.
    pub default_audience: String,
    /// Token and session lifetimes.
    pub lifetimes: Lifetimes,
    /// Published for verification besides the active key.
    pub verification_keys: Vec<PublishedKey>,
    /// Most sessions per user; a login beyond ends the least recently used.
    pub max_sessions_per_user: usize,
    /// Least time between two log-outs-everywhere of one account.
    pub revoke_all_interval: Duration,
    /// Verifies Exchange's subject tokens: tokend's keys and issuer, any
    /// audience (Exchange checks it is the caller).
    pub subject_verifier: Verifier,
    /// What Exchange may hand out.
    pub exchange_policy: PolicySource,
    /// How client certificates name service clients.
    pub cert_naming: CertificateNaming,
}

/// The token service's decisions, shared by every gRPC call.
#[derive(Debug)]
pub struct Authority {
    store: Store,
    feed: RevocationFeed,
    accounts: AccountStates,
    throttle: LoginThrottle,
    issuer: AccessTokenIssuer,
    hasher: PasswordHasher,
    default_audience: String,
    lifetimes: Lifetimes,
    published_keys: Vec<PublishedKey>,
    session_cap: session_cap::SessionCap,
    revoke_all_interval: Duration,
    subject_verifier: Verifier,
    exchange_policy: PolicySource,
    cert_naming: CertificateNaming,
}

impl Authority {
    /// Assembles the service from its parts.
    pub fn new(parts: Parts) -> Authority {
        let mut published_keys = vec![parts.issuer.active_key().clone()];
        for key in parts.verification_keys {
            if !published_keys.contains(&key) {
                published_keys.push(key);
            }
        }
        let session_cap = session_cap::SessionCap::new(
            parts.store.clone(),
            parts.feed.clone(),
            parts.max_sessions_per_user,
        );
        Authority {
            store: parts.store,
            feed: parts.feed,
            accounts: parts.accounts,
            throttle: parts.throttle,
            issuer: parts.issuer,
            hasher: parts.hasher,
            default_audience: parts.default_audience,
            lifetimes: parts.lifetimes,
            published_keys,
            session_cap,
            revoke_all_interval: parts.revoke_all_interval,
            subject_verifier: parts.subject_verifier,
            exchange_policy: parts.exchange_policy,
            cert_naming: parts.cert_naming,
        }
    }

    /// Checks that the store answers, for health.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// The keys verifiers need: the active one first.
    pub fn public_keys(&self) -> &[PublishedKey] {
        &self.published_keys
    }

    /// The issuer name: the `iss` of every token, and the audience a token
    /// must have for tokend's own session RPCs.
    pub fn issuer_name(&self) -> &str {
        self.issuer.issuer()
    }

    fn audience<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        requested.unwrap_or(&self.default_audience)
    }
}


//! The decisions of the token service, independent of gRPC: who may log in
//! ([`login`]), refresh and revoke ([`refresh`]), manage their sessions
//! ([`sessions`]), obtain tokens on a user's behalf ([`exchange`]) and
//! learn what a verifier would decide of a token ([`introspect`]), and
//! administer accounts ([`administration`]). The [`api`](crate::api) module turns requests into calls
//! here and [`AuthError`]s into statuses.

mod administration;
mod error;
mod exchange;
#[cfg(test)]
mod exchange_tests;
mod feed;
mod introspect;
mod login;
mod refresh;
mod services;
mod session_cap;
mod sessions;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokend_interceptor::Verifier;
use tokend_interceptor::certs::CertificateNaming;

use crate::accounts::AccountStates;
use crate::credentials::PasswordHasher;
use crate::exchange::PolicySource;
use crate::revocations::RevocationFeed;
use crate::store::{Store, StoreError};
use crate::throttle::LoginThrottle;
use crate::tokens::{AccessToken, AccessTokenIssuer, PublishedKey, RefreshToken};

pub use administration::{
    ADMIN_READ_SCOPE, ADMIN_SCOPE, Access, AdminCaller, Administrator, ClientView, FeedStatus,
    Page, UserView,
};
pub use error::AuthError;
pub use exchange::{Caller, Certificate, ExchangeRequest, Exchanged};
pub use feed::FeedCaller;
pub use introspect::{INTROSPECT_ANY_SCOPE, INTROSPECT_SCOPE, Introspection, Introspector};
pub use login::LoginRequest;

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
    /// Introspect's verifier: tokend's keys and issuer, any audience, and
    /// the revocation list this replica keeps from its own feed.
    pub introspection_verifier: Verifier,
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
    introspection_verifier: Verifier,
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
            introspection_verifier: parts.introspection_verifier,
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

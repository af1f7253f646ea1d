//! [`AuthError`]: why a call to the authority failed, classified once: its
//! reason (and so its gRPC code), its retry delay, the field at fault and
//! the message the caller reads. `api::error` builds the `Status` from
//! these and nothing else; the facts take the same reason.

use std::time::Duration;

use tokend_interceptor::Reason;

use crate::accounts::AccountError;
use crate::credentials::HashError;
use crate::facts::Refused;
use crate::revocations::TooManyWatchers;
use crate::store::StoreError;
use crate::throttle::Refusal;
use crate::tokens::access::SignError;

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
    /// The caller's own access token is missing or not valid (what the
    /// interceptor would say of it): for calls that check their caller
    /// themselves, the administration API's.
    #[error(transparent)]
    CallerToken(tokend_interceptor::AuthError),
    /// An administrator's change could not be made, or was made only in
    /// part (the message says which; running it again finishes it).
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl AuthError {
    /// The contract's reason this error is answered with (its gRPC code is
    /// the reason's, [`Reason::code`]); `None` for internal failures,
    /// answered INTERNAL without one.
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
            AuthError::CallerToken(err) => err.reason(),
            AuthError::Account(err) => return account_reason(err),
        })
    }

    /// Whether the refusal is the caller's fault (a missing, invalid or
    /// insufficient credential), which the throttle counts against its
    /// source; a failure of tokend's own is not.
    pub fn is_refusal(&self) -> bool {
        self.reason().is_some_and(|reason| {
            !matches!(
                reason,
                Reason::StoreUnavailable | Reason::Overloaded | Reason::LoginThrottled
            )
        })
    }

    /// How long the caller should wait before retrying (`google.rpc.RetryInfo`),
    /// for the refusals that are about load or pace.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::LoginThrottled(wait) | AuthError::RateLimited(wait) => Some(*wait),
            AuthError::Hash(HashError::Overloaded { retry_after }) => Some(*retry_after),
            AuthError::TooManyWatchers(_) => Some(WATCHERS_RETRY),
            _ => None,
        }
    }

    /// The request field the refusal is about (a `google.rpc.BadRequest`
    /// field violation), where it is one field's fault.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            AuthError::SubjectToken(_) => Some("subject_token"),
            _ => None,
        }
    }

    /// What the caller reads in the status message: what happened and what
    /// to do, never a secret and never an internal detail (an internal
    /// failure says only "internal error").
    pub fn caller_message(&self) -> String {
        match self {
            AuthError::InvalidCredentials => "invalid credentials".into(),
            AuthError::LoginThrottled(_) => {
                "too many failed logins; retry after the RetryInfo delay".into()
            }
            AuthError::Hash(HashError::Overloaded { .. }) => {
                "too many logins in progress; retry after the RetryInfo delay".into()
            }
            AuthError::TooManyWatchers(err) => format!("{err}; retry, perhaps on another replica"),
            AuthError::WrongAudience => "this method needs an access token whose audience is \
                 tokend's issuer name; log in asking for that audience"
                .into(),
            AuthError::RefreshTokenInvalid => {
                "refresh token is invalid, expired or revoked; log in again".into()
            }
            AuthError::RefreshTokenReused => {
                "refresh token was already used; the session is revoked; log in again".into()
            }
            AuthError::SessionRevoked => {
                "the session of this access token was revoked; log in again".into()
            }
            AuthError::RateLimited(_) => "too soon after the account's last cut-off; retry \
                 after the RetryInfo delay"
                .into(),
            AuthError::Store(StoreError::Unavailable(_) | StoreError::TimedOut) => {
                "session store unavailable; retry later".into()
            }
            AuthError::Store(StoreError::Corrupt(_)) | AuthError::Hash(_) | AuthError::Sign(_) => {
                "internal error".into()
            }
            AuthError::Account(err) => account_message(err),
            // The rest say what they are (their Display names no secret).
            other => other.to_string(),
        }
    }

    /// The refusal as a fact states it (the reason string, or none for an
    /// internal failure).
    pub fn refused(&self) -> Refused {
        Refused {
            reason: self.reason(),
        }
    }
}

/// The reason an administrator's failed change is answered with; `None`
/// for an internal failure.
fn account_reason(err: &AccountError) -> Option<Reason> {
    Some(match err {
        AccountError::BadName(_)
        | AccountError::BadScope(_)
        | AccountError::TooManyScopes
        | AccountError::BadIdentity(_)
        | AccountError::TooManyIdentities
        | AccountError::BadPassword
        | AccountError::Reserved(_) => Reason::InvalidRequest,
        AccountError::NoSuchAccount(..) => Reason::AccountNotFound,
        AccountError::Exists(..)
        | AccountError::NameTaken(..)
        | AccountError::IdentityTaken(..) => Reason::AccountExists,
        AccountError::NotAnnounced { .. }
        | AccountError::SweepStopped { .. }
        | AccountError::Store(StoreError::Unavailable(_) | StoreError::TimedOut) => {
            Reason::StoreUnavailable
        }
        AccountError::Hash(HashError::Overloaded { .. }) => Reason::Overloaded,
        AccountError::Store(StoreError::Corrupt(_)) | AccountError::Hash(_) => return None,
    })
}

/// What an administrator reads of a failed change: what the CLI would say,
/// without the store's own words (which may name its addresses).
fn account_message(err: &AccountError) -> String {
    match err {
        AccountError::NotAnnounced { name, .. } => format!(
            "the change to {name:?} is saved, but announcing it on the revocation feed failed \
             (session store unavailable); make the call again"
        ),
        AccountError::SweepStopped { name, ended, .. } => format!(
            "{name:?} is cut off (no session or token from before works any more), but ending \
             its sessions stopped after {ended} (session store unavailable); make the call \
             again to finish"
        ),
        AccountError::Store(StoreError::Unavailable(_) | StoreError::TimedOut) => {
            "session store unavailable; retry later".into()
        }
        AccountError::Hash(HashError::Overloaded { .. }) => {
            "too many password hashes in progress; retry after a moment".into()
        }
        AccountError::Store(StoreError::Corrupt(_)) | AccountError::Hash(_) => {
            "internal error".into()
        }
        // Input and name errors say what is wrong with the request; no
        // secret is in them (a password is never quoted).
        other => other.to_string(),
    }
}

/// How long a watcher turned away for lack of room waits before retrying.
const WATCHERS_RETRY: Duration = Duration::from_secs(5);

impl From<Refusal> for AuthError {
    fn from(refusal: Refusal) -> AuthError {
        match refusal {
            Refusal::Throttled(wait) => AuthError::LoginThrottled(wait),
            Refusal::Store(err) => AuthError::Store(err),
        }
    }
}

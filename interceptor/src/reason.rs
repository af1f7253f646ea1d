//! The error reasons of the tokend contract, shared by tokend and every
//! service that links this crate, so both sides speak the same words.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every `google.rpc.ErrorInfo` that tokend and this crate attach.
pub const ERROR_DOMAIN: &str = "tokend";

/// Why a call was refused. Sent as the `reason` of a `google.rpc.ErrorInfo`
/// detail (domain [`ERROR_DOMAIN`]) so a caller can tell whether to refresh,
/// log in again or retry, without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Login failed. The same answer whether or not the account exists: check
    /// the credentials; retrying will not help.
    InvalidCredentials,
    /// The refresh token is unknown, malformed, expired or revoked: log in again.
    RefreshTokenInvalid,
    /// A consumed refresh token was presented again; the session is now revoked
    /// because the token may have been stolen: log in again.
    RefreshTokenReused,
    /// No `authorization: Bearer ...` metadata: attach an access token.
    AccessTokenMissing,
    /// Bad signature, unknown key, wrong issuer or audience, malformed: get a
    /// new token (refreshing will not fix a token for the wrong audience).
    AccessTokenInvalid,
    /// The access token is past its `exp` (beyond the leeway): refresh and retry.
    AccessTokenExpired,
    /// The token's session was revoked: log in again.
    SessionRevoked,
    /// The token is valid but lacks a scope the method needs: ask for it at login.
    InsufficientScope,
    /// The request is malformed (empty or oversize fields): fix the request.
    InvalidRequest,
    /// The session store is unreachable or too slow: safe to retry with backoff.
    StoreUnavailable,
    /// (Extension.) Session management: no such session among the caller's.
    SessionNotFound,
    /// (Extension.) A resource service has no verification keys yet because
    /// tokend was unreachable since it started: safe to retry with backoff.
    KeysUnavailable,
    /// (Extension.) A resource service configured to fail closed has lost its
    /// revocation feed for too long: safe to retry with backoff.
    RevocationsUnavailable,
    /// (Extension.) Too many failed logins for this account or from this
    /// source: wait the `google.rpc.RetryInfo` delay, then try again. No
    /// password was checked.
    LoginThrottled,
    /// (Extension.) tokend is hashing as many passwords as it can; this login
    /// would have waited too long: retry after the `google.rpc.RetryInfo` delay.
    Overloaded,
    /// (Extension.) The token is valid but its audience is not the one this
    /// method needs (tokend's session RPCs need a token whose audience is
    /// tokend's issuer name): log in asking for that audience.
    WrongAudience,
    /// (Extension.) The token is bound to a client certificate (RFC 8705)
    /// and the caller did not present that certificate over mTLS: a stolen
    /// service token is useless without the service's private key.
    TokenBindingMismatch,
    /// (Extension.) Exchange: the subject token was not issued to the
    /// caller (its audience is not the caller's client id), so the caller
    /// may not trade it.
    SubjectNotForCaller,
    /// (Extension.) Exchange: no row of the exchange policy lets this
    /// caller obtain tokens for this audience.
    ExchangeNotAllowed,
    /// (Extension.) A delegation chain is not allowed: at Exchange, too
    /// deep, a loop, or a predecessor the policy does not name; at a
    /// resource service, a method that forbids delegated tokens, needs
    /// another actor or a shorter chain. Also a delegated token presented
    /// where the caller's own token is needed.
    ChainNotAllowed,
    /// (Extension.) Exchange: a requested scope is not in the subject
    /// token or not allowed by the policy, or nothing would remain.
    ScopeNotAllowed,
    /// (Extension.) A delegated token presented over mTLS by a service
    /// other than its outermost actor (neither the token's `cnf` nor the
    /// certificate's names match): a leaked derived token is useless to
    /// another service.
    ActorMismatch,
    /// (Extension.) The same call for the same account was made too
    /// recently (a log-out-everywhere right after another): wait the
    /// `google.rpc.RetryInfo` delay. Nothing was changed.
    RateLimited,
    /// (tokend-gate.) The gate's policy has no rule for this request path
    /// (or HTTP method) and its default is `deny`: no token opens it.
    PathNotAllowed,
    /// (Administration.) No user or service client has that name (or it
    /// is being deleted).
    AccountNotFound,
    /// (Administration.) The name is taken: by an account of that kind,
    /// by the other kind (users and clients share one namespace), or a
    /// certificate identity by another client.
    AccountExists,
}

impl Reason {
    /// Every reason, in contract order.
    pub const ALL: [Reason; 26] = [
        Reason::InvalidCredentials,
        Reason::RefreshTokenInvalid,
        Reason::RefreshTokenReused,
        Reason::AccessTokenMissing,
        Reason::AccessTokenInvalid,
        Reason::AccessTokenExpired,
        Reason::SessionRevoked,
        Reason::InsufficientScope,
        Reason::InvalidRequest,
        Reason::StoreUnavailable,
        Reason::SessionNotFound,
        Reason::KeysUnavailable,
        Reason::RevocationsUnavailable,
        Reason::LoginThrottled,
        Reason::Overloaded,
        Reason::WrongAudience,
        Reason::TokenBindingMismatch,
        Reason::SubjectNotForCaller,
        Reason::ExchangeNotAllowed,
        Reason::ChainNotAllowed,
        Reason::ScopeNotAllowed,
        Reason::ActorMismatch,
        Reason::RateLimited,
        Reason::PathNotAllowed,
        Reason::AccountNotFound,
        Reason::AccountExists,
    ];

    /// The wire name, e.g. `"ACCESS_TOKEN_EXPIRED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidCredentials => "INVALID_CREDENTIALS",
            Reason::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            Reason::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Reason::AccessTokenMissing => "ACCESS_TOKEN_MISSING",
            Reason::AccessTokenInvalid => "ACCESS_TOKEN_INVALID",
            Reason::AccessTokenExpired => "ACCESS_TOKEN_EXPIRED",
            Reason::SessionRevoked => "SESSION_REVOKED",
            Reason::InsufficientScope => "INSUFFICIENT_SCOPE",
            Reason::InvalidRequest => "INVALID_REQUEST",
            Reason::StoreUnavailable => "STORE_UNAVAILABLE",
            Reason::SessionNotFound => "SESSION_NOT_FOUND",
            Reason::KeysUnavailable => "KEYS_UNAVAILABLE",
            Reason::RevocationsUnavailable => "REVOCATIONS_UNAVAILABLE",
            Reason::LoginThrottled => "LOGIN_THROTTLED",
            Reason::Overloaded => "OVERLOADED",
            Reason::WrongAudience => "WRONG_AUDIENCE",
            Reason::TokenBindingMismatch => "TOKEN_BINDING_MISMATCH",
            Reason::SubjectNotForCaller => "SUBJECT_NOT_FOR_CALLER",
            Reason::ExchangeNotAllowed => "EXCHANGE_NOT_ALLOWED",
            Reason::ChainNotAllowed => "CHAIN_NOT_ALLOWED",
            Reason::ScopeNotAllowed => "SCOPE_NOT_ALLOWED",
            Reason::ActorMismatch => "ACTOR_MISMATCH",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::PathNotAllowed => "PATH_NOT_ALLOWED",
            Reason::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Reason::AccountExists => "ACCOUNT_EXISTS",
        }
    }

    /// Parses a wire name back into a reason.
    pub fn from_wire(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The gRPC status code the contract pairs with this reason.
    pub fn code(self) -> Code {
        match self {
            Reason::InsufficientScope
            | Reason::WrongAudience
            | Reason::SubjectNotForCaller
            | Reason::ExchangeNotAllowed
            | Reason::ChainNotAllowed
            | Reason::ScopeNotAllowed
            | Reason::PathNotAllowed => Code::PermissionDenied,
            Reason::LoginThrottled | Reason::Overloaded | Reason::RateLimited => {
                Code::ResourceExhausted
            }
            Reason::InvalidRequest => Code::InvalidArgument,
            Reason::SessionNotFound | Reason::AccountNotFound => Code::NotFound,
            Reason::AccountExists => Code::AlreadyExists,
            Reason::StoreUnavailable | Reason::KeysUnavailable | Reason::RevocationsUnavailable => {
                Code::Unavailable
            }
            _ => Code::Unauthenticated,
        }
    }

    /// A `Status` with this reason's code, `message`, and the ErrorInfo detail.
    /// The message must never contain a secret.
    pub fn status(self, message: impl Into<String>) -> Status {
        let details = ErrorDetails::with_error_info(
            self.as_str(),
            ERROR_DOMAIN,
            HashMap::<String, String>::new(),
        );
        Status::with_error_details(self.code(), message, details)
    }

    /// Like [`status`](Self::status), about one field of the request rather
    /// than the caller's own token: the ErrorInfo's metadata says
    /// `field = <field>` (e.g. Exchange's `subject_token`: an expired
    /// subject is not a reason to renew the caller's token).
    pub fn status_about(self, field: &str, message: impl Into<String>) -> Status {
        let metadata = HashMap::from([("field".to_owned(), field.to_owned())]);
        let details = ErrorDetails::with_error_info(self.as_str(), ERROR_DOMAIN, metadata);
        Status::with_error_details(self.code(), message, details)
    }

    /// The request field a refusal is about ([`status_about`](Self::status_about)),
    /// if it names one.
    pub fn field_of(status: &Status) -> Option<String> {
        let info = status.get_details_error_info()?;
        if info.domain != ERROR_DOMAIN {
            return None;
        }
        info.metadata.get("field").cloned()
    }

    /// Like [`status`](Self::status), with a `google.rpc.RetryInfo` detail
    /// telling the caller how long to wait before trying again.
    pub fn status_retry_after(self, message: impl Into<String>, delay: Duration) -> Status {
        let mut details = ErrorDetails::with_error_info(
            self.as_str(),
            ERROR_DOMAIN,
            HashMap::<String, String>::new(),
        );
        details.set_retry_info(Some(delay));
        Status::with_error_details(self.code(), message, details)
    }

    /// The `google.rpc.RetryInfo` delay carried by `status`, if any.
    pub fn retry_delay(status: &Status) -> Option<Duration> {
        status.get_details_retry_info()?.retry_delay
    }

    /// The tokend reason carried by `status`, if it has one.
    pub fn of(status: &Status) -> Option<Reason> {
        let info = status.get_details_error_info()?;
        if info.domain != ERROR_DOMAIN {
            return None;
        }
        Reason::from_wire(&info.reason)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_a_status() {
        for reason in Reason::ALL {
            let status = reason.status("message");
            assert_eq!(status.code(), reason.code());
            assert_eq!(status.message(), "message");
            assert_eq!(Reason::of(&status), Some(reason));
            assert_eq!(Reason::from_wire(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn codes_follow_the_contract() {
        assert_eq!(Reason::InsufficientScope.code(), Code::PermissionDenied);
        assert_eq!(Reason::InvalidRequest.code(), Code::InvalidArgument);
        assert_eq!(Reason::StoreUnavailable.code(), Code::Unavailable);
        assert_eq!(Reason::AccessTokenExpired.code(), Code::Unauthenticated);
    }

    #[test]
    fn retry_delays_travel_with_the_reason() {
        let status =
            Reason::LoginThrottled.status_retry_after("slow down", Duration::from_millis(1500));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(Reason::of(&status), Some(Reason::LoginThrottled));
        assert_eq!(
            Reason::retry_delay(&status),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(Reason::retry_delay(&Reason::Overloaded.status("x")), None);
    }

    #[test]
    fn a_refusal_about_a_field_names_it() {
        let status = Reason::AccessTokenExpired.status_about("subject_token", "x");
        assert_eq!(Reason::of(&status), Some(Reason::AccessTokenExpired));
        assert_eq!(Reason::field_of(&status).as_deref(), Some("subject_token"));
        assert_eq!(
            Reason::field_of(&Reason::AccessTokenExpired.status("x")),
            None
        );
    }

    #[test]
    fn a_status_without_error_info_has_no_reason() {
        assert_eq!(Reason::of(&Status::unauthenticated("x")), None);
    }
}

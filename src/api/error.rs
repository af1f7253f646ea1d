//! The one place where internal errors become gRPC statuses, each with a
//! `google.rpc.ErrorInfo` carrying the contract's reason.

use tokend_interceptor::Reason;
use tonic::Status;
use tracing::error;

use crate::authority::AuthError;
use crate::credentials::HashError;
use crate::store::StoreError;

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        match err {
            AuthError::InvalidCredentials => {
                Reason::InvalidCredentials.status("invalid credentials")
            }
            AuthError::LoginThrottled(wait) => Reason::LoginThrottled.status_retry_after(
                "too many failed logins; retry after the RetryInfo delay",
                wait,
            ),
            AuthError::Hash(HashError::Overloaded { retry_after }) => Reason::Overloaded
                .status_retry_after(
                    "too many logins in progress; retry after the RetryInfo delay",
                    retry_after,
                ),
            AuthError::TooManyWatchers(err) => Reason::Overloaded.status_retry_after(
                format!("{err}; retry, perhaps on another replica"),
                std::time::Duration::from_secs(5),
            ),
            AuthError::WrongAudience => Reason::WrongAudience.status(
                "this method needs an access token whose audience is tokend's issuer name; \
                 log in asking for that audience",
            ),
            AuthError::RefreshTokenInvalid => Reason::RefreshTokenInvalid
                .status("refresh token is invalid, expired or revoked; log in again"),
            AuthError::RefreshTokenReused => Reason::RefreshTokenReused
                .status("refresh token was already used; the session is revoked; log in again"),
            AuthError::InvalidRequest(message) => Reason::InvalidRequest.status(message),
            AuthError::SessionRevoked => Reason::SessionRevoked
                .status("the session of this access token was revoked; log in again"),
            AuthError::SessionNotFound => Reason::SessionNotFound.status("no such session"),
            AuthError::SubjectToken(err) => err
                .reason()
                .status_about("subject_token", format!("subject_token: {err}")),
            err @ (AuthError::SubjectNotForCaller | AuthError::ExchangeNotAllowed) => {
                let reason = err.reason().unwrap_or(Reason::ExchangeNotAllowed);
                reason.status(err.to_string())
            }
            AuthError::ChainNotAllowed(message) => Reason::ChainNotAllowed.status(message),
            AuthError::NoCaller(message) => Reason::AccessTokenMissing.status(message),
            AuthError::ScopeNotAllowed(message) => Reason::ScopeNotAllowed.status(message),
            AuthError::RateLimited(wait) => Reason::RateLimited.status_retry_after(
                "too soon after the account's last cut-off; retry after the RetryInfo delay",
                wait,
            ),
            err @ AuthError::InsufficientScope(_) => {
                Reason::InsufficientScope.status(err.to_string())
            }
            AuthError::Store(StoreError::Unavailable(detail)) => {
                error!(%detail, "session store unavailable");
                Reason::StoreUnavailable.status("session store unavailable; retry later")
            }
            AuthError::Store(StoreError::TimedOut) => {
                error!("session store did not answer in time");
                Reason::StoreUnavailable.status("session store unavailable; retry later")
            }
            AuthError::Store(err @ StoreError::Corrupt(_)) => {
                error!(error = %err, "session store error");
                Status::internal("internal error")
            }
            AuthError::Hash(err) => {
                error!(error = %err, "password hashing error");
                Status::internal("internal error")
            }
            AuthError::Sign(err) => {
                error!(error = %err, "signing error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn the_audit_logs_reason_is_the_one_callers_get() {
        let errors = [
            AuthError::InvalidCredentials,
            AuthError::LoginThrottled(std::time::Duration::from_secs(1)),
            AuthError::RefreshTokenInvalid,
            AuthError::RefreshTokenReused,
            AuthError::InvalidRequest("x".into()),
            AuthError::SessionRevoked,
            AuthError::WrongAudience,
            AuthError::SessionNotFound,
            AuthError::SubjectToken(tokend_interceptor::AuthError::Expired),
            AuthError::SubjectNotForCaller,
            AuthError::ExchangeNotAllowed,
            AuthError::NoCaller("x"),
            AuthError::ChainNotAllowed("x".into()),
            AuthError::ScopeNotAllowed("x".into()),
            AuthError::Store(StoreError::Unavailable("down".into())),
            AuthError::Store(StoreError::TimedOut),
            AuthError::Store(StoreError::Corrupt("?".into())),
            AuthError::Hash(HashError::Overloaded {
                retry_after: std::time::Duration::from_secs(1),
            }),
            AuthError::Hash(HashError::PoolGone),
            AuthError::Sign(crate::tokens::access::SignError),
            AuthError::TooManyWatchers(crate::revocations::TooManyWatchers::Replica(1)),
        ];
        for err in errors {
            let expected = err.reason();
            let status = Status::from(err);
            assert_eq!(Reason::of(&status), expected, "{status:?}");
        }
    }

    #[test]
    fn each_error_maps_to_its_reason() {
        let cases = [
            (AuthError::InvalidCredentials, Reason::InvalidCredentials),
            (AuthError::RefreshTokenInvalid, Reason::RefreshTokenInvalid),
            (AuthError::RefreshTokenReused, Reason::RefreshTokenReused),
            (
                AuthError::InvalidRequest("x".into()),
                Reason::InvalidRequest,
            ),
            (
                AuthError::Store(StoreError::Unavailable("down".into())),
                Reason::StoreUnavailable,
            ),
            (AuthError::WrongAudience, Reason::WrongAudience),
            (AuthError::SessionRevoked, Reason::SessionRevoked),
            (AuthError::SessionNotFound, Reason::SessionNotFound),
        ];
        for (err, reason) in cases {
            let status = Status::from(err);
            assert_eq!(Reason::of(&status), Some(reason));
            assert_eq!(status.code(), reason.code());
        }
    }

    #[test]
    fn throttles_and_overloads_say_when_to_retry() {
        let wait = std::time::Duration::from_millis(2500);
        for (err, reason) in [
            (AuthError::LoginThrottled(wait), Reason::LoginThrottled),
            (
                AuthError::Hash(HashError::Overloaded { retry_after: wait }),
                Reason::Overloaded,
            ),
        ] {
            let status = Status::from(err);
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert_eq!(Reason::of(&status), Some(reason));
            assert_eq!(Reason::retry_delay(&status), Some(wait));
        }
    }

    #[test]
    fn internal_errors_say_nothing_more() {
        let status = Status::from(AuthError::Store(StoreError::Corrupt("details".into())));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}

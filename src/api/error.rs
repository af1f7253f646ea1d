//! The one place where internal errors become gRPC statuses, each with a
//! `google.rpc.ErrorInfo` carrying the contract's reason. What to answer is
//! decided by [`AuthError`] itself (its reason, retry delay, field and
//! message); this module only builds the status from that, and logs the
//! failures that are tokend's own.

use tokend_interceptor::Reason;
use tonic::Status;
use tracing::error;

use crate::authority::AuthError;

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        let Some(reason) = err.reason() else {
            error!(error = %err, "internal error");
            return Status::internal(err.caller_message());
        };
        if reason == Reason::StoreUnavailable {
            error!(error = %err, "session store unavailable");
        }
        let message = err.caller_message();
        match (err.retry_after(), err.field()) {
            (Some(wait), _) => reason.status_retry_after(message, wait),
            (None, Some(field)) => reason.status_about(field, message),
            (None, None) => reason.status(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::credentials::HashError;
    use crate::store::StoreError;

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

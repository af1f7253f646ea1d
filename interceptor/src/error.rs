//! Why a call was refused, and the one mapping from that to a gRPC status:
//! [`AuthError`] (what the verifier found), [`Reason`] (the contract's
//! reason strings, read back from a status with [`Reason::of`]).

use tonic::Status;

pub use crate::reason::{ERROR_DOMAIN, Reason};

/// What is wrong with an access token (for `ACCESS_TOKEN_INVALID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// Not a `v4.public` token of ours: wrong version or purpose, bad
    /// encoding, oversize, no footer.
    #[error("access token is malformed")]
    Malformed,
    /// The footer names a key this service does not know.
    #[error("access token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("access token signature is invalid")]
    BadSignature,
    /// The claims are not tokend's claims.
    #[error("access token claims are malformed")]
    BadClaims,
    /// Issued by someone else.
    #[error("access token has the wrong issuer")]
    WrongIssuer,
    /// Issued for another service.
    #[error("access token is for another audience")]
    WrongAudience,
    /// `nbf` is in the future (beyond the leeway).
    #[error("access token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway): no token is issued later
    /// than now.
    #[error("access token claims to be issued in the future")]
    IssuedInTheFuture,
}

/// Why a call was refused. Converts to a `Status` with the contract's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `authorization: Bearer ...` metadata.
    #[error("missing access token: send `authorization: Bearer <token>` metadata")]
    Missing,
    /// The token is not acceptable; see [`Invalid`].
    #[error("{0}")]
    Invalid(Invalid),
    /// The token (with a valid signature) is past `exp` plus the leeway.
    #[error("access token expired: refresh it and retry")]
    Expired,
    /// The token's session was revoked.
    #[error("the session of this access token was revoked: log in again")]
    Revoked,
    /// The token lacks a scope the method needs.
    #[error("access token lacks scope {0:?}")]
    InsufficientScope(String),
    /// No verification keys were loaded yet (tokend unreachable since start).
    #[error("verification keys are not available yet: retry shortly")]
    KeysUnavailable,
    /// The revocation feed has been down for too long and the verifier is
    /// configured to fail closed.
    #[error("revocation state is stale: retry shortly")]
    RevocationsStale,
    /// The token is bound to a client certificate the caller did not present.
    #[error("this token is bound to a client certificate: present it over mTLS")]
    BindingMismatch,
    /// A delegated token presented by a service other than its outermost
    /// actor (over mTLS, or without the certificate it is bound to).
    #[error("this delegated token was not obtained by the calling service")]
    ActorMismatch,
    /// The token's delegation chain is not allowed for this method.
    #[error("{0}")]
    ChainNotAllowed(String),
}

impl AuthError {
    /// The contract reason for this error.
    pub fn reason(&self) -> Reason {
        match self {
            AuthError::Missing => Reason::AccessTokenMissing,
            AuthError::Invalid(_) => Reason::AccessTokenInvalid,
            AuthError::Expired => Reason::AccessTokenExpired,
            AuthError::Revoked => Reason::SessionRevoked,
            AuthError::InsufficientScope(_) => Reason::InsufficientScope,
            AuthError::KeysUnavailable => Reason::KeysUnavailable,
            AuthError::RevocationsStale => Reason::RevocationsUnavailable,
            AuthError::BindingMismatch => Reason::TokenBindingMismatch,
            AuthError::ActorMismatch => Reason::ActorMismatch,
            AuthError::ChainNotAllowed(_) => Reason::ChainNotAllowed,
        }
    }
}

impl From<Invalid> for AuthError {
    fn from(invalid: Invalid) -> AuthError {
        AuthError::Invalid(invalid)
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        err.reason().status(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn statuses_carry_the_contract_reasons() {
        let cases = [
            (
                AuthError::Missing,
                Reason::AccessTokenMissing,
                Code::Unauthenticated,
            ),
            (
                AuthError::Invalid(Invalid::BadSignature),
                Reason::AccessTokenInvalid,
                Code::Unauthenticated,
            ),
            (
                AuthError::Expired,
                Reason::AccessTokenExpired,
                Code::Unauthenticated,
            ),
            (
                AuthError::Revoked,
                Reason::SessionRevoked,
                Code::Unauthenticated,
            ),
            (
                AuthError::InsufficientScope("admin".into()),
                Reason::InsufficientScope,
                Code::PermissionDenied,
            ),
            (
                AuthError::KeysUnavailable,
                Reason::KeysUnavailable,
                Code::Unavailable,
            ),
        ];
        for (err, reason, code) in cases {
            let status = Status::from(err);
            assert_eq!(Reason::of(&status), Some(reason));
            assert_eq!(status.code(), code);
        }
    }
}

//! Introspection (in the spirit of RFC 7662): what a watching verifier
//! would decide of an access token now, for services that cannot verify
//! PASETO themselves or want to know why a call was refused.
//!
//! The decision is the interceptor's own verifier over tokend's published
//! keys and a revocation list this replica keeps from its own feed (the
//! messages a watching resource service receives), so it costs a cached
//! verification and no store call. Refresh tokens (for callers with
//! [`INTROSPECT_ANY_SCOPE`] only) are looked up in the store, never
//! consumed. Callers: a service client's own token for tokend with
//! [`INTROSPECT_SCOPE`]; it learns only about tokens of its own audience
//! unless it also has [`INTROSPECT_ANY_SCOPE`].

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokend_interceptor::token::{Footer, MAX_TOKEN_LEN, TOKEN_HEADER};
use tokend_interceptor::{Claims, Reason};

use super::{AuthError, Authority};
use crate::store::SessionInfo;
use crate::tokens::RefreshToken;
use crate::tokens::refresh::REFRESH_TOKEN_PREFIX;

pub use crate::accounts::rules::{INTROSPECT_ANY_SCOPE, INTROSPECT_SCOPE};

/// What introspection found.
#[derive(Debug)]
pub enum Introspection {
    /// A verifier of its audience would accept it now; its claims, and the
    /// id of the key that signed it.
    Active {
        /// The verified claims.
        claims: Arc<Claims>,
        /// The PASERK id of the signing key.
        key_id: String,
    },
    /// A refresh token that is its live session's current one (only for
    /// callers with [`INTROSPECT_ANY_SCOPE`]).
    Refresh(SessionInfo),
    /// Not active; why, when the caller may know.
    Inactive(Option<Reason>),
}

impl Authority {
    /// Introspects `token` for `caller` (the verified claims of its own
    /// token, which the auth layer checked has [`INTROSPECT_SCOPE`]).
    pub async fn introspect(
        &self,
        caller: &Claims,
        token: &str,
    ) -> Result<Introspection, AuthError> {
        if !caller.has_scope(INTROSPECT_SCOPE) {
            return Err(AuthError::InsufficientScope(INTROSPECT_SCOPE.to_owned()));
        }
        self.require_live_service(caller, || {
            AuthError::InsufficientScope(format!(
                "{INTROSPECT_SCOPE} (introspection is for service clients, not users)"
            ))
        })
        .await?;
        if token.is_empty() {
            return Err(AuthError::InvalidRequest("token is required".into()));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidRequest(format!(
                "token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let any = caller.has_scope(INTROSPECT_ANY_SCOPE);
        if token.starts_with(REFRESH_TOKEN_PREFIX) {
            return self.introspect_refresh(token, any).await;
        }
        match self.introspection_verifier.verify_claims(token) {
            Ok(claims) if any || claims.aud() == caller.sub() => Ok(Introspection::Active {
                key_id: key_id(token).unwrap_or_default(),
                claims,
            }),
            Ok(_) => Ok(Introspection::Inactive(None)),
            Err(err) => {
                // The reason is withheld only for a token that names
                // another audience: nothing else is anybody's secret.
                let foreign = readable_audience(token).is_some_and(|aud| aud != caller.sub());
                Ok(Introspection::Inactive(
                    (any || !foreign).then(|| err.reason()),
                ))
            }
        }
    }
}

impl Authority {
    /// A refresh token, for a caller with [`INTROSPECT_ANY_SCOPE`] (anyone
    /// else learns nothing): active while it is its live session's current
    /// token. Read from the store, never consumed or rotated.
    async fn introspect_refresh(&self, token: &str, any: bool) -> Result<Introspection, AuthError> {
        if !any {
            return Ok(Introspection::Inactive(None));
        }
        let Some(presented) = RefreshToken::parse(token) else {
            return Ok(Introspection::Inactive(Some(Reason::RefreshTokenInvalid)));
        };
        match self
            .store
            .current_session(presented.session_id(), presented.hash())
            .await?
        {
            Some(session) => Ok(Introspection::Refresh(session)),
            None => Ok(Introspection::Inactive(Some(Reason::RefreshTokenInvalid))),
        }
    }
}

/// The id of the key that signed `token`, from its footer (authenticated by
/// the signature, so read after verification only).
fn key_id(token: &str) -> Option<String> {
    let (_, footer) = token.strip_prefix(TOKEN_HEADER)?.rsplit_once('.')?;
    let footer = URL_SAFE_NO_PAD.decode(footer).ok()?;
    let footer: Footer = serde_json::from_slice(&footer).ok()?;
    Some(footer.kid)
}

/// The `aud` a token claims, read without verifying it: only to decide
/// whether a refusal's reason may be told (a forged `aud` gains nothing:
/// its token is invalid, which is no secret).
fn readable_audience(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Audience {
        aud: String,
    }
    let (payload, _) = token.strip_prefix(TOKEN_HEADER)?.split_once('.')?;
    let signed = URL_SAFE_NO_PAD.decode(payload).ok()?;
    // v4.public: the message, then a 64-byte Ed25519 signature.
    let message = signed.get(..signed.len().checked_sub(64)?)?;
    let claims: Audience = serde_json::from_slice(message).ok()?;
    Some(claims.aud)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audience_of_a_readable_token_is_read_and_garbage_is_not() {
        let claims = br#"{"aud":"orders","sub":"alice"}"#;
        let mut signed = claims.to_vec();
        signed.extend_from_slice(&[0u8; 64]);
        let footer = URL_SAFE_NO_PAD.encode(br#"{"kid":"k4.pid.x"}"#);
        let token = format!("{TOKEN_HEADER}{}.{footer}", URL_SAFE_NO_PAD.encode(&signed));
        assert_eq!(readable_audience(&token).as_deref(), Some("orders"));
        assert_eq!(key_id(&token).as_deref(), Some("k4.pid.x"));
        for garbage in [
            "",
            "v4.public.",
            "v4.public.!!!.x",
            "v4.public.AAAA.x",
            "x.y.z",
        ] {
            assert_eq!(readable_audience(garbage), None, "{garbage}");
        }
    }
}

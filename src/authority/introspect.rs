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
use tokend_interceptor::certs::CertificateIdentity;
use tokend_interceptor::token::{Footer, MAX_TOKEN_LEN, TOKEN_HEADER};
use tokend_interceptor::{Claims, Reason};

use super::{AuthError, Authority};
use crate::accounts::CertifiedClient;
use crate::store::SessionInfo;
use crate::tokens::RefreshToken;
use crate::tokens::refresh::REFRESH_TOKEN_PREFIX;

pub use crate::accounts::rules::{INTROSPECT_ANY_SCOPE, INTROSPECT_SCOPE};

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub enum Introspector<'a> {
    /// A service client's own token (the auth layer verified it).
    Token(&'a Claims),
    /// No token: the client certificate the connection presented over mTLS.
    Certificate(&'a CertificateIdentity),
}

/// A caller allowed to introspect: its client id, and whether it may look
/// at any audience's tokens.
struct Allowed {
    client_id: String,
    any: bool,
}

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
    /// Introspects `token` for `caller`: a service client granted
    /// [`INTROSPECT_SCOPE`], by its own token or its certificate.
    pub async fn introspect(
        &self,
        caller: Introspector<'_>,
        token: &str,
    ) -> Result<Introspection, AuthError> {
        let Allowed { client_id, any } = self.introspector(caller).await?;
        if token.is_empty() {
            return Err(AuthError::InvalidRequest("token is required".into()));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidRequest(format!(
                "token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        if token.starts_with(REFRESH_TOKEN_PREFIX) {
            return self.introspect_refresh(token, any).await;
        }
        match self.introspection_verifier.verify_claims(token) {
            Ok(claims) if any || claims.aud() == client_id => Ok(Introspection::Active {
                key_id: key_id(token).unwrap_or_default(),
                claims,
            }),
            Ok(_) => Ok(Introspection::Inactive(None)),
            Err(err) => {
                // The reason is withheld only for a token that names
                // another audience: nothing else is anybody's secret.
                let foreign = readable_audience(token).is_some_and(|aud| aud != client_id);
                Ok(Introspection::Inactive(
                    (any || !foreign).then(|| err.reason()),
                ))
            }
        }
    }
}

impl Authority {
    /// Who `caller` is, if it may introspect: a live service client
    /// granted [`INTROSPECT_SCOPE`].
    async fn introspector(&self, caller: Introspector<'_>) -> Result<Allowed, AuthError> {
        let missing = || AuthError::InsufficientScope(INTROSPECT_SCOPE.to_owned());
        match caller {
            Introspector::Token(claims) => {
                if !claims.has_scope(INTROSPECT_SCOPE) {
                    return Err(missing());
                }
                self.require_live_service(claims, || {
                    AuthError::InsufficientScope(format!(
                        "{INTROSPECT_SCOPE} (introspection is for service clients, not users)"
                    ))
                })
                .await?;
                Ok(Allowed {
                    client_id: claims.sub().to_owned(),
                    any: claims.has_scope(INTROSPECT_ANY_SCOPE),
                })
            }
            Introspector::Certificate(identity) => {
                match self
                    .accounts
                    .certified_client(&self.cert_naming, identity)
                    .await?
                {
                    CertifiedClient::One { id, state } if state.active => {
                        let granted =
                            |scope: &str| state.scope.split_ascii_whitespace().any(|s| s == scope);
                        if !granted(INTROSPECT_SCOPE) {
                            return Err(missing());
                        }
                        Ok(Allowed {
                            any: granted(INTROSPECT_ANY_SCOPE),
                            client_id: id,
                        })
                    }
                    CertifiedClient::One { .. } => Err(AuthError::SessionRevoked),
                    CertifiedClient::None => Err(AuthError::NoCaller(
                        "the client certificate names no service client; present the \
                         service's own access token",
                    )),
                    CertifiedClient::Several => Err(AuthError::NoCaller(
                        "the client certificate names several service clients; present the \
                         service's own access token",
                    )),
                }
            }
        }
    }

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

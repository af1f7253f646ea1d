//! Access tokens: PASETO v4.public over the shared [`Claims`], with a footer
//! naming the signing key.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pasetors::version4::PublicToken;
use rand::RngCore;
use tokend_interceptor::Claims;
use tokend_interceptor::token::{Actor, Footer};

use super::keys::{PublishedKey, SigningKey};

/// Signing failed; only possible with a broken key.
#[derive(Debug, thiserror::Error)]
#[error("could not sign an access token")]
pub struct SignError;

/// What an access token is issued for.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The user name or service-client id.
    pub subject: &'a str,
    /// The audience the token is for.
    pub audience: &'a str,
    /// Space-separated scopes.
    pub scope: &'a str,
    /// The refresh session, if any.
    pub session_id: Option<&'a str>,
    /// The account version the session (or client login) began under.
    pub account_version: i64,
    /// The thumbprint of the client certificate the token is bound to
    /// (RFC 8705), for service clients that logged in over mTLS.
    pub bound_to: Option<&'a str>,
    /// The actor chain of a delegated token (RFC 8693 `act`), from Exchange.
    pub act: Option<&'a Actor>,
}

/// A signed access token and when it expires.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The PASETO string.
    pub token: String,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
    /// The token's unique id, for logs.
    pub jti: String,
}

/// Signs access tokens with the active key.
#[derive(Debug)]
pub struct AccessTokenIssuer {
    key: SigningKey,
    footer: Vec<u8>,
    issuer: String,
    ttl: Duration,
}

impl AccessTokenIssuer {
    /// An issuer signing with `key`, naming itself `issuer`, issuing tokens that
    /// live for `ttl`.
    pub fn new(key: SigningKey, issuer: String, ttl: Duration) -> AccessTokenIssuer {
        let footer = Footer {
            kid: key.published().key_id.clone(),
        };
        // A struct of one string always serializes.
        let footer = serde_json::to_vec(&footer).unwrap_or_default();
        AccessTokenIssuer {
            key,
            footer,
            issuer,
            ttl,
        }
    }

    /// The key tokens are signed with.
    pub fn active_key(&self) -> &PublishedKey {
        self.key.published()
    }

    /// How long tokens live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs a token for `grant`, issued at `now_ms`, expiring after the
    /// configured lifetime but never after `not_after_ms` (the session's end).
    pub fn issue(
        &self,
        grant: Grant<'_>,
        now_ms: i64,
        not_after_ms: Option<i64>,
    ) -> Result<AccessToken, SignError> {
        let now = now_ms.div_euclid(1000);
        let ttl_ms = crate::clock::millis(self.ttl);
        // Claims have whole seconds: round the expiry up, so a token never
        // lives shorter than the configured lifetime (at most 1 s longer).
        let mut expires_at = now_ms
            .saturating_add(ttl_ms)
            .saturating_add(999)
            .div_euclid(1000);
        if let Some(limit) = not_after_ms {
            expires_at = expires_at.min(limit.div_euclid(1000));
        }
        let mut claims = Claims::new(
            self.issuer.as_str(),
            grant.subject,
            grant.audience,
            random_id(),
            now,
            expires_at,
        )
        .with_scope(grant.scope)
        .with_account_version(grant.account_version);
        if let Some(sid) = grant.session_id {
            claims = claims.with_session(sid);
        }
        if let Some(x5t) = grant.bound_to {
            claims = claims.with_confirmation(x5t);
        }
        if let Some(act) = grant.act {
            claims = claims.with_actor(act.clone());
        }
        let payload = serde_json::to_vec(&claims).map_err(|_| SignError)?;
        let token = PublicToken::sign(self.key.secret(), &payload, Some(&self.footer), None)
            .map_err(|_| SignError)?;
        Ok(AccessToken {
            token,
            expires_at,
            jti: claims.jti().to_owned(),
        })
    }
}

/// 128 random bits, base64url: token and session ids.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use pasetors::keys::AsymmetricPublicKey;
    use pasetors::token::UntrustedToken;
    use pasetors::version4::V4;

    use super::*;

    #[test]
    fn tokens_verify_with_the_published_key_and_carry_the_claims() {
        let issuer = AccessTokenIssuer::new(
            SigningKey::generate().unwrap(),
            "tokend".into(),
            Duration::from_secs(900),
        );
        let grant = Grant {
            subject: "alice",
            audience: "internal",
            scope: "read",
            session_id: Some("sid1"),
            account_version: 42,
            bound_to: None,
            act: None,
        };
        let issued = issuer.issue(grant, 1_700_000_000_123, None).unwrap();
        // Rounded up: never shorter than the lifetime.
        assert_eq!(issued.expires_at, 1_700_000_901);
        let on_the_second = issuer.issue(grant, 1_700_000_000_000, None).unwrap();
        assert_eq!(on_the_second.expires_at, 1_700_000_900);

        let public =
            AsymmetricPublicKey::<V4>::try_from(issuer.active_key().public_key.as_str()).unwrap();
        let untrusted = UntrustedToken::try_from(issued.token.as_str()).unwrap();
        let trusted = PublicToken::verify(&public, &untrusted, None, None).unwrap();
        let claims: Claims = serde_json::from_str(trusted.payload()).unwrap();
        assert_eq!(claims.sub(), "alice");
        assert_eq!(claims.iat(), 1_700_000_000);
        assert_eq!(claims.sid(), Some("sid1"));
        assert_eq!(claims.jti(), issued.jti);
        assert_eq!(claims.av(), Some(42));
        let footer: Footer = serde_json::from_slice(trusted.footer()).unwrap();
        assert_eq!(footer.kid, issuer.active_key().key_id);
    }

    #[test]
    fn expiry_never_outlives_the_session() {
        let issuer = AccessTokenIssuer::new(
            SigningKey::generate().unwrap(),
            "tokend".into(),
            Duration::from_secs(900),
        );
        let grant = Grant {
            subject: "a",
            audience: "b",
            scope: "",
            session_id: None,
            account_version: 0,
            bound_to: None,
            act: None,
        };
        let issued = issuer
            .issue(grant, 1_000_000_000_000, Some(1_000_000_060_000))
            .unwrap();
        assert_eq!(issued.expires_at, 1_000_000_060);
    }
}

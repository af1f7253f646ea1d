//! The access-token format, defined once: tokend signs these claims and this
//! crate verifies them.
//!
//! A token is PASETO `v4.public` (Ed25519): `v4.public.<payload+sig>.<footer>`,
//! both parts base64url without padding. The payload is the JSON of
//! [`Claims`]; the footer is the JSON of [`Footer`], naming the signing key.

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// The PASETO header every access token starts with.
pub const TOKEN_HEADER: &str = "v4.public.";

/// Longest access token accepted, in bytes. Ours are about 500 bytes; the
/// limit keeps a hostile header from costing more than a few microseconds.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Longest encoded footer accepted, in bytes, checked before it is decoded.
pub const MAX_FOOTER_LEN: usize = 256;

/// The `token_type` tokend returns, and the scheme of the `authorization` header.
pub const TOKEN_TYPE: &str = "Bearer";

/// The claims of a tokend access token.
///
/// Times are whole seconds since the Unix epoch here and RFC 3339 strings on
/// the wire, as PASETO prescribes. Read them with the accessors named after
/// the claims (`sub()`, `aud()`, `exp()`, ...); build new ones with
/// [`Claims::new`] and the `with_*` methods. The struct is
/// `#[non_exhaustive]` and its fields private, so a claim added later is not
/// a breaking change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Issuer: the tokend instance (`--issuer`).
    pub(crate) iss: String,
    /// Subject: the user name or service-client id.
    pub(crate) sub: String,
    /// Audience: the service (or group of services) the token is for.
    pub(crate) aud: String,
    /// Expiry, seconds since the epoch.
    #[serde(with = "rfc3339")]
    pub(crate) exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(with = "rfc3339")]
    pub(crate) iat: i64,
    /// Not before, seconds since the epoch.
    #[serde(with = "rfc3339")]
    pub(crate) nbf: i64,
    /// Unique token id, for logs and audits.
    pub(crate) jti: String,
    /// The refresh session this token belongs to; absent for service clients,
    /// which have no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sid: Option<String>,
    /// Granted scopes, space-separated.
    #[serde(default)]
    pub(crate) scope: String,
    /// Account version: the version of the subject's account when its
    /// session began (users) or when it logged in (service clients). A
    /// subject cut-off (revoke-all, disable, delete, password change,
    /// secret rotation) raises the account's version and revokes every token
    /// with a lower one, however recently it was issued. Absent in tokens of
    /// older tokend versions, which cut-offs judge by `iat` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) av: Option<i64>,
    /// Confirmation (RFC 8705): the client certificate the token is bound
    /// to. A bound token is only accepted from a caller presenting that
    /// certificate over mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cnf: Option<Confirmation>,
    /// Actor (RFC 8693 delegation): the service that obtained this token
    /// for the subject through `Exchange`, nesting the actors before it.
    /// Absent for tokens the subject obtained itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) act: Option<Actor>,
}

/// Longest actor chain a token may carry (RFC 8693 `act` nesting).
/// tokend never issues deeper chains; a deeper one is malformed.
pub const MAX_CHAIN_DEPTH: usize = 8;

/// One actor of a delegated token (RFC 8693 `act`): the service client that
/// exchanged the token, and the actor before it, if the token it exchanged
/// was delegated already. Read with the accessors named after its claims;
/// `#[non_exhaustive]`, like [`Claims`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Actor {
    /// The actor's service-client id.
    pub(crate) sub: String,
    /// The actor's account version when it logged in: an actor cut-off
    /// (`RevokedActor`) revokes every token it exchanged under a lower one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) av: Option<i64>,
    /// The actor before this one, for chains of more than one hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) act: Option<Box<Actor>>,
}

impl Actor {
    /// The service client `sub`, logged in under the account version `av`
    /// (if known), with no actor before it.
    pub fn new(sub: impl Into<String>, av: Option<i64>) -> Actor {
        Actor {
            sub: sub.into(),
            av,
            act: None,
        }
    }

    /// With `previous` as the actor before this one (a chain of hops).
    pub fn with_previous(mut self, previous: Actor) -> Actor {
        self.act = Some(Box::new(previous));
        self
    }

    /// The actor's service-client id (`sub`).
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The actor's account version when it logged in (`av`).
    pub fn av(&self) -> Option<i64> {
        self.av
    }

    /// The actor before this one (`act`), if any.
    pub fn act(&self) -> Option<&Actor> {
        self.act.as_deref()
    }

    /// This actor and the ones before it, outermost (this one) first.
    pub fn chain(&self) -> ActorChain<'_> {
        ActorChain { next: Some(self) }
    }
}

/// The actors of a delegated token, outermost (the service presenting the
/// token) first: see [`Claims::actors`].
#[derive(Debug, Clone)]
pub struct ActorChain<'a> {
    next: Option<&'a Actor>,
}

impl<'a> Iterator for ActorChain<'a> {
    type Item = &'a Actor;

    fn next(&mut self) -> Option<&'a Actor> {
        let current = self.next?;
        self.next = current.act.as_deref();
        Some(current)
    }
}

/// What a certificate-bound token is bound to (RFC 8705 `cnf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Confirmation {
    /// base64url (no padding) of the SHA-256 of the client certificate's
    /// DER: see [`thumbprint`](crate::certs::thumbprint).
    #[serde(rename = "x5t#S256")]
    pub(crate) x5t_s256: String,
}

impl Confirmation {
    /// Bound to the certificate whose thumbprint is `x5t_s256`.
    pub fn new(x5t_s256: impl Into<String>) -> Confirmation {
        Confirmation {
            x5t_s256: x5t_s256.into(),
        }
    }

    /// The certificate's thumbprint (`x5t#S256`): base64url (no padding)
    /// of the SHA-256 of its DER.
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }
}

impl Claims {
    /// Claims of a new token for `sub`, issued by `iss` for `aud`, with the
    /// id `jti`, valid from `iat` (also its `nbf`) until `exp` (seconds
    /// since the epoch); no session, scopes, binding or actor until the
    /// `with_*` methods add them.
    pub fn new(
        iss: impl Into<String>,
        sub: impl Into<String>,
        aud: impl Into<String>,
        jti: impl Into<String>,
        iat: i64,
        exp: i64,
    ) -> Claims {
        Claims {
            iss: iss.into(),
            sub: sub.into(),
            aud: aud.into(),
            exp,
            iat,
            nbf: iat,
            jti: jti.into(),
            sid: None,
            scope: String::new(),
            av: None,
            cnf: None,
            act: None,
        }
    }

    /// With the refresh session `sid`.
    pub fn with_session(mut self, sid: impl Into<String>) -> Claims {
        self.sid = Some(sid.into());
        self
    }

    /// With the space-separated scopes `scope`.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Claims {
        self.scope = scope.into();
        self
    }

    /// With the account version `av` (see [`av`](Self::av)).
    pub fn with_account_version(mut self, av: i64) -> Claims {
        self.av = Some(av);
        self
    }

    /// Bound to the client certificate whose thumbprint is `x5t_s256`.
    pub fn with_confirmation(mut self, x5t_s256: impl Into<String>) -> Claims {
        self.cnf = Some(Confirmation {
            x5t_s256: x5t_s256.into(),
        });
        self
    }

    /// Delegated: obtained for the subject by `act` (RFC 8693).
    pub fn with_actor(mut self, act: Actor) -> Claims {
        self.act = Some(act);
        self
    }

    /// For the audience `aud` instead.
    pub fn with_audience(mut self, aud: impl Into<String>) -> Claims {
        self.aud = aud.into();
        self
    }

    /// Not valid before `nbf` (seconds since the epoch; `iat` by default).
    pub fn with_not_before(mut self, nbf: i64) -> Claims {
        self.nbf = nbf;
        self
    }

    /// Issuer (`iss`): the tokend instance (`--issuer`).
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// Subject (`sub`): the user name or service-client id.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// Audience (`aud`): the service (or group of services) it is for.
    pub fn aud(&self) -> &str {
        &self.aud
    }

    /// Expiry (`exp`), seconds since the epoch.
    pub fn exp(&self) -> i64 {
        self.exp
    }

    /// Issued at (`iat`), seconds since the epoch.
    pub fn iat(&self) -> i64 {
        self.iat
    }

    /// Not before (`nbf`), seconds since the epoch.
    pub fn nbf(&self) -> i64 {
        self.nbf
    }

    /// The token's unique id (`jti`), for logs and audits.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// The refresh session (`sid`); `None` for service clients.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// The granted scopes (`scope`), space-separated; see
    /// [`scopes`](Self::scopes).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The account version (`av`) the token was issued under: a cut-off of
    /// the account raises it and revokes every token with a lower one.
    /// `None` in tokens of older tokend versions (judged by `iat`).
    pub fn av(&self) -> Option<i64> {
        self.av
    }

    /// The certificate binding (`cnf`, RFC 8705), if the token is bound.
    pub fn cnf(&self) -> Option<&Confirmation> {
        self.cnf.as_ref()
    }

    /// The actor (`act`, RFC 8693), if the token is delegated; see
    /// [`actors`](Self::actors).
    pub fn act(&self) -> Option<&Actor> {
        self.act.as_ref()
    }

    /// The granted scopes, one by one.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// Refuses the token unless it grants every one of `scopes`, naming the
    /// first one missing ([`AuthError::InsufficientScope`]): the one scope
    /// check of every enforcement point (the auth layer, the interceptor,
    /// tokend-gate).
    pub fn require_scopes<S: AsRef<str>>(&self, scopes: &[S]) -> Result<(), AuthError> {
        match scopes.iter().find(|s| !self.has_scope(s.as_ref())) {
            Some(missing) => Err(AuthError::InsufficientScope(missing.as_ref().to_owned())),
            None => Ok(()),
        }
    }

    /// The actors of a delegated token, outermost first (the service that
    /// exchanged it last, which presents it); empty for a token the
    /// subject obtained itself.
    pub fn actors(&self) -> ActorChain<'_> {
        ActorChain {
            next: self.act.as_ref(),
        }
    }

    /// The service that obtained this token for its subject (the outermost
    /// actor), if it is delegated.
    pub fn outermost_actor(&self) -> Option<&str> {
        self.act.as_ref().map(|a| a.sub.as_str())
    }

    /// Whether the token was obtained through `Exchange` (it has an `act`).
    pub fn is_delegated(&self) -> bool {
        self.act.is_some()
    }

    /// How many actors the token carries (0: not delegated).
    pub fn chain_depth(&self) -> usize {
        self.actors().count()
    }
}

/// The footer of a tokend access token: which key signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    /// PASERK `k4.pid` of the signing key.
    pub kid: String,
}

/// The token in `authorization: Bearer <token>` metadata (what the auth
/// layer and interceptor verify, and what a service calls onwards with).
#[cfg(any(feature = "server", feature = "client"))]
pub(crate) fn bearer_from_metadata(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<&str, crate::error::AuthError> {
    parse_bearer(
        metadata
            .get("authorization")
            .map(|v| v.to_str().map_err(|_| ())),
    )
}

/// `value` is the header as text, or `Err` when it is not visible ASCII.
/// The scheme is case-insensitive; anything else counts as no token.
#[cfg(any(feature = "server", feature = "client"))]
pub(crate) fn parse_bearer(
    value: Option<Result<&str, ()>>,
) -> Result<&str, crate::error::AuthError> {
    use crate::error::{AuthError, Invalid};
    let text = value
        .ok_or(AuthError::Missing)?
        .map_err(|()| Invalid::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case(TOKEN_TYPE) {
        return Err(AuthError::Missing);
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// RFC 3339 on the wire, seconds since the epoch in memory.
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    pub(crate) fn serialize<S: Serializer>(secs: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        let at = OffsetDateTime::from_unix_timestamp(*secs).map_err(S::Error::custom)?;
        let text = at.format(&Rfc3339).map_err(S::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = <&str>::deserialize(deserializer)?;
        let at = OffsetDateTime::parse(text, &Rfc3339).map_err(D::Error::custom)?;
        Ok(at.unix_timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "tokend".into(),
            sub: "alice".into(),
            aud: "internal".into(),
            exp: 1_700_000_900,
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            jti: "j".into(),
            sid: Some("s".into()),
            scope: "read write".into(),
            av: Some(1_700_000_000_000),
            cnf: None,
            act: None,
        }
    }

    #[test]
    fn times_are_rfc3339_on_the_wire() {
        let json = serde_json::to_string(&claims()).unwrap();
        assert!(json.contains(r#""exp":"2023-11-14T22:28:20Z""#), "{json}");
        let back: Claims = serde_json::from_str(&json).unwrap();
        assert_eq!(back, claims());
    }

    #[test]
    fn offsets_are_understood() {
        let json = r#"{"iss":"i","sub":"s","aud":"a","exp":"2023-11-14T23:28:20+01:00",
            "iat":"2023-11-14T22:13:20Z","nbf":"2023-11-14T22:13:20Z","jti":"j"}"#;
        let c: Claims = serde_json::from_str(json).unwrap();
        assert_eq!(c.exp, 1_700_000_900);
        assert_eq!(c.sid, None);
        assert_eq!(c.scope, "");
        assert_eq!(c.av, None);
    }

    #[test]
    fn a_session_less_token_has_no_sid_claim() {
        let mut c = claims();
        c.sid = None;
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("sid"));
    }

    #[test]
    fn bound_tokens_carry_an_rfc_8705_confirmation() {
        let mut c = claims();
        c.cnf = Some(Confirmation {
            x5t_s256: "abc".into(),
        });
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""cnf":{"x5t#S256":"abc"}"#), "{json}");
        assert_eq!(serde_json::from_str::<Claims>(&json).unwrap(), c);
        assert!(!serde_json::to_string(&claims()).unwrap().contains("cnf"));
    }

    #[test]
    fn delegated_tokens_carry_nested_actors_outermost_first() {
        let mut c = claims();
        assert!(!c.is_delegated());
        assert_eq!(c.chain_depth(), 0);
        c.act = Some(Actor {
            sub: "orders".into(),
            av: Some(3),
            act: Some(Box::new(Actor {
                sub: "gateway".into(),
                av: None,
                act: None,
            })),
        });
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains(r#""act":{"sub":"orders","av":3,"act":{"sub":"gateway"}}"#),
            "{json}"
        );
        let back: Claims = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let chain: Vec<&str> = back.actors().map(|a| a.sub.as_str()).collect();
        assert_eq!(chain, ["orders", "gateway"]);
        assert_eq!(back.outermost_actor(), Some("orders"));
        assert_eq!(back.chain_depth(), 2);
        assert!(!serde_json::to_string(&claims()).unwrap().contains("act"));
    }

    #[test]
    fn scopes_split_on_spaces() {
        let c = claims();
        assert!(c.has_scope("read"));
        assert!(c.has_scope("write"));
        assert!(!c.has_scope("rea"));
        assert!(!c.has_scope("admin"));
    }
}

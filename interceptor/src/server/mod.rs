//! Server side: reject calls without a valid access token.
//!
//! Two ways to wire it:
//! - [`AuthInterceptor`], a tonic `Interceptor` for one service, with the
//!   scopes every method of that service needs;
//! - [`AuthLayer`], a tower layer for a whole server, with a per-method
//!   [`Policy`] (a tonic interceptor cannot see the method path).
//!
//! Either way, handlers read the verified claims with [`ClaimsExt::claims`].

mod interceptor;
mod layer;
mod policy;

use std::ops::Deref;
use std::sync::Arc;

use crate::error::AuthError;
use crate::token::{Claims, bearer_from_metadata, parse_bearer};
use crate::verify::PeerCertificates;
use http::HeaderValue;

pub use interceptor::AuthInterceptor;
pub use layer::{AuthLayer, AuthService};
pub use policy::{Delegation, Policy, Rule};

// Serving plumbing a resource service needs to run the way tokend and the
// example resource server do (bounded listener, reloadable TLS, metrics
// endpoint, trace context); optional: any tonic server takes the layer.
pub use crate::codec::{RequestCodec, RequestDecoder};
pub use crate::listener::{
    Connection, DEFAULT_MAX_CONNECTION_AGE, Incoming, Limits, Listener, raise_open_files_limit,
};
pub use crate::metrics_endpoint::serve_metrics;
pub use crate::reloadable::{MAX_RELOADABLE_BYTES, ReadError, Reloadable, read_bounded};
pub use crate::tls::{ServerTls, TlsFiles};
pub use crate::trace::{SpanHook, TraceLayer, TraceParent, TraceService};

/// The claims of the caller's verified access token, as stored in request
/// extensions. Dereferences to [`Claims`].
#[derive(Debug, Clone)]
pub struct VerifiedClaims(pub Arc<Claims>);

impl Deref for VerifiedClaims {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.0
    }
}

/// Reads the verified claims in a handler.
pub trait ClaimsExt {
    /// The caller's claims; `None` on public methods (or with no auth wired).
    fn claims(&self) -> Option<&Claims>;
}

impl<T> ClaimsExt for tonic::Request<T> {
    fn claims(&self) -> Option<&Claims> {
        self.extensions().get::<VerifiedClaims>().map(|c| &*c.0)
    }
}

impl<T> ClaimsExt for http::Request<T> {
    fn claims(&self) -> Option<&Claims> {
        self.extensions().get::<VerifiedClaims>().map(|c| &*c.0)
    }
}

/// The client certificates of the call's connection, if it came over mTLS
/// (tonic's TLS connection info, which [`Listener::tls`](crate::listener::Listener::tls)
/// connections and tonic's own TLS server both provide).
pub fn peer_certificates(extensions: &http::Extensions) -> Option<PeerCertificates> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
}

/// The token in an `authorization: Bearer <token>` value. The scheme is
/// case-insensitive; anything else counts as no token.
pub fn bearer_token(value: Option<&HeaderValue>) -> Result<&str, AuthError> {
    parse_bearer(value.map(|v| v.to_str().map_err(|_| ())))
}

/// Like [`bearer_token`], for a header value already read as text (e.g. from
/// a proxy's description of the request): the same rules.
pub fn bearer_in(value: Option<&str>) -> Result<&str, AuthError> {
    // What `HeaderValue::to_str` takes: visible ASCII, spaces and tabs.
    let visible = |text: &str| {
        text.bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    };
    parse_bearer(value.map(|text| if visible(text) { Ok(text) } else { Err(()) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Invalid;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_value() {
        let value = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer_token(Some(&value("Bearer abc"))), Ok("abc"));
        assert_eq!(bearer_token(Some(&value("bearer abc"))), Ok("abc"));
        assert_eq!(bearer_token(Some(&value("Bearer   abc"))), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(Some(&value("Basic abc"))),
            Err(AuthError::Missing)
        );
        assert_eq!(
            bearer_token(Some(&value("Bearer "))),
            Err(AuthError::Missing)
        );
        assert_eq!(bearer_token(Some(&value("abc"))), Err(AuthError::Missing));
        let non_ascii = HeaderValue::from_bytes("Bearer é".as_bytes()).unwrap();
        assert_eq!(
            bearer_token(Some(&non_ascii)),
            Err(AuthError::Invalid(Invalid::Malformed))
        );
        // The same rules for text.
        assert_eq!(bearer_in(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_in(None), Err(AuthError::Missing));
        assert_eq!(bearer_in(Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(
            bearer_in(Some("Bearer é")),
            Err(AuthError::Invalid(Invalid::Malformed))
        );
        assert_eq!(
            bearer_in(Some("Bearer a\nb")),
            Err(AuthError::Invalid(Invalid::Malformed))
        );
    }
}

//! Server side: reject calls without a valid access token.
//!
//! Two ways to wire it:
//! - [`AuthInterceptor`], a tonic `Interceptor` for one service, with the
//!   scopes every method of that service needs;
//! - [`AuthLayer`], a tower layer for a whole server, with a per-method
//!   [`Policy`] (a tonic interceptor cannot see the method path).
//!
//! Either way, handlers read the verified claims with [`ClaimsExt::claims`].

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tower::{Layer, Service};

use crate::error::{AuthError, Invalid};
use crate::token::{Claims, TOKEN_TYPE};
use crate::verify::{PeerCertificates, Verifier};

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

fn bearer_from_metadata(metadata: &MetadataMap) -> Result<&str, AuthError> {
    parse_bearer(
        metadata
            .get("authorization")
            .map(|v| v.to_str().map_err(|_| ())),
    )
}

/// `value` is the header as text, or `Err` when it is not visible ASCII.
fn parse_bearer(value: Option<Result<&str, ()>>) -> Result<&str, AuthError> {
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

fn require_scopes(claims: &Claims, scopes: &[String]) -> Result<(), AuthError> {
    match scopes.iter().find(|s| !claims.has_scope(s)) {
        Some(missing) => Err(AuthError::InsufficientScope(missing.clone())),
        None => Ok(()),
    }
}

/// A tonic `Interceptor` for one service: every method needs a valid token
/// and the given scopes (`EchoServiceServer::with_interceptor(svc, auth)`).
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    verifier: Verifier,
    scopes: Arc<[String]>,
}

impl AuthInterceptor {
    /// Any valid token passes.
    pub fn new(verifier: Verifier) -> AuthInterceptor {
        AuthInterceptor {
            verifier,
            scopes: Arc::new([]),
        }
    }

    /// Every method also needs these scopes.
    pub fn require_scopes<I, S>(mut self, scopes: I) -> AuthInterceptor
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let token = bearer_from_metadata(request.metadata())?;
        let claims = self
            .verifier
            .verify_peer(token, request.peer_certs().as_ref())?;
        require_scopes(&claims, &self.scopes)?;
        request.extensions_mut().insert(VerifiedClaims(claims));
        Ok(request)
    }
}

/// What a method needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// No token needed.
    Public,
    /// A valid token with all of these scopes (none: any valid token).
    Scopes(Vec<String>),
    /// A client certificate verified over mTLS, or else a valid token with
    /// all of these scopes.
    ClientCertOrScopes(Vec<String>),
}

/// Per-method rules for [`AuthLayer`], by full method path
/// (`/package.Service/Method`) or whole service (`package.Service`).
/// Methods without a rule need a valid token: nothing is public by accident.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    methods: HashMap<String, Rule>,
    services: HashMap<String, Rule>,
}

impl Policy {
    /// Every method needs a valid token.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// `path` (`/package.Service/Method`) needs no token.
    pub fn public(mut self, path: impl Into<String>) -> Policy {
        self.methods.insert(path.into(), Rule::Public);
        self
    }

    /// Every method of `service` (`package.Service`) needs no token.
    pub fn public_service(mut self, service: impl Into<String>) -> Policy {
        self.services.insert(service.into(), Rule::Public);
        self
    }

    /// Health checks and server reflection (v1 and v1alpha) need no token.
    pub fn public_health_and_reflection(self) -> Policy {
        self.public_service("grpc.health.v1.Health")
            .public_service("grpc.reflection.v1.ServerReflection")
            .public_service("grpc.reflection.v1alpha.ServerReflection")
    }

    /// `path` needs a valid token with all of `scopes`.
    pub fn require_scopes<I, S>(mut self, path: impl Into<String>, scopes: I) -> Policy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        self.methods.insert(path.into(), Rule::Scopes(scopes));
        self
    }

    /// `path` is open to callers with a verified client certificate (mTLS),
    /// and otherwise needs a valid token with all of `scopes`.
    pub fn client_cert_or_scopes<I, S>(mut self, path: impl Into<String>, scopes: I) -> Policy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        self.methods
            .insert(path.into(), Rule::ClientCertOrScopes(scopes));
        self
    }

    /// The rule for a request path.
    pub fn rule(&self, path: &str) -> &Rule {
        static AUTHENTICATED: Rule = Rule::Scopes(Vec::new());
        if let Some(rule) = self.methods.get(path) {
            return rule;
        }
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(service, _)| service);
        service
            .and_then(|s| self.services.get(s))
            .unwrap_or(&AUTHENTICATED)
    }
}

/// A tower layer enforcing a [`Policy`] on every call of a server
/// (`Server::builder().layer(AuthLayer::new(verifier, policy))`).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Verifier,
    policy: Arc<Policy>,
}

impl AuthLayer {
    /// Enforces `policy` with `verifier`.
    pub fn new(verifier: Verifier, policy: Policy) -> AuthLayer {
        AuthLayer {
            verifier,
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    verifier: Verifier,
    policy: Arc<Policy>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The readied service handles this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let peer = peer_certificates(request.extensions());
            let scopes = match policy.rule(request.uri().path()) {
                Rule::Public => return inner.call(request).await,
                Rule::ClientCertOrScopes(_) if peer.as_ref().is_some_and(|p| !p.is_empty()) => {
                    return inner.call(request).await;
                }
                Rule::Scopes(scopes) | Rule::ClientCertOrScopes(scopes) => scopes,
            };
            // A cheap clone (shared bytes), so no borrow of the request is
            // held across the await.
            let header = request.headers().get(http::header::AUTHORIZATION).cloned();
            let verified = async {
                let token = bearer_token(header.as_ref())?;
                let claims = verifier.verify_from_async(token, peer.as_ref()).await?;
                require_scopes(&claims, scopes)?;
                Ok::<_, AuthError>(claims)
            }
            .await;
            match verified {
                Ok(claims) => {
                    request.extensions_mut().insert(VerifiedClaims(claims));
                    inner.call(request).await
                }
                Err(err) => Ok(Status::from(err).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn policies_fall_back_from_method_to_service_to_authenticated() {
        let policy = Policy::new()
            .public("/demo.v1.EchoService/Ping")
            .require_scopes("/demo.v1.EchoService/AdminEcho", ["admin"])
            .public_health_and_reflection();
        assert_eq!(policy.rule("/demo.v1.EchoService/Ping"), &Rule::Public);
        assert_eq!(
            policy.rule("/demo.v1.EchoService/AdminEcho"),
            &Rule::Scopes(vec!["admin".into()])
        );
        assert_eq!(
            policy.rule("/demo.v1.EchoService/Echo"),
            &Rule::Scopes(vec![])
        );
        assert_eq!(policy.rule("/grpc.health.v1.Health/Check"), &Rule::Public);
        assert_eq!(policy.rule("garbage"), &Rule::Scopes(vec![]));
        assert_eq!(
            policy.rule("/demo.v1.EchoServiceX/Ping"),
            &Rule::Scopes(vec![])
        );
    }
}

#[cfg(test)]
mod interceptor_tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use tonic::Code;
    use tonic::service::Interceptor;

    use super::*;
    use crate::keys::KeySet;
    use crate::reason::Reason;
    use crate::test_support::{NOW_MS, Signer, claims};
    use crate::verify::Clock;

    struct At(i64);

    impl Clock for At {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        }
    }

    fn interceptor(signer: &Signer) -> AuthInterceptor {
        let keys = KeySet::from_paserk([signer.public_paserk().as_str()]).unwrap();
        AuthInterceptor::new(
            Verifier::builder(keys, "tokend", "internal")
                .clock(At(NOW_MS))
                .build(),
        )
    }

    fn request(authorization: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    fn refused(result: Result<tonic::Request<()>, Status>) -> (Code, Option<Reason>) {
        let status = result.expect_err("refused");
        (status.code(), Reason::of(&status))
    }

    #[test]
    fn missing_and_non_bearer_metadata_are_missing_tokens() {
        let signer = Signer::new();
        let mut auth = interceptor(&signer);
        let missing = (Code::Unauthenticated, Some(Reason::AccessTokenMissing));
        assert_eq!(refused(auth.call(request(None))), missing);
        assert_eq!(refused(auth.call(request(Some("Basic abc")))), missing);
        assert_eq!(refused(auth.call(request(Some("Bearer")))), missing);
        assert_eq!(
            refused(auth.call(request(Some("Bearer v4.public.x")))),
            (Code::Unauthenticated, Some(Reason::AccessTokenInvalid))
        );
    }

    #[test]
    fn a_valid_token_puts_its_claims_in_the_request() {
        let signer = Signer::new();
        let mut auth = interceptor(&signer);
        let token = signer.sign(&claims());
        let passed = auth
            .call(request(Some(&format!("Bearer {token}"))))
            .expect("valid token passes");
        assert_eq!(passed.claims().map(|c| c.sub.as_str()), Some("alice"));
    }

    #[test]
    fn required_scopes_are_enforced() {
        let signer = Signer::new();
        let token = format!("Bearer {}", signer.sign(&claims()));
        let mut read = interceptor(&signer).require_scopes(["read"]);
        assert!(read.call(request(Some(&token))).is_ok());
        let mut admin = interceptor(&signer).require_scopes(["read", "admin"]);
        assert_eq!(
            refused(admin.call(request(Some(&token)))),
            (Code::PermissionDenied, Some(Reason::InsufficientScope))
        );
    }
}

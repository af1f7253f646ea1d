//! [`AuthLayer`]: a tower layer enforcing a [`Policy`] on every call of a
//! server, which (unlike a tonic interceptor) sees the method path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use super::policy::{Policy, Rule};
use super::{VerifiedClaims, bearer_token, peer_certificates};
use crate::error::AuthError;
use crate::verify::Verifier;

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
        let mut inner = crate::ready::take_ready(&mut self.inner);
        let verifier = self.verifier.clone();
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let peer = peer_certificates(request.extensions());
            let has_cert = peer.as_ref().is_some_and(|p| !p.is_empty());
            let (scopes, cert_suffices) = match policy.rule(request.uri().path()) {
                Rule::Public => return inner.call(request).await,
                Rule::ClientCertOrScopes(scopes) => (scopes, has_cert),
                Rule::Scopes(scopes) => (scopes, false),
            };
            // A cheap clone (shared bytes), so no borrow of the request is
            // held across the await.
            let header = request.headers().get(http::header::AUTHORIZATION).cloned();
            if cert_suffices && header.is_none() {
                return inner.call(request).await;
            }
            let path = request.uri().path();
            let verified = async {
                let token = bearer_token(header.as_ref())?;
                let claims = verifier.verify_from_async(token, peer.as_ref()).await?;
                // With a verified certificate the token needs no scope,
                // but it must still be valid: a credential sent is checked.
                if !cert_suffices {
                    claims.require_scopes(scopes)?;
                }
                if let Some(delegation) = policy.delegation(path) {
                    delegation.check(&claims)?;
                }
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

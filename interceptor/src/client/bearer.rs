//! Attaching the [`TokenSource`]'s token to outgoing calls: a tonic
//! interceptor (the cached token only) or a tower layer (waits for a fresh
//! one, and drops a token a server called expired).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Status;
use tower::{Layer, Service};

use super::TokenSource;
use crate::reason::Reason;

/// Attaches the cached token in a tonic client interceptor.
#[derive(Clone, Debug)]
pub struct BearerInterceptor {
    source: TokenSource,
}

impl BearerInterceptor {
    pub(super) fn new(source: TokenSource) -> BearerInterceptor {
        BearerInterceptor { source }
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let current = self.source.cached().ok_or_else(|| {
            Status::unavailable("no access token yet: await TokenSource::access_token() first")
        })?;
        if Instant::now() >= current.renew_at {
            self.source.renew_in_background();
        }
        let mut value: tonic::metadata::AsciiMetadataValue = current
            .header
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| Status::internal("unusable access token"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// A tower layer attaching a fresh token to every call on a channel.
#[derive(Clone, Debug)]
pub struct BearerLayer {
    source: TokenSource,
}

impl BearerLayer {
    pub(super) fn new(source: TokenSource) -> BearerLayer {
        BearerLayer { source }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> BearerService<S> {
        BearerService {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service [`BearerLayer`] wraps around a channel.
#[derive(Clone, Debug)]
pub struct BearerService<S> {
    inner: S,
    source: TokenSource,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for BearerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let mut inner = crate::ready::take_ready(&mut self.inner);
        let source = self.source.clone();
        Box::pin(async move {
            let current = match source.access_token().await {
                Ok(current) => current,
                Err(status) => return Ok(status.into_http()),
            };
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, current.header.clone());
            let response = inner.call(request).await?;
            // A rejection by an auth layer is a trailers-only response: the
            // status is in the headers.
            if let Some(status) = Status::from_header_map(response.headers())
                && Reason::of(&status) == Some(Reason::AccessTokenExpired)
            {
                source.invalidate(&current.token);
            }
            Ok(response)
        })
    }
}

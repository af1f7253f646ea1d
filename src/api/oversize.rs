//! [`OversizeLayer`]: a request message larger than
//! [`MAX_REQUEST_BYTES`](super::MAX_REQUEST_BYTES) is the caller's mistake,
//! answered `INVALID_ARGUMENT` with the reason `INVALID_REQUEST` like every
//! other oversized field.
//!
//! tonic refuses such a message from its length prefix, before reading it
//! (so it never buffers one), but answers `OUT_OF_RANGE` without a reason.
//! tokend itself never answers `OUT_OF_RANGE`, so this layer turns every
//! such answer into the contract's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokend_interceptor::Reason;
use tonic::{Code, Status};

use super::MAX_REQUEST_BYTES;

/// Rewrites tonic's `OUT_OF_RANGE` for an oversized request message.
#[derive(Debug, Clone, Copy, Default)]
pub struct OversizeLayer;

impl<S> tower::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize { inner }
    }
}

/// The service [`OversizeLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Oversize<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // Only tokend's own API has the 64 KiB limit (health and reflection
        // keep tonic's).
        let ours = request.uri().path().starts_with("/tokend.v1.TokenService/");
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if !ours {
                return Ok(response);
            }
            // A refusal while decoding is a trailers-only answer: its
            // status is in the headers.
            match Status::from_header_map(response.headers()) {
                Some(status) if status.code() == Code::OutOfRange => Ok(Reason::InvalidRequest
                    .status(format!(
                        "the request message is larger than {MAX_REQUEST_BYTES} bytes"
                    ))
                    .into_http()),
                _ => Ok(response),
            }
        })
    }
}

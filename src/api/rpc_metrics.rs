//! The outermost layer of tokend's gRPC server: states one
//! [`Fact::RpcAnswered`] per call (its method, status code, reason and
//! time to the answer's headers), for the metrics and anything else that
//! listens. Calls the auth layer refuses are counted too.

use std::time::Instant;

use crate::facts::{Fact, RpcAnswered};

/// The `method` label of a request path: a TokenService method by name,
/// `health` or `reflection`, else `unknown` (a caller cannot add labels).
pub fn method_label(path: &str) -> &'static str {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return "unknown";
    };
    match service {
        "tokend.v1.TokenService" => super::METHODS
            .iter()
            .find(|known| **known == method)
            .copied()
            .unwrap_or("unknown"),
        "grpc.health.v1.Health" => "health",
        "tokend.admin.v1.AdminService" => "admin",
        s if s.starts_with("grpc.reflection.") => "reflection",
        _ => "unknown",
    }
}

/// A tower layer counting and timing every call of the server it wraps
/// (outermost, so calls the auth layer refuses are counted too).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] wraps.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // A refusal is a trailers-only answer: its status is in the
            // headers. An answer without one is a success (its status
            // follows in the trailers).
            let (code, reason) = match tonic::Status::from_header_map(response.headers()) {
                Some(status) => (
                    code_label(status.code()),
                    tokend_interceptor::Reason::of(&status).map_or("", |r| r.as_str()),
                ),
                None => ("OK", ""),
            };
            crate::telemetry::record(&Fact::RpcAnswered(RpcAnswered {
                method,
                code,
                reason,
                elapsed: started.elapsed(),
            }));
            Ok(response)
        })
    }
}

/// The gRPC status code as its canonical name (`UNAUTHENTICATED`).
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(method_label("/tokend.v1.TokenService/Login"), "Login");
        assert_eq!(method_label("/tokend.v1.TokenService/Nope"), "unknown");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "health");
        assert_eq!(
            method_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "reflection"
        );
        assert_eq!(method_label("/alice/secret-token"), "unknown");
        assert_eq!(method_label("garbage"), "unknown");
    }
}

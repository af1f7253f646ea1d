//! W3C trace context: the `traceparent` a caller sends (as gRPC metadata,
//! i.e. an HTTP/2 header) names the distributed trace the call belongs to.
//! [`TraceLayer`] opens one span per call, recording its trace id, so every
//! log line and audit event of the call can be joined with the caller's
//! trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::Instrument;

/// A parsed `traceparent` (version 00): `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero: the caller's span.
    pub parent_id: String,
    /// Whether the caller samples this trace.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` for anything malformed (which
    /// the W3C spec says to ignore, as if absent).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        // Version ff is invalid; version 00 has exactly four parts.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace_id, 32) || zero(trace_id) || !hex(parent_id, 16) || zero(parent_id) {
            return None;
        }
        if !hex(flags, 2) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            sampled: flags & 1 == 1,
        })
    }
}

/// What runs on each new call span before it is entered, with the call's
/// headers (e.g. to make it a child of the caller's trace in OpenTelemetry).
pub type SpanHook = fn(&tracing::Span, &http::HeaderMap);

/// A tower layer opening a span `grpc` per call, with the call's `method`
/// path and the `trace_id` of its `traceparent` (when valid).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer {
    hook: Option<SpanHook>,
}

impl TraceLayer {
    /// Spans with the method and trace id only.
    pub fn new() -> TraceLayer {
        TraceLayer::default()
    }

    /// Also runs `hook` on each new span, before it is entered.
    pub fn on_new_span(mut self, hook: SpanHook) -> TraceLayer {
        self.hook = Some(hook);
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> TraceService<S> {
        TraceService {
            inner,
            hook: self.hook,
        }
    }
}

/// The service [`TraceLayer`] wraps.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    hook: Option<SpanHook>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for TraceService<S>
where
    S: Service<http::Request<ReqBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let parent = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let span = tracing::info_span!(
            "grpc",
            method = %request.uri().path(),
            trace_id = tracing::field::Empty,
        );
        if let Some(parent) = &parent {
            span.record("trace_id", parent.trace_id.as_str());
        }
        if let Some(hook) = self.hook {
            hook(&span, request.headers());
        }
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(answer.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_follow_the_w3c_format() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(valid).expect("valid");
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id, "00f067aa0ba902b7");
        assert!(parsed.sampled);
        assert!(
            !TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .expect("valid")
                .sampled
        );
        for invalid in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid:?}");
        }
        // A later version may add fields after the flags.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
                .is_some()
        );
    }
}

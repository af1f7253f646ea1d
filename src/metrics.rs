//! Prometheus metrics: what tokend counts and measures, and their exposition
//! on a listener of their own (`--metrics-listen`, `GET /metrics`), by
//! `metrics-exporter-prometheus`. Without the flag no recorder is installed
//! and every record below costs next to nothing.
//!
//! Labels are small fixed sets (methods, codes, reasons, outcomes,
//! operations): never a user name, client id, token or session id, for
//! privacy and so that no caller can grow the series without bound.
//!
//! | series | labels | what |
//! |---|---|---|
//! | `tokend_rpc_requests_total` | `method`, `code`, `reason` | calls answered |
//! | `tokend_rpc_duration_seconds` | `method` | time to the answer's headers |
//! | `tokend_logins_total` | `kind` (password, client), `outcome` | logins |
//! | `tokend_refreshes_total` | `outcome` (rotated, grace_retry, reused, invalid) | refreshes |
//! | `tokend_sessions_ended_total` | `cause` (revoke, reuse, revoke_session, revoke_all, session_cap) | sessions ended by this replica |
//! | `tokend_password_hashes_in_progress` | | argon2 jobs running or queued |
//! | `tokend_password_hash_wait_seconds` | | wait for a hashing thread |
//! | `tokend_password_hashes_total` | | argon2 jobs run (logins, password changes) |
//! | `tokend_password_hashes_dropped_total` | | jobs skipped because their caller had gone |
//! | `tokend_store_duration_seconds` | `op` | one store operation |
//! | `tokend_store_errors_total` | `op`, `kind` (timeout, unavailable, corrupt) | failed store operations |
//! | `tokend_store_up` | | 1 while the health check reaches the store |
//! | `tokend_feed_watchers` | | revocation-feed watchers connected |
//! | `tokend_feed_published_total` | | entries this replica published |
//! | `tokend_feed_publish_failures_total` | | publications that failed (then retried in the background) |
//! | `tokend_feed_follower_lag_seconds` | | time since the feed was last read from the store |
//! | `tokend_signing_key_info` | `kid` | 1 for the key tokens are signed with |
//! | `tokend_verification_keys` | | keys published by GetPublicKeys |
//! | `tokend_exchanges_total` | `outcome` (ok or the refusal's reason, lower case) | Exchange calls decided |
//! | `tokend_exchange_policy_rows` | | rows of the exchange policy in force |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::authority::AuthError;
use crate::credentials::HashError;
use crate::store::StoreError;

/// Latency buckets (seconds) of every `_seconds` histogram: 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics on {addr}: {reason}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why (bind failure, a recorder already installed).
    pub reason: String,
}

/// Installs the process-wide recorder and serves `GET /metrics` on
/// `listener` (with its connection limits, see
/// `tokend_interceptor::serve_metrics`). Must be called within a Tokio
/// runtime, once per process.
pub fn serve(listener: tokend_interceptor::Listener) -> Result<(), MetricsError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let failed = |reason: String| MetricsError { addr, reason };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| failed(e.to_string()))?
        .install_recorder()
        .map_err(|e| failed(e.to_string()))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    tokend_interceptor::serve_metrics(listener, move || handle.render());
    describe();
    Ok(())
}

/// How often the recorder's histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

/// Help texts, shown by the exposition.
fn describe() {
    describe_counter!(
        "tokend_rpc_requests_total",
        "gRPC calls answered, by method, status code and tokend reason"
    );
    describe_histogram!(
        "tokend_rpc_duration_seconds",
        "Time from a call's arrival to its answer's headers"
    );
    describe_counter!(
        "tokend_logins_total",
        "Logins by kind (password, client) and outcome"
    );
    describe_counter!(
        "tokend_refreshes_total",
        "Refreshes by outcome (rotated, grace_retry, reused, invalid)"
    );
    describe_counter!(
        "tokend_sessions_ended_total",
        "Sessions this replica ended, by cause"
    );
    describe_gauge!(
        "tokend_password_hashes_in_progress",
        "argon2 jobs running or waiting for a thread"
    );
    describe_histogram!(
        "tokend_password_hash_wait_seconds",
        "Wait for a password-hashing thread"
    );
    describe_counter!("tokend_password_hashes_total", "argon2 jobs run");
    describe_counter!(
        "tokend_password_hashes_dropped_total",
        "Hash jobs skipped because their caller had gone"
    );
    describe_histogram!(
        "tokend_store_duration_seconds",
        "Duration of one store operation"
    );
    describe_counter!(
        "tokend_store_errors_total",
        "Store operations that failed, by operation and kind"
    );
    describe_gauge!(
        "tokend_store_up",
        "1 while the health check reaches the store, else 0"
    );
    describe_gauge!(
        "tokend_feed_watchers",
        "Revocation-feed watchers connected to this replica"
    );
    describe_counter!(
        "tokend_feed_published_total",
        "Revocation-feed entries this replica published"
    );
    describe_counter!(
        "tokend_feed_publish_failures_total",
        "Feed publications that failed and were retried in the background"
    );
    describe_gauge!(
        "tokend_feed_follower_lag_seconds",
        "Time since this replica last read the feed from the store"
    );
    describe_gauge!(
        "tokend_signing_key_info",
        "1 for the key id access tokens are signed with"
    );
    describe_counter!(
        "tokend_exchanges_total",
        "Exchange calls decided, by outcome (ok or the refusal's reason)"
    );
    describe_gauge!(
        "tokend_exchange_policy_rows",
        "Rows of the exchange policy in force"
    );
    describe_gauge!(
        "tokend_verification_keys",
        "Keys published by GetPublicKeys"
    );
}

/// A login ended with `result`.
pub fn login<T>(kind: &'static str, result: &Result<T, AuthError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(AuthError::InvalidCredentials) => "invalid_credentials",
        Err(AuthError::LoginThrottled(_)) => "throttled",
        Err(AuthError::Hash(HashError::Overloaded { .. })) => "overloaded",
        Err(AuthError::Store(_)) => "store_unavailable",
        Err(AuthError::InvalidRequest(_)) => "invalid_request",
        Err(_) => "error",
    };
    counter!("tokend_logins_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// A refresh ended this way: `rotated`, `grace_retry`, `reused`, `invalid`.
pub fn refresh(outcome: &'static str) {
    counter!("tokend_refreshes_total", "outcome" => outcome).increment(1);
}

/// This replica ended `count` sessions for `cause`.
pub fn sessions_ended(cause: &'static str, count: usize) {
    let count = u64::try_from(count).unwrap_or(u64::MAX);
    counter!("tokend_sessions_ended_total", "cause" => cause).increment(count);
}

/// A store operation `op` that began at `started` ended with `result`.
pub fn store_call<T>(op: &'static str, started: Instant, result: &Result<T, StoreError>) {
    histogram!("tokend_store_duration_seconds", "op" => op).record(started.elapsed());
    if let Err(err) = result {
        let kind = match err {
            StoreError::TimedOut => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt(_) => "corrupt",
        };
        counter!("tokend_store_errors_total", "op" => op, "kind" => kind).increment(1);
    }
}

/// The health check did or did not reach the store.
pub fn store_up(up: bool) {
    gauge!("tokend_store_up").set(if up { 1.0 } else { 0.0 });
}

/// How many hash jobs are running or queued now.
pub fn hashes_in_progress(count: usize) {
    gauge!("tokend_password_hashes_in_progress").set(count as f64);
}

/// A hash job waited `wait` for its thread.
pub fn hash_waited(wait: Duration) {
    histogram!("tokend_password_hash_wait_seconds").record(wait);
}

/// A hash job ran.
pub fn hash_done() {
    counter!("tokend_password_hashes_total").increment(1);
}

/// A hash job was skipped: its caller had gone.
pub fn hash_dropped() {
    counter!("tokend_password_hashes_dropped_total").increment(1);
}

/// How many watchers this replica serves now.
pub fn feed_watchers(count: usize) {
    gauge!("tokend_feed_watchers").set(count as f64);
}

/// This replica published a feed entry (`ok`), or failed to.
pub fn feed_published(ok: bool) {
    if ok {
        counter!("tokend_feed_published_total").increment(1);
    } else {
        counter!("tokend_feed_publish_failures_total").increment(1);
    }
}

/// The feed was last read from the store `lag` ago.
pub fn feed_lag(lag: Duration) {
    gauge!("tokend_feed_follower_lag_seconds").set(lag.as_secs_f64());
}

/// An Exchange was decided: `ok`, or refused with `result`'s reason.
pub fn exchange<T>(result: &Result<T, AuthError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(err) => match err.reason() {
            Some(reason) => exchange_outcome(reason),
            None => "error",
        },
    };
    counter!("tokend_exchanges_total", "outcome" => outcome).increment(1);
}

/// The `outcome` label of a refused exchange: its reason in lower case.
fn exchange_outcome(reason: tokend_interceptor::Reason) -> &'static str {
    use tokend_interceptor::Reason;
    match reason {
        Reason::SubjectNotForCaller => "subject_not_for_caller",
        Reason::ExchangeNotAllowed => "exchange_not_allowed",
        Reason::ChainNotAllowed => "chain_not_allowed",
        Reason::ScopeNotAllowed => "scope_not_allowed",
        Reason::AccessTokenInvalid => "access_token_invalid",
        Reason::AccessTokenExpired => "access_token_expired",
        Reason::SessionRevoked => "session_revoked",
        Reason::WrongAudience => "wrong_audience",
        Reason::InvalidRequest => "invalid_request",
        Reason::StoreUnavailable => "store_unavailable",
        _ => "other",
    }
}

/// The exchange policy in force has `rows` rows.
pub fn exchange_policy_rows(rows: usize) {
    gauge!("tokend_exchange_policy_rows").set(rows as f64);
}

/// The keys in use at start.
pub fn keys(signing_kid: &str, published: usize) {
    gauge!("tokend_signing_key_info", "kid" => signing_kid.to_owned()).set(1.0);
    gauge!("tokend_verification_keys").set(published as f64);
}

/// The `method` label of a request path: a TokenService method by name,
/// `health` or `reflection`, else `unknown` (a caller cannot add labels).
pub fn method_label(path: &str) -> &'static str {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return "unknown";
    };
    match service {
        "tokend.v1.TokenService" => crate::api::METHODS
            .iter()
            .find(|known| **known == method)
            .copied()
            .unwrap_or("unknown"),
        "grpc.health.v1.Health" => "health",
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
            histogram!("tokend_rpc_duration_seconds", "method" => method).record(started.elapsed());
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
            counter!("tokend_rpc_requests_total", "method" => method, "code" => code, "reason" => reason)
                .increment(1);
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

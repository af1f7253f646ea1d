//! Prometheus metrics: what tokend counts and measures (every series derived
//! from a [`Fact`], by [`observe`]; this module knows nothing else of the
//! crate), and their exposition
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
//! | `tokend_admin_calls_total` | `method` (the AdminService method), `outcome` (ok or the refusal's reason) | administration calls decided |
//! | `tokend_exchanges_total` | `outcome` (ok or the refusal's reason, lower case) | Exchange calls decided |
//! | `tokend_exchange_policy_rows` | | rows of the exchange policy in force |

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use tokend_interceptor::Reason;

use crate::facts::{Fact, Feed, Hash};

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
/// `tokend_interceptor::server::serve_metrics`). Must be called within a Tokio
/// runtime, once per process.
pub fn serve(listener: tokend_interceptor::server::Listener) -> Result<(), MetricsError> {
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
    tokend_interceptor::server::serve_metrics(listener, move || handle.render());
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
    describe_counter!(
        "tokend_admin_calls_total",
        "Administration calls, by method and outcome (ok or the refusal's reason)"
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

/// Records what `fact` changes in the series above. The one listener of
/// this module: every count, gauge and histogram is derived from a fact.
pub fn observe(fact: &Fact<'_>) {
    match fact {
        Fact::Login(login) => {
            let outcome = match login.outcome {
                Ok(_) => "ok",
                Err(refused) => login_outcome(refused.reason),
            };
            counter!("tokend_logins_total", "kind" => login.kind.as_str(), "outcome" => outcome)
                .increment(1);
        }
        Fact::Refresh(refresh) => {
            counter!("tokend_refreshes_total", "outcome" => refresh.outcome.as_str()).increment(1);
        }
        Fact::SessionsEnded(ended) => {
            let count = u64::try_from(ended.sessions.count()).unwrap_or(u64::MAX);
            counter!("tokend_sessions_ended_total", "cause" => ended.cause.as_str())
                .increment(count);
        }
        Fact::AdminCall(call) => {
            let outcome = match call.outcome {
                Ok(()) => "ok",
                Err(refused) => refused.reason_or_internal(),
            };
            counter!("tokend_admin_calls_total", "method" => call.method, "outcome" => outcome)
                .increment(1);
        }
        Fact::Exchange(exchange) => {
            let outcome = match exchange.outcome {
                Ok(_) => "ok",
                Err(refused) => exchange_outcome(refused.reason),
            };
            counter!("tokend_exchanges_total", "outcome" => outcome).increment(1);
        }
        Fact::StoreCall(call) => {
            histogram!("tokend_store_duration_seconds", "op" => call.op).record(call.elapsed);
            if let Some(failure) = call.failure {
                counter!("tokend_store_errors_total", "op" => call.op, "kind" => failure.as_str())
                    .increment(1);
            }
        }
        Fact::StoreUp(up) => gauge!("tokend_store_up").set(if *up { 1.0 } else { 0.0 }),
        Fact::Hash(Hash::InProgress(count)) => {
            gauge!("tokend_password_hashes_in_progress").set(*count as f64)
        }
        Fact::Hash(Hash::Waited(wait)) => {
            histogram!("tokend_password_hash_wait_seconds").record(*wait)
        }
        Fact::Hash(Hash::Ran) => counter!("tokend_password_hashes_total").increment(1),
        Fact::Hash(Hash::Dropped) => counter!("tokend_password_hashes_dropped_total").increment(1),
        Fact::Feed(Feed::Watchers(count)) => gauge!("tokend_feed_watchers").set(*count as f64),
        Fact::Feed(Feed::Published(true)) => counter!("tokend_feed_published_total").increment(1),
        Fact::Feed(Feed::Published(false)) => {
            counter!("tokend_feed_publish_failures_total").increment(1)
        }
        Fact::Feed(Feed::Lag(lag)) => {
            gauge!("tokend_feed_follower_lag_seconds").set(lag.as_secs_f64())
        }
        Fact::ExchangePolicyRows(rows) => gauge!("tokend_exchange_policy_rows").set(*rows as f64),
        Fact::Keys(keys) => {
            gauge!("tokend_signing_key_info", "kid" => keys.signing_key_id.to_owned()).set(1.0);
            gauge!("tokend_verification_keys").set(keys.published as f64);
        }
        Fact::RpcAnswered(call) => {
            histogram!("tokend_rpc_duration_seconds", "method" => call.method).record(call.elapsed);
            counter!(
                "tokend_rpc_requests_total",
                "method" => call.method,
                "code" => call.code,
                "reason" => call.reason
            )
            .increment(1);
        }
        Fact::AccountChanged(_) => {}
    }
}

/// The `outcome` label of a refused login.
fn login_outcome(reason: Option<Reason>) -> &'static str {
    match reason {
        Some(Reason::InvalidCredentials) => "invalid_credentials",
        Some(Reason::LoginThrottled) => "throttled",
        Some(Reason::Overloaded) => "overloaded",
        Some(Reason::StoreUnavailable) => "store_unavailable",
        Some(Reason::InvalidRequest) => "invalid_request",
        _ => "error",
    }
}

/// The `outcome` label of a refused exchange: its reason in lower case
/// (from a fixed set), `error` for an internal failure.
fn exchange_outcome(reason: Option<Reason>) -> &'static str {
    match reason {
        None => "error",
        Some(Reason::SubjectNotForCaller) => "subject_not_for_caller",
        Some(Reason::ExchangeNotAllowed) => "exchange_not_allowed",
        Some(Reason::ChainNotAllowed) => "chain_not_allowed",
        Some(Reason::ScopeNotAllowed) => "scope_not_allowed",
        Some(Reason::AccessTokenInvalid) => "access_token_invalid",
        Some(Reason::AccessTokenExpired) => "access_token_expired",
        Some(Reason::SessionRevoked) => "session_revoked",
        Some(Reason::WrongAudience) => "wrong_audience",
        Some(Reason::InvalidRequest) => "invalid_request",
        Some(Reason::StoreUnavailable) => "store_unavailable",
        Some(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_a_fixed_set() {
        assert_eq!(login_outcome(Some(Reason::LoginThrottled)), "throttled");
        assert_eq!(login_outcome(Some(Reason::SessionRevoked)), "error");
        assert_eq!(login_outcome(None), "error");
        assert_eq!(
            exchange_outcome(Some(Reason::ScopeNotAllowed)),
            "scope_not_allowed"
        );
        assert_eq!(exchange_outcome(Some(Reason::KeysUnavailable)), "other");
        assert_eq!(exchange_outcome(None), "error");
    }
}

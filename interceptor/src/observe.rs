//! Metrics through the `metrics` facade: the library records, the service
//! chooses the exporter (or none: then recording costs next to nothing).
//! Labels are fixed sets (reasons, results); never a subject or a token.
//!
//! | series | labels | what |
//! |---|---|---|
//! | `tokend_interceptor_verifications_total` | `result` (`valid` or the refusal's reason) | tokens verified |
//! | `tokend_interceptor_cache_lookups_total` | `result` (hit, miss) | verification-cache lookups |
//! | `tokend_interceptor_key_syncs_total` | `result` (ok, failed) | key fetches from tokend |
//! | `tokend_interceptor_keys_synced_timestamp_seconds` | | when keys were last fetched (age: `time() - ...`) |
//! | `tokend_interceptor_revocations` | | sessions and subjects the revocation list holds |
//! | `tokend_interceptor_feed_heard_timestamp_seconds` | | when the revocation feed was last heard (staleness) |
//! | `tokend_interceptor_token_renewals_total` | `result` (ok, failed) | token-source logins and refreshes |
//! | `tokend_interceptor_token_exchanges_total` | `result` (ok, failed) | exchanges by an exchanging token source |

use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};

use crate::error::AuthError;

/// Seconds since the epoch, for the `_timestamp_seconds` gauges.
fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A verification ended with `result`.
pub(crate) fn verification<T>(result: &Result<T, AuthError>) {
    let label = match result {
        Ok(_) => "valid",
        Err(err) => err.reason().as_str(),
    };
    counter!("tokend_interceptor_verifications_total", "result" => label).increment(1);
}

/// A verification-cache lookup hit or missed.
pub(crate) fn cache_lookup(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!("tokend_interceptor_cache_lookups_total", "result" => result).increment(1);
}

/// A key fetch from tokend succeeded or failed.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn key_sync(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("tokend_interceptor_key_syncs_total", "result" => result).increment(1);
    if ok {
        gauge!("tokend_interceptor_keys_synced_timestamp_seconds").set(now_seconds());
    }
}

/// The revocation list holds `entries`.
pub(crate) fn revocations(entries: usize) {
    gauge!("tokend_interceptor_revocations").set(entries as f64);
}

/// The revocation feed was heard from just now.
pub(crate) fn feed_heard() {
    gauge!("tokend_interceptor_feed_heard_timestamp_seconds").set(now_seconds());
}

/// An exchanging token source's Exchange call succeeded or failed.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn token_exchange(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("tokend_interceptor_token_exchanges_total", "result" => result).increment(1);
}

/// A token source's login or refresh succeeded or failed.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn token_renewal(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("tokend_interceptor_token_renewals_total", "result" => result).increment(1);
}

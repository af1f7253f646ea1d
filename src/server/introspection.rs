//! Introspect's verifier: the interceptor's `Verifier` over tokend's
//! published keys (any audience), with a revocation list this replica keeps
//! from its own feed, in process, through the very messages a watching
//! resource service receives: introspection answers what such a service
//! would decide, at the cost of a cached verification.

use std::time::Duration;

use tokend_interceptor::Verifier;
use tokend_interceptor::keys::KeySet;
use tokend_interceptor::revocation::{DEFAULT_REVOCATION_CAPACITY, RevocationList, StalePolicy};
use tokio::sync::watch;
use tracing::warn;

use crate::api::feed_message;
use crate::config::Config;
use crate::revocations::RevocationFeed;
use crate::store::FeedCursor;

/// Introspect's verifier over `keys`, its revocation list followed from
/// `feed` until `stopping` turns true.
pub(super) fn verifier(
    config: &Config,
    keys: KeySet,
    feed: &RevocationFeed,
    stopping: watch::Receiver<bool>,
) -> Verifier {
    let list = RevocationList::new(DEFAULT_REVOCATION_CAPACITY, StalePolicy::ServeLastKnown);
    tokio::spawn(follow(feed.clone(), list.clone(), stopping));
    Verifier::builder(keys, &config.issuer, &config.issuer)
        .any_audience()
        .clock(config.clock.clone())
        .revocations(list)
        .build()
}

/// Applies this replica's feed to `list`, resubscribing after the last
/// cursor when the stream ends (a store outage), until `stopping`.
async fn follow(feed: RevocationFeed, list: RevocationList, stopping: watch::Receiver<bool>) {
    list.catching_up();
    let mut cursor: Option<FeedCursor> = None;
    let mut failures: u32 = 0;
    while !*stopping.borrow() {
        let mut subscription = feed.follow(cursor, stopping.clone());
        while let Some(item) = subscription.next().await {
            match item {
                Ok(item) => {
                    failures = 0;
                    let message = feed_message(item);
                    list.apply(&message);
                    if let Some(next) = FeedCursor::parse(&message.cursor) {
                        cursor = Some(next);
                    }
                }
                Err(err) => {
                    if failures == 0 {
                        warn!(error = %err, "introspection's revocation feed interrupted");
                    }
                    break;
                }
            }
        }
        failures = failures.saturating_add(1);
        let backoff = Duration::from_millis(100u64.saturating_mul(1 << failures.min(5)));
        tokio::time::sleep(backoff).await;
    }
}

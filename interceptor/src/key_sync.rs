//! Keys from a running tokend: fetched with `GetPublicKeys` at start,
//! refreshed in the background, and fetched early when a token names an
//! unknown `kid` (single-flight, rate-limited).
//!
//! The resource service starts even if tokend is down: until the first fetch
//! succeeds every call fails with `KEYS_UNAVAILABLE` (UNAVAILABLE), never
//! passes, and fetching is retried with backoff.

use std::time::Duration;

use tonic::transport::Channel;
use tracing::{info, warn};

use crate::background::Background;
use crate::keys::{KeyRing, KeySet};
use crate::proto::tokend::v1::GetPublicKeysRequest;
use crate::proto::tokend::v1::token_service_client::TokenServiceClient;

/// How keys are kept in sync: `KeySyncConfig::default()` and the setters
/// below.
#[derive(Debug, Clone)]
pub struct KeySyncConfig {
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    fetch_timeout: Duration,
}

impl Default for KeySyncConfig {
    fn default() -> Self {
        KeySyncConfig {
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(3),
        }
    }
}

impl KeySyncConfig {
    /// How often keys are refetched, picking up next and retired keys
    /// (default 5 minutes).
    pub fn refresh_interval(mut self, every: Duration) -> Self {
        self.refresh_interval = every;
        self
    }

    /// Early fetches for a token naming an unknown `kid` happen at most this
    /// often (default 10 s).
    pub fn min_refetch_interval(mut self, at_most_every: Duration) -> Self {
        self.min_refetch_interval = at_most_every;
        self
    }

    /// How long one fetch may take (default 3 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }
}

/// Keeps a [`KeySet`] in step with tokend, on a task of its own that stops
/// when this is dropped.
#[derive(Debug)]
pub struct KeySync {
    keys: KeySet,
    _task: Background,
}

impl KeySync {
    /// Starts syncing over `channel` (see
    /// [`TokendEndpoint`](crate::connect::TokendEndpoint)); the key set
    /// fills when the first fetch succeeds. Must be called within a Tokio
    /// runtime.
    pub fn spawn(channel: Channel, config: KeySyncConfig) -> KeySync {
        let keys = KeySet::synced(config.min_refetch_interval);
        let task = Background::spawn(run(keys.clone(), TokenServiceClient::new(channel), config));
        KeySync { keys, _task: task }
    }

    /// The keys, shared with every verifier built from them.
    pub fn keys(&self) -> KeySet {
        self.keys.clone()
    }
}

async fn run(keys: KeySet, mut client: TokenServiceClient<Channel>, config: KeySyncConfig) {
    let mut failures: u32 = 0;
    loop {
        match fetch(&mut client, config.fetch_timeout).await {
            Ok(ring) => {
                crate::observe::key_sync(true);
                let changed = !keys.is_loaded() || keys.ring().ids() != ring.ids();
                if changed {
                    info!(keys = ?ring.ids(), "verification keys updated from tokend");
                    keys.replace(ring);
                }
                if failures > 0 {
                    info!("tokend reachable again for key sync");
                }
                failures = 0;
            }
            Err(err) => {
                crate::observe::key_sync(false);
                if failures == 0 || failures.is_power_of_two() {
                    warn!(error = %err, failures, "cannot fetch verification keys from tokend");
                }
                failures = failures.saturating_add(1);
            }
        }
        if let Some(refetch) = &keys.shared_refetch() {
            refetch.finished();
        }
        let wait = if failures == 0 {
            config.refresh_interval
        } else {
            // 200 ms, 400 ms, ... up to 30 s, never longer than the interval.
            let backoff = Duration::from_millis(200u64.saturating_mul(1 << failures.min(8)));
            backoff
                .min(Duration::from_secs(30))
                .min(config.refresh_interval)
        };
        match keys.shared_refetch() {
            Some(refetch) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = refetch.wake.notified() => {}
                }
            }
            None => tokio::time::sleep(wait).await,
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("tokend published no usable key")]
    NoKeys,
}

async fn fetch(
    client: &mut TokenServiceClient<Channel>,
    timeout: Duration,
) -> Result<KeyRing, FetchError> {
    let call = client.get_public_keys(GetPublicKeysRequest {});
    let reply = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| FetchError::Timeout)??
        .into_inner();
    let mut ring = KeyRing::empty();
    for key in &reply.keys {
        if let Err(err) = ring.insert(&key.public_key, Some(&key.key_id)) {
            warn!(key_id = %key.key_id, error = %err, "ignoring a published key");
        }
    }
    if ring.is_empty() {
        return Err(FetchError::NoKeys);
    }
    Ok(ring)
}

//! Verification keys: a ring of Ed25519 public keys by PASERK id, shared by
//! every verifier clone and replaced whole when tokend publishes new keys.
//! Fixed keys come from [`KeySet::from_paserk`]; with the `client` feature,
//! [`KeySync`] keeps them in sync with a running tokend.

#[cfg(feature = "client")]
pub use crate::key_sync::{KeySync, KeySyncConfig};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pasetors::keys::AsymmetricPublicKey;
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::version4::V4;
use tokio::sync::{Notify, watch};

/// A key that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a PASERK `k4.public` key.
    #[error("not a PASERK k4.public key")]
    NotAPublicKey,
    /// The published id does not match the key.
    #[error("key id {published} does not match its key")]
    IdMismatch {
        /// The id that came with the key.
        published: String,
    },
}

/// Public keys by PASERK `k4.pid`.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    keys: HashMap<String, AsymmetricPublicKey<V4>>,
}

impl KeyRing {
    /// An empty ring: verifies nothing.
    pub fn empty() -> KeyRing {
        KeyRing::default()
    }

    /// A ring of PASERK `k4.public` keys; ids are computed, never trusted.
    pub fn from_paserk<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<KeyRing, KeyError> {
        let mut ring = KeyRing::empty();
        for key in keys {
            ring.insert(key, None)?;
        }
        Ok(ring)
    }

    /// Adds a key. If `published_id` is given it must be the key's real id.
    pub fn insert(&mut self, paserk: &str, published_id: Option<&str>) -> Result<String, KeyError> {
        let key = AsymmetricPublicKey::<V4>::try_from(paserk.trim())
            .map_err(|_| KeyError::NotAPublicKey)?;
        let id = key_id(&key);
        if let Some(published) = published_id
            && published != id
        {
            return Err(KeyError::IdMismatch {
                published: published.to_owned(),
            });
        }
        self.keys.insert(id.clone(), key);
        Ok(id)
    }

    /// The key with this id.
    pub fn get(&self, kid: &str) -> Option<&AsymmetricPublicKey<V4>> {
        self.keys.get(kid)
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of the keys, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// PASERK `k4.pid` of a public key.
pub fn key_id(key: &AsymmetricPublicKey<V4>) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = Id::from(key).fmt(&mut text);
    text
}

/// The keys a verifier uses, shared and swappable: static keys, or keys kept
/// up to date by [`KeySync`].
#[derive(Clone, Debug)]
pub struct KeySet {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ring: RwLock<Arc<KeyRing>>,
    /// Bumped on every replacement; cache entries remember it.
    generation: AtomicU64,
    loaded: AtomicBool,
    refetch: Option<Refetch>,
}

/// How a verifier asks the key sync for an early fetch (unknown kid).
#[derive(Debug)]
pub(crate) struct Refetch {
    pub(crate) wake: Notify,
    /// Counts finished fetch attempts, for waiters.
    attempts: watch::Sender<u64>,
    in_flight: AtomicBool,
    min_interval: Duration,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Refetch {
    /// Called by the key sync after every fetch attempt, successful or not.
    #[cfg_attr(not(feature = "client"), allow(dead_code))] // used by the key sync
    pub(crate) fn finished(&self) {
        self.in_flight.store(false, Ordering::Release);
        self.attempts.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl KeySet {
    /// Fixed keys that never change.
    pub fn fixed(ring: KeyRing) -> KeySet {
        KeySet {
            shared: Arc::new(Shared {
                ring: RwLock::new(Arc::new(ring)),
                generation: AtomicU64::new(1),
                loaded: AtomicBool::new(true),
                refetch: None,
            }),
        }
    }

    /// Fixed PASERK `k4.public` keys.
    pub fn from_paserk<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<KeySet, KeyError> {
        Ok(KeySet::fixed(KeyRing::from_paserk(keys)?))
    }

    /// An empty set that a key sync fills; early fetches at most every
    /// `min_refetch_interval`.
    #[cfg_attr(not(feature = "client"), allow(dead_code))] // used by the key sync
    pub(crate) fn synced(min_refetch_interval: Duration) -> KeySet {
        let (attempts, _) = watch::channel(0);
        KeySet {
            shared: Arc::new(Shared {
                ring: RwLock::new(Arc::new(KeyRing::empty())),
                generation: AtomicU64::new(0),
                loaded: AtomicBool::new(false),
                refetch: Some(Refetch {
                    wake: Notify::new(),
                    attempts,
                    in_flight: AtomicBool::new(false),
                    min_interval: min_refetch_interval,
                    last: std::sync::Mutex::new(None),
                }),
            }),
        }
    }

    /// The early-fetch channel of a synced set.
    #[cfg_attr(not(feature = "client"), allow(dead_code))] // used by the key sync
    pub(crate) fn shared_refetch(&self) -> Option<&Refetch> {
        self.shared.refetch.as_ref()
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<KeyRing> {
        match self.shared.ring.read() {
            Ok(ring) => Arc::clone(&ring),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Changes whenever the ring is replaced.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Whether keys were ever loaded (a synced set starts empty).
    pub fn is_loaded(&self) -> bool {
        self.shared.loaded.load(Ordering::Acquire)
    }

    /// Replaces every key at once.
    pub fn replace(&self, ring: KeyRing) {
        let ring = Arc::new(ring);
        match self.shared.ring.write() {
            Ok(mut slot) => *slot = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.shared.loaded.store(true, Ordering::Release);
    }

    /// Asks the key sync for an early fetch, unless one was asked for less
    /// than the minimum interval ago. Returns whether the request was made.
    pub fn request_refetch(&self) -> bool {
        let Some(refetch) = &self.shared.refetch else {
            return false;
        };
        let Ok(mut last) = refetch.last.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < refetch.min_interval) {
            return false;
        }
        *last = Some(now);
        refetch.in_flight.store(true, Ordering::Release);
        refetch.wake.notify_one();
        true
    }

    /// Requests an early fetch (rate-limited) and waits up to `limit` for it
    /// to finish. Concurrent callers share one fetch; when none is allowed
    /// and none is running, returns `false` at once.
    pub async fn refetch_and_wait(&self, limit: Duration) -> bool {
        let Some(refetch) = &self.shared.refetch else {
            return false;
        };
        let mut attempts = refetch.attempts.subscribe();
        attempts.mark_unchanged();
        let requested = self.request_refetch();
        if !requested && !refetch.in_flight.load(Ordering::Acquire) {
            return false;
        }
        matches!(
            tokio::time::timeout(limit, attempts.changed()).await,
            Ok(Ok(()))
        )
    }
}

#[cfg(test)]
mod tests {
    use pasetors::keys::{AsymmetricKeyPair, Generate};

    use super::*;

    fn paserk(key: &AsymmetricPublicKey<V4>) -> String {
        let mut text = String::new();
        key.fmt(&mut text).unwrap();
        text
    }

    #[test]
    fn ids_are_computed_from_the_key() {
        let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
        let text = paserk(&pair.public);
        let mut ring = KeyRing::empty();
        let id = ring.insert(&text, None).unwrap();
        assert!(id.starts_with("k4.pid."));
        assert!(ring.get(&id).is_some());
        assert!(matches!(
            ring.insert(&text, Some("k4.pid.wrong")),
            Err(KeyError::IdMismatch { .. })
        ));
        assert!(matches!(
            ring.insert("k4.secret.abc", None),
            Err(KeyError::NotAPublicKey)
        ));
    }

    #[test]
    fn replacing_the_ring_bumps_the_generation() {
        let set = KeySet::synced(Duration::from_secs(1));
        assert!(!set.is_loaded());
        let before = set.generation();
        set.replace(KeyRing::empty());
        assert!(set.is_loaded());
        assert!(set.generation() > before);
    }

    #[test]
    fn early_fetches_are_rate_limited() {
        let set = KeySet::synced(Duration::from_secs(3600));
        assert!(set.request_refetch());
        assert!(!set.request_refetch());
        assert!(!KeySet::fixed(KeyRing::empty()).request_refetch());
    }
}

//! A bounded cache of verified tokens, so a token presented again costs a
//! SHA-256 and a map lookup instead of an Ed25519 verification.
//!
//! Keyed by SHA-256 of the whole token text: a forged token cannot collide
//! with a cached one. Only successes are cached; an entry is used only while
//! its token is unexpired and while the key ring it was verified against is
//! current, and it is dropped at its token's expiry at the latest.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::token::Claims;

/// SHA-256 of a token.
pub(crate) type TokenDigest = [u8; 32];

/// The digest of `token`.
pub(crate) fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Keys are already uniform digests of tokens that passed verification, so
/// their first 8 bytes are as good a hash as any (and no one can choose them).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) claims: Arc<Claims>,
    /// `exp` in ms since the epoch.
    pub(crate) exp_ms: i64,
    /// The key-ring generation it was verified against.
    pub(crate) generation: u64,
}

/// The cache. Capacity bounds memory: about 1 KiB per entry.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    map: RwLock<HashMap<TokenDigest, Entry, BuildHasherDefault<DigestHasher>>>,
    capacity: usize,
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            map: RwLock::new(HashMap::default()),
            capacity: capacity.max(1),
        }
    }

    /// The entry for `digest`, if it was verified against `generation`.
    pub(crate) fn get(&self, digest: &TokenDigest, generation: u64) -> Option<Entry> {
        let map = self.map.read().ok()?;
        map.get(digest)
            .filter(|e| e.generation == generation)
            .cloned()
    }

    pub(crate) fn remove(&self, digest: &TokenDigest) {
        if let Ok(mut map) = self.map.write() {
            map.remove(digest);
        }
    }

    /// Adds an entry; when full, first drops entries that are expired (at
    /// `expired_before_ms`) or stale, then an arbitrary eighth.
    pub(crate) fn insert(&self, digest: TokenDigest, entry: Entry, expired_before_ms: i64) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.len() >= self.capacity {
            let generation = entry.generation;
            map.retain(|_, e| e.exp_ms > expired_before_ms && e.generation == generation);
            if map.len() >= self.capacity {
                let evict: Vec<TokenDigest> =
                    map.keys().take(self.capacity / 8 + 1).copied().collect();
                for key in evict {
                    map.remove(&key);
                }
            }
        }
        map.insert(digest, entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(exp_ms: i64, generation: u64) -> Entry {
        Entry {
            claims: Arc::new(Claims {
                iss: "i".into(),
                sub: "s".into(),
                aud: "a".into(),
                exp: exp_ms / 1000,
                iat: 0,
                nbf: 0,
                jti: "j".into(),
                sid: None,
                scope: String::new(),
                av: None,
                cnf: None,
            }),
            exp_ms,
            generation,
        }
    }

    #[test]
    fn entries_belong_to_a_key_generation() {
        let cache = VerifiedCache::new(10);
        let d = digest("token");
        cache.insert(d, entry(10_000, 1), 0);
        assert!(cache.get(&d, 1).is_some());
        assert!(cache.get(&d, 2).is_none());
        assert!(cache.get(&digest("other"), 1).is_none());
        cache.remove(&d);
        assert!(cache.get(&d, 1).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = VerifiedCache::new(64);
        for i in 0..1000 {
            cache.insert(digest(&i.to_string()), entry(10_000, 1), 0);
            assert!(cache.len() <= 64);
        }
        // Expired entries go first.
        let cache = VerifiedCache::new(4);
        for i in 0..4 {
            cache.insert(digest(&format!("old{i}")), entry(1_000, 1), 0);
        }
        cache.insert(digest("new"), entry(10_000, 1), 5_000);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&digest("new"), 1).is_some());
    }
}

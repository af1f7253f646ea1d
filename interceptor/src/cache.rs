//! A bounded cache of verified tokens, so a token presented again costs a
//! map lookup and a comparison instead of an Ed25519 verification.
//!
//! Keyed by 8 bytes of the token's signature (taken from its text, the bytes
//! right before the footer), and a hit counts only if the whole token text is
//! equal to the cached one: a forged token cannot pass as a cached one, and
//! no one can choose the signature bytes of a token tokend signed, so keys
//! are as uniform as random numbers. (Hashing the whole token would cost
//! more than the rest of a cached verification.) Only successes are cached;
//! an entry is used only while its token is unexpired and while the key ring
//! it was verified against is current, and it is dropped at its token's
//! expiry at the latest.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use crate::token::Claims;
use crate::verify::PeerCertificates;

/// Where a token is filed: 8 bytes of its signature.
pub(crate) type TokenKey = u64;

/// The key of `token`: the 8 bytes before its footer (the tail of the
/// signature), or of its end if it has no footer.
pub(crate) fn key(token: &str) -> TokenKey {
    let bytes = token.as_bytes();
    let end = token.rfind('.').unwrap_or(bytes.len());
    let start = end.saturating_sub(8);
    let mut key = [0u8; 8];
    if let Some(tail) = bytes.get(start..end) {
        key[..tail.len()].copy_from_slice(tail);
    }
    u64::from_le_bytes(key)
}

/// Keys are taken from signatures no one can choose, so they are their own
/// hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The token itself: a hit must equal it.
    pub(crate) token: Box<str>,
    pub(crate) claims: Arc<Claims>,
    /// `exp` in ms since the epoch.
    pub(crate) exp_ms: i64,
    /// The key-ring generation it was verified against.
    pub(crate) generation: u64,
    /// For a certificate-bound token: the connection (its certificate list)
    /// the binding was last confirmed for, so the same connection presenting
    /// it again costs a pointer comparison.
    pub(crate) peer: Option<PeerCertificates>,
}

/// What the cache says about a token presented on a connection.
pub(crate) struct Hit {
    pub(crate) claims: Arc<Claims>,
    pub(crate) exp_ms: i64,
    /// The token's binding was confirmed for this very connection.
    pub(crate) peer_confirmed: bool,
}

/// The cache. Capacity bounds memory: about 1 KiB per entry.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    map: RwLock<HashMap<TokenKey, Entry, BuildHasherDefault<KeyHasher>>>,
    capacity: usize,
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            map: RwLock::new(HashMap::default()),
            capacity: capacity.max(1),
        }
    }

    /// The entry for `token` (filed under `key`), if it was verified against
    /// `generation`, and whether its binding was confirmed for `peer`.
    pub(crate) fn get(
        &self,
        key: TokenKey,
        token: &str,
        generation: u64,
        peer: Option<&PeerCertificates>,
    ) -> Option<Hit> {
        let map = self.map.read().ok()?;
        let entry = map
            .get(&key)
            .filter(|e| e.generation == generation && *e.token == *token)?;
        let peer_confirmed = match (&entry.peer, peer) {
            (Some(confirmed), Some(peer)) => Arc::ptr_eq(confirmed, peer),
            _ => false,
        };
        Some(Hit {
            claims: Arc::clone(&entry.claims),
            exp_ms: entry.exp_ms,
            peer_confirmed,
        })
    }

    /// Remembers that the binding of `token` (under `key`) holds on
    /// `peer`'s connection.
    pub(crate) fn confirm_peer(&self, key: TokenKey, token: &str, peer: &PeerCertificates) {
        if let Ok(mut map) = self.map.write()
            && let Some(entry) = map.get_mut(&key).filter(|e| *e.token == *token)
        {
            entry.peer = Some(Arc::clone(peer));
        }
    }

    pub(crate) fn remove(&self, key: TokenKey) {
        if let Ok(mut map) = self.map.write() {
            map.remove(&key);
        }
    }

    /// Adds an entry; when full, first drops entries that are expired (at
    /// `expired_before_ms`) or stale, then an arbitrary eighth.
    pub(crate) fn insert(&self, key: TokenKey, entry: Entry, expired_before_ms: i64) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.len() >= self.capacity {
            let generation = entry.generation;
            map.retain(|_, e| e.exp_ms > expired_before_ms && e.generation == generation);
            if map.len() >= self.capacity {
                let evict: Vec<TokenKey> =
                    map.keys().take(self.capacity / 8 + 1).copied().collect();
                for key in evict {
                    map.remove(&key);
                }
            }
        }
        map.insert(key, entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: &str, exp_ms: i64, generation: u64) -> Entry {
        Entry {
            token: token.into(),
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
                act: None,
            }),
            exp_ms,
            generation,
            peer: None,
        }
    }

    fn put(cache: &VerifiedCache, token: &str, exp_ms: i64, generation: u64, expired_before: i64) {
        cache.insert(key(token), entry(token, exp_ms, generation), expired_before);
    }

    #[test]
    fn keys_come_from_the_signature_before_the_footer() {
        assert_eq!(
            key("v4.public.AAAAsignatur.footer"),
            key("v4.public.BBBBsignatur.other")
        );
        assert_ne!(
            key("v4.public.AAAAsignatur.footer"),
            key("v4.public.AAAAsignatuX.footer")
        );
        // Short or odd texts are keys too.
        let _ = (key(""), key("."), key("abc"));
    }

    #[test]
    fn a_hit_needs_the_whole_token_and_its_key_generation() {
        let cache = VerifiedCache::new(10);
        let token = "v4.public.payload-and-signature.footer";
        put(&cache, token, 10_000, 1, 0);
        assert!(cache.get(key(token), token, 1, None).is_some());
        assert!(cache.get(key(token), token, 2, None).is_none());
        // Same key (same signature tail), different token: a forgery.
        let forged = "v4.public.PAYLOAD-and-signature.footer";
        assert_eq!(key(forged), key(token));
        assert!(cache.get(key(forged), forged, 1, None).is_none());
        cache.remove(key(token));
        assert!(cache.get(key(token), token, 1, None).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = VerifiedCache::new(64);
        for i in 0..1000 {
            put(&cache, &format!("t.{i:08}.f"), 10_000, 1, 0);
            assert!(cache.len() <= 64);
        }
        // Expired entries go first.
        let cache = VerifiedCache::new(4);
        for i in 0..4 {
            put(&cache, &format!("t.old{i:05}.f"), 1_000, 1, 0);
        }
        put(&cache, "t.new00000.f", 10_000, 1, 5_000);
        assert_eq!(cache.len(), 1);
        assert!(
            cache
                .get(key("t.new00000.f"), "t.new00000.f", 1, None)
                .is_some()
        );
    }
}

//! What this tokend replica knows of accounts' current state: every Refresh
//! checks the session's account (disabled, deleted or cut off since the
//! session began? its current scopes?), and reading Redis for that on every
//! Refresh would cost a round trip each.
//!
//! So the state is cached, bounded, and kept fresh by the revocation feed
//! that every replica already follows: each change to an account is
//! announced there (a subject cut-off, or an "account changed" entry), and
//! the follower drops the cached entry before anything else sees the news.
//! Two safety nets: an entry lives at most [`ENTRY_TTL`] (in case an
//! announcement was lost), and while the follower cannot read the feed the
//! cache is bypassed altogether. A read that raced an invalidation is not
//! cached.
//!
//! Staleness is harmless for revocation: a Refresh that read a stale entry
//! still mints tokens with the session's old account version, which the
//! announced cut-off already revokes, and its successor fails at the next
//! Refresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{AccountKind, AccountState, Store, StoreError};

/// How long a cached account state is trusted without news from the feed.
pub const ENTRY_TTL: Duration = Duration::from_secs(60);

/// How many accounts are cached at most (about 100 bytes each).
pub const DEFAULT_CAPACITY: usize = 100_000;

type Key = (AccountKind, String);

/// When an entry was read, and what was read (`None`: no such account).
type Entry = (Instant, Option<Arc<AccountState>>);

/// The per-replica cache of account states. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccountStates {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    entries: Mutex<HashMap<Key, Entry>>,
    capacity: usize,
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// Whether the feed is followed (else every lookup reads the store).
    following: AtomicBool,
}

impl AccountStates {
    /// A cache over `store` holding at most `capacity` accounts (0: none,
    /// every lookup reads the store). It is bypassed until
    /// [`following`](Self::following) says the feed is read.
    pub fn new(store: Store, capacity: usize) -> AccountStates {
        AccountStates {
            inner: Arc::new(Inner {
                store,
                entries: Mutex::new(HashMap::new()),
                capacity,
                generation: AtomicU64::new(0),
                following: AtomicBool::new(false),
            }),
        }
    }

    /// The account's state, from the cache if it is trustworthy, else from
    /// the store (and then cached). `None`: no such account.
    pub async fn get(
        &self,
        kind: AccountKind,
        name: &str,
    ) -> Result<Option<Arc<AccountState>>, StoreError> {
        let inner = &self.inner;
        if inner.capacity == 0 {
            return Ok(self.fresh(kind, name).await?.map(Arc::new));
        }
        let key = (kind, name.to_owned());
        if inner.following.load(Ordering::Acquire)
            && let Ok(entries) = inner.entries.lock()
            && let Some((at, state)) = entries.get(&key)
            && at.elapsed() < ENTRY_TTL
        {
            return Ok(state.clone());
        }
        let generation = inner.generation.load(Ordering::Acquire);
        let state = self.fresh(kind, name).await?.map(Arc::new);
        if inner.following.load(Ordering::Acquire)
            && let Ok(mut entries) = inner.entries.lock()
            // Not if an invalidation came in while the store was read.
            && inner.generation.load(Ordering::Acquire) == generation
        {
            if entries.len() >= inner.capacity {
                entries.retain(|_, (at, _)| at.elapsed() < ENTRY_TTL);
                if entries.len() >= inner.capacity {
                    entries.clear();
                }
            }
            entries.insert(key, (Instant::now(), state.clone()));
        }
        Ok(state)
    }

    /// The account's state read from the store now, bypassing the cache (for
    /// the rare calls that must be exact, like tokend's session RPCs).
    pub async fn fresh(
        &self,
        kind: AccountKind,
        name: &str,
    ) -> Result<Option<AccountState>, StoreError> {
        self.inner.store.account(kind, name).await
    }

    /// The store it reads.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Forgets what is cached about `name` (either kind): it changed.
    pub fn forget(&self, name: &str) {
        let inner = &self.inner;
        inner.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = inner.entries.lock() {
            entries.remove(&(AccountKind::User, name.to_owned()));
            entries.remove(&(AccountKind::Client, name.to_owned()));
        }
    }

    /// Says whether the revocation feed is being followed. While it is not,
    /// changes could be missed, so the cache is emptied and bypassed.
    pub fn following(&self, following: bool) {
        let inner = &self.inner;
        let was = inner.following.swap(following, Ordering::AcqRel);
        if was != following {
            inner.generation.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut entries) = inner.entries.lock() {
                entries.clear();
            }
        }
    }

    /// How many accounts are cached.
    pub fn len(&self) -> usize {
        self.inner.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AccountChange, MemoryStore, NewAccount};

    async fn store_with_alice() -> Store {
        let store = Store::Memory(MemoryStore::new());
        let account = NewAccount::User {
            password_hash: "$argon2id$x",
        };
        store
            .create_account("alice", account, "read write")
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn cached_states_are_served_until_forgotten() {
        let store = store_with_alice().await;
        let states = AccountStates::new(store.clone(), 10);
        states.following(true);
        let before = states
            .get(AccountKind::User, "alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(before.scope, "read write");
        store
            .change_account(AccountKind::User, "alice", AccountChange::Scopes("read"))
            .await
            .unwrap();
        // Cached: the change is not seen until the feed says so...
        let cached = states
            .get(AccountKind::User, "alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cached.scope, "read write");
        // ...and at once after.
        states.forget("alice");
        let after = states
            .get(AccountKind::User, "alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.scope, "read");
        assert_eq!(states.len(), 1);
    }

    #[tokio::test]
    async fn without_the_feed_every_lookup_reads_the_store() {
        let store = store_with_alice().await;
        let states = AccountStates::new(store.clone(), 10);
        states.get(AccountKind::User, "alice").await.unwrap();
        assert!(states.is_empty());
        states.following(true);
        states.get(AccountKind::User, "alice").await.unwrap();
        assert_eq!(states.len(), 1);
        states.following(false);
        assert!(states.is_empty(), "losing the feed empties the cache");
        store
            .change_account(AccountKind::User, "alice", AccountChange::Disable)
            .await
            .unwrap();
        let state = states
            .get(AccountKind::User, "alice")
            .await
            .unwrap()
            .unwrap();
        assert!(!state.active);
    }

    #[tokio::test]
    async fn unknown_accounts_and_a_full_cache_are_handled() {
        let store = store_with_alice().await;
        let states = AccountStates::new(store, 2);
        states.following(true);
        assert!(
            states
                .get(AccountKind::User, "nobody")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            states
                .get(AccountKind::Client, "alice")
                .await
                .unwrap()
                .is_none()
        );
        states.get(AccountKind::User, "alice").await.unwrap();
        assert!(states.len() <= 2);
    }
}

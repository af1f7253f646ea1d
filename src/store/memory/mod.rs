//! The embedded store: everything in one process's memory, for development
//! and `make run`. Same semantics as Redis (rotation, reuse detection, grace
//! window, idle and absolute expiry, account versions, failure counters,
//! the feed); lost when the process ends.
//!
//! One mutex guards all state: every operation is short, and it makes each
//! one atomic the way a Lua script is in Redis.

mod accounts;
mod feed;
mod sessions;
mod throttle;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{ClientRecord, FailureScope, Failures, FeedCursor, FeedEntry, StoreError, UserRecord};

pub use feed::MemoryFollower;
use sessions::Session;

/// Expired sessions and counters are swept once per this many writes.
const SWEEP_EVERY: u64 = 1024;

/// The in-memory store. Cheap to clone; clones share the data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Counts feed appends, to wake followers.
    appended: watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Arc::default(),
            appended: watch::channel(0).0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<String, UserRecord>,
    clients: HashMap<String, ClientRecord>,
    sessions: HashMap<String, Session>,
    /// Each user's session index: session ids by insertion number, so a
    /// sweep can page through it while entries are removed.
    index: HashMap<String, BTreeMap<u64, String>>,
    /// The next insertion number.
    index_next: u64,
    /// Failed-login counters and when they expire (ms since the epoch).
    failures: HashMap<FailureScope, (Failures, i64)>,
    /// (account, source) pairs that logged in, and until when they count.
    known_sources: HashMap<(String, String), i64>,
    /// Accounts whose login turn is taken, and until when.
    turns: HashMap<String, i64>,
    feed: VecDeque<FeedEntry>,
    last_cursor: FeedCursor,
    /// When the first entry was published.
    origin_ms: Option<i64>,
    writes: u64,
}

impl State {
    /// Counts a write and, now and then, drops what has expired, so an
    /// unauthenticated caller cannot grow the store without bound.
    fn wrote(&mut self) {
        self.writes += 1;
        if !self.writes.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let now = crate::now_ms();
        self.sessions.retain(|_, s| s.expires_at_ms > now);
        self.failures.retain(|_, (_, until)| *until > now);
        self.known_sources.retain(|_, until| *until > now);
        self.turns.retain(|_, until| *until > now);
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        // A poisoned lock means a panic elsewhere mid-update; refuse to serve
        // possibly half-written state rather than propagate the panic.
        self.state
            .lock()
            .map_err(|_| StoreError::Corrupt("memory store lock poisoned".into()))
    }

    /// Always answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }
}

/// The next account version after `version`: see the store docs.
fn next_version(version: i64) -> i64 {
    version.saturating_add(1).max(crate::now_us())
}

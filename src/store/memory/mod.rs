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

use crate::clock::Clock;

use super::{ClientRecord, FailureScope, Failures, FeedCursor, FeedEntry, StoreError, UserRecord};

pub use feed::MemoryFollower;
use sessions::{Ended, Session};

/// Expired sessions and counters are swept once per this many writes.
const SWEEP_EVERY: u64 = 1024;

/// The in-memory store. Cheap to clone; clones share the data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Counts feed appends, to wake followers.
    appended: watch::Sender<u64>,
    /// What expiry is judged by.
    clock: Clock,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_clock(Clock::system())
    }
}

#[derive(Debug, Default)]
struct State {
    /// Users and clients by name: ordered, for listing by prefix.
    users: BTreeMap<String, UserRecord>,
    clients: BTreeMap<String, ClientRecord>,
    /// Certificate identity → the client that claimed it.
    cert_owners: HashMap<String, String>,
    sessions: HashMap<String, Session>,
    /// Ended sessions: the token that revoked each or was reused, its
    /// subject, and until when it is remembered (ms since the epoch).
    ended: HashMap<String, Ended>,
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
    /// Accounts that logged out everywhere just now, and until when.
    cut_off_slots: HashMap<String, i64>,
    feed: VecDeque<FeedEntry>,
    /// The live entry of each subject and kind ([`crate::store::FeedEvent::live_key`]).
    feed_live: HashMap<String, FeedCursor>,
    last_cursor: FeedCursor,
    /// When the first entry was published.
    origin_ms: Option<i64>,
    writes: u64,
}

impl State {
    /// Counts a write and, now and then, drops what has expired, so an
    /// unauthenticated caller cannot grow the store without bound.
    fn wrote(&mut self, now: i64) {
        self.writes += 1;
        if !self.writes.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        self.sessions.retain(|_, s| s.expires_at_ms > now);
        self.failures.retain(|_, (_, until)| *until > now);
        self.known_sources.retain(|_, until| *until > now);
        self.turns.retain(|_, until| *until > now);
        self.cut_off_slots.retain(|_, until| *until > now);
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store whose expiries follow `clock`.
    pub fn with_clock(clock: Clock) -> MemoryStore {
        MemoryStore {
            state: Arc::default(),
            appended: watch::channel(0).0,
            clock,
        }
    }

    /// The clock the store judges expiry by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Now, ms since the epoch, by the store's clock.
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
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

/// The next account version after `version` at `now_us`: see the store docs.
fn next_version(version: i64, now_us: i64) -> i64 {
    version.saturating_add(1).max(now_us)
}

//! The revocation feed: every path that ends a session or cuts off an
//! account appends to it (in the store, so every replica sees it), and
//! `WatchRevocations` streams it to interceptors, which then refuse the
//! still-unexpired access tokens it covers.
//!
//! One follower task per process reads new entries from the store; it keeps
//! this replica's [`AccountStates`] fresh (account changes are announced on
//! the feed too), extends the replica's in-memory [`window`] of every entry
//! that still matters, and fans entries out to local watchers. A watcher
//! ([`subscription`]) first gets the history it asked for from the window
//! (everything still relevant, or everything after its cursor), then live
//! entries, deduplicated by cursor, and a heartbeat every second. If part of
//! the history it needs is gone, it is told so.
//!
//! Entries are kept as long as they matter (the access-token lifetime plus a
//! margin), however many there are: nothing that still matters is trimmed.

mod pacing;
mod subscription;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::accounts::AccountStates;
use crate::clock::millis;
use crate::store::{FeedCursor, FeedEntry, FeedEvent, FeedFollower, Store, StoreError};

use pacing::HistoryPacer;
pub use subscription::{FeedItem, Subscription, WatchEnded};
use window::Window;

/// The scope a service client's token needs to watch the feed (which names
/// revoked sessions and cut-off accounts). A verified client certificate
/// (mTLS) also suffices.
pub const WATCH_SCOPE: &str = "tokend.revocations";

/// How often a watcher hears from the feed when nothing happens.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// If this process has not read the store's feed for this long, watchers
/// stop getting heartbeats (their streams end with `STORE_UNAVAILABLE`), so
/// fail-closed interceptors notice. A healthy follower reads every ≤ 1 s.
const FOLLOWER_STALE_MS: i64 = 12_000;

/// What a replica allows its watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Most watchers at once.
    pub max_watchers: usize,
    /// Most watchers at once of one caller (a service client): one
    /// credential cannot take every place.
    pub max_watchers_per_caller: usize,
    /// History entries per second sent to catching-up watchers, all
    /// together (0: unpaced). 250,000 a second is a few percent of a core,
    /// and a new watcher's whole history (about 50,000 entries after a busy
    /// quarter hour) in a fifth of a second.
    pub history_rate: u32,
}

impl Default for WatchLimits {
    fn default() -> WatchLimits {
        WatchLimits {
            max_watchers: 10_000,
            max_watchers_per_caller: 1_000,
            history_rate: 250_000,
        }
    }
}

/// Why a watcher was not taken on.
#[derive(Debug, thiserror::Error)]
pub enum TooManyWatchers {
    /// The replica serves as many as it may.
    #[error("this replica serves its maximum of {0} revocation-feed watchers")]
    Replica(usize),
    /// The caller has as many streams open on this replica as it may.
    #[error("this caller has its maximum of {0} revocation-feed streams on this replica")]
    Caller(usize),
}

/// Who watches: the caller (for the per-caller limit) and the account
/// whose cut-off ends the stream, with its version when the stream began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// The caller, as the per-caller limit counts it (its client id).
    pub caller: String,
    /// The watcher's account and version: a later cut-off of it ends the
    /// stream.
    pub account: Option<(String, i64)>,
}

/// Publishes revocations and serves watchers.
#[derive(Debug, Clone)]
pub struct RevocationFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// The longest access-token lifetime: how long a revocation matters.
    relevance: Duration,
    live: broadcast::Sender<FeedEntry>,
    /// When the follower last read the store successfully (ms since epoch).
    followed_at_ms: AtomicI64,
    /// The entries that still matter; loaded by [`RevocationFeed::start`].
    window: std::sync::OnceLock<Window>,
    /// Watchers connected now, and the most allowed.
    watchers: AtomicUsize,
    max_watchers: usize,
    /// Watchers connected now per caller, and the most allowed each.
    per_caller: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    max_per_caller: usize,
    /// The budget history is sent within.
    pacer: HistoryPacer,
}

impl RevocationFeed {
    /// A feed over `store` whose entries matter for `relevance` (the access
    /// token lifetime), serving watchers within `limits`. Call
    /// [`start`](Self::start) before serving watchers.
    pub fn new(store: Store, relevance: Duration, limits: WatchLimits) -> RevocationFeed {
        let (live, _) = broadcast::channel(1024);
        let now = store.clock().now_ms();
        RevocationFeed {
            inner: Arc::new(Inner {
                store,
                relevance,
                live,
                followed_at_ms: AtomicI64::new(now),
                window: std::sync::OnceLock::new(),
                watchers: AtomicUsize::new(0),
                max_watchers: limits.max_watchers,
                per_caller: std::sync::Mutex::new(std::collections::HashMap::new()),
                max_per_caller: limits.max_watchers_per_caller.max(1),
                pacer: HistoryPacer::new(limits.history_rate),
            }),
        }
    }

    /// A feed for announcing only (the admin commands): it never serves
    /// watchers.
    pub fn publisher(store: Store, relevance: Duration) -> RevocationFeed {
        let limits = WatchLimits {
            max_watchers: 0,
            ..WatchLimits::default()
        };
        RevocationFeed::new(store, relevance, limits)
    }

    /// Starts following the store, loads the window of every entry that
    /// still matters up to where following starts (so none falls between),
    /// and spawns the task that keeps `accounts` fresh, extends the window
    /// and fans new entries out to watchers.
    pub async fn start(&self, accounts: AccountStates) -> Result<(), StoreError> {
        let follower = self.inner.store.feed_follower().await?;
        let window =
            Window::load(&self.inner.store, self.inner.relevance, follower.position()).await?;
        info!(entries = window.len(), "revocation feed loaded");
        let _ = self.inner.window.set(window);
        accounts.following(true);
        tokio::spawn(follow(follower, Arc::clone(&self.inner), accounts));
        Ok(())
    }

    /// Announces that session `session_id` ended.
    pub async fn session_ended(&self, session_id: &str) -> Result<(), StoreError> {
        self.publish(FeedEvent::Session {
            session_id: session_id.to_owned(),
        })
        .await
    }

    /// Announces a cut-off: every token of `subject` with an account version
    /// below `version` is revoked.
    pub async fn subject_cut_off(&self, subject: &str, version: i64) -> Result<(), StoreError> {
        self.publish(FeedEvent::Subject {
            subject: subject.to_owned(),
            version,
        })
        .await
    }

    /// Announces an actor cut-off: every delegated token that `actor`
    /// exchanged under an account version below `version` is revoked.
    pub async fn actor_cut_off(&self, actor: &str, version: i64) -> Result<(), StoreError> {
        self.publish(FeedEvent::Actor {
            actor: actor.to_owned(),
            version,
        })
        .await
    }

    /// Announces that an account changed without a cut-off (new scopes,
    /// enabled), so every replica forgets what it cached about it.
    pub async fn account_changed(&self, subject: &str) -> Result<(), StoreError> {
        self.publish(FeedEvent::Account {
            subject: subject.to_owned(),
        })
        .await
    }

    /// Announces that session `session_id` ended, for a caller that has
    /// ended it already. If the feed cannot take it now, the announcement
    /// is retried in the background for about a minute, and the error is
    /// returned: a call whose end is not announced yet must not be
    /// answered as done (resource services would accept the session's
    /// tokens meanwhile); its caller retries, and the store tells the
    /// retry to announce again.
    pub async fn announce_session_ended(&self, session_id: &str) -> Result<(), StoreError> {
        let Err(err) = self.session_ended(session_id).await else {
            return Ok(());
        };
        let feed = self.clone();
        let session_id = session_id.to_owned();
        tokio::spawn(async move {
            let announced = retry_in_background(|| feed.session_ended(&session_id)).await;
            if let Err(err) = announced {
                warn!(sid = %session_id, error = %err, "gave up announcing a revoked session");
            }
        });
        Err(err)
    }

    /// Announces a cut-off that is made already but could not be
    /// announced, retrying in the background for about a minute.
    pub fn announce_cut_off_later(&self, subject: &str, version: i64) {
        let feed = self.clone();
        let subject = subject.to_owned();
        tokio::spawn(async move {
            let announced = retry_in_background(|| feed.subject_cut_off(&subject, version)).await;
            if let Err(err) = announced {
                warn!(sub = %subject, error = %err, "gave up announcing a cut-off");
            }
        });
    }

    async fn publish(&self, event: FeedEvent) -> Result<(), StoreError> {
        let now = self.inner.store.clock().now_ms();
        let until = now.saturating_add(millis(self.inner.relevance));
        let published = self
            .inner
            .store
            .publish_revocation(&event, now, until)
            .await;
        crate::telemetry::record(&crate::facts::Fact::Feed(crate::facts::Feed::Published(
            published.is_ok(),
        )));
        published.map(|_| ())
    }

    /// `watcher`'s stream, starting after `cursor` (or with everything
    /// still relevant); it ends when `stopping` turns true or the watcher's
    /// account is cut off. Refused beyond the replica's maximum, or the
    /// caller's.
    pub fn subscribe(
        &self,
        watcher: Watcher,
        cursor: Option<FeedCursor>,
        stopping: watch::Receiver<bool>,
    ) -> Result<Subscription, TooManyWatchers> {
        let inner = &self.inner;
        {
            let Ok(mut per_caller) = inner.per_caller.lock() else {
                return Err(TooManyWatchers::Caller(inner.max_per_caller));
            };
            let count = per_caller.entry(watcher.caller.clone()).or_insert(0);
            if *count >= inner.max_per_caller {
                return Err(TooManyWatchers::Caller(inner.max_per_caller));
            }
            *count += 1;
        }
        let counted = inner
            .watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.max_watchers).then_some(n + 1)
            });
        let Ok(before) = counted else {
            inner.release_caller(&watcher);
            return Err(TooManyWatchers::Replica(inner.max_watchers));
        };
        crate::telemetry::record(&crate::facts::Fact::Feed(crate::facts::Feed::Watchers(
            before.saturating_add(1),
        )));
        Ok(Subscription::new(
            Arc::clone(inner),
            watcher,
            cursor,
            stopping,
            true,
        ))
    }

    /// This replica's own stream of the feed (for its introspection): what
    /// a watcher receives, but neither limited nor counted as a watcher.
    pub fn follow(
        &self,
        cursor: Option<FeedCursor>,
        stopping: watch::Receiver<bool>,
    ) -> Subscription {
        let watcher = Watcher {
            caller: "tokend".to_owned(),
            account: None,
        };
        Subscription::new(Arc::clone(&self.inner), watcher, cursor, stopping, false)
    }

    /// How many watchers are connected.
    pub fn watchers(&self) -> usize {
        self.inner.watchers.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Counts one of `watcher`'s streams less.
    fn release_caller(&self, watcher: &Watcher) {
        if let Ok(mut per_caller) = self.per_caller.lock()
            && let Some(count) = per_caller.get_mut(&watcher.caller)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_caller.remove(&watcher.caller);
            }
        }
    }
}

/// Tries `publish` up to 8 times, 250 ms after the first failure and
/// doubling (about a minute in all); the last error if none succeeded.
async fn retry_in_background<F, Fut>(mut publish: F) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut last = Ok(());
    for attempt in 0..8u32 {
        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        last = publish().await;
        if last.is_ok() {
            return last;
        }
    }
    last
}

/// Follows the store's feed: keeps `accounts` fresh, extends the window and
/// fans entries out; runs for the process's life.
async fn follow(mut follower: FeedFollower, feed: Arc<Inner>, accounts: AccountStates) {
    let mut failures: u32 = 0;
    loop {
        match follower.next().await {
            Ok(entries) => {
                feed.followed_at_ms
                    .store(feed.store.clock().now_ms(), Ordering::Release);
                crate::telemetry::record(&crate::facts::Fact::Feed(crate::facts::Feed::Lag(
                    Duration::ZERO,
                )));
                if failures > 0 {
                    info!("revocation feed reachable again");
                    accounts.following(true);
                }
                failures = 0;
                for entry in &entries {
                    if let FeedEvent::Subject { subject, .. }
                    | FeedEvent::Account { subject }
                    | FeedEvent::Actor { actor: subject, .. } = &entry.event
                    {
                        accounts.forget(subject);
                    }
                }
                // Into the window first, then to the watchers: a watcher that
                // finished its history before this batch hears it live.
                if let Some(window) = feed.window.get() {
                    window.extend(&entries);
                }
                for entry in entries {
                    // No receivers is fine: nobody is watching.
                    let _ = feed.live.send(entry);
                }
            }
            Err(err) => {
                if failures == 0 || failures.is_power_of_two() {
                    warn!(error = %err, "cannot read the revocation feed");
                }
                // Account changes could be missed meanwhile.
                accounts.following(false);
                let since = feed.followed_at_ms.load(Ordering::Acquire);
                let lag_ms = feed.store.clock().now_ms().saturating_sub(since);
                crate::telemetry::record(&crate::facts::Fact::Feed(crate::facts::Feed::Lag(
                    Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0)),
                )));
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100u64 << failures.min(5));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

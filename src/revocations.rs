//! The revocation feed: every path that ends a session appends to it (in the
//! store, so every replica sees it), and `WatchRevocations` streams it to
//! interceptors, which then refuse the session's still-unexpired access
//! tokens.
//!
//! One follower task per process reads new entries from the store and fans
//! them out to local watchers; a watcher first gets the history it asked for
//! (everything still relevant, or everything after its cursor), then live
//! entries, deduplicated by cursor, and a heartbeat every second.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::authority::millis;
use crate::store::{FeedEntry, FeedEvent, FeedFollower, Store, StoreError, parse_cursor};

/// How often a watcher hears from the feed when nothing happens.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Most history entries sent to one watcher at once.
const HISTORY_BATCH: usize = 10_000;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A revocation.
    Entry(FeedEntry),
    /// Nothing new; the watcher is caught up to this cursor.
    Heartbeat(Option<String>),
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
}

impl RevocationFeed {
    /// A feed over `store` whose entries matter for `relevance` (the access
    /// token lifetime). Call [`start`](Self::start) to follow the store.
    pub fn new(store: Store, relevance: Duration) -> RevocationFeed {
        let (live, _) = broadcast::channel(1024);
        RevocationFeed {
            inner: Arc::new(Inner {
                store,
                relevance,
                live,
            }),
        }
    }

    /// Starts following the store (before any watcher can subscribe, so no
    /// entry falls between a watcher's history and the live stream) and
    /// spawns the task that fans new entries out to watchers.
    pub async fn start(&self) -> Result<(), StoreError> {
        let follower = self.inner.store.feed_follower().await?;
        tokio::spawn(follow(follower, self.inner.live.clone()));
        Ok(())
    }

    /// Announces that session `session_id` ended.
    pub async fn session_ended(&self, session_id: &str) -> Result<(), StoreError> {
        self.publish(FeedEvent::Session {
            session_id: session_id.to_owned(),
        })
        .await
    }

    /// Announces that every token of `subject` issued before `not_before_s`
    /// is revoked.
    pub async fn subject_cut_off(
        &self,
        subject: &str,
        not_before_s: i64,
    ) -> Result<(), StoreError> {
        self.publish(FeedEvent::Subject {
            subject: subject.to_owned(),
            not_before_s,
        })
        .await
    }

    async fn publish(&self, event: FeedEvent) -> Result<(), StoreError> {
        let now = crate::now_ms();
        let until = now.saturating_add(millis(self.inner.relevance));
        self.inner
            .store
            .publish_revocation(&event, now, until)
            .await?;
        Ok(())
    }

    /// A watcher starting after `cursor` (or with everything still relevant).
    pub fn subscribe(
        &self,
        cursor: Option<String>,
        stopping: watch::Receiver<bool>,
    ) -> Subscription {
        Subscription {
            feed: Arc::clone(&self.inner),
            live: self.inner.live.subscribe(),
            backlog: VecDeque::new(),
            last: cursor,
            loaded: false,
            heartbeat: tokio::time::interval(HEARTBEAT),
            stopping,
        }
    }
}

/// One watcher's view of the feed.
#[derive(Debug)]
pub struct Subscription {
    feed: Arc<Inner>,
    live: broadcast::Receiver<FeedEntry>,
    backlog: VecDeque<FeedEntry>,
    last: Option<String>,
    loaded: bool,
    heartbeat: tokio::time::Interval,
    stopping: watch::Receiver<bool>,
}

impl Subscription {
    /// The next item; `None` when the server is shutting down.
    pub async fn next(&mut self) -> Option<Result<FeedItem, StoreError>> {
        if !self.loaded {
            if let Err(err) = self.load_backlog().await {
                return Some(Err(err));
            }
            self.loaded = true;
        }
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            if let Some(entry) = self.backlog.pop_front() {
                if let Some(entry) = self.accept(entry) {
                    return Some(Ok(FeedItem::Entry(entry)));
                }
                continue;
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(entry) => {
                        if let Some(entry) = self.accept(entry) {
                            return Some(Ok(FeedItem::Entry(entry)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the live channel: catch up from the store.
                        if let Err(err) = self.load_backlog().await {
                            return Some(Err(err));
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => {
                    return Some(Ok(FeedItem::Heartbeat(self.last.clone())));
                }
                _ = self.stopping.changed() => {}
            }
        }
    }

    async fn load_backlog(&mut self) -> Result<(), StoreError> {
        let entries = self
            .feed
            .store
            .revocations_after(self.last.as_deref(), HISTORY_BATCH)
            .await?;
        self.backlog.extend(entries);
        Ok(())
    }

    /// Passes entries newer than the last one sent and still relevant, with
    /// their relevance at least this server's access-token lifetime (entries
    /// written by the CLI may not know it).
    fn accept(&mut self, mut entry: FeedEntry) -> Option<FeedEntry> {
        let position = parse_cursor(&entry.cursor)?;
        if let Some(last) = self.last.as_deref().and_then(parse_cursor)
            && position <= last
        {
            return None;
        }
        self.last = Some(entry.cursor.clone());
        let relevant = entry.at_ms.saturating_add(millis(self.feed.relevance));
        entry.until_ms = entry.until_ms.max(relevant);
        (entry.until_ms > crate::now_ms()).then_some(entry)
    }
}

/// Follows the store's feed and fans entries out; runs for the process's life.
async fn follow(mut follower: FeedFollower, live: broadcast::Sender<FeedEntry>) {
    let mut failures: u32 = 0;
    loop {
        match follower.next().await {
            Ok(entries) => {
                if failures > 0 {
                    info!("revocation feed reachable again");
                }
                failures = 0;
                for entry in entries {
                    // No receivers is fine: nobody is watching.
                    let _ = live.send(entry);
                }
            }
            Err(err) => {
                if failures == 0 || failures.is_power_of_two() {
                    warn!(error = %err, "cannot read the revocation feed");
                }
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100u64 << failures.min(5));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

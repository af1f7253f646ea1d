//! One watcher of the feed: its history from the replica's window, then
//! live entries, heartbeats, and a word if history it needs is missing. It
//! holds a cursor and a receiver, nothing more; it is counted against the
//! replica's watcher limit until dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, watch};
use tracing::warn;

use super::{FOLLOWER_STALE_MS, HEARTBEAT, Inner};
use crate::authority::millis;
use crate::store::{FeedCursor, FeedEntry, FeedEvent, StoreError};

/// History is handed out in pages of this many entries.
const HISTORY_PAGE: usize = 256;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A revocation.
    Entry(FeedEntry),
    /// Nothing new; the watcher is caught up to this cursor.
    Heartbeat(Option<FeedCursor>),
    /// Revocations that still matter may be missing from what this watcher
    /// received; until `until_ms` it cannot tell revoked tokens from live ones.
    Gap {
        /// When the missing entries stop mattering, ms since the epoch.
        until_ms: i64,
    },
}

/// Where a watcher is with its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// Resuming from a cursor: first check that nothing after it is missing.
    CheckGap,
    /// Reading pages from the window.
    Reading,
    /// Read to its end: live entries follow.
    Done,
}

/// One watcher's view of the feed.
#[derive(Debug)]
pub struct Subscription {
    feed: Arc<Inner>,
    live: broadcast::Receiver<FeedEntry>,
    /// History taken from the window, not yet sent.
    backlog: std::collections::VecDeque<FeedEntry>,
    history: History,
    /// The last entry sent (or, when resuming, the watcher's cursor).
    last: Option<FeedCursor>,
    heartbeat: tokio::time::Interval,
    stopping: watch::Receiver<bool>,
}

impl Subscription {
    /// Subscribes to live entries first, so none is missed between the
    /// history and them. The caller has counted this watcher.
    pub(super) fn new(
        feed: Arc<Inner>,
        cursor: Option<FeedCursor>,
        stopping: watch::Receiver<bool>,
    ) -> Subscription {
        Subscription {
            live: feed.live.subscribe(),
            feed,
            backlog: std::collections::VecDeque::new(),
            history: if cursor.is_some() {
                History::CheckGap
            } else {
                History::Reading
            },
            last: cursor,
            heartbeat: tokio::time::interval(HEARTBEAT),
            stopping,
        }
    }

    /// The next item; `None` when the server is shutting down.
    pub async fn next(&mut self) -> Option<Result<FeedItem, StoreError>> {
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
            match self.history {
                History::CheckGap => {
                    self.history = History::Reading;
                    let missing = self
                        .last
                        .and_then(|cursor| self.feed.window.get()?.missing_after(cursor));
                    if let Some(until_ms) = missing {
                        warn!(
                            until_ms,
                            "a watcher resumed after revocations that were lost"
                        );
                        return Some(Ok(FeedItem::Gap { until_ms }));
                    }
                    continue;
                }
                History::Reading => {
                    let page = self
                        .feed
                        .window
                        .get()
                        .map(|window| window.after(self.last, HISTORY_PAGE))
                        .unwrap_or_default();
                    if page.len() < HISTORY_PAGE {
                        self.history = History::Done;
                    }
                    if let Some(at) = self.feed.pacer.book(page.len()) {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = self.stopping.changed() => {}
                        }
                    }
                    self.backlog.extend(page);
                    continue;
                }
                History::Done => {}
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(entry) => {
                        if let Some(entry) = self.accept(entry) {
                            return Some(Ok(FeedItem::Entry(entry)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the live channel: catch up from the
                        // window, which has everything.
                        self.history = History::Reading;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => {
                    let followed = self.feed.followed_at_ms.load(Ordering::Acquire);
                    if self.feed.store.clock().now_ms() - followed > FOLLOWER_STALE_MS {
                        // This process cannot read the feed: say so rather
                        // than vouch for a feed it is not following.
                        return Some(Err(StoreError::Unavailable(
                            "this tokend cannot read the revocation feed".into(),
                        )));
                    }
                    return Some(Ok(FeedItem::Heartbeat(self.last)));
                }
                _ = self.stopping.changed() => {}
            }
        }
    }

    /// Passes entries newer than the last one sent, still relevant, and for
    /// watchers (not internal account notices), with their relevance at
    /// least this server's access-token lifetime (entries written by the CLI
    /// may not know it).
    fn accept(&mut self, mut entry: FeedEntry) -> Option<FeedEntry> {
        if self.last.is_some_and(|last| entry.cursor <= last) {
            return None;
        }
        self.last = Some(entry.cursor);
        if matches!(entry.event, FeedEvent::Account { .. }) {
            return None;
        }
        let relevant = entry.at_ms.saturating_add(millis(self.feed.relevance));
        entry.until_ms = entry.until_ms.max(relevant);
        (entry.until_ms > self.feed.store.clock().now_ms()).then_some(entry)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let before = self.feed.watchers.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::feed_watchers(before.saturating_sub(1));
    }
}

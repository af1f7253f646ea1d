//! One watcher of the feed: its history from the replica's window (the
//! live cut-offs first, for a watcher starting from nothing, then the rest
//! in feed order), then live entries, heartbeats, and a word if history it
//! needs is missing. It holds a cursor and a receiver, nothing more; it is
//! counted against the replica's watcher limits until dropped, and it ends
//! when its own caller is cut off (disabled, deleted, a new secret).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use super::window::is_cut_off;
use super::{FOLLOWER_STALE_MS, HEARTBEAT, Inner, Watcher};
use crate::clock::millis;
use crate::store::{FeedCursor, FeedEntry, FeedEvent, StoreError};

/// History is handed out in pages of this many entries.
const HISTORY_PAGE: usize = 256;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A revocation.
    Entry(FeedEntry),
    /// A live cut-off sent ahead of the history, out of feed order: it
    /// carries no cursor to resume after (it is not sent again in order).
    CutOff(FeedEntry),
    /// Nothing new; the watcher is caught up to this cursor. The first
    /// heartbeat says the history is complete.
    Heartbeat(Option<FeedCursor>),
    /// Revocations that still matter may be missing from what this watcher
    /// received; until `until_ms` it cannot tell revoked tokens from live ones.
    Gap {
        /// When the missing entries stop mattering, ms since the epoch.
        until_ms: i64,
    },
}

/// Why a watcher's stream ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchEnded {
    /// This replica cannot vouch for the feed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The watcher's own account was cut off (disabled, deleted, a new
    /// secret) since its stream began.
    #[error("the watcher's account was cut off")]
    CutOff,
}

/// Where a watcher is with its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// Starting from nothing: the live cut-offs first.
    CutOffs,
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
    watcher: Watcher,
    /// Whether it counts as a watcher (the replica's own follower does not).
    counted: bool,
    live: broadcast::Receiver<FeedEntry>,
    /// History taken from the window, not yet sent.
    backlog: VecDeque<FeedEntry>,
    /// Cut-offs sent ahead of the history, not yet sent.
    ahead: VecDeque<FeedEntry>,
    /// Cut-offs up to here were sent ahead: skipped in the history.
    sent_ahead: Option<FeedCursor>,
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
        watcher: Watcher,
        cursor: Option<FeedCursor>,
        stopping: watch::Receiver<bool>,
        counted: bool,
    ) -> Subscription {
        Subscription {
            counted,
            live: feed.live.subscribe(),
            feed,
            watcher,
            backlog: VecDeque::new(),
            ahead: VecDeque::new(),
            sent_ahead: None,
            history: if cursor.is_some() {
                History::CheckGap
            } else {
                History::CutOffs
            },
            last: cursor,
            heartbeat: tokio::time::interval(HEARTBEAT),
            stopping,
        }
    }

    /// The next item; `None` when the server is shutting down.
    pub async fn next(&mut self) -> Option<Result<FeedItem, WatchEnded>> {
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            if let Some(entry) = self.ahead.pop_front() {
                if self.ends_watch(&entry) {
                    return Some(Err(WatchEnded::CutOff));
                }
                if let Some(entry) = self.relevant(entry) {
                    return Some(Ok(FeedItem::CutOff(entry)));
                }
                continue;
            }
            if let Some(entry) = self.backlog.pop_front() {
                match self.accept(entry) {
                    Accepted::Send(entry) => return Some(Ok(FeedItem::Entry(entry))),
                    Accepted::Skip => continue,
                    Accepted::End => return Some(Err(WatchEnded::CutOff)),
                }
            }
            match self.history {
                History::CutOffs => {
                    self.history = History::Reading;
                    let cut_offs = self
                        .feed
                        .window
                        .get()
                        .map(super::window::Window::cut_offs)
                        .unwrap_or_default();
                    self.pace(cut_offs.len()).await;
                    self.sent_ahead = cut_offs.last().map(|e| e.cursor);
                    self.ahead.extend(cut_offs);
                    continue;
                }
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
                    self.pace(page.len()).await;
                    self.backlog.extend(page);
                    continue;
                }
                History::Done => {}
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(entry) => match self.accept(entry) {
                        Accepted::Send(entry) => return Some(Ok(FeedItem::Entry(entry))),
                        Accepted::Skip => {}
                        Accepted::End => return Some(Err(WatchEnded::CutOff)),
                    },
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
                        return Some(Err(WatchEnded::Store(StoreError::Unavailable(
                            "this tokend cannot read the revocation feed".into(),
                        ))));
                    }
                    return Some(Ok(FeedItem::Heartbeat(self.last)));
                }
                _ = self.stopping.changed() => {}
            }
        }
    }

    /// Waits until `entries` of the replica's history budget are free.
    async fn pace(&mut self, entries: usize) {
        if let Some(at) = self.feed.pacer.book(entries) {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.stopping.changed() => {}
            }
        }
    }

    /// What to do with the next entry in feed order: entries not newer
    /// than the last one sent, internal account notices and cut-offs sent
    /// ahead are skipped; the watcher's own cut-off ends its stream.
    fn accept(&mut self, entry: FeedEntry) -> Accepted {
        if self.last.is_some_and(|last| entry.cursor <= last) {
            return Accepted::Skip;
        }
        self.last = Some(entry.cursor);
        if self.ends_watch(&entry) {
            return Accepted::End;
        }
        if matches!(entry.event, FeedEvent::Account { .. })
            || (is_cut_off(&entry.event) && self.sent_ahead.is_some_and(|s| entry.cursor <= s))
        {
            return Accepted::Skip;
        }
        match self.relevant(entry) {
            Some(entry) => Accepted::Send(entry),
            None => Accepted::Skip,
        }
    }

    /// An entry still relevant, with its relevance at least this server's
    /// access-token lifetime (entries written by the CLI may not know it).
    fn relevant(&self, mut entry: FeedEntry) -> Option<FeedEntry> {
        let relevant = entry.at_ms.saturating_add(millis(self.feed.relevance));
        entry.until_ms = entry.until_ms.max(relevant);
        (entry.until_ms > self.feed.store.clock().now_ms()).then_some(entry)
    }

    /// Whether `entry` cuts off the watcher's own account since its stream
    /// began.
    fn ends_watch(&self, entry: &FeedEntry) -> bool {
        let FeedEvent::Subject { subject, version } = &entry.event else {
            return false;
        };
        let ends = self
            .watcher
            .account
            .as_ref()
            .is_some_and(|(name, since)| name == subject && version > since);
        if ends {
            info!(sub = %subject, "a watcher's account was cut off: its stream ends");
        }
        ends
    }
}

/// What [`Subscription::accept`] decided.
enum Accepted {
    Send(FeedEntry),
    Skip,
    End,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let before = self.feed.watchers.fetch_sub(1, Ordering::AcqRel);
        crate::telemetry::record(&crate::facts::Fact::Feed(crate::facts::Feed::Watchers(
            before.saturating_sub(1),
        )));
        self.feed.release_caller(&self.watcher);
    }
}

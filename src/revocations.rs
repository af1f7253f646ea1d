//! The revocation feed: every path that ends a session appends to it (in the
//! store, so every replica sees it), and `WatchRevocations` streams it to
//! interceptors, which then refuse the session's still-unexpired access
//! tokens.
//!
//! One follower task per process reads new entries from the store and fans
//! them out to local watchers; a watcher first gets the history it asked for
//! (everything still relevant, or everything after its cursor), then live
//! entries, deduplicated by cursor, and a heartbeat every second.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::authority::millis;
use crate::store::{FeedEntry, FeedEvent, FeedFollower, Store, StoreError, parse_cursor};

/// How often a watcher hears from the feed when nothing happens.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// History is read from the store in pages of this many entries.
const HISTORY_PAGE: usize = 1_000;

/// Entries older than their relevance plus this margin are not read at all
/// (the margin covers clock differences between tokend and Redis).
const HISTORY_MARGIN_MS: i64 = 60_000;

/// If this process has not read the store's feed for this long, watchers
/// stop getting heartbeats (their streams end with `STORE_UNAVAILABLE`), so
/// fail-closed interceptors notice. A healthy follower reads every ≤ 5 s.
const FOLLOWER_STALE_MS: i64 = 12_000;

/// Bound on the subjects remembered for de-duplicating cut-offs.
const RECENT_CUTOFFS: usize = 10_000;

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
    /// When the follower last read the store successfully (ms since epoch).
    followed_at_ms: AtomicI64,
    /// The last cut-off announced per subject: one per second is enough.
    recent_cutoffs: Mutex<HashMap<String, i64>>,
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
                followed_at_ms: AtomicI64::new(crate::now_ms()),
                recent_cutoffs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts following the store (before any watcher can subscribe, so no
    /// entry falls between a watcher's history and the live stream) and
    /// spawns the task that fans new entries out to watchers.
    pub async fn start(&self) -> Result<(), StoreError> {
        let follower = self.inner.store.feed_follower().await?;
        tokio::spawn(follow(follower, Arc::clone(&self.inner)));
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
    /// is revoked. A cut-off this process already announced for the same
    /// second is not repeated (a caller looping RevokeAllSessions cannot
    /// flood the feed).
    pub async fn subject_cut_off(
        &self,
        subject: &str,
        not_before_s: i64,
    ) -> Result<(), StoreError> {
        let recent = |f: &mut dyn FnMut(&mut HashMap<String, i64>) -> bool| {
            self.inner
                .recent_cutoffs
                .lock()
                .map(|mut map| f(&mut map))
                .unwrap_or(false)
        };
        if recent(&mut |map| map.get(subject).is_some_and(|&s| s >= not_before_s)) {
            return Ok(());
        }
        self.publish(FeedEvent::Subject {
            subject: subject.to_owned(),
            not_before_s,
        })
        .await?;
        recent(&mut |map| {
            if map.len() >= RECENT_CUTOFFS {
                map.clear();
            }
            map.insert(subject.to_owned(), not_before_s);
            true
        });
        Ok(())
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
            paged_to: cursor.clone(),
            history_done: false,
            last: cursor,
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
    /// History read from the store, not yet sent.
    backlog: VecDeque<FeedEntry>,
    /// How far the history has been read.
    paged_to: Option<String>,
    /// Whether the history is read to its end (then live entries follow).
    history_done: bool,
    /// The last entry sent.
    last: Option<String>,
    heartbeat: tokio::time::Interval,
    stopping: watch::Receiver<bool>,
}

impl Subscription {
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
            if !self.history_done {
                if let Err(err) = self.read_history_page().await {
                    return Some(Err(err));
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
                        self.paged_to.clone_from(&self.last);
                        self.history_done = false;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => {
                    let followed = self.feed.followed_at_ms.load(Ordering::Acquire);
                    if crate::now_ms() - followed > FOLLOWER_STALE_MS {
                        // This process cannot read the feed: say so rather
                        // than vouch for a feed it is not following.
                        return Some(Err(StoreError::Unavailable(
                            "this tokend cannot read the revocation feed".into(),
                        )));
                    }
                    return Some(Ok(FeedItem::Heartbeat(self.last.clone())));
                }
                _ = self.stopping.changed() => {}
            }
        }
    }

    /// Reads the next page of history: entries after where reading stopped,
    /// but none older than what can still matter.
    async fn read_history_page(&mut self) -> Result<(), StoreError> {
        let floor = format!("{}-0", oldest_relevant_ms(self.feed.relevance));
        let start = match self.paged_to.as_deref() {
            Some(cursor) if parse_cursor(cursor) > parse_cursor(&floor) => cursor.to_owned(),
            _ => floor,
        };
        let page = self
            .feed
            .store
            .revocations_after(Some(&start), HISTORY_PAGE)
            .await?;
        self.history_done = page.len() < HISTORY_PAGE;
        self.paged_to = Some(page.last().map_or(start, |e| e.cursor.clone()));
        self.backlog.extend(page);
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

/// Entries older than this (ms since the epoch) cannot matter any more.
fn oldest_relevant_ms(relevance: Duration) -> i64 {
    crate::now_ms()
        .saturating_sub(millis(relevance))
        .saturating_sub(HISTORY_MARGIN_MS)
        .max(0)
}

/// Follows the store's feed and fans entries out; runs for the process's life.
async fn follow(mut follower: FeedFollower, feed: Arc<Inner>) {
    let mut failures: u32 = 0;
    loop {
        match follower.next().await {
            Ok(entries) => {
                feed.followed_at_ms
                    .store(crate::now_ms(), Ordering::Release);
                if failures > 0 {
                    info!("revocation feed reachable again");
                }
                failures = 0;
                for entry in entries {
                    // No receivers is fine: nobody is watching.
                    let _ = feed.live.send(entry);
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

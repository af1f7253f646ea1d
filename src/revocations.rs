//! The revocation feed: every path that ends a session or cuts off an
//! account appends to it (in the store, so every replica sees it), and
//! `WatchRevocations` streams it to interceptors, which then refuse the
//! still-unexpired access tokens it covers.
//!
//! One follower task per process reads new entries from the store; it keeps
//! this replica's [`AccountStates`] fresh (account changes are announced on
//! the feed too) and fans entries out to local watchers. A watcher first
//! gets the history it asked for (everything still relevant, or everything
//! after its cursor), then live entries, deduplicated by cursor, and a
//! heartbeat every second. If part of the history it needs is gone (the
//! store lost it), the watcher is told so.
//!
//! Entries are kept as long as they matter (the access-token lifetime plus a
//! margin), however many there are: nothing that still matters is trimmed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::accounts::AccountStates;
use crate::authority::millis;
use crate::store::{FeedCursor, FeedEntry, FeedEvent, FeedFollower, Store, StoreError};

/// The scope a service client's token needs to watch the feed (which names
/// revoked sessions and cut-off accounts). A verified client certificate
/// (mTLS) also suffices.
pub const WATCH_SCOPE: &str = "tokend.revocations";

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
            }),
        }
    }

    /// Starts following the store (before any watcher can subscribe, so no
    /// entry falls between a watcher's history and the live stream) and
    /// spawns the task that keeps `accounts` fresh and fans new entries out
    /// to watchers.
    pub async fn start(&self, accounts: AccountStates) -> Result<(), StoreError> {
        let follower = self.inner.store.feed_follower().await?;
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

    /// Announces that an account changed without a cut-off (new scopes,
    /// enabled), so every replica forgets what it cached about it.
    pub async fn account_changed(&self, subject: &str) -> Result<(), StoreError> {
        self.publish(FeedEvent::Account {
            subject: subject.to_owned(),
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
        cursor: Option<FeedCursor>,
        stopping: watch::Receiver<bool>,
    ) -> Subscription {
        Subscription {
            feed: Arc::clone(&self.inner),
            live: self.inner.live.subscribe(),
            backlog: VecDeque::new(),
            paged_to: cursor,
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
}

/// Where a watcher is with its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// Resuming from a cursor: first check that nothing after it was lost.
    CheckGap,
    /// Reading pages from the store.
    Reading,
    /// Read to its end: live entries follow.
    Done,
}

/// One watcher's view of the feed.
#[derive(Debug)]
pub struct Subscription {
    feed: Arc<Inner>,
    live: broadcast::Receiver<FeedEntry>,
    /// History read from the store, not yet sent.
    backlog: VecDeque<FeedEntry>,
    /// How far the history has been read.
    paged_to: Option<FeedCursor>,
    history: History,
    /// The last entry sent.
    last: Option<FeedCursor>,
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
            match self.history {
                History::CheckGap => {
                    self.history = History::Reading;
                    match self.missing_until().await {
                        Ok(Some(until_ms)) => return Some(Ok(FeedItem::Gap { until_ms })),
                        Ok(None) => continue,
                        Err(err) => return Some(Err(err)),
                    }
                }
                History::Reading => {
                    if let Err(err) = self.read_history_page().await {
                        return Some(Err(err));
                    }
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
                        // Too slow for the live channel: catch up from the store.
                        self.paged_to = self.last;
                        self.history = History::Reading;
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
                    return Some(Ok(FeedItem::Heartbeat(self.last)));
                }
                _ = self.stopping.changed() => {}
            }
        }
    }

    /// For a watcher resuming after its cursor: whether entries after it
    /// that still matter are gone, and until when they would have mattered.
    /// The store records since when it holds everything (its origin); a
    /// cursor from before that, and recent enough to matter, means entries
    /// were lost in between (the store restarted empty, say).
    async fn missing_until(&self) -> Result<Option<i64>, StoreError> {
        let Some(cursor) = self.last else {
            return Ok(None);
        };
        let now = crate::now_ms();
        let relevance = millis(self.feed.relevance);
        let cursor_ms = i64::try_from(cursor.ms).unwrap_or(i64::MAX);
        let origin = self.feed.store.feed_origin().await?;
        let missing = match origin {
            // Nothing published since the store began: entries after a
            // cursor that recent were lost.
            None if cursor_ms >= now.saturating_sub(relevance) => {
                Some(now.saturating_add(relevance))
            }
            None => None,
            // Entries before the origin were lost; the newest of them
            // matters until the origin plus the relevance.
            Some(origin) if cursor_ms < origin => {
                let until = origin.saturating_add(relevance);
                (until > now).then_some(until)
            }
            Some(_) => None,
        };
        if let Some(until_ms) = missing {
            warn!(
                until_ms,
                "a watcher resumed after revocations that were lost"
            );
        }
        Ok(missing)
    }

    /// Reads the next page of history: entries after where reading stopped,
    /// but none older than what can still matter.
    async fn read_history_page(&mut self) -> Result<(), StoreError> {
        let floor = FeedCursor::at_ms(oldest_relevant_ms(self.feed.relevance));
        let start = match self.paged_to {
            Some(cursor) if cursor > floor => cursor,
            _ => floor,
        };
        let page = self
            .feed
            .store
            .revocations_after(Some(start), HISTORY_PAGE)
            .await?;
        if page.len() < HISTORY_PAGE {
            self.history = History::Done;
        }
        self.paged_to = Some(page.last().map_or(start, |e| e.cursor));
        self.backlog.extend(page);
        Ok(())
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

/// Follows the store's feed: keeps `accounts` fresh and fans entries out;
/// runs for the process's life.
async fn follow(mut follower: FeedFollower, feed: Arc<Inner>, accounts: AccountStates) {
    let mut failures: u32 = 0;
    loop {
        match follower.next().await {
            Ok(entries) => {
                feed.followed_at_ms
                    .store(crate::now_ms(), Ordering::Release);
                if failures > 0 {
                    info!("revocation feed reachable again");
                    accounts.following(true);
                }
                failures = 0;
                for entry in entries {
                    if let FeedEvent::Subject { subject, .. } | FeedEvent::Account { subject } =
                        &entry.event
                    {
                        accounts.forget(subject);
                    }
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
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100u64 << failures.min(5));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

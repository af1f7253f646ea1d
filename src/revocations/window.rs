//! This replica's copy of the feed: every entry that still matters, in
//! memory, shared by all of the replica's watchers. Watchers read their
//! history here, never from the store, so a hundred watchers catching up
//! cost the store nothing, and each watcher only holds a cursor.
//!
//! Loaded from the store when the replica starts (up to where the follower
//! begins), then extended by the follower; entries are dropped once they can
//! no longer matter. The window knows from where it is complete: a watcher
//! resuming from before that (the store lost entries, or it is the embedded
//! store of a tokend that restarted) is told of the gap.

use crate::clock::Clock;
use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::Duration;

use crate::clock::millis;
use crate::store::{FEED_RETENTION_MARGIN_MS, FeedCursor, FeedEntry, FeedEvent, Store, StoreError};

/// Entries read per page when the window is loaded from the store.
const LOAD_PAGE: usize = 1_000;

/// The shared window.
#[derive(Debug)]
pub(super) struct Window {
    state: RwLock<State>,
    /// How long an entry matters: the access-token lifetime.
    relevance: Duration,
    /// The store's clock: what "still matters" is judged by.
    clock: Clock,
}

#[derive(Debug, Default)]
struct State {
    /// Entries in feed order.
    entries: VecDeque<FeedEntry>,
    /// Where each subject's live cut-off (or account notice) is: a newer
    /// one supersedes it ([`FeedEvent::live_key`]), so the window holds one
    /// per subject and kind, however often a subject is cut off.
    live: HashMap<String, FeedCursor>,
    /// The window holds every entry published at or after this time (ms):
    /// the store's origin when loaded, or the load itself if the store had
    /// none.
    complete_since_ms: i64,
}

impl Window {
    /// Loads every entry that still matters from `store`, up to and
    /// including `until` (where the follower starts).
    pub(super) async fn load(
        store: &Store,
        relevance: Duration,
        until: FeedCursor,
    ) -> Result<Window, StoreError> {
        let clock = store.clock().clone();
        let now = clock.now_ms();
        let origin = store.feed_origin().await?;
        let mut state = State {
            complete_since_ms: origin.unwrap_or(now),
            ..State::default()
        };
        let mut cursor = Some(FeedCursor::at_ms(oldest_relevant_ms(now, relevance)));
        loop {
            let page = store.revocations_after(cursor, LOAD_PAGE).await?;
            let full = page.len() == LOAD_PAGE;
            cursor = page.last().map(|e| e.cursor).or(cursor);
            for entry in page.into_iter().filter(|e| e.cursor <= until) {
                state.push(entry);
            }
            if !full || cursor.is_some_and(|c| c >= until) {
                break;
            }
        }
        Ok(Window {
            state: RwLock::new(state),
            relevance,
            clock,
        })
    }

    /// Appends entries the follower read, and drops those at the front that
    /// no longer matter.
    pub(super) fn extend(&self, entries: &[FeedEntry]) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        let newest = state.entries.back().map(|e| e.cursor);
        for entry in entries
            .iter()
            .filter(|e| newest.is_none_or(|n| e.cursor > n))
        {
            state.push(entry.clone());
        }
        let now = self.clock.now_ms();
        while let Some(front) = state.entries.front()
            && front.until_ms.saturating_add(FEED_RETENTION_MARGIN_MS) < now
        {
            if let Some(key) = front.event.live_key()
                && state.live.get(&key) == Some(&front.cursor)
            {
                state.live.remove(&key);
            }
            state.entries.pop_front();
        }
    }

    /// Every live subject and actor cut-off (not sessions, not account
    /// notices), in feed order: what a new watcher is sent first, so that
    /// the revocations covering the most tokens arrive before the rest.
    pub(super) fn cut_offs(&self) -> Vec<FeedEntry> {
        let Ok(state) = self.state.read() else {
            return Vec::new();
        };
        let floor = FeedCursor::at_ms(oldest_relevant_ms(self.clock.now_ms(), self.relevance));
        let mut cursors: Vec<FeedCursor> = state
            .live
            .values()
            .filter(|cursor| **cursor >= floor)
            .copied()
            .collect();
        cursors.sort_unstable();
        cursors
            .into_iter()
            .filter_map(|cursor| state.at(cursor))
            .filter(|entry| is_cut_off(&entry.event))
            .cloned()
            .collect()
    }

    /// Up to `limit` entries after `cursor` (from the oldest that can still
    /// matter with `None`).
    pub(super) fn after(&self, cursor: Option<FeedCursor>, limit: usize) -> Vec<FeedEntry> {
        let Ok(state) = self.state.read() else {
            return Vec::new();
        };
        let floor = FeedCursor::at_ms(oldest_relevant_ms(self.clock.now_ms(), self.relevance));
        let start = state
            .entries
            .partition_point(|e| e.cursor < floor || cursor.is_some_and(|c| e.cursor <= c));
        state.entries.range(start..).take(limit).cloned().collect()
    }

    /// For a watcher resuming after `cursor`: whether entries after it that
    /// still matter may be missing (the cursor is from before the window is
    /// complete, and recent enough to matter), and until when they would
    /// matter.
    pub(super) fn missing_after(&self, cursor: FeedCursor) -> Option<i64> {
        let state = self.state.read().ok()?;
        let now = self.clock.now_ms();
        let relevance = millis(self.relevance);
        let cursor_ms = i64::try_from(cursor.ms).unwrap_or(i64::MAX);
        if cursor_ms < now.saturating_sub(relevance) || cursor_ms >= state.complete_since_ms {
            return None;
        }
        // The newest of the missing entries was published before the window
        // became complete; it matters until then plus the relevance.
        let until = state.complete_since_ms.saturating_add(relevance);
        (until > now).then_some(until)
    }

    /// How many entries it holds.
    pub(super) fn len(&self) -> usize {
        self.state.read().map(|s| s.entries.len()).unwrap_or(0)
    }
}

impl State {
    /// Appends a newer entry; a subject's newer cut-off replaces its older
    /// one, and one carrying a lower version (a late retry) is dropped.
    fn push(&mut self, entry: FeedEntry) {
        if let Some(key) = entry.event.live_key() {
            if let Some(live) = self.live.get(&key).copied()
                && let Some(at) = self.position(live)
            {
                if !entry.event.supersedes(&self.entries[at].event) {
                    return;
                }
                self.entries.remove(at);
            }
            self.live.insert(key, entry.cursor);
        }
        self.entries.push_back(entry);
    }

    /// Where the entry at `cursor` is.
    fn position(&self, cursor: FeedCursor) -> Option<usize> {
        let at = self.entries.partition_point(|e| e.cursor < cursor);
        (self.entries.get(at)?.cursor == cursor).then_some(at)
    }

    /// The entry at `cursor`.
    fn at(&self, cursor: FeedCursor) -> Option<&FeedEntry> {
        self.entries.get(self.position(cursor)?)
    }
}

/// Whether an entry is a subject or actor cut-off.
pub(super) fn is_cut_off(event: &FeedEvent) -> bool {
    matches!(event, FeedEvent::Subject { .. } | FeedEvent::Actor { .. })
}

/// Entries older than this (ms since the epoch) cannot matter any more (the
/// margin covers clock differences between tokend hosts and the store).
pub(super) fn oldest_relevant_ms(now: i64, relevance: Duration) -> i64 {
    now.saturating_sub(millis(relevance))
        .saturating_sub(FEED_RETENTION_MARGIN_MS)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FeedEvent, MemoryStore};

    fn session(id: &str) -> FeedEvent {
        FeedEvent::Session {
            session_id: id.into(),
        }
    }

    #[tokio::test]
    async fn loads_what_matters_and_serves_pages_after_a_cursor() {
        let store = Store::Memory(MemoryStore::new());
        let now = crate::clock::Clock::system().now_ms();
        let hour = Duration::from_secs(3600);
        // One long stale, three that matter.
        store
            .publish_revocation(&session("stale"), now - 10 * 3_600_000, now - 9 * 3_600_000)
            .await
            .unwrap();
        let mut cursors = Vec::new();
        for i in 0..3 {
            let cursor = store
                .publish_revocation(&session(&format!("s{i}")), now, now + 3_600_000)
                .await
                .unwrap();
            cursors.push(cursor);
        }
        let window = Window::load(&store, hour, cursors[1]).await.unwrap();
        assert_eq!(window.len(), 2, "up to where the follower starts");
        let all = window.after(None, 10);
        assert_eq!(
            all.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            &cursors[..2]
        );
        // The follower brings the rest (and repeats are ignored).
        let rest = store.revocations_after(Some(cursors[0]), 10).await.unwrap();
        window.extend(&rest);
        assert_eq!(window.len(), 3);
        assert_eq!(window.after(Some(cursors[0]), 10).len(), 2);
        assert_eq!(window.after(Some(cursors[0]), 1).len(), 1);
        assert!(window.after(Some(cursors[2]), 10).is_empty());
        // A cursor from within the window: nothing missing.
        assert_eq!(window.missing_after(cursors[0]), None);
    }

    #[tokio::test]
    async fn a_cursor_from_before_the_store_began_is_a_gap() {
        let store = Store::Memory(MemoryStore::new());
        let hour = Duration::from_secs(3600);
        let window = Window::load(&store, hour, FeedCursor::default())
            .await
            .unwrap();
        let now = crate::clock::Clock::system().now_ms();
        // Recent enough to matter, from before this (empty) store: a gap.
        let before = FeedCursor::at_ms(now - 60_000);
        let until = window.missing_after(before).expect("a gap");
        assert!(until > now + 3_000_000);
        // Long ago: nothing that matters can be missing.
        assert_eq!(
            window.missing_after(FeedCursor::at_ms(now - 7_200_000)),
            None
        );
    }
}

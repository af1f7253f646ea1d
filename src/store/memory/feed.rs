//! The revocation feed in memory.

use std::time::Duration;

use tokio::sync::watch;

use super::MemoryStore;
use crate::store::{FEED_RETENTION_MARGIN_MS, FeedCursor, FeedEntry, FeedEvent, StoreError};

/// How long a follower waits for new feed entries before returning none.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

impl MemoryStore {
    /// Appends to the revocation feed, dropping entries that no longer matter.
    pub async fn publish_revocation(
        &self,
        event: &FeedEvent,
        at_ms: i64,
        until_ms: i64,
    ) -> Result<FeedCursor, StoreError> {
        let cursor = {
            let mut state = self.lock()?;
            let last = state.last_cursor;
            let at = FeedCursor::at_ms(at_ms);
            let cursor = if at > last { at } else { last.next() };
            state.last_cursor = cursor;
            state.origin_ms.get_or_insert(at_ms);
            let wall = self.now_ms();
            while state
                .feed
                .front()
                .is_some_and(|e| e.until_ms.saturating_add(FEED_RETENTION_MARGIN_MS) <= wall)
            {
                state.feed.pop_front();
            }
            // A subject's newer cut-off supersedes its older one (as
            // `publish.lua` does); a lower version adds nothing.
            if let Some(key) = event.live_key()
                && let Some(live) = state.feed_live.get(&key).copied()
            {
                let at = state.feed.partition_point(|e| e.cursor < live);
                if let Some(old) = state.feed.get(at).filter(|e| e.cursor == live) {
                    if !event.supersedes(&old.event) {
                        return Ok(live);
                    }
                    state.feed.remove(at);
                }
            }
            if let Some(key) = event.live_key() {
                state.feed_live.insert(key, cursor);
            }
            state.feed.push_back(FeedEntry {
                cursor,
                event: event.clone(),
                at_ms,
                until_ms,
            });
            cursor
        };
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(cursor)
    }

    /// Feed entries after `cursor`, oldest first.
    pub async fn revocations_after(
        &self,
        cursor: Option<FeedCursor>,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let state = self.lock()?;
        let start = state
            .feed
            .partition_point(|e| cursor.is_some_and(|c| e.cursor <= c));
        Ok(state.feed.range(start..).take(limit).cloned().collect())
    }

    /// How many entries the feed keeps, and the newest.
    pub async fn feed_tail(&self) -> Result<(u64, Option<FeedEntry>), StoreError> {
        let state = self.lock()?;
        let length = u64::try_from(state.feed.len()).unwrap_or(u64::MAX);
        Ok((length, state.feed.back().cloned()))
    }

    /// When the first entry was published.
    pub async fn feed_origin(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.lock()?.origin_ms)
    }

    /// A follower of the feed, starting after the newest entry.
    pub fn follow(&self) -> MemoryFollower {
        let position = self
            .lock()
            .map(|state| state.last_cursor)
            .unwrap_or_default();
        MemoryFollower {
            store: self.clone(),
            appended: self.appended.subscribe(),
            position,
        }
    }
}

/// Waits for feed entries appended to a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryFollower {
    store: MemoryStore,
    appended: watch::Receiver<u64>,
    position: FeedCursor,
}

impl MemoryFollower {
    /// The last entry seen.
    pub fn position(&self) -> FeedCursor {
        self.position
    }

    /// Entries appended since the last call; waits up to five seconds.
    pub async fn next(&mut self) -> Result<Vec<FeedEntry>, StoreError> {
        self.appended.mark_unchanged();
        let mut ready = self
            .store
            .revocations_after(Some(self.position), 1000)
            .await?;
        if ready.is_empty() {
            let _ = tokio::time::timeout(FOLLOW_WAIT, self.appended.changed()).await;
            ready = self
                .store
                .revocations_after(Some(self.position), 1000)
                .await?;
        }
        if let Some(last) = ready.last() {
            self.position = last.cursor;
        }
        Ok(ready)
    }
}

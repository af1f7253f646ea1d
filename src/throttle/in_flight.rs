//! Admission of attempts in flight on this replica: at most so many per
//! account and per source hash at once, counted until the attempt is
//! dropped, so a flood aimed at one account cannot fill the hashing line
//! for everybody else. (The hasher's own line is the global bound; this
//! one is per key, before it.)

use std::sync::Arc;

use super::Inner;

/// Attempts in flight on this replica, counted until dropped.
#[derive(Debug)]
pub(super) struct InFlight {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl InFlight {
    /// Counts one more attempt under each key, unless one is at its limit.
    pub(super) fn enter<const N: usize>(
        inner: &Arc<Inner>,
        keys: [(String, usize); N],
    ) -> Option<InFlight> {
        let mut counts = inner.in_flight.lock().ok()?;
        if keys
            .iter()
            .any(|(key, limit)| counts.get(key).copied().unwrap_or(0) >= *limit)
        {
            return None;
        }
        for (key, _) in &keys {
            *counts.entry(key.clone()).or_insert(0) += 1;
        }
        Some(InFlight {
            inner: Arc::clone(inner),
            keys: keys.into_iter().map(|(key, _)| key).collect(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.inner.in_flight.lock() {
            for key in &self.keys {
                if let Some(count) = counts.get_mut(key) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        counts.remove(key);
                    }
                }
            }
        }
    }
}

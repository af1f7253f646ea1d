//! How fast a replica hands out history. A watcher that connects reads every
//! revocation that still matters, tens of thousands after a busy quarter of
//! an hour; many watchers reconnecting at once (a tokend restart, a network
//! blip) would otherwise spend the replica's CPU on history while Login and
//! Refresh wait. All watchers of a replica share one budget of entries per
//! second, page by page, first come first served; a short burst lets one
//! watcher with a small history through at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How much unused budget may pile up: a watcher alone reads this long's
/// worth of entries without waiting.
const BURST: Duration = Duration::from_millis(200);

/// The replica's history budget.
#[derive(Debug)]
pub(crate) struct HistoryPacer {
    /// Time one entry costs of the budget; zero when unpaced.
    per_entry: Duration,
    /// When the budget is next free.
    next_free: Mutex<Option<Instant>>,
}

impl HistoryPacer {
    /// At most `entries_per_second` history entries per second, for all
    /// watchers together; 0 does not pace.
    pub(crate) fn new(entries_per_second: u32) -> HistoryPacer {
        let per_entry = if entries_per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / entries_per_second
        };
        HistoryPacer {
            per_entry,
            next_free: Mutex::new(None),
        }
    }

    /// Books `entries` of the budget and returns when they may be sent
    /// (`None`: now): when the budget booked before them is used up.
    /// Booking first, then waiting, keeps watchers in the order they asked.
    pub(crate) fn book(&self, entries: usize) -> Option<Instant> {
        if self.per_entry.is_zero() || entries == 0 {
            return None;
        }
        let cost = self
            .per_entry
            .saturating_mul(u32::try_from(entries).unwrap_or(u32::MAX));
        let now = Instant::now();
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        // A poisoned lock only means another watcher panicked mid-booking;
        // the instant inside is still a valid instant.
        let mut next_free = self
            .next_free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = next_free.map_or(earliest, |free| free.max(earliest));
        *next_free = Some(start + cost);
        (start > now).then_some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_rate_holds() {
        // 1,000 entries a second: the 200 ms burst is 200 entries.
        let pacer = HistoryPacer::new(1_000);
        let start = Instant::now();
        assert_eq!(pacer.book(200), None);
        // The burst is spent: the next 100 entries use the budget from now
        // to 100 ms from now, and the 500 after them wait for it.
        assert_eq!(pacer.book(100), None);
        assert_eq!(pacer.book(500), Some(start + Duration::from_millis(100)));
        assert_eq!(pacer.book(1), Some(start + Duration::from_millis(600)));
    }

    #[tokio::test(start_paused = true)]
    async fn unused_budget_piles_up_to_the_burst_only() {
        let pacer = HistoryPacer::new(1_000);
        assert_eq!(pacer.book(200), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert_eq!(pacer.book(200), None);
        assert_eq!(pacer.book(1), None);
        assert_eq!(pacer.book(1), Some(now + Duration::from_millis(1)));
    }

    #[test]
    fn zero_does_not_pace() {
        let pacer = HistoryPacer::new(0);
        assert_eq!(pacer.book(1_000_000), None);
    }
}

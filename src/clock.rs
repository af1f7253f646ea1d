//! The time, read through a handle that is passed in, never from the system
//! directly: so that tests can run session lifetimes, grace windows and
//! feed retention on a clock they move (`ManualClock`) instead of sleeping.
//!
//! The store carries the deployment's clock ([`crate::store::Store::clock`]);
//! the authority, the revocation feed and the verifier of tokend's own
//! session RPCs read the same one. Deadlines and timeouts (Redis calls,
//! hashing waits, pacing) are durations on Tokio's timer instead, which
//! tests control with `tokio::time::pause`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where "now" comes from: the system's wall clock, or a manual one in tests.
/// Cheap to clone; clones of a manual clock move together.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Microseconds since the epoch, when the clock is manual.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// Microseconds since the Unix epoch, the unit of account versions.
    pub fn now_us(&self) -> i64 {
        match &self.manual {
            Some(us) => us.load(Ordering::Acquire),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }

    /// Milliseconds since the Unix epoch, the unit of sessions and the store.
    pub fn now_ms(&self) -> i64 {
        self.now_us().div_euclid(1000)
    }
}

/// The interceptor's verifier reads the same time as the rest of tokend.
impl tokend_interceptor::verify::Clock for Clock {
    fn now(&self) -> SystemTime {
        let us = u64::try_from(self.now_us()).unwrap_or(0);
        UNIX_EPOCH + Duration::from_micros(us)
    }
}

/// A clock that only moves when told to: for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    us: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at the system's time now.
    pub fn starting_now() -> ManualClock {
        ManualClock::at_us(Clock::system().now_us())
    }

    /// A clock standing at `us` microseconds since the epoch.
    pub fn at_us(us: i64) -> ManualClock {
        ManualClock {
            us: Arc::new(AtomicI64::new(us)),
        }
    }

    /// The [`Clock`] handle to pass in; it reads this clock.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(Arc::clone(&self.us)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |us| {
                Some(us.saturating_add(by))
            })
            .ok();
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock().now_ms()
    }
}

/// A duration in whole milliseconds (the unit of sessions and the store),
/// saturating at `i64::MAX`.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_all_its_handles_with_it() {
        let manual = ManualClock::at_us(1_000_000);
        let (a, b) = (manual.clock(), manual.clock());
        assert_eq!(a.now_ms(), 1_000);
        manual.advance(Duration::from_millis(1500));
        assert_eq!(a.now_ms(), 2_500);
        assert_eq!(b.now_us(), 2_500_000);
        manual.advance(Duration::MAX);
        assert_eq!(a.now_us(), i64::MAX, "saturates, never wraps");
    }

    #[test]
    fn the_system_clock_reads_the_wall_time() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let now = u128::try_from(Clock::system().now_ms()).unwrap_or(0);
        assert!(now >= before && now < before + 60_000);
    }
}

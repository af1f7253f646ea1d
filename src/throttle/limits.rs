//! The delay policy: how many failures are free, how the delay doubles
//! after them, and where it stops ([`Limit`]); the three counters' limits
//! and their window ([`ThrottleConfig`]).

use std::time::Duration;

use crate::store::Failures;

/// The first delay after the free failures; each further failure doubles it.
const BASE_DELAY: Duration = Duration::from_secs(1);

/// One counter's allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Failures before any delay; 0 turns the limit off.
    pub free: u32,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Limit {
    /// How long an attempt at `now_ms` must still wait after `failures`.
    pub fn wait(&self, failures: Failures, now_ms: i64) -> Option<Duration> {
        let delay = self.delay(failures)?;
        let delay_ms = crate::clock::millis(delay);
        let left = failures
            .last_ms
            .saturating_add(delay_ms)
            .saturating_sub(now_ms);
        (left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }

    /// The delay `failures` ask for after the last one, if past the free
    /// ones.
    fn delay(&self, failures: Failures) -> Option<Duration> {
        if self.free == 0 || failures.count < self.free {
            return None;
        }
        let doublings = (failures.count - self.free).min(40);
        Some(
            BASE_DELAY
                .saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
                .min(self.max_delay),
        )
    }

    /// Whether `failures` are past the free ones.
    pub(super) fn exceeded(&self, failures: Failures) -> bool {
        self.free > 0 && failures.count >= self.free
    }
}

/// How logins are throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures on one account from one source.
    pub account_source: Limit,
    /// Failures from one source on any account.
    pub source: Limit,
    /// Failures on one account from any source: a higher threshold and a
    /// low cap, so a guesser spread over many sources is slowed down and
    /// the real user is not locked out.
    pub account: Limit,
    /// Counters are forgotten this long after their last failure.
    pub window: Duration,
    /// Attempts per account hashing at once on one replica.
    pub in_flight_per_account: usize,
    /// Attempts per source hashing at once on one replica.
    pub in_flight_per_source: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            account_source: Limit {
                free: 5,
                max_delay: Duration::from_secs(15 * 60),
            },
            source: Limit {
                free: 100,
                max_delay: Duration::from_secs(15 * 60),
            },
            account: Limit {
                free: 20,
                max_delay: Duration::from_secs(60),
            },
            window: Duration::from_secs(3600),
            in_flight_per_account: 2,
            in_flight_per_source: 16,
        }
    }
}

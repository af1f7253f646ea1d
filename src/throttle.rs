//! Login throttling, shared by every replica through the store.
//!
//! Failed logins are counted per (account, source), per source (any
//! account) and per account (any source), in counters that expire a while
//! after their last failure. Past a number of free failures, each counter
//! asks for a delay after its last failure that doubles with every further
//! failure, up to a cap. An attempt inside a delay is refused at once with
//! `LOGIN_THROTTLED` and the time left: no password or secret is checked,
//! so a guesser cannot burn the hashing threads.
//!
//! Throttling slows guessers down; it never locks the real user out:
//! - the per-account delay has a low cap (a minute by default), so the
//!   user's attempt is served as soon as it has passed, and while an account
//!   is over its free failures one attempt at a time is let through;
//! - a source that logged in to the account successfully before (the
//!   user's own) is not held up by the per-account delay at all, only by
//!   its own failures;
//! - the per-(account, source) and per-source limits stop one guesser
//!   without touching anyone else.
//!
//! Besides, each replica lets at most a few attempts per account and per
//! source hash at once, so a flood aimed at one account cannot fill the
//! hashing line for everybody else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{FailureScope, Failures, Store, StoreError};

/// The first delay after the free failures; each further failure doubles it.
const BASE_DELAY: Duration = Duration::from_secs(1);

/// How long a throttled account's one attempt holds its turn at most (if
/// the replica dies mid-login, the turn frees itself).
const TURN_TTL: Duration = Duration::from_secs(10);

/// How long a source that logged in counts as the account's own.
const KNOWN_SOURCE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The delay suggested to an attempt refused because others are in flight.
const BUSY_RETRY: Duration = Duration::from_secs(1);

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
        if self.free == 0 || failures.count < self.free {
            return None;
        }
        let doublings = (failures.count - self.free).min(40);
        let delay = BASE_DELAY
            .saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let left = failures
            .last_ms
            .saturating_add(delay_ms)
            .saturating_sub(now_ms);
        (left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }

    /// Whether `failures` are past the free ones.
    fn exceeded(&self, failures: Failures) -> bool {
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

/// What a login presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A user's password: checking it costs an argon2id hash.
    Password,
    /// A service client's secret: checking it costs a SHA-256.
    ClientSecret,
}

/// Why an attempt was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Too many failures (or attempts in flight): wait this long.
    #[error("too many failed logins; retry in {0:?}")]
    Throttled(Duration),
    /// The store could not say.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The login throttle of one replica. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: ThrottleConfig,
    /// Attempts hashing now, by `a:ACCOUNT` and `s:SOURCE`.
    in_flight: Mutex<HashMap<String, usize>>,
}

impl LoginThrottle {
    /// A throttle counting in `store`.
    pub fn new(store: Store, config: ThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            inner: Arc::new(Inner {
                store,
                config,
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Admits a login attempt on `account` from `source`, or says how long to
    /// wait. Report the outcome on the returned [`Attempt`]. Attempts that
    /// will hash a password also count against the in-flight limits
    /// (checking a client secret costs nothing worth limiting).
    pub async fn admit(
        &self,
        credential: Credential,
        account: &str,
        source: &str,
    ) -> Result<Attempt, Refusal> {
        let config = &self.inner.config;
        let in_flight = match credential {
            Credential::Password => Some(
                InFlight::enter(
                    &self.inner,
                    [
                        (format!("a:{account}"), config.in_flight_per_account),
                        (format!("s:{source}"), config.in_flight_per_source),
                    ],
                )
                .ok_or(Refusal::Throttled(BUSY_RETRY))?,
            ),
            Credential::ClientSecret => None,
        };

        let store = &self.inner.store;
        let scopes = scopes(account, source);
        let (failures, known) = tokio::try_join!(
            store.failures(&scopes),
            store.is_known_source(account, source),
        )?;
        let [on_account, on_pair, on_source] =
            [0, 1, 2].map(|i| failures.get(i).copied().unwrap_or_default());
        let now = store.clock().now_ms();
        let mut wait = [
            config.account_source.wait(on_pair, now),
            config.source.wait(on_source, now),
        ]
        .into_iter()
        .flatten()
        .max();
        let account_gate = !known && config.account.exceeded(on_account);
        if account_gate {
            wait = wait.max(config.account.wait(on_account, now));
        }
        if let Some(wait) = wait {
            return Err(Refusal::Throttled(wait));
        }
        // A throttled account lets one attempt through at a time (across
        // replicas): a swarm of sources cannot try many at each opening.
        let turn = if account_gate {
            let ttl = crate::authority::millis(TURN_TTL);
            if !store.take_login_turn(account, ttl).await? {
                return Err(Refusal::Throttled(BUSY_RETRY));
            }
            true
        } else {
            false
        };
        Ok(Attempt {
            throttle: self.clone(),
            account: account.to_owned(),
            source: source.to_owned(),
            known,
            pair_failures: on_pair.count,
            turn,
            _in_flight: in_flight,
        })
    }
}

fn scopes(account: &str, source: &str) -> [FailureScope; 3] {
    [
        FailureScope::Account(account.to_owned()),
        FailureScope::AccountSource(account.to_owned(), source.to_owned()),
        FailureScope::Source(source.to_owned()),
    ]
}

/// An admitted login attempt: report how it went. Dropped without a report
/// (the caller gave up, hashing was overloaded) it counts as nothing.
#[derive(Debug)]
pub struct Attempt {
    throttle: LoginThrottle,
    account: String,
    source: String,
    known: bool,
    pair_failures: u32,
    turn: bool,
    _in_flight: Option<InFlight>,
}

impl Attempt {
    /// The credentials were wrong (or the account unknown or disabled).
    pub async fn failed(mut self) -> Result<(), StoreError> {
        let inner = &self.throttle.inner;
        let scopes = scopes(&self.account, &self.source);
        let window = crate::authority::millis(inner.config.window);
        inner
            .store
            .record_failure(&scopes, inner.store.clock().now_ms(), window)
            .await?;
        self.give_back_turn().await
    }

    /// The credentials were right: this source's failures on the account
    /// are forgiven, and it counts as the account's own from now on.
    pub async fn succeeded(mut self) -> Result<(), StoreError> {
        let store = &self.throttle.inner.store;
        if self.pair_failures > 0 {
            let pair = FailureScope::AccountSource(self.account.clone(), self.source.clone());
            store.clear_failures(&[pair]).await?;
        }
        if !self.known {
            let ttl = crate::authority::millis(KNOWN_SOURCE_TTL);
            store
                .remember_source(&self.account, &self.source, ttl)
                .await?;
        }
        self.give_back_turn().await
    }

    async fn give_back_turn(&mut self) -> Result<(), StoreError> {
        if self.turn {
            self.turn = false;
            self.throttle
                .inner
                .store
                .release_login_turn(&self.account)
                .await?;
        }
        Ok(())
    }
}

impl Drop for Attempt {
    /// An attempt abandoned while holding its account's turn (the caller
    /// gave up) gives the turn back at once rather than blocking the account
    /// until the turn expires.
    fn drop(&mut self) {
        if !self.turn {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.throttle.inner.store.clone();
        let account = std::mem::take(&mut self.account);
        runtime.spawn(async move {
            let _ = store.release_login_turn(&account).await;
        });
    }
}

/// Attempts in flight on this replica, counted until dropped.
#[derive(Debug)]
struct InFlight {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl InFlight {
    /// Counts one more attempt under each key, unless one is at its limit.
    fn enter<const N: usize>(inner: &Arc<Inner>, keys: [(String, usize); N]) -> Option<InFlight> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn limit(free: u32, max_s: u64) -> Limit {
        Limit {
            free,
            max_delay: Duration::from_secs(max_s),
        }
    }

    fn failures(count: u32, last_ms: i64) -> Failures {
        Failures { count, last_ms }
    }

    #[test]
    fn delays_double_after_the_free_failures_up_to_the_cap() {
        let l = limit(3, 60);
        assert_eq!(l.wait(failures(2, 1_000), 1_000), None);
        assert_eq!(
            l.wait(failures(3, 1_000), 1_000),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            l.wait(failures(4, 1_000), 1_000),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            l.wait(failures(5, 1_000), 1_500),
            Some(Duration::from_millis(3_500))
        );
        assert_eq!(
            l.wait(failures(9, 1_000), 1_000),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            l.wait(failures(u32::MAX, 0), 0),
            Some(Duration::from_secs(60))
        );
        // Served as soon as the delay has passed.
        assert_eq!(l.wait(failures(4, 1_000), 3_000), None);
        // 0 free failures: off.
        assert_eq!(limit(0, 60).wait(failures(1_000, 0), 0), None);
    }

    fn throttle(config: ThrottleConfig) -> LoginThrottle {
        LoginThrottle::new(Store::Memory(MemoryStore::new()), config)
    }

    fn delay_of(refusal: Result<Attempt, Refusal>) -> Duration {
        match refusal {
            Err(Refusal::Throttled(wait)) => wait,
            other => panic!("expected a throttle, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_guessing_source_is_throttled_and_another_source_is_not() {
        let throttle = throttle(ThrottleConfig::default());
        for _ in 0..5 {
            throttle
                .admit(Credential::Password, "alice", "10.0.0.1")
                .await
                .unwrap()
                .failed()
                .await
                .unwrap();
        }
        let wait = delay_of(
            throttle
                .admit(Credential::Password, "alice", "10.0.0.1")
                .await,
        );
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // The user elsewhere logs in.
        let attempt = throttle
            .admit(Credential::Password, "alice", "10.0.0.2")
            .await
            .unwrap();
        attempt.succeeded().await.unwrap();
    }

    #[tokio::test]
    async fn a_swarm_slows_the_account_but_its_known_source_gets_through() {
        let config = ThrottleConfig {
            account: limit(3, 60),
            ..ThrottleConfig::default()
        };
        let throttle = throttle(config);
        throttle
            .admit(Credential::Password, "alice", "home")
            .await
            .unwrap()
            .succeeded()
            .await
            .unwrap();
        for i in 0..3 {
            let source = format!("bot-{i}");
            throttle
                .admit(Credential::Password, "alice", &source)
                .await
                .unwrap()
                .failed()
                .await
                .unwrap();
        }
        // A new source waits the account's delay...
        delay_of(
            throttle
                .admit(Credential::Password, "alice", "bot-99")
                .await,
        );
        // ...the user's own source does not.
        throttle
            .admit(Credential::Password, "alice", "home")
            .await
            .unwrap()
            .succeeded()
            .await
            .unwrap();
        // Other accounts are untouched.
        throttle
            .admit(Credential::Password, "bob", "bot-99")
            .await
            .unwrap()
            .failed()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_throttled_account_lets_one_attempt_through_at_a_time() {
        let config = ThrottleConfig {
            account: limit(1, 60),
            ..ThrottleConfig::default()
        };
        let throttle = throttle(config);
        let store = throttle.inner.store.clone();
        // One failure a while ago: the delay has passed.
        let scope = FailureScope::Account("alice".into());
        store
            .record_failure(&[scope], store.clock().now_ms() - 10_000, 60_000)
            .await
            .unwrap();
        let first = throttle
            .admit(Credential::Password, "alice", "a")
            .await
            .unwrap();
        assert_eq!(
            delay_of(throttle.admit(Credential::Password, "alice", "b").await),
            BUSY_RETRY
        );
        // Abandoned, the attempt gives its turn back.
        drop(first);
        while !store.take_login_turn("alice", 1).await.unwrap() {
            tokio::task::yield_now().await;
        }
        store.release_login_turn("alice").await.unwrap();
        let second = throttle
            .admit(Credential::Password, "alice", "b")
            .await
            .unwrap();
        second.failed().await.unwrap();
        assert!(
            delay_of(throttle.admit(Credential::Password, "alice", "c").await)
                > Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn floods_on_one_account_hash_only_a_few_at_once() {
        let throttle = throttle(ThrottleConfig::default());
        let first = throttle
            .admit(Credential::Password, "alice", "a")
            .await
            .unwrap();
        let second = throttle
            .admit(Credential::Password, "alice", "b")
            .await
            .unwrap();
        assert_eq!(
            delay_of(throttle.admit(Credential::Password, "alice", "c").await),
            BUSY_RETRY
        );
        // Others are not held up, nor are client secrets (no hashing).
        let other = throttle
            .admit(Credential::Password, "bob", "c")
            .await
            .unwrap();
        let mut clients = Vec::new();
        for _ in 0..10 {
            let attempt = throttle.admit(Credential::ClientSecret, "alice", "a");
            clients.push(attempt.await.unwrap());
        }
        drop((first, second, other, clients));
        throttle
            .admit(Credential::Password, "alice", "c")
            .await
            .unwrap();
    }
}

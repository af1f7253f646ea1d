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
//! Users and service clients are counted apart (a guess at a client secret
//! naming a user is not a failure of that user).
//!
//! Throttling slows guessers down; it never locks the real user out:
//! - the per-account delay has a low cap (a minute by default) and binds
//!   only sources that have failed on the account: while an account is
//!   over its free failures, a source new to it gets its try, one attempt at
//!   a time for the account (see [`LoginThrottle::admit`]), and a correct
//!   client secret is let in at once;
//! - a source that logged in to the account successfully before (the
//!   user's own) is not held up by the per-account delay at all, only by
//!   its own failures;
//! - the per-(account, source) and per-source limits stop one guesser
//!   without touching anyone else.
//!
//! Besides, each replica lets at most a few attempts per account and per
//! source hash at once, so a flood aimed at one account cannot fill the
//! hashing line for everybody else; the account's own known sources have
//! places of their own, which no guesser can take.
//!
//! The price of never locking the user out: a swarm of guessers gets one
//! guess per source at a throttled account (per counter window, an hour),
//! besides the account's delay. The per-source limit (any account; IPv6
//! counted by /64) bounds what each source can do across accounts.
//!
//! The delay policy is in [`limits`]; the per-replica admission of
//! attempts in flight in [`in_flight`].

mod in_flight;
mod limits;

pub use limits::{Limit, ThrottleConfig};

use in_flight::InFlight;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{FailureScope, Failures, Store, StoreError};

/// How long a throttled account's one attempt holds its turn at most (if
/// the replica dies mid-login, the turn frees itself).
const TURN_TTL: Duration = Duration::from_secs(10);

/// How long a source that logged in counts as the account's own.
const KNOWN_SOURCE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The delay suggested to an attempt refused because others are in flight.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The delay suggested to an attempt refused because the throttled
/// account's one attempt at a time is in progress: about one hash.
const TURN_RETRY: Duration = Duration::from_millis(250);

/// What a login presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A user's password: checking it costs an argon2id hash.
    Password,
    /// A service client's secret: checking it costs a SHA-256.
    ClientSecret,
    /// An administration call's credential (an access token or a client
    /// certificate), cheap to check like a client secret. Counted under
    /// the account `admin:api`, apart from every login.
    Admin,
}

impl Credential {
    /// The name the throttle counts `account`'s failures under: users and
    /// service clients are separate namespaces here, so guesses at a
    /// client secret naming a user never slow that user down (and the
    /// other way round).
    fn counted_as(self, account: &str) -> String {
        match self {
            Credential::Password => format!("user:{account}"),
            Credential::ClientSecret => format!("client:{account}"),
            Credential::Admin => format!("admin:{account}"),
        }
    }
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
    /// wait. Report the outcome on the returned [`Attempt`]. Delays are
    /// checked first, from the store, before an attempt that will hash a
    /// password takes one of the in-flight places (so refused attempts never
    /// hold them).
    ///
    /// When the account is over its own allowance and the source is not
    /// one the account logged in from (the account gate), a correct
    /// credential must still get in, however many guessers compete:
    /// - a client secret costs a SHA-256 to check, so it is checked anyway
    ///   ([`Attempt::gated`]): a correct one is let in, and only a wrong one
    ///   counts (and is refused with the account's delay);
    /// - a password costs an argon2id hash: a source that has already
    ///   failed on the account waits the account's delay; one that has not
    ///   is let through, one attempt at a time for the account (across
    ///   replicas). So a swarm of guessers gets one guess per source before
    ///   the delay binds all of them, and the real user on a new device is
    ///   never behind them for longer than their first guesses take.
    pub async fn admit(
        &self,
        credential: Credential,
        account: &str,
        source: &str,
    ) -> Result<Attempt, Refusal> {
        let config = &self.inner.config;
        let counted = credential.counted_as(account);
        let store = &self.inner.store;
        let scopes = scopes(&counted, source);
        let (failures, known) = tokio::try_join!(
            store.failures(&scopes),
            store.is_known_source(&counted, source),
        )?;
        let [on_account, on_pair, on_source] =
            [0, 1, 2].map(|i| failures.get(i).copied().unwrap_or_default());
        let now = store.clock().now_ms();
        let wait = [
            config.account_source.wait(on_pair, now),
            config.source.wait(on_source, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(Refusal::Throttled(wait));
        }
        let account_gate = !known && config.account.exceeded(on_account);
        let mut gated = None;
        let mut turn = false;
        if account_gate {
            match credential {
                Credential::ClientSecret | Credential::Admin => {
                    gated = Some(config.account.wait(on_account, now).unwrap_or(TURN_RETRY));
                }
                Credential::Password => {
                    if on_pair.count > 0
                        && let Some(wait) = config.account.wait(on_account, now)
                    {
                        return Err(Refusal::Throttled(wait));
                    }
                    let ttl = crate::clock::millis(TURN_TTL);
                    if !store.take_login_turn(&counted, ttl).await? {
                        return Err(Refusal::Throttled(TURN_RETRY));
                    }
                    turn = true;
                }
            }
        }
        let in_flight = match credential {
            // A source the account logged in from has places of its own:
            // guessers elsewhere never keep the user's device waiting.
            Credential::Password => {
                let (shared, limit) = if known {
                    (
                        format!("k:{counted}:{source}"),
                        config.in_flight_per_account,
                    )
                } else {
                    (format!("a:{counted}"), config.in_flight_per_account)
                };
                let entered = InFlight::enter(
                    &self.inner,
                    [
                        (shared, limit),
                        (format!("s:{source}"), config.in_flight_per_source),
                    ],
                );
                match entered {
                    Some(entered) => Some(entered),
                    None => {
                        if turn {
                            store.release_login_turn(&counted).await?;
                        }
                        return Err(Refusal::Throttled(BUSY_RETRY));
                    }
                }
            }
            Credential::ClientSecret | Credential::Admin => None,
        };
        Ok(Attempt {
            throttle: self.clone(),
            account: counted,
            source: source.to_owned(),
            known,
            pair_failures: on_pair.count,
            turn,
            gated,
            _in_flight: in_flight,
        })
    }
}

/// What the throttle holds against an account now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountThrottle {
    /// Failed logins on the account from any source, and the last one.
    pub failures: Failures,
    /// How long a source new to the account waits now, if at all.
    pub delay: Option<Duration>,
}

impl LoginThrottle {
    /// The failures counted against `account` (any source) and the delay
    /// they impose now, for administrators.
    pub async fn account_state(
        &self,
        credential: Credential,
        account: &str,
    ) -> Result<AccountThrottle, StoreError> {
        let store = &self.inner.store;
        let scope = [FailureScope::Account(credential.counted_as(account))];
        let failures = store
            .failures(&scope)
            .await?
            .first()
            .copied()
            .unwrap_or_default();
        let delay = self
            .inner
            .config
            .account
            .wait(failures, store.clock().now_ms());
        Ok(AccountThrottle { failures, delay })
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
    /// A client-secret attempt on a throttled account from a new source:
    /// only a correct secret may pass; a wrong one is refused this long.
    gated: Option<Duration>,
    _in_flight: Option<InFlight>,
}

impl Attempt {
    /// Whether the attempt came in through the account gate with a cheap
    /// credential: it is let in only if correct; if wrong, it is refused
    /// with this delay (after [`failed`](Self::failed) counted it).
    pub fn gated(&self) -> Option<Duration> {
        self.gated
    }

    /// The credentials were wrong (or the account unknown or disabled).
    pub async fn failed(mut self) -> Result<(), StoreError> {
        let inner = &self.throttle.inner;
        let scopes = scopes(&self.account, &self.source);
        let window = crate::clock::millis(inner.config.window);
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
            let ttl = crate::clock::millis(KNOWN_SOURCE_TTL);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Failures;
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
        // A source that failed waits the account's delay...
        delay_of(throttle.admit(Credential::Password, "alice", "bot-0").await);
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
        let scope = FailureScope::Account("user:alice".into());
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
            TURN_RETRY
        );
        // Abandoned, the attempt gives its turn back.
        drop(first);
        while !store.take_login_turn("user:alice", 1).await.unwrap() {
            tokio::task::yield_now().await;
        }
        store.release_login_turn("user:alice").await.unwrap();
        let second = throttle
            .admit(Credential::Password, "alice", "b")
            .await
            .unwrap();
        second.failed().await.unwrap();
        assert!(
            delay_of(throttle.admit(Credential::Password, "alice", "b").await)
                > Duration::from_secs(1)
        );
    }

    /// A throttle on a memory store whose clock the test moves.
    fn throttle_at(config: ThrottleConfig) -> (LoginThrottle, crate::clock::ManualClock) {
        let clock = crate::clock::ManualClock::starting_now();
        let store = Store::Memory(MemoryStore::with_clock(clock.clock()));
        (LoginThrottle::new(store, config), clock)
    }

    async fn fail(throttle: &LoginThrottle, credential: Credential, source: &str) {
        throttle
            .admit(credential, "alice", source)
            .await
            .unwrap()
            .failed()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn guesses_at_a_client_secret_naming_a_user_never_slow_the_user() {
        let config = ThrottleConfig {
            account: limit(3, 60),
            ..ThrottleConfig::default()
        };
        let (throttle, _clock) = throttle_at(config);
        for n in 0..20 {
            let source = format!("bot-{n}");
            // Past the client account's allowance, wrong secrets come
            // through its gate and are refused with its delay.
            if let Ok(attempt) = throttle
                .admit(Credential::ClientSecret, "alice", &source)
                .await
            {
                attempt.failed().await.unwrap();
            }
        }
        // The user alice, from a new source: not throttled at all.
        throttle
            .admit(Credential::Password, "alice", "phone")
            .await
            .expect("users and clients are counted apart")
            .succeeded()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_correct_client_secret_passes_a_throttled_accounts_gate() {
        let config = ThrottleConfig {
            account: limit(3, 60),
            ..ThrottleConfig::default()
        };
        let (throttle, _clock) = throttle_at(config);
        for n in 0..3 {
            fail(&throttle, Credential::ClientSecret, &format!("bot-{n}")).await;
        }
        // A new pod address: admitted, but gated (only a correct secret
        // passes; a wrong one would be refused with the delay).
        let attempt = throttle
            .admit(Credential::ClientSecret, "alice", "new-pod")
            .await
            .expect("checked, not refused unseen");
        let wait = attempt.gated().expect("through the account gate");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        attempt.succeeded().await.unwrap();
    }

    #[tokio::test]
    async fn a_throttled_account_lets_each_new_source_try_and_holds_the_rest() {
        let config = ThrottleConfig {
            account: limit(3, 60),
            ..ThrottleConfig::default()
        };
        let (throttle, _clock) = throttle_at(config);
        // A swarm: each source fails once; the account is past its allowance.
        for n in 0..3 {
            fail(&throttle, Credential::Password, &format!("bot-{n}")).await;
        }
        // Every source that has failed waits the account's delay...
        for n in 0..3 {
            let wait = delay_of(
                throttle
                    .admit(Credential::Password, "alice", &format!("bot-{n}"))
                    .await,
            );
            assert_eq!(wait, Duration::from_secs(1));
        }
        // ...a new source gets its try (one at a time for the account)...
        let phone = throttle
            .admit(Credential::Password, "alice", "phone")
            .await
            .expect("a source that has not failed tries at once");
        assert_eq!(
            delay_of(
                throttle
                    .admit(Credential::Password, "alice", "laptop")
                    .await
            ),
            TURN_RETRY
        );
        phone.succeeded().await.unwrap();
        // ...and after failing, waits like the rest.
        fail(&throttle, Credential::Password, "laptop").await;
        delay_of(
            throttle
                .admit(Credential::Password, "alice", "laptop")
                .await,
        );
    }

    #[tokio::test]
    async fn refused_attempts_never_hold_a_hashing_place() {
        let (throttle, _clock) = throttle_at(ThrottleConfig::default());
        for _ in 0..5 {
            fail(&throttle, Credential::Password, "flood").await;
        }
        // The flood is refused from the store's counters, before taking
        // a place; the user's own two places stay free.
        let mut refused = 0;
        for _ in 0..100 {
            if throttle
                .admit(Credential::Password, "alice", "flood")
                .await
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 100);
        assert!(throttle.inner.in_flight.lock().unwrap().is_empty());
        let one = throttle
            .admit(Credential::Password, "alice", "home")
            .await
            .unwrap();
        let two = throttle
            .admit(Credential::Password, "alice", "home")
            .await
            .unwrap();
        drop((one, two));
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

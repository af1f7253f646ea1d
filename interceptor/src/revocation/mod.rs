//! The revoked-session list a verifier consults: sessions (by `sid`),
//! subjects (all tokens issued before a cutoff) and actors (all delegated
//! tokens a service exchanged before a cutoff) whose access tokens must be
//! refused with `SESSION_REVOKED` although their signature is valid.
//!
//! Bounded and expiring: an entry only matters while tokens it covers can
//! still be unexpired, so each carries an end time and is dropped after it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::AuthError;
use crate::proto::tokend::v1::WatchRevocationsResponse;
use crate::proto::tokend::v1::watch_revocations_response::Event;
use crate::token::Claims;
use tracing::warn;

/// Entries are kept this much longer than tokend says they matter, to cover
/// verifier leeways and clock differences.
const RELEVANCE_MARGIN_MS: i64 = 60_000;

/// Default bound on remembered revocations (about 100 bytes each).
pub const DEFAULT_REVOCATION_CAPACITY: usize = 1_000_000;

/// What to do when revocation news has not arrived for too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StalePolicy {
    /// Keep accepting tokens, judged by what is known (default): a feed
    /// outage delays revocations but never takes the service down.
    ServeLastKnown,
    /// Refuse every token with `REVOCATIONS_UNAVAILABLE` (UNAVAILABLE) once
    /// nothing was heard for longer than this.
    FailClosedAfter(Duration),
}

/// Revoked sessions and subjects. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct RevocationList {
    state: Arc<RwLock<State>>,
}

#[derive(Debug)]
struct State {
    /// `sid` → when the entry stops mattering (ms since the epoch).
    sessions: HashMap<String, i64>,
    /// `sub` → its cut-off.
    subjects: HashMap<String, Cutoff>,
    /// Actor (service-client id) → its cut-off: delegated tokens with this
    /// actor anywhere in their chain, exchanged before it.
    actors: HashMap<String, Cutoff>,
    capacity: usize,
    policy: StalePolicy,
    /// When the feed was last known to be current.
    last_heard: Option<Instant>,
    /// tokend reported a gap in the history: until then (ms since the
    /// epoch) the feed does not count as current, whatever arrives.
    incomplete_until_ms: i64,
    /// A watch began (ms since the epoch) and has not yet received the
    /// history that still matters: tokens issued before then may be
    /// revoked in what is still to come, so they are refused meanwhile.
    catching_up_since_ms: Option<i64>,
}

/// Every token of a subject from before a cut-off is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cutoff {
    /// Tokens whose account version (`av`) is below this are revoked.
    version: i64,
    /// Tokens without an account version are revoked if issued before this
    /// (ms since the epoch).
    not_before_ms: i64,
    /// When the entry stops mattering (ms since the epoch).
    end_ms: i64,
}

impl Cutoff {
    fn covers(&self, claims: &Claims) -> bool {
        self.covers_version(claims.av, claims.iat)
    }

    /// A token (or an actor in its chain) of account version `av`, issued
    /// at `iat` (seconds).
    fn covers_version(&self, av: Option<i64>, iat: i64) -> bool {
        match av {
            Some(version) => version < self.version,
            None => iat.saturating_mul(1000) < self.not_before_ms,
        }
    }

    /// A cut-off below `version` (or before `not_before_ms`) that matters
    /// until `end_ms`.
    fn new(version: i64, not_before_ms: i64, end_ms: i64) -> Cutoff {
        Cutoff {
            version,
            not_before_ms,
            end_ms,
        }
    }

    /// Merges a later cut-off of the same name: the bar never lowers.
    fn raise(&mut self, other: Cutoff) {
        self.version = self.version.max(other.version);
        self.not_before_ms = self.not_before_ms.max(other.not_before_ms);
        self.end_ms = self.end_ms.max(other.end_ms);
    }
}

impl Default for RevocationList {
    fn default() -> Self {
        RevocationList::new(DEFAULT_REVOCATION_CAPACITY, StalePolicy::ServeLastKnown)
    }
}

impl RevocationList {
    /// An empty list holding at most `capacity` entries.
    pub fn new(capacity: usize, policy: StalePolicy) -> RevocationList {
        RevocationList {
            state: Arc::new(RwLock::new(State {
                sessions: HashMap::new(),
                subjects: HashMap::new(),
                actors: HashMap::new(),
                capacity: capacity.max(1),
                policy,
                last_heard: None,
                incomplete_until_ms: 0,
                catching_up_since_ms: None,
            })),
        }
    }

    /// Revokes session `sid` until `until_ms`.
    pub fn revoke_session(&self, sid: &str, until_ms: i64, now_ms: i64) {
        if let Ok(mut state) = self.state.write() {
            state.make_room(now_ms);
            let end = state.sessions.entry(sid.to_owned()).or_insert(until_ms);
            *end = (*end).max(until_ms);
        }
    }

    /// Revokes every token of `sub` whose account version is below
    /// `version` (tokens without one: issued before `not_before_ms`), until
    /// `until_ms`. Times are ms since the epoch.
    pub fn revoke_subject(
        &self,
        sub: &str,
        version: i64,
        not_before_ms: i64,
        until_ms: i64,
        now_ms: i64,
    ) {
        let cutoff = Cutoff::new(version, not_before_ms, until_ms);
        self.cut_off(|state| &mut state.subjects, sub, cutoff, now_ms);
    }

    /// Revokes every delegated token with `actor` anywhere in its chain
    /// that the actor exchanged under an account version below `version`
    /// (chain entries without one: tokens issued before `not_before_ms`),
    /// until `until_ms`. Times are ms since the epoch.
    pub fn revoke_actor(
        &self,
        actor: &str,
        version: i64,
        not_before_ms: i64,
        until_ms: i64,
        now_ms: i64,
    ) {
        let cutoff = Cutoff::new(version, not_before_ms, until_ms);
        self.cut_off(|state| &mut state.actors, actor, cutoff, now_ms);
    }

    /// Records `cutoff` for `name` in the map `which` picks, merged with
    /// any earlier one (the bar never lowers).
    fn cut_off(
        &self,
        which: fn(&mut State) -> &mut HashMap<String, Cutoff>,
        name: &str,
        cutoff: Cutoff,
        now_ms: i64,
    ) {
        if let Ok(mut state) = self.state.write() {
            state.make_room(now_ms);
            which(&mut state)
                .entry(name.to_owned())
                .or_insert(cutoff)
                .raise(cutoff);
        }
    }

    /// Records that a watch of the feed begins now, for a list that has
    /// not received the feed's history before: until it has (the first
    /// heartbeat, which tokend sends once the history is through), tokens
    /// issued before now are refused with `REVOCATIONS_UNAVAILABLE`,
    /// whatever the [`StalePolicy`]: a revocation they are subject to may
    /// still be on its way. Tokens issued later cannot be revoked by that
    /// history. [`RevocationWatch`] calls this.
    pub fn catching_up(&self) {
        if let Ok(mut state) = self.state.write()
            && state.last_heard.is_none()
            && state.catching_up_since_ms.is_none()
        {
            state.catching_up_since_ms = Some(wall_ms());
        }
    }

    /// Whether the list has the feed's history (or no watch began).
    pub fn caught_up(&self) -> bool {
        self.state
            .read()
            .map(|s| s.catching_up_since_ms.is_none())
            .unwrap_or(false)
    }

    /// Records that the feed is current (a message or a heartbeat arrived),
    /// unless tokend reported a gap that still matters.
    pub fn heard_from_feed(&self) {
        if let Ok(mut state) = self.state.write()
            && wall_ms() >= state.incomplete_until_ms
        {
            state.last_heard = Some(Instant::now());
        }
    }

    /// Records that revocations may be missing until `until_ms` (ms since the
    /// epoch): the list counts as stale until then, so a
    /// [`StalePolicy::FailClosedAfter`] verifier refuses calls once its limit
    /// has passed instead of serving as if nothing was revoked.
    pub fn history_incomplete_until(&self, until_ms: i64) {
        if let Ok(mut state) = self.state.write() {
            state.incomplete_until_ms = state.incomplete_until_ms.max(until_ms);
        }
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.state.read().map(|s| s.entries()).unwrap_or(0)
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses `claims` if its session or subject is revoked, or if the list
    /// is stale and the policy says to fail closed.
    pub fn check(&self, claims: &Claims, now_ms: i64) -> Result<(), AuthError> {
        let Ok(state) = self.state.read() else {
            return Err(AuthError::RevocationsStale);
        };
        if let Some(since) = state.catching_up_since_ms
            && claims.iat.saturating_mul(1000) <= since
        {
            return Err(AuthError::RevocationsStale);
        }
        if let StalePolicy::FailClosedAfter(limit) = state.policy {
            let fresh = state.last_heard.is_some_and(|at| at.elapsed() <= limit);
            if !fresh {
                return Err(AuthError::RevocationsStale);
            }
        }
        if let Some(sid) = &claims.sid
            && state.sessions.get(sid).is_some_and(|&end| now_ms < end)
        {
            return Err(AuthError::Revoked);
        }
        if let Some(cutoff) = state.subjects.get(&claims.sub)
            && now_ms < cutoff.end_ms
            && cutoff.covers(claims)
        {
            return Err(AuthError::Revoked);
        }
        if !state.actors.is_empty() {
            for actor in claims.actors() {
                if let Some(cutoff) = state.actors.get(&actor.sub)
                    && now_ms < cutoff.end_ms
                    && cutoff.covers_version(actor.av, claims.iat)
                {
                    return Err(AuthError::Revoked);
                }
            }
        }
        Ok(())
    }
}

#[cfg(feature = "client")]
mod watch;
#[cfg(feature = "client")]
pub use watch::RevocationWatch;

/// Now, ms since the epoch.
fn wall_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp_ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    })
}

impl RevocationList {
    /// Applies one feed message (and notes that the feed is alive).
    pub fn apply(&self, message: &WatchRevocationsResponse) {
        let now = wall_ms();
        match &message.event {
            Some(Event::Session(session)) => {
                if let Some(until) = timestamp_ms(session.relevant_until.as_ref()) {
                    let until = until.saturating_add(RELEVANCE_MARGIN_MS);
                    self.revoke_session(&session.session_id, until, now);
                }
            }
            Some(Event::Subject(subject)) => {
                let until = timestamp_ms(subject.relevant_until.as_ref());
                let not_before = timestamp_ms(subject.not_before.as_ref());
                if let (Some(until), Some(not_before)) = (until, not_before) {
                    let until = until.saturating_add(RELEVANCE_MARGIN_MS);
                    self.revoke_subject(
                        &subject.subject,
                        subject.account_version,
                        not_before,
                        until,
                        now,
                    );
                }
            }
            Some(Event::Actor(actor)) => {
                let until = timestamp_ms(actor.relevant_until.as_ref());
                let not_before = timestamp_ms(actor.not_before.as_ref());
                if let (Some(until), Some(not_before)) = (until, not_before) {
                    let until = until.saturating_add(RELEVANCE_MARGIN_MS);
                    self.revoke_actor(&actor.actor, actor.account_version, not_before, until, now);
                }
            }
            Some(Event::Gap(gap)) => {
                let until = timestamp_ms(gap.relevant_until.as_ref())
                    .unwrap_or(i64::MAX)
                    .saturating_add(RELEVANCE_MARGIN_MS);
                warn!("tokend reports revocations missing from the feed; treating it as stale");
                self.history_incomplete_until(until);
                return;
            }
            Some(Event::Heartbeat(_)) => {
                // Sent once the history is through: the list is caught up.
                if let Ok(mut state) = self.state.write() {
                    state.catching_up_since_ms = None;
                }
            }
            None => {}
        }
        self.heard_from_feed();
        crate::observe::feed_heard();
        crate::observe::revocations(self.len());
    }
}

impl State {
    /// Drops ended entries when full; if still full, the eighth that ends soonest.
    fn make_room(&mut self, now_ms: i64) {
        if self.entries() < self.capacity {
            return;
        }
        self.drop_ending_by(now_ms);
        if self.entries() < self.capacity {
            return;
        }
        let mut ends: Vec<i64> = self
            .sessions
            .values()
            .copied()
            .chain(self.subjects.values().map(|cutoff| cutoff.end_ms))
            .chain(self.actors.values().map(|cutoff| cutoff.end_ms))
            .collect();
        ends.sort_unstable();
        let cut = ends.get(ends.len() / 8).copied().unwrap_or(i64::MAX);
        self.drop_ending_by(cut);
    }

    /// Entries held, of every kind.
    fn entries(&self) -> usize {
        self.sessions.len() + self.subjects.len() + self.actors.len()
    }

    /// Drops the entries that end at or before `cut`.
    fn drop_ending_by(&mut self, cut: i64) {
        self.sessions.retain(|_, end| *end > cut);
        self.subjects.retain(|_, cutoff| cutoff.end_ms > cut);
        self.actors.retain(|_, cutoff| cutoff.end_ms > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sid: Option<&str>, sub: &str, iat: i64) -> Claims {
        Claims {
            iss: "tokend".into(),
            sub: sub.into(),
            aud: "internal".into(),
            exp: iat + 900,
            iat,
            nbf: iat,
            jti: "j".into(),
            sid: sid.map(str::to_owned),
            scope: String::new(),
            av: None,
            cnf: None,
            act: None,
        }
    }

    fn versioned(sub: &str, iat: i64, av: i64) -> Claims {
        Claims {
            av: Some(av),
            ..claims(Some("s"), sub, iat)
        }
    }

    #[test]
    fn revoked_sessions_are_refused_until_their_entry_ends() {
        let list = RevocationList::default();
        list.revoke_session("s1", 10_000, 0);
        let c = claims(Some("s1"), "alice", 0);
        assert_eq!(list.check(&c, 5_000), Err(AuthError::Revoked));
        assert_eq!(list.check(&c, 10_000), Ok(()));
        assert_eq!(list.check(&claims(Some("s2"), "alice", 0), 5_000), Ok(()));
        assert_eq!(list.check(&claims(None, "alice", 0), 5_000), Ok(()));
    }

    #[test]
    fn subject_cutoffs_refuse_older_account_versions_whenever_issued() {
        let list = RevocationList::default();
        list.revoke_subject("alice", 5_000, 100_500, 1_000_000, 0);
        // Exact: version 4,999 is before the cut-off even if issued after it
        // (a refresh racing the cut-off); 5,000 is after it.
        assert_eq!(
            list.check(&versioned("alice", 200, 4_999), 200_000),
            Err(AuthError::Revoked)
        );
        assert_eq!(list.check(&versioned("alice", 100, 5_000), 200_000), Ok(()));
        assert_eq!(list.check(&versioned("bob", 99, 1), 200_000), Ok(()));
        // A later, lower cut-off never lowers the bar.
        list.revoke_subject("alice", 10, 0, 1_000_000, 0);
        assert_eq!(
            list.check(&versioned("alice", 200, 4_999), 200_000),
            Err(AuthError::Revoked)
        );
        // Entries end.
        assert_eq!(
            list.check(&versioned("alice", 200, 4_999), 1_000_000),
            Ok(())
        );
    }

    #[test]
    fn tokens_without_a_version_are_judged_by_issue_time_to_the_millisecond() {
        let list = RevocationList::default();
        list.revoke_subject("alice", 5_000, 100_500, 1_000_000, 0);
        // Issued in the cut-off's second, before it: iat is whole seconds, so
        // a token of second 100 may be from 100.499 and is refused.
        assert_eq!(
            list.check(&claims(Some("a"), "alice", 100), 200_000),
            Err(AuthError::Revoked)
        );
        assert_eq!(
            list.check(&claims(Some("b"), "alice", 101), 200_000),
            Ok(())
        );
    }

    #[test]
    fn actor_cutoffs_refuse_what_the_actor_exchanged_anywhere_in_the_chain() {
        use crate::token::Actor;
        let list = RevocationList::default();
        list.revoke_actor("orders", 7, 100_500, 1_000_000, 0);
        let chain = |outer: &str, outer_av: i64, inner: Option<(&str, i64)>| Claims {
            act: Some(Actor {
                sub: outer.into(),
                av: Some(outer_av),
                act: inner.map(|(sub, av)| {
                    Box::new(Actor {
                        sub: sub.into(),
                        av: Some(av),
                        act: None,
                    })
                }),
            }),
            ..claims(Some("s"), "alice", 200)
        };
        assert_eq!(
            list.check(&chain("orders", 6, None), 200_000),
            Err(AuthError::Revoked)
        );
        assert_eq!(list.check(&chain("orders", 7, None), 200_000), Ok(()));
        // Further down the chain counts too: what was built on it dies.
        assert_eq!(
            list.check(&chain("payments", 1, Some(("orders", 6))), 200_000),
            Err(AuthError::Revoked)
        );
        assert_eq!(
            list.check(&chain("payments", 1, Some(("gateway", 6))), 200_000),
            Ok(())
        );
        // The actor's name as a subject is another matter.
        assert_eq!(list.check(&versioned("orders", 200, 1), 200_000), Ok(()));
        // Entries end.
        assert_eq!(list.check(&chain("orders", 6, None), 1_000_000), Ok(()));
    }

    #[test]
    fn a_reported_gap_makes_a_fail_closed_list_stale_until_it_no_longer_matters() {
        let policy = StalePolicy::FailClosedAfter(Duration::from_secs(60));
        let c = claims(Some("s"), "alice", 0);
        // A gap that still matters: heartbeats do not make the list current.
        let list = RevocationList::new(10, policy);
        list.history_incomplete_until(wall_ms() + 3_600_000);
        list.heard_from_feed();
        assert_eq!(list.check(&c, 0), Err(AuthError::RevocationsStale));
        // A gap that no longer matters changes nothing.
        let list = RevocationList::new(10, policy);
        list.history_incomplete_until(wall_ms() - 1);
        list.heard_from_feed();
        assert_eq!(list.check(&c, 0), Ok(()));
        // Serving from the last known state keeps serving.
        let list = RevocationList::new(10, StalePolicy::ServeLastKnown);
        list.history_incomplete_until(wall_ms() + 3_600_000);
        assert_eq!(list.check(&c, 0), Ok(()));
    }

    #[test]
    fn while_catching_up_tokens_from_before_the_watch_are_refused() {
        let list = RevocationList::new(10, StalePolicy::ServeLastKnown);
        let start_s = wall_ms() / 1000;
        list.catching_up();
        assert!(!list.caught_up());
        // Issued before the watch began: its revocation may still be coming.
        let before = claims(Some("s"), "alice", start_s - 60);
        assert_eq!(list.check(&before, 0), Err(AuthError::RevocationsStale));
        // Issued after: no history can revoke it.
        let after = claims(Some("t"), "alice", start_s + 2);
        assert_eq!(list.check(&after, 0), Ok(()));
        // The first heartbeat: the history is in.
        list.apply(&WatchRevocationsResponse {
            cursor: String::new(),
            event: Some(Event::Heartbeat(crate::proto::tokend::v1::Heartbeat {})),
        });
        assert!(list.caught_up());
        assert_eq!(list.check(&before, 0), Ok(()));
        // Caught up once, a reconnect does not start over.
        list.catching_up();
        assert!(list.caught_up());
    }

    #[test]
    fn the_list_is_bounded() {
        let list = RevocationList::new(10, StalePolicy::ServeLastKnown);
        for i in 0..100 {
            list.revoke_session(&format!("s{i}"), 1_000 + i, 0);
            assert!(list.len() <= 10);
        }
        // The newest survive.
        assert_eq!(
            list.check(&claims(Some("s99"), "x", 0), 0),
            Err(AuthError::Revoked)
        );
    }

    #[test]
    fn fail_closed_refuses_when_nothing_was_heard() {
        let list = RevocationList::new(10, StalePolicy::FailClosedAfter(Duration::from_secs(60)));
        let c = claims(Some("s"), "alice", 0);
        assert_eq!(list.check(&c, 0), Err(AuthError::RevocationsStale));
        list.heard_from_feed();
        assert_eq!(list.check(&c, 0), Ok(()));
    }
}

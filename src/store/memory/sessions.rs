//! Refresh sessions in memory, and each user's session index.

use std::collections::VecDeque;

use super::{MemoryStore, State};
use crate::store::{
    CONSUMED_LOG_CAP, IndexPage, NewSession, REPEAT_ANNOUNCING_MS, REVOKED_REMEMBERED_MS,
    Revocation, Rotate, Rotation, SessionCreated, SessionGrant, SessionInfo, SessionsPage,
    StoreError,
};
use crate::tokens::{SealedSecret, TokenHash};

#[derive(Debug)]
pub(super) struct Session {
    grant: SessionGrant,
    client: String,
    refreshed_ms: i64,
    current: TokenHash,
    previous: Option<TokenHash>,
    grace_until_ms: i64,
    sealed_successor: Option<SealedSecret>,
    /// The older consumed tokens: a prefix of each one's hash and when it
    /// was consumed (ms), oldest first (what `lua/consumed.lua` keeps).
    consumed: VecDeque<([u8; 16], i64)>,
    /// Idle expiry, capped by the absolute expiry: what a Redis TTL does.
    pub(super) expires_at_ms: i64,
}

/// How a session ended, as remembered for a repeated call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndedBy {
    Revoke,
    Reuse,
    /// Its owner's (or an administrator's) request, by session id.
    Owner,
}

/// A session that ended by a revoke, a reuse or its owner's request: the
/// token that did it, for [`REVOKED_REMEMBERED_MS`] (what the Redis store's
/// marker holds, see its `lua/ended.lua`).
#[derive(Debug, Clone)]
pub(super) struct Ended {
    token: TokenHash,
    subject: String,
    how: EndedBy,
    until_ms: i64,
    /// When a repeat was last let through to announce the end.
    let_through_ms: Option<i64>,
    /// Whether a repeat's announcement was confirmed.
    announced: bool,
}

/// What a repeated end is to do (as `repeat_turn` in `lua/ended.lua`).
enum Turn {
    /// Announce it.
    Again,
    /// Come back: another repeat is announcing it.
    Announcing,
    /// Nothing: not this end, or announced already.
    Nothing,
}

impl Ended {
    /// What a repeat presenting `presented` (ending it `how`) is to do: the
    /// repeats announce until one's announcement is confirmed, one at a
    /// time, so a caller repeating the call cannot make the feed grow call
    /// by call, and a failed announcement is tried again by the next.
    fn repeated(&mut self, presented: &TokenHash, how: EndedBy, now: i64) -> Turn {
        if self.token != *presented || self.how != how || self.until_ms <= now || self.announced {
            return Turn::Nothing;
        }
        if self
            .let_through_ms
            .is_some_and(|at| (0..REPEAT_ANNOUNCING_MS).contains(&now.saturating_sub(at)))
        {
            return Turn::Announcing;
        }
        self.let_through_ms = Some(now);
        Turn::Again
    }
}

impl State {
    /// Remembers how session `id` ended; the expired memories go as new
    /// ones come.
    fn remember_end(&mut self, id: &str, token: TokenHash, subject: &str, how: EndedBy, now: i64) {
        self.ended.retain(|_, e| e.until_ms > now);
        self.ended.insert(
            id.to_owned(),
            Ended {
                token,
                subject: subject.to_owned(),
                how,
                until_ms: now.saturating_add(REVOKED_REMEMBERED_MS),
                let_through_ms: None,
                announced: false,
            },
        );
    }
}

impl Session {
    /// When `hash` was consumed, if it is in the consumed log.
    fn consumed_at(&self, hash: &TokenHash) -> Option<i64> {
        let prefix = prefix(hash);
        self.consumed
            .iter()
            .find(|(entry, _)| *entry == prefix)
            .map(|&(_, at)| at)
    }

    fn holds(&self, presented: &TokenHash) -> bool {
        self.current == *presented
            || self.previous == Some(*presented)
            || self.consumed_at(presented).is_some()
    }
}

fn prefix(hash: &TokenHash) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.0[..16]);
    out
}

impl State {
    /// The live session `session_id` (expired ones are dropped on sight).
    fn live_session(&mut self, session_id: &str, now: i64) -> Option<&mut Session> {
        if self
            .sessions
            .get(session_id)
            .is_some_and(|s| s.expires_at_ms <= now)
        {
            self.sessions.remove(session_id);
        }
        self.sessions.get_mut(session_id)
    }

    /// Whether `session` still counts for `subject`: not expired, theirs,
    /// and not from before the account's latest cut-off.
    fn counts_for(&self, session: &Session, subject: &str, now: i64) -> bool {
        let version = self.users.get(subject).map_or(i64::MAX, |u| u.version);
        session.expires_at_ms > now
            && session.grant.subject == subject
            && session.grant.account_version >= version
    }

    fn unindex(&mut self, subject: &str, session_ids: &[String]) {
        if let Some(index) = self.index.get_mut(subject) {
            index.retain(|_, sid| !session_ids.contains(sid));
            if index.is_empty() {
                self.index.remove(subject);
            }
        }
    }
}

impl MemoryStore {
    /// Starts a refresh session, unless the account changed since the login
    /// read it.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<SessionCreated, StoreError> {
        let grant = new.grant;
        let now = grant.created_ms;
        let mut state = self.lock()?;
        state.wrote(self.now_ms());
        let current = state
            .users
            .get(&grant.subject)
            .is_some_and(|u| u.active() && u.version == grant.account_version);
        if !current {
            return Ok(SessionCreated::AccountChanged);
        }
        let number = state.index_next;
        state.index_next += 1;
        let index = state.index.entry(grant.subject.clone()).or_default();
        index.insert(number, new.session_id.to_owned());
        let listed = index.len();
        state.sessions.insert(
            new.session_id.to_owned(),
            Session {
                grant: grant.clone(),
                client: new.client.to_owned(),
                refreshed_ms: now,
                current: new.token,
                previous: None,
                grace_until_ms: 0,
                sealed_successor: None,
                consumed: VecDeque::new(),
                expires_at_ms: now
                    .saturating_add(new.idle_ttl_ms)
                    .min(grant.absolute_expiry_ms),
            },
        );
        Ok(SessionCreated::Listed(listed))
    }

    /// Rotates a refresh token; the same decisions as `rotate.lua`.
    pub async fn rotate(&self, r: &Rotate<'_>) -> Result<Rotation, StoreError> {
        let now = r.now_ms;
        let mut state = self.lock()?;
        let Some(session) = state.live_session(r.session_id, now) else {
            let Some(ended) = state.ended.get_mut(r.session_id) else {
                return Ok(Rotation::Invalid);
            };
            return match ended.repeated(&r.presented, EndedBy::Reuse, now) {
                Turn::Again => Ok(Rotation::Reused {
                    subject: ended.subject.clone(),
                }),
                Turn::Announcing => Err(StoreError::another_announces()),
                Turn::Nothing => Ok(Rotation::Invalid),
            };
        };
        if now >= session.grant.absolute_expiry_ms {
            state.sessions.remove(r.session_id);
            return Ok(Rotation::Invalid);
        }
        let renewed_expiry = now
            .saturating_add(r.idle_ttl_ms)
            .min(session.grant.absolute_expiry_ms);

        if session.current == r.presented {
            if let Some(previous) = session.previous {
                // The previous token was consumed by the last rotation.
                session
                    .consumed
                    .push_back((prefix(&previous), session.refreshed_ms));
                while session.consumed.len() > CONSUMED_LOG_CAP {
                    session.consumed.pop_front();
                }
            }
            session.previous = Some(r.presented);
            session.current = r.successor;
            session.refreshed_ms = now;
            if r.grace_ms > 0 {
                session.grace_until_ms = now.saturating_add(r.grace_ms);
                session.sealed_successor = Some(r.sealed_successor);
            } else {
                session.grace_until_ms = 0;
                session.sealed_successor = None;
            }
            session.expires_at_ms = renewed_expiry;
            return Ok(Rotation::Rotated(session.grant.clone()));
        }

        if session.previous == Some(r.presented) {
            if let Some(sealed) = session.sealed_successor
                && now < session.grace_until_ms
            {
                session.expires_at_ms = renewed_expiry;
                return Ok(Rotation::Replayed {
                    grant: session.grant.clone(),
                    sealed_successor: sealed,
                    current: session.current,
                });
            }
            let subject = session.grant.subject.clone();
            state.sessions.remove(r.session_id);
            state.remember_end(r.session_id, r.presented, &subject, EndedBy::Reuse, now);
            return Ok(Rotation::Reused { subject });
        }

        if let Some(spent) = session.consumed_at(&r.presented) {
            if r.grace_ms > 0 && now < spent.saturating_add(r.grace_ms) {
                return Ok(Rotation::Superseded {
                    subject: session.grant.subject.clone(),
                });
            }
            let subject = session.grant.subject.clone();
            state.sessions.remove(r.session_id);
            state.remember_end(r.session_id, r.presented, &subject, EndedBy::Reuse, now);
            return Ok(Rotation::Reused { subject });
        }
        Ok(Rotation::Invalid)
    }

    /// Ends a session if `presented` is, or was, one of its tokens.
    pub async fn revoke(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Revocation, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        let Some(session) = state.live_session(session_id, now) else {
            let Some(ended) = state.ended.get_mut(session_id) else {
                return Ok(Revocation::Unknown);
            };
            return match ended.repeated(&presented, EndedBy::Revoke, now) {
                Turn::Again => Ok(Revocation::AlreadyRevoked {
                    subject: ended.subject.clone(),
                }),
                Turn::Announcing => Err(StoreError::another_announces()),
                Turn::Nothing => Ok(Revocation::Unknown),
            };
        };
        if !session.holds(&presented) {
            return Ok(Revocation::Unknown);
        }
        let subject = session.grant.subject.clone();
        state.sessions.remove(session_id);
        state.remember_end(session_id, presented, &subject, EndedBy::Revoke, now);
        Ok(Revocation::Revoked { subject })
    }

    /// The live sessions of `subject`, oldest first; prunes the index.
    pub async fn list_sessions(&self, subject: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        let ids: Vec<String> = state
            .index
            .get(subject)
            .map(|index| index.values().cloned().collect())
            .unwrap_or_default();
        let mut list = Vec::new();
        let mut dead = Vec::new();
        for sid in ids {
            match state.sessions.get(&sid) {
                Some(s) if state.counts_for(s, subject, now) => list.push(SessionInfo {
                    session_id: sid,
                    grant: s.grant.clone(),
                    refreshed_ms: s.refreshed_ms,
                    idle_expiry_ms: s.expires_at_ms,
                    client: s.client.clone(),
                }),
                _ => dead.push(sid),
            }
        }
        state.unindex(subject, &dead);
        list.sort_by_key(|s| s.grant.created_ms);
        Ok(list)
    }

    /// Up to `limit` live sessions of `subject` with ids after `after`, in
    /// session-id order; prunes the index of sessions that ended.
    pub async fn sessions_page(
        &self,
        subject: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SessionsPage, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        let mut ids: Vec<String> = state
            .index
            .get(subject)
            .map(|index| {
                index
                    .values()
                    .filter(|sid| after.is_none_or(|after| sid.as_str() > after))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        let mut page = SessionsPage::default();
        let mut dead = Vec::new();
        for sid in ids {
            if page.sessions.len() == limit {
                page.more = true;
                break;
            }
            match state.sessions.get(&sid) {
                Some(s) if state.counts_for(s, subject, now) => page.sessions.push(SessionInfo {
                    session_id: sid,
                    grant: s.grant.clone(),
                    refreshed_ms: s.refreshed_ms,
                    idle_expiry_ms: s.expires_at_ms,
                    client: s.client.clone(),
                }),
                _ => dead.push(sid),
            }
        }
        state.unindex(subject, &dead);
        Ok(page)
    }

    /// The live session whose current refresh token hashes to `presented`
    /// (compared in constant time), if it still counts for its user.
    pub async fn current_session(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        let Some(session) = state.live_session(session_id, now) else {
            return Ok(None);
        };
        let same = bool::from(subtle::ConstantTimeEq::ct_eq(
            session.current.0.as_slice(),
            presented.0.as_slice(),
        ));
        let Some(session) = state.sessions.get(session_id) else {
            return Ok(None);
        };
        if !same || !state.counts_for(session, &session.grant.subject, now) {
            return Ok(None);
        }
        Ok(Some(SessionInfo {
            session_id: session_id.to_owned(),
            grant: session.grant.clone(),
            refreshed_ms: session.refreshed_ms,
            idle_expiry_ms: session.expires_at_ms,
            client: session.client.clone(),
        }))
    }

    /// Whether the session is alive.
    pub async fn session_exists(&self, session_id: &str) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        Ok(state.live_session(session_id, self.now_ms()).is_some())
    }

    /// Ends the owner's session, remembering the end; the same decisions
    /// as `end_session.lua` with a time to remember.
    pub async fn end_own_session(
        &self,
        subject: &str,
        session_id: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        let theirs = state
            .live_session(session_id, now)
            .map(|s| s.grant.subject == subject);
        state.unindex(subject, &[session_id.to_owned()]);
        Ok(match theirs {
            Some(true) => {
                state.sessions.remove(session_id);
                // The marker holds no token: the owner's request names
                // the session, and the subject stands for the token.
                state.remember_end(session_id, TokenHash([0; 32]), subject, EndedBy::Owner, now);
                true
            }
            Some(false) => false,
            None => match state.ended.get_mut(session_id) {
                Some(ended) if ended.subject == subject => {
                    match ended.repeated(&TokenHash([0; 32]), EndedBy::Owner, now) {
                        Turn::Again => true,
                        Turn::Announcing => return Err(StoreError::another_announces()),
                        Turn::Nothing => false,
                    }
                }
                _ => false,
            },
        })
    }

    /// Records that a repeated end was announced: later repeats have
    /// nothing to announce (a first end is left as it is).
    pub async fn end_announced(&self, session_id: &str) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if let Some(ended) = state.ended.get_mut(session_id)
            && ended.let_through_ms.is_some()
        {
            ended.announced = true;
        }
        Ok(())
    }

    /// Ends those of `session_ids` that belong to `subject` and are from
    /// below `below_version`; unindexes every one that is gone.
    pub async fn end_sessions(
        &self,
        subject: &str,
        session_ids: &[String],
        below_version: i64,
    ) -> Result<usize, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        let mut ended = 0;
        let mut gone = Vec::with_capacity(session_ids.len());
        for sid in session_ids {
            match state.sessions.get(sid) {
                Some(s) if s.grant.subject == subject && s.expires_at_ms > now => {
                    if s.grant.account_version < below_version {
                        state.sessions.remove(sid);
                        ended += 1;
                        gone.push(sid.clone());
                    }
                }
                _ => gone.push(sid.clone()),
            }
        }
        state.unindex(subject, &gone);
        Ok(ended)
    }

    /// A page of the session index from insertion number `from`.
    pub async fn session_index_page(
        &self,
        subject: &str,
        from: u64,
        count: usize,
    ) -> Result<IndexPage, StoreError> {
        let state = self.lock()?;
        let Some(index) = state.index.get(subject) else {
            return Ok(IndexPage::default());
        };
        let mut page = index.range(from..).take(count.saturating_add(1));
        let session_ids: Vec<(u64, String)> =
            page.by_ref().map(|(n, sid)| (*n, sid.clone())).collect();
        let next = session_ids.get(count).map(|(n, _)| *n);
        Ok(IndexPage {
            session_ids: session_ids
                .into_iter()
                .take(count)
                .map(|(_, sid)| sid)
                .collect(),
            next,
        })
    }
}

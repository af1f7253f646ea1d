//! The embedded store: everything in one process's memory, for development
//! and `make run`. Same semantics as Redis (rotation, reuse detection, grace
//! window, idle and absolute expiry); lost when the process ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::{
    CONSUMED_LOG_CAP, ClientRecord, FEED_MAX_ENTRIES, FeedEntry, FeedEvent, NewSession, Revocation,
    Rotate, Rotation, SessionGrant, SessionInfo, StoreError, UserRecord, parse_cursor,
};
use crate::tokens::{SealedSecret, TokenHash};

/// Sessions are swept for expiry once per this many writes.
const SWEEP_EVERY: u64 = 1024;

/// How long a follower waits for new feed entries before returning none.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// The in-memory store. Cheap to clone; clones share the data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Counts feed appends, to wake followers.
    appended: watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Arc::default(),
            appended: watch::channel(0).0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<String, UserRecord>,
    clients: HashMap<String, ClientRecord>,
    sessions: HashMap<String, Session>,
    /// Session ids by subject, pruned when listed.
    by_subject: HashMap<String, Vec<String>>,
    feed: VecDeque<FeedEntry>,
    last_cursor: (u64, u64),
    writes: u64,
}

#[derive(Debug)]
struct Session {
    grant: SessionGrant,
    client: String,
    refreshed_ms: i64,
    current: TokenHash,
    previous: Option<TokenHash>,
    grace_until_ms: i64,
    sealed_successor: Option<SealedSecret>,
    consumed: VecDeque<[u8; 16]>,
    /// Idle expiry, capped by the absolute expiry: what a Redis TTL does.
    expires_at_ms: i64,
}

impl Session {
    fn was_consumed(&self, hash: &TokenHash) -> bool {
        let prefix = prefix(hash);
        self.consumed.iter().any(|entry| *entry == prefix)
    }
}

fn prefix(hash: &TokenHash) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.0[..16]);
    out
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        // A poisoned lock means a panic elsewhere mid-update; refuse to serve
        // possibly half-written state rather than propagate the panic.
        self.state
            .lock()
            .map_err(|_| StoreError::Corrupt("memory store lock poisoned".into()))
    }

    /// Always answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    /// The user called `name`, if any.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.lock()?.users.get(name).cloned())
    }

    /// Creates or replaces a user.
    pub async fn put_user(&self, name: &str, user: &UserRecord) -> Result<(), StoreError> {
        self.lock()?.users.insert(name.to_owned(), user.clone());
        Ok(())
    }

    /// The service client `id`, if any.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        Ok(self.lock()?.clients.get(id).cloned())
    }

    /// Creates or replaces a service client.
    pub async fn put_client(&self, id: &str, client: &ClientRecord) -> Result<(), StoreError> {
        self.lock()?.clients.insert(id.to_owned(), client.clone());
        Ok(())
    }

    /// Starts a refresh session, unless the user is disabled.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<bool, StoreError> {
        let now = new.grant.created_ms;
        let mut state = self.lock()?;
        state.writes += 1;
        if state.writes % SWEEP_EVERY == 0 {
            let wall = crate::now_ms();
            state.sessions.retain(|_, s| s.expires_at_ms > wall);
        }
        if state
            .users
            .get(&new.grant.subject)
            .is_some_and(|user| user.disabled)
        {
            return Ok(false);
        }
        // Indexed under the user's account, like Redis does.
        if state.users.contains_key(&new.grant.subject) {
            state
                .by_subject
                .entry(new.grant.subject.clone())
                .or_default()
                .push(new.session_id.to_owned());
        }
        state.sessions.insert(
            new.session_id.to_owned(),
            Session {
                grant: new.grant.clone(),
                client: new.client.to_owned(),
                refreshed_ms: now,
                current: new.token,
                previous: None,
                grace_until_ms: 0,
                sealed_successor: None,
                consumed: VecDeque::new(),
                expires_at_ms: (now + new.idle_ttl_ms).min(new.grant.absolute_expiry_ms),
            },
        );
        Ok(true)
    }

    /// Rotates a refresh token; the same decisions as `rotate.lua`.
    pub async fn rotate(&self, r: &Rotate<'_>) -> Result<Rotation, StoreError> {
        let now = r.now_ms;
        let mut state = self.lock()?;
        let Some(session) = state.sessions.get_mut(r.session_id) else {
            return Ok(Rotation::Invalid);
        };
        if now >= session.expires_at_ms {
            state.sessions.remove(r.session_id);
            return Ok(Rotation::Invalid);
        }
        let renewed_expiry = (now + r.idle_ttl_ms).min(session.grant.absolute_expiry_ms);

        if session.current == r.presented {
            if let Some(previous) = session.previous {
                session.consumed.push_back(prefix(&previous));
                while session.consumed.len() > CONSUMED_LOG_CAP {
                    session.consumed.pop_front();
                }
            }
            session.previous = Some(r.presented);
            session.current = r.successor;
            session.refreshed_ms = now;
            if r.grace_ms > 0 {
                session.grace_until_ms = now + r.grace_ms;
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
            return Ok(Rotation::Reused { subject });
        }

        if session.was_consumed(&r.presented) {
            let subject = session.grant.subject.clone();
            state.sessions.remove(r.session_id);
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
        let now = crate::now_ms();
        let mut state = self.lock()?;
        let Some(session) = state.sessions.get(session_id) else {
            return Ok(Revocation::Unknown);
        };
        if now >= session.expires_at_ms {
            state.sessions.remove(session_id);
            return Ok(Revocation::Unknown);
        }
        let belongs = session.current == presented
            || session.previous == Some(presented)
            || session.was_consumed(&presented);
        if !belongs {
            return Ok(Revocation::Unknown);
        }
        let subject = session.grant.subject.clone();
        state.sessions.remove(session_id);
        Ok(Revocation::Revoked { subject })
    }

    /// The live sessions of `subject`, oldest first.
    pub async fn list_sessions(&self, subject: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = crate::now_ms();
        let mut state = self.lock()?;
        let State {
            sessions,
            by_subject,
            ..
        } = &mut *state;
        let Some(ids) = by_subject.get_mut(subject) else {
            return Ok(Vec::new());
        };
        ids.retain(|sid| {
            sessions
                .get(sid)
                .is_some_and(|s| s.expires_at_ms > now && s.grant.subject == subject)
        });
        let mut list: Vec<SessionInfo> = ids
            .iter()
            .filter_map(|sid| {
                let s = sessions.get(sid)?;
                Some(SessionInfo {
                    session_id: sid.clone(),
                    grant: s.grant.clone(),
                    refreshed_ms: s.refreshed_ms,
                    idle_expiry_ms: s.expires_at_ms,
                    client: s.client.clone(),
                })
            })
            .collect();
        if ids.is_empty() {
            by_subject.remove(subject);
        }
        list.sort_by_key(|s| s.grant.created_ms);
        Ok(list)
    }

    /// Whether the session is alive.
    pub async fn session_exists(&self, session_id: &str) -> Result<bool, StoreError> {
        let now = crate::now_ms();
        Ok(self
            .lock()?
            .sessions
            .get(session_id)
            .is_some_and(|s| s.expires_at_ms > now))
    }

    /// Ends the session if it belongs to `subject`.
    pub async fn end_session_of(
        &self,
        session_id: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::now_ms();
        let mut state = self.lock()?;
        let owned = state
            .sessions
            .get(session_id)
            .is_some_and(|s| s.grant.subject == subject && s.expires_at_ms > now);
        if owned {
            state.sessions.remove(session_id);
        }
        Ok(owned)
    }

    /// Disables or enables a user.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        match state.users.get_mut(name) {
            Some(user) => {
                user.disabled = disabled;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Appends to the revocation feed.
    pub async fn publish_revocation(
        &self,
        event: &FeedEvent,
        at_ms: i64,
        until_ms: i64,
    ) -> Result<String, StoreError> {
        let cursor = {
            let mut state = self.lock()?;
            let (last_ms, last_seq) = state.last_cursor;
            let ms = u64::try_from(at_ms).unwrap_or(0);
            let next = if ms > last_ms {
                (ms, 0)
            } else {
                (last_ms, last_seq + 1)
            };
            state.last_cursor = next;
            let cursor = format!("{}-{}", next.0, next.1);
            let wall = crate::now_ms();
            while state.feed.len() >= FEED_MAX_ENTRIES
                || state.feed.front().is_some_and(|e| e.until_ms <= wall)
            {
                state.feed.pop_front();
            }
            state.feed.push_back(FeedEntry {
                cursor: cursor.clone(),
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
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let after = cursor.and_then(parse_cursor).unwrap_or((0, 0));
        let state = self.lock()?;
        Ok(state
            .feed
            .iter()
            .filter(|e| parse_cursor(&e.cursor).is_some_and(|c| c > after) || cursor.is_none())
            .take(limit)
            .cloned()
            .collect())
    }

    /// A follower of the feed, starting after the newest entry.
    pub fn follow(&self) -> MemoryFollower {
        let position = self.lock().map(|state| state.last_cursor).unwrap_or((0, 0));
        MemoryFollower {
            store: self.clone(),
            appended: self.appended.subscribe(),
            position: format!("{}-{}", position.0, position.1),
        }
    }
}

/// Waits for feed entries appended to a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryFollower {
    store: MemoryStore,
    appended: watch::Receiver<u64>,
    position: String,
}

impl MemoryFollower {
    /// Entries appended since the last call; waits up to five seconds.
    pub async fn next(&mut self) -> Result<Vec<FeedEntry>, StoreError> {
        self.appended.mark_unchanged();
        let mut ready = self
            .store
            .revocations_after(Some(&self.position), 1000)
            .await?;
        if ready.is_empty() {
            let _ = tokio::time::timeout(FOLLOW_WAIT, self.appended.changed()).await;
            ready = self
                .store
                .revocations_after(Some(&self.position), 1000)
                .await?;
        }
        if let Some(last) = ready.last() {
            self.position.clone_from(&last.cursor);
        }
        Ok(ready)
    }
}

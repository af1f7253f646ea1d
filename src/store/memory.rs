//! The embedded store: everything in one process's memory, for development
//! and `make run`. Same semantics as Redis (rotation, reuse detection, grace
//! window, idle and absolute expiry); lost when the process ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    CONSUMED_LOG_CAP, ClientRecord, NewSession, Revocation, Rotate, Rotation, SessionGrant,
    StoreError, UserRecord,
};
use crate::tokens::{SealedSecret, TokenHash};

/// Sessions are swept for expiry once per this many writes.
const SWEEP_EVERY: u64 = 1024;

/// The in-memory store. Cheap to clone; clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<String, UserRecord>,
    clients: HashMap<String, ClientRecord>,
    sessions: HashMap<String, Session>,
    writes: u64,
}

#[derive(Debug)]
struct Session {
    grant: SessionGrant,
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

    /// Starts a refresh session.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<(), StoreError> {
        let now = new.grant.created_ms;
        let mut state = self.lock()?;
        state.writes += 1;
        if state.writes % SWEEP_EVERY == 0 {
            let wall = crate::now_ms();
            state.sessions.retain(|_, s| s.expires_at_ms > wall);
        }
        state.sessions.insert(
            new.session_id.to_owned(),
            Session {
                grant: new.grant.clone(),
                current: new.token,
                previous: None,
                grace_until_ms: 0,
                sealed_successor: None,
                consumed: VecDeque::new(),
                expires_at_ms: (now + new.idle_ttl_ms).min(new.grant.absolute_expiry_ms),
            },
        );
        Ok(())
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
}

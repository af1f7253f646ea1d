//! Refresh sessions in Redis: one hash per session (plus its consumed-token
//! log), listed in the user's account hash (`s:SID` fields, the session
//! index). A session and its user live in different slots, so creating and
//! ending one are two steps; each step is atomic.

use futures_util::{StreamExt, stream};
use redis::AsyncCommands;

use super::RedisStore;
use super::reply;
use super::script::ScriptCall;
use crate::store::{
    CONSUMED_LOG_CAP, IndexPage, NewSession, Revocation, Rotate, Rotation, SessionCreated,
    SessionGrant, SessionInfo, SessionsPage, StoreError,
};
use crate::store::{REPEAT_ANNOUNCING_MS, REVOKED_REMEMBERED_MS};
use crate::tokens::TokenHash;

/// What `end_session.lua` did.
enum Outcome {
    /// The session ended.
    Ended,
    /// Its owner's end, repeated: to be announced (see
    /// [`RedisStore::end_own_session`]).
    EndedAgain,
    /// Its owner's end, repeated while another repeat announces it.
    Announcing,
    /// It was not there (or not theirs).
    Gone,
    /// It began under a newer account version and stays.
    Kept,
}

/// How many per-session commands run at once when many sessions are read or
/// ended (they pipeline on the shared connection).
const CONCURRENT: usize = 128;

/// The most sessions [`RedisStore::list_sessions`] reads.
pub(crate) const MAX_LISTED: usize = 2_000;

/// How many index entries one listing step reads.
const LIST_PAGE: usize = 500;

impl RedisStore {
    /// Starts a refresh session with `session_create.lua`, then lists it under
    /// the user's account with `index.lua`; drops it again if the account
    /// changed in between.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<SessionCreated, StoreError> {
        let mut conn = self.conn();
        let key = self.keys.session(new.session_id);
        let grant = new.grant;
        let ttl = new
            .idle_ttl_ms
            .min(grant.absolute_expiry_ms.saturating_sub(grant.created_ms))
            .max(1);
        let mut invocation = ScriptCall::new(&self.scripts.session_create);
        invocation
            .key(&key)
            .arg(ttl)
            .arg("sub")
            .arg(&grant.subject)
            .arg("scp")
            .arg(&grant.scope)
            .arg("aud")
            .arg(&grant.audience)
            .arg("ct")
            .arg(grant.created_ms)
            .arg("ax")
            .arg(grant.absolute_expiry_ms)
            .arg("av")
            .arg(grant.account_version)
            .arg("cur")
            .arg(new.token.0.as_slice());
        if !new.client.is_empty() {
            invocation.arg("ua").arg(new.client);
        }
        let _: i64 = self.write(invocation).await?;

        let mut invocation = ScriptCall::new(&self.scripts.index);
        invocation
            .key(self.keys.user(&grant.subject))
            .arg(new.session_id)
            .arg(grant.absolute_expiry_ms)
            .arg(grant.created_ms)
            .arg(grant.account_version);
        let listed: i64 = self.write(invocation).await?;
        match usize::try_from(listed) {
            Ok(listed) => Ok(SessionCreated::Listed(listed)),
            Err(_) => {
                let _: i64 = self.bounded(conn.del(&key)).await?;
                Ok(SessionCreated::AccountChanged)
            }
        }
    }

    /// Rotates a refresh token with `rotate.lua`.
    pub async fn rotate(&self, r: &Rotate<'_>) -> Result<Rotation, StoreError> {
        let mut invocation = ScriptCall::new(&self.scripts.rotate);
        invocation
            .key(self.keys.session(r.session_id))
            .key(self.keys.consumed(r.session_id))
            .key(self.keys.revoked(r.session_id))
            .arg(r.presented.0.as_slice())
            .arg(r.successor.0.as_slice())
            .arg(r.sealed_successor.0.as_slice())
            .arg(r.now_ms)
            .arg(r.idle_ttl_ms)
            .arg(r.grace_ms)
            .arg(CONSUMED_LOG_CAP)
            .arg(REVOKED_REMEMBERED_MS)
            .arg(REPEAT_ANNOUNCING_MS);
        let answer: Vec<Vec<u8>> = self.write(invocation).await?;
        reply::rotation(answer)
    }

    /// Ends a session with `revoke.lua`.
    pub async fn revoke(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Revocation, StoreError> {
        let mut invocation = ScriptCall::new(&self.scripts.revoke);
        invocation
            .key(self.keys.session(session_id))
            .key(self.keys.consumed(session_id))
            .key(self.keys.revoked(session_id))
            .arg(presented.0.as_slice())
            .arg(REVOKED_REMEMBERED_MS)
            .arg(REPEAT_ANNOUNCING_MS)
            .arg(self.clock.now_ms());
        let answer: Vec<Vec<u8>> = self.write(invocation).await?;
        match answer.first().map(Vec::as_slice) {
            Some(b"announcing") => Err(StoreError::another_announces()),
            Some(b"revoked") => Ok(Revocation::Revoked {
                subject: reply::text(answer.get(1))?,
            }),
            Some(b"again") => Ok(Revocation::AlreadyRevoked {
                subject: reply::text(answer.get(1))?,
            }),
            Some(b"unknown") => Ok(Revocation::Unknown),
            _ => Err(StoreError::Corrupt("unexpected revoke reply".into())),
        }
    }

    /// The live sessions of `subject` (at most [`MAX_LISTED`]), oldest
    /// first; prunes the index of sessions that ended.
    pub async fn list_sessions(&self, subject: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let Some(user) = self.user(subject).await? else {
            return Ok(Vec::new());
        };
        let now = self.clock.now_ms();
        let mut sessions = Vec::new();
        let mut from = 0;
        loop {
            let page = self.session_index_page(subject, from, LIST_PAGE).await?;
            let version = user.version;
            let read: Vec<Result<Option<SessionInfo>, StoreError>> =
                stream::iter(page.session_ids.iter().cloned())
                    .map(|sid| async move { self.read_session(&sid, subject, version, now).await })
                    .buffered(CONCURRENT)
                    .collect()
                    .await;
            let mut dead = Vec::new();
            for (sid, session) in page.session_ids.iter().zip(read) {
                match session? {
                    Some(session) => sessions.push(session),
                    None => dead.push(format!("s:{sid}")),
                }
            }
            if !dead.is_empty() {
                let mut conn = self.conn();
                let _: i64 = self
                    .bounded(conn.hdel(self.keys.user(subject), &dead))
                    .await?;
            }
            match page.next {
                Some(next) if sessions.len() < MAX_LISTED => from = next,
                _ => break,
            }
        }
        sessions.truncate(MAX_LISTED);
        sessions.sort_by_key(|s| s.grant.created_ms);
        Ok(sessions)
    }

    /// Up to `limit` live sessions of `subject` with ids after `after`, in
    /// session-id order: the whole index is read (`HKEYS`, bounded by the
    /// per-user session cap), then sessions are read a page at a time
    /// until `limit` are live; the ones that ended are pruned.
    pub async fn sessions_page(
        &self,
        subject: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SessionsPage, StoreError> {
        let Some(user) = self.user(subject).await? else {
            return Ok(SessionsPage::default());
        };
        let mut conn = self.conn();
        let fields: Vec<String> = self.bounded(conn.hkeys(self.keys.user(subject))).await?;
        let mut ids: Vec<String> = fields
            .into_iter()
            .filter_map(|field| field.strip_prefix("s:").map(str::to_owned))
            .filter(|sid| after.is_none_or(|after| sid.as_str() > after))
            .collect();
        ids.sort_unstable();
        let now = self.clock.now_ms();
        let version = user.version;
        let mut page = SessionsPage::default();
        let mut rest = ids.as_slice();
        while !rest.is_empty() {
            let wanted = limit.saturating_sub(page.sessions.len());
            if wanted == 0 {
                page.more = true;
                break;
            }
            let (batch, after_batch) = rest.split_at(wanted.min(rest.len()));
            rest = after_batch;
            let read: Vec<Result<Option<SessionInfo>, StoreError>> = stream::iter(batch.to_vec())
                .map(|sid| async move { self.read_session(&sid, subject, version, now).await })
                .buffered(CONCURRENT)
                .collect()
                .await;
            let mut dead = Vec::new();
            for (sid, session) in batch.iter().zip(read) {
                match session? {
                    Some(session) => page.sessions.push(session),
                    None => dead.push(format!("s:{sid}")),
                }
            }
            if !dead.is_empty() {
                let _: i64 = self
                    .bounded(conn.hdel(self.keys.user(subject), &dead))
                    .await?;
            }
        }
        Ok(page)
    }

    /// One listed session, or `None` if it ended (expired, revoked, not
    /// theirs, or from before the account's latest cut-off).
    async fn read_session(
        &self,
        session_id: &str,
        subject: &str,
        account_version: i64,
        now: i64,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let mut conn = self.conn();
        let key = self.keys.session(session_id);
        let fields = ["sub", "scp", "aud", "ct", "ax", "rt", "ua", "av"];
        let (fields, ttl): (Vec<Option<String>>, i64) = self
            .bounded(async {
                let fields = conn.hmget(&key, &fields).await?;
                let ttl = conn.pttl(&key).await?;
                Ok((fields, ttl))
            })
            .await?;
        let get = |i: usize| fields.get(i).cloned().flatten();
        let number = |i: usize| reply::number_or(get(i).as_ref(), 0);
        let version = number(7)?;
        if get(0).as_deref() != Some(subject) || ttl <= 0 || version < account_version {
            return Ok(None);
        }
        let created_ms = number(3)?;
        Ok(Some(SessionInfo {
            session_id: session_id.to_owned(),
            grant: SessionGrant {
                subject: subject.to_owned(),
                scope: get(1).unwrap_or_default(),
                audience: get(2).unwrap_or_default(),
                created_ms,
                absolute_expiry_ms: number(4)?,
                account_version: version,
            },
            refreshed_ms: reply::number_or(get(5).as_ref(), created_ms)?,
            idle_expiry_ms: now.saturating_add(ttl),
            client: get(6).unwrap_or_default(),
        }))
    }

    /// The live session whose current refresh token hashes to `presented`:
    /// `None` if it ended (expired, revoked, from before its account's
    /// latest cut-off) or `presented` is not its current token (compared in
    /// constant time). Reads only: nothing is consumed.
    pub async fn current_session(
        &self,
        session_id: &str,
        presented: TokenHash,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let mut conn = self.conn();
        let key = self.keys.session(session_id);
        let fields = ["sub", "cur"];
        let found: Vec<Option<Vec<u8>>> = self.bounded(conn.hmget(&key, &fields)).await?;
        let (Some(Some(subject)), Some(Some(current))) = (found.first(), found.get(1)) else {
            return Ok(None);
        };
        let same = current.len() == presented.0.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                current.as_slice(),
                presented.0.as_slice(),
            ));
        if !same {
            return Ok(None);
        }
        let Ok(subject) = String::from_utf8(subject.clone()) else {
            return Err(StoreError::Corrupt("session subject is not UTF-8".into()));
        };
        let Some(user) = self.user(&subject).await? else {
            return Ok(None);
        };
        self.read_session(session_id, &subject, user.version, self.clock.now_ms())
            .await
    }

    /// Whether the session is alive.
    pub async fn session_exists(&self, session_id: &str) -> Result<bool, StoreError> {
        let key = self.keys.session(session_id);
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&key);
        self.read_on_primary(&key, exists).await
    }

    /// Ends each session that belongs to `subject` and is from below
    /// `below_version` with `end_session.lua` (many at once), then drops
    /// every one that is gone from the index.
    pub async fn end_sessions(
        &self,
        subject: &str,
        session_ids: &[String],
        below_version: i64,
    ) -> Result<usize, StoreError> {
        if session_ids.is_empty() {
            return Ok(0);
        }
        let outcomes: Vec<Result<Outcome, StoreError>> = stream::iter(session_ids.iter().cloned())
            .map(|sid| async move { self.end_session(&sid, subject, below_version, 0).await })
            .buffered(CONCURRENT)
            .collect()
            .await;
        let mut count = 0;
        let mut gone = Vec::with_capacity(session_ids.len());
        for (sid, outcome) in session_ids.iter().zip(outcomes) {
            match outcome? {
                Outcome::Ended => {
                    count += 1;
                    gone.push(format!("s:{sid}"));
                }
                Outcome::Gone | Outcome::EndedAgain | Outcome::Announcing => {
                    gone.push(format!("s:{sid}"));
                }
                Outcome::Kept => {}
            }
        }
        if !gone.is_empty() {
            let mut conn = self.conn();
            let _: i64 = self
                .bounded(conn.hdel(self.keys.user(subject), &gone))
                .await?;
        }
        Ok(count)
    }

    /// Ends `subject`'s session `session_id` at the owner's (or an
    /// administrator's) request, remembering the end like a revoke: the
    /// repeats are reported ended again until one's announcement is
    /// confirmed ([`RedisStore::end_announced`]), so a retry whose first
    /// answer was lost announces it. Returns whether it ended (or ended
    /// again); a repeat while another announces it is
    /// [`StoreError::Unavailable`] (to be retried).
    pub async fn end_own_session(
        &self,
        subject: &str,
        session_id: &str,
    ) -> Result<bool, StoreError> {
        let outcome = self
            .end_session(session_id, subject, i64::MAX, REVOKED_REMEMBERED_MS)
            .await?;
        // Gone from the index whatever the outcome (a session that began
        // under a newer version is only kept by a sweep, never here).
        let mut conn = self.conn();
        let _: i64 = self
            .bounded(conn.hdel(self.keys.user(subject), format!("s:{session_id}")))
            .await?;
        match outcome {
            Outcome::Announcing => Err(StoreError::another_announces()),
            outcome => Ok(matches!(outcome, Outcome::Ended | Outcome::EndedAgain)),
        }
    }

    /// Records that a repeated end of `session_id` was announced (see
    /// `lua/ended.lua`): later repeats have nothing to announce. A plain
    /// write: if a failover loses it, a later repeat announces once more.
    pub async fn end_announced(&self, session_id: &str) -> Result<(), StoreError> {
        let mut call = ScriptCall::new(&self.scripts.ended_announced);
        call.key(self.keys.revoked(session_id));
        let mut link = self.conn();
        let _: i64 = self.bounded(call.run(&mut link)).await?;
        Ok(())
    }

    /// `end_session.lua` on one session; `remember_ms` > 0 remembers an
    /// end for a repeated request.
    async fn end_session(
        &self,
        session_id: &str,
        subject: &str,
        below_version: i64,
        remember_ms: i64,
    ) -> Result<Outcome, StoreError> {
        let mut invocation = ScriptCall::new(&self.scripts.end_session);
        invocation
            .key(self.keys.session(session_id))
            .key(self.keys.consumed(session_id))
            .key(self.keys.revoked(session_id))
            .arg(subject)
            .arg(below_version)
            .arg(remember_ms)
            .arg(REPEAT_ANNOUNCING_MS)
            .arg(self.clock.now_ms());
        let outcome: i64 = self.write(invocation).await?;
        Ok(match outcome {
            1 => Outcome::Ended,
            2 => Outcome::EndedAgain,
            3 => Outcome::Announcing,
            0 => Outcome::Gone,
            _ => Outcome::Kept,
        })
    }

    /// A page of the session index with `HSCAN` (which returns every entry
    /// present for the whole scan, whatever is removed meanwhile).
    pub async fn session_index_page(
        &self,
        subject: &str,
        from: u64,
        count: usize,
    ) -> Result<IndexPage, StoreError> {
        let mut conn = self.conn();
        let (next, pairs): (u64, Vec<String>) = self
            .bounded(
                redis::cmd("HSCAN")
                    .arg(self.keys.user(subject))
                    .arg(from)
                    .arg("MATCH")
                    .arg("s:*")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        let session_ids = pairs
            .chunks(2)
            .filter_map(|pair| pair.first()?.strip_prefix("s:").map(str::to_owned))
            .collect();
        Ok(IndexPage {
            session_ids,
            next: (next != 0).then_some(next),
        })
    }
}

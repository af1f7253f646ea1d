//! The caller's own sessions: list them, end one, end all (log out
//! everywhere). Each needs an access token meant for tokend itself (its
//! audience is tokend's issuer name), from a live session of an account that
//! was not cut off since.

use tracing::{info, warn};

use super::{AuthError, Authority};
use crate::accounts::AccountError;
use crate::admin::cutoff::{self, SWEEP_BATCH};
use crate::clock::millis;
use crate::facts::{EndCause, Ended, Fact, SessionsEnded};
use crate::store::{AccountChange, AccountKind, SessionInfo};
use crate::telemetry::record;
use tokend_interceptor::Claims;

/// How many sessions RevokeAllSessions ends before answering; the rest are
/// swept in the background (the cut-off has made them useless already).
const SWEEP_BEFORE_ANSWER: usize = 4 * SWEEP_BATCH;

impl Authority {
    /// The caller's live sessions (none for a service client).
    pub async fn list_sessions(&self, caller: &Claims) -> Result<Vec<SessionInfo>, AuthError> {
        match self.require_live_caller(caller).await? {
            AccountKind::User => Ok(self.store.list_sessions(caller.sub()).await?),
            AccountKind::Client => Ok(Vec::new()),
        }
    }

    /// Ends one of the caller's own sessions; anyone else's is "not found".
    pub async fn revoke_session(&self, caller: &Claims, session_id: &str) -> Result<(), AuthError> {
        self.require_live_caller(caller).await?;
        self.end_one_session(caller.sub(), session_id, EndCause::RevokeSession)
            .await
    }

    /// Ends `subject`'s session `session_id` for `cause` and announces it;
    /// anyone else's, or an unknown one, is "not found".
    pub(super) async fn end_one_session(
        &self,
        subject: &str,
        session_id: &str,
        cause: EndCause,
    ) -> Result<(), AuthError> {
        // A repeated request whose first answer was lost (it may have
        // ended the session unannounced) is told "ended" again, and
        // announces it, until a repeat's announcement is recorded.
        if !crate::tokens::refresh::is_session_id(session_id)
            || !self.store.end_own_session(subject, session_id).await?
        {
            return Err(AuthError::SessionNotFound);
        }
        record(&Fact::SessionsEnded(SessionsEnded {
            cause,
            subject,
            sessions: Ended::One(session_id),
            in_background: false,
        }));
        self.announce_requested_end(session_id).await
    }

    /// Announces that session `session_id` ended at a caller's request (a
    /// Revoke, a reuse, a RevokeSession, or a repeat of one), then records
    /// in the ended session's marker that it is on the feed, so a repeat
    /// has nothing more to announce (`Store::end_announced`). Fails until
    /// announced: the caller is answered `STORE_UNAVAILABLE`, and its retry
    /// announces again.
    pub(super) async fn announce_requested_end(&self, session_id: &str) -> Result<(), AuthError> {
        self.feed.announce_session_ended(session_id).await?;
        if let Err(err) = self.store.end_announced(session_id).await {
            // Costs at most one more announcement, should the end be repeated.
            warn!(sid = session_id, error = %err, "could not record that a session's end was announced");
        }
        Ok(())
    }

    /// Log out everywhere: cuts off every session and token of the caller's
    /// account (one feed entry), then ends the sessions, the first few
    /// thousand before answering and the rest in the background. Returns how
    /// many sessions ended before the answer.
    pub async fn revoke_all_sessions(&self, caller: &Claims) -> Result<usize, AuthError> {
        let kind = self.require_live_caller(caller).await?;
        let subject = caller.sub();
        // One log-out-everywhere per account at a time, across replicas: a
        // loop of logins and cut-offs would only churn the feed every
        // watcher receives.
        let interval = self.revoke_all_interval;
        if !interval.is_zero()
            && !self
                .store
                .take_cut_off_slot(subject, millis(interval))
                .await?
        {
            return Err(AuthError::RateLimited(interval));
        }
        let version = match cutoff::cut_off(
            &self.store,
            &self.feed,
            kind,
            subject,
            AccountChange::CutOff,
        )
        .await
        {
            Ok(version) => version,
            // The cut-off holds in tokend already; resource services will
            // hear of it when the feed is back.
            Err(AccountError::NotAnnounced {
                version, source, ..
            }) => {
                warn!(sub = subject, error = %source, "cut-off not announced yet; retrying");
                self.feed.announce_cut_off_later(subject, version);
                version
            }
            Err(AccountError::NoSuchAccount(..)) => return Err(AuthError::SessionRevoked),
            Err(AccountError::Store(err)) => return Err(err.into()),
            Err(other) => return Err(AuthError::InvalidRequest(other.to_string())),
        };
        if kind == AccountKind::Client {
            info!(
                sub = subject,
                "all tokens of a service client cut off by itself"
            );
            return Ok(0);
        }
        let first = cutoff::sweep_sessions(
            &self.store,
            subject,
            version,
            Some(SWEEP_BEFORE_ANSWER),
            &mut |_| {},
        )
        .await?;
        if !first.complete {
            let store = self.store.clone();
            let subject = subject.to_owned();
            tokio::spawn(async move {
                match cutoff::sweep_sessions(&store, &subject, version, None, &mut |_| {}).await {
                    Ok(rest) => record(&Fact::SessionsEnded(SessionsEnded {
                        cause: EndCause::RevokeAll,
                        subject: &subject,
                        sessions: Ended::Count(rest.ended),
                        in_background: true,
                    })),
                    Err(err) => warn!(sub = %subject, error = %err, "background sweep stopped"),
                }
            });
        }
        record(&Fact::SessionsEnded(SessionsEnded {
            cause: EndCause::RevokeAll,
            subject,
            sessions: Ended::Count(first.ended),
            in_background: false,
        }));
        Ok(first.ended)
    }

    /// Checks that the caller may manage sessions: a token for tokend, from
    /// an account that exists, is active and was not cut off since the token
    /// began, and (for users) from a session that is still alive. Returns
    /// the caller's kind of account.
    pub(super) async fn require_live_caller(
        &self,
        caller: &Claims,
    ) -> Result<AccountKind, AuthError> {
        if caller.aud() != self.issuer_name() {
            return Err(AuthError::WrongAudience);
        }
        if caller.is_delegated() {
            return Err(AuthError::ChainNotAllowed(
                "sessions are managed with the user's own token, not a delegated one".into(),
            ));
        }
        let kind = match caller.sid() {
            Some(_) => AccountKind::User,
            None => AccountKind::Client,
        };
        let account = self.accounts.fresh(kind, caller.sub()).await?;
        let current = account.is_some_and(|a| a.active && caller.av().unwrap_or(0) >= a.version);
        if !current {
            return Err(AuthError::SessionRevoked);
        }
        if let Some(sid) = &caller.sid()
            && !self.store.session_exists(sid).await?
        {
            return Err(AuthError::SessionRevoked);
        }
        Ok(kind)
    }
}

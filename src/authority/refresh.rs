//! Refresh (rotation with reuse detection and a grace window, then the
//! account check) and Revoke.

use tracing::{info, warn};

use super::{AuthError, Authority, IssuedTokens};
use crate::clock::millis;
use crate::facts::{EndCause, Ended, Fact, Refresh, RefreshOutcome, SessionsEnded};
use crate::store::{Revocation, Rotate, Rotation, SessionGrant};
use crate::telemetry::record;
use crate::tokens::RefreshToken;

impl Authority {
    /// Rotates a refresh token: the presented one is consumed and a new pair
    /// returned for the same session, with the session's scopes narrowed to
    /// what the account has now. A session whose account was disabled,
    /// deleted or cut off since it began is ended instead.
    pub async fn refresh(&self, token: &str) -> Result<IssuedTokens, AuthError> {
        let Some(presented) = RefreshToken::parse(token) else {
            refresh_refused(None, None, "malformed token");
            return Err(AuthError::RefreshTokenInvalid);
        };
        let session_id = presented.session_id();
        let successor = RefreshToken::generate(session_id);
        let now = self.store.clock().now_ms();
        let rotation = self
            .store
            .rotate(&Rotate {
                session_id,
                presented: presented.hash(),
                successor: successor.hash(),
                sealed_successor: presented.seal_successor(&successor),
                now_ms: now,
                idle_ttl_ms: millis(self.lifetimes.refresh_idle),
                grace_ms: millis(self.lifetimes.reuse_grace),
            })
            .await?;
        let (grant, next, retried) = match rotation {
            Rotation::Rotated(grant) => (grant, successor, false),
            Rotation::Replayed {
                grant,
                sealed_successor,
                current,
            } => {
                let earlier = presented.open_successor(&sealed_successor);
                if earlier.hash() != current {
                    refresh_refused(
                        Some(session_id),
                        Some(&grant.subject),
                        "sealed successor does not match the session",
                    );
                    return Err(AuthError::RefreshTokenInvalid);
                }
                (grant, earlier, true)
            }
            Rotation::Reused { subject } => {
                record(&Fact::Refresh(Refresh {
                    session: Some(session_id),
                    subject: Some(&subject),
                    outcome: RefreshOutcome::Reused,
                }));
                record(&Fact::SessionsEnded(SessionsEnded {
                    cause: EndCause::Reuse,
                    subject: &subject,
                    sessions: Ended::One(session_id),
                    in_background: false,
                }));
                // Told as reused only once announced: a retry is told again.
                self.announce_requested_end(session_id).await?;
                return Err(AuthError::RefreshTokenReused);
            }
            Rotation::Superseded { subject } => {
                refresh_refused(
                    Some(session_id),
                    Some(&subject),
                    "a token consumed moments ago, rotated past since: a late duplicate; the session stands",
                );
                return Err(AuthError::RefreshTokenInvalid);
            }
            Rotation::Invalid => {
                refresh_refused(Some(session_id), None, "unknown, expired or revoked token");
                return Err(AuthError::RefreshTokenInvalid);
            }
        };

        let scope = match self.account_scope(&grant, session_id).await {
            Ok(scope) => scope,
            Err(err) => {
                if matches!(err, AuthError::RefreshTokenInvalid) {
                    refresh_refused(
                        Some(session_id),
                        Some(&grant.subject),
                        "the account was disabled, deleted or cut off",
                    );
                }
                return Err(err);
            }
        };
        let issued = self.issue(&grant, &scope, session_id, next, now)?;
        let jti = issued.access.jti.as_str();
        record(&Fact::Refresh(Refresh {
            session: Some(session_id),
            subject: Some(&grant.subject),
            outcome: if retried {
                RefreshOutcome::GraceRetry(jti)
            } else {
                RefreshOutcome::Rotated(jti)
            },
        }));
        Ok(issued)
    }

    /// The scopes the session's next tokens get: what it asked for at login,
    /// narrowed to what the account has now. A session whose account was
    /// disabled, deleted or cut off since it began is ended instead.
    #[cfg(not(feature = "bench-baseline-no-account-check"))]
    async fn account_scope(
        &self,
        grant: &SessionGrant,
        session_id: &str,
    ) -> Result<String, AuthError> {
        use crate::accounts::rules::intersect_scopes;
        use crate::store::AccountKind;

        let account = self.accounts.get(AccountKind::User, &grant.subject).await?;
        match account.as_deref() {
            Some(account) if account.active && grant.account_version >= account.version => {
                Ok(intersect_scopes(&grant.scope, &account.scope))
            }
            _ => {
                // Its tokens are covered by the account's cut-off already;
                // the session itself goes now rather than at its expiry.
                let ended = [session_id.to_owned()];
                if let Err(err) = self
                    .store
                    .end_sessions(&grant.subject, &ended, i64::MAX)
                    .await
                {
                    warn!(sid = session_id, error = %err, "could not end a cut-off session");
                }
                Err(AuthError::RefreshTokenInvalid)
            }
        }
    }

    /// What `make bench` measures the account check against: the design
    /// before it, which looked at the session only. Never built otherwise.
    #[cfg(feature = "bench-baseline-no-account-check")]
    async fn account_scope(&self, grant: &SessionGrant, _: &str) -> Result<String, AuthError> {
        Ok(grant.scope.clone())
    }

    /// Ends the session `token` belongs to. Succeeds for unknown, malformed,
    /// expired and already revoked tokens too (RFC 7009).
    pub async fn revoke(&self, token: &str) -> Result<(), AuthError> {
        let Some(presented) = RefreshToken::parse(token) else {
            return Ok(());
        };
        let session_id = presented.session_id();
        match self.store.revoke(session_id, presented.hash()).await? {
            Revocation::Revoked { subject } => {
                record(&Fact::SessionsEnded(SessionsEnded {
                    cause: EndCause::Revoke,
                    subject: &subject,
                    sessions: Ended::One(session_id),
                    in_background: false,
                }));
                self.feed.announce_session_ended(session_id).await?;
            }
            // A retry of a revoke whose answer was lost: that one may have
            // ended the session and failed before announcing it.
            Revocation::AlreadyRevoked { subject } => {
                info!(sub = %subject, sid = session_id, "repeated revoke: announced again");
                self.announce_requested_end(session_id).await?;
            }
            Revocation::Unknown => info!(sid = session_id, "revoke of an unknown token"),
        }
        Ok(())
    }
}

/// States a refused Refresh (`why`, for the log).
fn refresh_refused(session: Option<&str>, subject: Option<&str>, why: &'static str) {
    record(&Fact::Refresh(Refresh {
        session,
        subject,
        outcome: RefreshOutcome::Invalid(why),
    }));
}

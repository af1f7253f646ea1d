//! Who may watch the revocation feed (it names revoked sessions and
//! cut-off accounts): a live service's own token for tokend with the scope
//! `tokend.revocations`, or a verified client certificate naming exactly
//! one enabled client granted it. Checked like the callers of the session
//! RPCs and Exchange; the stream ends when the watcher's account is cut off
//! later, and one caller holds at most `--max-watchers-per-caller` streams
//! on a replica.

use tokend_interceptor::Claims;
use tokend_interceptor::certs::CertificateIdentity;
use tokio::sync::watch;

use super::{AuthError, Authority};
use crate::accounts::CertifiedClient;
use crate::revocations::{Subscription, WATCH_SCOPE, Watcher};
use crate::store::{AccountKind, FeedCursor};

/// Who asks to watch the feed.
#[derive(Debug, Clone, Copy)]
pub enum FeedCaller<'a> {
    /// An access token the auth layer verified.
    Token(&'a Claims),
    /// No token: the client certificate of the connection (mTLS).
    Certificate(&'a CertificateIdentity),
    /// Neither.
    Nobody,
}

impl Authority {
    /// `caller`'s stream of the revocation feed, after `cursor` (or with
    /// everything still relevant); it ends when `stopping` turns true or
    /// the caller is cut off.
    pub async fn watch_revocations(
        &self,
        caller: FeedCaller<'_>,
        cursor: Option<FeedCursor>,
        stopping: watch::Receiver<bool>,
    ) -> Result<Subscription, AuthError> {
        let watcher = self.live_watcher(caller).await?;
        Ok(self.feed.subscribe(watcher, cursor, stopping)?)
    }

    async fn live_watcher(&self, caller: FeedCaller<'_>) -> Result<Watcher, AuthError> {
        match caller {
            FeedCaller::Token(claims) => {
                if !claims.has_scope(WATCH_SCOPE) {
                    return Err(AuthError::InsufficientScope(WATCH_SCOPE.to_owned()));
                }
                let kind = self.require_live_watcher(claims).await?;
                Ok(Watcher {
                    caller: format!("{}:{}", kind.noun(), claims.sub()),
                    account: Some((claims.sub().to_owned(), claims.av().unwrap_or(0))),
                })
            }
            FeedCaller::Certificate(cert) => match self
                .accounts
                .certified_client(&self.cert_naming, cert)
                .await?
            {
                CertifiedClient::One { id, state } if state.active => {
                    if !state
                        .scope
                        .split_ascii_whitespace()
                        .any(|s| s == WATCH_SCOPE)
                    {
                        return Err(AuthError::InsufficientScope(WATCH_SCOPE.to_owned()));
                    }
                    Ok(Watcher {
                        caller: format!("service client:{id}"),
                        account: Some((id, state.version)),
                    })
                }
                CertifiedClient::One { .. } => Err(AuthError::SessionRevoked),
                CertifiedClient::None | CertifiedClient::Several => Err(AuthError::NoCaller(
                    "the client certificate names no single service client; \
                     present a token of a client granted tokend.revocations",
                )),
            },
            FeedCaller::Nobody => Err(AuthError::NoCaller(
                "an access token or a client certificate is required",
            )),
        }
    }

    /// A watcher's own token: for tokend, not delegated, from an account
    /// that is enabled and not cut off since (and, for a user, a live
    /// session). Judged from the replica's account cache, kept fresh by the
    /// feed itself: a hundred watchers reconnecting cost the store nothing.
    async fn require_live_watcher(&self, claims: &Claims) -> Result<AccountKind, AuthError> {
        if claims.aud() != self.issuer_name() {
            return Err(AuthError::WrongAudience);
        }
        if claims.is_delegated() {
            return Err(AuthError::ChainNotAllowed(
                "the feed is watched with the service's own token, not a delegated one".into(),
            ));
        }
        let kind = match claims.sid() {
            Some(_) => AccountKind::User,
            None => AccountKind::Client,
        };
        let account = self.accounts.get(kind, claims.sub()).await?;
        if !account.is_some_and(|a| a.active && claims.av().unwrap_or(0) >= a.version) {
            return Err(AuthError::SessionRevoked);
        }
        if let Some(sid) = &claims.sid()
            && !self.store.session_exists(sid).await?
        {
            return Err(AuthError::SessionRevoked);
        }
        Ok(kind)
    }
}

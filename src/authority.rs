//! Login, refresh and revoke: the decisions of the token service, independent
//! of gRPC. The [`api`](crate::api) module turns requests into calls here and
//! [`AuthError`]s into statuses.

use std::time::Duration;

use tokend_interceptor::Claims;
use tracing::{info, warn};

use crate::credentials::{self, HashError, PasswordHasher};
use crate::revocations::RevocationFeed;
use crate::store::{
    NewSession, Revocation, Rotate, Rotation, SessionGrant, SessionInfo, Store, StoreError,
};
use crate::tokens::access::SignError;
use crate::tokens::refresh::new_session_id;
use crate::tokens::{AccessToken, AccessTokenIssuer, Grant, PublishedKey, RefreshToken};

/// Why a login, refresh or revoke failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password or secret, unknown or disabled account: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Unknown, malformed, expired or revoked refresh token.
    #[error("refresh token is invalid, expired or revoked")]
    RefreshTokenInvalid,
    /// A consumed refresh token was replayed; its session is now revoked.
    #[error("refresh token was already used; the session is revoked")]
    RefreshTokenReused,
    /// The request is malformed; the message says how (never echoing a secret).
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller's own session (of the access token used) has ended.
    #[error("the session of this access token was revoked")]
    SessionRevoked,
    /// No such session among the caller's.
    #[error("no such session")]
    SessionNotFound,
    /// The session store is unreachable or too slow.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing could not run.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// How long tokens and sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Access-token lifetime.
    pub access: Duration,
    /// A session ends this long after its last refresh.
    pub refresh_idle: Duration,
    /// A session ends this long after login, however often it is refreshed.
    pub refresh_absolute: Duration,
    /// How long the just-consumed refresh token may be retried for the same
    /// successor; zero makes every replay a reuse.
    pub reuse_grace: Duration,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            access: Duration::from_secs(15 * 60),
            refresh_idle: Duration::from_secs(7 * 24 * 3600),
            refresh_absolute: Duration::from_secs(30 * 24 * 3600),
            reuse_grace: Duration::ZERO,
        }
    }
}

/// What Login and Refresh hand out.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The access token.
    pub access: AccessToken,
    /// The session's refresh token and session, for password logins and refreshes.
    pub session: Option<IssuedSession>,
}

/// The refresh half of [`IssuedTokens`].
#[derive(Debug)]
pub struct IssuedSession {
    /// The session id.
    pub session_id: String,
    /// The refresh token to present next.
    pub refresh_token: RefreshToken,
    /// When the session ends if not refreshed before, ms since the epoch.
    pub expires_at_ms: i64,
}

/// A login request, already checked for size and shape.
#[derive(Debug, Clone, Copy)]
pub struct LoginRequest<'a> {
    /// User name or client id.
    pub name: &'a str,
    /// Password or client secret.
    pub secret: &'a str,
    /// Requested audience; `None` for the default.
    pub audience: Option<&'a str>,
    /// Requested scopes; empty for all the account has.
    pub scopes: &'a [String],
    /// The caller's user agent, for the session list.
    pub client: &'a str,
}

/// The token service's decisions, shared by every gRPC call.
#[derive(Debug)]
pub struct Authority {
    store: Store,
    feed: RevocationFeed,
    issuer: AccessTokenIssuer,
    hasher: PasswordHasher,
    default_audience: String,
    lifetimes: Lifetimes,
    published_keys: Vec<PublishedKey>,
}

impl Authority {
    /// Assembles the service from its parts. `published_keys` is what
    /// `GetPublicKeys` returns besides the active key.
    pub fn new(
        store: Store,
        feed: RevocationFeed,
        issuer: AccessTokenIssuer,
        hasher: PasswordHasher,
        default_audience: String,
        lifetimes: Lifetimes,
        extra_verification_keys: Vec<PublishedKey>,
    ) -> Authority {
        let mut published_keys = vec![issuer.active_key().clone()];
        for key in extra_verification_keys {
            if !published_keys.contains(&key) {
                published_keys.push(key);
            }
        }
        Authority {
            store,
            feed,
            issuer,
            hasher,
            default_audience,
            lifetimes,
            published_keys,
        }
    }

    /// The store, for health checks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The revocation feed.
    pub fn feed(&self) -> &RevocationFeed {
        &self.feed
    }

    /// The keys verifiers need: the active one first.
    pub fn public_keys(&self) -> &[PublishedKey] {
        &self.published_keys
    }

    /// Password login: checks the password (argon2id, on the hashing pool) and
    /// starts a session.
    pub async fn login_password(&self, req: LoginRequest<'_>) -> Result<IssuedTokens, AuthError> {
        let user = self.store.user(req.name).await?;
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self.hasher.verify(req.secret.to_owned(), phc).await?;
        let user = match user {
            Some(user) if matches && !user.disabled => user,
            Some(user) => {
                info!(
                    user = req.name,
                    disabled = user.disabled,
                    "password login refused"
                );
                return Err(AuthError::InvalidCredentials);
            }
            None => {
                // Not the name: an unknown "user name" is often a password
                // typed into the wrong field.
                info!("password login refused: unknown user");
                return Err(AuthError::InvalidCredentials);
            }
        };
        let audience = self.audience(req.audience);
        let scope = narrow_scopes(&user.scope, req.scopes)?;

        let now = crate::now_ms();
        let session_id = new_session_id();
        let refresh_token = RefreshToken::generate(&session_id);
        let grant = SessionGrant {
            subject: req.name.to_owned(),
            scope,
            audience: audience.to_owned(),
            created_ms: now,
            absolute_expiry_ms: now.saturating_add(millis(self.lifetimes.refresh_absolute)),
        };
        let idle_ttl_ms = millis(self.lifetimes.refresh_idle);
        let created = self
            .store
            .create_session(&NewSession {
                session_id: &session_id,
                grant: &grant,
                client: req.client,
                token: refresh_token.hash(),
                idle_ttl_ms,
            })
            .await?;
        if !created {
            info!(
                user = req.name,
                "password login refused: user disabled meanwhile"
            );
            return Err(AuthError::InvalidCredentials);
        }
        let issued = self.issue(&grant, &session_id, refresh_token, now)?;
        info!(sub = req.name, sid = %session_id, jti = %issued.access.jti, "password login");
        Ok(issued)
    }

    /// Client-credential login: an access token only, no session state.
    pub async fn login_client(&self, req: LoginRequest<'_>) -> Result<IssuedTokens, AuthError> {
        let client = self.store.client(req.name).await?;
        let matches = credentials::client_secret_matches(
            req.secret,
            client.as_ref().map(|c| &c.secret_digest),
        );
        let client = match client {
            Some(client) if matches => client,
            Some(_) => {
                info!(client = req.name, "client login refused");
                return Err(AuthError::InvalidCredentials);
            }
            None => {
                info!("client login refused: unknown client");
                return Err(AuthError::InvalidCredentials);
            }
        };
        let scope = narrow_scopes(&client.scope, req.scopes)?;
        let grant = Grant {
            subject: req.name,
            audience: self.audience(req.audience),
            scope: &scope,
            session_id: None,
        };
        let access = self.issuer.issue(grant, crate::now_ms(), None)?;
        info!(sub = req.name, jti = %access.jti, "client login");
        Ok(IssuedTokens {
            access,
            session: None,
        })
    }

    /// Rotates a refresh token: the presented one is consumed and a new pair
    /// returned for the same session.
    pub async fn refresh(&self, token: &str) -> Result<IssuedTokens, AuthError> {
        let Some(presented) = RefreshToken::parse(token) else {
            info!("refresh refused: malformed token");
            return Err(AuthError::RefreshTokenInvalid);
        };
        let session_id = presented.session_id();
        let successor = RefreshToken::generate(session_id);
        let now = crate::now_ms();
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
        let (grant, next) = match rotation {
            Rotation::Rotated(grant) => (grant, successor),
            Rotation::Replayed {
                grant,
                sealed_successor,
                current,
            } => {
                let earlier = presented.open_successor(&sealed_successor);
                if earlier.hash() != current {
                    warn!(
                        sid = session_id,
                        "sealed successor does not match the session"
                    );
                    return Err(AuthError::RefreshTokenInvalid);
                }
                info!(sid = session_id, sub = %grant.subject, "refresh retried within the grace window");
                (grant, earlier)
            }
            Rotation::Reused { subject } => {
                warn!(sid = session_id, sub = %subject, "refresh token reused: session revoked");
                self.announce_session_ended(session_id).await;
                return Err(AuthError::RefreshTokenReused);
            }
            Rotation::Invalid => {
                info!(
                    sid = session_id,
                    "refresh refused: unknown, expired or revoked token"
                );
                return Err(AuthError::RefreshTokenInvalid);
            }
        };
        let issued = self.issue(&grant, session_id, next, now)?;
        info!(sub = %grant.subject, sid = session_id, jti = %issued.access.jti, "refresh");
        Ok(issued)
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
                info!(sid = session_id, sub = %subject, "session revoked");
                self.announce_session_ended(session_id).await;
            }
            Revocation::Unknown => info!(sid = session_id, "revoke of an unknown token"),
        }
        Ok(())
    }

    /// The caller's live sessions. Refused if the caller's own session ended.
    pub async fn list_sessions(&self, caller: &Claims) -> Result<Vec<SessionInfo>, AuthError> {
        self.require_live_session(caller).await?;
        Ok(self.store.list_sessions(&caller.sub).await?)
    }

    /// Ends one of the caller's own sessions; anyone else's is "not found".
    pub async fn revoke_session(&self, caller: &Claims, session_id: &str) -> Result<(), AuthError> {
        self.require_live_session(caller).await?;
        if !crate::tokens::refresh::is_session_id(session_id)
            || !self.store.end_session_of(session_id, &caller.sub).await?
        {
            return Err(AuthError::SessionNotFound);
        }
        info!(sid = session_id, sub = %caller.sub, "session revoked by its owner");
        self.announce_session_ended(session_id).await;
        Ok(())
    }

    /// Ends every session of the caller and cuts off their older tokens;
    /// returns how many sessions ended.
    pub async fn revoke_all_sessions(&self, caller: &Claims) -> Result<usize, AuthError> {
        self.require_live_session(caller).await?;
        let ended = self.store.end_sessions_of(&caller.sub).await?;
        for session_id in &ended {
            self.announce_session_ended(session_id).await;
        }
        let now_s = crate::now_ms().div_euclid(1000);
        if let Err(err) = self.feed.subject_cut_off(&caller.sub, now_s).await {
            warn!(sub = %caller.sub, error = %err, "could not announce the cut-off");
        }
        info!(sub = %caller.sub, sessions = ended.len(), "all sessions revoked by their owner");
        Ok(ended.len())
    }

    async fn require_live_session(&self, caller: &Claims) -> Result<(), AuthError> {
        match &caller.sid {
            Some(sid) if !self.store.session_exists(sid).await? => Err(AuthError::SessionRevoked),
            _ => Ok(()),
        }
    }

    /// Puts a session's end on the feed. The session is already gone from
    /// the store, so a feed failure must not fail the call: the announcement
    /// is retried in the background (access tokens expire meanwhile anyway).
    async fn announce_session_ended(&self, session_id: &str) {
        if self.feed.session_ended(session_id).await.is_ok() {
            return;
        }
        let feed = self.feed.clone();
        let session_id = session_id.to_owned();
        tokio::spawn(async move {
            for attempt in 0..8u32 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                match feed.session_ended(&session_id).await {
                    Ok(()) => return,
                    Err(err) if attempt == 7 => {
                        warn!(sid = %session_id, error = %err, "gave up announcing a revoked session");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    fn audience<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        requested.unwrap_or(&self.default_audience)
    }

    fn issue(
        &self,
        grant: &SessionGrant,
        session_id: &str,
        refresh_token: RefreshToken,
        now: i64,
    ) -> Result<IssuedTokens, AuthError> {
        let access = self.issuer.issue(
            Grant {
                subject: &grant.subject,
                audience: &grant.audience,
                scope: &grant.scope,
                session_id: Some(session_id),
            },
            now,
            Some(grant.absolute_expiry_ms),
        )?;
        let expires_at_ms = now
            .saturating_add(millis(self.lifetimes.refresh_idle))
            .min(grant.absolute_expiry_ms);
        Ok(IssuedTokens {
            access,
            session: Some(IssuedSession {
                session_id: session_id.to_owned(),
                refresh_token,
                expires_at_ms,
            }),
        })
    }
}

/// The scopes a login gets: all the account has, or the requested subset.
/// Asking for one the account lacks is an error, never silently dropped.
fn narrow_scopes(granted: &str, requested: &[String]) -> Result<String, AuthError> {
    if requested.is_empty() {
        return Ok(granted.to_owned());
    }
    let mut chosen: Vec<&str> = Vec::with_capacity(requested.len());
    for scope in requested {
        if !granted.split_ascii_whitespace().any(|g| g == scope) {
            return Err(AuthError::InvalidRequest(format!(
                "scope {scope:?} is not granted to this account"
            )));
        }
        if !chosen.contains(&scope.as_str()) {
            chosen.push(scope);
        }
    }
    Ok(chosen.join(" "))
}

/// A duration in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_and_never_widen() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(narrow_scopes("a b c", &[]).unwrap(), "a b c");
        assert_eq!(
            narrow_scopes("a b c", &strings(&["c", "a", "c"])).unwrap(),
            "c a"
        );
        assert!(matches!(
            narrow_scopes("a b c", &strings(&["a", "d"])),
            Err(AuthError::InvalidRequest(_))
        ));
        assert!(narrow_scopes("", &strings(&["a"])).is_err());
    }
}

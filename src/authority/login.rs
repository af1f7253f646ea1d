//! Login: password logins start a session (capped per user), client
//! credentials get an access token only. Both go through the login throttle
//! first, so throttled guesses cost no hashing.

use tokend_interceptor::certs::CertificateIdentity;
use tracing::{info, warn};

use super::{AuthError, Authority, IssuedSession, IssuedTokens};
use crate::clock::millis;
use crate::credentials;
use crate::facts::{Fact, Issued, Login, LoginKind};
use crate::store::{ClientRecord, NewSession, SessionCreated, SessionGrant, UserRecord};
use crate::throttle::{Attempt, Credential};
use crate::tokens::refresh::new_session_id;
use crate::tokens::{Grant, RefreshToken};

/// How many times a password login begins its session again when the
/// account was cut off meanwhile but the verified credentials still stand.
const ACCOUNT_CHANGED_RETRIES: u32 = 3;

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
    /// Where the call comes from, for throttling.
    pub source: &'a str,
    /// The client certificate the caller presented over mTLS, if any: a
    /// service client's login succeeds with it only if it names the
    /// client, and its token is bound to it (RFC 8705).
    pub certificate: Option<&'a CertificateIdentity>,
}

impl Authority {
    /// Password login: checks the password (argon2id, on the hashing pool) and
    /// starts a session.
    pub async fn login_password(&self, req: LoginRequest<'_>) -> Result<IssuedTokens, AuthError> {
        let result = self.password_login(req).await;
        finish_login(LoginKind::Password, &req, result)
    }

    async fn password_login(&self, req: LoginRequest<'_>) -> Result<IssuedTokens, Failed> {
        let attempt = self
            .throttle
            .admit(Credential::Password, req.name, req.source)
            .await?;
        let user = self.store.user(req.name).await?;
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self.hasher.verify(req.secret.to_owned(), phc).await?;
        let user = match user {
            Some(user) if matches && user.active() => user,
            Some(user) => {
                info!(
                    user = req.name,
                    active = user.active(),
                    "password login refused"
                );
                return Err(failed(attempt, Exists::Yes).await);
            }
            None => {
                // Not the name: an unknown "user name" is often a password
                // typed into the wrong field.
                info!("password login refused: unknown user");
                return Err(failed(attempt, Exists::No).await);
            }
        };
        succeeded(attempt).await;
        let audience = self.audience(req.audience);
        let mut user = user;
        // A cut-off of the account (log out everywhere elsewhere, an
        // administrator's change) between reading it and creating the
        // session refuses the session. If the account is still active with
        // the very password hash just verified, the credentials still
        // stand: begin again under the new version (a few times at most).
        let mut attempts = 0;
        loop {
            if let Some(issued) = self.start_session(&req, &user, audience).await? {
                return Ok(issued);
            }
            attempts += 1;
            let again = self.store.user(req.name).await?;
            match again {
                Some(now)
                    if attempts < ACCOUNT_CHANGED_RETRIES
                        && now.active()
                        && credentials::same_secret(&now.password_hash, &user.password_hash) =>
                {
                    info!(
                        user = req.name,
                        "password login begins its session again: the account was cut off meanwhile"
                    );
                    user = now;
                }
                _ => {
                    info!(
                        user = req.name,
                        "password login refused: the account changed meanwhile"
                    );
                    return Err(Failed::of_account(AuthError::InvalidCredentials));
                }
            }
        }
    }

    /// Creates the session of a password login for `user` (as read, under
    /// its version) and issues its tokens; `None` if the account changed
    /// meanwhile (the session was not created).
    async fn start_session(
        &self,
        req: &LoginRequest<'_>,
        user: &UserRecord,
        audience: &str,
    ) -> Result<Option<IssuedTokens>, Failed> {
        let scope = narrow_scopes(&user.scope, req.scopes)?;
        let now = self.store.clock().now_ms();
        let session_id = new_session_id();
        let refresh_token = RefreshToken::generate(&session_id);
        let grant = SessionGrant {
            subject: req.name.to_owned(),
            scope,
            audience: audience.to_owned(),
            created_ms: now,
            absolute_expiry_ms: now.saturating_add(millis(self.lifetimes.refresh_absolute)),
            account_version: user.version,
        };
        let created = self
            .store
            .create_session(&NewSession {
                session_id: &session_id,
                grant: &grant,
                client: req.client,
                token: refresh_token.hash(),
                idle_ttl_ms: millis(self.lifetimes.refresh_idle),
            })
            .await?;
        match created {
            SessionCreated::AccountChanged => return Ok(None),
            SessionCreated::Listed(listed) if listed > self.session_cap.max() => {
                self.session_cap.enforce_later(req.name, &session_id);
            }
            SessionCreated::Listed(_) => {}
        }
        let issued = self.issue(&grant, &grant.scope, &session_id, refresh_token, now)?;
        info!(sub = req.name, sid = %session_id, jti = %issued.access.jti, "password login");
        Ok(Some(issued))
    }

    /// Client-credential login: an access token only, no session state.
    pub async fn login_client(&self, req: LoginRequest<'_>) -> Result<IssuedTokens, AuthError> {
        let result = self.client_login(req).await;
        finish_login(LoginKind::Client, &req, result)
    }

    async fn client_login(&self, req: LoginRequest<'_>) -> Result<IssuedTokens, Failed> {
        let attempt = self
            .throttle
            .admit(Credential::ClientSecret, req.name, req.source)
            .await?;
        let client = self.store.client(req.name).await?;
        let matches = credentials::client_secret_matches(
            req.secret,
            client.as_ref().map(|c| &c.secret_digest),
        );
        // A certificate presented must name the client: a thief holding
        // the secret and some other certificate is refused, and nothing is
        // ever bound to a stranger's key.
        let named = |client: &ClientRecord| {
            req.certificate.map(|cert| {
                self.cert_naming
                    .names(cert, req.name, Some(&client.cert_identities))
            })
        };
        let client = match client {
            Some(client) if named(&client) == Some(false) => {
                info!(
                    client = req.name,
                    "client login refused: the certificate does not name the client"
                );
                return Err(failed(attempt, Exists::Yes).await);
            }
            Some(client) if client.require_cert && req.certificate.is_none() => {
                // The same answer as a wrong secret: a thief holding the
                // secret but not the key learns nothing.
                info!(
                    client = req.name,
                    "client login refused: no client certificate"
                );
                return Err(failed(attempt, Exists::Yes).await);
            }
            Some(client) if matches && !client.disabled => client,
            Some(_) => {
                info!(client = req.name, "client login refused");
                return Err(failed(attempt, Exists::Yes).await);
            }
            None => {
                info!("client login refused: unknown client");
                return Err(failed(attempt, Exists::No).await);
            }
        };
        succeeded(attempt).await;
        let scope = narrow_scopes(&client.scope, req.scopes)?;
        let grant = Grant {
            subject: req.name,
            audience: self.audience(req.audience),
            scope: &scope,
            session_id: None,
            account_version: client.version,
            bound_to: req.certificate.map(CertificateIdentity::thumbprint),
            act: None,
        };
        let access = self
            .issuer
            .issue(grant, self.store.clock().now_ms(), None)?;
        info!(
            sub = req.name,
            jti = %access.jti,
            bound = req.certificate.is_some(),
            "client login"
        );
        Ok(IssuedTokens {
            access,
            session: None,
        })
    }

    /// The access token (with `scope`) and refresh half for a session.
    pub(super) fn issue(
        &self,
        grant: &SessionGrant,
        scope: &str,
        session_id: &str,
        refresh_token: RefreshToken,
        now: i64,
    ) -> Result<IssuedTokens, AuthError> {
        let access = self.issuer.issue(
            Grant {
                subject: &grant.subject,
                audience: &grant.audience,
                scope,
                session_id: Some(session_id),
                account_version: grant.account_version,
                bound_to: None,
                act: None,
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

/// Whether the account a failed login named exists: the audit names it
/// only then (an unknown "user name" is often a mistyped password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exists {
    Yes,
    No,
}

/// Why a login failed, and whether its account exists.
#[derive(Debug)]
struct Failed {
    error: AuthError,
    exists: Exists,
}

impl Failed {
    /// A failure about an account that exists.
    fn of_account(error: AuthError) -> Failed {
        Failed {
            error,
            exists: Exists::Yes,
        }
    }
}

/// Anything that fails before the account is known (throttled, the
/// store, hashing) names no account.
impl<E: Into<AuthError>> From<E> for Failed {
    fn from(error: E) -> Failed {
        Failed {
            error: error.into(),
            exists: Exists::No,
        }
    }
}

/// Counts the failure, then answers `INVALID_CREDENTIALS` (or, for a wrong
/// client secret that came through a throttled account's gate, the
/// account's delay). If the failure cannot be counted the login fails with
/// the store error instead, so a flaky store never hands out uncounted
/// guesses.
async fn failed(attempt: Attempt, exists: Exists) -> Failed {
    let gated = attempt.gated();
    let error = match attempt.failed().await {
        Err(err) => AuthError::Store(err),
        Ok(()) => match gated {
            Some(wait) => AuthError::LoginThrottled(wait),
            None => AuthError::InvalidCredentials,
        },
    };
    Failed { error, exists }
}

/// Reports a success; a failure to record it only costs the next login a
/// throttle check, so it is logged, not fatal.
async fn succeeded(attempt: Attempt) {
    if let Err(err) = attempt.succeeded().await {
        warn!(error = %err, "could not record a successful login for throttling");
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

/// States the login's decision, and answers.
fn finish_login(
    kind: LoginKind,
    req: &LoginRequest<'_>,
    result: Result<IssuedTokens, Failed>,
) -> Result<IssuedTokens, AuthError> {
    let (outcome, exists) = match &result {
        Ok(issued) => (
            Ok(Issued {
                session: issued.session.as_ref().map(|s| s.session_id.as_str()),
                token_id: &issued.access.jti,
            }),
            true,
        ),
        Err(Failed { error, exists }) => (Err(error.refused()), *exists == Exists::Yes),
    };
    crate::telemetry::record(&Fact::Login(Login {
        kind,
        subject: exists.then_some(req.name),
        peer: req.source,
        outcome,
    }));
    result.map_err(|failed| failed.error)
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

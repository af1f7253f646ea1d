//! On-behalf-of calls: `Exchange` trades a user's access token, issued to
//! the calling service, for a narrower one good at one other service,
//! naming the caller as its actor (RFC 8693 delegation).
//!
//! One decision path, in this order, each refusal with its own reason:
//! 1. the caller: a service client's own token for tokend, from a live
//!    account (WRONG_AUDIENCE, CHAIN_NOT_ALLOWED for a delegated one,
//!    EXCHANGE_NOT_ALLOWED for a user, SESSION_REVOKED when cut off), or,
//!    without a token, a verified client certificate naming exactly one
//!    service client (ACCESS_TOKEN_MISSING otherwise), which is enabled
//!    (SESSION_REVOKED otherwise);
//! 2. the subject: a tokend access token (INVALID_REQUEST if it is not
//!    even shaped like one, never a fallback to the caller's identity),
//!    validly signed and unexpired (ACCESS_TOKEN_*), its session live,
//!    its account and every actor in its chain enabled and not cut off
//!    (SESSION_REVOKED);
//! 3. the subject was issued to the caller (SUBJECT_NOT_FOR_CALLER);
//! 4. a policy row lets the caller obtain the audience
//!    (EXCHANGE_NOT_ALLOWED);
//! 5. the chain: not deeper than the row allows, no loop (the caller
//!    already in the chain or the subject itself, or the audience already
//!    an actor of it), the previous actor one the row names in `from`
//!    (CHAIN_NOT_ALLOWED);
//! 6. the scopes: requested ∩ subject ∩ policy; an explicitly requested
//!    extra scope, or nothing left, is SCOPE_NOT_ALLOWED.
//!
//! The new token keeps `sub`, `sid` and `av` (so every revocation of the
//! user's session or account reaches it), gets the one audience, the
//! narrowed scopes, fresh `jti`/`iat`/`nbf`, an `exp` that is the earliest
//! of the subject's, now + the row's `max_ttl` and now + the requested
//! `ttl`, `act` = the caller nesting the subject's own `act`, and `cnf`
//! when the caller came over mTLS with its own certificate (one that
//! authenticated it, names it, or its token is bound to). Never a refresh
//! token.

use std::time::Duration;

use tokend_interceptor::Claims;
use tokend_interceptor::token::{Actor, MAX_TOKEN_LEN, TOKEN_HEADER};

use std::sync::Arc;

use tokend_interceptor::certs::{CertificateIdentity, CertificateNaming};

use super::{AuthError, Authority};
use crate::accounts::CertifiedClient;
use crate::clock::millis;
use crate::facts;
use crate::store::{AccountKind, AccountState};
use crate::tokens::AccessToken;
use crate::tokens::access::Grant;

/// Who calls Exchange: the actor of the token it obtains.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A service client's own access token, verified by the auth layer.
    Token(&'a Claims),
    /// No token: the client certificate of the request (verified over
    /// mTLS) names the caller.
    Certificate,
}

/// The client certificate a call came with (verified over mTLS).
#[derive(Debug, Clone, Copy)]
pub struct Certificate<'a> {
    /// Its thumbprint (for `cnf`) and names.
    pub identity: &'a CertificateIdentity,
}

/// What an Exchange asks for; the fields are checked for size by the API.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeRequest<'a> {
    /// The caller.
    pub caller: Caller<'a>,
    /// The caller's client certificate, over mTLS.
    pub certificate: Option<Certificate<'a>>,
    /// The user's token, as sent.
    pub subject_token: &'a str,
    /// The one audience wanted.
    pub audience: &'a str,
    /// Scopes wanted; empty: every scope allowed.
    pub scopes: &'a [String],
    /// A shorter lifetime wanted, if any.
    pub ttl: Option<Duration>,
}

impl ExchangeRequest<'_> {
    /// How the audit names the caller before it is resolved (at most 256
    /// characters).
    fn shown_caller(&self) -> String {
        let mut shown = match (self.caller, self.certificate) {
            (Caller::Token(claims), _) => claims.sub().to_owned(),
            (Caller::Certificate, Some(cert)) => format!(
                "certificate:{}",
                cert.identity.sans().collect::<Vec<_>>().join(",")
            ),
            (Caller::Certificate, None) => "certificate".to_owned(),
        };
        if shown.len() > 256 {
            let mut end = 256;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
        }
        shown
    }

    /// The certificate the derived token is bound to: the caller's, when
    /// it is the caller's own (it authenticated the call, names the caller
    /// by `naming` and the caller's recorded identities, or is the one the
    /// caller's token is bound to). A certificate that names another
    /// service binds nothing: it must not lend its key to someone else's
    /// identity.
    fn binding(&self, naming: &CertificateNaming, caller: &LiveActor) -> Option<&str> {
        let cert = self.certificate?.identity;
        let own = match self.caller {
            Caller::Certificate => true,
            Caller::Token(claims) => {
                naming.names(
                    cert,
                    caller.actor.sub(),
                    Some(&caller.state.cert_identities),
                ) || claims
                    .cnf()
                    .as_ref()
                    .is_some_and(|cnf| cnf.x5t_s256() == cert.thumbprint())
            }
        };
        own.then_some(cert.thumbprint())
    }
}

/// What Exchange hands out.
#[derive(Debug)]
pub struct Exchanged {
    /// The derived access token.
    pub access: AccessToken,
    /// Its audience.
    pub audience: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Its actors, outermost first.
    pub actor_chain: Vec<String>,
}

impl Authority {
    /// Decides an Exchange (see the module docs) and states the decision.
    pub async fn exchange(&self, req: ExchangeRequest<'_>) -> Result<Exchanged, AuthError> {
        let result = self.decide_exchange(req).await;
        let shown_caller;
        let fact = match &result {
            Ok(done) => facts::Exchange {
                caller: &done.actor,
                audience: &done.exchanged.audience,
                outcome: Ok(facts::Exchanged {
                    subject: &done.subject,
                    actor_chain: &done.exchanged.actor_chain,
                    scopes: &done.exchanged.scopes,
                    token_id: &done.exchanged.access.jti,
                    subject_token_id: &done.subject_jti,
                }),
            },
            Err(err) => {
                shown_caller = req.shown_caller();
                facts::Exchange {
                    caller: &shown_caller,
                    audience: req.audience,
                    outcome: Err(err.refused()),
                }
            }
        };
        crate::telemetry::record(&facts::Fact::Exchange(fact));
        result.map(|done| done.exchanged)
    }

    async fn decide_exchange(&self, req: ExchangeRequest<'_>) -> Result<Decided, AuthError> {
        let live = self.live_actor(req.caller, req.certificate).await?;
        // A client named like tokend's issuer or default audience (made
        // before such names were reserved) is the audience of tokens never
        // meant for it: it exchanges nothing.
        if live.actor.sub() == self.issuer_name() || live.actor.sub() == self.default_audience {
            return Err(AuthError::ExchangeNotAllowed);
        }
        let bound_to = req.binding(&self.cert_naming, &live);
        let caller = live.actor;
        let (subject, account) = self.live_subject(req.subject_token).await?;
        if subject.aud() != caller.sub() {
            return Err(AuthError::SubjectNotForCaller);
        }
        // A subject bound to a certificate stays bound: it is exchanged
        // only over mTLS, and what comes out is bound to the caller's.
        if subject.cnf().is_some() && bound_to.is_none() {
            return Err(AuthError::SubjectToken(
                tokend_interceptor::AuthError::BindingMismatch,
            ));
        }
        let policy = self.exchange_policy.current();
        let rule = policy
            .rule(caller.sub(), req.audience)
            .ok_or(AuthError::ExchangeNotAllowed)?;

        let depth = subject.chain_depth() + 1;
        if depth > rule.max_depth {
            return Err(AuthError::ChainNotAllowed(format!(
                "the chain would have {depth} actors; the policy allows {} for this caller",
                rule.max_depth
            )));
        }
        if subject.sub() == caller.sub() || subject.actors().any(|a| a.sub() == caller.sub()) {
            return Err(AuthError::ChainNotAllowed(
                "the caller is already in the subject token's chain (a loop)".into(),
            ));
        }
        if subject.sub() == req.audience || subject.actors().any(|a| a.sub() == req.audience) {
            return Err(AuthError::ChainNotAllowed(
                "the audience is the subject or already in its chain (a loop)".into(),
            ));
        }
        if let Some(previous) = subject.outermost_actor()
            && !rule.from.iter().any(|a| a == previous)
        {
            return Err(AuthError::ChainNotAllowed(
                "the policy does not let this caller continue a chain from the subject's actor"
                    .into(),
            ));
        }

        let scopes = narrowed(&subject, &account.scope, &rule.scopes, req.scopes)?;
        let scope = scopes.join(" ");

        let now = self.store.clock().now_ms();
        let mut not_after = subject
            .exp()
            .saturating_mul(1000)
            .min(now.saturating_add(millis(rule.max_ttl)));
        if let Some(ttl) = req.ttl {
            not_after = not_after.min(now.saturating_add(millis(ttl)));
        }
        let mut actor = Actor::new(caller.sub(), caller.av());
        if let Some(previous) = subject.act() {
            actor = actor.with_previous(previous.clone());
        }
        let shown_actor = caller.sub().to_owned();
        let access = self.issuer.issue(
            Grant {
                subject: subject.sub(),
                audience: req.audience,
                scope: &scope,
                session_id: subject.sid(),
                account_version: subject.av().unwrap_or(0),
                bound_to,
                act: Some(&actor),
            },
            now,
            Some(not_after),
        )?;
        let actor_chain = actor.chain().map(|a| a.sub().to_owned()).collect();
        Ok(Decided {
            actor: shown_actor,
            subject: subject.sub().to_owned(),
            subject_jti: subject.jti().to_owned(),
            exchanged: Exchanged {
                access,
                audience: req.audience.to_owned(),
                scopes,
                actor_chain,
            },
        })
    }

    /// Step 1: the caller, as the actor it will be named: a service client
    /// presenting its own token for tokend, from an account that is enabled
    /// and not cut off since; or a verified certificate naming exactly one
    /// enabled service client (its current account version becomes the
    /// actor's `av`).
    async fn live_actor(
        &self,
        caller: Caller<'_>,
        certificate: Option<Certificate<'_>>,
    ) -> Result<LiveActor, AuthError> {
        match caller {
            Caller::Token(claims) => {
                let state = self
                    .require_live_service(claims, || AuthError::ExchangeNotAllowed)
                    .await?;
                Ok(LiveActor {
                    actor: Actor::new(claims.sub(), claims.av()),
                    state,
                })
            }
            Caller::Certificate => {
                let Some(cert) = certificate else {
                    return Err(AuthError::NoCaller(
                        "an access token or a client certificate is required",
                    ));
                };
                match self
                    .accounts
                    .certified_client(&self.cert_naming, cert.identity)
                    .await?
                {
                    CertifiedClient::One { id, state } if state.active => Ok(LiveActor {
                        actor: Actor::new(id, Some(state.version)),
                        state,
                    }),
                    CertifiedClient::One { .. } => Err(AuthError::SessionRevoked),
                    CertifiedClient::None => Err(AuthError::NoCaller(
                        "the client certificate names no service client; \
                         present the service's own access token",
                    )),
                    CertifiedClient::Several => Err(AuthError::NoCaller(
                        "the client certificate names several service clients; \
                         present the service's own access token",
                    )),
                }
            }
        }
    }

    /// Step 2: the subject token, verified, unexpired, its session live,
    /// its account and every actor of its chain enabled and not cut off.
    /// Returns it with its account's state now.
    async fn live_subject(
        &self,
        token: &str,
    ) -> Result<(Arc<Claims>, Arc<AccountState>), AuthError> {
        if token.is_empty() {
            return Err(AuthError::InvalidRequest(
                "subject_token is required".into(),
            ));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidRequest(format!(
                "subject_token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        if !token.starts_with(TOKEN_HEADER) {
            return Err(AuthError::InvalidRequest(
                "subject_token must be a tokend access token (v4.public); refresh tokens are \
                 never exchanged"
                    .into(),
            ));
        }
        let subject = self
            .subject_verifier
            .verify_claims(token)
            .map_err(AuthError::SubjectToken)?;
        // No leeway here: a derived token must not begin already expired.
        if subject.exp().saturating_mul(1000) <= self.store.clock().now_ms() {
            return Err(AuthError::SubjectToken(
                tokend_interceptor::AuthError::Expired,
            ));
        }
        let kind = match subject.sid() {
            Some(_) => AccountKind::User,
            None => AccountKind::Client,
        };
        let account = match self.accounts.get(kind, subject.sub()).await? {
            Some(a) if a.active && subject.av().unwrap_or(0) >= a.version => a,
            _ => return Err(AuthError::SessionRevoked),
        };
        for actor in subject.actors() {
            let account = self.accounts.get(AccountKind::Client, actor.sub()).await?;
            if !account.is_some_and(|a| a.active && actor.av().unwrap_or(0) >= a.version) {
                return Err(AuthError::SessionRevoked);
            }
        }
        if let Some(sid) = &subject.sid()
            && !self.store.session_exists(sid).await?
        {
            return Err(AuthError::SessionRevoked);
        }
        Ok((subject, account))
    }
}

/// The caller of an Exchange, resolved: the actor it will be named, and
/// its account's state now.
struct LiveActor {
    actor: Actor,
    state: Arc<AccountState>,
}

/// A decided exchange and what the audit needs of the subject.
struct Decided {
    actor: String,
    subject: String,
    subject_jti: String,
    exchanged: Exchanged,
}

/// Step 6: requested ∩ subject ∩ policy, and never more than the subject's
/// account has now (`granted`, space-separated: scopes taken away since the
/// subject token was issued are not passed on). Every explicitly requested
/// scope must be in all; nothing left is a refusal too. Returned in the
/// order the subject token lists them (or the request's, when narrowing).
fn narrowed(
    subject: &Claims,
    granted: &str,
    policy: &[String],
    requested: &[String],
) -> Result<Vec<String>, AuthError> {
    let allowed = |scope: &str| {
        subject.has_scope(scope)
            && granted.split_ascii_whitespace().any(|g| g == scope)
            && policy.iter().any(|p| p == scope)
    };
    let scopes: Vec<String> = if requested.is_empty() {
        subject
            .scopes()
            .filter(|s| allowed(s))
            .map(str::to_owned)
            .collect()
    } else {
        if let Some(extra) = requested.iter().find(|s| !allowed(s)) {
            let shown: String = extra.chars().take(32).collect();
            return Err(AuthError::ScopeNotAllowed(format!(
                "scope {shown:?} is not in the subject token or not allowed by the exchange policy"
            )));
        }
        let mut scopes: Vec<String> = Vec::with_capacity(requested.len());
        for scope in requested {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        scopes
    };
    if scopes.is_empty() {
        return Err(AuthError::ScopeNotAllowed(
            "no scope of the subject token is allowed by the exchange policy".into(),
        ));
    }
    Ok(scopes)
}

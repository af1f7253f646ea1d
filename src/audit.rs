//! Audit events: one structured event per security-relevant fact, on the
//! tracing target `tokend::audit` so operators can route them apart from the
//! service log (e.g. `RUST_LOG=warn,tokend::audit=info`; one JSON object per
//! event with `--log-format json`).
//!
//! Every event has `event` (its name, below) and what identifies the fact:
//! `sub`, `sid`, `jti`, `peer` (the caller's address, where known),
//! `kind`, `cause`, `reason`, `count`. Never a password, secret, token or
//! key. A failed password login names `sub` only when the account exists:
//! a "user name" that matches no account is often a password typed into the
//! wrong field.
//!
//! | event | emitted by | fields |
//! |---|---|---|
//! | `login_succeeded` | serve | `kind` (password, client), `sub`, `sid` (password), `jti`, `peer` |
//! | `login_failed` | serve | `kind`, `reason`, `peer`, `sub` (existing accounts only) |
//! | `refresh_token_reused` | serve | `sub`, `sid` |
//! | `session_ended` | serve | `cause` (revoke, reuse, revoke_session, session_cap), `sub`, `sid` |
//! | `sessions_revoked_all` | serve | `sub`, `count` (ended before the answer) |
//! | `user_added`, `user_password_set`, `user_disabled`, `user_enabled`, `user_deleted` | CLI | `sub`, `count` (sessions ended, where any) |
//! | `token_exchanged` | serve | `sub`, `act` (the actor chain, outermost first, space-separated), `aud`, `scope`, `jti` (the new token's), `subject_jti` |
//! | `exchange_refused` | serve | `actor` (the caller), `aud`, `reason` |
//! | `client_added`, `client_secret_rotated`, `client_disabled`, `client_enabled`, `client_deleted` | CLI | `sub` |
//! | `signing_key_loaded` | serve | `kid` (the public key id) |
//! | `admin_call` | serve | `method` (`DisableUser`, ...), `outcome` (ok, refused), `reason` (refused), `caller` (the administrator, when named), `via` (token, certificate, none), `target` (the account, `NAME/SID` for a session), `peer` |
//!
//! The account events are emitted by the CLI and by the administration
//! API alike (with `user_scopes_set` and `client_scopes_set` from the API).

use tracing::info;

use crate::facts::{EndCause, Ended, Fact, RefreshOutcome};

/// The tracing target of every audit event.
pub const TARGET: &str = "tokend::audit";

/// Writes the audit events `fact` makes (most facts make none). The one
/// listener of this module; it knows nothing else of the crate.
pub fn observe(fact: &Fact<'_>) {
    match fact {
        Fact::Login(login) => {
            let kind = login.kind.as_str();
            match &login.outcome {
                Ok(issued) => login_succeeded(
                    kind,
                    login.subject.unwrap_or(""),
                    issued.session,
                    issued.token_id,
                    login.peer,
                ),
                Err(refused) => login_failed(
                    kind,
                    login.subject,
                    refused.reason_or_internal(),
                    login.peer,
                ),
            }
        }
        Fact::Refresh(refresh) => {
            if let (RefreshOutcome::Reused, Some(sub), Some(sid)) =
                (refresh.outcome, refresh.subject, refresh.session)
            {
                refresh_token_reused(sub, sid);
            }
        }
        Fact::SessionsEnded(ended) => match (ended.cause, ended.sessions) {
            (EndCause::RevokeAll, sessions) => {
                if !ended.in_background {
                    sessions_revoked_all(ended.subject, sessions.count());
                }
            }
            (cause, Ended::One(sid)) => session_ended(cause.as_str(), ended.subject, sid),
            (cause, Ended::Ids { ids, .. }) => {
                for sid in ids {
                    session_ended(cause.as_str(), ended.subject, sid);
                }
            }
            (_, Ended::Count(_)) => {}
        },
        Fact::Exchange(exchange) => match &exchange.outcome {
            Ok(done) => token_exchanged(
                done.subject,
                done.actor_chain,
                exchange.audience,
                done.scopes,
                done.token_id,
                done.subject_token_id,
            ),
            Err(refused) => exchange_refused(
                exchange.caller,
                exchange.audience,
                refused.reason_or_internal(),
            ),
        },
        Fact::AccountChanged(change) => {
            account_changed(change.event, change.subject, change.sessions_ended)
        }
        Fact::Keys(keys) => signing_key_loaded(keys.signing_key_id),
        Fact::AdminCall(call) => {
            let (outcome, reason) = match call.outcome {
                Ok(()) => ("ok", None),
                Err(refused) => ("refused", Some(refused.reason_or_internal())),
            };
            info!(
                target: TARGET,
                event = "admin_call",
                method = call.method,
                outcome,
                reason,
                caller = call.caller,
                via = call.via,
                target = call.target,
                peer = call.peer,
                "audit"
            );
        }
        _ => {}
    }
}

/// A login succeeded. `sid` is absent for service clients.
fn login_succeeded(kind: &str, sub: &str, sid: Option<&str>, jti: &str, peer: &str) {
    info!(target: TARGET, event = "login_succeeded", kind, sub, sid, jti, peer, "audit");
}

/// A login failed for `reason` (a tokend reason); `sub` only if the account
/// exists.
fn login_failed(kind: &str, sub: Option<&str>, reason: &str, peer: &str) {
    info!(target: TARGET, event = "login_failed", kind, sub, reason, peer, "audit");
}

/// A consumed refresh token was presented again: the session is revoked.
fn refresh_token_reused(sub: &str, sid: &str) {
    info!(target: TARGET, event = "refresh_token_reused", sub, sid, "audit");
}

/// A session ended for `cause`.
fn session_ended(cause: &str, sub: &str, sid: &str) {
    info!(target: TARGET, event = "session_ended", cause, sub, sid, "audit");
}

/// A subject logged out everywhere; `count` sessions ended before the answer.
fn sessions_revoked_all(sub: &str, count: usize) {
    info!(target: TARGET, event = "sessions_revoked_all", sub, count, "audit");
}

/// An administrator changed an account (`event` from the table above);
/// `count` is the sessions that ended, where any did.
fn account_changed(event: &'static str, sub: &str, count: Option<usize>) {
    info!(target: TARGET, event, sub, count, "audit");
}

/// An Exchange handed out a delegated token: for `sub`, with the actor
/// chain `chain` (outermost first), for `aud` with `scopes`; `jti` is the
/// new token's id, `subject_jti` the exchanged one's.
fn token_exchanged(
    sub: &str,
    chain: &[String],
    aud: &str,
    scopes: &[String],
    jti: &str,
    subject_jti: &str,
) {
    info!(
        target: TARGET,
        event = "token_exchanged",
        sub,
        act = %chain.join(" "),
        aud,
        scope = %scopes.join(" "),
        jti,
        subject_jti,
        "audit"
    );
}

/// An Exchange by `actor` for `aud` was refused for `reason`.
fn exchange_refused(actor: &str, aud: &str, reason: &str) {
    info!(target: TARGET, event = "exchange_refused", actor, aud, reason, "audit");
}

/// tokend signs with the key `kid`.
fn signing_key_loaded(kid: &str) {
    info!(target: TARGET, event = "signing_key_loaded", kid, "audit");
}

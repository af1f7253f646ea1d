//! Where a stated [`Fact`] goes: the metrics, the audit log and the service
//! log hear every fact, each taking what it needs. The service log lines of
//! decisions (a refresh, sessions ended, an exchange) are written here, so
//! that the layer deciding states the fact once.

use tracing::{info, warn};

use crate::facts::{EndCause, Ended, Fact, RefreshOutcome};

/// Tells every listener of `fact`.
pub fn record(fact: &Fact<'_>) {
    crate::metrics::observe(fact);
    crate::audit::observe(fact);
    log(fact);
}

/// The service log's line for `fact`, if it has one.
fn log(fact: &Fact<'_>) {
    match fact {
        Fact::Refresh(refresh) => {
            let sid = refresh.session;
            let sub = refresh.subject;
            match refresh.outcome {
                RefreshOutcome::Rotated(jti) => info!(sub, sid, jti, "refresh"),
                RefreshOutcome::GraceRetry(jti) => {
                    info!(sid, sub, jti, "refresh retried within the grace window")
                }
                RefreshOutcome::Reused => warn!(sid, sub, "refresh token reused: session revoked"),
                RefreshOutcome::Invalid(why) => info!(sid, sub, "refresh refused: {why}"),
            }
        }
        Fact::SessionsEnded(ended) => {
            let sub = ended.subject;
            let what = match ended.cause {
                EndCause::Revoke => "session revoked",
                EndCause::Reuse => return,
                EndCause::RevokeSession => "session revoked by its owner",
                EndCause::SessionCap => "session ended: over the per-user cap",
                EndCause::Admin => "session revoked by an administrator",
                EndCause::RevokeAll if ended.in_background => "background sweep done",
                EndCause::RevokeAll => "all sessions revoked by their owner",
            };
            match ended.sessions {
                Ended::One(sid) => info!(sub, sid, "{what}"),
                Ended::Ids { ids, .. } => {
                    for sid in ids {
                        info!(sub, sid = %sid, "{what}");
                    }
                }
                Ended::Count(sessions) => info!(sub, sessions, "{what}"),
            }
        }
        Fact::Exchange(exchange) => match &exchange.outcome {
            Ok(done) => info!(
                sub = done.subject,
                actor = exchange.caller,
                aud = exchange.audience,
                jti = done.token_id,
                "token exchanged"
            ),
            Err(refused) => info!(
                actor = exchange.caller,
                aud = exchange.audience,
                reason = refused.reason_or_internal(),
                "exchange refused"
            ),
        },
        Fact::Keys(keys) => info!(kid = keys.signing_key_id, "signing key loaded"),
        _ => {}
    }
}

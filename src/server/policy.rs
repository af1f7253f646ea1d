//! tokend's own method policy: which of its RPCs are public, which need a
//! client certificate or the feed's scope, which refuse delegated tokens;
//! and the verifier of the callers' access tokens (tokend checks its own
//! tokens with the interceptor it ships).

use tokend_interceptor::Verifier;
use tokend_interceptor::keys::KeySet;
use tokend_interceptor::server::Policy;

use super::ServeError;
use crate::api::{EXCHANGE, INTROSPECT, OWN_TOKEN_METHODS, PUBLIC_METHODS, WATCH_REVOCATIONS};
use crate::authority::Authority;
use crate::authority::INTROSPECT_SCOPE;
use crate::config::Config;
use crate::revocations::WATCH_SCOPE;

/// The verifier and policy of calls to tokend itself.
pub(super) fn own_calls(
    authority: &Authority,
    config: &Config,
) -> Result<(Verifier, Policy), ServeError> {
    // Session management needs the caller's access token: tokend checks its
    // own tokens with the interceptor it ships.
    let keys = KeySet::from_paserk(
        authority
            .public_keys()
            .iter()
            .map(|k| k.public_key.as_str()),
    )?;
    let verifier = Verifier::builder(keys, &config.issuer, &config.default_audience)
        .also_accept_audience(&config.issuer)
        .clock(config.clock.clone())
        .build();
    let policy = PUBLIC_METHODS
        .iter()
        .fold(Policy::new().public_health_and_reflection(), |p, m| {
            p.public(*m)
        })
        // The feed names revoked sessions and cut-off accounts: only for
        // services with a verified client certificate or a token granted
        // the feed's scope.
        .client_cert_or_scopes(WATCH_REVOCATIONS, [WATCH_SCOPE])
        // A service may exchange as itself with its own token, or with a
        // verified certificate naming its client id.
        .client_cert_or_scopes(EXCHANGE, Vec::<String>::new())
        // Introspection is for services granted its scope: by token, or by
        // a verified certificate naming such a client.
        .client_cert_or_scopes(INTROSPECT, [INTROSPECT_SCOPE])
        // The administration API checks its callers itself, so that every
        // refusal is throttled and audited with the call it refused.
        .public_service(crate::api::admin::SERVICE);
    // Managing sessions, watching the feed and exchanging take the
    // caller's own token, never one obtained on someone's behalf.
    let policy = OWN_TOKEN_METHODS
        .iter()
        .fold(policy, |p, m| p.forbid_delegated(*m));
    Ok((verifier, policy))
}

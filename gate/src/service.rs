//! The `envoy.service.auth.v3.Authorization` service: each Check is read,
//! decided under the policy in force and answered, and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokend_interceptor::certs::CertificateNaming;
use tokend_interceptor::keys::KeySet;
use tokend_interceptor::revocation::RevocationList;
use tokend_interceptor::server::Reloadable;
use tokend_interceptor::{Reason, Verifier};
use tonic::{Request, Response, Status};

use crate::answer::check_response;
use crate::decision::{Decision, decide};
use crate::peer::PeerCache;
use crate::policy::{Policy, PolicyError};
use crate::request::Checked;

/// Checks counted, by `decision` (allow, deny) and `reason` (none when
/// allowed).
pub const CHECKS_METRIC: &str = "tokend_gate_checks_total";
/// How long the gate took to decide a Check, in seconds (rendered as a
/// summary with quantiles).
pub const CHECK_SECONDS_METRIC: &str = "tokend_gate_check_seconds";

/// How verifiers are made: the same keys, revocation list and rules for
/// every policy; only the audience may change with the policy.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// The keys (synced from tokend, or fixed).
    pub keys: KeySet,
    /// The issuer tokens must carry.
    pub issuer: String,
    /// The audience when the policy sets none.
    pub audience: String,
    /// Clock tolerance.
    pub leeway: Duration,
    /// Which certificates name which service clients.
    pub naming: CertificateNaming,
    /// The revocation list the feed keeps, if watched.
    pub revocations: Option<RevocationList>,
}

impl VerifierSettings {
    /// A verifier for tokens of `audience` (else the flag's).
    pub fn verifier(&self, audience: Option<&str>) -> Verifier {
        let audience = audience.unwrap_or(&self.audience);
        let mut builder = Verifier::builder(self.keys.clone(), &self.issuer, audience)
            .leeway(self.leeway)
            .certificate_naming(self.naming.clone());
        if let Some(revocations) = &self.revocations {
            builder = builder.revocations(revocations.clone());
        }
        builder.build()
    }
}

/// A policy with the verifier for its audience.
#[derive(Debug)]
pub struct Enforcer {
    /// The rules.
    pub policy: Policy,
    /// Judges tokens for them.
    pub verifier: Verifier,
}

impl Enforcer {
    /// `policy` enforced with a verifier made by `settings`.
    pub fn new(policy: Policy, settings: &VerifierSettings) -> Enforcer {
        let verifier = settings.verifier(policy.audience());
        Enforcer { policy, verifier }
    }
}

/// The enforcer in force, kept from the policy file.
pub type Enforcement = Reloadable<Enforcer, PolicyError>;

/// The Authorization service.
#[derive(Debug, Clone)]
pub struct Gate {
    enforcement: Enforcement,
    peers: Arc<PeerCache>,
}

impl Gate {
    /// Decides Checks with whatever `enforcement` holds at the time.
    pub fn new(enforcement: Enforcement) -> Gate {
        Gate {
            enforcement,
            peers: Arc::new(PeerCache::new()),
        }
    }

    /// The answer for `request`.
    pub async fn answer(&self, request: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let checked = Checked::read(request);
        let enforcer = self.enforcement.current();
        let decision = decide(&enforcer.policy, &enforcer.verifier, &self.peers, &checked).await;
        let (verdict, reason) = match &decision {
            Decision::Allow(_) => ("allow", "none"),
            Decision::Deny(status) => ("deny", Reason::of(status).map_or("none", Reason::as_str)),
        };
        if let Decision::Deny(status) = &decision {
            tracing::debug!(
                path = checked.path,
                reason,
                message = status.message(),
                "refused"
            );
        }
        let response = check_response(decision, checked.grpc);
        metrics::counter!(CHECKS_METRIC, "decision" => verdict, "reason" => reason).increment(1);
        metrics::histogram!(CHECK_SECONDS_METRIC).record(started.elapsed().as_secs_f64());
        response
    }
}

#[tonic::async_trait]
impl Authorization for Gate {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.answer(request.get_ref()).await))
    }
}

//! What the gate decides for one request: the policy picks the rule, and
//! the interceptor's verifier and checks judge the token, exactly as the
//! auth layer of a Rust service would.

use std::sync::Arc;

use tokend_interceptor::server::bearer_in;
use tokend_interceptor::{AuthError, Claims, Reason, Verifier};
use tonic::Status;

use crate::peer::PeerCache;
use crate::policy::{Access, Policy};
use crate::request::{Authorization, Checked};

/// The verdict on a request.
#[derive(Debug)]
pub enum Decision {
    /// Let it through; with the verified claims unless the path is public.
    Allow(Option<Arc<Claims>>),
    /// Refuse it with this status (code, message and `ErrorInfo` reason).
    Deny(Status),
}

/// Decides `request` under `policy` with `verifier`.
pub async fn decide(
    policy: &Policy,
    verifier: &Verifier,
    peers: &PeerCache,
    request: &Checked<'_>,
) -> Decision {
    if !is_normalized(request.path) {
        return Decision::Deny(Reason::PathNotAllowed.status(
            "the request path is not normalized (empty, dot or escaped-slash segments): \
             no rule applies to it",
        ));
    }
    let (scopes, delegation) = match policy.access(request.path, request.method) {
        Access::Public => return Decision::Allow(None),
        Access::Denied => {
            return Decision::Deny(
                Reason::PathNotAllowed.status("no rule of the gate's policy allows this request"),
            );
        }
        Access::Token { scopes, delegation } => (scopes, delegation),
    };
    let verified = async {
        let token = match request.authorization {
            Authorization::Absent => bearer_in(None)?,
            Authorization::One(value) => bearer_in(Some(value))?,
            Authorization::Unusable => {
                return Err(AuthError::Invalid(
                    tokend_interceptor::error::Invalid::Malformed,
                ));
            }
        };
        let peer = peers.get(request.certificate);
        let claims = verifier.verify_from_async(token, peer.as_ref()).await?;
        claims.require_scopes(scopes)?;
        delegation.check(&claims)?;
        Ok::<_, AuthError>(claims)
    }
    .await;
    match verified {
        Ok(claims) => Decision::Allow(Some(claims)),
        Err(err) => Decision::Deny(Status::from(err)),
    }
}

/// Whether `path` is in the form Envoy's `normalize_path` and
/// `merge_slashes` leave it: starting with "/", no empty, "." or ".."
/// segment, no escaped slash or backslash. A prefix rule must not be
/// escaped by a path an upstream would resolve elsewhere.
fn is_normalized(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%2e") {
        return false;
    }
    // Segments after the leading "/"; a trailing "/" is an empty last one.
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normalized_paths_are_matched() {
        for path in [
            "/",
            "/a",
            "/a/b",
            "/a/b/",
            "/demo.v1.EchoService/Echo",
            "/a.b/c..d",
        ] {
            assert!(is_normalized(path), "{path}");
        }
        for path in [
            "",
            "a",
            "//a",
            "/a//b",
            "/./a",
            "/a/../b",
            "/a/..",
            "/a/.",
            "/a%2Fb",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/%2e%2e/b",
        ] {
            assert!(!is_normalized(path), "{path}");
        }
    }
}

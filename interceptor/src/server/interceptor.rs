//! [`AuthInterceptor`]: a tonic interceptor for one service, whose methods
//! all need the same scopes.

use std::sync::Arc;

use tonic::Status;

use super::{VerifiedClaims, bearer_from_metadata};
use crate::verify::Verifier;

/// A tonic `Interceptor` for one service: every method needs a valid token
/// and the given scopes (`EchoServiceServer::with_interceptor(svc, auth)`).
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    verifier: Verifier,
    scopes: Arc<[String]>,
}

impl AuthInterceptor {
    /// Any valid token passes.
    pub fn new(verifier: Verifier) -> AuthInterceptor {
        AuthInterceptor {
            verifier,
            scopes: Arc::new([]),
        }
    }

    /// Every method also needs these scopes.
    pub fn require_scopes<I, S>(mut self, scopes: I) -> AuthInterceptor
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let token = bearer_from_metadata(request.metadata())?;
        let claims = self
            .verifier
            .verify_peer(token, request.peer_certs().as_ref())?;
        claims.require_scopes(&self.scopes)?;
        request.extensions_mut().insert(VerifiedClaims(claims));
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use tonic::Code;
    use tonic::service::Interceptor;

    use super::*;
    use crate::keys::KeySet;
    use crate::reason::Reason;
    use crate::server::ClaimsExt;
    use crate::test_support::{NOW_MS, Signer, claims};
    use crate::verify::Clock;

    struct At(i64);

    impl Clock for At {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        }
    }

    fn interceptor(signer: &Signer) -> AuthInterceptor {
        let keys = KeySet::from_paserk([signer.public_paserk().as_str()]).unwrap();
        AuthInterceptor::new(
            Verifier::builder(keys, "tokend", "internal")
                .clock(At(NOW_MS))
                .build(),
        )
    }

    fn request(authorization: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    fn refused(result: Result<tonic::Request<()>, Status>) -> (Code, Option<Reason>) {
        let status = result.expect_err("refused");
        (status.code(), Reason::of(&status))
    }

    #[test]
    fn missing_and_non_bearer_metadata_are_missing_tokens() {
        let signer = Signer::new();
        let mut auth = interceptor(&signer);
        let missing = (Code::Unauthenticated, Some(Reason::AccessTokenMissing));
        assert_eq!(refused(auth.call(request(None))), missing);
        assert_eq!(refused(auth.call(request(Some("Basic abc")))), missing);
        assert_eq!(refused(auth.call(request(Some("Bearer")))), missing);
        assert_eq!(
            refused(auth.call(request(Some("Bearer v4.public.x")))),
            (Code::Unauthenticated, Some(Reason::AccessTokenInvalid))
        );
    }

    #[test]
    fn a_valid_token_puts_its_claims_in_the_request() {
        let signer = Signer::new();
        let mut auth = interceptor(&signer);
        let token = signer.sign(&claims());
        let passed = auth
            .call(request(Some(&format!("Bearer {token}"))))
            .expect("valid token passes");
        assert_eq!(passed.claims().map(|c| c.sub.as_str()), Some("alice"));
    }

    #[test]
    fn required_scopes_are_enforced() {
        let signer = Signer::new();
        let token = format!("Bearer {}", signer.sign(&claims()));
        let mut read = interceptor(&signer).require_scopes(["read"]);
        assert!(read.call(request(Some(&token))).is_ok());
        let mut admin = interceptor(&signer).require_scopes(["read", "admin"]);
        assert_eq!(
            refused(admin.call(request(Some(&token)))),
            (Code::PermissionDenied, Some(Reason::InsufficientScope))
        );
    }
}

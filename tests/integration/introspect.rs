//! `TokenService.Introspect`: what a watching verifier would decide of an
//! access token, for services only, scoped to their own audience, with
//! revocations counted on every replica and no oracle for other services'
//! tokens.

use std::time::{Duration, Instant};

use tokend_interceptor::Reason;
use tokend_interceptor::proto::tokend::v1::{IntrospectRequest, IntrospectResponse};

use crate::harness::*;

/// A service client's own token for tokend.
async fn service_token(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    id: &str,
    secret: &str,
) -> String {
    let mut request = client_login(id, secret);
    request.audience = TOKEND_AUDIENCE.into();
    client
        .login(request)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

/// alice's token pair for `audience`.
async fn alice_for(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    audience: &str,
) -> (String, String) {
    let mut request = password_login("alice", "pw");
    request.audience = audience.into();
    let pair = client
        .login(request)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    (pair.access_token, pair.refresh_token)
}

async fn introspect(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    caller: &str,
    token: &str,
) -> Result<IntrospectResponse, tonic::Status> {
    client
        .introspect(with_bearer(
            IntrospectRequest {
                token: token.into(),
            },
            caller,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn services_learn_about_their_own_tokens_and_revocations_count_on_every_replica() {
    // Two replicas share Redis and the signing key.
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = signing_key(keys.path(), "signing.key");
    let key_args = ["--signing-key-file", key.to_str().unwrap()];
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let tokend = Tokend::builder().redis(&redis).args(key_args).start();
    let mut client = tokend.client().await;
    let orders = add_client(&redis, "orders", &["tokend.introspect"]);
    let auditor = add_client(
        &redis,
        "auditor",
        &["tokend.introspect", "tokend.introspect.any"],
    );
    let plain = add_client(&redis, "plain", &["read"]);
    add_user(&redis, "mallory", "pw", &["tokend.introspect"]);
    let orders = service_token(&mut client, "orders", &orders).await;
    let auditor = service_token(&mut client, "auditor", &auditor).await;
    let plain = service_token(&mut client, "plain", &plain).await;
    let (for_orders, mut refresh) = alice_for(&mut client, "orders").await;
    let (for_payments, _) = alice_for(&mut client, "payments").await;

    // Who may ask: services with the scope; not anonymous callers, not
    // services without it, not users even with it.
    assert_reason(
        client
            .introspect(IntrospectRequest {
                token: for_orders.clone(),
            })
            .await,
        Reason::AccessTokenMissing,
    );
    assert_reason(
        introspect(&mut client, &plain, &for_orders).await,
        Reason::InsufficientScope,
    );
    let mut request = password_login("mallory", "pw");
    request.audience = TOKEND_AUDIENCE.into();
    let mallory = client
        .login(request)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    assert_reason(
        introspect(&mut client, &mallory, &for_orders).await,
        Reason::InsufficientScope,
    );

    // Its own audience: active, with the claims a verifier sees.
    let answer = introspect(&mut client, &orders, &for_orders).await.unwrap();
    assert!(answer.active, "{answer:?}");
    assert_eq!(answer.subject, "alice");
    assert_eq!(answer.audience, "orders");
    assert_eq!(answer.issuer, "tokend");
    assert_eq!(answer.scopes, ["read"]);
    assert_eq!(answer.token_type, "access_token");
    assert!(answer.reason.is_empty());
    assert!(!answer.session_id.is_empty() && !answer.token_id.is_empty());
    assert!(answer.key_id.starts_with("k4.pid."), "{}", answer.key_id);
    assert!(answer.expires_at.unwrap().seconds > answer.issued_at.unwrap().seconds);
    // What an operator types: grpcurl, reflection only.
    let out = std::process::Command::new(tool("grpcurl"))
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {orders}"),
        ])
        .args(["-d", &format!(r#"{{"token":"{for_orders}"}}"#)])
        .arg(tokend.addr.to_string())
        .arg("tokend.v1.TokenService/Introspect")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(r#""active": true"#) && text.contains(r#""subject": "alice""#),
        "{text}"
    );
    // Another audience's token: nothing, not even whether it is valid.
    let answer = introspect(&mut client, &orders, &for_payments)
        .await
        .unwrap();
    assert_eq!(
        answer,
        IntrospectResponse::default(),
        "no oracle for payments' tokens"
    );
    // Unless the caller may introspect any.
    let answer = introspect(&mut client, &auditor, &for_payments)
        .await
        .unwrap();
    assert!(answer.active && answer.audience == "payments", "{answer:?}");
    // Garbage is no one's secret: inactive, invalid.
    let answer = introspect(&mut client, &orders, "v4.public.garbage.x")
        .await
        .unwrap();
    assert_eq!(
        (answer.active, answer.reason.as_str()),
        (false, "ACCESS_TOKEN_INVALID")
    );
    // Malformed requests.
    assert_reason(
        introspect(&mut client, &orders, "").await,
        Reason::InvalidRequest,
    );
    assert_reason(
        introspect(&mut client, &orders, &"x".repeat(10_000)).await,
        Reason::InvalidRequest,
    );

    // Refresh tokens: only for callers that may introspect anything, and
    // never consumed by it.
    let answer = introspect(&mut client, &orders, &refresh).await.unwrap();
    assert_eq!(answer, IntrospectResponse::default());
    let access = introspect(&mut client, &orders, &for_orders).await.unwrap();
    for _ in 0..2 {
        let answer = introspect(&mut client, &auditor, &refresh).await.unwrap();
        assert!(answer.active, "{answer:?}");
        assert_eq!(answer.token_type, "refresh_token");
        assert_eq!(answer.subject, "alice");
        assert_eq!(answer.session_id, access.session_id);
        assert!(answer.expires_at.is_some() && answer.key_id.is_empty());
    }
    let next = testkit::refresh(&mut client, &refresh)
        .await
        .expect("introspection consumed nothing");
    let answer = introspect(&mut client, &auditor, &refresh).await.unwrap();
    assert_eq!(
        (answer.active, answer.reason.as_str()),
        (false, "REFRESH_TOKEN_INVALID")
    );
    assert!(
        introspect(&mut client, &auditor, &next.refresh_token)
            .await
            .unwrap()
            .active
    );
    let answer = introspect(&mut client, &auditor, "tkd_rt_garbage")
        .await
        .unwrap();
    assert_eq!(answer.reason, "REFRESH_TOKEN_INVALID");
    refresh = next.refresh_token;

    // A second replica on the same Redis; alice logs out at the first.
    let second = Tokend::builder().redis(&redis).args(key_args).start();
    let mut other = second.client().await;
    eventually(
        "the second replica to introspect",
        Duration::from_secs(10),
        || {
            let mut other = other.clone();
            let (orders, token) = (orders.clone(), for_orders.clone());
            async move {
                introspect(&mut other, &orders, &token)
                    .await
                    .is_ok_and(|a| a.active)
            }
        },
    )
    .await;
    revoke(&mut client, &refresh).await.unwrap();
    let revoked_at = Instant::now();
    for (name, replica) in [("first", &mut client), ("second", &mut other)] {
        loop {
            let answer = introspect(replica, &orders, &for_orders).await.unwrap();
            if !answer.active {
                assert_eq!(answer.reason, "SESSION_REVOKED", "{answer:?}");
                break;
            }
            assert!(
                revoked_at.elapsed() < REVOCATION_DEADLINE,
                "{name} replica still says active"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!(
            "{name} replica: inactive {:?} after Revoke",
            revoked_at.elapsed()
        );
    }
    let answer = introspect(&mut client, &auditor, &refresh).await.unwrap();
    assert_eq!(
        answer.reason, "REFRESH_TOKEN_INVALID",
        "the revoked session's refresh token"
    );
    // Another audience's revoked token stays silent for orders.
    let answer = introspect(&mut client, &orders, &for_payments)
        .await
        .unwrap();
    assert_eq!(answer, IntrospectResponse::default());

    // A disabled service may no longer ask, on any replica.
    admin(&redis, &["client", "disable", "orders"], None);
    for replica in [&mut client, &mut other] {
        eventually(
            "the disabled client to be refused",
            Duration::from_secs(10),
            || {
                let mut replica = replica.clone();
                let (orders, token) = (orders.clone(), for_orders.clone());
                async move {
                    matches!(introspect(&mut replica, &orders, &token).await,
                    Err(status) if Reason::of(&status) == Some(Reason::SessionRevoked))
                }
            },
        )
        .await;
    }
    drop(tokend);
}

#[tokio::test]
async fn an_expired_token_introspects_as_expired() {
    let (redis, _tokend, mut client) = with_alice(&["--access-ttl", "1s"]).await;
    let orders = add_client(&redis, "orders", &["tokend.introspect"]);
    let (token, _) = alice_for(&mut client, "orders").await;
    let started = Instant::now();
    loop {
        // The caller's own token lives a second too: a fresh one each time.
        let caller = service_token(&mut client, "orders", &orders).await;
        let answer = introspect(&mut client, &caller, &token).await.unwrap();
        if !answer.active {
            assert_eq!(answer.reason, "ACCESS_TOKEN_EXPIRED", "{answer:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_services_certificate_is_enough_to_introspect() {
    use crate::harness::pki::Pki;
    let pki = Pki::new("introspect");
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let auditor = add_client(
        &redis,
        "auditor",
        &["tokend.introspect", "tokend.introspect.any"],
    );
    let _ = auditor;
    add_client(&redis, "plain", &["read"]);
    let server = pki.server("tokend");
    let tokend = Tokend::builder()
        .redis(&redis)
        .tls(&server)
        .args(["--tls-client-ca", pki.ca_arg()])
        .start();
    let over = |identity: Option<crate::harness::pki::CertFiles>| {
        let url = tokend.https_url();
        let ca = pki.ca().to_owned();
        async move { TokenServiceClient::new(tls_channel(&url, &ca, identity.as_ref()).await.unwrap()) }
    };
    let mut anonymous = over(None).await;
    let (token, _) = alice_for(&mut anonymous, "orders").await;
    let request = || IntrospectRequest {
        token: token.clone(),
    };

    // The auditor's certificate, no token: introspects any audience.
    let mut auditor = over(Some(pki.client("auditor"))).await;
    let answer = auditor.introspect(request()).await.unwrap().into_inner();
    assert!(answer.active && answer.subject == "alice", "{answer:?}");
    // A client without the scope, a certificate naming no client, none.
    let mut plain = over(Some(pki.client("plain"))).await;
    assert_reason(plain.introspect(request()).await, Reason::InsufficientScope);
    let mut stranger = over(Some(pki.client("stranger"))).await;
    assert_reason(
        stranger.introspect(request()).await,
        Reason::AccessTokenMissing,
    );
    assert_reason(
        anonymous.introspect(request()).await,
        Reason::AccessTokenMissing,
    );
}

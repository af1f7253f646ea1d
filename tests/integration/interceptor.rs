//! tokend-interceptor end to end: tokend on real Redis, the example resource
//! server, and callers with and without the token source.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use testkit::demo::v1::AdminEchoRequest;
use tokend_interceptor::client::TokenSource;
use tokend_interceptor::keys::{KeySync, KeySyncConfig};
use tokend_interceptor::server::{AuthLayer, Policy};
use tokend_interceptor::verify::Clock;
use tokend_interceptor::{Reason, Verifier};
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::Channel;
use tower::Layer;

use crate::harness::*;

async fn channel(url: String) -> Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_resource_server_refuses_bad_tokens_and_serves_good_ones() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    add_user(&redis, "root", "pw", &["read", "admin"]);
    let tokend = Tokend::builder().redis(&redis).start();
    let resource = ResourceServer::for_tokend(&tokend, &[]);
    let mut echo = resource.client().await;
    let mut tokens = tokend.client().await;

    // Public: no token needed.
    echo.ping(testkit::demo::v1::PingRequest {})
        .await
        .expect("ping is public");

    assert_reason(
        echo.echo(echo_request("hi", None)).await,
        Reason::AccessTokenMissing,
    );
    assert_reason(
        echo.echo(echo_request("hi", Some("Basic YWxpY2U6cHc=")))
            .await,
        Reason::AccessTokenMissing,
    );
    assert_reason(
        echo.echo(echo_request("hi", Some("Bearer not-a-token")))
            .await,
        Reason::AccessTokenInvalid,
    );
    // A refresh token is not an access token.
    let pair = login(&mut tokens, "alice", "pw").await;
    assert_reason(
        echo.echo(echo_request("hi", Some(&bearer(&pair.refresh_token))))
            .await,
        Reason::AccessTokenInvalid,
    );

    let reply = echo
        .echo(echo_request("hello", Some(&bearer(&pair.access_token))))
        .await
        .expect("a valid token passes")
        .into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.subject, "alice");

    // Scopes: alice lacks admin.
    let mut admin_request = tonic::Request::new(AdminEchoRequest {
        message: "x".into(),
    });
    admin_request
        .metadata_mut()
        .insert("authorization", bearer(&pair.access_token).parse().unwrap());
    let denied = echo.admin_echo(admin_request).await;
    assert_reason(denied, Reason::InsufficientScope);

    let root = login(&mut tokens, "root", "pw").await;
    let mut admin_request = tonic::Request::new(AdminEchoRequest {
        message: "x".into(),
    });
    admin_request
        .metadata_mut()
        .insert("authorization", bearer(&root.access_token).parse().unwrap());
    let reply = echo
        .admin_echo(admin_request)
        .await
        .expect("admin passes")
        .into_inner();
    assert_eq!(reply.subject, "root");
}

#[tokio::test]
async fn expired_tokens_are_refused_as_expired() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--access-ttl", "1s"])
        .start();
    let resource = ResourceServer::for_tokend(&tokend, &["--leeway", "0s"]);
    let mut echo = resource.client().await;
    let mut tokens = tokend.client().await;

    let pair = login(&mut tokens, "alice", "pw").await;
    let exp = pair.access_token_expires_at.unwrap().seconds;
    let authorization = bearer(&pair.access_token);
    // Valid until exp (it may already be past if the second just turned).
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    if (now.as_secs() as i64) < exp {
        let _ = echo.echo(echo_request("hi", Some(&authorization))).await;
    }
    // Wait out the token (real time: expiry is the point).
    let wait_until = SystemTime::UNIX_EPOCH + Duration::from_millis((exp * 1000 + 50) as u64);
    if let Ok(left) = wait_until.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    assert_reason(
        echo.echo(echo_request("hi", Some(&authorization))).await,
        Reason::AccessTokenExpired,
    );
    // A refreshed token works again.
    let next = refresh(&mut tokens, &pair.refresh_token).await.unwrap();
    echo.echo(echo_request("hi", Some(&bearer(&next.access_token))))
        .await
        .expect("refreshed token passes");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let tokend = Tokend::builder().redis(&redis).start();
    let internal = ResourceServer::for_tokend(&tokend, &[]);
    let billing = ResourceServer::for_tokend(&tokend, &["--audience", "billing"]);
    let mut tokens = tokend.client().await;

    let mut request = password_login("alice", "pw");
    request.audience = "billing".into();
    let pair = tokens
        .login(request)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let authorization = bearer(&pair.access_token);
    assert_reason(
        internal
            .client()
            .await
            .echo(echo_request("hi", Some(&authorization)))
            .await,
        Reason::AccessTokenInvalid,
    );
    billing
        .client()
        .await
        .echo(echo_request("hi", Some(&authorization)))
        .await
        .expect("the billing service accepts billing tokens");
}

#[tokio::test]
async fn fixed_public_keys_verify_only_their_own_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("signing.key");
    let out = tokend_command(
        &["keys", "generate", "--out", key_path.to_str().unwrap()],
        None,
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let public = stdout.lines().next().unwrap().to_owned();

    let tokend = Tokend::builder()
        .args(["--dev", "--signing-key-file", key_path.to_str().unwrap()])
        .start();
    let pinned = ResourceServer::start(&["--public-key", &public]);
    let other_key_path = dir.path().join("other.key");
    let out = tokend_command(
        &[
            "keys",
            "generate",
            "--out",
            other_key_path.to_str().unwrap(),
        ],
        None,
    );
    let other_public = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let wrong = ResourceServer::start(&["--public-key", &other_public]);

    let mut tokens = tokend.client().await;
    let pair = login(&mut tokens, "demo", "demo-password").await;
    let authorization = bearer(&pair.access_token);
    let reply = pinned
        .client()
        .await
        .echo(echo_request("hi", Some(&authorization)))
        .await
        .expect("pinned key verifies")
        .into_inner();
    assert_eq!(reply.subject, "demo");
    assert_reason(
        wrong
            .client()
            .await
            .echo(echo_request("hi", Some(&authorization)))
            .await,
        Reason::AccessTokenInvalid,
    );
}

#[tokio::test]
async fn a_resource_server_started_before_tokend_waits_for_keys_and_never_lets_calls_pass() {
    let port = free_port();
    let tokend_url = format!("http://127.0.0.1:{port}");
    let resource = ResourceServer::start(&["--tokend", &tokend_url]);
    let mut echo = resource.client().await;

    // Signed by a key nobody knows yet: refused, as unavailable, never passed.
    let early = Tokend::builder().args(["--dev"]).start();
    let mut early_tokens = early.client().await;
    let stray = login(&mut early_tokens, "demo", "demo-password").await;
    let refused = echo
        .echo(echo_request("hi", Some(&bearer(&stray.access_token))))
        .await;
    let status = refused.expect_err("no keys: refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), Some(Reason::KeysUnavailable));
    // Token-less calls are still just missing a token.
    assert_reason(
        echo.echo(echo_request("hi", None)).await,
        Reason::AccessTokenMissing,
    );

    // tokend comes up where the resource server expects it.
    let tokend = Tokend::builder()
        .args(["--dev"])
        .listen(&format!("127.0.0.1:{port}"))
        .start();
    let mut tokens = tokend.client().await;
    let pair = login(&mut tokens, "demo", "demo-password").await;
    let authorization = bearer(&pair.access_token);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut passed = false;
    while Instant::now() < deadline {
        match echo.echo(echo_request("hi", Some(&authorization))).await {
            Ok(reply) => {
                assert_eq!(reply.into_inner().subject, "demo");
                passed = true;
                break;
            }
            Err(status) => {
                assert_ne!(status.code(), Code::Ok);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(passed, "keys were fetched once tokend came up");
    // The stray token's key is still unknown.
    assert_reason(
        echo.echo(echo_request("hi", Some(&bearer(&stray.access_token))))
            .await,
        Reason::AccessTokenInvalid,
    );
}

#[tokio::test]
async fn the_token_source_keeps_calls_succeeding_across_token_lifetimes() {
    let redis = RedisServer::start();
    let secret = add_client(&redis, "svc", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--access-ttl", "2s"])
        .start();
    let resource = ResourceServer::for_tokend(&tokend, &["--leeway", "0s"]);

    let source = TokenSource::client_credentials(channel(tokend.url()).await, "svc", secret);
    let mut echo = testkit::demo::v1::echo_service_client::EchoServiceClient::new(
        source.layer().layer(channel(resource.url()).await),
    );
    // Back-to-back calls until the source has renewed four times (several
    // 2 s lifetimes): none fails, and each token serves many calls.
    let started = Instant::now();
    let mut calls = 0u64;
    while source.renewals() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still {} renewals after {calls} calls",
            source.renewals()
        );
        let reply = echo
            .echo(testkit::demo::v1::EchoRequest {
                message: "tick".into(),
            })
            .await
            .unwrap_or_else(|status| panic!("call {calls} failed: {status:?}"));
        assert_eq!(reply.into_inner().subject, "svc");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let renewals = source.renewals();
    assert!(
        calls >= renewals * 10,
        "{calls} calls on {renewals} tokens: a token is reused until it is due"
    );
    let logins = tokend.logs().matches("client login").count() as u64;
    assert_eq!(logins, renewals, "every renewal was one login at tokend");
}

#[tokio::test]
async fn concurrent_callers_cause_one_login() {
    let redis = RedisServer::start();
    let secret = add_client(&redis, "svc", &["read"]);
    let tokend = Tokend::builder().redis(&redis).start();
    let resource = ResourceServer::for_tokend(&tokend, &[]);

    let source = TokenSource::client_credentials(channel(tokend.url()).await, "svc", secret);
    let echo = testkit::demo::v1::echo_service_client::EchoServiceClient::new(
        source.layer().layer(channel(resource.url()).await),
    );
    let mut calls = JoinSet::new();
    for i in 0..64 {
        let mut echo = echo.clone();
        calls.spawn(async move {
            echo.echo(testkit::demo::v1::EchoRequest {
                message: format!("{i}"),
            })
            .await
        });
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(
            result.unwrap().expect("call succeeds").into_inner().subject,
            "svc"
        );
    }
    assert_eq!(source.renewals(), 1);
    assert_eq!(tokend.logs().matches("client login").count(), 1);
}

#[tokio::test]
async fn a_user_session_token_source_rotates_its_refresh_token() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--access-ttl", "1s"])
        .start();
    let resource = ResourceServer::for_tokend(&tokend, &["--leeway", "0s"]);
    let mut tokens = tokend.client().await;
    let pair = login(&mut tokens, "alice", "pw").await;

    let source = TokenSource::from_refresh_token(channel(tokend.url()).await, &pair.refresh_token);
    let mut echo = testkit::demo::v1::echo_service_client::EchoServiceClient::new(
        source.layer().layer(channel(resource.url()).await),
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let reply = echo
            .echo(testkit::demo::v1::EchoRequest {
                message: "x".into(),
            })
            .await
            .expect("user session calls succeed");
        assert_eq!(reply.into_inner().subject, "alice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(source.renewals() >= 2);
    let latest = source.refresh_token().await.unwrap();
    assert_ne!(latest, pair.refresh_token);
    // The original was consumed: replaying it is reuse.
    assert_reason(
        refresh(&mut tokens, &pair.refresh_token).await,
        Reason::RefreshTokenReused,
    );
}

/// A clock that runs an hour fast for its next `skewed` readings.
struct SkewedClock {
    skewed: Arc<AtomicU32>,
}

impl Clock for SkewedClock {
    fn now(&self) -> SystemTime {
        let fast = self
            .skewed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fast {
            SystemTime::now() + Duration::from_secs(3600)
        } else {
            SystemTime::now()
        }
    }
}

#[tokio::test]
async fn the_token_source_renews_and_retries_once_on_expired() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let secret = tokend.demo_client_secret().expect("demo client secret");

    // An in-process resource service whose clock can run an hour fast, as on
    // a host with a skewed clock: tokens then look expired.
    let skewed = Arc::new(AtomicU32::new(0));
    let sync = KeySync::spawn(channel(tokend.url()).await, KeySyncConfig::default());
    let verifier = Verifier::builder(sync.keys(), "tokend", "internal")
        .clock(SkewedClock {
            skewed: Arc::clone(&skewed),
        })
        .build();
    let (_, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(AuthLayer::new(verifier, Policy::new()))
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let source =
        TokenSource::client_credentials(channel(tokend.url()).await, "demo-client", secret);
    let client = tonic_health::pb::health_client::HealthClient::new(
        source
            .layer()
            .layer(channel(format!("http://{addr}")).await),
    );
    let check = || {
        let mut client = client.clone();
        async move {
            client
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
        }
    };
    check().await.expect("first call passes");
    assert_eq!(source.renewals(), 1);

    // The next verification sees the fast clock: EXPIRED, then one renewal
    // and one retry, which passes.
    skewed.store(1, Ordering::SeqCst);
    source
        .retry_on_expired(check)
        .await
        .expect("the retry passes");
    assert_eq!(source.renewals(), 2);

    // Expired twice in a row: exactly one retry, then the error surfaces.
    skewed.store(2, Ordering::SeqCst);
    let result = source.retry_on_expired(check).await;
    assert_reason(result, Reason::AccessTokenExpired);
    assert_eq!(source.renewals(), 3);
}

#[tokio::test]
async fn the_tonic_client_interceptor_attaches_the_cached_token() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let secret = tokend.demo_client_secret().expect("demo client secret");
    let resource = ResourceServer::for_tokend(&tokend, &[]);
    let source =
        TokenSource::client_credentials(channel(tokend.url()).await, "demo-client", secret);
    let mut echo = testkit::demo::v1::echo_service_client::EchoServiceClient::with_interceptor(
        channel(resource.url()).await,
        source.interceptor(),
    );
    // Before any token was fetched the interceptor cannot wait for one.
    let early = echo
        .echo(testkit::demo::v1::EchoRequest {
            message: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::Unavailable);
    source.access_token().await.expect("warm up");
    for _ in 0..5 {
        let reply = echo
            .echo(testkit::demo::v1::EchoRequest {
                message: "x".into(),
            })
            .await
            .expect("the cached token is attached");
        assert_eq!(reply.into_inner().subject, "demo-client");
    }
    assert_eq!(source.renewals(), 1);
}

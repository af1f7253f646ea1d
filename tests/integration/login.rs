//! Login with passwords and client credentials.

use pasetors::keys::AsymmetricPublicKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Claims;
use tokend_interceptor::Reason;
use tokend_interceptor::token::Footer;
use tonic::Code;

use crate::harness::*;

/// Verifies `token` with the published key its footer names, returning its claims.
pub(crate) async fn verify_with_published_key(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Claims {
    let keys = client
        .get_public_keys(pb::GetPublicKeysRequest {})
        .await
        .expect("GetPublicKeys")
        .into_inner()
        .keys;
    let untrusted =
        UntrustedToken::<pasetors::Public, V4>::try_from(token).expect("a PASETO token");
    let footer: Footer = serde_json::from_slice(untrusted.untrusted_footer()).expect("JSON footer");
    let key = keys
        .iter()
        .find(|k| k.key_id == footer.kid)
        .expect("the footer's kid is published");
    let public = AsymmetricPublicKey::<V4>::try_from(key.public_key.as_str()).expect("k4.public");
    let trusted = PublicToken::verify(&public, &untrusted, None, None).expect("signature verifies");
    serde_json::from_str(trusted.payload()).expect("claims")
}

#[tokio::test]
async fn password_login_returns_a_token_pair_verifiable_with_the_published_key() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "s3cret-pw", &["read", "write"]);
    let tokend = spawn_app_args(&["--redis-url", &redis.url()]).await;
    let mut client = tokend.client().await;

    let pair = login(&mut client, "alice", "s3cret-pw").await;
    assert_eq!(pair.token_type, "Bearer");
    assert!(pair.access_token.starts_with("v4.public."));
    assert!(pair.refresh_token.starts_with("tkd_rt_"));
    assert!(!pair.session_id.is_empty());
    assert!(pair.refresh_token.contains(&pair.session_id));

    let claims = verify_with_published_key(&mut client, &pair.access_token).await;
    assert_eq!(claims.iss(), "tokend");
    assert_eq!(claims.sub(), "alice");
    assert_eq!(claims.aud(), "internal");
    assert_eq!(claims.scope(), "read write");
    assert_eq!(claims.sid(), Some(pair.session_id.as_str()));
    // Whole seconds, rounded up: never shorter than the lifetime.
    assert!((900..=901).contains(&(claims.exp() - claims.iat())));
    assert_eq!(claims.nbf(), claims.iat());
    assert!(!claims.jti().is_empty());

    let access_exp = pair.access_token_expires_at.expect("access expiry");
    assert_eq!(access_exp.seconds, claims.exp());
    let refresh_exp = pair.refresh_token_expires_at.expect("refresh expiry");
    let idle = refresh_exp.seconds - claims.iat();
    assert!(
        (7 * 86400 - 1..=7 * 86400 + 1).contains(&idle),
        "idle lifetime {idle}s"
    );

    // Two logins are two sessions with different tokens.
    let again = login(&mut client, "alice", "s3cret-pw").await;
    assert_ne!(again.session_id, pair.session_id);
    assert_ne!(again.refresh_token, pair.refresh_token);
}

#[tokio::test]
async fn client_credentials_return_an_access_token_and_no_session() {
    let redis = RedisServer::start();
    let secret = add_client(&redis, "billing", &["read", "bill"]);
    let tokend = spawn_app_args(&["--redis-url", &redis.url()]).await;
    let mut client = tokend.client().await;
    let mut conn = redis.connection().await;
    let keys_before = all_keys(&mut conn).await;

    let pair = client
        .login(client_login("billing", &secret))
        .await
        .expect("client login")
        .into_inner()
        .tokens
        .expect("tokens");
    assert!(pair.refresh_token.is_empty());
    assert!(pair.session_id.is_empty());
    assert!(pair.refresh_token_expires_at.is_none());
    assert_eq!(pair.token_type, "Bearer");

    let claims = verify_with_published_key(&mut client, &pair.access_token).await;
    assert_eq!(claims.sub(), "billing");
    assert_eq!(claims.scope(), "read bill");
    assert_eq!(claims.sid(), None);

    // No session state was written (only that this source is the client's
    // own, for login throttling).
    let written: Vec<String> = all_keys(&mut conn)
        .await
        .into_iter()
        .filter(|k| !keys_before.contains(k))
        .collect();
    assert_eq!(
        written,
        ["tokend:throttle:{client:billing}:known:127.0.0.1"]
    );

    let wrong = client.login(client_login("billing", "tkd_cs_wrong")).await;
    assert_reason(wrong, Reason::InvalidCredentials);
    let unknown = client.login(client_login("nobody", &secret)).await;
    assert_reason(unknown, Reason::InvalidCredentials);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_identical_answer() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "right-password", &["read"]);
    let tokend = spawn_app_args(&["--redis-url", &redis.url()]).await;
    let mut client = tokend.client().await;

    let wrong = client
        .login(password_login("alice", "wrong-password"))
        .await
        .expect_err("wrong password");
    let unknown = client
        .login(password_login("mallory", "wrong-password"))
        .await
        .expect_err("unknown user");
    assert_eq!(reason(&wrong), Some(Reason::InvalidCredentials));
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.code(), unknown.code());
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(wrong.details(), unknown.details());
    assert!(!wrong.message().contains("alice"));
}

#[tokio::test]
async fn scopes_narrow_and_never_widen() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read", "write", "admin"]);
    let tokend = spawn_app_args(&["--redis-url", &redis.url()]).await;
    let mut client = tokend.client().await;

    let mut request = password_login("alice", "pw");
    request.scopes = vec!["read".into(), "admin".into()];
    let pair = client
        .login(request)
        .await
        .expect("narrowed login")
        .into_inner()
        .tokens
        .unwrap();
    let claims = verify_with_published_key(&mut client, &pair.access_token).await;
    assert_eq!(claims.scope(), "read admin");

    // A refresh keeps the narrowed scopes.
    let next = refresh(&mut client, &pair.refresh_token)
        .await
        .expect("refresh");
    let claims = verify_with_published_key(&mut client, &next.access_token).await;
    assert_eq!(claims.scope(), "read admin");

    let mut request = password_login("alice", "pw");
    request.scopes = vec!["read".into(), "root".into()];
    assert_reason(client.login(request).await, Reason::InvalidRequest);
}

#[tokio::test]
async fn the_audience_defaults_and_can_be_chosen() {
    let (_redis, _tokend, mut client) =
        with_alice(&["--audience", "backend", "--issuer", "tokend-test"]).await;

    let pair = login(&mut client, "alice", "pw").await;
    let claims = verify_with_published_key(&mut client, &pair.access_token).await;
    assert_eq!(claims.aud(), "backend");
    assert_eq!(claims.iss(), "tokend-test");

    let mut request = password_login("alice", "pw");
    request.audience = "billing".into();
    let pair = client
        .login(request)
        .await
        .expect("login")
        .into_inner()
        .tokens
        .unwrap();
    let claims = verify_with_published_key(&mut client, &pair.access_token).await;
    assert_eq!(claims.aud(), "billing");
    let next = refresh(&mut client, &pair.refresh_token)
        .await
        .expect("refresh");
    let claims = verify_with_published_key(&mut client, &next.access_token).await;
    assert_eq!(claims.aud(), "billing");
}

#[tokio::test]
async fn malformed_requests_get_invalid_argument_and_the_server_carries_on() {
    let (_redis, tokend, mut client) = with_alice(&[]).await;

    // Bodies that are not protobuf at all: the caller's mistake, said plainly.
    let channel = tonic::transport::Endpoint::from_shared(tokend.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (path, body) in [
        (
            "/tokend.v1.TokenService/Login",
            vec![0xff, 0xff, 0xff, 0xff],
        ),
        ("/tokend.v1.TokenService/Refresh", vec![0x0a, 0x7f, 0x01]),
        ("/tokend.v1.TokenService/GetPublicKeys", vec![0x0b]),
    ] {
        let status = raw_unary(channel.clone(), path, body).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert_eq!(reason(&status), Some(Reason::InvalidRequest), "{path}");
        assert!(
            !status.message().contains("decode"),
            "no decoder details: {status:?}"
        );
    }

    let no_credentials = pb::LoginRequest::default();
    assert_reason(client.login(no_credentials).await, Reason::InvalidRequest);
    assert_reason(
        client.login(password_login("", "pw")).await,
        Reason::InvalidRequest,
    );
    assert_reason(
        client.login(password_login("alice", "")).await,
        Reason::InvalidRequest,
    );
    assert_reason(
        client
            .login(password_login("alice", &"p".repeat(2000)))
            .await,
        Reason::InvalidRequest,
    );
    assert_reason(
        client.login(password_login(&"a".repeat(300), "pw")).await,
        Reason::InvalidRequest,
    );
    assert_reason(
        client.login(password_login("al{ice}", "pw")).await,
        Reason::InvalidRequest,
    );
    assert_reason(
        client.login(client_login("svc", "")).await,
        Reason::InvalidRequest,
    );

    let mut many_scopes = password_login("alice", "pw");
    many_scopes.scopes = (0..100).map(|i| format!("s{i}")).collect();
    assert_reason(client.login(many_scopes).await, Reason::InvalidRequest);
    let mut spaced = password_login("alice", "pw");
    spaced.scopes = vec!["read write".into()];
    assert_reason(client.login(spaced).await, Reason::InvalidRequest);
    let mut long_audience = password_login("alice", "pw");
    long_audience.audience = "a".repeat(1000);
    assert_reason(client.login(long_audience).await, Reason::InvalidRequest);
    let mut unicode_password = password_login("alice", "pässwörd\u{0}\u{202e}");
    unicode_password.audience = String::new();
    assert_reason(
        client.login(unicode_password).await,
        Reason::InvalidCredentials,
    );

    assert_reason(refresh(&mut client, "").await, Reason::InvalidRequest);
    assert_reason(
        refresh(&mut client, &"x".repeat(600)).await,
        Reason::InvalidRequest,
    );
    assert_reason(revoke(&mut client, "").await, Reason::InvalidRequest);

    // A message beyond the decode limit is refused before any work.
    let huge = client
        .login(password_login("alice", &"p".repeat(100_000)))
        .await;
    let status = huge.expect_err("oversize message");
    assert_ne!(status.code(), Code::Ok);

    // None of that hurt the server.
    let pair = login(&mut client, "alice", "pw").await;
    assert!(!pair.access_token.is_empty());
}

#[tokio::test]
async fn logs_never_contain_a_secret() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw-that-must-not-leak", &["read"]);
    let client_secret = add_client(&redis, "svc", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--refresh-reuse-grace", "5s"])
        .env("RUST_LOG", "trace")
        .start();
    let mut client = tokend.client().await;

    let first = login(&mut client, "alice", "pw-that-must-not-leak").await;
    let second = refresh(&mut client, &first.refresh_token).await.unwrap();
    let retried = refresh(&mut client, &first.refresh_token).await.unwrap();
    let service = client
        .login(client_login("svc", &client_secret))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let _ = client
        .login(password_login("alice", "wrong-guess-that-must-not-leak"))
        .await;
    let _ = client
        .login(client_login("svc", "tkd_cs_guess-that-must-not-leak"))
        .await;
    revoke(&mut client, &second.refresh_token).await.unwrap();
    let _ = refresh(&mut client, &second.refresh_token).await;

    let logs = tokend.logs();
    assert!(
        logs.contains(&first.session_id),
        "sessions are logged by id"
    );
    for secret in [
        "typed-password-as-name",
        "pw-that-must-not-leak",
        "wrong-guess-that-must-not-leak",
        "guess-that-must-not-leak",
        client_secret.as_str(),
        first.refresh_token.as_str(),
        second.refresh_token.as_str(),
        retried.refresh_token.as_str(),
        first.access_token.as_str(),
        second.access_token.as_str(),
        service.access_token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the log");
        // Nor any part of a token's secret or signature.
        let tail = &secret[secret.len().saturating_sub(24)..];
        assert!(!logs.contains(tail), "part of a secret reached the log");
    }
}

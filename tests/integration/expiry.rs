//! Idle and absolute session expiry with short TTLs, and what Redis holds.

use std::time::Duration;

use tokend_interceptor::Reason;

use crate::harness::*;

#[tokio::test]
async fn idle_sessions_expire_and_each_refresh_renews_them() {
    let (_redis, _tokend, mut client) =
        with_alice(&["--refresh-idle-ttl", "2s", "--refresh-absolute-ttl", "1h"]).await;

    let mut pair = login(&mut client, "alice", "pw").await;
    let expires = pair.refresh_token_expires_at.unwrap().seconds;
    let issued = crate::login::verify_with_published_key(&mut client, &pair.access_token)
        .await
        .iat;
    assert!(
        (1..=3).contains(&(expires - issued)),
        "idle expiry is reported"
    );

    // Refreshing every 1.2 s keeps the session alive past its 2 s idle lifetime.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        pair = refresh(&mut client, &pair.refresh_token)
            .await
            .expect("renewed in time");
    }
    // Idle for longer than 2 s: gone.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime_however_often_refreshed() {
    let (_redis, _tokend, mut client) =
        with_alice(&["--refresh-idle-ttl", "1h", "--refresh-absolute-ttl", "3s"]).await;

    let mut pair = login(&mut client, "alice", "pw").await;
    let login_claims =
        crate::login::verify_with_published_key(&mut client, &pair.access_token).await;
    // Neither the session nor its access tokens outlive the absolute lifetime.
    assert!(pair.refresh_token_expires_at.unwrap().seconds <= login_claims.iat + 3);
    assert!(login_claims.exp <= login_claims.iat + 3);

    tokio::time::sleep(Duration::from_millis(1000)).await;
    pair = refresh(&mut client, &pair.refresh_token)
        .await
        .expect("inside the lifetime");
    assert!(pair.refresh_token_expires_at.unwrap().seconds <= login_claims.iat + 3);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn the_access_token_lifetime_is_configurable() {
    let (_redis, _tokend, mut client) = with_alice(&["--access-ttl", "2s"]).await;
    let pair = login(&mut client, "alice", "pw").await;
    let claims = crate::login::verify_with_published_key(&mut client, &pair.access_token).await;
    assert!((2..=3).contains(&(claims.exp - claims.iat)));
}

#[tokio::test]
async fn every_session_key_has_a_ttl_and_redis_holds_no_secret_in_the_clear() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "alice-password-in-clear?", &["read"]);
    let client_secret = add_client(&redis, "svc", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--refresh-reuse-grace", "1m"])
        .start();
    let mut client = tokend.client().await;

    let mut issued = Vec::new();
    let mut secrets: Vec<String> = vec!["alice-password-in-clear?".into(), client_secret.clone()];
    for _ in 0..3 {
        let mut pair = login(&mut client, "alice", "alice-password-in-clear?").await;
        for _ in 0..4 {
            let next = refresh(&mut client, &pair.refresh_token).await.unwrap();
            issued.push(pair);
            pair = next;
        }
        // A retry inside the grace window stores a sealed successor.
        let retried = refresh(&mut client, &issued.last().unwrap().refresh_token)
            .await
            .unwrap();
        assert_eq!(retried.refresh_token, pair.refresh_token);
        issued.push(pair);
    }
    let service = client
        .login(client_login("svc", &client_secret))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    secrets.push(service.access_token);
    for pair in &issued {
        secrets.push(pair.refresh_token.clone());
        secrets.push(pair.access_token.clone());
        // The random part alone, too.
        secrets.push(pair.refresh_token.rsplit('.').next().unwrap().to_owned());
    }

    let mut conn = redis.connection().await;
    let keys = all_keys(&mut conn).await;
    let accounts = ["tokend:client:{svc}", "tokend:user:{alice}"];
    let mut session_keys = 0;
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if accounts.contains(&key.as_str()) {
            // Accounts are configuration written by the CLI, not session state.
            assert_eq!(ttl, -1, "{key}");
            continue;
        }
        session_keys += 1;
        assert!(ttl > 0, "{key} has no TTL");
    }
    assert!(session_keys >= 3, "sessions were written: {keys:?}");

    let values = dump_values(&mut conn).await;
    for secret in &secrets {
        assert!(
            !contains_bytes(&values, secret.as_bytes()),
            "Redis holds a secret in the clear"
        );
    }
}

//! Lifetimes on the real binary and Redis: the configured access-token
//! lifetime, and a TTL on every key Redis holds. Expiry itself runs on a
//! moved clock in `lifetimes.rs`.

use crate::harness::*;

#[tokio::test]
async fn the_access_token_lifetime_is_configurable() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&["--access-ttl", "2s"]).await;
    let pair = login(&mut client, "alice", "pw").await;
    let claims = crate::login::verify_with_published_key(&mut client, &pair.access_token).await;
    assert!((2..=3).contains(&(claims.exp() - claims.iat())));
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
    // Accounts and their directories are configuration, not session state.
    let accounts = [
        "tokend:client:{svc}",
        "tokend:user:{alice}",
        "tokend:{accounts}:clients",
        "tokend:{accounts}:users",
    ];
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

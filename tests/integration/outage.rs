//! Redis down or slow: calls fail fast with UNAVAILABLE / STORE_UNAVAILABLE,
//! and tokend recovers by itself when Redis is back.

use std::time::{Duration, Instant};

use tokend_interceptor::Reason;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

/// Generous bound for "fails fast rather than hangs" (the store timeout is 500 ms).
const NO_HANG: Duration = Duration::from_secs(10);

async fn health(tokend: &Tokend) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(tokend.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let reply = health
        .check(HealthCheckRequest {
            service: "tokend.v1.TokenService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(reply.status).unwrap()
}

/// Polls `check` every 100 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn redis_down_is_unavailable_and_tokend_recovers_when_it_returns() {
    let mut redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let secret = add_client(&redis, "svc", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--redis-timeout", "500ms"])
        .start();
    let mut client = tokend.client().await;
    let pair = login(&mut client, "alice", "pw").await;
    assert_eq!(health(&tokend).await, ServingStatus::Serving);

    redis.stop();
    for _ in 0..3 {
        let login = tokio::time::timeout(NO_HANG, client.login(password_login("alice", "pw")))
            .await
            .expect("login must not hang while Redis is down");
        assert_reason(login, Reason::StoreUnavailable);
        let refreshed = tokio::time::timeout(NO_HANG, refresh(&mut client, &pair.refresh_token))
            .await
            .expect("refresh must not hang while Redis is down");
        assert_reason(refreshed, Reason::StoreUnavailable);
        let client_login =
            tokio::time::timeout(NO_HANG, client.login(client_login("svc", &secret)))
                .await
                .expect("client login must not hang");
        assert_reason(client_login, Reason::StoreUnavailable);
    }
    assert!(
        eventually(NO_HANG, || async {
            health(&tokend).await == ServingStatus::NotServing
        })
        .await,
        "health reports NOT_SERVING while Redis is down"
    );

    // Redis returns (empty: nothing was persisted), the operator re-creates
    // the account; tokend, never restarted, serves again.
    redis.restart();
    add_user(&redis, "alice", "pw", &["read"]);
    let recovered = eventually(NO_HANG, || {
        let mut client = client.clone();
        async move { client.login(password_login("alice", "pw")).await.is_ok() }
    })
    .await;
    assert!(recovered, "tokend recovers without a restart");
    assert!(
        eventually(NO_HANG, || async {
            health(&tokend).await == ServingStatus::Serving
        })
        .await,
        "health reports SERVING again"
    );
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_unavailable_not_a_hang() {
    let (redis, _tokend, mut client) = with_alice(&["--redis-timeout", "300ms"]).await;
    let pair = login(&mut client, "alice", "pw").await;

    // Redis holds every client's commands for 3 s: slow, not down.
    let mut admin = redis.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let refreshed = tokio::time::timeout(NO_HANG, refresh(&mut client, &pair.refresh_token))
        .await
        .expect("refresh must not hang on a stalled Redis");
    assert_reason(refreshed, Reason::StoreUnavailable);

    // Once Redis answers again, so does tokend.
    let recovered = eventually(NO_HANG, || {
        let mut client = client.clone();
        async move { client.login(password_login("alice", "pw")).await.is_ok() }
    })
    .await;
    assert!(recovered);
}

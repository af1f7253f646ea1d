//! Session and token lifetimes on a clock the test moves: tokend runs in
//! process (`spawn_app`) and hours pass in microseconds, with no sleeps and
//! no timing margins. Redis's own key TTLs run on real time; they are
//! checked by the store conformance suite and `expiry.rs`.

use std::time::Duration;

use tokend::config::StoreConfig;
use tokend::store::{RedisConfig, RedisTarget};
use tokend_interceptor::Reason;

use crate::harness::*;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn memory() -> StoreConfig {
    StoreConfig::Memory
}

fn redis(server: &RedisServer) -> StoreConfig {
    StoreConfig::Redis(RedisConfig::new(RedisTarget::Node(server.url())))
}

#[tokio::test]
async fn idle_sessions_expire_and_each_refresh_renews_them() {
    let app = spawn_app_with(memory(), |c| {
        c.lifetimes.refresh_idle = HOUR;
        c.lifetimes.refresh_absolute = 24 * HOUR;
    })
    .await;
    let mut client = app.client().await;
    let mut pair = demo_login(&mut client).await;
    let now = app.clock().now_ms() / 1000;
    let expires = pair.refresh_token_expires_at.expect("reported").seconds;
    assert_eq!(expires, now + 3600, "the idle expiry is reported");

    // Refreshing every 50 minutes keeps it alive for hours.
    for _ in 0..5 {
        app.advance(50 * MINUTE);
        pair = refresh(&mut client, &pair.refresh_token)
            .await
            .expect("renewed in time");
    }
    // An hour and a second without a refresh: gone.
    app.advance(HOUR + Duration::from_secs(1));
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn a_session_lives_exactly_its_idle_lifetime() {
    let app = spawn_app_with(memory(), |c| c.lifetimes.refresh_idle = HOUR).await;
    let mut client = app.client().await;
    let pair = demo_login(&mut client).await;
    app.advance(HOUR - Duration::from_millis(1));
    let pair = refresh(&mut client, &pair.refresh_token)
        .await
        .expect("one millisecond before the end");
    app.advance(HOUR);
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime_however_often_refreshed() {
    let app = spawn_app_with(memory(), |c| {
        c.lifetimes.refresh_idle = HOUR;
        c.lifetimes.refresh_absolute = 3 * HOUR;
    })
    .await;
    let mut client = app.client().await;
    let login_at = app.clock().now_ms() / 1000;
    let mut pair = demo_login(&mut client).await;
    let end = login_at + 3 * 3600;
    for _ in 0..3 {
        app.advance(55 * MINUTE);
        pair = refresh(&mut client, &pair.refresh_token)
            .await
            .expect("inside the lifetime");
        assert!(pair.refresh_token_expires_at.expect("reported").seconds <= end);
        assert!(
            pair.access_token_expires_at.expect("reported").seconds <= end,
            "no access token outlives its session"
        );
    }
    app.advance(16 * MINUTE);
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

/// The grace window is judged by the time tokend passes to the store, so
/// it runs on the moved clock on Redis too.
async fn grace_window_then_reuse(store: StoreConfig, user: (&str, &str)) {
    let app = spawn_app_with(store, |c| c.lifetimes.reuse_grace = Duration::from_secs(10)).await;
    let mut client = app.client().await;
    let first = login(&mut client, user.0, user.1).await;
    let second = refresh(&mut client, &first.refresh_token)
        .await
        .expect("rotates");
    app.advance(Duration::from_millis(9_999));
    let retried = refresh(&mut client, &first.refresh_token)
        .await
        .expect("inside the window");
    assert_eq!(retried.refresh_token, second.refresh_token);

    app.advance(Duration::from_millis(2));
    assert_reason(
        refresh(&mut client, &first.refresh_token).await,
        Reason::RefreshTokenReused,
    );
    assert_reason(
        refresh(&mut client, &second.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn after_the_grace_window_a_replay_is_reuse_in_memory() {
    grace_window_then_reuse(memory(), ("demo", "demo-password")).await;
}

#[tokio::test]
async fn after_the_grace_window_a_replay_is_reuse_on_redis() {
    let server = RedisServer::start();
    add_user(&server, "alice", "pw", &["read"]);
    grace_window_then_reuse(redis(&server), ("alice", "pw")).await;
}

#[tokio::test]
async fn tokends_own_session_rpcs_refuse_an_expired_access_token() {
    let app = spawn_app_with(memory(), |c| c.lifetimes.access = 15 * MINUTE).await;
    let mut client = app.client().await;
    let pair = login_for_tokend(&mut client, "demo", "demo-password").await;
    let list = |token: String| {
        let mut client = client.clone();
        async move {
            client
                .list_sessions(with_bearer(
                    tokend::proto::tokend::v1::ListSessionsRequest::default(),
                    &token,
                ))
                .await
        }
    };
    app.advance(15 * MINUTE);
    list(pair.access_token.clone())
        .await
        .expect("valid up to its expiry (and the leeway)");
    app.advance(MINUTE);
    assert_reason(
        list(pair.access_token.clone()).await,
        Reason::AccessTokenExpired,
    );
    // The refresh token still works and brings a fresh access token.
    let fresh = refresh(&mut client.clone(), &pair.refresh_token)
        .await
        .expect("refreshes");
    list(fresh.access_token).await.expect("the new token works");
}

#[tokio::test]
async fn access_tokens_are_stamped_with_tokends_clock() {
    let app = spawn_app_with(memory(), |c| c.lifetimes.access = 10 * MINUTE).await;
    app.advance(24 * HOUR);
    let mut client = app.client().await;
    let pair = demo_login(&mut client).await;
    let now = app.clock().now_ms() / 1000;
    let expires = pair.access_token_expires_at.expect("reported").seconds;
    assert!(
        (now + 600..=now + 601).contains(&expires),
        "{expires} is ten minutes after {now}, by tokend's clock"
    );
}

#[tokio::test]
async fn a_server_stopped_in_process_stops_serving() {
    let app = spawn_app(memory()).await;
    let addr = app.addr;
    let mut client = app.client().await;
    demo_login(&mut client).await;
    drop(client);
    app.shutdown().await.expect("a clean stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens any more"
    );
}

//! Revoke: RFC 7009 semantics, and no race with Refresh.

use tokend_interceptor::Reason;

use crate::harness::*;

#[tokio::test]
async fn revoke_is_idempotent() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&[]).await;

    let pair = login(&mut client, "alice", "pw").await;
    revoke(&mut client, &pair.refresh_token)
        .await
        .expect("revoke");
    revoke(&mut client, &pair.refresh_token)
        .await
        .expect("revoke twice");
    revoke(&mut client, "garbage").await.expect("garbage");
    revoke(&mut client, "🦀 not a token")
        .await
        .expect("non-ASCII garbage");
    let unknown = format!("tkd_rt_{}.{}", "B".repeat(22), "C".repeat(42) + "A");
    revoke(&mut client, &unknown)
        .await
        .expect("well-formed but unknown");
    assert_reason(revoke(&mut client, "").await, Reason::InvalidRequest);
}

#[tokio::test]
async fn a_revoked_session_cannot_refresh() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&[]).await;

    let pair = login(&mut client, "alice", "pw").await;
    let other = login(&mut client, "alice", "pw").await;
    revoke(&mut client, &pair.refresh_token).await.unwrap();
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    // Only that session ended.
    refresh(&mut client, &other.refresh_token)
        .await
        .expect("other session lives");
}

#[tokio::test]
async fn revoking_with_a_consumed_token_ends_the_session() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&[]).await;

    let first = login(&mut client, "alice", "pw").await;
    let second = refresh(&mut client, &first.refresh_token).await.unwrap();
    revoke(&mut client, &first.refresh_token).await.unwrap();
    assert_reason(
        refresh(&mut client, &second.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn revoke_racing_refresh_never_leaves_a_live_token() {
    let (_redis, tokend, mut client) = with_alice(&[]).await;

    for _ in 0..20 {
        let pair = login(&mut client, "alice", "pw").await;
        let (mut a, mut b) = (client.clone(), tokend.client().await);
        let (t1, t2) = (pair.refresh_token.clone(), pair.refresh_token.clone());
        let (refreshed, revoked) =
            tokio::join!(async move { refresh(&mut a, &t1).await }, async move {
                revoke(&mut b, &t2).await
            },);
        revoked.expect("revoke always answers OK");
        if let Ok(successor) = refreshed {
            assert_reason(
                refresh(&mut client, &successor.refresh_token).await,
                Reason::RefreshTokenInvalid,
            );
        }
        assert_reason(
            refresh(&mut client, &pair.refresh_token).await,
            Reason::RefreshTokenInvalid,
        );
    }
}

//! Refresh: rotation, reuse detection, the grace window, concurrency.

use std::collections::HashSet;

use tokend_interceptor::Reason;
use tokio::task::JoinSet;

use crate::harness::*;

#[tokio::test]
async fn refresh_rotates_the_token_within_the_session() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&[]).await;

    let first = login(&mut client, "alice", "pw").await;
    let second = refresh(&mut client, &first.refresh_token)
        .await
        .expect("refresh");
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.token_type, "Bearer");
    assert!(second.refresh_token_expires_at.is_some());

    let third = refresh(&mut client, &second.refresh_token)
        .await
        .expect("refresh again");
    assert_eq!(third.session_id, first.session_id);
    let claims = crate::login::verify_with_published_key(&mut client, &third.access_token).await;
    assert_eq!(claims.sid(), Some(first.session_id.as_str()));
    assert_eq!(claims.sub(), "alice");
}

#[tokio::test]
async fn replaying_the_previous_token_revokes_the_session() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&[]).await;

    let first = login(&mut client, "alice", "pw").await;
    let second = refresh(&mut client, &first.refresh_token).await.unwrap();
    assert_reason(
        refresh(&mut client, &first.refresh_token).await,
        Reason::RefreshTokenReused,
    );
    // The newest token died with the session.
    assert_reason(
        refresh(&mut client, &second.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    // The reused token again (a retry whose answer was lost) is told the
    // same: the session's end is remembered, and announced again.
    assert_reason(
        refresh(&mut client, &first.refresh_token).await,
        Reason::RefreshTokenReused,
    );
}

#[tokio::test]
async fn replaying_an_older_token_revokes_the_session() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&[]).await;

    let mut chain = vec![login(&mut client, "alice", "pw").await];
    for _ in 0..5 {
        let last = chain.last().unwrap().refresh_token.clone();
        chain.push(refresh(&mut client, &last).await.unwrap());
    }
    // A token four generations old, as a thief who waited would present it.
    assert_reason(
        refresh(&mut client, &chain[1].refresh_token).await,
        Reason::RefreshTokenReused,
    );
    let newest = &chain.last().unwrap().refresh_token;
    assert_reason(
        refresh(&mut client, newest).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn a_forged_token_for_a_real_session_changes_nothing() {
    let (_redis, _tokend, mut client) = with_alice_in_process(&[]).await;

    let pair = login(&mut client, "alice", "pw").await;
    // Same session id, a secret of the right shape that was never issued.
    let forged = format!("tkd_rt_{}.{}", pair.session_id, "A".repeat(42) + "g");
    assert_eq!(forged.len(), pair.refresh_token.len());
    assert_reason(
        refresh(&mut client, &forged).await,
        Reason::RefreshTokenInvalid,
    );
    revoke(&mut client, &forged)
        .await
        .expect("revoke answers OK");
    // The real session is untouched by either.
    refresh(&mut client, &pair.refresh_token)
        .await
        .expect("the real token still works");

    for garbage in [
        "garbage",
        "tkd_rt_",
        "v4.public.abc",
        "tkd_rt_short.token",
        "🦀🦀🦀",
    ] {
        assert_reason(
            refresh(&mut client, garbage).await,
            Reason::RefreshTokenInvalid,
        );
    }
}

#[tokio::test]
async fn within_the_grace_window_concurrent_retries_get_the_same_successor() {
    let (_redis, tokend, mut client) = with_alice(&["--refresh-reuse-grace", "30s"]).await;
    let first = login(&mut client, "alice", "pw").await;

    let mut calls = JoinSet::new();
    for i in 0..24 {
        // Several connections, as retries from a flaky network would arrive.
        let mut client = if i % 3 == 0 {
            tokend.client().await
        } else {
            client.clone()
        };
        let token = first.refresh_token.clone();
        calls.spawn(async move { refresh(&mut client, &token).await });
    }
    let mut successors = HashSet::new();
    while let Some(result) = calls.join_next().await {
        let pair = result
            .unwrap()
            .expect("every retry inside the window succeeds");
        assert_eq!(pair.session_id, first.session_id);
        successors.insert(pair.refresh_token);
    }
    assert_eq!(successors.len(), 1, "one successor for all retries");
    let successor = successors.into_iter().next().unwrap();
    assert_ne!(successor, first.refresh_token);

    // The successor works; after it is consumed, the original (consumed
    // inside the window, rotated past since) is a late duplicate of a call
    // its caller gave up on: it yields nothing and ends nothing. (Past the
    // window it is reuse: the store's conformance cases, on a controlled
    // clock.)
    let third = refresh(&mut client, &successor)
        .await
        .expect("successor works");
    assert_reason(
        refresh(&mut client, &first.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    refresh(&mut client, &third.refresh_token)
        .await
        .expect("the session stands");
}

#[tokio::test]
async fn strict_rotation_under_concurrency_leaves_at_most_one_successor() {
    let (_redis, tokend, mut client) = with_alice(&[]).await;

    for _round in 0..5 {
        let first = login(&mut client, "alice", "pw").await;
        let mut calls = JoinSet::new();
        for i in 0..32 {
            let mut client = if i % 4 == 0 {
                tokend.client().await
            } else {
                client.clone()
            };
            let token = first.refresh_token.clone();
            calls.spawn(async move { refresh(&mut client, &token).await });
        }
        let mut successors = Vec::new();
        let mut reused = 0;
        while let Some(result) = calls.join_next().await {
            match result.unwrap() {
                Ok(pair) => successors.push(pair.refresh_token),
                Err(status) => {
                    let r = reason(&status);
                    // A reuse repeated while another repeat announces the
                    // session's end is told to come back (STORE_UNAVAILABLE).
                    assert!(
                        matches!(
                            r,
                            Some(
                                Reason::RefreshTokenReused
                                    | Reason::RefreshTokenInvalid
                                    | Reason::StoreUnavailable
                            )
                        ),
                        "unexpected failure {status:?}"
                    );
                    if r == Some(Reason::RefreshTokenReused) {
                        reused += 1;
                    }
                }
            }
        }
        assert!(
            successors.len() <= 1,
            "{} successors of one token",
            successors.len()
        );
        assert!(reused >= 1, "concurrent replays were detected");
        // Reuse revoked the session, so even the one successor is dead.
        for successor in successors {
            assert_reason(
                refresh(&mut client, &successor).await,
                Reason::RefreshTokenInvalid,
            );
        }
    }
}

/// As shipped (no `--refresh-reuse-grace`), a Refresh retried with the same
/// token, as a client does after STORE_UNAVAILABLE or a lost answer, gets the
/// same successor and keeps the session; the token before it, presented
/// again inside the window after the session rotated past it, is a late
/// duplicate (a call its caller gave up on) and ends nothing. (Past the
/// window it is a theft alarm: the store's conformance cases.)
#[tokio::test]
async fn as_shipped_a_retried_refresh_keeps_the_session() {
    let tokend = Tokend::builder()
        .shipped_reuse_grace()
        .args(["--dev"])
        .start();
    let mut client = tokend.client().await;
    let first = login(&mut client, "demo", "demo-password").await;
    let second = refresh(&mut client, &first.refresh_token)
        .await
        .expect("refresh");
    let retried = refresh(&mut client, &first.refresh_token)
        .await
        .expect("a retry inside the shipped window");
    assert_eq!(retried.refresh_token, second.refresh_token);
    let third = refresh(&mut client, &second.refresh_token)
        .await
        .expect("the session lives on");
    assert_reason(
        refresh(&mut client, &first.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    refresh(&mut client, &third.refresh_token)
        .await
        .expect("the late duplicate ended nothing");
}

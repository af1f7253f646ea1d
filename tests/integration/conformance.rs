//! One conformance suite for both stores, so the embedded store used by
//! `make run` cannot drift from Redis. Each case runs twice: against a
//! `MemoryStore` and against a `RedisStore` on a real `redis-server`.

use std::time::Duration;

use tokend::store::{
    CONSUMED_LOG_CAP, ClientRecord, FeedEvent, MemoryStore, NewSession, RedisStore, Revocation,
    Rotate, Rotation, SessionGrant, Store, UserRecord, parse_cursor,
};
use tokend::tokens::RefreshToken;
use tokend::tokens::refresh::new_session_id;

use crate::harness::RedisServer;

const HOUR_MS: i64 = 3_600_000;

/// A session in a store, with the token that is current.
struct Session {
    id: String,
    token: RefreshToken,
    grant: SessionGrant,
}

async fn start_session(store: &Store, now: i64, idle_ms: i64, absolute_ms: i64) -> Session {
    start_session_of(store, "alice", now, idle_ms, absolute_ms).await
}

async fn start_session_of(
    store: &Store,
    subject: &str,
    now: i64,
    idle_ms: i64,
    absolute_ms: i64,
) -> Session {
    // Sessions are indexed under their user's account, which the CLI creates.
    if store.user(subject).await.unwrap().is_none() {
        let user = UserRecord {
            password_hash: "$argon2id$...".into(),
            scope: "read write".into(),
            disabled: false,
        };
        store.put_user(subject, &user).await.unwrap();
    }
    let id = new_session_id();
    let token = RefreshToken::generate(&id);
    let grant = SessionGrant {
        subject: subject.into(),
        scope: "read write".into(),
        audience: "internal".into(),
        created_ms: now,
        absolute_expiry_ms: now + absolute_ms,
    };
    let created = store
        .create_session(&NewSession {
            session_id: &id,
            grant: &grant,
            client: "conformance/1.0",
            token: token.hash(),
            idle_ttl_ms: idle_ms,
        })
        .await
        .unwrap();
    assert!(created);
    Session { id, token, grant }
}

/// Presents `presented` at `now`; returns the outcome and the successor offered.
async fn rotate(
    store: &Store,
    presented: &RefreshToken,
    now: i64,
    grace_ms: i64,
) -> (Rotation, RefreshToken) {
    let successor = RefreshToken::generate(presented.session_id());
    let rotation = store
        .rotate(&Rotate {
            session_id: presented.session_id(),
            presented: presented.hash(),
            successor: successor.hash(),
            sealed_successor: presented.seal_successor(&successor),
            now_ms: now,
            idle_ttl_ms: HOUR_MS,
            grace_ms,
        })
        .await
        .unwrap();
    (rotation, successor)
}

async fn accounts_round_trip(store: Store) {
    assert_eq!(store.user("alice").await.unwrap(), None);
    // A password change keeps the user's sessions listed.
    let now = tokend::now_ms();
    let before = UserRecord {
        password_hash: "$argon2id$old".into(),
        scope: "read".into(),
        disabled: false,
    };
    store.put_user("carol", &before).await.unwrap();
    let session = start_session_of(&store, "carol", now, HOUR_MS, 24 * HOUR_MS).await;
    let changed = UserRecord {
        password_hash: "$argon2id$new".into(),
        ..before
    };
    store.put_user("carol", &changed).await.unwrap();
    assert_eq!(store.user("carol").await.unwrap(), Some(changed));
    let listed = store.list_sessions("carol").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, session.id);
    let user = UserRecord {
        password_hash: "$argon2id$v=19$...".into(),
        scope: "read".into(),
        disabled: false,
    };
    store.put_user("alice", &user).await.unwrap();
    assert_eq!(store.user("alice").await.unwrap(), Some(user));

    assert_eq!(store.client("svc").await.unwrap(), None);
    let client = ClientRecord {
        secret_digest: [7u8; 32],
        scope: "read write".into(),
    };
    store.put_client("svc", &client).await.unwrap();
    assert_eq!(store.client("svc").await.unwrap(), Some(client.clone()));
    let replaced = ClientRecord {
        secret_digest: [9u8; 32],
        scope: String::new(),
    };
    store.put_client("svc", &replaced).await.unwrap();
    assert_eq!(store.client("svc").await.unwrap(), Some(replaced));
    store.ping().await.unwrap();
}

async fn rotation_chains_within_a_session(store: Store) {
    let now = tokend::now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let (first, successor) = rotate(&store, &session.token, now + 1, 0).await;
    assert_eq!(first, Rotation::Rotated(session.grant.clone()));
    let (second, _) = rotate(&store, &successor, now + 2, 0).await;
    assert_eq!(second, Rotation::Rotated(session.grant.clone()));
}

async fn replaying_the_previous_token_is_reuse_and_kills_the_session(store: Store) {
    let now = tokend::now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let (_, successor) = rotate(&store, &session.token, now + 1, 0).await;
    let (replay, _) = rotate(&store, &session.token, now + 2, 0).await;
    assert_eq!(
        replay,
        Rotation::Reused {
            subject: "alice".into()
        }
    );
    let (after, _) = rotate(&store, &successor, now + 3, 0).await;
    assert_eq!(after, Rotation::Invalid);
}

async fn replaying_an_older_token_is_reuse(store: Store) {
    let now = tokend::now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let mut chain = vec![session.token.clone()];
    for i in 0..10 {
        let (outcome, next) = rotate(&store, chain.last().unwrap(), now + i, 0).await;
        assert!(matches!(outcome, Rotation::Rotated(_)));
        chain.push(next);
    }
    let (replay, _) = rotate(&store, &chain[3], now + 20, 0).await;
    assert!(matches!(replay, Rotation::Reused { .. }));
    let (after, _) = rotate(&store, chain.last().unwrap(), now + 21, 0).await;
    assert_eq!(after, Rotation::Invalid);
}

async fn the_consumed_log_is_capped(store: Store) {
    let now = tokend::now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let mut chain = vec![session.token.clone()];
    let generations = CONSUMED_LOG_CAP as i64 + 6;
    for i in 0..generations {
        let (outcome, next) = rotate(&store, chain.last().unwrap(), now + i, 0).await;
        assert!(matches!(outcome, Rotation::Rotated(_)));
        chain.push(next);
    }
    // The oldest tokens fell out of the log: unknown, and the session lives on.
    let (forgotten, _) = rotate(&store, &chain[0], now + 100, 0).await;
    assert_eq!(forgotten, Rotation::Invalid);
    let newest = chain.last().unwrap().clone();
    let (alive, next) = rotate(&store, &newest, now + 101, 0).await;
    assert!(matches!(alive, Rotation::Rotated(_)));
    // A token still in the log is recognised.
    let recent = &chain[chain.len() - 3];
    let (replay, _) = rotate(&store, recent, now + 102, 0).await;
    assert!(matches!(replay, Rotation::Reused { .. }));
    let (after, _) = rotate(&store, &next, now + 103, 0).await;
    assert_eq!(after, Rotation::Invalid);
}

async fn the_grace_window_replays_the_same_successor(store: Store) {
    let now = tokend::now_ms();
    let grace = 10_000;
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let (first, successor) = rotate(&store, &session.token, now, grace).await;
    assert!(matches!(first, Rotation::Rotated(_)));
    for offset in [1, 5_000, grace - 1] {
        let (replay, _) = rotate(&store, &session.token, now + offset, grace).await;
        let Rotation::Replayed {
            grant,
            sealed_successor,
            current,
        } = replay
        else {
            panic!("expected a replay, got {replay:?}")
        };
        assert_eq!(grant, session.grant);
        assert_eq!(current, successor.hash());
        assert_eq!(session.token.open_successor(&sealed_successor), successor);
    }
    // At the end of the window the replay is reuse.
    let (late, _) = rotate(&store, &session.token, now + grace, grace).await;
    assert!(matches!(late, Rotation::Reused { .. }));
}

async fn the_grace_window_covers_only_the_latest_rotation(store: Store) {
    let now = tokend::now_ms();
    let grace = 60_000;
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let (_, second) = rotate(&store, &session.token, now, grace).await;
    let (_, _third) = rotate(&store, &second, now + 1, grace).await;
    // The first token is two rotations old: reuse, even inside the window.
    let (replay, _) = rotate(&store, &session.token, now + 2, grace).await;
    assert!(matches!(replay, Rotation::Reused { .. }));
}

async fn the_wrong_token_for_a_session_changes_nothing(store: Store) {
    let now = tokend::now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let stranger = RefreshToken::generate(&session.id);
    let (outcome, _) = rotate(&store, &stranger, now, 0).await;
    assert_eq!(outcome, Rotation::Invalid);
    assert_eq!(
        store.revoke(&session.id, stranger.hash()).await.unwrap(),
        Revocation::Unknown
    );
    let (real, _) = rotate(&store, &session.token, now + 1, 0).await;
    assert!(matches!(real, Rotation::Rotated(_)));

    let nobody = RefreshToken::generate(&new_session_id());
    let (outcome, _) = rotate(&store, &nobody, now, 0).await;
    assert_eq!(outcome, Rotation::Invalid);
}

async fn revoke_accepts_current_previous_and_older_tokens(store: Store) {
    let now = tokend::now_ms();
    for generation in 0..3usize {
        let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
        let mut chain = vec![session.token.clone()];
        for i in 0..3 {
            let (_, next) = rotate(&store, chain.last().unwrap(), now + i, 0).await;
            chain.push(next);
        }
        // Current, just consumed, older.
        let presented = &chain[chain.len() - 1 - generation];
        assert_eq!(
            store.revoke(&session.id, presented.hash()).await.unwrap(),
            Revocation::Revoked {
                subject: "alice".into()
            }
        );
        assert_eq!(
            store.revoke(&session.id, presented.hash()).await.unwrap(),
            Revocation::Unknown
        );
        let (after, _) = rotate(&store, chain.last().unwrap(), now + 10, 0).await;
        assert_eq!(after, Rotation::Invalid);
    }
}

async fn the_absolute_lifetime_ends_a_session(store: Store) {
    let now = tokend::now_ms();
    let session = start_session(&store, now, HOUR_MS, 60_000).await;
    let (inside, next) = rotate(&store, &session.token, now + 59_999, 0).await;
    assert!(matches!(inside, Rotation::Rotated(_)));
    let (after, _) = rotate(&store, &next, now + 60_000, 0).await;
    assert_eq!(after, Rotation::Invalid);
}

async fn the_idle_lifetime_ends_a_session(store: Store) {
    let now = tokend::now_ms();
    let session = start_session(&store, now, 1000, HOUR_MS).await;
    let idle_one = start_session(&store, now, 1000, HOUR_MS).await;
    // Real time passes: the idle lifetime is a TTL in Redis.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (renewed, next) = rotate_with_idle(&store, &session.token, 1000).await;
    assert!(matches!(renewed, Rotation::Rotated(_)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    // 1.3 s after creation: the renewed session lives, the idle one is gone.
    let (alive, _) = rotate_with_idle(&store, &next, 1000).await;
    assert!(matches!(alive, Rotation::Rotated(_)), "{alive:?}");
    let (gone, _) = rotate_with_idle(&store, &idle_one.token, 1000).await;
    assert_eq!(gone, Rotation::Invalid);
}

async fn rotate_with_idle(
    store: &Store,
    presented: &RefreshToken,
    idle_ms: i64,
) -> (Rotation, RefreshToken) {
    let successor = RefreshToken::generate(presented.session_id());
    let rotation = store
        .rotate(&Rotate {
            session_id: presented.session_id(),
            presented: presented.hash(),
            successor: successor.hash(),
            sealed_successor: presented.seal_successor(&successor),
            now_ms: tokend::now_ms(),
            idle_ttl_ms: idle_ms,
            grace_ms: 0,
        })
        .await
        .unwrap();
    (rotation, successor)
}

async fn concurrent_rotations_leave_at_most_one_successor(store: Store) {
    let now = tokend::now_ms();
    for grace in [0, 30_000] {
        let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let store = store.clone();
            let token = session.token.clone();
            tasks.spawn(async move { rotate(&store, &token, now + 1, grace).await });
        }
        let mut rotated = Vec::new();
        let mut replayed = Vec::new();
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                (Rotation::Rotated(_), successor) => rotated.push(successor),
                (
                    Rotation::Replayed {
                        sealed_successor, ..
                    },
                    _,
                ) => replayed.push(session.token.open_successor(&sealed_successor)),
                _ => {}
            }
        }
        assert_eq!(
            rotated.len(),
            1,
            "exactly one rotation wins (grace {grace})"
        );
        if grace > 0 {
            assert_eq!(replayed.len(), 15);
            assert!(replayed.iter().all(|r| *r == rotated[0]));
        } else {
            assert!(replayed.is_empty());
        }
    }
}

async fn sessions_are_listed_and_ended_only_by_their_owner(store: Store) {
    let now = tokend::now_ms();
    let a1 = start_session_of(&store, "alice", now, HOUR_MS, 24 * HOUR_MS).await;
    let a2 = start_session_of(&store, "alice", now + 1, HOUR_MS, 24 * HOUR_MS).await;
    let b = start_session_of(&store, "bob", now, HOUR_MS, 24 * HOUR_MS).await;

    let listed = store.list_sessions("alice").await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [a1.id.as_str(), a2.id.as_str()], "oldest first");
    assert_eq!(listed[0].client, "conformance/1.0");
    assert_eq!(listed[0].grant, a1.grant);
    assert_eq!(
        listed[0].refreshed_ms, now,
        "not refreshed yet: the creation time"
    );
    assert!(listed[0].idle_expiry_ms > now && listed[0].idle_expiry_ms <= now + HOUR_MS + 1000);

    // A refresh shows up as the last refresh.
    let (_, next) = rotate(&store, &a1.token, now + 5, 0).await;
    let listed = store.list_sessions("alice").await.unwrap();
    assert_eq!(listed[0].refreshed_ms, now + 5);
    let _ = next;

    assert!(!store.end_session_of(&a1.id, "bob").await.unwrap());
    assert!(store.session_exists(&a1.id).await.unwrap());
    assert!(store.end_session_of(&a1.id, "alice").await.unwrap());
    assert!(!store.session_exists(&a1.id).await.unwrap());
    assert!(!store.end_session_of(&a1.id, "alice").await.unwrap());
    assert_eq!(store.list_sessions("alice").await.unwrap().len(), 1);

    let ended = store.end_sessions_of("alice").await.unwrap();
    assert_eq!(ended, std::slice::from_ref(&a2.id));
    assert!(store.list_sessions("alice").await.unwrap().is_empty());
    assert!(store.session_exists(&b.id).await.unwrap());
    assert_eq!(store.list_sessions("nobody").await.unwrap(), []);
}

async fn a_disabled_user_gets_no_new_session(store: Store) {
    let now = tokend::now_ms();
    start_session_of(&store, "dave", now, HOUR_MS, 24 * HOUR_MS).await;
    assert!(store.set_user_disabled("dave", true).await.unwrap());
    let id = new_session_id();
    let token = RefreshToken::generate(&id);
    let grant = SessionGrant {
        subject: "dave".into(),
        scope: "read".into(),
        audience: "internal".into(),
        created_ms: now,
        absolute_expiry_ms: now + HOUR_MS,
    };
    let created = store
        .create_session(&NewSession {
            session_id: &id,
            grant: &grant,
            client: "",
            token: token.hash(),
            idle_ttl_ms: HOUR_MS,
        })
        .await
        .unwrap();
    assert!(!created, "a login racing `user disable` keeps nothing");
    assert!(!store.session_exists(&id).await.unwrap());
    let (outcome, _) = rotate(&store, &token, now + 1, 0).await;
    assert_eq!(outcome, Rotation::Invalid);
}

async fn users_can_be_disabled_and_enabled(store: Store) {
    assert!(!store.set_user_disabled("alice", true).await.unwrap());
    let user = UserRecord {
        password_hash: "$argon2id$...".into(),
        scope: "read".into(),
        disabled: false,
    };
    store.put_user("alice", &user).await.unwrap();
    assert!(store.set_user_disabled("alice", true).await.unwrap());
    assert!(store.user("alice").await.unwrap().unwrap().disabled);
    assert!(store.set_user_disabled("alice", false).await.unwrap());
    assert_eq!(store.user("alice").await.unwrap(), Some(user));
}

async fn the_revocation_feed_keeps_order_and_resumes(store: Store) {
    let now = tokend::now_ms();
    let mut follower = store.feed_follower().await.unwrap();
    let session = FeedEvent::Session {
        session_id: "s1".into(),
    };
    let subject = FeedEvent::Subject {
        subject: "alice".into(),
        not_before_s: now / 1000,
    };
    let first = store
        .publish_revocation(&session, now, now + 60_000)
        .await
        .unwrap();
    let second = store
        .publish_revocation(&subject, now, now + 60_000)
        .await
        .unwrap();
    assert!(
        parse_cursor(&second) > parse_cursor(&first),
        "{first} < {second}"
    );

    let all = store.revocations_after(None, 100).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].event, session);
    assert_eq!(all[0].cursor, first);
    assert_eq!((all[0].at_ms, all[0].until_ms), (now, now + 60_000));
    assert_eq!(all[1].event, subject);
    let after_first = store.revocations_after(Some(&first), 100).await.unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].cursor, second);
    assert!(
        store
            .revocations_after(Some(&second), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.revocations_after(None, 1).await.unwrap().len(), 1);

    // A follower created before the appends sees both, in order.
    let followed = follower.next().await.unwrap();
    let cursors: Vec<&str> = followed.iter().map(|e| e.cursor.as_str()).collect();
    assert_eq!(cursors, [first.as_str(), second.as_str()]);
    // And then what comes next.
    let third = store
        .publish_revocation(&session, now, now + 60_000)
        .await
        .unwrap();
    let followed = follower.next().await.unwrap();
    assert_eq!(followed.len(), 1);
    assert_eq!(followed[0].cursor, third);
}

/// Generates one test per store for each case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(tokend::store::Store::Memory(super::MemoryStore::new())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let server = super::RedisServer::start();
                    let store = super::RedisStore::connect(
                        &server.url(),
                        "conformance",
                        std::time::Duration::from_secs(2),
                    )
                    .await
                    .unwrap();
                    super::$case(tokend::store::Store::Redis(Box::new(store))).await;
                }
            )*
        }
    };
}

conformance!(
    accounts_round_trip,
    rotation_chains_within_a_session,
    replaying_the_previous_token_is_reuse_and_kills_the_session,
    replaying_an_older_token_is_reuse,
    the_consumed_log_is_capped,
    the_grace_window_replays_the_same_successor,
    the_grace_window_covers_only_the_latest_rotation,
    the_wrong_token_for_a_session_changes_nothing,
    revoke_accepts_current_previous_and_older_tokens,
    the_absolute_lifetime_ends_a_session,
    the_idle_lifetime_ends_a_session,
    concurrent_rotations_leave_at_most_one_successor,
    sessions_are_listed_and_ended_only_by_their_owner,
    users_can_be_disabled_and_enabled,
    a_disabled_user_gets_no_new_session,
    the_revocation_feed_keeps_order_and_resumes,
);

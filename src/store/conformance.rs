//! One conformance suite for both stores, so the embedded store used by
//! `make run` cannot drift from Redis, and any future store must pass it.
//! Each case runs twice: against a `MemoryStore` (no Redis needed) and
//! against a `RedisStore` on a real `redis-server` of its own.

use std::time::Duration;

use super::*;
use crate::tokens::RefreshToken;
use crate::tokens::refresh::new_session_id;

const HOUR_MS: i64 = 3_600_000;

/// A session in a store, with the token that is current.
struct Session {
    id: String,
    token: RefreshToken,
    grant: SessionGrant,
}

/// Creates the user `name` (if missing) and returns its account version.
async fn user(store: &Store, name: &str) -> i64 {
    if let Some(user) = store.user(name).await.unwrap() {
        return user.version;
    }
    let account = NewAccount::User {
        password_hash: "$argon2id$...",
    };
    store
        .create_account(name, account, "read write")
        .await
        .unwrap()
        .expect("created")
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
    let version = user(store, subject).await;
    let id = new_session_id();
    let token = RefreshToken::generate(&id);
    let grant = SessionGrant {
        subject: subject.into(),
        scope: "read write".into(),
        audience: "internal".into(),
        created_ms: now,
        absolute_expiry_ms: now + absolute_ms,
        account_version: version,
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
    assert!(matches!(created, SessionCreated::Listed(_)), "{created:?}");
    Session { id, token, grant }
}

/// Presents `presented` at `now`; returns the outcome and the successor offered.
async fn rotate(
    store: &Store,
    presented: &RefreshToken,
    now: i64,
    grace_ms: i64,
) -> (Rotation, RefreshToken) {
    let (rotation, successor) = try_rotate(store, presented, now, grace_ms).await;
    (rotation.unwrap(), successor)
}

/// [`rotate`], which may fail.
async fn try_rotate(
    store: &Store,
    presented: &RefreshToken,
    now: i64,
    grace_ms: i64,
) -> (Result<Rotation, StoreError>, RefreshToken) {
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
        .await;
    (rotation, successor)
}

/// Asserts that a call was refused as unavailable (for its caller to
/// retry).
fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

async fn accounts_are_created_once_and_changed_atomically(store: Store) {
    assert_eq!(store.user("alice").await.unwrap(), None);
    let before = store.clock().now_us();
    let user_account = NewAccount::User {
        password_hash: "$argon2id$old",
    };
    let version = store
        .create_account("alice", user_account, "read write")
        .await
        .unwrap()
        .expect("created");
    assert!(version >= before, "versions start at the time of creation");
    // Never overwritten.
    let again = NewAccount::User {
        password_hash: "$argon2id$other",
    };
    assert_eq!(
        store.create_account("alice", again, "admin").await.unwrap(),
        None
    );
    let alice = store.user("alice").await.unwrap().unwrap();
    assert_eq!(
        alice,
        UserRecord {
            password_hash: "$argon2id$old".into(),
            scope: "read write".into(),
            disabled: false,
            deleting: false,
            version,
            created_ms: alice.created_ms,
        }
    );
    assert!(
        alice.created_ms >= before / 1000 && alice.created_ms <= store.clock().now_ms(),
        "the creation time is kept: {}",
        alice.created_ms
    );

    // Scopes and enabling keep the version; cut-offs raise it, always.
    let kind = AccountKind::User;
    let change = |c| store.change_account(kind, "alice", c);
    assert_eq!(
        change(AccountChange::Scopes("read")).await.unwrap(),
        Some(version)
    );
    let v1 = change(AccountChange::Password("$argon2id$new"))
        .await
        .unwrap()
        .unwrap();
    let v2 = change(AccountChange::CutOff).await.unwrap().unwrap();
    let v3 = change(AccountChange::Disable).await.unwrap().unwrap();
    assert!(
        version < v1 && v1 < v2 && v2 < v3,
        "{version} {v1} {v2} {v3}"
    );
    assert_eq!(change(AccountChange::Enable).await.unwrap(), Some(v3));
    let alice = store.user("alice").await.unwrap().unwrap();
    assert_eq!(alice.password_hash, "$argon2id$new");
    assert_eq!(alice.scope, "read");
    assert!(alice.active());
    assert_eq!(
        store.account(kind, "alice").await.unwrap(),
        Some(AccountState {
            scope: "read".into(),
            version: v3,
            active: true,
            cert_identities: Vec::new(),
        })
    );
    // Secrets are for clients.
    assert_eq!(change(AccountChange::Secret(&[1; 32])).await.unwrap(), None);

    // Deleting: refused like a disabled user; only deleting again works.
    let v4 = change(AccountChange::Delete).await.unwrap().unwrap();
    assert!(v4 > v3);
    assert!(!store.user("alice").await.unwrap().unwrap().active());
    assert_eq!(change(AccountChange::Enable).await.unwrap(), None);
    assert!(change(AccountChange::Delete).await.unwrap().unwrap() > v4);
    store.remove_account(kind, "alice").await.unwrap();
    assert_eq!(store.user("alice").await.unwrap(), None);
    assert_eq!(change(AccountChange::CutOff).await.unwrap(), None);
    // Created again under the same name: above every old version.
    let reborn = NewAccount::User {
        password_hash: "$argon2id$x",
    };
    let v5 = store
        .create_account("alice", reborn, "")
        .await
        .unwrap()
        .unwrap();
    assert!(v5 > v4);

    // Clients.
    assert_eq!(store.client("svc").await.unwrap(), None);
    let identities = ["spiffe://prod.example/ns/pay/sa/svc".to_owned()];
    let client_account = NewAccount::Client {
        secret_digest: &[7; 32],
        require_cert: true,
        cert_identities: &identities,
    };
    let cv = store
        .create_account("svc", client_account, "read")
        .await
        .unwrap()
        .unwrap();
    let ckind = AccountKind::Client;
    let svc = store.client("svc").await.unwrap().unwrap();
    assert!(svc.created_ms > 0, "the creation time is kept");
    assert_eq!(
        svc,
        ClientRecord {
            secret_digest: [7; 32],
            scope: "read".into(),
            version: cv,
            require_cert: true,
            disabled: false,
            cert_identities: identities.to_vec(),
            created_ms: svc.created_ms,
        }
    );
    // New identities are a cut-off, and users have none.
    let replaced = ["svc.pay.example".to_owned(), "spiffe://x/svc".to_owned()];
    let cv1 = store
        .change_account(ckind, "svc", AccountChange::CertIdentities(&replaced))
        .await
        .unwrap()
        .unwrap();
    assert!(cv1 > cv);
    assert_eq!(
        store
            .account(ckind, "svc")
            .await
            .unwrap()
            .unwrap()
            .cert_identities,
        replaced
    );
    assert_eq!(
        store
            .change_account(kind, "alice", AccountChange::CertIdentities(&replaced))
            .await
            .unwrap(),
        None
    );
    let cv2 = store
        .change_account(ckind, "svc", AccountChange::Secret(&[9; 32]))
        .await
        .unwrap()
        .unwrap();
    assert!(cv2 > cv1);
    assert_eq!(
        store.client("svc").await.unwrap().unwrap().secret_digest,
        [9; 32]
    );
    assert_eq!(
        store
            .change_account(ckind, "svc", AccountChange::Password("x"))
            .await
            .unwrap(),
        None
    );
    // Disabling a client is a cut-off; enabling it is not.
    let cv3 = store
        .change_account(ckind, "svc", AccountChange::Disable)
        .await
        .unwrap()
        .unwrap();
    assert!(cv3 > cv2);
    let disabled = store.account(ckind, "svc").await.unwrap().unwrap();
    assert!(!disabled.active);
    assert!(store.client("svc").await.unwrap().unwrap().disabled);
    let cv4 = store
        .change_account(ckind, "svc", AccountChange::Enable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cv4, cv3);
    assert!(store.account(ckind, "svc").await.unwrap().unwrap().active);
    store.remove_account(ckind, "svc").await.unwrap();
    assert_eq!(store.client("svc").await.unwrap(), None);
    store.ping().await.unwrap();
}

async fn certificate_identities_have_one_owner_at_a_time(store: Store) {
    let id = "spiffe://prod.example/ns/pay/sa/billing";
    assert_eq!(store.certificate_owner(id).await.unwrap(), None);
    // Claimed only if nobody holds it.
    assert!(
        store
            .swap_certificate_owner(id, None, Some("billing"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .swap_certificate_owner(id, None, Some("thief"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.certificate_owner(id).await.unwrap().as_deref(),
        Some("billing")
    );
    // Released only by its owner; identities with braces or spaces are keys too.
    assert!(
        !store
            .swap_certificate_owner(id, Some("thief"), None)
            .await
            .unwrap()
    );
    assert!(
        store
            .swap_certificate_owner(id, Some("billing"), None)
            .await
            .unwrap()
    );
    assert_eq!(store.certificate_owner(id).await.unwrap(), None);
    let odd = "urn:{weird}/x";
    assert!(
        store
            .swap_certificate_owner(odd, None, Some("a"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.certificate_owner(odd).await.unwrap().as_deref(),
        Some("a")
    );
}

async fn sessions_carry_the_account_version_they_began_under(store: Store) {
    let now = store.clock().now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let version = store.user("alice").await.unwrap().unwrap().version;
    let (Rotation::Rotated(grant), _) = rotate(&store, &session.token, now + 1, 0).await else {
        panic!("rotated")
    };
    assert_eq!(grant.account_version, version);
}

async fn a_login_racing_a_cut_off_keeps_nothing(store: Store) {
    let now = store.clock().now_ms();
    for change in [
        AccountChange::Disable,
        AccountChange::CutOff,
        AccountChange::Delete,
    ] {
        let name = format!("dave-{}", change.cuts_off() as u8 + now as u8);
        let read = user(&store, &name).await;
        store
            .change_account(AccountKind::User, &name, change)
            .await
            .unwrap();
        let id = new_session_id();
        let token = RefreshToken::generate(&id);
        let grant = SessionGrant {
            subject: name.clone(),
            scope: "read".into(),
            audience: "internal".into(),
            created_ms: now,
            absolute_expiry_ms: now + HOUR_MS,
            account_version: read,
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
        assert_eq!(created, SessionCreated::AccountChanged, "{change:?}");
        assert!(!store.session_exists(&id).await.unwrap());
        let (outcome, _) = rotate(&store, &token, now + 1, 0).await;
        assert_eq!(outcome, Rotation::Invalid);
        store
            .remove_account(AccountKind::User, &name)
            .await
            .unwrap();
    }
    // No account at all: nothing kept either.
    let grant = SessionGrant {
        subject: "nobody".into(),
        scope: String::new(),
        audience: "internal".into(),
        created_ms: now,
        absolute_expiry_ms: now + HOUR_MS,
        account_version: 0,
    };
    let id = new_session_id();
    let created = store
        .create_session(&NewSession {
            session_id: &id,
            grant: &grant,
            client: "",
            token: RefreshToken::generate(&id).hash(),
            idle_ttl_ms: HOUR_MS,
        })
        .await
        .unwrap();
    assert_eq!(created, SessionCreated::AccountChanged);
}

async fn rotation_chains_within_a_session(store: Store) {
    let now = store.clock().now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let (first, successor) = rotate(&store, &session.token, now + 1, 0).await;
    assert_eq!(first, Rotation::Rotated(session.grant.clone()));
    let (second, _) = rotate(&store, &successor, now + 2, 0).await;
    assert_eq!(second, Rotation::Rotated(session.grant.clone()));
}

async fn replaying_the_previous_token_is_reuse_and_kills_the_session(store: Store) {
    let now = store.clock().now_ms();
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
    // The reused token again (a retry whose answer was lost before the end
    // was announced): told the same, so the end is announced again.
    let (again, _) = rotate(&store, &session.token, now + 4, 0).await;
    assert_eq!(
        again,
        Rotation::Reused {
            subject: "alice".into()
        }
    );
    // Repeated again while that one announces: told to come back.
    assert_unavailable(try_rotate(&store, &session.token, now + 5, 0).await.0);
    // Once its announcement is recorded, it is only unknown, and announces
    // nothing more.
    store.end_announced(&session.id).await.unwrap();
    let (later, _) = rotate(&store, &session.token, now + 6, 0).await;
    assert_eq!(later, Rotation::Invalid);
    // A revoke with it is not a repeated revoke.
    assert_eq!(
        store
            .revoke(&session.id, session.token.hash())
            .await
            .unwrap(),
        Revocation::Unknown
    );
}

/// Found by `make chaos TOPOLOGY=sentinel SEED=4`: watching resource
/// servers accepted a revoked session's token 2 s after its Revoke was
/// acknowledged. The Revoke and five retries were answered
/// `STORE_UNAVAILABLE` (the replica had stalled); the first retry used up
/// the one repeat allowed to announce the end, and once the replica was
/// back the next found nothing to announce and was answered OK. Repeats
/// now announce until one's announcement is recorded, one at a time.
async fn a_repeated_end_whose_announcement_failed_is_announced_by_a_later_repeat(store: Store) {
    let now = store.clock().now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    rotate(&store, &session.token, now + 1, 0).await;
    let (reuse, _) = rotate(&store, &session.token, now + 2, 0).await;
    assert!(matches!(reuse, Rotation::Reused { .. }), "{reuse:?}");
    // A repeat is let through to announce it, and fails to (nothing is
    // recorded).
    let (first, _) = rotate(&store, &session.token, now + 3, 0).await;
    assert!(matches!(first, Rotation::Reused { .. }), "{first:?}");
    // While it may still be at it, the next repeat is told to come back...
    let gate = REPEAT_ANNOUNCING_MS;
    assert_unavailable(
        try_rotate(&store, &session.token, now + 2 + gate, 0)
            .await
            .0,
    );
    // ...and once it must have given up, the next announces.
    let (next, _) = rotate(&store, &session.token, now + 3 + gate, 0).await;
    assert!(matches!(next, Rotation::Reused { .. }), "{next:?}");
    store.end_announced(&session.id).await.unwrap();
    let (done, _) = rotate(&store, &session.token, now + 4 + 2 * gate, 0).await;
    assert_eq!(done, Rotation::Invalid);

    // A first end's announcement recorded changes nothing: its own repeat
    // may be the retry of a call whose answer was lost.
    let other = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let hash = other.token.hash();
    assert!(matches!(
        store.revoke(&other.id, hash).await.unwrap(),
        Revocation::Revoked { .. }
    ));
    store.end_announced(&other.id).await.unwrap();
    assert!(matches!(
        store.revoke(&other.id, hash).await.unwrap(),
        Revocation::AlreadyRevoked { .. }
    ));
}

async fn replaying_an_older_token_is_reuse(store: Store) {
    let now = store.clock().now_ms();
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
    let now = store.clock().now_ms();
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
    let now = store.clock().now_ms();
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

async fn the_grace_window_replays_only_the_latest_rotation(store: Store) {
    let now = store.clock().now_ms();
    let grace = 60_000;
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    let (_, second) = rotate(&store, &session.token, now, grace).await;
    let (_, third) = rotate(&store, &second, now + 1, grace).await;
    // The first token is two rotations old, consumed inside the window: a
    // late duplicate of a call given up on. It yields nothing and ends
    // nothing.
    let (late, _) = rotate(&store, &session.token, now + 2, grace).await;
    assert_eq!(
        late,
        Rotation::Superseded {
            subject: "alice".into()
        }
    );
    let (alive, fourth) = rotate(&store, &third, now + 3, grace).await;
    assert!(matches!(alive, Rotation::Rotated(_)), "{alive:?}");
    // The window is counted from when that token was consumed (now): at
    // its end the same token is reuse, and the session ends.
    let (reuse, _) = rotate(&store, &session.token, now + grace, grace).await;
    assert!(matches!(reuse, Rotation::Reused { .. }), "{reuse:?}");
    let (after, _) = rotate(&store, &fourth, now + grace + 1, grace).await;
    assert_eq!(after, Rotation::Invalid);
}

async fn a_token_consumed_before_the_window_is_reuse_however_recently_rotated_past(store: Store) {
    let now = store.clock().now_ms();
    let grace = 10_000;
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    // Consumed at `now`; its successor is rotated only much later.
    let (_, second) = rotate(&store, &session.token, now, grace).await;
    let later = now + 30_000;
    let (_, _third) = rotate(&store, &second, later, grace).await;
    let (reuse, _) = rotate(&store, &session.token, later + 1, grace).await;
    assert!(matches!(reuse, Rotation::Reused { .. }), "{reuse:?}");
}

async fn the_wrong_token_for_a_session_changes_nothing(store: Store) {
    let now = store.clock().now_ms();
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
    let now = store.clock().now_ms();
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
        // Again with the same token (a retry whose first answer was lost):
        // remembered, so it can be announced again; any other token of the
        // chain, or a stranger's, finds nothing.
        assert_eq!(
            store.revoke(&session.id, presented.hash()).await.unwrap(),
            Revocation::AlreadyRevoked {
                subject: "alice".into()
            }
        );
        // Another repeat while that one announces: told to come back.
        assert_unavailable(store.revoke(&session.id, presented.hash()).await);
        // Once its announcement is recorded, repeats find nothing (nothing
        // more to announce).
        store.end_announced(&session.id).await.unwrap();
        assert_eq!(
            store.revoke(&session.id, presented.hash()).await.unwrap(),
            Revocation::Unknown
        );
        let other = &chain[(chain.len() - generation) % chain.len()];
        assert_eq!(
            store.revoke(&session.id, other.hash()).await.unwrap(),
            Revocation::Unknown
        );
        let stranger = RefreshToken::generate(&session.id);
        assert_eq!(
            store.revoke(&session.id, stranger.hash()).await.unwrap(),
            Revocation::Unknown
        );
        let (after, _) = rotate(&store, chain.last().unwrap(), now + 10, 0).await;
        assert_eq!(after, Rotation::Invalid);
    }
}

async fn an_owners_end_of_a_session_is_repeated_until_announced_and_only_for_them(store: Store) {
    let now = store.clock().now_ms();
    let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
    // Someone else's: not found, untouched.
    assert!(!store.end_own_session("bob", &session.id).await.unwrap());
    assert!(store.session_exists(&session.id).await.unwrap());
    assert!(store.end_own_session("alice", &session.id).await.unwrap());
    assert!(!store.session_exists(&session.id).await.unwrap());
    // Someone else repeating it learns nothing.
    assert!(!store.end_own_session("bob", &session.id).await.unwrap());
    // The owner repeating it (a retry whose first answer was lost) is told
    // it ended, so the end is announced again; another repeat meanwhile
    // is told to come back; once announced, nothing.
    assert!(store.end_own_session("alice", &session.id).await.unwrap());
    assert_unavailable(store.end_own_session("alice", &session.id).await);
    store.end_announced(&session.id).await.unwrap();
    assert!(!store.end_own_session("alice", &session.id).await.unwrap());
    // A session that never was: nothing.
    assert!(
        !store
            .end_own_session("alice", &new_session_id())
            .await
            .unwrap()
    );
}

async fn the_absolute_lifetime_ends_a_session(store: Store) {
    let now = store.clock().now_ms();
    let session = start_session(&store, now, HOUR_MS, 60_000).await;
    let (inside, next) = rotate(&store, &session.token, now + 59_999, 0).await;
    assert!(matches!(inside, Rotation::Rotated(_)));
    let (after, _) = rotate(&store, &next, now + 60_000, 0).await;
    assert_eq!(after, Rotation::Invalid);
}

async fn the_idle_lifetime_ends_a_session(store: Store) {
    // Real time passes here: the idle lifetime is a TTL in Redis. Every
    // check holds however slow the machine is: what must be gone has had
    // at least its lifetime (a sleep never ends early), what must live has
    // a minute, and no step has to happen within a short time of another.
    let now = store.clock().now_ms();
    // Never refreshed: gone after its half second.
    let idle_one = start_session(&store, now, 500, HOUR_MS).await;
    // Left alone with a minute: still there.
    let untouched = start_session(&store, now, 60_000, HOUR_MS).await;
    // A rotation sets the idle lifetime it is given: a minute cut to half a
    // second ends the session that long after the rotation.
    let shortened = start_session(&store, now, 60_000, HOUR_MS).await;
    let (rotated, next) = rotate_with_idle(&store, &shortened.token, 500).await;
    assert!(matches!(rotated, Rotation::Rotated(_)));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (gone, _) = rotate_with_idle(&store, &idle_one.token, 60_000).await;
    assert_eq!(
        gone,
        Rotation::Invalid,
        "a session idle past its lifetime ends"
    );
    let (cut, _) = rotate_with_idle(&store, &next, 60_000).await;
    assert_eq!(cut, Rotation::Invalid, "the rotation set the idle lifetime");
    let (alive, _) = rotate_with_idle(&store, &untouched.token, 60_000).await;
    assert!(matches!(alive, Rotation::Rotated(_)), "{alive:?}");
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
            now_ms: store.clock().now_ms(),
            idle_ttl_ms: idle_ms,
            grace_ms: 0,
        })
        .await
        .unwrap();
    (rotation, successor)
}

async fn concurrent_rotations_leave_at_most_one_successor(store: Store) {
    let now = store.clock().now_ms();
    for grace in [0, 30_000] {
        let session = start_session(&store, now, HOUR_MS, 24 * HOUR_MS).await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let store = store.clone();
            let token = session.token.clone();
            tasks.spawn(async move { try_rotate(&store, &token, now + 1, grace).await });
        }
        let mut rotated = Vec::new();
        let mut replayed = Vec::new();
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                (Ok(Rotation::Rotated(_)), successor) => rotated.push(successor),
                (
                    Ok(Rotation::Replayed {
                        sealed_successor, ..
                    }),
                    _,
                ) => replayed.push(session.token.open_successor(&sealed_successor)),
                // Without a grace window the others are reuse, repeated
                // reuse, or told to come back while a repeat announces it.
                (Ok(_) | Err(StoreError::Unavailable(_)), _) if grace == 0 => {}
                (other, _) => panic!("{other:?}"),
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
    let now = store.clock().now_ms();
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
    let (_, _) = rotate(&store, &a1.token, now + 5, 0).await;
    let listed = store.list_sessions("alice").await.unwrap();
    assert_eq!(listed[0].refreshed_ms, now + 5);

    let one = |id: &str| vec![id.to_owned()];
    assert_eq!(
        store
            .end_sessions("bob", &one(&a1.id), i64::MAX)
            .await
            .unwrap(),
        0
    );
    assert!(store.session_exists(&a1.id).await.unwrap());
    assert_eq!(
        store
            .end_sessions("alice", &one(&a1.id), i64::MAX)
            .await
            .unwrap(),
        1
    );
    assert!(!store.session_exists(&a1.id).await.unwrap());
    assert_eq!(
        store
            .end_sessions("alice", &one(&a1.id), i64::MAX)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.list_sessions("alice").await.unwrap().len(), 1);
    assert!(store.session_exists(&b.id).await.unwrap());
    assert_eq!(store.list_sessions("nobody").await.unwrap(), []);
    // Revoked sessions drop out of the list.
    store.revoke(&a2.id, a2.token.hash()).await.unwrap();
    assert_eq!(store.list_sessions("alice").await.unwrap(), []);
}

async fn a_cut_off_ends_older_sessions_and_spares_newer_ones(store: Store) {
    let now = store.clock().now_ms();
    let old = start_session_of(&store, "erin", now, HOUR_MS, 24 * HOUR_MS).await;
    let version = store
        .change_account(AccountKind::User, "erin", AccountChange::CutOff)
        .await
        .unwrap()
        .unwrap();
    // Listing no longer shows the session from before the cut-off.
    assert_eq!(store.list_sessions("erin").await.unwrap(), []);
    let newer = start_session_of(&store, "erin", now + 1, HOUR_MS, 24 * HOUR_MS).await;
    assert_eq!(newer.grant.account_version, version);
    let page = store.session_index_page("erin", 0, 100).await.unwrap();
    assert_eq!(page.next, None);
    let ended = store
        .end_sessions("erin", &page.session_ids, version)
        .await
        .unwrap();
    assert_eq!(ended, 0, "the older one was pruned by the listing");
    assert!(!store.session_exists(&old.id).await.unwrap() || ended == 0);
    assert!(
        store.session_exists(&newer.id).await.unwrap(),
        "newer sessions stay"
    );
    let listed = store.list_sessions("erin").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, newer.id);
}

async fn the_session_index_pages_through_thousands_while_they_end(store: Store) {
    let now = store.clock().now_ms();
    let mut ids = std::collections::HashSet::new();
    for i in 0..1_200 {
        let s = start_session_of(&store, "frank", now + i, HOUR_MS, 24 * HOUR_MS).await;
        ids.insert(s.id);
    }
    let version = store
        .change_account(AccountKind::User, "frank", AccountChange::CutOff)
        .await
        .unwrap()
        .unwrap();
    let keep = start_session_of(&store, "frank", now + 5_000, HOUR_MS, 24 * HOUR_MS).await;
    let mut seen = std::collections::HashSet::new();
    let mut ended = 0;
    let mut from = 0;
    let mut pages = 0;
    loop {
        let page = store.session_index_page("frank", from, 100).await.unwrap();
        pages += 1;
        ended += store
            .end_sessions("frank", &page.session_ids, version)
            .await
            .unwrap();
        seen.extend(page.session_ids);
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert!(pages > 1, "paged");
    assert_eq!(ended, 1_200);
    assert!(ids.is_subset(&seen), "every session was on some page");
    assert!(store.session_exists(&keep.id).await.unwrap());
    let left = store.session_index_page("frank", 0, 10_000).await.unwrap();
    assert_eq!(left.session_ids, [keep.id]);
}

async fn failure_counters_count_expire_and_clear(store: Store) {
    let now = store.clock().now_ms();
    let a = FailureScope::Account("alice".into());
    let pair = FailureScope::AccountSource("alice".into(), "10.0.0.1".into());
    let source = FailureScope::Source("2001:db8:0:1::/64".into());
    let all = [a.clone(), pair.clone(), source.clone()];
    assert_eq!(
        store.failures(&all).await.unwrap(),
        [Failures::default(); 3]
    );
    store.record_failure(&all, now, 60_000).await.unwrap();
    store
        .record_failure(&all[..2], now + 5, 60_000)
        .await
        .unwrap();
    let counted = store.failures(&all).await.unwrap();
    assert_eq!(
        counted[0],
        Failures {
            count: 2,
            last_ms: now + 5
        }
    );
    assert_eq!(
        counted[1],
        Failures {
            count: 2,
            last_ms: now + 5
        }
    );
    assert_eq!(
        counted[2],
        Failures {
            count: 1,
            last_ms: now
        }
    );
    store
        .clear_failures(std::slice::from_ref(&pair))
        .await
        .unwrap();
    let counted = store.failures(&all).await.unwrap();
    assert_eq!(counted[1], Failures::default());
    assert_eq!(counted[0].count, 2);
    // Counters expire after their window.
    store
        .record_failure(std::slice::from_ref(&pair), now, 50)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.failures(&[pair]).await.unwrap()[0],
        Failures::default()
    );

    assert!(!store.is_known_source("alice", "10.0.0.1").await.unwrap());
    store
        .remember_source("alice", "10.0.0.1", 60_000)
        .await
        .unwrap();
    assert!(store.is_known_source("alice", "10.0.0.1").await.unwrap());
    assert!(!store.is_known_source("alice", "10.0.0.2").await.unwrap());
    assert!(!store.is_known_source("bob", "10.0.0.1").await.unwrap());

    assert!(store.take_login_turn("alice", 60_000).await.unwrap());
    assert!(!store.take_login_turn("alice", 60_000).await.unwrap());
    assert!(store.take_login_turn("bob", 60_000).await.unwrap());
    store.release_login_turn("alice").await.unwrap();
    assert!(store.take_login_turn("alice", 60_000).await.unwrap());
}

async fn a_subjects_newer_cut_off_supersedes_its_older_one(store: Store) {
    let now = store.clock().now_ms();
    let until = now + HOUR_MS;
    let cut = |version| FeedEvent::Subject {
        subject: "mallory".into(),
        version,
    };
    let session = |id: &str| FeedEvent::Session {
        session_id: id.into(),
    };
    store
        .publish_revocation(&session("s1"), now, until)
        .await
        .unwrap();
    for version in 1..=50 {
        store
            .publish_revocation(&cut(version), now, until)
            .await
            .unwrap();
    }
    let newest = store
        .publish_revocation(&cut(60), now, until)
        .await
        .unwrap();
    // A late retry of an older cut-off adds nothing.
    let retried = store.publish_revocation(&cut(7), now, until).await.unwrap();
    assert_eq!(retried, newest);
    // Sessions are each their own; an actor's cut-off does not supersede
    // the subject's of the same name.
    store
        .publish_revocation(&session("s1"), now, until)
        .await
        .unwrap();
    let actor = FeedEvent::Actor {
        actor: "mallory".into(),
        version: 1,
    };
    store.publish_revocation(&actor, now, until).await.unwrap();
    let events: Vec<FeedEvent> = store
        .revocations_after(None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [session("s1"), cut(60), session("s1"), actor],
        "one live cut-off per subject and kind"
    );
}

async fn the_revocation_feed_keeps_order_and_resumes(store: Store) {
    let now = store.clock().now_ms();
    assert_eq!(store.feed_origin().await.unwrap(), None);
    let mut follower = store.feed_follower().await.unwrap();
    let session = FeedEvent::Session {
        session_id: "s1".into(),
    };
    let subject = FeedEvent::Subject {
        subject: "alice".into(),
        version: now + 7,
    };
    let account = FeedEvent::Account {
        subject: "bob".into(),
    };
    let first = store
        .publish_revocation(&session, now, now + 60_000)
        .await
        .unwrap();
    let origin = store.feed_origin().await.unwrap().expect("an origin");
    assert!(
        origin >= now - 1_000 && origin <= store.clock().now_ms() + 1_000,
        "{origin}"
    );
    let second = store
        .publish_revocation(&subject, now, now + 60_000)
        .await
        .unwrap();
    let third = store
        .publish_revocation(&account, now, now + 60_000)
        .await
        .unwrap();
    assert!(
        first < second && second < third,
        "{first} < {second} < {third}"
    );
    assert_eq!(store.feed_origin().await.unwrap(), Some(origin));

    let all = store.revocations_after(None, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].event, session);
    assert_eq!(all[0].cursor, first);
    assert_eq!((all[0].at_ms, all[0].until_ms), (now, now + 60_000));
    assert_eq!(all[1].event, subject);
    assert_eq!(all[2].event, account);
    let after_first = store.revocations_after(Some(first), 100).await.unwrap();
    assert_eq!(after_first.len(), 2);
    assert_eq!(after_first[0].cursor, second);
    assert!(
        store
            .revocations_after(Some(third), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.revocations_after(None, 1).await.unwrap().len(), 1);

    // A follower created before the appends sees them all, in order.
    let followed = follower.next().await.unwrap();
    let cursors: Vec<FeedCursor> = followed.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, [first, second, third]);
    // And then what comes next: an actor cut-off this time.
    let actor = FeedEvent::Actor {
        actor: "orders".into(),
        version: now + 9,
    };
    let fourth = store
        .publish_revocation(&actor, now, now + 60_000)
        .await
        .unwrap();
    let followed = follower.next().await.unwrap();
    assert_eq!(followed.len(), 1);
    assert_eq!(followed[0].cursor, fourth);
    assert_eq!(followed[0].event, actor);
}

async fn no_feed_entry_that_still_matters_is_trimmed(store: Store) {
    let now = store.clock().now_ms();
    // Entries that stopped mattering long ago go when new ones come...
    let stale = FeedEvent::Session {
        session_id: "stale".into(),
    };
    let old = now - 10 * HOUR_MS;
    store
        .publish_revocation(&stale, old, old + 60_000)
        .await
        .unwrap();
    // ...however many relevant ones there are, none of those goes.
    let count = 5_000;
    for i in 0..count {
        let event = FeedEvent::Session {
            session_id: format!("s{i}"),
        };
        store
            .publish_revocation(&event, now, now + HOUR_MS)
            .await
            .unwrap();
    }
    let mut seen = 0;
    let mut cursor = None;
    loop {
        let page = store.revocations_after(cursor, 1_000).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.cursor);
        seen += page
            .iter()
            .filter(
                |e| !matches!(&e.event, FeedEvent::Session { session_id } if session_id == "stale"),
            )
            .count();
    }
    assert_eq!(seen, count);
}

async fn only_the_current_token_shows_its_session(store: Store) {
    let now = store.clock().now_ms();
    let session = start_session_of(&store, "frank", now, HOUR_MS, 24 * HOUR_MS).await;
    let shown = store
        .current_session(&session.id, session.token.hash())
        .await
        .unwrap()
        .expect("the current token shows its session");
    assert_eq!(shown.session_id, session.id);
    assert_eq!(shown.grant, session.grant);
    // Looking consumed nothing: the token still rotates.
    let stranger = RefreshToken::generate(&session.id);
    assert_eq!(
        store
            .current_session(&session.id, stranger.hash())
            .await
            .unwrap(),
        None
    );
    let (rotation, next) = rotate(&store, &session.token, now + 1, 0).await;
    assert!(matches!(rotation, Rotation::Rotated(_)), "{rotation:?}");
    assert_eq!(
        store
            .current_session(&session.id, session.token.hash())
            .await
            .unwrap(),
        None,
        "a consumed token shows nothing"
    );
    assert!(
        store
            .current_session(&session.id, next.hash())
            .await
            .unwrap()
            .is_some()
    );
    // A cut-off of the account ends what it shows.
    store
        .change_account(AccountKind::User, "frank", AccountChange::CutOff)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .current_session(&session.id, next.hash())
            .await
            .unwrap(),
        None
    );
    // So does a revocation.
    let other = start_session_of(&store, "frank", now + 2, HOUR_MS, 24 * HOUR_MS).await;
    assert!(
        store
            .current_session(&other.id, other.token.hash())
            .await
            .unwrap()
            .is_some()
    );
    store.revoke(&other.id, other.token.hash()).await.unwrap();
    assert_eq!(
        store
            .current_session(&other.id, other.token.hash())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .current_session("nonexistent", other.token.hash())
            .await
            .unwrap(),
        None
    );
}

async fn accounts_are_listed_by_prefix_a_page_at_a_time(store: Store) {
    let user = |password_hash| NewAccount::User { password_hash };
    for name in ["bob", "alice", "al", "alfred", "carol", "al.b"] {
        store
            .create_account(name, user("$argon2id$x"), "read")
            .await
            .unwrap()
            .unwrap();
    }
    let client = NewAccount::Client {
        secret_digest: &[1; 32],
        require_cert: false,
        cert_identities: &[],
    };
    store
        .create_account("alpha-svc", client, "read")
        .await
        .unwrap();
    let names = |prefix: &'static str, after: Option<&'static str>, limit| {
        let store = store.clone();
        async move {
            store
                .account_names(AccountKind::User, prefix, after, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        names("", None, 10).await,
        ["al", "al.b", "alfred", "alice", "bob", "carol"]
    );
    assert_eq!(
        names("al", None, 10).await,
        ["al", "al.b", "alfred", "alice"]
    );
    // Pages resume after the last name, exclusive, within the prefix.
    assert_eq!(names("al", None, 2).await, ["al", "al.b"]);
    assert_eq!(names("al", Some("al.b"), 2).await, ["alfred", "alice"]);
    assert!(names("al", Some("alice"), 2).await.is_empty());
    assert_eq!(names("", Some("alice"), 10).await, ["bob", "carol"]);
    // A resumption point before the prefix starts at the prefix.
    assert_eq!(names("c", Some("a"), 10).await, ["carol"]);
    assert!(names("zed", None, 10).await.is_empty());
    // Kinds are listed apart.
    assert_eq!(
        store
            .account_names(AccountKind::Client, "", None, 10)
            .await
            .unwrap(),
        ["alpha-svc"]
    );
    // A removed account leaves the listing.
    store
        .remove_account(AccountKind::User, "alfred")
        .await
        .unwrap();
    assert_eq!(names("al", None, 10).await, ["al", "al.b", "alice"]);
}

async fn sessions_are_paged_in_id_order_and_ended_ones_drop_out(store: Store) {
    let now = store.clock().now_ms();
    let mut ids = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..25 {
        let session = start_session_of(&store, "paula", now, HOUR_MS, 24 * HOUR_MS).await;
        ids.push(session.id.clone());
        sessions.push(session);
    }
    ids.sort();
    // End two; pages skip them.
    store
        .revoke(&sessions[3].id, sessions[3].token.hash())
        .await
        .unwrap();
    store
        .end_sessions("paula", std::slice::from_ref(&sessions[7].id), i64::MAX)
        .await
        .unwrap();
    let ended = [sessions[3].id.clone(), sessions[7].id.clone()];
    let live: Vec<&String> = ids.iter().filter(|id| !ended.contains(id)).collect();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .sessions_page("paula", after.as_deref(), 10)
            .await
            .unwrap();
        assert!(page.sessions.len() <= 10);
        seen.extend(page.sessions.iter().map(|s| s.session_id.clone()));
        match page.sessions.last() {
            Some(last) if page.more => after = Some(last.session_id.clone()),
            _ => break,
        }
    }
    assert_eq!(
        seen.iter().collect::<Vec<_>>(),
        live,
        "every live session once, in id order"
    );
    assert_eq!(store.count_sessions("paula").await.unwrap(), 23);
    assert_eq!(
        store.sessions_page("nobody", None, 10).await.unwrap(),
        SessionsPage::default()
    );
    // A cut-off ends them all.
    store
        .change_account(AccountKind::User, "paula", AccountChange::CutOff)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.count_sessions("paula").await.unwrap(), 0);
}

/// Generates one test per store for each case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(crate::store::Store::Memory(crate::store::MemoryStore::new())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let server = testkit_redis::RedisServer::start();
                    let store = crate::store::RedisStore::connect(
                        &server.url(),
                        "conformance",
                        std::time::Duration::from_secs(2),
                    )
                    .await
                    .unwrap();
                    super::$case(crate::store::Store::Redis(Box::new(store))).await;
                }
            )*
        }
        /// One cluster (six processes) for every case, each under its own
        /// prefix: forming a cluster takes seconds. Every case runs with
        /// writes confirmed by replicas and without.
        mod cluster {
            // Two tests, each with a cluster of its own, so they run side
            // by side.
            #[tokio::test]
            async fn every_case_with_confirmed_writes() {
                let cluster = testkit_redis::RedisCluster::start();
                let target = crate::store::RedisTarget::Cluster(cluster.urls());
                $(
                    let store = super::deployment(
                        &target,
                        stringify!($case),
                        crate::store::ReplicaAcks::Auto,
                    );
                    super::$case(store.await).await;
                )*
            }

            #[tokio::test]
            async fn every_case_with_unconfirmed_writes() {
                let cluster = testkit_redis::RedisCluster::start();
                let target = crate::store::RedisTarget::Cluster(cluster.urls());
                $(
                    let store = super::deployment(
                        &target,
                        stringify!($case),
                        crate::store::ReplicaAcks::Exactly(0),
                    );
                    super::$case(store.await).await;
                )*
            }
        }
        /// One primary, replica and three sentinels for every case.
        mod sentinel {
            #[tokio::test]
            async fn every_case() {
                let deployment = testkit_redis::RedisSentinel::start();
                let target = crate::store::RedisTarget::Sentinel {
                    sentinels: deployment.urls(),
                    master: deployment.master_name().to_owned(),
                };
                $(
                    let store = super::deployment(
                        &target,
                        stringify!($case),
                        crate::store::ReplicaAcks::Auto,
                    );
                    super::$case(store.await).await;
                )*
            }
        }
    };
}

/// A store on `target` under a prefix of its own for `case`, confirming
/// writes as `acks` says.
async fn deployment(
    target: &crate::store::RedisTarget,
    case: &str,
    acks: crate::store::ReplicaAcks,
) -> Store {
    let config = crate::store::RedisConfig {
        prefix: format!("conformance-{case}"),
        // A deadline a busy machine cannot miss: these cases check what the
        // store does, not how fast (a replica's WAIT confirmation starved of
        // CPU behind a parallel build once took over 2.5 s).
        timeout: std::time::Duration::from_secs(20),
        replica_acks: acks,
        ..crate::store::RedisConfig::new(target.clone())
    };
    let store = crate::store::RedisStore::open(&config).await.unwrap();
    Store::Redis(Box::new(store))
}

conformance!(
    accounts_are_created_once_and_changed_atomically,
    certificate_identities_have_one_owner_at_a_time,
    sessions_carry_the_account_version_they_began_under,
    a_login_racing_a_cut_off_keeps_nothing,
    rotation_chains_within_a_session,
    replaying_the_previous_token_is_reuse_and_kills_the_session,
    a_repeated_end_whose_announcement_failed_is_announced_by_a_later_repeat,
    replaying_an_older_token_is_reuse,
    the_consumed_log_is_capped,
    the_grace_window_replays_the_same_successor,
    the_grace_window_replays_only_the_latest_rotation,
    a_token_consumed_before_the_window_is_reuse_however_recently_rotated_past,
    the_wrong_token_for_a_session_changes_nothing,
    revoke_accepts_current_previous_and_older_tokens,
    an_owners_end_of_a_session_is_repeated_until_announced_and_only_for_them,
    the_absolute_lifetime_ends_a_session,
    the_idle_lifetime_ends_a_session,
    concurrent_rotations_leave_at_most_one_successor,
    sessions_are_listed_and_ended_only_by_their_owner,
    a_cut_off_ends_older_sessions_and_spares_newer_ones,
    the_session_index_pages_through_thousands_while_they_end,
    failure_counters_count_expire_and_clear,
    the_revocation_feed_keeps_order_and_resumes,
    a_subjects_newer_cut_off_supersedes_its_older_one,
    no_feed_entry_that_still_matters_is_trimmed,
    only_the_current_token_shows_its_session,
    accounts_are_listed_by_prefix_a_page_at_a_time,
    sessions_are_paged_in_id_order_and_ended_ones_drop_out,
);

//! The authority's decisions on their own: no gRPC, the memory store, and a
//! clock the tests move. What the wire adds (status codes, metadata, the
//! interceptor) is tested in `tests/integration`.

use std::time::Duration;

use super::*;
use crate::admin::add_user;
use crate::clock::ManualClock;
use crate::revocations::WatchLimits;
use crate::store::MemoryStore;
use crate::throttle::ThrottleConfig;
use crate::tokens::SigningKey;

const HOUR: Duration = Duration::from_secs(3600);

/// An authority over a fresh memory store on a manual clock, with the user
/// `alice` (password `correct horse`, scopes read and write).
async fn authority(lifetimes: Lifetimes) -> (Authority, ManualClock) {
    authority_with(lifetimes, crate::exchange::ExchangePolicy::default()).await
}

/// [`authority`] with an exchange policy.
pub(super) async fn authority_with(
    lifetimes: Lifetimes,
    policy: crate::exchange::ExchangePolicy,
) -> (Authority, ManualClock) {
    let clock = ManualClock::starting_now();
    let store = Store::Memory(MemoryStore::with_clock(clock.clock()));
    let hasher = PasswordHasher::new(1, Duration::from_secs(5)).unwrap();
    add_user(
        &store,
        &hasher,
        &Default::default(),
        "alice",
        &["read".into(), "write".into()],
        "correct horse".into(),
    )
    .await
    .unwrap();
    let feed = RevocationFeed::new(store.clone(), lifetimes.access, WatchLimits::default());
    let accounts = AccountStates::new(store.clone(), 100);
    feed.start(accounts.clone()).await.unwrap();
    let issuer = AccessTokenIssuer::new(
        SigningKey::generate().unwrap(),
        "tokend".into(),
        lifetimes.access,
    );
    let subject_keys =
        tokend_interceptor::keys::KeySet::from_paserk([issuer.active_key().public_key.as_str()])
            .unwrap();
    let subject_verifier = tokend_interceptor::Verifier::builder(subject_keys, "tokend", "tokend")
        .any_audience()
        .clock(clock.clock())
        .build();
    let authority = Authority::new(Parts {
        throttle: LoginThrottle::new(store.clone(), ThrottleConfig::default()),
        store,
        feed,
        accounts,
        issuer,
        hasher,
        default_audience: "internal".into(),
        lifetimes,
        verification_keys: Vec::new(),
        max_sessions_per_user: 3,
        revoke_all_interval: Duration::ZERO,
        // Unit tests of the authority do not introspect: no feed behind it.
        introspection_verifier: subject_verifier.clone(),
        subject_verifier,
        exchange_policy: crate::exchange::PolicySource::fixed(policy),
        cert_naming: tokend_interceptor::certs::CertificateNaming::new(),
    });
    (authority, clock)
}

pub(super) fn alice<'a>(password: &'a str, scopes: &'a [String]) -> LoginRequest<'a> {
    LoginRequest {
        name: "alice",
        secret: password,
        audience: None,
        scopes,
        client: "unit test",
        source: "192.0.2.1",
        certificate: None,
    }
}

async fn log_in(authority: &Authority) -> IssuedSession {
    authority
        .login_password(alice("correct horse", &[]))
        .await
        .unwrap()
        .session
        .expect("a password login starts a session")
}

/// The shipped lifetimes with strict reuse detection (no grace window):
/// these tests present consumed tokens on purpose.
fn strict() -> Lifetimes {
    Lifetimes {
        reuse_grace: Duration::ZERO,
        ..Lifetimes::default()
    }
}

#[tokio::test]
async fn a_login_issues_a_session_that_ends_after_its_idle_lifetime() {
    let lifetimes = Lifetimes {
        refresh_idle: HOUR,
        ..strict()
    };
    let (authority, clock) = authority(lifetimes).await;
    let session = log_in(&authority).await;
    assert_eq!(session.expires_at_ms, clock.now_ms() + 3_600_000);

    clock.advance(HOUR);
    let refused = authority.refresh(&session.refresh_token.encode()).await;
    assert!(matches!(refused, Err(AuthError::RefreshTokenInvalid)));
}

#[tokio::test]
async fn a_refresh_rotates_and_a_replay_ends_the_session() {
    let (authority, clock) = authority(strict()).await;
    let first = log_in(&authority).await.refresh_token.encode();
    clock.advance(Duration::from_secs(1));
    let second = authority.refresh(&first).await.unwrap();
    let second = second.session.unwrap().refresh_token.encode();
    assert_ne!(first, second);

    let replay = authority.refresh(&first).await;
    assert!(matches!(replay, Err(AuthError::RefreshTokenReused)));
    let after = authority.refresh(&second).await;
    assert!(
        matches!(after, Err(AuthError::RefreshTokenInvalid)),
        "reuse ended the whole session"
    );
}

#[tokio::test]
async fn within_the_grace_window_a_retry_gets_the_same_successor() {
    let lifetimes = Lifetimes {
        reuse_grace: Duration::from_secs(30),
        ..strict()
    };
    let (authority, clock) = authority(lifetimes).await;
    let first = log_in(&authority).await.refresh_token.encode();
    let second = authority.refresh(&first).await.unwrap().session.unwrap();
    clock.advance(Duration::from_secs(29));
    let retried = authority.refresh(&first).await.unwrap().session.unwrap();
    assert_eq!(
        retried.refresh_token.encode(),
        second.refresh_token.encode()
    );
    clock.advance(Duration::from_secs(2));
    assert!(matches!(
        authority.refresh(&first).await,
        Err(AuthError::RefreshTokenReused)
    ));
}

#[tokio::test]
async fn access_tokens_never_outlive_the_session_absolute_end() {
    let lifetimes = Lifetimes {
        access: Duration::from_secs(15 * 60),
        refresh_idle: HOUR,
        refresh_absolute: 2 * HOUR,
        reuse_grace: Duration::ZERO,
    };
    let (authority, clock) = authority(lifetimes).await;
    let login_ms = clock.now_ms();
    let mut token = log_in(&authority).await.refresh_token.encode();
    let end = login_ms / 1000 + 2 * 3600;
    // 1h55m in: the access token is cut to the session's end.
    for _ in 0..5 {
        clock.advance(Duration::from_secs(23 * 60));
        let issued = authority.refresh(&token).await.unwrap();
        assert!(issued.access.expires_at <= end + 1);
        token = issued.session.unwrap().refresh_token.encode();
    }
    clock.advance(Duration::from_secs(5 * 60));
    assert!(matches!(
        authority.refresh(&token).await,
        Err(AuthError::RefreshTokenInvalid)
    ));
}

#[tokio::test]
async fn scopes_may_only_narrow() {
    let (authority, _clock) = authority(strict()).await;
    let read = ["read".to_owned()];
    let narrowed = authority
        .login_password(alice("correct horse", &read))
        .await
        .unwrap();
    assert!(narrowed.session.is_some());
    let admin = ["admin".to_owned()];
    let widened = authority
        .login_password(alice("correct horse", &admin))
        .await;
    assert!(widened.is_err(), "a scope the account lacks is refused");
}

#[tokio::test]
async fn a_wrong_password_is_invalid_credentials_and_issues_nothing() {
    let (authority, _clock) = authority(strict()).await;
    let wrong = authority.login_password(alice("wrong horse", &[])).await;
    assert!(matches!(wrong, Err(AuthError::InvalidCredentials)));
}

#[tokio::test]
async fn a_user_beyond_the_session_cap_loses_the_least_recently_used_session() {
    let (authority, clock) = authority(strict()).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(log_in(&authority).await.refresh_token.encode());
        clock.advance(Duration::from_secs(1));
    }
    // The first is used again: the second becomes the least recently used.
    let renewed = authority.refresh(&sessions[0]).await.unwrap();
    clock.advance(Duration::from_secs(1));
    log_in(&authority).await;
    // The cap is enforced right after the login's answer.
    let second = RefreshToken::parse(&sessions[1]).unwrap();
    while authority
        .store
        .session_exists(second.session_id())
        .await
        .unwrap()
    {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        authority.refresh(&sessions[1]).await,
        Err(AuthError::RefreshTokenInvalid)
    ));
    let renewed = renewed.session.unwrap().refresh_token.encode();
    authority
        .refresh(&renewed)
        .await
        .expect("the recently used session lives");
    authority
        .refresh(&sessions[2])
        .await
        .expect("so does the third");
}

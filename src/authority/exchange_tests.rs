//! Exchange's decisions on their own: the memory store, a manual clock, and
//! a policy per test. Each refusal of the decision path is tried, and what
//! an accepted exchange issues is checked claim by claim.

use std::sync::Arc;
use std::time::Duration;

use tokend_interceptor::Claims;

use super::tests::{alice, authority_with};
use super::*;
use crate::admin::add_client;
use crate::clock::ManualClock;
use crate::exchange::ExchangePolicy;

/// The chain gateway -> orders -> payments -> ledger -> audit, shared with
/// the integration tests.
const POLICY: &str = include_str!("../../tests/exchange/chain-policy.toml");

/// An authority with [`POLICY`], alice, and the clients of the chain.
async fn setup() -> (Authority, ManualClock) {
    let policy = ExchangePolicy::parse(POLICY).unwrap();
    let (authority, clock) = authority_with(Lifetimes::default(), policy).await;
    for client in ["gateway", "orders", "payments", "ledger"] {
        add_client(
            &authority.store,
            &Default::default(),
            client,
            Default::default(),
        )
        .await
        .unwrap();
    }
    (authority, clock)
}

/// The claims of a token tokend issued.
fn claims_of(authority: &Authority, token: &str) -> Arc<Claims> {
    authority.subject_verifier.verify_claims(token).unwrap()
}

/// The service client `id`'s own token for tokend, as the auth layer
/// would have verified it.
async fn caller(authority: &Authority, id: &str, clock: &ManualClock) -> Claims {
    let account_version = authority.store.client(id).await.unwrap().unwrap().version;
    let issued = authority
        .issuer
        .issue(
            Grant {
                subject: id,
                audience: "tokend",
                scope: "",
                session_id: None,
                account_version,
                bound_to: None,
                act: None,
            },
            clock.now_ms(),
            None,
        )
        .unwrap();
    (*claims_of(authority, &issued.token)).clone()
}

use crate::tokens::access::Grant;

/// alice's access token for `audience`.
async fn user_token(authority: &Authority, audience: &str) -> String {
    let mut login = alice("correct horse", &[]);
    login.audience = Some(audience);
    authority.login_password(login).await.unwrap().access.token
}

async fn exchange(
    authority: &Authority,
    caller: &Claims,
    subject: &str,
    audience: &str,
    scopes: &[String],
    ttl: Option<Duration>,
) -> Result<Exchanged, AuthError> {
    authority
        .exchange(ExchangeRequest {
            caller: Caller::Token(caller),
            certificate: None,
            subject_token: subject,
            audience,
            scopes,
            ttl,
        })
        .await
}

#[tokio::test]
async fn a_derived_token_keeps_the_user_and_names_the_actor() {
    let (authority, clock) = setup().await;
    let subject = user_token(&authority, "gateway").await;
    let gateway = caller(&authority, "gateway", &clock).await;
    let done = exchange(&authority, &gateway, &subject, "orders", &[], None)
        .await
        .unwrap();
    let original = claims_of(&authority, &subject);
    let derived = claims_of(&authority, &done.access.token);
    assert_eq!(derived.sub(), "alice");
    assert_eq!(derived.sid(), original.sid());
    assert_eq!(derived.av(), original.av());
    assert_eq!(derived.aud(), "orders");
    assert_eq!(derived.scope(), "read write");
    assert_ne!(derived.jti(), original.jti());
    assert_eq!(derived.outermost_actor(), Some("gateway"));
    assert_eq!(derived.chain_depth(), 1);
    assert_eq!(derived.cnf(), None);
    assert_eq!(done.actor_chain, ["gateway"]);
    assert_eq!(done.scopes, ["read", "write"]);
    // The policy's 10 minutes, not the access-token lifetime.
    assert_eq!(derived.exp(), clock.now_ms() / 1000 + 600);
}

#[tokio::test]
async fn the_lifetime_is_the_earliest_of_subject_policy_and_request() {
    let (authority, clock) = setup().await;
    let subject = user_token(&authority, "gateway").await;
    let subject_exp = claims_of(&authority, &subject).exp();
    let gateway = caller(&authority, "gateway", &clock).await;
    // A long ttl never lengthens anything.
    let long = exchange(
        &authority,
        &gateway,
        &subject,
        "orders",
        &[],
        Some(Duration::from_secs(86_400)),
    )
    .await
    .unwrap();
    assert!(long.access.expires_at <= subject_exp);
    assert_eq!(long.access.expires_at, clock.now_ms() / 1000 + 600);
    // A short one shortens.
    let short = exchange(
        &authority,
        &gateway,
        &subject,
        "orders",
        &[],
        Some(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert_eq!(short.access.expires_at, clock.now_ms() / 1000 + 30);
    // Near the subject's end, the subject's end.
    clock.advance(Duration::from_secs(14 * 60));
    let late = exchange(&authority, &gateway, &subject, "orders", &[], None)
        .await
        .unwrap();
    assert_eq!(late.access.expires_at, subject_exp);
    // After it, nothing.
    clock.advance(Duration::from_secs(61));
    let expired = exchange(&authority, &gateway, &subject, "orders", &[], None).await;
    assert!(
        matches!(
            expired,
            Err(AuthError::SubjectToken(
                tokend_interceptor::AuthError::Expired
            ))
        ),
        "{expired:?}"
    );
}

#[tokio::test]
async fn scopes_only_narrow() {
    let (authority, clock) = setup().await;
    let subject = user_token(&authority, "gateway").await;
    let gateway = caller(&authority, "gateway", &clock).await;
    let read = ["read".to_owned()];
    let narrowed = exchange(&authority, &gateway, &subject, "orders", &read, None)
        .await
        .unwrap();
    assert_eq!(narrowed.scopes, ["read"]);
    let derived = narrowed.access.token;

    // orders may pass on read only; asking for write is refused, not dropped.
    let orders = caller(&authority, "orders", &clock).await;
    let write = ["write".to_owned()];
    let widened = exchange(&authority, &orders, &derived, "payments", &write, None).await;
    assert!(
        matches!(widened, Err(AuthError::ScopeNotAllowed(_))),
        "{widened:?}"
    );
    let admin = ["admin".to_owned()];
    let unknown = exchange(&authority, &gateway, &subject, "orders", &admin, None).await;
    assert!(matches!(unknown, Err(AuthError::ScopeNotAllowed(_))));

    // A subject with only `write`: nothing left for orders' `read` row.
    let only_write = exchange(&authority, &gateway, &subject, "orders", &write, None)
        .await
        .unwrap()
        .access
        .token;
    let empty = exchange(&authority, &orders, &only_write, "payments", &[], None).await;
    assert!(matches!(empty, Err(AuthError::ScopeNotAllowed(_))));
}

#[tokio::test]
async fn chains_are_bounded_loop_free_and_follow_the_policy() {
    let (authority, clock) = setup().await;
    let gateway = caller(&authority, "gateway", &clock).await;
    let orders = caller(&authority, "orders", &clock).await;
    let payments = caller(&authority, "payments", &clock).await;
    let ledger = caller(&authority, "ledger", &clock).await;

    let hop0 = user_token(&authority, "gateway").await;
    let hop1 = exchange(&authority, &gateway, &hop0, "orders", &[], None)
        .await
        .unwrap();
    let hop2 = exchange(
        &authority,
        &orders,
        &hop1.access.token,
        "payments",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(hop2.actor_chain, ["orders", "gateway"]);
    let hop3 = exchange(
        &authority,
        &payments,
        &hop2.access.token,
        "ledger",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(hop3.actor_chain, ["payments", "orders", "gateway"]);
    let nested = claims_of(&authority, &hop3.access.token);
    let chain: Vec<&str> = nested.actors().map(|a| a.sub()).collect();
    assert_eq!(
        chain,
        ["payments", "orders", "gateway"],
        "act is never lost"
    );

    // A fourth hop: ledger's row allows 3 actors.
    let hop4 = exchange(&authority, &ledger, &hop3.access.token, "audit", &[], None).await;
    assert!(
        matches!(hop4, Err(AuthError::ChainNotAllowed(_))),
        "{hop4:?}"
    );

    // A loop: payments obtaining a token for gateway, already in the chain.
    let looped = exchange(
        &authority,
        &payments,
        &hop2.access.token,
        "gateway",
        &[],
        None,
    )
    .await;
    assert!(
        matches!(looped, Err(AuthError::ChainNotAllowed(_))),
        "{looped:?}"
    );

    // A predecessor the row does not name: orders continuing from payments.
    let wrong_from = exchange(&authority, &ledger, &hop2.access.token, "audit", &[], None).await;
    assert!(matches!(wrong_from, Err(AuthError::SubjectNotForCaller)));
}

#[tokio::test]
async fn an_actor_already_in_the_chain_is_a_loop() {
    let policy = ExchangePolicy::parse(
        r#"
        [[exchange]]
        actor = "a"
        from = ["b"]
        targets = ["b"]
        scopes = ["read"]
        max_ttl = "5m"
        max_depth = 4
        [[exchange]]
        actor = "b"
        from = ["a"]
        targets = ["a"]
        scopes = ["read"]
        max_ttl = "5m"
        max_depth = 4
    "#,
    )
    .unwrap();
    let (authority, clock) = authority_with(Lifetimes::default(), policy).await;
    for client in ["a", "b"] {
        add_client(
            &authority.store,
            &Default::default(),
            client,
            Default::default(),
        )
        .await
        .unwrap();
    }
    let a = caller(&authority, "a", &clock).await;
    let b = caller(&authority, "b", &clock).await;
    let subject = user_token(&authority, "a").await;
    let to_b = exchange(&authority, &a, &subject, "b", &[], None)
        .await
        .unwrap();
    // b handing the user back to a: a is in the chain already.
    let back_to_a = exchange(&authority, &b, &to_b.access.token, "a", &[], None).await;
    assert!(
        matches!(back_to_a, Err(AuthError::ChainNotAllowed(_))),
        "{back_to_a:?}"
    );
    // Nor may a continue a chain it started.
    let again = exchange(&authority, &a, &to_b.access.token, "b", &[], None).await;
    assert!(
        matches!(again, Err(AuthError::SubjectNotForCaller)),
        "{again:?}"
    );
}

#[tokio::test]
async fn the_subject_must_be_for_the_caller_and_the_audience_in_the_policy() {
    let (authority, clock) = setup().await;
    let gateway = caller(&authority, "gateway", &clock).await;
    let orders = caller(&authority, "orders", &clock).await;
    let for_gateway = user_token(&authority, "gateway").await;
    // orders got hold of a token meant for gateway.
    let stolen = exchange(&authority, &orders, &for_gateway, "payments", &[], None).await;
    assert!(matches!(stolen, Err(AuthError::SubjectNotForCaller)));
    // gateway may not obtain payments tokens directly.
    let skipped = exchange(&authority, &gateway, &for_gateway, "payments", &[], None).await;
    assert!(matches!(skipped, Err(AuthError::ExchangeNotAllowed)));
    // Nor may anything be obtained without a policy row.
    let (bare, clock) = authority_with(Lifetimes::default(), ExchangePolicy::default()).await;
    add_client(
        &bare.store,
        &Default::default(),
        "gateway",
        Default::default(),
    )
    .await
    .unwrap();
    let gateway = caller(&bare, "gateway", &clock).await;
    let subject = user_token(&bare, "gateway").await;
    let denied = exchange(&bare, &gateway, &subject, "orders", &[], None).await;
    assert!(matches!(denied, Err(AuthError::ExchangeNotAllowed)));
}

#[tokio::test]
async fn malformed_subjects_never_fall_back_to_the_caller() {
    let (authority, clock) = setup().await;
    let gateway = caller(&authority, "gateway", &clock).await;
    let session = authority
        .login_password(alice("correct horse", &[]))
        .await
        .unwrap()
        .session
        .unwrap();
    let refresh = session.refresh_token.encode();
    for subject in [String::new(), refresh, "x".repeat(5000), "garbage".into()] {
        let refused = exchange(&authority, &gateway, &subject, "orders", &[], None).await;
        assert!(
            matches!(refused, Err(AuthError::InvalidRequest(_))),
            "{refused:?}"
        );
    }
    let forged = "v4.public.AAAA.eyJraWQiOiJ4In0";
    let refused = exchange(&authority, &gateway, forged, "orders", &[], None).await;
    assert!(
        matches!(refused, Err(AuthError::SubjectToken(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn revoked_sessions_and_disabled_accounts_are_refused() {
    let (authority, clock) = setup().await;
    let gateway = caller(&authority, "gateway", &clock).await;
    let issued = {
        let mut login = alice("correct horse", &[]);
        login.audience = Some("gateway");
        authority.login_password(login).await.unwrap()
    };
    let subject = issued.access.token;
    exchange(&authority, &gateway, &subject, "orders", &[], None)
        .await
        .unwrap();
    let refresh = issued.session.unwrap().refresh_token.encode();
    authority.revoke(&refresh).await.unwrap();
    let revoked = exchange(&authority, &gateway, &subject, "orders", &[], None).await;
    assert!(
        matches!(revoked, Err(AuthError::SessionRevoked)),
        "{revoked:?}"
    );

    // A disabled caller cannot exchange, even with a token from before.
    let fresh = user_token(&authority, "gateway").await;
    crate::admin::cutoff::end_client(
        &authority.store,
        &authority.feed,
        "gateway",
        crate::store::AccountChange::Disable,
    )
    .await
    .unwrap();
    authority.accounts.forget("gateway");
    let disabled = exchange(&authority, &gateway, &fresh, "orders", &[], None).await;
    assert!(
        matches!(disabled, Err(AuthError::SessionRevoked)),
        "{disabled:?}"
    );
}

#[tokio::test]
async fn only_a_service_clients_own_token_for_tokend_may_exchange() {
    let (authority, clock) = setup().await;
    let subject = user_token(&authority, "gateway").await;
    // A user's token as the caller.
    let user = user_token(&authority, "tokend").await;
    let user = (*claims_of(&authority, &user)).clone();
    let refused = exchange(&authority, &user, &subject, "orders", &[], None).await;
    assert!(matches!(refused, Err(AuthError::ExchangeNotAllowed)));
    // A client token for another audience.
    let elsewhere = caller(&authority, "gateway", &clock)
        .await
        .with_audience("internal");
    let refused = exchange(&authority, &elsewhere, &subject, "orders", &[], None).await;
    assert!(matches!(refused, Err(AuthError::WrongAudience)));
    // A delegated token as the caller's identity.
    let gateway = caller(&authority, "gateway", &clock).await;
    let derived = exchange(&authority, &gateway, &subject, "orders", &[], None)
        .await
        .unwrap();
    let delegated = (*claims_of(&authority, &derived.access.token))
        .clone()
        .with_audience("tokend");
    let refused = exchange(&authority, &delegated, &subject, "orders", &[], None).await;
    assert!(matches!(refused, Err(AuthError::ChainNotAllowed(_))));
}

#[tokio::test]
async fn a_service_cannot_act_for_itself() {
    let (authority, clock) = setup().await;
    let gateway = caller(&authority, "gateway", &clock).await;
    // gateway's own token, for gateway: the subject is the caller.
    let version = authority
        .store
        .client("gateway")
        .await
        .unwrap()
        .unwrap()
        .version;
    let token = authority
        .issuer
        .issue(
            Grant {
                subject: "gateway",
                audience: "gateway",
                scope: "read",
                session_id: None,
                account_version: version,
                bound_to: None,
                act: None,
            },
            clock.now_ms(),
            None,
        )
        .unwrap()
        .token;
    let refused = exchange(&authority, &gateway, &token, "orders", &[], None).await;
    assert!(
        matches!(refused, Err(AuthError::ChainNotAllowed(_))),
        "{refused:?}"
    );
}

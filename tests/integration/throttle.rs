//! Password guessing as an attacker would try it: from one source, from a
//! swarm of sources, behind a proxy, against service clients, and as a
//! flood meant to starve everyone else's logins. Sources are real: each
//! simulated source connects from its own loopback address (127.1.x.y).

use std::time::{Duration, Instant};

use tokend_interceptor::Reason;
use tonic::Code;

use crate::harness::*;

/// The delay a throttled (or overloaded) answer asks for.
#[track_caller]
fn retry_delay<T: std::fmt::Debug>(result: Result<T, tonic::Status>, expected: Reason) -> Duration {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(Reason::of(&status), Some(expected), "{status:?}");
    Reason::retry_delay(&status).expect("a google.rpc.RetryInfo delay")
}

#[tokio::test]
async fn guesses_from_one_source_are_throttled_while_the_user_logs_in_from_another() {
    let (_redis, tokend, _client) = with_alice(&[]).await;
    let mut attacker = tokend.client_from(loopback_source(1)).await;
    let mut user = tokend.client_from(loopback_source(2)).await;

    for _ in 0..5 {
        assert_reason(
            attacker.login(password_login("alice", "guess")).await,
            Reason::InvalidCredentials,
        );
    }
    // From now on, even the right password is not checked from there.
    let wait = retry_delay(
        attacker.login(password_login("alice", "pw")).await,
        Reason::LoginThrottled,
    );
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    for _ in 0..50 {
        retry_delay(
            attacker.login(password_login("alice", "guess")).await,
            Reason::LoginThrottled,
        );
    }
    // Only the five guesses were hashed.
    assert_eq!(tokend.logs().matches("password login refused").count(), 5);

    // The user elsewhere is not affected.
    login(&mut user, "alice", "pw").await;

    // After the delay one more guess is served, and the next delay doubles.
    tokio::time::sleep(wait).await;
    assert_reason(
        attacker.login(password_login("alice", "guess")).await,
        Reason::InvalidCredentials,
    );
    let longer = retry_delay(
        attacker.login(password_login("alice", "guess")).await,
        Reason::LoginThrottled,
    );
    assert!(longer > Duration::from_millis(1_500), "{longer:?}");
}

#[tokio::test]
async fn a_swarm_of_sources_slows_the_account_but_never_locks_out_the_user() {
    let (_redis, tokend, _client) = with_alice(&[
        "--throttle-account",
        "10",
        "--throttle-account-max-delay",
        "2s",
    ])
    .await;
    let mut home = tokend.client_from(loopback_source(1)).await;
    login(&mut home, "alice", "pw").await;

    // Each source guesses once: no source is over its own limit.
    let mut throttled = 0;
    for n in 0..30 {
        let mut bot = tokend.client_from(loopback_source(100 + n)).await;
        match bot.login(password_login("alice", "guess")).await {
            Err(status) if Reason::of(&status) == Some(Reason::LoginThrottled) => {
                let wait = Reason::retry_delay(&status).expect("RetryInfo");
                assert!(wait <= Duration::from_secs(2), "capped: {wait:?}");
                throttled += 1;
            }
            Err(status) => assert_eq!(Reason::of(&status), Some(Reason::InvalidCredentials)),
            Ok(_) => panic!("a guess succeeded"),
        }
    }
    assert!(
        throttled >= 15,
        "the account slowed the swarm down: {throttled}"
    );
    assert!(
        tokend.logs().matches("password login refused").count() <= 12,
        "throttled guesses cost no hashing"
    );

    // The user's own source is not held up by the account's delay.
    login(&mut home, "alice", "pw").await;
    // A new device of the user waits the delay, then gets in.
    let mut phone = tokend.client_from(loopback_source(2)).await;
    let wait = match phone.login(password_login("alice", "pw")).await {
        Ok(_) => Duration::ZERO,
        Err(status) => {
            assert_eq!(
                Reason::of(&status),
                Some(Reason::LoginThrottled),
                "{status:?}"
            );
            Reason::retry_delay(&status).expect("RetryInfo")
        }
    };
    tokio::time::sleep(wait).await;
    login(&mut phone, "alice", "pw").await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_source() {
    let (_redis, _tokend, mut client) =
        with_alice_in_process(&["--trusted-proxy", "127.0.0.1/32"]).await;
    let from = |forwarded: &str, password: &str| {
        let mut request = tonic::Request::new(password_login("alice", password));
        request
            .metadata_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
        request
    };
    for _ in 0..5 {
        assert_reason(
            client.login(from("203.0.113.7", "guess")).await,
            Reason::InvalidCredentials,
        );
    }
    retry_delay(
        client.login(from("203.0.113.7", "pw")).await,
        Reason::LoginThrottled,
    );
    // A spoofed address in front of the proxy's own entry changes nothing.
    retry_delay(
        client.login(from("198.51.100.1, 203.0.113.7", "pw")).await,
        Reason::LoginThrottled,
    );
    // Another client behind the same proxy logs in.
    client
        .login(from("203.0.113.8", "pw"))
        .await
        .expect("another forwarded source");

    // Without --trusted-proxy the header is not believed.
    let (_redis, tokend, _) = with_alice(&[]).await;
    let mut direct = tokend.client_from(loopback_source(9)).await;
    for n in 0..5 {
        let mut request = tonic::Request::new(password_login("alice", "guess"));
        let forged = format!("198.51.100.{n}");
        request
            .metadata_mut()
            .insert("x-forwarded-for", forged.parse().unwrap());
        assert_reason(direct.login(request).await, Reason::InvalidCredentials);
    }
    retry_delay(
        direct.login(password_login("alice", "pw")).await,
        Reason::LoginThrottled,
    );
}

#[tokio::test]
async fn client_credential_guessing_is_throttled_too() {
    let redis = RedisServer::start();
    let secret = add_client(&redis, "svc", &["read"]);
    let tokend = Tokend::builder().redis(&redis).start();
    let mut attacker = tokend.client_from(loopback_source(1)).await;
    for n in 0..5 {
        assert_reason(
            attacker
                .login(client_login("svc", &format!("tkd_cs_guess{n}")))
                .await,
            Reason::InvalidCredentials,
        );
    }
    retry_delay(
        attacker.login(client_login("svc", &secret)).await,
        Reason::LoginThrottled,
    );
    let mut service = tokend.client_from(loopback_source(2)).await;
    service
        .login(client_login("svc", &secret))
        .await
        .expect("the service itself logs in");
}

/// Sends `count` wrong-password logins for `victim` at once, from `sources`
/// sources, and returns their outcomes while `during` runs.
async fn flood<F: Future<Output = ()>>(
    tokend: &Tokend,
    victim: &str,
    count: usize,
    sources: u16,
    during: F,
) -> (usize, usize) {
    let mut clients = Vec::new();
    for n in 0..sources {
        clients.push(tokend.client_from(loopback_source(n)).await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut client = clients[i % clients.len()].clone();
        let victim = victim.to_owned();
        calls.spawn(async move { client.login(password_login(&victim, "guess")).await });
    }
    during.await;
    let (mut throttled, mut refused) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Err(status) if Reason::of(&status) == Some(Reason::LoginThrottled) => throttled += 1,
            Err(status) if Reason::of(&status) == Some(Reason::InvalidCredentials) => refused += 1,
            other => panic!("unexpected outcome of a guess: {other:?}"),
        }
    }
    assert_eq!(throttled + refused, count);
    (throttled, refused)
}

#[tokio::test]
async fn a_guessing_flood_on_one_account_leaves_everyone_else_logging_in() {
    // The hashing line never refuses bob here: what is tested is that the
    // flood on alice takes none of his turns, not how fast a loaded
    // machine hashes.
    let (redis, tokend, _) = with_alice(&["--password-hash-max-wait", "30s"]).await;
    add_user(&redis, "bob", "bob-pw", &["read"]);
    let bystander = tokend.client_from(loopback_source(999)).await;
    let bob_logs_in = |label: &'static str| {
        let mut bob = bystander.clone();
        async move {
            let started = Instant::now();
            let mut request = tonic::Request::new(password_login("bob", "bob-pw"));
            request.set_timeout(Duration::from_secs(30));
            bob.login(request)
                .await
                .unwrap_or_else(|s| panic!("{label}: bob's login failed: {s:?}"));
            eprintln!("{label}: bob logged in after {:?}", started.elapsed());
        }
    };

    // 500 guesses in flight from one source, then from 250 sources.
    for (sources, label) in [(1, "one source"), (250, "250 sources")] {
        let (throttled, refused) = flood(&tokend, "alice", 500, sources, bob_logs_in(label)).await;
        eprintln!("{label}: {throttled} throttled, {refused} hashed and refused");
        assert!(
            throttled >= 450,
            "{label}: most guesses never reached the hasher"
        );
    }
}

#[tokio::test]
async fn a_hashing_backlog_is_refused_at_once_and_abandoned_logins_cost_nothing() {
    let (redis, tokend, _) = with_alice(&[
        "--password-hash-threads",
        "1",
        "--password-hash-max-wait",
        "100ms",
    ])
    .await;
    let _ = redis;
    // Unknown accounts from many sources: nothing to throttle, all hashed.
    let mut clients = Vec::new();
    for n in 0..50 {
        clients.push(tokend.client_from(loopback_source(n)).await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let mut client = clients[i % clients.len()].clone();
        calls.spawn(async move {
            client
                .login(password_login(&format!("ghost{i}"), "x"))
                .await
        });
    }
    let mut overloaded = 0;
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Err(status) if Reason::of(&status) == Some(Reason::Overloaded) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(Reason::retry_delay(&status).is_some(), "RetryInfo");
                overloaded += 1;
            }
            Err(status) => assert_eq!(Reason::of(&status), Some(Reason::InvalidCredentials)),
            Ok(_) => panic!("a ghost logged in"),
        }
    }
    assert!(
        overloaded >= 100,
        "a backlog beyond 100 ms is refused: {overloaded}"
    );
}

#[tokio::test]
async fn logins_whose_callers_gave_up_cost_no_hashing() {
    // One hashing thread and no wait budget to speak of: every caller is
    // admitted to the line, so only giving up keeps them from being hashed.
    let metrics = format!("127.0.0.1:{}", free_port());
    let (_redis, tokend, mut client) = with_alice(&[
        "--password-hash-threads",
        "1",
        "--password-hash-max-wait",
        "60s",
        "--metrics-listen",
        &metrics,
    ])
    .await;
    let url = format!("http://{metrics}/metrics");
    login(&mut client, "alice", "pw").await;
    let hashed_before = scrape(&url).get("tokend_password_hashes_total", &[]);
    let mut clients = Vec::new();
    for n in 0..40 {
        clients.push(tokend.client_from(loopback_source(n)).await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let mut client = client;
        calls.spawn(async move {
            let mut request = tonic::Request::new(password_login(&format!("gone{i}"), "x"));
            request.set_timeout(Duration::from_millis(5));
            client.login(request).await
        });
    }
    while let Some(result) = calls.join_next().await {
        let status = result.unwrap().expect_err("gave up");
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    // The line drains: a login after them is served (and it is hashed).
    client
        .login(password_login("alice", "pw"))
        .await
        .expect("served after the abandoned ones");
    let after = scrape(&url);
    let hashed = after.get("tokend_password_hashes_total", &[]) - hashed_before;
    let dropped = after.get("tokend_password_hashes_dropped_total", &[]);
    eprintln!("40 abandoned logins and one real one: {hashed} hashed, {dropped} skipped");
    // Counted, not timed: the abandoned jobs are skipped when their turn
    // comes (a job that began before its caller's 5 ms ran out is hashed).
    assert!(hashed >= 1.0, "the real login was hashed");
    assert!(
        hashed <= 4.0,
        "abandoned logins were hashed: {hashed} of 41"
    );
}

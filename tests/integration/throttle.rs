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

    // Each source guesses twice: no source is over its own limit, but the
    // account is over its own: a source that has failed on it waits.
    let mut throttled = 0;
    for n in 0..30 {
        let mut bot = tokend.client_from(loopback_source(100 + n)).await;
        for _ in 0..2 {
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
    }
    assert!(
        throttled >= 20,
        "the account held back the sources that failed: {throttled}"
    );
    assert!(
        tokend.logs().matches("password login refused").count() <= 40,
        "throttled guesses cost no hashing: one per source beyond the allowance"
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
    // Neither the hashing line nor the store's deadline refuses anyone
    // here: what is tested is that the flood on alice takes none of bob's
    // turns, not how fast a loaded machine hashes and answers.
    let (redis, tokend, _) =
        with_alice(&["--password-hash-max-wait", "30s", "--redis-timeout", "20s"]).await;
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

/// 24 guessers sending `request` from loopback addresses (from
/// `first_source` on), each again as soon as it is answered, until
/// stopped; counts the answers.
struct Swarm {
    stop: tokio::sync::watch::Sender<bool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl Swarm {
    async fn start(tokend: &Tokend, request: pb_login::LoginRequest, first_source: u16) -> Swarm {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..24 {
            let mut client = tokend.client_from(loopback_source(first_source + n)).await;
            let (stopped, answered, request) = (stopped.clone(), answered.clone(), request.clone());
            tasks.spawn(async move {
                while !*stopped.borrow() {
                    match client.login(request.clone()).await {
                        Err(s)
                            if matches!(
                                Reason::of(&s),
                                Some(Reason::InvalidCredentials | Reason::LoginThrottled)
                            ) =>
                        {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        other => panic!("a guess got {other:?}"),
                    }
                    // A polite few ms, so the test machine stays usable:
                    // still thousands of guesses a second in all.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        Swarm {
            stop,
            answered,
            tasks,
        }
    }

    /// Waits until the swarm's guesses were answered `count` times.
    async fn answered_at_least(&self, count: usize) {
        eventually(
            "the swarm to be answered",
            Duration::from_secs(30),
            || async { self.answered.load(std::sync::atomic::Ordering::Relaxed) >= count },
        )
        .await;
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        while let Some(task) = self.tasks.join_next().await {
            task.unwrap();
        }
    }
}

use tokend::proto::tokend::v1 as pb_login;

/// Logs in with `request` from `client`, following RetryInfo as a real
/// client would; returns the attempts made and the delays it was told.
async fn login_following_retry_info(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    request: pb_login::LoginRequest,
) -> (usize, Vec<Duration>) {
    let mut told = Vec::new();
    for attempt in 1..=10 {
        match client.login(request.clone()).await {
            Ok(_) => return (attempt, told),
            Err(status) => {
                assert_eq!(
                    Reason::of(&status),
                    Some(Reason::LoginThrottled),
                    "{status:?}"
                );
                let wait = Reason::retry_delay(&status).expect("RetryInfo");
                told.push(wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
    panic!("not in after 10 attempts; told to wait {told:?}");
}

#[tokio::test]
async fn a_swarm_at_a_users_name_with_client_secrets_costs_the_user_nothing() {
    let (_redis, tokend, _) = with_alice(&["--throttle-account", "5"]).await;
    let guess = client_login("alice", "tkd_cs_guess");
    let swarm = Swarm::start(&tokend, guess, 10).await;
    swarm.answered_at_least(500).await;
    // The user alice from a new address: no delay at all (users and
    // clients are counted apart).
    let mut phone = tokend.client_from(loopback_source(2)).await;
    login(&mut phone, "alice", "pw").await;
    swarm.stop().await;
}

#[tokio::test]
async fn a_swarm_of_24_sources_never_keeps_the_user_or_a_service_out() {
    let max_delay = Duration::from_secs(2);
    let metrics = format!("127.0.0.1:{}", free_port());
    let (redis, tokend, _) = with_alice(&[
        "--throttle-account",
        "5",
        "--throttle-account-max-delay",
        "2s",
        "--metrics-listen",
        &metrics,
    ])
    .await;
    let secret = add_client(&redis, "svc", &["read"]);

    // 24 sources guess alice's password, each as soon as it may, until
    // every one of them has failed (the swarm is at full strength: from
    // then on each of its sources waits the account's delay).
    let swarm = Swarm::start(&tokend, password_login("alice", "guess"), 10).await;
    let url = format!("http://{metrics}/metrics");
    let refused = (
        "tokend_logins_total",
        [("kind", "password"), ("outcome", "invalid_credentials")],
    );
    eventually("24 sources to have failed", Duration::from_secs(60), || {
        let url = url.clone();
        async move { scrape(&url).get(refused.0, &refused.1) >= 24.0 }
    })
    .await;
    let mut phone = tokend.client_from(loopback_source(2)).await;
    let (attempts, told) =
        login_following_retry_info(&mut phone, password_login("alice", "pw")).await;
    let waited: Duration = told.iter().sum();
    eprintln!("the user got in at attempt {attempts}, told to wait {told:?} in all {waited:?}");
    swarm.stop().await;
    assert!(
        waited <= 2 * max_delay,
        "in within twice the delay: told to wait {told:?}"
    );

    // 24 sources guess the service's secret; the service from a new pod
    // address gets in at once (a correct secret passes the account gate).
    let swarm = Swarm::start(&tokend, client_login("svc", "tkd_cs_guess"), 100).await;
    swarm.answered_at_least(500).await;
    let mut pod = tokend.client_from(loopback_source(3)).await;
    let (attempts, told) = login_following_retry_info(&mut pod, client_login("svc", &secret)).await;
    swarm.stop().await;
    assert_eq!(
        (attempts, told),
        (1, Vec::new()),
        "the service was kept out"
    );
}

#[tokio::test]
async fn a_flood_from_one_source_never_throttles_the_user_at_her_own_source() {
    let (_redis, tokend, mut home) = with_alice(&["--password-hash-max-wait", "30s"]).await;
    login(&mut home, "alice", "pw").await;
    // One source floods alice with guesses, refused at once after five.
    let mut flood = tokio::task::JoinSet::new();
    let attacker = tokend.client_from(loopback_source(1)).await;
    for _ in 0..8 {
        let mut attacker = attacker.clone();
        flood.spawn(async move {
            for _ in 0..300 {
                let _ = attacker.login(password_login("alice", "guess")).await;
            }
        });
    }
    let mut throttled = 0;
    for _ in 0..30 {
        match home.login(password_login("alice", "pw")).await {
            Ok(_) => {}
            Err(s) if Reason::of(&s) == Some(Reason::LoginThrottled) => throttled += 1,
            Err(s) => panic!("{s:?}"),
        }
    }
    while flood.join_next().await.is_some() {}
    assert_eq!(throttled, 0, "the flood took the user's hashing places");
}

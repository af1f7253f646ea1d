//! tokend on Redis Cluster and under Sentinel, several tokend replicas, and
//! a primary failover that loses nothing and revives nothing: real
//! `redis-server` clusters and sentinels, real tokend binaries, SIGKILL.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokend_interceptor::Reason;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

const PASSWORD: &str = "scale-out-password";

/// Sessions per group checked after the failover.
const GROUP: usize = 30;

/// A deployment whose feed primary a test can kill.
trait Failover: Deployment {
    /// SIGKILLs the primary that holds the revocation feed.
    fn kill_feed_primary(&mut self);
    /// Waits until a replica took over.
    fn wait_promoted(&self);
    /// Whether `key` lives on the primary that holds the feed.
    fn with_feed(&self, key: &str) -> bool;
}

const FEED_KEY: &str = "tokend:{revocations}";

impl Failover for RedisCluster {
    fn kill_feed_primary(&mut self) {
        let primary = self.primary_for(FEED_KEY);
        self.kill(primary);
    }

    fn wait_promoted(&self) {
        self.wait_serving();
    }

    fn with_feed(&self, key: &str) -> bool {
        self.primary_for(key) == self.primary_for(FEED_KEY)
    }
}

impl Failover for RedisSentinel {
    fn kill_feed_primary(&mut self) {
        let primary = self.primary();
        self.kill(primary);
    }

    fn wait_promoted(&self) {
        self.wait_serving();
    }

    fn with_feed(&self, _key: &str) -> bool {
        true
    }
}

/// The session key of a refresh token `tkd_rt_<sid>.<secret>`.
fn session_key(refresh_token: &str) -> String {
    let sid = refresh_token
        .strip_prefix("tkd_rt_")
        .and_then(|rest| rest.split('.').next())
        .expect("refresh token shape");
    format!("tokend:session:{{{sid}}}")
}

/// Users `u0`..`u5`, created with the CLI on the deployment.
fn add_users(redis: &impl Deployment) -> Vec<String> {
    (0..6)
        .map(|i| {
            let name = format!("u{i}");
            add_user(redis, &name, PASSWORD, &["read"]);
            name
        })
        .collect()
}

/// `count` fresh sessions (refresh tokens), spread over `users`.
async fn sessions(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    users: &[String],
    count: usize,
) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let user = &users[i % users.len()];
        out.push(login(client, user, PASSWORD).await.refresh_token);
    }
    out
}

/// A status as a short label for counting.
fn label(result: &Result<(), tonic::Status>) -> String {
    match result {
        Ok(()) => "OK".into(),
        Err(status) => format!("{:?}/{:?}", status.code(), Reason::of(status)),
    }
}

async fn health(url: String) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "tokend.v1.TokenService".into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

/// Refresh again while it answers STORE_UNAVAILABLE, for at most 10 s.
async fn refresh_retried(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Result<tokend::proto::tokend::v1::TokenPair, tonic::Status> {
    let started = Instant::now();
    loop {
        match refresh(client, token).await {
            Err(status)
                if Reason::of(&status) == Some(Reason::StoreUnavailable)
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
}

/// What callers saw while the feed's primary died and a replica took over.
#[derive(Debug, Default)]
struct Seen {
    /// Answers to Refresh under load, by code and reason.
    codes: BTreeMap<String, usize>,
    /// Health answers of one replica, by status.
    health: BTreeMap<String, usize>,
}

/// The whole failover scenario on `redis`, through two tokend replicas and
/// a resource server watching the second:
///
/// - before: sessions rotated once (live), rotated twice (their first token
///   consumed), revoked; every write confirmed by a replica;
/// - during: 8 callers refresh in a loop through both replicas (retrying a
///   failed call with the same token, as clients do), health is polled,
///   and the feed's primary is SIGKILLed;
/// - after the promotion: no consumed token yields a pair, no revoked
///   session refreshes, every live one does (also every session of the
///   callers that retried through the failover), and a new revocation
///   through one replica reaches the resource server watching the other.
///
/// tokend runs with the flags as shipped (the reuse grace window, the store
/// timeout, the replica confirmations): what the contract says of a
/// retried Refresh must hold without tuning.
async fn failover_loses_nothing_and_revives_nothing(mut redis: impl Failover) {
    let users = add_users(&redis);
    let watcher = Watcher::in_redis(&redis);
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = signing_key(dir.path(), "signing.key");
    let flags = ["--signing-key-file", key.to_str().unwrap()];
    let a = Tokend::builder()
        .redis(&redis)
        .shipped_reuse_grace()
        .args(flags)
        .start();
    let b = Tokend::builder()
        .redis(&redis)
        .shipped_reuse_grace()
        .args(flags)
        .start();
    let resource = ResourceServer::watching(&b, &watcher, &[]);
    let mut ca = a.client().await;
    let mut cb = b.client().await;

    let mut live = Vec::new();
    for token in sessions(&mut ca, &users, GROUP).await {
        live.push(refresh(&mut cb, &token).await.unwrap().refresh_token);
    }
    let mut consumed = Vec::new();
    for token in sessions(&mut ca, &users, GROUP).await {
        let second = refresh(&mut ca, &token).await.unwrap().refresh_token;
        refresh(&mut cb, &second).await.unwrap();
        consumed.push(token);
    }
    let revoked = sessions(&mut ca, &users, GROUP).await;
    for token in &revoked {
        revoke(&mut cb, token).await.unwrap();
    }
    // A session on the feed's primary, to time how long its writes were
    // unavailable.
    let probe = loop {
        let token = sessions(&mut ca, &users, 1).await.remove(0);
        if redis.with_feed(&session_key(&token)) {
            break token;
        }
    };
    let load = sessions(&mut ca, &users, 8).await;

    // Callers and a health poller run through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut callers = tokio::task::JoinSet::new();
    for (i, mut token) in load.into_iter().enumerate() {
        let mut client = if i % 2 == 0 {
            a.client().await
        } else {
            b.client().await
        };
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        // Each caller keeps its session through the failover by retrying a
        // failed Refresh with the same token; its last token comes back.
        callers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = refresh(&mut client, &token).await;
                if let Ok(pair) = &result {
                    token = pair.refresh_token.clone();
                }
                let label = label(&result.map(|_| ()));
                *seen.lock().unwrap().codes.entry(label).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            token
        });
    }
    {
        let (stop, seen, url) = (Arc::clone(&stop), Arc::clone(&seen), a.url());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = health(url.clone()).await;
                *seen
                    .lock()
                    .unwrap()
                    .health
                    .entry(format!("{status:?}"))
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    redis.kill_feed_primary();
    let killed = Instant::now();
    let unavailable = loop {
        match refresh(&mut ca, &probe).await {
            Ok(_) => break killed.elapsed(),
            Err(status) => {
                assert_eq!(
                    Reason::of(&status),
                    Some(Reason::StoreUnavailable),
                    "during the failover: {status:?}"
                );
                assert!(
                    killed.elapsed() < Duration::from_secs(60),
                    "writes never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    redis.wait_promoted();
    // The health poller sees SERVING again.
    let back = Instant::now();
    while health(a.url()).await != Some(ServingStatus::Serving) {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "health never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let mut retried = Vec::new();
    while let Some(token) = callers.join_next().await {
        retried.push(token.expect("a caller"));
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "failover: writes on the feed's primary unavailable for {unavailable:?}; \
         Refresh answers under load {:?}; health {:?}",
        seen.codes, seen.health
    );
    for code in seen.codes.keys() {
        assert!(
            code == "OK" || code == "Unavailable/Some(StoreUnavailable)",
            "callers saw {code} during the failover (only OK or UNAVAILABLE / \
             STORE_UNAVAILABLE are acceptable): {:?}",
            seen.codes
        );
    }
    assert!(seen.codes.contains_key("OK"), "the load made progress");
    assert!(
        seen.health.contains_key("Some(NotServing)"),
        "health went NOT_SERVING during the failover: {:?}",
        seen.health
    );

    // Nothing lost, revived or resurrected; through either replica. A call
    // that meets a connection still pointing at the old primary answers
    // STORE_UNAVAILABLE once; it is retried, as clients do.
    let mut lost = 0;
    // The callers that refreshed through the failover kept their sessions
    // (checked first: a caller whose last Refresh was answered
    // STORE_UNAVAILABLE retries it within the grace window).
    for (i, token) in retried.iter().enumerate() {
        let client = if i % 2 == 0 { &mut ca } else { &mut cb };
        if refresh_retried(client, token).await.is_err() {
            lost += 1;
        }
    }
    for (i, token) in live.iter().enumerate() {
        let client = if i % 2 == 0 { &mut ca } else { &mut cb };
        if refresh_retried(client, token).await.is_err() {
            lost += 1;
        }
    }
    let mut revived = 0;
    for token in &consumed {
        // Rotated past twice: reuse once the grace window has passed since
        // it was consumed, a late duplicate (refused, ending nothing)
        // before; which one depends on how long the failover took.
        match refresh_retried(&mut cb, token).await {
            Ok(_) => revived += 1,
            Err(status) => assert!(
                matches!(
                    Reason::of(&status),
                    Some(Reason::RefreshTokenReused | Reason::RefreshTokenInvalid)
                ),
                "{status:?}"
            ),
        }
    }
    let mut resurrected = 0;
    for token in &revoked {
        match refresh_retried(&mut ca, token).await {
            Ok(_) => resurrected += 1,
            Err(status) => assert_eq!(Reason::of(&status), Some(Reason::RefreshTokenInvalid)),
        }
    }
    assert_eq!(
        (lost, revived, resurrected),
        (0, 0, 0),
        "lost live sessions, revived consumed tokens, resurrected revoked sessions"
    );

    // A revocation through one replica reaches a watcher of the other.
    let pair = login(&mut ca, &users[0], PASSWORD).await;
    let mut echo = resource.client().await;
    let authorization = bearer(&pair.access_token);
    echo.echo(echo_request("x", Some(&authorization)))
        .await
        .expect("the new token works");
    revoke(&mut ca, &pair.refresh_token).await.unwrap();
    let took = time_until_refused(
        &mut echo,
        &authorization,
        Reason::SessionRevoked,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        took.is_some(),
        "a revocation after the failover reaches the other replica's watcher"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_loses_nothing_and_revives_nothing() {
    failover_loses_nothing_and_revives_nothing(RedisCluster::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_nothing_and_revives_nothing() {
    failover_loses_nothing_and_revives_nothing(RedisSentinel::start()).await;
}

/// A tokend on `primary` with `acks` (`--redis-replica-acks`) and a grace
/// window, so a retried Refresh gets the same successor.
fn tokend_with_acks(primary: &RedisServer, acks: &str) -> Tokend {
    Tokend::builder()
        .redis(primary)
        .args([
            "--redis-replica-acks",
            acks,
            "--refresh-reuse-grace",
            "30s",
            "--redis-timeout",
            "1s",
        ])
        .start()
}

/// Asserts that `result` is UNAVAILABLE / STORE_UNAVAILABLE.
#[track_caller]
fn unconfirmed<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    match result {
        Err(status) => {
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "{what}: {status:?}"
            );
            assert_eq!(
                Reason::of(&status),
                Some(Reason::StoreUnavailable),
                "{what}"
            );
        }
        Ok(answer) => panic!("{what} answered OK though no replica could confirm it: {answer:?}"),
    }
}

/// Retries `call` as clients do after `STORE_UNAVAILABLE` (the contract
/// allows it) until it is answered OK; any other refusal fails the test.
async fn retried_until_answered<T, Fut>(mut call: impl FnMut() -> Fut)
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let started = Instant::now();
    while let Err(status) = call().await {
        assert_eq!(
            Reason::of(&status),
            Some(Reason::StoreUnavailable),
            "{status:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never confirmed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How soon the watching resource server behind `echo` refuses an ended
/// session's `access_token`; fails the test if not within
/// [`REVOCATION_DEADLINE`] of `what` being answered.
async fn refused_soon(echo: &mut EchoClient, access_token: &str, what: &str) -> Duration {
    let took = time_until_refused(
        echo,
        &bearer(access_token),
        Reason::SessionRevoked,
        REVOCATION_DEADLINE,
    )
    .await;
    took.unwrap_or_else(|| {
        panic!(
            "the ended session's access token was still accepted {REVOCATION_DEADLINE:?} after \
             the {what} was answered"
        )
    })
}

/// Found by `make chaos TOPOLOGY=cluster SEED=5`: a Revoke answered
/// `STORE_UNAVAILABLE` (no replica confirmed it in time) had ended the
/// session on the primary but announced nothing; its retry found no
/// session, answered OK as for any unknown token, and announced nothing
/// either: the resource servers accepted the session's access token until
/// it expired. A revoked session's revoking token is now remembered, and a
/// repeated revoke with it announces the end again. And found by `make
/// chaos TOPOLOGY=sentinel SEED=4`: the first retry, also unconfirmed, used
/// up the one announcement a repeat was allowed, so the retry answered OK
/// announced nothing; repeats now announce until one's announcement is
/// confirmed. Here the Revoke and two retries are unconfirmed.
#[tokio::test]
async fn a_revoke_retried_after_an_unconfirmed_answer_reaches_the_resource_servers() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    add_user(&primary, "alice", PASSWORD, &["read"]);
    let tokend = tokend_with_acks(&primary, "auto");
    let resource = ResourceServer::watching(&tokend, &Watcher::in_redis(&primary), &[]);
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let pair = login(&mut client, "alice", PASSWORD).await;
    echo.echo(echo_request("x", Some(&bearer(&pair.access_token))))
        .await
        .expect("accepted while the session lives");

    replica.node().pause();
    for _ in 0..3 {
        unconfirmed(revoke(&mut client, &pair.refresh_token).await, "Revoke");
    }
    replica.node().resume();
    // The client retries, as the contract allows, until it is answered.
    retried_until_answered(|| {
        let mut client = client.clone();
        let token = pair.refresh_token.clone();
        async move { revoke(&mut client, &token).await }
    })
    .await;
    let took = refused_soon(&mut echo, &pair.access_token, "Revoke").await;
    println!("refused {took:?} after the retried Revoke was answered");
}

/// The same for a session ended by id at its owner's request
/// (`RevokeSession`): answered `STORE_UNAVAILABLE`, it may have ended the
/// session unannounced, and its retry found no session (`NOT_FOUND`) and
/// announced nothing. The owner's end is now remembered like a revoke's
/// (and, as there, repeats announce until one's announcement is confirmed:
/// here the request and two retries are unconfirmed).
#[tokio::test]
async fn a_revoke_session_retried_after_an_unconfirmed_answer_reaches_the_resource_servers() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    add_user(&primary, "alice", PASSWORD, &["read"]);
    let tokend = tokend_with_acks(&primary, "auto");
    let resource = ResourceServer::watching(&tokend, &Watcher::in_redis(&primary), &[]);
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let target = login(&mut client, "alice", PASSWORD).await;
    let manager = login_for_tokend(&mut client, "alice", PASSWORD).await;
    echo.echo(echo_request("x", Some(&bearer(&target.access_token))))
        .await
        .expect("accepted while the session lives");
    let end = |client: &mut TokenServiceClient<_>| {
        let mut client = client.clone();
        let request = with_bearer(
            tokend::proto::tokend::v1::RevokeSessionRequest {
                session_id: target.session_id.clone(),
            },
            &manager.access_token,
        );
        async move { client.revoke_session(request).await }
    };

    replica.node().pause();
    for _ in 0..3 {
        unconfirmed(end(&mut client).await, "RevokeSession");
    }
    replica.node().resume();
    retried_until_answered(|| end(&mut client)).await;
    refused_soon(&mut echo, &target.access_token, "retried RevokeSession").await;
}

/// Found by `make chaos TOPOLOGY=sentinel SEED=13`: a watching resource
/// server accepted a revoked session's token 1.4 s after the Revoke was
/// acknowledged. The session had ended, but the feed could not take the
/// announcement in time (no replica confirmed it), which was retried in
/// the background and went out later; the Revoke had been answered OK
/// regardless. Here the session lives on one shard and the feed on
/// another, whose replica stalls: the session's end is confirmed, its
/// announcement is not.
#[tokio::test]
async fn a_revoke_is_not_acknowledged_before_its_end_is_announced() {
    let cluster = RedisCluster::start();
    add_user(&cluster, "alice", PASSWORD, &["read"]);
    let tokend = Tokend::builder().redis(&cluster).start();
    let resource = ResourceServer::watching(&tokend, &Watcher::in_redis(&cluster), &[]);
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let pair = loop {
        let pair = login(&mut client, "alice", PASSWORD).await;
        if !cluster.with_feed(&session_key(&pair.refresh_token)) {
            break pair;
        }
    };
    echo.echo(echo_request("x", Some(&bearer(&pair.access_token))))
        .await
        .expect("accepted while the session lives");

    let feed_primary = cluster.primary_for(FEED_KEY);
    let feed_replica = cluster
        .replica_of(feed_primary)
        .expect("the feed's primary has a replica");
    cluster.node(feed_replica).pause();
    unconfirmed(revoke(&mut client, &pair.refresh_token).await, "Revoke");
    cluster.node(feed_replica).resume();
    retried_until_answered(|| {
        let mut client = client.clone();
        let token = pair.refresh_token.clone();
        async move { revoke(&mut client, &token).await }
    })
    .await;
    refused_soon(&mut echo, &pair.access_token, "Revoke").await;
}

#[tokio::test]
async fn no_write_is_answered_ok_until_a_replica_confirms_it() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    add_user(&primary, "alice", PASSWORD, &["read"]);
    let tokend = tokend_with_acks(&primary, "auto");
    let mut client = tokend.client().await;
    let first = login(&mut client, "alice", PASSWORD).await.refresh_token;
    let second = login(&mut client, "alice", PASSWORD).await.refresh_token;

    // The replica hangs (SIGSTOP): connected, silent.
    replica.node().pause();
    unconfirmed(refresh(&mut client, &first).await, "Refresh");
    unconfirmed(revoke(&mut client, &second).await, "Revoke");
    unconfirmed(
        client.login(password_login("alice", PASSWORD)).await,
        "Login",
    );

    // Back: the same calls, retried, work (a retried Refresh gets the
    // successor the unconfirmed one created), and what they did holds.
    replica.node().resume();
    let started = Instant::now();
    let successor = loop {
        match refresh(&mut client, &first).await {
            Ok(pair) => break pair.refresh_token,
            Err(status) => {
                assert_eq!(Reason::of(&status), Some(Reason::StoreUnavailable));
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "never confirmed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(
        refresh(&mut client, &first).await.unwrap().refresh_token,
        successor,
        "the retry is the same rotation, not a second one"
    );
    revoke(&mut client, &second).await.unwrap();
    assert_reason(
        refresh(&mut client, &second).await,
        Reason::RefreshTokenInvalid,
    );
    refresh(&mut client, &successor).await.unwrap();
}

#[tokio::test]
async fn replica_acks_auto_a_number_or_zero() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::replica_of(&primary);
    add_user(&primary, "alice", PASSWORD, &["read"]);
    let never = tokend_with_acks(&primary, "0");
    let always = tokend_with_acks(&primary, "1");
    let auto = tokend_with_acks(&primary, "auto");
    let (mut never, mut always, mut auto) = (
        never.client().await,
        always.client().await,
        auto.client().await,
    );

    // A hung replica: 0 answers (and may lose the write in a failover);
    // 1 and auto refuse.
    let tokens = [
        login(&mut never, "alice", PASSWORD).await.refresh_token,
        login(&mut always, "alice", PASSWORD).await.refresh_token,
        login(&mut auto, "alice", PASSWORD).await.refresh_token,
    ];
    replica.node().pause();
    refresh(&mut never, &tokens[0])
        .await
        .expect("acks 0 never waits");
    unconfirmed(refresh(&mut always, &tokens[1]).await, "acks 1");
    unconfirmed(refresh(&mut auto, &tokens[2]).await, "acks auto");
    replica.node().resume();

    // No replica at all (it died): auto and 0 go on, 1 refuses.
    replica.stop();
    wait_until(
        "the primary to notice its replica is gone",
        Duration::from_secs(20),
        || {
            primary
                .node()
                .info_field("replication", "connected_slaves")
                .as_deref()
                == Some("0")
        },
    );
    login(&mut never, "alice", PASSWORD).await;
    login(&mut auto, "alice", PASSWORD).await;
    unconfirmed(
        always.login(password_login("alice", PASSWORD)).await,
        "acks 1 without a replica",
    );
}

/// The admin commands on `redis`, end to end with a tokend on it.
async fn the_cli_manages_accounts_on(redis: impl Deployment) {
    add_user(&redis, "carol", PASSWORD, &["read"]);
    let secret = add_client(&redis, "billing", &["read"]);
    let tokend = Tokend::builder().redis(&redis).start();
    let mut client = tokend.client().await;
    client
        .login(client_login("billing", &secret))
        .await
        .expect("the client made by the CLI logs in");
    let a = login(&mut client, "carol", PASSWORD).await;
    let b = login(&mut client, "carol", PASSWORD).await;
    let listed = admin(&redis, &["sessions", "list", "carol"], None);
    assert_eq!(listed.matches("created=").count(), 2, "{listed}");
    admin(&redis, &["sessions", "revoke-all", "carol"], None);
    for token in [&a.refresh_token, &b.refresh_token] {
        assert_reason(
            refresh(&mut client, token).await,
            Reason::RefreshTokenInvalid,
        );
    }
    admin(&redis, &["user", "disable", "carol"], None);
    assert!(
        client
            .login(password_login("carol", PASSWORD))
            .await
            .is_err()
    );
    admin(&redis, &["user", "enable", "carol"], None);
    login(&mut client, "carol", PASSWORD).await;
}

#[tokio::test]
async fn the_cli_manages_accounts_on_a_cluster() {
    the_cli_manages_accounts_on(RedisCluster::start()).await;
}

#[tokio::test]
async fn the_cli_manages_accounts_through_sentinel() {
    the_cli_manages_accounts_on(RedisSentinel::start()).await;
}

#[tokio::test]
async fn a_resource_server_balanced_over_two_replicas_survives_losing_one() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = signing_key(dir.path(), "signing.key");
    let key = key.to_str().unwrap();
    let redis = RedisServer::start();
    add_user(&redis, "alice", PASSWORD, &["read"]);
    let watcher = Watcher::in_redis(&redis);
    let mut a = Tokend::builder()
        .redis(&redis)
        .args(["--signing-key-file", key])
        .start();
    let b = Tokend::builder()
        .redis(&redis)
        .args(["--signing-key-file", key])
        .start();
    // `--tokend` twice: key sync and the feed balanced over both.
    let resource = ResourceServer::watching(&a, &watcher, &["--tokend", &b.url()]);
    let mut echo = resource.client().await;
    let mut client = b.client().await;
    let before = login(&mut client, "alice", PASSWORD).await;
    echo.echo(echo_request("x", Some(&bearer(&before.access_token))))
        .await
        .expect("accepted while both replicas run");

    a.kill();
    // Revocations still arrive, through the replica left.
    revoke(&mut client, &before.refresh_token).await.unwrap();
    let took = time_until_refused(
        &mut echo,
        &bearer(&before.access_token),
        Reason::SessionRevoked,
        Duration::from_secs(15),
    )
    .await;
    eprintln!("revocation reached the resource server {took:?} after Revoke, one replica down");
    assert!(
        took.is_some(),
        "the feed came back through the other replica"
    );
    let after = login(&mut client, "alice", PASSWORD).await;
    echo.echo(echo_request("x", Some(&bearer(&after.access_token))))
        .await
        .expect("new tokens are accepted with one replica gone");
}

#[tokio::test]
async fn a_demoted_primary_is_left_for_the_new_one_without_a_restart() {
    let deployment = RedisSentinel::start();
    add_user(&deployment, "alice", PASSWORD, &["read"]);
    let tokend = Tokend::builder()
        .redis(&deployment)
        .args(["--refresh-reuse-grace", "10s"])
        .start();
    let mut client = tokend.client().await;
    let mut token = login(&mut client, "alice", PASSWORD).await.refresh_token;
    let old = deployment.primary();

    // A graceful failover: the old primary stays up, demoted to a replica,
    // and tokend's connections to it stay open (writes there get READONLY).
    let _: String = deployment
        .sentinel(0)
        .query(
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(deployment.master_name()),
        )
        .expect("SENTINEL FAILOVER");
    wait_until(
        "the sentinels to name the other node",
        Duration::from_secs(30),
        || deployment.primary() != old,
    );
    deployment.wait_serving();
    wait_until(
        "the old primary to replicate from the new one",
        Duration::from_secs(30),
        || {
            deployment
                .data(old)
                .info_field("replication", "role")
                .as_deref()
                == Some("slave")
        },
    );

    // Writes find the new primary by themselves; once they do, they keep
    // working, and nothing but STORE_UNAVAILABLE was seen meanwhile.
    let started = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 20 {
        match refresh(&mut client, &token).await {
            Ok(pair) => {
                token = pair.refresh_token;
                in_a_row += 1;
            }
            Err(status) => {
                assert_eq!(
                    Reason::of(&status),
                    Some(Reason::StoreUnavailable),
                    "{status:?}"
                );
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writes did not settle on the new primary"
        );
    }
    revoke(&mut client, &token).await.unwrap();
    assert_reason(
        refresh(&mut client, &token).await,
        Reason::RefreshTokenInvalid,
    );
}

/// Found by `make chaos TOPOLOGY=sentinel SEED=2`: a primary stopped past
/// a failover (SIGSTOP) comes back calling itself primary, with no
/// replica, until the sentinels demote it; tokend's connections to it were
/// still open, so with `--redis-replica-acks auto` (no replica: no
/// confirmation) it answered Refresh OK for rotations that the node's
/// resync then discarded: every session refreshed meanwhile was lost (its
/// newest token unknown) and its consumed token current again. A write no
/// replica confirmed is now answered only after the sentinels confirm the
/// node is still their primary.
#[tokio::test]
async fn a_primary_stopped_past_a_failover_takes_no_write_that_is_then_lost() {
    let deployment = RedisSentinel::start();
    add_user(&deployment, "alice", PASSWORD, &["read"]);
    let tokend = Tokend::builder()
        .redis(&deployment)
        .shipped_reuse_grace()
        .start();
    let mut client = tokend.client().await;
    let mut token = login(&mut client, "alice", PASSWORD).await.refresh_token;
    // Every link for confirmed writes connected to the primary.
    for _ in 0..16 {
        token = refresh(&mut client, &token).await.unwrap().refresh_token;
    }
    let stalled = deployment.primary();
    deployment.data(stalled).pause();
    wait_until(
        "the sentinels to promote the replica",
        Duration::from_secs(30),
        || deployment.primary() != stalled,
    );
    deployment.wait_serving();
    // The sentinels stop too, so nothing demotes the old primary when it
    // comes back: it calls itself primary, with no replica.
    for i in 0..3 {
        deployment.sentinel(i).pause();
    }
    deployment.data(stalled).resume();
    wait_until(
        "the stalled node to answer as primary",
        Duration::from_secs(10),
        || {
            deployment
                .data(stalled)
                .info_field("replication", "role")
                .as_deref()
                == Some("master")
        },
    );
    let mut answered = Vec::new();
    for _ in 0..16 {
        match refresh(&mut client, &token).await {
            Ok(pair) => {
                token = pair.refresh_token;
                answered.push("OK".to_owned());
            }
            Err(status) => {
                assert_eq!(
                    Reason::of(&status),
                    Some(Reason::StoreUnavailable),
                    "{status:?}"
                );
                answered.push("STORE_UNAVAILABLE".to_owned());
            }
        }
    }
    println!("while the stalled primary was back: {answered:?}");
    for i in 0..3 {
        deployment.sentinel(i).resume();
    }
    deployment.wait_healthy();
    wait_until(
        "the stalled node to be demoted",
        Duration::from_secs(30),
        || {
            deployment
                .data(stalled)
                .info_field("replication", "role")
                .as_deref()
                == Some("slave")
        },
    );
    // The newest acknowledged token still works: nothing acknowledged was
    // lost.
    let pair = refresh_retried(&mut client, &token)
        .await
        .expect("the last acknowledged refresh token still works");
    revoke(&mut client, &pair.refresh_token).await.unwrap();
}

/// The same hazard on a cluster: a primary stalled past its failover comes
/// back calling itself the owner of its slots, with no replica (its
/// replica took over), and takes the writes tokend's links still send it
/// until the cluster bus tells it of its successor; its demotion then
/// discards them. That news normally arrives within moments; here the
/// stalled node has forgotten its successor (`CLUSTER FORGET`, which also
/// makes it ignore news of it for a minute), so the moment lasts. A write
/// no replica confirmed is now answered only while no other node that
/// answers gives its slot to another node.
#[tokio::test]
async fn a_cluster_primary_stalled_past_its_failover_takes_no_write_that_is_then_lost() {
    let cluster = RedisCluster::start();
    add_user(&cluster, "alice", PASSWORD, &["read"]);
    let tokend = Tokend::builder()
        .redis(&cluster)
        .shipped_reuse_grace()
        .start();
    let mut client = tokend.client().await;
    // A session on a shard without the feed, whose follower would find
    // the stalled node and look the cluster up again.
    let pair = loop {
        let pair = login(&mut client, "alice", PASSWORD).await;
        if !cluster.with_feed(&session_key(&pair.refresh_token)) {
            break pair;
        }
    };
    let key = session_key(&pair.refresh_token);
    let mut token = pair.refresh_token;
    // Every link for confirmed writes has written to the session's node.
    for _ in 0..16 {
        token = refresh(&mut client, &token).await.unwrap().refresh_token;
    }
    let stalled = cluster.primary_for(&key);
    let successor = cluster
        .replica_of(stalled)
        .expect("the session's primary has a replica");
    let successor_id: String = cluster
        .node(successor)
        .query(redis::cmd("CLUSTER").arg("MYID"))
        .expect("the replica's id");
    let _: String = cluster
        .node(stalled)
        .query(redis::cmd("CLUSTER").arg("FORGET").arg(&successor_id))
        .expect("the primary forgets its replica");
    cluster.node(stalled).pause();
    wait_until("the replica to take over", Duration::from_secs(30), || {
        cluster.serving_node(&key) == Some(successor)
    });
    cluster.node(stalled).resume();
    let role = || -> Option<String> { cluster.node(stalled).info_field("replication", "role") };
    wait_until(
        "the stalled node to answer as primary",
        Duration::from_secs(10),
        || role().as_deref() == Some("master"),
    );
    let current = || -> Option<Vec<u8>> {
        cluster
            .node(stalled)
            .query(redis::cmd("HGET").arg(&key).arg("cur"))
    };
    let before = current();
    let answer = refresh(&mut client, &token).await;
    assert_ne!(
        current(),
        before,
        "the rotation ran on the stalled node (the case under test)"
    );
    assert_eq!(
        role().as_deref(),
        Some("master"),
        "it still calls itself primary"
    );
    assert_reason(answer, Reason::StoreUnavailable);
}

/// A sentinel of its own watching `node` as the deployment tests call
/// `split-view`.
fn lone_sentinel(node: &RedisServer) -> testkit_redis::Node {
    testkit_redis::lone_sentinel("split-view", node.port())
}

/// Found by `make chaos TOPOLOGY=sentinel SEED=7`: a revoked session came
/// back. With no replica in sync (one being resynced after a stall), a
/// write no replica confirms is answered once the deployment names its
/// node primary; tokend asked the first sentinel that answered, and in a
/// failover (or one undone) the sentinels name different nodes for a
/// while: the node one of them named was then demoted and its resync
/// discarded the revocation. Now a majority must name the node. Here the
/// sentinels disagree for good: the first names X, the two others Y.
#[tokio::test]
async fn a_write_no_replica_confirmed_needs_a_majority_of_the_sentinels_naming_its_node() {
    let x = RedisServer::start();
    let y = RedisServer::start();
    add_user(&x, "alice", PASSWORD, &["read"]);
    let names_x = lone_sentinel(&x);
    let names_y = [lone_sentinel(&y), lone_sentinel(&y)];
    let start = |sentinels: String| {
        Tokend::builder()
            .args([
                "--redis-sentinel",
                sentinels.as_str(),
                "--redis-sentinel-master",
                "split-view",
            ])
            .start()
    };
    // The first sentinel alone: it names X, where alice is; X has no
    // replica, so the login's session is answered once X is named.
    let alone = start(names_x.url());
    let mut client = alone.client().await;
    login(&mut client, "alice", PASSWORD).await;
    drop(alone);
    // The same first sentinel, outvoted: tokend still writes to X (the
    // first sentinel's answer), but no longer answers the write as done.
    let outvoted = start(format!(
        "{},{},{}",
        names_x.url(),
        names_y[0].url(),
        names_y[1].url()
    ));
    let mut client = outvoted.client().await;
    assert_reason(
        client.login(password_login("alice", PASSWORD)).await,
        Reason::StoreUnavailable,
    );
}

/// Found by `make chaos TOPOLOGY=sentinel SEED=3`: an acknowledged
/// rotation was lost. The primary stalled past the start of a failover
/// and came back just after the leading sentinel told its replica to take
/// over, but before the other sentinels heard of it: a majority still
/// named the stalled node, with no failover flag, and the write it took
/// alone was answered OK, then discarded when it was demoted. A write no
/// replica confirmed now also needs every other data node that answers to
/// defer to its node when not every sentinel names it (the leader of a
/// failover does not). Here the replica takes over on its own (as the
/// leader's `REPLICAOF NO ONE` does) while two sentinels still name the
/// old primary and the third names another node.
#[tokio::test]
async fn a_write_no_replica_confirmed_is_refused_while_another_node_calls_itself_primary() {
    let x = RedisServer::start();
    let mut y = RedisServer::replica_of(&x);
    add_user(&x, "alice", PASSWORD, &["read"]);
    let elsewhere = RedisServer::start();
    let sentinels: Vec<_> = (0..2).map(|_| lone_sentinel(&x)).collect();
    wait_until(
        "the sentinels to know the replica",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                s.query::<Vec<Vec<String>>>(
                    redis::cmd("SENTINEL").arg("REPLICAS").arg("split-view"),
                )
                .is_some_and(|listed| {
                    listed
                        .iter()
                        .any(|fields| fields.contains(&y.port().to_string()))
                })
            })
        },
    );
    // Listed last: the replicas are asked of the first that answers.
    let outvoted = lone_sentinel(&elsewhere);
    let urls: Vec<String> = sentinels
        .iter()
        .chain([&outvoted])
        .map(|s| s.url())
        .collect();
    let tokend = Tokend::builder()
        .args([
            "--redis-sentinel",
            urls.join(",").as_str(),
            "--redis-sentinel-master",
            "split-view",
        ])
        .start();
    let mut client = tokend.client().await;
    login(&mut client, "alice", PASSWORD).await;

    let _: String = y
        .node()
        .query(redis::cmd("REPLICAOF").arg("NO").arg("ONE"))
        .expect("promote the replica");
    wait_until("the primary to be alone", Duration::from_secs(20), || {
        x.node()
            .info_field("replication", "connected_slaves")
            .as_deref()
            == Some("0")
    });
    assert_reason(
        client.login(password_login("alice", PASSWORD)).await,
        Reason::StoreUnavailable,
    );
    // A replica that is down leaves the primary alone too, and then it
    // writes alone (the sentinels name it; nobody else can take over).
    y.stop();
    login(&mut client, "alice", PASSWORD).await;
}

/// Found by `make chaos TOPOLOGY=sentinel SEED=4`: tokend exchanged a
/// session's token half a second after its Revoke was acknowledged. The
/// liveness check (does the session still exist?) was a plain read, and
/// tokend's shared connection still led to a node demoted by a failover,
/// which kept answering reads from its old data. Such reads now take a
/// `ROLE` along, and a node that is no longer a primary is not believed.
/// Here the node is demoted for good (a replica of a primary that does
/// not answer), keeping the session it had.
#[tokio::test]
async fn a_demoted_node_is_not_believed_that_a_session_still_lives() {
    let node = RedisServer::start();
    add_user(&node, "alice", PASSWORD, &["read"]);
    let tokend = Tokend::builder().redis(&node).start();
    let mut client = tokend.client().await;
    let pair = login_for_tokend(&mut client, "alice", PASSWORD).await;
    let list = |client: &mut TokenServiceClient<_>| {
        let mut client = client.clone();
        let token = pair.access_token.clone();
        async move {
            client
                .list_sessions(with_bearer(
                    tokend::proto::tokend::v1::ListSessionsRequest {},
                    &token,
                ))
                .await
        }
    };
    list(&mut client)
        .await
        .expect("listed while the node is the primary");

    let nobody = free_port();
    let _: String = node
        .node()
        .query(redis::cmd("REPLICAOF").arg("127.0.0.1").arg(nobody))
        .expect("demote the node");
    assert_reason(list(&mut client).await, Reason::StoreUnavailable);
}

//! The revocation feed as an abuser meets it: a service looping log-in and
//! log-out-everywhere on itself (the feed's size depends on how many
//! accounts were cut off, not how often, and the loop is rate limited); a
//! fresh resource server starting while a long history streams in (it
//! never accepts a revoked token meanwhile); one credential trying to take
//! every watcher place; and watchers whose right to watch ends.

use std::time::Duration;

use testkit::pki::Pki;
use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tonic::Code;

use crate::harness::*;

/// The number of entries in tokend's feed stream.
async fn feed_length(redis: &RedisServer) -> usize {
    let mut conn = redis.connection().await;
    redis::cmd("XLEN")
        .arg("tokend:{revocations}")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// A service client's own token for tokend.
async fn own_token(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    id: &str,
    secret: &str,
) -> String {
    let mut request = client_login(id, secret);
    request.audience = TOKEND_AUDIENCE.into();
    client
        .login(request)
        .await
        .expect("client login")
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

/// Opens a feed stream with `token` and returns it once its first message arrived.
async fn open_feed(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Result<tonic::Streaming<pb::WatchRevocationsResponse>, tonic::Status> {
    let mut stream = client
        .watch_revocations(with_bearer(pb::WatchRevocationsRequest::default(), token))
        .await?
        .into_inner();
    stream.message().await?.expect("a first message");
    Ok(stream)
}

#[tokio::test]
async fn a_self_cut_off_loop_neither_grows_the_feed_nor_outruns_its_limit() {
    let redis = RedisServer::start();
    let secret = add_client(&redis, "loop-svc", &["tokend.revocations"]);
    let watcher = Watcher::in_redis(&redis);
    // Without the rate limit, to show the feed keeps one entry per subject.
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--revoke-all-interval", "0s"])
        .start();
    let mut client = tokend.client().await;
    let before = feed_length(&redis).await;
    for _ in 0..200 {
        let token = own_token(&mut client, "loop-svc", &secret).await;
        client
            .revoke_all_sessions(with_bearer(pb::RevokeAllSessionsRequest {}, &token))
            .await
            .expect("log out everywhere");
    }
    let after = feed_length(&redis).await;
    eprintln!("200 self cut-offs: the feed went from {before} to {after} entries");
    assert!(
        after <= before + 1,
        "one live cut-off per subject: {before} -> {after}"
    );
    // The replica's window too: a new watcher's history holds one.
    let token = watcher.token(&mut client).await;
    let mut stream = client
        .watch_revocations(with_bearer(pb::WatchRevocationsRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let mut cut_offs = 0;
    while let Some(message) = stream.message().await.unwrap() {
        match message.event {
            Some(pb::watch_revocations_response::Event::Subject(s)) if s.subject == "loop-svc" => {
                cut_offs += 1
            }
            Some(pb::watch_revocations_response::Event::Heartbeat(_)) => break,
            _ => {}
        }
    }
    assert_eq!(cut_offs, 1, "the window keeps only the newest");

    // With the default limit, a second log-out-everywhere right after the
    // first is refused (and changes nothing), on every replica.
    let limited = Tokend::builder().redis(&redis).start();
    let other = Tokend::builder().redis(&redis).start();
    let mut client = limited.client().await;
    let mut other_client = other.client().await;
    let first = own_token(&mut client, "loop-svc", &secret).await;
    client
        .revoke_all_sessions(with_bearer(pb::RevokeAllSessionsRequest {}, &first))
        .await
        .expect("the first");
    let second = own_token(&mut other_client, "loop-svc", &secret).await;
    let status = other_client
        .revoke_all_sessions(with_bearer(pb::RevokeAllSessionsRequest {}, &second))
        .await
        .expect_err("rate limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(Reason::of(&status), Some(Reason::RateLimited));
    let wait = Reason::retry_delay(&status).expect("RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    // Nothing was cut off: the second token still manages sessions.
    other_client
        .list_sessions(with_bearer(pb::ListSessionsRequest {}, &second))
        .await
        .expect("the refused call changed nothing");
}

/// Writes `count` session revocations straight into tokend's feed stream,
/// as a busy quarter of an hour would have left them.
async fn fill_feed(redis: &RedisServer, count: usize) {
    let mut conn = redis.connection().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for chunk in (0..count).collect::<Vec<_>>().chunks(1_000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("XADD")
                .arg("tokend:{revocations}")
                .arg("*")
                .arg("k")
                .arg("s")
                .arg("id")
                .arg(format!("filler-session-{n}"))
                .arg("at")
                .arg(now)
                .arg("until")
                .arg(now + 900_000)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn a_fresh_resource_server_never_accepts_a_revoked_token_while_it_catches_up() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    add_user(&redis, "bob", "pw", &["read"]);
    let watcher = Watcher::in_redis(&redis);
    // A long history, sent slowly: 20,000 entries at 10,000 a second (two
    // seconds of catching up for each server).
    fill_feed(&redis, 20_000).await;
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--watch-history-rate", "10000"])
        .start();
    let mut client = tokend.client().await;
    // Alice's session is revoked after all of it; bob is cut off.
    let gone = login(&mut client, "alice", "pw").await;
    revoke(&mut client, &gone.refresh_token).await.unwrap();
    let bobs = login(&mut client, "bob", "pw").await;
    admin(&redis, &["sessions", "revoke-all", "bob"], None);

    // A watcher starting from nothing hears the cut-off first.
    let token = watcher.token(&mut client).await;
    let mut stream = client
        .watch_revocations(with_bearer(pb::WatchRevocationsRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    match first.event {
        Some(pb::watch_revocations_response::Event::Subject(s)) => assert_eq!(s.subject, "bob"),
        other => panic!("the history began with {other:?}"),
    }
    assert!(
        first.cursor.is_empty(),
        "sent ahead, with no cursor to resume after"
    );
    drop(stream);

    // Five resource servers start at once, sharing the paced history.
    let servers: Vec<ResourceServer> = (0..5)
        .map(|_| ResourceServer::watching_unready(&tokend, &Watcher::in_redis(&redis), &[]))
        .collect();
    let mut accepted = 0;
    let mut unavailable = 0;
    for server in &servers {
        let mut echo = server.client().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(std::time::Instant::now() < deadline, "never refused");
            let mut done = true;
            for token in [&gone.access_token, &bobs.access_token] {
                match echo.echo(echo_request("x", Some(&bearer(token)))).await {
                    Ok(_) => accepted += 1,
                    Err(s) if Reason::of(&s) == Some(Reason::SessionRevoked) => {}
                    Err(s)
                        if matches!(
                            Reason::of(&s),
                            Some(Reason::RevocationsUnavailable | Reason::KeysUnavailable)
                        ) =>
                    {
                        unavailable += 1;
                        done = false;
                    }
                    Err(s) => panic!("{s:?}"),
                }
            }
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("while catching up: {unavailable} refused as unavailable, {accepted} accepted");
    assert_eq!(
        accepted, 0,
        "a revoked token was accepted while catching up"
    );
    assert!(
        unavailable > 0,
        "the history took a while: it was refused meanwhile"
    );
}

#[tokio::test]
async fn one_credential_cannot_take_every_watcher_place() {
    let redis = RedisServer::start();
    let greedy = Watcher::in_redis(&redis);
    let modest = Watcher::in_redis(&redis);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--max-watchers", "20", "--max-watchers-per-caller", "5"])
        .start();
    let mut client = tokend.client().await;
    let token = greedy.token(&mut client).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            open_feed(&mut client, &token)
                .await
                .expect("within its share"),
        );
    }
    let status = open_feed(&mut client, &token)
        .await
        .expect_err("over its share");
    assert_eq!(Reason::of(&status), Some(Reason::Overloaded), "{status:?}");
    assert!(Reason::retry_delay(&status).is_some());
    // Another service still watches.
    let other = modest.token(&mut client).await;
    open_feed(&mut client, &other)
        .await
        .expect("another caller's place");
    // A closed stream gives its place back.
    held.pop();
    eventually(
        "the place to be given back",
        Duration::from_secs(10),
        || {
            let (mut client, token) = (client.clone(), token.clone());
            async move { open_feed(&mut client, &token).await.is_ok() }
        },
    )
    .await;
}

#[tokio::test]
async fn the_right_to_watch_is_checked_like_every_callers_and_ends_with_the_account() {
    let pki = Pki::new("mesh");
    let redis = RedisServer::start();
    let secret = add_client(&redis, "watch-svc", &["tokend.revocations"]);
    let server = pki.server("tokend");
    let tokend = Tokend::builder()
        .redis(&redis)
        .tls(&server)
        .args(["--tls-client-ca", pki.ca_arg()])
        .start();
    let plain = tls_channel(&tokend.https_url(), pki.ca(), None)
        .await
        .unwrap();
    let mut client = TokenServiceClient::new(plain);

    // A token with the feed's scope but for the default audience.
    let everyday = client
        .login(client_login("watch-svc", &secret))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    assert_reason(
        open_feed(&mut client, &everyday).await.map(|_| ()),
        Reason::WrongAudience,
    );

    // An open stream, by token and by certificate.
    let token = own_token(&mut client, "watch-svc", &secret).await;
    let mut by_token = open_feed(&mut client, &token).await.unwrap();
    let cert = pki.client("watch-svc");
    let mut by_cert_client = TokenServiceClient::new(
        tls_channel(&tokend.https_url(), pki.ca(), Some(&cert))
            .await
            .unwrap(),
    );
    let mut by_cert = by_cert_client
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .expect("its certificate")
        .into_inner();
    by_cert.message().await.unwrap();

    // Disabled: both open streams end, promptly, with SESSION_REVOKED...
    admin(&redis, &["client", "disable", "watch-svc"], None);
    for stream in [&mut by_token, &mut by_cert] {
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("ended without a status"),
                    Err(status) => return status,
                }
            }
        })
        .await
        .expect("the stream ended within a second or so");
        assert_eq!(
            Reason::of(&ended),
            Some(Reason::SessionRevoked),
            "{ended:?}"
        );
    }
    // ...and neither its old token nor its certificate opens a new one.
    assert_reason(
        open_feed(&mut client, &token).await.map(|_| ()),
        Reason::SessionRevoked,
    );
    assert_reason(
        by_cert_client
            .watch_revocations(pb::WatchRevocationsRequest::default())
            .await
            .map(|_| ()),
        Reason::SessionRevoked,
    );
}

/// The holder of a revoked (or reused) refresh token presents it again and
/// again: the end is announced once more (for a first call whose answer
/// was lost), never once per call.
#[tokio::test]
async fn repeating_a_revoke_or_a_reused_token_does_not_grow_the_feed() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let tokend = Tokend::builder().redis(&redis).start();
    let mut client = tokend.client().await;

    let revoked = login(&mut client, "alice", "pw").await.refresh_token;
    revoke(&mut client, &revoked).await.unwrap();
    let reused = login(&mut client, "alice", "pw").await.refresh_token;
    refresh(&mut client, &reused).await.unwrap();
    assert_reason(
        refresh(&mut client, &reused).await,
        Reason::RefreshTokenReused,
    );
    let before = feed_length(&redis).await;
    for _ in 0..200 {
        revoke(&mut client, &revoked).await.unwrap();
        let _ = refresh(&mut client, &reused).await;
    }
    let after = feed_length(&redis).await;
    assert!(
        after <= before + 2,
        "400 repeated calls grew the feed from {before} to {after} entries"
    );
    println!("feed: {before} entries before 400 repeats, {after} after");
}

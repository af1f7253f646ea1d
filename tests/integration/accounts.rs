//! Account control as an attacker would test it: disable, delete, password,
//! scope and secret changes reach live sessions and tokens already issued;
//! sessions are capped; log-out-everywhere and disable finish at any number
//! of sessions, with the cut-off at resource services first; no revocation
//! can be pushed out of the feed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;

use crate::harness::*;

/// How long a cut-off may take to reach a watching resource server before
/// the test fails (a guard, not the 1 s promise: see REVOCATION_DEADLINE).
const WITHIN: Duration = REVOCATION_DEADLINE;

async fn echo_ok(echo: &mut EchoClient, token: &str) {
    echo.echo(echo_request("x", Some(&bearer(token))))
        .await
        .expect("the resource server accepts the token");
}

async fn refused_within(echo: &mut EchoClient, token: &str, limit: Duration) {
    let took = time_until_refused(echo, &bearer(token), Reason::SessionRevoked, limit).await;
    assert!(took.is_some(), "token still accepted after {limit:?}");
}

/// Redis, a tokend on it, a resource server watching its feed.
async fn deployment(args: &[&str]) -> (RedisServer, Tokend, ResourceServer) {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read", "write", "admin"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(args.iter().copied())
        .start();
    let resource = ResourceServer::watching(&tokend, &Watcher::in_redis(&redis), &[]);
    (redis, tokend, resource)
}

#[tokio::test]
async fn a_disabled_users_sessions_stop_refreshing_and_their_tokens_are_refused() {
    let (redis, tokend, resource) = deployment(&[]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let pair = login(&mut client, "alice", "pw").await;
    echo_ok(&mut echo, &pair.access_token).await;
    // A session the sweep cannot find (its index entry is gone): only the
    // account check at Refresh can stop it.
    let hidden = login(&mut client, "alice", "pw").await;
    let mut conn = redis.connection().await;
    let _: i64 = redis::cmd("HDEL")
        .arg("tokend:user:{alice}")
        .arg(format!("s:{}", hidden.session_id))
        .query_async(&mut conn)
        .await
        .unwrap();

    let said = admin(&redis, &["user", "disable", "alice"], None);
    assert!(said.contains("1 session(s) ended"), "{said}");

    for stolen in [&pair, &hidden] {
        assert_reason(
            refresh(&mut client, &stolen.refresh_token).await,
            Reason::RefreshTokenInvalid,
        );
        refused_within(&mut echo, &stolen.access_token, WITHIN).await;
    }
    assert_reason(
        client.login(password_login("alice", "pw")).await,
        Reason::InvalidCredentials,
    );
    // Adding the user again does not re-enable it.
    let said = admin_fails(
        &redis,
        &["user", "add", "alice", "--password-stdin"],
        Some("other\n"),
    );
    assert!(said.contains("already exists"), "{said}");
    assert_reason(
        client.login(password_login("alice", "other")).await,
        Reason::InvalidCredentials,
    );

    // Enabled again: new sessions work at once, old ones stay dead.
    admin(&redis, &["user", "enable", "alice"], None);
    let fresh = login(&mut client, "alice", "pw").await;
    echo_ok(&mut echo, &fresh.access_token).await;
    refresh(&mut client, &fresh.refresh_token)
        .await
        .expect("a session after the cut-off refreshes");
    assert_reason(
        refresh(&mut client, &hidden.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

#[tokio::test]
async fn refreshes_racing_a_disable_mint_nothing_that_outlives_it() {
    let (redis, tokend, resource) = deployment(&["--refresh-reuse-grace", "5s"]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    // Twenty thieves refresh as fast as they can while the user is disabled.
    let mut thieves = tokio::task::JoinSet::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..20 {
        let pair = login(&mut client, "alice", "pw").await;
        let mut client = client.clone();
        let stop = std::sync::Arc::clone(&stop);
        thieves.spawn(async move {
            let mut last = pair;
            let mut rotations = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                match refresh(&mut client, &last.refresh_token).await {
                    Ok(next) => {
                        last = next;
                        rotations += 1;
                    }
                    Err(status) => {
                        assert_eq!(
                            reason(&status),
                            Some(Reason::RefreshTokenInvalid),
                            "{status:?}"
                        );
                        break;
                    }
                }
            }
            (last, rotations)
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin(&redis, &["user", "disable", "alice"], None);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut rotations = 0;
    while let Some(done) = thieves.join_next().await {
        let (last, n) = done.unwrap();
        rotations += n;
        // Whatever a thief holds now is dead: its refresh token...
        assert_reason(
            refresh(&mut client, &last.refresh_token).await,
            Reason::RefreshTokenInvalid,
        );
        // ...and its newest access token, however late it was minted.
        refused_within(&mut echo, &last.access_token, WITHIN).await;
    }
    assert!(
        rotations > 20,
        "the thieves did refresh meanwhile: {rotations}"
    );
}

#[tokio::test]
async fn scopes_cut_by_set_scopes_vanish_from_the_next_refresh() {
    let (redis, tokend, resource) = deployment(&[]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let pair = login(&mut client, "alice", "pw").await;
    let admin_echo = |token: &str| {
        let mut request = tonic::Request::new(testkit::demo::v1::AdminEchoRequest {
            message: "x".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", bearer(token).parse().unwrap());
        request
    };
    echo.admin_echo(admin_echo(&pair.access_token))
        .await
        .expect("admin before");

    admin(
        &redis,
        &["user", "set-scopes", "alice", "--scope", "read"],
        None,
    );
    let next = refresh(&mut client, &pair.refresh_token).await.unwrap();
    let claims = crate::login::verify_with_published_key(&mut client, &next.access_token).await;
    assert_eq!(claims.scope(), "read");
    assert_reason(
        echo.admin_echo(admin_echo(&next.access_token)).await,
        Reason::InsufficientScope,
    );
    // A new login gets only the new scopes, and cannot ask for more.
    let mut wide = password_login("alice", "pw");
    wide.scopes = vec!["admin".into()];
    assert_reason(client.login(wide).await, Reason::InvalidRequest);

    // Granted again: the session gets it back, never more than it asked for.
    admin(
        &redis,
        &["user", "set-scopes", "alice", "--scope", "admin,read"],
        None,
    );
    let again = refresh(&mut client, &next.refresh_token).await.unwrap();
    let claims = crate::login::verify_with_published_key(&mut client, &again.access_token).await;
    assert_eq!(claims.scope(), "read admin");
}

#[tokio::test]
async fn a_new_password_ends_every_session_and_cuts_off_its_tokens() {
    let (redis, tokend, resource) = deployment(&[]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let stolen = login(&mut client, "alice", "pw").await;
    echo_ok(&mut echo, &stolen.access_token).await;

    let said = admin(
        &redis,
        &["user", "set-password", "alice", "--password-stdin"],
        Some("new-pw\n"),
    );
    assert!(said.contains("1 session(s) ended"), "{said}");
    assert_reason(
        refresh(&mut client, &stolen.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    refused_within(&mut echo, &stolen.access_token, WITHIN).await;
    assert_reason(
        client.login(password_login("alice", "pw")).await,
        Reason::InvalidCredentials,
    );
    let pair = login(&mut client, "alice", "new-pw").await;
    echo_ok(&mut echo, &pair.access_token).await;
    // An unknown user has no password to set.
    let said = admin_fails(
        &redis,
        &["user", "set-password", "nobody", "--password-stdin"],
        Some("x\n"),
    );
    assert!(said.contains("no user called \"nobody\""), "{said}");
}

#[tokio::test]
async fn deleting_a_user_ends_everything_and_the_name_can_start_over_clean() {
    let (redis, tokend, resource) = deployment(&[]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let old = login(&mut client, "alice", "pw").await;

    admin(&redis, &["user", "delete", "alice"], None);
    assert_reason(
        refresh(&mut client, &old.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    refused_within(&mut echo, &old.access_token, WITHIN).await;
    assert_reason(
        client.login(password_login("alice", "pw")).await,
        Reason::InvalidCredentials,
    );
    let said = admin_fails(&redis, &["sessions", "list", "alice"], None);
    assert!(said.contains("no user called"), "{said}");
    let mut conn = redis.connection().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("tokend:*alice*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        left.iter().all(|k| k.starts_with("tokend:throttle:")),
        "nothing of alice but throttle counters: {left:?}"
    );

    // A new alice: her tokens work, the old ones stay refused.
    add_user(&redis, "alice", "pw2", &["read"]);
    let new = login(&mut client, "alice", "pw2").await;
    echo_ok(&mut echo, &new.access_token).await;
    assert_reason(
        echo.echo(echo_request("x", Some(&bearer(&old.access_token))))
            .await,
        Reason::SessionRevoked,
    );
}

#[tokio::test]
async fn rotating_or_deleting_a_client_cuts_off_its_tokens() {
    let (redis, tokend, resource) = deployment(&[]).await;
    let secret = add_client(&redis, "svc", &["read"]);
    let client = tokend.client().await;
    let mut echo = resource.client().await;
    let token = |secret: String| {
        let mut client = client.clone();
        async move {
            client
                .login(client_login("svc", &secret))
                .await
                .map(|r| r.into_inner().tokens.unwrap().access_token)
        }
    };
    let leaked = token(secret.clone()).await.unwrap();
    echo_ok(&mut echo, &leaked).await;

    let out = admin(&redis, &["client", "rotate-secret", "svc"], None);
    let rotated = out.lines().next().unwrap().trim().to_owned();
    assert!(rotated.starts_with("tkd_cs_") && rotated != secret);
    refused_within(&mut echo, &leaked, WITHIN).await;
    assert_reason(token(secret).await, Reason::InvalidCredentials);
    let fresh = token(rotated.clone()).await.unwrap();
    echo_ok(&mut echo, &fresh).await;

    admin(
        &redis,
        &["client", "set-scopes", "svc", "--scope", "write"],
        None,
    );
    let narrowed = token(rotated.clone()).await.unwrap();
    let mut keys = tokend.client().await;
    let claims = crate::login::verify_with_published_key(&mut keys, &narrowed).await;
    assert_eq!(claims.scope(), "write");

    admin(&redis, &["client", "delete", "svc"], None);
    refused_within(&mut echo, &fresh, WITHIN).await;
    assert_reason(token(rotated).await, Reason::InvalidCredentials);
    admin_fails(&redis, &["client", "rotate-secret", "svc"], None);
}

#[tokio::test]
async fn log_out_everywhere_cuts_off_exactly_the_tokens_from_before() {
    // Round after round, at once: without the limit on how often one
    // account may log out everywhere.
    let (_redis, tokend, resource) = deployment(&["--revoke-all-interval", "0s"]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    for round in 0..5 {
        let other = login(&mut client, "alice", "pw").await;
        let manager = login_for_tokend(&mut client, "alice", "pw").await;
        let reply = client
            .revoke_all_sessions(with_bearer(
                pb::RevokeAllSessionsRequest {},
                &manager.access_token,
            ))
            .await
            .expect("revoke all")
            .into_inner();
        assert_eq!(reply.revoked, 2, "round {round}");
        // At once, in the same second and millisecond: a new login works...
        let after = login(&mut client, "alice", "pw").await;
        echo_ok(&mut echo, &after.access_token).await;
        // ...and the older tokens are refused.
        refused_within(&mut echo, &other.access_token, WITHIN).await;
        echo_ok(&mut echo, &after.access_token).await;
        assert_reason(
            refresh(&mut client, &other.refresh_token).await,
            Reason::RefreshTokenInvalid,
        );
        // The token that asked can no longer manage sessions.
        assert_reason(
            client
                .list_sessions(with_bearer(
                    pb::ListSessionsRequest {},
                    &manager.access_token,
                ))
                .await,
            Reason::SessionRevoked,
        );
        revoke(&mut client, &after.refresh_token).await.unwrap();
    }
}

#[tokio::test]
async fn the_session_cap_ends_the_least_recently_used_session() {
    let (redis, tokend, resource) = deployment(&["--max-sessions-per-user", "3"]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let first = login(&mut client, "alice", "pw").await;
    let second = login(&mut client, "alice", "pw").await;
    let third = login(&mut client, "alice", "pw").await;
    // The first is used again: the second is now the least recently used.
    let first = refresh(&mut client, &first.refresh_token).await.unwrap();
    let fourth = login(&mut client, "alice", "pw").await;

    // The cap is enforced right after the login's answer.
    eventually("the cap enforced", Duration::from_secs(10), || async {
        indexed_sessions(&redis, "alice").await <= 3
    })
    .await;
    assert_reason(
        refresh(&mut client, &second.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    refused_within(&mut echo, &second.access_token, WITHIN).await;
    for pair in [&first, &third, &fourth] {
        refresh(&mut client, &pair.refresh_token)
            .await
            .expect("the three most recently used live on");
    }

    // A login flood leaves the account at its cap.
    for _ in 0..40 {
        login(&mut client, "alice", "pw").await;
    }
    let manager = login_for_tokend(&mut client, "alice", "pw").await;
    eventually("the cap enforced", Duration::from_secs(10), || async {
        indexed_sessions(&redis, "alice").await <= 3
    })
    .await;
    let listed = client
        .list_sessions(with_bearer(
            pb::ListSessionsRequest {},
            &manager.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 3);
    assert!(indexed_sessions(&redis, "alice").await <= 3);
}

/// Spawns `tokend ARGS --redis-url URL` without waiting for it.
fn spawn_admin(redis: &RedisServer, args: &[&str]) -> std::process::Child {
    Command::new(tokend_bin())
        .args(args)
        .args(["--redis-url", &redis.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokend")
}

#[tokio::test]
async fn disable_finishes_with_150_000_sessions_and_the_cut_off_comes_first() {
    let (redis, tokend, resource) = deployment(&[]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let pair = login(&mut client, "alice", "pw").await;
    echo_ok(&mut echo, &pair.access_token).await;
    write_sessions(&redis, "alice", 150_000).await;
    assert_eq!(indexed_sessions(&redis, "alice").await, 150_001);

    let started = Instant::now();
    let mut disable = spawn_admin(&redis, &["user", "disable", "alice"]);
    let took = time_until_refused(
        &mut echo,
        &bearer(&pair.access_token),
        Reason::SessionRevoked,
        WITHIN,
    )
    .await
    .expect("the cut-off reaches the resource server within a second");
    let left = indexed_sessions(&redis, "alice").await;
    let running = disable.try_wait().unwrap().is_none();
    eprintln!(
        "cut-off at the resource server after {took:?} ({:?} after the command started); \
         {left} sessions not swept yet",
        started.elapsed()
    );
    assert!(
        running || left > 0,
        "the cut-off came before the sessions were ended"
    );
    let out = tokio::task::spawn_blocking(move || disable.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ended so far"),
        "progress is reported: {stderr}"
    );
    assert!(stderr.contains("150001 session(s) ended"), "{stderr}");
    eprintln!("disable with 150,001 sessions took {:?}", started.elapsed());
    assert_eq!(indexed_sessions(&redis, "alice").await, 0);
    let mut conn = redis.connection().await;
    let sessions: Vec<String> = redis::cmd("KEYS")
        .arg("tokend:session:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(sessions.is_empty(), "{} sessions left", sessions.len());
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
}

/// Found by the chaos run (cluster, seed 1): a login whose session was
/// being created while another of the user's sessions logged out
/// everywhere was refused `INVALID_CREDENTIALS`, telling a user with the
/// right password it was wrong. The credentials still stand: the login
/// begins its session again under the new account version.
#[tokio::test]
async fn a_login_racing_a_log_out_everywhere_is_not_told_its_password_is_wrong() {
    // Without the limit on how often one account logs out everywhere, and
    // without login throttling (many logins of one account, all right).
    let mut args = vec!["--revoke-all-interval", "0s"];
    args.extend(LOGIN_THROTTLING_OFF);
    let (_redis, tokend, _resource) = deployment(&args).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Logs out everywhere again and again while the logins run.
    let logouts = {
        let mut client = tokend.client().await;
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut done = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut request = password_login("alice", "pw");
                request.audience = TOKEND_AUDIENCE.into();
                let Ok(Some(manager)) = client.login(request).await.map(|r| r.into_inner().tokens)
                else {
                    continue;
                };
                if client
                    .revoke_all_sessions(with_bearer(
                        pb::RevokeAllSessionsRequest {},
                        &manager.access_token,
                    ))
                    .await
                    .is_ok()
                {
                    done += 1;
                }
            }
            done
        })
    };
    // One login at a time (with the log-outs' own, the two a replica lets
    // one account hash at once).
    let mut client = tokend.client().await;
    let mut refused = Vec::new();
    for _ in 0..60 {
        if let Err(status) = client.login(password_login("alice", "pw")).await {
            refused.push(format!("{:?} {:?}", status.code(), Reason::of(&status)));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let logouts = logouts.await.expect("log-outs");
    assert!(logouts > 0, "no log-out everywhere happened");
    assert!(
        refused.is_empty(),
        "{} of 60 logins with the right password refused while the user logged out \
         everywhere {logouts} times: {refused:?}",
        refused.len()
    );
    // The race was met (the logins began their sessions again), not
    // dodged.
    assert!(
        tokend
            .logs()
            .contains("password login begins its session again"),
        "no login met a log-out everywhere midway"
    );
}

#[tokio::test]
async fn revoke_all_answers_at_once_with_150_000_sessions_and_sweeps_the_rest() {
    let (redis, tokend, resource) = deployment(&[]).await;
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let pair = login(&mut client, "alice", "pw").await;
    let manager = login_for_tokend(&mut client, "alice", "pw").await;
    write_sessions(&redis, "alice", 150_000).await;

    let reply = client
        .revoke_all_sessions(with_bearer(
            pb::RevokeAllSessionsRequest {},
            &manager.access_token,
        ))
        .await
        .expect("revoke all answers within tokend's store deadlines")
        .into_inner();
    assert!(reply.revoked > 0, "{reply:?}");
    refused_within(&mut echo, &pair.access_token, WITHIN).await;
    assert_reason(
        refresh(&mut client, &pair.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    // A new session right away is not touched by the background sweep.
    let after = login(&mut client, "alice", "pw").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while indexed_sessions(&redis, "alice").await > 1 {
        assert!(Instant::now() < deadline, "the background sweep stalled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    refresh(&mut client, &after.refresh_token)
        .await
        .expect("the session from after the cut-off lives");
    echo_ok(&mut echo, &after.access_token).await;

    // The CLI's revoke-all is the same path.
    write_sessions(&redis, "alice", 3_000).await;
    let said = admin(&redis, &["sessions", "revoke-all", "alice"], None);
    assert!(said.contains("3001 session(s) of alice ended"), "{said}");
    assert_eq!(indexed_sessions(&redis, "alice").await, 0);
}

#[tokio::test]
async fn newer_feed_entries_never_push_a_revocation_out() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let tokend = Tokend::builder().redis(&redis).start();
    let mut client = tokend.client().await;
    let pair = login(&mut client, "alice", "pw").await;
    revoke(&mut client, &pair.refresh_token).await.unwrap();

    // 150,000 newer entries, as a flood of logouts would write them.
    let mut conn = redis.connection().await;
    let now = tokend::clock::Clock::system().now_ms();
    for chunk in 0..75 {
        let mut pipe = redis::pipe();
        for i in 0..2_000 {
            pipe.cmd("XADD")
                .arg("tokend:{revocations}")
                .arg("*")
                .arg("k")
                .arg("s")
                .arg("id")
                .arg(format!("flood-{chunk}-{i}"))
                .arg("at")
                .arg(now)
                .arg("until")
                .arg(now + 900_000)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    // One more through tokend, which trims what no longer matters.
    let other = login(&mut client, "alice", "pw").await;
    revoke(&mut client, &other.refresh_token).await.unwrap();
    let length: usize = redis::cmd("XLEN")
        .arg("tokend:{revocations}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        length >= 150_002,
        "nothing that matters was trimmed: {length}"
    );

    // A resource server connecting now still learns of the first logout.
    let resource = ResourceServer::watching(&tokend, &Watcher::in_redis(&redis), &[]);
    let mut echo = resource.client().await;
    refused_within(&mut echo, &pair.access_token, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_tokend_that_lost_its_feed_says_so_and_fail_closed_services_stop_trusting() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let key = key.to_str().unwrap();
    let out = tokend_command(&["keys", "generate", "--out", key], None);
    assert!(out.status.success());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let start = || {
        Tokend::builder()
            .listen(&addr)
            .args(["--dev", "--signing-key-file", key])
            .start()
    };
    let mut tokend = start();
    let resource = ResourceServer::watching(
        &tokend,
        &Watcher::demo(&tokend),
        &["--fail-closed-after", "1s"],
    );
    let mut echo = resource.client().await;
    let mut client = tokend.client().await;
    let gone = login(&mut client, "demo", "demo-password").await;
    revoke(&mut client, &gone.refresh_token).await.unwrap();
    refused_within(&mut echo, &gone.access_token, WITHIN).await;

    // The embedded store forgets everything on restart: revocations made
    // there are lost. The resource server resumes after its cursor and is
    // told so, and, failing closed, stops accepting tokens.
    tokend.kill();
    let tokend = start();
    let mut client = tokend.client().await;
    let fresh = login(&mut client, "demo", "demo-password").await;
    let took = time_until_refused(
        &mut echo,
        &bearer(&fresh.access_token),
        Reason::RevocationsUnavailable,
        Duration::from_secs(15),
    )
    .await;
    assert!(took.is_some(), "the gap made the feed stale");
    assert!(
        tokend.logs().contains("revocations that were lost"),
        "{}\n---\n{}",
        tokend.logs(),
        resource.logs()
    );
    assert!(resource.logs().contains("missing from the feed"));
}

//! Prometheus metrics on `--metrics-listen`: a scripted workload moves each
//! named series by exactly what it did, the exposition parses with an
//! independent parser (Python's `prometheus_client`), and no label carries a
//! user name, client id, token or session id.

use std::time::Duration;

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;

use crate::harness::*;

/// A series (name, labels) and how much the workload moves it.
type Moved<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

#[tokio::test]
async fn a_workload_moves_each_series_by_exactly_what_it_did() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let secret = add_client(&redis, "watcher-svc", &["tokend.revocations"]);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--metrics-listen", &metrics_addr])
        .start();
    let url = format!("http://{metrics_addr}/metrics");
    let mut client = tokend.client().await;
    let before = scrape(&url);

    // Two sessions, one wrong password.
    let first = login(&mut client, "alice", "pw").await;
    let second = login(&mut client, "alice", "pw").await;
    assert_reason(
        client.login(password_login("alice", "wrong-pw")).await,
        Reason::InvalidCredentials,
    );
    // A rotation, then a replay of the consumed token: reuse ends the session.
    refresh(&mut client, &first.refresh_token)
        .await
        .expect("rotates");
    assert_reason(
        refresh(&mut client, &first.refresh_token).await,
        Reason::RefreshTokenReused,
    );
    // A logout.
    revoke(&mut client, &second.refresh_token)
        .await
        .expect("revokes");
    // A service watching the revocation feed (with a token for tokend).
    let mut watcher_login = client_login("watcher-svc", &secret);
    watcher_login.audience = TOKEND_AUDIENCE.into();
    let watcher = client
        .login(watcher_login)
        .await
        .expect("client login")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token;
    let mut feed = client
        .clone()
        .watch_revocations(with_bearer(
            pb::WatchRevocationsRequest::default(),
            &watcher,
        ))
        .await
        .expect("watching")
        .into_inner();
    feed.message().await.expect("a first message");

    let after = scrape(&url);
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let expected: &[Moved] = &[
        (
            "tokend_logins_total",
            &[("kind", "password"), ("outcome", "ok")],
            2.0,
        ),
        (
            "tokend_logins_total",
            &[("kind", "password"), ("outcome", "invalid_credentials")],
            1.0,
        ),
        (
            "tokend_logins_total",
            &[("kind", "client"), ("outcome", "ok")],
            1.0,
        ),
        ("tokend_refreshes_total", &[("outcome", "rotated")], 1.0),
        ("tokend_refreshes_total", &[("outcome", "reused")], 1.0),
        ("tokend_refreshes_total", &[("outcome", "grace_retry")], 0.0),
        ("tokend_sessions_ended_total", &[("cause", "reuse")], 1.0),
        ("tokend_sessions_ended_total", &[("cause", "revoke")], 1.0),
        ("tokend_feed_published_total", &[], 2.0),
        ("tokend_password_hash_wait_seconds_count", &[], 3.0),
        (
            "tokend_rpc_requests_total",
            &[("method", "Login"), ("code", "OK"), ("reason", "")],
            3.0,
        ),
        (
            "tokend_rpc_requests_total",
            &[
                ("method", "Login"),
                ("code", "UNAUTHENTICATED"),
                ("reason", "INVALID_CREDENTIALS"),
            ],
            1.0,
        ),
        (
            "tokend_rpc_requests_total",
            &[("method", "Refresh"), ("code", "OK"), ("reason", "")],
            1.0,
        ),
        (
            "tokend_rpc_requests_total",
            &[
                ("method", "Refresh"),
                ("code", "UNAUTHENTICATED"),
                ("reason", "REFRESH_TOKEN_REUSED"),
            ],
            1.0,
        ),
        (
            "tokend_rpc_requests_total",
            &[("method", "Revoke"), ("code", "OK"), ("reason", "")],
            1.0,
        ),
        (
            "tokend_rpc_duration_seconds_count",
            &[("method", "Login")],
            4.0,
        ),
    ];
    for (name, labels, delta) in expected {
        assert_eq!(moved(name, labels), *delta, "{}", series_key(name, labels));
    }
    assert_eq!(after.get("tokend_feed_watchers", &[]), 1.0);
    assert_eq!(after.get("tokend_store_up", &[]), 1.0);
    assert_eq!(after.get("tokend_verification_keys", &[]), 1.0);
    assert_eq!(after.get("tokend_password_hashes_in_progress", &[]), 0.0);
    assert!(
        after
            .series()
            .any(|k| k.starts_with("tokend_signing_key_info{kid=k4.pid.")),
        "the active key id is published"
    );
    assert!(
        after.get("tokend_store_duration_seconds_count", &[("op", "rotate")]) >= 2.0,
        "store operations are timed"
    );

    // Privacy and bounded cardinality: no label names a user, a client or
    // carries a token or session id.
    let secrets = [
        "alice",
        "watcher-svc",
        first.refresh_token.as_str(),
        second.session_id.as_str(),
        watcher.as_str(),
    ];
    for value in &after.label_values {
        for secret in secrets {
            assert!(
                !value.contains(secret),
                "a label value holds {secret:?}: {value}"
            );
        }
    }
}

#[tokio::test]
async fn callers_cannot_add_label_values() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let tokend = Tokend::builder()
        .args(["--dev", "--metrics-listen", &metrics_addr])
        .start();
    let url = format!("http://{metrics_addr}/metrics");
    // Calls to methods that do not exist, named by the caller.
    for i in 0..50 {
        let (ok, _) = raw_call(&tokend, &format!("/tokend.v1.TokenService/Nope{i}")).await;
        assert!(!ok);
    }
    let after = scrape(&url);
    let methods: std::collections::HashSet<&str> = after
        .series()
        .filter(|k| k.starts_with("tokend_rpc_requests_total{"))
        .filter_map(|k| k.split("method=").nth(1))
        .filter_map(|rest| rest.split([',', '}']).next())
        .collect();
    assert!(methods.contains("unknown"), "{methods:?}");
    assert!(
        methods.iter().all(|m| !m.starts_with("Nope")),
        "unknown methods share one label value: {methods:?}"
    );
}

#[test]
fn a_metrics_address_in_use_is_refused_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut child = std::process::Command::new(tokend_bin())
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &addr,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tokend");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tokend kept running with its metrics port taken");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "a metrics port that cannot be bound stops tokend"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(stderr.contains("metrics"), "{stderr}");
}

/// Calls `path` on tokend with an empty body; whether it succeeded.
async fn raw_call(tokend: &Tokend, path: &str) -> (bool, Option<Reason>) {
    let channel = tonic::transport::Endpoint::from_shared(tokend.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    match raw_unary(channel, path, Vec::new()).await {
        Ok(()) => (true, None),
        Err(status) => (false, Reason::of(&status)),
    }
}

#[tokio::test]
async fn the_interceptor_records_through_the_facade_and_the_example_exports_it() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let resource = ResourceServer::for_tokend(&tokend, &["--metrics-listen", &metrics_addr]);
    let url = format!("http://{metrics_addr}/metrics");
    let mut client = tokend.client().await;
    let mut echo = resource.client().await;
    let pair = login(&mut client, "demo", "demo-password").await;
    let valid = bearer(&pair.access_token);
    for _ in 0..3 {
        echo.echo(echo_request("hi", Some(&valid)))
            .await
            .expect("a valid token passes");
    }
    let forged = bearer("v4.public.bm90IGEgdG9rZW4");
    assert_reason(
        echo.echo(echo_request("hi", Some(&forged))).await,
        Reason::AccessTokenInvalid,
    );
    assert_reason(
        echo.echo(echo_request("hi", None)).await,
        Reason::AccessTokenMissing,
    );

    let scraped = scrape(&url);
    let verified = |result: &str| {
        scraped.get(
            "tokend_interceptor_verifications_total",
            &[("result", result)],
        )
    };
    assert_eq!(verified("valid"), 3.0);
    assert_eq!(verified("ACCESS_TOKEN_INVALID"), 1.0);
    assert_eq!(
        scraped.get(
            "tokend_interceptor_cache_lookups_total",
            &[("result", "hit")]
        ),
        2.0,
        "the second and third calls are served from the cache"
    );
    assert!(scraped.get("tokend_interceptor_key_syncs_total", &[("result", "ok")]) >= 1.0);
    assert!(
        scraped.get("tokend_interceptor_keys_synced_timestamp_seconds", &[]) > 1.0e9,
        "the last key sync is a timestamp"
    );
    assert!(
        !scraped.label_values.iter().any(|v| v.contains("demo")),
        "no label names the subject"
    );
}

/// The `tokend_*` names a file refers to (histogram parts as their metric).
fn referenced_series(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tokend_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let name = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(name.to_owned());
        i = end;
    }
    names
}

#[test]
fn the_dashboard_and_the_alerts_use_only_series_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).expect(path);
    // What tokend and the interceptor record, as their modules list it.
    let documented: std::collections::BTreeSet<String> =
        [read("src/metrics.rs"), read("interceptor/src/observe.rs")]
            .iter()
            .flat_map(|source| {
                source
                    .lines()
                    .filter(|line| line.starts_with("//! | `tokend_"))
                    .filter_map(|line| line.split('`').nth(1).map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect();
    assert!(documented.len() >= 20, "{documented:?}");
    let sources = read("src/metrics.rs") + &read("interceptor/src/observe.rs");
    for name in &documented {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "{name} is listed but never recorded"
        );
    }
    let dashboard = read("deploy/grafana/tokend.json");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    for (file, text) in [
        ("deploy/grafana/tokend.json", dashboard),
        (
            "deploy/prometheus/tokend-alerts.yml",
            read("deploy/prometheus/tokend-alerts.yml"),
        ),
    ] {
        let used = referenced_series(&text);
        assert!(!used.is_empty(), "{file}");
        let unknown: Vec<_> = used.difference(&documented).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses series nothing records: {unknown:?}"
        );
    }
}

#[tokio::test]
async fn the_metrics_listener_keeps_no_idle_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let tokend = Tokend::builder()
        .args([
            "--dev",
            "--metrics-listen",
            &metrics_addr,
            "--handshake-timeout",
            "1s",
        ])
        .start();
    // Connections that never send a request are closed after the
    // first-bytes deadline...
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(&metrics_addr).await.unwrap());
    }
    for mut connection in idle {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(20), connection.read(&mut byte))
            .await
            .expect("an idle connection was kept open");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
    // ...and a scrape's connection is closed after its answer (no idle
    // keep-alive connection to hoard).
    let mut scrape = tokio::net::TcpStream::connect(&metrics_addr).await.unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), scrape.read_to_end(&mut answer))
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("tokend_"), "{answer}");
    let _ = tokend;
}

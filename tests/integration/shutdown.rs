//! Graceful shutdown: SIGTERM lets in-flight calls finish.

use tokio::task::JoinSet;

use crate::harness::*;

#[tokio::test]
async fn sigterm_lets_in_flight_calls_finish() {
    let redis = RedisServer::start();
    for i in 0..16 {
        add_user(&redis, &format!("user-{i}"), "pw", &["read"]);
    }
    // One hashing thread: sixteen password logins take a while to drain
    // (and all wait in line, however slow the machine).
    let mut tokend = Tokend::builder()
        .redis(&redis)
        .args([
            "--password-hash-threads",
            "1",
            "--password-hash-max-wait",
            "60s",
        ])
        .start();
    let client = tokend.client().await;

    let mut calls = JoinSet::new();
    for i in 0..16 {
        let mut client = client.clone();
        let user = format!("user-{i}");
        calls.spawn(async move { client.login(password_login(&user, "pw")).await });
    }
    // The first answer proves the batch reached the server; then stop it.
    let first = calls.join_next().await.unwrap().unwrap();
    assert!(first.is_ok(), "{first:?}");
    tokend.signal_terminate();

    let mut finished = 1;
    while let Some(result) = calls.join_next().await {
        result
            .unwrap()
            .expect("in-flight login finishes despite SIGTERM");
        finished += 1;
    }
    assert_eq!(finished, 16);
    drop(client);
    let status = tokend.exited().await;
    assert!(status.success(), "tokend exits cleanly: {status:?}");
    assert!(tokend.logs().contains("shutdown signal received"));
}

#[tokio::test]
async fn sigterm_ends_revocation_streams_instead_of_waiting_for_them() {
    let mut tokend = Tokend::builder().args(["--dev"]).start();
    let mut client = tokend.client().await;
    let token = Watcher::demo(&tokend).token(&mut client).await;
    let mut stream = client
        .watch_revocations(with_bearer(
            tokend::proto::tokend::v1::WatchRevocationsRequest::default(),
            &token,
        ))
        .await
        .expect("watch")
        .into_inner();
    // The first heartbeat proves the stream is open.
    let first = stream.message().await.expect("a message").expect("open");
    assert!(first.event.is_some());

    tokend.signal_terminate();
    // The stream ends (rather than keeping the server from draining)...
    while let Ok(Some(_)) = stream.message().await {}
    // ...and the process exits cleanly.
    drop(stream);
    drop(client);
    let status = tokend.exited().await;
    assert!(status.success(), "{status:?}");
}

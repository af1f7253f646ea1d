//! Audit events on the target `tokend::audit`: one per fact, with the
//! documented fields, as JSON with `--log-format json`, and never a secret.

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;

use crate::harness::*;

const PASSWORD: &str = "correct-horse-battery-staple";

/// The audit events in `logs` (JSON lines), in order.
fn audit_events(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "tokend::audit")
        .collect()
}

/// The events named `name`.
fn named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[tokio::test]
async fn each_security_fact_is_one_audit_event_with_its_fields_and_no_secret() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", PASSWORD, &["read"]);
    let secret = add_client(&redis, "billing", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--log-format", "json"])
        .start();
    let mut client = tokend.client().await;

    let first = login(&mut client, "alice", PASSWORD).await;
    assert_reason(
        client.login(password_login("alice", "wrong-horse")).await,
        Reason::InvalidCredentials,
    );
    // A "user name" that is really a password typed into the wrong field.
    let typed_in_the_wrong_field = "Tr0ub4dor.3-in-the-user-field";
    assert_reason(
        client
            .login(password_login(typed_in_the_wrong_field, PASSWORD))
            .await,
        Reason::InvalidCredentials,
    );
    let rotated = refresh(&mut client, &first.refresh_token)
        .await
        .expect("rotates");
    assert_reason(
        refresh(&mut client, &first.refresh_token).await,
        Reason::RefreshTokenReused,
    );
    let second = login(&mut client, "alice", PASSWORD).await;
    revoke(&mut client, &second.refresh_token)
        .await
        .expect("revokes");
    let service = client
        .login(client_login("billing", &secret))
        .await
        .expect("client login")
        .into_inner()
        .tokens
        .expect("tokens");
    let own = login_for_tokend(&mut client, "alice", PASSWORD).await;
    client
        .revoke_all_sessions(with_bearer(
            pb::RevokeAllSessionsRequest::default(),
            &own.access_token,
        ))
        .await
        .expect("log out everywhere");

    let logs = tokend.logs();
    let events = audit_events(&logs);

    let started = named(&events, "signing_key_loaded");
    assert_eq!(started.len(), 1, "{logs}");
    assert!(
        started[0]["kid"]
            .as_str()
            .is_some_and(|k| k.starts_with("k4.pid."))
    );

    let ok = named(&events, "login_succeeded");
    assert_eq!(ok.len(), 4, "three password logins and one client login");
    let password_ok: Vec<_> = ok.iter().filter(|e| e["kind"] == "password").collect();
    assert_eq!(password_ok.len(), 3);
    for event in &password_ok {
        assert_eq!(event["sub"], "alice");
        assert!(event["sid"].is_string() && event["jti"].is_string());
        assert!(
            event["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1"))
        );
    }
    assert_eq!(password_ok[0]["sid"], first.session_id.as_str());
    let client_ok: Vec<_> = ok.iter().filter(|e| e["kind"] == "client").collect();
    assert_eq!(client_ok.len(), 1);
    assert_eq!(client_ok[0]["sub"], "billing");
    assert!(
        client_ok[0]["sid"].is_null(),
        "service clients have no session"
    );

    let failed = named(&events, "login_failed");
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["sub"], "alice", "an existing account is named");
    assert_eq!(failed[0]["reason"], "INVALID_CREDENTIALS");
    assert!(
        failed[1]["sub"].is_null(),
        "an unknown name is not logged: it may be a password"
    );

    let reused = named(&events, "refresh_token_reused");
    assert_eq!(reused.len(), 1);
    assert_eq!(reused[0]["sid"], first.session_id.as_str());
    assert_eq!(reused[0]["sub"], "alice");

    let ended = named(&events, "session_ended");
    let causes: Vec<&str> = ended.iter().filter_map(|e| e["cause"].as_str()).collect();
    assert_eq!(causes, ["reuse", "revoke"], "{ended:?}");
    assert_eq!(ended[1]["sid"], second.session_id.as_str());

    let all = named(&events, "sessions_revoked_all");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["sub"], "alice");

    // No secret in any audit event (nor anywhere in the log).
    let secrets = [
        PASSWORD,
        "wrong-horse",
        typed_in_the_wrong_field,
        secret.as_str(),
        first.refresh_token.as_str(),
        first.access_token.as_str(),
        rotated.refresh_token.as_str(),
        service.access_token.as_str(),
        own.access_token.as_str(),
    ];
    for secret in secrets {
        assert!(!logs.contains(secret), "the log holds a secret");
    }
}

#[test]
fn administrators_changes_are_audited_by_the_cli() {
    let redis = RedisServer::start();
    add_user(&redis, "bob", PASSWORD, &["read"]);
    let out = admin(
        &redis,
        &["user", "disable", "bob", "--log-format", "json"],
        None,
    );
    let events = audit_events(&out);
    let disabled = named(&events, "user_disabled");
    assert_eq!(disabled.len(), 1, "{out}");
    assert_eq!(disabled[0]["sub"], "bob");
    assert_eq!(disabled[0]["count"], 0);
    let out = admin(
        &redis,
        &["user", "enable", "bob", "--log-format", "json"],
        None,
    );
    assert_eq!(named(&audit_events(&out), "user_enabled").len(), 1, "{out}");
    let out = admin(
        &redis,
        &[
            "client",
            "add",
            "svc",
            "--scope",
            "read",
            "--log-format",
            "json",
        ],
        None,
    );
    let added = audit_events(&out);
    assert_eq!(named(&added, "client_added").len(), 1, "{out}");
    let secret = out.lines().next().expect("the secret, first on stdout");
    assert!(
        !added.iter().any(|e| e.to_string().contains(secret)),
        "the new secret is printed once, never audited"
    );
}

#[tokio::test]
async fn the_callers_trace_id_is_on_the_events_of_its_call() {
    let tokend = Tokend::builder()
        .args(["--dev", "--log-format", "json"])
        .start();
    let mut client = tokend.client().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    for traceparent in [
        format!("00-{trace_id}-00f067aa0ba902b7-01"),
        // Malformed: ignored, as the W3C spec says.
        "00-not-a-trace-01".to_owned(),
    ] {
        let mut request = tonic::Request::new(password_login("demo", "demo-password"));
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().expect("ascii"));
        client.login(request).await.expect("login");
    }
    let logs = tokend.logs();
    let events = audit_events(&logs);
    let logins = named(&events, "login_succeeded");
    assert_eq!(logins.len(), 2, "{logs}");
    assert_eq!(logins[0]["span"]["trace_id"], trace_id, "{}", logins[0]);
    assert_eq!(logins[0]["span"]["method"], "/tokend.v1.TokenService/Login");
    assert!(logins[1]["span"]["trace_id"].is_null(), "{}", logins[1]);
}

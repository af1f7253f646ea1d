//! grpcurl, as an operator would use it: reflection only, no proto files.

use crate::harness::*;

fn json_field(text: &str, field: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).expect("JSON output");
    value["tokens"][field].as_str().expect("field").to_owned()
}

#[test]
fn grpcurl_lists_describes_and_walks_through_a_session() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let addr = tokend.addr.to_string();

    let (ok, listed) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(ok, "{listed}");
    assert!(listed.contains("tokend.v1.TokenService"), "{listed}");
    assert!(listed.contains("grpc.health.v1.Health"), "{listed}");

    let (ok, described) = grpcurl(&["-plaintext", &addr, "describe", "tokend.v1.TokenService"]);
    assert!(ok, "{described}");
    for rpc in ["Login", "Refresh", "Revoke", "GetPublicKeys"] {
        assert!(described.contains(&format!("rpc {rpc}")), "{described}");
    }

    let login = r#"{"password":{"username":"demo","password":"demo-password"}}"#;
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        login,
        &addr,
        "tokend.v1.TokenService/Login",
    ]);
    assert!(ok, "{out}");
    assert!(json_field(&out, "accessToken").starts_with("v4.public."));
    let first = json_field(&out, "refreshToken");

    let body = format!(r#"{{"refresh_token":"{first}"}}"#);
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &body,
        &addr,
        "tokend.v1.TokenService/Refresh",
    ]);
    assert!(ok, "{out}");
    let second = json_field(&out, "refreshToken");

    // The replay shows the reason, decoded thanks to reflection.
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &body,
        &addr,
        "tokend.v1.TokenService/Refresh",
    ]);
    assert!(!ok);
    assert!(out.contains("Unauthenticated"), "{out}");
    assert!(out.contains(r#""reason":"REFRESH_TOKEN_REUSED""#), "{out}");

    let body = format!(r#"{{"refresh_token":"{second}"}}"#);
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &body,
        &addr,
        "tokend.v1.TokenService/Revoke",
    ]);
    assert!(ok, "{out}");

    // Managing one's sessions needs a token for tokend, as the README shows;
    // the everyday token is refused with the reason.
    let everyday = {
        let (ok, out) = grpcurl(&[
            "-plaintext",
            "-d",
            login,
            &addr,
            "tokend.v1.TokenService/Login",
        ]);
        assert!(ok, "{out}");
        json_field(&out, "accessToken")
    };
    let header = format!("authorization: Bearer {everyday}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        &addr,
        "tokend.v1.TokenService/ListSessions",
    ]);
    assert!(!ok);
    assert!(out.contains("PermissionDenied"), "{out}");
    assert!(out.contains(r#""reason":"WRONG_AUDIENCE""#), "{out}");
    let for_tokend =
        r#"{"password":{"username":"demo","password":"demo-password"},"audience":"tokend"}"#;
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        for_tokend,
        &addr,
        "tokend.v1.TokenService/Login",
    ]);
    assert!(ok, "{out}");
    let header = format!("authorization: Bearer {}", json_field(&out, "accessToken"));
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        &addr,
        "tokend.v1.TokenService/ListSessions",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("sessionId"), "{out}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        &addr,
        "tokend.v1.TokenService/RevokeAllSessions",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(r#""revoked": 2"#), "{out}");

    let (ok, out) = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(ok, "{out}");
    assert!(out.contains("SERVING"), "{out}");

    let (ok, out) = grpcurl(&["-plaintext", &addr, "tokend.v1.TokenService/GetPublicKeys"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("k4.pid.") && out.contains("k4.public."),
        "{out}"
    );
    assert!(!out.contains("k4.secret"), "{out}");
}

#[test]
fn grpcurl_exchanges_a_users_token_as_the_readme_shows() {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/exchange/policy.example.toml"
    );
    let tokend = Tokend::builder()
        .args(["--dev", "--exchange-policy", policy])
        .start();
    let addr = tokend.addr.to_string();
    let secret = tokend.demo_client_secret().expect("the demo client");
    let call = |args: &[&str]| {
        let mut all = vec!["-plaintext"];
        all.extend_from_slice(args);
        grpcurl(&all)
    };
    let (ok, described) = call(&[&addr, "describe", "tokend.v1.TokenService.Exchange"]);
    assert!(ok && described.contains("ExchangeRequest"), "{described}");

    // The user logs in at the front service (the demo client's audience)...
    let (ok, out) = call(&[
        "-d",
        r#"{"password":{"username":"demo","password":"demo-password"},"audience":"demo-client"}"#,
        &addr,
        "tokend.v1.TokenService/Login",
    ]);
    assert!(ok, "{out}");
    let user = json_field(&out, "accessToken");
    // ...which logs in as itself, for tokend...
    let own = format!(
        r#"{{"client":{{"client_id":"demo-client","client_secret":"{secret}"}},"audience":"tokend"}}"#
    );
    let (ok, out) = call(&["-d", &own, &addr, "tokend.v1.TokenService/Login"]);
    assert!(ok, "{out}");
    let header = format!("authorization: Bearer {}", json_field(&out, "accessToken"));
    // ...and trades the user's token for one good at orders.
    let body = format!(r#"{{"subject_token":"{user}","audience":"orders"}}"#);
    let (ok, out) = call(&[
        "-H",
        &header,
        "-d",
        &body,
        &addr,
        "tokend.v1.TokenService/Exchange",
    ]);
    assert!(ok, "{out}");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(
        reply["accessToken"]
            .as_str()
            .unwrap()
            .starts_with("v4.public."),
        "{out}"
    );
    assert_eq!(reply["audience"], "orders");
    assert_eq!(reply["actorChain"], serde_json::json!(["demo-client"]));
    assert_eq!(reply["scopes"], serde_json::json!(["read"]));
    assert!(!out.contains("refresh"), "never a refresh token: {out}");

    // Refusals show their reason.
    let wider = format!(r#"{{"subject_token":"{user}","audience":"orders","scopes":["admin"]}}"#);
    let (ok, out) = call(&[
        "-H",
        &header,
        "-d",
        &wider,
        &addr,
        "tokend.v1.TokenService/Exchange",
    ]);
    assert!(!ok);
    assert!(out.contains(r#""reason":"SCOPE_NOT_ALLOWED""#), "{out}");
    let elsewhere = format!(r#"{{"subject_token":"{user}","audience":"payments"}}"#);
    let (ok, out) = call(&[
        "-H",
        &header,
        "-d",
        &elsewhere,
        &addr,
        "tokend.v1.TokenService/Exchange",
    ]);
    assert!(!ok);
    assert!(out.contains(r#""reason":"EXCHANGE_NOT_ALLOWED""#), "{out}");
    let (ok, out) = call(&["-d", &body, &addr, "tokend.v1.TokenService/Exchange"]);
    assert!(!ok);
    assert!(out.contains(r#""reason":"ACCESS_TOKEN_MISSING""#), "{out}");
}

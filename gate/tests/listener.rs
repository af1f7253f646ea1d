//! tokend-gate's own listener over TLS with client certificates: only an
//! Envoy presenting a certificate of the configured CA gets to ask.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use testkit::pki::Pki;
use testkit::*;

#[tokio::test]
async fn the_gate_serves_envoy_over_mtls_only() {
    let pki = Pki::new("gate-listener");
    let server = pki.server("tokend-gate");
    let envoy = pki.client("envoy");
    let tokend = Tokend::builder().args(["--dev"]).start();
    let url = tokend.url();
    let gate = GateProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_tokend-gate")),
        &[
            "--tokend",
            &url,
            "--tls-cert",
            server.cert_arg(),
            "--tls-key",
            server.key_arg(),
            "--tls-client-ca",
            pki.ca_arg(),
            "--tls-require-client-cert",
        ],
        &[],
    )
    .ready();
    let https = format!("https://{}", gate.addr);

    let with_cert = tls_channel(&https, pki.ca(), Some(&envoy)).await.unwrap();
    let answer = AuthorizationClient::new(with_cert)
        .check(CheckRequest::default())
        .await
        .expect("a Check over mTLS is answered")
        .into_inner();
    assert_ne!(
        answer.status.map(|s| s.code),
        Some(0),
        "an empty request is refused"
    );

    // Without a client certificate the handshake (or the first call) fails.
    let refused = match tls_channel(&https, pki.ca(), None).await {
        Err(_) => true,
        Ok(channel) => AuthorizationClient::new(channel)
            .check(CheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "no client certificate, no Check");
    // Nor over plaintext.
    let plain = channel(&format!("http://{}", gate.addr)).await;
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => AuthorizationClient::new(channel)
            .check(CheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "plaintext to a TLS gate");
}

#[tokio::test]
async fn a_gate_with_a_fixed_public_key_verifies_without_reaching_tokend() {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use tokend_interceptor::proto::tokend::v1::GetPublicKeysRequest;
    let tokend = Tokend::builder().args(["--dev"]).start();
    let mut client = tokend.client().await;
    let key = client
        .get_public_keys(GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .remove(0)
        .public_key;
    let token = login(&mut client, "demo", "demo-password")
        .await
        .access_token;
    let gate = GateProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_tokend-gate")),
        &["--public-key", &key],
        &[],
    )
    .ready();
    // tokend goes away: a gate with a fixed key does not need it.
    drop(tokend);
    let mut gate_client =
        AuthorizationClient::new(channel(&format!("http://{}", gate.addr)).await.unwrap());
    let check = |authorization: String| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/anything".into(),
                    headers: [("authorization".to_owned(), authorization)].into(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    };
    let allowed = gate_client
        .check(check(bearer(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        allowed.status.map(|s| s.code),
        Some(0),
        "the valid token passes"
    );
    let refused = gate_client
        .check(check(bearer("v4.public.nonsense")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.status.map(|s| s.code), Some(16));
}

//! tokend-gate under abuse, called directly as Envoy would call it: floods
//! of forged tokens and client certificates, oversized and empty requests.
//! The gate must refuse what it must, stay bounded, and not let a flood
//! turn into calls to tokend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use testkit::*;
use tonic::transport::Channel;

/// A Check of a gRPC call to `path` with `authorization` and, if any, the
/// peer certificate text Envoy would send.
fn check(path: &str, authorization: Option<&str>, certificate: &str) -> CheckRequest {
    let mut headers = std::collections::HashMap::from([(
        "content-type".to_owned(),
        "application/grpc".to_owned(),
    )]);
    if let Some(value) = authorization {
        headers.insert("authorization".into(), value.into());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate: certificate.into(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: path.into(),
                    headers,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// The `grpc-status` Envoy would send for `response` (0: allowed).
fn grpc_status(response: &CheckResponse) -> i32 {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => 0,
        _ => response.status.as_ref().map_or(-1, |s| s.code),
    }
}

/// The `ErrorInfo` reason in a refusal's `grpc-status-details-bin`, via
/// tonic's own decoding.
fn reason(response: &CheckResponse) -> Option<tokend_interceptor::Reason> {
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        return None;
    };
    let mut map = tonic::metadata::MetadataMap::new().into_headers();
    for header in denied.headers.iter().filter_map(|h| h.header.as_ref()) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.key.as_bytes()),
            http::HeaderValue::from_str(&header.value),
        ) {
            map.insert(name, value);
        }
    }
    let status = tonic::Status::from_header_map(&map)?;
    tokend_interceptor::Reason::of(&status)
}

async fn gate_client(gate: &GateProcess) -> AuthorizationClient<Channel> {
    AuthorizationClient::new(channel(&format!("http://{}", gate.addr)).await.unwrap())
}

/// A well-formed v4.public token naming a key nobody has (`n` makes it
/// unique).
fn forged(n: usize) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let footer = b64.encode(format!(
        r#"{{"kid":"k4.pid.forged{n:06}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}"#
    ));
    let body = b64.encode([7u8; 96]);
    format!("Bearer v4.public.{body}.{footer}")
}

#[tokio::test]
async fn a_flood_of_forged_tokens_and_certificates_stays_bounded() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let url = tokend.url();
    let gate = GateProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_tokend-gate")),
        &["--tokend", &url, "--metrics-listen", "127.0.0.1:0"],
        &[],
    )
    .ready();
    let client = gate_client(&gate).await;
    let mut login_client = tokend.client().await;
    let valid = bearer(
        &login(&mut login_client, "demo", "demo-password")
            .await
            .access_token,
    );

    // 3,000 forged kids from 50 callers at once: every one refused as
    // invalid, and key fetches from tokend stay rate-limited.
    const FORGED: usize = 3_000;
    let mut tasks = Vec::new();
    for worker in 0..50 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for n in (worker..FORGED).step_by(50) {
                let answer = client
                    .check(check("/demo.v1.EchoService/Echo", Some(&forged(n)), ""))
                    .await
                    .unwrap()
                    .into_inner();
                if grpc_status(&answer) == 16
                    && reason(&answer) == Some(tokend_interceptor::Reason::AccessTokenInvalid)
                {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    assert_eq!(refused, FORGED);
    let metrics = scrape(&format!("http://{}/metrics", gate.metrics.unwrap()));
    let fetches = metrics.get("tokend_interceptor_key_syncs_total", &[("result", "ok")])
        + metrics.get("tokend_interceptor_key_syncs_total", &[("result", "error")]);
    println!("{FORGED} forged kids cost {fetches} key fetches");
    assert!(
        fetches <= 5.0,
        "{fetches} key fetches for a flood of forged kids"
    );

    // 3,000 distinct client certificates (garbage, as a hostile proxy
    // config could send): the gate's certificate memory is bounded, and a
    // valid unbound token still passes with each.
    let mut client = client.clone();
    for n in 0..3_000 {
        let certificate =
            format!("-----BEGIN%20CERTIFICATE-----%0A{n:08}%0A-----END%20CERTIFICATE-----");
        let answer = client
            .check(check(
                "/demo.v1.EchoService/Echo",
                Some(&valid),
                &certificate,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(grpc_status(&answer), 0, "certificate {n}");
    }

    // Oversized and empty requests are refused with a reason, not a crash.
    let huge = format!("Bearer v4.public.{}", "A".repeat(100_000));
    let answer = client
        .check(check("/demo.v1.EchoService/Echo", Some(&huge), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reason(&answer),
        Some(tokend_interceptor::Reason::AccessTokenInvalid)
    );
    // No HTTP attributes at all: not gRPC, so an HTTP refusal (403, JSON).
    let answer = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::DeniedResponse(denied)) = &answer.http_response else {
        panic!("an empty request is refused: {answer:?}");
    };
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(403));
    assert!(denied.body.contains("PATH_NOT_ALLOWED"), "{}", denied.body);
    let long_path = format!("/{}", "a/".repeat(50_000));
    let answer = client
        .check(check(&long_path, Some(&valid), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        grpc_status(&answer),
        0,
        "a long path is judged like any other"
    );
    // Still serving after all that.
    let answer = client
        .check(check("/demo.v1.EchoService/Echo", Some(&valid), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_status(&answer), 0);
}

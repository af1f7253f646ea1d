//! tokend-gate in front of services in another language, through a real
//! Envoy: the protected upstreams are Python (a grpcio echo service and a
//! plain HTTP server) with no authentication code, and every client
//! (tonic, grpcio, grpcurl, raw HTTP/1.1) sees what a tonic client of the
//! interceptor would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::pki::{CertFiles, Pki};
use testkit::*;
use tokend_interceptor::Reason;
use tonic::Code;

/// The policy the tests enforce (and `make lint` checks the shipped
/// example's twin of).
const POLICY: &str = r#"
default = "deny"

[[rule]]
path = "/demo.v1.EchoService/Ping"
public = true
[[rule]]
path = "/demo.v1.EchoService/Echo"
scopes = ["read"]
[[rule]]
path = "/demo.v1.EchoService/AdminEcho"
scopes = ["admin"]
forbid_delegated = true
[[rule]]
path = "/grpc.health.v1.Health/*"
public = true
[[rule]]
path = "/grpc.reflection.v1alpha.ServerReflection/*"
public = true
[[rule]]
path = "/grpc.reflection.v1.ServerReflection/*"
public = true
[[rule]]
path = "/api/public/*"
public = true
[[rule]]
path = "/api/*"
methods = ["GET"]
scopes = ["read"]
[[rule]]
path = "/api/*"
scopes = ["write"]
"#;

/// Envoy's downstream TLS: its certificate, and the CA client
/// certificates are verified against (presenting one is optional).
struct DownstreamTls<'a> {
    server: &'a CertFiles,
    ca: &'a Path,
}

/// An Envoy bootstrap: listener `plain` (and `mtls` with `tls`) routing
/// `/api/` to the HTTP upstream and everything else to the gRPC one, every
/// request checked by the gate at `gate` first. `ext_authz` is set as a
/// production deployment should: `failure_mode_allow: false` (no gate, no
/// entry), 503 when the gate cannot be asked, the peer certificate sent.
fn bootstrap(
    gate: SocketAddr,
    grpc: SocketAddr,
    http: SocketAddr,
    tls: Option<DownstreamTls<'_>>,
) -> String {
    let manager = r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          route_config:
            virtual_hosts:
            - name: services
              domains: ["*"]
              routes:
              - match: { prefix: "/api/" }
                route: { cluster: http_upstream }
              - match: { prefix: "/" }
                route: { cluster: grpc_upstream }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: { code: ServiceUnavailable }
              include_peer_certificate: true
              # Only the headers the gate reads: cookies and the rest stay in Envoy.
              allowed_headers:
                patterns: [{ exact: authorization }, { exact: content-type }]
              grpc_service:
                envoy_grpc: { cluster_name: tokend_gate }
                timeout: 2s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;
    let mut listeners = format!(
        r#"
  - name: plain
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:{manager}"#
    );
    if let Some(tls) = tls {
        listeners.push_str(&format!(
            r#"
  - name: mtls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: false
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: {{ filename: "{cert}" }}
              private_key: {{ filename: "{key}" }}
            validation_context:
              trusted_ca: {{ filename: "{ca}" }}
      filters:{manager}"#,
            cert = tls.server.cert_arg(),
            key = tls.server.key_arg(),
            ca = tls.ca.display(),
        ));
    }
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:{listeners}
  clusters:
  - name: tokend_gate
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: tokend_gate
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {gate_port} }} }} }} }}] }}]
  - name: grpc_upstream
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: grpc_upstream
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {grpc_port} }} }} }} }}] }}]
  - name: http_upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: http_upstream
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {http_port} }} }} }} }}] }}]
"#,
        gate_port = gate.port(),
        grpc_port = grpc.port(),
        http_port = http.port(),
    )
}

/// The gate cargo built for these tests, started with `args` and `envs`.
fn gate(args: &[&str], envs: &[(&str, &str)]) -> GateProcess {
    GateProcess::start_binary(Path::new(env!("CARGO_BIN_EXE_tokend-gate")), args, envs)
}

/// tokend, the gate with [`POLICY`], the Python upstreams and Envoy.
struct Fleet {
    tokend: Tokend,
    gate: GateProcess,
    envoy: Envoy,
    _upstreams: PythonUpstreams,
    policy: tempfile::NamedTempFile,
}

impl Fleet {
    /// A `--dev` tokend (with `tokend_args`) and a gate (with `gate_args`).
    fn start(tokend_args: &[&str], gate_args: &[&str]) -> Fleet {
        Fleet::with_policy(POLICY, tokend_args, gate_args)
    }

    /// Like [`start`](Self::start), the gate enforcing `policy`.
    fn with_policy(policy: &str, tokend_args: &[&str], gate_args: &[&str]) -> Fleet {
        let tokend = Tokend::builder()
            .args(["--dev"])
            .args(tokend_args.iter().copied())
            .start();
        Fleet::around_with(tokend, policy, gate_args, None)
    }

    /// The gate (with [`POLICY`]) and Envoy around a running `tokend`.
    fn around(tokend: Tokend, gate_args: &[&str], tls: Option<DownstreamTls<'_>>) -> Fleet {
        Fleet::around_with(tokend, POLICY, gate_args, tls)
    }

    /// The gate enforcing `policy_text`, and Envoy, around `tokend`.
    fn around_with(
        tokend: Tokend,
        policy_text: &str,
        gate_args: &[&str],
        tls: Option<DownstreamTls<'_>>,
    ) -> Fleet {
        let policy = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(policy.path(), policy_text).unwrap();
        let url = tokend.url();
        let mut args = vec!["--policy", policy.path().to_str().unwrap()];
        if !gate_args.contains(&"--tokend") {
            args.extend(["--tokend", url.as_str()]);
        }
        args.extend_from_slice(gate_args);
        let secret = tokend.demo_client_secret().unwrap_or_default();
        let gate = gate(&args, &[("TOKEND_CLIENT_SECRET", secret.as_str())]).ready();
        let upstreams = PythonUpstreams::start();
        let envoy = Envoy::start(&bootstrap(gate.addr, upstreams.grpc, upstreams.http, tls));
        Fleet {
            tokend,
            gate,
            envoy,
            _upstreams: upstreams,
            policy,
        }
    }

    /// Envoy's plaintext listener.
    fn entry(&self) -> SocketAddr {
        self.envoy.listener("plain")
    }

    /// A demo.v1 client through Envoy.
    async fn echo(&self) -> EchoClient {
        EchoClient::new(channel(&format!("http://{}", self.entry())).await.unwrap())
    }

    /// An access token of the demo user (scopes read, write, admin).
    async fn user_token(&self) -> String {
        let mut client = self.tokend.client().await;
        login(&mut client, "demo", "demo-password")
            .await
            .access_token
    }

    /// An access token of the demo client (scopes read, tokend.revocations).
    async fn client_token(&self) -> String {
        let mut client = self.tokend.client().await;
        let secret = self.tokend.demo_client_secret().unwrap();
        client
            .login(client_login("demo-client", &secret))
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap()
            .access_token
    }
}

/// How a call through Envoy ended: its code and tokend reason.
fn refusal<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, Option<Reason>) {
    let status = result.expect_err("refused");
    (status.code(), Reason::of(&status))
}

#[tokio::test]
async fn grpc_clients_behind_envoy_get_the_interceptors_refusals() {
    let fleet = Fleet::start(&[], &["--metrics-listen", "127.0.0.1:0"]);
    let mut echo = fleet.echo().await;
    let user = fleet.user_token().await;
    let service = fleet.client_token().await;

    // Missing, garbage and foreign-audience tokens: UNAUTHENTICATED, with
    // the reason in grpc-status-details-bin as tonic decodes it.
    assert_eq!(
        refusal(echo.echo(echo_request("hi", None)).await),
        (Code::Unauthenticated, Some(Reason::AccessTokenMissing))
    );
    assert_eq!(
        refusal(
            echo.echo(echo_request("hi", Some("Bearer v4.public.garbage")))
                .await
        ),
        (Code::Unauthenticated, Some(Reason::AccessTokenInvalid))
    );
    let mut tokend = fleet.tokend.client().await;
    let foreign = login_for_tokend(&mut tokend, "demo", "demo-password")
        .await
        .access_token;
    let status = echo
        .echo(echo_request("hi", Some(&bearer(&foreign))))
        .await
        .expect_err("a token for tokend is not for this service");
    assert_eq!(
        (status.code(), Reason::of(&status)),
        (Code::Unauthenticated, Some(Reason::AccessTokenInvalid))
    );
    assert!(status.message().contains("audience"), "{status:?}");

    // A valid token passes; the service reads the subject Envoy passed on.
    let answer = echo
        .echo(echo_request("hi", Some(&bearer(&user))))
        .await
        .expect("a valid token passes")
        .into_inner();
    assert_eq!(
        (answer.message.as_str(), answer.subject.as_str()),
        ("hi", "demo")
    );
    assert!(answer.actor_chain.is_empty());

    // Forged identity headers never reach the service: overwritten when a
    // token vouches for one, removed otherwise.
    let mut forged = echo_request("hi", Some(&bearer(&user)));
    for (name, value) in [
        ("x-tokend-subject", "root"),
        ("x-tokend-actor-chain", "admin-svc"),
        ("x-tokend-scopes", "admin"),
    ] {
        forged.metadata_mut().insert(name, value.parse().unwrap());
    }
    let answer = echo.echo(forged).await.unwrap().into_inner();
    assert_eq!(answer.subject, "demo");
    assert!(answer.actor_chain.is_empty(), "{:?}", answer.actor_chain);

    // Scopes: the demo client has read but not admin.
    assert_eq!(
        refusal(
            echo.admin_echo(with_bearer(
                testkit::demo::v1::AdminEchoRequest {
                    message: "x".into()
                },
                &service
            ))
            .await
        ),
        (Code::PermissionDenied, Some(Reason::InsufficientScope))
    );
    let admin = echo
        .admin_echo(with_bearer(
            testkit::demo::v1::AdminEchoRequest {
                message: "x".into(),
            },
            &user,
        ))
        .await
        .expect("the demo user has admin")
        .into_inner();
    assert_eq!(admin.subject, "demo");

    // Public paths need no token; and a public path's forged header is
    // removed too.
    echo.ping(testkit::demo::v1::PingRequest {})
        .await
        .expect("Ping is public");
    let health = tonic_health::pb::health_client::HealthClient::new(
        channel(&format!("http://{}", fleet.entry())).await.unwrap(),
    )
    .check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .expect("health is public")
    .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A method the policy does not name is closed, token or not.
    assert_eq!(
        refusal(
            echo.relay_echo(with_bearer(
                testkit::demo::v1::RelayEchoRequest {
                    message: "x".into()
                },
                &user
            ))
            .await
        ),
        (Code::PermissionDenied, Some(Reason::PathNotAllowed))
    );

    // Python grpcio and grpcurl see the same reasons.
    let out = Command::new(tool("python3"))
        .arg(workspace_dir().join("gate/tests/python/through_envoy.py"))
        .arg(fleet.entry().to_string())
        .arg(&user)
        .arg(&service)
        .arg(workspace_dir().join("interceptor/examples/resource_server/generated/demo.v1.bin"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = fleet.entry().to_string();
    let (ok, text) = grpcurl(&[
        "-d",
        r#"{"message":"hi"}"#,
        &entry,
        "demo.v1.EchoService/Echo",
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("Code: Unauthenticated"), "{text}");
    assert!(
        text.contains(r#""reason":"ACCESS_TOKEN_MISSING""#),
        "{text}"
    );
    let header = format!("authorization: Bearer {user}");
    let (ok, text) = grpcurl(&[
        "-H",
        &header,
        "-d",
        r#"{"message":"hi"}"#,
        &entry,
        "demo.v1.EchoService/Echo",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(r#""subject": "demo""#), "{text}");

    // Nothing reached the upstream that the gate refused, and the gate
    // counted its decisions.
    assert!(fleet.envoy.stat("http.ingress.ext_authz.denied") >= 7);
    assert_eq!(fleet.envoy.stat("http.ingress.ext_authz.error"), 0);
    let metrics = scrape(&format!("http://{}/metrics", fleet.gate.metrics.unwrap()));
    let denied = |reason| {
        metrics.get(
            "tokend_gate_checks_total",
            &[("decision", "deny"), ("reason", reason)],
        )
    };
    assert!(denied("ACCESS_TOKEN_MISSING") >= 2.0);
    assert!(denied("INSUFFICIENT_SCOPE") >= 2.0);
    assert!(denied("PATH_NOT_ALLOWED") >= 2.0);
    assert!(
        metrics.get(
            "tokend_gate_checks_total",
            &[("decision", "allow"), ("reason", "none")]
        ) >= 5.0
    );
    assert!(
        metrics
            .label_values
            .iter()
            .all(|v| !v.contains(&user) && !v.contains("v4.public")),
        "no token in a label"
    );
}

/// grpcurl through Envoy (plaintext, reflection from the upstream).
fn grpcurl(args: &[&str]) -> (bool, String) {
    let mut all = vec!["-plaintext", "-max-time", "10"];
    all.extend_from_slice(args);
    testkit::grpcurl(&all)
}

/// The identity headers the Python HTTP upstream received, from its JSON.
fn seen(response: &HttpResponse) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|_| panic!("JSON from the upstream: {response:?}"));
    body["identity"].clone()
}

#[tokio::test]
async fn http_clients_get_rfc_6750_answers_and_trusted_headers() {
    let fleet = Fleet::start(&[], &[]);
    let entry = fleet.entry();
    let user = fleet.user_token().await;
    let service = fleet.client_token().await;
    let auth = |token: &str| format!("Bearer {token}");

    // A valid token with read: GET passes, with the identity headers, and a
    // forged subject is overwritten.
    let user_auth = auth(&user);
    let response = http_request(
        entry,
        "GET",
        "/api/orders?id=7",
        &[
            ("authorization", &user_auth),
            ("x-tokend-subject", "root"),
            ("x-tokend-actor-chain", "x"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let identity = seen(&response);
    assert_eq!(identity["x-tokend-subject"], "demo");
    assert_eq!(identity["x-tokend-scopes"], "read write admin tokend.admin");
    assert!(
        identity["x-tokend-session"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(identity["x-tokend-actor-chain"].is_null(), "{identity}");

    // No token: 401 with the RFC 6750 challenge and a JSON reason.
    let response = http_request(entry, "GET", "/api/orders", &[], "").unwrap();
    assert_eq!(response.status, 401, "{response:?}");
    let challenge = response.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["reason"], "ACCESS_TOKEN_MISSING");
    assert_eq!(response.header("content-type"), Some("application/json"));

    // A garbage token: 401 too, ACCESS_TOKEN_INVALID.
    let response = http_request(
        entry,
        "GET",
        "/api/orders",
        &[("authorization", "Bearer nonsense")],
        "",
    )
    .unwrap();
    assert_eq!(response.status, 401);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["reason"], "ACCESS_TOKEN_INVALID");

    // The demo client has read, not write: GET passes, POST gets 403.
    let service_auth = auth(&service);
    let response = http_request(
        entry,
        "GET",
        "/api/orders",
        &[("authorization", &service_auth)],
        "",
    )
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(seen(&response)["x-tokend-subject"], "demo-client");
    let response = http_request(
        entry,
        "POST",
        "/api/orders",
        &[("authorization", &service_auth)],
        "{}",
    )
    .unwrap();
    assert_eq!(response.status, 403, "{response:?}");
    let challenge = response.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["reason"], "INSUFFICIENT_SCOPE");

    // A public path: no token needed, and every forged identity header is
    // removed on the way.
    let response = http_request(
        entry,
        "GET",
        "/api/public/status",
        &[
            ("x-tokend-subject", "root"),
            ("X-Tokend-Scopes", "admin"),
            ("x-tokend-session", "s"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let identity = seen(&response);
    for header in [
        "x-tokend-subject",
        "x-tokend-scopes",
        "x-tokend-session",
        "x-tokend-actor-chain",
    ] {
        assert!(
            identity[header].is_null(),
            "{header} passed through: {identity}"
        );
    }

    // A path that dodges the prefix with dot segments or escaped slashes:
    // Envoy normalizes or rejects it, and the gate only ever matches
    // normalized paths.
    let response = http_request(entry, "GET", "/api/public/../orders", &[], "").unwrap();
    assert_eq!(
        response.status, 401,
        "normalized to /api/orders: {response:?}"
    );
    let response = http_request(entry, "GET", "/api/public%2F..%2Forders", &[], "").unwrap();
    assert!(
        response.status == 400 || response.status == 403,
        "{response:?}"
    );

    // Anything else is closed.
    let response =
        http_request(entry, "GET", "/admin", &[("authorization", &user_auth)], "").unwrap();
    assert_eq!(response.status, 403);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["reason"], "PATH_NOT_ALLOWED");
}

#[tokio::test]
async fn a_revoked_session_is_refused_through_envoy_and_a_silent_feed_fails_closed() {
    let mut fleet = Fleet::start(
        &[],
        &[
            "--watch-revocations",
            "--client-id",
            "demo-client",
            "--fail-closed-after",
            "1s",
        ],
    );
    let mut echo = fleet.echo().await;
    let mut tokend = fleet.tokend.client().await;
    let pair = login(&mut tokend, "demo", "demo-password").await;
    let authorization = bearer(&pair.access_token);
    echo.echo(echo_request("hi", Some(&authorization)))
        .await
        .expect("the session is live");

    revoke(&mut tokend, &pair.refresh_token)
        .await
        .expect("revoke");
    let took = time_until_refused(
        &mut echo,
        &authorization,
        Reason::SessionRevoked,
        REVOCATION_DEADLINE,
    )
    .await
    .expect("the revoked session's token is refused through Envoy");
    println!("refused through Envoy {took:?} after Revoke returned");
    assert_eq!(
        refusal(echo.echo(echo_request("hi", Some(&authorization))).await),
        (Code::Unauthenticated, Some(Reason::SessionRevoked))
    );

    // tokend gone: once the feed has been silent past --fail-closed-after,
    // every token is refused as unavailable (and retryable), not accepted.
    let other = fleet.user_token().await;
    fleet.tokend.kill();
    let other = bearer(&other);
    eventually("the gate to fail closed", Duration::from_secs(30), || {
        let mut echo = echo.clone();
        let other = other.clone();
        async move {
            matches!(
                echo.echo(echo_request("hi", Some(&other))).await,
                Err(status) if Reason::of(&status) == Some(Reason::RevocationsUnavailable)
            )
        }
    })
    .await;
    assert_eq!(
        refusal(echo.echo(echo_request("hi", Some(&other))).await),
        (Code::Unavailable, Some(Reason::RevocationsUnavailable))
    );
    let response = http_request(
        fleet.entry(),
        "GET",
        "/api/orders",
        &[("authorization", &other)],
        "",
    )
    .unwrap();
    assert_eq!(response.status, 503, "{response:?}");
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["reason"], "REVOCATIONS_UNAVAILABLE");
}

#[tokio::test]
async fn a_bound_token_passes_only_with_its_certificate_at_envoy() {
    let pki = Pki::new("gate-binding");
    let tokend_cert = pki.server("tokend");
    let tokend = Tokend::builder()
        .args(["--dev", "--tls-client-ca", pki.ca_arg()])
        .tls(&tokend_cert)
        .start();
    let own = pki.client("demo-client");
    let stranger = pki.client("stranger");
    // The demo client logs in over mTLS with its certificate: its token is
    // bound to it (cnf.x5t#S256).
    let mut over_mtls = TokenServiceClient::new(
        tls_channel(&tokend.https_url(), pki.ca(), Some(&own))
            .await
            .unwrap(),
    );
    let secret = tokend.demo_client_secret().unwrap();
    let bound = over_mtls
        .login(client_login("demo-client", &secret))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let https = tokend.https_url();
    let envoy_cert = pki.server("envoy");
    let fleet = Fleet::around(
        tokend,
        &["--tokend", &https, "--tokend-ca", pki.ca_arg()],
        Some(DownstreamTls {
            server: &envoy_cert,
            ca: pki.ca(),
        }),
    );
    let mtls = format!("https://{}", fleet.envoy.listener("mtls"));
    let authorization = bearer(&bound);
    let through = |identity: Option<&CertFiles>| {
        let mtls = mtls.clone();
        let identity = identity.cloned();
        let ca = pki.ca().to_owned();
        async move { EchoClient::new(tls_channel(&mtls, &ca, identity.as_ref()).await.unwrap()) }
    };

    let answer = through(Some(&own))
        .await
        .echo(echo_request("hi", Some(&authorization)))
        .await
        .expect("the bound token with its own certificate passes")
        .into_inner();
    assert_eq!(answer.subject, "demo-client");
    assert_eq!(
        refusal(
            through(Some(&stranger))
                .await
                .echo(echo_request("hi", Some(&authorization)))
                .await
        ),
        (Code::Unauthenticated, Some(Reason::TokenBindingMismatch))
    );
    assert_eq!(
        refusal(
            through(None)
                .await
                .echo(echo_request("hi", Some(&authorization)))
                .await
        ),
        (Code::Unauthenticated, Some(Reason::TokenBindingMismatch))
    );
    let mut plain = fleet.echo().await;
    assert_eq!(
        refusal(plain.echo(echo_request("hi", Some(&authorization))).await),
        (Code::Unauthenticated, Some(Reason::TokenBindingMismatch))
    );
}

#[tokio::test]
async fn an_expired_token_is_refused_as_expired() {
    let fleet = Fleet::start(&["--access-ttl", "1s"], &["--leeway", "0s"]);
    let mut echo = fleet.echo().await;
    let authorization = bearer(&fleet.user_token().await);
    let took = time_until_refused(
        &mut echo,
        &authorization,
        Reason::AccessTokenExpired,
        Duration::from_secs(30),
    )
    .await
    .expect("the token expires");
    assert!(took < Duration::from_secs(30));
    assert_eq!(
        refusal(echo.echo(echo_request("hi", Some(&authorization))).await),
        (Code::Unauthenticated, Some(Reason::AccessTokenExpired))
    );
}

#[tokio::test]
async fn with_the_gate_stopped_nothing_gets_through() {
    let mut fleet = Fleet::start(&[], &[]);
    let mut echo = fleet.echo().await;
    let authorization = bearer(&fleet.user_token().await);
    echo.echo(echo_request("hi", Some(&authorization)))
        .await
        .expect("passes");
    fleet.gate.kill();
    // failure_mode_allow: false: a valid token does not pass without the
    // gate; the client is told to retry (UNAVAILABLE / 503).
    let status = echo
        .echo(echo_request("hi", Some(&authorization)))
        .await
        .expect_err("no gate, no entry");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    echo.ping(testkit::demo::v1::PingRequest {})
        .await
        .expect_err("not even a public path: the gate decides what is public");
    let response = http_request(fleet.entry(), "GET", "/api/public/x", &[], "").unwrap();
    assert_eq!(response.status, 503, "{response:?}");
    assert!(fleet.envoy.stat("http.ingress.ext_authz.error") >= 3);
}

#[tokio::test]
async fn a_policy_edit_takes_effect_and_a_broken_one_keeps_the_last_good() {
    let fleet = Fleet::start(&[], &[]);
    let mut echo = fleet.echo().await;
    let authorization = bearer(&fleet.user_token().await);
    echo.echo(echo_request("hi", Some(&authorization)))
        .await
        .expect("passes");

    // Echo now needs a scope nobody has; applied on SIGHUP (or by the
    // file watch, whichever comes first).
    let edited = POLICY.replace(
        "path = \"/demo.v1.EchoService/Echo\"\nscopes = [\"read\"]",
        "path = \"/demo.v1.EchoService/Echo\"\nscopes = [\"orders.audit\"]",
    );
    assert_ne!(edited, POLICY);
    std::fs::write(fleet.policy.path(), &edited).unwrap();
    fleet.gate.signal(libc_sighup());
    fleet.gate.logged("policy in force", 1).await;
    assert_eq!(
        refusal(echo.echo(echo_request("hi", Some(&authorization))).await),
        (Code::PermissionDenied, Some(Reason::InsufficientScope))
    );

    // A broken edit is reported and changes nothing.
    std::fs::write(fleet.policy.path(), "[[rule]]\npath = \"no slash\"\n").unwrap();
    fleet.gate.signal(libc_sighup());
    fleet
        .gate
        .logged("cannot be used; keeping the previous one", 1)
        .await;
    assert!(
        fleet.gate.logs().contains("must start with"),
        "{}",
        fleet.gate.logs()
    );
    assert_eq!(
        refusal(echo.echo(echo_request("hi", Some(&authorization))).await),
        (Code::PermissionDenied, Some(Reason::InsufficientScope))
    );
    echo.ping(testkit::demo::v1::PingRequest {})
        .await
        .expect("still public");
}

/// SIGHUP's number (1 on Linux).
fn libc_sighup() -> i32 {
    1
}

#[tokio::test]
async fn the_gate_is_not_serving_until_it_holds_keys() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    // A tokend that is not there yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let gate = gate(&["--tokend", &url], &[]);
    let mut health = HealthClient::new(channel(&format!("http://{}", gate.addr)).await.unwrap());
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{service:?}");
    }
    // Checks meanwhile are refused as unavailable (retry), never allowed:
    // a well-formed token of some other tokend cannot be judged yet.
    let elsewhere = Tokend::builder().args(["--dev"]).start();
    let mut minting = elsewhere.client().await;
    let unknown = login(&mut minting, "demo", "demo-password")
        .await
        .access_token;
    let upstreams = PythonUpstreams::start();
    let envoy = Envoy::start(&bootstrap(gate.addr, upstreams.grpc, upstreams.http, None));
    let mut echo = EchoClient::new(
        channel(&format!("http://{}", envoy.listener("plain")))
            .await
            .unwrap(),
    );
    assert_eq!(
        refusal(echo.echo(echo_request("hi", Some(&bearer(&unknown)))).await),
        (Code::Unavailable, Some(Reason::KeysUnavailable))
    );

    // tokend arrives: keys come in and health turns SERVING.
    let tokend = Tokend::builder()
        .args(["--dev"])
        .listen(&format!("127.0.0.1:{port}"))
        .start();
    let gate = gate.ready();
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let mut client = tokend.client().await;
    let token = login(&mut client, "demo", "demo-password")
        .await
        .access_token;
    echo.echo(echo_request("hi", Some(&bearer(&token))))
        .await
        .expect("passes once keys are in");
    assert_eq!(
        refusal(echo.echo(echo_request("hi", Some(&bearer(&unknown)))).await),
        (Code::Unauthenticated, Some(Reason::AccessTokenInvalid))
    );
    drop(gate);
}

#[test]
fn policy_check_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, POLICY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokend-gate"))
        .args(["policy", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok, 9 rules"),
        "{out:?}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\npath = \"/a\"\npublic = true\nscopes = [\"x\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokend-gate"))
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule 1") && err.contains("public rule"),
        "{err}"
    );
    let shipped = workspace_dir().join("deploy/envoy/gate-policy.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tokend-gate"))
        .args(["policy", "check"])
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(out.status.success(), "the shipped example policy: {out:?}");
}

#[tokio::test]
async fn delegated_tokens_meet_the_delegation_rules_and_name_their_actors() {
    use tokend_interceptor::proto::tokend::v1::ExchangeRequest;
    let policy = r#"
audience = "orders"
[[rule]]
path = "/demo.v1.EchoService/Echo"
scopes = ["read"]
forbid_delegated = true
[[rule]]
path = "/api/*"
scopes = ["read"]
require_actor = ["demo-client"]
max_chain_depth = 1
"#;
    let example = workspace_dir().join("deploy/exchange/policy.example.toml");
    let fleet = Fleet::with_policy(
        policy,
        &["--exchange-policy", example.to_str().unwrap()],
        &[],
    );
    let mut tokend = fleet.tokend.client().await;
    // The user's token for the front service (demo-client), which trades
    // it for one meant for orders, as itself (a token for tokend).
    let mut request = password_login("demo", "demo-password");
    request.audience = "demo-client".into();
    let user = tokend
        .login(request)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let secret = fleet.tokend.demo_client_secret().unwrap();
    let mut caller = client_login("demo-client", &secret);
    caller.audience = TOKEND_AUDIENCE.into();
    let caller = tokend
        .login(caller)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let exchanged = tokend
        .exchange(with_bearer(
            ExchangeRequest {
                subject_token: user.access_token.clone(),
                audience: "orders".into(),
                scopes: vec!["read".into()],
                ttl: None,
            },
            &caller,
        ))
        .await
        .expect("the example exchange policy lets demo-client obtain orders tokens")
        .into_inner()
        .access_token;

    // The policy's audience: the user's own token (for demo-client) is not
    // good here; the exchanged one is, but not where delegation is forbidden.
    let mut echo = fleet.echo().await;
    assert_eq!(
        refusal(
            echo.echo(echo_request("hi", Some(&bearer(&user.access_token))))
                .await
        ),
        (Code::Unauthenticated, Some(Reason::AccessTokenInvalid))
    );
    assert_eq!(
        refusal(
            echo.echo(echo_request("hi", Some(&bearer(&exchanged))))
                .await
        ),
        (Code::PermissionDenied, Some(Reason::ChainNotAllowed))
    );
    // Where delegation is allowed, the service learns who acts for whom.
    let authorization = bearer(&exchanged);
    let response = http_request(
        fleet.entry(),
        "GET",
        "/api/orders",
        &[
            ("authorization", &authorization),
            ("x-tokend-actor-chain", "forged"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let identity = seen(&response);
    assert_eq!(identity["x-tokend-subject"], "demo");
    assert_eq!(identity["x-tokend-actor-chain"], "demo-client");
    assert_eq!(identity["x-tokend-scopes"], "read");
}

//! tokend-gate in front of services in another language, through a real
//! Envoy: the protected upstreams are Python (a grpcio echo service and a
//! plain HTTP server) with no authentication code, and every client
//! (tonic, grpcio, grpcurl, raw HTTP/1.1) sees what a tonic client of the
//! interceptor would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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
        let tokend = Tokend::builder()
            .args(["--dev"])
            .args(tokend_args.iter().copied())
            .start();
        Fleet::around(tokend, gate_args, None)
    }

    /// The gate and Envoy around a running `tokend`.
    fn around(tokend: Tokend, gate_args: &[&str], tls: Option<DownstreamTls<'_>>) -> Fleet {
        let policy = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(policy.path(), POLICY).unwrap();
        let url = tokend.url();
        let mut args = vec!["--policy", policy.path().to_str().unwrap()];
        if !gate_args.contains(&"--tokend") {
            args.extend(["--tokend", url.as_str()]);
        }
        args.extend_from_slice(gate_args);
        let secret = tokend.demo_client_secret().unwrap_or_default();
        let gate = GateProcess::start(&args, &[("TOKEND_CLIENT_SECRET", secret.as_str())]).ready();
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
        login(&mut client, "demo", "demo-password").await.access_token
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
    let fleet = Fleet::start(&[], &[]);
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
        refusal(echo.echo(echo_request("hi", Some("Bearer v4.public.garbage"))).await),
        (Code::Unauthenticated, Some(Reason::AccessTokenInvalid))
    );
    let mut tokend = fleet.tokend.client().await;
    let foreign = login_for_tokend(&mut tokend, "demo", "demo-password").await.access_token;
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
    assert_eq!((answer.message.as_str(), answer.subject.as_str()), ("hi", "demo"));
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
                testkit::demo::v1::AdminEchoRequest { message: "x".into() },
                &service
            ))
            .await
        ),
        (Code::PermissionDenied, Some(Reason::InsufficientScope))
    );
    let admin = echo
        .admin_echo(with_bearer(
            testkit::demo::v1::AdminEchoRequest { message: "x".into() },
            &user,
        ))
        .await
        .expect("the demo user has admin")
        .into_inner();
    assert_eq!(admin.subject, "demo");

    // Public paths need no token; and a public path's forged header is
    // removed too.
    echo.ping(testkit::demo::v1::PingRequest {}).await.expect("Ping is public");
    let health = tonic_health::pb::health_client::HealthClient::new(
        channel(&format!("http://{}", fleet.entry())).await.unwrap(),
    )
    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
    .await
    .expect("health is public")
    .into_inner();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // A method the policy does not name is closed, token or not.
    assert_eq!(
        refusal(
            echo.relay_echo(with_bearer(
                testkit::demo::v1::RelayEchoRequest { message: "x".into() },
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
    let (ok, text) = grpcurl(&["-d", r#"{"message":"hi"}"#, &entry, "demo.v1.EchoService/Echo"]);
    assert!(!ok, "{text}");
    assert!(text.contains("Code: Unauthenticated"), "{text}");
    assert!(text.contains(r#""reason":"ACCESS_TOKEN_MISSING""#), "{text}");
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
}

/// grpcurl through Envoy (plaintext, reflection from the upstream).
fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("grpcurl"))
        .args(["-plaintext", "-max-time", "10"])
        .args(args)
        .output()
        .expect("grpcurl (`make test` installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

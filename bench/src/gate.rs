//! What tokend-gate costs in front of a service: requests/s through Envoy
//! with the gate (ext_authz, a valid token, the cached path) against the
//! same Envoy, route and upstream without ext_authz, and against an
//! ext_authz server that verifies nothing (the ceiling any ext_authz
//! server has), alternating rounds; and the gate's own Check handling p99
//! from its metrics.

use std::error::Error;
use std::time::Duration;

use testkit::{Envoy, GateProcess, client_login, process_cpu_time, scrape};
use tonic::transport::Channel;

use crate::load::run;
use crate::report::Report;
use crate::setup::{self, Deployment};
use crate::workers::{BearerPing, EchoClient};
use crate::{CONCURRENCY, MEASURE, WARMUP};

/// The gate's policy: every path needs a valid token.
const POLICY: &str = "default = \"allow-authenticated\"\n";

/// The policy of the "null" ext_authz server the gate is also compared
/// with: everything public, so each Check is answered without looking at
/// a token. The cheapest answer an ext_authz server can give.
const NULL_POLICY: &str = "[[rule]]\npath = \"*\"\npublic = true\n";

/// An Envoy with three listeners on the same route to the example resource
/// server (Rust; Ping does nothing): `gated` checks every request with the
/// gate first, `null` with a gate that verifies nothing, `plain` not at all.
fn bootstrap(
    gate: std::net::SocketAddr,
    null: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
) -> String {
    let listener = |name: &str, filter: &str| {
        format!(
            r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: HTTP2
          route_config:
            virtual_hosts:
            - name: service
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
        )
    };
    let ext_authz = |cluster: &str| {
        format!(
            r#"
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              # Only what the gate reads (as deploy/envoy/envoy.yaml).
              allowed_headers:
                patterns: [{{ exact: authorization }}, {{ exact: content-type }}]
              grpc_service:
                envoy_grpc: {{ cluster_name: {cluster} }}
                timeout: 2s"#
        )
    };
    let cluster = |name: &str, addr: std::net::SocketAddr| {
        format!(
            r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]"#,
            port = addr.port()
        )
    };
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:{}{}{}\n  clusters:{}{}{}\n",
        listener("gated", &ext_authz("gate")),
        listener("noop_authz", &ext_authz("null_gate")),
        listener("plain", ""),
        cluster("gate", gate),
        cluster("null_gate", null),
        cluster("upstream", upstream),
    )
}

/// `CONNECTIONS` HTTP/2 connections to Envoy's listener `name`.
async fn channels(envoy: &Envoy, name: &str) -> Result<Vec<Channel>, Box<dyn Error>> {
    setup::channels(&format!("http://{}", envoy.listener(name))).await
}

/// Runs the gate phase.
pub async fn measure(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let policy = tempfile::NamedTempFile::new()?;
    std::fs::write(policy.path(), POLICY)?;
    let url = dep.tokend.url();
    let gate = GateProcess::start(
        &[
            "--tokend",
            &url,
            "--policy",
            policy.path().to_str().ok_or("policy path")?,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "warn")],
    )
    .ready();
    let null_policy = tempfile::NamedTempFile::new()?;
    std::fs::write(null_policy.path(), NULL_POLICY)?;
    let null = GateProcess::start(
        &[
            "--tokend",
            &url,
            "--policy",
            null_policy.path().to_str().ok_or("policy path")?,
        ],
        &[("RUST_LOG", "warn")],
    )
    .ready();
    let workers = std::env::var("BENCH_ENVOY_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let envoy =
        Envoy::start_with_workers(&bootstrap(gate.addr, null.addr, dep.resource.addr), workers);
    let mut tokens = dep.token_client(0);
    let pair = tokens
        .login(client_login("bench-client", &dep.client_secret))
        .await?
        .into_inner();
    let authorization: tonic::metadata::MetadataValue<_> =
        testkit::bearer(&pair.tokens.ok_or("no tokens")?.access_token).parse()?;
    // Each side with the ext_authz server it uses (none for plain).
    let sides = [
        ("gated", channels(&envoy, "gated").await?, gate.pid()),
        ("plain", channels(&envoy, "plain").await?, None),
        (
            "noop_authz",
            channels(&envoy, "noop_authz").await?,
            null.pid(),
        ),
    ];
    // Envoy, the side's ext_authz server, the upstream, the load generator.
    let cpu = |server: Option<u32>| {
        [
            envoy.pid(),
            server,
            dep.resource.pid(),
            Some(std::process::id()),
        ]
        .map(|pid| pid.map_or(Duration::ZERO, process_cpu_time))
    };
    let mut rates = [0.0f64; 3];
    // CPU used during each side's rounds, by process.
    let mut cpu_used = [[Duration::ZERO; 4]; 3];
    for round in 0..2 {
        for (side, (name, channels, server)) in sides.iter().enumerate() {
            eprintln!("Envoy {name} (round {})...", round + 1);
            let before = cpu(*server);
            let stats = run(
                (0..CONCURRENCY)
                    .map(|i| BearerPing {
                        client: EchoClient::new(channels[i % setup::CONNECTIONS].clone()),
                        authorization: authorization.clone(),
                    })
                    .collect(),
                WARMUP,
                MEASURE,
            )
            .await;
            if stats.errors > 0 {
                eprintln!("  {} errors through {name}", stats.errors);
            }
            rates[side] += stats.rps() / 2.0;
            let after = cpu(*server);
            for (i, used) in cpu_used[side].iter_mut().enumerate() {
                *used += after[i].saturating_sub(before[i]);
            }
        }
    }
    let window = (WARMUP + MEASURE).as_secs_f64() * 2.0;
    let share = |i: usize| cpu_used[0][i].as_secs_f64() / window;
    // Envoy's CPU per request (µs), from the measured calls' rate over the
    // whole rounds (warm-up included, as the CPU is).
    let per_request = |side: usize| {
        let requests = rates[side] * window;
        cpu_used[side][0].as_secs_f64() * 1e6 / requests.max(1.0)
    };
    let metrics = scrape(&format!(
        "http://{}/metrics",
        gate.metrics.ok_or("the gate's metrics address")?
    ));
    let p99_us = metrics.get("tokend_gate_check_seconds", &[("quantile", "0.99")]) * 1e6;

    report.set("gate_rps", rates[0]);
    report.set("envoy_plain_rps", rates[1]);
    report.set("gate_vs_envoy_plain", rates[0] / rates[1]);
    report.set("null_ext_authz_rps", rates[2]);
    report.set("null_ext_authz_vs_envoy_plain", rates[2] / rates[1]);
    report.set("gate_vs_null_ext_authz", rates[0] / rates[2]);
    report.set("gate_check_p99_us", p99_us);
    report.set("gate_cpu_envoy_cores", share(0));
    report.set("gate_cpu_gate_cores", share(1));
    report.set("gate_cpu_upstream_cores", share(2));
    report.set("gate_cpu_load_cores", share(3));
    report.set("gate_envoy_cpu_us_per_request", per_request(0));
    report.set("envoy_plain_cpu_us_per_request", per_request(1));
    report.set(
        "gate_cpu_us_per_check",
        cpu_used[0][1].as_secs_f64() * 1e6 / (rates[0] * window).max(1.0),
    );
    let note = format!(
        "{} vs {} rps; target >= 0.6; CPU (cores) envoy {} gate {} upstream {} load {}",
        report.show("gate_rps"),
        report.show("envoy_plain_rps"),
        report.show("gate_cpu_envoy_cores"),
        report.show("gate_cpu_gate_cores"),
        report.show("gate_cpu_upstream_cores"),
        report.show("gate_cpu_load_cores"),
    );
    report.row("gate_vs_envoy_plain", "gate_vs_envoy_plain", note);
    let note = format!(
        "Envoy alone {} us; the gate {} us per Check",
        report.show("envoy_plain_cpu_us_per_request"),
        report.show("gate_cpu_us_per_check")
    );
    report.row(
        "Envoy CPU us per request, with the gate",
        "gate_envoy_cpu_us_per_request",
        note,
    );
    report.row(
        "gate_check_p99_us",
        "gate_check_p99_us",
        "server-side Check p99; target <= 200",
    );
    let note = format!(
        "vs an ext_authz server that verifies nothing ({} rps, {} of Envoy alone)",
        report.show("null_ext_authz_rps"),
        report.show("null_ext_authz_vs_envoy_plain")
    );
    report.row("gate_vs_null_ext_authz", "gate_vs_null_ext_authz", note);
    Ok(())
}

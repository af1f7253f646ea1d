//! Python grpcio clients against tokend and the example resource server:
//! the cross-language check that the wire format and error details are
//! ordinary gRPC.

use std::process::Command;

use crate::harness::*;

/// Runs `tests/python/SCRIPT` against `tokend` and `resource` (their
/// addresses, then the demo client's secret) and insists it passes.
fn run_python_checks(script: &str, tokend: &Tokend, resource: &ResourceServer) {
    let secret = tokend.demo_client_secret().expect("demo client secret");
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(tool("python3"))
        .arg(path)
        .arg(tokend.addr.to_string())
        .arg(resource.addr.to_string())
        .arg(&secret)
        .output()
        .expect("run python3 (`make test` sets up .venv with grpcio)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn a_python_grpcio_client_logs_in_and_calls_the_resource_server() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let resource = ResourceServer::for_tokend(&tokend, &[]);
    run_python_checks("echo_client.py", &tokend, &resource);
}

#[test]
fn a_python_grpcio_service_exchanges_a_users_token_and_calls_on_their_behalf() {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/exchange/policy.example.toml"
    );
    let tokend = Tokend::builder()
        .args(["--dev", "--exchange-policy", policy])
        .start();
    let orders = ResourceServer::for_tokend(&tokend, &["--audience", "orders"]);
    run_python_checks("exchange_client.py", &tokend, &orders);
}

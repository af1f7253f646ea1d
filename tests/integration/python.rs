//! A Python grpcio client against tokend and the example resource server:
//! the cross-language check that the wire format and error details are
//! ordinary gRPC.

use std::process::Command;

use crate::harness::*;

#[test]
fn a_python_grpcio_client_logs_in_and_calls_the_resource_server() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let secret = tokend.demo_client_secret().expect("demo client secret");
    let resource = ResourceServer::for_tokend(&tokend, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/echo_client.py");
    let out = Command::new(tool("python3"))
        .arg(script)
        .arg(tokend.addr.to_string())
        .arg(resource.addr.to_string())
        .arg(&secret)
        .output()
        .expect("run python3 (`make test` sets up .venv with grpcio)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
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
    let secret = tokend.demo_client_secret().expect("demo client secret");
    let orders = ResourceServer::for_tokend(&tokend, &["--audience", "orders"]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/exchange_client.py"
    );
    let out = Command::new(tool("python3"))
        .arg(script)
        .arg(tokend.addr.to_string())
        .arg(orders.addr.to_string())
        .arg(&secret)
        .output()
        .expect("run python3 (`make test` sets up .venv with grpcio)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python exchange client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

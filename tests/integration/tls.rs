//! TLS and mTLS as users and attackers meet them, with certificates made
//! here: grpcurl, Python grpcio and Rust clients over TLS; plaintext and
//! untrusted clients refused; an https:// key sync that never falls back to
//! plaintext; required client certificates; certificate-bound service
//! tokens; certificates reloaded without a restart; the revocation feed for
//! authenticated watchers only.

use std::process::Command;
use std::time::Duration;

use testkit::pki::Pki;
use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tokend_interceptor::certs::thumbprint;
use tokend_interceptor::client::{ClientGrant, TokenSource, TokendEndpoint};
use tonic::Code;

use crate::harness::*;

const DEMO_LOGIN: &str = r#"{"password":{"username":"demo","password":"demo-password"}}"#;

#[tokio::test]
async fn logins_work_over_tls_with_grpcurl_python_and_rust() {
    let pki = Pki::new("tokend-test");
    let server = pki.server("tokend");
    let tokend = Tokend::builder().args(["--dev"]).tls(&server).start();
    let addr = tokend.addr.to_string();

    // grpcurl, trusting the CA.
    let (ok, out) = grpcurl(&[
        "-cacert",
        pki.ca_arg(),
        "-d",
        DEMO_LOGIN,
        &addr,
        "tokend.v1.TokenService/Login",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("v4.public."), "{out}");
    let (ok, out) = grpcurl(&["-cacert", pki.ca_arg(), &addr, "list"]);
    assert!(ok && out.contains("tokend.v1.TokenService"), "{out}");

    // A plaintext client on the TLS port, and a client trusting another CA.
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        DEMO_LOGIN,
        &addr,
        "tokend.v1.TokenService/Login",
    ]);
    assert!(!ok, "plaintext must fail: {out}");
    let other = Pki::new("someone-else");
    let (ok, out) = grpcurl(&["-cacert", other.ca_arg(), &addr, "list"]);
    assert!(!ok, "an untrusted certificate must fail: {out}");
    assert!(
        tls_channel(&tokend.https_url(), other.ca(), None)
            .await
            .is_err(),
        "a Rust client trusting another CA is refused"
    );

    // Rust.
    let channel = tls_channel(&tokend.https_url(), pki.ca(), None)
        .await
        .unwrap();
    let mut client = TokenServiceClient::new(channel);
    login(&mut client, "demo", "demo-password").await;

    // Python grpcio, against tokend and a resource server over TLS.
    let resource_cert = pki.server("resource");
    let resource = ResourceServer::start(&[
        "--tokend",
        &tokend.https_url(),
        "--tokend-ca",
        pki.ca_arg(),
        "--tls-cert",
        resource_cert.cert_arg(),
        "--tls-key",
        resource_cert.key_arg(),
    ]);
    let secret = tokend.demo_client_secret().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/echo_client.py");
    let out = Command::new(tool("python3"))
        .arg(script)
        .arg(&addr)
        .arg(resource.addr.to_string())
        .arg(&secret)
        .arg(pki.ca())
        .output()
        .expect("python3");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("all checks passed"), "{said}");
}

#[tokio::test]
async fn an_https_key_sync_never_falls_back_to_plaintext() {
    let pki = Pki::new("tokend-test");
    // tokend answers plaintext only; the resource server was told https.
    let plaintext = Tokend::builder().args(["--dev"]).start();
    let resource = ResourceServer::start(&[
        "--tokend",
        &format!("https://{}", plaintext.addr),
        "--tokend-ca",
        pki.ca_arg(),
    ]);
    let mut client = plaintext.client().await;
    let pair = login(&mut client, "demo", "demo-password").await;
    let mut echo = resource.client().await;
    // Its key sync has tried (TLS against a plaintext server) and failed,
    // twice: it never fell back to plaintext, so it still has no keys.
    resource
        .logged("cannot fetch verification keys from tokend", 2)
        .await;
    assert_reason(
        echo.echo(echo_request("x", Some(&bearer(&pair.access_token))))
            .await,
        Reason::KeysUnavailable,
    );

    // With TLS on tokend's side, the same resource server set-up works.
    let server = pki.server("tokend");
    let tokend = Tokend::builder().args(["--dev"]).tls(&server).start();
    let resource =
        ResourceServer::start(&["--tokend", &tokend.https_url(), "--tokend-ca", pki.ca_arg()]);
    let channel = tls_channel(&tokend.https_url(), pki.ca(), None)
        .await
        .unwrap();
    let mut client = TokenServiceClient::new(channel);
    let pair = login(&mut client, "demo", "demo-password").await;
    let mut echo = resource.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match echo
            .echo(echo_request("x", Some(&bearer(&pair.access_token))))
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(
                    Reason::of(&status),
                    Some(Reason::KeysUnavailable),
                    "{status:?}"
                );
                assert!(
                    std::time::Instant::now() < deadline,
                    "keys never arrived over TLS"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn required_client_certificates_refuse_clients_without_one() {
    let pki = Pki::new("tokend-test");
    let server = pki.server("tokend");
    let tokend = Tokend::builder()
        .args(["--dev"])
        .tls(&server)
        .args(["--tls-client-ca", pki.ca_arg(), "--tls-require-client-cert"])
        .start();
    let url = tokend.https_url();
    let without = tls_channel(&url, pki.ca(), None).await;
    let refused = match without {
        Err(_) => true,
        Ok(channel) => TokenServiceClient::new(channel)
            .login(password_login("demo", "demo-password"))
            .await
            .is_err(),
    };
    assert!(refused, "no client certificate, no service");
    let strangers = Pki::new("stranger");
    let stranger = strangers.client("mallory");
    let with_foreign = tls_channel(&url, pki.ca(), Some(&stranger)).await;
    let refused = match with_foreign {
        Err(_) => true,
        Ok(channel) => TokenServiceClient::new(channel)
            .login(password_login("demo", "demo-password"))
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA is refused");
    let ours = pki.client("billing");
    let channel = tls_channel(&url, pki.ca(), Some(&ours)).await.unwrap();
    login(
        &mut TokenServiceClient::new(channel),
        "demo",
        "demo-password",
    )
    .await;
}

#[tokio::test]
async fn certificate_bound_tokens_work_only_with_their_certificate() {
    let pki = Pki::new("corp");
    let redis = RedisServer::start();
    let url = redis.url();
    let out = tokend_command(
        &[
            "client",
            "add",
            "billing",
            "--scope",
            "read",
            "--require-cert",
            "--redis-url",
            &url,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let server = pki.server("tokend");
    let tokend = Tokend::builder()
        .redis(&redis)
        .tls(&server)
        .args(["--tls-client-ca", pki.ca_arg()])
        .start();
    let billing = pki.client("billing");
    let orders = pki.client("orders");

    // Without a client certificate the right secret is refused, like a wrong one.
    let plain = tls_channel(&tokend.https_url(), pki.ca(), None)
        .await
        .unwrap();
    assert_reason(
        TokenServiceClient::new(plain.clone())
            .login(client_login("billing", &secret))
            .await,
        Reason::InvalidCredentials,
    );
    // Over mTLS it gets a token bound to its certificate.
    let mtls = tls_channel(&tokend.https_url(), pki.ca(), Some(&billing))
        .await
        .unwrap();
    let token = TokenServiceClient::new(mtls.clone())
        .login(client_login("billing", &secret))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let claims = crate::login::verify_with_published_key(
        &mut TokenServiceClient::new(plain.clone()),
        &token,
    )
    .await;
    assert_eq!(
        claims.cnf().map(|c| c.x5t_s256().to_owned()),
        Some(thumbprint(&billing.der)),
        "bound to the billing certificate (RFC 8705 x5t#S256)"
    );

    // A resource server that verifies client certificates.
    let resource_cert = pki.server("resource");
    let resource = ResourceServer::start(&[
        "--tokend",
        &tokend.https_url(),
        "--tokend-ca",
        pki.ca_arg(),
        "--tls-cert",
        resource_cert.cert_arg(),
        "--tls-key",
        resource_cert.key_arg(),
        "--tls-client-ca",
        pki.ca_arg(),
    ]);
    let echo_over = |identity| {
        let token = token.clone();
        let url = resource.https_url();
        let ca = pki.ca().to_owned();
        async move {
            let channel = tls_channel(&url, &ca, identity).await.unwrap();
            let mut echo = EchoClient::new(channel);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let result = echo.echo(echo_request("x", Some(&bearer(&token)))).await;
                match &result {
                    Err(s) if Reason::of(s) == Some(Reason::KeysUnavailable) => {
                        assert!(std::time::Instant::now() < deadline, "no keys");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => return result.map(|r| r.into_inner().subject),
                }
            }
        }
    };
    assert_eq!(echo_over(Some(&billing)).await.unwrap(), "billing");
    for stolen_by in [Some(&orders), None] {
        let status = echo_over(stolen_by).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            Reason::of(&status),
            Some(Reason::TokenBindingMismatch),
            "{status:?}"
        );
    }

    // The token source works unchanged over an mTLS channel.
    let endpoint = TokendEndpoint::new(tokend.https_url())
        .ca_file(pki.ca())
        .unwrap()
        .identity_files(&billing.cert, &billing.key)
        .unwrap();
    let source = TokenSource::for_client(
        endpoint.channel().unwrap(),
        ClientGrant {
            client_id: "billing".into(),
            client_secret: secret.clone(),
            ..ClientGrant::default()
        },
    );
    let fresh = source.access_token().await.unwrap();
    assert!(fresh.token().starts_with("v4.public."));
}

#[tokio::test]
async fn new_certificates_are_served_without_a_restart() {
    let first_ca = Pki::new("first");
    let second_ca = Pki::new("second");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let install = |files: &testkit::pki::CertFiles| {
        // Write beside, then rename: what a certificate manager does.
        std::fs::copy(&files.cert, dir.path().join("next.pem")).unwrap();
        std::fs::copy(&files.key, dir.path().join("next.key")).unwrap();
        std::fs::rename(dir.path().join("next.key"), &key).unwrap();
        std::fs::rename(dir.path().join("next.pem"), &cert).unwrap();
    };
    install(&first_ca.server("tokend"));
    let tokend = Tokend::builder()
        .args(["--dev"])
        .args([
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .start();
    let url = tokend.https_url();
    let established = tls_channel(&url, first_ca.ca(), None).await.unwrap();
    let mut established = TokenServiceClient::new(established);
    login(&mut established, "demo", "demo-password").await;

    // A new certificate (from another CA) on disk: new connections get it.
    install(&second_ca.server("tokend"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tls_channel(&url, second_ca.ca(), None).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tls_channel(&url, first_ca.ca(), None).await.is_err());
    // The connection made before is not dropped.
    login(&mut established, "demo", "demo-password").await;
    assert!(tokend.logs().contains("reloaded"), "{}", tokend.logs());

    // SIGHUP reloads too (here: back to the first).
    install(&first_ca.server("tokend"));
    let pid = libc::pid_t::try_from(tokend.pid().unwrap()).unwrap();
    // SAFETY: signalling a child process we own.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tls_channel(&url, first_ca.ca(), None).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Broken files are refused (once the watch has seen them, as it says)
    // and the last good ones kept.
    std::fs::write(&cert, "garbage").unwrap();
    eventually(
        "the broken file to be seen",
        Duration::from_secs(15),
        || async {
            tokend
                .logs()
                .contains("cannot be used; keeping the previous ones")
        },
    )
    .await;
    tls_channel(&url, first_ca.ca(), None)
        .await
        .expect("still serving the last good certificate");
}

#[tokio::test]
async fn a_rotated_client_ca_reaches_connections_made_before_it() {
    let old_ca = Pki::new("old");
    let new_ca = Pki::new("new");
    let dir = tempfile::tempdir().unwrap();
    let client_ca = dir.path().join("client-ca.pem");
    std::fs::copy(old_ca.ca(), &client_ca).unwrap();
    let server = old_ca.server("tokend");
    let tokend = Tokend::builder()
        // The grace after GOAWAY is the request timeout: short here, so
        // that the old connection closes soon after its age.
        .args([
            "--dev",
            "--max-connection-age",
            "2s",
            "--request-timeout",
            "3s",
        ])
        .tls(&server)
        .args([
            "--tls-client-ca",
            client_ca.to_str().unwrap(),
            "--tls-require-client-cert",
        ])
        .start();
    let url = tokend.https_url();
    let old_client = old_ca.client("demo-client");
    let mut established = TokenServiceClient::new(
        tls_channel(&url, old_ca.ca(), Some(&old_client))
            .await
            .unwrap(),
    );
    login(&mut established, "demo", "demo-password").await;

    // The client CA is rotated: trust moves to the new CA.
    std::fs::copy(new_ca.ca(), dir.path().join("next.pem")).unwrap();
    std::fs::rename(dir.path().join("next.pem"), &client_ca).unwrap();
    eventually(
        "the new client CA to be loaded",
        Duration::from_secs(15),
        || async {
            tokend
                .logs()
                .contains("TLS certificate files changed: reloaded")
        },
    )
    .await;
    // The connection made under the old CA is told to go after its age,
    // and cannot come back: its calls stop working.
    eventually(
        "the old-CA connection to stop working",
        Duration::from_secs(90),
        || {
            let mut established = established.clone();
            async move {
                established
                    .login(password_login("demo", "demo-password"))
                    .await
                    .is_err()
            }
        },
    )
    .await;
    let new_client = new_ca.client("demo-client");
    let mut fresh = TokenServiceClient::new(
        tls_channel(&url, old_ca.ca(), Some(&new_client))
            .await
            .unwrap(),
    );
    login(&mut fresh, "demo", "demo-password").await;
}

#[tokio::test]
async fn the_revocation_feed_is_for_authenticated_services_only() {
    let pki = Pki::new("corp");
    let server = pki.server("tokend");
    let tokend = Tokend::builder()
        .args(["--dev"])
        .tls(&server)
        .args(["--tls-client-ca", pki.ca_arg()])
        .start();
    let url = tokend.https_url();
    let anonymous = tls_channel(&url, pki.ca(), None).await.unwrap();
    let mut anonymous = TokenServiceClient::new(anonymous);
    assert_reason(
        anonymous
            .watch_revocations(pb::WatchRevocationsRequest::default())
            .await
            .map(|_| ()),
        Reason::AccessTokenMissing,
    );
    // A user's token, however valid, is not enough.
    let user = login(&mut anonymous, "demo", "demo-password").await;
    assert_reason(
        anonymous
            .watch_revocations(with_bearer(
                pb::WatchRevocationsRequest::default(),
                &user.access_token,
            ))
            .await
            .map(|_| ()),
        Reason::InsufficientScope,
    );
    // A certificate naming no service client is nobody...
    let stranger = pki.client("resource");
    let mtls = tls_channel(&url, pki.ca(), Some(&stranger)).await.unwrap();
    assert_reason(
        TokenServiceClient::new(mtls)
            .watch_revocations(pb::WatchRevocationsRequest::default())
            .await
            .map(|_| ()),
        Reason::AccessTokenMissing,
    );
    // ...a certificate naming an enabled client granted the scope opens it...
    let service = pki.client("demo-client");
    let mtls = tls_channel(&url, pki.ca(), Some(&service)).await.unwrap();
    let mut stream = TokenServiceClient::new(mtls)
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .expect("a certificate naming the demo client opens the feed")
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    // ...and so does a service client's token for tokend with the scope.
    let token = Watcher::demo(&tokend).token(&mut anonymous).await;
    let mut stream = anonymous
        .watch_revocations(with_bearer(pb::WatchRevocationsRequest::default(), &token))
        .await
        .expect("the feed's scope opens it")
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
}

#[test]
fn plaintext_on_a_public_address_is_warned_about_and_reflection_can_be_turned_off() {
    let tokend = Tokend::builder()
        .args(["--dev", "--reflection=false"])
        .listen("0.0.0.0:0")
        .start();
    assert!(
        tokend
            .logs()
            .contains("without TLS on a non-loopback address"),
        "{}",
        tokend.logs()
    );
    let addr = format!("127.0.0.1:{}", tokend.addr.port());
    let (ok, out) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(!ok, "reflection is off: {out}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-import-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/proto"),
        "-proto",
        "tokend/v1/token_service.proto",
        "-d",
        DEMO_LOGIN,
        &addr,
        "tokend.v1.TokenService/Login",
    ]);
    assert!(ok, "the API itself still answers: {out}");
}

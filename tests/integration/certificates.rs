//! Which service client a client certificate speaks for, tried the way a
//! thief with a stolen secret and a mesh workload of the wrong namespace
//! would: logins over mTLS bind (and `--require-cert` clients log in) only
//! with a certificate naming the client; certificates name clients by
//! exact identities (a recorded `--cert-san`, an exact DNS SAN, or
//! `spiffe://TD/ID` of a configured trust domain), never by a path segment
//! or a suffix; the interceptor's actor check uses the same rule.

use testkit::pki::{CertFiles, Pki};
use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tokend_interceptor::certs::thumbprint;

use crate::harness::*;
use crate::login::verify_with_published_key;

/// A tokend over mTLS (client certificates of `pki` verified) on `redis`.
fn mtls_tokend(pki: &Pki, redis: &RedisServer, extra: &[&str]) -> Tokend {
    let server = pki.server("tokend");
    Tokend::builder()
        .redis(redis)
        .tls(&server)
        .args(["--tls-client-ca", pki.ca_arg()])
        .args(extra.iter().copied())
        .start()
}

/// A client of `tokend` presenting `identity` (none: TLS without one).
async fn client_over(
    pki: &Pki,
    tokend: &Tokend,
    identity: Option<&CertFiles>,
) -> TokenServiceClient<tonic::transport::Channel> {
    let channel = tls_channel(&tokend.https_url(), pki.ca(), identity)
        .await
        .expect("TLS connection");
    TokenServiceClient::new(channel)
}

/// Logs in as `id` over `client`.
async fn client_token(
    client: &mut TokenServiceClient<tonic::transport::Channel>,
    id: &str,
    secret: &str,
) -> Result<String, tonic::Status> {
    let tokens = client.login(client_login(id, secret)).await?.into_inner();
    Ok(tokens.tokens.expect("tokens").access_token)
}

#[tokio::test]
async fn a_stolen_secret_with_someone_elses_certificate_logs_in_nowhere() {
    let pki = Pki::new("mesh");
    let other_domain = Pki::new("other-trust-domain");
    let redis = RedisServer::start();
    let svc_a = add_client_with(&redis, "svc-a", &["read"], &["--require-cert"]);
    let svc_b = add_client(&redis, "svc-b", &["read"]);
    let tokend = mtls_tokend(&pki, &redis, &["--cert-trust-domain", "prod.example"]);
    let a_cert = pki.client("svc-a");
    let b_cert = pki.client("svc-b");
    let nobody = pki.client("nobody");
    // Same CA, another trust domain's SPIFFE ID ending in svc-a.
    let tenant = pki.client_with_sans(
        "tenant-svc-a",
        &[],
        &["spiffe://tenant.example/ns/tenant-dev/sa/svc-a"],
    );
    // A certificate of a CA tokend does not trust never connects.
    let foreign = other_domain.client("svc-a");
    assert!(
        match tls_channel(&tokend.https_url(), pki.ca(), Some(&foreign)).await {
            Err(_) => true,
            Ok(channel) => TokenServiceClient::new(channel)
                .login(client_login("svc-a", &svc_a))
                .await
                .is_err(),
        },
        "a certificate of another CA is refused"
    );

    // svc-a's stolen secret with any certificate but svc-a's: refused like
    // a wrong secret, and nothing is bound to the thief's key.
    for thief in [&b_cert, &nobody, &tenant] {
        let mut over = client_over(&pki, &tokend, Some(thief)).await;
        assert_reason(
            over.login(client_login("svc-a", &svc_a)).await,
            Reason::InvalidCredentials,
        );
    }
    let mut plain = client_over(&pki, &tokend, None).await;
    assert_reason(
        plain.login(client_login("svc-a", &svc_a)).await,
        Reason::InvalidCredentials,
    );
    // With its own certificate (by DNS SAN, or by the exact SPIFFE ID of
    // the trust domain) it logs in, bound to that certificate.
    let spiffe_a = pki.client_with_sans("spiffe-svc-a", &[], &["spiffe://prod.example/svc-a"]);
    for own in [&a_cert, &spiffe_a] {
        let mut over = client_over(&pki, &tokend, Some(own)).await;
        let token = client_token(&mut over, "svc-a", &svc_a)
            .await
            .expect("own certificate");
        let claims = verify_with_published_key(&mut over, &token).await;
        assert_eq!(
            claims.cnf().map(|c| c.x5t_s256().to_owned()),
            Some(thumbprint(&own.der))
        );
    }

    // A client without --require-cert: without a certificate it gets an
    // unbound token; with its own, a bound one; with a stranger's, none.
    let unbound = client_token(&mut plain, "svc-b", &svc_b).await.unwrap();
    assert_eq!(
        verify_with_published_key(&mut plain, &unbound).await.cnf(),
        None
    );
    let mut as_a = client_over(&pki, &tokend, Some(&a_cert)).await;
    assert_reason(
        as_a.login(client_login("svc-b", &svc_b)).await,
        Reason::InvalidCredentials,
    );
    let mut as_b = client_over(&pki, &tokend, Some(&b_cert)).await;
    let bound = client_token(&mut as_b, "svc-b", &svc_b).await.unwrap();
    let claims = verify_with_published_key(&mut as_b, &bound).await;
    assert_eq!(
        claims.cnf().map(|c| c.x5t_s256().to_owned()),
        Some(thumbprint(&b_cert.der))
    );
}

#[tokio::test]
async fn certificates_name_clients_by_exact_identities_only() {
    let pki = Pki::new("mesh");
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let billing_id = "spiffe://prod.example/ns/pay/sa/billing";
    add_client(&redis, "svc-a", &[]);
    add_client_with(&redis, "billing", &[], &["--cert-san", billing_id]);
    // One identity names one client.
    let taken = tokend_command(
        &[
            "client",
            "add",
            "billing-twin",
            "--cert-san",
            billing_id,
            "--redis-url",
            &redis.url(),
        ],
        None,
    );
    assert!(!taken.status.success());
    assert!(
        String::from_utf8_lossy(&taken.stderr)
            .contains("belongs to the service client \"billing\""),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("exchange.toml");
    std::fs::write(
        &policy,
        "[[exchange]]\nactor = \"svc-a\"\ntargets = [\"orders\"]\nscopes = [\"read\"]\nmax_ttl = \"1m\"\n\n\
         [[exchange]]\nactor = \"billing\"\ntargets = [\"orders\"]\nscopes = [\"read\"]\nmax_ttl = \"1m\"\n",
    )
    .unwrap();
    let tokend = mtls_tokend(
        &pki,
        &redis,
        &[
            "--cert-trust-domain",
            "prod.example",
            "--exchange-policy",
            policy.to_str().unwrap(),
        ],
    );
    let plain = client_over(&pki, &tokend, None).await;
    let subject_for = |audience: &'static str| {
        let mut plain = plain.clone();
        async move {
            let mut request = password_login("alice", "pw");
            request.audience = audience.into();
            plain
                .login(request)
                .await
                .unwrap()
                .into_inner()
                .tokens
                .unwrap()
                .access_token
        }
    };
    // Exchange with a certificate and no token: the certificate is the caller.
    let exchange_as = |cert: CertFiles, subject: String| {
        let pki_ca = pki.ca().to_owned();
        let url = tokend.https_url();
        async move {
            let channel = tls_channel(&url, &pki_ca, Some(&cert)).await.unwrap();
            TokenServiceClient::new(channel)
                .exchange(pb::ExchangeRequest {
                    subject_token: subject,
                    audience: "orders".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let for_a = subject_for("svc-a").await;
    for (stem, uri) in [
        ("tenant", "spiffe://tenant.example/ns/tenant-dev/sa/svc-a"),
        ("cdn", "https://cdn.example.net/static/img/svc-a"),
        ("deep", "spiffe://prod.example/ns/prod/sa/svc-a"),
        ("suffix", "spiffe://prod.example.evil/svc-a"),
    ] {
        let cert = pki.client_with_sans(stem, &[], &[uri]);
        assert_reason(
            exchange_as(cert, for_a.clone()).await,
            Reason::AccessTokenMissing,
        );
    }
    let exact = pki.client_with_sans("exact", &[], &["spiffe://prod.example/svc-a"]);
    let answer = exchange_as(exact, for_a.clone())
        .await
        .expect("the trust domain's exact ID");
    assert_eq!(answer.actor_chain, ["svc-a"]);

    // billing recorded its SPIFFE ID: only that names it, not a workload of
    // another namespace called billing, nor a DNS SAN "billing".
    let for_billing = subject_for("billing").await;
    for cert in [
        pki.client_with_sans(
            "dev-billing",
            &[],
            &["spiffe://prod.example/ns/dev/sa/billing"],
        ),
        pki.client_with_sans("dns-billing", &["billing"], &[]),
        pki.client_with_sans("td-billing", &[], &["spiffe://prod.example/billing"]),
    ] {
        assert_reason(
            exchange_as(cert, for_billing.clone()).await,
            Reason::AccessTokenMissing,
        );
    }
    let own = pki.client_with_sans("pay-billing", &[], &[billing_id]);
    let derived = exchange_as(own.clone(), for_billing.clone())
        .await
        .expect("its recorded identity names billing");
    assert_eq!(derived.actor_chain, ["billing"]);

    // The interceptor's actor check uses the same rule: the derived token
    // works at an mTLS resource server from billing's own certificate only.
    let resource = pki.server("orders");
    let orders = ResourceServer::start(&[
        "--tokend",
        &tokend.https_url(),
        "--tokend-ca",
        pki.ca_arg(),
        "--audience",
        "orders",
        "--tls-cert",
        resource.cert_arg(),
        "--tls-key",
        resource.key_arg(),
        "--tls-client-ca",
        pki.ca_arg(),
        "--cert-trust-domain",
        "prod.example",
        "--actor-cert-san",
        &format!("billing={billing_id}"),
    ]);
    let echo_with = |cert: Option<CertFiles>, token: String| {
        let ca = pki.ca().to_owned();
        let url = orders.https_url();
        async move {
            let channel = tls_channel(&url, &ca, cert.as_ref()).await.unwrap();
            let mut echo = EchoClient::new(channel);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match echo.echo(echo_request("hi", Some(&bearer(&token)))).await {
                    Err(s) if Reason::of(&s) == Some(Reason::KeysUnavailable) => {
                        assert!(std::time::Instant::now() < deadline, "no keys");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    other => return other,
                }
            }
        }
    };
    // Exchanged by certificate, the token is bound to it; exchanged with a
    // token, it is not, and the actor check decides.
    assert!(
        echo_with(Some(own.clone()), derived.access_token.clone())
            .await
            .is_ok()
    );
    let billing_secret = tokend_command(
        &[
            "client",
            "rotate-secret",
            "billing",
            "--redis-url",
            &redis.url(),
        ],
        None,
    );
    assert!(billing_secret.status.success());
    let billing_secret = String::from_utf8(billing_secret.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let mut request = client_login("billing", &billing_secret);
    request.audience = "tokend".into();
    let own_token = plain
        .clone()
        .login(request)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let for_billing = subject_for("billing").await;
    let unbound = plain
        .clone()
        .exchange(with_bearer(
            pb::ExchangeRequest {
                subject_token: for_billing,
                audience: "orders".into(),
                ..Default::default()
            },
            &own_token,
        ))
        .await
        .expect("billing's own token")
        .into_inner()
        .access_token;
    assert!(echo_with(Some(own), unbound.clone()).await.is_ok());
    for impostor in [
        pki.client_with_sans(
            "impostor-ns",
            &[],
            &["spiffe://prod.example/ns/dev/sa/billing"],
        ),
        pki.client_with_sans("impostor-dns", &["billing"], &[]),
    ] {
        assert_reason(
            echo_with(Some(impostor), unbound.clone()).await,
            Reason::ActorMismatch,
        );
    }
}

//! What introspection costs: Introspect of a valid access token (a cached
//! verification and the revocation list, no store call) against the no-op
//! Health/Check on the same tokend, alternating, two rounds each.

use std::error::Error;

use testkit::{TOKEND_AUDIENCE, add_client, bearer, client_login};
use tokend::proto::tokend::v1 as pb;
use tonic_health::pb::health_client::HealthClient;

use crate::load::run;
use crate::report::Report;
use crate::setup::{self, Deployment};
use crate::workers::{Introspect, Noop};
use crate::{CONCURRENCY, MEASURE, WARMUP};

/// Runs the introspection phase.
pub async fn measure(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let secret = add_client(
        &dep.redis,
        "bench-introspector",
        &["tokend.introspect", "tokend.introspect.any"],
    );
    let mut tokens = dep.token_client(0);
    let mut own = client_login("bench-introspector", &secret);
    own.audience = TOKEND_AUDIENCE.into();
    let caller = tokens.login(own).await?.into_inner();
    let authorization: tonic::metadata::MetadataValue<_> =
        bearer(&caller.tokens.ok_or("no tokens")?.access_token).parse()?;
    let subject = tokens
        .login(client_login("bench-client", &dep.client_secret))
        .await?
        .into_inner()
        .tokens
        .ok_or("no tokens")?
        .access_token;
    let request = pb::IntrospectRequest { token: subject };
    let mut rates = [0.0f64; 2];
    for round in 0..2 {
        eprintln!("Introspect (round {})...", round + 1);
        let introspect = run(
            (0..CONCURRENCY)
                .map(|i| Introspect {
                    client: dep.token_client(i),
                    request: request.clone(),
                    authorization: authorization.clone(),
                })
                .collect(),
            WARMUP,
            MEASURE,
        )
        .await;
        if introspect.errors > 0 {
            eprintln!("  {} failed introspections", introspect.errors);
        }
        eprintln!("no-op (round {})...", round + 1);
        let noop = run(
            (0..CONCURRENCY)
                .map(|i| {
                    Noop(HealthClient::new(
                        dep.tokend_channels[i % setup::CONNECTIONS].clone(),
                    ))
                })
                .collect(),
            WARMUP,
            MEASURE,
        )
        .await;
        rates[0] += introspect.rps() / 2.0;
        rates[1] += noop.rps() / 2.0;
    }
    report.set("introspect_rps", rates[0]);
    report.set("introspect_noop_rps", rates[1]);
    report.set("introspect_vs_noop", rates[0] / rates[1]);
    let note = format!(
        "{} vs {} rps (no-op); target >= 0.5",
        report.show("introspect_rps"),
        report.show("introspect_noop_rps")
    );
    report.row("introspect_vs_noop", "introspect_vs_noop", note);
    Ok(())
}

//! What on-behalf-of calls cost: Exchange against Refresh on the same
//! tokend, alternating, two rounds each (an exchange needs no argon2, one
//! cached signature check of the subject and one session check in the
//! store, so it should run near Refresh's rate), and the exchanging token
//! source's cost when its token is cached (what every outbound call pays).

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use testkit::{TOKEND_AUDIENCE, add_client, client_login, password_login};
use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tokend_interceptor::client::{ClientGrant, ExchangingTokenSource, OnBehalfOf, TokenSource};
use tonic::transport::Channel;

use crate::load::Worker;
use crate::report::Report;
use crate::setup::{self, CONNECTIONS, Deployment, PASSWORD};
use crate::workers::TokenClient;

/// The calling service and the audience it obtains.
const ACTOR: &str = "bench-exchanger";
const TARGET: &str = "orders";

/// Cached lookups timed for `exchange_cached_source_us`.
const CACHED_CALLS: u32 = 200_000;

/// Exchanges one user's token again and again.
struct Exchanger {
    client: TokenClient,
    caller: String,
    subject: String,
}

impl Worker for Exchanger {
    async fn call(&mut self) -> bool {
        let mut request = tonic::Request::new(pb::ExchangeRequest {
            subject_token: self.subject.clone(),
            audience: TARGET.into(),
            scopes: Vec::new(),
            ttl: None,
        });
        match self.caller.parse() {
            Ok(value) => request.metadata_mut().insert("authorization", value),
            Err(_) => return false,
        };
        self.client.exchange(request).await.is_ok()
    }
}

/// Runs the exchange phase.
pub async fn measure(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let secret = add_client(&dep.redis, ACTOR, &[]);
    let dir = tempfile_dir()?;
    let policy = dir.join("exchange.toml");
    std::fs::write(
        &policy,
        format!(
            "[[exchange]]\nactor = \"{ACTOR}\"\ntargets = [\"{TARGET}\"]\nscopes = [\"read\"]\nmax_ttl = \"5m\"\n"
        ),
    )?;
    let policy_arg = policy.to_str().ok_or("temp path is not UTF-8")?;
    let tokend = setup::start_tokend(&dep.redis, &["--exchange-policy", policy_arg]);
    let channels = setup::channels(&tokend.url()).await?;
    let client = |i: usize| TokenClient::new(channels[i % CONNECTIONS].clone());
    let caller = own_token(client(0), &secret).await?;

    let mut refresh = 0.0;
    let mut exchange = 0.0;
    for round in 0..2 {
        eprintln!("Refresh: beside exchange (round {})...", round + 1);
        let users = setup::users(&dep.redis, &format!("xr-{round}"), crate::CONCURRENCY).await?;
        let refreshers = setup::refreshers(client, &users).await?;
        refresh += crate::load::run(refreshers, crate::WARMUP, crate::MEASURE)
            .await
            .rps();

        eprintln!("Exchange (round {})...", round + 1);
        let users = setup::users(&dep.redis, &format!("xe-{round}"), crate::CONCURRENCY).await?;
        let mut exchangers = Vec::with_capacity(users.len());
        for (i, user) in users.iter().enumerate() {
            exchangers.push(Exchanger {
                client: client(i),
                caller: format!("Bearer {caller}"),
                subject: subject_token(client(i), user).await?,
            });
        }
        exchange += crate::load::run(exchangers, crate::WARMUP, crate::MEASURE)
            .await
            .rps();
    }
    let (refresh, exchange) = (refresh / 2.0, exchange / 2.0);
    report.set("refresh_rps_beside_exchange", refresh);
    report.set("exchange_rps", exchange);
    report.set("exchange_vs_refresh", exchange / refresh);
    let note = format!(
        "{} vs {} rps; target >= 0.7",
        report.show("exchange_rps"),
        report.show("refresh_rps_beside_exchange")
    );
    report.row("exchange_vs_refresh", "exchange_vs_refresh", note);

    let user = setup::users(&dep.redis, "xc", 1).await?;
    let subject = subject_token(client(0), &user[0]).await?;
    let cached = cached_source_us(channels[0].clone(), &secret, &subject).await?;
    report.set("exchange_cached_source_us", cached);
    report.row(
        "exchange_cached_source_us",
        "exchange_cached_source_us",
        "exchanging token source, token cached; target < 2 us",
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The calling service's own token for tokend.
async fn own_token(mut client: TokenClient, secret: &str) -> Result<String, Box<dyn Error>> {
    let mut request = client_login(ACTOR, secret);
    request.audience = TOKEND_AUDIENCE.into();
    let tokens = client.login(request).await?.into_inner().tokens;
    Ok(tokens.ok_or("no tokens")?.access_token)
}

/// `user`'s access token issued to the calling service, retrying after
/// OVERLOADED as told.
async fn subject_token(mut client: TokenClient, user: &str) -> Result<String, Box<dyn Error>> {
    loop {
        let mut request = password_login(user, PASSWORD);
        request.audience = ACTOR.into();
        match client.login(request).await {
            Ok(reply) => {
                let tokens = reply.into_inner().tokens.ok_or("no tokens")?;
                return Ok(tokens.access_token);
            }
            Err(status) => match Reason::retry_delay(&status) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(status.into()),
            },
        }
    }
}

/// Microseconds per cached lookup of the exchanging token source, for
/// the user token `subject`.
async fn cached_source_us(
    channel: Channel,
    secret: &str,
    subject: &str,
) -> Result<f64, Box<dyn Error>> {
    let own = TokenSource::for_client(
        channel.clone(),
        ClientGrant {
            client_id: ACTOR.into(),
            client_secret: secret.into(),
            audience: TOKEND_AUDIENCE.into(),
            scopes: Vec::new(),
        },
    );
    let source = ExchangingTokenSource::new(channel, own);
    let subject = OnBehalfOf::new(subject);
    let audience: Arc<str> = Arc::from(TARGET);
    let scopes: Arc<[String]> = Arc::from(Vec::new());
    source.header_for(&subject, &audience, &scopes).await?;
    let started = Instant::now();
    for _ in 0..CACHED_CALLS {
        std::hint::black_box(source.header_for(&subject, &audience, &scopes).await?);
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(CACHED_CALLS);
    if source.exchanges() != 1 {
        return Err(format!("{} exchanges for one cached token", source.exchanges()).into());
    }
    Ok(us)
}

/// A fresh temporary directory.
fn tempfile_dir() -> Result<std::path::PathBuf, Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("tokend-bench-exchange-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

//! What transport security costs: Refresh over TLS against plaintext (long
//! lived connections, as clients keep them), verification of a certificate
//! bound token against an unbound one, and Refresh while a hundred watchers
//! read the feed's history.

use std::error::Error;
use std::time::{Duration, Instant};

use testkit::pki::Pki;
use testkit::{Tokend, Watcher, with_bearer};
use tokend::proto::tokend::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::load::run;
use crate::measure;
use crate::report::Report;
use crate::setup::{self, Deployment};
use crate::workers::TokenClient;
use crate::{CONCURRENCY, MEASURE, WARMUP};

/// Feed entries the watchers' history holds.
const HISTORY: usize = 50_000;
/// Watchers reading it at once.
const WATCHERS: usize = 100;

/// Runs the transport phases.
pub async fn measure(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    tls_refresh(dep, report).await?;
    bound_verification(report);
    refresh_with_watchers(dep, report).await?;
    Ok(())
}

/// `CONNECTIONS` TLS connections to `url`, trusting `ca`.
async fn tls_channels(url: &str, ca: &std::path::Path) -> Result<Vec<Channel>, Box<dyn Error>> {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
    let mut out = Vec::new();
    for _ in 0..setup::CONNECTIONS {
        out.push(
            Endpoint::from_shared(url.to_owned())?
                .tls_config(config.clone())?
                .connect()
                .await?,
        );
    }
    Ok(out)
}

/// Refresh on a TLS tokend and on a plaintext one (same Redis, same flags),
/// alternating, two rounds each.
async fn tls_refresh(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let pki = Pki::new("bench");
    let server = pki.server("tokend");
    let tls = Tokend::builder()
        .redis(&dep.redis)
        .args(setup::TOKEND_ARGS)
        .tls(&server)
        .env("RUST_LOG", "warn")
        .start();
    let tls_channels = tls_channels(&tls.https_url(), pki.ca()).await?;
    let [plain, secure] = setup::alternating_refresh(
        dep,
        [
            ("tls-plaintext", &dep.tokend_channels),
            ("tls-TLS", &tls_channels),
        ],
    )
    .await?;
    report.set("refresh_rps_plaintext", plain);
    report.set("refresh_rps_tls", secure);
    report.set("tls_refresh_vs_plaintext", secure / plain);
    let note = format!(
        "{} vs {} rps; target >= 0.8",
        report.show("refresh_rps_tls"),
        report.show("refresh_rps_plaintext")
    );
    report.row("tls_refresh_vs_plaintext", "tls_refresh_vs_plaintext", note);
    Ok(())
}

/// From criterion's figures (`interceptor/benches/verify.rs`): a cached
/// verification over mTLS of a certificate-bound token against an unbound one.
fn bound_verification(report: &mut Report) {
    let (Some(plain), Some(bound)) = (
        measure::criterion_us("verify_mtls_plain"),
        measure::criterion_us("verify_mtls_bound"),
    ) else {
        return;
    };
    report.set("verify_mtls_plain_us", plain);
    report.set("verify_mtls_bound_us", bound);
    report.set("bound_verify_vs_plain", plain / bound);
    let note = format!(
        "{} vs {} us per cached verification; target >= 0.95",
        report.show("verify_mtls_bound_us"),
        report.show("verify_mtls_plain_us")
    );
    report.row("bound_verify_vs_plain", "bound_verify_vs_plain", note);
}

/// Refresh alone, then while 100 watchers read a 50,000-entry history over
/// and over (reconnecting each time they are through).
async fn refresh_with_watchers(
    dep: &Deployment,
    report: &mut Report,
) -> Result<(), Box<dyn Error>> {
    eprintln!("writing {HISTORY} feed entries...");
    let mut conn = dep.redis.connection().await;
    let now = tokend::clock::Clock::system().now_ms();
    for chunk in 0..HISTORY / 5_000 {
        let mut pipe = redis::pipe();
        for i in 0..5_000 {
            pipe.cmd("XADD")
                .arg("tokend:{revocations}")
                .arg("*")
                .arg("k")
                .arg("s")
                .arg("id")
                .arg(format!("history-{chunk}-{i}"))
                .arg("at")
                .arg(now)
                .arg("until")
                .arg(now + 900_000)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    // A tokend started now loads the history into its window.
    let tokend = setup::start_tokend(&dep.redis, &[]);
    let channels = setup::channels(&tokend.url()).await?;
    let client = |i: usize| TokenClient::new(channels[i % setup::CONNECTIONS].clone());
    let watcher = Watcher::in_redis(&dep.redis);
    let token = watcher.token(&mut client(0)).await;

    eprintln!("Refresh alone...");
    let users = setup::users(&dep.redis, "watch-alone", CONCURRENCY).await?;
    let alone = run(setup::refreshers(client, &users).await?, WARMUP, MEASURE).await;

    eprintln!("Refresh while {WATCHERS} watchers read {HISTORY} entries each, again and again...");
    let users = setup::users(&dep.redis, "watch-busy", CONCURRENCY).await?;
    let refreshers = setup::refreshers(client, &users).await?;
    let stop = Instant::now() + WARMUP + MEASURE;
    // Watchers are other processes: their own connections, as resource
    // servers would have.
    let watcher_channels = setup::channels(&tokend.url()).await?;
    let mut watchers = tokio::task::JoinSet::new();
    for i in 0..WATCHERS {
        let mut client = TokenClient::new(watcher_channels[i % setup::CONNECTIONS].clone());
        let token = token.clone();
        watchers.spawn(async move {
            let (mut histories, mut entries) = (0u32, 0u64);
            while Instant::now() < stop {
                let request = with_bearer(pb::WatchRevocationsRequest::default(), &token);
                let Ok(response) = client.watch_revocations(request).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut stream = response.into_inner();
                while let Ok(Some(message)) = stream.message().await {
                    match message.event {
                        Some(pb::watch_revocations_response::Event::Heartbeat(_)) => {
                            histories += 1;
                            break;
                        }
                        Some(_) => entries += 1,
                        None => {}
                    }
                    if Instant::now() >= stop {
                        break;
                    }
                }
            }
            (histories, entries)
        });
    }
    let started = Instant::now();
    let busy = run(refreshers, WARMUP, MEASURE).await;
    let (mut histories, mut entries) = (0, 0);
    while let Some(done) = watchers.join_next().await {
        let (h, e) = done?;
        histories += h;
        entries += e;
    }
    let entries_per_second = entries as f64 / started.elapsed().as_secs_f64();
    report.set("refresh_p99_alone_ms", alone.percentile_ms(99.0));
    report.set("refresh_p99_with_100_watchers_ms", busy.percentile_ms(99.0));
    report.set(
        "refresh_p99_with_100_watchers_vs_alone",
        busy.percentile_ms(99.0) / alone.percentile_ms(99.0),
    );
    report.set("watcher_histories_read", f64::from(histories));
    report.set("watcher_history_entries_per_second", entries_per_second);
    let note = format!(
        "alone {} ms; meanwhile {} entries/s of history sent, {} whole histories of {HISTORY}; target <= 1.5x",
        report.show("refresh_p99_alone_ms"),
        report.show("watcher_history_entries_per_second"),
        report.show("watcher_histories_read")
    );
    report.row(
        "Refresh p99 with 100 watchers ms",
        "refresh_p99_with_100_watchers_ms",
        note,
    );
    Ok(())
}

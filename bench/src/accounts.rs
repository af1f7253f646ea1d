//! What account control costs: the account check at every Refresh against
//! the design before it; password logins while Refresh calls keep every
//! core busy; a legitimate login while guessers hammer an account.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use testkit::{Tokend, password_login};
use tokend_interceptor::Reason;

use crate::load::{Stats, run};
use crate::report::Report;
use crate::service::password_loginers;
use crate::setup::{self, Deployment};
use crate::workers::{Login, source};
use crate::{CONCURRENCY, MEASURE, WARMUP};

/// Wrong-password logins per second in the guessing phase.
const GUESSES_PER_S: u32 = 500;
/// Distinct sources they come from.
const GUESSING_SOURCES: usize = 100;

/// Runs the account-control phases.
pub async fn measure(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    refresh_account_check(dep, report).await?;
    logins_under_refresh_storm(dep, report).await?;
    login_under_guessing(dep, report).await?;
    Ok(())
}

/// Refresh with the account check (as configured, and with its cache off)
/// against a tokend built without it, alternating, in the same run.
async fn refresh_account_check(
    dep: &Deployment,
    report: &mut Report,
) -> Result<(), Box<dyn Error>> {
    let baseline_bin = testkit::target_dir().join("tokend-baseline");
    if !baseline_bin.exists() {
        eprintln!(
            "no {}: skipping the account-check ratio",
            baseline_bin.display()
        );
        return Ok(());
    }
    let baseline = Tokend::builder()
        .binary(baseline_bin)
        .redis(&dep.redis)
        .args(setup::TOKEND_ARGS)
        .env("RUST_LOG", "warn")
        .start();
    let uncached = setup::start_tokend(&dep.redis, &["--account-cache", "0"]);
    let targets: [(&str, &Tokend); 3] = [
        ("baseline", &baseline),
        ("checked", &dep.tokend),
        ("uncached", &uncached),
    ];
    let mut rates = [0.0f64; 3];
    for round in 0..2 {
        for (i, (name, tokend)) in targets.iter().enumerate() {
            eprintln!("Refresh, {name} (round {})...", round + 1);
            let channels = setup::channels(&tokend.url()).await?;
            let client = |i: usize| {
                crate::workers::TokenClient::new(channels[i % setup::CONNECTIONS].clone())
            };
            let prefix = format!("check-{name}-{round}");
            let users = setup::users(&dep.redis, &prefix, CONCURRENCY).await?;
            let refreshers = setup::refreshers(client, &users).await?;
            let stats = run(refreshers, WARMUP, MEASURE).await;
            rates[i] += stats.rps();
        }
    }
    let [baseline_rps, checked_rps, uncached_rps] = rates.map(|total| total / 2.0);
    report.set("refresh_rps_without_account_check", baseline_rps);
    report.set("refresh_rps_with_account_check", checked_rps);
    report.set("refresh_rps_account_check_uncached", uncached_rps);
    report.set("refresh_account_check_ratio", checked_rps / baseline_rps);
    report.set(
        "refresh_account_check_uncached_ratio",
        uncached_rps / baseline_rps,
    );
    let note = format!(
        "{} vs {} rps without the check; target >= 0.9",
        report.show("refresh_rps_with_account_check"),
        report.show("refresh_rps_without_account_check")
    );
    report.row(
        "refresh_account_check_ratio",
        "refresh_account_check_ratio",
        note,
    );
    report.row(
        "... with the account cache off",
        "refresh_account_check_uncached_ratio",
        "every Refresh reads the account from Redis",
    );
    Ok(())
}

/// Password logins alone, then while 200 callers refresh as fast as tokend
/// answers (every client refreshing at once after an outage).
async fn logins_under_refresh_storm(
    dep: &Deployment,
    report: &mut Report,
) -> Result<(), Box<dyn Error>> {
    let workers = 4 * dep.cores;
    let users = setup::users(&dep.redis, "storm-login", 16 * dep.cores).await?;
    eprintln!("password Login alone...");
    let alone = run(password_loginers(dep, &users, workers), WARMUP, MEASURE).await;
    eprintln!("password Login during a Refresh storm...");
    let storm_users = setup::users(&dep.redis, "storm", CONCURRENCY).await?;
    let refreshers = setup::refreshers(|i| dep.token_client(i), &storm_users).await?;
    let storm = tokio::spawn(run(refreshers, WARMUP, MEASURE));
    let during = run(password_loginers(dep, &users, workers), WARMUP, MEASURE).await;
    let storm = storm.await?;
    report.set("password_login_rps_alone", alone.rps());
    report.set("password_login_rps_during_refresh_storm", during.rps());
    report.set("refresh_rps_during_login_share", storm.rps());
    report.set(
        "password_login_share_under_refresh_flood",
        during.rps() / alone.rps(),
    );
    let note = format!(
        "{} of {} logins/s while Refresh ran at {} rps; target >= 0.25",
        report.show("password_login_rps_during_refresh_storm"),
        report.show("password_login_rps_alone"),
        report.show("refresh_rps_during_login_share")
    );
    report.row(
        "password_login_share_under_refresh_flood",
        "password_login_share_under_refresh_flood",
        note,
    );
    Ok(())
}

/// One user logging in again and again: alone, then while 500 wrong
/// passwords a second arrive from 100 other sources (on one victim account,
/// the online-guessing attack), and, for the record, while they arrive for
/// unknown accounts, which no throttle can tell from real users.
async fn login_under_guessing(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let legit = setup::users(&dep.redis, "legit", 8).await?;
    setup::users(&dep.redis, "victim", 1).await?;
    let legit_worker = || password_loginers(dep, &legit, 1);
    eprintln!("a legitimate login alone...");
    let alone = run(legit_worker(), WARMUP, MEASURE).await;
    eprintln!("a legitimate login while {GUESSES_PER_S} guesses/s hit one account...");
    let (during, guessed) = with_guessing(dep, legit_worker(), Some("victim-0")).await;
    eprintln!("a legitimate login while {GUESSES_PER_S} guesses/s hit unknown accounts...");
    let (scattered, scattered_guesses) = with_guessing(dep, legit_worker(), None).await;

    report.set("login_p99_alone_ms", alone.percentile_ms(99.0));
    report.set("login_p99_under_guessing_ms", during.percentile_ms(99.0));
    report.set(
        "login_p99_under_guessing_vs_alone",
        during.percentile_ms(99.0) / alone.percentile_ms(99.0),
    );
    report.set("guesses_throttled_share", guessed.throttled_share());
    report.set(
        "login_p99_under_unthrottleable_guessing_ms",
        scattered.percentile_ms(99.0),
    );
    report.set(
        "unthrottleable_guesses_overloaded_share",
        scattered_guesses.overloaded_share(),
    );
    let note = format!(
        "alone {} ms; target <= 2x; {} of the guesses throttled",
        report.show("login_p99_alone_ms"),
        report.show("guesses_throttled_share")
    );
    report.row(
        "login_p99_under_guessing_ms",
        "login_p99_under_guessing_ms",
        note,
    );
    let note = format!(
        "guesses on unknown accounts from 100 sources; {} answered OVERLOADED",
        report.show("unthrottleable_guesses_overloaded_share")
    );
    report.row(
        "... guesses no throttle can tell apart",
        "login_p99_under_unthrottleable_guessing_ms",
        note,
    );
    Ok(())
}

/// How the guesses were answered.
#[derive(Default)]
struct Guesses {
    sent: AtomicU64,
    throttled: AtomicU64,
    overloaded: AtomicU64,
}

impl Guesses {
    fn share(&self, of: &AtomicU64) -> f64 {
        of.load(Ordering::Relaxed) as f64 / self.sent.load(Ordering::Relaxed).max(1) as f64
    }

    fn throttled_share(&self) -> f64 {
        self.share(&self.throttled)
    }

    fn overloaded_share(&self) -> f64 {
        self.share(&self.overloaded)
    }
}

/// Runs `legit` while an open-loop generator sends wrong-password logins:
/// for `victim`, or for a new unknown account each time.
async fn with_guessing(
    dep: &Deployment,
    legit: Vec<Login>,
    victim: Option<&str>,
) -> (Stats, Arc<Guesses>) {
    let guesses = Arc::new(Guesses::default());
    let stop_at = Instant::now() + WARMUP + MEASURE + Duration::from_millis(100);
    let generator = {
        let guesses = Arc::clone(&guesses);
        let clients: Vec<_> = (0..setup::CONNECTIONS)
            .map(|i| dep.token_client(i))
            .collect();
        let victim = victim.map(str::to_owned);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / GUESSES_PER_S);
            let mut n = 0usize;
            while Instant::now() < stop_at {
                tick.tick().await;
                n += 1;
                let account = victim.clone().unwrap_or_else(|| format!("ghost-{n}"));
                let mut request = tonic::Request::new(password_login(&account, "wrong"));
                if let Ok(value) = source(20_000 + n % GUESSING_SOURCES).parse() {
                    request.metadata_mut().insert("x-forwarded-for", value);
                }
                let mut client = clients[n % clients.len()].clone();
                let guesses = Arc::clone(&guesses);
                tokio::spawn(async move {
                    guesses.sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(status) = client.login(request).await {
                        match Reason::of(&status) {
                            Some(Reason::LoginThrottled) => &guesses.throttled,
                            Some(Reason::Overloaded) => &guesses.overloaded,
                            _ => return,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        })
    };
    let stats = run(legit, WARMUP, MEASURE).await;
    let _ = generator.await;
    (stats, guesses)
}

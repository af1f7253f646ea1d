//! The core figures: the no-op reference, Refresh, client and password
//! logins against their limits, Refresh under a login flood, the
//! interceptor, revocation latency, and memory.

use std::error::Error;
use std::time::{Duration, Instant};

use testkit::{bearer, client_login, echo_request, password_login};
use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tonic_health::pb::health_client::HealthClient;

use crate::load::{Stats, run, run_measuring_cpu};
use crate::measure::{self, MEMORY_SESSIONS};
use crate::report::Report;
use crate::setup::{self, Deployment, PASSWORD};
use crate::workers::{Echo, Login, Noop, Ping, source};
use crate::{CONCURRENCY, MEASURE, WARMUP};

/// Runs the core phases.
pub async fn measure(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let cores = dep.cores;
    let tokend_pid = dep.tokend.pid().ok_or("tokend pid")?;
    let redis_pid = dep.redis.pid().ok_or("redis pid")?;
    // The CPU time tokend and Redis used per call of a run, in µs.
    let per_call = |stats: &Stats, cpu: &[Duration], i: usize| {
        let calls = (stats.ok + stats.errors).max(1) as f64;
        cpu.get(i)
            .map_or(f64::NAN, |used| used.as_secs_f64() * 1e6 / calls)
    };

    eprintln!("no-op: grpc.health.v1.Health/Check...");
    let (noop, noop_cpu) = run_measuring_cpu(
        (0..CONCURRENCY)
            .map(|i| {
                Noop(HealthClient::new(
                    dep.tokend_channels[i % setup::CONNECTIONS].clone(),
                ))
            })
            .collect(),
        WARMUP,
        MEASURE,
        &[tokend_pid, redis_pid],
    )
    .await;

    eprintln!("logging in {CONCURRENCY} sessions (one per user) for Refresh...");
    let users = setup::users(&dep.redis, "refresher", CONCURRENCY).await?;
    let refreshers = setup::refreshers(|i| dep.token_client(i), &users).await?;

    eprintln!("Refresh...");
    let sampling = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        let started = Instant::now();
        while started.elapsed() < WARMUP + MEASURE + Duration::from_millis(500) {
            if let Some(rss) = measure::rss_mib(tokend_pid) {
                peak = peak.max(rss);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    let (refresh, refresh_cpu) =
        run_measuring_cpu(refreshers, WARMUP, MEASURE, &[tokend_pid, redis_pid]).await;
    let tokend_rss = sampling.await?;

    eprintln!("client-credential Login...");
    let client_logins = run(
        (0..CONCURRENCY)
            .map(|i| {
                Login::one(
                    dep.token_client(i),
                    client_login("bench-client", &dep.client_secret),
                    Some(source(i)),
                )
            })
            .collect(),
        WARMUP,
        MEASURE,
    )
    .await;

    // The limit is measured right before the phase it bounds, so both see
    // the machine in the same state.
    eprintln!("argon2id alone, every core hashing...");
    let argon2_per_core =
        tokio::task::spawn_blocking(move || measure::argon2_rate_per_core(cores)).await?;
    report.set("argon2_hashes_per_s_per_core", argon2_per_core);

    eprintln!("password Login...");
    let loginers = setup::users(&dep.redis, "loginer", 16 * cores).await?;
    let password_logins = run(
        password_loginers(dep, &loginers, 4 * cores),
        WARMUP,
        // ~125 logins/s: a longer window for a steadier figure.
        MEASURE + Duration::from_secs(4),
    )
    .await;

    eprintln!("Refresh under a password-login flood...");
    let users = setup::users(&dep.redis, "flooded", CONCURRENCY).await?;
    let refreshers = setup::refreshers(|i| dep.token_client(i), &users).await?;
    let flooders = setup::users(&dep.redis, "flooder", 256).await?;
    let flood = tokio::spawn(run(password_loginers(dep, &flooders, 64), WARMUP, MEASURE));
    let refresh_under_flood = run(refreshers, WARMUP, MEASURE).await;
    let flood = flood.await?;

    eprintln!("interceptor: Echo (verified token) and Ping (public)...");
    let mut tokens = dep.token_client(0);
    let pair = tokens
        .login(client_login("bench-client", &dep.client_secret))
        .await?
        .into_inner();
    let authorization = bearer(&pair.tokens.ok_or("no tokens")?.access_token);
    let echo = run(
        (0..CONCURRENCY)
            .map(|i| Echo {
                client: dep.echo_client(i),
                authorization: authorization.clone(),
            })
            .collect(),
        WARMUP,
        MEASURE,
    )
    .await;
    let ping = run(
        (0..CONCURRENCY).map(|i| Ping(dep.echo_client(i))).collect(),
        WARMUP,
        MEASURE,
    )
    .await;
    let resource_rss = dep.resource.pid().and_then(measure::rss_mib);

    eprintln!("revocation latency through the feed...");
    let latencies = revocation_latencies(dep, &loginers[0]).await?;

    eprintln!("Redis memory per session ({MEMORY_SESSIONS} sessions)...");
    let fresh_bytes = measure::bytes_per_session(&dep.redis, 0).await?;
    let refreshed_bytes = measure::bytes_per_session(&dep.redis, 3).await?;
    let h2load = measure::h2load_noop(&dep.tokend.addr.to_string());

    report.set("noop_rps", noop.rps());
    report.set("noop_p99_ms", noop.percentile_ms(99.0));
    report.set("refresh_rps", refresh.rps());
    report.set("refresh_p50_ms", refresh.percentile_ms(50.0));
    report.set("refresh_p99_ms", refresh.percentile_ms(99.0));
    report.set("refresh_errors", refresh.errors as f64);
    report.set("refresh_vs_noop", refresh.rps() / noop.rps());
    let noop_tokend_cpu = per_call(&noop, &noop_cpu, 0);
    let refresh_tokend_cpu = per_call(&refresh, &refresh_cpu, 0);
    report.set("tokend_cpu_us_per_noop", noop_tokend_cpu);
    report.set("tokend_cpu_us_per_refresh_single_redis", refresh_tokend_cpu);
    report.set(
        "redis_cpu_us_per_refresh_single_redis",
        per_call(&refresh, &refresh_cpu, 1),
    );
    report.set(
        "refresh_cpu_vs_noop_cpu",
        refresh_tokend_cpu / noop_tokend_cpu,
    );
    report.set("client_login_rps", client_logins.rps());
    report.set("client_login_p99_ms", client_logins.percentile_ms(99.0));
    report.set(
        "client_login_vs_refresh",
        client_logins.rps() / refresh.rps(),
    );
    report.set("password_login_rps", password_logins.rps());
    report.set("password_login_p99_ms", password_logins.percentile_ms(99.0));
    let argon2_limit = cores as f64 * argon2_per_core;
    report.set(
        "password_login_vs_argon2_limit",
        password_logins.rps() / argon2_limit,
    );
    report.set("refresh_rps_under_login_flood", refresh_under_flood.rps());
    report.set(
        "refresh_p99_under_login_flood_ms",
        refresh_under_flood.percentile_ms(99.0),
    );
    report.set("password_login_rps_during_flood", flood.rps());
    report.set("echo_rps", echo.rps());
    report.set("ping_rps", ping.rps());
    report.set("echo_vs_ping", echo.rps() / ping.rps());
    report.set("redis_bytes_per_session", fresh_bytes);
    report.set("redis_bytes_per_session_after_3_refreshes", refreshed_bytes);
    report.set("tokend_rss_mib", tokend_rss);
    if let Some(rss) = resource_rss {
        report.set("resource_server_rss_mib", rss);
    }
    report.set("revocation_latency_p50_ms", latencies[latencies.len() / 2]);
    report.set("revocation_latency_max_ms", latencies[latencies.len() - 1]);
    report.set("cores", cores as f64);
    if let Some(rps) = h2load {
        report.set("noop_rps_h2load", rps);
    }
    if let (Some(cold), Some(raw)) = (
        measure::criterion_us("verify_cold"),
        measure::criterion_us("pasetors_verify"),
    ) {
        report.set("verify_cold_us", cold);
        report.set("pasetors_verify_us", raw);
        report.set("verify_cold_vs_pasetors", cold / raw);
    }
    if let Some(cached) = measure::criterion_us("verify_cached") {
        report.set("verify_cached_us", cached);
    }

    let p99 = format!("p99 {} ms", report.show("noop_p99_ms"));
    report.row("no-op Health/Check rps", "noop_rps", p99);
    let note = format!(
        "p50 {} ms, p99 {} ms, {} errors",
        report.show("refresh_p50_ms"),
        report.show("refresh_p99_ms"),
        report.show("refresh_errors")
    );
    report.row("Refresh rps", "refresh_rps", note);
    report.row("refresh_vs_noop", "refresh_vs_noop", "target >= 0.35");
    let note = format!(
        "{} us per Refresh vs {} us per no-op; Redis {} us per Refresh; target <= 3",
        report.show("tokend_cpu_us_per_refresh_single_redis"),
        report.show("tokend_cpu_us_per_noop"),
        report.show("redis_cpu_us_per_refresh_single_redis")
    );
    report.row("refresh_cpu_vs_noop_cpu", "refresh_cpu_vs_noop_cpu", note);
    let note = format!(
        "{} x Refresh; target >= 0.5",
        report.show("client_login_vs_refresh")
    );
    report.row("client-credential Login rps", "client_login_rps", note);
    let note = format!(
        "argon2 alone: {} /s/core x {cores} cores",
        report.show("argon2_hashes_per_s_per_core")
    );
    report.row("password Login rps", "password_login_rps", note);
    report.row(
        "password_login_vs_argon2_limit",
        "password_login_vs_argon2_limit",
        "target >= 0.9",
    );
    let note = format!(
        "target <= 2 x {} ms; {} rps meanwhile",
        report.show("refresh_p99_ms"),
        report.show("refresh_rps_under_login_flood")
    );
    report.row(
        "Refresh p99 under login flood ms",
        "refresh_p99_under_login_flood_ms",
        note,
    );
    let note = format!("Ping (public) {} rps", report.show("ping_rps"));
    report.row("Echo (verified) rps", "echo_rps", note);
    report.row("echo_vs_ping", "echo_vs_ping", "target >= 0.7");
    let note = format!(
        "pasetors::public::verify {} us",
        report.show("pasetors_verify_us")
    );
    report.row("verify cold us", "verify_cold_us", note);
    report.row(
        "verify_cold_vs_pasetors",
        "verify_cold_vs_pasetors",
        "target <= 1.05",
    );
    report.row(
        "verify cached us",
        "verify_cached_us",
        "target well under 2 us",
    );
    let note = format!(
        "{} after 3 refreshes; target <= 512",
        report.show("redis_bytes_per_session_after_3_refreshes")
    );
    report.row("Redis bytes per session", "redis_bytes_per_session", note);
    report.row(
        "tokend RSS MiB (Refresh load)",
        "tokend_rss_mib",
        "target <= 64",
    );
    report.row(
        "resource server RSS MiB",
        "resource_server_rss_mib",
        "after the Echo phase",
    );
    let note = format!(
        "median; worst {} ms",
        report.show("revocation_latency_max_ms")
    );
    report.row("revocation latency ms", "revocation_latency_p50_ms", note);
    if h2load.is_some() {
        report.row(
            "no-op rps by h2load",
            "noop_rps_h2load",
            "independent client",
        );
    }
    Ok(())
}

/// `workers` password-login workers sharing `users` out between them, each
/// from a source of its own.
pub fn password_loginers(dep: &Deployment, users: &[String], workers: usize) -> Vec<Login> {
    (0..workers)
        .map(|w| Login {
            client: dep.token_client(w),
            requests: users
                .iter()
                .skip(w)
                .step_by(workers.max(1))
                .map(|user| password_login(user, PASSWORD))
                .collect(),
            next: 0,
            source: Some(source(10_000 + w)),
        })
        .collect()
}

/// Log in, call Echo, Revoke, then call Echo until it answers
/// `SESSION_REVOKED`: 50 trials, in ms, sorted.
async fn revocation_latencies(dep: &Deployment, user: &str) -> Result<Vec<f64>, Box<dyn Error>> {
    let mut tokens = dep.token_client(0);
    let mut echo = dep.echo_client(0);
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let pair = tokens
            .login(password_login(user, PASSWORD))
            .await?
            .into_inner()
            .tokens
            .ok_or("no tokens")?;
        let authorization = bearer(&pair.access_token);
        echo.echo(echo_request("x", Some(&authorization))).await?;
        tokens
            .revoke(pb::RevokeRequest {
                refresh_token: pair.refresh_token,
            })
            .await?;
        let started = Instant::now();
        loop {
            match echo.echo(echo_request("x", Some(&authorization))).await {
                Err(status) if Reason::of(&status) == Some(Reason::SessionRevoked) => break,
                _ if started.elapsed() > Duration::from_secs(5) => break,
                _ => {}
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

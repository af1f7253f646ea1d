//! `make bench`: starts its own redis-server, tokend and example resource
//! server (release builds), drives them with closed-loop tonic clients, and
//! prints a table and `target/bench/summary.json`. Every target is a ratio to
//! a limit measured in the same run. See BENCHMARKS.md for the method.

mod load;

use std::collections::BTreeMap;
use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use load::{Worker, run};
use testkit::{
    RedisServer, ResourceServer, Tokend, add_client, add_user, bearer, client_login, echo_request,
    password_login, tokend_bin,
};
use tokend::proto::demo::v1 as demo;
use tokend::proto::tokend::v1 as pb;
use tokend::store::{NewSession, RedisStore, SessionGrant, Store};
use tokend::tokens::RefreshToken;
use tokend::tokens::refresh::new_session_id;
use tokend_interceptor::Reason;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

type TokenClient = pb::token_service_client::TokenServiceClient<Channel>;
type EchoClient = demo::echo_service_client::EchoServiceClient<Channel>;

/// Calls in flight in the throughput phases.
const CONCURRENCY: usize = 200;
/// HTTP/2 connections they share.
const CONNECTIONS: usize = 8;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(6);
const PASSWORD: &str = "bench-password";
/// Sessions created directly in Redis for the memory figure.
const MEMORY_SESSIONS: usize = 20_000;

async fn channels(url: &str) -> Result<Vec<Channel>, Box<dyn Error>> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(Endpoint::from_shared(url.to_owned())?.connect().await?);
    }
    Ok(out)
}

struct Noop(HealthClient<Channel>);
impl Worker for Noop {
    async fn call(&mut self) -> bool {
        self.0.check(HealthCheckRequest::default()).await.is_ok()
    }
}

/// Refreshes its own session chain: every refresh token is single-use.
struct Refresher {
    client: TokenClient,
    token: String,
}
impl Worker for Refresher {
    async fn call(&mut self) -> bool {
        let request = pb::RefreshRequest {
            refresh_token: self.token.clone(),
        };
        match self.client.refresh(request).await {
            Ok(reply) => match reply.into_inner().tokens {
                Some(pair) => {
                    self.token = pair.refresh_token;
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }
}

struct Login {
    client: TokenClient,
    request: pb::LoginRequest,
}
impl Worker for Login {
    async fn call(&mut self) -> bool {
        self.client.login(self.request.clone()).await.is_ok()
    }
}

struct Echo {
    client: EchoClient,
    authorization: String,
}
impl Worker for Echo {
    async fn call(&mut self) -> bool {
        let request = echo_request("bench", Some(&self.authorization));
        self.client.echo(request).await.is_ok()
    }
}

struct Ping(EchoClient);
impl Worker for Ping {
    async fn call(&mut self) -> bool {
        self.0.ping(demo::PingRequest {}).await.is_ok()
    }
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// argon2id hashes per second per core, with tokend's parameters, measured
/// with every core hashing at once (argon2 is memory-bound: two concurrent
/// hashes are each slower than one alone, so this is the real limit).
fn argon2_rate_per_core(cores: usize) -> f64 {
    let measure = Duration::from_secs(3);
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            std::thread::spawn(move || {
                let _ = tokend::credentials::hash_now(b"warm up");
                let started = Instant::now();
                let mut hashes = 0u32;
                while started.elapsed() < measure {
                    let _ = tokend::credentials::hash_now(b"bench password");
                    hashes += 1;
                }
                f64::from(hashes) / started.elapsed().as_secs_f64()
            })
        })
        .collect();
    let total: f64 = threads.into_iter().filter_map(|t| t.join().ok()).sum();
    total / cores as f64
}

async fn used_memory(redis: &RedisServer) -> Result<i64, Box<dyn Error>> {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let line = info
        .lines()
        .find(|l| l.starts_with("used_memory:"))
        .ok_or("no used_memory in INFO")?;
    Ok(line["used_memory:".len()..].trim().parse()?)
}

/// Redis bytes per session, as tokend's Login writes them (the session hash
/// and its entry in the user's account record, one session per user),
/// optionally after refreshes.
async fn bytes_per_session(redis: &RedisServer, refreshes: usize) -> Result<f64, Box<dyn Error>> {
    let prefix = format!("mem{refreshes}");
    let store = Store::Redis(Box::new(
        RedisStore::connect(&redis.url(), &prefix, Duration::from_secs(5)).await?,
    ));
    // The users' accounts exist before their sessions (as with the CLI);
    // only what the sessions add is counted.
    let mut accounts = tokio::task::JoinSet::new();
    for chunk in 0..(MEMORY_SESSIONS / 500) {
        let store = store.clone();
        accounts.spawn(async move {
            let mut versions = Vec::with_capacity(500);
            for i in 0..500 {
                let account = tokend::store::NewAccount::User {
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                };
                let name = format!("user-{chunk}-{i}");
                let version = store.create_account(&name, account, "read write").await?;
                versions.push((name, version.unwrap_or(0)));
            }
            Ok::<_, tokend::store::StoreError>(versions)
        });
    }
    let mut versions = std::collections::HashMap::new();
    while let Some(done) = accounts.join_next().await {
        versions.extend(done??);
    }
    let versions = std::sync::Arc::new(versions);
    let before = used_memory(redis).await?;
    let now = tokend::now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..(MEMORY_SESSIONS / 500) {
        let store = store.clone();
        let versions = std::sync::Arc::clone(&versions);
        tasks.spawn(async move {
            for i in 0..500 {
                let sid = new_session_id();
                let mut token = RefreshToken::generate(&sid);
                let subject = format!("user-{chunk}-{i}");
                let grant = SessionGrant {
                    account_version: versions.get(&subject).copied().unwrap_or(0),
                    subject,
                    scope: "read write".into(),
                    audience: "internal".into(),
                    created_ms: now,
                    absolute_expiry_ms: now + 30 * 86_400_000,
                };
                let new = NewSession {
                    session_id: &sid,
                    grant: &grant,
                    client: "grpc-rust/0.14 tonic",
                    token: token.hash(),
                    idle_ttl_ms: 7 * 86_400_000,
                };
                store.create_session(&new).await?;
                for _ in 0..refreshes {
                    let next = RefreshToken::generate(&sid);
                    let rotate = tokend::store::Rotate {
                        session_id: &sid,
                        presented: token.hash(),
                        successor: next.hash(),
                        sealed_successor: token.seal_successor(&next),
                        now_ms: now,
                        idle_ttl_ms: 7 * 86_400_000,
                        grace_ms: 10_000,
                    };
                    store.rotate(&rotate).await?;
                    token = next;
                }
            }
            Ok::<_, tokend::store::StoreError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let after = used_memory(redis).await?;
    Ok((after - before) as f64 / MEMORY_SESSIONS as f64)
}

/// Criterion's mean estimate for `name`, in microseconds.
fn criterion_us(name: &str) -> Option<f64> {
    let path = testkit::workspace_dir()
        .join("target/criterion")
        .join(name)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(json["mean"]["point_estimate"].as_f64()? / 1000.0)
}

/// The no-op RPC measured by h2load, an independent client, if installed.
fn h2load_noop(addr: &str) -> Option<f64> {
    let frame = std::env::temp_dir().join("tokend-bench-health.bin");
    std::fs::write(&frame, [0u8; 5]).ok()?;
    let out = Command::new("h2load")
        .args(["-n", "200000", "-c", "8", "-m", "25", "-t", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(&frame)
        .arg(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("finished in"))?;
    let rps = line.split(',').nth(1)?.split_whitespace().next()?;
    rps.parse().ok()
}

fn row(table: &mut Vec<(String, String, String)>, name: &str, value: String, note: &str) {
    table.push((name.to_owned(), value, note.to_owned()));
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "tokend bench: {cores} cores, binaries in {}",
        tokend_bin().display()
    );
    let mut summary: BTreeMap<&str, f64> = BTreeMap::new();

    let redis = RedisServer::start();
    add_user(&redis, "bench-user", PASSWORD, &["read", "write"]);
    let client_secret = add_client(&redis, "bench-client", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(["--refresh-reuse-grace", "10s"])
        .env("RUST_LOG", "warn")
        .start();
    let tokend_pid = tokend.pid().ok_or("tokend pid")?;
    let resource = ResourceServer::for_tokend(&tokend, &["--watch-revocations"]);
    let tokend_channels = channels(&tokend.url()).await?;
    let resource_channels = channels(&resource.url()).await?;
    let token_client = |i: usize| TokenClient::new(tokend_channels[i % CONNECTIONS].clone());
    let echo_client = |i: usize| EchoClient::new(resource_channels[i % CONNECTIONS].clone());

    eprintln!("no-op: grpc.health.v1.Health/Check...");
    let noop = run(
        (0..CONCURRENCY)
            .map(|i| Noop(HealthClient::new(tokend_channels[i % CONNECTIONS].clone())))
            .collect(),
        WARMUP,
        MEASURE,
    )
    .await;

    eprintln!("logging in {CONCURRENCY} sessions for Refresh...");
    let mut sessions = tokio::task::JoinSet::new();
    for i in 0..CONCURRENCY {
        let mut client = token_client(i);
        sessions.spawn(async move {
            client
                .login(password_login("bench-user", PASSWORD))
                .await
                .map(|r| {
                    r.into_inner()
                        .tokens
                        .map(|t| t.refresh_token)
                        .unwrap_or_default()
                })
        });
    }
    let mut refreshers = Vec::new();
    while let Some(done) = sessions.join_next().await {
        let token = done??;
        refreshers.push(Refresher {
            client: token_client(refreshers.len()),
            token,
        });
    }

    eprintln!("Refresh...");
    let sampling = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        let started = Instant::now();
        while started.elapsed() < WARMUP + MEASURE + Duration::from_millis(500) {
            if let Some(rss) = rss_mib(tokend_pid) {
                peak = peak.max(rss);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    let refresh = run(refreshers, WARMUP, MEASURE).await;
    let tokend_rss = sampling.await?;

    eprintln!("client-credential Login...");
    let client_login_stats = run(
        (0..CONCURRENCY)
            .map(|i| Login {
                client: token_client(i),
                request: client_login("bench-client", &client_secret),
            })
            .collect(),
        WARMUP,
        MEASURE,
    )
    .await;

    // The limit is measured right before the phase it bounds, so both see
    // the machine in the same state.
    eprintln!("argon2id alone, every core hashing...");
    let argon2_per_core = tokio::task::spawn_blocking(move || argon2_rate_per_core(cores)).await?;
    summary.insert("argon2_hashes_per_s_per_core", argon2_per_core);

    eprintln!("password Login...");
    let password_login_stats = run(
        (0..4 * cores)
            .map(|i| Login {
                client: token_client(i),
                request: password_login("bench-user", PASSWORD),
            })
            .collect(),
        WARMUP,
        // ~125 logins/s: a longer window for a steadier figure.
        MEASURE + Duration::from_secs(4),
    )
    .await;

    eprintln!("Refresh under a password-login flood...");
    let mut refreshers = Vec::new();
    for i in 0..CONCURRENCY {
        let mut client = token_client(i);
        let pair = client
            .login(password_login("bench-user", PASSWORD))
            .await?
            .into_inner();
        refreshers.push(Refresher {
            client,
            token: pair.tokens.map(|t| t.refresh_token).unwrap_or_default(),
        });
    }
    let flood = tokio::spawn(run(
        (0..64)
            .map(|i| Login {
                client: token_client(i),
                request: password_login("bench-user", PASSWORD),
            })
            .collect::<Vec<_>>(),
        WARMUP,
        MEASURE,
    ));
    let refresh_under_flood = run(refreshers, WARMUP, MEASURE).await;
    let flood = flood.await?;

    eprintln!("interceptor: Echo (verified token) and Ping (public)...");
    let mut tokens = token_client(0);
    let pair = tokens
        .login(client_login("bench-client", &client_secret))
        .await?
        .into_inner();
    let authorization = bearer(&pair.tokens.ok_or("no tokens")?.access_token);
    let echo = run(
        (0..CONCURRENCY)
            .map(|i| Echo {
                client: echo_client(i),
                authorization: authorization.clone(),
            })
            .collect(),
        WARMUP,
        MEASURE,
    )
    .await;
    let ping = run(
        (0..CONCURRENCY).map(|i| Ping(echo_client(i))).collect(),
        WARMUP,
        MEASURE,
    )
    .await;

    eprintln!("revocation latency through the feed...");
    let mut latencies = Vec::new();
    let mut echo_probe = echo_client(0);
    for _ in 0..50 {
        let pair = tokens
            .login(password_login("bench-user", PASSWORD))
            .await?
            .into_inner()
            .tokens
            .ok_or("no tokens")?;
        let authorization = bearer(&pair.access_token);
        echo_probe
            .echo(echo_request("x", Some(&authorization)))
            .await?;
        tokens
            .revoke(pb::RevokeRequest {
                refresh_token: pair.refresh_token,
            })
            .await?;
        let started = Instant::now();
        loop {
            match echo_probe
                .echo(echo_request("x", Some(&authorization)))
                .await
            {
                Err(status) if Reason::of(&status) == Some(Reason::SessionRevoked) => break,
                _ if started.elapsed() > Duration::from_secs(5) => break,
                _ => {}
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    eprintln!("Redis memory per session ({MEMORY_SESSIONS} sessions)...");
    let fresh_bytes = bytes_per_session(&redis, 0).await?;
    let refreshed_bytes = bytes_per_session(&redis, 3).await?;

    let h2load = h2load_noop(&tokend.addr.to_string());

    // The figures.
    summary.insert("noop_rps", noop.rps());
    summary.insert("noop_p99_ms", noop.percentile_ms(99.0));
    summary.insert("refresh_rps", refresh.rps());
    summary.insert("refresh_p50_ms", refresh.percentile_ms(50.0));
    summary.insert("refresh_p99_ms", refresh.percentile_ms(99.0));
    summary.insert("refresh_errors", refresh.errors as f64);
    summary.insert("refresh_vs_noop", refresh.rps() / noop.rps());
    summary.insert("client_login_rps", client_login_stats.rps());
    summary.insert(
        "client_login_p99_ms",
        client_login_stats.percentile_ms(99.0),
    );
    summary.insert(
        "client_login_vs_refresh",
        client_login_stats.rps() / refresh.rps(),
    );
    summary.insert("password_login_rps", password_login_stats.rps());
    let argon2_limit = cores as f64 * argon2_per_core;
    summary.insert(
        "password_login_vs_argon2_limit",
        password_login_stats.rps() / argon2_limit,
    );
    summary.insert("refresh_rps_under_login_flood", refresh_under_flood.rps());
    summary.insert(
        "refresh_p99_under_login_flood_ms",
        refresh_under_flood.percentile_ms(99.0),
    );
    summary.insert("password_login_rps_during_flood", flood.rps());
    summary.insert("echo_rps", echo.rps());
    summary.insert("ping_rps", ping.rps());
    summary.insert("echo_vs_ping", echo.rps() / ping.rps());
    summary.insert("redis_bytes_per_session", fresh_bytes);
    summary.insert("redis_bytes_per_session_after_3_refreshes", refreshed_bytes);
    summary.insert("tokend_rss_mib", tokend_rss);
    summary.insert("revocation_latency_p50_ms", latencies[latencies.len() / 2]);
    summary.insert("revocation_latency_max_ms", latencies[latencies.len() - 1]);
    summary.insert("cores", cores as f64);
    if let Some(rps) = h2load {
        summary.insert("noop_rps_h2load", rps);
    }
    let cold = criterion_us("verify_cold");
    let raw = criterion_us("pasetors_verify");
    let cached = criterion_us("verify_cached");
    if let (Some(cold), Some(raw)) = (cold, raw) {
        summary.insert("verify_cold_us", cold);
        summary.insert("pasetors_verify_us", raw);
        summary.insert("verify_cold_vs_pasetors", cold / raw);
    }
    if let Some(cached) = cached {
        summary.insert("verify_cached_us", cached);
    }

    let f = |key: &str| {
        summary
            .get(key)
            .map_or("n/a".to_owned(), |v| format!("{v:.2}"))
    };
    let mut table = Vec::new();
    row(
        &mut table,
        "no-op Health/Check rps",
        f("noop_rps"),
        &format!("p99 {} ms", f("noop_p99_ms")),
    );
    row(
        &mut table,
        "Refresh rps",
        f("refresh_rps"),
        &format!(
            "p50 {} ms, p99 {} ms, {} errors",
            f("refresh_p50_ms"),
            f("refresh_p99_ms"),
            f("refresh_errors")
        ),
    );
    row(
        &mut table,
        "refresh_vs_noop",
        f("refresh_vs_noop"),
        "target >= 0.15",
    );
    row(
        &mut table,
        "client-credential Login rps",
        f("client_login_rps"),
        &format!("{} x Refresh; target >= 0.5", f("client_login_vs_refresh")),
    );
    row(
        &mut table,
        "password Login rps",
        f("password_login_rps"),
        &format!(
            "argon2 alone: {} /s/core x {cores} cores",
            f("argon2_hashes_per_s_per_core")
        ),
    );
    row(
        &mut table,
        "password_login_vs_argon2_limit",
        f("password_login_vs_argon2_limit"),
        "target >= 0.9",
    );
    row(
        &mut table,
        "Refresh p99 under login flood ms",
        f("refresh_p99_under_login_flood_ms"),
        &format!(
            "target <= 2 x {} ms; {} rps meanwhile",
            f("refresh_p99_ms"),
            f("refresh_rps_under_login_flood")
        ),
    );
    row(
        &mut table,
        "Echo (verified) rps",
        f("echo_rps"),
        &format!("Ping (public) {} rps", f("ping_rps")),
    );
    row(
        &mut table,
        "echo_vs_ping",
        f("echo_vs_ping"),
        "target >= 0.7",
    );
    row(
        &mut table,
        "verify cold us",
        f("verify_cold_us"),
        &format!("pasetors::public::verify {} us", f("pasetors_verify_us")),
    );
    row(
        &mut table,
        "verify_cold_vs_pasetors",
        f("verify_cold_vs_pasetors"),
        "target <= 1.05",
    );
    row(
        &mut table,
        "verify cached us",
        f("verify_cached_us"),
        "target well under 2 us",
    );
    row(
        &mut table,
        "Redis bytes per session",
        f("redis_bytes_per_session"),
        &format!(
            "{} after 3 refreshes; target <= 512",
            f("redis_bytes_per_session_after_3_refreshes")
        ),
    );
    row(
        &mut table,
        "tokend RSS MiB (Refresh load)",
        f("tokend_rss_mib"),
        "target <= 64",
    );
    row(
        &mut table,
        "revocation latency ms",
        f("revocation_latency_p50_ms"),
        &format!("median; worst {} ms", f("revocation_latency_max_ms")),
    );
    if h2load.is_some() {
        row(
            &mut table,
            "no-op rps by h2load",
            f("noop_rps_h2load"),
            "independent client",
        );
    }
    println!("\n{:<38} {:>12}  notes", "metric", "value");
    for (name, value, note) in &table {
        println!("{name:<38} {value:>12}  {note}");
    }

    let dir = testkit::workspace_dir().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}

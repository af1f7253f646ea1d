//! Measurements besides throughput: memory of processes and of Redis, the
//! argon2id limit, criterion's and h2load's figures.

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::RedisServer;
use tokend::store::{NewSession, RedisStore, SessionGrant, Store};
use tokend::tokens::RefreshToken;
use tokend::tokens::refresh::new_session_id;

/// Sessions created directly in Redis for the memory figure.
pub const MEMORY_SESSIONS: usize = 20_000;

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// argon2id hashes per second per core, with tokend's parameters, measured
/// with every core hashing at once (argon2 is memory-bound: two concurrent
/// hashes are each slower than one alone, so this is the real limit).
pub fn argon2_rate_per_core(cores: usize) -> f64 {
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

pub async fn used_memory(redis: &RedisServer) -> Result<i64, Box<dyn Error>> {
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
pub async fn bytes_per_session(
    redis: &RedisServer,
    refreshes: usize,
) -> Result<f64, Box<dyn Error>> {
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
    let now = tokend::clock::Clock::system().now_ms();
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
pub fn criterion_us(name: &str) -> Option<f64> {
    let path = testkit::workspace_dir()
        .join("target/criterion")
        .join(name)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(json["mean"]["point_estimate"].as_f64()? / 1000.0)
}

/// The no-op RPC measured by h2load, an independent client, if installed.
pub fn h2load_noop(addr: &str) -> Option<f64> {
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

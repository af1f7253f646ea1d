//! What every phase runs against: one redis-server, tokend (release build)
//! on it, the example resource server watching tokend's feed, HTTP/2
//! connections to both, and accounts.

use std::error::Error;
use std::time::Duration;

use testkit::{RedisServer, ResourceServer, Tokend, Watcher, add_client, password_login};
use tokend::store::{NewAccount, RedisConfig, RedisStore, RedisTarget, Store};
use tokend_interceptor::Reason;
use tonic::transport::{Channel, Endpoint};

use crate::workers::{EchoClient, Refresher, TokenClient, source};

/// HTTP/2 connections the callers of a phase share.
pub const CONNECTIONS: usize = 8;
/// The password of every bench user.
pub const PASSWORD: &str = "bench-password";
/// Flags of every tokend the bench starts: a production-like grace window,
/// and the loopback trusted as a proxy, so callers can be distinct sources
/// (`x-forwarded-for`) as they would be in production.
pub const TOKEND_ARGS: [&str; 4] = [
    "--refresh-reuse-grace",
    "10s",
    "--trusted-proxy",
    "127.0.0.1/32",
];

/// The processes and connections of a run.
pub struct Deployment {
    pub redis: RedisServer,
    pub tokend: Tokend,
    pub resource: ResourceServer,
    pub tokend_channels: Vec<Channel>,
    pub resource_channels: Vec<Channel>,
    pub client_secret: String,
    pub cores: usize,
}

impl Deployment {
    /// Starts everything.
    pub async fn start() -> Result<Deployment, Box<dyn Error>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let redis = RedisServer::start();
        let client_secret = add_client(&redis, "bench-client", &["read"]);
        let tokend = start_tokend(&redis, &[]);
        let resource = ResourceServer::watching(&tokend, &Watcher::in_redis(&redis), &[]);
        let tokend_channels = channels(&tokend.url()).await?;
        let resource_channels = channels(&resource.url()).await?;
        Ok(Deployment {
            redis,
            tokend,
            resource,
            tokend_channels,
            resource_channels,
            client_secret,
            cores,
        })
    }

    /// A tokend client on the `i`th shared connection.
    pub fn token_client(&self, i: usize) -> TokenClient {
        TokenClient::new(self.tokend_channels[i % CONNECTIONS].clone())
    }

    /// A resource-server client on the `i`th shared connection.
    pub fn echo_client(&self, i: usize) -> EchoClient {
        EchoClient::new(self.resource_channels[i % CONNECTIONS].clone())
    }
}

/// Starts a tokend binary (release build) on `redis` with the bench flags
/// and `extra`; logs warnings only.
pub fn start_tokend(redis: &RedisServer, extra: &[&str]) -> Tokend {
    Tokend::builder()
        .redis(redis)
        .args(TOKEND_ARGS)
        .args(extra.iter().copied())
        .env("RUST_LOG", "warn")
        .start()
}

/// `CONNECTIONS` HTTP/2 connections to `url`.
pub async fn channels(url: &str) -> Result<Vec<Channel>, Box<dyn Error>> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(Endpoint::from_shared(url.to_owned())?.connect().await?);
    }
    Ok(out)
}

/// Creates the users `PREFIX-0` .. `PREFIX-(count-1)` with [`PASSWORD`],
/// straight through the store (one argon2id hash for all), and returns
/// their names.
pub async fn users(
    redis: &RedisServer,
    prefix: &str,
    count: usize,
) -> Result<Vec<String>, Box<dyn Error>> {
    users_on(RedisTarget::Node(redis.url()), prefix, count).await
}

/// Like [`users`], on any deployment (a cluster, sentinels).
pub async fn users_on(
    target: RedisTarget,
    prefix: &str,
    count: usize,
) -> Result<Vec<String>, Box<dyn Error>> {
    let config = RedisConfig {
        timeout: Duration::from_secs(5),
        ..RedisConfig::new(target)
    };
    let store = Store::Redis(Box::new(RedisStore::open(&config).await?));
    let hash = tokend::credentials::hash_now(PASSWORD.as_bytes())?;
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let account = NewAccount::User {
            password_hash: &hash,
        };
        store.create_account(&name, account, "read write").await?;
        names.push(name);
    }
    Ok(names)
}

/// Logs in one session per user (from a source of its own, a few at a time
/// as real clients arrive, retrying after `OVERLOADED` as told) and returns
/// a refresher for each.
pub async fn refreshers(
    client: impl Fn(usize) -> TokenClient,
    users: &[String],
) -> Result<Vec<Refresher>, Box<dyn Error>> {
    let mut out = Vec::with_capacity(users.len());
    for (chunk, batch) in users.chunks(8).enumerate() {
        let mut logins = tokio::task::JoinSet::new();
        for (j, user) in batch.iter().enumerate() {
            let i = chunk * 8 + j;
            let mut client = client(i);
            let user = user.clone();
            logins.spawn(async move {
                loop {
                    let mut request = tonic::Request::new(password_login(&user, PASSWORD));
                    if let Ok(value) = source(i).parse() {
                        request.metadata_mut().insert("x-forwarded-for", value);
                    }
                    match client.login(request).await {
                        Ok(reply) => {
                            let token = reply.into_inner().tokens.map(|t| t.refresh_token);
                            return Ok::<_, tonic::Status>((client, token));
                        }
                        Err(status) => match Reason::retry_delay(&status) {
                            Some(delay) => tokio::time::sleep(delay).await,
                            None => return Err(status),
                        },
                    }
                }
            });
        }
        while let Some(done) = logins.join_next().await {
            let (client, token) = done??;
            out.push(Refresher {
                client,
                token: token.ok_or("no refresh token")?,
            });
        }
    }
    Ok(out)
}

/// Refresh rps on two tokends (their channels, named for the log and the
/// users' names), alternating, two rounds each, averaged: a ratio of the two
/// is measured under the same conditions.
pub async fn alternating_refresh(
    dep: &Deployment,
    sides: [(&str, &[Channel]); 2],
) -> Result<[f64; 2], Box<dyn Error>> {
    let mut rates = [0.0f64; 2];
    for round in 0..2 {
        for (i, (name, channels)) in sides.iter().enumerate() {
            eprintln!("Refresh: {name} (round {})...", round + 1);
            let client = |i: usize| TokenClient::new(channels[i % CONNECTIONS].clone());
            let users = users(&dep.redis, &format!("{name}-{round}"), crate::CONCURRENCY).await?;
            let refreshers = refreshers(client, &users).await?;
            rates[i] += crate::load::run(refreshers, crate::WARMUP, crate::MEASURE)
                .await
                .rps();
        }
    }
    Ok(rates.map(|total| total / 2.0))
}

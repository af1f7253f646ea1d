//! tokend in the test's own process: [`spawn_app`] serves on a free port
//! with a clock the test moves, so lifetimes, grace windows and feed
//! retention are tested by advancing time instead of sleeping. Ready when
//! it returns: the store is open and the listener bound; nothing is read
//! from logs.

use std::net::SocketAddr;
use std::time::Duration;

use testkit_redis::RedisServer;
use tokend::clock::ManualClock;
use tokend::config::{Config, StoreConfig};
use tokend::proto::tokend::v1 as pb;
use tokend::proto::tokend::v1::token_service_client::TokenServiceClient;
use tokend::server::ServeError;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A tokend serving in process; stopped when dropped.
#[derive(Debug)]
pub struct TestApp {
    /// Where it listens (loopback, a free port).
    pub addr: SocketAddr,
    /// Its clock when it stands still until advanced (`spawn_app`); `None`
    /// on the system clock (`spawn_app_args`).
    clock: Option<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// Starts tokend on `store` with the demo accounts (`--dev`: user `demo`,
/// password `demo-password`; client `demo-client`) on a manual clock.
pub async fn spawn_app(store: StoreConfig) -> TestApp {
    spawn_app_with(store, |_| {}).await
}

/// Like [`spawn_app`], with the configuration adjusted by `configure` first.
pub async fn spawn_app_with(store: StoreConfig, configure: impl FnOnce(&mut Config)) -> TestApp {
    let clock = ManualClock::starting_now();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let mut config = Config::new(listener.local_addr().expect("bound"), store);
    config.dev = matches!(config.store, StoreConfig::Memory);
    config.clock = clock.clock();
    config.password_hash_threads = 2;
    // Strict reuse detection unless the test sets a window: most tests
    // present a consumed token on purpose.
    config.lifetimes.reuse_grace = Duration::ZERO;
    configure(&mut config);
    serve(config, listener, Some(clock)).await
}

/// tokend in process as `tokend serve ARGS...` would run (same flags, the
/// system clock), on a free loopback port whatever `--listen` says.
pub async fn spawn_app_args(args: &[&str]) -> TestApp {
    let mut config = tokend::cli::config_from_args(args).expect("valid serve flags");
    // Strict reuse detection unless the flags set a window (as the process
    // builder does).
    if !args.iter().any(|a| a.starts_with("--refresh-reuse-grace")) {
        config.lifetimes.reuse_grace = Duration::ZERO;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    config.listen = listener.local_addr().expect("bound");
    serve(config, listener, None).await
}

/// Sets tokend up on `listener` and serves it on a task until the app is
/// shut down or dropped.
async fn serve(config: Config, listener: TcpListener, clock: Option<ManualClock>) -> TestApp {
    let server = tokend::server::start(config, listener)
        .await
        .expect("tokend starts");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        clock,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A Redis server with the user `alice` (password `pw`, scope read), tokend
/// on it in process with `args`, and a connected client.
pub async fn with_alice_in_process(
    args: &[&str],
) -> (RedisServer, TestApp, TokenServiceClient<Channel>) {
    let redis = RedisServer::start();
    crate::add_user(&redis, "alice", "pw", &["read"]);
    let url = redis.url();
    let mut all = vec!["--redis-url", url.as_str()];
    all.extend_from_slice(args);
    let app = spawn_app_args(&all).await;
    let client = app.client().await;
    (redis, app, client)
}

impl TestApp {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected client.
    pub async fn client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(
            crate::channel(&self.url())
                .await
                .expect("connect to tokend"),
        )
    }

    /// Its manual clock.
    ///
    /// # Panics
    /// On the system clock (`spawn_app_args`): time there is real.
    pub fn clock(&self) -> &ManualClock {
        self.clock
            .as_ref()
            .expect("a manual clock (spawn_app, not spawn_app_args)")
    }

    /// Moves tokend's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock().advance(by);
    }

    /// Stops serving, lets in-flight calls finish, and returns how it ended.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("the server task ends without panicking"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Logs in as the demo user of `spawn_app` (memory store).
pub async fn demo_login(client: &mut TokenServiceClient<Channel>) -> pb::TokenPair {
    crate::login(client, "demo", "demo-password").await
}

//! Real parts for tokend's integration tests and benchmarks:
//! `redis-server` processes on free ports, the real `tokend` binary and the
//! example resource server on random ports, and clients for them.
//! Everything is stopped when dropped.
//!
//! Binaries are found next to the running executable (`target/<profile>/`),
//! so tests use debug builds and `make bench` release builds.

// Test infrastructure: a failed expectation here is a failed test or
// benchmark run, so unwrap, expect and panic are the right tools.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod pki;

pub use app::{TestApp, demo_login, spawn_app, spawn_app_with};

/// The example resource server's demo.v1 client.
#[allow(missing_docs, clippy::all)]
pub mod demo {
    /// Version 1 of the demo API.
    pub mod v1 {
        tonic::include_proto!("demo.v1");
    }
}

pub use testkit_redis::{
    Deployment, RedisCluster, RedisSentinel, RedisServer, free_port, wait_until,
};

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tonic::transport::Channel;

pub use pb::token_service_client::TokenServiceClient;

/// How long a process may take to become ready before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `target/<profile>`: where the running test or bench executable lives.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.parent().expect("target directory").to_path_buf()
    } else {
        dir
    }
}

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The tokend binary of the same build profile.
pub fn tokend_bin() -> PathBuf {
    target_dir().join("tokend")
}

/// How to start a tokend.
pub struct TokendBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    listen: String,
    binary: PathBuf,
    open_files: Option<u64>,
}

impl TokendBuilder {
    /// Adds command-line arguments after `serve`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Uses `redis` (a node, a cluster or a primary under sentinels) as
    /// the store.
    pub fn redis(self, redis: &impl Deployment) -> Self {
        self.args(redis.tokend_args())
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Listens on this address instead of a random port.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.into();
        self
    }

    /// Runs this tokend binary instead of the one of this build profile.
    pub fn binary(mut self, path: PathBuf) -> Self {
        self.binary = path;
        self
    }

    /// Starts it with this open-files limit, soft and hard, as on a host
    /// with the common 1,024 (it cannot raise it).
    pub fn open_files_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Serves TLS with `server`'s certificate (`--tls-cert`, `--tls-key`).
    pub fn tls(self, server: &pki::CertFiles) -> Self {
        self.args([
            "--tls-cert",
            server.cert_arg(),
            "--tls-key",
            server.key_arg(),
        ])
    }

    /// Starts tokend and waits until it prints its address.
    pub fn start(self) -> Tokend {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(["--listen", &self.listen])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("TOKEND_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen log"));
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        if let Some(limit) = self.open_files {
            limit_open_files(&mut command, limit);
        }
        let (child, addr, stdout_lines) = spawn_until_ready(command, "tokend listening on ", &log);
        Tokend {
            child: Some(child),
            addr,
            stdout_lines,
            log,
        }
    }
}

/// Makes `command` run with an open-files limit of `limit` (soft and hard).
fn limit_open_files(command: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    #[allow(unsafe_code)] // the SAFETY note above
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Raises this process's open-files soft limit to its hard limit (tests
/// that open thousands of connections).
pub fn raise_own_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on this process's limits.
    #[allow(unsafe_code)] // the SAFETY note above
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A channel to `url` (https) trusting `ca`, presenting `identity` if given.
pub async fn tls_channel(
    url: &str,
    ca: &Path,
    identity: Option<&pki::CertFiles>,
) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("CA")));
    if let Some(id) = identity {
        config = config.identity(Identity::from_pem(
            std::fs::read(&id.cert).expect("cert"),
            std::fs::read(&id.key).expect("key"),
        ));
    }
    Endpoint::from_shared(url.to_owned())?
        .tls_config(config)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Spawns `command` (stdout piped) and waits for the line `<ready>ADDR`;
/// returns the child, the address and the lines printed before it.
fn spawn_until_ready(
    mut command: Command,
    ready: &str,
    log: &tempfile::NamedTempFile,
) -> (Child, SocketAddr, Vec<String>) {
    let mut child = command.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout_lines = Vec::new();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = line.strip_prefix(ready) {
                    let addr = addr.trim().parse().expect("address");
                    return (child, addr, stdout_lines);
                }
                stdout_lines.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let logs = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("process did not become ready:\n{logs}");
            }
        }
    }
}

/// A running tokend process.
pub struct Tokend {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it printed on stdout before it was ready (e.g. `--dev` credentials).
    pub stdout_lines: Vec<String>,
    log: tempfile::NamedTempFile,
}

impl Tokend {
    /// Configures a tokend to start.
    pub fn builder() -> TokendBuilder {
        TokendBuilder {
            args: Vec::new(),
            envs: Vec::new(),
            listen: "127.0.0.1:0".into(),
            binary: tokend_bin(),
            open_files: None,
        }
    }

    /// `http://ADDR`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://ADDR`, for clients of a TLS tokend.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A connected client.
    pub async fn client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::connect(self.url())
            .await
            .expect("connect to tokend")
    }

    /// A connected client whose calls come from the loopback address `ip`
    /// (127.0.0.x): a distinct source, as far as login throttling sees.
    pub async fn client_from(&self, ip: std::net::IpAddr) -> TokenServiceClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .local_address(Some(ip))
            .connect()
            .await
            .expect("connect to tokend");
        TokenServiceClient::new(channel)
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: signalling a child process we own.
        #[allow(unsafe_code)] // the SAFETY note above
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        child.wait().expect("wait for tokend")
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_terminate(&self) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).expect("pid");
            // SAFETY: signalling a child process we own.
            #[allow(unsafe_code)] // the SAFETY note above
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }

    /// Waits for the process to exit, on a blocking thread, so the caller's
    /// runtime keeps driving its connections (a draining server waits for
    /// its clients to hang up).
    pub async fn exited(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait().expect("wait"))
            .await
            .expect("waiter")
    }

    /// Kills it at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tokend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the tokend binary with `args` to completion, feeding `stdin`.
pub fn tokend_command(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(tokend_bin())
        .args(args)
        .env_remove("TOKEND_REDIS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokend");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("tokend output")
}

/// Generates a signing key file `name` in `dir` with `tokend keys
/// generate`; returns its path and the printed k4.public line. Replicas
/// given the same file issue tokens the same verifiers accept.
pub fn signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let path_arg = path.to_str().expect("UTF-8 temp path");
    let out = tokend_command(&["keys", "generate", "--out", path_arg], None);
    assert!(out.status.success(), "keys generate failed");
    let public = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .next()
        .expect("a k4.public line")
        .to_owned();
    (path, public)
}

/// Runs an admin command (`tokend ARGS` plus the flags naming `redis`),
/// insists it succeeds, and returns what it printed (stdout, then stderr).
#[track_caller]
pub fn admin(redis: &impl Deployment, args: &[&str], stdin: Option<&str>) -> String {
    let redis_args = redis.tokend_args();
    let mut all = args.to_vec();
    all.extend(redis_args.iter().map(String::as_str));
    let out = tokend_command(&all, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tokend {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// Runs an admin command like [`admin`], insists it fails, and returns its
/// stderr.
#[track_caller]
pub fn admin_fails(redis: &impl Deployment, args: &[&str], stdin: Option<&str>) -> String {
    let redis_args = redis.tokend_args();
    let mut all = args.to_vec();
    all.extend(redis_args.iter().map(String::as_str));
    let out = tokend_command(&all, stdin);
    assert!(!out.status.success(), "tokend {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Creates a user through the CLI, as an operator would.
pub fn add_user(redis: &impl Deployment, name: &str, password: &str, scopes: &[&str]) {
    let redis_args = redis.tokend_args();
    let mut args = vec!["user", "add", name, "--password-stdin"];
    args.extend(redis_args.iter().map(String::as_str));
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let out = tokend_command(&args, Some(&format!("{password}\n")));
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a service client through the CLI and returns its secret.
pub fn add_client(redis: &impl Deployment, id: &str, scopes: &[&str]) -> String {
    let redis_args = redis.tokend_args();
    let mut args = vec!["client", "add", id];
    args.extend(redis_args.iter().map(String::as_str));
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let out = tokend_command(&args, None);
    assert!(
        out.status.success(),
        "client add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A password-login request.
pub fn password_login(username: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        credentials: Some(pb::login_request::Credentials::Password(
            pb::PasswordCredentials {
                username: username.into(),
                password: password.into(),
            },
        )),
        audience: String::new(),
        scopes: Vec::new(),
    }
}

/// A client-credentials login request.
pub fn client_login(client_id: &str, secret: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        credentials: Some(pb::login_request::Credentials::Client(
            pb::ClientCredentials {
                client_id: client_id.into(),
                client_secret: secret.into(),
            },
        )),
        audience: String::new(),
        scopes: Vec::new(),
    }
}

/// Logs in with a password and returns the token pair.
pub async fn login(
    client: &mut TokenServiceClient<Channel>,
    username: &str,
    password: &str,
) -> pb::TokenPair {
    client
        .login(password_login(username, password))
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
}

/// tokend's issuer name in tests: the audience its session RPCs need.
pub const TOKEND_AUDIENCE: &str = "tokend";

/// Logs in with a password, asking for a token meant for tokend itself (for
/// ListSessions, RevokeSession, RevokeAllSessions).
pub async fn login_for_tokend(
    client: &mut TokenServiceClient<Channel>,
    username: &str,
    password: &str,
) -> pb::TokenPair {
    let mut request = password_login(username, password);
    request.audience = TOKEND_AUDIENCE.into();
    client
        .login(request)
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
}

/// Refreshes and returns the new pair or the error status.
pub async fn refresh(
    client: &mut TokenServiceClient<Channel>,
    refresh_token: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    client
        .refresh(pb::RefreshRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

/// Revokes a refresh token.
pub async fn revoke(
    client: &mut TokenServiceClient<Channel>,
    refresh_token: &str,
) -> Result<(), tonic::Status> {
    client
        .revoke(pb::RevokeRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|_| ())
}

/// The tokend reason of an error, for assertions.
pub fn reason(status: &tonic::Status) -> Option<Reason> {
    Reason::of(status)
}

/// Asserts that `result` failed with `reason` (and its status code).
#[track_caller]
pub fn assert_reason<T: std::fmt::Debug>(result: Result<T, tonic::Status>, expected: Reason) {
    match result {
        Ok(value) => panic!("expected {expected}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(reason(&status), Some(expected), "status: {status:?}");
            assert_eq!(status.code(), expected.code(), "status: {status:?}");
        }
    }
}

/// A tool installed by `make test` into `.venv/bin`, else from `PATH`.
pub fn tool(name: &str) -> PathBuf {
    let venv = workspace_dir().join(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(name)
}

/// Every key in Redis with its type.
pub async fn all_keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(conn)
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

/// The raw bytes of every value in Redis, for looking for secrets.
pub async fn dump_values(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    for key in all_keys(conn).await {
        values.push(key.clone().into_bytes());
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("TYPE");
        match kind.as_str() {
            "string" => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(conn)
                    .await
                    .expect("GET");
                values.push(v);
            }
            "hash" => {
                let v: Vec<Vec<u8>> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(conn)
                    .await
                    .expect("HGETALL");
                values.extend(v);
            }
            "zset" => {
                let v: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(conn)
                    .await
                    .expect("ZRANGE");
                values.extend(v);
            }
            "stream" => {
                let v: redis::Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(conn)
                    .await
                    .expect("XRANGE");
                values.push(format!("{v:?}").into_bytes());
            }
            other => panic!("unexpected key type {other} for {key}"),
        }
    }
    values
}

/// Whether `needle` occurs in any of `haystack`.
pub fn contains_bytes(haystack: &[Vec<u8>], needle: &[u8]) -> bool {
    haystack
        .iter()
        .any(|h| h.windows(needle.len()).any(|w| w == needle))
}

/// The example resource server binary of the same profile, built if
/// missing or stale.
pub fn resource_server_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let target = target_dir();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        // The workspace's examples, as `cargo test --workspace` builds them:
        // the same dependency features, so this finds them up to date
        // (building the example of one package alone resolves features
        // differently and rebuilds dozens of crates).
        command.args(["build", "-q", "--workspace", "--examples"]);
        if target.ends_with("release") {
            command.arg("--release");
        }
        let status = command
            .current_dir(workspace_dir())
            .status()
            .expect("build the example resource server");
        assert!(
            status.success(),
            "building the example resource server failed"
        );
    });
    target.join("examples/resource_server")
}

/// A running example resource server (`demo.v1.EchoService`).
pub struct ResourceServer {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl ResourceServer {
    /// Starts it with `args` (after `--listen 127.0.0.1:0`).
    pub fn start(args: &[&str]) -> ResourceServer {
        ResourceServer::start_with_env(args, &[])
    }

    /// Starts it with `args` and environment variables.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> ResourceServer {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(resource_server_bin());
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen log"));
        let (child, addr, _) = spawn_until_ready(command, "resource server listening on ", &log);
        ResourceServer {
            child: Some(child),
            addr,
            log,
        }
    }

    /// Starts it verifying with keys from `tokend`.
    pub fn for_tokend(tokend: &Tokend, extra: &[&str]) -> ResourceServer {
        let url = tokend.url();
        let mut args = vec!["--tokend", url.as_str()];
        args.extend_from_slice(extra);
        ResourceServer::start(&args)
    }

    /// Starts it verifying with keys from `tokend` and following its
    /// revocation feed as `watcher`, with `extra` arguments.
    pub fn watching(tokend: &Tokend, watcher: &Watcher, extra: &[&str]) -> ResourceServer {
        let url = tokend.url();
        let mut args = vec![
            "--tokend",
            url.as_str(),
            "--watch-revocations",
            "--client-id",
            watcher.id.as_str(),
        ];
        args.extend_from_slice(extra);
        ResourceServer::start_with_env(&args, &[("TOKEND_CLIENT_SECRET", watcher.secret.as_str())])
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://ADDR`, when it serves TLS.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A plain (token-less) client.
    pub async fn client(&self) -> EchoClient {
        EchoClient::connect(self.url())
            .await
            .expect("connect to the resource server")
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for ResourceServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A service client allowed to watch the revocation feed (scope
/// `tokend.revocations`).
#[derive(Debug, Clone)]
pub struct Watcher {
    /// Its client id.
    pub id: String,
    /// Its secret.
    pub secret: String,
}

impl Watcher {
    /// An access token to watch the feed with, from `client`'s tokend.
    pub async fn token(&self, client: &mut TokenServiceClient<Channel>) -> String {
        client
            .login(client_login(&self.id, &self.secret))
            .await
            .expect("watcher login")
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token
    }

    /// Creates a new one in `redis`.
    pub fn in_redis(redis: &impl Deployment) -> Watcher {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("feed-watcher-{n}");
        let secret = add_client(redis, &id, &["tokend.revocations"]);
        Watcher { id, secret }
    }

    /// The demo client of a `--dev` tokend, which may watch the feed.
    pub fn demo(tokend: &Tokend) -> Watcher {
        Watcher {
            id: "demo-client".into(),
            secret: tokend
                .demo_client_secret()
                .expect("--dev prints the demo client"),
        }
    }
}

/// The demo.v1 client.
pub type EchoClient = crate::demo::v1::echo_service_client::EchoServiceClient<Channel>;

/// An Echo request carrying `authorization` metadata (if any).
pub fn echo_request(
    message: &str,
    authorization: Option<&str>,
) -> tonic::Request<crate::demo::v1::EchoRequest> {
    let mut request = tonic::Request::new(crate::demo::v1::EchoRequest {
        message: message.into(),
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("metadata value"));
    }
    request
}

/// Calls Echo with `authorization` until it is refused with `reason`;
/// returns how long that took, or `None` after `limit`.
pub async fn time_until_refused(
    echo: &mut EchoClient,
    authorization: &str,
    reason: Reason,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Err(status) = echo.echo(echo_request("x", Some(authorization))).await
            && Reason::of(&status) == Some(reason)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// A loopback address of its own for the `n`th simulated source (in
/// 127.1.0.0/16): Linux routes all of 127/8 to the loopback interface.
pub fn loopback_source(n: u16) -> std::net::IpAddr {
    let third = u8::try_from(n / 250).unwrap_or(u8::MAX);
    let fourth = u8::try_from(n % 250).unwrap_or(0) + 1;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 1, third, fourth))
}

/// `message` with `authorization: Bearer <token>` metadata.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        bearer(token).parse().expect("metadata value"),
    );
    request
}

/// Writes `count` sessions of `user` straight into Redis in tokend's key
/// layout (session hashes with their TTL, entries in the user's session
/// index), as a long-lived account would have accumulated them, much faster
/// than logging in `count` times. Returns their ids.
pub async fn write_sessions(redis: &RedisServer, user: &str, count: usize) -> Vec<String> {
    let mut conn = redis.connection().await;
    let account = format!("tokend:user:{{{user}}}");
    let version: Option<i64> = redis::cmd("HGET")
        .arg(&account)
        .arg("ep")
        .query_async(&mut conn)
        .await
        .expect("HGET ep");
    let version = version.unwrap_or(0);
    let now = tokend::clock::Clock::system().now_ms();
    let absolute = now + 30 * 86_400_000;
    let mut ids = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(2_000) {
        let mut pipe = redis::pipe();
        let mut index = redis::cmd("HSET");
        index.arg(&account);
        for i in 0..2_000.min(count - chunk * 2_000) {
            let sid = format!("b{chunk:05}x{i:015}");
            let key = format!("tokend:session:{{{sid}}}");
            pipe.cmd("HSET")
                .arg(&key)
                .arg("sub")
                .arg(user)
                .arg("scp")
                .arg("read")
                .arg("aud")
                .arg("internal")
                .arg("ct")
                .arg(now)
                .arg("ax")
                .arg(absolute)
                .arg("av")
                .arg(version)
                .arg("cur")
                .arg([7u8; 32].as_slice())
                .arg("ua")
                .arg("bulk/1.0")
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(7 * 86_400_000)
                .ignore();
            index.arg(format!("s:{sid}")).arg(absolute);
            ids.push(sid);
        }
        pipe.add_command(index).ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .expect("write sessions");
    }
    ids
}

/// How many sessions the user's index in Redis lists.
pub async fn indexed_sessions(redis: &RedisServer, user: &str) -> usize {
    let mut conn = redis.connection().await;
    let key = format!("tokend:user:{{{user}}}");
    // The account's own fields are the only ones not named `s:SID`.
    let (len, own): (usize, Vec<Option<String>>) = redis::pipe()
        .cmd("HLEN")
        .arg(&key)
        .cmd("HMGET")
        .arg(&key)
        .arg(&["ph", "sd", "scope", "disabled", "dl", "ep"])
        .query_async(&mut conn)
        .await
        .expect("HLEN");
    len - own.iter().flatten().count()
}

/// CPU time (user + system) a process has used so far, from `/proc`.
pub fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .expect("stat format");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("clock ticks");
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)] // the SAFETY note above
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).unwrap_or(100).max(1);
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / per_second)
}

/// Sends `body` as the raw bytes of a unary call's request message to
/// `path` (e.g. `/tokend.v1.TokenService/Login`), as a broken or hostile
/// client would, and returns how the call ended.
pub async fn raw_unary(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, raw::RawCodec)
        .await
        .map(|_| ())
}

/// A codec that sends bytes as they are and ignores the answer's body.
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    pub(crate) struct RawCodec;
    pub(crate) struct RawEncoder;
    pub(crate) struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = ();
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;

        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }

        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;

        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = ();
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
            buf.advance(buf.remaining());
            Ok(Some(()))
        }
    }
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A fresh Redis with the user `alice` (password `pw`, scope `read`), a
/// tokend on it started with `args`, and a client: the usual test setup.
pub async fn with_alice(args: &[&str]) -> (RedisServer, Tokend, TokenServiceClient<Channel>) {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    let tokend = Tokend::builder()
        .redis(&redis)
        .args(args.iter().copied())
        .start();
    let client = tokend.client().await;
    (redis, tokend, client)
}

impl Tokend {
    /// The demo client's secret, as `serve --dev` printed it.
    pub fn demo_client_secret(&self) -> Option<String> {
        self.stdout_lines
            .iter()
            .find_map(|l| l.split("client_secret=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    }
}

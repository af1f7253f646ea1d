//! The example resource server as a child process, built when stale, and
//! the service client that lets it watch the revocation feed.

use super::*;

/// The example resource server binary of the same profile, built if
/// missing or stale.
pub fn resource_server_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let target = target_dir();
    let binary = target.join("examples/resource_server");
    BUILD.call_once(|| {
        // `cargo test --workspace` (make test) builds the examples with the
        // test's dependency features; a build of its own here would resolve
        // build-dependency features differently and rebuild the crate (30 s
        // per test run). So build only when the binary is missing or older
        // than the crate's sources (a single test run after an edit).
        if is_newer_than(&binary, &["interceptor", "Cargo.lock", "Cargo.toml"]) {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
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
    binary
}

/// A running example resource server (`demo.v1.EchoService`).
pub struct ResourceServer {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    later: StdoutLines,
    log: tempfile::NamedTempFile,
}

impl ResourceServer {
    /// Starts it with `args` (after `--listen 127.0.0.1:0`).
    pub fn start(args: &[&str]) -> ResourceServer {
        ResourceServer::start_with_env(args, &[])
    }

    /// Starts it with `args` and environment variables.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> ResourceServer {
        ResourceServer::start_in_group(args, envs, None)
    }

    /// Like [`start_with_env`](Self::start_with_env), with this group id
    /// if given (see [`TokendBuilder::group`]: a firewall rule on the
    /// group cuts its connections alone).
    pub fn start_in_group(
        args: &[&str],
        envs: &[(&str, &str)],
        group: Option<u32>,
    ) -> ResourceServer {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(resource_server_bin());
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen log"));
        if let Some(gid) = group {
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let (child, addr, _, later) =
            spawn_until_ready(command, "resource server listening on ", &log);
        ResourceServer {
            child: Some(child),
            addr,
            later,
            log,
        }
    }

    /// Waits until it says it is ready (its health SERVING): it holds keys
    /// and, when watching, the revocation feed's history.
    pub fn ready(self) -> ResourceServer {
        if self
            .later
            .wait_for("resource server ready", READY_TIMEOUT)
            .is_none()
        {
            let logs = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            panic!("the resource server never became ready:\n{logs}");
        }
        self
    }

    /// Starts it verifying with keys from `tokend`.
    pub fn for_tokend(tokend: &Tokend, extra: &[&str]) -> ResourceServer {
        let url = tokend.url();
        let mut args = vec!["--tokend", url.as_str()];
        args.extend_from_slice(extra);
        ResourceServer::start(&args).ready()
    }

    /// Starts it verifying with keys from `tokend` and following its
    /// revocation feed as `watcher`, with `extra` arguments; returns once it
    /// is ready (keys and the feed's history in).
    pub fn watching(tokend: &Tokend, watcher: &Watcher, extra: &[&str]) -> ResourceServer {
        ResourceServer::watching_unready(tokend, watcher, extra).ready()
    }

    /// Like [`watching`](Self::watching), returning as soon as it listens.
    pub fn watching_unready(tokend: &Tokend, watcher: &Watcher, extra: &[&str]) -> ResourceServer {
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
        EchoClient::new(
            crate::channel(&self.url())
                .await
                .expect("connect to the resource server"),
        )
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits (up to 30 s) until it has logged `line` at least `times` times:
    /// an event to wait for (a key sync done or failed) instead of a sleep.
    pub async fn logged(&self, line: &str, times: usize) {
        let what = format!("{times} times {line:?} in the resource server's log");
        eventually(&what, Duration::from_secs(30), || {
            let count = self.logs().matches(line).count();
            async move { count >= times }
        })
        .await;
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
    /// An access token to watch the feed with (for tokend's own audience),
    /// from `client`'s tokend.
    pub async fn token(&self, client: &mut TokenServiceClient<Channel>) -> String {
        let mut request = client_login(&self.id, &self.secret);
        request.audience = TOKEND_AUDIENCE.into();
        client
            .login(request)
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

//! `tokend` as a child process: how to start one ([`TokendBuilder`]), the
//! running process ([`Tokend`]), and fixtures built on it.

use super::*;

/// `serve` flags that turn login throttling off, for runs that log one
/// account in again and again (also while it is disabled) on purpose.
pub const LOGIN_THROTTLING_OFF: [&str; 6] = [
    "--throttle-account-source",
    "0",
    "--throttle-source",
    "0",
    "--throttle-account",
    "0",
];

/// How to start a tokend.
pub struct TokendBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    listen: String,
    binary: PathBuf,
    open_files: Option<u64>,
    group: Option<u32>,
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

    /// Runs with the shipped `--refresh-reuse-grace` instead of the strict
    /// `0s` the tests use by default.
    pub fn shipped_reuse_grace(mut self) -> Self {
        self.envs
            .retain(|(key, _)| key != "TOKEND_REFRESH_REUSE_GRACE");
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

    /// Runs it with this group id (the tests run as root, so the uid and
    /// with it every file stay the same): a firewall rule matching the
    /// group (`iptables -m owner --gid-owner`) then cuts this process's
    /// connections alone, as a network partition would.
    pub fn group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
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
        if let Some(gid) = self.group {
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let (child, addr, stdout_lines, later) =
            spawn_until_ready(command, "tokend listening on ", &log);
        Tokend {
            child: Some(child),
            addr,
            stdout_lines,
            _later: later,
            log,
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
    _later: StdoutLines,
    log: tempfile::NamedTempFile,
}

impl Tokend {
    /// Configures a tokend to start.
    pub fn builder() -> TokendBuilder {
        TokendBuilder {
            args: Vec::new(),
            // Strict reuse detection unless a test asks otherwise (a flag
            // wins over the variable; `shipped_reuse_grace` removes it):
            // most tests present a consumed token on purpose.
            envs: vec![("TOKEND_REFRESH_REUSE_GRACE".into(), "0s".into())],
            listen: "127.0.0.1:0".into(),
            binary: tokend_bin(),
            open_files: None,
            group: None,
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
        TokenServiceClient::new(
            crate::channel(&self.url())
                .await
                .expect("connect to tokend"),
        )
    }

    /// Where the administration API listens apart (`--admin-listen`), as
    /// tokend printed it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.stdout_lines
            .iter()
            .find_map(|l| l.strip_prefix("tokend admin listening on "))
            .and_then(|addr| addr.trim().parse().ok())
    }

    /// A client of the administration API: on `--admin-listen` when given,
    /// else beside the token service.
    pub async fn admin_client(&self) -> AdminClient {
        let addr = self.admin_addr().unwrap_or(self.addr);
        AdminClient::new(
            crate::channel(&format!("http://{addr}"))
                .await
                .expect("connect to tokend's administration API"),
        )
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

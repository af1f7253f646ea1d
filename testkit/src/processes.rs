//! The real binaries as child processes: `tokend` (built with the test)
//! and the example resource server, started on free ports, ready when they
//! say so, killed when dropped; and fixtures built from them.

use super::*;

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

/// What a child process prints on stdout after it said it was listening:
/// kept read (a process whose stdout is closed dies on its next line).
pub struct StdoutLines(mpsc::Receiver<String>);

impl StdoutLines {
    /// Waits up to `timeout` for a line starting with `prefix`.
    pub fn wait_for(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

/// Spawns `command` (stdout piped) and waits for the line `<ready>ADDR`;
/// returns the child, the address, the lines printed before it and the
/// ones that follow.
fn spawn_until_ready(
    mut command: Command,
    ready: &str,
    log: &tempfile::NamedTempFile,
) -> (Child, SocketAddr, Vec<String>, StdoutLines) {
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
                    return (child, addr, stdout_lines, StdoutLines(lines_rx));
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

/// A tool installed by `make test` into `.venv/bin`, else from `PATH`.
pub fn tool(name: &str) -> PathBuf {
    let venv = workspace_dir().join(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(name)
}

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
        if is_newer_than_sources(&binary) {
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

/// Whether `binary` exists and was built after every source of the
/// interceptor crate (and the lock file) last changed.
fn is_newer_than_sources(binary: &Path) -> bool {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|entry| newest(&entry.ok()?.path()))
            .max()
    }
    let Some(built) = std::fs::metadata(binary).and_then(|m| m.modified()).ok() else {
        return false;
    };
    let root = workspace_dir();
    ["interceptor", "Cargo.lock", "Cargo.toml"]
        .iter()
        .filter_map(|p| newest(&root.join(p)))
        .all(|changed| changed <= built)
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
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(resource_server_bin());
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen log"));
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

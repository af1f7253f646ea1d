//! tokend-gate as a child process: built when stale, started on a free
//! port, ready when it says so.

use super::*;

/// The tokend-gate binary of the same profile, built if missing or stale.
pub fn gate_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let target = target_dir();
    let binary = target.join("tokend-gate");
    BUILD.call_once(|| {
        // `cargo test --workspace` builds it for the gate's own tests; build
        // here only when it is missing or older than its sources.
        if is_newer_than(&binary, &["gate/src", "interceptor/src", "Cargo.lock"]) {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "-q", "-p", "tokend-gate"]);
        if target.ends_with("release") {
            command.arg("--release");
        }
        let status = command
            .current_dir(workspace_dir())
            .status()
            .expect("build tokend-gate");
        assert!(status.success(), "building tokend-gate failed");
    });
    binary
}

/// A running tokend-gate.
pub struct GateProcess {
    child: Option<Child>,
    /// Where it serves Envoy's Check calls.
    pub addr: SocketAddr,
    /// Its metrics endpoint, when started with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    later: StdoutLines,
    log: tempfile::NamedTempFile,
}

impl GateProcess {
    /// Starts it with `args` (after `--listen 127.0.0.1:0`) and `envs`,
    /// returning once it listens.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> GateProcess {
        GateProcess::start_binary(&gate_bin(), args, envs)
    }

    /// Like [`start`](Self::start), running `binary` (the gate's own tests
    /// pass the one cargo built for them).
    pub fn start_binary(binary: &Path, args: &[&str], envs: &[(&str, &str)]) -> GateProcess {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(binary);
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen log"));
        let (child, addr, before, later) =
            spawn_until_ready(command, "tokend-gate listening on ", &log);
        let metrics = before
            .iter()
            .find_map(|line| line.strip_prefix("metrics on http://"))
            .and_then(|rest| rest.trim_end_matches("/metrics").parse().ok());
        GateProcess {
            child: Some(child),
            addr,
            metrics,
            later,
            log,
        }
    }

    /// Waits until it reports SERVING (it holds keys, and the feed's
    /// history when watching).
    pub fn ready(self) -> GateProcess {
        if self
            .later
            .wait_for("tokend-gate ready", READY_TIMEOUT)
            .is_none()
        {
            panic!("tokend-gate never became ready:\n{}", self.logs());
        }
        self
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends it `signal` (e.g. `libc::SIGHUP`).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid.
            #[allow(unsafe_code)] // the SAFETY note above
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Kills it and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits (up to 30 s) until it has logged `line` at least `times` times.
    pub async fn logged(&self, line: &str, times: usize) {
        let what = format!("{times} times {line:?} in the gate's log");
        eventually(&what, Duration::from_secs(30), || {
            let count = self.logs().matches(line).count();
            async move { count >= times }
        })
        .await;
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

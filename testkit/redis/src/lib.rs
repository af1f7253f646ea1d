//! Real `redis-server` processes for tokend's tests: a single node, a Redis
//! Cluster of three primaries with a replica each, and a primary with a
//! replica under three sentinels. Each process runs on free loopback ports
//! with a private directory and no persistence, and is killed when dropped.
//! No Docker, no mocks.

// Test infrastructure: a failed expectation here is a failed test or
// benchmark run, so unwrap, expect and panic are the right tools.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod node;
mod sentinel;

use std::time::Duration;

pub use cluster::RedisCluster;
pub use node::{Node, free_port, keep_logs_in, port_is_free, wait_until};
pub use sentinel::{RedisSentinel, lone_sentinel};

/// A Redis deployment tokend can be pointed at.
pub trait Deployment {
    /// The `tokend` flags that name it (`--redis-url ...`, ...).
    fn tokend_args(&self) -> Vec<String>;
}

impl Deployment for RedisServer {
    fn tokend_args(&self) -> Vec<String> {
        vec!["--redis-url".into(), self.url()]
    }
}

impl Deployment for RedisCluster {
    fn tokend_args(&self) -> Vec<String> {
        vec!["--redis-cluster".into(), self.seeds()]
    }
}

impl Deployment for RedisSentinel {
    fn tokend_args(&self) -> Vec<String> {
        vec![
            "--redis-sentinel".into(),
            self.sentinels(),
            "--redis-sentinel-master".into(),
            self.master_name().into(),
        ]
    }
}

/// A `redis-server` of our own: no persistence, a private directory, a free port.
pub struct RedisServer {
    node: Node,
}

impl RedisServer {
    /// Starts a fresh server and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a fresh server with extra `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(node) = Node::start(free_port(), args) {
                return RedisServer { node };
            }
        }
        panic!("could not start redis-server (is it installed? `make test` installs it)");
    }

    /// A replica of `primary`, synced before this returns: it says its link
    /// is up, and the primary counts it online (what `ROLE` and `WAIT` see).
    pub fn replica_of(primary: &RedisServer) -> RedisServer {
        let port = primary.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
        wait_until("the replica's first sync", Duration::from_secs(20), || {
            replica
                .node
                .info_field("replication", "master_link_status")
                .as_deref()
                == Some("up")
                && primary
                    .node
                    .info_field("replication", "slave0")
                    .is_some_and(|replica| replica.contains("state=online"))
        });
        replica
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.node.pid()
    }

    /// The process.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Kills the server (data is lost: nothing is persisted).
    pub fn stop(&mut self) {
        self.node.kill();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.node.restart();
    }

    /// A plain connection for inspecting what tokend wrote.
    /// Replies may be large and the machine busy: a generous timeout.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to redis")
    }
}

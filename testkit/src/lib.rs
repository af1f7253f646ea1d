//! Real parts for tokend's integration tests and benchmarks:
//! `redis-server` processes on free ports, the real `tokend` binary, the
//! example resource server, tokend-gate and Envoy on random ports, and
//! clients for them.
//! Everything is stopped when dropped.
//!
//! Binaries are found next to the running executable (`target/<profile>/`),
//! so tests use debug builds and `make bench` release builds.
//!
//! - [`app`]: tokend in the test's process on a clock the test moves;
//! - `processes`: the real binaries as child processes, and fixtures;
//! - `cli`: the administrator's `tokend` commands;
//! - `grpc`: clients, requests and assertions on reasons;
//! - `http`: one HTTP/1.1 request at a time (Envoy's admin, HTTP services);
//! - `redis_data`: what tokend keeps in Redis;
//! - `polling`: waiting for an outcome with a deadline;
//! - `scrape`: metrics as an independent parser reads them;
//! - [`pki`]: certificates made in the tests.

// Test infrastructure: a failed expectation here is a failed test or
// benchmark run, so unwrap, expect and panic are the right tools.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod chaos;
mod cli;
mod grpc;
mod http;
pub mod pki;
mod polling;
mod processes;
mod redis_data;
mod scrape;

pub use app::{
    TestApp, demo_login, spawn_app, spawn_app_args, spawn_app_with, with_alice_in_process,
};
pub use cli::*;
pub use grpc::*;
pub use http::*;
pub use polling::*;
pub use processes::*;
pub use redis_data::*;
pub use scrape::{Scrape, scrape, series_key};

/// The example resource server's demo.v1 client.
#[allow(missing_docs, clippy::all)]
pub mod demo {
    /// Version 1 of the demo API.
    pub mod v1 {
        tonic::include_proto!("demo.v1");
    }
}

pub use testkit_redis::{
    Deployment, RedisCluster, RedisSentinel, RedisServer, free_port, wait_until,
};

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tonic::transport::Channel;

pub use pb::token_service_client::TokenServiceClient;
pub use tokend::proto::tokend::admin::v1 as admin_pb;
/// A client of tokend's administration API.
pub type AdminClient = admin_pb::admin_service_client::AdminServiceClient<Channel>;

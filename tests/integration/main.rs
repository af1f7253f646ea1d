//! Integration tests over TCP with real clients (tonic, grpcurl, Python
//! grpcio) and real `redis-server` processes on free ports. What needs a
//! process runs the real binaries (the CLI, signals, the example resource
//! server, Redis outages, TLS files); the rest runs tokend in this process
//! (`spawn_app`, `with_alice_in_process`), on a clock the test moves where
//! time matters (`lifetimes`). One test binary, one module per capability.

// A failed expectation is a failed test: unwrap, expect and panic are the
// right tools here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The shared real parts (`testkit`), under the name the modules use.
mod harness {
    pub(crate) use testkit::*;
}

mod accounts;
mod admin;
mod audit;
mod certificates;
mod chaos;
mod cli;
mod exchange;
mod expiry;
mod feed_abuse;
mod grpcurl;
mod interceptor;
mod introspect;
mod lifetimes;
mod limits;
mod login;
mod metrics;
mod outage;
mod python;
mod refresh;
mod revocation;
mod revoke;
mod scale_out;
mod shutdown;
mod throttle;
mod tls;

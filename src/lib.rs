//! tokend: a gRPC token service.
//!
//! `Login` exchanges credentials for a short-lived PASETO v4.public access
//! token and a long-lived opaque refresh token; `Refresh` rotates the refresh
//! token with reuse detection; `Revoke` ends the session. Refresh sessions
//! live in Redis (or, for development, in memory) and only hashes of refresh
//! tokens are stored.
//!
//! The modules, from the wire inwards:
//! - [`cli`]: the `tokend` command line;
//! - [`server`]: listens, wires the gRPC services, shuts down gracefully;
//! - [`api`]: the `tokend.v1.TokenService` implementation and the one
//!   mapping from errors to gRPC statuses;
//! - [`authority`]: login, refresh, revoke, sessions and token exchange,
//!   independent of gRPC;
//! - [`exchange`]: the exchange policy (who may obtain tokens on a user's
//!   behalf), reloaded while running;
//! - [`accounts`]: account rules, administration, cut-offs, and each
//!   replica's view of accounts' current state;
//! - [`throttle`]: login throttling shared by all replicas;
//! - [`tokens`]: signing keys, access tokens, the refresh-token format;
//! - [`credentials`]: password hashing (argon2id) and service-client secrets;
//! - [`revocations`]: the revocation feed behind `WatchRevocations`;
//! - [`store`]: accounts, sessions, failure counters and the feed, in Redis
//!   or in memory;
//! - [`config`] and [`telemetry`]: the typed configuration and logging;
//! - [`audit`]: one structured event per security-relevant fact;
//! - [`clock`]: the time, passed in so tests can move it;
//! - [`metrics`]: Prometheus metrics on `--metrics-listen`.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod audit;
pub mod authority;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod exchange;
pub mod metrics;
pub mod proto;
pub mod revocations;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod tokens;

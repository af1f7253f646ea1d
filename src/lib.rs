//! tokend: a gRPC token service.
//!
//! `Login` exchanges credentials for a short-lived PASETO v4.public access
//! token and a long-lived opaque refresh token; `Refresh` rotates the refresh
//! token with reuse detection; `Revoke` ends the session. Refresh sessions
//! live in Redis (or, for development, in memory) and only hashes of refresh
//! tokens are stored.
//!
//! The modules, from the wire inwards. Each reaches only modules below it
//! (`make lint` fails on an import cycle between them):
//! - [`cli`]: the `tokend` command line;
//! - [`server`] and [`config`]: listens, wires the gRPC services, shuts down
//!   gracefully; the typed configuration;
//! - [`api`]: the `tokend.v1.TokenService` implementation, the one mapping
//!   from errors to gRPC statuses, and the per-call metrics layer;
//! - [`authority`]: login, refresh, revoke, sessions and token exchange,
//!   independent of gRPC; [`AuthError`](authority::AuthError) classified
//!   once (reason, code, retry delay, message);
//! - [`throttle`]: login throttling shared by all replicas;
//! - [`exchange`]: the exchange policy (who may obtain tokens on a user's
//!   behalf), reloaded while running;
//! - [`admin`]: account administration and cut-offs, the workflows that
//!   change an account and announce it on the feed;
//! - [`revocations`]: the revocation feed behind `WatchRevocations`;
//! - [`accounts`]: account rules, certificate identities, and each
//!   replica's view of accounts' current state;
//! - [`store`]: accounts, sessions, failure counters and the feed, in Redis
//!   or in memory;
//! - [`tokens`]: signing keys, access tokens, the refresh-token format;
//! - [`clock`]: the time, passed in so tests can move it;
//! - [`credentials`]: password hashing (argon2id) and service-client secrets;
//! - [`telemetry`]: logging set up once, and [`telemetry::record`], which
//!   hands each stated fact to its listeners:
//! - [`metrics`] (Prometheus on `--metrics-listen`) and [`audit`] (one
//!   structured event per security-relevant fact), which hear
//! - [`facts`]: the typed facts every layer states, importing nothing of
//!   the crate.

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
pub mod facts;
pub mod metrics;
pub mod proto;
pub mod revocations;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod tokens;

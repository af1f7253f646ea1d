//! `tokend serve`: its flags, turned into the typed [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};
use ipnet::IpNet;
use tokend_interceptor::server::Limits;
use tokend_interceptor::server::TlsFiles;

use super::RedisArgs;
use crate::authority::Lifetimes;
use crate::config::{Config, duration_up_to, max};
use crate::revocations::WatchLimits;
use crate::throttle::{Limit, ThrottleConfig};

/// `tokend serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one and prints it).
    #[arg(long, env = "TOKEND_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Where sessions and accounts live.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// PASERK k4.secret file to sign access tokens with. Without it an
    /// ephemeral key is used and every restart invalidates all access tokens.
    #[arg(long, env = "TOKEND_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Extra key to publish for verification only (PASERK k4.public or
    /// k4.secret file): the next key before it becomes active, or a retired
    /// one until its tokens have expired. Repeatable.
    #[arg(
        long = "verification-key-file",
        env = "TOKEND_VERIFICATION_KEY_FILE",
        value_delimiter = ','
    )]
    pub verification_key_files: Vec<PathBuf>,
    /// The `iss` claim of access tokens, and the audience a token needs for
    /// tokend's own session RPCs.
    #[arg(long, env = "TOKEND_ISSUER", default_value = "tokend")]
    pub issuer: String,
    /// The `aud` claim when Login names no audience.
    #[arg(long, env = "TOKEND_AUDIENCE", default_value = "internal")]
    pub audience: String,
    /// Access-token lifetime.
    #[arg(long, env = "TOKEND_ACCESS_TTL", default_value = "15m", value_parser = duration_up_to(max::ACCESS_TTL))]
    pub access_ttl: Duration,
    /// A session ends this long after its last refresh.
    #[arg(long, env = "TOKEND_REFRESH_IDLE_TTL", default_value = "7d", value_parser = duration_up_to(max::REFRESH_TTL))]
    pub refresh_idle_ttl: Duration,
    /// A session ends this long after login, however often it is refreshed.
    #[arg(long, env = "TOKEND_REFRESH_ABSOLUTE_TTL", default_value = "30d", value_parser = duration_up_to(max::REFRESH_TTL))]
    pub refresh_absolute_ttl: Duration,
    /// For this long a retried Refresh with the just-consumed token gets the
    /// same successor instead of revoking the session: what makes a retry
    /// after STORE_UNAVAILABLE or a lost answer safe (0s: strict, every
    /// second use is a theft alarm).
    #[arg(long, env = "TOKEND_REFRESH_REUSE_GRACE", default_value = "10s", value_parser = duration_up_to(max::REUSE_GRACE))]
    pub refresh_reuse_grace: Duration,
    /// With the embedded store: create a demo user and service client and
    /// print their credentials.
    #[arg(long, env = "TOKEND_DEV")]
    pub dev: bool,
    /// Threads hashing passwords (default: one per core).
    #[arg(long, env = "TOKEND_PASSWORD_HASH_THREADS")]
    pub password_hash_threads: Option<usize>,
    /// A login that would wait longer than this for a hashing thread is
    /// refused at once with OVERLOADED and a retry delay.
    #[arg(long, env = "TOKEND_PASSWORD_HASH_MAX_WAIT", default_value = "1s", value_parser = duration_up_to(max::STORE_WAIT))]
    pub password_hash_max_wait: Duration,
    /// Accounts whose state (disabled? scopes? cut-off?) each replica keeps
    /// for the check at every Refresh, kept fresh through the revocation
    /// feed (about 100 bytes each). 0 reads the store at every Refresh.
    #[arg(long, env = "TOKEND_ACCOUNT_CACHE", default_value_t = crate::accounts::state::DEFAULT_CAPACITY)]
    pub account_cache: usize,
    /// Most sessions per user; a login beyond ends the user's least recently
    /// used session (and announces it on the revocation feed).
    #[arg(long, env = "TOKEND_MAX_SESSIONS_PER_USER", default_value_t = 100)]
    pub max_sessions_per_user: usize,
    /// Least time between two log-outs-everywhere (RevokeAllSessions) of
    /// one account, across replicas; sooner is RATE_LIMITED. Each is an
    /// entry every watcher of the revocation feed receives. 0s: no limit.
    #[arg(long, env = "TOKEND_REVOKE_ALL_INTERVAL", default_value = "5s", value_parser = duration_up_to(max::THROTTLE_DELAY))]
    pub revoke_all_interval: Duration,
    /// Free failed logins per (account, source) before delays start (0: no
    /// limit). Each further failure doubles the delay, up to --throttle-max-delay.
    #[arg(long, env = "TOKEND_THROTTLE_ACCOUNT_SOURCE", default_value_t = 5)]
    pub throttle_account_source: u32,
    /// Free failed logins per source, on any account (0: no limit).
    #[arg(long, env = "TOKEND_THROTTLE_SOURCE", default_value_t = 100)]
    pub throttle_source: u32,
    /// Free failed logins per account, from any source (0: no limit); past
    /// them the account's delay grows up to --throttle-account-max-delay.
    #[arg(long, env = "TOKEND_THROTTLE_ACCOUNT", default_value_t = 20)]
    pub throttle_account: u32,
    /// Longest delay per (account, source) and per source.
    #[arg(long, env = "TOKEND_THROTTLE_MAX_DELAY", default_value = "15m", value_parser = duration_up_to(max::THROTTLE_DELAY))]
    pub throttle_max_delay: Duration,
    /// Longest delay per account: low, so guessers slow down and the real
    /// user is never locked out.
    #[arg(long, env = "TOKEND_THROTTLE_ACCOUNT_MAX_DELAY", default_value = "1m", value_parser = duration_up_to(max::THROTTLE_DELAY))]
    pub throttle_account_max_delay: Duration,
    /// A proxy (CIDR) whose x-forwarded-for names the caller's address, for
    /// login throttling. Repeatable or comma-separated.
    #[arg(
        long = "trusted-proxy",
        env = "TOKEND_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Transport security.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Limits on what callers can hold open.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Export the spans of calls to this OpenTelemetry collector over
    /// OTLP/gRPC (e.g. http://127.0.0.1:4317). Needs a tokend built with the
    /// `otlp` cargo feature. Off by default.
    #[arg(long, env = "TOKEND_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g.
    /// 127.0.0.1:9090. Off by default.
    #[arg(long, env = "TOKEND_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the administration API (tokend.admin.v1.AdminService) on this
    /// address only, e.g. 127.0.0.1:50052, instead of beside the token
    /// service; recommended, so that it can be firewalled apart. Uses the
    /// same TLS as the main listener. Port 0 picks a free port (printed).
    #[arg(long, env = "TOKEND_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// The exchange policy (TOML `[[exchange]]` rows): which services may
    /// obtain tokens on a user's behalf, for which audiences and scopes.
    /// Reloaded when the file changes and on SIGHUP. Without it, Exchange
    /// allows nothing. Check a file with `tokend exchange-policy check FILE`.
    #[arg(long, env = "TOKEND_EXCHANGE_POLICY")]
    pub exchange_policy: Option<PathBuf>,
    /// Serve gRPC reflection (grpcurl's way to discover the API):
    /// --reflection=false turns it off.
    #[arg(long, env = "TOKEND_REFLECTION", default_value_t = true, action = ArgAction::Set)]
    pub reflection: bool,
    /// Most revocation-feed watchers at once on this replica.
    #[arg(long, env = "TOKEND_MAX_WATCHERS", default_value_t = 10_000)]
    pub max_watchers: usize,
    /// Most revocation-feed watchers at once of one caller (a service
    /// client) on this replica: one credential cannot take every place.
    #[arg(long, env = "TOKEND_MAX_WATCHERS_PER_CALLER", default_value_t = 1_000)]
    pub max_watchers_per_caller: usize,
    /// History entries per second this replica sends to catching-up
    /// watchers, all together (0: unpaced).
    #[arg(long, env = "TOKEND_WATCH_HISTORY_RATE", default_value_t = 250_000)]
    pub watch_history_rate: u32,
    /// Load a signing key file that group or others can read (with a
    /// warning) instead of refusing it.
    #[arg(long, env = "TOKEND_ALLOW_INSECURE_KEY_FILE")]
    pub allow_insecure_key_file: bool,
}

/// TLS for a listener: `--tls-cert` and `--tls-key` turn it on; with
/// `--tls-client-ca` client certificates are verified (mTLS).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM) to serve TLS with; reloaded when the file
    /// changes or on SIGHUP.
    #[arg(long, env = "TOKEND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "TOKEND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to. Clients
    /// without a certificate are still served, unless
    /// --tls-require-client-cert.
    #[arg(long, env = "TOKEND_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse clients without a verified certificate.
    #[arg(
        long,
        env = "TOKEND_TLS_REQUIRE_CLIENT_CERT",
        requires = "tls_client_ca"
    )]
    pub tls_require_client_cert: bool,
    /// A SPIFFE trust domain (e.g. prod.example) whose IDs
    /// spiffe://TD/ID name the service client ID: exactly that one-segment
    /// path, never a longer one. Repeatable. Clients with identities
    /// recorded by `client add --cert-san` are named by those only.
    #[arg(
        long = "cert-trust-domain",
        env = "TOKEND_CERT_TRUST_DOMAIN",
        value_delimiter = ','
    )]
    pub cert_trust_domains: Vec<String>,
}

impl TlsArgs {
    /// The TLS files, if TLS is on.
    pub fn files(&self) -> Option<TlsFiles> {
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        let mut files = TlsFiles::new(cert, key);
        if let Some(ca) = &self.tls_client_ca {
            files = files.client_ca(ca);
        }
        Some(files.require_client_cert(self.tls_require_client_cert))
    }
}

/// The limits of a listener.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Most connections at once (also kept below the open-files limit, which
    /// is raised to its hard limit at start). At the cap a new connection
    /// evicts the oldest that has sent nothing yet.
    #[arg(long, env = "TOKEND_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// A connection must finish its TLS handshake and send its first bytes
    /// within this.
    #[arg(long, env = "TOKEND_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration_up_to(max::HANDSHAKE))]
    pub handshake_timeout: Duration,
    /// Most concurrent calls per connection (HTTP/2 MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "TOKEND_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub max_concurrent_streams: u32,
    /// Server-side deadline of every call (until its answer starts).
    #[arg(long, env = "TOKEND_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration_up_to(max::REQUEST))]
    pub request_timeout: Duration,
    /// A connection is told to reconnect (HTTP/2 GOAWAY) after this long,
    /// then closed once its calls finish: how a rotated client CA reaches
    /// connections made before it (and revocation streams re-check their
    /// caller).
    #[arg(long, env = "TOKEND_MAX_CONNECTION_AGE", default_value = "1h", value_parser = duration_up_to(max::CONNECTION_AGE))]
    pub max_connection_age: Duration,
}

impl LimitArgs {
    /// The listener limits.
    pub fn limits(&self) -> Limits {
        Limits::default()
            .max_connections(self.max_connections)
            .handshake_timeout(self.handshake_timeout)
            .max_concurrent_streams(self.max_concurrent_streams)
            .request_timeout(self.request_timeout)
            .max_connection_age(self.max_connection_age)
    }
}

/// The configuration `tokend serve ARGS...` would run with, for running
/// tokend inside another process (tests, embedding) from the same flags.
pub fn config_from_args<I, T>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    /// `serve` alone, as the binary parses it.
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }
    let args =
        std::iter::once(std::ffi::OsString::from("serve")).chain(args.into_iter().map(Into::into));
    let serve = <Serve as clap::Parser>::try_parse_from(args)?;
    Ok(serve.args.config())
}

impl ServeArgs {
    /// The typed configuration these flags describe.
    pub fn config(&self) -> Config {
        let mut config = Config::new(self.listen, self.redis.store_config());
        config.signing_key_file = self.signing_key_file.clone();
        config.verification_key_files = self.verification_key_files.clone();
        config.issuer = self.issuer.clone();
        config.default_audience = self.audience.clone();
        config.lifetimes = Lifetimes {
            access: self.access_ttl,
            refresh_idle: self.refresh_idle_ttl,
            refresh_absolute: self.refresh_absolute_ttl,
            reuse_grace: self.refresh_reuse_grace,
        };
        config.dev = self.dev;
        if let Some(threads) = self.password_hash_threads {
            config.password_hash_threads = threads;
        }
        config.password_hash_max_wait = self.password_hash_max_wait;
        config.max_sessions_per_user = self.max_sessions_per_user;
        config.revoke_all_interval = self.revoke_all_interval;
        config.account_cache = self.account_cache;
        config.throttle = ThrottleConfig {
            account_source: Limit {
                free: self.throttle_account_source,
                max_delay: self.throttle_max_delay,
            },
            source: Limit {
                free: self.throttle_source,
                max_delay: self.throttle_max_delay,
            },
            account: Limit {
                free: self.throttle_account,
                max_delay: self.throttle_account_max_delay,
            },
            ..ThrottleConfig::default()
        };
        config.trusted_proxies = self.trusted_proxies.clone();
        config.tls = self.tls.files();
        config.cert_trust_domains = self.tls.cert_trust_domains.clone();
        config.limits = self.limits.limits();
        config.reflection = self.reflection;
        config.metrics_listen = self.metrics_listen;
        config.admin_listen = self.admin_listen;
        config.exchange_policy = self.exchange_policy.clone();
        config.watch = WatchLimits {
            max_watchers: self.max_watchers,
            max_watchers_per_caller: self.max_watchers_per_caller,
            history_rate: self.watch_history_rate,
        };
        config.allow_insecure_key_file = self.allow_insecure_key_file;
        config
    }
}

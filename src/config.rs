//! The configuration of `tokend serve`, as one typed, validated struct. The
//! command line ([`cli`](crate::cli)) fills it; nothing else reads flags.

use crate::clock::Clock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use tokend_interceptor::server::Limits;
use tokend_interceptor::server::TlsFiles;

use crate::authority::Lifetimes;
use crate::revocations::WatchLimits;
use crate::store::RedisConfig;
use crate::throttle::ThrottleConfig;

/// Everything `tokend serve` needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where sessions and accounts live.
    pub store: StoreConfig,
    /// PASERK k4.secret file to sign with; `None` signs with an ephemeral key.
    pub signing_key_file: Option<PathBuf>,
    /// Extra keys published for verification (next or retired keys).
    pub verification_key_files: Vec<PathBuf>,
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim when Login names none.
    pub default_audience: String,
    /// Token and session lifetimes.
    pub lifetimes: Lifetimes,
    /// Create a demo user and service client (embedded store only).
    pub dev: bool,
    /// Threads hashing passwords (argon2id); each holds one 19 MiB hash at a time.
    pub password_hash_threads: usize,
    /// A login that would wait longer than this for a hashing thread is
    /// refused at once (`OVERLOADED`, with a retry delay).
    pub password_hash_max_wait: Duration,
    /// Most sessions per user; a login beyond ends the least recently used.
    pub max_sessions_per_user: usize,
    /// Least time between two log-outs-everywhere of one account
    /// (`RATE_LIMITED` before); zero: no limit.
    pub revoke_all_interval: Duration,
    /// Accounts whose state each replica caches for the Refresh check; 0
    /// reads the store every time.
    pub account_cache: usize,
    /// How failed logins are throttled.
    pub throttle: ThrottleConfig,
    /// Proxies whose `x-forwarded-for` names the caller's address.
    pub trusted_proxies: Vec<IpNet>,
    /// TLS certificate, key and client CA; `None` serves plaintext.
    pub tls: Option<TlsFiles>,
    /// Connection and per-connection limits of the listener.
    pub limits: Limits,
    /// Serve gRPC reflection (what grpcurl uses to discover the API).
    pub reflection: bool,
    /// Serve Prometheus metrics (`GET /metrics`) on this address; `None`:
    /// no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the administration API (`tokend.admin.v1.AdminService`, with
    /// health and reflection) on this address only, with the same TLS;
    /// `None`: on the main listener beside the token service.
    pub admin_listen: Option<SocketAddr>,
    /// What this replica allows revocation-feed watchers.
    pub watch: WatchLimits,
    /// Load a signing key file readable by group or others (with a
    /// warning) instead of refusing it.
    pub allow_insecure_key_file: bool,
    /// The time tokend reads (sessions, tokens, the feed): the system's,
    /// or a manual clock in tests.
    pub clock: Clock,
    /// The exchange policy file (`--exchange-policy`); `None`: Exchange
    /// allows nothing.
    pub exchange_policy: Option<PathBuf>,
    /// Trust domains whose SPIFFE IDs `spiffe://TD/ID` name the service
    /// client `ID` (`--cert-trust-domain`).
    pub cert_trust_domains: Vec<String>,
}

/// Where sessions and accounts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In process memory: for development; lost on restart.
    Memory,
    /// Redis: one node, a Cluster or a primary under Sentinel.
    Redis(RedisConfig),
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults for everything but the listen address and store.
    pub fn new(listen: SocketAddr, store: StoreConfig) -> Config {
        Config {
            listen,
            store,
            signing_key_file: None,
            verification_key_files: Vec::new(),
            issuer: "tokend".into(),
            default_audience: "internal".into(),
            lifetimes: Lifetimes::default(),
            dev: false,
            password_hash_threads: default_hash_threads(),
            password_hash_max_wait: Duration::from_secs(1),
            max_sessions_per_user: 100,
            revoke_all_interval: Duration::from_secs(5),
            account_cache: crate::accounts::state::DEFAULT_CAPACITY,
            throttle: ThrottleConfig::default(),
            trusted_proxies: Vec::new(),
            tls: None,
            limits: Limits::default(),
            reflection: true,
            metrics_listen: None,
            admin_listen: None,
            watch: WatchLimits::default(),
            allow_insecure_key_file: false,
            clock: Clock::system(),
            exchange_policy: None,
            cert_trust_domains: Vec::new(),
        }
    }

    /// How client certificates name service clients here.
    pub fn cert_naming(&self) -> tokend_interceptor::certs::CertificateNaming {
        self.cert_trust_domains.iter().fold(
            tokend_interceptor::certs::CertificateNaming::new(),
            |naming, td| naming.trust_domain(td.clone()),
        )
    }

    /// Rejects combinations that cannot work, with a message saying why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.metrics_listen.is_some_and(|addr| addr.port() == 0) {
            return Err(ConfigError(
                "--metrics-listen needs a fixed port: Prometheus must know where to scrape".into(),
            ));
        }
        let fail = |m: &str| Err(ConfigError(m.to_owned()));
        let l = &self.lifetimes;
        if l.access < Duration::from_secs(1) {
            return fail("--access-ttl must be at least 1s");
        }
        if l.refresh_idle < Duration::from_secs(1) || l.refresh_absolute < Duration::from_secs(1) {
            return fail("--refresh-idle-ttl and --refresh-absolute-ttl must be at least 1s");
        }
        if l.reuse_grace >= l.refresh_idle {
            return fail("--refresh-reuse-grace must be shorter than --refresh-idle-ttl");
        }
        if self.max_sessions_per_user == 0 {
            return fail("--max-sessions-per-user must be at least 1");
        }
        if self.issuer.is_empty() || self.default_audience.is_empty() {
            return fail("--issuer and --audience must not be empty");
        }
        let bounds = [
            ("--access-ttl", l.access, max::ACCESS_TTL),
            ("--refresh-idle-ttl", l.refresh_idle, max::REFRESH_TTL),
            (
                "--refresh-absolute-ttl",
                l.refresh_absolute,
                max::REFRESH_TTL,
            ),
            ("--refresh-reuse-grace", l.reuse_grace, max::REUSE_GRACE),
            (
                "--password-hash-max-wait",
                self.password_hash_max_wait,
                max::STORE_WAIT,
            ),
        ];
        for (flag, value, limit) in bounds {
            if value > limit {
                return Err(ConfigError(format!(
                    "{flag} is longer than the maximum of {}",
                    flag_text(limit)
                )));
            }
        }
        if self.dev && self.store != StoreConfig::Memory {
            return fail(
                "--dev creates demo accounts and only works with the embedded store (no --redis-url)",
            );
        }
        if let StoreConfig::Redis(redis) = &self.store {
            check_prefix(&redis.prefix)?;
            if redis.timeout.is_zero() || redis.timeout > max::STORE_WAIT {
                return fail("--redis-timeout must be positive and at most 1m");
            }
        }
        Ok(())
    }
}

/// Checks a Redis key prefix: non-empty, no braces (they would become the
/// Cluster hash tag), no whitespace.
pub fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty()
        || prefix
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace())
    {
        return Err(ConfigError(
            "--redis-prefix must be non-empty, without braces or spaces".into(),
        ));
    }
    Ok(())
}

/// One hashing thread per core.
pub fn default_hash_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses durations like `15m`, `7d`, `2s`, `500ms`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try 15m, 7d, 2s)"))
}

/// The longest value each duration flag accepts: nothing sensible needs
/// more, and timestamps computed from them stay far from overflowing.
pub mod max {
    use std::time::Duration;

    const DAY: u64 = 86_400;

    /// `--access-ttl`.
    pub const ACCESS_TTL: Duration = Duration::from_secs(DAY);
    /// `--refresh-idle-ttl` and `--refresh-absolute-ttl`.
    pub const REFRESH_TTL: Duration = Duration::from_secs(366 * DAY);
    /// `--refresh-reuse-grace`.
    pub const REUSE_GRACE: Duration = Duration::from_secs(3600);
    /// `--redis-timeout`, `--password-hash-max-wait`.
    pub const STORE_WAIT: Duration = Duration::from_secs(60);
    /// `--throttle-max-delay`, `--throttle-account-max-delay`.
    pub const THROTTLE_DELAY: Duration = Duration::from_secs(DAY);
    /// `--handshake-timeout`.
    pub const HANDSHAKE: Duration = Duration::from_secs(300);
    /// `--request-timeout`.
    pub const REQUEST: Duration = Duration::from_secs(3600);
    /// `--max-connection-age`.
    pub const CONNECTION_AGE: Duration = Duration::from_secs(7 * DAY);
}

/// A parser for a duration flag that accepts at most `limit`.
pub fn duration_up_to(
    limit: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = parse_duration(text)?;
        if duration > limit {
            return Err(format!("longer than the maximum of {}", flag_text(limit)));
        }
        Ok(duration)
    }
}

/// `d` the way the duration flags are written (`366d`, `1h`, `30s`).
fn flag_text(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedisTarget;

    fn config() -> Config {
        Config::new("127.0.0.1:0".parse().unwrap(), StoreConfig::Memory)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config();
        assert_eq!(c.issuer, "tokend");
        assert_eq!(c.default_audience, "internal");
        assert_eq!(c.lifetimes.access, Duration::from_secs(900));
        assert_eq!(c.lifetimes.refresh_idle, Duration::from_secs(7 * 86400));
        assert_eq!(
            c.lifetimes.refresh_absolute,
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(c.lifetimes.reuse_grace, Duration::from_secs(10));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn durations_beyond_their_maximum_are_refused() {
        let parse = duration_up_to(max::REFRESH_TTL);
        assert_eq!(parse("366d"), Ok(max::REFRESH_TTL));
        let err = parse("367d").unwrap_err();
        assert!(err.contains("maximum of 366d"), "{err}");
        assert_eq!(flag_text(max::REUSE_GRACE), "1h");
        assert_eq!(flag_text(max::HANDSHAKE), "5m");
        // Values that overflow the arithmetic of timestamps in milliseconds.
        assert!(parse("100000000000d").is_err());
        assert!(parse("18446744073709551615s").is_err());

        let mut c = config();
        c.lifetimes.refresh_idle = Duration::from_secs(u64::MAX);
        c.lifetimes.refresh_absolute = Duration::from_secs(u64::MAX);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--refresh-idle-ttl"), "{err}");
        let mut c = config();
        c.lifetimes.access = Duration::from_secs(2 * 86_400);
        assert!(c.validate().is_err());
    }

    #[test]
    fn impossible_configurations_are_refused() {
        let mut c = config();
        c.lifetimes.reuse_grace = c.lifetimes.refresh_idle;
        assert!(c.validate().is_err());

        let mut c = config();
        c.dev = true;
        c.store = StoreConfig::Redis(RedisConfig::new(RedisTarget::Node("redis://x".into())));
        assert!(c.validate().is_err());

        assert!(check_prefix("a{b").is_err());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("tokend-staging").is_ok());
    }
}

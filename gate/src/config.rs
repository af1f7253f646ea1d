//! The gate's command line: the example resource server's flags (same names
//! and meaning) for verification, the feed and TLS, plus `--policy`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use tokend_interceptor::server::Limits;

/// tokend-gate: an Envoy external-authorization server (ext_authz, v3)
/// that enforces tokend access tokens in front of services in any language.
#[derive(Debug, Parser)]
#[command(
    name = "tokend-gate",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A tool instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve.
    #[command(flatten)]
    pub args: Args,
}

/// The tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Policy files.
    Policy {
        /// What to do with one.
        #[command(subcommand)]
        action: PolicyCommand,
    },
}

/// What to do with a policy file.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Checks FILE as the gate would load it: prints its summary, or the
    /// problem (and exits 1).
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

/// Serving flags.
#[derive(Debug, Parser)]
#[command(group(ArgGroup::new("keys").required(true).args(["tokend", "public_key"])))]
pub struct Args {
    /// Address to serve Envoy's Check calls on (port 0 picks a free one and
    /// prints it).
    #[arg(long, env = "GATE_LISTEN", default_value = "127.0.0.1:50071")]
    pub listen: SocketAddr,
    /// tokend to fetch verification keys from, e.g. http://127.0.0.1:50051
    /// or https://tokend:50051 (always TLS). Repeat for several replicas.
    #[arg(long, env = "GATE_TOKEND", value_delimiter = ',')]
    pub tokend: Vec<String>,
    /// A fixed PASERK k4.public verification key instead (repeatable).
    #[arg(long, env = "GATE_PUBLIC_KEY", value_delimiter = ',')]
    pub public_key: Vec<String>,
    /// The issuer tokens must carry.
    #[arg(long, env = "GATE_ISSUER", default_value = "tokend")]
    pub issuer: String,
    /// The audience tokens must carry (the policy's `audience` wins).
    #[arg(long, env = "GATE_AUDIENCE", default_value = "internal")]
    pub audience: String,
    /// Clock tolerance for exp and nbf.
    #[arg(long, env = "GATE_LEEWAY", default_value = "5s", value_parser = up_to_an_hour)]
    pub leeway: Duration,
    /// How often keys are refetched from tokend.
    #[arg(long, env = "GATE_KEY_REFRESH", default_value = "5m", value_parser = up_to_a_day)]
    pub key_refresh: Duration,
    /// Subscribe to tokend's revocation feed (needs --tokend, and
    /// --client-id or a client certificate): tokens of revoked sessions are
    /// refused with SESSION_REVOKED within a second.
    #[arg(long, env = "GATE_WATCH_REVOCATIONS", requires = "tokend")]
    pub watch_revocations: bool,
    /// The service client the feed is watched as (granted the scope
    /// tokend.revocations); its secret comes from TOKEND_CLIENT_SECRET.
    #[arg(long, env = "GATE_CLIENT_ID")]
    pub client_id: Option<String>,
    /// With --watch-revocations: refuse every token (UNAVAILABLE / 503,
    /// REVOCATIONS_UNAVAILABLE) once the feed has been silent this long.
    /// Default: keep deciding from the last known state.
    #[arg(long, env = "GATE_FAIL_CLOSED_AFTER", value_parser = up_to_a_day)]
    pub fail_closed_after: Option<Duration>,
    /// CA (PEM) to verify https:// tokend URLs with, instead of the system's.
    #[arg(long, env = "GATE_TOKEND_CA")]
    pub tokend_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to tokend (mTLS).
    #[arg(long, env = "GATE_TOKEND_CLIENT_CERT", requires = "tokend_client_key")]
    pub tokend_client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "GATE_TOKEND_CLIENT_KEY", requires = "tokend_client_cert")]
    pub tokend_client_key: Option<PathBuf>,
    /// Certificate chain (PEM) to serve Envoy over TLS with; reloaded when
    /// it changes or on SIGHUP.
    #[arg(long, env = "GATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "GATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that Envoy's client certificate must chain to (mTLS).
    #[arg(long, env = "GATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse connections without a verified client certificate.
    #[arg(long, env = "GATE_TLS_REQUIRE_CLIENT_CERT", requires = "tls_client_ca")]
    pub tls_require_client_cert: bool,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g.
    /// 127.0.0.1:9092. Off by default.
    #[arg(long, env = "GATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The policy (TOML): which paths need which scopes. Reloaded when it
    /// changes and on SIGHUP; a broken edit keeps the last good policy.
    /// Without it, every path needs a valid token.
    #[arg(long, env = "GATE_POLICY")]
    pub policy: Option<PathBuf>,
    /// A SPIFFE trust domain (e.g. prod.example) whose IDs spiffe://TD/ID
    /// name the service client ID, for the actor check of delegated tokens
    /// presented with a client certificate; repeatable.
    #[arg(
        long = "cert-trust-domain",
        env = "GATE_CERT_TRUST_DOMAIN",
        value_delimiter = ','
    )]
    pub cert_trust_domains: Vec<String>,
    /// ID=SAN: the certificates of the service client ID carry the subject
    /// alternative name SAN (repeat); once given, only these name ID.
    #[arg(long = "actor-cert-san", env = "GATE_ACTOR_CERT_SAN", value_delimiter = ',', value_parser = name_and_value)]
    pub actor_cert_sans: Vec<(String, String)>,
    /// Most connections at once.
    #[arg(long, env = "GATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Time for a connection's TLS handshake and first bytes.
    #[arg(long, env = "GATE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = up_to_an_hour)]
    pub handshake_timeout: Duration,
    /// Most concurrent Check calls per connection (Envoy multiplexes its
    /// checks over few connections).
    #[arg(long, env = "GATE_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub max_concurrent_streams: u32,
    /// Server-side deadline of every call.
    #[arg(long, env = "GATE_REQUEST_TIMEOUT", default_value = "30s", value_parser = up_to_a_day)]
    pub request_timeout: Duration,
    /// A connection is told to reconnect after this long (so a rotated
    /// client CA reaches it).
    #[arg(long, env = "GATE_MAX_CONNECTION_AGE", default_value = "1h", value_parser = up_to_a_day)]
    pub max_connection_age: Duration,
}

impl Args {
    /// What clap cannot say once `policy check` negates the requirements:
    /// the feed is tokend's, so watching it needs --tokend.
    pub fn validate(&self) -> Result<(), String> {
        if self.watch_revocations && self.tokend.is_empty() {
            return Err("--watch-revocations needs --tokend (the feed is tokend's)".into());
        }
        Ok(())
    }

    /// The listener limits the flags ask for.
    pub fn limits(&self) -> Limits {
        Limits::default()
            .max_connections(self.max_connections)
            .handshake_timeout(self.handshake_timeout)
            .max_concurrent_streams(self.max_concurrent_streams)
            .request_timeout(self.request_timeout)
            .max_connection_age(self.max_connection_age)
    }
}

/// `NAME=VALUE` for --actor-cert-san.
fn name_and_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err("expected ID=SAN, e.g. orders=orders.prod.example".into()),
    }
}

/// A duration flag of at most an hour (leeway, handshake time).
fn up_to_an_hour(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(3_600), "1h")
}

/// A duration flag of at most a day (key refresh, fail-closed, deadlines).
fn up_to_a_day(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(86_400), "1d")
}

/// `text` as a duration no longer than `limit` (written `limit_text`).
fn bounded(text: &str, limit: Duration, limit_text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration > limit {
        return Err(format!("longer than the maximum of {limit_text}"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_required_to_serve_but_not_to_check_a_policy() {
        assert!(Cli::try_parse_from(["tokend-gate"]).is_err());
        let serve = Cli::try_parse_from(["tokend-gate", "--tokend", "http://t:1"]).unwrap();
        assert!(serve.command.is_none());
        let check = Cli::try_parse_from(["tokend-gate", "policy", "check", "p.toml"]).unwrap();
        assert!(matches!(check.command, Some(Command::Policy { .. })));
        assert!(Cli::try_parse_from(["tokend-gate", "--tokend", "x", "--leeway", "2h"]).is_err());
    }
}

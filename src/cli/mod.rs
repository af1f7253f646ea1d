//! The `tokend` command line. Every flag is also an environment variable
//! `TOKEND_...`; `tokend help <command>` lists them.
//!
//! [`serve`] holds the flags of `tokend serve`; [`admin`] the commands that
//! manage users, service clients, sessions and keys.

pub mod admin;
pub mod serve;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::accounts::AccountError;
use crate::config::{self, ConfigError, StoreConfig, duration_up_to, max};
use crate::credentials::HashError;
use crate::server::{self, ServeError};
use crate::store::{RedisConfig, RedisStore, RedisTarget, ReplicaAcks, Store, StoreError};
use crate::telemetry::{self, LogFormat};
use crate::tokens::keys::KeyError;

pub use admin::{ClientCommand, ExchangePolicyCommand, KeysCommand, SessionsCommand, UserCommand};
pub use serve::{ServeArgs, config_from_args};

/// tokend: a gRPC token service (Login, Refresh, Revoke; PASETO v4.public
/// access tokens; refresh sessions in Redis).
#[derive(Debug, Parser)]
#[command(name = "tokend", version, about, long_about = None)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "TOKEND_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the token service.
    Serve(Box<ServeArgs>),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage service clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and end users' sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Work with exchange policy files (`serve --exchange-policy`).
    #[command(subcommand)]
    ExchangePolicy(ExchangePolicyCommand),
}

/// How long revocations matter: tokend's access-token lifetime.
#[derive(Debug, Args)]
pub struct RelevanceArgs {
    /// tokend's --access-ttl: how long revocations announced here matter.
    #[arg(long, env = "TOKEND_ACCESS_TTL", default_value = "15m", value_parser = duration_up_to(max::ACCESS_TTL))]
    pub access_ttl: Duration,
}

/// Where Redis is: one node (`--redis-url`), a Cluster (`--redis-cluster`)
/// or a primary under Sentinel (`--redis-sentinel`); at most one of them.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379/0. Without any Redis flag
    /// `serve` uses the embedded in-memory store (development only).
    #[arg(long, env = "TOKEND_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster, comma-separated, e.g.
    /// redis://10.0.0.1:6379,redis://10.0.0.2:6379.
    #[arg(
        long,
        env = "TOKEND_REDIS_CLUSTER",
        hide_env_values = true,
        value_delimiter = ',',
        conflicts_with_all = ["redis_url", "redis_sentinel"]
    )]
    pub redis_cluster: Vec<String>,
    /// Sentinels watching the primary, comma-separated, e.g.
    /// redis://10.0.0.1:26379,redis://10.0.0.2:26379 (credentials in them
    /// are used for the primary too). Needs --redis-sentinel-master.
    #[arg(
        long,
        env = "TOKEND_REDIS_SENTINEL",
        hide_env_values = true,
        value_delimiter = ',',
        conflicts_with = "redis_url",
        requires = "redis_sentinel_master"
    )]
    pub redis_sentinel: Vec<String>,
    /// The name the sentinels know the primary by.
    #[arg(
        long,
        env = "TOKEND_REDIS_SENTINEL_MASTER",
        requires = "redis_sentinel"
    )]
    pub redis_sentinel_master: Option<String>,
    /// Prefix of every Redis key tokend writes.
    #[arg(long, env = "TOKEND_REDIS_PREFIX", default_value = "tokend")]
    pub redis_prefix: String,
    /// How long one Redis operation may take before the call fails with
    /// STORE_UNAVAILABLE.
    #[arg(long, env = "TOKEND_REDIS_TIMEOUT", default_value = "1s", value_parser = duration_up_to(max::STORE_WAIT))]
    pub redis_timeout: Duration,
    /// Replicas that must confirm each session, revocation and account
    /// write before tokend answers: `auto` (one whenever the primary has a
    /// replica in sync), a number (always that many; writes fail while
    /// fewer can confirm), or 0 (never wait: faster, but a failover can
    /// lose acknowledged writes).
    #[arg(long, env = "TOKEND_REDIS_REPLICA_ACKS", default_value = "auto")]
    pub redis_replica_acks: ReplicaAcks,
}

impl RedisArgs {
    /// The deployment named by the flags, if any.
    fn target(&self) -> Option<RedisTarget> {
        if let Some(url) = &self.redis_url {
            return Some(RedisTarget::Node(url.clone()));
        }
        if !self.redis_cluster.is_empty() {
            return Some(RedisTarget::Cluster(self.redis_cluster.clone()));
        }
        match (&self.redis_sentinel_master, self.redis_sentinel.is_empty()) {
            (Some(master), false) => Some(RedisTarget::Sentinel {
                sentinels: self.redis_sentinel.clone(),
                master: master.clone(),
            }),
            _ => None,
        }
    }

    fn redis_config(&self) -> Option<RedisConfig> {
        Some(RedisConfig {
            target: self.target()?,
            prefix: self.redis_prefix.clone(),
            timeout: self.redis_timeout,
            replica_acks: self.redis_replica_acks,
        })
    }

    fn store_config(&self) -> StoreConfig {
        self.redis_config()
            .map_or(StoreConfig::Memory, StoreConfig::Redis)
    }

    /// The store for an administrator's one-off command: every call may
    /// wait up to [`ADMIN_STORE_WAIT`] (or `--redis-timeout`, if longer).
    async fn connect(&self) -> Result<Store, CliError> {
        let mut config = self.redis_config().ok_or(CliError::RedisRequired)?;
        config.timeout = config.timeout.max(ADMIN_STORE_WAIT);
        config::check_prefix(&config.prefix)?;
        Ok(Store::Redis(Box::new(RedisStore::open(&config).await?)))
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `serve` failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The command needs Redis.
    #[error(
        "Redis is required (--redis-url, --redis-cluster or --redis-sentinel): accounts live in Redis"
    )]
    RedisRequired,
    /// No password given.
    #[error(
        "pass the password on stdin with --password-stdin (e.g. `printf %s \"$PW\" | tokend user add ...`)"
    )]
    PasswordRequired,
    /// stdin held no password.
    #[error("--password-stdin: the first line of stdin is empty; pipe the password in")]
    PasswordEmpty,
    /// stdin could not be read.
    #[error("reading stdin: {0}")]
    Stdin(std::io::Error),
    /// The account could not be created or changed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The hashing pool failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// Telemetry could not start.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// An exchange policy file cannot be used.
    #[error(transparent)]
    ExchangePolicy(#[from] crate::exchange::PolicyError),
}

/// Runs a parsed command line; the exit code is 0 on success.
pub fn run(cli: Cli) -> ExitCode {
    let format = cli.log_format;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|runtime| {
            runtime.block_on(async move {
                // Within the runtime: the OTLP exporter runs on it.
                let otlp = match &cli.command {
                    Command::Serve(args) => args.otlp_endpoint.clone(),
                    _ => None,
                };
                let _telemetry = telemetry::init_with(format, otlp.as_deref())?;
                dispatch(cli.command).await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long an administrator's command waits for Redis at most, however
/// short `--redis-timeout` is (the service's budget per call, 1 s by
/// default): a one-off command had better wait for a replica that is still
/// syncing (a freshly formed cluster) than fail half way. Its writes are
/// the confirmed writes the service makes, so running it again is safe.
pub const ADMIN_STORE_WAIT: Duration = Duration::from_secs(30);

/// After this long, a command still waiting for Redis says so.
const ADMIN_PATIENCE_NOTICE: Duration = Duration::from_secs(2);

/// Runs an administrator's command, telling the operator once when it is
/// still waiting for Redis (e.g. for a replica to confirm a write).
async fn patiently(
    command: impl std::future::Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    tokio::pin!(command);
    tokio::select! {
        done = &mut command => return done,
        () = tokio::time::sleep(ADMIN_PATIENCE_NOTICE) => {}
    }
    eprintln!(
        "still waiting for Redis: a replica may still be syncing or confirming the write \
         (giving up after {}s)",
        ADMIN_STORE_WAIT.as_secs()
    );
    command.await
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => Ok(server::run(args.config()).await?),
        Command::User(command) => patiently(admin::user(command)).await,
        Command::Client(command) => patiently(admin::client(command)).await,
        Command::Sessions(command) => patiently(admin::sessions(command)).await,
        Command::Keys(command) => admin::keys(command),
        Command::ExchangePolicy(command) => admin::exchange_policy(command),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::authority::Lifetimes;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_follow_the_contract() {
        let cli = Cli::try_parse_from(["tokend", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = args.config();
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.store, StoreConfig::Memory);
        assert_eq!(config.issuer, "tokend");
        assert_eq!(config.default_audience, "internal");
        assert_eq!(config.lifetimes, Lifetimes::default());
        assert_eq!(config.max_sessions_per_user, 100);
        assert_eq!(config.password_hash_max_wait, Duration::from_secs(1));
        assert_eq!(config.throttle, crate::throttle::ThrottleConfig::default());
        assert!(config.trusted_proxies.is_empty());
    }

    #[test]
    fn trusted_proxies_are_cidrs() {
        let cli = Cli::try_parse_from([
            "tokend",
            "serve",
            "--trusted-proxy",
            "10.0.0.0/8,fd00::/8",
            "--trusted-proxy",
            "192.0.2.1/32",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.config().trusted_proxies.len(), 3);
        assert!(Cli::try_parse_from(["tokend", "serve", "--trusted-proxy", "nope"]).is_err());
    }

    #[test]
    fn scopes_may_repeat_or_be_comma_separated() {
        let cli = Cli::try_parse_from([
            "tokend", "client", "add", "svc", "--scope", "a,b", "--scope", "c",
        ])
        .unwrap();
        let Command::Client(ClientCommand::Add { scopes, .. }) = cli.command else {
            panic!("not client add")
        };
        assert_eq!(scopes, ["a", "b", "c"]);
    }
}

//! The `tokend` command line. Every flag is also an environment variable
//! `TOKEND_...`; `tokend help <command>` lists them.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::accounts::{self, AccountError};
use crate::authority::Lifetimes;
use crate::config::{self, Config, ConfigError, StoreConfig, parse_duration};
use crate::credentials::{HashError, PasswordHasher};
use crate::revocations::RevocationFeed;
use crate::server::{self, ServeError};
use crate::store::{RedisStore, Store, StoreError};
use crate::telemetry::{self, LogFormat};
use crate::tokens::SigningKey;
use crate::tokens::keys::KeyError;

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
}

/// How long revocations matter: tokend's access-token lifetime.
#[derive(Debug, Args)]
pub struct RelevanceArgs {
    /// tokend's --access-ttl: how long revocations announced here matter.
    #[arg(long, env = "TOKEND_ACCESS_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_ttl: Duration,
}

/// Where Redis is.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379/0. Without it `serve` uses the
    /// embedded in-memory store (development only).
    #[arg(long, env = "TOKEND_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key tokend writes.
    #[arg(long, env = "TOKEND_REDIS_PREFIX", default_value = "tokend")]
    pub redis_prefix: String,
    /// How long one Redis operation may take before the call fails with
    /// STORE_UNAVAILABLE.
    #[arg(long, env = "TOKEND_REDIS_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_timeout: Duration,
}

impl RedisArgs {
    fn store_config(&self) -> StoreConfig {
        match &self.redis_url {
            None => StoreConfig::Memory,
            Some(url) => StoreConfig::Redis {
                url: url.clone(),
                prefix: self.redis_prefix.clone(),
                timeout: self.redis_timeout,
            },
        }
    }

    async fn connect(&self) -> Result<Store, CliError> {
        let url = self.redis_url.as_deref().ok_or(CliError::RedisRequired)?;
        config::check_prefix(&self.redis_prefix)?;
        Ok(Store::Redis(Box::new(
            RedisStore::connect(url, &self.redis_prefix, self.redis_timeout).await?,
        )))
    }
}

/// `tokend serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one and prints it).
    #[arg(long, env = "TOKEND_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
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
    /// The `iss` claim of access tokens.
    #[arg(long, env = "TOKEND_ISSUER", default_value = "tokend")]
    pub issuer: String,
    /// The `aud` claim when Login names no audience.
    #[arg(long, env = "TOKEND_AUDIENCE", default_value = "internal")]
    pub audience: String,
    /// Access-token lifetime.
    #[arg(long, env = "TOKEND_ACCESS_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_ttl: Duration,
    /// A session ends this long after its last refresh.
    #[arg(long, env = "TOKEND_REFRESH_IDLE_TTL", default_value = "7d", value_parser = parse_duration)]
    pub refresh_idle_ttl: Duration,
    /// A session ends this long after login, however often it is refreshed.
    #[arg(long, env = "TOKEND_REFRESH_ABSOLUTE_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_absolute_ttl: Duration,
    /// For this long a retried Refresh with the just-consumed token gets the
    /// same successor instead of revoking the session (0s: strict).
    #[arg(long, env = "TOKEND_REFRESH_REUSE_GRACE", default_value = "0s", value_parser = parse_duration)]
    pub refresh_reuse_grace: Duration,
    /// With the embedded store: create a demo user and service client and
    /// print their credentials.
    #[arg(long, env = "TOKEND_DEV")]
    pub dev: bool,
    /// Threads hashing passwords (default: one per core).
    #[arg(long, env = "TOKEND_PASSWORD_HASH_THREADS")]
    pub password_hash_threads: Option<usize>,
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
        config
    }
}

/// `tokend user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or update its password and scopes.
    Add {
        /// User name (the `sub` claim).
        name: String,
        /// Scopes the user may be granted (repeat, or separate with commas).
        #[arg(long = "scope", env = "TOKEND_SCOPE", num_args = 1.., value_delimiter = ',')]
        scopes: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long, env = "TOKEND_PASSWORD_STDIN")]
        password_stdin: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Disable a user: no new logins, every session ended, every access token
    /// refused by interceptors watching the revocation feed.
    Disable {
        /// User name.
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        relevance: RelevanceArgs,
    },
    /// Let a disabled user log in again.
    Enable {
        /// User name.
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

/// `tokend sessions ...`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a user's live sessions, one per line.
    List {
        /// User name.
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// End every session of a user (log out everywhere).
    RevokeAll {
        /// User name.
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        relevance: RelevanceArgs,
    },
}

/// `tokend client ...`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a service client (or replace its secret and scopes); prints the
    /// new secret once, alone on stdout.
    Add {
        /// Client id (the `sub` claim).
        id: String,
        /// Scopes the client may be granted (repeat, or separate with commas).
        #[arg(long = "scope", env = "TOKEND_SCOPE", num_args = 1.., value_delimiter = ',')]
        scopes: Vec<String>,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

/// `tokend keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new Ed25519 signing key (PASERK k4.secret, mode 0600) and print
    /// its k4.public and k4.pid, each on a line of its own.
    Generate {
        /// The file to create; never overwritten.
        #[arg(long, env = "TOKEND_KEYS_OUT")]
        out: PathBuf,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `serve` failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The command needs Redis.
    #[error("--redis-url (or TOKEND_REDIS_URL) is required: accounts live in Redis")]
    RedisRequired,
    /// No password given.
    #[error(
        "pass the password on stdin with --password-stdin (e.g. `printf %s \"$PW\" | tokend user add ...`)"
    )]
    PasswordRequired,
    /// stdin could not be read.
    #[error("reading stdin: {0}")]
    Stdin(std::io::Error),
    /// The account could not be saved.
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
}

/// Runs a parsed command line; the exit code is 0 on success.
pub fn run(cli: Cli) -> ExitCode {
    telemetry::init(cli.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|runtime| runtime.block_on(dispatch(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => Ok(server::run(args.config()).await?),
        Command::User(UserCommand::Add {
            name,
            scopes,
            password_stdin,
            redis,
        }) => {
            if !password_stdin {
                return Err(CliError::PasswordRequired);
            }
            let password = read_password()?;
            let store = redis.connect().await?;
            let hasher = PasswordHasher::new(1)?;
            accounts::add_user(&store, &hasher, &name, &scopes, password).await?;
            eprintln!("user {name} saved");
            Ok(())
        }
        Command::User(UserCommand::Disable {
            name,
            redis,
            relevance,
        }) => {
            let store = redis.connect().await?;
            let feed = RevocationFeed::new(store.clone(), relevance.access_ttl);
            let ended = accounts::disable_user(&store, &feed, &name).await?;
            eprintln!("user {name} disabled; {ended} session(s) ended");
            Ok(())
        }
        Command::User(UserCommand::Enable { name, redis }) => {
            let store = redis.connect().await?;
            accounts::enable_user(&store, &name).await?;
            eprintln!("user {name} enabled");
            Ok(())
        }
        Command::Sessions(SessionsCommand::List { name, redis }) => {
            let store = redis.connect().await?;
            let mut stdout = std::io::stdout().lock();
            for s in store.list_sessions(&name).await? {
                let _ = writeln!(
                    stdout,
                    "{} created={} refreshed={} idle_expiry={} absolute_expiry={} audience={} scope={:?} client={:?}",
                    s.session_id,
                    rfc3339(s.grant.created_ms),
                    rfc3339(s.refreshed_ms),
                    rfc3339(s.idle_expiry_ms),
                    rfc3339(s.grant.absolute_expiry_ms),
                    s.grant.audience,
                    s.grant.scope,
                    s.client,
                );
            }
            Ok(())
        }
        Command::Sessions(SessionsCommand::RevokeAll {
            name,
            redis,
            relevance,
        }) => {
            let store = redis.connect().await?;
            let feed = RevocationFeed::new(store.clone(), relevance.access_ttl);
            let now_s = crate::now_ms().div_euclid(1000);
            let ended = accounts::end_all_sessions(&store, &feed, &name, now_s).await?;
            eprintln!("{ended} session(s) of {name} ended");
            Ok(())
        }
        Command::Client(ClientCommand::Add { id, scopes, redis }) => {
            let store = redis.connect().await?;
            let secret = accounts::add_client(&store, &id, &scopes).await?;
            println!("{secret}");
            eprintln!("service client {id} saved; the secret above is shown only once");
            Ok(())
        }
        Command::Keys(KeysCommand::Generate { out }) => {
            let key = SigningKey::generate()?;
            key.write_new(&out)?;
            let mut stdout = std::io::stdout().lock();
            let published = key.published();
            let _ = writeln!(stdout, "{}", published.public_key);
            let _ = writeln!(stdout, "{}", published.key_id);
            Ok(())
        }
    }
}

/// A timestamp for humans, in UTC.
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The first line of stdin, without its line ending.
fn read_password() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::Stdin)?;
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    if line.is_empty() {
        return Err(CliError::PasswordRequired);
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

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

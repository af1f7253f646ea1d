//! The administration commands: `tokend user ...`, `tokend client ...`,
//! `tokend sessions ...` and `tokend keys ...`. Every change that ends
//! sessions goes through [`cutoff`]: the cut-off is announced first, then
//! sessions are ended in batches, with progress on stderr; a command that
//! failed half way can simply be run again.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, RedisArgs, RelevanceArgs};
use crate::accounts::AccountError;
use crate::accounts::rules::ReservedNames;
use crate::admin::{self, cutoff};
use crate::credentials::PasswordHasher;
use crate::revocations::RevocationFeed;
use crate::store::{AccountChange, AccountKind, Store};
use crate::tokens::SigningKey;

/// `tokend user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. Fails if the name is taken (change an existing user
    /// with set-password or set-scopes).
    Add {
        /// User name (the `sub` claim).
        name: String,
        /// Scopes the user may be granted (repeat, or separate with commas).
        #[arg(long = "scope", env = "TOKEND_SCOPE", num_args = 1.., value_delimiter = ',')]
        scopes: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long, env = "TOKEND_PASSWORD_STDIN")]
        password_stdin: bool,
        /// Names no account may have.
        #[command(flatten)]
        reserved: ReservedArgs,
        /// Where the accounts are.
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Set a user's password, read from stdin. Ends every session of the user
    /// and cuts off every access token already issued.
    SetPassword {
        /// User name.
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long, env = "TOKEND_PASSWORD_STDIN")]
        password_stdin: bool,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Replace a user's scopes. Live sessions get at most the new scopes from
    /// their next refresh.
    SetScopes {
        /// User name.
        name: String,
        /// The scopes (repeat, or separate with commas).
        #[arg(long = "scope", env = "TOKEND_SCOPE", num_args = 1.., value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Disable a user: no new logins or refreshes, every session ended, every
    /// access token refused by interceptors watching the revocation feed.
    Disable {
        /// User name.
        name: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Let a disabled user log in again.
    Enable {
        /// User name.
        name: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Delete a user: like disable, then the account is removed.
    Delete {
        /// User name.
        name: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
}

/// `tokend client ...`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a service client; prints its secret once, alone on stdout.
    /// Fails if the id is taken.
    Add {
        /// Client id (the `sub` claim).
        id: String,
        /// Scopes the client may be granted (repeat, or separate with commas).
        #[arg(long = "scope", env = "TOKEND_SCOPE", num_args = 1.., value_delimiter = ',')]
        scopes: Vec<String>,
        /// Logins must present a client certificate naming this client over
        /// mTLS; its access tokens are bound to that certificate (RFC 8705).
        #[arg(long, env = "TOKEND_REQUIRE_CERT")]
        require_cert: bool,
        /// A certificate identity that is this client's own: a subject
        /// alternative name exactly as its certificates carry it (a DNS
        /// name, or a URI such as spiffe://prod.example/ns/pay/sa/billing).
        /// Repeatable. Once given, only these name the client; without,
        /// a DNS SAN equal to the id does (see --cert-trust-domain).
        #[arg(long = "cert-san", env = "TOKEND_CERT_SAN", value_delimiter = ',')]
        cert_sans: Vec<String>,
        /// Names no account may have.
        #[command(flatten)]
        reserved: ReservedArgs,
        /// Where the accounts are.
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Replace the certificate identities of a client (none given: back
    /// to the default naming rule). Cuts off every token it holds.
    SetCertSans {
        /// Client id.
        id: String,
        /// A certificate identity (SAN) that is the client's own; repeatable.
        #[arg(long = "cert-san", env = "TOKEND_CERT_SAN", value_delimiter = ',')]
        cert_sans: Vec<String>,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Replace a client's scopes (its next login gets them).
    SetScopes {
        /// Client id.
        id: String,
        /// The scopes (repeat, or separate with commas).
        #[arg(long = "scope", env = "TOKEND_SCOPE", num_args = 1.., value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Give a client a new secret, printed once alone on stdout. The old
    /// secret stops working and every token issued with it is cut off.
    RotateSecret {
        /// Client id.
        id: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Disable a client: no new logins or exchanges, and every token it
    /// holds and every delegated token it obtained for users is refused by
    /// interceptors watching the revocation feed (an actor cut-off).
    Disable {
        /// Client id.
        id: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Let a disabled client log in again (its old tokens stay cut off).
    Enable {
        /// Client id.
        id: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
    /// Delete a client and cut off every token it holds.
    Delete {
        /// Client id.
        id: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
}

/// `tokend sessions ...`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a user's live sessions, one per line.
    List {
        /// User name.
        name: String,
        /// Where the accounts are.
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// End every session of a user (log out everywhere) and cut off every
    /// access token already issued.
    RevokeAll {
        /// User name.
        name: String,
        /// Where the accounts are, and how long the revocations announced matter.
        #[command(flatten)]
        feed: FeedArgs,
    },
}

/// `tokend exchange-policy ...`.
#[derive(Debug, Subcommand)]
pub enum ExchangePolicyCommand {
    /// Check a policy file with the rules `serve --exchange-policy` applies;
    /// prints one line per row and exits non-zero (naming the row and the
    /// problem) if the file cannot be used.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

/// Runs `tokend exchange-policy ...`.
pub fn exchange_policy(command: ExchangePolicyCommand) -> Result<(), CliError> {
    match command {
        ExchangePolicyCommand::Check { file } => {
            let policy = crate::exchange::ExchangePolicy::load(&file)?;
            for rule in policy.rules() {
                println!(
                    "{actor} -> {targets} scopes {scopes} max_ttl {ttl} max_depth {depth}{from}",
                    actor = rule.actor,
                    targets = rule.targets.join(","),
                    scopes = rule.scopes.join(","),
                    ttl = humantime::format_duration(rule.max_ttl),
                    depth = rule.max_depth,
                    from = if rule.from.is_empty() {
                        String::new()
                    } else {
                        format!(" from {}", rule.from.join(","))
                    },
                );
            }
            eprintln!("{}: {} row(s), OK", file.display(), policy.len());
        }
    }
    Ok(())
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

/// Runs `tokend user ...`.
pub async fn user(command: UserCommand) -> Result<(), CliError> {
    match command {
        UserCommand::Add {
            name,
            scopes,
            password_stdin,
            reserved,
            redis,
        } => {
            let password = read_password(password_stdin)?;
            let store = redis.connect().await?;
            let hasher = PasswordHasher::new(1, std::time::Duration::MAX)?;
            admin::add_user(&store, &hasher, &reserved.names(), &name, &scopes, password).await?;
            admin::changed("user_added", &name, None);
            eprintln!("user {name} created");
        }
        UserCommand::SetPassword {
            name,
            password_stdin,
            feed,
        } => {
            let password = read_password(password_stdin)?;
            if !crate::accounts::rules::is_password(&password) {
                return Err(AccountError::BadPassword.into());
            }
            let (store, feed) = feed.connect().await?;
            let hasher = PasswordHasher::new(1, std::time::Duration::MAX)?;
            let mut progress = sweep_progress(&name);
            let ended = admin::set_password(&store, &feed, &hasher, &name, password, &mut progress)
                .await?
                .sweep
                .ended;
            admin::changed("user_password_set", &name, Some(ended));
            eprintln!("password of {name} set; {ended} session(s) ended");
        }
        UserCommand::SetScopes { name, scopes, feed } => {
            let (store, feed) = feed.connect().await?;
            admin::set_scopes(&store, &feed, AccountKind::User, &name, &scopes).await?;
            eprintln!("scopes of {name} set; live sessions get them at their next refresh");
        }
        UserCommand::Disable { name, feed } => {
            let (store, feed) = feed.connect().await?;
            let ended = end_user(&store, &feed, &name, AccountChange::Disable).await?;
            admin::changed("user_disabled", &name, Some(ended));
            eprintln!("user {name} disabled; {ended} session(s) ended");
        }
        UserCommand::Enable { name, feed } => {
            let (store, feed) = feed.connect().await?;
            admin::enable(&store, &feed, AccountKind::User, &name).await?;
            admin::changed("user_enabled", &name, None);
            eprintln!("user {name} enabled");
        }
        UserCommand::Delete { name, feed } => {
            let (store, feed) = feed.connect().await?;
            let ended = end_user(&store, &feed, &name, AccountChange::Delete).await?;
            admin::changed("user_deleted", &name, Some(ended));
            eprintln!("user {name} deleted; {ended} session(s) ended");
        }
    }
    Ok(())
}

/// Runs `tokend client ...`.
pub async fn client(command: ClientCommand) -> Result<(), CliError> {
    match command {
        ClientCommand::Add {
            id,
            scopes,
            require_cert,
            cert_sans,
            reserved,
            redis,
        } => {
            let store = redis.connect().await?;
            let new = admin::NewClient {
                scopes: &scopes,
                require_cert,
                cert_identities: &cert_sans,
            };
            let secret = admin::add_client(&store, &reserved.names(), &id, new).await?;
            println!("{secret}");
            admin::changed("client_added", &id, None);
            eprintln!("service client {id} created; the secret above is shown only once");
        }
        ClientCommand::SetCertSans {
            id,
            cert_sans,
            feed,
        } => {
            let (store, feed) = feed.connect().await?;
            admin::set_cert_identities(&store, &feed, &id, &cert_sans).await?;
            admin::changed("client_cert_sans_set", &id, None);
            eprintln!(
                "certificate identities of {id} set ({}); its tokens are cut off",
                if cert_sans.is_empty() {
                    "none: the default rule".to_owned()
                } else {
                    cert_sans.join(", ")
                }
            );
        }
        ClientCommand::SetScopes { id, scopes, feed } => {
            let (store, feed) = feed.connect().await?;
            admin::set_scopes(&store, &feed, AccountKind::Client, &id, &scopes).await?;
            eprintln!("scopes of {id} set; its next login gets them");
        }
        ClientCommand::RotateSecret { id, feed } => {
            let (store, feed) = feed.connect().await?;
            let secret = admin::rotate_secret(&store, &feed, &id).await?;
            println!("{secret}");
            admin::changed("client_secret_rotated", &id, None);
            eprintln!(
                "service client {id} has a new secret (shown above, only once); \
                 its tokens from the old one are cut off"
            );
        }
        ClientCommand::Disable { id, feed } => {
            let (store, feed) = feed.connect().await?;
            cutoff::end_client(&store, &feed, &id, AccountChange::Disable).await?;
            admin::changed("client_disabled", &id, None);
            eprintln!(
                "service client {id} disabled; its tokens and the delegated tokens it obtained \
                 are cut off"
            );
        }
        ClientCommand::Enable { id, feed } => {
            let (store, feed) = feed.connect().await?;
            admin::enable(&store, &feed, AccountKind::Client, &id).await?;
            admin::changed("client_enabled", &id, None);
            eprintln!("service client {id} enabled; it may log in again");
        }
        ClientCommand::Delete { id, feed } => {
            let (store, feed) = feed.connect().await?;
            cutoff::end_client(&store, &feed, &id, AccountChange::Delete).await?;
            admin::changed("client_deleted", &id, None);
            eprintln!("service client {id} deleted; its tokens are cut off");
        }
    }
    Ok(())
}

/// Runs `tokend sessions ...`.
pub async fn sessions(command: SessionsCommand) -> Result<(), CliError> {
    match command {
        SessionsCommand::List { name, redis } => {
            let store = redis.connect().await?;
            if store.user(&name).await?.is_none() {
                return Err(AccountError::NoSuchAccount(AccountKind::User, name).into());
            }
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
        }
        SessionsCommand::RevokeAll { name, feed } => {
            let (store, feed) = feed.connect().await?;
            let ended = end_user(&store, &feed, &name, AccountChange::CutOff).await?;
            eprintln!("{ended} session(s) of {name} ended");
        }
    }
    Ok(())
}

/// Runs `tokend keys ...`.
pub fn keys(command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Generate { out } => {
            let key = SigningKey::generate()?;
            key.write_new(&out)?;
            let mut stdout = std::io::stdout().lock();
            let published = key.published();
            let _ = writeln!(stdout, "{}", published.public_key);
            let _ = writeln!(stdout, "{}", published.key_id);
        }
    }
    Ok(())
}

/// tokend's issuer name and default audience, which no account may take.
#[derive(Debug, Args)]
pub struct ReservedArgs {
    /// tokend's --issuer: no account may be called so.
    #[arg(long, env = "TOKEND_ISSUER", default_value = "tokend")]
    issuer: String,
    /// tokend's --audience: no account may be called so.
    #[arg(long, env = "TOKEND_AUDIENCE", default_value = "internal")]
    audience: String,
}

impl ReservedArgs {
    fn names(&self) -> ReservedNames {
        ReservedNames {
            issuer: self.issuer.clone(),
            default_audience: self.audience.clone(),
        }
    }
}

/// Where Redis is, and how long the revocations announced there matter:
/// what every command that changes or ends an account needs.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Where the accounts are.
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    relevance: RelevanceArgs,
}

impl FeedArgs {
    /// The store, and the feed announcements go to.
    async fn connect(&self) -> Result<(Store, RevocationFeed), CliError> {
        let store = self.redis.connect().await?;
        let feed = RevocationFeed::publisher(store.clone(), self.relevance.access_ttl);
        Ok((store, feed))
    }
}

/// Cuts off the user with `change` and sweeps its sessions, reporting
/// progress on stderr; returns how many sessions ended.
async fn end_user(
    store: &Store,
    feed: &RevocationFeed,
    name: &str,
    change: AccountChange<'_>,
) -> Result<usize, CliError> {
    let mut progress = sweep_progress(name);
    let ended = cutoff::end_user(store, feed, name, change, &mut progress).await?;
    Ok(ended.sweep.ended)
}

/// Reports a long sweep's progress on stderr, every few thousand sessions.
fn sweep_progress(name: &str) -> impl FnMut(usize) + Send + '_ {
    let mut reported = 0;
    move |ended: usize| {
        if ended >= reported + 10 * cutoff::SWEEP_BATCH {
            reported = ended;
            eprintln!("{ended} session(s) of {name} ended so far");
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
fn read_password(password_stdin: bool) -> Result<String, CliError> {
    if !password_stdin {
        return Err(CliError::PasswordRequired);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::Stdin)?;
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    if line.is_empty() {
        return Err(CliError::PasswordEmpty);
    }
    Ok(line)
}

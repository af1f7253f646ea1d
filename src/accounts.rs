//! Creating accounts: users (argon2id password hashes) and service clients
//! (tokend-generated secrets). Used by `tokend user add`, `tokend client add`
//! and `tokend serve --dev`.
//!
//! Users and service clients share one subject namespace (both become the
//! `sub` claim), so a name can belong to only one of them.

use crate::api::validate::{MAX_SECRET_LEN, is_account_name, is_scope};
use crate::credentials::{HashError, NewClientSecret, PasswordHasher};
use crate::revocations::RevocationFeed;
use crate::store::{ClientRecord, Store, StoreError, UserRecord};

/// The demo user `tokend serve --dev` creates.
pub const DEMO_USER: &str = "demo";
/// The demo user's password: fixed, so the README walk-through can be pasted.
pub const DEMO_PASSWORD: &str = "demo-password";
/// The demo service client `tokend serve --dev` creates.
pub const DEMO_CLIENT: &str = "demo-client";

/// Why an account could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The name is not a valid account name.
    #[error("{0:?} is not a valid name: use 1-128 letters, digits or . _ @ + -")]
    BadName(String),
    /// A scope is not a scope token.
    #[error("{0:?} is not a valid scope: use printable ASCII without spaces or quotes")]
    BadScope(String),
    /// The password is empty or too long.
    #[error("the password must be 1-{MAX_SECRET_LEN} bytes")]
    BadPassword,
    /// No such user.
    #[error("no user called {0:?}")]
    NoSuchUser(String),
    /// The name is taken by the other kind of account.
    #[error("{0:?} is already a {1}; users and service clients share one namespace")]
    NameTaken(String, &'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
}

fn check(name: &str, scopes: &[String]) -> Result<String, AccountError> {
    if !is_account_name(name) {
        return Err(AccountError::BadName(name.to_owned()));
    }
    if let Some(bad) = scopes.iter().find(|s| !is_scope(s)) {
        return Err(AccountError::BadScope(bad.clone()));
    }
    let mut unique: Vec<&str> = Vec::new();
    for scope in scopes {
        if !unique.contains(&scope.as_str()) {
            unique.push(scope);
        }
    }
    Ok(unique.join(" "))
}

/// Creates or updates the user `name` with `password` and `scopes`.
pub async fn add_user(
    store: &Store,
    hasher: &PasswordHasher,
    name: &str,
    scopes: &[String],
    password: String,
) -> Result<(), AccountError> {
    let scope = check(name, scopes)?;
    if password.is_empty() || password.len() > MAX_SECRET_LEN {
        return Err(AccountError::BadPassword);
    }
    if store.client(name).await?.is_some() {
        return Err(AccountError::NameTaken(name.to_owned(), "service client"));
    }
    let password_hash = hasher.hash(password).await?;
    let user = UserRecord {
        password_hash,
        scope,
        disabled: false,
    };
    store.put_user(name, &user).await?;
    Ok(())
}

/// Creates the service client `id` (or replaces its secret and scopes) and
/// returns its new secret, which is not stored anywhere.
pub async fn add_client(
    store: &Store,
    id: &str,
    scopes: &[String],
) -> Result<String, AccountError> {
    let scope = check(id, scopes)?;
    if store.user(id).await?.is_some() {
        return Err(AccountError::NameTaken(id.to_owned(), "user"));
    }
    let new = NewClientSecret::generate();
    let client = ClientRecord {
        secret_digest: new.digest,
        scope,
    };
    store.put_client(id, &client).await?;
    Ok(new.secret)
}

/// Ends every session of `subject`, announces each on the revocation feed,
/// and cuts off every access token issued before `not_before_s`. Returns how
/// many sessions ended.
pub async fn end_all_sessions(
    store: &Store,
    feed: &RevocationFeed,
    subject: &str,
    not_before_s: i64,
) -> Result<usize, AccountError> {
    let ended = store.end_sessions_of(subject).await?;
    // Announce every ended session even if one announcement fails: the
    // sessions are gone already, and a rerun would not find them again.
    let mut failure = None;
    for session_id in &ended {
        if let Err(err) = feed.session_ended(session_id).await {
            failure = Some(err);
        }
    }
    if let Err(err) = feed.subject_cut_off(subject, not_before_s).await {
        failure = Some(err);
    }
    tracing::info!(
        sub = subject,
        sessions = ended.len(),
        "all sessions revoked by an administrator"
    );
    match failure {
        Some(err) => Err(err.into()),
        None => Ok(ended.len()),
    }
}

/// Disables the user `name`: no new logins, every session ended, every
/// access token refused by watching interceptors. Returns the sessions ended.
pub async fn disable_user(
    store: &Store,
    feed: &RevocationFeed,
    name: &str,
) -> Result<usize, AccountError> {
    if !store.set_user_disabled(name, true).await? {
        return Err(AccountError::NoSuchUser(name.to_owned()));
    }
    // Tokens issued up to the end of this second, too: the user is locked
    // out, so no legitimate token can be issued after it.
    let cutoff = crate::now_ms().div_euclid(1000) + 1;
    end_all_sessions(store, feed, name, cutoff).await
}

/// Lets a disabled user log in again.
pub async fn enable_user(store: &Store, name: &str) -> Result<(), AccountError> {
    if !store.set_user_disabled(name, false).await? {
        return Err(AccountError::NoSuchUser(name.to_owned()));
    }
    Ok(())
}

/// Creates the demo user and demo client and prints their credentials.
pub async fn seed_demo(store: &Store, hasher: &PasswordHasher) -> Result<(), AccountError> {
    let scopes = ["read", "write", "admin"].map(String::from);
    add_user(store, hasher, DEMO_USER, &scopes, DEMO_PASSWORD.to_owned()).await?;
    let secret = add_client(store, DEMO_CLIENT, &scopes[..1]).await?;
    tracing::warn!(
        "--dev: created demo accounts with well-known credentials; never use in production"
    );
    println!("demo user:   username={DEMO_USER} password={DEMO_PASSWORD} scopes=read,write,admin");
    println!("demo client: client_id={DEMO_CLIENT} client_secret={secret} scopes=read");
    Ok(())
}

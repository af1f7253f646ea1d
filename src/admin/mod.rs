//! Account administration: the workflows that change an account in the
//! store and announce the change on the revocation feed, so they sit above
//! both ([`crate::accounts`] and [`crate::revocations`] know nothing of them).
//!
//! This module creates accounts and makes the changes that revoke nothing:
//! new scopes (live sessions are narrowed at their next refresh) and
//! enabling an account. Changes that end sessions are in [`cutoff`]. Used by
//! the `tokend user` / `tokend client` commands, `tokend serve --dev` and the
//! authority's log-out-everywhere.

pub mod cutoff;

use crate::accounts::rules::ReservedNames;
use crate::accounts::{AccountError, certificates, checked, rules};
use crate::credentials::{NewClientSecret, PasswordHasher};
use crate::revocations::RevocationFeed;
use crate::store::{AccountChange, AccountKind, NewAccount, Store};

/// The demo user `tokend serve --dev` creates.
pub const DEMO_USER: &str = "demo";
/// The demo user's password: fixed, so the README walk-through can be pasted.
pub const DEMO_PASSWORD: &str = "demo-password";
/// The demo service client `tokend serve --dev` creates.
pub const DEMO_CLIENT: &str = "demo-client";
/// The demo client's secret: fixed, like the demo password, so the README
/// walk-through can be pasted. Only ever created by `--dev`, on the
/// embedded store.
pub const DEMO_CLIENT_SECRET: &str = "tkd_cs_demo-client-secret-for-make-run-only";

/// Fails if `name` belongs to the other kind of account.
async fn ensure_name_free(
    store: &Store,
    name: &str,
    kind: AccountKind,
) -> Result<(), AccountError> {
    let other = match kind {
        AccountKind::User => AccountKind::Client,
        AccountKind::Client => AccountKind::User,
    };
    if store.account(other, name).await?.is_some() {
        return Err(AccountError::NameTaken(name.to_owned(), other));
    }
    Ok(())
}

/// Creates the user `name` with `password` and `scopes`. Fails if the user
/// exists (even disabled): changing an account is an explicit command.
pub async fn add_user(
    store: &Store,
    hasher: &PasswordHasher,
    reserved: &ReservedNames,
    name: &str,
    scopes: &[String],
    password: String,
) -> Result<(), AccountError> {
    let scope = checked(name, scopes)?;
    if reserved.contains(name) {
        return Err(AccountError::Reserved(name.to_owned()));
    }
    if !rules::is_password(&password) {
        return Err(AccountError::BadPassword);
    }
    ensure_name_free(store, name, AccountKind::User).await?;
    if store.user(name).await?.is_some() {
        return Err(AccountError::Exists(AccountKind::User, name.to_owned()));
    }
    let password_hash = hasher.hash(password).await?;
    let account = NewAccount::User {
        password_hash: &password_hash,
    };
    match store.create_account(name, account, &scope).await? {
        Some(_) => Ok(()),
        None => Err(AccountError::Exists(AccountKind::User, name.to_owned())),
    }
}

/// What a new service client is allowed and how its certificates are
/// recognised.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewClient<'a> {
    /// Scopes it may be granted.
    pub scopes: &'a [String],
    /// Its logins must present a certificate naming it over mTLS, and its
    /// tokens are bound to it.
    pub require_cert: bool,
    /// The certificate identities (SANs) that are its own; none: the
    /// default naming rule.
    pub cert_identities: &'a [String],
}

/// Creates the service client `id` and returns its secret, which is stored
/// nowhere (only its digest). Fails if the client exists, or if another
/// client has one of the certificate identities.
pub async fn add_client(
    store: &Store,
    reserved: &ReservedNames,
    id: &str,
    client: NewClient<'_>,
) -> Result<String, AccountError> {
    let scope = checked(id, client.scopes)?;
    if reserved.contains(id) {
        return Err(AccountError::Reserved(id.to_owned()));
    }
    let identities = certificates::checked_identities(client.cert_identities)?;
    ensure_name_free(store, id, AccountKind::Client).await?;
    if store.client(id).await?.is_some() {
        return Err(AccountError::Exists(AccountKind::Client, id.to_owned()));
    }
    certificates::claim(store, id, &identities).await?;
    let new = NewClientSecret::generate();
    let account = NewAccount::Client {
        secret_digest: &new.digest,
        require_cert: client.require_cert,
        cert_identities: &identities,
    };
    match store.create_account(id, account, &scope).await {
        Ok(Some(_)) => Ok(new.secret),
        Ok(None) => Err(AccountError::Exists(AccountKind::Client, id.to_owned())),
        Err(err) => {
            certificates::release(store, id, &identities).await;
            Err(err.into())
        }
    }
}

/// Replaces the certificate identities of the client `id` (none: the
/// default naming rule). A cut-off: its tokens, and what was bound to a
/// certificate that no longer names it, stop working.
pub async fn set_cert_identities(
    store: &Store,
    feed: &RevocationFeed,
    id: &str,
    identities: &[String],
) -> Result<(), AccountError> {
    let identities = certificates::checked_identities(identities)?;
    let Some(before) = store.client(id).await? else {
        return Err(AccountError::NoSuchAccount(
            AccountKind::Client,
            id.to_owned(),
        ));
    };
    certificates::claim(store, id, &identities).await?;
    cutoff::end_client(store, feed, id, AccountChange::CertIdentities(&identities)).await?;
    let dropped: Vec<String> = before
        .cert_identities
        .into_iter()
        .filter(|old| !identities.contains(old))
        .collect();
    certificates::release(store, id, &dropped).await;
    Ok(())
}

/// Replaces an account's scopes. Live user sessions get the new scopes (at
/// most what they asked for at login) from their next refresh; every tokend
/// replica hears of the change through the revocation feed.
pub async fn set_scopes(
    store: &Store,
    feed: &RevocationFeed,
    kind: AccountKind,
    name: &str,
    scopes: &[String],
) -> Result<(), AccountError> {
    let scope = checked(name, scopes)?;
    change_without_cut_off(store, feed, kind, name, AccountChange::Scopes(&scope)).await
}

/// Lets a disabled user or service client log in again.
pub async fn enable(
    store: &Store,
    feed: &RevocationFeed,
    kind: AccountKind,
    name: &str,
) -> Result<(), AccountError> {
    change_without_cut_off(store, feed, kind, name, AccountChange::Enable).await
}

async fn change_without_cut_off(
    store: &Store,
    feed: &RevocationFeed,
    kind: AccountKind,
    name: &str,
    change: AccountChange<'_>,
) -> Result<(), AccountError> {
    let version = store
        .change_account(kind, name, change)
        .await?
        .ok_or_else(|| AccountError::NoSuchAccount(kind, name.to_owned()))?;
    feed.account_changed(name)
        .await
        .map_err(|source| AccountError::NotAnnounced {
            name: name.to_owned(),
            version,
            source,
        })
}

/// Sets the user `name`'s password (hashed with `hasher`), then ends every
/// session and cuts off every access token issued before; `progress` hears
/// the sessions ended so far.
pub async fn set_password(
    store: &Store,
    feed: &RevocationFeed,
    hasher: &PasswordHasher,
    name: &str,
    password: String,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<cutoff::Ended, AccountError> {
    if !rules::is_password(&password) {
        return Err(AccountError::BadPassword);
    }
    let hash = hasher.hash(password).await?;
    cutoff::end_user(store, feed, name, AccountChange::Password(&hash), progress).await
}

/// Gives the service client `id` a new secret and cuts off every token
/// issued with the old one; returns the new secret, stored nowhere.
pub async fn rotate_secret(
    store: &Store,
    feed: &RevocationFeed,
    id: &str,
) -> Result<String, AccountError> {
    let new = NewClientSecret::generate();
    cutoff::end_client(store, feed, id, AccountChange::Secret(&new.digest)).await?;
    Ok(new.secret)
}

/// States an administrator's change to an account (the audit log hears
/// it): the one event both the CLI and the administration API emit.
pub fn changed(event: &'static str, subject: &str, sessions_ended: Option<usize>) {
    crate::telemetry::record(&crate::facts::Fact::AccountChanged(
        crate::facts::AccountChanged {
            event,
            subject,
            sessions_ended,
        },
    ));
}

/// The well-known credentials of the demo accounts (`serve --dev`), which
/// the binary prints for the developer who ran `make run`.
#[derive(Debug, Clone, Copy)]
pub struct DemoAccounts;

impl std::fmt::Display for DemoAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "demo user:   username={DEMO_USER} password={DEMO_PASSWORD} scopes=read,write,admin,{}",
            crate::accounts::rules::ADMIN_SCOPE
        )?;
        write!(
            f,
            "demo client: client_id={DEMO_CLIENT} client_secret={DEMO_CLIENT_SECRET} scopes=read,{},{}",
            crate::revocations::WATCH_SCOPE,
            crate::accounts::rules::INTROSPECT_SCOPE
        )
    }
}

/// Creates the demo user and demo client; returns their credentials.
pub async fn seed_demo(
    store: &Store,
    hasher: &PasswordHasher,
) -> Result<DemoAccounts, AccountError> {
    let scopes = [
        "read",
        "write",
        "admin",
        crate::accounts::rules::ADMIN_SCOPE,
    ]
    .map(String::from);
    let reserved = ReservedNames::default();
    add_user(
        store,
        hasher,
        &reserved,
        DEMO_USER,
        &scopes,
        DEMO_PASSWORD.to_owned(),
    )
    .await?;
    let client_scopes = checked(
        DEMO_CLIENT,
        &[
            "read",
            crate::revocations::WATCH_SCOPE,
            crate::accounts::rules::INTROSPECT_SCOPE,
        ]
        .map(String::from),
    )?;
    let account = NewAccount::Client {
        secret_digest: &crate::credentials::client_secret_digest(DEMO_CLIENT_SECRET),
        require_cert: false,
        cert_identities: &[],
    };
    store
        .create_account(DEMO_CLIENT, account, &client_scopes)
        .await?;
    tracing::warn!(
        "--dev: created demo accounts with well-known credentials; never use in production"
    );
    Ok(DemoAccounts)
}

//! Accounts: users (argon2id password hashes, refresh sessions) and service
//! clients (tokend-generated secrets), which share one namespace of names
//! because both become the `sub` claim.
//!
//! - [`rules`]: what a valid name, scope and password is;
//! - [`certificates`]: which service client a client certificate speaks
//!   for (recorded identities, or the default naming rule);
//! - [`state`]: what each tokend replica caches of accounts' current state,
//!   so every Refresh can check the account without a store round trip.
//!
//! The workflows that change accounts and announce the change on the
//! revocation feed (creating, cutting off, disabling) are in
//! [`crate::admin`], above both this module and the feed.

pub mod certificates;
pub mod rules;
pub mod state;

use crate::credentials::HashError;
use crate::store::{AccountKind, StoreError};

pub use certificates::CertifiedClient;
pub use state::AccountStates;

/// Why an account could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The name is not a valid account name.
    #[error("{0:?} is not a valid name: use 1-128 letters, digits or . _ @ + -")]
    BadName(String),
    /// A scope is not a scope token.
    #[error("{0:?} is not a valid scope: use printable ASCII without spaces or quotes")]
    BadScope(String),
    /// Too many scopes.
    #[error("at most {} scopes", rules::MAX_SCOPES)]
    TooManyScopes,
    /// A certificate identity is not a SAN as certificates carry them.
    #[error(
        "{0:?} is not a certificate identity: use 1-256 printable ASCII characters without spaces, as the SAN appears in the certificate"
    )]
    BadIdentity(String),
    /// Too many certificate identities.
    #[error(
        "at most {} certificate identities per client",
        tokend_interceptor::certs::MAX_CERTIFICATE_NAMES
    )]
    TooManyIdentities,
    /// Another client's record lists the certificate identity.
    #[error("the certificate identity {0:?} belongs to the service client {1:?}")]
    IdentityTaken(String, String),
    /// The password is empty or too long.
    #[error("the password must be 1-{} bytes", rules::MAX_SECRET_LEN)]
    BadPassword,
    /// No such account (or it is being deleted).
    #[error("no {noun} called {name:?}", noun = .0.noun(), name = .1)]
    NoSuchAccount(AccountKind, String),
    /// The name is tokend's issuer name or default audience.
    #[error(
        "{0:?} is reserved: it is tokend's issuer name or default audience (--issuer, --audience)"
    )]
    Reserved(String),
    /// The account exists already; `add` never overwrites.
    #[error("{noun} {name:?} already exists; {hint}", noun = .0.noun(), name = .1, hint = change_hint(*.0))]
    Exists(AccountKind, String),
    /// The name is taken by the other kind of account.
    #[error("{name:?} is already a {noun}; users and service clients share one namespace", name = .0, noun = .1.noun())]
    NameTaken(String, AccountKind),
    /// The change is made, but it could not be put on the revocation feed:
    /// resource services (for a cut-off) or other tokend replicas (for new
    /// scopes) do not know of it yet.
    #[error(
        "the change to {name:?} is saved, but announcing it on the revocation feed failed \
         ({source}); run the command again"
    )]
    NotAnnounced {
        /// The account.
        name: String,
        /// Its version after the change.
        version: i64,
        /// Why.
        source: StoreError,
    },
    /// The cut-off holds, but ending the sessions stopped part way.
    #[error(
        "{name:?} is cut off (no session or token from before works any more), but ending its \
         sessions stopped after {ended}: {source}; run the command again to finish"
    )]
    SweepStopped {
        /// The account.
        name: String,
        /// Sessions ended before it stopped.
        ended: usize,
        /// Why.
        source: StoreError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
}

fn change_hint(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::User => {
            "change it with `tokend user set-password` or `tokend user set-scopes`"
        }
        AccountKind::Client => {
            "change it with `tokend client rotate-secret` or `tokend client set-scopes`"
        }
    }
}

/// Checks a name and scopes, returning the scopes as stored.
pub fn checked(name: &str, scopes: &[String]) -> Result<String, AccountError> {
    if !rules::is_account_name(name) {
        return Err(AccountError::BadName(name.to_owned()));
    }
    if scopes.len() > rules::MAX_SCOPES {
        return Err(AccountError::TooManyScopes);
    }
    if let Some(bad) = scopes.iter().find(|s| !rules::is_scope(s)) {
        return Err(AccountError::BadScope(bad.clone()));
    }
    Ok(rules::scope_string(scopes))
}

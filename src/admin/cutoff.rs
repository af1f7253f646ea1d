//! Ending everything of an account, at any number of sessions: the one path
//! behind log-out-everywhere (`RevokeAllSessions`, `tokend sessions
//! revoke-all`), `user disable`, `user delete`, `user set-password`,
//! `client rotate-secret` and `client delete`.
//!
//! 1. **Cut off**: one atomic change in the store raises the account's
//!    version. From then on no session from before can refresh (every
//!    Refresh checks the account) and tokend's own session RPCs refuse the
//!    account's older tokens.
//! 2. **Announce**: one feed entry, a subject cut-off carrying the new
//!    version, so every watching resource service refuses the subject's
//!    older access tokens at once, however many sessions there are.
//! 3. **Sweep**: end the user's listed sessions in batches, each with its own
//!    store deadline (nothing waits on the whole list), skipping sessions
//!    that began after the cut-off. Resumable: running the command again
//!    continues where a failed sweep stopped. The sweep frees memory; the
//!    cut-off already made the sessions useless.

use crate::accounts::AccountError;
use crate::revocations::RevocationFeed;
use crate::store::{AccountChange, AccountKind, Store, StoreError};

/// Sessions ended per sweep step.
pub const SWEEP_BATCH: usize = 500;

/// What a sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sweep {
    /// Sessions ended.
    pub ended: usize,
    /// Whether the whole index was swept (else it stopped at its limit).
    pub complete: bool,
}

/// What ending everything of an account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The account's new version: tokens and sessions below it are cut off.
    pub version: i64,
    /// The sessions swept.
    pub sweep: Sweep,
}

/// Raises `name`'s account version with `change` (which must be a cut-off)
/// and announces the cut-off on the feed. Returns the new version.
///
/// If the announcement fails the change stays made:
/// [`AccountError::NotAnnounced`] carries the version, and the caller
/// retries (the CLI asks the operator to run the command again).
pub async fn cut_off(
    store: &Store,
    feed: &RevocationFeed,
    kind: AccountKind,
    name: &str,
    change: AccountChange<'_>,
) -> Result<i64, AccountError> {
    debug_assert!(change.cuts_off());
    let version = store
        .change_account(kind, name, change)
        .await?
        .ok_or_else(|| AccountError::NoSuchAccount(kind, name.to_owned()))?;
    feed.subject_cut_off(name, version)
        .await
        .map_err(|source| AccountError::NotAnnounced {
            name: name.to_owned(),
            version,
            source,
        })?;
    Ok(version)
}

/// Ends the sessions of the user `subject` from below `version`, in batches
/// of [`SWEEP_BATCH`]; stops after `limit` sessions were looked at (`None`:
/// all of them). `progress` hears the running total after each batch.
pub async fn sweep_sessions(
    store: &Store,
    subject: &str,
    version: i64,
    limit: Option<usize>,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Sweep, StoreError> {
    let mut sweep = Sweep::default();
    let mut looked_at = 0usize;
    let mut from = 0;
    loop {
        let page = store.session_index_page(subject, from, SWEEP_BATCH).await?;
        looked_at = looked_at.saturating_add(page.session_ids.len());
        sweep.ended += store
            .end_sessions(subject, &page.session_ids, version)
            .await?;
        progress(sweep.ended);
        match page.next {
            None => {
                sweep.complete = true;
                return Ok(sweep);
            }
            Some(_) if limit.is_some_and(|limit| looked_at >= limit) => return Ok(sweep),
            Some(next) => from = next,
        }
    }
}

/// Cuts off the user `name` with `change` (log out everywhere, disable,
/// delete, new password), then sweeps all its sessions; a deleted user's
/// record goes last.
pub async fn end_user(
    store: &Store,
    feed: &RevocationFeed,
    name: &str,
    change: AccountChange<'_>,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Ended, AccountError> {
    let version = cut_off(store, feed, AccountKind::User, name, change).await?;
    let mut ended = 0;
    let mut counting = |n: usize| {
        ended = n;
        progress(n);
    };
    let sweep = sweep_sessions(store, name, version, None, &mut counting)
        .await
        .map_err(|source| AccountError::SweepStopped {
            name: name.to_owned(),
            ended,
            source,
        })?;
    if change == AccountChange::Delete {
        store.remove_account(AccountKind::User, name).await?;
    }
    Ok(Ended { version, sweep })
}

/// Cuts off the service client `id` with `change` (new secret, disable,
/// delete): it has no sessions, and its tokens are refused from the
/// announcement on. A second announcement, an actor cut-off, revokes the
/// delegated tokens it obtained through Exchange (for any subject), so
/// what a compromised service minted dies with its credentials.
pub async fn end_client(
    store: &Store,
    feed: &RevocationFeed,
    id: &str,
    change: AccountChange<'_>,
) -> Result<i64, AccountError> {
    let version = cut_off(store, feed, AccountKind::Client, id, change).await?;
    feed.actor_cut_off(id, version)
        .await
        .map_err(|source| AccountError::NotAnnounced {
            name: id.to_owned(),
            version,
            source,
        })?;
    if change == AccountChange::Delete {
        let identities = store
            .client(id)
            .await?
            .map(|c| c.cert_identities)
            .unwrap_or_default();
        store.remove_account(AccountKind::Client, id).await?;
        crate::accounts::certificates::release(store, id, &identities).await;
    }
    Ok(version)
}

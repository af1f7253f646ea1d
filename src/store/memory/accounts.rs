//! Accounts in memory: users and service clients, with their versions.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{MemoryStore, next_version};
use crate::store::{AccountChange, AccountKind, ClientRecord, NewAccount, StoreError, UserRecord};

impl MemoryStore {
    /// The user called `name`, if any.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.lock()?.users.get(name).cloned())
    }

    /// The service client `id`, if any.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        Ok(self.lock()?.clients.get(id).cloned())
    }

    /// Creates an account unless one of that kind and name exists.
    pub async fn create_account(
        &self,
        name: &str,
        account: NewAccount<'_>,
        scope: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut state = self.lock()?;
        let version = next_version(0, self.clock.now_us());
        let created_ms = self.clock.now_ms();
        let created = match account {
            NewAccount::User { password_hash } => {
                if state.users.contains_key(name) {
                    return Ok(None);
                }
                let user = UserRecord {
                    password_hash: password_hash.to_owned(),
                    scope: scope.to_owned(),
                    disabled: false,
                    deleting: false,
                    version,
                    created_ms,
                };
                state.users.insert(name.to_owned(), user);
                version
            }
            NewAccount::Client {
                secret_digest,
                require_cert,
                cert_identities,
            } => {
                if state.clients.contains_key(name) {
                    return Ok(None);
                }
                let client = ClientRecord {
                    secret_digest: *secret_digest,
                    scope: scope.to_owned(),
                    version,
                    require_cert,
                    disabled: false,
                    cert_identities: cert_identities.to_vec(),
                    created_ms,
                };
                state.clients.insert(name.to_owned(), client);
                version
            }
        };
        Ok(Some(created))
    }

    /// Changes an existing account; the same decisions as `account_change.lua`.
    pub async fn change_account(
        &self,
        kind: AccountKind,
        name: &str,
        change: AccountChange<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let now_us = self.clock.now_us();
        let mut state = self.lock()?;
        let version = match kind {
            AccountKind::User => {
                let Some(user) = state.users.get_mut(name) else {
                    return Ok(None);
                };
                if user.deleting && change != AccountChange::Delete {
                    return Ok(None);
                }
                match change {
                    AccountChange::Password(hash) => user.password_hash = hash.to_owned(),
                    AccountChange::Scopes(scope) => user.scope = scope.to_owned(),
                    AccountChange::Disable => user.disabled = true,
                    AccountChange::Enable => user.disabled = false,
                    AccountChange::Delete => user.deleting = true,
                    AccountChange::CutOff => {}
                    AccountChange::Secret(_) | AccountChange::CertIdentities(_) => {
                        return Ok(None);
                    }
                }
                if change.cuts_off() {
                    user.version = next_version(user.version, now_us);
                }
                user.version
            }
            AccountKind::Client => {
                let Some(client) = state.clients.get_mut(name) else {
                    return Ok(None);
                };
                match change {
                    AccountChange::Secret(digest) => client.secret_digest = *digest,
                    AccountChange::CertIdentities(ids) => client.cert_identities = ids.to_vec(),
                    AccountChange::Scopes(scope) => client.scope = scope.to_owned(),
                    AccountChange::Disable => client.disabled = true,
                    AccountChange::Enable => client.disabled = false,
                    AccountChange::CutOff | AccountChange::Delete => {}
                    AccountChange::Password(_) => return Ok(None),
                }
                if change.cuts_off() {
                    client.version = next_version(client.version, now_us);
                }
                client.version
            }
        };
        Ok(Some(version))
    }

    /// Removes an account record.
    pub async fn remove_account(&self, kind: AccountKind, name: &str) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        match kind {
            AccountKind::User => {
                state.users.remove(name);
                state.index.remove(name);
            }
            AccountKind::Client => {
                state.clients.remove(name);
            }
        }
        Ok(())
    }

    /// Up to `limit` names of `kind` accounts starting with `prefix`, after
    /// `after` (exclusive), in byte order.
    pub async fn account_names(
        &self,
        kind: AccountKind,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let state = self.lock()?;
        let from = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Ok(match kind {
            AccountKind::User => first_names(&state.users, &from, prefix, limit),
            AccountKind::Client => first_names(&state.clients, &from, prefix, limit),
        })
    }

    /// The client that claimed a certificate identity.
    pub async fn certificate_owner(&self, identity: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock()?.cert_owners.get(identity).cloned())
    }

    /// Compare-and-set of a certificate identity's owner.
    pub async fn swap_certificate_owner(
        &self,
        identity: &str,
        expected: Option<&str>,
        owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        if state.cert_owners.get(identity).map(String::as_str) != expected {
            return Ok(false);
        }
        match owner {
            Some(owner) => state
                .cert_owners
                .insert(identity.to_owned(), owner.to_owned()),
            None => state.cert_owners.remove(identity),
        };
        Ok(true)
    }
}

/// The first `limit` keys of `map` from `from` that start with `prefix`.
fn first_names<V>(
    map: &BTreeMap<String, V>,
    from: &Bound<String>,
    prefix: &str,
    limit: usize,
) -> Vec<String> {
    map.range((from.clone(), Bound::Unbounded))
        .map(|(name, _)| name)
        .take_while(|name| name.starts_with(prefix))
        .take(limit)
        .cloned()
        .collect()
}

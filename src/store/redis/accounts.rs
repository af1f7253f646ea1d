//! Accounts in Redis: one hash per user (which also holds the user's session
//! index) and per service client. Created and changed only by Lua scripts,
//! so a change never races another into a half-written account.

use redis::AsyncCommands;

use super::RedisStore;
use super::reply::number_or;
use super::script::ScriptCall;
use crate::store::{AccountChange, AccountKind, ClientRecord, NewAccount, StoreError, UserRecord};

/// A client record's fields as `HMGET` returns them: the secret digest,
/// then scope, version, require-cert, disabled, certificate identities and
/// creation time.
type ClientFields = (
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl RedisStore {
    fn account_key(&self, kind: AccountKind, name: &str) -> String {
        match kind {
            AccountKind::User => self.keys.user(name),
            AccountKind::Client => self.keys.client(name),
        }
    }

    /// The user called `name`, if any.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = self.keys.user(name);
        let mut read = redis::cmd("HMGET");
        read.arg(&key)
            .arg(&["ph", "scope", "disabled", "dl", "ep", "ct"]);
        // From the primary: a login decides on it, and its session is
        // written there.
        let fields: [Option<String>; 6] = self.read_on_primary(&key, read).await?;
        let [hash, scope, disabled, deleting, version, created] = fields;
        let Some(password_hash) = hash else {
            return Ok(None);
        };
        Ok(Some(UserRecord {
            password_hash,
            scope: scope.unwrap_or_default(),
            disabled: disabled.as_deref() == Some("1"),
            deleting: deleting.as_deref() == Some("1"),
            version: number_or(version.as_ref(), 0)?,
            created_ms: number_or(created.as_ref(), 0)?,
        }))
    }

    /// The service client `id`, if any.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let key = self.keys.client(id);
        let mut read = redis::cmd("HMGET");
        read.arg(&key)
            .arg(&["sd", "scope", "ep", "rc", "disabled", "ci", "ct"]);
        let (digest, scope, version, require_cert, disabled, identities, created): ClientFields =
            self.read_on_primary(&key, read).await?;
        let Some(digest) = digest else {
            return Ok(None);
        };
        let secret_digest = <[u8; 32]>::try_from(digest.as_slice())
            .map_err(|_| StoreError::Corrupt(format!("client {id}: bad secret digest")))?;
        Ok(Some(ClientRecord {
            secret_digest,
            scope: scope.unwrap_or_default(),
            version: number_or(version.as_ref(), 0)?,
            require_cert: require_cert.as_deref() == Some("1"),
            disabled: disabled.as_deref() == Some("1"),
            cert_identities: identities
                .unwrap_or_default()
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            created_ms: number_or(created.as_ref(), 0)?,
        }))
    }

    /// Creates an account with `account_create.lua`, listed in its kind's
    /// directory first (so no account exists unlisted; a directory entry
    /// whose account was never made is skipped by listings).
    pub async fn create_account(
        &self,
        name: &str,
        account: NewAccount<'_>,
        scope: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let _: i64 = self
            .bounded(conn.zadd(self.keys.directory(account.kind()), name, 0))
            .await?;
        let mut invocation = ScriptCall::new(&self.scripts.account_create);
        invocation.key(self.account_key(account.kind(), name));
        match account {
            NewAccount::User { password_hash } => {
                invocation
                    .arg("ph")
                    .arg(password_hash)
                    .arg("disabled")
                    .arg("0");
            }
            NewAccount::Client {
                secret_digest,
                require_cert,
                cert_identities,
            } => {
                invocation
                    .arg("sd")
                    .arg(secret_digest.as_slice())
                    .arg("rc")
                    .arg(if require_cert { "1" } else { "0" });
                if !cert_identities.is_empty() {
                    invocation.arg("ci").arg(cert_identities.join(" "));
                }
            }
        }
        invocation
            .arg("scope")
            .arg(scope)
            .arg("ct")
            .arg(self.clock.now_ms());
        self.write(invocation).await
    }

    /// Changes an account with `account_change.lua`.
    pub async fn change_account(
        &self,
        kind: AccountKind,
        name: &str,
        change: AccountChange<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let mut invocation = ScriptCall::new(&self.scripts.account_change);
        invocation.key(self.account_key(kind, name));
        match (kind, change) {
            (AccountKind::User, AccountChange::Password(hash)) => {
                invocation.arg("ph").arg(hash);
            }
            (AccountKind::Client, AccountChange::Secret(digest)) => {
                invocation.arg("sd").arg(digest.as_slice());
            }
            (AccountKind::Client, AccountChange::CertIdentities(identities)) => {
                invocation.arg("ci").arg(identities.join(" "));
            }
            (_, AccountChange::Scopes(scope)) => {
                invocation.arg("scope").arg(scope);
            }
            (_, AccountChange::Disable) => {
                invocation.arg("disable");
            }
            (_, AccountChange::Enable) => {
                invocation.arg("enable");
            }
            // A client has no sessions to sweep: its record goes right after
            // the cut-off.
            (_, AccountChange::CutOff) | (AccountKind::Client, AccountChange::Delete) => {
                invocation.arg("cutoff");
            }
            (AccountKind::User, AccountChange::Delete) => {
                invocation.arg("delete");
            }
            // Passwords are for users, secrets for clients.
            (AccountKind::User, AccountChange::Secret(_) | AccountChange::CertIdentities(_))
            | (AccountKind::Client, AccountChange::Password(_)) => return Ok(None),
        }
        self.write(invocation).await
    }

    /// Removes an account record (with a user's session index), then its
    /// directory entry.
    pub async fn remove_account(&self, kind: AccountKind, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = self.bounded(conn.del(self.account_key(kind, name))).await?;
        let _: i64 = self
            .bounded(conn.zrem(self.keys.directory(kind), name))
            .await?;
        Ok(())
    }

    /// Up to `limit` names from `kind`'s directory starting with `prefix`,
    /// after `after` (exclusive), in byte order (`ZRANGE BYLEX`). Names
    /// are printable ASCII, so `prefix` followed by 0xff bounds them.
    pub async fn account_names(
        &self,
        kind: AccountKind,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let min: Vec<u8> = match after {
            Some(after) if after >= prefix => [b"(", after.as_bytes()].concat(),
            _ if prefix.is_empty() => b"-".to_vec(),
            _ => [b"[", prefix.as_bytes()].concat(),
        };
        let max: Vec<u8> = if prefix.is_empty() {
            b"+".to_vec()
        } else {
            [b"[", prefix.as_bytes(), &[0xff]].concat()
        };
        let mut conn = self.conn();
        self.bounded(
            redis::cmd("ZRANGE")
                .arg(self.keys.directory(kind))
                .arg(min)
                .arg(max)
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn),
        )
        .await
    }

    /// The client that claimed a certificate identity.
    pub async fn certificate_owner(&self, identity: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        self.bounded(conn.get(self.keys.cert_owner(identity))).await
    }

    /// Compare-and-set of a certificate identity's owner, with
    /// `cert_owner.lua`.
    pub async fn swap_certificate_owner(
        &self,
        identity: &str,
        expected: Option<&str>,
        owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut invocation = ScriptCall::new(&self.scripts.cert_owner);
        invocation
            .key(self.keys.cert_owner(identity))
            .arg(expected.unwrap_or_default())
            .arg(owner.unwrap_or_default());
        let swapped: i64 = self.write(invocation).await?;
        Ok(swapped == 1)
    }
}

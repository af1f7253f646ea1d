//! Failed-login counters in Redis: small hashes (`c` count, `t` last
//! failure) that expire an hour after their last failure, so an attacker
//! cannot make them outlive their purpose. Counters of one account share its
//! hash tag; a source's counter lives on its own.

use futures_util::future::try_join_all;
use redis::AsyncCommands;

use super::RedisStore;
use crate::store::{FailureScope, Failures, StoreError};

impl RedisStore {
    fn failure_key(&self, scope: &FailureScope) -> String {
        match scope {
            FailureScope::Account(name) => self.keys.throttle(name),
            FailureScope::AccountSource(name, source) => self.keys.throttle_source(name, source),
            FailureScope::Source(source) => self.keys.source(source),
        }
    }

    /// The counters of `scopes`, in order (read at once).
    pub async fn failures(&self, scopes: &[FailureScope]) -> Result<Vec<Failures>, StoreError> {
        let reads = scopes.iter().map(|scope| {
            let key = self.failure_key(scope);
            async move {
                let mut conn = self.conn();
                let (count, last): (Option<u32>, Option<i64>) =
                    self.bounded(conn.hmget(&key, &["c", "t"])).await?;
                Ok::<_, StoreError>(Failures {
                    count: count.unwrap_or(0),
                    last_ms: last.unwrap_or(0),
                })
            }
        });
        try_join_all(reads).await
    }

    /// Counts one failure in each of `scopes`.
    pub async fn record_failure(
        &self,
        scopes: &[FailureScope],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let writes = scopes.iter().map(|scope| {
            let key = self.failure_key(scope);
            async move {
                let mut conn = self.conn();
                let mut pipe = redis::pipe();
                pipe.hincr(&key, "c", 1)
                    .ignore()
                    .hset(&key, "t", now_ms)
                    .ignore()
                    .pexpire(&key, ttl_ms)
                    .ignore();
                self.bounded(pipe.query_async::<()>(&mut conn)).await
            }
        });
        try_join_all(writes).await.map(|_| ())
    }

    /// Forgets the counters of `scopes`.
    pub async fn clear_failures(&self, scopes: &[FailureScope]) -> Result<(), StoreError> {
        let deletes = scopes.iter().map(|scope| {
            let key = self.failure_key(scope);
            async move {
                let mut conn = self.conn();
                self.bounded(conn.del::<_, i64>(&key)).await
            }
        });
        try_join_all(deletes).await.map(|_| ())
    }

    /// Whether `source` logged in to `account` recently.
    pub async fn is_known_source(&self, account: &str, source: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        self.bounded(conn.exists(self.keys.known_source(account, source)))
            .await
    }

    /// Remembers a source that logged in to `account`.
    pub async fn remember_source(
        &self,
        account: &str,
        source: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let ttl = u64::try_from(ttl_ms.max(1)).unwrap_or(1);
        self.bounded(conn.pset_ex::<_, _, ()>(self.keys.known_source(account, source), 1, ttl))
            .await
    }

    /// Takes the account's login turn.
    pub async fn take_login_turn(&self, account: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        self.take_slot(self.keys.login_turn(account), ttl_ms).await
    }

    /// Takes `subject`'s self cut-off slot.
    pub async fn take_cut_off_slot(&self, subject: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        self.take_slot(self.keys.cut_off_slot(subject), ttl_ms)
            .await
    }

    /// Sets `key` for `ttl_ms` unless it is set (`SET NX PX`): whether it
    /// was free.
    async fn take_slot(&self, key: String, ttl_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let taken: Option<String> = self
            .bounded(
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(taken.is_some())
    }

    /// Gives the account's login turn back.
    pub async fn release_login_turn(&self, account: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = self
            .bounded(conn.del(self.keys.login_turn(account)))
            .await?;
        Ok(())
    }
}

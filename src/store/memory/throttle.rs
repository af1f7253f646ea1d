//! Failed-login counters in memory.

use super::MemoryStore;
use crate::store::{FailureScope, Failures, StoreError};

impl MemoryStore {
    /// The counters of `scopes`, in order.
    pub async fn failures(&self, scopes: &[FailureScope]) -> Result<Vec<Failures>, StoreError> {
        let now = self.now_ms();
        let state = self.lock()?;
        Ok(scopes
            .iter()
            .map(|scope| match state.failures.get(scope) {
                Some((failures, until)) if *until > now => *failures,
                _ => Failures::default(),
            })
            .collect())
    }

    /// Counts one failure in each of `scopes`.
    pub async fn record_failure(
        &self,
        scopes: &[FailureScope],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        state.wrote(self.now_ms());
        for scope in scopes {
            let entry = state
                .failures
                .entry(scope.clone())
                .or_insert((Failures::default(), 0));
            if entry.1 <= now_ms {
                entry.0 = Failures::default();
            }
            entry.0.count = entry.0.count.saturating_add(1);
            entry.0.last_ms = now_ms;
            entry.1 = now_ms.saturating_add(ttl_ms);
        }
        Ok(())
    }

    /// Forgets the counters of `scopes`.
    pub async fn clear_failures(&self, scopes: &[FailureScope]) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        for scope in scopes {
            state.failures.remove(scope);
        }
        Ok(())
    }

    /// Whether `source` logged in to `account` recently.
    pub async fn is_known_source(&self, account: &str, source: &str) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let state = self.lock()?;
        Ok(state
            .known_sources
            .get(&(account.to_owned(), source.to_owned()))
            .is_some_and(|until| *until > now))
    }

    /// Remembers a source that logged in to `account`.
    pub async fn remember_source(
        &self,
        account: &str,
        source: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let until = self.now_ms().saturating_add(ttl_ms);
        let mut state = self.lock()?;
        state.wrote(self.now_ms());
        state
            .known_sources
            .insert((account.to_owned(), source.to_owned()), until);
        Ok(())
    }

    /// Takes the account's login turn unless someone holds it.
    pub async fn take_login_turn(&self, account: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        state.wrote(self.now_ms());
        if state.turns.get(account).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        state
            .turns
            .insert(account.to_owned(), now.saturating_add(ttl_ms));
        Ok(true)
    }

    /// Takes `subject`'s self cut-off slot unless it is taken.
    pub async fn take_cut_off_slot(&self, subject: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock()?;
        state.wrote(now);
        if state
            .cut_off_slots
            .get(subject)
            .is_some_and(|until| *until > now)
        {
            return Ok(false);
        }
        state
            .cut_off_slots
            .insert(subject.to_owned(), now.saturating_add(ttl_ms));
        Ok(true)
    }

    /// Gives the account's login turn back.
    pub async fn release_login_turn(&self, account: &str) -> Result<(), StoreError> {
        self.lock()?.turns.remove(account);
        Ok(())
    }
}

//! Callers that must be services: Exchange and Introspect take a service
//! client's own token for tokend, from a live account.

use std::sync::Arc;

use tokend_interceptor::Claims;

use super::{AuthError, Authority};
use crate::store::{AccountKind, AccountState};

impl Authority {
    /// A caller's own token: for tokend, not delegated, a service client's
    /// (a user's token, which belongs to a session, is refused with
    /// `for_user()`), from an account that is enabled and not cut off
    /// since. Returns the account's state.
    pub(super) async fn require_live_service(
        &self,
        caller: &Claims,
        for_user: impl FnOnce() -> AuthError,
    ) -> Result<Arc<AccountState>, AuthError> {
        if caller.aud() != self.issuer_name() {
            return Err(AuthError::WrongAudience);
        }
        if caller.is_delegated() {
            return Err(AuthError::ChainNotAllowed(
                "authenticate with the caller's own token, not a delegated one".into(),
            ));
        }
        if caller.sid().is_some() {
            return Err(for_user());
        }
        match self.accounts.get(AccountKind::Client, caller.sub()).await? {
            Some(state) if state.active && caller.av().unwrap_or(0) >= state.version => Ok(state),
            _ => Err(AuthError::SessionRevoked),
        }
    }
}

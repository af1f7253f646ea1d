//! [`PolicySource`]: the exchange policy in force. Read at start (a broken
//! file stops tokend from starting), then reloaded when the file's content
//! changes (checked every [`WATCH_INTERVAL`]) and on SIGHUP; a broken
//! update is logged and the previous policy kept (the interceptor's
//! [`Reloadable`], which the gate's policy uses too).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokend_interceptor::server::Reloadable;

use super::policy::{ExchangePolicy, PolicyError};

/// How often the policy file is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The policy in force, shared by every Exchange. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicySource(Reloadable<ExchangePolicy, PolicyError>);

impl PolicySource {
    /// A fixed policy (the empty one allows nothing).
    pub fn fixed(policy: ExchangePolicy) -> PolicySource {
        PolicySource(Reloadable::fixed(policy))
    }

    /// The policy in `path`, read now.
    pub fn load(path: &Path) -> Result<PolicySource, PolicyError> {
        Ok(PolicySource(Reloadable::load(path, ExchangePolicy::load)?))
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<ExchangePolicy> {
        self.0.current()
    }

    /// Reads the file again; on error the previous policy stays. Returns
    /// how many rows are in force.
    pub fn reload(&self) -> Result<usize, PolicyError> {
        let policy = self.0.reload()?;
        crate::telemetry::record(&crate::facts::Fact::ExchangePolicyRows(policy.len()));
        Ok(policy.len())
    }

    /// Checks the file every [`WATCH_INTERVAL`] and on SIGHUP, for the
    /// process's life. Must be called within a Tokio runtime.
    pub fn watch(&self) {
        self.0.watch(WATCH_INTERVAL, "exchange policy", |policy| {
            crate::telemetry::record(&crate::facts::Fact::ExchangePolicyRows(policy.len()));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = "[[exchange]]\nactor = \"orders\"\ntargets = [\"payments\"]\nscopes = [\"read\"]\nmax_ttl = \"1m\"\n";

    #[test]
    fn a_broken_update_keeps_the_previous_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exchange.toml");
        std::fs::write(&path, ROW).unwrap();
        let source = PolicySource::load(&path).unwrap();
        assert!(source.current().rule("orders", "payments").is_some());

        std::fs::write(&path, "[[exchange]\n").unwrap();
        assert!(source.reload().is_err());
        assert!(source.current().rule("orders", "payments").is_some());

        std::fs::write(&path, "").unwrap();
        assert_eq!(source.reload().unwrap(), 0);
        assert!(source.current().rule("orders", "payments").is_none());
    }

    #[test]
    fn a_missing_file_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PolicySource::load(&dir.path().join("none.toml")).is_err());
    }
}

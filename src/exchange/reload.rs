//! [`PolicySource`]: the exchange policy in force. Read at start (a broken
//! file stops tokend from starting), then checked every
//! [`WATCH_INTERVAL`] for a change of its modification time or size and
//! reloaded on SIGHUP. A broken update is logged and the previous policy
//! kept: a typo during an edit never opens or closes everything.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::policy::{ExchangePolicy, PolicyError};

/// How often the policy file is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The policy in force, shared by every Exchange. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicySource {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: RwLock<Arc<ExchangePolicy>>,
    /// The file, if the policy came from one.
    path: Option<PathBuf>,
    /// What the file looked like when last read.
    seen: Mutex<Option<Stamp>>,
    /// Held while reading and swapping, so a slow read cannot overwrite a
    /// newer one (the file watch and SIGHUP both reload).
    reloading: Mutex<()>,
}

/// A file's modification time and size: a change of either means a reload.
type Stamp = (Option<SystemTime>, u64);

impl PolicySource {
    /// A fixed policy (the empty one allows nothing).
    pub fn fixed(policy: ExchangePolicy) -> PolicySource {
        PolicySource {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(policy)),
                path: None,
                seen: Mutex::new(None),
                reloading: Mutex::new(()),
            }),
        }
    }

    /// The policy in `path`, read now.
    pub fn load(path: &Path) -> Result<PolicySource, PolicyError> {
        let stamp = stamp(path);
        let policy = ExchangePolicy::load(path)?;
        Ok(PolicySource {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(policy)),
                path: Some(path.to_owned()),
                seen: Mutex::new(stamp),
                reloading: Mutex::new(()),
            }),
        })
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<ExchangePolicy> {
        match self.inner.current.read() {
            Ok(policy) => Arc::clone(&policy),
            // Never poisoned (nothing panics while holding it); if it were,
            // allow nothing.
            Err(_) => Arc::new(ExchangePolicy::default()),
        }
    }

    /// Reads the file again; on error the previous policy stays.
    pub fn reload(&self) -> Result<usize, PolicyError> {
        let Some(path) = &self.inner.path else {
            return Ok(self.current().len());
        };
        let _reloading = self.inner.reloading.lock();
        let seen = stamp(path);
        let policy = ExchangePolicy::load(path)?;
        let rows = policy.len();
        if let Ok(mut current) = self.inner.current.write() {
            *current = Arc::new(policy);
        }
        if let Ok(mut stamp) = self.inner.seen.lock() {
            *stamp = seen;
        }
        crate::metrics::exchange_policy_rows(rows);
        Ok(rows)
    }

    /// Reloads if the file changed since it was last read. A file that
    /// cannot be used is reported once per change, not on every check.
    fn reload_if_changed(&self) {
        let Some(path) = &self.inner.path else {
            return;
        };
        let now = stamp(path);
        let changed = match self.inner.seen.lock() {
            Ok(mut seen) if *seen != now => {
                *seen = now;
                true
            }
            _ => false,
        };
        if changed {
            match self.reload() {
                Ok(rows) => info!(rows, "exchange policy file changed: reloaded"),
                Err(err) => {
                    warn!(error = %err, "exchange policy file cannot be used; keeping the previous policy")
                }
            }
        }
    }

    /// Checks the file every [`WATCH_INTERVAL`] and on SIGHUP, for the
    /// process's life. Must be called within a Tokio runtime.
    pub fn watch(&self) {
        if self.inner.path.is_none() {
            return;
        }
        let source = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(WATCH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // File reads block: off the async workers.
                let source = source.clone();
                let _ = tokio::task::spawn_blocking(move || source.reload_if_changed()).await;
            }
        });
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                return warn!(
                    "cannot listen for SIGHUP; the exchange policy is still reloaded when its file changes"
                );
            };
            let source = self.clone();
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let reloading = source.clone();
                    let reloaded = tokio::task::spawn_blocking(move || reloading.reload()).await;
                    let Ok(reloaded) = reloaded else { continue };
                    match reloaded {
                        Ok(rows) => info!(rows, "SIGHUP: exchange policy reloaded"),
                        Err(err) => {
                            warn!(error = %err, "SIGHUP: exchange policy cannot be used; keeping the previous one")
                        }
                    }
                }
            });
        }
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str =
        "[[exchange]]\nactor = \"orders\"\ntargets = [\"payments\"]\nscopes = [\"read\"]\n";

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
    fn a_changed_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exchange.toml");
        std::fs::write(&path, "").unwrap();
        let source = PolicySource::load(&path).unwrap();
        assert!(source.current().is_empty());
        std::fs::write(&path, ROW).unwrap();
        source.reload_if_changed();
        assert_eq!(source.current().len(), 1);
    }

    #[test]
    fn a_missing_file_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PolicySource::load(&dir.path().join("none.toml")).is_err());
    }
}

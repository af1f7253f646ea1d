//! The per-user session cap (`--max-sessions-per-user`): a login beyond it
//! ends the user's least recently used sessions.
//!
//! It runs after the login has answered, on a task of its own, and at most
//! once per user at a time on each replica: the user's session index can be
//! large (a log-out-everywhere with a hundred thousand sessions is swept in
//! the background), and reading it must never hold up a login.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::revocations::RevocationFeed;
use crate::store::{Store, StoreError};

/// Enforces the cap; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SessionCap {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    feed: RevocationFeed,
    max: usize,
    /// Users whose cap is being enforced now on this replica, with the
    /// session to keep on the next run if logins came in meanwhile.
    running: Mutex<HashMap<String, Option<String>>>,
}

impl SessionCap {
    /// At most `max` sessions per user (at least one).
    pub(crate) fn new(store: Store, feed: RevocationFeed, max: usize) -> SessionCap {
        SessionCap {
            inner: Arc::new(Inner {
                store,
                feed,
                max: max.max(1),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The most sessions a user keeps.
    pub(crate) fn max(&self) -> usize {
        self.inner.max
    }

    /// Ends `subject`'s sessions beyond the cap in the background, never
    /// `keep` (the one just created). If the cap is being enforced for
    /// `subject` already, that task runs once more when it is done, so a
    /// burst of logins ends at the cap.
    pub(crate) fn enforce_later(&self, subject: &str, keep: &str) {
        let Ok(mut running) = self.inner.running.lock() else {
            return;
        };
        if let Some(again) = running.get_mut(subject) {
            *again = Some(keep.to_owned());
            return;
        }
        running.insert(subject.to_owned(), None);
        drop(running);
        let cap = self.clone();
        let (subject, mut keep) = (subject.to_owned(), keep.to_owned());
        tokio::spawn(async move {
            loop {
                if let Err(err) = cap.enforce(&subject, &keep).await {
                    warn!(sub = %subject, error = %err, "could not end sessions beyond the cap");
                }
                let Ok(mut running) = cap.inner.running.lock() else {
                    return;
                };
                match running.get_mut(&subject).and_then(Option::take) {
                    Some(next) => keep = next,
                    None => {
                        running.remove(&subject);
                        return;
                    }
                }
            }
        });
    }

    /// Ends the least recently used sessions beyond the cap, and announces
    /// each.
    async fn enforce(&self, subject: &str, keep: &str) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let sessions = store.list_sessions(subject).await?;
        let excess = sessions.len().saturating_sub(self.inner.max);
        if excess == 0 {
            return Ok(());
        }
        let mut others: Vec<_> = sessions
            .into_iter()
            .filter(|s| s.session_id != keep)
            .collect();
        others.sort_by_key(|s| s.refreshed_ms);
        let victims: Vec<String> = others
            .into_iter()
            .take(excess)
            .map(|s| s.session_id)
            .collect();
        let ended = store.end_sessions(subject, &victims, i64::MAX).await?;
        crate::telemetry::record(&crate::facts::Fact::SessionsEnded(
            crate::facts::SessionsEnded {
                cause: crate::facts::EndCause::SessionCap,
                subject,
                sessions: crate::facts::Ended::Ids {
                    ids: &victims,
                    count: ended,
                },
                in_background: false,
            },
        ));
        for session_id in &victims {
            // Not a revocation anyone asked for: the login that made room
            // is not failed for it, and a failed announcement is retried
            // in the background.
            let _ = self.inner.feed.announce_session_ended(session_id).await;
        }
        Ok(())
    }
}

//! Background tasks the crate starts (key sync, the revocation watch), each
//! owned by a handle that stops it when dropped, so nothing outlives what
//! started it.

use std::future::Future;

/// A background task (key sync, revocation watch) that stops when this is
/// dropped: keep it as long as the task should run.
#[derive(Debug)]
#[must_use = "the task stops when its handle is dropped"]
pub struct Background(tokio::task::AbortHandle);

impl Background {
    /// Spawns `task` on the current Tokio runtime.
    pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Background {
        Background(tokio::spawn(task).abort_handle())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

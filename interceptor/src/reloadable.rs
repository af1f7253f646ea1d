//! [`Reloadable`]: a value read from a file (a policy), kept in force while
//! the service runs and read again when the file's content changes
//! (checked every few seconds) and on SIGHUP. A file that cannot be used is
//! logged, once per change, and the last good value kept: a typo during an
//! edit never opens or closes everything.
//!
//! Changes are noticed by content (a SHA-256 of the bytes), not by
//! modification time or size: an edit that keeps the size and restores the
//! time is still seen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// Largest file read, in bytes: a policy is configuration, not data.
pub const MAX_RELOADABLE_BYTES: u64 = 1024 * 1024;

/// Why a file could not be read (its content's problems are the parser's).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// It could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is larger than [`MAX_RELOADABLE_BYTES`].
    #[error("{0}: larger than {MAX_RELOADABLE_BYTES} bytes")]
    TooLarge(PathBuf),
}

/// Reads `path`, at most [`MAX_RELOADABLE_BYTES`] of it.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_RELOADABLE_BYTES {
        return Err(ReadError::TooLarge(path.to_owned()));
    }
    std::fs::read(path).map_err(io)
}

/// How a file's content becomes the value.
type Parse<T, E> = dyn Fn(&Path) -> Result<T, E> + Send + Sync;

/// A value kept in force from a file. Cheap to clone; clones share it.
pub struct Reloadable<T, E> {
    inner: Arc<Inner<T, E>>,
}

impl<T, E> Clone for Reloadable<T, E> {
    fn clone(&self) -> Self {
        Reloadable {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T, E> std::fmt::Debug for Reloadable<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("path", &self.inner.source.as_ref().map(|(path, _)| path))
            .finish_non_exhaustive()
    }
}

struct Inner<T, E> {
    current: RwLock<Arc<T>>,
    /// The file, if the value came from one, and how to read it.
    source: Option<(PathBuf, Box<Parse<T, E>>)>,
    /// The content's digest when last looked at.
    seen: Mutex<Option<[u8; 32]>>,
    /// Held while reading and swapping, so a slow read cannot overwrite a
    /// newer one (the file watch and SIGHUP both reload).
    reloading: Mutex<()>,
}

impl<T: Send + Sync + 'static, E: std::fmt::Display + Send + 'static> Reloadable<T, E> {
    /// A value that never changes.
    pub fn fixed(value: T) -> Reloadable<T, E> {
        Reloadable {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(value)),
                source: None,
                seen: Mutex::new(None),
                reloading: Mutex::new(()),
            }),
        }
    }

    /// The value `parse` makes of the file at `path`, read now; a file
    /// that cannot be used is an error (a service should not start).
    pub fn load(
        path: &Path,
        parse: impl Fn(&Path) -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Reloadable<T, E>, E> {
        let seen = digest(path);
        let value = parse(path)?;
        Ok(Reloadable {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(value)),
                source: Some((path.to_owned(), Box::new(parse))),
                seen: Mutex::new(seen),
                reloading: Mutex::new(()),
            }),
        })
    }

    /// The value in force.
    pub fn current(&self) -> Arc<T> {
        match self.inner.current.read() {
            Ok(value) => Arc::clone(&value),
            // Never poisoned: nothing panics while holding it.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the file again now; on error the previous value stays.
    /// Returns the value in force afterwards.
    pub fn reload(&self) -> Result<Arc<T>, E> {
        let Some((path, parse)) = &self.inner.source else {
            return Ok(self.current());
        };
        let _reloading = self.inner.reloading.lock();
        let seen = digest(path);
        let value = Arc::new(parse(path)?);
        if let Ok(mut current) = self.inner.current.write() {
            *current = Arc::clone(&value);
        }
        if let Ok(mut stamp) = self.inner.seen.lock() {
            *stamp = seen;
        }
        Ok(value)
    }

    /// Reloads if the file's content changed since it was last looked at:
    /// `None` if it did not. A file that cannot be used is reported once
    /// per change.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<T>, E>> {
        let (path, _) = self.inner.source.as_ref()?;
        let now = digest(path);
        let changed = match self.inner.seen.lock() {
            Ok(mut seen) if *seen != now => {
                *seen = now;
                true
            }
            _ => false,
        };
        changed.then(|| self.reload())
    }

    /// Checks the file every `every` and reloads on SIGHUP, for the
    /// process's life, logging what happened as `what` (e.g. "exchange
    /// policy"); `reloaded` hears each new value. Must be called within a
    /// Tokio runtime.
    pub fn watch(
        &self,
        every: Duration,
        what: &'static str,
        reloaded: impl Fn(&T) + Send + Sync + 'static,
    ) {
        if self.inner.source.is_none() {
            return;
        }
        let reloaded = Arc::new(reloaded);
        let source = self.clone();
        let on_change = Arc::clone(&reloaded);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // File reads block: off the async workers.
                let checking = source.clone();
                let Ok(Some(result)) =
                    tokio::task::spawn_blocking(move || checking.reload_if_changed()).await
                else {
                    continue;
                };
                match result {
                    Ok(value) => {
                        info!("{what} file changed: reloaded");
                        on_change(&value);
                    }
                    Err(err) => {
                        warn!(error = %err, "{what} file changed but cannot be used; keeping the previous one");
                    }
                }
            }
        });
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                return warn!(
                    "cannot listen for SIGHUP; the {what} is still reloaded when its file changes"
                );
            };
            let source = self.clone();
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let reloading = source.clone();
                    let Ok(result) = tokio::task::spawn_blocking(move || reloading.reload()).await
                    else {
                        continue;
                    };
                    match result {
                        Ok(value) => {
                            info!("SIGHUP: {what} reloaded");
                            reloaded(&value);
                        }
                        Err(err) => {
                            warn!(error = %err, "SIGHUP: {what} cannot be used; keeping the previous one");
                        }
                    }
                }
            });
        }
    }
}

/// The SHA-256 of the file's content, if it can be read.
fn digest(path: &Path) -> Option<[u8; 32]> {
    let bytes = read_bounded(path).ok()?;
    Some(Sha256::digest(&bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(path: &Path) -> Result<u32, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        text.trim()
            .parse()
            .map_err(|_| format!("not a number: {text:?}"))
    }

    #[test]
    fn a_broken_update_keeps_the_last_good_value() {
        let dir = tempfile_dir();
        let path = dir.join("n");
        std::fs::write(&path, "1").unwrap();
        let value = Reloadable::load(&path, number).unwrap();
        std::fs::write(&path, "one").unwrap();
        assert!(value.reload().is_err());
        assert_eq!(*value.current(), 1);
        std::fs::write(&path, "2").unwrap();
        assert_eq!(*value.reload().unwrap(), 2);
    }

    #[test]
    fn a_same_size_edit_with_its_time_restored_is_seen() {
        let dir = tempfile_dir();
        let path = dir.join("n");
        std::fs::write(&path, "10").unwrap();
        let value = Reloadable::load(&path, number).unwrap();
        assert!(value.reload_if_changed().is_none(), "unchanged");
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "20").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(*value.reload_if_changed().unwrap().unwrap(), 20);
        assert!(value.reload_if_changed().is_none(), "seen once");
    }

    #[test]
    fn oversized_and_missing_files_are_errors() {
        let dir = tempfile_dir();
        assert!(read_bounded(&dir.join("none")).is_err());
        let big = dir.join("big");
        std::fs::write(
            &big,
            vec![b'x'; usize::try_from(MAX_RELOADABLE_BYTES).unwrap() + 1],
        )
        .unwrap();
        assert!(matches!(read_bounded(&big), Err(ReadError::TooLarge(_))));
    }

    /// A fresh directory under the system's temporary one.
    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "reloadable-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

//! The password-hashing pool: argon2id on threads of its own, never on the
//! async workers, with admission control.
//!
//! - One hash per thread at a time; callers wait in line for a permit, in
//!   order. The permit travels with the job to the hashing thread and is
//!   released only when the job is done, so a caller that gives up cannot
//!   let more jobs pile up than there are threads.
//! - A job whose caller has gone (a client deadline, a dropped connection)
//!   is skipped when its turn comes: no argon2 work for nobody.
//! - A caller who would wait longer than the budget (`max_wait`) is refused
//!   at once with [`HashError::Overloaded`] and a suggested retry delay,
//!   estimated from the line ahead and the measured time per hash.
//!
//! The threads run at normal priority: password logins get a fair share of
//! the CPU even while Refresh calls keep every core busy.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Argon2id cost: 19 MiB, 2 passes, 1 lane (the OWASP baseline).
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Longest argon2 output accepted from a stored hash.
const MAX_OUTPUT_LEN: usize = 64;

thread_local! {
    /// Each hashing thread's argon2 working memory (19 MiB), allocated once
    /// and reused: allocating it per hash leaves the allocator holding
    /// hundreds of MiB (measured: 20 logins took tokend from 8 to 223 MiB).
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `work` with `count` argon2 blocks of this thread's reusable memory.
fn with_blocks<R>(count: usize, work: impl FnOnce(&mut [Block]) -> R) -> R {
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        if blocks.len() < count {
            blocks.resize(count, Block::default());
        }
        work(&mut blocks[..count])
    })
}

/// Password hashing could not run.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The hashing pool has shut down.
    #[error("password hashing pool is gone")]
    PoolGone,
    /// argon2 refused the input (cannot happen with our parameters).
    #[error("password hashing failed")]
    Argon2,
    /// The line for a hashing thread is longer than the wait budget.
    #[error("password hashing is saturated; retry in {retry_after:?}")]
    Overloaded {
        /// About when a hashing thread should be free.
        retry_after: Duration,
    },
}

type Job = Box<dyn FnOnce() + Send>;

/// A bounded pool of threads for argon2id. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    jobs: Mutex<mpsc::Sender<Job>>,
    permits: Arc<Semaphore>,
    threads: usize,
    max_wait: Duration,
    /// Callers admitted and not done: waiting for a permit, queued or hashing.
    pending: AtomicUsize,
    /// Recent time per hash, ns (an exponentially weighted average).
    hash_ns: AtomicU64,
    /// Jobs skipped because their caller had gone.
    skipped: AtomicU64,
    /// Jobs run.
    hashed: AtomicU64,
    /// Verified against when an account does not exist, so an unknown user
    /// costs the same as a wrong password.
    decoy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("threads", &self.inner.threads)
            .field("max_wait", &self.inner.max_wait)
            .finish_non_exhaustive()
    }
}

/// Counts one admitted caller until dropped (with its job, or when the
/// caller gives up before its job was handed over).
struct Pending(Arc<PoolInner>);

impl Drop for Pending {
    fn drop(&mut self) {
        let before = self.0.pending.fetch_sub(1, Ordering::AcqRel);
        crate::telemetry::record(&crate::facts::Fact::Hash(crate::facts::Hash::InProgress(
            before.saturating_sub(1),
        )));
    }
}

impl PasswordHasher {
    /// A pool of `threads` hashing threads (at least one) whose callers
    /// wait at most about `max_wait` for a thread.
    pub fn new(threads: usize, max_wait: Duration) -> Result<PasswordHasher, HashError> {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("tokend-argon2-{index}"))
                .spawn(move || {
                    loop {
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| HashError::PoolGone)?;
        }
        // The decoy is hashed on a pool thread, so only pool threads ever
        // hold argon2 memory; it also gives the first time per hash.
        let (done, decoy) = mpsc::channel();
        let job: Job = Box::new(move || {
            let started = Instant::now();
            let hash = hash_now(b"decoy password, never a real one");
            let _ = done.send(hash.map(|hash| (hash, started.elapsed())));
        });
        sender.send(job).map_err(|_| HashError::PoolGone)?;
        let (decoy_hash, took) = decoy.recv().map_err(|_| HashError::PoolGone)??;
        Ok(PasswordHasher {
            inner: Arc::new(PoolInner {
                jobs: Mutex::new(sender),
                permits: Arc::new(Semaphore::new(threads)),
                threads,
                max_wait,
                pending: AtomicUsize::new(0),
                hash_ns: AtomicU64::new(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)),
                skipped: AtomicU64::new(0),
                hashed: AtomicU64::new(0),
                decoy_hash,
            }),
        })
    }

    /// The argon2id PHC string of `password`, with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_now(password.as_bytes())).await?
    }

    /// Whether `password` matches `phc`. With no `phc` (unknown account) the
    /// same work is done against a decoy and the answer is `false`.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.inner.decoy_hash.clone());
        let matches = self
            .run(move || verify_now(password.as_bytes(), &phc))
            .await?;
        Ok(known && matches)
    }

    /// How many jobs were skipped because their caller had gone.
    pub fn skipped(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// How many jobs ran.
    pub fn hashed(&self) -> u64 {
        self.inner.hashed.load(Ordering::Relaxed)
    }

    /// How long a caller arriving now would wait for a hashing thread.
    pub fn expected_wait(&self) -> Duration {
        let inner = &self.inner;
        self.wait_behind(inner.pending.load(Ordering::Acquire))
    }

    /// The wait behind `ahead` admitted callers: they are served `threads`
    /// at a time, each taking about the recent time per hash.
    fn wait_behind(&self, ahead: usize) -> Duration {
        let inner = &self.inner;
        let rounds = u32::try_from(ahead / inner.threads).unwrap_or(u32::MAX);
        Duration::from_nanos(inner.hash_ns.load(Ordering::Relaxed)).saturating_mul(rounds)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let inner = &self.inner;
        let ahead = inner.pending.fetch_add(1, Ordering::AcqRel);
        crate::telemetry::record(&crate::facts::Fact::Hash(crate::facts::Hash::InProgress(
            ahead.saturating_add(1),
        )));
        let pending = Pending(Arc::clone(inner));
        let wait = self.wait_behind(ahead);
        if wait > inner.max_wait {
            drop(pending);
            return Err(HashError::Overloaded {
                retry_after: wait.max(Duration::from_millis(100)),
            });
        }
        // In line, in order. The permit goes with the job.
        let queued = Instant::now();
        let permit: OwnedSemaphorePermit = Arc::clone(&inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| HashError::PoolGone)?;
        let (done, result) = oneshot::channel();
        let pool = Arc::clone(inner);
        let job: Job = Box::new(move || {
            crate::telemetry::record(&crate::facts::Fact::Hash(crate::facts::Hash::Waited(
                queued.elapsed(),
            )));
            if done.is_closed() {
                pool.skipped.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::record(&crate::facts::Fact::Hash(crate::facts::Hash::Dropped));
                return;
            }
            let started = Instant::now();
            let value = work();
            pool.hashed.fetch_add(1, Ordering::Relaxed);
            crate::telemetry::record(&crate::facts::Fact::Hash(crate::facts::Hash::Ran));
            let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let average = pool.hash_ns.load(Ordering::Relaxed);
            pool.hash_ns
                .store(average - average / 8 + took / 8, Ordering::Relaxed);
            // Free the thread's place before the caller hears back.
            drop((permit, pending));
            let _ = done.send(value);
        });
        inner
            .jobs
            .lock()
            .map_err(|_| HashError::PoolGone)?
            .send(job)
            .map_err(|_| HashError::PoolGone)?;
        result.await.map_err(|_| HashError::PoolGone)
    }
}

fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|_| HashError::Argon2)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` on the calling thread with tokend's argon2id cost and a
/// fresh salt, returning the PHC string. Blocking (~13 ms of CPU): for the
/// pool, and for benchmarks measuring the hashing rate.
pub fn hash_now(password: &[u8]) -> Result<String, HashError> {
    let argon2 = argon2()?;
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let mut out = [0u8; 32];
    with_blocks(argon2.params().block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password, &salt, &mut out, blocks)
    })
    .map_err(|_| HashError::Argon2)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|_| HashError::Argon2)?,
        salt: Some(Salt::new(&salt).map_err(|_| HashError::Argon2)?),
        hash: Some(Output::new(&out).map_err(|_| HashError::Argon2)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`. The cost parameters come
/// from the stored hash, so old hashes keep verifying after the defaults are
/// raised. Anything unparsable is a mismatch.
fn verify_now(password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if expected.len() > MAX_OUTPUT_LEN {
        return false;
    }
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = [0u8; MAX_OUTPUT_LEN];
    let out = &mut out[..expected.len()];
    let computed = with_blocks(argon2.params().block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password, salt.as_ref(), out, blocks)
    });
    computed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> PasswordHasher {
        PasswordHasher::new(threads, Duration::from_secs(60)).unwrap()
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_others_do_not() {
        let hasher = pool(1);
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            hasher
                .verify("correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("correct horse".into(), None).await.unwrap());
        assert!(
            !hasher
                .verify("x".into(), Some("not a phc".into()))
                .await
                .unwrap()
        );
        // Each hash has its own salt.
        assert_ne!(hasher.hash("correct horse".into()).await.unwrap(), phc);
    }

    #[test]
    fn hashes_made_elsewhere_with_other_costs_verify() {
        use argon2::PasswordHasher as _;
        for (memory, passes) in [(8 * 1024, 3), (32 * 1024, 1)] {
            let params = Params::new(memory, passes, 1, None).unwrap();
            let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"pw")
                .unwrap()
                .to_string();
            assert!(verify_now(b"pw", &phc), "{phc}");
            assert!(!verify_now(b"px", &phc));
        }
        // And ours verify with the reference implementation.
        use argon2::PasswordVerifier as _;
        let ours = hash_now(b"pw").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
    }

    #[tokio::test]
    async fn many_concurrent_hashes_all_complete() {
        let hasher = pool(2);
        let phc = hasher.hash("pw".into()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let hasher = hasher.clone();
            let phc = phc.clone();
            tasks.push(tokio::spawn(async move {
                let pw = if i % 2 == 0 { "pw" } else { "nope" };
                hasher.verify(pw.into(), Some(phc)).await.unwrap() == (i % 2 == 0)
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(hasher.inner.pending.load(Ordering::Acquire), 0);
    }

    /// Occupies the pool's only thread until the returned sender is dropped.
    async fn block_the_thread(hasher: &PasswordHasher) -> std::sync::mpsc::Sender<()> {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocker = hasher.clone();
        tokio::spawn(async move { blocker.run(move || gate.recv()).await });
        while hasher.inner.pending.load(Ordering::Acquire) < 1 {
            tokio::task::yield_now().await;
        }
        release
    }

    #[tokio::test]
    async fn callers_beyond_the_wait_budget_are_refused_at_once() {
        let hasher = PasswordHasher::new(1, Duration::ZERO).unwrap();
        let phc = hasher.hash("pw".into()).await.unwrap();
        let release = block_the_thread(&hasher).await;
        let refused = hasher.verify("pw".into(), Some(phc.clone())).await;
        let Err(HashError::Overloaded { retry_after }) = refused else {
            panic!("expected Overloaded, got {refused:?}")
        };
        assert!(retry_after >= Duration::from_millis(100));
        drop(release);
        while hasher.inner.pending.load(Ordering::Acquire) > 0 {
            tokio::task::yield_now().await;
        }
        assert!(hasher.verify("pw".into(), Some(phc)).await.unwrap());
    }

    #[tokio::test]
    async fn callers_who_gave_up_cost_no_hashing() {
        let hasher = pool(1);
        let phc = hasher.hash("pw".into()).await.unwrap();
        let release = block_the_thread(&hasher).await;
        let before = hasher.hashed();
        // 16 callers line up behind the busy thread and give up.
        for _ in 0..16 {
            let call = hasher.verify("pw".into(), Some(phc.clone()));
            assert!(
                tokio::time::timeout(Duration::from_millis(1), call)
                    .await
                    .is_err()
            );
        }
        assert_eq!(hasher.inner.pending.load(Ordering::Acquire), 1);
        drop(release);
        // The next caller is served right after the blocker, not after them.
        assert!(hasher.verify("pw".into(), Some(phc)).await.unwrap());
        assert_eq!(
            hasher.hashed(),
            before + 2,
            "the blocker and the last caller only"
        );
        assert_eq!(hasher.inner.pending.load(Ordering::Acquire), 0);
    }
}

//! [`StoreError`]: why the store could not answer, in the three kinds a
//! caller acts on (retry, retry, report).

/// Why the store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Unreachable: safe to retry.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Slower than the configured timeout: safe to retry.
    #[error("session store unavailable: Redis did not answer in time")]
    TimedOut,
    /// The store answered something this version does not understand.
    #[error("session store returned unexpected data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A repeated end of a session (a Revoke, reuse or RevokeSession
    /// presented again) while another repeat is announcing it: the caller
    /// is told to come back, and its retry finds the end announced, or
    /// announces it if that one failed.
    pub fn another_announces() -> StoreError {
        StoreError::Unavailable("another call is announcing this session's end".into())
    }

    /// How it failed, for the facts (`tokend_store_errors_total`'s `kind`).
    pub fn failure(&self) -> crate::facts::StoreFailure {
        match self {
            StoreError::TimedOut => crate::facts::StoreFailure::Timeout,
            StoreError::Unavailable(_) => crate::facts::StoreFailure::Unavailable,
            StoreError::Corrupt(_) => crate::facts::StoreFailure::Corrupt,
        }
    }
}

//! The revocation feed as the store keeps it: entries (what each says),
//! cursors (positions, ordered as numbers) and followers (waiting for new
//! entries from any process sharing the store).

use super::{StoreError, memory, redis};

/// Feed entries are kept this much longer than they matter (clock
/// differences between tokend hosts and the store, verifier leeways). No
/// entry that still matters is ever dropped, however many there are.
pub const FEED_RETENTION_MARGIN_MS: i64 = 60_000;

/// What a revocation-feed entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// Every access token of this session is revoked.
    Session {
        /// The session id.
        session_id: String,
    },
    /// A subject cut-off: every token of this subject with an account version
    /// below `version` is revoked.
    Subject {
        /// User name or client id.
        subject: String,
        /// The account's new version.
        version: i64,
    },
    /// An actor cut-off: every delegated token with this service client in
    /// its actor chain, exchanged under an account version below
    /// `version`, is revoked.
    Actor {
        /// The service client's id.
        actor: String,
        /// Its new account version.
        version: i64,
    },
    /// An account changed in a way that revokes nothing (new scopes,
    /// enabled): tokend replicas forget what they cached about it. Never sent
    /// to watchers.
    Account {
        /// User name or client id.
        subject: String,
    },
}

impl FeedEvent {
    /// What a newer entry of the same kind and subject supersedes this one
    /// by (`u:NAME`, `t:ID`, `a:NAME`): the feed keeps one live cut-off per
    /// subject and kind, so its size depends on how many accounts were cut
    /// off, not on how often. `None` for sessions (each is its own).
    pub fn live_key(&self) -> Option<String> {
        match self {
            FeedEvent::Session { .. } => None,
            FeedEvent::Subject { subject, .. } => Some(format!("u:{subject}")),
            FeedEvent::Actor { actor, .. } => Some(format!("t:{actor}")),
            FeedEvent::Account { subject } => Some(format!("a:{subject}")),
        }
    }

    /// The account version a cut-off carries.
    pub fn version(&self) -> Option<i64> {
        match self {
            FeedEvent::Subject { version, .. } | FeedEvent::Actor { version, .. } => Some(*version),
            FeedEvent::Session { .. } | FeedEvent::Account { .. } => None,
        }
    }

    /// Whether this (newer) entry may replace `older` of the same live key:
    /// never by a lower account version (a late retry), which covers less.
    pub fn supersedes(&self, older: &FeedEvent) -> bool {
        match (self.version(), older.version()) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        }
    }
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Position in the feed; resume after it.
    pub cursor: FeedCursor,
    /// What it says.
    pub event: FeedEvent,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// After this no token it covers can be unexpired, ms since the epoch.
    pub until_ms: i64,
}

/// A position in the revocation feed: a Redis stream id `MS-SEQ`, parsed
/// once and ordered as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedCursor {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl FeedCursor {
    /// The position just before everything appended at or after `ms`.
    pub fn at_ms(ms: i64) -> FeedCursor {
        FeedCursor {
            ms: u64::try_from(ms).unwrap_or(0),
            seq: 0,
        }
    }

    /// Parses `MS-SEQ` (decimal digits only); `None` if malformed or the
    /// largest possible position (nothing can follow it, and Redis refuses
    /// to read after it).
    pub fn parse(text: &str) -> Option<FeedCursor> {
        let (ms, seq) = text.split_once('-')?;
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        let cursor = FeedCursor {
            ms: number(ms)?,
            seq: number(seq)?,
        };
        (cursor != FeedCursor::MAX).then_some(cursor)
    }

    /// The largest position.
    pub const MAX: FeedCursor = FeedCursor {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The position right after this one.
    pub fn next(self) -> FeedCursor {
        match self.seq.checked_add(1) {
            Some(seq) => FeedCursor { ms: self.ms, seq },
            None => FeedCursor {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Waits for new revocation-feed entries, as they are appended by any
/// process sharing the store.
#[derive(Debug)]
pub enum FeedFollower {
    /// In-process notifications.
    Memory(memory::MemoryFollower),
    /// Blocking reads on a connection of its own.
    Redis(Box<redis::RedisFollower>),
}

impl FeedFollower {
    /// The last entry seen: entries after it are what [`next`](Self::next)
    /// returns.
    pub fn position(&self) -> FeedCursor {
        match self {
            FeedFollower::Memory(f) => f.position(),
            FeedFollower::Redis(f) => f.position(),
        }
    }

    /// Entries appended since the last call (since creation, the first
    /// time); waits up to a few seconds and may return none.
    pub async fn next(&mut self) -> Result<Vec<FeedEntry>, StoreError> {
        match self {
            FeedFollower::Memory(f) => f.next().await,
            FeedFollower::Redis(f) => f.next().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AccountChange;

    #[test]
    fn cursors_parse_strictly_and_order_as_numbers() {
        let a = FeedCursor::parse("1700000000000-9").unwrap();
        let b = FeedCursor::parse("1700000000000-10").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-9");
        assert_eq!(a.next(), FeedCursor::parse("1700000000000-10").unwrap());
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", " 1-2", "+1-2"] {
            assert_eq!(FeedCursor::parse(bad), None, "{bad:?}");
        }
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        assert_eq!(FeedCursor::parse(&max), None);
        assert_eq!(
            FeedCursor::parse(&"9".repeat(21).replace("99", "9-9")),
            None
        );
    }

    #[test]
    fn only_scopes_and_enabling_keep_the_version() {
        assert!(AccountChange::Password("x").cuts_off());
        assert!(AccountChange::Secret(&[0; 32]).cuts_off());
        assert!(AccountChange::Disable.cuts_off());
        assert!(AccountChange::CutOff.cuts_off());
        assert!(AccountChange::Delete.cuts_off());
        assert!(!AccountChange::Scopes("a").cuts_off());
        assert!(!AccountChange::Enable.cuts_off());
    }
}

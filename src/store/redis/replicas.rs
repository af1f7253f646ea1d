//! Which primaries have a replica in sync, by hash slot: what decides
//! whether a write waits for one (`--redis-replica-acks auto`).
//!
//! The map is refreshed from `ROLE` on every primary ([`Connector::survey`],
//! which the health check runs every second, and a write runs itself when
//! the map is older than [`STALE`]), and corrected at once by what each
//! write learns: every confirmed write carries a `ROLE` of the node that ran
//! it. One node (or a primary under Sentinel) is one shard of every slot.
//!
//! [`Connector::survey`]: super::link::Connector::survey

use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::link::{MAX_SLOT, Shard};

/// A map older than this is refreshed before the next write decides.
pub(super) const STALE: Duration = Duration::from_secs(2);

/// The hash slot of `key`: CRC16 of its hash tag (the part in the first
/// `{...}`, if any and not empty), as Redis Cluster computes it.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|b| *b == b'}')?;
            rest.get(..close).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tag) % (MAX_SLOT + 1)
}

/// The latest knowledge.
#[derive(Debug)]
struct Known {
    /// When it was surveyed; `None` before the first survey.
    surveyed: Option<Instant>,
    shards: Vec<Shard>,
}

/// Which slots' primaries have replicas in sync.
#[derive(Debug)]
pub(super) struct ReplicaMap {
    known: RwLock<Known>,
}

impl ReplicaMap {
    /// Nothing known yet: every primary is expected to have a replica (the
    /// safe guess: a write waits, and learns otherwise).
    pub(super) fn new() -> ReplicaMap {
        ReplicaMap {
            known: RwLock::new(Known {
                surveyed: None,
                shards: Vec::new(),
            }),
        }
    }

    /// Whether the primary of `slot` is believed to have a replica in sync.
    pub(super) fn expects_replica(&self, slot: u16) -> bool {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known
            .shards
            .iter()
            .find(|shard| serves(shard, slot))
            .is_none_or(|shard| shard.replicas_in_sync > 0)
    }

    /// The first slot of the shard serving `slot` (0 if unknown): writes
    /// are batched per shard.
    pub(super) fn shard_of(&self, slot: u16) -> u16 {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known
            .shards
            .iter()
            .find(|shard| serves(shard, slot))
            .and_then(|shard| shard.slots.iter().map(|(from, _)| *from).min())
            .unwrap_or(0)
    }

    /// Whether the map should be surveyed again before deciding.
    pub(super) fn stale(&self) -> bool {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known.surveyed.is_none_or(|at| at.elapsed() > STALE)
    }

    /// Replaces the map with a survey's result.
    pub(super) fn surveyed(&self, shards: Vec<Shard>) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        *known = Known {
            surveyed: Some(Instant::now()),
            shards,
        };
    }

    /// Corrects the shard of `slot` with what a write's `ROLE` said.
    pub(super) fn learned(&self, slot: u16, replicas_in_sync: usize) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        match known.shards.iter_mut().find(|shard| serves(shard, slot)) {
            Some(shard) => shard.replicas_in_sync = replicas_in_sync,
            None => known.shards.push(Shard {
                slots: vec![(slot, slot)],
                replicas_in_sync,
            }),
        }
    }
}

fn serves(shard: &Shard, slot: u16) -> bool {
    shard
        .slots
        .iter()
        .any(|(from, to)| (*from..=*to).contains(&slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags_as_redis_computes_them() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"tokend:session:{abc}"), slot(b"abc"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(
            slot(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn unknown_slots_expect_replicas_and_writes_correct_the_map() {
        let map = ReplicaMap::new();
        assert!(map.stale());
        assert!(map.expects_replica(7));
        map.surveyed(vec![
            Shard {
                slots: vec![(0, 100)],
                replicas_in_sync: 1,
            },
            Shard {
                slots: vec![(101, MAX_SLOT)],
                replicas_in_sync: 0,
            },
        ]);
        assert!(!map.stale());
        assert!(map.expects_replica(50));
        assert!(!map.expects_replica(5000));
        // A failover: slot 50's new primary has no replica yet.
        map.learned(50, 0);
        assert!(!map.expects_replica(0));
        map.learned(5000, 1);
        assert!(map.expects_replica(MAX_SLOT));
    }
}

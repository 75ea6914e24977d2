//! Event-id deduplication with a bounded memory.
//!
//! Ids are remembered as 128-bit XXH3 hashes (16 bytes each, collision odds negligible at
//! the window sizes used) in arrival order; the set answers membership in O(1). The window
//! keeps every id at least `dedupe_window_s` and at most `dedupe_max_events` ids, so memory
//! stays bounded whatever the event rate. Only the ordered list is serialised; the set is
//! rebuilt from it.

use crate::digest::{SumHash, hash_record};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are already uniform hashes: hashing them again would waste time.
#[derive(Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// Remembered event ids of one workspace. Decoding rebuilds the set and the digest
/// (`From<StoredDedupe>`), so a decoded value is whole however it was decoded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "StoredDedupe")]
pub(crate) struct Dedupe {
    order: VecDeque<(i64, u128)>,
    #[serde(skip)]
    seen: HashSet<u128, BuildHasherDefault<PassThroughHasher>>,
    /// The digest of `order` (see `crate::digest`), kept as ids come and go.
    #[serde(skip)]
    sum: SumHash,
}

/// What a snapshot holds of [`Dedupe`]: the ids in arrival order.
#[derive(Deserialize)]
struct StoredDedupe {
    order: VecDeque<(i64, u128)>,
}

impl From<StoredDedupe> for Dedupe {
    fn from(StoredDedupe { order }: StoredDedupe) -> Self {
        let mut dedupe = Dedupe { order, ..Dedupe::default() };
        dedupe.rebuild();
        dedupe
    }
}

/// Seed of a remembered id's hash in the state digest.
const DEDUPE_DIGEST_SEED: u64 = 0x6465_6475_7065;

/// An id's share of the digest: its own hash, and the hash of it with its predecessor
/// ([`pair_hash`]), so the sum pins the order as well as the set.
fn entry_hash(previous: Option<(i64, u128)>, entry: (i64, u128)) -> u64 {
    let own = hash_record(DEDUPE_DIGEST_SEED, &entry);
    previous.map_or(own, |previous| own.wrapping_add(pair_hash(previous, entry)))
}

fn pair_hash(previous: (i64, u128), entry: (i64, u128)) -> u64 {
    hash_record(DEDUPE_DIGEST_SEED, &(previous, entry))
}

impl Dedupe {
    pub(crate) fn hash(event_id: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
    }

    /// Whether `hash` is remembered.
    pub(crate) fn contains(&self, hash: u128) -> bool {
        self.seen.contains(&hash)
    }

    /// Records `hash` at `now_ms`; returns `false` if it was already remembered.
    pub(crate) fn insert(&mut self, hash: u128, now_ms: i64, window_ms: i64, max_events: usize) -> bool {
        if self.seen.contains(&hash) {
            return false;
        }
        while let Some(&(at, old)) = self.order.front() {
            if self.order.len() >= max_events || at < now_ms.saturating_sub(window_ms) {
                self.order.pop_front();
                self.seen.remove(&old);
                // The new front loses its predecessor: its share becomes its own hash alone.
                self.sum.remove(entry_hash(None, (at, old)));
                if let Some(&next) = self.order.front() {
                    self.sum.remove(pair_hash((at, old), next));
                }
            } else {
                break;
            }
        }
        let previous = self.order.back().copied();
        self.order.push_back((now_ms, hash));
        self.seen.insert(hash);
        self.sum.add(entry_hash(previous, (now_ms, hash)));
        true
    }

    fn rebuild(&mut self) {
        self.seen = self.order.iter().map(|&(_, hash)| hash).collect();
        self.sum = SumHash::default();
        let mut previous = None;
        for &entry in &self.order {
            self.sum.add(entry_hash(previous, entry));
            previous = Some(entry);
        }
    }

    /// What the state digest covers of the remembered ids, in order: their count and the sum of
    /// their shares.
    pub(crate) fn digest(&self) -> (u64, u64) {
        // Every field, so that a new one cannot be left out of the digest unnoticed (`seen` is
        // the set of `order`).
        let Dedupe { order, seen: _, sum } = self;
        (order.len() as u64, sum.value())
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_bounded_by_count_and_age() {
        let mut dedupe = Dedupe::default();
        assert!(dedupe.insert(1, 0, 1000, 3));
        assert!(!dedupe.insert(1, 10, 1000, 3));
        assert!(dedupe.insert(2, 20, 1000, 3));
        assert!(dedupe.insert(3, 30, 1000, 3));
        // A fourth id pushes out the oldest: at most three are remembered.
        assert!(dedupe.insert(4, 40, 1000, 3));
        assert_eq!(dedupe.len(), 3);
        assert!(dedupe.insert(1, 50, 1000, 3));
        // Past the window, old ids are forgotten even below the count.
        assert!(dedupe.insert(5, 5000, 1000, 3));
        assert_eq!(dedupe.len(), 1);
    }

    #[test]
    fn the_kept_digest_is_the_rebuilt_one_and_sees_the_order() {
        let mut dedupe = Dedupe::default();
        for (index, id) in [9u128, 4, 7, 1, 8, 2, 6, 3].into_iter().enumerate() {
            // Several ids per millisecond; the count bound evicts from the front.
            dedupe.insert(id, (index / 3) as i64, 1000, 5);
            let mut rebuilt = dedupe.clone();
            rebuilt.rebuild();
            assert_eq!(dedupe.digest(), rebuilt.digest(), "after inserting {id}");
        }
        let mut swapped = Dedupe::default();
        let mut ordered = Dedupe::default();
        for id in [1u128, 2] {
            ordered.insert(id, 0, 1000, 5);
        }
        for id in [2u128, 1] {
            swapped.insert(id, 0, 1000, 5);
        }
        assert_ne!(ordered.digest(), swapped.digest(), "same ids of one millisecond in another order");
    }
}

//! Event-id deduplication with a bounded memory.
//!
//! Ids are remembered as 128-bit XXH3 hashes (16 bytes each, collision odds negligible at
//! the window sizes used) in arrival order; the set answers membership in O(1). The window
//! keeps every id at least `dedupe_window_s` and at most `dedupe_max_events` ids, so memory
//! stays bounded whatever the event rate. Only the ordered list is serialised; the set is
//! rebuilt from it.

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

/// Remembered event ids of one workspace.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Dedupe {
    order: VecDeque<(i64, u128)>,
    #[serde(skip)]
    seen: HashSet<u128, BuildHasherDefault<PassThroughHasher>>,
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
            } else {
                break;
            }
        }
        self.order.push_back((now_ms, hash));
        self.seen.insert(hash);
        true
    }

    pub(crate) fn rebuild(&mut self) {
        self.seen = self.order.iter().map(|&(_, hash)| hash).collect();
    }

    #[cfg(test)]
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
}

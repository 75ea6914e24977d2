//! The entity map: O(1) lookups by id, deterministic everywhere it matters.
//!
//! Entities are looked up by string id several times per event; in a `BTreeMap` every lookup
//! is a chain of string comparisons (half the CPU time in the benchmark before this map).
//! [`Map`] hashes with FxHash, which has no random seed, so even its iteration order is the
//! same on every replica of the same build. Still, nothing in a decision iterates it: code
//! that walks entities does so through [`sorted_keys`], and snapshots store entries sorted by
//! key (`sorted` below), so the snapshot bytes do not depend on the hasher at all.

use rustc_hash::FxBuildHasher;
use std::collections::HashMap;

/// A hash map with the deterministic FxHash hasher.
pub(crate) type Map<K, V> = HashMap<K, V, FxBuildHasher>;

/// The keys of `map`, sorted.
pub(crate) fn sorted_keys<K: Ord + Clone, V>(map: &Map<K, V>) -> Vec<K> {
    let mut keys: Vec<K> = map.keys().cloned().collect();
    keys.sort_unstable();
    keys
}

/// Serde adapter: a [`Map`] as a sequence of `(key, value)` pairs sorted by key.
pub(crate) mod sorted {
    use super::Map;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::hash::Hash;

    pub(crate) fn serialize<K, V, S>(map: &Map<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Ord + Serialize,
        V: Serialize,
        S: Serializer,
    {
        let mut entries: Vec<(&K, &V)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        serializer.collect_seq(entries)
    }

    pub(crate) fn deserialize<'de, K, V, D>(deserializer: D) -> Result<Map<K, V>, D::Error>
    where
        K: Eq + Hash + Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let entries: Vec<(K, V)> = Vec::deserialize(deserializer)?;
        Ok(entries.into_iter().collect())
    }
}

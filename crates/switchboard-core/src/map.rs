//! The entity map: O(1) lookups by id, and an iteration order every replica shares.
//!
//! Entities are looked up by string id several times per event; in a `BTreeMap` every lookup
//! is a chain of string comparisons (half the CPU time of the benchmark when it was one).
//! [`Map`] is an `IndexMap`: a hash index over a vector of entries kept in insertion order.
//! Its iteration order is a pure function of the sequence of inserts and `swap_remove`s —
//! never of the hasher — so replicas that apply the same log iterate, and serialise, their
//! entities in the same order, and a state restored from a snapshot (which re-inserts in
//! stored order) continues exactly like the original. Removal must therefore always be
//! `swap_remove` (O(1) and deterministic); `shift_remove` would be O(n).

use rustc_hash::FxBuildHasher;

/// An insertion-ordered hash map with the seedless FxHash hasher.
pub(crate) type Map<K, V> = indexmap::IndexMap<K, V, FxBuildHasher>;

/// The keys of `map`, sorted (for listings shown to people).
pub(crate) fn sorted_keys<K: Ord + Clone, V>(map: &Map<K, V>) -> Vec<K> {
    let mut keys: Vec<K> = map.keys().cloned().collect();
    keys.sort_unstable();
    keys
}

/// Serde adapter that deserialises a [`Map`] with its exact length reserved up front.
///
/// Serde's default map visitor reserves at most about a megabyte and then grows by
/// doubling, which for a million conversations means copying hundreds of megabytes during a
/// restore. Postcard states the length before the entries, so the map is allocated once.
pub(crate) mod exact {
    use super::Map;
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::hash::Hash;
    use std::marker::PhantomData;

    /// Most entries reserved before any is read: a bound on what a corrupt length can cost.
    const RESERVE_MAX_ENTRIES: usize = 1 << 24;

    pub(crate) fn serialize<K: Serialize + Hash + Eq, V: Serialize, S: Serializer>(
        map: &Map<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        map.serialize(serializer)
    }

    pub(crate) fn deserialize<'de, K, V, D>(deserializer: D) -> Result<Map<K, V>, D::Error>
    where
        K: Eq + Hash + Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        struct ExactVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K: Eq + Hash + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for ExactVisitor<K, V> {
            type Value = Map<K, V>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let reserve = access.size_hint().unwrap_or(0).min(RESERVE_MAX_ENTRIES);
                let mut map = Map::with_capacity_and_hasher(reserve, Default::default());
                while let Some((key, value)) = access.next_entry()? {
                    map.insert(key, value);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(ExactVisitor(PhantomData))
    }
}

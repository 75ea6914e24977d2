//! The entity map: O(1) lookups by id, and an iteration order every replica shares.
//!
//! Entities are looked up by string id several times per event; in a `BTreeMap` every lookup
//! is a chain of string comparisons (half the CPU time of the benchmark when it was one).
//! [`Map`] is a hash index over a vector of entries kept in insertion order (the layout of
//! `indexmap`). Its iteration order is a pure function of the sequence of inserts and
//! `swap_remove`s — never of the hasher — so replicas that apply the same log iterate, and
//! serialise, their entities in the same order, and a state restored from a snapshot (which
//! re-inserts in stored order) continues exactly like the original. Removal is `swap_remove`
//! only (O(1) and deterministic).
//!
//! It is its own type rather than an `IndexMap` for the restore of a large state: decoding
//! first fills the entry vector (a sequential write) and only then builds the hash index over
//! it, in one pass whose working set (8 bytes per entry) stays in cache. Inserting entry by
//! entry interleaves a random probe of the index with each write of a new entry, and at a
//! million entries most of those probes missed the cache. The index is a [`Probe`]: one line
//! of it per lookup, where a `hashbrown` table read two.

use crate::probe::{Probe, Probed};
use rustc_hash::FxBuildHasher;
use serde::{Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// One entry: the key's hash (kept, so the index is rebuilt and moved without rehashing),
/// the key and the value.
#[derive(Clone)]
struct Slot<K, V> {
    hash: u64,
    key: K,
    value: V,
}

/// An insertion-ordered hash map with the seedless FxHash hasher.
#[derive(Clone)]
pub(crate) struct Map<K, V> {
    entries: Vec<Slot<K, V>>,
    /// Positions in `entries`, by the hash of their key.
    index: Probe,
}

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new(), index: Probe::default() }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Map<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

fn hash_of<Q: Hash + ?Sized>(key: &Q) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// Whether the entry at a position the index offers has `key`: the index's equality test.
fn holds<'a, K: Borrow<Q>, V, Q: Eq + ?Sized>(entries: &'a [Slot<K, V>], key: &'a Q) -> impl Fn(usize) -> bool + 'a {
    move |position| entries.get(position).is_some_and(|slot| slot.key.borrow() == key)
}

impl<K, V> Map<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry at `position`.
    pub(crate) fn get_index(&self, position: usize) -> Option<(&K, &V)> {
        self.entries.get(position).map(|slot| (&slot.key, &slot.value))
    }

    /// The entry at `position`, its value mutably.
    pub(crate) fn get_index_mut(&mut self, position: usize) -> Option<(&K, &mut V)> {
        self.entries.get_mut(position).map(|slot| (&slot.key, &mut slot.value))
    }

    /// Entries in order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        Iter(self.entries.iter())
    }

    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.entries.iter().map(|slot| &slot.key)
    }

    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.iter().map(|slot| &slot.value)
    }

    pub(crate) fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|slot| &mut slot.value)
    }
}

impl<K: Hash + Eq, V> Map<K, V> {
    /// The position of `key`'s entry.
    pub(crate) fn get_index_of<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = &self.entries;
        match entries.as_slice() {
            // Most workspaces have a few teams, many one: no hashing for a map of one.
            [] => None,
            [only] => (only.key.borrow() == key).then_some(0),
            _ => self.index.find(hash_of(key), holds(entries, key)),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_index_of(key).and_then(|position| self.entries.get(position)).map(|slot| &slot.value)
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_index_of(key).is_some()
    }

    /// Inserts `key` at the end, or replaces the value of its entry where it is; returns the
    /// entry's position and the value replaced. A map holds at most [`POSITIONS_MAX`] entries
    /// (every map of the state is bounded far below by `limits`); past that, nothing is
    /// inserted.
    ///
    /// [`POSITIONS_MAX`]: crate::probe::POSITIONS_MAX
    pub(crate) fn insert_full(&mut self, key: K, value: V) -> (usize, Option<V>) {
        let hash = hash_of(&key);
        let position = self.entries.len();
        match self.index.find_or_insert(hash, position, holds(&self.entries, &key)) {
            Probed::Found(found) => match self.entries.get_mut(found) {
                Some(slot) => (found, Some(std::mem::replace(&mut slot.value, value))),
                None => (found, None),
            },
            Probed::Inserted => {
                self.entries.push(Slot { hash, key, value });
                (position, None)
            }
            Probed::Refused => (position, None),
        }
    }

    /// Removes `key`'s entry, moving the last entry into its position; returns the position,
    /// the key and the value.
    pub(crate) fn swap_remove_full<Q>(&mut self, key: &Q) -> Option<(usize, K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let position = self.index.remove(hash_of(key), holds(&self.entries, key))?;
        let last = self.entries.len().checked_sub(1)?;
        if position > last {
            return None;
        }
        if position != last
            && let Some(moved) = self.entries.get(last)
        {
            // The last entry moves into `position`: repoint its index cell.
            self.index.repoint(moved.hash, last, position);
        }
        let slot = self.entries.swap_remove(position);
        Some((position, slot.key, slot.value))
    }

    /// A map of `entries` in their order, or the first key that appears twice. Fills nothing
    /// but the index: the entries are already where they belong.
    fn from_slots(entries: Vec<Slot<K, V>>) -> Result<Self, usize> {
        let mut index = Probe::with_capacity(entries.len());
        for (position, slot) in entries.iter().enumerate() {
            if index.find_or_insert(slot.hash, position, holds(&entries, &slot.key)) != Probed::Inserted {
                return Err(position);
            }
        }
        Ok(Self { entries, index })
    }
}

/// The entries of a [`Map`], in order.
pub(crate) struct Iter<'a, K, V>(std::slice::Iter<'a, Slot<K, V>>);

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|slot| (&slot.key, &slot.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|slot| (&slot.key, &slot.value))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<'a, K, V> IntoIterator for &'a Map<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A postcard map: the length, then each key and value in order (as `indexmap` wrote it).
impl<K: Serialize, V: Serialize> Serialize for Map<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

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
/// restore. Postcard states the length before the entries, so the map is allocated once; the
/// entries are decoded into place first and indexed after (see the module's documentation).
pub(crate) mod exact {
    use super::{Map, Slot, hash_of};
    use serde::de::{Error, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    use std::fmt;
    use std::hash::Hash;
    use std::marker::PhantomData;

    /// Most entries reserved before any is read: a bound on what a corrupt length can cost.
    const RESERVE_MAX_ENTRIES: usize = 1 << 24;

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
                let mut entries = Vec::new();
                // A corrupt length must not abort the process on a small machine: without the
                // room, the vector grows as entries actually decode.
                let _ = entries.try_reserve_exact(reserve);
                while let Some((key, value)) = access.next_entry::<K, V>()? {
                    entries.push(Slot { hash: hash_of(&key), key, value });
                }
                Map::from_slots(entries)
                    .map_err(|position| A::Error::custom(format!("key {position} of the map repeats an earlier key")))
            }
        }

        deserializer.deserialize_map(ExactVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::collections::BTreeMap;

    /// A key whose hash is the same for every value: every entry collides with every other.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct Colliding(u64);

    impl Hash for Colliding {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            0u8.hash(state);
        }
    }

    /// The map against a model: a vector of (key, value) in order, with `swap_remove` done by
    /// hand. Every operation's answer and the whole order must agree, and so must a copy
    /// decoded from the map's encoding.
    fn agrees_with_an_ordered_model<K>(key_of: impl Fn(u64) -> K, keys: u64, steps: u64)
    where
        K: Clone + Eq + Hash + fmt::Debug + Serialize + for<'de> serde::Deserialize<'de>,
    {
        let mut rng = SplitMix64::from_seed(11);
        let mut map: Map<K, u64> = Map::default();
        let mut model: Vec<(K, u64)> = Vec::new();
        for step in 0..steps {
            let key = key_of(rng.next_u64() % keys);
            let found = model.iter().position(|(k, _)| *k == key);
            match rng.next_u64() % 4 {
                0 | 1 => {
                    let (position, old) = map.insert_full(key.clone(), step);
                    match found {
                        Some(at) => {
                            assert_eq!((position, old), (at, Some(model[at].1)));
                            model[at].1 = step;
                        }
                        None => {
                            assert_eq!((position, old), (model.len(), None));
                            model.push((key, step));
                        }
                    }
                }
                2 => {
                    let removed = map.swap_remove_full(&key);
                    match found {
                        Some(at) => {
                            let (k, v) = model.swap_remove(at);
                            assert_eq!(removed, Some((at, k, v)));
                        }
                        None => assert_eq!(removed, None),
                    }
                }
                _ => {
                    assert_eq!(map.get_index_of(&key), found);
                    assert_eq!(map.get(&key), found.map(|at| &model[at].1));
                    assert_eq!(map.contains_key(&key), found.is_some());
                }
            }
            if step % 1_000 == 0 {
                let listed: Vec<(K, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(listed, model, "order drifted at step {step}");
                for (at, (k, _)) in model.iter().enumerate() {
                    assert_eq!(map.get_index_of(k), Some(at));
                }
                let bytes = postcard::to_allocvec(&map).expect("encodes");
                let mut decoder = postcard::Deserializer::from_bytes(&bytes);
                let decoded: Map<K, u64> = exact::deserialize(&mut decoder).expect("decodes");
                let relisted: Vec<(K, u64)> = decoded.iter().map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(relisted, model);
                for (at, (k, _)) in model.iter().enumerate() {
                    assert_eq!(decoded.get_index_of(k), Some(at));
                }
            }
        }
    }

    #[test]
    fn the_map_keeps_the_order_and_answers_of_an_ordered_model() {
        agrees_with_an_ordered_model(|i| format!("k{i}"), 500, 30_000);
    }

    #[test]
    fn keys_that_all_hash_alike_keep_their_own_entries() {
        // Every probe walks past every other key: a removal that repointed the wrong slot, or
        // an equality test left out, shows at once.
        agrees_with_an_ordered_model(Colliding, 60, 6_000);
    }

    #[test]
    fn maps_of_none_and_one_entry_find_only_what_they_hold() {
        let mut map: Map<String, u32> = Map::default();
        assert_eq!(map.get_index_of("a"), None);
        map.insert_full("a".into(), 1);
        assert_eq!((map.get_index_of("a"), map.get("b")), (Some(0), None));
        map.insert_full("b".into(), 2);
        assert_eq!(map.swap_remove_full("a"), Some((0, "a".to_string(), 1)));
        assert_eq!((map.get("a"), map.get("b"), map.get_index_of("c")), (None, Some(&2), None));
    }

    #[test]
    fn a_map_is_encoded_as_a_postcard_map_and_a_repeated_key_is_refused() {
        let mut map: Map<String, u32> = Map::default();
        map.insert_full("b".into(), 2);
        map.insert_full("a".into(), 1);
        let ordered: BTreeMap<String, u32> = [("b".to_string(), 2), ("a".to_string(), 1)].into();
        let bytes = postcard::to_allocvec(&map).expect("encodes");
        // Same framing as any serde map: a length, then the pairs (here in insertion order).
        assert_eq!(bytes, [2, 1, b'b', 2, 1, b'a', 1]);
        assert_eq!(postcard::to_allocvec(&ordered).expect("encodes").len(), bytes.len());

        let repeated = [2u8, 1, b'a', 2, 1, b'a', 1];
        let mut decoder = postcard::Deserializer::from_bytes(&repeated);
        assert!(exact::deserialize::<String, u32, _>(&mut decoder).is_err(), "a repeated key is refused");
    }
}

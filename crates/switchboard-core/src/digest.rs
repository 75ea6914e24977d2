//! The state digest, kept up to date as the state changes instead of recomputed from a
//! serialisation of the whole state.
//!
//! A state's digest is XXH3-128 of a small summary: the scalar fields, and for each large
//! collection its length and the wrapping sum of one 64-bit hash per record. A record's hash
//! covers its postcard encoding and, in an entity map, its position, so the sum pins the
//! map's contents and its order (which decides how replicas iterate and serialise it). Sums
//! are updated by subtracting a record's old hash and adding its new one, so reading the
//! digest costs O(records changed since they were last hashed), not O(state).
//!
//! The entity maps ([`DigestMap`]) do not hash on every write: a mutable borrow only marks
//! the record's position dirty (a bit test and, the first time, a push). The dirty records
//! are hashed when the digest is read (without changing the map, so a reader needs only
//! `&self`) and folded into the cached hashes by [`DigestMap::settle`], which the state runs
//! at the end of an entry — in a workspace the entry touched once its backlog passes
//! [`DIGEST_BACKLOG_MAX`], and on every `Tick` in any workspace with a backlog — hashing at
//! most [`DIGEST_SETTLE_CHUNK`] records per entry. So the work is the same whoever asks, and
//! a reader meets about a second's worth of changes at most once the state has been applying
//! for a while. A restored state starts with every record dirty and works the backlog off a
//! chunk per entry.
//!
//! The caches are not part of the replicated state (a restored map recomputes them), so the
//! digest is a function of the state alone: the same on every replica, across restarts and
//! snapshot installs, whoever read it when.

use crate::map::Map;
use serde::Serialize;
use std::hash::Hash;

/// Dirty records of one workspace past which `apply` settles them (hashes and caches them).
pub(crate) const DIGEST_BACKLOG_MAX: usize = 4096;
/// Most dirty records one `apply` settles per workspace it touched: bounds the time a
/// restored state's backlog adds to each entry (a few milliseconds).
pub(crate) const DIGEST_SETTLE_CHUNK: usize = 8192;

/// Bytes a record's encoding may take before hashing it allocates.
const STACK_ENCODING_BYTES: usize = 512;

/// The 64-bit hash of `value`'s postcard encoding, seeded with `seed` (a position, or a
/// constant naming the collection).
pub(crate) fn hash_record<T: Serialize + ?Sized>(seed: u64, value: &T) -> u64 {
    let mut buffer = [0u8; STACK_ENCODING_BYTES];
    match postcard::to_slice(value, &mut buffer) {
        Ok(encoded) => xxhash_rust::xxh3::xxh3_64_with_seed(encoded, seed),
        // Longer than the buffer (a large team): encode into the heap. Encoding to a Vec
        // cannot fail for the state's types; if it ever did, the hash covers what was written.
        Err(_) => {
            let encoded = postcard::to_allocvec(value).unwrap_or_default();
            xxhash_rust::xxh3::xxh3_64_with_seed(&encoded, seed)
        }
    }
}

/// A record of a [`DigestMap`]: how it hashes, with its key, into the map's digest. Most
/// records hash their whole encoding; a record with a large part that rarely changes (a
/// team's member list) hashes that part's cached hash instead (see [`Hashed`]).
pub(crate) trait DigestRecord: Serialize {
    fn digest_hash<K: Serialize>(&self, seed: u64, key: &K) -> u64 {
        hash_record(seed, &(key, self))
    }
}

/// A value with its hash, computed when it is set (or restored) rather than whenever the
/// record holding it is hashed. Serialises as the value alone; reads through `Deref`, and
/// the only way to make one is [`Hashed::new`], so the hash cannot go stale.
#[derive(Clone, Debug)]
pub(crate) struct Hashed<T> {
    value: T,
    hash: u64,
}

/// Seed of a [`Hashed`] value's hash.
const HASHED_SEED: u64 = 0x6861_7368_6564;

impl<T: Serialize> Hashed<T> {
    pub(crate) fn new(value: T) -> Self {
        let hash = hash_record(HASHED_SEED, &value);
        Self { value, hash }
    }

    /// The hash of the value's encoding.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

impl<T> std::ops::Deref for Hashed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Hashed<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<'de, T: Serialize + serde::Deserialize<'de>> serde::Deserialize<'de> for Hashed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self::new)
    }
}

/// A multiset hash: the wrapping sum of its members' hashes, updated in O(1) per insert or
/// removal. For collections whose contents are fixed by their keys (timers keyed by due time
/// and sequence, event ids in arrival order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SumHash(u64);

impl SumHash {
    pub(crate) fn add(&mut self, hash: u64) {
        self.0 = self.0.wrapping_add(hash);
    }

    pub(crate) fn remove(&mut self, hash: u64) {
        self.0 = self.0.wrapping_sub(hash);
    }

    pub(crate) fn value(self) -> u64 {
        self.0
    }
}

/// An entity [`Map`] that tracks which records changed since they were hashed. Reads go
/// through `Deref` to the map; every write goes through a method here, so none can miss the
/// dirty mark (there is no `DerefMut`).
#[derive(Clone, Debug)]
pub(crate) struct DigestMap<K, V> {
    map: Map<K, V>,
    /// Each position's hash as last settled (stale where the position is dirty).
    hashes: Vec<u64>,
    /// The wrapping sum of `hashes`.
    sum: u64,
    /// Dirty positions, each once (positions past the end are removed records).
    dirty: Vec<u32>,
    /// One bit per position: whether it is in `dirty`.
    marked: Vec<u64>,
}

impl<K, V> Default for DigestMap<K, V> {
    fn default() -> Self {
        Self { map: Map::default(), hashes: Vec::new(), sum: 0, dirty: Vec::new(), marked: Vec::new() }
    }
}

impl<K, V> std::ops::Deref for DigestMap<K, V> {
    type Target = Map<K, V>;

    fn deref(&self) -> &Map<K, V> {
        &self.map
    }
}

impl<'a, K, V> IntoIterator for &'a DigestMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = crate::map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Hash + Eq + Serialize, V: DigestRecord> DigestMap<K, V> {
    /// A map holding `map`'s records, every one of them dirty (after a restore).
    pub(crate) fn from_map(map: Map<K, V>) -> Self {
        let len = map.len();
        let mut tracked = Self {
            map,
            hashes: vec![0; len],
            dirty: Vec::with_capacity(len),
            marked: Vec::with_capacity(len.div_ceil(64)),
            ..Self::default()
        };
        for index in 0..len {
            tracked.mark(index);
        }
        tracked
    }

    fn mark(&mut self, index: usize) {
        let Ok(position) = u32::try_from(index) else {
            return;
        };
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.marked.len() <= word {
            self.marked.resize(word.saturating_add(1), 0);
        }
        if let Some(bits) = self.marked.get_mut(word)
            && *bits & bit == 0
        {
            *bits |= bit;
            self.dirty.push(position);
        }
    }

    fn unmark(&mut self, index: usize) {
        if let Some(bits) = self.marked.get_mut(index / 64) {
            *bits &= !(1u64 << (index % 64));
        }
    }

    /// The hash of the record at `index` as it is now.
    fn hash_at(&self, index: usize) -> Option<u64> {
        self.map.get_index(index).map(|(key, value)| value.digest_hash(index as u64, key))
    }

    /// Records changed since they were last settled.
    pub(crate) fn backlog(&self) -> usize {
        self.dirty.len()
    }

    /// The map's digest as it is now: its length and the sum of its records' hashes. O(dirty
    /// records); changes nothing.
    pub(crate) fn digest(&self) -> (u64, u64) {
        let mut sum = self.sum;
        for &position in &self.dirty {
            let index = position as usize;
            if let (Some(old), Some(new)) = (self.hashes.get(index), self.hash_at(index)) {
                sum = sum.wrapping_sub(*old).wrapping_add(new);
            }
        }
        (self.map.len() as u64, sum)
    }

    /// Hashes up to `limit` dirty records and caches their hashes; returns how many.
    pub(crate) fn settle(&mut self, limit: usize) -> usize {
        for settled in 0..limit {
            let Some(position) = self.dirty.pop() else {
                return settled;
            };
            let index = position as usize;
            self.unmark(index);
            if let (Some(new), Some(old)) = (self.hash_at(index), self.hashes.get(index).copied()) {
                self.sum = self.sum.wrapping_sub(old).wrapping_add(new);
                if let Some(slot) = self.hashes.get_mut(index) {
                    *slot = new;
                }
            }
        }
        limit
    }

    // ----- writes: each marks what it changes -------------------------------------------

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let index = self.map.get_index_of(key)?;
        self.mark(index);
        self.map.get_index_mut(index).map(|(_, value)| value)
    }

    pub(crate) fn get_index_mut(&mut self, index: usize) -> Option<(&K, &mut V)> {
        if index < self.map.len() {
            self.mark(index);
        }
        self.map.get_index_mut(index)
    }

    /// Every value, mutably (marks every record).
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        for index in 0..self.map.len() {
            self.mark(index);
        }
        self.map.values_mut()
    }

    /// Inserts or replaces; returns the record's position.
    pub(crate) fn insert_full(&mut self, key: K, value: V) -> usize {
        let (index, _) = self.map.insert_full(key, value);
        if self.hashes.len() < self.map.len() {
            self.hashes.push(0);
        }
        self.mark(index);
        index
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.insert_full(key, value);
    }

    /// The value at `key`, inserting `make()` first if there is none (`None` only if the map
    /// lost the record it just found or inserted, which it cannot).
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> Option<&mut V> {
        let index = match self.map.get_index_of(&key) {
            Some(index) => {
                self.mark(index);
                index
            }
            None => self.insert_full(key, make()),
        };
        self.map.get_index_mut(index).map(|(_, value)| value)
    }

    /// Removes `key`'s record, moving the last record into its position.
    pub(crate) fn swap_remove(&mut self, key: &K) -> Option<V> {
        let (index, _, value) = self.map.swap_remove_full(key)?;
        if let Some(&old) = self.hashes.get(index) {
            self.sum = self.sum.wrapping_sub(old);
        }
        if index < self.hashes.len() {
            self.hashes.swap_remove(index);
        }
        // The record that moved into `index` (if any) has a new position, so a new hash.
        if index < self.map.len() {
            self.mark(index);
        }
        Some(value)
    }
}

/// A [`DigestMap`] serialises as its map alone (the caches are not part of the state).
impl<K: Serialize, V: Serialize> Serialize for DigestMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(serializer)
    }
}

/// A restored [`DigestMap`] has its exact length reserved (see [`crate::map::exact`]) and
/// starts with every record dirty.
impl<'de, K, V> serde::Deserialize<'de> for DigestMap<K, V>
where
    K: Eq + Hash + serde::Deserialize<'de> + Serialize,
    V: serde::Deserialize<'de> + DigestRecord,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::map::exact::deserialize(deserializer).map(DigestMap::from_map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    impl DigestRecord for (u32, String) {}

    /// The digest a map would have if every record were hashed afresh.
    fn from_scratch(map: &DigestMap<String, (u32, String)>) -> (u64, u64) {
        DigestMap::from_map(map.map.clone()).digest()
    }

    #[test]
    fn the_maintained_digest_is_the_digest_from_scratch_through_any_writes() {
        let mut rng = SplitMix64::from_seed(7);
        let mut map: DigestMap<String, (u32, String)> = DigestMap::default();
        for step in 0..20_000u32 {
            let key = format!("k{}", rng.next_u64() % 300);
            match rng.next_u64() % 7 {
                0 | 1 => map.insert(key, (step, "v".repeat((step % 40) as usize))),
                2 => {
                    if let Some(value) = map.get_mut(&key) {
                        value.0 = value.0.wrapping_add(1);
                    }
                }
                3 => {
                    let len = map.len().max(1);
                    if let Some((_, value)) = map.get_index_mut(rng.next_u64() as usize % len) {
                        value.1.push('x');
                    }
                }
                4 => {
                    map.swap_remove(&key);
                }
                5 => {
                    let value = map.get_or_insert_with(key, || (0, String::new()));
                    if let Some(value) = value {
                        value.0 = value.0.wrapping_add(3);
                    }
                }
                _ => {
                    map.settle((rng.next_u64() % 50) as usize);
                }
            }
            if step % 97 == 0 {
                assert_eq!(map.digest(), from_scratch(&map), "drifted at step {step}");
            }
        }
        map.settle(usize::MAX);
        assert_eq!(map.backlog(), 0);
        assert_eq!(map.digest(), from_scratch(&map));
    }

    #[test]
    fn the_digest_tells_apart_a_changed_record_and_a_changed_order() {
        let mut ab: DigestMap<String, (u32, String)> = DigestMap::default();
        ab.insert("a".into(), (1, "x".into()));
        ab.insert("b".into(), (2, "y".into()));
        ab.settle(usize::MAX);
        let mut ba: DigestMap<String, (u32, String)> = DigestMap::default();
        ba.insert("b".into(), (2, "y".into()));
        ba.insert("a".into(), (1, "x".into()));
        assert_ne!(ab.digest(), ba.digest(), "same records in another order");

        let before = ab.digest();
        if let Some(value) = ab.get_mut(&"b".to_string()) {
            value.0 = 3;
        }
        assert_ne!(ab.digest(), before, "a changed record, read before settling");
        ab.settle(usize::MAX);
        assert_ne!(ab.digest(), before, "a changed record, read after settling");
        if let Some(value) = ab.get_mut(&"b".to_string()) {
            value.0 = 2;
        }
        assert_eq!(ab.digest(), before, "the record changed back");
    }
}

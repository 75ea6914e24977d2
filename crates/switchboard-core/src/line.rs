//! An ordered map with O(log n) rank: the waiting line of a team.
//!
//! A customer told "you are number 4 in the queue" needs the rank of their entry among
//! everything waiting, and a supervisor's list needs the entries in order. `std`'s `BTreeMap`
//! has no rank, so this is a treap whose nodes carry subtree sizes. Node priorities are a
//! hash of the key, not random draws, so the tree shape is a pure function of the set of keys
//! and every replica builds the same tree.

use std::cmp::Ordering;

const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Node<K, V> {
    key: K,
    value: V,
    heap_priority: u64,
    left: u32,
    right: u32,
    size: u32,
}

/// Keys of a line must give a deterministic heap priority.
pub(crate) trait LineKey: Ord + Copy {
    /// A well-mixed hash of the key.
    fn heap_priority(&self) -> u64;
}

/// Ordered map with `rank`, backed by an arena treap.
#[derive(Clone, Debug)]
pub(crate) struct Line<K, V> {
    nodes: Vec<Node<K, V>>,
    free: Vec<u32>,
    root: u32,
}

impl<K: LineKey, V: Clone> Default for Line<K, V> {
    fn default() -> Self {
        Self { nodes: Vec::new(), free: Vec::new(), root: NIL }
    }
}

impl<K: LineKey, V: Clone> Line<K, V> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    fn size(&self, node: u32) -> u32 {
        if node == NIL { 0 } else { self.nodes[node as usize].size }
    }

    fn update(&mut self, node: u32) {
        let n = &self.nodes[node as usize];
        let size = 1 + self.size(n.left) + self.size(n.right);
        self.nodes[node as usize].size = size;
    }

    /// Splits `node` into keys `< key` and keys `>= key`.
    fn split(&mut self, node: u32, key: &K) -> (u32, u32) {
        if node == NIL {
            return (NIL, NIL);
        }
        if self.nodes[node as usize].key < *key {
            let right = self.nodes[node as usize].right;
            let (a, b) = self.split(right, key);
            self.nodes[node as usize].right = a;
            self.update(node);
            (node, b)
        } else {
            let left = self.nodes[node as usize].left;
            let (a, b) = self.split(left, key);
            self.nodes[node as usize].left = b;
            self.update(node);
            (a, node)
        }
    }

    /// Joins two trees where every key of `a` is below every key of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].heap_priority >= self.nodes[b as usize].heap_priority {
            let right = self.nodes[a as usize].right;
            let merged = self.merge(right, b);
            self.nodes[a as usize].right = merged;
            self.update(a);
            a
        } else {
            let left = self.nodes[b as usize].left;
            let merged = self.merge(a, left);
            self.nodes[b as usize].left = merged;
            self.update(b);
            b
        }
    }

    fn find(&self, key: &K) -> u32 {
        let mut node = self.root;
        while node != NIL {
            let n = &self.nodes[node as usize];
            match key.cmp(&n.key) {
                Ordering::Less => node = n.left,
                Ordering::Greater => node = n.right,
                Ordering::Equal => return node,
            }
        }
        NIL
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.find(key) != NIL
    }

    /// Inserts `key` (which must not be present yet).
    pub(crate) fn insert(&mut self, key: K, value: V) {
        debug_assert!(!self.contains(&key));
        let node = Node { key, value, heap_priority: key.heap_priority(), left: NIL, right: NIL, size: 1 };
        let index = match self.free.pop() {
            Some(index) => {
                self.nodes[index as usize] = node;
                index
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let (a, b) = self.split(self.root, &key);
        let left = self.merge(a, index);
        self.root = self.merge(left, b);
    }

    /// Removes `key`; returns its value if it was present.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        if !self.contains(key) {
            return None;
        }
        let (below, rest) = self.split(self.root, key);
        // `rest` starts with `key`; cut it off by splitting just above it.
        let (found, above) = self.split_first(rest);
        self.root = self.merge(below, above);
        let value = self.nodes[found as usize].value.clone();
        self.free.push(found);
        if self.root == NIL {
            self.nodes.clear();
            self.free.clear();
        }
        Some(value)
    }

    /// Detaches the smallest node of `node`'s tree; returns it and the remaining tree.
    fn split_first(&mut self, node: u32) -> (u32, u32) {
        let left = self.nodes[node as usize].left;
        if left == NIL {
            let right = self.nodes[node as usize].right;
            self.nodes[node as usize].right = NIL;
            self.nodes[node as usize].size = 1;
            return (node, right);
        }
        let (first, rest) = self.split_first(left);
        self.nodes[node as usize].left = rest;
        self.update(node);
        (first, node)
    }

    /// Number of keys strictly below `key`: the zero-based position `key` has or would have.
    pub(crate) fn rank(&self, key: &K) -> usize {
        let mut node = self.root;
        let mut rank = 0u32;
        while node != NIL {
            let n = &self.nodes[node as usize];
            if n.key < *key {
                rank += 1 + self.size(n.left);
                node = n.right;
            } else {
                node = n.left;
            }
        }
        rank as usize
    }

    /// The smallest entry.
    pub(crate) fn first(&self) -> Option<(K, &V)> {
        let mut node = self.root;
        if node == NIL {
            return None;
        }
        while self.nodes[node as usize].left != NIL {
            node = self.nodes[node as usize].left;
        }
        let n = &self.nodes[node as usize];
        Some((n.key, &n.value))
    }

    /// Up to `limit` entries in order, starting at zero-based position `offset`.
    pub(crate) fn page(&self, offset: usize, limit: usize) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(limit.min(self.len().saturating_sub(offset)));
        let mut stack = Vec::new();
        let mut node = self.root;
        let mut skip = offset as u32;
        // Descend to the `offset`-th node, remembering the ancestors still to be visited.
        while node != NIL {
            let n = &self.nodes[node as usize];
            let left_size = self.size(n.left);
            if skip < left_size {
                stack.push(node);
                node = n.left;
            } else if skip == left_size {
                stack.push(node);
                break;
            } else {
                skip -= left_size + 1;
                node = n.right;
            }
        }
        while let Some(current) = stack.pop() {
            if out.len() >= limit {
                break;
            }
            let n = &self.nodes[current as usize];
            out.push((n.key, n.value.clone()));
            let mut next = n.right;
            while next != NIL {
                stack.push(next);
                next = self.nodes[next as usize].left;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    impl LineKey for u32 {
        fn heap_priority(&self) -> u64 {
            xxhash_rust::xxh3::xxh3_64(&self.to_le_bytes())
        }
    }

    proptest! {
        #[test]
        fn line_matches_a_btreemap(ops in proptest::collection::vec((any::<bool>(), 0u32..64), 0..300)) {
            let mut line: Line<u32, u32> = Line::default();
            let mut model = BTreeMap::new();
            for (insert, key) in ops {
                if insert {
                    if let std::collections::btree_map::Entry::Vacant(entry) = model.entry(key) {
                        entry.insert(key * 10);
                        line.insert(key, key * 10);
                    }
                } else {
                    prop_assert_eq!(line.remove(&key), model.remove(&key));
                }
                prop_assert_eq!(line.len(), model.len());
                for probe in 0..65u32 {
                    prop_assert_eq!(line.rank(&probe), model.range(..probe).count());
                }
                prop_assert_eq!(line.first().map(|(k, v)| (k, *v)), model.iter().next().map(|(k, v)| (*k, *v)));
                let all: Vec<(u32, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(line.page(0, usize::MAX), all.clone());
                let skipped: Vec<(u32, u32)> = all.iter().copied().skip(3).take(5).collect();
                prop_assert_eq!(line.page(3, 5), skipped);
            }
        }
    }
}

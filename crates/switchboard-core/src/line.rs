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
    pub(crate) fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    // Node access. Every link in the tree is either `NIL` or the index of a live node (links
    // are only ever set from `insert`'s fresh index or from other links), so a lookup cannot
    // miss; should it ever, the accessors read `NIL`/0 and the writes do nothing, which keeps
    // the tree finite instead of panicking the replica.

    fn node(&self, node: u32) -> Option<&Node<K, V>> {
        if node == NIL { None } else { self.nodes.get(node as usize) }
    }

    fn node_mut(&mut self, node: u32) -> Option<&mut Node<K, V>> {
        if node == NIL { None } else { self.nodes.get_mut(node as usize) }
    }

    fn size(&self, node: u32) -> u32 {
        self.node(node).map_or(0, |n| n.size)
    }

    fn left(&self, node: u32) -> u32 {
        self.node(node).map_or(NIL, |n| n.left)
    }

    fn right(&self, node: u32) -> u32 {
        self.node(node).map_or(NIL, |n| n.right)
    }

    fn set_left(&mut self, node: u32, left: u32) {
        if let Some(n) = self.node_mut(node) {
            n.left = left;
        }
        self.update(node);
    }

    fn set_right(&mut self, node: u32, right: u32) {
        if let Some(n) = self.node_mut(node) {
            n.right = right;
        }
        self.update(node);
    }

    fn update(&mut self, node: u32) {
        // Sizes are bounded by the node count (a `u32` index), so the sum cannot overflow.
        let size = self.size(self.left(node)).saturating_add(self.size(self.right(node))).saturating_add(1);
        if let Some(n) = self.node_mut(node) {
            n.size = size;
        }
    }

    fn split(&mut self, node: u32, key: &K) -> (u32, u32) {
        let Some((below, left, right)) = self.node(node).map(|n| (n.key < *key, n.left, n.right)) else {
            return (NIL, NIL);
        };
        if below {
            let (a, b) = self.split(right, key);
            self.set_right(node, a);
            (node, b)
        } else {
            let (a, b) = self.split(left, key);
            self.set_left(node, b);
            (a, node)
        }
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        let (Some((a_priority, a_right)), Some((b_priority, b_left))) =
            (self.node(a).map(|n| (n.heap_priority, n.right)), self.node(b).map(|n| (n.heap_priority, n.left)))
        else {
            return if a == NIL { b } else { a };
        };
        if a_priority >= b_priority {
            let merged = self.merge(a_right, b);
            self.set_right(a, merged);
            a
        } else {
            let merged = self.merge(a, b_left);
            self.set_left(b, merged);
            b
        }
    }

    fn find(&self, key: &K) -> u32 {
        let mut node = self.root;
        while let Some(n) = self.node(node) {
            match key.cmp(&n.key) {
                Ordering::Less => node = n.left,
                Ordering::Greater => node = n.right,
                Ordering::Equal => return node,
            }
        }
        NIL
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.find(key) != NIL
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.contains(&key) {
            return;
        }
        let node = Node { key, value, heap_priority: key.heap_priority(), left: NIL, right: NIL, size: 1 };
        let index = match self.free.pop() {
            Some(index) => match self.nodes.get_mut(index as usize) {
                Some(slot) => {
                    *slot = node;
                    index
                }
                None => return,
            },
            None => {
                // At most u32::MAX - 1 nodes: `NIL` must never name a real node.
                let Ok(index) = u32::try_from(self.nodes.len()) else { return };
                if index == NIL {
                    return;
                }
                self.nodes.push(node);
                index
            }
        };
        let (a, b) = self.split(self.root, &key);
        let left = self.merge(a, index);
        self.root = self.merge(left, b);
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        if !self.contains(key) {
            return None;
        }
        let (below, rest) = self.split(self.root, key);
        // `rest` starts with `key`; cut it off by splitting just above it.
        let (found, above) = self.split_first(rest);
        self.root = self.merge(below, above);
        let value = self.node(found).map(|n| n.value.clone());
        self.free.push(found);
        if self.root == NIL {
            self.nodes.clear();
            self.free.clear();
        }
        value
    }

    fn split_first(&mut self, node: u32) -> (u32, u32) {
        let left = self.left(node);
        if left == NIL {
            let right = self.right(node);
            self.set_right(node, NIL);
            return (node, right);
        }
        let (first, rest) = self.split_first(left);
        self.set_left(node, rest);
        (first, node)
    }

    pub(crate) fn rank(&self, key: &K) -> usize {
        let mut node = self.root;
        let mut rank = 0u32;
        while let Some(n) = self.node(node) {
            if n.key < *key {
                rank = rank.saturating_add(self.size(n.left)).saturating_add(1);
                node = n.right;
            } else {
                node = n.left;
            }
        }
        rank as usize
    }

    #[cfg(test)]
    pub(crate) fn first(&self) -> Option<(K, &V)> {
        let mut n = self.node(self.root)?;
        while let Some(left) = self.node(n.left) {
            n = left;
        }
        Some((n.key, &n.value))
    }

    pub(crate) fn page(&self, offset: usize, limit: usize) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(limit.min(self.len().saturating_sub(offset)));
        let mut stack = Vec::new();
        let mut node = self.root;
        let mut skip = u32::try_from(offset).unwrap_or(u32::MAX);
        // Descend to the `offset`-th node, remembering the ancestors still to be visited.
        while let Some(n) = self.node(node) {
            let left_size = self.size(n.left);
            if skip < left_size {
                stack.push(node);
                node = n.left;
            } else if skip == left_size {
                stack.push(node);
                break;
            } else {
                skip = skip.saturating_sub(left_size).saturating_sub(1);
                node = n.right;
            }
        }
        while let Some(current) = stack.pop() {
            if out.len() >= limit {
                break;
            }
            let Some(n) = self.node(current) else { break };
            out.push((n.key, n.value.clone()));
            let mut next = n.right;
            while let Some(child) = self.node(next) {
                stack.push(next);
                next = child.left;
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

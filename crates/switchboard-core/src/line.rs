//! An ordered map with O(log n) rank: the waiting line of a team.
//!
//! A customer told "you are number 4 in the queue" needs the rank of their entry among
//! everything waiting, and a supervisor's list needs the entries in order. `std`'s `BTreeMap`
//! has no rank, so this is a B+ tree whose inner nodes count the entries under each child.
//!
//! It replaced a treap. With 100,000 waiting, a treap path is some 20 nodes of one cache
//! line each, scattered over the arena, and every split and merge on it also read the sizes
//! of the children beside the path; a tree of [`FANOUT`]-wide nodes is four levels deep, and
//! the nodes at either end of a queue (where arrivals join and the served leave) stay in
//! cache. The shape depends on the order of operations, not only on the set of keys; nothing
//! observable does (`len`, `rank`, `page`, `contains` are answers about the set), and the line
//! is never part of a snapshot or a digest: it is rebuilt from the conversations.
//!
//! Removal takes entries out and frees nodes that become empty, without merging half-empty
//! siblings: a queue drains at one end and fills at the other, so emptied nodes go away
//! whole. A full node splits in halves, except at the tail of the whole line, where it stays
//! full and the new node starts with the one arrival: a line that grows at its back fills its
//! leaves. So every node but those on the tail path is at least half full when made, and the
//! depth grows at worst by one level per eightfold of the inserts the line has seen (the
//! root shrinks again when it is left with one child).

/// Entries per leaf and children per inner node.
const FANOUT: usize = 16;

const NIL: u32 = u32::MAX;

/// Deepest a tree can grow: a root split adds a level only when the root holds `FANOUT`
/// children made by splits of at least half a node, so 32 levels would take some 8^32
/// inserts, out of reach of any log.
const HEIGHT_MAX: usize = 32;

/// The inner nodes on the way down to a leaf, each with the child taken.
type Path = [(u32, usize); HEIGHT_MAX];

#[derive(Clone, Debug)]
enum Node<K, V> {
    /// Up to `FANOUT` entries in key order.
    Leaf { len: u8, keys: [K; FANOUT], values: [V; FANOUT] },
    /// Up to `FANOUT` children. `keys[i]` for `i >= 1` separates child `i - 1` (all keys
    /// below it) from child `i` (all keys at or above it); `keys[0]` is not used for search.
    /// `counts[i]` is the number of entries under child `i`.
    Inner { len: u8, keys: [K; FANOUT], children: [u32; FANOUT], counts: [u32; FANOUT] },
}

/// Ordered map with `rank`, backed by an arena B+ tree.
#[derive(Clone, Debug)]
pub(crate) struct Line<K, V> {
    nodes: Vec<Node<K, V>>,
    free: Vec<u32>,
    root: u32,
    /// Inner levels above the leaves (0: the root is a leaf).
    height: u8,
    len: u32,
}

impl<K, V> Default for Line<K, V> {
    fn default() -> Self {
        Self { nodes: Vec::new(), free: Vec::new(), root: NIL, height: 0, len: 0 }
    }
}

/// Which child of an inner node's `len` children may hold `key`: the last whose separator is
/// at or below it (child 0 when none is).
fn child_for<K: Ord>(keys: &[K], len: usize, key: &K) -> usize {
    let separators = keys.get(1..len).unwrap_or(&[]);
    separators.partition_point(|separator| separator <= key)
}

/// Puts an entry at `at` of a leaf that has room, moving the ones from there up by one.
fn put<K, V>(len: &mut u8, keys: &mut [K; FANOUT], values: &mut [V; FANOUT], at: usize, key: K, value: V) {
    let n = *len as usize;
    if n >= FANOUT || at > n {
        return;
    }
    if let (Some(keys), Some(values)) = (keys.get_mut(at..=n), values.get_mut(at..=n)) {
        keys.rotate_right(1);
        values.rotate_right(1);
        if let (Some(k), Some(v)) = (keys.first_mut(), values.first_mut()) {
            (*k, *v) = (key, value);
            *len = len.saturating_add(1);
        }
    }
}

fn sum(counts: &[u32]) -> usize {
    counts.iter().map(|&count| count as usize).sum()
}

impl<K: Ord + Copy + Default, V: Clone + Default> Line<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    // Node access. Every link is either `NIL` or the index of a live node (links are only
    // ever set from `alloc`'s fresh index), so a lookup cannot miss; should it ever, the
    // accessors answer `None` and the operation stops, which keeps the replica running.

    fn node(&self, index: u32) -> Option<&Node<K, V>> {
        self.nodes.get(index as usize)
    }

    fn node_mut(&mut self, index: u32) -> Option<&mut Node<K, V>> {
        self.nodes.get_mut(index as usize)
    }

    fn alloc(&mut self, node: Node<K, V>) -> u32 {
        if let Some(index) = self.free.pop()
            && let Some(slot) = self.nodes.get_mut(index as usize)
        {
            *slot = node;
            return index;
        }
        // At most u32::MAX - 1 nodes: `NIL` never names a real node (entries are bounded far
        // below by the conversation limit).
        let index = u32::try_from(self.nodes.len()).unwrap_or(NIL);
        if index != NIL {
            self.nodes.push(node);
        }
        index
    }

    /// Frees an emptied node. Its values were all taken out, so it holds nothing to drop;
    /// `alloc` overwrites it when it is reused.
    fn release(&mut self, index: u32) {
        if (index as usize) < self.nodes.len() {
            self.free.push(index);
        }
    }

    fn empty_leaf() -> Node<K, V> {
        Node::Leaf { len: 0, keys: [K::default(); FANOUT], values: std::array::from_fn(|_| V::default()) }
    }

    /// The path from the root to the leaf that holds (or would hold) `key`: each inner node
    /// with the child taken, then the leaf. `None` for an empty tree.
    fn descend(&self, key: &K) -> Option<(Path, usize, u32)> {
        let mut path = [(NIL, 0usize); HEIGHT_MAX];
        let mut depth = 0;
        let mut at = self.root;
        loop {
            match self.node(at)? {
                Node::Leaf { .. } => return Some((path, depth, at)),
                Node::Inner { len, keys, children, .. } => {
                    let child = child_for(keys, *len as usize, key);
                    *path.get_mut(depth)? = (at, child);
                    depth = depth.saturating_add(1);
                    at = *children.get(child)?;
                }
            }
        }
    }

    /// Where `key` is, or would go, in a leaf: `(position, present)`.
    fn leaf_slot(&self, leaf: u32, key: &K) -> Option<(usize, bool)> {
        match self.node(leaf)? {
            Node::Leaf { len, keys, .. } => {
                let keys = keys.get(..*len as usize)?;
                let at = keys.partition_point(|k| k < key);
                Some((at, keys.get(at) == Some(key)))
            }
            Node::Inner { .. } => None,
        }
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.descend(key).and_then(|(_, _, leaf)| self.leaf_slot(leaf, key)).is_some_and(|(_, present)| present)
    }

    /// Adds `key` unless it is there already.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.root == NIL {
            let root = self.alloc(Self::empty_leaf());
            if root == NIL {
                return;
            }
            self.root = root;
            self.height = 0;
        }
        let Some((path, depth, leaf)) = self.descend(&key) else { return };
        let Some((at, false)) = self.leaf_slot(leaf, &key) else { return };
        // Whether the leaf is the line's last: every inner node on the way took its last child.
        let tail = path.get(..depth).unwrap_or(&[]).iter().all(|&(inner, child)| {
            matches!(self.node(inner), Some(Node::Inner { len, .. }) if usize::from(*len) == child.saturating_add(1))
        });
        for &(inner, child) in path.get(..depth).unwrap_or(&[]) {
            if let Some(Node::Inner { counts, .. }) = self.node_mut(inner)
                && let Some(count) = counts.get_mut(child)
            {
                *count = count.saturating_add(1);
            }
        }
        self.len = self.len.saturating_add(1);
        // Put it in the leaf; a full leaf first splits, and the split may climb.
        let Some(mut carry) = self.insert_in_leaf(leaf, at, key, value, tail) else { return };
        for level in (0..depth).rev() {
            let Some(&(inner, child)) = path.get(level) else { return };
            match self.insert_child(inner, child.saturating_add(1), carry, tail) {
                Some(next) => carry = next,
                None => return,
            }
        }
        // The root split: a new root over the two halves.
        let (separator, right, right_count) = carry;
        let old_root = self.root;
        let left_count = (self.len as usize).saturating_sub(right_count as usize) as u32;
        let mut keys = [K::default(); FANOUT];
        let mut children = [NIL; FANOUT];
        let mut counts = [0; FANOUT];
        (keys[1], children[0], children[1], counts[0], counts[1]) =
            (separator, old_root, right, left_count, right_count);
        let root = self.alloc(Node::Inner { len: 2, keys, children, counts });
        if root != NIL {
            self.root = root;
            self.height = self.height.saturating_add(1);
        }
    }

    /// Inserts into a leaf at `at`; when the leaf was full, splits it and returns the new
    /// right half as `(separator, node, count)` for the parent. `tail`: the leaf is the last.
    fn insert_in_leaf(&mut self, leaf: u32, at: usize, key: K, value: V, tail: bool) -> Option<(K, u32, u32)> {
        let Some(Node::Leaf { len, keys, values }) = self.node_mut(leaf) else { return None };
        if (*len as usize) < FANOUT {
            put(len, keys, values, at, key, value);
            return None;
        }
        // Full: keep the lower half here, move the upper half to a new leaf; at the line's
        // tail, keep it all and start the new leaf with the arrival (see the module's notes).
        let keep = if tail && at == FANOUT { FANOUT } else { FANOUT / 2 };
        let mut right_keys = [K::default(); FANOUT];
        let mut right_values: [V; FANOUT] = std::array::from_fn(|_| V::default());
        let moved = FANOUT.saturating_sub(keep);
        for i in 0..moved {
            *right_keys.get_mut(i)? = *keys.get(keep.saturating_add(i))?;
            *right_values.get_mut(i)? = std::mem::take(values.get_mut(keep.saturating_add(i))?);
        }
        *len = keep as u8;
        let mut right = Node::Leaf { len: moved as u8, keys: right_keys, values: right_values };
        // The new entry goes to whichever half its position falls in.
        if at < keep {
            put(len, keys, values, at, key, value);
        } else if let Node::Leaf { len, keys, values } = &mut right {
            put(len, keys, values, at.saturating_sub(keep), key, value);
        }
        let (separator, count) = match &right {
            Node::Leaf { len, keys, .. } => (*keys.first()?, u32::from(*len)),
            Node::Inner { .. } => return None,
        };
        let right = self.alloc(right);
        (right != NIL).then_some((separator, right, count))
    }

    /// Inserts a child (split off the child before `at`) into an inner node; when the node
    /// was full, splits it and returns its new right half for its own parent.
    fn insert_child(
        &mut self,
        inner: u32,
        at: usize,
        (separator, child, count): (K, u32, u32),
        tail: bool,
    ) -> Option<(K, u32, u32)> {
        let Some(Node::Inner { len, keys, children, counts }) = self.node_mut(inner) else { return None };
        // The child before `at` lost `count` entries to the new one.
        let before = counts.get_mut(at.checked_sub(1)?)?;
        *before = before.saturating_sub(count);
        let n = *len as usize;
        if n < FANOUT {
            keys.get_mut(at..=n)?.rotate_right(1);
            children.get_mut(at..=n)?.rotate_right(1);
            counts.get_mut(at..=n)?.rotate_right(1);
            (*keys.get_mut(at)?, *children.get_mut(at)?, *counts.get_mut(at)?) = (separator, child, count);
            *len = len.saturating_add(1);
            return None;
        }
        // Full: the upper half moves to a new node; its first separator goes up.
        let mut all_keys = [K::default(); FANOUT + 1];
        let mut all_children = [NIL; FANOUT + 1];
        let mut all_counts = [0u32; FANOUT + 1];
        for i in 0..=FANOUT {
            let from = match i.cmp(&at) {
                std::cmp::Ordering::Less => Some(i),
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => i.checked_sub(1),
            };
            let entry = match from {
                Some(j) => (*keys.get(j)?, *children.get(j)?, *counts.get(j)?),
                None => (separator, child, count),
            };
            (*all_keys.get_mut(i)?, *all_children.get_mut(i)?, *all_counts.get_mut(i)?) = entry;
        }
        let keep = if tail && at == FANOUT { FANOUT } else { FANOUT.div_ceil(2) };
        *len = keep as u8;
        keys.get_mut(..keep)?.copy_from_slice(all_keys.get(..keep)?);
        children.get_mut(..keep)?.copy_from_slice(all_children.get(..keep)?);
        counts.get_mut(..keep)?.copy_from_slice(all_counts.get(..keep)?);
        let moved = (FANOUT + 1).saturating_sub(keep);
        let mut right_keys = [K::default(); FANOUT];
        let mut right_children = [NIL; FANOUT];
        let mut right_counts = [0u32; FANOUT];
        right_keys.get_mut(..moved)?.copy_from_slice(all_keys.get(keep..)?);
        right_children.get_mut(..moved)?.copy_from_slice(all_children.get(keep..)?);
        right_counts.get_mut(..moved)?.copy_from_slice(all_counts.get(keep..)?);
        let up = *right_keys.first()?;
        let right_count = sum(right_counts.get(..moved)?) as u32;
        let right = self.alloc(Node::Inner {
            len: moved as u8,
            keys: right_keys,
            children: right_children,
            counts: right_counts,
        });
        (right != NIL).then_some((up, right, right_count))
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (path, depth, leaf) = self.descend(key)?;
        let (at, true) = self.leaf_slot(leaf, key)? else { return None };
        let Some(Node::Leaf { len, keys, values }) = self.node_mut(leaf) else { return None };
        let n = *len as usize;
        let value = std::mem::take(values.get_mut(at)?);
        keys.get_mut(at..n)?.rotate_left(1);
        values.get_mut(at..n)?.rotate_left(1);
        *len = len.saturating_sub(1);
        let mut emptied = (*len == 0).then_some(leaf);
        self.len = self.len.saturating_sub(1);
        // Up the path: one entry fewer under each child taken; an emptied child is unlinked
        // and freed, which may empty its parent in turn.
        for level in (0..depth).rev() {
            let &(inner, child) = path.get(level)?;
            let Some(Node::Inner { len, keys, children, counts }) = self.node_mut(inner) else { return Some(value) };
            let count = counts.get_mut(child)?;
            *count = count.saturating_sub(1);
            if let Some(gone) = emptied.take() {
                let n = *len as usize;
                keys.get_mut(child..n)?.rotate_left(1);
                children.get_mut(child..n)?.rotate_left(1);
                counts.get_mut(child..n)?.rotate_left(1);
                *len = len.saturating_sub(1);
                emptied = (*len == 0).then_some(inner);
                self.release(gone);
            }
        }
        if let Some(gone) = emptied {
            // The root itself emptied: the line is empty.
            self.release(gone);
        }
        if self.len == 0 {
            // An empty line gives its memory back (an agent's own line is usually empty).
            self.nodes = Vec::new();
            self.free = Vec::new();
            self.root = NIL;
            self.height = 0;
        } else {
            self.shrink_root();
        }
        Some(value)
    }

    /// While the root is an inner node with one child, that child becomes the root.
    fn shrink_root(&mut self) {
        while let Some(Node::Inner { len: 1, children, .. }) = self.node(self.root) {
            let only = children[0];
            let old = self.root;
            self.root = only;
            self.height = self.height.saturating_sub(1);
            self.release(old);
        }
    }

    pub(crate) fn rank(&self, key: &K) -> usize {
        let mut rank = 0usize;
        let mut at = self.root;
        while let Some(node) = self.node(at) {
            match node {
                Node::Inner { len, keys, children, counts } => {
                    let child = child_for(keys, *len as usize, key);
                    rank = rank.saturating_add(sum(counts.get(..child).unwrap_or(&[])));
                    let Some(&next) = children.get(child) else { break };
                    at = next;
                }
                Node::Leaf { len, keys, .. } => {
                    rank = rank.saturating_add(keys.get(..*len as usize).unwrap_or(&[]).partition_point(|k| k < key));
                    break;
                }
            }
        }
        rank
    }

    #[cfg(test)]
    pub(crate) fn first(&self) -> Option<(K, V)> {
        self.page(0, 1).into_iter().next()
    }

    pub(crate) fn page(&self, offset: usize, limit: usize) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(limit.min(self.len().saturating_sub(offset)));
        if offset >= self.len() || limit == 0 {
            return out;
        }
        // Descend to the leaf of the `offset`-th entry, remembering each inner node and the
        // child taken, so that the walk can go on to the following leaves.
        let mut stack: Path = [(NIL, 0usize); HEIGHT_MAX];
        let mut depth = 0usize;
        let mut skip = offset;
        let mut at = self.root;
        while let Some(Node::Inner { len, children, counts, .. }) = self.node(at) {
            let mut child = 0usize;
            while child.saturating_add(1) < *len as usize && skip >= counts.get(child).map_or(0, |&c| c as usize) {
                skip = skip.saturating_sub(counts.get(child).map_or(0, |&c| c as usize));
                child = child.saturating_add(1);
            }
            let (Some(slot), Some(&next)) = (stack.get_mut(depth), children.get(child)) else { return out };
            *slot = (at, child);
            depth = depth.saturating_add(1);
            at = next;
        }
        loop {
            if let Some(Node::Leaf { len, keys, values }) = self.node(at) {
                for i in skip..*len as usize {
                    if out.len() >= limit {
                        return out;
                    }
                    if let (Some(key), Some(value)) = (keys.get(i), values.get(i)) {
                        out.push((*key, value.clone()));
                    }
                }
            }
            skip = 0;
            // The next leaf: up to the nearest ancestor with a child to the right, then down
            // its leftmost path.
            loop {
                let Some(above) = depth.checked_sub(1) else { return out };
                depth = above;
                let Some(&mut (inner, ref mut child)) = stack.get_mut(depth) else { return out };
                if let Some(Node::Inner { len, children, .. }) = self.node(inner)
                    && child.saturating_add(1) < *len as usize
                {
                    *child = child.saturating_add(1);
                    at = children.get(*child).copied().unwrap_or(NIL);
                    depth = depth.saturating_add(1);
                    break;
                }
            }
            while let Some(Node::Inner { children, .. }) = self.node(at) {
                let Some(slot) = stack.get_mut(depth) else { return out };
                *slot = (at, 0);
                depth = depth.saturating_add(1);
                at = children[0];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Every count is the number of entries below, every separator divides its neighbours,
    /// no node but an empty tree's is empty, and all leaves are at the same depth.
    fn check_shape(line: &Line<u32, u32>) {
        fn walk(line: &Line<u32, u32>, at: u32, low: Option<u32>, high: Option<u32>, depth: u8) -> usize {
            match line.node(at).expect("linked node exists") {
                Node::Leaf { len, keys, .. } => {
                    assert_eq!(depth, line.height, "leaves at one depth");
                    assert!(*len > 0, "an empty leaf stayed linked");
                    let keys = &keys[..*len as usize];
                    assert!(keys.windows(2).all(|w| w[0] < w[1]));
                    assert!(keys.iter().all(|k| low.is_none_or(|l| *k >= l) && high.is_none_or(|h| *k < h)));
                    keys.len()
                }
                Node::Inner { len, keys, children, counts } => {
                    assert!(*len > 0, "an empty inner node stayed linked");
                    let n = *len as usize;
                    let mut total = 0;
                    for i in 0..n {
                        let child_low = if i == 0 { low } else { Some(keys[i]) };
                        let child_high = if i + 1 < n { Some(keys[i + 1]) } else { high };
                        let below = walk(line, children[i], child_low, child_high, depth + 1);
                        assert_eq!(counts[i] as usize, below, "count of child {i}");
                        total += below;
                    }
                    total
                }
            }
        }
        if line.root == NIL {
            assert_eq!(line.len(), 0);
        } else {
            assert_eq!(walk(line, line.root, None, None, 0), line.len());
        }
    }

    proptest! {
        #[test]
        fn line_matches_a_btreemap(ops in proptest::collection::vec((any::<bool>(), 0u32..200), 0..600)) {
            let mut line: Line<u32, u32> = Line::default();
            let mut model = BTreeMap::new();
            for (insert, key) in ops {
                if insert {
                    if let std::collections::btree_map::Entry::Vacant(entry) = model.entry(key) {
                        entry.insert(key * 10);
                    }
                    line.insert(key, key * 10);
                } else {
                    prop_assert_eq!(line.remove(&key), model.remove(&key));
                }
                prop_assert_eq!(line.len(), model.len());
                for probe in (0..201u32).step_by(7) {
                    prop_assert_eq!(line.rank(&probe), model.range(..probe).count());
                    prop_assert_eq!(line.contains(&probe), model.contains_key(&probe));
                }
                prop_assert_eq!(line.first(), model.iter().next().map(|(k, v)| (*k, *v)));
                let all: Vec<(u32, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(line.page(0, usize::MAX), all.clone());
                let skipped: Vec<(u32, u32)> = all.iter().copied().skip(37).take(20).collect();
                prop_assert_eq!(line.page(37, 20), skipped);
            }
            check_shape(&line);
        }
    }

    #[test]
    fn arrivals_just_before_the_tail_split_nodes_in_halves_and_keep_the_tree_small() {
        // Full leaves, then one key far above them, then keys descending towards it: each
        // lands at the end of the last full leaf before the tail. Kept full there, every
        // insert would make a leaf (and an inner node) of one entry.
        let mut line: Line<u32, u32> = Line::default();
        for key in 0..=255 {
            line.insert(key, key);
        }
        line.insert(1_000_000, 0);
        for key in (980_000..1_000_000).rev() {
            line.insert(key, key);
        }
        check_shape(&line);
        let live = line.nodes.len() - line.free.len();
        assert!(live <= line.len() / 4, "{live} nodes for {} entries", line.len());
        assert!(line.height <= 4, "height {}", line.height);
        // A line that only grows at its back fills its leaves.
        let mut queue: Line<u32, u32> = Line::default();
        for key in 0..16_000 {
            queue.insert(key, key);
        }
        let leaves = queue.nodes.iter().filter(|node| matches!(node, Node::Leaf { .. })).count();
        assert_eq!(leaves, 1_000, "16,000 arrivals at the back fill 1,000 leaves");
        assert!(Line::<u32, u32>::default().page(0, 10).is_empty());
        for key in 0..16_000 {
            queue.remove(&key);
        }
        assert_eq!(queue.nodes.capacity(), 0, "an emptied line gives its memory back");
    }

    #[test]
    fn a_deep_line_used_as_a_queue_and_at_random_keeps_its_shape_and_answers() {
        // Three levels and more: arrivals at the back of three priority bands, departures
        // from the front and from anywhere, as a team's queue sees them.
        let mut rng = SplitMix64::from_seed(17);
        let mut line: Line<u32, u32> = Line::default();
        let mut model = BTreeMap::new();
        let mut next = [0u32, 1 << 20, 2 << 20];
        for step in 0..60_000u32 {
            match rng.next_u64() % 8 {
                0..=3 => {
                    let band = (rng.next_u64() % 3) as usize;
                    next[band] += 1;
                    line.insert(next[band], step);
                    model.insert(next[band], step);
                }
                4 | 5 => {
                    let first = model.keys().next().copied();
                    if let Some(key) = first {
                        assert_eq!(line.remove(&key), model.remove(&key));
                    }
                }
                6 => {
                    let key = (rng.next_u64() % (3 << 20)) as u32;
                    let target = model.range(key..).next().map(|(k, _)| *k);
                    if let Some(key) = target {
                        assert_eq!(line.remove(&key), model.remove(&key));
                    }
                }
                _ => {
                    let key = (rng.next_u64() % (3 << 20)) as u32;
                    assert_eq!(line.remove(&key), model.remove(&key), "absent or present alike");
                }
            }
            if step % 5_000 == 0 {
                check_shape(&line);
                for (rank, (key, _)) in model.iter().enumerate().step_by(97) {
                    assert_eq!(line.rank(key), rank);
                }
                let offset = model.len() / 3;
                let expected: Vec<(u32, u32)> = model.iter().skip(offset).take(50).map(|(k, v)| (*k, *v)).collect();
                assert_eq!(line.page(offset, 50), expected);
            }
        }
        assert!(line.height >= 2, "the test reached a tree of three levels (height {})", line.height);
        while let Some(key) = model.keys().next().copied() {
            assert_eq!(line.remove(&key), model.remove(&key));
        }
        assert_eq!((line.len(), line.nodes.len(), line.root), (0, 0, NIL), "an emptied line holds nothing");
    }
}

//! A Fenwick (binary indexed) tree of non-negative integer weights.
//!
//! Used by the weighted strategy: each team member has a slot whose weight is its daily
//! limit while it is eligible and zero otherwise. Setting a weight, reading the total and
//! finding the slot that owns a random point are all O(log n), so a draw never scans the team.

/// Prefix sums over `u64` weights with O(log n) update and search.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fenwick {
    /// 1-based implicit tree: `tree[i]` holds the sum of `(i - lowbit(i), i]`.
    tree: Vec<u64>,
    /// Current weight of each slot, so that `set` can apply the difference.
    weights: Vec<u64>,
}

impl Fenwick {
    pub(crate) fn with_len(len: usize) -> Self {
        Self { tree: vec![0; len.saturating_add(1)], weights: vec![0; len] }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.weights.len()
    }

    /// Sets slot `index` to `weight`; an index past the end is ignored (pools size the tree
    /// to the team, so it cannot be). Sums wrap: the tree stores differences, and the wrapped
    /// additions and subtractions of one `set` cancel out exactly.
    pub(crate) fn set(&mut self, index: usize, weight: u64) {
        let Some(slot) = self.weights.get_mut(index) else { return };
        let old = std::mem::replace(slot, weight);
        if old == weight {
            return;
        }
        let mut i = index.saturating_add(1);
        while let Some(node) = self.tree.get_mut(i) {
            *node = node.wrapping_add(weight).wrapping_sub(old);
            i = i.saturating_add(i & i.wrapping_neg());
            if i == usize::MAX {
                break;
            }
        }
    }

    pub(crate) fn get(&self, index: usize) -> u64 {
        self.weights.get(index).copied().unwrap_or(0)
    }

    pub(crate) fn total(&self) -> u64 {
        let mut i = self.weights.len();
        let mut sum = 0u64;
        while i > 0 {
            sum = sum.wrapping_add(self.tree.get(i).copied().unwrap_or(0));
            i &= i.wrapping_sub(1);
        }
        sum
    }

    /// The slot owning `point` in `0..total()`.
    pub(crate) fn find(&self, point: u64) -> usize {
        let n = self.weights.len();
        let mut position = 0usize;
        let mut remaining = point;
        let mut step = n.checked_ilog2().and_then(|log| 1usize.checked_shl(log)).unwrap_or(0);
        while step > 0 {
            let next = position.saturating_add(step);
            if let Some(&weight) = self.tree.get(next)
                && next <= n
                && weight <= remaining
            {
                position = next;
                remaining = remaining.saturating_sub(weight);
            }
            step >>= 1;
        }
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_maps_points_to_slots_by_weight() {
        let mut tree = Fenwick::with_len(5);
        tree.set(0, 100);
        tree.set(2, 200);
        tree.set(4, 1);
        assert_eq!(tree.total(), 301);
        assert_eq!(tree.find(0), 0);
        assert_eq!(tree.find(99), 0);
        assert_eq!(tree.find(100), 2);
        assert_eq!(tree.find(299), 2);
        assert_eq!(tree.find(300), 4);
        tree.set(2, 0);
        assert_eq!(tree.total(), 101);
        assert_eq!(tree.find(100), 4);
        assert_eq!(tree.get(2), 0);
        assert_eq!(tree.len(), 5);
    }
}

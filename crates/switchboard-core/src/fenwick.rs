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
    /// A tree of `len` slots, all weighing zero.
    pub(crate) fn with_len(len: usize) -> Self {
        Self { tree: vec![0; len + 1], weights: vec![0; len] }
    }

    /// Number of slots.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.weights.len()
    }

    /// Sets slot `index` to `weight`.
    pub(crate) fn set(&mut self, index: usize, weight: u64) {
        let old = self.weights[index];
        if old == weight {
            return;
        }
        self.weights[index] = weight;
        let mut i = index + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add(weight).wrapping_sub(old);
            i += i & i.wrapping_neg();
        }
    }

    /// Weight of slot `index`.
    pub(crate) fn get(&self, index: usize) -> u64 {
        self.weights[index]
    }

    /// Sum of every weight.
    pub(crate) fn total(&self) -> u64 {
        let mut i = self.weights.len();
        let mut sum = 0u64;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// The slot whose cumulative range contains `point` (`point < total()`): the smallest
    /// `index` with `sum(weights[..=index]) > point`.
    pub(crate) fn find(&self, point: u64) -> usize {
        let n = self.weights.len();
        let mut position = 0usize;
        let mut remaining = point;
        let mut step = if n == 0 { 0 } else { 1usize << (usize::BITS - 1 - n.leading_zeros()) };
        while step > 0 {
            let next = position + step;
            if next <= n && self.tree[next] <= remaining {
                position = next;
                remaining -= self.tree[next];
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

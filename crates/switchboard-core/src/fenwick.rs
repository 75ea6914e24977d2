//! Integer weights with O(log n) update, total and search: the weighted strategy's draw.
//!
//! Used by the weighted strategy: each team member has a slot whose weight is its daily
//! limit while it is eligible and zero otherwise. Setting a weight, reading the total and
//! finding the slot that owns a random point never scan the team.
//!
//! Slots are grouped in blocks of [`BLOCK`]; a Fenwick (binary indexed) tree holds the block
//! sums, and a search descends it to a block and then walks that block's weights. A Fenwick
//! tree over every slot of a 100,000-member team was 17 dependent loads per draw, the lower
//! ones scattered over 800 KB and each a cache miss; the tree over 1,563 blocks is 12.5 KB and
//! stays in cache, and a block's 64 weights are 512 consecutive bytes.

/// Slots per block.
const BLOCK: usize = 64;

/// Weights by slot, with their block sums in a Fenwick tree.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fenwick {
    /// 1-based implicit tree over blocks: `tree[i]` holds the sum of blocks `(i - lowbit(i), i]`.
    tree: Vec<u64>,
    /// Current weight of each slot; block `b` is slots `b * BLOCK ..`.
    weights: Vec<u64>,
    /// Sum of every weight.
    total: u64,
}

impl Fenwick {
    pub(crate) fn with_len(len: usize) -> Self {
        let blocks = len.div_ceil(BLOCK);
        Self { tree: vec![0; blocks.saturating_add(1)], weights: vec![0; len], total: 0 }
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
        self.total = self.total.wrapping_add(weight).wrapping_sub(old);
        let mut i = (index / BLOCK).saturating_add(1);
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
        self.total
    }

    /// The slot owning `point` in `0..total()`: the first whose weight, added to all before
    /// it, passes `point`. (The number of slots for a point past the total.)
    pub(crate) fn find(&self, point: u64) -> usize {
        // The block: the most whole blocks from the start whose sum stays at or below `point`.
        let blocks = self.tree.len().saturating_sub(1);
        let mut block = 0usize;
        let mut remaining = point;
        let mut step = blocks.checked_ilog2().and_then(|log| 1usize.checked_shl(log)).unwrap_or(0);
        while step > 0 {
            let next = block.saturating_add(step);
            if let Some(&sum) = self.tree.get(next)
                && next <= blocks
                && sum <= remaining
            {
                block = next;
                remaining = remaining.saturating_sub(sum);
            }
            step >>= 1;
        }
        // Then the slot within it.
        let start = block.saturating_mul(BLOCK);
        let end = start.saturating_add(BLOCK).min(self.weights.len());
        for (offset, &weight) in self.weights.get(start..end).unwrap_or(&[]).iter().enumerate() {
            if remaining < weight {
                return start.saturating_add(offset);
            }
            remaining = remaining.saturating_sub(weight);
        }
        self.weights.len()
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

    #[test]
    fn find_agrees_with_a_scan_of_prefix_sums_across_blocks() {
        let mut rng = crate::rng::SplitMix64::from_seed(3);
        for len in [1usize, 63, 64, 65, 1_000] {
            let mut tree = Fenwick::with_len(len);
            let mut model = vec![0u64; len];
            for step in 0..3_000 {
                let index = (rng.next_u64() % len as u64) as usize;
                // Many zeros: an ineligible member weighs nothing.
                let weight = if rng.next_u64().is_multiple_of(3) { 0 } else { rng.next_u64() % 1_000 };
                tree.set(index, weight);
                model[index] = weight;
                let total: u64 = model.iter().sum();
                assert_eq!(tree.total(), total, "len {len} step {step}");
                for point in [0, total / 3, total.saturating_sub(1), total, rng.next_u64() % (total + 1)] {
                    let mut before = 0;
                    let expected = model
                        .iter()
                        .position(|&w| {
                            before += w;
                            before > point
                        })
                        .unwrap_or(len);
                    assert_eq!(tree.find(point), expected, "len {len} step {step} point {point}");
                }
            }
        }
    }
}

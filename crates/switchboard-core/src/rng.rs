//! The deterministic pseudo-random generator used by weighted draws.
//!
//! SplitMix64: one `u64` of state, so the whole generator is part of the snapshot and every
//! replica draws the same sequence. It is not cryptographic and does not need to be; it only
//! has to be uniform enough for fair shares and identical everywhere. Its output is pinned in
//! a test so that a refactor cannot silently change who receives conversations.

use serde::{Deserialize, Serialize};

/// SplitMix64 generator whose whole state is one serialisable `u64`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniformly drawn from `0..bound` (`bound > 0`), by Lemire's multiply-shift,
    /// which avoids the modulo bias of `next_u64() % bound` for large bounds.
    pub fn below(&mut self, bound: u64) -> u64 {
        // Lemire's multiply-shift: the product of two values below 2^64 fits in 128 bits, so the
        // wrapping multiplication never wraps. A zero bound draws 0 (callers never ask for it).
        (u128::from(self.next_u64()).wrapping_mul(u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_output_is_pinned() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's published test vector).
        let mut rng = SplitMix64::from_seed(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::from_seed(7);
        for bound in [1u64, 2, 3, 300, u64::MAX] {
            for _ in 0..1000 {
                assert!(rng.below(bound) < bound);
            }
        }
    }
}

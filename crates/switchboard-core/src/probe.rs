//! The hash index of a [`crate::map::Map`]: from a key's hash to its entry's position.
//!
//! At 100,000 agents and half a million conversations the index no longer stays in cache,
//! and every lookup pays for each distinct line it touches. A `hashbrown` table keeps its
//! control bytes and its slots in two separate arrays: a hit read three cold lines (a control
//! group, the slot, the entry) and `perf` put about a third of the lookup's time on each. This
//! index keeps one array of 8-byte cells, each holding the position and 32 bits of the hash,
//! probed linearly: a hit reads one line of the index (the probe rarely leaves it) and then
//! the entry.
//!
//! A cell is `(fragment << 32) | (position + 1)`, 0 when empty. The fragment is the top half
//! of the mixed hash, and a cell's home is the fragment's top bits, so growing and removing
//! (backward-shift deletion, no tombstones) need nothing but the cells: no entry is read
//! again. The index answers positions; the map checks the key. Nothing here decides an
//! iteration order, which stays the map's own.

/// Cells of a table that is still empty (the first insert allocates).
const CELLS_MIN: usize = 16;

/// Positions are stored plus one in the low 32 bits, so the largest is `u32::MAX - 1`.
pub(crate) const POSITIONS_MAX: usize = u32::MAX as usize - 1;

/// Spreads a hash whose low bits are its best (FxHash) over the top half, which the index uses.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

fn fragment_of(hash: u64) -> u32 {
    (hash.wrapping_mul(MIX) >> 32) as u32
}

fn cell(fragment: u32, position: usize) -> u64 {
    (u64::from(fragment) << 32) | (position as u64).wrapping_add(1)
}

fn cell_fragment(cell: u64) -> u32 {
    (cell >> 32) as u32
}

fn cell_position(cell: u64) -> usize {
    ((cell & u64::from(u32::MAX)) as usize).wrapping_sub(1)
}

/// What [`Probe::find_or_insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probed {
    /// The key was there, at this position; nothing was stored.
    Found(usize),
    /// The position was stored.
    Inserted,
    /// The position is past [`POSITIONS_MAX`]; nothing was stored.
    Refused,
}

/// Linear-probing index of positions by hash.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    /// A power of two long (or empty); at most three quarters full.
    cells: Vec<u64>,
    /// Occupied cells.
    len: usize,
    /// `32 - log2(cells.len())`: a fragment shifted right by this is its home cell.
    shift: u32,
}

impl Probe {
    /// An index with room for `positions` without growing.
    pub(crate) fn with_capacity(positions: usize) -> Self {
        let mut probe = Self::default();
        if positions > 0 {
            probe.resize(cells_for(positions.min(POSITIONS_MAX.saturating_add(1))));
        }
        probe
    }

    fn mask(&self) -> usize {
        self.cells.len().wrapping_sub(1)
    }

    fn home(&self, fragment: u32) -> usize {
        // `shift` is at most 28 (16 cells or more); a table of 2^32 cells would need a shift
        // of 0, which `checked_shr` also handles.
        fragment.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// Walks the run of cells from `hash`'s home: `Ok` with the cell holding the position for
    /// which `is` holds (among those whose fragment matches), else `Err` with the empty cell
    /// that ended the walk (`None` for a table without cells).
    fn probe(&self, hash: u64, mut is: impl FnMut(usize) -> bool) -> Result<usize, Option<usize>> {
        let fragment = fragment_of(hash);
        let mask = self.mask();
        let mut at = self.home(fragment);
        // The table is never full, so an empty cell ends every walk; the bound is for a table
        // that could not be (a cell of every length), never reached.
        for _ in 0..self.cells.len() {
            let Some(&current) = self.cells.get(at) else { break };
            if current == 0 {
                return Err(Some(at));
            }
            if cell_fragment(current) == fragment && is(cell_position(current)) {
                return Ok(at);
            }
            at = at.wrapping_add(1) & mask;
        }
        Err(None)
    }

    /// The position for which `is` holds, among those stored under `hash`.
    pub(crate) fn find(&self, hash: u64, is: impl FnMut(usize) -> bool) -> Option<usize> {
        self.probe(hash, is).ok().and_then(|at| self.cells.get(at)).map(|&current| cell_position(current))
    }

    /// Stores `position` under `hash` unless a position for which `is` holds is stored
    /// there already: one walk for both the lookup and the insert. The table grows only
    /// when a position is stored.
    pub(crate) fn find_or_insert(&mut self, hash: u64, position: usize, is: impl FnMut(usize) -> bool) -> Probed {
        if position > POSITIONS_MAX {
            return Probed::Refused;
        }
        let empty = match self.probe(hash, is) {
            Ok(at) => {
                return self.cells.get(at).map_or(Probed::Refused, |&current| Probed::Found(cell_position(current)));
            }
            Err(empty) => empty,
        };
        let new = cell(fragment_of(hash), position);
        let grow = self.len.saturating_add(1).saturating_mul(4) > self.cells.len().saturating_mul(3);
        match empty.and_then(|at| self.cells.get_mut(at)) {
            Some(slot) if !grow => *slot = new,
            _ => {
                self.resize(cells_for(self.len.saturating_add(1)).max(self.cells.len().saturating_mul(2)));
                self.place(new);
            }
        }
        self.len = self.len.saturating_add(1);
        Probed::Inserted
    }

    /// Puts `new` in the first empty cell from its home (room is guaranteed by the caller).
    fn place(&mut self, new: u64) {
        let mask = self.mask();
        let mut at = self.home(cell_fragment(new));
        for _ in 0..self.cells.len() {
            match self.cells.get_mut(at) {
                Some(slot) if *slot == 0 => {
                    *slot = new;
                    return;
                }
                Some(_) => at = at.wrapping_add(1) & mask,
                None => return,
            }
        }
    }

    fn resize(&mut self, cells: usize) {
        let old = std::mem::replace(&mut self.cells, vec![0; cells]);
        self.shift = 32u32.saturating_sub(cells.trailing_zeros());
        for current in old.into_iter().filter(|&current| current != 0) {
            self.place(current);
        }
    }

    /// Removes the position for which `is` holds under `hash`; returns it.
    pub(crate) fn remove(&mut self, hash: u64, is: impl FnMut(usize) -> bool) -> Option<usize> {
        let at = self.probe(hash, is).ok()?;
        let removed = cell_position(*self.cells.get(at)?);
        // Backward shift: pull each following cell of the run back into the hole when its
        // home lets it, so that no probe meets an empty cell before the cell it looks for.
        let mask = self.mask();
        let mut hole = at;
        let mut next = at.wrapping_add(1) & mask;
        for _ in 0..self.cells.len() {
            let current = self.cells.get(next).copied().unwrap_or(0);
            if current == 0 {
                break;
            }
            let home = self.home(cell_fragment(current));
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                if let Some(slot) = self.cells.get_mut(hole) {
                    *slot = current;
                }
                hole = next;
            }
            next = next.wrapping_add(1) & mask;
        }
        if let Some(slot) = self.cells.get_mut(hole) {
            *slot = 0;
        }
        self.len = self.len.saturating_sub(1);
        Some(removed)
    }

    /// The entry at `from` moved to `to` (stored under `hash`): repoints its cell.
    pub(crate) fn repoint(&mut self, hash: u64, from: usize, to: usize) {
        if to > POSITIONS_MAX {
            return;
        }
        if let Ok(at) = self.probe(hash, |position| position == from)
            && let Some(slot) = self.cells.get_mut(at)
        {
            *slot = cell(cell_fragment(*slot), to);
        }
    }
}

/// Cells for `positions` at most three quarters full: a power of two, at least [`CELLS_MIN`].
fn cells_for(positions: usize) -> usize {
    positions.saturating_mul(4).div_ceil(3).max(CELLS_MIN).checked_next_power_of_two().unwrap_or(usize::MAX / 2 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Every probe sequence ends at an empty cell and passes every cell of its run: the
    /// invariant backward-shift deletion keeps.
    fn each_cell_is_reachable_from_its_home(probe: &Probe) {
        let mask = probe.mask();
        for (at, &current) in probe.cells.iter().enumerate() {
            if current == 0 {
                continue;
            }
            let mut walk = probe.home(cell_fragment(current));
            while walk != at {
                assert_ne!(probe.cells[walk], 0, "cell {at} is cut off from its home by an empty cell at {walk}");
                walk = (walk + 1) & mask;
            }
        }
    }

    #[test]
    fn positions_are_found_removed_and_repointed_like_a_model() {
        // Hashes from a small set so that fragments collide and runs are long.
        let mut rng = SplitMix64::from_seed(5);
        let mut probe = Probe::default();
        let mut model: Vec<Option<u64>> = Vec::new(); // position → hash
        for step in 0..12_000u64 {
            let live: Vec<usize> = (0..model.len()).filter(|&p| model[p].is_some()).collect();
            match rng.next_u64() % 5 {
                0..=2 => {
                    let hash = if step % 3 == 0 { rng.next_u64() % 7 } else { rng.next_u64() };
                    let position = model.len();
                    assert_eq!(probe.find_or_insert(hash, position, |p| p == position), Probed::Inserted);
                    model.push(Some(hash));
                }
                3 if !live.is_empty() => {
                    let position = live[(rng.next_u64() % live.len() as u64) as usize];
                    let hash = model[position].take().expect("live");
                    assert_eq!(probe.remove(hash, |p| p == position), Some(position));
                    assert_eq!(probe.find(hash, |p| p == position), None);
                }
                _ if !live.is_empty() => {
                    // Move a live entry to a fresh position, as `swap_remove` does.
                    let from = live[(rng.next_u64() % live.len() as u64) as usize];
                    let hash = model[from].take().expect("live");
                    probe.repoint(hash, from, model.len());
                    model.push(Some(hash));
                }
                _ => {}
            }
            if step % 997 == 0 {
                each_cell_is_reachable_from_its_home(&probe);
                assert_eq!(probe.len, model.iter().flatten().count());
                for (position, hash) in model.iter().enumerate() {
                    let found = hash.and_then(|hash| probe.find(hash, |p| p == position));
                    assert_eq!(found, hash.map(|_| position), "position {position} at step {step}");
                }
            }
        }
        assert!(probe.cells.len() * 3 >= probe.len * 4, "at most three quarters full");
    }

    #[test]
    fn a_table_grows_to_keep_a_quarter_free_finds_what_it_holds_and_refuses_positions_past_the_limit() {
        assert!(Probe::with_capacity(0).cells.is_empty(), "an empty map allocates nothing");
        let mut probe = Probe::with_capacity(12);
        assert_eq!(probe.cells.len(), 16);
        for position in 0..12 {
            assert_eq!(probe.find_or_insert(position as u64 * 0x1_0000_0001, position, |_| false), Probed::Inserted);
        }
        assert_eq!(probe.find_or_insert(5 * 0x1_0000_0001, 99, |p| p == 5), Probed::Found(5), "a stored key is found");
        assert_eq!(probe.cells.len(), 16, "finding a key at three quarters full does not grow the table");
        assert_eq!(probe.find_or_insert(12 * 0x1_0000_0001, 12, |_| false), Probed::Inserted);
        assert_eq!(probe.cells.len(), 32, "the 13th position would fill more than three quarters of 16");
        assert_eq!(probe.find_or_insert(1, POSITIONS_MAX + 1, |_| false), Probed::Refused);
        assert_eq!(probe.len, 13);
        for position in 0..13 {
            assert_eq!(probe.find(position as u64 * 0x1_0000_0001, |p| p == position), Some(position));
        }
        assert_eq!(Probe::default().find(0, |_| true), None);
    }
}

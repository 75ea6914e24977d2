//! Timers: deferred work keyed by the time an entry's timestamp reaches.
//!
//! Timers live in the state (and its snapshot) and fire during `apply` of the first entry
//! whose timestamp reaches them, so every replica fires them at the same log position. A
//! timer names the situation it was set for (a conversation's generation, a team's
//! configuration version) and is ignored if that situation has passed, which is cheaper than
//! cancelling.

use crate::digest::{SumHash, hash_record};
use crate::effect::Effect;
use crate::ids::{ConversationId, TeamId, WorkspaceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Deferred work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Timer {
    /// The team's activation delay for the conversation has ended.
    Activate { conversation: ConversationId, generation: u32 },
    /// The agent has not replied in time.
    NoReply { conversation: ConversationId, generation: u32 },
    /// A closed conversation's retention has ended.
    Forget { conversation: ConversationId, generation: u32 },
    /// The team's business hours may have begun.
    Opening { team: TeamId, version: u32 },
    /// The team's queue moved an update interval ago: tell waiting customers where they are.
    Positions { team: TeamId, version: u32 },
    /// Local midnight in the team's timezone: daily counts reset.
    Midnight { team: TeamId, version: u32 },
}

/// All pending timers, ordered by due time then creation order. Decoding computes the
/// digest (`From<StoredTimers>`), so a decoded value is whole however it was decoded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "StoredTimers")]
pub(crate) struct Timers {
    pending: BTreeMap<(i64, u64), (WorkspaceId, Timer)>,
    next_seq: u64,
    /// The digest of `pending` (see `crate::digest`), kept as timers come and go.
    #[serde(skip)]
    sum: SumHash,
}

/// What a snapshot holds of [`Timers`]: the same fields, in the same order.
#[derive(Deserialize)]
struct StoredTimers {
    pending: BTreeMap<(i64, u64), (WorkspaceId, Timer)>,
    next_seq: u64,
}

impl From<StoredTimers> for Timers {
    fn from(StoredTimers { pending, next_seq }: StoredTimers) -> Self {
        let mut sum = SumHash::default();
        for (key, timer) in &pending {
            sum.add(timer_hash(*key, timer));
        }
        Self { pending, next_seq, sum }
    }
}

/// Seed of a pending timer's hash in the state digest.
const TIMER_DIGEST_SEED: u64 = 0x7469_6d65_7273;

fn timer_hash(key: (i64, u64), timer: &(WorkspaceId, Timer)) -> u64 {
    hash_record(TIMER_DIGEST_SEED, &(key, timer))
}

impl Timers {
    pub(crate) fn schedule(&mut self, at_ms: i64, workspace: WorkspaceId, timer: Timer) {
        let key = (at_ms, self.next_seq);
        let timer = (workspace, timer);
        self.sum.add(timer_hash(key, &timer));
        if let Some(replaced) = self.pending.insert(key, timer) {
            self.sum.remove(timer_hash(key, &replaced));
        }
        // Only orders timers due at the same millisecond; wrapping after 2^64 timers is harmless.
        self.next_seq = self.next_seq.wrapping_add(1);
    }

    /// Removes and returns the earliest timer due at or before `now_ms`.
    pub(crate) fn pop_due(&mut self, now_ms: i64) -> Option<(WorkspaceId, Timer)> {
        let entry = self.pending.first_entry()?;
        if entry.key().0 > now_ms {
            return None;
        }
        let key = *entry.key();
        let timer = entry.remove();
        self.sum.remove(timer_hash(key, &timer));
        Some(timer)
    }

    /// What the state digest covers of the timers: count, sequence and the sum of their hashes.
    pub(crate) fn digest(&self) -> (u64, u64, u64) {
        // Every field, so that a new one cannot be left out of the digest unnoticed.
        let Timers { pending, next_seq, sum } = self;
        (pending.len() as u64, *next_seq, sum.value())
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

/// What a workspace operation needs from the entry being applied.
pub(crate) struct Ctx<'a> {
    /// The entry's time (leader-stamped, never going backwards).
    pub(crate) now_ms: i64,
    pub(crate) timers: &'a mut Timers,
    pub(crate) effects: &'a mut Vec<Effect>,
}

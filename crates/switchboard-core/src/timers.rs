//! Timers: deferred work keyed by the time an entry's timestamp reaches.
//!
//! Timers live in the state (and its snapshot) and fire during `apply` of the first entry
//! whose timestamp reaches them, so every replica fires them at the same log position. A
//! timer names the situation it was set for (a conversation's generation, a team's
//! configuration version) and is ignored if that situation has passed, which is cheaper than
//! cancelling.

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

/// All pending timers, ordered by due time then creation order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Timers {
    pending: BTreeMap<(i64, u64), (WorkspaceId, Timer)>,
    next_seq: u64,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at_ms: i64, workspace: WorkspaceId, timer: Timer) {
        self.pending.insert((at_ms, self.next_seq), (workspace, timer));
        // Only orders timers due at the same millisecond; wrapping after 2^64 timers is harmless.
        self.next_seq = self.next_seq.wrapping_add(1);
    }

    /// Removes and returns the earliest timer due at or before `now_ms`.
    pub(crate) fn pop_due(&mut self, now_ms: i64) -> Option<(WorkspaceId, Timer)> {
        let entry = self.pending.first_entry()?;
        if entry.key().0 > now_ms {
            return None;
        }
        Some(entry.remove())
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

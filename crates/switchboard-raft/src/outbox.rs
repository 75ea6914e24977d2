//! The outbox: effects of applied entries that the effect publisher has not yet confirmed
//! stored outside the cluster (in NATS).
//!
//! Effects are a pure function of the log, but only of the log applied in order from the
//! start: once a snapshot covers an entry, its effects cannot be derived again. So every
//! replica keeps the effects of each entry after the *confirmed* index, as part of its
//! replicated state: filled by `apply`, carried in snapshots (a node restored from one, or a
//! follower that installs one, still has them), and emptied up to an index only when an entry
//! of the log says the publisher confirmed that far ([`Proposal::published`]). A leader
//! resumes publishing from the outbox, whatever restarted, crashed or was compacted meanwhile.
//!
//! The outbox is bounded ([`OUTBOX_EFFECTS_MAX`]): while nobody confirms (NATS down for a long
//! time), the oldest entries are dropped beyond it, counted and logged as lost to the stream.
//! The bound is a constant, not a setting, so every replica drops the same entries.
//!
//! [`Proposal::published`]: crate::Proposal::published

use crate::types::{AppliedEntry, InputOutcome};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// Most effects an outbox holds; beyond it the oldest entries are dropped (and counted).
pub const OUTBOX_EFFECTS_MAX: usize = 1_000_000;

/// Effects not yet confirmed published, in log order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbox {
    /// Effects of every entry up to this index are confirmed stored by the publisher.
    confirmed: u64,
    /// Entries after `confirmed` that had effects, in log order.
    entries: VecDeque<AppliedEntry>,
    /// Effects in `entries`.
    effects: usize,
    /// The highest index whose effects were dropped unpublished because of the bound; 0 if none.
    dropped_through: u64,
}

/// What an outbox has from an index on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// The entries with an index at or after the one asked for, in order.
    pub entries: Vec<AppliedEntry>,
    /// Effects of entries up to this index are confirmed stored elsewhere (or were dropped):
    /// the outbox cannot serve anything at or before it.
    pub served_after: u64,
}

impl Outbox {
    /// Keeps the effects of the entry at `index`, if it had any. Returns how many older effects
    /// it dropped unpublished to stay within the bound.
    pub(crate) fn push(&mut self, index: u64, at_ms: i64, outcomes: &Arc<Vec<InputOutcome>>) -> u64 {
        let entry = AppliedEntry { index, at_ms, outcomes: Arc::clone(outcomes) };
        let effects = entry.effects();
        if effects == 0 || index <= self.confirmed {
            return 0;
        }
        let mut dropped_effects = 0u64;
        self.effects = self.effects.saturating_add(effects);
        self.entries.push_back(entry);
        while self.effects > OUTBOX_EFFECTS_MAX {
            let Some(oldest) = self.entries.pop_front() else { break };
            let dropped = oldest.effects();
            self.effects = self.effects.saturating_sub(dropped);
            self.dropped_through = oldest.index;
            dropped_effects = dropped_effects.saturating_add(dropped as u64);
            tracing::error!(
                index = oldest.index,
                effects = dropped,
                "the outbox holds {OUTBOX_EFFECTS_MAX} effects nobody confirmed published (is NATS down?): the \
                 oldest are dropped and will never reach the effects stream (Watch streams still had them)"
            );
        }
        dropped_effects
    }

    /// Records that effects of every entry up to `index` are stored by the publisher.
    pub(crate) fn confirm(&mut self, index: u64) {
        if index <= self.confirmed {
            return;
        }
        self.confirmed = index;
        while self.entries.front().is_some_and(|entry| entry.index <= index) {
            if let Some(entry) = self.entries.pop_front() {
                self.effects = self.effects.saturating_sub(entry.effects());
            }
        }
    }

    /// The confirmed index.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// The index of the oldest entry held.
    pub fn oldest_index(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.index)
    }

    /// Effects held.
    pub fn effects(&self) -> usize {
        self.effects
    }

    /// The entries at or after `index`, and the index after which the outbox is complete.
    pub fn from_index(&self, index: u64) -> OutboxBacklog {
        let start = self.entries.partition_point(|entry| entry.index < index);
        OutboxBacklog {
            entries: self.entries.range(start..).cloned().collect(),
            served_after: self.confirmed.max(self.dropped_through),
        }
    }

    /// The first entry at or after `index`, if the outbox is complete from `index` on (`None`:
    /// no entry from `index` on had effects); otherwise the index through which it cannot
    /// serve.
    pub fn entry_from(&self, index: u64) -> Result<Option<AppliedEntry>, u64> {
        let served_after = self.confirmed.max(self.dropped_through);
        if served_after >= index {
            return Err(served_after);
        }
        let start = self.entries.partition_point(|entry| entry.index < index);
        Ok(self.entries.get(start).cloned())
    }

    /// The form kept in a snapshot, borrowed: it encodes as a [`StoredOutbox`] does, without
    /// a copy of the effects (up to [`OUTBOX_EFFECTS_MAX`] of them when the effects cannot be
    /// published).
    pub(crate) fn stored(&self) -> StoredOutboxRef<'_> {
        StoredOutboxRef { confirmed: self.confirmed, dropped_through: self.dropped_through, entries: &self.entries }
    }

    /// Back from a snapshot.
    pub(crate) fn from_stored(stored: StoredOutbox) -> Self {
        let mut outbox =
            Outbox { confirmed: stored.confirmed, dropped_through: stored.dropped_through, ..Outbox::default() };
        for (index, at_ms, outcomes) in stored.entries {
            let entry = AppliedEntry { index, at_ms, outcomes: Arc::new(outcomes) };
            outbox.effects = outbox.effects.saturating_add(entry.effects());
            outbox.entries.push_back(entry);
        }
        outbox
    }
}

/// An outbox as a snapshot keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredOutbox {
    confirmed: u64,
    dropped_through: u64,
    entries: Vec<(u64, i64, Vec<InputOutcome>)>,
}

/// A [`StoredOutbox`] to encode, borrowed from the outbox (see [`Outbox::stored`]); the
/// fields, in the same order, encode the same.
#[derive(Serialize)]
pub(crate) struct StoredOutboxRef<'a> {
    confirmed: u64,
    dropped_through: u64,
    #[serde(serialize_with = "entries_as_stored")]
    entries: &'a VecDeque<AppliedEntry>,
}

/// Each entry as the tuple [`StoredOutbox`] holds: index, time, outcomes.
fn entries_as_stored<S: serde::Serializer>(entries: &&VecDeque<AppliedEntry>, out: S) -> Result<S::Ok, S::Error> {
    out.collect_seq(entries.iter().map(|entry| (entry.index, entry.at_ms, entry.outcomes.as_slice())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{AgentId, AgentStatus, Effect, WorkspaceId};

    fn outcomes(effects: usize) -> Arc<Vec<InputOutcome>> {
        let effect = Effect::AgentStatusChanged {
            workspace: WorkspaceId::new("w"),
            agent: AgentId::new("a"),
            status: AgentStatus::Online,
        };
        Arc::new(vec![InputOutcome {
            effects: vec![effect; effects],
            timer_effects: 0,
            event_id: None,
            rejection: None,
        }])
    }

    fn indexes(backlog: &OutboxBacklog) -> Vec<u64> {
        backlog.entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn keeps_what_is_not_confirmed_and_survives_a_snapshot() {
        let mut outbox = Outbox::default();
        outbox.push(1, 10, &outcomes(2));
        outbox.push(2, 11, &outcomes(0)); // nothing to keep
        outbox.push(3, 12, &outcomes(1));
        outbox.push(4, 13, &outcomes(3));
        assert_eq!(outbox.effects(), 6);
        assert_eq!(indexes(&outbox.from_index(2)), [3, 4]);
        outbox.confirm(3);
        assert_eq!(outbox.effects(), 3);
        let backlog = outbox.from_index(0);
        assert_eq!((indexes(&backlog), backlog.served_after), (vec![4], 3));
        // Confirmations never go back; entries at or before the confirmed index are not kept.
        outbox.confirm(2);
        outbox.push(3, 12, &outcomes(1));
        assert_eq!(indexes(&outbox.from_index(0)), [4]);
        outbox.push(5, 14, &outcomes(2));
        let restored = Outbox::from_stored(
            postcard::from_bytes(&postcard::to_allocvec(&outbox.stored()).expect("encodes")).expect("decodes"),
        );
        assert_eq!(restored, outbox);
    }

    #[test]
    fn beyond_the_bound_the_oldest_are_dropped_and_said_to_be() {
        let mut outbox = Outbox::default();
        let half = OUTBOX_EFFECTS_MAX / 2;
        assert_eq!(outbox.push(1, 0, &outcomes(half)), 0);
        assert_eq!(outbox.push(2, 0, &outcomes(half)), 0);
        assert_eq!(outbox.push(3, 0, &outcomes(1)), half as u64);
        let backlog = outbox.from_index(0);
        assert_eq!((indexes(&backlog), backlog.served_after), (vec![2, 3], 1));
        assert_eq!(outbox.effects(), half + 1);
    }
}

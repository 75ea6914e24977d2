//! The types openraft is instantiated with, and what travels in a log entry.

use crate::audit::{Actor, AuditNote};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;
use switchboard_core::{ApplyError, Effect, ErrorKind, EventId, Input, Outcome};

/// A node's id inside the cluster. Chosen by the operator; never reused for another machine.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Switchboard's instantiation of openraft.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry as openraft stores it.
pub type Entry = openraft::Entry<TypeConfig>;
/// The id of a log entry: leader term, leader node and index.
pub type LogId = openraft::LogId<NodeId>;
/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
/// The Raft handle for this configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// Membership as recorded in the log and the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// Metadata of a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;

/// Where a cluster member can be reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the peer-only Raft service (`raft.v1.RaftPeer`).
    pub raft_addr: String,
    /// `host:port` of the public gRPC API (`switchboard.v1`), so that clients can be pointed at
    /// the leader. Empty when the node serves no public API (library use, tests).
    pub api_addr: String,
}

impl NodeInfo {
    /// A node reachable for peers at `raft_addr` and for clients at `api_addr`.
    pub fn new(raft_addr: impl Into<String>, api_addr: impl Into<String>) -> Self {
        Self { raft_addr: raft_addr.into(), api_addr: api_addr.into() }
    }
}

/// The payload of one application log entry: inputs stamped with the leader's clock.
///
/// The leader writes `at_ms` when it forms the entry; replicas never read a clock while
/// applying. Several concurrent writers share one entry (see the batcher), so one fsync commits
/// all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// UTC milliseconds on the leader when the entry was formed.
    pub at_ms: i64,
    /// The inputs, applied in order.
    pub inputs: Vec<Input>,
    /// Set by the effect publisher: the effects of every entry up to this index are stored
    /// outside the cluster, so replicas may drop them from their outbox.
    pub published: Option<u64>,
    /// Who made each input, for the audit trail: empty, or one per input (`None`: not
    /// audited).
    pub actors: Vec<Option<Actor>>,
    /// A cluster change to record in the audit trail (membership).
    pub note: Option<AuditNote>,
}

/// What applying one log entry produced: one outcome per input, in order. Blank and membership
/// entries produce none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// One outcome per input of the entry.
    pub outcomes: Vec<InputOutcome>,
}

/// What one input did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputOutcome {
    /// Effects in order: timers that fell due first, then the input's own.
    pub effects: Vec<Effect>,
    /// How many of `effects`, from the first, came from timers rather than the input.
    pub timer_effects: u32,
    /// The id of the input's event, when it had one and caused effects of its own (so that
    /// each effect can name the event behind it).
    pub event_id: Option<EventId>,
    /// Why the input itself was refused, if it was. A refused input changed nothing (timer
    /// effects above still happened).
    pub rejection: Option<Rejection>,
}

impl InputOutcome {
    /// What `input` did, from the state machine's outcome.
    pub fn new(input: &Input, outcome: Outcome) -> Self {
        let timer_effects = u32::try_from(outcome.timer_effects).unwrap_or(u32::MAX);
        let event_id = match input {
            Input::Event(event) if outcome.effects.len() > outcome.timer_effects => event.event_id.clone(),
            _ => None,
        };
        Self {
            effects: outcome.effects,
            timer_effects,
            event_id,
            rejection: outcome.result.err().map(|e| Rejection::from(&e)),
        }
    }

    /// The event behind the effect at `position` among [`Self::effects`]: `None` for effects
    /// of timers and of inputs without an event id.
    pub fn cause(&self, position: usize) -> Option<&EventId> {
        if position < self.timer_effects as usize { None } else { self.event_id.as_ref() }
    }
}

/// An applied application entry and the outcome of each of its inputs: what the change feed
/// ([`crate::StateChange::Entry`]), the outbox and Watch streams carry. A writer gets its own
/// share of one as [`crate::Committed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    /// Its log index.
    pub index: u64,
    /// The leader's timestamp on it (UTC milliseconds).
    pub at_ms: i64,
    /// One outcome per input, in order; shared, never copied, between the feed's subscribers.
    pub outcomes: Arc<Vec<InputOutcome>>,
}

impl AppliedEntry {
    /// How many effects the entry had.
    pub fn effects(&self) -> usize {
        self.outcomes.iter().map(|outcome| outcome.effects.len()).sum()
    }

    /// Its effects, numbered from 0 (see [`numbered_effects`]).
    pub fn numbered_effects(&self) -> impl Iterator<Item = NumberedEffect<'_>> {
        numbered_effects(&self.outcomes, 0)
    }
}

/// One effect of an applied entry, with its place in the entry: `(log index, sequence)` names
/// an effect everywhere (API answers, Watch, NATS `Nats-Msg-Id`).
#[derive(Clone, Copy, Debug)]
pub struct NumberedEffect<'a> {
    /// Its position among the effects of its entry, from 0.
    pub sequence: u32,
    /// The effect.
    pub effect: &'a Effect,
    /// The event behind it (`None` for a timer's, see [`InputOutcome::cause`]).
    pub cause: Option<&'a EventId>,
    /// Whether it is the last effect of `outcomes` (of the entry, when given them all).
    pub last: bool,
}

/// The effects of consecutive `outcomes` of one entry, numbered from `first_sequence` (0 for
/// an entry's first outcome; [`crate::Committed::first_effect_sequence`] for a writer's own).
pub fn numbered_effects(outcomes: &[InputOutcome], first_sequence: u32) -> impl Iterator<Item = NumberedEffect<'_>> {
    let total: usize = outcomes.iter().map(|outcome| outcome.effects.len()).sum();
    let mut cursor = EffectCursor::starting_at(first_sequence);
    let mut taken = 0usize;
    std::iter::from_fn(move || {
        let mut numbered = cursor.next(outcomes)?;
        taken += 1;
        numbered.last = taken == total;
        Some(numbered)
    })
}

/// A place in an entry's effects that can be kept between calls, for a reader that takes one
/// effect at a time (a Watch stream sends one when its client is ready). It numbers effects as
/// [`numbered_effects`] does; that function is built on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EffectCursor {
    outcome: usize,
    effect: usize,
    sequence: u32,
}

impl EffectCursor {
    /// A cursor before the first effect, which gets `first_sequence`.
    pub fn starting_at(first_sequence: u32) -> Self {
        Self { outcome: 0, effect: 0, sequence: first_sequence }
    }

    /// The next effect of `outcomes` (always the same outcomes for one cursor), or `None` when
    /// all are taken. Its `last` is `false`: a one-at-a-time reader does not need it.
    pub fn next<'a>(&mut self, outcomes: &'a [InputOutcome]) -> Option<NumberedEffect<'a>> {
        loop {
            let outcome = outcomes.get(self.outcome)?;
            let Some(effect) = outcome.effects.get(self.effect) else {
                self.outcome += 1;
                self.effect = 0;
                continue;
            };
            let numbered =
                NumberedEffect { sequence: self.sequence, effect, cause: outcome.cause(self.effect), last: false };
            self.effect += 1;
            self.sequence = self.sequence.saturating_add(1);
            return Some(numbered);
        }
    }
}

/// A refused input, in a form that survives serialization: the family for choosing a status
/// code, a stable label for metrics and the full message for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The error family (maps to a gRPC code).
    pub kind: ErrorKind,
    /// A short stable label, e.g. `unknown_agent`.
    pub reason: String,
    /// The message, naming the field or entity at fault.
    pub message: String,
}

impl From<&ApplyError> for Rejection {
    fn from(error: &ApplyError) -> Self {
        Self { kind: error.kind(), reason: error.reason_label().to_owned(), message: error.to_string() }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod numbering_tests {
    use super::*;
    use switchboard_core::{AgentId, AgentStatus, WorkspaceId};

    fn status(agent: &str) -> Effect {
        Effect::AgentStatusChanged {
            workspace: WorkspaceId::new("w"),
            agent: AgentId::new(agent),
            status: AgentStatus::Online,
        }
    }

    #[test]
    fn effects_are_numbered_across_outcomes_with_their_cause_and_the_last_marked() {
        let outcomes = vec![
            // A timer's effect first, then the event's own.
            InputOutcome {
                effects: vec![status("timer"), status("a")],
                timer_effects: 1,
                event_id: Some(EventId::new("e1")),
                rejection: None,
            },
            InputOutcome { effects: Vec::new(), timer_effects: 0, event_id: None, rejection: None },
            InputOutcome {
                effects: vec![status("b")],
                timer_effects: 0,
                event_id: Some(EventId::new("e3")),
                rejection: None,
            },
        ];
        let numbered: Vec<(u32, Option<&str>, bool)> =
            numbered_effects(&outcomes, 0).map(|n| (n.sequence, n.cause.map(EventId::as_str), n.last)).collect();
        assert_eq!(numbered, [(0, None, false), (1, Some("e1"), false), (2, Some("e3"), true)]);
        // A writer's own outcome, numbered where its entry put it.
        let own: Vec<u32> = numbered_effects(&outcomes[2..], 7).map(|n| n.sequence).collect();
        assert_eq!(own, [7]);
    }
}

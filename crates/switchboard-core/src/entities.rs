//! The entities of a workspace as stored in the state: configuration plus live counters.
//!
//! Fields without `#[serde(skip)]` are the source of truth and go into snapshots; skipped
//! fields are indexes rebuilt from them after a restore (`Workspace::rebuild`).

use crate::digest::{DigestRecord, Hashed, hash_record};
use crate::effect::AssignReason;
use crate::hours::Calendar;
use crate::ids::{AgentId, ContactId, ConversationId, Language, TeamId};
use crate::line::Line;
use crate::model::{AgentSpec, AgentStatus, Channel, ContactSpec, TeamSpec};
use crate::pool::{Pool, QueueKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An agent: configuration, presence and counters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Agent {
    pub(crate) spec: AgentSpec,
    pub(crate) status: AgentStatus,
    /// Conversations received since the last local midnight of the agent's primary team.
    pub(crate) received_today: u32,
    /// When the agent last received a conversation (`i64::MIN` = never).
    pub(crate) last_assigned_ms: i64,
    /// Moving average of first-response times, once known.
    pub(crate) average_response_ms: Option<u64>,
    /// `(team, position)` for every team the agent is a member of, in team-id order.
    #[serde(skip)]
    pub(crate) memberships: Vec<(TeamId, u32)>,
    /// Open (assigned) conversations.
    #[serde(skip)]
    pub(crate) open: OpenSet,
    #[serde(skip)]
    pub(crate) open_by_channel: [u32; Channel::ALL.len()],
    /// Conversations waiting for this agent in particular.
    #[serde(skip)]
    pub(crate) personal: Line<QueueKey, ConversationId>,
}

impl Agent {
    pub(crate) fn new(spec: AgentSpec) -> Self {
        Self {
            spec,
            status: AgentStatus::Offline,
            received_today: 0,
            last_assigned_ms: i64::MIN,
            average_response_ms: None,
            memberships: Vec::new(),
            open: OpenSet::default(),
            open_by_channel: [0; Channel::ALL.len()],
            personal: Line::default(),
        }
    }

    pub(crate) fn open_count(&self) -> u32 {
        self.open.len() as u32
    }

    /// Whether a per-channel limit leaves room for one more conversation on `channel`.
    pub(crate) fn has_room_on(&self, channel: Channel) -> bool {
        self.spec.max_open_per_channel.get(&channel).is_none_or(|&limit| self.open_on(channel) < limit)
    }

    /// Open conversations on one channel.
    pub(crate) fn open_on(&self, channel: Channel) -> u32 {
        self.open_by_channel.get(channel.index()).copied().unwrap_or(0)
    }

    /// Counts a conversation as open for this agent.
    pub(crate) fn add_open(&mut self, id: ConversationId, channel: Channel) {
        if self.open.insert(id)
            && let Some(count) = self.open_by_channel.get_mut(channel.index())
        {
            // Bounded by the number of conversations, far below u32::MAX.
            *count = count.saturating_add(1);
        }
    }

    /// Stops counting a conversation as open for this agent.
    pub(crate) fn remove_open(&mut self, id: &ConversationId, channel: Channel) {
        if self.open.remove(id)
            && let Some(count) = self.open_by_channel.get_mut(channel.index())
        {
            *count = count.saturating_sub(1);
        }
    }
}

/// Conversations an [`OpenSet`] keeps in the agent's record before it moves them to a B-tree.
pub(crate) const OPEN_INLINE: usize = 4;

/// An agent's open conversations, in id order. Up to [`OPEN_INLINE`] live in the agent's record
/// itself, so an assignment or a close touches no memory beyond it. Chat agents hold a handful
/// of conversations at a time, and at 100,000 agents a B-tree node of each agent's own cost a
/// cache miss on every assignment and every close. An agent who holds more has them in a
/// B-tree, as before, until it holds none again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpenSet {
    /// In id order, every `Some` before every `None`.
    Inline([Option<ConversationId>; OPEN_INLINE]),
    /// More than fit inline (at some point since the set was last empty).
    Tree(BTreeSet<ConversationId>),
}

impl Default for OpenSet {
    fn default() -> Self {
        Self::Inline([const { None }; OPEN_INLINE])
    }
}

impl OpenSet {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Inline(ids) => ids.iter().take_while(|id| id.is_some()).count(),
            Self::Tree(tree) => tree.len(),
        }
    }

    pub(crate) fn contains(&self, id: &ConversationId) -> bool {
        match self {
            Self::Inline(ids) => ids.iter().flatten().any(|held| held == id),
            Self::Tree(tree) => tree.contains(id),
        }
    }

    /// The conversations in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &ConversationId> {
        let (inline, tree) = match self {
            Self::Inline(ids) => (Some(ids.iter().flatten()), None),
            Self::Tree(tree) => (None, Some(tree.iter())),
        };
        inline.into_iter().flatten().chain(tree.into_iter().flatten())
    }

    /// Adds `id`; false if it was there already.
    pub(crate) fn insert(&mut self, id: ConversationId) -> bool {
        let ids = match self {
            Self::Tree(tree) => return tree.insert(id),
            Self::Inline(ids) => ids,
        };
        let len = ids.iter().take_while(|held| held.is_some()).count();
        let mut at = len;
        for (index, held) in ids.iter().flatten().enumerate() {
            if *held == id {
                return false;
            }
            if *held > id {
                at = index;
                break;
            }
        }
        if len == OPEN_INLINE {
            let mut tree: BTreeSet<ConversationId> = ids.iter_mut().filter_map(Option::take).collect();
            tree.insert(id);
            *self = Self::Tree(tree);
            return true;
        }
        // `ids[len]` is free: shift `at..len` one place right and put `id` at `at`.
        if let Some(window) = ids.get_mut(at..=len) {
            window.rotate_right(1);
        }
        if let Some(free) = ids.get_mut(at) {
            *free = Some(id);
        }
        true
    }

    /// Removes `id`; false if it was not there.
    pub(crate) fn remove(&mut self, id: &ConversationId) -> bool {
        match self {
            Self::Tree(tree) => {
                let removed = tree.remove(id);
                if tree.is_empty() {
                    *self = Self::default();
                }
                removed
            }
            Self::Inline(ids) => {
                let Some(at) = ids.iter().position(|held| held.as_ref() == Some(id)) else { return false };
                // Take it out and close the gap, keeping every `Some` first.
                if let Some(rest) = ids.get_mut(at..) {
                    rest.rotate_left(1);
                    if let Some(last) = rest.last_mut() {
                        *last = None;
                    }
                }
                true
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A team: configuration, pools, and derived schedules and queues.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Team {
    /// Hashed once per change: it holds up to `TEAM_MEMBERS_MAX` members and is part of
    /// every hash of the team, which most entries touch.
    pub(crate) spec: Hashed<TeamSpec>,
    /// Pool 0 has no requirement; rules add more. Never shrinks, so pool ids stay valid.
    pub(crate) pools: Vec<Pool>,
    /// Moving average of handle times (assignment to close), for ETAs.
    pub(crate) average_handle_ms: u64,
    /// Bumped on every configuration change so that timers of the old configuration are
    /// recognised as stale.
    pub(crate) timer_version: u32,
    /// Whether an opening-time timer of the current version is pending.
    pub(crate) opening_timer_pending: bool,
    /// Whether a queue-position update of the current version is pending: the queue moved and
    /// its waiting customers will be told their new positions when the timer fires.
    pub(crate) positions_pending: bool,
    #[serde(skip)]
    pub(crate) calendar: Option<Calendar>,
    /// Every queued conversation of the team, in service order: the team's queue.
    #[serde(skip)]
    pub(crate) waiting: Line<QueueKey, ConversationId>,
    /// Conversations waiting for business hours, in arrival order.
    #[serde(skip)]
    pub(crate) after_hours: BTreeMap<QueueKey, ConversationId>,
}

impl DigestRecord for Team {
    fn digest_hash<K: Serialize>(&self, seed: u64, key: &K) -> u64 {
        // Every field, so that a new one cannot be left out of the digest unnoticed.
        let Team {
            spec,
            pools,
            average_handle_ms,
            timer_version,
            opening_timer_pending,
            positions_pending,
            calendar: _,
            waiting: _,
            after_hours: _,
        } = self;
        hash_record(
            seed,
            &(key, spec.hash(), pools, average_handle_ms, timer_version, opening_timer_pending, positions_pending),
        )
    }
}

impl DigestRecord for Agent {}

impl DigestRecord for Contact {}

impl DigestRecord for Conversation {}

impl Team {
    /// Whether a move of this team's queue should set a position-update timer: updates are on
    /// and none is pending yet.
    pub(crate) fn wants_position_updates(&self) -> bool {
        self.spec.options.position_update_interval_s > 0 && !self.positions_pending
    }
}

/// A customer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Contact {
    pub(crate) spec: ContactSpec,
    /// The agent who last served the contact, and in which team.
    pub(crate) last_agent: Option<(AgentId, TeamId)>,
    /// Conversations opened so far (0 = a new customer).
    pub(crate) conversations: u32,
}

/// Lifecycle state of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationState {
    /// Waiting for an agent.
    Queued,
    /// An agent has it.
    Assigned,
    /// Ended; a customer message reopens it.
    Closed,
}

impl ConversationState {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ConversationState::Queued => "queued",
            ConversationState::Assigned => "assigned",
            ConversationState::Closed => "closed",
        }
    }
}

/// Where a queued conversation waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Placement {
    /// Not queued.
    None,
    /// In its pool's queue, for the strategy.
    Pool,
    /// For one agent (dedicated, rule target, or its agent after a reopen).
    Personal { agent: AgentId, reason: AssignReason },
    /// In the claimable queue until the team's activation delay ends.
    Delayed,
    /// Until the team's business hours begin.
    AfterHours,
}

/// A conversation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Conversation {
    pub(crate) contact: ContactId,
    pub(crate) channel: Channel,
    pub(crate) language: Option<Language>,
    pub(crate) topic: Option<String>,
    pub(crate) priority: u8,
    pub(crate) state: ConversationState,
    pub(crate) team: TeamId,
    /// Pool within the team.
    pub(crate) pool: u32,
    pub(crate) assignee: Option<AgentId>,
    /// The agent who had it last (kept after close, for reopening).
    pub(crate) last_agent: Option<AgentId>,
    pub(crate) placement: Placement,
    /// Arrival sequence number: its place in queues.
    pub(crate) seq: u64,
    pub(crate) opened_ms: i64,
    pub(crate) assigned_ms: i64,
    pub(crate) closed_ms: i64,
    pub(crate) replied: bool,
    /// Bumped whenever the conversation changes hands or state, so that timers set for an
    /// earlier situation are recognised as stale.
    pub(crate) generation: u32,
    /// What the customer was last told of their place in the queue (by a `Queued` or a
    /// `QueuePosition` effect), while they wait; `None` once they no longer wait.
    pub(crate) told: Option<Told>,
}

/// A queue position as a waiting customer was told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Told {
    pub(crate) position: u32,
    pub(crate) eta_ms: Option<u64>,
    /// When they were told (state time, UTC milliseconds).
    pub(crate) at_ms: i64,
}

impl Conversation {
    pub(crate) fn queue_key(&self) -> QueueKey {
        QueueKey::new(self.priority, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8),
        Remove(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few ids, so that sets fill past the inline capacity and empty again.
        prop_oneof![
            6 => (0u8..10).prop_map(Op::Insert),
            5 => (0u8..10).prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    fn id(n: u8) -> ConversationId {
        ConversationId::new(format!("c{n}"))
    }

    proptest! {
        /// An open set answers as a `BTreeSet` does, whichever form it is in.
        #[test]
        fn an_open_set_behaves_as_an_ordered_set(ops in proptest::collection::vec(op(), 1..200)) {
            let mut set = OpenSet::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(n) => prop_assert_eq!(set.insert(id(n)), model.insert(id(n))),
                    Op::Remove(n) => prop_assert_eq!(set.remove(&id(n)), model.remove(&id(n))),
                    Op::Clear => {
                        set.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().collect::<Vec<_>>());
                prop_assert_eq!(set.len(), model.len());
                for n in 0..10 {
                    prop_assert_eq!(set.contains(&id(n)), model.contains(&id(n)));
                }
                match &set {
                    OpenSet::Inline(ids) => {
                        let held = ids.iter().take_while(|held| held.is_some()).count();
                        prop_assert!(ids.iter().skip(held).all(Option::is_none), "a gap inline: {:?}", ids);
                    }
                    OpenSet::Tree(tree) => prop_assert!(!tree.is_empty(), "an empty tree is kept"),
                }
            }
        }
    }

    #[test]
    fn an_open_set_moves_to_a_tree_past_its_inline_capacity_and_back_once_empty() {
        let mut set = OpenSet::default();
        for n in (0..=OPEN_INLINE as u8).rev() {
            assert!(set.insert(id(n)));
            let inline = matches!(set, OpenSet::Inline(_));
            assert_eq!(inline, usize::from(n) > 0, "after {} inserts", OPEN_INLINE + 1 - usize::from(n));
        }
        for n in 0..=OPEN_INLINE as u8 {
            assert!(set.remove(&id(n)));
        }
        assert_eq!(set, OpenSet::default());
    }
}

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
    pub(crate) open: BTreeSet<ConversationId>,
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
            open: BTreeSet::new(),
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

//! Read-only views of the state, for queries (gRPC reads, dashboards, tests).

use crate::entities::ConversationState;
use crate::ids::{AgentId, ContactId, ConversationId, Language, Skill, TeamId};
use crate::model::{AgentStatus, Channel, ContactSpec};

/// Where a queued conversation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePosition {
    /// One-based position (in the team's queue, or the agent's when it waits for one agent).
    pub position: u32,
    /// Expected wait, when anyone is serving.
    pub eta_ms: Option<u64>,
    /// The agent it waits for, if any.
    pub waiting_for: Option<AgentId>,
}

/// A conversation as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationView {
    /// Its id.
    pub id: ConversationId,
    /// The customer.
    pub contact: ContactId,
    /// Its channel.
    pub channel: Channel,
    /// Its language, if known.
    pub language: Option<Language>,
    /// Its topic, if any.
    pub topic: Option<String>,
    /// Its priority.
    pub priority: u8,
    /// Queued, assigned or closed.
    pub state: ConversationState,
    /// Its team.
    pub team: TeamId,
    /// Its agent while assigned.
    pub assignee: Option<AgentId>,
    /// The agent who had it last.
    pub last_agent: Option<AgentId>,
    /// When it was opened (or last reopened).
    pub opened_ms: i64,
    /// Its place in the queue while queued.
    pub queue: Option<QueuePosition>,
    /// Skills (with minimum levels) an agent needs to take it automatically, from the rule
    /// that routed it.
    pub required_skills: Vec<(Skill, u8)>,
    /// The language an agent needs to take it automatically, from the rule that routed it.
    pub required_language: Option<Language>,
}

/// An agent as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    /// Its id.
    pub id: AgentId,
    /// Its display name.
    pub display_name: String,
    /// Its presence.
    pub status: AgentStatus,
    /// Open conversations.
    pub open: u32,
    /// Its limit of open conversations.
    pub max_open: u32,
    /// Conversations received today.
    pub received_today: u32,
    /// Its daily reception quota.
    pub daily_limit: u32,
    /// Teams it belongs to, in id order.
    pub teams: Vec<TeamId>,
    /// Its open conversations, in id order.
    pub open_conversations: Vec<ConversationId>,
}

/// One entry of a team's queue listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedView {
    /// One-based position.
    pub position: u32,
    /// The conversation.
    pub conversation: ConversationId,
    /// Its priority.
    pub priority: u8,
    /// Its channel.
    pub channel: Channel,
    /// The agent it waits for, if any.
    pub waiting_for: Option<AgentId>,
    /// When it arrived.
    pub opened_ms: i64,
}

/// A contact as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactView {
    /// Its configuration.
    pub spec: ContactSpec,
    /// The agent who served it last.
    pub last_agent: Option<AgentId>,
    /// Conversations it has opened so far.
    pub conversations: u32,
}

//! The outputs of the state machine: what gateways, Watch streams and metrics act on.

use crate::ids::{AgentId, ContactId, ConversationId, TeamId, WorkspaceId};
use crate::model::{AgentStatus, Channel, Strategy};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Why a conversation went to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignReason {
    /// The team's strategy chose the agent.
    Strategy(Strategy),
    /// The contact's dedicated (VIP) agent.
    Dedicated,
    /// The agent who served this returning customer before.
    Returning,
    /// A routing rule names the agent.
    RuleAgent,
    /// A reopened conversation went back to its agent.
    Reopened,
    /// The agent picked it.
    Claimed,
    /// A supervisor assigned it.
    Manual,
    /// A supervisor transferred it to the agent.
    Transfer,
}

/// Why a conversation left its agent without being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnassignReason {
    /// The agent went offline and the team requeues.
    AgentOffline,
    /// The agent did not reply in time.
    NoReply,
    /// A supervisor transferred it.
    Transfer,
    /// The agent was removed.
    AgentRemoved,
}

/// Something that happened, for the outside world to act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// A conversation has an agent: "You are talking to Mary, she usually answers within
    /// 2 minutes".
    Assigned {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// The customer.
        contact: ContactId,
        /// Its channel.
        channel: Channel,
        /// Its team.
        team: TeamId,
        /// The agent.
        agent: AgentId,
        /// The agent's display name (inline, without allocation, up to 24 bytes).
        agent_name: CompactString,
        /// How long the agent usually takes to answer, in milliseconds.
        expected_response_ms: u64,
        /// Why this agent.
        reason: AssignReason,
    },
    /// A conversation left its agent (it is assigned again or queued by a following effect).
    Unassigned {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// The team it was in when it left the agent.
        team: TeamId,
        /// The agent it left.
        agent: AgentId,
        /// Why.
        reason: UnassignReason,
    },
    /// Nobody can take the conversation now: it waits ("you are number 4, about 6 minutes").
    Queued {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// Its team.
        team: TeamId,
        /// One-based position in the team's queue.
        position: u32,
        /// Expected wait in milliseconds, when anyone is serving the team.
        eta_ms: Option<u64>,
        /// Set when it waits for one particular agent.
        waiting_for: Option<AgentId>,
        /// The team's overcapacity message.
        message: Option<String>,
    },
    /// A waiting customer's place in the queue moved: "you are now number 2".
    QueuePosition {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// Its team.
        team: TeamId,
        /// One-based position in the team's queue (or in one agent's line).
        position: u32,
        /// Expected wait in milliseconds, when anyone is serving the team.
        eta_ms: Option<u64>,
        /// Set when it waits for one particular agent.
        waiting_for: Option<AgentId>,
    },
    /// The team is closed; the conversation waits for opening time.
    OutsideHours {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// Its team.
        team: TeamId,
        /// When the team opens next (UTC milliseconds), if ever.
        opens_at_ms: Option<i64>,
        /// The team's away message.
        message: Option<String>,
    },
    /// The team greets the customer.
    Welcome {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// Its team.
        team: TeamId,
        /// The welcome message.
        message: String,
    },
    /// A closed conversation is open again.
    Reopened {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// Its team.
        team: TeamId,
    },
    /// A conversation ended.
    Closed {
        /// Workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// Its team.
        team: TeamId,
        /// Its last agent, if it had one.
        agent: Option<AgentId>,
    },
    /// An agent's presence changed.
    AgentStatusChanged {
        /// Workspace.
        workspace: WorkspaceId,
        /// The agent.
        agent: AgentId,
        /// The new status.
        status: AgentStatus,
    },
}

impl Effect {
    /// Every kind, as [`Effect::kind`] names them.
    pub const KINDS: [&'static str; 9] = [
        "assigned",
        "unassigned",
        "queued",
        "queue_position",
        "outside_hours",
        "welcome",
        "reopened",
        "closed",
        "agent_status",
    ];

    /// The last token of the NATS subject `switchboard.effects.<workspace>.<kind>`.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Assigned { .. } => "assigned",
            Effect::Unassigned { .. } => "unassigned",
            Effect::Queued { .. } => "queued",
            Effect::QueuePosition { .. } => "queue_position",
            Effect::OutsideHours { .. } => "outside_hours",
            Effect::Welcome { .. } => "welcome",
            Effect::Reopened { .. } => "reopened",
            Effect::Closed { .. } => "closed",
            Effect::AgentStatusChanged { .. } => "agent_status",
        }
    }

    /// The conversation the effect is about; `None` for agent status changes.
    pub fn conversation(&self) -> Option<&ConversationId> {
        match self {
            Effect::Assigned { conversation, .. }
            | Effect::Unassigned { conversation, .. }
            | Effect::Queued { conversation, .. }
            | Effect::QueuePosition { conversation, .. }
            | Effect::OutsideHours { conversation, .. }
            | Effect::Welcome { conversation, .. }
            | Effect::Reopened { conversation, .. }
            | Effect::Closed { conversation, .. } => Some(conversation),
            Effect::AgentStatusChanged { .. } => None,
        }
    }

    /// The team of the conversation the effect is about; `None` for agent status changes.
    pub fn team(&self) -> Option<&TeamId> {
        match self {
            Effect::Assigned { team, .. }
            | Effect::Unassigned { team, .. }
            | Effect::Queued { team, .. }
            | Effect::QueuePosition { team, .. }
            | Effect::OutsideHours { team, .. }
            | Effect::Welcome { team, .. }
            | Effect::Reopened { team, .. }
            | Effect::Closed { team, .. } => Some(team),
            Effect::AgentStatusChanged { .. } => None,
        }
    }

    /// The agent the effect names, if any.
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            Effect::Assigned { agent, .. }
            | Effect::Unassigned { agent, .. }
            | Effect::AgentStatusChanged { agent, .. } => Some(agent),
            Effect::Queued { waiting_for, .. } | Effect::QueuePosition { waiting_for, .. } => waiting_for.as_ref(),
            Effect::Closed { agent, .. } => agent.as_ref(),
            Effect::OutsideHours { .. } | Effect::Welcome { .. } | Effect::Reopened { .. } => None,
        }
    }

    /// The workspace the effect belongs to.
    pub fn workspace(&self) -> &WorkspaceId {
        match self {
            Effect::Assigned { workspace, .. }
            | Effect::Unassigned { workspace, .. }
            | Effect::Queued { workspace, .. }
            | Effect::QueuePosition { workspace, .. }
            | Effect::OutsideHours { workspace, .. }
            | Effect::Welcome { workspace, .. }
            | Effect::Reopened { workspace, .. }
            | Effect::Closed { workspace, .. }
            | Effect::AgentStatusChanged { workspace, .. } => workspace,
        }
    }
}

//! The inputs of the state machine: one [`Input`] per committed log entry.

use crate::ids::Language;
use crate::ids::{AgentId, ContactId, ConversationId, EventId, TeamId, WorkspaceId};
use crate::model::{AgentSpec, AgentStatus, Channel, ContactSpec, RoutingRule, TeamSpec, WorkspaceSettings};
use serde::{Deserialize, Serialize};

/// One log entry's payload.
// Nearly every entry is an `Event`; boxing it to shrink the rare `Tick` would cost an
// allocation per entry for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Only advances time so that timers fire (the leader proposes one about once a second).
    Tick,
    /// A command for one workspace.
    Event(Event),
}

/// A command addressed to a workspace, optionally carrying an event id for deduplication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The workspace (tenant).
    pub workspace: WorkspaceId,
    /// The publisher's id for this event; a repeated id has no effect.
    pub event_id: Option<EventId>,
    /// What to do.
    pub command: Command,
}

/// What a customer's new conversation looks like to the router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenConversation {
    /// The conversation's id.
    pub conversation: ConversationId,
    /// The customer.
    pub contact: ContactId,
    /// The channel it arrived on.
    pub channel: Channel,
    /// The customer's language, if the gateway knows it.
    pub language: Option<Language>,
    /// A topic chosen by the customer or a bot.
    pub topic: Option<String>,
    /// Tags set by the gateway.
    pub tags: Vec<String>,
    /// The customer's first message, searched by keyword rules (not stored).
    pub first_message: String,
    /// Higher is served first; default 0.
    pub priority: u8,
}

impl OpenConversation {
    /// A conversation on `channel` with no attributes.
    pub fn new(conversation: impl Into<ConversationId>, contact: impl Into<ContactId>, channel: Channel) -> Self {
        Self {
            conversation: conversation.into(),
            contact: contact.into(),
            channel,
            language: None,
            topic: None,
            tags: Vec::new(),
            first_message: String::new(),
            priority: 0,
        }
    }
}

/// Where a transfer sends a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferTarget {
    /// To one agent (a supervisor's decision: no capacity check).
    Agent(AgentId),
    /// To a team, whose strategy picks the agent or queues it.
    Team(TeamId),
}

/// Every command the state machine understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates the workspace or changes its settings.
    ConfigureWorkspace(WorkspaceSettings),
    /// Creates or updates an agent.
    UpsertAgent(AgentSpec),
    /// Removes an agent; their open conversations are routed again.
    RemoveAgent {
        /// The agent.
        agent: AgentId,
    },
    /// Creates or updates a team.
    UpsertTeam(TeamSpec),
    /// Removes a team that has no conversations and no rule pointing at it.
    RemoveTeam {
        /// The team.
        team: TeamId,
    },
    /// Replaces the ordered routing rules.
    SetRoutingRules(Vec<RoutingRule>),
    /// Creates or updates a contact.
    UpsertContact(ContactSpec),
    /// An agent's presence changed.
    SetAgentStatus {
        /// The agent.
        agent: AgentId,
        /// The new status.
        status: AgentStatus,
    },
    /// A customer started a conversation.
    OpenConversation(OpenConversation),
    /// A customer wrote; reopens the conversation if it was closed.
    CustomerMessage {
        /// The conversation.
        conversation: ConversationId,
    },
    /// An agent replied in a conversation.
    AgentReplied {
        /// The conversation.
        conversation: ConversationId,
        /// Who replied.
        agent: AgentId,
    },
    /// The conversation ended.
    CloseConversation {
        /// The conversation.
        conversation: ConversationId,
    },
    /// An agent picks a waiting conversation for themselves.
    Claim {
        /// The conversation.
        conversation: ConversationId,
        /// The agent picking it.
        agent: AgentId,
    },
    /// A supervisor assigns a waiting conversation to an agent.
    Assign {
        /// The conversation.
        conversation: ConversationId,
        /// The agent.
        agent: AgentId,
    },
    /// A supervisor moves an open conversation to an agent or a team.
    Transfer {
        /// The conversation.
        conversation: ConversationId,
        /// Where to.
        target: TransferTarget,
    },
}

impl Command {
    /// The command's name, as the API calls it (`UpsertAgent`, `Claim`, ...), for logs and the
    /// audit trail: it carries no data of the command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::ConfigureWorkspace { .. } => "ConfigureWorkspace",
            Command::UpsertAgent { .. } => "UpsertAgent",
            Command::RemoveAgent { .. } => "RemoveAgent",
            Command::UpsertTeam { .. } => "UpsertTeam",
            Command::RemoveTeam { .. } => "RemoveTeam",
            Command::SetRoutingRules { .. } => "SetRoutingRules",
            Command::UpsertContact { .. } => "UpsertContact",
            Command::SetAgentStatus { .. } => "SetAgentStatus",
            Command::OpenConversation { .. } => "OpenConversation",
            Command::CustomerMessage { .. } => "CustomerMessage",
            Command::AgentReplied { .. } => "AgentReplied",
            Command::CloseConversation { .. } => "CloseConversation",
            Command::Claim { .. } => "Claim",
            Command::Assign { .. } => "Assign",
            Command::Transfer { .. } => "Transfer",
        }
    }

    /// The conversation the command is about, if it is about one.
    pub fn conversation(&self) -> Option<&ConversationId> {
        match self {
            Command::OpenConversation(open) => Some(&open.conversation),
            Command::CustomerMessage { conversation }
            | Command::AgentReplied { conversation, .. }
            | Command::CloseConversation { conversation }
            | Command::Claim { conversation, .. }
            | Command::Assign { conversation, .. }
            | Command::Transfer { conversation, .. } => Some(conversation),
            _ => None,
        }
    }
}

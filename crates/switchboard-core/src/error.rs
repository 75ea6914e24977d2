//! Why an input was refused.
//!
//! Every refusal of the caller's input leaves the state exactly as it was, and its event id is
//! not remembered: a refused event had no effect, so a redelivered copy is judged again (and
//! refused again, or applied once if the state now allows it). The one exception is
//! [`ErrorKind::Internal`], a bug found mid-way; see there. The variants are grouped by [`ErrorKind`] so that the gRPC edge
//! can pick a status code without matching every variant.

use crate::ids::{AgentId, ContactId, ConversationId, EventId, RuleId, TeamId, WorkspaceId};
use crate::limits::{
    AGENTS_PER_WORKSPACE_MAX, CONTACTS_PER_WORKSPACE_MAX, CONVERSATIONS_PER_WORKSPACE_MAX, TEAMS_PER_WORKSPACE_MAX,
    WORKSPACES_MAX,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The family of an [`ApplyError`], which decides how an edge reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The input is malformed: a missing or out-of-range field.
    InvalidArgument,
    /// The input names something that does not exist.
    NotFound,
    /// The input is well formed but the current state does not allow it.
    FailedPrecondition,
    /// The input was already applied (same event id); nothing happened this time.
    AlreadyApplied,
    /// The state machine found itself inconsistent while applying the input (a bug). The
    /// input was refused the same way on every replica; what it changed before the fault
    /// stays changed, identically everywhere.
    Internal,
}

/// An input that could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// The event id was applied before; this delivery had no effect.
    #[error("event {event_id} was already applied")]
    Duplicate {
        /// The repeated event id.
        event_id: EventId,
    },
    /// A field is missing or out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as named in the API.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The workspace was never configured.
    #[error("unknown workspace {0}")]
    UnknownWorkspace(WorkspaceId),
    /// No such agent in the workspace.
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// No such team in the workspace.
    #[error("unknown team {0}")]
    UnknownTeam(TeamId),
    /// No such conversation in the workspace.
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// No such contact in the workspace.
    #[error("unknown contact {0}")]
    UnknownContact(ContactId),
    /// A claim for a conversation that is not waiting in a queue.
    #[error("conversation {conversation} is not waiting to be picked: it is {state}")]
    NotClaimable {
        /// The conversation.
        conversation: ConversationId,
        /// Its current state, for the message.
        state: &'static str,
    },
    /// The conversation is already open.
    #[error("conversation {0} is already open")]
    AlreadyOpen(ConversationId),
    /// The conversation is closed and the operation needs an open one.
    #[error("conversation {0} is closed")]
    Closed(ConversationId),
    /// The agent has no capacity left for a self-picked conversation.
    #[error("agent {agent} is at max_open ({max_open}) and cannot claim more conversations")]
    AgentAtCapacity {
        /// The agent.
        agent: AgentId,
        /// Their limit.
        max_open: u32,
    },
    /// The state forbids the operation (gRPC `FAILED_PRECONDITION`, reason `precondition`).
    #[error(transparent)]
    Precondition(Conflict),
    /// An entity the state itself refers to is missing: an internal inconsistency (a bug),
    /// never the caller's mistake.
    #[error("internal error: {entity} {id} is missing from the state")]
    Missing {
        /// What kind of entity (`conversation`, `agent`, `team`, `pool`, ...).
        entity: &'static str,
        /// Its id or index.
        id: String,
    },
    /// Applying the input panicked (a bug); the Raft adapter caught it and refused the input.
    #[error("internal error while applying the input: {0}")]
    Internal(String),
}

impl ApplyError {
    /// Shorthand for [`ApplyError::Missing`].
    pub fn missing(entity: &'static str, id: impl std::fmt::Display) -> Self {
        Self::Missing { entity, id: id.to_string() }
    }

    /// Shorthand for [`ApplyError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }

    /// The family of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Duplicate { .. } => ErrorKind::AlreadyApplied,
            Self::Invalid { .. } => ErrorKind::InvalidArgument,
            Self::UnknownWorkspace(_)
            | Self::UnknownAgent(_)
            | Self::UnknownTeam(_)
            | Self::UnknownConversation(_)
            | Self::UnknownContact(_) => ErrorKind::NotFound,
            Self::NotClaimable { .. }
            | Self::AlreadyOpen(_)
            | Self::Closed(_)
            | Self::AgentAtCapacity { .. }
            | Self::Precondition(_) => ErrorKind::FailedPrecondition,
            Self::Missing { .. } | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Every label [`Self::reason_label`] gives.
    pub const REASONS: [&'static str; 13] = [
        "duplicate",
        "invalid",
        "unknown_workspace",
        "unknown_agent",
        "unknown_team",
        "unknown_conversation",
        "unknown_contact",
        "not_claimable",
        "already_open",
        "closed",
        "agent_at_capacity",
        "precondition",
        "internal",
    ];

    /// A short stable label for metrics (`reason` label of rejection counters).
    pub fn reason_label(&self) -> &'static str {
        match self {
            Self::Duplicate { .. } => "duplicate",
            Self::Invalid { .. } => "invalid",
            Self::UnknownWorkspace(_) => "unknown_workspace",
            Self::UnknownAgent(_) => "unknown_agent",
            Self::UnknownTeam(_) => "unknown_team",
            Self::UnknownConversation(_) => "unknown_conversation",
            Self::UnknownContact(_) => "unknown_contact",
            Self::NotClaimable { .. } => "not_claimable",
            Self::AlreadyOpen(_) => "already_open",
            Self::Closed(_) => "closed",
            Self::AgentAtCapacity { .. } => "agent_at_capacity",
            Self::Precondition(_) => "precondition",
            Self::Missing { .. } | Self::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_label_is_listed_and_every_listed_label_is_given() {
        let one_of_each = [
            ApplyError::Duplicate { event_id: EventId::new("e") },
            ApplyError::invalid("f", "r"),
            ApplyError::UnknownWorkspace(WorkspaceId::new("w")),
            ApplyError::UnknownAgent(AgentId::new("a")),
            ApplyError::UnknownTeam(TeamId::new("t")),
            ApplyError::UnknownConversation(ConversationId::new("c")),
            ApplyError::UnknownContact(ContactId::new("k")),
            ApplyError::NotClaimable { conversation: ConversationId::new("c"), state: "assigned" },
            ApplyError::AlreadyOpen(ConversationId::new("c")),
            ApplyError::Closed(ConversationId::new("c")),
            ApplyError::AgentAtCapacity { agent: AgentId::new("a"), max_open: 1 },
            ApplyError::Precondition(Conflict::NoDefaultTeam),
            ApplyError::missing("team", "t"),
            ApplyError::Internal("i".into()),
        ];
        let given: std::collections::BTreeSet<&str> = one_of_each.iter().map(ApplyError::reason_label).collect();
        let listed: std::collections::BTreeSet<&str> = ApplyError::REASONS.into_iter().collect();
        assert_eq!(given, listed);
    }
}

/// Why the state forbids an operation that is well formed: a limit is reached, or the entities
/// it names are in a relation that does not allow it. The text says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Conflict {
    /// The cluster holds [`WORKSPACES_MAX`] workspaces.
    #[error("this cluster holds {WORKSPACES_MAX} workspaces, the most it may (limit workspaces_max)")]
    WorkspacesFull,
    /// The workspace holds [`CONVERSATIONS_PER_WORKSPACE_MAX`] conversations.
    #[error(
        "workspace {0} holds {CONVERSATIONS_PER_WORKSPACE_MAX} conversations, the most it may (limit \
         conversations_per_workspace_max); close conversations or shorten closed_retention_s"
    )]
    ConversationsFull(WorkspaceId),
    /// The workspace has [`AGENTS_PER_WORKSPACE_MAX`] agents.
    #[error(
        "workspace {0} has {AGENTS_PER_WORKSPACE_MAX} agents, the most it may (limit agents_per_workspace_max); \
         remove one first"
    )]
    AgentsFull(WorkspaceId),
    /// The workspace has [`TEAMS_PER_WORKSPACE_MAX`] teams.
    #[error("workspace {0} has {TEAMS_PER_WORKSPACE_MAX} teams, the most it may (limit teams_per_workspace_max)")]
    TeamsFull(WorkspaceId),
    /// The workspace remembers [`CONTACTS_PER_WORKSPACE_MAX`] contacts.
    #[error(
        "workspace {0} remembers {CONTACTS_PER_WORKSPACE_MAX} contacts, the most it may (limit \
         contacts_per_workspace_max)"
    )]
    ContactsFull(WorkspaceId),
    /// No rule matched a new conversation and there is no default team.
    #[error("no routing rule matched and the workspace has no default_team")]
    NoDefaultTeam,
    /// A rule that targets an agent matched, and neither the workspace's default team nor the
    /// agent's teams can account the conversation.
    #[error("rule {0} has no team to account to")]
    RuleWithoutTeam(RuleId),
    /// A rule would target an agent who is in no team, with no default team.
    #[error(
        "rule {rule} targets agent {agent}, who is in no team, and the workspace has no default team to account \
         the conversation to"
    )]
    RuleAgentWithoutTeam {
        /// The rule.
        rule: RuleId,
        /// The agent it targets.
        agent: AgentId,
    },
    /// A conversation of a removed team cannot be routed again.
    #[error(
        "conversation {conversation} belonged to team {team}, which was removed, and cannot be routed again: {why}"
    )]
    TeamRemoved {
        /// The conversation.
        conversation: ConversationId,
        /// The team it belonged to.
        team: TeamId,
        /// Why routing it afresh failed.
        why: Box<ApplyError>,
    },
    /// An agent tried to pick a conversation of a team they are not in.
    #[error(
        "agent {agent} is not a member of team {team}, whose conversation {conversation} is; only its members can \
         pick it (a supervisor can Assign it)"
    )]
    NotTeamMember {
        /// The agent.
        agent: AgentId,
        /// The conversation's team.
        team: TeamId,
        /// The conversation.
        conversation: ConversationId,
    },
    /// A transfer to the agent who already holds the conversation.
    #[error("conversation {conversation} is already assigned to {agent}")]
    AlreadyAssigned {
        /// The conversation.
        conversation: ConversationId,
        /// Its assignee.
        agent: AgentId,
    },
    /// An agent a routing rule targets cannot be removed.
    #[error("agent {agent} is the target of routing rule {rule}; change the rules first")]
    AgentIsRuleTarget {
        /// The agent.
        agent: AgentId,
        /// The rule.
        rule: RuleId,
    },
    /// The workspace's default team cannot be removed.
    #[error("team {0} is the workspace's default team")]
    DefaultTeam(TeamId),
    /// A team a routing rule targets cannot be removed.
    #[error("team {team} is the target of routing rule {rule}")]
    TeamIsRuleTarget {
        /// The team.
        team: TeamId,
        /// The rule.
        rule: RuleId,
    },
    /// A team with open conversations cannot be removed.
    #[error("team {team} still has open conversation {conversation}; transfer or close it first")]
    TeamHasOpenConversation {
        /// The team.
        team: TeamId,
        /// Its open conversation with the smallest id.
        conversation: ConversationId,
    },
}

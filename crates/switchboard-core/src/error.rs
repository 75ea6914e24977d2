//! Why an input was refused.
//!
//! Every refusal of the caller's input leaves the state exactly as it was, and its event id is
//! not remembered: a refused event had no effect, so a redelivered copy is judged again (and
//! refused again, or applied once if the state now allows it). The one exception is
//! [`ErrorKind::Internal`], a bug found mid-way; see there. The variants are grouped by [`ErrorKind`] so that the gRPC edge
//! can pick a status code without matching every variant.

use crate::ids::{AgentId, ContactId, ConversationId, EventId, TeamId, WorkspaceId};
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
    /// The state forbids the operation for a reason given in full.
    #[error("{0}")]
    Precondition(String),
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
            ApplyError::Precondition("p".into()),
            ApplyError::missing("team", "t"),
            ApplyError::Internal("i".into()),
        ];
        let given: std::collections::BTreeSet<&str> = one_of_each.iter().map(ApplyError::reason_label).collect();
        let listed: std::collections::BTreeSet<&str> = ApplyError::REASONS.into_iter().collect();
        assert_eq!(given, listed);
    }
}

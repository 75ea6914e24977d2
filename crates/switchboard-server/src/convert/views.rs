//! Read-only views of the state into protobuf responses.

use super::model::{channel_to_pb, contact_to_pb, status_to_pb};
use switchboard_core::{AgentView, ContactView, ConversationState, ConversationView, QueuedView};
use switchboard_proto::switchboard::v1 as pb;

pub(crate) fn conversation_to_pb(view: ConversationView, applied_index: u64) -> pb::ConversationInfo {
    pb::ConversationInfo {
        id: view.id.to_string(),
        contact: view.contact.to_string(),
        channel: channel_to_pb(view.channel).into(),
        language: view.language.map(|l| l.to_string()).unwrap_or_default(),
        topic: view.topic.unwrap_or_default(),
        priority: u32::from(view.priority),
        state: match view.state {
            ConversationState::Queued => pb::ConversationState::Queued,
            ConversationState::Assigned => pb::ConversationState::Assigned,
            ConversationState::Closed => pb::ConversationState::Closed,
        }
        .into(),
        team: view.team.to_string(),
        assignee: view.assignee.map(|a| a.to_string()).unwrap_or_default(),
        last_agent: view.last_agent.map(|a| a.to_string()).unwrap_or_default(),
        opened_ms: view.opened_ms,
        queue: view.queue.map(|q| pb::QueueInfo {
            position: q.position,
            eta_ms: q.eta_ms,
            waiting_for: q.waiting_for.map(|a| a.to_string()).unwrap_or_default(),
        }),
        applied_index,
    }
}

pub(crate) fn agent_to_pb(view: AgentView, applied_index: u64) -> pb::AgentState {
    pb::AgentState {
        id: view.id.to_string(),
        display_name: view.display_name,
        status: status_to_pb(view.status).into(),
        open_count: view.open,
        max_open: view.max_open,
        received_today: view.received_today,
        daily_limit: view.daily_limit,
        teams: view.teams.iter().map(ToString::to_string).collect(),
        open_conversations: view.open_conversations.iter().map(ToString::to_string).collect(),
        applied_index,
    }
}

pub(crate) fn queue_entry_to_pb(view: QueuedView) -> pb::QueueEntry {
    pb::QueueEntry {
        position: view.position,
        conversation: view.conversation.to_string(),
        priority: u32::from(view.priority),
        channel: channel_to_pb(view.channel).into(),
        waiting_for: view.waiting_for.map(|a| a.to_string()).unwrap_or_default(),
        opened_ms: view.opened_ms,
    }
}

pub(crate) fn contact_to_info(view: ContactView, applied_index: u64) -> pb::ContactInfo {
    pb::ContactInfo {
        contact: Some(contact_to_pb(&view.spec)),
        last_agent: view.last_agent.map(|a| a.to_string()).unwrap_or_default(),
        conversations: view.conversations,
        applied_index,
    }
}

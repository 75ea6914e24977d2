//! Core effects into protobuf effects.

use super::model::{channel_to_pb, status_to_pb, strategy_to_pb};
use switchboard_core::{AssignReason, Effect, EventId, UnassignReason};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::effect::Kind;

/// Where an effect came from in the log.
#[derive(Clone, Copy, Debug)]
pub struct EffectOrigin {
    /// Log index of the entry.
    pub log_index: u64,
    /// The entry's timestamp.
    pub at_ms: i64,
}

/// The `event_id` an effect shows for the event behind it: a gateway's event id as it was
/// published, the `request_id` of an API call; nothing for the ids a node makes up for calls
/// without one.
pub fn public_event_id(cause: Option<&EventId>) -> String {
    let Some(id) = cause else { return String::new() };
    let id = id.as_str();
    match id.strip_prefix(crate::api::REQUEST_ID_PREFIX) {
        Some(request_id) => request_id.to_owned(),
        // Client ids cannot hold control characters: this one was made up by a node.
        None if id.starts_with('\u{1}') => String::new(),
        None => id.to_owned(),
    }
}

/// Converts `effect`, the `sequence`-th effect of the entry at `origin`, caused by the event
/// `cause` (`None` for a timer's).
pub fn effect_to_pb(effect: &Effect, origin: EffectOrigin, sequence: u32, cause: Option<&EventId>) -> pb::Effect {
    let kind = match effect {
        Effect::Assigned {
            conversation,
            contact,
            channel,
            team,
            agent,
            agent_name,
            expected_response_ms,
            reason,
            ..
        } => {
            let (reason, strategy) = assign_reason_to_pb(*reason);
            Kind::Assigned(pb::Assigned {
                conversation: conversation.to_string(),
                contact: contact.to_string(),
                channel: channel_to_pb(*channel).into(),
                team: team.to_string(),
                agent: agent.to_string(),
                agent_name: agent_name.to_string(),
                expected_response_ms: *expected_response_ms,
                reason: reason.into(),
                strategy: strategy.into(),
            })
        }
        Effect::Unassigned { conversation, team, agent, reason, .. } => Kind::Unassigned(pb::Unassigned {
            conversation: conversation.to_string(),
            team: team.to_string(),
            agent: agent.to_string(),
            reason: match reason {
                UnassignReason::AgentOffline => pb::UnassignReason::AgentOffline,
                UnassignReason::NoReply => pb::UnassignReason::NoReply,
                UnassignReason::Transfer => pb::UnassignReason::Transfer,
                UnassignReason::AgentRemoved => pb::UnassignReason::AgentRemoved,
            }
            .into(),
        }),
        Effect::Queued { conversation, team, position, eta_ms, waiting_for, message, .. } => Kind::Queued(pb::Queued {
            conversation: conversation.to_string(),
            team: team.to_string(),
            position: *position,
            eta_ms: *eta_ms,
            waiting_for: waiting_for.as_ref().map(ToString::to_string).unwrap_or_default(),
            message: message.clone().unwrap_or_default(),
        }),
        Effect::QueuePosition { conversation, team, position, eta_ms, waiting_for, .. } => {
            Kind::QueuePosition(pb::QueuePosition {
                conversation: conversation.to_string(),
                team: team.to_string(),
                position: *position,
                eta_ms: *eta_ms,
                waiting_for: waiting_for.as_ref().map(ToString::to_string).unwrap_or_default(),
            })
        }
        Effect::OutsideHours { conversation, team, opens_at_ms, message, .. } => Kind::OutsideHours(pb::OutsideHours {
            conversation: conversation.to_string(),
            team: team.to_string(),
            opens_at_ms: *opens_at_ms,
            message: message.clone().unwrap_or_default(),
        }),
        Effect::Welcome { conversation, team, message, .. } => Kind::Welcome(pb::Welcome {
            conversation: conversation.to_string(),
            team: team.to_string(),
            message: message.clone(),
        }),
        Effect::Reopened { conversation, team, .. } => {
            Kind::Reopened(pb::Reopened { conversation: conversation.to_string(), team: team.to_string() })
        }
        Effect::Closed { conversation, team, agent, .. } => Kind::Closed(pb::Closed {
            conversation: conversation.to_string(),
            team: team.to_string(),
            agent: agent.as_ref().map(ToString::to_string).unwrap_or_default(),
        }),
        Effect::AgentStatusChanged { agent, status, .. } => {
            Kind::AgentStatus(pb::AgentStatusChanged { agent: agent.to_string(), status: status_to_pb(*status).into() })
        }
    };
    pb::Effect {
        workspace: effect.workspace().to_string(),
        log_index: origin.log_index,
        sequence,
        at_ms: origin.at_ms,
        event_id: public_event_id(cause),
        kind: Some(kind),
    }
}

fn assign_reason_to_pb(reason: AssignReason) -> (pb::AssignReason, pb::Strategy) {
    match reason {
        AssignReason::Strategy(strategy) => (pb::AssignReason::Strategy, strategy_to_pb(strategy)),
        AssignReason::Dedicated => (pb::AssignReason::Dedicated, pb::Strategy::Unspecified),
        AssignReason::Returning => (pb::AssignReason::Returning, pb::Strategy::Unspecified),
        AssignReason::RuleAgent => (pb::AssignReason::RuleAgent, pb::Strategy::Unspecified),
        AssignReason::Reopened => (pb::AssignReason::Reopened, pb::Strategy::Unspecified),
        AssignReason::Claimed => (pb::AssignReason::Claimed, pb::Strategy::Unspecified),
        AssignReason::Manual => (pb::AssignReason::Manual, pb::Strategy::Unspecified),
        AssignReason::Transfer => (pb::AssignReason::Transfer, pb::Strategy::Unspecified),
    }
}

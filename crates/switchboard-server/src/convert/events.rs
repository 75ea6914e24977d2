//! Gateway events into core commands.

use super::ConvertError;
use super::model::{channel_from_pb, contact_from_pb};
use super::{invalid, optional_id, optional_text, required, required_id};
use switchboard_core::limits::KEYWORD_SCAN_BYTES_MAX;
use switchboard_core::{Command, Event, EventId, OpenConversation, WorkspaceId};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::gateway_event::Kind;

/// The part of a first message the router reads: keyword rules search only the first
/// `KEYWORD_SCAN_BYTES_MAX` bytes, and the text is never stored, so the rest is not carried
/// into the log (a long e-mail is not an error).
fn scanned_part(mut message: String) -> String {
    let mut end = message.len().min(KEYWORD_SCAN_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message
}

/// Turns a gateway event into a core event. `field` prefixes error messages (for example
/// `events[3]`). The workspace must be set.
pub fn event_from_pb(event: pb::GatewayEvent, field: &str) -> Result<Event, ConvertError> {
    let event_id: EventId = required_id(event.event_id, &format!("{field}.event_id"))?;
    let workspace: WorkspaceId = required_id(event.workspace, &format!("{field}.workspace"))?;
    let kind = required(event.kind, &format!("{field}.kind (conversation_opened, message_received, ...)"))?;
    let command = match kind {
        Kind::ConversationOpened(open) => {
            let prefix = format!("{field}.conversation_opened");
            Command::OpenConversation(OpenConversation {
                conversation: required_id(open.conversation, &format!("{prefix}.conversation"))?,
                contact: required_id(open.contact, &format!("{prefix}.contact"))?,
                channel: channel_from_pb(open.channel, &format!("{prefix}.channel"))?,
                language: optional_id(open.language, &format!("{prefix}.language"))?,
                topic: optional_text(open.topic),
                tags: open.tags,
                first_message: scanned_part(open.first_message),
                priority: u8::try_from(open.priority).map_err(|_| {
                    invalid(&format!("{prefix}.priority"), format!("{} is not between 0 and 255", open.priority))
                })?,
            })
        }
        Kind::MessageReceived(message) => Command::CustomerMessage {
            conversation: required_id(message.conversation, &format!("{field}.message_received.conversation"))?,
        },
        Kind::AgentReplied(reply) => Command::AgentReplied {
            conversation: required_id(reply.conversation, &format!("{field}.agent_replied.conversation"))?,
            agent: required_id(reply.agent, &format!("{field}.agent_replied.agent"))?,
        },
        Kind::ConversationClosed(closed) => Command::CloseConversation {
            conversation: required_id(closed.conversation, &format!("{field}.conversation_closed.conversation"))?,
        },
        Kind::ContactUpdated(update) => Command::UpsertContact(contact_from_pb(
            required(update.contact, &format!("{field}.contact_updated.contact"))?,
            &format!("{field}.contact_updated.contact"),
        )?),
    };
    let event = Event { workspace, event_id: Some(event_id), command };
    // The core's own bounds (string lengths, list counts, ranges), checked before anything is
    // proposed; the state machine checks them again.
    event.validate().map_err(|error| super::core_invalid(field, error))?;
    Ok(event)
}

//! Identifier newtypes.
//!
//! Every entity is named by a short string chosen by the caller (a gateway, an admin tool).
//! Identifiers are stored as [`CompactString`]s, which keep up to 24 bytes inline, so that
//! the common case (UUIDs without dashes, `agent-42`, phone-number based contact ids) costs
//! no heap allocation when copied into indexes and effects.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier accepted, in bytes (see [`crate::limits`]).
pub const ID_MAX_BYTES: usize = crate::limits::ID_BYTES_MAX;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub CompactString);

        impl $name {
            /// Wraps a string as an identifier without validating it.
            pub fn new(value: impl AsRef<str>) -> Self {
                Self(CompactString::new(value.as_ref()))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(CompactString::from(value))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }
    };
}

id_type!(
    /// A workspace: one contact center (tenant). Every key carries it.
    WorkspaceId
);
id_type!(
    /// An agent (a person who answers conversations).
    AgentId
);
id_type!(
    /// A team of agents with one assignment strategy and one queue.
    TeamId
);
id_type!(
    /// A conversation with a customer on one channel.
    ConversationId
);
id_type!(
    /// A customer (contact) across conversations.
    ContactId
);
id_type!(
    /// The caller-chosen id of an event, used to apply it at most once.
    EventId
);
id_type!(
    /// A routing rule, named so that admin diffs and effects can refer to it.
    RuleId
);
id_type!(
    /// A skill name (for example `refunds`).
    Skill
);
id_type!(
    /// A language tag (for example `es`, `pt-BR`). Compared exactly, case-sensitively.
    Language
);

/// Whether `id` can be a workspace id: one token of a NATS subject (`switchboard.events.<id>`),
/// non-empty, without `.`, `*`, `>` or whitespace. Checked when a workspace is created.
pub fn is_subject_token(id: &str) -> bool {
    !id.is_empty() && !id.contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace())
}

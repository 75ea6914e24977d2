//! # switchboard-core
//!
//! The assigner state machine of Switchboard: given a committed log entry (a command and the
//! time the leader stamped on it) it decides which agent gets each conversation, changes its
//! state and returns typed [`Effect`]s. It has no IO, no clock, no OS randomness and no
//! hash-map iteration in any decision, so every replica that applies the same log reaches
//! the same state, byte for byte ([`State::state_digest`]).
//!
//! Layout:
//! - [`State`] (`state.rs`): the entry point [`State::apply`], snapshots, digest, queries.
//! - `workspace.rs`: one tenant's agents, teams, rules, contacts, conversations, and every
//!   routing and lifecycle rule.
//! - `pool.rs`: per-team, per-requirement eligibility indexes for the five strategies.
//! - `line.rs`, `fenwick.rs`: the order-statistic treap (queue positions) and Fenwick tree
//!   (weighted draws) that keep decisions O(log n).
//! - `hours.rs`: business hours and local midnights in IANA timezones (compiled-in tzdb).
//! - `timers.rs`, `dedupe.rs`, `rng.rs`: timers, event-id dedupe, the SplitMix64 PRNG.
//! - [`command`], [`effect`], [`model`], [`ids`], [`error`]: the public vocabulary.

pub mod command;
mod dedupe;
pub mod effect;
mod entities;
pub mod error;
mod fenwick;
pub mod hours;
pub mod ids;
mod line;
mod map;
pub mod model;
mod pool;
pub mod rng;
mod state;
mod timers;
pub mod view;
mod workspace;

pub use command::{Command, Event, Input, OpenConversation, TransferTarget};
pub use effect::{AssignReason, Effect, UnassignReason};
pub use entities::ConversationState;
pub use error::{ApplyError, ErrorKind};
pub use hours::{BusinessHours, OpeningInterval};
pub use ids::{AgentId, ContactId, ConversationId, EventId, Language, RuleId, Skill, TeamId, WorkspaceId};
pub use model::{
    AgentSpec, AgentStatus, Channel, ContactSpec, CustomerKind, RoutingRule, RuleConditions, RuleTarget, StatusSet,
    Strategy, TeamOptions, TeamSpec, Templates, WorkspaceSettings,
};
pub use state::{Outcome, SNAPSHOT_VERSION, SnapshotError, State};
pub use view::{AgentView, ConversationView, QueuePosition, QueuedView};

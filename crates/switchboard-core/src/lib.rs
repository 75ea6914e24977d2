//! # switchboard-core
//!
//! The assigner state machine of Switchboard: given a committed log entry (a command and the
//! time the leader stamped on it) it decides which agent gets each conversation, changes its
//! state and returns typed [`Effect`]s. It has no IO, no clock, no OS randomness and no
//! hash-map iteration in any decision, so every replica that applies the same log reaches
//! the same state, byte for byte ([`State::state_digest`]).
//!
//! ```
//! use switchboard_core::*;
//!
//! let mut state = State::new();
//! let now = 1_795_428_000_000; // the entry's timestamp (UTC ms), written by the Raft leader
//! let workspace = WorkspaceId::new("acme");
//! let run = |state: &mut State, command: Command| {
//!     let event = Event { workspace: workspace.clone(), event_id: None, command };
//!     state.apply(now, &Input::Event(event))
//! };
//! run(&mut state, Command::ConfigureWorkspace(WorkspaceSettings::default()));
//! run(&mut state, Command::UpsertAgent(AgentSpec::new("mary", "Mary")));
//! run(&mut state, Command::UpsertTeam(TeamSpec::new("support", Strategy::RoundRobin, &["mary"])));
//! let settings = WorkspaceSettings { default_team: Some(TeamId::new("support")), ..WorkspaceSettings::default() };
//! run(&mut state, Command::ConfigureWorkspace(settings));
//! run(&mut state, Command::SetAgentStatus { agent: AgentId::new("mary"), status: AgentStatus::Online });
//!
//! let open = OpenConversation::new("conv-1", "+5511999990000", Channel::WhatsApp);
//! let outcome = run(&mut state, Command::OpenConversation(open));
//! assert_eq!(outcome.result, Ok(()));
//! match &outcome.effects[..] {
//!     [Effect::Assigned { agent, agent_name, expected_response_ms, .. }] => {
//!         assert_eq!((agent.as_str(), agent_name.as_str(), *expected_response_ms), ("mary", "Mary", 120_000));
//!     }
//!     other => panic!("expected one assignment, got {other:?}"),
//! }
//! ```
//!
//! Layout:
//! - [`State`] (`state.rs`): the entry point [`State::apply`], snapshots, digest, queries.
//! - `workspace/`: one tenant's agents, teams, rules, contacts, conversations, and every
//!   routing and lifecycle rule (`admin`, `routing`, `queues`, `lifecycle`, `timers`, `views`).
//! - `pool.rs`: per-team, per-requirement eligibility indexes for the five strategies.
//! - `line.rs`, `fenwick.rs`: the counted B+ tree (queue positions) and Fenwick tree
//!   (weighted draws) that keep decisions O(log n).
//! - `map.rs`, `probe.rs`: the insertion-ordered entity map and its hash index.
//! - `hours.rs`: business hours and local midnights in IANA timezones (compiled-in tzdb).
//! - `timers.rs`, `dedupe.rs`, `rng.rs`: timers, event-id dedupe, the SplitMix64 PRNG.
//! - [`explain`]: why a new conversation goes where it goes ([`State::explain_open`]).
//! - [`command`], [`effect`], [`model`], [`ids`], [`error`]: the public vocabulary.

// The core must not be able to panic: one deterministic panic would stop every replica at the
// same log entry, and again at every restart. Missing lookups return `ApplyError`, counters
// use saturating or wrapping arithmetic (each with its reason), and nothing indexes a slice.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::arithmetic_side_effects
    )
)]

pub mod command;
mod dedupe;
mod digest;
pub mod effect;
mod entities;
pub mod error;
pub mod explain;
mod fenwick;
pub mod hours;
pub mod ids;
pub mod limits;
mod line;
mod map;
pub mod model;
mod pool;
mod probe;
pub mod rng;
mod state;
mod timers;
mod validate;
pub mod view;
mod workspace;

pub use command::{Command, Event, Input, OpenConversation, TransferTarget};
pub use effect::{AssignReason, Effect, UnassignReason};
pub use entities::ConversationState;
pub use error::{ApplyError, Conflict, ErrorKind};
pub use explain::{Candidate, Explanation, Routed, Verdict};
pub use hours::{BusinessHours, OpeningInterval};
pub use ids::{
    AgentId, ContactId, ConversationId, EventId, Language, RuleId, Skill, TeamId, WorkspaceId, is_subject_token,
};
pub use model::{
    AgentSpec, AgentStatus, Channel, ContactSpec, CustomerKind, RoutingRule, RuleConditions, RuleTarget, StatusSet,
    Strategy, TeamOptions, TeamSpec, Templates, WorkspaceSettings,
};
pub use state::{Outcome, SNAPSHOT_VERSION, SnapshotError, State};
pub use view::{AgentView, ContactView, ConversationView, QueuePosition, QueuedView};

//! The Switchboard assigner replicated with openraft.
//!
//! - [`LogStore`]: the Raft log and vote in redb, one durable write transaction per append.
//! - [`StateMachineStore`]: applies committed entries to [`switchboard_core::State`], builds and
//!   installs snapshots atomically.
//! - [`network`]: the peer transport over tonic (`proto/raft/v1/raft.proto`).
//! - [`RaftNode`]: a running replica with a library API for writes (batched on the leader,
//!   forwarded from followers), linearizable and local reads, status and membership.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use switchboard_core::{Command, Event, EventId, Input, WorkspaceSettings};
//! use switchboard_raft::{RaftNode, RaftNodeConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = RaftNode::start(RaftNodeConfig::new(1, "/var/lib/switchboard/1", "0.0.0.0:7001".parse()?)).await?;
//! node.initialize(BTreeMap::new()).await?; // a cluster of one; add learners and promote them later
//! let configure = Input::Event(Event {
//!     workspace: "acme".into(),
//!     event_id: Some(EventId::new("setup-1")),
//!     command: Command::ConfigureWorkspace(WorkspaceSettings::default()),
//! });
//! let committed = node.propose(vec![configure]).await?;
//! assert!(committed.outcomes[0].rejection.is_none());
//! let read = node.read(|state| state.workspace_ids().count()).await?;
//! println!("{} workspace(s) at index {}", read.value, read.applied_index);
//! # Ok(())
//! # }
//! ```
//!
//! Time in the state machine comes only from the leader: each entry carries the leader's clock
//! ([`Proposal::at_ms`]) and the leader proposes a `Tick` when idle, so `apply` never reads a
//! clock and every replica makes the same decisions.

// openraft's `StorageError` (224 bytes) is the error type its storage traits require; boxing it
// at every internal helper would only add allocations on the error path.
#![allow(clippy::result_large_err)]

pub mod audit;
mod batcher;
mod error;
pub mod history;
mod log_store;
pub mod metrics;
pub mod network;
mod node;
mod outbox;
mod service;
mod state_machine;
mod types;
mod wire;

pub use error::{LeaderHint, MembershipError, ProposeError, ReadError};
pub use history::{Decision, HISTORY_DECISIONS_MAX, History, HistoryError};
pub use log_store::{LogStore, OpenLogError};
pub use network::{Fate, FaultPlan, MAX_PEER_MESSAGE_BYTES, PeerRpc};
pub use node::{
    ClusterStatus, Committed, ENTRY_BYTES_MAX, MAX_INPUTS_PER_PROPOSAL, MEMBERS_COUNT_MAX, NODE_ADDR_BYTES_MAX,
    OutboxStats, RaftNode, RaftNodeConfig, Read, StartError, Tuning, WRITE_BYTES_MAX,
};
pub use outbox::{OUTBOX_EFFECTS_MAX, Outbox, OutboxBacklog};
pub use state_machine::{
    Replica, RestoreError, Restored, SnapshotBuilder, SnapshotExport, SnapshotFileError, StateChange,
    StateMachineStore, restore_snapshot,
};
pub use types::{
    Applied, AppliedEntry, EffectCursor, Entry, InputOutcome, LogId, NodeId, NodeInfo, NumberedEffect, Proposal, Raft,
    Rejection, SnapshotMeta, StorageError, StoredMembership, TypeConfig, numbered_effects,
};

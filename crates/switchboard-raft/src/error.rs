//! What can go wrong when writing to or reading from the replicated state.

use crate::types::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};

/// The current leader as far as this node knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's node id.
    pub id: NodeId,
    /// Where to reach it.
    pub node: NodeInfo,
}

impl std::fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} (raft {}", self.id, self.node.raft_addr)?;
        if !self.node.api_addr.is_empty() {
            write!(f, ", api {}", self.node.api_addr)?;
        }
        f.write_str(")")
    }
}

fn hint(leader: &Option<LeaderHint>) -> String {
    match leader {
        Some(leader) => format!("; the leader is {leader}"),
        None => "; no leader is known yet".to_owned(),
    }
}

/// A write that did not (or may not) take effect. Crosses the peer link as
/// `wire::ProposeReply`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader, and the write was not appended.
    #[error("this node is not the Raft leader{}", hint(.leader))]
    NotLeader {
        /// Where to send it instead.
        leader: Option<LeaderHint>,
    },
    /// The write reached a leader that lost its leadership before answering: it may or may not
    /// have been committed. Retrying inputs that carry event ids is safe (duplicates are
    /// recognised); inputs without one may apply twice.
    #[error("outcome unknown: {reason}")]
    Uncertain {
        /// What happened.
        reason: String,
    },
    /// No leader could take the write in time (election under way, or no quorum).
    #[error("the cluster cannot take writes right now: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// The request itself is unacceptable (for example, no inputs or too many).
    #[error("invalid proposal: {0}")]
    Invalid(String),
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A read that could not be made linearizable. Crosses the peer link as
/// `wire::ReadIndexReply`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Asked of a node that is not the leader (peer-level; [`crate::RaftNode`] forwards).
    #[error("this node is not the Raft leader{}", hint(.leader))]
    NotLeader {
        /// Where the leader is.
        leader: Option<LeaderHint>,
    },
    /// The leader could not confirm its leadership with a quorum, or did not answer in time.
    #[error("cannot confirm a linearizable read right now: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A membership change that was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MembershipError {
    /// Membership changes are made on the leader.
    #[error("membership changes must be made on the leader{}", hint(.leader))]
    NotLeader {
        /// Where the leader is.
        leader: Option<LeaderHint>,
    },
    /// The cluster was already initialised.
    #[error("the cluster is already initialised")]
    AlreadyInitialized,
    /// The change is not acceptable as asked.
    #[error("invalid membership change: {0}")]
    Invalid(String),
    /// The change could not be committed.
    #[error("membership change failed: {0}")]
    Failed(String),
}

//! The audit trail: who changed a workspace's configuration or the cluster's membership, when,
//! and whether it took effect. Part of each replica's replicated state (carried in snapshots),
//! so every node answers the same; bounded to [`AUDIT_RECORDS_MAX`] records, oldest dropped.
//!
//! A writer attaches an [`Actor`] to its inputs (`RaftNode::propose_as`); applying an input that
//! carries one records it with its outcome. Membership changes are recorded with
//! `RaftNode::record_audit` once they took effect. Records name the credential (its id and
//! role), never its secret.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use switchboard_core::Command;

/// Most audit records a replica keeps; older ones are dropped first.
pub const AUDIT_RECORDS_MAX: usize = 100_000;

/// Who made a change: the role and id of the credential it came with (`anonymous` and empty on
/// a cluster without authentication).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `admin`, `operator`, ... or `anonymous`.
    pub role: String,
    /// The token id; empty when anonymous.
    pub credential: String,
}

/// One change and who made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The log index of the entry that carried it.
    pub index: u64,
    /// The leader's time on that entry (UTC milliseconds).
    pub at_ms: i64,
    /// The workspace changed; empty for a cluster change (membership).
    pub workspace: String,
    /// Who.
    pub actor: Actor,
    /// What, e.g. `UpsertAgent mary`, `ChangeMembership voters 1,2,3`.
    pub action: String,
    /// `ok`, or the reason the state machine refused it (`unknown_team`, ...).
    pub outcome: String,
}

/// A cluster change to record: who made it and what it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditNote {
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: String,
}

/// The records of one replica, in log order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTrail {
    records: VecDeque<AuditRecord>,
}

impl AuditTrail {
    /// Appends `record`, dropping the oldest beyond [`AUDIT_RECORDS_MAX`].
    pub(crate) fn push(&mut self, record: AuditRecord) {
        if self.records.len() >= AUDIT_RECORDS_MAX {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// At most `limit` records of `workspace` (empty: the cluster's) after log index
    /// `after_index`, oldest first.
    pub fn query(&self, workspace: &str, after_index: u64, limit: usize) -> Vec<AuditRecord> {
        let start = self.records.partition_point(|record| record.index <= after_index);
        self.records.range(start..).filter(|record| record.workspace == workspace).take(limit).cloned().collect()
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What a command does, for the trail: its name and the id it concerns (never free text).
pub fn action(command: &Command) -> String {
    match command {
        Command::ConfigureWorkspace(_) => "ConfigureWorkspace".to_owned(),
        Command::UpsertAgent(spec) => format!("UpsertAgent {}", spec.id),
        Command::RemoveAgent { agent } => format!("RemoveAgent {agent}"),
        Command::UpsertTeam(spec) => format!("UpsertTeam {}", spec.id),
        Command::RemoveTeam { team } => format!("RemoveTeam {team}"),
        Command::SetRoutingRules(rules) => format!("SetRoutingRules ({} rules)", rules.len()),
        Command::UpsertContact(spec) => format!("UpsertContact {}", spec.id),
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: u64, workspace: &str) -> AuditRecord {
        AuditRecord {
            index,
            at_ms: 0,
            workspace: workspace.to_owned(),
            actor: Actor { role: "admin".into(), credential: "adm".into() },
            action: "ConfigureWorkspace".into(),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn queries_filter_by_workspace_and_index_and_the_trail_is_bounded() {
        let mut trail = AuditTrail::default();
        for index in 1..=10 {
            trail.push(record(index, if index % 2 == 0 { "acme" } else { "" }));
        }
        let acme: Vec<u64> = trail.query("acme", 4, 100).iter().map(|r| r.index).collect();
        assert_eq!(acme, [6, 8, 10]);
        let cluster: Vec<u64> = trail.query("", 0, 2).iter().map(|r| r.index).collect();
        assert_eq!(cluster, [1, 3]);
        for index in 11..=(AUDIT_RECORDS_MAX as u64 + 10) {
            trail.push(record(index, "acme"));
        }
        assert_eq!(trail.len(), AUDIT_RECORDS_MAX);
        assert!(trail.query("", 0, 10).is_empty(), "the oldest records went first");
    }
}

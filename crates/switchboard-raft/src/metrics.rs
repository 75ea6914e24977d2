//! Timings and counts that only the replication layer sees, recorded through the `metrics`
//! facade (the binary installs the Prometheus exporter; without one they cost an atomic load).
//! The server crate lists these names with its own in `switchboard_server::metrics::ALL`.

/// One Raft log append batch, from the start of its write transaction to its durable commit
/// (the fsync), in seconds.
pub const RAFT_APPEND_SECONDS: &str = "switchboard_raft_append_seconds";
/// Applying one committed entry to the state machine, in seconds.
pub const APPLY_SECONDS: &str = "switchboard_apply_seconds";
/// Building one snapshot (copying the state, encoding it, writing it durably), in seconds.
pub const SNAPSHOT_SECONDS: &str = "switchboard_snapshot_seconds";
/// How long applies waited for one whole-state read (a snapshot, a digest, an export), in
/// seconds: the fork of a large state, or the whole encoding of a small one.
pub const STATE_READ_PAUSE_SECONDS: &str = "switchboard_state_read_pause_seconds";
/// Client proposals carried by one Raft entry formed by the leader's batcher.
pub const PROPOSAL_BATCH_ENTRIES: &str = "switchboard_proposal_batch_entries";
/// Times this node saw a new leader (a different leader id, or the same one in a later term).
pub const RAFT_LEADER_CHANGES_TOTAL: &str = "switchboard_raft_leader_changes_total";
/// Voters in the membership this node knows.
pub const RAFT_VOTERS: &str = "switchboard_raft_voters";
/// On the leader only: entries each follower (`follower` = node id) lacks, the leader's last
/// log index minus the follower's matched index.
pub const RAFT_REPLICATION_LAG_ENTRIES: &str = "switchboard_raft_replication_lag_entries";

/// Every series of this module.
pub const ALL: [&str; 8] = [
    RAFT_APPEND_SECONDS,
    APPLY_SECONDS,
    SNAPSHOT_SECONDS,
    STATE_READ_PAUSE_SECONDS,
    PROPOSAL_BATCH_ENTRIES,
    RAFT_LEADER_CHANGES_TOTAL,
    RAFT_VOTERS,
    RAFT_REPLICATION_LAG_ENTRIES,
];

/// Registers descriptions (for `# HELP`) and the counter at 0, so that `increase()` sees its
/// first increment.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        RAFT_APPEND_SECONDS,
        Unit::Seconds,
        "One sync of the Raft log writer (every append queued meanwhile) including its fsync."
    );
    describe_histogram!(APPLY_SECONDS, Unit::Seconds, "Applying one committed entry to the state machine.");
    describe_histogram!(SNAPSHOT_SECONDS, Unit::Seconds, "Building one snapshot: copy, encode, durable write.");
    describe_histogram!(
        STATE_READ_PAUSE_SECONDS,
        Unit::Seconds,
        "How long applies waited for one whole-state read (snapshot, digest, export)."
    );
    describe_histogram!(PROPOSAL_BATCH_ENTRIES, "Client proposals carried by one Raft entry.");
    describe_counter!(RAFT_LEADER_CHANGES_TOTAL, "Times this node saw a new leader (new id or new term).");
    describe_gauge!(RAFT_VOTERS, "Voters in the membership this node knows.");
    describe_gauge!(
        RAFT_REPLICATION_LAG_ENTRIES,
        "Leader only: entries a follower lacks (leader's last log index minus its matched index), by follower id."
    );
    metrics::counter!(RAFT_LEADER_CHANGES_TOTAL).increment(0);
}

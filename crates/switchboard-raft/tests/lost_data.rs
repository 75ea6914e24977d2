//! A node whose data directory is lost (a replaced disk, an operator's `rm -rf`) and which
//! starts again under its old id, and a deposed leader whose writes a snapshot covered. Found by
//! the nemesis test (`tests/nemesis`): the leader's Raft core panicked on the follower's
//! reverted log; the re-elected leader could not propose.

mod support;

use std::time::{Duration, Instant};
use support::{Cluster, WS, open, test_tuning, workspace_setup, write_until_acknowledged};
use switchboard_core::WorkspaceId;

async fn conversations(cluster: &Cluster, id: u64) -> usize {
    let node = cluster.node(id);
    node.read(|state| state.conversation_count(&WorkspaceId::new(WS))).await.expect("read").value
}

/// The leader keeps leading and committing, and the emptied node catches up (through a
/// snapshot: the log before it is compacted) to the same state as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emptied_follower_rejoins_through_a_snapshot_without_stopping_the_leader() {
    let mut tuning = test_tuning();
    tuning.snapshot_every_entries = 100;
    tuning.keep_entries_after_snapshot = 0;
    let mut cluster = Cluster::start(3, tuning, None).await;
    let leader = cluster.leader().await;
    let nodes: Vec<_> = cluster.running.values().cloned().collect();
    let mut next = 0;
    for input in workspace_setup() {
        write_until_acknowledged(&nodes, &mut next, input).await;
    }
    for i in 0..300 {
        write_until_acknowledged(&nodes, &mut next, open(i)).await;
    }
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.kill(follower).await;
    std::fs::remove_dir_all(cluster.dir.path().join(format!("node-{follower}"))).expect("wipe");
    cluster.start_node(follower).await;

    let nodes: Vec<_> = cluster.running.values().cloned().collect();
    let writes = async {
        for i in 300..400 {
            write_until_acknowledged(&nodes, &mut next, open(i)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), writes)
        .await
        .unwrap_or_else(|_| panic!("the cluster stopped committing after node {follower} came back empty"));
    let status = cluster.converged().await;
    assert!(cluster.node(leader).is_leader(), "node {leader} stopped leading: {status:?}");
    assert_eq!(conversations(&cluster, follower).await, 400);
}

/// Cuts pairs of nodes: a message between a cut pair is dropped.
#[derive(Debug, Default)]
struct Cuts(std::sync::Mutex<std::collections::BTreeSet<(u64, u64)>>);

impl Cuts {
    fn isolate(&self, node: u64, others: &[u64]) {
        let mut cuts = self.0.lock().expect("cuts");
        for other in others {
            cuts.insert((node.min(*other), node.max(*other)));
        }
    }
    fn heal(&self) {
        self.0.lock().expect("cuts").clear();
    }
}

impl switchboard_raft::FaultPlan for Cuts {
    fn fate(&self, from: u64, to: u64, _rpc: switchboard_raft::PeerRpc) -> switchboard_raft::Fate {
        if self.0.lock().expect("cuts").contains(&(from.min(to), from.max(to))) {
            switchboard_raft::Fate::Drop
        } else {
            switchboard_raft::Fate::Deliver
        }
    }
}

/// Found by the nemesis: a leader cut off with writes in flight loses leadership; the new
/// leader compacts its log, so the old one catches up by a snapshot that covers the indexes of
/// its own uncommitted writes. openraft never answers those writes (it answers writes whose
/// entries are applied or truncated, not ones a snapshot skips), and the node's batcher, which
/// allows four entries in flight, kept waiting for them: once leader again, it never proposed
/// anything more. Writes through it must commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_unanswered_writes_a_snapshot_covered_can_lead_again() {
    let mut tuning = test_tuning();
    tuning.snapshot_every_entries = 100;
    tuning.keep_entries_after_snapshot = 0;
    tuning.request_timeout = Duration::from_secs(3);
    let cuts = std::sync::Arc::new(Cuts::default());
    let mut cluster = Cluster::start(3, tuning, Some(cuts.clone())).await;
    let nodes: Vec<_> = cluster.running.values().cloned().collect();
    let mut next = 0;
    for input in workspace_setup() {
        write_until_acknowledged(&nodes, &mut next, input).await;
    }
    let old = cluster.leader().await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    cuts.isolate(old, &others);
    // Writes that reach the cut-off leader's log and never commit there.
    let stranded = cluster.node(old);
    let mut pending = Vec::new();
    for i in 0..8 {
        let node = stranded.clone();
        pending.push(tokio::spawn(async move { node.propose(vec![open(10_000 + i)]).await }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The others elect a leader and write past two snapshots.
    let majority: Vec<_> = others.iter().map(|id| cluster.node(*id)).collect();
    let writes = async {
        for i in 0..300 {
            write_until_acknowledged(&majority, &mut next, open(i)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), writes).await.expect("the majority commits");
    for write in pending {
        let _ = tokio::time::timeout(Duration::from_secs(30), write).await.expect("the stranded writes are answered");
    }
    cuts.heal();
    cluster.converged().await;

    // Make the old leader lead again: kill whoever leads instead, until it does.
    for _ in 0..20 {
        let leader = cluster.leader().await;
        if leader == old {
            break;
        }
        cluster.kill(leader).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !cluster.running.values().any(|n| n.is_leader()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.start_node(leader).await;
    }
    assert_eq!(cluster.leader().await, old, "node {old} never led again");
    let committed = tokio::time::timeout(Duration::from_secs(20), cluster.node(old).propose(vec![open(20_000)])).await;
    let committed = committed.expect("no answer within 20 s");
    assert!(committed.is_ok(), "node {old} leads but cannot commit: {committed:?}");
}

//! Real clusters of real nodes on 127.0.0.1: replication, leader crash, snapshot catch-up,
//! membership changes and whole-cluster restart.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use switchboard_core::{ConversationId, Effect, WorkspaceId};
use switchboard_raft::{RaftNode, StateChange};
use tokio::time::Instant;

/// Proposes one input through `node`, asserting it was applied.
async fn write(node: &RaftNode, input: switchboard_core::Input) -> switchboard_raft::Committed {
    let committed = node.propose(vec![input]).await.expect("write committed");
    assert_eq!(committed.outcomes[0].rejection, None, "write refused");
    committed
}

async fn setup(node: &RaftNode) {
    let committed = node.propose(workspace_setup()).await.expect("setup committed");
    for outcome in &committed.outcomes {
        assert_eq!(outcome.rejection, None);
    }
}

fn conversation_count(node: &RaftNode) -> usize {
    node.read_local(|state| state.conversation_count(&WorkspaceId::new(WS))).value
}

/// Counts the effects a node applies, per conversation and kind (`assigned`, `closed`,
/// `reopened`, ...).
fn count_effects(node: &RaftNode) -> Arc<Mutex<BTreeMap<(String, &'static str), usize>>> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let mut changes = node.subscribe();
    let sink = Arc::clone(&counts);
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(StateChange::Entry(entry)) => {
                    let mut counts = sink.lock().expect("lock");
                    for effect in entry.outcomes.iter().flat_map(|outcome| &outcome.effects) {
                        let key = match effect {
                            Effect::Assigned { conversation, .. } => (conversation.to_string(), "assigned"),
                            Effect::Closed { conversation, .. } => (conversation.to_string(), "closed"),
                            Effect::Reopened { conversation, .. } => (conversation.to_string(), "reopened"),
                            Effect::Queued { conversation, .. } => (conversation.to_string(), "queued"),
                            _ => continue,
                        };
                        *counts.entry(key).or_insert(0) += 1;
                    }
                }
                Ok(StateChange::SnapshotInstalled { index }) => panic!("observer fell behind: snapshot at {index}"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                Err(error) => panic!("observer lost changes: {error}"),
            }
        }
    });
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_reach_every_node_and_digests_agree() {
    init_tracing();
    let mut cluster = Cluster::start(3, test_tuning(), None).await;
    let leader = cluster.leader().await;
    setup(&cluster.node(leader)).await;

    // Writes through every node: followers forward to the leader.
    let ids: Vec<_> = cluster.running.keys().copied().collect();
    for i in 0..90 {
        let node = cluster.node(ids[i as usize % ids.len()]);
        let committed = write(&node, open(i)).await;
        let assigned = assigned_conversations(&committed.outcomes[0].effects);
        assert_eq!(assigned, vec![format!("c-{i}")]);
    }

    let status = cluster.converged().await;
    assert_eq!(status.voters.len(), 3);
    for node in cluster.running.values() {
        assert_eq!(conversation_count(node), 90, "node {}", node.id());
        // A linearizable read on any node sees every acknowledged write.
        let read = node.read(|state| state.conversation_count(&WorkspaceId::new(WS))).await.expect("read");
        assert_eq!(read.value, 90);
        assert!(read.applied_index >= status.applied_index.min(read.applied_index));
    }
    for id in ids {
        cluster.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_loses_no_acknowledged_write_and_doubles_none() {
    init_tracing();
    let mut cluster = Cluster::start(3, test_tuning(), None).await;
    let first_leader = cluster.leader().await;
    setup(&cluster.node(first_leader)).await;
    let observer_id = *cluster.running.keys().find(|id| **id != first_leader).expect("a follower");
    let observed = count_effects(&cluster.node(observer_id));

    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 150;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let nodes: Vec<Arc<RaftNode>> = cluster.running.values().cloned().collect();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let nodes = nodes.clone();
        let acked = Arc::clone(&acked);
        writers.push(tokio::spawn(async move {
            let mut next_node = w as usize;
            // Open, then close: a close applied twice would be refused as `closed`, and an
            // open applied again after the close would reopen the conversation. Only the
            // event-id dedupe keeps retries across the leader's death from doing either.
            for k in 0..PER_WRITER {
                let i = w * PER_WRITER + k;
                write_until_acknowledged(&nodes, &mut next_node, open(i)).await;
                write_until_acknowledged(&nodes, &mut next_node, close(i)).await;
                acked.lock().expect("lock").insert(i);
            }
        }));
    }

    // Kill the leader once a third of the writes are acknowledged.
    while acked.lock().expect("lock").len() < (WRITERS * PER_WRITER / 3) as usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill(first_leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, first_leader);
    for writer in writers {
        writer.await.expect("writer");
    }

    cluster.start_node(first_leader).await;
    let status = cluster.converged().await;
    assert_eq!(status.voters.len(), 3);

    let acked: BTreeSet<u64> = acked.lock().expect("lock").clone();
    let observed = observed.lock().expect("lock").clone();
    // Exactly one assignment and one close per conversation, nothing else, as the follower
    // that watched every entry saw it.
    let mut expected = BTreeMap::new();
    for i in 0..WRITERS * PER_WRITER {
        expected.insert((format!("c-{i}"), "assigned"), 1);
        expected.insert((format!("c-{i}"), "closed"), 1);
    }
    assert_eq!(observed, expected, "every open and close took effect exactly once");
    for node in cluster.running.values() {
        assert_eq!(conversation_count(node), acked.len(), "node {}", node.id());
        for i in [0, 599, 1199] {
            let found = node.read_local(|s| {
                s.conversation(&WorkspaceId::new(WS), &ConversationId::new(format!("c-{i}"))).is_some()
            });
            assert!(found.value, "c-{i} on node {}", node.id());
        }
    }
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_added_after_compaction_catches_up_from_a_snapshot_and_can_vote() {
    init_tracing();
    let mut tuning = test_tuning();
    tuning.snapshot_every_entries = 50;
    tuning.keep_entries_after_snapshot = 5;
    let mut cluster = Cluster::start(3, tuning, None).await;
    let leader_id = cluster.leader().await;
    let leader = cluster.node(leader_id);
    setup(&leader).await;
    for i in 0..300 {
        write(&leader, open(i)).await;
    }
    // Wait for the leader to have compacted its log behind a snapshot.
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader.raft().metrics().borrow().purged.is_none() {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.start_node(4).await;
    let learner = cluster.node(4);
    let mut changes = learner.subscribe();
    // The library refuses an address no peer could be told about, naming the limit.
    let mut oversized = learner.info().clone();
    oversized.api_addr = "a".repeat(switchboard_raft::NODE_ADDR_BYTES_MAX + 1);
    let refused = leader.add_learner(4, oversized, true).await.expect_err("an oversized address");
    assert!(refused.to_string().contains("node_addr_bytes_max"), "{refused}");
    leader.add_learner(4, learner.info().clone(), true).await.expect("add learner");
    let status = cluster.converged().await;
    assert_eq!(status.learners.keys().copied().collect::<Vec<_>>(), vec![4]);
    let mut got_snapshot = false;
    while let Ok(change) = changes.try_recv() {
        got_snapshot |= matches!(change, StateChange::SnapshotInstalled { .. });
    }
    assert!(got_snapshot, "the learner caught up without a snapshot");
    assert_eq!(conversation_count(&learner), 300);

    // Promote it, then retire node 1: the cluster keeps taking writes with {2, 3, 4}.
    leader.change_membership([1, 2, 3, 4].into()).await.expect("promote");
    let leader = cluster.node(cluster.leader().await);
    leader.change_membership([2, 3, 4].into()).await.expect("remove node 1");
    cluster.kill(1).await;
    let leader = cluster.node(cluster.leader().await);
    write(&leader, open(300)).await;
    let status = cluster.converged().await;
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
    assert!(status.learners.is_empty());
    for node in cluster.running.values() {
        assert_eq!(conversation_count(node), 301);
    }
    for id in [2, 3, 4] {
        cluster.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_cluster_restarted_from_disk_has_the_same_state() {
    init_tracing();
    // No ticks, so that nothing but the restart's blank entries is applied after the stop.
    let mut tuning = test_tuning();
    tuning.tick_interval = Duration::from_secs(3600);
    tuning.snapshot_every_entries = 40;
    let mut cluster = Cluster::start(3, tuning, None).await;
    let leader = cluster.node(cluster.leader().await);
    setup(&leader).await;
    for i in 0..120 {
        write(&leader, open(i)).await;
    }
    drop(leader);
    let before = cluster.converged().await;
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
    for id in [1, 2, 3] {
        cluster.start_node(id).await;
    }
    let leader = cluster.node(cluster.leader().await);
    // A read barrier makes every replica catch up with what was committed before the stop.
    let read = leader.read(|state| state.conversation_count(&WorkspaceId::new(WS))).await.expect("read");
    assert_eq!(read.value, 120);
    let after = cluster.converged().await;
    assert!(after.applied_index >= before.applied_index, "{before:?} {after:?}");
    assert_eq!(after.state_digest, before.state_digest);

    // And it carries on: the next conversation goes to the next agent in the rotation.
    let committed = write(&leader, open(120)).await;
    let agent_of = |effects: &[Effect]| {
        effects.iter().find_map(|e| match e {
            Effect::Assigned { agent, .. } => Some(agent.to_string()),
            _ => None,
        })
    };
    assert_eq!(agent_of(&committed.outcomes[0].effects).as_deref(), Some(["a1", "a2", "a3"][120 % 3]));
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_and_digests_read_from_a_forked_copy_match_the_state() {
    init_tracing();
    let mut tuning = test_tuning();
    tuning.tick_interval = Duration::from_secs(3600);
    tuning.snapshot_every_entries = 40;
    // Every whole-state read (snapshot, digest, export) runs in a forked child.
    tuning.fork_reads_bytes_min = 0;
    let mut cluster = Cluster::start(3, tuning, None).await;
    let leader = cluster.node(cluster.leader().await);
    setup(&leader).await;
    for i in 0..120 {
        write(&leader, open(i)).await;
    }
    let before = cluster.converged().await;
    for node in cluster.running.values() {
        // The digest computed under the lock, in this process.
        let direct = node.read(|state| state.state_digest()).await.expect("read");
        assert_eq!(direct.applied_index, before.applied_index, "node {}", node.id());
        assert_eq!(direct.value, before.state_digest, "node {}: forked digest differs", node.id());
        assert!(node.members_status().snapshot_index > 0, "node {} built no snapshot", node.id());
    }
    let export = leader.export_snapshot().await.expect("export");
    assert_eq!(export.last_log_index, before.applied_index);
    drop(leader);
    // Restarted from the snapshots the children wrote (plus the log after them).
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
    for id in [1, 2, 3] {
        cluster.start_node(id).await;
    }
    let leader = cluster.node(cluster.leader().await);
    let read = leader.read(|state| state.conversation_count(&WorkspaceId::new(WS))).await.expect("read");
    assert_eq!(read.value, 120);
    let after = cluster.converged().await;
    assert_eq!(after.state_digest, before.state_digest);
    drop(leader);
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
}

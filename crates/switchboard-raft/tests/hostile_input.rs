//! Inputs that used to stop a whole cluster: an input whose apply panics (a bug in the state
//! machine) and a burst of large writes. Both on a real 3-node cluster with redb files.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::*;
use switchboard_core::{Channel, Command, ErrorKind, Input, OpenConversation};
use switchboard_raft::{Fate, FaultPlan, NodeId, PeerRpc, WRITE_BYTES_MAX};

/// Delivers everything; panics when applying the input with event id `boom`.
#[derive(Debug)]
struct PanicOnBoom;

impl FaultPlan for PanicOnBoom {
    fn fate(&self, _from: NodeId, _to: NodeId, _rpc: PeerRpc) -> Fate {
        Fate::Deliver
    }

    fn panic_on_apply(&self, input: &Input) -> bool {
        matches!(input, Input::Event(event) if event.event_id.as_ref().is_some_and(|id| id.as_str() == "boom"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_whose_apply_panics_is_refused_on_every_replica_and_the_cluster_keeps_serving() {
    init_tracing();
    let cluster = Cluster::start(3, test_tuning(), Some(Arc::new(PanicOnBoom))).await;
    let leader = cluster.node(cluster.leader().await);
    leader.propose(workspace_setup()).await.expect("setup commits");

    // The poisoned input shares one write, and so one log entry, with good ones around it.
    let boom = event("boom", Command::OpenConversation(OpenConversation::new("c-boom", "k", Channel::Sms)));
    let committed = leader.propose(vec![open(1), boom, open(2)]).await.expect("the entry commits");
    let [first, poisoned, last] = &committed.outcomes[..] else { panic!("three outcomes: {committed:?}") };
    assert_eq!(first.rejection, None);
    assert_eq!(assigned_conversations(&first.effects), ["c-1"]);
    let rejection = poisoned.rejection.as_ref().expect("the panicking input is refused");
    assert_eq!(rejection.kind, ErrorKind::Internal);
    assert!(rejection.message.contains("failpoint"), "{}", rejection.message);
    assert_eq!(last.rejection, None);
    assert_eq!(assigned_conversations(&last.effects), ["c-2"]);

    // Later entries still commit, on every replica, and the replicas agree byte for byte.
    // Through whichever node leads: on a loaded machine an election may come in between (the
    // test's timeouts are tight), and an attempt that failed may still have committed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let later = loop {
        match cluster.node(cluster.leader().await).propose(vec![open(3)]).await {
            Ok(committed) => break committed,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "the cluster stopped committing: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let rejection = later.outcomes[0].rejection.as_ref();
    assert!(rejection.is_none_or(|r| r.kind == ErrorKind::AlreadyApplied), "{rejection:?}");
    let status = cluster.converged().await;
    assert!(status.applied_index >= later.index);
    for node in cluster.running.values() {
        assert_eq!(node.apply_panics(), 1, "node {} counted the panic once", node.id());
        assert_ne!(node.status().role, "shutdown", "node {} is still running", node.id());
    }
}

/// One write of `inputs` conversations, each with a first message of `message_bytes`.
fn large_write(writer: usize, write: usize, inputs: usize, message_bytes: usize) -> Vec<Input> {
    (0..inputs)
        .map(|i| {
            let id = format!("w{writer}-{write}-{i}");
            let mut open = OpenConversation::new(id.clone(), format!("k-{id}"), Channel::Email);
            open.first_message = "x".repeat(message_bytes);
            event(&id, Command::OpenConversation(open))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_large_writes_keep_the_cluster_committing_without_elections() {
    init_tracing();
    let cluster = Cluster::start(3, support::steady_tuning(), None).await;
    let leader_id = cluster.leader().await;
    let leader = cluster.node(leader_id);
    leader.propose(workspace_setup()).await.expect("setup commits");
    let term_before = leader.status().term;

    // 4 writers × 12 writes of 0.9 × write_bytes_max each, all through the leader at once: before
    // entries and AppendEntries calls were bounded in bytes, such a burst made replication
    // time out on every heartbeat, followers called elections and nothing committed again.
    let message_bytes = 16 * 1024;
    let per_write = (WRITE_BYTES_MAX * 9 / 10) / (message_bytes + 64);
    let mut writers = Vec::new();
    for writer in 0..4 {
        let node = Arc::clone(&leader);
        writers.push(tokio::spawn(async move {
            let mut committed = 0usize;
            for write in 0..12 {
                let inputs = large_write(writer, write, per_write, message_bytes);
                match node.propose(inputs).await {
                    Ok(result) => {
                        assert!(result.outcomes.iter().all(|o| o.rejection.is_none()), "a large write was refused");
                        committed += 1;
                    }
                    Err(error) => panic!("writer {writer}, write {write} failed: {error}"),
                }
            }
            committed
        }));
    }
    // Liveness, not speed: a wedged cluster never finishes (without the byte bounds, 3 MB
    // writes kept this burst from committing for more than ten minutes).
    let all = tokio::time::timeout(Duration::from_secs(180), futures::future::join_all(writers))
        .await
        .expect("the burst commits: the cluster is not wedged");
    for writer in all {
        assert_eq!(writer.expect("writer runs"), 12);
    }
    // The leader stayed leader (at most one election's worth of slack for a loaded CI machine),
    // and a small write still commits at once.
    let status = leader.status();
    assert!(status.term <= term_before + 1, "the term climbed from {term_before} to {}", status.term);
    let small = tokio::time::timeout(Duration::from_secs(5), leader.propose(vec![open(1)])).await;
    assert!(matches!(small, Ok(Ok(_))), "a small write after the burst: {small:?}");
    cluster.converged().await;

    // A write over the byte limit is refused by name before it reaches the log.
    let too_large = large_write(9, 0, WRITE_BYTES_MAX / message_bytes + 2, message_bytes);
    let error = leader.propose(too_large).await.expect_err("refused");
    assert!(error.to_string().contains("write_bytes_max"), "{error}");
}

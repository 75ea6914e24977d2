//! A conversation's history re-derived from a node's snapshots and log (`Assignments.Explain`):
//! the same decisions, at the same log indexes and effect sequences, as the cluster made them,
//! from the previous snapshot as well as from an unpurged log, and `OutOfRange` once the
//! decisions are older than what the node keeps.

mod support;

use std::time::Duration;
use support::*;
use switchboard_core::{AssignReason, Command, ConversationId, Effect, Routed, WorkspaceId};
use switchboard_raft::{Committed, History, HistoryError, RaftNode};
use tokio::time::Instant;

async fn write(node: &RaftNode, input: switchboard_core::Input) -> Committed {
    let committed = node.propose(vec![input]).await.expect("write committed");
    assert_eq!(committed.outcomes[0].rejection, None, "write refused");
    committed
}

/// The `(log index, sequence, effect)` of each effect of `committed` about conversation `c-0`.
fn about_c0(committed: &Committed) -> Vec<(u64, u32, Effect)> {
    let c0 = ConversationId::new("c-0");
    committed.outcomes[0]
        .effects
        .iter()
        .zip(committed.first_effect_sequence..)
        .filter(|(effect, _)| effect.conversation() == Some(&c0))
        .map(|(effect, sequence)| (committed.index, sequence, effect.clone()))
        .collect()
}

/// Asks `node` to snapshot and waits until it has one past `after`; returns its index.
async fn snapshot(node: &RaftNode, after: u64) -> u64 {
    node.trigger_snapshot().await.expect("snapshot asked");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let index = node.raft().metrics().borrow().snapshot.map_or(0, |id| id.index);
        if index > after {
            return index;
        }
        assert!(Instant::now() < deadline, "no snapshot past {after}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn history(node: &RaftNode) -> Result<History, HistoryError> {
    node.conversation_history(&WorkspaceId::new(WS), &ConversationId::new("c-0")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn histories_match_the_decisions_taken_from_the_previous_snapshot_until_they_are_out_of_reach() {
    init_tracing();
    let mut tuning = test_tuning();
    // Snapshots only when asked; the log keeps 30 entries behind each.
    tuning.snapshot_every_entries = 1 << 40;
    tuning.keep_entries_after_snapshot = 30;
    tuning.tick_interval = Duration::from_secs(3600);
    let mut cluster = Cluster::start(3, tuning, None).await;
    let leader = cluster.node(cluster.leader().await);
    let committed = leader.propose(workspace_setup()).await.expect("setup");
    assert!(committed.outcomes.iter().all(|o| o.rejection.is_none()));
    for i in 100..140 {
        write(&leader, open(i)).await;
    }
    let first_snapshot = snapshot(&leader, 0).await;

    // c-0 opens (round robin picks someone), closes, and its customer writes again: reopened,
    // back to the same agent.
    let opened = write(&leader, open(0)).await;
    let closed = write(&leader, close(0)).await;
    let message = event("message-0", Command::CustomerMessage { conversation: ConversationId::new("c-0") });
    let reopened = write(&leader, message).await;
    for i in 140..145 {
        write(&leader, open(i)).await;
    }
    let second_snapshot = snapshot(&leader, first_snapshot).await;
    let expected: Vec<_> = [&opened, &closed, &reopened].into_iter().flat_map(about_c0).collect();
    let agent = expected
        .iter()
        .find_map(|(_, _, e)| match e {
            Effect::Assigned { agent, .. } => Some(agent.clone()),
            _ => None,
        })
        .expect("c-0 was assigned");

    // The leader starts from its previous snapshot (c-0 is in neither snapshot's state before
    // its opening); a follower, which never snapshotted, from an empty state and its whole log.
    let from_snapshot = history(&leader).await.expect("the leader's history");
    assert_eq!(from_snapshot.oldest_index, first_snapshot + 1);
    assert!(!from_snapshot.earlier_out_of_range);
    let got: Vec<_> = from_snapshot
        .decisions
        .iter()
        .flat_map(|d| d.effects.iter().map(move |(sequence, effect)| (d.index, *sequence, effect.clone())))
        .collect();
    assert_eq!(got, expected, "the history's effects are the cluster's, with their indexes and sequences");
    let causes: Vec<_> = from_snapshot.decisions.iter().map(|d| (d.index, d.cause.as_str())).collect();
    assert_eq!(
        causes,
        vec![
            (opened.index, "OpenConversation"),
            (closed.index, "CloseConversation"),
            (reopened.index, "CustomerMessage")
        ]
    );
    let opening = from_snapshot.decisions[0].explanation.as_ref().expect("the opening is explained");
    assert_eq!(opening.routed, Routed::DefaultTeam);
    let winner = opening.candidates.iter().find(|c| c.agent == agent).expect("the assigned agent is a candidate");
    assert!(winner.verdict.is_eligible(), "{winner:?}");
    let reopening = from_snapshot.decisions[2].explanation.as_ref().expect("the reopening is explained");
    assert!(matches!(reopening.routed, Routed::Reopened { .. }), "{:?}", reopening.routed);
    assert_eq!(reopening.returning.as_ref().map(|c| &c.agent), Some(&agent));
    assert!(
        from_snapshot.decisions[2].effects.iter().any(
            |(_, e)| matches!(e, Effect::Assigned { agent: a, reason: AssignReason::Reopened, .. } if *a == agent)
        )
    );
    assert!(from_snapshot.decisions[1].explanation.is_none());

    let follower_id = *cluster.running.keys().find(|id| **id != leader.id()).expect("a follower");
    let follower = cluster.node(follower_id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while follower.read_local(|_| ()).applied_index < reopened.index {
        assert!(Instant::now() < deadline, "the follower did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from_log = history(&follower).await.expect("the follower's history");
    assert_eq!(from_log.oldest_index, 1);
    assert_eq!(from_log.decisions, from_snapshot.decisions, "replayed from the start or from a snapshot alike");

    // A conversation nobody opened.
    let unknown = leader.conversation_history(&WorkspaceId::new(WS), &ConversationId::new("nobody")).await;
    assert!(matches!(unknown, Err(HistoryError::NotFound { .. })), "{unknown:?}");

    // One more snapshot, more than 30 entries later: the log no longer reaches back to the
    // previous one, so the leader starts from the newest, and c-0's decisions are out of reach.
    for i in 145..190 {
        write(&leader, open(i)).await;
    }
    let third_snapshot = snapshot(&leader, second_snapshot).await;
    assert!(third_snapshot > second_snapshot + 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader.raft().metrics().borrow().purged.map_or(0, |id| id.index) <= second_snapshot {
        assert!(Instant::now() < deadline, "the leader did not purge its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match history(&leader).await {
        Err(HistoryError::OutOfRange { oldest_index, .. }) => assert_eq!(oldest_index, third_snapshot + 1),
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
}

//! A seeded randomized fault test: peer messages are delayed, dropped and lose their replies,
//! nodes crash and restart, while writers keep writing. Every acknowledged write must survive
//! and every replica must end with the same state.
//!
//! The seed is printed; `SWITCHBOARD_FAULT_SEED=<seed> cargo test -p switchboard-raft --test
//! faults` replays the same fault schedule (thread timing still varies between runs, so the
//! interleaving is close to, not exactly, the failing one).

mod support;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use switchboard_core::{ConversationId, WorkspaceId};
use switchboard_raft::{Fate, FaultPlan, NodeId, PeerRpc, RaftNode};

#[derive(Debug)]
struct SeededFaults {
    rng: Mutex<SmallRng>,
    enabled: AtomicBool,
}

impl FaultPlan for SeededFaults {
    fn fate(&self, _from: NodeId, _to: NodeId, _rpc: PeerRpc) -> Fate {
        if !self.enabled.load(Ordering::Relaxed) {
            return Fate::Deliver;
        }
        let mut rng = self.rng.lock().expect("lock");
        match rng.random_range(0..100) {
            0..3 => Fate::Drop,
            3..5 => Fate::DropReply,
            5..15 => Fate::Delay(Duration::from_millis(rng.random_range(1..40))),
            _ => Fate::Deliver,
        }
    }
}

fn seed() -> u64 {
    match std::env::var("SWITCHBOARD_FAULT_SEED") {
        Ok(text) => text.parse().expect("SWITCHBOARD_FAULT_SEED must be a u64"),
        Err(_) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
            nanos as u64
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_crashes_and_message_faults_lose_nothing_acknowledged() {
    init_tracing();
    let seed = seed();
    println!("fault seed: {seed} (replay with SWITCHBOARD_FAULT_SEED={seed})");
    eprintln!("fault seed: {seed} (replay with SWITCHBOARD_FAULT_SEED={seed})");
    let faults =
        Arc::new(SeededFaults { rng: Mutex::new(SmallRng::seed_from_u64(seed)), enabled: AtomicBool::new(false) });
    let mut tuning = test_tuning();
    tuning.snapshot_every_entries = 200;
    tuning.keep_entries_after_snapshot = 20;
    let mut cluster = Cluster::start(3, tuning, Some(faults.clone() as Arc<dyn FaultPlan>)).await;
    let leader = cluster.node(cluster.leader().await);
    leader.propose(workspace_setup()).await.expect("setup");
    drop(leader);
    faults.enabled.store(true, Ordering::Relaxed);

    let mut schedule = SmallRng::seed_from_u64(seed ^ 0x5eed_5eed);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    const ROUNDS: u64 = 5;
    const WRITERS: u64 = 4;
    const PER_ROUND: u64 = 60;
    for round in 0..ROUNDS {
        let nodes: Vec<Arc<RaftNode>> = cluster.running.values().cloned().collect();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let nodes = nodes.clone();
            let acked = Arc::clone(&acked);
            writers.push(tokio::spawn(async move {
                let mut next = w as usize;
                for k in 0..PER_ROUND {
                    let i = (round * WRITERS + w) * PER_ROUND + k;
                    write_until_acknowledged(&nodes, &mut next, open(i)).await;
                    acked.lock().expect("lock").insert(i);
                }
            }));
        }
        // Crash one node (possibly the leader) part-way through the round, restart it later.
        tokio::time::sleep(Duration::from_millis(schedule.random_range(50..400))).await;
        let victim = schedule.random_range(1..=3);
        println!("round {round}: crashing node {victim}");
        cluster.kill(victim).await;
        tokio::time::sleep(Duration::from_millis(schedule.random_range(100..900))).await;
        cluster.start_node(victim).await;
        for writer in writers {
            writer.await.expect("writer");
        }
    }

    faults.enabled.store(false, Ordering::Relaxed);
    cluster.leader().await;
    let status = cluster.converged().await;
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len() as u64, ROUNDS * WRITERS * PER_ROUND);
    for node in cluster.running.values() {
        let missing: Vec<u64> = node
            .read_local(|state| {
                acked
                    .iter()
                    .copied()
                    .filter(|i| {
                        state.conversation(&WorkspaceId::new(WS), &ConversationId::new(format!("c-{i}"))).is_none()
                    })
                    .collect()
            })
            .value;
        assert!(missing.is_empty(), "node {} lost acknowledged writes {missing:?} (seed {seed})", node.id());
        let count = node.read_local(|state| state.conversation_count(&WorkspaceId::new(WS))).value;
        assert_eq!(count, acked.len(), "node {} (seed {seed})", node.id());
    }
    println!("converged at index {} with digest {}", status.applied_index, status.state_digest);
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
}

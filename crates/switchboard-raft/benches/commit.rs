//! Raft commit benchmark: a 3-node cluster on loopback with real redb files, in one process.
//!
//! For 1, 16 and 256 concurrent writers it reports committed events per second and the commit
//! latency of each write (propose → applied on the leader), then the latency at a fixed offered
//! rate of 5,000 events/s, then how long a new leader takes to accept a write after the old one
//! dies. Each writer alternates opening and closing its own conversations, so the state stays
//! small and the figures measure replication, not routing.
//!
//! `cargo bench -p switchboard-raft --bench commit` (or `make bench-raft`); `-- --test` runs a
//! short smoke version, as `make bench-check` does.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{Cluster, event, workspace_setup};
use switchboard_core::{Channel, Command, Input, OpenConversation};
use switchboard_raft::{RaftNode, Tuning};
use tokio::time::Instant;

/// The two inputs of one writer's `k`-th step: open, then close, its conversation.
fn step(writer: usize, k: u64) -> Input {
    let conversation = format!("w{writer}-c{}", k / 2);
    if k.is_multiple_of(2) {
        let open = OpenConversation::new(conversation, format!("w{writer}-contact"), Channel::WhatsApp);
        event(&format!("w{writer}-e{k}"), Command::OpenConversation(open))
    } else {
        event(&format!("w{writer}-e{k}"), Command::CloseConversation { conversation: conversation.into() })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

/// `writers` tasks write back to back through the leader for `duration`.
async fn closed_loop(node: Arc<RaftNode>, writers: usize, duration: Duration, round: usize) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let node = Arc::clone(&node);
        let writer = round * 100_000 + w;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut k = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let committed = node.propose(vec![step(writer, k)]).await.expect("write");
                assert_eq!(committed.outcomes[0].rejection, None);
                latencies.push(sent.elapsed());
                k += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

/// Writes arrive at `rate` per second regardless of how fast earlier ones commit.
async fn open_loop(node: Arc<RaftNode>, rate: u64, duration: Duration) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let node = Arc::clone(&node);
        // Each write opens a conversation of its own (a close could overtake its open here).
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let committed = node.propose(vec![step(1_000_000 + i as usize, 0)]).await.expect("write");
            assert_eq!(committed.outcomes[0].rejection, None);
            sent.elapsed()
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("write"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut tuning = Tuning { snapshot_every_entries: 50_000, ..Tuning::default() };
        if let Ok(n) = std::env::var("BENCH_MAX_IN_FLIGHT") {
            tuning.max_in_flight = n.parse().expect("BENCH_MAX_IN_FLIGHT");
        }
        if let Ok(us) = std::env::var("BENCH_LINGER_US") {
            tuning.batch_linger = Duration::from_micros(us.parse().expect("BENCH_LINGER_US"));
        }
        let mut cluster = Cluster::start(3, tuning, None).await;
        let leader = cluster.node(cluster.leader().await);
        leader.propose(workspace_setup()).await.expect("setup");
        let duration = if smoke { Duration::from_millis(300) } else { Duration::from_secs(5) };

        for (round, writers) in [1usize, 16, 256].into_iter().enumerate() {
            let (rate, latencies) = closed_loop(Arc::clone(&leader), writers, duration, round).await;
            println!(
                "raft commit: writers={writers} events_per_s={rate:.0} p50_ms={:.2} p99_ms={:.2}",
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99)
            );
        }

        let offered = if smoke { 500 } else { 5_000 };
        let (rate, latencies) = open_loop(Arc::clone(&leader), offered, duration).await;
        println!(
            "raft commit: offered_per_s={offered} events_per_s={rate:.0} p50_ms={:.2} p99_ms={:.2}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );

        // Failover: kill the leader, then write through a survivor until it succeeds.
        let trials = if smoke { 1 } else { 3 };
        for trial in 0..trials {
            let old = cluster.leader().await;
            let survivor = cluster.node(*cluster.running.keys().find(|id| **id != old).expect("survivor"));
            let killed = Instant::now();
            cluster.kill(old).await;
            let dead = killed.elapsed();
            survivor.propose(vec![step(800_000 + trial, 0)]).await.expect("write after failover");
            let took = killed.elapsed();
            println!(
                "raft failover: trial={trial} first_write_after_kill_ms={:.0} (stopping the old leader took {:.0} ms)",
                took.as_secs_f64() * 1000.0,
                dead.as_secs_f64() * 1000.0
            );
            cluster.start_node(old).await;
            cluster.converged().await;
        }
        drop(leader);
        for id in [1, 2, 3] {
            cluster.kill(id).await;
        }
    });
}

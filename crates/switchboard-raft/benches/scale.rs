//! Load at scale while every node snapshots and `status` is polled: does either stall applies?
//!
//! A 3-node cluster in one process (real redb logs, loopback) is filled with 100,000 online
//! agents in one least-open team and 1,000,000 open conversations (each with its own contact).
//! Then the same open-loop load runs twice: first alone, then while each node in turn builds a
//! snapshot (node 1 at 2 s, node 2 at 5 s, node 3 at 8 s: staggered, as `snapshot_every_entries`
//! staggers them) and every node's `status` (which carries the state digest) is polled once a
//! second. A write's latency is propose → applied on the leader. The figure to watch is the p99
//! of the second run against the first.
//!
//! `cargo bench -p switchboard-raft --bench scale` (or `make bench-scale`); `-- --test` runs a
//! small smoke version. `BENCH_SCALE_FORK_MIN=<bytes>` sets `Tuning::fork_reads_bytes_min`
//! (`max`: every whole-state read under the lock, as before forked reads), `BENCH_SCALE_RATE`
//! the offered events/s (default 2,000), `BENCH_SCALE_SECONDS` each run's length (default 12),
//! `BENCH_SCALE_BACKGROUND` what runs beside the second load (`both`, `snapshots`, `status`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{Cluster, WS, event};
use switchboard_core::{
    AgentSpec, AgentStatus, Channel, Command, Input, OpenConversation, Strategy, TeamId, TeamSpec, WorkspaceSettings,
};
use switchboard_raft::{MAX_INPUTS_PER_PROPOSAL, RaftNode, Tuning};
use tokio::time::Instant;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Proposes `inputs` in proposals of at most 2,000 inputs, up to 4 at once.
async fn load(leader: &Arc<RaftNode>, inputs: Vec<Input>) {
    let chunk = 2_000.min(MAX_INPUTS_PER_PROPOSAL);
    let mut pending = futures::stream::FuturesOrdered::new();
    let mut inputs = inputs.into_iter().peekable();
    while inputs.peek().is_some() {
        let batch: Vec<Input> = inputs.by_ref().take(chunk).collect();
        let leader = Arc::clone(leader);
        pending.push_back(async move {
            // A slow commit under this load answers `Uncertain`; the events carry ids, so
            // proposing them again is safe (the state machine drops what already applied).
            let mut attempts = 0;
            loop {
                match leader.propose(batch.clone()).await {
                    Ok(_) => break,
                    Err(error) if attempts < 10 => {
                        attempts += 1;
                        eprintln!("scale: set-up write retried ({error})");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(error) => panic!("set-up write failed {attempts} times: {error}"),
                }
            }
        });
        if pending.len() >= 4 {
            futures::StreamExt::next(&mut pending).await;
        }
    }
    while futures::StreamExt::next(&mut pending).await.is_some() {}
}

/// 100,000 online agents (room for 20 each) in one least-open team, then `conversations`
/// open conversations, each with a contact of its own.
async fn fill(leader: &Arc<RaftNode>, agents: usize, conversations: usize) {
    let ids: Vec<String> = (0..agents).map(|i| format!("a{i}")).collect();
    let mut inputs = vec![event("setup-ws", Command::ConfigureWorkspace(WorkspaceSettings::default()))];
    for id in &ids {
        let mut spec = AgentSpec::new(id.as_str(), id.as_str());
        spec.max_open = 20;
        spec.daily_limit = 1_000_000;
        inputs.push(event(&format!("setup-{id}"), Command::UpsertAgent(spec)));
    }
    load(leader, inputs).await;
    let members: Vec<&str> = ids.iter().map(String::as_str).collect();
    let team = TeamSpec::new("support", Strategy::LeastOpen, &members);
    let settings = WorkspaceSettings { default_team: Some(TeamId::new("support")), ..WorkspaceSettings::default() };
    load(
        leader,
        vec![
            event("setup-team", Command::UpsertTeam(team)),
            event("setup-default", Command::ConfigureWorkspace(settings)),
        ],
    )
    .await;
    let online = ids
        .iter()
        .map(|id| {
            event(
                &format!("online-{id}"),
                Command::SetAgentStatus { agent: id.as_str().into(), status: AgentStatus::Online },
            )
        })
        .collect();
    load(leader, online).await;
    let opens = (0..conversations)
        .map(|i| {
            let channel = Channel::ALL[i % Channel::ALL.len()];
            let open = OpenConversation::new(format!("held-{i}"), format!("held-contact-{i}"), channel);
            event(&format!("held-open-{i}"), Command::OpenConversation(open))
        })
        .collect();
    load(leader, opens).await;
}

/// `rate` writes a second for `duration`, each opening (even) or closing (odd) a conversation
/// of its own; returns the sorted latencies.
async fn open_loop(node: Arc<RaftNode>, rate: u64, duration: Duration, run: &str) -> Vec<Duration> {
    let start = Instant::now();
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let node = Arc::clone(&node);
        let conversation = format!("{run}-c{}", i / 2);
        let input = if i % 2 == 0 {
            let open = OpenConversation::new(conversation, format!("{run}-k{i}"), Channel::WhatsApp);
            event(&format!("{run}-e{i}"), Command::OpenConversation(open))
        } else {
            event(&format!("{run}-e{i}"), Command::CloseConversation { conversation: conversation.into() })
        };
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            node.propose(vec![input]).await.expect("write");
            sent.elapsed()
        }));
    }
    let mut all = Vec::with_capacity(tasks.len());
    for task in tasks {
        all.push(task.await.expect("write"));
    }
    all.sort();
    all
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let (agents, conversations) = if smoke { (1_000, 10_000) } else { (100_000, 1_000_000) };
    let rate: u64 = env("BENCH_SCALE_RATE", if smoke { 200 } else { 2_000 });
    let seconds: u64 = env("BENCH_SCALE_SECONDS", if smoke { 2 } else { 12 });
    let fork_min = match std::env::var("BENCH_SCALE_FORK_MIN").as_deref() {
        Ok("max") => usize::MAX,
        Ok(n) => n.parse().expect("BENCH_SCALE_FORK_MIN: bytes or max"),
        Err(_) => Tuning::default().fork_reads_bytes_min,
    };
    // What runs beside the second load: `both` (the target's case), or one of them alone to
    // tell their costs apart.
    let beside = std::env::var("BENCH_SCALE_BACKGROUND").unwrap_or_else(|_| "both".to_owned());
    let (snapshots, polling) = match beside.as_str() {
        "both" => (true, true),
        "snapshots" => (true, false),
        "status" => (false, true),
        other => panic!("BENCH_SCALE_BACKGROUND: both, snapshots or status, not {other:?}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // Snapshots only when this benchmark asks for them.
        let tuning = Tuning { snapshot_every_entries: 1 << 40, fork_reads_bytes_min: fork_min, ..Tuning::default() };
        let mut cluster = Cluster::start(3, tuning, None).await;
        let leader = cluster.node(cluster.leader().await);
        let started = Instant::now();
        fill(&leader, agents, conversations).await;
        println!(
            "scale fill: agents={agents} conversations={conversations} seconds={:.1}",
            started.elapsed().as_secs_f64()
        );
        // A first snapshot on every node, so that each knows its state's size (and the logs
        // are compacted): what a long-running cluster looks like.
        let ids: Vec<u64> = cluster.running.keys().copied().collect();
        for id in &ids {
            snapshot_and_wait(&cluster.node(*id)).await;
        }
        let duration = Duration::from_secs(seconds);

        let quiet = open_loop(Arc::clone(&leader), rate, duration, "quiet").await;
        report("alone", rate, &quiet, fork_min);

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut background = Vec::new();
        for (k, id) in ids.iter().enumerate().filter(|_| snapshots) {
            let node = cluster.node(*id);
            let delay = Duration::from_secs(2 + 3 * k as u64).min(duration / 2);
            background.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let took = snapshot_and_wait(&node).await;
                format!("node{}_snapshot_s={:.2}", node.id(), took.as_secs_f64())
            }));
        }
        let pollers: Vec<Arc<RaftNode>> = ids.iter().map(|id| cluster.node(*id)).collect();
        let poll_stop = Arc::clone(&stop);
        let poller = tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut polls = 0u64;
            while polling && !poll_stop.load(std::sync::atomic::Ordering::Relaxed) {
                for node in &pollers {
                    let node = Arc::clone(node);
                    let asked = Instant::now();
                    let status = tokio::task::spawn_blocking(move || node.status()).await.expect("status");
                    assert_eq!(status.state_digest.len(), 32);
                    slowest = slowest.max(asked.elapsed());
                    polls += 1;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            format!("status_polls={polls} slowest_status_s={:.2}", slowest.as_secs_f64())
        });
        let busy = open_loop(Arc::clone(&leader), rate, duration, "busy").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut notes = Vec::new();
        for task in background {
            notes.push(task.await.expect("snapshot"));
        }
        notes.push(poller.await.expect("poller"));
        let run = match beside.as_str() {
            "both" => "snapshots+status",
            "snapshots" => "snapshots",
            _ => "status",
        };
        report(run, rate, &busy, fork_min);
        println!("scale background: {}", notes.join(" "));
        println!("scale p99 ratio: {:.2} (target: at most 1.5)", percentile(&busy, 0.99) / percentile(&quiet, 0.99));
        drop(leader);
        for id in ids {
            cluster.kill(id).await;
        }
    });
}

/// Asks `node` for a snapshot and waits until its snapshot index moves; returns how long.
async fn snapshot_and_wait(node: &Arc<RaftNode>) -> Duration {
    let before = node.members_status().snapshot_index;
    let asked = Instant::now();
    node.trigger_snapshot().await.expect("trigger");
    while node.members_status().snapshot_index == before {
        assert!(asked.elapsed() < Duration::from_secs(300), "node {} built no snapshot", node.id());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    asked.elapsed()
}

fn report(run: &str, rate: u64, latencies: &[Duration], fork_min: usize) {
    let fork = if fork_min == usize::MAX { "never".to_owned() } else { format!("{fork_min}") };
    println!(
        "scale load: run={run} offered_per_s={rate} writes={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} fork_reads_bytes_min={fork} workspace={WS}",
        latencies.len(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
    );
}

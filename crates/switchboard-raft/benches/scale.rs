//! Load at scale while every node snapshots and `status` is polled: does either stall applies?
//!
//! A 3-node cluster (real redb logs, loopback) is filled with 100,000 online agents in one
//! least-open team and 1,000,000 open conversations (each with its own contact). Then the same
//! open-loop load runs twice: first alone, then while each node in turn builds a snapshot
//! (node 1 at 2 s, node 2 at 5 s, node 3 at 6 s: staggered, as `snapshot_every_entries`
//! staggers them; each start is capped at half the run) and every node's `status` (which
//! carries the state digest) is polled once a second. A write's latency is propose → applied
//! on the leader. The figure to watch is the p99 of the second run against the first.
//!
//! Each node runs in a process of its own (this binary started again with `BENCH_SCALE_CHILD`
//! set, driven over its standard input and output), as deployed: a snapshot's fork then copies
//! the page tables of one replica, not three. `BENCH_SCALE_PROCESSES=1` runs the three nodes in
//! this process instead, as this benchmark did until 2026-12-05.
//!
//! `cargo bench -p switchboard-raft --bench scale` (or `make bench-scale`); `-- --test` runs a
//! small smoke version. `BENCH_SCALE_FORK_MIN=<bytes>` sets `Tuning::fork_reads_bytes_min`
//! (`max`: every whole-state read under the lock, as before forked reads), `BENCH_SCALE_RATE`
//! the offered events/s (default 2,000), `BENCH_SCALE_SECONDS` each run's length (default 12),
//! `BENCH_SCALE_BACKGROUND` what runs beside the second load (`both`, `snapshots`, `status`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::{Cluster, WS, event};
use switchboard_core::{
    AgentSpec, AgentStatus, Channel, Command, Input, OpenConversation, Strategy, TeamId, TeamSpec, WorkspaceSettings,
};
use switchboard_raft::{MAX_INPUTS_PER_PROPOSAL, NodeId, NodeInfo, RaftNode, RaftNodeConfig, Tuning};
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
    if let Ok(id) = std::env::var(CHILD_ENV) {
        child::run(id.parse().expect("BENCH_SCALE_CHILD: a node id"));
        return;
    }
    let smoke = std::env::args().any(|a| a == "--test");
    let (agents, conversations) = if smoke { (1_000, 10_000) } else { (100_000, 1_000_000) };
    let rate: u64 = env("BENCH_SCALE_RATE", if smoke { 200 } else { 2_000 });
    let seconds: u64 = env("BENCH_SCALE_SECONDS", if smoke { 2 } else { 12 });
    let fork_min = fork_min();
    // What runs beside the second load: `both` (the target's case), or one of them alone to
    // tell their costs apart.
    let beside = std::env::var("BENCH_SCALE_BACKGROUND").unwrap_or_else(|_| "both".to_owned());
    let (snapshots, polling) = match beside.as_str() {
        "both" => (true, true),
        "snapshots" => (true, false),
        "status" => (false, true),
        other => panic!("BENCH_SCALE_BACKGROUND: both, snapshots or status, not {other:?}"),
    };
    let processes: u64 = env("BENCH_SCALE_PROCESSES", 3);
    assert!(processes == 1 || processes == 3, "BENCH_SCALE_PROCESSES: 1 or 3, not {processes}");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let nodes = if processes == 3 { Nodes::processes().await } else { Nodes::in_one_process().await };
        let leader = nodes.leader().await;
        let started = Instant::now();
        nodes.fill(leader, agents, conversations).await;
        println!(
            "scale fill: agents={agents} conversations={conversations} seconds={:.1} processes={processes}",
            started.elapsed().as_secs_f64()
        );
        // A first snapshot on every node, so that each knows its state's size (and the logs
        // are compacted): what a long-running cluster looks like.
        let ids: Vec<u64> = vec![1, 2, 3];
        for id in &ids {
            nodes.snapshot(*id).await;
        }
        let duration = Duration::from_secs(seconds);

        let quiet = nodes.load(leader, rate, duration, "quiet").await;
        report("alone", rate, &quiet, fork_min, processes);

        let nodes = Arc::new(nodes);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut background = Vec::new();
        for (k, id) in ids.iter().copied().enumerate().filter(|_| snapshots) {
            let nodes = Arc::clone(&nodes);
            let delay = Duration::from_secs(2 + 3 * k as u64).min(duration / 2);
            background.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let took = nodes.snapshot(id).await;
                let leader = if id == leader { "(leader)" } else { "" };
                format!("node{id}{leader}_snapshot_s={:.2}", took.as_secs_f64())
            }));
        }
        let poll_stop = Arc::clone(&stop);
        let pollers = Arc::clone(&nodes);
        let poller = tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut polls = 0u64;
            while polling && !poll_stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in [1, 2, 3] {
                    slowest = slowest.max(pollers.status(id).await);
                    polls += 1;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            format!("status_polls={polls} slowest_status_s={:.2}", slowest.as_secs_f64())
        });
        let busy = nodes.load(leader, rate, duration, "busy").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut notes = Vec::new();
        for task in background {
            notes.push(task.await.expect("snapshot"));
        }
        notes.push(poller.await.expect("poller"));
        notes.push(nodes.resident().await);
        let run = match beside.as_str() {
            "both" => "snapshots+status",
            "snapshots" => "snapshots",
            _ => "status",
        };
        report(run, rate, &busy, fork_min, processes);
        println!("scale background: {}", notes.join(" "));
        println!("scale p99 ratio: {:.2} (target: at most 1.5)", percentile(&busy, 0.99) / percentile(&quiet, 0.99));
        match Arc::try_unwrap(nodes) {
            Ok(nodes) => nodes.stop().await,
            Err(_) => panic!("a background task still holds the nodes"),
        }
    });
}

const CHILD_ENV: &str = "BENCH_SCALE_CHILD";
const DIR_ENV: &str = "BENCH_SCALE_DIR";

fn fork_min() -> usize {
    match std::env::var("BENCH_SCALE_FORK_MIN").as_deref() {
        Ok("max") => usize::MAX,
        Ok(n) => n.parse().expect("BENCH_SCALE_FORK_MIN: bytes or max"),
        Err(_) => Tuning::default().fork_reads_bytes_min,
    }
}

/// Snapshots only when this benchmark asks for them.
fn tuning() -> Tuning {
    Tuning { snapshot_every_entries: 1 << 40, fork_reads_bytes_min: fork_min(), ..Tuning::default() }
}

/// The three replicas: in this process (`BENCH_SCALE_PROCESSES=1`, as before 2026-12-05), or
/// one child process each (the default, as deployed: a fork copies one replica's pages).
enum Nodes {
    InOneProcess(support::Cluster),
    Processes(BTreeMap<NodeId, child::Handle>, tempfile::TempDir),
}

impl Nodes {
    async fn in_one_process() -> Self {
        Nodes::InOneProcess(Cluster::start(3, tuning(), None).await)
    }

    /// Starts this binary three times as one node each, then initialises the cluster on node 1.
    async fn processes() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut children = BTreeMap::new();
        let mut members = Vec::new();
        for id in 1..=3 {
            let (handle, raft_addr) = child::Handle::spawn(id, &dir.path().join(format!("node-{id}"))).await;
            members.push(format!("{id}={raft_addr}"));
            children.insert(id, handle);
        }
        children[&1].ask(&format!("init {}", members.join(" "))).await;
        Nodes::Processes(children, dir)
    }

    /// Waits until one node leads and every node agrees; returns its id.
    async fn leader(&self) -> NodeId {
        match self {
            Nodes::InOneProcess(cluster) => cluster.leader().await,
            Nodes::Processes(children, _) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let mut views = Vec::new();
                    for handle in children.values() {
                        views.push(handle.ask("leader").await);
                    }
                    // Each answers "<leader id or 0> <whether it leads>".
                    let leading: Vec<NodeId> = children
                        .keys()
                        .zip(&views)
                        .filter(|(_, view)| view.ends_with(" true"))
                        .map(|(id, _)| *id)
                        .collect();
                    if let [id] = leading[..]
                        && views.iter().all(|view| view.starts_with(&format!("{id} ")))
                    {
                        return id;
                    }
                    assert!(Instant::now() < deadline, "no stable leader within 30 s: {views:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn fill(&self, leader: NodeId, agents: usize, conversations: usize) {
        match self {
            Nodes::InOneProcess(cluster) => fill(&cluster.node(leader), agents, conversations).await,
            Nodes::Processes(children, _) => {
                children[&leader].ask(&format!("fill {agents} {conversations}")).await;
            }
        }
    }

    /// Node `id` builds a snapshot; returns how long it took.
    async fn snapshot(&self, id: NodeId) -> Duration {
        match self {
            Nodes::InOneProcess(cluster) => snapshot_and_wait(&cluster.node(id)).await,
            Nodes::Processes(children, _) => seconds(&children[&id].ask("snapshot").await),
        }
    }

    /// Node `id`'s `status` (with its state digest); returns how long it took to answer.
    async fn status(&self, id: NodeId) -> Duration {
        match self {
            Nodes::InOneProcess(cluster) => status(cluster.node(id)).await,
            Nodes::Processes(children, _) => seconds(&children[&id].ask("status").await),
        }
    }

    /// The open-loop load on node `leader`; its latencies, sorted.
    async fn load(&self, leader: NodeId, rate: u64, duration: Duration, run: &str) -> Vec<Duration> {
        match self {
            Nodes::InOneProcess(cluster) => open_loop(cluster.node(leader), rate, duration, run).await,
            Nodes::Processes(children, _) => {
                let answer = children[&leader].ask(&format!("load {rate} {} {run}", duration.as_secs_f64())).await;
                let mut all: Vec<Duration> = answer
                    .split(',')
                    .filter(|micros| !micros.is_empty())
                    .map(|micros| Duration::from_micros(micros.parse().expect("latency in µs")))
                    .collect();
                all.sort();
                all
            }
        }
    }

    /// Resident memory of each process that holds replicas.
    async fn resident(&self) -> String {
        match self {
            Nodes::InOneProcess(_) => format!("resident_gb={:.2}", child::resident_bytes() as f64 / 1e9),
            Nodes::Processes(children, _) => {
                let mut each = Vec::new();
                for (id, handle) in children {
                    each.push(format!("node{id}_resident_gb={}", handle.ask("resident").await));
                }
                each.join(" ")
            }
        }
    }

    async fn stop(self) {
        match self {
            Nodes::InOneProcess(mut cluster) => {
                for id in [1, 2, 3] {
                    cluster.kill(id).await;
                }
            }
            Nodes::Processes(children, _dir) => {
                for (_, handle) in children {
                    handle.stop().await;
                }
            }
        }
    }
}

fn seconds(answer: &str) -> Duration {
    Duration::from_secs_f64(answer.parse().expect("seconds"))
}

async fn status(node: Arc<RaftNode>) -> Duration {
    let asked = Instant::now();
    let status = tokio::task::spawn_blocking(move || node.status()).await.expect("status");
    assert_eq!(status.state_digest.len(), 32);
    asked.elapsed()
}

/// One node in a process of its own, driven by its parent over stdin and stdout: each request
/// is a line `<tag> <verb> <args…>`, each answer a line `<tag> <answer>`; requests run at once,
/// concurrently. End of input stops the node.
mod child {
    use super::*;
    use std::path::Path;
    use std::process::Stdio;
    use std::sync::Mutex;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::sync::oneshot;

    /// The requests waiting for an answer, by tag; `None` once the node's output has ended
    /// (every waiting request then fails at once instead of waiting forever).
    type Waiting = Arc<Mutex<Option<BTreeMap<u64, oneshot::Sender<String>>>>>;

    /// The parent's side: a running child and the requests waiting for its answers.
    pub(super) struct Handle {
        id: NodeId,
        process: tokio::process::Child,
        stdin: tokio::sync::Mutex<tokio::process::ChildStdin>,
        waiting: Waiting,
        next_tag: std::sync::atomic::AtomicU64,
    }

    impl Handle {
        /// Starts node `id` with its files in `dir`; returns it with its Raft address.
        pub(super) async fn spawn(id: NodeId, dir: &Path) -> (Self, String) {
            let exe = std::env::current_exe().expect("this benchmark's path");
            let mut process = tokio::process::Command::new(exe)
                .args(std::env::args().skip(1))
                .env(CHILD_ENV, id.to_string())
                .env(DIR_ENV, dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start a node process");
            let stdin = process.stdin.take().expect("child stdin");
            let mut lines = BufReader::new(process.stdout.take().expect("child stdout")).lines();
            let ready = lines.next_line().await.expect("child stdout").expect("node process said nothing");
            let raft_addr = ready.strip_prefix("ready ").expect("`ready <addr>`").to_owned();
            let waiting: Waiting = Arc::new(Mutex::new(Some(BTreeMap::new())));
            let answers = Arc::clone(&waiting);
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let (tag, answer) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    let Ok(tag) = tag.parse::<u64>() else {
                        eprintln!("scale: node {id} printed a line that answers nothing: {line:?}");
                        continue;
                    };
                    let waiter = answers.lock().expect("waiting").as_mut().and_then(|waiting| waiting.remove(&tag));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(answer.to_owned());
                    }
                }
                // The node ended: whatever still waits gets no answer.
                answers.lock().expect("waiting").take();
            });
            let handle = Handle {
                id,
                process,
                stdin: tokio::sync::Mutex::new(stdin),
                waiting,
                next_tag: std::sync::atomic::AtomicU64::new(1),
            };
            (handle, raft_addr)
        }

        /// Sends one request and waits for its answer.
        pub(super) async fn ask(&self, request: &str) -> String {
            let tag = self.next_tag.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            match self.waiting.lock().expect("waiting").as_mut() {
                Some(waiting) => waiting.insert(tag, tx),
                None => panic!("node {} has ended; cannot ask {request:?}", self.id),
            };
            let mut stdin = self.stdin.lock().await;
            stdin.write_all(format!("{tag} {request}\n").as_bytes()).await.expect("write to node process");
            stdin.flush().await.expect("flush to node process");
            drop(stdin);
            rx.await.unwrap_or_else(|_| panic!("node {} ended without answering {request:?}", self.id))
        }

        /// Closes the node's input and waits for it to stop.
        pub(super) async fn stop(self) {
            let Handle { mut process, stdin, .. } = self;
            drop(stdin);
            let status = process.wait().await.expect("node process");
            assert!(status.success(), "node process ended with {status}");
        }
    }

    /// The child's side: starts node `id` and answers its parent until its input ends.
    pub(super) fn run(id: NodeId) {
        let dir = std::env::var(DIR_ENV).expect("BENCH_SCALE_DIR");
        // A request that panics ends the process (and with it its output), so that the parent
        // fails at once instead of waiting for an answer that will not come.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            std::process::exit(101);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let mut config = RaftNodeConfig::new(id, dir, "127.0.0.1:0".parse().expect("addr"));
            config.tuning = tuning();
            let node = Arc::new(RaftNode::start(config).await.expect("start node"));
            println!("ready {}", node.info().raft_addr);
            // Standard input read on a thread of its own (tokio's needs a feature this crate
            // does not otherwise use).
            let (lines, mut requests) = tokio::sync::mpsc::unbounded_channel::<String>();
            std::thread::spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { break };
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            });
            let mut running = tokio::task::JoinSet::new();
            while let Some(line) = requests.recv().await {
                let node = Arc::clone(&node);
                running.spawn(async move {
                    let (tag, request) = line.split_once(' ').expect("`<tag> <request>`");
                    let answer = answer(&node, request).await;
                    // One `println!` per answer: stdout's lock keeps lines whole.
                    println!("{tag} {answer}");
                });
            }
            running.shutdown().await;
            node.shutdown().await;
        });
    }

    async fn answer(node: &Arc<RaftNode>, request: &str) -> String {
        let words: Vec<&str> = request.split(' ').collect();
        match words[..] {
            ["init", ref members @ ..] => {
                let members = members
                    .iter()
                    .map(|member| {
                        let (id, addr) = member.split_once('=').expect("`<id>=<addr>`");
                        let info = NodeInfo { raft_addr: addr.to_owned(), api_addr: String::new() };
                        (id.parse().expect("node id"), info)
                    })
                    .collect();
                node.initialize(members).await.expect("initialise");
                "ok".to_owned()
            }
            ["leader"] => {
                format!("{} {}", node.members_status().leader.unwrap_or(0), node.is_leader())
            }
            ["fill", agents, conversations] => {
                fill(node, agents.parse().expect("agents"), conversations.parse().expect("conversations")).await;
                "ok".to_owned()
            }
            ["snapshot"] => format!("{}", snapshot_and_wait(node).await.as_secs_f64()),
            ["status"] => format!("{}", status(Arc::clone(node)).await.as_secs_f64()),
            ["load", rate, seconds, run] => {
                let duration = Duration::from_secs_f64(seconds.parse().expect("seconds"));
                let latencies = open_loop(Arc::clone(node), rate.parse().expect("rate"), duration, run).await;
                let micros: Vec<String> = latencies.iter().map(|d| d.as_micros().to_string()).collect();
                micros.join(",")
            }
            ["resident"] => format!("{:.2}", resident_bytes() as f64 / 1e9),
            _ => panic!("node process: unknown request {request:?}"),
        }
    }

    /// This process's resident memory (Linux `/proc/self/statm`, pages of 4 KiB), 0 elsewhere.
    pub(super) fn resident_bytes() -> u64 {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()))
            .map_or(0, |pages| pages * 4096)
    }
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

fn report(run: &str, rate: u64, latencies: &[Duration], fork_min: usize, processes: u64) {
    let fork = if fork_min == usize::MAX { "never".to_owned() } else { format!("{fork_min}") };
    println!(
        "scale load: run={run} offered_per_s={rate} writes={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} fork_reads_bytes_min={fork} processes={processes} workspace={WS}",
        latencies.len(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
    );
}

//! The nemesis test: a Switchboard cluster of real processes, a workload of every kind of
//! write, a seeded schedule of faults, and a checker that decides from the observable history
//! alone whether anything was lost, doubled or decided wrongly.
//!
//! `make nemesis` runs it for `NEMESIS_SECONDS` (default 600) with `NEMESIS_SEED`; `make test`
//! runs a bounded slice (`crates/switchboard/tests/nemesis.rs`).

pub mod checker;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod proxy;
pub mod workload;

use anyhow::{Context as _, Result, bail};
use cluster::{Binaries, Cluster, NodeState};
use history::History;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use switchboard_client::pb;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The binaries.
    pub binaries: Binaries,
    /// Nodes (3 or 5).
    pub nodes: usize,
    /// How long faults are injected.
    pub seconds: u64,
    /// The seed of the fault schedule and the workload.
    pub seed: u64,
    /// Gateway tasks publishing conversations.
    pub gateways: usize,
    /// Where to keep the run's files (logs, data); a temporary directory when `None`, kept
    /// when the run fails.
    pub dir: Option<PathBuf>,
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    /// The verdict.
    pub verdict: checker::Verdict,
    /// Faults injected.
    pub faults: usize,
    /// Per kind of fault: (count, recovery times).
    pub recoveries: BTreeMap<&'static str, Vec<Duration>>,
    /// Whether every node ended on the same applied index and digest.
    pub digests_equal: bool,
    /// The final (applied index, digest) of each node.
    pub digests: Vec<Option<(u64, String)>>,
    /// Where the run's files are.
    pub dir: PathBuf,
}

impl Report {
    /// The one-line verdict.
    pub fn line(&self, seed: u64) -> String {
        let v = &self.verdict;
        format!(
            "nemesis: seed={seed} faults={} ops={} acked={} lost={} doubled={} wrong={} digests_equal={}",
            self.faults, v.ops, v.acked, v.lost, v.doubled, v.wrong, self.digests_equal
        )
    }

    /// The verdict line, every finding and the final digests, a line each.
    pub fn text(&self, seed: u64) -> String {
        let mut text = self.line(seed);
        text.push('\n');
        for line in self.recovery_lines() {
            text.push_str(&line);
            text.push('\n');
        }
        for finding in &self.verdict.findings {
            text.push_str(finding);
            text.push('\n');
        }
        text.push_str(&format!("digests: {:?}\n", self.digests));
        text
    }

    /// Whether the run is clean.
    pub fn clean(&self) -> bool {
        self.verdict.clean() && self.digests_equal
    }

    /// Recovery times per kind of fault, one line each.
    pub fn recovery_lines(&self) -> Vec<String> {
        self.recoveries
            .iter()
            .map(|(kind, times)| {
                let mut sorted = times.clone();
                sorted.sort_unstable();
                let pick = |q: f64| {
                    sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, Duration::as_secs_f64)
                };
                format!(
                    "recovery {kind:<16} n={:<4} p50={:.2}s p90={:.2}s max={:.2}s",
                    sorted.len(),
                    pick(0.5),
                    pick(0.9),
                    pick(1.0)
                )
            })
            .collect()
    }
}

/// The binaries: `$SWITCHBOARD_BIN` or the `switchboard` beside the current executable
/// (`target/<profile>/`), and [`nats_server`].
pub fn find_binaries() -> Result<Binaries> {
    let switchboard = match std::env::var_os("SWITCHBOARD_BIN").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe.parent().context("no executable directory")?;
            [dir.join("switchboard"), dir.join("../switchboard")].into_iter().find(|p| p.exists()).context(
                "no switchboard binary beside this one: build it (cargo build -p switchboard) or set SWITCHBOARD_BIN",
            )?
        }
    };
    Ok(Binaries { switchboard, nats_server: nats_server() })
}

/// nats-server: `$SWITCHBOARD_NATS_SERVER`, else `target/pyenv/bin/nats-server` (installed by
/// `tests/python/setup_env.sh`), else `nats-server` on the PATH.
pub fn nats_server() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_NATS_SERVER").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/nats-server");
            if venv.exists() { venv } else { PathBuf::from("nats-server") }
        }
    }
}

/// Runs the nemesis: starts the cluster, sets up the workspace, runs the workload under faults
/// for `options.seconds`, heals everything, lets the cluster settle and judges the history.
pub async fn run(options: &Options) -> Result<Report> {
    let temp = tempfile::Builder::new().prefix("nemesis-").tempdir()?;
    let dir = match &options.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temp.path().to_owned(),
    };
    let report = run_in(options, &dir).await;
    // The verdict beside the logs, whole: a failed test's output may be lost or cut, the files
    // stay (`make nemesis` keeps them too).
    let verdict = match &report {
        Ok(report) => report.text(options.seed),
        Err(error) => format!("nemesis: seed={} did not finish: {error:#}\n", options.seed),
    };
    if let Err(error) = std::fs::write(dir.join("verdict.txt"), verdict) {
        eprintln!("nemesis: cannot write {}: {error}", dir.join("verdict.txt").display());
    }
    if !matches!(&report, Ok(r) if r.clean()) && options.dir.is_none() {
        // Keep the logs of a failed run.
        let kept = temp.keep();
        eprintln!("nemesis: the run's files are kept in {}", kept.display());
    }
    report
}

async fn run_in(options: &Options, dir: &std::path::Path) -> Result<Report> {
    let mut cluster = Cluster::start(&options.binaries, dir, options.nodes).await?;
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let cx = workload::Context {
        history: history.clone(),
        client: cluster.client(Duration::from_secs(3), Duration::ZERO)?,
        reader: cluster.client(Duration::from_secs(3), Duration::from_secs(20))?,
        nats_url: cluster.nats.url.clone(),
        stop: stop.clone(),
    };
    // The cluster elects a leader and creates the streams before traffic starts.
    let started = Instant::now();
    while cluster.leader().await.is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no leader within 60 s:\n{}", cluster.log_tail(0, 30));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workload::setup(&cx).await?;
    eprintln!(
        "nemesis: {} nodes up, workspace ready; faults for {} s (seed {})",
        options.nodes, options.seconds, options.seed
    );
    let mut tasks = workload::start(&cx, options.seed, options.gateways);

    let mut nemesis = faults::Nemesis::new(options.seed, options.nodes);
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    while Instant::now() < deadline {
        nemesis.step(&mut cluster).await?;
    }
    nemesis.heal_all(&mut cluster).await?;
    eprintln!("nemesis: {} faults injected; healing and letting the workload finish", nemesis.faults);
    // Traffic goes on a little on the healed cluster, then stops; clients finish their retries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let finish =
        tokio::time::timeout(Duration::from_secs(120), async { while tasks.join_next().await.is_some() {} }).await;
    if finish.is_err() {
        tasks.abort_all();
        eprintln!("nemesis: some clients were still retrying after 120 s");
    }
    settle(&cluster).await?;
    let finals = final_reads(&cx, &history).await?;
    let digests = converge(&cluster).await;
    let digests_equal = digests.iter().all(Option::is_some) && digests.windows(2).all(|w| w[0] == w[1]);
    let (effects, rejected) = checker::read_streams(&cluster.nats.url).await?;
    let ops = history.ops();
    let verdict = checker::check(&ops, &effects, &rejected, &finals);
    for i in 0..cluster.len() {
        if let Some(status) = cluster.exited(i) {
            eprintln!("nemesis: node {} exited on its own ({status}):\n{}", i + 1, cluster.log_tail(i, 20));
        }
    }
    let report = Report {
        verdict,
        faults: nemesis.faults,
        recoveries: nemesis.recoveries.clone(),
        digests_equal,
        digests,
        dir: dir.to_owned(),
    };
    if !report.clean() {
        // Beside the logs, so that a finding can be traced to the requests behind it.
        let path = dir.join("history.txt");
        if let Err(error) = std::fs::write(&path, history_text(&ops)) {
            eprintln!("nemesis: cannot write {}: {error}", path.display());
        }
    }
    Ok(report)
}

/// The history, one request per line in completion order: when it was sent and answered (ms
/// since the start), which client, what it asked and what it was told.
fn history_text(ops: &[history::Op]) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for op in ops {
        let _ = writeln!(
            text,
            "{} {} {} {:?} => {:?}",
            op.invoked.as_millis(),
            op.completed.as_millis(),
            op.process,
            op.request,
            op.outcome
        );
    }
    text
}

/// Waits until the assigner's consumer has nothing pending or unacknowledged: every stored
/// event has taken effect.
async fn settle(cluster: &Cluster) -> Result<()> {
    let client = async_nats::connect(&cluster.nats.url).await?;
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    loop {
        let pending = match js.get_stream("SWITCHBOARD").await {
            Ok(stream) => {
                match stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("switchboard-assigner").await
                {
                    Ok(mut consumer) => consumer.info().await.map(|i| (i.num_pending, i.num_ack_pending)).ok(),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        if pending == Some((0, 0)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("the assigner's consumer still has {pending:?} (pending, unacknowledged) events after 180 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Linearizable reads of every conversation and agent the workload touched.
async fn final_reads(cx: &workload::Context, history: &History) -> Result<checker::FinalReads> {
    let mut conversations = std::collections::BTreeSet::new();
    let mut agents = std::collections::BTreeSet::new();
    for op in history.ops() {
        match &op.request {
            history::Request::Publish { event, .. } => {
                let (history::Published::Open { conversation, .. }
                | history::Published::Message { conversation }
                | history::Published::Reopen { conversation }
                | history::Published::Reply { conversation }
                | history::Published::Close { conversation }) = event;
                conversations.insert(conversation.clone());
            }
            history::Request::SetStatus { agent, .. } | history::Request::UpsertAgent { agent, .. } => {
                agents.insert(agent.clone());
            }
            _ => {}
        }
    }
    let mut reads = checker::FinalReads::default();
    for conversation in conversations {
        let read = cx
            .reader
            .get_conversation(pb::GetConversationRequest {
                workspace: workload::WORKSPACE.into(),
                conversation: conversation.clone(),
                ..Default::default()
            })
            .await;
        match read {
            Ok(info) => {
                reads.conversations.insert(conversation, (info.state(), info.assignee));
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => bail!("final read of {conversation}: {status}"),
        }
    }
    for agent in agents {
        let read = cx
            .reader
            .get_agent(pb::GetAgentRequest {
                workspace: workload::WORKSPACE.into(),
                agent: agent.clone(),
                ..Default::default()
            })
            .await;
        match read {
            Ok(state) => {
                reads.agents.insert(agent, (state.status(), state.open_conversations.into_iter().collect()));
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => bail!("final read of agent {agent}: {status}"),
        }
    }
    Ok(reads)
}

/// Waits (up to 60 s) until every node reports the same applied index, and returns what each
/// reports then. Ticks keep the log moving, so it samples until they line up.
async fn converge(cluster: &Cluster) -> Vec<Option<(u64, String)>> {
    let started = Instant::now();
    loop {
        let digests = cluster.digests().await;
        let indexes: Vec<Option<u64>> = digests.iter().map(|d| d.as_ref().map(|(i, _)| *i)).collect();
        let aligned = indexes.iter().all(Option::is_some) && indexes.windows(2).all(|w| w[0] == w[1]);
        if aligned || started.elapsed() > Duration::from_secs(60) {
            return digests;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether every node runs (none down or paused).
pub fn all_up(cluster: &Cluster) -> bool {
    (0..cluster.len()).all(|i| cluster.state(i) == NodeState::Up)
}

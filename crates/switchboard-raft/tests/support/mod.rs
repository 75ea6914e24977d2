//! A cluster of real nodes on 127.0.0.1 with ephemeral ports and their own redb files, plus a
//! small contact-center workload to write into it.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::{
    AgentSpec, AgentStatus, Channel, Command, Effect, Event, EventId, Input, OpenConversation, Strategy, TeamId,
    TeamSpec, WorkspaceSettings,
};
use switchboard_raft::{ClusterStatus, FaultPlan, NodeId, NodeInfo, ProposeError, RaftNode, RaftNodeConfig, Tuning};
use tempfile::TempDir;
use tokio::time::Instant;

pub const WS: &str = "acme";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .with_test_writer()
        .try_init();
}

/// Timeouts a little tighter than the defaults so that tests elect quickly, but loose enough
/// for a loaded 2-core machine.
pub fn test_tuning() -> Tuning {
    Tuning {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        tick_interval: Duration::from_millis(200),
        ..Tuning::default()
    }
}

/// As [`test_tuning`], with elections that take 1.5–3 s to call: for the tests that assert
/// that something did not cause an election, so that a loaded CI machine's stall of a few
/// hundred milliseconds (which would miss heartbeats for longer than 300 ms) does not either.
pub fn steady_tuning() -> Tuning {
    Tuning { election_timeout: (Duration::from_millis(1_500), Duration::from_millis(3_000)), ..test_tuning() }
}

pub struct Cluster {
    pub dir: TempDir,
    pub running: BTreeMap<NodeId, Arc<RaftNode>>,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub tuning: Tuning,
    pub faults: Option<Arc<dyn FaultPlan>>,
    /// With a CA: every node gets a certificate naming `node-<id>` and the peer port requires
    /// mutual TLS.
    pub pki: Option<Arc<switchboard_tls::pki::Pki>>,
}

impl Cluster {
    /// Starts nodes `1..=voters`, initialises the cluster on node 1 and waits for a leader.
    pub async fn start(voters: u64, tuning: Tuning, faults: Option<Arc<dyn FaultPlan>>) -> Self {
        Self::start_with(voters, tuning, faults, None).await
    }

    /// As [`Cluster::start`], with mutual TLS on the peer port when `pki` is given.
    pub async fn start_with(
        voters: u64,
        tuning: Tuning,
        faults: Option<Arc<dyn FaultPlan>>,
        pki: Option<Arc<switchboard_tls::pki::Pki>>,
    ) -> Self {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            running: BTreeMap::new(),
            addrs: BTreeMap::new(),
            tuning,
            faults,
            pki,
        };
        for id in 1..=voters {
            cluster.start_node(id).await;
        }
        let members: BTreeMap<NodeId, NodeInfo> =
            cluster.running.iter().map(|(id, node)| (*id, node.info().clone())).collect();
        cluster.running[&1].initialize(members).await.expect("initialise");
        cluster.leader().await;
        cluster
    }

    /// Starts (or restarts, on the same address and directory) node `id`.
    pub async fn start_node(&mut self, id: NodeId) {
        let listen = self.addrs.get(&id).copied().unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr"));
        let mut config = RaftNodeConfig::new(id, self.dir.path().join(format!("node-{id}")), listen);
        config.tuning = self.tuning.clone();
        config.faults = self.faults.clone();
        if let Some(pki) = &self.pki {
            let files = pki.write_node(self.dir.path(), id, &["127.0.0.1", "localhost"]).expect("certificate");
            config.tls = Some(switchboard_tls::NodeTls::load(files).expect("TLS material"));
        }
        let node = start_retrying(config).await;
        let addr: SocketAddr = node.info().raft_addr.parse().expect("bound addr");
        self.addrs.insert(id, addr);
        self.running.insert(id, Arc::new(node));
    }

    /// Stops node `id` abruptly; its files stay.
    pub async fn kill(&mut self, id: NodeId) {
        if let Some(node) = self.running.remove(&id) {
            node.shutdown().await;
        }
    }

    pub fn node(&self, id: NodeId) -> Arc<RaftNode> {
        Arc::clone(&self.running[&id])
    }

    /// Waits until a running node is leader and every running node agrees; returns its id.
    pub async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders: BTreeSet<Option<NodeId>> = self.running.values().map(|n| n.members_status().leader).collect();
            if let Some(Some(id)) = leaders.iter().next()
                && leaders.len() == 1
                && self.running.get(id).is_some_and(|n| n.is_leader())
            {
                return *id;
            }
            assert!(Instant::now() < deadline, "no stable leader within 30 s: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied the same index and has the same digest.
    pub async fn converged(&self) -> ClusterStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Digests (each a whole-state read) only once every node applied as far.
            let applied: BTreeSet<u64> = self.running.values().map(|n| n.members_status().applied_index).collect();
            let statuses: Vec<ClusterStatus> = if applied.len() == 1 {
                self.running.values().map(|n| n.status()).collect()
            } else {
                self.running.values().map(|n| n.members_status()).collect()
            };
            let first = &statuses[0];
            if statuses.iter().all(|s| s.applied_index == first.applied_index && s.state_digest == first.state_digest)
                && first.applied_index > 0
            {
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge within 30 s: {:?}",
                statuses.iter().map(|s| (s.id, s.applied_index, s.state_digest.clone())).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A restarted node may find its port not yet released by the previous run (the node itself
/// waits for its database).
async fn start_retrying(config: RaftNodeConfig) -> RaftNode {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match RaftNode::start(config.clone()).await {
            Ok(node) => return node,
            Err(error) if Instant::now() < deadline => {
                tracing::warn!(%error, "node did not start yet; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("node {} did not start: {error}", config.id),
        }
    }
}

pub fn event(id: &str, command: Command) -> Input {
    Input::Event(Event { workspace: WS.into(), event_id: Some(EventId::new(id)), command })
}

/// A workspace with team `support` (round-robin) and three online agents with room for
/// everything a test opens.
pub fn workspace_setup() -> Vec<Input> {
    let mut inputs = vec![event("setup-ws", Command::ConfigureWorkspace(WorkspaceSettings::default()))];
    for agent in ["a1", "a2", "a3"] {
        let mut spec = AgentSpec::new(agent, agent.to_uppercase());
        spec.max_open = 10_000;
        spec.daily_limit = 10_000;
        inputs.push(event(&format!("setup-{agent}"), Command::UpsertAgent(spec)));
    }
    inputs.push(event(
        "setup-team",
        Command::UpsertTeam(TeamSpec::new("support", Strategy::RoundRobin, &["a1", "a2", "a3"])),
    ));
    let settings = WorkspaceSettings { default_team: Some(TeamId::new("support")), ..WorkspaceSettings::default() };
    inputs.push(event("setup-default-team", Command::ConfigureWorkspace(settings)));
    for agent in ["a1", "a2", "a3"] {
        inputs.push(event(
            &format!("setup-{agent}-online"),
            Command::SetAgentStatus { agent: agent.into(), status: AgentStatus::Online },
        ));
    }
    inputs
}

/// Opening conversation `c-<i>` (event id `open-<i>`).
pub fn open(i: u64) -> Input {
    let channel = Channel::ALL[(i % Channel::ALL.len() as u64) as usize];
    event(
        &format!("open-{i}"),
        Command::OpenConversation(OpenConversation::new(format!("c-{i}"), format!("k-{i}"), channel)),
    )
}

/// Closing conversation `c-<i>` (event id `close-<i>`).
pub fn close(i: u64) -> Input {
    event(&format!("close-{i}"), Command::CloseConversation { conversation: format!("c-{i}").into() })
}

/// The conversations assigned by a list of effects.
pub fn assigned_conversations(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Assigned { conversation, .. } => Some(conversation.to_string()),
            _ => None,
        })
        .collect()
}

/// Writes `input` through `nodes`, moving to the next node on any failure but a malformed
/// request, until it is acknowledged; `next` is where to start and ends on the node that took
/// it. Safe because every input carries an event id: a retry of a write that did apply comes
/// back as a `duplicate` rejection, which counts as acknowledged.
pub async fn write_until_acknowledged(nodes: &[Arc<RaftNode>], next: &mut usize, input: Input) {
    loop {
        match nodes[*next % nodes.len()].propose(vec![input.clone()]).await {
            Ok(committed) => {
                let rejection = &committed.outcomes[0].rejection;
                assert!(rejection.as_ref().is_none_or(|r| r.reason == "duplicate"), "{input:?} refused: {rejection:?}");
                return;
            }
            Err(ProposeError::Invalid(e)) => panic!("{input:?}: {e}"),
            Err(_) => *next += 1,
        }
    }
}

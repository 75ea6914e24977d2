//! A real cluster for end-to-end tests: N nodes in this process, each a Raft node (redb files in
//! a temporary directory, peer gRPC on 127.0.0.1) serving the public API on its own port.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod nats;
pub mod processes;
pub mod python;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_client::{Client, pb};
use switchboard_nats::NatsConfig;
use switchboard_raft::{FaultPlan, NodeInfo, RaftNode, RaftNodeConfig, Tuning};
use switchboard_server::{PresenceConfig, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The nodes' configuration for tests that are not about presence: heartbeat supervision off,
/// as `NodeProcesses` and `switchboard dev` have it. With the default (30 s), every agent a test
/// brings online would go offline 30 s later in a slow run, and conversations would then queue
/// instead of being assigned. The presence tests set supervision themselves.
pub fn unsupervised() -> ServerConfig {
    ServerConfig {
        presence: PresenceConfig { heartbeat_timeout: Duration::ZERO, ..PresenceConfig::default() },
        ..ServerConfig::default()
    }
}

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=off")),
        )
        .with_test_writer()
        .try_init();
}

pub struct TestNode {
    pub node: Arc<RaftNode>,
    stop: Option<oneshot::Sender<()>>,
    /// The API and the NATS edge, run as the binary runs them.
    server: JoinHandle<()>,
}

/// The Raft side of a test cluster's nodes: their tuning, and a fault plan for tests that cut
/// nodes off.
#[derive(Clone)]
pub struct RaftOptions {
    pub tuning: Tuning,
    pub faults: Option<Arc<dyn FaultPlan>>,
}

impl Default for RaftOptions {
    fn default() -> Self {
        Self { tuning: Tuning { tick_interval: Duration::from_millis(500), ..Tuning::default() }, faults: None }
    }
}

pub struct TestCluster {
    pub nodes: Vec<Option<TestNode>>,
    pub api_addrs: Vec<String>,
    /// The token the cluster's own clients (`client`, `client_of`) call with, for clusters
    /// that require one.
    pub token: Option<String>,
    raft_addrs: Vec<String>,
    config: ServerConfig,
    nats: Option<NatsConfig>,
    raft: RaftOptions,
    dir: tempfile::TempDir,
}

/// Starts node `id` (Raft on `raft_listen`, API on `api_listen`; port 0 = any) and its API.
async fn start_node(
    dir: &std::path::Path,
    id: u64,
    raft_listen: &str,
    api_listen: &str,
    config: &ServerConfig,
    nats: &Option<NatsConfig>,
    raft: &RaftOptions,
) -> (TestNode, String) {
    // A node killed a moment ago may not have released its port yet (its server task is
    // aborted, not awaited).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(api_listen).await {
            Ok(listener) => break listener,
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("bind api {api_listen}: {error}"),
        }
    };
    let api_addr = listener.local_addr().expect("api addr").to_string();
    let mut raft_config = RaftNodeConfig::new(id, dir.join(format!("node{id}")), raft_listen.parse().expect("addr"));
    raft_config.api_addr = api_addr.clone();
    raft_config.tuning = raft.tuning.clone();
    raft_config.faults = raft.faults.clone();
    let node = Arc::new(RaftNode::start(raft_config).await.expect("node starts"));
    let (stop, stopped) = oneshot::channel();
    let server = tokio::spawn({
        let node = node.clone();
        let config = config.clone();
        let nats = nats.clone();
        async move {
            let (stop, _) = tokio::sync::watch::channel(false);
            let stop = Arc::new(stop);
            let until_stopped = |stop: &Arc<tokio::sync::watch::Sender<bool>>| {
                let mut stop = stop.subscribe();
                async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }
            };
            let serving = switchboard_server::serve(node.clone(), listener, config, until_stopped(&stop));
            let edge = switchboard_nats::run_edge(node, nats, until_stopped(&stop));
            let signal = async {
                let _ = stopped.await;
                let _ = stop.send(true);
            };
            let (served, (), ()) = tokio::join!(serving, edge, signal);
            served.expect("API serves");
        }
    });
    (TestNode { node, stop: Some(stop), server }, api_addr)
}

impl TestCluster {
    pub async fn start(count: usize) -> Self {
        Self::start_with(count, unsupervised()).await
    }

    pub async fn start_with(count: usize, config: ServerConfig) -> Self {
        Self::start_with_nats(count, config, None).await
    }

    /// A cluster whose nodes run NATS ingest and egress with `nats` (`None`: gRPC only).
    pub async fn start_with_nats(count: usize, config: ServerConfig, nats: Option<NatsConfig>) -> Self {
        Self::start_with_raft(count, config, nats, RaftOptions::default()).await
    }

    /// As [`Self::start_with_nats`], with the Raft options `raft`.
    pub async fn start_with_raft(
        count: usize,
        config: ServerConfig,
        nats: Option<NatsConfig>,
        raft: RaftOptions,
    ) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        let mut api_addrs = Vec::new();
        let mut raft_addrs = Vec::new();
        let mut members = BTreeMap::new();
        for i in 0..count {
            let id = i as u64 + 1;
            let (node, api_addr) =
                start_node(dir.path(), id, "127.0.0.1:0", "127.0.0.1:0", &config, &nats, &raft).await;
            members.insert(id, NodeInfo::new(node.node.info().raft_addr.clone(), api_addr.clone()));
            raft_addrs.push(node.node.info().raft_addr.clone());
            nodes.push(Some(node));
            api_addrs.push(api_addr);
        }
        let first = nodes[0].as_ref().expect("node 1");
        first.node.initialize(members).await.expect("cluster initialises");
        first.node.wait_for_leader(Duration::from_secs(10)).await.expect("a leader is elected");
        let cluster = Self { nodes, api_addrs, token: None, raft_addrs, config, nats, raft, dir };
        // Every node knows the leader before tests begin.
        for node in cluster.nodes.iter().flatten() {
            node.node.wait_for_leader(Duration::from_secs(10)).await.expect("every node knows the leader");
        }
        cluster
    }

    /// Starts a killed node again from its data directory, on its old addresses.
    pub async fn restart(&mut self, index: usize) {
        assert!(self.nodes[index].is_none(), "node {index} is running");
        let (node, _) = start_node(
            self.dir.path(),
            index as u64 + 1,
            &self.raft_addrs[index],
            &self.api_addrs[index],
            &self.config,
            &self.nats,
            &self.raft,
        )
        .await;
        self.nodes[index] = Some(node);
    }

    /// A client that knows every node.
    pub async fn client(&self) -> Client {
        let config = switchboard_client::ClientConfig { token: self.token.clone(), ..Default::default() };
        Client::with_config(self.api_addrs.clone(), config).expect("client")
    }

    /// The leader's applied index: a Watch from it sees everything written after this call,
    /// however late its stream subscribes (one from 0, "from now", can miss the first writes).
    pub async fn applied_index(&self) -> u64 {
        let leader = self.leader().await;
        self.client().await.status_of(leader).await.expect("the leader's status").applied_index
    }

    /// A client of one node only, that tries no other.
    pub async fn client_of(&self, index: usize) -> Client {
        let config = switchboard_client::ClientConfig { token: self.token.clone(), ..Default::default() };
        Client::with_config([self.api_addrs[index].clone()], config).expect("client")
    }

    /// The position of the current leader.
    pub async fn leader(&self) -> usize {
        for _ in 0..200 {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node
                    && node.node.is_leader()
                {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader");
    }

    /// A position that is not the leader.
    pub async fn follower(&self) -> usize {
        let leader = self.leader().await;
        (0..self.nodes.len()).find(|i| *i != leader && self.nodes[*i].is_some()).expect("a follower")
    }

    /// Waits until every running node has applied the same index (idle ticks keep the log
    /// moving, so it samples until they line up), then asserts that their state digests are
    /// equal. Returns the digest.
    pub async fn assert_replicas_agree(&self) -> String {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).collect();
        let mut clients = Vec::new();
        for i in &running {
            clients.push(self.client_of(*i).await);
        }
        let mut last = Vec::new();
        for _ in 0..400 {
            last.clear();
            for client in &clients {
                let status = client.status(pb::StatusRequest {}).await.expect("status");
                last.push((status.applied_index, status.state_digest));
            }
            if last.windows(2).all(|pair| pair[0].0 == pair[1].0) {
                assert!(
                    last.windows(2).all(|pair| pair[0].1 == pair[1].1),
                    "replicas at the same index disagree: {last:?}"
                );
                return last[0].1.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("replicas never reached the same applied index: {last:?}");
    }

    /// Stops a node abruptly, as a crash would (its API port closes).
    pub async fn kill(&mut self, index: usize) {
        let mut node = self.nodes[index].take().expect("node is running");
        node.node.shutdown().await;
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        node.server.abort();
    }
}

/// Applies a small workspace through the API: agents `a1..=agents` in team `support` with
/// `strategy`, all online, default team `support`.
pub async fn setup_workspace(client: &Client, workspace: &str, strategy: pb::Strategy, agents: usize, max_open: u32) {
    let agents = (1..=agents)
        .map(|i| format!("a{i}"))
        .map(|id| pb::Agent { display_name: id.to_uppercase(), id, max_open, daily_limit: 100, ..Default::default() })
        .collect();
    setup_workspace_of(client, workspace, strategy, agents).await;
}

/// Creates `workspace` with default settings (or sets them back to the defaults).
pub async fn configure_default(client: &Client, workspace: &str) -> Result<pb::WriteResponse, tonic::Status> {
    client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: workspace.into(),
            settings: Some(pb::WorkspaceSettings::default()),
            ..Default::default()
        })
        .await
}

/// Applies a workspace of `agents` in team `support` with `strategy`, all online, default
/// team `support`.
pub async fn setup_workspace_of(client: &Client, workspace: &str, strategy: pb::Strategy, agents: Vec<pb::Agent>) {
    configure_default(client, workspace).await.expect("workspace");
    let ids: Vec<String> = agents.iter().map(|agent| agent.id.clone()).collect();
    for agent in agents {
        client
            .upsert_agent(pb::UpsertAgentRequest {
                workspace: workspace.into(),
                agent: Some(agent),
                ..Default::default()
            })
            .await
            .expect("agent");
    }
    client
        .upsert_team(pb::UpsertTeamRequest {
            workspace: workspace.into(),
            team: Some(pb::Team {
                id: "support".into(),
                members: ids.clone(),
                strategy: strategy.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("team");
    client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: workspace.into(),
            settings: Some(pb::WorkspaceSettings { default_team: "support".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("default team");
    for id in &ids {
        client
            .set_status(pb::SetStatusRequest {
                workspace: workspace.into(),
                agent: id.clone(),
                status: pb::AgentStatus::Online.into(),
                ..Default::default()
            })
            .await
            .expect("online");
    }
}

/// Runs `switchboard ctl` against the cluster; returns whether it succeeded and its output.
pub fn ctl(cluster: &TestCluster, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("ctl")
        .arg("--nodes")
        .arg(cluster.api_addrs.join(","))
        .args(args)
        .output()
        .expect("switchboard runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A "conversation opened" event.
pub fn opened(workspace: &str, conversation: &str) -> pb::GatewayEvent {
    pb::GatewayEvent {
        event_id: format!("{conversation}-opened"),
        workspace: workspace.into(),
        occurred_at_ms: 0,
        kind: Some(pb::gateway_event::Kind::ConversationOpened(pb::ConversationOpened {
            conversation: conversation.into(),
            contact: format!("contact-{conversation}"),
            channel: pb::Channel::Whatsapp.into(),
            ..Default::default()
        })),
    }
}

/// The agent an effect list assigns, if any.
pub fn assigned_agent(effects: &[pb::Effect]) -> Option<String> {
    effects.iter().find_map(|e| match &e.kind {
        Some(pb::effect::Kind::Assigned(a)) => Some(a.agent.clone()),
        _ => None,
    })
}

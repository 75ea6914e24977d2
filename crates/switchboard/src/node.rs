//! `switchboard node`: one cluster member, configured by a TOML file with flag and environment
//! overrides.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::AgentStatus;
use switchboard_raft::{NodeInfo, RaftNode, RaftNodeConfig, Tuning};
use switchboard_server::nats::NatsConfig;
use switchboard_server::{PresenceConfig, ServerConfig};

/// `switchboard node` flags. Each overrides the same setting of the config file.
#[derive(Args, Debug, Default)]
pub(crate) struct NodeArgs {
    /// The node's TOML configuration file (see deploy/node.example.toml).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// This node's id: unique in the cluster, stable across restarts, at least 1.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub(crate) id: Option<u64>,
    /// Directory of the Raft log and snapshots.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address of the public gRPC API (host:port).
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Address of the peer-only Raft service (host:port).
    #[arg(long, env = "SWITCHBOARD_RAFT_LISTEN")]
    pub(crate) raft_listen: Option<SocketAddr>,
    /// Address of the Prometheus /metrics endpoint (host:port).
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// NATS server URL(s): consume gateway events from JetStream and publish effects to it.
    #[arg(long, env = "SWITCHBOARD_NATS_URL")]
    pub(crate) nats_url: Option<String>,
}

/// A cluster member as the config file names it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeerConfig {
    /// Its node id.
    pub(crate) id: u64,
    /// Its Raft peer address.
    pub(crate) raft_addr: String,
    /// Its public API address.
    pub(crate) api_addr: String,
}

/// The `[presence]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PresenceSection {
    /// Milliseconds without a heartbeat before an agent is marked `expire_to`; 0 = off.
    pub(crate) heartbeat_timeout_ms: u64,
    /// `"offline"` or `"away"`.
    pub(crate) expire_to: String,
}

impl Default for PresenceSection {
    fn default() -> Self {
        Self { heartbeat_timeout_ms: 30_000, expire_to: "offline".to_owned() }
    }
}

/// The `[raft]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RaftSection {
    pub(crate) heartbeat_ms: u64,
    pub(crate) election_timeout_min_ms: u64,
    pub(crate) election_timeout_max_ms: u64,
    pub(crate) snapshot_every_entries: u64,
    pub(crate) keep_entries_after_snapshot: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        let tuning = Tuning::default();
        Self {
            heartbeat_ms: tuning.heartbeat_interval.as_millis() as u64,
            election_timeout_min_ms: tuning.election_timeout.0.as_millis() as u64,
            election_timeout_max_ms: tuning.election_timeout.1.as_millis() as u64,
            snapshot_every_entries: tuning.snapshot_every_entries,
            keep_entries_after_snapshot: tuning.keep_entries_after_snapshot,
        }
    }
}

/// The `[nats]` table; absent means no NATS (gRPC `Events` only).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NatsSection {
    pub(crate) url: String,
    pub(crate) stream_replicas: usize,
    pub(crate) duplicate_window_s: u64,
    pub(crate) effects_max_age_s: u64,
    pub(crate) max_ack_pending: i64,
    pub(crate) ack_wait_s: u64,
    pub(crate) batch_max: usize,
    pub(crate) batch_linger_ms: u64,
    pub(crate) max_event_bytes: usize,
}

impl Default for NatsSection {
    fn default() -> Self {
        let config = NatsConfig::default();
        Self {
            url: config.url,
            stream_replicas: config.stream_replicas,
            duplicate_window_s: config.duplicate_window.as_secs(),
            effects_max_age_s: config.effects_max_age.as_secs(),
            max_ack_pending: config.max_ack_pending,
            ack_wait_s: config.ack_wait.as_secs(),
            batch_max: config.batch_max,
            batch_linger_ms: config.batch_linger.as_millis() as u64,
            max_event_bytes: config.max_event_bytes,
        }
    }
}

/// The `[api]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ApiSection {
    pub(crate) max_request_bytes: usize,
    pub(crate) watch_retained_effects: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        let config = ServerConfig::default();
        Self { max_request_bytes: config.max_request_bytes, watch_retained_effects: config.watch_retained_effects }
    }
}

/// The whole node configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeConfig {
    pub(crate) id: Option<u64>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) raft_listen: Option<SocketAddr>,
    /// The API address other nodes and clients should use, if not `listen`.
    pub(crate) advertise_api: Option<String>,
    /// The Raft address other nodes should use, if not `raft_listen`.
    pub(crate) advertise_raft: Option<String>,
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// The initial members (this node included). The member with the lowest id initialises a
    /// new cluster; a restarted member ignores the list.
    #[serde(default)]
    pub(crate) peers: Vec<PeerConfig>,
    #[serde(default)]
    pub(crate) presence: PresenceSection,
    #[serde(default)]
    pub(crate) raft: RaftSection,
    #[serde(default)]
    pub(crate) api: ApiSection,
    pub(crate) nats: Option<NatsSection>,
}

impl NodeConfig {
    /// Reads `path`, naming the file and the bad key on error.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
    }

    fn apply(&mut self, args: &NodeArgs) {
        if let Some(id) = args.id {
            self.id = Some(id);
        }
        if let Some(dir) = &args.data_dir {
            self.data_dir = Some(dir.clone());
        }
        if let Some(listen) = args.listen {
            self.listen = Some(listen);
        }
        if let Some(listen) = args.raft_listen {
            self.raft_listen = Some(listen);
        }
        if let Some(listen) = args.metrics_listen {
            self.metrics_listen = Some(listen);
        }
        if let Some(url) = &args.nats_url {
            self.nats.get_or_insert_with(NatsSection::default).url = url.clone();
        }
    }
}

/// A configuration checked for completeness.
struct Resolved {
    id: u64,
    data_dir: PathBuf,
    listen: SocketAddr,
    raft_listen: SocketAddr,
    advertise_api: String,
    advertise_raft: String,
    metrics_listen: Option<SocketAddr>,
    peers: Vec<PeerConfig>,
    tuning: Tuning,
    server: ServerConfig,
}

fn resolve(config: NodeConfig) -> Result<Resolved> {
    let id = config.id.context("the node id is not set: give `id = N` in the config file or --id")?;
    if id == 0 {
        bail!("node id 0 is not allowed: ids start at 1");
    }
    let data_dir = config.data_dir.context("the data directory is not set: give `data_dir` or --data-dir")?;
    let listen = config.listen.context("the API address is not set: give `listen = \"host:port\"` or --listen")?;
    let raft_listen = config
        .raft_listen
        .context("the Raft address is not set: give `raft_listen = \"host:port\"` or --raft-listen")?;
    let mut seen = BTreeMap::new();
    for peer in &config.peers {
        if peer.id == 0 {
            bail!("peers: node id 0 is not allowed");
        }
        if seen.insert(peer.id, peer).is_some() {
            bail!("peers: node id {} is listed twice", peer.id);
        }
    }
    if !config.peers.is_empty() && !seen.contains_key(&id) {
        bail!("peers: this node (id {id}) must be in its own peer list");
    }
    let expire_to = match config.presence.expire_to.as_str() {
        "offline" => AgentStatus::Offline,
        "away" => AgentStatus::Away,
        other => bail!("presence.expire_to: {other:?} is not \"offline\" or \"away\""),
    };
    let raft = &config.raft;
    if raft.election_timeout_min_ms >= raft.election_timeout_max_ms || raft.heartbeat_ms >= raft.election_timeout_min_ms
    {
        bail!(
            "raft: need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms (got {} < {} < {})",
            raft.heartbeat_ms,
            raft.election_timeout_min_ms,
            raft.election_timeout_max_ms
        );
    }
    let tuning = Tuning {
        heartbeat_interval: Duration::from_millis(raft.heartbeat_ms),
        election_timeout: (
            Duration::from_millis(raft.election_timeout_min_ms),
            Duration::from_millis(raft.election_timeout_max_ms),
        ),
        snapshot_every_entries: raft.snapshot_every_entries,
        keep_entries_after_snapshot: raft.keep_entries_after_snapshot,
        ..Tuning::default()
    };
    let nats = match &config.nats {
        None => None,
        Some(section) => {
            if section.url.is_empty() {
                bail!("nats.url is empty: give the NATS server URL or remove the [nats] table");
            }
            if section.stream_replicas == 0 || section.batch_max == 0 || section.max_ack_pending <= 0 {
                bail!("nats: stream_replicas, batch_max and max_ack_pending must be at least 1");
            }
            let ack_wait = Duration::from_secs(section.ack_wait_s.max(1));
            Some(NatsConfig {
                url: section.url.clone(),
                stream_replicas: section.stream_replicas,
                duplicate_window: Duration::from_secs(section.duplicate_window_s),
                effects_max_age: Duration::from_secs(section.effects_max_age_s),
                max_ack_pending: section.max_ack_pending,
                ack_wait,
                redelivery_backoff: vec![ack_wait, ack_wait * 2, ack_wait * 4],
                batch_max: section.batch_max,
                batch_linger: Duration::from_millis(section.batch_linger_ms),
                max_event_bytes: section.max_event_bytes,
                ..NatsConfig::default()
            })
        }
    };
    let server = ServerConfig {
        nats,
        presence: PresenceConfig {
            heartbeat_timeout: Duration::from_millis(config.presence.heartbeat_timeout_ms),
            expire_to,
        },
        watch_retained_effects: config.api.watch_retained_effects,
        max_request_bytes: config.api.max_request_bytes,
        ..ServerConfig::default()
    };
    Ok(Resolved {
        id,
        data_dir,
        advertise_api: config.advertise_api.unwrap_or_else(|| listen.to_string()),
        advertise_raft: config.advertise_raft.unwrap_or_else(|| raft_listen.to_string()),
        listen,
        raft_listen,
        metrics_listen: config.metrics_listen,
        peers: config.peers,
        tuning,
        server,
    })
}

/// Runs a node until SIGINT or SIGTERM, then stops the API gracefully and Raft.
pub(crate) async fn run(args: NodeArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::read(path)?,
        None => NodeConfig::default(),
    };
    config.apply(&args);
    let config = resolve(config)?;
    if let Some(addr) = config.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            .context("metrics buckets")?
            .install()
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
    }
    let api_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.listen))?;
    let node = RaftNode::start(RaftNodeConfig {
        id: config.id,
        data_dir: config.data_dir.clone(),
        listen: config.raft_listen,
        advertise: Some(config.advertise_raft.clone()),
        api_addr: config.advertise_api.clone(),
        tuning: config.tuning.clone(),
        faults: None,
    })
    .await
    .with_context(|| format!("node {} could not start", config.id))?;
    let node = Arc::new(node);
    tracing::info!(id = config.id, api = %config.advertise_api, raft = %config.advertise_raft, data = %config.data_dir.display(), "node started");
    if let Some(lowest) = config.peers.iter().map(|p| p.id).min()
        && lowest == config.id
    {
        let members =
            config.peers.iter().map(|p| (p.id, NodeInfo::new(p.raft_addr.clone(), p.api_addr.clone()))).collect();
        match node.initialize(members).await {
            Ok(()) => tracing::info!(members = config.peers.len(), "initialised a new cluster"),
            Err(switchboard_raft::MembershipError::AlreadyInitialized) => {}
            Err(error) => return Err(error).context("could not initialise the cluster"),
        }
    }
    let (stop_sender, stop_receiver) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchboard_server::serve(node.clone(), api_listener, config.server, async move {
        let _ = stop_receiver.await;
    }));
    shutdown_signal().await;
    tracing::info!("stopping: draining API calls");
    let _ = stop_sender.send(());
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "API server stopped with an error"),
        Ok(Err(error)) => tracing::warn!(%error, "API server task failed"),
        Err(_) => tracing::warn!("API calls did not finish within 10 s"),
    }
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Resolved> {
        resolve(toml::from_str(text).context("parse")?)
    }

    #[test]
    fn the_shipped_example_resolves() {
        let text = include_str!("../../../deploy/node.example.toml");
        let resolved = parse(text).expect("example config");
        assert_eq!(resolved.id, 1);
        assert_eq!(resolved.peers.len(), 3);
        assert_eq!(resolved.advertise_api, "sb-1.internal:7101");
        assert_eq!(resolved.server.presence.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(resolved.tuning.heartbeat_interval, Tuning::default().heartbeat_interval);
        assert_eq!(resolved.tuning.election_timeout, Tuning::default().election_timeout);
    }

    #[test]
    fn the_shipped_alert_rules_are_well_formed() {
        let rules: serde_norway::Value =
            serde_norway::from_str(include_str!("../../../deploy/prometheus/alerts.yml")).expect("alerts.yml is YAML");
        let rules = rules["groups"][0]["rules"].as_sequence().expect("groups[0].rules");
        assert!(rules.len() >= 5);
        for rule in rules {
            let name = rule["alert"].as_str().expect("every rule is named");
            assert!(rule["expr"].as_str().is_some_and(|e| e.contains("switchboard_")), "{name}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name} has a summary");
        }
    }

    #[test]
    fn incomplete_or_inconsistent_configs_say_what_is_wrong() {
        let base = "id = 2\ndata_dir = \"d\"\nlisten = \"127.0.0.1:1\"\nraft_listen = \"127.0.0.1:2\"\n";
        let error = |text: &str| format!("{:#}", parse(text).err().expect("must be refused"));
        assert!(error("data_dir = \"d\"").contains("node id is not set"));
        assert!(error(&base.replace("id = 2", "id = 0")).contains("id 0"));
        assert!(
            error(&format!("{base}[[peers]]\nid = 1\nraft_addr = \"a\"\napi_addr = \"b\"\n")).contains("own peer list")
        );
        assert!(error(&format!("{base}[presence]\nexpire_to = \"gone\"\n")).contains("presence.expire_to"));
        assert!(error(&format!("{base}[raft]\nheartbeat_ms = 900\n")).contains("heartbeat_ms <"));
        assert!(error(&format!("{base}colour = 1\n")).contains("colour"));
        assert!(parse(base).is_ok());
    }
}

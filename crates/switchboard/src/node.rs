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
use switchboard_client::gateway::{NatsAuth, NatsSecurity};
use switchboard_core::AgentStatus;
use switchboard_nats::NatsConfig;
use switchboard_raft::{NodeInfo, RaftNode, RaftNodeConfig, Tuning};
use switchboard_server::auth::{Authenticator, CredentialSpec, Credentials, RateLimit};
use switchboard_server::{PresenceConfig, ServerConfig};
use switchboard_tls::{NodeTls, TlsFiles};

/// `switchboard node` flags. Each overrides the same setting of the config file.
#[derive(Args, Debug, Default)]
pub(crate) struct NodeArgs {
    /// The node's TOML configuration file (see deploy/node.example.toml).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// This node's id: unique in the cluster, stable across restarts, 1 to 2^64-1.
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
    /// What clients dial for this node's API (host:port), when `listen` is a wildcard or NATed.
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_API")]
    pub(crate) advertise_api: Option<String>,
    /// What peers dial for this node's Raft service (host:port).
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_RAFT")]
    pub(crate) advertise_raft: Option<String>,
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
    /// 0: events stay forever.
    pub(crate) events_max_age_s: u64,
    pub(crate) max_ack_pending: i64,
    pub(crate) ack_wait_s: u64,
    pub(crate) batch_max: usize,
    pub(crate) batch_linger_ms: u64,
    pub(crate) max_event_bytes: usize,
    /// Credentials: `user` with `password`, or `token`, or `nkey_seed_file`, or `creds_file`.
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) nkey_seed_file: Option<PathBuf>,
    pub(crate) creds_file: Option<PathBuf>,
    /// The CA of the NATS servers' certificates; given, the connection requires TLS.
    pub(crate) tls_ca_file: Option<PathBuf>,
}

impl Default for NatsSection {
    fn default() -> Self {
        let config = NatsConfig::default();
        Self {
            url: config.url,
            stream_replicas: config.stream_replicas,
            duplicate_window_s: config.duplicate_window.as_secs(),
            effects_max_age_s: config.effects_max_age.as_secs(),
            events_max_age_s: config.events_max_age.map_or(0, |age| age.as_secs()),
            max_ack_pending: config.max_ack_pending,
            ack_wait_s: config.ack_wait.as_secs(),
            batch_max: config.batch_max,
            batch_linger_ms: config.batch_linger.as_millis() as u64,
            max_event_bytes: config.max_event_bytes,
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_ca_file: None,
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

/// The `[tls]` table: the node's certificate and key and the cluster CA. With it the public API
/// serves TLS and the Raft peer port requires mutual TLS (certificates naming `node-<id>`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) ca_file: PathBuf,
}

/// The `[auth]` table: the tokens this node accepts (see `switchboard ctl token create`).
/// Without it the public API is open.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    #[serde(default)]
    pub(crate) tokens: Vec<TokenEntry>,
    /// Client certificates (signed by the cluster CA of `[tls]`) that stand for a credential.
    #[serde(default)]
    pub(crate) certificates: Vec<CertificateEntry>,
    /// Sustained calls per second each token may make.
    #[serde(default = "default_calls_per_s")]
    pub(crate) calls_per_s: u64,
    /// Calls a token may make at once after being idle.
    #[serde(default = "default_burst_calls")]
    pub(crate) burst_calls: u64,
}

fn default_calls_per_s() -> u64 {
    RateLimit::default().calls_per_s.into()
}

fn default_burst_calls() -> u64 {
    RateLimit::default().burst_calls.into()
}

/// One `[[auth.certificates]]` entry: a client certificate carrying the DNS name
/// `certificate_name` acts with this role, workspaces and agent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateEntry {
    pub(crate) id: String,
    pub(crate) certificate_name: String,
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) workspaces: Vec<String>,
    pub(crate) agent: Option<String>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenEntry {
    pub(crate) id: String,
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) workspaces: Vec<String>,
    pub(crate) agent: Option<String>,
    pub(crate) sha256: String,
}

impl AuthSection {
    fn rate_limit(&self) -> Result<RateLimit> {
        let calls_per_s = ranges::CALLS_PER_S.check("auth.calls_per_s", self.calls_per_s)?;
        let burst_calls = ranges::BURST_CALLS.check("auth.burst_calls", self.burst_calls)?;
        // Both ranges end below 2^32.
        Ok(RateLimit { calls_per_s: calls_per_s as u32, burst_calls: burst_calls as u32 })
    }

    fn credentials(&self) -> Result<Credentials> {
        let tokens: Vec<CredentialSpec> = self
            .tokens
            .iter()
            .map(|t| CredentialSpec {
                id: t.id.clone(),
                role: t.role.clone(),
                workspaces: t.workspaces.clone(),
                agent: t.agent.clone(),
                sha256: t.sha256.clone(),
                certificate_name: None,
            })
            .collect();
        let certificates: Vec<CredentialSpec> = self
            .certificates
            .iter()
            .map(|c| CredentialSpec {
                id: c.id.clone(),
                role: c.role.clone(),
                workspaces: c.workspaces.clone(),
                agent: c.agent.clone(),
                sha256: String::new(),
                certificate_name: Some(c.certificate_name.clone()),
            })
            .collect();
        Ok(Credentials::with_certificates(&tokens, &certificates)?)
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
    pub(crate) auth: Option<AuthSection>,
    pub(crate) tls: Option<TlsSection>,
}

impl NodeConfig {
    /// Reads `path`, naming the file and the bad key on error.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        use std::io::Read as _;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(text_limits::CONFIG_FILE_BYTES_MAX + 1).read_to_string(&mut text))
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        if text.len() as u64 > text_limits::CONFIG_FILE_BYTES_MAX {
            bail!(
                "config file {}: over {} bytes (config_file_bytes_max)",
                path.display(),
                text_limits::CONFIG_FILE_BYTES_MAX
            );
        }
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
        if let Some(addr) = &args.advertise_api {
            self.advertise_api = Some(addr.clone());
        }
        if let Some(addr) = &args.advertise_raft {
            self.advertise_raft = Some(addr.clone());
        }
    }
}

/// The allowed values of one numeric key, in the unit its name ends with. Every numeric key of
/// the configuration has one (`deploy/node.example.toml` documents them), so that no value can
/// overflow a computation at start-up or ask for something absurd; a value outside is refused
/// with the key, the value and the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) min: u64,
    pub(crate) max: u64,
    /// The unit, spelled out for the message (`milliseconds`, `bytes`, ...).
    pub(crate) unit: &'static str,
}

impl Range {
    const fn new(min: u64, max: u64, unit: &'static str) -> Self {
        Self { min, max, unit }
    }

    /// `value` as a `u64` if it lies in the range, else an error naming `key`.
    fn check<T>(self, key: &str, value: T) -> Result<u64>
    where
        T: Copy + std::fmt::Display + TryInto<u64>,
    {
        match value.try_into() {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => bail!("{key} = {value} is out of range: {self}"),
        }
    }

    /// [`Range::check`] for a key where 0 means `zero` (off, forever): `None` for 0.
    fn check_or_zero(self, key: &str, value: u64, zero: &str) -> Result<Option<u64>> {
        if value == 0 {
            return Ok(None);
        }
        if !(self.min..=self.max).contains(&value) {
            bail!("{key} = {value} is out of range: 0 ({zero}), or {self}");
        }
        Ok(Some(value))
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.max == u64::MAX {
            write!(f, "it must be at least {} ({})", self.min, self.unit)
        } else {
            write!(f, "allowed {} to {} ({})", self.min, self.max, self.unit)
        }
    }
}

/// The byte limits of the node configuration's text.
pub(crate) mod text_limits {
    /// The whole config file.
    pub(crate) const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
    /// `nats.user`, `nats.password` and `nats.token`.
    pub(crate) const NATS_CREDENTIAL_BYTES_MAX: usize = 4096;
    /// `nats.nkey_seed_file`, `nats.creds_file` and `nats.tls_ca_file` (Linux's `PATH_MAX`).
    pub(crate) const PATH_BYTES_MAX: usize = 4096;
}

/// Refuses `value` of `key` if it is longer than `max` bytes (`limit` names the limit). The
/// message gives lengths only, never the value: it may be a secret.
fn check_bytes(key: &str, value: &str, max: usize, limit: &str) -> Result<()> {
    if value.len() > max {
        bail!("{key}: {} bytes; at most {max} ({limit})", value.len());
    }
    Ok(())
}

/// The ranges of the node configuration, one per numeric key (`node.example.toml` repeats them).
pub(crate) mod ranges {
    use super::Range;

    /// `id` and `peers[].id`. Zero is openraft's "no node".
    pub(crate) const NODE_ID: Range = Range::new(1, u64::MAX, "node id");
    /// `presence.heartbeat_timeout_ms` when not 0 (off): a second to a day.
    pub(crate) const HEARTBEAT_TIMEOUT_MS: Range = Range::new(1_000, 86_400_000, "milliseconds");
    /// `raft.heartbeat_ms`; must also stay below `election_timeout_min_ms`.
    pub(crate) const RAFT_HEARTBEAT_MS: Range = Range::new(10, 10_000, "milliseconds");
    /// `raft.election_timeout_min_ms`; must stay below `election_timeout_max_ms`.
    pub(crate) const ELECTION_TIMEOUT_MIN_MS: Range = Range::new(20, 60_000, "milliseconds");
    /// `raft.election_timeout_max_ms`.
    pub(crate) const ELECTION_TIMEOUT_MAX_MS: Range = Range::new(30, 120_000, "milliseconds");
    /// `raft.snapshot_every_entries`.
    pub(crate) const SNAPSHOT_EVERY_ENTRIES: Range = Range::new(100, 100_000_000, "log entries");
    /// `raft.keep_entries_after_snapshot`.
    pub(crate) const KEEP_ENTRIES_AFTER_SNAPSHOT: Range = Range::new(0, 100_000_000, "log entries");
    /// `api.max_request_bytes`: a write forwarded to the leader must fit in one peer message.
    pub(crate) const MAX_REQUEST_BYTES: Range =
        Range::new(1024, (switchboard_raft::MAX_PEER_MESSAGE_BYTES / 2) as u64, "bytes");
    /// `api.watch_retained_effects`.
    pub(crate) const WATCH_RETAINED_EFFECTS: Range = Range::new(1, 10_000_000, "effects");
    /// `nats.stream_replicas`: JetStream keeps at most 5 replicas.
    pub(crate) const STREAM_REPLICAS: Range = Range::new(1, 5, "replicas");
    /// `nats.duplicate_window_s`; must not exceed `effects_max_age_s` (JetStream refuses a
    /// duplicate window longer than the stream's maximum age).
    pub(crate) const DUPLICATE_WINDOW_S: Range = Range::new(1, 604_800, "seconds");
    /// `nats.effects_max_age_s`: a minute to a year.
    pub(crate) const EFFECTS_MAX_AGE_S: Range = Range::new(60, 31_536_000, "seconds");
    /// `nats.events_max_age_s` when not 0 (forever): an hour to ten years; not below
    /// `duplicate_window_s` (JetStream's rule, as for effects).
    pub(crate) const EVENTS_MAX_AGE_S: Range = Range::new(3_600, 315_360_000, "seconds");
    /// `nats.max_ack_pending`.
    pub(crate) const MAX_ACK_PENDING: Range = Range::new(1, 1_000_000, "events");
    /// `auth.calls_per_s`: each token's sustained rate of calls.
    pub(crate) const CALLS_PER_S: Range = Range::new(1, 1_000_000, "calls per second");
    /// `auth.burst_calls`: each token's calls at once after being idle.
    pub(crate) const BURST_CALLS: Range = Range::new(1, 10_000_000, "calls");
    /// `nats.ack_wait_s`: redeliveries back off to 4 times this. Below the default workspace
    /// `dedupe_window_s`: exactly once rests on the event-id dedupe, so an event whose ack was
    /// lost must be redelivered while its workspace still remembers the id.
    pub(crate) const ACK_WAIT_S: Range = Range::new(
        1,
        switchboard_core::WorkspaceSettings::DEFAULT_DEDUPE_WINDOW_S as u64 - 1,
        "seconds; below the default workspace dedupe_window_s, so that a redelivered event is recognised",
    );
    /// `nats.batch_max`: one Raft proposal carries at most this many inputs.
    pub(crate) const BATCH_MAX: Range =
        Range::new(1, switchboard_raft::MAX_INPUTS_PER_PROPOSAL as u64, "events per proposal");
    /// `nats.batch_linger_ms`.
    pub(crate) const BATCH_LINGER_MS: Range = Range::new(0, 1_000, "milliseconds");
    /// `nats.max_event_bytes`: a batch of events plus one more must fit one Raft write
    /// (`switchboard_raft::WRITE_BYTES_MAX`), so one event is at most 128 KiB.
    pub(crate) const MAX_EVENT_BYTES: Range = Range::new(256, 128 * 1024, "bytes");
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
    /// TLS of the peer port (the same material as the API's, in `server.tls`).
    tls: Option<Arc<NodeTls>>,
    /// NATS ingest and egress; `None` serves gRPC only.
    nats: Option<NatsConfig>,
}

fn resolve(config: NodeConfig) -> Result<Resolved> {
    let id = config.id.context("the node id is not set: give `id = N` in the config file or --id")?;
    ranges::NODE_ID.check("id", id)?;
    let data_dir = config.data_dir.context("the data directory is not set: give `data_dir` or --data-dir")?;
    let listen = config.listen.context("the API address is not set: give `listen = \"host:port\"` or --listen")?;
    let raft_listen = config
        .raft_listen
        .context("the Raft address is not set: give `raft_listen = \"host:port\"` or --raft-listen")?;
    if config.peers.len() > switchboard_raft::MEMBERS_COUNT_MAX {
        bail!(
            "peers: {} nodes; at most {} (members_count_max)",
            config.peers.len(),
            switchboard_raft::MEMBERS_COUNT_MAX
        );
    }
    let addresses = config.peers.iter().enumerate().flat_map(|(i, peer)| {
        [(format!("peers[{i}].raft_addr"), &peer.raft_addr), (format!("peers[{i}].api_addr"), &peer.api_addr)]
    });
    for (key, addr) in
        [("advertise_api".to_owned(), &config.advertise_api), ("advertise_raft".to_owned(), &config.advertise_raft)]
            .into_iter()
            .filter_map(|(key, addr)| addr.as_ref().map(|addr| (key, addr)))
            .chain(addresses)
    {
        if addr.len() > switchboard_raft::NODE_ADDR_BYTES_MAX {
            bail!(
                "{key}: {} bytes; at most {} (node_addr_bytes_max)",
                addr.len(),
                switchboard_raft::NODE_ADDR_BYTES_MAX
            );
        }
    }
    let mut seen = BTreeMap::new();
    for (i, peer) in config.peers.iter().enumerate() {
        ranges::NODE_ID.check(&format!("peers[{i}].id"), peer.id)?;
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
    let heartbeat_timeout_ms = ranges::HEARTBEAT_TIMEOUT_MS
        .check_or_zero("presence.heartbeat_timeout_ms", config.presence.heartbeat_timeout_ms, "supervision off")?
        .unwrap_or(0);
    let tuning = raft_tuning(&config.raft)?;
    let nats = config.nats.as_ref().map(nats_config).transpose()?;
    let api = &config.api;
    let max_request_bytes = ranges::MAX_REQUEST_BYTES.check("api.max_request_bytes", api.max_request_bytes)?;
    let watch_retained_effects =
        ranges::WATCH_RETAINED_EFFECTS.check("api.watch_retained_effects", api.watch_retained_effects)?;
    if config.auth.as_ref().is_some_and(|auth| !auth.certificates.is_empty()) && config.tls.is_none() {
        bail!("auth.certificates: client certificates are only seen over TLS; add a [tls] table");
    }
    let auth = match &config.auth {
        Some(section) => Some(Arc::new(Authenticator::with_rate_limit(section.credentials()?, section.rate_limit()?))),
        None => None,
    };
    let tls = match &config.tls {
        Some(section) => Some(
            NodeTls::load(TlsFiles {
                cert_file: section.cert_file.clone(),
                key_file: section.key_file.clone(),
                ca_file: section.ca_file.clone(),
            })
            .context("tls")?,
        ),
        None => None,
    };
    let server = ServerConfig {
        tls: tls.clone(),
        auth,
        presence: PresenceConfig { heartbeat_timeout: Duration::from_millis(heartbeat_timeout_ms), expire_to },
        // Both fit in usize: their ranges are below 2^32.
        watch_retained_effects: watch_retained_effects as usize,
        max_request_bytes: max_request_bytes as usize,
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
        tls,
        nats,
    })
}

/// The `[raft]` table checked key by key, then for limits that must fit together.
fn raft_tuning(raft: &RaftSection) -> Result<Tuning> {
    let heartbeat_ms = ranges::RAFT_HEARTBEAT_MS.check("raft.heartbeat_ms", raft.heartbeat_ms)?;
    let election_min_ms =
        ranges::ELECTION_TIMEOUT_MIN_MS.check("raft.election_timeout_min_ms", raft.election_timeout_min_ms)?;
    let election_max_ms =
        ranges::ELECTION_TIMEOUT_MAX_MS.check("raft.election_timeout_max_ms", raft.election_timeout_max_ms)?;
    if heartbeat_ms >= election_min_ms || election_min_ms >= election_max_ms {
        bail!(
            "raft: need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms (got {heartbeat_ms} < \
             {election_min_ms} < {election_max_ms}): a follower must hear several heartbeats before it calls an \
             election"
        );
    }
    let snapshot_every_entries =
        ranges::SNAPSHOT_EVERY_ENTRIES.check("raft.snapshot_every_entries", raft.snapshot_every_entries)?;
    let keep_entries_after_snapshot = ranges::KEEP_ENTRIES_AFTER_SNAPSHOT
        .check("raft.keep_entries_after_snapshot", raft.keep_entries_after_snapshot)?;
    Ok(Tuning {
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        election_timeout: (Duration::from_millis(election_min_ms), Duration::from_millis(election_max_ms)),
        snapshot_every_entries,
        keep_entries_after_snapshot,
        ..Tuning::default()
    })
}

/// The `[nats]` table checked key by key, then for limits that must fit together.
fn nats_config(section: &NatsSection) -> Result<NatsConfig> {
    if section.url.is_empty() {
        bail!("nats.url is empty: give the NATS server URL or remove the [nats] table");
    }
    for (key, value) in
        [("nats.user", &section.user), ("nats.password", &section.password), ("nats.token", &section.token)]
    {
        if let Some(value) = value {
            check_bytes(key, value, text_limits::NATS_CREDENTIAL_BYTES_MAX, "nats_credential_bytes_max")?;
        }
    }
    for (key, path) in [
        ("nats.nkey_seed_file", &section.nkey_seed_file),
        ("nats.creds_file", &section.creds_file),
        ("nats.tls_ca_file", &section.tls_ca_file),
    ] {
        if let Some(path) = path {
            check_bytes(key, &path.to_string_lossy(), text_limits::PATH_BYTES_MAX, "path_bytes_max")?;
        }
    }
    if let Err(error) = switchboard_nats::server_addrs(&section.url) {
        bail!("nats.url: {error}");
    }
    let stream_replicas = ranges::STREAM_REPLICAS.check("nats.stream_replicas", section.stream_replicas)?;
    let duplicate_window_s = ranges::DUPLICATE_WINDOW_S.check("nats.duplicate_window_s", section.duplicate_window_s)?;
    let effects_max_age_s = ranges::EFFECTS_MAX_AGE_S.check("nats.effects_max_age_s", section.effects_max_age_s)?;
    let events_max_age_s = ranges::EVENTS_MAX_AGE_S.check_or_zero(
        "nats.events_max_age_s",
        section.events_max_age_s,
        "keep events forever",
    )?;
    for (key, max_age_s) in [("effects_max_age_s", Some(effects_max_age_s)), ("events_max_age_s", events_max_age_s)] {
        if let Some(max_age_s) = max_age_s
            && duplicate_window_s > max_age_s
        {
            bail!(
                "nats: duplicate_window_s ({duplicate_window_s}) must not exceed {key} ({max_age_s}): \
                 JetStream refuses a duplicate window longer than the stream keeps messages"
            );
        }
    }
    let max_ack_pending = ranges::MAX_ACK_PENDING.check("nats.max_ack_pending", section.max_ack_pending)?;
    let ack_wait = Duration::from_secs(ranges::ACK_WAIT_S.check("nats.ack_wait_s", section.ack_wait_s)?);
    let batch_max = ranges::BATCH_MAX.check("nats.batch_max", section.batch_max)?;
    let batch_linger_ms = ranges::BATCH_LINGER_MS.check("nats.batch_linger_ms", section.batch_linger_ms)?;
    let max_event_bytes = ranges::MAX_EVENT_BYTES.check("nats.max_event_bytes", section.max_event_bytes)?;
    let auth = match (&section.user, &section.password, &section.token, &section.nkey_seed_file, &section.creds_file) {
        (None, None, None, None, None) => NatsAuth::None,
        (Some(user), Some(password), None, None, None) => {
            NatsAuth::UserPassword { user: user.clone(), password: password.clone() }
        }
        (None, None, Some(token), None, None) => NatsAuth::Token(token.clone()),
        (None, None, None, Some(seed), None) => NatsAuth::NkeySeedFile(seed.clone()),
        (None, None, None, None, Some(creds)) => NatsAuth::CredsFile(creds.clone()),
        (Some(_), None, ..) | (None, Some(_), None, None, None) => {
            bail!("nats: user and password go together; give both or neither")
        }
        _ => bail!("nats: give one kind of credentials: user and password, token, nkey_seed_file or creds_file"),
    };
    for (key, path) in [
        ("nats.nkey_seed_file", &section.nkey_seed_file),
        ("nats.creds_file", &section.creds_file),
        ("nats.tls_ca_file", &section.tls_ca_file),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            bail!("{key} = {:?}: no such file", path.display().to_string());
        }
    }
    let security = NatsSecurity { auth, tls_ca_file: section.tls_ca_file.clone(), inbox_prefix: None };
    Ok(NatsConfig {
        security,
        url: section.url.clone(),
        // Every value below is within its range, far below the limits of the target types.
        stream_replicas: stream_replicas as usize,
        duplicate_window: Duration::from_secs(duplicate_window_s),
        effects_max_age: Duration::from_secs(effects_max_age_s),
        events_max_age: events_max_age_s.map(Duration::from_secs),
        max_ack_pending: max_ack_pending as i64,
        ack_wait,
        // At most 40 minutes (ack_wait_s < 600): no overflow.
        redelivery_backoff: vec![ack_wait, ack_wait * 2, ack_wait * 4],
        batch_max: batch_max as usize,
        batch_linger: Duration::from_millis(batch_linger_ms),
        max_event_bytes: max_event_bytes as usize,
        ..NatsConfig::default()
    })
}

/// Serves Prometheus metrics on `addr`. Gauges not set for a minute are dropped, which is how
/// the series of a removed workspace or team go away (every gauge is set again every few
/// seconds while it means something). Histograms get buckets that fit what they measure.
fn install_exporter(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use switchboard_raft::metrics as raft;
    use switchboard_server::metrics as server;
    let full = |name: &str| Matcher::Full(name.to_owned());
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(Duration::from_secs(60)))
        .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])?
        .set_buckets_for_metric(
            full(raft::APPLY_SECONDS),
            &[0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.05, 0.25],
        )?
        .set_buckets_for_metric(
            full(raft::RAFT_APPEND_SECONDS),
            &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5],
        )?
        .set_buckets_for_metric(
            full(raft::SNAPSHOT_SECONDS),
            &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0],
        )?
        .set_buckets_for_metric(
            full(raft::PROPOSAL_BATCH_ENTRIES),
            &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0],
        )?
        .set_buckets_for_metric(
            full(server::QUEUE_WAIT_SECONDS),
            &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14_400.0],
        )?
        .set_buckets_for_metric(
            full(server::GRPC_REQUEST_SECONDS),
            &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0],
        )?
        .install()
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
        install_exporter(addr).with_context(|| format!("cannot serve metrics on {addr}"))?;
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
        tls: config.tls.clone(),
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
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let stop_receiver_for_tls = stop.clone();
    let stopped = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };
    let auth = config.server.auth.clone();
    let mut server = tokio::spawn(switchboard_server::serve(node.clone(), api_listener, config.server, stopped()));
    // NATS ingest and egress (or, without NATS, releasing the outbox) beside the API; stopped
    // with it, and waited for before the Raft node shuts down.
    let edge = tokio::spawn(switchboard_nats::run_edge(node.clone(), config.nats, stopped()));
    // The node runs until it is told to stop, or until something it cannot live without stops
    // for good. In the second case it exits non-zero with the reason, so that the supervisor
    // (systemd, Kubernetes) restarts it and alerts fire; a node that stayed up without its
    // Raft core would answer health checks and serve nothing.
    // SIGHUP re-reads the tokens of the configuration file: a token removed there is refused
    // from then on, without a restart.
    let reloading = tokio::spawn(reload_on_sighup(args.config.clone(), auth, config.tls.clone()));
    // Certificates are also reloaded when their files change (a renewal by cert-manager or
    // certbot needs no signal).
    let watching = config.tls.clone().map(|tls| {
        let mut stop = stop_receiver_for_tls.clone();
        tokio::spawn(tls.reload_on_change(TLS_FILE_CHECK_INTERVAL, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }))
    });
    let failure = tokio::select! {
        () = shutdown_signal() => None,
        reason = raft_core_stopped(&node) => {
            Some(format!("the Raft core of node {} stopped: {reason}", config.id))
        }
        served = &mut server => Some(match served {
            Ok(Ok(())) => "the API server stopped on its own".to_owned(),
            Ok(Err(error)) => format!("the API server failed: {error}"),
            Err(error) => format!("the API server task failed: {error}"),
        }),
    };
    match &failure {
        None => tracing::info!("stopping: draining API calls"),
        Some(reason) => tracing::error!(%reason, "stopping: this node cannot serve any more"),
    }
    let _ = stop_sender.send(true);
    reloading.abort();
    if let Some(watching) = watching {
        watching.abort();
    }
    // Calls in flight get time to finish; after a failure they cannot commit anything, so the
    // wait is short (writes would only run into their own timeout).
    let grace = if failure.is_none() { Duration::from_secs(10) } else { Duration::from_secs(1) };
    if !server.is_finished() {
        match tokio::time::timeout(grace, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "API server stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "API server task failed"),
            Err(_) => tracing::warn!("API calls did not finish within {grace:?}"),
        }
    }
    // The edge bounds its own stop (5 s with NATS unreachable).
    if tokio::time::timeout(EDGE_STOP_GRACE, edge).await.is_err() {
        tracing::warn!("the NATS edge did not stop within {EDGE_STOP_GRACE:?}");
    }
    node.shutdown().await;
    tracing::info!("stopped");
    match failure {
        None => Ok(()),
        Some(reason) => bail!("{reason}"),
    }
}

/// How long a stopping node waits for its NATS edge, which gives its own tasks 5 s.
const EDGE_STOP_GRACE: Duration = Duration::from_secs(10);

/// Resolves when openraft's core has stopped, with the reason. The core reports its end in its
/// metrics (`running_state` becomes the fatal error, the state `Shutdown`); if it ends without
/// a word (a panic drops the metrics sender) that is reported too. An orderly shutdown never
/// gets here: `run` stops watching before it calls `RaftNode::shutdown`.
pub(crate) async fn raft_core_stopped(node: &RaftNode) -> String {
    let mut metrics = node.raft().metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "its task ended without reporting why (it panicked)".to_owned();
        }
    }
}

/// How often a node with `[tls]` checks whether its certificate files changed.
const TLS_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// At every SIGHUP: re-reads the TLS certificate and key, and `[auth]` from `path` into `auth`.
/// A file that no longer parses, or has lost its `[auth]` table, changes nothing (the error is
/// logged): a typo must not open the API or lock everyone out. The same holds for a bad
/// certificate: the old one stays.
async fn reload_on_sighup(path: Option<PathBuf>, auth: Option<Arc<Authenticator>>, tls: Option<Arc<NodeTls>>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            if let Some(tls) = &tls {
                tls.reload_logged("SIGHUP");
            }
            let (Some(path), Some(auth)) = (&path, &auth) else {
                tracing::warn!(
                    "SIGHUP: this node was started without a config file or without [auth]; nothing to reload"
                );
                continue;
            };
            let reloaded = NodeConfig::read(path).and_then(|config| match config.auth {
                Some(section) => section.credentials(),
                None => bail!("[auth] was removed; restart the node to run it without authentication"),
            });
            match reloaded {
                Ok(credentials) => {
                    tracing::info!(tokens = credentials.len(), file = %path.display(), "SIGHUP: tokens reloaded");
                    auth.replace(credentials);
                }
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "SIGHUP: tokens not reloaded; the old ones stay")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, auth, tls);
    }
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
    fn flags_override_the_advertised_addresses() {
        let mut config: NodeConfig = toml::from_str(include_str!("../../../deploy/node.example.toml")).expect("parse");
        config.apply(&NodeArgs {
            id: Some(2),
            advertise_api: Some("sb-2.internal:7101".to_owned()),
            advertise_raft: Some("sb-2.internal:7201".to_owned()),
            ..NodeArgs::default()
        });
        let resolved = resolve(config).expect("resolves");
        let long = format!("{}:7101", "h".repeat(switchboard_raft::NODE_ADDR_BYTES_MAX));
        let mut config: NodeConfig = toml::from_str(include_str!("../../../deploy/node.example.toml")).expect("parse");
        config.apply(&NodeArgs { advertise_api: Some(long), ..NodeArgs::default() });
        let error = format!("{:#}", resolve(config).err().expect("an address too long"));
        assert!(error.contains("advertise_api") && error.contains("node_addr_bytes_max"), "{error}");
        assert_eq!(
            (resolved.advertise_api.as_str(), resolved.advertise_raft.as_str()),
            ("sb-2.internal:7101", "sb-2.internal:7201")
        );
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
        // promtool checks and unit-tests the rules (deploy/prometheus/check.sh); this checks
        // what promtool does not require: a severity to route by and words for the page.
        let groups = rules["groups"].as_sequence().expect("groups");
        let rules: Vec<&serde_norway::Value> =
            groups.iter().flat_map(|group| group["rules"].as_sequence().expect("rules")).collect();
        assert!(rules.len() >= 15, "{} rules", rules.len());
        for rule in rules {
            let name = rule["alert"].as_str().expect("every rule is an alert with a name");
            assert!(rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name} has an expression");
            let severity = rule["labels"]["severity"].as_str();
            assert!(matches!(severity, Some("critical" | "warning")), "{name}: severity {severity:?}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name} has a summary");
            assert!(rule["annotations"]["description"].as_str().is_some(), "{name} has a description");
        }
    }

    #[test]
    fn incomplete_or_inconsistent_configs_say_what_is_wrong() {
        let base = "id = 2\ndata_dir = \"d\"\nlisten = \"127.0.0.1:1\"\nraft_listen = \"127.0.0.1:2\"\n";
        let error = |text: &str| format!("{:#}", parse(text).err().expect("must be refused"));
        assert!(error("data_dir = \"d\"").contains("node id is not set"));
        assert!(error(&base.replace("id = 2", "id = 0")).contains("id = 0 is out of range: it must be at least 1"));
        assert!(
            error(&format!("{base}[[peers]]\nid = 1\nraft_addr = \"a\"\napi_addr = \"b\"\n")).contains("own peer list")
        );
        assert!(error(&format!("{base}[presence]\nexpire_to = \"gone\"\n")).contains("presence.expire_to"));
        assert!(error(&format!("{base}[raft]\nheartbeat_ms = 900\n")).contains("heartbeat_ms <"));
        assert!(error(&format!("{base}colour = 1\n")).contains("colour"));
        assert!(parse(base).is_ok());
    }

    const BASE: &str = "id = 2\ndata_dir = \"d\"\nlisten = \"127.0.0.1:1\"\nraft_listen = \"127.0.0.1:2\"\n";

    /// The config `BASE` plus `key = value` in `table` (empty: the top level).
    fn with(table: &str, key: &str, value: &str) -> String {
        let mut text = BASE.to_owned();
        if !table.is_empty() {
            text.push_str(&format!("[{table}]\n"));
            if table == "nats" {
                text.push_str("url = \"nats://127.0.0.1:4222\"\n");
            }
        }
        text.push_str(&format!("{key} = {value}\n"));
        text
    }

    #[test]
    fn the_ack_wait_that_overflowed_a_duration_is_refused_with_its_range() {
        // This value made `ack_wait * 4` overflow and panic at start-up.
        let text = with("nats", "ack_wait_s", "5000000000000000000");
        let message = format!("{:#}", parse(&text).err().expect("refused"));
        assert_eq!(
            message,
            "nats.ack_wait_s = 5000000000000000000 is out of range: allowed 1 to 599 (seconds; below the default \
             workspace dedupe_window_s, so that a redelivered event is recognised)"
        );
    }

    #[test]
    fn nats_credentials_are_one_kind_and_complete() {
        let error = |extra: &str| {
            format!("{:#}", parse(&with("nats", "max_ack_pending", &format!("10\n{extra}"))).err().expect("refused"))
        };
        assert!(error("user = \"u\"").contains("user and password go together"));
        assert!(error("password = \"p\"").contains("user and password go together"));
        assert!(error("user = \"u\"\npassword = \"p\"\ntoken = \"t\"").contains("one kind of credentials"));
        assert!(
            error("creds_file = \"/nonexistent.creds\"")
                .contains("nats.creds_file = \"/nonexistent.creds\": no such file")
        );
        let ok =
            parse(&with("nats", "max_ack_pending", "10\nuser = \"u\"\npassword = \"p\"")).expect("user and password");
        let nats = ok.nats.expect("nats");
        assert_eq!(nats.security.auth, NatsAuth::UserPassword { user: "u".into(), password: "p".into() });
        assert!(!format!("{:?}", nats.security).contains("\"p\""), "the password must not be printed");
    }

    #[test]
    fn oversized_nats_text_is_refused_naming_the_key_and_never_echoing_it() {
        let error = |extra: &str| {
            format!("{:#}", parse(&with("nats", "max_ack_pending", &format!("10\n{extra}"))).err().expect("refused"))
        };
        let long = "s".repeat(text_limits::NATS_CREDENTIAL_BYTES_MAX + 1);
        let message = error(&format!("user = \"u\"\npassword = \"{long}\""));
        assert_eq!(message, "nats.password: 4097 bytes; at most 4096 (nats_credential_bytes_max)");
        let message = error(&format!("token = \"{long}\""));
        assert_eq!(message, "nats.token: 4097 bytes; at most 4096 (nats_credential_bytes_max)");
        let message = error(&format!("creds_file = \"/{long}\""));
        assert_eq!(message, "nats.creds_file: 4098 bytes; at most 4096 (path_bytes_max)");
        let exact = "s".repeat(text_limits::NATS_CREDENTIAL_BYTES_MAX);
        let ok = parse(&with("nats", "max_ack_pending", &format!("10\ntoken = \"{exact}\""))).expect("at the limit");
        assert_eq!(ok.nats.expect("nats").security.auth, NatsAuth::Token(exact));
    }

    #[test]
    fn events_are_kept_thirty_days_by_default_forever_at_zero_and_never_shorter_than_the_duplicate_window() {
        let nats = |text: &str| parse(text).map(|resolved| resolved.nats.expect("nats").events_max_age);
        let days = |n: u64| Some(Duration::from_secs(n * 24 * 3600));
        assert_eq!(nats(&with("nats", "max_ack_pending", "10")).expect("default"), days(30));
        assert_eq!(nats(&with("nats", "events_max_age_s", "0")).expect("forever"), None);
        assert_eq!(nats(&with("nats", "events_max_age_s", "86400")).expect("a day"), days(1));
        let message = format!("{:#}", nats(&with("nats", "events_max_age_s", "600")).expect_err("too short"));
        assert_eq!(
            message,
            "nats.events_max_age_s = 600 is out of range: 0 (keep events forever), or allowed 3600 to 315360000 \
             (seconds)"
        );
        let text = with("nats", "events_max_age_s", "3600\nduplicate_window_s = 7200\neffects_max_age_s = 86400");
        let message = format!("{:#}", nats(&text).expect_err("window longer than the age"));
        assert!(message.contains("duplicate_window_s (7200) must not exceed events_max_age_s (3600)"), "{message}");
    }

    #[test]
    fn a_config_file_over_its_byte_limit_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node.toml");
        let comment = format!("# {}\n", "x".repeat(1000));
        let body = comment.repeat(text_limits::CONFIG_FILE_BYTES_MAX as usize / comment.len() + 1);
        std::fs::write(&path, format!("id = 1\n{body}")).expect("write");
        let message = format!("{:#}", NodeConfig::read(&path).expect_err("refused"));
        assert!(message.ends_with("over 1048576 bytes (config_file_bytes_max)"), "{message}");
        std::fs::write(&path, "id = 1\n").expect("write");
        assert_eq!(NodeConfig::read(&path).expect("small file").id, Some(1));
    }

    #[test]
    fn an_ack_wait_the_dedupe_window_cannot_cover_is_refused() {
        let message = format!("{:#}", parse(&with("nats", "ack_wait_s", "600")).err().expect("refused"));
        assert!(message.contains("below the default workspace dedupe_window_s"), "{message}");
        assert!(parse(&with("nats", "ack_wait_s", "599")).is_ok());
    }

    #[test]
    fn every_numeric_key_is_refused_just_outside_its_range_and_accepted_at_its_ends() {
        use ranges::*;
        let keys: [(&str, &str, Range); 20] = [
            ("", "id", NODE_ID),
            ("raft", "heartbeat_ms", RAFT_HEARTBEAT_MS),
            ("raft", "election_timeout_min_ms", ELECTION_TIMEOUT_MIN_MS),
            ("raft", "election_timeout_max_ms", ELECTION_TIMEOUT_MAX_MS),
            ("raft", "snapshot_every_entries", SNAPSHOT_EVERY_ENTRIES),
            ("raft", "keep_entries_after_snapshot", KEEP_ENTRIES_AFTER_SNAPSHOT),
            ("api", "max_request_bytes", MAX_REQUEST_BYTES),
            ("api", "watch_retained_effects", WATCH_RETAINED_EFFECTS),
            ("presence", "heartbeat_timeout_ms", HEARTBEAT_TIMEOUT_MS),
            ("nats", "stream_replicas", STREAM_REPLICAS),
            ("nats", "duplicate_window_s", DUPLICATE_WINDOW_S),
            ("nats", "effects_max_age_s", EFFECTS_MAX_AGE_S),
            ("nats", "events_max_age_s", EVENTS_MAX_AGE_S),
            ("nats", "max_ack_pending", MAX_ACK_PENDING),
            ("nats", "ack_wait_s", ACK_WAIT_S),
            ("nats", "batch_max", BATCH_MAX),
            ("nats", "batch_linger_ms", BATCH_LINGER_MS),
            ("nats", "max_event_bytes", MAX_EVENT_BYTES),
            ("auth", "calls_per_s", CALLS_PER_S),
            ("auth", "burst_calls", BURST_CALLS),
        ];
        for (table, key, range) in keys {
            let name = if table.is_empty() { key.to_owned() } else { format!("{table}.{key}") };
            // Values the relations between keys allow at each end of the range.
            let fit = |value: u64| -> String {
                let mut text = with(table, key, &value.to_string());
                match key {
                    "heartbeat_ms" => {
                        text.push_str("election_timeout_min_ms = 20000\nelection_timeout_max_ms = 30000\n")
                    }
                    "election_timeout_min_ms" => {
                        text.push_str("heartbeat_ms = 10\nelection_timeout_max_ms = 120000\n");
                    }
                    "election_timeout_max_ms" => text.push_str("heartbeat_ms = 10\nelection_timeout_min_ms = 20\n"),
                    "duplicate_window_s" => text.push_str("effects_max_age_s = 31536000\n"),
                    "effects_max_age_s" => text.push_str("duplicate_window_s = 1\n"),
                    _ => {}
                }
                if key == "id" { text.replacen("id = 2\n", "", 1) } else { text }
            };
            for value in [range.min, range.max.min(i64::MAX as u64)] {
                assert!(
                    parse(&fit(value)).is_ok(),
                    "{name} = {value} must be accepted: {:?}",
                    parse(&fit(value)).err()
                );
            }
            // TOML integers are i64: larger values cannot even be written.
            let mut outside = Vec::new();
            if range.min > 0 {
                outside.push(range.min - 1);
            }
            if range.max < i64::MAX as u64 {
                outside.push(range.max + 1);
            }
            for value in outside {
                let message =
                    format!("{:#}", parse(&fit(value)).err().unwrap_or_else(|| panic!("{name} = {value} accepted")));
                assert!(message.contains(&format!("{name} = {value} is out of range")), "{message}");
                assert!(message.contains(&range.min.to_string()) && message.contains(range.unit), "{message}");
            }
        }
    }

    #[test]
    fn negative_values_are_refused_by_type_and_limits_that_must_fit_together_are_checked() {
        let error = |text: &str| format!("{:#}", parse(text).err().expect("must be refused"));
        assert!(error(&with("nats", "max_ack_pending", "-1")).contains("nats.max_ack_pending = -1 is out of range"));
        assert!(error(&with("nats", "ack_wait_s", "-1")).contains("ack_wait_s"));
        assert!(
            error(&with("raft", "election_timeout_min_ms", "600")).contains("heartbeat_ms < election_timeout_min_ms")
        );
        assert!(error(&with("nats", "effects_max_age_s", "60")).contains("must not exceed effects_max_age_s"));
        assert!(error(&with("presence", "heartbeat_timeout_ms", "5")).contains("0 (supervision off), or allowed 1000"));
        assert!(parse(&with("presence", "heartbeat_timeout_ms", "0")).is_ok());
        let peers = "[[peers]]\nid = 2\nraft_addr = \"a\"\napi_addr = \"b\"\n[[peers]]\nid = 0\nraft_addr = \"c\"\napi_addr = \"d\"\n";
        assert!(error(&format!("{BASE}{peers}")).contains("peers[1].id = 0 is out of range"));
    }

    #[test]
    fn the_id_flag_is_range_checked_like_the_file() {
        let mut config: NodeConfig = toml::from_str(BASE).expect("parse");
        config.apply(&NodeArgs { id: Some(0), ..NodeArgs::default() });
        let message = format!("{:#}", resolve(config).err().expect("refused"));
        assert!(message.contains("id = 0 is out of range"), "{message}");
    }
}

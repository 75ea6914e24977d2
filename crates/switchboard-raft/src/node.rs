//! A running replica: openraft plus storage, peer server, batcher and ticker, behind one
//! library API for writes, reads, status and membership.

use crate::audit::{Actor, AuditNote, AuditRecord};
use crate::batcher::{self, BatchLimits, Submission, wall_clock_ms};
use crate::error::{LeaderHint, MembershipError, ProposeError, ReadError};
use crate::history::{History, HistoryError};
use crate::log_store::{LogStore, OpenLogError, WeakLogStore};
use crate::network::{PeerCallError, PeerNetwork, PeerPool, PeerRpc, decode, encode};
use crate::outbox::OutboxBacklog;
use crate::service::PeerService;
use crate::state_machine::{Shared, SnapshotFileError, StateChange, StateMachineStore};
use crate::types::{AppliedEntry, InputOutcome, LogId, NodeId, NodeInfo, Raft};
use crate::{FaultPlan, MAX_PEER_MESSAGE_BYTES};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use switchboard_core::{ConversationId, Input, State, WorkspaceId};
use switchboard_proto::raft::v1::raft_peer_server::RaftPeerServer;
use switchboard_tls::NodeTls;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most inputs one write may carry.
pub const MAX_INPUTS_PER_PROPOSAL: usize = 4096;
/// Writes waiting for the batcher, in full entries' worth (`max_batch_inputs` each): beyond
/// it, writers wait for room (back-pressure) instead of queueing without bound.
const BATCHER_QUEUE_ENTRIES: usize = 16;
/// The largest write, in bytes of its encoded inputs. A write is one log entry at least, and
/// an entry must replicate well within one heartbeat interval (openraft 0.9 gives each
/// AppendEntries call exactly that long), or followers time out, call elections and the
/// cluster stops committing.
pub const WRITE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The largest log entry the batcher forms from several writes, in bytes (a single larger
/// write still forms an entry of its own, up to [`WRITE_BYTES_MAX`]).
pub const ENTRY_BYTES_MAX: usize = 512 * 1024;

/// Longest address of a member (`raft_addr`, `api_addr`: a DNS name of up to 253 bytes and a
/// port), in bytes (`node_addr_bytes_max`).
pub const NODE_ADDR_BYTES_MAX: usize = 260;

/// Most members a cluster may have, voters and learners (`members_count_max`).
pub const MEMBERS_COUNT_MAX: usize = 64;

/// `Invalid` unless both addresses of `node` fit [`NODE_ADDR_BYTES_MAX`].
fn check_addresses(id: NodeId, node: &NodeInfo) -> Result<(), MembershipError> {
    for (field, addr) in [("raft_addr", &node.raft_addr), ("api_addr", &node.api_addr)] {
        if addr.len() > NODE_ADDR_BYTES_MAX {
            return Err(MembershipError::Invalid(format!(
                "node {id}: {field} is {} bytes; at most {NODE_ADDR_BYTES_MAX} (node_addr_bytes_max)",
                addr.len()
            )));
        }
    }
    Ok(())
}

/// Timing and batching knobs. The defaults suit a LAN or loopback cluster.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot (and purge the log behind it) every this many entries; node `n` waits
    /// `(n - 1) % 5` tenths longer, so that the nodes of a cluster do not all build at once.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, so that lagging followers need no snapshot
    /// and a conversation's history (`Explain`) reaches back to the previous snapshot: at least
    /// the longest interval between two snapshots of a node keeps that whole.
    pub keep_entries_after_snapshot: u64,
    /// Most inputs coalesced into one Raft entry.
    pub max_batch_inputs: usize,
    /// How long the batcher waits for more inputs before submitting a partial entry. Zero
    /// submits at once; batches still form while earlier entries are being committed.
    pub batch_linger: Duration,
    /// Most entries uncommitted at once.
    pub max_in_flight: usize,
    /// The leader proposes a `Tick` when nothing else was proposed for this long.
    pub tick_interval: Duration,
    /// Connect timeout for peer channels.
    pub connect_timeout: Duration,
    /// How long a write or a read may wait for a leader, including forwarding and retries.
    pub request_timeout: Duration,
    /// A whole-state read (a snapshot, the digest of `status`, an export) of a state whose last
    /// snapshot was at least this many bytes runs in a forked child, so that applies wait only
    /// for the fork; a smaller state is read under the lock. `usize::MAX` never forks.
    pub fork_reads_bytes_min: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(250), Duration::from_millis(500)),
            snapshot_every_entries: 20_000,
            // Twice the interval: staggered intervals reach 1.4 × snapshot_every_entries.
            keep_entries_after_snapshot: 40_000,
            max_batch_inputs: 1024,
            batch_linger: Duration::ZERO,
            max_in_flight: 4,
            tick_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            fork_reads_bytes_min: 1 << 20,
        }
    }
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct RaftNodeConfig {
    /// This node's id; unique in the cluster and stable across restarts.
    pub id: NodeId,
    /// Where the log (`raft.redb`) and snapshots (`state/`) live.
    pub data_dir: PathBuf,
    /// Where the peer service listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The peer address other nodes should use, if not the bound address.
    pub advertise: Option<String>,
    /// The public API address recorded in the membership, for leader hints.
    pub api_addr: String,
    /// Timing and batching.
    pub tuning: Tuning,
    /// A fault plan for tests; `None` in production.
    pub faults: Option<Arc<dyn FaultPlan>>,
    /// Mutual TLS on the peer port and for calls to peers: every peer must present a
    /// certificate of the cluster CA naming its node id (`node-<id>`). `None`: plain TCP.
    pub tls: Option<Arc<NodeTls>>,
}

impl RaftNodeConfig {
    /// A node with default tuning, listening on `listen`.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            id,
            data_dir: data_dir.into(),
            listen,
            advertise: None,
            api_addr: String::new(),
            tuning: Tuning::default(),
            faults: None,
            tls: None,
        }
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log database could not be opened.
    #[error(transparent)]
    Log(#[from] OpenLogError),
    /// The snapshot on disk could not be read.
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    /// The peer address could not be bound.
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// openraft refused the configuration derived from the tuning.
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    /// The node's TLS material cannot serve the peer port.
    #[error("peer TLS: {0}")]
    Tls(#[from] switchboard_tls::TlsError),
    /// openraft failed to start.
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
}

/// The state of a replica's outbox (see [`crate::Outbox`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxStats {
    /// Effects waiting to be confirmed published.
    pub effects: usize,
    /// Effects of every entry up to this index are confirmed published.
    pub confirmed: u64,
    /// The replica's applied index.
    pub applied: u64,
    /// The index of the oldest entry in the outbox.
    pub oldest: Option<u64>,
    /// Effects this replica dropped unpublished (over the outbox's bound) since it started.
    pub dropped: u64,
}

/// A write that was committed and applied.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// The log index of the entry that carried it.
    pub index: u64,
    /// The leader's timestamp on the entry (UTC milliseconds).
    pub at_ms: i64,
    /// Position, among all effects of the entry (other writers' included), of the first
    /// effect of these outcomes; with `index` it names each effect uniquely.
    pub first_effect_sequence: u32,
    /// One outcome per input, in order.
    pub outcomes: Vec<InputOutcome>,
}

/// A value read from the state, with the log index it reflects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read<T> {
    /// What the read returned.
    pub value: T,
    /// The last log index applied when it was read.
    pub applied_index: u64,
}

/// A node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// Voting members.
    pub voters: BTreeMap<NodeId, NodeInfo>,
    /// Non-voting members.
    pub learners: BTreeMap<NodeId, NodeInfo>,
    /// Index of the last entry in this node's log.
    pub last_log_index: u64,
    /// The highest index this node knows to be committed.
    pub commit_index: u64,
    /// The last index applied to the state machine.
    pub applied_index: u64,
    /// The last index covered by this node's snapshot.
    pub snapshot_index: u64,
    /// Hex digest of the applied state; equal on replicas at the same applied index.
    pub state_digest: String,
}

/// Shared by the node handle, the peer service and the background tasks.
pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    sm: Arc<Shared>,
    batcher: mpsc::Sender<Submission>,
    pool: PeerPool,
    tuning: Tuning,
    stopped: AtomicBool,
    committed: Arc<AtomicU64>,
    /// The term in which this node last confirmed its leadership with a quorum (0: never).
    confirmed_term: AtomicU64,
    /// Whether peers come over mutual TLS, so that each call's certificate must name the node
    /// it claims to be.
    pub(crate) peers_authenticated: bool,
    /// Whether the node had a vote when it started (it belonged to a cluster then).
    member_at_start: bool,
    /// The log, read by conversation histories; weak, so that openraft's handle alone keeps
    /// it open.
    log: WeakLogStore,
    /// One conversation history at a time: each restores a snapshot into memory.
    histories: tokio::sync::Semaphore,
}

/// A running Switchboard replica.
pub struct RaftNode {
    inner: Arc<Inner>,
    info: NodeInfo,
    running: std::sync::Mutex<Running>,
}

/// The background tasks of a running node, taken on shutdown.
#[derive(Default)]
struct Running {
    tasks: Vec<JoinHandle<()>>,
    server_stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode").field("id", &self.inner.id).field("info", &self.info).finish_non_exhaustive()
    }
}

/// Opens the log, waiting while a previous incarnation of this node in the same process is
/// still releasing it (a restart right after a shutdown).
async fn open_log(path: PathBuf) -> Result<LogStore, OpenLogError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match LogStore::open(&path) {
            Err(e) if e.is_already_open() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

impl RaftNode {
    /// Opens the node's storage, starts Raft and the peer service. A new node waits to be
    /// initialised ([`RaftNode::initialize`]) or added by a leader; a restarted one rejoins.
    pub async fn start(config: RaftNodeConfig) -> Result<Self, StartError> {
        let RaftNodeConfig { id, data_dir, listen, advertise, api_addr, tuning, faults, tls } = config;
        std::fs::create_dir_all(&data_dir)
            .map_err(|source| StartError::DataDir { path: data_dir.display().to_string(), source })?;
        let mut log = open_log(data_dir.join("raft.redb")).await?;
        let log_reader = log.downgrade();
        let committed = log.committed_index();
        // A node that ever voted or was initialised has a vote: it belongs to a cluster.
        let member = openraft::storage::RaftLogStorage::read_vote(&mut log).await.ok().flatten().is_some();
        let sm = StateMachineStore::open(&data_dir.join("state"))?
            .with_faults(faults.clone())
            .with_fork_reads_bytes_min(tuning.fork_reads_bytes_min);
        let listener = TcpListener::bind(listen).await.map_err(|source| StartError::Listen { addr: listen, source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Listen { addr: listen, source })?;
        let info = NodeInfo { raft_addr: advertise.unwrap_or_else(|| bound.to_string()), api_addr };

        let raft_config = openraft::Config {
            cluster_name: "switchboard".to_owned(),
            heartbeat_interval: millis(tuning.heartbeat_interval),
            election_timeout_min: millis(tuning.election_timeout.0),
            election_timeout_max: millis(tuning.election_timeout.1),
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            max_payload_entries: 64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(staggered(tuning.snapshot_every_entries, id)),
            max_in_snapshot_log_to_keep: tuning.keep_entries_after_snapshot,
            ..Default::default()
        }
        .validate()?;
        let peer_tls = match &tls {
            Some(tls) => Some(tls.peer_server_config()?),
            None => None,
        };
        let pool = PeerPool::new(id, faults, tuning.connect_timeout, tls.clone());
        let shared = Arc::clone(sm.shared());
        let raft = Raft::new(id, Arc::new(raft_config), PeerNetwork::new(pool.clone()), log, sm).await?;

        let (batch_tx, batch_rx) = mpsc::channel(tuning.max_batch_inputs.max(1) * BATCHER_QUEUE_ENTRIES);
        let last_proposed_ms = Arc::new(AtomicI64::new(0));
        let inner = Arc::new(Inner {
            id,
            raft: raft.clone(),
            sm: shared,
            batcher: batch_tx,
            pool,
            tuning: tuning.clone(),
            stopped: AtomicBool::new(false),
            committed,
            confirmed_term: AtomicU64::new(0),
            peers_authenticated: tls.is_some(),
            member_at_start: member,
            log: log_reader,
            histories: tokio::sync::Semaphore::new(1),
        });
        let limits = BatchLimits {
            max_batch_inputs: tuning.max_batch_inputs.max(1),
            max_entry_bytes: ENTRY_BYTES_MAX,
            linger: tuning.batch_linger,
            max_in_flight: tuning.max_in_flight,
            answer_within: tuning.request_timeout,
        };
        let batcher = tokio::spawn(batcher::run(raft, batch_rx, limits, Arc::clone(&last_proposed_ms)));
        let ticker = tokio::spawn(tick(Arc::clone(&inner), last_proposed_ms));
        let confirmer = tokio::spawn(confirm_leadership(Arc::clone(&inner)));
        let observer = tokio::spawn(observe(Arc::clone(&inner)));
        let tasks = vec![batcher, ticker, confirmer, observer];

        let service = RaftPeerServer::new(PeerService { inner: Arc::clone(&inner) })
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let (server_stop, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let router = tonic::transport::Server::builder().add_service(service);
            let stopped = async {
                let _ = stop_rx.await;
            };
            let result = match peer_tls {
                Some(config) => {
                    router.serve_with_incoming_shutdown(switchboard_tls::incoming(listener, config), stopped).await
                }
                None => router.serve_with_incoming_shutdown(switchboard_tls::plain_incoming(listener), stopped).await,
            };
            if let Err(error) = result {
                tracing::error!(node = id, %error, "peer service stopped");
            }
        });
        tracing::info!(node = id, raft_addr = %info.raft_addr, "raft node started");
        let running = Running { tasks, server_stop: Some(server_stop), server: Some(server) };
        Ok(Self { inner, info, running: std::sync::Mutex::new(running) })
    }

    /// Asks this node to build a snapshot now (and purge its log behind it), as it does every
    /// [`Tuning::snapshot_every_entries`]; returns once asked, not once built.
    pub async fn trigger_snapshot(&self) -> Result<(), String> {
        self.inner.raft.trigger().snapshot().await.map_err(|e| e.to_string())
    }

    /// This replica's whole state as a snapshot file, at its applied index (a backup; see
    /// [`crate::restore_snapshot`]). A large state is read from a forked copy, so applies
    /// wait only for the fork.
    pub async fn export_snapshot(&self) -> Result<crate::SnapshotExport, SnapshotFileError> {
        let shared = Arc::clone(&self.inner.sm);
        tokio::task::spawn_blocking(move || shared.export())
            .await
            .map_err(|e| SnapshotFileError::Format(format!("the export task failed: {e}")))?
    }

    /// Every decision about `conversation` this node can re-derive from its snapshots and log,
    /// with the explanation of each routing (see [`crate::history`]). Answers from this
    /// replica's applied state (no leader needed); one history at a time per node, on a
    /// blocking thread, so applies never wait for it.
    pub async fn conversation_history(
        &self,
        workspace: &WorkspaceId,
        conversation: &ConversationId,
    ) -> Result<History, HistoryError> {
        let _slot = self.inner.histories.acquire().await.map_err(|_| HistoryError::Busy)?;
        let inner = Arc::clone(&self.inner);
        let (workspace, conversation) = (workspace.clone(), conversation.clone());
        let log = inner.log.upgrade().ok_or_else(|| HistoryError::Storage("the node has stopped".to_owned()))?;
        tokio::task::spawn_blocking(move || {
            crate::history::conversation_history(&inner.sm, &log, &workspace, &conversation)
        })
        .await
        .map_err(|e| HistoryError::Storage(format!("the history task failed: {e}")))?
    }

    /// Inputs whose apply panicked on this replica since it started: each was refused as an
    /// internal error (see `StateMachineStore`). Anything above zero is a bug to report.
    pub fn apply_panics(&self) -> u64 {
        self.inner.sm.apply_panics()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Where this node can be reached.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// The openraft handle, for metrics and advanced control.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Turns this node into a cluster of `members` (which must include it). Call on exactly one
    /// node of a new cluster; the others learn the membership from it.
    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<(), MembershipError> {
        // A node with a vote or a log already belongs to a cluster. Asked anyway, openraft
        // refuses and logs an ERROR, which a normal restart of the first node must not print.
        let known = self.inner.member_at_start || {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            metrics.current_term > 0 || metrics.last_log_index.is_some()
        };
        if known {
            return Err(MembershipError::AlreadyInitialized);
        }
        let mut members = members;
        members.entry(self.inner.id).or_insert_with(|| self.info.clone());
        if members.len() > MEMBERS_COUNT_MAX {
            return Err(MembershipError::Invalid(format!(
                "{} members; at most {MEMBERS_COUNT_MAX} (members_count_max)",
                members.len()
            )));
        }
        for (id, node) in &members {
            check_addresses(*id, node)?;
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(MembershipError::AlreadyInitialized),
            Err(e) => Err(MembershipError::Failed(e.to_string())),
        }
    }

    /// Adds a non-voting member and, with `wait`, returns once it has caught up with the log
    /// (receiving a snapshot if the log was compacted). Call on the leader.
    pub async fn add_learner(&self, id: NodeId, node: NodeInfo, wait: bool) -> Result<u64, MembershipError> {
        if node.raft_addr.is_empty() {
            return Err(MembershipError::Invalid(format!("node {id} has an empty raft address")));
        }
        check_addresses(id, &node)?;
        let status = self.members_status();
        if status.voters.len() + status.learners.len() >= MEMBERS_COUNT_MAX
            && !status.voters.contains_key(&id)
            && !status.learners.contains_key(&id)
        {
            return Err(MembershipError::Invalid(format!(
                "the cluster has {MEMBERS_COUNT_MAX} members already (members_count_max)"
            )));
        }
        self.inner.raft.add_learner(id, node, wait).await.map(|r| r.log_id.index).map_err(|e| self.membership_error(e))
    }

    /// Makes `voters` the voting members (through joint consensus). Voters not listed are
    /// removed from the cluster; new voters must have been added as learners first.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<u64, MembershipError> {
        if voters.is_empty() {
            return Err(MembershipError::Invalid("the voter set cannot be empty".to_owned()));
        }
        self.inner
            .raft
            .change_membership(voters, false)
            .await
            .map(|r| r.log_id.index)
            .map_err(|e| self.membership_error(e))
    }

    /// Removes learners from the cluster (voters are removed with [`Self::change_membership`]).
    pub async fn remove_learners(&self, ids: BTreeSet<NodeId>) -> Result<u64, MembershipError> {
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await
            .map(|r| r.log_id.index)
            .map_err(|e| self.membership_error(e))
    }

    fn membership_error(&self, error: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> MembershipError {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                MembershipError::NotLeader { leader: self.inner.leader() }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => MembershipError::Invalid(e.to_string()),
            RaftError::Fatal(e) => MembershipError::Failed(e.to_string()),
        }
    }

    /// Commits `inputs` as one unit (they may share an entry with other writers' inputs) and
    /// returns their outcomes. Works on any node: a follower forwards to the leader. Retries
    /// across leader changes until the request timeout, but retries a write whose outcome is
    /// unknown only when every input carries an event id (the state machine drops repeats).
    pub async fn propose(&self, inputs: Vec<Input>) -> Result<Committed, ProposeError> {
        self.propose_as(inputs, None).await
    }

    /// As [`Self::propose`], recording `actor` in the audit trail with each input's outcome.
    pub async fn propose_as(&self, inputs: Vec<Input>, actor: Option<Actor>) -> Result<Committed, ProposeError> {
        let bytes = check_inputs(&inputs)?;
        let idempotent = inputs.iter().all(|input| matches!(input, Input::Event(event) if event.event_id.is_some()));
        let deadline = Instant::now() + self.inner.tuning.request_timeout;
        let mut cut_off = CutOff::default();
        loop {
            if let Some(reason) = cut_off.check(&self.inner) {
                return Err(ProposeError::Unavailable { reason });
            }
            let attempt = match self.inner.leader() {
                // Bounded: a leader that loses its quorum after taking the write never answers.
                Some(leader) if leader.id == self.inner.id => {
                    match tokio::time::timeout_at(deadline, self.inner.submit(inputs.clone(), actor.clone(), bytes))
                        .await
                    {
                        Ok(answer) => answer,
                        Err(_) => Err(ProposeError::Uncertain {
                            reason: "the write was not committed within the request timeout".to_owned(),
                        }),
                    }
                }
                Some(leader) => self.inner.forward_propose(&leader, inputs.clone(), actor.clone(), deadline).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            let error = match attempt {
                Ok(committed) => return Ok(committed),
                Err(ProposeError::Uncertain { reason }) if !idempotent => {
                    return Err(ProposeError::Uncertain { reason });
                }
                Err(e @ (ProposeError::Invalid(_) | ProposeError::ShuttingDown)) => return Err(e),
                Err(e) => e,
            };
            if Instant::now() >= deadline || self.inner.stopped.load(Ordering::Relaxed) {
                return Err(match error {
                    ProposeError::NotLeader { .. } => {
                        ProposeError::Unavailable { reason: "no leader was elected in time".to_owned() }
                    }
                    other => other,
                });
            }
            tracing::debug!(node = self.inner.id, %error, "retrying write");
            self.inner.pause_before_retry(deadline).await;
        }
    }

    /// Runs `f` on the state after a linearizable read barrier: the result reflects every write
    /// acknowledged before the call. Works on any node (a follower asks the leader for the read
    /// index, then waits until it has applied that far).
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<Read<T>, ReadError> {
        let deadline = Instant::now() + self.inner.tuning.request_timeout;
        let mut cut_off = CutOff::default();
        let index = loop {
            if let Some(reason) = cut_off.check(&self.inner) {
                return Err(ReadError::Unavailable { reason });
            }
            let attempt = match self.inner.leader() {
                Some(leader) if leader.id == self.inner.id => self.inner.read_index_as_leader().await,
                Some(leader) => self.inner.forward_read_index(&leader, deadline).await,
                None => Err(ReadError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(index) => break index,
                Err(ReadError::ShuttingDown) => return Err(ReadError::ShuttingDown),
                Err(error) if Instant::now() >= deadline => {
                    return Err(match error {
                        ReadError::NotLeader { .. } => {
                            ReadError::Unavailable { reason: "no leader was elected in time".to_owned() }
                        }
                        other => other,
                    });
                }
                Err(_) => self.inner.pause_before_retry(deadline).await,
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| ReadError::Unavailable { reason: format!("not caught up with index {index}: {e}") })?;
        Ok(self.read_local(f))
    }

    /// Runs `f` on this node's state as applied so far, without contacting anyone; the result
    /// may lag the leader by the returned index.
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> Read<T> {
        let replica = self.inner.sm.read();
        Read { value: f(&replica.state), applied_index: replica.last_applied.map_or(0, |id| id.index) }
    }

    /// A stream of applied entries and snapshot installs, in log order. A subscriber that falls
    /// more than `CHANGE_FEED_CAPACITY` (4096) changes behind gets `Lagged` and should re-read.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.inner.sm.subscribe()
    }

    /// Whether this node currently believes it is the leader. Momentary: a node starting up may
    /// believe it for a few milliseconds; work that must run on one node only waits for
    /// [`RaftNode::confirmed_leader_term`].
    pub fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }

    /// Whether writes through this node can commit now, as far as it can tell: it leads and a
    /// quorum acknowledged it within two maximum election timeouts, or it follows a leader it
    /// knows. What health checks report.
    pub fn can_serve(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.running_state.is_err() {
            return false;
        }
        if metrics.current_leader == Some(self.inner.id) {
            let bound = self.inner.tuning.election_timeout.1 * 2;
            return metrics.millis_since_quorum_ack.is_some_and(|ms| u128::from(ms) <= bound.as_millis());
        }
        metrics.current_leader.is_some()
    }

    /// The term in which this node is the confirmed leader: it leads, a quorum has confirmed it
    /// in this term since it took over (`ensure_linearizable`: no other node leads in this term
    /// or a later one that the quorum knows of) and it has applied its own first entry of the
    /// term. `None` otherwise. The one leadership signal for the NATS consumer, the effect
    /// publisher, presence supervision and the ticker. A node restarted with a vote for itself
    /// may call itself leader for a moment: it is not confirmed.
    pub fn confirmed_leader_term(&self) -> Option<u64> {
        self.inner.confirmed_leader_term()
    }

    /// Whether this node still leads in `term`, as a quorum answers now (`ensure_linearizable`,
    /// within the request timeout). [`RaftNode::confirmed_leader_term`] is this node's own
    /// signal, which may lag a moment behind its deposition; ask this before acting on a
    /// conclusion that only a leader may draw.
    pub async fn still_leads(&self, term: u64) -> bool {
        let confirmed = tokio::time::timeout(self.inner.tuning.request_timeout, self.inner.raft.ensure_linearizable())
            .await
            .is_ok_and(|answer| answer.is_ok());
        confirmed && self.inner.raft.metrics().borrow().current_term == term
    }

    /// Waits until this node is the confirmed leader (see [`RaftNode::confirmed_leader_term`])
    /// and returns the term, or returns `None` once `stop` turns true.
    pub async fn until_confirmed_leader(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Option<u64> {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if *stop.borrow() {
                return None;
            }
            if let Some(term) = self.inner.confirmed_leader_term() {
                return Some(term);
            }
            // The confirmation itself is not a metrics change: look again now and then too.
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return None },
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// The effects not yet confirmed published, from log index `index` on.
    pub fn outbox_from(&self, index: u64) -> OutboxBacklog {
        self.inner.sm.read().outbox.from_index(index)
    }

    /// The first outbox entry at or after `index` (see [`crate::Outbox::entry_from`]).
    pub fn outbox_entry_from(&self, index: u64) -> Result<Option<AppliedEntry>, u64> {
        self.inner.sm.read().outbox.entry_from(index)
    }

    /// How many effects wait in the outbox, the confirmed index, and how many effects this
    /// replica dropped from it unpublished (over its bound) since it started.
    pub fn outbox_stats(&self) -> OutboxStats {
        let replica = self.inner.sm.read();
        OutboxStats {
            effects: replica.outbox.effects(),
            confirmed: replica.outbox.confirmed(),
            applied: replica.last_applied.map_or(0, |id| id.index),
            oldest: replica.outbox.oldest_index(),
            dropped: self.inner.sm.outbox_dropped(),
        }
    }

    /// Records in the log that the effects of every entry up to `index` are stored outside the
    /// cluster, so that replicas drop them from their outboxes. Leader only.
    pub async fn confirm_published(&self, index: u64) -> Result<(), ProposeError> {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Err(ProposeError::ShuttingDown);
        }
        let proposal = crate::types::Proposal {
            at_ms: wall_clock_ms(),
            inputs: Vec::new(),
            published: Some(index),
            actors: Vec::new(),
            note: None,
        };
        match self.inner.raft.client_write(proposal).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ProposeError::NotLeader { leader: self.inner.leader() })
            }
            Err(error) => Err(ProposeError::Unavailable { reason: error.to_string() }),
        }
    }

    /// Records a cluster change (a membership change that took effect) in the audit trail.
    /// Must be called on the leader.
    pub async fn record_audit(&self, note: AuditNote) -> Result<(), ProposeError> {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Err(ProposeError::ShuttingDown);
        }
        let proposal = crate::types::Proposal {
            at_ms: wall_clock_ms(),
            inputs: Vec::new(),
            published: None,
            actors: Vec::new(),
            note: Some(note),
        };
        match self.inner.raft.client_write(proposal).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ProposeError::NotLeader { leader: self.inner.leader() })
            }
            Err(error) => Err(ProposeError::Unavailable { reason: error.to_string() }),
        }
    }

    /// At most `limit` audit records of `workspace` (empty: the cluster's) after log index
    /// `after_index`, from this replica (every replica holds the same trail), with the applied
    /// index they reflect.
    pub fn audit(&self, workspace: &str, after_index: u64, limit: usize) -> Read<Vec<AuditRecord>> {
        let replica = self.inner.sm.read();
        Read {
            value: replica.audit.query(workspace, after_index, limit),
            applied_index: replica.last_applied.map_or(0, |id| id.index),
        }
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<LeaderHint> {
        self.inner.leader()
    }

    /// Waits until some node is known as leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<LeaderHint> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.inner.leader() {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.inner.pause_before_retry(deadline).await;
        }
    }

    /// This node's view of the cluster, with the digest of its applied state. The state keeps
    /// its digest up to date, so reading it hashes only the records changed since they were
    /// last hashed (about a millisecond at a million conversations); right after a restore,
    /// when every record is still to hash, it reads a forked copy instead of stalling
    /// applies. A digest is reused while nothing new is applied. Blocking: call it off the
    /// async runtime's workers.
    pub fn status(&self) -> ClusterStatus {
        let (applied_index, state_digest) = self.inner.sm.digest();
        ClusterStatus { applied_index, state_digest, ..self.members_status() }
    }

    /// [`RaftNode::status`] without the state digest (empty) and without blocking.
    pub fn members_status(&self) -> ClusterStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, node.clone());
            } else {
                learners.insert(*id, node.clone());
            }
        }
        let applied_index = self.inner.sm.read().last_applied.map_or(0, |id| id.index);
        ClusterStatus {
            id: self.inner.id,
            role: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            term: metrics.current_term,
            leader: metrics.current_leader,
            voters,
            learners,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            commit_index: self.inner.commit_index(applied_index),
            applied_index,
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            state_digest: String::new(),
        }
    }

    /// Stops the node abruptly, as a crash would: the peer service closes, pending writes fail
    /// and Raft stops. Everything acknowledged is already on disk; a node started again from
    /// the same directory rejoins.
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        if self.inner.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for task in running.tasks {
            task.abort();
        }
        if let Some(stop) = running.server_stop {
            let _ = stop.send(());
        }
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(node = self.inner.id, %error, "raft did not stop cleanly");
        }
        if let Some(server) = running.server {
            server.abort();
            let _ = server.await;
        }
        tracing::info!(node = self.inner.id, "raft node stopped");
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        for task in &running.tasks {
            task.abort();
        }
        if let Some(server) = &running.server {
            server.abort();
        }
    }
}

/// The size rule for one write, checked where a write enters (before forwarding) and where
/// the leader takes it (forwarded writes come from other nodes).
/// Returns the write's size in bytes.
fn check_inputs(inputs: &[Input]) -> Result<usize, ProposeError> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS_PER_PROPOSAL {
        return Err(ProposeError::Invalid(format!(
            "a write carries 1 to {MAX_INPUTS_PER_PROPOSAL} inputs, not {}",
            inputs.len()
        )));
    }
    let bytes = postcard::experimental::serialized_size(inputs)
        .map_err(|e| ProposeError::Invalid(format!("the write cannot be encoded: {e}")))?;
    if bytes > WRITE_BYTES_MAX {
        return Err(ProposeError::Invalid(format!(
            "the write is {bytes} bytes encoded; the limit is {WRITE_BYTES_MAX} (write_bytes_max): split it \
             into smaller writes"
        )));
    }
    Ok(bytes)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    fn confirmed_leader_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let applied_term = metrics.last_applied.map(|id| id.leader_id.term);
        (metrics.state == ServerState::Leader
            && metrics.current_leader == Some(self.id)
            && applied_term == Some(metrics.current_term)
            && self.confirmed_term.load(Ordering::Acquire) == metrics.current_term)
            .then_some(metrics.current_term)
    }

    pub(crate) fn leader(&self) -> Option<LeaderHint> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?.clone();
        Some(LeaderHint { id, node })
    }

    /// The commit index: what the log store last saved, never below what was applied.
    fn commit_index(&self, applied: u64) -> u64 {
        self.committed.load(Ordering::Relaxed).max(applied)
    }

    /// Pauses before a retry (50 ms, or until the deadline): long enough for an election
    /// under way to progress and a fresh leader to commit its first entry.
    async fn pause_before_retry(&self, deadline: Instant) {
        tokio::time::sleep_until((Instant::now() + Duration::from_millis(50)).min(deadline)).await;
    }

    /// Checks a write forwarded by another node and submits it to this node's batcher if it
    /// is the leader; never forwards.
    pub(crate) async fn propose_as_leader(
        &self,
        inputs: Vec<Input>,
        actor: Option<Actor>,
    ) -> Result<Committed, ProposeError> {
        let bytes = check_inputs(&inputs)?;
        self.submit(inputs, actor, bytes).await
    }

    /// Submits a checked write of `bytes` to this node's batcher if it is the leader. The size
    /// is measured once per write (an encoding pass), not again at every retry.
    async fn submit(&self, inputs: Vec<Input>, actor: Option<Actor>, bytes: usize) -> Result<Committed, ProposeError> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(ProposeError::ShuttingDown);
        }
        if !self.is_leader() {
            return Err(ProposeError::NotLeader { leader: self.leader() });
        }
        let (reply, outcome) = oneshot::channel();
        self.batcher
            .send(Submission { inputs, actor, bytes, reply: Some(reply) })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        outcome.await.unwrap_or_else(|_| {
            Err(ProposeError::Uncertain { reason: "the node stopped before the write was answered".to_owned() })
        })
    }

    async fn forward_propose(
        &self,
        leader: &LeaderHint,
        inputs: Vec<Input>,
        actor: Option<Actor>,
        deadline: Instant,
    ) -> Result<Committed, ProposeError> {
        let payload =
            encode(&crate::wire::ProposeRequest { inputs, actor }).map_err(|e| ProposeError::Invalid(e.to_string()))?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let reply = self
            .pool
            .call(leader.id, &leader.node.raft_addr, PeerRpc::Propose, payload, timeout)
            .await
            .map_err(|e| ProposeError::Uncertain { reason: format!("forwarding to the leader failed: {e}") })?;
        let reply: crate::wire::ProposeReply = decode(&reply)
            .map_err(|e| ProposeError::Uncertain { reason: format!("unreadable answer from the leader: {e}") })?;
        match Result::<Committed, ProposeError>::from(reply) {
            // The leader stopping is not this node stopping: try the next leader.
            Err(ProposeError::ShuttingDown) => {
                Err(ProposeError::Unavailable { reason: format!("leader {} is shutting down", leader.id) })
            }
            other => other,
        }
    }

    /// Confirms leadership with a quorum and returns the index a linearizable read must wait for.
    pub(crate) async fn read_index_as_leader(&self) -> Result<u64, ReadError> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(ReadError::ShuttingDown);
        }
        match self.raft.get_read_log_id().await {
            Ok((read, _)) => Ok(read.map_or(0, |id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(ReadError::NotLeader { leader: self.leader() })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(ReadError::Unavailable { reason: e.to_string() })
            }
            Err(RaftError::Fatal(_)) => Err(ReadError::ShuttingDown),
        }
    }

    async fn forward_read_index(&self, leader: &LeaderHint, deadline: Instant) -> Result<u64, ReadError> {
        let payload = encode(&()).map_err(|e| ReadError::Unavailable { reason: e.to_string() })?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let reply = self
            .pool
            .call(leader.id, &leader.node.raft_addr, PeerRpc::ReadIndex, payload, timeout)
            .await
            .map_err(|e: PeerCallError| ReadError::Unavailable { reason: e.to_string() })?;
        let reply: crate::wire::ReadIndexReply =
            decode(&reply).map_err(|e| ReadError::Unavailable { reason: e.to_string() })?;
        match Result::<u64, ReadError>::from(reply) {
            Err(ReadError::ShuttingDown) => {
                Err(ReadError::Unavailable { reason: format!("leader {} is shutting down", leader.id) })
            }
            other => other,
        }
    }
}

/// Notices that a node has been cut off from the cluster: it has known no leader for four
/// maximum election timeouts, and at least 2 s (a healthy cluster elects a leader well within
/// that, even on a loaded machine), or it leads without a quorum's acknowledgement for two (as
/// health reports it). Writes and reads then fail fast with `Unavailable`
/// instead of retrying until the request timeout; nothing has been submitted at that point.
#[derive(Default)]
struct CutOff {
    since: Option<Instant>,
}

impl CutOff {
    /// Why requests through this node cannot succeed now, once that has lasted too long.
    fn check(&mut self, inner: &Inner) -> Option<String> {
        let grace = (inner.tuning.election_timeout.1 * 4).max(Duration::from_secs(2));
        let metrics = inner.raft.metrics();
        let metrics = metrics.borrow();
        match metrics.current_leader {
            None => {
                // How long there has been no leader is not recorded: it is timed from here.
                let since = *self.since.get_or_insert_with(Instant::now);
                (since.elapsed() >= grace)
                    .then(|| "no leader: this node cannot reach a majority of the cluster".to_owned())
            }
            // The bound health uses (`RaftNode::can_serve`), so that a NOT_SERVING leader refuses
            // writes. `None` (not measured yet, or a cluster of one) is no evidence of a cut-off.
            Some(leader) if leader == inner.id => {
                self.since = None;
                let bound = inner.tuning.election_timeout.1 * 2;
                metrics
                    .millis_since_quorum_ack
                    .filter(|ms| u128::from(*ms) > bound.as_millis())
                    .map(|ms| format!("this node leads but no majority has acknowledged it for {ms} ms"))
            }
            Some(_) => {
                self.since = None;
                None
            }
        }
    }
}

/// The snapshot interval of node `id`: `every` entries, plus a tenth of it for each id after
/// the first (cycling over five), so that the nodes of a cluster, which apply the same entries,
/// do not all build a snapshot at the same moment (each pauses its applies while it copies the
/// state). Two nodes' builds still meet where their intervals have a common multiple (nodes 1
/// and 3 at every sixth of node 1's), and nodes whose ids differ by five share an interval.
fn staggered(every: u64, id: NodeId) -> u64 {
    every.saturating_add(every / 10 * (id.saturating_sub(1) % 5))
}

/// Logs what an operator needs to follow the cluster (elections, leader changes, membership
/// changes) and keeps the replication gauges current, from the Raft metrics.
async fn observe(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    let mut leader: Option<(NodeId, u64)> = None;
    let mut leaderless = false;
    let mut state = ServerState::Learner;
    let mut membership: Option<LogId> = None;
    let mut reported: BTreeSet<NodeId> = BTreeSet::new();
    loop {
        {
            let m = metrics.borrow_and_update();
            if m.state != state {
                if m.state == ServerState::Candidate {
                    tracing::info!(node = inner.id, term = m.current_term, "election started: no leader heard from");
                }
                state = m.state;
            }
            let now = m.current_leader.map(|id| (id, m.current_term));
            // Counted once per new leader: a lost leader followed by the same leader in the
            // same term is no change.
            if let Some((id, term)) = now
                && now != leader
            {
                metrics::counter!(crate::metrics::RAFT_LEADER_CHANGES_TOTAL).increment(1);
                tracing::info!(node = inner.id, leader = id, term, "leader changed");
                leader = now;
            }
            if now.is_none() && !leaderless {
                tracing::info!(node = inner.id, term = m.current_term, "no leader known");
            }
            leaderless = now.is_none();
            let config = m.membership_config.membership();
            let voters = config.voter_ids().count();
            metrics::gauge!(crate::metrics::RAFT_VOTERS).set(voters as f64);
            let log_id = m.membership_config.log_id().as_ref().copied();
            if log_id != membership {
                if membership.is_some() || log_id.is_some() {
                    let voters: Vec<NodeId> = config.voter_ids().collect();
                    let learners: Vec<NodeId> = config.learner_ids().collect();
                    tracing::info!(
                        node = inner.id,
                        ?voters,
                        ?learners,
                        index = log_id.map(|id| id.index),
                        "membership"
                    );
                }
                membership = log_id;
            }
            // Only the leader knows the followers' progress; a node that stops leading (or a
            // follower that leaves) reports 0 rather than its last, ever older, figure.
            let mut lags = BTreeMap::new();
            if let Some(replication) = &m.replication {
                let last = m.last_log_index.unwrap_or(0);
                for (follower, matched) in replication.iter().filter(|(follower, _)| **follower != inner.id) {
                    lags.insert(*follower, last.saturating_sub(matched.map_or(0, |id| id.index)));
                }
            }
            for follower in &reported {
                lags.entry(*follower).or_insert(0);
            }
            for (follower, lag) in &lags {
                metrics::gauge!(crate::metrics::RAFT_REPLICATION_LAG_ENTRIES, "follower" => follower.to_string())
                    .set(*lag as f64);
            }
            reported = lags.into_iter().filter(|(_, lag)| *lag > 0).map(|(follower, _)| follower).collect();
        }
        // Also on a timer: the exporter drops gauges left unset for a minute, and an idle
        // cluster's metrics may not change for longer.
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Confirms this node's leadership with a quorum each time it becomes leader in a new term, and
/// records the term (see [`RaftNode::confirmed_leader_term`]).
async fn confirm_leadership(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    loop {
        let (leading, term) = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader && m.current_leader == Some(inner.id), m.current_term)
        };
        if leading && inner.confirmed_term.load(Ordering::Acquire) != term {
            match tokio::time::timeout(inner.tuning.request_timeout, inner.raft.ensure_linearizable()).await {
                Ok(Ok(_)) if inner.raft.metrics().borrow().current_term == term => {
                    inner.confirmed_term.store(term, Ordering::Release);
                    tracing::info!(node = inner.id, term, "leadership confirmed by a quorum");
                    continue;
                }
                // Not (or no longer) the leader, or no quorum yet: look again after the next change
                // or a short pause.
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            continue;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Proposes a `Tick` whenever the leader has proposed nothing for a tick interval, so that
/// timers (delays, no-reply timeouts, day rollovers, opening hours) fire on an idle cluster.
async fn tick(inner: Arc<Inner>, last_proposed_ms: Arc<AtomicI64>) {
    let interval = inner.tuning.tick_interval.max(Duration::from_millis(10));
    let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    let mut timer = tokio::time::interval(interval / 4);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        if inner.confirmed_leader_term().is_none()
            || wall_clock_ms() - last_proposed_ms.load(Ordering::Relaxed) < interval_ms
        {
            continue;
        }
        // A full batcher is busy proposing anyway; skipping this tick loses nothing.
        let _ = inner.batcher.try_send(Submission { inputs: vec![Input::Tick], actor: None, bytes: 1, reply: None });
    }
}

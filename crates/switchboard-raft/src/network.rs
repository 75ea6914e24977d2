//! The peer network: openraft's RPCs over tonic (`raft.v1.RaftPeer`), one cached channel per
//! peer address, a deadline on every call, and an optional fault plan for tests.

use crate::types::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use switchboard_proto::raft::v1::RaftPayload;
use switchboard_proto::raft::v1::raft_peer_client::RaftPeerClient;
use switchboard_tls::NodeTls;
use tonic::transport::{Channel, Endpoint};

/// The encoding version of [`RaftPayload::data`] this build speaks. Format 2: entries and
/// forwarded writes carry who made them (the audit trail).
pub const PAYLOAD_FORMAT: u32 = 2;
/// Largest peer message accepted or sent (a snapshot chunk plus headroom).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The most log-entry bytes one AppendEntries call carries (more than one entry only while
/// they fit). openraft 0.9 gives each call one heartbeat interval to be answered, follower
/// fsync included; a call that cannot make it times out again and again, the follower hears no
/// heartbeat and calls elections, and the cluster stops committing. Entries themselves are at
/// most `WRITE_BYTES_MAX`.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 1024 * 1024;

/// A payload that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The peer speaks another payload format.
    #[error("peer payload format {0} is not supported (this node speaks {PAYLOAD_FORMAT})")]
    Format(u32),
    /// postcard refused the bytes or the value.
    #[error("peer payload: {0}")]
    Codec(#[from] postcard::Error),
}

/// Encodes a value as a peer payload.
pub fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, PayloadError> {
    Ok(RaftPayload { format: PAYLOAD_FORMAT, data: postcard::to_allocvec(value)? })
}

/// Decodes a peer payload.
pub fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, PayloadError> {
    if payload.format != PAYLOAD_FORMAT {
        return Err(PayloadError::Format(payload.format));
    }
    Ok(postcard::from_bytes(&payload.data)?)
}

/// The peer RPCs, for fault plans and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerRpc {
    /// Log replication and heartbeats.
    AppendEntries,
    /// Elections.
    Vote,
    /// Snapshot chunks.
    InstallSnapshot,
    /// A write forwarded to the leader.
    Propose,
    /// A read index asked of the leader.
    ReadIndex,
}

/// What happens to one outgoing peer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Sent normally.
    Deliver,
    /// Sent after a pause.
    Delay(Duration),
    /// Never sent; the caller sees the peer as unreachable.
    Drop,
    /// Sent and handled, but the reply is lost; the caller sees the peer as unreachable.
    DropReply,
}

/// Decides the fate of outgoing peer messages. Production nodes have none; fault-injection
/// tests install one to delay and drop traffic reproducibly.
pub trait FaultPlan: Send + Sync + Debug + 'static {
    /// The fate of a message from `from` to `to`.
    fn fate(&self, from: NodeId, to: NodeId, rpc: PeerRpc) -> Fate;

    /// A failpoint: whether applying `input` should panic, to test that a bug in the state
    /// machine refuses one input on every replica alike instead of stopping the cluster.
    fn panic_on_apply(&self, _input: &switchboard_core::Input) -> bool {
        false
    }
}

#[derive(Debug, thiserror::Error)]
#[error("message to node {to} dropped by the fault plan")]
struct Dropped {
    to: NodeId,
}

/// Why a peer call failed before the peer's own answer was known.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// The peer could not be reached (connection refused, reset, or dropped by a fault plan).
    #[error("node {to} at {addr} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        to: NodeId,
        /// Its address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The peer did not answer in time.
    #[error("node {to} did not answer {rpc:?} within {timeout:?}")]
    Timeout {
        /// The peer.
        to: NodeId,
        /// The call.
        rpc: PeerRpc,
        /// The deadline.
        timeout: Duration,
    },
    /// The peer answered with something unreadable or an error status.
    #[error("node {to} failed {rpc:?}: {reason}")]
    Failed {
        /// The peer.
        to: NodeId,
        /// The call.
        rpc: PeerRpc,
        /// What happened.
        reason: String,
    },
}

/// Channels by peer id and address, with the TLS generation each was made with.
type PeerChannels = BTreeMap<(NodeId, String), (u64, Channel)>;

/// Channels to peers, shared by the Raft network and by request forwarding.
#[derive(Clone, Debug)]
pub struct PeerPool {
    from: NodeId,
    channels: Arc<Mutex<PeerChannels>>,
    faults: Option<Arc<dyn FaultPlan>>,
    connect_timeout: Duration,
    tls: Option<Arc<NodeTls>>,
}

/// Metadata key of a peer call: the id of the calling node, which its certificate must name.
pub const PEER_ID_METADATA_KEY: &str = "switchboard-peer-id";

impl PeerPool {
    /// A pool for node `from`, with an optional fault plan; with `tls`, every call is made
    /// over mutual TLS and the answering node must be the peer id called.
    pub fn new(
        from: NodeId,
        faults: Option<Arc<dyn FaultPlan>>,
        connect_timeout: Duration,
        tls: Option<Arc<NodeTls>>,
    ) -> Self {
        Self { from, channels: Arc::default(), faults, connect_timeout, tls }
    }

    fn channel(&self, to: NodeId, addr: &str) -> Result<Channel, String> {
        let generation = self.tls.as_ref().map_or(0, |tls| tls.generation());
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (to, addr.to_owned());
        if let Some((made_with, channel)) = channels.get(&key)
            && *made_with == generation
        {
            return Ok(channel.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            // The answering node must hold the certificate of the node called.
            endpoint = endpoint
                .tls_config(tls.client_tls().domain_name(switchboard_tls::node_name(to)))
                .map_err(|e| format!("TLS to node {to} at {addr}: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(key, (generation, channel.clone()));
        Ok(channel)
    }

    /// Sends one peer RPC to `to` at `addr` and returns the peer's reply payload.
    pub async fn call(
        &self,
        to: NodeId,
        addr: &str,
        rpc: PeerRpc,
        payload: RaftPayload,
        timeout: Duration,
    ) -> Result<RaftPayload, PeerCallError> {
        let unreachable = |reason: String| PeerCallError::Unreachable { to, addr: addr.to_owned(), reason };
        let fate = self.faults.as_ref().map_or(Fate::Deliver, |plan| plan.fate(self.from, to, rpc));
        match fate {
            Fate::Deliver | Fate::DropReply => {}
            Fate::Delay(pause) => tokio::time::sleep(pause).await,
            Fate::Drop => return Err(unreachable(Dropped { to }.to_string())),
        }
        let channel = self.channel(to, addr).map_err(unreachable)?;
        let mut client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let mut payload = tonic::Request::new(payload);
        if let Ok(from) = self.from.to_string().parse() {
            payload.metadata_mut().insert(PEER_ID_METADATA_KEY, from);
        }
        let call = async {
            match rpc {
                PeerRpc::AppendEntries => client.append_entries(payload).await,
                PeerRpc::Vote => client.vote(payload).await,
                PeerRpc::InstallSnapshot => client.install_snapshot(payload).await,
                PeerRpc::Propose => client.propose(payload).await,
                PeerRpc::ReadIndex => client.read_index(payload).await,
            }
        };
        let reply = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(PeerCallError::Timeout { to, rpc, timeout }),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                        unreachable(status.message().to_owned())
                    }
                    _ => PeerCallError::Failed { to, rpc, reason: status.to_string() },
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        if fate == Fate::DropReply {
            return Err(unreachable(format!("reply from node {to} dropped by the fault plan")));
        }
        Ok(reply)
    }
}

/// Creates [`PeerClient`]s for openraft.
#[derive(Clone, Debug)]
pub struct PeerNetwork {
    pool: PeerPool,
}

impl PeerNetwork {
    /// A network over `pool`.
    pub fn new(pool: PeerPool) -> Self {
        Self { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient { pool: self.pool.clone(), target, addr: node.raft_addr.clone() }
    }
}

/// openraft's connection to one peer.
#[derive(Debug)]
pub struct PeerClient {
    pool: PeerPool,
    target: NodeId,
    addr: String,
}

impl PeerClient {
    async fn send<Req, Resp, E>(
        &self,
        rpc: PeerRpc,
        action: RPCTypes,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ttl = option.hard_ttl();
        let reply = self.pool.call(self.target, &self.addr, rpc, payload, ttl).await.map_err(|e| match e {
            PeerCallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerCallError::Timeout { timeout, .. } => {
                RPCError::Timeout(Timeout { action, id: self.pool.from, target: self.target, timeout })
            }
            PeerCallError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// `None` when `entries` fit in `budget` bytes (or are a single entry, which is sent whatever
/// its size); else how many leading entries do, at least one.
fn entries_that_fit<T: Serialize>(entries: &[T], budget: usize) -> Option<u64> {
    if entries.len() <= 1 {
        return None;
    }
    let mut total = 0usize;
    for (count, entry) in entries.iter().enumerate() {
        total = total.saturating_add(postcard::experimental::serialized_size(entry).unwrap_or(usize::MAX));
        if total > budget {
            return Some(count.max(1) as u64);
        }
    }
    None
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        if let Some(fit) = entries_that_fit(&rpc.entries, APPEND_ENTRIES_BYTES_MAX) {
            // openraft resends at once with at most `fit` entries (and keeps the hint a while).
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit)));
        }
        self.send(PeerRpc::AppendEntries, RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.send(PeerRpc::InstallSnapshot, RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.send(PeerRpc::Vote, RPCTypes::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_entries_are_cut_to_the_byte_budget_but_never_below_one_entry() {
        let entry = vec![7u8; 400];
        // 400 bytes plus a length prefix each: two fit in 1,000 bytes, three do not.
        assert_eq!(entries_that_fit(&[entry.clone(), entry.clone()], 1000), None);
        assert_eq!(entries_that_fit(&[entry.clone(), entry.clone(), entry.clone()], 1000), Some(2));
        let huge = vec![0u8; 5000];
        assert_eq!(entries_that_fit(std::slice::from_ref(&huge), 1000), None);
        assert_eq!(entries_that_fit(&[huge.clone(), entry], 1000), Some(1));
    }
}

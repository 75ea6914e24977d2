//! The server side of the peer network: `raft.v1.RaftPeer` handing requests to openraft, and
//! the leader's end of forwarded writes and read-index requests.

use crate::network::{PEER_ID_METADATA_KEY, PayloadError, decode, encode};
use crate::node::Inner;
use crate::types::{NodeId, TypeConfig};
use crate::wire::{ProposeReply, ProposeRequest, ReadIndexReply};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use std::sync::Arc;
use switchboard_proto::raft::v1::RaftPayload;
use switchboard_proto::raft::v1::raft_peer_server::RaftPeer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

/// Serves one node's peer RPCs.
pub(crate) struct PeerService {
    pub(crate) inner: Arc<Inner>,
}

fn bad_payload(e: PayloadError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    encode(value).map(Response::new).map_err(|e| Status::internal(e.to_string()))
}

impl PeerService {
    /// With mutual TLS: the calling node's id (metadata `switchboard-peer-id`), which its
    /// certificate must name, and which must be `speaks_for` (the candidate or leader a
    /// Raft message is from) when the message names one. Without TLS: nothing is checked.
    fn authenticate<T>(&self, request: &Request<T>, speaks_for: Option<NodeId>) -> Result<(), Status> {
        if !self.inner.peers_authenticated {
            return Ok(());
        }
        let claimed: NodeId = request
            .metadata()
            .get(PEER_ID_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| Status::unauthenticated(format!("a peer call names its node in {PEER_ID_METADATA_KEY}")))?;
        let certificate = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| Status::unauthenticated("a peer call comes with a client certificate"))?;
        if !switchboard_tls::certificate_names_node(&certificate, claimed) {
            tracing::warn!(claimed, "a peer claimed a node id its certificate does not name; refused");
            return Err(Status::permission_denied(format!(
                "the client certificate does not name {}",
                switchboard_tls::node_name(claimed)
            )));
        }
        match speaks_for {
            Some(sender) if sender != claimed => {
                tracing::warn!(claimed, sender, "a peer sent a Raft message on behalf of another node; refused");
                Err(Status::permission_denied(format!("node {claimed} cannot send a message from node {sender}")))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref()).map_err(bad_payload)?;
        self.authenticate(&request, rpc.vote.leader_id().voted_for())?;
        reply(&self.inner.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.get_ref()).map_err(bad_payload)?;
        self.authenticate(&request, rpc.vote.leader_id().voted_for())?;
        reply(&self.inner.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref()).map_err(bad_payload)?;
        self.authenticate(&request, rpc.vote.leader_id().voted_for())?;
        reply(&self.inner.raft.install_snapshot(rpc).await)
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.authenticate(&request, None)?;
        let request: ProposeRequest = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&ProposeReply::from(self.inner.propose_as_leader(request.inputs, request.actor).await))
    }

    async fn read_index(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.authenticate(&request, None)?;
        let () = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&ReadIndexReply::from(self.inner.read_index_as_leader().await))
    }
}

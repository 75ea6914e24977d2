//! The server side of the peer network: `raft.v1.RaftPeer` handing requests to openraft, and
//! the leader's end of forwarded writes and read-index requests.

use crate::network::{PayloadError, decode, encode};
use crate::node::Inner;
use crate::wire::{ProposeReply, ReadIndexReply};
use std::sync::Arc;
use switchboard_core::Input;
use switchboard_proto::raft::v1::RaftPayload;
use switchboard_proto::raft::v1::raft_peer_server::RaftPeer;
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

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.inner.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.inner.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.inner.raft.install_snapshot(rpc).await)
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let inputs: Vec<Input> = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&ProposeReply::from(self.inner.propose_as_leader(inputs).await))
    }

    async fn read_index(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let () = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&ReadIndexReply::from(self.inner.read_index_as_leader().await))
    }
}

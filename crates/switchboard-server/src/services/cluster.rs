//! `switchboard.v1.Cluster`: status and membership changes (forwarded to the leader).

use crate::api::{Api, forwarded};
use crate::auth::Permission;
use crate::convert::invalid;
use crate::status;
use futures::StreamExt as _;
use std::collections::BTreeSet;
use std::sync::Arc;
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::cluster_client::ClusterClient;
use switchboard_proto::switchboard::v1::cluster_server::Cluster;
use switchboard_raft::{NodeInfo, RaftNode};
use tonic::{Request, Response, Status};

pub(crate) struct ClusterService {
    pub(crate) api: Arc<Api>,
}

/// This node's view of the cluster as a protobuf message. The state digest takes as long as
/// encoding the state, so it is computed on a blocking thread.
pub(crate) async fn cluster_status(node: &Arc<RaftNode>) -> Result<pb::ClusterStatus, Status> {
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || status_to_pb(&node))
        .await
        .map_err(|e| Status::internal(format!("computing the status failed: {e}")))
}

fn status_to_pb(node: &RaftNode) -> pb::ClusterStatus {
    let status = node.status();
    let leader_api_addr = status
        .leader
        .and_then(|id| status.voters.get(&id).or_else(|| status.learners.get(&id)))
        .map(|info| info.api_addr.clone())
        .unwrap_or_default();
    let member = |(id, info): (&u64, &NodeInfo), voter: bool| pb::Member {
        id: *id,
        raft_addr: info.raft_addr.clone(),
        api_addr: info.api_addr.clone(),
        voter,
    };
    pb::ClusterStatus {
        node_id: status.id,
        role: status.role.to_owned(),
        term: status.term,
        leader_id: status.leader.unwrap_or(0),
        leader_api_addr,
        members: status
            .voters
            .iter()
            .map(|m| member(m, true))
            .chain(status.learners.iter().map(|m| member(m, false)))
            .collect(),
        last_log_index: status.last_log_index,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        state_digest: status.state_digest,
    }
}

impl ClusterService {
    /// Records a membership change that took effect. It is not undone if the record fails (the
    /// change is already committed): the failure is logged.
    async fn audit(&self, caller: &crate::auth::Caller, action: String) {
        let note = switchboard_raft::audit::AuditNote { actor: caller.actor(), action };
        if let Err(error) = self.api.node.record_audit(note).await {
            tracing::error!(%error, "a membership change took effect but could not be recorded in the audit trail");
        }
    }
}

/// Whether this node is exporting a snapshot (`Cluster.ExportSnapshot`), while it lives.
struct Exporting;

static EXPORT_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Exporting {
    fn start() -> Option<Self> {
        use std::sync::atomic::Ordering;
        EXPORT_RUNNING.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).ok().map(|_| Self)
    }
}

impl Drop for Exporting {
    fn drop(&mut self) {
        EXPORT_RUNNING.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Bytes per `SnapshotChunk` of `Cluster.ExportSnapshot`.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

#[tonic::async_trait]
impl Cluster for ClusterService {
    type ExportSnapshotStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send + 'static>>;

    async fn export_snapshot(
        &self,
        request: Request<pb::ExportSnapshotRequest>,
    ) -> Result<Response<Self::ExportSnapshotStream>, Status> {
        let caller = self.api.caller(&request)?;
        caller.may(Permission::ExportSnapshot, None)?;
        // The leader exports: its state is the newest, and it records the export in the audit
        // trail.
        if let Some(leader) = self.api.leader_channel(&request)? {
            let chunks = ClusterClient::new(leader)
                .max_decoding_message_size(2 * SNAPSHOT_CHUNK_BYTES)
                .export_snapshot(forwarded(&request))
                .await?
                .into_inner();
            return Ok(Response::new(Box::pin(chunks)));
        }
        // One export at a time per node: each holds a copy of the whole state until streamed.
        let Some(exporting) = Exporting::start() else {
            return Err(Status::resource_exhausted("a snapshot export is already running on this node; retry later"));
        };
        // Recorded before any data leaves: an export that cannot be audited is refused.
        let note = switchboard_raft::audit::AuditNote { actor: caller.actor(), action: "ExportSnapshot".to_owned() };
        self.api.node.record_audit(note).await.map_err(status::propose)?;
        let export = self
            .api
            .node
            .export_snapshot()
            .await
            .map_err(|e| Status::internal(format!("cannot export a snapshot: {e}")))?;
        let (index, term) = (export.last_log_index, export.last_log_term);
        let bytes = Arc::new(export.bytes);
        let total_bytes = bytes.len() as u64;
        let chunks = bytes.len().div_ceil(SNAPSHOT_CHUNK_BYTES);
        // One chunk copied at a time; `exporting` is released with the stream.
        let stream = futures::stream::iter(0..chunks).map(move |i| {
            let _running = &exporting;
            let first = i == 0;
            let data = bytes[i * SNAPSHOT_CHUNK_BYTES..((i + 1) * SNAPSHOT_CHUNK_BYTES).min(bytes.len())].to_vec();
            Ok(pb::SnapshotChunk {
                data,
                last_log_index: if first { index } else { 0 },
                last_log_term: if first { term } else { 0 },
                total_bytes: if first { total_bytes } else { 0 },
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        // Any valid credential: it names nodes and a digest, no workspace data.
        self.api.caller(&request)?;
        Ok(Response::new(cluster_status(&self.api.node).await?))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = self.api.caller(&request)?;
        caller.may(Permission::ChangeMembership, None)?;
        if let Some(leader) = self.api.leader_channel(&request)? {
            return ClusterClient::new(leader).add_learner(forwarded(&request)).await;
        }
        let request = request.into_inner();
        if request.id == 0 {
            return Err(invalid("id", "node ids start at 1").into());
        }
        if request.raft_addr.is_empty() {
            return Err(invalid("raft_addr", "is required (host:port of the new node's Raft peer listener)").into());
        }
        for (field, addr) in [("raft_addr", &request.raft_addr), ("api_addr", &request.api_addr)] {
            if addr.len() > switchboard_raft::NODE_ADDR_BYTES_MAX {
                let max = switchboard_raft::NODE_ADDR_BYTES_MAX;
                return Err(
                    invalid(field, format!("is {} bytes; at most {max} (node_addr_bytes_max)", addr.len())).into()
                );
            }
        }
        let action = format!("AddLearner {} raft {} api {}", request.id, request.raft_addr, request.api_addr);
        let info = NodeInfo::new(request.raft_addr, request.api_addr);
        let log_index =
            self.api.node.add_learner(request.id, info, request.wait_for_catch_up).await.map_err(status::membership)?;
        self.audit(&caller, action).await;
        Ok(Response::new(pb::MembershipResponse { log_index, status: Some(cluster_status(&self.api.node).await?) }))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = self.api.caller(&request)?;
        caller.may(Permission::ChangeMembership, None)?;
        if let Some(leader) = self.api.leader_channel(&request)? {
            return ClusterClient::new(leader).change_membership(forwarded(&request)).await;
        }
        let request = request.into_inner();
        let voters: BTreeSet<u64> = request.voters.iter().copied().collect();
        if voters.is_empty() {
            return Err(invalid("voters", "must name at least one node").into());
        }
        let mut log_index = self.api.node.change_membership(voters.clone()).await.map_err(status::membership)?;
        let listed: Vec<String> = voters.iter().map(u64::to_string).collect();
        self.audit(&caller, format!("ChangeMembership voters {}", listed.join(","))).await;
        if request.remove_learners {
            let learners: BTreeSet<u64> =
                self.api.node.members_status().learners.keys().filter(|id| !voters.contains(id)).copied().collect();
            if !learners.is_empty() {
                let removed: Vec<String> = learners.iter().map(u64::to_string).collect();
                log_index = self.api.node.remove_learners(learners).await.map_err(status::membership)?;
                self.audit(&caller, format!("RemoveLearners {}", removed.join(","))).await;
            }
        }
        Ok(Response::new(pb::MembershipResponse { log_index, status: Some(cluster_status(&self.api.node).await?) }))
    }
}

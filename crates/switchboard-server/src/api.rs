//! What every service shares: the replica, the Watch hub, the heartbeat supervisor and the link
//! to the leader's public API; and the two paths every RPC takes, [`Api::write`] and
//! [`Api::read`].

use crate::auth::{Authenticator, Caller};
use crate::convert::effects::{EffectOrigin, effect_to_pb};
use crate::presence::PresenceSupervisor;
use crate::status;
use crate::watch::WatchHub;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use switchboard_core::{Command, Event, EventId, Input, State, WorkspaceId};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_raft::{InputOutcome, RaftNode, numbered_effects};
use switchboard_tls::NodeTls;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Metadata marking a call one node forwarded to the leader, so that it is never forwarded
/// again (two nodes that disagree about the leader must not bounce a call between them).
pub(crate) const FORWARDED_METADATA_KEY: &str = "switchboard-forwarded";

/// A committed write as the API reports it.
pub(crate) struct Written {
    pub(crate) log_index: u64,
    pub(crate) effects: Vec<pb::Effect>,
}

/// A read and the applied index it reflects.
pub(crate) struct ReadValue<T> {
    pub(crate) value: T,
    pub(crate) applied_index: u64,
}

/// Shared by every service of one node.
pub(crate) struct Api {
    pub(crate) node: Arc<RaftNode>,
    pub(crate) watch: Arc<WatchHub>,
    pub(crate) presence: Arc<PresenceSupervisor>,
    /// Turns true when the server begins to shut down; long-lived streams end then.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// Who may call; `None`: anyone.
    auth: Option<Arc<Authenticator>>,
    /// TLS of the public API, also used to call the leader's.
    tls: Option<Arc<NodeTls>>,
    /// Channels to leaders' APIs, with the TLS generation they were made with.
    leader_channels: Mutex<BTreeMap<String, (u64, Channel)>>,
}

/// The effects of one outcome of an entry, numbered from `first_sequence`.
pub(crate) fn outcome_effects(outcome: &InputOutcome, origin: EffectOrigin, first_sequence: u32) -> Vec<pb::Effect> {
    numbered_effects(std::slice::from_ref(outcome), first_sequence)
        .map(|numbered| effect_to_pb(numbered.effect, origin, numbered.sequence, numbered.cause))
        .collect()
}

/// A fresh idempotency key for a write whose caller gave none, so that the node can retry it
/// across a leader change without applying it twice. Unique per node incarnation (the process
/// start time in nanoseconds) and per call (a counter).
/// The dedupe key of a write's `request_id`. Request ids live in their own namespace, apart from
/// gateways' event ids: ids from clients cannot contain control characters, so the prefix keeps a
/// `request_id` equal to some event's `event_id` from being taken for it.
pub(crate) fn request_event_id(request_id: &str) -> EventId {
    EventId::new(format!("{REQUEST_ID_PREFIX}{request_id}"))
}

/// What [`request_event_id`] puts before a `request_id`.
pub(crate) const REQUEST_ID_PREFIX: &str = "\u{1}request\u{1}";

// A request id of the longest allowed length, with its prefix, is still an event id the core
// accepts: checked when the node is built, not at the first long request id.
const _: () = assert!(
    REQUEST_ID_PREFIX.len() + switchboard_core::limits::ID_BYTES_MAX <= switchboard_core::limits::EVENT_ID_BYTES_MAX,
    "REQUEST_ID_PREFIX plus a request id of ID_BYTES_MAX bytes exceeds EVENT_ID_BYTES_MAX"
);

pub(crate) fn generated_event_id(node_id: u64) -> EventId {
    static INCARNATION: OnceLock<u128> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let incarnation = *INCARNATION
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    EventId::new(format!("\u{1}generated\u{1}{node_id}-{incarnation:x}-{n:x}"))
}

impl Api {
    pub(crate) fn new(
        node: Arc<RaftNode>,
        watch: Arc<WatchHub>,
        presence: Arc<PresenceSupervisor>,
        stopping: tokio::sync::watch::Receiver<bool>,
        auth: Option<Arc<Authenticator>>,
        tls: Option<Arc<NodeTls>>,
    ) -> Self {
        Self { node, watch, presence, stopping, auth, tls, leader_channels: Mutex::new(BTreeMap::new()) }
    }

    /// Who made `request`: `UNAUTHENTICATED` when the node requires a token and the request
    /// carries none it accepts.
    pub(crate) fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, Status> {
        match &self.auth {
            None => Ok(Caller::Anyone),
            Some(auth) => {
                let certificate = request
                    .extensions()
                    .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
                    .and_then(|info| info.peer_certs())
                    .and_then(|certs| certs.first().cloned());
                auth.authenticate(request.metadata(), certificate.as_ref())
            }
        }
    }

    /// Commits one command through the Raft log (forwarded to the leader by the node when this
    /// node follows) and returns its effects, or the state machine's refusal as a status.
    pub(crate) async fn write(
        &self,
        workspace: WorkspaceId,
        request_id: String,
        command: Command,
    ) -> Result<Written, Status> {
        self.write_as(workspace, request_id, command, None).await
    }

    /// As [`Api::write`], recording `caller` in the audit trail with the outcome (configuration
    /// changes).
    pub(crate) async fn write_audited(
        &self,
        caller: &Caller,
        workspace: WorkspaceId,
        request_id: String,
        command: Command,
    ) -> Result<Written, Status> {
        self.write_as(workspace, request_id, command, Some(caller.actor())).await
    }

    async fn write_as(
        &self,
        workspace: WorkspaceId,
        request_id: String,
        command: Command,
        actor: Option<switchboard_raft::audit::Actor>,
    ) -> Result<Written, Status> {
        let event_id = match crate::convert::optional_id::<String>(request_id, "request_id")? {
            Some(id) => request_event_id(&id),
            None => generated_event_id(self.node.id()),
        };
        let event = Event { workspace, event_id: Some(event_id), command };
        // The core's bounds, before anything is proposed (the state machine checks them again).
        event.validate().map_err(|error| crate::convert::core_invalid("", error))?;
        let input = Input::Event(event);
        let committed = self.node.propose_as(vec![input], actor).await.map_err(status::propose)?;
        let outcome = committed.outcomes.first().ok_or_else(|| Status::internal("the write returned no outcome"))?;
        if let Some(rejection) = &outcome.rejection {
            return Err(status::rejection(rejection));
        }
        let origin = EffectOrigin { log_index: committed.index, at_ms: committed.at_ms };
        Ok(Written {
            log_index: committed.index,
            effects: outcome_effects(outcome, origin, committed.first_effect_sequence),
        })
    }

    /// Reads the state, linearizably unless `consistency` asks for a local read.
    pub(crate) async fn read<T>(&self, consistency: i32, f: impl FnOnce(&State) -> T) -> Result<ReadValue<T>, Status> {
        let local = match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => false,
            Ok(pb::Consistency::Local) => true,
            Err(_) => {
                return Err(crate::convert::invalid(
                    "consistency",
                    format!("{consistency} is not a known consistency"),
                )
                .into());
            }
        };
        let read = if local { self.node.read_local(f) } else { self.node.read(f).await.map_err(status::read)? };
        Ok(ReadValue { value: read.value, applied_index: read.applied_index })
    }

    /// Reads one entity of `workspace` with `find`; `NOT_FOUND` names the workspace, or the
    /// entity (`what` `id`, e.g. `agent a1`), that is not there.
    pub(crate) async fn read_entity<T: Send>(
        &self,
        consistency: i32,
        workspace: &WorkspaceId,
        what: &str,
        id: &(dyn std::fmt::Display + Sync),
        find: impl FnOnce(&State) -> Option<T> + Send,
    ) -> Result<ReadValue<T>, Status> {
        let read = self
            .read(consistency, |state| {
                if !state.has_workspace(workspace) {
                    return Err(crate::services::unknown_workspace(workspace));
                }
                find(state).ok_or_else(|| Status::not_found(format!("unknown {what} {id} in workspace {workspace}")))
            })
            .await?;
        Ok(ReadValue { value: read.value?, applied_index: read.applied_index })
    }

    /// A channel to the leader's public API, or `None` when this node leads. Fails with
    /// `UNAVAILABLE` when no leader is known or the call was already forwarded once.
    pub(crate) fn leader_channel<T>(&self, request: &tonic::Request<T>) -> Result<Option<Channel>, Status> {
        let leader = self.node.leader().ok_or_else(|| {
            Status::unavailable("no Raft leader is known right now (an election may be under way); retry shortly")
        })?;
        if leader.id == self.node.id() {
            return Ok(None);
        }
        if request.metadata().contains_key(FORWARDED_METADATA_KEY) {
            return Err(Status::unavailable(format!(
                "this call was forwarded here as to the leader, but this node is not the leader (it believes {leader} \
                 is); retry shortly"
            )));
        }
        if leader.node.api_addr.is_empty() {
            return Err(Status::unavailable(format!("the leader, {leader}, has no public API address")));
        }
        let generation = self.tls.as_ref().map_or(0, |tls| tls.generation());
        let mut channels = self.leader_channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((made_with, channel)) = channels.get(&leader.node.api_addr)
            && *made_with == generation
        {
            return Ok(Some(channel.clone()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", leader.node.api_addr))
            .map_err(|e| Status::internal(format!("bad leader address {}: {e}", leader.node.api_addr)))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(30));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client_tls())
                .map_err(|e| Status::internal(format!("TLS to the leader at {}: {e}", leader.node.api_addr)))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(leader.node.api_addr.clone(), (generation, channel.clone()));
        Ok(Some(channel))
    }
}

/// Copies a request for forwarding: same message, the caller's deadline, marked as forwarded.
pub(crate) fn forwarded<T: Clone>(request: &tonic::Request<T>) -> tonic::Request<T> {
    let mut forwarded = tonic::Request::new(request.get_ref().clone());
    if let Some(timeout) = request.metadata().get("grpc-timeout") {
        forwarded.metadata_mut().insert("grpc-timeout", timeout.clone());
    }
    // The leader checks the caller again.
    if let Some(authorization) = request.metadata().get(crate::auth::AUTHORIZATION_METADATA_KEY) {
        forwarded.metadata_mut().insert(crate::auth::AUTHORIZATION_METADATA_KEY, authorization.clone());
    }
    forwarded.metadata_mut().insert(FORWARDED_METADATA_KEY, tonic::metadata::MetadataValue::from_static("1"));
    forwarded
}

//! # switchboard-client
//!
//! A typed async client for every `switchboard.v1` service, used by `switchboard ctl`, the load
//! generator and the tests, and meant for gateways and agent apps written in Rust.
//!
//! A [`Client`] knows every node of a cluster. Each call goes to one node (any node accepts any
//! call; followers forward writes to the leader); when that node is unreachable or answers
//! `UNAVAILABLE` (no quorum yet, shutting down), the call moves to the next node and retries,
//! with backoff, until [`ClientConfig::retry_timeout`]. Writes are made safe to retry by an
//! idempotency key (`request_id`) the client fills in when the caller left it empty: a write
//! that reached the log before its answer was lost is not applied again, and its retry answers
//! `ALREADY_EXISTS`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_client::{Client, pb};
//! let client = Client::connect(["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]).await?;
//! let agent = client
//!     .get_agent(pb::GetAgentRequest { workspace: "acme".into(), agent: "mary".into(), ..Default::default() })
//!     .await?;
//! println!("{} has {} open conversations", agent.display_name, agent.open_count);
//! # Ok(()) }
//! ```
//!
//! Layout: `lib.rs` holds [`Client`] with its retry loop and one method per RPC; `watch.rs` the
//! resumable Watch stream.

pub mod gateway;
mod watch;

use pb::admin_client::AdminClient;
use pb::assignments_client::AssignmentsClient;
use pb::cluster_client::ClusterClient;
use pb::events_client::EventsClient;
use pb::presence_client::PresenceClient;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
pub use switchboard_proto::switchboard::v1 as pb;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
pub use watch::WatchStream;

/// How a client connects and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long to wait for a TCP connection to one node.
    pub connect_timeout: Duration,
    /// Deadline of each attempt of a call.
    pub request_timeout: Duration,
    /// How long a call keeps retrying through the cluster's nodes before giving up.
    pub retry_timeout: Duration,
    /// Largest response accepted, in bytes.
    pub max_response_bytes: usize,
    /// The bearer token sent with every call (`<id>.<secret>`, from `switchboard ctl token
    /// create`), for clusters that require one.
    pub token: Option<String>,
    /// TLS: the cluster CA (PEM) that signed the nodes' certificates; `None` for plain HTTP/2.
    /// Node addresses must then be names or IP addresses the certificates carry.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM) to present over TLS, for clusters that map
    /// certificates to roles (`[[auth.certificates]]`) instead of tokens.
    pub tls_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            retry_timeout: Duration::from_secs(15),
            max_response_bytes: 16 * 1024 * 1024,
            token: None,
            tls_ca_pem: None,
            tls_identity_pem: None,
        }
    }
}

/// A client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No endpoint was given.
    #[error("no node address given; pass at least one host:port")]
    NoEndpoints,
    /// The token cannot be sent as gRPC metadata.
    #[error("the token is not valid in a gRPC header (printable ASCII only)")]
    BadToken,
    /// An endpoint is not a valid address.
    #[error("invalid node address {address:?}: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong.
        reason: String,
    },
}

/// A client of a Switchboard cluster. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addresses: Vec<String>,
    channels: Vec<Channel>,
    /// The node calls go to first; moves on when it fails.
    current: AtomicUsize,
    config: ClientConfig,
    /// `Bearer <token>`, when the client has one.
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
    /// Per-client part of generated request ids.
    incarnation: u128,
    counter: AtomicU64,
}

/// Whether another node (or the same one, shortly) may succeed: the node is unreachable, has no
/// quorum, or is stopping — or the connection broke during the call (the node died), which the
/// transport reports as `CANCELLED` with a transport error as its source. Retrying a write is
/// safe: it carries its idempotency key.
fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Cancelled | Code::Unknown => {
            std::error::Error::source(status).is_some_and(|source| source.is::<tonic::transport::Error>())
        }
        _ => false,
    }
}

impl Client {
    /// A client of the nodes at `addresses` (`host:port`, or `http://host:port`) with default
    /// settings. Connections are made lazily, so this succeeds while nodes are still starting.
    pub async fn connect<I, S>(addresses: I) -> Result<Self, ConnectError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_config(addresses, ClientConfig::default())
    }

    /// A client with explicit settings.
    pub fn with_config<I, S>(addresses: I, config: ClientConfig) -> Result<Self, ConnectError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let addresses: Vec<String> = addresses.into_iter().map(Into::into).collect();
        if addresses.is_empty() {
            return Err(ConnectError::NoEndpoints);
        }
        let mut channels = Vec::with_capacity(addresses.len());
        let scheme = if config.tls_ca_pem.is_some() { "https" } else { "http" };
        for address in &addresses {
            let uri = if address.contains("://") { address.clone() } else { format!("{scheme}://{address}") };
            let bad = |e: &dyn std::fmt::Display| ConnectError::BadAddress {
                address: address.clone(),
                reason: e.to_string(),
            };
            let mut endpoint = Endpoint::from_shared(uri)
                .map_err(|e| bad(&e))?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true);
            if let Some(ca) = &config.tls_ca_pem {
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca));
                if let Some((cert, key)) = &config.tls_identity_pem {
                    tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
            }
            channels.push(endpoint.connect_lazy());
        }
        let authorization = match &config.token {
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| ConnectError::BadToken)?),
            None => None,
        };
        let incarnation =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(Self {
            inner: Arc::new(Inner {
                addresses,
                channels,
                current: AtomicUsize::new(0),
                authorization,
                config,
                incarnation: incarnation ^ u128::from(std::process::id()) << 64,
                counter: AtomicU64::new(0),
            }),
        })
    }

    /// The node addresses this client uses.
    pub fn addresses(&self) -> &[String] {
        &self.inner.addresses
    }

    /// A fresh idempotency key, unique to this client.
    pub fn new_request_id(&self) -> String {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        format!("cli-{:x}-{n:x}", self.inner.incarnation)
    }

    fn fill(&self, request_id: &mut String) {
        if request_id.is_empty() {
            *request_id = self.new_request_id();
        }
    }

    /// Runs `call` against the current node, moving through the nodes while they answer
    /// `UNAVAILABLE`, until the retry timeout.
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.config.retry_timeout;
        let mut pause = Duration::from_millis(20);
        let mut attempts_on_round = 0usize;
        loop {
            let index = inner.current.load(Ordering::Relaxed) % inner.channels.len();
            let result = call(inner.channels[index].clone(), inner.config.request_timeout).await;
            match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if retryable(&status) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(node = %inner.addresses[index], %status, "call failed; trying the next node");
                    let _ = inner.current.compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed);
                    attempts_on_round += 1;
                    // Pause once every node has been tried, so a cluster without a leader is not
                    // hammered while it elects one.
                    if attempts_on_round.is_multiple_of(inner.channels.len()) {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// The node calls currently go to, as (position, channel).
    pub(crate) fn current_channel(&self) -> (usize, Channel) {
        let index = self.inner.current.load(Ordering::Relaxed) % self.inner.channels.len();
        (index, self.inner.channels[index].clone())
    }

    /// Moves calls to the node after `index` (if no other call moved them already).
    fn next_node(&self, index: usize) {
        let _ = self.inner.current.compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A Watch stream (`Assignments.Watch`) that survives node failures: when its node goes
    /// away it resumes on another from where it stopped, without repeating or skipping effects.
    pub fn watch(&self, request: pb::WatchRequest) -> WatchStream {
        watch::start(self.clone(), request)
    }
}

impl Client {
    /// `message` as a request with the client's token and `timeout`.
    fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        if let Some(authorization) = &self.inner.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        request
    }
}

/// One method per unary RPC: `$name(request) -> response`, retried through the cluster.
macro_rules! unary {
    ($( $(#[$doc:meta])* $name:ident : $client:ident, $req:ty => $resp:ty $(, fill $field:ident)? ;)*) => {
        impl Client {
            $(
                $(#[$doc])*
                pub async fn $name(&self, request: $req) -> Result<$resp, Status> {
                    #[allow(unused_mut)]
                    let mut request = request;
                    $( self.fill(&mut request.$field); )?
                    let max = self.inner.config.max_response_bytes;
                    self.retry(|channel, timeout| {
                        let request = request.clone();
                        async move {
                            $client::new(channel).max_decoding_message_size(max).$name(self.request(request, Some(timeout))).await
                        }
                    })
                    .await
                }
            )*
        }
    };
}

unary! {
    /// Publishes one gateway event (`Events.Publish`). The event id makes retries safe.
    publish: EventsClient, pb::PublishRequest => pb::PublishResponse;
    /// Publishes up to 1024 events in one entry (`Events.PublishBatch`).
    publish_batch: EventsClient, pb::PublishBatchRequest => pb::PublishBatchResponse;
    /// Sets an agent's status (`Presence.SetStatus`).
    set_status: PresenceClient, pb::SetStatusRequest => pb::SetStatusResponse, fill request_id;
    /// Reports an agent app alive (`Presence.Heartbeat`).
    heartbeat: PresenceClient, pb::HeartbeatRequest => pb::HeartbeatResponse;
    /// One agent with presence and counters (`Presence.GetAgent`).
    get_agent: PresenceClient, pb::GetAgentRequest => pb::AgentState;
    /// A page of agents (`Presence.ListAgents`).
    list_agents: PresenceClient, pb::ListAgentsRequest => pb::ListAgentsResponse;
    /// A conversation (`Assignments.GetConversation`).
    get_conversation: AssignmentsClient, pb::GetConversationRequest => pb::ConversationInfo;
    /// A page of a team's queue (`Assignments.ListQueue`).
    list_queue: AssignmentsClient, pb::ListQueueRequest => pb::ListQueueResponse;
    /// An agent picks a waiting conversation (`Assignments.Claim`).
    claim: AssignmentsClient, pb::ClaimRequest => pb::AssignmentResponse, fill request_id;
    /// A supervisor assigns a waiting conversation (`Assignments.Assign`).
    assign: AssignmentsClient, pb::AssignRequest => pb::AssignmentResponse, fill request_id;
    /// A supervisor moves a conversation (`Assignments.Transfer`).
    transfer: AssignmentsClient, pb::TransferRequest => pb::AssignmentResponse, fill request_id;
    /// Ends a conversation (`Assignments.Close`).
    close: AssignmentsClient, pb::CloseRequest => pb::AssignmentResponse, fill request_id;
    /// Every decision about a conversation, explained (`Assignments.Explain`).
    explain: AssignmentsClient, pb::ExplainRequest => pb::ExplainResponse;
    /// Creates or changes a workspace (`Admin.ConfigureWorkspace`).
    configure_workspace: AdminClient, pb::ConfigureWorkspaceRequest => pb::WriteResponse, fill request_id;
    /// A workspace's whole configuration (`Admin.GetWorkspace`).
    get_workspace: AdminClient, pb::GetWorkspaceRequest => pb::WorkspaceConfig;
    /// Creates or replaces an agent (`Admin.UpsertAgent`).
    upsert_agent: AdminClient, pb::UpsertAgentRequest => pb::WriteResponse, fill request_id;
    /// Removes an agent (`Admin.RemoveAgent`).
    remove_agent: AdminClient, pb::RemoveAgentRequest => pb::WriteResponse, fill request_id;
    /// Creates or replaces a team (`Admin.UpsertTeam`).
    upsert_team: AdminClient, pb::UpsertTeamRequest => pb::WriteResponse, fill request_id;
    /// Removes a team (`Admin.RemoveTeam`).
    remove_team: AdminClient, pb::RemoveTeamRequest => pb::WriteResponse, fill request_id;
    /// Replaces the routing rules (`Admin.SetRoutingRules`).
    set_routing_rules: AdminClient, pb::SetRoutingRulesRequest => pb::WriteResponse, fill request_id;
    /// Creates or replaces a contact (`Admin.UpsertContact`).
    upsert_contact: AdminClient, pb::UpsertContactRequest => pb::WriteResponse, fill request_id;
    /// A contact (`Admin.GetContact`).
    get_contact: AdminClient, pb::GetContactRequest => pb::ContactInfo;
    /// Who changed what (`Admin.ListAudit`).
    list_audit: AdminClient, pb::ListAuditRequest => pb::ListAuditResponse;
    /// The answering node's view of the cluster (`Cluster.Status`).
    status: ClusterClient, pb::StatusRequest => pb::ClusterStatus;
    /// Adds a learner (`Cluster.AddLearner`).
    add_learner: ClusterClient, pb::AddLearnerRequest => pb::MembershipResponse;
    /// Sets the voters (`Cluster.ChangeMembership`).
    change_membership: ClusterClient, pb::ChangeMembershipRequest => pb::MembershipResponse;
}

impl Client {
    /// The channel to one particular node (by its position in [`Client::addresses`]), with
    /// this client's TLS, for services the client has no method for (`grpc.health.v1`).
    pub fn channel_of(&self, node: usize) -> Option<tonic::transport::Channel> {
        self.inner.channels.get(node).cloned()
    }

    /// `Cluster.ExportSnapshot` of one particular node (by its position in
    /// [`Client::addresses`]): its whole state, as a stream of chunks of a snapshot file.
    pub async fn export_snapshot_of(&self, node: usize) -> Result<tonic::Streaming<pb::SnapshotChunk>, Status> {
        let channel = self
            .channel_of(node)
            .ok_or_else(|| Status::invalid_argument(format!("this client has no node number {node}")))?;
        // A chunk is at most 1 MiB of data plus a few fields.
        ClusterClient::new(channel)
            .max_decoding_message_size(2 * 1024 * 1024)
            .export_snapshot(self.request(pb::ExportSnapshotRequest {}, None))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `Cluster.Status` of one particular node (by its position in [`Client::addresses`]),
    /// without retrying elsewhere: for checking each replica.
    pub async fn status_of(&self, node: usize) -> Result<pb::ClusterStatus, Status> {
        let channel = self
            .inner
            .channels
            .get(node)
            .cloned()
            .ok_or_else(|| Status::invalid_argument(format!("this client has no node number {node}")))?;
        ClusterClient::new(channel)
            .status(self.request(pb::StatusRequest {}, Some(self.inner.config.request_timeout)))
            .await
            .map(tonic::Response::into_inner)
    }
}

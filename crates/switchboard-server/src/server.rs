//! Serving the public API on a bound listener until a shutdown future resolves.

use crate::api::Api;
use crate::auth::Authenticator;
use crate::presence::{PresenceConfig, PresenceSupervisor};
use crate::services::admin::AdminService;
use crate::services::assignments::AssignmentsService;
use crate::services::cluster::ClusterService;
use crate::services::events::EventsService;
use crate::services::presence::PresenceService;
use crate::watch::{WatchHub, WatchLimits};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchboard_proto::switchboard::v1::admin_server::AdminServer;
use switchboard_proto::switchboard::v1::assignments_server::AssignmentsServer;
use switchboard_proto::switchboard::v1::cluster_server::ClusterServer;
use switchboard_proto::switchboard::v1::events_server::EventsServer;
use switchboard_proto::switchboard::v1::presence_server::PresenceServer;
use switchboard_raft::RaftNode;
use switchboard_tls::NodeTls;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

/// The public services, by full gRPC name (health and reflection report these).
pub const SERVICE_NAMES: [&str; 5] = [
    "switchboard.v1.Events",
    "switchboard.v1.Presence",
    "switchboard.v1.Assignments",
    "switchboard.v1.Admin",
    "switchboard.v1.Cluster",
];

/// Largest request accepted by the anonymous services (health and reflection), in bytes: their
/// requests name a service or a symbol, and anyone may send them.
pub const ANONYMOUS_REQUEST_MAX_BYTES: usize = 64 * 1024;

/// How the public API behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Heartbeat supervision of agent presence.
    pub presence: PresenceConfig,
    /// About how many effects Watch streams can resume from.
    pub watch_retained_effects: usize,
    /// How many effects a Watch stream may fall behind the node (beyond the least it has been
    /// behind since it started) before it is cut off with `RESOURCE_EXHAUSTED`. At most
    /// `watch_retained_effects`.
    pub watch_backlog_max_effects: usize,
    /// Most Watch streams open at once on one node; more are refused with `RESOURCE_EXHAUSTED`.
    /// Each holds at most one entry's messages of its own, plus what the HTTP/2 transport buffers
    /// for a client that does not read (hyper's send buffer, 400 KiB).
    pub watch_streams_max: usize,
    /// How long a Watch call waits for the node to apply the `from_index` it names before it is
    /// refused with `UNAVAILABLE`.
    pub watch_catch_up_timeout: Duration,
    /// Largest request message accepted by the five `switchboard.v1` services, in bytes; larger
    /// ones are refused with `OUT_OF_RANGE` from the message's length prefix, before its body is
    /// read.
    pub max_request_bytes: usize,
    /// Largest response message sent, in bytes.
    pub max_response_bytes: usize,
    /// Most concurrent requests per client connection.
    pub concurrency_per_connection: usize,
    /// Who may call the `switchboard.v1` services; `None` lets anyone who reaches the port do
    /// anything (a warning says so at start-up). Health and reflection are always open.
    pub auth: Option<Arc<Authenticator>>,
    /// TLS on the public API with the node's certificate (reloaded without a restart); calls
    /// forwarded to the leader go over TLS too. `None`: plain HTTP/2.
    pub tls: Option<Arc<NodeTls>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let watch = WatchLimits::default();
        Self {
            presence: PresenceConfig::default(),
            watch_retained_effects: watch.retained_effects,
            watch_backlog_max_effects: watch.backlog_max_effects,
            watch_streams_max: watch.streams_max,
            watch_catch_up_timeout: watch.catch_up_timeout,
            max_request_bytes: 4 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            concurrency_per_connection: 1024,
            auth: None,
            tls: None,
        }
    }
}

impl ServerConfig {
    fn watch_limits(&self) -> WatchLimits {
        WatchLimits {
            retained_effects: self.watch_retained_effects,
            backlog_max_effects: self.watch_backlog_max_effects,
            streams_max: self.watch_streams_max,
            catch_up_timeout: self.watch_catch_up_timeout,
        }
    }
}

/// Why the API stopped serving with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not read the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS certificate cannot serve the API.
    #[error("API TLS: {0}")]
    Tls(#[from] switchboard_tls::TlsError),
    /// The configuration's limits do not fit together.
    #[error("invalid API configuration: {0}")]
    Config(String),
}

/// Serves the public API of `node` on `listener` until `shutdown` resolves, then stops
/// gracefully: health turns `NOT_SERVING`, Watch streams end with `UNAVAILABLE` (clients resume
/// on another node from the index they reached), new connections are refused and in-flight
/// calls finish.
pub async fn serve(
    node: Arc<RaftNode>,
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let watch_limits = config.watch_limits();
    watch_limits.check().map_err(ServeError::Config)?;
    crate::metrics::describe();
    let (stop_sender, stop) = watch::channel(false);
    let stopped = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };

    // Subscribe before reading the applied index, so that no change falls between the two.
    let changes = node.subscribe();
    let applied = node.read_local(|_| ()).applied_index;
    let hub = WatchHub::new(watch_limits, applied, Some(node.clone()));
    // Runs until the node's change feed closes; stopped when the server is done.
    let feed = tokio::spawn(hub.clone().feed(changes));
    let presence = PresenceSupervisor::new(config.presence, node.clone());
    // Each of these ends once `stop` turns true; `serve` waits for them before it returns.
    let background = vec![
        tokio::spawn(presence.clone().run(stopped())),
        tokio::spawn(crate::metrics::run_sampler(node.clone(), hub.clone(), stopped())),
    ];

    if config.auth.is_none() {
        tracing::warn!(
            "the public API has no [auth]: anyone who can reach this port may read and change everything; \
             configure tokens before exposing it"
        );
    }
    let api_tls = match &config.tls {
        Some(tls) => Some(tls.api_server_config()?),
        None => None,
    };
    let api =
        Arc::new(Api::new(node, hub, presence, stopped_flag(&stop_sender), config.auth.clone(), config.tls.clone()));
    let (health, health_service) = tonic_health::server::health_reporter();
    // The health task and the shutdown signal both set the status; the flag under this lock
    // says whether shutdown began, after which only NOT_SERVING is reported.
    let health_lock = Arc::new(tokio::sync::Mutex::new(false));
    let serving = node_serving(&api);
    set_health(&health, serving).await;
    let health_task =
        tokio::spawn(follow_health(serving, Arc::clone(&api), health.clone(), Arc::clone(&health_lock), stopped()));
    let reflection_builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchboard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in SERVICE_NAMES {
            builder = builder.with_service_name(name);
        }
        builder
    };
    // Both versions of reflection: grpcurl and grpcui speak v1, Python's grpcio-reflection and
    // older tools only v1alpha.
    let reflection = reflection_builder().build_v1()?;
    let reflection_alpha = reflection_builder().build_v1alpha()?;

    let request = config.max_request_bytes;
    let response = config.max_response_bytes;
    let stop_sender = Arc::new(stop_sender);
    let signal_stop = Arc::clone(&stop_sender);
    let signal = async move {
        shutdown.await;
        {
            let mut stopping = health_lock.lock().await;
            *stopping = true;
            set_health(&health, false).await;
        }
        let _ = signal_stop.send(true);
        tracing::info!("public API shutting down");
    };
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(config.concurrency_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(crate::grpc_metrics::GrpcMetricsLayer)
        .add_service(
            health_service.max_decoding_message_size(ANONYMOUS_REQUEST_MAX_BYTES).max_encoding_message_size(response),
        )
        .add_service(
            reflection.max_decoding_message_size(ANONYMOUS_REQUEST_MAX_BYTES).max_encoding_message_size(response),
        )
        .add_service(
            reflection_alpha.max_decoding_message_size(ANONYMOUS_REQUEST_MAX_BYTES).max_encoding_message_size(response),
        )
        .add_service(
            EventsServer::new(EventsService { api: api.clone() })
                .max_decoding_message_size(request)
                .max_encoding_message_size(response),
        )
        .add_service(
            PresenceServer::new(PresenceService { api: api.clone() })
                .max_decoding_message_size(request)
                .max_encoding_message_size(response),
        )
        .add_service(
            AssignmentsServer::new(AssignmentsService { api: api.clone() })
                .max_decoding_message_size(request)
                .max_encoding_message_size(response),
        )
        .add_service(
            AdminServer::new(AdminService { api: api.clone() })
                .max_decoding_message_size(request)
                .max_encoding_message_size(response),
        )
        .add_service(
            ClusterServer::new(ClusterService { api })
                .max_decoding_message_size(request)
                .max_encoding_message_size(response),
        );
    let served = match api_tls {
        Some(tls) => router.serve_with_incoming_shutdown(switchboard_tls::incoming(listener, tls), signal).await,
        None => router.serve_with_incoming_shutdown(switchboard_tls::plain_incoming(listener), signal).await,
    };
    // Also when the server failed: the background tasks stop, and are waited for, so that the
    // caller can rely on nothing of this server running once `serve` returns.
    let _ = stop_sender.send(true);
    let stopping = async {
        for task in background {
            if let Err(error) = task.await {
                tracing::warn!(%error, "a background task of the API server failed");
            }
        }
    };
    if tokio::time::timeout(BACKGROUND_STOP_GRACE, stopping).await.is_err() {
        tracing::warn!("background tasks did not stop within {BACKGROUND_STOP_GRACE:?}; leaving them");
    }
    feed.abort();
    health_task.abort();
    served?;
    Ok(())
}

/// How often health follows the node's view of the cluster.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

fn node_serving(api: &Api) -> bool {
    api.node.can_serve()
}

/// Sets every service's health (and the server's, `""`).
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    metrics::gauge!(crate::metrics::SERVING).set(if serving { 1.0 } else { 0.0 });
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    for name in SERVICE_NAMES.into_iter().chain([""]) {
        health.set_service_status(name, status).await;
    }
}

/// Keeps health true: `NOT_SERVING` while the node knows no leader, or leads without having
/// heard from a quorum lately (its writes could not commit), `SERVING` otherwise.
async fn follow_health(
    reported: bool,
    api: Arc<Api>,
    health: tonic_health::server::HealthReporter,
    lock: Arc<tokio::sync::Mutex<bool>>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut last = reported;
    // At once when the node's view of the cluster changes (a leader becomes known), and on a
    // tick for what only time changes (a leader's last quorum acknowledgement growing old).
    let mut metrics = api.node.raft().metrics();
    let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            changed = metrics.changed() => {
                if changed.is_err() {
                    // The Raft core is gone: nothing will take writes here again.
                    let stopping = lock.lock().await;
                    if !*stopping {
                        set_health(&health, false).await;
                    }
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        let serving = node_serving(&api);
        // Set on every look, not only on change: the exporter drops gauges left unset.
        metrics::gauge!(crate::metrics::SERVING).set(if serving && !*lock.lock().await { 1.0 } else { 0.0 });
        if serving != last {
            let stopping = lock.lock().await;
            if *stopping {
                return;
            }
            set_health(&health, serving).await;
            tracing::info!(serving, "health changed");
            last = serving;
        }
    }
}

/// How long `serve` waits for its background tasks (presence supervision, the metrics sampler)
/// to stop after the server did.
const BACKGROUND_STOP_GRACE: Duration = Duration::from_secs(10);

fn stopped_flag(sender: &watch::Sender<bool>) -> watch::Receiver<bool> {
    sender.subscribe()
}

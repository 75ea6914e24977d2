//! # switchboard-nats
//!
//! The NATS JetStream edge of a node (`shared/DESIGN.md`, "Interfaces"), beside the gRPC one in
//! `switchboard-server`: both turn protobuf into core inputs with `switchboard_server::convert`
//! and count into the same `switchboard_server::metrics` series. The binary runs it next to
//! `switchboard_server::serve` with [`run_edge`].
//!
//! Gateways publish `GatewayEvent`s (protobuf) to `switchboard.events.<workspace>`, kept by the
//! stream `SWITCHBOARD`. Only the Raft leader consumes them, through the durable pull consumer
//! `switchboard-assigner` (`ingest.rs`): it decodes and checks each message, proposes the
//! valid ones in batches, and acks each only after its entry is committed. Messages that can
//! never take effect are republished to `switchboard.rejected.<workspace>` (kept by the stream
//! `SWITCHBOARD_REJECTED`) with a `Switchboard-Error` header, then acked.
//!
//! The leader also publishes every applied effect (`egress.rs`) to
//! `switchboard.effects.<workspace>.<kind>`, kept by the stream `SWITCHBOARD_EFFECTS`, with
//! `Nats-Msg-Id` = `<log index>.<sequence>`, resuming after the last effect the stream holds
//! from the replicated outbox.
//!
//! Both start only on the *confirmed* leader (`RaftNode::until_confirmed_leader`): a node that
//! believes for a moment that it leads, as openraft may report at start-up, touches nothing.

mod egress;
mod ingest;
pub use ingest::decode_event;

use async_nats::jetstream;
use std::sync::Arc;
use std::time::Duration;
use switchboard_client::gateway::NatsSecurity;
use switchboard_raft::RaftNode;

/// The stream of gateway events.
pub const EVENTS_STREAM: &str = "SWITCHBOARD";
/// Subjects of gateway events: `switchboard.events.<workspace>`.
pub const EVENTS_SUBJECTS: &str = "switchboard.events.>";
/// The durable consumer the leader pulls events with.
pub const CONSUMER: &str = "switchboard-assigner";
/// The stream of effects.
pub const EFFECTS_STREAM: &str = "SWITCHBOARD_EFFECTS";
/// Subjects of effects: `switchboard.effects.<workspace>.<kind>`.
pub const EFFECTS_SUBJECTS: &str = "switchboard.effects.>";
/// The stream keeping rejected events (as long as effects).
pub const REJECTED_STREAM: &str = "SWITCHBOARD_REJECTED";
/// Subjects of rejected events: `switchboard.rejected.<workspace>`.
pub const REJECTED_SUBJECTS: &str = "switchboard.rejected.>";
/// Header naming why a message was rejected (a short stable reason such as `undecodable`).
pub const ERROR_HEADER: &str = "Switchboard-Error";
/// Header with the human-readable explanation of a rejection.
pub const ERROR_MESSAGE_HEADER: &str = "Switchboard-Error-Message";
/// Header of a rejected event: the subject it was published to.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Switchboard-Subject";
/// Header of a rejected event: the `Nats-Msg-Id` it was published with.
pub const ORIGINAL_MSG_ID_HEADER: &str = "Switchboard-Msg-Id";
/// Header of an effect message: its log index.
pub const LOG_INDEX_HEADER: &str = "Switchboard-Log-Index";
/// Header of an effect message: its sequence within the entry.
pub const SEQUENCE_HEADER: &str = "Switchboard-Sequence";
/// Header of an effect naming the `Nats-Msg-Id` of the effect stored just before it.
pub const PREVIOUS_MSG_ID_HEADER: &str = "Switchboard-Previous-Msg-Id";

/// The subject events of `workspace` are published to.
pub fn events_subject(workspace: &str) -> String {
    format!("switchboard.events.{workspace}")
}

/// The subject rejected events of `workspace` are republished to.
pub fn rejected_subject(workspace: &str) -> String {
    format!("switchboard.rejected.{workspace}")
}

/// The subject an effect of `kind` in `workspace` is published to.
pub fn effects_subject(workspace: &str, kind: &str) -> String {
    format!("switchboard.effects.{workspace}.{kind}")
}

/// How a node talks to NATS.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URL(s), comma separated, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// JetStream replicas of both streams (1 for a single NATS server, 3 for a NATS cluster).
    pub stream_replicas: usize,
    /// JetStream's `Nats-Msg-Id` duplicate window of both streams.
    pub duplicate_window: Duration,
    /// How long effects are kept in `SWITCHBOARD_EFFECTS`.
    pub effects_max_age: Duration,
    /// How long events are kept in `SWITCHBOARD` (consumed or not: they stay for what-if
    /// replays); `None` keeps them forever.
    pub events_max_age: Option<Duration>,
    /// Most events delivered to the leader and not yet acked.
    pub max_ack_pending: i64,
    /// How long NATS waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Pauses before successive redeliveries of an unacked message.
    pub redelivery_backoff: Vec<Duration>,
    /// Most events in one Raft proposal.
    pub batch_max: usize,
    /// How long the leader waits for more events to fill a proposal.
    pub batch_linger: Duration,
    /// Most proposals in flight; when they are all waiting (no quorum) the leader stops pulling.
    pub max_in_flight: usize,
    /// Largest accepted event message, in bytes.
    pub max_event_bytes: usize,
    /// The node's NATS credentials and TLS.
    pub security: NatsSecurity,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream_replicas: 1,
            duplicate_window: Duration::from_secs(120),
            effects_max_age: Duration::from_secs(7 * 24 * 3600),
            events_max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(30),
            redelivery_backoff: vec![Duration::from_secs(30), Duration::from_secs(60), Duration::from_secs(120)],
            batch_max: 1024,
            batch_linger: Duration::ZERO,
            max_in_flight: 4,
            max_event_bytes: 64 * 1024,
            security: NatsSecurity::default(),
        }
    }
}

/// The node's NATS edge until `shutdown` resolves: ingest and egress ([`run`]) when `config` is
/// given, otherwise the outbox released without publishing ([`release_outbox_without_nats`]).
pub async fn run_edge(
    node: Arc<RaftNode>,
    config: Option<NatsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    match config {
        Some(config) => run(node, config, shutdown).await,
        None => release_outbox_without_nats(node, shutdown).await,
    }
}

/// Connects to NATS and runs ingest and egress until `shutdown` resolves. Both work only while
/// this node is the confirmed leader; a NATS outage is retried as soon as NATS answers again
/// and never stops the node.
pub async fn run(
    node: Arc<RaftNode>,
    config: NatsConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (outages_tx, outages) = Outages::channel();
    let client = loop {
        let outages_tx = outages_tx.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("switchboard-node-{}", node.id()))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Disconnected) {
                    outages_tx.send_modify(|count| *count = count.wrapping_add(1));
                }
                std::future::ready(())
            })
            .retry_on_initial_connect();
        let connected = match (config.security.apply(options).await, server_addrs(&config.url)) {
            (Ok(options), Ok(servers)) => options.connect(servers).await.map_err(|e| e.to_string()),
            (Err(error), _) => Err(error.to_string()),
            (_, Err(error)) => Err(error),
        };
        match connected {
            Ok(client) => break client,
            Err(error) => {
                tracing::error!(url = %config.url, %error, "cannot connect to NATS; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tracing::info!(url = %config.url, "connected to NATS");
    let js = jetstream::new(client.clone());
    let ingest = tokio::spawn(ingest::run(
        node.clone(),
        js.clone(),
        client.clone(),
        outages.clone(),
        config.clone(),
        stop_rx.clone(),
    ));
    let pending = tokio::spawn(ingest::sample_pending(js.clone(), stop_rx.clone()));
    let egress = tokio::spawn(egress::run(node, js, client.clone(), outages, config, stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    // Bounded: with NATS down, a flush or an ack could wait for a reconnection forever.
    let grace = Duration::from_secs(5);
    if tokio::time::timeout(grace, async {
        let _ = ingest.await;
        let _ = egress.await;
        let _ = pending.await;
        // With NATS down there is nothing to flush to; waiting for it would only delay the
        // node's shutdown.
        if client.connection_state() == async_nats::connection::State::Connected {
            let _ = client.flush().await;
        }
    })
    .await
    .is_err()
    {
        tracing::warn!("NATS ingest and egress did not stop within {grace:?}; leaving them");
    }
}

/// Longest NATS URL list accepted, in bytes.
pub const NATS_URL_BYTES_MAX: usize = 4096;

/// The servers of a comma-separated URL list (`nats://a:4222,nats://b:4222`), each checked;
/// the error names the URL that is not one.
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    if urls.len() > NATS_URL_BYTES_MAX {
        return Err(format!("{} bytes; at most {NATS_URL_BYTES_MAX} (nats_url_bytes_max)", urls.len()));
    }
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>().map_err(|e| format!("{:?} is not a NATS URL: {e}", redacted(url)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("no NATS URL given".to_owned());
    }
    Ok(servers)
}

/// A URL without the password or token it may carry (`nats://user:secret@host` →
/// `nats://user:***@host`), for error messages.
fn redacted(url: &str) -> String {
    let Some((userinfo, host)) = url.rsplit_once('@') else { return url.to_owned() };
    let (scheme, user) = userinfo.split_once("://").map_or(("", userinfo), |(s, u)| (s, u));
    let user = user.split(':').next().unwrap_or("");
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{scheme}{user}:***@{host}")
}

/// Why an ingest or egress session ended. Each is logged and the session starts again after a
/// back-off (`Backoff`); none stops the node.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// A stream could not be created or updated to the configuration.
    #[error("cannot create or update a stream: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
    /// A stream's state could not be read.
    #[error("cannot read a stream's state: {0}")]
    StreamInfo(#[from] jetstream::context::RequestError),
    /// The effects stream's last message could not be read.
    #[error("cannot read the last effect stored: {0}")]
    LastEffect(#[from] jetstream::stream::LastRawMessageError),
    /// The effects stream's last message is not an effect this node published.
    #[error("the last message of {EFFECTS_STREAM} has no {LOG_INDEX_HEADER}/{SEQUENCE_HEADER} headers")]
    UnnumberedEffect,
    /// An effect or a rejected event could not be stored.
    #[error("cannot publish: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    /// The connection to NATS dropped while the session ran.
    #[error("the connection to NATS was lost")]
    Disconnected,
    /// A message of an atomic batch could not be sent.
    #[error("cannot send a batched message: {0}")]
    Send(#[from] async_nats::client::PublishError),
    /// The assigner consumer could not be read.
    #[error("cannot read consumer {CONSUMER}: {0}")]
    ConsumerInfo(#[from] jetstream::context::ConsumerInfoError),
    /// The assigner consumer could not be replaced.
    #[error("cannot replace consumer {CONSUMER}: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    /// The consumer was made by the leader of a later term: this node is deposed.
    #[error("{CONSUMER} belongs to the leader of term {owner}; this node led term {term}")]
    Fenced {
        /// The term the consumer's metadata names.
        owner: u64,
        /// The term this node led.
        term: u64,
    },
    /// Pulling messages failed.
    #[error("cannot pull events: {0}")]
    Pull(#[from] jetstream::consumer::StreamError),
    /// A pulled message was an error.
    #[error("pulling events failed: {0}")]
    Messages(#[from] jetstream::consumer::pull::MessagesError),
    /// The pull stream ended.
    #[error("the pull stream ended")]
    PullEnded,
    /// A batch of events did not commit; later ones must not be acked before it.
    #[error("{count} events not committed ({error}); resuming from the ack floor")]
    NotCommitted {
        /// Events in the batch.
        count: usize,
        /// Why the proposal failed.
        error: switchboard_raft::ProposeError,
    },
    /// Rejected events could not be stored in the rejected stream; their batch must not be
    /// acked before they are.
    #[error("{count} rejected events could not be stored; resuming from the ack floor")]
    RejectionsNotStored {
        /// How many.
        count: usize,
    },
}

/// The pause before reconnection attempt `attempts` to NATS: at once, then 50 ms more per
/// attempt up to 250 ms. async-nats's default backs off to 4 s, which kept a node from
/// resuming for seconds after NATS was back; an attempt every 250 ms costs nothing.
pub fn reconnect_delay(attempts: usize) -> Duration {
    let steps = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    (Duration::from_millis(50) * steps.min(5)).min(Duration::from_millis(250))
}

/// Without NATS nobody publishes effects (gateways use Watch streams): the confirmed leader
/// releases the outbox about once a second, so that it does not grow without bound. All nodes
/// of a cluster must agree on having NATS or not.
pub async fn release_outbox_without_nats(node: Arc<RaftNode>, shutdown: impl std::future::Future<Output = ()> + Send) {
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let releasing = async {
        while let Some(term) = node.until_confirmed_leader(&mut stop).await {
            while node.confirmed_leader_term() == Some(term) {
                egress::confirm_in_background(&node, node.outbox_stats().applied);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tokio::select! {
        () = releasing => {}
        () = shutdown => { let _ = stop_tx.send(true); }
    }
}

/// The pause between failed sessions: 100 ms doubling to 5 s, reset by a clean end; while the
/// connection to NATS is down, until it is back instead.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }

    /// After a failed session: if the connection to NATS is down, waits until it is back (and
    /// starts the back-off over, so the next session starts at once); otherwise pauses.
    async fn pause_or_reconnected(
        &mut self,
        client: &async_nats::Client,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) {
        if client.connection_state() == async_nats::connection::State::Connected {
            self.pause().await;
            return;
        }
        while client.connection_state() != async_nats::connection::State::Connected && !*stop.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(Self::POLL) => {}
                _ = stop.changed() => {}
            }
        }
        self.reset();
    }

    /// How often a broken connection is checked for its return.
    const POLL: Duration = Duration::from_millis(20);
}

/// Counts the connection's losses, so that a session can end the moment the connection it
/// started on drops instead of waiting out an ack timeout (5 s) or a pull heartbeat (10 s)
/// for replies the dead connection will never bring. What the session left unsettled is
/// redelivered (ingest) or found again from the stream's last effect (egress).
#[derive(Clone, Debug)]
pub(crate) struct Outages(tokio::sync::watch::Receiver<u64>);

impl Outages {
    fn channel() -> (tokio::sync::watch::Sender<u64>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (tx, Self(rx))
    }

    /// How many times the connection has been lost so far.
    pub(crate) fn count(&self) -> u64 {
        *self.0.borrow()
    }

    /// Runs `session` unless the connection is lost, having been lost `seen` times when it
    /// started; a loss ends it with [`SessionError::Disconnected`].
    pub(crate) async fn unless_lost<T>(
        &self,
        seen: u64,
        session: impl std::future::Future<Output = Result<T, SessionError>>,
    ) -> Result<T, SessionError> {
        let mut watch = self.0.clone();
        let lost = async move {
            // Err: the connection (and its callback) is gone: nothing to watch any more.
            if watch.wait_for(|count| *count != seen).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = session => result,
            () = lost => Err(SessionError::Disconnected),
        }
    }
}

/// Creates a file-backed stream of `subjects` with the node's replica count, or brings an
/// existing one's duplicate window, maximum age and atomic publishing to what is configured;
/// `duplicate_window` and `max_age` of `None` mean JetStream's defaults (two minutes; forever).
async fn file_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
    name: &str,
    subjects: &str,
    duplicate_window: Option<Duration>,
    max_age: Option<Duration>,
) -> Result<jetstream::stream::Stream, async_nats::error::Error<jetstream::context::CreateStreamErrorKind>> {
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: config.stream_replicas,
            duplicate_window: duplicate_window.unwrap_or_default(),
            max_age: max_age.unwrap_or_default(),
            // Effects are published, and gateways may publish events, in atomic batches.
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await?;
    // A stream made by an earlier version, or under other settings, is updated: it takes
    // atomic batches, and keeps messages as long as the configuration now says.
    let current = &stream.cached_info().config;
    let window = duplicate_window.unwrap_or(current.duplicate_window);
    let age = max_age.unwrap_or_default();
    if !current.allow_atomic_publish || current.max_age != age || current.duplicate_window != window {
        let mut updated = current.clone();
        tracing::info!(
            stream = name,
            max_age_s = age.as_secs(),
            was_max_age_s = current.max_age.as_secs(),
            duplicate_window_s = window.as_secs(),
            "updating the stream to the configured retention"
        );
        updated.allow_atomic_publish = true;
        updated.max_age = age;
        updated.duplicate_window = window;
        js.update_stream(updated).await.map_err(|e| {
            async_nats::error::Error::with_source(jetstream::context::CreateStreamErrorKind::Response, e)
        })?;
        stream = js.get_stream(name).await.map_err(|e| {
            async_nats::error::Error::with_source(jetstream::context::CreateStreamErrorKind::Response, e)
        })?;
    }
    Ok(stream)
}

/// Whether `token` can be one subject token (the core's workspace-id rule).
pub use switchboard_core::is_subject_token;

/// The workspace token of `switchboard.events.<workspace>`.
fn workspace_of_subject(subject: &str) -> Option<&str> {
    subject.strip_prefix("switchboard.events.").filter(|rest| !rest.is_empty() && !rest.contains('.'))
}

/// The real nats-server the integration tests start (one definition for both).
#[cfg(test)]
#[path = "../../switchboard/tests/support/nats.rs"]
#[allow(dead_code, unreachable_pub)]
mod test_nats_server;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_ends_the_moment_its_connection_is_lost_and_not_for_an_earlier_loss() {
        let (lost, outages) = Outages::channel();
        lost.send_modify(|count| *count += 1);
        // Started after the first loss: runs to its own end.
        let seen = outages.count();
        assert_eq!(seen, 1);
        let finished = outages.unless_lost(seen, async { Ok::<_, SessionError>(7) }).await;
        assert_eq!(finished.ok(), Some(7));
        // A session waiting on a reply that will never come ends when the connection drops.
        let waiting = outages.unless_lost(seen, std::future::pending::<Result<(), SessionError>>());
        let drop_connection = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            lost.send_modify(|count| *count += 1);
        };
        let (ended, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(10), waiting), drop_connection);
        let ended = ended.expect("the session ended when the connection was lost");
        assert!(matches!(ended, Err(SessionError::Disconnected)), "{ended:?}");
    }

    #[tokio::test]
    async fn the_events_stream_keeps_events_as_long_as_configured_and_an_existing_one_is_brought_to_it() {
        let server = test_nats_server::NatsServer::start().await;
        let js = jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
        let age = |stream: &jetstream::stream::Stream| stream.cached_info().config.max_age;
        // A stream made by an earlier version: no age limit, no atomic batches.
        js.create_stream(jetstream::stream::Config {
            name: EVENTS_STREAM.to_owned(),
            subjects: vec![EVENTS_SUBJECTS.to_owned()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("old stream");
        let config = NatsConfig::default();
        let stream = ingest::events_stream(&js, &config).await.expect("updated");
        assert_eq!(age(&stream), Duration::from_secs(30 * 24 * 3600), "the default keeps events 30 days");
        assert!(stream.cached_info().config.allow_atomic_publish);
        // As the server now has it, not only as this call reports it.
        let stored = js.get_stream(EVENTS_STREAM).await.expect("stream");
        assert_eq!(age(&stored), Duration::from_secs(30 * 24 * 3600));
        assert_eq!(stored.cached_info().config.duplicate_window, config.duplicate_window);

        let shorter = NatsConfig { events_max_age: Some(Duration::from_secs(3_600)), ..NatsConfig::default() };
        assert_eq!(age(&ingest::events_stream(&js, &shorter).await.expect("shortened")), Duration::from_secs(3_600));
        let forever = NatsConfig { events_max_age: None, ..NatsConfig::default() };
        assert_eq!(
            age(&ingest::events_stream(&js, &forever).await.expect("unlimited")),
            Duration::ZERO,
            "0 is JetStream's forever"
        );
    }

    #[test]
    fn reconnection_is_attempted_at_once_then_every_250_ms_at_most() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(6), Duration::from_millis(250));
        assert_eq!(reconnect_delay(usize::MAX), Duration::from_millis(250));
    }

    #[test]
    fn a_url_list_names_every_server_and_a_bad_one_is_named() {
        let servers =
            server_addrs("nats://nats-1.internal:4222, nats://nats-2.internal:4222,nats://nats-3.internal:4222")
                .expect("three servers");
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].host(), "nats-2.internal");
        let error = server_addrs("nats://a:4222,nats://b:notaport").expect_err("a bad port");
        assert!(error.contains("nats://b:notaport"), "{error}");
        assert!(server_addrs(" , ").is_err());
        let error = server_addrs("nats://app:s3cret@host:bad").expect_err("a bad port");
        assert!(!error.contains("s3cret") && error.contains("app:***@host:bad"), "{error}");
        assert!(
            server_addrs(&"n".repeat(NATS_URL_BYTES_MAX + 1)).expect_err("too long").contains("nats_url_bytes_max")
        );
    }

    #[test]
    fn subjects_follow_the_design() {
        assert_eq!(events_subject("acme"), "switchboard.events.acme");
        assert_eq!(rejected_subject("acme"), "switchboard.rejected.acme");
        assert_eq!(effects_subject("acme", "assigned"), "switchboard.effects.acme.assigned");
        assert_eq!(workspace_of_subject("switchboard.events.acme"), Some("acme"));
        assert_eq!(workspace_of_subject("switchboard.events.acme.x"), None);
        assert_eq!(workspace_of_subject("switchboard.events."), None);
        assert!(is_subject_token("acme-eu_1"));
        for bad in ["", "a.b", "a*", "a>", "a b"] {
            assert!(!is_subject_token(bad), "{bad:?}");
        }
    }

    /// README.md's "NATS contract" section.
    fn contract_section() -> &'static str {
        let readme = include_str!("../../../README.md");
        let start = readme.find("\n## NATS contract\n").expect("README.md has a \"## NATS contract\" section");
        let rest = &readme[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
        &rest[..end]
    }

    fn names_of_contract() -> Vec<(&'static str, String)> {
        use switchboard_proto::switchboard::v1::NatsContract;
        let contract = NatsContract::default();
        vec![
            (EVENTS_STREAM, contract.events_stream().to_owned()),
            ("switchboard.events.", contract.events_subject_prefix().to_owned()),
            (CONSUMER, contract.assigner_consumer().to_owned()),
            (EFFECTS_STREAM, contract.effects_stream().to_owned()),
            ("switchboard.effects.", contract.effects_subject_prefix().to_owned()),
            (REJECTED_STREAM, contract.rejected_stream().to_owned()),
            ("switchboard.rejected.", contract.rejected_subject_prefix().to_owned()),
            ("Nats-Msg-Id", contract.msg_id_header().to_owned()),
            (PREVIOUS_MSG_ID_HEADER, contract.previous_msg_id_header().to_owned()),
            (LOG_INDEX_HEADER, contract.log_index_header().to_owned()),
            (SEQUENCE_HEADER, contract.sequence_header().to_owned()),
            (ERROR_HEADER, contract.error_header().to_owned()),
            (ERROR_MESSAGE_HEADER, contract.error_message_header().to_owned()),
            (ORIGINAL_SUBJECT_HEADER, contract.original_subject_header().to_owned()),
            (ORIGINAL_MSG_ID_HEADER, contract.original_msg_id_header().to_owned()),
        ]
    }

    #[test]
    fn the_node_uses_the_names_nats_proto_gives() {
        for (ours, proto) in names_of_contract() {
            assert_eq!(ours, proto, "nats.proto's NatsContract and the node disagree");
        }
        assert_eq!(
            events_subject("w"),
            format!("{}w", switchboard_proto::switchboard::v1::NatsContract::default().events_subject_prefix())
        );
        assert!(
            EVENTS_SUBJECTS.starts_with("switchboard.events.") && EFFECTS_SUBJECTS.starts_with("switchboard.effects.")
        );
    }

    #[test]
    fn effect_kinds_are_the_fields_of_effect_kind_and_the_subject_tokens() {
        use prost::Message as _;
        use switchboard_proto::switchboard::v1::EffectKinds;
        let kinds = EffectKinds::default();
        let listed: std::collections::BTreeSet<&str> = [
            kinds.assigned(),
            kinds.unassigned(),
            kinds.queued(),
            kinds.queue_position(),
            kinds.outside_hours(),
            kinds.welcome(),
            kinds.reopened(),
            kinds.closed(),
            kinds.agent_status(),
        ]
        .into_iter()
        .collect();
        let core: std::collections::BTreeSet<&str> = switchboard_core::Effect::KINDS.into_iter().collect();
        assert_eq!(listed, core, "nats.proto's EffectKinds and the core's Effect::KINDS disagree");
        // The fields of the oneof `Effect.kind`, read from the compiled descriptors.
        let files =
            prost_types::FileDescriptorSet::decode(switchboard_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let effect = files
            .file
            .iter()
            .filter(|f| f.package() == "switchboard.v1")
            .flat_map(|f| f.message_type.iter())
            .find(|m| m.name() == "Effect")
            .expect("message Effect");
        let kind_oneof = effect.oneof_decl.iter().position(|o| o.name() == "kind").expect("oneof kind") as i32;
        let fields: std::collections::BTreeSet<&str> =
            effect.field.iter().filter(|f| f.oneof_index == Some(kind_oneof)).map(|f| f.name()).collect();
        assert_eq!(fields, core, "the fields of Effect.kind are not the effect kinds");
    }

    #[test]
    fn the_readme_states_the_nats_contract_with_the_same_names() {
        let section = contract_section();
        let mut missing = Vec::new();
        let mut names: Vec<String> = names_of_contract().into_iter().map(|(_, name)| name).collect();
        names.extend(switchboard_core::Effect::KINDS.iter().map(|kind| (*kind).to_owned()));
        names.extend(super::ingest::reason::ALL.iter().map(|reason| (*reason).to_owned()));
        // A duplicate is counted, not rejected.
        names.extend(
            switchboard_core::ApplyError::REASONS.iter().filter(|r| **r != "duplicate").map(|r| (*r).to_owned()),
        );
        names.push(switchboard_server::metrics::EVENTS_DUPLICATE_TOTAL.to_owned());
        names.push(switchboard_server::metrics::EVENTS_REJECTED_TOTAL.to_owned());
        for field in ["event_id", "log_index", "sequence", "position_update_interval_s"] {
            names.push(field.to_owned());
        }
        for name in names {
            // Subject prefixes appear with their placeholder, e.g. `switchboard.events.<workspace>`.
            if !section.contains(&format!("`{name}")) {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "README.md's NATS contract section does not name {missing:?}");
    }
}

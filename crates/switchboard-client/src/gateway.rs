//! The gateway library: publish conversation events to NATS JetStream and consume the effects
//! Switchboard publishes back.
//!
//! A channel gateway (WhatsApp, e-mail, ...) turns what its channel tells it into
//! [`pb::GatewayEvent`]s with the builders in [`events`], publishes them with
//! [`Gateway::publish`] (acknowledged once JetStream has stored the event; `Nats-Msg-Id` is the
//! event id, so a retried publish is stored once) — or, at high rates, through a [`Batcher`]
//! ([`Gateway::batcher`]: events queue while earlier ones are being stored and go out together
//! as one JetStream atomic batch, one write on the server) — and acts
//! on effects from
//! [`Gateway::effects`] — "Mary will answer you shortly", "you are number 4 in the queue",
//! "we open at 9:00". Effects arrive in log order; ack each once acted upon.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_client::gateway::{Gateway, events};
//! use switchboard_client::pb;
//! let gateway = Gateway::connect("nats://127.0.0.1:4222").await?;
//! gateway.publish(&events::opened("wa-msg-1", "demo", "conv-1", "+5511999990000", pb::Channel::Whatsapp)).await?;
//! let mut effects = gateway.effects("whatsapp-gateway", "demo").await?;
//! while let Some(delivery) = effects.next().await {
//!     let delivery = delivery?;
//!     if let Some(pb::effect::Kind::Assigned(assigned)) = &delivery.effect.kind {
//!         println!("{} will answer {}", assigned.agent_name, assigned.conversation);
//!     }
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```

mod batcher;

pub use batcher::{BATCHES_IN_FLIGHT_MAX, Batcher, BatcherConfig, BatcherStats, QUEUE_EVENTS_MAX, Stored};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use prost::Message as _;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_proto::switchboard::v1 as pb;

/// The stream Switchboard consumes events from.
pub const EVENTS_STREAM: &str = "SWITCHBOARD";
/// The stream Switchboard publishes effects to.
pub const EFFECTS_STREAM: &str = "SWITCHBOARD_EFFECTS";
/// Most events in one [`Gateway::publish_batch`] (nats-server takes at most 1,000 messages in
/// an atomic batch).
pub const BATCH_EVENTS_MAX: usize = 1_000;
/// Longest wait [`Gateway::with_ack_timeout`] accepts for a publish's acknowledgement.
pub const ACK_TIMEOUT_MAX: Duration = Duration::from_secs(3_600);

/// A publish JetStream has not acknowledged yet: await it for the [`PublishAck`], or an error
/// once the JetStream context's timeout (5 s by default) has passed **since the send**, or as
/// soon as the connection to NATS has been re-established since the send (then the ack is
/// lost with the old connection, or the message was only buffered: publish it again with the
/// same event id, which JetStream and the state machine both deduplicate).
///
/// async-nats starts a `PublishAckFuture`'s timeout when it is awaited, not when it is sent:
/// a window of publishes whose acks were lost together (NATS restarted under them), awaited
/// one after another as pipelining does, took one full timeout each — 64 in flight, over five
/// minutes before the last was found lost and sent again. Here they all expire together.
///
/// Likewise, acks swallowed by a NATS restart used to cost the whole timeout although the
/// client had reconnected long before: an ack not there after [`RECONNECT_CHECK_INTERVAL`]
/// also watches the connection's reconnect count.
///
/// [`PublishAck`]: jetstream::publish::PublishAck
#[derive(Debug)]
#[must_use = "an unawaited ack does not tell whether the event was stored"]
pub struct PendingAck {
    deadline: tokio::time::Instant,
    ack: jetstream::context::PublishAckFuture,
    client: async_nats::Client,
    /// The client's connect count before the send.
    connects: u64,
}

/// How often an ack that has not come yet checks whether the client reconnected since its send.
pub const RECONNECT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Successful connects of `client` so far (the first one included).
fn connects(client: &async_nats::Client) -> u64 {
    client.statistics().connects.load(std::sync::atomic::Ordering::Relaxed)
}

impl PendingAck {
    fn new(
        js: &jetstream::Context,
        ack: jetstream::context::PublishAckFuture,
        client: &async_nats::Client,
        connects: u64,
    ) -> Self {
        use jetstream::context::traits::TimeoutProvider as _;
        // A connection's own request timeout may be anything: past an hour, an hour.
        let timeout = js.timeout().min(ACK_TIMEOUT_MAX);
        Self { deadline: tokio::time::Instant::now() + timeout, ack, client: client.clone(), connects }
    }
}

impl std::future::IntoFuture for PendingAck {
    type Output = Result<jetstream::publish::PublishAck, GatewayError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let PendingAck { deadline, ack, client, connects: before } = self;
            let mut ack = std::pin::pin!(tokio::time::timeout_at(deadline, ack.into_future()));
            loop {
                match tokio::time::timeout(RECONNECT_CHECK_INTERVAL, &mut ack).await {
                    Ok(Ok(acknowledged)) => return acknowledged.map_err(GatewayError::Publish),
                    Ok(Err(_)) => {
                        return Err(GatewayError::Publish(jetstream::context::PublishError::new(
                            jetstream::context::PublishErrorKind::TimedOut,
                        )));
                    }
                    Err(_) if connects(&client) != before => {
                        return Err(GatewayError::Publish(jetstream::context::PublishError::with_source(
                            jetstream::context::PublishErrorKind::BrokenPipe,
                            "the connection to NATS was re-established after the send, so its ack will not come: \
                             publish the event again (same event id)",
                        )));
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

/// What went wrong talking to NATS, or with an event before it was sent.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The event lacks something every event needs.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A setting of the gateway is out of its range.
    #[error("invalid gateway setting: {0}")]
    InvalidConfig(String),
    /// A credentials file could not be read.
    #[error("NATS credentials: {0}")]
    Credentials(String),
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// JetStream refused or did not acknowledge a publish.
    #[error("publish failed: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    /// Another JetStream call failed (stream or consumer lookup, pulling, acking).
    #[error("JetStream: {0}")]
    JetStream(String),
    /// An effect message could not be decoded.
    #[error("undecodable effect on {subject}: {error}")]
    Decode {
        /// The message's subject.
        subject: String,
        /// Why.
        error: prost::DecodeError,
    },
}

fn jetstream_error(error: impl std::fmt::Display) -> GatewayError {
    GatewayError::JetStream(error.to_string())
}

/// The subject and headers of an event, or why it cannot be published.
fn addressed(event: &pb::GatewayEvent) -> Result<(String, async_nats::HeaderMap), GatewayError> {
    if event.event_id.is_empty() {
        return Err(GatewayError::InvalidEvent("event_id is empty".to_owned()));
    }
    if event.workspace.is_empty() || event.workspace.contains(['.', '*', '>', ' ']) {
        return Err(GatewayError::InvalidEvent(format!(
            "workspace {:?} is empty or not a single subject token",
            event.workspace
        )));
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.event_id.as_str());
    Ok((format!("switchboard.events.{}", event.workspace), headers))
}

/// How a program proves who it is to NATS (gateways, and the nodes themselves).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (a NATS server without authorization).
    #[default]
    None,
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// A file holding an NKey seed (`SU...`).
    NkeySeedFile(PathBuf),
    /// A `.creds` file (JWT and NKey seed, for operator-mode servers).
    CredsFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, <password>)"),
            NatsAuth::Token(_) => f.write_str("Token(<token>)"),
            NatsAuth::NkeySeedFile(path) => write!(f, "NkeySeedFile({})", path.display()),
            NatsAuth::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
        }
    }
}

/// Credentials and TLS for a NATS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// Who the connection is.
    pub auth: NatsAuth,
    /// Trust this CA (PEM) and require TLS; `None`: TLS only if the URL says `tls://`.
    pub tls_ca_file: Option<PathBuf>,
    /// The prefix of reply subjects (`_INBOX` by default). A server that keeps gateways apart
    /// gives each its own (`_INBOX_acme`) and lets it subscribe only there, so that no gateway
    /// can read another's replies (deploy/nats-accounts.conf).
    pub inbox_prefix: Option<String>,
}

impl NatsSecurity {
    /// `options` with these credentials and TLS settings.
    pub async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, GatewayError> {
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => options.user_and_password(user.clone(), password.clone()),
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::NkeySeedFile(path) => {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| GatewayError::Credentials(format!("cannot read {}: {e}", path.display())))?;
                options.nkey(seed.trim().to_owned())
            }
            NatsAuth::CredsFile(path) => options
                .credentials_file(path)
                .await
                .map_err(|e| GatewayError::Credentials(format!("cannot read {}: {e}", path.display())))?,
        };
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options)
    }
}

/// A connection to NATS for publishing events and consuming effects.
#[derive(Clone, Debug)]
pub struct Gateway {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Names this gateway's atomic batches (`<nonce>.<n>`).
    batch_nonce: String,
    batches: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Gateway {
    /// Connects to NATS (`nats://host:port`, several comma separated).
    pub async fn connect(url: &str) -> Result<Self, GatewayError> {
        Self::connect_with(url, &NatsSecurity::default()).await
    }

    /// Connects to NATS with credentials and TLS.
    pub async fn connect_with(url: &str, security: &NatsSecurity) -> Result<Self, GatewayError> {
        // Reconnect within 250 ms of NATS being back (async-nats's default backs off to 4 s).
        let options =
            async_nats::ConnectOptions::new().name("switchboard-gateway").reconnect_delay_callback(|attempts| {
                let steps = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
                (Duration::from_millis(50) * steps.min(5)).min(Duration::from_millis(250))
            });
        let client = security.apply(options).await?.connect(url).await?;
        Ok(Self::with_client(client))
    }

    /// Uses an existing NATS connection.
    pub fn with_client(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let batch_nonce = format!("gw{nonce:x}.{:x}", std::process::id());
        Self { client, js, batch_nonce, batches: Default::default() }
    }

    /// How long a publish waits for JetStream's acknowledgement, from the send (5 s unless
    /// set here or on the connection's request timeout); then the publish fails and may be
    /// sent again with the same event id. From 1 ms to [`ACK_TIMEOUT_MAX`].
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Result<Self, GatewayError> {
        if timeout < Duration::from_millis(1) || timeout > ACK_TIMEOUT_MAX {
            return Err(GatewayError::InvalidConfig(format!(
                "ack_timeout = {timeout:?} is out of range: 1 ms to {ACK_TIMEOUT_MAX:?} (ack_timeout_max)"
            )));
        }
        self.js.set_timeout(timeout);
        Ok(self)
    }

    /// The underlying NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes an event and waits until JetStream has stored it. Safe to retry: the event id
    /// is the `Nats-Msg-Id`, so a repeat within the duplicate window is stored once (and the
    /// state machine drops a repeated event id regardless).
    pub async fn publish(&self, event: &pb::GatewayEvent) -> Result<jetstream::publish::PublishAck, GatewayError> {
        self.publish_pipelined(event).await?.await
    }

    /// Sends an event and returns the pending acknowledgement, so that many publishes can be in
    /// flight at once; await each returned ack to know the event was stored (its timeout runs
    /// from the send: see [`PendingAck`]).
    pub async fn publish_pipelined(&self, event: &pb::GatewayEvent) -> Result<PendingAck, GatewayError> {
        let (subject, headers) = addressed(event)?;
        let before = connects(&self.client);
        let ack = self.js.publish_with_headers(subject, headers, event.encode_to_vec().into()).await?;
        Ok(PendingAck::new(&self.js, ack, &self.client, before))
    }

    /// Publishes up to [`BATCH_EVENTS_MAX`] events as one JetStream atomic batch and waits
    /// until it is stored: all of them, in this order, or none. One write on the server instead
    /// of one per event, for gateways with many events a second. If the batch is refused or
    /// not acknowledged (a lost ack, an event id already stored within the duplicate window,
    /// which refuses the whole batch), each event is published again on its own with its
    /// `Nats-Msg-Id`, so each is stored exactly once either way.
    pub async fn publish_batch(&self, events: &[pb::GatewayEvent]) -> Result<(), GatewayError> {
        let stored = match self.publish_batch_pipelined(events).await? {
            Some(ack) => ack.await.is_ok(),
            None => true,
        };
        if !stored {
            for event in events {
                self.publish(event).await?;
            }
        }
        Ok(())
    }

    /// Sends `events` as one atomic batch and returns the pending acknowledgement of the whole
    /// batch (`None` for no events), so that several batches can be in flight (nats-server
    /// allows 50 per stream). Batches sent from one gateway are stored in the order sent. If
    /// the acknowledgement fails, publish the events again one by one (as
    /// [`Gateway::publish_batch`] does).
    pub async fn publish_batch_pipelined(
        &self,
        events: &[pb::GatewayEvent],
    ) -> Result<Option<PendingAck>, GatewayError> {
        if events.len() > BATCH_EVENTS_MAX {
            return Err(GatewayError::InvalidEvent(format!(
                "a batch holds {} events; at most {BATCH_EVENTS_MAX} (batch_events_max)",
                events.len()
            )));
        }
        let addressed: Vec<(String, async_nats::HeaderMap)> = events.iter().map(addressed).collect::<Result<_, _>>()?;
        let n = self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}.{n:x}", self.batch_nonce);
        let count = events.len();
        let before = connects(&self.client);
        for (position, (event, (subject, mut headers))) in events.iter().zip(addressed).enumerate() {
            headers.insert("Nats-Batch-Id", id.as_str());
            headers.insert("Nats-Batch-Sequence", (position + 1).to_string().as_str());
            let payload = event.encode_to_vec().into();
            if position + 1 == count {
                headers.insert("Nats-Batch-Commit", "1");
                let ack = self.js.publish_with_headers(subject, headers, payload).await?;
                return Ok(Some(PendingAck::new(&self.js, ack, &self.client, before)));
            }
            self.client.publish_with_headers(subject, headers, payload).await.map_err(jetstream_error)?;
        }
        Ok(None)
    }

    /// A durable consumer named `name` of the effects of `workspace` (`*` for all), starting
    /// with the first effect the stream holds the first time and where it left off afterwards.
    pub async fn effects(&self, name: &str, workspace: &str) -> Result<Effects, GatewayError> {
        self.effects_with(pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: format!("switchboard.effects.{workspace}.>"),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
    }

    /// A consumer of the effects stream with a configuration of the caller's (several
    /// workspaces in `filter_subjects`, a start policy, ...). Durable when it names one.
    pub async fn effects_with(&self, config: pull::Config) -> Result<Effects, GatewayError> {
        let stream = self.js.get_stream(EFFECTS_STREAM).await.map_err(|e| {
            GatewayError::JetStream(format!("{e} (the stream {EFFECTS_STREAM} is created by the cluster's leader)"))
        })?;
        let consumer: jetstream::consumer::PullConsumer = match config.durable_name.clone() {
            Some(name) => stream.get_or_create_consumer(&name, config).await,
            None => stream.create_consumer(config).await,
        }
        .map_err(jetstream_error)?;
        let messages = consumer.messages().await.map_err(jetstream_error)?;
        Ok(Effects { messages })
    }
}

/// A stream of effects; see [`Gateway::effects`].
pub struct Effects {
    messages: pull::Stream,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects").finish_non_exhaustive()
    }
}

impl Effects {
    /// The next effect, waiting for one; `None` if the connection closed for good.
    pub async fn next(&mut self) -> Option<Result<Delivery, GatewayError>> {
        let message = match self.messages.next().await? {
            Ok(message) => message,
            Err(error) => return Some(Err(jetstream_error(error))),
        };
        Some(match pb::Effect::decode(message.payload.as_ref()) {
            Ok(effect) => Ok(Delivery { effect, message }),
            Err(error) => Err(GatewayError::Decode { subject: message.subject.to_string(), error }),
        })
    }
}

/// One effect and the message that carried it.
#[derive(Debug)]
pub struct Delivery {
    /// The effect.
    pub effect: pb::Effect,
    message: jetstream::Message,
}

impl Delivery {
    /// Acknowledges the effect: it will not be delivered to this consumer again.
    pub async fn ack(&self) -> Result<(), GatewayError> {
        self.message.ack().await.map_err(jetstream_error)
    }

    /// The JetStream message (subject, headers, delivery count).
    pub fn message(&self) -> &jetstream::Message {
        &self.message
    }
}

/// Builders of the events a gateway publishes. `occurred_at_ms` is set to now (the gateway's
/// clock), which Switchboard's `event_to_effect_seconds` histogram measures from.
pub mod events {
    use super::pb;
    use pb::gateway_event::Kind;

    fn now_ms() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn event(event_id: &str, workspace: &str, kind: Kind) -> pb::GatewayEvent {
        pb::GatewayEvent {
            event_id: event_id.to_owned(),
            workspace: workspace.to_owned(),
            occurred_at_ms: now_ms(),
            kind: Some(kind),
        }
    }

    /// A customer started a conversation. Set language, topic, tags, first message and
    /// priority on the returned event's `ConversationOpened` for routing rules.
    pub fn opened(
        event_id: &str,
        workspace: &str,
        conversation: &str,
        contact: &str,
        channel: pb::Channel,
    ) -> pb::GatewayEvent {
        event(
            event_id,
            workspace,
            Kind::ConversationOpened(pb::ConversationOpened {
                conversation: conversation.to_owned(),
                contact: contact.to_owned(),
                channel: channel.into(),
                ..Default::default()
            }),
        )
    }

    /// The customer wrote again (reopens a closed conversation within the reopen window).
    pub fn message_received(event_id: &str, workspace: &str, conversation: &str) -> pb::GatewayEvent {
        event(event_id, workspace, Kind::MessageReceived(pb::MessageReceived { conversation: conversation.to_owned() }))
    }

    /// The assigned agent answered (stops the no-reply timer).
    pub fn agent_replied(event_id: &str, workspace: &str, conversation: &str, agent: &str) -> pb::GatewayEvent {
        event(
            event_id,
            workspace,
            Kind::AgentReplied(pb::AgentReplied { conversation: conversation.to_owned(), agent: agent.to_owned() }),
        )
    }

    /// The conversation ended on the channel.
    pub fn closed(event_id: &str, workspace: &str, conversation: &str) -> pb::GatewayEvent {
        event(
            event_id,
            workspace,
            Kind::ConversationClosed(pb::ConversationClosed { conversation: conversation.to_owned() }),
        )
    }
}

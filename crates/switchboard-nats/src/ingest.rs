//! The leader's consumer of gateway events: pull, check, propose in batches, ack after commit.
//!
//! Order of work for each pulled batch: messages that can never take effect (undecodable,
//! oversize, no workspace, invalid fields) are republished to the rejected subject at once;
//! the others become one Raft proposal. When the proposal commits, messages the state machine
//! refused (unknown conversation, ...) are republished as rejected; a repeat of an applied
//! event id is counted. Then the batch is settled with one acknowledgement: the consumer acks
//! `all`, so acking the batch's last message acks every message before it, and batches are
//! settled strictly in stream order (a batch is acked only once every earlier one committed
//! and every rejection of it is stored). Proposals that fail (no quorum, leadership lost), and
//! rejections that cannot be stored, ack nothing and end the session: JetStream redelivers
//! from the ack floor and the state machine's dedupe makes redeliveries harmless.
//!
//! Back-pressure: at most `max_in_flight` proposals wait for commit; while they all wait the
//! consumer takes nothing more from the pull stream, which itself requests at most a few
//! batches ahead (`max_ack_pending` bounds what NATS hands out unacked). A proposal that fails
//! ends the session; the next one restarts from the consumer's ack floor, in stream order.

use super::{
    CONSUMER, ERROR_HEADER, ERROR_MESSAGE_HEADER, EVENTS_STREAM, EVENTS_SUBJECTS, NatsConfig, REJECTED_STREAM,
    REJECTED_SUBJECTS, SessionError,
};
use async_nats::jetstream::{self, consumer::pull};
use futures::stream::{FuturesOrdered, StreamExt};
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::{ErrorKind, Input};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_raft::{Committed, ProposeError, RaftNode};
use switchboard_server::convert::events::event_from_pb;
use switchboard_server::metrics;
use tracing::Instrument as _;

/// Why the consumer rejects a message before proposing it (the `Switchboard-Error` header);
/// refusals by the state machine carry `switchboard_core::ApplyError::REASONS`.
pub(super) mod reason {
    /// Larger than `nats.max_event_bytes`.
    pub(crate) const OVERSIZE: &str = "oversize";
    /// Not `switchboard.events.<workspace>`.
    pub(crate) const BAD_SUBJECT: &str = "bad_subject";
    /// Not a `switchboard.v1.GatewayEvent`.
    pub(crate) const UNDECODABLE: &str = "undecodable";
    /// The event's workspace differs from its subject's.
    pub(crate) const WORKSPACE_MISMATCH: &str = "workspace_mismatch";
    /// A field is missing or out of bounds.
    pub(crate) const INVALID: &str = "invalid";
    /// All of them (the README's contract names each).
    pub(crate) const ALL: [&str; 5] = [OVERSIZE, BAD_SUBJECT, UNDECODABLE, WORKSPACE_MISMATCH, INVALID];
}

/// How often the consumer re-checks leadership while idle.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(50);
/// How often a rejection reason is logged at most.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the pending count of the consumer is sampled.
const PENDING_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

pub(super) async fn run(
    node: Arc<RaftNode>,
    js: jetstream::Context,
    client: async_nats::Client,
    outages: super::Outages,
    config: NatsConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rejections = Rejections { js: js.clone(), last_logged: BTreeMap::new() };
    let mut backoff = super::Backoff::new();
    while let Some(term) = node.until_confirmed_leader(&mut stop).await {
        tracing::info!(term, "leader: consuming {EVENTS_STREAM} as {CONSUMER}");
        let seen = outages.count();
        let consumed = session(&node, term, &js, &config, &mut rejections, &mut stop);
        if let Err(error) = outages.unless_lost(seen, consumed).await {
            tracing::warn!(%error, "event consumer failed; retrying");
            backoff.pause_or_reconnected(&client, &mut stop).await;
            continue;
        }
        backoff.reset();
        tracing::info!("stopped consuming events (leadership lost or node stopping)");
    }
}

/// Keeps `switchboard_nats_consumer_pending` current on every node, leader or not, so that the
/// backlog is seen while there is no leader (exactly when it grows): the events the consumer
/// has not delivered yet. While the consumer is missing (a new leader re-creates it) or NATS
/// does not answer, the last figure is kept (and set again, so the exporter keeps it).
pub(super) async fn sample_pending(js: jetstream::Context, mut stop: tokio::sync::watch::Receiver<bool>) {
    for reason in reason::ALL {
        ::metrics::counter!(metrics::EVENTS_REJECTED_TOTAL, "reason" => reason).increment(0);
    }
    ::metrics::counter!(metrics::EVENTS_DUPLICATE_TOTAL, "source" => "nats").increment(0);
    ::metrics::counter!(metrics::EVENTS_INGESTED_TOTAL, "source" => "nats").increment(0);
    let mut sample = tokio::time::interval(PENDING_SAMPLE_INTERVAL);
    let mut last = 0;
    loop {
        tokio::select! {
            _ = sample.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        if let Ok(stream) = js.get_stream(EVENTS_STREAM).await
            && let Ok(info) = stream.consumer_info(CONSUMER).await
        {
            last = info.num_pending;
        }
        ::metrics::gauge!(metrics::NATS_CONSUMER_PENDING).set(last as f64);
    }
}

/// The consumer's metadata key naming the Raft term of the leader that created it.
pub(super) const TERM_METADATA: &str = "switchboard-leader-term";

/// Creates `SWITCHBOARD`, or brings it to the configured retention.
pub(super) async fn events_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<jetstream::stream::Stream, async_nats::error::Error<jetstream::context::CreateStreamErrorKind>> {
    super::file_stream(js, config, EVENTS_STREAM, EVENTS_SUBJECTS, Some(config.duplicate_window), config.events_max_age)
        .await
}

/// Creates the stream and (re)creates the consumer for the confirmed leader of `term`.
pub(super) async fn consumer(
    js: &jetstream::Context,
    config: &NatsConfig,
    term: u64,
) -> Result<jetstream::consumer::PullConsumer, SessionError> {
    let stream = events_stream(js, config).await?;
    super::file_stream(js, config, REJECTED_STREAM, REJECTED_SUBJECTS, None, Some(config.effects_max_age)).await?;
    // A new leader resumes in stream order: everything after the consumer's ack floor is
    // delivered again, at once and in order (what already committed is dropped by the state
    // machine's dedupe and acked). Waiting for the redelivery of an old leader's unacked
    // messages instead would apply newer events of a conversation before older ones. Deleting
    // the consumer also cuts off a deposed leader still pulling. It is fenced by term: the
    // consumer records the term of the leader that made it, and a leader of an older term
    // (deposed, and not yet aware of it) leaves it alone.
    let deliver_policy = match stream.consumer_info(CONSUMER).await {
        Ok(info) => {
            let owner = info.config.metadata.get(TERM_METADATA).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
            if owner > term {
                return Err(SessionError::Fenced { owner, term });
            }
            let start_sequence = info.ack_floor.stream_sequence + 1;
            stream.delete_consumer(CONSUMER).await?;
            jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence }
        }
        // Only a consumer that does not exist yet starts at the beginning; any other error
        // (NATS restarting) ends the session rather than resuming out of order.
        Err(error) if error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
            jetstream::consumer::DeliverPolicy::All
        }
        Err(error) => return Err(error.into()),
    };
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            description: Some("the Switchboard Raft leader's event consumer".to_owned()),
            deliver_policy,
            // One ack settles a whole batch (and everything before it): see the module doc.
            ack_policy: jetstream::consumer::AckPolicy::All,
            ack_wait: config.ack_wait,
            max_ack_pending: config.max_ack_pending,
            backoff: config.redelivery_backoff.clone(),
            // NATS requires a delivery limit above the backoff steps; at the default steps
            // this one is reached only after years of failed deliveries.
            max_deliver: if config.redelivery_backoff.is_empty() { -1 } else { 1_000_000 },
            metadata: [(TERM_METADATA.to_owned(), term.to_string())].into(),
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

/// Payload bytes per proposal: a batch closes once its events reach this size, so that one
/// write stays well under `switchboard_raft::WRITE_BYTES_MAX` (the core encoding of an event
/// is about the size of its protobuf, and first messages are cut to what rules read).
const BATCH_BYTES_MAX: usize = switchboard_raft::ENTRY_BYTES_MAX / 2;

/// The largest event any configuration accepts, in bytes: a batch of [`BATCH_BYTES_MAX`] plus
/// one more event must still fit one write.
pub(crate) const EVENT_BYTES_CEILING: usize = BATCH_BYTES_MAX / 2;

/// Events per proposal: at least 1, at most what one Raft proposal takes.
fn batch_max(config: &NatsConfig) -> usize {
    config.batch_max.clamp(1, switchboard_raft::MAX_INPUTS_PER_PROPOSAL)
}

/// One pulled message on its way into the log.
struct Pending {
    message: jetstream::Message,
    occurred_at_ms: i64,
}

/// One pulled batch on its way to being settled.
struct Batch {
    /// The messages proposed, in order.
    pending: Vec<Pending>,
    /// The batch's last message: acking it (the consumer acks `all`) settles the batch.
    last: jetstream::Message,
    /// Messages rejected before proposing whose rejection could not be stored: the batch must
    /// not be acked, so that they are delivered again.
    unstored: usize,
}

/// A batch and its proposal's result (`None`: nothing of it was proposed).
type Proposal =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Batch, Option<Result<Committed, ProposeError>>)> + Send>>;

async fn session(
    node: &Arc<RaftNode>,
    term: u64,
    js: &jetstream::Context,
    config: &NatsConfig,
    rejections: &mut Rejections,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let consumer = consumer(js, config, term).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch_max(config))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    let mut in_flight: FuturesOrdered<Proposal> = FuturesOrdered::new();
    let mut check = tokio::time::interval(LEADERSHIP_CHECK);
    loop {
        if node.confirmed_leader_term() != Some(term) || *stop.borrow() {
            // Stop pulling at once and ack nothing more: what is in flight is redelivered to
            // the next leader, whose dedupe drops what committed.
            return Ok(());
        }
        tokio::select! {
            biased;
            Some((batch, result)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(node, batch, result, rejections).await?;
            }
            first = messages.next(), if in_flight.len() < config.max_in_flight.max(1) => {
                let Some(first) = first else { return Err(SessionError::PullEnded) };
                let first = first?;
                let mut bytes = first.payload.len();
                let mut pulled = vec![first];
                let deadline = tokio::time::Instant::now() + config.batch_linger;
                while pulled.len() < batch_max(config) && bytes < BATCH_BYTES_MAX {
                    match tokio::time::timeout_at(deadline, messages.next()).await {
                        Ok(Some(message)) => {
                            let message = message?;
                            bytes += message.payload.len();
                            pulled.push(message);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                let Some((batch, inputs)) = check_batch(pulled, config, rejections).await else { continue };
                // Even a batch with nothing to propose is settled in turn: its ack covers
                // every earlier message.
                if inputs.is_empty() {
                    in_flight.push_back(Box::pin(async move { (batch, None) }));
                } else {
                    let node = node.clone();
                    in_flight.push_back(Box::pin(async move {
                        let result = node.propose(inputs).await;
                        (batch, Some(result))
                    }));
                }
            }
            _ = check.tick() => {}
            _ = stop.changed() => {}
        }
    }
}

/// Splits pulled messages into events to propose and rejections (republished now, acked with
/// the batch); `None` for no messages.
async fn check_batch(
    pulled: Vec<jetstream::Message>,
    config: &NatsConfig,
    rejections: &mut Rejections,
) -> Option<(Batch, Vec<Input>)> {
    let last = pulled.last()?.clone();
    let mut pending = Vec::with_capacity(pulled.len());
    let mut inputs = Vec::with_capacity(pulled.len());
    let mut unstored = 0;
    for message in pulled {
        match check(&message, config) {
            Ok((event, occurred_at_ms)) => {
                inputs.push(Input::Event(event));
                pending.push(Pending { message, occurred_at_ms });
            }
            Err((reason, explanation)) => {
                if !rejections.reject(&message, reason, &explanation).await {
                    unstored += 1;
                }
            }
        }
    }
    Some((Batch { pending, last, unstored }, inputs))
}

/// Decodes and validates one message.
fn check(
    message: &jetstream::Message,
    config: &NatsConfig,
) -> Result<(switchboard_core::Event, i64), (&'static str, String)> {
    decode_event(message.subject.as_str(), message.payload.as_ref(), config.max_event_bytes)
}

/// Decodes and validates one message of the events stream as the ingest does: the payload is
/// at most `max_event_bytes` (and the ceiling), the subject names the workspace, the payload is
/// a `GatewayEvent` of that workspace with valid fields. Returns the event and the gateway's
/// `occurred_at_ms`, or the rejection reason (`switchboard_events_rejected_total{reason}`)
/// with an explanation.
pub fn decode_event(
    subject: &str,
    payload: &[u8],
    max_event_bytes: usize,
) -> Result<(switchboard_core::Event, i64), (&'static str, String)> {
    let limit = max_event_bytes.min(EVENT_BYTES_CEILING);
    if payload.len() > limit {
        return Err((reason::OVERSIZE, format!("the message is {} bytes; the limit is {limit}", payload.len())));
    }
    let Some(workspace) = super::workspace_of_subject(subject) else {
        return Err((reason::BAD_SUBJECT, format!("subject {subject} is not switchboard.events.<workspace>")));
    };
    let mut event = pb::GatewayEvent::decode(payload)
        .map_err(|e| (reason::UNDECODABLE, format!("the payload is not a switchboard.v1.GatewayEvent: {e}")))?;
    if event.workspace.is_empty() {
        event.workspace = workspace.to_owned();
    } else if event.workspace != workspace {
        return Err((
            reason::WORKSPACE_MISMATCH,
            format!("the event names workspace {:?} but was published to {subject}", event.workspace),
        ));
    }
    let occurred_at_ms = event.occurred_at_ms;
    let event = event_from_pb(event, "event").map_err(|error| (reason::INVALID, error.to_string()))?;
    Ok((event, occurred_at_ms))
}

/// Settles a batch whose turn it is: rejects what the state machine refused and acks the
/// batch; acks nothing when its proposal failed or a rejection could not be stored.
async fn settle(
    node: &RaftNode,
    batch: Batch,
    result: Option<Result<Committed, ProposeError>>,
    rejections: &mut Rejections,
) -> Result<(), SessionError> {
    let Batch { pending, last, mut unstored } = batch;
    match result {
        None => {}
        Some(Ok(committed)) => {
            if !node.is_leader() {
                return Ok(());
            }
            let mut duplicates = 0u64;
            for (pending, outcome) in pending.into_iter().zip(committed.outcomes.iter()) {
                match &outcome.rejection {
                    None => metrics::event_took_effect("nats", pending.occurred_at_ms),
                    // Acked without effect, and counted: the same event id already took effect.
                    Some(rejection) if rejection.kind == ErrorKind::AlreadyApplied => duplicates += 1,
                    Some(rejection) => {
                        // Log lines of the rejection carry where it was decided.
                        let span = tracing::info_span!(
                            "refused",
                            log_index = committed.index,
                            event_id = outcome.event_id.as_ref().map(|id| id.as_str()),
                        );
                        let stored = rejections
                            .reject(&pending.message, &rejection.reason, &rejection.message)
                            .instrument(span)
                            .await;
                        if !stored {
                            unstored += 1;
                        }
                    }
                }
            }
            if duplicates > 0 {
                ::metrics::counter!(metrics::EVENTS_DUPLICATE_TOTAL, "source" => "nats").increment(duplicates);
                tracing::debug!(duplicates, "events whose id already took effect were acked without effect");
            }
        }
        // A write the log refuses outright (too large) will never commit: retrying it would
        // wedge the consumer. Alone in its batch it is the culprit, and is rejected.
        Some(Err(error @ ProposeError::Invalid(_))) if pending.len() == 1 => {
            for pending in pending {
                if !rejections.reject(&pending.message, reason::OVERSIZE, &error.to_string()).await {
                    unstored += 1;
                }
            }
        }
        Some(Err(error)) => {
            // Nothing of this batch is acked. Later batches may commit meanwhile, so the session
            // ends: the next one restarts from the ack floor and keeps stream order.
            return Err(SessionError::NotCommitted { count: pending.len(), error });
        }
    }
    if unstored > 0 {
        // Not acked: delivered again (and rejected again) once JetStream takes publishes.
        return Err(SessionError::RejectionsNotStored { count: unstored });
    }
    // The ack is confirmed by the server off the consumer's path; a lost one means the batch
    // is delivered again and deduplicated.
    tokio::spawn(async move {
        if let Err(error) = last.double_ack().await {
            tracing::warn!(%error, "ack not confirmed; these events will be redelivered and deduplicated");
        }
    });
    Ok(())
}

/// A message's sequence in the stream and its `Nats-Msg-Id`, for log lines.
fn message_ids(message: &jetstream::Message) -> (Option<u64>, Option<&str>) {
    let sequence = message.info().ok().map(|info| info.stream_sequence);
    let msg_id = message.headers.as_ref().and_then(|headers| headers.get("Nats-Msg-Id")).map(|id| id.as_str());
    (sequence, msg_id)
}

/// Republishes refused messages and rate-limits their logging.
struct Rejections {
    js: jetstream::Context,
    last_logged: BTreeMap<String, Instant>,
}

impl Rejections {
    /// Stores the rejection of `message` in `SWITCHBOARD_REJECTED` (the message itself is acked
    /// with its batch); false if it could not be stored.
    async fn reject(&mut self, message: &jetstream::Message, reason: &str, explanation: &str) -> bool {
        metrics::event_rejected(reason);
        let workspace = message.subject.as_str().strip_prefix("switchboard.events.").filter(|w| !w.is_empty());
        let subject = super::rejected_subject(workspace.unwrap_or("_"));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ERROR_HEADER, reason);
        // Header values are single lines.
        headers.insert(ERROR_MESSAGE_HEADER, explanation.replace(['\r', '\n'], " ").as_str());
        headers.insert(super::ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
        if let Some(id) = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            headers.insert(super::ORIGINAL_MSG_ID_HEADER, id.as_str());
        }
        // A message delivered again (its batch's ack lost, a new leader resuming from the ack
        // floor) is rejected again; JetStream drops the copy within its duplicate window.
        if let (Some(stream_sequence), _) = message_ids(message) {
            headers.insert("Nats-Msg-Id", format!("rejected.{stream_sequence}").as_str());
        }
        // An oversize message is not copied: with the headers it could exceed NATS's max payload.
        let payload = if reason == reason::OVERSIZE { message.payload.slice(..0) } else { message.payload.clone() };
        // Kept by the stream SWITCHBOARD_REJECTED; the original is acked only once it is stored.
        let stored = match self.js.publish_with_headers(subject, headers, payload).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = stored {
            tracing::warn!(%error, "cannot store a rejection");
            return false;
        }
        let now = Instant::now();
        let due = self.last_logged.get(reason).is_none_or(|last| now.duration_since(*last) >= REJECTION_LOG_INTERVAL);
        if due {
            self.last_logged.insert(reason.to_owned(), now);
            let (stream_sequence, msg_id) = message_ids(message);
            tracing::warn!(
                reason,
                subject = message.subject.as_str(),
                stream_sequence,
                msg_id,
                "rejected event: {explanation} (logged once per reason every {}s)",
                REJECTION_LOG_INTERVAL.as_secs()
            );
        }
        true
    }
}

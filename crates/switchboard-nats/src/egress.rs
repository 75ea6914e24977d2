//! The leader's publisher of effects to `SWITCHBOARD_EFFECTS`.
//!
//! The replicated log is the outbox. Every replica keeps the effects of each applied entry in
//! its outbox (`switchboard_raft::Outbox`, carried in snapshots) until an entry of the log says
//! they are stored in the stream. On becoming the confirmed leader, the publisher reads the last
//! effect the stream holds (its log index and sequence are headers) and publishes every later
//! effect from the outbox, then each new one as it is applied, in log order, each with
//! `Nats-Msg-Id = <index>.<sequence>`. Effects go out in JetStream atomic batches (up to
//! [`BATCH_EFFECTS_MAX`] effects of one or more consecutive entries; one stored write on the
//! server instead of one per effect), each batch stored whole or not at all, and the first
//! message of each names the stream's last sequence it expects (`Nats-Expected-Last-Sequence`),
//! so nothing is stored after a gap or by a deposed leader; a session that meets an error
//! restarts from what the stream really holds. About once a second it proposes the index
//! through which JetStream has acknowledged everything (`RaftNode::confirm_published`), and
//! only then do replicas drop those effects. So whatever restarts, crashes or compacts its log
//! meanwhile, every effect of every committed entry reaches the stream once, in log order.

use super::{
    EFFECTS_STREAM, EFFECTS_SUBJECTS, LOG_INDEX_HEADER, NatsConfig, PREVIOUS_MSG_ID_HEADER, SEQUENCE_HEADER,
    SessionError,
};
use async_nats::jetstream;
use prost::Message as _;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use switchboard_proto::switchboard::v1 as pb;
use switchboard_raft::{AppliedEntry, RaftNode, StateChange};
use switchboard_server::convert::effects::{EffectOrigin, effect_to_pb};
use tokio::sync::broadcast;

/// Most effects in one atomic batch (nats-server takes at most 1,000).
const BATCH_EFFECTS_MAX: usize = 500;
/// Most batches awaiting JetStream's ack (nats-server allows 50 in flight per stream).
const BATCHES_IN_FLIGHT: usize = 16;
/// How often the publisher records in the log how far the stream has everything.
const CONFIRM_INTERVAL: Duration = Duration::from_secs(1);

pub(super) async fn run(
    node: Arc<RaftNode>,
    js: jetstream::Context,
    client: async_nats::Client,
    outages: super::Outages,
    config: NatsConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = super::Backoff::new();
    while let Some(term) = node.until_confirmed_leader(&mut stop).await {
        let seen = outages.count();
        match outages.unless_lost(seen, session(&node, term, &js, &client, &config, &mut stop)).await {
            Ok(()) => backoff.reset(),
            Err(error) => {
                tracing::warn!(%error, "effect publisher failed; resuming from the stream's last effect");
                backoff.pause_or_reconnected(&client, &mut stop).await;
            }
        }
    }
}

/// Creates the effects stream if it does not exist.
pub(super) async fn stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<jetstream::stream::Stream, SessionError> {
    let window = Some(config.duplicate_window);
    Ok(super::file_stream(js, config, EFFECTS_STREAM, EFFECTS_SUBJECTS, window, Some(config.effects_max_age)).await?)
}

/// The stream's last sequence, and the `(log index, sequence)` of the last effect in it:
/// `Some((0, 0))` when it never held one, `None` when its last one is gone (past
/// `effects_max_age`).
async fn last_published(stream: &mut jetstream::stream::Stream) -> Result<(u64, Option<(u64, u32)>), SessionError> {
    let last = stream.info().await?.state.last_sequence;
    if last == 0 {
        return Ok((0, Some((0, 0))));
    }
    let message = match stream.get_raw_message(last).await {
        Ok(message) => message,
        Err(error) if error.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            return Ok((last, None));
        }
        Err(error) => return Err(error.into()),
    };
    let header = |name: &str| message.headers.get(name).and_then(|v| v.as_str().parse::<u64>().ok());
    match (header(LOG_INDEX_HEADER), header(SEQUENCE_HEADER)) {
        (Some(index), Some(sequence)) => Ok((last, Some((index, sequence as u32)))),
        _ => Err(SessionError::UnnumberedEffect),
    }
}

/// One effect of the batch being built.
struct Outgoing {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
    /// Effects of every entry up to this index are sent once this one is.
    through: u64,
}

/// Where the publisher stands: the last effect stored or sent, and what is acknowledged.
struct Cursor {
    /// The last effect sent (or found in the stream), `(log index, sequence)`.
    sent: (u64, u32),
    /// Its `Nats-Msg-Id`, named by the next effect as the one before it.
    last_id: Option<String>,
    /// The stream's last sequence once every batch sent is stored: the next batch expects it.
    stream_last: u64,
    /// The next log index to look at.
    next_index: u64,
    /// The batch being built (sent when full, or when no entry is waiting).
    batch: Vec<Outgoing>,
    /// Names this session's batches (`<nonce>.<n>`), unique across sessions and nodes.
    batch_nonce: String,
    batches_sent: u64,
    /// Batches not yet acknowledged, with the log index through which they complete entries.
    acks: VecDeque<(jetstream::context::PublishAckFuture, u64)>,
    /// Effects of every entry up to this index are acknowledged by JetStream.
    stored_through: u64,
}

impl Cursor {
    async fn await_one(&mut self) -> Result<(), SessionError> {
        if let Some((ack, through)) = self.acks.pop_front() {
            ack.await?;
            self.stored_through = self.stored_through.max(through);
        }
        Ok(())
    }

    /// Sends the batch being built as one atomic batch: every message but the last as a plain
    /// publish, the last with the commit marker as a request whose answer is the batch's ack.
    async fn send_batch(&mut self, js: &jetstream::Context, client: &async_nats::Client) -> Result<(), SessionError> {
        let count = self.batch.len();
        if count == 0 {
            return Ok(());
        }
        let id = format!("{}.{}", self.batch_nonce, self.batches_sent);
        self.batches_sent += 1;
        let expected = self.stream_last.to_string();
        for (position, outgoing) in std::mem::take(&mut self.batch).into_iter().enumerate() {
            let Outgoing { subject, mut headers, payload, through } = outgoing;
            headers.insert("Nats-Batch-Id", id.as_str());
            headers.insert("Nats-Batch-Sequence", (position + 1).to_string().as_str());
            if position == 0 {
                headers.insert("Nats-Expected-Last-Sequence", expected.as_str());
            }
            if position + 1 == count {
                headers.insert("Nats-Batch-Commit", "1");
                let ack = js.publish_with_headers(subject, headers, payload).await?;
                self.acks.push_back((ack, through));
            } else {
                client.publish_with_headers(subject, headers, payload).await?;
            }
        }
        self.stream_last += count as u64;
        while self.acks.len() >= BATCHES_IN_FLIGHT {
            self.await_one().await?;
        }
        Ok(())
    }
}

/// The outbox from the cursor on. Effects the outbox can no longer serve (confirmed stored, or
/// dropped over its bound) but the stream does not hold are a gap: logged, counted, skipped —
/// unless the stream's last effect aged out (`expired`), when the confirmed index is where the
/// stream stood.
fn outbox_from(node: &RaftNode, cursor: &mut Cursor, expired: bool) -> VecDeque<AppliedEntry> {
    let backlog = node.outbox_from(cursor.next_index);
    if backlog.served_after > cursor.sent.0 {
        if expired {
            tracing::info!(
                through = backlog.served_after,
                "{EFFECTS_STREAM}'s last effect aged out; resuming after it"
            );
        } else {
            tracing::error!(
                after = cursor.sent.0,
                through = backlog.served_after,
                "the effects of these log entries are not in {EFFECTS_STREAM} and no longer in the outbox (the stream \
             lost them, or NATS was down so long that the outbox dropped them): they are not published"
            );
            ::metrics::counter!(switchboard_server::metrics::EFFECTS_UNPUBLISHED_TOTAL).increment(1);
        }
        cursor.sent = (backlog.served_after, u32::MAX);
        cursor.next_index = backlog.served_after + 1;
    }
    backlog.entries.into()
}

async fn session(
    node: &Arc<RaftNode>,
    term: u64,
    js: &jetstream::Context,
    client: &async_nats::Client,
    config: &NatsConfig,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let mut stream = stream(js, config).await?;
    let (stream_last, found) = last_published(&mut stream).await?;
    let last = found.unwrap_or((0, 0));
    // Subscribe before reading the outbox, so that no entry falls between the two.
    let mut receiver = node.subscribe();
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut cursor = Cursor {
        sent: last,
        last_id: (last != (0, 0)).then(|| format!("{}.{}", last.0, last.1)),
        stream_last,
        next_index: last.0.max(1),
        batch: Vec::new(),
        batch_nonce: format!("{}.{term}.{nonce:x}", node.id()),
        batches_sent: 0,
        acks: VecDeque::new(),
        stored_through: last.0.saturating_sub(1),
    };
    let mut pending = outbox_from(node, &mut cursor, found.is_none());
    tracing::info!(
        term,
        after_index = last.0,
        after_sequence = last.1,
        "leader: publishing effects to {EFFECTS_STREAM}"
    );
    let confirmer = Confirmer::new(node.clone());
    let mut confirm = tokio::time::interval(CONFIRM_INTERVAL);
    confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if node.confirmed_leader_term() != Some(term) || *stop.borrow() {
            return Ok(());
        }
        let entry = match pending.pop_front() {
            Some(entry) => entry,
            None => {
                // Entries already applied join the batch being built.
                match receiver.try_recv() {
                    Ok(StateChange::Entry(entry)) => {
                        pending.push_back(entry);
                        continue;
                    }
                    Ok(StateChange::SnapshotInstalled { .. }) | Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        pending = outbox_from(node, &mut cursor, false);
                        continue;
                    }
                    Err(broadcast::error::TryRecvError::Closed) => return Ok(()),
                    Err(broadcast::error::TryRecvError::Empty) => {}
                }
                // Idle: send what is built, and make sure everything sent is stored before
                // waiting.
                cursor.send_batch(js, client).await?;
                while !cursor.acks.is_empty() {
                    cursor.await_one().await?;
                }
                cursor.stored_through = cursor.stored_through.max(cursor.next_index.saturating_sub(1));
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(StateChange::Entry(entry)) => entry,
                        // A snapshot replaced the state (not while leading), or this publisher fell
                        // behind the live feed: the outbox has everything not yet confirmed.
                        Ok(StateChange::SnapshotInstalled { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            pending = outbox_from(node, &mut cursor, false);
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                    _ = confirm.tick() => {
                        confirmer.confirm(cursor.stored_through);
                        continue;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = stop.changed() => continue,
                }
            }
        };
        if entry.index < cursor.next_index {
            continue; // already published from the outbox
        }
        cursor.next_index = entry.index + 1;
        publish_entry(js, client, &mut cursor, &entry).await?;
        if confirmer.due() {
            confirmer.confirm(cursor.stored_through);
        }
    }
}

/// Adds the effects of `entry` after the cursor to the batch being built, sending it whenever
/// it is full.
async fn publish_entry(
    js: &jetstream::Context,
    client: &async_nats::Client,
    cursor: &mut Cursor,
    entry: &AppliedEntry,
) -> Result<(), SessionError> {
    let origin = EffectOrigin { log_index: entry.index, at_ms: entry.at_ms };
    for numbered in entry.numbered_effects() {
        let this = (entry.index, numbered.sequence);
        let last_of_entry = numbered.last;
        if this <= cursor.sent {
            continue;
        }
        let effect = effect_to_pb(numbered.effect, origin, this.1, numbered.cause);
        if !super::is_subject_token(&effect.workspace) {
            // Cannot be a subject (a workspace created before ids were checked): skipped
            // rather than stopping every later effect. Watch still delivers it.
            tracing::error!(workspace = %effect.workspace, "workspace id is not a NATS subject token; effect not published");
            ::metrics::counter!(switchboard_server::metrics::EFFECTS_UNPUBLISHED_TOTAL).increment(1);
            continue;
        }
        let subject = super::effects_subject(&effect.workspace, kind_name(&effect));
        let id = format!("{}.{}", this.0, this.1);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        if let Some(previous) = &cursor.last_id {
            headers.insert(PREVIOUS_MSG_ID_HEADER, previous.as_str());
        }
        headers.insert(LOG_INDEX_HEADER, this.0.to_string().as_str());
        headers.insert(SEQUENCE_HEADER, this.1.to_string().as_str());
        let through = if last_of_entry { entry.index } else { entry.index.saturating_sub(1) };
        cursor.batch.push(Outgoing { subject, headers, payload: effect.encode_to_vec().into(), through });
        cursor.sent = this;
        cursor.last_id = Some(id);
        if cursor.batch.len() >= BATCH_EFFECTS_MAX {
            cursor.send_batch(js, client).await?;
        }
    }
    Ok(())
}

/// Proposes `confirm_published` at most once per [`CONFIRM_INTERVAL`], off the publishing
/// path, and only when the outbox holds something it would free.
struct Confirmer {
    node: Arc<RaftNode>,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Confirmer {
    fn new(node: Arc<RaftNode>) -> Self {
        Self { node, last: std::sync::Mutex::new(tokio::time::Instant::now()) }
    }

    fn due(&self) -> bool {
        self.last.lock().map_or(true, |last| last.elapsed() >= CONFIRM_INTERVAL)
    }

    fn confirm(&self, through: u64) {
        if let Ok(mut last) = self.last.lock() {
            *last = tokio::time::Instant::now();
        }
        confirm_in_background(&self.node, through);
    }
}

/// Proposes that effects through `index` are stored, if the outbox has any it would free.
pub(super) fn confirm_in_background(node: &Arc<RaftNode>, index: u64) {
    let stats = node.outbox_stats();
    if stats.oldest.is_none_or(|oldest| oldest > index) {
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(error) = node.confirm_published(index).await {
            tracing::debug!(%error, index, "could not record the published index (retried next time)");
        }
    });
}

/// The `<kind>` token of an effect's subject.
pub(crate) fn kind_name(effect: &pb::Effect) -> &'static str {
    use pb::effect::Kind;
    match &effect.kind {
        Some(Kind::Assigned(_)) => "assigned",
        Some(Kind::Unassigned(_)) => "unassigned",
        Some(Kind::Queued(_)) => "queued",
        Some(Kind::OutsideHours(_)) => "outside_hours",
        Some(Kind::Welcome(_)) => "welcome",
        Some(Kind::Reopened(_)) => "reopened",
        Some(Kind::Closed(_)) => "closed",
        Some(Kind::AgentStatus(_)) => "agent_status",
        Some(Kind::QueuePosition(_)) => "queue_position",
        None => "unknown",
    }
}

//! The leader's publisher of effects to `SWITCHBOARD_EFFECTS`.
//!
//! The replicated log is the outbox. Every replica keeps the effects of each applied entry in
//! its outbox (`switchboard_raft::Outbox`, carried in snapshots) until an entry of the log says
//! they are stored in the stream. On becoming the confirmed leader, the publisher reads the last
//! effect the stream holds (its log index and sequence are headers) and publishes every later
//! effect from the outbox, then each new one as it is applied, in log order, each with
//! `Nats-Msg-Id = <index>.<sequence>`. Effects go out in batches of one or more consecutive
//! entries: a batch grows while the last one is being stored, so it is small under light load
//! and large under heavy load. Up to [`SEPARATE_EFFECTS_MAX`] effects are published one by one,
//! pipelined, each naming the effect it must follow (`Nats-Expected-Last-Msg-Id`); more go in
//! one JetStream atomic batch (up to [`BATCH_EFFECTS_MAX`]; one stored write on the server
//! instead of one per effect), stored whole or not at all, whose first message names the
//! stream's last sequence it expects (`Nats-Expected-Last-Sequence`). Either way nothing is
//! stored after a gap or by a deposed leader, and a session that meets an error restarts from
//! what the stream really holds. About once a second it proposes the index
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
/// A batch of at most this many effects goes out as separate publishes, each naming the stream
/// sequence before it, instead of as an atomic batch: on nats-server 2.15 with
/// `sync_interval: always` an atomic batch's commit costs about 3.4 ms whatever its size, a
/// single stored publish about 0.25 ms (measured on the benchmark machine; see
/// benches/README.md), so below about a dozen effects separate publishes are acknowledged sooner.
const SEPARATE_EFFECTS_MAX: usize = 8;
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

    /// Sends the batch being built: up to [`SEPARATE_EFFECTS_MAX`] effects as separate
    /// publishes, more as one atomic batch.
    async fn send_batch(&mut self, js: &jetstream::Context, client: &async_nats::Client) -> Result<(), SessionError> {
        let count = self.batch.len();
        if count == 0 {
            return Ok(());
        }
        if count <= SEPARATE_EFFECTS_MAX {
            self.send_separately(js).await?;
        } else {
            self.send_atomically(js, client).await?;
        }
        while self.acks.len() >= BATCHES_IN_FLIGHT {
            self.await_one().await?;
        }
        Ok(())
    }

    /// Sends each effect of the batch as its own stored publish, pipelined. Each names the
    /// effect it must follow (`Nats-Expected-Last-Msg-Id`; the stream's last sequence when no
    /// effect is before it): once one is refused, every later one is refused too, unless another
    /// publisher (a new leader) stored the missing one meanwhile. So the stream never holds an
    /// effect after a missing one, even while a deposed leader's publishes are still landing
    /// (a sequence number would not do: one message of another writer would let the rest pass).
    async fn send_separately(&mut self, js: &jetstream::Context) -> Result<(), SessionError> {
        for outgoing in std::mem::take(&mut self.batch) {
            let Outgoing { subject, mut headers, payload, through } = outgoing;
            match headers.get(PREVIOUS_MSG_ID_HEADER).map(|id| id.as_str().to_owned()) {
                Some(previous) => headers.insert("Nats-Expected-Last-Msg-Id", previous.as_str()),
                None => headers.insert("Nats-Expected-Last-Sequence", self.stream_last.to_string().as_str()),
            }
            let ack = js.publish_with_headers(subject, headers, payload).await?;
            self.acks.push_back((ack, through));
            self.stream_last += 1;
        }
        Ok(())
    }

    /// Sends the batch as one atomic batch: every message but the last as a plain publish, the
    /// last with the commit marker as a request whose answer is the batch's ack.
    async fn send_atomically(
        &mut self,
        js: &jetstream::Context,
        client: &async_nats::Client,
    ) -> Result<(), SessionError> {
        let count = self.batch.len();
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
        Ok(())
    }
}

/// The outbox from the cursor on. Effects the outbox can no longer serve (confirmed stored, or
/// dropped over its bound) but the stream does not hold are a gap: logged, counted, skipped —
/// unless the stream's last effect aged out (`expired`), when the confirmed index is where the
/// stream stood. `None` when this node found a gap but no longer leads in `term`: a node deposed
/// a moment ago compares its outbox with a stream that the new leader has been extending, and
/// the entries in between are not lost; only the leader reports a gap (and so pages).
async fn outbox_from(node: &RaftNode, term: u64, cursor: &mut Cursor, expired: bool) -> Option<VecDeque<AppliedEntry>> {
    let backlog = node.outbox_from(cursor.next_index);
    if backlog.served_after > cursor.sent.0 {
        if expired {
            tracing::info!(
                through = backlog.served_after,
                "{EFFECTS_STREAM}'s last effect aged out; resuming after it"
            );
        } else if !node.still_leads(term).await {
            tracing::info!(term, "no longer the leader: not publishing effects");
            return None;
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
    Some(backlog.entries.into())
}

/// The backlog after a change the live feed could not deliver entry by entry; `None` ends the
/// session. A node that `installed` a snapshot no longer leads `term`, whatever its leadership
/// signal still says for a moment (only a follower of a later leader installs one), and the new
/// leader publishes from the stream's last effect: reading the outbox here would compare it with
/// where this session stood, not with the stream the new leader has been extending, and report
/// the entries in between as lost (a false `SwitchboardEffectsUnpublished` page, seen twice in
/// one nemesis run). Otherwise this publisher fell behind the feed, and the outbox has
/// everything not yet confirmed.
async fn catch_up(node: &RaftNode, term: u64, cursor: &mut Cursor, installed: bool) -> Option<VecDeque<AppliedEntry>> {
    if installed {
        tracing::info!(term, "a snapshot from a later leader replaced the state: no longer publishing effects");
        return None;
    }
    outbox_from(node, term, cursor, false).await
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
    let Some(mut pending) = outbox_from(node, term, &mut cursor, found.is_none()).await else {
        return Ok(());
    };
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
                    change @ (Ok(StateChange::SnapshotInstalled { .. })
                    | Err(broadcast::error::TryRecvError::Lagged(_))) => {
                        let Some(backlog) = catch_up(node, term, &mut cursor, change.is_ok()).await else {
                            return Ok(());
                        };
                        pending = backlog;
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
                        // A snapshot replaced the state, or this publisher fell behind the feed.
                        change @ (Ok(StateChange::SnapshotInstalled { .. })
                        | Err(broadcast::error::RecvError::Lagged(_))) => {
                            let Some(backlog) = catch_up(node, term, &mut cursor, change.is_ok()).await else {
                                return Ok(());
                            };
                            pending = backlog;
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_nats_server as nats_server;

    /// One effect as `publish_entry` builds it: `<index>.0`, naming `previous`.
    fn outgoing(index: u64, previous: Option<u64>) -> Outgoing {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{index}.0").as_str());
        if let Some(previous) = previous {
            headers.insert(PREVIOUS_MSG_ID_HEADER, format!("{previous}.0").as_str());
        }
        headers.insert(LOG_INDEX_HEADER, index.to_string().as_str());
        headers.insert(SEQUENCE_HEADER, "0");
        let subject = crate::effects_subject("acme", "closed");
        Outgoing { subject, headers, payload: bytes::Bytes::from(vec![1, 2, 3]), through: index }
    }

    /// A publisher that believes the stream ends at `stream_last`, after effect `<last>.0`.
    fn cursor(stream_last: u64, last: u64) -> Cursor {
        Cursor {
            sent: (last, 0),
            last_id: Some(format!("{last}.0")),
            stream_last,
            next_index: last + 1,
            batch: Vec::new(),
            batch_nonce: format!("test.{stream_last}.{last}"),
            batches_sent: 0,
            acks: VecDeque::new(),
            stored_through: last,
        }
    }

    /// Sends `effects` as one batch and waits for every acknowledgement; how many were stored.
    async fn send(
        cursor: &mut Cursor,
        js: &jetstream::Context,
        client: &async_nats::Client,
        effects: Vec<Outgoing>,
    ) -> usize {
        cursor.batch = effects;
        cursor.send_batch(js, client).await.expect("sent");
        let mut stored = 0;
        while !cursor.acks.is_empty() {
            if cursor.await_one().await.is_ok() {
                stored += 1;
            }
        }
        stored
    }

    /// The `Nats-Msg-Id`s the stream holds, in order.
    async fn stored_ids(js: &jetstream::Context) -> Vec<String> {
        let stream = js.get_stream(EFFECTS_STREAM).await.expect("stream");
        let last = stream.cached_info().state.last_sequence;
        let mut ids = Vec::new();
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.expect("message");
            ids.push(message.headers.get("Nats-Msg-Id").map(|id| id.as_str().to_owned()).unwrap_or_default());
        }
        ids
    }

    /// A deposed leader's publishes still landing while the new leader publishes must not put an
    /// effect after a gap: separate publishes name the effect before them, and an atomic batch is
    /// refused whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_publisher_never_stores_an_effect_after_a_gap() {
        let server = nats_server::NatsServer::start().await;
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = jetstream::new(client.clone());
        stream(&js, &NatsConfig::default()).await.expect("effects stream");

        // The stream holds effects 1 and 2; both leaders know it.
        let mut first = cursor(0, 0);
        first.last_id = None;
        assert_eq!(send(&mut first, &js, &client, vec![outgoing(1, None), outgoing(2, Some(1))]).await, 2);

        // The new leader stores 3 (its outbox has entry 3 committed in its term).
        let mut new = cursor(2, 2);
        assert_eq!(send(&mut new, &js, &client, vec![outgoing(3, Some(2))]).await, 1);

        // The deposed leader, behind, publishes its own 3' and 4' after 2: by sequence its
        // second publish would follow the stream's last (3), but it names 3' before it.
        let mut stale = cursor(2, 2);
        let mut stale_three = outgoing(3, Some(2));
        stale_three.headers.insert("Nats-Msg-Id", "3.0-stale");
        let mut stale_four = outgoing(4, Some(3));
        stale_four.headers.insert(PREVIOUS_MSG_ID_HEADER, "3.0-stale");
        assert_eq!(send(&mut stale, &js, &client, vec![stale_three, stale_four]).await, 0);

        // Its atomic batch is refused whole.
        let mut stale = cursor(2, 2);
        let batch: Vec<_> = (3..3 + SEPARATE_EFFECTS_MAX as u64 + 2).map(|i| outgoing(i + 100, Some(i + 99))).collect();
        assert_eq!(send(&mut stale, &js, &client, batch).await, 0);

        // The new leader goes on, separately and then atomically, and the stream is in order.
        assert_eq!(send(&mut new, &js, &client, vec![outgoing(4, Some(3))]).await, 1);
        let batch: Vec<_> = (5..5 + SEPARATE_EFFECTS_MAX as u64 + 1).map(|i| outgoing(i, Some(i - 1))).collect();
        assert_eq!(send(&mut new, &js, &client, batch).await, 1, "one acknowledgement for the atomic batch");
        let expected: Vec<String> = (1..5 + SEPARATE_EFFECTS_MAX as u64 + 1).map(|i| format!("{i}.0")).collect();
        assert_eq!(stored_ids(&js).await, expected);
    }
}

//! The leader's publisher of effects to `SWITCHBOARD_EFFECTS`.
//!
//! On becoming leader it reads the last effect the stream holds (its log index and sequence are
//! headers) and publishes every later effect from the node's retained changes (the same ring
//! Watch streams read), in log order, each with `Nats-Msg-Id = <index>.<sequence>`. A publish
//! repeated across a failover is dropped by JetStream's duplicate window; one older than the
//! window is skipped by the cursor. Each publish also names its predecessor
//! (`Nats-Expected-Last-Msg-Id`), so nothing is stored after a gap. So the stream holds each
//! effect once, in log order.

use super::{EFFECTS_STREAM, EFFECTS_SUBJECTS, LOG_INDEX_HEADER, NatsConfig, SEQUENCE_HEADER};
use crate::WatchHub;
use crate::convert::effects::{EffectOrigin, effect_to_pb};
use crate::watch::{Backlog, change_index};
use async_nats::jetstream;
use prost::Message as _;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use switchboard_proto::switchboard::v1 as pb;
use switchboard_raft::{RaftNode, StateChange};
use tokio::sync::broadcast;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most publishes awaiting JetStream's ack.
const PUBLISH_WINDOW: usize = 512;

pub(super) async fn run(
    node: Arc<RaftNode>,
    hub: Arc<WatchHub>,
    js: jetstream::Context,
    config: NatsConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = super::Backoff::new();
    while super::until_leader(&node, &mut stop).await {
        match session(&node, &hub, &js, &config, &mut stop).await {
            Ok(()) => backoff.reset(),
            Err(error) => {
                tracing::warn!(%error, "effect publisher failed; resuming from the stream's last effect");
                backoff.pause().await;
            }
        }
    }
}

/// Creates the effects stream if it does not exist.
pub(super) async fn stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<jetstream::stream::Stream, BoxError> {
    let window = Some(config.duplicate_window);
    Ok(super::file_stream(js, config, EFFECTS_STREAM, EFFECTS_SUBJECTS, window, Some(config.effects_max_age)).await?)
}

/// The `(log index, sequence)` of the last effect in the stream, `(0, 0)` when it is empty.
async fn last_published(stream: &mut jetstream::stream::Stream) -> Result<(u64, u32), BoxError> {
    let last = stream.info().await?.state.last_sequence;
    if last == 0 {
        return Ok((0, 0));
    }
    let message = match stream.get_raw_message(last).await {
        Ok(message) => message,
        // Deleted (max age): nothing to resume from.
        Err(error) if error.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => return Ok((0, 0)),
        Err(error) => return Err(error.into()),
    };
    let header = |name: &str| message.headers.get(name).and_then(|v| v.as_str().parse::<u64>().ok());
    match (header(LOG_INDEX_HEADER), header(SEQUENCE_HEADER)) {
        (Some(index), Some(sequence)) => Ok((index, sequence as u32)),
        _ => {
            Err(format!("the last message of {EFFECTS_STREAM} has no {LOG_INDEX_HEADER}/{SEQUENCE_HEADER} headers")
                .into())
        }
    }
}

async fn session(
    node: &RaftNode,
    hub: &WatchHub,
    js: &jetstream::Context,
    config: &NatsConfig,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let mut stream = stream(js, config).await?;
    let mut cursor = last_published(&mut stream).await?;
    // Each publish names the id of the one before it (`Nats-Expected-Last-Msg-Id`), so JetStream
    // stores nothing after a gap: a publish lost in a NATS restart while later ones in the
    // pipeline got through, or a deposed leader's late publish, is refused and the session
    // restarts from what the stream really holds.
    let mut last_id = (cursor != (0, 0)).then(|| format!("{}.{}", cursor.0, cursor.1));
    let mut next_index = cursor.0.max(1);
    let Backlog { changes, mut receiver, .. } = backlog(hub, next_index, cursor)?;
    let mut pending: VecDeque<StateChange> = changes.into();
    let mut acks: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::new();
    tracing::info!(after_index = cursor.0, after_sequence = cursor.1, "leader: publishing effects to {EFFECTS_STREAM}");
    loop {
        if !node.is_leader() || *stop.borrow() {
            return Ok(());
        }
        let change = match pending.pop_front() {
            Some(change) => change,
            None => {
                // Idle: make sure everything sent is stored before waiting.
                while let Some(ack) = acks.pop_front() {
                    ack.await?;
                }
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(change) => change,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let again = backlog(hub, next_index, cursor)?;
                            pending = again.changes.into();
                            receiver = again.receiver;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = stop.changed() => continue,
                }
            }
        };
        let StateChange::Entry { index, at_ms, outcomes } = &change else {
            // A snapshot installed while this node followed: the entries it covers were never
            // applied here one by one. Those the stream lacks cannot be published from here.
            let covered = change_index(&change);
            if covered > cursor.0 {
                tracing::error!(
                    after = cursor.0,
                    to = covered,
                    "effects of entries covered by an installed snapshot were not published to NATS"
                );
                ::metrics::counter!(crate::metrics::EFFECTS_UNPUBLISHED_TOTAL).increment(1);
                cursor = (covered, u32::MAX);
            }
            next_index = next_index.max(covered + 1);
            continue;
        };
        next_index = index + 1;
        let origin = EffectOrigin { log_index: *index, at_ms: *at_ms };
        let mut sequence = 0u32;
        for outcome in outcomes.iter() {
            for (position, effect) in outcome.effects.iter().enumerate() {
                let this = (*index, sequence);
                sequence += 1;
                if this <= cursor {
                    continue;
                }
                let effect = effect_to_pb(effect, origin, this.1, outcome.cause(position));
                if !super::is_subject_token(&effect.workspace) {
                    // Cannot be a subject (a workspace created before ids were checked): skipped
                    // rather than stopping every later effect. Watch still delivers it.
                    tracing::error!(workspace = %effect.workspace, "workspace id is not a NATS subject token; effect not published");
                    ::metrics::counter!(crate::metrics::EFFECTS_UNPUBLISHED_TOTAL).increment(1);
                    continue;
                }
                let subject = super::effects_subject(&effect.workspace, kind_name(&effect));
                let id = format!("{}.{}", this.0, this.1);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                if let Some(previous) = &last_id {
                    headers.insert("Nats-Expected-Last-Msg-Id", previous.as_str());
                }
                headers.insert(LOG_INDEX_HEADER, this.0.to_string().as_str());
                headers.insert(SEQUENCE_HEADER, this.1.to_string().as_str());
                acks.push_back(js.publish_with_headers(subject, headers, effect.encode_to_vec().into()).await?);
                cursor = this;
                last_id = Some(id);
                if acks.len() >= PUBLISH_WINDOW
                    && let Some(ack) = acks.pop_front()
                {
                    ack.await?;
                }
            }
        }
    }
}

/// The retained changes from `index` on; when they are no longer retained, from the oldest
/// retained one, after logging the gap (those effects reach gateways through Watch only).
fn backlog(hub: &WatchHub, index: u64, cursor: (u64, u32)) -> Result<Backlog, BoxError> {
    match hub.backlog(index.max(1)) {
        Ok(backlog) => Ok(backlog),
        Err(not_retained) => {
            if cursor.0 > 0 {
                tracing::error!(
                    from = index,
                    to = not_retained.first_index,
                    "effects between these log indexes are no longer retained and were not published to NATS"
                );
                ::metrics::counter!(crate::metrics::EFFECTS_UNPUBLISHED_TOTAL).increment(1);
            }
            hub.backlog(not_retained.first_index.max(1))
                .map_err(|e| format!("the effect ring cannot serve index {} either", e.first_index).into())
        }
    }
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

//! Proposal batching on the leader.
//!
//! Writers hand their inputs to one task. It forms a Raft entry from everything waiting (up to
//! `max_batch_inputs`, lingering up to `batch_linger` for more), stamps it with the leader's
//! clock and submits it. At most `max_in_flight` entries are uncommitted at once; while they are,
//! new inputs pile up and the next entry carries all of them. Throughput therefore grows with
//! the number of writers instead of being capped at one fsync per event, and a lone writer
//! still goes straight through.
//!
//! Entries are submitted to openraft in the order they were formed, so inputs keep the order in
//! which they reached the batcher.

use crate::audit::Actor;
use crate::error::{LeaderHint, ProposeError};
use crate::types::{Applied, NodeId, NodeInfo, Proposal, Raft, TypeConfig};
use openraft::error::ClientWriteError;
use openraft::raft::ClientWriteResponse;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use switchboard_core::Input;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The inputs of one write and where its outcome goes.
pub(crate) struct Submission {
    pub(crate) inputs: Vec<Input>,
    /// Who made them, for the audit trail.
    pub(crate) actor: Option<Actor>,
    /// The inputs' encoded size.
    pub(crate) bytes: usize,
    pub(crate) reply: Option<oneshot::Sender<Result<crate::Committed, ProposeError>>>,
}

/// Batching limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchLimits {
    pub(crate) max_batch_inputs: usize,
    /// An entry is closed before a write would take it past this many bytes.
    pub(crate) max_entry_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: usize,
    /// How long an entry holds its place among the `max_in_flight` before the batcher stops
    /// waiting for openraft's answer (see `run`).
    pub(crate) answer_within: Duration,
}

/// UTC milliseconds by the wall clock: the only clock read in the write path, on the leader.
pub(crate) fn wall_clock_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the batcher until every sender is gone.
pub(crate) async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<Submission>,
    limits: BatchLimits,
    last_proposed_ms: Arc<AtomicI64>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    // A write taken from the channel that did not fit the entry being formed opens the next.
    let mut carried: Option<Submission> = None;
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut entry = Entry::new(first);
        while !entry.full(&limits) && carried.is_none() {
            match rx.try_recv() {
                Ok(next) => carried = entry.add(next, &limits),
                Err(_) => break,
            }
        }
        if !entry.full(&limits) && carried.is_none() && !limits.linger.is_zero() {
            let deadline = tokio::time::Instant::now() + limits.linger;
            while !entry.full(&limits) && carried.is_none() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(next)) => carried = entry.add(next, &limits),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let Entry { batch, count, .. } = entry;
        metrics::histogram!(crate::metrics::PROPOSAL_BATCH_ENTRIES).record(batch.len() as f64);
        let at_ms = wall_clock_ms();
        last_proposed_ms.store(at_ms, Ordering::Relaxed);
        let mut inputs = Vec::with_capacity(count);
        let mut waiters = Vec::with_capacity(batch.len());
        // One actor per input once any submission has one; none at all otherwise.
        let audited = batch.iter().any(|submission| submission.actor.is_some());
        let mut actors = Vec::with_capacity(if audited { count } else { 0 });
        for submission in batch {
            waiters.push((submission.inputs.len(), submission.reply));
            if audited {
                actors.extend(std::iter::repeat_n(submission.actor, submission.inputs.len()));
            }
            inputs.extend(submission.inputs);
        }
        match raft.client_write_ff(Proposal { at_ms, inputs, published: None, actors, note: None }).await {
            Err(fatal) => {
                let error = ProposeError::Unavailable { reason: format!("raft stopped: {fatal}") };
                answer_all(waiters, &Err(error));
                return;
            }
            Ok(receiver) => {
                let answer_within = limits.answer_within;
                tokio::spawn(async move {
                    // openraft answers a write when its entry is applied or truncated, but not
                    // when this node, deposed meanwhile, catches up by a snapshot that covers
                    // the entry's index: that answer never comes. Waiting for it forever would
                    // keep the entry's place, and after `max_in_flight` such losses this node
                    // could never propose again once it leads (found by the nemesis test).
                    let result = match tokio::time::timeout(answer_within, receiver).await {
                        Ok(Ok(Ok(response))) => Ok(response),
                        Ok(Ok(Err(error))) => Err(write_error(error)),
                        Ok(Err(_)) => {
                            Err(ProposeError::Uncertain { reason: "the leader stopped before answering".to_owned() })
                        }
                        Err(_) => Err(ProposeError::Uncertain {
                            reason: format!(
                                "no answer within {answer_within:?}: the entry may still commit, or may have been replaced"
                            ),
                        }),
                    };
                    drop(permit);
                    distribute(waiters, at_ms, result);
                });
            }
        }
    }
}

/// The writes of the entry being formed.
struct Entry {
    batch: Vec<Submission>,
    count: usize,
    bytes: usize,
}

impl Entry {
    fn new(first: Submission) -> Self {
        Self { count: first.inputs.len(), bytes: first.bytes, batch: vec![first] }
    }

    fn full(&self, limits: &BatchLimits) -> bool {
        self.count >= limits.max_batch_inputs || self.bytes >= limits.max_entry_bytes
    }

    /// Adds `next` if it fits; else hands it back for the next entry.
    fn add(&mut self, next: Submission, limits: &BatchLimits) -> Option<Submission> {
        if self.count + next.inputs.len() > limits.max_batch_inputs || self.bytes + next.bytes > limits.max_entry_bytes
        {
            return Some(next);
        }
        self.count += next.inputs.len();
        self.bytes += next.bytes;
        self.batch.push(next);
        None
    }
}

type Waiters = Vec<(usize, Option<oneshot::Sender<Result<crate::Committed, ProposeError>>>)>;

fn answer_all(waiters: Waiters, result: &Result<crate::Committed, ProposeError>) {
    for (_, reply) in waiters {
        if let Some(reply) = reply {
            let _ = reply.send(result.clone());
        }
    }
}

fn distribute(waiters: Waiters, at_ms: i64, result: Result<ClientWriteResponse<TypeConfig>, ProposeError>) {
    let response = match result {
        Ok(response) => response,
        Err(error) => return answer_all(waiters, &Err(error)),
    };
    let index = response.log_id.index;
    let Applied { outcomes } = response.data;
    let mut outcomes = outcomes.into_iter();
    let mut first_effect_sequence = 0u32;
    for (n, reply) in waiters {
        let mine: Vec<_> = outcomes.by_ref().take(n).collect();
        let effects = mine.iter().map(|outcome| outcome.effects.len() as u32).sum::<u32>();
        if let Some(reply) = reply {
            let _ = reply.send(Ok(crate::Committed { index, at_ms, first_effect_sequence, outcomes: mine }));
        }
        first_effect_sequence += effects;
    }
}

/// Maps openraft's write error. A `ForwardToLeader` answer does not prove the entry was not
/// applied (the leader may have appended it before stepping down), so it is `Uncertain`.
fn write_error(error: ClientWriteError<NodeId, NodeInfo>) -> ProposeError {
    match error {
        ClientWriteError::ForwardToLeader(forward) => ProposeError::Uncertain {
            reason: match (forward.leader_id, forward.leader_node) {
                (Some(id), Some(node)) => {
                    format!("leadership moved to {} while the write was in flight", LeaderHint { id, node })
                }
                _ => "leadership was lost while the write was in flight".to_owned(),
            },
        },
        ClientWriteError::ChangeMembershipError(e) => ProposeError::Invalid(e.to_string()),
    }
}

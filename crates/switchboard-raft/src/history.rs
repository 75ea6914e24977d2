//! A conversation's history re-derived from this node's snapshots and log, for
//! `Assignments.Explain`: every decision about it (opened, queued, assigned, reopened,
//! requeued, transferred, closed), at which log index, and for its opening and reopenings the
//! path that decided and every candidate's verdict ([`switchboard_core::Explanation`]).
//!
//! Nothing is stored for this on the hot path. The node restores a snapshot into a private
//! state and applies the committed entries after it exactly as `apply` did, taking the
//! explanation of each routing decision from the state that decision saw
//! ([`State::apply_explained`]). What it can reach is bounded by what it keeps: the current
//! snapshot, the previous one (`snapshot.prev.bin`) and the log behind them
//! ([`crate::Tuning::keep_entries_after_snapshot`]); a conversation whose every decision is
//! older answers [`HistoryError::OutOfRange`] with the oldest index it can reach.
//!
//! Cost: one snapshot restore plus the entries after it (at most about two snapshot
//! intervals), on a blocking thread, one history at a time per node; applies never wait.

use crate::state_machine::{PREVIOUS_SNAPSHOT_FILE, SNAPSHOT_FILE, Shared, decode_snapshot, read_snapshot_meta};
use crate::{LogStore, types::Entry};
use openraft::EntryPayload;
use std::collections::VecDeque;
use std::path::PathBuf;
use switchboard_core::{ConversationId, Effect, EventId, Explanation, Input, State, WorkspaceId};

/// Most decisions one history returns; older ones are counted in [`History::omitted`].
pub const HISTORY_DECISIONS_MAX: usize = 256;

/// Entries read from the log at once while replaying.
const READ_CHUNK_ENTRIES: u64 = 256;

/// How often a history starts over when a snapshot or a purge moved what it was reading.
const ATTEMPTS_MAX: usize = 3;

/// One decision about the conversation: what caused it and what it did.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The log entry that made it.
    pub index: u64,
    /// The cluster's time of that entry (UTC milliseconds).
    pub at_ms: i64,
    /// The command that caused it (`OpenConversation`, `CloseConversation`, ...), or `timer`
    /// for a timer that fired as the entry was applied (activation delay, opening hours,
    /// no-reply timeout).
    pub cause: String,
    /// The event id of the cause, if it had one.
    pub event_id: Option<EventId>,
    /// For an opening or a reopening: the path that decided and every candidate's verdict.
    pub explanation: Option<Explanation>,
    /// What happened to the conversation, in order (queue position updates left out), each
    /// with its sequence among the effects of its entry (as Watch and NATS number it).
    pub effects: Vec<(u32, Effect)>,
}

/// A conversation's decisions that this node can re-derive.
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    /// The oldest log index this history could reach (one past the snapshot it started from).
    pub oldest_index: u64,
    /// The last index replayed: this node's applied index when the history began.
    pub applied_index: u64,
    /// The conversation already existed before `oldest_index`: its earlier decisions are out
    /// of reach.
    pub earlier_out_of_range: bool,
    /// The decisions, oldest first (the latest [`HISTORY_DECISIONS_MAX`]).
    pub decisions: Vec<Decision>,
    /// Decisions older than those returned, left out by [`HISTORY_DECISIONS_MAX`].
    pub omitted: u64,
}

/// Why a history could not be given.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The conversation is not in this node's reach and not in its state.
    #[error("conversation {conversation} is unknown in workspace {workspace} (up to log index {applied_index})")]
    NotFound {
        /// The workspace.
        workspace: WorkspaceId,
        /// The conversation.
        conversation: ConversationId,
        /// The applied index searched up to.
        applied_index: u64,
    },
    /// Every decision about the conversation is older than what this node keeps.
    #[error(
        "every decision about conversation {conversation} is older than log index {oldest_index}, the oldest \
         this node can re-derive from its snapshots and log"
    )]
    OutOfRange {
        /// The conversation.
        conversation: ConversationId,
        /// The oldest index within reach.
        oldest_index: u64,
    },
    /// The snapshot or the log could not be read.
    #[error("reading the snapshot or the log: {0}")]
    Storage(String),
    /// Snapshots and purges kept moving what the history read.
    #[error("the log was purged while it was read, {ATTEMPTS_MAX} times; try again")]
    Busy,
}

/// Where a replay can start: a state at `index` (from a snapshot file, or empty at 0).
#[derive(Clone, Debug)]
struct Base {
    index: u64,
    file: Option<PathBuf>,
}

/// A snapshot or the log moved under the reader: start over.
struct Moved;

/// The history of `conversation` in `workspace` on this node (blocking: run it off the async
/// workers).
pub(crate) fn conversation_history(
    shared: &Shared,
    log: &LogStore,
    workspace: &WorkspaceId,
    conversation: &ConversationId,
) -> Result<History, HistoryError> {
    for _ in 0..ATTEMPTS_MAX {
        match attempt(shared, log, workspace, conversation) {
            Ok(result) => return result,
            Err(Moved) => continue,
        }
    }
    Err(HistoryError::Busy)
}

fn storage(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Storage(e.to_string())
}

/// The snapshots a replay can start from, oldest first: those whose following entries the log
/// still holds (or that reach `applied` themselves).
fn bases(shared: &Shared, first: Option<u64>, applied: u64) -> Result<Vec<Base>, HistoryError> {
    let reachable = |index: u64| index >= applied || first.is_some_and(|first| first <= index.saturating_add(1));
    let mut bases = Vec::new();
    if reachable(0) {
        bases.push(Base { index: 0, file: None });
    }
    for name in [PREVIOUS_SNAPSHOT_FILE, SNAPSHOT_FILE] {
        let path = shared.dir().join(name);
        let Some(meta) = read_snapshot_meta(&path).map_err(storage)? else { continue };
        let index = meta.last_log_id.map_or(0, |id| id.index);
        if index <= applied && reachable(index) && bases.iter().all(|b: &Base| b.index != index) {
            bases.push(Base { index, file: Some(path) });
        }
    }
    bases.sort_by_key(|b| b.index);
    Ok(bases)
}

/// The state at `base`; `Moved` if its file was replaced since its index was read.
fn restore(base: &Base) -> Result<Result<State, HistoryError>, Moved> {
    let Some(path) = &base.file else { return Ok(Ok(State::new())) };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Moved),
        Err(e) => return Ok(Err(storage(format!("{}: {e}", path.display())))),
    };
    let (meta, _, core) = match decode_snapshot(&bytes) {
        Ok(decoded) => decoded,
        Err(e) => return Ok(Err(storage(e))),
    };
    if meta.last_log_id.map_or(0, |id| id.index) != base.index {
        return Err(Moved);
    }
    Ok(State::restore(core).map_err(storage))
}

/// Whether `entry` has an input about the conversation.
fn names(entry: &Entry, workspace: &WorkspaceId, conversation: &ConversationId) -> bool {
    let EntryPayload::Normal(proposal) = &entry.payload else { return false };
    proposal.inputs.iter().any(|input| match input {
        Input::Event(event) => &event.workspace == workspace && event.command.conversation() == Some(conversation),
        Input::Tick => false,
    })
}

/// Reads entries `from..=to` in chunks, calling `each` on every one until it returns false;
/// `Moved` if the log no longer holds one of them.
fn for_entries(
    log: &LogStore,
    from: u64,
    to: u64,
    mut each: impl FnMut(&Entry) -> bool,
) -> Result<Result<(), HistoryError>, Moved> {
    let mut next = from;
    while next <= to {
        let last = next.saturating_add(READ_CHUNK_ENTRIES - 1).min(to);
        let entries = match log.entries(next, last) {
            Ok(entries) => entries,
            Err(e) => return Ok(Err(storage(e))),
        };
        for entry in &entries {
            if entry.log_id.index != next {
                return Err(Moved);
            }
            if !each(entry) {
                return Ok(Ok(()));
            }
            next = next.saturating_add(1);
        }
        if next <= last {
            return Err(Moved);
        }
    }
    Ok(Ok(()))
}

fn attempt(
    shared: &Shared,
    log: &LogStore,
    workspace: &WorkspaceId,
    conversation: &ConversationId,
) -> Result<Result<History, HistoryError>, Moved> {
    let applied = shared.read().last_applied.map_or(0, |id| id.index);
    let first = match log.first_index() {
        Ok(first) => first,
        Err(e) => return Ok(Err(storage(e))),
    };
    let bases = match bases(shared, first, applied) {
        Ok(bases) => bases,
        Err(e) => return Ok(Err(e)),
    };
    let Some(oldest) = bases.first().cloned() else { return Err(Moved) };
    // Start as late as possible: from the last snapshot before the first entry naming the
    // conversation (effects of other inputs, such as a queue drain, come after that entry).
    let mut first_named = None;
    // Only the scan up to that entry: the replay reads the entries again.
    if let Err(error) = for_entries(log, oldest.index.saturating_add(1), applied, |entry| {
        if names(entry, workspace, conversation) {
            first_named = Some(entry.log_id.index);
        }
        first_named.is_none()
    })? {
        return Ok(Err(error));
    }
    let mut base = match first_named {
        Some(index) => bases.iter().rev().find(|b| b.index < index).cloned().unwrap_or_else(|| oldest.clone()),
        None => oldest.clone(),
    };
    let mut state = match restore(&base)? {
        Ok(state) => state,
        Err(e) => return Ok(Err(e)),
    };
    // Already there at that snapshot: its decisions before it may be in reach from an older one.
    if state.conversation(workspace, conversation).is_some() && base.index != oldest.index {
        base = oldest;
        state = match restore(&base)? {
            Ok(state) => state,
            Err(e) => return Ok(Err(e)),
        };
    }
    let earlier_out_of_range = state.conversation(workspace, conversation).is_some();
    let mut decisions = VecDeque::new();
    let mut omitted = 0u64;
    let replayed = for_entries(log, base.index.saturating_add(1), applied, |entry| {
        let EntryPayload::Normal(proposal) = &entry.payload else { return true };
        // Effects are numbered across the entry's inputs, from 0.
        let mut first_sequence = 0u32;
        for input in &proposal.inputs {
            let ours = matches!(input, Input::Event(event) if &event.workspace == workspace);
            // As the replica did: a panicking input (a bug) is refused with what it changed kept.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if ours {
                    state.apply_explained(proposal.at_ms, input, conversation)
                } else {
                    (state.apply(proposal.at_ms, input), None)
                }
            }));
            let Ok((outcome, explanation)) = applied else { continue };
            let numbered = outcome.effects.iter().zip(first_sequence..);
            first_sequence = first_sequence.saturating_add(u32::try_from(outcome.effects.len()).unwrap_or(u32::MAX));
            let about = |effects: &[(&Effect, u32)]| -> Vec<(u32, Effect)> {
                effects
                    .iter()
                    .filter(|(effect, _)| {
                        effect.workspace() == workspace
                            && effect.conversation() == Some(conversation)
                            && !matches!(effect, Effect::QueuePosition { .. })
                    })
                    .map(|(effect, sequence)| (*sequence, (*effect).clone()))
                    .collect()
            };
            let numbered: Vec<(&Effect, u32)> = numbered.collect();
            let (timers, own) = numbered.split_at(outcome.timer_effects.min(numbered.len()));
            let mut record = |cause: &str, event_id: Option<EventId>, explanation, effects: Vec<(u32, Effect)>| {
                if decisions.len() == HISTORY_DECISIONS_MAX {
                    decisions.pop_front();
                    omitted = omitted.saturating_add(1);
                }
                decisions.push_back(Decision {
                    index: entry.log_id.index,
                    at_ms: proposal.at_ms,
                    cause: cause.to_owned(),
                    event_id,
                    explanation,
                    effects,
                });
            };
            let timers = about(timers);
            if !timers.is_empty() {
                record("timer", None, None, timers);
            }
            let own = about(own);
            if let Input::Event(event) = input
                && (!own.is_empty() || explanation.is_some())
            {
                record(event.command.name(), event.event_id.clone(), explanation, own);
            }
        }
        true
    })?;
    if let Err(error) = replayed {
        return Ok(Err(error));
    }
    let oldest_index = base.index.saturating_add(1);
    if decisions.is_empty() {
        return Ok(Err(if earlier_out_of_range {
            HistoryError::OutOfRange { conversation: conversation.clone(), oldest_index }
        } else {
            HistoryError::NotFound {
                workspace: workspace.clone(),
                conversation: conversation.clone(),
                applied_index: applied,
            }
        }));
    }
    Ok(Ok(History { oldest_index, applied_index: applied, earlier_out_of_range, decisions: decisions.into(), omitted }))
}

//! Recent applied entries, retained so that Watch streams can start from a past log index and
//! resume after a disconnect; and the limits that keep Watch streams from holding memory.
//!
//! One task per node copies every [`StateChange`] of the replica into a bounded ring (bounded by
//! the number of effects it holds, `retained_effects`) and announces the newest index it holds on
//! a `watch` channel. A stream resuming from an index older than the ring reads the replica's
//! outbox instead (`switchboard_raft::Outbox`: every effect not yet confirmed published, kept
//! across restarts by snapshots and the log), and gets `OUT_OF_RANGE` only for effects that are
//! in neither.
//!
//! A Watch stream has no buffer and no task of its own: each time the transport asks it for the
//! next message it looks up the first retained change at or after its next index
//! ([`WatchHub::next_change`]) and converts that one change. What a slow client has not read
//! stays in the shared ring, so a stream costs the same whether its client reads or not, and
//! closing it frees everything it held. How far behind the ring's newest change a stream is, in
//! effects, is its *backlog*; a stream whose backlog grows more than `watch_backlog_max_effects`
//! beyond the smallest it has had ends with `RESOURCE_EXHAUSTED` naming the index to resume
//! from. If the index it needs is no longer retained it ends with `OUT_OF_RANGE` naming the
//! oldest index it could resume from. At most `watch_streams_max` streams are open at once
//! ([`WatchHub::open_stream`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use switchboard_raft::{AppliedEntry, RaftNode, StateChange};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};

/// How Watch streams are bounded on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// About how many effects of recent changes the ring keeps for streams to resume from.
    pub retained_effects: usize,
    /// How many effects a stream may fall behind the newest retained change, beyond the least it
    /// has been behind since it started, before it is cut off with `RESOURCE_EXHAUSTED`.
    pub backlog_max_effects: usize,
    /// Most Watch streams open at once on this node; more are refused with `RESOURCE_EXHAUSTED`.
    pub streams_max: usize,
    /// How long a Watch call waits for this node to apply the index it names before it is
    /// refused with `UNAVAILABLE`.
    pub catch_up_timeout: Duration,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            retained_effects: 100_000,
            backlog_max_effects: 10_000,
            streams_max: 512,
            catch_up_timeout: Duration::from_secs(10),
        }
    }
}

impl WatchLimits {
    /// Refuses limits that do not fit together, naming the setting to change.
    pub fn check(&self) -> Result<(), String> {
        if self.retained_effects == 0 || self.backlog_max_effects == 0 || self.streams_max == 0 {
            return Err(
                "watch_retained_effects, watch_backlog_max_effects and watch_streams_max must be at least 1".to_owned()
            );
        }
        // A stream further behind than the ring reaches fails with OUT_OF_RANGE first, and
        // would never see the backlog limit that explains what happened.
        if self.backlog_max_effects > self.retained_effects {
            return Err(format!(
                "watch_backlog_max_effects ({}) exceeds watch_retained_effects ({}): a stream that far behind is no \
                 longer retained",
                self.backlog_max_effects, self.retained_effects
            ));
        }
        Ok(())
    }
}

/// Retained changes, the newest index among them, and the broadcast for the effect publisher.
#[derive(Debug)]
pub struct WatchHub {
    ring: Mutex<Ring>,
    /// Where changes older than the ring come from: the replica's outbox, which keeps every
    /// effect not yet confirmed published (`None` in unit tests).
    outbox: Option<Arc<RaftNode>>,
    /// The index of the newest change received (the applied index when the hub was made).
    newest: watch::Sender<u64>,
    limits: WatchLimits,
    streams: Arc<Semaphore>,
}

/// One retained change and the number of effects retained before it was pushed.
#[derive(Debug)]
struct Retained {
    change: StateChange,
    /// `Ring::effects_pushed` before this change: the backlog of a stream at this change is
    /// `effects_pushed - effects_before - effect_count(change)`.
    effects_before: u64,
}

#[derive(Debug)]
struct Ring {
    changes: VecDeque<Retained>,
    effects: usize,
    /// Effects of every change ever pushed (the running total behind `effects_before`).
    effects_pushed: u64,
    retained_effects: usize,
    /// The first index the ring can serve: everything from it on is retained or not yet
    /// applied.
    first_index: u64,
}

/// The requested index is older than anything retained.
#[derive(Debug)]
pub(crate) struct NotRetained {
    /// The oldest index that can be resumed from.
    pub(crate) first_index: u64,
}

/// The answer to [`WatchHub::next_change`].
pub(crate) enum NextChange {
    /// The first retained change at or after the index asked for.
    Change {
        change: StateChange,
        /// Effects of the retained changes after this one: how far the reader is behind.
        backlog_effects: u64,
    },
    /// Nothing at or after the index has been received yet.
    NotYet,
}

/// This node serves `watch_streams_max` streams already.
#[derive(Debug)]
pub(crate) struct TooManyStreams {
    pub(crate) streams_max: usize,
}

/// A place among the node's open Watch streams; dropping it (with the stream) frees the place.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::WATCH_STREAMS).decrement(1.0);
    }
}

pub(crate) fn change_index(change: &StateChange) -> u64 {
    match change {
        StateChange::Entry(AppliedEntry { index, .. }) | StateChange::SnapshotInstalled { index } => *index,
    }
}

fn effect_count(change: &StateChange) -> usize {
    match change {
        StateChange::Entry(entry) => entry.effects().max(1),
        StateChange::SnapshotInstalled { .. } => 1,
    }
}

impl WatchHub {
    /// A hub retaining about `limits.retained_effects` effects of the changes after
    /// `applied_index`. Subscribe to the replica before reading `applied_index`, so that nothing
    /// falls between.
    pub fn new(limits: WatchLimits, applied_index: u64, outbox: Option<Arc<RaftNode>>) -> Arc<Self> {
        let (newest, _) = watch::channel(applied_index);
        Arc::new(Self {
            ring: Mutex::new(Ring {
                changes: VecDeque::new(),
                effects: 0,
                effects_pushed: 0,
                retained_effects: limits.retained_effects.max(1),
                first_index: applied_index + 1,
            }),
            outbox,
            newest,
            limits,
            streams: Arc::new(Semaphore::new(limits.streams_max)),
        })
    }

    /// The limits this hub enforces.
    pub(crate) fn limits(&self) -> WatchLimits {
        self.limits
    }

    /// Copies the replica's changes into the ring until the replica's channel closes.
    pub async fn feed(self: Arc<Self>, mut changes: broadcast::Receiver<StateChange>) {
        loop {
            match changes.recv().await {
                Ok(change) => self.push(change),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // The ring now has a hole; forget what came before it so that nobody resumes
                    // across the hole. Streams notice when their next index is not retained.
                    tracing::warn!(missed, "watch ring fell behind the replica; older indexes are no longer resumable");
                    self.forget_all();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget_all(&self) {
        let mut ring = self.lock();
        ring.changes.clear();
        ring.effects = 0;
        // The next change received tells where retention restarts.
        ring.first_index = u64::MAX;
    }

    fn push(&self, change: StateChange) {
        let mut ring = self.lock();
        let index = change_index(&change);
        if ring.first_index == u64::MAX {
            ring.first_index = index;
        }
        let count = effect_count(&change);
        let effects_before = ring.effects_pushed;
        ring.effects += count;
        ring.effects_pushed += count as u64;
        ring.changes.push_back(Retained { change, effects_before });
        while ring.effects > ring.retained_effects && ring.changes.len() > 1 {
            if let Some(old) = ring.changes.pop_front() {
                ring.effects -= effect_count(&old.change);
                ring.first_index = change_index(&old.change) + 1;
            }
        }
        self.newest.send_replace(index);
    }

    /// A receiver of the index of the newest change received, for waiting until one arrives.
    pub(crate) fn newest(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// Waits until the hub (and so the replica) has applied `index`, up to `timeout`. `Err`
    /// carries the newest index it reached.
    pub(crate) async fn wait_for_index(&self, index: u64, timeout: Duration) -> Result<(), u64> {
        let mut newest = self.newest();
        let reached =
            matches!(tokio::time::timeout(timeout, newest.wait_for(|newest| *newest >= index)).await, Ok(Ok(_)));
        if reached { Ok(()) } else { Err(*newest.borrow()) }
    }

    /// The first retained change at or after `index`, with the reader's backlog; `NotRetained`
    /// when changes at or after `index` exist but `index` itself is no longer retained.
    pub(crate) fn next_change(&self, index: u64) -> Result<NextChange, NotRetained> {
        let ring = self.lock();
        let last = ring.changes.back().map(|newest| change_index(&newest.change));
        // Index 0 is "whatever comes next" (see `start_from_now`).
        if index > 0 && index < ring.first_index && last.is_none_or(|last| index <= last) {
            // Older than the ring: the outbox still has it unless it was confirmed published.
            let Some(node) = &self.outbox else {
                return Err(NotRetained { first_index: ring.first_index });
            };
            return match node.outbox_entry_from(index) {
                Ok(Some(entry)) if entry.index < ring.first_index => Ok(NextChange::Change {
                    change: StateChange::Entry(entry),
                    // Kept whether this stream reads it or not: it holds no memory of its own.
                    backlog_effects: 0,
                }),
                // Nothing with effects between `index` and the ring: go on with the ring.
                Ok(_) => match ring.changes.front() {
                    Some(first) => Ok(NextChange::Change { change: first.change.clone(), backlog_effects: 0 }),
                    None => Ok(NextChange::NotYet),
                },
                Err(served_after) => {
                    Err(NotRetained { first_index: served_after.saturating_add(1).min(ring.first_index) })
                }
            };
        }
        if last.is_none_or(|last| index > last) {
            return Ok(NextChange::NotYet);
        }
        let position = ring.changes.partition_point(|retained| change_index(&retained.change) < index);
        let Some(found) = ring.changes.get(position) else { return Ok(NextChange::NotYet) };
        let backlog_effects = ring.effects_pushed - found.effects_before - effect_count(&found.change) as u64;
        Ok(NextChange::Change { change: found.change.clone(), backlog_effects })
    }

    /// Watch streams open on this node now.
    pub(crate) fn open_streams(&self) -> usize {
        self.limits.streams_max.saturating_sub(self.streams.available_permits())
    }

    /// Takes a place among the node's open Watch streams, if one is free.
    pub(crate) fn open_stream(&self) -> Result<StreamSlot, TooManyStreams> {
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManyStreams { streams_max: self.limits.streams_max })?;
        metrics::gauge!(crate::metrics::WATCH_STREAMS).increment(1.0);
        Ok(StreamSlot { _permit: permit })
    }

    /// The index a stream "from now" starts at: the one after the newest change received, or 0
    /// ("whatever comes next") when a hole left nothing retained.
    pub(crate) fn start_from_now(&self) -> u64 {
        let ring = self.lock();
        match ring.changes.back() {
            Some(newest) => change_index(&newest.change) + 1,
            None if ring.first_index == u64::MAX => 0,
            None => ring.first_index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{AgentId, AgentStatus, Effect, WorkspaceId};
    use switchboard_raft::InputOutcome;

    fn entry(index: u64, effects: usize) -> StateChange {
        let effect = Effect::AgentStatusChanged {
            workspace: WorkspaceId::new("w"),
            agent: AgentId::new("a"),
            status: AgentStatus::Online,
        };
        let outcome =
            InputOutcome { effects: vec![effect; effects], timer_effects: 0, event_id: None, rejection: None };
        StateChange::Entry(AppliedEntry { index, at_ms: 0, outcomes: Arc::new(vec![outcome]) })
    }

    fn found(next: Result<NextChange, NotRetained>) -> (u64, u64) {
        match next {
            Ok(NextChange::Change { change, backlog_effects }) => (change_index(&change), backlog_effects),
            Ok(NextChange::NotYet) => panic!("expected a change, got NotYet"),
            Err(e) => panic!("expected a change, got NotRetained from {}", e.first_index),
        }
    }

    #[test]
    fn a_reader_backlog_is_the_effects_retained_after_its_change() {
        let hub = WatchHub::new(WatchLimits { retained_effects: 10, ..WatchLimits::default() }, 4, None);
        assert!(matches!(hub.next_change(5), Ok(NextChange::NotYet)));
        hub.push(entry(5, 3));
        hub.push(entry(6, 0)); // an entry without effects counts as one
        hub.push(entry(8, 4));
        assert_eq!(found(hub.next_change(5)), (5, 5));
        assert_eq!(found(hub.next_change(6)), (6, 4));
        // Index 7 carried nothing for the state machine: the next retained change is 8.
        assert_eq!(found(hub.next_change(7)), (8, 0));
        assert!(matches!(hub.next_change(9), Ok(NextChange::NotYet)));
        assert_eq!(*hub.newest().borrow(), 8);
        // Over 10 retained effects, the oldest change goes; its index is no longer served.
        hub.push(entry(9, 3));
        assert!(matches!(hub.next_change(5), Err(NotRetained { first_index: 6 })));
        assert_eq!(found(hub.next_change(6)), (6, 7));
    }

    #[test]
    fn after_a_hole_nothing_older_is_served_and_from_now_means_whatever_comes_next() {
        let hub = WatchHub::new(WatchLimits::default(), 0, None);
        hub.push(entry(1, 1));
        assert_eq!(hub.start_from_now(), 2);
        hub.forget_all();
        assert!(matches!(hub.next_change(2), Err(NotRetained { .. })));
        assert_eq!(hub.start_from_now(), 0);
        assert!(matches!(hub.next_change(0), Ok(NextChange::NotYet)));
        hub.push(entry(7, 1));
        assert_eq!(found(hub.next_change(0)), (7, 0));
        assert!(matches!(hub.next_change(2), Err(NotRetained { first_index: 7 })));
    }

    #[test]
    fn limits_that_do_not_fit_together_are_refused() {
        assert!(WatchLimits::default().check().is_ok());
        let too_far = WatchLimits { retained_effects: 100, backlog_max_effects: 101, ..WatchLimits::default() };
        assert!(too_far.check().is_err_and(|e| e.contains("watch_backlog_max_effects")));
        assert!(WatchLimits { streams_max: 0, ..WatchLimits::default() }.check().is_err());
    }

    #[tokio::test]
    async fn places_among_streams_are_limited_and_given_back() {
        let hub = WatchHub::new(WatchLimits { streams_max: 1, ..WatchLimits::default() }, 0, None);
        let first = hub.open_stream().expect("a place");
        assert!(matches!(hub.open_stream(), Err(TooManyStreams { streams_max: 1 })));
        drop(first);
        hub.open_stream().expect("the place was given back");
    }
}

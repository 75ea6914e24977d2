//! Recent applied entries, retained so that Watch streams can start from a past log index and
//! resume after a disconnect.
//!
//! One task per node copies every [`StateChange`] of the replica into a bounded ring (bounded by
//! the number of effects it holds, `retained_effects`) and re-broadcasts it to the node's Watch
//! streams. A stream that starts, or that falls behind the broadcast, reads the ring from the
//! index it needs; if that index is no longer retained the stream ends with `OUT_OF_RANGE`
//! naming the oldest index it could resume from.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use switchboard_raft::StateChange;
use tokio::sync::broadcast;

/// Capacity of the broadcast from the ring to the Watch streams, in changes.
const BROADCAST_CAPACITY: usize = 1024;

/// Retained changes plus the broadcast that announces new ones.
#[derive(Debug)]
pub struct WatchHub {
    ring: Mutex<Ring>,
    sender: broadcast::Sender<StateChange>,
}

#[derive(Debug)]
struct Ring {
    changes: VecDeque<StateChange>,
    effects: usize,
    retained_effects: usize,
    /// The first index the ring can serve: everything from it on is retained or not yet
    /// applied.
    first_index: u64,
}

/// What a new or lagging Watch stream gets: the retained changes it asked for and a receiver
/// for everything after them.
pub(crate) struct Backlog {
    /// Retained changes with index >= the requested one, in order.
    pub(crate) changes: Vec<StateChange>,
    /// New changes (may repeat some of `changes`; skip indexes already seen).
    pub(crate) receiver: broadcast::Receiver<StateChange>,
    /// The first index the stream is to deliver: the requested one, or for "from now" the one
    /// after the last change already broadcast.
    pub(crate) start_index: u64,
}

/// The requested index is older than anything retained.
#[derive(Debug)]
pub(crate) struct NotRetained {
    /// The oldest index that can be resumed from.
    pub(crate) first_index: u64,
}

pub(crate) fn change_index(change: &StateChange) -> u64 {
    match change {
        StateChange::Entry { index, .. } | StateChange::SnapshotInstalled { index } => *index,
    }
}

fn effect_count(change: &StateChange) -> usize {
    match change {
        StateChange::Entry { outcomes, .. } => outcomes.iter().map(|o| o.effects.len()).sum::<usize>().max(1),
        StateChange::SnapshotInstalled { .. } => 1,
    }
}

impl WatchHub {
    /// A hub retaining about `retained_effects` effects of the changes after `applied_index`.
    /// Subscribe to the replica before reading `applied_index`, so that nothing falls between.
    pub fn new(retained_effects: usize, applied_index: u64) -> Arc<Self> {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Arc::new(Self {
            ring: Mutex::new(Ring {
                changes: VecDeque::new(),
                effects: 0,
                retained_effects: retained_effects.max(1),
                first_index: applied_index + 1,
            }),
            sender,
        })
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
        ring.effects += effect_count(&change);
        ring.changes.push_back(change.clone());
        while ring.effects > ring.retained_effects && ring.changes.len() > 1 {
            if let Some(old) = ring.changes.pop_front() {
                ring.effects -= effect_count(&old);
                ring.first_index = change_index(&old) + 1;
            }
        }
        // Sent under the lock, so that a stream taking its backlog under the same lock sees each
        // change exactly once (in the backlog or on the receiver).
        let _ = self.sender.send(change);
    }

    /// The retained changes from `from_index` on and a receiver for later ones. `from_index` 0
    /// means "from now".
    pub(crate) fn backlog(&self, from_index: u64) -> Result<Backlog, NotRetained> {
        let ring = self.lock();
        let receiver = self.sender.subscribe();
        let last = ring.changes.back().map(change_index);
        if from_index == 0 {
            let start_index = match last {
                Some(last) => last + 1,
                // After a hole nothing is known yet: deliver whatever comes next.
                None if ring.first_index == u64::MAX => 0,
                None => ring.first_index,
            };
            return Ok(Backlog { changes: Vec::new(), receiver, start_index });
        }
        if from_index < ring.first_index && last.is_none_or(|last| from_index <= last) {
            return Err(NotRetained { first_index: ring.first_index });
        }
        let start = ring.changes.partition_point(|change| change_index(change) < from_index);
        Ok(Backlog { changes: ring.changes.range(start..).cloned().collect(), receiver, start_index: from_index })
    }
}

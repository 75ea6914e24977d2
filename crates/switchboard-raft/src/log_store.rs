//! The Raft log and vote, durable in one redb database.
//!
//! Every `append` batch is one write transaction committed with immediate durability (fsync)
//! before openraft is told the entries are flushed, so a batch of many entries costs one sync.
//! The vote is saved the same way. The committed log id is saved with no durability of its own:
//! redb persists it with the next durable commit, and losing it in a crash only means replaying
//! a little more of the log at start-up (it is an optimisation, never a correctness input).
//!
//! redb calls block, so each runs on tokio's blocking pool; the Raft core awaits it.

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Log entries by index: a format byte, then the postcard encoding.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The format of a stored log entry this build writes and reads. A node that finds an entry
/// of another format (written by a newer build) refuses to start rather than misread it, so a
/// rolling upgrade can be undone only before the new build wrote anything. Format 2: teams
/// carry `position_update_interval_s`. Format 3: proposals carry who made each input and
/// audit notes.
pub(crate) const LOG_ENTRY_FORMAT: u8 = 3;

/// A stored entry that this build cannot read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EntryFormatError {
    /// Written in another format.
    #[error(
        "log entry format {found} is not readable by this build (it reads format {LOG_ENTRY_FORMAT}); \
         the log was written by another Switchboard version: run that version, or start this node with an \
         empty data directory and let it catch up from its peers"
    )]
    Version {
        /// The format byte found.
        found: u8,
    },
    /// Empty record.
    #[error("empty log entry record")]
    Empty,
    /// The payload does not decode.
    #[error("log entry does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// Encodes an entry as stored: format byte, then postcard.
fn encode_entry(entry: &Entry) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(LOG_ENTRY_FORMAT);
    postcard::to_io(entry, &mut bytes)?;
    Ok(bytes)
}

/// Decodes a stored entry, refusing other formats.
fn decode_entry(bytes: &[u8]) -> Result<Entry, EntryFormatError> {
    let (&format, payload) = bytes.split_first().ok_or(EntryFormatError::Empty)?;
    if format != LOG_ENTRY_FORMAT {
        return Err(EntryFormatError::Version { found: format });
    }
    Ok(postcard::from_bytes(payload)?)
}
/// Small records: vote, committed id, last purged id.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// The durable Raft log and vote of one node. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    committed: Arc<AtomicU64>,
}

/// A [`LogStore`] that does not keep the database open (see [`LogStore::downgrade`]).
#[derive(Clone)]
pub(crate) struct WeakLogStore {
    db: std::sync::Weak<Database>,
    committed: Arc<AtomicU64>,
}

impl WeakLogStore {
    /// The log, while the node still has it open.
    pub(crate) fn upgrade(&self) -> Option<LogStore> {
        Some(LogStore { db: self.db.upgrade()?, committed: Arc::clone(&self.committed) })
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// Why the log database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the Raft log at {path}: {source}")]
pub struct OpenLogError {
    path: String,
    #[source]
    source: redb::Error,
}

impl OpenLogError {
    /// Whether the database is held open by another handle (a previous incarnation of the
    /// node in this process that has not released it yet, or another process).
    pub fn is_already_open(&self) -> bool {
        matches!(self.source, redb::Error::DatabaseAlreadyOpen)
    }
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenLogError> {
        let fail = |source: redb::Error| OpenLogError { path: path.display().to_string(), source };
        let db = Database::create(path).map_err(|e| fail(e.into()))?;
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        {
            txn.open_table(LOG).map_err(|e| fail(e.into()))?;
            txn.open_table(META).map_err(|e| fail(e.into()))?;
        }
        txn.commit().map_err(|e| fail(e.into()))?;
        // Only for status reports: openraft reads the record itself through `read_committed`
        // and fails there if it is unreadable; 0 until then is merely conservative.
        let committed = Self::read_meta::<Option<LogId>>(&db, KEY_COMMITTED, ErrorSubject::Store)
            .ok()
            .flatten()
            .flatten()
            .map_or(0, |id| id.index);
        Ok(Self { db: Arc::new(db), committed: Arc::new(AtomicU64::new(committed)) })
    }

    /// Creates the log of a node restored from a snapshot (`restore_snapshot`): no entries, and
    /// the vote of term `term` for `leader`, the node that led when the snapshot's last entry
    /// was written, so that the vote is as recent as the state and the next election is later.
    pub(crate) fn write_restored_vote(path: &Path, term: u64, leader: NodeId) -> Result<(), String> {
        let store = Self::open(path).map_err(|e| e.to_string())?;
        let vote = Vote::new(term, leader);
        Self::write_meta(&store.db, KEY_VOTE, &vote, Durability::Immediate, ErrorSubject::Vote)
            .map_err(|e| e.to_string())
    }

    /// The highest committed index saved so far, shared with the node for status reports.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.committed)
    }

    /// Runs a blocking redb operation. On a multi-threaded runtime it runs in place (the worker
    /// hands its other tasks to a sibling first): an append is one short fsync, and handing it
    /// to the blocking pool cost more in thread wake-ups than the write itself. On a
    /// current-thread runtime it goes to the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            return tokio::task::block_in_place(move || f(&db));
        }
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::new(&e)))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let io = |e: &dyn std::error::Error| StorageIOError::new(subject.clone(), ErrorVerb::Read, AnyError::error(e));
        let txn = db.begin_read().map_err(|e| io(&e))?;
        let table = txn.open_table(META).map_err(|e| io(&e))?;
        let Some(value) = table.get(key).map_err(|e| io(&e))? else { return Ok(None) };
        let decoded = postcard::from_bytes(value.value()).map_err(|e| io(&e))?;
        Ok(Some(decoded))
    }

    fn write_meta<T: serde::Serialize>(
        db: &Database,
        key: &str,
        value: &T,
        durability: Durability,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let io = |e: &dyn std::error::Error| StorageIOError::new(subject.clone(), ErrorVerb::Write, AnyError::error(e));
        let bytes = postcard::to_allocvec(value).map_err(|e| io(&e))?;
        let mut txn = db.begin_write().map_err(|e| io(&e))?;
        txn.set_durability(durability);
        {
            let mut table = txn.open_table(META).map_err(|e| io(&e))?;
            table.insert(key, bytes.as_slice()).map_err(|e| io(&e))?;
        }
        txn.commit().map_err(|e| io(&e))?;
        Ok(())
    }

    /// A handle that does not keep the database open: the node's readers hold one, so that a
    /// stopped node's log closes when openraft drops its handle (a restart in the same process
    /// opens it again).
    pub(crate) fn downgrade(&self) -> WeakLogStore {
        WeakLogStore { db: Arc::downgrade(&self.db), committed: Arc::clone(&self.committed) }
    }

    /// The first index the log holds, if any (what purges left).
    pub(crate) fn first_index(&self) -> Result<Option<u64>, StorageError> {
        let io = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e));
        let txn = self.db.begin_read().map_err(|e| io(&e))?;
        let table = txn.open_table(LOG).map_err(|e| io(&e))?;
        Ok(table.first().map_err(|e| io(&e))?.map(|(key, _)| key.value()))
    }

    /// Entries from `from` to `to` inclusive that the log holds, in order; blocking.
    pub(crate) fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
        Self::read_range(&self.db, Bound::Included(from), Bound::Included(to))
    }

    fn read_range(db: &Database, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, StorageError> {
        let io = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e));
        let txn = db.begin_read().map_err(|e| io(&e))?;
        let table = txn.open_table(LOG).map_err(|e| io(&e))?;
        let mut entries = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(|e| io(&e))? {
            let (_, value) = item.map_err(|e| io(&e))?;
            entries.push(decode_entry(value.value()).map_err(|e| io(&e))?);
        }
        Ok(entries)
    }

    /// Number of entries currently in the log (after purges), for status and tests.
    pub async fn entry_count(&self) -> Result<u64, StorageError> {
        self.blocking(|db| {
            let io = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e));
            let txn = db.begin_read().map_err(|e| io(&e))?;
            let table = txn.open_table(LOG).map_err(|e| io(&e))?;
            Ok(table.len().map_err(|e| io(&e))?)
        })
        .await
    }
}

fn owned_bound(bound: Bound<&u64>) -> Bound<u64> {
    match bound {
        Bound::Included(i) => Bound::Included(*i),
        Bound::Excluded(i) => Bound::Excluded(*i),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (owned_bound(range.start_bound()), owned_bound(range.end_bound()));
        self.blocking(move |db| Self::read_range(db, start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.blocking(|db| {
            let last_purged: Option<LogId> = Self::read_meta(db, KEY_LAST_PURGED, ErrorSubject::Logs)?;
            let io = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e));
            let txn = db.begin_read().map_err(|e| io(&e))?;
            let table = txn.open_table(LOG).map_err(|e| io(&e))?;
            let last = match table.last().map_err(|e| io(&e))? {
                Some((_, value)) => Some(decode_entry(value.value()).map_err(|e| io(&e))?.log_id),
                None => last_purged,
            };
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |db| Self::write_meta(db, KEY_VOTE, &vote, Durability::Immediate, ErrorSubject::Vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.blocking(|db| Self::read_meta(db, KEY_VOTE, ErrorSubject::Vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed.fetch_max(committed.map_or(0, |id| id.index), Ordering::Relaxed);
        self.blocking(move |db| Self::write_meta(db, KEY_COMMITTED, &committed, Durability::None, ErrorSubject::Store))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .blocking(|db| Self::read_meta::<Option<LogId>>(db, KEY_COMMITTED, ErrorSubject::Store))
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let io = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e));
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((entry.log_id.index, encode_entry(&entry).map_err(|e| io(&e))?));
        }
        let started = std::time::Instant::now();
        let result = self
            .blocking(move |db| {
                let mut txn = db.begin_write().map_err(|e| io(&e))?;
                txn.set_durability(Durability::Immediate);
                {
                    let mut table = txn.open_table(LOG).map_err(|e| io(&e))?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice()).map_err(|e| io(&e))?;
                    }
                }
                txn.commit().map_err(|e| io(&e))?;
                Ok(())
            })
            .await;
        metrics::histogram!(crate::metrics::RAFT_APPEND_SECONDS).record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let io = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e));
            let mut txn = db.begin_write().map_err(|e| io(&e))?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(LOG).map_err(|e| io(&e))?;
                table.retain_in(log_id.index.., |_, _| false).map_err(|e| io(&e))?;
            }
            txn.commit().map_err(|e| io(&e))?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let io = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e));
            let bytes = postcard::to_allocvec(&log_id).map_err(|e| io(&e))?;
            let mut txn = db.begin_write().map_err(|e| io(&e))?;
            txn.set_durability(Durability::Immediate);
            {
                let mut meta = txn.open_table(META).map_err(|e| io(&e))?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice()).map_err(|e| io(&e))?;
                let mut table = txn.open_table(LOG).map_err(|e| io(&e))?;
                table.retain_in(..=log_id.index, |_, _| false).map_err(|e| io(&e))?;
            }
            txn.commit().map_err(|e| io(&e))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn entries_carry_their_format_and_other_formats_are_refused() {
        let entry = Entry { log_id: LogId::default(), payload: openraft::EntryPayload::Blank };
        let bytes = encode_entry(&entry).expect("encodes");
        assert_eq!(bytes.first(), Some(&LOG_ENTRY_FORMAT));
        assert_eq!(decode_entry(&bytes).expect("decodes").log_id, entry.log_id);
        for other in [LOG_ENTRY_FORMAT - 1, LOG_ENTRY_FORMAT + 1] {
            let mut written_elsewhere = bytes.clone();
            written_elsewhere[0] = other;
            let error = decode_entry(&written_elsewhere).expect_err("refused").to_string();
            assert!(error.contains(&format!("format {other} is not readable")), "{error}");
            assert!(error.contains("another Switchboard version"), "{error}");
        }
        assert!(matches!(decode_entry(&[]), Err(EntryFormatError::Empty)));
    }
}

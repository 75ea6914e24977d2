//! The Raft log and vote, durable in one redb database.
//!
//! Writes go to one log-writer thread, in order. `append` puts its entries in an in-memory tail
//! (readable at once, by replication too) and hands them to the writer; it returns without
//! waiting for the disk, so the leader replicates an entry while its own copy is being synced.
//! The writer takes everything queued, commits it as one write transaction with immediate
//! durability (fsync), and only then tells openraft the entries are flushed and drops them from
//! the tail: appends that arrive during a sync share the next one. Truncating, purging and
//! saving the vote wait for the writer to have synced them (and everything queued before
//! them). The committed log id is saved with no durability of its own: redb persists it with
//! the next durable commit, and losing it in a crash only means replaying a little more of the
//! log at start-up (it is an optimisation, never a correctness input).
//!
//! Reads block on redb, so each runs in place on a multi-threaded runtime (else on tokio's
//! blocking pool).

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

/// The durable Raft log and vote of one node. Cheap to clone: clones share the database, the
/// tail and the writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    committed: Arc<AtomicU64>,
    tail: Arc<Mutex<Tail>>,
    writer: Arc<Writer>,
}

/// A [`LogStore`] that does not keep the database open (see [`LogStore::downgrade`]).
#[derive(Clone)]
pub(crate) struct WeakLogStore {
    db: std::sync::Weak<Database>,
    committed: Arc<AtomicU64>,
    tail: Arc<Mutex<Tail>>,
    writer: std::sync::Weak<Writer>,
}

impl WeakLogStore {
    /// The log, while the node still has it open.
    pub(crate) fn upgrade(&self) -> Option<LogStore> {
        Some(LogStore {
            db: self.db.upgrade()?,
            committed: Arc::clone(&self.committed),
            tail: Arc::clone(&self.tail),
            writer: self.writer.upgrade()?,
        })
    }
}

/// Entries appended but not yet synced: always the newest entries of the log, in order.
type Tail = BTreeMap<u64, Entry>;

/// Entries a read finds in the tail, and the index below which it must read the database.
fn tail_part(tail: &Mutex<Tail>, start: Bound<u64>, end: Bound<u64>) -> (Vec<Entry>, Bound<u64>) {
    let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(&first) = tail.keys().next() else { return (Vec::new(), end) };
    // BTreeMap::range panics on a reversed range.
    let entries = if is_empty(start, end) {
        Vec::new()
    } else {
        tail.range((start, end)).map(|(_, entry)| entry.clone()).collect()
    };
    let below_tail = match end {
        Bound::Included(e) if e < first => Bound::Included(e),
        Bound::Excluded(e) if e <= first => Bound::Excluded(e),
        _ => Bound::Excluded(first),
    };
    (entries, below_tail)
}

/// Whether no index lies between the bounds.
fn is_empty(start: Bound<u64>, end: Bound<u64>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        (Bound::Excluded(s), Bound::Excluded(e)) => s.saturating_add(1) >= e,
        _ => false,
    }
}

/// One write for the log-writer thread.
enum Write {
    /// Entries to store; the callback fires once they are synced.
    Append { entries: Vec<(LogId, Vec<u8>)>, callback: LogFlushed<TypeConfig> },
    /// Delete entries from this index on.
    Truncate { from: u64, done: Done },
    /// Delete entries up to this log id and record it as the last purged.
    Purge { log_id: LogId, bytes: Vec<u8>, done: Done },
    /// A record of the meta table; synced only if `done` waits for it.
    Meta { key: &'static str, bytes: Vec<u8>, done: Option<Done> },
}

type Done = tokio::sync::oneshot::Sender<Result<(), StorageError>>;

/// Most writes committed in one transaction.
const WRITES_PER_SYNC_MAX: usize = 256;

/// The log-writer thread. Dropping the last handle lets it finish what is queued, then joins it
/// (and so closes the database).
struct Writer {
    tx: Option<std::sync::mpsc::Sender<Write>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(db: Arc<Database>, tail: Arc<Mutex<Tail>>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".to_owned())
            .spawn(move || write_loop(&db, &tail, &rx))?;
        Ok(Self { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues a write; an error if the thread is gone.
    fn send(&self, write: Write) -> Result<(), StorageError> {
        let gone = || StorageIOError::write_logs(AnyError::error("the log writer has stopped")).into();
        self.tx.as_ref().ok_or_else(gone)?.send(write).map_err(|_| gone())
    }

    /// Queues a write and waits until it is synced.
    async fn sync(&self, write: impl FnOnce(Done) -> Write) -> Result<(), StorageError> {
        let (done, synced) = tokio::sync::oneshot::channel();
        self.send(write(done))?;
        synced.await.map_err(|_| StorageIOError::write_logs(AnyError::error("the log writer has stopped")))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: commits what is queued, in order, one transaction per turn.
fn write_loop(db: &Database, tail: &Mutex<Tail>, rx: &std::sync::mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut writes = vec![first];
        while writes.len() < WRITES_PER_SYNC_MAX {
            match rx.try_recv() {
                Ok(next) => writes.push(next),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let appended = writes.iter().any(|write| matches!(write, Write::Append { .. }));
        let result = commit(db, &writes).map_err(|e| e.to_string());
        if appended {
            metrics::histogram!(crate::metrics::RAFT_APPEND_SECONDS).record(started.elapsed().as_secs_f64());
        }
        if result.is_ok() {
            // Synced: reads find these in the database now (a newer entry of the same index,
            // appended after a truncation, stays).
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            for write in &writes {
                if let Write::Append { entries, .. } = write {
                    for (log_id, _) in entries {
                        if tail.get(&log_id.index).is_some_and(|entry| entry.log_id == *log_id) {
                            tail.remove(&log_id.index);
                        }
                    }
                }
            }
        }
        let failed = |e: &String| StorageError::from(StorageIOError::write_logs(AnyError::error(e)));
        for write in writes {
            match write {
                Write::Append { callback, .. } => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Write::Truncate { done, .. } | Write::Purge { done, .. } | Write::Meta { done: Some(done), .. } => {
                    let _ = done.send(result.as_ref().map(|_| ()).map_err(failed));
                }
                Write::Meta { done: None, .. } => {}
            }
        }
    }
}

/// One transaction holding `writes` in order; durable unless it only saves unsynced records.
fn commit(db: &Database, writes: &[Write]) -> Result<(), StorageError> {
    let io = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e));
    let durable = writes.iter().any(|write| !matches!(write, Write::Meta { done: None, .. }));
    let mut txn = db.begin_write().map_err(|e| io(&e))?;
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None });
    {
        let mut log = txn.open_table(LOG).map_err(|e| io(&e))?;
        let mut meta = txn.open_table(META).map_err(|e| io(&e))?;
        for write in writes {
            match write {
                Write::Append { entries, .. } => {
                    for (log_id, bytes) in entries {
                        log.insert(log_id.index, bytes.as_slice()).map_err(|e| io(&e))?;
                    }
                }
                Write::Truncate { from, .. } => {
                    log.retain_in(*from.., |_, _| false).map_err(|e| io(&e))?;
                }
                Write::Purge { log_id, bytes, .. } => {
                    meta.insert(KEY_LAST_PURGED, bytes.as_slice()).map_err(|e| io(&e))?;
                    log.retain_in(..=log_id.index, |_, _| false).map_err(|e| io(&e))?;
                }
                Write::Meta { key, bytes, .. } => {
                    meta.insert(*key, bytes.as_slice()).map_err(|e| io(&e))?;
                }
            }
        }
    }
    txn.commit().map_err(|e| io(&e))?;
    Ok(())
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
        let db = Arc::new(db);
        let tail = Arc::new(Mutex::new(Tail::new()));
        let writer = Writer::start(Arc::clone(&db), Arc::clone(&tail)).map_err(|e| fail(redb::Error::Io(e)))?;
        Ok(Self { db, committed: Arc::new(AtomicU64::new(committed)), tail, writer: Arc::new(writer) })
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
        WeakLogStore {
            db: Arc::downgrade(&self.db),
            committed: Arc::clone(&self.committed),
            tail: Arc::clone(&self.tail),
            writer: Arc::downgrade(&self.writer),
        }
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
        Self::read_with_tail(&self.db, &self.tail, Bound::Included(from), Bound::Included(to))
    }

    /// Entries of the range: those still in the tail, and the older ones from the database.
    /// The tail is read first: an entry the writer syncs meanwhile is then in the database.
    fn read_with_tail(
        db: &Database,
        tail: &Mutex<Tail>,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        let (newest, below_tail) = tail_part(tail, start, end);
        let mut entries = Self::read_range(db, start, below_tail)?;
        entries.extend(newest);
        Ok(entries)
    }

    fn read_range(db: &Database, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, StorageError> {
        let io = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e));
        if is_empty(start, end) {
            return Ok(Vec::new());
        }
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
        let tail = Arc::clone(&self.tail);
        self.blocking(move |db| Self::read_with_tail(db, &tail, start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let newest = self.tail.lock().unwrap_or_else(PoisonError::into_inner).values().next_back().map(|e| e.log_id);
        self.blocking(move |db| {
            let last_purged: Option<LogId> = Self::read_meta(db, KEY_LAST_PURGED, ErrorSubject::Logs)?;
            let io = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e));
            let txn = db.begin_read().map_err(|e| io(&e))?;
            let table = txn.open_table(LOG).map_err(|e| io(&e))?;
            let last = match (newest, table.last().map_err(|e| io(&e))?) {
                (Some(newest), _) => Some(newest),
                (None, Some((_, value))) => Some(decode_entry(value.value()).map_err(|e| io(&e))?.log_id),
                (None, None) => last_purged,
            };
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(vote)
            .map_err(|e| StorageIOError::new(ErrorSubject::Vote, ErrorVerb::Write, AnyError::error(e)))?;
        self.writer.sync(|done| Write::Meta { key: KEY_VOTE, bytes, done: Some(done) }).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.blocking(|db| Self::read_meta(db, KEY_VOTE, ErrorSubject::Vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed.fetch_max(committed.map_or(0, |id| id.index), Ordering::Relaxed);
        let bytes = postcard::to_allocvec(&committed)
            .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::error(e)))?;
        self.writer.send(Write::Meta { key: KEY_COMMITTED, bytes, done: None })
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
        {
            let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                encoded.push((entry.log_id, encode_entry(&entry).map_err(|e| io(&e))?));
                tail.insert(entry.log_id.index, entry);
            }
        }
        self.writer.send(Write::Append { entries: encoded, callback })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.writer.sync(|done| Write::Truncate { from: log_id.index, done }).await?;
        // Everything queued before is synced and out of the tail; nothing of this index on stays.
        self.tail.lock().unwrap_or_else(PoisonError::into_inner).retain(|index, _| *index < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(&log_id).map_err(|e| StorageIOError::write_logs(AnyError::error(e)))?;
        self.writer.sync(|done| Write::Purge { log_id, bytes, done }).await?;
        self.tail.lock().unwrap_or_else(PoisonError::into_inner).retain(|index, _| *index > log_id.index);
        Ok(())
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
    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    /// Reads merge the synced entries with the tail of unsynced ones, each index once and in
    /// order, including the moment an entry is in both (synced, not yet dropped from the tail);
    /// empty and reversed ranges read nothing.
    #[test]
    fn reads_see_synced_entries_and_the_unsynced_tail_each_once() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LogStore::open(&dir.path().join("raft.redb")).expect("open");
        let txn = store.db.begin_write().expect("txn");
        {
            let mut log = txn.open_table(LOG).expect("table");
            for index in 1..=5 {
                log.insert(index, encode_entry(&blank(1, index)).expect("encode").as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
        {
            let mut tail = store.tail.lock().expect("tail");
            for index in 5..=7 {
                tail.insert(index, blank(2, index));
            }
        }
        let read = |start: Bound<u64>, end: Bound<u64>| -> Vec<(u64, u64)> {
            LogStore::read_with_tail(&store.db, &store.tail, start, end)
                .expect("read")
                .iter()
                .map(|entry| (entry.log_id.index, entry.log_id.leader_id.term))
                .collect()
        };
        use Bound::{Excluded, Included, Unbounded};
        assert_eq!(read(Unbounded, Unbounded), [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (7, 2)]);
        assert_eq!(read(Included(2), Included(3)), [(2, 1), (3, 1)]);
        assert_eq!(read(Included(4), Excluded(6)), [(4, 1), (5, 2)]);
        assert_eq!(read(Excluded(5), Unbounded), [(6, 2), (7, 2)]);
        assert_eq!(read(Included(8), Unbounded), []);
        assert_eq!(read(Excluded(3), Excluded(4)), []);
        assert_eq!(read(Excluded(6), Excluded(6)), []);
        assert_eq!(read(Included(6), Included(2)), []);
        assert_eq!(store.entries(3, 6).expect("entries").len(), 4);
    }
}

//! The openraft state-machine adapter around [`switchboard_core::State`].
//!
//! The assigner state lives in memory. Durability comes from the log plus snapshots: a snapshot
//! is written to `snapshot.bin` in the node's directory (write to a temporary file, fsync,
//! rename, fsync the directory), so a crash at any point leaves either the old snapshot or the
//! new one, never half of one. At start-up the node restores the snapshot and openraft replays
//! the committed entries after it.
//!
//! A snapshot file is:
//!
//! ```text
//! b"SWRS" | u16 LE format version | u32 LE meta length | postcard(SnapshotMeta)
//!         | u32 LE outbox length | postcard(outbox) | core snapshot
//! ```
//!
//! where the core snapshot is [`State::snapshot`] (which carries its own magic and version) and
//! the outbox holds the effects not yet confirmed published (see [`crate::Outbox`]), which the
//! entries the snapshot covers can no longer give again.
//! The same bytes are what a leader streams to a follower, so installing means checking the
//! bytes, restoring the core state from them (a bad snapshot is refused and the old state kept),
//! writing the file and only then swapping the in-memory state.

use crate::FaultPlan;
use crate::audit::{AuditRecord, AuditTrail};
use crate::outbox::{Outbox, StoredOutbox, StoredOutboxRef};
use crate::types::{
    Applied, AppliedEntry, Entry, InputOutcome, LogId, Rejection, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use switchboard_core::{ApplyError, Input, State};
use tokio::sync::broadcast;

const SNAPSHOT_MAGIC: &[u8; 4] = b"SWRS";
/// Format 2 added the outbox; format 3 the audit trail.
const SNAPSHOT_FORMAT: u16 = 3;
pub(crate) const SNAPSHOT_FILE: &str = "snapshot.bin";
/// The snapshot before the current one, kept (a hard link, no copy) when a new one replaces it,
/// so that a conversation's history can be re-derived from before the last snapshot
/// (`crate::history`). Nothing at start-up reads it.
pub(crate) const PREVIOUS_SNAPSHOT_FILE: &str = "snapshot.prev.bin";
/// Applied entries the change feed holds for a slow subscriber before it gets `Lagged` (and
/// re-reads: the Watch ring, the effect publisher from the outbox).
pub(crate) const CHANGE_FEED_CAPACITY: usize = 4096;
/// How long a forked read may take (for a snapshot: encoding it and its paced write) before
/// the child is killed and the read is done under the lock.
const FORK_TIMEOUT: Duration = Duration::from_secs(600);

/// The applied state of one replica: the assigner plus what openraft needs to know about it.
#[derive(Debug, Default)]
pub struct Replica {
    /// The assigner.
    pub state: State,
    /// The last log entry applied to `state`.
    pub last_applied: Option<LogId>,
    /// The last membership configuration applied.
    pub last_membership: StoredMembership,
    /// Effects not yet confirmed published.
    pub outbox: Outbox,
    /// Who changed what (configuration and membership).
    pub audit: AuditTrail,
}

/// Something that happened to the applied state, in log order; what Watch streams and effect
/// publishers subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// An application entry was applied.
    Entry(AppliedEntry),
    /// A snapshot replaced the state (this replica was behind). Changes up to `index` were not
    /// delivered one by one; a subscriber should re-read what it cares about.
    SnapshotInstalled {
        /// The last log index the snapshot covers.
        index: u64,
    },
}

/// Snapshot bytes per record of the state (see [`State::record_count`]), on the low side:
/// about 77 for a conversation with its own contact in `make bench-core`.
const RECORD_BYTES_ESTIMATE: usize = 64;

/// Most changed records (see [`State::digest_backlog`]) a digest reads under the replica's
/// read lock: about 4 ms of hashing on the benchmark machine.
const DIGEST_BACKLOG_UNDER_LOCK: usize = 16_384;

/// State shared between the adapter, its snapshot builders and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    replica: RwLock<Replica>,
    dir: PathBuf,
    changes: broadcast::Sender<StateChange>,
    snapshots_built: AtomicU64,
    /// Inputs whose apply panicked (and were refused as internal errors) since start.
    apply_panics: AtomicU64,
    /// Effects dropped from the outbox unpublished (over its bound) since start.
    outbox_dropped: AtomicU64,
    /// The size of the last snapshot built, installed or restored, in bytes: decides whether a
    /// whole-state read forks.
    size_hint: AtomicUsize,
    /// A whole-state read of a state at least this large (by `size_hint`) runs in a forked
    /// child (see `switchboard_fork`); a smaller one under the lock, which is then quicker.
    fork_bytes_min: AtomicUsize,
    /// The last state digest and the applied index it is for; its lock also makes concurrent
    /// callers wait for one computation rather than start several.
    digest: Mutex<(u64, String)>,
    /// Held while `snapshot.bin` is replaced: a snapshot built in the background and one
    /// installed from the leader may finish at the same time.
    snapshot_files: Mutex<()>,
}

impl Shared {
    /// The directory holding the snapshot files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Replica> {
        self.replica.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Replica> {
        self.replica.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    pub(crate) fn apply_panics(&self) -> u64 {
        self.apply_panics.load(Ordering::Relaxed)
    }

    pub(crate) fn outbox_dropped(&self) -> u64 {
        self.outbox_dropped.load(Ordering::Relaxed)
    }

    /// Reads the whole replica consistently: `head` (cheap) under the read lock, and `body`
    /// (the whole state) under the lock too when the state is small, else in a forked child
    /// over the memory image taken under the lock, so that applies wait only for the fork. If
    /// the child fails, both are read again under the lock. `finish` then turns the body's
    /// bytes into the result: in the child when there is one (so that, say, a snapshot file is
    /// written there and only a few bytes come back), else after the lock is released.
    fn read_whole<H>(
        &self,
        head: impl Fn(&Replica) -> H,
        body: impl Fn(&Replica) -> Vec<u8>,
        finish: impl Fn(Vec<u8>) -> Vec<u8>,
    ) -> (H, Vec<u8>) {
        self.read_whole_streaming(head, &body, &finish, |replica| finish(body(replica)))
    }

    /// [`Shared::read_whole`], with what a forked child runs given on its own: `in_child`
    /// answers what `finish(body(replica))` would, without holding all of the body at once.
    fn read_whole_streaming<H>(
        &self,
        head: impl Fn(&Replica) -> H,
        body: impl Fn(&Replica) -> Vec<u8>,
        finish: impl Fn(Vec<u8>) -> Vec<u8>,
        in_child: impl Fn(&Replica) -> Vec<u8>,
    ) -> (H, Vec<u8>) {
        let (first, child) = {
            let replica = self.read();
            let started = std::time::Instant::now();
            let paused = || {
                metrics::histogram!(crate::metrics::STATE_READ_PAUSE_SECONDS).record(started.elapsed().as_secs_f64());
            };
            let first = head(&replica);
            // The last snapshot's size, or an estimate from the record count if the state has
            // grown since (a node that has not built a snapshot yet has no size at all).
            let size = self
                .size_hint
                .load(Ordering::Relaxed)
                .max(replica.state.record_count().saturating_mul(RECORD_BYTES_ESTIMATE));
            let under_lock = if size < self.fork_bytes_min.load(Ordering::Relaxed) {
                None
            } else {
                match switchboard_fork::spawn(|| in_child(&replica)) {
                    Ok(child) => Some(child),
                    Err(error) => {
                        tracing::warn!(%error, "cannot fork to read the state; reading it under the lock (applies wait)");
                        None
                    }
                }
            };
            match under_lock {
                Some(child) => {
                    paused();
                    (first, child)
                }
                None => {
                    let bytes = body(&replica);
                    paused();
                    drop(replica);
                    return (first, finish(bytes));
                }
            }
        };
        match child.wait(FORK_TIMEOUT) {
            Ok(bytes) => (first, bytes),
            Err(error) => {
                tracing::warn!(%error, "reading the state in a child failed; reading it under the lock (applies wait)");
                let (first, bytes) = {
                    let replica = self.read();
                    (head(&replica), body(&replica))
                };
                (first, finish(bytes))
            }
        }
    }

    /// The applied index and the digest of the state there (see [`State::state_digest`]).
    /// The state keeps its digest up to date as it applies, so reading it costs
    /// O([`State::digest_backlog`]): under the read lock while that backlog is at most
    /// [`DIGEST_BACKLOG_UNDER_LOCK`] records (a few milliseconds), else — right after a
    /// restore, when every record is in it — as a whole-state read ([`Shared::read_whole`],
    /// forked for a large state). May block for that long: call it off the async runtime.
    pub(crate) fn digest(&self) -> (u64, String) {
        let applied_index = |replica: &Replica| replica.last_applied.map_or(0, |id| id.index);
        let mut cached = self.digest.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let replica = self.read();
            let applied = applied_index(&replica);
            if cached.0 == applied && !cached.1.is_empty() {
                return cached.clone();
            }
            if replica.state.digest_backlog() <= DIGEST_BACKLOG_UNDER_LOCK {
                let started = std::time::Instant::now();
                *cached = (applied, replica.state.state_digest());
                metrics::histogram!(crate::metrics::STATE_READ_PAUSE_SECONDS).record(started.elapsed().as_secs_f64());
                return cached.clone();
            }
        }
        let (index, digest) =
            self.read_whole(applied_index, |replica| replica.state.state_digest().into_bytes(), |bytes| bytes);
        *cached = (index, String::from_utf8_lossy(&digest).into_owned());
        cached.clone()
    }
}

/// The state-machine half of the openraft storage. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
    /// Test failpoints (see [`FaultPlan::panic_on_apply`]); none in production.
    faults: Option<Arc<dyn FaultPlan>>,
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading or writing the file failed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a Switchboard snapshot of a format this build reads.
    #[error("not a readable snapshot: {0}")]
    Format(String),
}

/// What a snapshot file carries beside the core state: the replica's outbox and audit trail.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReplicaExtras {
    outbox: StoredOutbox,
    audit: AuditTrail,
}

/// [`ReplicaExtras`] to encode, borrowed from a replica: the same fields in the same order,
/// so the same bytes, without a copy of the outbox's effects.
#[derive(serde::Serialize)]
struct ReplicaExtrasRef<'a> {
    outbox: StoredOutboxRef<'a>,
    audit: &'a AuditTrail,
}

/// Encodes a snapshot file from its metadata, outbox and audit trail ([`ReplicaExtras`], or
/// borrowed), and the core snapshot bytes.
fn encode_snapshot(
    meta: &SnapshotMeta,
    extras: &impl serde::Serialize,
    core: &[u8],
) -> Result<Vec<u8>, SnapshotFileError> {
    let extras = postcard::to_allocvec(extras).map_err(|e| SnapshotFileError::Format(e.to_string()))?;
    let mut out = snapshot_head(meta, extras.len(), extras.len() + core.len())?;
    out.extend_from_slice(&extras);
    out.extend_from_slice(core);
    Ok(out)
}

/// A snapshot file up to its outbox, which is `outbox_bytes` long, with room for `more`
/// bytes after it.
fn snapshot_head(meta: &SnapshotMeta, outbox_bytes: usize, more: usize) -> Result<Vec<u8>, SnapshotFileError> {
    let meta_bytes = postcard::to_allocvec(meta).map_err(|e| SnapshotFileError::Format(e.to_string()))?;
    let meta_len =
        u32::try_from(meta_bytes.len()).map_err(|_| SnapshotFileError::Format("metadata too large".into()))?;
    let outbox_len = u32::try_from(outbox_bytes).map_err(|_| SnapshotFileError::Format("outbox too large".into()))?;
    let mut out = Vec::with_capacity(14 + meta_bytes.len() + more);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    out.extend_from_slice(&outbox_len.to_le_bytes());
    Ok(out)
}

/// A decoded snapshot file: metadata, outbox, and the core snapshot bytes.
pub(crate) type DecodedSnapshot<'a> = (SnapshotMeta, ReplicaExtras, &'a [u8]);

/// The metadata of the snapshot file at `path`, reading only its header; `None` if there is
/// no file.
pub(crate) fn read_snapshot_meta(path: &Path) -> Result<Option<SnapshotMeta>, SnapshotFileError> {
    use std::io::Read;
    let io = |source| SnapshotFileError::Io { path: path.display().to_string(), source };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut head = [0u8; 10];
    file.read_exact(&mut head).map_err(io)?;
    if &head[..4] != SNAPSHOT_MAGIC || u16::from_le_bytes([head[4], head[5]]) != SNAPSHOT_FORMAT {
        return Err(SnapshotFileError::Format("not a snapshot this build reads".to_owned()));
    }
    let meta_len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
    // The metadata is a membership and a log id: far below this.
    if meta_len > SNAPSHOT_META_BYTES_MAX {
        return Err(SnapshotFileError::Format(format!("metadata of {meta_len} bytes")));
    }
    let mut meta = vec![0u8; meta_len];
    file.read_exact(&mut meta).map_err(io)?;
    postcard::from_bytes(&meta).map(Some).map_err(|e| SnapshotFileError::Format(e.to_string()))
}

/// Largest snapshot metadata [`read_snapshot_meta`] reads, in bytes (64 members' addresses fit
/// many times over).
const SNAPSHOT_META_BYTES_MAX: usize = 1 << 20;

/// Splits a snapshot file into its metadata, outbox and the core snapshot bytes.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot<'_>, SnapshotFileError> {
    let format = |m: &str| SnapshotFileError::Format(m.to_owned());
    if bytes.len() < 10 || &bytes[..4] != SNAPSHOT_MAGIC {
        return Err(format("missing SWRS header"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SNAPSHOT_FORMAT {
        return Err(SnapshotFileError::Format(format!("format version {version}, this build reads {SNAPSHOT_FORMAT}")));
    }
    let meta_len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    let rest = &bytes[10..];
    if rest.len() < meta_len {
        return Err(format("truncated metadata"));
    }
    let meta = postcard::from_bytes(&rest[..meta_len]).map_err(|e| SnapshotFileError::Format(e.to_string()))?;
    let rest = &rest[meta_len..];
    if rest.len() < 4 {
        return Err(format("truncated outbox length"));
    }
    let outbox_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if rest.len() < outbox_len {
        return Err(format("truncated outbox"));
    }
    let outbox =
        postcard::from_bytes(&rest[..outbox_len]).map_err(|e| SnapshotFileError::Format(format!("outbox: {e}")))?;
    Ok((meta, outbox, &rest[outbox_len..]))
}

/// Keeps the current snapshot in `dir` as the previous one before a new one replaces it: a hard
/// link renamed into place, so `snapshot.bin` is never missing and a crash leaves a whole
/// previous file or the old one. Failing only narrows what `Explain` can reach, so it is logged.
fn keep_previous_snapshot(dir: &Path) {
    let current = dir.join(SNAPSHOT_FILE);
    if !current.exists() {
        return;
    }
    let link = dir.join(format!("{PREVIOUS_SNAPSHOT_FILE}.tmp"));
    let _ = std::fs::remove_file(&link);
    let kept =
        std::fs::hard_link(&current, &link).and_then(|()| std::fs::rename(&link, dir.join(PREVIOUS_SNAPSHOT_FILE)));
    if let Err(error) = kept {
        tracing::warn!(%error, dir = %dir.display(), "could not keep the previous snapshot; explanations reach back only to the current one");
    }
}

/// The start and end of the name of a snapshot being built (`snapshot.bin.<pid>-<n>.build`):
/// one name per build, so that nothing else ever writes to it; left over by a crash, it is
/// removed when the state machine opens.
const BUILDING_PREFIX: &str = "snapshot.bin.";
const BUILDING_SUFFIX: &str = ".build";

/// What writing a snapshot being built came to. When the state is read in a forked child the
/// child writes the file itself and sends back only this (a few bytes, not the file): the
/// parent neither copies the file into its heap nor writes it. An error is carried as data
/// (formatting an OS error's message in the child could take a lock).
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum SnapshotWritten {
    /// Written and synced, this many bytes.
    Written(u64),
    /// The state could not be encoded.
    NotEncoded,
    /// Writing failed.
    Failed {
        /// The OS error number, if it was one.
        os_error: Option<i32>,
        /// Its kind (`std::io::ErrorKind`, debug-formatted).
        kind: String,
    },
}

impl SnapshotWritten {
    fn failed(error: &std::io::Error) -> Self {
        SnapshotWritten::Failed { os_error: error.raw_os_error(), kind: format!("{:?}", error.kind()) }
    }

    /// The size written, or the error to report about `path`.
    fn into_result(self, path: &Path) -> Result<u64, SnapshotFileError> {
        match self {
            SnapshotWritten::Written(bytes) => Ok(bytes),
            SnapshotWritten::NotEncoded => Err(SnapshotFileError::Format("the state could not be encoded".to_owned())),
            SnapshotWritten::Failed { os_error, kind } => {
                let source = os_error.map_or_else(
                    || std::io::Error::other(format!("writing failed ({kind})")),
                    std::io::Error::from_raw_os_error,
                );
                Err(SnapshotFileError::Io { path: path.display().to_string(), source })
            }
        }
    }
}

/// Writes `bytes` (an encoded replica, empty if it could not be encoded) to `path`, paced for
/// the background; answers a [`SnapshotWritten`], encoded. Plain system calls and allocation
/// only: it runs in the forked child when there is one.
fn write_building_snapshot(bytes: &[u8], path: &Path) -> Vec<u8> {
    answer(if bytes.is_empty() {
        SnapshotWritten::NotEncoded
    } else {
        match write_synced(path, bytes, Pace::Background) {
            Ok(()) => SnapshotWritten::Written(bytes.len() as u64),
            Err(e) => SnapshotWritten::failed(&e),
        }
    })
}

/// What a snapshot writer sends back: [`SnapshotWritten`], encoded.
fn answer(written: SnapshotWritten) -> Vec<u8> {
    postcard::to_allocvec(&written).unwrap_or_default()
}

/// Puts the snapshot built at `building` (covering `meta`) in place as `dir`'s current one,
/// keeping the one before, unless a newer snapshot was installed meanwhile (then the built one
/// is dropped: replacing it would leave a snapshot older than the log that remains). Answers
/// whether it was put in place.
fn put_built_snapshot_in_place(
    files: &Mutex<()>,
    dir: &Path,
    building: &Path,
    meta: &SnapshotMeta,
) -> Result<bool, SnapshotFileError> {
    let _files = files.lock().unwrap_or_else(PoisonError::into_inner);
    let io = |source| SnapshotFileError::Io { path: dir.display().to_string(), source };
    // An unreadable current file is replaced.
    if let Ok(Some(current)) = read_snapshot_meta(&dir.join(SNAPSHOT_FILE))
        && current.last_log_id > meta.last_log_id
    {
        let _ = std::fs::remove_file(building);
        return Ok(false);
    }
    keep_previous_snapshot(dir);
    std::fs::rename(building, dir.join(SNAPSHOT_FILE)).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(true)
}

/// Removes snapshots left half-built in `dir` by a crash.
fn remove_building_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(BUILDING_PREFIX) && name.ends_with(BUILDING_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How much of a large file is written between two syncs. A snapshot at 1M conversations is
/// about 160 MB; written in one go, its sync floods the disk's queue for hundreds of
/// milliseconds, and the Raft log's own syncs on the same disk wait behind it (every write in
/// flight stalls). Synced every MiB, at most a MiB of it is ever queued ahead of a log sync.
const SYNC_EVERY_BYTES: usize = 1 << 20;

/// How a file is written by [`write_synced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// As fast as the disk takes it: a snapshot received from the leader or restored, which
    /// the node waits for.
    Full,
    /// A snapshot built in the background: after each [`SYNC_EVERY_BYTES`] written and synced
    /// the writer rests [`BACKGROUND_REST_FACTOR`] times as long as that took, so it keeps the
    /// disk busy at most a quarter of the time and the log's syncs rarely queue behind it.
    Background,
}

/// See [`Pace::Background`].
const BACKGROUND_REST_FACTOR: u32 = 3;

/// Writes `bytes` to `path` (created or truncated) and syncs it, syncing every
/// [`SYNC_EVERY_BYTES`] on the way. Plain system calls only: it may run in a forked child.
fn write_synced(path: &Path, bytes: &[u8], pace: Pace) -> std::io::Result<()> {
    let mut file = SyncedFile::create(path, pace)?;
    file.write_all(bytes).map_err(|e| file.first_error(e))?;
    file.finish().map(drop)
}

/// A file written in pieces of [`SYNC_EVERY_BYTES`], each written and synced before the next
/// (and at [`Pace::Background`], followed by a rest); [`SyncedFile::finish`] writes what is
/// left and syncs the whole file. Plain system calls only: it may run in a forked child.
struct SyncedFile {
    file: std::fs::File,
    /// What is not written yet: less than a piece.
    piece: Vec<u8>,
    pace: Pace,
    written: u64,
    /// The first write error. [`Write::write`] answers only its kind, as an encoder would
    /// drop it anyway; [`SyncedFile::first_error`] gives it back whole.
    error: Option<std::io::Error>,
}

impl SyncedFile {
    fn create(path: &Path, pace: Pace) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self { file, piece: Vec::with_capacity(SYNC_EVERY_BYTES), pace, written: 0, error: None })
    }

    /// Writes and syncs one piece, then rests if in the background.
    fn put(file: &mut std::fs::File, piece: &[u8], pace: Pace) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        file.write_all(piece)?;
        file.sync_data()?;
        if pace == Pace::Background {
            std::thread::sleep(started.elapsed() * BACKGROUND_REST_FACTOR);
        }
        Ok(())
    }

    /// The first error a write met, else `error` (from whatever wrote through this file).
    fn first_error(&mut self, error: std::io::Error) -> std::io::Error {
        self.error.take().unwrap_or(error)
    }

    /// Writes the rest and syncs the file: the bytes written in all.
    fn finish(mut self) -> std::io::Result<u64> {
        self.file.write_all(&self.piece)?;
        self.written += self.piece.len() as u64;
        self.file.sync_all()?;
        Ok(self.written)
    }
}

impl Write for SyncedFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.take(bytes).map_err(|error| {
            let kind = error.kind();
            self.error.get_or_insert(error);
            kind.into()
        })
    }

    /// Pieces are synced as they fill; [`SyncedFile::finish`] writes the last one.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SyncedFile {
    /// [`Write::write`]: buffers up to a piece, and writes a piece once it is full.
    fn take(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // A whole piece given at once goes out without a copy.
        if self.piece.is_empty() && bytes.len() >= SYNC_EVERY_BYTES {
            let whole = bytes.get(..SYNC_EVERY_BYTES).unwrap_or(bytes);
            Self::put(&mut self.file, whole, self.pace)?;
            self.written += whole.len() as u64;
            return Ok(whole.len());
        }
        let taken = bytes.len().min(SYNC_EVERY_BYTES - self.piece.len());
        self.piece.extend_from_slice(bytes.get(..taken).unwrap_or(bytes));
        if self.piece.len() == SYNC_EVERY_BYTES {
            Self::put(&mut self.file, &self.piece, self.pace)?;
            self.written += self.piece.len() as u64;
            self.piece.clear();
        }
        Ok(taken)
    }
}

/// Writes `bytes` to `dir/name` so that a crash leaves either the old file or the new one.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    write_synced(&tmp, bytes, Pace::Full)?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachineStore {
    /// Opens the state machine kept in `dir`, restoring the snapshot there if there is one.
    pub fn open(dir: &Path) -> Result<Self, SnapshotFileError> {
        let io = |source| SnapshotFileError::Io { path: dir.display().to_string(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        remove_building_snapshots(dir);
        let path = dir.join(SNAPSHOT_FILE);
        let mut size = 0;
        let replica = match std::fs::read(&path) {
            Ok(bytes) => {
                size = bytes.len();
                let (meta, extras, core) = decode_snapshot(&bytes)?;
                let state = State::restore(core).map_err(|e| SnapshotFileError::Format(e.to_string()))?;
                Replica {
                    state,
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership,
                    outbox: Outbox::from_stored(extras.outbox),
                    audit: extras.audit,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Replica::default(),
            Err(source) => return Err(SnapshotFileError::Io { path: path.display().to_string(), source }),
        };
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let shared = Shared {
            replica: RwLock::new(replica),
            dir: dir.to_owned(),
            changes,
            snapshots_built: AtomicU64::new(0),
            apply_panics: AtomicU64::new(0),
            outbox_dropped: AtomicU64::new(0),
            size_hint: AtomicUsize::new(size),
            fork_bytes_min: AtomicUsize::new(usize::MAX),
            digest: Mutex::new((0, String::new())),
            snapshot_files: Mutex::new(()),
        };
        Ok(Self { shared: Arc::new(shared), faults: None })
    }

    /// Reads a state whose last snapshot was at least `bytes` large in a forked child (see
    /// [`crate::Tuning::fork_reads_bytes_min`]); by default every read is under the lock.
    pub fn with_fork_reads_bytes_min(self, bytes: usize) -> Self {
        self.shared.fork_bytes_min.store(bytes, Ordering::Relaxed);
        self
    }

    /// Installs test failpoints.
    pub fn with_faults(mut self, faults: Option<Arc<dyn FaultPlan>>) -> Self {
        self.faults = faults;
        self
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn read_current_snapshot(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotFileError> {
        let path = dir.join(SNAPSHOT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let (meta, _, _) = decode_snapshot(&bytes)?;
                Ok(Some((meta, bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SnapshotFileError::Io { path: path.display().to_string(), source }),
        }
    }
}

fn snapshot_error(meta: Option<&SnapshotMeta>, e: &(dyn std::error::Error + 'static)) -> StorageError {
    StorageIOError::write_snapshot(meta.map(SnapshotMeta::signature), AnyError::from_dyn(e, None)).into()
}

/// A copy of a replica's whole state: the bytes of a snapshot file and where it stands.
#[derive(Debug)]
pub struct SnapshotExport {
    /// The log index the state reflects (0: nothing applied).
    pub last_log_index: u64,
    /// The term of that entry.
    pub last_log_term: u64,
    /// The snapshot file, as `<data_dir>/state/snapshot.bin` holds one.
    pub bytes: Vec<u8>,
}

impl Shared {
    /// Encodes the replica as it is now, without writing a file or telling openraft: a
    /// consistent copy (read from a forked child for a large state, see `read_whole`).
    pub(crate) fn export(&self) -> Result<SnapshotExport, SnapshotFileError> {
        let (meta, bytes) = self.read_whole(
            |replica| snapshot_meta_of(replica, "export"),
            |replica| encode_replica(replica, &snapshot_meta_of(replica, "export")),
            |bytes| bytes,
        );
        if bytes.is_empty() {
            return Err(SnapshotFileError::Format("the state could not be encoded".to_owned()));
        }
        Ok(SnapshotExport {
            last_log_index: meta.last_log_id.map_or(0, |id| id.index),
            last_log_term: meta.last_log_id.map_or(0, |id| id.leader_id.term),
            bytes,
        })
    }
}

/// The metadata of a snapshot of `replica` as it is now, its id ending in `suffix`.
fn snapshot_meta_of(replica: &Replica, suffix: &str) -> SnapshotMeta {
    let snapshot_id = match replica.last_applied {
        Some(id) => format!("{}-{}-{}-{suffix}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => format!("0-0-0-{suffix}"),
    };
    SnapshotMeta { last_log_id: replica.last_applied, last_membership: replica.last_membership.clone(), snapshot_id }
}

/// The snapshot file of `replica` under `meta`; empty if it cannot be encoded (a state over
/// 4 GiB of metadata or outbox).
fn encode_replica(replica: &Replica, meta: &SnapshotMeta) -> Vec<u8> {
    encode_snapshot(meta, &extras_of(replica), &replica.state.snapshot()).unwrap_or_default()
}

fn extras_of(replica: &Replica) -> ReplicaExtrasRef<'_> {
    ReplicaExtrasRef { outbox: replica.outbox.stored(), audit: &replica.audit }
}

/// Writes the snapshot file of `replica` under `meta` to `path` as it is encoded, in the
/// background's pace, and answers a [`SnapshotWritten`], encoded: the same file as
/// [`encode_replica`] then [`write_building_snapshot`], but what the forked child of a build
/// runs, so that it never holds the whole encoding (160 MB at a million conversations).
/// Allocating and filling that much in the child slowed the node it was forked from: the
/// writes that took over 6 ms were as many while a child encoded as right after the fork.
fn write_replica_snapshot(replica: &Replica, meta: &SnapshotMeta, path: &Path) -> Vec<u8> {
    // The outbox's length comes before it: counted first (an encoding that stores nothing),
    // then encoded into the file.
    let extras = extras_of(replica);
    let size = postcard::serialize_with_flavor(&extras, postcard::ser_flavors::Size::default());
    let Some(head) = size.ok().and_then(|size| snapshot_head(meta, size, 0).ok()) else {
        return answer(SnapshotWritten::NotEncoded);
    };
    let mut file = match SyncedFile::create(path, Pace::Background) {
        Ok(file) => file,
        Err(e) => return answer(SnapshotWritten::failed(&e)),
    };
    let written = file
        .write_all(&head)
        .and_then(|()| postcard::to_io(&extras, &mut file).map(drop).map_err(|e| std::io::Error::other(e.to_string())))
        .and_then(|()| replica.state.snapshot_into(&mut file));
    answer(match written.map_err(|e| file.first_error(e)).and_then(|()| file.finish()) {
        Ok(bytes) => SnapshotWritten::Written(bytes),
        Err(e) => SnapshotWritten::failed(&e),
    })
}

/// Why [`restore_snapshot`] refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The data directory already holds a node's log or state.
    #[error("{path} already holds a node's data: restore into an empty data directory")]
    NotEmpty {
        /// What is there.
        path: String,
    },
    /// The file is not a snapshot this build can read.
    #[error("not a snapshot this build can restore: {0}")]
    Snapshot(#[from] SnapshotFileError),
    /// The snapshot reflects no applied entry.
    #[error("the snapshot is empty (taken before the cluster applied anything)")]
    Empty,
    /// Writing the data directory failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
}

/// What a restored data directory holds.
#[derive(Debug)]
pub struct Restored {
    /// The log index the state reflects.
    pub last_log_index: u64,
    /// The voters of the membership in the snapshot.
    pub voters: Vec<crate::NodeId>,
}

/// Makes `data_dir` (empty or absent) the data directory of a node that starts from the
/// snapshot file `bytes` (from `Cluster.ExportSnapshot`): the state as the file holds it, an
/// empty log and the vote of the snapshot's term, so that a new election (in a later term)
/// picks the leader among the nodes restored from the same file. The membership is the
/// one in the snapshot: restore every voter it names, each at its own id and addresses.
pub fn restore_snapshot(data_dir: &Path, bytes: &[u8]) -> Result<Restored, RestoreError> {
    let (meta, _, core) = decode_snapshot(bytes)?;
    // The whole state must load, not only the header.
    State::restore(core).map_err(|e| SnapshotFileError::Format(e.to_string()))?;
    let Some(last) = meta.last_log_id else { return Err(RestoreError::Empty) };
    let state_dir = data_dir.join("state");
    for path in [data_dir.join("raft.redb"), state_dir.join(SNAPSHOT_FILE)] {
        if path.exists() {
            return Err(RestoreError::NotEmpty { path: path.display().to_string() });
        }
    }
    let write = |path: &Path, e: &dyn std::fmt::Display| RestoreError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&state_dir).map_err(|e| write(&state_dir, &e))?;
    // A previous snapshot left here would belong to another history.
    match std::fs::remove_file(state_dir.join(PREVIOUS_SNAPSHOT_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write(&state_dir, &e)),
        _ => {}
    }
    write_atomically(&state_dir, SNAPSHOT_FILE, bytes).map_err(|e| write(&state_dir, &e))?;
    let log_path = data_dir.join("raft.redb");
    if let Err(e) =
        crate::log_store::LogStore::write_restored_vote(&log_path, last.leader_id.term, last.leader_id.node_id)
    {
        // Half a restore would refuse the next attempt: take back what was written.
        let _ = std::fs::remove_file(state_dir.join(SNAPSHOT_FILE));
        let _ = std::fs::remove_file(&log_path);
        return Err(write(&log_path, &e));
    }
    Ok(Restored { last_log_index: last.index, voters: meta.last_membership.membership().voter_ids().collect() })
}

/// Builds snapshots of a [`StateMachineStore`].
#[derive(Debug)]
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = Arc::clone(&self.shared);
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            let suffix = shared.snapshots_built.fetch_add(1, Ordering::Relaxed).to_string();
            let dir = shared.dir.clone();
            let building =
                dir.join(format!("{BUILDING_PREFIX}{}-{suffix}{BUILDING_SUFFIX}", std::process::id()));
            let (meta, outcome) = shared.read_whole_streaming(
                |replica| snapshot_meta_of(replica, &suffix),
                |replica| encode_replica(replica, &snapshot_meta_of(replica, &suffix)),
                |bytes| write_building_snapshot(&bytes, &building),
                |replica| write_replica_snapshot(replica, &snapshot_meta_of(replica, &suffix), &building),
            );
            let placed = || -> Result<u64, SnapshotFileError> {
                let written: SnapshotWritten = postcard::from_bytes(&outcome)
                    .map_err(|e| SnapshotFileError::Format(format!("the snapshot writer's answer: {e}")))?;
                let size = written.into_result(&building)?;
                if !put_built_snapshot_in_place(&shared.snapshot_files, &dir, &building, &meta)? {
                    tracing::info!(snapshot = %meta.snapshot_id, "a newer snapshot was installed while this one was built; it is dropped");
                }
                Ok(size)
            };
            let size = placed().map_err(|e| {
                let _ = std::fs::remove_file(&building);
                snapshot_error(Some(&meta), &e)
            })?;
            shared.size_hint.store(usize::try_from(size).unwrap_or(usize::MAX), Ordering::Relaxed);
            let seconds = started.elapsed().as_secs_f64();
            metrics::histogram!(crate::metrics::SNAPSHOT_SECONDS).record(seconds);
            tracing::info!(snapshot = %meta.snapshot_id, bytes = size, seconds, "snapshot built");
            // openraft 0.9 keeps only the meta of a built snapshot; to send one it asks
            // `get_current_snapshot`, which reads the file. So the file's bytes are not read back.
            Ok::<_, StorageError>(Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) })
        })
        .await
        .map_err(|e| snapshot_error(None, &e))??;
        Ok(built)
    }
}

/// Appends to `trail` the audited inputs of an entry (those with an actor), with their
/// outcomes, and its note.
fn record_audit(trail: &mut AuditTrail, index: u64, proposal: &crate::types::Proposal, outcomes: &[InputOutcome]) {
    for ((input, actor), outcome) in proposal.inputs.iter().zip(&proposal.actors).zip(outcomes) {
        let (Some(actor), Input::Event(event)) = (actor, input) else { continue };
        trail.push(AuditRecord {
            index,
            at_ms: proposal.at_ms,
            workspace: event.workspace.to_string(),
            actor: actor.clone(),
            action: crate::audit::action(&event.command),
            outcome: outcome.rejection.as_ref().map_or_else(|| "ok".to_owned(), |r| r.reason.clone()),
        });
    }
    if let Some(note) = &proposal.note {
        trail.push(AuditRecord {
            index,
            at_ms: proposal.at_ms,
            workspace: String::new(),
            actor: note.actor.clone(),
            action: note.action.clone(),
            outcome: "ok".to_owned(),
        });
    }
}

impl StateMachineStore {
    /// Applies one input, turning a panic into a refusal. The core has no panicking path by
    /// construction; this is the second line of defence against a bug. A panic is a pure
    /// function of the state and the input, so every replica panics on the same input and
    /// refuses it alike (whatever the input changed before the fault stays changed, identically
    /// everywhere), and the cluster keeps applying the entries after it.
    fn apply_one(&self, state: &mut State, index: u64, at_ms: i64, input: &Input) -> InputOutcome {
        let failpoint = self.faults.as_ref().is_some_and(|faults| faults.panic_on_apply(input));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if failpoint {
                panic!("failpoint: apply panics on this input");
            }
            state.apply(at_ms, input)
        }));
        match result {
            Ok(outcome) => InputOutcome::new(input, outcome),
            Err(payload) => {
                let reason = payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                self.shared.apply_panics.fetch_add(1, Ordering::Relaxed);
                let workspace = match input {
                    Input::Event(event) => event.workspace.as_str(),
                    Input::Tick => "-",
                };
                tracing::error!(
                    index,
                    workspace,
                    %reason,
                    "applying an input panicked (a bug): it is refused as an internal error on every replica and \
                     the node keeps serving"
                );
                InputOutcome {
                    effects: Vec::new(),
                    timer_effects: 0,
                    event_id: None,
                    rejection: Some(Rejection::from(&ApplyError::Internal(reason))),
                }
            }
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let replica = self.shared.read();
        Ok((replica.last_applied, replica.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut changes = Vec::new();
        let announce = self.shared.changes.receiver_count() > 0;
        {
            let mut replica = self.shared.write();
            for entry in entries {
                replica.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Applied::default()),
                    EntryPayload::Membership(membership) => {
                        replica.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                        responses.push(Applied::default());
                    }
                    EntryPayload::Normal(proposal) => {
                        let started = std::time::Instant::now();
                        let index = entry.log_id.index;
                        let outcomes: Vec<InputOutcome> = proposal
                            .inputs
                            .iter()
                            .map(|input| self.apply_one(&mut replica.state, index, proposal.at_ms, input))
                            .collect();
                        record_audit(&mut replica.audit, index, &proposal, &outcomes);
                        if let Some(published) = proposal.published {
                            replica.outbox.confirm(published);
                        }
                        if outcomes.iter().any(|outcome| !outcome.effects.is_empty()) || announce {
                            let shared = Arc::new(outcomes.clone());
                            let dropped = replica.outbox.push(index, proposal.at_ms, &shared);
                            if dropped > 0 {
                                self.shared.outbox_dropped.fetch_add(dropped, Ordering::Relaxed);
                            }
                            if announce {
                                changes.push(StateChange::Entry(AppliedEntry {
                                    index,
                                    at_ms: proposal.at_ms,
                                    outcomes: shared,
                                }));
                            }
                        }
                        responses.push(Applied { outcomes });
                        metrics::histogram!(crate::metrics::APPLY_SECONDS).record(started.elapsed().as_secs_f64());
                    }
                }
            }
        }
        for change in changes {
            // No receiver left is fine: nobody is watching.
            let _ = self.shared.changes.send(change);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: Arc::clone(&self.shared) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let shared = Arc::clone(&self.shared);
        let meta = meta.clone();
        let bytes = snapshot.into_inner();
        tokio::task::spawn_blocking(move || {
            let (embedded, outbox, core) = decode_snapshot(&bytes).map_err(|e| snapshot_error(Some(&meta), &e))?;
            if embedded.last_log_id != meta.last_log_id {
                let e = SnapshotFileError::Format(format!(
                    "snapshot covers {:?} but was announced as covering {:?}",
                    embedded.last_log_id, meta.last_log_id
                ));
                return Err(snapshot_error(Some(&meta), &e));
            }
            let state = State::restore(core).map_err(|e| snapshot_error(Some(&meta), &e))?;
            {
                let _files = shared.snapshot_files.lock().unwrap_or_else(PoisonError::into_inner);
                keep_previous_snapshot(&shared.dir);
                write_atomically(&shared.dir, SNAPSHOT_FILE, &bytes).map_err(|e| snapshot_error(Some(&meta), &e))?;
            }
            shared.size_hint.store(bytes.len(), Ordering::Relaxed);
            let index = meta.last_log_id.map_or(0, |id| id.index);
            {
                let mut replica = shared.write();
                *replica = Replica {
                    state,
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership.clone(),
                    outbox: Outbox::from_stored(outbox.outbox),
                    audit: outbox.audit,
                };
            }
            tracing::info!(snapshot = %meta.snapshot_id, index, "snapshot installed");
            let _ = shared.changes.send(StateChange::SnapshotInstalled { index });
            Ok(())
        })
        .await
        .map_err(|e| snapshot_error(None, &e))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let dir = self.shared.dir.clone();
        let current = tokio::task::spawn_blocking(move || Self::read_current_snapshot(&dir))
            .await
            .map_err(|e| snapshot_error(None, &e))?
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e))))?;
        Ok(current.map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_is_written_whole_in_synced_chunks_at_either_pace() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Two and a half chunks, every byte telling its position apart.
        let bytes: Vec<u8> = (0..SYNC_EVERY_BYTES * 5 / 2).map(|i| (i % 251) as u8).collect();
        for pace in [Pace::Full, Pace::Background] {
            let path = dir.path().join(format!("{pace:?}.bin"));
            write_synced(&path, &bytes, pace).expect("written");
            assert_eq!(std::fs::read(&path).expect("read"), bytes, "{pace:?}");
        }
        write_atomically(dir.path(), "big.bin", &bytes).expect("written");
        assert_eq!(std::fs::read(dir.path().join("big.bin")).expect("read"), bytes);
        assert!(!dir.path().join("big.bin.tmp").exists(), "the temporary file stayed");
    }

    #[test]
    fn a_file_written_in_pieces_of_any_size_is_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bytes: Vec<u8> = (0..SYNC_EVERY_BYTES * 3 + 5).map(|i| (i % 253) as u8).collect();
        // Small writes that cross the piece boundaries, one piece given whole when nothing is
        // buffered, one larger than a piece while something is.
        let sizes = [1, 7, SYNC_EVERY_BYTES - 8, SYNC_EVERY_BYTES, 3, SYNC_EVERY_BYTES + 1, usize::MAX];
        for pace in [Pace::Full, Pace::Background] {
            let path = dir.path().join(format!("{pace:?}.bin"));
            let mut file = SyncedFile::create(&path, pace).expect("created");
            let mut rest = &bytes[..];
            for size in sizes {
                let (piece, after) = rest.split_at(size.min(rest.len()));
                file.write_all(piece).expect("written");
                rest = after;
            }
            assert_eq!(file.finish().expect("finished"), bytes.len() as u64, "{pace:?}");
            assert_eq!(std::fs::read(&path).expect("read"), bytes, "{pace:?}");
        }
        // A full disk (28: ENOSPC), through an encoder that reports any write error as its own.
        let mut full = SyncedFile::create(Path::new("/dev/full"), Pace::Full).expect("opened");
        let encoded = postcard::to_io(&bytes, &mut full).map(drop).map_err(|e| std::io::Error::other(e.to_string()));
        let error = encoded.map_err(|e| full.first_error(e)).expect_err("the disk is full");
        assert_eq!(error.raw_os_error(), Some(28), "{error}");
    }

    /// A replica with agents, conversations, an outbox and an audit record.
    fn replica() -> Replica {
        use switchboard_core::{
            AgentSpec, AgentStatus, Command, Event, EventId, OpenConversation, Strategy, TeamId, TeamSpec,
            WorkspaceSettings,
        };
        let event = |id: &str, command| {
            Input::Event(Event { workspace: "acme".into(), event_id: Some(EventId::new(id)), command })
        };
        let mut state = State::new();
        let mut outbox = Outbox::default();
        let mut inputs = vec![event("ws", Command::ConfigureWorkspace(WorkspaceSettings::default()))];
        for a in 0..20 {
            inputs.push(event(&format!("a{a}"), Command::UpsertAgent(AgentSpec::new(format!("a{a}").as_str(), "A"))));
            let online =
                Command::SetAgentStatus { agent: format!("a{a}").as_str().into(), status: AgentStatus::Online };
            inputs.push(event(&format!("on{a}"), online));
        }
        let members: Vec<String> = (0..20).map(|a| format!("a{a}")).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        inputs.push(event("team", Command::UpsertTeam(TeamSpec::new("support", Strategy::LeastOpen, &members))));
        let settings = WorkspaceSettings { default_team: Some(TeamId::new("support")), ..WorkspaceSettings::default() };
        inputs.push(event("default", Command::ConfigureWorkspace(settings)));
        for c in 0..50 {
            let open = OpenConversation::new(format!("c{c}"), format!("k{c}"), switchboard_core::Channel::WhatsApp);
            inputs.push(event(&format!("open{c}"), Command::OpenConversation(open)));
        }
        for (index, input) in inputs.iter().enumerate() {
            let outcome = InputOutcome::new(input, state.apply(1_795_428_000_000 + index as i64, input));
            outbox.push(index as u64 + 1, 0, &Arc::new(vec![outcome]));
        }
        assert!(outbox.effects() > 50, "the opens had effects");
        let mut audit = AuditTrail::default();
        audit.push(AuditRecord {
            index: 1,
            at_ms: 1,
            workspace: "acme".into(),
            actor: crate::audit::Actor { role: "admin".into(), credential: "adm".into() },
            action: "ConfigureWorkspace".into(),
            outcome: "ok".into(),
        });
        let last_applied = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), inputs.len() as u64));
        Replica { state, last_applied, last_membership: StoredMembership::default(), outbox, audit }
    }

    #[test]
    fn a_snapshot_written_as_it_is_encoded_is_the_encoded_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let replica = replica();
        let meta = snapshot_meta_of(&replica, "test");
        let whole = encode_replica(&replica, &meta);
        let path = dir.path().join("streamed.build");
        let answer: SnapshotWritten =
            postcard::from_bytes(&write_replica_snapshot(&replica, &meta, &path)).expect("an answer");
        assert_eq!(answer, SnapshotWritten::Written(whole.len() as u64));
        assert_eq!(std::fs::read(&path).expect("read"), whole);
        let (decoded, _, core) = decode_snapshot(&whole).expect("decodes");
        assert_eq!(decoded, meta);
        assert_eq!(State::restore(core).expect("restores").state_digest(), replica.state.state_digest());
        // A file that cannot be created is an error with its number.
        let nowhere = dir.path().join("no-such-dir").join("x.build");
        let answer: SnapshotWritten =
            postcard::from_bytes(&write_replica_snapshot(&replica, &meta, &nowhere)).expect("an answer");
        assert_eq!(answer, SnapshotWritten::Failed { os_error: Some(2), kind: "NotFound".to_owned() });
        let answer: SnapshotWritten =
            postcard::from_bytes(&write_replica_snapshot(&replica, &meta, Path::new("/dev/full"))).expect("an answer");
        assert_eq!(answer, SnapshotWritten::Failed { os_error: Some(28), kind: "StorageFull".to_owned() });
    }

    /// A snapshot file whose metadata covers `index` (its body is not a state: only the
    /// header is read here).
    fn snapshot_at(index: u64) -> Vec<u8> {
        let meta = SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            ..SnapshotMeta::default()
        };
        encode_snapshot(&meta, &ReplicaExtras::default(), format!("core at {index}").as_bytes()).expect("encodes")
    }

    fn meta_of(bytes: &[u8]) -> SnapshotMeta {
        decode_snapshot(bytes).expect("a snapshot").0
    }

    #[test]
    fn a_built_snapshot_replaces_an_older_one_keeping_it_but_never_a_newer_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Mutex::new(());
        let current = dir.path().join(SNAPSHOT_FILE);
        let answer = |bytes: Vec<u8>| -> SnapshotWritten { postcard::from_bytes(&bytes).expect("an answer") };
        let build = |index: u64| {
            let building = dir.path().join(format!("{BUILDING_PREFIX}1-{index}{BUILDING_SUFFIX}"));
            let bytes = snapshot_at(index);
            assert_eq!(
                answer(write_building_snapshot(&bytes, &building)),
                SnapshotWritten::Written(bytes.len() as u64)
            );
            (building, meta_of(&bytes))
        };
        // The first one, then a newer one: the older is kept as the previous.
        for index in [10, 20] {
            let (building, meta) = build(index);
            assert!(put_built_snapshot_in_place(&files, dir.path(), &building, &meta).expect("placed"));
            assert!(!building.exists());
        }
        assert_eq!(std::fs::read(&current).expect("current"), snapshot_at(20));
        assert_eq!(std::fs::read(dir.path().join(PREVIOUS_SNAPSHOT_FILE)).expect("previous"), snapshot_at(10));
        // One built from an older state while a newer one was installed is dropped.
        let (building, meta) = build(15);
        assert!(!put_built_snapshot_in_place(&files, dir.path(), &building, &meta).expect("answered"));
        assert!(!building.exists(), "the dropped snapshot's file stayed");
        assert_eq!(std::fs::read(&current).expect("current"), snapshot_at(20));
        assert_eq!(std::fs::read(dir.path().join(PREVIOUS_SNAPSHOT_FILE)).expect("previous"), snapshot_at(10));
        // What could not be encoded or written says so, as data.
        let nowhere = dir.path().join("no-such-dir").join("x.build");
        assert_eq!(answer(write_building_snapshot(b"", &nowhere)), SnapshotWritten::NotEncoded);
        let failed = answer(write_building_snapshot(b"bytes", &nowhere));
        // 2: ENOENT on Linux.
        assert_eq!(failed, SnapshotWritten::Failed { os_error: Some(2), kind: "NotFound".to_owned() });
        let error = failed.into_result(&nowhere).expect_err("an error");
        assert!(error.to_string().contains("no-such-dir"), "{error}");
        // A half-built file left by a crash is removed when the state machine opens.
        let (left, _) = build(30);
        // (Opening then fails: these files carry no real state.)
        let _ = StateMachineStore::open(dir.path());
        assert!(!left.exists(), "a half-built snapshot survived opening");
    }

    #[test]
    fn snapshot_header_round_trips_and_refuses_garbage() {
        let meta = SnapshotMeta::default();
        let mut extras = ReplicaExtras::default();
        extras.audit.push(AuditRecord {
            index: 3,
            at_ms: 1,
            workspace: "acme".into(),
            actor: crate::audit::Actor { role: "admin".into(), credential: "adm".into() },
            action: "RemoveTeam sales".into(),
            outcome: "ok".into(),
        });
        let bytes = encode_snapshot(&meta, &extras, b"core").expect("encodes");
        let (decoded, decoded_extras, core) = decode_snapshot(&bytes).expect("decodes");
        assert_eq!(decoded, meta);
        assert_eq!(decoded_extras, extras, "the audit trail and outbox survive a snapshot");
        assert_eq!(core, b"core");
        assert!(decode_snapshot(b"SWRS").is_err());
        let mut wrong_version = bytes.clone();
        wrong_version[4] = 9;
        let error = decode_snapshot(&wrong_version).expect_err("refused").to_string();
        assert!(error.contains("format version 9"), "{error}");
    }
}

//! The lease log: a durable, append-only record of every binding change, replayed at start.
//!
//! A DHCP server must never forget a lease it ACKed. The contract with the worker:
//!
//! 1. for every binding change of a receive batch, [`LogWriter::append`] (with the `seq` the
//!    lease table assigned under its lock);
//! 2. one data sync of each fd in [`LogWriter::unsynced_fds`] (through io_uring, or
//!    [`LogWriter::sync`]);
//! 3. when the syncs completed, [`LogWriter::synced`] — with no `append` in between 2 and 3;
//! 4. only then the replies.
//!
//! Shape: every thread that writes owns a [`LogWriter`] with its own *segment* file, so an
//! append is a copy into a memory map with no lock, no atomic and no syscall, and a crash can
//! only tear the tail of a segment, never leave a hole in its middle. Segments are preallocated
//! with `fallocate` before they are mapped, so a full disk is an error when a writer rolls to a
//! new segment, never a SIGBUS when it writes into the map. When a record does not fit, the
//! writer seals its segment (the rest stays zero) and rolls. A writer never appends to a segment
//! it did not create, and [`LeaseLog::open`] seals every segment it finds. Creating a segment
//! takes two syncs (its header, the directory), which wait behind whatever else the filesystem
//! is writing (a snapshot, say): so the server keeps [`SPARE_SEGMENTS`] ready
//! ([`LeaseLog::prepare_spare_segments`], off the hot path) and a roll takes one of those.
//!
//! Replay reads every segment and snapshot and keeps, for each address, the record with the
//! highest `seq` ("last seq wins"), so the order of files does not matter. Compaction
//! ([`LeaseLog::write_snapshot`]) writes the whole table into a snapshot and then deletes the
//! sealed segments and older snapshots it covers.
//!
//! The log also keeps the endpoint state of each failover relationship (MS-DHCPF 3.1.3: the
//! state, when it was entered, the MCLT), so a restart knows where it left off: the same
//! record format with another record kind ([`RelationshipRecord`], appended with
//! [`LogWriter::append_relationship`]). Replay returns them apart from the bindings, latest
//! `seq` per name, and the log remembers the latest of each name itself, so that every
//! snapshot includes them without the caller's help.
//!
//! Files in the directory (which must be private to this process: see [`segment`]):
//! `seg-<16 hex digits>.log` segments, `snap-<16 hex digits>.log` snapshots,
//! `snap-….log.tmp` (an unfinished snapshot, removed by `open`), and `lock` (an `flock` that
//! keeps a second server off the directory). The byte layout is drawn in [`record`].

pub mod compact;
pub mod record;
pub mod replay;
pub mod segment;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use compact::SnapshotStep;
pub use record::{Binding, BindingRef, FileKind, RecordRef, RelationshipRecord, RelationshipRef};
pub use replay::{verify, ReplayReport, Replayed};
pub use segment::{LogWriter, SyncPoint};

/// Sizes of the log.
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    /// Size of every segment file, preallocated when the segment is created. At least
    /// [`MIN_SEGMENT_BYTES`], a multiple of 8.
    pub segment_bytes: u64,
    /// [`LeaseLog::compaction_due`] says yes once sealed segments take this many bytes.
    pub compact_at_bytes: u64,
}

/// Segments kept created, preallocated and mapped for writers to roll to.
pub const SPARE_SEGMENTS: usize = 2;

/// The smallest segment: room for the header and a few of the longest records.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

const _: () = assert!(MIN_SEGMENT_BYTES as usize >= record::HEADER_LEN + record::MAX_RECORD_LEN);

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            compact_at_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no space left for the lease log in {0}")]
    NoSpace(PathBuf),
    #[error("lease log I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("bad lease log file {path}: {problem}")]
    BadHeader { path: PathBuf, problem: String },
    #[error("lease log record too large (client {client_len} bytes, hostname {hostname_len} bytes; at most {} and {})", record::MAX_CLIENT_LEN, record::MAX_HOSTNAME_LEN)]
    RecordTooLarge {
        client_len: usize,
        hostname_len: usize,
    },
    #[error(
        "failover relationship name of {name_len} bytes; it must have 1 to {} bytes",
        record::MAX_RELATIONSHIP_NAME_LEN
    )]
    BadRelationshipName { name_len: usize },
    #[error("invalid lease log options: {0}")]
    InvalidOptions(&'static str),
    #[error("lease log directory {0} is in use by another process")]
    Locked(PathBuf),
}

impl LogError {
    /// An I/O error on `path`; "no space" and "quota exceeded" become [`LogError::NoSpace`] of
    /// `dir`.
    pub(crate) fn io(dir: &Path, path: &Path, source: io::Error) -> LogError {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => LogError::NoSpace(dir.to_path_buf()),
            _ => LogError::Io {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// The lease log of one directory. `Send + Sync`: share it by `Arc`, give every writing thread
/// its own [`LogWriter`].
pub struct LeaseLog {
    shared: Arc<Shared>,
}

/// What the log and its writers share.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) options: LogOptions,
    /// The next file number (segments and snapshots share one sequence); past every number on
    /// disk.
    pub(crate) next_number: AtomicU64,
    /// Bytes of all segment and snapshot files.
    pub(crate) disk_bytes: AtomicU64,
    pub(crate) files: Mutex<Files>,
    /// One compaction at a time.
    pub(crate) compaction: Mutex<()>,
    /// The latest record of every failover relationship, by name: what replay found, updated
    /// by every append. Compaction writes all of them into each snapshot.
    pub(crate) relationships: Mutex<BTreeMap<Box<[u8]>, RelationshipRecord>>,
    /// Empty segments ready for a writer's roll (see [`LeaseLog::prepare_spare_segments`]).
    pub(crate) spares: Mutex<Vec<segment::Segment>>,
    /// Holds the directory's `flock` for as long as the log or a writer lives.
    _lock: File,
}

impl Drop for Shared {
    /// Spare segments hold no record: removed, not left for the next `open`.
    fn drop(&mut self) {
        for seg in std::mem::take(&mut *self.spares.lock()) {
            segment::remove_empty(self, seg);
        }
    }
}

/// Files no writer appends to any more: what compaction may delete.
#[derive(Default)]
pub(crate) struct Files {
    pub(crate) sealed: Vec<FileEntry>,
    pub(crate) snapshots: Vec<FileEntry>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct FileEntry {
    pub(crate) number: u64,
    pub(crate) bytes: u64,
}

impl Shared {
    pub(crate) fn err(&self, path: &Path, source: io::Error) -> LogError {
        LogError::io(&self.dir, path, source)
    }

    /// Makes creations, renames and deletions in the directory durable.
    pub(crate) fn sync_dir(&self) -> Result<(), LogError> {
        sync_dir(&self.dir)
    }

    pub(crate) fn seal(&self, number: u64, bytes: u64) {
        self.files.lock().sealed.push(FileEntry { number, bytes });
    }

    /// Remembers `r` unless a record of its name with a higher `seq` is known: replay's rule,
    /// so memory and disk agree on the winner. (On equal seqs, which callers never produce,
    /// the later append wins: the snapshot then holds what the newest file holds.)
    pub(crate) fn note_relationship(&self, r: &RelationshipRecord) {
        let mut relationships = self.relationships.lock();
        match relationships.get_mut(&*r.name) {
            Some(known) if known.seq > r.seq => {}
            Some(known) => known.clone_from(r),
            None => {
                relationships.insert(r.name.clone(), r.clone());
            }
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, dir, e))
}

impl LeaseLog {
    /// Creates the directory if needed (mode 0700), takes its lock, replays every segment and
    /// snapshot, zero-fills torn tails and removes files that hold no record (segments created
    /// by a crashed roll, unfinished snapshots), and returns the log and what replay found.
    /// Every segment found is sealed: new writers always get new segments.
    pub fn open(dir: &Path, options: LogOptions) -> Result<(LeaseLog, Replayed), LogError> {
        if options.segment_bytes < MIN_SEGMENT_BYTES || options.segment_bytes % 8 != 0 {
            return Err(LogError::InvalidOptions(
                "segment_bytes must be a multiple of 8 and at least 4096",
            ));
        }
        if usize::try_from(options.segment_bytes).is_err()
            || i64::try_from(options.segment_bytes).is_err()
        {
            return Err(LogError::InvalidOptions("segment_bytes too large to map"));
        }
        let lock = segment::lock_dir(dir)?;
        let (replayed, scanned) = replay::replay_dir(dir, replay::Mode::Repair)?;
        let mut files = Files::default();
        let mut disk_bytes = 0;
        let mut max_number = 0;
        for file in &scanned {
            max_number = max_number.max(file.number);
            if file.removed {
                continue;
            }
            disk_bytes += file.bytes;
            let entry = FileEntry {
                number: file.number,
                bytes: file.bytes,
            };
            match file.kind {
                FileKind::Log => files.sealed.push(entry),
                FileKind::Snapshot => files.snapshots.push(entry),
            }
        }
        let shared = Shared {
            dir: dir.to_path_buf(),
            options,
            next_number: AtomicU64::new(max_number + 1),
            disk_bytes: AtomicU64::new(disk_bytes),
            files: Mutex::new(files),
            compaction: Mutex::new(()),
            relationships: Mutex::new(
                replayed
                    .relationships
                    .iter()
                    .map(|r| (r.name.clone(), r.clone()))
                    .collect(),
            ),
            spares: Mutex::new(Vec::new()),
            _lock: lock,
        };
        let log = LeaseLog {
            shared: Arc::new(shared),
        };
        Ok((log, replayed))
    }

    /// A writer with a new, preallocated segment. `NoSpace` when the segment cannot be
    /// allocated.
    pub fn writer(&self) -> Result<LogWriter, LogError> {
        LogWriter::new(Arc::clone(&self.shared))
    }

    /// Creates segments until [`SPARE_SEGMENTS`] are ready for writers to roll to, so that a
    /// roll on the hot path costs no syscall. Call it from a thread that may wait for the disk.
    /// An error (a full disk) leaves fewer spares: a writer that finds none creates its segment
    /// itself and reports the error there.
    pub fn prepare_spare_segments(&self) -> Result<(), LogError> {
        while self.shared.spares.lock().len() < SPARE_SEGMENTS {
            let seg = segment::create_segment(&self.shared)?;
            self.shared.spares.lock().push(seg);
        }
        Ok(())
    }

    /// Total bytes of segment and snapshot files on disk (active segments count in full: they
    /// are preallocated).
    pub fn disk_bytes(&self) -> u64 {
        self.shared.disk_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of sealed segments: what a compaction could free.
    pub fn sealed_bytes(&self) -> u64 {
        self.shared
            .files
            .lock()
            .sealed
            .iter()
            .map(|f| f.bytes)
            .sum()
    }

    /// Sealed segments reached [`LogOptions::compact_at_bytes`]. (Active segments do not count:
    /// compaction cannot remove them, and with many writers they alone could pass the mark.)
    pub fn compaction_due(&self) -> bool {
        self.sealed_bytes() >= self.shared.options.compact_at_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn options(&self) -> LogOptions {
        self.shared.options
    }
}

#[cfg(test)]
mod tests;

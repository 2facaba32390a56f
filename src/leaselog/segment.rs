//! Segment files and the writer that appends to them.
//!
//! Memory maps and safety: a `MmapMut` lets the program see a file's bytes as memory, so if
//! anything shrank a mapped file, touching the lost pages would be undefined behaviour (a
//! SIGBUS). This program never shrinks a log file (torn tails are zero-filled, not truncated),
//! the directory is created with mode 0700, and its `lock` file keeps a second ringlease off
//! it; the operator must keep other programs away from it. A full disk cannot cause a SIGBUS
//! either: every segment is allocated with `fallocate` before it is mapped, so writing into the
//! map never needs a new block.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use memmap2::MmapMut;

use super::record::{self, BindingRef, FileHeader, FileKind, RecordRef, RelationshipRecord};
use super::{LogError, Shared};

/// `seg-<16 hex digits>.log`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:016x}.log"))
}

/// `snap-<16 hex digits>.log`.
pub fn snapshot_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("snap-{number:016x}.log"))
}

/// The kind and number in a log file's name; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(FileKind, u64)> {
    let (kind, rest) = if let Some(rest) = name.strip_prefix("seg-") {
        (FileKind::Log, rest)
    } else {
        (FileKind::Snapshot, name.strip_prefix("snap-")?)
    };
    let hex = rest.strip_suffix(".log")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((kind, u64::from_str_radix(hex, 16).ok()?))
}

/// Creates `dir` (mode 0700) if needed and takes an exclusive `flock` on `dir/lock`.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, LogError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| LogError::io(dir, dir, e))?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| LogError::io(dir, &path, e))?;
    // SAFETY: an FFI call on a descriptor `file` owns and keeps open across the call; it
    // touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            LogError::Locked(dir.to_path_buf())
        } else {
            LogError::io(dir, &path, err)
        });
    }
    Ok(file)
}

/// Allocates the first `len` bytes of `file` on disk (`fallocate`, or `posix_fallocate` where
/// the filesystem lacks it), so later writes through a map cannot run out of space.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: an FFI call on a descriptor `file` owns and keeps open across the call; it
        // touches no memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => break,
            _ => return Err(err),
        }
    }
    // SAFETY: as above.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// One mapped segment of a writer.
pub(crate) struct Segment {
    number: u64,
    file: File,
    map: MmapMut,
    /// Where the next record goes. Invariant: `HEADER_LEN <= pos <= map.len()`, a multiple of 8;
    /// everything from `pos` on is zero.
    pos: usize,
    /// Everything before this offset is durable (a completed data sync covered it).
    /// Invariant: `HEADER_LEN <= synced_pos <= pos` (the header is synced when created).
    synced_pos: usize,
}

impl Segment {
    fn has_records(&self) -> bool {
        self.pos > record::HEADER_LEN
    }

    fn is_unsynced(&self) -> bool {
        self.pos > self.synced_pos
    }
}

/// What a data sync started now will cover: each unsynced segment of a writer up to its current
/// end. Records appended after the point was taken are not covered, even if the sync happens
/// to write them, so a writer may keep appending while the sync is in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPoint {
    /// (segment number, offset up to which it will be durable).
    upto: Vec<(u64, usize)>,
}

/// A spare segment if one is ready, else a new one: what a writer rolls to.
fn next_segment(shared: &Shared) -> Result<Segment, LogError> {
    match shared.spares.lock().pop() {
        Some(spare) => Ok(spare),
        None => create_segment(shared),
    }
}

/// Creates, preallocates, heads and maps a new segment; the header and the directory entry are
/// durable when this returns, so a later data sync of the segment's fd is all a record needs.
pub(crate) fn create_segment(shared: &Shared) -> Result<Segment, LogError> {
    let number = shared.next_number.fetch_add(1, Ordering::Relaxed);
    let path = segment_path(&shared.dir, number);
    let bytes = shared.options.segment_bytes;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| shared.err(&path, e))?;
    let prepared = (|| {
        allocate(&file, bytes)?;
        let header = record::encode_header(&FileHeader {
            kind: FileKind::Log,
            number,
        });
        file.write_all_at(&header, 0)?;
        file.sync_data()
    })();
    if let Err(e) = prepared {
        // Best effort: a leftover all-zero segment holds no record and `open` removes it.
        let _ = fs::remove_file(&path);
        return Err(shared.err(&path, e));
    }
    if let Err(e) = shared.sync_dir() {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    // SAFETY: the file is ours: created here with `create_new` and mode 0600 in the locked,
    // private log directory, and never shrunk by this program (see the module doc), so the
    // mapped pages stay backed for the life of the map; they are allocated (above), so writes
    // cannot fault on a full disk.
    let map = match unsafe { MmapMut::map_mut(&file) } {
        Ok(map) => map,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(shared.err(&path, e));
        }
    };
    debug_assert_eq!(map.len() as u64, bytes);
    shared.disk_bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(Segment {
        number,
        file,
        map,
        pos: record::HEADER_LEN,
        synced_pos: record::HEADER_LEN,
    })
}

/// Appends binding changes and relationship states to this writer's own segment. `Send`:
/// owned by one thread.
pub struct LogWriter {
    shared: Arc<Shared>,
    /// `None` only after a roll failed (full disk); the next append retries.
    active: Option<Segment>,
    /// Sealed segments with records no completed sync covers yet (normally none, one after a
    /// roll). Kept mapped and open until they are durable.
    sealed_unsynced: Vec<Segment>,
}

impl LogWriter {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<LogWriter, LogError> {
        let active = next_segment(&shared)?;
        Ok(LogWriter {
            shared,
            active: Some(active),
            sealed_unsynced: Vec::with_capacity(2),
        })
    }

    /// Writes the record straight into the mapped segment; rolls to a new preallocated segment
    /// when it does not fit. No allocation and no syscall unless rolling.
    ///
    /// `Err(NoSpace)` when a new segment cannot be allocated: the record is not written, and
    /// the writer stays usable and retries on the next append (space may come back).
    /// `Err(RecordTooLarge)` for a client key over 256 or a hostname over 255 bytes.
    pub fn append(&mut self, b: &BindingRef<'_>) -> Result<(), LogError> {
        let record = RecordRef::Binding(*b);
        let len = record.encoded_len().ok_or(LogError::RecordTooLarge {
            client_len: b.client.len(),
            hostname_len: b.hostname.len(),
        })?;
        self.write(&record, len)
    }

    /// Appends a failover relationship's endpoint state, with the same durability contract as
    /// [`LogWriter::append`] (sync afterwards, as for a binding). From then on every snapshot
    /// includes it (or a record of the name with a higher `seq`): the caller never hands
    /// relationship records to compaction.
    ///
    /// `r.seq` comes from the lease table's sequence, so both kinds share one order.
    /// `Err(BadRelationshipName)` for a name that is empty or over 256 bytes; `Err(NoSpace)` as
    /// for [`LogWriter::append`]. On an error nothing is written or remembered.
    pub fn append_relationship(&mut self, r: &RelationshipRecord) -> Result<(), LogError> {
        let record = RecordRef::Relationship(r.as_ref());
        let len = record.encoded_len().ok_or(LogError::BadRelationshipName {
            name_len: r.name.len(),
        })?;
        self.write(&record, len)?;
        self.shared.note_relationship(r);
        Ok(())
    }

    /// The one write path of both kinds; `len` is `record.encoded_len()`.
    fn write(&mut self, record: &RecordRef<'_>, len: usize) -> Result<(), LogError> {
        let fits = self
            .active
            .as_ref()
            .is_some_and(|seg| seg.pos + len <= seg.map.len());
        if !fits {
            self.roll()?;
        }
        let Some(seg) = self.active.as_mut() else {
            unreachable!("a successful roll leaves an active segment");
        };
        // Fits: checked above, or the segment is new and MIN_SEGMENT_BYTES holds the longest
        // record after the header.
        debug_assert!(seg.pos + len <= seg.map.len());
        let written = record.encode_into(&mut seg.map[seg.pos..]);
        debug_assert_eq!(written, len);
        seg.pos += len;
        Ok(())
    }

    /// Seals the active segment (its records stop there, the rest stays zero) and maps a new
    /// one.
    fn roll(&mut self) -> Result<(), LogError> {
        if let Some(old) = self.active.take() {
            self.shared.seal(old.number, old.map.len() as u64);
            if old.is_unsynced() {
                self.sealed_unsynced.push(old);
            }
        }
        self.active = Some(next_segment(&self.shared)?);
        Ok(())
    }

    fn unsynced(&self) -> impl Iterator<Item = &Segment> + '_ {
        let active = self.active.as_ref().filter(|seg| seg.is_unsynced());
        self.sealed_unsynced.iter().chain(active)
    }

    /// The fds that need a data sync (`fdatasync`) for everything appended so far and not yet
    /// durable: normally one, two if the writer rolled. (On Linux a data sync of the fd also
    /// writes the pages dirtied through the map; no `msync` needed.)
    pub fn unsynced_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.unsynced().map(|seg| seg.file.as_raw_fd())
    }

    /// What a sync of [`LogWriter::unsynced_fds`] started now covers; hand it to
    /// [`LogWriter::synced_to`] when every one of those syncs completed.
    pub fn sync_point(&self) -> SyncPoint {
        SyncPoint {
            upto: self.unsynced().map(|seg| (seg.number, seg.pos)).collect(),
        }
    }

    /// Records that the syncs started at `point` completed: what was appended before it is
    /// durable. Sealed segments that are wholly durable are unmapped and closed.
    pub fn synced_to(&mut self, point: &SyncPoint) {
        for &(number, pos) in &point.upto {
            let seg = self
                .sealed_unsynced
                .iter_mut()
                .chain(self.active.as_mut())
                .find(|seg| seg.number == number);
            if let Some(seg) = seg {
                debug_assert!(pos <= seg.pos);
                seg.synced_pos = seg.synced_pos.max(pos);
            }
        }
        self.sealed_unsynced.retain(Segment::is_unsynced);
    }

    /// Tells the writer that syncs of all [`LogWriter::unsynced_fds`] completed, and no append
    /// happened since they were taken.
    pub fn synced(&mut self) {
        let point = self.sync_point();
        self.synced_to(&point);
    }

    /// A plain `fdatasync` of every unsynced fd, then [`LogWriter::synced`]: for tools, tests
    /// and the fallback path.
    pub fn sync(&mut self) -> Result<(), LogError> {
        let point = self.sync_point();
        for seg in self.unsynced() {
            seg.file.sync_data().map_err(|e| {
                self.shared
                    .err(&segment_path(&self.shared.dir, seg.number), e)
            })?;
        }
        self.synced_to(&point);
        Ok(())
    }

    /// The log directory (for error messages).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The number of the active segment, if any (for tests and tools).
    pub fn segment_number(&self) -> Option<u64> {
        self.active.as_ref().map(|seg| seg.number)
    }
}

/// Removes a segment that holds no record (best effort: `open` removes leftovers).
pub(crate) fn remove_empty(shared: &Shared, seg: Segment) {
    let (number, bytes) = (seg.number, seg.map.len() as u64);
    drop(seg);
    if fs::remove_file(segment_path(&shared.dir, number)).is_ok() {
        shared.disk_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for LogWriter {
    /// Seals the active segment; one without records is removed instead. Nothing is synced:
    /// the data stays in the page cache, and a crash loses only what was never synced.
    fn drop(&mut self) {
        let Some(seg) = self.active.take() else {
            return;
        };
        if seg.has_records() {
            self.shared.seal(seg.number, seg.map.len() as u64);
        } else {
            remove_empty(&self.shared, seg);
        }
    }
}

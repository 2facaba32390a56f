//! Compaction: a snapshot of the whole table replaces the sealed segments and older snapshots.
//!
//! Steps, each leaving a directory that replays to the same table if the machine dies there:
//! 1. write `snap-N.log.tmp` and fsync it (a crash leaves a `.tmp` that replay ignores and
//!    `open` removes);
//! 2. rename it to `snap-N.log` and fsync the directory (the old files are all still there, and
//!    last-seq-wins makes the duplicates harmless);
//! 3. delete each sealed segment and older snapshot *that the snapshot covers*, then fsync the
//!    directory. Each file is covered on its own, so any subset of deletions is safe.
//!
//! "Covered" is checked, not assumed: a file is deleted only if, for every record in it, the
//! snapshot holds a record of the same address (relationship name) with an equal or higher
//! `seq`. So a caller that read its table a little before calling (and missed a change sealed
//! in between) costs disk space, not a lease.
//!
//! Relationship records are not the caller's business: every snapshot gets the latest record
//! of each relationship the log knows (replayed at open, or appended since), taken after the
//! list of sealed files, so every relationship record of a file that may be deleted is in it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::record::{
    self, BindingRef, FileHeader, FileKind, RecordRef, RelationshipRecord, MAX_RECORD_LEN,
};
use super::replay::{self, Head, IpMap};
use super::segment::{segment_path, snapshot_path};
use super::{FileEntry, LeaseLog, LogError};

/// A point in [`LeaseLog::write_snapshot_observed`], for crash tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStep<'p> {
    /// The snapshot is complete and durable under its temporary name.
    TmpWritten(&'p Path),
    /// The snapshot has its final name, durably.
    Renamed(&'p Path),
    /// This covered file was deleted (the directory is not yet synced).
    Deleted(&'p Path),
}

impl LeaseLog {
    /// Compaction: writes every binding given, and the latest record of every failover
    /// relationship the log knows, into a new snapshot (temporary name, fsync, rename, fsync of
    /// the directory), then deletes the segments sealed before this call and the older
    /// snapshots, each if the snapshot covers it (see the module doc). Records in still-active
    /// segments stay; last-seq-wins keeps replay right.
    ///
    /// Pass the WHOLE current table, Released and Expired addresses included: they are
    /// tombstones that must outlive any older record of their address. Read the table while
    /// this runs (a lazy iterator over it), not before: what was sealed before the call must be
    /// in the table passed, or the file holding it is kept.
    pub fn write_snapshot<'a>(
        &self,
        bindings: impl Iterator<Item = BindingRef<'a>>,
    ) -> Result<(), LogError> {
        self.write_snapshot_observed(bindings, |_| {})
    }

    /// [`LeaseLog::write_snapshot`], calling `on_step` at each crash point (tests copy the
    /// directory there).
    #[doc(hidden)]
    pub fn write_snapshot_observed<'a>(
        &self,
        bindings: impl Iterator<Item = BindingRef<'a>>,
        mut on_step: impl FnMut(SnapshotStep<'_>),
    ) -> Result<(), LogError> {
        let shared = &*self.shared;
        let _one_at_a_time = shared.compaction.lock();
        let (old_segments, old_snapshots) = {
            let files = shared.files.lock();
            (files.sealed.clone(), files.snapshots.clone())
        };
        // After the file list: a relationship record in a listed file was appended, and so
        // noted, before its segment was sealed.
        let relationships: Vec<RelationshipRecord> =
            shared.relationships.lock().values().cloned().collect();
        let number = shared.next_number.fetch_add(1, Ordering::Relaxed);
        let path = snapshot_path(&shared.dir, number);
        let tmp = tmp_path(&path);
        #[expect(
            clippy::redundant_closure,
            reason = "the closure shortens the bindings' lifetime to the relationships' one; \
                      the variant's constructor would not compile"
        )]
        let records = bindings.map(|b| RecordRef::Binding(b)).chain(
            relationships
                .iter()
                .map(|r| RecordRef::Relationship(r.as_ref())),
        );
        let (latest, bytes) = match write_file(&shared.dir, &tmp, number, records) {
            Ok(written) => written,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        on_step(SnapshotStep::TmpWritten(&tmp));

        fs::rename(&tmp, &path).map_err(|e| shared.err(&path, e))?;
        shared.sync_dir()?;
        shared.disk_bytes.fetch_add(bytes, Ordering::Relaxed);
        shared
            .files
            .lock()
            .snapshots
            .push(FileEntry { number, bytes });
        on_step(SnapshotStep::Renamed(&path));

        let candidates = old_segments
            .iter()
            .map(|f| (segment_path(&shared.dir, f.number), FileKind::Log, f))
            .chain(
                old_snapshots
                    .iter()
                    .map(|f| (snapshot_path(&shared.dir, f.number), FileKind::Snapshot, f)),
            );
        let mut deleted = Vec::new();
        for (old, kind, entry) in candidates {
            if !old.exists() {
                // Gone already (a compaction that failed after deleting it): forget it.
                deleted.push(entry.number);
                continue;
            }
            if !covered(&shared.dir, &old, kind, entry.number, &latest)? {
                tracing::warn!(
                    file = %old.display(),
                    "lease log file not covered by the new snapshot; kept"
                );
                continue;
            }
            fs::remove_file(&old).map_err(|e| shared.err(&old, e))?;
            shared.disk_bytes.fetch_sub(entry.bytes, Ordering::Relaxed);
            deleted.push(entry.number);
            on_step(SnapshotStep::Deleted(&old));
        }
        shared.sync_dir()?;
        let mut files = shared.files.lock();
        files.sealed.retain(|f| !deleted.contains(&f.number));
        files.snapshots.retain(|f| !deleted.contains(&f.number));
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// The highest seq per address and per relationship name in a snapshot.
#[derive(Default)]
struct Latest {
    ips: IpMap<u64>,
    names: HashMap<Box<[u8]>, u64>,
}

impl Latest {
    fn add(&mut self, record: &RecordRef<'_>) {
        let seq = match record {
            RecordRef::Binding(b) => self.ips.entry(u32::from(b.ip)).or_insert(b.seq),
            RecordRef::Relationship(r) => self.names.entry(r.name.into()).or_insert(r.seq),
        };
        *seq = (*seq).max(record.seq());
    }

    /// Holds a record of the same address (name) with an equal or higher seq.
    fn covers(&self, record: &RecordRef<'_>) -> bool {
        let seq = match record {
            RecordRef::Binding(b) => self.ips.get(&u32::from(b.ip)),
            RecordRef::Relationship(r) => self.names.get(r.name),
        };
        seq.is_some_and(|&seq| seq >= record.seq())
    }
}

/// Writes a snapshot file and fsyncs it; returns the highest seq per address and name in it
/// and its size.
fn write_file<'a>(
    dir: &Path,
    path: &Path,
    number: u64,
    records: impl Iterator<Item = RecordRef<'a>>,
) -> Result<(Latest, u64), LogError> {
    let err = |e| LogError::io(dir, path, e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let header = record::encode_header(&FileHeader {
        kind: FileKind::Snapshot,
        number,
    });
    out.write_all(&header).map_err(err)?;
    let mut bytes = header.len() as u64;
    let mut written_back = 0u64;
    let started = std::time::Instant::now();
    let mut latest = Latest::default();
    let mut buf = [0u8; MAX_RECORD_LEN];
    for r in records {
        if r.encoded_len().is_none() {
            return Err(match r {
                RecordRef::Binding(b) => LogError::RecordTooLarge {
                    client_len: b.client.len(),
                    hostname_len: b.hostname.len(),
                },
                RecordRef::Relationship(r) => LogError::BadRelationshipName {
                    name_len: r.name.len(),
                },
            });
        }
        let len = r.encode_into(&mut buf);
        out.write_all(&buf[..len]).map_err(err)?;
        bytes += len as u64;
        latest.add(&r);
        if bytes - written_back >= WRITEBACK_CHUNK {
            out.flush().map_err(err)?;
            write_back(out.get_ref(), written_back, bytes).map_err(err)?;
            written_back = bytes;
            pace(started, bytes);
        }
    }
    let file = out.into_inner().map_err(|e| err(e.into_error()))?;
    file.sync_all().map_err(err)?;
    Ok((latest, bytes))
}

/// Snapshot bytes written back to disk at a time while the snapshot is written.
///
/// The workers' data syncs share the filesystem journal with the snapshot: on ext4 (ordered
/// data) a journal commit first writes out every dirty data block of newly allocated space,
/// so one final fsync of a large snapshot would stall the workers' syncs, and their ACKs, for
/// as long as it takes. Writing it back in small chunks as it goes keeps each stall short.
const WRITEBACK_CHUNK: u64 = 256 << 10;

/// The pace at which a snapshot is written: fast enough for millions of leases in seconds,
/// slow enough that the workers' small syncs seldom queue behind a burst of snapshot I/O
/// (measured: 4× fewer syncs over 10 ms during a compaction than writing at full speed).
const SNAPSHOT_BYTES_PER_S: u64 = 64 << 20;

/// Sleeps until writing `bytes` since `started` is back at [`SNAPSHOT_BYTES_PER_S`].
fn pace(started: std::time::Instant, bytes: u64) {
    let due = std::time::Duration::from_micros(bytes * 1_000_000 / SNAPSHOT_BYTES_PER_S);
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(ahead);
    }
}

/// Writes `file`'s bytes `from..to` back to disk and waits for them.
fn write_back(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range takes no pointers; the fd is open for as long as `file` lives.
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), from as i64, (to - from) as i64, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Does the snapshot (`latest`) hold, for every record of this file, a record of the same
/// address (relationship name) with an equal or higher seq?
fn covered(
    dir: &Path,
    path: &Path,
    kind: FileKind,
    number: u64,
    latest: &Latest,
) -> Result<bool, LogError> {
    let map = replay::map_file(dir, path)?;
    let buf: &[u8] = map.as_deref().unwrap_or(&[]);
    if let Head::Blank = replay::check_head(path, buf, kind, number)? {
        return Ok(true);
    }
    let mut all = true;
    replay::walk(buf, |_, record| all &= latest.covers(record));
    Ok(all)
}

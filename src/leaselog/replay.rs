//! Replay: reading every segment and snapshot back into the latest binding per address, and
//! the latest relationship record per name.
//!
//! Walking one file: records follow the header back to back. A zero length field ends them.
//! A record that fails its checks (length out of range or past the end of the file, CRC
//! mismatch, bad content) is either
//! - a **torn tail**: no valid record follows it anywhere in the file (scanning forward at
//!   8-byte steps). A crash during appends leaves exactly this; `open` zero-fills it; or
//! - **corruption in the middle**: a valid record follows. Its offset is reported and the walk
//!   resumes at that next valid record, so what follows the damage is not lost.
//!
//! Across files, the record with the highest `seq` wins for each address, and, apart from the
//! bindings, for each relationship name. Relationship records never become bindings.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::record::{
    self, Binding, FileKind, RecordError, RecordRef, RelationshipRecord, ALIGN, HEADER_LEN,
};
use super::segment::parse_file_name;
use super::LogError;

/// What replay found.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    /// Segment files read (files without any record that `open` removed are not counted).
    pub segments: usize,
    /// Snapshot files read.
    pub snapshots: usize,
    /// Valid records read, of both kinds, in all files.
    pub records: u64,
    /// Addresses with a binding (the length of [`Replayed::bindings`]).
    pub bindings: usize,
    /// Failover relationships with a record (the length of [`Replayed::relationships`]).
    pub relationships: usize,
    /// Highest `seq` of any record, relationship records included (0 when there is none).
    pub max_seq: u64,
    /// Torn tails: (file, offset of the first bad record, bytes from there to the last nonzero
    /// byte of the file). `open` zero-fills them.
    pub torn_tails: Vec<(PathBuf, u64, u64)>,
    /// Damage in the middle of a file: (file, offset of the bad record). The records after it
    /// were replayed.
    pub corrupt: Vec<(PathBuf, u64)>,
}

/// The replayed table.
#[derive(Clone, Debug, Default)]
pub struct Replayed {
    /// The latest record of every address, sorted by `seq`.
    pub bindings: Vec<Binding>,
    /// The latest record of every failover relationship, sorted by name.
    pub relationships: Vec<RelationshipRecord>,
    pub report: ReplayReport,
}

/// `ringlease log verify DIR`: replays read-only and returns what it found. Changes nothing:
/// torn tails stay, unfinished snapshots are ignored. Takes no lock, so it can run beside a
/// server (which never shrinks or rewrites a record it wrote).
pub fn verify(dir: &Path) -> Result<Replayed, LogError> {
    replay_dir(dir, Mode::ReadOnly).map(|(replayed, _)| replayed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    ReadOnly,
    /// Zero-fill torn tails, remove files without records and unfinished snapshots.
    Repair,
}

/// One log file seen by replay.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) kind: FileKind,
    pub(crate) number: u64,
    pub(crate) bytes: u64,
    /// Removed by `Mode::Repair` (it held no record).
    pub(crate) removed: bool,
}

/// The result of walking one file's records.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) records: u64,
    /// (offset, bytes dropped).
    pub(crate) torn: Option<(u64, u64)>,
    pub(crate) corrupt: Vec<u64>,
}

/// Walks the records of `file` (a whole file, header included, already checked), calling
/// `each(offset, record)` for every valid one, of either kind.
pub(crate) fn walk(file: &[u8], mut each: impl FnMut(usize, &RecordRef<'_>)) -> Walk {
    let mut result = Walk::default();
    let mut pos = HEADER_LEN;
    while pos < file.len() {
        match record::decode(&file[pos..]) {
            Ok((record, len)) => {
                each(pos, &record);
                result.records += 1;
                pos += len;
            }
            Err(RecordError::End) => break,
            Err(_) => match next_valid(file, pos + ALIGN) {
                Some(next) => {
                    result.corrupt.push(pos as u64);
                    pos = next;
                }
                None => {
                    let end = file.iter().rposition(|&b| b != 0).map_or(pos, |i| i + 1);
                    result.torn = Some((pos as u64, end.saturating_sub(pos) as u64));
                    break;
                }
            },
        }
    }
    result
}

/// The first offset at or after `from` (rounded up to 8) where a valid record starts.
fn next_valid(file: &[u8], from: usize) -> Option<usize> {
    let mut at = record::padded(from);
    while at + record::RECORD_FIXED_LEN <= file.len() {
        // Cheap length checks first: most offsets are zero or inside a record.
        let len = u32::from_le_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]) as usize;
        if (record::RECORD_FIXED_LEN..=record::MAX_RECORD_LEN).contains(&len)
            && len % ALIGN == 0
            && at + len <= file.len()
            && record::decode(&file[at..]).is_ok()
        {
            return Some(at);
        }
        at += ALIGN;
    }
    None
}

/// Maps a log file read-only; `None` for an empty file (which cannot be mapped).
pub(crate) fn map_file(dir: &Path, path: &Path) -> Result<Option<Mmap>, LogError> {
    let file = File::open(path).map_err(|e| LogError::io(dir, path, e))?;
    let len = file
        .metadata()
        .map_err(|e| LogError::io(dir, path, e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: a file of the private, locked log directory (see `segment`), which this program
    // never shrinks; `verify` reads without the lock but the server it may run beside never
    // shrinks a file either.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| LogError::io(dir, path, e))?;
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Some(map))
}

/// What a file's first bytes say.
pub(crate) enum Head {
    /// A valid header of the kind and number its name says.
    Valid,
    /// Nothing but zeros: a segment whose creation a crash interrupted.
    Blank,
}

pub(crate) fn check_head(
    path: &Path,
    buf: &[u8],
    kind: FileKind,
    number: u64,
) -> Result<Head, LogError> {
    let bad = |problem: String| LogError::BadHeader {
        path: path.to_path_buf(),
        problem,
    };
    if buf.len() < HEADER_LEN || buf[..HEADER_LEN].iter().all(|&b| b == 0) {
        if buf.iter().all(|&b| b == 0) {
            return Ok(Head::Blank);
        }
        return Err(bad("no header, but data follows".into()));
    }
    let header = record::decode_header(buf).map_err(bad)?;
    if header.kind != kind || header.number != number {
        return Err(bad(format!(
            "header says {:?} {:#x}, the name says {kind:?} {number:#x}",
            header.kind, header.number
        )));
    }
    Ok(Head::Valid)
}

/// A cheap hash for IPv4 addresses as `u32` (the default SipHash costs more than the rest of
/// a record's replay).
#[derive(Default)]
pub(crate) struct IpHasher(u64);

impl Hasher for IpHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        let h = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

pub(crate) type IpMap<V> = HashMap<u32, V, BuildHasherDefault<IpHasher>>;

/// Where the winning record of an address is: kept small (with the key, 24 bytes per address)
/// because the map's cache misses are most of replay's cost.
#[derive(Clone, Copy)]
struct Winner {
    seq: u64,
    /// File index << [`OFFSET_BITS`] | offset in the file.
    location: u64,
}

/// Offsets below 1 TiB, up to 16 M files: far beyond any log.
const OFFSET_BITS: u32 = 40;

impl Winner {
    fn file(&self) -> usize {
        (self.location >> OFFSET_BITS) as usize
    }

    fn offset(&self) -> usize {
        (self.location & ((1 << OFFSET_BITS) - 1)) as usize
    }
}

/// Replays every log file of `dir`.
pub(crate) fn replay_dir(dir: &Path, mode: Mode) -> Result<(Replayed, Vec<Scanned>), LogError> {
    let mut names = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| LogError::io(dir, dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(dir, dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(unfinished) = name.strip_suffix(".tmp") {
            if mode == Mode::Repair && parse_file_name(unfinished).is_some() {
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| LogError::io(dir, &path, e))?;
            }
            continue;
        }
        if let Some((kind, number)) = parse_file_name(name) {
            names.push((number, kind));
        }
    }
    names.sort_unstable_by_key(|&(number, _)| number);

    let mut report = ReplayReport::default();
    let mut scanned = Vec::with_capacity(names.len());
    let mut maps: Vec<Option<Mmap>> = Vec::with_capacity(names.len());
    let mut winners: IpMap<Winner> = IpMap::default();
    // Few, so kept owned as they are found.
    let mut relationships: BTreeMap<Box<[u8]>, RelationshipRecord> = BTreeMap::new();
    let mut removed_any = false;
    for &(number, kind) in &names {
        let path = match kind {
            FileKind::Log => super::segment::segment_path(dir, number),
            FileKind::Snapshot => super::segment::snapshot_path(dir, number),
        };
        let map = map_file(dir, &path)?;
        let buf: &[u8] = map.as_deref().unwrap_or(&[]);
        if buf.len() as u64 >= 1 << OFFSET_BITS || maps.len() >= 1 << (64 - OFFSET_BITS) {
            return Err(LogError::BadHeader {
                path,
                problem: "file too large, or too many files, to replay".into(),
            });
        }
        let bytes = buf.len() as u64;
        let file_index = maps.len();
        let walked = match check_head(&path, buf, kind, number)? {
            Head::Blank => None,
            Head::Valid => Some(walk(buf, |offset, record| {
                report.max_seq = report.max_seq.max(record.seq());
                let b = match record {
                    RecordRef::Binding(b) => b,
                    RecordRef::Relationship(r) => {
                        match relationships.get_mut(r.name) {
                            Some(known) if known.seq >= r.seq => {}
                            Some(known) => *known = r.to_owned(),
                            None => {
                                relationships.insert(r.name.into(), r.to_owned());
                            }
                        }
                        return;
                    }
                };
                let candidate = Winner {
                    seq: b.seq,
                    location: (file_index as u64) << OFFSET_BITS | offset as u64,
                };
                winners
                    .entry(u32::from(b.ip))
                    .and_modify(|w| {
                        if b.seq > w.seq {
                            *w = candidate;
                        }
                    })
                    .or_insert(candidate);
            })),
        };
        maps.push(map);
        let walked = walked.unwrap_or_default();
        report.records += walked.records;
        report
            .corrupt
            .extend(walked.corrupt.iter().map(|&offset| (path.clone(), offset)));
        if let Some((offset, dropped)) = walked.torn {
            report.torn_tails.push((path.clone(), offset, dropped));
        }
        // A file without a single record (a blank segment, one whose only record was torn)
        // tells replay nothing: `open` removes it rather than keep it forever.
        let removable = walked.records == 0 && walked.corrupt.is_empty();
        let mut removed = false;
        if mode == Mode::Repair {
            if removable {
                fs::remove_file(&path).map_err(|e| LogError::io(dir, &path, e))?;
                removed = true;
                removed_any = true;
            } else if let Some((offset, dropped)) = walked.torn {
                zero_fill(dir, &path, offset, dropped)?;
            }
        }
        if !removed {
            match kind {
                FileKind::Log => report.segments += 1,
                FileKind::Snapshot => report.snapshots += 1,
            }
        }
        scanned.push(Scanned {
            kind,
            number,
            bytes,
            removed,
        });
    }
    if removed_any {
        super::sync_dir(dir)?;
    }

    let mut bindings: Vec<Binding> = Vec::with_capacity(winners.len());
    for w in winners.values() {
        let Some(map) = maps[w.file()].as_deref() else {
            continue;
        };
        // It decoded during the walk, and records are never rewritten in place.
        if let Ok((RecordRef::Binding(b), _)) = record::decode(&map[w.offset()..]) {
            bindings.push(b.to_owned());
        }
    }
    bindings.sort_unstable_by_key(|b| b.seq);
    report.bindings = bindings.len();
    let relationships: Vec<RelationshipRecord> = relationships.into_values().collect();
    report.relationships = relationships.len();
    let replayed = Replayed {
        bindings,
        relationships,
        report,
    };
    Ok((replayed, scanned))
}

/// Overwrites `len` bytes at `offset` with zeros and makes that durable.
fn zero_fill(dir: &Path, path: &Path, offset: u64, len: u64) -> Result<(), LogError> {
    let err = |e| LogError::io(dir, path, e);
    let file = OpenOptions::new().write(true).open(path).map_err(err)?;
    let zeros = [0u8; 64 * 1024];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(err)?;
        at += n as u64;
    }
    file.sync_data().map_err(err)
}

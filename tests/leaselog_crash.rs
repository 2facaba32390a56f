//! Crash images of the lease log: what was appended (and, where it matters, synced) before a
//! crash must replay after it; damage must be told apart (torn tail: dropped and repaired;
//! damage in the middle: reported, the rest kept); compaction must be safe at every step; a
//! full disk must be an error, never a SIGBUS.
//!
//! A "crash image" here is a copy of the directory taken at a point of interest (or the
//! directory left by a process that aborted). Copies read through the page cache, so they show
//! what a crash of the *process* leaves; a power cut can lose more — exactly what was never
//! synced — and the torn-tail tests build those images by hand.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ringlease::leaselog::record::{self, HEADER_LEN};
use ringlease::leaselog::{
    verify, Binding, LeaseLog, LogError, LogOptions, Replayed, SnapshotStep,
};
use ringlease::proto::lease::LeaseState;

/// Small segments, so a few hundred records roll several times.
const SMALL: LogOptions = LogOptions {
    segment_bytes: 4096,
    compact_at_bytes: 16 * 4096,
};

/// Opens a log this process may have dropped a moment ago. A child process that another test
/// spawns holds copies of all our descriptors from its fork until its exec closes them (which
/// the kernel does after the spawning thread already runs again), among them the `flock`ed lock
/// file of a dropped log: a reopen in that window sees `Locked`, so it is retried briefly.
fn open_log(dir: &Path, options: LogOptions) -> Result<(LeaseLog, Replayed), LogError> {
    for _ in 0..200 {
        match LeaseLog::open(dir, options) {
            Err(LogError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            other => return other,
        }
    }
    LeaseLog::open(dir, options)
}

/// A deterministic pseudo-random sequence (a fixed seed per test, so a failure replays).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const STATES: [LeaseState; 5] = [
    LeaseState::Offered,
    LeaseState::Bound,
    LeaseState::Declined,
    LeaseState::Released,
    LeaseState::Expired,
];

/// A binding change for address 100.64.x.y (`host` picks x.y) with fields derived from `seq`.
fn binding(seq: u64, host: u16, state: LeaseState) -> Binding {
    let [hi, lo] = host.to_be_bytes();
    let client_len = 2 + (seq % 11) as usize;
    let hostname = if seq % 3 == 0 {
        format!("host-{seq}").into_bytes()
    } else {
        Vec::new()
    };
    Binding {
        seq,
        ip: Ipv4Addr::new(100, 64, hi, lo),
        state,
        flags: (seq % 7) as u8,
        expires_s: 1_700_000_000 + seq,
        potential_expiry_s: 1_700_000_100 + seq,
        partner_expiry_s: 1_700_000_050 + seq,
        cltt_s: 1_699_000_000 + seq,
        state_since_s: 1_699_500_000 + seq,
        client: (0..client_len)
            .map(|i| (seq as u8).wrapping_add(i as u8))
            .collect(),
        hostname: hostname.into(),
    }
}

/// The table replay must produce: the highest seq per address.
type Table = BTreeMap<Ipv4Addr, Binding>;

fn apply(table: &mut Table, b: &Binding) {
    match table.get(&b.ip) {
        Some(old) if old.seq >= b.seq => {}
        _ => {
            table.insert(b.ip, b.clone());
        }
    }
}

fn table_of(replayed: &Replayed) -> Table {
    let table: Table = replayed
        .bindings
        .iter()
        .map(|b| (b.ip, b.clone()))
        .collect();
    assert_eq!(
        table.len(),
        replayed.bindings.len(),
        "one binding per address"
    );
    assert!(
        replayed.bindings.windows(2).all(|w| w[0].seq <= w[1].seq),
        "sorted by seq"
    );
    assert_eq!(replayed.report.bindings, table.len());
    table
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains(".log"))
        .collect();
    files.sort();
    files
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    log_files(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .collect()
}

/// Copies the log files of `from` (a crash image of the process: what the page cache holds).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for path in log_files(from) {
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Guards the basic promise: records appended by several writers, across several segments each,
/// are all replayed after the writers and the log are dropped without any sync (the process
/// lives on, so the page cache keeps them), and a second process cannot open a locked log.
#[test]
fn unsynced_appends_of_many_writers_replay_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut model = Table::new();
    {
        let (log, replayed) = open_log(&dir, SMALL).unwrap();
        assert!(replayed.bindings.is_empty());
        assert!(matches!(
            LeaseLog::open(&dir, SMALL),
            Err(LogError::Locked(_))
        ));
        let mut writers: Vec<_> = (0..3).map(|_| log.writer().unwrap()).collect();
        for seq in 1..=600u64 {
            let b = binding(seq, (seq % 250) as u16, STATES[(seq % 5) as usize]);
            writers[(seq % 3) as usize].append(&b.as_ref()).unwrap();
            apply(&mut model, &b);
        }
    }
    assert!(segments(&dir).len() >= 6, "each writer rolled");
    let (_log, replayed) = open_log(&dir, SMALL).unwrap();
    assert_eq!(table_of(&replayed), model);
    assert_eq!(replayed.report.records, 600);
    assert_eq!(replayed.report.max_seq, 600);
    assert!(replayed.report.torn_tails.is_empty());
    assert!(replayed.report.corrupt.is_empty());
}

/// Writes `n` records (seq 1..=n, one address each) with one writer and returns the segment
/// and the offsets where the last record starts and ends. The last record is 80 or 88 bytes
/// long, so the low byte of its length field is not zero.
fn one_segment_of(dir: &Path, n: u64) -> (PathBuf, Vec<Binding>, u64, u64) {
    let (log, _) = open_log(dir, SMALL).unwrap();
    let mut writer = log.writer().unwrap();
    let mut written = Vec::new();
    let mut end = HEADER_LEN as u64;
    let mut last_start = end;
    for seq in 1..=n {
        let b = binding(seq, seq as u16, LeaseState::Bound);
        writer.append(&b.as_ref()).unwrap();
        last_start = end;
        end += record::encoded_len(&b.as_ref()).unwrap() as u64;
        written.push(b);
    }
    writer.sync().unwrap();
    let number = writer.segment_number().unwrap();
    drop(writer);
    drop(log);
    let path = dir.join(format!("seg-{number:016x}.log"));
    assert!(end - last_start < 256);
    (path, written, last_start, end)
}

/// Guards torn-tail handling: a segment cut at every byte inside its last record (as a crash
/// during that append leaves it), or with the record's tail zeroed instead, replays every record
/// before it and reports exactly one torn tail at the record's offset; `open` repairs it, a new
/// writer appends, and a re-open sees everything with nothing torn.
#[test]
fn torn_tail_at_every_offset_is_dropped_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let (segment, written, last_start, last_end) = one_segment_of(&original, 6);
    let name = segment.file_name().unwrap().to_owned();
    let before_last: Table = written[..written.len() - 1]
        .iter()
        .map(|b| (b.ip, b.clone()))
        .collect();
    let mut images = 0;
    for cut in last_start + 1..last_end {
        for zero_fill in [false, true] {
            let image = tmp.path().join(format!("cut-{cut}-{zero_fill}"));
            copy_dir(&original, &image);
            let seg = image.join(&name);
            if zero_fill {
                let file = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&seg)
                    .unwrap();
                let zeros = vec![0u8; (last_end - cut) as usize];
                let mut old = vec![0u8; zeros.len()];
                file.read_exact_at(&mut old, cut).unwrap();
                if old == zeros {
                    fs::remove_dir_all(&image).unwrap();
                    continue; // only padding was cut: the record is intact
                }
                file.write_all_at(&zeros, cut).unwrap();
            } else {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&seg)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
            }
            images += 1;
            let what = format!("cut at {cut}, zero-filled: {zero_fill}");

            let verified = verify(&image).unwrap();
            assert_eq!(table_of(&verified), before_last, "{what}");
            let torn = &verified.report.torn_tails;
            assert_eq!(torn.len(), 1, "{what}");
            assert_eq!(
                (torn[0].0.as_path(), torn[0].1),
                (seg.as_path(), last_start)
            );
            assert!((1..=last_end - last_start).contains(&torn[0].2), "{what}");
            assert!(verified.report.corrupt.is_empty(), "{what}");

            let extra = binding(1000, 999, LeaseState::Offered);
            {
                let (log, replayed) = open_log(&image, SMALL).unwrap();
                assert_eq!(table_of(&replayed), before_last, "{what}");
                assert_eq!(replayed.report.torn_tails.len(), 1, "{what}");
                let mut writer = log.writer().unwrap();
                writer.append(&extra.as_ref()).unwrap();
                writer.sync().unwrap();
            }
            let (_log, replayed) = open_log(&image, SMALL).unwrap();
            let mut expected = before_last.clone();
            apply(&mut expected, &extra);
            assert_eq!(table_of(&replayed), expected, "{what}");
            assert!(replayed.report.torn_tails.is_empty(), "{what}: repaired");
            drop(_log);
            fs::remove_dir_all(&image).unwrap();
        }
    }
    assert!(images > 100, "{images} images");
}

/// Guards damage in the middle: a flipped byte in one record, or a garbage length field, is
/// reported with that record's offset, and every record after it is still replayed (by `verify`
/// and by `open`, which must not refuse to start).
#[test]
fn corrupt_record_in_the_middle_is_reported_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let (segment, written, _, _) = one_segment_of(&original, 20);
    let name = segment.file_name().unwrap().to_owned();
    let victim = 7;
    let victim_offset = HEADER_LEN as u64
        + written[..victim]
            .iter()
            .map(|b| record::encoded_len(&b.as_ref()).unwrap() as u64)
            .sum::<u64>();
    let expected: Table = written
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != victim)
        .map(|(_, b)| (b.ip, b.clone()))
        .collect();
    // (offset inside the record, new bytes): a flipped address byte; an impossible length.
    let damages: [(u64, &[u8]); 3] = [
        (18, &[0xff]),
        (0, &[0xff, 0xff, 0xff, 0xff]),
        (0, &[0x10, 0, 0, 0]),
    ];
    for (i, (at, bytes)) in damages.into_iter().enumerate() {
        let image = tmp.path().join(format!("damage-{i}"));
        copy_dir(&original, &image);
        let seg = image.join(&name);
        let file = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        file.write_all_at(bytes, victim_offset + at).unwrap();
        drop(file);

        let verified = verify(&image).unwrap();
        assert_eq!(verified.report.corrupt, vec![(seg.clone(), victim_offset)]);
        assert!(verified.report.torn_tails.is_empty());
        assert_eq!(table_of(&verified), expected);
        assert_eq!(verified.report.records, written.len() as u64 - 1);

        let (_log, replayed) = open_log(&image, SMALL).unwrap();
        assert_eq!(replayed.report.corrupt, vec![(seg.clone(), victim_offset)]);
        assert_eq!(table_of(&replayed), expected);
    }
}

/// Guards the merge rule: when writers interleave changes of the same addresses, the record with
/// the highest seq wins whatever segment (older or newer, of whichever writer) holds it.
#[test]
fn last_seq_wins_across_segments_of_different_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut model = Table::new();
    let mut rng = Lcg(4);
    {
        let (log, _) = open_log(&dir, SMALL).unwrap();
        let mut late = log.writer().unwrap();
        let mut early = log.writer().unwrap();
        // The older segment (`late`'s, created first) gets the newer change of address 1.
        let older_change = binding(1, 1, LeaseState::Bound);
        let newer_change = binding(2, 1, LeaseState::Released);
        early.append(&older_change.as_ref()).unwrap();
        late.append(&newer_change.as_ref()).unwrap();
        apply(&mut model, &older_change);
        apply(&mut model, &newer_change);

        let mut writers: Vec<_> = (0..4).map(|_| log.writer().unwrap()).collect();
        for seq in 3..3000u64 {
            let b = binding(seq, rng.below(40) as u16 + 2, STATES[rng.below(5) as usize]);
            writers[rng.below(4) as usize].append(&b.as_ref()).unwrap();
            apply(&mut model, &b);
        }
    }
    let (_log, replayed) = open_log(&dir, SMALL).unwrap();
    let table = table_of(&replayed);
    assert_eq!(
        table[&Ipv4Addr::new(100, 64, 0, 1)].state,
        LeaseState::Released
    );
    assert_eq!(table, model);
}

/// Opens every crash image in `images` and checks it replays to its expected table, read-only
/// and after `open`'s repairs.
fn check_images(images: &[(String, PathBuf, Table)]) {
    for (step, image, expected) in images {
        let verified = verify(image).unwrap();
        assert_eq!(&table_of(&verified), expected, "verify at {step}");
        let (_log, replayed) = open_log(image, SMALL).unwrap();
        assert_eq!(&table_of(&replayed), expected, "open at {step}");
        assert!(replayed.report.corrupt.is_empty(), "{step}");
        assert!(
            !log_files(image)
                .iter()
                .any(|p| p.extension().unwrap() == "tmp"),
            "open removes an unfinished snapshot ({step})"
        );
    }
}

/// Guards compaction: a snapshot replaces the sealed segments while a writer keeps appending
/// (its active segment stays), tombstones (Released/Expired) keep older records of their address
/// dead, and a crash image taken at each step (snapshot written under its temporary name,
/// renamed, after each deletion, done) replays to the table of that moment. A second compaction
/// then replaces the first snapshot.
#[test]
fn compaction_crash_images_replay_to_the_same_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_log(&dir, SMALL).unwrap();
    let mut model = Table::new();
    let mut rng = Lcg(5);
    let mut seq = 0;
    let mut active = log.writer().unwrap();
    {
        let mut other = log.writer().unwrap();
        for _ in 0..800 {
            seq += 1;
            let b = binding(seq, rng.below(60) as u16, STATES[rng.below(5) as usize]);
            if rng.below(2) == 0 {
                active.append(&b.as_ref()).unwrap();
            } else {
                other.append(&b.as_ref()).unwrap();
            }
            apply(&mut model, &b);
        }
    }
    assert!(model.values().any(|b| b.state == LeaseState::Released));
    assert!(log.compaction_due(), "sealed {} bytes", log.sealed_bytes());
    let bytes_before = log.disk_bytes();
    let active_before = format!("seg-{:016x}.log", active.segment_number().unwrap());
    let sealed_before: Vec<_> = segments(&dir)
        .into_iter()
        .filter(|p| !p.ends_with(&active_before))
        .collect();
    assert!(sealed_before.len() >= 4);

    for round in 0..2 {
        let snapshot_of = model.clone();
        let mut images = Vec::new();
        let mut appended = Table::new();
        log.write_snapshot_observed(snapshot_of.values().map(Binding::as_ref), |step| {
            let name = match step {
                SnapshotStep::TmpWritten(_) => "tmp-written".to_string(),
                SnapshotStep::Renamed(_) => "renamed".to_string(),
                SnapshotStep::Deleted(path) => format!("deleted {}", path.display()),
            };
            let image = tmp
                .path()
                .join(format!("round-{round}-image-{}", images.len()));
            copy_dir(&dir, &image);
            let mut expected = snapshot_of.clone();
            for b in appended.values() {
                apply(&mut expected, b);
            }
            images.push((name, image, expected));
            // The worker goes on appending while compaction runs.
            seq += 1;
            let b = binding(seq, rng.below(60) as u16, STATES[rng.below(5) as usize]);
            active.append(&b.as_ref()).unwrap();
            apply(&mut appended, &b);
        })
        .unwrap();
        assert!(images.len() >= 3, "{} steps", images.len());
        check_images(&images);
        for b in appended.values() {
            apply(&mut model, b);
        }
    }

    let still_there: Vec<_> = sealed_before.iter().filter(|p| p.exists()).collect();
    assert!(
        still_there.is_empty(),
        "sealed segments not deleted: {still_there:?}"
    );
    assert!(log.disk_bytes() < bytes_before);
    let snapshots: Vec<_> = log_files(&dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("snap-")
        })
        .collect();
    assert_eq!(snapshots.len(), 1, "the second snapshot replaced the first");
    drop(active);
    drop(log);
    let (_log, replayed) = open_log(&dir, SMALL).unwrap();
    assert_eq!(table_of(&replayed), model);
}

/// Guards the coverage check: a snapshot built from a table that missed a change (read before a
/// sealed segment got it) must not cause the deletion of the segment holding that change.
#[test]
fn compaction_keeps_a_segment_the_snapshot_does_not_cover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_log(&dir, SMALL).unwrap();
    let mut model = Table::new();
    {
        let mut writer = log.writer().unwrap();
        for seq in 1..=100 {
            let b = binding(seq, (seq % 10) as u16, LeaseState::Bound);
            writer.append(&b.as_ref()).unwrap();
            apply(&mut model, &b);
        }
    }
    let mut stale = model.clone();
    let missed = stale.values().next_back().unwrap().ip;
    stale.get_mut(&missed).unwrap().seq -= 1;
    log.write_snapshot(stale.values().map(Binding::as_ref))
        .unwrap();
    assert!(!segments(&dir).is_empty(), "the uncovered segment was kept");
    drop(log);
    let (_log, replayed) = open_log(&dir, SMALL).unwrap();
    assert_eq!(table_of(&replayed), model);
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Guards the full-disk path: on a 1 MiB tmpfs, appends fill the disk and then fail with
/// `NoSpace` (never a SIGBUS: segments are allocated before they are mapped); after space is
/// freed, the same writer appends again, and a re-open sees every append that succeeded.
/// Needs root (to mount): fails, not skips, without it.
#[test]
fn full_disk_gives_no_space_then_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&tmp.path().join("mnt"), "1m")
        .expect("mounting a tmpfs needs root: run the tests as root (see .ci/run)");
    let filler = mnt.path.join("filler");
    fs::write(&filler, vec![1u8; 256 * 1024]).unwrap();
    let dir = mnt.path.join("log");
    let options = LogOptions {
        segment_bytes: 64 * 1024,
        compact_at_bytes: u64::MAX,
    };
    let mut model = Table::new();
    {
        let (log, _) = open_log(&dir, options).unwrap();
        let mut writer = log.writer().unwrap();
        let mut seq = 0;
        let mut failures = 0;
        while failures < 3 {
            seq += 1;
            let b = binding(seq, (seq % 5000) as u16, LeaseState::Bound);
            match writer.append(&b.as_ref()) {
                Ok(()) => apply(&mut model, &b),
                Err(LogError::NoSpace(path)) => {
                    assert_eq!(path, dir);
                    failures += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
            assert!(seq < 100_000, "the disk never filled");
        }
        assert!(
            model.len() > 1000,
            "{} appends before the disk filled",
            model.len()
        );
        assert!(matches!(log.writer(), Err(LogError::NoSpace(_))));
        writer.sync().unwrap();

        fs::remove_file(&filler).unwrap();
        for _ in 0..1000 {
            seq += 1;
            let b = binding(seq, (seq % 5000) as u16, LeaseState::Released);
            writer.append(&b.as_ref()).unwrap();
            apply(&mut model, &b);
        }
        writer.sync().unwrap();
    }
    let (_log, replayed) = open_log(&dir, options).unwrap();
    assert_eq!(table_of(&replayed), model);
}

const CHILD_ENV: &str = "LEASELOG_CRASH_CHILD_DIR";
const CHILD_SYNCED: u64 = 500;

/// Guards durability across a process crash: a child process (this test binary, re-run with
/// an environment variable) appends and syncs, appends a little more without a sync, and aborts
/// without unmapping or dropping anything; the parent replays at least everything synced (in
/// practice everything: the page cache outlives the process).
#[test]
fn appended_and_synced_records_survive_process_abort() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let (log, _) = open_log(Path::new(&dir), SMALL).unwrap();
        let mut writer = log.writer().unwrap();
        for seq in 1..=CHILD_SYNCED {
            let b = binding(seq, seq as u16, LeaseState::Bound);
            writer.append(&b.as_ref()).unwrap();
        }
        writer.sync().unwrap();
        for seq in CHILD_SYNCED + 1..=CHILD_SYNCED + 10 {
            let b = binding(seq, seq as u16, LeaseState::Bound);
            writer.append(&b.as_ref()).unwrap();
        }
        std::process::abort();
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "appended_and_synced_records_survive_process_abort",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let (_log, replayed) = open_log(&dir, SMALL).unwrap();
    let table = table_of(&replayed);
    for seq in 1..=CHILD_SYNCED {
        let b = binding(seq, seq as u16, LeaseState::Bound);
        assert_eq!(table.get(&b.ip), Some(&b), "seq {seq}");
    }
    assert!(replayed.report.corrupt.is_empty());
}

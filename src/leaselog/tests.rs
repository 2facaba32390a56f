//! Relationship records through the whole log: append, replay, compaction (with crash images
//! at every step) and damage. The binding-only crash tests are in `tests/leaselog_crash.rs`;
//! these follow their pattern (a model of what replay must return, directory copies as crash
//! images).

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, HEADER_LEN};
use super::*;
use crate::proto::lease::LeaseState;

/// Small segments, so a few dozen records roll.
const SMALL: LogOptions = LogOptions {
    segment_bytes: 4096,
    compact_at_bytes: 4 * 4096,
};

fn binding(seq: u64, host: u8) -> Binding {
    Binding {
        seq,
        ip: Ipv4Addr::new(100, 64, 0, host),
        state: LeaseState::Bound,
        flags: 0,
        expires_s: 1_700_000_000 + seq,
        potential_expiry_s: 1_700_000_000 + seq,
        partner_expiry_s: 0,
        cltt_s: 1_699_000_000 + seq,
        state_since_s: 1_699_000_000 + seq,
        client: vec![1, 1, host, (seq % 251) as u8].into(),
        hostname: Box::default(),
    }
}

fn relationship(seq: u64, name: &str) -> RelationshipRecord {
    RelationshipRecord {
        seq,
        name: name.as_bytes().into(),
        state: (seq % 11) as u8,
        entered_at_s: 1_700_000_000 + seq,
        mclt_s: 3600 + seq as u32,
    }
}

/// What replay must return: per address and per name, the highest seq.
#[derive(Clone, Default, Debug, PartialEq)]
struct Model {
    bindings: BTreeMap<Ipv4Addr, Binding>,
    relationships: BTreeMap<Box<[u8]>, RelationshipRecord>,
}

impl Model {
    fn binding(&mut self, b: &Binding) {
        if self.bindings.get(&b.ip).is_none_or(|old| old.seq < b.seq) {
            self.bindings.insert(b.ip, b.clone());
        }
    }

    fn relationship(&mut self, r: &RelationshipRecord) {
        if self
            .relationships
            .get(&r.name)
            .is_none_or(|old| old.seq < r.seq)
        {
            self.relationships.insert(r.name.clone(), r.clone());
        }
    }

    fn of(replayed: &Replayed) -> Model {
        let model = Model {
            bindings: replayed
                .bindings
                .iter()
                .map(|b| (b.ip, b.clone()))
                .collect(),
            relationships: replayed
                .relationships
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
        };
        assert_eq!(model.bindings.len(), replayed.report.bindings);
        assert_eq!(model.relationships.len(), replayed.report.relationships);
        assert_eq!(
            model.relationships.len(),
            replayed.relationships.len(),
            "one per name"
        );
        assert!(
            replayed
                .relationships
                .windows(2)
                .all(|w| w[0].name < w[1].name),
            "sorted by name"
        );
        model
    }
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().contains(".log"))
        .collect();
    files.sort();
    files
}

/// A crash image of the process: the log files as the page cache holds them.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for path in log_files(from) {
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Guards replay's rule for relationship records: the highest seq per name wins whichever file
/// holds it (older or newer segment, of either writer, or a snapshot), they never show up as
/// bindings, the report counts them, and `max_seq` includes them.
#[test]
fn relationships_replay_latest_per_name_across_segments_and_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut model = Model::default();
    let records;
    {
        let (log, replayed) = LeaseLog::open(&dir, SMALL).unwrap();
        assert!(replayed.relationships.is_empty());
        let mut first = log.writer().unwrap();
        let mut second = log.writer().unwrap();
        // The older segment (`first`'s) gets the newer record of "pair-a".
        let newer = relationship(2, "pair-a");
        let older = relationship(1, "pair-a");
        second.append_relationship(&older).unwrap();
        first.append_relationship(&newer).unwrap();
        model.relationship(&older);
        model.relationship(&newer);
        for seq in 3..200u64 {
            let writer = if seq % 2 == 0 {
                &mut first
            } else {
                &mut second
            };
            if seq % 5 == 0 {
                let r = relationship(seq, ["pair-a", "pair-b", "pair-c"][(seq % 3) as usize]);
                writer.append_relationship(&r).unwrap();
                model.relationship(&r);
            } else {
                let b = binding(seq, (seq % 20) as u8);
                writer.append(&b.as_ref()).unwrap();
                model.binding(&b);
            }
        }
        assert!(log.sealed_bytes() > 0, "the writers rolled");
        drop((first, second));
        let table: Vec<Binding> = model.bindings.values().cloned().collect();
        log.write_snapshot(table.iter().map(Binding::as_ref))
            .unwrap();
        assert_eq!(
            log_files(&dir).len(),
            1,
            "the snapshot replaced every segment"
        );
        let in_snapshot = model.bindings.len() + model.relationships.len();
        // After the snapshot: a newer record of one name, an older (stale) one of another.
        let mut third = log.writer().unwrap();
        let fresh = relationship(500, "pair-b");
        let stale = relationship(4, "pair-c");
        third.append_relationship(&fresh).unwrap();
        third.append_relationship(&stale).unwrap();
        model.relationship(&fresh);
        model.relationship(&stale);
        records = in_snapshot as u64 + 2;
        third.sync().unwrap();
    }
    let (_log, replayed) = LeaseLog::open(&dir, SMALL).unwrap();
    assert_eq!(replayed.report.snapshots, 1);
    assert_eq!(Model::of(&replayed), model);
    assert_eq!(model.relationships.len(), 3);
    assert_eq!(model.relationships[&b"pair-b"[..]].seq, 500);
    assert!(replayed.bindings.iter().all(|b| !b.ip.is_unspecified()));
    assert_eq!(replayed.report.records, records);
    assert_eq!(replayed.report.max_seq, 500);
    assert_eq!(Model::of(&verify(&dir).unwrap()), model);
}

/// Opens every crash image and checks it replays to its expected model, read-only and after
/// `open`'s repairs, with nothing reported as damage.
fn check_images(images: &[(String, PathBuf, Model)]) {
    for (step, image, expected) in images {
        let verified = verify(image).unwrap();
        assert_eq!(&Model::of(&verified), expected, "verify at {step}");
        let (_log, replayed) = LeaseLog::open(image, SMALL).unwrap();
        assert_eq!(&Model::of(&replayed), expected, "open at {step}");
        assert!(replayed.report.corrupt.is_empty(), "{step}");
    }
}

/// Guards that compaction never loses a relationship: the caller hands it bindings only, yet a
/// crash image at each step (snapshot written under its temporary name, renamed, after each
/// deletion) replays to the relationship state of that moment, while a writer keeps appending
/// relationship records during the compaction. Afterwards every sealed segment is gone (the
/// snapshot covers their relationship records), a second compaction replaces the first
/// snapshot, and a compaction right after `open` keeps what replay found.
#[test]
fn compaction_keeps_relationships_at_every_crash_point() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut model = Model::default();
    let mut seq = 0;
    let names = ["east", "west", "north"];
    {
        let (log, _) = LeaseLog::open(&dir, SMALL).unwrap();
        let mut active = log.writer().unwrap();
        {
            let mut other = log.writer().unwrap();
            for i in 0..400u64 {
                seq += 1;
                let writer = if i % 2 == 0 { &mut active } else { &mut other };
                if i % 7 == 0 {
                    let r = relationship(seq, names[(i % 3) as usize]);
                    writer.append_relationship(&r).unwrap();
                    model.relationship(&r);
                } else {
                    let b = binding(seq, (i % 30) as u8);
                    writer.append(&b.as_ref()).unwrap();
                    model.binding(&b);
                }
            }
        }
        assert!(log.compaction_due(), "sealed {} bytes", log.sealed_bytes());
        let active_name = format!("seg-{:016x}.log", active.segment_number().unwrap());
        let sealed_before: Vec<PathBuf> = log_files(&dir)
            .into_iter()
            .filter(|p| !p.ends_with(&active_name))
            .collect();

        for round in 0..2 {
            let table: Vec<Binding> = model.bindings.values().cloned().collect();
            let at_start = model.clone();
            let mut appended = Vec::new();
            let mut images = Vec::new();
            log.write_snapshot_observed(table.iter().map(Binding::as_ref), |step| {
                let name = match step {
                    SnapshotStep::TmpWritten(_) => "tmp-written".to_string(),
                    SnapshotStep::Renamed(_) => "renamed".to_string(),
                    SnapshotStep::Deleted(path) => format!("deleted {}", path.display()),
                };
                let image = tmp.path().join(format!("round-{round}-{}", images.len()));
                copy_dir(&dir, &image);
                let mut expected = at_start.clone();
                for r in &appended {
                    expected.relationship(r);
                }
                images.push((name, image, expected));
                // The failover core goes on recording state changes meanwhile.
                seq += 1;
                let r = relationship(seq, names[(seq % 3) as usize]);
                active.append_relationship(&r).unwrap();
                appended.push(r);
            })
            .unwrap();
            assert!(images.len() >= 3, "{} steps", images.len());
            check_images(&images);
            for r in &appended {
                model.relationship(r);
            }
        }
        let left: Vec<_> = sealed_before.iter().filter(|p| p.exists()).collect();
        assert!(left.is_empty(), "not deleted: {left:?}");
        let snapshots = log_files(&dir)
            .iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("snap-")
            })
            .count();
        assert_eq!(snapshots, 1, "the second snapshot replaced the first");
    }

    // After a restart the log knows the replayed relationships: a compaction fed the bindings
    // alone carries them, and so covers (and deletes) every file they were in.
    let (log, replayed) = LeaseLog::open(&dir, SMALL).unwrap();
    assert_eq!(Model::of(&replayed), model);
    log.write_snapshot(model.bindings.values().map(Binding::as_ref))
        .unwrap();
    assert_eq!(log_files(&dir).len(), 1, "one snapshot left");
    drop(log);
    let (_log, replayed) = LeaseLog::open(&dir, SMALL).unwrap();
    assert_eq!(Model::of(&replayed), model);
}

/// Guards the writer's bounds and its error contract: an empty or too long name is refused
/// with `BadRelationshipName`, nothing is written, and nothing is remembered for a snapshot.
#[test]
fn bad_relationship_name_is_refused_and_not_remembered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = LeaseLog::open(&dir, SMALL).unwrap();
    let mut writer = log.writer().unwrap();
    let long = "n".repeat(record::MAX_RELATIONSHIP_NAME_LEN + 1);
    for (name, name_len) in [("", 0), (long.as_str(), long.len())] {
        let err = writer
            .append_relationship(&relationship(1, name))
            .unwrap_err();
        assert!(
            matches!(err, LogError::BadRelationshipName { name_len: n } if n == name_len),
            "{err}"
        );
    }
    let longest = &long[1..];
    writer
        .append_relationship(&relationship(2, longest))
        .unwrap();
    writer.sync().unwrap();
    drop(writer);
    log.write_snapshot(std::iter::empty()).unwrap();
    drop(log);
    let replayed = verify(&dir).unwrap();
    assert_eq!(replayed.relationships, vec![relationship(2, longest)]);
    assert_eq!(replayed.report.records, 1);
}

/// Writes bindings (odd seq) and relationship records (even seq) alternately with one writer;
/// returns the segment and each record's (offset, length, is a relationship record).
fn mixed_segment(dir: &Path) -> (PathBuf, Vec<(u64, u64, bool)>) {
    let (log, _) = LeaseLog::open(dir, SMALL).unwrap();
    let mut writer = log.writer().unwrap();
    let mut at = HEADER_LEN as u64;
    let mut placed = Vec::new();
    for seq in 1..=10u64 {
        let len = if seq % 2 == 0 {
            let r = relationship(seq, &format!("rel-{seq}"));
            writer.append_relationship(&r).unwrap();
            RecordRef::Relationship(r.as_ref()).encoded_len().unwrap()
        } else {
            let b = binding(seq, seq as u8);
            writer.append(&b.as_ref()).unwrap();
            record::encoded_len(&b.as_ref()).unwrap()
        };
        placed.push((at, len as u64, seq % 2 == 0));
        at += len as u64;
    }
    writer.sync().unwrap();
    let number = writer.segment_number().unwrap();
    (dir.join(format!("seg-{number:016x}.log")), placed)
}

/// The model of `mixed_segment` without the records whose seq is in `without`.
fn mixed_model(without: &[u64]) -> Model {
    let mut model = Model::default();
    for seq in (1..=10u64).filter(|s| !without.contains(s)) {
        if seq % 2 == 0 {
            model.relationship(&relationship(seq, &format!("rel-{seq}")));
        } else {
            model.binding(&binding(seq, seq as u8));
        }
    }
    model
}

/// Guards damage handling for relationship records, the same as for bindings: a flipped bit in
/// one in the middle of a segment is reported at its offset and the records after it are kept;
/// a relationship record torn at any byte at the end of a segment is dropped as a torn tail,
/// repaired by `open`, and never panics or turns into a binding.
#[test]
fn damaged_relationship_records_are_handled_like_any_other() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let (segment, placed) = mixed_segment(&original);
    let name = segment.file_name().unwrap().to_owned();
    assert_eq!(Model::of(&verify(&original).unwrap()), mixed_model(&[]));

    // In the middle: the record of seq 4, every bit of it in turn.
    let (victim_at, victim_len, is_relationship) = placed[3];
    assert!(is_relationship);
    for bit in 0..victim_len * 8 {
        let image = tmp.path().join(format!("flip-{bit}"));
        copy_dir(&original, &image);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(image.join(&name))
            .unwrap();
        let at = victim_at + bit / 8;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ (1 << (bit % 8))], at)
            .unwrap();
        drop(file);
        let verified = verify(&image).unwrap();
        assert_eq!(
            verified.report.corrupt,
            vec![(image.join(&name), victim_at)],
            "bit {bit}"
        );
        assert_eq!(Model::of(&verified), mixed_model(&[4]), "bit {bit}");
        fs::remove_dir_all(&image).unwrap();
    }

    // At the end: the last record (seq 10, a relationship) cut at every byte.
    let (last_at, last_len, is_relationship) = placed[9];
    assert!(is_relationship);
    for cut in last_at + 1..last_at + last_len {
        let image = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&original, &image);
        let seg = image.join(&name);
        let file = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let verified = verify(&image).unwrap();
        assert_eq!(Model::of(&verified), mixed_model(&[10]), "cut {cut}");
        assert_eq!(verified.report.torn_tails.len(), 1, "cut {cut}");
        assert_eq!(verified.report.torn_tails[0].1, last_at);
        {
            let (_log, replayed) = LeaseLog::open(&image, SMALL).unwrap();
            assert_eq!(Model::of(&replayed), mixed_model(&[10]), "cut {cut}");
        }
        let (_log, replayed) = LeaseLog::open(&image, SMALL).unwrap();
        assert!(replayed.report.torn_tails.is_empty(), "repaired ({cut})");
        assert_eq!(Model::of(&replayed), mixed_model(&[10]), "cut {cut}");
        drop(_log);
        fs::remove_dir_all(&image).unwrap();
    }
}

/// Guards the spare segments: a writer rolls to a prepared spare (no new file on the hot
/// path), records in it replay like any other, a crash image with spares left over replays to
/// the same bindings and `open` removes the empty spares, and dropping the log removes its
/// spares.
#[test]
fn writers_roll_to_spare_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = LeaseLog::open(&dir, SMALL).unwrap();
    let mut w = log.writer().unwrap();
    log.prepare_spare_segments().unwrap();
    let spares: Vec<PathBuf> = log_files(&dir)
        .into_iter()
        .filter(|p| fs::metadata(p).unwrap().len() == SMALL.segment_bytes)
        .collect();
    assert_eq!(
        spares.len(),
        SPARE_SEGMENTS + 1,
        "the active one and the spares"
    );
    let first = w.segment_number().unwrap();
    let mut model = Model::default();
    let mut seq = 0;
    while w.segment_number() == Some(first) {
        seq += 1;
        let b = binding(seq, (seq % 200) as u8);
        w.append(&b.as_ref()).unwrap();
        model.binding(&b);
    }
    w.sync().unwrap();
    assert_eq!(
        log_files(&dir).len(),
        SPARE_SEGMENTS + 1,
        "the roll took a spare instead of creating a file"
    );
    assert_eq!(log.shared.spares.lock().len(), SPARE_SEGMENTS - 1);

    // A crash now: the image has the written segments and an empty spare.
    let image = tmp.path().join("image");
    copy_dir(&dir, &image);
    let (relog, replayed) = LeaseLog::open(&image, SMALL).unwrap();
    assert_eq!(Model::of(&replayed).bindings, model.bindings);
    assert_eq!(log_files(&image).len(), 2, "the empty spare is removed");
    drop(relog);

    drop(w);
    drop(log);
    assert_eq!(
        log_files(&dir).len(),
        2,
        "dropping the log removes its spares"
    );
    let (_, replayed) = LeaseLog::open(&dir, SMALL).unwrap();
    assert_eq!(Model::of(&replayed).bindings, model.bindings);
}

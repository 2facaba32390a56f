//! The lease log's two costs that matter: an append on the worker's hot path (ns per record,
//! no sync), and replay at start-up (N records spread over 4 writers' segments).
//!
//! `LEASELOG_BENCH_RECORDS` sets N for replay (default 1 000 000); the target is 10 million
//! records in under 3 s:
//! `LEASELOG_BENCH_RECORDS=10000000 cargo bench -p ringlease --bench leaselog -- replay`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringlease::leaselog::{verify, BindingRef, LeaseLog, LogOptions};
use ringlease::proto::lease::LeaseState;

/// A typical change: a hardware-address client key, no hostname.
fn change(seq: u64, client: &[u8]) -> BindingRef<'_> {
    BindingRef {
        seq,
        ip: Ipv4Addr::from(0x6440_0000 + (seq % 1_000_000) as u32),
        state: LeaseState::Bound,
        flags: 0,
        expires_s: 1_700_000_000 + seq,
        potential_expiry_s: 1_700_000_000 + seq,
        partner_expiry_s: 0,
        cltt_s: 1_699_990_000,
        state_since_s: 1_699_990_000,
        client,
        hostname: b"",
    }
}

const CLIENT: &[u8] = &[1, 1, 0x00, 0x0c, 0x29, 0x3e, 0x53, 0xf7];

fn append(c: &mut Criterion) {
    /// Appends per timed batch; between batches the log is replaced when it grew past
    /// `RECORDS_PER_LOG`, so the benchmark's disk use stays bounded (about 160 MB).
    const BATCH: u64 = 100_000;
    const RECORDS_PER_LOG: u64 = 2_000_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let fresh = || {
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = LeaseLog::open(&dir, LogOptions::default()).unwrap();
        let writer = log.writer().unwrap();
        (log, writer)
    };
    let mut current = Some(fresh());
    let mut in_log = 0;
    let mut seq = 0;
    let mut group = c.benchmark_group("leaselog");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let (_, writer) = current.as_mut().unwrap();
                let start = Instant::now();
                for _ in 0..n {
                    seq += 1;
                    writer.append(black_box(&change(seq, CLIENT))).unwrap();
                }
                total += start.elapsed();
                // Not synced: the benchmark measures the append alone.
                writer.synced();
                left -= n;
                in_log += n;
                if in_log >= RECORDS_PER_LOG {
                    current = None;
                    current = Some(fresh());
                    in_log = 0;
                }
            }
            total
        });
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    let records: u64 = std::env::var("LEASELOG_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // `LEASELOG_BENCH_DIR` keeps the generated log for later runs (it is generated only if
    // the directory has no log yet); otherwise it goes to a temporary directory.
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("LEASELOG_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("log"));
    let generated = verify(&dir).is_ok_and(|r| r.report.records == records);
    if !generated {
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = LeaseLog::open(&dir, LogOptions::default()).unwrap();
        let mut writers: Vec<_> = (0..4).map(|_| log.writer().unwrap()).collect();
        for seq in 1..=records {
            writers[(seq % 4) as usize]
                .append(&change(seq, CLIENT))
                .unwrap();
        }
        for w in &mut writers {
            w.sync().unwrap();
        }
    }
    let mut group = c.benchmark_group("leaselog");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(records));
    group.bench_function(format!("replay {records} records"), |b| {
        b.iter_batched(
            || (),
            |()| {
                let replayed = verify(&dir).unwrap();
                assert_eq!(replayed.report.records, records);
                black_box(replayed)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);

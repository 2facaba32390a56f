//! Per-worker counters and latency histograms. Each worker counts into its own plain struct and
//! publishes it into [`SharedMetrics`] every [`PUBLISH_INTERVAL`]; readers (status, the
//! metrics endpoint, the shutdown summary) merge the published ones. Nothing on the hot path
//! takes a lock.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::proto::wire::dhcp::MessageType;
use crate::proto::wire::DropReason;

/// How often a worker publishes what it counted.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// What every worker published so far, one slot per worker.
pub struct SharedMetrics {
    workers: Vec<Mutex<WorkerMetrics>>,
    started: Instant,
}

impl SharedMetrics {
    pub fn new(workers: usize) -> Self {
        SharedMetrics {
            workers: (0..workers)
                .map(|_| Mutex::new(WorkerMetrics::new()))
                .collect(),
            started: Instant::now(),
        }
    }

    /// Adds what a worker counted since its last publication.
    pub fn publish(&self, worker: usize, delta: &WorkerMetrics) {
        if let Some(slot) = self.workers.get(worker) {
            slot.lock().merge(delta);
        }
    }

    /// One worker's totals.
    pub fn worker(&self, worker: usize) -> Option<WorkerMetrics> {
        self.workers.get(worker).map(|slot| slot.lock().clone())
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// All workers' totals merged.
    pub fn total(&self) -> WorkerMetrics {
        let mut total = WorkerMetrics::new();
        for slot in &self.workers {
            total.merge(&slot.lock());
        }
        total
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Latencies are recorded in microseconds, up to a minute, with 3 significant digits.
const LATENCY_MAX_US: u64 = 60_000_000;

#[derive(Clone)]
pub struct WorkerMetrics {
    pub received: u64,
    /// Indexed by DHCP message type (1..=8); 0 unused.
    pub received_by_type: [u64; 9],
    pub sent_by_type: [u64; 9],
    pub send_failures: u64,
    pub drops: [u64; DropReason::COUNT],
    /// Receive-to-send latency of every reply, microseconds.
    pub latency_us: Histogram<u64>,
    /// Duration of each lease log data sync (one per batch with binding changes), microseconds.
    pub sync_us: Histogram<u64>,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        WorkerMetrics {
            received: 0,
            received_by_type: [0; 9],
            sent_by_type: [0; 9],
            send_failures: 0,
            drops: [0; DropReason::COUNT],
            latency_us: new_latency_histogram(),
            sync_us: new_latency_histogram(),
        }
    }

    /// Back to zero, keeping the histograms' allocations.
    pub fn reset(&mut self) {
        self.received = 0;
        self.received_by_type = [0; 9];
        self.sent_by_type = [0; 9];
        self.send_failures = 0;
        self.drops = [0; DropReason::COUNT];
        self.latency_us.reset();
        self.sync_us.reset();
    }

    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    pub fn count_in(&mut self, t: MessageType) {
        self.received_by_type[t as usize] += 1;
    }

    pub fn count_out(&mut self, t: MessageType) {
        self.sent_by_type[t as usize] += 1;
    }

    /// Records `count` replies that took `latency_us` from receive to send.
    pub fn record_latency(&mut self, latency_us: u64, count: u64) {
        let _ = self
            .latency_us
            .record_n(latency_us.clamp(1, LATENCY_MAX_US), count);
    }

    pub fn record_sync(&mut self, took: std::time::Duration) {
        let us = (took.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        let _ = self.sync_us.record(us);
    }

    pub fn merge(&mut self, other: &WorkerMetrics) {
        self.received += other.received;
        for (a, b) in self
            .received_by_type
            .iter_mut()
            .zip(&other.received_by_type)
        {
            *a += b;
        }
        for (a, b) in self.sent_by_type.iter_mut().zip(&other.sent_by_type) {
            *a += b;
        }
        self.send_failures += other.send_failures;
        for (a, b) in self.drops.iter_mut().zip(&other.drops) {
            *a += b;
        }
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.sync_us.add(&other.sync_us);
    }

    /// Human summary: counts, drops by reason, latency percentiles.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let name = |i: usize| MessageType::from_u8(i as u8).map_or("?", |t| t.name());
        out.push_str(&format!("received {} datagrams\n", self.received));
        for i in 1..9 {
            if self.received_by_type[i] + self.sent_by_type[i] > 0 {
                out.push_str(&format!(
                    "  {:<14} in {:>10}  out {:>10}\n",
                    name(i),
                    self.received_by_type[i],
                    self.sent_by_type[i]
                ));
            }
        }
        for reason in DropReason::ALL {
            let n = self.drops[reason.index()];
            if n > 0 {
                out.push_str(&format!("  dropped {:<26} {n}\n", reason.name()));
            }
        }
        if self.send_failures > 0 {
            out.push_str(&format!("  send failures {}\n", self.send_failures));
        }
        out.push_str(&latency_line("receive-to-send latency", &self.latency_us));
        if !self.sync_us.is_empty() {
            out.push_str(&format!("lease log syncs: {}\n", self.sync_us.len()));
            out.push_str(&latency_line("lease log sync time", &self.sync_us));
        }
        out
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// "label: p50 … p90 … p99 … p99.9 … max … (n samples)", in microseconds.
pub fn latency_line(label: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("{label}: no samples\n");
    }
    format!(
        "{label} (us): p50 {} p90 {} p99 {} p99.9 {} max {} ({} samples)\n",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    )
}

//! The thin I/O shell around the protocol core: sockets, threads, the lease log, signals, the
//! clock.

pub mod clock;
pub mod failover;
pub mod ifaddr;
pub mod journal;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringlease_ring::{
    open_groups, open_io, pin_current_thread, Backend, BackendChoice, GroupConfig, RingParams,
    Steering,
};

use crate::config::{BackendSetting, Config};
use crate::leaselog::{Binding, LeaseLog, LogOptions, RelationshipRecord};
use crate::metrics::{SharedMetrics, WorkerMetrics};
use crate::proto::lease::{Change, Volatile};
use crate::proto::server::{Policy, Server};
use crate::proto::wire::DropReason;
use journal::LogJournal;

/// A running server: its worker threads, the lease log and the stop flag.
pub struct Running {
    pub server: Arc<Server>,
    pub backend: Backend,
    pub metrics: Arc<SharedMetrics>,
    log: Arc<LeaseLog>,
    stop: Arc<AtomicBool>,
    workers: Vec<thread::JoinHandle<()>>,
    failover: Option<failover::Failover>,
}

/// How often expired offers and leases are swept back into the free lists, and the lease log
/// is checked for compaction.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(200);

/// Replays the lease log, opens the sockets and starts the workers. Errors say what to change
/// (privileges, limits, a damaged log).
pub fn start(config: &Config, stop: Arc<AtomicBool>) -> Result<Running, String> {
    let policy = Policy {
        server_id: config.server.server_id,
        offer_hold_s: config.server.offer_hold_s,
        decline_hold_s: config.server.decline_hold_s,
    };
    let gate = config
        .failover
        .as_ref()
        .map(|f| Arc::new(failover::gate_of(f)));
    let server = Arc::new(Server::with_failover(
        policy,
        config.subnets.clone(),
        config.failover.as_ref().map(failover::share_of),
        gate.clone(),
    ));
    let (log, relationships) = replay_lease_log(config, &server)?;
    let log = Arc::new(log);
    let failover = match (&config.failover, gate) {
        (Some(f), Some(gate)) => {
            let persisted = failover::persisted_state(&relationships, &f.endpoint.name);
            let f = &crate::config::FailoverConfig {
                core: failover_core(config)?,
                ..f.clone()
            };
            Some(failover::start(
                f,
                server.clone(),
                &log,
                persisted,
                gate,
                stop.clone(),
            )?)
        }
        _ => None,
    };

    let cores = &worker_cores(config)?;
    let groups = open_groups(&GroupConfig {
        addrs: config.server.listen.clone(),
        workers: cores.len(),
        steering: Steering::ChaddrHash,
        recv_buffer_bytes: config.server.recv_buffer_bytes,
        send_buffer_bytes: config.server.send_buffer_bytes,
    })
    .map_err(|e| format!("cannot open the listen sockets: {e}"))?;
    let choice = match config.server.backend {
        BackendSetting::Auto => BackendChoice::Auto,
        BackendSetting::IoUring => BackendChoice::IoUring,
        BackendSetting::Fallback => BackendChoice::Fallback,
    };
    let ports: Vec<u16> = config.server.listen.iter().map(|a| a.port()).collect();
    let metrics = Arc::new(SharedMetrics::new(cores.len()));
    let mut workers = Vec::with_capacity(cores.len());
    let mut backend = Backend::Fallback;
    for (index, (sockets, core)) in groups.into_iter().zip(cores.iter().copied()).enumerate() {
        let io = open_io(sockets, choice, RingParams::default())
            .map_err(|e| format!("worker {index}: cannot set up datagram I/O: {e}"))?;
        backend = io.backend();
        let writer = log
            .writer()
            .map_err(|e| format!("worker {index}: cannot open a lease log segment: {e}"))?;
        let worker = worker::Worker {
            io,
            server: server.clone(),
            listen_ports: ports.clone(),
            journal: LogJournal::new(writer, failover.as_ref().map(|f| f.feed())),
            durability: config.server.durability,
            stop: stop.clone(),
            index,
            metrics: metrics.clone(),
        };
        let handle = thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !pin_current_thread(core) {
                        tracing::warn!(worker = index, core, "cannot pin worker: no such core");
                    }
                }
                worker.run()
            })
            .map_err(|e| format!("cannot start worker {index}: {e}"))?;
        workers.push(handle);
    }
    Ok(Running {
        server,
        backend,
        metrics,
        log,
        stop,
        workers,
        failover,
    })
}

/// The worker placement: from the tuning profile when the configuration names one (one source
/// of truth for the tuning and the server), else from `workers`/`cores`.
pub fn worker_cores(config: &Config) -> Result<Vec<Option<usize>>, String> {
    let Some((path, iface)) = &config.server.tuning_profile else {
        return Ok(config.server.worker_cores.clone());
    };
    let profile = crate::tune::load_profile(path)?;
    let cores = profile
        .worker_cores(iface.as_deref())
        .map_err(|e| format!("tuning profile {}: {e}", path.display()))?;
    tracing::info!(profile = %path.display(), ?cores, "workers placed by the tuning profile");
    Ok(cores.into_iter().map(Some).collect())
}

/// The failover thread's core: `[failover] core`, else the tuning profile's `cpu.failover`.
fn failover_core(config: &Config) -> Result<Option<usize>, String> {
    let configured = config.failover.as_ref().and_then(|f| f.core);
    let (None, Some((path, iface))) = (configured, &config.server.tuning_profile) else {
        return Ok(configured);
    };
    crate::tune::load_profile(path)?
        .failover_core(iface.as_deref())
        .map_err(|e| format!("tuning profile {}: {e}", path.display()))
}

/// Opens the lease log and puts every binding it holds back into the lease table.
fn replay_lease_log(
    config: &Config,
    server: &Server,
) -> Result<(LeaseLog, Vec<RelationshipRecord>), String> {
    let dir = &config.server.lease_dir;
    let options = LogOptions {
        segment_bytes: config.server.log_segment_bytes,
        compact_at_bytes: config.server.log_compact_bytes,
    };
    let started = Instant::now();
    let (log, replayed) =
        LeaseLog::open(dir, options).map_err(|e| format!("lease log {}: {e}", dir.display()))?;
    let mut outside = 0usize;
    let settings = server.settings();
    for b in &replayed.bindings {
        if !server.leases.restore(&settings.subnets, &change_of(b)) {
            outside += 1;
        }
    }
    server.leases.continue_after(replayed.report.max_seq);
    let report = &replayed.report;
    for (path, offset, bytes) in &report.torn_tails {
        tracing::warn!(
            "lease log: torn tail in {} at offset {offset}: {bytes} bytes dropped (an append cut short by a crash)",
            path.display()
        );
    }
    for (path, offset) in &report.corrupt {
        tracing::error!(
            "lease log: corrupt record in {} at offset {offset} skipped; the records after it were kept",
            path.display()
        );
    }
    if outside > 0 {
        tracing::warn!(
            "lease log: {outside} bindings are outside every configured subnet and were ignored"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        records = report.records,
        bindings = replayed.bindings.len(),
        torn_tails = report.torn_tails.len(),
        corrupt = report.corrupt.len(),
        ms = started.elapsed().as_millis() as u64,
        "lease log replayed"
    );
    Ok((log, replayed.relationships))
}

fn change_of(b: &Binding) -> Change<'_> {
    Change {
        seq: b.seq,
        ip: b.ip,
        state: b.state,
        expires_s: b.expires_s,
        since_s: b.state_since_s,
        client: &b.client,
        potential_expiry_s: b.potential_expiry_s,
        partner_expiry_s: b.partner_expiry_s,
        cltt_s: b.cltt_s,
    }
}

impl Running {
    /// Sweeps expired leases and compacts the lease log until the stop flag is set, then stops
    /// the workers and returns their merged metrics.
    pub fn run_until_stopped(self) -> WorkerMetrics {
        let mut drops = DropReport::default();
        let mut expiries = None;
        while !self.stop.load(Ordering::Relaxed) {
            thread::sleep(HOUSEKEEPING_INTERVAL);
            if let Err(e) = self.log.prepare_spare_segments() {
                // A writer that finds no spare creates its segment and reports the error.
                tracing::debug!("cannot prepare a spare lease log segment: {e}");
            }
            self.expire(&mut expiries);
            if self.log.compaction_due() {
                compact(&self.server, &self.log);
            }
            drops.tick(&self.metrics);
        }
        self.join()
    }

    /// Ends what ran out. With a failover partner each lease end is a record for the partner,
    /// written with this thread's own journal (opened on first use) and synced before it goes.
    fn expire(&self, journal: &mut Option<LogJournal>) {
        let now_s = clock::unix_now_s();
        let Some(failover) = &self.failover else {
            self.server.expire(now_s, &mut Volatile);
            return;
        };
        if journal.is_none() {
            match self.log.writer() {
                Ok(writer) => *journal = Some(LogJournal::new(writer, Some(failover.feed()))),
                Err(e) => {
                    tracing::error!("cannot open a lease log segment for lease expiries: {e}");
                    return;
                }
            }
        }
        let Some(journal) = journal.as_mut() else {
            return;
        };
        let before = journal.appended();
        self.server.expire(now_s, journal);
        if journal.appended() != before {
            match journal.sync_now() {
                Ok(()) => journal.succeeded(),
                Err(e) => journal.failed(&e),
            }
        }
    }

    /// The lease log, for threads that need their own writer (the control interface).
    pub fn log(&self) -> &Arc<LeaseLog> {
        &self.log
    }

    /// The failover relationship's status and commands, if one is configured.
    pub fn failover(&self) -> Option<failover::FailoverControl> {
        self.failover.as_ref().map(|f| f.control.clone())
    }

    /// The stop flag: setting it stops the server.
    pub fn stop_flag(&self) -> &Arc<AtomicBool> {
        &self.stop
    }

    /// Stops the workers and returns their merged metrics.
    pub fn join(self) -> WorkerMetrics {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.workers {
            if handle.join().is_err() {
                tracing::error!("a worker panicked");
            }
        }
        // After the workers: their last durable changes are in the channel by now.
        if let Some(failover) = self.failover {
            failover.join();
        }
        self.metrics.total()
    }
}

/// Per-packet problems are logged as one line per interval with counts by reason, never one
/// line per packet: a flood of bad packets must not become a flood of log lines.
#[derive(Default)]
struct DropReport {
    last: Option<(Instant, [u64; DropReason::COUNT])>,
}

/// How often dropped packets are summarised in the log.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl DropReport {
    fn tick(&mut self, metrics: &SharedMetrics) {
        let due = self
            .last
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= DROP_LOG_INTERVAL);
        if !due {
            return;
        }
        let now = metrics.total().drops;
        if let Some((_, before)) = &self.last {
            let summary: Vec<String> = DropReason::ALL
                .iter()
                .filter_map(|r| {
                    let n = now[r.index()] - before[r.index()];
                    (n > 0).then(|| format!("{}={n}", r.name()))
                })
                .collect();
            if !summary.is_empty() {
                tracing::warn!(
                    "dropped in the last {} s: {}",
                    DROP_LOG_INTERVAL.as_secs(),
                    summary.join(", ")
                );
            }
        }
        self.last = Some((Instant::now(), now));
    }
}

/// Writes the whole lease table into a lease log snapshot while the workers keep serving. All
/// of it runs on a thread of its own at the lowest priority, so a worker on the same core runs
/// first (measured: at normal priority, the table walk alone delayed replies by up to 28 ms;
/// `benches/compaction_pause.sh`). The walk takes each shard's lock for a chunk of addresses at
/// a time; a worker that needs it meanwhile sleeps, which lets the walk run on.
pub fn compact(server: &Server, log: &LeaseLog) {
    let started = Instant::now();
    let written = thread::scope(|scope| {
        scope
            .spawn(|| {
                lower_this_threads_priority();
                let mut bindings = Vec::new();
                server
                    .leases
                    .visit_records(|c| bindings.push(journal::record_of(c).to_owned()));
                log.write_snapshot(bindings.iter().map(Binding::as_ref))
                    .map(|()| bindings.len())
            })
            .join()
    });
    match written {
        Ok(Ok(bindings)) => tracing::info!(
            bindings,
            ms = started.elapsed().as_millis() as u64,
            "lease log compacted"
        ),
        Ok(Err(e)) => tracing::error!("lease log compaction failed: {e}"),
        Err(_) => tracing::error!("lease log compaction panicked"),
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19) and the idle I/O class for the
/// rest of its life: its disk writes then wait behind the workers' syncs where the block
/// scheduler honours I/O priorities (mq-deadline, bfq).
fn lower_this_threads_priority() {
    /// `IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)` and `IOPRIO_WHO_PROCESS` (linux/ioprio.h).
    const IOPRIO_IDLE: libc::c_long = 3 << 13;
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    // SAFETY: gettid, setpriority and ioprio_set take no pointers; with a thread id they
    // change only this thread's nice value and I/O priority on Linux. Failures leave the
    // defaults, which are only slower for the workers.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            libc::c_long::from(tid),
            IOPRIO_IDLE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server places its workers from the same profile `ringlease tune` applies.
    #[test]
    fn workers_follow_the_tuning_profile() {
        let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/lab-2core.toml");
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:67\"]\nserver_id = \"127.0.0.1\"\ntuning_profile = \"{profile}\"\n\
             [[subnet]]\nprefix = \"10.0.0.0/8\"\n"
        );
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(worker_cores(&config).unwrap(), vec![Some(1)]);
        let both = text.replace("tuning_profile", "workers = 2\ntuning_profile");
        assert_eq!(
            Config::from_toml(&both).unwrap_err().key,
            "server.tuning_profile"
        );
    }
}

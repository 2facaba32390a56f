//! The thin I/O shell around the protocol core: sockets, threads, signals, the clock.

pub mod clock;
pub mod ifaddr;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ringlease_ring::{
    open_groups, open_io, pin_current_thread, Backend, BackendChoice, GroupConfig, RingParams,
    Steering,
};

use crate::config::{BackendSetting, Config};
use crate::metrics::WorkerMetrics;
use crate::proto::server::{Policy, Server};

/// A running server: its worker threads and the housekeeping loop's stop flag.
pub struct Running {
    pub server: Arc<Server>,
    pub backend: Backend,
    stop: Arc<AtomicBool>,
    workers: Vec<thread::JoinHandle<WorkerMetrics>>,
}

/// How often expired offers and leases are swept back into the free lists.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);

/// Opens the sockets and starts the workers. Errors say what to change (privileges, limits).
pub fn start(config: &Config, stop: Arc<AtomicBool>) -> Result<Running, String> {
    let policy = Policy {
        server_id: config.server.server_id,
        offer_hold_s: config.server.offer_hold_s,
        decline_hold_s: config.server.decline_hold_s,
    };
    let server = Arc::new(Server::new(policy, config.subnets.clone()));
    let cores = &config.server.worker_cores;
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
    let mut workers = Vec::with_capacity(cores.len());
    let mut backend = Backend::Fallback;
    for (index, (sockets, core)) in groups.into_iter().zip(cores.iter().copied()).enumerate() {
        let io = open_io(sockets, choice, RingParams::default())
            .map_err(|e| format!("worker {index}: cannot set up datagram I/O: {e}"))?;
        backend = io.backend();
        let (server, ports, stop) = (server.clone(), ports.clone(), stop.clone());
        let handle = thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !pin_current_thread(core) {
                        tracing::warn!(worker = index, core, "cannot pin worker: no such core");
                    }
                }
                worker::run(io, server, ports, stop)
            })
            .map_err(|e| format!("cannot start worker {index}: {e}"))?;
        workers.push(handle);
    }
    Ok(Running {
        server,
        backend,
        stop,
        workers,
    })
}

impl Running {
    /// Sweeps expired leases until the stop flag is set, then stops the workers and returns
    /// their merged metrics.
    pub fn run_until_stopped(self) -> WorkerMetrics {
        while !self.stop.load(Ordering::Relaxed) {
            thread::sleep(EXPIRE_INTERVAL.min(Duration::from_millis(200)));
            self.server.expire(clock::unix_now_s());
        }
        self.join()
    }

    /// Stops the workers and returns their merged metrics.
    pub fn join(self) -> WorkerMetrics {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = WorkerMetrics::new();
        for handle in self.workers {
            match handle.join() {
                Ok(m) => total.merge(&m),
                Err(_) => tracing::error!("a worker panicked"),
            }
        }
        total
    }
}

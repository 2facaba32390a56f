//! Operating a running server: the control socket behind `ringlease ctl`, and the Prometheus
//! metrics endpoint.
//!
//! Both run on "housekeeping" threads of their own (one each), never on a DHCP worker core:
//! when the workers are pinned and a core is left over, these threads are pinned to the first
//! free core; otherwise (workers unpinned, or every core taken) they are left to the
//! scheduler. The HTTP server's own threads are started from the pinned thread and inherit its
//! affinity.
//!
//! # The control protocol
//!
//! A `SOCK_STREAM` Unix socket, by default `/run/ringlease/control.sock` (`[control] socket =
//! "…"` in the configuration, `ringlease ctl --socket PATH …` on the client side). The socket
//! file has mode 0600: only its owner (the server's user) and root may connect. Its directory
//! is created (mode 0755) if missing; a stale socket file is replaced, but the server refuses
//! to start if another server answers on it.
//!
//! Newline-delimited JSON: one request per line, one response line per request, in order;
//! several requests per connection are allowed. A request line is at most 64 KiB (a longer one
//! is answered with an error and the connection is closed); at most 16 connections are served
//! at once (the 17th gets an error line and is closed); a connection idle for 5 minutes is
//! closed.
//!
//! Every response is either `{"ok":true,"result":{…}}` or `{"ok":false,"error":"…"}`.
//! Malformed JSON and unknown commands get an error response; the connection stays usable.
//!
//! | request | result |
//! |---|---|
//! | `{"cmd":"status"}` | version, uptime, backend, per-worker counters and rates, totals by message type, drops by reason, latency percentiles and buckets, lease counts per subnet, lease log size, `"failover"`: null when not configured, else a list with one object per relationship (state, since, what it allows, link, partner state, queue depth, outstanding BNDUPDs, counters, replication lag) |
//! | `{"cmd":"lease","ip":"10.0.0.5"}` | `{"leases":[lease]}`: the address's record (`"state":"free"` if never used) |
//! | `{"cmd":"lease","hw":"02:00:00:00:00:01"}` | `{"leases":[…]}`: what the client with that Ethernet address holds now, in every subnet (also found when it identifies itself by client identifier `01:` + hardware address) |
//! | `{"cmd":"lease","client_id":"01:02:03"}` | `{"leases":[…]}`: what the client with that client identifier (option 61, hex) holds now |
//! | `{"cmd":"release","ip":"10.0.0.5"}` | `{"released":"10.0.0.5","client":"hw 02:…"}`: the lease or offer on that address is ended, recorded in the lease log and synced before the answer |
//! | `{"cmd":"partner-down"}` | puts the relationship in PARTNER-DOWN (operator's word that the partner is down); error if none is configured or the state does not allow it |
//! | `{"cmd":"reload"}` | re-reads the configuration file. `{"changed":false,"message":"no changes"}` if it matches what runs; `{"changed":true,"applied":["subnet[0].lease_time",…],"message":"applied: …"}` once the live settings (subnet options and lease times, `offer_hold`, `decline_hold`) are swapped in; an error naming every key that needs a restart (`subnet[0].pools: restart needed; nothing was changed`), with nothing applied, otherwise |
//!
//! A lease is `{"ip","subnet","state","expires_s","expires_in_s","client","in_pool",
//! "reserved_for"}`; `state` is one of `free` (never used), `offered`, `bound`, `declined`,
//! `released`, `expired`; `expires_s` is Unix seconds (when the state ends, or ended);
//! `client` is `"hw 02:00:…"` or `"client-id 01:…"` or null.
//!
//! The status result:
//!
//! ```json
//! {"version":"0.1.0","uptime_s":12.5,"backend":"io_uring","failover":null,
//!  "workers":[{"worker":0,"received":10,"sent":10,"dropped":0,"send_failures":0,
//!              "rx_per_s":1.0,"tx_per_s":1.0,"drops_per_s":0.0,"drops":{}}],
//!  "total":{"received":10,"sent":10,"dropped":0,"send_failures":0,
//!           "received_by_type":{"DHCPDISCOVER":5,…},"sent_by_type":{"DHCPOFFER":5,…},
//!           "drops":{"truncated":0,…},
//!           "latency_us":{"count":10,"p50":40,"p90":60,"p99":90,"p999":95,"max":97,
//!                         "buckets":[{"le_us":50,"count":7},…,{"le_us":null,"count":0}]},
//!           "lease_log_sync_us":{…}},
//!  "subnets":[{"subnet":"10.0.0.0/16","pool_size":65000,"bound":5,"offered":0,"declined":0,
//!              "free":64995,"utilisation":0.0001}],   // with failover also "free_ours",
//!                                                     // "free_partner": the pool balance
//!  "lease_log":{"dir":"/var/lib/ringlease","disk_bytes":67108864}}
//! ```
//!
//! Rates are over the last second, sampled by the server; counters are totals since start.
//! Latency `buckets` are not cumulative: `count` is the number of samples above the previous
//! bound up to `le_us` (`null`: above the last bound).

mod client;
mod handlers;
mod http;
mod server;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ringlease_ring::Backend;

use crate::config::Config;
use crate::leaselog::LeaseLog;
use crate::metrics::SharedMetrics;
use crate::proto::lease::LeaseCounts;
use crate::proto::server::Server;

pub use client::{ctl_main, ctl_with, render_lease, render_status, render_top, Client, TopState};
pub use handlers::{config_differences, ConfigDifferences};
pub use http::render_metrics;

/// Longest request line accepted on the control socket.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Control connections served at once; more are refused with an error line.
pub const MAX_CONNECTIONS: usize = 16;
/// A control connection without any traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long lease counts (a walk of the lease table) are reused by the metrics endpoint.
pub const COUNTS_MAX_AGE: Duration = Duration::from_secs(5);
/// Upper bounds of the latency buckets, microseconds (status and the Prometheus histograms).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// How often the stop flags are looked at by the control and HTTP threads.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The control socket and metrics threads. Dropping it stops both threads and removes the
/// socket file.
pub struct ControlHandle {
    stop: Arc<AtomicBool>,
    control: Option<thread::JoinHandle<()>>,
    http: Option<thread::JoinHandle<()>>,
    socket: server::SocketFile,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl ControlHandle {
    /// Where the control socket is.
    pub fn socket_path(&self) -> &std::path::Path {
        self.socket.path()
    }

    /// The address the metrics endpoint listens on (the bound one: a configured port 0 becomes
    /// the port the kernel chose), if it is on.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in [self.control.take(), self.http.take()]
            .into_iter()
            .flatten()
        {
            if handle.join().is_err() {
                tracing::error!("a control thread panicked");
            }
        }
        self.socket.remove();
    }
}

/// Starts the control socket server (one thread) and, if configured, the metrics HTTP server
/// (one thread).
///
/// Both threads are unpinned "housekeeping" threads: never on a worker core. If `worker_cores`
/// (the cores pinned by workers, may be empty) leaves a free core, they are pinned there;
/// otherwise they are left unpinned. `config_path` is the file `reload` re-reads.
pub fn start(
    running: &crate::shell::Running,
    config: &Config,
    config_path: Option<PathBuf>,
    worker_cores: &[usize],
) -> Result<ControlHandle, String> {
    let state = Arc::new(State::new(
        running.server.clone(),
        running.metrics.clone(),
        running.log().clone(),
        running.backend,
        config.clone(),
        config_path,
        running.failover(),
    ));
    start_with(
        state,
        running.stop_flag().clone(),
        &config.operations,
        worker_cores,
    )
}

/// [`start`] from the parts of a running server.
fn start_with(
    state: Arc<State>,
    server_stop: Arc<AtomicBool>,
    operations: &crate::config::OperationsConfig,
    worker_cores: &[usize],
) -> Result<ControlHandle, String> {
    let core = housekeeping_core(worker_cores);
    let (listener, socket) = server::bind(&operations.control_socket)?;
    let stop = Arc::new(AtomicBool::new(false));

    let mut http = None;
    let mut metrics_addr = None;
    if let Some(addr) = operations.metrics_listen {
        let (handle, bound) =
            http::spawn(state.clone(), addr, stop.clone(), server_stop.clone(), core)?;
        http = Some(handle);
        metrics_addr = Some(bound);
    }
    let control_state = state;
    let control_stop = stop.clone();
    let control = thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            pin(core, "control");
            server::run(listener, &control_state, &control_stop, &server_stop);
        });
    let control = match control {
        Ok(handle) => handle,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            if let Some(handle) = http {
                let _ = handle.join();
            }
            socket.remove();
            return Err(format!("cannot start the control thread: {e}"));
        }
    };
    tracing::info!(
        socket = %socket.path().display(),
        metrics = ?metrics_addr,
        core = ?core,
        "control interface ready"
    );
    Ok(ControlHandle {
        stop,
        control: Some(control),
        http,
        socket,
        metrics_addr,
    })
}

/// The first core this process may use that no worker is pinned to; None when the workers are
/// not pinned (nothing to keep away from) or every core has a worker.
fn housekeeping_core(worker_cores: &[usize]) -> Option<usize> {
    if worker_cores.is_empty() {
        return None;
    }
    ringlease_ring::available_cores()
        .into_iter()
        .find(|c| !worker_cores.contains(c))
}

fn pin(core: Option<usize>, what: &str) {
    if let Some(core) = core {
        if !ringlease_ring::pin_current_thread(core) {
            tracing::warn!(core, "cannot pin the {what} thread; it stays unpinned");
        }
    }
}

/// What the control and metrics threads share: the server's parts, the configuration it runs
/// with, and caches.
pub(crate) struct State {
    pub(crate) server: Arc<Server>,
    pub(crate) metrics: Arc<SharedMetrics>,
    pub(crate) log: Arc<LeaseLog>,
    pub(crate) backend: Backend,
    /// The configuration the server runs with now: as started, then as last reloaded.
    pub(crate) config: Mutex<Config>,
    pub(crate) config_path: Option<PathBuf>,
    counts: Mutex<Option<(Instant, Arc<Vec<SubnetCounts>>)>>,
    pub(crate) rates: Mutex<server::Rates>,
    /// The control thread's lease log writer for `release`, opened on first use.
    pub(crate) journal: Mutex<Option<crate::shell::journal::LogJournal>>,
    /// The failover relationship, if one is configured.
    pub(crate) failover: Option<crate::shell::failover::FailoverControl>,
}

/// Lease counts of one subnet.
#[derive(Clone, Debug)]
pub(crate) struct SubnetCounts {
    /// `10.0.0.0/16`.
    pub(crate) subnet: String,
    pub(crate) counts: LeaseCounts,
}

impl State {
    pub(crate) fn new(
        server: Arc<Server>,
        metrics: Arc<SharedMetrics>,
        log: Arc<LeaseLog>,
        backend: Backend,
        config: Config,
        config_path: Option<PathBuf>,
        failover: Option<crate::shell::failover::FailoverControl>,
    ) -> State {
        let workers = metrics.workers();
        State {
            server,
            metrics,
            log,
            backend,
            config: Mutex::new(config),
            config_path,
            counts: Mutex::new(None),
            rates: Mutex::new(server::Rates::new(workers)),
            journal: Mutex::new(None),
            failover,
        }
    }

    /// Lease counts of every subnet, at most `max_age` old (counting walks the lease table).
    pub(crate) fn lease_counts(&self, max_age: Duration) -> Arc<Vec<SubnetCounts>> {
        let mut cache = self.counts.lock();
        if let Some((at, counts)) = cache.as_ref() {
            if at.elapsed() <= max_age {
                return counts.clone();
            }
        }
        let now_s = crate::shell::clock::unix_now_s();
        let settings = self.server.settings();
        let counts: Arc<Vec<SubnetCounts>> = Arc::new(
            settings
                .subnets
                .all()
                .iter()
                .map(|subnet| SubnetCounts {
                    subnet: format!("{}/{}", subnet.network, subnet.prefix_len),
                    counts: self.server.leases.counts(subnet, now_s),
                })
                .collect(),
        );
        *cache = Some((Instant::now(), counts.clone()));
        counts
    }
}

/// `ringlease ctl`: talks to a running server over its control socket.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The server's control socket (`[control] socket` in its configuration).
    #[arg(long, default_value = crate::config::DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CtlCommand {
    /// Version, uptime, per-worker rates, drops by reason, latency, lease counts, failover.
    Status {
        /// Print the server's JSON answer instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the lease on an address, or what a client holds.
    Lease {
        /// The address.
        #[arg(long, conflicts_with_all = ["hw", "client_id"])]
        ip: Option<Ipv4Addr>,
        /// The client's Ethernet address, like 02:00:00:00:00:01.
        #[arg(long, conflicts_with = "client_id")]
        hw: Option<String>,
        /// The client's identifier (option 61) in hex, like 01:02:00:00:00:00:01.
        #[arg(long)]
        client_id: Option<String>,
    },
    /// End the lease or offer on an address, whoever holds it.
    Release {
        #[arg(long)]
        ip: Ipv4Addr,
    },
    /// Declare the failover partner down (needs a failover relationship).
    PartnerDown,
    /// Re-read the configuration file: apply subnet options, lease times and holds live, or name
    /// what needs a restart (then nothing is applied).
    Reload,
    /// A live view, redrawn every second: rates, drops, latency, failover.
    Top {
        /// Stop after this many screens (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u32>,
    },
}

#[cfg(test)]
mod tests;

//! The failover core: one thread per relationship that owns the TCP connection to the partner,
//! drives the sans-IO [`Endpoint`] and its timers, stores what the partner sends in the lease
//! table and the lease log, and forwards the workers' durable lease changes to the partner.
//!
//! # From the workers to the partner
//!
//! A worker hands each lease change to this thread only after the change is durable (its sync
//! group completed), through a bounded crossbeam channel ([`ReplicaFeed`]). A worker never
//! blocks on it: when the channel is full the change is not queued and an overflow flag is set
//! instead; this thread then re-queues **every** binding of the lease table (the endpoint
//! coalesces by address), so nothing is lost, only sent again.
//!
//! # Durability before answers
//!
//! Everything the endpoint asks to store (a partner's binding, an acknowledged partner
//! expiry, a state change) is appended to this thread's own lease log writer; the messages the
//! endpoint produced meanwhile are held back until one data sync of the log completes (one
//! sync per burst of received messages), so a BNDACK never leaves before the binding it
//! acknowledges is on disk (draft §7.1.4) and a STATE never before the state is (draft §9.2).
//! If the log cannot be written, the held messages are dropped and the connection is closed:
//! the partner re-sends its updates after the reconnect.
//!
//! # Connections
//!
//! Both roles listen on `local`; only the primary connects, binding its socket to `local`'s
//! address (ISC matches inbound connections by source address). A connection from any other
//! address than the partner's, or a second one while one is up, is closed at once.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use socket2::{Domain, Socket, Type};

use super::journal::LogJournal;
use crate::config::FailoverConfig;
use crate::leaselog::{LeaseLog, RelationshipRecord};
use crate::proto::failover::{
    self, Binding, Endpoint, FailoverState, Link, Output, Persisted, Role, ServiceGate,
};
use crate::proto::lease::PoolShare;
use crate::proto::server::Server;
use crate::proto::wire::failover::{deframe, Deframed, MAX_MESSAGE_LEN};

/// Changes a worker may have waiting for this thread before it falls back to a full resync.
const FEED_CAPACITY: usize = 1 << 16;
/// Changes taken off the channel per loop turn, so the connection is served in between.
const FEED_BATCH: usize = 4096;
/// Bytes we buffer for a partner that does not read; past this the connection is closed.
const MAX_WRITE_BUFFER: usize = 8 << 20;
/// How long the thread sleeps in `poll` when nothing is happening: bounds the delay between a
/// worker's change and its BNDUPD.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// A connect attempt that has not completed by then is abandoned (the retry timer tries again).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the status for `ringlease ctl status` and the metrics is refreshed.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the pools are balanced with the partner in NORMAL (and on entering it, and on its
/// POOLREQ): ISC's `min-balance` default.
const REBALANCE_INTERVAL: Duration = Duration::from_secs(60);

/// How long a stopping server waits for its PAUSED or SHUTDOWN to reach the partner and for
/// the partner's answer.
const STOP_LINGER: Duration = Duration::from_secs(1);

/// A durable local change on its way to the failover thread, with when it became durable
/// (for the replication lag).
pub struct Replicated {
    pub binding: Binding,
    pub at: Instant,
}

/// What a worker uses to hand durable changes to the failover thread. Changes are collected
/// per sync group: [`ReplicaFeed::noted`] when appended, [`ReplicaFeed::sync_started`] when a
/// sync covering them begins, [`ReplicaFeed::sync_done`] when it ends.
pub struct ReplicaFeed {
    tx: Sender<Replicated>,
    overflow: Arc<AtomicBool>,
    /// Appended, not yet covered by a sync.
    next: Vec<Binding>,
    /// Covered by the sync in flight.
    waiting: Vec<Binding>,
}

impl ReplicaFeed {
    pub fn noted(&mut self, binding: Binding) {
        self.next.push(binding);
    }

    pub fn sync_started(&mut self) {
        self.waiting.append(&mut self.next);
    }

    /// The changes covered by the completed sync go to the failover thread. Also called when
    /// a sync failed: the table holds those changes in memory either way, and telling the
    /// partner of a binding the client may not have got is the safe side.
    pub fn sync_done(&mut self) {
        let at = Instant::now();
        for binding in self.waiting.drain(..) {
            match self.tx.try_send(Replicated { binding, at }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.overflow.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// An operator command for the failover thread.
pub enum Command {
    /// `ringlease ctl partner-down`; the answer says whether the endpoint accepted it.
    PartnerDown(Sender<Result<(), String>>),
}

/// Replication lag percentiles in milliseconds, from a change being durable here to the
/// partner's BNDACK for it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Lag {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// What `ringlease ctl status` and the metrics show of a relationship.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub name: String,
    pub role: &'static str,
    pub dialect: &'static str,
    pub state: &'static str,
    /// Unix seconds.
    pub state_since: u64,
    /// What this server does for clients in its state.
    pub allowed: &'static str,
    pub link: &'static str,
    pub partner: String,
    pub partner_state: Option<&'static str>,
    pub partner_since: Option<u64>,
    pub mclt: u32,
    pub queued: usize,
    pub outstanding_bndupd: usize,
    pub bndupd_sent: u64,
    pub updates_sent: u64,
    pub bndack_received: u64,
    pub bndupd_received: u64,
    pub updates_applied: u64,
    pub updates_rejected: u64,
    pub full_resyncs: u64,
    pub storage_failures: u64,
    pub replication_lag_ms: Lag,
}

/// What the control interface holds of a relationship: its status and a way to command it.
#[derive(Clone)]
pub struct FailoverControl {
    pub status: Arc<Mutex<Status>>,
    commands: Sender<Command>,
    feed_tx: Sender<Replicated>,
    overflow: Arc<AtomicBool>,
}

impl FailoverControl {
    /// A feed for one writer of lease changes (a worker, the control thread).
    pub fn feed(&self) -> ReplicaFeed {
        ReplicaFeed {
            tx: self.feed_tx.clone(),
            overflow: self.overflow.clone(),
            next: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// `ringlease ctl partner-down`: waits (bounded) for the failover thread's answer.
    pub fn partner_down(&self) -> Result<(), String> {
        let (reply, answer) = channel::bounded(1);
        self.commands
            .send(Command::PartnerDown(reply))
            .map_err(|_| "the failover thread has stopped".to_string())?;
        answer
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "the failover thread did not answer".to_string())?
    }
}

/// A running failover thread.
pub struct Failover {
    pub control: FailoverControl,
    thread: thread::JoinHandle<()>,
}

impl Failover {
    /// A feed for one worker.
    pub fn feed(&self) -> ReplicaFeed {
        self.control.feed()
    }

    /// Waits for the thread after the stop flag was set.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    }
}

fn dialect_name(d: failover::Dialect) -> &'static str {
    match d {
        failover::Dialect::Ringlease => "ringlease",
        failover::Dialect::Isc => "isc",
        failover::Dialect::Microsoft => "microsoft",
    }
}

fn link_name(link: Link) -> &'static str {
    match link {
        Link::Down => "down",
        Link::AwaitConnect | Link::AwaitConnectAck { .. } | Link::AwaitState => "handshake",
        Link::Up => "up",
    }
}

/// The gate the workers consult: starts answering nothing until this thread sets the state.
pub fn gate_of(cfg: &FailoverConfig) -> ServiceGate {
    ServiceGate::new(cfg.endpoint.role, cfg.endpoint.dialect, cfg.split)
}

/// Which free addresses this server allocates from.
pub fn share_of(cfg: &FailoverConfig) -> PoolShare {
    PoolShare {
        // ISC dhcpd and Windows start with every free address the primary's.
        split_fresh: cfg.endpoint.dialect == failover::Dialect::Ringlease,
        ..PoolShare::new(
            cfg.endpoint.role,
            cfg.split,
            cfg.backup_share_percent
                .or(cfg.endpoint.dialect.default_backup_share()),
        )
    }
}

/// The relationship's state as the lease log last recorded it.
pub fn persisted_state(log: &[RelationshipRecord], name: &str) -> Option<Persisted> {
    let record = log.iter().find(|r| &*r.name == name.as_bytes())?;
    Some(Persisted {
        state: FailoverState::from_wire(record.state)?,
        entered_at_s: record.entered_at_s,
        mclt_s: record.mclt_s,
    })
}

/// Starts the failover thread of `cfg`'s relationship.
pub fn start(
    cfg: &FailoverConfig,
    server: Arc<Server>,
    log: &LeaseLog,
    persisted: Option<Persisted>,
    gate: Arc<ServiceGate>,
    stop: Arc<AtomicBool>,
) -> Result<Failover, String> {
    let endpoint = Endpoint::new(cfg.endpoint.clone(), persisted, now_ms())
        .map_err(|e| format!("failover: {e}"))?;
    let listener = TcpListener::bind(cfg.local)
        .map_err(|e| format!("failover: cannot listen on {}: {e}", cfg.local))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("failover: {e}"))?;
    let writer = log
        .writer()
        .map_err(|e| format!("failover: cannot open a lease log segment: {e}"))?;
    let (feed_tx, feed_rx) = channel::bounded(FEED_CAPACITY);
    let (commands, command_rx) = channel::unbounded();
    let overflow = Arc::new(AtomicBool::new(false));
    let status = Arc::new(Mutex::new(status_of(
        &endpoint,
        cfg,
        &Counters::default(),
        &Histogram::new(3).expect("3 significant digits is valid"),
    )));
    let mut core = Core {
        ep: endpoint,
        cfg: cfg.clone(),
        server,
        journal: LogJournal::new(writer, None),
        listener,
        conn: None,
        connecting: None,
        feed: feed_rx,
        overflow: overflow.clone(),
        commands: command_rx,
        gate,
        status: status.clone(),
        enqueued_at: HashMap::new(),
        lag: Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds"),
        counters: Counters::default(),
        unsynced: false,
        storage_failed: false,
        held: Vec::new(),
        close_after: None,
        gate_state: None,
        next_rebalance: Instant::now(),
        stop,
    };
    core.gate_state = Some(core.ep.state());
    core.apply_gate();
    // What the partner had not acknowledged when we stopped goes to it again (draft §5.17).
    let mut unacknowledged = Vec::new();
    core.server
        .leases
        .visit_unacknowledged_bindings(|b| unacknowledged.push(b));
    if !unacknowledged.is_empty() {
        tracing::info!(
            bindings = unacknowledged.len(),
            "failover: bindings the partner has not acknowledged are queued for it"
        );
        core.ep.bindings_changed(now_ms(), unacknowledged);
    }
    let core_cpu = cfg.core;
    let thread = thread::Builder::new()
        .name("failover".into())
        .spawn(move || {
            if let Some(cpu) = core_cpu {
                if !ringlease_ring::pin_current_thread(cpu) {
                    tracing::warn!(core = cpu, "cannot pin the failover thread: no such core");
                }
            }
            core.run();
        })
        .map_err(|e| format!("cannot start the failover thread: {e}"))?;
    Ok(Failover {
        control: FailoverControl {
            status,
            commands,
            feed_tx,
            overflow,
        },
        thread,
    })
}

#[derive(Default)]
struct Counters {
    updates_applied: u64,
    full_resyncs: u64,
    storage_failures: u64,
}

struct Conn {
    stream: TcpStream,
    read: Vec<u8>,
    write: Vec<u8>,
}

struct Core {
    ep: Endpoint,
    cfg: FailoverConfig,
    server: Arc<Server>,
    journal: LogJournal,
    listener: TcpListener,
    conn: Option<Conn>,
    connecting: Option<(Socket, Instant)>,
    feed: Receiver<Replicated>,
    overflow: Arc<AtomicBool>,
    commands: Receiver<Command>,
    gate: Arc<ServiceGate>,
    status: Arc<Mutex<Status>>,
    /// When each address's oldest unacknowledged change became durable.
    enqueued_at: HashMap<Ipv4Addr, Instant>,
    /// Replication lag in microseconds.
    lag: Histogram<u64>,
    counters: Counters,
    /// Appended to the log since the last sync.
    unsynced: bool,
    /// An append failed: what was held must not be sent.
    storage_failed: bool,
    /// Messages waiting for the next sync before they may be written.
    held: Vec<u8>,
    close_after: Option<failover::CloseReason>,
    /// A state the workers should follow once it is durable.
    gate_state: Option<FailoverState>,
    /// When the pools are next balanced with the partner (in NORMAL).
    next_rebalance: Instant,
    stop: Arc<AtomicBool>,
}

impl Core {
    fn run(&mut self) {
        let mut last_publish = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = now_ms();
            let mut busy = self.accept(now);
            busy |= self.poll_connect(now);
            busy |= self.read(now);
            busy |= self.take_changes(now);
            while let Ok(command) = self.commands.try_recv() {
                self.command(now, command);
            }
            if self.ep.poll_timeout().is_some_and(|t| t <= now) {
                self.ep.handle_timeout(now);
                self.drain(now);
            }
            if self.ep.state() == FailoverState::Normal && Instant::now() >= self.next_rebalance {
                self.next_rebalance = Instant::now() + REBALANCE_INTERVAL;
                self.rebalance(now);
                self.drain(now);
            }
            self.flush(now);
            if last_publish.elapsed() >= PUBLISH_INTERVAL {
                last_publish = Instant::now();
                *self.status.lock() = status_of(&self.ep, &self.cfg, &self.counters, &self.lag);
            }
            if !busy {
                self.wait();
            }
        }
        self.announce_stop();
        if let Some(conn) = self.conn.take() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = self.journal.writer().sync();
    }

    /// Tells the partner we stop (`on_stop`: PAUSED or SHUTDOWN) and gives the STATE up to
    /// [`STOP_LINGER`] to go out and be answered. Without a connection the partner finds out
    /// by the lost link (COMMUNICATIONS-INTERRUPTED).
    fn announce_stop(&mut self) {
        let now = now_ms();
        let before = self.ep.partner().map(|p| p.state);
        if !self.ep.announce_stop(now, self.cfg.on_stop) {
            return;
        }
        tracing::info!(
            relationship = %self.cfg.endpoint.name,
            state = self.cfg.on_stop.name(),
            "failover: stopping; told the partner"
        );
        let deadline = Instant::now() + STOP_LINGER;
        while self.conn.is_some() && Instant::now() < deadline {
            let now = now_ms();
            self.read(now);
            self.drain(now);
            self.flush(now);
            if let Some(p) = self
                .ep
                .partner()
                .map(|p| p.state)
                .filter(|&p| Some(p) != before)
            {
                tracing::info!(
                    relationship = %self.cfg.endpoint.name,
                    partner = p.name(),
                    "failover: the partner answered our stop"
                );
                break;
            }
            self.wait();
        }
    }

    /// Sleeps until a socket is readable or [`IDLE_POLL`] passes.
    fn wait(&self) {
        let mut fds = Vec::with_capacity(3);
        let mut watch = |fd: i32, events: i16| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        watch(self.listener.as_raw_fd(), libc::POLLIN);
        if let Some(conn) = &self.conn {
            let out = if conn.write.is_empty() {
                0
            } else {
                libc::POLLOUT
            };
            watch(conn.stream.as_raw_fd(), libc::POLLIN | out);
        }
        if let Some((socket, _)) = &self.connecting {
            watch(socket.as_raw_fd(), libc::POLLOUT);
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                IDLE_POLL.as_millis() as i32,
            );
        }
    }

    fn accept(&mut self, now: u64) -> bool {
        let (stream, from) = match self.listener.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) => {
                tracing::warn!("failover: accept failed: {e}");
                return false;
            }
        };
        if from.ip() != *self.cfg.peer.ip() {
            tracing::warn!(%from, "failover: connection from an address that is not the partner's; closed");
            return true;
        }
        if self.conn.is_some() {
            tracing::debug!(%from, "failover: second connection from the partner; closed");
            return true;
        }
        self.attach(now, stream, false);
        true
    }

    fn start_connect(&mut self) {
        if self.conn.is_some()
            || self.connecting.is_some()
            || self.cfg.endpoint.role != Role::Primary
        {
            return;
        }
        let attempt = || -> std::io::Result<Socket> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            socket.set_nonblocking(true)?;
            socket.bind(&SocketAddr::V4(SocketAddrV4::new(*self.cfg.local.ip(), 0)).into())?;
            match socket.connect(&SocketAddr::V4(self.cfg.peer).into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(socket)
        };
        match attempt() {
            Ok(socket) => self.connecting = Some((socket, Instant::now())),
            Err(e) => tracing::debug!(peer = %self.cfg.peer, "failover: connect failed: {e}"),
        }
    }

    fn poll_connect(&mut self, now: u64) -> bool {
        let Some((socket, since)) = &self.connecting else {
            return false;
        };
        match socket.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                tracing::debug!(peer = %self.cfg.peer, "failover: connect failed: {e}");
                self.connecting = None;
                return false;
            }
        }
        if socket.peer_addr().is_err() {
            if since.elapsed() > CONNECT_TIMEOUT {
                tracing::debug!(peer = %self.cfg.peer, "failover: connect timed out");
                self.connecting = None;
            }
            return false;
        }
        let (socket, _) = self.connecting.take().expect("checked above");
        if self.conn.is_some() {
            return false; // the partner's own connection came first
        }
        self.attach(now, socket.into(), true);
        true
    }

    fn attach(&mut self, now: u64, stream: TcpStream, ours: bool) {
        if let Err(e) = stream.set_nonblocking(true).and(stream.set_nodelay(true)) {
            tracing::warn!("failover: cannot set up the connection: {e}");
            return;
        }
        tracing::info!(peer = %self.cfg.peer, initiated_by_us = ours, "failover: connected");
        self.conn = Some(Conn {
            stream,
            read: Vec::with_capacity(64 << 10),
            write: Vec::new(),
        });
        if self.ep.connected(now, ours).is_err() {
            self.conn = None;
            return;
        }
        self.drain(now);
    }

    /// The connection is gone (closed by the partner, an error, or by us).
    fn lose_connection(&mut self, now: u64, why: &str) {
        if self.conn.take().is_some() {
            tracing::info!(peer = %self.cfg.peer, "failover: connection closed: {why}");
            self.held.clear();
            self.close_after = None;
            self.ep.disconnected(now);
            self.drain(now);
        }
    }

    /// Reads what arrived and hands every complete message to the endpoint.
    fn read(&mut self, now: u64) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        let mut chunk = [0u8; 16 << 10];
        let mut got = false;
        let mut closed = None;
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = Some("closed by the partner".to_string());
                    break;
                }
                Ok(n) => {
                    conn.read.extend_from_slice(&chunk[..n]);
                    got = true;
                    if conn.read.len() >= 1 << 20 {
                        break; // process before reading more
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    closed = Some(e.to_string());
                    break;
                }
            }
        }
        if got {
            let mut buf = std::mem::take(&mut conn.read);
            let consumed = self.receive(now, &buf);
            buf.drain(..consumed);
            if let Some(conn) = &mut self.conn {
                conn.read = buf;
            }
        }
        if let Some(why) = closed {
            self.lose_connection(now, &why);
        }
        got
    }

    /// Feeds the complete messages at the front of `buf`; returns the bytes consumed.
    fn receive(&mut self, now: u64, buf: &[u8]) -> usize {
        let mut consumed = 0;
        let settings = self.server.settings();
        while self.close_after.is_none() && self.conn.is_some() {
            match deframe(&buf[consumed..], MAX_MESSAGE_LEN) {
                Ok(Deframed::Message { consumed: n, .. }) => {
                    let frame = &buf[consumed..consumed + n];
                    let view = self.server.leases.view(&settings.subnets, now / 1000);
                    self.ep.receive_frame(now, frame, &view);
                    consumed += n;
                    self.drain(now);
                }
                Ok(Deframed::NeedMore { .. }) => break,
                Err(e) => {
                    self.ep.frame_error(now, e);
                    self.drain(now);
                    consumed = buf.len();
                    break;
                }
            }
        }
        consumed
    }

    /// Takes the workers' durable changes and queues them for the partner.
    fn take_changes(&mut self, now: u64) -> bool {
        let mut batch = Vec::new();
        for r in self.feed.try_iter().take(FEED_BATCH) {
            self.enqueued_at.entry(r.binding.ip).or_insert(r.at);
            batch.push(r.binding);
        }
        let got = !batch.is_empty();
        if got {
            self.ep.bindings_changed(now, batch);
            self.drain(now);
        }
        if self.overflow.swap(false, Ordering::Relaxed) {
            // Changes were not queued: send everything again (coalesced by address).
            tracing::warn!("failover: change queue overflowed; re-sending every binding");
            self.counters.full_resyncs += 1;
            let all = self.all_bindings();
            self.ep.queue_all_bindings(now, all);
            self.drain(now);
            return true;
        }
        got
    }

    /// Gives the partner the free addresses we hold beyond our share; returns how many.
    fn rebalance(&mut self, now: u64) -> u32 {
        let given = {
            let settings = self.server.settings();
            self.server
                .leases
                .rebalance(&settings.subnets, now / 1000, &mut self.journal)
        };
        let count = given.len();
        if count > 0 {
            self.unsynced = true;
            tracing::info!(
                relationship = %self.cfg.endpoint.name,
                addresses = count,
                "failover: pool balance: free addresses given to the partner"
            );
            self.ep.bindings_changed(now, given);
        }
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    fn all_bindings(&self) -> Vec<Binding> {
        let mut all = Vec::new();
        self.server.leases.visit_bindings(|b| all.push(b));
        all
    }

    fn command(&mut self, now: u64, command: Command) {
        match command {
            Command::PartnerDown(reply) => {
                let result = self.ep.set_partner_down(now).map_err(|_| {
                    format!(
                        "PARTNER-DOWN cannot be entered from {}",
                        self.ep.state().name()
                    )
                });
                self.drain(now);
                let _ = reply.send(result);
            }
        }
    }

    /// Acts on everything the endpoint asked for, in order.
    fn drain(&mut self, now: u64) {
        while let Some(output) = self.ep.poll_output() {
            self.act(now, output);
        }
    }

    fn act(&mut self, now: u64, output: Output) {
        let now_s = now / 1000;
        match output {
            Output::Send(bytes) => {
                if self.conn.is_some() {
                    self.held.extend_from_slice(&bytes);
                }
            }
            Output::ApplyBinding(binding) => {
                let settings = self.server.settings();
                match self.server.leases.apply_partner(
                    &settings.subnets,
                    &binding,
                    now_s,
                    &mut self.journal,
                ) {
                    Ok(_) => {
                        self.counters.updates_applied += 1;
                        self.unsynced = true;
                    }
                    Err(_) => self.storage_failed = true,
                }
            }
            Output::PartnerAcked {
                ip,
                status,
                partner_expiry_s,
            } => {
                if let Some(at) = self.enqueued_at.remove(&ip) {
                    let _ = self.lag.record(at.elapsed().as_micros() as u64);
                }
                let settings = self.server.settings();
                match self.server.leases.partner_acked(
                    &settings.subnets,
                    ip,
                    status,
                    partner_expiry_s,
                    &mut self.journal,
                ) {
                    Ok(()) => self.unsynced = true,
                    // Only the MCLT bound of later renewals suffers: they stay shorter.
                    Err(_) => self.counters.storage_failures += 1,
                }
            }
            Output::PartnerRejected { ip, reason } => {
                self.enqueued_at.remove(&ip);
                tracing::warn!(%ip, ?reason, "failover: the partner rejected our update");
            }
            Output::StateChanged {
                from,
                to,
                reason,
                at_ms,
            } => {
                tracing::info!(
                    relationship = %self.cfg.endpoint.name,
                    from = from.name(),
                    to = to.name(),
                    ?reason,
                    "failover: state changed"
                );
                self.gate_state = Some(to);
                if to == FailoverState::Normal {
                    self.next_rebalance = Instant::now();
                }
                if self.ep.is_new() {
                    // Not yet NORMAL with the partner: a restart must start as new again.
                    return;
                }
                let record = RelationshipRecord {
                    seq: self.server.leases.next_seq(),
                    name: self.cfg.endpoint.name.as_bytes().into(),
                    state: to.wire(),
                    entered_at_s: at_ms / 1000,
                    mclt_s: self.ep.mclt_s(),
                };
                match self.journal.writer().append_relationship(&record) {
                    Ok(()) => self.unsynced = true,
                    Err(e) => {
                        self.journal.failed(&e);
                        self.storage_failed = true;
                    }
                }
            }
            Output::CloseConnection { reason } => {
                tracing::warn!(peer = %self.cfg.peer, ?reason, "failover: closing the connection");
                self.close_after = Some(reason);
            }
            Output::OpenConnection => self.start_connect(),
            Output::AllBindingsRequested => {
                let all = self.all_bindings();
                self.ep.queue_all_bindings(now, all);
            }
            Output::PoolRequested { xid } => {
                let given = self.rebalance(now);
                self.ep.answer_pool_request(now, xid, given);
            }
            Output::UpdatesDone => {
                tracing::info!(relationship = %self.cfg.endpoint.name, "failover: partner finished sending its updates");
            }
            Output::TransitionRefused { from, to, partner } => {
                tracing::warn!(
                    from = from.name(),
                    to = to.name(),
                    partner = partner.map(|p| p.name()),
                    "failover: transition not supported yet; connection dropped"
                );
            }
        }
    }

    /// Makes appended records durable, then releases the held messages; closes the
    /// connection when the endpoint asked for it or storage failed.
    fn flush(&mut self, now: u64) {
        if self.unsynced {
            self.unsynced = false;
            match self.journal.writer().sync() {
                Ok(()) => self.journal.succeeded(),
                Err(e) => {
                    self.journal.failed(&e);
                    self.storage_failed = true;
                }
            }
        }
        if self.storage_failed {
            self.storage_failed = false;
            self.counters.storage_failures += 1;
            self.gate_state = None;
            self.lose_connection(now, "the lease log cannot be written");
            return;
        }
        self.apply_gate();
        let Some(conn) = &mut self.conn else {
            self.held.clear();
            return;
        };
        conn.write.append(&mut self.held);
        let mut error = None;
        while !conn.write.is_empty() {
            match conn.stream.write(&conn.write) {
                Ok(n) => {
                    conn.write.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        if conn.write.len() > MAX_WRITE_BUFFER {
            error = Some("the partner does not read".into());
        }
        if let Some(reason) = self.close_after.take() {
            // The last messages (DISCONNECT) get a short chance to leave.
            let _ = conn.stream.set_nonblocking(false);
            let _ = conn
                .stream
                .set_write_timeout(Some(Duration::from_millis(100)));
            let _ = conn.stream.write_all(&conn.write);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            self.conn = None;
            tracing::debug!(?reason, "failover: connection closed by us");
            return;
        }
        if let Some(why) = error {
            self.lose_connection(now, &why);
        }
    }

    /// Tells the workers what the (durable) state allows.
    fn apply_gate(&mut self) {
        if let Some(state) = self.gate_state.take() {
            self.gate
                .set_state(state, self.ep.mclt_s(), self.ep.state_since_s());
        }
    }
}

fn status_of(ep: &Endpoint, cfg: &FailoverConfig, c: &Counters, lag: &Histogram<u64>) -> Status {
    let stats = ep.stats();
    let persisted = ep.persisted();
    let ms = |us: u64| us as f64 / 1000.0;
    Status {
        name: cfg.endpoint.name.clone(),
        role: role_name(cfg.endpoint.role),
        dialect: dialect_name(cfg.endpoint.dialect),
        state: ep.state().name(),
        state_since: persisted.map_or(0, |p| p.entered_at_s),
        allowed: failover::allowed_service(ep.state()),
        link: link_name(ep.link()),
        partner: cfg.peer.to_string(),
        partner_state: ep.partner().map(|p| p.state.name()),
        partner_since: ep.partner().map(|p| p.since_s),
        mclt: ep.mclt_s(),
        queued: ep.queued_updates(),
        outstanding_bndupd: ep.outstanding_bndupds(),
        bndupd_sent: stats.bndupd_sent,
        updates_sent: stats.updates_sent,
        bndack_received: stats.bndack_received,
        bndupd_received: stats.bndupd_received,
        updates_applied: c.updates_applied,
        updates_rejected: stats.updates_rejected,
        full_resyncs: c.full_resyncs,
        storage_failures: c.storage_failures,
        replication_lag_ms: Lag {
            count: lag.len(),
            p50: ms(lag.value_at_quantile(0.5)),
            p99: ms(lag.value_at_quantile(0.99)),
            max: ms(lag.max()),
        },
    }
}

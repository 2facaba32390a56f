//! One worker's loop, with pipelined group commit.
//!
//! Each turn: receive a batch, decide each request (binding changes are appended to this
//! worker's lease log segment as they are decided), send at once the replies that promise
//! nothing durable (OFFER, NAK, the ACK of an INFORM), and queue the replies that grant or
//! extend a lease. Those leave only when a data sync that began after their records were
//! appended has completed. One sync group is in flight at a time, issued through io_uring
//! without waiting: while the disk works, the worker goes on receiving and deciding, and
//! everything decided meanwhile rides on the next sync. Under load, a sync covers many
//! batches; when idle, a lone request pays one sync.

use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlease_ring::{DatagramIo, Received, SendQueue, SyncState};

use super::clock::unix_now_s;
use super::ifaddr::InterfaceAddresses;
use super::journal::LogJournal;
use crate::config::{Durability, ASYNC_SYNC_INTERVAL_MS};
use crate::leaselog::SyncPoint;
use crate::metrics::{SharedMetrics, WorkerMetrics, PUBLISH_INTERVAL};
use crate::proto::server::{Decision, Destination, Server};
use crate::proto::wire::dhcp::{Packet, CLIENT_PORT};
use crate::proto::wire::DropReason;

/// Most datagrams handled per loop turn.
pub const RECV_BATCH: usize = 64;
/// Replies that may wait for one sync group: about 40 ms of a saturated worker, so a slow disk
/// throttles receiving (the socket buffer holds the rest) instead of growing memory.
pub const DURABLE_QUEUE: usize = 4096;
/// How long a worker waits for traffic before looking at its stop flag again.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long a stopping worker waits for its last sync before giving up on those replies.
const STOP_SYNC_WAIT: Duration = Duration::from_secs(5);
/// How often an I/O error is logged again while it lasts.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What one worker owns.
pub struct Worker {
    pub io: Box<dyn DatagramIo>,
    pub server: Arc<Server>,
    /// The port of each listen socket, by socket index: relayed replies go to this port.
    pub listen_ports: Vec<u16>,
    pub journal: LogJournal,
    pub durability: Durability,
    pub stop: Arc<AtomicBool>,
    /// This worker's index in `metrics`.
    pub index: usize,
    pub metrics: Arc<SharedMetrics>,
}

/// Replies ready to send, each with the time its request arrived.
struct Outbox {
    queue: SendQueue,
    received_at: Vec<Instant>,
}

impl Outbox {
    fn new(capacity: usize) -> Self {
        Outbox {
            queue: SendQueue::new(capacity),
            received_at: Vec::with_capacity(capacity),
        }
    }

    fn room(&self) -> usize {
        self.queue.capacity() - self.queue.len()
    }

    /// Sends everything and records each reply's receive-to-send latency.
    fn send(
        &mut self,
        io: &mut dyn DatagramIo,
        metrics: &mut WorkerMetrics,
        errors: &mut ErrorLog,
    ) {
        if self.queue.is_empty() {
            return;
        }
        let replies = self.queue.len() as u64;
        match io.send_batch(&mut self.queue) {
            Ok(report) => metrics.send_failures += report.failed as u64,
            Err(e) => {
                metrics.send_failures += replies;
                errors.log(|| tracing::error!("send failed: {e}"));
            }
        }
        for at in self.received_at.drain(..) {
            metrics.record_latency(at.elapsed().as_micros() as u64, 1);
        }
    }

    /// Throws the replies away: what they promised is not durable.
    fn discard(&mut self, metrics: &mut WorkerMetrics) {
        for _ in 0..self.queue.len() {
            metrics.count_drop(DropReason::StorageUnavailable);
        }
        self.queue.clear();
        self.received_at.clear();
    }
}

/// A sync group in flight: what it covers and when it began.
struct InFlight {
    point: SyncPoint,
    started: Instant,
}

impl Worker {
    /// Runs until the stop flag is set, publishing its metrics as it goes.
    pub fn run(mut self) {
        let mut metrics = WorkerMetrics::new();
        let mut last_publish = Instant::now();
        let mut interfaces = InterfaceAddresses::new();
        let mut errors = ErrorLog::default();
        let mut immediate = Outbox::new(RECV_BATCH);
        // `waiting`: replies covered by the sync in flight; `next`: replies for the next one.
        let mut waiting = Outbox::new(DURABLE_QUEUE);
        let mut next = Outbox::new(DURABLE_QUEUE);
        let mut in_flight: Option<InFlight> = None;
        let mut fds: Vec<RawFd> = Vec::with_capacity(4);
        let mut last_sync = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if last_publish.elapsed() >= PUBLISH_INTERVAL {
                last_publish = Instant::now();
                self.metrics.publish(self.index, &metrics);
                metrics.reset();
            }
            let now_s = unix_now_s();
            let room = next.room().min(RECV_BATCH);
            if room == 0 {
                // The disk is behind: let the socket buffer hold new requests until the sync
                // in flight completes.
                std::thread::sleep(Duration::from_micros(100));
            }
            let (server, ports, journal) = (&self.server, &self.listen_ports, &mut self.journal);
            let durable_replies = self.durability == Durability::Sync;
            // With a sync in flight, the receive returns as soon as it completes.
            let received = self.io.recv_batch(room, IDLE_WAIT, &mut |d: Received<'_>| {
                let appended_before = journal.appended();
                let mut ctx = Handling {
                    server,
                    listen_ports: ports,
                    interfaces: &mut interfaces,
                    journal: &mut *journal,
                    metrics: &mut metrics,
                };
                let Some(reply) = ctx.handle(&d, now_s) else {
                    return;
                };
                let recorded = ctx.journal.appended() != appended_before;
                let outbox = if durable_replies && recorded {
                    &mut next
                } else {
                    &mut immediate
                };
                ctx.queue(reply, &mut outbox.queue);
                outbox
                    .received_at
                    .resize(outbox.queue.len(), Instant::now());
            });
            if let Err(e) = received {
                errors.log(|| tracing::error!("receive failed: {e}"));
            }
            immediate.send(&mut *self.io, &mut metrics, &mut errors);

            if let Some(SyncState::Done(result)) = self.io.sync_state() {
                let done = in_flight.take();
                match (result, done) {
                    (Ok(()), Some(done)) => {
                        self.journal.writer().synced_to(&done.point);
                        self.journal.succeeded();
                        self.journal.sync_ended();
                        metrics.record_sync(done.started.elapsed());
                        waiting.send(&mut *self.io, &mut metrics, &mut errors);
                    }
                    (Err(e), _) => {
                        self.journal.sync_failed(e);
                        self.journal.sync_ended();
                        waiting.discard(&mut metrics);
                    }
                    // Only this loop starts sync groups, and it keeps a point for each.
                    (Ok(()), None) => {}
                }
            }

            let sync_due = match self.durability {
                Durability::Sync => true,
                Durability::Async => {
                    last_sync.elapsed() >= Duration::from_millis(ASYNC_SYNC_INTERVAL_MS)
                }
            };
            if in_flight.is_none() && sync_due {
                fds.clear();
                fds.extend(self.journal.writer().unsynced_fds());
                if fds.is_empty() {
                    // Nothing new on the log: whatever is queued is already durable.
                    next.send(&mut *self.io, &mut metrics, &mut errors);
                } else {
                    let point = self.journal.writer().sync_point();
                    match self.io.start_sync(&fds) {
                        Ok(()) => {
                            self.journal.sync_started();
                            last_sync = Instant::now();
                            in_flight = Some(InFlight {
                                point,
                                started: last_sync,
                            });
                            mem::swap(&mut waiting, &mut next);
                        }
                        Err(e) => {
                            self.journal.sync_failed(e);
                            next.discard(&mut metrics);
                        }
                    }
                }
            }
        }
        self.finish(
            in_flight,
            &mut waiting,
            &mut next,
            &mut metrics,
            &mut errors,
        );
        self.metrics.publish(self.index, &metrics);
    }

    /// On stop: lets the sync in flight complete, makes the rest durable, and sends what may
    /// be sent, so a clean stop loses no reply whose lease was recorded.
    fn finish(
        &mut self,
        in_flight: Option<InFlight>,
        waiting: &mut Outbox,
        next: &mut Outbox,
        metrics: &mut WorkerMetrics,
        errors: &mut ErrorLog,
    ) {
        if in_flight.is_some() {
            let deadline = Instant::now() + STOP_SYNC_WAIT;
            loop {
                match self.io.sync_state() {
                    Some(SyncState::Done(Ok(()))) => {
                        self.journal.sync_ended();
                        break;
                    }
                    Some(SyncState::Done(Err(e))) => {
                        self.journal.sync_ended();
                        self.journal.sync_failed(e);
                        waiting.discard(metrics);
                        break;
                    }
                    _ if Instant::now() >= deadline => {
                        waiting.discard(metrics);
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        match self.journal.sync_now() {
            Ok(()) => {
                waiting.send(&mut *self.io, metrics, errors);
                next.send(&mut *self.io, metrics, errors);
            }
            Err(e) => {
                tracing::error!("lease log: final sync failed: {e}");
                waiting.discard(metrics);
                next.discard(metrics);
            }
        }
    }
}

/// What handling one datagram touches.
struct Handling<'w> {
    server: &'w Server,
    listen_ports: &'w [u16],
    interfaces: &'w mut InterfaceAddresses,
    journal: &'w mut LogJournal,
    metrics: &'w mut WorkerMetrics,
}

/// A decided reply, with the request it answers and where it goes.
struct Outgoing<'p> {
    packet: Packet<'p>,
    reply: crate::proto::server::Reply,
    socket: usize,
    dst: SocketAddrV4,
    ifindex: Option<u32>,
}

impl Handling<'_> {
    /// Parses and decides one datagram; the reply to send, if any.
    fn handle<'p>(&mut self, d: &Received<'p>, now_s: u64) -> Option<Outgoing<'p>> {
        self.metrics.received += 1;
        let packet = match Packet::parse(d.data) {
            Ok(p) => p,
            Err(reason) => {
                self.metrics.count_drop(reason);
                return None;
            }
        };
        self.metrics.count_in(packet.message_type());
        // A broadcast tells us only the interface; a unicast names our address directly.
        let local_addr = if d.dst.is_broadcast() || d.dst.is_unspecified() {
            self.interfaces.address_of(d.ifindex)
        } else {
            d.dst
        };
        let reply = match self
            .server
            .decide(&packet, local_addr, now_s, &mut *self.journal)
        {
            Decision::Reply(reply) => reply,
            Decision::Done => return None,
            Decision::Drop(reason) => {
                self.metrics.count_drop(reason);
                return None;
            }
        };
        let server_port = self.listen_ports.get(d.socket).copied().unwrap_or(67);
        let (dst, ifindex) = match reply.destination {
            Destination::Relay(giaddr) => (SocketAddrV4::new(giaddr, server_port), None),
            Destination::Unicast(ip) => (SocketAddrV4::new(ip, CLIENT_PORT), None),
            Destination::Broadcast => (
                SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
                Some(d.ifindex),
            ),
        };
        Some(Outgoing {
            packet,
            reply,
            socket: d.socket,
            dst,
            ifindex,
        })
    }

    /// Builds the reply into the next slot of `queue`.
    fn queue(&mut self, out: Outgoing<'_>, queue: &mut SendQueue) {
        let server = self.server;
        let mut build_error = None;
        let queued = queue.push(out.socket, out.dst, out.ifindex, |buf| {
            match server.write_reply(&out.packet, &out.reply, buf) {
                Ok(len) => len,
                Err(reason) => {
                    build_error = Some(reason);
                    0
                }
            }
        });
        match (queued, build_error) {
            (_, Some(reason)) => self.metrics.count_drop(reason),
            (true, None) => self.metrics.count_out(out.reply.message_type),
            // Receives are limited to the room left in the queues.
            (false, None) => unreachable!("receive batch larger than the room in the outbox"),
        }
    }
}

/// Logs a recurring error at most once per [`ERROR_LOG_INTERVAL`].
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
}

impl ErrorLog {
    fn log(&mut self, log: impl FnOnce()) {
        if self
            .last
            .is_none_or(|at| at.elapsed() >= ERROR_LOG_INTERVAL)
        {
            self.last = Some(Instant::now());
            log();
        }
    }
}

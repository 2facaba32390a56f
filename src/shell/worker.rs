//! One worker's loop: receive a batch, decide each request (recording binding changes in the
//! lease log), make the batch's records durable with one data sync, then send the replies.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlease_ring::{DatagramIo, Received, SendQueue};

use super::clock::unix_now_s;
use super::ifaddr::InterfaceAddresses;
use super::journal::LogJournal;
use crate::config::{Durability, ASYNC_SYNC_INTERVAL_MS};
use crate::metrics::WorkerMetrics;
use crate::proto::server::{Decision, Destination, Server};
use crate::proto::wire::dhcp::{Packet, CLIENT_PORT};
use crate::proto::wire::DropReason;

/// Most datagrams handled per loop turn: bounds the latency a batch adds and the send queue.
pub const RECV_BATCH: usize = 64;
/// How long a worker waits for traffic before looking at its stop flag again.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);
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
}

impl Worker {
    /// Runs until the stop flag is set; returns the worker's metrics.
    pub fn run(mut self) -> WorkerMetrics {
        let mut metrics = WorkerMetrics::new();
        let mut queue = SendQueue::new(RECV_BATCH);
        let mut interfaces = InterfaceAddresses::new();
        let mut unsynced_fds: Vec<RawFd> = Vec::with_capacity(4);
        let mut last_sync = Instant::now();
        let mut last_error_log: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let now_s = unix_now_s();
            let mut batch_received_at: Option<Instant> = None;
            let (server, ports, journal) = (&self.server, &self.listen_ports, &mut self.journal);
            let received = self
                .io
                .recv_batch(RECV_BATCH, IDLE_WAIT, &mut |d: Received<'_>| {
                    batch_received_at.get_or_insert_with(Instant::now);
                    let mut ctx = Handling {
                        server,
                        listen_ports: ports,
                        interfaces: &mut interfaces,
                        journal: &mut *journal,
                        queue: &mut queue,
                        metrics: &mut metrics,
                    };
                    ctx.handle(&d, now_s);
                });
            if let Err(e) = received {
                log_rate_limited(&mut last_error_log, || {
                    tracing::error!("receive failed: {e}")
                });
                continue;
            }

            let sync_now = match self.durability {
                Durability::Sync => true,
                Durability::Async => {
                    last_sync.elapsed() >= Duration::from_millis(ASYNC_SYNC_INTERVAL_MS)
                }
            };
            if sync_now {
                unsynced_fds.clear();
                unsynced_fds.extend(self.journal.writer().unsynced_fds());
                if !unsynced_fds.is_empty() {
                    last_sync = Instant::now();
                    match sync_all(&mut *self.io, &unsynced_fds) {
                        Ok(()) => {
                            self.journal.writer().synced();
                            self.journal.succeeded();
                            metrics.record_sync(last_sync.elapsed());
                        }
                        Err(e) => {
                            // Not durable, so no reply of this batch may claim a lease.
                            self.journal.failed(&crate::leaselog::LogError::Io {
                                path: "lease log segment".into(),
                                source: e,
                            });
                            if self.durability == Durability::Sync {
                                for _ in 0..queue.len() {
                                    metrics.count_drop(DropReason::StorageUnavailable);
                                }
                                queue.clear();
                            }
                        }
                    }
                }
            }

            if queue.is_empty() {
                continue;
            }
            let replies = queue.len() as u64;
            match self.io.send_batch(&mut queue) {
                Ok(report) => metrics.send_failures += report.failed as u64,
                Err(e) => {
                    metrics.send_failures += replies;
                    log_rate_limited(&mut last_error_log, || tracing::error!("send failed: {e}"));
                }
            }
            if let Some(at) = batch_received_at {
                metrics.record_latency(at.elapsed().as_micros() as u64, replies);
            }
        }
        metrics
    }
}

/// One data sync per fd, through the worker's ring.
fn sync_all(io: &mut dyn DatagramIo, fds: &[RawFd]) -> std::io::Result<()> {
    fds.iter().try_for_each(|&fd| io.sync_data(fd))
}

/// What handling one datagram touches.
struct Handling<'w> {
    server: &'w Server,
    listen_ports: &'w [u16],
    interfaces: &'w mut InterfaceAddresses,
    journal: &'w mut LogJournal,
    queue: &'w mut SendQueue,
    metrics: &'w mut WorkerMetrics,
}

impl Handling<'_> {
    fn handle(&mut self, d: &Received<'_>, now_s: u64) {
        self.metrics.received += 1;
        let packet = match Packet::parse(d.data) {
            Ok(p) => p,
            Err(reason) => return self.metrics.count_drop(reason),
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
            Decision::Done => return,
            Decision::Drop(reason) => return self.metrics.count_drop(reason),
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
        let server = self.server;
        let mut build_error = None;
        let queued = self.queue.push(d.socket, dst, ifindex, |buf| {
            match server.write_reply(&packet, &reply, buf) {
                Ok(len) => len,
                Err(reason) => {
                    build_error = Some(reason);
                    0
                }
            }
        });
        match (queued, build_error) {
            (_, Some(reason)) => self.metrics.count_drop(reason),
            (true, None) => self.metrics.count_out(reply.message_type),
            // The queue holds RECV_BATCH slots and a batch has at most RECV_BATCH datagrams.
            (false, None) => unreachable!("send queue sized for a whole receive batch"),
        }
    }
}

fn log_rate_limited(last: &mut Option<Instant>, log: impl FnOnce()) {
    if last.is_none_or(|at| at.elapsed() >= ERROR_LOG_INTERVAL) {
        *last = Some(Instant::now());
        log();
    }
}

//! One worker's loop: receive a batch, decide each request, build replies, send the batch.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlease_ring::{DatagramIo, Received, SendQueue};

use super::clock::unix_now_s;
use super::ifaddr::InterfaceAddresses;
use crate::metrics::WorkerMetrics;
use crate::proto::server::{Decision, Destination, Server};
use crate::proto::wire::dhcp::{Packet, CLIENT_PORT};

/// Most datagrams handled per loop turn: bounds the latency a batch adds and the send queue.
pub const RECV_BATCH: usize = 64;
/// How long a worker waits for traffic before looking at its stop flag again.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Runs until `stop` is set; returns the worker's metrics.
pub fn run(
    mut io: Box<dyn DatagramIo>,
    server: Arc<Server>,
    listen_ports: Vec<u16>,
    stop: Arc<AtomicBool>,
) -> WorkerMetrics {
    let mut metrics = WorkerMetrics::new();
    let mut queue = SendQueue::new(RECV_BATCH);
    let mut interfaces = InterfaceAddresses::new();
    let mut last_error_log: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now_s = unix_now_s();
        let mut batch_received_at: Option<Instant> = None;
        let result = io.recv_batch(RECV_BATCH, IDLE_WAIT, &mut |d: Received<'_>| {
            batch_received_at.get_or_insert_with(Instant::now);
            handle(
                &d,
                &server,
                &listen_ports,
                &mut interfaces,
                &mut queue,
                &mut metrics,
                now_s,
            );
        });
        if let Err(e) = result {
            log_rate_limited(&mut last_error_log, || tracing::error!("receive failed: {e}"));
            continue;
        }
        if queue.is_empty() {
            continue;
        }
        let replies = queue.len() as u64;
        match io.send_batch(&mut queue) {
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

fn handle(
    d: &Received<'_>,
    server: &Server,
    listen_ports: &[u16],
    interfaces: &mut InterfaceAddresses,
    queue: &mut SendQueue,
    metrics: &mut WorkerMetrics,
    now_s: u64,
) {
    metrics.received += 1;
    let packet = match Packet::parse(d.data) {
        Ok(p) => p,
        Err(reason) => return metrics.count_drop(reason),
    };
    metrics.count_in(packet.message_type());
    // A broadcast tells us only the interface; a unicast names our address directly.
    let local_addr = if d.dst.is_broadcast() || d.dst.is_unspecified() {
        interfaces.address_of(d.ifindex)
    } else {
        d.dst
    };
    let reply = match server.decide(&packet, local_addr, now_s) {
        Decision::Reply(reply) => reply,
        Decision::Done => return,
        Decision::Drop(reason) => return metrics.count_drop(reason),
    };
    let server_port = listen_ports.get(d.socket).copied().unwrap_or(67);
    let (dst, ifindex) = match reply.destination {
        Destination::Relay(giaddr) => (SocketAddrV4::new(giaddr, server_port), None),
        Destination::Unicast(ip) => (SocketAddrV4::new(ip, CLIENT_PORT), None),
        Destination::Broadcast => (
            SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            Some(d.ifindex),
        ),
    };
    let mut build_error = None;
    let queued = queue.push(d.socket, dst, ifindex, |buf| {
        match server.write_reply(&packet, &reply, buf) {
            Ok(len) => len,
            Err(reason) => {
                build_error = Some(reason);
                0
            }
        }
    });
    match (queued, build_error) {
        (_, Some(reason)) => metrics.count_drop(reason),
        (true, None) => metrics.count_out(reply.message_type),
        // The queue holds RECV_BATCH slots and a batch has at most RECV_BATCH datagrams.
        (false, None) => unreachable!("send queue sized for a whole receive batch"),
    }
}

fn log_rate_limited(last: &mut Option<Instant>, log: impl FnOnce()) {
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
        *last = Some(Instant::now());
        log();
    }
}

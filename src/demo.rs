//! `ringlease demo`: the server with its embedded configuration, and a small built-in relay-agent
//! client driving DORA exchanges at it over loopback for a few seconds.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::config::{Config, DEMO_CONFIG};
use crate::metrics::latency_line;
use crate::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use crate::proto::wire::options::code;
use crate::shell;

/// Where the demo's relay agent lives: another loopback address, same port as the server.
const RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Exchanges in flight at once.
const WINDOW: usize = 256;
/// A request unanswered for this long is sent again, at most `MAX_TRIES` times.
const RETRANSMIT_AFTER: Duration = Duration::from_millis(500);
const MAX_TRIES: u8 = 4;
const RETRANSMIT_SCAN: Duration = Duration::from_millis(10);

pub struct DemoOptions {
    pub clients: u32,
    pub duration: Duration,
}

#[derive(Clone, Copy)]
enum Phase {
    Idle,
    Discovering,
    Requesting { ip: Ipv4Addr, server_id: Ipv4Addr },
    Bound,
    Failed,
}

#[derive(Clone, Copy)]
struct Client {
    phase: Phase,
    started: Option<Instant>,
    sent_at: Option<Instant>,
    tries: u8,
}

pub fn run(options: DemoOptions) -> Result<(), String> {
    let mut config = Config::from_toml(DEMO_CONFIG).map_err(|e| format!("demo config: {e}"))?;
    // A fresh lease log per run, removed afterwards: the demo leaves nothing behind.
    let lease_dir = std::env::temp_dir().join(format!("ringlease-demo-{}", std::process::id()));
    config.server.lease_dir = lease_dir.clone();
    let result = run_with(&config, options);
    let _ = std::fs::remove_dir_all(&lease_dir);
    result
}

fn run_with(config: &Config, options: DemoOptions) -> Result<(), String> {
    let server_addr = config.server.listen[0];
    let stop = Arc::new(AtomicBool::new(false));
    let running = shell::start(config, stop)?;
    println!(
        "ringlease demo: server on {server_addr} ({} backend, durability {:?}), {} clients through a relay at {RELAY_ADDR}",
        running.backend.name(),
        config.server.durability,
        options.clients
    );

    let relay = SocketAddrV4::new(RELAY_ADDR, server_addr.port());
    let socket = relay_socket(relay).map_err(|e| format!("demo relay socket {relay}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .map_err(|e| e.to_string())?;
    let outcome = drive(&socket, server_addr, &options);
    let server_metrics = running.join();
    let report = outcome?;
    println!("{report}");
    println!("server side:\n{}", server_metrics.summary());
    Ok(())
}

/// A UDP socket with room for a whole window of replies (loopback datagrams cost ~2 KiB of
/// buffer each, more than the default buffer holds for a window).
fn relay_socket(addr: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.set_recv_buffer_size(WINDOW * 4096)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn drive(
    socket: &UdpSocket,
    server: SocketAddrV4,
    options: &DemoOptions,
) -> Result<String, String> {
    let mut clients = vec![
        Client {
            phase: Phase::Idle,
            started: None,
            sent_at: None,
            tries: 0
        };
        options.clients as usize
    ];
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut next_idle, mut in_flight, mut bound, mut failed, mut retransmits) =
        (0usize, 0, 0, 0, 0u64);
    let mut buf = [0u8; 1500];
    let started = Instant::now();
    let mut last_scan = started;
    let deadline = started + options.duration;
    while bound + failed < clients.len() && Instant::now() < deadline {
        while in_flight < WINDOW && next_idle < clients.len() {
            let c = &mut clients[next_idle];
            c.phase = Phase::Discovering;
            c.started = Some(Instant::now());
            send(socket, server, next_idle as u32, c, &mut buf)?;
            next_idle += 1;
            in_flight += 1;
        }
        match socket.recv(&mut buf) {
            Ok(len) => {
                let Ok(reply) = Packet::parse(&buf[..len]) else {
                    continue;
                };
                let index = reply.xid() as usize;
                let Some(c) = clients.get_mut(index) else {
                    continue;
                };
                match (c.phase, reply.message_type()) {
                    (Phase::Discovering, MessageType::Offer) => {
                        let server_id = reply.server_id().unwrap_or(Ipv4Addr::UNSPECIFIED);
                        c.phase = Phase::Requesting {
                            ip: reply.yiaddr(),
                            server_id,
                        };
                        c.tries = 0;
                        send(socket, server, index as u32, c, &mut buf)?;
                    }
                    (Phase::Requesting { .. }, MessageType::Ack) => {
                        c.phase = Phase::Bound;
                        let elapsed = c.started.map_or(0, |s| s.elapsed().as_micros() as u64);
                        let _ = latency_us.record(elapsed.max(1));
                        bound += 1;
                        in_flight -= 1;
                    }
                    (Phase::Requesting { .. }, MessageType::Nak) => {
                        c.phase = Phase::Failed;
                        failed += 1;
                        in_flight -= 1;
                    }
                    _ => {}
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("demo receive: {e}")),
        }
        // Retransmit what waited too long (looked at every few milliseconds, not per packet).
        if last_scan.elapsed() < RETRANSMIT_SCAN {
            continue;
        }
        last_scan = Instant::now();
        for (index, c) in clients.iter_mut().enumerate().take(next_idle) {
            let waiting = matches!(c.phase, Phase::Discovering | Phase::Requesting { .. });
            if waiting && c.sent_at.is_some_and(|t| t.elapsed() >= RETRANSMIT_AFTER) {
                if c.tries >= MAX_TRIES {
                    c.phase = Phase::Failed;
                    failed += 1;
                    in_flight -= 1;
                } else {
                    retransmits += 1;
                    send(socket, server, index as u32, c, &mut buf)?;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "client side: {bound} leases bound, {failed} failed, {retransmits} retransmissions in {secs:.2} s: {:.0} DORA exchanges/s\n{}",
        bound as f64 / secs,
        latency_line("DISCOVER-to-ACK latency", &latency_us).trim_end()
    ))
}

/// Sends the message the client's phase calls for, as a relay agent would forward it.
fn send(
    socket: &UdpSocket,
    server: SocketAddrV4,
    index: u32,
    c: &mut Client,
    buf: &mut [u8; 1500],
) -> Result<(), String> {
    let chaddr = [
        0x02,
        0xde,
        (index >> 24) as u8,
        (index >> 16) as u8,
        (index >> 8) as u8,
        index as u8,
    ];
    let mut w = PacketWriter::new(buf, 576);
    w.set_op(1);
    w.set_htype(1);
    w.set_chaddr(&chaddr);
    w.set_hops(1);
    w.set_xid(index);
    w.set_giaddr(RELAY_ADDR);
    let pushed = match c.phase {
        Phase::Requesting { ip, server_id } => w
            .push_u8(code::MESSAGE_TYPE, MessageType::Request as u8)
            .and_then(|_| w.push_ip(code::REQUESTED_IP, ip))
            .and_then(|_| w.push_ip(code::SERVER_ID, server_id)),
        _ => w.push_u8(code::MESSAGE_TYPE, MessageType::Discover as u8),
    }
    .and_then(|_| w.push(code::PARAMETER_REQUEST_LIST, &[1, 3, 6, 15, 51, 54]));
    pushed.map_err(|_| "demo request does not fit".to_string())?;
    let len = w.finish();
    c.tries += 1;
    c.sent_at = Some(Instant::now());
    loop {
        match socket.send_to(&buf[..len], server) {
            Ok(_) => return Ok(()),
            // Another thread of this process (the server's io_uring) can interrupt a syscall.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("demo send: {e}")),
        }
    }
}

//! Micro-benchmarks of the server's decisions with the lease table: a DORA of a new client
//! (DISCOVER decide + OFFER build, REQUEST decide + ACK build) and a renewal of a bound one.
//! In-memory journal, so this is the protocol core's cost alone (ns per packet).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringlease::config::Config;
use ringlease::proto::lease::Volatile;
use ringlease::proto::server::{Decision, Policy, Server};
use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::options::code;

const NOW: u64 = 1_700_000_000;
const RELAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

fn server() -> Server {
    let config = Config::from_toml(
        r#"
[server]
listen = ["127.0.0.1:67"]
server_id = "192.0.2.1"
[[subnet]]
prefix = "100.64.0.0/10"
pools = ["100.64.1.0-100.127.255.254"]
routers = ["100.64.0.1"]
dns = ["192.0.2.53", "192.0.2.54"]
domain_name = "isp.example"
"#,
    )
    .unwrap();
    let policy = Policy {
        server_id: config.server.server_id,
        offer_hold_s: config.server.offer_hold_s,
        decline_hold_s: config.server.decline_hold_s,
    };
    Server::new(policy, config.subnets)
}

fn request(
    buf: &mut [u8],
    index: u32,
    msg: MessageType,
    requested: Option<Ipv4Addr>,
    ciaddr: Ipv4Addr,
) -> usize {
    let mut w = PacketWriter::new(buf, 576);
    w.set_op(1);
    w.set_htype(1);
    w.set_chaddr(&[
        2,
        0,
        (index >> 24) as u8,
        (index >> 16) as u8,
        (index >> 8) as u8,
        index as u8,
    ]);
    w.set_xid(index);
    w.set_giaddr(RELAY);
    w.set_ciaddr(ciaddr);
    w.push_u8(code::MESSAGE_TYPE, msg as u8).unwrap();
    if let Some(ip) = requested {
        w.push_ip(code::REQUESTED_IP, ip).unwrap();
        w.push_ip(code::SERVER_ID, Ipv4Addr::new(192, 0, 2, 1))
            .unwrap();
    }
    w.push(
        code::PARAMETER_REQUEST_LIST,
        &[1, 3, 6, 15, 28, 51, 54, 58, 59],
    )
    .unwrap();
    w.push(
        code::RELAY_AGENT_INFO,
        &[1, 6, b'e', b't', b'h', b'0', b'/', b'7'],
    )
    .unwrap();
    w.finish()
}

/// One request through parse, decide and build, as a worker does it.
fn answer(server: &Server, bytes: &[u8], out: &mut [u8]) -> Option<(MessageType, Ipv4Addr)> {
    let packet = Packet::parse(bytes).ok()?;
    let Decision::Reply(reply) = server.decide(&packet, Ipv4Addr::UNSPECIFIED, NOW, &mut Volatile)
    else {
        return None;
    };
    server.write_reply(&packet, &reply, out).ok()?;
    Some((reply.message_type, reply.yiaddr))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(2));
    let server = server();
    let (mut req, mut out) = ([0u8; 600], [0u8; 1500]);
    let mut next = 0u32;
    group.bench_function("dora_new_client", |b| {
        b.iter(|| {
            next += 1;
            let len = request(
                &mut req,
                next,
                MessageType::Discover,
                None,
                Ipv4Addr::UNSPECIFIED,
            );
            let (_, ip) = answer(&server, black_box(&req[..len]), &mut out).unwrap();
            let len = request(
                &mut req,
                next,
                MessageType::Request,
                Some(ip),
                Ipv4Addr::UNSPECIFIED,
            );
            black_box(answer(&server, black_box(&req[..len]), &mut out).unwrap());
        })
    });
    // Renewals of bound clients (bound here, so this runs on its own too).
    let server = self::server();
    let bound: Vec<Ipv4Addr> = (1..=10_000u32)
        .map(|index| {
            let len = request(
                &mut req,
                index,
                MessageType::Discover,
                None,
                Ipv4Addr::UNSPECIFIED,
            );
            let (_, ip) = answer(&server, &req[..len], &mut out).unwrap();
            let len = request(
                &mut req,
                index,
                MessageType::Request,
                Some(ip),
                Ipv4Addr::UNSPECIFIED,
            );
            answer(&server, &req[..len], &mut out).unwrap();
            ip
        })
        .collect();
    let mut renewing = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function("renew_bound_client", |b| {
        b.iter(|| {
            renewing = (renewing + 1) % bound.len();
            let ip = bound[renewing];
            let len = request(
                &mut req,
                renewing as u32 + 1,
                MessageType::Request,
                None,
                ip,
            );
            let answered = answer(&server, black_box(&req[..len]), &mut out);
            assert_eq!(answered, Some((MessageType::Ack, ip)));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Micro-benchmarks of the DHCPv4 codec's hot path: parsing a typical client request and
//! building a typical ACK, both with ~10 options.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::options::code;

/// A relayed REQUEST as a BNG forwards it: 10 options including 82.
fn request() -> Vec<u8> {
    let mut buf = vec![0u8; 576];
    let mut w = PacketWriter::new(&mut buf, 576);
    w.set_op(1);
    w.set_htype(1);
    w.set_chaddr(&[0x00, 0x0c, 0x29, 0x3e, 0x53, 0xf7]);
    w.set_hops(1);
    w.set_xid(0x3903_f326);
    w.set_giaddr(Ipv4Addr::new(100, 64, 0, 1));
    let opts: &[(u8, &[u8])] = &[
        (code::MESSAGE_TYPE, &[3]),
        (code::CLIENT_ID, &[1, 0x00, 0x0c, 0x29, 0x3e, 0x53, 0xf7]),
        (code::REQUESTED_IP, &[100, 64, 3, 17]),
        (code::SERVER_ID, &[100, 64, 255, 1]),
        (code::MAX_MESSAGE_SIZE, &[5, 220]),
        (code::HOSTNAME, b"laptop-42"),
        (code::VENDOR_CLASS_ID, b"udhcp 1.36.1"),
        (
            code::PARAMETER_REQUEST_LIST,
            &[1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42],
        ),
        (code::LEASE_TIME, &[0, 0, 14, 16]),
        (
            code::RELAY_AGENT_INFO,
            &[
                1, 6, b'e', b't', b'h', b'0', b'/', b'7', 2, 6, 0, 0x1b, 0x21, 0xaa, 0xbb, 0xcc,
            ],
        ),
    ];
    for (c, d) in opts {
        w.push(*c, d).expect("room");
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn parse(c: &mut Criterion) {
    let pkt = request();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_request_10_options", |b| {
        b.iter(|| {
            let p = Packet::parse(black_box(&pkt)).expect("valid");
            // What the server reads from every request.
            black_box((
                p.message_type(),
                p.client_id(),
                p.requested_ip(),
                p.server_id(),
                p.relay_agent_info(),
                p.reply_limit(),
            ))
        })
    });

    let req = Packet::parse(&pkt).expect("valid");
    let dns = [
        Ipv4Addr::new(100, 64, 255, 53),
        Ipv4Addr::new(100, 64, 254, 53),
    ];
    let relay = req.relay_agent_info().unwrap_or_default();
    let mut out = vec![0u8; 1500];
    g.bench_function("build_ack_10_options", |b| {
        b.iter(|| {
            let mut w = PacketWriter::reply_to(&mut out, black_box(&req), MessageType::Ack, 576);
            w.set_yiaddr(Ipv4Addr::new(100, 64, 3, 17));
            let pushed = w
                .push_ip(code::SERVER_ID, Ipv4Addr::new(100, 64, 255, 1))
                .and_then(|()| w.push_u32(code::LEASE_TIME, 3600))
                .and_then(|()| w.push_u32(code::RENEWAL_TIME, 1800))
                .and_then(|()| w.push_u32(code::REBINDING_TIME, 3150))
                .and_then(|()| w.push_ip(code::SUBNET_MASK, Ipv4Addr::new(255, 255, 252, 0)))
                .and_then(|()| w.push_ips(code::ROUTERS, &[Ipv4Addr::new(100, 64, 0, 1)]))
                .and_then(|()| w.push_ips(code::DNS_SERVERS, &dns))
                .and_then(|()| w.push(code::DOMAIN_NAME, b"isp.example.net"))
                .and_then(|()| w.push_u16(code::INTERFACE_MTU, 1500))
                .and_then(|()| w.push(code::RELAY_AGENT_INFO, relay));
            black_box(pushed).expect("room");
            black_box(w.finish())
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);

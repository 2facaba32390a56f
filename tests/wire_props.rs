//! Property tests of the DHCPv4 codec: encode/parse round trips, all-or-nothing writes, and
//! "network input never panics" over truncated, mutated and arbitrary datagrams.

use std::net::Ipv4Addr;

use proptest::collection::vec;
use proptest::prelude::*;
use ringlease::proto::wire::dhcp::{
    BuildError, Message, MessageType, Packet, PacketWriter, MIN_PACKET_LEN, MIN_REPLY_LEN,
};

/// Options whose length `Packet::parse` checks, with the lengths it accepts.
const RULED: &[u8] = &[50, 51, 52, 53, 54, 55, 57, 58, 59, 61];

fn free_code() -> impl Strategy<Value = u8> {
    (1u8..=254).prop_filter("checked or reserved code", |c| !RULED.contains(c))
}

/// One option with a length `parse` accepts, at most `max` data bytes (for unchecked codes).
fn option(max: usize) -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        6 => (free_code(), vec(any::<u8>(), 0..=max)),
        1 => (prop_oneof![Just(50u8), Just(51), Just(54), Just(58), Just(59)], vec(any::<u8>(), 4)),
        1 => (Just(57u8), vec(any::<u8>(), 2)),
        1 => (Just(61u8), vec(any::<u8>(), 2..=max.clamp(2, 40))),
        1 => (Just(55u8), vec(any::<u8>(), 1..=max.clamp(1, 40))),
    ]
}

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn area<const N: usize>(zero: bool) -> BoxedStrategy<[u8; N]> {
    if zero {
        Just([0u8; N]).boxed()
    } else {
        vec(any::<u8>(), N)
            .prop_map(|v| {
                let mut a = [0u8; N];
                a.copy_from_slice(&v);
                a
            })
            .boxed()
    }
}

/// A message `parse` accepts: hlen <= 16, one valid option 53 somewhere among `options`.
fn message(max_opts: usize, max_len: usize, zero_names: bool) -> impl Strategy<Value = Message> {
    let header = (
        any::<u8>(),
        any::<u8>(),
        0u8..=16,
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
    );
    let addrs = (ip(), ip(), ip(), ip());
    let names = (
        any::<[u8; 16]>(),
        prop_oneof![Just(true), Just(zero_names)].prop_flat_map(area::<64>),
        prop_oneof![Just(true), Just(zero_names)].prop_flat_map(area::<128>),
    );
    let opts = (
        vec(option(max_len), 0..=max_opts),
        1u8..=8,
        any::<prop::sample::Index>(),
    );
    (header, addrs, names, opts).prop_map(
        |(
            (op, htype, hlen, hops, xid, secs, flags),
            (ciaddr, yiaddr, siaddr, giaddr),
            (chaddr, sname, file),
            (mut options, t, at),
        )| {
            options.insert(at.index(options.len() + 1), (53, vec![t]));
            Message {
                op,
                htype,
                hlen,
                hops,
                xid,
                secs,
                flags,
                ciaddr,
                yiaddr,
                siaddr,
                giaddr,
                chaddr,
                sname,
                file,
                options,
            }
        },
    )
}

/// Calls every accessor, as the server and the fuzz target do, and checks the cheap invariants.
fn walk(p: &Packet<'_>) {
    let _ = (
        p.op(),
        p.htype(),
        p.hops(),
        p.xid(),
        p.secs(),
        p.flags(),
        p.broadcast(),
    );
    let _ = (p.ciaddr(), p.yiaddr(), p.siaddr(), p.giaddr());
    assert_eq!(p.chaddr().len(), usize::from(p.hlen()));
    assert_eq!((p.sname().len(), p.file().len()), (64, 128));
    assert!(p.overload() <= 3);
    assert_eq!(
        MessageType::from_u8(p.message_type() as u8),
        Some(p.message_type())
    );
    for (code, _) in p.options() {
        assert!(code != 0 && code != 255);
    }
    let _ = (
        p.requested_ip(),
        p.server_id(),
        p.client_id(),
        p.max_message_size(),
    );
    let _ = (
        p.lease_time_s(),
        p.parameter_request_list(),
        p.relay_agent_info(),
        p.hostname(),
    );
    assert!((548..=1472).contains(&p.reply_limit()));
    let m = Message::from_packet(p);
    assert!(m.options.iter().all(|(c, _)| *c != 52));
}

/// All instances of each code concatenated, by code (RFC 3396's reading of split options).
fn joined(options: &[(u8, Vec<u8>)]) -> std::collections::BTreeMap<u8, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for (c, d) in options {
        out.entry(*c).or_insert_with(Vec::new).extend_from_slice(d);
    }
    out
}

/// Valid datagrams covering plain, relayed and overloaded layouts, for the sweeps.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = vec![];
    let base = Message {
        op: 1,
        htype: 1,
        hlen: 6,
        hops: 0,
        xid: 0xdead_beef,
        secs: 0,
        flags: 0,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        chaddr: [
            0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        sname: [0; 64],
        file: [0; 128],
        options: vec![
            (53, vec![1]),
            (61, vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            (57, vec![5, 220]),
            (55, vec![1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]),
            (12, b"laptop".to_vec()),
        ],
    };
    let mut relayed = base.clone();
    relayed.hops = 1;
    relayed.giaddr = Ipv4Addr::new(100, 64, 0, 1);
    relayed.options[0].1 = vec![3];
    relayed.options.push((50, vec![100, 64, 0, 77]));
    relayed.options.push((54, vec![100, 64, 255, 1]));
    relayed
        .options
        .push((82, vec![1, 4, b'e', b't', b'h', b'0', 2, 3, 1, 2, 3]));
    for (m, size) in [(&base, 576), (&relayed, 576), (&relayed, 250)] {
        let mut buf = vec![0u8; size];
        let n = m.encode(&mut buf).expect("corpus fits");
        buf.truncate(n);
        out.push(buf);
    }
    assert_eq!(Packet::parse(&out[2]).expect("valid").overload(), 1);
    out
}

#[test]
fn truncation_sweep_never_panics() {
    // Guards the parse contract on every prefix of valid datagrams: Ok or a DropReason, and an
    // Ok view is fully walkable.
    for pkt in corpus() {
        Packet::parse(&pkt).expect("corpus is valid");
        for len in 0..=pkt.len() {
            let res = Packet::parse(&pkt[..len]);
            if len < MIN_PACKET_LEN {
                assert!(res.is_err());
            }
            if let Ok(p) = res {
                walk(&p);
            }
        }
    }
}

#[test]
fn split_long_options_concatenate_back() {
    // Guards RFC 3396 end to end, separately from the exact round trip: data over 255 bytes
    // comes back as several instances whose concatenation is the original.
    let mut m = Message::from_packet(&Packet::parse(&corpus()[0]).expect("valid"));
    m.options.push((43, (0..700u32).map(|i| i as u8).collect()));
    m.options.push((120, vec![7; 256]));
    let mut buf = [0u8; 1500];
    let n = m.encode(&mut buf).expect("fits");
    let back = Message::from_packet(&Packet::parse(&buf[..n]).expect("valid"));
    let sizes: Vec<usize> = back
        .options
        .iter()
        .filter(|o| o.0 == 43)
        .map(|o| o.1.len())
        .collect();
    assert_eq!(sizes, vec![255, 255, 190]);
    assert_eq!(joined(&back.options), joined(&m.options));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_parse_round_trip(m in message(12, 255, false), size in 244usize..=1500) {
        // Guards Message -> wire -> Message being the identity (options <= 255 bytes, so no
        // splitting; 52 never in `options`), and the length rules of `finish`.
        let mut buf = vec![0xAAu8; size];
        match m.encode(&mut buf) {
            Ok(n) => {
                prop_assert!(n <= size && n >= MIN_REPLY_LEN.min(size));
                let p = Packet::parse(&buf[..n]).expect("encoded message parses");
                walk(&p);
                prop_assert_eq!(Message::from_packet(&p), m);
            }
            // Only when the options really need more than every usable area offers.
            Err(BuildError::NoRoom) => {
                let need: usize = m.options.iter().map(|(_, d)| 2 + d.len()).sum();
                let mut room = size - MIN_PACKET_LEN - 4;
                if m.file == [0; 128] { room += 127; }
                if m.sname == [0; 64] { room += 63; }
                // Each area can waste at most one option's worth (< 257 bytes) at its end.
                prop_assert!(need + 3 * 257 > room, "need {} room {}", need, room);
            }
        }
    }

    #[test]
    fn overload_round_trip(m in message(16, 60, true), size in 244usize..=400) {
        // Guards the spill into file/sname under small limits: whatever fits parses back identically.
        let mut buf = vec![0x55u8; size];
        if let Ok(n) = m.encode(&mut buf) {
            let p = Packet::parse(&buf[..n]).expect("encoded message parses");
            walk(&p);
            prop_assert_eq!(Message::from_packet(&p), m);
        }
    }

    #[test]
    fn split_options_round_trip(
        opts in prop::collection::btree_map(free_code(), vec(any::<u8>(), 0..700), 0..4),
    ) {
        // Guards RFC 3396 for arbitrary lengths: concatenated instances equal the data pushed.
        let mut options: Vec<(u8, Vec<u8>)> = vec![(53, vec![5])];
        options.extend(opts);
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, 4096);
        for (c, d) in &options {
            w.push(*c, d).expect("4096 bytes is room for 4 x 700");
        }
        let n = w.finish();
        let p = Packet::parse(&buf[..n]).expect("parses");
        prop_assert!(p.options().all(|(_, d)| d.len() <= 255));
        prop_assert_eq!(joined(&Message::from_packet(&p).options), joined(&options));
    }

    #[test]
    fn failed_push_changes_nothing(
        pushes in vec((free_code(), vec(any::<u8>(), 0..300)), 0..12),
        limit in 244usize..=600,
    ) {
        // Guards the all-or-nothing push: the bytes equal those of a writer given only the
        // pushes that succeeded.
        let mut a = vec![0u8; 600];
        let mut w = PacketWriter::new(&mut a, limit);
        let mut ok = vec![];
        for (c, d) in &pushes {
            if w.push(*c, d).is_ok() {
                ok.push((*c, d));
            }
        }
        let n = w.finish();
        let mut b = vec![0u8; 600];
        let mut w = PacketWriter::new(&mut b, limit);
        for (c, d) in ok {
            w.push(c, d).expect("succeeded before");
        }
        prop_assert_eq!(w.finish(), n);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..700)) {
        // Guards the parse contract on noise.
        if let Ok(p) = Packet::parse(&bytes) {
            walk(&p);
        }
    }

    #[test]
    fn random_options_after_valid_header_never_panic(
        opts in vec(any::<u8>(), 0..400),
        file in vec(any::<u8>(), 128),
        sname in vec(any::<u8>(), 64),
    ) {
        // Guards the TLV walk where noise is likeliest to get deep: a valid header, random areas.
        let mut bytes = corpus()[0][..MIN_PACKET_LEN].to_vec();
        bytes[108..236].copy_from_slice(&file);
        bytes[44..108].copy_from_slice(&sname);
        bytes.extend_from_slice(&opts);
        if let Ok(p) = Packet::parse(&bytes) {
            walk(&p);
        }
    }

    #[test]
    fn mutated_packets_never_panic_and_reencode(
        which in 0usize..3,
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        // Guards the parse contract near valid packets, and that whatever parses re-encodes to
        // the same Message.
        let mut pkt = corpus()[which].clone();
        for (at, v) in edits {
            let i = at.index(pkt.len());
            pkt[i] = v;
        }
        pkt.truncate(MIN_PACKET_LEN + cut.index(pkt.len() - MIN_PACKET_LEN + 1));
        if let Ok(p) = Packet::parse(&pkt) {
            walk(&p);
            let m = Message::from_packet(&p);
            let mut buf = [0u8; 1500];
            if let Ok(n) = m.encode(&mut buf) {
                let again = Packet::parse(&buf[..n]).expect("re-encoded message parses");
                prop_assert_eq!(Message::from_packet(&again), m);
            }
        }
    }
}

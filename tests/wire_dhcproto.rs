//! Differential test: our `Packet::parse` against `dhcproto::v4::Message::decode` on realistic
//! client and relay datagrams and on a few hundred generated ones.
//!
//! dhcproto is a lenient, typed decoder, so the comparison normalises:
//! - options are compared as a map code -> bytes (its `DhcpOptions` is a `BTreeMap`), each of
//!   its typed options re-encoded to bytes with its own encoder;
//! - split instances (RFC 3396) are concatenated on our side, as dhcproto concatenates them;
//! - `sname`/`file` are compared through dhcproto's "up to and including the first NUL" rule.
//!
//! Where the two disagree, the `disagreement_*` tests pin both behaviours and say, against
//! RFC 2131/2132/3396, why ours is the one the server needs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{self, Decodable, Decoder, Encodable, Encoder};
use proptest::collection::vec;
use proptest::prelude::*;
use ringlease::proto::wire::dhcp::{Message, Packet};
use ringlease::proto::wire::DropReason;

/// Raw TLVs of an options area (PAD skipped, stops at END or at a malformed option).
fn tlvs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = vec![];
    while let Some((&c, rest)) = b.split_first() {
        match c {
            0 => b = rest,
            255 => break,
            _ => {
                let Some((&len, rest)) = rest.split_first() else {
                    break;
                };
                let Some((data, rest)) = rest.split_at_checked(usize::from(len)) else {
                    break;
                };
                out.push((c, data.to_vec()));
                b = rest;
            }
        }
    }
    out
}

fn joined<'a>(opts: impl IntoIterator<Item = (u8, &'a [u8])>) -> BTreeMap<u8, Vec<u8>> {
    let mut out: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    for (c, d) in opts {
        out.entry(c).or_default().extend_from_slice(d);
    }
    out
}

/// dhcproto's options, each re-encoded by dhcproto itself, as code -> bytes.
fn their_options(m: &v4::Message) -> BTreeMap<u8, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (code, opt) in m.opts().iter() {
        // dhcproto's encoder writes nothing for an option with empty data (it splits the data
        // into 255-byte chunks and there are none), though its decoder keeps such options.
        out.entry(u8::from(*code)).or_insert_with(Vec::new);
        let mut bytes = vec![];
        opt.encode(&mut Encoder::new(&mut bytes))
            .expect("dhcproto re-encodes its own option");
        for (c, d) in tlvs(&bytes) {
            out.entry(c).or_insert_with(Vec::new).extend_from_slice(&d);
        }
    }
    out
}

/// dhcproto's reading of `sname`/`file`: bytes through the first NUL, None if it is first or absent.
fn nul_field(raw: &[u8]) -> Option<Vec<u8>> {
    match raw.iter().position(|&b| b == 0) {
        Some(0) | None => None,
        Some(n) => Some(raw[..=n].to_vec()),
    }
}

fn theirs(bytes: &[u8]) -> v4::Message {
    v4::Message::decode(&mut Decoder::new(bytes)).expect("dhcproto decodes")
}

/// Parses with both and asserts they agree on every header field and every option. For an
/// overloaded packet, dhcproto's view is compared to our options field alone (see
/// `disagreement_overload`).
fn compare(bytes: &[u8]) {
    let p = Packet::parse(bytes).expect("we accept");
    let t = theirs(bytes);
    assert_eq!(u8::from(t.opcode()), p.op());
    assert_eq!(u8::from(t.htype()), p.htype());
    assert_eq!(t.hlen(), p.hlen());
    assert_eq!(t.hops(), p.hops());
    assert_eq!(t.xid(), p.xid());
    assert_eq!(t.secs(), p.secs());
    assert_eq!(u16::from(t.flags()), p.flags());
    assert_eq!(t.flags().broadcast(), p.broadcast());
    assert_eq!(t.ciaddr(), p.ciaddr());
    assert_eq!(t.yiaddr(), p.yiaddr());
    assert_eq!(t.siaddr(), p.siaddr());
    assert_eq!(t.giaddr(), p.giaddr());
    assert_eq!(t.chaddr(), p.chaddr());
    assert_eq!(t.sname().map(<[u8]>::to_vec), nul_field(p.sname()));
    assert_eq!(t.fname().map(<[u8]>::to_vec), nul_field(p.file()));
    assert_eq!(
        t.opts().msg_type().map(u8::from),
        Some(p.message_type() as u8)
    );
    let ours = if p.overload() == 0 {
        joined(p.options())
    } else {
        joined(tlvs(&bytes[240..]).iter().map(|(c, d)| (*c, d.as_slice())))
    };
    assert_eq!(their_options(&t), ours);
}

/// Builds a datagram from raw option bytes on a client header (dhclient-like: padded to 300).
fn datagram(op: u8, giaddr: [u8; 4], hops: u8, opts: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = op;
    b[1] = 1;
    b[2] = 6;
    b[3] = hops;
    b[4..8].copy_from_slice(&0x3903_f326u32.to_be_bytes());
    b[24..28].copy_from_slice(&giaddr);
    b[28..34].copy_from_slice(&[0x00, 0x0c, 0x29, 0x3e, 0x53, 0xf7]);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(opts);
    b.push(255);
    if b.len() < 300 {
        b.resize(300, 0);
    }
    b
}

/// Parameter request list of ISC dhclient 4.4's default dhclient.conf.
const DHCLIENT_PRL: [u8; 13] = [1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42];

fn prl(extra: &[u8]) -> Vec<u8> {
    let mut v = vec![55, DHCLIENT_PRL.len() as u8];
    v.extend_from_slice(&DHCLIENT_PRL);
    v.extend_from_slice(extra);
    v
}

/// Relay agent information (RFC 3046) as a BNG inserts it: circuit-id then remote-id.
const OPT82: [u8; 24] = [
    82, 22, 1, 10, b'e', b't', b'h', b'0', b'/', b'1', b'/', b'2', b':', b'7', 2, 8, 0x00, 0x1b,
    0x21, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
];

fn realistic() -> Vec<(&'static str, Vec<u8>)> {
    let hostname: &[u8] = &[12, 6, b'l', b'a', b'p', b't', b'o', b'p'];
    let cid: &[u8] = &[61, 7, 1, 0x00, 0x0c, 0x29, 0x3e, 0x53, 0xf7];
    let req_ip: &[u8] = &[50, 4, 192, 168, 1, 100];
    let sid: &[u8] = &[54, 4, 192, 168, 1, 1];
    let cat = |parts: &[&[u8]]| parts.concat();
    let with_82 = |v: Vec<u8>| cat(&[&v, &OPT82]);
    let relay = [100, 64, 0, 1];
    vec![
        (
            "dhclient DISCOVER",
            datagram(
                1,
                [0; 4],
                0,
                &cat(&[&[53, 1, 1], req_ip, hostname, &prl(&[])]),
            ),
        ),
        (
            "dhclient REQUEST (selecting)",
            datagram(
                1,
                [0; 4],
                0,
                &cat(&[&[53, 1, 3], sid, req_ip, hostname, &prl(&[])]),
            ),
        ),
        (
            "relayed DISCOVER with option 82",
            datagram(
                1,
                relay,
                1,
                &with_82(cat(&[&[53, 1, 1], cid, &[57, 2, 5, 192], &prl(&[])])),
            ),
        ),
        (
            "relayed REQUEST (renewing) with option 82",
            datagram(
                1,
                relay,
                1,
                &with_82(cat(&[&[53, 1, 3], cid, hostname, &prl(&[])])),
            ),
        ),
        (
            "INFORM with vendor class",
            datagram(
                1,
                [0; 4],
                0,
                &cat(&[&[53, 1, 8], cid, &[60, 8], b"MSFT 5.0", &prl(&[])]),
            ),
        ),
        (
            "RELEASE",
            datagram(1, [0; 4], 0, &cat(&[&[53, 1, 7], sid, cid])),
        ),
        (
            "DECLINE",
            datagram(1, relay, 1, &with_82(cat(&[&[53, 1, 4], req_ip, sid, cid]))),
        ),
        (
            "split (RFC 3396) vendor option",
            datagram(
                1,
                [0; 4],
                0,
                &cat(&[&[53, 1, 1, 43, 3, 1, 2, 3, 43, 2, 4, 5], cid]),
            ),
        ),
        // Modelled on the DISCOVER of the Wireshark wiki's sample capture dhcp.pcap.
        ("wireshark-sample-like DISCOVER", {
            let mut b = datagram(
                1,
                [0; 4],
                0,
                &[
                    53, 1, 1, 61, 7, 1, 0x00, 0x0b, 0x82, 0x01, 0xfc, 0x42, 50, 4, 0, 0, 0, 0, 55,
                    4, 1, 3, 6, 42,
                ],
            );
            b[4..8].copy_from_slice(&0x0000_3d1du32.to_be_bytes());
            b[28..34].copy_from_slice(&[0x00, 0x0b, 0x82, 0x01, 0xfc, 0x42]);
            b
        }),
    ]
}

#[test]
fn realistic_corpus_agrees() {
    // Guards that typical client and relay traffic reads the same in both decoders.
    for (name, bytes) in realistic() {
        let p = Packet::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(p.op() == 1, "{name}");
        compare(&bytes);
    }
}

#[test]
fn overloaded_request_agrees_on_the_options_field() {
    // Guards the overload layout against dhcproto (which reads only the options field; see
    // `disagreement_overload` for the rest).
    let mut b = datagram(1, [0; 4], 0, &[53, 1, 3, 52, 1, 3]);
    b[108..116].copy_from_slice(&[12, 6, b'l', b'a', b'p', b't', b'o', b'p']);
    b[116] = 255;
    b[44..51].copy_from_slice(&[50, 4, 192, 168, 1, 100, 255]);
    compare(&b);
}

#[test]
fn disagreement_overload() {
    // RFC 2131 §4.1 / RFC 2132 §9.3: with option 52 the receiver MUST read options from `file`
    // then `sname`. dhcproto ignores option 52's meaning and returns those fields as names, so
    // it misses option 50 here, which a server needs to answer an INIT-REBOOT. We follow the RFC.
    let mut b = datagram(1, [0; 4], 0, &[53, 1, 3, 52, 1, 1]);
    b[108..115].copy_from_slice(&[50, 4, 192, 168, 1, 100, 255]);
    let p = Packet::parse(&b).expect("valid");
    assert_eq!(p.requested_ip(), Some(Ipv4Addr::new(192, 168, 1, 100)));
    let t = theirs(&b);
    assert!(t.opts().get(v4::OptionCode::RequestedIpAddress).is_none());
    assert!(
        t.fname().is_some(),
        "dhcproto reads the options as a file name"
    );
    assert!(Message::from_packet(&p).file.iter().all(|&x| x == 0));
}

#[test]
fn disagreement_non_adjacent_duplicates() {
    // RFC 3396 §7: all instances of an option, adjacent or not, concatenate in order.
    // dhcproto concatenates adjacent ones only and lets a later instance replace an earlier one
    // (BTreeMap insert). Our `option()` returns the first instance by contract and `options()`
    // yields all of them, so callers can concatenate per RFC 3396; neither side loses data
    // silently on our side.
    let b = datagram(
        1,
        [0; 4],
        0,
        &[53, 1, 1, 43, 1, b'a', 60, 1, b'x', 43, 1, b'b'],
    );
    let p = Packet::parse(&b).expect("valid");
    assert_eq!(p.option(43), Some(&b"a"[..]));
    assert_eq!(joined(p.options())[&43], b"ab");
    let t = theirs(&b);
    assert_eq!(their_options(&t)[&43], b"b");
}

#[test]
fn disagreement_bad_cookie() {
    // RFC 2131 §3: the first four bytes of `options` MUST be the magic cookie; without it the
    // vendor area is not DHCP options (RFC 1497 / BOOTP vendor extensions or garbage). dhcproto
    // does not check it (a TODO in its decoder); we drop the datagram.
    let mut b = datagram(1, [0; 4], 0, &[53, 1, 1]);
    b[236] = 0;
    assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadCookie);
    assert!(v4::Message::decode(&mut Decoder::new(&b)).is_ok());
}

#[test]
fn disagreement_option_overrun() {
    // An option whose length runs past the datagram means a damaged or hostile packet; RFC 2131
    // gives no rule, and acting on the prefix risks missing option 82 or 61 (wrong subnet or
    // client). dhcproto stops silently and returns what it read; we drop (OptionOverrun).
    let mut b = datagram(1, [0; 4], 0, &[53, 1, 1, 12, 40, b'a']);
    b.truncate(240 + 6);
    assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::OptionOverrun);
    let t = theirs(&b);
    assert_eq!(t.opts().msg_type(), Some(v4::MessageType::Discover));
    assert!(t.opts().get(v4::OptionCode::Hostname).is_none());
}

#[test]
fn disagreement_bad_fixed_length() {
    // RFC 2132 §9.6: option 53 has length 1. dhcproto reads the first byte of a longer one and
    // ignores the rest; a length we do not expect means we would be guessing, so we drop.
    let b = datagram(1, [0; 4], 0, &[53, 2, 1, 3]);
    assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadOptionLength);
    assert_eq!(
        theirs(&b).opts().msg_type(),
        Some(v4::MessageType::Discover)
    );
}

#[test]
fn disagreement_hlen_above_16() {
    // RFC 2131 §2: chaddr is 16 bytes, so hlen > 16 cannot describe it. dhcproto decodes it and
    // its `chaddr()` would slice out of bounds (a panic); we drop with BadHlen.
    let mut b = datagram(1, [0; 4], 0, &[53, 1, 1]);
    b[2] = 17;
    assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadHlen);
    assert_eq!(theirs(&b).hlen(), 17);
}

#[test]
fn disagreement_non_utf8_hostname() {
    // RFC 2132 §3.14 says host names follow RFC 1035's character set, but real clients send
    // other bytes; dhcproto's typed decoder fails on non-UTF-8 and silently stops reading
    // options, losing option 82 that follows. We keep options as bytes and lose nothing.
    let b = datagram(
        1,
        [0; 4],
        0,
        &[&[53, 1, 1, 12, 2, 0xff, 0xfe][..], &OPT82].concat(),
    );
    let p = Packet::parse(&b).expect("valid");
    assert_eq!(p.hostname(), Some(&[0xff, 0xfe][..]));
    assert!(p.relay_agent_info().is_some());
    let t = theirs(&b);
    assert!(t
        .opts()
        .get(v4::OptionCode::RelayAgentInformation)
        .is_none());
}

/// Options dhcproto round-trips byte for byte through its typed model, with valid data.
fn friendly_option() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let ips = |c: u8| {
        let addrs = vec(any::<u8>(), 1..=8);
        (
            Just(c),
            addrs.prop_map(|v| v.iter().flat_map(|&x| [10, 0, x, 1]).collect::<Vec<u8>>()),
        )
    };
    let text = |c: u8| (Just(c), "[a-z0-9.-]{1,32}".prop_map(String::into_bytes));
    let fixed = |c: u8, n: usize| (Just(c), vec(any::<u8>(), n));
    let bytes = |c: u8, min: usize| (Just(c), vec(any::<u8>(), min..=40));
    prop_oneof![
        fixed(1, 4),
        ips(3),
        ips(6),
        ips(42),
        text(12),
        text(15),
        fixed(50, 4),
        fixed(51, 4),
        fixed(54, 4),
        fixed(57, 2),
        fixed(58, 4),
        fixed(59, 4),
        (Just(55u8), vec(1u8..=254, 1..=20)),
        bytes(60, 1),
        bytes(61, 2),
        bytes(77, 1),
        (
            Just(82u8),
            (vec(any::<u8>(), 1..=20), vec(any::<u8>(), 1..=20)).prop_map(|(c, r)| {
                [&[1, c.len() as u8][..], &c, &[2, r.len() as u8], &r].concat()
            })
        ),
        (
            prop_oneof![Just(224u8), Just(230), Just(240), Just(254)],
            vec(any::<u8>(), 0..=60)
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn generated_corpus_agrees(
        opts in prop::collection::btree_map(any::<u8>(), friendly_option(), 0..10),
        t in 1u8..=8,
        header in (any::<u8>(), any::<u8>(), 0u8..=16, any::<u8>(), any::<u32>(), any::<u16>(), any::<u16>()),
        addrs in any::<[u32; 4]>(),
        chaddr in any::<[u8; 16]>(),
        names in (vec(any::<u8>(), 64), vec(any::<u8>(), 128)),
    ) {
        // Guards agreement on a few hundred generated messages: random header bytes, random
        // `sname`/`file`, options dhcproto's typed model round-trips, one of each code.
        let mut options: Vec<(u8, Vec<u8>)> = vec![(53, vec![t])];
        let mut seen = vec![53u8];
        for (_, (c, d)) in opts {
            if !seen.contains(&c) {
                seen.push(c);
                options.push((c, d));
            }
        }
        let (op, htype, hlen, hops, xid, secs, flags) = header;
        let mut m = Message {
            op, htype, hlen, hops, xid, secs, flags,
            ciaddr: addrs[0].into(), yiaddr: addrs[1].into(), siaddr: addrs[2].into(), giaddr: addrs[3].into(),
            chaddr,
            sname: [0; 64],
            file: [0; 128],
            options,
        };
        m.sname.copy_from_slice(&names.0);
        m.file.copy_from_slice(&names.1);
        let mut buf = [0u8; 1500];
        let n = m.encode(&mut buf).expect("fits in 1500");
        compare(&buf[..n]);
    }
}

//! The failover codec (`proto::wire::failover`) against real and documented bytes: every
//! message of a real ISC dhcpd 4.4 failover session (decoded, checked, re-encoded byte for
//! byte), the [MS-DHCPF] §4 examples, truncation sweeps, and property tests for round trips and
//! "network input never panics".

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use proptest::collection::vec;
use proptest::prelude::*;
use ringlease::proto::wire::failover::options::{self, ms, Shape, TABLE};
use ringlease::proto::wire::failover::{
    code, deframe, utf16le_string, utf16le_with_nul, BindingStatus, Deframed, Deframer,
    FailoverMessage, FailoverWriter, FrameError, Message, MessageType, ServerState,
    MAX_MESSAGE_LEN,
};

/// A real failover session of two ISC dhcpd 4.4.3 (Debian) servers; what is in it:
/// `tests/data/README.md`.
const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/isc-dhcpd-4.4-failover.pcap"
);

// ---------------------------------------------------------------------------------------------
// A small classic-pcap reader and per-direction TCP reassembly (test support only).
// ---------------------------------------------------------------------------------------------

/// One TCP direction: (src ip, src port, dst ip, dst port).
type FlowKey = ([u8; 4], u16, [u8; 4], u16);

#[derive(Default)]
struct Flow {
    /// Sequence number of the first payload byte (SYN + 1), once known.
    isn: Option<u32>,
    /// Payload by offset from `isn`; a retransmission lands on the same key.
    segments: BTreeMap<u32, Vec<u8>>,
    /// Payload seen before the ISN was known (capture started mid-flow): (seq, bytes).
    early: Vec<(u32, Vec<u8>)>,
}

/// Reads a classic pcap (either byte order, µs or ns) of Ethernet/IPv4/TCP frames and returns
/// each TCP direction's reassembled byte stream, in order of first appearance.
fn tcp_streams(pcap: &[u8]) -> Vec<(FlowKey, Vec<u8>)> {
    let magic = &pcap[..4];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a classic pcap file"),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert_eq!(u32_at(pcap, 20), 1, "link type must be Ethernet");

    let mut order = Vec::new();
    let mut flows: HashMap<FlowKey, Flow> = HashMap::new();
    let mut at = 24;
    let mut frames = 0;
    while at + 16 <= pcap.len() {
        let incl = u32_at(pcap, at + 8) as usize;
        let frame = &pcap[at + 16..at + 16 + incl];
        at += 16 + incl;
        frames += 1;
        // Ethernet II, IPv4, TCP only.
        if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 6 {
            continue;
        }
        // The IP total length trims Ethernet padding off short frames.
        let tcp = &ip[ihl..total];
        let src: [u8; 4] = ip[12..16].try_into().unwrap();
        let dst: [u8; 4] = ip[16..20].try_into().unwrap();
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let data_off = usize::from(tcp[12] >> 4) * 4;
        let syn = tcp[13] & 0x02 != 0;
        let payload = &tcp[data_off..];
        let key = (src, sport, dst, dport);
        let flow = flows.entry(key).or_insert_with(|| {
            order.push(key);
            Flow::default()
        });
        if syn {
            flow.isn = Some(seq.wrapping_add(1));
        }
        if payload.is_empty() {
            continue;
        }
        match flow.isn {
            Some(isn) => {
                flow.segments
                    .insert(seq.wrapping_sub(isn), payload.to_vec());
            }
            None => flow.early.push((seq, payload.to_vec())),
        }
    }
    assert_eq!(frames, 7256, "the README's frame count");

    order
        .into_iter()
        .map(|key| {
            let mut flow = flows.remove(&key).unwrap();
            if flow.isn.is_none() {
                // No SYN seen: the first payload byte starts the stream.
                if let Some(&(first, _)) = flow.early.first() {
                    flow.isn = Some(first);
                }
            }
            let isn = flow.isn.unwrap_or(0);
            for (seq, data) in flow.early.drain(..) {
                flow.segments.insert(seq.wrapping_sub(isn), data);
            }
            let mut stream = Vec::new();
            for (off, data) in flow.segments {
                let off = off as usize;
                assert!(
                    off <= stream.len(),
                    "gap in the TCP stream {key:?} at {off}"
                );
                // Skip what a retransmission or overlap repeats.
                let skip = stream.len() - off;
                if skip < data.len() {
                    stream.extend_from_slice(&data[skip..]);
                }
            }
            (key, stream)
        })
        .collect()
}

/// Calls every accessor, as the fuzz target does: the parse contract says none may panic.
fn touch_all(m: &FailoverMessage<'_>) {
    let _ = (
        m.bytes(),
        m.length(),
        m.message_type().name(),
        m.payload_offset(),
    );
    let _ = (m.options_start(), m.time(), m.xid(), m.additional_header());
    let _ = (m.digest_location(), m.digest_input(), m.repeated_code());
    for opts in std::iter::once(m.options())
        .chain(std::iter::once(m.leading()))
        .chain(m.transactions())
    {
        for (c, v) in opts.iter() {
            let _ = (options::name(c), v.len(), opts.get(c), opts.count(c));
        }
        let _ = (
            opts.addresses_transferred(),
            opts.assigned_ip_address(),
            opts.binding_status(),
            opts.client_identifier(),
            opts.client_hardware_address(),
            opts.client_last_transaction_time(),
            opts.client_reply_options(),
            opts.client_request_options(),
            opts.ddns(),
            opts.delayed_service_parameter(),
            opts.hash_bucket_assignment(),
            opts.ip_flags(),
        );
        let _ = (
            opts.lease_expiration_time(),
            opts.max_unacked_bndupd(),
            opts.mclt_s(),
            opts.message(),
            opts.message_digest(),
            opts.potential_expiration_time(),
            opts.receive_timer_s(),
            opts.protocol_version(),
            opts.reject_reason().map(|r| r.name()),
            opts.relationship_name(),
            opts.server_flags(),
            opts.server_state().map(|s| s.name()),
        );
        let _ = (
            opts.start_time_of_state(),
            opts.tls_reply(),
            opts.tls_request(),
            opts.vendor_class_identifier(),
            opts.vendor_specific_options(),
            opts.ms_scope_ids().map(|s| s.map(|s| s.count())),
            opts.ms_client_name(),
            opts.ms_client_description(),
            opts.ms_client_subnet_mask(),
            opts.ms_server_ip(),
            opts.ms_server_name(),
            opts.ms_client_type(),
        );
        let _ = (
            opts.ms_client_nap_status(),
            opts.ms_client_nap_probation(),
            opts.ms_client_nap_capable(),
            opts.ms_client_matched_policy(),
            opts.ms_extended_address_state(),
        );
    }
}

/// Re-encodes through the owned form and compares byte for byte.
fn assert_reencodes(m: &FailoverMessage<'_>) {
    let owned = Message::from_view(m);
    let mut out = Vec::new();
    assert_eq!(owned.encode(&mut out), Ok(m.bytes().len()));
    assert_eq!(out, m.bytes(), "re-encode of xid {} differs", m.xid());
    assert_eq!(Message::decode(&out).as_ref(), Ok(&owned));
}

/// Every truncation of `bytes` (one valid message) is "need more" for the deframer and
/// `Truncated` for `parse`; with the length field rewritten to the cut, `parse` answers with
/// a value or a clean error. Nothing panics.
fn sweep_truncations(bytes: &[u8]) {
    for n in 0..bytes.len() {
        let cut = &bytes[..n];
        match deframe(cut, MAX_MESSAGE_LEN) {
            Ok(Deframed::NeedMore { needed }) => assert!(needed >= 1 && n + needed <= bytes.len()),
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
        assert_eq!(FailoverMessage::parse(cut), Err(FrameError::Truncated));
        if n >= 2 {
            let mut lied = cut.to_vec();
            lied[..2].copy_from_slice(&(n as u16).to_be_bytes());
            match FailoverMessage::parse(&lied) {
                Ok(m) => touch_all(&m),
                Err(
                    FrameError::BadLength { .. }
                    | FrameError::BadPayloadOffset { .. }
                    | FrameError::OptionOverrun { .. }
                    | FrameError::Truncated,
                ) => {}
                Err(e) => panic!("cut at {n}: unexpected {e:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ISC capture
// ---------------------------------------------------------------------------------------------

#[test]
fn isc_capture_decodes_and_reencodes_byte_for_byte() {
    // Guards the codec against everything ISC dhcpd 4.4 really sends: both directions of every
    // TCP connection in the capture are deframed with zero errors and no leftover bytes, the
    // message-type counts match the capture README, key field values match the configuration
    // (`anc-fo`, mclt 3600, max-unacked 10, max-response-delay 30, split 128), BNDACKs answer
    // BNDUPDs by xid and address, and every message re-encodes from the owned form byte for byte.
    let pcap = std::fs::read(CAPTURE).expect("capture present");
    let streams = tcp_streams(&pcap);
    assert_eq!(
        streams.len(),
        12,
        "six TCP connections, two directions each"
    );

    let primary = [198, 18, 1, 1];
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0usize;
    // Per connection (primary-side port): BNDUPD xid → address, from each sender.
    let mut updates: HashMap<(u16, [u8; 4]), HashMap<u32, Ipv4Addr>> = HashMap::new();
    let mut acks = Vec::new();
    let mut states = Vec::new();

    for ((src, sport, _dst, dport), stream) in &streams {
        let conn = if *src == primary { *sport } else { *dport };
        let mut d = Deframer::new(stream);
        for item in d.by_ref() {
            let m = item.unwrap_or_else(|e| panic!("{src:?}:{sport}: {e}"));
            total += 1;
            *types.entry(m.message_type().name()).or_default() += 1;
            touch_all(&m);
            assert_reencodes(&m);
            assert_eq!(m.payload_offset(), 12, "ISC sends 12");
            assert!(m.additional_header().is_empty());
            assert_eq!(m.repeated_code(), None, "ISC never repeats an option");
            assert!(m.digest_location().is_none(), "ISC never signs");
            match m.message_type() {
                MessageType::Connect => {
                    assert_eq!(*src, primary, "only the primary sends CONNECT");
                    assert_eq!(m.relationship_name(), Some(&b"anc-fo"[..]));
                    assert_eq!(m.mclt_s(), Some(3600));
                    assert_eq!(m.max_unacked_bndupd(), Some(10));
                    assert_eq!(m.receive_timer_s(), Some(30));
                    assert_eq!(m.protocol_version(), Some(1));
                    assert_eq!(m.tls_request(), Some(0));
                    assert_eq!(m.vendor_class_identifier(), Some(&b"isc-4.4.3-P1"[..]));
                    let hba = m.hash_bucket_assignment().expect("split 128 → HBA");
                    assert_eq!(hba[..16], [0xff; 16], "buckets 0..128 set (ISC: primary)");
                    assert_eq!(hba[16..], [0; 16]);
                    assert_eq!(
                        m.iter().map(|(c, _)| c).collect::<Vec<_>>(),
                        [22, 14, 19, 28, 20, 27, 15, 11],
                        "ISC's CONNECT layout (spec note §4.4)"
                    );
                }
                MessageType::ConnectAck => {
                    assert_ne!(*src, primary);
                    assert_eq!(m.relationship_name(), Some(&b"anc-fo"[..]));
                    assert_eq!(m.max_unacked_bndupd(), Some(10));
                    assert_eq!(m.receive_timer_s(), Some(30));
                    assert_eq!(m.tls_reply(), Some(0));
                    assert_eq!(m.reject_reason(), None);
                }
                MessageType::State => {
                    let state = m.server_state().expect("server-state");
                    let flags = m.server_flags().expect("server-flags");
                    assert!(m.start_time_of_state().is_some());
                    states.push((src[3], state, flags));
                }
                MessageType::BndUpd => {
                    assert_eq!(m.transactions().count(), 1, "ISC never batches");
                    assert!(m.leading().is_empty());
                    let ip = m.assigned_ip_address().expect("assigned IP");
                    let status = m.binding_status().expect("binding status");
                    *statuses.entry(status.name()).or_default() += 1;
                    // ISC sends 13, 18, 25 for every status (spec note §4.4).
                    assert!(m.lease_expiration_time().is_some());
                    assert!(m.potential_expiration_time().is_some());
                    assert!(m.start_time_of_state().is_some());
                    if status == BindingStatus::Active {
                        let hw = m.client_hardware_address().expect("chaddr for ACTIVE");
                        assert_eq!((hw.htype, hw.chaddr.len()), (1, 6));
                        assert!(m.client_last_transaction_time().is_some());
                        assert!(m.client_identifier().is_some());
                    }
                    let prev = updates.entry((conn, *src)).or_default().insert(m.xid(), ip);
                    assert_eq!(prev, None, "xids are unique per connection and sender");
                }
                MessageType::BndAck => {
                    assert_eq!(m.reject_reason(), None, "everything was accepted");
                    let ip = m.assigned_ip_address().expect("assigned IP");
                    acks.push(((conn, *src), m.xid(), ip));
                }
                other => panic!("unexpected {other:?} in the capture"),
            }
        }
        assert!(
            d.remaining().is_empty(),
            "{src:?}:{sport} ends inside a message ({} bytes)",
            d.remaining().len()
        );
    }

    eprintln!("message types: {types:?}; BNDUPD statuses: {statuses:?}");
    let expect_types = BTreeMap::from([
        ("CONNECT", 3),
        ("CONNECTACK", 2),
        ("STATE", 8),
        ("BNDUPD", 34_135),
        ("BNDACK", 34_135),
    ]);
    assert_eq!(types, expect_types, "the README's counts");
    assert_eq!(total, 68_283);
    let expect_statuses = BTreeMap::from([("BACKUP", 32_639), ("ACTIVE", 998), ("FREE", 498)]);
    assert_eq!(statuses, expect_statuses);
    // STATE per sender, in stream order: each link starts with S=1 (STARTUP flag, previous
    // state NORMAL) then S=0; after the secondary's restart the primary reports
    // COMMUNICATIONS-INTERRUPTED, then NORMAL (tshark agrees: frames 13–22, 7151–7154).
    let (normal, comm_int) = (ServerState::Normal, ServerState::CommunicationsInterrupted);
    let mut want = vec![
        (1, normal, 1),
        (1, normal, 0),
        (1, comm_int, 0),
        (1, normal, 0),
        (2, normal, 1),
        (2, normal, 0),
        (2, normal, 1),
        (2, normal, 0),
    ];
    states.sort_by_key(|&(who, _, _)| who);
    want.sort_by_key(|&(who, _, _)| who);
    assert_eq!(states, want);

    // Every BNDACK answers a BNDUPD of the other side on the same connection: same xid, same
    // address (draft §7.2; ISC matches the lease's last xid).
    for ((conn, from), xid, ip) in acks {
        let other = if from == primary {
            [198, 18, 1, 2]
        } else {
            primary
        };
        let sent = updates.get(&(conn, other)).and_then(|u| u.get(&xid));
        assert_eq!(sent, Some(&ip), "BNDACK xid {xid} on {conn}");
    }

    // Every truncation of every message of the capture.
    for (_, stream) in &streams {
        for m in Deframer::new(stream) {
            sweep_truncations(m.unwrap().bytes());
        }
    }
}

#[test]
fn isc_capture_deframes_the_same_in_any_chunking() {
    // Guards the shell contract of the deframer: fed the main session's bytes in uneven reads
    // (1..=97 bytes), keeping the unprocessed tail between reads, it yields exactly the
    // messages that deframing the whole stream at once yields.
    let pcap = std::fs::read(CAPTURE).expect("capture present");
    let streams = tcp_streams(&pcap);
    let (_, stream) = streams
        .iter()
        .max_by_key(|(_, s)| s.len())
        .expect("a stream");
    let whole: Vec<&[u8]> = Deframer::new(stream).map(|m| m.unwrap().bytes()).collect();

    let mut pending: Vec<u8> = Vec::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut at = 0;
    let mut step = 0usize;
    while at < stream.len() {
        step = (step * 31 + 7) % 97 + 1;
        let end = (at + step).min(stream.len());
        pending.extend_from_slice(&stream[at..end]);
        at = end;
        let mut d = Deframer::new(&pending);
        for m in d.by_ref() {
            got.push(m.expect("valid").bytes().to_vec());
        }
        let used = d.processed();
        assert!(d.needed() > 0 || d.remaining().is_empty());
        pending.drain(..used);
    }
    assert!(pending.is_empty());
    assert_eq!(got.len(), whole.len());
    assert!(got.iter().zip(&whole).all(|(a, b)| a == b));
}

// ---------------------------------------------------------------------------------------------
// [MS-DHCPF] §4 examples
// ---------------------------------------------------------------------------------------------

/// Header of our own making for the MS examples (the seed shows options only): Windows'
/// payload offset 8 (per Wireshark; the seed does not give a header), a fixed time and xid.
fn ms_header(message_type: MessageType, options_len: usize, xid: u32) -> Vec<u8> {
    let len = (12 + options_len) as u16;
    let mut h = len.to_be_bytes().to_vec();
    h.extend_from_slice(&[message_type.to_u8(), 8]);
    h.extend_from_slice(&0x5000_0000u32.to_be_bytes());
    h.extend_from_slice(&xid.to_be_bytes());
    h
}

/// [MS-DHCPF] §4.1 step 2: the Scope ID List option of the UPDREQ, exactly as in the seed's
/// figure (scope ids 192.168.1.0 and 192.168.2.0 in host = little-endian order).
const MS_SCOPE_ID_LIST: [u8; 12] = [
    0x00, 0x1E, 0x00, 0x08, //
    0x00, 0x01, 0xA8, 0xC0, //
    0x00, 0x02, 0xA8, 0xC0,
];

/// [MS-DHCPF] §4.1 step 3: the Client Name option, exactly as in the seed's figure:
/// code 0x001F, length 0x0024, L"clnt0.contoso.com" with its NUL.
const MS_CLIENT_NAME: [u8; 40] = [
    0x00, 0x1F, 0x00, 0x24, //
    b'c', 0, b'l', 0, b'n', 0, b't', 0, b'0', 0, b'.', 0, b'c', 0, b'o', 0, b'n', 0, b't', 0, b'o',
    0, b's', 0, b'o', 0, b'.', 0, b'c', 0, b'o', 0, b'm', 0, 0, 0,
];

/// [MS-DHCPF] §4.1 step 3: Client Server IP 192.168.1.11, exactly as in the seed's figure.
const MS_SERVER_IP: [u8; 8] = [0x00, 0x22, 0x00, 0x04, 0xC0, 0xA8, 0x01, 0x0b];

/// [MS-DHCPF] §4.1 step 3, the options whose figures are lost in the seed's text, built from
/// the values it states with the formats of §2.2.4, §2.2.7–§2.2.10: subnet mask 255.255.255.0,
/// client type 0x01 (DHCP), NAP status 0, NAP probation 0x00000000, NAP capable 0. NAP status
/// uses a 1-byte value (the seed's "OptionValue (1 byte)"; its "length 0x04" is tested apart).
const MS_STATED_OPTIONS: [u8; 31] = [
    0x00, 0x21, 0x00, 0x04, 0xFF, 0xFF, 0xFF, 0x00, // 33 subnet mask
    0x00, 0x24, 0x00, 0x01, 0x01, // 36 client type DHCP
    0x00, 0x25, 0x00, 0x01, 0x00, // 37 NAP status
    0x00, 0x26, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, // 38 NAP probation
    0x00, 0x27, 0x00, 0x01, 0x00, // 39 NAP capable: false
];

/// The draft-12 options an MS BNDUPD for an ACTIVE lease MUST carry ([MS-DHCPF] §3.1.5.2),
/// with values of our own making: 192.168.1.31 (the seed's leased address), MS binding status
/// ACTIVE (state bits 01), 1-byte IP-flags 0 (Windows), an Ethernet chaddr, CLTT, expiry, PET.
fn ms_draft_options() -> Vec<u8> {
    let mut o = vec![0x00, 0x02, 0x00, 0x04, 192, 168, 1, 31]; // 2 assigned IP
    o.extend_from_slice(&[0x00, 0x03, 0x00, 0x01, ms::STATE_ACTIVE]); // 3 binding status
    o.extend_from_slice(&[0x00, 0x0C, 0x00, 0x01, 0x00]); // 12 IP-flags, 1 byte
    o.extend_from_slice(&[
        0x00, 0x05, 0x00, 0x07, 1, 0x00, 0x15, 0x5d, 0x01, 0x02, 0x03,
    ]); // 5
    o.extend_from_slice(&[0x00, 0x06, 0x00, 0x04, 0x50, 0x00, 0x00, 0x00]); // 6 CLTT
    o.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0x50, 0x01, 0x51, 0x80]); // 13 expiry
    o.extend_from_slice(&[0x00, 0x12, 0x00, 0x04, 0x50, 0x01, 0xfa, 0x40]); // 18 PET
    o
}

fn ms_bndupd() -> Vec<u8> {
    let mut opts = ms_draft_options();
    opts.extend_from_slice(&MS_CLIENT_NAME);
    opts.extend_from_slice(&MS_STATED_OPTIONS);
    opts.extend_from_slice(&MS_SERVER_IP);
    let mut b = ms_header(MessageType::BndUpd, opts.len(), 7);
    b.extend_from_slice(&opts);
    b
}

#[test]
fn ms_dhcpf_updreq_scope_list_example() {
    // Guards option 30 per [MS-DHCPF] §2.2.1/§4.1: the seed's bytes decode to the two scopes
    // (host byte order), the Windows payload offset 8 is honoured, and the message re-encodes
    // byte for byte.
    let mut b = ms_header(MessageType::UpdReq, MS_SCOPE_ID_LIST.len(), 3);
    b.extend_from_slice(&MS_SCOPE_ID_LIST);
    let m = FailoverMessage::parse(&b).expect("valid UPDREQ");
    assert_eq!(m.message_type(), MessageType::UpdReq);
    assert_eq!((m.payload_offset(), m.options_start()), (8, 12));
    let scopes: Vec<_> = m.ms_scope_ids().unwrap().unwrap().collect();
    assert_eq!(
        scopes,
        [Ipv4Addr::new(192, 168, 1, 0), Ipv4Addr::new(192, 168, 2, 0)]
    );
    touch_all(&m);
    assert_reencodes(&m);
    sweep_truncations(&b);

    // Built with the writer, the same bytes come out.
    let mut buf = [0u8; 64];
    let mut w =
        FailoverWriter::with_header(&mut buf, MessageType::UpdReq, 0x5000_0000, 3, 8, &[]).unwrap();
    w.push_with(code::MS_SCOPE_ID_LIST, 8, |dst| {
        dst[..4].copy_from_slice(&u32::from(Ipv4Addr::new(192, 168, 1, 0)).to_le_bytes());
        dst[4..].copy_from_slice(&u32::from(Ipv4Addr::new(192, 168, 2, 0)).to_le_bytes());
    })
    .unwrap();
    let n = w.finish();
    assert_eq!(&buf[..n], &b[..]);
}

#[test]
fn ms_dhcpf_bndupd_example() {
    // Guards options 31–39 per [MS-DHCPF] §2.2.2–§2.2.10 and §4.1 step 3: the seed's Client
    // Name and Server IP bytes, and the stated subnet mask / client type / NAP values, decode
    // to what the seed says, next to Windows-style draft options (1-byte IP-flags, MS binding
    // status bits), and the message re-encodes byte for byte.
    let b = ms_bndupd();
    let m = FailoverMessage::parse(&b).expect("valid BNDUPD");
    assert_eq!(m.message_type(), MessageType::BndUpd);
    assert_eq!(m.transactions().count(), 1);
    assert_eq!(
        m.assigned_ip_address(),
        Some(Ipv4Addr::new(192, 168, 1, 31))
    );
    let status = m.binding_status_raw().unwrap();
    assert_eq!(status & ms::STATE_MASK, ms::STATE_ACTIVE);
    assert_eq!(m.ip_flags(), Some(0));
    assert_eq!(
        m.ms_client_name().and_then(utf16le_string).as_deref(),
        Some("clnt0.contoso.com")
    );
    assert_eq!(
        m.ms_client_name(),
        Some(&utf16le_with_nul("clnt0.contoso.com")[..])
    );
    assert_eq!(
        m.ms_client_subnet_mask(),
        Ok(Some(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(m.ms_server_ip(), Ok(Some(Ipv4Addr::new(192, 168, 1, 11))));
    assert_eq!(m.ms_client_type(), Ok(Some(ms::CLIENT_TYPE_DHCP)));
    assert_eq!(m.ms_client_nap_status(), Ok(Some(0)));
    assert_eq!(m.ms_client_nap_probation(), Ok(Some(0)));
    assert_eq!(m.ms_client_nap_capable(), Ok(Some(0)));
    assert_eq!(m.ms_client_description(), None);
    assert_eq!(m.ms_extended_address_state(), Ok(None));
    touch_all(&m);
    assert_reencodes(&m);
    sweep_truncations(&b);
}

#[test]
fn ms_dhcpf_nap_status_length_four_and_other_ms_options() {
    // Guards the seed-vs-spec disagreement on option 37 ([MS-DHCPF] §2.2.8 says length 0x04,
    // value 1 byte; Wireshark and the spec note take 1): both decode; and options 32, 35, 40,
    // 41 decode per §2.2.3, §2.2.6, §2.2.11, §2.2.12. Bad lengths of MS options are errors of
    // the accessor only, never of the message.
    let m = Message::new(MessageType::BndUpd, 1, 2)
        .with(code::ASSIGNED_IP_ADDRESS, [10, 0, 0, 1])
        .with(code::MS_CLIENT_NAP_STATUS, [0, 0, 0, 3])
        .with(code::MS_CLIENT_DESCRIPTION, utf16le_with_nul("desk"))
        .with(code::MS_SERVER_NAME, utf16le_with_nul("dhcp1.contoso.com"))
        .with(code::MS_CLIENT_MATCHED_POLICY, utf16le_with_nul("policy"))
        .with(
            code::MS_EXTENDED_ADDRESS_STATE,
            ms::EX_DISABLE_PTR_RR.to_be_bytes(),
        );
    let mut b = Vec::new();
    m.encode(&mut b).unwrap();
    let v = FailoverMessage::parse(&b).unwrap();
    assert_eq!(v.ms_client_nap_status(), Ok(Some(3)));
    let s = |x: Option<&[u8]>| x.and_then(utf16le_string);
    assert_eq!(s(v.ms_client_description()).as_deref(), Some("desk"));
    assert_eq!(s(v.ms_server_name()).as_deref(), Some("dhcp1.contoso.com"));
    assert_eq!(s(v.ms_client_matched_policy()).as_deref(), Some("policy"));
    assert_eq!(v.ms_extended_address_state(), Ok(Some(1)));

    let bad = Message::new(MessageType::BndUpd, 1, 2)
        .with(code::MS_SCOPE_ID_LIST, [1, 2, 3])
        .with(code::MS_CLIENT_NAP_STATUS, [1, 0, 0, 3])
        .with(code::MS_CLIENT_TYPE, [1, 2]);
    let mut b = Vec::new();
    bad.encode(&mut b).unwrap();
    let v = FailoverMessage::parse(&b).expect("MS options are not judged by parse");
    assert_eq!(
        v.ms_scope_ids().err(),
        Some(FrameError::BadOptionLength { code: 30, len: 3 })
    );
    assert!(v.ms_client_nap_status().is_err());
    assert!(v.ms_client_type().is_err());
}

#[test]
fn digest_placeholder_covers_whole_message_with_zeroed_digest() {
    // Guards the signer/verifier contract: the writer reserves option 17 (type + zeroed
    // digest); after the signer writes the MAC, `digest_input` hands back exactly the signed
    // bytes (head + zeros + tail == the message as it was when signed).
    let mut buf = [0u8; 256];
    let mut w = FailoverWriter::new(&mut buf, MessageType::BndAck, 77, 5).unwrap();
    let loc = w
        .push_digest_placeholder(options::DIGEST_HMAC_SHA256, 32)
        .unwrap();
    w.push_ip(code::ASSIGNED_IP_ADDRESS, Ipv4Addr::new(10, 1, 2, 3))
        .unwrap();
    let n = w.finish();
    let signed = buf[..n].to_vec();
    buf[loc.digest.clone()].fill(0x5a); // what the signer would write
    let m = FailoverMessage::parse(&buf[..n]).unwrap();
    assert_eq!(m.message_digest().map(|d| d.kind), Some(2));
    let input = m.digest_input().unwrap();
    assert_eq!(input.received, &[0x5a; 32][..]);
    let mut rebuilt = input.head.to_vec();
    rebuilt.extend(std::iter::repeat_n(0, input.zeroed_len));
    rebuilt.extend_from_slice(input.tail);
    assert_eq!(rebuilt, signed);
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A value with a length `parse` accepts for `code`.
fn value_for(code: u16) -> BoxedStrategy<Vec<u8>> {
    let shape = if (1..=29).contains(&code) {
        TABLE[usize::from(code) - 1].shape
    } else {
        Shape::Any
    };
    match shape {
        Shape::Fixed(n) => vec(any::<u8>(), usize::from(n)).boxed(),
        Shape::Either(a, b) => prop_oneof![
            vec(any::<u8>(), usize::from(a)),
            vec(any::<u8>(), usize::from(b))
        ]
        .boxed(),
        Shape::AtLeast(n) => vec(any::<u8>(), usize::from(n)..=usize::from(n) + 40).boxed(),
        Shape::MultipleOf(n) => vec(any::<u8>(), 0..=10)
            .prop_map(move |v| {
                let k = v.len() - v.len() % usize::from(n);
                v[..k].to_vec()
            })
            .boxed(),
        Shape::Any => vec(any::<u8>(), 0..=48).boxed(),
    }
}

fn option() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        3 => 1u16..=41,
        1 => any::<u16>(),
    ]
    .prop_flat_map(|c| (Just(c), value_for(c)))
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        (1u8..=12).prop_map(MessageType::from_u8),
        (128u8..=255).prop_map(MessageType::from_u8),
    ]
}

/// An owned message `parse` accepts, at most `MAX_MESSAGE_LEN` bytes.
fn message() -> impl Strategy<Value = Message> {
    let header = prop_oneof![
        3 => Just((12u8, Vec::new())),
        1 => Just((8u8, Vec::new())),
        1 => vec(any::<u8>(), 1..=20).prop_map(|v| (12 + v.len() as u8, v)),
    ];
    (
        message_type(),
        any::<u32>(),
        any::<u32>(),
        header,
        vec(option(), 0..=24),
    )
        .prop_map(
            |(t, time, xid, (payload_offset, additional_header), options)| {
                let mut m = Message {
                    message_type: t,
                    time,
                    xid,
                    payload_offset,
                    additional_header,
                    options,
                };
                while m.encoded_len() > MAX_MESSAGE_LEN {
                    m.options.pop();
                }
                m
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn owned_messages_round_trip(m in message()) {
        // Guards encode → parse → from_view == identity for every legal owned message, and
        // that the writer's bytes re-encode identically.
        let mut out = Vec::new();
        prop_assert_eq!(m.encode(&mut out), Ok(m.encoded_len()));
        let v = FailoverMessage::parse(&out).expect("encoded messages parse");
        touch_all(&v);
        prop_assert_eq!(&Message::from_view(&v), &m);
        let mut again = vec![0u8; out.len()];
        prop_assert_eq!(m.encode_into(&mut again), Ok(out.len()));
        prop_assert_eq!(again, out);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..=600)) {
        // Guards the parse contract on noise: parse and the deframer return values or errors,
        // every accessor of whatever parsed is callable, and the deframer never over-consumes.
        if let Ok(m) = FailoverMessage::parse(&bytes) {
            touch_all(&m);
        }
        let mut d = Deframer::new(&bytes);
        for m in d.by_ref().flatten() {
            touch_all(&m);
        }
        prop_assert!(d.processed() <= bytes.len());
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), at in any::<prop::sample::Index>(), x in any::<u8>()) {
        // Guards the contract near valid input, where noise rarely goes: one byte of a valid
        // message changed anywhere (length, offset, option headers) parses or fails cleanly.
        let mut b = Vec::new();
        m.encode(&mut b).unwrap();
        let i = at.index(b.len());
        b[i] ^= x | 1;
        if let Ok(v) = FailoverMessage::parse(&b) {
            touch_all(&v);
        }
        for item in Deframer::new(&b).flatten() {
            touch_all(&item);
        }
    }
}

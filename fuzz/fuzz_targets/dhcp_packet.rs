//! `Packet::parse` on arbitrary datagrams; on Ok, every accessor and `Message::from_packet`
//! must be infallible (the parse contract in `src/proto/wire/dhcp.rs`). A re-encode of what
//! parsed must parse back to the same `Message`.
//!
//! Run: `cargo +nightly fuzz run dhcp_packet` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlease::proto::wire::dhcp::{Message, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::parse(data) else {
        return;
    };
    let _ = (
        p.bytes(),
        p.op(),
        p.htype(),
        p.hlen(),
        p.hops(),
        p.xid(),
        p.secs(),
    );
    let _ = (
        p.flags(),
        p.broadcast(),
        p.ciaddr(),
        p.yiaddr(),
        p.siaddr(),
        p.giaddr(),
    );
    let _ = (
        p.chaddr(),
        p.sname(),
        p.file(),
        p.overload(),
        p.message_type().name(),
    );
    for (code, value) in p.options() {
        let _ = p.option(code);
        let _ = value.len();
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

    let m = Message::from_packet(&p);
    let mut buf = [0u8; 1500];
    if let Ok(n) = m.encode(&mut buf) {
        let again = Packet::parse(&buf[..n]).expect("an encoded Message parses");
        assert_eq!(Message::from_packet(&again), m);
    }
});

//! The failover deframer and `FailoverMessage::parse` on arbitrary TCP bytes; on `Ok`, every
//! accessor must be infallible (the parse contract in `src/proto/wire/failover.rs`), and a
//! re-encode of the owned form must reproduce the message byte for byte.
//!
//! Run: `cargo +nightly fuzz run failover_frame` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlease::proto::wire::failover::{Deframer, FailoverMessage, Message, Options};

fn touch(o: Options<'_>) {
    for (c, v) in o.iter() {
        let _ = (o.get(c), o.count(c), v.len());
    }
    let _ = (
        o.addresses_transferred(),
        o.assigned_ip_address(),
        o.binding_status(),
        o.client_identifier(),
        o.client_hardware_address(),
        o.client_last_transaction_time(),
        o.client_reply_options(),
        o.client_request_options(),
        o.ddns(),
        o.delayed_service_parameter(),
        o.hash_bucket_assignment(),
        o.ip_flags(),
    );
    let _ = (
        o.lease_expiration_time(),
        o.max_unacked_bndupd(),
        o.mclt_s(),
        o.message(),
        o.message_digest(),
        o.potential_expiration_time(),
        o.receive_timer_s(),
        o.protocol_version(),
        o.reject_reason(),
        o.relationship_name(),
        o.server_flags(),
        o.server_state(),
    );
    let _ = (
        o.start_time_of_state(),
        o.tls_reply(),
        o.tls_request(),
        o.vendor_class_identifier(),
        o.vendor_specific_options(),
        o.ms_scope_ids().map(|s| s.map(Iterator::count)),
        o.ms_client_name(),
        o.ms_client_description(),
        o.ms_client_subnet_mask(),
        o.ms_server_ip(),
        o.ms_server_name(),
        o.ms_client_type(),
    );
    let _ = (
        o.ms_client_nap_status(),
        o.ms_client_nap_probation(),
        o.ms_client_nap_capable(),
        o.ms_client_matched_policy(),
        o.ms_extended_address_state(),
        o.repeated_code(),
    );
}

fn check(m: &FailoverMessage<'_>) {
    let _ = (
        m.length(),
        m.message_type().name(),
        m.payload_offset(),
        m.options_start(),
    );
    let _ = (m.time(), m.xid(), m.additional_header(), m.digest_input());
    touch(m.options());
    touch(m.leading());
    for t in m.transactions() {
        touch(t);
    }
    let owned = Message::from_view(m);
    let mut out = Vec::new();
    assert_eq!(owned.encode(&mut out), Ok(m.bytes().len()));
    assert_eq!(out, m.bytes());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = FailoverMessage::parse(data) {
        check(&m);
    }
    let mut d = Deframer::new(data);
    for m in d.by_ref().flatten() {
        check(&m);
    }
    assert!(d.processed() <= data.len());
});

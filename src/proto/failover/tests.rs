//! Unit tests, one rule each. Two endpoints are wired back to back with instant delivery.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::*;
use crate::proto::wire::failover::{
    code, BindingStatus, FailoverMessage, Message, MessageType, RejectReason,
};

const T0: u64 = 1_700_000_000_000; // ms

fn cfg(role: Role) -> Config {
    Config::new("fo-test", role)
}

fn normal_persisted() -> Option<Persisted> {
    Some(Persisted {
        state: FailoverState::Normal,
        entered_at_s: T0 / 1000 - 100,
        mclt_s: 3600,
    })
}

/// Two endpoints with instant, lossless delivery.
struct Duo {
    p: Endpoint,
    s: Endpoint,
    now: u64,
    /// Every message each side sent: (from primary?, message).
    wire: Vec<(bool, Message)>,
    /// Non-Send outputs per side.
    p_out: Vec<Output>,
    s_out: Vec<Output>,
    s_db: HashMap<Ipv4Addr, Binding>,
    p_db: HashMap<Ipv4Addr, Binding>,
}

impl Duo {
    fn new(pc: Config, sc: Config, pp: Option<Persisted>, sp: Option<Persisted>) -> Duo {
        Duo {
            p: Endpoint::new(pc, pp, T0).unwrap(),
            s: Endpoint::new(sc, sp, T0).unwrap(),
            now: T0,
            wire: Vec::new(),
            p_out: Vec::new(),
            s_out: Vec::new(),
            s_db: HashMap::new(),
            p_db: HashMap::new(),
        }
    }

    fn connect(&mut self) {
        self.p.connected(self.now, true).unwrap();
        self.s.connected(self.now, false).unwrap();
        self.run();
    }

    /// Delivers until quiet.
    fn run(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for from_p in [true, false] {
                let (src, dst) = if from_p {
                    (&mut self.p, &mut self.s)
                } else {
                    (&mut self.s, &mut self.p)
                };
                while let Some(o) = src.poll_output() {
                    moved = true;
                    match o {
                        Output::Send(bytes) => {
                            self.wire.push((from_p, Message::decode(&bytes).unwrap()));
                            let db = if from_p { &self.s_db } else { &self.p_db };
                            dst.receive_frame(self.now, &bytes, db);
                        }
                        Output::CloseConnection { .. } => {
                            dst.disconnected(self.now);
                            (if from_p {
                                &mut self.p_out
                            } else {
                                &mut self.s_out
                            })
                            .push(o);
                        }
                        Output::ApplyBinding(ref b) => {
                            let db = if from_p {
                                &mut self.p_db
                            } else {
                                &mut self.s_db
                            };
                            db.insert(b.ip, b.clone());
                            (if from_p {
                                &mut self.p_out
                            } else {
                                &mut self.s_out
                            })
                            .push(o);
                        }
                        Output::AllBindingsRequested => {
                            let all: Vec<Binding> = if from_p {
                                self.p_db.values().cloned().collect()
                            } else {
                                self.s_db.values().cloned().collect()
                            };
                            src.queue_all_bindings(self.now, all);
                        }
                        other => (if from_p {
                            &mut self.p_out
                        } else {
                            &mut self.s_out
                        })
                        .push(other),
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn advance_to(&mut self, t: u64) {
        self.now = t;
        self.p.handle_timeout(t);
        self.s.handle_timeout(t);
        self.run();
    }

    fn sent(&self, from_p: bool, t: MessageType) -> Vec<&Message> {
        self.wire
            .iter()
            .filter(|(f, m)| *f == from_p && m.message_type == t)
            .map(|(_, m)| m)
            .collect()
    }
}

fn active(ip: u32, cltt: u64) -> Binding {
    let mut b = Binding::new(Ipv4Addr::from(ip), BindingStatus::Active);
    b.hardware = HwAddr::new(1, &[2, 0, 0, 0, (ip >> 8) as u8, ip as u8]);
    b.cltt_s = cltt;
    b.expires_s = cltt + 3600;
    b.pet_s = cltt + 7200;
    b
}

fn up_duo() -> Duo {
    let mut d = Duo::new(
        cfg(Role::Primary),
        cfg(Role::Secondary),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    assert_eq!(d.p.state(), FailoverState::Normal);
    assert_eq!(d.s.state(), FailoverState::Normal);
    d
}

// --- states ---------------------------------------------------------------------------------

#[test]
fn state_wire_values_round_trip() {
    for s in FailoverState::ALL {
        assert_eq!(FailoverState::from_wire(s.wire()), Some(s));
        assert_eq!(s.to_server_state().to_u8(), s.wire());
    }
    assert_eq!(FailoverState::RecoverWait.wire(), 254);
    assert_eq!(FailoverState::from_wire(0), None);
    assert_eq!(FailoverState::from_wire(12), None);
}

#[test]
fn unimplemented_transitions_are_refused_not_taken() {
    use FailoverState as S;
    for partner in [
        S::PartnerDown,
        S::PotentialConflict,
        S::ResolutionInterrupted,
        S::ConflictDone,
    ] {
        for current in [S::Normal, S::CommunicationsInterrupted] {
            assert_eq!(
                on_partner_state(current, partner, false),
                Decision::Unsupported {
                    to: S::PotentialConflict
                }
            );
        }
    }
    assert_eq!(
        on_partner_state(S::CommunicationsInterrupted, S::Normal, false),
        Decision::Enter(S::Normal)
    );
    assert_eq!(
        on_partner_state(S::Normal, S::Shutdown, false),
        Decision::Enter(S::PartnerDown)
    );
    assert_eq!(
        on_partner_state(S::PartnerDown, S::Normal, true),
        Decision::Stay
    );
    assert!(matches!(
        on_partner_state(S::Paused, S::Normal, false),
        Decision::Unsupported { .. }
    ));
}

#[test]
fn persisted_paused_cannot_be_resumed() {
    let p = Some(Persisted {
        state: FailoverState::Paused,
        entered_at_s: 0,
        mclt_s: 3600,
    });
    assert_eq!(
        Endpoint::new(cfg(Role::Primary), p, T0).unwrap_err(),
        ConfigError::UnsupportedPersistedState(FailoverState::Paused)
    );
}

// --- handshake ------------------------------------------------------------------------------

#[test]
fn state_exchange_reaches_normal_from_persisted_normal() {
    let d = up_duo();
    // CONNECT, CONNECTACK, then STATE both ways (with S=1 and previous state COMM-INT).
    assert_eq!(d.wire[0].1.message_type, MessageType::Connect);
    assert_eq!(d.wire[1].1.message_type, MessageType::ConnectAck);
    assert!(d.wire[1].1.option(code::REJECT_REASON).is_none());
    let first_state = d.sent(true, MessageType::State)[0];
    assert_eq!(first_state.option(code::SERVER_FLAGS), Some(&[1u8][..]));
    assert_eq!(first_state.option(code::SERVER_STATE), Some(&[3u8][..]));
    let last_state = *d.sent(true, MessageType::State).last().unwrap();
    assert_eq!(last_state.option(code::SERVER_STATE), Some(&[2u8][..]));
    assert_eq!(last_state.option(code::SERVER_FLAGS), Some(&[0u8][..]));
    assert_eq!(d.p.link(), Link::Up);
    assert!(d.p_out.iter().any(|o| matches!(
        o,
        Output::StateChanged {
            to: FailoverState::Normal,
            ..
        }
    )));
}

#[test]
fn new_relationship_goes_through_recover_to_normal() {
    let mut d = Duo::new(cfg(Role::Primary), cfg(Role::Secondary), None, None);
    d.connect();
    assert_eq!(d.p.state(), FailoverState::Normal);
    assert_eq!(d.s.state(), FailoverState::Normal);
    assert_eq!(d.sent(true, MessageType::UpdReqAll).len(), 1);
    assert_eq!(d.sent(false, MessageType::UpdReqAll).len(), 1);
    assert!(d.p.persisted().is_some());
    let path: Vec<FailoverState> = d
        .p_out
        .iter()
        .filter_map(|o| match o {
            Output::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(
        path,
        [
            FailoverState::Recover,
            FailoverState::RecoverDone,
            FailoverState::Normal
        ]
    );
}

/// The primary's CONNECT, as bytes, after `edit`.
fn connect_with(edit: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut p = Endpoint::new(cfg(Role::Primary), None, T0).unwrap();
    p.connected(T0, true).unwrap();
    let Some(Output::Send(bytes)) = p.poll_output() else {
        panic!("no CONNECT")
    };
    let mut m = Message::decode(&bytes).unwrap();
    assert_eq!(m.message_type, MessageType::Connect);
    edit(&mut m);
    let mut out = Vec::new();
    m.encode(&mut out).unwrap();
    out
}

fn remove(m: &mut Message, c: u16) {
    m.options.retain(|(k, _)| *k != c);
}

fn set(m: &mut Message, c: u16, v: &[u8]) {
    remove(m, c);
    m.options.push((c, v.to_vec()));
}

/// Feeds a CONNECT to a secondary (config `sc`); returns its CONNECTACK reject reason (None =
/// accepted) and whether it closed.
fn answer(sc: Config, connect: &[u8]) -> (Option<RejectReason>, bool) {
    let mut s = Endpoint::new(sc, None, T0).unwrap();
    s.connected(T0, false).unwrap();
    s.receive_frame(T0, connect, &NoLocalBindings);
    let mut reason = None;
    let mut closed = false;
    while let Some(o) = s.poll_output() {
        match o {
            Output::Send(b) => {
                let m = FailoverMessage::parse(&b).unwrap();
                if m.message_type() == MessageType::ConnectAck {
                    reason = m.reject_reason();
                    assert!(m.relationship_name().is_some());
                }
            }
            Output::CloseConnection { reason: r } => {
                closed = true;
                assert!(matches!(r, CloseReason::RejectedConnect(_)));
            }
            _ => {}
        }
    }
    (reason, closed)
}

#[test]
fn connect_accepted() {
    assert_eq!(
        answer(cfg(Role::Secondary), &connect_with(|_| {})),
        (None, false)
    );
}

#[test]
fn connect_reject_reasons() {
    use RejectReason as R;
    let sec = || cfg(Role::Secondary);
    let cases: Vec<(&str, Config, Vec<u8>, R)> = vec![
        (
            "unknown relationship",
            sec(),
            connect_with(|m| set(m, code::RELATIONSHIP_NAME, b"other")),
            R::InvalidPartner,
        ),
        (
            "missing relationship",
            sec(),
            connect_with(|m| remove(m, code::RELATIONSHIP_NAME)),
            R::InvalidPartner,
        ),
        (
            "role conflict: both primary",
            cfg(Role::Primary),
            connect_with(|_| {}),
            R::InvalidPartner,
        ),
        (
            "protocol version",
            sec(),
            connect_with(|m| set(m, code::PROTOCOL_VERSION, &[2])),
            R::ProtocolVersionMismatch,
        ),
        (
            "MCLT missing",
            sec(),
            connect_with(|m| remove(m, code::MCLT)),
            R::InvalidMclt,
        ),
        (
            "MCLT zero",
            sec(),
            connect_with(|m| set(m, code::MCLT, &0u32.to_be_bytes())),
            R::InvalidMclt,
        ),
        (
            "MCLT mismatch",
            Config {
                mclt_check: MclCheck::RequireEqual,
                ..sec()
            },
            connect_with(|m| set(m, code::MCLT, &1800u32.to_be_bytes())),
            R::InvalidMclt,
        ),
        (
            "time skew",
            sec(),
            connect_with(|m| m.time += 61),
            R::TimeMismatch,
        ),
        (
            "TLS required",
            sec(),
            connect_with(|m| set(m, code::TLS_REQUEST, &[2])),
            R::TlsNotSupported,
        ),
        (
            "digest",
            sec(),
            connect_with(|m| set(m, code::MESSAGE_DIGEST, &[1; 17])),
            R::DigestNotSupported,
        ),
        (
            "no HBA",
            sec(),
            connect_with(|m| remove(m, code::HASH_BUCKET_ASSIGNMENT)),
            R::HashBucketConflict,
        ),
        (
            "no max-unacked",
            sec(),
            connect_with(|m| remove(m, code::MAX_UNACKED_BNDUPD)),
            R::UnknownReason,
        ),
    ];
    for (what, c, bytes, want) in cases {
        assert_eq!(answer(c, &bytes), (Some(want), true), "{what}");
    }
}

#[test]
fn secondary_adopts_primary_mclt_and_window() {
    let bytes = connect_with(|m| {
        set(m, code::MCLT, &1800u32.to_be_bytes());
        set(m, code::MAX_UNACKED_BNDUPD, &7u32.to_be_bytes());
    });
    let mut s = Endpoint::new(cfg(Role::Secondary), None, T0).unwrap();
    s.connected(T0, false).unwrap();
    s.receive_frame(T0, &bytes, &NoLocalBindings);
    assert_eq!(s.mclt_s(), 1800);
    assert_eq!(s.partner_max_unacked(), 7);
    assert_eq!(s.link(), Link::AwaitState);
}

#[test]
fn connectack_reject_closes_primary() {
    let mut d = Duo::new(
        cfg(Role::Primary),
        Config::new("other-name", Role::Secondary),
        None,
        None,
    );
    d.connect();
    assert_eq!(d.p.link(), Link::Down);
    assert!(d.p_out.iter().any(|o| matches!(
        o,
        Output::CloseConnection {
            reason: CloseReason::PeerRejected(RejectReason::InvalidPartner)
        }
    )));
    assert_eq!(d.p.state(), FailoverState::Startup);
}

#[test]
fn time_skew_on_any_message_closes() {
    let mut d = up_duo();
    let m = Message::new(MessageType::Contact, (d.now / 1000) as u32 + 120, 99);
    let mut b = Vec::new();
    m.encode(&mut b).unwrap();
    d.s.receive_frame(d.now, &b, &NoLocalBindings);
    let outs: Vec<Output> = std::iter::from_fn(|| d.s.poll_output()).collect();
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::CloseConnection {
            reason: CloseReason::TimeSkew { skew_s: 120 }
        }
    )));
    assert_eq!(d.s.state(), FailoverState::CommunicationsInterrupted);
    // The DISCONNECT says why.
    let disc = outs.iter().find_map(|o| match o {
        Output::Send(b) => Some(Message::decode(b).unwrap()),
        _ => None,
    });
    assert_eq!(
        disc.unwrap().option(code::REJECT_REASON),
        Some(&[RejectReason::TimeMismatch.to_u8()][..])
    );
}

// --- timers ---------------------------------------------------------------------------------

#[test]
fn contact_sent_after_tsend_of_silence() {
    let mut d = up_duo();
    let tsend = u64::from(d.p.config().tsend_s) * 1000;
    let start = d.now;
    assert_eq!(d.p.timer(Timer::Contact), Some(start + tsend));
    d.advance_to(start + tsend - 1);
    assert!(d.sent(true, MessageType::Contact).is_empty());
    d.advance_to(start + tsend);
    assert_eq!(d.sent(true, MessageType::Contact).len(), 1);
    assert_eq!(d.sent(false, MessageType::Contact).len(), 1);
    d.advance_to(start + 2 * tsend);
    assert_eq!(d.sent(true, MessageType::Contact).len(), 2);
    // Contacts keep tReceive from expiring.
    for k in 3..20 {
        d.advance_to(start + k * tsend);
    }
    assert_eq!(d.p.state(), FailoverState::Normal);
    assert_eq!(d.p.stats().contacts_sent, 19);
}

#[test]
fn treceive_expiry_interrupts_communications() {
    let mut d = up_duo();
    let t = d.now + u64::from(d.p.config().treceive_s) * 1000;
    assert_eq!(d.p.timer(Timer::Receive), Some(t));
    // The partner goes silent: feed only the primary's timers.
    let mut now = d.now;
    while now < t {
        now += 10_000;
        d.p.handle_timeout(now);
    }
    let outs: Vec<Output> = std::iter::from_fn(|| d.p.poll_output()).collect();
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::CloseConnection {
            reason: CloseReason::NoTraffic
        }
    )));
    let disc = outs
        .iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(Message::decode(b).unwrap()),
            _ => None,
        })
        .find(|m| m.message_type == MessageType::Disconnect)
        .unwrap();
    assert_eq!(disc.option(code::REJECT_REASON), Some(&[17u8][..]));
    assert_eq!(d.p.state(), FailoverState::CommunicationsInterrupted);
    assert!(d.p.timer(Timer::ConnectRetry).is_some());
}

#[test]
fn startup_timer_without_history_goes_communications_interrupted() {
    let mut p = Endpoint::new(cfg(Role::Primary), None, T0).unwrap();
    p.handle_timeout(T0 + 300_000);
    assert_eq!(p.state(), FailoverState::CommunicationsInterrupted);
}

#[test]
fn safe_period_goes_partner_down() {
    let c = Config {
        safe_period_s: Some(600),
        ..cfg(Role::Primary)
    };
    let mut d = Duo::new(
        c,
        cfg(Role::Secondary),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    d.p.disconnected(d.now);
    assert_eq!(d.p.state(), FailoverState::CommunicationsInterrupted);
    d.p.handle_timeout(d.now + 600_000);
    assert_eq!(d.p.state(), FailoverState::PartnerDown);
}

#[test]
fn connect_retry_asks_for_connection_periodically() {
    let mut p = Endpoint::new(cfg(Role::Primary), None, T0).unwrap();
    p.handle_timeout(T0);
    assert_eq!(p.poll_output(), Some(Output::OpenConnection));
    assert_eq!(p.poll_timeout(), Some(T0 + 60_000));
}

// --- replication ----------------------------------------------------------------------------

#[test]
fn at_most_16_updates_per_bndupd_and_window_respected() {
    let mut d = up_duo();
    // Hold the secondary's answers: feed the primary directly.
    d.p.bindings_changed(
        d.now,
        (0..1000u32).map(|i| active(0x0a00_0000 + i, T0 / 1000)),
    );
    let sends: Vec<Message> = std::iter::from_fn(|| d.p.poll_output())
        .filter_map(|o| match o {
            Output::Send(b) => Some(Message::decode(&b).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 10, "partner's max-unacked-bndupd");
    assert_eq!(d.p.outstanding_bndupds(), 10);
    for m in &sends {
        assert_eq!(m.message_type, MessageType::BndUpd);
        let n = FailoverMessage::parse(&{
            let mut b = Vec::new();
            m.encode(&mut b).unwrap();
            b
        })
        .unwrap()
        .transactions()
        .count();
        assert_eq!(n, 16);
    }
    assert_eq!(d.p.queued_updates(), 1000 - 160);
}

#[test]
fn isc_dialect_sends_one_update_per_bndupd() {
    let c = Config {
        dialect: Dialect::Isc,
        ..cfg(Role::Primary)
    };
    let s = Config {
        dialect: Dialect::Isc,
        ..cfg(Role::Secondary)
    };
    let mut d = Duo::new(c, s, normal_persisted(), normal_persisted());
    d.connect();
    for i in 0..40u32 {
        d.p.binding_changed(d.now, active(0x0a00_0000 + i, d.now / 1000));
    }
    d.run();
    let ups = d.sent(true, MessageType::BndUpd);
    assert_eq!(ups.len(), 40);
    assert!(ups.iter().all(|m| m
        .options
        .iter()
        .filter(|(c, _)| *c == code::ASSIGNED_IP_ADDRESS)
        .count()
        == 1));
    assert_eq!(d.s_db.len(), 40);
}

#[test]
fn microsoft_dialect_wire_details() {
    let c = Config {
        dialect: Dialect::Microsoft,
        mclt_check: MclCheck::RequireEqual,
        ..cfg(Role::Primary)
    };
    let s = Config {
        dialect: Dialect::Microsoft,
        mclt_check: MclCheck::RequireEqual,
        ..cfg(Role::Secondary)
    };
    let mut d = Duo::new(c, s, normal_persisted(), normal_persisted());
    d.connect();
    assert_eq!(d.p.state(), FailoverState::Normal);
    let connect = d.sent(true, MessageType::Connect)[0];
    assert_eq!(connect.payload_offset, 8);
    assert!(connect.option(code::TLS_REQUEST).is_none());
    assert_eq!(
        connect.option(code::RELATIONSHIP_NAME).unwrap(),
        &"fo-test"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>()[..]
    );
    let mut rel = active(0x0a00_0001, d.now / 1000);
    rel.status = BindingStatus::Released;
    d.p.binding_changed(d.now, active(0x0a00_0002, d.now / 1000));
    d.p.binding_changed(d.now, rel);
    d.run();
    assert_eq!(
        d.s_db[&Ipv4Addr::from(0x0a00_0002u32)].status,
        BindingStatus::Active
    );
    assert_eq!(
        d.s_db[&Ipv4Addr::from(0x0a00_0001u32)].status,
        BindingStatus::Released
    );
    let up = d.sent(true, MessageType::BndUpd)[0];
    assert_eq!(up.option(code::IP_FLAGS).map(<[u8]>::len), Some(1));
}

fn bndack_for(up: &Message, ips: &[Ipv4Addr], xid: u32, now_s: u32) -> Vec<u8> {
    let _ = up;
    let mut m = Message::new(MessageType::BndAck, now_s, xid);
    for ip in ips {
        m = m.with(code::ASSIGNED_IP_ADDRESS, ip.octets());
    }
    let mut b = Vec::new();
    m.encode(&mut b).unwrap();
    b
}

fn take_bndupds(e: &mut Endpoint) -> Vec<Message> {
    std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::Send(b) => Some(Message::decode(&b).unwrap()),
            _ => None,
        })
        .filter(|m| m.message_type == MessageType::BndUpd)
        .collect()
}

fn ips_of(m: &Message) -> Vec<Ipv4Addr> {
    m.options
        .iter()
        .filter(|(c, _)| *c == code::ASSIGNED_IP_ADDRESS)
        .map(|(_, v)| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
        .collect()
}

#[test]
fn bndacks_in_order_produce_partner_acked() {
    let mut d = up_duo();
    d.p.bindings_changed(
        d.now,
        (0..40u32).map(|i| active(0x0a00_0000 + i, T0 / 1000)),
    );
    let ups = take_bndupds(&mut d.p);
    assert_eq!(ups.len(), 3);
    let now_s = (d.now / 1000) as u32;
    for up in &ups {
        let ack = bndack_for(up, &ips_of(up), up.xid, now_s);
        d.p.receive_frame(d.now, &ack, &NoLocalBindings);
    }
    let acked: Vec<(Ipv4Addr, u64)> = std::iter::from_fn(|| d.p.poll_output())
        .filter_map(|o| match o {
            Output::PartnerAcked {
                ip,
                partner_expiry_s,
            } => Some((ip, partner_expiry_s)),
            _ => None,
        })
        .collect();
    assert_eq!(acked.len(), 40);
    assert_eq!(acked[5].0, Ipv4Addr::from(0x0a00_0005u32));
    assert_eq!(acked[5].1, d.now / 1000 + 7200, "the PET we sent");
    assert_eq!(d.p.outstanding_bndupds(), 0);
    assert_eq!(d.p.link(), Link::Up);
}

#[test]
fn out_of_order_bndack_is_a_protocol_error() {
    let mut d = up_duo();
    for i in 0..40u32 {
        d.p.binding_changed(d.now, active(0x0a00_0000 + i, d.now / 1000));
    }
    let ups = take_bndupds(&mut d.p);
    let ack = bndack_for(&ups[1], &ips_of(&ups[1]), ups[1].xid, (d.now / 1000) as u32);
    d.p.receive_frame(d.now, &ack, &NoLocalBindings);
    let outs: Vec<Output> = std::iter::from_fn(|| d.p.poll_output()).collect();
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::CloseConnection {
            reason: CloseReason::Protocol(ProtocolError::BndAckOutOfOrder { .. })
        }
    )));
    // Nothing lost: everything un-ACKed is queued again.
    assert_eq!(d.p.queued_updates(), 40);
    assert_eq!(d.p.state(), FailoverState::CommunicationsInterrupted);
}

#[test]
fn bndack_with_addresses_reordered_is_a_protocol_error() {
    let mut d = up_duo();
    d.p.bindings_changed(d.now, (0..4u32).map(|i| active(0x0a00_0000 + i, T0 / 1000)));
    let ups = take_bndupds(&mut d.p);
    assert_eq!(ups.len(), 1);
    let mut ips = ips_of(&ups[0]);
    assert_eq!(ips.len(), 4);
    ips.swap(0, 1);
    let ack = bndack_for(&ups[0], &ips, ups[0].xid, (d.now / 1000) as u32);
    d.p.receive_frame(d.now, &ack, &NoLocalBindings);
    assert!(std::iter::from_fn(|| d.p.poll_output()).any(|o| matches!(
        o,
        Output::CloseConnection {
            reason: CloseReason::Protocol(ProtocolError::BndAckMismatch { .. })
        }
    )));
}

#[test]
fn unknown_bndack_is_a_protocol_error() {
    let mut d = up_duo();
    let ack = bndack_for(
        &Message::new(MessageType::BndUpd, 0, 0),
        &[Ipv4Addr::new(10, 0, 0, 1)],
        77,
        (d.now / 1000) as u32,
    );
    d.p.receive_frame(d.now, &ack, &NoLocalBindings);
    assert_eq!(d.p.link(), Link::Down);
}

#[test]
fn queue_coalesces_by_address() {
    let mut p = Endpoint::new(cfg(Role::Primary), normal_persisted(), T0).unwrap();
    for round in 0..50u64 {
        for i in 0..100u32 {
            p.binding_changed(T0, active(0x0a00_0000 + i, T0 / 1000 + round));
        }
    }
    assert_eq!(p.queued_updates(), 100, "bounded by distinct addresses");
    // The latest change of each address wins.
    let mut q = super::binding::UpdateQueue::default();
    q.push(active(1, 10));
    q.push(active(2, 10));
    q.push(active(1, 99));
    assert_eq!(q.len(), 2);
    let first = q.pop().unwrap();
    assert_eq!(
        (first.binding.ip, first.binding.cltt_s),
        (Ipv4Addr::from(1u32), 99)
    );
}

#[test]
fn secondary_applies_and_acks_updates() {
    let mut d = up_duo();
    for i in 0..100u32 {
        d.p.binding_changed(d.now, active(0x0a00_0000 + i, d.now / 1000));
    }
    d.run();
    assert_eq!(d.s_db.len(), 100);
    assert_eq!(
        d.p_out
            .iter()
            .filter(|o| matches!(o, Output::PartnerAcked { .. }))
            .count(),
        100
    );
    assert_eq!(
        d.s_db[&Ipv4Addr::from(0x0a00_0007u32)],
        active(0x0a00_0007, d.now / 1000)
    );
}

#[test]
fn updreq_answered_with_upddone_after_acks() {
    let mut d = up_duo();
    d.s.disconnected(d.now);
    d.p.disconnected(d.now);
    for i in 0..50u32 {
        d.p.binding_changed(d.now, active(0x0a00_0000 + i, d.now / 1000));
    }
    d.now += 1000;
    d.wire.clear();
    d.connect();
    assert_eq!(d.s.state(), FailoverState::Normal);
    assert_eq!(d.s_db.len(), 50);
    let done = d.sent(true, MessageType::UpdDone);
    let req = d.sent(false, MessageType::UpdReq);
    assert_eq!(req.len(), 1);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].xid, req[0].xid);
    // UPDDONE came after the last BNDACK for those updates.
    let last_ack = d
        .wire
        .iter()
        .rposition(|(f, m)| !*f && m.message_type == MessageType::BndAck)
        .unwrap();
    let done_at = d
        .wire
        .iter()
        .position(|(f, m)| *f && m.message_type == MessageType::UpdDone)
        .unwrap();
    assert!(done_at > last_ack);
}

// --- acceptance rules -----------------------------------------------------------------------

#[test]
fn acceptance_table() {
    use BindingStatus as B;
    use RejectReason as R;
    let now = 10_000;
    let mut ours = active(1, 5000);
    ours.expires_s = 20_000;
    let mut other_client = active(1, 6000);
    other_client.hardware = HwAddr::new(1, &[9; 6]);
    // ACTIVE vs ACTIVE, other client: primary rejects 2, secondary accepts.
    assert_eq!(
        accept_update(Role::Primary, Some(&ours), &other_client, now),
        Err(R::FatalConflict)
    );
    assert_eq!(
        accept_update(Role::Secondary, Some(&ours), &other_client, now),
        Ok(())
    );
    // Same client, any CLTT: accept.
    assert_eq!(
        accept_update(Role::Primary, Some(&ours), &active(1, 1), now),
        Ok(())
    );
    // ACTIVE ← RELEASED: newer CLTT wins (time(1)).
    let mut rel = active(1, 4000);
    rel.status = B::Released;
    assert_eq!(
        accept_update(Role::Primary, Some(&ours), &rel, now),
        Err(R::OutdatedBindingInformation)
    );
    rel.cltt_s = 5001;
    assert_eq!(accept_update(Role::Primary, Some(&ours), &rel, now), Ok(()));
    // ACTIVE ← EXPIRED before our expiry: time(2) rejects.
    let mut exp = active(1, 9000);
    exp.status = B::Expired;
    assert_eq!(
        accept_update(Role::Primary, Some(&ours), &exp, now),
        Err(R::OutdatedBindingInformation)
    );
    assert_eq!(
        accept_update(Role::Primary, Some(&ours), &exp, 20_001),
        Ok(())
    );
    // ABANDONED row rejects all but RESET/ABANDONED with 16.
    let mut ab = ours.clone();
    ab.status = B::Abandoned;
    assert_eq!(
        accept_update(Role::Secondary, Some(&ab), &active(1, 9999), now),
        Err(R::LessCriticalBindingInformation)
    );
    // RESET ← ACTIVE: CLTT later than our start-time-of-state (time(3)).
    let mut reset = Binding::new(Ipv4Addr::from(1u32), B::Reset);
    reset.stos_s = 7000;
    assert_eq!(
        accept_update(Role::Primary, Some(&reset), &active(1, 6000), now),
        Err(R::OutdatedBindingInformation)
    );
    assert_eq!(
        accept_update(Role::Primary, Some(&reset), &active(1, 8000), now),
        Ok(())
    );
    // Missing information.
    let mut bare = Binding::new(Ipv4Addr::from(1u32), B::Active);
    bare.expires_s = 1;
    assert_eq!(
        accept_update(Role::Primary, None, &bare, now),
        Err(R::MissingBindingInformation)
    );
}

#[test]
fn rejected_updates_come_back_as_partner_rejected() {
    struct NotMine;
    impl LocalBindings for NotMine {
        fn lookup(&self, _: Ipv4Addr) -> Lookup {
            Lookup::NotInPool
        }
    }
    let mut d = up_duo();
    d.p.binding_changed(d.now, active(0x0a00_0001, d.now / 1000));
    let up = take_bndupds(&mut d.p).remove(0);
    let mut b = Vec::new();
    up.encode(&mut b).unwrap();
    d.s.receive_frame(d.now, &b, &NotMine);
    let ack = std::iter::from_fn(|| d.s.poll_output())
        .find_map(|o| match o {
            Output::Send(b) => Some(b),
            Output::ApplyBinding(_) => panic!("rejected update applied"),
            _ => None,
        })
        .unwrap();
    d.p.receive_frame(d.now, &ack, &NoLocalBindings);
    assert!(std::iter::from_fn(|| d.p.poll_output()).any(|o| o
        == Output::PartnerRejected {
            ip: Ipv4Addr::from(0x0a00_0001u32),
            reason: RejectReason::IllegalIpAddress
        }));
}

// --- MCLT -----------------------------------------------------------------------------------

#[test]
fn mclt_rule() {
    let (now, mclt) = (1_000_000, 3600);
    // New lease, nothing acked: at most MCLT.
    assert_eq!(max_lease_end(now, 0, now + 3 * 86_400, mclt), now + mclt);
    // Desired shorter than MCLT: unrestricted.
    assert_eq!(max_lease_end(now, 0, now + 600, mclt), now + 600);
    // Acked PET far out: up to acked + MCLT, never beyond desired.
    let acked = now + 3 * 86_400;
    assert_eq!(
        max_lease_end(now, acked, now + 3 * 86_400, mclt),
        now + 3 * 86_400
    );
    assert_eq!(
        max_lease_end(now, acked, now + 10 * 86_400, mclt),
        acked + mclt
    );
    // Acked PET in the past counts as now.
    assert_eq!(max_lease_end(now, now - 50, now + 86_400, mclt), now + mclt);
    // MCLT 0: nothing beyond what the partner acknowledged.
    assert_eq!(max_lease_end(now, now + 100, now + 86_400, 0), now + 100);
    // No overflow.
    assert_eq!(max_lease_end(u64::MAX - 1, 0, u64::MAX, 10), u64::MAX);
    // The draft's example: MCLT 1 h, desired 3 d.
    let pet = potential_expiration(now, 3 * 86_400, 3600);
    assert_eq!(pet, now + 3 * 86_400 + 1800);
    let renew = now + 1800;
    assert_eq!(
        max_lease_end(renew, pet, renew + 3 * 86_400, mclt),
        renew + 3 * 86_400
    );
}

// --- partner-driven transitions through the endpoint ----------------------------------------

fn state_msg(now_ms: u64, state: FailoverState, xid: u32) -> Vec<u8> {
    let m = Message::new(MessageType::State, (now_ms / 1000) as u32, xid)
        .with(code::SERVER_STATE, [state.wire()])
        .with(code::SERVER_FLAGS, [0])
        .with(
            code::START_TIME_OF_STATE,
            ((now_ms / 1000) as u32).to_be_bytes(),
        );
    let mut b = Vec::new();
    m.encode(&mut b).unwrap();
    b
}

#[test]
fn partner_partner_down_is_refused_not_silently_taken() {
    let mut d = up_duo();
    let b = state_msg(d.now, FailoverState::PartnerDown, 500);
    d.s.receive_frame(d.now, &b, &NoLocalBindings);
    let outs: Vec<Output> = std::iter::from_fn(|| d.s.poll_output()).collect();
    assert!(outs.contains(&Output::TransitionRefused {
        from: FailoverState::Normal,
        to: FailoverState::PotentialConflict,
        partner: Some(FailoverState::PartnerDown),
    }));
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::CloseConnection {
            reason: CloseReason::Unsupported {
                to: FailoverState::PotentialConflict
            }
        }
    )));
    // Never entered POTENTIAL-CONFLICT; the lost link took NORMAL to COMM-INT.
    assert_eq!(d.s.state(), FailoverState::CommunicationsInterrupted);
}

#[test]
fn partner_shutdown_takes_us_partner_down_and_paused_interrupts() {
    let mut d = up_duo();
    let b = state_msg(d.now, FailoverState::Paused, 500);
    d.s.receive_frame(d.now, &b, &NoLocalBindings);
    assert_eq!(d.s.state(), FailoverState::CommunicationsInterrupted);
    assert_eq!(
        d.s.link(),
        Link::Up,
        "a partner state change keeps the connection"
    );
    let b = state_msg(d.now, FailoverState::Shutdown, 501);
    d.s.receive_frame(d.now, &b, &NoLocalBindings);
    assert_eq!(d.s.state(), FailoverState::PartnerDown);
}

#[test]
fn microsoft_dialect_drops_disconnect() {
    let c = Config {
        dialect: Dialect::Microsoft,
        ..cfg(Role::Primary)
    };
    let s = Config {
        dialect: Dialect::Microsoft,
        ..cfg(Role::Secondary)
    };
    let mut d = Duo::new(c, s, normal_persisted(), normal_persisted());
    d.connect();
    let m = Message::new(MessageType::Disconnect, (d.now / 1000) as u32, 9)
        .with(code::REJECT_REASON, [6]);
    let mut b = Vec::new();
    m.encode(&mut b).unwrap();
    d.s.receive_frame(d.now, &b, &NoLocalBindings);
    assert_eq!(d.s.link(), Link::Up);
    // The draft dialect closes.
    let mut d = up_duo();
    d.s.receive_frame(d.now, &b, &NoLocalBindings);
    assert_eq!(d.s.link(), Link::Down);
}

#[test]
fn recover_waits_mclt_when_partner_has_history() {
    // The secondary is new (RECOVER); the primary resumes NORMAL → COMM-INT, then stays
    // COMM-INT while the partner recovers (draft §9.9.3).
    let mut d = Duo::new(
        cfg(Role::Primary),
        cfg(Role::Secondary),
        normal_persisted(),
        None,
    );
    d.connect();
    assert_eq!(d.s.state(), FailoverState::RecoverWait);
    assert_eq!(d.p.state(), FailoverState::CommunicationsInterrupted);
    let wait = d.s.timer(Timer::RecoverWait).unwrap();
    assert_eq!(wait, T0 + 3_600_000);
    // Keep the link alive and let MCLT pass.
    let mut t = d.now;
    while t < wait {
        t = (t + 30_000).min(wait);
        d.advance_to(t);
    }
    assert_eq!(d.s.state(), FailoverState::Normal);
    assert_eq!(d.p.state(), FailoverState::Normal);
}

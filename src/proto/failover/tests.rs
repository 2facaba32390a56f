//! Unit tests, one rule each. Two endpoints are wired back to back with instant delivery.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::*;
use crate::proto::wire::failover::{
    code, BindingStatus, FailoverMessage, Message, MessageType, RejectReason, MAX_MESSAGE_LEN,
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
    /// The same messages as the bytes sent.
    frames: Vec<(bool, Vec<u8>)>,
    /// Non-Send outputs per side.
    p_out: Vec<Output>,
    s_out: Vec<Output>,
    s_db: HashMap<Ipv4Addr, Binding>,
    p_db: HashMap<Ipv4Addr, Binding>,
    /// Frames (from primary?, bytes) for which this says true are sent but not delivered;
    /// they go to `held`.
    hold: fn(bool, &[u8]) -> bool,
    held: Vec<(bool, Vec<u8>)>,
}

impl Duo {
    fn new(pc: Config, sc: Config, pp: Option<Persisted>, sp: Option<Persisted>) -> Duo {
        Duo {
            p: Endpoint::new(pc, pp, T0).unwrap(),
            s: Endpoint::new(sc, sp, T0).unwrap(),
            now: T0,
            wire: Vec::new(),
            frames: Vec::new(),
            p_out: Vec::new(),
            s_out: Vec::new(),
            s_db: HashMap::new(),
            p_db: HashMap::new(),
            hold: |_, _| false,
            held: Vec::new(),
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
                            self.frames.push((from_p, bytes.clone()));
                            if (self.hold)(from_p, &bytes) {
                                self.held.push((from_p, bytes));
                                continue;
                            }
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
fn conflicting_partner_states_lead_to_potential_conflict_and_the_rest_is_refused() {
    use FailoverState as S;
    for partner in [
        S::PartnerDown,
        S::PotentialConflict,
        S::ResolutionInterrupted,
        S::ConflictDone,
    ] {
        for current in [S::Normal, S::CommunicationsInterrupted, S::PartnerDown] {
            if (current, partner) == (S::Normal, S::ConflictDone) {
                continue; // the secondary finished its resolution first: it waits
            }
            assert_eq!(
                on_partner_state(current, partner, false),
                Decision::Enter(S::PotentialConflict),
                "{current:?} + partner {partner:?}"
            );
        }
    }
    for partner in S::ALL {
        assert_eq!(
            on_partner_state(S::ResolutionInterrupted, partner, false),
            Decision::Enter(S::PotentialConflict)
        );
        assert_eq!(
            on_partner_state(S::PotentialConflict, partner, false),
            Decision::Stay
        );
        let done = if partner == S::Normal {
            Decision::Enter(S::Normal)
        } else {
            Decision::Stay
        };
        assert_eq!(on_partner_state(S::ConflictDone, partner, false), done);
    }
    assert_eq!(
        on_partner_state(S::Normal, S::ConflictDone, false),
        Decision::Stay
    );
    assert_eq!(
        S::PotentialConflict.after_comms_failed(),
        S::ResolutionInterrupted
    );
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
fn startup_timer_without_history_goes_recover_and_waits_for_the_partner() {
    // Without history (new, or the database was lost) the draft's RECOVER: no service until
    // the partner's bindings are in.
    let mut p = Endpoint::new(cfg(Role::Primary), None, T0).unwrap();
    p.handle_timeout(T0 + 300_000);
    assert_eq!(p.state(), FailoverState::Recover);
    // The operator may declare the partner down to commission one server alone; from then on
    // the relationship has history and its state is persisted.
    assert!(p.is_new());
    p.set_partner_down(T0 + 301_000).unwrap();
    assert_eq!(p.state(), FailoverState::PartnerDown);
    assert!(!p.is_new());
    // [MS-DHCPF] §3.1.6.3: a Windows server goes COMMUNICATIONS-INTERRUPTED instead.
    let ms = Config {
        dialect: Dialect::Microsoft,
        mclt_check: MclCheck::RequireEqual,
        ..cfg(Role::Primary)
    };
    let mut p = Endpoint::new(ms, None, T0).unwrap();
    p.handle_timeout(T0 + 300_000);
    assert_eq!(p.state(), FailoverState::CommunicationsInterrupted);
}

#[test]
fn startup_wait_keeps_a_restarted_server_in_startup_until_its_partner_answers() {
    let waiting = Config {
        startup_wait: true,
        ..cfg(Role::Primary)
    };
    let mut p = Endpoint::new(waiting.clone(), normal_persisted(), T0).unwrap();
    p.handle_timeout(T0 + 300_000);
    assert_eq!(p.state(), FailoverState::Startup, "no service alone");
    // The operator says the partner is down: a lone survivor serves again.
    p.set_partner_down(T0 + 301_000).unwrap();
    assert_eq!(p.state(), FailoverState::PartnerDown);
    // A new relationship still goes RECOVER, which serves nobody.
    let mut fresh = Endpoint::new(waiting, None, T0).unwrap();
    fresh.handle_timeout(T0 + 300_000);
    assert_eq!(fresh.state(), FailoverState::Recover);
    // Without the switch the previous state resumes (as ISC dhcpd and Windows).
    let mut p = Endpoint::new(cfg(Role::Primary), normal_persisted(), T0).unwrap();
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
fn the_secondary_asks_for_addresses_on_entering_normal_and_the_primary_answers() {
    let mut d = up_duo();
    assert_eq!(d.sent(false, MessageType::PoolReq).len(), 1);
    let xid = d.sent(false, MessageType::PoolReq)[0].xid;
    assert!(d.p_out.contains(&Output::PoolRequested { xid }));
    d.p.answer_pool_request(d.now, xid, 7);
    d.run();
    let resp = d.sent(true, MessageType::PoolResp);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].xid, xid);
    assert_eq!(
        resp[0].option(code::ADDRESSES_TRANSFERRED).unwrap(),
        &7u32.to_be_bytes()[..]
    );
    // A Windows primary drops POOLREQ, so a secondary in that dialect sends none.
    let ms = |role| Config {
        dialect: Dialect::Microsoft,
        mclt_check: MclCheck::RequireEqual,
        ..cfg(role)
    };
    let mut d = Duo::new(
        ms(Role::Primary),
        ms(Role::Secondary),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    assert_eq!(d.s.state(), FailoverState::Normal);
    assert!(d.sent(false, MessageType::PoolReq).is_empty());
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
                status,
                partner_expiry_s,
            } => {
                assert_eq!(status, BindingStatus::Active);
                Some((ip, partner_expiry_s))
            }
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
    other_client.expires_s = 25_000;
    // ACTIVE vs ACTIVE, other client: primary rejects 2, secondary accepts.
    assert_eq!(
        accept_update(Role::Primary, Some(&ours), &other_client, now),
        Err(R::FatalConflict)
    );
    assert_eq!(
        accept_update(Role::Secondary, Some(&ours), &other_client, now),
        Ok(())
    );
    // ... unless the update's lease has ended: it cannot displace a running lease.
    let mut ended = other_client.clone();
    ended.expires_s = now;
    for role in [Role::Primary, Role::Secondary] {
        assert_eq!(
            accept_update(role, Some(&ours), &ended, now),
            Err(R::OutdatedBindingInformation)
        );
    }
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

/// The states each side went through, in order.
fn states(out: &[Output]) -> Vec<FailoverState> {
    out.iter()
        .filter_map(|o| match o {
            Output::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn a_partition_with_one_side_partner_down_is_resolved_through_potential_conflict() {
    use FailoverState as S;
    let mut d = up_duo();
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    d.run();
    assert_eq!(
        (d.p.state(), d.s.state()),
        (S::CommunicationsInterrupted, S::CommunicationsInterrupted)
    );
    // The operator takes the secondary's side: both serve alone and change bindings.
    d.s.set_partner_down(d.now).unwrap();
    d.p.bindings_changed(d.now, [active(0x0a00_0001, T0 / 1000)]);
    d.s.bindings_changed(d.now, [active(0x0a00_0002, T0 / 1000)]);
    d.run();
    d.p_out.clear();
    d.s_out.clear();
    d.wire.clear();

    d.connect();
    assert_eq!(
        states(&d.p_out),
        [S::PotentialConflict, S::ConflictDone, S::Normal]
    );
    assert_eq!(states(&d.s_out), [S::PotentialConflict, S::Normal]);
    // The primary asked first; the secondary asked only once the primary was done.
    let updreqs: Vec<bool> = d
        .wire
        .iter()
        .filter(|(_, m)| m.message_type == MessageType::UpdReq)
        .map(|(from_p, _)| *from_p)
        .collect();
    assert_eq!(updreqs, [true, false]);
    let secondary_asked = d
        .wire
        .iter()
        .position(|(from_p, m)| !*from_p && m.message_type == MessageType::UpdReq)
        .unwrap();
    let primary_done = d
        .wire
        .iter()
        .position(|(from_p, m)| {
            *from_p
                && m.message_type == MessageType::State
                && m.options
                    .iter()
                    .any(|(c, v)| *c == code::SERVER_STATE && v[..] == [S::ConflictDone.wire()])
        })
        .unwrap();
    assert!(primary_done < secondary_asked);
    // Each side has the other's binding from the partition.
    assert!(d.s_db.contains_key(&Ipv4Addr::new(10, 0, 0, 1)));
    assert!(d.p_db.contains_key(&Ipv4Addr::new(10, 0, 0, 2)));
    assert!(!d
        .p_out
        .iter()
        .chain(&d.s_out)
        .any(|o| matches!(o, Output::TransitionRefused { .. })));
}

#[test]
fn a_lost_link_during_resolution_is_resolution_interrupted_then_potential_conflict_again() {
    use FailoverState as S;
    let mut d = up_duo();
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    d.s.set_partner_down(d.now).unwrap();
    d.run();
    // Hold the secondary's UPDDONE: the primary stays in POTENTIAL-CONFLICT.
    d.hold = |from_p, bytes| {
        !from_p && Message::decode(bytes).unwrap().message_type == MessageType::UpdDone
    };
    d.connect();
    assert_eq!(d.p.state(), S::PotentialConflict);
    assert_eq!(d.s.state(), S::PotentialConflict);
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    d.run();
    assert_eq!(d.p.state(), S::ResolutionInterrupted);
    assert_eq!(d.s.state(), S::ResolutionInterrupted);
    d.hold = |_, _| false;
    d.connect();
    assert_eq!((d.p.state(), d.s.state()), (S::Normal, S::Normal));
    // RESOLUTION-INTERRUPTED takes an operator's PARTNER-DOWN.
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    d.s.set_partner_down(d.now).unwrap();
    d.run();
    d.hold = |from_p, bytes| {
        !from_p && Message::decode(bytes).unwrap().message_type == MessageType::UpdDone
    };
    d.connect();
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    d.run();
    assert_eq!(d.p.state(), S::ResolutionInterrupted);
    assert!(d.p.set_partner_down(d.now).is_ok());
    assert_eq!(d.p.state(), S::PartnerDown);
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

/// A pair whose secondary is new (RECOVER, then RECOVER-WAIT once it has the primary's
/// bindings) while the primary resumes NORMAL → COMM-INT.
fn secondary_in_recover_wait() -> Duo {
    let mut d = Duo::new(
        cfg(Role::Primary),
        cfg(Role::Secondary),
        normal_persisted(),
        None,
    );
    d.connect();
    assert_eq!(d.s.state(), FailoverState::RecoverWait);
    d
}

#[test]
fn recover_waits_mclt_when_partner_has_history() {
    // The primary stays COMM-INT while the partner recovers (draft §9.9.3).
    let mut d = secondary_in_recover_wait();
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

#[test]
fn recover_wait_ends_only_with_the_partner_reachable() {
    let mut d = secondary_in_recover_wait();
    let wait = d.s.timer(Timer::RecoverWait).unwrap();
    d.s.disconnected(d.now);
    d.p.disconnected(d.now);
    d.s.handle_timeout(wait);
    // A partner still in PARTNER-DOWN could not see a RECOVER-DONE now.
    assert_eq!(d.s.state(), FailoverState::RecoverWait);
    d.now = wait + 1000;
    d.connect();
    assert_eq!(d.s.state(), FailoverState::Normal);
    assert_eq!(d.p.state(), FailoverState::Normal);
}

#[test]
fn a_pool_gift_in_flight_wins_over_the_partners_end_of_the_address() {
    // The primary gives an address as BACKUP while the secondary's EXPIRED of it is on the way:
    // the primary keeps its gift (reject 16) and the secondary takes it, so both agree the
    // address is the secondary's.
    let mut d = up_duo();
    let ip = Ipv4Addr::from(0x0a00_0009u32);
    let mut ended = active(0x0a00_0009, d.now / 1000 - 100);
    ended.status = BindingStatus::Expired;
    ended.expires_s = d.now / 1000 - 1;
    let mut gift = Binding::new(ip, BindingStatus::Backup);
    gift.stos_s = d.now / 1000;
    d.p.binding_changed(d.now, gift);
    d.s.binding_changed(d.now, ended);
    d.run();
    assert_eq!(d.s_db[&ip].status, BindingStatus::Backup);
    assert!(
        !d.p_db.contains_key(&ip),
        "the primary did not apply the end"
    );
    assert!(d.s_out.iter().any(|o| matches!(
        o,
        Output::PartnerRejected {
            ip: i,
            reason: RejectReason::LessCriticalBindingInformation
        } if *i == ip
    )));
}

#[test]
fn a_stopping_server_announces_paused_or_shutdown() {
    // PAUSED: back soon, the partner goes COMMUNICATIONS-INTERRUPTED.
    let mut d = up_duo();
    assert!(d.p.announce_stop(d.now, FailoverState::Paused));
    d.run();
    assert_eq!(d.s.state(), FailoverState::CommunicationsInterrupted);
    // The stopping side keeps the state its restart resumes, whatever the partner does.
    assert_eq!(d.p.state(), FailoverState::Normal);
    // SHUTDOWN: gone for long, the partner goes PARTNER-DOWN at once (its MCLT wait starts).
    let mut d = up_duo();
    assert!(d.s.announce_stop(d.now, FailoverState::Shutdown));
    d.run();
    assert_eq!(d.p.state(), FailoverState::PartnerDown);
    assert_eq!(d.s.state(), FailoverState::Normal);
    // Without a connection there is nobody to tell.
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    assert!(!d.s.announce_stop(d.now, FailoverState::Shutdown));
}

// --- message digest -------------------------------------------------------------------------

fn with_secret(c: Config, secret: &str) -> Config {
    Config {
        secret: Some(SharedSecret::new(secret)),
        ..c
    }
}

/// The close reasons among a side's outputs.
fn closes(out: &[Output]) -> Vec<CloseReason> {
    out.iter()
        .filter_map(|o| match o {
            Output::CloseConnection { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn reached_normal(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::StateChanged {
                to: FailoverState::Normal,
                ..
            }
        )
    })
}

/// Asserts `frame` starts its options with an HMAC-SHA256 message digest that verifies with
/// `secret`.
fn assert_signed_first(frame: &[u8], secret: &SharedSecret) {
    let m = FailoverMessage::parse(frame).unwrap();
    let t = m.message_type();
    assert_eq!(m.options_start(), 12, "{t:?}");
    // code 17, length 33, type 2, then the digest: draft §11.1 "the first option".
    assert_eq!(frame[12..17], [0, 17, 0, 33, 2], "{t:?}");
    assert_eq!(m.iter().next().map(|(c, v)| (c, v.len())), Some((17, 33)));
    assert_eq!(verify_digest(Some(secret), &m), Ok(()), "{t:?}");
}

#[test]
fn same_secret_reaches_normal_and_replicates() {
    // Guards the happy path with digests on: a new relationship goes RECOVER → NORMAL and
    // bindings replicate both ways, with no message rejected.
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "correct horse"),
        with_secret(cfg(Role::Secondary), "correct horse"),
        None,
        None,
    );
    d.connect();
    assert_eq!(d.p.state(), FailoverState::Normal);
    assert_eq!(d.s.state(), FailoverState::Normal);
    for i in 0..40u32 {
        d.p.binding_changed(d.now, active(0x0a00_0000 + i, d.now / 1000));
    }
    d.s.binding_changed(d.now, active(0x0a00_0100, d.now / 1000));
    d.run();
    assert_eq!(d.s_db.len(), 40);
    assert_eq!(d.p_db.len(), 1);
    assert_eq!(
        d.s_db[&Ipv4Addr::from(0x0a00_0007u32)],
        active(0x0a00_0007, d.now / 1000)
    );
    let acked = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::PartnerAcked { .. }))
            .count()
    };
    assert_eq!(acked(&d.p_out), 40);
    assert_eq!(acked(&d.s_out), 1);
    assert_eq!(d.p.stats().digest_failures, 0);
    assert_eq!(d.s.stats().digest_failures, 0);
    assert!(closes(&d.p_out).is_empty() && closes(&d.s_out).is_empty());
    assert_eq!(d.p.link(), Link::Up);
}

#[test]
fn every_sent_frame_starts_with_the_digest() {
    // Guards "in every message" (MS-DHCPF §2.2): each message type either side sends, the last
    // DISCONNECT included, carries a valid digest as its first option.
    let secret = SharedSecret::new("s3cret");
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "s3cret"),
        with_secret(cfg(Role::Secondary), "s3cret"),
        None,
        None,
    );
    d.connect();
    d.s.binding_changed(d.now, active(0x0a00_0100, d.now / 1000));
    d.p.bindings_changed(
        d.now,
        (0..20u32).map(|i| active(0x0a00_0000 + i, d.now / 1000)),
    );
    d.run();
    d.advance_to(d.now + u64::from(d.p.config().tsend_s) * 1000);
    // An unsigned CONTACT makes the secondary close with a (signed) DISCONNECT 21.
    let mut contact = Vec::new();
    Message::new(MessageType::Contact, (d.now / 1000) as u32, 900)
        .encode(&mut contact)
        .unwrap();
    d.s.receive_frame(d.now, &contact, &NoLocalBindings);
    let disconnect = std::iter::from_fn(|| d.s.poll_output())
        .find_map(|o| match o {
            Output::Send(b) => Some(b),
            _ => None,
        })
        .unwrap();
    d.frames.push((false, disconnect));

    let mut seen = Vec::new();
    for (_, frame) in &d.frames {
        assert_signed_first(frame, &secret);
        let t = FailoverMessage::parse(frame).unwrap().message_type();
        if !seen.contains(&t) {
            seen.push(t);
        }
    }
    use MessageType as M;
    for t in [
        M::Connect,
        M::ConnectAck,
        M::State,
        M::UpdReqAll,
        M::UpdDone,
        M::BndUpd,
        M::BndAck,
        M::Contact,
        M::Disconnect,
    ] {
        assert!(seen.contains(&t), "{t:?} not sent");
    }
    let last = FailoverMessage::parse(&d.frames.last().unwrap().1).unwrap();
    assert_eq!(last.reject_reason(), Some(RejectReason::MissingDigest));
}

#[test]
fn digest_is_hmac_sha256_of_the_message_with_the_digest_zeroed() {
    // Guards the covered range against an independent computation: HMAC-SHA256 keyed with
    // the secret over all `len` bytes with only the 32 digest bytes zero (draft §11.1).
    use hmac::{Hmac, Mac};
    let mut p = Endpoint::new(with_secret(cfg(Role::Primary), "k"), None, T0).unwrap();
    p.connected(T0, true).unwrap();
    let Some(Output::Send(frame)) = p.poll_output() else {
        panic!("no CONNECT")
    };
    let mut zeroed = frame.clone();
    zeroed[17..49].fill(0);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
    mac.update(&zeroed);
    assert_eq!(frame[17..49], mac.finalize().into_bytes()[..]);
    assert_eq!(
        usize::from(u16::from_be_bytes([frame[0], frame[1]])),
        frame.len()
    );
}

#[test]
fn flipping_any_byte_fails_verification() {
    // Guards integrity: flipping any bit pattern of any byte after the 2-byte length of a
    // signed message is rejected — by the parser, or by the digest check (20, or 21 when the
    // flip hides the option). Header time/xid and the digest bytes always reach the compare.
    let secret = SharedSecret::new("flip");
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "flip"),
        with_secret(cfg(Role::Secondary), "flip"),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    d.p.binding_changed(d.now, active(0x0a00_0001, d.now / 1000));
    d.run();
    assert!(d.frames.len() >= 6);
    let mut compared = 0;
    for (_, frame) in &d.frames {
        assert_eq!(
            verify_digest(Some(&secret), &FailoverMessage::parse(frame).unwrap()),
            Ok(())
        );
        for i in 2..frame.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut f = frame.clone();
                f[i] ^= mask;
                let Ok(m) = FailoverMessage::parse(&f) else {
                    continue;
                };
                let got = verify_digest(Some(&secret), &m);
                assert!(
                    matches!(
                        got,
                        Err(RejectReason::DigestFailed | RejectReason::MissingDigest)
                    ),
                    "byte {i} ^ {mask:#x} of {:?}: {got:?}",
                    m.message_type()
                );
                if (4..12).contains(&i) || (17..49).contains(&i) {
                    assert_eq!(got, Err(RejectReason::DigestFailed));
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, d.frames.len() * (8 + 32) * 3);
}

#[test]
fn tampered_message_is_dropped_before_it_is_acted_on() {
    // Guards the order: a STATE whose (signed) content was changed to PARTNER-DOWN must close
    // with 20 and must not reach the state machine (no TransitionRefused, no state change).
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "order"),
        with_secret(cfg(Role::Secondary), "order"),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    // The primary's last STATE, changed from NORMAL (2) to PARTNER-DOWN (4) and not re-signed.
    let (_, state) = d
        .frames
        .iter()
        .rev()
        .find(|(from_p, f)| *from_p && f[2] == MessageType::State.to_u8())
        .unwrap()
        .clone();
    let at = state
        .windows(5)
        .position(|w| w == [0, 24, 0, 1, 2])
        .unwrap();
    let mut forged = state.clone();
    forged[at + 4] = FailoverState::PartnerDown.wire();
    d.s.receive_frame(d.now, &forged, &NoLocalBindings);
    let outs: Vec<Output> = std::iter::from_fn(|| d.s.poll_output()).collect();
    assert_eq!(
        closes(&outs),
        [CloseReason::Digest(RejectReason::DigestFailed)]
    );
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::TransitionRefused { .. })));
    assert_eq!(d.s.partner().map(|p| p.state), Some(FailoverState::Normal));
    assert_eq!(d.s.stats().digest_failures, 1);
    // The DISCONNECT says why and is itself signed.
    let disc = outs
        .iter()
        .find_map(|o| match o {
            Output::Send(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    assert_signed_first(&disc, &SharedSecret::new("order"));
    assert_eq!(
        FailoverMessage::parse(&disc).unwrap().reject_reason(),
        Some(RejectReason::DigestFailed)
    );
    assert_eq!(d.s.state(), FailoverState::CommunicationsInterrupted);
}

#[test]
fn wrong_secret_never_reaches_normal() {
    // Guards mutual rejection: with different secrets each CONNECT is answered by CONNECTACK
    // 20, both sides close with 20, and no retry ever gets to STATE.
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "alpha"),
        with_secret(cfg(Role::Secondary), "beta"),
        None,
        None,
    );
    for attempt in 1..=3u64 {
        d.connect();
        assert_eq!(d.p.link(), Link::Down);
        assert_eq!(d.s.link(), Link::Down);
        assert_eq!(d.p.stats().digest_failures, attempt);
        assert_eq!(d.s.stats().digest_failures, attempt);
        d.advance_to(d.now + u64::from(d.p.config().connect_retry_s) * 1000);
        assert!(d.p_out.contains(&Output::OpenConnection));
    }
    let twenty = CloseReason::Digest(RejectReason::DigestFailed);
    assert_eq!(closes(&d.p_out), [twenty; 3]);
    assert_eq!(closes(&d.s_out), [twenty; 3]);
    let acks = d.sent(false, MessageType::ConnectAck);
    assert_eq!(acks.len(), 3);
    assert!(acks
        .iter()
        .all(|m| m.option(code::REJECT_REASON) == Some(&[20u8][..])));
    assert!(d.sent(true, MessageType::State).is_empty());
    assert!(d.sent(false, MessageType::State).is_empty());
    assert!(!reached_normal(&d.p_out) && !reached_normal(&d.s_out));
    assert_ne!(d.p.state(), FailoverState::Normal);
    assert_ne!(d.s.state(), FailoverState::Normal);
}

#[test]
fn secret_on_one_side_only_closes_with_21_and_13() {
    // Guards the two asymmetric cases: the side with the secret misses the digest (21), the
    // side without it gets one it cannot check (13); the secondary says so in CONNECTACK.
    for primary_has_secret in [true, false] {
        let (pc, sc) = if primary_has_secret {
            (with_secret(cfg(Role::Primary), "x"), cfg(Role::Secondary))
        } else {
            (cfg(Role::Primary), with_secret(cfg(Role::Secondary), "x"))
        };
        let mut d = Duo::new(pc, sc, normal_persisted(), normal_persisted());
        d.connect();
        let (with, without) = (
            CloseReason::Digest(RejectReason::MissingDigest),
            CloseReason::Digest(RejectReason::DigestNotConfigured),
        );
        let (p_want, s_want) = if primary_has_secret {
            (with, without)
        } else {
            (without, with)
        };
        assert_eq!(closes(&d.p_out), [p_want], "{primary_has_secret}");
        assert_eq!(closes(&d.s_out), [s_want], "{primary_has_secret}");
        let ack = d.sent(false, MessageType::ConnectAck)[0];
        let CloseReason::Digest(reason) = s_want else {
            unreachable!()
        };
        assert_eq!(ack.option(code::REJECT_REASON), Some(&[reason.to_u8()][..]));
        assert_eq!(
            ack.option(code::MESSAGE_DIGEST).is_some(),
            !primary_has_secret,
            "the CONNECTACK is signed iff the secondary has the secret"
        );
        assert!(!reached_normal(&d.p_out) && !reached_normal(&d.s_out));
        assert_eq!(d.p.stats().digest_failures, 1);
        assert_eq!(d.s.stats().digest_failures, 1);
    }
}

#[test]
fn digest_type_and_position() {
    // Guards the receive side's reading of the option: type 1 (HMAC-MD5) and a truncated
    // digest fail with 20; a valid digest that trails the other options (draft §6.3 diagram)
    // is accepted; no digest at all is 21.
    use hmac::{Hmac, Mac};
    let secret = SharedSecret::new("pos");
    let sign_at_end = |kind: u8, len: usize| {
        let m = Message::new(MessageType::Contact, 7, 8)
            .with(code::MESSAGE, b"hi".to_vec())
            .with(code::MESSAGE_DIGEST, {
                let mut v = vec![0; 1 + len];
                v[0] = kind;
                v
            });
        let mut b = Vec::new();
        m.encode(&mut b).unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"pos").unwrap();
        mac.update(&b);
        let tag = mac.finalize().into_bytes();
        let n = b.len();
        b[n - len..].copy_from_slice(&tag[..len]);
        b
    };
    let check = |b: &[u8]| verify_digest(Some(&secret), &FailoverMessage::parse(b).unwrap());
    assert_eq!(check(&sign_at_end(2, 32)), Ok(()));
    assert_eq!(check(&sign_at_end(1, 32)), Err(RejectReason::DigestFailed));
    assert_eq!(check(&sign_at_end(2, 16)), Err(RejectReason::DigestFailed));
    assert_eq!(check(&sign_at_end(2, 0)), Err(RejectReason::DigestFailed));
    let b = sign_at_end(2, 32);
    assert_eq!(
        verify_digest(None, &FailoverMessage::parse(&b).unwrap()),
        Err(RejectReason::DigestNotConfigured)
    );
    let mut plain = Vec::new();
    Message::new(MessageType::Contact, 7, 8)
        .encode(&mut plain)
        .unwrap();
    assert_eq!(check(&plain), Err(RejectReason::MissingDigest));
    assert_eq!(
        verify_digest(None, &FailoverMessage::parse(&plain).unwrap()),
        Ok(())
    );
}

#[test]
fn microsoft_dialect_with_secret_end_to_end() {
    // Guards the Windows wire form with digests: payload offset 8, digest first at byte 12,
    // NORMAL reached and MS-encoded bindings replicated.
    let ms = |role| Config {
        dialect: Dialect::Microsoft,
        mclt_check: MclCheck::RequireEqual,
        ..with_secret(cfg(role), "windows")
    };
    let mut d = Duo::new(
        ms(Role::Primary),
        ms(Role::Secondary),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    assert_eq!(d.p.state(), FailoverState::Normal);
    assert_eq!(d.s.state(), FailoverState::Normal);
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
    let secret = SharedSecret::new("windows");
    for (_, f) in &d.frames {
        assert_eq!(f[3], 8, "MS payload offset");
        assert_signed_first(f, &secret);
    }
    assert!(!d.sent(true, MessageType::BndUpd).is_empty());
    assert_eq!(d.p.stats().digest_failures + d.s.stats().digest_failures, 0);
}

#[test]
fn signed_bndupds_stay_within_2048_bytes() {
    // Guards the batch size bound with the 37-byte digest counted: client ids of every length
    // in a range that packs BNDUPDs up to the 2048-byte limit (draft §6.1).
    const DIGEST_OPTION: usize = 37;
    let mut largest = 0;
    for id_len in 40..=200usize {
        let mut d = Duo::new(
            with_secret(cfg(Role::Primary), "big"),
            with_secret(cfg(Role::Secondary), "big"),
            normal_persisted(),
            normal_persisted(),
        );
        d.connect();
        d.p.bindings_changed(
            d.now,
            (0..40u32).map(|i| {
                let mut b = active(0x0a00_0000 + i, d.now / 1000);
                b.client_id = Some(vec![i as u8; id_len].into());
                b
            }),
        );
        d.run();
        assert_eq!(d.s_db.len(), 40);
        for (_, f) in d.frames.iter().filter(|(p, _)| *p) {
            assert!(f.len() <= MAX_MESSAGE_LEN, "{id_len}: {} bytes", f.len());
            largest = largest.max(f.len());
        }
    }
    // The sweep did reach the window an uncounted digest would overflow.
    assert!(largest > MAX_MESSAGE_LEN - DIGEST_OPTION, "{largest}");
}

#[test]
fn secret_configuration_rules() {
    // Guards config validation (ISC has no digest; empty key) and that Debug never shows it.
    let isc = Config {
        dialect: Dialect::Isc,
        ..with_secret(cfg(Role::Primary), "x")
    };
    assert_eq!(isc.validate(), Err(ConfigError::SecretWithIsc));
    assert_eq!(
        Endpoint::new(isc, None, T0).unwrap_err(),
        ConfigError::SecretWithIsc
    );
    assert!(ConfigError::SecretWithIsc.to_string().contains("isc"));
    assert_eq!(
        with_secret(cfg(Role::Primary), "").validate(),
        Err(ConfigError::EmptySecret)
    );
    for dialect in [Dialect::Ringlease, Dialect::Microsoft] {
        let c = Config {
            dialect,
            ..with_secret(cfg(Role::Secondary), "hunter2")
        };
        assert_eq!(c.validate(), Ok(()));
        let shown = format!("{c:?}");
        assert!(shown.contains("secret: Some(<redacted>)"), "{shown}");
        assert!(!shown.contains("hunter2"));
    }
    assert_eq!(format!("{:?}", SharedSecret::new("hunter2")), "<redacted>");
}

// --- replay defence (draft §11.1) -----------------------------------------------------------

/// `m` signed with `key` the way we sign (digest first), replacing any digest it carries: what
/// a sender holding the secret would put on the wire.
fn signed(mut m: Message, key: &str) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    remove(&mut m, code::MESSAGE_DIGEST);
    let mut placeholder = vec![0; 33];
    placeholder[0] = 2;
    m.options.insert(0, (code::MESSAGE_DIGEST, placeholder));
    let mut b = Vec::new();
    m.encode(&mut b).unwrap();
    let at = FailoverMessage::parse(&b)
        .unwrap()
        .digest_input()
        .unwrap()
        .head
        .len();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&b);
    b[at..at + 32].copy_from_slice(&mac.finalize().into_bytes());
    assert_eq!(
        verify_digest(
            Some(&SharedSecret::new(key)),
            &FailoverMessage::parse(&b).unwrap()
        ),
        Ok(())
    );
    b
}

/// The CONNECT a primary with secret `key` sends on a connection opened at `now_ms`.
fn signed_connect(key: &str, now_ms: u64) -> Vec<u8> {
    let mut p = Endpoint::new(with_secret(cfg(Role::Primary), key), None, now_ms).unwrap();
    p.connected(now_ms, true).unwrap();
    let Some(Output::Send(b)) = p.poll_output() else {
        panic!("no CONNECT")
    };
    b
}

/// Delivers `frame` to `e` and returns everything it output.
fn feed(e: &mut Endpoint, now_ms: u64, frame: &[u8]) -> Vec<Output> {
    e.receive_frame(now_ms, frame, &NoLocalBindings);
    std::iter::from_fn(|| e.poll_output()).collect()
}

/// The messages among `out`'s sends.
fn sends(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(Message::decode(b).unwrap()),
            _ => None,
        })
        .collect()
}

/// A CONNECT arriving on a fresh connection to `s` at `now_ms`: the CONNECTACK's reject reason
/// (`None` = accepted) and the close reason, if any.
fn offer_connect(
    s: &mut Endpoint,
    now_ms: u64,
    connect: &[u8],
) -> (Option<RejectReason>, Option<CloseReason>) {
    s.disconnected(now_ms);
    s.connected(now_ms, false).unwrap();
    let out = feed(s, now_ms, connect);
    let ack = sends(&out)
        .into_iter()
        .find(|m| m.message_type == MessageType::ConnectAck)
        .expect("a CONNECT is always answered");
    let xid = FailoverMessage::parse(connect).unwrap().xid();
    assert_eq!(ack.xid, xid);
    let reason = ack
        .option(code::REJECT_REASON)
        .map(|v| RejectReason::from_u8(v[0]));
    (reason, closes(&out).first().copied())
}

#[test]
fn replayed_connect_on_a_new_connection_is_rejected() {
    // Guards draft §11.1's CONNECT rule end to end: the primary's signed CONNECT, recorded and
    // replayed on a later connection — well inside the clock-skew limit, so only the replay
    // check can catch it — gets a signed CONNECTACK 4 and a close, and nothing of it is used.
    // The primary's own next CONNECT (a later time, a new xid) is accepted and reaches NORMAL.
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "replay"),
        with_secret(cfg(Role::Secondary), "replay"),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    assert_eq!(d.s.state(), FailoverState::Normal);
    let recorded = d
        .frames
        .iter()
        .find(|(from_p, f)| *from_p && f[2] == MessageType::Connect.to_u8())
        .unwrap()
        .1
        .clone();
    let recorded_msg = FailoverMessage::parse(&recorded).unwrap();
    let (time_s, recorded_xid) = (recorded_msg.time(), recorded_msg.xid());

    // The link drops; 5 s later someone else connects to the secondary and replays it.
    d.now += 5_000;
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    d.run();
    let skew = d.now / 1000 - u64::from(time_s);
    assert!(skew < u64::from(d.s.config().max_clock_skew_s));
    d.s.connected(d.now, false).unwrap();
    let out = feed(&mut d.s, d.now, &recorded);
    assert_eq!(
        closes(&out),
        [CloseReason::ReplayedConnect {
            time_s,
            last_s: time_s
        }]
    );
    let [Output::Send(ack), Output::CloseConnection { .. }] = &out[..] else {
        panic!("only the CONNECTACK, then the close: {out:?}")
    };
    assert_signed_first(ack, &SharedSecret::new("replay"));
    let ack = FailoverMessage::parse(ack).unwrap();
    assert_eq!(ack.message_type(), MessageType::ConnectAck);
    assert_eq!(ack.xid(), recorded_xid);
    assert_eq!(ack.reject_reason(), Some(RejectReason::TimeMismatch));
    assert_eq!(d.s.link(), Link::Down);
    assert_eq!(d.s.partner().map(|p| p.state), Some(FailoverState::Normal));
    assert_eq!(d.s.state(), FailoverState::CommunicationsInterrupted);
    assert_eq!(d.s.stats().replays_rejected, 1);
    assert_eq!(d.s.stats().digest_failures, 0);

    // The real primary reconnects a second later: a fresh CONNECT is accepted.
    d.now += 1_000;
    let before = d.frames.len();
    d.connect();
    assert_eq!(d.p.state(), FailoverState::Normal);
    assert_eq!(d.s.state(), FailoverState::Normal);
    assert_eq!(d.s.link(), Link::Up);
    let fresh = &d.frames[before].1;
    assert_eq!(fresh[2], MessageType::Connect.to_u8());
    let fresh = FailoverMessage::parse(fresh).unwrap();
    assert!(fresh.time() > time_s);
    assert_ne!(fresh.xid(), recorded_xid, "with a secret xids run on");
    assert_eq!(d.s.stats().replays_rejected, 1);
}

#[test]
fn connect_time_must_increase_strictly() {
    // Guards the comparison and what is remembered: a CONNECT from the same second as the last
    // accepted one, or an earlier one, is rejected with 4; a later one is accepted. A CONNECT
    // rejected for another reason (here skew, an hour ahead) does not move the mark.
    let key = "monotone";
    let mut s = Endpoint::new(with_secret(cfg(Role::Secondary), key), None, T0).unwrap();
    let t0_s = (T0 / 1000) as u32;
    assert_eq!(
        offer_connect(&mut s, T0, &signed_connect(key, T0)),
        (None, None)
    );
    let replay = |time_s| {
        Some(CloseReason::ReplayedConnect {
            time_s,
            last_s: t0_s,
        })
    };
    let now = T0 + 2_000;
    assert_eq!(
        offer_connect(&mut s, now, &signed_connect(key, T0 + 999)),
        (Some(RejectReason::TimeMismatch), replay(t0_s))
    );
    assert_eq!(
        offer_connect(&mut s, now, &signed_connect(key, T0 - 1_000)),
        (Some(RejectReason::TimeMismatch), replay(t0_s - 1))
    );
    assert_eq!(
        offer_connect(&mut s, now, &signed_connect(key, T0 + 3_600_000)),
        (
            Some(RejectReason::TimeMismatch),
            Some(CloseReason::RejectedConnect(RejectReason::TimeMismatch))
        )
    );
    assert_eq!(s.stats().replays_rejected, 2);
    assert_eq!(
        offer_connect(&mut s, now, &signed_connect(key, T0 + 1_000)),
        (None, None)
    );
    // …and that one is now the mark.
    assert_eq!(
        offer_connect(&mut s, now, &signed_connect(key, T0 + 1_000)),
        (
            Some(RejectReason::TimeMismatch),
            Some(CloseReason::ReplayedConnect {
                time_s: t0_s + 1,
                last_s: t0_s + 1
            })
        )
    );
}

#[test]
fn connect_replay_memory_is_in_process_and_bounded_by_skew() {
    // Guards the documented limits: the mark lives in memory, so a restarted secondary accepts
    // a CONNECT recorded before the restart while it is within `max_clock_skew_s`; once older
    // than that, the skew check rejects it (CONNECTACK 4 again).
    let key = "restart";
    let recorded = signed_connect(key, T0);
    let mut s = Endpoint::new(with_secret(cfg(Role::Secondary), key), None, T0).unwrap();
    assert_eq!(offer_connect(&mut s, T0, &recorded), (None, None));
    let max_skew_ms = u64::from(s.config().max_clock_skew_s) * 1000;

    let later = T0 + max_skew_ms;
    let mut restarted = Endpoint::new(with_secret(cfg(Role::Secondary), key), None, later).unwrap();
    assert_eq!(
        offer_connect(&mut restarted, later, &recorded),
        (None, None)
    );

    let too_late = T0 + max_skew_ms + 1_000;
    let mut restarted =
        Endpoint::new(with_secret(cfg(Role::Secondary), key), None, too_late).unwrap();
    assert_eq!(
        offer_connect(&mut restarted, too_late, &recorded),
        (
            Some(RejectReason::TimeMismatch),
            Some(CloseReason::RejectedConnect(RejectReason::TimeMismatch))
        )
    );
}

/// A signed pair in NORMAL (persisted NORMAL) that replicated one binding each way.
fn signed_up_duo(key: &str) -> Duo {
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), key),
        with_secret(cfg(Role::Secondary), key),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    d.p.binding_changed(d.now, active(0x0a00_0001, d.now / 1000));
    d.s.binding_changed(d.now, active(0x0a00_0101, d.now / 1000));
    d.run();
    d.advance_to(d.now + u64::from(d.p.config().tsend_s) * 1000); // CONTACTs
    assert_eq!(d.s_db.len(), 1);
    assert_eq!(d.p_db.len(), 1);
    assert_eq!(d.s.link(), Link::Up);
    d
}

#[test]
fn replayed_message_on_the_same_connection_is_dropped() {
    // Guards the draft §11.1 xid rule, sweeping: every message the primary sent with an xid of
    // its own (STATE, BNDUPD, CONTACT, …), replayed to the secondary later on the same
    // connection, is dropped unread — no ApplyBinding, no BNDACK, no state change — and
    // answered with a signed DISCONNECT 254 and a close naming the xids.
    let template = signed_up_duo("same-conn");
    let own_xid = |f: &[u8]| {
        let m = FailoverMessage::parse(f).unwrap();
        let response = matches!(
            m.message_type(),
            MessageType::ConnectAck | MessageType::BndAck | MessageType::UpdDone
        );
        (!response).then_some(m.xid())
    };
    let from_p: Vec<Vec<u8>> = template
        .frames
        .iter()
        .filter(|(p, f)| *p && own_xid(f).is_some())
        .map(|(_, f)| f.clone())
        .collect();
    let last = own_xid(from_p.last().unwrap()).unwrap();
    let mut types = Vec::new();
    for frame in &from_p {
        let mut d = signed_up_duo("same-conn");
        let m = FailoverMessage::parse(frame).unwrap();
        types.push(m.message_type());
        let partner = d.s.partner();
        let out = feed(&mut d.s, d.now, frame);
        assert_eq!(
            closes(&out),
            [CloseReason::ReplayedXid { xid: m.xid(), last }],
            "{:?}",
            m.message_type()
        );
        assert!(!out.iter().any(|o| matches!(o, Output::ApplyBinding(_))));
        let sent = sends(&out);
        assert_eq!(sent.len(), 1, "{out:?}");
        assert_eq!(sent[0].message_type, MessageType::Disconnect);
        assert_eq!(sent[0].option(code::REJECT_REASON), Some(&[254u8][..]));
        let Output::Send(disc) = &out[0] else {
            unreachable!()
        };
        assert_signed_first(disc, &SharedSecret::new("same-conn"));
        assert_eq!(d.s.partner(), partner);
        assert_eq!(d.s.stats().replays_rejected, 1);
        assert_eq!(d.s.stats().bndupd_received, 1);
    }
    for t in [
        MessageType::Connect,
        MessageType::State,
        MessageType::BndUpd,
        MessageType::Contact,
    ] {
        assert!(types.contains(&t), "{t:?} not swept");
    }
}

#[test]
fn xid_order_follows_serial_numbers_across_the_wrap() {
    // Guards the comparison: xids may wrap from u32::MAX to 0 and skip ahead, but an xid equal
    // to the last, or more than half the 32-bit space ahead (= behind), is a replay.
    let key = "wrap";
    let start = |first_xid: u32| {
        let mut s = Endpoint::new(with_secret(cfg(Role::Secondary), key), None, T0).unwrap();
        let mut connect = Message::decode(&signed_connect(key, T0)).unwrap();
        connect.xid = first_xid;
        assert_eq!(
            offer_connect(&mut s, T0, &signed(connect, key)),
            (None, None)
        );
        assert_eq!(s.link(), Link::AwaitState);
        s
    };
    let contact = |xid| {
        signed(
            Message::new(MessageType::Contact, (T0 / 1000) as u32, xid),
            key,
        )
    };

    let mut s = start(u32::MAX - 2);
    for xid in [u32::MAX - 1, u32::MAX, 0, 7, 7 + (1 << 31) - 1] {
        assert_eq!(feed(&mut s, T0, &contact(xid)), [], "{xid}");
    }
    let last = 7 + (1 << 31) - 1;
    assert_eq!(
        closes(&feed(&mut s, T0, &contact(last))),
        [CloseReason::ReplayedXid { xid: last, last }]
    );

    let mut s = start(10);
    let behind = 10 + (1 << 31);
    assert_eq!(
        closes(&feed(&mut s, T0, &contact(behind))),
        [CloseReason::ReplayedXid {
            xid: behind,
            last: 10
        }]
    );
}

#[test]
fn replayed_connectack_from_an_earlier_connection_does_not_answer() {
    // Guards the primary side: with a secret our xids run on across connections, so a
    // CONNECTACK recorded on an earlier connection does not carry the new CONNECT's xid and
    // is ignored (draft §7.9.2). Without a secret every CONNECT keeps xid 0 (as ISC sends).
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "ack"),
        with_secret(cfg(Role::Secondary), "ack"),
        normal_persisted(),
        normal_persisted(),
    );
    d.connect();
    let recorded = d
        .frames
        .iter()
        .find(|(from_p, f)| !*from_p && f[2] == MessageType::ConnectAck.to_u8())
        .unwrap()
        .1
        .clone();
    d.now += 2_000;
    d.p.disconnected(d.now);
    d.s.disconnected(d.now);
    d.run();
    d.p.connected(d.now, true).unwrap();
    let connect = sends(&std::iter::from_fn(|| d.p.poll_output()).collect::<Vec<_>>());
    let xid = connect[0].xid;
    assert_ne!(xid, FailoverMessage::parse(&recorded).unwrap().xid());
    assert_eq!(feed(&mut d.p, d.now, &recorded), []);
    assert_eq!(d.p.link(), Link::AwaitConnectAck { xid });

    let mut plain = Duo::new(
        cfg(Role::Primary),
        cfg(Role::Secondary),
        normal_persisted(),
        normal_persisted(),
    );
    for _ in 0..2 {
        plain.connect();
        plain.now += 2_000;
        plain.p.disconnected(plain.now);
        plain.s.disconnected(plain.now);
        plain.run();
    }
    let connects = plain.sent(true, MessageType::Connect);
    assert_eq!(connects.len(), 2);
    assert!(connects.iter().all(|m| m.xid == 0));
}

#[test]
fn upddone_must_answer_our_request_with_a_secret() {
    // Guards the response side of replay defence: with a secret an UPDDONE that does not carry
    // our outstanding UPDREQALL's xid (a replayed older one) is ignored — RECOVER does not end
    // on it — and the real one still ends it.
    let mut d = Duo::new(
        with_secret(cfg(Role::Primary), "done"),
        with_secret(cfg(Role::Secondary), "done"),
        None,
        None,
    );
    d.hold = |from_p, f| !from_p && f[2] == MessageType::UpdDone.to_u8();
    d.connect();
    assert_eq!(d.p.state(), FailoverState::Recover);
    let [(false, real)] = &d.held[..] else {
        panic!("{:?}", d.held.len())
    };
    let real = real.clone();
    let mut other = Message::decode(&real).unwrap();
    other.xid = other.xid.wrapping_add(1);
    let out = feed(&mut d.p, d.now, &signed(other, "done"));
    assert!(!out.contains(&Output::UpdatesDone), "{out:?}");
    assert!(closes(&out).is_empty());
    assert_eq!(d.p.state(), FailoverState::Recover);

    d.p.receive_frame(d.now, &real, &d.p_db);
    d.run();
    assert!(d.p_out.contains(&Output::UpdatesDone));
    assert_eq!(d.p.state(), FailoverState::Normal);
    assert_eq!(d.s.state(), FailoverState::Normal);
    assert_eq!(
        d.p.stats().replays_rejected + d.s.stats().replays_rejected,
        0
    );
}

#[test]
fn without_a_secret_nothing_is_treated_as_a_replay() {
    // Guards that the checks need the secret (unsigned messages can be forged outright, and
    // ISC peers restart xids per connection): a replayed CONNECT on a new connection and a
    // replayed BNDUPD on the same one are processed as before.
    let mut s = Endpoint::new(cfg(Role::Secondary), None, T0).unwrap();
    let connect = connect_with(|_| {});
    assert_eq!(offer_connect(&mut s, T0, &connect), (None, None));
    assert_eq!(offer_connect(&mut s, T0 + 1_000, &connect), (None, None));

    let mut d = up_duo();
    d.p.binding_changed(d.now, active(0x0a00_0001, d.now / 1000));
    d.run();
    let bndupd = d.sent(true, MessageType::BndUpd)[0].clone();
    let mut bytes = Vec::new();
    bndupd.encode(&mut bytes).unwrap();
    let out = feed(&mut d.s, d.now, &bytes);
    assert!(out.iter().any(|o| matches!(o, Output::ApplyBinding(_))));
    assert!(closes(&out).is_empty());
    assert_eq!(d.s.stats().replays_rejected, 0);
}

// --- synchronization timer and the scope-ID list ([MS-DHCPF] §3.1.2.6, §3.1.5.4) -----------

#[test]
fn sync_timer_closes_a_stalled_update_request() {
    let mut d = up_duo();
    d.s.disconnected(d.now);
    d.p.disconnected(d.now);
    for i in 0..5u32 {
        d.p.binding_changed(d.now, active(0x0a00_0000 + i, d.now / 1000));
    }
    d.now += 1000;
    // The primary's answers to the UPDREQ never arrive; CONTACTs still do.
    d.hold = |from_p, bytes| {
        let t = Message::decode(bytes).unwrap().message_type;
        from_p && matches!(t, MessageType::BndUpd | MessageType::UpdDone)
    };
    d.wire.clear();
    d.connect();
    assert_eq!(d.sent(false, MessageType::UpdReq).len(), 1);
    let deadline = d.s.timer(Timer::Sync).expect("armed by the UPDREQ");
    assert_eq!(deadline, d.now + 300_000);
    let mut t = d.now;
    while t < deadline - 1000 {
        t += 20_000;
        d.advance_to(t.min(deadline - 1000));
    }
    assert!(
        closes(&d.s_out).is_empty(),
        "still waiting before the deadline"
    );
    d.advance_to(deadline);
    assert_eq!(closes(&d.s_out), vec![CloseReason::SyncTimeout]);
}

#[test]
fn upddone_stops_the_sync_timer() {
    let mut d = up_duo();
    d.s.disconnected(d.now);
    d.p.disconnected(d.now);
    d.p.binding_changed(d.now, active(0x0a00_0001, d.now / 1000));
    d.now += 1000;
    d.wire.clear();
    d.connect();
    assert_eq!(d.sent(true, MessageType::UpdDone).len(), 1);
    assert_eq!(d.s.timer(Timer::Sync), None);
}

#[test]
fn updreq_with_a_scope_list_gets_every_binding() {
    let mut d = up_duo();
    for i in 0..20u32 {
        let b = active(0x0a00_0100 + i, d.now / 1000);
        d.p_db.insert(b.ip, b);
    }
    let request = Message::new(MessageType::UpdReq, (d.now / 1000) as u32, 77)
        .with(code::MS_SCOPE_ID_LIST, [0, 0, 0, 10]);
    let mut bytes = Vec::new();
    request.encode(&mut bytes).unwrap();
    d.wire.clear();
    d.p.receive_frame(d.now, &bytes, &d.p_db);
    d.run();
    assert_eq!(d.s_db.len(), 20, "every binding of the primary was sent");
    let done = d.sent(true, MessageType::UpdDone);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].xid, 77);
}

/// ISC dhcpd balances every pool to half FREE, half BACKUP whatever its split: towards ISC the
/// secondary's default share is half in hot standby too (else the two balancers hand the same
/// addresses back and forth, seen against dhcpd 4.4 in tests/interop_isc.rs); other dialects
/// keep the split's default; a configured `backup_share` wins in every dialect.
#[test]
fn isc_dialect_balances_pools_half_and_half() {
    use crate::proto::failover::loadbalance::SPLIT_HOT_STANDBY;
    use crate::proto::lease::PoolShare;
    assert_eq!(Dialect::Isc.default_backup_share(), Some(50));
    assert_eq!(Dialect::Ringlease.default_backup_share(), None);
    assert_eq!(Dialect::Microsoft.default_backup_share(), None);
    let share = |d: Dialect, configured: Option<u8>| {
        PoolShare::new(
            Role::Secondary,
            SPLIT_HOT_STANDBY,
            configured.or(d.default_backup_share()),
        )
        .secondary_percent
    };
    assert_eq!(share(Dialect::Isc, None), 50);
    assert_eq!(
        share(Dialect::Ringlease, None),
        PoolShare::HOT_STANDBY_PERCENT
    );
    assert_eq!(share(Dialect::Isc, Some(10)), 10);
}

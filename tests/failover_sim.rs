//! Two failover endpoints (primary + secondary) over a simulated TCP link in virtual time:
//! latency with jitter (order preserved, as TCP does), seeded connection resets, and link cuts
//! that black-hole traffic until restored. A small `Pair` driver in the style of quinn-proto's
//! `tests/util.rs`: `step()` advances to the next event, `drive_until()` runs to a condition.
//! Every run is seeded; a failure prints the seed so it replays.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use ringlease::proto::failover::{
    Binding, CloseReason, Config, Endpoint, FailoverState, HwAddr, Output, Persisted, Role,
    MAX_UPDATES_PER_BNDUPD,
};
use ringlease::proto::wire::failover::{BindingStatus, FailoverMessage, MessageType};

const T0: u64 = 1_750_000_000_000; // virtual ms since 1970

/// splitmix64: tiny, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// true with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

enum Item {
    Data(Vec<u8>),
    Fin,
}

#[derive(Default)]
struct Node {
    db: HashMap<Ipv4Addr, Binding>,
    applied: u64,
    acked: u64,
    states: Vec<(u64, FailoverState, FailoverState)>,
    closes: Vec<CloseReason>,
    refused: u64,
    /// xids of our BNDUPDs on the current connection, oldest first (to check BNDACK order).
    unacked_xids: VecDeque<u32>,
    sent: HashMap<u8, u64>,
    max_updates_per_bndupd: usize,
    max_outstanding: usize,
}

struct Pair {
    now: u64,
    rng: Rng,
    seed: u64,
    latency_ms: u64,
    jitter_ms: u64,
    /// Probability that sending a message resets the connection.
    reset_per_msg: f64,
    cut: bool,
    eps: [Endpoint; 2],
    nodes: [Node; 2],
    /// Per direction (0: primary → secondary, 1: back): (deliver at, connection id, item).
    wire: [VecDeque<(u64, u64, Item)>; 2],
    /// The current connection id and whether each side still has it open.
    conn: Option<(u64, [bool; 2])>,
    next_conn: u64,
    resets: u64,
}

fn sim_config(name: &str, role: Role) -> Config {
    Config {
        tsend_s: 3,
        treceive_s: 10,
        startup_s: 20,
        connect_retry_s: 2,
        mclt_s: 600,
        ..Config::new(name, role)
    }
}

impl Pair {
    fn new(seed: u64, p: Config, s: Config, pp: Option<Persisted>, sp: Option<Persisted>) -> Pair {
        Pair {
            now: T0,
            rng: Rng(seed),
            seed,
            latency_ms: 5,
            jitter_ms: 5,
            reset_per_msg: 0.0,
            cut: false,
            eps: [
                Endpoint::new(p, pp, T0).unwrap(),
                Endpoint::new(s, sp, T0).unwrap(),
            ],
            nodes: [Node::default(), Node::default()],
            wire: [VecDeque::new(), VecDeque::new()],
            conn: None,
            next_conn: 1,
            resets: 0,
        }
    }

    fn cold(seed: u64) -> Pair {
        Pair::new(
            seed,
            sim_config("fo-sim", Role::Primary),
            sim_config("fo-sim", Role::Secondary),
            None,
            None,
        )
    }

    fn state(&self, i: usize) -> FailoverState {
        self.eps[i].state()
    }

    fn both(&self, s: FailoverState) -> bool {
        self.state(0) == s && self.state(1) == s
    }

    fn push(&mut self, from: usize, item: Item) {
        let Some((id, open)) = self.conn else { return };
        if !open[from] || self.cut {
            return; // black hole
        }
        let base = self.now + self.latency_ms + self.rng.below(self.jitter_ms + 1);
        let at = self.wire[from].back().map_or(base, |b| b.0.max(base)); // TCP keeps order
        self.wire[from].push_back((at, id, item));
    }

    /// Tears the connection down at once on both sides (a TCP reset).
    fn reset(&mut self) {
        self.resets += 1;
        self.conn = None;
        self.wire = [VecDeque::new(), VecDeque::new()];
        for i in 0..2 {
            self.nodes[i].unacked_xids.clear();
            self.eps[i].disconnected(self.now);
        }
    }

    fn open_connection(&mut self, opener: usize) {
        if self.cut || self.conn.is_some() {
            return;
        }
        if self
            .eps
            .iter()
            .any(|e| e.link() != ringlease::proto::failover::Link::Down)
        {
            return;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        self.conn = Some((id, [true, true]));
        for i in 0..2 {
            self.nodes[i].unacked_xids.clear();
        }
        self.eps[opener].connected(self.now, true).unwrap();
        self.eps[1 - opener].connected(self.now, false).unwrap();
    }

    fn check_sent(&mut self, from: usize, bytes: &[u8]) {
        let m = FailoverMessage::parse(bytes).expect("endpoint sent an unparsable message");
        let t = m.message_type();
        *self.nodes[from].sent.entry(t.to_u8()).or_default() += 1;
        match t {
            MessageType::BndUpd => {
                let n = m.transactions().count();
                assert!(
                    (1..=MAX_UPDATES_PER_BNDUPD).contains(&n),
                    "seed {}: BNDUPD with {n} updates",
                    self.seed
                );
                let node = &mut self.nodes[from];
                node.max_updates_per_bndupd = node.max_updates_per_bndupd.max(n);
                node.unacked_xids.push_back(m.xid());
                node.max_outstanding = node.max_outstanding.max(node.unacked_xids.len());
            }
            MessageType::BndAck => {
                // Every BNDACK answers the partner's oldest outstanding BNDUPD.
                let front = self.nodes[1 - from].unacked_xids.pop_front();
                assert_eq!(
                    front,
                    Some(m.xid()),
                    "seed {}: BNDACK out of order",
                    self.seed
                );
            }
            _ => {}
        }
    }

    /// Acts on every pending output of both endpoints.
    fn drain(&mut self) {
        loop {
            let mut any = false;
            for i in 0..2 {
                while let Some(o) = self.eps[i].poll_output() {
                    any = true;
                    match o {
                        Output::Send(bytes) => {
                            let live = matches!(self.conn, Some((_, open)) if open[i]);
                            if live {
                                self.check_sent(i, &bytes);
                                if self.reset_per_msg > 0.0 && self.rng.chance(self.reset_per_msg) {
                                    self.reset();
                                } else {
                                    self.push(i, Item::Data(bytes));
                                }
                            }
                        }
                        Output::ApplyBinding(b) => {
                            self.nodes[i].applied += 1;
                            self.nodes[i].db.insert(b.ip, b);
                        }
                        Output::PartnerAcked { .. } => self.nodes[i].acked += 1,
                        Output::StateChanged { from, to, .. } => {
                            self.nodes[i].states.push((self.now, from, to))
                        }
                        Output::CloseConnection { reason } => {
                            self.nodes[i].closes.push(reason);
                            self.push(i, Item::Fin);
                            if let Some((_, open)) = &mut self.conn {
                                open[i] = false;
                                if !open[0] && !open[1] {
                                    self.conn = None;
                                }
                            }
                        }
                        Output::OpenConnection => self.open_connection(i),
                        Output::AllBindingsRequested => {
                            let all: Vec<Binding> = self.nodes[i].db.values().cloned().collect();
                            self.eps[i].queue_all_bindings(self.now, all);
                        }
                        Output::TransitionRefused { .. } => self.nodes[i].refused += 1,
                        // No pools here: nothing to give.
                        Output::PoolRequested { xid } => {
                            self.eps[i].answer_pool_request(self.now, xid, 0)
                        }
                        Output::PartnerRejected { ip, reason } => {
                            panic!("seed {}: update for {ip} rejected: {reason:?}", self.seed)
                        }
                        Output::UpdatesDone => {}
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn next_event(&self) -> Option<u64> {
        let wires = self.wire.iter().filter_map(|w| w.front().map(|e| e.0));
        let timers = self.eps.iter().filter_map(Endpoint::poll_timeout);
        wires.chain(timers).min()
    }

    /// Advances to the next event (not beyond `limit`) and handles it. False at `limit`.
    fn step(&mut self, limit: u64) -> bool {
        self.drain();
        let Some(next) = self.next_event().filter(|&t| t <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(next);
        for dir in 0..2 {
            while self.wire[dir].front().is_some_and(|e| e.0 <= self.now) {
                let Some((_, id, item)) = self.wire[dir].pop_front() else {
                    break;
                };
                let to = 1 - dir;
                match self.conn {
                    Some((cur, open)) if cur == id && open[to] => {}
                    _ => continue, // that connection is gone on the receiving side
                }
                match item {
                    Item::Data(bytes) => {
                        let db = &self.nodes[to].db;
                        self.eps[to].receive_frame(self.now, &bytes, db);
                    }
                    Item::Fin => {
                        self.eps[to].disconnected(self.now);
                        self.conn = None;
                    }
                }
                self.drain();
            }
        }
        for i in 0..2 {
            if self.eps[i].poll_timeout().is_some_and(|t| t <= self.now) {
                self.eps[i].handle_timeout(self.now);
            }
        }
        self.drain();
        true
    }

    fn drive_until(&mut self, limit: u64, mut done: impl FnMut(&Pair) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
        }
    }

    fn drive_for(&mut self, ms: u64) {
        let limit = self.now + ms;
        while self.step(limit) {}
    }

    fn change(&mut self, b: Binding) {
        self.eps[0].binding_changed(self.now, b);
    }
}

fn lease(ip: Ipv4Addr, now_s: u64, salt: u64) -> Binding {
    let mut b = Binding::new(ip, BindingStatus::Active);
    let o = ip.octets();
    b.hardware = HwAddr::new(1, &[2, (salt % 251) as u8, o[0], o[1], o[2], o[3]]);
    b.client_id = (salt % 3 == 0).then(|| vec![1, o[1], o[2], o[3]].into_boxed_slice());
    b.cltt_s = now_s;
    b.stos_s = now_s;
    b.expires_s = now_s + 600;
    b.pet_s = now_s + 3600 + 300;
    b
}

fn ip_n(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + n)
}

fn to_normal(p: &mut Pair) {
    let ok = p.drive_until(p.now + 120_000, |p| p.both(FailoverState::Normal));
    assert!(
        ok,
        "seed {}: no NORMAL: {:?} / {:?}",
        p.seed,
        p.state(0),
        p.state(1)
    );
}

#[test]
fn cold_start_reaches_normal() {
    for seed in 1..=20 {
        let mut p = Pair::cold(seed);
        to_normal(&mut p);
        // Within a few round trips of the first connection attempt: no timer waits involved.
        assert!(p.now - T0 < 2_000, "seed {seed}: took {} ms", p.now - T0);
        let path: Vec<FailoverState> = p.nodes[0].states.iter().map(|s| s.2).collect();
        assert_eq!(
            path,
            [
                FailoverState::Recover,
                FailoverState::RecoverDone,
                FailoverState::Normal
            ],
            "seed {seed}"
        );
        // And it stays there on CONTACTs alone.
        p.drive_for(120_000);
        assert!(p.both(FailoverState::Normal), "seed {seed}");
        assert!(p.nodes[0].sent[&MessageType::Contact.to_u8()] >= 30);
    }
}

/// Feeds `n` changes to distinct addresses starting at `first`, `per_tick` every `tick_ms`.
fn feed(
    p: &mut Pair,
    first: u32,
    n: u32,
    per_tick: u32,
    tick_ms: u64,
) -> HashMap<Ipv4Addr, Binding> {
    let mut expect = HashMap::new();
    let mut k = first;
    while k < first + n {
        let now_s = p.now / 1000;
        for _ in 0..per_tick.min(first + n - k) {
            let b = lease(ip_n(k), now_s, u64::from(k));
            expect.insert(b.ip, b.clone());
            p.change(b);
            k += 1;
        }
        p.drive_for(tick_ms);
    }
    expect
}

fn settle(p: &mut Pair, expect: &HashMap<Ipv4Addr, Binding>) {
    let limit = p.now + 300_000;
    let ok = p.drive_until(limit, |p| {
        p.eps[0].queued_updates() == 0
            && p.eps[0].outstanding_bndupds() == 0
            && p.both(FailoverState::Normal)
    });
    assert!(ok, "seed {}: did not settle", p.seed);
    for (ip, b) in expect {
        assert_eq!(p.nodes[1].db.get(ip), Some(b), "seed {}: {ip}", p.seed);
    }
}

#[test]
fn hundred_thousand_changes_arrive_in_order_batches() {
    let seed = 0xF0_F0;
    let mut p = Pair::cold(seed);
    to_normal(&mut p);
    let expect = feed(&mut p, 0, 100_000, 500, 50);
    settle(&mut p, &expect);
    assert_eq!(
        p.nodes[1].applied, 100_000,
        "exactly once each without resets"
    );
    assert_eq!(p.nodes[0].acked, 100_000);
    assert_eq!(p.nodes[1].db.len(), 100_000);
    assert!(p.nodes[0].max_updates_per_bndupd == MAX_UPDATES_PER_BNDUPD);
    assert!(p.nodes[0].max_outstanding <= p.eps[0].partner_max_unacked() as usize);
    let bndupds = p.nodes[0].sent[&MessageType::BndUpd.to_u8()];
    assert!(bndupds < 100_000 / 4, "batched: {bndupds} BNDUPDs");
    assert_eq!(p.eps[0].stats().updates_sent, 100_000);
}

#[test]
fn changes_survive_seeded_connection_resets() {
    for seed in [7, 99, 12345] {
        let mut p = Pair::cold(seed);
        p.jitter_ms = 20;
        to_normal(&mut p);
        p.reset_per_msg = 1.0 / 300.0;
        let expect = feed(&mut p, 0, 20_000, 200, 50);
        p.reset_per_msg = 0.0;
        settle(&mut p, &expect);
        assert!(p.resets > 0, "seed {seed}: no reset happened");
        assert!(p.nodes[1].applied >= 20_000, "seed {seed}");
        assert_eq!(p.nodes[1].db.len(), 20_000, "seed {seed}");
    }
}

#[test]
fn repeated_changes_coalesce_and_latest_wins() {
    let mut p = Pair::cold(5);
    to_normal(&mut p);
    let mut expect = HashMap::new();
    for round in 0..20u64 {
        let now_s = p.now / 1000;
        for k in 0..2000u32 {
            let mut b = lease(ip_n(k), now_s, u64::from(k));
            b.cltt_s = now_s + round; // newer each round
            expect.insert(b.ip, b.clone());
            p.change(b);
        }
        assert!(p.eps[0].queued_updates() <= 2000, "bounded by addresses");
        p.drive_for(5);
    }
    settle(&mut p, &expect);
    assert!(p.nodes[1].applied <= 40_000);
}

#[test]
fn link_cut_interrupts_and_restore_resynchronises() {
    for seed in [3, 4, 5] {
        let mut p = Pair::cold(seed);
        to_normal(&mut p);
        let mut expect = feed(&mut p, 0, 5_000, 500, 50);
        settle(&mut p, &expect);

        // Cut: both notice within tReceive (10 s) + a CONTACT interval.
        p.cut = true;
        let cut_at = p.now;
        let ok = p.drive_until(cut_at + 60_000, |p| {
            p.both(FailoverState::CommunicationsInterrupted)
        });
        assert!(ok, "seed {seed}: {:?} / {:?}", p.state(0), p.state(1));
        let took = p.now - cut_at;
        assert!((7_000..=10_100).contains(&took), "seed {seed}: {took} ms");
        assert!(p.nodes[0].closes.contains(&CloseReason::NoTraffic));
        assert!(p.nodes[1].closes.contains(&CloseReason::NoTraffic));

        // Changes made while cut (some also overwrite addresses the partner already has).
        let during = feed(&mut p, 4_000, 3_000, 300, 500);
        expect.extend(during.clone());
        assert_eq!(p.state(0), FailoverState::CommunicationsInterrupted);
        assert!(during
            .keys()
            .all(|ip| p.nodes[1].db.get(ip) != during.get(ip)));

        // Restore: NORMAL again, and everything arrives via the UPDREQ/resend path.
        let updreq_before = p.nodes[1].sent.get(&MessageType::UpdReq.to_u8()).copied();
        p.cut = false;
        to_normal(&mut p);
        settle(&mut p, &expect);
        let updreq_after = p.nodes[1].sent.get(&MessageType::UpdReq.to_u8()).copied();
        assert!(
            updreq_after > updreq_before,
            "seed {seed}: secondary sent UPDREQ"
        );
        assert!(p.nodes[0].sent[&MessageType::UpdDone.to_u8()] >= 1);
    }
}

#[test]
fn wrong_relationship_name_never_reaches_normal() {
    let mut p = Pair::new(
        11,
        sim_config("fo-sim", Role::Primary),
        sim_config("fo-other", Role::Secondary),
        None,
        None,
    );
    let reached = p.drive_until(T0 + 600_000, |p| {
        p.state(0) == FailoverState::Normal || p.state(1) == FailoverState::Normal
    });
    assert!(!reached);
    assert!(p.nodes[0].closes.len() > 10, "kept retrying");
    assert!(p.nodes[0].closes.iter().all(|c| *c
        == CloseReason::PeerRejected(
            ringlease::proto::wire::failover::RejectReason::InvalidPartner
        )));
    // After the startup timer neither serves: a relationship without history waits for its
    // partner's bindings in RECOVER (draft §9.3).
    assert!(p.both(FailoverState::Recover));
    assert_eq!(p.nodes[1].applied, 0);
}

#[test]
fn restart_from_persisted_normal_reaches_normal_without_recover() {
    let persisted = Some(Persisted {
        state: FailoverState::Normal,
        entered_at_s: T0 / 1000 - 3600,
        mclt_s: 600,
    });
    let mut p = Pair::new(
        8,
        sim_config("fo-sim", Role::Primary),
        sim_config("fo-sim", Role::Secondary),
        persisted,
        persisted,
    );
    to_normal(&mut p);
    let path: Vec<FailoverState> = p.nodes[1].states.iter().map(|s| s.2).collect();
    assert_eq!(
        path,
        [
            FailoverState::CommunicationsInterrupted,
            FailoverState::Normal
        ]
    );
}

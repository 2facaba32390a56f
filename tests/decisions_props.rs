//! Guards the one promise a DHCP server must never break: an address is never leased to two
//! clients at once. Random sequences of DISCOVER/REQUEST/RENEW/RELEASE/DECLINE/INIT-REBOOT from
//! many clients over a small pool, with time moving forward and expiry sweeps in between, are
//! checked against a model of every ACK handed out. The same holds for a failover pair whose
//! two servers hand out addresses side by side from their shares of the pool.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use proptest::prelude::*;
use ringlease::config::Config;
use ringlease::proto::failover::{Dialect, FailoverState, Role, ServiceGate};
use ringlease::proto::lease::{
    Change, Journal, LeaseState, PoolShare, StorageUnavailable, Volatile,
};
use ringlease::proto::server::{Decision, Policy, Server};
use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::options::code;

const START: u64 = 1_700_000_000;
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);

fn server() -> Server {
    let (policy, subnets) = settings("192.0.2.1");
    Server::new(policy, subnets)
}

/// The configuration both properties use, with `server_id`.
fn settings(server_id: &str) -> (Policy, ringlease::proto::subnet::Subnets) {
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = ["127.0.0.1:67"]
server_id = "{server_id}"
offer_hold = 5
decline_hold = 20

[[subnet]]
prefix = "10.10.0.0/16"
pools = ["10.10.1.1-10.10.1.6"]
lease_time = 30
min_lease_time = 10
max_lease_time = 60
"#
    ))
    .unwrap();
    let policy = Policy {
        server_id: config.server.server_id,
        offer_hold_s: config.server.offer_hold_s,
        decline_hold_s: config.server.decline_hold_s,
    };
    (policy, config.subnets)
}

#[derive(Clone, Debug)]
enum Op {
    Discover(u8),
    Select(u8),
    Renew(u8),
    InitReboot(u8, u8),
    Release(u8),
    Decline(u8),
    Wait(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0u8..10;
    prop_oneof![
        client.clone().prop_map(Op::Discover),
        client.clone().prop_map(Op::Select),
        client.clone().prop_map(Op::Renew),
        (client.clone(), 0u8..8).prop_map(|(c, a)| Op::InitReboot(c, a)),
        client.clone().prop_map(Op::Release),
        client.prop_map(Op::Decline),
        (1u8..40).prop_map(Op::Wait),
    ]
}

fn encode(
    msg: MessageType,
    client: u8,
    ciaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut buf = vec![0u8; 600];
    let mut w = PacketWriter::new(&mut buf, 600);
    w.set_op(1);
    w.set_htype(1);
    w.set_chaddr(&[2, 0, 0, 0, 0, client]);
    w.set_giaddr(RELAY);
    w.set_ciaddr(ciaddr);
    w.push_u8(code::MESSAGE_TYPE, msg as u8).unwrap();
    if let Some(ip) = requested {
        w.push_ip(code::REQUESTED_IP, ip).unwrap();
    }
    if let Some(ip) = server_id {
        w.push_ip(code::SERVER_ID, ip).unwrap();
    }
    let len = w.finish();
    buf.truncate(len);
    buf
}

/// An owned copy of a [`Change`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    ip: Ipv4Addr,
    seq: u64,
    state: LeaseState,
    expires_s: u64,
    since_s: u64,
    client: Vec<u8>,
    potential_expiry_s: u64,
    partner_expiry_s: u64,
    cltt_s: u64,
}

impl Record {
    fn of(c: &Change<'_>) -> Self {
        Record {
            ip: c.ip,
            seq: c.seq,
            state: c.state,
            expires_s: c.expires_s,
            since_s: c.since_s,
            client: c.client.to_vec(),
            potential_expiry_s: c.potential_expiry_s,
            partner_expiry_s: c.partner_expiry_s,
            cltt_s: c.cltt_s,
        }
    }

    fn change(&self) -> Change<'_> {
        Change {
            seq: self.seq,
            ip: self.ip,
            state: self.state,
            expires_s: self.expires_s,
            since_s: self.since_s,
            client: &self.client,
            potential_expiry_s: self.potential_expiry_s,
            partner_expiry_s: self.partner_expiry_s,
            cltt_s: self.cltt_s,
        }
    }
}

/// Keeps every change, like the lease log does; `fail` makes it refuse them, like a full disk.
#[derive(Default)]
struct Recorder {
    records: Vec<Record>,
    fail: bool,
}

impl Journal for Recorder {
    fn record(&mut self, change: &Change<'_>) -> Result<(), StorageUnavailable> {
        if self.fail {
            return Err(StorageUnavailable);
        }
        self.records.push(Record::of(change));
        Ok(())
    }
}

/// The table's records, with free addresses reduced to "free since seq": which client a free
/// address remembers, and since when, is a courtesy, not a promise.
fn table_records(server: &Server) -> Vec<Record> {
    let mut out = Vec::new();
    server.leases.visit_records(|c| {
        let mut r = Record::of(c);
        if matches!(r.state, LeaseState::Released | LeaseState::Expired) {
            r.state = LeaseState::Expired;
            r.expires_s = 0;
            r.since_s = 0;
            r.client.clear();
            r.potential_expiry_s = 0;
            r.partner_expiry_s = 0;
            r.cltt_s = 0;
        }
        out.push(r)
    });
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_address_is_acked_to_two_clients_at_once(ops in prop::collection::vec(op(), 1..200)) {
        run(&server(), &ops, &mut Volatile, START)?;
    }

    /// What the journal recorded is enough to rebuild the table after a restart: replaying the
    /// latest change of each address gives the same records, and every client that was ACKed
    /// still holds its address. A journal that refuses a change (full disk) leaves the table
    /// as if the request never came.
    #[test]
    fn the_journal_rebuilds_the_table(ops in prop::collection::vec(op(), 1..200), fail_at in 0usize..400) {
        let original = server();
        let mut journal = Recorder::default();
        let (half, rest) = ops.split_at(ops.len() / 2);
        let now = run(&original, half, &mut journal, START)?;
        journal.fail = fail_at % 2 == 0;
        let now = run(&original, rest, &mut journal, now)?;

        let restarted = server();
        let mut latest: HashMap<Ipv4Addr, Record> = HashMap::new();
        for r in journal.records {
            if latest.get(&r.ip).is_none_or(|l| l.seq < r.seq) {
                latest.insert(r.ip, r);
            }
        }
        for r in latest.values() {
            prop_assert!(restarted.leases.restore(&restarted.settings().subnets, &r.change()));
        }
        original.expire(now, &mut Volatile);
        restarted.expire(now, &mut Volatile);
        prop_assert_eq!(table_records(&original), table_records(&restarted));
    }
}

/// Plays `ops` against `server`, checking every ACK against the leases the clients hold.
/// Returns the time the run ended at.
fn run(
    server: &Server,
    ops: &[Op],
    journal: &mut dyn Journal,
    start: u64,
) -> Result<u64, TestCaseError> {
    let server_id = Some(server.settings().policy.server_id);
    let mut now = start;
    // What each client believes: the last offer it saw and the lease it was ACKed.
    let mut offered: HashMap<u8, Ipv4Addr> = HashMap::new();
    let mut leased: HashMap<u8, (Ipv4Addr, u64)> = HashMap::new();
    for op in ops {
        let Some(client) = op.client() else {
            now += op.wait_s();
            server.expire(now, &mut Volatile);
            continue;
        };
        let lease = leased.get(&client).map(|&(ip, _)| ip);
        let Some(bytes) = message(op, offered.get(&client).copied(), lease, server_id) else {
            continue;
        };
        if matches!(op, Op::Release(_) | Op::Decline(_)) {
            leased.remove(&client);
        }
        let packet = Packet::parse(&bytes).unwrap();
        let Decision::Reply(reply) = server.decide(&packet, Ipv4Addr::UNSPECIFIED, now, journal)
        else {
            continue;
        };
        match reply.message_type {
            MessageType::Offer => {
                offered.insert(client, reply.yiaddr);
            }
            MessageType::Ack => {
                let ip = reply.yiaddr;
                let expires = now + u64::from(reply.lease_time_s.unwrap());
                for (&other, &(other_ip, other_expires)) in &leased {
                    prop_assert!(
                            other == client || other_ip != ip || other_expires <= now,
                            "{ip} ACKed to client {client} while client {other} holds it until {other_expires} (now {now})"
                        );
                }
                leased.insert(client, (ip, expires));
            }
            MessageType::Nak => {
                leased.remove(&client);
            }
            _ => {}
        }
    }
    Ok(now)
}

impl Op {
    /// The client sending the message; `None` for [`Op::Wait`].
    fn client(&self) -> Option<u8> {
        match *self {
            Op::Discover(c)
            | Op::Select(c)
            | Op::Renew(c)
            | Op::InitReboot(c, _)
            | Op::Release(c)
            | Op::Decline(c) => Some(c),
            Op::Wait(_) => None,
        }
    }

    fn wait_s(&self) -> u64 {
        match *self {
            Op::Wait(s) => u64::from(s),
            _ => 0,
        }
    }
}

/// The packet `op`'s client sends, given the last offer it saw and the address it was ACKed;
/// `None` when it has nothing to send (no offer to select, no lease to renew or give back).
fn message(
    op: &Op,
    offered: Option<Ipv4Addr>,
    leased: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
) -> Option<Vec<u8>> {
    let none = Ipv4Addr::UNSPECIFIED;
    Some(match *op {
        Op::Wait(_) => return None,
        Op::Discover(c) => encode(MessageType::Discover, c, none, None, None),
        Op::Select(c) => encode(MessageType::Request, c, none, Some(offered?), server_id),
        Op::Renew(c) => encode(MessageType::Request, c, leased?, None, None),
        Op::InitReboot(c, a) => {
            let ip = Ipv4Addr::new(10, 10, 1, a);
            encode(MessageType::Request, c, none, Some(ip), None)
        }
        Op::Release(c) => encode(MessageType::Release, c, leased?, None, server_id),
        Op::Decline(c) => encode(MessageType::Decline, c, none, Some(leased?), server_id),
    })
}

// ------------------------------------------------------------------------------------------
// A failover pair
// ------------------------------------------------------------------------------------------

/// Short against the 30 s lease, so it cuts most first leases.
const MCLT_S: u32 = 15;

/// States a server's failover thread may put its gate in, as the pair property picks them.
const STATES: [FailoverState; 5] = [
    FailoverState::Normal,
    FailoverState::CommunicationsInterrupted,
    FailoverState::PartnerDown,
    FailoverState::RecoverDone,
    FailoverState::Startup,
];

#[derive(Clone, Debug)]
enum PairOp {
    /// A client message to server 0 (the primary) or 1 (the secondary), or time passing.
    To(usize, Op),
    /// Server `.0`'s failover state becomes `STATES[.1]`.
    State(usize, usize),
}

fn pair_op() -> impl Strategy<Value = PairOp> {
    prop_oneof![
        10 => (0usize..2, op()).prop_map(|(s, o)| PairOp::To(s, o)),
        1 => (0usize..2, 0..STATES.len()).prop_map(|(s, i)| PairOp::State(s, i)),
    ]
}

/// A primary and a secondary configured alike (pool, 50 % share each, split 128), both
/// answering every client (COMMUNICATIONS-INTERRUPTED: neither hears of the other's leases).
fn pair() -> [(Server, Arc<ServiceGate>); 2] {
    [(Role::Primary, "192.0.2.1"), (Role::Secondary, "192.0.2.2")].map(|(role, id)| {
        let (policy, subnets) = settings(id);
        let gate = Arc::new(ServiceGate::new(role, Dialect::Ringlease, 128));
        gate.set_state(FailoverState::CommunicationsInterrupted, MCLT_S, 0);
        let share = PoolShare::new(role, 128, None);
        let server = Server::with_failover(policy, subnets, Some(share), Some(gate.clone()));
        (server, gate)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Two servers of a failover pair that cannot talk hand out addresses side by side; each
    /// client talks to either, at random, and the failover states change under them. No
    /// address may be ACKed to two clients at once across both, and no ACK may outlast the
    /// MCLT where the state bounds it.
    #[test]
    fn a_failover_pair_never_leases_one_address_twice(ops in prop::collection::vec(pair_op(), 1..300)) {
        run_pair(&pair(), &ops)?;
    }
}

fn run_pair(pair: &[(Server, Arc<ServiceGate>); 2], ops: &[PairOp]) -> Result<(), TestCaseError> {
    let mut now = START;
    // What each client believes of each server: the last offer and the lease it was ACKed.
    let mut offered: HashMap<(usize, u8), Ipv4Addr> = HashMap::new();
    let mut leased: HashMap<(usize, u8), Ipv4Addr> = HashMap::new();
    // The truth the ACKs and RELEASE/DECLINE answers told: address → (client, lease end).
    let mut holders: HashMap<Ipv4Addr, (u8, u64)> = HashMap::new();
    // PARTNER-DOWN means the partner is down: from then on it answers nobody (its return
    // through RECOVER needs replication, which the chaos simulation covers).
    let mut down: Option<usize> = None;
    for op in ops {
        let (at, op) = match op {
            PairOp::State(at, _) if down == Some(*at) => continue,
            PairOp::State(at, state) => {
                pair[*at].1.set_state(STATES[*state], MCLT_S, now);
                if STATES[*state] == FailoverState::PartnerDown {
                    down = Some(1 - *at);
                    pair[1 - *at]
                        .1
                        .set_state(FailoverState::Startup, MCLT_S, now);
                }
                continue;
            }
            PairOp::To(at, op) => (*at, op),
        };
        let (server, gate) = &pair[at];
        let Some(client) = op.client() else {
            now += op.wait_s();
            for (server, _) in pair {
                server.expire(now, &mut Volatile);
            }
            continue;
        };
        let server_id = Some(server.settings().policy.server_id);
        let mine = leased.get(&(at, client)).copied();
        let Some(bytes) = message(op, offered.get(&(at, client)).copied(), mine, server_id) else {
            continue;
        };
        let packet = Packet::parse(&bytes).unwrap();
        match server.decide(&packet, Ipv4Addr::UNSPECIFIED, now, &mut Volatile) {
            Decision::Reply(reply) if reply.message_type == MessageType::Offer => {
                offered.insert((at, client), reply.yiaddr);
            }
            Decision::Reply(reply) if reply.message_type == MessageType::Ack => {
                let ip = reply.yiaddr;
                let lease_s = reply.lease_time_s.unwrap();
                if gate.state() != Some(FailoverState::PartnerDown) {
                    // No partner ever acknowledged a binding: every lease is within the MCLT.
                    prop_assert!(lease_s <= MCLT_S, "{lease_s} s beyond the MCLT");
                }
                if let Some(&(other, until)) = holders.get(&ip) {
                    prop_assert!(
                        other == client || until <= now,
                        "{ip} ACKed to client {client} by server {at} while client {other} holds it until {until} (now {now})"
                    );
                }
                // A client holds one address per server: one it moved from is given back.
                if let Some(old) = leased.insert((at, client), ip).filter(|&old| old != ip) {
                    if holders.get(&old).is_some_and(|&(c, _)| c == client) {
                        holders.remove(&old);
                    }
                }
                holders.insert(ip, (client, now + u64::from(lease_s)));
            }
            Decision::Reply(reply) if reply.message_type == MessageType::Nak => {
                leased.remove(&(at, client));
            }
            Decision::Done => {
                // A RELEASE or DECLINE was taken: the client no longer holds the address.
                if let Some(ip) = leased.remove(&(at, client)) {
                    if holders.get(&ip).is_some_and(|&(c, _)| c == client) {
                        holders.remove(&ip);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

//! Guards the one promise a DHCP server must never break: an address is never leased to two
//! clients at once. Random sequences of DISCOVER/REQUEST/RENEW/RELEASE/DECLINE/INIT-REBOOT from
//! many clients over a small pool, with time moving forward and expiry sweeps in between, are
//! checked against a model of every ACK handed out.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use ringlease::config::Config;
use ringlease::proto::lease::{Change, Journal, LeaseState, StorageUnavailable, Volatile};
use ringlease::proto::server::{Decision, Policy, Server};
use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::options::code;

const START: u64 = 1_700_000_000;
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);

fn server() -> Server {
    let config = Config::from_toml(
        r#"
[server]
listen = ["127.0.0.1:67"]
server_id = "192.0.2.1"
offer_hold = 5
decline_hold = 20

[[subnet]]
prefix = "10.10.0.0/16"
pools = ["10.10.1.1-10.10.1.6"]
lease_time = 30
min_lease_time = 10
max_lease_time = 60
"#,
    )
    .unwrap();
    let policy = Policy {
        server_id: config.server.server_id,
        offer_hold_s: config.server.offer_hold_s,
        decline_hold_s: config.server.decline_hold_s,
    };
    Server::new(policy, config.subnets)
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
        original.expire(now);
        restarted.expire(now);
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
    for op in ops.iter().cloned() {
        let (client, bytes) = match op {
            Op::Wait(s) => {
                now += u64::from(s);
                server.expire(now);
                continue;
            }
            Op::Discover(c) => (
                c,
                encode(MessageType::Discover, c, Ipv4Addr::UNSPECIFIED, None, None),
            ),
            Op::Select(c) => match offered.get(&c) {
                Some(&ip) => (
                    c,
                    encode(
                        MessageType::Request,
                        c,
                        Ipv4Addr::UNSPECIFIED,
                        Some(ip),
                        server_id,
                    ),
                ),
                None => continue,
            },
            Op::Renew(c) => match leased.get(&c) {
                Some(&(ip, _)) => (c, encode(MessageType::Request, c, ip, None, None)),
                None => continue,
            },
            Op::InitReboot(c, a) => {
                let ip = Ipv4Addr::new(10, 10, 1, a);
                (
                    c,
                    encode(
                        MessageType::Request,
                        c,
                        Ipv4Addr::UNSPECIFIED,
                        Some(ip),
                        None,
                    ),
                )
            }
            Op::Release(c) => match leased.remove(&c) {
                Some((ip, _)) => (c, encode(MessageType::Release, c, ip, None, server_id)),
                None => continue,
            },
            Op::Decline(c) => match leased.remove(&c) {
                Some((ip, _)) => (
                    c,
                    encode(
                        MessageType::Decline,
                        c,
                        Ipv4Addr::UNSPECIFIED,
                        Some(ip),
                        server_id,
                    ),
                ),
                None => continue,
            },
        };
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

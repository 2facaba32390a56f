//! The event loop: one thread, one relay socket, all clients in a flat Vec. Each loop turn issues the exchanges the
//! open-loop token bucket allows, fires due retransmission timers, sends the batch, then receives a batch of replies
//! (which may queue the next message of an exchange) and sends again.

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::options::code;
use ringlease_ring::{DatagramIo, SendQueue};

use crate::client::{mix64, split_xid, xid, Backoff, Client, Identity, Kind, Scenario, State};
use crate::stats::{Pair, ServerStats, Stats, Violation};

/// New exchanges issued per loop turn at most, so receiving keeps pace when the bucket is far behind.
const ISSUE_BURST: u64 = 512;
/// Datagrams taken per receive call; each may queue one message (to each server), so this stays below the send queue
/// capacity (the receive call takes RECV_BATCH / number of servers).
const RECV_BATCH: usize = 1024;
/// Most `--server`s: a message goes to each of them, so RECV_BATCH * MAX_SERVERS must fit SEND_QUEUE.
pub const MAX_SERVERS: usize = 8;
const SEND_QUEUE: usize = 8192;
/// Longest sleep in one receive call: the timer wheel has millisecond slots.
const MAX_WAIT: Duration = Duration::from_millis(1);
/// Clients looked at to find one that is not mid-exchange before giving up for this turn.
const BUSY_PROBE: u32 = 64;
/// Our requests fit the 576-byte minimum every server must accept.
const REQUEST_LIMIT: usize = 576;
/// Parameter request list: subnet mask, routers, DNS, domain name, lease time, server id.
const PRL: [u8; 6] = [1, 3, 6, 15, 51, 54];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub net: u32,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not IP/PREFIX"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("bad address in {s:?}"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("bad prefix length in {s:?}"))?;
        Ok(Subnet {
            net: u32::from(ip) & Self::mask(prefix),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn contains(&self, ip: u32) -> bool {
        ip & Self::mask(self.prefix) == self.net
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// The DHCP servers, as a relay agent's helper addresses: at least one, at most [`MAX_SERVERS`], distinct. With
    /// several, every message a client broadcasts goes to each of them and the client takes the first OFFER; its
    /// renewals and releases go to the server it chose (see [`to_every_server`]).
    pub servers: Vec<SocketAddrV4>,
    pub giaddr: Ipv4Addr,
    pub clients: u32,
    pub seed: u64,
    pub scenario: Scenario,
    pub backoff: Backoff,
    pub client_id: bool,
    pub subnet: Option<Subnet>,
    pub keep_violations: usize,
    /// Print the live progress line (only when stderr is a terminal).
    pub progress: bool,
}

/// One open-loop run: `rate` exchanges/s until `duration` or `exchanges`, then up to `drain` for the answers.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub rate: f64,
    pub duration: Option<Duration>,
    pub exchanges: Option<u64>,
    pub drain: Duration,
}

const NO_OWNER: u32 = u32::MAX;

/// Which simulated client holds each address: a dense array over the expected subnet when it is known (4 bytes per
/// address, no hashing), else a hash map.
enum Owners {
    Dense { base: u32, owner: Vec<u32> },
    Sparse(HashMap<u32, u32>),
}

impl Owners {
    fn new(subnet: Option<Subnet>) -> Owners {
        match subnet {
            Some(s) if s.prefix >= 8 => Owners::Dense {
                base: s.net,
                owner: vec![NO_OWNER; 1usize << (32 - s.prefix)],
            },
            _ => Owners::Sparse(HashMap::new()),
        }
    }

    fn slot(&mut self, ip: u32) -> Option<&mut u32> {
        match self {
            Owners::Dense { base, owner } => owner.get_mut(ip.wrapping_sub(*base) as usize),
            Owners::Sparse(m) => Some(m.entry(ip).or_insert(NO_OWNER)),
        }
    }

    fn get(&self, ip: u32) -> u32 {
        match self {
            Owners::Dense { base, owner } => owner
                .get(ip.wrapping_sub(*base) as usize)
                .copied()
                .unwrap_or(NO_OWNER),
            Owners::Sparse(m) => m.get(&ip).copied().unwrap_or(NO_OWNER),
        }
    }

    fn clear_if(&mut self, ip: u32, client: u32) {
        match self {
            Owners::Dense { .. } => {
                if let Some(o) = self.slot(ip).filter(|o| **o == client) {
                    *o = NO_OWNER;
                }
            }
            Owners::Sparse(m) => {
                if m.get(&ip) == Some(&client) {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// Retransmission timers in 1 ms slots (65 s span; longer delays are clamped). A stale entry (the message was
/// answered) is recognised by its stamp and skipped, so nothing is ever removed early.
struct Wheel {
    slots: Vec<Vec<(u32, u16)>>,
    /// Next millisecond to process.
    cursor: u64,
}

const WHEEL_SLOTS: u64 = 65_536;

impl Wheel {
    fn new() -> Wheel {
        Wheel {
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            cursor: 0,
        }
    }

    fn arm(&mut self, at_ms: u64, client: u32, stamp: u16) {
        // Never into the slot being processed (it is taken out while it runs), never past the span.
        let at = at_ms.clamp(self.cursor + 1, self.cursor + WHEEL_SLOTS - 1);
        self.slots[(at % WHEEL_SLOTS) as usize].push((client, stamp));
    }

    /// Takes the entries of the next due slot (≤ now_ms), or None when nothing more is due.
    fn take_due(&mut self, now_ms: u64, into: &mut Vec<(u32, u16)>) -> bool {
        while self.cursor <= now_ms {
            let slot = &mut self.slots[(self.cursor % WHEEL_SLOTS) as usize];
            self.cursor += 1;
            if !slot.is_empty() {
                std::mem::swap(slot, into);
                return true;
            }
        }
        false
    }

    fn clear(&mut self) {
        self.slots.iter_mut().for_each(Vec::clear);
    }
}

pub struct Engine {
    s: Settings,
    identity: Identity,
    clients: Vec<Client>,
    owners: Owners,
    wheel: Wheel,
    due: Vec<(u32, u16)>,
    queue: SendQueue,
    epoch: Instant,
    next_client: u32,
    in_flight: u64,
    /// Option 54 of the first reply of each server (`--server` order): every later reply of it must carry the same.
    server_ids: Vec<Option<u32>>,
    exchange_seq: u64,
    stats: Stats,
    /// Wall clock at `epoch`, ms since 1970.
    epoch_unix_ms: u64,
    /// When the current run or step began, µs since `epoch`.
    phase_start_us: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// With several servers, what the relay agent forwards to every one of them: everything a client broadcasts
/// (DISCOVER, the SELECTING and INIT-REBOOT REQUESTs, DECLINE; RFC 2131 §4.4). A renewal (REQUEST from RENEWING) and a
/// RELEASE are the client's unicast to the server it chose, so they go to that server only.
pub fn to_every_server(t: MessageType, state: State) -> bool {
    !matches!(
        (t, state),
        (MessageType::Request, State::Renewing) | (MessageType::Release, _)
    )
}

/// Where message `t` of client `c` goes: every server, or (a single server, or a unicast message) the client's.
fn targets<'a>(servers: &'a [SocketAddrV4], c: &Client, t: MessageType) -> &'a [SocketAddrV4] {
    if servers.len() > 1 && to_every_server(t, c.state) {
        servers
    } else {
        let i = usize::from(c.server).min(servers.len() - 1);
        &servers[i..=i]
    }
}

/// One client's binding at the end of a run, for `--bindings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub index: u32,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// The server the client chose (its renewals went there).
    pub server: SocketAddrV4,
    /// The exchange that last ACKed the address, and when it started (ms since 1970).
    pub kind: Kind,
    pub since_unix_ms: u64,
}

impl Engine {
    pub fn new(s: Settings) -> Engine {
        Engine {
            identity: Identity::new(s.seed),
            clients: vec![Client::NEW; s.clients as usize],
            owners: Owners::new(s.subnet),
            wheel: Wheel::new(),
            due: Vec::new(),
            queue: SendQueue::new(SEND_QUEUE),
            epoch: Instant::now(),
            next_client: 0,
            in_flight: 0,
            server_ids: vec![None; s.servers.len()],
            exchange_seq: 0,
            stats: Stats::new(s.keep_violations),
            epoch_unix_ms: unix_ms(),
            phase_start_us: 0,
            s,
        }
    }

    fn multi(&self) -> bool {
        self.s.servers.len() > 1
    }

    /// Would one more message (one datagram per server) overflow the send queue?
    fn queue_full(&self) -> bool {
        self.queue.len() + self.s.servers.len() > self.queue.capacity()
    }

    /// Fresh counters for a run or step (per server too, with several).
    fn fresh_stats(&self) -> Stats {
        let mut st = Stats::new(self.s.keep_violations);
        if self.multi() {
            st.by_server = vec![ServerStats::default(); self.s.servers.len()];
        }
        st.start_unix_ms = unix_ms();
        st
    }

    /// Which of the servers sent a reply from `src`: the same address and port, else the same address. Always the
    /// first with a single server; None if no server has that address.
    fn server_of(&self, src: SocketAddrV4) -> Option<usize> {
        if !self.multi() {
            return Some(0);
        }
        let servers = &self.s.servers;
        servers
            .iter()
            .position(|s| *s == src)
            .or_else(|| servers.iter().position(|s| s.ip() == src.ip()))
    }

    /// Counts an answer of `server` (only kept with several servers).
    fn count_answer(
        &mut self,
        server: Option<usize>,
        now: u64,
        what: impl FnOnce(&mut ServerStats),
    ) {
        let since = now.saturating_sub(self.phase_start_us);
        if let Some(st) = server.and_then(|i| self.stats.by_server.get_mut(i)) {
            st.count_answer(since);
            what(st);
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Runs one phase and returns its statistics. Client states and the address map carry over to the next phase;
    /// exchanges still unanswered after the drain are abandoned (counted as `unfinished`).
    pub fn run_phase(&mut self, io: &mut dyn DatagramIo, phase: Phase) -> std::io::Result<Stats> {
        self.stats = self.fresh_stats();
        let start = Instant::now();
        self.phase_start_us = self.now_us();
        let recv_batch = RECV_BATCH / self.s.servers.len().max(1);
        let show = self.s.progress && std::io::stderr().is_terminal();
        let mut last_tick = (start, 0u64);
        let mut issued = 0u64;
        let mut issuing = true;
        let mut drain_until = start;
        loop {
            let now = Instant::now();
            let elapsed = now - start;
            let mut wait = MAX_WAIT;
            if issuing {
                let done = phase.duration.is_some_and(|d| elapsed >= d)
                    || phase.exchanges.is_some_and(|n| issued >= n);
                if done {
                    issuing = false;
                    self.stats.issue_secs = elapsed.as_secs_f64();
                    drain_until = now + phase.drain;
                } else {
                    let mut due = (elapsed.as_secs_f64() * phase.rate) as u64 + 1;
                    if let Some(n) = phase.exchanges {
                        due = due.min(n);
                    }
                    let mut budget = due.saturating_sub(issued).min(ISSUE_BURST);
                    while budget > 0 && self.start_exchange() {
                        issued += 1;
                        budget -= 1;
                        if self.queue_full() {
                            self.flush(io)?;
                        }
                    }
                    // Sleep until the next token is due (no sleep when behind).
                    let next = Duration::from_secs_f64(issued as f64 / phase.rate.max(1e-3));
                    wait = next.saturating_sub(elapsed).min(MAX_WAIT);
                }
            }
            if !issuing && (self.in_flight == 0 || now >= drain_until) {
                break;
            }
            self.expire_timers(io)?;
            self.flush(io)?;
            io.recv_batch(recv_batch, wait, &mut |d| self.on_datagram(d.data, d.src))?;
            self.flush(io)?;
            if show && now - last_tick.0 >= Duration::from_secs(1) {
                let done = self.stats.completed_total();
                let rate = (done - last_tick.1) as f64 / (now - last_tick.0).as_secs_f64();
                let (_, h) = self.stats.main_exchange();
                eprint!(
                    "\r[{:>5.1}s] rate {:>9.0}/s  in-flight {:>7}  p99 {:>8} us  drops {:>7}  violations {}   ",
                    elapsed.as_secs_f64(),
                    rate,
                    self.in_flight,
                    h.value_at_quantile(0.99),
                    self.stats.drops,
                    self.stats.violations.total()
                );
                let _ = std::io::stderr().flush();
                last_tick = (now, done);
            }
        }
        if show && last_tick.1 > 0 {
            eprintln!();
        }
        self.abandon_in_flight();
        self.stats.total_secs = start.elapsed().as_secs_f64();
        Ok(std::mem::replace(
            &mut self.stats,
            Stats::new(self.s.keep_violations),
        ))
    }

    fn abandon_in_flight(&mut self) {
        self.stats.unfinished = self.in_flight;
        if self.in_flight > 0 {
            for i in 0..self.clients.len() {
                if self.clients[i].state.waiting() {
                    self.drop_lease(i as u32);
                }
            }
        }
        self.in_flight = 0;
        self.wheel.clear();
    }

    fn flush(&mut self, io: &mut dyn DatagramIo) -> std::io::Result<()> {
        if !self.queue.is_empty() {
            let r = io.send_batch(&mut self.queue)?;
            self.stats.send_failed += r.failed as u64;
        }
        Ok(())
    }

    /// Starts the next exchange on the next idle client; false when the clients probed were all busy.
    fn start_exchange(&mut self) -> bool {
        let n = self.s.clients;
        let mut idx = None;
        for _ in 0..BUSY_PROBE.min(n) {
            let i = self.next_client;
            self.next_client = if i + 1 >= n { 0 } else { i + 1 };
            if !self.clients[i as usize].state.waiting() {
                idx = Some(i);
                break;
            }
        }
        let Some(idx) = idx else {
            self.stats.busy_skips += 1;
            return false;
        };
        let noise = mix64(self.s.seed ^ self.exchange_seq.rotate_left(17));
        self.exchange_seq += 1;
        let now = self.now_us();
        let c = &mut self.clients[idx as usize];
        let kind = self.s.scenario.next_kind(c.state, noise);
        c.generation = c.generation.wrapping_add(1);
        c.kind = kind;
        c.started_us = now;
        c.tries = 0;
        self.stats.started[kind as usize] += 1;
        match kind {
            Kind::Dora => {
                self.drop_lease(idx);
                self.clients[idx as usize].state = State::Selecting;
                self.in_flight += 1;
                self.transmit(idx, MessageType::Discover);
            }
            Kind::Renew | Kind::InitReboot | Kind::Echo => {
                c.state = match kind {
                    Kind::Renew => State::Renewing,
                    Kind::InitReboot => State::Rebooting,
                    _ => State::Echoing,
                };
                self.in_flight += 1;
                let t = if kind == Kind::Echo {
                    MessageType::Discover
                } else {
                    MessageType::Request
                };
                self.transmit(idx, t);
            }
            Kind::Release | Kind::Decline => {
                // Fire and forget (no answer exists): the exchange is complete once sent.
                let t = if kind == Kind::Release {
                    MessageType::Release
                } else {
                    MessageType::Decline
                };
                self.transmit(idx, t);
                self.drop_lease(idx);
                self.stats.completed[kind as usize] += 1;
            }
        }
        true
    }

    /// The client gives up its address (if it had one) and returns to INIT.
    fn drop_lease(&mut self, idx: u32) {
        let c = &mut self.clients[idx as usize];
        if c.state.holds_address() {
            self.owners.clear_if(c.ip, idx);
        }
        c.state = State::Init;
    }

    /// Queues message `t` of client `idx` and, when an answer is expected, arms its retransmission timer.
    fn transmit(&mut self, idx: u32, t: MessageType) {
        let now = self.now_us();
        let c = &mut self.clients[idx as usize];
        c.tries = c.tries.saturating_add(1);
        c.sent_us = now;
        let c = *c;
        let (identity, s) = (self.identity, &self.s);
        // Counted once per message, however many servers it goes to (drops and retransmissions are per message).
        let mut queued = false;
        for &to in targets(&s.servers, &c, t) {
            if self.queue.push(0, to, None, |buf| {
                write_message(buf, &identity, s, idx, &c, t, now).unwrap_or(0)
            }) {
                queued = true;
            } else {
                self.stats.send_failed += 1;
            }
        }
        if queued {
            self.stats.sent[t as usize - 1] += 1;
        }
        if !matches!(t, MessageType::Release | MessageType::Decline) {
            let noise = mix64(self.s.seed ^ (u64::from(idx) << 16) ^ u64::from(c.timer_stamp()));
            let at = now / 1000 + self.s.backoff.delay_ms(c.tries, noise);
            self.wheel.arm(at, idx, c.timer_stamp());
        }
    }

    fn expire_timers(&mut self, io: &mut dyn DatagramIo) -> std::io::Result<()> {
        let now_ms = self.now_us() / 1000;
        let mut due = std::mem::take(&mut self.due);
        while self.wheel.take_due(now_ms, &mut due) {
            for &(idx, stamp) in &due {
                if self.queue_full() {
                    self.flush(io)?;
                }
                self.on_timer(idx, stamp);
            }
            due.clear();
        }
        self.due = due;
        Ok(())
    }

    fn on_timer(&mut self, idx: u32, stamp: u16) {
        let c = self.clients[idx as usize];
        if !c.state.waiting() || c.timer_stamp() != stamp {
            return; // answered meanwhile
        }
        self.stats.drops += 1;
        if c.tries >= self.s.backoff.max_tries {
            self.stats.timed_out += 1;
            self.in_flight -= 1;
            self.drop_lease(idx);
            return;
        }
        self.stats.retransmitted += 1;
        let t = match c.state {
            State::Selecting | State::Echoing => MessageType::Discover,
            _ => MessageType::Request,
        };
        self.transmit(idx, t);
    }

    fn violation(&mut self, v: Violation, client: Option<u32>, detail: impl FnOnce() -> String) {
        self.stats.violations.add(v, client, detail);
    }

    /// One received datagram from `src`. Never panics on bad bytes: anything wrong is a counted violation.
    fn on_datagram(&mut self, data: &[u8], src: SocketAddrV4) {
        self.stats.received += 1;
        let now = self.now_us();
        let server = self.server_of(src);
        let p = match Packet::parse(data) {
            Ok(p) => p,
            Err(e) => {
                return self.violation(Violation::Malformed, None, || {
                    format!("{} ({} bytes)", e.name(), data.len())
                })
            }
        };
        let (idx, generation) = split_xid(p.xid());
        if idx >= self.s.clients {
            return self.violation(Violation::UnknownXid, None, || {
                format!("xid {:#010x}", p.xid())
            });
        }
        let mac = self.identity.mac(idx);
        if p.hlen() != 6 || p.chaddr().get(..6) != Some(&mac[..]) {
            return self.violation(Violation::ChaddrMismatch, Some(idx), || {
                format!("xid {:#010x} but chaddr {:02x?}", p.xid(), p.chaddr())
            });
        }
        let c = self.clients[idx as usize];
        if generation != c.generation || !c.state.waiting() {
            self.stats.stale += 1;
            return;
        }
        if c.state == State::Echoing {
            if p.op() == 1 && p.message_type() == MessageType::Discover {
                self.stats.answered += 1;
                self.count_answer(server, now, |_| {});
                self.stats.record_pair(Pair::Echo, now - c.sent_us);
                self.complete(idx, now);
            } else {
                self.violation(Violation::EchoMismatch, Some(idx), || {
                    format!(
                        "sent a DISCOVER, got op {} {}",
                        p.op(),
                        p.message_type().name()
                    )
                });
            }
            return;
        }
        if p.op() != 2 {
            return self.violation(Violation::NotAReply, Some(idx), || format!("op {}", p.op()));
        }
        let mt = p.message_type();
        match (c.state, mt) {
            (State::Selecting, MessageType::Offer) => {
                self.stats.answered += 1;
                self.count_answer(server, now, |st| st.offers_taken += 1);
                self.stats.record_pair(Pair::DiscoverOffer, now - c.sent_us);
                self.check_common(idx, &p, server);
                // The first OFFER wins: the client's REQUEST names that server, and its renewals go there.
                let sid = p.server_id();
                let chosen = server
                    .or_else(|| {
                        sid.and_then(|id| self.s.servers.iter().position(|s| *s.ip() == id))
                    })
                    .unwrap_or(0);
                let cl = &mut self.clients[idx as usize];
                cl.ip = u32::from(p.yiaddr());
                cl.server_id = sid.map_or(u32::from(*self.s.servers[chosen].ip()), u32::from);
                cl.server = chosen as u8;
                cl.state = State::Requesting;
                cl.tries = 0;
                self.transmit(idx, MessageType::Request);
            }
            (State::Requesting | State::Renewing | State::Rebooting, MessageType::Ack) => {
                self.stats.answered += 1;
                self.count_answer(server, now, |st| st.acks += 1);
                let pair = match c.state {
                    State::Requesting => Pair::RequestAck,
                    State::Renewing => Pair::RenewAck,
                    _ => Pair::RebootAck,
                };
                self.stats.record_pair(pair, now - c.sent_us);
                self.check_common(idx, &p, server);
                self.check_selected(idx, &p, c);
                if self.multi() && c.state == State::Rebooting {
                    // INIT-REBOOT went to every server: the first ACK's server is the client's from now on.
                    let chosen = server.unwrap_or(usize::from(c.server));
                    let cl = &mut self.clients[idx as usize];
                    cl.server = chosen as u8;
                    cl.server_id = p
                        .server_id()
                        .map_or(u32::from(*self.s.servers[chosen].ip()), u32::from);
                }
                let yiaddr = u32::from(p.yiaddr());
                if yiaddr != c.ip {
                    self.violation(Violation::AckAddressMismatch, Some(idx), || {
                        format!("requested {}, ACKed {}", Ipv4Addr::from(c.ip), p.yiaddr())
                    });
                }
                self.bind(idx, yiaddr);
                self.complete(idx, now);
            }
            (State::Requesting | State::Renewing | State::Rebooting, MessageType::Nak) => {
                self.stats.answered += 1;
                self.count_answer(server, now, |st| st.naks += 1);
                self.stats.naks += 1;
                self.check_server_id(idx, &p, server);
                self.check_selected(idx, &p, c);
                self.in_flight -= 1;
                self.drop_lease(idx);
            }
            // A second OFFER for a retransmitted DISCOVER, arriving after the first moved us on.
            (State::Requesting, MessageType::Offer) => self.stats.stale += 1,
            (state, mt) => self.violation(Violation::UnexpectedType, Some(idx), || {
                format!("{} while {state:?}", mt.name())
            }),
        }
    }

    fn complete(&mut self, idx: u32, now: u64) {
        let c = &mut self.clients[idx as usize];
        self.stats.completed[c.kind as usize] += 1;
        self.stats
            .record_exchange(c.kind, now.saturating_sub(c.started_us));
        c.state = if c.state == State::Echoing {
            State::Init
        } else {
            State::Bound
        };
        self.in_flight -= 1;
    }

    /// Checks every OFFER and ACK must pass: yiaddr in the subnet, lease time present, server identifier stable.
    fn check_common(&mut self, idx: u32, p: &Packet<'_>, server: Option<usize>) {
        let y = u32::from(p.yiaddr());
        if y == 0 || self.s.subnet.is_some_and(|s| !s.contains(y)) {
            self.violation(Violation::YiaddrOutsideSubnet, Some(idx), || {
                format!("{} yiaddr {}", p.message_type().name(), p.yiaddr())
            });
        }
        if p.lease_time_s().is_none() {
            self.violation(Violation::NoLeaseTime, Some(idx), || {
                format!("{} without option 51", p.message_type().name())
            });
        }
        self.check_server_id(idx, p, server);
    }

    /// With several servers: an ACK or NAK to a SELECTING REQUEST must come from the server the REQUEST named.
    fn check_selected(&mut self, idx: u32, p: &Packet<'_>, c: Client) {
        if !self.multi() || c.state != State::Requesting {
            return;
        }
        if let Some(got) = p.server_id().filter(|got| u32::from(*got) != c.server_id) {
            self.violation(Violation::UnselectedServer, Some(idx), || {
                format!(
                    "{} from {got}, but the REQUEST named {}",
                    p.message_type().name(),
                    Ipv4Addr::from(c.server_id)
                )
            });
        }
    }

    /// Option 54 is present and, per server (the one `server` names; always the first with a single server), the
    /// same as in its first reply.
    fn check_server_id(&mut self, idx: u32, p: &Packet<'_>, server: Option<usize>) {
        let first = server.and_then(|i| self.server_ids.get(i).copied().map(|f| (i, f)));
        match (p.server_id().map(u32::from), first) {
            (None, _) => self.violation(Violation::NoServerId, Some(idx), || {
                format!("{} without option 54", p.message_type().name())
            }),
            // A reply from an address that is none of the servers': nothing to compare with.
            (Some(_), None) => {}
            (Some(got), Some((i, None))) => self.server_ids[i] = Some(got),
            (Some(got), Some((_, Some(first)))) if got != first => {
                self.violation(Violation::ServerIdChanged, Some(idx), || {
                    format!(
                        "{} now, {} first",
                        Ipv4Addr::from(got),
                        Ipv4Addr::from(first)
                    )
                })
            }
            _ => {}
        }
    }

    /// Records that `idx` holds `ip`; a violation if another simulated client holds it at the same time.
    fn bind(&mut self, idx: u32, ip: u32) {
        let other = self.owners.get(ip);
        if other != NO_OWNER && other != idx {
            let o = self.clients[other as usize];
            if o.state.holds_address() && o.ip == ip {
                self.violation(Violation::DuplicateAddress, Some(idx), || {
                    format!("{} ACKed while client {other} holds it", Ipv4Addr::from(ip))
                });
            }
        }
        if let Some(slot) = self.owners.slot(ip) {
            *slot = idx;
        }
        self.clients[idx as usize].ip = ip;
    }

    /// Server identifier learned from the replies so far (of the first server).
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.server_ids
            .first()
            .copied()
            .flatten()
            .map(Ipv4Addr::from)
    }

    /// Server identifier learned from each server's replies, in `--server` order.
    pub fn server_ids(&self) -> Vec<Option<Ipv4Addr>> {
        self.server_ids
            .iter()
            .map(|i| i.map(Ipv4Addr::from))
            .collect()
    }

    /// Every client that holds an address (after a run: was ACKed it and neither gave it up nor failed since).
    pub fn bindings(&self) -> impl Iterator<Item = Binding> + '_ {
        self.clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state.holds_address())
            .map(|(i, c)| Binding {
                index: i as u32,
                mac: self.identity.mac(i as u32),
                ip: Ipv4Addr::from(c.ip),
                server: self.s.servers[usize::from(c.server).min(self.s.servers.len() - 1)],
                kind: c.kind,
                since_unix_ms: self.epoch_unix_ms + c.started_us / 1000,
            })
    }
}

/// Writes client `idx`'s message `t` as a relay agent forwards it (giaddr set, hops 1). None if it does not fit (it
/// always fits: a few options in 576 bytes).
fn write_message(
    buf: &mut [u8],
    identity: &Identity,
    s: &Settings,
    idx: u32,
    c: &Client,
    t: MessageType,
    now_us: u64,
) -> Option<usize> {
    let mut w = PacketWriter::new(buf, REQUEST_LIMIT);
    w.set_op(1);
    w.set_htype(1);
    w.set_hlen(6);
    w.set_hops(1);
    w.set_chaddr(&identity.mac(idx));
    w.set_xid(xid(idx, c.generation));
    w.set_giaddr(s.giaddr);
    w.set_secs((now_us.saturating_sub(c.started_us) / 1_000_000).min(u64::from(u16::MAX)) as u16);
    let ip = Ipv4Addr::from(c.ip);
    let sid = Ipv4Addr::from(c.server_id);
    w.push_u8(code::MESSAGE_TYPE, t as u8).ok()?;
    match (t, c.state) {
        // RFC 2131 table 5: RENEWING puts the address in ciaddr, no option 50/54.
        (MessageType::Request, State::Renewing) => w.set_ciaddr(ip),
        // INIT-REBOOT: option 50, no server identifier.
        (MessageType::Request, State::Rebooting) => w.push_ip(code::REQUESTED_IP, ip).ok()?,
        // SELECTING: option 50 and the chosen server's identifier.
        (MessageType::Request, _) => {
            w.push_ip(code::REQUESTED_IP, ip).ok()?;
            w.push_ip(code::SERVER_ID, sid).ok()?;
        }
        (MessageType::Release, _) => {
            w.set_ciaddr(ip);
            w.push_ip(code::SERVER_ID, sid).ok()?;
        }
        (MessageType::Decline, _) => {
            w.push_ip(code::REQUESTED_IP, ip).ok()?;
            w.push_ip(code::SERVER_ID, sid).ok()?;
        }
        _ => {}
    }
    if s.client_id {
        w.push(code::CLIENT_ID, &identity.client_id(idx)).ok()?;
    }
    if matches!(t, MessageType::Discover | MessageType::Request) {
        w.push(code::PARAMETER_REQUEST_LIST, &PRL).ok()?;
    }
    Some(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(scenario: Scenario) -> Settings {
        Settings {
            servers: vec![SERVER_A],
            giaddr: Ipv4Addr::new(127, 0, 0, 2),
            clients: 4,
            seed: 1,
            scenario,
            backoff: Backoff {
                initial_ms: 10,
                max_ms: 40,
                max_tries: 3,
            },
            client_id: true,
            subnet: Some(Subnet::parse("10.0.0.0/24").unwrap()),
            keep_violations: 10,
            progress: false,
        }
    }

    /// A server's answer to the message the engine last queued for `idx`.
    fn reply(
        e: &Engine,
        idx: u32,
        t: MessageType,
        yiaddr: Ipv4Addr,
        sid: Option<Ipv4Addr>,
    ) -> Vec<u8> {
        let c = e.clients[idx as usize];
        let mut buf = vec![0u8; 1500];
        let mut w = PacketWriter::new(&mut buf, 1500);
        w.set_op(2);
        w.set_htype(1);
        w.set_hlen(6);
        w.set_chaddr(&e.identity.mac(idx));
        w.set_xid(xid(idx, c.generation));
        w.set_yiaddr(yiaddr);
        w.push_u8(code::MESSAGE_TYPE, t as u8).unwrap();
        w.push_u32(code::LEASE_TIME, 3600).unwrap();
        if let Some(s) = sid {
            w.push_ip(code::SERVER_ID, s).unwrap();
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    const SID: Option<Ipv4Addr> = Some(Ipv4Addr::new(10, 0, 0, 1));
    const SERVER_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 6767);

    /// Replies from the (first) server.
    trait Feed {
        fn feed(&mut self, d: &[u8]);
    }

    impl Feed for Engine {
        fn feed(&mut self, d: &[u8]) {
            self.on_datagram(d, SERVER_A);
        }
    }

    fn dora(e: &mut Engine, ip: Ipv4Addr) -> u32 {
        assert!(e.start_exchange());
        let idx = (e.next_client + e.s.clients - 1) % e.s.clients;
        assert_eq!(e.clients[idx as usize].state, State::Selecting);
        e.feed(&reply(e, idx, MessageType::Offer, ip, SID));
        assert_eq!(e.clients[idx as usize].state, State::Requesting);
        e.feed(&reply(e, idx, MessageType::Ack, ip, SID));
        idx
    }

    #[test]
    fn dora_then_renew() {
        let mut e = Engine::new(settings(Scenario::Single(Kind::Renew)));
        let idx = dora(&mut e, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(e.clients[idx as usize].state, State::Bound);
        assert_eq!(e.stats.completed[Kind::Dora as usize], 1);
        assert_eq!(e.queue.len(), 2, "DISCOVER and REQUEST queued");
        // Cycle to the same client again: it is bound, so it renews.
        e.next_client = idx;
        assert!(e.start_exchange());
        assert_eq!(e.clients[idx as usize].state, State::Renewing);
        e.feed(&reply(
            &e,
            idx,
            MessageType::Ack,
            Ipv4Addr::new(10, 0, 0, 5),
            SID,
        ));
        assert_eq!(e.stats.completed[Kind::Renew as usize], 1);
        assert_eq!(
            e.stats.violations.total(),
            0,
            "{:?}",
            e.stats.violations.first
        );
        assert_eq!(e.in_flight, 0);
    }

    #[test]
    fn duplicate_address_and_bad_answers_are_violations() {
        let mut e = Engine::new(settings(Scenario::Single(Kind::Dora)));
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        dora(&mut e, ip);
        dora(&mut e, ip);
        assert_eq!(
            e.stats.violations.counts[Violation::DuplicateAddress as usize],
            1
        );
        // Outside the subnet, no server id, garbage, unknown xid.
        assert!(e.start_exchange());
        let idx = 2;
        e.feed(&reply(
            &e,
            idx,
            MessageType::Offer,
            Ipv4Addr::new(192, 0, 2, 1),
            None,
        ));
        assert_eq!(
            e.stats.violations.counts[Violation::YiaddrOutsideSubnet as usize],
            1
        );
        assert_eq!(e.stats.violations.counts[Violation::NoServerId as usize], 1);
        e.feed(&[1, 2, 3]);
        assert_eq!(e.stats.violations.counts[Violation::Malformed as usize], 1);
        let mut bad = reply(&e, idx, MessageType::Ack, Ipv4Addr::new(10, 0, 0, 3), SID);
        bad[4] = 0x00;
        bad[5] = 0xff; // xid names client 0xff....: not one of ours
        e.feed(&bad);
        assert_eq!(e.stats.violations.counts[Violation::UnknownXid as usize], 1);
        let mut bad = reply(&e, idx, MessageType::Ack, Ipv4Addr::new(10, 0, 0, 3), SID);
        bad[30] ^= 1; // chaddr no longer the client's
        e.feed(&bad);
        assert_eq!(
            e.stats.violations.counts[Violation::ChaddrMismatch as usize],
            1
        );
    }

    #[test]
    fn retransmits_with_backoff_then_times_out() {
        let mut e = Engine::new(settings(Scenario::Single(Kind::Dora)));
        assert!(e.start_exchange());
        let c = e.clients[0];
        e.on_timer(0, c.timer_stamp());
        assert_eq!((e.stats.drops, e.stats.retransmitted), (1, 1));
        assert_eq!(e.clients[0].tries, 2);
        // The old timer is stale now.
        e.on_timer(0, c.timer_stamp());
        assert_eq!(e.stats.drops, 1);
        e.on_timer(0, e.clients[0].timer_stamp());
        e.on_timer(0, e.clients[0].timer_stamp());
        assert_eq!(e.stats.timed_out, 1);
        assert_eq!(e.clients[0].state, State::Init);
        assert_eq!(e.in_flight, 0);
        assert_eq!(e.stats.sent[0], 3, "3 DISCOVERs: max_tries");
    }

    #[test]
    fn stale_replies_are_not_violations() {
        let mut e = Engine::new(settings(Scenario::Single(Kind::Dora)));
        let idx = dora(&mut e, Ipv4Addr::new(10, 0, 0, 7));
        // A late second ACK of the same exchange.
        let late = reply(&e, idx, MessageType::Ack, Ipv4Addr::new(10, 0, 0, 7), SID);
        e.feed(&late);
        assert_eq!(e.stats.stale, 1);
        assert_eq!(e.stats.violations.total(), 0);
    }

    #[test]
    fn wheel_fires_in_order_and_clamps() {
        let mut w = Wheel::new();
        w.arm(5, 1, 0);
        w.arm(3, 2, 0);
        w.arm(0, 3, 0); // in the past: next slot
        let mut got = Vec::new();
        let mut due = Vec::new();
        while w.take_due(10, &mut due) {
            got.extend(due.drain(..).map(|(c, _)| c));
        }
        assert_eq!(got, vec![3, 2, 1]);
        w.arm(u64::MAX / 2, 9, 0); // clamped to the end of the span
        assert!(w.take_due(11 + WHEEL_SLOTS, &mut due));
        assert_eq!(due, vec![(9, 0)]);
    }

    #[test]
    fn subnet_parsing() {
        let s = Subnet::parse("10.1.2.3/16").unwrap();
        assert!(s.contains(u32::from(Ipv4Addr::new(10, 1, 200, 1))));
        assert!(!s.contains(u32::from(Ipv4Addr::new(10, 2, 0, 1))));
        assert!(Subnet::parse("10.0.0.0/33").is_err());
        assert!(Subnet::parse("0.0.0.0/0").unwrap().contains(1));
    }

    // -- several servers --------------------------------------------------------------------------------------------

    const SERVER_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 6767);
    const SID_A: Option<Ipv4Addr> = SID;
    const SID_B: Option<Ipv4Addr> = Some(Ipv4Addr::new(10, 0, 0, 2));

    fn two_servers(scenario: Scenario) -> Engine {
        let mut s = settings(scenario);
        s.servers = vec![SERVER_A, SERVER_B];
        let mut e = Engine::new(s);
        e.stats = e.fresh_stats();
        e
    }

    /// Where client `idx`'s next message `t` would go.
    fn dests(e: &Engine, idx: u32, t: MessageType) -> Vec<SocketAddrV4> {
        targets(&e.s.servers, &e.clients[idx as usize], t).to_vec()
    }

    /// DISCOVER to both, OFFER from `from`, REQUEST to both, ACK from `from`.
    fn dora_via(e: &mut Engine, from: (SocketAddrV4, Option<Ipv4Addr>), ip: Ipv4Addr) -> u32 {
        let queued = e.queue.len();
        assert!(e.start_exchange());
        let idx = (e.next_client + e.s.clients - 1) % e.s.clients;
        assert_eq!(
            e.queue.len(),
            queued + 2,
            "the DISCOVER goes to both servers"
        );
        e.on_datagram(&reply(e, idx, MessageType::Offer, ip, from.1), from.0);
        assert_eq!(e.clients[idx as usize].state, State::Requesting);
        assert_eq!(
            e.queue.len(),
            queued + 4,
            "the REQUEST goes to both servers"
        );
        e.on_datagram(&reply(e, idx, MessageType::Ack, ip, from.1), from.0);
        assert_eq!(e.clients[idx as usize].state, State::Bound);
        idx
    }

    #[test]
    fn one_server_gets_every_message() {
        let mut e = Engine::new(settings(Scenario::Single(Kind::Renew)));
        let idx = dora(&mut e, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(e.queue.len(), 2, "one datagram per message");
        for t in [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Release,
            MessageType::Decline,
        ] {
            assert_eq!(dests(&e, idx, t), vec![SERVER_A]);
        }
        assert!(e.stats.by_server.is_empty(), "no per-server figures");
        assert_eq!(e.server_id(), SID);
    }

    #[test]
    fn several_servers_first_offer_wins_and_renewals_go_to_it() {
        let mut e = two_servers(Scenario::Single(Kind::Renew));
        assert!(e.start_exchange());
        let idx = 0;
        assert_eq!(
            dests(&e, idx, MessageType::Discover),
            vec![SERVER_A, SERVER_B]
        );
        assert_eq!(e.queue.len(), 2);
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        // B answers first: the client takes its OFFER and names it in the REQUEST (sent to both, as broadcast).
        e.on_datagram(&reply(&e, idx, MessageType::Offer, ip, SID_B), SERVER_B);
        let c = e.clients[idx as usize];
        assert_eq!(
            (c.state, c.server, c.server_id),
            (State::Requesting, 1, 0x0a00_0002)
        );
        assert_eq!(e.queue.len(), 4);
        // A's OFFER comes second: stale, not a violation.
        e.on_datagram(
            &reply(
                &e,
                idx,
                MessageType::Offer,
                Ipv4Addr::new(10, 0, 0, 6),
                SID_A,
            ),
            SERVER_A,
        );
        assert_eq!(e.stats.stale, 1);
        e.on_datagram(&reply(&e, idx, MessageType::Ack, ip, SID_B), SERVER_B);
        assert_eq!(e.clients[idx as usize].state, State::Bound);
        // The renewal is the client's unicast: to B only. So is a release; a decline is broadcast.
        assert_eq!(dests(&e, idx, MessageType::Release), vec![SERVER_B]);
        assert_eq!(
            dests(&e, idx, MessageType::Decline),
            vec![SERVER_A, SERVER_B]
        );
        e.next_client = idx;
        assert!(e.start_exchange());
        assert_eq!(e.clients[idx as usize].state, State::Renewing);
        assert_eq!(dests(&e, idx, MessageType::Request), vec![SERVER_B]);
        assert_eq!(e.queue.len(), 5, "one datagram for the renewal");
        e.on_datagram(&reply(&e, idx, MessageType::Ack, ip, SID_B), SERVER_B);
        assert_eq!(e.stats.completed[Kind::Renew as usize], 1);
        assert_eq!(
            e.stats.violations.total(),
            0,
            "{:?}",
            e.stats.violations.first
        );
        let b = &e.stats.by_server;
        assert_eq!((b[0].answered, b[0].offers_taken, b[0].acks), (0, 0, 0));
        assert_eq!((b[1].answered, b[1].offers_taken, b[1].acks), (3, 1, 2));
        assert_eq!(b[1].answered_per_second.iter().sum::<u64>(), 3);
        assert_eq!(e.server_ids(), vec![None, SID_B]);
        let bound: Vec<Binding> = e.bindings().collect();
        assert_eq!(bound.len(), 1);
        assert_eq!(
            (bound[0].ip, bound[0].server, bound[0].kind),
            (ip, SERVER_B, Kind::Renew)
        );
        assert_eq!(bound[0].mac, e.identity.mac(idx));
    }

    #[test]
    fn several_servers_one_address_for_two_clients_is_a_duplicate() {
        let mut e = two_servers(Scenario::Single(Kind::Dora));
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let a = dora_via(&mut e, (SERVER_A, SID_A), ip);
        let b = dora_via(&mut e, (SERVER_B, SID_B), ip);
        assert_ne!(a, b);
        assert_eq!(
            e.stats.violations.counts[Violation::DuplicateAddress as usize],
            1,
            "granted by different servers, held at the same time: {:?}",
            e.stats.violations.first
        );
        assert_eq!(e.stats.violations.total(), 1);
    }

    #[test]
    fn several_servers_answer_checks() {
        let mut e = two_servers(Scenario::Single(Kind::Dora));
        // The client takes A's OFFER; an ACK from B, which its REQUEST did not name, is a violation.
        assert!(e.start_exchange());
        let ip = Ipv4Addr::new(10, 0, 0, 3);
        e.on_datagram(&reply(&e, 0, MessageType::Offer, ip, SID_A), SERVER_A);
        e.on_datagram(&reply(&e, 0, MessageType::Ack, ip, SID_B), SERVER_B);
        assert_eq!(
            e.stats.violations.counts[Violation::UnselectedServer as usize],
            1
        );
        // Each server keeps its own identifier: two servers, two ids, no change reported...
        dora_via(&mut e, (SERVER_A, SID_A), Ipv4Addr::new(10, 0, 0, 4));
        dora_via(&mut e, (SERVER_B, SID_B), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(
            e.stats.violations.counts[Violation::ServerIdChanged as usize],
            0
        );
        // ...but one server answering with another id is.
        assert!(e.start_exchange());
        let idx = 3;
        e.on_datagram(
            &reply(
                &e,
                idx,
                MessageType::Offer,
                Ipv4Addr::new(10, 0, 0, 6),
                SID_B,
            ),
            SERVER_A,
        );
        assert_eq!(
            e.stats.violations.counts[Violation::ServerIdChanged as usize],
            1
        );
        // A reply from an address that is no server's is still checked for everything else.
        let before = e.stats.violations.total();
        e.on_datagram(
            &reply(&e, idx, MessageType::Ack, Ipv4Addr::new(10, 0, 0, 6), SID_B),
            "127.0.0.77:67".parse().unwrap(),
        );
        assert_eq!(
            e.stats.violations.total(),
            before,
            "{:?}",
            e.stats.violations.first
        );
    }

    #[test]
    fn several_servers_init_reboot_takes_the_first_ack() {
        let mut e = two_servers(Scenario::Single(Kind::InitReboot));
        let ip = Ipv4Addr::new(10, 0, 0, 8);
        let idx = dora_via(&mut e, (SERVER_A, SID_A), ip);
        e.next_client = idx;
        let queued = e.queue.len();
        assert!(e.start_exchange());
        assert_eq!(e.clients[idx as usize].state, State::Rebooting);
        assert_eq!(
            e.queue.len(),
            queued + 2,
            "INIT-REBOOT is broadcast: both servers"
        );
        e.on_datagram(&reply(&e, idx, MessageType::Ack, ip, SID_B), SERVER_B);
        let c = e.clients[idx as usize];
        assert_eq!(
            (c.state, c.server, c.server_id),
            (State::Bound, 1, 0x0a00_0002)
        );
        // The second ACK is stale; the next renewal goes to B.
        e.on_datagram(&reply(&e, idx, MessageType::Ack, ip, SID_A), SERVER_A);
        assert_eq!(e.stats.stale, 1);
        assert_eq!(
            e.stats.violations.total(),
            0,
            "{:?}",
            e.stats.violations.first
        );
        e.clients[idx as usize].state = State::Renewing;
        assert_eq!(dests(&e, idx, MessageType::Request), vec![SERVER_B]);
    }
}

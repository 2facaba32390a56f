//! Deterministic chaos simulation of a failover pair serving a population of DHCP clients.
//!
//! Two simulated servers — each the real [`Server`] (real DHCP decisions on real encoded
//! packets, relayed), its lease table, a [`ServiceGate`] and a sans-IO failover [`Endpoint`]
//! (primary / secondary, dialect ringlease), glued as `src/shell/failover.rs` glues them — a few
//! dozen simulated DHCP clients, a virtual clock (ms) and a simulated network. Everything random
//! comes from the seed (splitmix64), so a seed replays exactly.
//!
//! # What is simulated
//!
//! - **Durability.** Each server's lease log is an in-memory journal ([`Journal`]). A record
//!   appended by the DHCP side or by the failover side is durable only once its writer's sync
//!   completes (1–5 ms later). As in the real server, a DHCP reply that grants or extends a
//!   lease, and a change handed to replication, wait for the sync of the DHCP side; a BNDACK,
//!   a STATE and any other failover message wait for the sync of the failover side; the gate
//!   follows a state only once it is durable. A **crash** throws away the table, the endpoint
//!   (its queue, in-flight BNDUPDs, timers), unsynced records, held replies and messages, and
//!   the connection; a **restart** replays the journal ([`LeaseTable::restore`] in sequence
//!   order, `continue_after`) and resumes the endpoint from the last persisted relationship
//!   record, as `shell::start` does. A **wipe** is a crash whose restart finds an empty journal
//!   (a lost database).
//! - **The failover link** is one TCP-like ordered stream per connection: latency with jitter,
//!   order kept; a cut stalls it (data waits, a connection attempt fails); a reset tears it
//!   down on both sides. Only the primary connects, and a connection attempt fails while the
//!   partner still holds an older one (the shell closes a second connection). Pool balancing
//!   runs as the shell runs it (on entering NORMAL, every 60 s, on POOLREQ).
//! - **Clients** (16–48, each with its own MAC, a quarter with a client identifier) follow
//!   RFC 2131 roughly: DISCOVER through the relay (giaddr set; both servers get it) and take the
//!   first OFFER; REQUEST; renew at T1 unicast to the server that granted; rebind at T2 through
//!   the relay; release sometimes; leave (power off, keeping the lease) and come back with
//!   INIT-REBOOT or DISCOVER. A client's lease ends at `floor(time it sent the request to the
//!   second) + lease time`: never after what the server recorded (servers keep whole seconds).
//!   Datagrams can be dropped, delayed (1–20 ms, 5 % 0.2–1.5 s: reordered) and duplicated; a
//!   client that released stays away at least 5 s, longer than any delay (a RELEASE overtaken
//!   by the same client's next lease of that address would end it: RFC 2131 cannot tell).
//! - **Faults** (2–8 per run, drawn from the seed, see [`Kind`]): link partitions, partitions
//!   that also split the clients (each reaches one server), a server unreachable by clients,
//!   TCP resets, crashes with and without the database, and the operator's PARTNER-DOWN while
//!   the partner is crashed or its site is cut off. At the end everything heals. Faults may
//!   overlap. Left out, because the draft accepts their damage and no implementation can
//!   avoid it: both databases lost at once (a second wipe waits until the first server is
//!   NORMAL again); PARTNER-DOWN (by the operator or a safe period) while the partner still
//!   serves clients; both servers in PARTNER-DOWN at once. See [`Kind`].
//!
//! Small pools (16–40 addresses), leases of 60–600 s and an MCLT of 30–300 s make addresses
//! contended and reused; failover timers are short (tSend 2 s, tReceive 6 s, startup 5 s).
//!
//! # Invariants, and when each is checked
//!
//! 1. **One holder per address.** After every step: no address is held by two clients. A
//!    client holds an address from the DHCPACK it accepted until its own lease end, a NAK or
//!    its RELEASE (a powered-off client keeps holding it).
//! 2. **Every held lease is known.** At quiet points — both servers NORMAL with the link up for
//!    20 s, both replication queues empty, nothing unsynced — at most every 10 s, and once at
//!    the end: every lease a client holds is bound to that client, until at least the client's
//!    lease end, in the table of at least one server. (`CHAOS_STRICT=1`: of both, at the end.)
//!    Exempt: a lease whose grant existed only in a database that was then wiped (its server
//!    had not had it acknowledged); invariants 1 and 3 still cover it.
//! 3. **A client keeps its address.** When a client gets a NAK answering its current renewal,
//!    rebinding or INIT-REBOOT while its lease on that address is still running, that is a
//!    violation: a server that answers must not take a running lease away. (A client that gets
//!    no answer may lose its address at its lease end; that is not flagged.)
//! 4. **Every update is acknowledged.** After every step: once both servers are NORMAL with the
//!    link up for 10 s, every durable lease change handed to replication (queued or sent as a
//!    BNDUPD, also by an incarnation that crashed since, unless its database was wiped) has
//!    been acknowledged or rejected, or re-sent and then acknowledged, by the partner. At the
//!    end, after recovery: both queues (`queued_updates`, `outstanding_bndupds`) drain.
//! 5. **The pair recovers.** After the faults heal, both servers reach NORMAL with the link up
//!    within 2 × MCLT + 180 s. After every step: no run makes more than 5,000 state changes
//!    (a livelock; a healthy run makes a few dozen).
//!
//! # Running it
//!
//! `cargo test --release --test failover_chaos` runs seeds 1..=2000 (on up to 2 threads) in
//! three tests: the default mix; `wipe` alone; and every kind but `wipe` with both servers
//! configured `startup_wait = true`. Environment variables:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CHAOS_SEEDS=N` | run seeds `CHAOS_SEED_START..CHAOS_SEED_START+N` (soak: `CHAOS_SEEDS=100000`) | 2000 |
//! | `CHAOS_SEED_START=S` | first seed | 1 |
//! | `CHAOS_SEED=N` | run only seed N (reproduce a failure) | — |
//! | `CHAOS_FAULTS=…` | fault kinds: `all`, `none`, a list (`partition,crash`), or `all,-wipe,-pd-partition` | `all,-pd-crash,-wipe` (a second test runs `wipe` alone) |
//! | `CHAOS_KEEP=i,j` | keep only these faults of the seed's schedule (what the shrinker prints) | all |
//! | `CHAOS_TRACE=1` | with `CHAOS_SEED`: print the whole trace | off |
//! | `CHAOS_SHRINK=1` | with `CHAOS_SEED`: shrink a failure's schedule and report as a full run does | off |
//! | `CHAOS_STRICT=1` | invariant 2 at the end requires both servers to know each lease | off |
//! | `CHAOS_STARTUP_WAIT=1` | both servers with `startup_wait` (the third test always) | off |
//! | `CHAOS_THREADS=k` | worker threads | min(2, cores) |
//!
//! A failing seed prints the invariant, the fault schedule shrunk to the faults it needs
//! (greedy removal, re-running the seed), the events of that minimal run that touched the
//! addresses and clients involved (plus faults and state changes), and the commands that
//! reproduce the full and the minimal run. The soak:
//! `CHAOS_SEEDS=100000 cargo test --release --test failover_chaos -- --nocapture`.
//!
//! # Known failures
//!
//! Two fault kinds break invariant 1 (and 3) in some seeds of the default mix, so CI runs them
//! only where they pass (`CHAOS_FAULTS=all` runs them together):
//!
//! * `pd-crash` with the default `startup_wait = false` (47 of 2,000 seeds of `all,-wipe`): a
//!   server restarts, cannot reach its partner, and resumes its previous state when the
//!   startup timer expires (draft §9.3 step 6 allows this; ISC dhcpd and Windows do the same)
//!   while the partner, declared down meanwhile, uses its free addresses after the MCLT. With
//!   `startup_wait = true` the restarted server waits for the partner, and the third test runs
//!   `pd-crash` with every other kind but `wipe` without a failure.
//! * `wipe` with partitions: leases only the wiped server knew (extended while cut off) are
//!   freed at the end the partner knew, while the client holds them to PET + MCLT — a limit of
//!   the draft itself. `wipe` alone passes and runs in CI.
//!
//! The soak (`CHAOS_SEEDS=100000`, all three tests) passes. The last failures it found, now
//! fixed: a late renewal of a client's previous address gave back the address it had moved
//! to; an ACTIVE whose lease had ended, resent after a restart, displaced another client's
//! running lease; a secondary's unacknowledged FREE pool gifts were not resent after a
//! restart; the secondary's EXPIRED crossing the primary's BACKUP gift left both owning the
//! address; an end acknowledged during an offer left the address in the secondary's free
//! list; a secondary NAKed a lease the primary had granted after the secondary's RELEASED;
//! RECOVER-WAIT ended, and RECOVER-DONE renewed leases, while the partner, unreached, was
//! still PARTNER-DOWN.
//!
//! All calls into product APIs sit in the ADAPTER section below.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ringlease::proto::failover::{
    loadbalance, Binding, Config, Dialect, Endpoint, FailoverState, Link, Output, Persisted, Role,
    ServiceGate,
};
use ringlease::proto::lease::{
    to_failover_binding, Change, Journal, LeaseState, PoolShare, StorageUnavailable,
};
use ringlease::proto::server::{Decision, Policy, Server};
use ringlease::proto::subnet::{Pool, Subnet, Subnets};
use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::failover::{BindingStatus, RejectReason};
use ringlease::proto::wire::options::code;
use ringlease::proto::wire::DropReason;

// =============================================================================================
// ADAPTER: every call into product APIs that are changing (server construction, expiry, the
// service gate, the endpoint's outputs, operator commands, start-up). Adapt here only.
// =============================================================================================

/// A server of the pair as `shell::start` builds it: its pool share and its gate.
fn build_server(role: Role, p: &Params) -> (Server, Arc<ServiceGate>) {
    let gate = Arc::new(ServiceGate::new(role, Dialect::Ringlease, p.split));
    let policy = Policy {
        server_id: SERVER_IDS[role_index(role)],
        offer_hold_s: p.offer_hold_s,
        decline_hold_s: 600,
    };
    let share = PoolShare::new(role, p.split, None);
    let server = Server::with_failover(policy, subnets(p), Some(share), Some(gate.clone()));
    (server, gate)
}

/// The endpoint configuration: short timers so a run sees many transitions.
fn endpoint_config(role: Role, p: &Params) -> Config {
    Config {
        dialect: Dialect::Ringlease,
        mclt_s: p.mclt_s,
        max_batch: p.max_batch,
        tsend_s: 2,
        treceive_s: 6,
        startup_s: 5,
        startup_wait: p.startup_wait,
        connect_retry_s: 2,
        sync_s: 30,
        // No safe period: an automatic PARTNER-DOWN while the partner may serve clients is a
        // risk the draft accepts (see `Kind::PdPartition`).
        safe_period_s: None,
        hba: loadbalance::wire_hba(Dialect::Ringlease, p.split),
        ..Config::new(NAME, role)
    }
}

/// Start-up as `shell::start` does it: replay the journal into the table (every record in
/// sequence order; per address the highest wins), continue the sequence after the highest
/// record, and return the relationship's last persisted state (`persisted_state`).
fn replay(server: &Server, journal: &[Rec]) -> Option<Persisted> {
    let mut records: Vec<&Rec> = journal.iter().collect();
    records.sort_by_key(|r| r.seq());
    let settings = server.settings();
    let mut persisted = None;
    let mut max_seq = 0;
    for r in records {
        max_seq = max_seq.max(r.seq());
        match r {
            Rec::Lease(c) => {
                server.leases.restore(&settings.subnets, &c.as_change());
            }
            Rec::Relationship {
                state,
                entered_at_s,
                mclt_s,
                ..
            } => {
                persisted = Some(Persisted {
                    state: *state,
                    entered_at_s: *entered_at_s,
                    mclt_s: *mclt_s,
                })
            }
        }
    }
    server.leases.continue_after(max_seq);
    persisted
}

fn start_endpoint(role: Role, p: &Params, persisted: Option<Persisted>, now_ms: u64) -> Endpoint {
    Endpoint::new(endpoint_config(role, p), persisted, now_ms).expect("valid endpoint config")
}

/// What the shell does after replay, before its first event.
fn after_start(server: &Server, ep: &mut Endpoint, now_ms: u64) {
    // As `shell::failover::start`: what the partner had not acknowledged goes to it again,
    // in address order (the table's walk order is not deterministic).
    let mut unacknowledged = Vec::new();
    server
        .leases
        .visit_unacknowledged_bindings(|b| unacknowledged.push(b));
    unacknowledged.sort_by_key(|b| b.ip);
    if !unacknowledged.is_empty() {
        ep.bindings_changed(now_ms, unacknowledged);
    }
}

/// The shell's housekeeping sweep (`Running::expire`): lease ends are recorded in a journal
/// whose changes go to the partner once synced. Here that is the DHCP side's journal (synced
/// within milliseconds, then handed to the endpoint), as the housekeeping thread's own is.
fn expire(server: &Server, now_s: u64, journal: &mut dyn Journal) -> usize {
    server.expire(now_s, journal)
}

/// The failover thread tells the workers a durable state (`Core::apply_gate`).
fn set_gate(gate: &ServiceGate, ep: &Endpoint, state: FailoverState) {
    gate.set_state(state, ep.mclt_s(), ep.state_since_s());
}

impl World {
    /// `Core::rebalance`: hand the partner the free addresses beyond our share (recorded by
    /// the failover side, sent at once); returns how many. Also every [`REBALANCE_MS`] in
    /// NORMAL.
    fn rebalance(&mut self, i: usize) -> u32 {
        let now = self.now;
        let Some((srv, mut journal)) = self.nodes[i].failover_side() else {
            return 0;
        };
        let given = srv
            .leases
            .rebalance(&srv.settings().subnets, now / 1000, &mut journal);
        let count = given.len();
        if count > 0 {
            for b in &given {
                self.unacked[i].insert(b.ip, (b.pet_s, now));
            }
            self.chatter(format!(
                "{} gives {count} free addresses to its partner",
                SERVER_NAMES[i]
            ));
            if let Some(ep) = self.nodes[i].ep.as_mut() {
                ep.bindings_changed(now, given);
            }
        }
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// `Core::run`'s periodic balance while NORMAL.
    fn rebalance_due(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let normal = node
            .ep()
            .is_some_and(|e| e.state() == FailoverState::Normal);
        if normal && node.next_rebalance <= self.now {
            node.next_rebalance = self.now + REBALANCE_MS;
            self.rebalance(i);
            self.drain(i);
            self.flush_fo(i);
        }
    }
}

/// `ringlease ctl partner-down`.
fn operator_partner_down(ep: &mut Endpoint, now_ms: u64) -> bool {
    ep.set_partner_down(now_ms).is_ok()
}

impl World {
    /// `Core::act`: one endpoint output of server `i`, handled as the shell handles it.
    fn act(&mut self, i: usize, out: Output) {
        let now = self.now;
        let now_s = now / 1000;
        match out {
            Output::Send(bytes) => {
                // The shell holds messages until its next sync, and only for a live connection.
                if self.link.side_open(i) {
                    self.nodes[i].held_sends.push(bytes);
                }
            }
            Output::ApplyBinding(b) => {
                let (srv, mut journal) = self.nodes[i].failover_side().expect("a running server");
                let settings = srv.settings();
                srv.leases
                    .apply_partner(&settings.subnets, &b, now_s, &mut journal)
                    .expect("the simulated journal never fails");
                self.stats.applied += 1;
                // Where the partner's binding now stands in the table as it sent it (nothing
                // of ours beyond it), our own earlier change of the address is superseded:
                // neither side has anything of it left to tell.
                let stands = srv
                    .leases
                    .get(&settings.subnets.all()[0], b.ip)
                    .is_some_and(|r| r.state != LeaseState::Bound || r.expires_s == b.expires_s);
                if stands {
                    self.unacked[i].remove(&b.ip);
                }
                let c = self.client_of_binding(&b);
                self.tr(TrEv::Applied {
                    s: i as u8,
                    ip: b.ip,
                    status: b.status,
                    c,
                    expires_s: b.expires_s,
                });
            }
            Output::PartnerAcked {
                ip,
                status,
                partner_expiry_s,
            } => {
                let (srv, mut journal) = self.nodes[i].failover_side().expect("a running server");
                let settings = srv.settings();
                srv.leases
                    .partner_acked(
                        &settings.subnets,
                        ip,
                        status,
                        partner_expiry_s,
                        &mut journal,
                    )
                    .expect("the simulated journal never fails");
                // Only the acknowledgement of the latest change handed over settles it.
                if self.unacked[i]
                    .get(&ip)
                    .is_some_and(|&(pet, _)| pet == partner_expiry_s)
                {
                    self.unacked[i].remove(&ip);
                }
                self.tr(TrEv::Acked { s: i as u8, ip });
            }
            Output::PartnerRejected { ip, reason } => {
                self.unacked[i].remove(&ip); // answered: the draft forbids resending at once
                self.stats.rejected += 1;
                self.tr(TrEv::Rejected {
                    s: i as u8,
                    ip,
                    reason,
                });
            }
            Output::StateChanged {
                from, to, at_ms, ..
            } => {
                self.stats.state_changes += 1;
                if self.stats.state_changes == MAX_STATE_CHANGES {
                    let msg = format!(
                        "the state machine does not settle: {MAX_STATE_CHANGES} state changes \
                         (now {} -> {})",
                        from.name(),
                        to.name()
                    );
                    self.violate(Inv::Recovers, msg, vec![], vec![]);
                }
                self.note(format!(
                    "{} state {} -> {}",
                    SERVER_NAMES[i],
                    from.name(),
                    to.name()
                ));
                self.last_state[i] = Some(to);
                if to == FailoverState::Normal {
                    self.db_lost[i] = false; // in sync with the partner again
                }
                let node = &mut self.nodes[i];
                node.gate_state = Some(to);
                if to == FailoverState::Normal {
                    node.next_rebalance = now; // `Core`: balance at once on entering NORMAL
                }
                let ep = node.ep.as_ref().expect("a running server");
                if !ep.is_new() {
                    let srv = node.srv.as_ref().expect("a running server");
                    node.fo_unsynced.push(Rec::Relationship {
                        seq: srv.leases.next_seq(),
                        state: to,
                        entered_at_s: at_ms / 1000,
                        mclt_s: ep.mclt_s(),
                    });
                }
            }
            Output::CloseConnection { reason } => {
                self.chatter(format!(
                    "{} closes the connection: {reason:?}",
                    SERVER_NAMES[i]
                ));
                self.nodes[i].close_after = true;
            }
            Output::OpenConnection => self.try_connect(i),
            Output::AllBindingsRequested => {
                let mut all = Vec::new();
                let srv = self.nodes[i].srv.as_ref().expect("a running server");
                srv.leases.visit_bindings(|b| all.push(b));
                // The table walks hash maps (random order per process); the shell sends them
                // in that order, any order is valid: sort, so a seed replays exactly.
                all.sort_by_key(|b| b.ip);
                self.chatter(format!(
                    "{} answers UPDREQALL with {} bindings",
                    SERVER_NAMES[i],
                    all.len()
                ));
                let ep = self.nodes[i].ep.as_mut().expect("a running server");
                ep.queue_all_bindings(now, all);
            }
            Output::UpdatesDone => {
                self.chatter(format!("{} got UPDDONE", SERVER_NAMES[i]));
            }
            Output::PoolRequested { xid } => {
                let given = self.rebalance(i);
                if let Some(ep) = self.nodes[i].ep.as_mut() {
                    ep.answer_pool_request(now, xid, given);
                }
            }
            Output::TransitionRefused { from, to, partner } => {
                self.stats.refused += 1;
                // The first one matters; the retries every connect_retry_s are chatter.
                let first = self.stats.refused == 1;
                let text = format!(
                    "{} REFUSED transition {} -> {} (partner {:?}); connection dropped",
                    SERVER_NAMES[i],
                    from.name(),
                    to.name(),
                    partner.map(|p| p.name())
                );
                if first {
                    self.note(text);
                } else {
                    self.chatter(text);
                }
            }
        }
    }
}

// =============================================================================================
// Constants, randomness, parameters
// =============================================================================================

/// Virtual time origin (ms since 1970).
const T0: u64 = 1_750_000_000_000;
/// Clients start arriving after the pair has formed; faults start after this.
const WARMUP_MS: u64 = 60_000;
const NAME: &str = "chaos";
const GIADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// 10.0.1.1: the first pool address.
const POOL_FIRST: u32 = 0x0a00_0101;
const SERVER_IDS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
const SERVER_NAMES: [&str; 2] = ["primary", "secondary"];
/// Invariant 4: NORMAL with the link up this long settles every change handed over before.
const ACK_WITHIN_MS: u64 = 10_000;
/// Invariant 2: NORMAL and quiet this long before a mid-run check.
const QUIET_MS: u64 = 20_000;
/// After the heal: NORMAL this long before the final checks.
const FINAL_SETTLE_MS: u64 = 30_000;
/// The housekeeping sweep interval (`Server::expire`).
const TICK_MS: u64 = 1_000;
/// [`Kind::PdPartition`]: the site's clients come back this long after its link.
const PD_CLIENTS_BACK_MS: u64 = 60_000;
/// `shell::failover`'s REBALANCE_INTERVAL.
const REBALANCE_MS: u64 = 60_000;
/// A run with more state changes than this is livelocked (a healthy one has a few dozen).
const MAX_STATE_CHANGES: u64 = 5_000;
/// Events of a failing run printed, at most.
const TRACE_LINES: usize = 80;

fn role_index(role: Role) -> usize {
    match role {
        Role::Primary => 0,
        Role::Secondary => 1,
    }
}

fn server_index(id: Ipv4Addr) -> Option<usize> {
    SERVER_IDS.iter().position(|&s| s == id)
}

/// splitmix64: tiny, seeded, deterministic.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One run's configuration, drawn from the seed.
#[derive(Clone, Debug)]
struct Params {
    pool_size: u32,
    clients: usize,
    lease_s: u32,
    mclt_s: u32,
    /// 128: load balancing; 255: hot standby.
    split: u8,
    max_batch: usize,
    offer_hold_s: u32,
    /// Client datagrams: loss and duplication probabilities.
    loss: f64,
    dup: f64,
    link_latency_ms: u64,
    link_jitter_ms: u64,
    chaos_ms: u64,
    /// The server the operator declares PARTNER-DOWN during partitions: one side only, see
    /// [`Kind::PdPartition`].
    pd_side: usize,
    mac_salt: [u8; 3],
    /// `Config::startup_wait` of both servers (not drawn: chosen by the test).
    startup_wait: bool,
}

impl Params {
    /// Every value is drawn whatever the fault kinds, so the kinds change only what is used.
    fn draw(seed: u64, kinds: Kinds) -> Params {
        let mut r = Rng::new(seed, 1);
        let pool_size = r.range(16, 40) as u32;
        let clients = r.range(16, 48) as usize;
        let lease_s = r.range(60, 600) as u32;
        let mclt_s = r.range(30, 300) as u32;
        let split = if r.chance(0.5) { 128 } else { 255 };
        let max_batch = [1, 4, 16][r.below(3) as usize];
        let offer_hold_s = r.range(5, 30) as u32;
        let loss = r.range(0, 10) as f64 / 100.0;
        let dup = r.range(0, 5) as f64 / 100.0;
        let link_latency_ms = r.range(1, 20);
        let link_jitter_ms = r.range(0, 30);
        let chaos_ms = r.range(15, 30) * 60_000;
        let mac_salt = [r.below(256) as u8, r.below(256) as u8, r.below(256) as u8];
        let pd_side = r.below(2) as usize;
        let drops = kinds.has(Kind::Drop);
        Params {
            pool_size,
            clients,
            lease_s,
            mclt_s,
            split,
            max_batch,
            offer_hold_s,
            loss: if drops { loss } else { 0.0 },
            dup: if drops { dup } else { 0.0 },
            link_latency_ms,
            link_jitter_ms,
            chaos_ms,
            pd_side,
            mac_salt,
            startup_wait: false,
        }
    }
}

fn subnets(p: &Params) -> Subnets {
    Subnets::new(vec![Subnet {
        id: 0,
        network: Ipv4Addr::new(10, 0, 0, 0),
        prefix_len: 16,
        pools: vec![Pool {
            first: Ipv4Addr::from(POOL_FIRST),
            last: Ipv4Addr::from(POOL_FIRST + p.pool_size - 1),
        }],
        reservations: vec![],
        lease_time_s: p.lease_s,
        min_lease_time_s: 10,
        max_lease_time_s: 86_400,
        t1_s: p.lease_s / 2,
        t2_s: p.lease_s / 8 * 7,
        options: vec![],
    }])
}

// =============================================================================================
// Faults
// =============================================================================================

/// Fault kinds (`CHAOS_FAULTS` names in brackets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// [drop] client datagrams lost and duplicated (a per-run rate, not scheduled).
    Drop,
    /// [reset] the failover TCP connection is reset.
    Reset,
    /// [partition] the link between the servers is cut; clients reach both.
    Partition,
    /// [split] the link is cut and each client reaches one server (a few reach both).
    Split,
    /// [isolate] no client reaches one server; the link stays up.
    Isolate,
    /// [crash] a server crashes and restarts from its journal.
    Crash,
    /// [wipe] a server crashes and restarts with an empty journal (lost database). Skipped
    /// while the partner's own lost database is not yet restored (back in NORMAL): losing both
    /// loses everything, which no protocol survives.
    Wipe,
    /// [pd-crash] a server crashes for minutes; the operator sets its partner PARTNER-DOWN.
    PdCrash,
    /// [pd-partition] one server's site is cut off (from its partner and from every client)
    /// for minutes, still running; the operator sets the other PARTNER-DOWN. The link comes
    /// back first, the site's clients a minute later, and not while the link is cut (another
    /// partition) or the other side is still PARTNER-DOWN (the other order races the site's
    /// COMMUNICATIONS-INTERRUPTED allocations against the PARTNER-DOWN server's, before they
    /// can talk: the draft's accepted risk). Always the same side of a run, and never while
    /// the partner is PARTNER-DOWN itself. PARTNER-DOWN
    /// asserts that the partner serves no client (draft §9.4.2, spec note §10: "dangerous if
    /// the partner is alive"): with clients still reaching the partner, it keeps extending
    /// leases by MCLT (§7.1.5 allows `now + MCLT`) and duplicates are the draft's accepted
    /// risk, so that operator error — and the automatic safe period, which cannot know — is
    /// not simulated.
    PdPartition,
}

const KINDS: [(Kind, &str); 9] = [
    (Kind::Drop, "drop"),
    (Kind::Reset, "reset"),
    (Kind::Partition, "partition"),
    (Kind::Split, "split"),
    (Kind::Isolate, "isolate"),
    (Kind::Crash, "crash"),
    (Kind::Wipe, "wipe"),
    (Kind::PdCrash, "pd-crash"),
    (Kind::PdPartition, "pd-partition"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kinds(u32);

impl Kinds {
    const ALL: Kinds = Kinds((1 << KINDS.len()) - 1);
    fn bit(k: Kind) -> u32 {
        1 << KINDS.iter().position(|(x, _)| *x == k).expect("listed")
    }
    fn has(self, k: Kind) -> bool {
        self.0 & Kinds::bit(k) != 0
    }
    fn without(self, k: Kind) -> Kinds {
        Kinds(self.0 & !Kinds::bit(k))
    }
    fn parse(s: &str) -> Kinds {
        let mut set = Kinds(0);
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let (minus, name) = match word.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, word),
            };
            let bits = match name {
                "all" => Kinds::ALL.0,
                "none" => 0,
                _ => match KINDS.iter().find(|(_, n)| *n == name) {
                    Some((k, _)) => Kinds::bit(*k),
                    None => panic!("CHAOS_FAULTS: unknown fault kind {name:?}"),
                },
            };
            set.0 = if minus { set.0 & !bits } else { set.0 | bits };
        }
        set
    }
    fn names(self) -> String {
        if self == Kinds::ALL {
            return "all".into();
        }
        let list: Vec<&str> = KINDS
            .iter()
            .filter(|(k, _)| self.has(*k))
            .map(|(_, n)| *n)
            .collect();
        if list.is_empty() {
            "none".into()
        } else {
            list.join(",")
        }
    }
}

/// One scheduled fault. Times are ms after T0.
#[derive(Clone, Debug)]
struct Fault {
    kind: Kind,
    at: u64,
    /// The server it hits (crash, isolate), or the one the operator sets PARTNER-DOWN.
    server: usize,
    dur: u64,
    /// PARTNER-DOWN command this long after the start.
    cmd_after: u64,
    /// Which clients reach which side, for splits.
    salt: u64,
    /// A crash kills the process (the kernel resets the connection) or the machine (silence).
    process_only: bool,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at as f64 / 1000.0;
        let dur = self.dur as f64 / 1000.0;
        let s = SERVER_NAMES[self.server];
        match self.kind {
            Kind::Drop => write!(f, "datagram loss"),
            Kind::Reset => write!(f, "reset at +{at:.1}s"),
            Kind::Partition => write!(f, "partition at +{at:.1}s for {dur:.0}s"),
            Kind::Split => write!(f, "split partition at +{at:.1}s for {dur:.0}s"),
            Kind::Isolate => write!(f, "{s} unreachable by clients at +{at:.1}s for {dur:.0}s"),
            Kind::Crash => write!(f, "{s} crash at +{at:.1}s, restart after {dur:.0}s"),
            Kind::Wipe => write!(
                f,
                "{s} crash at +{at:.1}s, restart with an EMPTY journal after {dur:.0}s"
            ),
            Kind::PdCrash => write!(
                f,
                "{s} crash at +{at:.1}s for {dur:.0}s; partner set PARTNER-DOWN after {:.0}s",
                self.cmd_after as f64 / 1000.0
            ),
            Kind::PdPartition => write!(
                f,
                "{} cut off from partner and clients at +{at:.1}s for {dur:.0}s; {s} set \
                 PARTNER-DOWN after {:.0}s",
                SERVER_NAMES[1 - self.server],
                self.cmd_after as f64 / 1000.0
            ),
        }
    }
}

/// The seed's fault schedule: 2–8 faults of the enabled kinds, in the chaos period.
fn schedule(seed: u64, kinds: Kinds, p: &Params) -> Vec<Fault> {
    let scheduled: Vec<Kind> = KINDS
        .iter()
        .map(|(k, _)| *k)
        .filter(|&k| k != Kind::Drop && kinds.has(k))
        .collect();
    if scheduled.is_empty() {
        return Vec::new();
    }
    let mut r = Rng::new(seed, 2);
    let n = r.range(2, 8);
    let mut faults: Vec<Fault> = (0..n)
        .map(|_| {
            let kind = scheduled[r.below(scheduled.len() as u64) as usize];
            let at = WARMUP_MS + r.below(p.chaos_ms);
            let server = r.below(2) as usize;
            let short = r.range(10, 600) * 1000;
            let long = r.range(120, 600) * 1000;
            let down = r.range(1, 300) * 1000;
            let cmd_after = r.range(15, 90) * 1000;
            let salt = r.next();
            let process_only = r.chance(0.5);
            let server = if kind == Kind::PdPartition {
                p.pd_side
            } else {
                server
            };
            let dur = match kind {
                Kind::Drop | Kind::Reset => 0,
                Kind::Partition | Kind::Split | Kind::Isolate => short,
                Kind::Crash | Kind::Wipe => down,
                Kind::PdCrash | Kind::PdPartition => long,
            };
            Fault {
                kind,
                at,
                server,
                dur,
                cmd_after,
                salt,
                process_only,
            }
        })
        .collect();
    faults.sort_by_key(|f| f.at);
    faults
}

// =============================================================================================
// Durable records and the journal
// =============================================================================================

#[derive(Clone, Debug)]
struct OwnedChange {
    seq: u64,
    ip: Ipv4Addr,
    state: LeaseState,
    expires_s: u64,
    since_s: u64,
    client: Vec<u8>,
    potential_expiry_s: u64,
    partner_expiry_s: u64,
    cltt_s: u64,
}

impl OwnedChange {
    fn of(c: &Change<'_>) -> OwnedChange {
        OwnedChange {
            seq: c.seq,
            ip: c.ip,
            state: c.state,
            expires_s: c.expires_s,
            since_s: c.since_s,
            client: c.client.to_vec(),
            potential_expiry_s: c.potential_expiry_s,
            partner_expiry_s: c.partner_expiry_s,
            cltt_s: c.cltt_s,
        }
    }
    fn as_change(&self) -> Change<'_> {
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

/// A lease log record: a binding, or the relationship's state (as the shell writes them).
#[derive(Clone, Debug)]
enum Rec {
    Lease(OwnedChange),
    Relationship {
        seq: u64,
        state: FailoverState,
        entered_at_s: u64,
        mclt_s: u32,
    },
}

impl Rec {
    fn seq(&self) -> u64 {
        match self {
            Rec::Lease(c) => c.seq,
            Rec::Relationship { seq, .. } => *seq,
        }
    }
}

/// One writer's appends (not yet synced). The DHCP side's journal also notes each change for
/// replication (`LogJournal`'s feed); the failover side's does not.
struct SimJournal<'a> {
    out: &'a mut Vec<Rec>,
    feed: Option<&'a mut Vec<Binding>>,
}

impl Journal for SimJournal<'_> {
    fn record(&mut self, change: &Change<'_>) -> Result<(), StorageUnavailable> {
        self.out.push(Rec::Lease(OwnedChange::of(change)));
        if let Some(feed) = &mut self.feed {
            feed.push(to_failover_binding(change));
        }
        Ok(())
    }
}

// =============================================================================================
// Servers and the failover link
// =============================================================================================

struct Node {
    role: Role,
    up: bool,
    srv: Option<Server>,
    gate: Arc<ServiceGate>,
    ep: Option<Endpoint>,
    /// The lease log: what survives a crash (not a wipe).
    durable: Vec<Rec>,
    /// DHCP side: appended, not yet synced; replies and changes waiting for that sync.
    dhcp_unsynced: Vec<Rec>,
    dhcp_sync_at: Option<u64>,
    held_replies: Vec<(usize, Vec<u8>)>,
    held_changes: Vec<Binding>,
    /// Failover side: appended, not yet synced; messages waiting for that sync.
    fo_unsynced: Vec<Rec>,
    fo_sync_at: Option<u64>,
    held_sends: Vec<Vec<u8>>,
    /// A state for the gate once durable.
    gate_state: Option<FailoverState>,
    /// The endpoint asked to close: after the held messages are written.
    close_after: bool,
    /// When the next pool balance is due (acted on in NORMAL only).
    next_rebalance: u64,
}

impl Node {
    /// The running server and a journal of its failover side (durable at the failover
    /// thread's next sync).
    fn failover_side(&mut self) -> Option<(&Server, SimJournal<'_>)> {
        let srv = self.srv.as_ref()?;
        let journal = SimJournal {
            out: &mut self.fo_unsynced,
            feed: None,
        };
        Some((srv, journal))
    }

    fn new(role: Role, p: &Params) -> Node {
        let (srv, gate) = build_server(role, p);
        Node {
            role,
            up: false,
            srv: Some(srv),
            gate,
            ep: None,
            durable: Vec::new(),
            dhcp_unsynced: Vec::new(),
            dhcp_sync_at: None,
            held_replies: Vec::new(),
            held_changes: Vec::new(),
            fo_unsynced: Vec::new(),
            fo_sync_at: None,
            held_sends: Vec::new(),
            gate_state: None,
            close_after: false,
            next_rebalance: 0,
        }
    }

    fn ep(&self) -> Option<&Endpoint> {
        self.ep.as_ref().filter(|_| self.up)
    }
}

enum Item {
    Data(Vec<u8>),
    Fin,
}

/// One TCP connection between the servers: per direction an ordered queue.
struct Conn {
    open: [bool; 2],
    q: [std::collections::VecDeque<(u64, Item)>; 2],
}

#[derive(Default)]
struct FoLink {
    /// Active cuts (partitions may overlap).
    cut: u32,
    conn: Option<Conn>,
}

impl FoLink {
    fn side_open(&self, i: usize) -> bool {
        self.conn.as_ref().is_some_and(|c| c.open[i])
    }
}

// =============================================================================================
// Clients
// =============================================================================================

#[derive(Clone, Copy, Debug)]
struct Lease {
    ip: Ipv4Addr,
    server: usize,
    /// ms: the lease is the client's while `now < expiry`.
    expiry: u64,
    t1: u64,
    t2: u64,
    /// Granted by a server that lost its database before the partner acknowledged it: no
    /// server can know it any more (exempt from invariant 2, not from 1 and 3).
    orphan: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    Off {
        until: u64,
    },
    Init,
    Selecting {
        xid: u32,
        tries: u32,
    },
    Requesting {
        xid: u32,
        ip: Ipv4Addr,
        server: usize,
        first: u64,
        tries: u32,
    },
    Bound,
    Renewing {
        xid: u32,
        first: u64,
    },
    Rebinding {
        xid: u32,
        first: u64,
    },
    Rebooting {
        xid: u32,
        first: u64,
        tries: u32,
    },
}

impl CState {
    fn xid(self) -> Option<u32> {
        match self {
            CState::Selecting { xid, .. }
            | CState::Requesting { xid, .. }
            | CState::Renewing { xid, .. }
            | CState::Rebinding { xid, .. }
            | CState::Rebooting { xid, .. } => Some(xid),
            CState::Off { .. } | CState::Init | CState::Bound => None,
        }
    }
}

struct Client {
    mac: [u8; 6],
    client_id: Option<Vec<u8>>,
    /// The lease table's key for this client.
    key: Vec<u8>,
    rng: Rng,
    state: CState,
    lease: Option<Lease>,
    last_ip: Option<Ipv4Addr>,
    next_xid: u32,
    gen: u64,
    release_at: Option<u64>,
    leave_at: Option<u64>,
}

impl Client {
    fn holds(&self, now: u64) -> Option<Lease> {
        self.lease.filter(|l| now < l.expiry)
    }
}

/// How a client sends: through the relay (both servers) or unicast to one server.
#[derive(Clone, Copy)]
enum Via {
    Relay,
    Server(usize),
}

/// What goes into one client request.
#[derive(Clone, Copy)]
struct ReqSpec {
    msg: MessageType,
    xid: u32,
    via: Via,
    ciaddr: Option<Ipv4Addr>,
    /// Option 50.
    requested: Option<Ipv4Addr>,
    /// Option 54.
    server: Option<usize>,
}

impl ReqSpec {
    fn new(msg: MessageType, xid: u32, via: Via) -> ReqSpec {
        ReqSpec {
            msg,
            xid,
            via,
            ciaddr: None,
            requested: None,
            server: None,
        }
    }
    fn ask(self, requested: Option<Ipv4Addr>) -> ReqSpec {
        ReqSpec { requested, ..self }
    }
}

// =============================================================================================
// The trace
// =============================================================================================

#[derive(Clone, Copy, Debug)]
enum ReqOut {
    Reply(MessageType, Ipv4Addr, Option<u32>),
    Held(MessageType, Ipv4Addr, Option<u32>),
    Done,
    Drop(DropReason),
}

enum TrEv {
    /// Faults, states: always printed.
    Note(String),
    /// Connection churn: printed only shortly before a violation.
    Chatter(String),
    Req {
        c: u16,
        s: u8,
        msg: MessageType,
        ip: Ipv4Addr,
        out: ReqOut,
    },
    Got {
        c: u16,
        s: u8,
        msg: MessageType,
        ip: Ipv4Addr,
        until: u64,
    },
    Lost {
        c: u16,
        ip: Ipv4Addr,
        why: &'static str,
    },
    Changed {
        s: u8,
        ip: Ipv4Addr,
        status: BindingStatus,
        c: Option<u16>,
        expires_s: u64,
    },
    Applied {
        s: u8,
        ip: Ipv4Addr,
        status: BindingStatus,
        c: Option<u16>,
        expires_s: u64,
    },
    Acked {
        s: u8,
        ip: Ipv4Addr,
    },
    Rejected {
        s: u8,
        ip: Ipv4Addr,
        reason: RejectReason,
    },
}

struct Tr {
    t: u64,
    ev: TrEv,
}

fn rel(t_ms: u64) -> f64 {
    t_ms.saturating_sub(T0) as f64 / 1000.0
}

fn rel_s(t_s: u64) -> f64 {
    (t_s * 1000).saturating_sub(T0) as f64 / 1000.0
}

fn client_name(c: Option<u16>) -> String {
    c.map_or("-".into(), |c| format!("c{c}"))
}

impl Tr {
    fn ip(&self) -> Option<Ipv4Addr> {
        match &self.ev {
            TrEv::Note(_) | TrEv::Chatter(_) => None,
            TrEv::Req { ip, .. }
            | TrEv::Got { ip, .. }
            | TrEv::Lost { ip, .. }
            | TrEv::Changed { ip, .. }
            | TrEv::Applied { ip, .. }
            | TrEv::Acked { ip, .. }
            | TrEv::Rejected { ip, .. } => Some(*ip),
        }
    }
    fn client(&self) -> Option<u16> {
        match &self.ev {
            TrEv::Req { c, .. } | TrEv::Got { c, .. } | TrEv::Lost { c, .. } => Some(*c),
            TrEv::Changed { c, .. } | TrEv::Applied { c, .. } => *c,
            _ => None,
        }
    }
}

impl fmt::Display for Tr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{:9.3}s ", rel(self.t))?;
        let sn = |s: u8| SERVER_NAMES[usize::from(s)];
        match &self.ev {
            TrEv::Note(s) => write!(f, "** {s}"),
            TrEv::Chatter(s) => write!(f, "-- {s}"),
            TrEv::Req { c, s, msg, ip, out } => {
                write!(f, "c{c} {} ({ip}) at {}: ", msg.name(), sn(*s))?;
                match out {
                    ReqOut::Reply(m, y, l) => write!(f, "{} {y} lease {l:?}", m.name()),
                    ReqOut::Held(m, y, l) => {
                        write!(f, "{} {y} lease {l:?} (after sync)", m.name())
                    }
                    ReqOut::Done => write!(f, "done"),
                    ReqOut::Drop(r) => write!(f, "dropped: {}", r.name()),
                }
            }
            TrEv::Got {
                c,
                s,
                msg,
                ip,
                until,
            } => write!(
                f,
                "c{c} accepts {} {ip} from {} until +{:.1}s",
                msg.name(),
                sn(*s),
                rel(*until)
            ),
            TrEv::Lost { c, ip, why } => write!(f, "c{c} stops holding {ip}: {why}"),
            TrEv::Changed {
                s,
                ip,
                status,
                c,
                expires_s,
            } => write!(
                f,
                "{} replicates {ip} {} {} expires +{:.0}s",
                sn(*s),
                status.name(),
                client_name(*c),
                rel_s(*expires_s)
            ),
            TrEv::Applied {
                s,
                ip,
                status,
                c,
                expires_s,
            } => write!(
                f,
                "{} applies partner's {ip} {} {} expires +{:.0}s",
                sn(*s),
                status.name(),
                client_name(*c),
                rel_s(*expires_s)
            ),
            TrEv::Acked { s, ip } => write!(f, "{} partner acked {ip}", sn(*s)),
            TrEv::Rejected { s, ip, reason } => {
                write!(f, "{} partner REJECTED {ip}: {}", sn(*s), reason.name())
            }
        }
    }
}

// =============================================================================================
// Violations and statistics
// =============================================================================================

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Inv {
    OneHolder = 1,
    Known = 2,
    KeepsAddress = 3,
    Acked = 4,
    Recovers = 5,
}

impl Inv {
    fn name(self) -> &'static str {
        match self {
            Inv::OneHolder => "1 (no address held by two clients)",
            Inv::Known => "2 (every held lease known to a server)",
            Inv::KeepsAddress => "3 (a client is not NAKed off its running lease)",
            Inv::Acked => "4 (every update acknowledged or re-sent)",
            Inv::Recovers => "5 (the pair returns to NORMAL after the faults heal)",
        }
    }
}

#[derive(Clone, Debug)]
struct Violation {
    inv: Inv,
    at: u64,
    msg: String,
    ips: Vec<Ipv4Addr>,
    clients: Vec<u16>,
    /// A client involved holds a lease that only a since-wiped database knew.
    orphan: bool,
}

#[derive(Clone, Debug, Default)]
struct Stats {
    runs: u64,
    virtual_ms: u64,
    offers: u64,
    acks_new: u64,
    acks_renew: u64,
    naks: u64,
    releases: u64,
    applied: u64,
    rejected: u64,
    state_changes: u64,
    refused: u64,
    crashes: u64,
    wipes: u64,
    partitions: u64,
    partner_down_ok: u64,
    partner_down_refused: u64,
    final_known_both: u64,
    final_known_one: u64,
    /// Held leases lost with a wiped database (exempt from invariant 2).
    final_orphans: u64,
    wipes_skipped: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.runs += o.runs;
        self.virtual_ms += o.virtual_ms;
        self.offers += o.offers;
        self.acks_new += o.acks_new;
        self.acks_renew += o.acks_renew;
        self.naks += o.naks;
        self.releases += o.releases;
        self.applied += o.applied;
        self.rejected += o.rejected;
        self.state_changes += o.state_changes;
        self.refused += o.refused;
        self.crashes += o.crashes;
        self.wipes += o.wipes;
        self.partitions += o.partitions;
        self.partner_down_ok += o.partner_down_ok;
        self.partner_down_refused += o.partner_down_refused;
        self.final_known_both += o.final_known_both;
        self.final_known_one += o.final_known_one;
        self.final_orphans += o.final_orphans;
        self.wipes_skipped += o.wipes_skipped;
    }
}

// =============================================================================================
// The world: event loop
// =============================================================================================

enum Ev {
    Wake {
        c: usize,
        gen: u64,
    },
    ToServer {
        s: usize,
        c: usize,
        bytes: Vec<u8>,
    },
    ToClient {
        c: usize,
        s: usize,
        bytes: Vec<u8>,
    },
    FaultStart(usize),
    FaultEnd(usize),
    FaultCommand(usize),
    Tick,
    Heal,
    /// The clients of a site cut off by a [`Kind::PdPartition`] reach it again.
    Unisolate(usize),
}

struct Sched {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Sched {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sched {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct World {
    p: Params,
    faults: Vec<Fault>,
    strict: bool,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<Sched>>,
    /// Network and storage latencies, losses.
    rng: Rng,
    nodes: [Node; 2],
    link: FoLink,
    clients: Vec<Client>,
    key_to_client: HashMap<Vec<u8>, u16>,
    /// Per client and server: active blocks (splits).
    block: Vec<[u32; 2]>,
    /// Per server: active client isolations.
    isolated: [u32; 2],
    /// Per server: sites cut off by a [`Kind::PdPartition`]; they outlive the heal by at least
    /// [`PD_CLIENTS_BACK_MS`], so the pair resolves its conflict before clients return.
    pd_isolated: [u32; 2],
    split_blocks: HashMap<usize, Vec<(usize, usize)>>,
    /// Faults whose start took effect (their end undoes them).
    started: Vec<bool>,
    healed: bool,
    heal_at: u64,
    end_at: u64,
    /// Since when both servers are NORMAL with the link up.
    normal_since: Option<u64>,
    last_known_check: u64,
    /// Per server: changes handed to replication, not yet settled: ip → (PET, when).
    unacked: [BTreeMap<Ipv4Addr, (u64, u64)>; 2],
    /// Per server: its database was wiped and it has not been NORMAL since.
    db_lost: [bool; 2],
    /// Per server: the last state it entered (kept while it is down).
    last_state: [Option<FailoverState>; 2],
    occupancy: Vec<Option<usize>>,
    trace: Vec<Tr>,
    stats: Stats,
    violation: Option<Violation>,
    done: bool,
}

impl World {
    fn new(seed: u64, cfg: &ChaosCfg, keep: Option<&[bool]>) -> World {
        let (kinds, strict) = (cfg.kinds, cfg.strict);
        let p = Params {
            startup_wait: cfg.startup_wait,
            ..Params::draw(seed, kinds)
        };
        let all = schedule(seed, kinds, &p);
        let faults: Vec<Fault> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.is_none_or(|k| k.get(*i).copied().unwrap_or(false)))
            .map(|(_, f)| f)
            .collect();
        let mut clients = Vec::with_capacity(p.clients);
        let mut key_to_client = HashMap::new();
        let mut crng = Rng::new(seed, 3);
        for c in 0..p.clients {
            let s = p.mac_salt;
            let mac = [0x02, s[0], s[1], s[2], (c >> 8) as u8, c as u8];
            let client_id = crng.chance(0.25).then(|| {
                let mut id = vec![1];
                id.extend_from_slice(&mac);
                id
            });
            let key = match &client_id {
                Some(id) => ringlease::proto::lease::ClientKey::from_client_id(id),
                None => ringlease::proto::lease::ClientKey::from_hardware(1, &mac),
            }
            .as_bytes()
            .to_vec();
            key_to_client.insert(key.clone(), c as u16);
            clients.push(Client {
                mac,
                client_id,
                key,
                rng: Rng::new(seed, 100 + c as u64),
                state: CState::Off { until: 0 },
                lease: None,
                last_ip: None,
                next_xid: (c as u32) << 20,
                gen: 0,
                release_at: None,
                leave_at: None,
            });
        }
        let heal_at = T0 + WARMUP_MS + p.chaos_ms;
        let end_at = heal_at + liveness_ms(&p) + 1_000;
        let n_faults = faults.len();
        let pool = p.pool_size as usize;
        let nclients = p.clients;
        World {
            nodes: [Node::new(Role::Primary, &p), Node::new(Role::Secondary, &p)],
            p,
            faults,
            strict,
            now: T0,
            seq: 0,
            heap: BinaryHeap::new(),
            rng: Rng::new(seed, 4),
            link: FoLink::default(),
            clients,
            key_to_client,
            block: vec![[0; 2]; nclients],
            isolated: [0; 2],
            pd_isolated: [0; 2],
            split_blocks: HashMap::new(),
            started: vec![false; n_faults],
            healed: false,
            heal_at,
            end_at,
            normal_since: None,
            last_known_check: 0,
            unacked: [BTreeMap::new(), BTreeMap::new()],
            db_lost: [false; 2],
            last_state: [None; 2],
            occupancy: vec![None; pool],
            trace: Vec::new(),
            stats: Stats {
                runs: 1,
                ..Stats::default()
            },
            violation: None,
            done: false,
        }
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Sched {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn tr(&mut self, ev: TrEv) {
        self.trace.push(Tr { t: self.now, ev });
    }

    fn note(&mut self, s: String) {
        self.tr(TrEv::Note(s));
    }

    fn chatter(&mut self, s: String) {
        self.tr(TrEv::Chatter(s));
    }

    fn violate(&mut self, inv: Inv, msg: String, ips: Vec<Ipv4Addr>, clients: Vec<u16>) {
        if self.violation.is_none() {
            self.note(format!("VIOLATION of invariant {}: {msg}", inv.name()));
            let orphan = clients.iter().any(|&c| {
                self.clients[usize::from(c)]
                    .lease
                    .is_some_and(|l| l.orphan && ips.contains(&l.ip))
            });
            self.violation = Some(Violation {
                inv,
                at: self.now,
                msg,
                ips,
                clients,
                orphan,
            });
        }
    }

    fn client_of_binding(&self, b: &Binding) -> Option<u16> {
        let key = match (&b.client_id, &b.hardware) {
            (Some(id), _) if !id.is_empty() => {
                ringlease::proto::lease::ClientKey::from_client_id(id)
            }
            (_, Some(hw)) => ringlease::proto::lease::ClientKey::from_hardware(hw.htype, hw.addr()),
            _ => return None,
        };
        self.key_to_client.get(key.as_bytes()).copied()
    }

    // --- running ------------------------------------------------------------------------

    fn run(&mut self) {
        for i in 0..2 {
            self.start_server(i, false);
        }
        for c in 0..self.clients.len() {
            let at = T0 + 5_000 + self.clients[c].rng.below(WARMUP_MS + 60_000);
            self.clients[c].state = CState::Off { until: at };
            self.wake(c, at);
        }
        self.at(T0 + TICK_MS, Ev::Tick);
        for (i, f) in self.faults.iter().enumerate() {
            self.seq += 1;
            self.heap.push(Reverse(Sched {
                at: T0 + f.at,
                seq: self.seq,
                ev: Ev::FaultStart(i),
            }));
        }
        self.at(self.heal_at, Ev::Heal);
        while self.violation.is_none() && !self.done && self.now < self.end_at {
            self.step();
        }
        self.stats.virtual_ms = self.now - T0;
    }

    fn next_at(&self) -> u64 {
        let mut t = self.heap.peek().map_or(u64::MAX, |r| r.0.at);
        for n in &self.nodes {
            if let Some(ep) = n.ep() {
                t = t.min(ep.poll_timeout().unwrap_or(u64::MAX));
                t = t.min(n.dhcp_sync_at.unwrap_or(u64::MAX));
                t = t.min(n.fo_sync_at.unwrap_or(u64::MAX));
                if ep.state() == FailoverState::Normal {
                    t = t.min(n.next_rebalance);
                }
            }
        }
        if self.link.cut == 0 {
            if let Some(conn) = &self.link.conn {
                for q in &conn.q {
                    if let Some((at, _)) = q.front() {
                        t = t.min(*at);
                    }
                }
            }
        }
        t
    }

    fn step(&mut self) {
        let t = self.next_at();
        if t == u64::MAX {
            self.now = self.end_at;
            return;
        }
        self.now = self.now.max(t);
        let now = self.now;
        // The failover link, in order per direction.
        for dir in 0..2 {
            loop {
                if self.link.cut > 0 {
                    break;
                }
                let Some(conn) = &mut self.link.conn else {
                    break;
                };
                if conn.q[dir].front().is_none_or(|(at, _)| *at > now) {
                    break;
                }
                let Some((_, item)) = conn.q[dir].pop_front() else {
                    break;
                };
                let to = 1 - dir;
                if !conn.open[to] {
                    continue;
                }
                match item {
                    Item::Data(bytes) => self.deliver_frame(to, &bytes),
                    Item::Fin => self.lose_connection(to, "closed by the partner"),
                }
            }
        }
        for i in 0..2 {
            if self.nodes[i].up && self.nodes[i].dhcp_sync_at.is_some_and(|t| t <= now) {
                self.dhcp_sync(i);
            }
            if self.nodes[i].up && self.nodes[i].fo_sync_at.is_some_and(|t| t <= now) {
                self.fo_sync(i);
            }
        }
        for i in 0..2 {
            let due = self.nodes[i]
                .ep()
                .and_then(Endpoint::poll_timeout)
                .is_some_and(|t| t <= now);
            if due {
                if let Some(ep) = self.nodes[i].ep.as_mut() {
                    ep.handle_timeout(now);
                }
                self.drain(i);
                self.flush_fo(i);
            }
        }
        for i in 0..2 {
            self.rebalance_due(i);
        }
        while self.heap.peek().is_some_and(|r| r.0.at <= now) {
            let Some(Reverse(s)) = self.heap.pop() else {
                break;
            };
            self.handle(s.ev);
            if self.violation.is_some() {
                return;
            }
        }
        self.check();
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { c, gen } => {
                if self.clients[c].gen == gen {
                    self.client_wake(c);
                }
            }
            Ev::ToServer { s, c, bytes } => self.server_receive(s, c, &bytes),
            Ev::ToClient { c, s, bytes } => self.client_receive(c, s, &bytes),
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::FaultCommand(i) => self.fault_command(i),
            Ev::Tick => {
                let now_s = self.now / 1000;
                for i in 0..2 {
                    let node = &mut self.nodes[i];
                    let Some(srv) = node.srv.as_ref().filter(|_| node.up) else {
                        continue;
                    };
                    let mut journal = SimJournal {
                        out: &mut node.dhcp_unsynced,
                        feed: Some(&mut node.held_changes),
                    };
                    expire(srv, now_s, &mut journal);
                    self.flush_dhcp(i);
                }
                self.at(self.now + TICK_MS, Ev::Tick);
            }
            Ev::Heal => self.heal(),
            Ev::Unisolate(s) => {
                // Not before the pair talks again: the partner may still be PARTNER-DOWN.
                let partner_pd = self.last_state[1 - s] == Some(FailoverState::PartnerDown);
                if self.link.cut > 0 || partner_pd {
                    self.at(self.now + 10_000, Ev::Unisolate(s));
                } else {
                    self.pd_isolated[s] -= 1;
                }
            }
        }
    }

    // --- servers: start, crash, durability ---------------------------------------------

    /// `shell::start`: replay, persisted state, a gate in the state the endpoint resumed.
    fn start_server(&mut self, i: usize, restart: bool) {
        let role = self.nodes[i].role;
        let (srv, gate) = build_server(role, &self.p);
        let persisted = replay(&srv, &self.nodes[i].durable);
        let mut ep = start_endpoint(role, &self.p, persisted, self.now);
        after_start(&srv, &mut ep, self.now);
        set_gate(&gate, &ep, ep.state());
        let records = self.nodes[i].durable.len();
        let node = &mut self.nodes[i];
        node.srv = Some(srv);
        node.gate = gate;
        node.ep = Some(ep);
        node.up = true;
        node.next_rebalance = self.now;
        if restart {
            self.note(format!(
                "{} restarts: {records} records replayed, resumes from {:?}",
                SERVER_NAMES[i],
                persisted.map(|p| p.state.name())
            ));
        }
    }

    /// Everything not in the journal is gone; a wipe takes the journal too.
    fn crash(&mut self, i: usize, wipe: bool, process_only: bool) -> bool {
        if !self.nodes[i].up {
            return false;
        }
        let node = &mut self.nodes[i];
        node.up = false;
        node.srv = None;
        node.ep = None;
        node.dhcp_unsynced.clear();
        node.dhcp_sync_at = None;
        node.held_replies.clear();
        node.held_changes.clear();
        node.fo_unsynced.clear();
        node.fo_sync_at = None;
        node.held_sends.clear();
        node.gate_state = None;
        node.close_after = false;
        if wipe {
            node.durable.clear();
            // Leases whose latest change the partner never acknowledged existed only here.
            for cl in &mut self.clients {
                if let Some(l) = cl.lease.as_mut() {
                    if self.unacked[i].contains_key(&l.ip) {
                        l.orphan = true;
                    }
                }
            }
            // Nothing of it can be re-sent: the database is gone.
            self.unacked[i].clear();
            self.db_lost[i] = true;
            self.stats.wipes += 1;
        } else {
            self.stats.crashes += 1;
        }
        if let Some(conn) = &mut self.link.conn {
            if conn.open[i] {
                conn.open[i] = false;
                if process_only {
                    // The kernel resets the connection of a killed process.
                    let at = self.now + self.p.link_latency_ms;
                    let at = conn.q[i].back().map_or(at, |b| b.0.max(at));
                    conn.q[i].push_back((at, Item::Fin));
                }
                if !conn.open[0] && !conn.open[1] {
                    self.link.conn = None;
                }
            }
        }
        self.note(format!(
            "{} CRASHES{}",
            SERVER_NAMES[i],
            if wipe { " and loses its database" } else { "" }
        ));
        true
    }

    /// The DHCP side's sync completed: replies go out, changes go to the failover thread.
    fn dhcp_sync(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.dhcp_sync_at = None;
        let mut synced = std::mem::take(&mut node.dhcp_unsynced);
        node.durable.append(&mut synced);
        let replies = std::mem::take(&mut node.held_replies);
        let changes = std::mem::take(&mut node.held_changes);
        for (c, bytes) in replies {
            self.reply_to_client(i, c, bytes);
        }
        if changes.is_empty() {
            return;
        }
        for b in &changes {
            self.unacked[i].insert(b.ip, (b.pet_s, now));
            let c = self.client_of_binding(b);
            self.tr(TrEv::Changed {
                s: i as u8,
                ip: b.ip,
                status: b.status,
                c,
                expires_s: b.expires_s,
            });
        }
        if let Some(ep) = self.nodes[i].ep.as_mut() {
            ep.bindings_changed(now, changes);
        }
        self.drain(i);
        self.flush_fo(i);
    }

    fn flush_dhcp(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if !node.dhcp_unsynced.is_empty() && node.dhcp_sync_at.is_none() {
            node.dhcp_sync_at = Some(self.now + self.rng.range(1, 5));
        }
    }

    fn fo_sync(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.fo_sync_at = None;
        let mut synced = std::mem::take(&mut node.fo_unsynced);
        node.durable.append(&mut synced);
        self.release_fo(i);
    }

    /// `Core::flush`: sync first if anything was appended; then the gate, the held messages,
    /// and the close the endpoint asked for.
    fn flush_fo(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if !node.up {
            return;
        }
        if !node.fo_unsynced.is_empty() {
            if node.fo_sync_at.is_none() {
                node.fo_sync_at = Some(self.now + self.rng.range(1, 5));
            }
            return;
        }
        self.release_fo(i);
    }

    fn release_fo(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let (Some(state), Some(ep)) = (node.gate_state.take(), node.ep.as_ref()) {
            set_gate(&node.gate, ep, state);
        }
        let sends = std::mem::take(&mut node.held_sends);
        for bytes in sends {
            self.link_push(i, Item::Data(bytes));
        }
        if std::mem::take(&mut self.nodes[i].close_after) {
            self.link_push(i, Item::Fin);
            self.close_side(i);
        }
    }

    /// Acts on every output of server `i`'s endpoint, in order.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(out) = self.nodes[i].ep.as_mut().and_then(Endpoint::poll_output) else {
                return;
            };
            self.act(i, out);
        }
    }

    // --- the failover link ------------------------------------------------------------------

    fn link_push(&mut self, from: usize, item: Item) {
        let base = self.now + self.p.link_latency_ms + self.rng.below(self.p.link_jitter_ms + 1);
        let Some(conn) = &mut self.link.conn else {
            return;
        };
        if !conn.open[from] {
            return;
        }
        // TCP keeps the order.
        let at = conn.q[from].back().map_or(base, |b| b.0.max(base));
        conn.q[from].push_back((at, item));
    }

    fn close_side(&mut self, i: usize) {
        if let Some(conn) = &mut self.link.conn {
            conn.open[i] = false;
            if !conn.open[0] && !conn.open[1] {
                self.link.conn = None;
            }
        }
    }

    fn deliver_frame(&mut self, to: usize, bytes: &[u8]) {
        let now = self.now;
        let node = &mut self.nodes[to];
        // The shell stops reading once the endpoint asked to close.
        if !node.up || node.close_after {
            return;
        }
        {
            let (Some(srv), Some(ep)) = (node.srv.as_ref(), node.ep.as_mut()) else {
                return;
            };
            let settings = srv.settings();
            let view = srv.leases.view(&settings.subnets, now / 1000);
            ep.receive_frame(now, bytes, &view);
        }
        self.drain(to);
        self.flush_fo(to);
    }

    /// `Core::lose_connection`.
    fn lose_connection(&mut self, i: usize, why: &str) {
        self.close_side(i);
        let node = &mut self.nodes[i];
        if !node.up {
            return;
        }
        node.held_sends.clear();
        node.close_after = false;
        if let Some(ep) = node.ep.as_mut() {
            ep.disconnected(self.now);
        }
        self.chatter(format!("{} loses the connection: {why}", SERVER_NAMES[i]));
        self.drain(i);
        self.flush_fo(i);
    }

    /// The primary's connect attempt: fails while the link is cut, the partner is down, or
    /// the partner still holds an old connection (its shell closes a second one).
    fn try_connect(&mut self, i: usize) {
        if self.nodes[i].role != Role::Primary {
            return;
        }
        let j = 1 - i;
        let partner_down = self.nodes[j].ep().is_none_or(|e| e.link() != Link::Down);
        if self.link.cut > 0 || partner_down || self.link.conn.is_some() {
            return;
        }
        self.link.conn = Some(Conn {
            open: [true, true],
            q: Default::default(),
        });
        self.chatter("connection established".into());
        let now = self.now;
        for (k, ours) in [(i, true), (j, false)] {
            let node = &mut self.nodes[k];
            node.held_sends.clear();
            node.close_after = false;
            if let Some(ep) = node.ep.as_mut() {
                ep.connected(now, ours).expect("link was down");
            }
        }
        // The caller drains and flushes the primary.
        self.drain(j);
        self.flush_fo(j);
    }

    // --- DHCP between clients and servers -----------------------------------------------------

    fn reaches(&self, c: usize, s: usize) -> bool {
        self.nodes[s].up
            && self.block[c][s] == 0
            && self.isolated[s] == 0
            && self.pd_isolated[s] == 0
    }

    fn delay(&mut self) -> u64 {
        if self.rng.chance(0.05) {
            self.rng.range(200, 1500)
        } else {
            self.rng.range(1, 20)
        }
    }

    /// A datagram: lost, delivered once or twice, each copy with its own delay.
    fn datagram(&mut self, make: impl Fn() -> Ev) {
        if self.rng.chance(self.p.loss) {
            return;
        }
        let d = self.delay();
        self.at(self.now + d, make());
        if self.rng.chance(self.p.dup) {
            let d = self.delay();
            self.at(self.now + d, make());
        }
    }

    fn reply_to_client(&mut self, s: usize, c: usize, bytes: Vec<u8>) {
        if self.reaches(c, s) {
            self.datagram(|| Ev::ToClient {
                c,
                s,
                bytes: bytes.clone(),
            });
        }
    }

    fn client_send(&mut self, c: usize, via: Via, bytes: Vec<u8>) {
        let targets: &[usize] = match via {
            Via::Relay => &[0, 1],
            Via::Server(0) => &[0],
            Via::Server(_) => &[1],
        };
        for &s in targets {
            if self.reaches(c, s) {
                self.datagram(|| Ev::ToServer {
                    s,
                    c,
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn server_receive(&mut self, s: usize, c: usize, bytes: &[u8]) {
        let now_s = self.now / 1000;
        let node = &mut self.nodes[s];
        if !node.up {
            return;
        }
        let Some(srv) = node.srv.as_ref() else {
            return;
        };
        let p = Packet::parse(bytes).expect("the simulator sends valid DHCP");
        let before = node.dhcp_unsynced.len();
        let decision = {
            let mut journal = SimJournal {
                out: &mut node.dhcp_unsynced,
                feed: Some(&mut node.held_changes),
            };
            srv.decide(&p, Ipv4Addr::UNSPECIFIED, now_s, &mut journal)
        };
        let appended = node.dhcp_unsynced.len() > before;
        let ip = if p.ciaddr().is_unspecified() {
            p.requested_ip().unwrap_or(Ipv4Addr::UNSPECIFIED)
        } else {
            p.ciaddr()
        };
        let out = match decision {
            Decision::Reply(r) => {
                let mut buf = [0u8; 1500];
                let n = srv
                    .write_reply(&p, &r, &mut buf)
                    .expect("a reply fits 576 bytes");
                let reply = buf[..n].to_vec();
                match r.message_type {
                    MessageType::Offer => self.stats.offers += 1,
                    MessageType::Nak => self.stats.naks += 1,
                    _ => {}
                }
                // A reply that grants or extends a lease waits for its record's sync.
                if appended {
                    node.held_replies.push((c, reply));
                    ReqOut::Held(r.message_type, r.yiaddr, r.lease_time_s)
                } else {
                    self.reply_to_client(s, c, reply);
                    ReqOut::Reply(r.message_type, r.yiaddr, r.lease_time_s)
                }
            }
            Decision::Done => ReqOut::Done,
            Decision::Drop(reason) => ReqOut::Drop(reason),
        };
        self.tr(TrEv::Req {
            c: c as u16,
            s: s as u8,
            msg: p.message_type(),
            ip,
            out,
        });
        self.flush_dhcp(s);
    }

    // --- clients ------------------------------------------------------------------------------

    fn wake(&mut self, c: usize, at: u64) {
        let cl = &mut self.clients[c];
        cl.gen += 1;
        let gen = cl.gen;
        if at != u64::MAX {
            self.at(at, Ev::Wake { c, gen });
        }
    }

    fn new_xid(&mut self, c: usize) -> u32 {
        let cl = &mut self.clients[c];
        cl.next_xid = cl.next_xid.wrapping_add(1);
        cl.next_xid
    }

    fn packet(&self, c: usize, r: ReqSpec) -> Vec<u8> {
        let ReqSpec {
            msg,
            xid,
            via,
            ciaddr,
            requested,
            server,
        } = r;
        let cl = &self.clients[c];
        let mut buf = vec![0u8; 576];
        let mut w = PacketWriter::new(&mut buf, 576);
        w.set_op(1);
        w.set_htype(1);
        w.set_chaddr(&cl.mac);
        w.set_xid(xid);
        if let Via::Relay = via {
            w.set_giaddr(GIADDR);
            w.set_hops(1);
        }
        if let Some(ip) = ciaddr {
            w.set_ciaddr(ip);
        }
        let pushed = w
            .push_u8(code::MESSAGE_TYPE, msg as u8)
            .and_then(|()| match requested {
                Some(ip) => w.push_ip(code::REQUESTED_IP, ip),
                None => Ok(()),
            })
            .and_then(|()| match server {
                Some(s) => w.push_ip(code::SERVER_ID, SERVER_IDS[s]),
                None => Ok(()),
            })
            .and_then(|()| match &cl.client_id {
                Some(id) => w.push(code::CLIENT_ID, id),
                None => Ok(()),
            });
        pushed.expect("a small request fits");
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    fn send_discover(&mut self, c: usize, xid: u32) {
        let requested = self.clients[c].last_ip;
        let b = self.packet(
            c,
            ReqSpec::new(MessageType::Discover, xid, Via::Relay).ask(requested),
        );
        self.client_send(c, Via::Relay, b);
    }

    fn discover(&mut self, c: usize) {
        let xid = self.new_xid(c);
        self.send_discover(c, xid);
        self.clients[c].state = CState::Selecting { xid, tries: 1 };
        let at = self.now + self.clients[c].rng.range(2_000, 4_000);
        self.wake(c, at);
    }

    fn send_selecting(&mut self, c: usize, xid: u32, ip: Ipv4Addr, server: usize) {
        let r = ReqSpec::new(MessageType::Request, xid, Via::Relay).ask(Some(ip));
        let b = self.packet(
            c,
            ReqSpec {
                server: Some(server),
                ..r
            },
        );
        self.client_send(c, Via::Relay, b);
    }

    /// RENEWING (unicast to the server) or REBINDING (through the relay).
    fn send_renew(&mut self, c: usize, xid: u32, l: Lease, via: Via) {
        let r = ReqSpec::new(MessageType::Request, xid, via);
        let b = self.packet(
            c,
            ReqSpec {
                ciaddr: Some(l.ip),
                ..r
            },
        );
        self.client_send(c, via, b);
    }

    /// INIT-REBOOT: the remembered address, no server id, no ciaddr.
    fn send_reboot(&mut self, c: usize, xid: u32, ip: Ipv4Addr) {
        let r = ReqSpec::new(MessageType::Request, xid, Via::Relay).ask(Some(ip));
        let b = self.packet(c, r);
        self.client_send(c, Via::Relay, b);
    }

    fn lose(&mut self, c: usize, why: &'static str) {
        if let Some(l) = self.clients[c].lease.take() {
            self.tr(TrEv::Lost {
                c: c as u16,
                ip: l.ip,
                why,
            });
        }
        self.clients[c].release_at = None;
        self.clients[c].leave_at = None;
    }

    fn client_wake(&mut self, c: usize) {
        let now = self.now;
        let state = self.clients[c].state;
        let lease = self.clients[c].lease;
        // The lease ends by the client's own clock, whatever it is doing.
        if let Some(l) = lease {
            let active = matches!(
                state,
                CState::Bound | CState::Renewing { .. } | CState::Rebinding { .. }
            );
            if active && now >= l.expiry {
                self.lose(c, "lease expired");
                self.clients[c].state = CState::Init;
                return self.wake(c, now);
            }
        }
        match state {
            CState::Off { until } => {
                if now >= until {
                    self.client_return(c);
                } else {
                    self.wake(c, until);
                }
            }
            CState::Init => self.discover(c),
            CState::Selecting { xid, tries } => {
                if tries >= 4 {
                    self.clients[c].state = CState::Init;
                    let at = now + self.clients[c].rng.range(5_000, 20_000);
                    self.wake(c, at);
                } else {
                    self.send_discover(c, xid);
                    self.clients[c].state = CState::Selecting {
                        xid,
                        tries: tries + 1,
                    };
                    let at = now + (2_000 << tries.min(3)) + self.clients[c].rng.below(1_000);
                    self.wake(c, at);
                }
            }
            CState::Requesting {
                xid,
                ip,
                server,
                first,
                tries,
            } => {
                if tries >= 3 {
                    self.clients[c].state = CState::Init;
                    self.wake(c, now + 1_000);
                } else {
                    self.send_selecting(c, xid, ip, server);
                    self.clients[c].state = CState::Requesting {
                        xid,
                        ip,
                        server,
                        first,
                        tries: tries + 1,
                    };
                    self.wake(c, now + 3_000);
                }
            }
            CState::Bound => {
                let l = lease.expect("bound with a lease");
                let cl = &self.clients[c];
                if cl.release_at.is_some_and(|t| t <= now) {
                    self.release(c, l);
                } else if cl.leave_at.is_some_and(|t| t <= now) {
                    self.leave(c);
                } else if now >= l.t1 {
                    let xid = self.new_xid(c);
                    self.clients[c].state = CState::Renewing { xid, first: now };
                    self.send_renew(c, xid, l, Via::Server(l.server));
                    self.wake(c, renew_retry(now, l.t2, 4_000));
                } else {
                    let cl = &self.clients[c];
                    let at = [Some(l.t1), cl.release_at, cl.leave_at]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or(l.t1);
                    self.wake(c, at);
                }
            }
            CState::Renewing { xid, .. } => {
                let l = lease.expect("renewing with a lease");
                if now >= l.t2 {
                    let xid = self.new_xid(c);
                    self.clients[c].state = CState::Rebinding { xid, first: now };
                    self.send_renew(c, xid, l, Via::Relay);
                    self.wake(c, renew_retry(now, l.expiry, 2_000));
                } else {
                    self.send_renew(c, xid, l, Via::Server(l.server));
                    self.wake(c, renew_retry(now, l.t2, 4_000));
                }
            }
            CState::Rebinding { xid, .. } => {
                let l = lease.expect("rebinding with a lease");
                self.send_renew(c, xid, l, Via::Relay);
                self.wake(c, renew_retry(now, l.expiry, 2_000));
            }
            CState::Rebooting { xid, first, tries } => {
                let held = self.clients[c].holds(now);
                if tries >= 3 {
                    // RFC 2131 §3.2: no answer, so keep using the unexpired lease.
                    self.clients[c].state = if held.is_some() {
                        CState::Bound
                    } else {
                        self.lose(c, "lease expired while rebooting");
                        CState::Init
                    };
                    self.wake(c, now);
                } else if let Some(l) = held {
                    self.send_reboot(c, xid, l.ip);
                    self.clients[c].state = CState::Rebooting {
                        xid,
                        first,
                        tries: tries + 1,
                    };
                    self.wake(c, now + 2_000);
                } else {
                    self.lose(c, "lease expired while rebooting");
                    self.clients[c].state = CState::Init;
                    self.wake(c, now);
                }
            }
        }
    }

    /// Back from power-off: INIT-REBOOT with a running lease, else DISCOVER.
    fn client_return(&mut self, c: usize) {
        match self.clients[c].holds(self.now) {
            Some(l) => {
                let xid = self.new_xid(c);
                self.clients[c].state = CState::Rebooting {
                    xid,
                    first: self.now,
                    tries: 1,
                };
                self.send_reboot(c, xid, l.ip);
                self.wake(c, self.now + 2_000);
            }
            None => {
                self.lose(c, "lease ran out while away");
                self.clients[c].state = CState::Init;
                self.discover(c);
            }
        }
    }

    fn release(&mut self, c: usize, l: Lease) {
        let xid = self.new_xid(c);
        let r = ReqSpec::new(MessageType::Release, xid, Via::Server(l.server));
        let b = self.packet(
            c,
            ReqSpec {
                ciaddr: Some(l.ip),
                server: Some(l.server),
                ..r
            },
        );
        self.client_send(c, Via::Server(l.server), b);
        self.stats.releases += 1;
        self.lose(c, "released");
        // Away for longer than any datagram delay: a RELEASE overtaken by the same client's
        // next lease of the address would end that lease (RFC 2131 cannot tell them apart).
        let until = self.now + self.clients[c].rng.range(5_000, 300_000);
        self.clients[c].state = CState::Off { until };
        self.wake(c, until);
    }

    fn leave(&mut self, c: usize) {
        self.clients[c].leave_at = None;
        self.clients[c].release_at = None;
        let cl = &mut self.clients[c];
        let until = if cl.rng.chance(0.15) {
            u64::MAX // gone for good; its lease still counts until it ends
        } else {
            self.now + cl.rng.range(5_000, 900_000)
        };
        cl.state = CState::Off { until };
        self.wake(c, until);
    }

    fn client_receive(&mut self, c: usize, s: usize, bytes: &[u8]) {
        let now = self.now;
        let p = Packet::parse(bytes).expect("the server's reply parses");
        let state = self.clients[c].state;
        if state.xid() != Some(p.xid()) {
            return; // not an answer to what the client is doing now
        }
        match (state, p.message_type()) {
            (CState::Selecting { xid, .. }, MessageType::Offer) => {
                let Some(server) = p.server_id().and_then(server_index) else {
                    return;
                };
                let ip = p.yiaddr();
                self.clients[c].state = CState::Requesting {
                    xid,
                    ip,
                    server,
                    first: now,
                    tries: 1,
                };
                self.send_selecting(c, xid, ip, server);
                self.wake(c, now + 3_000);
            }
            (CState::Requesting { ip, first, .. }, MessageType::Ack) => {
                self.bind(c, s, &p, ip, first, false);
            }
            (CState::Requesting { .. }, MessageType::Nak) => {
                self.clients[c].state = CState::Init;
                self.wake(c, now + 500);
            }
            (
                CState::Renewing { first, .. }
                | CState::Rebinding { first, .. }
                | CState::Rebooting { first, .. },
                MessageType::Ack,
            ) => {
                let Some(l) = self.clients[c].lease else {
                    return;
                };
                self.bind(c, s, &p, l.ip, first, true);
            }
            (
                CState::Renewing { .. } | CState::Rebinding { .. } | CState::Rebooting { .. },
                MessageType::Nak,
            ) => {
                if let Some(l) = self.clients[c].holds(now) {
                    self.violate(
                        Inv::KeepsAddress,
                        format!(
                            "c{c} holds {} until +{:.1}s but {} NAKs its {}",
                            l.ip,
                            rel(l.expiry),
                            SERVER_NAMES[s],
                            match state {
                                CState::Renewing { .. } => "renewal",
                                CState::Rebinding { .. } => "rebinding",
                                _ => "INIT-REBOOT",
                            }
                        ),
                        vec![l.ip],
                        vec![c as u16],
                    );
                }
                self.lose(c, "NAKed");
                self.clients[c].state = CState::Init;
                self.wake(c, now + 500);
            }
            _ => {}
        }
    }

    /// The client accepts an ACK for `ip` answering a request first sent at `first`.
    fn bind(&mut self, c: usize, s: usize, p: &Packet<'_>, ip: Ipv4Addr, first: u64, renew: bool) {
        let now = self.now;
        if p.yiaddr() != ip {
            self.note(format!(
                "c{c}: ACK from {} for {} while asking for {ip}: ignored",
                SERVER_NAMES[s],
                p.yiaddr()
            ));
            return;
        }
        let u32_opt = |code: u8| {
            p.option(code)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_be_bytes)
        };
        let Some(lease_s) = u32_opt(code::LEASE_TIME) else {
            return;
        };
        let t1_s = u32_opt(code::RENEWAL_TIME).unwrap_or(lease_s / 2);
        let t2_s = u32_opt(code::REBINDING_TIME).unwrap_or(lease_s / 8 * 7);
        let server = p.server_id().and_then(server_index).unwrap_or(s);
        // Servers count whole seconds from when they decided: the client's end is never later.
        let base = first / 1000 * 1000;
        let l = Lease {
            ip,
            server,
            expiry: base + u64::from(lease_s) * 1000,
            t1: base + u64::from(t1_s) * 1000,
            t2: base + u64::from(t2_s) * 1000,
            orphan: false,
        };
        if renew {
            self.stats.acks_renew += 1;
        } else {
            self.stats.acks_new += 1;
        }
        self.tr(TrEv::Got {
            c: c as u16,
            s: s as u8,
            msg: MessageType::Ack,
            ip,
            until: l.expiry,
        });
        let cl = &mut self.clients[c];
        cl.lease = Some(l);
        cl.last_ip = Some(ip);
        cl.state = CState::Bound;
        cl.release_at = cl
            .rng
            .chance(0.06)
            .then(|| now + cl.rng.below(l.t1.saturating_sub(now)));
        cl.leave_at = cl
            .rng
            .chance(0.04)
            .then(|| now + cl.rng.below(l.expiry.saturating_sub(now)));
        self.wake(c, now);
        self.check_one_holder();
    }

    // --- faults -------------------------------------------------------------------------------

    fn fault_start(&mut self, k: usize) {
        if self.healed {
            return;
        }
        let f = self.faults[k].clone();
        self.note(format!("FAULT #{k}: {f}"));
        let now = self.now;
        match f.kind {
            Kind::Drop => {}
            Kind::Reset => {
                if let Some(conn) = self.link.conn.take() {
                    for i in 0..2 {
                        if conn.open[i] {
                            self.lose_connection(i, "connection reset");
                        }
                    }
                }
            }
            Kind::Partition | Kind::Split => {
                self.cut_link(k, f.kind == Kind::Split);
                self.at(now + f.dur, Ev::FaultEnd(k));
            }
            Kind::Isolate => {
                self.isolated[f.server] += 1;
                self.started[k] = true;
                self.at(now + f.dur, Ev::FaultEnd(k));
            }
            Kind::Wipe if self.db_lost[1 - f.server] => {
                self.stats.wipes_skipped += 1;
                self.note(format!(
                    "FAULT #{k} skipped: the partner's lost database is not restored yet"
                ));
            }
            Kind::Crash | Kind::Wipe | Kind::PdCrash => {
                if self.crash(f.server, f.kind == Kind::Wipe, f.process_only) {
                    self.started[k] = true;
                    self.at(now + f.dur, Ev::FaultEnd(k));
                    if f.kind == Kind::PdCrash {
                        self.at(now + f.cmd_after, Ev::FaultCommand(k));
                    }
                }
            }
            Kind::PdPartition => {
                self.cut_link(k, false);
                self.pd_isolated[1 - f.server] += 1;
                self.at(now + f.cmd_after, Ev::FaultCommand(k));
                self.at(now + f.dur, Ev::FaultEnd(k));
            }
        }
    }

    fn cut_link(&mut self, k: usize, split: bool) {
        self.link.cut += 1;
        self.started[k] = true;
        self.stats.partitions += 1;
        if split {
            let mut r = Rng::new(self.faults[k].salt, 5);
            let mut blocks = Vec::new();
            for c in 0..self.clients.len() {
                match r.below(10) {
                    0..=4 => blocks.push((c, 1)), // reaches the primary only
                    5..=8 => blocks.push((c, 0)), // the secondary only
                    _ => {}                       // both
                }
            }
            for &(c, s) in &blocks {
                self.block[c][s] += 1;
            }
            self.split_blocks.insert(k, blocks);
        }
    }

    fn fault_end(&mut self, k: usize) {
        if self.healed || !std::mem::take(&mut self.started[k]) {
            return;
        }
        let f = self.faults[k].clone();
        self.note(format!("FAULT #{k} ends: {f}"));
        match f.kind {
            Kind::Drop | Kind::Reset => {}
            Kind::Partition | Kind::Split | Kind::PdPartition => {
                self.link.cut -= 1;
                for (c, s) in self.split_blocks.remove(&k).unwrap_or_default() {
                    self.block[c][s] -= 1;
                }
                if f.kind == Kind::PdPartition {
                    self.at(self.now + PD_CLIENTS_BACK_MS, Ev::Unisolate(1 - f.server));
                }
            }
            Kind::Isolate => self.isolated[f.server] -= 1,
            Kind::Crash | Kind::Wipe | Kind::PdCrash => {
                if !self.nodes[f.server].up {
                    self.start_server(f.server, true);
                }
            }
        }
    }

    fn fault_command(&mut self, k: usize) {
        if self.healed {
            return;
        }
        let f = &self.faults[k];
        let target = match f.kind {
            Kind::PdCrash => 1 - f.server, // the survivor
            _ => f.server,
        };
        let now = self.now;
        if !self.nodes[target].up {
            return;
        }
        if self.last_state[1 - target] == Some(FailoverState::PartnerDown) {
            // The operator knows the partner is in PARTNER-DOWN (see `Kind::PdPartition`).
            return self.note(format!(
                "operator: no partner-down on {}: its partner is PARTNER-DOWN",
                SERVER_NAMES[target]
            ));
        }
        let Some(ep) = self.nodes[target].ep.as_mut() else {
            return;
        };
        let from = ep.state();
        let ok = operator_partner_down(ep, now);
        if ok {
            self.stats.partner_down_ok += 1;
        } else {
            self.stats.partner_down_refused += 1;
        }
        self.note(format!(
            "operator: {} partner-down (in {}): {}",
            SERVER_NAMES[target],
            from.name(),
            if ok { "accepted" } else { "refused" }
        ));
        self.drain(target);
        self.flush_fo(target);
    }

    /// The end of the chaos: links, clients and crashed servers all come back.
    fn heal(&mut self) {
        self.note("HEAL: every fault ends".into());
        self.healed = true;
        self.link.cut = 0;
        for b in &mut self.block {
            *b = [0, 0];
        }
        self.isolated = [0, 0];
        self.split_blocks.clear();
        for (k, f) in self.faults.iter().enumerate() {
            if f.kind == Kind::PdPartition && self.started[k] {
                self.seq += 1;
                self.heap.push(Reverse(Sched {
                    at: self.now + PD_CLIENTS_BACK_MS,
                    seq: self.seq,
                    ev: Ev::Unisolate(1 - f.server),
                }));
            }
        }
        for i in 0..2 {
            if !self.nodes[i].up {
                self.start_server(i, true);
            }
        }
        self.normal_since = None;
    }

    // --- invariants ---------------------------------------------------------------------------

    /// Both servers NORMAL with the link up.
    fn pair_normal(&self) -> bool {
        self.link.cut == 0
            && self.nodes.iter().all(|n| {
                n.ep()
                    .is_some_and(|e| e.state() == FailoverState::Normal && e.link() == Link::Up)
            })
    }

    /// Nothing queued, in flight or unsynced anywhere.
    fn fully_quiet(&self) -> bool {
        let link_idle = self
            .link
            .conn
            .as_ref()
            .is_none_or(|c| c.q.iter().all(|q| q.is_empty()));
        link_idle
            && self.nodes.iter().all(|n| {
                n.ep().is_some_and(|e| {
                    e.queued_updates() == 0
                        && e.outstanding_bndupds() == 0
                        && n.held_changes.is_empty()
                        && n.dhcp_unsynced.is_empty()
                        && n.fo_unsynced.is_empty()
                        && n.held_sends.is_empty()
                })
            })
    }

    fn check(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let now = self.now;
        self.check_one_holder();
        if self.pair_normal() {
            self.normal_since.get_or_insert(now);
        } else {
            self.normal_since = None;
        }
        if let Some(since) = self.normal_since {
            if now - since >= ACK_WITHIN_MS {
                self.check_acked(since);
            }
            if !self.healed
                && now - since >= QUIET_MS
                && now >= self.last_known_check + 10_000
                && self.fully_quiet()
            {
                self.last_known_check = now;
                self.check_known(false);
            }
        }
        if self.healed && self.violation.is_none() {
            self.check_recovery();
        }
    }

    /// Invariant 1, from the clients' view.
    fn check_one_holder(&mut self) {
        let now = self.now;
        self.occupancy.iter_mut().for_each(|o| *o = None);
        for c in 0..self.clients.len() {
            let Some(l) = self.clients[c].holds(now) else {
                continue;
            };
            let idx = u32::from(l.ip).wrapping_sub(POOL_FIRST) as usize;
            if idx >= self.occupancy.len() {
                let msg = format!("c{c} holds {} outside the pool", l.ip);
                return self.violate(Inv::OneHolder, msg, vec![l.ip], vec![c as u16]);
            }
            if let Some(other) = self.occupancy[idx] {
                let o = self.clients[other].lease.expect("holder");
                let msg = format!(
                    "{} held by c{other} (until +{:.1}s, from {}) and c{c} (until +{:.1}s, from {})",
                    l.ip,
                    rel(o.expiry),
                    SERVER_NAMES[o.server],
                    rel(l.expiry),
                    SERVER_NAMES[l.server]
                );
                return self.violate(
                    Inv::OneHolder,
                    msg,
                    vec![l.ip],
                    vec![other as u16, c as u16],
                );
            }
            self.occupancy[idx] = Some(c);
        }
    }

    /// Invariant 4 while the pair is NORMAL since `since`.
    fn check_acked(&mut self, since: u64) {
        let now = self.now;
        for (i, name) in SERVER_NAMES.iter().enumerate() {
            let late = self.unacked[i]
                .iter()
                .find(|(_, v)| now - v.1.max(since) >= ACK_WITHIN_MS)
                .map(|(ip, v)| (*ip, v.1));
            if let Some((ip, at)) = late {
                let ep = self.nodes[i].ep().expect("NORMAL");
                let msg = format!(
                    "{name}'s change of {ip} handed to replication at +{:.1}s is not \
                     acknowledged after {} s of NORMAL with the link up (queued {}, outstanding {})",
                    rel(at),
                    ACK_WITHIN_MS / 1000,
                    ep.queued_updates(),
                    ep.outstanding_bndupds()
                );
                return self.violate(Inv::Acked, msg, vec![ip], vec![]);
            }
        }
    }

    /// What server `s` has for `ip`, for messages.
    fn describe(&self, s: usize, ip: Ipv4Addr) -> String {
        let Some(srv) = self.nodes[s].srv.as_ref() else {
            return "down".into();
        };
        let settings = srv.settings();
        match srv.leases.get(&settings.subnets.all()[0], ip) {
            None => "no record".into(),
            Some(l) => format!(
                "{} {} until +{:.0}s",
                l.state.name(),
                l.client.map_or("-".into(), |k| client_name(
                    self.key_to_client.get(k.as_bytes()).copied()
                )),
                rel_s(l.expires_s)
            ),
        }
    }

    /// Invariant 2.
    fn check_known(&mut self, at_end: bool) {
        let now = self.now;
        for c in 0..self.clients.len() {
            let Some(l) = self.clients[c].holds(now) else {
                continue;
            };
            if l.orphan {
                if at_end {
                    self.stats.final_orphans += 1;
                }
                continue;
            }
            let key = &self.clients[c].key;
            let knows = |s: usize| {
                let Some(srv) = self.nodes[s].srv.as_ref().filter(|_| self.nodes[s].up) else {
                    return false;
                };
                let settings = srv.settings();
                srv.leases
                    .get(&settings.subnets.all()[0], l.ip)
                    .is_some_and(|r| {
                        r.state == LeaseState::Bound
                            && r.client.as_ref().is_some_and(|k| k.as_bytes() == &key[..])
                            && r.expires_s * 1000 >= l.expiry
                    })
            };
            let known = usize::from(knows(0)) + usize::from(knows(1));
            if at_end {
                if known == 2 {
                    self.stats.final_known_both += 1;
                } else if known == 1 {
                    self.stats.final_known_one += 1;
                }
            }
            let required = if at_end && self.strict { 2 } else { 1 };
            if known < required {
                let msg = format!(
                    "c{c} holds {} until +{:.1}s (from {}) but {} of the servers know it \
                     (primary: {}; secondary: {})",
                    l.ip,
                    rel(l.expiry),
                    SERVER_NAMES[l.server],
                    if known == 0 { "neither" } else { "only one" },
                    self.describe(0, l.ip),
                    self.describe(1, l.ip)
                );
                return self.violate(Inv::Known, msg, vec![l.ip], vec![c as u16]);
            }
        }
    }

    /// Invariants 5 and 4 (final) after the heal; ends the run when all is checked.
    fn check_recovery(&mut self) {
        let now = self.now;
        if let Some(since) = self.normal_since {
            if now - since >= FINAL_SETTLE_MS && self.fully_quiet() {
                self.check_known(true);
                self.done = true;
                return;
            }
        }
        if now < self.heal_at + liveness_ms(&self.p) {
            return;
        }
        let stuck_normal = self
            .normal_since
            .is_some_and(|since| now - since >= FINAL_SETTLE_MS);
        if stuck_normal {
            let q: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    let e = n.ep().expect("NORMAL");
                    format!("{}/{}", e.queued_updates(), e.outstanding_bndupds())
                })
                .collect();
            let msg = format!(
                "NORMAL but replication never drains (queued/outstanding: primary {}, secondary {})",
                q[0], q[1]
            );
            self.violate(Inv::Acked, msg, vec![], vec![]);
        } else {
            let st: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    n.ep().map_or("down".into(), |e| {
                        format!("{} (link {:?})", e.state().name(), e.link())
                    })
                })
                .collect();
            let msg = format!(
                "{} s after the heal: primary {}, secondary {}",
                (now - self.heal_at) / 1000,
                st[0],
                st[1]
            );
            self.violate(Inv::Recovers, msg, vec![], vec![]);
        }
    }
}

/// How long after the heal the pair may take to be NORMAL again: a RECOVER-WAIT of MCLT (a
/// restarted or wiped server), plus margin for startup, reconnects and a second wait.
fn liveness_ms(p: &Params) -> u64 {
    2 * u64::from(p.mclt_s) * 1000 + 180_000
}

/// The next retransmission of a renewal: half the time left to `deadline`, at least `min`.
fn renew_retry(now: u64, deadline: u64, min: u64) -> u64 {
    let half = deadline.saturating_sub(now) / 2;
    (now + half.max(min)).min(deadline.max(now + 1))
}

// =============================================================================================
// Runner, shrinking, reporting
// =============================================================================================

#[derive(Clone)]
struct ChaosCfg {
    kinds: Kinds,
    strict: bool,
    startup_wait: bool,
}

struct RunResult {
    violation: Option<Violation>,
    trace: Vec<Tr>,
    stats: Stats,
    faults: Vec<Fault>,
}

fn run_seed(seed: u64, cfg: &ChaosCfg, keep: Option<&[bool]>) -> RunResult {
    let mut w = World::new(seed, cfg, keep);
    w.run();
    RunResult {
        violation: w.violation,
        trace: w.trace,
        stats: w.stats,
        faults: w.faults,
    }
}

/// The seed's full schedule (before `CHAOS_KEEP`).
fn full_schedule(seed: u64, kinds: Kinds) -> Vec<Fault> {
    schedule(seed, kinds, &Params::draw(seed, kinds))
}

/// Greedy shrinking: drop datagram loss, then each fault in turn, while the seed still breaks
/// the same invariant. Returns the smaller configuration, what is kept, and its run.
fn shrink(seed: u64, cfg: &ChaosCfg, inv: Inv) -> (ChaosCfg, Vec<bool>, RunResult) {
    let fails = |cfg: &ChaosCfg, keep: &[bool]| {
        run_seed(seed, cfg, Some(keep))
            .violation
            .is_some_and(|v| v.inv == inv)
    };
    let mut cfg = cfg.clone();
    let n = full_schedule(seed, cfg.kinds).len();
    let mut keep = vec![true; n];
    if cfg.kinds.has(Kind::Drop) {
        let quieter = ChaosCfg {
            kinds: cfg.kinds.without(Kind::Drop),
            ..cfg.clone()
        };
        if fails(&quieter, &keep) {
            cfg = quieter;
        }
    }
    loop {
        let mut changed = false;
        for k in 0..n {
            if !keep[k] {
                continue;
            }
            keep[k] = false;
            if fails(&cfg, &keep) {
                changed = true;
            } else {
                keep[k] = true;
            }
        }
        if !changed {
            break;
        }
    }
    let result = run_seed(seed, &cfg, Some(&keep));
    (cfg, keep, result)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_u64(name: &str) -> Option<u64> {
    env(name).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
    })
}

fn repro(seed: u64, cfg: &ChaosCfg, keep: Option<&[bool]>) -> String {
    let mut s = format!("CHAOS_SEED={seed}");
    if cfg.kinds != Kinds::ALL {
        let _ = write!(s, " CHAOS_FAULTS={}", cfg.kinds.names());
    }
    if let Some(keep) = keep {
        let kept: Vec<String> = keep
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i.to_string())
            .collect();
        let _ = write!(
            s,
            " CHAOS_KEEP={}",
            if kept.is_empty() {
                "none".into()
            } else {
                kept.join(",")
            }
        );
    }
    if cfg.strict {
        s.push_str(" CHAOS_STRICT=1");
    }
    if cfg.startup_wait {
        s.push_str(" CHAOS_STARTUP_WAIT=1");
    }
    s + " cargo test --release --test failover_chaos"
}

/// The events worth showing for `v`: those touching its addresses and clients (but not
/// DISCOVERs refused for an empty pool or the partner's bucket), faults and state changes,
/// and connection churn of the last 20 s before it.
fn relevant<'a>(trace: &'a [Tr], v: &Violation) -> Vec<&'a Tr> {
    trace
        .iter()
        .filter(|t| match &t.ev {
            TrEv::Note(_) => true,
            TrEv::Chatter(_) => t.t + 20_000 >= v.at,
            TrEv::Req {
                msg: MessageType::Discover,
                out: ReqOut::Drop(DropReason::PoolExhausted | DropReason::NotOurBucket),
                ..
            } => false,
            _ => {
                t.ip().is_some_and(|ip| v.ips.contains(&ip))
                    || t.client().is_some_and(|c| v.clients.contains(&c))
            }
        })
        .collect()
}

/// The report of one failing seed: shrunk schedule, filtered trace, commands.
fn report(seed: u64, cfg: &ChaosCfg, v: &Violation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n=== seed {seed}: invariant {} violated at +{:.1}s\n    {}{}",
        v.inv.name(),
        rel(v.at),
        v.msg,
        if v.orphan {
            "\n    (the lease involved existed only in a database that was wiped since)"
        } else {
            ""
        }
    );
    let full = full_schedule(seed, cfg.kinds);
    let (small_cfg, keep, small) = shrink(seed, cfg, v.inv);
    let _ = writeln!(
        out,
        "reproduce:          {}\nreproduce (shrunk): {}",
        repro(seed, cfg, None),
        repro(seed, &small_cfg, Some(&keep))
    );
    let p = Params::draw(seed, small_cfg.kinds);
    let _ = writeln!(
        out,
        "setup: pool {} addresses, {} clients, lease {} s, MCLT {} s, split {}, batch {}, \
         loss {:.0}%, dup {:.0}%, PARTNER-DOWN side {}",
        p.pool_size,
        p.clients,
        p.lease_s,
        p.mclt_s,
        p.split,
        p.max_batch,
        p.loss * 100.0,
        p.dup * 100.0,
        SERVER_NAMES[p.pd_side]
    );
    let _ = writeln!(
        out,
        "faults needed ({} of {}):",
        keep.iter().filter(|k| **k).count(),
        full.len()
    );
    for (i, f) in full.iter().enumerate() {
        if keep[i] {
            let _ = writeln!(out, "  #{i} {f}");
        }
    }
    if !small_cfg.kinds.has(Kind::Drop) && cfg.kinds.has(Kind::Drop) {
        let _ = writeln!(out, "  (no datagram loss needed)");
    }
    let Some(sv) = &small.violation else {
        let _ = writeln!(out, "(shrunk run did not fail?)");
        return out;
    };
    let _ = writeln!(out, "shrunk run: {} at +{:.1}s", sv.msg, rel(sv.at));
    let lines = relevant(&small.trace, sv);
    let skip = lines.len().saturating_sub(TRACE_LINES);
    let _ = writeln!(
        out,
        "trace of the shrunk run (events touching {:?} / clients {:?}, faults, states; last {} of {}):",
        sv.ips,
        sv.clients,
        lines.len() - skip,
        lines.len()
    );
    for t in &lines[skip..] {
        let _ = writeln!(out, "  {t}");
    }
    out
}

/// The fault kinds of the default mix: every kind but the two known to break invariants with
/// the default configuration (see "Known failures" in the module docs).
const DEFAULT_FAULTS: &str = "all,-pd-crash,-wipe";

#[test]
fn failover_pair_survives_chaos() {
    chaos(None, false);
}

/// A lost database (a restart with an empty lease log) with no other fault: the server must
/// not serve until it has recovered the partner's bindings.
#[test]
fn a_lost_database_is_recovered_from_the_partner() {
    chaos(Some("wipe"), false);
}

/// With `startup_wait`, a server restarted while its partner was set PARTNER-DOWN does not
/// serve before it has heard from the partner: `pd-crash` is safe, with every other fault.
#[test]
fn a_restart_during_partner_down_is_safe_when_startup_waits() {
    chaos(Some("all,-wipe"), true);
}

/// Runs the seeds with `faults`, or `CHAOS_FAULTS` (default [`DEFAULT_FAULTS`]); both servers
/// with `startup_wait`, or as `CHAOS_STARTUP_WAIT` says.
fn chaos(faults: Option<&str>, startup_wait: bool) {
    let faults = faults.map_or_else(
        || env("CHAOS_FAULTS").unwrap_or_else(|| DEFAULT_FAULTS.to_string()),
        str::to_string,
    );
    let cfg = ChaosCfg {
        kinds: Kinds::parse(&faults),
        strict: env("CHAOS_STRICT").is_some_and(|v| v != "0"),
        startup_wait: startup_wait || env("CHAOS_STARTUP_WAIT").is_some_and(|v| v != "0"),
    };

    // One seed: reproduce it exactly (optionally with a shrunk schedule), print its trace.
    if let Some(seed) = env_u64("CHAOS_SEED") {
        let n = full_schedule(seed, cfg.kinds).len();
        let keep: Option<Vec<bool>> = env("CHAOS_KEEP").map(|s| {
            let mut keep = vec![false; n];
            for w in s
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty() && *w != "none")
            {
                let i: usize = w.parse().expect("CHAOS_KEEP: fault indices");
                keep[i] = true;
            }
            keep
        });
        let r = run_seed(seed, &cfg, keep.as_deref());
        eprintln!("seed {seed}: faults {}", cfg.kinds.names());
        for f in &r.faults {
            eprintln!("  {f}");
        }
        if env("CHAOS_TRACE").is_some() {
            for t in &r.trace {
                eprintln!("{t}");
            }
        }
        eprintln!("{:?}", r.stats);
        if let Some(v) = r.violation {
            if env("CHAOS_SHRINK").is_some() {
                panic!("{}", report(seed, &cfg, &v));
            }
            let shown: Vec<String> = relevant(&r.trace, &v)
                .iter()
                .map(|t| t.to_string())
                .collect();
            let skip = shown.len().saturating_sub(TRACE_LINES);
            panic!(
                "seed {seed}: invariant {} violated at +{:.1}s: {}\n{}",
                v.inv.name(),
                rel(v.at),
                v.msg,
                shown[skip..].join("\n")
            );
        }
        return;
    }

    let start = env_u64("CHAOS_SEED_START").unwrap_or(1);
    let count = env_u64("CHAOS_SEEDS").unwrap_or(2000);
    let threads = env_u64("CHAOS_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        |t| t.max(1) as usize,
    );
    let next = AtomicU64::new(start);
    let failures: Mutex<Vec<(u64, Violation)>> = Mutex::new(Vec::new());
    let totals: Mutex<Stats> = Mutex::new(Stats::default());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut local = Stats::default();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= start + count {
                        break;
                    }
                    let r = run_seed(seed, &cfg, None);
                    local.add(&r.stats);
                    if let Some(v) = r.violation {
                        failures.lock().expect("not poisoned").push((seed, v));
                    }
                }
                totals.lock().expect("not poisoned").add(&local);
            });
        }
    });
    let mut failures = failures.into_inner().expect("not poisoned");
    failures.sort_by_key(|(seed, _)| *seed);
    let t = totals.into_inner().expect("not poisoned");
    let mut summary = format!(
        "failover_chaos: {} seeds from {start}, faults {}, {} failing; {:.1} virtual hours; \
         ACKs {} new + {} renewals, {} OFFERs, {} NAKs, {} releases, {} partner updates \
         applied ({} rejected), {} state changes ({} refused), {} crashes, {} wipes, \
         {} partitions, PARTNER-DOWN {} accepted / {} refused; at the end {} leases known to \
         both servers, {} to one, {} lost with a database ({} wipes skipped)\n",
        t.runs,
        cfg.kinds.names(),
        failures.len(),
        t.virtual_ms as f64 / 3_600_000.0,
        t.acks_new,
        t.acks_renew,
        t.offers,
        t.naks,
        t.releases,
        t.applied,
        t.rejected,
        t.state_changes,
        t.refused,
        t.crashes,
        t.wipes,
        t.partitions,
        t.partner_down_ok,
        t.partner_down_refused,
        t.final_known_both,
        t.final_known_one,
        t.final_orphans,
        t.wipes_skipped,
    );
    let mut by_inv: BTreeMap<Inv, Vec<u64>> = BTreeMap::new();
    for (seed, v) in &failures {
        by_inv.entry(v.inv).or_default().push(*seed);
    }
    for (inv, seeds) in &by_inv {
        let shown: Vec<String> = seeds.iter().take(12).map(u64::to_string).collect();
        let orphans = failures
            .iter()
            .filter(|(_, v)| v.inv == *inv && v.orphan)
            .count();
        let _ = writeln!(
            summary,
            "  invariant {}: {} seeds ({orphans} with a lease lost with a wiped database), \
             e.g. {}",
            inv.name(),
            seeds.len(),
            shown.join(" ")
        );
    }
    if failures.is_empty() {
        eprint!("{summary}"); // shown with --nocapture
        return;
    }
    // The first failing seed of each invariant, shrunk and traced.
    let mut details = String::new();
    for seeds in by_inv.values() {
        let seed = seeds[0];
        let v = &failures.iter().find(|(s, _)| *s == seed).expect("listed").1;
        details.push_str(&report(seed, &cfg, v));
    }
    panic!("{summary}{details}");
}

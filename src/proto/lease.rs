//! The lease table: which address belongs to which client, until when.
//!
//! Shared by all workers. Each subnet's state is split into shards, each behind its own
//! `parking_lot::Mutex`: client shards map a client to its address, address shards own the
//! per-address records, a free list and an expiry heap. Lock order is always client shard, then
//! one address shard at a time; [`LeaseTable::expire`] takes address shards only. So no
//! operation can deadlock, and two clients in different shards never wait for each other.
//!
//! Correctness never depends on which worker handles a client: every rule below is checked
//! under the address shard's lock.
//!
//! Time is passed in (`now_s`, Unix seconds); nothing here reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::subnet::{Subnet, Subnets};
use super::wire::DropReason;

/// Shards per subnet for each of the two maps. A power of two keeps the modulo cheap.
pub const SHARDS: usize = 16;

/// Longest client key: a tag byte, then a client identifier of at most 255 bytes.
pub const MAX_CLIENT_KEY_LEN: usize = 256;

const KEY_TAG_CLIENT_ID: u8 = 0;
const KEY_TAG_HARDWARE: u8 = 1;

/// How a client is identified (RFC 2131 §4.2): its client identifier (option 61) when it sends
/// one, otherwise its hardware type and address. Stored as tagged bytes so that lookups can use a
/// borrowed `&[u8]` built on the stack ([`ClientKeyBuf`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(Box<[u8]>);

impl ClientKey {
    pub fn from_client_id(id: &[u8]) -> Self {
        ClientKeyBuf::client_id(id).to_key()
    }

    pub fn from_hardware(htype: u8, chaddr: &[u8]) -> Self {
        ClientKeyBuf::hardware(htype, chaddr).to_key()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key from its stored bytes ([`ClientKey::as_bytes`]), as the lease log keeps it.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        ClientKey(bytes.into())
    }
}

impl std::borrow::Borrow<[u8]> for ClientKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, rest) = match self.0.split_first() {
            Some((&KEY_TAG_HARDWARE, rest)) => ("hw", rest.get(1..).unwrap_or_default()),
            Some((_, rest)) => ("client-id", rest),
            None => ("none", &[][..]),
        };
        write!(f, "{kind} ")?;
        for (i, b) in rest.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A client key built on the stack, for lookups on the hot path without allocation.
pub struct ClientKeyBuf {
    buf: [u8; MAX_CLIENT_KEY_LEN],
    len: usize,
}

impl ClientKeyBuf {
    pub fn client_id(id: &[u8]) -> Self {
        Self::tagged(KEY_TAG_CLIENT_ID, &[], id)
    }

    pub fn hardware(htype: u8, chaddr: &[u8]) -> Self {
        Self::tagged(KEY_TAG_HARDWARE, &[htype], chaddr)
    }

    fn tagged(tag: u8, prefix: &[u8], body: &[u8]) -> Self {
        let mut buf = [0u8; MAX_CLIENT_KEY_LEN];
        buf[0] = tag;
        let mut len = 1;
        for &b in prefix.iter().chain(body).take(MAX_CLIENT_KEY_LEN - 1) {
            buf[len] = b;
            len += 1;
        }
        ClientKeyBuf { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn to_key(&self) -> ClientKey {
        ClientKey(self.as_bytes().into())
    }
}

/// What an address is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseState {
    /// Held for a client that was sent an OFFER, until the offer hold runs out.
    Offered,
    /// Leased to a client (ACKed).
    Bound,
    /// Reported in use by someone else (DHCPDECLINE); not handed out until the hold runs out.
    Declined,
    /// Given back by the client: free, but remembered so the client gets it again if it asks.
    Released,
    /// The lease ran out: free, remembered like `Released`.
    Expired,
}

impl LeaseState {
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Declined => "declined",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
        }
    }

    /// States that end by themselves at `expires_s`.
    fn is_timed(self) -> bool {
        matches!(
            self,
            LeaseState::Offered | LeaseState::Bound | LeaseState::Declined
        )
    }
}

/// A copy of one address's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub state: LeaseState,
    /// When the state ends (Offered, Bound, Declined) or ended (Released, Expired), Unix seconds.
    pub expires_s: u64,
    pub client: Option<ClientKey>,
}

/// A binding change, to be made durable before it takes effect (see [`Journal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<'a> {
    /// Order of all changes of the table: on replay, the highest `seq` of an address wins.
    pub seq: u64,
    pub ip: Ipv4Addr,
    pub state: LeaseState,
    /// When the state ends (Bound: the lease end told to the client; Declined: the hold).
    pub expires_s: u64,
    /// When the state began (the client's last transaction).
    pub since_s: u64,
    /// The tagged client key bytes ([`ClientKey::as_bytes`]).
    pub client: &'a [u8],
}

/// The lease store could not record a change, so it was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageUnavailable;

/// Where the table records binding changes: the lease log in the server, memory in tests.
///
/// `record` is called with the address's shard locked, before the change is applied in memory;
/// on error the table stays as it was, so no client is told of a binding that was not recorded.
/// Offers are not recorded (they bind nothing), nor expiries (replay derives them from
/// `expires_s`).
pub trait Journal {
    fn record(&mut self, change: &Change<'_>) -> Result<(), StorageUnavailable>;
}

/// A journal that keeps nothing: leases live in memory only.
pub struct Volatile;

impl Journal for Volatile {
    fn record(&mut self, _: &Change<'_>) -> Result<(), StorageUnavailable> {
        Ok(())
    }
}

/// The result of a REQUEST for an address (RFC 2131 §4.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Leased to the client until `expires_s`.
    Bound { expires_s: u64 },
    /// Held by another client, declined, or reserved for another client: the answer is a NAK.
    Conflict,
    /// Not an address we may lease (outside the pools and not reserved to this client), and the
    /// client holds no binding for it here: another server's business, so no answer.
    NotOurs,
    /// The binding could not be recorded: no ACK may be sent.
    Unavailable,
}

/// Counts of addresses by state in one subnet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    pub pool_size: u64,
    pub offered: u64,
    pub bound: u64,
    pub declined: u64,
}

#[derive(Debug)]
struct Slot {
    client: Option<ClientKey>,
    state: LeaseState,
    expires_s: u64,
    /// When the state began.
    since_s: u64,
    /// `seq` of the change that set this state (0: never recorded, e.g. an offer on a fresh
    /// address).
    seq: u64,
    /// Earliest pending expiry-heap entry for this address (0: none). Invariant: a timed state
    /// always has one, at or before `expires_s`.
    due_s: u64,
    /// The address sits in its shard's free list (at most once).
    queued: bool,
}

impl Slot {
    fn is_free(&self, now_s: u64) -> bool {
        !self.state.is_timed() || self.expires_s <= now_s
    }

    fn owned_by(&self, client: &[u8]) -> bool {
        self.client.as_ref().is_some_and(|c| c.as_bytes() == client)
    }

    fn to_lease(&self, ip: u32) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            state: self.state,
            expires_s: self.expires_s,
            client: self.client.clone(),
        }
    }

    /// Offered or leased to `client` and still running at `now_s`.
    fn held_by(&self, client: &[u8], now_s: u64) -> bool {
        self.owned_by(client)
            && matches!(self.state, LeaseState::Offered | LeaseState::Bound)
            && self.expires_s > now_s
    }

    /// When `state` for `client` would begin if set at `now_s`: a running state of the same
    /// client continues (a renewal), anything else starts now.
    fn since_for(&self, client: &[u8], state: LeaseState, now_s: u64) -> u64 {
        let continues = self.state == state && self.owned_by(client) && self.expires_s > now_s;
        if continues {
            self.since_s
        } else {
            now_s
        }
    }
}

#[derive(Default)]
struct AddrShard {
    slots: HashMap<u32, Slot>,
    /// Free addresses of the pools, oldest first, so an address that was just released is the
    /// last to be reused. Entries are checked when popped (an entry may have been taken since).
    free: VecDeque<u32>,
    expiries: BinaryHeap<Reverse<(u64, u32)>>,
}

impl AddrShard {
    /// Is `ip` free for `client` (never used, free, or offered or leased to this client)? A
    /// declined address is available to nobody until its hold ends.
    fn available_to(&self, ip: u32, client: &[u8], now_s: u64) -> bool {
        self.slots.get(&ip).is_none_or(|s| {
            s.is_free(now_s) || (s.owned_by(client) && s.state != LeaseState::Declined)
        })
    }

    /// Gives `ip` to `client` in `state` until `expires_s`; a Bound lease is never shortened by a
    /// new offer.
    fn assign(&mut self, ip: u32, client: &[u8], state: LeaseState, expires_s: u64, now_s: u64) {
        let slot = self.slots.entry(ip).or_insert_with(|| Slot {
            client: None,
            state: LeaseState::Expired,
            expires_s: 0,
            since_s: now_s,
            seq: 0,
            due_s: 0,
            queued: false,
        });
        // Offering a client the address it holds must not cut its lease short.
        let keep_bound = state == LeaseState::Offered
            && slot.state == LeaseState::Bound
            && slot.expires_s > now_s
            && slot.owned_by(client);
        if !keep_bound {
            if !slot.owned_by(client) {
                slot.client = Some(ClientKey(client.into()));
            }
            slot.since_s = slot.since_for(client, state, now_s);
            slot.state = state;
            slot.expires_s = expires_s;
        }
        if slot.due_s == 0 || slot.expires_s < slot.due_s {
            slot.due_s = slot.expires_s;
            self.expiries.push(Reverse((slot.expires_s, ip)));
        }
    }

    /// Marks a timed state of `ip` as over at `now_s` with `state` (Released or Expired).
    fn end(&mut self, ip: u32, state: LeaseState, now_s: u64, in_pool: bool) {
        if let Some(slot) = self.slots.get_mut(&ip) {
            slot.state = state;
            slot.expires_s = now_s;
            slot.since_s = now_s;
            if in_pool && !slot.queued {
                slot.queued = true;
                self.free.push_back(ip);
            }
        }
    }

    /// Pops free addresses until one is really free and not reserved; when the free list runs
    /// dry, ends what expired first.
    fn pop_free(&mut self, subnet: &Subnet, now_s: u64) -> Option<u32> {
        if self.free.is_empty() {
            self.sweep(subnet, now_s);
        }
        while let Some(ip) = self.free.pop_front() {
            let usable = match self.slots.get_mut(&ip) {
                None => true,
                Some(slot) => {
                    slot.queued = false;
                    slot.is_free(now_s)
                }
            };
            if usable && subnet.reserved_to(Ipv4Addr::from(ip)).is_none() {
                return Some(ip);
            }
        }
        None
    }
}

impl AddrShard {
    /// Ends the timed states that ran out by `now_s`; returns how many.
    fn sweep(&mut self, subnet: &Subnet, now_s: u64) -> usize {
        let mut ended = 0;
        while let Some(&Reverse((due_s, ip))) = self.expiries.peek() {
            if due_s > now_s {
                break;
            }
            self.expiries.pop();
            let Some(slot) = self.slots.get_mut(&ip) else {
                continue;
            };
            if slot.due_s != due_s {
                continue; // a stale duplicate entry
            }
            slot.due_s = 0;
            if !slot.state.is_timed() {
                continue;
            }
            if slot.expires_s > now_s {
                // Extended since this entry was pushed: wait for the new time.
                slot.due_s = slot.expires_s;
                let due_s = slot.expires_s;
                self.expiries.push(Reverse((due_s, ip)));
                continue;
            }
            if slot.state == LeaseState::Declined {
                slot.client = None;
            }
            let expired_at = slot.expires_s;
            let in_pool = subnet.in_pool(Ipv4Addr::from(ip));
            self.end(ip, LeaseState::Expired, expired_at, in_pool);
            ended += 1;
        }
        ended
    }
}

struct SubnetLeases {
    clients: Vec<Mutex<HashMap<ClientKey, u32>>>,
    addrs: Vec<Mutex<AddrShard>>,
}

/// All leases of all subnets.
pub struct LeaseTable {
    subnets: Vec<SubnetLeases>,
    /// The last `seq` handed to a [`Change`].
    last_seq: AtomicU64,
}

fn addr_shard(ip: u32) -> usize {
    ip as usize % SHARDS
}

fn client_shard(client: &[u8]) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    client.hash(&mut hasher);
    hasher.finish() as usize % SHARDS
}

impl LeaseTable {
    /// An empty table with every pool address free (network and broadcast addresses and
    /// reserved addresses are never in a free list).
    pub fn new(subnets: &Subnets) -> Self {
        let subnets = subnets
            .all()
            .iter()
            .map(|subnet| {
                let mut shards: Vec<AddrShard> =
                    (0..SHARDS).map(|_| AddrShard::default()).collect();
                for ip in subnet.pools.iter().flat_map(|p| p.addresses()) {
                    if ip == subnet.network || ip == subnet.broadcast() {
                        continue;
                    }
                    if subnet.reserved_to(ip).is_none() {
                        let ip = u32::from(ip);
                        shards[addr_shard(ip)].free.push_back(ip);
                    }
                }
                SubnetLeases {
                    clients: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                    addrs: shards.into_iter().map(Mutex::new).collect(),
                }
            })
            .collect();
        LeaseTable {
            subnets,
            last_seq: AtomicU64::new(0),
        }
    }

    /// The next change's `seq`. Taken with the address's shard locked, so the order of two
    /// changes of one address is the order of their `seq`.
    fn next_seq(&self) -> u64 {
        self.last_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn leases(&self, subnet: &Subnet) -> &SubnetLeases {
        // Subnet ids come from the same `Subnets` the table was built from.
        &self.subnets[subnet.id]
    }

    /// The address to OFFER `client` (RFC 2131 §4.3.1): its current or remembered address,
    /// then its reservation, then the address it asked for if free, then the oldest free one.
    /// The address is held for the client for `hold_s` so no other client is offered it.
    pub fn offer(
        &self,
        subnet: &Subnet,
        client: &[u8],
        requested: Option<Ipv4Addr>,
        now_s: u64,
        hold_s: u32,
    ) -> Result<Ipv4Addr, DropReason> {
        let leases = self.leases(subnet);
        let mut clients = leases.clients[client_shard(client)].lock();
        let expires_s = now_s + u64::from(hold_s);
        let leasable = |ip: Ipv4Addr| match subnet.reserved_to(ip) {
            Some(owner) => owner.as_bytes() == client,
            None => subnet.in_pool(ip),
        };

        let mut candidates = [None; 3];
        candidates[0] = clients.get(client).map(|&ip| Ipv4Addr::from(ip));
        candidates[1] = subnet.reservation_for(client);
        candidates[2] = requested;
        for ip in candidates.into_iter().flatten() {
            if !leasable(ip) {
                continue;
            }
            let ip = u32::from(ip);
            let mut shard = leases.addrs[addr_shard(ip)].lock();
            if shard.available_to(ip, client, now_s) {
                shard.assign(ip, client, LeaseState::Offered, expires_s, now_s);
                drop(shard);
                self.remember(&mut clients, client, ip);
                return Ok(Ipv4Addr::from(ip));
            }
        }

        let first = client_shard(client);
        for i in 0..SHARDS {
            let mut shard = leases.addrs[(first + i) % SHARDS].lock();
            if let Some(ip) = shard.pop_free(subnet, now_s) {
                shard.assign(ip, client, LeaseState::Offered, expires_s, now_s);
                drop(shard);
                self.remember(&mut clients, client, ip);
                return Ok(Ipv4Addr::from(ip));
            }
        }
        Err(DropReason::PoolExhausted)
    }

    /// Points `client` at `ip`.
    fn remember(&self, clients: &mut HashMap<ClientKey, u32>, client: &[u8], ip: u32) {
        match clients.get_mut(client) {
            Some(current) => *current = ip,
            None => {
                clients.insert(ClientKey(client.into()), ip);
            }
        }
    }

    /// Leases `ip` to `client` for `lease_s` (DHCPREQUEST, RFC 2131 §4.3.2), recording it in
    /// `journal` first.
    pub fn commit(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: Ipv4Addr,
        lease_s: u32,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Commit {
        let leases = self.leases(subnet);
        let mut clients = leases.clients[client_shard(client)].lock();
        if let Some(owner) = subnet.reserved_to(ip) {
            if owner.as_bytes() != client {
                return Commit::Conflict;
            }
        }
        let ip_u32 = u32::from(ip);
        let previous = clients.get(client).copied().filter(|&old| old != ip_u32);
        {
            let mut shard = leases.addrs[addr_shard(ip_u32)].lock();
            let ours = shard.slots.get(&ip_u32).is_some_and(|s| s.owned_by(client));
            if !ours && !subnet.in_pool(ip) && subnet.reserved_to(ip).is_none() {
                return Commit::NotOurs;
            }
            if !shard.available_to(ip_u32, client, now_s) {
                return Commit::Conflict;
            }
            let expires_s = now_s + u64::from(lease_s);
            let seq = self.next_seq();
            let since_s = shard
                .slots
                .get(&ip_u32)
                .map_or(now_s, |s| s.since_for(client, LeaseState::Bound, now_s));
            let change = Change {
                seq,
                ip,
                state: LeaseState::Bound,
                expires_s,
                since_s,
                client,
            };
            if journal.record(&change).is_err() {
                return Commit::Unavailable;
            }
            shard.assign(ip_u32, client, LeaseState::Bound, expires_s, now_s);
            if let Some(slot) = shard.slots.get_mut(&ip_u32) {
                slot.seq = seq;
            }
        }
        if let Some(old) = previous {
            // The client moved to a new address: its old one goes back to the pool. Should this
            // fail to be recorded, the old lease simply runs out.
            let _ = self.give_back(subnet, client, old, LeaseState::Released, now_s, journal);
        }
        self.remember(&mut clients, client, ip_u32);
        Commit::Bound {
            expires_s: now_s + u64::from(lease_s),
        }
    }

    /// Ends `client`'s lease on `ip`, recorded in `journal`; Ok(false) if `ip` is not
    /// `client`'s.
    fn give_back(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: u32,
        state: LeaseState,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Result<bool, StorageUnavailable> {
        let mut shard = self.leases(subnet).addrs[addr_shard(ip)].lock();
        let held = shard
            .slots
            .get(&ip)
            .is_some_and(|s| s.held_by(client, now_s));
        if !held {
            return Ok(false);
        }
        let seq = self.next_seq();
        journal.record(&Change {
            seq,
            ip: Ipv4Addr::from(ip),
            state,
            expires_s: now_s,
            since_s: now_s,
            client,
        })?;
        shard.end(ip, state, now_s, subnet.in_pool(Ipv4Addr::from(ip)));
        if let Some(slot) = shard.slots.get_mut(&ip) {
            slot.seq = seq;
        }
        Ok(true)
    }

    /// The client chose another server's offer (RFC 2131 §4.3.2, SELECTING): drop our hold.
    pub fn forget_offer(&self, subnet: &Subnet, client: &[u8], now_s: u64) {
        let leases = self.leases(subnet);
        let clients = leases.clients[client_shard(client)].lock();
        let Some(&ip) = clients.get(client) else {
            return;
        };
        let mut shard = leases.addrs[addr_shard(ip)].lock();
        let offered = shard
            .slots
            .get(&ip)
            .is_some_and(|s| s.owned_by(client) && s.state == LeaseState::Offered);
        if offered {
            shard.end(
                ip,
                LeaseState::Expired,
                now_s,
                subnet.in_pool(Ipv4Addr::from(ip)),
            );
        }
    }

    /// DHCPRELEASE: the client gives `ip` back. Ok(false) if it was not the client's.
    pub fn release(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: Ipv4Addr,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Result<bool, StorageUnavailable> {
        let _clients = self.leases(subnet).clients[client_shard(client)].lock();
        let ip = u32::from(ip);
        self.give_back(subnet, client, ip, LeaseState::Released, now_s, journal)
    }

    /// An operator ends the lease on `ip`, whoever holds it (`ringlease ctl release`). Ok(false)
    /// if no lease or offer is running on it.
    pub fn release_ip(
        &self,
        subnet: &Subnet,
        ip: Ipv4Addr,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Result<bool, StorageUnavailable> {
        let Some(client) = self.get(subnet, ip).and_then(|lease| lease.client) else {
            return Ok(false);
        };
        self.release(subnet, client.as_bytes(), ip, now_s, journal)
    }

    /// DHCPDECLINE: the client found `ip` in use; set it aside for `hold_s` (RFC 2131 §4.3.3).
    /// Only the client that was given the address can decline it, so a stranger cannot take
    /// addresses out of service. Ok(false) if `ip` was not the client's.
    pub fn decline(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: Ipv4Addr,
        now_s: u64,
        hold_s: u32,
        journal: &mut dyn Journal,
    ) -> Result<bool, StorageUnavailable> {
        let leases = self.leases(subnet);
        let _clients = leases.clients[client_shard(client)].lock();
        let ip_u32 = u32::from(ip);
        let mut shard = leases.addrs[addr_shard(ip_u32)].lock();
        let held = shard
            .slots
            .get(&ip_u32)
            .is_some_and(|s| s.held_by(client, now_s));
        if !held {
            return Ok(false);
        }
        let seq = self.next_seq();
        let expires_s = now_s + u64::from(hold_s);
        journal.record(&Change {
            seq,
            ip,
            state: LeaseState::Declined,
            expires_s,
            since_s: now_s,
            client,
        })?;
        // Keep the decliner as the owner for the record; a declined address is available to
        // nobody, the decliner included.
        shard.assign(ip_u32, client, LeaseState::Declined, expires_s, now_s);
        if let Some(slot) = shard.slots.get_mut(&ip_u32) {
            slot.seq = seq;
        }
        Ok(true)
    }

    /// Puts back one recorded change at start-up (lease log replay). Replay hands over the
    /// latest change of each address; the table's `seq` continues after the highest one.
    /// Returns false when no configured subnet holds the address (the configuration changed):
    /// the record is then ignored.
    pub fn restore(&self, subnets: &Subnets, change: &Change<'_>) -> bool {
        let Some(subnet) = subnets.containing(change.ip) else {
            return false;
        };
        self.last_seq.fetch_max(change.seq, Ordering::Relaxed);
        let leases = self.leases(subnet);
        let ip = u32::from(change.ip);
        let mut clients = leases.clients[client_shard(change.client)].lock();
        let mut shard = leases.addrs[addr_shard(ip)].lock();
        let newer = shard.slots.get(&ip).is_none_or(|s| s.seq < change.seq);
        if !newer {
            return true;
        }
        shard.assign(
            ip,
            change.client,
            change.state,
            change.expires_s,
            change.since_s,
        );
        if let Some(slot) = shard.slots.get_mut(&ip) {
            slot.since_s = change.since_s;
            slot.seq = change.seq;
            // Pool addresses are in the free list since start-up.
            slot.queued = subnet.in_pool(change.ip);
        }
        if !change.client.is_empty() {
            self.remember(&mut clients, change.client, ip);
        }
        true
    }

    /// Calls `visit` with the current record of every address ever used, for a snapshot of the
    /// table (lease log compaction). Copies one shard's addresses at a time and visits them in
    /// small locked chunks, so workers are never held up for long.
    pub fn visit_records(&self, mut visit: impl FnMut(&Change<'_>)) {
        /// Addresses read per lock of a shard.
        const CHUNK: usize = 1024;
        for leases in &self.subnets {
            for shard in &leases.addrs {
                let ips: Vec<u32> = shard.lock().slots.keys().copied().collect();
                for chunk in ips.chunks(CHUNK) {
                    let shard = shard.lock();
                    for ip in chunk {
                        let Some(slot) = shard.slots.get(ip) else {
                            continue;
                        };
                        if slot.seq == 0 {
                            continue; // never recorded: an offer of a fresh address
                        }
                        // An offer is not a recorded state: what was last recorded of an
                        // offered address is that it was free.
                        let state = match slot.state {
                            LeaseState::Offered => LeaseState::Expired,
                            state => state,
                        };
                        visit(&Change {
                            seq: slot.seq,
                            ip: Ipv4Addr::from(*ip),
                            state,
                            expires_s: slot.expires_s,
                            since_s: slot.since_s,
                            client: slot.client.as_ref().map_or(&[][..], |c| c.as_bytes()),
                        });
                    }
                }
            }
        }
    }

    /// The client's current offer or lease in `subnet`, if it still holds one at `now_s`.
    pub fn binding_of(&self, subnet: &Subnet, client: &[u8], now_s: u64) -> Option<Lease> {
        let leases = self.leases(subnet);
        let ip = *leases.clients[client_shard(client)].lock().get(client)?;
        let shard = leases.addrs[addr_shard(ip)].lock();
        let slot = shard.slots.get(&ip).filter(|s| s.held_by(client, now_s))?;
        Some(slot.to_lease(ip))
    }

    /// The record of one address, if it was ever used.
    pub fn get(&self, subnet: &Subnet, ip: Ipv4Addr) -> Option<Lease> {
        let ip = u32::from(ip);
        let shard = self.leases(subnet).addrs[addr_shard(ip)].lock();
        shard.slots.get(&ip).map(|s| s.to_lease(ip))
    }

    /// Ends every offer, lease and decline hold that ran out by `now_s`, returning how many.
    /// Call it periodically so free lists and counts stay current; allocation also sweeps a
    /// shard by itself when its free list runs dry.
    pub fn expire(&self, subnets: &Subnets, now_s: u64) -> usize {
        subnets
            .all()
            .iter()
            .zip(&self.subnets)
            .map(|(subnet, leases)| {
                leases
                    .addrs
                    .iter()
                    .map(|shard| shard.lock().sweep(subnet, now_s))
                    .sum::<usize>()
            })
            .sum()
    }

    /// Addresses by state in one subnet (walks the subnet: for status, not the hot path).
    pub fn counts(&self, subnet: &Subnet, now_s: u64) -> LeaseCounts {
        let mut counts = LeaseCounts {
            pool_size: subnet.pools.iter().map(|p| p.size()).sum(),
            ..LeaseCounts::default()
        };
        for shard in &self.leases(subnet).addrs {
            for slot in shard.lock().slots.values() {
                if slot.is_free(now_s) {
                    continue;
                }
                match slot.state {
                    LeaseState::Offered => counts.offered += 1,
                    LeaseState::Bound => counts.bound += 1,
                    LeaseState::Declined => counts.declined += 1,
                    LeaseState::Released | LeaseState::Expired => {}
                }
            }
        }
        counts
    }
}

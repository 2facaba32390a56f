//! The lease table: which address belongs to which client, until when.
//!
//! Shared by all workers and the failover thread. Each subnet's state is split into shards,
//! each behind its own `parking_lot::Mutex`: client shards map a client to its address, address
//! shards own the per-address records, the free lists and an expiry heap. Lock order is always
//! client shard, then one address shard at a time; [`LeaseTable::expire`] and
//! [`LeaseTable::partner_acked`] take address shards only. So no operation can deadlock, and
//! two clients in different shards never wait for each other.
//!
//! Correctness never depends on which worker handles a client: every rule below is checked
//! under the address shard's lock.
//!
//! # Failover
//!
//! With a failover partner each address also keeps the times of draft §7.1: the potential
//! expiration sent to the partner (PET), the partner's expiration bound (the PET the partner
//! acknowledged or sent us: a lease may run MCLT beyond it, §7.1.5), and the client's last
//! transaction time. [`LeaseTable::commit`] bounds lease ends by the MCLT rule
//! ([`LeaseTime`]); [`LeaseTable::apply_partner`] and [`LeaseTable::partner_acked`] store what
//! the partner sends; [`LeaseTable::view`] and [`LeaseTable::visit_bindings`] show the table as
//! failover bindings. Free pool addresses belong to one side ([`PoolShare`]): each shard keeps
//! the partner's in a list of their own, opened only in PARTNER-DOWN after the MCLT, and
//! [`LeaseTable::rebalance`] moves free addresses between the sides. A binding that ends stays
//! its client's (frozen) until the partner acknowledges the end (draft §7.3); with a partner,
//! lease expiries are recorded so they reach it.
//!
//! Time is passed in (`now_s`, Unix seconds); nothing here reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::failover::{
    self, max_lease_end, potential_expiration, HwAddr, LocalBindings, Lookup, Role,
};
use super::subnet::{Subnet, Subnets};
use super::wire::failover::BindingStatus;
use super::wire::DropReason;

/// Shards per subnet for each of the two maps. A power of two keeps the modulo cheap.
pub const SHARDS: usize = 16;

/// Longest client key: a tag byte, then a client identifier of at most 255 bytes.
pub const MAX_CLIENT_KEY_LEN: usize = 256;

const KEY_TAG_CLIENT_ID: u8 = 0;
const KEY_TAG_HARDWARE: u8 = 1;

/// How a client is identified (RFC 2131 §4.2): its client identifier (option 61) when it sends
/// one, otherwise its hardware type and address. Stored as tagged bytes so that lookups can use a
/// borrowed `&[u8]` built on the stack ([`ClientKeyBuf`]). Shared (`Arc`): an address's record
/// and the client index hold the same copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(Arc<[u8]>);

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
    /// Free, and a failover partner knows it: an ended binding the partner acknowledged, or
    /// the partner's own EXPIRED / RELEASED / FREE. The client is remembered as for `Released`.
    /// With a partner, `Released` and `Expired` are not free for other clients until they
    /// become `Free` (draft §7.3, see [`PartnerDown`] for the exception). With a partner, a
    /// Free address is the primary's to allocate (draft FREE).
    Free,
    /// Free, and the secondary's to allocate (draft BACKUP): given to it by the primary.
    Backup,
}

impl LeaseState {
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Declined => "declined",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Free => "free",
            LeaseState::Backup => "backup",
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
    /// The failover times, 0 = none: see [`Change`].
    pub potential_expiry_s: u64,
    pub partner_expiry_s: u64,
    pub cltt_s: u64,
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
    /// When the state began (a renewal continues the state: it keeps its start).
    pub since_s: u64,
    /// The tagged client key bytes ([`ClientKey::as_bytes`]); empty for a free address.
    pub client: &'a [u8],
    /// Failover: the potential expiration time sent (to be sent) to the partner with this
    /// binding (draft §7.1); 0 = none.
    pub potential_expiry_s: u64,
    /// Failover: the partner's expiration bound for this address: the PET it acknowledged, or
    /// sent us with its own binding (draft §7.1.5). A lease of the same client may run up to
    /// MCLT beyond it. 0 = none.
    pub partner_expiry_s: u64,
    /// The client's last transaction time (draft CLTT); 0 = none.
    pub cltt_s: u64,
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

/// How long a lease may run: the subnet's grant for the client, and the MCLT that bounds it
/// while a failover partner may not know of the lease (draft §5.2.1; `None`: no bound, as
/// without failover or in PARTNER-DOWN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTime {
    pub desired_s: u32,
    pub mclt_s: Option<u32>,
    /// Set in PARTNER-DOWN: what the partner held becomes usable after waiting out the MCLT.
    pub partner_down: Option<PartnerDown>,
}

/// PARTNER-DOWN as the allocation rules see it (draft §7.3, §9.4.2): since `since_s` the
/// partner is taken to be down. Its share of the free addresses becomes ours at
/// `since_s + mclt_s`; an address whose end the partner never acknowledged becomes reusable
/// MCLT after the latest time the partner may know of it (see [`Slot::reusable_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartnerDown {
    pub since_s: u64,
    pub mclt_s: u32,
}

impl PartnerDown {
    fn partner_share_open(&self, now_s: u64) -> bool {
        now_s >= self.since_s.saturating_add(u64::from(self.mclt_s))
    }
}

impl LeaseTime {
    /// A lease without failover.
    pub fn plain(desired_s: u32) -> LeaseTime {
        LeaseTime {
            desired_s,
            mclt_s: None,
            partner_down: None,
        }
    }

    /// The lease end to grant at `now_s` given the partner's expiration bound of the address
    /// for this client (0: none): the MCLT rule, [`max_lease_end`].
    fn end(&self, now_s: u64, partner_expiry_s: u64) -> u64 {
        let desired_end = now_s.saturating_add(u64::from(self.desired_s));
        match self.mclt_s {
            None => desired_end,
            Some(mclt_s) => max_lease_end(now_s, partner_expiry_s, desired_end, u64::from(mclt_s)),
        }
    }
}

/// What to OFFER: the address and the lease time a REQUEST for it would get now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub ip: Ipv4Addr,
    pub lease_s: u32,
}

/// The result of a REQUEST for an address (RFC 2131 §4.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Leased to the client until `expires_s`: the granted end, which the MCLT may have cut
    /// below the desired one.
    Bound { expires_s: u64 },
    /// Held by another client, declined, or reserved for another client: the answer is a NAK.
    Conflict,
    /// Not an address we may lease (outside the pools and not reserved to this client, a free
    /// address of the failover partner's share, or another client's ended lease the partner
    /// has not acknowledged, which it may have leased again), and the client holds no binding
    /// for it here: another server's business, so no answer.
    NotOurs,
    /// The binding could not be recorded: no ACK may be sent.
    Unavailable,
}

/// What [`LeaseTable::apply_partner`] did with a partner's binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Stored,
    /// No subnet's pools or reservations hold the address: nothing stored (draft reject 1).
    NotInPool,
    /// A binding status we do not know: nothing stored. The endpoint rejects these before they
    /// get here ([`failover::check_complete`]).
    UnknownStatus,
}

/// Which side of a failover pair may allocate each free pool address (draft §5.4: FREE
/// addresses are the primary's, BACKUP ones the secondary's), and how many each should hold.
///
/// A free address the lease log has a record of belongs to whom the record says: `Free` to the
/// primary (an ended lease always returns to it), `Backup` to the secondary. An address never
/// recorded starts on the side a fixed hash of the address picks when `split_fresh` (two
/// ringlease servers configured alike agree without talking), else on the primary's, as ISC
/// dhcpd and Windows expect: the secondary then holds only what the primary gives it. Each side
/// gives away what it holds beyond its share of the free addresses (`secondary_percent`) with
/// [`LeaseTable::rebalance`]; renewals and addresses a client already holds are not affected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShare {
    pub role: Role,
    /// Percent of each pool's free addresses that should be the secondary's, 0..=100.
    pub secondary_percent: u8,
    /// Never-recorded addresses start split by the hash (else all the primary's).
    pub split_fresh: bool,
}

impl PoolShare {
    /// The secondary's default share when the two balance load (`split` below 255): half.
    pub const BALANCED_PERCENT: u8 = 50;
    /// The secondary's default share in hot standby (`split` 255): enough to serve new clients
    /// while the primary is down (ISC's `max-lease-ownership` default is also 10 %).
    pub const HOT_STANDBY_PERCENT: u8 = 10;

    /// The share of the server in `role` of a pair configured with `split`
    /// ([`failover::loadbalance`]) and, if set, the secondary's percentage (above 100 counts as
    /// 100).
    pub fn new(role: Role, split: u8, secondary_percent: Option<u8>) -> PoolShare {
        let default = if split == failover::loadbalance::SPLIT_HOT_STANDBY {
            Self::HOT_STANDBY_PERCENT
        } else {
            Self::BALANCED_PERCENT
        };
        PoolShare {
            role,
            secondary_percent: secondary_percent.unwrap_or(default).min(100),
            split_fresh: true,
        }
    }

    /// Which side a never-recorded free `ip` belongs to.
    pub fn owner(&self, ip: Ipv4Addr) -> Role {
        let hashed = share_hash(u32::from(ip)) % 100 < u32::from(self.secondary_percent);
        if self.split_fresh && hashed {
            Role::Secondary
        } else {
            Role::Primary
        }
    }

    /// How many of our `ours` free addresses to give the partner, which holds `theirs`: what we
    /// hold beyond our share, once that is more than 15 % of the partner's share (ISC's
    /// `max-lease-misbalance` default), so small differences cause no churn.
    pub fn surplus(&self, ours: u64, theirs: u64) -> u64 {
        let total = ours + theirs;
        let secondary = total * u64::from(self.secondary_percent) / 100;
        let (our_target, their_target) = match self.role {
            Role::Primary => (total - secondary, secondary),
            Role::Secondary => (secondary, total - secondary),
        };
        let surplus = ours.saturating_sub(our_target);
        if surplus > (their_target * 15 / 100).max(1) {
            surplus
        } else {
            0
        }
    }
}

/// Whose a free address is (see [`PoolShare`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Owner {
    /// Never recorded free: as [`PoolShare::owner`] says.
    #[default]
    Fresh,
    Primary,
    Secondary,
}

/// A fixed mix of the address's bits (MurmurHash3's finalizer): spreads neighbouring addresses
/// over both shares, and never changes with the build, so both servers compute the same.
fn share_hash(ip: u32) -> u32 {
    let mut h = ip;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Counts of addresses by state in one subnet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    pub pool_size: u64,
    pub offered: u64,
    pub bound: u64,
    pub declined: u64,
    /// With a failover partner: free addresses (ours, the partner's), see [`PoolShare`].
    pub free_by_side: Option<(u64, u64)>,
}

/// One address's record. Kept small: there is one per address ever used, and a million
/// leases should fit in 256 bytes each, map overhead, client keys and free lists included.
/// Times are seconds since 1970 in 32 bits, as the failover protocol carries them (draft §12),
/// which is good until 2106 (later times saturate) and keeps the failover times free: 56 bytes
/// with them, as many as without them in 64-bit times.
#[derive(Debug)]
struct Slot {
    client: Option<ClientKey>,
    /// `seq` of the change that set this state (0: never recorded, e.g. an offer on a fresh
    /// address).
    seq: u64,
    expires_s: u32,
    /// When the state began.
    since_s: u32,
    /// Earliest pending expiry-heap entry for this address (0: none). Invariant: a timed state
    /// always has one, at or before `expires_s`.
    due_s: u32,
    /// The failover times of [`Change`], 0 = none.
    pet_s: u32,
    partner_expiry_s: u32,
    cltt_s: u32,
    state: LeaseState,
    /// The address sits in one of its shard's free lists (in the wrong one, perhaps, if its
    /// owner changed since: entries are checked when taken).
    queued: bool,
    /// Whose the address is while it is free.
    owner: Owner,
    /// A failover partner may still take the address for `client`'s: its binding is, or was,
    /// bound and the partner has not acknowledged its end. Only `client` may get it (draft
    /// §7.3) until it becomes `Free`, or in PARTNER-DOWN at [`Slot::reusable_at`]. An offer
    /// leaves the flag as the last record set it.
    frozen: bool,
}

const _: () = assert!(std::mem::size_of::<Slot>() <= 56);

/// A time as a slot keeps it (see [`Slot`]).
fn time32(s: u64) -> u32 {
    u32::try_from(s).unwrap_or(u32::MAX)
}

impl Slot {
    /// A slot for an address not seen since start-up: it is in a free list exactly when
    /// [`LeaseTable::new`] put it there.
    fn fresh(queued: bool) -> Slot {
        Slot {
            client: None,
            state: LeaseState::Expired,
            expires_s: 0,
            since_s: 0,
            seq: 0,
            due_s: 0,
            pet_s: 0,
            partner_expiry_s: 0,
            cltt_s: 0,
            queued,
            owner: Owner::Fresh,
            frozen: false,
        }
    }

    fn expires_s(&self) -> u64 {
        u64::from(self.expires_s)
    }

    /// Has the state ended by `now_s` (or is it an ended state)?
    fn ran_out(&self, now_s: u64) -> bool {
        !self.state.is_timed() || self.expires_s() <= now_s
    }

    /// May a client other than the slot's get the address at `now_s`?
    fn is_free(&self, now_s: u64, partner_down: Option<PartnerDown>) -> bool {
        self.ran_out(now_s)
            && (!self.frozen || partner_down.is_some_and(|pd| now_s >= self.reusable_at(pd)))
    }

    /// In PARTNER-DOWN, when a frozen address may go to another client (draft §7.3): MCLT after
    /// the latest of the PARTNER-DOWN start, the lease end and every expiration time the partner
    /// may know (the PET we sent, the one it acknowledged or sent us). A binding made in
    /// PARTNER-DOWN that the partner never heard of needs no wait.
    fn reusable_at(&self, pd: PartnerDown) -> u64 {
        let told = u64::from(self.cltt_s) < pd.since_s || self.partner_expiry_s != 0;
        if !told {
            return self.expires_s();
        }
        let known = pd
            .since_s
            .max(self.expires_s())
            .max(u64::from(self.pet_s))
            .max(u64::from(self.partner_expiry_s));
        known.saturating_add(u64::from(pd.mclt_s))
    }

    fn owned_by(&self, client: &[u8]) -> bool {
        self.client.as_ref().is_some_and(|c| c.as_bytes() == client)
    }

    fn to_lease(&self, ip: u32) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            state: self.state,
            expires_s: self.expires_s(),
            client: self.client.clone(),
            potential_expiry_s: u64::from(self.pet_s),
            partner_expiry_s: u64::from(self.partner_expiry_s),
            cltt_s: u64::from(self.cltt_s),
        }
    }

    /// Offered or leased to `client` and still running at `now_s`.
    fn held_by(&self, client: &[u8], now_s: u64) -> bool {
        self.owned_by(client)
            && matches!(self.state, LeaseState::Offered | LeaseState::Bound)
            && self.expires_s() > now_s
    }

    /// When `state` for `client` would begin if set at `now_s`: a running state of the same
    /// client continues (a renewal), anything else starts now.
    fn since_for(&self, client: &[u8], state: LeaseState, now_s: u64) -> u64 {
        let continues = self.state == state && self.owned_by(client) && self.expires_s() > now_s;
        if continues {
            u64::from(self.since_s)
        } else {
            now_s
        }
    }

    /// The partner's expiration bound as it applies to a lease for `client`: none when the
    /// address changes client (draft §5.2.1: a new binding starts from nothing).
    fn partner_expiry_for(&self, client: &[u8]) -> u64 {
        if self.owned_by(client) {
            u64::from(self.partner_expiry_s)
        } else {
            0
        }
    }

    /// The record this slot stands for, as the lease log has it. An offer is not a recorded
    /// state: what was last recorded of an offered address is that it was free (with a
    /// failover `share`: Free or Backup as its owner says, or an end the partner has yet to
    /// acknowledge).
    fn recorded(&self, ip: u32, share: Option<PoolShare>) -> Change<'_> {
        let offered_over = match share {
            Some(share) if !self.frozen => {
                let secondary = match self.owner {
                    Owner::Fresh => share.owner(Ipv4Addr::from(ip)) == Role::Secondary,
                    owner => owner == Owner::Secondary,
                };
                if secondary {
                    LeaseState::Backup
                } else {
                    LeaseState::Free
                }
            }
            _ => LeaseState::Expired,
        };
        Change {
            seq: self.seq,
            ip: Ipv4Addr::from(ip),
            state: match self.state {
                LeaseState::Offered => offered_over,
                state => state,
            },
            expires_s: self.expires_s(),
            since_s: u64::from(self.since_s),
            client: self.client.as_ref().map_or(&[][..], |c| c.as_bytes()),
            potential_expiry_s: u64::from(self.pet_s),
            partner_expiry_s: u64::from(self.partner_expiry_s),
            cltt_s: u64::from(self.cltt_s),
        }
    }
}

/// Which free list a pool address goes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Home {
    /// Not in a pool: never in a free list.
    Outside,
    Ours,
    /// The failover partner's share ([`PoolShare`]).
    Partners,
}

struct AddrShard {
    slots: HashMap<u32, Slot>,
    /// Free addresses of our share of the pools, oldest first, so an address that was just
    /// released is the last to be reused. Entries are checked when popped (an entry may have
    /// been taken since).
    free: VecDeque<u32>,
    /// Free addresses of the partner's share: allocated here only in PARTNER-DOWN, MCLT after
    /// it began.
    partner_free: VecDeque<u32>,
    /// Frozen addresses whose binding ended (Released, Expired), oldest first: where
    /// PARTNER-DOWN finds them once their wait is over. Checked when taken, like `free`.
    ended: VecDeque<u32>,
    /// (due, address): when a timed state of the address may end.
    expiries: BinaryHeap<Reverse<(u32, u32)>>,
    share: Option<PoolShare>,
}

impl AddrShard {
    fn new(share: Option<PoolShare>) -> AddrShard {
        AddrShard {
            slots: HashMap::new(),
            free: VecDeque::new(),
            partner_free: VecDeque::new(),
            ended: VecDeque::new(),
            expiries: BinaryHeap::new(),
            share,
        }
    }

    fn home(&self, subnet: &Subnet, ip: u32) -> Home {
        let owner = self.slots.get(&ip).map_or(Owner::Fresh, |s| s.owner);
        home_of(self.share, subnet, ip, owner)
    }

    /// The client key `ip`'s slot holds, to share with the client index.
    fn key_of(&self, ip: u32) -> Option<ClientKey> {
        self.slots.get(&ip)?.client.clone()
    }

    /// Puts `ip` at the back of its free list.
    fn push_free(&mut self, ip: u32, home: Home) {
        match home {
            Home::Outside => {}
            Home::Ours => self.free.push_back(ip),
            Home::Partners => self.partner_free.push_back(ip),
        }
    }

    /// The slot of `ip`, created as [`Slot::fresh`] if there is none.
    fn slot_mut(&mut self, subnet: &Subnet, ip: u32) -> &mut Slot {
        self.slots
            .entry(ip)
            .or_insert_with(|| Slot::fresh(initially_free(subnet, Ipv4Addr::from(ip))))
    }

    /// Is `ip` free for `client` (never used, free, or offered or leased to this client)? A
    /// declined address is available to nobody until its hold ends.
    ///
    /// With a partner, an end it has not acknowledged is not offered to its client again
    /// (`offering`; draft §7.3: the partner, freeing it, could give it to another client before
    /// it hears of a new lease). A client that asks to keep it (a REQUEST) may: one still using
    /// it was given a later lease by the partner, whose newer binding makes it refuse our end
    /// (draft §7.1.3, time(1), time(2)); NAKing it would take a running lease away.
    fn available_to(
        &self,
        ip: u32,
        client: &[u8],
        now_s: u64,
        partner_down: Option<PartnerDown>,
        offering: bool,
    ) -> bool {
        self.slots.get(&ip).is_none_or(|s| {
            let ended_unacked =
                s.frozen && matches!(s.state, LeaseState::Released | LeaseState::Expired);
            s.is_free(now_s, partner_down)
                || (s.owned_by(client)
                    && s.state != LeaseState::Declined
                    && !(offering && ended_unacked))
        })
    }

    /// May `client` get `ip` as a new allocation or keep it? Always for what it holds; for
    /// anything else only from our share (reservations are both sides': draft §5.13), or in
    /// PARTNER-DOWN from the partner's share too once MCLT has passed.
    fn allocatable_to(
        &self,
        subnet: &Subnet,
        ip: u32,
        client: &[u8],
        now_s: u64,
        partner_down: Option<PartnerDown>,
    ) -> bool {
        self.home(subnet, ip) != Home::Partners
            || subnet.reserved_to(Ipv4Addr::from(ip)).is_some()
            || partner_down.is_some_and(|pd| pd.partner_share_open(now_s))
            || self
                .slots
                .get(&ip)
                .is_some_and(|s| s.held_by(client, now_s))
    }

    /// Holds `ip` for `client` as an offer until `expires_s`; a Bound lease is never shortened
    /// by a new offer. Not recorded: an offer binds nothing.
    fn hold_for_offer(
        &mut self,
        subnet: &Subnet,
        ip: u32,
        client: &[u8],
        expires_s: u64,
        now_s: u64,
    ) {
        let slot = self.slot_mut(subnet, ip);
        // Offering a client the address it holds must not cut its lease short.
        let keep_bound =
            slot.state == LeaseState::Bound && slot.expires_s() > now_s && slot.owned_by(client);
        if !keep_bound {
            if !slot.owned_by(client) {
                slot.client = Some(ClientKey(client.into()));
                // The failover times belong to the previous client's binding.
                slot.pet_s = 0;
                slot.partner_expiry_s = 0;
                slot.cltt_s = 0;
            }
            slot.since_s = time32(slot.since_for(client, LeaseState::Offered, now_s));
            slot.state = LeaseState::Offered;
            slot.expires_s = time32(expires_s);
        }
        self.schedule(ip);
    }

    /// Makes `change` (recorded) the state of its address: every field, the expiry heap and
    /// the free lists follow.
    fn set(&mut self, subnet: &Subnet, change: &Change<'_>) {
        let ip = u32::from(change.ip);
        let was_home = self.home(subnet, ip);
        let failover = self.share.is_some();
        let share = self.share;
        let slot = self.slot_mut(subnet, ip);
        match change.state {
            LeaseState::Free => slot.owner = Owner::Primary,
            LeaseState::Backup => slot.owner = Owner::Secondary,
            _ => {}
        }
        let home = home_of(share, subnet, ip, slot.owner);
        if !slot.owned_by(change.client) {
            slot.client = (!change.client.is_empty()).then(|| ClientKey(change.client.into()));
        }
        slot.state = change.state;
        slot.expires_s = time32(change.expires_s);
        slot.since_s = time32(change.since_s);
        slot.seq = change.seq;
        slot.pet_s = time32(change.potential_expiry_s);
        slot.partner_expiry_s = time32(change.partner_expiry_s);
        slot.cltt_s = time32(change.cltt_s);
        // With a partner, whatever it may think bound stays the client's until it knows better.
        slot.frozen = failover
            && matches!(
                change.state,
                LeaseState::Bound | LeaseState::Released | LeaseState::Expired
            );
        let ended_frozen = slot.frozen && !change.state.is_timed();
        let queue = !change.state.is_timed()
            && !slot.frozen
            && (!slot.queued || home != was_home)
            && home != Home::Outside;
        if queue {
            slot.queued = true;
            self.push_free(ip, home);
        }
        if ended_frozen && home != Home::Outside {
            self.ended.push_back(ip);
        }
        self.schedule(ip);
    }

    /// Keeps the expiry-heap invariant of a timed slot (see [`Slot::due_s`]).
    fn schedule(&mut self, ip: u32) {
        let Some(slot) = self.slots.get_mut(&ip) else {
            return;
        };
        if slot.state.is_timed() && (slot.due_s == 0 || slot.expires_s < slot.due_s) {
            slot.due_s = slot.expires_s;
            self.expiries.push(Reverse((slot.expires_s, ip)));
        }
    }

    /// Marks a timed state of `ip` as over at `now_s` with `state` (Released or Expired),
    /// without recording it (offers and expiries are not recorded).
    fn end(&mut self, subnet: &Subnet, ip: u32, state: LeaseState, now_s: u64) {
        let home = self.home(subnet, ip);
        let Some(slot) = self.slots.get_mut(&ip) else {
            return;
        };
        slot.state = state;
        slot.expires_s = time32(now_s);
        slot.since_s = time32(now_s);
        if home == Home::Outside {
            return;
        }
        if slot.frozen {
            self.ended.push_back(ip);
        } else if !slot.queued {
            slot.queued = true;
            self.push_free(ip, home);
        }
    }

    /// Pops free addresses of our share until one is really free and not reserved; when the
    /// list runs dry, ends what expired first. In PARTNER-DOWN, then the partner's share once
    /// it is open, then frozen addresses whose wait is over.
    fn pop_free(
        &mut self,
        subnet: &Subnet,
        now_s: u64,
        partner_down: Option<PartnerDown>,
    ) -> Option<u32> {
        if self.free.is_empty() {
            self.sweep(subnet, now_s, None);
        }
        if let Some(ip) = self.pop_usable(subnet, now_s, Home::Ours) {
            return Some(ip);
        }
        let pd = partner_down?;
        if pd.partner_share_open(now_s) {
            if let Some(ip) = self.pop_usable(subnet, now_s, Home::Partners) {
                return Some(ip);
            }
        }
        self.pop_thawed(subnet, now_s, pd)
    }

    /// Pops `home`'s free list until an address is really free, still `home`'s and not
    /// reserved.
    fn pop_usable(&mut self, subnet: &Subnet, now_s: u64, home: Home) -> Option<u32> {
        let list = match home {
            Home::Partners => &mut self.partner_free,
            _ => &mut self.free,
        };
        while let Some(ip) = list.pop_front() {
            let slot = self.slots.entry(ip).or_insert_with(|| Slot::fresh(false));
            if home_of(self.share, subnet, ip, slot.owner) != home {
                continue; // moved to the other side since; queued there
            }
            slot.queued = false;
            let usable = slot.is_free(now_s, None);
            if usable && subnet.reserved_to(Ipv4Addr::from(ip)).is_none() {
                return Some(ip);
            }
        }
        None
    }

    /// PARTNER-DOWN: a frozen ended address whose wait is over. Looks at a bounded number of
    /// entries per call (those still waiting go to the back), so allocation stays cheap.
    fn pop_thawed(&mut self, subnet: &Subnet, now_s: u64, pd: PartnerDown) -> Option<u32> {
        const LOOK_AT: usize = 64;
        for _ in 0..self.ended.len().min(LOOK_AT) {
            let ip = self.ended.pop_front()?;
            let Some(slot) = self.slots.get(&ip) else {
                continue;
            };
            if !slot.frozen || slot.state.is_timed() {
                continue; // stale: freed or bound again since
            }
            if subnet.reserved_to(Ipv4Addr::from(ip)).is_some() {
                continue;
            }
            if slot.is_free(now_s, Some(pd)) {
                return Some(ip);
            }
            self.ended.push_back(ip);
        }
        None
    }

    /// Ends the timed states that ran out by `now_s`; returns how many. Offers and decline
    /// holds end unrecorded. A lease ends unrecorded too without a partner; with one, only
    /// with `record` (the table's sequence and a journal): its end is recorded as Expired, so
    /// it goes to the partner, and the address stays frozen until the partner acknowledges it.
    /// Without `record`, or if recording fails, such a lease waits for the next sweep.
    fn sweep(
        &mut self,
        subnet: &Subnet,
        now_s: u64,
        mut record: Option<(&AtomicU64, &mut dyn Journal)>,
    ) -> usize {
        let mut ended = 0;
        let mut later = Vec::new();
        while let Some(&Reverse((due_s, ip))) = self.expiries.peek() {
            if u64::from(due_s) > now_s {
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
            if slot.expires_s() > now_s {
                // Extended since this entry was pushed: wait for the new time.
                slot.due_s = slot.expires_s;
                let due_s = slot.expires_s;
                self.expiries.push(Reverse((due_s, ip)));
                continue;
            }
            if slot.state == LeaseState::Bound && self.share.is_some() {
                let key = slot.client.clone();
                let expired = Change {
                    seq: 0,
                    ip: Ipv4Addr::from(ip),
                    state: LeaseState::Expired,
                    expires_s: slot.expires_s(),
                    since_s: slot.expires_s(),
                    client: key.as_ref().map_or(&[][..], |k| k.as_bytes()),
                    potential_expiry_s: u64::from(slot.pet_s).max(slot.expires_s()),
                    partner_expiry_s: u64::from(slot.partner_expiry_s),
                    cltt_s: u64::from(slot.cltt_s),
                };
                let recorded = match record.as_mut() {
                    Some((seq, journal)) => {
                        let expired = Change {
                            seq: next_seq(seq),
                            ..expired
                        };
                        let ok = journal.record(&expired).is_ok();
                        if ok {
                            self.set(subnet, &expired);
                        }
                        ok
                    }
                    None => false,
                };
                if recorded {
                    ended += 1;
                } else {
                    later.push(ip);
                }
                continue;
            }
            if slot.state == LeaseState::Declined {
                slot.client = None;
            }
            let expired_at = slot.expires_s();
            self.end(subnet, ip, LeaseState::Expired, expired_at);
            ended += 1;
        }
        // Pushed back only now, so this sweep does not meet them again.
        for ip in later {
            self.schedule(ip);
        }
        ended
    }
}

/// Which free list a pool address owned by `owner` goes to.
fn home_of(share: Option<PoolShare>, subnet: &Subnet, ip: u32, owner: Owner) -> Home {
    if !subnet.in_pool(Ipv4Addr::from(ip)) {
        return Home::Outside;
    }
    let Some(share) = share else {
        return Home::Ours;
    };
    let role = match owner {
        Owner::Fresh => share.owner(Ipv4Addr::from(ip)),
        Owner::Primary => Role::Primary,
        Owner::Secondary => Role::Secondary,
    };
    if role == share.role {
        Home::Ours
    } else {
        Home::Partners
    }
}

/// Is `ip` in a free list at start-up? Pool addresses are, except the subnet's network and
/// broadcast addresses and reserved ones.
fn initially_free(subnet: &Subnet, ip: Ipv4Addr) -> bool {
    subnet.in_pool(ip)
        && ip != subnet.network
        && ip != subnet.broadcast()
        && subnet.reserved_to(ip).is_none()
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

fn next_seq(last: &AtomicU64) -> u64 {
    last.fetch_add(1, Ordering::Relaxed) + 1
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
    /// An empty table with every pool address free, without failover.
    pub fn new(subnets: &Subnets) -> Self {
        Self::with_share(subnets, None)
    }

    /// An empty table with every pool address free (network, broadcast and reserved addresses
    /// are never in a free list); with a failover `share`, only our share of each pool is
    /// allocated from.
    pub fn with_share(subnets: &Subnets, share: Option<PoolShare>) -> Self {
        let subnets = subnets
            .all()
            .iter()
            .map(|subnet| {
                let mut shards: Vec<AddrShard> =
                    (0..SHARDS).map(|_| AddrShard::new(share)).collect();
                for ip in subnet.pools.iter().flat_map(|p| p.addresses()) {
                    if initially_free(subnet, ip) {
                        let ip = u32::from(ip);
                        let shard = &mut shards[addr_shard(ip)];
                        let home = shard.home(subnet, ip);
                        shard.push_free(ip, home);
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
    /// changes of one address is the order of their `seq`. Public for records that share the
    /// order (the failover relationship's state).
    pub fn next_seq(&self) -> u64 {
        next_seq(&self.last_seq)
    }

    /// Continues the sequence after `seq` (the highest of a replayed log, which may belong to a
    /// record that is not a binding), so no later change reuses a number.
    pub fn continue_after(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    fn leases(&self, subnet: &Subnet) -> &SubnetLeases {
        // Subnet ids come from the same `Subnets` the table was built from.
        &self.subnets[subnet.id]
    }

    /// The address to OFFER `client` (RFC 2131 §4.3.1): its current or remembered address,
    /// then its reservation, then the address it asked for if free, then the oldest free one
    /// of our share. The address is held for the client for `hold_s` so no other client is
    /// offered it. The lease time is what [`LeaseTable::commit`] would grant now.
    pub fn offer(
        &self,
        subnet: &Subnet,
        client: &[u8],
        requested: Option<Ipv4Addr>,
        now_s: u64,
        hold_s: u32,
        lease: LeaseTime,
    ) -> Result<Offer, DropReason> {
        let leases = self.leases(subnet);
        let mut clients = leases.clients[client_shard(client)].lock();
        let hold_until_s = now_s + u64::from(hold_s);
        let leasable = |ip: Ipv4Addr| match subnet.reserved_to(ip) {
            Some(owner) => owner.as_bytes() == client,
            None => subnet.in_pool(ip),
        };
        // The offer, and the client's key as the slot holds it (see `remember`).
        let hold = |shard: &mut AddrShard, ip: u32| {
            let partner_expiry_s = shard
                .slots
                .get(&ip)
                .map_or(0, |s| s.partner_expiry_for(client));
            let lease_s = lease_time_s(lease.end(now_s, partner_expiry_s), now_s);
            shard.hold_for_offer(subnet, ip, client, hold_until_s, now_s);
            let offer = Offer {
                ip: Ipv4Addr::from(ip),
                lease_s,
            };
            (offer, shard.key_of(ip))
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
            if shard.available_to(ip, client, now_s, lease.partner_down, true)
                && shard.allocatable_to(subnet, ip, client, now_s, lease.partner_down)
            {
                let (offered, key) = hold(&mut shard, ip);
                drop(shard);
                self.remember(&mut clients, key, ip);
                return Ok(offered);
            }
        }

        let first = client_shard(client);
        for i in 0..SHARDS {
            let mut shard = leases.addrs[(first + i) % SHARDS].lock();
            if let Some(ip) = shard.pop_free(subnet, now_s, lease.partner_down) {
                let (offered, key) = hold(&mut shard, ip);
                drop(shard);
                self.remember(&mut clients, key, ip);
                return Ok(offered);
            }
        }
        Err(DropReason::PoolExhausted)
    }

    /// Points `key`'s client at `ip`. `key` is the one `ip`'s slot holds
    /// ([`AddrShard::key_of`]): the index shares it, so a client's key is allocated once, not
    /// twice (32 bytes a lease).
    fn remember(&self, clients: &mut HashMap<ClientKey, u32>, key: Option<ClientKey>, ip: u32) {
        let Some(key) = key else {
            return;
        };
        match clients.get_mut(key.as_bytes()) {
            Some(current) => *current = ip,
            None => {
                clients.insert(key, ip);
            }
        }
    }

    /// Leases `ip` to `client` (DHCPREQUEST, RFC 2131 §4.3.2), recording it in `journal`
    /// first. The lease ends at `lease`'s bound: with an MCLT, at most MCLT beyond the
    /// partner's expiration bound of the address (none if the address changes client); the
    /// potential expiration for the partner is `now + desired + granted / 2` (draft §5.2.1).
    pub fn commit(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: Ipv4Addr,
        lease: LeaseTime,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Commit {
        self.bind(subnet, client, ip, (lease, now_s), true, journal)
    }

    /// [`Self::commit`] for a client that names an address as already its own (INIT-REBOOT,
    /// RENEWING, REBINDING). Renewing a running lease gives any other lease of the client
    /// back, as a move does. Otherwise the client's other lease is kept: the request may lag
    /// behind the client's move (a late retransmission, a stale memory; or a move through the
    /// failover partner we have not heard of), and giving back the address the client moved
    /// to would let another client have it. Of two leases, the one the client stops renewing
    /// runs out.
    pub fn confirm(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: Ipv4Addr,
        lease: LeaseTime,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Commit {
        self.bind(subnet, client, ip, (lease, now_s), false, journal)
    }

    fn bind(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: Ipv4Addr,
        (lease, now_s): (LeaseTime, u64),
        may_move: bool,
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
        // A client that names an address without a running lease there may be behind its own
        // move (see `confirm`): its other lease stays.
        let moves = may_move || {
            let shard = leases.addrs[addr_shard(ip_u32)].lock();
            shard
                .slots
                .get(&ip_u32)
                .is_some_and(|s| s.state == LeaseState::Bound && s.held_by(client, now_s))
        };
        let (expires_s, key) = {
            let mut shard = leases.addrs[addr_shard(ip_u32)].lock();
            let slot = shard.slots.get(&ip_u32);
            let ours = slot.is_some_and(|s| s.owned_by(client));
            if !ours && !subnet.in_pool(ip) && subnet.reserved_to(ip).is_none() {
                return Commit::NotOurs;
            }
            if !shard.available_to(ip_u32, client, now_s, lease.partner_down, false) {
                // Another client's end that the partner has not acknowledged: the partner, if
                // it heard of it, may have leased the address to this client since. Neither
                // grant nor refuse.
                let partner_may_have_it = slot.is_some_and(|s| {
                    s.frozen && matches!(s.state, LeaseState::Released | LeaseState::Expired)
                });
                return if partner_may_have_it {
                    Commit::NotOurs
                } else {
                    Commit::Conflict
                };
            }
            if !shard.allocatable_to(subnet, ip_u32, client, now_s, lease.partner_down) {
                // A free address of the partner's share: the partner allocates it.
                return Commit::NotOurs;
            }
            let partner_expiry_s = slot.map_or(0, |s| s.partner_expiry_for(client));
            let expires_s = lease.end(now_s, partner_expiry_s);
            let change = Change {
                seq: self.next_seq(),
                ip,
                state: LeaseState::Bound,
                expires_s,
                since_s: slot.map_or(now_s, |s| s.since_for(client, LeaseState::Bound, now_s)),
                client,
                potential_expiry_s: potential_expiration(
                    now_s,
                    u64::from(lease.desired_s),
                    expires_s.saturating_sub(now_s),
                ),
                partner_expiry_s,
                cltt_s: now_s,
            };
            if journal.record(&change).is_err() {
                return Commit::Unavailable;
            }
            shard.set(subnet, &change);
            (expires_s, shard.key_of(ip_u32))
        };
        if let Some(old) = previous.filter(|_| moves) {
            // The client moved to a new address: its old one goes back to the pool. Should this
            // fail to be recorded, the old lease simply runs out.
            let _ = self.give_back(subnet, client, old, now_s, journal);
        }
        self.remember(&mut clients, key, ip_u32);
        Commit::Bound { expires_s }
    }

    /// Ends `client`'s lease on `ip` as Released, recorded in `journal`; Ok(false) if `ip` is
    /// not `client`'s.
    fn give_back(
        &self,
        subnet: &Subnet,
        client: &[u8],
        ip: u32,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Result<bool, StorageUnavailable> {
        let mut shard = self.leases(subnet).addrs[addr_shard(ip)].lock();
        let Some(slot) = shard.slots.get(&ip).filter(|s| s.held_by(client, now_s)) else {
            return Ok(false);
        };
        let change = Change {
            seq: self.next_seq(),
            ip: Ipv4Addr::from(ip),
            state: LeaseState::Released,
            expires_s: now_s,
            since_s: now_s,
            client,
            // The partner may know the ended binding's PET: keep it (PARTNER-DOWN waits for it).
            potential_expiry_s: u64::from(slot.pet_s).max(now_s),
            partner_expiry_s: u64::from(slot.partner_expiry_s),
            cltt_s: now_s,
        };
        journal.record(&change)?;
        shard.set(subnet, &change);
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
            shard.end(subnet, ip, LeaseState::Expired, now_s);
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
        self.give_back(subnet, client, u32::from(ip), now_s, journal)
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
        let Some(slot) = shard
            .slots
            .get(&ip_u32)
            .filter(|s| s.held_by(client, now_s))
        else {
            return Ok(false);
        };
        // Keep the decliner as the owner for the record; a declined address is available to
        // nobody, the decliner included.
        let change = Change {
            seq: self.next_seq(),
            ip,
            state: LeaseState::Declined,
            expires_s: now_s + u64::from(hold_s),
            since_s: now_s,
            client,
            potential_expiry_s: 0,
            partner_expiry_s: u64::from(slot.partner_expiry_s),
            cltt_s: now_s,
        };
        journal.record(&change)?;
        shard.set(subnet, &change);
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
        shard.set(subnet, change);
        self.remember(&mut clients, shard.key_of(ip), ip);
        true
    }

    /// Stores a binding the failover partner sent (an accepted BNDUPD), recording it in
    /// `journal` first; the caller makes it durable before it acknowledges it (draft §7.1.4).
    ///
    /// ACTIVE → Bound to its client until its expiry; EXPIRED / RELEASED → Free (the receiver
    /// of an accepted end frees the address itself, draft §5.11), remembered for the client;
    /// FREE, BACKUP, RESET → Free without a client; ABANDONED → Declined until its
    /// expiry, or [`ABANDONED_HOLD_S`] if that has passed. The binding's PET becomes the
    /// address's partner expiration bound (draft §7.1.5: a lease may run MCLT beyond a received
    /// PET). The client index follows: the binding's client points at the address when it is
    /// Bound there, and a previous owner's entry for the address is removed.
    pub fn apply_partner(
        &self,
        subnets: &Subnets,
        b: &failover::Binding,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Result<Applied, StorageUnavailable> {
        let Some(subnet) = relationship_subnet(subnets, b.ip) else {
            return Ok(Applied::NotInPool);
        };
        let ended_s = if b.expires_s != 0 { b.expires_s } else { now_s };
        let (state, expires_s, keeps_client) = match b.status {
            BindingStatus::Active => (LeaseState::Bound, b.expires_s, true),
            BindingStatus::Expired | BindingStatus::Released => (LeaseState::Free, ended_s, true),
            // A reset address returns to the primary, like any freed one (draft §5.11).
            BindingStatus::Free | BindingStatus::Reset => (LeaseState::Free, now_s, false),
            BindingStatus::Backup => (LeaseState::Backup, now_s, false),
            BindingStatus::Abandoned => {
                let until_s = if b.expires_s > now_s {
                    b.expires_s
                } else {
                    now_s + ABANDONED_HOLD_S
                };
                (LeaseState::Declined, until_s, true)
            }
            BindingStatus::Unknown(_) => return Ok(Applied::UnknownStatus),
        };
        let binding_key = keeps_client.then(|| client_key_of(b)).flatten();
        let client = binding_key.as_ref().map_or(&[][..], |k| k.as_bytes());
        let leases = self.leases(subnet);
        let ip = u32::from(b.ip);
        // Lock order: the binding's client shard, then the address shard.
        let mut clients = (!client.is_empty()).then(|| leases.clients[client_shard(client)].lock());
        let (previous_owner, key) = {
            let mut shard = leases.addrs[addr_shard(ip)].lock();
            let slot = shard.slots.get(&ip);
            let previous_owner = slot
                .and_then(|s| s.client.clone())
                .filter(|owner| owner.as_bytes() != client);
            // Draft §7.1.4: the local lease end is only ever moved later. A lease of this
            // client we granted beyond what the partner knows stays ours to tell it about.
            let expires_s = match slot {
                Some(s) if state == LeaseState::Bound && s.held_by(client, now_s) => {
                    expires_s.max(s.expires_s())
                }
                _ => expires_s,
            };
            // A freed address holds nothing of the partner's for its last client; a FREE or
            // BACKUP one (no client) is marked as the partner's word (see `partner_has`).
            let partner_pet = match state {
                LeaseState::Free if keeps_client => 0,
                LeaseState::Free | LeaseState::Backup => now_s,
                _ => b.pet_s,
            };
            let change = Change {
                seq: self.next_seq(),
                ip: b.ip,
                state,
                expires_s,
                since_s: if b.stos_s != 0 { b.stos_s } else { now_s },
                client,
                potential_expiry_s: partner_pet,
                partner_expiry_s: partner_pet,
                cltt_s: b.cltt_s,
            };
            journal.record(&change)?;
            shard.set(subnet, &change);
            (previous_owner, shard.key_of(ip))
        };
        if let Some(clients) = &mut clients {
            // A Bound client is here now (it may have moved from another address); an ended
            // binding is remembered for a client that has no other address.
            if state == LeaseState::Bound || !clients.contains_key(client) {
                self.remember(clients, key, ip);
            }
        }
        drop(clients);
        if let Some(owner) = previous_owner {
            self.forget_stale(subnet, &owner, ip);
        }
        Ok(Applied::Stored)
    }

    /// Removes `client`'s index entry for `ip` if the address is no longer its.
    fn forget_stale(&self, subnet: &Subnet, client: &ClientKey, ip: u32) {
        let leases = self.leases(subnet);
        let mut clients = leases.clients[client_shard(client.as_bytes())].lock();
        if clients.get(client.as_bytes()) != Some(&ip) {
            return;
        }
        let shard = leases.addrs[addr_shard(ip)].lock();
        let still_owned = shard
            .slots
            .get(&ip)
            .is_some_and(|s| s.owned_by(client.as_bytes()));
        if !still_owned {
            clients.remove(client.as_bytes());
        }
    }

    /// The partner acknowledged our binding of `ip` with `partner_expiry_s` (the PET we sent):
    /// records the address's binding again with that partner expiration bound, so later
    /// renewals may run up to MCLT beyond it.
    ///
    /// The acknowledgement of an ended binding (Released, Expired) frees the address: it is
    /// recorded as Free and other clients may get it (draft §5.11: the sender of the end frees
    /// the address when the BNDACK arrives).
    ///
    /// Only an acknowledgement of the binding the address holds now counts (its `status` and PET
    /// are the ones that binding is sent with). Another PET was sent with an older binding of the address,
    /// perhaps another client's, and a newer update supersedes it: storing it could stretch the
    /// current client's lease by an expiry the partner never saw for that client. Such an
    /// acknowledgement, or one for an address we hold no record of, changes nothing.
    pub fn partner_acked(
        &self,
        subnets: &Subnets,
        ip: Ipv4Addr,
        status: BindingStatus,
        partner_expiry_s: u64,
        journal: &mut dyn Journal,
    ) -> Result<(), StorageUnavailable> {
        let Some(subnet) = subnets.containing(ip) else {
            return Ok(());
        };
        let ip_u32 = u32::from(ip);
        let mut shard = self.leases(subnet).addrs[addr_shard(ip_u32)].lock();
        let Some(slot) = shard.slots.get(&ip_u32) else {
            return Ok(());
        };
        let current = slot.recorded(ip_u32, shard.share);
        let ended = matches!(current.state, LeaseState::Released | LeaseState::Expired);
        // An ended binding went out with its PET; an offer to the same client since may have
        // moved the slot's expiry, not its PET (nor made a RELEASED an EXPIRED that matters).
        let (sent, same_kind) = if ended {
            let end = matches!(status, BindingStatus::Released | BindingStatus::Expired);
            (u64::from(slot.pet_s), end)
        } else {
            (
                sent_pet(&current),
                to_failover_binding(&current).status == status,
            )
        };
        if !same_kind || time32(sent) != time32(partner_expiry_s) {
            return Ok(());
        }
        let offered = slot.state == LeaseState::Offered;
        let key = shard.key_of(ip_u32);
        let acked = Change {
            seq: self.next_seq(),
            state: if ended {
                LeaseState::Free
            } else {
                current.state
            },
            // The partner freed an ended binding: it holds nothing for the client any more, so
            // a new lease of the client starts from nothing (draft §5.2.1).
            partner_expiry_s: if ended { 0 } else { partner_expiry_s },
            client: key.as_ref().map_or(&[][..], |k| k.as_bytes()),
            ..current
        };
        journal.record(&acked)?;
        match shard.slots.get_mut(&ip_u32) {
            // Keep the running offer; it is free for others once it ends, and the primary's
            // as any acknowledged end (a secondary allocating it would race the primary).
            Some(slot) if offered => {
                slot.seq = acked.seq;
                slot.partner_expiry_s = time32(partner_expiry_s);
                slot.frozen = false;
                if ended {
                    slot.owner = Owner::Primary;
                }
            }
            _ => shard.set(subnet, &acked),
        }
        Ok(())
    }

    /// The table as the failover endpoint's [`LocalBindings`] at `now_s`, for the acceptance
    /// checks of a received BNDUPD (draft §7.1.3).
    pub fn view<'a>(&'a self, subnets: &'a Subnets, now_s: u64) -> TableView<'a> {
        TableView {
            table: self,
            subnets,
            now_s,
        }
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
                        visit(&slot.recorded(*ip, shard.share));
                    }
                }
            }
        }
    }

    /// Calls `visit` with the failover binding of every recorded address (UPDREQALL, a full
    /// resend), in the chunks of [`LeaseTable::visit_records`].
    pub fn visit_bindings(&self, mut visit: impl FnMut(failover::Binding)) {
        self.visit_records(|change| visit(to_failover_binding(change)));
    }

    /// Calls `visit` with the failover binding of every address whose current record the
    /// partner has not acknowledged, as far as the records tell (draft §5.17, "the partner is
    /// up to date"): what a restarted server sends its partner again. See [`partner_has`].
    pub fn visit_unacknowledged_bindings(&self, mut visit: impl FnMut(failover::Binding)) {
        self.visit_records(|change| {
            if !partner_has(change) {
                visit(to_failover_binding(change));
            }
        });
    }

    /// Free addresses of `subnet` at `now_s`: (ours, the failover partner's). Walks the pools:
    /// for the rebalancing timer, not the hot path.
    pub fn free_by_side(&self, subnet: &Subnet, now_s: u64) -> (u64, u64) {
        let leases = self.leases(subnet);
        let (mut ours, mut theirs) = (0, 0);
        for ip in subnet.pools.iter().flat_map(|p| p.addresses()) {
            if !initially_free(subnet, ip) {
                continue;
            }
            let ip = u32::from(ip);
            let shard = leases.addrs[addr_shard(ip)].lock();
            let slot = shard.slots.get(&ip);
            if slot.is_some_and(|s| !s.is_free(now_s, None)) {
                continue;
            }
            match shard.home(subnet, ip) {
                Home::Ours => ours += 1,
                Home::Partners => theirs += 1,
                Home::Outside => {}
            }
        }
        (ours, theirs)
    }

    /// Pool balancing (draft §5.4, §7.6): in every subnet, gives the failover partner the free
    /// addresses we hold beyond our share ([`PoolShare::surplus`]), recording each as the
    /// partner's first (BACKUP from a primary, FREE from a secondary: only the owner of a free
    /// address gives it away, so the two never take one address at once). Returns the bindings
    /// to send; once one is recorded we never allocate it. Stops at a storage failure.
    pub fn rebalance(
        &self,
        subnets: &Subnets,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Vec<failover::Binding> {
        let mut given = Vec::new();
        for subnet in subnets.all() {
            let leases = self.leases(subnet);
            let Some(share) = leases.addrs[0].lock().share else {
                return given;
            };
            let (ours, theirs) = self.free_by_side(subnet, now_s);
            let mut left = share.surplus(ours, theirs);
            let state = match share.role {
                Role::Primary => LeaseState::Backup,
                Role::Secondary => LeaseState::Free,
            };
            // A few rounds over the shards, an even part of what is left from each.
            for shard in leases.addrs.iter().cycle().take(SHARDS * 4) {
                let mut shard = shard.lock();
                let mut take = left.div_ceil(SHARDS as u64);
                while take > 0 {
                    let Some(ip) = shard.pop_usable(subnet, now_s, Home::Ours) else {
                        break;
                    };
                    let change = Change {
                        seq: self.next_seq(),
                        ip: Ipv4Addr::from(ip),
                        state,
                        expires_s: now_s,
                        since_s: now_s,
                        client: &[],
                        potential_expiry_s: 0,
                        partner_expiry_s: 0,
                        cltt_s: 0,
                    };
                    if journal.record(&change).is_err() {
                        shard.push_free(ip, Home::Ours);
                        if let Some(slot) = shard.slots.get_mut(&ip) {
                            slot.queued = true;
                        }
                        return given;
                    }
                    shard.set(subnet, &change);
                    given.push(to_failover_binding(&change));
                    take -= 1;
                    left -= 1;
                }
                if left == 0 {
                    break;
                }
            }
        }
        given
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
    /// shard by itself when its free list runs dry. With a failover partner, each lease end is
    /// recorded in `journal` as Expired (for the partner: draft §7.1.1); an end that cannot be
    /// recorded is tried again next time.
    pub fn expire(&self, subnets: &Subnets, now_s: u64, journal: &mut dyn Journal) -> usize {
        let mut ended = 0;
        for (subnet, leases) in subnets.all().iter().zip(&self.subnets) {
            for shard in &leases.addrs {
                ended += shard
                    .lock()
                    .sweep(subnet, now_s, Some((&self.last_seq, &mut *journal)));
            }
        }
        ended
    }

    /// Addresses by state in one subnet (walks the subnet: for status, not the hot path).
    pub fn counts(&self, subnet: &Subnet, now_s: u64) -> LeaseCounts {
        let mut counts = LeaseCounts {
            pool_size: subnet.pools.iter().map(|p| p.size()).sum(),
            ..LeaseCounts::default()
        };
        for shard in &self.leases(subnet).addrs {
            for slot in shard.lock().slots.values() {
                if slot.ran_out(now_s) {
                    continue;
                }
                match slot.state {
                    LeaseState::Offered => counts.offered += 1,
                    LeaseState::Bound => counts.bound += 1,
                    LeaseState::Declined => counts.declined += 1,
                    LeaseState::Released
                    | LeaseState::Expired
                    | LeaseState::Free
                    | LeaseState::Backup => {}
                }
            }
        }
        let failover = self.leases(subnet).addrs[0].lock().share.is_some();
        counts.free_by_side = failover.then(|| self.free_by_side(subnet, now_s));
        counts
    }
}

/// How long an address the partner reports ABANDONED stays out of use when the partner's own
/// hold has passed: ISC's default `abandon-lease-time`, one day.
pub const ABANDONED_HOLD_S: u64 = 86_400;

/// The subnet whose pools or reservations hold `ip`: the addresses of the failover
/// relationship.
fn relationship_subnet(subnets: &Subnets, ip: Ipv4Addr) -> Option<&Subnet> {
    subnets
        .containing(ip)
        .filter(|s| s.in_pool(ip) || s.reserved_to(ip).is_some())
}

/// The lease table's key for a failover binding's client: its client identifier when it has
/// one (as our DHCP side keys clients, RFC 2131 §4.2), else its hardware address.
fn client_key_of(b: &failover::Binding) -> Option<ClientKey> {
    match (&b.client_id, &b.hardware) {
        (Some(id), _) if !id.is_empty() => Some(ClientKey::from_client_id(id)),
        (_, Some(hw)) => Some(ClientKey::from_hardware(hw.htype, hw.addr())),
        _ => None,
    }
}

/// The failover binding of a lease table change: what the shell forwards to the failover thread
/// for each durable local change, and what [`LeaseTable::visit_bindings`] sends.
///
/// Bound → ACTIVE, Released → RELEASED, Expired → EXPIRED, Declined → ABANDONED; a free address
/// with no client (and an offer, never recorded) → FREE, as EXPIRED and RELEASED need a client
/// (draft Table 7.1-1). The PET is at least the lease end (draft §7.1).
pub fn to_failover_binding(change: &Change<'_>) -> failover::Binding {
    let (hardware, client_id) = match change.client.split_first() {
        Some((&KEY_TAG_HARDWARE, rest)) => match rest.split_first() {
            Some((&htype, chaddr)) => (HwAddr::new(htype, chaddr), None),
            None => (None, None),
        },
        Some((&KEY_TAG_CLIENT_ID, id)) if !id.is_empty() => (None, Some(Box::from(id))),
        _ => (None, None),
    };
    let has_client = hardware.is_some() || client_id.is_some();
    let status = match change.state {
        LeaseState::Bound => BindingStatus::Active,
        LeaseState::Declined => BindingStatus::Abandoned,
        LeaseState::Released if has_client => BindingStatus::Released,
        LeaseState::Expired if has_client => BindingStatus::Expired,
        LeaseState::Released | LeaseState::Expired | LeaseState::Offered | LeaseState::Free => {
            BindingStatus::Free
        }
        LeaseState::Backup => BindingStatus::Backup,
    };
    // A FREE or BACKUP address belongs to no client (draft Table 7.1-1).
    let (hardware, client_id) = match status {
        BindingStatus::Free | BindingStatus::Backup => (None, None),
        _ => (hardware, client_id),
    };
    failover::Binding {
        ip: change.ip,
        status,
        flags: 0,
        hardware,
        client_id,
        expires_s: change.expires_s,
        pet_s: sent_pet(change),
        cltt_s: change.cltt_s,
        stos_s: change.since_s,
    }
}

/// Does the partner know `change` already? A Free record of a client is an acknowledged end
/// or the partner's; a Bound one carries the PET the partner acknowledged (or sent us), equal
/// to the one it would be sent with. Anything else may be news to the partner; sending it again
/// is harmless (ABANDONED from the partner is sent back, for one) — but a pool gift (Backup
/// from a primary, a client-less Free from a secondary) goes again only if the partner never
/// acknowledged it: a gift the partner has since used would undo its lease (ISC dhcpd takes a
/// BACKUP over its ACTIVE outside NORMAL). A gift's record carries a partner expiration once
/// acknowledged, or when the partner sent it.
fn partner_has(change: &Change<'_>) -> bool {
    match change.state {
        LeaseState::Free => !change.client.is_empty() || change.partner_expiry_s != 0,
        LeaseState::Backup => change.partner_expiry_s != 0,
        LeaseState::Bound => {
            change.partner_expiry_s != 0
                && time32(change.partner_expiry_s) == time32(sent_pet(change))
        }
        _ => false,
    }
}

/// The PET a binding goes to the partner with: at least its lease end (draft §7.1: PET ≥
/// lease-expiration-time).
fn sent_pet(change: &Change<'_>) -> u64 {
    change.potential_expiry_s.max(change.expires_s)
}

/// The lease time from `now_s` to `expires_s`, in the 32 bits of DHCP option 51.
pub fn lease_time_s(expires_s: u64, now_s: u64) -> u32 {
    u32::try_from(expires_s.saturating_sub(now_s)).unwrap_or(u32::MAX)
}

/// The lease table as the failover endpoint sees it ([`LeaseTable::view`]).
pub struct TableView<'a> {
    table: &'a LeaseTable,
    subnets: &'a Subnets,
    now_s: u64,
}

impl LocalBindings for TableView<'_> {
    fn lookup(&self, ip: Ipv4Addr) -> Lookup {
        let Some(subnet) = relationship_subnet(self.subnets, ip) else {
            return Lookup::NotInPool;
        };
        let ip = u32::from(ip);
        let shard = self.table.leases(subnet).addrs[addr_shard(ip)].lock();
        let Some(slot) = shard.slots.get(&ip).filter(|s| s.seq != 0) else {
            return Lookup::NoRecord;
        };
        let mut change = slot.recorded(ip, shard.share);
        if change.state.is_timed() && slot.ran_out(self.now_s) {
            // Ran out and not swept yet: what the sweep will make of it.
            if change.state == LeaseState::Declined {
                change.client = &[];
            }
            change.state = LeaseState::Expired;
        }
        Lookup::Known(to_failover_binding(&change))
    }
}

#[cfg(test)]
mod tests {
    //! The failover side of the table, one rule per test: the MCLT bound on commits, storing
    //! the partner's bindings and acknowledgements, the durable record of the new times, and
    //! the static pool share.
    use super::*;
    use crate::proto::failover::{Binding, LocalBindings, Lookup};
    use crate::proto::subnet::Pool;

    const NOW: u64 = 1_700_000_000;
    const MCLT: u32 = 600;
    const DESIRED: u32 = 3600;

    fn subnets(first: [u8; 4], last: [u8; 4]) -> Subnets {
        Subnets::new(vec![Subnet {
            id: 0,
            network: Ipv4Addr::new(10, 0, 0, 0),
            prefix_len: 16,
            pools: vec![Pool {
                first: first.into(),
                last: last.into(),
            }],
            reservations: vec![],
            lease_time_s: DESIRED,
            min_lease_time_s: 60,
            max_lease_time_s: 86_400,
            t1_s: 1800,
            t2_s: 3150,
            options: vec![],
        }])
    }

    fn small() -> Subnets {
        subnets([10, 0, 1, 1], [10, 0, 1, 20])
    }

    fn hw(n: u16) -> ClientKey {
        let [a, b] = n.to_be_bytes();
        ClientKey::from_hardware(1, &[2, 0, 0, 0, a, b])
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 1, last)
    }

    fn failover(desired_s: u32) -> LeaseTime {
        LeaseTime {
            desired_s,
            mclt_s: Some(MCLT),
            partner_down: None,
        }
    }

    /// An owned copy of a [`Change`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Record {
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

    impl Record {
        fn of(c: &Change<'_>) -> Record {
            Record {
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

    #[derive(Default)]
    struct Recorder(Vec<Record>);

    impl Journal for Recorder {
        fn record(&mut self, change: &Change<'_>) -> Result<(), StorageUnavailable> {
            self.0.push(Record::of(change));
            Ok(())
        }
    }

    fn records(table: &LeaseTable) -> Vec<Record> {
        let mut out = Vec::new();
        table.visit_records(|c| out.push(Record::of(c)));
        out.sort_by_key(|r| r.ip);
        out
    }

    fn commit(
        table: &LeaseTable,
        s: &Subnets,
        c: &ClientKey,
        at: Ipv4Addr,
        lease: LeaseTime,
        now_s: u64,
    ) -> Commit {
        table.commit(&s.all()[0], c.as_bytes(), at, lease, now_s, &mut Volatile)
    }

    /// The record `at` holds now.
    fn table_record(table: &LeaseTable, at: Ipv4Addr) -> Record {
        let mut found = None;
        table.visit_records(|c| {
            if c.ip == at {
                found = Some(Record::of(c));
            }
        });
        found.unwrap()
    }

    /// The partner acknowledges the binding `at` holds now; returns the PET it acknowledged.
    fn ack(table: &LeaseTable, s: &Subnets, at: Ipv4Addr, journal: &mut dyn Journal) -> u64 {
        let pet = table.get(&s.all()[0], at).unwrap().potential_expiry_s;
        let status = to_failover_binding(&table_record(table, at).change()).status;
        table.partner_acked(s, at, status, pet, journal).unwrap();
        pet
    }

    fn partner(at: Ipv4Addr, status: BindingStatus, client: Option<&ClientKey>) -> Binding {
        let mut b = Binding::new(at, status);
        if let Some(key) = client {
            let chaddr = &key.as_bytes()[2..];
            b.hardware = HwAddr::new(1, chaddr);
        }
        b.expires_s = NOW + 1000;
        b.pet_s = NOW + 2000;
        b.cltt_s = NOW - 5;
        b.stos_s = NOW - 10;
        b
    }

    #[test]
    fn the_mclt_caps_a_new_lease_and_the_pet_reaches_beyond_it() {
        let s = small();
        let table = LeaseTable::new(&s);
        let mut journal = Recorder::default();
        let got = table.commit(
            &s.all()[0],
            hw(1).as_bytes(),
            ip(5),
            failover(DESIRED),
            NOW,
            &mut journal,
        );
        assert_eq!(
            got,
            Commit::Bound {
                expires_s: NOW + u64::from(MCLT)
            }
        );
        let r = &journal.0[0];
        // draft §5.2.1: PET = now + desired + granted / 2.
        assert_eq!(
            r.potential_expiry_s,
            NOW + u64::from(DESIRED) + u64::from(MCLT) / 2
        );
        assert!(r.potential_expiry_s > r.expires_s);
        assert_eq!((r.partner_expiry_s, r.cltt_s), (0, NOW));
        // A lease shorter than the MCLT is not cut; none is without an MCLT.
        assert_eq!(
            commit(&table, &s, &hw(2), ip(6), failover(300), NOW),
            Commit::Bound {
                expires_s: NOW + 300
            }
        );
        assert_eq!(
            commit(&table, &s, &hw(3), ip(7), LeaseTime::plain(DESIRED), NOW),
            Commit::Bound {
                expires_s: NOW + u64::from(DESIRED)
            }
        );
    }

    #[test]
    fn after_a_partner_ack_a_renewal_may_run_to_the_acked_time_plus_mclt() {
        let s = small();
        let table = LeaseTable::new(&s);
        let (client, at) = (hw(1), ip(5));
        let Commit::Bound { .. } = commit(&table, &s, &client, at, failover(86_400), NOW) else {
            panic!("not bound");
        };
        let acked = ack(&table, &s, at, &mut Volatile);
        assert_eq!(acked, NOW + 86_400 + u64::from(MCLT) / 2);
        let later = NOW + 300;
        assert_eq!(
            commit(&table, &s, &client, at, failover(200_000), later),
            Commit::Bound {
                expires_s: acked + u64::from(MCLT)
            }
        );
        // A desired lease within the acknowledged bound is granted whole.
        assert_eq!(
            commit(&table, &s, &client, at, failover(DESIRED), later),
            Commit::Bound {
                expires_s: later + u64::from(DESIRED)
            }
        );
        // Another client gets nothing of the acknowledged time once the address is free.
        let gone = acked + 10_000;
        table.expire(&s, gone, &mut Volatile);
        assert_eq!(
            commit(&table, &s, &hw(2), at, failover(86_400), gone),
            Commit::Bound {
                expires_s: gone + u64::from(MCLT)
            }
        );
    }

    #[test]
    fn an_offer_shows_the_lease_time_a_request_would_get() {
        let s = small();
        let table = LeaseTable::new(&s);
        let subnet = &s.all()[0];
        let offer = table
            .offer(subnet, hw(1).as_bytes(), None, NOW, 30, failover(DESIRED))
            .unwrap();
        assert_eq!(offer.lease_s, MCLT);
        let Commit::Bound { expires_s } =
            commit(&table, &s, &hw(1), offer.ip, failover(DESIRED), NOW)
        else {
            panic!("not bound");
        };
        assert_eq!(expires_s, NOW + u64::from(offer.lease_s));
        ack(&table, &s, offer.ip, &mut Volatile);
        let again = table
            .offer(
                subnet,
                hw(1).as_bytes(),
                None,
                NOW + 1,
                30,
                failover(DESIRED),
            )
            .unwrap();
        assert_eq!((again.ip, again.lease_s), (offer.ip, DESIRED));
    }

    #[test]
    fn apply_partner_maps_every_binding_status() {
        let s = small();
        let table = LeaseTable::new(&s);
        let subnet = &s.all()[0];
        let store = |b: &Binding| table.apply_partner(&s, b, NOW, &mut Volatile).unwrap();
        let lease = |at| table.get(subnet, at).unwrap();
        let client = hw(1);

        assert_eq!(
            store(&partner(ip(1), BindingStatus::Active, Some(&client))),
            Applied::Stored
        );
        let l = lease(ip(1));
        assert_eq!(
            (l.state, l.expires_s, l.client.as_ref()),
            (LeaseState::Bound, NOW + 1000, Some(&client))
        );
        assert_eq!(
            (l.potential_expiry_s, l.partner_expiry_s, l.cltt_s),
            (NOW + 2000, NOW + 2000, NOW - 5)
        );

        // The receiver of an accepted end frees the address, remembering the client.
        for status in [BindingStatus::Expired, BindingStatus::Released] {
            store(&partner(ip(2), status, Some(&client)));
            let l = lease(ip(2));
            assert_eq!(
                (l.state, l.client.as_ref()),
                (LeaseState::Free, Some(&client)),
                "{status:?}"
            );
        }
        for status in [
            BindingStatus::Free,
            BindingStatus::Backup,
            BindingStatus::Reset,
        ] {
            store(&partner(ip(3), BindingStatus::Active, Some(&hw(9))));
            store(&partner(ip(3), status, Some(&hw(9))));
            let l = lease(ip(3));
            let state = match status {
                BindingStatus::Backup => LeaseState::Backup,
                _ => LeaseState::Free,
            };
            assert_eq!((l.state, l.client), (state, None), "{status:?}");
            assert!(table.binding_of(subnet, hw(9).as_bytes(), NOW).is_none());
        }
        // ABANDONED: declined until the partner's hold ends, or ours if that has passed.
        store(&partner(ip(4), BindingStatus::Abandoned, None));
        assert_eq!(
            (lease(ip(4)).state, lease(ip(4)).expires_s),
            (LeaseState::Declined, NOW + 1000)
        );
        let mut old = partner(ip(5), BindingStatus::Abandoned, None);
        old.expires_s = NOW - 1;
        store(&old);
        assert_eq!(lease(ip(5)).expires_s, NOW + ABANDONED_HOLD_S);
        assert!(
            table
                .offer(
                    subnet,
                    hw(2).as_bytes(),
                    Some(ip(4)),
                    NOW,
                    30,
                    failover(DESIRED)
                )
                .unwrap()
                .ip
                != ip(4)
        );

        let outside = partner(
            Ipv4Addr::new(10, 0, 9, 9),
            BindingStatus::Active,
            Some(&client),
        );
        assert_eq!(store(&outside), Applied::NotInPool);
        let elsewhere = partner(
            Ipv4Addr::new(192, 0, 2, 1),
            BindingStatus::Active,
            Some(&client),
        );
        assert_eq!(store(&elsewhere), Applied::NotInPool);
        assert_eq!(
            store(&partner(ip(6), BindingStatus::Unknown(99), Some(&client))),
            Applied::UnknownStatus
        );
        assert!(table.get(subnet, ip(6)).is_none());
    }

    #[test]
    fn a_partners_active_binding_is_nobody_elses_here() {
        let s = small();
        let table = LeaseTable::new(&s);
        let subnet = &s.all()[0];
        let (a, b) = (hw(1), hw(2));
        table
            .apply_partner(
                &s,
                &partner(ip(7), BindingStatus::Active, Some(&a)),
                NOW,
                &mut Volatile,
            )
            .unwrap();
        assert_eq!(
            commit(&table, &s, &b, ip(7), failover(DESIRED), NOW),
            Commit::Conflict
        );
        let offered = table
            .offer(
                subnet,
                b.as_bytes(),
                Some(ip(7)),
                NOW,
                30,
                failover(DESIRED),
            )
            .unwrap();
        assert_ne!(offered.ip, ip(7));
        // Its own client renews it here: the partner's PET is the bound (draft §7.1.5).
        assert_eq!(
            commit(&table, &s, &a, ip(7), failover(86_400), NOW),
            Commit::Bound {
                expires_s: NOW + 2000 + u64::from(MCLT)
            }
        );
        assert_eq!(
            table.binding_of(subnet, a.as_bytes(), NOW).unwrap().ip,
            ip(7)
        );
    }

    #[test]
    fn apply_partner_keeps_the_client_index_right() {
        let s = small();
        let table = LeaseTable::new(&s);
        let subnet = &s.all()[0];
        let (mover, loser) = (hw(1), hw(2));
        assert!(matches!(
            commit(&table, &s, &mover, ip(1), failover(DESIRED), NOW),
            Commit::Bound { .. }
        ));
        assert!(matches!(
            commit(&table, &s, &loser, ip(2), failover(DESIRED), NOW),
            Commit::Bound { .. }
        ));
        // The partner gave `mover` the address `loser` held here (its lease ended there).
        table
            .apply_partner(
                &s,
                &partner(ip(2), BindingStatus::Active, Some(&mover)),
                NOW,
                &mut Volatile,
            )
            .unwrap();
        assert_eq!(
            table.binding_of(subnet, mover.as_bytes(), NOW).unwrap().ip,
            ip(2)
        );
        assert!(table.binding_of(subnet, loser.as_bytes(), NOW).is_none());
        let leases = table.leases(subnet);
        assert!(
            !leases.clients[client_shard(loser.as_bytes())]
                .lock()
                .contains_key(loser.as_bytes()),
            "stale entry removed"
        );
        // `loser` is offered another address; `mover` is offered the one the partner gave it.
        let offered = table
            .offer(subnet, loser.as_bytes(), None, NOW, 30, failover(DESIRED))
            .unwrap();
        assert_ne!(offered.ip, ip(2));
        let offered = table
            .offer(subnet, mover.as_bytes(), None, NOW, 30, failover(DESIRED))
            .unwrap();
        assert_eq!(offered.ip, ip(2));
        // An ended binding from the partner does not pull a client off the address it holds.
        table
            .apply_partner(
                &s,
                &partner(ip(9), BindingStatus::Released, Some(&mover)),
                NOW,
                &mut Volatile,
            )
            .unwrap();
        assert_eq!(
            table.binding_of(subnet, mover.as_bytes(), NOW).unwrap().ip,
            ip(2)
        );
    }

    #[test]
    fn partner_acked_records_the_binding_with_the_new_partner_expiry() {
        let s = small();
        let table = LeaseTable::new(&s);
        let mut journal = Recorder::default();
        table.commit(
            &s.all()[0],
            hw(1).as_bytes(),
            ip(5),
            failover(DESIRED),
            NOW,
            &mut journal,
        );
        let pet = ack(&table, &s, ip(5), &mut journal);
        let [bound, acked] = &journal.0[..] else {
            panic!("{:?}", journal.0);
        };
        assert!(acked.seq > bound.seq);
        let expected = Record {
            seq: acked.seq,
            partner_expiry_s: pet,
            ..bound.clone()
        };
        assert_eq!(acked, &expected);
        assert_eq!(table.get(&s.all()[0], ip(5)).unwrap().partner_expiry_s, pet);
        assert_eq!(records(&table), vec![acked.clone()]);
        // No record, nothing to record.
        table
            .partner_acked(&s, ip(6), BindingStatus::Active, NOW, &mut journal)
            .unwrap();
        table
            .partner_acked(
                &s,
                Ipv4Addr::new(192, 0, 2, 1),
                BindingStatus::Active,
                NOW,
                &mut journal,
            )
            .unwrap();
        assert_eq!(journal.0.len(), 2);
    }

    #[test]
    fn a_late_ack_of_an_older_binding_changes_nothing() {
        // Acks come in order, but one may arrive after the address changed again: an ack of
        // the previous client's PET must not stretch the new client's lease.
        let s = small();
        let table = LeaseTable::new(&s);
        let subnet = &s.all()[0];
        let old_pet = {
            commit(&table, &s, &hw(1), ip(5), failover(86_400), NOW);
            table.get(subnet, ip(5)).unwrap().potential_expiry_s
        };
        table
            .release(subnet, hw(1).as_bytes(), ip(5), NOW + 1, &mut Volatile)
            .unwrap();
        commit(&table, &s, &hw(2), ip(5), failover(86_400), NOW + 2);
        let mut journal = Recorder::default();
        table
            .partner_acked(&s, ip(5), BindingStatus::Active, old_pet, &mut journal)
            .unwrap();
        assert!(journal.0.is_empty());
        assert_eq!(table.get(subnet, ip(5)).unwrap().partner_expiry_s, 0);
        assert_eq!(
            commit(&table, &s, &hw(2), ip(5), failover(86_400), NOW + 3),
            Commit::Bound {
                expires_s: NOW + 3 + u64::from(MCLT)
            }
        );
    }

    #[test]
    fn restore_round_trips_every_field() {
        let s = small();
        let table = LeaseTable::new(&s);
        let mut journal = Recorder::default();
        let subnet = &s.all()[0];
        let lease = failover(DESIRED);
        table.commit(subnet, hw(1).as_bytes(), ip(1), lease, NOW, &mut journal);
        let pet = ack(&table, &s, ip(1), &mut journal);
        table.commit(subnet, hw(2).as_bytes(), ip(2), lease, NOW, &mut journal);
        table
            .release(subnet, hw(2).as_bytes(), ip(2), NOW + 5, &mut journal)
            .unwrap();
        let active = partner(ip(3), BindingStatus::Active, Some(&hw(3)));
        table.apply_partner(&s, &active, NOW, &mut journal).unwrap();
        let abandoned = partner(ip(4), BindingStatus::Abandoned, None);
        table
            .apply_partner(&s, &abandoned, NOW, &mut journal)
            .unwrap();

        let restarted = LeaseTable::new(&s);
        for r in &journal.0 {
            assert!(restarted.restore(&s, &r.change()));
        }
        assert_eq!(records(&restarted), records(&table));
        assert_eq!(records(&table).len(), 4);
        assert!(records(&table).iter().all(|r| r.cltt_s != 0));
        assert_eq!(records(&table)[0].partner_expiry_s, pet);
        assert!(restarted.next_seq() > journal.0.iter().map(|r| r.seq).max().unwrap());
        // The restored failover times take part in the MCLT rule as before.
        assert_eq!(
            commit(&restarted, &s, &hw(1), ip(1), failover(86_400), NOW + 10),
            Commit::Bound {
                expires_s: pet + u64::from(MCLT)
            }
        );
    }

    #[test]
    fn failover_bindings_carry_the_client_and_status() {
        let s = small();
        let table = LeaseTable::new(&s);
        let subnet = &s.all()[0];
        let id = ClientKey::from_client_id(b"\x01router");
        table.commit(
            subnet,
            hw(1).as_bytes(),
            ip(1),
            failover(DESIRED),
            NOW,
            &mut Volatile,
        );
        table.commit(
            subnet,
            id.as_bytes(),
            ip(2),
            failover(DESIRED),
            NOW,
            &mut Volatile,
        );
        table
            .release(subnet, id.as_bytes(), ip(2), NOW + 1, &mut Volatile)
            .unwrap();
        table.commit(
            subnet,
            hw(3).as_bytes(),
            ip(3),
            failover(DESIRED),
            NOW,
            &mut Volatile,
        );
        table
            .decline(subnet, hw(3).as_bytes(), ip(3), NOW, 60, &mut Volatile)
            .unwrap();
        table
            .apply_partner(
                &s,
                &partner(ip(4), BindingStatus::Free, None),
                NOW,
                &mut Volatile,
            )
            .unwrap();
        table
            .offer(
                subnet,
                hw(5).as_bytes(),
                Some(ip(5)),
                NOW,
                30,
                failover(DESIRED),
            )
            .unwrap();

        let mut all = Vec::new();
        table.visit_bindings(|b| all.push(b));
        all.sort_by_key(|b| b.ip);
        let statuses: Vec<_> = all.iter().map(|b| (b.ip, b.status)).collect();
        assert_eq!(
            statuses,
            [
                (ip(1), BindingStatus::Active),
                (ip(2), BindingStatus::Released),
                (ip(3), BindingStatus::Abandoned),
                (ip(4), BindingStatus::Free),
            ],
            "the offer of a fresh address is not a recorded binding"
        );
        let active = &all[0];
        assert_eq!(active.hardware, HwAddr::new(1, &[2, 0, 0, 0, 0, 1]));
        assert_eq!(active.client_id, None);
        assert_eq!(
            (active.expires_s, active.cltt_s, active.stos_s),
            (NOW + 600, NOW, NOW)
        );
        assert!(active.pet_s > active.expires_s);
        assert_eq!(all[1].client_id.as_deref(), Some(&b"\x01router"[..]));
        assert_eq!(all[1].hardware, None);

        // The endpoint's view: outside the pools, no record, a record (run out: expired).
        let view = table.view(&s, NOW + 601);
        assert_eq!(view.lookup(Ipv4Addr::new(10, 0, 9, 9)), Lookup::NotInPool);
        assert_eq!(view.lookup(ip(9)), Lookup::NoRecord);
        assert_eq!(view.lookup(ip(5)), Lookup::NoRecord);
        let Lookup::Known(b) = view.lookup(ip(1)) else {
            panic!("no binding");
        };
        assert_eq!(
            (b.status, b.hardware),
            (BindingStatus::Expired, active.hardware)
        );
        let Lookup::Known(b) = table.view(&s, NOW).lookup(ip(1)) else {
            panic!("no binding");
        };
        assert_eq!(&b, active);
    }

    #[test]
    fn opposite_shares_allocate_disjoint_addresses() {
        // Two servers configured alike, one primary and one secondary, each serve 1000 new
        // clients from their own share; no address may be given out by both.
        let s = subnets([10, 0, 0, 1], [10, 0, 15, 254]);
        let subnet = &s.all()[0];
        let serve = |role: Role, first_client: u16| {
            let table = LeaseTable::with_share(&s, Some(PoolShare::new(role, 128, None)));
            let mut got = std::collections::HashSet::new();
            for n in first_client..first_client + 1000 {
                let key = hw(n);
                let offer = table
                    .offer(subnet, key.as_bytes(), None, NOW, 30, failover(DESIRED))
                    .unwrap();
                assert_eq!(PoolShare::new(role, 128, None).owner(offer.ip), role);
                let Commit::Bound { .. } =
                    commit(&table, &s, &key, offer.ip, failover(DESIRED), NOW)
                else {
                    panic!("not bound");
                };
                assert!(got.insert(offer.ip));
            }
            (table, got)
        };
        let (primary, ours) = serve(Role::Primary, 0);
        let (_, theirs) = serve(Role::Secondary, 5000);
        assert!(ours.is_disjoint(&theirs));
        // A new client may not take a free address of the partner's share here, even by asking.
        let partners = theirs.iter().next().copied().unwrap();
        assert_eq!(
            commit(&primary, &s, &hw(9000), partners, failover(DESIRED), NOW),
            Commit::NotOurs
        );
        let offered = primary
            .offer(
                subnet,
                hw(9001).as_bytes(),
                Some(partners),
                NOW,
                30,
                failover(DESIRED),
            )
            .unwrap();
        assert_ne!(offered.ip, partners);
        // But a client the partner leased it to renews it here.
        primary
            .apply_partner(
                &s,
                &partner(partners, BindingStatus::Active, Some(&hw(9002))),
                NOW,
                &mut Volatile,
            )
            .unwrap();
        assert!(matches!(
            commit(&primary, &s, &hw(9002), partners, failover(DESIRED), NOW),
            Commit::Bound { .. }
        ));
    }

    /// A primary that owns every pool address (`mine`) or none (`none`).
    fn primary_table(s: &Subnets, secondary_percent: u8) -> LeaseTable {
        LeaseTable::with_share(
            s,
            Some(PoolShare::new(Role::Primary, 128, Some(secondary_percent))),
        )
    }

    fn partner_down(since_s: u64, lease: LeaseTime) -> LeaseTime {
        LeaseTime {
            mclt_s: None,
            partner_down: Some(PartnerDown {
                since_s,
                mclt_s: MCLT,
            }),
            ..lease
        }
    }

    #[test]
    fn a_released_address_waits_for_the_partners_ack_before_another_client_gets_it() {
        let s = small();
        let subnet = &s.all()[0];
        let table = primary_table(&s, 0);
        let (a, b, at) = (hw(1), hw(2), ip(5));
        assert!(matches!(
            commit(&table, &s, &a, at, failover(DESIRED), NOW),
            Commit::Bound { .. }
        ));
        let mut log = Recorder::default();
        assert_eq!(
            table.release(subnet, a.as_bytes(), at, NOW + 10, &mut log),
            Ok(true)
        );
        // The partner may still think `a` holds it: nobody else may have it (draft §7.3) …
        assert_eq!(
            commit(&table, &s, &b, at, failover(DESIRED), NOW + 20),
            Commit::NotOurs
        );
        let offered = table
            .offer(
                subnet,
                b.as_bytes(),
                Some(at),
                NOW + 20,
                30,
                failover(DESIRED),
            )
            .unwrap();
        assert_ne!(offered.ip, at);
        // … nor is it offered to `a` again: the partner, freeing it on the RELEASED, could give
        // it to another client before it hears of a new lease. (A REQUEST of `a` to keep it
        // would be granted: see `AddrShard::available_to`.)
        let elsewhere = table
            .offer(subnet, a.as_bytes(), None, NOW + 20, 30, failover(DESIRED))
            .unwrap();
        assert_ne!(elsewhere.ip, at);
        table.forget_offer(subnet, a.as_bytes(), NOW + 21);
        // The partner acknowledges the RELEASED binding: the address is free, durably.
        let sent = to_failover_binding(&log.0[0].change());
        assert_eq!(sent.status, BindingStatus::Released);
        let mut acks = Recorder::default();
        // Not by an acknowledgement of the binding it ended.
        let bound_pet = table.get(subnet, at).unwrap().potential_expiry_s;
        table
            .partner_acked(&s, at, BindingStatus::Active, bound_pet, &mut acks)
            .unwrap();
        assert!(acks.0.is_empty());
        table
            .partner_acked(&s, at, sent.status, sent.pet_s, &mut acks)
            .unwrap();
        assert_eq!(acks.0.len(), 1);
        assert_eq!(acks.0[0].state, LeaseState::Free);
        assert!(matches!(
            commit(&table, &s, &b, at, failover(DESIRED), NOW + 30),
            Commit::Bound { .. }
        ));
        // Replaying the records gives the same answer: the Free record thaws it.
        let replayed = primary_table(&s, 0);
        for r in log.0.iter().chain(&acks.0) {
            replayed.restore(&s, &r.change());
        }
        assert!(matches!(
            commit(&replayed, &s, &b, at, failover(DESIRED), NOW + 30),
            Commit::Bound { .. }
        ));
    }

    #[test]
    fn with_a_partner_a_lease_end_is_recorded_and_frozen_until_acked() {
        let s = small();
        let subnet = &s.all()[0];
        let table = primary_table(&s, 0);
        let (a, b, at) = (hw(1), hw(2), ip(5));
        let Commit::Bound { expires_s } = commit(&table, &s, &a, at, failover(DESIRED), NOW) else {
            panic!("not bound");
        };
        // Ran out but not yet swept: still not another client's.
        assert_eq!(
            commit(&table, &s, &b, at, failover(DESIRED), expires_s + 1),
            Commit::Conflict
        );
        // A sweep without a journal (an allocation that ran dry) records nothing and ends
        // nothing; the housekeeping sweep records the end for the partner.
        let mut log = Recorder::default();
        assert_eq!(table.expire(&s, expires_s + 2, &mut log), 1);
        assert_eq!(log.0.len(), 1);
        let expired = log.0[0].clone();
        assert_eq!(
            (expired.state, expired.ip, expired.client.as_slice()),
            (LeaseState::Expired, at, a.as_bytes())
        );
        assert_eq!(
            table.expire(&s, expires_s + 3, &mut log),
            0,
            "recorded once"
        );
        let sent = to_failover_binding(&expired.change());
        assert_eq!(sent.status, BindingStatus::Expired);
        assert_eq!(
            commit(&table, &s, &b, at, failover(DESIRED), expires_s + 4),
            Commit::NotOurs
        );
        // A failing journal leaves the end to be recorded next time.
        let other = ip(6);
        let Commit::Bound { expires_s: end6 } =
            commit(&table, &s, &hw(3), other, failover(DESIRED), NOW)
        else {
            panic!("not bound");
        };
        struct Full;
        impl Journal for Full {
            fn record(&mut self, _: &Change<'_>) -> Result<(), StorageUnavailable> {
                Err(StorageUnavailable)
            }
        }
        assert_eq!(table.expire(&s, end6 + 1, &mut Full), 0);
        assert_eq!(table.expire(&s, end6 + 2, &mut log), 1);
        table
            .partner_acked(&s, at, sent.status, sent.pet_s, &mut log)
            .unwrap();
        assert_eq!(table.get(subnet, at).unwrap().state, LeaseState::Free);
        assert!(matches!(
            commit(&table, &s, &b, at, failover(DESIRED), expires_s + 5),
            Commit::Bound { .. }
        ));
    }

    #[test]
    fn a_late_request_for_an_old_address_does_not_take_back_the_new_one() {
        let s = small();
        let subnet = &s.all()[0];
        let table = LeaseTable::new(&s);
        let lease = LeaseTime::plain(DESIRED);
        let (a, b) = (hw(1), hw(2));
        assert!(matches!(
            commit(&table, &s, &a, ip(1), lease, NOW),
            Commit::Bound { .. }
        ));
        table
            .release(subnet, a.as_bytes(), ip(1), NOW + 1, &mut Volatile)
            .unwrap();
        assert!(matches!(
            commit(&table, &s, &a, ip(2), lease, NOW + 2),
            Commit::Bound { .. }
        ));
        // A renewal of ip(1) sent before the release arrives now: granted (the address is
        // free), but ip(2) stays the client's, so no other client gets it.
        assert!(matches!(
            table.confirm(subnet, a.as_bytes(), ip(1), lease, NOW + 3, &mut Volatile),
            Commit::Bound { .. }
        ));
        assert_eq!(table.get(subnet, ip(2)).unwrap().state, LeaseState::Bound);
        assert!(matches!(
            commit(&table, &s, &b, ip(2), lease, NOW + 4),
            Commit::Conflict
        ));
        // Renewing the running lease on ip(2) gives ip(1) back, as a move does.
        assert!(matches!(
            table.confirm(subnet, a.as_bytes(), ip(2), lease, NOW + 5, &mut Volatile),
            Commit::Bound { .. }
        ));
        assert_eq!(
            table.get(subnet, ip(1)).unwrap().state,
            LeaseState::Released
        );
    }

    #[test]
    fn an_end_acknowledged_while_offered_returns_the_address_to_the_primary() {
        let s = small();
        let subnet = &s.all()[0];
        let table = LeaseTable::with_share(&s, Some(PoolShare::new(Role::Secondary, 128, None)));
        let ours = |t: &LeaseTable| t.free_by_side(subnet, NOW).0;
        let at = subnet.pools[0]
            .addresses()
            .find(|&a| PoolShare::new(Role::Secondary, 128, None).owner(a) == Role::Secondary)
            .unwrap();
        let a = hw(1);
        assert!(matches!(
            commit(&table, &s, &a, at, failover(DESIRED), NOW),
            Commit::Bound { .. }
        ));
        table
            .release(subnet, a.as_bytes(), at, NOW + 10, &mut Volatile)
            .unwrap();
        let end = to_failover_binding(&table_record(&table, at).change());
        // In PARTNER-DOWN, long after, the unacknowledged end is offered to its client …
        let late = NOW + 100 * u64::from(DESIRED) + 10 * u64::from(MCLT);
        let pd = partner_down(NOW + 20, failover(DESIRED));
        let offer = table.offer(subnet, a.as_bytes(), Some(at), late, 30, pd);
        assert_eq!(offer.map(|o| o.ip), Ok(at));
        let before = ours(&table);
        // … when the partner's acknowledgement of the end arrives: now a FREE, the primary's.
        table
            .partner_acked(&s, at, end.status, end.pet_s, &mut Volatile)
            .unwrap();
        assert_eq!(table_record(&table, at).state, LeaseState::Free);
        table.forget_offer(subnet, a.as_bytes(), late + 1);
        assert_eq!(
            commit(&table, &s, &hw(3), at, failover(DESIRED), late + 2),
            Commit::NotOurs
        );
        assert_eq!(ours(&table), before, "not back in our free list");
    }

    #[test]
    fn a_restart_resends_what_the_partner_has_not_acknowledged() {
        let s = small();
        let subnet = &s.all()[0];
        let table = primary_table(&s, 0);
        let bound = |n: u16, at: Ipv4Addr, now: u64| {
            assert!(matches!(
                commit(&table, &s, &hw(n), at, failover(DESIRED), now),
                Commit::Bound { .. }
            ));
        };
        bound(1, ip(1), NOW); // never acknowledged
        bound(2, ip(2), NOW);
        ack(&table, &s, ip(2), &mut Volatile); // acknowledged
        bound(3, ip(3), NOW);
        ack(&table, &s, ip(3), &mut Volatile);
        bound(3, ip(3), NOW + 100); // renewed since: a new PET to send
        bound(4, ip(4), NOW);
        table
            .release(subnet, hw(4).as_bytes(), ip(4), NOW + 5, &mut Volatile)
            .unwrap(); // an end not acknowledged
        bound(5, ip(5), NOW);
        table
            .release(subnet, hw(5).as_bytes(), ip(5), NOW + 5, &mut Volatile)
            .unwrap();
        let end = to_failover_binding(&table_record(&table, ip(5)).change());
        table
            .partner_acked(&s, ip(5), end.status, end.pet_s, &mut Volatile)
            .unwrap(); // an acknowledged end: Free
        table
            .apply_partner(
                &s,
                &partner(ip(6), BindingStatus::Active, Some(&hw(6))),
                NOW,
                &mut Volatile,
            )
            .unwrap(); // the partner's own
        let mut resent = Vec::new();
        table.visit_unacknowledged_bindings(|b| resent.push((b.ip, b.status)));
        resent.sort_by_key(|r| r.0);
        assert_eq!(
            resent,
            [
                (ip(1), BindingStatus::Active),
                (ip(3), BindingStatus::Active),
                (ip(4), BindingStatus::Released)
            ]
        );
    }

    #[test]
    fn without_a_partner_an_ended_lease_is_free_at_once_and_expiries_are_not_recorded() {
        let s = small();
        let table = LeaseTable::new(&s);
        let (a, b, at) = (hw(1), hw(2), ip(5));
        let Commit::Bound { expires_s } =
            commit(&table, &s, &a, at, LeaseTime::plain(DESIRED), NOW)
        else {
            panic!("not bound");
        };
        let mut log = Recorder::default();
        assert_eq!(table.expire(&s, expires_s + 1, &mut log), 1);
        assert!(log.0.is_empty());
        assert!(matches!(
            commit(&table, &s, &b, at, LeaseTime::plain(DESIRED), expires_s + 1),
            Commit::Bound { .. }
        ));
    }

    #[test]
    fn in_partner_down_an_unacknowledged_end_is_reusable_mclt_after_what_the_partner_knows() {
        let s = small();
        let subnet = &s.all()[0];
        let table = primary_table(&s, 0);
        let (a, b, at) = (hw(1), hw(2), ip(5));
        assert!(matches!(
            commit(&table, &s, &a, at, failover(DESIRED), NOW),
            Commit::Bound { .. }
        ));
        let acked = ack(&table, &s, at, &mut Volatile);
        table
            .release(subnet, a.as_bytes(), at, NOW + 10, &mut Volatile)
            .unwrap();
        let since = NOW + 20;
        // The partner acknowledged a PET of `acked`: it may believe in the lease until then.
        let ready = acked + u64::from(MCLT);
        assert_eq!(
            commit(
                &table,
                &s,
                &b,
                at,
                partner_down(since, failover(DESIRED)),
                ready - 1
            ),
            Commit::NotOurs
        );
        assert!(matches!(
            commit(
                &table,
                &s,
                &b,
                at,
                partner_down(since, failover(DESIRED)),
                ready
            ),
            Commit::Bound { .. }
        ));
        // An address leased and released in PARTNER-DOWN, never told: free at once.
        let other = ip(7);
        let now = ready + 100;
        assert!(matches!(
            commit(
                &table,
                &s,
                &hw(3),
                other,
                partner_down(since, failover(DESIRED)),
                now
            ),
            Commit::Bound { .. }
        ));
        table
            .release(subnet, hw(3).as_bytes(), other, now + 1, &mut Volatile)
            .unwrap();
        assert!(matches!(
            commit(
                &table,
                &s,
                &hw(4),
                other,
                partner_down(since, failover(DESIRED)),
                now + 2
            ),
            Commit::Bound { .. }
        ));
        // Outside PARTNER-DOWN the same address is frozen.
        table
            .release(subnet, hw(4).as_bytes(), other, now + 3, &mut Volatile)
            .unwrap();
        assert_eq!(
            commit(&table, &s, &hw(5), other, failover(DESIRED), now + 4),
            Commit::NotOurs
        );
    }

    #[test]
    fn in_partner_down_the_partners_share_opens_after_mclt() {
        let s = small();
        let subnet = &s.all()[0];
        let table = primary_table(&s, 100); // every free address is the secondary's
        let since = NOW;
        let offer = |n: u16, lease: LeaseTime, now: u64| {
            table.offer(subnet, hw(n).as_bytes(), None, now, 30, lease)
        };
        assert_eq!(
            offer(1, failover(DESIRED), NOW),
            Err(DropReason::PoolExhausted)
        );
        let pd = partner_down(since, failover(DESIRED));
        let open = since + u64::from(MCLT);
        assert_eq!(offer(1, pd, open - 1), Err(DropReason::PoolExhausted));
        let got = offer(1, pd, open).unwrap();
        assert_eq!(
            PoolShare::new(Role::Primary, 128, Some(100)).owner(got.ip),
            Role::Secondary
        );
        assert!(matches!(
            commit(&table, &s, &hw(1), got.ip, pd, open),
            Commit::Bound { .. }
        ));
        // An ended binding of the partner's, in PARTNER-DOWN: found once its wait is over.
        let theirs = ip(9);
        let mut ended = partner(theirs, BindingStatus::Active, Some(&hw(8)));
        ended.expires_s = NOW - 50;
        ended.pet_s = NOW - 50;
        table
            .apply_partner(&s, &ended, NOW - 60, &mut Volatile)
            .unwrap();
        table.expire(&s, open + 1, &mut Volatile);
        assert_eq!(
            table.get(subnet, theirs).unwrap().state,
            LeaseState::Expired
        );
        let mut seen = std::collections::HashSet::new();
        for n in 100..400 {
            match offer(n, pd, open + 2) {
                Ok(o) => {
                    seen.insert(o.ip);
                    assert!(matches!(
                        commit(&table, &s, &hw(n), o.ip, pd, open + 2),
                        Commit::Bound { .. }
                    ));
                }
                Err(_) => break,
            }
        }
        assert!(
            seen.contains(&theirs),
            "the thawed address was never offered"
        );
    }

    #[test]
    fn surplus_is_what_we_hold_beyond_our_share_past_a_15_percent_slack() {
        let primary = PoolShare::new(Role::Primary, 128, None);
        let secondary = PoolShare::new(Role::Secondary, 128, None);
        assert_eq!(primary.surplus(100, 0), 50);
        assert_eq!(
            primary.surplus(57, 43),
            0,
            "within 15 % of the partner's 50"
        );
        assert_eq!(primary.surplus(60, 40), 10);
        assert_eq!(secondary.surplus(70, 30), 20);
        assert_eq!(secondary.surplus(30, 70), 0);
        let standby = PoolShare::new(Role::Primary, 255, None);
        assert_eq!(standby.surplus(1000, 0), 100);
        assert_eq!(standby.surplus(910, 90), 0);
        assert_eq!(primary.surplus(0, 0), 0);
        assert_eq!(primary.surplus(1, 0), 0);
    }

    #[test]
    fn rebalancing_moves_free_addresses_to_the_partner_and_neither_allocates_one_twice() {
        let s = subnets([10, 0, 1, 1], [10, 0, 1, 200]);
        let subnet = &s.all()[0];
        // As with ISC dhcpd: every free address starts the primary's.
        let isc = |role| PoolShare {
            split_fresh: false,
            ..PoolShare::new(role, 128, None)
        };
        let primary = LeaseTable::with_share(&s, Some(isc(Role::Primary)));
        let secondary = LeaseTable::with_share(&s, Some(isc(Role::Secondary)));
        assert_eq!(
            secondary.offer(subnet, hw(1).as_bytes(), None, NOW, 30, failover(DESIRED)),
            Err(DropReason::PoolExhausted)
        );
        assert_eq!(primary.free_by_side(subnet, NOW), (200, 0));
        let mut log = Recorder::default();
        let given = primary.rebalance(&s, NOW, &mut log);
        assert_eq!(given.len(), 100);
        assert!(given.iter().all(|b| b.status == BindingStatus::Backup));
        assert_eq!(log.0.len(), 100, "recorded before it is sent");
        assert_eq!(primary.free_by_side(subnet, NOW), (100, 100));
        assert!(primary.rebalance(&s, NOW, &mut log).is_empty(), "balanced");
        // A restart resends gifts the partner never acknowledged, never acknowledged ones.
        let unacknowledged = || {
            let mut n = 0;
            primary.visit_unacknowledged_bindings(|b| {
                assert_eq!(b.status, BindingStatus::Backup);
                n += 1;
            });
            n
        };
        assert_eq!(unacknowledged(), 100);
        for b in &given[..60] {
            primary
                .partner_acked(&s, b.ip, b.status, b.pet_s, &mut Volatile)
                .unwrap();
        }
        assert_eq!(unacknowledged(), 40);
        for b in &given {
            secondary.apply_partner(&s, b, NOW, &mut Volatile).unwrap();
        }
        assert_eq!(secondary.free_by_side(subnet, NOW), (100, 100));
        // Each side allocates everything it may: no address twice.
        let drain = |table: &LeaseTable, first: u16| {
            let mut got = std::collections::HashSet::new();
            for n in first.. {
                let Ok(offer) =
                    table.offer(subnet, hw(n).as_bytes(), None, NOW, 30, failover(DESIRED))
                else {
                    break;
                };
                assert!(matches!(
                    commit(table, &s, &hw(n), offer.ip, failover(DESIRED), NOW),
                    Commit::Bound { .. }
                ));
                assert!(got.insert(offer.ip));
            }
            got
        };
        let ours = drain(&primary, 0);
        let theirs = drain(&secondary, 1000);
        assert_eq!((ours.len(), theirs.len()), (100, 100));
        assert!(ours.is_disjoint(&theirs));
        let given: std::collections::HashSet<Ipv4Addr> = given.iter().map(|b| b.ip).collect();
        assert_eq!(theirs, given);
        // The records put the owner back on replay.
        let replayed = LeaseTable::with_share(&s, Some(isc(Role::Primary)));
        for r in &log.0 {
            replayed.restore(&s, &r.change());
        }
        assert_eq!(replayed.free_by_side(subnet, NOW), (100, 100));
        // A secondary holding too many gives the surplus back as FREE.
        let rich = LeaseTable::with_share(&s, Some(isc(Role::Secondary)));
        for ip in subnet.pools[0].addresses().take(150) {
            let mut b = Binding::new(ip, BindingStatus::Backup);
            b.stos_s = NOW;
            rich.apply_partner(&s, &b, NOW, &mut Volatile).unwrap();
        }
        let back = rich.rebalance(&s, NOW, &mut Volatile);
        assert_eq!(back.len(), 50);
        assert!(back.iter().all(|b| b.status == BindingStatus::Free));
        assert_eq!(rich.free_by_side(subnet, NOW), (100, 100));
    }

    #[test]
    fn a_restarted_secondary_resends_only_the_free_gifts_never_acknowledged() {
        let s = subnets([10, 0, 0, 1], [10, 0, 0, 200]);
        let subnet = &s.all()[0];
        let share = PoolShare {
            split_fresh: false,
            ..PoolShare::new(Role::Secondary, 128, None)
        };
        let rich = LeaseTable::with_share(&s, Some(share));
        for ip in subnet.pools[0].addresses().take(150) {
            let mut b = Binding::new(ip, BindingStatus::Backup);
            b.stos_s = NOW;
            rich.apply_partner(&s, &b, NOW, &mut Volatile).unwrap();
        }
        // The partner's own FREE and an acknowledged end are not news to it.
        let freed = subnet.pools[0].addresses().nth(190).unwrap();
        let mut free = Binding::new(freed, BindingStatus::Free);
        free.stos_s = NOW;
        rich.apply_partner(&s, &free, NOW, &mut Volatile).unwrap();
        let back = rich.rebalance(&s, NOW, &mut Volatile);
        assert_eq!(back.len(), 50);
        let acked = &back[..10];
        for b in acked {
            rich.partner_acked(&s, b.ip, b.status, b.pet_s, &mut Volatile)
                .unwrap();
        }
        let mut resent = Vec::new();
        rich.visit_unacknowledged_bindings(|b| resent.push(b.ip));
        resent.sort();
        let mut expected: Vec<Ipv4Addr> = back[10..].iter().map(|b| b.ip).collect();
        expected.sort();
        assert_eq!(resent, expected);
    }

    #[test]
    fn shares_split_by_the_configured_fraction() {
        let pool = (u32::from(Ipv4Addr::new(10, 0, 0, 1))
            ..=u32::from(Ipv4Addr::new(10, 0, 15, 254)))
            .map(Ipv4Addr::from);
        let count = |share: PoolShare| {
            pool.clone()
                .filter(|&a| share.owner(a) == Role::Secondary)
                .count()
        };
        let total = pool.clone().count();
        let balanced = count(PoolShare::new(Role::Primary, 128, None));
        let standby = count(PoolShare::new(Role::Primary, 255, None));
        assert!(
            balanced.abs_diff(total / 2) < total / 20,
            "{balanced} of {total}"
        );
        assert!(
            standby.abs_diff(total / 10) < total / 20,
            "{standby} of {total}"
        );
        assert_eq!(count(PoolShare::new(Role::Primary, 128, Some(0))), 0);
        assert_eq!(
            count(PoolShare::new(Role::Primary, 128, Some(250))),
            total,
            "capped at 100 %"
        );
    }

    #[test]
    fn slot_size() {
        assert_eq!(std::mem::size_of::<Slot>(), 56);
    }
}

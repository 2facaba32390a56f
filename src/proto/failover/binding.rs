//! Bindings as the failover core sees them, the coalescing update queue, the BNDUPD acceptance
//! rules (draft §7.1.3) and the MCLT lease-time rule (draft §5.2.1, §7.1.5).

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use super::config::Role;
use crate::proto::wire::failover::{BindingStatus, RejectReason};

/// A client hardware address (option 5): htype then up to 16 bytes of chaddr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HwAddr {
    pub htype: u8,
    len: u8,
    addr: [u8; 16],
}

impl HwAddr {
    /// `None` when `addr` is longer than 16 bytes.
    pub fn new(htype: u8, addr: &[u8]) -> Option<HwAddr> {
        let mut a = [0; 16];
        a.get_mut(..addr.len())?.copy_from_slice(addr);
        Some(HwAddr {
            htype,
            len: addr.len() as u8, // ≤ 16, checked above
            addr: a,
        })
    }

    pub fn addr(&self) -> &[u8] {
        &self.addr[..usize::from(self.len)]
    }
}

/// One address's binding: what a worker hands the core after a lease change
/// ([`BindingChange`]) and what the core hands the lease table from a partner's BNDUPD
/// ([`super::Output::ApplyBinding`]). Times are seconds since 1970 UTC; 0 = absent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    pub ip: Ipv4Addr,
    pub status: BindingStatus,
    /// IP-flags (option 12), draft meaning (R = 0x1, B = 0x2).
    pub flags: u16,
    pub hardware: Option<HwAddr>,
    pub client_id: Option<Box<[u8]>>,
    /// lease-expiration-time: the end told to the client.
    pub expires_s: u64,
    /// potential-expiration-time sent to (or received from) the partner.
    pub pet_s: u64,
    /// client-last-transaction-time.
    pub cltt_s: u64,
    /// start-time-of-state.
    pub stos_s: u64,
}

/// A local lease change to replicate.
pub type BindingChange = Binding;

impl Binding {
    /// A binding with only address and status set.
    pub fn new(ip: Ipv4Addr, status: BindingStatus) -> Binding {
        Binding {
            ip,
            status,
            flags: 0,
            hardware: None,
            client_id: None,
            expires_s: 0,
            pet_s: 0,
            cltt_s: 0,
            stos_s: 0,
        }
    }

    /// Same client: client-identifier when both have one, else hardware address.
    pub fn same_client(&self, other: &Binding) -> bool {
        match (&self.client_id, &other.client_id) {
            (Some(a), Some(b)) => a == b,
            _ => self.hardware == other.hardware,
        }
    }
}

// ------------------------------------------------------------------------------------------
// MCLT
// ------------------------------------------------------------------------------------------

/// The latest lease end a server may give a client (draft §5.2.1 "actual < acked-PET + MCLT",
/// relaxed by §7.1.5 to the larger of now and the acknowledged partner expiration):
/// `min(desired_end, max(now, ack_partner_expiry) + mclt)`.
///
/// - A brand-new lease (`ack_partner_expiry` 0) gets at most `now + mclt`.
/// - If `desired_end ≤ now + mclt` there is no restriction (ISC: "desired ≤ MCLT").
/// - Once the partner has acknowledged a PET, the client may run up to MCLT beyond it.
///
/// Pass the received-PET instead of (or max'ed with) the acked-PET to use §7.1.5's wider bound;
/// in PARTNER-DOWN a server may ignore this bound (§9.4.2). All values are seconds.
pub fn max_lease_end(now: u64, ack_partner_expiry: u64, desired_end: u64, mclt: u64) -> u64 {
    let bound = now.max(ack_partner_expiry).saturating_add(mclt);
    desired_end.min(bound)
}

/// The potential-expiration-time to send after granting `actual_s` of a `desired_s` lease
/// (draft §5.2.1 example, ISC `tstp`): `now + desired + actual / 2`.
pub fn potential_expiration(now: u64, desired_s: u64, actual_s: u64) -> u64 {
    now.saturating_add(desired_s).saturating_add(actual_s / 2)
}

// ------------------------------------------------------------------------------------------
// The update queue
// ------------------------------------------------------------------------------------------

/// A queued change with its sequence number (for UPDREQ "pending when the request arrived").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Queued {
    pub seq: u64,
    pub binding: Binding,
}

/// Binding changes not yet sent, oldest first.
///
/// **Bound / full policy: coalesce by address.** A change for an address that is already
/// queued replaces the queued one in place (same position, same sequence number): the partner
/// only needs the latest state of an address, so nothing is lost, and the queue never holds
/// more entries than there are distinct addresses. An address whose update is *in flight*
/// (sent, not yet acknowledged) is queued anew behind the others. Sequence numbers are strictly
/// increasing from front to back.
#[derive(Debug, Default)]
pub(crate) struct UpdateQueue {
    order: VecDeque<(u64, Ipv4Addr)>,
    entries: HashMap<Ipv4Addr, Binding>,
    next_seq: u64,
}

impl UpdateQueue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sequence number the last pushed change got (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn front_seq(&self) -> Option<u64> {
        self.order.front().map(|&(s, _)| s)
    }

    /// Queues (or coalesces) a change.
    pub fn push(&mut self, binding: Binding) {
        let ip = binding.ip;
        if let Some(slot) = self.entries.get_mut(&ip) {
            *slot = binding;
            return;
        }
        self.next_seq += 1;
        self.order.push_back((self.next_seq, ip));
        self.entries.insert(ip, binding);
    }

    /// The change queued for `ip`, if any.
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Binding> {
        self.entries.get(&ip)
    }

    pub fn pop(&mut self) -> Option<Queued> {
        let (seq, ip) = self.order.pop_front()?;
        // Invariant: `order` and `entries` hold the same addresses.
        let binding = self.entries.remove(&ip)?;
        Some(Queued { seq, binding })
    }

    /// Puts unacknowledged updates back at the front (after a lost connection), oldest first
    /// in `items`. An item whose address has a newer queued change is dropped: the newer one
    /// supersedes it.
    pub fn requeue_front(&mut self, items: Vec<Queued>) {
        for q in items.into_iter().rev() {
            if self.entries.contains_key(&q.binding.ip) {
                continue;
            }
            debug_assert!(self.front_seq().is_none_or(|f| q.seq < f));
            self.order.push_front((q.seq, q.binding.ip));
            self.entries.insert(q.binding.ip, q.binding);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Receiving BNDUPD: what we know locally, and the acceptance table
// ------------------------------------------------------------------------------------------

/// What the lease table knows about an address, for the conflict analysis of a received
/// BNDUPD (draft §7.1.2–§7.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not in any pool of this relationship → reject 1.
    NotInPool,
    /// In a pool, no lease record (treated as FREE/BACKUP: anything is accepted).
    NoRecord,
    Known(Binding),
}

/// The caller's view of its lease table (read only).
pub trait LocalBindings {
    fn lookup(&self, ip: Ipv4Addr) -> Lookup;
}

/// No local knowledge: every address is in a pool with no record, so every well-formed update
/// is accepted. Only for a server that truly keeps nothing else (tests, a fresh secondary).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLocalBindings;

impl LocalBindings for NoLocalBindings {
    fn lookup(&self, _ip: Ipv4Addr) -> Lookup {
        Lookup::NoRecord
    }
}

/// A map of every address of the relationship's pools to its binding.
impl LocalBindings for HashMap<Ipv4Addr, Binding> {
    fn lookup(&self, ip: Ipv4Addr) -> Lookup {
        match self.get(&ip) {
            Some(b) => Lookup::Known(b.clone()),
            None => Lookup::NoRecord,
        }
    }
}

impl<T: LocalBindings + ?Sized> LocalBindings for &T {
    fn lookup(&self, ip: Ipv4Addr) -> Lookup {
        (**self).lookup(ip)
    }
}

/// Content checks of one received update (draft Table 7.1-1 MUSTs): status known; client
/// information for ACTIVE/EXPIRED/RELEASED; lease-expiration-time for ACTIVE.
pub fn check_complete(update: &Binding) -> Result<(), RejectReason> {
    use BindingStatus as B;
    match update.status {
        B::Unknown(_) => Err(RejectReason::MissingBindingInformation),
        B::Active if update.expires_s == 0 => Err(RejectReason::MissingBindingInformation),
        B::Active | B::Expired | B::Released
            if update.hardware.is_none() && update.client_id.is_none() =>
        {
            Err(RejectReason::MissingBindingInformation)
        }
        _ => Ok(()),
    }
}

/// The acceptance table of draft §7.1.3 (Figure 7.1.3-1; spec note §9): rows are the status in
/// our database, columns the status in the BNDUPD. Rejects: time(1)/(2)/(3) → 15 (outdated),
/// ABANDONED row → 16 (less critical), ACTIVE vs ACTIVE with another client → the primary
/// rejects with 2, the secondary accepts.
///
/// - time(1): the update's CLTT is later than ours.
/// - time(2): `now_s` is later than our lease-expiration-time.
/// - time(3): the update's CLTT is later than our start-time-of-state.
/// - "Later": an update without CLTT is never later; if only the update has one it is later.
/// - Beyond the table: an ACTIVE update whose lease already ended is outdated against a running
///   ACTIVE of another client, whichever side sends it.
///
/// Not implemented here (left to part 2 / the caller): ISC's "dueling updates" rule for an
/// address awaiting our own BNDACK, the R/B flag checks (reject 19), one-client-two-addresses.
pub fn accept_update(
    role: Role,
    local: Option<&Binding>,
    update: &Binding,
    now_s: u64,
) -> Result<(), RejectReason> {
    use BindingStatus as B;
    check_complete(update)?;
    let Some(local) = local else {
        return Ok(());
    };
    let later = |ours: u64| update.cltt_s != 0 && (ours == 0 || update.cltt_s > ours);
    let outdated = Err(RejectReason::OutdatedBindingInformation);
    let time1 = || {
        if later(local.cltt_s) {
            Ok(())
        } else {
            outdated
        }
    };
    let time2 = || {
        if now_s > local.expires_s {
            Ok(())
        } else {
            outdated
        }
    };
    let time3 = || {
        if later(local.stos_s) {
            Ok(())
        } else {
            outdated
        }
    };
    match (local.status, update.status) {
        (B::Active, B::Active) => {
            if local.same_client(update) {
                Ok(())
            } else if update.expires_s <= now_s && local.expires_s > now_s {
                // An ACTIVE that ended before it reached us (resent after a restart, say) has
                // no claim on the address; the running lease of another client stays.
                outdated
            } else if role == Role::Secondary {
                Ok(())
            } else {
                Err(RejectReason::FatalConflict)
            }
        }
        (B::Active, B::Expired) => time2(),
        (B::Active, B::Released) => time1(),
        (B::Active, B::Free | B::Backup) => time2(),
        (B::Active, _) => Ok(()), // RESET, ABANDONED
        (B::Expired, B::Active) => time1(),
        (B::Expired, _) => Ok(()),
        (B::Released, B::Active | B::Expired) => time1(),
        (B::Released, _) => Ok(()),
        (B::Reset, B::Active) => time3(),
        (B::Reset, _) => Ok(()),
        (B::Abandoned, B::Reset | B::Abandoned) => Ok(()),
        (B::Abandoned, _) => Err(RejectReason::LessCriticalBindingInformation),
        (B::Free | B::Backup | B::Unknown(_), _) => Ok(()),
    }
}

// ------------------------------------------------------------------------------------------
// Microsoft binding-status / IP-flags ([MS-DHCPF] §3.1.4.2)
// ------------------------------------------------------------------------------------------

pub(crate) mod ms_status {
    use super::BindingStatus as B;
    use crate::proto::wire::failover::options::ms;

    /// (binding-status byte, IP-flags) to send to a Windows partner.
    pub fn encode(status: B) -> (u8, u16) {
        match status {
            B::Active => (ms::STATE_ACTIVE, 0),
            B::Expired => (ms::STATE_DOOM, 0),
            B::Released => (ms::STATE_ACTIVE, ms::IP_FLAG_ADDRESS_RELEASED),
            B::Abandoned => (ms::STATE_DECLINED, 0),
            // Address-pool ownership: IP-flags 0 and FREE (primary) / BACKUP (secondary).
            B::Free | B::Reset | B::Unknown(_) => (ms::ADDRESS_FREE, 0),
            B::Backup => (ms::ADDRESS_BACKUP, 0),
        }
    }

    /// The seed's receiver mapping, evaluated in its order. `has_record`: we hold a lease
    /// record for the address (the seed's disambiguation of 1 = FREE/ACTIVE, 2 = BACKUP/DECLINED).
    pub fn decode(raw: u8, flags: u16, has_record: bool) -> B {
        let free = [
            ms::ADDRESS_FREE,
            ms::ADDRESS_FREE_UPDATE,
            ms::ADDRESS_RECONCILE,
        ];
        let backup = [ms::ADDRESS_BACKUP, ms::ADDRESS_BACKUP_UPDATE];
        if free.contains(&raw) && !has_record {
            B::Free
        } else if backup.contains(&raw) && !has_record {
            B::Backup
        } else if flags & ms::IP_FLAG_ADDRESS_RELEASED != 0 {
            B::Released
        } else if raw & ms::STATE_MASK == ms::STATE_DOOM
            || raw & ms::STATE_MASK == ms::STATE_DECLINED
        {
            B::Expired
        } else {
            B::Active
        }
    }
}

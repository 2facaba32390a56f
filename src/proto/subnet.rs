//! Subnets, pools and reservations as the server uses them, and the choice of subnet for a packet.

use std::net::Ipv4Addr;

use super::lease::ClientKey;

/// An inclusive range of addresses handed out dynamically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    /// Every address of the pool, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }

    /// How many addresses the pool has.
    pub fn size(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }
}

/// A fixed address for one client, by hardware address or client identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub client: ClientKey,
    pub ip: Ipv4Addr,
}

/// One configured subnet. Invariants (checked by `config`): pools and reservations lie inside
/// the prefix; pools do not overlap; `t1_s <= t2_s < lease_time_s`; `min_lease_time_s <=
/// lease_time_s <= max_lease_time_s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// Position in [`Subnets`]; the lease table keys its per-subnet state by it.
    pub id: usize,
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    pub pools: Vec<Pool>,
    pub reservations: Vec<Reservation>,
    pub lease_time_s: u32,
    pub min_lease_time_s: u32,
    pub max_lease_time_s: u32,
    pub t1_s: u32,
    pub t2_s: u32,
    /// Encoded options to offer clients (code, value), in the order they were configured. Never
    /// holds the options the server writes itself (53, 54, 51, 58, 59, 82, 52).
    pub options: Vec<(u8, Box<[u8]>)>,
}

impl Subnet {
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & prefix_mask(self.prefix_len) == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !prefix_mask(self.prefix_len))
    }

    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.pools.iter().any(|p| p.contains(ip))
    }

    /// The address reserved for a client (by its key bytes, see [`ClientKey`]).
    pub fn reservation_for(&self, client: &[u8]) -> Option<Ipv4Addr> {
        self.reservations
            .iter()
            .find(|r| r.client.as_bytes() == client)
            .map(|r| r.ip)
    }

    /// The client an address is reserved for, if any.
    pub fn reserved_to(&self, ip: Ipv4Addr) -> Option<&ClientKey> {
        self.reservations
            .iter()
            .find(|r| r.ip == ip)
            .map(|r| &r.client)
    }

    /// Lease time to grant: the client's wish (option 51) clamped to the subnet's bounds.
    pub fn grant_lease_time_s(&self, requested_s: Option<u32>) -> u32 {
        requested_s
            .unwrap_or(self.lease_time_s)
            .clamp(self.min_lease_time_s, self.max_lease_time_s)
    }
}

pub fn prefix_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

/// All configured subnets, and the RFC 2131 rules for which one a packet belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subnets {
    list: Vec<Subnet>,
}

impl Subnets {
    /// `list[i].id` must be `i`.
    pub fn new(list: Vec<Subnet>) -> Self {
        debug_assert!(list.iter().enumerate().all(|(i, s)| s.id == i));
        Subnets { list }
    }

    pub fn all(&self) -> &[Subnet] {
        &self.list
    }

    pub fn get(&self, id: usize) -> Option<&Subnet> {
        self.list.get(id)
    }

    /// The most specific subnet containing `ip`.
    pub fn containing(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.list
            .iter()
            .filter(|s| s.contains(ip))
            .max_by_key(|s| s.prefix_len)
    }

    /// The subnet a request belongs to: the relay's (giaddr) when relayed (RFC 2131 §4.3.1), else
    /// the client's own address for a renewal (ciaddr), else the address of the interface the
    /// request arrived on.
    pub fn select(
        &self,
        giaddr: Ipv4Addr,
        ciaddr: Ipv4Addr,
        local_addr: Ipv4Addr,
    ) -> Option<&Subnet> {
        if !giaddr.is_unspecified() {
            return self.containing(giaddr);
        }
        if !ciaddr.is_unspecified() {
            if let Some(subnet) = self.containing(ciaddr) {
                return Some(subnet);
            }
        }
        self.containing(local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: usize, net: [u8; 4], len: u8) -> Subnet {
        Subnet {
            id,
            network: Ipv4Addr::from(net),
            prefix_len: len,
            pools: vec![],
            reservations: vec![],
            lease_time_s: 3600,
            min_lease_time_s: 60,
            max_lease_time_s: 86400,
            t1_s: 1800,
            t2_s: 3150,
            options: vec![],
        }
    }

    #[test]
    fn selection_prefers_giaddr_then_ciaddr_then_interface() {
        let subnets = Subnets::new(vec![
            subnet(0, [10, 0, 0, 0], 16),
            subnet(1, [10, 1, 0, 0], 16),
            subnet(2, [192, 168, 0, 0], 24),
        ]);
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let relay = Ipv4Addr::new(10, 1, 0, 1);
        let client = Ipv4Addr::new(10, 0, 3, 4);
        let iface = Ipv4Addr::new(192, 168, 0, 1);
        assert_eq!(subnets.select(relay, client, iface).unwrap().id, 1);
        assert_eq!(subnets.select(unspecified, client, iface).unwrap().id, 0);
        assert_eq!(
            subnets.select(unspecified, unspecified, iface).unwrap().id,
            2
        );
        // A relay we have no subnet for is not served from the interface's subnet.
        assert!(subnets
            .select(Ipv4Addr::new(172, 16, 0, 1), unspecified, iface)
            .is_none());
    }

    #[test]
    fn most_specific_subnet_wins() {
        let subnets = Subnets::new(vec![
            subnet(0, [10, 0, 0, 0], 8),
            subnet(1, [10, 5, 0, 0], 16),
        ]);
        assert_eq!(
            subnets.containing(Ipv4Addr::new(10, 5, 1, 1)).unwrap().id,
            1
        );
        assert_eq!(
            subnets.containing(Ipv4Addr::new(10, 6, 1, 1)).unwrap().id,
            0
        );
    }

    #[test]
    fn lease_time_is_clamped() {
        let s = subnet(0, [10, 0, 0, 0], 8);
        assert_eq!(s.grant_lease_time_s(None), 3600);
        assert_eq!(s.grant_lease_time_s(Some(5)), 60);
        assert_eq!(s.grant_lease_time_s(Some(u32::MAX)), 86400);
        assert_eq!(s.mask(), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 255, 255, 255));
    }
}

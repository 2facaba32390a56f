//! Which IPv4 address each interface has: a broadcast request is served from the subnet of the
//! interface it arrived on (RFC 2131 §4.3.1), and the datagram only tells us the interface index.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How often an unknown interface index may trigger a fresh look at the system's addresses.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Interface index → first IPv4 address, refreshed when an unknown index shows up.
pub struct InterfaceAddresses {
    by_index: HashMap<u32, Ipv4Addr>,
    refreshed_at: Option<Instant>,
}

impl InterfaceAddresses {
    pub fn new() -> Self {
        let mut this = InterfaceAddresses {
            by_index: HashMap::new(),
            refreshed_at: None,
        };
        this.refresh();
        this
    }

    /// The address of interface `ifindex`, or unspecified if it has none.
    pub fn address_of(&mut self, ifindex: u32) -> Ipv4Addr {
        if let Some(&ip) = self.by_index.get(&ifindex) {
            return ip;
        }
        if self
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= REFRESH_INTERVAL)
        {
            self.refresh();
        }
        self.by_index
            .get(&ifindex)
            .copied()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn refresh(&mut self) {
        self.refreshed_at = Some(Instant::now());
        self.by_index = read_interface_addresses();
    }
}

impl Default for InterfaceAddresses {
    fn default() -> Self {
        Self::new()
    }
}

fn read_interface_addresses() -> HashMap<u32, Ipv4Addr> {
    let mut found = HashMap::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own and free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the family it names.
        let family = unsafe { (*entry.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET ifa_addr is a sockaddr_in.
        let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let index = unsafe { libc::if_nametoindex(entry.ifa_name) };
        if index != 0 {
            found.entry(index).or_insert(ip);
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

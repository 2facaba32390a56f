//! The server's decisions (RFC 2131 §4.3), as pure functions of a request, the lease table and
//! `now`.
//!
//! Contract with the shell: for each valid datagram call [`Server::decide`] with the address of
//! the interface it arrived on; for a [`Decision::Reply`] call [`Server::write_reply`] into a send
//! buffer and send it to [`Reply::destination`]. Call [`Server::expire`] about once a second.
//! Nothing here reads a clock or touches a socket or file.
//!
//! With a failover partner ([`Server::with_failover`]) each request first passes the
//! [`ServiceGate`], which the failover thread keeps at the relationship's state: it decides
//! whether the request is answered at all and whether the MCLT bounds the lease time. Offers
//! and ACKs carry the lease time actually granted, which the MCLT may have cut.

use std::net::Ipv4Addr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::failover::{Admitted, ServiceGate};
use super::lease::{
    lease_time_s, ClientKeyBuf, Commit, Journal, LeaseTable, LeaseTime, Offer, PoolShare,
    StorageUnavailable,
};
use super::subnet::{Subnet, Subnets};
use super::wire::dhcp::{MessageType, Packet, PacketWriter};
use super::wire::options::code;
use super::wire::DropReason;

/// Settings the decisions need, besides subnets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Option 54 of every reply; requests naming another server are not for us.
    pub server_id: Ipv4Addr,
    /// How long an offered address is held for the client it was offered to.
    pub offer_hold_s: u32,
    /// How long a declined address stays out of use.
    pub decline_hold_s: u32,
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To the relay agent at giaddr, on the server port.
    Relay(Ipv4Addr),
    /// To the client's own address (ciaddr), on the client port.
    Unicast(Ipv4Addr),
    /// To 255.255.255.255 on the client port, out of the interface the request came in on.
    /// Also used where RFC 2131 allows a unicast to yiaddr: that needs an ARP entry for a client
    /// with no address yet, which only a packet socket can provide.
    Broadcast,
}

/// A reply to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub message_type: MessageType,
    pub yiaddr: Ipv4Addr,
    pub ciaddr: Ipv4Addr,
    /// Lease time granted (OFFER, ACK of a lease); None for NAK and the ACK of an INFORM.
    pub lease_time_s: Option<u32>,
    /// The subnet whose options go into the reply (None for NAK).
    pub subnet: Option<usize>,
    pub destination: Destination,
    /// Set the broadcast bit (a NAK through a relay, RFC 2131 §4.3.2).
    pub set_broadcast_flag: bool,
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Reply(Reply),
    /// Handled, and the protocol has no reply for it (RELEASE, DECLINE).
    Done,
    /// Not answered, for this reason.
    Drop(DropReason),
}

/// The settings a reload may change while the server runs: the policy and the subnets. The
/// structural parts (subnet ids, prefixes, pools, reservations, server id) must stay as they
/// were when the lease table was built; [`Server::reload`] checks that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub policy: Policy,
    pub subnets: Subnets,
}

/// The DHCP server's state: configuration, policy and the shared lease table.
///
/// The policy and subnets sit behind an [`ArcSwap`]: each request loads them once (no lock, a
/// few atomic operations), so a reload swaps them in between two packets of a worker without
/// stopping it.
pub struct Server {
    settings: ArcSwap<Settings>,
    pub leases: LeaseTable,
    /// The failover state as it concerns clients; `None` without failover.
    gate: Option<Arc<ServiceGate>>,
}

impl Server {
    /// A server without failover.
    pub fn new(policy: Policy, subnets: Subnets) -> Self {
        Self::with_failover(policy, subnets, None, None)
    }

    /// A server that allocates only from its `share` of the pools and answers what `gate`
    /// allows (both set with a failover partner, both `None` without one).
    pub fn with_failover(
        policy: Policy,
        subnets: Subnets,
        share: Option<PoolShare>,
        gate: Option<Arc<ServiceGate>>,
    ) -> Self {
        let leases = LeaseTable::with_share(&subnets, share);
        Server {
            settings: ArcSwap::from_pointee(Settings { policy, subnets }),
            leases,
            gate,
        }
    }

    /// The settings in force now. Hold the guard briefly (a packet, a command); use
    /// `Arc::clone(&*server.settings())` to keep them longer.
    pub fn settings(&self) -> Guard<Arc<Settings>> {
        self.settings.load()
    }

    /// Replaces the policy and the subnets' live settings (options, lease times) without
    /// stopping the workers: packets decided before the swap use the old settings, later ones
    /// the new. Refused, with the names of the differing keys and nothing changed, if anything
    /// the lease table was built from differs: the number and order of the subnets, a prefix,
    /// the pools, the reservations, or the server id.
    pub fn reload(&self, policy: Policy, subnets: Subnets) -> Result<(), Vec<String>> {
        let new = Arc::new(Settings { policy, subnets });
        loop {
            let current = self.settings.load_full();
            let refused = structural_differences(&current, &new);
            if !refused.is_empty() {
                return Err(refused);
            }
            // Another reload between the check and the swap: check against that one.
            let previous = self.settings.compare_and_swap(&current, new.clone());
            if Arc::ptr_eq(&previous, &current) {
                return Ok(());
            }
        }
    }

    /// Decides the answer to a parsed request that arrived on an interface whose address is
    /// `local_addr` (unspecified if unknown), at `now_s` (Unix seconds). Binding changes are
    /// recorded in `journal` before they take effect; the caller must make them durable before
    /// it sends the reply.
    pub fn decide(
        &self,
        packet: &Packet<'_>,
        local_addr: Ipv4Addr,
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Decision {
        if packet.op() != 1 {
            return Decision::Drop(DropReason::NotRequest);
        }
        // Once per packet: a reload meanwhile applies from the next packet on.
        let settings = self.settings.load();
        let policy = &settings.policy;
        let Some(subnet) = settings
            .subnets
            .select(packet.giaddr(), packet.ciaddr(), local_addr)
        else {
            return Decision::Drop(DropReason::NoSubnet);
        };
        let key = match packet.client_id() {
            Some(id) => ClientKeyBuf::client_id(id),
            None => ClientKeyBuf::hardware(packet.htype(), packet.chaddr()),
        };
        let client = key.as_bytes();
        // Before anything is held or changed: a server that does not answer must not remember
        // anything of the request (draft §10.1).
        let admitted = match &self.gate {
            None => Admitted {
                mclt_s: None,
                partner_down: None,
            },
            Some(gate) => match gate.admit(packet) {
                Ok(admitted) => admitted,
                Err(reason) => return Decision::Drop(reason),
            },
        };
        let lease = LeaseTime {
            desired_s: subnet.grant_lease_time_s(packet.lease_time_s()),
            mclt_s: admitted.mclt_s,
            partner_down: admitted.partner_down,
        };
        match packet.message_type() {
            MessageType::Discover => self.discover(policy, packet, subnet, client, (lease, now_s)),
            MessageType::Request => {
                self.request(policy, packet, subnet, client, (lease, now_s), journal)
            }
            MessageType::Release => self.release(policy, packet, subnet, client, now_s, journal),
            MessageType::Decline => self.decline(policy, packet, subnet, client, now_s, journal),
            MessageType::Inform => self.inform(packet, subnet),
            MessageType::Offer | MessageType::Ack | MessageType::Nak => {
                Decision::Drop(DropReason::UnknownMessageType)
            }
        }
    }

    /// Ends offers, leases and decline holds that ran out by `now_s`; with a failover partner,
    /// lease ends are recorded in `journal` (see [`LeaseTable::expire`]).
    pub fn expire(&self, now_s: u64, journal: &mut dyn Journal) -> usize {
        self.leases
            .expire(&self.settings.load().subnets, now_s, journal)
    }

    fn discover(
        &self,
        policy: &Policy,
        p: &Packet<'_>,
        subnet: &Subnet,
        client: &[u8],
        (lease, now_s): (LeaseTime, u64),
    ) -> Decision {
        let hold_s = policy.offer_hold_s;
        match self
            .leases
            .offer(subnet, client, p.requested_ip(), now_s, hold_s, lease)
        {
            Ok(Offer { ip, lease_s }) => {
                Decision::Reply(self.lease_reply(p, MessageType::Offer, subnet, ip, lease_s))
            }
            Err(reason) => Decision::Drop(reason),
        }
    }

    /// RFC 2131 §4.3.2: the client's state follows from which of server id, requested address
    /// and ciaddr it filled in.
    fn request(
        &self,
        policy: &Policy,
        p: &Packet<'_>,
        subnet: &Subnet,
        client: &[u8],
        (lease, now_s): (LeaseTime, u64),
        journal: &mut dyn Journal,
    ) -> Decision {
        match (p.server_id(), p.requested_ip(), p.ciaddr()) {
            // SELECTING: the client answers an OFFER.
            (Some(server_id), requested, _) => {
                if server_id != policy.server_id {
                    // It chose another server: free what we offered.
                    self.leases.forget_offer(subnet, client, now_s);
                    return Decision::Drop(DropReason::NotOurServerId);
                }
                let Some(ip) = requested else {
                    return Decision::Drop(DropReason::MissingRequestedAddress);
                };
                match self
                    .leases
                    .commit(subnet, client, ip, lease, now_s, journal)
                {
                    Commit::Bound { expires_s } => self.ack(p, subnet, ip, (expires_s, now_s)),
                    Commit::Conflict | Commit::NotOurs => self.nak(p),
                    Commit::Unavailable => Decision::Drop(DropReason::StorageUnavailable),
                }
            }
            // INIT-REBOOT: the client checks an address it remembers.
            (None, Some(ip), ciaddr) if ciaddr.is_unspecified() => {
                if !subnet.contains(ip) {
                    return self.nak(p); // on the wrong network
                }
                self.confirm(p, subnet, client, ip, (lease, now_s), journal)
            }
            // RENEWING (unicast) or REBINDING (broadcast): extend the lease on ciaddr.
            (None, _, ciaddr) if !ciaddr.is_unspecified() => {
                self.confirm(p, subnet, client, ciaddr, (lease, now_s), journal)
            }
            (None, _, _) => Decision::Drop(DropReason::MissingRequestedAddress),
        }
    }

    /// INIT-REBOOT, RENEWING, REBINDING: ACK if the address is, or can become, the client's; NAK
    /// if another client holds it; silence if it is none of our business.
    fn confirm(
        &self,
        p: &Packet<'_>,
        subnet: &Subnet,
        client: &[u8],
        ip: Ipv4Addr,
        (lease, now_s): (LeaseTime, u64),
        journal: &mut dyn Journal,
    ) -> Decision {
        match self
            .leases
            .confirm(subnet, client, ip, lease, now_s, journal)
        {
            Commit::Bound { expires_s } => self.ack(p, subnet, ip, (expires_s, now_s)),
            Commit::Conflict => self.nak(p),
            Commit::NotOurs => Decision::Drop(DropReason::UnknownLease),
            Commit::Unavailable => Decision::Drop(DropReason::StorageUnavailable),
        }
    }

    fn release(
        &self,
        policy: &Policy,
        p: &Packet<'_>,
        subnet: &Subnet,
        client: &[u8],
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Decision {
        if p.server_id().is_some_and(|id| id != policy.server_id) {
            return Decision::Drop(DropReason::NotOurServerId);
        }
        outcome(
            self.leases
                .release(subnet, client, p.ciaddr(), now_s, journal),
        )
    }

    fn decline(
        &self,
        policy: &Policy,
        p: &Packet<'_>,
        subnet: &Subnet,
        client: &[u8],
        now_s: u64,
        journal: &mut dyn Journal,
    ) -> Decision {
        if p.server_id().is_some_and(|id| id != policy.server_id) {
            return Decision::Drop(DropReason::NotOurServerId);
        }
        let Some(ip) = p.requested_ip() else {
            return Decision::Drop(DropReason::MissingRequestedAddress);
        };
        let hold_s = policy.decline_hold_s;
        outcome(
            self.leases
                .decline(subnet, client, ip, now_s, hold_s, journal),
        )
    }

    /// DHCPINFORM (RFC 2131 §4.3.5): configuration only, to the client's own address.
    fn inform(&self, p: &Packet<'_>, subnet: &Subnet) -> Decision {
        let destination = if !p.giaddr().is_unspecified() {
            Destination::Relay(p.giaddr())
        } else if !p.ciaddr().is_unspecified() {
            Destination::Unicast(p.ciaddr())
        } else {
            Destination::Broadcast
        };
        Decision::Reply(Reply {
            message_type: MessageType::Ack,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            ciaddr: p.ciaddr(),
            lease_time_s: None,
            subnet: Some(subnet.id),
            destination,
            set_broadcast_flag: false,
        })
    }

    /// The ACK of a lease granted until `expires_s`: its lease time (and so T1 and T2) is the
    /// time granted, not the configured one.
    fn ack(
        &self,
        p: &Packet<'_>,
        subnet: &Subnet,
        ip: Ipv4Addr,
        (expires_s, now_s): (u64, u64),
    ) -> Decision {
        let lease_s = lease_time_s(expires_s, now_s);
        Decision::Reply(self.lease_reply(p, MessageType::Ack, subnet, ip, lease_s))
    }

    fn lease_reply(
        &self,
        p: &Packet<'_>,
        message_type: MessageType,
        subnet: &Subnet,
        ip: Ipv4Addr,
        lease_s: u32,
    ) -> Reply {
        let destination = if !p.giaddr().is_unspecified() {
            Destination::Relay(p.giaddr())
        } else if !p.ciaddr().is_unspecified() {
            Destination::Unicast(p.ciaddr())
        } else {
            Destination::Broadcast
        };
        Reply {
            message_type,
            yiaddr: ip,
            ciaddr: if message_type == MessageType::Ack {
                p.ciaddr()
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            lease_time_s: Some(lease_s),
            subnet: Some(subnet.id),
            destination,
            set_broadcast_flag: false,
        }
    }

    /// DHCPNAK (RFC 2131 §4.3.2): through the relay with the broadcast bit set, else broadcast.
    fn nak(&self, p: &Packet<'_>) -> Decision {
        let relayed = !p.giaddr().is_unspecified();
        Decision::Reply(Reply {
            message_type: MessageType::Nak,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            lease_time_s: None,
            subnet: None,
            destination: if relayed {
                Destination::Relay(p.giaddr())
            } else {
                Destination::Broadcast
            },
            set_broadcast_flag: relayed,
        })
    }

    /// Writes `reply` to `request` into `buf`, within the client's maximum message size.
    /// Options the client asked for (option 55) come first, in its order; other configured
    /// options follow while they fit. Relay agent information (82) is echoed unchanged, last.
    pub fn write_reply(
        &self,
        request: &Packet<'_>,
        reply: &Reply,
        buf: &mut [u8],
    ) -> Result<usize, DropReason> {
        let limit = request.reply_limit();
        let mut w = PacketWriter::reply_to(buf, request, reply.message_type, limit);
        w.set_yiaddr(reply.yiaddr);
        w.set_ciaddr(reply.ciaddr);
        if reply.set_broadcast_flag {
            w.set_flags(request.flags() | 0x8000);
        }
        let too_large = |_| DropReason::ReplyTooLarge;
        // Loaded again, not handed over from `decide`: a reload in between only means the new
        // options (and timers) go out with this reply, which is what the operator asked for.
        // Subnet ids and the server id cannot change in a reload.
        let settings = self.settings.load();
        w.push_ip(code::SERVER_ID, settings.policy.server_id)
            .map_err(too_large)?;

        // Option 82 is reserved first, so that no configured option can crowd it out: a relay
        // drops replies that lost it.
        let relay_info_len: usize = request
            .options()
            .filter(|&(c, _)| c == code::RELAY_AGENT_INFO)
            .map(|(_, v)| v.len() + 2)
            .sum();

        if let Some(lease_s) = reply.lease_time_s {
            let subnet = reply.subnet.and_then(|id| settings.subnets.get(id));
            let (t1_s, t2_s) =
                subnet.map_or((lease_s / 2, lease_s / 8 * 7), |s| scale_timers(s, lease_s));
            w.push_u32(code::LEASE_TIME, lease_s).map_err(too_large)?;
            w.push_u32(code::RENEWAL_TIME, t1_s).map_err(too_large)?;
            w.push_u32(code::REBINDING_TIME, t2_s).map_err(too_large)?;
        }

        if let Some(subnet) = reply.subnet.and_then(|id| settings.subnets.get(id)) {
            let requested = request.parameter_request_list().unwrap_or_default();
            // Requested ones first, in the client's order.
            for &wanted in requested {
                if let Some((c, value)) = subnet.options.iter().find(|(c, _)| *c == wanted) {
                    if w.remaining() >= value.len() + 2 + relay_info_len {
                        w.push(*c, value).map_err(too_large)?;
                    }
                }
            }
            // Then the rest, while they fit.
            for (c, value) in &subnet.options {
                if requested.contains(c) {
                    continue;
                }
                if w.remaining() >= value.len() + 2 + relay_info_len {
                    w.push(*c, value).map_err(too_large)?;
                }
            }
        }

        for (c, value) in request.options() {
            if c == code::RELAY_AGENT_INFO {
                w.push(c, value).map_err(too_large)?;
            }
        }
        Ok(w.finish())
    }
}

/// What a reload may not change while the lease table stands, named like the configuration's
/// keys; empty if nothing structural differs.
fn structural_differences(old: &Settings, new: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    if old.policy.server_id != new.policy.server_id {
        out.push("server.server_id".to_string());
    }
    let (olds, news) = (old.subnets.all(), new.subnets.all());
    if olds.len() != news.len() {
        out.push(format!("subnet count ({} → {})", olds.len(), news.len()));
    }
    for (i, (a, b)) in olds.iter().zip(news).enumerate() {
        if (a.id, a.network, a.prefix_len) != (b.id, b.network, b.prefix_len) {
            out.push(format!("subnet[{i}].prefix"));
        }
        if a.pools != b.pools {
            out.push(format!("subnet[{i}].pools"));
        }
        if a.reservations != b.reservations {
            out.push(format!("subnet[{i}].reservation"));
        }
    }
    out
}

/// RELEASE and DECLINE have no reply; what is left to count is why nothing changed.
fn outcome(result: Result<bool, StorageUnavailable>) -> Decision {
    match result {
        Ok(true) => Decision::Done,
        Ok(false) => Decision::Drop(DropReason::UnknownLease),
        Err(StorageUnavailable) => Decision::Drop(DropReason::StorageUnavailable),
    }
}

/// T1 and T2 for a lease of `lease_s`, in the subnet's configured proportions.
fn scale_timers(subnet: &Subnet, lease_s: u32) -> (u32, u32) {
    let scale =
        |t_s: u32| (u64::from(lease_s) * u64::from(t_s) / u64::from(subnet.lease_time_s)) as u32;
    (scale(subnet.t1_s), scale(subnet.t2_s))
}

#[cfg(test)]
mod tests {
    //! The RFC 2131 §4.3 decisions, one rule per test, driven through real encoded packets.
    use super::*;
    use crate::config::Config;
    use crate::proto::failover::{Dialect, FailoverState, Role};
    use crate::proto::lease::{ClientKey, Volatile};
    use crate::proto::wire::failover::BindingStatus;

    const NOW: u64 = 1_700_000_000;
    const RELAY: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
    const OTHER_RELAY: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);

    fn config_text(pool: &str) -> String {
        format!(
            r#"
[server]
listen = ["127.0.0.1:67"]
server_id = "192.0.2.1"
offer_hold = 30
decline_hold = 600

[[subnet]]
prefix = "10.10.0.0/16"
pools = ["{pool}"]
lease_time = 3600
routers = ["10.10.0.1"]
dns = ["10.10.0.53"]
domain_name = "isp.example"
  [[subnet.reservation]]
  hw = "02:00:00:00:00:99"
  ip = "10.10.0.10"

[[subnet]]
prefix = "10.20.0.0/16"
pools = ["10.20.1.0-10.20.1.9", "10.20.2.0-10.20.2.9"]
lease_time = 600
routers = ["10.20.0.1"]
"#
        )
    }

    fn settings_of(text: &str) -> (Policy, Subnets) {
        let config = Config::from_toml(text).unwrap();
        let policy = Policy {
            server_id: config.server.server_id,
            offer_hold_s: config.server.offer_hold_s,
            decline_hold_s: config.server.decline_hold_s,
        };
        (policy, config.subnets)
    }

    fn server(pool: &str) -> Server {
        let (policy, subnets) = settings_of(&config_text(pool));
        Server::new(policy, subnets)
    }

    /// A request from client `n` (chaddr 02:00:00:00:00:n) through `giaddr`.
    struct Req {
        msg: MessageType,
        client: u8,
        giaddr: Ipv4Addr,
        ciaddr: Ipv4Addr,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
        client_id: Option<Vec<u8>>,
        extra: Vec<(u8, Vec<u8>)>,
    }

    fn req(msg: MessageType, client: u8) -> Req {
        Req {
            msg,
            client,
            giaddr: RELAY,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
            client_id: None,
            extra: vec![],
        }
    }

    impl Req {
        fn encode(&self) -> Vec<u8> {
            let mut buf = vec![0u8; 1500];
            let mut w = PacketWriter::new(&mut buf, 1500);
            w.set_op(1);
            w.set_htype(1);
            w.set_chaddr(&[2, 0, 0, 0, 0, self.client]);
            w.set_xid(0x1234_0000 + u32::from(self.client));
            w.set_giaddr(self.giaddr);
            w.set_ciaddr(self.ciaddr);
            w.push_u8(code::MESSAGE_TYPE, self.msg as u8).unwrap();
            if let Some(ip) = self.requested {
                w.push_ip(code::REQUESTED_IP, ip).unwrap();
            }
            if let Some(ip) = self.server_id {
                w.push_ip(code::SERVER_ID, ip).unwrap();
            }
            if let Some(id) = &self.client_id {
                w.push(code::CLIENT_ID, id).unwrap();
            }
            for (c, v) in &self.extra {
                w.push(*c, v).unwrap();
            }
            let len = w.finish();
            buf.truncate(len);
            buf
        }

        fn decide(&self, server: &Server, now_s: u64) -> Decision {
            let bytes = self.encode();
            let packet = Packet::parse(&bytes).unwrap();
            server.decide(&packet, Ipv4Addr::UNSPECIFIED, now_s, &mut Volatile)
        }
    }

    fn reply(d: Decision) -> Reply {
        match d {
            Decision::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn offer(server: &Server, client: u8, now_s: u64) -> Ipv4Addr {
        let r = reply(req(MessageType::Discover, client).decide(server, now_s));
        assert_eq!(r.message_type, MessageType::Offer);
        r.yiaddr
    }

    fn select(server: &Server, client: u8, ip: Ipv4Addr, now_s: u64) -> Reply {
        let mut r = req(MessageType::Request, client);
        r.requested = Some(ip);
        r.server_id = Some(server.settings().policy.server_id);
        reply(r.decide(server, now_s))
    }

    fn dora(server: &Server, client: u8, now_s: u64) -> Ipv4Addr {
        let ip = offer(server, client, now_s);
        let ack = select(server, client, ip, now_s);
        assert_eq!(ack.message_type, MessageType::Ack);
        assert_eq!(ack.yiaddr, ip);
        ip
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn discover_offers_distinct_addresses_from_the_relays_subnet() {
        let server = server("10.10.1.0-10.10.1.255");
        let mut seen = std::collections::HashSet::new();
        for client in 1..=50 {
            let ip = offer(&server, client, NOW);
            assert!(server.settings().subnets.all()[0].in_pool(ip), "{ip}");
            assert!(seen.insert(ip), "{ip} offered twice");
        }
        let mut other = req(MessageType::Discover, 1);
        other.giaddr = OTHER_RELAY;
        let r = reply(other.decide(&server, NOW));
        assert!(server.settings().subnets.all()[1].in_pool(r.yiaddr));
        assert_eq!(r.destination, Destination::Relay(OTHER_RELAY));
        assert_eq!(r.lease_time_s, Some(600));
    }

    #[test]
    fn discover_prefers_binding_then_reservation_then_requested_address() {
        let server = server("10.10.1.0-10.10.1.255");
        let bound = dora(&server, 1, NOW);
        assert_eq!(offer(&server, 1, NOW + 10), bound, "existing binding first");
        assert_eq!(offer(&server, 0x99, NOW), ip("10.10.0.10"), "reservation");
        let mut wish = req(MessageType::Discover, 2);
        wish.requested = Some(ip("10.10.1.200"));
        assert_eq!(reply(wish.decide(&server, NOW)).yiaddr, ip("10.10.1.200"));
        // Someone else's address, a reserved one, or one outside the pools is not given.
        for taken in [bound, ip("10.10.0.10"), ip("10.10.9.9")] {
            let mut wish = req(MessageType::Discover, 3);
            wish.requested = Some(taken);
            assert_ne!(reply(wish.decide(&server, NOW)).yiaddr, taken);
        }
    }

    #[test]
    fn an_offer_is_held_then_released_to_others() {
        let server = server("10.10.1.5-10.10.1.5");
        let ip = offer(&server, 1, NOW);
        assert_eq!(
            req(MessageType::Discover, 2).decide(&server, NOW + 29),
            Decision::Drop(DropReason::PoolExhausted)
        );
        assert_eq!(offer(&server, 2, NOW + 30), ip, "the hold ran out");
    }

    #[test]
    fn selecting_another_server_frees_our_offer() {
        let server = server("10.10.1.5-10.10.1.5");
        let offered = offer(&server, 1, NOW);
        let mut r = req(MessageType::Request, 1);
        r.requested = Some(offered);
        r.server_id = Some(ip("192.0.2.200"));
        assert_eq!(
            r.decide(&server, NOW),
            Decision::Drop(DropReason::NotOurServerId)
        );
        assert_eq!(offer(&server, 2, NOW), offered);
    }

    #[test]
    fn selecting_an_address_taken_meanwhile_is_naked() {
        let server = server("10.10.1.5-10.10.1.5");
        let ip = offer(&server, 1, NOW);
        // Client 2 gets the address after client 1's hold ran out, then 1 answers late.
        assert_eq!(dora(&server, 2, NOW + 31), ip);
        let nak = select(&server, 1, ip, NOW + 32);
        assert_eq!(nak.message_type, MessageType::Nak);
        assert_eq!(nak.destination, Destination::Relay(RELAY));
        assert!(nak.set_broadcast_flag, "a NAK through a relay is broadcast");
    }

    #[test]
    fn init_reboot_rules() {
        let server = server("10.10.1.0-10.10.1.255");
        let mine = dora(&server, 1, NOW);
        let theirs = dora(&server, 2, NOW);
        let reboot = |client, ip| {
            let mut r = req(MessageType::Request, client);
            r.requested = Some(ip);
            r.decide(&server, NOW + 100)
        };
        assert_eq!(reply(reboot(1, mine)).message_type, MessageType::Ack);
        assert_eq!(reply(reboot(1, theirs)).message_type, MessageType::Nak);
        assert_eq!(
            reply(reboot(1, ip("10.99.0.5"))).message_type,
            MessageType::Nak,
            "wrong network"
        );
        // In the subnet but outside our pools, and not known to us: not our business.
        assert_eq!(
            reboot(3, ip("10.10.5.5")),
            Decision::Drop(DropReason::UnknownLease)
        );
    }

    #[test]
    fn renewing_extends_the_lease_and_answers_the_client_directly() {
        let server = server("10.10.1.0-10.10.1.255");
        let ip = dora(&server, 1, NOW);
        let mut renew = req(MessageType::Request, 1);
        renew.giaddr = Ipv4Addr::UNSPECIFIED;
        renew.ciaddr = ip;
        let ack = reply(renew.decide(&server, NOW + 1800));
        assert_eq!(
            (ack.message_type, ack.yiaddr, ack.ciaddr),
            (MessageType::Ack, ip, ip)
        );
        assert_eq!(ack.destination, Destination::Unicast(ip));
        let settings = server.settings();
        let lease = server.leases.get(&settings.subnets.all()[0], ip).unwrap();
        assert_eq!(lease.expires_s, NOW + 1800 + 3600);
        // Another client cannot renew it.
        let mut thief = req(MessageType::Request, 2);
        thief.giaddr = Ipv4Addr::UNSPECIFIED;
        thief.ciaddr = ip;
        assert_eq!(
            reply(thief.decide(&server, NOW + 1800)).message_type,
            MessageType::Nak
        );
    }

    #[test]
    fn release_returns_the_address() {
        let server = server("10.10.1.5-10.10.1.5");
        let ip = dora(&server, 1, NOW);
        let mut release = req(MessageType::Release, 2);
        release.ciaddr = ip;
        assert_eq!(
            release.decide(&server, NOW),
            Decision::Drop(DropReason::UnknownLease),
            "only the holder can release"
        );
        release.client = 1;
        assert_eq!(release.decide(&server, NOW), Decision::Done);
        assert_eq!(dora(&server, 2, NOW + 1), ip);
    }

    #[test]
    fn declined_address_is_set_aside_for_the_hold() {
        let server = server("10.10.1.5-10.10.1.6");
        let first = dora(&server, 1, NOW);
        let mut decline = req(MessageType::Decline, 1);
        decline.requested = Some(first);
        decline.server_id = Some(server.settings().policy.server_id);
        assert_eq!(decline.decide(&server, NOW), Decision::Done);
        // During the hold nobody, not even the decliner, gets it back.
        let second = offer(&server, 1, NOW + 1);
        assert_ne!(second, first);
        assert_eq!(
            req(MessageType::Discover, 2).decide(&server, NOW + 2),
            Decision::Drop(DropReason::PoolExhausted)
        );
        server.expire(NOW + 601, &mut Volatile);
        assert_eq!(offer(&server, 2, NOW + 601), first);
    }

    #[test]
    fn expired_leases_are_reused() {
        let server = server("10.10.1.5-10.10.1.5");
        let ip = dora(&server, 1, NOW);
        assert_eq!(
            req(MessageType::Discover, 2).decide(&server, NOW + 3599),
            Decision::Drop(DropReason::PoolExhausted)
        );
        assert_eq!(server.expire(NOW + 3600, &mut Volatile), 1);
        assert_eq!(dora(&server, 2, NOW + 3600), ip);
    }

    #[test]
    fn client_identifier_beats_hardware_address() {
        let server = server("10.10.1.0-10.10.1.255");
        let mut a = req(MessageType::Discover, 1);
        a.client_id = Some(b"\x00router-a".to_vec());
        let mut b = req(MessageType::Discover, 1);
        b.client_id = Some(b"\x00router-b".to_vec());
        let (ip_a, ip_b) = (
            reply(a.decide(&server, NOW)).yiaddr,
            reply(b.decide(&server, NOW)).yiaddr,
        );
        assert_ne!(ip_a, ip_b, "same chaddr, different client ids: two clients");
        let key = ClientKey::from_client_id(b"\x00router-a");
        let lease = server
            .leases
            .get(&server.settings().subnets.all()[0], ip_a)
            .unwrap();
        assert_eq!(lease.client, Some(key));
    }

    #[test]
    fn inform_gets_options_and_no_lease() {
        let server = server("10.10.1.0-10.10.1.255");
        let mut inform = req(MessageType::Inform, 7);
        inform.giaddr = Ipv4Addr::UNSPECIFIED;
        inform.ciaddr = ip("10.10.7.7");
        let r = reply(inform.decide(&server, NOW));
        assert_eq!(r.message_type, MessageType::Ack);
        assert_eq!(r.lease_time_s, None);
        assert_eq!(r.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.destination, Destination::Unicast(ip("10.10.7.7")));
        let bytes = inform.encode();
        let packet = Packet::parse(&bytes).unwrap();
        let mut buf = [0u8; 1500];
        let len = server.write_reply(&packet, &r, &mut buf).unwrap();
        let out = Packet::parse(&buf[..len]).unwrap();
        assert_eq!(out.option(code::LEASE_TIME), None);
        assert_eq!(out.option(code::ROUTERS), Some(&[10, 10, 0, 1][..]));
    }

    #[test]
    fn unanswerable_requests_are_counted_drops() {
        let server = server("10.10.1.0-10.10.1.255");
        let mut stranger = req(MessageType::Discover, 1);
        stranger.giaddr = ip("172.16.0.1");
        assert_eq!(
            stranger.decide(&server, NOW),
            Decision::Drop(DropReason::NoSubnet)
        );
        assert_eq!(
            req(MessageType::Request, 1).decide(&server, NOW),
            Decision::Drop(DropReason::MissingRequestedAddress)
        );
        assert_eq!(
            req(MessageType::Offer, 1).decide(&server, NOW),
            Decision::Drop(DropReason::UnknownMessageType)
        );
    }

    #[test]
    fn reply_carries_what_the_client_needs_within_its_size_limit() {
        let server = server("10.10.1.0-10.10.1.255");
        let mut discover = req(MessageType::Discover, 1);
        let agent_info = vec![1, 4, b'p', b'o', b'r', b't', 2, 3, 1, 2, 3];
        discover.extra = vec![
            (code::PARAMETER_REQUEST_LIST, vec![6, 3, 1, 15, 28]),
            (code::RELAY_AGENT_INFO, agent_info.clone()),
        ];
        let bytes = discover.encode();
        let packet = Packet::parse(&bytes).unwrap();
        let r = reply(server.decide(&packet, Ipv4Addr::UNSPECIFIED, NOW, &mut Volatile));
        let mut buf = [0xAAu8; 1500];
        let len = server.write_reply(&packet, &r, &mut buf).unwrap();
        assert!(len <= 548);
        let out = Packet::parse(&buf[..len]).unwrap();
        assert_eq!(out.op(), 2);
        assert_eq!(out.xid(), packet.xid());
        assert_eq!(out.chaddr(), packet.chaddr());
        assert_eq!(out.giaddr(), RELAY);
        assert_eq!(out.yiaddr(), r.yiaddr);
        assert_eq!(out.message_type(), MessageType::Offer);
        assert_eq!(out.server_id(), Some(server.settings().policy.server_id));
        assert_eq!(out.lease_time_s(), Some(3600));
        assert_eq!(
            out.option(code::RENEWAL_TIME),
            Some(&1800u32.to_be_bytes()[..])
        );
        assert_eq!(
            out.option(code::REBINDING_TIME),
            Some(&3150u32.to_be_bytes()[..])
        );
        assert_eq!(out.option(code::SUBNET_MASK), Some(&[255, 255, 0, 0][..]));
        assert_eq!(out.option(code::DNS_SERVERS), Some(&[10, 10, 0, 53][..]));
        assert_eq!(out.relay_agent_info(), Some(&agent_info[..]));
        let codes: Vec<u8> = out.options().map(|(c, _)| c).collect();
        assert_eq!(codes.last(), Some(&code::RELAY_AGENT_INFO), "82 comes last");
        let pos = |c| codes.iter().position(|&x| x == c).unwrap();
        assert!(
            pos(6) < pos(3) && pos(3) < pos(1),
            "requested order kept: {codes:?}"
        );
    }

    #[test]
    fn a_small_client_limit_drops_unrequested_options_not_the_reply() {
        let server = server("10.10.1.0-10.10.1.255");
        let mut discover = req(MessageType::Discover, 1);
        discover.extra = vec![(code::MAX_MESSAGE_SIZE, 576u16.to_be_bytes().to_vec())];
        let bytes = discover.encode();
        let packet = Packet::parse(&bytes).unwrap();
        let r = reply(server.decide(&packet, Ipv4Addr::UNSPECIFIED, NOW, &mut Volatile));
        let mut buf = [0u8; 1500];
        let len = server.write_reply(&packet, &r, &mut buf).unwrap();
        assert!(len <= 548, "{len}");
    }

    /// The OFFER to a DISCOVER from `client` asking for DNS servers, as sent.
    fn offer_packet(server: &Server, client: u8, now_s: u64) -> (Ipv4Addr, Option<u32>, Vec<u8>) {
        let mut discover = req(MessageType::Discover, client);
        discover.extra = vec![(code::PARAMETER_REQUEST_LIST, vec![6])];
        let bytes = discover.encode();
        let packet = Packet::parse(&bytes).unwrap();
        let r = reply(server.decide(&packet, Ipv4Addr::UNSPECIFIED, now_s, &mut Volatile));
        let mut buf = [0u8; 1500];
        let len = server.write_reply(&packet, &r, &mut buf).unwrap();
        let out = Packet::parse(&buf[..len]).unwrap();
        assert_eq!(out.message_type(), MessageType::Offer);
        let dns = out.option(code::DNS_SERVERS).unwrap_or_default().to_vec();
        (out.yiaddr(), out.lease_time_s(), dns)
    }

    #[test]
    fn reload_applies_new_lease_time_and_options_to_the_next_packet() {
        let pool = "10.10.1.0-10.10.1.255";
        let server = server(pool);
        let bound = dora(&server, 1, NOW);
        let (_, lease_s, dns) = offer_packet(&server, 2, NOW);
        assert_eq!((lease_s, dns), (Some(3600), vec![10, 10, 0, 53]));

        let text = config_text(pool)
            .replace("lease_time = 3600", "lease_time = 7200")
            .replace(
                "dns = [\"10.10.0.53\"]",
                "dns = [\"10.10.0.53\", \"10.10.0.54\"]",
            )
            .replace("decline_hold = 600", "decline_hold = 60");
        let (policy, subnets) = settings_of(&text);
        server.reload(policy, subnets.clone()).unwrap();
        assert_eq!(server.settings().subnets, subnets);
        assert_eq!(server.settings().policy.decline_hold_s, 60);

        let (_, lease_s, dns) = offer_packet(&server, 3, NOW);
        assert_eq!(lease_s, Some(7200));
        assert_eq!(dns, vec![10, 10, 0, 53, 10, 10, 0, 54]);
        // The lease table is untouched: the bound client keeps its address, and a renewal is
        // granted the new lease time.
        assert_eq!(offer(&server, 1, NOW + 10), bound);
        let mut renew = req(MessageType::Request, 1);
        renew.giaddr = Ipv4Addr::UNSPECIFIED;
        renew.ciaddr = bound;
        assert_eq!(
            reply(renew.decide(&server, NOW + 20)).lease_time_s,
            Some(7200)
        );
    }

    #[test]
    fn reload_of_structural_settings_is_refused_and_changes_nothing() {
        let server = server("10.10.1.0-10.10.1.255");
        let before = Arc::clone(&*server.settings());
        let text = config_text("10.10.1.0-10.10.2.255")
            .replace("lease_time = 3600", "lease_time = 7200")
            .replace("server_id = \"192.0.2.1\"", "server_id = \"192.0.2.2\"")
            .replace("ip = \"10.10.0.10\"", "ip = \"10.10.0.11\"");
        let (policy, subnets) = settings_of(&text);
        assert_eq!(
            server.reload(policy, subnets),
            Err(vec![
                "server.server_id".to_string(),
                "subnet[0].pools".to_string(),
                "subnet[0].reservation".to_string(),
            ])
        );
        // One subnet fewer.
        let (policy, mut subnets) = settings_of(&config_text("10.10.1.0-10.10.1.255"));
        subnets = Subnets::new(subnets.all()[..1].to_vec());
        assert_eq!(
            server.reload(policy, subnets),
            Err(vec!["subnet count (2 → 1)".to_string()])
        );
        assert!(Arc::ptr_eq(&before, &server.settings()), "nothing swapped");
        let (_, lease_s, _) = offer_packet(&server, 1, NOW);
        assert_eq!(lease_s, Some(3600));
    }

    const MCLT: u32 = 600;

    /// A failover server in `role` whose gate is in `state`, splitting NORMAL load with
    /// `split` (255: the primary serves every client).
    fn failover_server(pool: &str, role: Role, split: u8, state: FailoverState) -> Server {
        let (policy, subnets) = settings_of(&config_text(pool));
        let gate = Arc::new(ServiceGate::new(role, Dialect::Ringlease, split));
        gate.set_state(state, MCLT, 0);
        let share = PoolShare::new(role, split, None);
        Server::with_failover(policy, subnets, Some(share), Some(gate))
    }

    /// The lease time, T1 and T2 of `reply` to `request` as encoded.
    fn timers(server: &Server, request: &Req, reply: &Reply) -> (Option<u32>, Vec<u8>, Vec<u8>) {
        let bytes = request.encode();
        let packet = Packet::parse(&bytes).unwrap();
        let mut buf = [0u8; 1500];
        let len = server.write_reply(&packet, reply, &mut buf).unwrap();
        let out = Packet::parse(&buf[..len]).unwrap();
        let t = |c| out.option(c).unwrap_or_default().to_vec();
        (
            out.lease_time_s(),
            t(code::RENEWAL_TIME),
            t(code::REBINDING_TIME),
        )
    }

    #[test]
    fn with_failover_offer_and_ack_carry_the_granted_lease_time() {
        // The MCLT cuts a new client's first lease (draft §5.2.1): the OFFER shows what the
        // REQUEST gets, and the ACK's lease time and timers are the granted ones.
        let server = failover_server(
            "10.10.1.0-10.10.1.255",
            Role::Primary,
            255,
            FailoverState::Normal,
        );
        let discover = req(MessageType::Discover, 1);
        let offer = reply(discover.decide(&server, NOW));
        assert_eq!(offer.lease_time_s, Some(MCLT));
        let mut request = req(MessageType::Request, 1);
        request.requested = Some(offer.yiaddr);
        request.server_id = Some(server.settings().policy.server_id);
        let ack = reply(request.decide(&server, NOW));
        assert_eq!(ack.message_type, MessageType::Ack);
        let (lease_s, t1, t2) = timers(&server, &request, &ack);
        assert_eq!(lease_s, Some(MCLT));
        // The subnet's proportions (1800 and 3150 of 3600) applied to 600 s.
        assert_eq!(t1, 300u32.to_be_bytes());
        assert_eq!(t2, 525u32.to_be_bytes());
        let settings = server.settings();
        let subnet = &settings.subnets.all()[0];
        let lease = server.leases.get(subnet, ack.yiaddr).unwrap();
        assert_eq!(lease.expires_s, NOW + u64::from(MCLT));
        assert!(lease.potential_expiry_s > lease.expires_s);

        // Once the partner acknowledged a PET, a renewal gets the whole lease.
        server
            .leases
            .partner_acked(
                &settings.subnets,
                ack.yiaddr,
                BindingStatus::Active,
                lease.potential_expiry_s,
                &mut Volatile,
            )
            .unwrap();
        let mut renew = req(MessageType::Request, 1);
        renew.giaddr = Ipv4Addr::UNSPECIFIED;
        renew.ciaddr = ack.yiaddr;
        let renewed = reply(renew.decide(&server, NOW + 300));
        assert_eq!(timers(&server, &renew, &renewed).0, Some(3600));
    }

    #[test]
    fn in_partner_down_the_mclt_does_not_bound_leases() {
        let server = failover_server(
            "10.10.1.0-10.10.1.255",
            Role::Primary,
            128,
            FailoverState::PartnerDown,
        );
        let ip = dora(&server, 1, NOW);
        let lease = server
            .leases
            .get(&server.settings().subnets.all()[0], ip)
            .unwrap();
        assert_eq!(lease.expires_s, NOW + 3600);
    }

    #[test]
    fn what_the_gate_drops_leaves_no_trace() {
        // A server that does not answer must not remember anything (draft §10.1): no offer
        // is held, no binding changes.
        let pool = "10.10.1.0-10.10.1.255";
        let server = failover_server(pool, Role::Secondary, 255, FailoverState::Startup);
        let held = |server: &Server| {
            server
                .leases
                .counts(&server.settings().subnets.all()[0], NOW)
                .offered
        };
        assert_eq!(
            req(MessageType::Discover, 1).decide(&server, NOW),
            Decision::Drop(DropReason::FailoverUnresponsive)
        );
        assert_eq!(held(&server), 0);
        // A hot standby in NORMAL leaves new clients to the primary.
        let server = failover_server(pool, Role::Secondary, 255, FailoverState::Normal);
        assert_eq!(
            req(MessageType::Discover, 1).decide(&server, NOW),
            Decision::Drop(DropReason::NotOurBucket)
        );
        assert_eq!(held(&server), 0);
        // And serves everyone from its own share once the partner is out of touch.
        let server = failover_server(
            pool,
            Role::Secondary,
            255,
            FailoverState::CommunicationsInterrupted,
        );
        let ip = dora(&server, 1, NOW);
        assert_eq!(
            PoolShare::new(Role::Secondary, 255, None).owner(ip),
            Role::Secondary
        );
    }
}

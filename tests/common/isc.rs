//! Harness for the interoperability tests against ISC dhcpd 4.4 (`/usr/sbin/dhcpd`, Debian's
//! isc-dhcp-server): one failover pair made of a `ringlease serve` and a `dhcpd`, each in a
//! network namespace of its own, clients in a third one (the relay agent: the load generator)
//! and a fourth one (a real `dhclient` on a veth), everything created by the test and deleted on
//! drop.
//!
//! ```text
//!   ns P (primary)                          ns S (secondary)
//!   fo_p 198.18.0.1/30 ─── failover TCP ─── fo_s 198.18.0.2/30
//!   lan_p 198.18.1.1/24                     lan_s 198.18.1.2/24
//!        │                                       │
//!        └──── c_p ── br0 198.18.1.3/24 ── c_s ──┘      ns C: bridge, relay agent
//!                      │   lo 198.18.16.1/32 = giaddr (relayed subnet 198.18.16.0/20)
//!                     c_d
//!                      │
//!                  d0 (dhclient, ns D, no address)
//! ```
//!
//! Both servers are on one Ethernet segment (the bridge in C) with the dhclient, so a real
//! client's broadcast reaches both, as on a LAN with a failover pair; the relay agent at
//! 198.18.16.1 reaches each by unicast (each routes the relayed subnet back through C).
//! Port 67 everywhere (every namespace is the test's own). ISC dhcpd runs in the foreground
//! (`-f -d`) with its own config, lease and pid files in a temp dir, bound to its LAN veth.
//! Every process is stopped by PID; every wait is bounded.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::common::failover::{tail, FailoverCfg, Node, Role};
use crate::common::{
    read_lossy, require_tool, veth_pair, wait_for, Child, Netns, ServerCfg, SubnetCfg, TempDir,
};

pub const PRIMARY_FO: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SECONDARY_FO: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const PRIMARY_LAN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const SECONDARY_LAN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const BRIDGE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
pub const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 1);
/// The relayed subnet (the load generator's clients).
pub const RELAYED: &str = "198.18.16.0/20";
pub const RELAYED_POOL: (&str, &str) = ("198.18.17.1", "198.18.17.254");
/// The LAN (the dhclient's subnet).
pub const LAN: &str = "198.18.1.0/24";
pub const LAN_POOL: (&str, &str) = ("198.18.1.100", "198.18.1.199");
pub const DHCP_PORT: u16 = 67;
pub const FAILOVER_PORT: u16 = 647;
pub const LEASE_TIME_S: u32 = 3600;
/// The relationship name: ISC's `failover peer` name.
pub const PEER_NAME: &str = "pair-a";
/// The dhclient's hardware address.
pub const DHCLIENT_MAC: &str = "02:aa:bb:00:00:01";

fn fo_addr(role: Role) -> Ipv4Addr {
    match role {
        Role::Primary => PRIMARY_FO,
        Role::Secondary => SECONDARY_FO,
    }
}

pub fn lan_addr(role: Role) -> Ipv4Addr {
    match role {
        Role::Primary => PRIMARY_LAN,
        Role::Secondary => SECONDARY_LAN,
    }
}

fn other(role: Role) -> Role {
    match role {
        Role::Primary => Role::Secondary,
        Role::Secondary => Role::Primary,
    }
}

/// Both servers' failover settings, written once for each side.
#[derive(Clone, Debug)]
pub struct PairCfg {
    /// RFC 3074 buckets of the primary (ISC `split`): 128 load balance, 255 hot standby.
    pub split: u8,
    pub mclt_s: u32,
    /// ISC `max-response-delay` (its receive timer; it sends CONTACT every third of ours).
    pub max_response_delay_s: u32,
    /// ringlease `receive_timer` (ISC sends CONTACT every third of it).
    pub receive_timer_s: u32,
}

impl Default for PairCfg {
    fn default() -> PairCfg {
        PairCfg {
            split: 128,
            mclt_s: 300,
            max_response_delay_s: 9,
            receive_timer_s: 9,
        }
    }
}

impl PairCfg {
    /// ringlease's `[failover]` section.
    pub fn ringlease(&self) -> FailoverCfg {
        FailoverCfg {
            name: PEER_NAME.into(),
            dialect: "isc".into(),
            mclt_s: self.mclt_s,
            split: self.split,
            send_timer_s: 3,
            receive_timer_s: self.receive_timer_s,
            startup_timer_s: 2,
            connect_retry_s: 1,
            ..FailoverCfg::default()
        }
    }

    /// dhcpd.conf for ISC dhcpd in `role`: the `failover peer` block and the same subnets and
    /// pools as ringlease's (each pool references the peer).
    pub fn dhcpd_conf(&self, role: Role) -> String {
        let me = fo_addr(role);
        let peer = fo_addr(other(role));
        let role_specific = match role {
            Role::Primary => format!("  mclt {};\n  split {};\n", self.mclt_s, self.split),
            Role::Secondary => String::new(),
        };
        format!(
            "authoritative;\n\
             ddns-update-style none;\n\
             ping-check false;\n\
             default-lease-time {LEASE_TIME_S};\n\
             max-lease-time {LEASE_TIME_S};\n\
             failover peer \"{PEER_NAME}\" {{\n  {role};\n\
             \x20 address {me}; port {FAILOVER_PORT};\n\
             \x20 peer address {peer}; peer port {FAILOVER_PORT};\n\
             \x20 max-response-delay {mrd};\n\
             \x20 max-unacked-updates 10;\n\
             {role_specific}\
             \x20 load balance max seconds 3;\n\
             }}\n\
             subnet 198.18.1.0 netmask 255.255.255.0 {{\n\
             \x20 pool {{ failover peer \"{PEER_NAME}\"; range {} {}; }}\n\
             }}\n\
             subnet 198.18.16.0 netmask 255.255.240.0 {{\n\
             \x20 pool {{ failover peer \"{PEER_NAME}\"; range {} {}; }}\n\
             }}\n",
            LAN_POOL.0,
            LAN_POOL.1,
            RELAYED_POOL.0,
            RELAYED_POOL.1,
            role = role.name(),
            mrd = self.max_response_delay_s,
        )
    }
}

/// ringlease's DHCP side: `0.0.0.0:67` (the dhclient's broadcasts, the relay's unicasts), both
/// subnets with the same pools as dhcpd's.
pub fn ringlease_server_cfg(role: Role) -> ServerCfg {
    let subnet = |prefix: &str, pool: (&str, &str)| SubnetCfg {
        prefix: prefix.into(),
        pools: vec![format!("{}-{}", pool.0, pool.1)],
        lease_time: LEASE_TIME_S,
        routers: Vec::new(),
        dns: Vec::new(),
        reservations: Vec::new(),
    };
    let mut cfg = ServerCfg::simple(
        &format!("0.0.0.0:{DHCP_PORT}"),
        &lan_addr(role).to_string(),
        "auto",
        subnet(LAN, LAN_POOL),
    );
    cfg.subnets.push(subnet(RELAYED, RELAYED_POOL));
    cfg
}

// ---------------------------------------------------------------------------
// dhcpd.leases
// ---------------------------------------------------------------------------

/// The last `lease A { … }` record of an address in dhcpd.leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IscLease {
    /// `binding state X;` (free, active, expired, released, abandoned, reset, backup).
    pub state: String,
    /// `hardware ethernet M;`, lower case.
    pub hw: Option<String>,
    /// `starts`, `ends`, `cltt` (`W YYYY/MM/DD HH:MM:SS;`, UTC) in Unix seconds, if present.
    pub starts: Option<u64>,
    pub ends: Option<u64>,
    pub cltt: Option<u64>,
}

/// dhcpd.leases' default time format, `W YYYY/MM/DD HH:MM:SS` (UTC; `W` the weekday), or
/// `epoch N` (`db-time-format local`), in Unix seconds. `never` and anything else: `None`.
pub fn isc_time(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let first = words.next()?;
    if first == "epoch" {
        return words.next()?.parse().ok();
    }
    let date: Vec<i64> = words
        .next()?
        .split('/')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let time: Vec<u64> = words
        .next()?
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (&[y, m, d], &[hh, mm, ss]) = (&date[..], &time[..]) else {
        return None;
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400 + hh * 3_600 + mm * 60 + ss)
}

/// The last `failover peer "…" state { … }` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IscFoState {
    pub my_state: String,
    pub partner_state: String,
    pub mclt: Option<u32>,
}

/// dhcpd.leases: the last record per address wins (the file is a journal).
#[derive(Clone, Debug, Default)]
pub struct IscLeases {
    pub leases: HashMap<Ipv4Addr, IscLease>,
    pub failover: Option<IscFoState>,
}

impl IscLeases {
    pub fn parse(text: &str) -> IscLeases {
        let mut out = IscLeases::default();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("lease ") {
                let Some(ip) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.parse::<Ipv4Addr>().ok())
                else {
                    continue;
                };
                let mut lease = IscLease::default();
                let mut complete = false;
                for l in lines.by_ref() {
                    let l = l.trim();
                    if l == "}" {
                        complete = true;
                        break;
                    }
                    let l = l.trim_end_matches(';');
                    if let Some(s) = l.strip_prefix("binding state ") {
                        lease.state = s.to_string();
                    } else if let Some(h) = l.strip_prefix("hardware ethernet ") {
                        lease.hw = Some(h.to_ascii_lowercase());
                    } else if let Some(t) = l.strip_prefix("starts ") {
                        lease.starts = isc_time(t);
                    } else if let Some(t) = l.strip_prefix("ends ") {
                        lease.ends = isc_time(t);
                    } else if let Some(t) = l.strip_prefix("cltt ") {
                        lease.cltt = isc_time(t);
                    }
                }
                // A record cut short by a concurrent write is not the last word yet.
                if complete {
                    out.leases.insert(ip, lease);
                }
            } else if line.starts_with("failover peer ") && line.ends_with("state {") {
                let mut st = IscFoState::default();
                let mut complete = false;
                for l in lines.by_ref() {
                    let l = l.trim();
                    if l == "}" {
                        complete = true;
                        break;
                    }
                    let word = |p: &str| {
                        l.strip_prefix(p)
                            .and_then(|r| r.split_whitespace().next())
                            .map(str::to_string)
                    };
                    if let Some(s) = word("my state ") {
                        st.my_state = s;
                    } else if let Some(s) = word("partner state ") {
                        st.partner_state = s;
                    } else if let Some(m) = word("mclt ") {
                        st.mclt = m.trim_end_matches(';').parse().ok();
                    }
                }
                if complete {
                    out.failover = Some(st);
                }
            }
        }
        out
    }

    /// Addresses in `binding state STATE` (`backup`: the secondary's free addresses).
    pub fn in_state(&self, state: &str) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .leases
            .iter()
            .filter(|(_, l)| l.state == state)
            .map(|(ip, _)| *ip)
            .collect();
        v.sort();
        v
    }
}

// ---------------------------------------------------------------------------
// One dhcpd
// ---------------------------------------------------------------------------

/// `dhcpd -4 -f -d` in a namespace, with its own temp dir. Stopped by PID (SIGTERM, then
/// SIGKILL) on drop.
pub struct Dhcpd {
    pub role: Role,
    ns_name: String,
    child: Option<Child>,
    _dir: TempDir,
    conf: PathBuf,
    leases: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
    iface: String,
    bin: PathBuf,
    starts: u32,
}

impl Dhcpd {
    pub fn new(role: Role, ns: &Netns, conf_text: &str, iface: &str) -> Dhcpd {
        let bin = require_tool("dhcpd", "isc-dhcp-server");
        let dir = TempDir::new(&format!("isc{}", &role.name()[..3]));
        let conf = dir.write("dhcpd.conf", conf_text, false);
        let leases = dir.write("dhcpd.leases", "", false);
        Dhcpd {
            role,
            ns_name: ns.name().to_string(),
            child: None,
            pid_file: dir.join("dhcpd.pid"),
            log: dir.join("dhcpd.log"),
            _dir: dir,
            conf,
            leases,
            iface: iface.to_string(),
            bin,
            starts: 0,
        }
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn leases(&self) -> IscLeases {
        IscLeases::parse(&read_lossy(&self.leases))
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_status().is_none())
    }

    /// `dhcpd -4 -f -d -cf … -lf … -pf … IFACE`; waits (bounded) for "Server starting service."
    /// in this start's output.
    pub fn start(&mut self, ns: &Netns) {
        assert!(self.child.is_none(), "dhcpd is already running");
        assert_eq!(ns.name(), self.ns_name);
        let _ = std::fs::remove_file(&self.pid_file);
        let offset = std::fs::metadata(&self.log).map_or(0, |m| m.len()) as usize;
        let mut cmd = ns.cmd(&self.bin);
        cmd.args(["-4", "-f", "-d", "-cf"])
            .arg(&self.conf)
            .arg("-lf")
            .arg(&self.leases)
            .arg("-pf")
            .arg(&self.pid_file)
            .arg(&self.iface);
        self.starts += 1;
        let name = format!("dhcpd {} (start {})", self.role.name(), self.starts);
        let mut child = Child::spawn(&name, cmd, &self.log);
        let log = self.log.clone();
        let mut exited = None;
        let ready = wait_for(Duration::from_secs(20), || {
            if let Some(s) = child.try_status() {
                exited = Some(s);
                return Some(false);
            }
            let text = read_lossy(&log);
            text.get(offset..)
                .unwrap_or("")
                .contains("Server starting service.")
                .then_some(true)
        });
        if ready != Some(true) {
            panic!(
                "{name} did not start (exit: {exited:?}); config:\n{}\nlog:\n{}",
                read_lossy(&self.conf),
                self.log()
            );
        }
        self.child = Some(child);
    }

    /// SIGTERM by PID; dhcpd exits within a few seconds.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("dhcpd not running");
        let (status, in_time) = child.stop("TERM", Duration::from_secs(10));
        eprintln!(
            "dhcpd {} stopped: {status} (in time: {in_time})",
            self.role.name()
        );
    }

    /// Fails the test if dhcpd has died.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "dhcpd {} is not running; log tail:\n{}",
                self.role.name(),
                tail(&self.log(), 60)
            );
        }
    }

    /// dhcpd's `failover peer … : I move from X to Y` lines, in order (the states it entered).
    pub fn state_moves(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once(": I move from ").map(|(_, r)| r.to_string()))
            .collect()
    }

    /// dhcpd's own state, by its log: the target of the last "I move from X to Y".
    pub fn state(&self) -> Option<String> {
        self.state_moves()
            .last()
            .and_then(|m| m.split(" to ").nth(1).map(str::to_string))
    }
}

// ---------------------------------------------------------------------------
// dhclient
// ---------------------------------------------------------------------------

const DHCLIENT_SCRIPT: &str = "#!/bin/sh\n\
case \"$reason\" in PREINIT) ip link set dev \"$interface\" up ;; esac\n\
exit 0\n";

/// A real ISC `dhclient -d -1` on a veth of ns D (the LAN segment); the address is not applied
/// to the interface (the script only brings the link up), the lease file is the evidence.
pub struct Dhclient {
    child: Option<Child>,
    _dir: TempDir,
}

impl Dhclient {
    /// Starts dhclient and waits (bounded) until its lease file holds a lease: returns the
    /// address and the server identifier.
    pub fn obtain(ns: &Netns, iface: &str, limit: Duration) -> (Dhclient, Ipv4Addr, Ipv4Addr) {
        let bin = require_tool("dhclient", "isc-dhcp-client");
        let dir = TempDir::new("iscdhcl");
        let script = dir.write("script.sh", DHCLIENT_SCRIPT, true);
        let conf = dir.write("dhclient.conf", "timeout 60;\n", false);
        let leases = dir.join("dhclient.leases");
        let log = dir.join("dhclient.log");
        let mut cmd = ns.cmd(bin);
        cmd.args(["-4", "-v", "-d", "-1", "-cf"])
            .arg(&conf)
            .arg("-lf")
            .arg(&leases)
            .arg("-pf")
            .arg(dir.join("dhclient.pid"))
            .arg("-sf")
            .arg(&script)
            .arg(iface);
        let mut child = Child::spawn("dhclient", cmd, &log);
        let got = wait_for(limit, || {
            if let Some(l) = Self::last_lease(&read_lossy(&leases)) {
                return Some(Ok(l));
            }
            child.try_status().map(Err)
        });
        match got {
            Some(Ok((ip, sid))) => (
                Dhclient {
                    child: Some(child),
                    _dir: dir,
                },
                ip,
                sid,
            ),
            other => panic!(
                "dhclient got no lease within {limit:?} ({other:?}); its log:\n{}",
                read_lossy(&log)
            ),
        }
    }

    /// `(fixed-address, dhcp-server-identifier)` of the last complete lease in a dhclient
    /// lease file.
    fn last_lease(text: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let block = text.rsplit("lease {").next()?;
        if !block.contains('}') {
            return None;
        }
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(key)
                    .map(|v| v.trim().trim_end_matches(';').to_string())
            })
        };
        let ip = field("fixed-address")?.parse().ok()?;
        let sid = field("option dhcp-server-identifier")?.parse().ok()?;
        Some((ip, sid))
    }

    /// Stops it by PID (no release: the lease stays bound on the servers).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop("KILL", Duration::from_secs(5));
        }
    }
}

// ---------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------

/// The four namespaces, a ringlease node and a dhcpd. Field order is drop order: the processes
/// are stopped (by PID) before the namespaces are deleted.
pub struct Lab {
    pub rl: Node,
    pub isc: Dhcpd,
    pub rl_ns: Netns,
    pub isc_ns: Netns,
    /// The relay agent's namespace (the bridge).
    pub c: Netns,
    /// The dhclient's namespace.
    pub d: Netns,
    pub cfg: PairCfg,
}

impl Lab {
    /// Builds the topology; ringlease gets `rl_role`, dhcpd the other. Starts nothing.
    pub fn new(tag: &str, rl_role: Role, cfg: PairCfg) -> Lab {
        let p = Netns::new(&format!("{tag}p"));
        let s = Netns::new(&format!("{tag}s"));
        let c = Netns::new(&format!("{tag}c"));
        let d = Netns::new(&format!("{tag}d"));
        veth_pair(&p, "fo_p", &s, "fo_s");
        veth_pair(&p, "lan_p", &c, "c_p");
        veth_pair(&s, "lan_s", &c, "c_s");
        veth_pair(&d, "d0", &c, "c_d");
        d.ip(&["link", "set", "dev", "d0", "address", DHCLIENT_MAC]);
        c.ip(&["link", "add", "br0", "type", "bridge"]);
        for port in ["c_p", "c_s", "c_d"] {
            c.ip(&["link", "set", "dev", port, "master", "br0"]);
        }
        c.link_up("br0");
        c.add_addr("br0", &format!("{BRIDGE}/24"));
        c.add_addr("lo", &format!("{GIADDR}/32"));
        p.add_addr("fo_p", &format!("{PRIMARY_FO}/30"));
        s.add_addr("fo_s", &format!("{SECONDARY_FO}/30"));
        p.add_addr("lan_p", &format!("{PRIMARY_LAN}/24"));
        s.add_addr("lan_s", &format!("{SECONDARY_LAN}/24"));
        for ns in [&p, &s] {
            ns.ip(&["route", "add", RELAYED, "via", &BRIDGE.to_string()]);
        }
        let (rl_ns, isc_ns) = match rl_role {
            Role::Primary => (p, s),
            Role::Secondary => (s, p),
        };
        let isc_role = other(rl_role);
        let fo = |r: Role| SocketAddrV4::new(fo_addr(r), FAILOVER_PORT);
        let rl = Node::in_own_netns(
            rl_role,
            &rl_ns,
            &ringlease_server_cfg(rl_role),
            &cfg.ringlease(),
            fo(rl_role),
            fo(isc_role),
        );
        let isc_if = match isc_role {
            Role::Primary => "lan_p",
            Role::Secondary => "lan_s",
        };
        let isc = Dhcpd::new(isc_role, &isc_ns, &cfg.dhcpd_conf(isc_role), isc_if);
        Lab {
            rl,
            isc,
            rl_ns,
            isc_ns,
            c,
            d,
            cfg,
        }
    }

    /// The DHCP address of the ringlease node and of dhcpd.
    pub fn rl_lan(&self) -> Ipv4Addr {
        lan_addr(self.rl.role)
    }

    pub fn isc_lan(&self) -> Ipv4Addr {
        lan_addr(self.isc.role)
    }

    pub fn start_rl(&mut self) {
        self.rl.start(&self.rl_ns);
    }

    pub fn start_isc(&mut self) {
        self.isc.start(&self.isc_ns);
    }

    /// Both statuses and logs, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "ringlease status: {}\ndhcpd state moves: {:?}\ndhcpd lease-file failover record: \
             {:?}\n--- ringlease log tail:\n{}\n--- dhcpd log tail:\n{}",
            crate::common::failover::show(&self.rl.failover()),
            self.isc.state_moves(),
            self.isc.leases().failover,
            tail(&self.rl.log(), 40),
            tail(&self.isc.log(), 60)
        )
    }
}

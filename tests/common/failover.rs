//! Harness for the failover-pair tests: two `ringlease serve` processes that form one failover
//! relationship inside a network namespace the test creates, a relay agent inside the same
//! namespace, and the operator's views of each server (`ctl status`, `ctl lease`, `log dump`).
//!
//! Addresses (all on the namespace's own loopback; nothing reaches the root namespace):
//!
//! | who | DHCP | failover |
//! |---|---|---|
//! | primary | [`PRIMARY`]:[`DHCP_PORT`] | [`PRIMARY`]:[`FAILOVER_PORT`] |
//! | secondary | [`SECONDARY`]:[`DHCP_PORT`] | [`SECONDARY`]:[`FAILOVER_PORT`] |
//! | relay agent | [`RELAY`]:[`DHCP_PORT`] (giaddr) | — |
//!
//! The namespace is brand new for each test, so the ports are fixed. The relay agent is a UDP
//! socket created inside the namespace (a short-lived thread enters it with `setns`); every
//! request it sends is unicast to one server and every wait is bounded. The control sockets
//! and lease logs are ordinary files in the test's temp dirs, so the test reads them from the
//! root namespace.

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringlease::control::Client;
use ringlease::proto::wire::dhcp::MessageType;
use serde_json::{json, Value};

use super::relay::Relay;
use super::{
    poll_until, read_lossy, ringlease_bin, run_bounded, wait_for, Child, Netns, ServerCfg,
    SubnetCfg, TempDir, READY_TIMEOUT, STOP_GRACE,
};

pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
pub const SECONDARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub const DHCP_PORT: u16 = 6767;
pub const FAILOVER_PORT: u16 = 8647;
/// The subnet every test serves: it holds the relay's giaddr, so relayed requests land in it.
pub const SUBNET: &str = "127.0.0.0/8";
/// A pool larger than the 100,000 clients of the bulk test, even with a share set aside for
/// the secondary.
pub const BIG_POOL: &str = "127.64.0.1-127.65.255.254";
pub const SMALL_POOL: &str = "127.64.0.1-127.64.3.254";
pub const LEASE_TIME_S: u32 = 3600;
/// Transmissions of one request before the exchange is a failure.
const TRIES: u32 = 3;

/// Seconds since 1970 on this machine's clock (the servers run on the same clock).
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Role::Primary => PRIMARY,
            Role::Secondary => SECONDARY,
        }
    }
    fn partner(self) -> Role {
        match self {
            Role::Primary => Role::Secondary,
            Role::Secondary => Role::Primary,
        }
    }
}

/// The `[failover]` section of one server, with the short timers the tests use.
#[derive(Clone, Debug)]
pub struct FailoverCfg {
    pub name: String,
    pub dialect: String,
    pub mclt_s: u32,
    pub split: u8,
    pub secret_file: Option<PathBuf>,
    pub max_unacked_bndupd: u32,
    pub max_batch: u32,
    pub send_timer_s: u32,
    pub receive_timer_s: u32,
    pub startup_timer_s: u32,
    pub connect_retry_s: u32,
    pub max_clock_skew_s: u32,
    /// `on_stop` (`None`: not written, the server's default).
    pub on_stop: Option<&'static str>,
}

impl Default for FailoverCfg {
    /// Hot standby (split 255: the primary serves every client), no secret, timers short
    /// enough that a pair settles within seconds.
    fn default() -> FailoverCfg {
        FailoverCfg {
            name: "pair-a".into(),
            dialect: "ringlease".into(),
            mclt_s: 3600,
            split: 255,
            secret_file: None,
            max_unacked_bndupd: 10,
            max_batch: 16,
            send_timer_s: 2,
            receive_timer_s: 6,
            startup_timer_s: 2,
            connect_retry_s: 1,
            max_clock_skew_s: 60,
            on_stop: None,
        }
    }
}

impl FailoverCfg {
    /// The defaults with a shared secret read from `path`.
    pub fn with_secret(path: PathBuf) -> FailoverCfg {
        FailoverCfg {
            secret_file: Some(path),
            ..FailoverCfg::default()
        }
    }

    pub fn to_toml(&self, role: Role) -> String {
        self.to_toml_at(
            role,
            SocketAddrV4::new(role.addr(), FAILOVER_PORT),
            SocketAddrV4::new(role.partner().addr(), FAILOVER_PORT),
        )
    }

    /// The section with the given failover endpoints (`local`: ours, `peer`: the partner's), for a
    /// topology other than the shared loopback of [`Pair`].
    pub fn to_toml_at(&self, role: Role, local: SocketAddrV4, peer: SocketAddrV4) -> String {
        let mut s = format!(
            "\n[failover]\n\
             name = {:?}\n\
             role = {:?}\n\
             local = \"{}\"\n\
             peer = \"{}\"\n\
             dialect = {:?}\n\
             mclt = {}\n\
             split = {}\n\
             max_unacked_bndupd = {}\n\
             max_batch = {}\n\
             send_timer = {}\n\
             receive_timer = {}\n\
             startup_timer = {}\n\
             connect_retry = {}\n\
             max_clock_skew = {}\n",
            self.name,
            role.name(),
            local,
            peer,
            self.dialect,
            self.mclt_s,
            self.split,
            self.max_unacked_bndupd,
            self.max_batch,
            self.send_timer_s,
            self.receive_timer_s,
            self.startup_timer_s,
            self.connect_retry_s,
            self.max_clock_skew_s,
        );
        if let Some(p) = &self.secret_file {
            s.push_str(&format!("secret_file = {:?}\n", p.display().to_string()));
        }
        if let Some(on_stop) = self.on_stop {
            s.push_str(&format!("on_stop = {on_stop:?}\n"));
        }
        s
    }
}

/// The normal server configuration of `role` (one worker, the given pool).
pub fn server_cfg(role: Role, pool: &str) -> ServerCfg {
    let addr = role.addr().to_string();
    ServerCfg::simple(
        &format!("{addr}:{DHCP_PORT}"),
        &addr,
        "auto",
        SubnetCfg {
            prefix: SUBNET.into(),
            pools: vec![pool.into()],
            lease_time: LEASE_TIME_S,
            routers: Vec::new(),
            dns: Vec::new(),
            reservations: Vec::new(),
        },
    )
}

// ---------------------------------------------------------------------------
// One server of the pair
// ---------------------------------------------------------------------------

/// One ringlease process of the pair. Its directory (config, lease log, control socket, log
/// file) outlives restarts; the process is SIGTERMed, then SIGKILLed, by PID on drop.
pub struct Node {
    pub role: Role,
    ns_name: String,
    child: Option<Child>,
    config_path: PathBuf,
    lease_dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// Starts so far (a restart appends to the same log).
    starts: u32,
    dir: TempDir,
}

impl Node {
    /// Writes the config (the harness's server TOML plus `[failover]`); does not start.
    pub fn new(role: Role, pool: &str, fo: &FailoverCfg, ns: &Netns) -> Node {
        let dir = TempDir::new(&format!("fo{}", &role.name()[..3]));
        let lease_dir = dir.join("leases");
        fs::create_dir_all(&lease_dir).expect("mkdir lease_dir");
        let mut text = server_cfg(role, pool).to_toml(&lease_dir);
        text.push_str(&fo.to_toml(role));
        let config_path = dir.write("ringlease.toml", &text, false);
        Node {
            role,
            ns_name: ns.name().to_string(),
            child: None,
            config_path,
            socket: lease_dir.with_file_name("control.sock"),
            lease_dir,
            log: dir.join("server.log"),
            starts: 0,
            dir,
        }
    }

    /// A node with a configuration of the caller's (`server`: DHCP side, plus `fo` with the
    /// failover endpoints `local` and `peer`) that lives in a namespace of its own, `ns`; writes the
    /// config, does not start. For topologies other than [`Pair`]'s shared loopback.
    pub fn in_own_netns(
        role: Role,
        ns: &Netns,
        server: &ServerCfg,
        fo: &FailoverCfg,
        local: SocketAddrV4,
        peer: SocketAddrV4,
    ) -> Node {
        let dir = TempDir::new(&format!("fo{}", &role.name()[..3]));
        let lease_dir = dir.join("leases");
        fs::create_dir_all(&lease_dir).expect("mkdir lease_dir");
        let mut text = server.to_toml(&lease_dir);
        text.push_str(&fo.to_toml_at(role, local, peer));
        let config_path = dir.write("ringlease.toml", &text, false);
        Node {
            role,
            ns_name: ns.name().to_string(),
            child: None,
            config_path,
            socket: lease_dir.with_file_name("control.sock"),
            lease_dir,
            log: dir.join("server.log"),
            starts: 0,
            dir,
        }
    }

    pub fn name(&self) -> &'static str {
        self.role.name()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn lease_dir(&self) -> &Path {
        &self.lease_dir
    }

    pub fn config_text(&self) -> String {
        read_lossy(&self.config_path)
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }

    /// `ringlease check-config`, then `ringlease serve` inside the namespace; waits (bounded)
    /// for this start's `ready` line and the control socket.
    pub fn start(&mut self, ns: &Netns) {
        assert!(self.child.is_none(), "{} is already running", self.name());
        assert_eq!(ns.name(), self.ns_name, "same namespace as the pair");
        let out = check_config(&self.config_path);
        assert!(
            out.0,
            "`ringlease check-config` rejected the {} config:\n{}\n--- output:\n{}",
            self.name(),
            self.config_text(),
            out.1
        );
        let offset = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0) as usize;
        let mut cmd = ns.cmd(ringlease_bin());
        cmd.arg("serve").arg("--config").arg(&self.config_path);
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        self.starts += 1;
        let name = format!("{} (start {})", self.name(), self.starts);
        let mut child = Child::spawn(&name, cmd, &self.log);
        let log = self.log.clone();
        let socket = self.socket.clone();
        let mut exited = None;
        let ready = wait_for(READY_TIMEOUT, || {
            if let Some(s) = child.try_status() {
                exited = Some(s);
                return Some(false);
            }
            let text = read_lossy(&log);
            let fresh = text.get(offset..).unwrap_or("");
            (is_ready(fresh) && socket.exists()).then_some(true)
        });
        match (ready, exited) {
            (Some(true), _) => {}
            (_, Some(s)) => panic!(
                "{name} exited with {s} before it was ready; config:\n{}\nlog:\n{}",
                self.config_text(),
                self.log()
            ),
            _ => panic!(
                "{name} printed no `ready` line (or made no control socket) within \
                 {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            ),
        }
        self.child = Some(child);
    }

    /// SIGKILL by PID and reap: a crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9: not running");
        let (status, _) = child.stop("KILL", Duration::from_secs(5));
        assert!(
            !status.success(),
            "SIGKILL should end {} abnormally",
            self.name()
        );
    }

    /// SIGTERM and the server's contract: exit 0 within the grace period.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("stop: not running");
        let (status, in_time) = child.stop("TERM", STOP_GRACE);
        assert!(
            in_time && status.success(),
            "{} should exit 0 within {STOP_GRACE:?} of SIGTERM (got {status}, in time: \
             {in_time}); log tail:\n{}",
            self.name(),
            tail(&self.log(), 40)
        );
    }

    /// Fails the test if the process has died.
    pub fn assert_running(&mut self) {
        let name = self.name();
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{name} was never started"));
        if let Some(s) = child.try_status() {
            panic!("{name} died ({s}); log:\n{}", read_lossy(&self.log));
        }
    }

    /// A connection to the control socket.
    pub fn client(&self) -> Result<Client, String> {
        Client::connect(&self.socket)
    }

    /// The whole `status` answer.
    pub fn status(&self) -> Result<Value, String> {
        self.client()?.call(&json!({"cmd": "status"}))
    }

    /// The relationship's entry of `status` (`failover[0]`).
    pub fn failover(&self) -> Result<Value, String> {
        let s = self.status()?;
        match &s["failover"] {
            Value::Array(a) if a.len() == 1 => Ok(a[0].clone()),
            other => Err(format!(
                "{}: status.failover is not one relationship: {other}",
                self.name()
            )),
        }
    }

    /// `lease --ip`: the first entry of `leases`, if any.
    pub fn lease(&self, ip: Ipv4Addr) -> Result<Option<Value>, String> {
        lease_via(&mut self.client()?, ip)
    }

    /// `ringlease log dump DIR`, parsed (address → binding). Safe beside a running server.
    pub fn dump(&self) -> HashMap<Ipv4Addr, Dumped> {
        log_dump(&self.lease_dir)
    }
}

/// `lease --ip` on an open connection.
pub fn lease_via(client: &mut Client, ip: Ipv4Addr) -> Result<Option<Value>, String> {
    let r = client.call(&json!({"cmd": "lease", "ip": ip.to_string()}))?;
    Ok(r["leases"].as_array().and_then(|a| a.first()).cloned())
}

fn is_ready(log: &str) -> bool {
    log.lines().any(|l| {
        l.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w == "ready")
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `ringlease check-config FILE`: accepted?, and what it printed.
pub fn check_config(path: &Path) -> (bool, String) {
    let mut c = Command::new(ringlease_bin());
    c.arg("check-config").arg(path);
    let out = run_bounded(c, Duration::from_secs(10));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One line of `ringlease log dump`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped {
    pub seq: u64,
    pub state: String,
    /// The lease end told to the client.
    pub expires_s: u64,
    /// Start time of the state.
    pub since_s: u64,
    /// Client last transaction time.
    pub cltt_s: u64,
    pub client: String,
}

/// `ringlease log dump DIR` (`seq address state expires since cltt pet acked_pet client`), by
/// address.
pub fn log_dump(dir: &Path) -> HashMap<Ipv4Addr, Dumped> {
    let mut c = Command::new(ringlease_bin());
    c.args(["log", "dump"]).arg(dir);
    let out = run_bounded(c, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "ringlease log dump {} failed ({}): {}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("seq\taddress\tstate\texpires\tsince\tcltt\tpet\tacked_pet\tclient"),
        "log dump header"
    );
    let mut map = HashMap::new();
    for line in lines {
        // A failover relationship's recorded state (`relationship NAME state N since S mclt M
        // seq Q`), not a binding.
        if line.starts_with("relationship\t") {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 9, "log dump line: {line:?}");
        let ip: Ipv4Addr = f[1]
            .parse()
            .unwrap_or_else(|_| panic!("address in {line:?}"));
        let num = |i: usize| -> u64 {
            f[i].parse()
                .unwrap_or_else(|_| panic!("column {i} in {line:?}"))
        };
        let d = Dumped {
            seq: num(0),
            state: f[2].to_string(),
            expires_s: num(3),
            since_s: num(4),
            cltt_s: num(5),
            client: f[8].to_string(),
        };
        assert!(map.insert(ip, d).is_none(), "{ip} twice in the dump");
    }
    map
}

// ---------------------------------------------------------------------------
// The pair
// ---------------------------------------------------------------------------

/// A primary and a secondary in one fresh namespace. Field order is drop order: the servers
/// are stopped before the namespace is deleted.
pub struct Pair {
    pub primary: Node,
    pub secondary: Node,
    pub ns: Netns,
}

impl Pair {
    /// Writes both configs (the same relationship settings, roles mirrored); starts nothing.
    pub fn new(tag: &str, pool: &str, primary: &FailoverCfg, secondary: &FailoverCfg) -> Pair {
        let ns = Netns::new(tag);
        Pair {
            primary: Node::new(Role::Primary, pool, primary, &ns),
            secondary: Node::new(Role::Secondary, pool, secondary, &ns),
            ns,
        }
    }

    /// Starts the primary, then the secondary.
    pub fn start(&mut self) {
        self.primary.start(&self.ns);
        self.secondary.start(&self.ns);
    }

    /// Waits (bounded) until both report NORMAL with the link up, recording every state
    /// either passes through. Panics with both statuses and log tails on timeout.
    pub fn wait_normal(&self, limit: Duration) -> Traces {
        let mut traces = Traces::new();
        let reached = wait_for(limit, || {
            let p = traces.primary.poll(&self.primary);
            let s = traces.secondary.poll(&self.secondary);
            (is_normal(&p) && is_normal(&s)).then_some(())
        });
        if reached.is_none() {
            panic!(
                "the pair did not reach NORMAL with the link up within {limit:?}\n\
                 primary states: {}\nsecondary states: {}\n\
                 primary status: {}\nsecondary status: {}\n\
                 --- primary log tail:\n{}\n--- secondary log tail:\n{}",
                traces.primary,
                traces.secondary,
                show(&self.primary.failover()),
                show(&self.secondary.failover()),
                tail(&self.primary.log(), 40),
                tail(&self.secondary.log(), 40)
            );
        }
        traces
    }
}

pub fn show(v: &Result<Value, String>) -> String {
    match v {
        Ok(v) => v.to_string(),
        Err(e) => format!("(error: {e})"),
    }
}

/// NORMAL with the link up?
pub fn is_normal(fo: &Result<Value, String>) -> bool {
    fo.as_ref()
        .is_ok_and(|v| v["state"] == json!("NORMAL") && v["link"] == json!("up"))
}

/// The `(state, link)` sequence a node went through while polled, with when each was first
/// seen (relative to the trace's start).
pub struct Trace {
    start: Instant,
    pub seen: Vec<(Duration, String, String)>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace {
            start: Instant::now(),
            seen: Vec::new(),
        }
    }

    /// Polls `node` once, records a change, returns what it read.
    pub fn poll(&mut self, node: &Node) -> Result<Value, String> {
        let fo = node.failover();
        let (state, link) = match &fo {
            Ok(v) => (
                v["state"].as_str().unwrap_or("?").to_string(),
                v["link"].as_str().unwrap_or("?").to_string(),
            ),
            Err(_) => ("(no answer)".to_string(), "-".to_string()),
        };
        if self
            .seen
            .last()
            .is_none_or(|(_, s, l)| *s != state || *l != link)
        {
            self.seen.push((self.start.elapsed(), state, link));
        }
        fo
    }

    /// The distinct states, in order.
    pub fn states(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, s, _) in &self.seen {
            if out.last() != Some(s) {
                out.push(s.clone());
            }
        }
        out
    }

    pub fn ever(&self, state: &str) -> bool {
        self.seen.iter().any(|(_, s, _)| s == state)
    }
}

impl Default for Trace {
    fn default() -> Trace {
        Trace::new()
    }
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .seen
            .iter()
            .map(|(t, s, l)| format!("{:.2}s {s} (link {l})", t.as_secs_f64()))
            .collect();
        f.write_str(&parts.join(" -> "))
    }
}

pub struct Traces {
    pub primary: Trace,
    pub secondary: Trace,
}

impl Traces {
    pub fn new() -> Traces {
        Traces {
            primary: Trace::new(),
            secondary: Trace::new(),
        }
    }
}

impl Default for Traces {
    fn default() -> Traces {
        Traces::new()
    }
}

// ---------------------------------------------------------------------------
// Running code inside the namespace
// ---------------------------------------------------------------------------

/// Runs `f` on a fresh thread that has entered `ns`'s network namespace: sockets `f` creates
/// belong to the namespace for their whole life, whichever thread uses them later.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from("/run/netns").join(ns.name());
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // SAFETY: `file` is an open namespace file descriptor for the whole call; setns only
        // changes the network namespace of this thread, a fresh one that ends after `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .expect("thread inside the namespace")
}

// ---------------------------------------------------------------------------
// Relay agent
// ---------------------------------------------------------------------------

/// A lease a client got.
#[derive(Clone, Debug)]
pub struct Granted {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub lease_time_s: u32,
    /// When the ACK arrived.
    pub acked_at: Instant,
    /// Unix seconds when the ACK arrived: `+ lease_time_s` bounds from above the expiry the
    /// server told the client.
    pub acked_unix_s: u64,
}

/// A relay agent at [`RELAY`]:[`DHCP_PORT`] inside the pair's namespace; sends each request
/// to the server the caller names (unicast). The shared loopback relay does the packets.
pub struct NsRelay {
    relay: Relay,
}

impl NsRelay {
    pub fn new(ns: &Netns) -> NsRelay {
        let socket = in_netns(ns, || {
            UdpSocket::bind(SocketAddrV4::new(RELAY, DHCP_PORT)).expect("bind the relay")
        });
        NsRelay {
            relay: Relay::with_socket(socket, SocketAddrV4::new(PRIMARY, DHCP_PORT)),
        }
    }

    /// Client `index`'s hardware address.
    pub fn mac(index: u32) -> [u8; 6] {
        Relay::mac(index)
    }

    /// How the servers name client `index` (`ctl lease`, `log dump`).
    pub fn client_name(index: u32) -> String {
        let hw: Vec<String> = Self::mac(index)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("hw {}", hw.join(":"))
    }

    /// One request to `server`, retransmitted up to [`TRIES`] times while unanswered.
    fn ask(
        &self,
        server: Ipv4Addr,
        index: u32,
        msg: MessageType,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
    ) -> Option<(MessageType, Ipv4Addr, Option<u32>)> {
        let to = SocketAddrV4::new(server, DHCP_PORT);
        (0..TRIES).find_map(|_| {
            self.relay
                .exchange_with(to, index, msg, requested, server_id)
                .map(|a| (a.message_type, a.yiaddr, a.lease_time_s))
        })
    }

    /// DISCOVER, OFFER, REQUEST, ACK with `server` (its server id is its address).
    pub fn dora(&self, server: Ipv4Addr, index: u32) -> Result<Granted, String> {
        let offered = match self.ask(server, index, MessageType::Discover, None, None) {
            Some((MessageType::Offer, ip, _)) => ip,
            other => {
                return Err(format!(
                    "client {index}: DISCOVER to {server} got {other:?}"
                ))
            }
        };
        match self.ask(
            server,
            index,
            MessageType::Request,
            Some(offered),
            Some(server),
        ) {
            Some((MessageType::Ack, ip, Some(lease_time_s))) if ip == offered => Ok(Granted {
                index,
                ip,
                lease_time_s,
                acked_at: Instant::now(),
                acked_unix_s: unix_now_s(),
            }),
            other => Err(format!(
                "client {index}: REQUEST for {offered} to {server} got {other:?}"
            )),
        }
    }

    /// DORA for every index in `range`; panics naming the first failure.
    pub fn lease_many(&self, server: Ipv4Addr, range: std::ops::Range<u32>) -> Vec<Granted> {
        range
            .map(|i| self.dora(server, i).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Checks shared by several tests
// ---------------------------------------------------------------------------

/// Waits (bounded) until `node` shows every lease of `granted` bound to the same client with
/// an expiry at least the one the client was told (`told_expiry_s[i]`). Returns when each
/// first appeared, relative to its ACK.
pub fn wait_replicated(
    node: &Node,
    granted: &[Granted],
    told_expiry_s: &[u64],
    limit: Duration,
) -> Vec<Duration> {
    assert_eq!(granted.len(), told_expiry_s.len());
    let mut client = wait_for(Duration::from_secs(5), || node.client().ok())
        .unwrap_or_else(|| panic!("{}: no control socket", node.name()));
    let mut lag: Vec<Option<Duration>> = vec![None; granted.len()];
    let mut last: Vec<Option<Value>> = vec![None; granted.len()];
    // Polled every few milliseconds (not wait_for's 50 ms) so the printed lag means something.
    let done = poll_until(limit, Duration::from_millis(2), || {
        for (i, g) in granted.iter().enumerate() {
            if lag[i].is_some() {
                continue;
            }
            let l = match lease_via(&mut client, g.ip) {
                Ok(l) => l,
                Err(_) => {
                    // The server may have closed an idle connection: reconnect next turn.
                    if let Ok(c) = node.client() {
                        client = c;
                    }
                    return None;
                }
            };
            if let Some(v) = &l {
                let expires = v["expires_s"].as_u64().unwrap_or(0);
                if v["state"] == json!("bound")
                    && v["client"] == json!(NsRelay::client_name(g.index))
                    && expires >= told_expiry_s[i]
                {
                    lag[i] = Some(g.acked_at.elapsed());
                }
            }
            last[i] = l;
        }
        lag.iter().all(Option::is_some).then_some(())
    });
    if done.is_none() {
        let missing: Vec<String> = granted
            .iter()
            .zip(&last)
            .zip(&lag)
            .zip(told_expiry_s)
            .filter(|(((_, _), lag), _)| lag.is_none())
            .take(10)
            .map(|(((g, l), _), told)| {
                format!(
                    "{} ({}, told expiry {told}): {}",
                    g.ip,
                    NsRelay::client_name(g.index),
                    l.as_ref().map_or("no lease".into(), Value::to_string)
                )
            })
            .collect();
        panic!(
            "{}: {} of {} leases not replicated within {limit:?}; first ones:\n{}\n\
             status: {}\nlog tail:\n{}",
            node.name(),
            lag.iter().filter(|l| l.is_none()).count(),
            granted.len(),
            missing.join("\n"),
            show(&node.failover()),
            tail(&node.log(), 40)
        );
    }
    lag.into_iter().map(Option::unwrap).collect()
}

/// The expiry `node` recorded for each granted lease (what the client was told), checked
/// against the ACK: it lies in `[ack time − 5 s, ack time] + lease time`.
pub fn told_expiries(node: &Node, granted: &[Granted]) -> Vec<u64> {
    let mut client = node.client().expect("control socket");
    granted
        .iter()
        .map(|g| {
            let l = lease_via(&mut client, g.ip)
                .expect("lease query")
                .unwrap_or_else(|| panic!("{}: no lease on {}", node.name(), g.ip));
            assert_eq!(l["state"], json!("bound"), "{}: {l}", node.name());
            assert_eq!(
                l["client"],
                json!(NsRelay::client_name(g.index)),
                "{}: {l}",
                node.name()
            );
            let expires = l["expires_s"].as_u64().expect("expires_s");
            let upper = g.acked_unix_s + u64::from(g.lease_time_s);
            assert!(
                expires <= upper && expires + 5 >= upper,
                "{}: {} expires at {expires}, but the ACK (at {}) said {} s: {l}",
                node.name(),
                g.ip,
                g.acked_unix_s,
                g.lease_time_s
            );
            expires
        })
        .collect()
}

/// Duration statistics for printing.
pub fn summarize(d: &[Duration]) -> String {
    if d.is_empty() {
        return "none".into();
    }
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "n={} min={:.1}ms p50={:.1}ms p99={:.1}ms max={:.1}ms",
        v.len(),
        v[0],
        pct(0.5),
        pct(0.99),
        v[v.len() - 1]
    )
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// `ringlease-loadgen`: beside the server binary (`cargo build --workspace` and `cargo test
/// --workspace` put it there), else built once (bounded) into a target dir of its own, so the
/// nested cargo never waits for the lock of the one running this test.
pub fn loadgen_bin() -> PathBuf {
    let ringlease = ringlease_bin();
    let dir = ringlease.parent().expect("binary dir");
    let beside = dir.join("ringlease-loadgen");
    if beside.exists() {
        return beside;
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let target = dir
        .parent()
        .expect("target dir")
        .join("failover-test-loadgen");
    let built = target.join(profile).join("ringlease-loadgen");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args([
        "build",
        "-p",
        "ringlease-loadgen",
        "--bin",
        "ringlease-loadgen",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .env("CARGO_TARGET_DIR", &target);
    if profile == "release" {
        c.arg("--release");
    }
    eprintln!(
        "building ringlease-loadgen into {} (not found beside {})",
        target.display(),
        ringlease.display()
    );
    let out = run_bounded(c, Duration::from_secs(1200));
    assert!(
        out.status.success() && built.exists(),
        "could not build ringlease-loadgen (`cargo build --release -p ringlease-loadgen`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    built
}

/// The states a server's log says it entered, in order (`failover: state changed … to=X`).
pub fn state_changes(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("failover: state changed"))
        .filter_map(|l| {
            let to = l.split("to=").nth(1)?;
            Some(to.trim_matches('"').split(['"', ' ']).next()?.to_string())
        })
        .collect()
}

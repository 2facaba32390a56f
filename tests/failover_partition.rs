//! DHCP failover across a network partition, with real processes: two `ringlease serve` in two
//! network namespaces joined by a veth pair (the failover link), the clients in a third one,
//! joined to each server by a veth pair of its own. Under load, the failover link is cut (`ip link
//! set … down`): each server goes to COMMUNICATIONS-INTERRUPTED and keeps answering the clients,
//! which still reach both. The link comes back, the pair returns to NORMAL, and:
//!
//! * the load generator (playing a relay agent with both servers as helper addresses) saw no
//!   violation, in particular no address held by two clients at once, whichever server granted it;
//! * both servers answered while the link was down;
//! * afterwards both lease logs hold the same bindings: no address bound to two different clients
//!   across the two databases, every address bound on one side is bound on the other to the same
//!   client, and every address the load generator's clients hold is bound to them on both sides.
//!
//! Topology (198.18.0.0/15, inside namespaces the test creates and deletes):
//!
//! ```text
//!   ns P (primary)                     ns S (secondary)
//!   fo_p 198.18.0.1/30 ── failover ── fo_s 198.18.0.2/30      <- the link that is cut
//!   p_c  198.18.1.1/30                 s_c 198.18.2.1/30
//!          │                                 │
//!   c_p  198.18.1.2/30                 c_s 198.18.2.2/30
//!                  ns C (relay agent, clients)
//!                  lo 198.18.16.1/32 = giaddr, in the served subnet 198.18.16.0/20
//! ```
//!
//! Each server listens on its address towards C and routes the served subnet (hence giaddr) back
//! through C, so both answer the relay by unicast. No broadcast, no raw socket, nothing in the
//! root namespace; every wait is bounded. Needs root.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::failover::{
    is_normal, loadgen_bin, show, state_changes, tail, Dumped, FailoverCfg, Node, Role, Traces,
    DHCP_PORT, FAILOVER_PORT, LEASE_TIME_S,
};
use common::{
    poll_until, read_lossy, require_root, serial, veth_pair, wait_for, Child, Netns, ServerCfg,
    SubnetCfg, TempDir,
};
use serde_json::{json, Value};

const PRIMARY_FO: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SECONDARY_FO: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PRIMARY_DHCP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const C_TO_PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const SECONDARY_DHCP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const C_TO_SECONDARY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 1);
const SUBNET: &str = "198.18.16.0/20";
/// 2,046 addresses for 400 clients, split between the servers (declines hold some for a day).
const POOL: &str = "198.18.17.1-198.18.24.254";
/// The failover link's ends; the primary's is the one switched off and on.
const PRIMARY_FO_IF: &str = "fo_p";
const SECONDARY_FO_IF: &str = "fo_s";

/// Load: a few hundred exchanges per second is plenty for a behaviour test.
const RATE: u32 = 200;
const CLIENTS: u32 = 400;
/// Seconds of issuing; the partition has to fit inside (see the timeline in the test).
const LOAD_SECONDS: u32 = 35;
/// Renewals (to the server that granted) dominate, so they cross the partition; INIT-REBOOT and
/// fresh DORAs go to both servers; releases and declines change bindings while the link is down.
const MIX: &str = "dora=10,renew=60,init-reboot=15,release=10,decline=5";
/// Load before the cut, and how long the partition is held once both sides noticed it.
const BEFORE_CUT: Duration = Duration::from_secs(5);
const HOLD: Duration = Duration::from_secs(8);
/// Bounds (generous: the timers are seconds).
const SETTLE: Duration = Duration::from_secs(60);
const NOTICE: Duration = Duration::from_secs(60);
const CATCH_UP: Duration = Duration::from_secs(90);

const INTERRUPTED: &str = "COMMUNICATIONS-INTERRUPTED";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The DHCP side of one server: listens towards the clients' namespace, serves [`SUBNET`].
fn dhcp_cfg(listen: Ipv4Addr) -> ServerCfg {
    ServerCfg::simple(
        &format!("{listen}:{DHCP_PORT}"),
        &listen.to_string(),
        "auto",
        SubnetCfg {
            prefix: SUBNET.into(),
            pools: vec![POOL.into()],
            lease_time: LEASE_TIME_S,
            routers: Vec::new(),
            dns: Vec::new(),
            reservations: Vec::new(),
        },
    )
}

/// Three namespaces and the two servers. Field order is drop order: the servers are stopped
/// (SIGTERM, then SIGKILL, by PID) before their namespaces are deleted.
struct Topology {
    primary: Node,
    secondary: Node,
    p: Netns,
    s: Netns,
    c: Netns,
}

impl Topology {
    fn new(fo: &FailoverCfg) -> Topology {
        let p = Netns::new("partp");
        let s = Netns::new("parts");
        let c = Netns::new("partc");
        veth_pair(&p, PRIMARY_FO_IF, &s, SECONDARY_FO_IF);
        veth_pair(&p, "p_c", &c, "c_p");
        veth_pair(&s, "s_c", &c, "c_s");
        p.add_addr(PRIMARY_FO_IF, &format!("{PRIMARY_FO}/30"));
        s.add_addr(SECONDARY_FO_IF, &format!("{SECONDARY_FO}/30"));
        p.add_addr("p_c", &format!("{PRIMARY_DHCP}/30"));
        c.add_addr("c_p", &format!("{C_TO_PRIMARY}/30"));
        s.add_addr("s_c", &format!("{SECONDARY_DHCP}/30"));
        c.add_addr("c_s", &format!("{C_TO_SECONDARY}/30"));
        c.add_addr("lo", &format!("{GIADDR}/32"));
        p.ip(&["route", "add", SUBNET, "via", &C_TO_PRIMARY.to_string()]);
        s.ip(&["route", "add", SUBNET, "via", &C_TO_SECONDARY.to_string()]);
        let fo_addr = |ip| SocketAddrV4::new(ip, FAILOVER_PORT);
        let primary = Node::in_own_netns(
            Role::Primary,
            &p,
            &dhcp_cfg(PRIMARY_DHCP),
            fo,
            fo_addr(PRIMARY_FO),
            fo_addr(SECONDARY_FO),
        );
        let secondary = Node::in_own_netns(
            Role::Secondary,
            &s,
            &dhcp_cfg(SECONDARY_DHCP),
            fo,
            fo_addr(SECONDARY_FO),
            fo_addr(PRIMARY_FO),
        );
        Topology {
            primary,
            secondary,
            p,
            s,
            c,
        }
    }

    fn start(&mut self) {
        self.primary.start(&self.p);
        self.secondary.start(&self.s);
    }

    /// `ip link set fo_p up|down` in the primary's namespace: the veth peer loses its carrier too.
    fn failover_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        self.p.ip(&["link", "set", "dev", PRIMARY_FO_IF, state]);
    }

    /// Polls both servers every 50 ms (recording their states) until `done` holds for what they
    /// report or `limit` passes.
    fn watch(
        &self,
        traces: &mut Traces,
        limit: Duration,
        mut done: impl FnMut(&Result<Value, String>, &Result<Value, String>) -> bool,
    ) -> bool {
        wait_for(limit, || {
            let p = traces.primary.poll(&self.primary);
            let s = traces.secondary.poll(&self.secondary);
            done(&p, &s).then_some(())
        })
        .is_some()
    }

    /// Both statuses, both state traces and both log tails, for a failure message.
    fn describe(&self, traces: &Traces) -> String {
        format!(
            "primary states: {}\nsecondary states: {}\nprimary status: {}\n\
             secondary status: {}\n--- primary log tail:\n{}\n--- secondary log tail:\n{}",
            traces.primary,
            traces.secondary,
            show(&self.primary.failover()),
            show(&self.secondary.failover()),
            tail(&self.primary.log(), 40),
            tail(&self.secondary.log(), 40)
        )
    }
}

fn state_is(fo: &Result<Value, String>, state: &str) -> bool {
    fo.as_ref().is_ok_and(|v| v["state"] == json!(state))
}

/// Answers of one server (an entry of the load generator's `servers`) in the whole seconds of
/// its timeline that lie inside `[from_ms, to_ms]` (unix ms).
fn answered_within(server: &Value, start_unix_ms: u64, from_ms: u64, to_ms: u64) -> (u64, u64) {
    let per_second = server["answered_per_second"]
        .as_array()
        .unwrap_or_else(|| panic!("answered_per_second in {server}"));
    let mut answered = 0;
    let mut seconds = 0;
    for (k, n) in per_second.iter().enumerate() {
        let begin = start_unix_ms + 1000 * k as u64;
        if begin >= from_ms && begin + 1000 <= to_ms {
            answered += n.as_u64().expect("a count");
            seconds += 1;
        }
    }
    (answered, seconds)
}

/// `(state, client)` of an address, or None if the dump has no binding for it.
fn entry(m: &HashMap<Ipv4Addr, Dumped>, ip: &Ipv4Addr) -> Option<(String, String)> {
    m.get(ip).map(|d| (d.state.clone(), d.client.clone()))
}

fn bound_client<'a>(m: &'a HashMap<Ipv4Addr, Dumped>, ip: &Ipv4Addr) -> Option<&'a str> {
    m.get(ip)
        .filter(|d| d.state == "bound")
        .map(|d| d.client.as_str())
}

/// Addresses bound on one side that the other side does not hold bound to the same client, each
/// with both sides' entries.
struct Disagreement {
    /// Bound on both, to different clients.
    conflicts: Vec<(Ipv4Addr, String)>,
    /// Bound on the primary only (not bound, or absent, on the secondary).
    primary_only: Vec<(Ipv4Addr, String)>,
    secondary_only: Vec<(Ipv4Addr, String)>,
}

impl Disagreement {
    fn of(p: &HashMap<Ipv4Addr, Dumped>, s: &HashMap<Ipv4Addr, Dumped>) -> Disagreement {
        let addrs: BTreeSet<&Ipv4Addr> = p.keys().chain(s.keys()).collect();
        let mut d = Disagreement {
            conflicts: Vec::new(),
            primary_only: Vec::new(),
            secondary_only: Vec::new(),
        };
        for ip in addrs {
            let line = || {
                format!(
                    "{ip}: primary {:?}, secondary {:?}",
                    entry(p, ip),
                    entry(s, ip)
                )
            };
            match (bound_client(p, ip), bound_client(s, ip)) {
                (Some(a), Some(b)) if a != b => d.conflicts.push((*ip, line())),
                (Some(_), None) => d.primary_only.push((*ip, line())),
                (None, Some(_)) => d.secondary_only.push((*ip, line())),
                _ => {}
            }
        }
        d
    }

    fn is_empty(&self) -> bool {
        self.conflicts.is_empty() && self.primary_only.is_empty() && self.secondary_only.is_empty()
    }

    fn addresses(&self) -> Vec<Ipv4Addr> {
        [&self.conflicts, &self.primary_only, &self.secondary_only]
            .into_iter()
            .flatten()
            .map(|(ip, _)| *ip)
            .collect()
    }
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = |v: &[(Ipv4Addr, String)]| {
            let lines: Vec<&str> = v.iter().take(5).map(|(_, l)| l.as_str()).collect();
            lines.join("\n    ")
        };
        write!(
            f,
            "{} bound to different clients{}\n  {} bound on the primary only{}\n  \
             {} bound on the secondary only{}",
            self.conflicts.len(),
            if self.conflicts.is_empty() {
                String::new()
            } else {
                format!(":\n    {}", first(&self.conflicts))
            },
            self.primary_only.len(),
            if self.primary_only.is_empty() {
                String::new()
            } else {
                format!(":\n    {}", first(&self.primary_only))
            },
            self.secondary_only.len(),
            if self.secondary_only.is_empty() {
                String::new()
            } else {
                format!(":\n    {}", first(&self.secondary_only))
            },
        )
    }
}

fn count_bound(m: &HashMap<Ipv4Addr, Dumped>) -> usize {
    m.values().filter(|d| d.state == "bound").count()
}

/// One line of the load generator's `--bindings` file: a client holding an address at the end.
struct Held {
    index: u32,
    hw: String,
    ip: Ipv4Addr,
    server: String,
}

fn read_bindings(text: &str) -> Vec<Held> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("index\thw\taddress\tserver\texchange\tsince_unix_ms"),
        "--bindings header"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "--bindings line {l:?}");
            Held {
                index: f[0].parse().expect("index"),
                hw: f[1].to_string(),
                ip: f[2].parse().expect("address"),
                server: f[3].to_string(),
            }
        })
        .collect()
}

/// The partition under load (see the module documentation).
///
/// Timeline: NORMAL → load starts → [`BEFORE_CUT`] later the failover link goes down → both
/// servers report COMMUNICATIONS-INTERRUPTED (their receive timer, ≤ [`NOTICE`]) → the load runs
/// through the partition for [`HOLD`] → the link comes up → both NORMAL again (≤ [`CATCH_UP`]) →
/// the load ends ([`LOAD_SECONDS`] of issuing, then its drain) → the two lease logs converge and
/// are compared after both servers stopped.
#[test]
fn partition_under_load_keeps_one_binding_per_address() {
    partition_under_load(false);
}

/// The same partition, but the operator declares the primary down on the secondary
/// (`ringlease ctl partner-down`) while the link is cut: both serve alone, the secondary in
/// PARTNER-DOWN. When the link returns the pair resolves through POTENTIAL-CONFLICT (the primary
/// asks for the secondary's changes, enters CONFLICT-DONE, the secondary asks for the primary's)
/// back to NORMAL, with the same checks. The MCLT (an hour) does not pass, so the secondary never
/// takes the primary's free addresses, and no client may end up with an address another holds.
#[test]
fn partition_with_partner_down_is_resolved_through_potential_conflict() {
    partition_under_load(true);
}

fn partition_under_load(partner_down: bool) {
    let _g = serial();
    require_root();
    let loadgen = loadgen_bin();
    let test_start = Instant::now();
    // Load balancing: in NORMAL each server answers the DISCOVERs of half the clients, in
    // COMMUNICATIONS-INTERRUPTED every client, each from its own half of the free addresses.
    let fo = FailoverCfg {
        split: 128,
        ..FailoverCfg::default()
    };
    let mut net = Topology::new(&fo);
    net.start();
    let mut traces = Traces::new();
    if !net.watch(&mut traces, SETTLE, |p, s| is_normal(p) && is_normal(s)) {
        panic!(
            "the pair did not reach NORMAL within {SETTLE:?}\n{}",
            net.describe(&traces)
        );
    }
    eprintln!("NORMAL after {:.1} s", test_start.elapsed().as_secs_f64());

    // The load, as the relay agent in the clients' namespace with both servers as helpers.
    let scratch = TempDir::new("partlg");
    let json_path = scratch.join("loadgen.json");
    let bindings_path = scratch.join("bindings.tsv");
    let log_path = scratch.join("loadgen.log");
    let mut cmd = net.c.cmd(&loadgen);
    cmd.arg("--server")
        .arg(format!("{PRIMARY_DHCP}:{DHCP_PORT}"))
        .arg("--server")
        .arg(format!("{SECONDARY_DHCP}:{DHCP_PORT}"))
        .arg("--giaddr")
        .arg(GIADDR.to_string())
        .args(["--scenario", "mix", "--mix", MIX])
        .args(["--rate", &RATE.to_string()])
        .args(["--clients", &CLIENTS.to_string()])
        .args(["--duration", &LOAD_SECONDS.to_string()])
        .args(["--subnet", SUBNET])
        .arg("--quiet")
        .arg("--json")
        .arg(&json_path)
        .arg("--bindings")
        .arg(&bindings_path);
    let load_start_ms = unix_ms();
    let mut load = Child::spawn("ringlease-loadgen", cmd, &log_path);
    let load_alive = |load: &mut Child| {
        if let Some(s) = load.try_status() {
            panic!(
                "the load generator ended ({s}) before the partition was over:\n{}",
                read_lossy(&log_path)
            );
        }
    };

    // Load on the healthy pair, then the cut.
    net.watch(&mut traces, BEFORE_CUT, |_, _| false);
    load_alive(&mut load);
    assert!(
        is_normal(&net.primary.failover()) && is_normal(&net.secondary.failover()),
        "NORMAL under load before the cut\n{}",
        net.describe(&traces)
    );
    net.failover_link(false);
    let cut_ms = unix_ms();
    let cut = Instant::now();
    eprintln!("failover link down ({PRIMARY_FO_IF} in {})", net.p.name());

    if !net.watch(&mut traces, NOTICE, |p, s| {
        state_is(p, INTERRUPTED) && state_is(s, INTERRUPTED)
    }) {
        panic!(
            "both servers should report {INTERRUPTED} after the failover link went down \
             (waited {NOTICE:?})\n{}",
            net.describe(&traces)
        );
    }
    let interrupted_ms = unix_ms();
    eprintln!(
        "both {INTERRUPTED} {:.1} s after the cut",
        cut.elapsed().as_secs_f64()
    );
    net.primary.assert_running();
    net.secondary.assert_running();
    let secondary_state = if partner_down {
        let answer = net
            .secondary
            .client()
            .and_then(|mut c| c.call(&json!({"cmd": "partner-down"})));
        assert!(answer.is_ok(), "ctl partner-down: {answer:?}");
        if !net.watch(&mut traces, NOTICE, |_, s| state_is(s, "PARTNER-DOWN")) {
            panic!(
                "the secondary did not enter PARTNER-DOWN\n{}",
                net.describe(&traces)
            );
        }
        "PARTNER-DOWN"
    } else {
        INTERRUPTED
    };

    // The partition under load. Neither side may leave its state meanwhile (PARTNER-DOWN needs
    // an operator or safe_period; NORMAL needs the link).
    let mut left = None;
    net.watch(&mut traces, HOLD, |p, s| {
        if !(state_is(p, INTERRUPTED) && state_is(s, secondary_state)) {
            left = Some(format!("primary {}, secondary {}", show(p), show(s)));
        }
        false
    });
    assert!(
        left.is_none(),
        "a server left {INTERRUPTED} while the link was down: {}\n{}",
        left.unwrap_or_default(),
        net.describe(&traces)
    );
    load_alive(&mut load);
    let partition_p = net.primary.failover().unwrap_or(Value::Null);
    let partition_s = net.secondary.failover().unwrap_or(Value::Null);
    // What each side changed that the other does not know yet.
    let diverged = Disagreement::of(&net.primary.dump(), &net.secondary.dump());
    let up_ms = unix_ms();
    net.failover_link(true);
    let up = Instant::now();
    eprintln!(
        "failover link up after {:.1} s down; at that moment the logs differ in {} addresses \
         (primary queued {}, secondary queued {}):\n  {diverged}",
        cut.elapsed().as_secs_f64(),
        diverged.addresses().len(),
        partition_p["queued"],
        partition_s["queued"]
    );

    if !net.watch(&mut traces, CATCH_UP, |p, s| is_normal(p) && is_normal(s)) {
        panic!(
            "the pair did not return to NORMAL within {CATCH_UP:?} of the link coming back\n{}",
            net.describe(&traces)
        );
    }
    eprintln!(
        "NORMAL again {:.1} s after the link came up",
        up.elapsed().as_secs_f64()
    );

    // The load ends by itself: issuing, then its drain (the retransmission schedule).
    let load_limit = Duration::from_secs(u64::from(LOAD_SECONDS) + 60);
    let status = load
        .wait_timeout(load_limit)
        .unwrap_or_else(|| panic!("the load generator did not finish within {load_limit:?}"));
    let load_out = read_lossy(&log_path);
    eprintln!("--- ringlease-loadgen ({status}):\n{load_out}");
    let report: Value = serde_json::from_str(&read_lossy(&json_path))
        .unwrap_or_else(|e| panic!("no loadgen JSON ({e}); output:\n{load_out}"));
    assert_eq!(
        report["violations"]["total"],
        json!(0),
        "the load generator saw violations: {}",
        report["violations"]
    );
    assert_eq!(report["violations_total"], json!(0), "{report}");
    assert!(
        report["violations"]["by_kind"]
            .get("duplicate_address")
            .is_none(),
        "duplicate addresses: {}",
        report["violations"]
    );
    assert!(
        status.success(),
        "the load generator failed ({status}):\n{load_out}"
    );

    // Answers while the link was down, from each server.
    let start_ms = report["start_unix_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("start_unix_ms in the loadgen JSON: {report}"));
    let servers = report["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("servers in the loadgen JSON: {report}"));
    assert_eq!(servers.len(), 2, "{report}");
    let mut during = Vec::new();
    for (name, srv) in ["primary", "secondary"].iter().zip(servers) {
        let (answered, seconds) = answered_within(srv, start_ms, interrupted_ms, up_ms);
        let (before, before_s) = answered_within(srv, start_ms, load_start_ms, cut_ms);
        eprintln!(
            "{name} ({}): {} answered in all ({} OFFERs taken, {} ACKs, {} NAKs); {answered} in \
             the {seconds} whole seconds both sides were {INTERRUPTED} ({before} in the \
             {before_s} s before the cut)",
            srv["server"], srv["answered"], srv["offers_taken"], srv["acks"], srv["naks"]
        );
        during.push((name, answered, seconds));
    }
    for (name, answered, seconds) in &during {
        assert!(
            *seconds > 0 && *answered > 0,
            "the {name} should answer while the failover link is down ({answered} answers in \
             {seconds} s); timeline starts at {start_ms}, interrupted {interrupted_ms}..{up_ms}: \
             {report}"
        );
    }

    // Replication after the partition: wait (bounded) until nothing is queued or unacked on
    // either side and the two logs agree; then stop both and compare what is on disk.
    let mut last = String::new();
    let converged = poll_until(CATCH_UP, Duration::from_millis(250), || {
        let p = traces.primary.poll(&net.primary).ok()?;
        let s = traces.secondary.poll(&net.secondary).ok()?;
        let drained = |v: &Value| {
            v["queued"] == json!(0)
                && v["outstanding_bndupd"] == json!(0)
                && is_normal(&Ok(v.clone()))
        };
        let d = Disagreement::of(&net.primary.dump(), &net.secondary.dump());
        last = format!(
            "primary queued {} outstanding {}; secondary queued {} outstanding {}; logs: {d}",
            p["queued"], p["outstanding_bndupd"], s["queued"], s["outstanding_bndupd"]
        );
        (drained(&p) && drained(&s) && d.is_empty()).then_some(())
    });
    eprintln!(
        "after the partition: {last}\nprimary states: {}\nsecondary states: {}",
        traces.primary, traces.secondary
    );
    for (name, trace) in [
        ("primary", &traces.primary),
        ("secondary", &traces.secondary),
    ] {
        let states = trace.states();
        assert!(
            trace.ever(INTERRUPTED) && states.last().map(String::as_str) == Some("NORMAL"),
            "the {name} should go NORMAL -> {INTERRUPTED} -> NORMAL: {trace}"
        );
        if !partner_down {
            assert!(
                !trace.ever("POTENTIAL-CONFLICT") && !trace.ever("PARTNER-DOWN"),
                "the {name} went through a state a short partition should not cause: {trace}"
            );
        }
    }
    if partner_down {
        // The resolution takes milliseconds, too short for the status polls: the servers' logs
        // have every change.
        let p = state_changes(&net.primary.log());
        let s = state_changes(&net.secondary.log());
        eprintln!("state changes logged:\n  primary:   {p:?}\n  secondary: {s:?}");
        assert!(
            p.ends_with(&[
                "COMMUNICATIONS-INTERRUPTED".into(),
                "POTENTIAL-CONFLICT".into(),
                "CONFLICT-DONE".into(),
                "NORMAL".into()
            ]),
            "the primary should resolve through POTENTIAL-CONFLICT and CONFLICT-DONE: {p:?}"
        );
        assert!(
            s.ends_with(&[
                "PARTNER-DOWN".into(),
                "POTENTIAL-CONFLICT".into(),
                "NORMAL".into()
            ]),
            "the secondary should go PARTNER-DOWN, POTENTIAL-CONFLICT, NORMAL: {s:?}"
        );
    }
    let final_p = net.primary.failover();
    let final_s = net.secondary.failover();
    assert!(
        converged.is_some(),
        "the two lease logs did not converge within {CATCH_UP:?} of NORMAL: {last}\n{}",
        net.describe(&traces)
    );
    net.secondary.stop();
    net.primary.stop();

    let pd = net.primary.dump();
    let sd = net.secondary.dump();
    let agree = Disagreement::of(&pd, &sd);
    eprintln!(
        "lease logs after stopping: primary {} addresses ({} bound), secondary {} addresses ({} \
         bound); {agree}",
        pd.len(),
        count_bound(&pd),
        sd.len(),
        count_bound(&sd)
    );
    assert!(
        agree.conflicts.is_empty(),
        "addresses bound to different clients across the two databases:\n  {agree}"
    );
    assert!(
        agree.is_empty(),
        "bindings made on one side did not reach the other:\n  {agree}\nprimary: {}\n\
         secondary: {}",
        show(&final_p),
        show(&final_s)
    );
    // What either side changed during the partition is now the same on both: bound to one
    // client on both sides, or bound on neither.
    let diverged_at_up = diverged.addresses();
    let now_bound = diverged_at_up
        .iter()
        .filter(|ip| bound_client(&pd, ip).is_some())
        .count();
    assert!(
        !diverged_at_up.is_empty(),
        "the partition should leave changes for the other side to catch up on"
    );

    // Every address the clients hold at the end is theirs on both sides.
    let held = read_bindings(&read_lossy(&bindings_path));
    let mut wrong = Vec::new();
    let mut by_server: HashMap<&str, usize> = HashMap::new();
    for h in &held {
        *by_server.entry(h.server.as_str()).or_default() += 1;
        let want = format!("hw {}", h.hw);
        let (p, s) = (bound_client(&pd, &h.ip), bound_client(&sd, &h.ip));
        if p != Some(want.as_str()) || s != Some(want.as_str()) {
            wrong.push(format!(
                "client {} ({want}) holds {} from {}: primary {:?}, secondary {:?}",
                h.index,
                h.ip,
                h.server,
                entry(&pd, &h.ip),
                entry(&sd, &h.ip)
            ));
        }
    }
    eprintln!(
        "{} clients hold an address at the end (by server: {by_server:?}); of the {} \
         addresses that differed at link-up, {now_bound} are now bound on both sides to one \
         client, the rest on neither; test took {:.1} s",
        held.len(),
        diverged_at_up.len(),
        test_start.elapsed().as_secs_f64()
    );
    assert!(!held.is_empty(), "no client holds an address at the end");
    assert!(
        wrong.is_empty(),
        "{} of {} addresses the load generator was ACKed are not bound to its client on both \
         sides; first:\n{}",
        wrong.len(),
        held.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

//! Interoperability with the real ISC dhcpd 4.4 (Debian's isc-dhcp-server) as the failover
//! partner of ringlease (`dialect = "isc"`): the promise that an operator can replace one
//! dhcpd of a pair with ringlease, keep the pair in NORMAL, then replace the other.
//!
//! Each test builds the topology of `common/isc.rs` (four namespaces of its own: ringlease,
//! dhcpd, a relay agent and a real dhclient on one bridged LAN) and checks, from both sides —
//! ringlease's `ctl status` and lease log (`log dump`), dhcpd's log and its dhcpd.leases (the last
//! record per address wins):
//!
//! 1. `*_load_balance`, `*_hot_standby*`: a cold pair (both fresh) reaches NORMAL in both roles
//!    and both modes; the pool is balanced the ISC way (every free address starts the primary's,
//!    the primary gives the secondary BACKUP addresses; both databases agree on which); leases
//!    either side grants, to the load generator and to a real dhclient, are in both databases
//!    with the same client and state; in load balance the secondary serves new clients from its
//!    BACKUP addresses; one test keeps the pair quiet for 60 s and counts the CONTACTs on the wire.
//! 2. `ringlease_restart_*`: ringlease restarted with its lease log and then with an empty one
//!    recovers from dhcpd (the empty one through RECOVER, RECOVER-WAIT for the MCLT,
//!    RECOVER-DONE, answering no client until then) and has what dhcpd granted meanwhile.
//! 3. `dhcpd_stopped_*`: dhcpd stopped under load; ringlease COMMUNICATIONS-INTERRUPTED keeps
//!    dhcpd's clients on their addresses, after `ctl partner-down` (and the MCLT) serves beyond its
//!    own half of the pool; dhcpd comes back, the pair returns to NORMAL, and no address is bound
//!    to two clients across the two databases.
//! 4. `isc_has_no_failover_secret`: dhcpd 4.4 has no peer statement for a key; ringlease refuses a
//!    secret with the isc dialect.
//!
//! Needs root, `dhcpd`, `dhclient` and (for the CONTACT count) `tshark`. Every wait is bounded;
//! nothing leaves the namespaces.

mod common;
#[path = "common/isc.rs"]
mod isc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::failover::{is_normal, loadgen_bin, state_changes, tail, Dumped, Role, Trace};
use common::{
    read_lossy, require_root, require_tool, run_bounded, serial, wait_for, Child, Netns, TempDir,
};
use isc::{
    IscLeases, Lab, PairCfg, DHCLIENT_MAC, DHCP_PORT, FAILOVER_PORT, GIADDR, RELAYED, RELAYED_POOL,
};
use serde_json::{json, Value};

/// Bound on a cold pair reaching NORMAL (ISC moves at once; generous for a loaded CI machine).
const SETTLE: Duration = Duration::from_secs(60);
/// Bound on bindings showing up in the other database.
const AGREE: Duration = Duration::from_secs(40);
const DHCLIENT_WAIT: Duration = Duration::from_secs(40);
const LOAD_CLIENTS: u32 = 60;

// ---------------------------------------------------------------------------
// Watching both sides
// ---------------------------------------------------------------------------

fn rl_state(fo: &Result<Value, String>) -> Option<String> {
    fo.as_ref()
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string))
}

/// dhcpd's view by its lease file: its own and its partner's state both `normal`.
fn isc_normal(l: &IscLeases) -> bool {
    l.failover
        .as_ref()
        .is_some_and(|f| f.my_state == "normal" && f.partner_state == "normal")
}

/// Waits (bounded) until ringlease reports NORMAL with the link up and dhcpd's lease file says
/// `my state normal` and `partner state normal`. Returns ringlease's trace.
fn wait_both_normal(lab: &Lab, limit: Duration, trace: &mut Trace) {
    let ok = wait_for(limit, || {
        let fo = trace.poll(&lab.rl);
        (is_normal(&fo) && isc_normal(&lab.isc.leases())).then_some(())
    });
    if ok.is_none() {
        panic!(
            "the pair did not reach NORMAL on both sides within {limit:?}\n\
             ringlease states: {trace}\n{}",
            lab.describe()
        );
    }
}

/// Waits (bounded) for ringlease to report `state`.
fn wait_rl_state(lab: &Lab, state: &str, limit: Duration, trace: &mut Trace) {
    let ok = wait_for(limit, || {
        (rl_state(&trace.poll(&lab.rl)).as_deref() == Some(state)).then_some(())
    });
    if ok.is_none() {
        panic!(
            "ringlease did not reach {state} within {limit:?}\nringlease states: {trace}\n{}",
            lab.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// One client of the load generator holding an address at the end of its run.
#[derive(Clone, Debug)]
struct Held {
    hw: String,
    ip: Ipv4Addr,
    server: String,
}

struct LoadRun {
    json: Value,
    held: Vec<Held>,
}

impl LoadRun {
    fn by_server(&self, server: Ipv4Addr) -> Vec<&Held> {
        let s = server.to_string();
        self.held
            .iter()
            .filter(|h| h.server == s || h.server.starts_with(&format!("{s}:")))
            .collect()
    }
}

/// `ringlease-loadgen` as the relay agent at [`GIADDR`] in ns C towards `servers`: `clients`
/// clients (the same identities in every run with the same `seed`), as many exchanges of
/// `scenario` at 30/s. Fails the test on a violation (e.g. an address offered to two clients).
fn loadgen(lab: &Lab, servers: &[Ipv4Addr], scenario: &str, clients: u32, seed: u32) -> LoadRun {
    loadgen_in(&lab.c, servers, scenario, clients, seed)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.describe()))
}

/// [`loadgen`] from the namespace `c` (borrowing nothing else of the lab): `Err` on violations.
fn loadgen_in(
    c: &Netns,
    servers: &[Ipv4Addr],
    scenario: &str,
    clients: u32,
    seed: u32,
) -> Result<LoadRun, String> {
    let scratch = TempDir::new("isclg");
    let json_path = scratch.join("loadgen.json");
    let bindings = scratch.join("bindings.tsv");
    let log = scratch.join("loadgen.log");
    let mut cmd = c.cmd(loadgen_bin());
    for s in servers {
        cmd.arg("--server").arg(format!("{s}:{DHCP_PORT}"));
    }
    cmd.arg("--giaddr")
        .arg(GIADDR.to_string())
        .args(["--scenario", scenario])
        .args(["--clients", &clients.to_string()])
        .args(["--exchanges", &clients.to_string()])
        .args(["--rate", "30", "--seed", &seed.to_string()])
        .args(["--subnet", RELAYED])
        .args(["--drain", "5", "--quiet"])
        .arg("--json")
        .arg(&json_path)
        .arg("--bindings")
        .arg(&bindings);
    let mut child = Child::spawn("ringlease-loadgen", cmd, &log);
    let status = child
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("loadgen still running after 60 s:\n{}", read_lossy(&log)));
    let json: Value = serde_json::from_str(&read_lossy(&json_path)).unwrap_or_else(|e| {
        panic!(
            "loadgen wrote no JSON ({e}), exit {status}:\n{}",
            read_lossy(&log)
        )
    });
    if !status.success() {
        return Err(format!(
            "loadgen reported violations (exit {status}):\n{}",
            read_lossy(&log)
        ));
    }
    let text = read_lossy(&bindings);
    let held = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "--bindings line {l:?}");
            Held {
                hw: f[1].to_ascii_lowercase(),
                ip: f[2].parse().expect("address"),
                server: f[3].to_string(),
            }
        })
        .collect();
    Ok(LoadRun { json, held })
}

// ---------------------------------------------------------------------------
// Comparing the two databases
// ---------------------------------------------------------------------------

#[test]
fn isc_time_reads_dhcpd_dates() {
    assert_eq!(isc::isc_time("4 2026/12/03 05:46:01"), Some(1_796_276_761));
    assert_eq!(isc::isc_time("2 2000/02/29 23:59:59"), Some(951_868_799));
    assert_eq!(isc::isc_time("5 2024/03/01 00:00:00"), Some(1_709_251_200));
    assert_eq!(isc::isc_time("4 1970/01/01 00:00:00"), Some(0));
    assert_eq!(isc::isc_time("epoch 1700000000"), Some(1_700_000_000));
    assert_eq!(isc::isc_time("never"), None);
    assert_eq!(isc::isc_time("4 2026/12/03"), None);
}

fn hw_of(client: &str) -> Option<String> {
    client.strip_prefix("hw ").map(str::to_ascii_lowercase)
}

/// Where the two databases' times of one binding differ: the lease end told to the client
/// (`ends`), the start of the state (`starts`) and the client's last transaction time (`cltt`)
/// travel in every BNDUPD both ways, so a replicated binding has the same ones. dhcpd does
/// not store the `cltt` of a binding it learnt from its partner but keeps the one of its own
/// last grant of the address (docs/interop.md): its `cltt` is compared only where it belongs
/// to this binding, i.e. is not before its `starts`.
fn times_differ(r: &Dumped, i: &isc::IscLease) -> Option<String> {
    let isc_cltt = i.cltt.filter(|&c| i.starts.is_some_and(|s| c >= s));
    let ours = (
        Some(r.expires_s),
        Some(r.since_s),
        isc_cltt.map(|_| r.cltt_s),
    );
    let theirs = (i.ends, i.starts, isc_cltt);
    (ours != theirs)
        .then(|| format!("times (ends, starts, cltt) differ: ringlease {ours:?}, dhcpd {theirs:?}"))
}

/// What is wrong with `expected` (address → client hw): not bound to that client in ringlease's
/// lease log, or not `active` with that `hardware ethernet` in dhcpd.leases, or bound on both
/// with different times.
fn missing(
    rl: &HashMap<Ipv4Addr, Dumped>,
    isc: &IscLeases,
    expected: &BTreeMap<Ipv4Addr, String>,
    ended_ok: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let ended = |s: &str| matches!(s, "free" | "expired" | "released");
    for (ip, hw) in expected {
        let r = rl.get(ip);
        let r_ok = r.is_some_and(|d| d.state == "bound" && hw_of(&d.client).as_ref() == Some(hw));
        let i = isc.leases.get(ip);
        let i_ok = i.is_some_and(|l| l.state == "active" && l.hw.as_ref() == Some(hw));
        // Both ended for this client: the binding reached us and ran out since.
        let both_ended = ended_ok
            && r.is_some_and(|d| ended(&d.state) && hw_of(&d.client).as_ref() == Some(hw))
            && i.is_some_and(|l| ended(&l.state) && l.hw.as_ref() == Some(hw));
        if r_ok && i_ok {
            if let Some(why) = times_differ(r.unwrap(), i.unwrap()) {
                out.push(format!("{ip} (client {hw}): {why}"));
            }
        } else if !both_ended {
            out.push(format!(
                "{ip} (client {hw}): ringlease {:?}, dhcpd {:?}",
                r.map(|d| (&d.state, &d.client)),
                i
            ));
        }
    }
    out
}

/// Waits (bounded) until both databases hold every expected binding.
fn wait_agree(lab: &Lab, expected: &BTreeMap<Ipv4Addr, String>, limit: Duration) {
    wait_agree_with(lab, expected, limit, false);
}

/// [`wait_agree`], also content with a binding that both databases hold as ended for its
/// client: MCLT-long leases granted while we were down may have run out by the time we are
/// back, and that their client is on our record shows the update reached us.
fn wait_agree_or_ended(lab: &Lab, expected: &BTreeMap<Ipv4Addr, String>, limit: Duration) {
    wait_agree_with(lab, expected, limit, true);
}

fn wait_agree_with(
    lab: &Lab,
    expected: &BTreeMap<Ipv4Addr, String>,
    limit: Duration,
    ended_ok: bool,
) {
    let started = Instant::now();
    let mut last = Vec::new();
    let ok = wait_for(limit, || {
        last = missing(&lab.rl.dump(), &lab.isc.leases(), expected, ended_ok);
        last.is_empty().then_some(())
    });
    if ok.is_none() {
        panic!(
            "{} of {} bindings not in both databases within {limit:?}; first ones:\n{}\n{}",
            last.len(),
            expected.len(),
            last.iter().take(10).cloned().collect::<Vec<_>>().join("\n"),
            lab.describe()
        );
    }
    eprintln!(
        "{} bindings in both databases after {:.1} s",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
}

/// No address bound to two different clients, within either database or across them, and no
/// client bound to two addresses of one subnet's pool in ringlease's log.
fn assert_no_duplicates(lab: &Lab) {
    let rl = lab.rl.dump();
    let isc = lab.isc.leases();
    let mut conflicts = Vec::new();
    for (ip, d) in &rl {
        if d.state != "bound" {
            continue;
        }
        if let Some(l) = isc.leases.get(ip) {
            if l.state == "active" && l.hw != hw_of(&d.client) {
                conflicts.push(format!("{ip}: ringlease {}, dhcpd {:?}", d.client, l.hw));
            }
        }
    }
    assert!(
        conflicts.is_empty(),
        "addresses bound to two different clients across the databases:\n{}\n{}",
        conflicts.join("\n"),
        lab.describe()
    );
    let mut per_client: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    for (ip, l) in &isc.leases {
        if l.state == "active" {
            if let Some(hw) = &l.hw {
                per_client.entry(hw.clone()).or_default().push(*ip);
            }
        }
    }
    let twice: Vec<String> = per_client
        .iter()
        .filter(|(_, ips)| ips.len() > 1)
        .map(|(hw, ips)| format!("{hw}: {ips:?}"))
        .collect();
    assert!(
        twice.is_empty(),
        "dhcpd holds one client active on two addresses:\n{}",
        twice.join("\n")
    );
}

fn expected_of(held: &[Held]) -> BTreeMap<Ipv4Addr, String> {
    let mut m = BTreeMap::new();
    for h in held {
        assert!(
            m.insert(h.ip, h.hw.clone()).is_none(),
            "the load generator holds {} twice",
            h.ip
        );
    }
    m
}

/// The BACKUP addresses (the secondary's free ones) agree between the databases: what dhcpd's
/// lease file says is `backup` is `backup` in ringlease's log and the other way round. Returns
/// them.
fn wait_backup_agree(lab: &Lab, limit: Duration) -> BTreeSet<Ipv4Addr> {
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let ok = wait_for(limit, || {
        let isc: BTreeSet<Ipv4Addr> = lab.isc.leases().in_state("backup").into_iter().collect();
        let rl: BTreeSet<Ipv4Addr> = lab
            .rl
            .dump()
            .into_iter()
            .filter(|(_, d)| d.state == "backup")
            .map(|(ip, _)| ip)
            .collect();
        let done = !isc.is_empty() && isc == rl;
        last = (isc, rl);
        done.then_some(())
    });
    let (isc, rl) = last;
    if ok.is_none() {
        panic!(
            "BACKUP addresses disagree after {limit:?}: dhcpd has {}, ringlease {}; only dhcpd: \
             {:?}; only ringlease: {:?}\n{}",
            isc.len(),
            rl.len(),
            isc.difference(&rl).take(10).collect::<Vec<_>>(),
            rl.difference(&isc).take(10).collect::<Vec<_>>(),
            lab.describe()
        );
    }
    isc
}

fn in_relayed_pool(ip: &Ipv4Addr) -> bool {
    let a: Ipv4Addr = RELAYED_POOL.0.parse().unwrap();
    let b: Ipv4Addr = RELAYED_POOL.1.parse().unwrap();
    (a..=b).contains(ip)
}

/// Counts the failover messages of each type from each side on the failover veth of the
/// ringlease namespace for `secs` seconds (tshark, bounded by its own autostop).
fn count_failover_messages(lab: &Lab, secs: u32) -> BTreeMap<(String, u32), u32> {
    let tshark = require_tool("tshark", "tshark");
    let dir = TempDir::new("isccap");
    let pcap = dir.join("fo.pcap");
    let iface = match lab.rl.role {
        Role::Primary => "fo_p",
        Role::Secondary => "fo_s",
    };
    let mut cap = lab.rl_ns.cmd(&tshark);
    cap.args([
        "-q",
        "-i",
        iface,
        "-f",
        &format!("tcp port {FAILOVER_PORT}"),
    ])
    .args(["-a", &format!("duration:{secs}"), "-w"])
    .arg(&pcap);
    let out = run_bounded(cap, Duration::from_secs(u64::from(secs) + 30));
    assert!(out.status.success(), "tshark capture failed: {out:?}");
    let mut read = Command::new(&tshark);
    read.arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("tcp.port=={FAILOVER_PORT},dhcpfo")])
        .args([
            "-Y",
            "dhcpfo",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "dhcpfo.type",
        ]);
    let out = run_bounded(read, Duration::from_secs(60));
    assert!(out.status.success(), "tshark read failed: {out:?}");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split('\t');
        let (Some(src), Some(types)) = (f.next(), f.next()) else {
            continue;
        };
        // Several messages in one segment: a comma-separated list.
        for t in types.split(',') {
            if let Ok(t) = t.trim().parse::<u32>() {
                *counts.entry((src.to_string(), t)).or_default() += 1;
            }
        }
    }
    counts
}

const CONTACT: u32 = 11;

// ---------------------------------------------------------------------------
// 1. Cold start, replication, pool balance, CONTACT
// ---------------------------------------------------------------------------

/// A cold pair in `split` mode with ringlease as `rl_role`; `quiet_s` seconds without any DHCP
/// traffic after NORMAL (0 = none).
fn cold_pair(tag: &str, rl_role: Role, split: u8, quiet_s: u32) {
    let _g = serial();
    require_root();
    let started = Instant::now();
    let cfg = PairCfg {
        split,
        ..PairCfg::default()
    };
    let mut lab = Lab::new(tag, rl_role, cfg);
    // dhcpd first: it is ringlease that has to cope with whatever dhcpd does at startup.
    lab.start_isc();
    lab.start_rl();
    let mut trace = Trace::new();
    wait_both_normal(&lab, SETTLE, &mut trace);
    eprintln!(
        "NORMAL on both sides after {:.1} s; ringlease: {trace}; dhcpd: {:?}",
        started.elapsed().as_secs_f64(),
        lab.isc.state_moves()
    );
    let fo = lab.rl.failover().unwrap();
    assert_eq!(fo["partner_state"], json!("NORMAL"), "{fo}");
    assert_eq!(fo["mclt"], json!(lab.cfg.mclt_s), "MCLT agreed: {fo}");
    if rl_role == Role::Secondary {
        assert_eq!(
            lab.isc.leases().failover.unwrap().mclt,
            None,
            "an ISC primary writes no mclt line"
        );
    } else {
        assert_eq!(
            lab.isc.leases().failover.unwrap().mclt,
            Some(lab.cfg.mclt_s),
            "the ISC secondary learnt our MCLT from CONNECT"
        );
    }

    // Pool balance: the primary gave the secondary BACKUP addresses; both agree on which.
    let backup = wait_backup_agree(&lab, Duration::from_secs(30));
    let relayed_backup = backup.iter().filter(|ip| in_relayed_pool(ip)).count();
    eprintln!(
        "BACKUP addresses (the secondary's): {} in all, {relayed_backup} of the 254 relayed",
        backup.len()
    );
    assert!(
        (20..=150).contains(&relayed_backup),
        "the secondary should hold a share of the relayed pool: {relayed_backup} of 254"
    );

    if quiet_s > 0 {
        // No DHCP traffic at all: only CONTACTs keep the link up; NORMAL throughout.
        let isc_log_before = lab.isc.log().len();
        let counter = {
            std::thread::scope(|s| {
                let h = s.spawn(|| count_failover_messages(&lab, quiet_s));
                let watch_until = Instant::now() + Duration::from_secs(u64::from(quiet_s));
                let mut quiet = Trace::new();
                while Instant::now() < watch_until {
                    let fo = quiet.poll(&lab.rl);
                    assert!(
                        is_normal(&fo),
                        "ringlease left NORMAL during the quiet period: {quiet}\n{}",
                        lab.describe()
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
                h.join().expect("capture thread")
            })
        };
        let rl_ip = match rl_role {
            Role::Primary => isc::PRIMARY_FO,
            Role::Secondary => isc::SECONDARY_FO,
        }
        .to_string();
        let (mut from_rl, mut from_isc, mut other) = (0, 0, Vec::new());
        for ((src, t), n) in &counter {
            match (*t, src == &rl_ip) {
                (CONTACT, true) => from_rl += n,
                (CONTACT, false) => from_isc += n,
                _ => other.push(format!("{n} x type {t} from {src}")),
            }
        }
        eprintln!(
            "quiet {quiet_s} s: CONTACT from ringlease {from_rl}, from dhcpd {from_isc}; \
             other messages: {other:?}"
        );
        assert!(
            from_rl >= 3 && from_isc >= 3,
            "several CONTACTs each way in {quiet_s} s of silence: ringlease sent {from_rl}, \
             dhcpd {from_isc}"
        );
        assert!(isc_normal(&lab.isc.leases()), "{}", lab.describe());
        let during = lab
            .isc
            .log()
            .get(isc_log_before..)
            .unwrap_or("")
            .to_string();
        assert!(
            !during.contains(" moves from ") && !during.contains("I move from"),
            "dhcpd changed state during the quiet period:\n{during}\n{}",
            lab.describe()
        );
        // Only CONTACTs: no pool-balancing churn between the two balancers.
        assert!(
            other.is_empty(),
            "messages other than CONTACT during the quiet period: {other:?}"
        );
        lab.isc.assert_running();
    }

    // Clients: the load generator through both servers, and a real dhclient on the LAN.
    let run = loadgen(
        &lab,
        &[lab.rl_lan(), lab.isc_lan()],
        "dora",
        LOAD_CLIENTS,
        1,
    );
    let by_rl = run.by_server(lab.rl_lan());
    let by_isc = run.by_server(lab.isc_lan());
    eprintln!(
        "load: {} clients hold addresses: {} from ringlease, {} from dhcpd; loadgen: {}",
        run.held.len(),
        by_rl.len(),
        by_isc.len(),
        run.json["violations"]
    );
    assert!(
        run.held.len() as u32 >= LOAD_CLIENTS * 9 / 10,
        "most clients should hold an address: {} of {LOAD_CLIENTS}",
        run.held.len()
    );
    let secondary_served = match rl_role {
        Role::Primary => &by_isc,
        Role::Secondary => &by_rl,
    };
    if split == 128 {
        // Load balancing: each answers its half of the clients; the secondary allocates from
        // the BACKUP addresses the primary gave it (with dialect isc every free address starts
        // the primary's).
        assert!(
            !by_rl.is_empty() && !by_isc.is_empty(),
            "both servers should serve new clients in load balance: ringlease {}, dhcpd {}",
            by_rl.len(),
            by_isc.len()
        );
        let not_backup: Vec<Ipv4Addr> = secondary_served
            .iter()
            .map(|h| h.ip)
            .filter(|ip| !backup.contains(ip))
            .collect();
        assert!(
            not_backup.is_empty(),
            "the secondary allocated addresses that were not BACKUP: {not_backup:?}"
        );
    }
    let (mut dhclient, dh_ip, dh_sid) = isc::Dhclient::obtain(&lab.d, "d0", DHCLIENT_WAIT);
    eprintln!("dhclient got {dh_ip} from {dh_sid}");
    assert!(
        dh_sid == lab.rl_lan() || dh_sid == lab.isc_lan(),
        "dhclient's server id {dh_sid} is neither server"
    );
    dhclient.stop();

    let mut expected = expected_of(&run.held);
    expected.insert(dh_ip, DHCLIENT_MAC.to_string());
    wait_agree(&lab, &expected, AGREE);
    assert_no_duplicates(&lab);
    let fo = lab.rl.failover().unwrap();
    assert!(is_normal(&Ok(fo.clone())), "{fo}");
    assert_eq!(fo["updates_rejected"], json!(0), "{fo}");
    assert!(
        !lab.isc.log().contains("reject"),
        "dhcpd rejected something:\n{}",
        lab.describe()
    );
    lab.isc.assert_running();
    lab.rl.assert_running();
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn ringlease_primary_isc_secondary_load_balance() {
    cold_pair("ilbp", Role::Primary, 128, 0);
}

#[test]
fn isc_primary_ringlease_secondary_load_balance() {
    cold_pair("ilbs", Role::Secondary, 128, 0);
}

/// Hot standby with a dhcpd primary, and 60 s without DHCP traffic: CONTACT keeps the link up.
#[test]
fn isc_primary_ringlease_secondary_hot_standby_quiet_60s() {
    cold_pair("ihss", Role::Secondary, 255, 60);
}

#[test]
fn ringlease_primary_isc_secondary_hot_standby() {
    cold_pair("ihsp", Role::Primary, 255, 0);
}

// ---------------------------------------------------------------------------
// 4. Secrets
// ---------------------------------------------------------------------------

/// dhcpd 4.4 has no peer statement for a shared secret or key (its failover implements no
/// message digest), and ringlease refuses a secret with `dialect = "isc"`.
#[test]
fn isc_has_no_failover_secret() {
    let dhcpd = require_tool("dhcpd", "isc-dhcp-server");
    let dir = TempDir::new("iscsec");
    let conf = PairCfg::default().dhcpd_conf(Role::Primary);
    let plain = dir.write("plain.conf", &conf, false);
    let with_secret = dir.write(
        "secret.conf",
        &conf.replace(
            "max-unacked-updates 10;",
            "max-unacked-updates 10;\n  secret \"s3cret\";",
        ),
        false,
    );
    let check = |p: &std::path::Path| {
        let mut c = Command::new(&dhcpd);
        c.args(["-4", "-t", "-cf"]).arg(p);
        let out = run_bounded(c, Duration::from_secs(20));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = check(&plain);
    assert!(ok, "dhcpd -t should accept the plain config:\n{text}");
    let (ok, text) = check(&with_secret);
    assert!(
        !ok && text.contains("invalid statement in peer declaration"),
        "dhcpd 4.4 should refuse a secret in the peer block:\n{text}"
    );
    // ringlease: the same relationship with a secret and dialect isc is refused.
    let key = dir.write("fo.key", "0123456789abcdef0123456789abcdef\n", false);
    let mut fo = PairCfg::default().ringlease();
    fo.secret_file = Some(key);
    let lease_dir = dir.join("leases");
    std::fs::create_dir_all(&lease_dir).unwrap();
    let text = isc::ringlease_server_cfg(Role::Primary).to_toml(&lease_dir)
        + &fo.to_toml_at(
            Role::Primary,
            std::net::SocketAddrV4::new(isc::PRIMARY_FO, FAILOVER_PORT),
            std::net::SocketAddrV4::new(isc::SECONDARY_FO, FAILOVER_PORT),
        );
    let path = dir.write("ringlease.toml", &text, false);
    let (ok, out) = common::failover::check_config(&path);
    assert!(
        !ok && out.contains("isc"),
        "check-config should refuse a secret with dialect isc:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// 2. ringlease restarted: with its lease log, then with an empty one
// ---------------------------------------------------------------------------

/// Waits (bounded) until dhcpd's log says it moved to `state`.
fn wait_isc_state(lab: &Lab, state: &str, limit: Duration) {
    let ok = wait_for(limit, || {
        (lab.isc.state().as_deref() == Some(state)).then_some(())
    });
    if ok.is_none() {
        panic!(
            "dhcpd did not move to {state} within {limit:?}\n{}",
            lab.describe()
        );
    }
}

/// Every address dhcpd's lease file has `active` is bound to the same client in ringlease's
/// log (empty when they agree).
fn isc_active_not_in_rl(lab: &Lab) -> Vec<String> {
    let rl = lab.rl.dump();
    lab.isc
        .leases()
        .leases
        .iter()
        .filter(|(_, l)| l.state == "active")
        .filter(|(ip, l)| {
            !rl.get(ip)
                .is_some_and(|d| d.state == "bound" && hw_of(&d.client) == l.hw)
        })
        .map(|(ip, l)| format!("{ip}: dhcpd {l:?}, ringlease {:?}", rl.get(ip)))
        .collect()
}

#[test]
fn ringlease_restart_recovers_from_isc() {
    let _g = serial();
    require_root();
    let started = Instant::now();
    let cfg = PairCfg {
        split: 128,
        mclt_s: 30,
        ..PairCfg::default()
    };
    let mut lab = Lab::new("irst", Role::Primary, cfg);
    lab.start_isc();
    lab.start_rl();
    let mut trace = Trace::new();
    wait_both_normal(&lab, SETTLE, &mut trace);
    let both = [lab.rl_lan(), lab.isc_lan()];
    let first = loadgen(&lab, &both, "dora", 40, 1);
    wait_agree(&lab, &expected_of(&first.held), AGREE);

    // (a) A plain restart: dhcpd serves alone meanwhile (COMMUNICATIONS-INTERRUPTED, from the
    // BACKUP addresses it holds), ringlease comes back with its lease log and learns those.
    lab.rl.stop();
    wait_isc_state(&lab, "communications-interrupted", Duration::from_secs(30));
    // Our graceful stop said PAUSED (draft §9.2), and dhcpd heard it.
    let isc_log = lab.isc.log();
    assert!(
        isc_log.contains("peer moves from normal to paused"),
        "dhcpd should log our PAUSED:\n{}",
        tail(&isc_log, 20)
    );
    let meanwhile = loadgen(&lab, &[lab.isc_lan()], "dora", 20, 2);
    assert!(
        meanwhile.held.len() >= 18,
        "dhcpd alone should serve new clients: {} of 20",
        meanwhile.held.len()
    );
    lab.start_rl();
    let mut trace = Trace::new();
    wait_both_normal(&lab, SETTLE, &mut trace);
    eprintln!(
        "(a) restarted: ringlease {trace}; dhcpd {:?}",
        lab.isc.state_moves()
    );
    // What dhcpd granted meanwhile (MCLT-long leases: they may have run out since).
    wait_agree_or_ended(&lab, &expected_of(&meanwhile.held), AGREE);
    assert_no_duplicates(&lab);

    // (b) Restarted with an empty lease directory: a new relationship for ringlease. It must
    // ask for everything (UPDREQALL), wait out the MCLT from entering RECOVER, and answer no
    // client before RECOVER-DONE.
    lab.rl.stop();
    wait_isc_state(&lab, "communications-interrupted", Duration::from_secs(30));
    let meanwhile2 = loadgen(&lab, &[lab.isc_lan()], "dora", 20, 3);
    assert!(meanwhile2.held.len() >= 18, "{}", meanwhile2.held.len());
    for e in std::fs::read_dir(lab.rl.lease_dir()).expect("lease dir") {
        let p = e.expect("dir entry").path();
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
    }
    lab.start_rl();
    let mut trace = Trace::new();
    wait_rl_state(&lab, "RECOVER-WAIT", Duration::from_secs(30), &mut trace);
    // UPDREQALL is answered: what dhcpd granted meanwhile, and everything it holds active,
    // is here before we serve again.
    wait_agree_or_ended(&lab, &expected_of(&meanwhile2.held), AGREE);
    let mut last = Vec::new();
    let got_all = wait_for(Duration::from_secs(20), || {
        last = isc_active_not_in_rl(&lab);
        last.is_empty().then_some(())
    });
    assert!(
        got_all.is_some(),
        "after UPDREQALL ringlease lacks {} of dhcpd's active leases:\n{}\n{}",
        last.len(),
        last.iter().take(10).cloned().collect::<Vec<_>>().join("\n"),
        lab.describe()
    );
    // Answering nobody while recovering: a few new clients to ringlease alone.
    let probe = loadgen(&lab, &[lab.rl_lan()], "dora", 5, 4);
    let state_after = rl_state(&trace.poll(&lab.rl));
    assert!(
        matches!(state_after.as_deref(), Some("RECOVER-WAIT" | "RECOVER")),
        "the probe should have run inside RECOVER-WAIT: {trace}"
    );
    assert!(
        probe.held.is_empty(),
        "ringlease served {} new clients in {state_after:?}: {:?}",
        probe.held.len(),
        probe.held
    );
    wait_both_normal(&lab, Duration::from_secs(90), &mut trace);
    eprintln!(
        "(b) restarted empty: ringlease {trace}; dhcpd {:?}",
        lab.isc.state_moves()
    );
    // RECOVER-DONE may last milliseconds, too short for the status polls: the log has every
    // change. The polls show how long RECOVER-WAIT (serving nobody) lasted: until the first
    // later state they saw.
    let logged = state_changes(&lab.rl.log());
    assert!(
        logged.ends_with(&[
            "RECOVER".into(),
            "RECOVER-WAIT".into(),
            "RECOVER-DONE".into(),
            "NORMAL".into()
        ]),
        "expected RECOVER, RECOVER-WAIT, RECOVER-DONE, NORMAL: logged {logged:?}, polled {trace}"
    );
    let fo = lab.rl.failover().unwrap();
    let wait_s = trace
        .seen
        .iter()
        .find(|(_, s, _)| s == "RECOVER-DONE" || s == "NORMAL")
        .map(|(t, _, _)| t.as_secs_f64())
        .unwrap_or_default();
    eprintln!(
        "RECOVER-WAIT left {wait_s:.1} s after the restart (MCLT {} s)",
        lab.cfg.mclt_s
    );
    assert!(
        wait_s + 2.0 >= f64::from(lab.cfg.mclt_s),
        "RECOVER-WAIT ended before the MCLT passed: {trace}"
    );
    assert_no_duplicates(&lab);
    // And it serves again.
    let after = loadgen(&lab, &both, "dora", 20, 5);
    assert!(after.held.len() >= 18, "{}", after.held.len());
    wait_agree(&lab, &expected_of(&after.held), AGREE);
    assert!(is_normal(&Ok(fo)), "{}", lab.describe());
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// 3. dhcpd stopped under load, PARTNER-DOWN, dhcpd back
// ---------------------------------------------------------------------------

#[test]
fn dhcpd_stopped_partner_down_and_back() {
    let _g = serial();
    require_root();
    let started = Instant::now();
    let cfg = PairCfg {
        split: 128,
        mclt_s: 30,
        ..PairCfg::default()
    };
    let mut lab = Lab::new("istop", Role::Primary, cfg);
    lab.start_isc();
    lab.start_rl();
    let mut trace = Trace::new();
    wait_both_normal(&lab, SETTLE, &mut trace);
    let backup = wait_backup_agree(&lab, Duration::from_secs(30));
    let both = [lab.rl_lan(), lab.isc_lan()];
    let first = loadgen(&lab, &both, "dora", LOAD_CLIENTS, 1);
    let isc_clients: Vec<&Held> = first.by_server(lab.isc_lan());
    assert!(!isc_clients.is_empty(), "dhcpd served nobody in NORMAL");
    wait_agree(&lab, &expected_of(&first.held), AGREE);

    // dhcpd stops (SIGTERM) while the load generator runs (new clients, both servers).
    let under_load = {
        let (c, isc) = (&lab.c, &mut lab.isc);
        std::thread::scope(|s| {
            let h = s.spawn(move || loadgen_in(c, &both, "dora", LOAD_CLIENTS, 7));
            std::thread::sleep(Duration::from_millis(1500));
            isc.stop();
            h.join().expect("loadgen thread")
        })
    };
    let under_load = under_load.unwrap_or_else(|e| panic!("{e}\n{}", lab.describe()));
    eprintln!(
        "dhcpd stopped under load: {} of {LOAD_CLIENTS} new clients hold addresses",
        under_load.held.len()
    );
    wait_rl_state(
        &lab,
        "COMMUNICATIONS-INTERRUPTED",
        Duration::from_secs(30),
        &mut trace,
    );
    // dhcpd's clients come back (same identities): ringlease keeps them on their addresses.
    let renewed = loadgen(&lab, &[lab.rl_lan()], "dora", LOAD_CLIENTS, 1);
    let now_held: HashMap<&str, Ipv4Addr> =
        renewed.held.iter().map(|h| (h.hw.as_str(), h.ip)).collect();
    let moved: Vec<String> = isc_clients
        .iter()
        .filter(|h| now_held.get(h.hw.as_str()) != Some(&h.ip))
        .map(|h| {
            format!(
                "{} had {}, now {:?}",
                h.hw,
                h.ip,
                now_held.get(h.hw.as_str())
            )
        })
        .collect();
    assert!(
        moved.is_empty(),
        "in COMMUNICATIONS-INTERRUPTED ringlease should keep dhcpd's clients on their \
         addresses:\n{}\n{}",
        moved.join("\n"),
        lab.describe()
    );
    let now = common::failover::unix_now_s();
    let dump = lab.rl.dump();
    let longest = isc_clients
        .iter()
        .filter_map(|h| dump.get(&h.ip).map(|d| d.expires_s.saturating_sub(now)))
        .max()
        .unwrap_or(0);
    eprintln!(
        "COMMUNICATIONS-INTERRUPTED: {} of dhcpd's clients kept their address; longest lease \
         now {longest} s (MCLT {})",
        isc_clients.len(),
        lab.cfg.mclt_s
    );

    // The operator's word: PARTNER-DOWN. After the MCLT, ringlease uses dhcpd's BACKUP
    // addresses too, and grants full lease times.
    let r = lab
        .rl
        .client()
        .and_then(|mut c| c.call(&json!({"cmd": "partner-down"})));
    assert!(r.is_ok(), "ctl partner-down: {r:?}");
    wait_rl_state(&lab, "PARTNER-DOWN", Duration::from_secs(10), &mut trace);
    std::thread::sleep(Duration::from_secs(u64::from(lab.cfg.mclt_s) + 2));
    let taken_over = loadgen(&lab, &[lab.rl_lan()], "dora", 100, 6);
    let from_backup = taken_over
        .held
        .iter()
        .filter(|h| backup.contains(&h.ip))
        .count();
    eprintln!(
        "PARTNER-DOWN: {} of 100 new clients served, {from_backup} from dhcpd's former BACKUP \
         addresses",
        taken_over.held.len()
    );
    assert!(
        taken_over.held.len() >= 97,
        "in PARTNER-DOWN ringlease should serve the whole pool: {} of 100\n{}",
        taken_over.held.len(),
        lab.describe()
    );
    assert!(from_backup > 0, "no address of dhcpd's share was used");
    let now = common::failover::unix_now_s();
    let dump = lab.rl.dump();
    let short: Vec<Ipv4Addr> = taken_over
        .held
        .iter()
        .filter(|h| dump.get(&h.ip).is_none_or(|d| d.expires_s < now + 1800))
        .map(|h| h.ip)
        .collect();
    assert!(
        short.is_empty(),
        "PARTNER-DOWN leases should not be bound by the MCLT: {short:?}"
    );

    // dhcpd comes back: RECOVER (ringlease is PARTNER-DOWN), then NORMAL on both sides.
    lab.start_isc();
    wait_both_normal(&lab, Duration::from_secs(120), &mut trace);
    eprintln!(
        "back to NORMAL: ringlease {trace}; dhcpd {:?}",
        lab.isc.state_moves()
    );
    wait_agree(&lab, &expected_of(&taken_over.held), AGREE);
    assert_no_duplicates(&lab);
    lab.isc.assert_running();
    lab.rl.assert_running();
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

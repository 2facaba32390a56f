//! `import-isc` on files written by the real ISC dhcpd (Debian's isc-dhcp-server), not by us:
//!
//! ```text
//!  ns "cli": dhclient ×4 (one MAC each)  veth0  <==>  veth0 10.77.0.1/24  dhcpd -4 -f  :ns "srv"
//! ```
//!
//! dhcpd serves a subnet with a range and a fixed-address host; ISC dhclient gets a lease
//! with three MACs (one of them sending a client identifier, so dhcpd writes an octal-escaped
//! `uid`) and the fixed address with a fourth. dhcpd is stopped, and its own dhcpd.conf and
//! dhcpd.leases go through `migrate::run`: the configuration must be valid, and the lease
//! log must hold every client's address with dhcpd's `ends` time.
//!
//! All DHCP traffic stays between the two namespaces the test creates (deleted on drop);
//! processes are signalled by PID; every wait is bounded. Needs root.
mod common;

use common::*;
use ringlease::config::Config;
use ringlease::leaselog::{LeaseLog, LogOptions};
use ringlease::migrate::{self, ImportIscArgs};
use ringlease::proto::lease::{ClientKey, LeaseState};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

const SRV_IP: &str = "10.77.0.1";
const FIXED_MAC: &str = "02:00:00:00:aa:01";
const FIXED_IP: &str = "10.77.0.10";
/// (MAC, client identifier the client sends, if any)
const CLIENTS: [(&str, Option<&str>); 3] = [
    ("02:00:00:00:00:11", None),
    ("02:00:00:00:00:12", None),
    ("02:00:00:00:00:13", Some("01:02:00:00:00:00:13")),
];
const CLIENT_WAIT: Duration = Duration::from_secs(40);

fn dhcpd_conf() -> String {
    format!(
        r#"# written by tests/import_isc.rs
authoritative;
ddns-update-style none;
default-lease-time 600;
max-lease-time 7200;
option domain-name "mig.test";
option domain-name-servers 10.77.0.53;
server-identifier {SRV_IP};

subnet 10.77.0.0 netmask 255.255.255.0 {{
  range 10.77.0.100 10.77.0.150;
  option routers {SRV_IP};
}}

host fixed1 {{
  hardware ethernet {FIXED_MAC};
  fixed-address {FIXED_IP};
}}
"#
    )
}

const NOOP_SCRIPT: &str = "#!/bin/sh\nexit 0\n";

fn hex_bytes(s: &str) -> Vec<u8> {
    s.split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Unix seconds of `W YYYY/MM/DD HH:MM:SS` (UTC), computed independently of the importer.
fn isc_time(words: &str) -> u64 {
    let mut it = words.split_whitespace().skip(1);
    let date: Vec<i64> = it
        .next()
        .unwrap()
        .split('/')
        .map(|x| x.parse().unwrap())
        .collect();
    let time: Vec<i64> = it
        .next()
        .unwrap()
        .split(':')
        .map(|x| x.parse().unwrap())
        .collect();
    let (y, m, d) = (date[0], date[1], date[2]);
    let days_before_year: i64 = (1970..y)
        .map(|yy| if is_leap(yy) { 366 } else { 365 })
        .sum();
    let month_days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let days_before_month: i64 = (1..m)
        .map(|mm| month_days[(mm - 1) as usize] + i64::from(mm == 2 && is_leap(y)))
        .sum();
    let days = days_before_year + days_before_month + d - 1;
    (days * 86_400 + time[0] * 3600 + time[1] * 60 + time[2]) as u64
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// The last `lease` block of dhcpd.leases naming `mac`: (address, `ends`).
fn dhcpd_lease_of(leases: &str, mac: &str) -> Option<(Ipv4Addr, u64)> {
    let mut found = None;
    for block in leases.split("\nlease ").skip(1) {
        if !block.contains(&format!("hardware ethernet {mac};")) {
            continue;
        }
        let ip = block.split_whitespace().next()?.parse().ok()?;
        let ends = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("ends "))?
            .trim_end_matches(';');
        found = Some((ip, isc_time(ends)));
    }
    found
}

/// The address in a dhclient lease file.
fn dhclient_address(lease_file: &str) -> Option<Ipv4Addr> {
    lease_file
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("fixed-address "))?
        .trim_end_matches(';')
        .parse()
        .ok()
}

/// Runs dhclient once for `mac` (it daemonizes when bound; the daemon is then stopped by
/// PID, without releasing) and returns the address it got.
fn obtain(cli: &Netns, tmp: &TempDir, mac: &str, client_id: Option<&str>) -> Ipv4Addr {
    let dhclient = require_tool("dhclient", "isc-dhcp-client");
    cli.ip(&["link", "set", "dev", "veth0", "address", mac]);
    let tag = mac.replace(':', "");
    let conf = match client_id {
        Some(id) => format!("send dhcp-client-identifier {id};\n"),
        None => String::new(),
    };
    let conf = tmp.write(&format!("dhclient-{tag}.conf"), &conf, false);
    let script = tmp.write("noop.sh", NOOP_SCRIPT, true);
    let leases = tmp.join(&format!("dhclient-{tag}.leases"));
    let pidfile = tmp.join(&format!("dhclient-{tag}.pid"));
    let mut cmd = cli.cmd(&dhclient);
    cmd.args(["-4", "-1", "-v", "-cf"])
        .arg(&conf)
        .arg("-lf")
        .arg(&leases)
        .arg("-pf")
        .arg(&pidfile)
        .arg("-sf")
        .arg(&script)
        .arg("veth0");
    let out = run_bounded(cmd, CLIENT_WAIT);
    let pid: Option<u32> = read_lossy(&pidfile).trim().parse().ok();
    if let Some(pid) = pid {
        send_signal(pid, "TERM");
        let gone = wait_for(Duration::from_secs(10), || {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
        if gone.is_none() {
            send_signal(pid, "KILL");
        }
    }
    let lease = read_lossy(&leases);
    match dhclient_address(&lease) {
        Some(ip) if out.status.success() => ip,
        _ => panic!(
            "dhclient for {mac} got no lease ({}):\n{}\n{}\nlease file:\n{lease}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn real_dhcpd_files_import() {
    let _serial = serial();
    let dhcpd = require_tool("dhcpd", "isc-dhcp-server");
    let tmp = TempDir::new("mig");
    let srv_ns = Netns::new("mig-srv");
    let cli = Netns::new("mig-cli");
    veth_pair(&srv_ns, "veth0", &cli, "veth0");
    srv_ns.add_addr("veth0", &format!("{SRV_IP}/24"));

    let conf_path = tmp.write("dhcpd.conf", &dhcpd_conf(), false);
    let leases_path = tmp.write("dhcpd.leases", "", false);
    let mut cmd = srv_ns.cmd(&dhcpd);
    cmd.args(["-4", "-f", "-cf"])
        .arg(&conf_path)
        .arg("-lf")
        .arg(&leases_path)
        .arg("-pf")
        .arg(tmp.join("dhcpd.pid"))
        .arg("veth0");
    let log = tmp.join("dhcpd.log");
    let mut server = Child::spawn("dhcpd", cmd, &log);
    let ready = wait_for(Duration::from_secs(20), || {
        if read_lossy(&log).contains("Sending on   Socket/fallback") {
            return Some(true);
        }
        server.try_status().map(|_| false)
    });
    assert_eq!(ready, Some(true), "dhcpd did not start:\n{}", server.log());

    let mut got = Vec::new();
    for (mac, id) in CLIENTS {
        got.push(obtain(&cli, &tmp, mac, id));
    }
    let fixed = obtain(&cli, &tmp, FIXED_MAC, None);
    assert_eq!(fixed, FIXED_IP.parse::<Ipv4Addr>().unwrap());

    let (status, in_time) = server.stop("TERM", Duration::from_secs(10));
    assert!(in_time, "dhcpd ignored SIGTERM ({status})");
    let leases_text = read_lossy(&leases_path);
    assert!(
        leases_text.contains("written by isc-dhcp"),
        "not a dhcpd lease file:\n{leases_text}"
    );
    assert!(
        leases_text.contains("uid \"\\001\\002"),
        "dhcpd did not write the client identifier as an escaped uid:\n{leases_text}"
    );

    let out = tmp.join("out");
    migrate::run(ImportIscArgs {
        conf: conf_path.clone(),
        leases: Some(leases_path.clone()),
        out: out.clone(),
        server_id: None,
        listen: Vec::new(),
    })
    .expect("import-isc");

    let toml = read_lossy(&out.join("ringlease.toml"));
    let config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.server.server_id, SRV_IP.parse::<Ipv4Addr>().unwrap());
    let subnet = &config.subnets.all()[0];
    assert_eq!(subnet.lease_time_s, 600);
    assert_eq!(subnet.max_lease_time_s, 7200);
    assert_eq!(
        subnet.reservation_for(ClientKey::from_hardware(1, &hex_bytes(FIXED_MAC)).as_bytes()),
        Some(fixed)
    );
    let report = read_lossy(&out.join("import-report.txt"));
    assert!(
        !report.contains("NOT CONVERTED"),
        "a plain configuration converts entirely:\n{report}"
    );
    // The binary agrees with the library about the configuration.
    let mut check = Command::new(ringlease_bin());
    check.arg("check-config").arg(out.join("ringlease.toml"));
    let checked = run_bounded(check, Duration::from_secs(20));
    assert!(
        checked.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let (_log, replayed) =
        LeaseLog::open(&config.server.lease_dir, LogOptions::default()).expect("open lease log");
    for ((mac, id), ip) in CLIENTS.iter().zip(&got) {
        let (dhcpd_ip, dhcpd_ends) = dhcpd_lease_of(&leases_text, mac)
            .unwrap_or_else(|| panic!("no lease of {mac} in dhcpd.leases:\n{leases_text}"));
        assert_eq!(dhcpd_ip, *ip, "dhclient and dhcpd disagree about {mac}");
        let key = match id {
            Some(id) => ClientKey::from_client_id(&hex_bytes(id)),
            None => ClientKey::from_hardware(1, &hex_bytes(mac)),
        };
        let binding = replayed
            .bindings
            .iter()
            .find(|b| &*b.client == key.as_bytes())
            .unwrap_or_else(|| {
                panic!(
                    "no binding for {mac} ({key}) in {:#?}\n{leases_text}",
                    replayed.bindings
                )
            });
        assert_eq!(binding.ip, *ip, "{mac}");
        assert_eq!(binding.state, LeaseState::Bound, "{mac}");
        assert_eq!(binding.expires_s, dhcpd_ends, "{mac}: dhcpd's ends");
    }
    assert_eq!(
        replayed.bindings.len(),
        CLIENTS.len(),
        "{:#?}",
        replayed.bindings
    );
}

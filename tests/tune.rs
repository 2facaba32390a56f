//! `tune show` / `tune check` code paths on a real kernel, against a veth pair that lives only in
//! a network namespace this test creates (and deletes).
//!
//! The outer test creates the namespace and re-runs this test binary inside it with
//! `ip netns exec` (which also mounts a sysfs of that namespace on /sys), selecting only
//! [`inner_in_namespace`] and setting `RL_TUNE_INNER` to the namespace's name. The inner test
//! reads the real `/proc` and `/sys`, and writes nothing but the veth's own `rps_cpus`, inside
//! the namespace. Nothing on the host outside the namespace is changed. Needs root and `ip`;
//! skips (with a message) otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringlease::tune::{self, Action, Profile, Status, Sys};

const INNER: &str = "RL_TUNE_INNER";
const VETH: &str = "rlt0";
const PEER: &str = "rlt1";

fn lab_profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/lab-2core.toml")
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace, deleted (with the veth pair in it) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: String) -> Result<Netns, String> {
        ip(&["netns", "add", &name])?;
        Ok(Netns { name })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if ip(&["-V"]).is_err() {
        return Some("no `ip` command".into());
    }
    None
}

#[test]
fn show_and_check_on_a_veth_in_a_namespace() {
    if std::env::var_os(INNER).is_some() {
        return; // the inner run selects only inner_in_namespace; never nest
    }
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let ns = Netns::create(format!("rltune-{}", std::process::id())).unwrap();
    // Created inside the namespace: the host never sees these interfaces.
    ip(&[
        "-n", &ns.name, "link", "add", VETH, "type", "veth", "peer", "name", PEER,
    ])
    .unwrap();
    ip(&["-n", &ns.name, "link", "set", VETH, "up"]).unwrap();
    ip(&["-n", &ns.name, "link", "set", PEER, "up"]).unwrap();
    assert!(
        !Path::new("/sys/class/net").join(VETH).exists(),
        "{VETH} must exist only in the namespace"
    );

    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args([
            "--exact",
            "inner_in_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, &ns.name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- inner run ---\n{stdout}\n{stderr}");
    assert!(out.status.success(), "inner test failed");
    assert!(
        stdout.contains("1 passed"),
        "the inner test did not run: {stdout}"
    );
    assert!(stdout.contains("INNER-DONE"), "inner test returned early");
}

#[test]
fn inner_in_namespace() {
    let Some(ns) = std::env::var_os(INNER) else {
        return; // only meaningful when re-executed inside the namespace
    };
    // Refuse to run anywhere but in the namespace the outer test made.
    let here = ip(&["netns", "identify"]).unwrap();
    assert_eq!(
        here.trim(),
        ns.to_string_lossy(),
        "not inside the test namespace"
    );
    assert!(
        Path::new("/sys/class/net").join(VETH).exists(),
        "sysfs is not the namespace's"
    );

    let sys = Sys::real();
    let lab = tune::load_profile(&lab_profile()).unwrap();

    // show: the veth's sysfs entries are found, current values read.
    let plan = tune::compute(&sys, &lab, VETH).unwrap();
    println!("{}", tune::render_show(&plan));
    let rps = plan
        .changes
        .iter()
        .find(|c| c.what.starts_with(&format!("{VETH} rx-0 rps_cpus")))
        .expect("rps_cpus of the veth's rx-0 in the plan");
    assert_eq!(
        rps.path_or_command,
        format!("/sys/class/net/{VETH}/queues/rx-0/rps_cpus")
    );
    assert!(
        rps.current.is_some(),
        "rps_cpus unreadable: {:?}",
        rps.status
    );
    // Some net.core sysctls are host-wide and absent in a namespace: unknown, with the reason.
    let backlog = plan
        .changes
        .iter()
        .find(|c| c.what == "sysctl net.core.netdev_max_backlog")
        .unwrap();
    if let Status::Unknown(why) = &backlog.status {
        assert!(why.contains("network namespace"), "{why}");
    }
    assert!(
        plan.notes.iter().any(|n| n.contains("no IRQs of rlt0")),
        "{:?}",
        plan.notes
    );
    if plan.placement.is_none() {
        // A machine with fewer than 2 CPUs: the lab profile's core 1 is reported, not fatal.
        assert!(plan.problems.iter().any(|p| p.contains("cpu.workers")));
    }

    // check: a deliberately unusual wanted value (of a per-namespace sysctl) is drift.
    let text = std::fs::read_to_string(lab_profile())
        .unwrap()
        .replace("[sysctl]\n", "[sysctl]\n\"net.core.somaxconn\" = 4097\n");
    let odd = Profile::from_toml(&text).unwrap();
    let plan = tune::compute(&sys, &odd, VETH).unwrap();
    let check = tune::render_check(&plan);
    println!("{check}");
    assert!(plan.drift_count() > 0);
    let somaxconn = plan
        .changes
        .iter()
        .find(|c| c.what == "sysctl net.core.somaxconn")
        .unwrap();
    assert_eq!(somaxconn.status, Status::Change, "{somaxconn:?}");
    assert!(
        check.contains("sysctl net.core.somaxconn") && check.contains("4097"),
        "{check}"
    );
    assert!(check.contains("settings drifted"), "{check}");

    // apply, only the veth's own RPS map (per-netns; no sysctls, no governor, no IRQs).
    let rps_only = Profile::from_toml(
        "[profile]\nname = \"rps-only\"\n[cpu]\nworkers = [0]\n[nic]\nrps = true\n",
    )
    .unwrap();
    let plan = tune::compute(&sys, &rps_only, VETH).unwrap();
    let own = format!("/sys/class/net/{VETH}/queues/");
    for c in &plan.changes {
        assert!(
            matches!(&c.action, Action::Write(p) if p.starts_with(&own)),
            "unexpected setting in the rps-only plan: {c:?}"
        );
    }
    let report = tune::apply(
        &sys,
        &rps_only,
        &plan,
        |c| matches!(&c.action, Action::Write(p) if p.starts_with(&own)),
    )
    .unwrap();
    println!("{}", report.lines.join("\n"));
    assert_eq!(report.failed, 0, "{:#?}", report.lines);
    let now = std::fs::read_to_string(format!("{own}rx-0/rps_cpus")).unwrap();
    assert_eq!(tune::parse_mask(&now).unwrap(), vec![0]);
    let after = tune::compute(&sys, &rps_only, VETH).unwrap();
    assert_eq!(after.drift_count(), 0, "{}", tune::render_check(&after));
    println!("INNER-DONE");
}

/// Read-only on the host: the 64-core profile on a smaller machine reports the missing cores
/// through `show` and fails `check`, without crashing.
#[test]
fn big_profile_on_a_small_host_reports_missing_cores() {
    if std::env::var_os(INNER).is_some() {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/server-64core-2socket.toml");
    let profile = tune::load_profile(&path).unwrap();
    let sys = Sys::real();
    let plan = tune::compute(&sys, &profile, "lo").unwrap();
    println!("{}", tune::render_show(&plan));
    let online = sys.online_cpus().unwrap();
    let check = tune::run(tune::TuneArgs {
        command: tune::TuneCommand::Check {
            profile: path,
            iface: "lo".into(),
        },
    });
    if online.len() < 32 {
        let all = plan.problems.join("\n");
        assert!(
            all.contains("cpu.workers: node:9-31") && all.contains("do not exist"),
            "{all}"
        );
        assert!(profile.worker_cores(Some("lo")).is_err());
        assert!(check.unwrap_err().contains("drifted"));
    }
}

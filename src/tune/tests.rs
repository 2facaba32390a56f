//! Profiles, plans, drift and apply against fake procfs/sysfs trees in temp dirs.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tuning")
        .join(name)
}

fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("{text}\n")).unwrap();
}

fn get(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel))
        .unwrap()
        .trim()
        .to_string()
}

/// A fake machine: `nodes` lists each NUMA node's CPUs (None: a kernel without NUMA and
/// `cpus` CPUs); eth0 is a PCI NIC on `nic_node` with 2 RX and 2 TX queues and 3 IRQs.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new(cpus: usize, nodes: Option<&[&str]>, nic_node: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(
            root,
            "sys/devices/system/cpu/online",
            &format!("0-{}", cpus - 1),
        );
        for cpu in 0..cpus {
            let d = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
            put(root, &format!("{d}/scaling_governor"), "powersave");
            put(
                root,
                &format!("{d}/scaling_available_governors"),
                "performance powersave",
            );
        }
        if let Some(nodes) = nodes {
            for (n, list) in nodes.iter().enumerate() {
                put(
                    root,
                    &format!("sys/devices/system/node/node{n}/cpulist"),
                    list,
                );
            }
        }
        let pci = "sys/devices/pci0000:00/0000:03:00.0";
        put(root, &format!("{pci}/numa_node"), nic_node);
        put(root, "sys/class/net/eth0/mtu", "1500");
        std::os::unix::fs::symlink(root.join(pci), root.join("sys/class/net/eth0/device")).unwrap();
        for q in ["rx-0", "rx-1"] {
            put(
                root,
                &format!("sys/class/net/eth0/queues/{q}/rps_cpus"),
                "0",
            );
        }
        for q in ["tx-0", "tx-1"] {
            put(
                root,
                &format!("sys/class/net/eth0/queues/{q}/xps_cpus"),
                "0",
            );
        }
        for (key, value) in [
            ("net/core/rmem_max", "212992"),
            ("net/core/wmem_max", "16777216"),
            ("net/core/rmem_default", "212992"),
            ("net/core/netdev_max_backlog", "1000"),
            ("net/core/netdev_budget", "300"),
            ("net/core/netdev_budget_usecs", "2000"),
            ("net/core/busy_poll", "0"),
            ("net/core/busy_read", "0"),
            ("kernel/numa_balancing", "1"),
        ] {
            put(root, &format!("proc/sys/{key}"), value);
        }
        let header: String = (0..cpus).map(|c| format!("       CPU{c}")).collect();
        let zeros: String = (0..cpus).map(|_| "          0").collect();
        put(
            root,
            "proc/interrupts",
            &format!(
                "{header}\n  24:{zeros}  IO-APIC   5-edge      ACPI:Ged\n\
                 \x20 45:{zeros}  PCI-MSI 524288-edge      eth0-TxRx-0\n\
                 \x20 46:{zeros}  PCI-MSI 524289-edge      eth0-TxRx-1\n\
                 \x20 47:{zeros}  PCI-MSI 524290-edge      eth10-TxRx-0\n\
                 \x20 48:{zeros}  PCI-MSI 524291-edge      eth0\n\
                 NMI:{zeros}   Non-maskable interrupts"
            ),
        );
        for irq in [24, 45, 46, 47, 48] {
            put(
                root,
                &format!("proc/irq/{irq}/smp_affinity_list"),
                &format!("0-{}", cpus - 1),
            );
        }
        put(
            root,
            "proc/irq/default_smp_affinity",
            &format_mask(&(0..cpus).collect::<Vec<_>>()),
        );
        put(root, "proc/cmdline", "console=ttyS0 quiet");
        Fake { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn sys(&self) -> Sys {
        Sys::at(self.root())
    }
}

fn lab() -> Profile {
    load_profile(&shipped("lab-2core.toml")).unwrap()
}

fn change<'a>(plan: &'a Plan, what_prefix: &str) -> &'a Change {
    plan.changes
        .iter()
        .find(|c| c.what.starts_with(what_prefix))
        .unwrap_or_else(|| panic!("no change '{what_prefix}' in {:#?}", plan.changes))
}

#[test]
fn shipped_profiles_load() {
    let lab = lab();
    assert_eq!(lab.name, "lab-2core");
    assert_eq!(lab.cpu.workers, CoreSpec::Cpus(vec![1]));
    assert_eq!(lab.cpu.failover, Some(CoreSpec::Cpus(vec![0])));
    assert_eq!(lab.cpu.numa_node, NumaNode::Nic);
    assert_eq!(lab.sysctl["net.core.rmem_max"], "33554432");
    assert_eq!(lab.nic.rps, Some(true));
    let p16 = load_profile(&shipped("server-16core.toml")).unwrap();
    assert_eq!(p16.cpu.workers, CoreSpec::Cpus((4..=15).collect()));
    let p64 = load_profile(&shipped("server-64core-2socket.toml")).unwrap();
    assert_eq!(p64.cpu.workers, CoreSpec::Node((9..=31).collect()));
    assert_eq!(p64.cpu.failover, Some(CoreSpec::Node(vec![8])));
    assert_eq!(p64.cpu.irq, Some(CoreSpec::Node((2..=7).collect())));
}

#[test]
fn profile_errors_name_the_key() {
    let base = "[profile]\nname = \"x\"\n[cpu]\n";
    let cases = [
        ("workers = []", "cpu.workers"),
        ("workers = [1, 1]", "cpu.workers"),
        ("workers = [-1]", "cpu.workers[0]"),
        ("workers = \"node:3-1\"", "cpu.workers"),
        ("workers = \"two\"", "cpu.workers"),
        ("workers = [1]\nfailover = 1", "cpu.failover"),
        ("workers = [1]\nfailover = \"0-1\"", "cpu.failover"),
        ("workers = [1]\nnuma_node = \"far\"", "cpu.numa_node"),
        ("workers = [1]\ngovernor = \"turbo\"", "cpu.governor"),
        ("workers = [1]\nirq = 1.5", "cpu.irq"),
        (
            "workers = [1]\n[sysctl]\n\"net/../x\" = 1",
            "sysctl.\"net/../x\"",
        ),
        (
            "workers = [1]\n[sysctl]\n\"net.core.x\" = true",
            "sysctl.\"net.core.x\"",
        ),
        ("workers = [1]\n[nic]\nrx_ring = 0", "nic.rx_ring"),
        ("workers = [1]\n[nic]\nbogus = 1", "line"),
    ];
    for (body, key) in cases {
        let e = Profile::from_toml(&format!("{base}{body}\n")).unwrap_err();
        assert!(
            e.key.starts_with(key),
            "{body}: error {e} does not name {key}"
        );
    }
    let e = Profile::from_toml("[cpu]\nworkers = [1]\n").unwrap_err();
    assert!(e.to_string().contains("profile"), "{e}");
    let e = load_profile(Path::new("/nonexistent/p.toml")).unwrap_err();
    assert!(e.contains("/nonexistent/p.toml"), "{e}");
}

#[test]
fn sysctl_values_accept_several_fields() {
    let p = Profile::from_toml(
        "[profile]\nname = \"x\"\n[cpu]\nworkers = [1]\n[sysctl]\n\"net.ipv4.udp_mem\" = [1, 2, 3]\n\"net.core.default_qdisc\" = \"fq\"\n",
    )
    .unwrap();
    assert_eq!(p.sysctl["net.ipv4.udp_mem"], "1\t2\t3");
    assert_eq!(p.sysctl["net.core.default_qdisc"], "fq");
}

#[test]
fn plan_compares_current_and_wanted() {
    let fake = Fake::new(2, Some(&["0-1"]), "0");
    put(fake.root(), "proc/sys/net/core/wmem_max", "16777216");
    let plan = compute(&fake.sys(), &lab(), "eth0").unwrap();
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);

    let rmem = change(&plan, "sysctl net.core.rmem_max");
    assert_eq!(rmem.current.as_deref(), Some("212992"));
    assert_eq!(rmem.wanted, "33554432");
    assert_eq!(rmem.status, Status::Change);
    assert_eq!(rmem.path_or_command, "/proc/sys/net/core/rmem_max");
    assert_eq!(change(&plan, "sysctl net.core.wmem_max").status, Status::Ok);

    let gov = change(&plan, "cpu1 scaling_governor");
    assert_eq!(
        (gov.current.as_deref(), gov.wanted.as_str()),
        (Some("powersave"), "performance")
    );

    let rps = change(&plan, "eth0 rx-1 rps_cpus");
    assert_eq!(
        (rps.current.as_deref(), rps.wanted.as_str()),
        (Some("0"), "2")
    );
    assert_eq!(
        rps.path_or_command,
        "/sys/class/net/eth0/queues/rx-1/rps_cpus"
    );
    // One worker, two TX queues: the worker transmits on tx-0; tx-1 gets no CPU.
    assert_eq!(change(&plan, "eth0 tx-0 xps_cpus").wanted, "2");
    assert_eq!(change(&plan, "eth0 tx-1 xps_cpus").wanted, "0");
    assert_eq!(change(&plan, "eth0 tx-1 xps_cpus").status, Status::Ok);

    let irq = change(&plan, "irq 45 (eth0-TxRx-0)");
    assert_eq!(irq.path_or_command, "/proc/irq/45/smp_affinity_list");
    assert_eq!(
        (irq.current.as_deref(), irq.wanted.as_str()),
        (Some("0-1"), "0")
    );
    assert!(
        !plan.changes.iter().any(|c| c.what.contains("irq 47")),
        "eth10's IRQ is not eth0's"
    );
    assert!(plan
        .changes
        .iter()
        .any(|c| c.what.starts_with("irq 48 (eth0)")));

    let defaults = change(&plan, "default irq affinity");
    assert_eq!(
        (defaults.current.as_deref(), defaults.wanted.as_str()),
        (Some("3"), "1")
    );

    // No ethtool in a fake tree: unknown, and the reason says so.
    let ring = change(&plan, "eth0 rx ring size");
    assert!(matches!(&ring.status, Status::Unknown(why) if why.contains("ethtool not installed")));
    assert_eq!(ring.path_or_command, "ethtool -G eth0 rx 4096");

    let shown = render_show(&plan);
    assert!(shown.contains("sysctl net.core.rmem_max"), "{shown}");
    assert!(
        shown.contains("write 33554432 to /proc/sys/net/core/rmem_max"),
        "{shown}"
    );
    assert!(shown.contains("unknown (ethtool not installed"), "{shown}");
    assert!(shown.contains("isolcpus=managed_irq,domain,0-1"), "{shown}");
}

#[test]
fn masks_and_lists_compare_by_cpus_not_spelling() {
    let fake = Fake::new(2, None, "0");
    put(
        fake.root(),
        "sys/class/net/eth0/queues/rx-0/rps_cpus",
        "00000002",
    );
    put(fake.root(), "proc/irq/45/smp_affinity_list", "0");
    let plan = compute(&fake.sys(), &lab(), "eth0").unwrap();
    assert_eq!(change(&plan, "eth0 rx-0 rps_cpus").status, Status::Ok);
    assert_eq!(change(&plan, "irq 45 ").status, Status::Ok);
}

#[test]
fn check_reports_drift_and_apply_fixes_it_in_the_fake_root() {
    let fake = Fake::new(2, Some(&["0-1"]), "0");
    let sys = fake.sys();
    let profile = lab();
    let plan = compute(&sys, &profile, "eth0").unwrap();
    assert!(plan.drift_count() > 0);
    let check = render_check(&plan);
    assert!(check.contains("sysctl net.core.busy_poll"), "{check}");
    assert!(check.contains("settings drifted"), "{check}");
    assert!(!check.contains(" ok\n"), "check prints only drift: {check}");

    let report = apply(&sys, &profile, &plan, |_| true).unwrap();
    assert_eq!(report.failed, 0, "{:#?}", report.lines);
    let root = fake.root();
    assert_eq!(get(root, "proc/sys/net/core/rmem_max"), "33554432");
    assert_eq!(get(root, "proc/sys/net/core/busy_read"), "50");
    assert_eq!(
        get(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "performance"
    );
    assert_eq!(get(root, "sys/class/net/eth0/queues/rx-0/rps_cpus"), "2");
    assert_eq!(get(root, "sys/class/net/eth0/queues/tx-0/xps_cpus"), "2");
    assert_eq!(get(root, "proc/irq/45/smp_affinity_list"), "0");
    assert_eq!(get(root, "proc/irq/default_smp_affinity"), "1");
    assert_eq!(
        get(root, "proc/irq/47/smp_affinity_list"),
        "0-1",
        "not eth0's IRQ"
    );
    assert!(
        report
            .lines
            .iter()
            .any(|l| l == "eth0 rx ring size: ethtool not installed, skipped"),
        "{:#?}",
        report.lines
    );

    let after = compute(&sys, &profile, "eth0").unwrap();
    assert_eq!(after.drift_count(), 0, "{}", render_check(&after));
    let check = render_check(&after);
    assert!(check.contains("no drift"), "{check}");
    assert!(check.contains("could not be read"), "{check}");
}

#[test]
fn apply_skips_unreadable_settings_and_honours_the_filter() {
    let fake = Fake::new(2, None, "0");
    let sys = fake.sys();
    let profile = lab();
    // A "file" the kernel would refuse: a directory where a sysctl should be.
    fs::remove_file(fake.root().join("proc/sys/net/core/busy_poll")).unwrap();
    fs::create_dir(fake.root().join("proc/sys/net/core/busy_poll")).unwrap();
    let plan = compute(&sys, &profile, "eth0").unwrap();
    let report = apply(&sys, &profile, &plan, |c| c.what.starts_with("sysctl")).unwrap();
    assert_eq!(
        report.failed, 0,
        "unreadable settings are skipped, not failed"
    );
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("sysctl net.core.busy_poll:") && l.ends_with("skipped")),
        "{:#?}",
        report.lines
    );
    // The filter kept everything else untouched.
    assert_eq!(
        get(fake.root(), "sys/class/net/eth0/queues/rx-0/rps_cpus"),
        "0"
    );
}

#[test]
fn missing_cores_are_reported_not_fatal() {
    let fake = Fake::new(2, Some(&["0-1"]), "0");
    let sys = fake.sys();
    let p64 = load_profile(&shipped("server-64core-2socket.toml")).unwrap();
    let plan = compute(&sys, &p64, "eth0").unwrap();
    let all = plan.problems.join("\n");
    assert!(all.contains("cpu.workers: node:9-31"), "{all}");
    assert!(all.contains("only 2 CPUs (0-1)"), "{all}");
    assert!(all.contains("cpu.irq: node:2-7"), "{all}");
    assert!(all.contains("cpu.failover"), "{all}");
    // The rest of the plan is still there.
    assert_eq!(
        change(&plan, "sysctl kernel.numa_balancing").status,
        Status::Change
    );
    let shown = render_show(&plan);
    assert!(shown.contains("UNSATISFIABLE: cpu.workers"), "{shown}");
    let check = render_check(&plan);
    assert!(check.contains("UNSATISFIABLE"), "{check}");
    assert!(plan.drift_count() >= 4);
    let refused = apply(&sys, &p64, &plan, |_| true).unwrap_err();
    assert!(refused.contains("nothing applied"), "{refused}");
    assert_eq!(get(fake.root(), "proc/sys/kernel/numa_balancing"), "1");

    let e = p64.worker_cores_on(&sys, Some("eth0")).unwrap_err();
    assert!(e.contains("node:9-31"), "{e}");

    let p16 = load_profile(&shipped("server-16core.toml")).unwrap();
    let e = p16.worker_cores_on(&sys, None).unwrap_err();
    assert!(
        e.contains("CPUs 4-15 do not exist on this machine (online: 0-1)"),
        "{e}"
    );
    let e = compute(&sys, &p16, "eth0").unwrap().problems.join("\n");
    assert!(
        e.contains("cpu.failover: CPUs 1 do not exist") || e.contains("cpu.irq: CPUs 2-3"),
        "{e}"
    );
}

#[test]
fn numa_node_nic_resolves_to_the_nics_node() {
    let two_nodes = Some(&["0-31", "32-63"][..]);
    let p64 = load_profile(&shipped("server-64core-2socket.toml")).unwrap();

    let fake = Fake::new(64, two_nodes, "1");
    let sys = fake.sys();
    assert_eq!(
        p64.worker_cores_on(&sys, Some("eth0")).unwrap(),
        (41..=63).collect::<Vec<_>>()
    );
    assert_eq!(p64.failover_core_on(&sys, Some("eth0")).unwrap(), Some(40));
    let plan = compute(&sys, &p64, "eth0").unwrap();
    let placement = plan.placement.as_ref().unwrap();
    assert_eq!(placement.irq, (34..=39).collect::<Vec<_>>());
    assert_eq!(placement.housekeeping, vec![32, 33]);
    assert!(placement.node_reason.contains("node 1, the node of eth0"));
    // IRQs round-robin over the IRQ cores; RPS off ("0"); XPS: 23 workers over 2 TX queues.
    assert_eq!(change(&plan, "irq 45 ").wanted, "34");
    assert_eq!(change(&plan, "irq 46 ").wanted, "35");
    assert_eq!(change(&plan, "eth0 rx-0 rps_cpus").wanted, "0");
    let tx0 = parse_mask(&change(&plan, "eth0 tx-0 xps_cpus").wanted).unwrap();
    let tx1 = parse_mask(&change(&plan, "eth0 tx-1 xps_cpus").wanted).unwrap();
    assert_eq!(tx0.len() + tx1.len(), 23);
    assert!(tx0.contains(&41) && tx1.contains(&42));
    assert_eq!(change(&plan, "default irq affinity").wanted, "3,00000000");

    // The NIC on node 0.
    let fake0 = Fake::new(64, two_nodes, "0");
    assert_eq!(
        p64.worker_cores_on(&fake0.sys(), Some("eth0")).unwrap(),
        (9..=31).collect::<Vec<_>>()
    );

    // No NUMA information (-1): node 0, and the reason is recorded.
    let none = Fake::new(64, two_nodes, "-1");
    let plan = compute(&none.sys(), &p64, "eth0").unwrap();
    assert!(
        plan.placement.as_ref().unwrap().node_reason.contains("-1"),
        "{:?}",
        plan.placement
    );
    assert_eq!(
        plan.placement.unwrap().workers,
        (9..=31).collect::<Vec<_>>()
    );

    // An explicit node; absolute cores off that node are noted (not errors).
    let p = Profile::from_toml(
        "[profile]\nname = \"x\"\n[cpu]\nworkers = [1, 40]\nfailover = \"node:0\"\nnuma_node = 1\n",
    )
    .unwrap();
    let plan = compute(&sys, &p, "eth0").unwrap();
    assert_eq!(plan.placement.as_ref().unwrap().failover, Some(32));
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("cpu.workers: CPUs 1 are not on node 1")),
        "{:?}",
        plan.notes
    );
    let bad = Profile::from_toml("[profile]\nname = \"x\"\n[cpu]\nworkers = [1]\nnuma_node = 5\n")
        .unwrap();
    let e = bad.worker_cores_on(&sys, None).unwrap_err();
    assert!(e.contains("node 5 does not exist (nodes: 0-1)"), "{e}");

    // A failover core that is also a worker once resolved.
    let clash = Profile::from_toml(
        "[profile]\nname = \"x\"\n[cpu]\nworkers = \"node:0-1\"\nfailover = 33\n",
    )
    .unwrap();
    let e = clash.worker_cores_on(&sys, Some("eth0")).unwrap_err();
    assert!(e.contains("cpu.failover: CPU 33 is also a worker"), "{e}");
}

#[test]
fn virtio_nic_finds_node_and_irqs_through_its_pci_parent() {
    let fake = Fake::new(2, Some(&["0-1"]), "0");
    let root = fake.root();
    fs::remove_file(root.join("sys/class/net/eth0/device")).unwrap();
    let virtio = "sys/devices/pci0000:00/0000:00:03.0/virtio2";
    fs::create_dir_all(root.join(virtio)).unwrap();
    put(root, "sys/devices/pci0000:00/0000:00:03.0/numa_node", "0");
    std::os::unix::fs::symlink(root.join(virtio), root.join("sys/class/net/eth0/device")).unwrap();
    put(
        root,
        "proc/interrupts",
        "           CPU0       CPU1\n 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config\n \
         38:          0       6734 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n \
         39:       4511          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n \
         41:       2993          0 PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx\n",
    );
    let sys = fake.sys();
    assert_eq!(sys.nic_numa_node("eth0").unwrap(), Some(0));
    let irqs: Vec<u32> = sys
        .nic_irqs("eth0")
        .unwrap()
        .iter()
        .map(|i| i.number)
        .collect();
    assert_eq!(irqs, vec![37, 38, 39]);
}

#[test]
fn virtual_interfaces_and_missing_interfaces() {
    let fake = Fake::new(2, Some(&["0-1"]), "0");
    let root = fake.root();
    put(root, "sys/class/net/veth0/queues/rx-0/rps_cpus", "0");
    fs::create_dir_all(root.join("sys/class/net/veth0/queues/tx-0")).unwrap();
    let plan = compute(&fake.sys(), &lab(), "veth0").unwrap();
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert!(plan
        .placement
        .as_ref()
        .unwrap()
        .node_reason
        .contains("virtual"));
    assert!(
        plan.notes.iter().any(|n| n.contains("no IRQs of veth0")),
        "{:?}",
        plan.notes
    );
    assert_eq!(change(&plan, "veth0 rx-0 rps_cpus").status, Status::Change);
    assert!(matches!(
        change(&plan, "veth0 tx-0 xps_cpus").status,
        Status::Unknown(_)
    ));

    let e = compute(&fake.sys(), &lab(), "nope0").unwrap_err();
    assert!(e.contains("interface nope0 not found"), "{e}");
    let e = compute(&fake.sys(), &lab(), "../../etc").unwrap_err();
    assert!(e.contains("not an interface name"), "{e}");
}

#[test]
fn no_cpufreq_is_unknown_and_unavailable_governor_is_unsatisfiable() {
    let fake = Fake::new(2, None, "0");
    let root = fake.root();
    fs::remove_dir_all(root.join("sys/devices/system/cpu/cpu0/cpufreq")).unwrap();
    put(
        root,
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_available_governors",
        "powersave",
    );
    let plan = compute(&fake.sys(), &lab(), "eth0").unwrap();
    assert!(
        matches!(&change(&plan, "cpu0 scaling_governor").status, Status::Unknown(w) if w.contains("no cpufreq driver"))
    );
    assert!(
        matches!(&change(&plan, "cpu1 scaling_governor").status, Status::Unsatisfiable(w) if w.contains("not available"))
    );
    assert!(render_check(&plan).contains("cpu1 scaling_governor"));
}

/// A fake ethtool: prints ring/coalesce settings kept in files, logs -G/-C and updates them.
fn fake_ethtool(dir: &Path, rx: u32, rx_max: u32, usecs: &str) -> PathBuf {
    let script = dir.join("ethtool");
    put(dir, "rx", &rx.to_string());
    put(dir, "usecs", usecs);
    let d = dir.display();
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nD={d}\ncase \"$1\" in\n\
             -g) printf 'Ring parameters for %s:\\nPre-set maximums:\\nRX:\\t\\t{rx_max}\\nTX:\\t\\t4096\\nCurrent hardware settings:\\nRX:\\t\\t%s\\nTX:\\t\\t4096\\n' \"$2\" \"$(cat $D/rx)\";;\n\
             -c) printf 'Coalesce parameters for %s:\\nrx-usecs: %s\\n' \"$2\" \"$(cat $D/usecs)\";;\n\
             -G) echo \"$@\" >> $D/log; [ \"$3\" = rx ] && echo \"$4\" > $D/rx;;\n\
             -C) echo \"$@\" >> $D/log; echo \"$4\" > $D/usecs;;\n\
             esac\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn ethtool_settings_are_read_and_applied_when_ethtool_exists() {
    let fake = Fake::new(2, None, "0");
    let tools = tempfile::tempdir().unwrap();
    let mut sys = fake.sys();
    sys.ethtool = Some(fake_ethtool(tools.path(), 512, 4096, "3"));
    let profile = lab();
    let plan = compute(&sys, &profile, "eth0").unwrap();
    let rx = change(&plan, "eth0 rx ring size");
    assert_eq!(
        (rx.current.as_deref(), rx.status.clone()),
        (Some("512"), Status::Change)
    );
    assert_eq!(change(&plan, "eth0 tx ring size").status, Status::Ok);
    let c = change(&plan, "eth0 coalesce rx-usecs");
    assert_eq!((c.current.as_deref(), c.wanted.as_str()), (Some("3"), "50"));
    assert_eq!(c.path_or_command, "ethtool -C eth0 rx-usecs 50");

    let report = apply(&sys, &profile, &plan, |c| {
        matches!(c.action, Action::Ethtool(_))
    })
    .unwrap();
    assert_eq!(report.failed, 0, "{:#?}", report.lines);
    assert_eq!(
        get(tools.path(), "log"),
        "-G eth0 rx 4096\n-C eth0 rx-usecs 50"
    );
    let after = compute(&sys, &profile, "eth0").unwrap();
    assert_eq!(change(&after, "eth0 rx ring size").status, Status::Ok);
    assert_eq!(change(&after, "eth0 coalesce rx-usecs").status, Status::Ok);

    // A ring bigger than the NIC's maximum cannot be satisfied.
    sys.ethtool = Some(fake_ethtool(tools.path(), 512, 1024, "n/a"));
    let plan = compute(&sys, &profile, "eth0").unwrap();
    assert!(
        matches!(&change(&plan, "eth0 rx ring size").status, Status::Unsatisfiable(w) if w.contains("maximum is 1024"))
    );
    assert!(matches!(
        &change(&plan, "eth0 coalesce rx-usecs").status,
        Status::Unsatisfiable(_)
    ));
}

#[test]
fn ethtool_changes_that_do_not_stick_are_reported() {
    let fake = Fake::new(2, None, "0");
    let tools = tempfile::tempdir().unwrap();
    let mut sys = fake.sys();
    let script = fake_ethtool(tools.path(), 512, 4096, "3");
    // This NIC accepts -G but keeps its ring size.
    let text = fs::read_to_string(&script)
        .unwrap()
        .replace("&& echo \"$4\" > $D/rx", "&& true");
    fs::write(&script, text).unwrap();
    sys.ethtool = Some(script);
    let profile = lab();
    let plan = compute(&sys, &profile, "eth0").unwrap();
    let report = apply(&sys, &profile, &plan, |c| c.what == "eth0 rx ring size").unwrap();
    assert_eq!(report.failed, 1);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("eth0 rx ring size: did not stick: reads 512")),
        "{:#?}",
        report.lines
    );
}

#[test]
fn worker_cores_for_the_server() {
    let fake = Fake::new(16, None, "0");
    let p16 = load_profile(&shipped("server-16core.toml")).unwrap();
    assert_eq!(
        p16.worker_cores_on(&fake.sys(), Some("eth0")).unwrap(),
        (4..=15).collect::<Vec<_>>()
    );
    assert_eq!(p16.failover_core_on(&fake.sys(), None).unwrap(), Some(1));
    let plan = compute(&fake.sys(), &p16, "eth0").unwrap();
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert_eq!(change(&plan, "irq 45 ").wanted, "2");
    assert_eq!(change(&plan, "irq 46 ").wanted, "3");
    assert_eq!(change(&plan, "irq 48 ").wanted, "2");
}

#[test]
fn cli_parses_the_documented_subcommands() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        tune: TuneArgs,
    }
    let cli = Cli::try_parse_from([
        "x",
        "apply",
        "--profile",
        "p.toml",
        "--iface",
        "eth0",
        "--yes",
    ])
    .unwrap();
    assert!(matches!(
        cli.tune.command,
        TuneCommand::Apply { yes: true, .. }
    ));
    let cli =
        Cli::try_parse_from(["x", "check", "--profile", "p.toml", "--iface", "eth0"]).unwrap();
    assert!(matches!(cli.tune.command, TuneCommand::Check { .. }));
    // Without --yes apply touches nothing, whoever runs it.
    let e = run(TuneArgs {
        command: TuneCommand::Apply {
            profile: shipped("lab-2core.toml"),
            iface: "lo".into(),
            yes: false,
        },
    })
    .unwrap_err();
    assert!(e.contains("--yes"), "{e}");
}

//! What a profile wants versus what the system has: a [`Plan`] of [`Change`]s, how to print it,
//! and how to apply it.

use super::profile::{Placement, Profile};
use super::sys::{format_cpulist, format_mask, parse_cpulist, parse_mask, Sys};

/// How a setting compares with the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Already as wanted.
    Ok,
    /// Differs; `apply` would change it.
    Change,
    /// The current value could not be read (why); `apply` skips it.
    Unknown(String),
    /// The machine cannot do what the profile wants (why); counts as drift.
    Unsatisfiable(String),
}

/// How `apply` carries a change out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `wanted` to this file (an absolute path, under [`Sys::root`]).
    Write(String),
    /// Run ethtool with these arguments.
    Ethtool(Vec<String>),
}

/// How current and wanted values compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    /// Same words (sysctls with several fields are tab-separated).
    Words,
    /// The same CPUs, as cpulists ("0-3").
    CpuList,
    /// The same CPUs, as hex masks ("0000000f").
    Mask,
}

/// One setting of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// e.g. "sysctl net.core.rmem_max", "irq 45 (eth0-rx-0) smp_affinity_list".
    pub what: String,
    /// The file written, or the command run.
    pub path_or_command: String,
    pub current: Option<String>,
    pub wanted: String,
    pub status: Status,
    pub action: Action,
}

/// Everything the profile wants on this machine for one interface.
#[derive(Clone, Debug)]
pub struct Plan {
    pub profile: String,
    pub iface: String,
    pub placement: Option<Placement>,
    /// Cores the profile names that this machine lacks, and the like: all count as drift.
    pub problems: Vec<String>,
    /// Information and advice that is not drift.
    pub notes: Vec<String>,
    pub changes: Vec<Change>,
}

impl Plan {
    /// Settings that differ from the profile, or cannot be satisfied.
    pub fn drift(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| matches!(c.status, Status::Change | Status::Unsatisfiable(_)))
    }

    pub fn drift_count(&self) -> usize {
        self.problems.len() + self.drift().count()
    }

    pub fn unknown(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| matches!(c.status, Status::Unknown(_)))
    }
}

fn same(compare: Compare, current: &str, wanted: &str) -> bool {
    match compare {
        Compare::Words => current.split_whitespace().eq(wanted.split_whitespace()),
        Compare::CpuList => match (parse_cpulist(current), parse_cpulist(wanted)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
        Compare::Mask => match (parse_mask(current), parse_mask(wanted)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
    }
}

/// A file setting: read it and compare.
fn file_change(sys: &Sys, what: String, abs: String, wanted: String, compare: Compare) -> Change {
    let (current, status) = match sys.read(&abs) {
        Ok(current) => {
            let status = if same(compare, &current, &wanted) {
                Status::Ok
            } else {
                Status::Change
            };
            (Some(current), status)
        }
        Err(_) if !sys.exists(&abs) => {
            let why = if abs.starts_with("/proc/sys/net/") {
                format!("no {abs}: not in this kernel, or a host-wide setting that a network namespace does not show")
            } else {
                format!("no {abs}")
            };
            (None, Status::Unknown(why))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            None,
            Status::Unknown(format!(
                "the kernel refuses to read {abs} (ENOENT: e.g. XPS on a single-queue device)"
            )),
        ),
        Err(e) => (None, Status::Unknown(format!("cannot read {abs}: {e}"))),
    };
    Change {
        what,
        path_or_command: abs.clone(),
        current,
        wanted,
        status,
        action: Action::Write(abs),
    }
}

/// Compute the plan for `profile` on interface `iface` of the machine `sys` describes.
/// Errors only when the interface does not exist.
pub fn compute(sys: &Sys, profile: &Profile, iface: &str) -> Result<Plan, String> {
    super::validate_iface(iface)?;
    let net = sys.iface_dir(iface)?;
    let mut plan = Plan {
        profile: profile.name.clone(),
        iface: iface.to_string(),
        placement: None,
        problems: Vec::new(),
        notes: Vec::new(),
        changes: Vec::new(),
    };
    match profile.placement(sys, Some(iface)) {
        Ok(p) => {
            plan.notes.extend(p.notes.iter().cloned());
            plan.placement = Some(p);
        }
        Err(problems) => plan.problems = problems,
    }

    // Kernel settings.
    for (key, wanted) in &profile.sysctl {
        let abs = format!("/proc/sys/{}", key.replace('.', "/"));
        plan.changes.push(file_change(
            sys,
            format!("sysctl {key}"),
            abs,
            wanted.clone(),
            Compare::Words,
        ));
    }

    // CPU frequency governor, on every online CPU.
    if let Some(governor) = &profile.cpu.governor {
        let online = sys.online_cpus().unwrap_or_default();
        for cpu in online {
            let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
            let what = format!("cpu{cpu} scaling_governor");
            let abs = format!("{dir}/scaling_governor");
            if !sys.exists(&dir) {
                plan.changes.push(Change {
                    what,
                    path_or_command: abs.clone(),
                    current: None,
                    wanted: governor.clone(),
                    status: Status::Unknown(format!(
                        "no {dir}: no cpufreq driver for cpu{cpu} (usual in VMs; the host decides)"
                    )),
                    action: Action::Write(abs),
                });
                continue;
            }
            let mut change = file_change(sys, what, abs, governor.clone(), Compare::Words);
            if let Ok(available) = sys.read(&format!("{dir}/scaling_available_governors")) {
                if change.status == Status::Change
                    && !available.split_whitespace().any(|g| g == governor)
                {
                    change.status = Status::Unsatisfiable(format!(
                        "governor {governor} not available (available: {available})"
                    ));
                }
            }
            plan.changes.push(change);
        }
    }

    if let Some(p) = plan.placement.clone() {
        place(sys, profile, iface, &net, &p, &mut plan);
    }

    // Ring sizes and interrupt coalescing, through ethtool.
    nic_ethtool(sys, profile, iface, &mut plan);
    Ok(plan)
}

/// IRQ affinity, RPS and XPS: everything that needs the resolved cores.
fn place(sys: &Sys, profile: &Profile, iface: &str, net: &str, p: &Placement, plan: &mut Plan) {
    plan.notes.push(format!(
        "cores on {}: workers {}, failover {}, irq {}, housekeeping {}",
        p.node_reason,
        format_cpulist(&p.workers),
        p.failover.map_or("-".to_string(), |c| c.to_string()),
        if p.irq.is_empty() {
            "-".to_string()
        } else {
            format_cpulist(&p.irq)
        },
        if p.housekeeping.is_empty() {
            "-".to_string()
        } else {
            format_cpulist(&p.housekeeping)
        },
    ));

    if !p.housekeeping.is_empty() {
        let wanted = format_mask(&p.housekeeping);
        plan.changes.push(file_change(
            sys,
            format!(
                "default irq affinity (new IRQs) [cpus {}]",
                format_cpulist(&p.housekeeping)
            ),
            "/proc/irq/default_smp_affinity".into(),
            wanted,
            Compare::Mask,
        ));
        let mut isolated = p.workers.clone();
        isolated.extend(p.failover);
        let list = format_cpulist(&isolated);
        let cmdline = sys.read("/proc/cmdline").unwrap_or_default();
        let has = ["isolcpus=", "nohz_full="]
            .iter()
            .filter(|k| cmdline.split_whitespace().any(|w| w.starts_with(*k)))
            .count();
        plan.notes.push(format!(
            "advice (kernel command line, not set at runtime): isolcpus=managed_irq,domain,{list} nohz_full={list} rcu_nocbs={list} irqaffinity={} — /proc/cmdline has {}",
            format_cpulist(&p.housekeeping),
            if has == 0 { "neither isolcpus nor nohz_full" } else { "some of these already" }
        ));
    }

    if !p.irq.is_empty() {
        match sys.nic_irqs(iface) {
            Ok(irqs) if irqs.is_empty() => plan.notes.push(format!(
                "no IRQs of {iface} in /proc/interrupts (a virtual device, or its IRQ names mention neither {iface} nor its device); cpu.irq not applied"
            )),
            Ok(irqs) => {
                let mut numbers: Vec<u32> = Vec::new();
                for (i, irq) in irqs.iter().enumerate() {
                    if numbers.contains(&irq.number) {
                        continue;
                    }
                    numbers.push(irq.number);
                    let cpu = p.irq[i % p.irq.len()];
                    plan.changes.push(file_change(
                        sys,
                        format!("irq {} ({}) smp_affinity_list", irq.number, irq.name),
                        format!("/proc/irq/{}/smp_affinity_list", irq.number),
                        cpu.to_string(),
                        Compare::CpuList,
                    ));
                }
            }
            Err(e) => plan.problems.push(format!("cpu.irq: {e}")),
        }
    }

    let queues = sys.list_dir(&format!("{net}/queues")).unwrap_or_default();
    if let Some(rps) = profile.nic.rps {
        let cpus = if rps { p.workers.clone() } else { Vec::new() };
        for q in queues.iter().filter(|q| q.starts_with("rx-")) {
            plan.changes.push(file_change(
                sys,
                format!("{iface} {q} rps_cpus [cpus {}]", cpus_label(&cpus)),
                format!("{net}/queues/{q}/rps_cpus"),
                format_mask(&cpus),
                Compare::Mask,
            ));
        }
    }
    if let Some(xps) = profile.nic.xps {
        let tx: Vec<&String> = queues.iter().filter(|q| q.starts_with("tx-")).collect();
        for (n, q) in tx.iter().enumerate() {
            // Each worker transmits on one queue: worker k → queue k mod the queue count.
            let cpus: Vec<usize> = if xps {
                p.workers
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| k % tx.len() == n)
                    .map(|(_, &c)| c)
                    .collect()
            } else {
                Vec::new()
            };
            plan.changes.push(file_change(
                sys,
                format!("{iface} {q} xps_cpus [cpus {}]", cpus_label(&cpus)),
                format!("{net}/queues/{q}/xps_cpus"),
                format_mask(&cpus),
                Compare::Mask,
            ));
        }
    }
}

fn cpus_label(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "none".into()
    } else {
        format_cpulist(cpus)
    }
}

fn nic_ethtool(sys: &Sys, profile: &Profile, iface: &str, plan: &mut Plan) {
    let rings = [
        ("rx", "RX", profile.nic.rx_ring),
        ("tx", "TX", profile.nic.tx_ring),
    ];
    if rings.iter().any(|r| r.2.is_some()) {
        let shown = sys.ethtool(&["-g".into(), iface.into()]);
        for (arg, label, wanted) in rings {
            let Some(wanted) = wanted else { continue };
            let args = vec![
                "-G".to_string(),
                iface.to_string(),
                arg.into(),
                wanted.to_string(),
            ];
            let (current, status) = match &shown {
                Err(e) => (
                    None,
                    Status::Unknown(format!("{e}; ring sizes are not in sysfs")),
                ),
                Ok(text) => match super::sys::parse_ethtool_rings(text, label) {
                    (_, None) => (
                        None,
                        Status::Unknown(format!("ethtool -g {iface} shows no {label} ring size")),
                    ),
                    (Some(max), Some(cur)) if wanted > max => (
                        Some(cur.to_string()),
                        Status::Unsatisfiable(format!("the NIC's {label} ring maximum is {max}")),
                    ),
                    (_, Some(cur)) if cur == wanted => (Some(cur.to_string()), Status::Ok),
                    (_, Some(cur)) => (Some(cur.to_string()), Status::Change),
                },
            };
            plan.changes.push(Change {
                what: format!("{iface} {arg} ring size"),
                path_or_command: format!("ethtool {}", args.join(" ")),
                current,
                wanted: wanted.to_string(),
                status,
                action: Action::Ethtool(args),
            });
        }
    }
    if let Some(wanted) = profile.nic.coalesce_rx_usecs {
        let args = vec![
            "-C".to_string(),
            iface.to_string(),
            "rx-usecs".into(),
            wanted.to_string(),
        ];
        let (current, status) = match sys.ethtool(&["-c".into(), iface.into()]) {
            Err(e) => (
                None,
                Status::Unknown(format!("{e}; coalescing is not in sysfs")),
            ),
            Ok(text) => match super::sys::parse_ethtool_field(&text, "rx-usecs") {
                Some(cur) if cur.parse::<u32>().is_ok() => {
                    let status = if cur == wanted.to_string() {
                        Status::Ok
                    } else {
                        Status::Change
                    };
                    (Some(cur), status)
                }
                Some(cur) => (
                    Some(cur.clone()),
                    Status::Unsatisfiable(format!("{iface} does not support rx-usecs ({cur})")),
                ),
                None => (
                    None,
                    Status::Unknown(format!("ethtool -c {iface} shows no rx-usecs")),
                ),
            },
        };
        plan.changes.push(Change {
            what: format!("{iface} coalesce rx-usecs"),
            path_or_command: format!("ethtool {}", args.join(" ")),
            current,
            wanted: wanted.to_string(),
            status,
            action: Action::Ethtool(args),
        });
    }
}

fn status_text(status: &Status) -> String {
    match status {
        Status::Ok => "ok".into(),
        Status::Change => "change".into(),
        Status::Unknown(why) => format!("unknown ({why})"),
        Status::Unsatisfiable(why) => format!("unsatisfiable ({why})"),
    }
}

fn table(changes: &[&Change], with_commands: bool) -> String {
    let header = ["WHAT", "CURRENT", "WANTED", "STATUS"];
    let rows: Vec<[String; 4]> = changes
        .iter()
        .map(|c| {
            [
                c.what.clone(),
                c.current
                    .clone()
                    .unwrap_or_else(|| "unknown".into())
                    .replace('\t', " "),
                c.wanted.replace('\t', " "),
                status_text(&c.status),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    let mut out = line(header);
    for (row, change) in rows.iter().zip(changes) {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
        if with_commands && change.status == Status::Change {
            let how = match &change.action {
                Action::Write(abs) => {
                    format!("write {} to {abs}", change.wanted.replace('\t', " "))
                }
                Action::Ethtool(_) => format!("run {}", change.path_or_command),
            };
            out.push_str(&format!("    → {how}\n"));
        }
    }
    out
}

/// `tune show`: every setting, current and wanted, and what `apply` would do.
pub fn render_show(plan: &Plan) -> String {
    let mut out = format!("profile {} on {}\n", plan.profile, plan.iface);
    for note in &plan.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    for problem in &plan.problems {
        out.push_str(&format!("UNSATISFIABLE: {problem}\n"));
    }
    out.push('\n');
    let all: Vec<&Change> = plan.changes.iter().collect();
    out.push_str(&table(&all, true));
    let changes = plan
        .changes
        .iter()
        .filter(|c| c.status == Status::Change)
        .count();
    out.push_str(&format!(
        "\n{changes} to change, {} ok, {} unknown, {} unsatisfiable\n",
        plan.changes
            .iter()
            .filter(|c| c.status == Status::Ok)
            .count(),
        plan.unknown().count(),
        plan.problems.len()
            + plan
                .changes
                .iter()
                .filter(|c| matches!(c.status, Status::Unsatisfiable(_)))
                .count()
    ));
    out
}

/// `tune check`: only the drift (and one line about settings that could not be read).
pub fn render_check(plan: &Plan) -> String {
    let mut out = String::new();
    for problem in &plan.problems {
        out.push_str(&format!("UNSATISFIABLE: {problem}\n"));
    }
    let drift: Vec<&Change> = plan.drift().collect();
    if !drift.is_empty() {
        out.push_str(&table(&drift, false));
    }
    let unknown = plan.unknown().count();
    if plan.drift_count() == 0 {
        out.push_str(&format!(
            "no drift: {} matches profile {}\n",
            plan.iface, plan.profile
        ));
    } else {
        out.push_str(&format!(
            "{} settings drifted from profile {} on {}\n",
            plan.drift_count(),
            plan.profile,
            plan.iface
        ));
    }
    if unknown > 0 {
        out.push_str(&format!(
            "({unknown} settings could not be read; `tune show` says why)\n"
        ));
    }
    out
}

/// What `apply` did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    pub lines: Vec<String>,
    /// Changes that failed or did not stick.
    pub failed: usize,
}

/// Carry out the plan's changes (only those with [`Status::Change`] that `filter` accepts),
/// then re-read and report what did not stick. Refuses a plan with unsatisfiable cores.
pub fn apply(
    sys: &Sys,
    profile: &Profile,
    plan: &Plan,
    filter: impl Fn(&Change) -> bool,
) -> Result<ApplyReport, String> {
    if !plan.problems.is_empty() {
        return Err(format!(
            "profile {} does not fit this machine, nothing applied:\n  {}",
            plan.profile,
            plan.problems.join("\n  ")
        ));
    }
    let mut report = ApplyReport::default();
    let mut attempted = Vec::new();
    // ethtool first: a ring resize may reset the NIC and its queues, undoing IRQ affinity.
    let ordered = plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Ethtool(_)))
        .chain(
            plan.changes
                .iter()
                .filter(|c| matches!(c.action, Action::Write(_))),
        );
    for change in ordered.filter(|c| filter(c)) {
        match &change.status {
            Status::Ok => {}
            Status::Unknown(why) => {
                let why = if why.starts_with("ethtool not installed") {
                    "ethtool not installed".to_string()
                } else {
                    why.clone()
                };
                report
                    .lines
                    .push(format!("{}: {why}, skipped", change.what));
            }
            Status::Unsatisfiable(why) => {
                report.failed += 1;
                report
                    .lines
                    .push(format!("{}: not applied: {why}", change.what));
            }
            Status::Change => {
                let result = match &change.action {
                    Action::Write(abs) => sys
                        .write(abs, &change.wanted)
                        .map_err(|e| format!("writing {abs}: {e}")),
                    Action::Ethtool(args) => sys.ethtool(args).map(|_| ()),
                };
                match result {
                    Ok(()) => {
                        attempted.push(change.what.clone());
                        report.lines.push(format!(
                            "{}: {} → {}",
                            change.what,
                            change
                                .current
                                .as_deref()
                                .unwrap_or("unknown")
                                .replace('\t', " "),
                            change.wanted.replace('\t', " ")
                        ));
                    }
                    Err(e) => {
                        report.failed += 1;
                        report.lines.push(format!("{}: FAILED: {e}", change.what));
                    }
                }
            }
        }
    }
    let after = compute(sys, profile, &plan.iface)?;
    for what in &attempted {
        let Some(now) = after.changes.iter().find(|c| &c.what == what) else {
            continue;
        };
        if now.status != Status::Ok {
            report.failed += 1;
            report.lines.push(format!(
                "{what}: did not stick: reads {} after writing {}",
                now.current.as_deref().unwrap_or("unknown"),
                now.wanted
            ));
        }
    }
    Ok(report)
}

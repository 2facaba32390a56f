//! Reading (and writing) the kernel's knobs: procfs and sysfs under a configurable root, so that
//! tests can point everything at a fake tree, and the `ethtool` binary when it is installed.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the system is read from: `/` on a real machine, a temp dir in tests.
#[derive(Clone, Debug)]
pub struct Sys {
    /// Prefix for every `/proc/...` and `/sys/...` path.
    pub root: PathBuf,
    /// The `ethtool` binary, if installed (tests may point it at a fake script).
    pub ethtool: Option<PathBuf>,
}

/// One of the NIC's interrupts, as named in `/proc/interrupts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Irq {
    pub number: u32,
    pub name: String,
}

impl Sys {
    /// The running system: root `/`, `ethtool` from `PATH` (or `/sbin`, `/usr/sbin`).
    pub fn real() -> Sys {
        Sys {
            root: PathBuf::from("/"),
            ethtool: find_program("ethtool"),
        }
    }

    /// A fake tree rooted at `root`, without ethtool.
    pub fn at(root: impl Into<PathBuf>) -> Sys {
        Sys {
            root: root.into(),
            ethtool: None,
        }
    }

    /// `abs` ("/proc/sys/...") under the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// The trimmed contents of `abs`.
    pub fn read(&self, abs: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(abs)).map(|s| s.trim().to_string())
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// Write `value` to an existing procfs/sysfs file (never creates one).
    pub fn write(&self, abs: &str, value: &str) -> io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(abs))?;
        file.write_all(format!("{value}\n").as_bytes())
    }

    /// Names of the entries of directory `abs`, sorted naturally ("rx-2" before "rx-10").
    pub fn list_dir(&self, abs: &str) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(abs))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort_by_key(|n| natural_key(n));
        Ok(names)
    }

    /// CPUs the kernel has online (`/sys/devices/system/cpu/online`).
    pub fn online_cpus(&self) -> Result<Vec<usize>, String> {
        let abs = "/sys/devices/system/cpu/online";
        let text = self
            .read(abs)
            .map_err(|e| format!("cannot read {abs}: {e}"))?;
        parse_cpulist(&text).map_err(|e| format!("{abs}: {e}"))
    }

    /// NUMA nodes, or `None` when the kernel has no `/sys/devices/system/node` (no NUMA).
    pub fn numa_nodes(&self) -> Option<Vec<usize>> {
        let names = self.list_dir("/sys/devices/system/node").ok()?;
        let nodes: Vec<usize> = names
            .iter()
            .filter_map(|n| n.strip_prefix("node")?.parse().ok())
            .collect();
        (!nodes.is_empty()).then_some(nodes)
    }

    /// The CPUs of NUMA node `node`, ascending. Without NUMA support, node 0 is every online CPU.
    pub fn node_cpus(&self, node: usize) -> Result<Vec<usize>, String> {
        match self.numa_nodes() {
            None if node == 0 => self.online_cpus(),
            None => Err(format!(
                "node {node} does not exist (this kernel reports no NUMA nodes)"
            )),
            Some(nodes) if !nodes.contains(&node) => Err(format!(
                "node {node} does not exist (nodes: {})",
                format_cpulist(&nodes)
            )),
            Some(_) => {
                let abs = format!("/sys/devices/system/node/node{node}/cpulist");
                let text = self
                    .read(&abs)
                    .map_err(|e| format!("cannot read {abs}: {e}"))?;
                parse_cpulist(&text).map_err(|e| format!("{abs}: {e}"))
            }
        }
    }

    /// `/sys/class/net/IF`, or an error saying the interface does not exist.
    pub fn iface_dir(&self, iface: &str) -> Result<String, String> {
        let abs = format!("/sys/class/net/{iface}");
        if self.exists(&abs) {
            Ok(abs)
        } else {
            Err(format!("interface {iface} not found (no {abs})"))
        }
    }

    /// The device directory behind the interface and, for virtio, its PCI parent; canonical
    /// paths under the root. Virtual devices (veth, bridges) have none.
    fn device_dirs(&self, iface: &str) -> Vec<PathBuf> {
        let Ok(dev) = self
            .path(&format!("/sys/class/net/{iface}/device"))
            .canonicalize()
        else {
            return Vec::new();
        };
        let mut dirs = vec![dev.clone()];
        if let Some(parent) = dev.parent() {
            let is_virtio = dev
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("virtio"));
            if is_virtio {
                dirs.push(parent.to_path_buf());
            }
        }
        dirs
    }

    /// The NUMA node of the interface's device: `Ok(Some(n))`, `Ok(None)` when the platform does
    /// not say (-1, or a virtual device), with the reason.
    pub fn nic_numa_node(&self, iface: &str) -> Result<Option<usize>, String> {
        self.iface_dir(iface)?;
        let dirs = self.device_dirs(iface);
        if dirs.is_empty() {
            return Err(format!(
                "{iface} has no device (a virtual interface), so no NUMA node"
            ));
        }
        for dir in &dirs {
            if let Ok(text) = std::fs::read_to_string(dir.join("numa_node")) {
                let text = text.trim();
                return match text.parse::<i64>() {
                    Ok(n) if n >= 0 => Ok(Some(n as usize)),
                    Ok(_) => Err(format!(
                        "{iface}'s device reports numa_node {text} (the platform gives no NUMA information)"
                    )),
                    Err(_) => Err(format!("{iface}'s device numa_node is '{text}'")),
                };
            }
        }
        Err(format!("{iface}'s device has no numa_node file"))
    }

    /// The interface's IRQs from `/proc/interrupts`: an action name mentions the interface
    /// ("eth0-TxRx-3", "i40e-eth0-TxRx-3"), its device ("virtio2-input.0") or its PCI address
    /// ("mlx5_comp3@pci:0000:03:00.0").
    pub fn nic_irqs(&self, iface: &str) -> Result<Vec<Irq>, String> {
        let abs = "/proc/interrupts";
        let text = self
            .read(abs)
            .map_err(|e| format!("cannot read {abs}: {e}"))?;
        let mut names = vec![iface.to_string()];
        for dir in self.device_dirs(iface) {
            if let Some(n) = dir.file_name() {
                names.push(n.to_string_lossy().into_owned());
            }
        }
        Ok(parse_interrupts(&text)
            .into_iter()
            .filter(|irq| names.iter().any(|n| irq_name_mentions(&irq.name, n)))
            .collect())
    }

    /// Run the installed ethtool; its stdout, or why it failed.
    pub fn ethtool(&self, args: &[String]) -> Result<String, String> {
        let Some(bin) = &self.ethtool else {
            return Err("ethtool not installed".into());
        };
        let out = Command::new(bin)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let msg = if stderr.trim().is_empty() {
                stdout.trim().to_string()
            } else {
                stderr.trim().to_string()
            };
            Err(format!("ethtool {} failed: {msg}", args.join(" ")))
        }
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// "rx-10" → ("rx-", 10) so that queues sort numerically.
fn natural_key(name: &str) -> (String, u64, String) {
    let digits_at = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (prefix, rest) = name.split_at(digits_at);
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let number = rest[..end].parse().unwrap_or(0);
    (prefix.to_string(), number, rest[end..].to_string())
}

/// Whether an IRQ action name like "i40e-eth0-TxRx-3" mentions `name` as a whole word:
/// preceded by the start, '-' or ':' and followed by the end or one of "-@:_.".
pub fn irq_name_mentions(action: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(at) = action[from..].find(name) {
        let start = from + at;
        let end = start + name.len();
        let before_ok = start == 0 || matches!(action.as_bytes()[start - 1], b'-' | b':');
        let after_ok = end == action.len()
            || matches!(action.as_bytes()[end], b'-' | b'@' | b':' | b'_' | b'.');
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

/// The numbered lines of `/proc/interrupts`: IRQ number and the action name(s) at the end.
pub fn parse_interrupts(text: &str) -> Vec<Irq> {
    let mut lines = text.lines();
    let cpus = lines
        .next()
        .map(|header| header.split_whitespace().count())
        .unwrap_or(0);
    let mut irqs = Vec::new();
    for line in lines {
        let Some((number, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(number) = number.trim().parse::<u32>() else {
            continue;
        };
        // Per-CPU counts, then the chip name, the hardware IRQ / trigger, then the actions
        // ("name" or "name1, name2").
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let after_counts = fields.get(cpus..).unwrap_or(&[]);
        let actions = after_counts.get(2..).unwrap_or(&[]);
        for action in actions.join(" ").split(',') {
            let action = action.trim();
            if !action.is_empty() {
                irqs.push(Irq {
                    number,
                    name: action.to_string(),
                });
            }
        }
    }
    irqs
}

/// "0-3,8,10-11" → [0, 1, 2, 3, 8, 10, 11]. The empty string is the empty set.
pub fn parse_cpulist(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = BTreeSet::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let bad = || format!("'{part}' is not a CPU number or range like 2-15");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(format!("'{part}': the range runs backwards"));
                }
                if b - a > MAX_CPU {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => {
                cpus.insert(part.parse::<usize>().map_err(|_| bad())?);
            }
        }
    }
    Ok(cpus.into_iter().collect())
}

/// The highest CPU number we accept anywhere (the kernel's NR_CPUS is at most 8192).
pub const MAX_CPU: usize = 8191;

/// [0, 1, 2, 3, 8] → "0-3,8".
pub fn format_cpulist(cpus: &[usize]) -> String {
    let sorted: BTreeSet<usize> = cpus.iter().copied().collect();
    let mut parts = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// A kernel CPU mask ("ffff,00000003": 32-bit hex groups, most significant first) → CPUs.
pub fn parse_mask(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    let groups: Vec<&str> = text.trim().split(',').collect();
    for (i, group) in groups.iter().rev().enumerate() {
        let group = group.trim();
        let value = u32::from_str_radix(group, 16)
            .map_err(|_| format!("'{}' is not a hex CPU mask", text.trim()))?;
        for bit in 0..32 {
            if value & (1 << bit) != 0 {
                cpus.push(i * 32 + bit);
            }
        }
    }
    cpus.sort_unstable();
    Ok(cpus)
}

/// CPUs → a mask the kernel accepts: "0" for none, "3", "ffff0000,00000000".
pub fn format_mask(cpus: &[usize]) -> String {
    let Some(&max) = cpus.iter().max() else {
        return "0".into();
    };
    let mut groups = vec![0u32; max / 32 + 1];
    for &cpu in cpus {
        groups[cpu / 32] |= 1 << (cpu % 32);
    }
    let mut out = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&format!("{g:x}"));
        } else {
            out.push_str(&format!(",{g:08x}"));
        }
    }
    out
}

/// `ethtool -g` output → (maximum, current) for "RX" or "TX".
pub fn parse_ethtool_rings(text: &str, which: &str) -> (Option<u32>, Option<u32>) {
    let mut max = None;
    let mut current = None;
    let mut section = 0; // 1 = maximums, 2 = current
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Pre-set maximums") {
            section = 1;
        } else if line.starts_with("Current hardware settings") {
            section = 2;
        } else if let Some((key, value)) = line.split_once(':') {
            if key.trim() == which {
                let value = value.trim().parse().ok();
                match section {
                    1 => max = value,
                    2 => current = value,
                    _ => {}
                }
            }
        }
    }
    (max, current)
}

/// `ethtool -c` output → the value of `key` ("rx-usecs"), if a number.
pub fn parse_ethtool_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_and_masks_round_trip() {
        assert_eq!(
            parse_cpulist("0-3,8, 10-11").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpulist("").unwrap(), Vec::<usize>::new());
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("x").is_err());
        assert_eq!(format_cpulist(&[8, 0, 1, 2, 3, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_mask(&[]), "0");
        assert_eq!(format_mask(&[1]), "2");
        assert_eq!(format_mask(&[0, 1]), "3");
        assert_eq!(format_mask(&[33, 63]), "80000002,00000000");
        assert_eq!(parse_mask("80000002,00000000").unwrap(), vec![33, 63]);
        assert_eq!(parse_mask("00000000,00000003").unwrap(), vec![0, 1]);
        assert_eq!(parse_mask("0").unwrap(), Vec::<usize>::new());
        assert!(parse_mask("zz").is_err());
    }

    #[test]
    fn irq_names_match_whole_words() {
        assert!(irq_name_mentions("eth0-TxRx-0", "eth0"));
        assert!(irq_name_mentions("i40e-eth0-TxRx-0", "eth0"));
        assert!(irq_name_mentions("eth0", "eth0"));
        assert!(!irq_name_mentions("eth10-rx-0", "eth1"));
        assert!(!irq_name_mentions("veth0-rx", "eth0"));
        assert!(irq_name_mentions("virtio2-input.0", "virtio2"));
        assert!(!irq_name_mentions("virtio21-input.0", "virtio2"));
        assert!(irq_name_mentions(
            "mlx5_comp3@pci:0000:03:00.0",
            "0000:03:00.0"
        ));
    }

    #[test]
    fn interrupts_are_parsed() {
        let text = "           CPU0       CPU1\n\
                    \x20 24:          1          0  IO-APIC   5-edge      ACPI:Ged\n\
                    \x20 45:        100          0  PCI-MSI 524288-edge      eth0-rx-0\n\
                    \x20 46:          0        100  PCI-MSI 524289-edge      eth0-tx-0, other\n\
                    NMI:          0          0   Non-maskable interrupts\n";
        let irqs = parse_interrupts(text);
        let names: Vec<(u32, &str)> = irqs.iter().map(|i| (i.number, i.name.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (24, "ACPI:Ged"),
                (45, "eth0-rx-0"),
                (46, "eth0-tx-0"),
                (46, "other")
            ]
        );
    }

    #[test]
    fn ethtool_output_is_parsed() {
        let g = "Ring parameters for eth0:\nPre-set maximums:\nRX:\t\t4096\nRX Mini:\tn/a\nTX:\t\t2048\n\
                 Current hardware settings:\nRX:\t\t512\nRX Mini:\tn/a\nTX:\t\t256\n";
        assert_eq!(parse_ethtool_rings(g, "RX"), (Some(4096), Some(512)));
        assert_eq!(parse_ethtool_rings(g, "TX"), (Some(2048), Some(256)));
        let c = "Coalesce parameters for eth0:\nAdaptive RX: off  TX: off\nrx-usecs: 3\nrx-frames: n/a\n";
        assert_eq!(parse_ethtool_field(c, "rx-usecs").as_deref(), Some("3"));
        assert_eq!(parse_ethtool_field(c, "tx-usecs"), None);
    }

    #[test]
    fn queues_sort_naturally() {
        let mut v = vec!["rx-10", "rx-2", "rx-0", "tx-1"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, vec!["rx-0", "rx-2", "rx-10", "tx-1"]);
    }
}

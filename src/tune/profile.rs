//! Tuning profiles: TOML as written by the operator ([`raw`]) becomes a validated [`Profile`].
//! Every error names the key. Core lists are resolved against the machine by
//! [`Profile::placement`].

use std::collections::BTreeMap;
use std::path::Path;

use super::sys::{format_cpulist, parse_cpulist, Sys, MAX_CPU};

/// A profile problem: which key, and what is wrong with it (the configuration's error type).
pub use crate::config::ConfigError as ProfileError;

use crate::config::err;

/// Which cores: absolute CPU numbers, or positions in the chosen NUMA node's CPU list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreSpec {
    /// `[1, 2]`, `3` or `"2-15"`: these CPU numbers.
    Cpus(Vec<usize>),
    /// `"node:2-15"`: the 3rd to the 16th CPU (counting from 0, ascending) of the node that
    /// `cpu.numa_node` chooses.
    Node(Vec<usize>),
}

impl std::fmt::Display for CoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreSpec::Cpus(c) => write!(f, "{}", format_cpulist(c)),
            CoreSpec::Node(c) => write!(f, "node:{}", format_cpulist(c)),
        }
    }
}

/// Which NUMA node `node:` core lists (and the NUMA checks) refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumaNode {
    /// The node of the interface's device (`/sys/class/net/IF/device/numa_node`).
    Nic,
    Node(usize),
}

/// Validated `[cpu]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuProfile {
    pub workers: CoreSpec,
    pub failover: Option<CoreSpec>,
    pub irq: Option<CoreSpec>,
    pub housekeeping: Option<CoreSpec>,
    pub numa_node: NumaNode,
    pub governor: Option<String>,
}

/// Validated `[nic]`. `None` = leave that setting alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicProfile {
    pub rx_ring: Option<u32>,
    pub tx_ring: Option<u32>,
    pub coalesce_rx_usecs: Option<u32>,
    /// `true`: every RX queue's `rps_cpus` = the worker cores; `false`: RPS off ("0").
    pub rps: Option<bool>,
    /// `true`: each TX queue's `xps_cpus` = its share of the worker cores; `false`: XPS off.
    pub xps: Option<bool>,
}

/// A validated tuning profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub cpu: CpuProfile,
    /// sysctl key ("net.core.rmem_max") → value as written to `/proc/sys` (fields tab-separated).
    pub sysctl: BTreeMap<String, String>,
    pub nic: NicProfile,
}

/// The profile's cores resolved on one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The NUMA node `node:` lists refer to, and how it was chosen.
    pub node: usize,
    pub node_reason: String,
    pub workers: Vec<usize>,
    pub failover: Option<usize>,
    pub irq: Vec<usize>,
    pub housekeeping: Vec<usize>,
    /// Things worth knowing that are not errors (e.g. workers off the NIC's node).
    pub notes: Vec<String>,
}

impl Profile {
    pub fn from_file(path: &Path) -> Result<Profile, ProfileError> {
        let text = crate::config::read_file(path)?;
        Profile::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        let raw: raw::Profile = crate::config::parse_toml(text)?;
        raw.validate()
    }

    /// Resolve the core lists on the machine `sys` describes. `iface` is needed for
    /// `numa_node = "nic"`; without it (or when the device has no NUMA node) node 0 is used.
    /// Errors list every unsatisfiable key (cores that do not exist here).
    pub fn placement(&self, sys: &Sys, iface: Option<&str>) -> Result<Placement, Vec<String>> {
        let online = sys.online_cpus().map_err(|e| vec![e])?;
        let (node, node_reason) = match (self.cpu.numa_node, iface) {
            (NumaNode::Node(n), _) => (n, format!("node {n} (cpu.numa_node)")),
            (NumaNode::Nic, None) => (0, "node 0 (no interface given)".to_string()),
            (NumaNode::Nic, Some(iface)) => match sys.nic_numa_node(iface) {
                Ok(Some(n)) => (n, format!("node {n}, the node of {iface}")),
                Ok(None) => (0, format!("node 0 ({iface} has no NUMA node)")),
                Err(why) => (0, format!("node 0 ({why})")),
            },
        };
        let node_cpus = sys
            .node_cpus(node)
            .map_err(|e| vec![format!("cpu.numa_node: {e}")])?;
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut resolve = |key: &str, spec: &CoreSpec| -> Vec<usize> {
            match spec {
                CoreSpec::Cpus(cpus) => {
                    let missing: Vec<usize> = cpus
                        .iter()
                        .copied()
                        .filter(|c| !online.contains(c))
                        .collect();
                    if !missing.is_empty() {
                        problems.push(format!(
                            "cpu.{key}: CPUs {} do not exist on this machine (online: {})",
                            format_cpulist(&missing),
                            format_cpulist(&online)
                        ));
                        return Vec::new();
                    }
                    let off_node: Vec<usize> = cpus
                        .iter()
                        .copied()
                        .filter(|c| !node_cpus.contains(c))
                        .collect();
                    if !off_node.is_empty() && sys.numa_nodes().is_some_and(|n| n.len() > 1) {
                        notes.push(format!(
                            "cpu.{key}: CPUs {} are not on {node_reason}",
                            format_cpulist(&off_node)
                        ));
                    }
                    cpus.clone()
                }
                CoreSpec::Node(indices) => {
                    let missing: Vec<usize> = indices
                        .iter()
                        .copied()
                        .filter(|&i| i >= node_cpus.len())
                        .collect();
                    if !missing.is_empty() {
                        problems.push(format!(
                            "cpu.{key}: {spec} needs CPUs #{} of {node_reason}, which has only {} CPUs ({}) — CPUs #{} do not exist on this machine",
                            format_cpulist(indices),
                            node_cpus.len(),
                            format_cpulist(&node_cpus),
                            format_cpulist(&missing),
                        ));
                        return Vec::new();
                    }
                    indices.iter().map(|&i| node_cpus[i]).collect()
                }
            }
        };
        let workers = resolve("workers", &self.cpu.workers);
        let failover = self
            .cpu
            .failover
            .as_ref()
            .and_then(|s| resolve("failover", s).first().copied());
        let irq = self
            .cpu
            .irq
            .as_ref()
            .map(|s| resolve("irq", s))
            .unwrap_or_default();
        let housekeeping = self
            .cpu
            .housekeeping
            .as_ref()
            .map(|s| resolve("housekeeping", s))
            .unwrap_or_default();
        if let Some(f) = failover {
            if workers.contains(&f) {
                problems.push(format!(
                    "cpu.failover: CPU {f} is also a worker CPU (cpu.workers); give failover a core of its own"
                ));
            }
        }
        if problems.is_empty() {
            Ok(Placement {
                node,
                node_reason,
                workers,
                failover,
                irq,
                housekeeping,
                notes,
            })
        } else {
            Err(problems)
        }
    }
}

/// The operator's words, as serde reads them.
mod raw {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Profile {
        pub profile: Meta,
        pub cpu: Cpu,
        #[serde(default)]
        pub sysctl: BTreeMap<String, toml::Value>,
        #[serde(default)]
        pub nic: Nic,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Meta {
        pub name: String,
        pub description: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Cpu {
        pub workers: toml::Value,
        pub failover: Option<toml::Value>,
        pub irq: Option<toml::Value>,
        pub housekeeping: Option<toml::Value>,
        pub numa_node: Option<toml::Value>,
        pub governor: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Nic {
        pub rx_ring: Option<i64>,
        pub tx_ring: Option<i64>,
        pub coalesce_rx_usecs: Option<i64>,
        pub rps: Option<bool>,
        pub xps: Option<bool>,
    }
}

fn parse_cores(key: &str, value: &toml::Value) -> Result<CoreSpec, ProfileError> {
    let spec = match value {
        toml::Value::Integer(n) => CoreSpec::Cpus(vec![cpu_number(key, *n)?]),
        toml::Value::Array(items) => {
            let mut cpus = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    toml::Value::Integer(n) => cpus.push(cpu_number(&format!("{key}[{i}]"), *n)?),
                    other => {
                        return err(
                            format!("{key}[{i}]"),
                            format!("expected a CPU number, found {}", other.type_str()),
                        )
                    }
                }
            }
            let count = cpus.len();
            cpus.sort_unstable();
            cpus.dedup();
            if cpus.len() != count {
                return err(key, "a CPU is listed twice");
            }
            CoreSpec::Cpus(cpus)
        }
        toml::Value::String(s) => {
            let (relative, list) = match s.trim().strip_prefix("node:") {
                Some(rest) => (true, rest),
                None => (false, s.as_str()),
            };
            let cpus = parse_cpulist(list).or_else(|e| err(key, e))?;
            if let Some(&c) = cpus.iter().find(|&&c| c > MAX_CPU) {
                return err(key, format!("CPU {c} is beyond {MAX_CPU}"));
            }
            if relative {
                CoreSpec::Node(cpus)
            } else {
                CoreSpec::Cpus(cpus)
            }
        }
        other => {
            return err(
                key,
                format!(
                    "expected CPU numbers like [1, 2], \"2-15\" or \"node:2-15\", found {}",
                    other.type_str()
                ),
            )
        }
    };
    let empty = match &spec {
        CoreSpec::Cpus(c) | CoreSpec::Node(c) => c.is_empty(),
    };
    if empty {
        return err(key, "names no CPU");
    }
    Ok(spec)
}

fn cpu_number(key: &str, n: i64) -> Result<usize, ProfileError> {
    match usize::try_from(n) {
        Ok(c) if c <= MAX_CPU => Ok(c),
        _ => err(key, format!("{n} is not a CPU number 0..={MAX_CPU}")),
    }
}

/// A sysctl name: dotted words of [a-z0-9_-]; nothing that could leave `/proc/sys`.
fn valid_sysctl_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

const GOVERNORS: [&str; 6] = [
    "performance",
    "powersave",
    "schedutil",
    "ondemand",
    "conservative",
    "userspace",
];

impl raw::Profile {
    fn validate(self) -> Result<Profile, ProfileError> {
        let name = self.profile.name.trim().to_string();
        if name.is_empty() {
            return err("profile.name", "must not be empty");
        }
        let cpu = self.cpu.validate()?;
        let mut sysctl = BTreeMap::new();
        for (key, value) in self.sysctl {
            let k = format!("sysctl.\"{key}\"");
            if !valid_sysctl_key(&key) {
                return err(
                    k,
                    "is not a sysctl name like net.core.rmem_max (dotted words of letters, digits, '_' and '-')",
                );
            }
            let text = match value {
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::String(s) if !s.trim().is_empty() && !s.contains('\n') => {
                    s.trim().to_string()
                }
                toml::Value::Array(items) => {
                    let mut fields = Vec::new();
                    for item in &items {
                        match item {
                            toml::Value::Integer(n) => fields.push(n.to_string()),
                            _ => return err(k, "an array value must hold integers only"),
                        }
                    }
                    if fields.is_empty() {
                        return err(k, "must not be empty");
                    }
                    fields.join("\t")
                }
                _ => {
                    return err(
                        k,
                        "expected an integer, a one-line string or an array of integers",
                    )
                }
            };
            sysctl.insert(key, text);
        }
        let nic = self.nic.validate()?;
        Ok(Profile {
            name,
            description: self.profile.description.unwrap_or_default(),
            cpu,
            sysctl,
            nic,
        })
    }
}

impl raw::Cpu {
    fn validate(self) -> Result<CpuProfile, ProfileError> {
        let workers = parse_cores("cpu.workers", &self.workers)?;
        let failover = match &self.failover {
            None => None,
            Some(v) => {
                let spec = parse_cores("cpu.failover", v)?;
                let n = match &spec {
                    CoreSpec::Cpus(c) | CoreSpec::Node(c) => c.len(),
                };
                if n != 1 {
                    return err("cpu.failover", "must name exactly one CPU");
                }
                Some(spec)
            }
        };
        // Both in the same terms: an overlap is certain whatever the machine.
        if let Some(f) = &failover {
            let overlap = match (&workers, f) {
                (CoreSpec::Cpus(w), CoreSpec::Cpus(f)) | (CoreSpec::Node(w), CoreSpec::Node(f)) => {
                    w.contains(&f[0])
                }
                _ => false,
            };
            if overlap {
                return err(
                    "cpu.failover",
                    format!("{f} is also in cpu.workers; give failover a core of its own"),
                );
            }
        }
        let irq = self
            .irq
            .as_ref()
            .map(|v| parse_cores("cpu.irq", v))
            .transpose()?;
        let housekeeping = self
            .housekeeping
            .as_ref()
            .map(|v| parse_cores("cpu.housekeeping", v))
            .transpose()?;
        let numa_node = match &self.numa_node {
            None => NumaNode::Nic,
            Some(toml::Value::String(s)) if s == "nic" => NumaNode::Nic,
            Some(toml::Value::Integer(n)) if (0..=1023).contains(n) => NumaNode::Node(*n as usize),
            Some(other) => {
                return err(
                    "cpu.numa_node",
                    format!("expected \"nic\" or a node number, found {other}"),
                )
            }
        };
        let governor = match self.governor {
            None => None,
            Some(g) if GOVERNORS.contains(&g.as_str()) => Some(g),
            Some(g) => {
                return err(
                    "cpu.governor",
                    format!("'{g}' is not a cpufreq governor ({})", GOVERNORS.join(", ")),
                )
            }
        };
        Ok(CpuProfile {
            workers,
            failover,
            irq,
            housekeeping,
            numa_node,
            governor,
        })
    }
}

impl raw::Nic {
    fn validate(self) -> Result<NicProfile, ProfileError> {
        let count = |key: &str, v: Option<i64>, min: i64| -> Result<Option<u32>, ProfileError> {
            match v {
                None => Ok(None),
                Some(n) if n >= min && n <= i64::from(u32::MAX) => Ok(Some(n as u32)),
                Some(n) => err(key, format!("{n} is out of range ({min}..)")),
            }
        };
        Ok(NicProfile {
            rx_ring: count("nic.rx_ring", self.rx_ring, 1)?,
            tx_ring: count("nic.tx_ring", self.tx_ring, 1)?,
            coalesce_rx_usecs: count("nic.coalesce_rx_usecs", self.coalesce_rx_usecs, 0)?,
            rps: self.rps,
            xps: self.xps,
        })
    }
}

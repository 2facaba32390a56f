//! Configuration: TOML as written by the operator ([`raw`]) becomes a validated [`Config`].
//! The rest of the program never sees raw configuration. Every error names the key.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use crate::proto::failover;
use crate::proto::lease::ClientKey;
use crate::proto::subnet::{prefix_mask, Pool, Reservation, Subnet, Subnets};
use crate::proto::wire::options::{self, code};

/// The configuration `ringlease demo` runs with: one relayed subnet on loopback.
pub const DEMO_CONFIG: &str = include_str!("../examples/demo.toml");

/// Which datagram backend the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendSetting {
    Auto,
    IoUring,
    Fallback,
}

/// When a reply that grants or extends a lease may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After its lease log record is on disk: one data sync per receive batch (group commit).
    Sync,
    /// At once; the log is synced every [`ASYNC_SYNC_INTERVAL_MS`] milliseconds, so a crash may
    /// lose the leases granted in that window.
    Async,
}

/// How often the lease log is synced with `durability = "async"`.
pub const ASYNC_SYNC_INTERVAL_MS: u64 = 1000;

/// Validated `[server]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddrV4>,
    pub server_id: Ipv4Addr,
    /// One worker per entry; `Some(core)` pins it. With a tuning profile, replaced at start by
    /// the profile's worker cores.
    pub worker_cores: Vec<Option<usize>>,
    /// A tuning profile (`tuning/*.toml`) that places the workers, and the interface whose NUMA
    /// node it is relative to.
    pub tuning_profile: Option<(PathBuf, Option<String>)>,
    pub backend: BackendSetting,
    pub lease_dir: PathBuf,
    pub durability: Durability,
    /// Size of each lease log segment file.
    pub log_segment_bytes: u64,
    /// Compact the lease log once sealed segments take this many bytes.
    pub log_compact_bytes: u64,
    pub offer_hold_s: u32,
    pub decline_hold_s: u32,
    pub recv_buffer_bytes: Option<usize>,
    pub send_buffer_bytes: Option<usize>,
}

/// Validated `[control]` and `[metrics]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationsConfig {
    /// Unix socket of `ringlease ctl` (root-only by file mode).
    pub control_socket: PathBuf,
    /// Where the Prometheus endpoint listens; None turns it off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub subnets: Subnets,
    pub operations: OperationsConfig,
    /// The failover relationship, if this server is one of a pair.
    pub failover: Option<FailoverConfig>,
}

/// Validated `[failover]` settings: the endpoint's protocol configuration plus where it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverConfig {
    /// Name, role, dialect, MCLT, timers and limits as the protocol core takes them.
    pub endpoint: failover::Config,
    /// Where we listen for the partner; the primary also binds its outgoing connection to
    /// this address (ISC matches an inbound connection by source address).
    pub local: SocketAddrV4,
    /// The partner; the primary connects to it, the secondary only listens.
    pub peer: SocketAddrV4,
    /// RFC 3074 buckets the primary serves (255: hot standby, 128: even load balance).
    pub split: u8,
    /// Percent of each pool's free addresses the secondary should hold (None: the dialect's
    /// default, `Dialect::default_backup_share`, else the default for `split`).
    pub backup_share_percent: Option<u8>,
    /// CPU for the failover thread.
    pub core: Option<usize>,
    /// What a graceful stop tells the partner: PAUSED (back soon) or SHUTDOWN (it goes
    /// PARTNER-DOWN at once).
    pub on_stop: failover::FailoverState,
}

/// The default failover port (IANA "dhcp-failover").
pub const FAILOVER_PORT: u16 = 647;

/// Default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ringlease/control.sock";

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

pub(crate) fn err<T>(key: impl Into<String>, problem: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        key: key.into(),
        problem: problem.into(),
    })
}

/// Socket receive buffer per worker unless configured: room for bursts of thousands of
/// requests (each loopback or NIC datagram costs 1–4 KiB of buffer).
pub const DEFAULT_RECV_BUFFER_BYTES: usize = 8 << 20;

/// Upper bound on workers: one per core of the biggest box we tune for, with headroom.
pub const MAX_WORKERS: usize = 256;

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read_file(path)?)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        parse_toml::<raw::Config>(text)?.validate()
    }
}

/// A configuration file's text; the error names the file.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).or_else(|e| {
        err(
            path.display().to_string(),
            format!("cannot read the file: {e}"),
        )
    })
}

/// TOML into the operator-facing serde types; a syntax error or unknown key names its line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).or_else(|e| {
        let key = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                format!("line {line}")
            })
            .unwrap_or_else(|| "file".into());
        err(key, e.message().to_string())
    })
}

/// The operator's words, as serde reads them.
mod raw {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub server: Server,
        #[serde(default)]
        pub subnet: Vec<Subnet>,
        pub control: Option<Control>,
        pub metrics: Option<Metrics>,
        pub failover: Option<Failover>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Failover {
        pub name: String,
        pub role: String,
        pub local: String,
        pub peer: String,
        pub dialect: Option<String>,
        pub mclt: Option<u32>,
        pub split: Option<u8>,
        pub backup_share: Option<u8>,
        pub secret_file: Option<String>,
        pub max_unacked_bndupd: Option<u32>,
        pub max_batch: Option<usize>,
        pub send_timer: Option<u32>,
        pub receive_timer: Option<u32>,
        pub startup_timer: Option<u32>,
        pub startup_wait: Option<bool>,
        pub on_stop: Option<String>,
        pub connect_retry: Option<u32>,
        pub sync_timer: Option<u32>,
        pub safe_period: Option<u32>,
        pub max_clock_skew: Option<u32>,
        pub core: Option<usize>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Control {
        pub socket: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metrics {
        /// "off" or an address:port.
        pub listen: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub listen: Vec<String>,
        pub server_id: String,
        pub workers: Option<usize>,
        pub cores: Option<Vec<usize>>,
        pub tuning_profile: Option<String>,
        pub tuning_iface: Option<String>,
        pub backend: Option<String>,
        pub lease_dir: Option<String>,
        pub durability: Option<String>,
        pub log_segment_bytes: Option<u64>,
        pub log_compact_bytes: Option<u64>,
        pub offer_hold: Option<u32>,
        pub decline_hold: Option<u32>,
        pub recv_buffer_bytes: Option<usize>,
        pub send_buffer_bytes: Option<usize>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Subnet {
        pub prefix: String,
        #[serde(default)]
        pub pools: Vec<String>,
        pub lease_time: Option<u32>,
        pub min_lease_time: Option<u32>,
        pub max_lease_time: Option<u32>,
        pub renewal_time: Option<u32>,
        pub rebinding_time: Option<u32>,
        #[serde(default)]
        pub routers: Vec<String>,
        #[serde(default)]
        pub dns: Vec<String>,
        #[serde(default)]
        pub ntp: Vec<String>,
        pub domain_name: Option<String>,
        pub broadcast: Option<String>,
        /// Any other option, by name or code: `options = { "tftp-server-name" = "boot", "150" = "0x0a000001" }`.
        #[serde(default)]
        pub options: BTreeMap<String, String>,
        #[serde(default)]
        pub reservation: Vec<Reservation>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Reservation {
        pub hw: Option<String>,
        pub client_id: Option<String>,
        pub ip: String,
    }
}

fn parse_ip(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim()
        .parse()
        .or_else(|_| err(key, format!("'{s}' is not an IPv4 address")))
}

fn parse_prefix(key: &str, s: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let Some((ip, len)) = s.split_once('/') else {
        return err(key, format!("'{s}' is not a prefix like 10.0.0.0/16"));
    };
    let ip = parse_ip(key, ip)?;
    let len: u8 = match len.trim().parse() {
        Ok(n) if n <= 32 => n,
        _ => return err(key, format!("'{len}' is not a prefix length 0..=32")),
    };
    if u32::from(ip) & !prefix_mask(len) != 0 {
        return err(
            key,
            format!("{s} has host bits set (did you mean {}/{len}?)", {
                Ipv4Addr::from(u32::from(ip) & prefix_mask(len))
            }),
        );
    }
    Ok((ip, len))
}

/// A pool as "first-last" or as a prefix "a.b.c.d/n" (all of it).
fn parse_pool(key: &str, s: &str) -> Result<Pool, ConfigError> {
    if let Some((first, last)) = s.split_once('-') {
        let pool = Pool {
            first: parse_ip(key, first)?,
            last: parse_ip(key, last)?,
        };
        if pool.first > pool.last {
            return err(key, format!("'{s}': the first address is after the last"));
        }
        return Ok(pool);
    }
    let (network, len) = parse_prefix(key, s)?;
    Ok(Pool {
        first: network,
        last: Ipv4Addr::from(u32::from(network) | !prefix_mask(len)),
    })
}

/// "02:00:00:00:00:01" (or with '-') → bytes; at most 16 (the size of chaddr).
fn parse_hex_bytes(key: &str, s: &str, max: usize) -> Result<Vec<u8>, ConfigError> {
    let bytes: Result<Vec<u8>, _> = s
        .split([':', '-'])
        .map(|part| u8::from_str_radix(part, 16))
        .collect();
    match bytes {
        Ok(b) if !b.is_empty() && b.len() <= max => Ok(b),
        _ => err(
            key,
            format!("'{s}' is not 1..={max} hex bytes like 02:00:00:00:00:01"),
        ),
    }
}

fn option_def(key: &str, name: &str) -> Result<u8, ConfigError> {
    if let Ok(code) = name.parse::<u8>() {
        return match code {
            0 | 255 => err(key, "options 0 (pad) and 255 (end) cannot be configured"),
            _ => Ok(code),
        };
    }
    options::by_name(name)
        .map(|d| d.code)
        .ok_or_else(|| ConfigError {
            key: key.into(),
            problem: format!("unknown option name '{name}' (use its code number instead)"),
        })
}

/// Options the server writes itself for every reply; configuring them would only conflict.
const SERVER_OWNED_OPTIONS: [u8; 8] = [
    code::REQUESTED_IP,
    code::LEASE_TIME,
    code::OVERLOAD,
    code::MESSAGE_TYPE,
    code::SERVER_ID,
    code::RENEWAL_TIME,
    code::REBINDING_TIME,
    code::RELAY_AGENT_INFO,
];

impl raw::Config {
    fn validate(self) -> Result<Config, ConfigError> {
        let server = self.server.validate()?;
        if self.subnet.is_empty() {
            return err("subnet", "at least one [[subnet]] is needed");
        }
        let mut subnets = Vec::with_capacity(self.subnet.len());
        for (id, raw) in self.subnet.into_iter().enumerate() {
            let subnet = raw.validate(id)?;
            let key = format!("subnet[{id}].prefix");
            if let Some(other) = subnets.iter().find(|s: &&Subnet| {
                s.network == subnet.network && s.prefix_len == subnet.prefix_len
            }) {
                return err(key, format!("same prefix as subnet[{}]", other.id));
            }
            for pool in &subnet.pools {
                for other in &subnets {
                    if other
                        .pools
                        .iter()
                        .any(|p| p.first <= pool.last && pool.first <= p.last)
                    {
                        return err(
                            format!("subnet[{id}].pools"),
                            format!("overlaps a pool of subnet[{}]", other.id),
                        );
                    }
                }
            }
            subnets.push(subnet);
        }
        let control_socket = PathBuf::from(
            self.control
                .and_then(|c| c.socket)
                .unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into()),
        );
        let metrics_listen = match self.metrics.and_then(|m| m.listen) {
            None => None,
            Some(text) if text == "off" => None,
            Some(text) => Some(text.parse().or_else(|_| {
                err(
                    "metrics.listen",
                    format!("'{text}' is not an address:port like 127.0.0.1:9167, or \"off\""),
                )
            })?),
        };
        let failover = self.failover.map(raw::Failover::validate).transpose()?;
        Ok(Config {
            server,
            subnets: Subnets::new(subnets),
            operations: OperationsConfig {
                control_socket,
                metrics_listen,
            },
            failover,
        })
    }
}

impl raw::Server {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        if self.listen.is_empty() {
            return err("server.listen", "at least one address:port is needed");
        }
        let mut listen = Vec::new();
        for (i, s) in self.listen.iter().enumerate() {
            let key = format!("server.listen[{i}]");
            let addr: SocketAddrV4 = s.parse().or_else(|_| {
                err(
                    &key,
                    format!("'{s}' is not an IPv4 address:port like 0.0.0.0:67"),
                )
            })?;
            if listen.contains(&addr) {
                return err(key, format!("{addr} is listed twice"));
            }
            listen.push(addr);
        }
        let server_id = parse_ip("server.server_id", &self.server_id)?;
        if server_id.is_unspecified() || server_id.is_broadcast() || server_id.is_multicast() {
            return err(
                "server.server_id",
                "must be one of this server's unicast addresses",
            );
        }
        let tuning_profile = match (self.tuning_profile, self.tuning_iface) {
            (Some(_), _) if self.workers.is_some() || self.cores.is_some() => {
                return err(
                    "server.tuning_profile",
                    "the profile places the workers: drop workers/cores, or the profile",
                )
            }
            (Some(path), iface) => Some((PathBuf::from(path), iface)),
            (None, Some(_)) => {
                return err(
                    "server.tuning_iface",
                    "only means something with tuning_profile",
                )
            }
            (None, None) => None,
        };
        let worker_cores = match (self.workers, self.cores) {
            (Some(_), Some(_)) => {
                return err("server.workers", "give either workers or cores, not both")
            }
            (_, Some(cores)) => {
                if cores.is_empty() || cores.len() > MAX_WORKERS {
                    return err("server.cores", format!("needs 1..={MAX_WORKERS} cores"));
                }
                let mut seen = cores.clone();
                seen.sort_unstable();
                seen.dedup();
                if seen.len() != cores.len() {
                    return err("server.cores", "a core is listed twice");
                }
                cores.into_iter().map(Some).collect()
            }
            (workers, None) => match workers.unwrap_or(1) {
                n @ 1..=MAX_WORKERS => vec![None; n],
                n => return err("server.workers", format!("{n} is not in 1..={MAX_WORKERS}")),
            },
        };
        let backend = match self.backend.as_deref().unwrap_or("auto") {
            "auto" => BackendSetting::Auto,
            "io_uring" => BackendSetting::IoUring,
            "fallback" => BackendSetting::Fallback,
            other => {
                return err(
                    "server.backend",
                    format!("'{other}' is not one of auto, io_uring, fallback"),
                )
            }
        };
        let durability = match self.durability.as_deref().unwrap_or("sync") {
            "sync" => Durability::Sync,
            "async" => Durability::Async,
            other => {
                return err(
                    "server.durability",
                    format!("'{other}' is not one of sync, async"),
                )
            }
        };
        let log_segment_bytes = self.log_segment_bytes.unwrap_or(64 << 20);
        if !(1 << 16..=1 << 34).contains(&log_segment_bytes) || log_segment_bytes % 8 != 0 {
            return err(
                "server.log_segment_bytes",
                "must be a multiple of 8 between 64 KiB and 16 GiB",
            );
        }
        let log_compact_bytes = self.log_compact_bytes.unwrap_or(1 << 30);
        if log_compact_bytes < log_segment_bytes {
            return err(
                "server.log_compact_bytes",
                "must be at least log_segment_bytes",
            );
        }
        let offer_hold_s = self.offer_hold.unwrap_or(30);
        if !(1..=3600).contains(&offer_hold_s) {
            return err("server.offer_hold", "must be 1..=3600 seconds");
        }
        Ok(ServerConfig {
            listen,
            server_id,
            worker_cores,
            tuning_profile,
            backend,
            lease_dir: PathBuf::from(
                self.lease_dir
                    .unwrap_or_else(|| "/var/lib/ringlease".into()),
            ),
            durability,
            log_segment_bytes,
            log_compact_bytes,
            offer_hold_s,
            decline_hold_s: self.decline_hold.unwrap_or(86_400),
            recv_buffer_bytes: Some(self.recv_buffer_bytes.unwrap_or(DEFAULT_RECV_BUFFER_BYTES)),
            send_buffer_bytes: self.send_buffer_bytes,
        })
    }
}

/// "a.b.c.d" or "a.b.c.d:port" (default port 647).
fn parse_failover_addr(key: &str, s: &str) -> Result<SocketAddrV4, ConfigError> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.parse::<Ipv4Addr>() {
        Ok(ip) => Ok(SocketAddrV4::new(ip, FAILOVER_PORT)),
        Err(_) => err(
            key,
            format!("'{s}' is not an IPv4 address[:port] like 198.18.1.1:647"),
        ),
    }
}

impl raw::Failover {
    fn validate(self) -> Result<FailoverConfig, ConfigError> {
        let role = match self.role.as_str() {
            "primary" => failover::Role::Primary,
            "secondary" => failover::Role::Secondary,
            other => {
                return err(
                    "failover.role",
                    format!("'{other}' is not one of primary, secondary"),
                )
            }
        };
        let dialect = match self.dialect.as_deref().unwrap_or("ringlease") {
            "ringlease" => failover::Dialect::Ringlease,
            "isc" => failover::Dialect::Isc,
            "microsoft" => failover::Dialect::Microsoft,
            other => {
                return err(
                    "failover.dialect",
                    format!("'{other}' is not one of ringlease, isc, microsoft"),
                )
            }
        };
        let local = parse_failover_addr("failover.local", &self.local)?;
        let peer = parse_failover_addr("failover.peer", &self.peer)?;
        if local.ip().is_unspecified() || local == peer {
            return err(
                "failover.local",
                "must be this server's own address, not 0.0.0.0 and not the peer's",
            );
        }
        if self.backup_share.is_some_and(|p| p > 100) {
            return err("failover.backup_share", "is a percentage, 0..=100");
        }
        let secret = match &self.secret_file {
            None => None,
            Some(path) => {
                let text = std::fs::read(path)
                    .or_else(|e| err("failover.secret_file", format!("cannot read {path}: {e}")))?;
                let mut secret = text;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                if secret.is_empty() {
                    return err("failover.secret_file", format!("{path} is empty"));
                }
                Some(secret)
            }
        };
        let mut endpoint = failover::Config::new(self.name, role);
        endpoint.dialect = dialect;
        if dialect == failover::Dialect::Microsoft {
            // Windows uses its own configuration, never the partner's values (MS-DHCPF §3.3.5.1).
            endpoint.mclt_check = failover::MclCheck::RequireEqual;
        }
        let set = |value: Option<u32>, default: u32| value.unwrap_or(default);
        endpoint.mclt_s = set(self.mclt, endpoint.mclt_s);
        endpoint.max_unacked_bndupd = set(self.max_unacked_bndupd, endpoint.max_unacked_bndupd);
        endpoint.max_batch = self.max_batch.unwrap_or(endpoint.max_batch);
        endpoint.tsend_s = set(self.send_timer, endpoint.tsend_s);
        endpoint.treceive_s = set(self.receive_timer, endpoint.treceive_s);
        endpoint.startup_s = set(self.startup_timer, endpoint.startup_s);
        endpoint.startup_wait = self.startup_wait.unwrap_or(endpoint.startup_wait);
        endpoint.connect_retry_s = set(self.connect_retry, endpoint.connect_retry_s);
        endpoint.sync_s = set(self.sync_timer, endpoint.sync_s);
        endpoint.safe_period_s = self.safe_period;
        endpoint.max_clock_skew_s = set(self.max_clock_skew, endpoint.max_clock_skew_s);
        endpoint.secret = secret.map(failover::SharedSecret::new);
        let split = self.split.unwrap_or(128);
        endpoint.hba = failover::loadbalance::wire_hba(dialect, split);
        endpoint
            .validate()
            .or_else(|e| err("failover", e.to_string()))?;
        let on_stop = match self.on_stop.as_deref().unwrap_or("paused") {
            "paused" => failover::FailoverState::Paused,
            "shutdown" => failover::FailoverState::Shutdown,
            other => {
                return err(
                    "failover.on_stop",
                    format!("{other:?}: expected \"paused\" or \"shutdown\""),
                )
            }
        };
        Ok(FailoverConfig {
            endpoint,
            local,
            peer,
            split,
            backup_share_percent: self.backup_share,
            core: self.core,
            on_stop,
        })
    }
}

impl raw::Subnet {
    fn validate(self, id: usize) -> Result<Subnet, ConfigError> {
        let k = |field: &str| format!("subnet[{id}].{field}");
        let (network, prefix_len) = parse_prefix(&k("prefix"), &self.prefix)?;
        let inside = |ip: Ipv4Addr| u32::from(ip) & prefix_mask(prefix_len) == u32::from(network);

        let mut pools: Vec<Pool> = Vec::new();
        for (i, s) in self.pools.iter().enumerate() {
            let key = k(&format!("pools[{i}]"));
            let pool = parse_pool(&key, s)?;
            if !inside(pool.first) || !inside(pool.last) {
                return err(key, format!("'{s}' is not inside {}", self.prefix));
            }
            if let Some(j) = pools
                .iter()
                .position(|p| p.first <= pool.last && pool.first <= p.last)
            {
                return err(key, format!("overlaps pools[{j}]"));
            }
            pools.push(pool);
        }

        let lease_time_s = self.lease_time.unwrap_or(3600);
        let min_lease_time_s = self.min_lease_time.unwrap_or(lease_time_s.min(60));
        let max_lease_time_s = self.max_lease_time.unwrap_or(lease_time_s.max(86_400));
        if lease_time_s < 10 {
            return err(k("lease_time"), "must be at least 10 seconds");
        }
        if !(min_lease_time_s..=max_lease_time_s).contains(&lease_time_s) {
            return err(
                k("lease_time"),
                "must lie between min_lease_time and max_lease_time",
            );
        }
        // RFC 2131 §4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease time.
        let t1_s = self.renewal_time.unwrap_or(lease_time_s / 2);
        let t2_s = self
            .rebinding_time
            .unwrap_or((u64::from(lease_time_s) * 7 / 8) as u32);
        if !(t1_s <= t2_s && t2_s < lease_time_s) {
            return err(
                k("rebinding_time"),
                "needs renewal_time <= rebinding_time < lease_time",
            );
        }

        let mut opts: Vec<(u8, Box<[u8]>)> = vec![(
            code::SUBNET_MASK,
            prefix_mask(prefix_len).to_be_bytes().into(),
        )];
        let ip_list = |field: &str, list: &[String]| -> Result<Box<[u8]>, ConfigError> {
            let mut bytes = Vec::new();
            for (i, s) in list.iter().enumerate() {
                bytes.extend(parse_ip(&k(&format!("{field}[{i}]")), s)?.octets());
            }
            Ok(bytes.into())
        };
        if !self.routers.is_empty() {
            opts.push((code::ROUTERS, ip_list("routers", &self.routers)?));
        }
        if !self.dns.is_empty() {
            opts.push((code::DNS_SERVERS, ip_list("dns", &self.dns)?));
        }
        if let Some(name) = &self.domain_name {
            if name.is_empty() || name.len() > 255 {
                return err(k("domain_name"), "must be 1..=255 bytes");
            }
            opts.push((code::DOMAIN_NAME, name.as_bytes().into()));
        }
        let broadcast = match &self.broadcast {
            Some(s) => parse_ip(&k("broadcast"), s)?,
            None => Ipv4Addr::from(u32::from(network) | !prefix_mask(prefix_len)),
        };
        opts.push((code::BROADCAST_ADDRESS, broadcast.octets().into()));
        if !self.ntp.is_empty() {
            opts.push((code::NTP_SERVERS, ip_list("ntp", &self.ntp)?));
        }
        for (name, value) in &self.options {
            let key = k(&format!("options.{name}"));
            let code = option_def(&key, name)?;
            if SERVER_OWNED_OPTIONS.contains(&code) {
                return err(key, "this option is set by the server itself");
            }
            let bytes = match options::def(code) {
                Some(def) => def.shape.encode_str(value),
                None => options::Shape::Bytes.encode_str(value),
            }
            .or_else(|problem| err(&key, problem))?;
            if bytes.len() > 255 * 4 {
                return err(key, "longer than 1020 bytes");
            }
            match opts.iter_mut().find(|(c, _)| *c == code) {
                Some(slot) => slot.1 = bytes.into(),
                None => opts.push((code, bytes.into())),
            }
        }

        let mut reservations: Vec<Reservation> = Vec::new();
        for (i, r) in self.reservation.iter().enumerate() {
            let key = |f: &str| k(&format!("reservation[{i}].{f}"));
            let client = match (&r.hw, &r.client_id) {
                (Some(hw), None) => {
                    // Ethernet (htype 1) is the only hardware we expect to reserve by.
                    ClientKey::from_hardware(1, &parse_hex_bytes(&key("hw"), hw, 16)?)
                }
                (None, Some(id)) => {
                    ClientKey::from_client_id(&parse_hex_bytes(&key("client_id"), id, 255)?)
                }
                _ => return err(key("hw"), "give exactly one of hw or client_id"),
            };
            let ip = parse_ip(&key("ip"), &r.ip)?;
            if !inside(ip) {
                return err(key("ip"), format!("{ip} is not inside {}", self.prefix));
            }
            if let Some(j) = reservations
                .iter()
                .position(|o| o.ip == ip || o.client == client)
            {
                return err(key("ip"), format!("conflicts with reservation[{j}]"));
            }
            reservations.push(Reservation { client, ip });
        }

        Ok(Subnet {
            id,
            network,
            prefix_len,
            pools,
            reservations,
            lease_time_s,
            min_lease_time_s,
            max_lease_time_s,
            t1_s,
            t2_s,
            options: opts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the shipped example: every key it documents is one we read.
    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../examples/server.toml");
        let config = Config::from_toml(text).unwrap();
        let failover = config
            .failover
            .expect("the example has a [failover] section");
        assert!(!failover.endpoint.startup_wait);
        let waiting = text.replace("startup_wait = false", "startup_wait = true");
        let failover = Config::from_toml(&waiting).unwrap().failover.unwrap();
        assert!(failover.endpoint.startup_wait);
    }

    const ISSUE_EXAMPLE: &str = r#"
[server]
listen = ["127.0.0.1:67"]
server_id = "127.0.0.1"
workers = 1
lease_dir = "/var/lib/ringlease"

[[subnet]]
prefix = "10.10.0.0/16"
pools = ["10.10.1.0-10.10.255.254"]
lease_time = 3600
routers = ["10.10.0.1"]
dns = ["10.10.0.53"]
  [[subnet.reservation]]
  hw = "02:00:00:00:00:01"
  ip = "10.10.0.10"
"#;

    #[test]
    fn the_documented_example_is_valid() {
        let config = Config::from_toml(ISSUE_EXAMPLE).unwrap();
        assert_eq!(config.server.worker_cores, vec![None]);
        let subnet = &config.subnets.all()[0];
        assert_eq!(subnet.pools.len(), 1);
        assert_eq!(subnet.t1_s, 1800);
        assert_eq!(subnet.t2_s, 3150);
        assert_eq!(
            subnet.reservation_for(ClientKey::from_hardware(1, &[2, 0, 0, 0, 0, 1]).as_bytes()),
            Some(Ipv4Addr::new(10, 10, 0, 10))
        );
    }

    #[test]
    fn shipped_examples_are_valid() {
        Config::from_toml(DEMO_CONFIG).unwrap();
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }

    fn error_key(text: &str) -> String {
        Config::from_toml(text).unwrap_err().key
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |from: &str, to: &str| {
            assert!(ISSUE_EXAMPLE.contains(from), "{from}");
            ISSUE_EXAMPLE.replace(from, to)
        };
        assert_eq!(
            error_key(&bad("10.10.1.0-10.10.255.254", "10.11.1.0-10.11.1.9")),
            "subnet[0].pools[0]"
        );
        assert_eq!(
            error_key(&bad("\"127.0.0.1:67\"", "\"nope\"")),
            "server.listen[0]"
        );
        assert_eq!(
            error_key(&bad("10.10.0.0/16", "10.10.0.1/16")),
            "subnet[0].prefix"
        );
        assert_eq!(
            error_key(&bad("02:00:00:00:00:01", "zz")),
            "subnet[0].reservation[0].hw"
        );
        assert_eq!(
            error_key(&bad("10.10.0.10", "10.99.0.10")),
            "subnet[0].reservation[0].ip"
        );
        assert_eq!(
            error_key(&bad("workers = 1", "workers = 0")),
            "server.workers"
        );
        assert_eq!(
            error_key(&bad(
                "lease_time = 3600",
                "lease_time = 3600\nrenewal_time = 4000"
            )),
            "subnet[0].rebinding_time"
        );
        assert_eq!(
            error_key(&bad(
                "dns = [\"10.10.0.53\"]",
                "options = { \"51\" = \"7\" }"
            )),
            "subnet[0].options.51"
        );
        // Unknown keys are refused by serde, with the line they are on.
        assert!(error_key(&bad("workers = 1", "wrokers = 1")).starts_with("line "));
    }

    #[test]
    fn extra_options_by_name_and_code() {
        let text = ISSUE_EXAMPLE.replace(
            "dns = [\"10.10.0.53\"]",
            "dns = [\"10.10.0.53\"]\noptions = { \"150\" = \"0x0a000001\", \"domain-name\" = \"isp.example\" }",
        );
        let config = Config::from_toml(&text).unwrap();
        let opts = &config.subnets.all()[0].options;
        assert!(opts.contains(&(150, vec![10, 0, 0, 1].into())));
        assert!(opts.contains(&(code::DOMAIN_NAME, b"isp.example".to_vec().into())));
    }

    const FAILOVER_EXAMPLE: &str = r#"
[failover]
name = "pair-a"
role = "primary"
local = "198.18.1.1:647"
peer = "198.18.1.2"
dialect = "ringlease"
mclt = 3600
split = 128
"#;

    #[test]
    fn the_failover_example_is_valid() {
        let text = format!("{ISSUE_EXAMPLE}{FAILOVER_EXAMPLE}");
        let f = Config::from_toml(&text).unwrap().failover.unwrap();
        assert_eq!(f.endpoint.name, "pair-a");
        assert_eq!(f.endpoint.role, failover::Role::Primary);
        assert_eq!(f.endpoint.mclt_s, 3600);
        assert_eq!(f.peer, "198.18.1.2:647".parse().unwrap(), "default port");
        assert_eq!(f.split, 128);
        assert_eq!(f.endpoint.secret, None);
        assert!(Config::from_toml(ISSUE_EXAMPLE).unwrap().failover.is_none());
    }

    #[test]
    fn failover_errors_name_the_key() {
        let with = |from: &str, to: &str| {
            assert!(FAILOVER_EXAMPLE.contains(from), "{from}");
            error_key(&format!(
                "{ISSUE_EXAMPLE}{}",
                FAILOVER_EXAMPLE.replace(from, to)
            ))
        };
        assert_eq!(with("\"primary\"", "\"master\""), "failover.role");
        assert_eq!(with("\"ringlease\"", "\"cisco\""), "failover.dialect");
        assert_eq!(with("198.18.1.2", "peer.example"), "failover.peer");
        assert_eq!(with("198.18.1.1:647", "198.18.1.2:647"), "failover.local");
        assert_eq!(with("split = 128", "split = 300"), "line 25");
        assert_eq!(with("mclt = 3600", "max_batch = 17"), "failover");
        assert_eq!(
            with("split = 128", "secret_file = \"/nonexistent/key\""),
            "failover.secret_file"
        );
        assert_eq!(with("split = 128", "colour = 1"), "line 24");
    }

    #[test]
    fn the_secret_file_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "s3cret\n").unwrap();
        let text = format!(
            "{ISSUE_EXAMPLE}{FAILOVER_EXAMPLE}secret_file = {:?}\n",
            key.display().to_string()
        );
        let f = Config::from_toml(&text).unwrap().failover.unwrap();
        assert_eq!(
            f.endpoint.secret,
            Some(failover::SharedSecret::new(b"s3cret".to_vec()))
        );
        std::fs::write(&key, "\n").unwrap();
        assert_eq!(error_key(&text), "failover.secret_file");
    }
}

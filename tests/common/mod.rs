//! Shared harness for the integration tests that run real, third-party DHCP
//! software (Kea's `perfdhcp`, ISC `dhclient`, busybox `udhcpc`) against
//! `ringlease` inside network namespaces created by the test itself.
//!
//! Safety rules this module enforces:
//! * every namespace gets a unique name (`rl<tag>-<pid>-<n>`) and is deleted in
//!   `Drop`, after the processes still inside it (all started by the test,
//!   since nothing else lives in a namespace we just created) are killed by PID;
//! * veth pairs are created directly inside the two namespaces, nothing is
//!   ever created in, or sent to, the root namespace;
//! * every process is wrapped in [`Child`], which signals it by PID on `Drop`;
//! * every wait is bounded.
//!
//! These tests need root and the tools listed in `.ci/run`; a missing tool is
//! a test failure naming the Debian package, never a silent skip.
//!
//! Environment knobs:
//! * `RINGLEASE_NETNS_SERVER=kea` runs the same tests against `kea-dhcp4`
//!   instead of ringlease (used to prove the harness, and to tell harness
//!   bugs from server bugs);
//! * `RINGLEASE_TEST_KEEP=1` keeps the temp dirs (configs, logs, leases).
#![allow(dead_code)]

pub mod failover;
pub mod relay;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server gets to print its `ready` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server gets to exit after SIGTERM before it is SIGKILLed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

fn unique(tag: &str) -> String {
    format!(
        "rl{}-{}-{}",
        tag,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Tests in one binary take this lock so that load tests do not compete for
/// the (few) CPUs and make each other drop packets.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

/// Fails the test unless we run with effective uid 0.
pub fn require_root() {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    assert_eq!(
        euid,
        Some(0),
        "these tests create network namespaces and veth pairs and must run as root \
         (effective uid 0); run them as root, e.g. through .ci/run"
    );
}

/// Returns the absolute path of `bin`, or fails the test naming the Debian
/// package that provides it. `sbin` directories are searched even when they
/// are not on `PATH`.
pub fn require_tool(bin: &str, debian_package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        let p = d.join(bin);
        if let Ok(meta) = fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return p;
            }
        }
    }
    panic!(
        "required tool `{bin}` not found (searched PATH and the sbin directories); \
         install the Debian package `{debian_package}`: \
         apt-get install -y --no-install-recommends {debian_package}"
    );
}

/// Root + iproute2: what every namespace test needs.
pub fn preflight() -> PathBuf {
    require_root();
    require_tool("ip", "iproute2")
}

// ---------------------------------------------------------------------------
// Temp dirs and bounded commands
// ---------------------------------------------------------------------------

/// A directory under the system temp dir, removed on `Drop` unless
/// `RINGLEASE_TEST_KEEP` is set.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ringlease-test-{}", unique(tag)));
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Writes `contents` to `name` in the dir; `exec` makes it executable.
    pub fn write(&self, name: &str, contents: &str, exec: bool) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        if exec {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("RINGLEASE_TEST_KEEP").is_some() {
            eprintln!("keeping {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Reads a file that may not exist (yet) as lossy UTF-8.
pub fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Runs `cmd` to completion, killing it after `limit`. Output goes through
/// files (not pipes) so a daemonizing grandchild cannot keep us waiting.
/// Never panics on a non-zero exit: check `status` yourself.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let scratch = TempDir::new("run");
    let (out_p, err_p) = (scratch.join("stdout"), scratch.join("stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_p).expect("create stdout file"))
        .stderr(File::create(&err_p).expect("create stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; stdout:\n{}\nstderr:\n{}",
                read_lossy(&out_p),
                read_lossy(&err_p)
            );
        }
        sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(&out_p).unwrap_or_default(),
        stderr: fs::read(&err_p).unwrap_or_default(),
    }
}

/// Like [`run_bounded`] but fails the test on a non-zero exit.
pub fn run_ok(cmd: Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let out = run_bounded(cmd, limit);
    assert!(
        out.status.success(),
        "{desc} failed with {}; stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `cond` every 50 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, cond: impl FnMut() -> Option<T>) -> Option<T> {
    poll_until(limit, Duration::from_millis(50), cond)
}

/// Like [`wait_for`], with a chosen polling interval.
pub fn poll_until<T>(
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(every);
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Sends `sig` (e.g. "TERM", "USR1") to `pid`. Returns false if `kill` failed
/// (typically: the process is gone).
pub fn send_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A process we started; on `Drop` it gets SIGTERM, then SIGKILL, by PID.
/// Its stdout and stderr both go to `log`.
pub struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Child {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Child {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup log fd"))
            .stderr(f);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
        Child {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// Exit status if the process has exited (it is reaped at most once, so
    /// its PID cannot be reused while we hold it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn signal(&mut self, sig: &str) {
        if self.try_status().is_none() {
            send_signal(self.pid(), sig);
        }
    }

    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_for(limit, || self.try_status())
    }

    /// Sends `sig`, waits up to `grace`, then SIGKILLs. Returns the exit
    /// status and whether it exited within the grace period.
    pub fn stop(&mut self, sig: &str, grace: Duration) -> (ExitStatus, bool) {
        self.signal(sig);
        if let Some(s) = self.wait_timeout(grace) {
            return (s, true);
        }
        let _ = self.child.kill();
        let s = self.child.wait().expect("wait after SIGKILL");
        self.status = Some(s);
        (s, false)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let (_, in_time) = self.stop("TERM", Duration::from_secs(3));
            if !in_time {
                eprintln!("{} (pid {}) needed SIGKILL", self.name, self.pid());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

/// A network namespace owned by the test; deleted on `Drop`.
pub struct Netns {
    name: String,
    ip: PathBuf,
}

impl Netns {
    /// Creates `rl<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let ip = preflight();
        let name = unique(tag);
        let mut c = Command::new(&ip);
        c.args(["netns", "add", &name]);
        run_ok(c, Duration::from_secs(10));
        let ns = Netns { name, ip };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NS program` (the caller adds arguments).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `ip -n NS args…`, failing the test on error.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut c = Command::new(&self.ip);
        c.arg("-n").arg(&self.name).args(args);
        run_ok(c, Duration::from_secs(10))
    }

    pub fn add_addr(&self, ifname: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", ifname]);
    }

    pub fn link_up(&self, ifname: &str) {
        self.ip(&["link", "set", "dev", ifname, "up"]);
    }

    /// IPv4 addresses (with prefix length) currently on `ifname`.
    pub fn addrs(&self, ifname: &str) -> Vec<(Ipv4Addr, u8)> {
        let out = self.ip(&["-o", "-4", "addr", "show", "dev", ifname]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                it.find(|w| *w == "inet")?;
                let (a, p) = it.next()?.split_once('/')?;
                Some((a.parse().ok()?, p.parse().ok()?))
            })
            .collect()
    }

    /// PIDs of the processes living in this namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new(&self.ip)
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Everything in here was started by this test (the namespace is
        // ours and brand new); leftovers (e.g. a daemonized client) go first,
        // otherwise the namespace would outlive `ip netns del`.
        for pid in self.pids() {
            eprintln!("netns {}: killing leftover pid {pid}", self.name);
            send_signal(pid, "KILL");
        }
        let ok = Command::new(&self.ip)
            .args(["netns", "del", &self.name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

/// Creates a veth pair with one end (`a_if`) in `a` and the other (`b_if`) in
/// `b`, both brought up. Nothing is created in the root namespace. The pair
/// goes away with either namespace.
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    let mut c = Command::new(&a.ip);
    c.args([
        "link", "add", "name", a_if, "netns", &a.name, "type", "veth",
    ])
    .args(["peer", "name", b_if, "netns", &b.name]);
    run_ok(c, Duration::from_secs(10));
    a.link_up(a_if);
    b.link_up(b_if);
}

// ---------------------------------------------------------------------------
// Server configuration
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct SubnetCfg {
    pub prefix: String,
    /// `"first-last"` ranges.
    pub pools: Vec<String>,
    pub lease_time: u32,
    pub routers: Vec<String>,
    pub dns: Vec<String>,
    /// `(hw, ip)`
    pub reservations: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct ServerCfg {
    pub listen: Vec<String>,
    pub server_id: String,
    pub workers: Option<u32>,
    pub cores: Option<Vec<u32>>,
    /// "auto" | "io_uring" | "fallback"
    pub backend: String,
    pub subnets: Vec<SubnetCfg>,
    /// Only used when the tests run against Kea: the interfaces it serves.
    pub kea_interfaces: Vec<String>,
}

fn toml_str_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

impl ServerCfg {
    /// One subnet, one worker, the given backend.
    pub fn simple(listen: &str, server_id: &str, backend: &str, subnet: SubnetCfg) -> ServerCfg {
        ServerCfg {
            listen: vec![listen.to_string()],
            server_id: server_id.to_string(),
            workers: Some(1),
            cores: None,
            backend: backend.to_string(),
            subnets: vec![subnet],
            kea_interfaces: Vec::new(),
        }
    }

    pub fn to_toml(&self, lease_dir: &Path) -> String {
        let mut s = String::new();
        s.push_str("[server]\n");
        writeln!(s, "listen = {}", toml_str_list(&self.listen)).unwrap();
        writeln!(s, "server_id = {:?}", self.server_id).unwrap();
        if let Some(w) = self.workers {
            writeln!(s, "workers = {w}").unwrap();
        }
        if let Some(c) = &self.cores {
            let cs: Vec<String> = c.iter().map(|c| c.to_string()).collect();
            writeln!(s, "cores = [{}]", cs.join(", ")).unwrap();
        }
        writeln!(s, "backend = {:?}", self.backend).unwrap();
        writeln!(s, "lease_dir = {:?}", lease_dir.display().to_string()).unwrap();
        for n in &self.subnets {
            s.push_str("\n[[subnet]]\n");
            writeln!(s, "prefix = {:?}", n.prefix).unwrap();
            writeln!(s, "pools = {}", toml_str_list(&n.pools)).unwrap();
            writeln!(s, "lease_time = {}", n.lease_time).unwrap();
            writeln!(s, "routers = {}", toml_str_list(&n.routers)).unwrap();
            writeln!(s, "dns = {}", toml_str_list(&n.dns)).unwrap();
            for (hw, ip) in &n.reservations {
                s.push_str("  [[subnet.reservation]]\n");
                writeln!(s, "  hw = {hw:?}").unwrap();
                writeln!(s, "  ip = {ip:?}").unwrap();
            }
        }
        // The test's own control socket, beside its lease directory.
        let socket = lease_dir.with_file_name("control.sock");
        writeln!(
            s,
            "\n[control]\nsocket = {:?}",
            socket.display().to_string()
        )
        .unwrap();
        s
    }

    /// The equivalent Kea 2.x configuration (memfile, persisted in `dir`).
    pub fn to_kea_json(&self, dir: &Path) -> String {
        let ifaces = if self.kea_interfaces.is_empty() {
            vec!["*".to_string()]
        } else {
            self.kea_interfaces.clone()
        };
        let quoted = |v: &[String]| -> String {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut subnets = Vec::new();
        for (i, n) in self.subnets.iter().enumerate() {
            let pools: Vec<String> = n
                .pools
                .iter()
                .map(|p| format!("{{ \"pool\": {:?} }}", p.replace('-', " - ")))
                .collect();
            let mut opts = Vec::new();
            if !n.routers.is_empty() {
                opts.push(format!(
                    "{{ \"name\": \"routers\", \"data\": {:?} }}",
                    n.routers.join(", ")
                ));
            }
            if !n.dns.is_empty() {
                opts.push(format!(
                    "{{ \"name\": \"domain-name-servers\", \"data\": {:?} }}",
                    n.dns.join(", ")
                ));
            }
            let res: Vec<String> = n
                .reservations
                .iter()
                .map(|(hw, ip)| format!("{{ \"hw-address\": {hw:?}, \"ip-address\": {ip:?} }}"))
                .collect();
            subnets.push(format!(
                "{{ \"id\": {}, \"subnet\": {:?}, \"valid-lifetime\": {}, \"pools\": [{}], \
                 \"option-data\": [{}], \"reservations\": [{}] }}",
                i + 1,
                n.prefix,
                n.lease_time,
                pools.join(", "),
                opts.join(", "),
                res.join(", ")
            ));
        }
        format!(
            r#"{{ "Dhcp4": {{
  "interfaces-config": {{ "interfaces": [{ifaces}], "dhcp-socket-type": "raw" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": {leases:?}, "lfc-interval": 0 }},
  "subnet4": [ {subnets} ],
  "loggers": [
    {{ "name": "kea-dhcp4", "output_options": [ {{ "output": "stderr" }} ], "severity": "WARN" }},
    {{ "name": "kea-dhcp4.dhcp4", "output_options": [ {{ "output": "stderr" }} ], "severity": "INFO" }}
  ]
}} }}
"#,
            ifaces = quoted(&ifaces),
            leases = dir.join("kea-leases4.csv").display().to_string(),
            subnets = subnets.join(",\n    ")
        )
    }
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Ringlease,
    Kea,
}

impl ServerKind {
    /// `RINGLEASE_NETNS_SERVER=kea` selects Kea; anything else ringlease.
    pub fn from_env() -> ServerKind {
        match std::env::var("RINGLEASE_NETNS_SERVER").as_deref() {
            Ok("kea") => ServerKind::Kea,
            _ => ServerKind::Ringlease,
        }
    }
}

pub fn ringlease_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringlease"))
}

/// A DHCP server running inside a namespace; killed on `Drop` (and its
/// stderr printed if the test is failing).
pub struct Server {
    pub kind: ServerKind,
    child: Child,
    log: PathBuf,
    pub config_path: PathBuf,
    dir: TempDir,
}

/// Does `line` contain the word `ready`?
fn is_ready_line(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| w == "ready")
}

/// Writes the config for `cfg` into a fresh temp dir, starts the server
/// (ringlease, or Kea if `RINGLEASE_NETNS_SERVER=kea`) inside `ns` and waits
/// (bounded) until it reports that its sockets are open.
pub fn start_server(ns: &Netns, cfg: &ServerCfg) -> Server {
    start_server_kind(ServerKind::from_env(), ns, cfg)
}

pub fn start_server_kind(kind: ServerKind, ns: &Netns, cfg: &ServerCfg) -> Server {
    let dir = TempDir::new("srv");
    let log = dir.join("server.log");
    let (config_path, cmd, ready_marker): (PathBuf, Command, fn(&str) -> bool) = match kind {
        ServerKind::Ringlease => {
            let bin = ringlease_bin();
            let lease_dir = dir.join("leases");
            fs::create_dir_all(&lease_dir).expect("mkdir lease_dir");
            let cfg_path = dir.write("ringlease.toml", &cfg.to_toml(&lease_dir), false);
            // Validate first: a config the harness generates must be accepted.
            let mut chk = Command::new(&bin);
            chk.arg("check-config").arg(&cfg_path);
            let out = run_bounded(chk, Duration::from_secs(10));
            assert!(
                out.status.success(),
                "`ringlease check-config` rejected the test config ({}):\n{}\n--- stdout:\n{}\n--- stderr:\n{}",
                out.status,
                cfg.to_toml(&lease_dir),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let mut c = ns.cmd(&bin);
            c.arg("serve").arg("--config").arg(&cfg_path);
            c.env("NO_COLOR", "1");
            if std::env::var_os("RUST_LOG").is_none() {
                c.env("RUST_LOG", "info");
            }
            (cfg_path, c, is_ready_line)
        }
        ServerKind::Kea => {
            let bin = require_tool("kea-dhcp4", "kea-dhcp4-server");
            let cfg_path = dir.write("kea-dhcp4.json", &cfg.to_kea_json(dir.path()), false);
            let mut c = ns.cmd(&bin);
            c.arg("-c").arg(&cfg_path);
            c.env("KEA_LOCKFILE_DIR", dir.path())
                .env("KEA_PIDFILE_DIR", dir.path());
            (cfg_path, c, |l: &str| l.contains("DHCP4_STARTED"))
        }
    };
    let child = Child::spawn(&format!("{kind:?} server"), cmd, &log);
    let mut srv = Server {
        kind,
        child,
        log,
        config_path,
        dir,
    };
    let mut exited = None;
    let ready = wait_for(READY_TIMEOUT, || {
        if read_lossy(&srv.log).lines().any(ready_marker) {
            return Some(());
        }
        if let Some(s) = srv.child.try_status() {
            exited = Some(s);
            return Some(());
        }
        None
    });
    if let Some(s) = exited {
        panic!(
            "{kind:?} server exited with {s} before becoming ready.\nconfig ({}):\n{}\nstderr:\n{}",
            srv.config_path.display(),
            read_lossy(&srv.config_path),
            srv.stderr()
        );
    }
    if ready.is_none() {
        panic!(
            "{kind:?} server did not print its ready line within {READY_TIMEOUT:?}.\n\
             config ({}):\n{}\nstderr so far:\n{}",
            srv.config_path.display(),
            read_lossy(&srv.config_path),
            srv.stderr()
        );
    }
    srv
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fails the test if the server has died.
    pub fn assert_running(&mut self) {
        if let Some(s) = self.child.try_status() {
            panic!(
                "{:?} server died ({s}); stderr:\n{}",
                self.kind,
                self.stderr()
            );
        }
    }

    /// SIGTERM, bounded wait, and the contract: exit status 0. Returns the
    /// server's stderr (which holds ringlease's latency percentiles).
    pub fn stop(mut self) -> String {
        let (status, in_time) = self.child.stop("TERM", STOP_GRACE);
        let err = self.stderr();
        assert!(
            in_time,
            "{:?} server did not exit within {STOP_GRACE:?} of SIGTERM; stderr:\n{err}",
            self.kind
        );
        assert!(
            status.success(),
            "{:?} server exited with {status} after SIGTERM (expected 0); stderr:\n{err}",
            self.kind
        );
        err
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let err = self.stderr();
            let tail: Vec<&str> = err.lines().rev().take(80).collect();
            eprintln!(
                "---- {:?} server stderr (last {} lines) ----",
                self.kind,
                tail.len()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
            eprintln!("---- end of server stderr ----");
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Is `ip` within the inclusive range `"first-last"`?
pub fn in_range(ip: Ipv4Addr, range: &str) -> bool {
    let (a, b) = range.split_once('-').expect("range is first-last");
    let a: Ipv4Addr = a.trim().parse().expect("range start");
    let b: Ipv4Addr = b.trim().parse().expect("range end");
    (u32::from(a)..=u32::from(b)).contains(&u32::from(ip))
}

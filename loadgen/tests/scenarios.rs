//! End-to-end: the load generator against a real ringlease on loopback (each test on its own 127.N.0.0/16 and port,
//! so they run in parallel), against broken toy servers, and against its own reflector. Every run is bounded by
//! --exchanges and --duration; every child is killed on drop.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::options::code;
use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_ringlease-loadgen");

/// `target/<profile>/ringlease`, next to this test's `deps/` directory.
fn ringlease_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test exe lives in target/<profile>/deps");
    let bin = profile_dir.join("ringlease");
    assert!(
        bin.exists(),
        "{} is missing: build the server first with `cargo build -p ringlease` (same profile and target dir as \
         these tests, e.g. `cargo build --release -p ringlease && cargo test --release -p ringlease-loadgen`)",
        bin.display()
    );
    bin
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("rl-loadgen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir temp");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Test network `n`: server 127.n.0.1, relay 127.n.0.2, pool 127.n.1.0/…, port 20000 + n.
struct Net {
    n: u8,
}

impl Net {
    fn server(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, self.n, 0, 1), self.port())
    }
    fn giaddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, self.n, 0, 2)
    }
    fn port(&self) -> u16 {
        20_000 + u16::from(self.n)
    }
    fn subnet(&self) -> String {
        format!("127.{}.0.0/16", self.n)
    }
}

/// A ringlease serving `net`, ready when it returns.
fn start_ringlease(net: &Net, dir: &TempDir) -> Killed {
    let pool = format!("127.{n}.1.0-127.{n}.255.254", n = net.n);
    start_ringlease_at(dir, net.server(), &net.subnet(), &pool)
}

/// A ringlease listening on `listen` (its address is also its server id), serving `subnet` from `pool`.
fn start_ringlease_at(dir: &TempDir, listen: SocketAddrV4, subnet: &str, pool: &str) -> Killed {
    let leases = dir.0.join("leases");
    std::fs::create_dir_all(&leases).unwrap();
    let cfg = format!(
        "[server]\nlisten = [\"{srv}\"]\nserver_id = \"{ip}\"\nworkers = 1\nbackend = \"auto\"\nlease_dir = {leases:?}\n\
         decline_hold = 60\n\n[[subnet]]\nprefix = \"{subnet}\"\npools = [\"{pool}\"]\n\
         lease_time = 3600\nrouters = [\"{ip}\"]\ndns = [\"{ip}\"]\n\n[control]\nsocket = {socket:?}\n",
        socket = dir.0.join("control.sock").display().to_string(),
        srv = listen,
        ip = listen.ip(),
        leases = leases.display().to_string(),
    );
    let path = dir.0.join("ringlease.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(ringlease_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringlease");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(());
            }
        }
    });
    let child = Killed(child);
    rx.recv_timeout(Duration::from_secs(20))
        .expect("ringlease did not print its ready line within 20 s");
    child
}

/// Runs the load generator (hard limit 60 s) and returns its output and JSON result.
fn loadgen(net: &Net, dir: &TempDir, args: &[&str]) -> (Output, Value) {
    let json = dir.0.join("result.json");
    let mut cmd = Command::new(LOADGEN);
    cmd.arg("--server")
        .arg(net.server().to_string())
        .arg("--giaddr")
        .arg(net.giaddr().to_string())
        .args([
            "--subnet",
            &net.subnet(),
            "--rto-ms",
            "500",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .args(args);
    let out = run_bounded(cmd, Duration::from_secs(60));
    eprintln!(
        "loadgen {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (out, v)
}

fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    // Watchdog: kill this child (by its own pid) if it outlives the limit.
    std::thread::spawn(move || {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if d.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !d.load(Ordering::Relaxed) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::Relaxed);
    out
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

/// The run finished cleanly: exit 0, no violations, nothing timed out, everything started was completed.
fn assert_clean(out: &Output, v: &Value) {
    assert_eq!(out.status.code(), Some(0), "loadgen failed");
    assert_eq!(n(v, &["violations_total"]), 0);
    assert_eq!(n(v, &["timed_out"]), 0);
    assert_eq!(n(v, &["unfinished"]), 0);
    assert_eq!(n(v, &["naks"]), 0);
    for (kind, e) in v["exchanges"].as_object().expect("exchanges in JSON") {
        assert_eq!(e["started"], e["completed"], "{kind}");
    }
}

fn scenario_against_ringlease(n_: u8, scenario: &[&str], clients: &str, exchanges: &str) -> Value {
    let net = Net { n: n_ };
    let dir = TempDir::new(&format!("s{n_}"));
    let _srv = start_ringlease(&net, &dir);
    let mut args = vec![
        "--clients",
        clients,
        "--exchanges",
        exchanges,
        "--rate",
        "4000",
        "--duration",
        "20",
    ];
    args.extend_from_slice(scenario);
    let (out, v) = loadgen(&net, &dir, &args);
    assert_clean(&out, &v);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("latency (us)") && text.contains('#'),
        "summary with a histogram:\n{text}"
    );
    v
}

fn started(v: &Value, kind: &str) -> u64 {
    n(v, &["exchanges", kind, "started"])
}

#[test]
fn dora_against_ringlease() {
    let v = scenario_against_ringlease(31, &["--scenario", "dora"], "3000", "3000");
    assert_eq!(started(&v, "dora"), 3000);
    assert!(n(&v, &["latency_us", "pairs", "DISCOVER-OFFER", "count"]) == 3000);
    assert!(v["latency_us"]["exchanges"]["dora"]["p99"]
        .as_u64()
        .is_some());
    assert!(v["rate"].as_f64().unwrap() > 0.0);
}

#[test]
fn renew_against_ringlease() {
    let v = scenario_against_ringlease(32, &["--scenario", "renew", "--client-id"], "1500", "4500");
    assert_eq!((started(&v, "dora"), started(&v, "renew")), (1500, 3000));
    assert_eq!(n(&v, &["latency_us", "pairs", "RENEW-ACK", "count"]), 3000);
}

#[test]
fn release_against_ringlease() {
    let v = scenario_against_ringlease(33, &["--scenario", "release"], "1000", "3000");
    assert_eq!((started(&v, "dora"), started(&v, "release")), (2000, 1000));
    assert_eq!(n(&v, &["sent", "DHCPRELEASE"]), 1000);
}

#[test]
fn decline_against_ringlease() {
    let v = scenario_against_ringlease(34, &["--scenario", "decline"], "1000", "3000");
    assert_eq!((started(&v, "dora"), started(&v, "decline")), (2000, 1000));
}

#[test]
fn init_reboot_against_ringlease() {
    let v = scenario_against_ringlease(35, &["--scenario", "init-reboot"], "1000", "3000");
    assert_eq!(
        (started(&v, "dora"), started(&v, "init-reboot")),
        (1000, 2000)
    );
}

#[test]
fn mix_against_ringlease() {
    let v = scenario_against_ringlease(
        36,
        &[
            "--scenario",
            "mix",
            "--mix",
            "dora=2,renew=4,release=1,init-reboot=2,decline=1",
        ],
        "1000",
        "4000",
    );
    for k in ["dora", "renew", "release", "init-reboot", "decline"] {
        assert!(started(&v, k) > 0, "{k}");
    }
}

#[test]
fn find_max_against_ringlease() {
    let net = Net { n: 37 };
    let dir = TempDir::new("s37");
    let _srv = start_ringlease(&net, &dir);
    let (out, v) = loadgen(
        &net,
        &dir,
        &[
            "--find-max",
            "--duration",
            "6",
            "--step",
            "0.5",
            "--clients",
            "20000",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(v["max_rate"].as_f64().unwrap() >= 1000.0, "{v}");
    assert!(v["steps"].as_array().unwrap().len() >= 2);
}

/// A toy "server" on its own thread: answers DISCOVER with OFFER and REQUEST with ACK, shaped by `lie` (which
/// returns whether the reply carries a lease time).
fn toy_server(
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    lie: fn(&mut PacketWriter<'_>, &Packet<'_>) -> bool,
) {
    let sock = UdpSocket::bind(addr).expect("bind toy server");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut out = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(req) = Packet::parse(&buf[..len]) else {
            continue;
        };
        let t = match req.message_type() {
            MessageType::Discover => MessageType::Offer,
            MessageType::Request => MessageType::Ack,
            _ => continue,
        };
        let mut w = PacketWriter::reply_to(&mut out, &req, t, 576);
        if lie(&mut w, &req) {
            w.push_u32(code::LEASE_TIME, 3600).unwrap();
        }
        w.push_ip(code::SERVER_ID, *addr.ip()).unwrap();
        let n = w.finish();
        let _ = sock.send_to(&out[..n], from);
    }
}

fn broken_server_run(
    n_: u8,
    lie: fn(&mut PacketWriter<'_>, &Packet<'_>) -> bool,
) -> (Output, Value) {
    let net = Net { n: n_ };
    let dir = TempDir::new(&format!("b{n_}"));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let addr = net.server();
    let t = std::thread::spawn(move || toy_server(addr, s, lie));
    std::thread::sleep(Duration::from_millis(100));
    let r = loadgen(
        &net,
        &dir,
        &[
            "--clients",
            "200",
            "--exchanges",
            "200",
            "--rate",
            "2000",
            "--duration",
            "5",
            "--tries",
            "1",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    r
}

#[test]
fn same_address_to_two_clients_is_a_violation() {
    let (out, v) = broken_server_run(41, |w, _| {
        w.set_yiaddr(Ipv4Addr::new(127, 41, 1, 1));
        true
    });
    assert_eq!(out.status.code(), Some(1), "violations must fail the run");
    assert!(
        n(&v, &["violations", "by_kind", "duplicate_address"]) >= 100,
        "{v}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("duplicate_address: client"),
        "first violations printed with the client:\n{text}"
    );
}

#[test]
fn wrong_xid_is_a_violation() {
    let (out, v) = broken_server_run(42, |w, req| {
        w.set_yiaddr(Ipv4Addr::new(127, 42, 1, 1));
        w.set_xid(req.xid() ^ 0x0000_0001); // another client's xid, this client's chaddr
        true
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        n(&v, &["violations", "by_kind", "chaddr_mismatch"]) >= 100,
        "{v}"
    );
}

#[test]
fn outside_subnet_and_missing_lease_time_are_violations() {
    let (out, v) = broken_server_run(43, |w, req| {
        // A different address per client, but outside 127.43.0.0/16.
        let c = req.chaddr();
        w.set_yiaddr(Ipv4Addr::new(10, c[3], c[4], c[5]));
        false // and no option 51
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        n(&v, &["violations", "by_kind", "yiaddr_outside_subnet"]) >= 200,
        "{v}"
    );
}

/// Two independent ringleases with disjoint pools as the relay's two helper addresses: every DISCOVER goes to both, the
/// client takes the first OFFER and names it in its REQUEST (the other server stays silent), renewals go to that
/// server only. A clean run, with the answers split by server in the JSON.
#[test]
fn two_servers_against_ringlease() {
    let net = Net { n: 45 };
    let a = net.server();
    let b = SocketAddrV4::new(Ipv4Addr::new(127, 45, 0, 3), net.port());
    let (dir_a, dir_b) = (TempDir::new("m45a"), TempDir::new("m45b"));
    let _a = start_ringlease_at(&dir_a, a, &net.subnet(), "127.45.1.0-127.45.100.255");
    let _b = start_ringlease_at(&dir_b, b, &net.subnet(), "127.45.101.0-127.45.200.255");
    let (out, v) = loadgen(
        &net,
        &dir_a,
        &[
            "--server",
            &b.to_string(),
            "--scenario",
            "renew",
            "--clients",
            "1000",
            "--exchanges",
            "4000",
            "--rate",
            "2000",
            "--duration",
            "20",
        ],
    );
    assert_clean(&out, &v);
    assert_eq!((started(&v, "dora"), started(&v, "renew")), (1000, 3000));
    assert_eq!(v["server"], format!("{a},{b}"));
    let servers = v["servers"].as_array().expect("per-server figures");
    assert_eq!(servers.len(), 2, "{v}");
    let sum = |key: &str| {
        servers
            .iter()
            .map(|s| s[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("offers_taken"), 1000, "one OFFER taken per DORA");
    assert_eq!(sum("acks"), 4000, "one ACK per DORA and per renewal");
    assert_eq!(sum("answered"), n(&v, &["answered"]));
    assert_eq!(sum("naks"), 0);
    for s in servers {
        let per_second: u64 = s["answered_per_second"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(per_second, s["answered"].as_u64().unwrap(), "{s}");
        if s["answered"].as_u64().unwrap() > 0 {
            let id = s["server"].as_str().unwrap().split(':').next().unwrap();
            assert_eq!(s["server_id"], id, "{s}");
        }
    }
    assert!(v["start_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("server {b} ")),
        "per-server lines:\n{text}"
    );
}

/// A toy server for one half of the clients (the parity of chaddr's last byte): OFFERs `yiaddr` to its half, ACKs
/// only REQUESTs that name it, as a member of a load-balancing pair would; both halves get the same address.
fn toy_half_server(addr: SocketAddrV4, stop: Arc<AtomicBool>, parity: u8, yiaddr: Ipv4Addr) {
    let sock = UdpSocket::bind(addr).expect("bind toy server");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut out = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(req) = Packet::parse(&buf[..len]) else {
            continue;
        };
        let t = match req.message_type() {
            MessageType::Discover if req.chaddr()[5] % 2 == parity => MessageType::Offer,
            MessageType::Request if req.server_id() == Some(*addr.ip()) => MessageType::Ack,
            _ => continue,
        };
        let mut w = PacketWriter::reply_to(&mut out, &req, t, 576);
        w.set_yiaddr(yiaddr);
        w.push_u32(code::LEASE_TIME, 3600).unwrap();
        w.push_ip(code::SERVER_ID, *addr.ip()).unwrap();
        let n = w.finish();
        let _ = sock.send_to(&out[..n], from);
    }
}

/// Each of two servers behaves on its own, but they hand out the same address to their halves of the clients: two
/// clients hold it at once, granted by different servers. The duplicate-address check covers both.
#[test]
fn same_address_from_two_servers_is_a_violation() {
    let net = Net { n: 46 };
    let dir = TempDir::new("b46");
    let a = net.server();
    let b = SocketAddrV4::new(Ipv4Addr::new(127, 46, 0, 3), net.port());
    let stop = Arc::new(AtomicBool::new(false));
    let ip = Ipv4Addr::new(127, 46, 1, 1);
    let toys: Vec<_> = [(a, 0), (b, 1)]
        .into_iter()
        .map(|(addr, parity)| {
            let s = stop.clone();
            std::thread::spawn(move || toy_half_server(addr, s, parity, ip))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let (out, v) = loadgen(
        &net,
        &dir,
        &[
            "--server",
            &b.to_string(),
            "--clients",
            "200",
            "--exchanges",
            "200",
            "--rate",
            "2000",
            "--duration",
            "5",
            "--tries",
            "1",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    for t in toys {
        t.join().unwrap();
    }
    assert_eq!(out.status.code(), Some(1), "violations must fail the run");
    assert!(
        n(&v, &["violations", "by_kind", "duplicate_address"]) >= 100,
        "{v}"
    );
    assert_eq!(
        n(&v, &["violations", "by_kind", "unselected_server"]),
        0,
        "{v}"
    );
    let servers = v["servers"].as_array().expect("per-server figures");
    for s in servers {
        assert!(s["acks"].as_u64().unwrap() > 0, "both servers granted: {s}");
    }
}

#[test]
fn reflector_echo_ceiling() {
    let net = Net { n: 44 };
    let dir = TempDir::new("r44");
    let mut refl = Command::new(LOADGEN);
    refl.args([
        "reflect",
        "--listen",
        &net.server().to_string(),
        "--duration",
        "15",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = refl.spawn().expect("spawn reflector");
    let stderr = child.stderr.take().unwrap();
    let _refl = Killed(child);
    let mut lines = BufReader::new(stderr).lines();
    assert!(lines
        .next()
        .and_then(Result::ok)
        .unwrap_or_default()
        .contains("ready"));
    let (out, v) = loadgen(
        &net,
        &dir,
        &[
            "--scenario",
            "echo",
            "--clients",
            "5000",
            "--exchanges",
            "20000",
            "--rate",
            "20000",
            "--duration",
            "10",
        ],
    );
    assert_clean(&out, &v);
    assert_eq!(n(&v, &["latency_us", "pairs", "ECHO", "count"]), 20000);
}

#[test]
fn refuses_unbounded_or_remote_runs() {
    let run = |args: &[&str]| {
        let mut c = Command::new(LOADGEN);
        c.args(args);
        run_bounded(c, Duration::from_secs(10))
    };
    let remote = run(&[
        "--server",
        "8.8.8.8",
        "--giaddr",
        "127.0.0.2",
        "--rate",
        "1",
        "--exchanges",
        "1",
    ]);
    assert_eq!(remote.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("--allow-remote"));
    let bcast = run(&[
        "--server",
        "255.255.255.255",
        "--giaddr",
        "127.0.0.2",
        "--rate",
        "1",
        "--exchanges",
        "1",
        "--allow-remote",
    ]);
    assert_eq!(bcast.status.code(), Some(2));
    let unbounded = run(&[
        "--server",
        "127.0.0.1",
        "--giaddr",
        "127.0.0.2",
        "--rate",
        "1",
    ]);
    assert_eq!(unbounded.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unbounded.stderr).contains("bounded"));
}

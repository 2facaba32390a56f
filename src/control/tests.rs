//! The control commands and the exposition, on a server built in memory (no DHCP sockets);
//! the socket and HTTP threads on a temporary directory and a loopback port.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::handlers::{bucket_counts, handle_line, parse_hex};
use super::*;
use crate::leaselog::LogOptions;
use crate::metrics::WorkerMetrics;
use crate::proto::lease::{ClientKey, Commit, LeaseTime, Volatile};
use crate::proto::server::Policy;
use crate::proto::wire::dhcp::MessageType;
use crate::proto::wire::DropReason;
use crate::shell::clock::unix_now_s;

fn config_text(pools: &str, socket: &Path, metrics: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:6767"]
server_id = "127.0.0.1"
workers = 2

[[subnet]]
prefix = "10.0.0.0/16"
pools = [{pools}]
lease_time = 3600

[control]
socket = "{}"

[metrics]
listen = "{metrics}"
"#,
        socket.display()
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    state: Arc<State>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/control.sock");
    let text = config_text("\"10.0.1.0-10.0.1.255\"", &socket, "127.0.0.1:0");
    let config_path = dir.path().join("ringlease.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::from_toml(&text).unwrap();
    let policy = Policy {
        server_id: config.server.server_id,
        offer_hold_s: 30,
        decline_hold_s: 600,
    };
    let server = Arc::new(Server::new(policy, config.subnets.clone()));
    let (log, _) = LeaseLog::open(
        &dir.path().join("leases"),
        LogOptions {
            segment_bytes: 1 << 16,
            compact_at_bytes: 1 << 20,
        },
    )
    .unwrap();
    let metrics = Arc::new(SharedMetrics::new(2));
    let state = Arc::new(State::new(
        server,
        metrics,
        Arc::new(log),
        Backend::Fallback,
        config,
        Some(config_path),
        None,
    ));
    Fixture { dir, state }
}

fn call(state: &State, request: Value) -> Value {
    let line = handle_line(state, request.to_string().as_bytes());
    serde_json::from_str(&line).unwrap()
}

fn ok(state: &State, request: Value) -> Value {
    let response = call(state, request.clone());
    assert_eq!(response["ok"], json!(true), "{request} → {response}");
    response["result"].clone()
}

fn error(state: &State, request: Value) -> String {
    let response = call(state, request.clone());
    assert_eq!(response["ok"], json!(false), "{request} → {response}");
    response["error"].as_str().unwrap().to_string()
}

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x42];

/// Leases 10.0.1.7 to MAC, as a REQUEST would.
fn bind(state: &State) -> Ipv4Addr {
    let settings = state.server.settings();
    let subnet = &settings.subnets.all()[0];
    let ip = Ipv4Addr::new(10, 0, 1, 7);
    let client = ClientKey::from_hardware(1, &MAC);
    let commit = state.server.leases.commit(
        subnet,
        client.as_bytes(),
        ip,
        LeaseTime::plain(3600),
        unix_now_s(),
        &mut Volatile,
    );
    assert!(matches!(commit, Commit::Bound { .. }));
    ip
}

fn publish_traffic(state: &State) {
    let mut m = WorkerMetrics::new();
    m.received = 7;
    m.count_in(MessageType::Discover);
    m.count_in(MessageType::Discover);
    m.count_in(MessageType::Request);
    m.count_out(MessageType::Offer);
    m.count_out(MessageType::Offer);
    m.count_out(MessageType::Ack);
    m.count_drop(DropReason::Truncated);
    m.count_drop(DropReason::NoSubnet);
    m.count_drop(DropReason::NoSubnet);
    m.count_drop(DropReason::BadCookie);
    for us in [30, 40, 80, 700, 3_000_000] {
        m.record_latency(us, 1);
    }
    m.record_sync(Duration::from_micros(120));
    state.metrics.publish(1, &m);
}

#[test]
fn malformed_and_unknown_requests_get_errors() {
    let f = fixture();
    for line in [
        &b"not json"[..],
        b"{\"cmd\":",
        b"{\"cmd\":\"explode\"}",
        b"{\"nocmd\":1}",
        b"{\"cmd\":\"release\"}",
        b"{\"cmd\":\"release\",\"ip\":\"nope\"}",
        b"{\"cmd\":\"status\",\"extra\":1}",
        b"\xff\xfe",
        b"[]",
    ] {
        let response: Value = serde_json::from_str(&handle_line(&f.state, line)).unwrap();
        assert_eq!(response["ok"], json!(false), "{line:?}");
        assert!(response["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed request"));
    }
    assert_eq!(
        error(&f.state, json!({"cmd": "lease"})),
        "give exactly one of ip, hw, client_id"
    );
    assert_eq!(
        error(&f.state, json!({"cmd": "partner-down"})),
        "no failover relationship is configured"
    );
}

#[test]
fn status_reports_counters_rates_and_leases() {
    let f = fixture();
    publish_traffic(&f.state);
    bind(&f.state);
    let s = ok(&f.state, json!({"cmd": "status"}));
    assert_eq!(s["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(s["backend"], json!("fallback"));
    assert_eq!(s["failover"], Value::Null);
    assert_eq!(s["workers"].as_array().unwrap().len(), 2);
    assert_eq!(s["workers"][1]["received"], json!(7));
    assert_eq!(s["workers"][1]["sent"], json!(3));
    assert_eq!(
        s["workers"][1]["drops"],
        json!({"truncated": 1, "no_subnet": 2, "bad_cookie": 1})
    );
    assert_eq!(s["total"]["received_by_type"]["DHCPDISCOVER"], json!(2));
    assert_eq!(s["total"]["sent_by_type"]["DHCPACK"], json!(1));
    assert_eq!(s["total"]["drops"]["no_subnet"], json!(2));
    assert_eq!(s["total"]["drops"]["pool_exhausted"], json!(0));
    let latency = &s["total"]["latency_us"];
    assert_eq!(latency["count"], json!(5));
    let buckets = latency["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), LATENCY_BOUNDS_US.len() + 1);
    assert_eq!(buckets[0], json!({"le_us": 50, "count": 2}));
    assert_eq!(buckets[1], json!({"le_us": 100, "count": 1}));
    assert_eq!(
        buckets[LATENCY_BOUNDS_US.len()],
        json!({"le_us": null, "count": 1})
    );
    assert_eq!(s["total"]["lease_log_sync_us"]["count"], json!(1));
    assert_eq!(
        s["subnets"],
        json!([{"subnet": "10.0.0.0/16", "pool_size": 256, "bound": 1, "offered": 0,
                "declined": 0, "free": 255, "utilisation": 1.0 / 256.0}])
    );
    let text = render_status(&s);
    assert!(text.contains("failover: not configured"), "{text}");
    assert!(text.contains("DHCPDISCOVER"), "{text}");
    assert!(text.contains("no_subnet 2"), "{text}");
    assert!(text.contains("10.0.0.0/16"), "{text}");
}

#[test]
fn lease_queries_and_release() {
    let f = fixture();
    let ip = bind(&f.state);
    let by_ip = ok(&f.state, json!({"cmd": "lease", "ip": ip}));
    let lease = &by_ip["leases"][0];
    assert_eq!(lease["state"], json!("bound"));
    assert_eq!(lease["client"], json!("hw 02:00:00:00:00:42"));
    assert!(lease["expires_in_s"].as_u64().unwrap() > 3500);
    for hw in ["02:00:00:00:00:42", "02-00-00-00-00-42", "020000000042"] {
        let by_hw = ok(&f.state, json!({"cmd": "lease", "hw": hw}));
        assert_eq!(by_hw["leases"][0]["ip"], json!("10.0.1.7"), "{hw}");
    }
    let none = ok(&f.state, json!({"cmd": "lease", "client_id": "01:99"}));
    assert_eq!(none["leases"], json!([]));
    assert_eq!(render_lease(&none), "no lease\n");
    assert!(render_lease(&by_ip).starts_with("10.0.1.7 bound for "));
    let free = ok(&f.state, json!({"cmd": "lease", "ip": "10.0.1.8"}));
    assert_eq!(free["leases"][0]["state"], json!("free"));
    assert!(error(&f.state, json!({"cmd": "lease", "ip": "192.0.2.1"}))
        .contains("not in any configured subnet"));
    assert!(error(&f.state, json!({"cmd": "lease", "hw": "zz"})).contains("not a hardware"));

    let released = ok(&f.state, json!({"cmd": "release", "ip": ip}));
    assert_eq!(
        released,
        json!({"released": "10.0.1.7", "client": "hw 02:00:00:00:00:42"})
    );
    let after = ok(&f.state, json!({"cmd": "lease", "ip": ip}));
    assert_eq!(after["leases"][0]["state"], json!("released"));
    let by_hw = ok(&f.state, json!({"cmd": "lease", "hw": "02:00:00:00:00:42"}));
    assert_eq!(by_hw["leases"], json!([]));
    assert!(error(&f.state, json!({"cmd": "release", "ip": ip})).contains("no running lease"));
    // The release is in the lease log, durable.
    drop(f.state.journal.lock().take());
    let replayed = crate::leaselog::verify(&f.dir.path().join("leases")).unwrap();
    assert!(replayed
        .bindings
        .iter()
        .any(|b| b.ip == ip && b.state == crate::proto::lease::LeaseState::Released));
}

#[test]
fn reload_applies_live_settings_and_refuses_the_rest() {
    let f = fixture();
    let result = ok(&f.state, json!({"cmd": "reload"}));
    assert_eq!(result["message"], json!("no changes"));
    let path = f.state.config_path.clone().unwrap();
    let socket = f.state.config.lock().operations.control_socket.clone();
    let pools = "\"10.0.1.0-10.0.1.255\"";

    // Live: a new lease time and DNS servers.
    let live = config_text(pools, &socket, "127.0.0.1:0").replace(
        "lease_time = 3600",
        "lease_time = 7200\ndns = [\"10.0.0.53\"]",
    );
    std::fs::write(&path, &live).unwrap();
    let result = ok(&f.state, json!({"cmd": "reload"}));
    assert_eq!(result["changed"], json!(true));
    assert_eq!(
        result["applied"],
        json!([
            "subnet[0].lease_time",
            "subnet[0].renewal_time",
            "subnet[0].rebinding_time",
            "subnet[0].dns",
        ])
    );
    assert_eq!(
        f.state.server.settings().subnets.all()[0].lease_time_s,
        7200
    );
    assert_eq!(*f.state.config.lock(), Config::from_toml(&live).unwrap());
    // Compared with what runs now: nothing more to do.
    assert_eq!(
        ok(&f.state, json!({"cmd": "reload"}))["message"],
        json!("no changes")
    );

    // Pools and the metrics endpoint need a restart: all or nothing, so the new offer hold is
    // not applied either.
    let running = Arc::clone(&*f.state.server.settings());
    std::fs::write(
        &path,
        live.replace(pools, "\"10.0.1.0-10.0.2.255\"")
            .replace("127.0.0.1:0", "127.0.0.1:9")
            .replace("workers = 2", "workers = 2\noffer_hold = 5"),
    )
    .unwrap();
    let e = error(&f.state, json!({"cmd": "reload"}));
    assert_eq!(
        e,
        "subnet[0].pools, metrics.listen: restart needed; nothing was changed"
    );
    assert!(Arc::ptr_eq(&running, &f.state.server.settings()));
    assert_eq!(*f.state.config.lock(), Config::from_toml(&live).unwrap());

    std::fs::write(&path, "[server]\nlisten = 1\n").unwrap();
    let e = error(&f.state, json!({"cmd": "reload"}));
    assert!(e.contains("the running configuration is unchanged"), "{e}");
}

#[test]
fn config_differences_are_named_by_key() {
    let socket = Path::new("/run/x.sock");
    let base = Config::from_toml(&config_text("\"10.0.1.0-10.0.1.255\"", socket, "off")).unwrap();
    assert!(config_differences(&base, &base).is_empty());
    let changed = Config::from_toml(
        &config_text("\"10.0.1.0-10.0.1.255\"", socket, "off")
            .replace("workers = 2", "workers = 3\noffer_hold = 5")
            .replace(
                "lease_time = 3600",
                "lease_time = 7200\nrouters = [\"10.0.0.1\"]\nntp = [\"10.0.0.2\"]\n\
                 options = { \"time-offset\" = \"3600\" }",
            ),
    )
    .unwrap();
    assert_eq!(
        config_differences(&base, &changed),
        ConfigDifferences {
            restart: vec!["server.workers/cores".into()],
            live: vec![
                "server.offer_hold".into(),
                "subnet[0].lease_time".into(),
                "subnet[0].renewal_time".into(),
                "subnet[0].rebinding_time".into(),
                "subnet[0].routers".into(),
                "subnet[0].ntp".into(),
                "subnet[0].options".into(),
            ],
        }
    );
    // A second subnet, and a new prefix for the first.
    let text = config_text("\"10.0.1.0-10.0.1.255\"", socket, "off");
    let two = Config::from_toml(&text.replace(
        "[control]",
        "[[subnet]]\nprefix = \"10.1.0.0/16\"\npools = [\"10.1.0.10-10.1.0.20\"]\n\n[control]",
    ))
    .unwrap();
    assert_eq!(
        config_differences(&base, &two).restart,
        ["subnet count (1 → 2)"]
    );
    let moved = Config::from_toml(&text.replace("10.0.0.0/16", "10.0.0.0/15")).unwrap();
    assert_eq!(
        config_differences(&base, &moved).restart,
        ["subnet[0].prefix"]
    );
}

#[test]
fn hex_parsing() {
    assert_eq!(parse_hex("02:00:0a", 16), Some(vec![2, 0, 10]));
    assert_eq!(parse_hex("2-0-a", 16), Some(vec![2, 0, 10]));
    assert_eq!(parse_hex("0x02000a", 16), Some(vec![2, 0, 10]));
    assert_eq!(parse_hex("02000", 16), None);
    assert_eq!(parse_hex("", 16), None);
    assert_eq!(parse_hex("02::0a", 16), None);
    assert_eq!(parse_hex("0102", 1), None);
    assert_eq!(parse_hex("é1", 16), None);
}

#[test]
fn buckets_hold_every_sample_once() {
    let mut m = WorkerMetrics::new();
    for us in [
        1, 50, 51, 100, 999, 1000, 1001, 1_000_000, 1_000_001, 59_000_000,
    ] {
        m.record_latency(us, 2);
    }
    let counts = bucket_counts(&m.latency_us);
    assert_eq!(counts.iter().sum::<u64>(), 20);
    assert_eq!(counts[0], 4); // 1, 50
    assert_eq!(counts[1], 4); // 51, 100
                              // 1 s itself shares an hdrhistogram bucket with values up to 1.000447 s: counted above,
                              // so a bucket never claims a sample was faster than it may have been.
    assert_eq!(counts[LATENCY_BOUNDS_US.len()], 6);
}

/// Checks the exposition line by line; returns name{labels} → value.
pub(crate) fn parse_exposition(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{line}")),
        };
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{line} twice"
        );
    }
    samples
}

#[test]
fn exposition_has_counters_gauges_and_cumulative_histograms() {
    let f = fixture();
    publish_traffic(&f.state);
    bind(&f.state);
    let text = http::render(f.state.clone());
    let m = parse_exposition(&text);
    assert_eq!(
        m["ringlease_dhcp_received_total{type=\"DHCPDISCOVER\"}"],
        2.0
    );
    assert_eq!(
        m["ringlease_dhcp_received_total{type=\"DHCPRELEASE\"}"],
        0.0
    );
    assert_eq!(m["ringlease_dhcp_sent_total{type=\"DHCPOFFER\"}"], 2.0);
    assert_eq!(m["ringlease_dhcp_sent_total{type=\"DHCPACK\"}"], 1.0);
    assert_eq!(m["ringlease_drops_total{reason=\"no_subnet\"}"], 2.0);
    assert_eq!(m["ringlease_drops_total{reason=\"pool_exhausted\"}"], 0.0);
    assert_eq!(
        m["ringlease_worker_datagrams_received_total{worker=\"1\"}"],
        7.0
    );
    assert_eq!(
        m["ringlease_leases{subnet=\"10.0.0.0/16\",state=\"bound\"}"],
        1.0
    );
    assert_eq!(m["ringlease_pool_size{subnet=\"10.0.0.0/16\"}"], 256.0);
    assert_eq!(
        m["ringlease_pool_utilisation_ratio{subnet=\"10.0.0.0/16\"}"],
        1.0 / 256.0
    );
    assert_eq!(
        m["ringlease_info{version=\"0.1.0\",backend=\"fallback\"}"],
        1.0
    );
    assert!(m.contains_key("ringlease_uptime_seconds"));
    assert_eq!(m["ringlease_reply_latency_seconds_count"], 5.0);
    assert_eq!(
        m["ringlease_reply_latency_seconds_bucket{le=\"0.00005\"}"],
        2.0
    );
    assert_eq!(
        m["ringlease_reply_latency_seconds_bucket{le=\"0.0001\"}"],
        3.0
    );
    assert_eq!(m["ringlease_reply_latency_seconds_bucket{le=\"1.0\"}"], 4.0);
    assert_eq!(
        m["ringlease_reply_latency_seconds_bucket{le=\"+Inf\"}"],
        5.0
    );
    assert_eq!(m["ringlease_lease_log_sync_seconds_count"], 1.0);
    check_histogram(&m, "ringlease_reply_latency_seconds");
    check_histogram(&m, "ringlease_lease_log_sync_seconds");
}

pub(crate) fn check_histogram(m: &std::collections::BTreeMap<String, f64>, name: &str) {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), LATENCY_BOUNDS_US.len() + 1, "{name}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name} not cumulative: {buckets:?}"
    );
    let (last_le, last) = *buckets.last().unwrap();
    assert_eq!(last_le, f64::INFINITY);
    assert_eq!(last, m[&format!("{name}_count")], "{name}: +Inf != count");
}

fn connect(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn roundtrip(s: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    s.write_all(line).unwrap();
    s.write_all(b"\n").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn socket_serves_many_requests_and_stays_bounded() {
    let f = fixture();
    let ops = f.state.config.lock().operations.clone();
    let server_stop = Arc::new(AtomicBool::new(false));
    let handle = start_with(f.state.clone(), server_stop.clone(), &ops, &[]).unwrap();
    let path = handle.socket_path().to_path_buf();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o755);

    // A second server on the same path is refused.
    let e = start_with(f.state.clone(), server_stop.clone(), &ops, &[])
        .err()
        .unwrap();
    assert!(e.contains("another server is listening"), "{e}");

    let (mut s, mut r) = connect(&path);
    let bad = roundtrip(&mut s, &mut r, b"{oops");
    assert_eq!(bad["ok"], json!(false));
    let status = roundtrip(&mut s, &mut r, br#"{"cmd":"status"}"#);
    assert_eq!(status["ok"], json!(true));
    // Two requests in one write, answered in order.
    s.write_all(b"{\"cmd\":\"partner-down\"}\n{\"cmd\":\"reload\"}\n")
        .unwrap();
    let mut a = String::new();
    r.read_line(&mut a).unwrap();
    assert!(a.contains("no failover relationship"), "{a}");
    a.clear();
    r.read_line(&mut a).unwrap();
    assert!(a.contains("no changes"), "{a}");

    // Connection limit: 16 served, the 17th told so.
    let mut held: Vec<_> = (1..MAX_CONNECTIONS).map(|_| connect(&path)).collect();
    for (s, r) in held.iter_mut() {
        assert_eq!(roundtrip(s, r, br#"{"cmd":"reload"}"#)["ok"], json!(true));
    }
    let (_extra, mut extra_r) = connect(&path);
    let mut refused = String::new();
    extra_r.read_line(&mut refused).unwrap();
    assert!(
        refused.contains("too many control connections"),
        "{refused}"
    );
    drop(held);

    // An over-long line: an error, then the connection is closed.
    let long = vec![b'x'; MAX_REQUEST_BYTES + 10];
    let _ = s.write_all(&long);
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than"), "{answer}");
    answer.clear();
    assert_eq!(r.read_line(&mut answer).unwrap(), 0);

    // The client side, text and JSON.
    let mut out = Vec::new();
    let args = |command| CtlArgs {
        socket: path.clone(),
        command,
    };
    ctl_with(args(CtlCommand::Status { json: true }), &mut out, false).unwrap();
    let parsed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(parsed["failover"], Value::Null);
    out.clear();
    ctl_with(args(CtlCommand::Top { count: Some(2) }), &mut out, false).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert_eq!(
        text.matches("ringlease top").count(),
        1,
        "not live: one snapshot"
    );
    assert!(!text.contains('\x1b'));
    let e = ctl_with(args(CtlCommand::PartnerDown), &mut out, false).unwrap_err();
    assert_eq!(e, "no failover relationship is configured");

    // The metrics endpoint.
    let addr = handle.metrics_addr().unwrap();
    let body = http_get(addr, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("application/openmetrics-text"), "{body}");
    assert!(http_get(addr, "/nope").starts_with("HTTP/1.1 404"));

    drop(handle);
    assert!(!path.exists(), "the socket file is removed on drop");

    // A stale socket file (no server) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    assert!(path.exists());
    let handle = start_with(f.state.clone(), server_stop, &ops, &[]).unwrap();
    let (mut s, mut r) = connect(&path);
    assert_eq!(
        roundtrip(&mut s, &mut r, br#"{"cmd":"status"}"#)["ok"],
        json!(true)
    );
    drop(handle);
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn a_path_that_is_not_a_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    std::fs::write(&path, "x").unwrap();
    let e = server::bind(&path).err().unwrap();
    assert!(e.contains("not a socket"), "{e}");
}

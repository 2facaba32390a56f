//! The control socket and the metrics endpoint against a real server: DORA exchanges from a
//! relay agent on loopback, then `status`, `lease`, `release`, `reload`, `top` over the socket
//! and a scrape of `/metrics`.
//!
//! The server runs in-process (`shell::start` + `control::start`), and as the real binary
//! (`ringlease serve` + `ringlease ctl`). Loopback only: the relay is 127.0.0.3, the server
//! 127.0.0.1, on a port the kernel finds free.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlease::config::Config;
use ringlease::control::{self, Client, CtlArgs, CtlCommand};
use serde_json::{json, Value};

use common::relay::{Relay, RELAY, SERVER};

/// Latency bucket bounds plus +Inf.
const BUCKETS: usize = control::LATENCY_BOUNDS_US.len() + 1;

/// A UDP port free on both the server's and the relay's address right now (the kernel's
/// choice, so concurrent test runs do not collide).
fn port() -> u16 {
    for _ in 0..50 {
        let server = UdpSocket::bind(SocketAddrV4::new(SERVER, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        if UdpSocket::bind(SocketAddrV4::new(RELAY, port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port on loopback");
}

fn config_text(port: u16, dir: &Path, pools: &str, metrics: &str) -> String {
    format!(
        r#"
[server]
listen = ["{SERVER}:{port}"]
server_id = "{SERVER}"
workers = 2
lease_dir = "{dir}/leases"
durability = "sync"

[[subnet]]
prefix = "127.0.0.0/8"
pools = ["{pools}"]
lease_time = 3600

[control]
socket = "{dir}/run/control.sock"

[metrics]
listen = "{metrics}"
"#,
        dir = dir.display()
    )
}

/// Polls `f` until it returns Some, for at most `limit`.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// Checks every line of an exposition (a comment, or `name{labels} value`) and returns its
/// samples by series.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            let labels = &series[name_end + 1..];
            let labels = labels
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels: {line}"));
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                assert!(
                    v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                    "{line}"
                );
            }
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "series twice: {line}"
        );
    }
    samples
}

/// A histogram's buckets are cumulative and end with +Inf = count.
fn check_histogram(m: &BTreeMap<String, f64>, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), BUCKETS, "{name}: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name} buckets not cumulative: {buckets:?}"
    );
    let &(le, last) = buckets.last().unwrap();
    assert_eq!(le, f64::INFINITY);
    assert_eq!(last, m[&format!("{name}_count")], "{name}: +Inf != count");
    assert!(m.contains_key(&format!("{name}_sum")));
    buckets
}

fn ctl(socket: &Path, command: CtlCommand, live: bool) -> Result<String, String> {
    let mut out = Vec::new();
    control::ctl_with(
        CtlArgs {
            socket: socket.to_path_buf(),
            command,
        },
        &mut out,
        live,
    )?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn control_and_metrics_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let port = port();
    let config_path = dir.path().join("ringlease.toml");
    let text = config_text(port, dir.path(), "127.20.0.1-127.20.0.254", "127.0.0.1:0");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::from_toml(&text).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = ringlease::shell::start(&config, stop).expect("start the server");
    let handle = control::start(&running, &config, Some(config_path.clone()), &[])
        .expect("start the control interface");
    let socket = handle.socket_path().to_path_buf();
    assert_eq!(socket, dir.path().join("run/control.sock"));

    // Root-only by file mode.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Traffic: 20 clients with leases, one with an offer only, one bad datagram.
    let relay = Relay::new(port);
    let leased: Vec<Ipv4Addr> = (0..20).map(|i| relay.dora(i).expect("lease")).collect();
    let offered = relay.discover(100).expect("offer");
    relay.garbage();

    let mut client = Client::connect(&socket).unwrap();
    let status = wait_for(Duration::from_secs(5), || {
        let s = client.call(&json!({"cmd": "status"})).unwrap();
        let total = &s["total"];
        let done = total["received"] == json!(42)
            && total["sent"] == json!(41)
            && s["subnets"][0]["offered"] == json!(1);
        done.then_some(s)
    })
    .unwrap_or_else(|| panic!("status never showed the traffic"));
    let total = &status["total"];
    assert_eq!(total["received_by_type"]["DHCPDISCOVER"], json!(21));
    assert_eq!(total["received_by_type"]["DHCPREQUEST"], json!(20));
    assert_eq!(total["sent_by_type"]["DHCPOFFER"], json!(21));
    assert_eq!(total["sent_by_type"]["DHCPACK"], json!(20));
    assert_eq!(total["drops"]["truncated"], json!(1));
    assert_eq!(total["latency_us"]["count"], json!(41));
    assert!(total["lease_log_sync_us"]["count"].as_u64().unwrap() >= 1);
    assert_eq!(status["failover"], Value::Null);
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    assert_eq!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["received"].as_u64().unwrap())
            .sum::<u64>(),
        42
    );
    let subnet = &status["subnets"][0];
    assert_eq!(subnet["subnet"], json!("127.0.0.0/8"));
    assert_eq!(subnet["pool_size"], json!(254));
    assert_eq!(subnet["bound"], json!(20));
    assert_eq!(subnet["offered"], json!(1));

    // The same as text.
    let text = ctl(&socket, CtlCommand::Status { json: false }, false).unwrap();
    assert!(text.contains("2 workers"), "{text}");
    assert!(text.contains("failover: not configured"), "{text}");
    assert!(text.contains("truncated 1"), "{text}");
    assert!(text.contains("127.0.0.0/8"), "{text}");

    // Scrape while the lease counts above are current.
    let addr = handle.metrics_addr().expect("metrics are on");
    assert!(addr.ip().is_loopback());
    let (head, body) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/openmetrics-text"));
    assert!(body.ends_with("# EOF\n"));
    let m = parse_exposition(&body);
    let get = |series: &str| {
        *m.get(series)
            .unwrap_or_else(|| panic!("{series} missing from:\n{body}"))
    };
    assert_eq!(
        get("ringlease_dhcp_received_total{type=\"DHCPDISCOVER\"}"),
        21.0
    );
    assert_eq!(
        get("ringlease_dhcp_received_total{type=\"DHCPREQUEST\"}"),
        20.0
    );
    assert_eq!(get("ringlease_dhcp_sent_total{type=\"DHCPOFFER\"}"), 21.0);
    assert_eq!(get("ringlease_dhcp_sent_total{type=\"DHCPACK\"}"), 20.0);
    assert_eq!(get("ringlease_dhcp_sent_total{type=\"DHCPNAK\"}"), 0.0);
    assert_eq!(get("ringlease_drops_total{reason=\"truncated\"}"), 1.0);
    assert_eq!(get("ringlease_drops_total{reason=\"pool_exhausted\"}"), 0.0);
    assert_eq!(get("ringlease_datagrams_received_total"), 42.0);
    assert_eq!(
        get("ringlease_leases{subnet=\"127.0.0.0/8\",state=\"bound\"}"),
        20.0
    );
    assert_eq!(
        get("ringlease_leases{subnet=\"127.0.0.0/8\",state=\"offered\"}"),
        1.0
    );
    assert_eq!(get("ringlease_pool_size{subnet=\"127.0.0.0/8\"}"), 254.0);
    let ratio = get("ringlease_pool_utilisation_ratio{subnet=\"127.0.0.0/8\"}");
    assert!((ratio - 21.0 / 254.0).abs() < 1e-9, "{ratio}");
    assert!(get("ringlease_uptime_seconds") > 0.0);
    let backend = running.backend.name();
    assert_eq!(
        get(&format!(
            "ringlease_info{{version=\"{}\",backend=\"{backend}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert_eq!(get("ringlease_reply_latency_seconds_count"), 41.0);
    check_histogram(&m, "ringlease_reply_latency_seconds");
    check_histogram(&m, "ringlease_lease_log_sync_seconds");
    assert!(get("ringlease_lease_log_sync_seconds_count") >= 1.0);
    assert!(http_get(addr, "/other").0.starts_with("HTTP/1.1 404"));

    // lease --hw finds the client, lease --ip shows it.
    let mac = |i: u32| {
        Relay::mac(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let out = ctl(
        &socket,
        CtlCommand::Lease {
            ip: None,
            hw: Some(mac(7)),
            client_id: None,
        },
        false,
    )
    .unwrap();
    assert!(
        out.starts_with(&format!("{} bound for ", leased[7])),
        "{out}"
    );
    let by_hw = client.call(&json!({"cmd": "lease", "hw": mac(7)})).unwrap();
    assert_eq!(by_hw["leases"][0]["ip"], json!(leased[7].to_string()));
    assert_eq!(
        by_hw["leases"][0]["client"],
        json!(format!("hw {}", mac(7)))
    );
    let by_ip = client
        .call(&json!({"cmd": "lease", "ip": offered}))
        .unwrap();
    assert_eq!(by_ip["leases"][0]["state"], json!("offered"));

    // release --ip frees the lease; a later query shows it released, and the log has it.
    let out = ctl(&socket, CtlCommand::Release { ip: leased[7] }, false).unwrap();
    assert_eq!(out, format!("released {} (was hw {})\n", leased[7], mac(7)));
    let after = client
        .call(&json!({"cmd": "lease", "ip": leased[7]}))
        .unwrap();
    assert_eq!(after["leases"][0]["state"], json!("released"));
    assert_eq!(
        client.call(&json!({"cmd": "lease", "hw": mac(7)})).unwrap()["leases"],
        json!([])
    );
    let replayed = ringlease::leaselog::verify(&dir.path().join("leases")).unwrap();
    assert!(replayed
        .bindings
        .iter()
        .any(|b| b.ip == leased[7] && b.state == ringlease::proto::lease::LeaseState::Released));
    let again = ctl(&socket, CtlCommand::Release { ip: leased[7] }, false).unwrap_err();
    assert!(again.contains("no running lease"), "{again}");

    // Malformed JSON: an error answer, and the connection goes on.
    let mut raw = UnixStream::connect(&socket).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(raw.try_clone().unwrap());
    raw.write_all(b"{\"cmd\": \"status\"\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["ok"], json!(false), "{line}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed request"));
    raw.write_all(b"{\"cmd\":\"partner-down\"}\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({"ok": false, "error": "no failover relationship is configured"})
    );

    // top: live screens from deltas, bounded by --count.
    for i in 200..205 {
        relay.dora(i).expect("lease");
    }
    let screens = ctl(&socket, CtlCommand::Top { count: Some(2) }, true).unwrap();
    assert_eq!(screens.matches("\x1b[H\x1b[2J").count(), 2, "{screens}");
    assert!(screens.contains("reply latency"), "{screens}");
    assert!(screens.contains("failover: not configured"), "{screens}");
    let snapshot = ctl(&socket, CtlCommand::Top { count: None }, false).unwrap();
    assert!(!snapshot.contains('\x1b'));

    // reload: unchanged; then new DNS servers and lease time, applied live; then a change
    // that needs a restart, refused.
    assert_eq!(
        ctl(&socket, CtlCommand::Reload, false).unwrap(),
        "no changes\n"
    );
    let before = relay.offer(300);
    assert_eq!((before.lease_time_s, before.dns), (Some(3600), None));
    let live = config_text(port, dir.path(), "127.20.0.1-127.20.0.254", "127.0.0.1:0").replace(
        "lease_time = 3600",
        "lease_time = 7200\ndns = [\"127.0.0.53\", \"127.0.0.54\"]",
    );
    std::fs::write(&config_path, &live).unwrap();
    let reloaded = client.call(&json!({"cmd": "reload"})).unwrap();
    assert_eq!(reloaded["changed"], json!(true), "{reloaded}");
    assert_eq!(
        reloaded["applied"],
        json!([
            "subnet[0].lease_time",
            "subnet[0].renewal_time",
            "subnet[0].rebinding_time",
            "subnet[0].dns",
        ])
    );
    let new_dns = Some(vec![127, 0, 0, 53, 127, 0, 0, 54]);
    let after = relay.offer(301);
    assert_eq!(after.lease_time_s, Some(7200));
    assert_eq!(after.dns, new_dns);
    let ack = relay.try_dora(302).unwrap();
    assert_eq!(ack.lease_time_s, Some(7200));
    assert_eq!(
        ctl(&socket, CtlCommand::Reload, false).unwrap(),
        "no changes\n",
        "compared with what runs now"
    );

    std::fs::write(
        &config_path,
        live.replace("127.20.0.1-127.20.0.254", "127.20.0.1-127.20.1.254")
            .replace("lease_time = 7200", "lease_time = 600"),
    )
    .unwrap();
    let refused = ctl(&socket, CtlCommand::Reload, false).unwrap_err();
    assert!(
        refused.contains("subnet[0].pools: restart needed; nothing was changed"),
        "{refused}"
    );
    // Still serving with the settings of the last reload, from the old pool.
    let still = relay.offer(303);
    assert_eq!(still.yiaddr.octets()[..3], [127, 20, 0]);
    assert_eq!((still.lease_time_s, still.dns), (Some(7200), new_dns));

    drop(client);
    drop(handle);
    assert!(!socket.exists(), "the socket file is removed");
    running.join();
}

/// Reloads while a relay agent runs DORA exchanges back to back: every request is answered,
/// each with the settings of before or after a reload.
#[test]
fn reload_under_load_drops_nothing() {
    const EXCHANGES: u32 = 2_000;
    const RELOADS: u32 = 20;
    let dir = tempfile::tempdir().unwrap();
    let port = port();
    let config_path = dir.path().join("ringlease.toml");
    let text = config_text(port, dir.path(), "127.30.0.1-127.30.15.254", "off")
        .replace("durability = \"sync\"", "durability = \"async\"");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::from_toml(&text).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = ringlease::shell::start(&config, stop).expect("start the server");
    let handle = control::start(&running, &config, Some(config_path.clone()), &[])
        .expect("start the control interface");
    let mut client = Client::connect(handle.socket_path()).unwrap();

    let done = Arc::new(AtomicU32::new(0));
    // Reloads completed: the relay waits for the n-th halfway through its n-th stretch, so each
    // reload overlaps exchanges yet every stretch ends with the reloaded settings.
    let reloaded = Arc::new(AtomicU32::new(0));
    let relay = {
        let done = done.clone();
        let reloaded = reloaded.clone();
        std::thread::spawn(move || {
            let relay = Relay::new(port);
            let mut failures = Vec::new();
            let mut seen = [0u32; 2];
            let stretch = EXCHANGES / RELOADS;
            for i in 0..EXCHANGES {
                if i % stretch == stretch / 2 {
                    let n = i / stretch;
                    wait_for(Duration::from_secs(30), || {
                        (reloaded.load(Ordering::Relaxed) > n).then_some(())
                    })
                    .expect("the reloads make progress");
                }
                match relay.try_dora(i) {
                    Ok(ack) if ack.lease_time_s == Some(3600) => seen[0] += 1,
                    Ok(ack) if ack.lease_time_s == Some(7200) => seen[1] += 1,
                    Ok(ack) => failures.push(format!("client {i}: {ack:?}")),
                    Err(e) => failures.push(e),
                }
                done.store(i + 1, Ordering::Relaxed);
            }
            (failures, seen)
        })
    };

    // Spread the reloads over the run: the n-th once the relay is n/RELOADS of the way.
    for n in 0..RELOADS {
        let at = n * EXCHANGES / RELOADS;
        wait_for(Duration::from_secs(30), || {
            (done.load(Ordering::Relaxed) >= at || relay.is_finished()).then_some(())
        })
        .expect("the relay makes progress");
        let (lease_time, dns) = if n % 2 == 0 {
            (7200, "127.0.0.53")
        } else {
            (3600, "127.0.0.54")
        };
        let new = text.replace(
            "lease_time = 3600",
            &format!("lease_time = {lease_time}\ndns = [\"{dns}\"]"),
        );
        std::fs::write(&config_path, new).unwrap();
        let result = client.call(&json!({"cmd": "reload"})).unwrap();
        assert_eq!(result["changed"], json!(true), "reload {n}: {result}");
        reloaded.store(n + 1, Ordering::Relaxed);
    }
    let (failures, seen) = relay.join().expect("the relay thread");
    assert!(
        failures.is_empty(),
        "{} of {EXCHANGES} exchanges failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        seen.iter().all(|&n| n > 0),
        "both lease times were granted during the run: {seen:?}"
    );
    let status = client.call(&json!({"cmd": "status"})).unwrap();
    assert_eq!(status["total"]["dropped"], json!(0), "{status}");

    drop(client);
    drop(handle);
    running.join();
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ringlease(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringlease"))
        .args(args)
        .output()
        .unwrap()
}

/// The same through the binary: `ringlease serve` opens the socket and the endpoint from its
/// configuration, and `ringlease ctl` reaches it.
#[test]
fn control_and_metrics_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let port = port();
    let metrics = std::net::TcpListener::bind((SERVER, 0))
        .and_then(|l| l.local_addr())
        .unwrap();
    let config_path = dir.path().join("ringlease.toml");
    let text = config_text(
        port,
        dir.path(),
        "127.21.0.1-127.21.0.254",
        &metrics.to_string(),
    );
    std::fs::write(&config_path, text).unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _server = Child(
        Command::new(env!("CARGO_BIN_EXE_ringlease"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let socket: PathBuf = dir.path().join("run/control.sock");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for(Duration::from_secs(20), || {
        (read_log().contains("ready") && socket.exists()).then_some(())
    })
    .unwrap_or_else(|| panic!("no control socket:\n{}", read_log()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let relay = Relay::new(port);
    let ip = relay.dora(1).expect("lease");
    let socket_arg = socket.to_str().unwrap();
    let out = wait_for(Duration::from_secs(5), || {
        let out = ringlease(&["ctl", "--socket", socket_arg, "status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        (status["total"]["sent_by_type"]["DHCPACK"] == json!(1)).then_some(status)
    })
    .expect("status shows the ACK");
    assert_eq!(out["failover"], Value::Null);
    let out = ringlease(&[
        "ctl",
        "--socket",
        socket_arg,
        "lease",
        "--hw",
        "02:dd:00:00:00:01",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{ip} bound")));
    let out = ringlease(&["ctl", "--socket", socket_arg, "partner-down"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no failover relationship"));
    let out = ringlease(&["ctl", "--socket", socket_arg, "top", "--count", "1"]);
    assert!(out.status.success(), "{out:?}");

    let (head, body) = http_get(metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let m = parse_exposition(&body);
    assert_eq!(m["ringlease_dhcp_sent_total{type=\"DHCPACK\"}"], 1.0);
    check_histogram(&m, "ringlease_reply_latency_seconds");
}

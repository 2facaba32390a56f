//! `ringlease ctl`: the client side of the control socket, and how its answers are shown.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{CtlArgs, CtlCommand, LATENCY_BOUNDS_US};

/// How long the client waits for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `top` redraws.
const TOP_INTERVAL: Duration = Duration::from_secs(1);

/// A connection to a server's control socket.
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, String> {
        let stream = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot reach the server at {}: {e} (is it running? does --socket match its \
                 [control] socket? root only)",
                path.display()
            )
        })?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(Client {
            writer: stream,
            reader,
        })
    }

    /// Sends one request and returns the server's whole response object.
    pub fn call_raw(&mut self, request: &Value) -> Result<Value, String> {
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("cannot send to the server: {e}"))?;
        let mut answer = String::new();
        match self.reader.read_line(&mut answer) {
            Ok(0) => return Err("the server closed the connection without answering".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("no answer from the server: {e}")),
        }
        serde_json::from_str(&answer).map_err(|e| format!("unreadable answer from the server: {e}"))
    }

    /// Sends one request: its `result`, or its `error` as Err.
    pub fn call(&mut self, request: &Value) -> Result<Value, String> {
        let response = self.call_raw(request)?;
        if response["ok"] == json!(true) {
            Ok(response.get("result").cloned().unwrap_or(Value::Null))
        } else {
            Err(response["error"]
                .as_str()
                .unwrap_or("the server answered with an unreadable error")
                .to_string())
        }
    }
}

/// `ringlease ctl …`: prints to stdout; `top` is live only on a terminal.
pub fn ctl_main(args: CtlArgs) -> Result<(), String> {
    let live = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    ctl_with(args, &mut out, live)
}

/// `ringlease ctl …` writing to `out`. With `live`, `top` redraws with ANSI escapes every
/// second; without, it writes one plain snapshot and returns.
pub fn ctl_with(args: CtlArgs, out: &mut dyn Write, live: bool) -> Result<(), String> {
    let mut client = Client::connect(&args.socket)?;
    let text = match args.command {
        CtlCommand::Status { json } => {
            let status = client.call(&json!({"cmd": "status"}))?;
            if json {
                let mut text = serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?;
                text.push('\n');
                text
            } else {
                render_status(&status)
            }
        }
        CtlCommand::Lease { ip, hw, client_id } => {
            let request = match (ip, hw, client_id) {
                (Some(ip), None, None) => json!({"cmd": "lease", "ip": ip}),
                (None, Some(hw), None) => json!({"cmd": "lease", "hw": hw}),
                (None, None, Some(id)) => json!({"cmd": "lease", "client_id": id}),
                _ => return Err("give exactly one of --ip, --hw, --client-id".into()),
            };
            render_lease(&client.call(&request)?)
        }
        CtlCommand::Release { ip } => {
            let result = client.call(&json!({"cmd": "release", "ip": ip}))?;
            match result["client"].as_str() {
                Some(c) => format!("released {ip} (was {c})\n"),
                None => format!("released {ip}\n"),
            }
        }
        CtlCommand::PartnerDown => {
            client.call(&json!({"cmd": "partner-down"}))?;
            "partner marked down\n".into()
        }
        CtlCommand::Reload => {
            let result = client.call(&json!({"cmd": "reload"}))?;
            format!("{}\n", result["message"].as_str().unwrap_or("reloaded"))
        }
        CtlCommand::Top { count } => return top(&mut client, out, live, count),
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the answer: {e}"))
}

fn top(
    client: &mut Client,
    out: &mut dyn Write,
    live: bool,
    count: Option<u32>,
) -> Result<(), String> {
    let mut state = TopState::default();
    let frames = if live { count } else { Some(1) };
    let mut shown = 0u32;
    loop {
        let started = Instant::now();
        let status = client.call(&json!({"cmd": "status"}))?;
        let frame = render_top(&mut state, &status);
        let text = if live {
            format!("\x1b[H\x1b[2J{frame}")
        } else {
            frame
        };
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write: {e}"))?;
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        std::thread::sleep(TOP_INTERVAL.saturating_sub(started.elapsed()));
    }
}

/// What `top` remembers between screens, to show rates from counter deltas.
#[derive(Default)]
pub struct TopState {
    previous: Option<(Instant, Value)>,
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn duration_text(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

fn failover_text(status: &Value) -> String {
    let Some(relationships) = status["failover"].as_array() else {
        return "failover: not configured".into();
    };
    let mut out = String::new();
    for r in relationships {
        let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
        let lag = &r["replication_lag_ms"];
        let _ = write!(
            out,
            "failover {} ({}, partner {}): {} since {} — {}\n  partner state {}, link {}, \
             queued {} outstanding BNDUPD {}, sent {} updates in {} BNDUPD, applied {} from the partner, \
             lag ms p50 {} p99 {} max {}",
            text(&r["name"]),
            text(&r["role"]),
            text(&r["partner"]),
            text(&r["state"]),
            u(&r["state_since"]),
            text(&r["allowed"]),
            text(&r["partner_state"]),
            text(&r["link"]),
            u(&r["queued"]),
            u(&r["outstanding_bndupd"]),
            u(&r["updates_sent"]),
            u(&r["bndupd_sent"]),
            u(&r["updates_applied"]),
            lag["p50"],
            lag["p99"],
            lag["max"],
        );
    }
    out
}

fn latency_text(label: &str, h: &Value) -> String {
    if u(&h["count"]) == 0 {
        return format!("{label}: no samples\n");
    }
    format!(
        "{label} (us): p50 {} p90 {} p99 {} p99.9 {} max {} ({} samples)\n",
        u(&h["p50"]),
        u(&h["p90"]),
        u(&h["p99"]),
        u(&h["p999"]),
        u(&h["max"]),
        u(&h["count"])
    )
}

fn subnets_text(status: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>10} {:>8} {:>8} {:>7}",
        "subnet", "pool", "bound", "offered", "declined", "used"
    );
    for s in status["subnets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>8} {:>8} {:>6.2}%",
            s["subnet"].as_str().unwrap_or("?"),
            u(&s["pool_size"]),
            u(&s["bound"]),
            u(&s["offered"]),
            u(&s["declined"]),
            f(&s["utilisation"]) * 100.0
        );
        if let (Some(ours), Some(partner)) = (s["free_ours"].as_u64(), s["free_partner"].as_u64()) {
            let _ = writeln!(
                out,
                "{:<20} free: {ours} ours, {partner} the failover partner's",
                ""
            );
        }
    }
    out
}

/// `ringlease ctl status` as text.
pub fn render_status(status: &Value) -> String {
    let mut out = String::new();
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "ringlease {}, up {}, backend {}, {} workers",
        status["version"].as_str().unwrap_or("?"),
        duration_text(f(&status["uptime_s"]) as u64),
        status["backend"].as_str().unwrap_or("?"),
        workers.len()
    );
    let _ = writeln!(out, "{}", failover_text(status));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>6} {:>10} {:>10} {:>9} {:>12} {:>12} {:>10}",
        "worker", "rx/s", "tx/s", "drops/s", "received", "sent", "dropped"
    );
    for w in &workers {
        let _ = writeln!(
            out,
            "{:>6} {:>10.1} {:>10.1} {:>9.1} {:>12} {:>12} {:>10}",
            u(&w["worker"]),
            f(&w["rx_per_s"]),
            f(&w["tx_per_s"]),
            f(&w["drops_per_s"]),
            u(&w["received"]),
            u(&w["sent"]),
            u(&w["dropped"])
        );
    }
    let total = &status["total"];
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<14} {:>12} {:>12}", "message", "in", "out");
    if let (Some(rx), Some(tx)) = (
        total["received_by_type"].as_object(),
        total["sent_by_type"].as_object(),
    ) {
        for (name, count) in rx {
            let sent = u(&tx[name]);
            if u(count) + sent > 0 {
                let _ = writeln!(out, "{name:<14} {:>12} {sent:>12}", u(count));
            }
        }
    }
    let drops: Vec<String> = total["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| u(n) > 0)
        .map(|(reason, n)| format!("{reason} {}", u(n)))
        .collect();
    if drops.is_empty() {
        let _ = writeln!(out, "drops: none");
    } else {
        let _ = writeln!(out, "drops: {}", drops.join(", "));
    }
    if u(&total["send_failures"]) > 0 {
        let _ = writeln!(out, "send failures: {}", u(&total["send_failures"]));
    }
    out.push_str(&latency_text("reply latency", &total["latency_us"]));
    out.push_str(&latency_text("lease log sync", &total["lease_log_sync_us"]));
    let _ = writeln!(out);
    out.push_str(&subnets_text(status));
    let log = &status["lease_log"];
    let _ = writeln!(
        out,
        "lease log: {} ({:.1} MiB on disk)",
        log["dir"].as_str().unwrap_or("?"),
        u(&log["disk_bytes"]) as f64 / (1 << 20) as f64
    );
    out
}

/// `ringlease ctl lease` as text: one line per lease.
pub fn render_lease(result: &Value) -> String {
    let leases = result["leases"].as_array().cloned().unwrap_or_default();
    if leases.is_empty() {
        return "no lease\n".into();
    }
    let mut out = String::new();
    for l in &leases {
        let state = l["state"].as_str().unwrap_or("?");
        let _ = write!(out, "{} {state}", l["ip"].as_str().unwrap_or("?"));
        if let Some(left) = l["expires_in_s"].as_u64() {
            let _ = write!(
                out,
                " for {} (until {})",
                duration_text(left),
                u(&l["expires_s"])
            );
        } else if let Some(at) = l["expires_s"].as_u64() {
            let _ = write!(out, " since {at}");
        }
        if let Some(client) = l["client"].as_str() {
            let _ = write!(out, ", {client}");
        }
        let _ = write!(out, ", subnet {}", l["subnet"].as_str().unwrap_or("?"));
        if l["in_pool"] == json!(false) {
            let _ = write!(out, ", outside the pools");
        }
        if let Some(owner) = l["reserved_for"].as_str() {
            let _ = write!(out, ", reserved for {owner}");
        }
        out.push('\n');
    }
    out
}

/// One `top` screen from a status answer (rates from the counters' change since the previous
/// screen; the server's own one-second rates on the first).
pub fn render_top(state: &mut TopState, status: &Value) -> String {
    let now = Instant::now();
    let previous = state.previous.take();
    let elapsed = previous
        .as_ref()
        .map(|(at, _)| now.duration_since(*at).as_secs_f64())
        .filter(|&s| s > 0.0);
    let prev = previous.as_ref().map(|(_, v)| v);
    let mut out = String::new();
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "ringlease top: {} up {}, backend {}, {} workers{}",
        status["version"].as_str().unwrap_or("?"),
        duration_text(f(&status["uptime_s"]) as u64),
        status["backend"].as_str().unwrap_or("?"),
        workers.len(),
        if elapsed.is_some() {
            ""
        } else {
            " (rates: server's last second)"
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>6} {:>10} {:>10} {:>9}",
        "worker", "rx/s", "tx/s", "drops/s"
    );
    let rate = |current: &Value, before: Option<&Value>, key: &str, server_key: &str| -> f64 {
        match (elapsed, before) {
            (Some(secs), Some(before)) => {
                u(&current[key]).saturating_sub(u(&before[key])) as f64 / secs
            }
            _ => f(&current[server_key]),
        }
    };
    let (mut rx, mut tx, mut dr) = (0.0, 0.0, 0.0);
    for (i, w) in workers.iter().enumerate() {
        let before = prev.and_then(|p| p["workers"].get(i));
        let r = [
            rate(w, before, "received", "rx_per_s"),
            rate(w, before, "sent", "tx_per_s"),
            rate(w, before, "dropped", "drops_per_s"),
        ];
        rx += r[0];
        tx += r[1];
        dr += r[2];
        let _ = writeln!(
            out,
            "{:>6} {:>10.1} {:>10.1} {:>9.1}",
            u(&w["worker"]),
            r[0],
            r[1],
            r[2]
        );
    }
    let _ = writeln!(out, "{:>6} {rx:>10.1} {tx:>10.1} {dr:>9.1}", "total");
    let _ = writeln!(out);

    // Drops by reason: per second since the last screen, or totals on the first.
    let total = &status["total"];
    let drops: Vec<String> = total["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(reason, n)| {
            let n = u(n);
            match (elapsed, prev) {
                (Some(secs), Some(p)) => {
                    let d = n.saturating_sub(u(&p["total"]["drops"][reason]));
                    (d > 0).then(|| format!("{reason} {:.1}/s", d as f64 / secs))
                }
                _ => (n > 0).then(|| format!("{reason} {n} total")),
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "drops: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
    let _ = writeln!(out);

    // Latency of the replies since the last screen (all replies on the first).
    let buckets = |v: &Value| -> Vec<u64> {
        v["total"]["latency_us"]["buckets"]
            .as_array()
            .map(|b| b.iter().map(|x| u(&x["count"])).collect())
            .unwrap_or_default()
    };
    let now_b = buckets(status);
    let prev_b = prev.map(buckets).unwrap_or_default();
    let delta: Vec<u64> = now_b
        .iter()
        .enumerate()
        .map(|(i, &n)| n.saturating_sub(prev_b.get(i).copied().unwrap_or(0)))
        .collect();
    let replies: u64 = delta.iter().sum();
    let _ = writeln!(
        out,
        "reply latency, {} ({replies} replies):",
        if prev.is_some() {
            "last interval"
        } else {
            "since start"
        }
    );
    let peak = delta.iter().copied().max().unwrap_or(0).max(1);
    for (i, &n) in delta.iter().enumerate() {
        let label = match LATENCY_BOUNDS_US.get(i) {
            Some(&us) if us >= 1_000_000 => format!("<= {} s", us as f64 / 1e6),
            Some(&us) if us >= 1000 => format!("<= {} ms", us as f64 / 1000.0),
            Some(&us) => format!("<= {us} us"),
            None => "> 1 s".to_string(),
        };
        let bar = "#".repeat(((n * 40).div_ceil(peak)) as usize);
        let _ = writeln!(out, "  {label:>10} {n:>9} {bar}");
    }
    out.push_str(&latency_text("  since start", &total["latency_us"]));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{}{}",
        failover_text(status),
        if status["failover"].is_null() {
            " (no replication lag)"
        } else {
            ""
        }
    );
    let _ = writeln!(out);
    out.push_str(&subnets_text(status));
    state.previous = Some((now, status.clone()));
    out
}

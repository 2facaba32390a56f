//! DHCP failover between two real `ringlease serve` processes (issue "Failover v4 part 1"):
//! a primary and a secondary in one network namespace of the test's own, talking over TCP on
//! the namespace's loopback, with clients played by a relay agent in the same namespace.
//!
//! What is guarded: a cold pair reaches NORMAL; a lease granted by the primary appears on the
//! secondary with the same client and an expiry no shorter than the client's; 100,000 leases
//! all arrive; a secondary killed with SIGKILL catches up after a restart; a shared secret
//! keeps a mismatched partner out and lets the matching one in; hostile bytes from the
//! partner's address close that connection, not the server; and Wireshark's dissector, an
//! implementation nobody here wrote, decodes the whole session.
//!
//! Latencies are measured and printed, never asserted; every wait is bounded by a condition
//! timeout. Needs root (namespaces); test 7 needs `tshark`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::failover::{
    is_normal, loadgen_bin, log_dump, show, state_changes, summarize, tail, told_expiries,
    unix_now_s, wait_replicated, FailoverCfg, Granted, Node, NsRelay, Pair, Trace, Traces,
    BIG_POOL, DHCP_PORT, FAILOVER_PORT, PRIMARY, RELAY, SECONDARY, SMALL_POOL,
};
use common::{
    read_lossy, require_root, require_tool, run_bounded, serial, wait_for, Child, TempDir,
};
use serde_json::{json, Value};

/// Bound on a pair settling into NORMAL (timers are seconds; this is generous).
const SETTLE: Duration = Duration::from_secs(60);
/// Bound on a handful of leases reaching the secondary.
const REPLICATE: Duration = Duration::from_secs(30);

/// A started pair of the default (hot standby, no secret) configuration in NORMAL.
fn normal_pair(tag: &str, pool: &str) -> (Pair, Traces) {
    let cfg = FailoverCfg::default();
    let mut pair = Pair::new(tag, pool, &cfg, &cfg);
    pair.start();
    let traces = pair.wait_normal(SETTLE);
    (pair, traces)
}

/// The fields of a relationship in `ctl status` that operators and these tests rely on.
fn check_status_shape(fo: &Value, role: &str) {
    for key in [
        "name",
        "role",
        "dialect",
        "state",
        "state_since",
        "link",
        "partner_state",
        "mclt",
        "queued",
        "outstanding_bndupd",
        "bndupd_sent",
        "bndack_received",
        "bndupd_received",
        "updates_applied",
        "updates_rejected",
        "replication_lag_ms",
    ] {
        assert!(fo.get(key).is_some(), "{role}: status has no `{key}`: {fo}");
    }
    for key in ["p50", "p99", "max", "count"] {
        assert!(
            fo["replication_lag_ms"].get(key).is_some(),
            "{role}: replication_lag_ms has no `{key}`: {fo}"
        );
    }
    assert_eq!(fo["name"], json!("pair-a"), "{role}: {fo}");
    assert_eq!(fo["role"], json!(role), "{role}: {fo}");
    assert_eq!(fo["dialect"], json!("ringlease"), "{role}: {fo}");
    assert_eq!(fo["mclt"], json!(3600), "{role}: {fo}");
    let since = fo["state_since"]
        .as_u64()
        .expect("state_since is unix seconds");
    let now = unix_now_s();
    assert!(
        since <= now + 1 && since + 600 > now,
        "{role}: state_since {since} is not a recent unix time (now {now})"
    );
}

/// `ringlease ctl --socket S status --json`, through the binary.
fn ctl_status_json(node: &Node) -> Value {
    let mut c = Command::new(common::ringlease_bin());
    c.arg("ctl")
        .arg("--socket")
        .arg(node.socket())
        .args(["status", "--json"]);
    let out = run_bounded(c, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "ctl status --json for {}: {out:?}",
        node.name()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl status --json is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Test 1: Cold start of both servers: each reports NORMAL, link up and its partner NORMAL, through
/// the control socket and through `ringlease ctl`; both then stop cleanly on SIGTERM.
#[test]
fn pair_reaches_normal() {
    let _g = serial();
    require_root();
    let started = Instant::now();
    let (mut pair, traces) = normal_pair("fonorm", SMALL_POOL);
    eprintln!(
        "NORMAL after {:.2} s\n  primary:   {}\n  secondary: {}",
        started.elapsed().as_secs_f64(),
        traces.primary,
        traces.secondary
    );
    for (node, role) in [(&pair.primary, "primary"), (&pair.secondary, "secondary")] {
        let status = ctl_status_json(node);
        let fo = match &status["failover"] {
            Value::Array(a) if a.len() == 1 => a[0].clone(),
            other => panic!("{role}: `failover` should list one relationship: {other}"),
        };
        check_status_shape(&fo, role);
        assert_eq!(fo["state"], json!("NORMAL"), "{role}: {fo}");
        assert_eq!(fo["link"], json!("up"), "{role}: {fo}");
        assert_eq!(fo["partner_state"], json!("NORMAL"), "{role}: {fo}");
    }
    pair.primary.assert_running();
    pair.secondary.assert_running();
    pair.secondary.stop();
    pair.primary.stop();
}

/// Test 2: One DORA through the primary: the secondary gets the binding (same client, expiry at
/// least what the client was told). The lag from the ACK to the binding showing on the
/// secondary is printed.
#[test]
fn lease_replicates_to_secondary() {
    let _g = serial();
    require_root();
    let (pair, _) = normal_pair("forepl", SMALL_POOL);
    let relay = NsRelay::new(&pair.ns);
    let granted = vec![relay.dora(PRIMARY, 1).unwrap_or_else(|e| panic!("{e}"))];
    let told = told_expiries(&pair.primary, &granted);
    let lag = wait_replicated(&pair.secondary, &granted, &told, REPLICATE);
    let on_secondary = pair.secondary.lease(granted[0].ip).unwrap().unwrap();
    eprintln!(
        "lease {} ({}s) told expiry {}; on the secondary: {on_secondary}\n\
         ACK -> visible on the secondary: {:.1} ms (polled)",
        granted[0].ip,
        granted[0].lease_time_s,
        told[0],
        lag[0].as_secs_f64() * 1000.0
    );
    // The counters are published periodically: wait (bounded) for them to show the update.
    let mut last = (Value::Null, Value::Null);
    let counted = wait_for(Duration::from_secs(10), || {
        let p = pair.primary.failover().ok()?;
        let s = pair.secondary.failover().ok()?;
        let ok = p["bndupd_sent"].as_u64() >= Some(1)
            && p["bndack_received"].as_u64() >= Some(1)
            && s["bndupd_received"].as_u64() >= Some(1)
            && s["updates_applied"].as_u64() >= Some(1);
        last = (p, s);
        ok.then_some(())
    });
    let (p, s) = last;
    assert!(
        counted.is_some(),
        "status should count the update sent, acked and applied:\nprimary {p}\nsecondary {s}"
    );
    assert_eq!(s["updates_rejected"], json!(0), "{s}");
    assert!(
        is_normal(&Ok(p.clone())) && is_normal(&Ok(s.clone())),
        "{p}\n{s}"
    );
    eprintln!("primary replication_lag_ms: {}", p["replication_lag_ms"]);
}

// ---------------------------------------------------------------------------
// Test 3: bulk replication
// ---------------------------------------------------------------------------

const BULK_CLIENTS: u32 = 100_000;
/// Offered DORA rate: with two servers on the machine's two cores, low enough that the
/// primary answers everything (the generator retransmits what it loses).
const BULK_RATE: u32 = 4_000;

/// Test 3: 100,000 distinct clients lease from the primary (the bundled load generator, open loop
/// at a fixed rate, bounded by count and time); once the primary's replication queue is
/// empty, every address bound on the primary is bound on the secondary to the same client
/// (compared from both lease logs with `ringlease log dump`).
#[test]
fn replicate_100k() {
    let _g = serial();
    require_root();
    let loadgen = loadgen_bin();
    let (pair, _) = normal_pair("fo100k", BIG_POOL);
    let scratch = TempDir::new("fo100k-lg");
    let json_path = scratch.join("loadgen.json");
    let mut c = pair.ns.cmd(&loadgen);
    c.arg("--server")
        .arg(format!("{PRIMARY}:{DHCP_PORT}"))
        .arg("--giaddr")
        .arg(RELAY.to_string())
        .args(["--scenario", "dora"])
        .args(["--rate", &BULK_RATE.to_string()])
        .args(["--exchanges", &BULK_CLIENTS.to_string()])
        .args(["--clients", &BULK_CLIENTS.to_string()])
        // A second bound: well above 100,000 / rate.
        .args(["--duration", "150"])
        .args(["--subnet", "127.64.0.0/15"])
        .arg("--quiet")
        .arg("--json")
        .arg(&json_path);
    let load_start = Instant::now();
    let out = run_bounded(c, Duration::from_secs(400));
    let load_secs = load_start.elapsed().as_secs_f64();
    let load_end = Instant::now();
    let report: Value = serde_json::from_str(&read_lossy(&json_path)).unwrap_or_else(|e| {
        panic!(
            "no loadgen JSON ({e}); exit {}; stdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!(
        "loadgen: {load_secs:.1} s, rate {} /s, exchanges {}, drops {}, violations {}",
        report["rate"], report["exchanges"], report["drops"], report["violations"]["total"]
    );
    assert!(
        out.status.success(),
        "loadgen failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report["exchanges"]["dora"]["completed"],
        json!(BULK_CLIENTS),
        "every client should get a lease: {report}"
    );
    assert_eq!(report["violations"]["total"], json!(0), "{report}");

    // Drained: nothing queued or in flight on the primary.
    let mut trace = Trace::new();
    let drained = wait_for(Duration::from_secs(300), || {
        let p = trace.poll(&pair.primary).ok()?;
        (p["queued"] == json!(0)
            && p["outstanding_bndupd"] == json!(0)
            && is_normal(&Ok(p.clone())))
        .then_some(p)
    });
    let drain_secs = load_end.elapsed().as_secs_f64();
    let p = drained.unwrap_or_else(|| {
        panic!(
            "the primary's queue never drained; primary: {}\nsecondary: {}\nstates: {trace}",
            show(&pair.primary.failover()),
            show(&pair.secondary.failover())
        )
    });
    let s = pair.secondary.failover().unwrap();
    eprintln!(
        "queue drained {drain_secs:.1} s after the load ended ({:.1} s after it began)\n\
         primary: bndupd_sent {} bndack_received {} lag_ms {}\n\
         secondary: bndupd_received {} updates_applied {} updates_rejected {}",
        load_start.elapsed().as_secs_f64(),
        p["bndupd_sent"],
        p["bndack_received"],
        p["replication_lag_ms"],
        s["bndupd_received"],
        s["updates_applied"],
        s["updates_rejected"]
    );

    // Compare the two lease logs; the status is published periodically, so give the logs a
    // bounded while to agree before calling a difference a loss.
    let mut last = String::new();
    let compare_start = Instant::now();
    let agreed = wait_for(Duration::from_secs(60), || {
        let primary = pair.primary.dump();
        let secondary = pair.secondary.dump();
        let bound: Vec<(&Ipv4Addr, &common::failover::Dumped)> =
            primary.iter().filter(|(_, d)| d.state == "bound").collect();
        let clients: HashSet<&str> = bound.iter().map(|(_, d)| d.client.as_str()).collect();
        let mut missing = Vec::new();
        let mut differ = Vec::new();
        for (ip, d) in &bound {
            match secondary.get(ip) {
                None => missing.push(**ip),
                Some(x)
                    if x.state != "bound" || x.client != d.client || x.expires_s < d.expires_s =>
                {
                    differ.push(format!("{ip}: primary {d:?} secondary {x:?}"))
                }
                Some(_) => {}
            }
        }
        last = format!(
            "primary: {} addresses, {} bound, {} distinct clients; secondary: {} addresses; \
             missing on the secondary: {} (first {:?}); different: {} (first {:?})",
            primary.len(),
            bound.len(),
            clients.len(),
            secondary.len(),
            missing.len(),
            &missing[..missing.len().min(5)],
            differ.len(),
            &differ[..differ.len().min(3)]
        );
        (bound.len() == BULK_CLIENTS as usize
            && clients.len() == BULK_CLIENTS as usize
            && missing.is_empty()
            && differ.is_empty())
        .then_some(())
    });
    eprintln!("{last}");
    assert!(
        agreed.is_some(),
        "the lease logs disagree after the queue drained: {last}"
    );
    eprintln!(
        "100k replication: load {load_secs:.1} s, drained {drain_secs:.1} s after it, logs \
         compared in {:.1} s",
        compare_start.elapsed().as_secs_f64()
    );
}

/// Test 4: The secondary dies (SIGKILL) with leases replicated; the primary, now
/// COMMUNICATIONS-INTERRUPTED, keeps granting; the secondary restarts on the same lease log.
/// Both return to NORMAL and the secondary then holds the outage's leases too. The states the
/// secondary passes through are printed.
#[test]
fn secondary_restart_catches_up() {
    let _g = serial();
    require_root();
    let (mut pair, _) = normal_pair("forest", SMALL_POOL);
    let relay = NsRelay::new(&pair.ns);
    let before = relay.lease_many(PRIMARY, 0..20);
    let told_before = told_expiries(&pair.primary, &before);
    wait_replicated(&pair.secondary, &before, &told_before, REPLICATE);

    pair.secondary.kill9();
    let mut primary_trace = Trace::new();
    let interrupted = wait_for(Duration::from_secs(30), || {
        let p = primary_trace.poll(&pair.primary).ok()?;
        (p["state"] == json!("COMMUNICATIONS-INTERRUPTED")).then_some(p)
    });
    assert!(
        interrupted.is_some(),
        "the primary should notice the secondary is gone; states: {primary_trace}\nlog:\n{}",
        tail(&pair.primary.log(), 30)
    );
    let during = relay.lease_many(PRIMARY, 100..120);
    let told_during = told_expiries(&pair.primary, &during);
    // The outage's changes wait in the primary's queue for the partner (status is published
    // periodically: bounded wait).
    let mut p = Value::Null;
    let queued = wait_for(Duration::from_secs(10), || {
        p = pair.primary.failover().ok()?;
        (p["queued"].as_u64() >= Some(during.len() as u64)).then_some(())
    });
    eprintln!(
        "primary during the outage: state {} queued {} (leases granted: {})",
        p["state"],
        p["queued"],
        during.len()
    );
    assert!(
        queued.is_some() && p["state"] == json!("COMMUNICATIONS-INTERRUPTED"),
        "the primary should hold the outage's {} changes for its partner: {p}",
        during.len()
    );

    let restart = Instant::now();
    pair.secondary.start(&pair.ns);
    let mut traces = Traces::new();
    let normal = wait_for(SETTLE, || {
        let p = traces.primary.poll(&pair.primary);
        let s = traces.secondary.poll(&pair.secondary);
        (is_normal(&p) && is_normal(&s)).then_some(())
    });
    eprintln!(
        "after the restart ({:.2} s):\n  secondary: {}\n  primary:   {} (before: {})",
        restart.elapsed().as_secs_f64(),
        traces.secondary,
        traces.primary,
        primary_trace
    );
    assert!(
        normal.is_some(),
        "the pair should return to NORMAL; primary {}\nsecondary {}\n--- secondary log:\n{}",
        show(&pair.primary.failover()),
        show(&pair.secondary.failover()),
        tail(&pair.secondary.log(), 40)
    );
    let lag = wait_replicated(&pair.secondary, &during, &told_during, REPLICATE);
    eprintln!(
        "outage leases on the secondary, from their ACK: {}",
        summarize(&lag)
    );
    // What the secondary had before the crash is still there, from its own log.
    wait_replicated(&pair.secondary, &before, &told_before, REPLICATE);
    eprintln!(
        "secondary after catching up: {}",
        show(&pair.secondary.failover())
    );
}

/// A graceful stop tells the partner why the link goes: with `on_stop = "shutdown"` the
/// partner goes PARTNER-DOWN at once (a lost link alone leaves it COMMUNICATIONS-INTERRUPTED),
/// with the default PAUSED it goes COMMUNICATIONS-INTERRUPTED; a restart resumes the state the
/// stopped server had and the pair is NORMAL again.
#[test]
fn graceful_stop_announces_shutdown_or_paused() {
    let _g = serial();
    require_root();
    for (on_stop, partner_goes) in [
        (Some("shutdown"), "PARTNER-DOWN"),
        (None, "COMMUNICATIONS-INTERRUPTED"),
    ] {
        // A short MCLT: after a SHUTDOWN the restart waits it out in RECOVER-WAIT (the partner
        // went PARTNER-DOWN), as the draft requires.
        let cfg = FailoverCfg {
            mclt_s: 10,
            ..FailoverCfg::default()
        };
        let primary = FailoverCfg {
            on_stop,
            ..cfg.clone()
        };
        let mut pair = Pair::new("fostop", SMALL_POOL, &primary, &cfg);
        pair.start();
        pair.wait_normal(SETTLE);
        // Times are whole seconds: the partner's PARTNER-DOWN must begin after our last state
        // change for the restart to know it recovers (draft §9.3 step 5).
        std::thread::sleep(Duration::from_millis(1100));
        pair.primary.stop();
        let told = if on_stop.is_some() {
            "SHUTDOWN"
        } else {
            "PAUSED"
        };
        let plog = pair.primary.log();
        assert!(
            plog.contains("told the partner") && plog.contains(told),
            "the primary should say it announced {told}:\n{}",
            tail(&plog, 20)
        );
        let mut state = Value::Null;
        let reached = wait_for(Duration::from_secs(10), || {
            state = pair.secondary.failover().ok()?["state"].clone();
            (state == json!(partner_goes)).then_some(())
        });
        let slog = pair.secondary.log();
        assert!(
            reached.is_some(),
            "the secondary should go {partner_goes} on the primary's {told}, is {state}:\n{}",
            tail(&slog, 20)
        );
        assert!(
            slog.lines().any(|l| l.contains("state changed")
                && l.contains(&format!("PartnerState({}", told_variant(told)))),
            "the secondary's state change names the primary's {told}:\n{}",
            tail(&slog, 20)
        );
        pair.primary.start(&pair.ns);
        let traces = pair.wait_normal(SETTLE);
        eprintln!(
            "{told}, then a restart: primary {}; secondary {}",
            traces.primary, traces.secondary
        );
        if on_stop.is_some() {
            let changes = state_changes(&pair.primary.log());
            assert!(
                changes.iter().any(|s| s == "RECOVER-WAIT"),
                "after its SHUTDOWN the primary recovers: {changes:?}\n{}",
                tail(&pair.primary.log(), 30)
            );
        }
    }
}

/// The `ChangeReason::PartnerState` variant name of a state as the log prints it.
fn told_variant(state: &str) -> &'static str {
    match state {
        "SHUTDOWN" => "Shutdown",
        _ => "Paused",
    }
}

/// A file holding `content` (a failover shared secret).
fn secret_file(dir: &TempDir, name: &str, content: &str) -> PathBuf {
    let p = dir.write(name, content, false);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// Watches both servers of `pair` for `how_long`: neither may report NORMAL or an up link,
/// and both must keep answering. Prints the states seen and the failover log lines.
fn assert_never_normal(pair: &mut Pair, how_long: Duration, why: &str) {
    let mut traces = Traces::new();
    let watch = Instant::now();
    let mut polls = 0u32;
    while watch.elapsed() < how_long {
        let p = traces.primary.poll(&pair.primary);
        let s = traces.secondary.poll(&pair.secondary);
        polls += 1;
        for (role, fo) in [("primary", &p), ("secondary", &s)] {
            let fo = fo
                .as_ref()
                .unwrap_or_else(|e| panic!("{role} stopped answering: {e}"));
            assert!(
                fo["state"] != json!("NORMAL") && fo["link"] != json!("up"),
                "{why}: {role} must not get in: {fo}\nprimary states: {}\n\
                 secondary states: {}",
                traces.primary,
                traces.secondary
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pair.primary.assert_running();
    pair.secondary.assert_running();
    let failover_lines = |log: String| -> String {
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("failover"))
            .map(str::to_string)
            .collect();
        tail(&lines.join("\n"), 6)
    };
    eprintln!(
        "{why}: {polls} polls over {how_long:?}\n  primary:   {}\n  secondary: {}\n\
         --- primary log:\n{}\n--- secondary log:\n{}",
        traces.primary,
        traces.secondary,
        failover_lines(pair.primary.log()),
        failover_lines(pair.secondary.log())
    );
    // Nothing was replicated across the refused link.
    for node in [&pair.primary, &pair.secondary] {
        let fo = node.failover().unwrap();
        assert_eq!(fo["bndupd_received"], json!(0), "{}: {fo}", node.name());
    }
}

/// Test 5: Different shared secrets: for 10 s of connection attempts (retry every second)
/// neither server reaches NORMAL or an up link, and both keep running. Then, as a control,
/// the secondary gets the primary's secret and a restart: the same pair reaches NORMAL, so
/// the secret was the only obstacle.
#[test]
fn wrong_secret_never_normal() {
    let _g = serial();
    require_root();
    let secrets = TempDir::new("fosecret");
    let p_cfg = FailoverCfg::with_secret(secret_file(&secrets, "primary.key", "alpha-secret\n"));
    let s_key = secret_file(&secrets, "secondary.key", "bravo-secret\n");
    let s_cfg = FailoverCfg::with_secret(s_key.clone());
    let mut pair = Pair::new("fobad", SMALL_POOL, &p_cfg, &s_cfg);
    pair.start();
    assert_never_normal(&mut pair, Duration::from_secs(10), "different secrets");

    // Both restart: each has recorded COMMUNICATIONS-INTERRUPTED by now, and a restart of the
    // secondary alone meets the bug `restart_before_first_contact_reaches_normal` shows.
    std::fs::write(&s_key, "alpha-secret\n").expect("rewrite the secondary's secret");
    pair.secondary.stop();
    pair.primary.stop();
    pair.start();
    let traces = pair.wait_normal(SETTLE);
    eprintln!(
        "control, same secret after a restart:\n  primary:   {}\n  secondary: {}",
        traces.primary, traces.secondary
    );
}

/// Test 5b: A secret on the primary only: the secondary, configured without one, must not
/// form the relationship either (a digest it cannot check, or none where one is required).
#[test]
fn one_sided_secret_never_normal() {
    let _g = serial();
    require_root();
    let secrets = TempDir::new("fosecret");
    let p_cfg = FailoverCfg::with_secret(secret_file(&secrets, "primary.key", "alpha-secret\n"));
    let mut pair = Pair::new("fohalf", SMALL_POOL, &p_cfg, &FailoverCfg::default());
    pair.start();
    assert_never_normal(
        &mut pair,
        Duration::from_secs(10),
        "secret on the primary only",
    );
}

/// Test 8: A secondary that ran alone past its startup timer (so it went to RECOVER, serving
/// nobody, without ever having met its partner) is restarted, then the primary starts for the
/// first time. The relationship is still new on both sides, so the pair should settle in NORMAL
/// as a cold start does (test 1), not leave the primary waiting out the MCLT in RECOVER-WAIT.
#[test]
fn restart_before_first_contact_reaches_normal() {
    let _g = serial();
    require_root();
    let cfg = FailoverCfg::default();
    let mut pair = Pair::new("foearly", SMALL_POOL, &cfg, &cfg);
    pair.secondary.start(&pair.ns);
    let mut alone = Trace::new();
    let interrupted = wait_for(Duration::from_secs(30), || {
        let s = alone.poll(&pair.secondary).ok()?;
        (s["state"] == json!("RECOVER")).then_some(())
    });
    assert!(
        interrupted.is_some(),
        "a secondary alone should leave STARTUP when its startup timer fires: {alone}"
    );
    pair.secondary.stop();
    pair.secondary.start(&pair.ns);
    pair.primary.start(&pair.ns);
    let traces = pair.wait_normal(SETTLE);
    eprintln!(
        "secondary alone: {alone}\nafter its restart and the primary's start:\n  primary:   {}\n  \
         secondary: {}",
        traces.primary, traces.secondary
    );
}

/// Test 6: The same shared secret on both sides (one file with a trailing newline, one without:
/// the newline is not part of the secret) reaches NORMAL, and a lease replicates over the
/// authenticated link.
#[test]
fn same_secret_reaches_normal() {
    let _g = serial();
    require_root();
    let secrets = TempDir::new("fosecret");
    let p_cfg = FailoverCfg::with_secret(secret_file(
        &secrets,
        "primary.key",
        "shared-pair-a-secret\n",
    ));
    let s_cfg = FailoverCfg::with_secret(secret_file(
        &secrets,
        "secondary.key",
        "shared-pair-a-secret",
    ));
    let mut pair = Pair::new("fogood", SMALL_POOL, &p_cfg, &s_cfg);
    pair.start();
    let traces = pair.wait_normal(SETTLE);
    eprintln!(
        "with a shared secret:\n  primary:   {}\n  secondary: {}",
        traces.primary, traces.secondary
    );
    let relay = NsRelay::new(&pair.ns);
    let granted = relay.lease_many(PRIMARY, 0..3);
    let told = told_expiries(&pair.primary, &granted);
    let lag = wait_replicated(&pair.secondary, &granted, &told, REPLICATE);
    eprintln!("replication lag with digests: {}", summarize(&lag));
}

/// A ringlease pair in the Microsoft dialect ([MS-DHCPF]: the 8-byte header offset, UTF-16
/// relationship name, HMAC-SHA256 on every message, at most 16 updates per BNDUPD, BNDACKs in
/// order) reaches NORMAL and replicates more leases than fit one BNDUPD. An out-of-order or
/// mismatched BNDACK would close the connection; the status counters show none did.
#[test]
fn microsoft_dialect_pair_reaches_normal_and_replicates() {
    let _g = serial();
    require_root();
    let secrets = TempDir::new("fomssecret");
    let ms = |file: &str| FailoverCfg {
        dialect: "microsoft".into(),
        ..FailoverCfg::with_secret(secret_file(&secrets, file, "pair-a-ms-secret"))
    };
    let mut pair = Pair::new("foms", SMALL_POOL, &ms("p.key"), &ms("s.key"));
    pair.start();
    let traces = pair.wait_normal(SETTLE);
    eprintln!(
        "microsoft dialect:\n  primary:   {}\n  secondary: {}",
        traces.primary, traces.secondary
    );
    let relay = NsRelay::new(&pair.ns);
    let granted = relay.lease_many(PRIMARY, 0..40);
    let told = told_expiries(&pair.primary, &granted);
    let lag = wait_replicated(&pair.secondary, &granted, &told, REPLICATE);
    eprintln!("replication lag, microsoft dialect: {}", summarize(&lag));
    let fo = pair.primary.failover().expect("primary status");
    let count = |key: &str| fo[key].as_u64().unwrap_or_else(|| panic!("{key} in {fo}"));
    let (bndupds, updates) = (count("bndupd_sent"), count("updates_sent"));
    assert!(updates >= 40, "{updates} updates sent for 40 leases");
    assert!(
        updates <= 16 * bndupds,
        "{updates} updates in {bndupds} BNDUPDs: more than 16 per message"
    );
    for node in [&pair.primary, &pair.secondary] {
        let fo = node.failover().expect("status");
        assert_eq!(fo["state"], "NORMAL", "{}: {fo}", node.name());
    }

    // Pool balance: in this dialect every free address starts the primary's, so the secondary
    // can serve a new client only from addresses the primary gave it (BACKUP). Once the queue
    // is empty, the primary goes away and the secondary serves new clients alone.
    let drained = wait_for(REPLICATE, || {
        let fo = pair.primary.failover().ok()?;
        (fo["queued"] == json!(0) && fo["outstanding_bndupd"] == json!(0)).then_some(())
    });
    assert!(drained.is_some(), "the primary's queue never emptied");
    // Both report the same balance (the counts are at most 5 s old): the secondary holds about
    // its 10 % of the free addresses.
    let mut seen = (Value::Null, Value::Null);
    let balanced = wait_for(Duration::from_secs(20), || {
        let p = pair.primary.status().ok()?["subnets"][0].clone();
        let s = pair.secondary.status().ok()?["subnets"][0].clone();
        seen = (p.clone(), s.clone());
        let (p_ours, p_partner) = (p["free_ours"].as_u64()?, p["free_partner"].as_u64()?);
        let (s_ours, s_partner) = (s["free_ours"].as_u64()?, s["free_partner"].as_u64()?);
        let total = p_ours + p_partner;
        let agree = (p_ours, p_partner) == (s_partner, s_ours);
        (agree && s_ours * 100 >= total * 8 && s_ours * 100 <= total * 12).then_some(())
    });
    assert!(
        balanced.is_some(),
        "pool balance in status: primary {}, secondary {}",
        seen.0,
        seen.1
    );
    pair.primary.kill9();
    let alone = wait_for(Duration::from_secs(30), || {
        let fo = pair.secondary.failover().ok()?;
        (fo["state"] == json!("COMMUNICATIONS-INTERRUPTED")).then_some(())
    });
    assert!(
        alone.is_some(),
        "the secondary never noticed the primary is gone"
    );
    let served = relay.lease_many(SECONDARY, 500..505);
    let given = log_dump(pair.primary.lease_dir());
    for g in &served {
        let state = given.get(&g.ip).map(|d| d.state.as_str());
        assert_eq!(
            state,
            Some("backup"),
            "{} was served by the secondary but the primary had not given it",
            g.ip
        );
    }
}

// ---------------------------------------------------------------------------
// Test 7: Wireshark
// ---------------------------------------------------------------------------

/// Wireshark's short name for its DHCP failover dissector (`tshark -G protocols`).
fn dissector_name(tshark: &Path) -> String {
    let mut c = Command::new(tshark);
    c.args(["-G", "protocols"]);
    let out = run_bounded(c, Duration::from_secs(60));
    assert!(out.status.success(), "tshark -G protocols: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Columns: full name, short name, filter name, …
    let candidates: Vec<String> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("failover") && l.contains("DHCP"))
        .filter_map(|l| l.split('\t').nth(2).map(|f| f.trim().to_string()))
        .collect();
    assert!(
        !candidates.is_empty(),
        "tshark has no DHCP failover dissector (`tshark -G protocols`)"
    );
    let preferred = candidates.iter().find(|f| *f == "dhcpfo");
    preferred.unwrap_or(&candidates[0]).clone()
}

/// Depth-first, in document order: every object that has `key`.
fn objects_with<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a serde_json::Map<String, Value>>) {
    match v {
        Value::Object(m) => {
            if m.contains_key(key) {
                out.push(m);
            }
            for x in m.values() {
                objects_with(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| objects_with(x, key, out)),
        _ => {}
    }
}

/// Every (key, value) pair under `v` whose key satisfies `pred`.
fn keys_where<'a>(v: &'a Value, pred: &dyn Fn(&str) -> bool, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if pred(k) {
                    out.push((k.clone(), x));
                }
                keys_where(x, pred, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys_where(x, pred, out)),
        _ => {}
    }
}

/// A field as tshark's JSON gives it: one string, or an array of them (repeated fields).
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().flat_map(|x| strings(Some(x))).collect(),
        _ => Vec::new(),
    }
}

fn number(v: Option<&Value>) -> Option<u64> {
    let s = strings(v).into_iter().next()?;
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// One decoded failover message.
struct Decoded {
    src: String,
    frame: u64,
    msg_type: u64,
    length: u64,
    /// BNDUPD/BNDACK transactions: (assigned IP, binding status if present), in order.
    transactions: Vec<(String, Option<u64>)>,
}

/// Test 7: tshark captures the failover TCP session of a pair inside the namespace (from before
/// the servers start to after they stop); Wireshark's `dhcpfo` dissector then decodes every
/// byte of it: no malformed or bad-length reports, CONNECT, CONNECTACK, STATE, BNDUPD and
/// BNDACK present, and the ACTIVE bindings in the primary's BNDUPDs are exactly the leases
/// granted. (Wireshark mislabels types 7/9 and the IP-flags masks: not checked.)
#[test]
fn tshark_decodes_session() {
    let _g = serial();
    require_root();
    let tshark = require_tool("tshark", "tshark");
    let proto = dissector_name(&tshark);
    let cfg = FailoverCfg::default();
    let mut pair = Pair::new("fotshark", SMALL_POOL, &cfg, &cfg);
    let work = TempDir::new("fotshark");
    let pcap = work.join("failover.pcapng");
    let cap_log = work.join("tshark.log");
    let mut cap = pair.ns.cmd(&tshark);
    cap.args(["-i", "lo", "-f", &format!("tcp port {FAILOVER_PORT}"), "-q"])
        // Bounded even if the test dies before stopping it.
        .args(["-a", "duration:240"])
        .arg("-w")
        .arg(&pcap);
    let mut capture = Child::spawn("tshark", cap, &cap_log);
    let capturing = wait_for(Duration::from_secs(30), || {
        if let Some(s) = capture.try_status() {
            panic!("tshark exited ({s}): {}", read_lossy(&cap_log));
        }
        read_lossy(&cap_log).contains("Capturing on").then_some(())
    });
    assert!(
        capturing.is_some(),
        "tshark did not start capturing: {}",
        read_lossy(&cap_log)
    );

    pair.start();
    let traces = pair.wait_normal(SETTLE);
    eprintln!(
        "primary: {}\nsecondary: {}",
        traces.primary, traces.secondary
    );
    let relay = NsRelay::new(&pair.ns);
    let granted: Vec<Granted> = relay.lease_many(PRIMARY, 0..40);
    let told = told_expiries(&pair.primary, &granted);
    wait_replicated(&pair.secondary, &granted, &told, REPLICATE);
    pair.secondary.stop();
    pair.primary.stop();
    // Let the last segments (FIN) be written, then stop the capture by PID.
    std::thread::sleep(Duration::from_millis(500));
    let (status, in_time) = capture.stop("INT", Duration::from_secs(15));
    assert!(
        in_time,
        "tshark did not stop on SIGINT: {}",
        read_lossy(&cap_log)
    );
    eprintln!(
        "tshark capture ended ({status}): {}",
        read_lossy(&cap_log).trim()
    );

    let mut c = Command::new(&tshark);
    c.arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("tcp.port=={FAILOVER_PORT},{proto}")])
        .args(["-T", "json", "--no-duplicate-keys"]);
    let out = run_bounded(c, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets: Value = serde_json::from_slice(&out.stdout).expect("tshark JSON");
    let packets = packets.as_array().expect("a JSON array of packets");

    let mut decoded: Vec<Decoded> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    // Per direction (source address): TCP payload bytes, and bytes of decoded messages.
    let mut tcp_bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut fo_bytes: BTreeMap<String, u64> = BTreeMap::new();
    for pkt in packets {
        let layers = &pkt["_source"]["layers"];
        let frame = number(layers["frame"].get("frame.number")).unwrap_or(0);
        let src = strings(layers["ip"].get("ip.src"))
            .into_iter()
            .next()
            .unwrap_or_default();
        let tcp_len = number(layers["tcp"].get("tcp.len")).unwrap_or(0);
        if tcp_len > 0 {
            *tcp_bytes.entry(src.clone()).or_default() += tcp_len;
        }
        let mut bad = Vec::new();
        keys_where(
            layers,
            &|k| k == "_ws.malformed" || k.starts_with("_ws.expert"),
            &mut bad,
        );
        let fo = layers.get(&proto);
        if let Some(fo) = fo {
            let mut fo_experts = Vec::new();
            keys_where(
                fo,
                &|k| k.starts_with("_ws.expert") || k.contains("bad_length"),
                &mut fo_experts,
            );
            for (k, v) in fo_experts {
                problems.push(format!("frame {frame}: {proto} expert {k} = {v}"));
            }
        }
        for (k, v) in bad {
            let text = v.to_string();
            if k == "_ws.malformed" || text.contains("alformed") {
                problems.push(format!("frame {frame}: {k} = {text}"));
            }
        }
        let pdus: Vec<&Value> = match fo {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v) => vec![v],
            None => Vec::new(),
        };
        if tcp_len > 0 && pdus.is_empty() && layers["tcp"].get("tcp.reassembled_in").is_none() {
            problems.push(format!(
                "frame {frame}: {tcp_len} bytes of TCP payload not decoded as {proto}"
            ));
        }
        for pdu in pdus {
            let (Some(msg_type), Some(length)) = (
                number(pdu.get(format!("{proto}.type"))),
                number(pdu.get(format!("{proto}.length"))),
            ) else {
                problems.push(format!("frame {frame}: {proto} without type/length: {pdu}"));
                continue;
            };
            *fo_bytes.entry(src.clone()).or_default() += length;
            let mut options = Vec::new();
            objects_with(pdu, &format!("{proto}.optioncode"), &mut options);
            let mut transactions: Vec<(String, Option<u64>)> = Vec::new();
            for o in options {
                match number(o.get(&format!("{proto}.optioncode"))) {
                    Some(2) => {
                        let ip = strings(o.get(&format!("{proto}.assignedipaddress")))
                            .into_iter()
                            .next()
                            .unwrap_or_default();
                        transactions.push((ip, None));
                    }
                    Some(3) => {
                        if let Some(t) = transactions.last_mut() {
                            t.1 = number(o.get(&format!("{proto}.bindingstatus")));
                        }
                    }
                    _ => {}
                }
            }
            decoded.push(Decoded {
                src: src.clone(),
                frame,
                msg_type,
                length,
                transactions,
            });
        }
    }

    let types: BTreeSet<u64> = decoded.iter().map(|d| d.msg_type).collect();
    let count = |t: u64| decoded.iter().filter(|d| d.msg_type == t).count();
    eprintln!(
        "{} frames, {} failover messages; by type: {:?}; TCP bytes {tcp_bytes:?}, message \
         bytes {fo_bytes:?}",
        packets.len(),
        decoded.len(),
        types.iter().map(|t| (*t, count(*t))).collect::<Vec<_>>()
    );
    assert!(
        problems.is_empty(),
        "{} problems decoding the session, first:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    assert_eq!(
        tcp_bytes, fo_bytes,
        "every TCP payload byte should belong to a decoded failover message"
    );
    for (t, name) in [
        (5, "CONNECT"),
        (6, "CONNECTACK"),
        (10, "STATE"),
        (3, "BNDUPD"),
        (4, "BNDACK"),
    ] {
        assert!(
            types.contains(&t),
            "no {name} ({t}) in the capture: {types:?}"
        );
    }
    for d in &decoded {
        assert!(
            d.length >= 12,
            "frame {}: message length {}",
            d.frame,
            d.length
        );
    }
    // ACTIVE (2) bindings the primary sent are exactly the leases granted.
    let primary = PRIMARY.to_string();
    let active: BTreeSet<String> = decoded
        .iter()
        .filter(|d| d.src == primary && d.msg_type == 3)
        .flat_map(|d| d.transactions.iter())
        .filter(|(_, status)| *status == Some(2))
        .map(|(ip, _)| ip.clone())
        .collect();
    let leased: BTreeSet<String> = granted.iter().map(|g| g.ip.to_string()).collect();
    assert_eq!(
        active, leased,
        "ACTIVE bindings in the primary's BNDUPDs vs leases granted"
    );
    // Every BNDUPD is answered by a BNDACK from the other side.
    let from = |src: &str, t: u64| {
        decoded
            .iter()
            .filter(|d| d.src == src && d.msg_type == t)
            .count()
    };
    let secondary = common::failover::SECONDARY.to_string();
    assert_eq!(
        from(&primary, 3),
        from(&secondary, 4),
        "every BNDUPD of the primary is answered by one BNDACK of the secondary"
    );
}

/// Reads until the server closes the connection (true) or `limit` passes (false).
fn closed_by_server(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // a DISCONNECT or CONNECTACK before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

/// A hostile partner on the real TCP path: garbage, a length field past the limit, and a frame
/// cut short then abandoned. Each connection is closed by the secondary (never a panic), the
/// server keeps running, and the real primary still reaches NORMAL with it afterwards.
#[test]
fn hostile_partner_bytes_close_the_connection_not_the_server() {
    use std::io::Write;
    use std::net::{SocketAddrV4, TcpStream};
    let _g = serial();
    require_root();
    let cfg = FailoverCfg::default();
    let mut pair = Pair::new("fohostile", SMALL_POOL, &cfg, &cfg);
    pair.secondary.start(&pair.ns);
    let secondary = SocketAddrV4::new(common::failover::SECONDARY, FAILOVER_PORT);
    let attacks: [(&str, Vec<u8>); 3] = [
        (
            "garbage",
            (0..600u32).map(|i| (i * 37 % 251) as u8).collect(),
        ),
        // length 0xffff: beyond the 2048-byte maximum
        (
            "oversized length",
            vec![0xff, 0xff, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        // a header whose payload offset points inside the header
        (
            "payload offset below the header",
            vec![0, 12, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
    ];
    for (what, bytes) in attacks {
        // From the primary's address: the secondary only talks to its configured partner.
        let mut stream = common::failover::in_netns(&pair.ns, move || {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            socket
                .bind(&SocketAddrV4::new(PRIMARY, 0).into())
                .expect("bind to the primary's address");
            socket
                .connect_timeout(&secondary.into(), Duration::from_secs(5))
                .expect("connect to the secondary");
            TcpStream::from(socket)
        });
        stream.write_all(&bytes).expect("send");
        assert!(
            closed_by_server(&mut stream, Duration::from_secs(10)),
            "{what}: the secondary kept the connection open"
        );
        pair.secondary.assert_running();
    }
    let log = pair.secondary.log();
    for line in log.lines().filter(|l| l.contains("closing the connection")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains("closing the connection"),
        "the secondary logs why it closed: {}",
        tail(&log, 20)
    );
    pair.primary.start(&pair.ns);
    pair.wait_normal(SETTLE);
}

//! `ringlease-loadgen`: a DHCPv4 load generator playing a relay agent towards any DHCPv4 server, and a raw UDP
//! reflector (`reflect`) for the "no DHCP work at all" ceiling. See `--help`.

mod client;
mod engine;
mod reflect;
mod stats;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use ringlease::proto::wire::dhcp::SERVER_PORT;
use ringlease_ring::{BackendChoice, DatagramIo, GroupConfig, RingParams, Steering};
use serde_json::{json, Value};

use client::{Backoff, Kind, Scenario, MAX_CLIENTS};
use engine::{Engine, Phase, Settings, Subnet, MAX_SERVERS};
use stats::{Stats, Violations};

#[derive(Parser, Debug)]
#[command(
    name = "ringlease-loadgen",
    version,
    about = "DHCPv4 load generator: plays a relay agent towards any DHCPv4 server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Echo every datagram back to its sender as fast as possible (the "no DHCP work" ceiling; drive it with
    /// `--scenario echo`).
    Reflect(ReflectArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// DHCP server address, IP or IP:PORT (port 67 by default). Repeat it (or separate by commas) for several servers,
    /// as a relay with several helper addresses: each client message goes to all of them, the client takes the first
    /// OFFER (its REQUEST names that server), renewals and releases go to that server only; the duplicate-address
    /// check covers the answers of all.
    #[arg(long, value_name = "IP[:PORT]", value_delimiter = ',')]
    server: Vec<String>,
    /// The relay agent's address (giaddr). The load generator listens on it, on the server's port (where servers
    /// send relayed replies), unless --relay-port says otherwise.
    #[arg(long, value_name = "IP")]
    giaddr: Option<Ipv4Addr>,
    #[arg(long, value_name = "PORT")]
    relay_port: Option<u16>,
    /// dora | renew | release | decline | init-reboot | mix | echo. A client without a lease does a DORA first.
    #[arg(long, default_value = "dora")]
    scenario: String,
    /// Weights for --scenario mix, e.g. dora=50,renew=30,release=10,decline=5,init-reboot=5.
    #[arg(long, value_name = "KIND=W,...")]
    mix: Option<String>,
    /// Open loop: start this many exchanges per second regardless of answers.
    #[arg(long, value_name = "N", conflicts_with = "find_max")]
    rate: Option<f64>,
    /// Search for the highest rate with drops under --drop-threshold; --duration is the budget of the whole search.
    #[arg(long)]
    find_max: bool,
    /// First rate tried by --find-max.
    #[arg(long, value_name = "N", default_value_t = 1000.0)]
    start_rate: f64,
    /// Seconds of issuing new exchanges (then a drain waits for late answers).
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Stop after starting this many exchanges.
    #[arg(long, value_name = "N")]
    exchanges: Option<u64>,
    /// Distinct simulated clients (at most 16777216); the server's pool should be at least this large.
    #[arg(long, default_value_t = 10_000)]
    clients: u32,
    /// Seed of the client identities and the randomness: same seed, same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also send a client identifier (option 61) derived from the index.
    #[arg(long)]
    client_id: bool,
    /// Expected subnet of yiaddr (CIDR); without it only 0.0.0.0 is rejected.
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// First retransmission delay (RFC 2131 says 4 s; doubled per try up to --rto-max-ms, ±1/8 jitter).
    #[arg(long, default_value_t = 1000)]
    rto_ms: u64,
    #[arg(long, default_value_t = 4000)]
    rto_max_ms: u64,
    /// Transmissions of a message before its exchange times out.
    #[arg(long, default_value_t = 3)]
    tries: u8,
    /// Seconds to wait for outstanding answers after issuing stops (default: the whole retransmission schedule;
    /// with --find-max: --rto-ms).
    #[arg(long, value_name = "S")]
    drain: Option<f64>,
    /// --find-max: highest acceptable share of unanswered requests, in percent.
    #[arg(long, default_value_t = 1.0)]
    drop_threshold: f64,
    /// --find-max: seconds of issuing per step.
    #[arg(long, default_value_t = 2.0)]
    step: f64,
    /// Write the full result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// auto | io-uring | fallback.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Pin the event loop to this CPU core.
    #[arg(long)]
    core: Option<usize>,
    /// Allow a server outside loopback, 198.18.0.0/15 and RFC 1918 space.
    #[arg(long)]
    allow_remote: bool,
    /// No live progress line even on a terminal.
    #[arg(long)]
    quiet: bool,
    /// How many violations are printed in full.
    #[arg(long, default_value_t = 10)]
    show_violations: usize,
    /// SO_RCVBUF / SO_SNDBUF of the relay socket, bytes.
    #[arg(long, default_value_t = 32 << 20)]
    socket_buffer: usize,
    /// At the end, write every client that holds an address (tab-separated: index, hardware address, address, server,
    /// last exchange, its start in ms since 1970).
    #[arg(long, value_name = "FILE")]
    bindings: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ReflectArgs {
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddrV4,
    /// Seconds to run (it stops by itself).
    #[arg(long, value_name = "S")]
    duration: f64,
    /// Pin to this CPU core.
    #[arg(long = "cores", alias = "core")]
    core: Option<usize>,
    #[arg(long, default_value = "auto")]
    backend: String,
    #[arg(long)]
    allow_remote: bool,
}

/// Where we may send load without --allow-remote: loopback, the RFC 2544 benchmark range and RFC 1918 space (what a
/// network namespace or lab uses). Broadcast, multicast and 0.0.0.0 are refused even with --allow-remote.
fn check_target(ip: Ipv4Addr, allow_remote: bool) -> Result<(), String> {
    if ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified() {
        return Err(format!("{ip} is not a unicast address; refusing"));
    }
    let benchmark = Subnet::parse("198.18.0.0/15").is_ok_and(|s| s.contains(u32::from(ip)));
    if allow_remote || ip.is_loopback() || ip.is_private() || benchmark {
        return Ok(());
    }
    Err(format!(
        "{ip} is outside loopback (127/8), 198.18.0.0/15 and RFC 1918 space; pass --allow-remote to load it anyway"
    ))
}

fn backend_choice(s: &str) -> Result<BackendChoice, String> {
    match s {
        "auto" => Ok(BackendChoice::Auto),
        "io-uring" | "io_uring" => Ok(BackendChoice::IoUring),
        "fallback" => Ok(BackendChoice::Fallback),
        _ => Err(format!("--backend {s:?}: auto, io-uring or fallback")),
    }
}

fn open_relay(
    addr: SocketAddrV4,
    backend: &str,
    buffer: usize,
) -> Result<Box<dyn DatagramIo>, String> {
    let groups = ringlease_ring::open_groups(&GroupConfig {
        addrs: vec![addr],
        workers: 1,
        steering: Steering::None,
        recv_buffer_bytes: Some(buffer),
        send_buffer_bytes: Some(buffer),
    })
    .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let sockets = groups.into_iter().next().unwrap_or_default();
    let params = RingParams {
        entries: 1024,
        buffers: 8192,
        ..RingParams::default()
    };
    ringlease_ring::open_io(sockets, backend_choice(backend)?, params)
        .map_err(|e| format!("cannot set up I/O on {addr}: {e}"))
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{what} must be a positive number of seconds"))
}

#[derive(Debug)]
struct Plan {
    settings: Settings,
    relay: SocketAddrV4,
    phase: Phase,
    find_max: bool,
}

fn parse_server(server: &str, allow_remote: bool) -> Result<SocketAddrV4, String> {
    let server = server.trim();
    let addr: SocketAddrV4 = match server.parse::<Ipv4Addr>() {
        Ok(ip) => SocketAddrV4::new(ip, SERVER_PORT),
        Err(_) => server
            .parse()
            .map_err(|_| format!("--server {server:?} is not IP or IP:PORT"))?,
    };
    check_target(*addr.ip(), allow_remote)?;
    Ok(addr)
}

fn plan(a: &RunArgs) -> Result<Plan, String> {
    if a.server.is_empty() {
        return Err("--server IP[:PORT] is required".into());
    }
    let servers = a
        .server
        .iter()
        .map(|s| parse_server(s, a.allow_remote))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.len() > MAX_SERVERS {
        return Err(format!("at most {MAX_SERVERS} --server addresses"));
    }
    if let Some(dup) = servers
        .iter()
        .enumerate()
        .find_map(|(i, s)| servers[..i].contains(s).then_some(s))
    {
        return Err(format!("--server {dup} is given twice"));
    }
    let server = servers[0];
    let giaddr = a.giaddr.ok_or("--giaddr IP is required")?;
    if giaddr.is_unspecified() || giaddr.is_broadcast() || giaddr.is_multicast() {
        return Err(format!(
            "--giaddr {giaddr} must be a unicast address of this host"
        ));
    }
    let relay = SocketAddrV4::new(giaddr, a.relay_port.unwrap_or(server.port()));
    if servers.contains(&relay) {
        return Err(format!(
            "the relay would listen on the server's own address {relay}"
        ));
    }
    if a.duration.is_none() && a.exchanges.is_none() {
        return Err("bounded by design: give --duration and/or --exchanges".into());
    }
    let duration = a.duration.map(|d| secs(d, "--duration")).transpose()?;
    if a.find_max {
        if duration.is_none() {
            return Err("--find-max needs --duration (the budget of the whole search)".into());
        }
        if a.exchanges.is_some() {
            return Err("--exchanges does not combine with --find-max".into());
        }
    } else if a.rate.is_none() {
        return Err("give --rate N or --find-max".into());
    }
    let rate = a.rate.unwrap_or(a.start_rate);
    if !(rate.is_finite() && rate > 0.0) {
        return Err("the rate must be a positive number".into());
    }
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if a.tries == 0 || a.rto_ms == 0 || a.rto_max_ms < a.rto_ms {
        return Err("need --tries >= 1 and 0 < --rto-ms <= --rto-max-ms".into());
    }
    let scenario = match a.scenario.as_str() {
        "mix" => Scenario::parse_mix(
            a.mix
                .as_deref()
                .ok_or("--scenario mix needs --mix KIND=W,...")?,
        )?,
        s => Scenario::Single(Kind::parse(s).ok_or_else(|| {
            format!(
                "unknown --scenario {s:?} (dora, renew, release, decline, init-reboot, mix, echo)"
            )
        })?),
    };
    let backoff = Backoff {
        initial_ms: a.rto_ms,
        max_ms: a.rto_max_ms,
        max_tries: a.tries,
    };
    let drain = match a.drain {
        Some(d) => Duration::try_from_secs_f64(d).map_err(|_| "--drain: seconds >= 0")?,
        None if a.find_max => Duration::from_millis(a.rto_ms + 100),
        None => Duration::from_millis(backoff.worst_case_ms() + 100),
    };
    let subnet = a.subnet.as_deref().map(Subnet::parse).transpose()?;
    Ok(Plan {
        settings: Settings {
            servers,
            giaddr,
            clients: a.clients,
            seed: a.seed,
            scenario,
            backoff,
            client_id: a.client_id,
            subnet,
            keep_violations: a.show_violations,
            progress: !a.quiet,
        },
        relay,
        phase: Phase {
            rate,
            duration: if a.find_max {
                Some(secs(a.step, "--step")?)
            } else {
                duration
            },
            exchanges: a.exchanges,
            drain,
        },
        find_max: a.find_max,
    })
}

/// One find-max step, for the report.
struct Step {
    rate: f64,
    stats: Stats,
    pass: bool,
}

/// Climbs ×2 from the start rate until a step fails, then bisects between the best passing and the lowest failing
/// rate, as long as the budget allows another whole step. A step passes with drops under the threshold, no
/// violations and at least 97% of the target actually offered (else the load generator itself was the limit).
fn find_max(
    engine: &mut Engine,
    io: &mut dyn DatagramIo,
    first: Phase,
    budget: Duration,
    threshold_pct: f64,
) -> std::io::Result<(f64, Vec<Step>)> {
    let deadline = Instant::now() + budget;
    let per_step = first.duration.unwrap_or_default() + first.drain + Duration::from_millis(200);
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut rate = first.rate;
    let mut steps = Vec::new();
    while Instant::now() + per_step <= deadline {
        let stats = engine.run_phase(io, Phase { rate, ..first })?;
        let pass = stats.drop_ratio() * 100.0 < threshold_pct
            && stats.violations.total() == 0
            && stats.offered_rate() >= 0.97 * rate;
        eprintln!(
            "find-max: rate {rate:>10.0}/s offered {:>10.0}/s drops {:>7.3}% violations {} -> {}",
            stats.offered_rate(),
            stats.drop_ratio() * 100.0,
            stats.violations.total(),
            if pass { "ok" } else { "over" }
        );
        steps.push(Step { rate, stats, pass });
        if pass {
            lo = lo.max(rate);
        } else {
            hi = hi.min(rate);
        }
        if hi.is_finite() && (hi - lo) / hi < 0.03 || hi < 10.0 {
            break;
        }
        rate = if hi.is_infinite() {
            rate * 2.0
        } else {
            (lo + hi) / 2.0
        };
        // Let the server's queues empty before the next step.
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((lo, steps))
}

fn run(a: &RunArgs) -> Result<ExitCode, String> {
    let plan = plan(a)?;
    if let Some(core) = a.core {
        if !ringlease_ring::pin_current_thread(core) {
            eprintln!("warning: could not pin to core {core}");
        }
    }
    let mut io = open_relay(plan.relay, &a.backend, a.socket_buffer)?;
    let s = &plan.settings;
    let servers: Vec<String> = s.servers.iter().map(ToString::to_string).collect();
    println!(
        "ringlease-loadgen: {} via relay {} ({} backend), scenario {}, {} clients, seed {}",
        servers.join(", "),
        plan.relay,
        io.backend().name(),
        a.scenario,
        s.clients,
        s.seed
    );
    let mut engine = Engine::new(plan.settings.clone());
    let io_err = |e: std::io::Error| format!("I/O error: {e}");
    let (stats, mut json, violations) = if plan.find_max {
        let budget = secs(a.duration.unwrap_or_default(), "--duration")?;
        let (max_rate, mut steps) = find_max(
            &mut engine,
            io.as_mut(),
            plan.phase,
            budget,
            a.drop_threshold,
        )
        .map_err(io_err)?;
        let mut all = Violations::new(a.show_violations);
        for st in &steps {
            all.merge(&st.stats.violations);
        }
        let step_json: Vec<Value> = steps
            .iter()
            .map(|st| {
                json!({
                    "rate": st.rate,
                    "offered_rate": st.stats.offered_rate(),
                    "achieved_rate": st.stats.rate(),
                    "drop_ratio": st.stats.drop_ratio(),
                    "p99_us": st.stats.main_exchange().1.value_at_quantile(0.99),
                    "violations": st.stats.violations.total(),
                    "pass": st.pass,
                })
            })
            .collect();
        // The full figures reported are those of the best passing step (or the last step if none passed).
        let best = steps
            .iter()
            .rposition(|st| st.pass && st.rate == max_rate)
            .or(steps.len().checked_sub(1));
        let Some(best) = best else {
            return Err("--duration is too short for one find-max step (--step + drain)".into());
        };
        let stats = steps.swap_remove(best).stats;
        println!(
            "find-max: highest rate with < {}% drops: {max_rate:.0}/s",
            a.drop_threshold
        );
        let mut j = stats.to_json();
        j["max_rate"] = json!(max_rate);
        j["drop_threshold_pct"] = json!(a.drop_threshold);
        j["steps"] = Value::Array(step_json);
        (stats, j, all)
    } else {
        let stats = engine.run_phase(io.as_mut(), plan.phase).map_err(io_err)?;
        let j = stats.to_json();
        let v = stats.violations.clone();
        (stats, j, v)
    };
    print!("{}", stats.summary());
    let server_ids = engine.server_ids();
    for (i, st) in stats.by_server.iter().enumerate() {
        println!(
            "server {} (id {}): {} answered: {} OFFERs taken, {} ACKs, {} NAKs",
            s.servers[i],
            server_ids[i].map_or("-".to_string(), |id| id.to_string()),
            st.answered,
            st.offers_taken,
            st.acks,
            st.naks
        );
    }
    if plan.find_max && violations.total() > stats.violations.total() {
        println!("violations over the whole search: {}", violations.total());
    }
    json["scenario"] = json!(a.scenario);
    json["target_rate"] = json!(if plan.find_max {
        Value::Null
    } else {
        json!(plan.phase.rate)
    });
    json["clients"] = json!(s.clients);
    json["seed"] = json!(s.seed);
    json["server"] = json!(servers.join(","));
    if !stats.by_server.is_empty() {
        let per: Vec<Value> = stats
            .by_server
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let mut v = st.to_json();
                v["server"] = json!(s.servers[i].to_string());
                v["server_id"] = json!(server_ids[i].map(|id| id.to_string()));
                v
            })
            .collect();
        json["servers"] = Value::Array(per);
        json["start_unix_ms"] = json!(stats.start_unix_ms);
    }
    json["relay"] = json!(plan.relay.to_string());
    json["backend"] = json!(io.backend().name());
    json["server_id"] = json!(engine.server_id().map(|i| i.to_string()));
    json["violations_total"] = json!(violations.total());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &a.bindings {
        write_bindings(&engine, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(if violations.total() > 0 {
        eprintln!("FAILED: {} violations", violations.total());
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--bindings`: one line per client holding an address, after a header.
fn write_bindings(engine: &Engine, path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "index\thw\taddress\tserver\texchange\tsince_unix_ms")?;
    for b in engine.bindings() {
        let hw: Vec<String> = b.mac.iter().map(|x| format!("{x:02x}")).collect();
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            b.index,
            hw.join(":"),
            b.ip,
            b.server,
            b.kind.name(),
            b.since_unix_ms
        )?;
    }
    out.flush()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Some(Cmd::Reflect(r)) => reflect::run(r),
        None => run(&cli.run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringlease-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        for ok in [
            "127.0.0.1",
            "198.18.0.1",
            "198.19.255.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
        ] {
            assert!(check_target(ok.parse().unwrap(), false).is_ok(), "{ok}");
        }
        for bad in ["8.8.8.8", "198.20.0.1", "172.32.0.1", "100.64.0.1"] {
            assert!(check_target(bad.parse().unwrap(), false).is_err(), "{bad}");
            assert!(check_target(bad.parse().unwrap(), true).is_ok(), "{bad}");
        }
        for never in ["255.255.255.255", "224.0.0.1", "0.0.0.0"] {
            assert!(
                check_target(never.parse().unwrap(), true).is_err(),
                "{never}"
            );
        }
    }

    fn args(extra: &[&str]) -> Result<Plan, String> {
        let mut v = vec![
            "ringlease-loadgen",
            "--server",
            "127.0.0.1:6767",
            "--giaddr",
            "127.0.0.2",
        ];
        v.extend_from_slice(extra);
        plan(&Cli::try_parse_from(v).map_err(|e| e.to_string())?.run)
    }

    #[test]
    fn bounded_by_design() {
        assert!(args(&["--rate", "10"]).unwrap_err().contains("bounded"));
        assert!(args(&["--rate", "10", "--exchanges", "5"]).is_ok());
        assert!(args(&["--exchanges", "5"]).unwrap_err().contains("--rate"));
        assert!(args(&["--find-max", "--exchanges", "5"]).is_err());
        assert!(args(&["--find-max", "--rate", "5", "--duration", "5"]).is_err());
        let p = args(&["--find-max", "--duration", "5"]).unwrap();
        assert!(p.find_max);
        assert_eq!(p.relay, "127.0.0.2:6767".parse().unwrap());
        assert!(args(&["--rate", "1", "--duration", "1", "--scenario", "nope"]).is_err());
        assert!(args(&["--rate", "1", "--duration", "1", "--scenario", "mix"]).is_err());
        assert!(args(&[
            "--rate",
            "1",
            "--duration",
            "1",
            "--scenario",
            "mix",
            "--mix",
            "renew=1"
        ])
        .is_ok());
    }

    #[test]
    fn several_servers() {
        let one = args(&["--rate", "1", "--duration", "1"]).unwrap();
        assert_eq!(
            one.settings.servers,
            vec!["127.0.0.1:6767".parse::<SocketAddrV4>().unwrap()]
        );
        let p = args(&[
            "--rate",
            "1",
            "--duration",
            "1",
            "--server",
            "127.0.0.3, 10.0.0.1:6768",
            "--server",
            "192.168.1.1",
        ])
        .unwrap();
        let want: Vec<SocketAddrV4> = [
            "127.0.0.1:6767",
            "127.0.0.3:67",
            "10.0.0.1:6768",
            "192.168.1.1:67",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(p.settings.servers, want);
        assert_eq!(
            p.relay,
            "127.0.0.2:6767".parse().unwrap(),
            "the first server's port"
        );
        let err = |extra: &[&str]| {
            let mut v = vec!["--rate", "1", "--duration", "1"];
            v.extend_from_slice(extra);
            args(&v).unwrap_err()
        };
        assert!(err(&["--server", "127.0.0.1:6767"]).contains("twice"));
        assert!(err(&["--server", "8.8.8.8"]).contains("--allow-remote"));
        assert!(err(&["--server", "nope"]).contains("not IP"));
        assert!(err(&["--server", "127.0.0.2:6767"]).contains("relay"));
        let many: Vec<String> = (3..12).map(|i| format!("127.0.0.{i}")).collect();
        assert!(err(&["--server", &many.join(",")]).contains("at most"));
        let none = plan(
            &Cli::try_parse_from([
                "ringlease-loadgen",
                "--giaddr",
                "127.0.0.2",
                "--rate",
                "1",
                "--duration",
                "1",
            ])
            .unwrap()
            .run,
        );
        assert!(none.unwrap_err().contains("required"));
    }
}

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringlease::config::Config;
use ringlease::{demo, shell};

#[derive(Parser)]
#[command(
    name = "ringlease",
    about = "A fast DHCPv4 server for ISPs",
    disable_version_flag = true,
    subcommand_required = false,
    arg_required_else_help = true
)]
struct Cli {
    /// Print the version and the datagram backend this machine would use.
    #[arg(short = 'V', long)]
    version: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DHCP with the given configuration until SIGINT or SIGTERM.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig { file: PathBuf },
    /// Talk to a running server over its control socket (root only).
    Ctl(ringlease::control::CtlArgs),
    /// Convert an ISC dhcpd configuration and leases file into a ringlease configuration and
    /// lease log, with a report of what could not be converted.
    ImportIsc(ringlease::migrate::ImportIscArgs),
    /// Show, check or apply a CPU/IRQ tuning profile (tuning/*.toml).
    Tune(ringlease::tune::TuneArgs),
    /// Inspect a lease log directory (read-only; safe beside a running server).
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Run the server with an embedded configuration on loopback and drive simulated clients at it.
    Demo {
        /// Simulated clients (each does one DORA exchange).
        #[arg(long, default_value_t = 20_000)]
        clients: u32,
        /// Upper bound on the run, seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Replay every file and report records, bindings, torn tails and corrupt records. Exits
    /// non-zero if there is damage in the middle of a file.
    Verify { dir: PathBuf },
    /// Print the current binding of every address (or of one address / hardware address), then
    /// the failover relationships' recorded states (without --ip/--hw).
    Dump {
        dir: PathBuf,
        /// Only this address.
        #[arg(long, conflicts_with = "hw")]
        ip: Option<std::net::Ipv4Addr>,
        /// Only this hardware address (aa:bb:cc:dd:ee:ff, Ethernet).
        #[arg(long)]
        hw: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let command = match cli.command {
        Some(command) if !cli.version => command,
        _ => {
            print_version();
            return ExitCode::SUCCESS;
        }
    };
    let result = match command {
        Command::Tune(args) => ringlease::tune::run(args),
        Command::Ctl(args) => ringlease::control::ctl_main(args),
        Command::ImportIsc(args) => ringlease::migrate::run(args),
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { file } => Config::from_file(&file)
            .map(|c| {
                println!(
                    "{}: valid ({} subnets, {} workers)",
                    file.display(),
                    c.subnets.all().len(),
                    c.server.worker_cores.len()
                )
            })
            .map_err(|e| format!("{}: {e}", file.display())),
        Command::Log { command } => log_command(command),
        Command::Demo { clients, seconds } => demo::run(demo::DemoOptions {
            clients,
            duration: Duration::from_secs(seconds),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ringlease: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `ringlease --version`: the version, and which datagram backend `backend = "auto"` picks here.
fn print_version() {
    let backend = match ringlease_ring::probe_io_uring() {
        Ok(()) => "io_uring".to_string(),
        Err(why) => format!("fallback (io_uring unavailable: {why})"),
    };
    println!("ringlease {}", env!("CARGO_PKG_VERSION"));
    println!("datagram backend: {backend}");
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into log files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(path: &std::path::Path) -> Result<(), String> {
    let config = Config::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    let worker_cores: Vec<usize> = shell::worker_cores(&config)?
        .into_iter()
        .flatten()
        .collect();
    let running = shell::start(&config, stop)?;
    let control =
        match ringlease::control::start(&running, &config, Some(path.to_path_buf()), &worker_cores)
        {
            Ok(control) => control,
            Err(e) => {
                running.join();
                return Err(e);
            }
        };
    tracing::info!(
        backend = running.backend.name(),
        workers = config.server.worker_cores.len(),
        listen = ?config.server.listen,
        subnets = config.subnets.all().len(),
        "ready"
    );
    let metrics = running.run_until_stopped();
    drop(control);
    tracing::info!("stopped");
    eprint!("{}", metrics.summary());
    Ok(())
}

fn log_command(command: LogCommand) -> Result<(), String> {
    use ringlease::leaselog::verify;
    use ringlease::proto::lease::ClientKey;
    match command {
        LogCommand::Verify { dir } => {
            let replayed = verify(&dir).map_err(|e| e.to_string())?;
            let r = &replayed.report;
            println!(
                "{}: {} segments, {} snapshots, {} records, {} bindings, {} relationships, highest seq {}",
                dir.display(),
                r.segments,
                r.snapshots,
                r.records,
                r.bindings,
                r.relationships,
                r.max_seq
            );
            for (path, offset, bytes) in &r.torn_tails {
                println!(
                    "torn tail: {} at offset {offset}, {bytes} bytes (truncated at the next start)",
                    path.display()
                );
            }
            for (path, offset) in &r.corrupt {
                println!("corrupt record: {} at offset {offset}", path.display());
            }
            if r.corrupt.is_empty() {
                Ok(())
            } else {
                Err(format!("{} corrupt records", r.corrupt.len()))
            }
        }
        LogCommand::Dump { dir, ip, hw } => {
            let replayed = verify(&dir).map_err(|e| e.to_string())?;
            let hw_key = match hw {
                Some(text) => {
                    let bytes: Result<Vec<u8>, _> = text
                        .split([':', '-'])
                        .map(|p| u8::from_str_radix(p, 16))
                        .collect();
                    let bytes =
                        bytes.map_err(|_| format!("--hw {text}: not a hardware address"))?;
                    Some(ClientKey::from_hardware(1, &bytes))
                }
                None => None,
            };
            println!("seq\taddress\tstate\texpires\tsince\tcltt\tpet\tacked_pet\tclient");
            for b in &replayed.bindings {
                if ip.is_some_and(|ip| ip != b.ip) {
                    continue;
                }
                if hw_key.as_ref().is_some_and(|k| k.as_bytes() != &*b.client) {
                    continue;
                }
                let client = if b.client.is_empty() {
                    "-".to_string()
                } else {
                    ClientKey::from_bytes(&b.client).to_string()
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    b.seq,
                    b.ip,
                    b.state.name(),
                    b.expires_s,
                    b.state_since_s,
                    b.cltt_s,
                    b.potential_expiry_s,
                    b.partner_expiry_s,
                    client
                );
            }
            // Failover relationships' last recorded states: not bindings, so not under a filter.
            if ip.is_none() && hw_key.is_none() {
                for r in &replayed.relationships {
                    // Escaped: a name must not break the line or the columns.
                    let name = String::from_utf8_lossy(&r.name);
                    println!(
                        "relationship\t{}\tstate {}\tsince {}\tmclt {}\tseq {}",
                        name.escape_debug(),
                        r.state,
                        r.entered_at_s,
                        r.mclt_s,
                        r.seq
                    );
                }
            }
            Ok(())
        }
    }
}

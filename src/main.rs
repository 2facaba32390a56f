use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringlease::config::Config;
use ringlease::{demo, shell};

#[derive(Parser)]
#[command(name = "ringlease", version, about = "A fast DHCPv4 server for ISPs")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let result = match cli.command {
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

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    let running = shell::start(&config, stop)?;
    tracing::info!(
        backend = running.backend.name(),
        workers = config.server.worker_cores.len(),
        listen = ?config.server.listen,
        subnets = config.subnets.all().len(),
        "ready"
    );
    let metrics = running.run_until_stopped();
    tracing::info!("stopped");
    eprint!("{}", metrics.summary());
    Ok(())
}

//! `ringlease import-isc`: an ISC dhcpd configuration into a ringlease configuration, and its
//! lease file into a lease log, with a report of everything that could not be converted.
//!
//! - [`convert_conf`] / [`convert_conf_with`]: `dhcpd.conf` text into `ringlease.toml` text
//!   (subnets, shared networks, ranges and pools, fixed-address hosts, options, lease times,
//!   the failover peer as a commented `[failover]` section).
//! - [`convert_leases`]: `dhcpd.leases` text into lease log bindings for the converted subnets.
//! - [`run`]: both, written into a directory, the report printed.
//!
//! Nothing here guesses silently: every statement that is not converted, or converted with a
//! change of meaning, is a [`Report`] entry with its line.

pub mod conf;
pub mod leases;
mod lex;
mod options;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

pub use conf::{convert_conf, convert_conf_with, ConvertOptions};
pub use leases::{convert_leases, parse_leases, IscLease, IscTime};

/// Which input file a report entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Conf,
    Leases,
}

/// How much a report entry matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Converted, but with a change worth knowing, or ignored without effect.
    Note,
    /// Not converted: ringlease will behave differently unless the operator acts.
    NotConverted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub source: Source,
    /// 1-based line of the input file, when the entry is about one place.
    pub line: Option<usize>,
    pub severity: Severity,
    pub message: String,
}

/// What the conversion could not do, or did with a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub entries: Vec<Entry>,
}

impl Report {
    fn push(&mut self, source: Source, line: Option<usize>, severity: Severity, message: String) {
        let entry = Entry {
            source,
            line,
            severity,
            message,
        };
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    pub(crate) fn not_converted(
        &mut self,
        source: Source,
        line: Option<usize>,
        message: impl Into<String>,
    ) {
        self.push(source, line, Severity::NotConverted, message.into());
    }

    pub(crate) fn note(&mut self, source: Source, line: Option<usize>, message: impl Into<String>) {
        self.push(source, line, Severity::Note, message.into());
    }

    pub fn extend(&mut self, other: Report) {
        for e in other.entries {
            self.push(e.source, e.line, e.severity, e.message);
        }
    }

    /// Entries that need the operator.
    pub fn not_converted_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.severity == Severity::NotConverted)
            .count()
    }

    /// Is there an entry whose message contains `needle` (with this line, if given)?
    pub fn mentions(&self, line: Option<usize>, needle: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.message.contains(needle) && (line.is_none() || e.line == line))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (severity, title) in [
            (Severity::NotConverted, "NOT CONVERTED (review these)"),
            (Severity::Note, "Notes"),
        ] {
            let mut entries: Vec<&Entry> = self
                .entries
                .iter()
                .filter(|e| e.severity == severity)
                .collect();
            if entries.is_empty() {
                continue;
            }
            entries.sort_by_key(|e| (e.source == Source::Leases, e.line.unwrap_or(0)));
            writeln!(f, "{title}:")?;
            for e in entries {
                let file = match e.source {
                    Source::Conf => "dhcpd.conf",
                    Source::Leases => "dhcpd.leases",
                };
                match e.line {
                    Some(line) => writeln!(f, "  {file}:{line}: {}", e.message)?,
                    None => writeln!(f, "  {file}: {}", e.message)?,
                }
            }
        }
        Ok(())
    }
}

/// `ringlease import-isc`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportIscArgs {
    /// The ISC dhcpd configuration (dhcpd.conf).
    #[arg(long)]
    pub conf: PathBuf,
    /// The ISC dhcpd lease file (dhcpd.leases); without it no lease log is written.
    #[arg(long)]
    pub leases: Option<PathBuf>,
    /// Output directory: ringlease.toml, import-report.txt and the lease log in leases/.
    #[arg(long)]
    pub out: PathBuf,
    /// This server's address (option 54), when dhcpd.conf does not say it (server-identifier,
    /// or the failover peer's own address).
    #[arg(long)]
    pub server_id: Option<Ipv4Addr>,
    /// Addresses to listen on (default 0.0.0.0:67, or dhcpd.conf's local-address/local-port).
    #[arg(long)]
    pub listen: Vec<SocketAddrV4>,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Converts, writes `OUT/ringlease.toml`, `OUT/import-report.txt` and the lease log
/// `OUT/leases/` (one snapshot, written atomically), and prints the report. Refuses to
/// overwrite an earlier import. `Err` when nothing usable came out.
pub fn run(args: ImportIscArgs) -> Result<(), String> {
    let conf_text = read(&args.conf)?;
    let leases_text = args.leases.as_deref().map(read).transpose()?;

    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let out = args
        .out
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    let toml_path = out.join("ringlease.toml");
    let lease_dir = out.join("leases");
    if toml_path.exists() {
        return Err(format!(
            "{} exists already: remove it, or choose another --out",
            toml_path.display()
        ));
    }
    if std::fs::read_dir(&lease_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} is not empty: import into a fresh directory",
            lease_dir.display()
        ));
    }

    let options = ConvertOptions {
        server_id: args.server_id,
        listen: args.listen.clone(),
        lease_dir: lease_dir.display().to_string(),
    };
    let (toml, mut report) = convert_conf_with(&conf_text, &options)?;
    let config = crate::config::Config::from_toml(&toml)
        .map_err(|e| format!("the converted configuration is invalid ({e}); this is a bug"))?;

    let mut written = 0;
    if let Some(text) = &leases_text {
        let (bindings, lease_report) = convert_leases(text, &config.subnets, now_s());
        report.extend(lease_report);
        let (log, replayed) = crate::leaselog::LeaseLog::open(
            &lease_dir,
            crate::leaselog::LogOptions {
                segment_bytes: config.server.log_segment_bytes,
                compact_at_bytes: config.server.log_compact_bytes,
            },
        )
        .map_err(|e| e.to_string())?;
        if !replayed.bindings.is_empty() {
            return Err(format!("{} holds leases already", lease_dir.display()));
        }
        log.write_snapshot(bindings.iter().map(|b| b.as_ref()))
            .map_err(|e| e.to_string())?;
        written = bindings.len();
    }

    std::fs::write(&toml_path, &toml)
        .map_err(|e| format!("cannot write {}: {e}", toml_path.display()))?;
    let report_text = report.to_string();
    let report_path = out.join("import-report.txt");
    std::fs::write(&report_path, &report_text)
        .map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;

    println!("wrote {}", toml_path.display());
    if leases_text.is_some() {
        println!("wrote {written} leases into {}", lease_dir.display());
    }
    println!(
        "{} item(s) not converted, {} note(s); the report is also in {}",
        report.not_converted_count(),
        report.entries.len() - report.not_converted_count(),
        report_path.display()
    );
    print!("{report_text}");
    Ok(())
}

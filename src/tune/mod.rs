//! Tuning profiles (`tuning/*.toml`): which cores run the DHCP workers, the failover core and
//! the NIC's interrupts, and the kernel settings the appliance wants (socket buffers,
//! busy-poll, RPS/XPS, NIC rings and interrupt coalescing, CPU governor).
//!
//! `ringlease tune show` prints what a profile would change and the current values,
//! `tune check` reports drift (non-zero exit), `tune apply --yes` (root) applies it. The server
//! reads the same profile to pin its workers ([`Profile::worker_cores`]), so the profile is the
//! one source of truth for thread placement.
//!
//! Everything is read through [`Sys`], rooted at `/` on a real machine and at a fake tree in
//! tests.

mod plan;
mod profile;
mod sys;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use plan::{
    apply, compute, render_check, render_show, Action, ApplyReport, Change, Plan, Status,
};
pub use profile::{CoreSpec, CpuProfile, NicProfile, NumaNode, Placement, Profile, ProfileError};
pub use sys::{format_cpulist, format_mask, parse_cpulist, parse_mask, Irq, Sys};

/// `ringlease tune …`
#[derive(clap::Args, Debug, Clone)]
pub struct TuneArgs {
    #[command(subcommand)]
    pub command: TuneCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum TuneCommand {
    /// Print every setting of the profile: current value, wanted value, and what `apply` would do.
    Show {
        /// The tuning profile (e.g. tuning/server-16core.toml).
        #[arg(long)]
        profile: PathBuf,
        /// The interface the DHCP traffic arrives on.
        #[arg(long)]
        iface: String,
    },
    /// Print only the settings that drifted from the profile; exit non-zero if any did.
    Check {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        iface: String,
    },
    /// Apply the profile (root only), then re-read and report what did not stick.
    Apply {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        iface: String,
        /// Really change the system (without it, nothing is touched).
        #[arg(long)]
        yes: bool,
    },
}

/// Run a `tune` subcommand on this machine; prints its report. `Err` → non-zero exit.
pub fn run(args: TuneArgs) -> Result<(), String> {
    let sys = Sys::real();
    match args.command {
        TuneCommand::Show { profile, iface } => {
            let profile = load_profile(&profile)?;
            let plan = compute(&sys, &profile, &iface)?;
            print!("{}", render_show(&plan));
            Ok(())
        }
        TuneCommand::Check { profile, iface } => {
            let profile = load_profile(&profile)?;
            let plan = compute(&sys, &profile, &iface)?;
            print!("{}", render_check(&plan));
            match plan.drift_count() {
                0 => Ok(()),
                n => Err(format!("{n} settings drifted")),
            }
        }
        TuneCommand::Apply {
            profile: path,
            iface,
            yes,
        } => {
            let profile = load_profile(&path)?;
            let plan = compute(&sys, &profile, &iface)?;
            if !yes {
                print!("{}", render_show(&plan));
                return Err(
                    "nothing applied: `tune apply` changes the system only with --yes".into(),
                );
            }
            if !is_root() {
                return Err("`tune apply` must run as root (effective uid 0)".into());
            }
            let report = apply(&sys, &profile, &plan, |_| true)?;
            for line in &report.lines {
                println!("{line}");
            }
            match report.failed {
                0 => {
                    println!("profile {} applied to {iface}", profile.name);
                    Ok(())
                }
                n => Err(format!("{n} settings failed or did not stick")),
            }
        }
    }
}

/// Read and validate a profile; the error names the file and the key.
pub fn load_profile(path: &Path) -> Result<Profile, String> {
    Profile::from_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Profile {
    /// The CPUs to pin the DHCP workers to (one worker per entry), resolved on this machine.
    /// `iface` locates the NIC's NUMA node for `node:` lists and `numa_node = "nic"`.
    pub fn worker_cores(&self, iface: Option<&str>) -> Result<Vec<usize>, String> {
        self.worker_cores_on(&Sys::real(), iface)
    }

    /// The CPU for the failover thread, if the profile names one.
    pub fn failover_core(&self, iface: Option<&str>) -> Result<Option<usize>, String> {
        self.failover_core_on(&Sys::real(), iface)
    }

    /// [`Profile::worker_cores`] on the machine `sys` describes.
    pub fn worker_cores_on(&self, sys: &Sys, iface: Option<&str>) -> Result<Vec<usize>, String> {
        self.resolved(sys, iface).map(|p| p.workers)
    }

    /// [`Profile::failover_core`] on the machine `sys` describes.
    pub fn failover_core_on(
        &self,
        sys: &Sys,
        iface: Option<&str>,
    ) -> Result<Option<usize>, String> {
        self.resolved(sys, iface).map(|p| p.failover)
    }

    fn resolved(&self, sys: &Sys, iface: Option<&str>) -> Result<Placement, String> {
        if let Some(iface) = iface {
            validate_iface(iface)?;
        }
        self.placement(sys, iface).map_err(|problems| {
            format!(
                "tuning profile {} does not fit this machine: {}",
                self.name,
                problems.join("; ")
            )
        })
    }
}

/// An interface name the kernel could have: 1–15 bytes, no '/', no whitespace, not "." or "..".
pub(crate) fn validate_iface(iface: &str) -> Result<(), String> {
    let ok = !iface.is_empty()
        && iface.len() <= 15
        && iface != "."
        && iface != ".."
        && !iface
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!("'{iface}' is not an interface name"))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

//! The lease log's promises, end to end with the real binary: a lease that was ACKed survives
//! `kill -9` (the server replays it and gives the address to its client and no other), and a
//! full disk stops ACKs without stopping OFFERs, then heals by itself when space returns.
//!
//! Traffic is loopback unicast only: the test plays a relay agent at 127.0.0.3, the server
//! listens on 127.0.0.1, both on a port derived from the test's pid.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::relay::{Relay, SERVER};
use common::{read_lossy, require_root, wait_for, Child, TempDir};
use ringlease::proto::wire::dhcp::MessageType;

const SERVER_ID: Ipv4Addr = SERVER;

fn port(offset: u16) -> u16 {
    20_000 + (std::process::id() % 20_000) as u16 + offset
}

fn config(port: u16, lease_dir: &Path, extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = ["{SERVER}:{port}"]
server_id = "{SERVER_ID}"
workers = 1
lease_dir = "{}"
durability = "sync"
{extra_server}

[control]
socket = "{}.control.sock"

[[subnet]]
prefix = "127.0.0.0/8"
pools = ["127.20.0.1-127.20.255.254"]
lease_time = 3600
"#,
        lease_dir.display(),
        // Beside the test's port: tests run in parallel, each with its own server.
        std::env::temp_dir()
            .join(format!("ringlease-durability-{port}"))
            .display()
    )
}

/// Starts `ringlease serve` and waits for its `ready` line.
fn start(dir: &TempDir, name: &str, config: &str) -> Child {
    let config_path = dir.write(&format!("{name}.toml"), config, false);
    let log = dir.join(&format!("{name}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlease"));
    cmd.arg("serve").arg("--config").arg(&config_path);
    let mut child = Child::spawn(name, cmd, &log);
    let ready = wait_for(Duration::from_secs(20), || {
        assert!(
            child.try_status().is_none(),
            "{name} exited early:\n{}",
            read_lossy(&log)
        );
        read_lossy(&log).contains("ready").then_some(())
    });
    assert!(
        ready.is_some(),
        "{name} never got ready:\n{}",
        read_lossy(&log)
    );
    child
}

fn kill_9(server: &mut Child) {
    let (status, _) = server.stop("KILL", Duration::from_secs(5));
    assert!(
        !status.success(),
        "SIGKILL should end the server abnormally"
    );
}

/// Every ACKed lease is still the client's after kill -9: INIT-REBOOT gets an ACK for the same
/// address, and new clients get other addresses.
#[test]
fn acked_leases_survive_kill_9() {
    let dir = TempDir::new("durability");
    let lease_dir = dir.join("leases");
    let port = port(0);
    let cfg = config(port, &lease_dir, "");
    let relay = Relay::new(port);

    let mut server = start(&dir, "first", &cfg);
    let acked: Vec<(u32, Ipv4Addr)> = (0..400)
        .map(|i| {
            (
                i,
                relay
                    .dora(i)
                    .unwrap_or_else(|| panic!("client {i} got no lease")),
            )
        })
        .collect();
    kill_9(&mut server);

    // The operator's view of the same log.
    let ringlease = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ringlease"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir_arg = lease_dir.to_str().unwrap();
    assert!(ringlease(&["log", "verify", dir_arg]).contains("400 bindings"));
    let (_, ip) = acked[7];
    let dump = ringlease(&["log", "dump", dir_arg, "--ip", &ip.to_string()]);
    assert!(
        dump.contains(&format!("\t{ip}\tbound\t")) && dump.contains("hw 02:dd:00:00:00:07"),
        "{dump}"
    );

    let server = start(&dir, "restarted", &cfg);
    assert!(
        server.log().contains("bindings=400"),
        "replay should find the 400 bindings:\n{}",
        server.log()
    );
    for &(i, ip) in &acked {
        assert_eq!(
            relay.reboot(i, ip),
            Some((MessageType::Ack, ip)),
            "client {i} lost {ip} across kill -9"
        );
    }
    let old: std::collections::HashSet<Ipv4Addr> = acked.iter().map(|&(_, ip)| ip).collect();
    for i in 1000..1400 {
        let ip = relay.dora(i).expect("new client gets a lease");
        assert!(
            !old.contains(&ip),
            "{ip} handed to new client {i} while still leased"
        );
    }
    // Another client asking for a leased address is refused.
    let (_, first_ip) = acked[0];
    assert_eq!(
        relay.reboot(5000, first_ip).map(|(t, _)| t),
        Some(MessageType::Nak)
    );
    drop(server);
}

/// A small tmpfs owned by the test, unmounted on drop.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fills the filesystem at `dir` with one file until it is full.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [0xA5u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

/// With the disk full the server keeps offering but grants no lease it could not record; when
/// space returns it grants again, by itself, and what it granted survives kill -9.
#[test]
fn full_disk_stops_acks_and_heals() {
    require_root();
    let dir = TempDir::new("fulldisk");
    let mount = Tmpfs::mount(dir.join("disk"), "512k");
    let lease_dir = mount.path.join("leases");
    let port = port(1);
    // Small segments, so the log needs a new one soon after the disk fills.
    let cfg = config(port, &lease_dir, "log_segment_bytes = 65536");
    let relay = Relay::new(port);
    let mut server = start(&dir, "fulldisk", &cfg);

    let mut acked = Vec::new();
    let filler = fill(&mount.path);
    // The current segment still has room; keep asking until the log needs a segment it
    // cannot get.
    let mut refused = None;
    for i in 0..3000 {
        let offered = relay
            .discover(i)
            .expect("OFFERs go on while the disk is full");
        match relay.ask(i, MessageType::Request, Some(offered), Some(SERVER_ID)) {
            Some((MessageType::Ack, ip)) => acked.push((i, ip)),
            None => {
                refused = Some(i);
                break;
            }
            other => panic!("client {i}: unexpected {other:?}"),
        }
    }
    let refused = refused.expect("a full disk must stop ACKs");
    // Still no ACK while full, still OFFERs.
    assert!(relay.discover(refused).is_some());
    assert_eq!(
        relay.ask(
            refused,
            MessageType::Request,
            relay.discover(refused),
            Some(SERVER_ID)
        ),
        None
    );
    assert!(server.log().contains("no space left"), "{}", server.log());

    std::fs::remove_file(filler).unwrap();
    for i in refused..refused + 200 {
        let ip = relay.dora(i).expect("ACKs resume once space returns");
        acked.push((i, ip));
    }
    assert!(server.log().contains("writable again"), "{}", server.log());

    kill_9(&mut server);
    let _server = start(&dir, "fulldisk-restarted", &cfg);
    for &(i, ip) in &acked {
        assert_eq!(
            relay.reboot(i, ip),
            Some((MessageType::Ack, ip)),
            "client {i}"
        );
    }
}

/// Compaction runs while the server serves: with tiny segments and a low compaction threshold,
/// the log is compacted several times during a run, and after kill -9 every ACKed lease is
/// still there.
#[test]
fn compaction_while_serving_keeps_every_lease() {
    let dir = TempDir::new("compaction");
    let lease_dir = dir.join("leases");
    let port = port(2);
    let cfg = config(
        port,
        &lease_dir,
        "log_segment_bytes = 65536\nlog_compact_bytes = 131072",
    );
    let relay = Relay::new(port);
    let mut server = start(&dir, "compacting", &cfg);
    let mut acked = Vec::new();
    for i in 0..3000 {
        acked.push((i, relay.dora(i).expect("lease")));
        // Renew some, so the log holds superseded records for compaction to drop.
        if i % 3 == 0 {
            let (_, ip) = acked[i as usize / 2];
            assert_eq!(relay.reboot(i / 2, ip), Some((MessageType::Ack, ip)));
        }
    }
    let compacted = wait_for(Duration::from_secs(10), || {
        server.log().contains("lease log compacted").then_some(())
    });
    assert!(
        compacted.is_some(),
        "no compaction happened:\n{}",
        server.log()
    );
    let snapshots = std::fs::read_dir(&lease_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("snap-"))
        })
        .count();
    assert!(snapshots >= 1, "a snapshot file should exist");
    kill_9(&mut server);

    let _server = start(&dir, "compacted-restarted", &cfg);
    for &(i, ip) in &acked {
        assert_eq!(
            relay.reboot(i, ip),
            Some((MessageType::Ack, ip)),
            "client {i}"
        );
    }
}

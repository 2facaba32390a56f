//! Auto falls back (with the reason) when io_uring is blocked, as a container's seccomp profile would do it.
//! The parent test re-runs this test binary with RINGLEASE_SECCOMP_CHILD set; the child blocks io_uring_setup with
//! EPERM for its thread before anything touches io_uring, so the process-wide probe sees the block.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    process::Command,
};

use ringlease_ring::{
    open_groups, open_io, probe_io_uring, Backend, BackendChoice, GroupConfig, RingParams, Steering,
};

const CHILD_ENV: &str = "RINGLEASE_SECCOMP_CHILD";

/// Installs a seccomp filter on the calling thread: io_uring_setup fails with EPERM, everything else is allowed.
fn block_io_uring_setup() {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == io_uring_setup: next, else skip one
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: plain prctl calls; `prog` points at `filter`, both alive during the call (the kernel copies them).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const _
            ),
            0
        );
    }
}

fn worker_sockets() -> Vec<UdpSocket> {
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = GroupConfig {
        addrs: vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)],
        workers: 1,
        steering: Steering::None,
        recv_buffer_bytes: None,
        send_buffer_bytes: None,
    };
    open_groups(&cfg).unwrap().remove(0)
}

#[test]
fn auto_falls_back_when_seccomp_blocks_io_uring() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "auto_falls_back_when_seccomp_blocks_io_uring",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHILD-OK"),
        "child did not run its checks:\n{stdout}\n{stderr}"
    );
}

fn child() {
    block_io_uring_setup();
    let reason = probe_io_uring().unwrap_err();
    assert!(
        reason.contains("EPERM") && reason.contains("seccomp"),
        "{reason}"
    );
    let io = open_io(worker_sockets(), BackendChoice::Auto, RingParams::default()).unwrap();
    assert_eq!(io.backend(), Backend::Fallback);
    let e = open_io(
        worker_sockets(),
        BackendChoice::IoUring,
        RingParams::default(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("seccomp"), "{e}");
    println!("CHILD-OK: {reason}");
}

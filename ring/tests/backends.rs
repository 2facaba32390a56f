//! Behaviour tests run against both backends (the `backend_tests!` macro instantiates every test per backend).
//! Loopback only (127.0.0.1, ports picked by the kernel), no broadcast.

use std::{
    collections::{BTreeSet, HashMap},
    io::Write,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use ringlease_ring::{
    open_groups, open_io, steering_index, Backend, BackendChoice, DatagramIo, GroupConfig,
    RingParams, SendQueue, Steering, SyncState, CHADDR_OFFSET,
};

const WAIT: Duration = Duration::from_secs(5);

/// A port nobody uses right now (the kernel picks it; the probe socket is closed before we bind).
fn free_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lo_ifindex() -> u32 {
    // SAFETY: a NUL-terminated string literal.
    unsafe { libc::if_nametoindex(c"lo".as_ptr()) }
}

fn config(addrs: Vec<SocketAddrV4>, workers: usize, steering: Steering) -> GroupConfig {
    GroupConfig {
        addrs,
        workers,
        steering,
        recv_buffer_bytes: Some(4 << 20),
        send_buffer_bytes: Some(1 << 20),
    }
}

/// Opens `workers` workers on `naddrs` fresh loopback ports.
fn open_workers(
    choice: BackendChoice,
    workers: usize,
    naddrs: usize,
    params: RingParams,
) -> (Vec<Box<dyn DatagramIo>>, Vec<SocketAddrV4>) {
    let addrs: Vec<SocketAddrV4> = (0..naddrs)
        .map(|_| SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()))
        .collect();
    let groups = open_groups(&config(addrs.clone(), workers, Steering::ChaddrHash)).unwrap();
    assert_eq!(groups.len(), workers);
    let ios = groups
        .into_iter()
        .map(|socks| {
            assert_eq!(socks.len(), naddrs);
            let io = open_io(socks, choice, params).unwrap();
            let want = if choice == BackendChoice::Fallback {
                Backend::Fallback
            } else {
                Backend::IoUring
            };
            assert_eq!(io.backend(), want);
            io
        })
        .collect();
    (ios, addrs)
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    // Room for a whole test batch of replies (the default ~208 KiB holds fewer than 100 of 1000 bytes).
    let size: libc::c_int = 4 << 20;
    // SAFETY: a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE (tests run as root)");
    c
}

#[derive(Debug, Clone)]
struct Got {
    data: Vec<u8>,
    src: SocketAddrV4,
    dst: Ipv4Addr,
    ifindex: u32,
    socket: usize,
}

/// Calls recv_batch (at most `max` per call) until `count` datagrams arrived or WAIT passed.
fn recv_n(io: &mut dyn DatagramIo, count: usize, max: usize) -> Vec<Got> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < count && Instant::now() < deadline {
        let n = io
            .recv_batch(max, Duration::from_millis(100), &mut |r| {
                out.push(Got {
                    data: r.data.to_vec(),
                    src: r.src,
                    dst: r.dst,
                    ifindex: r.ifindex,
                    socket: r.socket,
                })
            })
            .unwrap();
        assert!(n <= max, "recv_batch delivered {n} > max {max}");
    }
    out
}

/// A DHCP-sized payload whose chaddr is `mac`.
fn payload_with_chaddr(mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; 300];
    p[0] = 1;
    p[CHADDR_OFFSET..CHADDR_OFFSET + 6].copy_from_slice(&mac);
    p
}

fn small_params() -> RingParams {
    RingParams {
        entries: 64,
        buffers: 64,
        buffer_size: 2048,
    }
}

fn echo_round_trip(choice: BackendChoice) {
    let (mut ios, addrs) = open_workers(choice, 1, 1, RingParams::default());
    let io = &mut *ios[0];
    let c = client();
    let caddr = match c.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    c.send_to(b"hello ring", addrs[0]).unwrap();
    let got = recv_n(io, 1, 16);
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.data, b"hello ring");
    assert_eq!(g.src, caddr);
    assert_eq!(g.dst, Ipv4Addr::LOCALHOST);
    assert_eq!(g.ifindex, lo_ifindex());
    assert_eq!(g.socket, 0);

    let mut q = SendQueue::new(8);
    assert!(q.push(0, g.src, None, |buf| {
        buf[..9].copy_from_slice(b"reply one");
        9
    }));
    assert!(q.push(0, g.src, Some(g.ifindex), |buf| {
        buf[..9].copy_from_slice(b"reply two");
        9
    }));
    let report = io.send_batch(&mut q).unwrap();
    assert_eq!(report.sent, 2, "{report:?}");
    assert_eq!(report.failed, 0);
    assert!(q.is_empty());
    let mut buf = [0u8; 64];
    let mut replies = BTreeSet::new();
    for _ in 0..2 {
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(from, std::net::SocketAddr::V4(addrs[0]));
        replies.insert(buf[..n].to_vec());
    }
    assert!(replies.contains(&b"reply one"[..]) && replies.contains(&b"reply two"[..]));
}

fn batch_of_200_none_lost(choice: BackendChoice) {
    // 64 buffers for 200 datagrams: the ring must be refilled as datagrams are handled.
    let (mut ios, addrs) = open_workers(choice, 1, 1, small_params());
    let io = &mut *ios[0];
    io.recv_batch(1, Duration::ZERO, &mut |_| {}).unwrap();
    let c = client();
    for i in 0u32..200 {
        let mut p = vec![(i % 251) as u8; 100 + (i as usize % 50)];
        p[..4].copy_from_slice(&i.to_be_bytes());
        c.send_to(&p, addrs[0]).unwrap();
    }
    let got = recv_n(io, 200, 32);
    assert_eq!(got.len(), 200, "lost datagrams");
    let mut seen = BTreeSet::new();
    for g in &got {
        let i = u32::from_be_bytes(g.data[..4].try_into().unwrap());
        assert_eq!(g.data.len(), 100 + (i as usize % 50));
        assert!(
            g.data[4..].iter().all(|&b| b == (i % 251) as u8),
            "payload of {i} corrupted"
        );
        seen.insert(i);
    }
    assert_eq!(seen.len(), 200);
    assert_eq!(io.truncated(), 0);
}

fn timeout_returns_zero(choice: BackendChoice) {
    let (mut ios, _) = open_workers(choice, 1, 1, small_params());
    let t = Instant::now();
    let n = ios[0]
        .recv_batch(16, Duration::from_millis(60), &mut |_| {
            panic!("no datagram expected")
        })
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "returned after {:?}",
        t.elapsed()
    );
    assert_eq!(
        ios[0]
            .recv_batch(16, Duration::ZERO, &mut |_| panic!("no datagram expected"))
            .unwrap(),
        0
    );
    assert_eq!(
        ios[0]
            .recv_batch(0, Duration::from_millis(10), &mut |_| panic!("max 0"))
            .unwrap(),
        0
    );
}

fn oversized_is_truncated_and_next_delivered(choice: BackendChoice) {
    let params = small_params();
    let (mut ios, addrs) = open_workers(choice, 1, 1, params);
    let io = &mut *ios[0];
    let c = client();
    c.send_to(&vec![7u8; params.max_payload() + 1], addrs[0])
        .unwrap();
    c.send_to(&vec![8u8; params.max_payload()], addrs[0])
        .unwrap();
    c.send_to(b"after", addrs[0]).unwrap();
    let got = recv_n(io, 2, 16);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].data,
        vec![8u8; params.max_payload()],
        "largest datagram that fits is delivered whole"
    );
    assert_eq!(got[1].data, b"after");
    assert_eq!(io.truncated(), 1);
}

fn sync_data_on_temp_file(choice: BackendChoice) {
    let (mut ios, _) = open_workers(choice, 1, 1, small_params());
    let path = std::env::temp_dir().join(format!(
        "ringlease-ring-sync-{}-{:?}",
        std::process::id(),
        choice
    ));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"lease log record\n").unwrap();
    ios[0].sync_data(f.as_raw_fd()).unwrap();
    let e = ios[0].sync_data(-1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    drop(f);
    std::fs::remove_file(&path).unwrap();
}

/// A temp file holding `bytes` unsynced bytes, removed on drop.
struct TempFile {
    file: std::fs::File,
    path: PathBuf,
}

impl TempFile {
    fn new(tag: &str, choice: BackendChoice, bytes: usize) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "ringlease-ring-{tag}-{}-{choice:?}",
            std::process::id()
        ));
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            file.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        TempFile { file, path }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Polls sync_state (no other call enters the kernel) until the group is Done; returns its result.
fn wait_sync(io: &mut dyn DatagramIo) -> std::io::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        match io.sync_state() {
            Some(SyncState::Done(r)) => return r,
            Some(SyncState::InFlight) => {
                assert!(Instant::now() < deadline, "sync group never completed");
                std::thread::sleep(Duration::from_millis(1));
            }
            None => panic!("no sync group"),
        }
    }
}

fn assert_would_block(r: std::io::Result<()>) {
    let e = r.expect_err("a second sync group must be refused");
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
}

fn sync_group_on_two_files(choice: BackendChoice) {
    let (mut ios, _) = open_workers(choice, 1, 1, small_params());
    let io = &mut *ios[0];
    assert!(io.sync_state().is_none(), "no group started yet");
    let a = TempFile::new("group-a", choice, 256 * 1024);
    let b = TempFile::new("group-b", choice, 4096);
    io.start_sync(&[a.fd(), b.fd()]).unwrap();
    // In flight (io_uring) or finished but not taken (both): a second group is refused and changes nothing.
    assert_would_block(io.start_sync(&[a.fd()]));
    wait_sync(io).unwrap();
    assert!(io.sync_state().is_none(), "Done is reported once");
    assert!(io.sync_state().is_none());
    // Once taken, the next group starts; an empty group is Done at once.
    io.start_sync(&[b.fd()]).unwrap();
    wait_sync(io).unwrap();
    io.start_sync(&[]).unwrap();
    assert!(matches!(io.sync_state(), Some(SyncState::Done(Ok(())))));
    assert!(io.sync_state().is_none());
}

fn sync_group_bad_fd(choice: BackendChoice) {
    let (mut ios, _) = open_workers(choice, 1, 1, small_params());
    let io = &mut *ios[0];
    io.start_sync(&[-1]).unwrap();
    let e = wait_sync(io).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    assert!(io.sync_state().is_none());
    // One bad fd among good ones: the others are synced, the group reports the error.
    let a = TempFile::new("badfd-a", choice, 4096);
    let b = TempFile::new("badfd-b", choice, 4096);
    io.start_sync(&[a.fd(), -1, b.fd()]).unwrap();
    let e = wait_sync(io).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    assert!(io.sync_state().is_none());
}

fn recv_returns_when_sync_group_completes(choice: BackendChoice) {
    let (mut ios, _) = open_workers(choice, 1, 1, small_params());
    let io = &mut *ios[0];
    io.recv_batch(1, Duration::ZERO, &mut |_| {}).unwrap();
    let f = TempFile::new("early", choice, 1 << 20);
    io.start_sync(&[f.fd()]).unwrap();
    let t = Instant::now();
    let n = io
        .recv_batch(16, Duration::from_secs(5), &mut |_| {
            panic!("no datagram expected")
        })
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "recv_batch slept through the sync completion ({:?})",
        t.elapsed()
    );
    // It returned because the group is done, not because of a timeout.
    assert!(matches!(io.sync_state(), Some(SyncState::Done(Ok(())))));
    assert!(io.sync_state().is_none());
    // With the result taken, recv_batch waits out its timeout again.
    let t = Instant::now();
    let n = io
        .recv_batch(16, Duration::from_millis(60), &mut |_| {
            panic!("no datagram expected")
        })
        .unwrap();
    assert_eq!(n, 0);
    assert!(t.elapsed() >= Duration::from_millis(50));
}

fn datagrams_during_sync_group_none_lost(choice: BackendChoice) {
    const N: u32 = 150;
    let (mut ios, addrs) = open_workers(choice, 1, 1, small_params());
    let io = &mut *ios[0];
    io.recv_batch(1, Duration::ZERO, &mut |_| {}).unwrap();
    let c = client();
    let caddr = match c.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let f = TempFile::new("pipelined", choice, 8 << 20);
    io.start_sync(&[f.fd()]).unwrap();
    for i in 0..N {
        c.send_to(&i.to_be_bytes(), addrs[0]).unwrap();
    }
    // Replies go out while the group may still be in flight.
    let mut q = SendQueue::new(32);
    for i in 0u8..32 {
        assert!(q.push(0, caddr, None, |b| {
            b[0] = i;
            1
        }));
    }
    let r = io.send_batch(&mut q).unwrap();
    assert_eq!((r.sent, r.failed), (32, 0));
    let mut buf = [0u8; 16];
    let mut replies = BTreeSet::new();
    for _ in 0..32 {
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(n, 1);
        replies.insert(buf[0]);
    }
    assert_eq!(replies.len(), 32);
    // Every datagram arrives through later recv_batch calls; the group's result is reported exactly once.
    let mut seen = BTreeSet::new();
    let mut results = Vec::new();
    let deadline = Instant::now() + WAIT;
    while (seen.len() < N as usize || results.is_empty()) && Instant::now() < deadline {
        io.recv_batch(16, Duration::from_millis(100), &mut |r| {
            assert!(seen.insert(u32::from_be_bytes(r.data.try_into().unwrap())));
        })
        .unwrap();
        match io.sync_state() {
            Some(SyncState::Done(r)) => results.push(r),
            Some(SyncState::InFlight) => assert!(results.is_empty()),
            None => assert_eq!(results.len(), 1, "group vanished without a result"),
        }
    }
    assert_eq!(seen.len(), N as usize, "lost datagrams");
    assert_eq!(results.len(), 1);
    results.pop().unwrap().unwrap();
    assert!(io.sync_state().is_none());
}

fn sync_data_while_group_in_flight(choice: BackendChoice) {
    let (mut ios, _) = open_workers(choice, 1, 1, small_params());
    let io = &mut *ios[0];
    let a = TempFile::new("both-a", choice, 4 << 20);
    let b = TempFile::new("both-b", choice, 4096);
    io.start_sync(&[a.fd()]).unwrap();
    io.sync_data(b.fd()).unwrap();
    let e = io.sync_data(-1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    // The blocking syncs neither took nor disturbed the group's result.
    wait_sync(io).unwrap();
    assert!(io.sync_state().is_none());
}

fn drop_with_sync_group_in_flight(choice: BackendChoice) {
    let (mut ios, addrs) = open_workers(choice, 1, 1, small_params());
    let mut io = ios.pop().unwrap();
    io.recv_batch(1, Duration::ZERO, &mut |_| {}).unwrap();
    let f = TempFile::new("drop", choice, 8 << 20);
    io.start_sync(&[f.fd()]).unwrap();
    client().send_to(b"pending", addrs[0]).unwrap();
    let t = Instant::now();
    drop(io);
    assert!(t.elapsed() < Duration::from_secs(10), "drop hung");
    // The group's fsync finished before the ring was gone (or the kernel finished it): the data is on disk either
    // way, and the fd is still ours to use.
    f.file.sync_data().unwrap();
}

fn two_addresses_report_socket_index(choice: BackendChoice) {
    let (mut ios, addrs) = open_workers(choice, 1, 2, small_params());
    let io = &mut *ios[0];
    let c = client();
    c.send_to(b"to-0", addrs[0]).unwrap();
    c.send_to(b"to-1", addrs[1]).unwrap();
    let got = recv_n(io, 2, 16);
    assert_eq!(got.len(), 2);
    for g in &got {
        let want = if g.data == b"to-0" { 0 } else { 1 };
        assert_eq!(g.socket, want, "{g:?}");
    }
    // Replies leave from the socket they are queued on.
    let mut q = SendQueue::new(4);
    let caddr = got[0].src;
    q.push(1, caddr, None, |b| {
        b[0] = b'x';
        1
    });
    q.push(9, caddr, None, |b| {
        b[0] = b'y';
        1
    }); // no such socket
    assert!(
        q.push(0, caddr, None, |_| 0),
        "zero length: accepted, slot released"
    );
    assert_eq!(q.len(), 2);
    let r = io.send_batch(&mut q).unwrap();
    assert_eq!((r.sent, r.failed), (1, 1));
    let mut buf = [0u8; 8];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"x");
    assert_eq!(from, std::net::SocketAddr::V4(addrs[1]));
}

fn large_send_batch(choice: BackendChoice) {
    // More replies than the SQ has entries: sent in several submits, none lost.
    let params = RingParams {
        entries: 16,
        ..small_params()
    };
    let (mut ios, _) = open_workers(choice, 1, 1, params);
    let c = client();
    let caddr = match c.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let mut q = SendQueue::new(100);
    for i in 0u8..100 {
        assert!(q.push(0, caddr, None, |b| {
            b[0] = i;
            b[1..1000].fill(i);
            1000
        }));
    }
    assert!(!q.push(0, caddr, None, |_| panic!("full queue must not call fill")));
    let r = ios[0].send_batch(&mut q).unwrap();
    assert_eq!((r.sent, r.failed), (100, 0));
    let mut seen = BTreeSet::new();
    let mut buf = [0u8; 2048];
    for _ in 0..100 {
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(n, 1000);
        seen.insert(buf[0]);
    }
    assert_eq!(seen.len(), 100);
}

fn moves_between_threads(choice: BackendChoice) {
    // Built on this thread, armed and used on a worker thread that then exits (the kernel cancels receives a thread
    // submitted when it exits), handed back and used again here: the receive must be re-armed transparently.
    let (mut ios, addrs) = open_workers(choice, 1, 1, small_params());
    let io = ios.pop().unwrap();
    let c = client();
    c.send_to(b"one", addrs[0]).unwrap();
    let mut io = std::thread::spawn(move || {
        let mut io = io;
        let got = recv_n(&mut *io, 1, 4);
        assert_eq!(got[0].data, b"one");
        io
    })
    .join()
    .unwrap();
    c.send_to(b"two", addrs[0]).unwrap();
    let got = recv_n(&mut *io, 1, 4);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"two");
    // Dropping with datagrams pending and a receive armed must be clean.
    c.send_to(b"three", addrs[0]).unwrap();
    drop(io);
}

/// Receives from every worker until `count` datagrams arrived; returns (worker, payload) pairs.
fn recv_all_workers(ios: &mut [Box<dyn DatagramIo>], count: usize) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < count && Instant::now() < deadline {
        for (w, io) in ios.iter_mut().enumerate() {
            io.recv_batch(64, Duration::from_millis(5), &mut |r| {
                out.push((w, r.data.to_vec()))
            })
            .unwrap();
        }
    }
    out
}

fn steering_by_chaddr(choice: BackendChoice, workers: usize) {
    let (mut ios, addrs) = open_workers(choice, workers, 1, small_params());
    for io in ios.iter_mut() {
        io.recv_batch(1, Duration::ZERO, &mut |_| {}).unwrap();
    }
    // 64 chaddrs, each sent 3 times from 3 different source ports (so the kernel's 4-tuple hash would differ).
    let clients: Vec<UdpSocket> = (0..3).map(|_| client()).collect();
    let macs: Vec<[u8; 6]> = (0u8..64)
        .map(|i| [0x52, 0x54, 0x00, i.wrapping_mul(37), 0x10, i])
        .collect();
    for mac in &macs {
        for c in &clients {
            c.send_to(&payload_with_chaddr(*mac), addrs[0]).unwrap();
        }
    }
    // A short datagram (no chaddr) is not dropped: the program sends it to worker 0.
    clients[0].send_to(b"short", addrs[0]).unwrap();
    let got = recv_all_workers(&mut ios, macs.len() * 3 + 1);
    assert_eq!(got.len(), macs.len() * 3 + 1);
    let mut worker_of: HashMap<Vec<u8>, BTreeSet<usize>> = HashMap::new();
    let mut per_worker = vec![0usize; workers];
    for (w, data) in &got {
        per_worker[*w] += 1;
        assert_eq!(
            *w,
            steering_index(data, workers),
            "kernel program and steering_index disagree"
        );
        if data.len() >= CHADDR_OFFSET + 6 {
            worker_of
                .entry(data[CHADDR_OFFSET..CHADDR_OFFSET + 6].to_vec())
                .or_default()
                .insert(*w);
        } else {
            assert_eq!(*w, 0, "short datagram goes to worker 0");
        }
    }
    assert_eq!(worker_of.len(), 64);
    assert!(
        worker_of.values().all(|ws| ws.len() == 1),
        "a chaddr landed on several workers"
    );
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "a worker got nothing: {per_worker:?}"
    );
}

macro_rules! backend_tests {
    ($module:ident, $choice:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn echo_round_trip() {
                super::echo_round_trip($choice);
            }
            #[test]
            fn batch_of_200_none_lost() {
                super::batch_of_200_none_lost($choice);
            }
            #[test]
            fn timeout_returns_zero() {
                super::timeout_returns_zero($choice);
            }
            #[test]
            fn oversized_is_truncated_and_next_delivered() {
                super::oversized_is_truncated_and_next_delivered($choice);
            }
            #[test]
            fn sync_data_on_temp_file() {
                super::sync_data_on_temp_file($choice);
            }
            #[test]
            fn sync_group_on_two_files() {
                super::sync_group_on_two_files($choice);
            }
            #[test]
            fn sync_group_bad_fd() {
                super::sync_group_bad_fd($choice);
            }
            #[test]
            fn recv_returns_when_sync_group_completes() {
                super::recv_returns_when_sync_group_completes($choice);
            }
            #[test]
            fn datagrams_during_sync_group_none_lost() {
                super::datagrams_during_sync_group_none_lost($choice);
            }
            #[test]
            fn sync_data_while_group_in_flight() {
                super::sync_data_while_group_in_flight($choice);
            }
            #[test]
            fn drop_with_sync_group_in_flight() {
                super::drop_with_sync_group_in_flight($choice);
            }
            #[test]
            fn two_addresses_report_socket_index() {
                super::two_addresses_report_socket_index($choice);
            }
            #[test]
            fn large_send_batch() {
                super::large_send_batch($choice);
            }
            #[test]
            fn moves_between_threads() {
                super::moves_between_threads($choice);
            }
            #[test]
            fn steering_two_workers() {
                super::steering_by_chaddr($choice, 2);
            }
            #[test]
            fn steering_three_workers() {
                super::steering_by_chaddr($choice, 3);
            }
        }
    };
}

backend_tests!(io_uring, BackendChoice::IoUring);
backend_tests!(fallback, BackendChoice::Fallback);

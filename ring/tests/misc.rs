//! Backend choice, the probe, the io_uring ENOBUFS path, SendQueue, steering_index, open_groups errors, affinity.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use ringlease_ring::{
    available_cores, open_groups, open_io, pin_current_thread, probe_io_uring, steering_index,
    Backend, BackendChoice, GroupConfig, RingParams, SendQueue, Steering, CHADDR_OFFSET, SLOT_SIZE,
};

fn free_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn one_worker(addr: SocketAddrV4) -> Vec<UdpSocket> {
    let cfg = GroupConfig {
        addrs: vec![addr],
        workers: 1,
        steering: Steering::None,
        recv_buffer_bytes: Some(4 << 20),
        send_buffer_bytes: None,
    };
    open_groups(&cfg).unwrap().remove(0)
}

#[test]
fn probe_is_ok_here() {
    assert_eq!(probe_io_uring(), Ok(()));
    // Cached verdict.
    assert_eq!(probe_io_uring(), Ok(()));
}

#[test]
fn auto_picks_io_uring_here() {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
    let io = open_io(one_worker(addr), BackendChoice::Auto, RingParams::default()).unwrap();
    assert_eq!(io.backend(), Backend::IoUring);
    assert_eq!(io.backend().name(), "io_uring");
}

#[test]
fn fallback_when_asked() {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
    let io = open_io(
        one_worker(addr),
        BackendChoice::Fallback,
        RingParams::default(),
    )
    .unwrap();
    assert_eq!(io.backend(), Backend::Fallback);
    assert_eq!(io.backend().name(), "fallback");
}

#[test]
fn invalid_ring_params_rejected() {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
    for params in [
        RingParams {
            buffers: 1000,
            ..RingParams::default()
        },
        RingParams {
            buffer_size: 16,
            ..RingParams::default()
        },
        RingParams {
            entries: 0,
            ..RingParams::default()
        },
    ] {
        let e = open_io(one_worker(addr), BackendChoice::Auto, params)
            .err()
            .expect("invalid params accepted");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}

/// More datagrams in flight than buffers: the multishot receive runs out of buffers (ENOBUFS), is re-armed, and
/// every datagram still arrives (they wait in the socket meanwhile).
#[test]
fn io_uring_survives_buffer_ring_exhaustion() {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
    let params = RingParams {
        entries: 32,
        buffers: 4,
        buffer_size: 512,
    };
    let mut io = open_io(one_worker(addr), BackendChoice::IoUring, params).unwrap();
    // Arm the receive, then flood it before handling anything.
    assert_eq!(io.recv_batch(8, Duration::ZERO, &mut |_| {}).unwrap(), 0);
    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    for i in 0u32..200 {
        c.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 200 && Instant::now() < deadline {
        io.recv_batch(3, Duration::from_millis(100), &mut |r| {
            seen.push(u32::from_be_bytes(r.data.try_into().unwrap()))
        })
        .unwrap();
    }
    assert_eq!(
        seen,
        (0..200).collect::<Vec<_>>(),
        "datagrams lost or reordered"
    );
    assert!(
        io.ring_exhausted() > 0,
        "the buffer ring never ran dry; the test did not exercise ENOBUFS"
    );
}

#[test]
fn send_queue_bounds() {
    let mut q = SendQueue::new(2);
    assert_eq!(q.capacity(), 2);
    assert!(q.is_empty());
    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    assert!(q.push(0, dst, None, |b| {
        assert_eq!(b.len(), SLOT_SIZE);
        0
    }));
    assert_eq!(q.len(), 0, "length 0 releases the slot");
    assert!(q.push(0, dst, None, |_| 10));
    assert!(q.push(0, dst, Some(1), |_| SLOT_SIZE + 100));
    assert!(!q.push(0, dst, None, |_| panic!("fill called on a full queue")));
    assert_eq!(q.len(), 2);
    q.clear();
    assert!(q.is_empty());
    assert_eq!(SendQueue::new(0).capacity(), 1);
}

#[test]
fn steering_index_properties() {
    let mut p = vec![0u8; 300];
    assert_eq!(steering_index(&p[..33], 4), 0, "short payload → worker 0");
    assert_eq!(steering_index(&p, 1), 0);
    assert_eq!(steering_index(&p, 0), 0);
    let mut counts = [0usize; 4];
    for i in 0u32..4000 {
        // Same OUI, varying NIC-specific bytes, like a real access network.
        p[CHADDR_OFFSET..CHADDR_OFFSET + 6].copy_from_slice(&[
            0x00,
            0x1b,
            0x21,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ]);
        let w = steering_index(&p, 4);
        assert_eq!(w, steering_index(&p, 4));
        counts[w] += 1;
    }
    assert!(
        counts.iter().all(|&c| (800..1200).contains(&c)),
        "unbalanced: {counts:?}"
    );
    // Bytes outside chaddr do not matter.
    let a = steering_index(&p, 7);
    p[0] = 2;
    p[200] = 9;
    assert_eq!(steering_index(&p, 7), a);
}

#[test]
fn open_groups_validates_and_explains_bind_errors() {
    let cfg = |addrs, workers| GroupConfig {
        addrs,
        workers,
        steering: Steering::ChaddrHash,
        recv_buffer_bytes: None,
        send_buffer_bytes: None,
    };
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
    assert_eq!(
        open_groups(&cfg(vec![addr], 0)).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        open_groups(&cfg(vec![], 1)).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        open_groups(&cfg(vec![addr, addr], 1)).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    // Someone holds the port without SO_REUSEPORT.
    let holder = UdpSocket::bind(addr).unwrap();
    let e = open_groups(&cfg(vec![addr], 2)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    drop(holder);
    let groups = open_groups(&cfg(vec![addr], 2)).unwrap();
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().all(|g| g.len() == 1));
}

#[test]
fn affinity() {
    let cores = available_cores();
    assert!(!cores.is_empty());
    let core = cores[0];
    let t = std::thread::spawn(move || pin_current_thread(core));
    assert!(t.join().unwrap());
    assert!(!pin_current_thread(usize::MAX));
}

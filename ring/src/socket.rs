//! Socket setup (SO_REUSEPORT groups, the chaddr steering program) and the byte-level helpers both backends share:
//! parsing sockaddr_in / IP_PKTINFO from received bytes and building sendmsg headers for a [`SendQueue`].

use std::{
    io,
    mem::size_of,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{GroupConfig, SendQueue, Steering};

/// Byte offset of the DHCP `chaddr` field in the UDP payload.
pub const CHADDR_OFFSET: usize = 28;
/// Bytes of `chaddr` that are hashed (an Ethernet MAC).
pub const CHADDR_LEN: usize = 6;
/// Largest worker count a group accepts.
pub const MAX_WORKERS: usize = 1024;
/// Largest number of listen addresses.
pub const MAX_ADDRS: usize = 64;

/// Space for the IP_PKTINFO control message we receive (CMSG_SPACE(sizeof(in_pktinfo)) = 32 on 64-bit Linux), with
/// room to spare so an unexpected extra cmsg does not truncate it.
pub(crate) const RECV_CONTROL_LEN: usize = 64;
/// sizeof(struct sockaddr_in).
pub(crate) const SOCKADDR_IN_LEN: usize = size_of::<libc::sockaddr_in>();
/// sizeof(struct io_uring_recvmsg_out): the header the kernel puts in front of each multishot recvmsg buffer.
const RECVMSG_OUT_LEN: usize = 16;
/// Receive buffer bytes not available to the payload (same for both backends so they truncate alike).
pub(crate) const RECV_HEADROOM: usize = RECVMSG_OUT_LEN + SOCKADDR_IN_LEN + RECV_CONTROL_LEN;

/// Multiplier constants of the steering hash (golden ratio and murmur3's fmix32 constant).
const HASH_K1: u32 = 0x9E37_79B1;
const HASH_K2: u32 = 0x85EB_CA6B;

/// The worker a datagram is steered to; mirrors the classic-BPF program attached to each group:
///
/// ```text
/// if payload.len() < 34 { return 0 }             // short packet: worker 0 (never dropped)
/// a = u32::from_be_bytes(payload[28..32])        // chaddr[0..4]
/// b = u16::from_be_bytes(payload[32..34])        // chaddr[4..6]
/// h = (a * 0x9E3779B1 ^ b) * 0x85EBCA6B          // wrapping u32
/// h ^= h >> 16
/// return h % workers
/// ```
pub fn steering_index(payload: &[u8], workers: usize) -> usize {
    if workers <= 1 || payload.len() < CHADDR_OFFSET + CHADDR_LEN {
        return 0;
    }
    let workers = workers.min(MAX_WORKERS) as u32;
    let c = &payload[CHADDR_OFFSET..CHADDR_OFFSET + CHADDR_LEN];
    let a = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    let b = u32::from(u16::from_be_bytes([c[4], c[5]]));
    let mut h = (a.wrapping_mul(HASH_K1) ^ b).wrapping_mul(HASH_K2);
    h ^= h >> 16;
    (h % workers) as usize
}

// Classic BPF opcodes (linux/filter.h); defined here so the program reads like the assembly.
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_ABS: u16 = 0x20;
const BPF_LEN: u16 = 0x80;
const BPF_MUL: u16 = 0x20;
const BPF_RSH: u16 = 0x70;
const BPF_XOR: u16 = 0xa0;
const BPF_MOD: u16 = 0x90;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_A: u16 = 0x10;
const BPF_TAX: u16 = 0x00;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The reuseport program: the kernel runs it with the UDP payload at offset 0 and uses the return value as the index
/// of the socket in the group (= bind order = worker index). Same arithmetic as [`steering_index`]; a payload too
/// short to hold chaddr returns 0 explicitly (no load past the end, which would also return 0).
#[rustfmt::skip]
fn steering_program(workers: u32) -> Vec<libc::sock_filter> {
    let min_len = (CHADDR_OFFSET + CHADDR_LEN) as u32;
    let chaddr = CHADDR_OFFSET as u32;
    vec![
        insn(BPF_LD | BPF_W | BPF_LEN,  0, 0, 0),           // A = payload length
        insn(BPF_JMP | BPF_JGE | BPF_K, 1, 0, min_len),     // if A >= 34 skip the next
        insn(BPF_RET | BPF_K,           0, 0, 0),           // short packet: socket 0
        insn(BPF_LD | BPF_H | BPF_ABS,  0, 0, chaddr + 4),  // A = chaddr[4..6]
        insn(BPF_MISC | BPF_TAX,        0, 0, 0),           // X = A
        insn(BPF_LD | BPF_W | BPF_ABS,  0, 0, chaddr),      // A = chaddr[0..4]
        insn(BPF_ALU | BPF_MUL | BPF_K, 0, 0, HASH_K1),     // A *= K1
        insn(BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),           // A ^= X
        insn(BPF_ALU | BPF_MUL | BPF_K, 0, 0, HASH_K2),     // A *= K2
        insn(BPF_MISC | BPF_TAX,        0, 0, 0),           // X = A
        insn(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),          // A >>= 16
        insn(BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),           // A ^= X
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, workers),     // A %= workers
        insn(BPF_RET | BPF_A,           0, 0, 0),           // socket index
    ]
}

fn attach_steering(sock: &Socket, workers: u32) -> io::Result<()> {
    let prog = steering_program(workers);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, both alive for the call; the kernel copies the program during setsockopt.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setsockopt_int(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a socket buffer size: the FORCE variant first (ignores net.core.[rw]mem_max, needs CAP_NET_ADMIN), then the
/// plain one (silently capped by the sysctl).
fn set_buffer(
    sock: &Socket,
    force: libc::c_int,
    plain: libc::c_int,
    bytes: usize,
) -> io::Result<()> {
    // The kernel doubles the value and stores it in an int.
    let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    setsockopt_int(sock, libc::SOL_SOCKET, force, value)
        .or_else(|_| setsockopt_int(sock, libc::SOL_SOCKET, plain, value))
}

/// Asks for IP_PKTINFO on received datagrams.
pub(crate) fn enable_pktinfo(sock: &UdpSocket) -> io::Result<()> {
    setsockopt_int(sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
}

fn open_one(addr: SocketAddrV4, cfg: &GroupConfig) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_broadcast(true)?;
    setsockopt_int(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    sock.set_nonblocking(true)?;
    if let Some(bytes) = cfg.recv_buffer_bytes {
        set_buffer(&sock, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)?;
    }
    if let Some(bytes) = cfg.send_buffer_bytes {
        set_buffer(&sock, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes)?;
    }
    sock.bind(&SockAddr::from(addr))
        .map_err(|e| bind_error(addr, e))?;
    Ok(sock)
}

fn bind_error(addr: SocketAddrV4, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE, e.g. `setcap cap_net_bind_service=+ep` on the binary \
             or AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit)"
        }
        Some(libc::EADDRINUSE) => " (another process holds this address without SO_REUSEPORT, e.g. another DHCP server)",
        Some(libc::EADDRNOTAVAIL) => " (no local interface has this address)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("binding UDP {addr}: {e}{hint}"))
}

/// For each address, `workers` UDP sockets bound with SO_REUSEADDR+SO_REUSEPORT, IP_PKTINFO, SO_BROADCAST,
/// nonblocking; with ChaddrHash and workers > 1 the cBPF program (SO_ATTACH_REUSEPORT_CBPF) is attached to the group,
/// returning [`steering_index`]. Failure to attach is one warning, not an error. Result is indexed
/// [worker][address].
pub fn open_groups(cfg: &GroupConfig) -> io::Result<Vec<Vec<UdpSocket>>> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if cfg.workers == 0 || cfg.workers > MAX_WORKERS {
        return Err(invalid(format!(
            "workers must be 1..={MAX_WORKERS}, got {}",
            cfg.workers
        )));
    }
    if cfg.addrs.is_empty() || cfg.addrs.len() > MAX_ADDRS {
        return Err(invalid(format!(
            "1..={MAX_ADDRS} listen addresses needed, got {}",
            cfg.addrs.len()
        )));
    }
    for (i, a) in cfg.addrs.iter().enumerate() {
        if cfg.addrs[..i].contains(a) {
            return Err(invalid(format!("listen address {a} given twice")));
        }
    }
    let mut out: Vec<Vec<UdpSocket>> = (0..cfg.workers)
        .map(|_| Vec::with_capacity(cfg.addrs.len()))
        .collect();
    for &addr in &cfg.addrs {
        // Bind in worker order: the kernel numbers a reuseport group's sockets in bind order, which is the index the
        // steering program returns.
        let mut group = Vec::with_capacity(cfg.workers);
        for _ in 0..cfg.workers {
            group.push(open_one(addr, cfg)?);
        }
        if cfg.steering == Steering::ChaddrHash && cfg.workers > 1 {
            if let Err(e) = attach_steering(&group[0], cfg.workers as u32) {
                tracing::warn!(
                    "could not attach the chaddr steering program to {addr} ({e}); the kernel's 4-tuple hash picks the worker"
                );
            }
        }
        for (w, sock) in group.into_iter().enumerate() {
            out[w].push(sock.into());
        }
    }
    Ok(out)
}

/// Parses a sockaddr_in as the kernel wrote it (family, port and address in network order).
pub(crate) fn parse_sockaddr_in(name: &[u8]) -> Option<SocketAddrV4> {
    if name.len() < 8 || u16::from_ne_bytes([name[0], name[1]]) != libc::AF_INET as u16 {
        return None;
    }
    let port = u16::from_be_bytes([name[2], name[3]]);
    Some(SocketAddrV4::new(
        Ipv4Addr::new(name[4], name[5], name[6], name[7]),
        port,
    ))
}

const CMSG_HDR_LEN: usize = size_of::<libc::cmsghdr>();
const CMSG_ALIGN: usize = size_of::<usize>();
const PKTINFO_LEN: usize = size_of::<libc::in_pktinfo>();

const fn cmsg_align(len: usize) -> usize {
    (len + CMSG_ALIGN - 1) & !(CMSG_ALIGN - 1)
}

/// Finds IP_PKTINFO in received control bytes: (ipi_addr, ipi_ifindex). Walks the cmsg list by hand (no unsafe):
/// each cmsghdr is {cmsg_len: size_t, cmsg_level: int, cmsg_type: int} followed by data, padded to size_t.
pub(crate) fn parse_pktinfo(control: &[u8]) -> Option<(Ipv4Addr, u32)> {
    let mut off = 0;
    while off + CMSG_HDR_LEN <= control.len() {
        let h = &control[off..off + CMSG_HDR_LEN];
        let mut len_bytes = [0u8; size_of::<usize>()];
        len_bytes.copy_from_slice(&h[..size_of::<usize>()]);
        // On musl cmsg_len is a socklen_t followed by zero padding: reading a size_t is still right on little endian.
        let len = usize::from_ne_bytes(len_bytes);
        let level = i32::from_ne_bytes([
            h[CMSG_HDR_LEN - 8],
            h[CMSG_HDR_LEN - 7],
            h[CMSG_HDR_LEN - 6],
            h[CMSG_HDR_LEN - 5],
        ]);
        let ty = i32::from_ne_bytes([
            h[CMSG_HDR_LEN - 4],
            h[CMSG_HDR_LEN - 3],
            h[CMSG_HDR_LEN - 2],
            h[CMSG_HDR_LEN - 1],
        ]);
        if len < CMSG_HDR_LEN || off + len > control.len() {
            return None;
        }
        if level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO && len >= CMSG_HDR_LEN + PKTINFO_LEN
        {
            // struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
            let d = &control[off + CMSG_HDR_LEN..off + CMSG_HDR_LEN + PKTINFO_LEN];
            let ifindex = i32::from_ne_bytes([d[0], d[1], d[2], d[3]]) as u32;
            return Some((Ipv4Addr::new(d[8], d[9], d[10], d[11]), ifindex));
        }
        off += cmsg_align(len);
    }
    None
}

/// Control buffer for one outgoing IP_PKTINFO cmsg (CMSG_SPACE(sizeof(in_pktinfo)) bytes, aligned like cmsghdr).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct SendControl([u8; SEND_CONTROL_LEN]);
pub(crate) const SEND_CONTROL_LEN: usize = cmsg_align(CMSG_HDR_LEN + PKTINFO_LEN);

impl SendControl {
    /// IP_PKTINFO with ipi_ifindex = `ifindex`, ipi_spec_dst = 0 (kernel picks the source), ipi_addr = 0.
    fn pktinfo(ifindex: u32) -> SendControl {
        let mut b = [0u8; SEND_CONTROL_LEN];
        b[..size_of::<usize>()].copy_from_slice(&(CMSG_HDR_LEN + PKTINFO_LEN).to_ne_bytes());
        b[CMSG_HDR_LEN - 8..CMSG_HDR_LEN - 4].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        b[CMSG_HDR_LEN - 4..CMSG_HDR_LEN].copy_from_slice(&libc::IP_PKTINFO.to_ne_bytes());
        b[CMSG_HDR_LEN..CMSG_HDR_LEN + 4].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        SendControl(b)
    }
}

pub(crate) fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain C data (integers and nullable raw pointers); all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// sendmsg headers for every datagram of a [`SendQueue`], owned by a backend and reused across batches (the vectors
/// only grow when a larger queue comes along). The headers point into this struct and into the queue's slots: they
/// are valid while the queue stays borrowed and this struct is neither moved nor re-prepared.
#[derive(Default)]
pub(crate) struct SendScratch {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrls: Vec<SendControl>,
}

// SAFETY: the raw pointers point into this struct's own vectors and, only while a send is running, into the borrowed
// queue; nothing is tied to a thread.
unsafe impl Send for SendScratch {}

impl SendScratch {
    /// Builds the headers for `queue`; `msgs()[i]` describes queue entry `i`.
    pub(crate) fn prepare(&mut self, queue: &SendQueue) {
        // First the values (safe indexing), then the pointers: pointers are taken from `as_mut_ptr()` after the last
        // resize, so no later reallocation or reference can invalidate them.
        self.addrs.clear();
        self.ctrls.clear();
        self.iovs.clear();
        for (i, m) in queue.meta.iter().enumerate() {
            self.addrs.push(sockaddr_in(m.dst));
            self.ctrls
                .push(SendControl::pktinfo(m.ifindex.unwrap_or(0)));
            self.iovs.push(libc::iovec {
                iov_base: queue.slot_ptr(i) as *mut libc::c_void,
                iov_len: m.len,
            });
        }
        let addrs = self.addrs.as_mut_ptr();
        let ctrls = self.ctrls.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        self.msgs.clear();
        for (i, m) in queue.meta.iter().enumerate() {
            let mut h = zeroed_msghdr();
            h.msg_name = addrs.wrapping_add(i).cast();
            h.msg_namelen = SOCKADDR_IN_LEN as libc::socklen_t;
            h.msg_iov = iovs.wrapping_add(i);
            h.msg_iovlen = 1;
            if m.ifindex.is_some() {
                h.msg_control = ctrls.wrapping_add(i).cast();
                h.msg_controllen = SEND_CONTROL_LEN as _;
            }
            self.msgs.push(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
        }
    }

    pub(crate) fn msgs_mut(&mut self) -> &mut [libc::mmsghdr] {
        &mut self.msgs
    }

    /// Pointer to the msghdr of entry `i` (for an io_uring SENDMSG).
    pub(crate) fn msghdr_ptr(&self, i: usize) -> *const libc::msghdr {
        &self.msgs[i].msg_hdr
    }
}

/// The socket index of queue entry `i` (may be out of range for the backend: such an entry counts as failed).
pub(crate) fn queue_socket(queue: &SendQueue, i: usize) -> usize {
    queue.meta[i].socket
}

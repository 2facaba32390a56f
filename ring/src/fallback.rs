//! The portable backend: nonblocking sockets, ppoll for readiness, recvmmsg/sendmmsg in batches. Same behaviour as
//! the io_uring backend, including the truncation limit (`RingParams::max_payload`).

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use crate::{
    socket::{self, SendScratch, RECV_CONTROL_LEN, SOCKADDR_IN_LEN},
    Backend, DatagramIo, Received, RingParams, SendQueue, SendReport, SyncState,
};

/// Datagrams taken from one socket per recvmmsg call.
const RECV_BATCH: usize = 64;
/// Most datagrams handed to one sendmmsg call (the kernel caps vlen at UIO_MAXIOV = 1024).
const SEND_BATCH: usize = 1024;
/// When a socket's send buffer is full, wait this long once for it to drain before counting the datagram as failed.
const SEND_FULL_WAIT: Duration = Duration::from_millis(10);
/// Longest single ppoll (longer timeouts loop).
const MAX_WAIT: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; RECV_CONTROL_LEN]);

/// recvmmsg headers and the memory they point to: RECV_BATCH slots of name, control and payload.
struct RecvScratch {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    ctrls: Vec<Control>,
    data: Vec<u8>,
    /// Payload bytes per slot.
    cap: usize,
}

// SAFETY: the raw pointers in `msgs`/`iovs` only ever point into this struct's own vectors (rebuilt before each
// use); nothing is tied to a thread.
unsafe impl Send for RecvScratch {}

impl RecvScratch {
    fn new(cap: usize) -> RecvScratch {
        let mut msgs = Vec::with_capacity(RECV_BATCH);
        msgs.resize(
            RECV_BATCH,
            libc::mmsghdr {
                msg_hdr: socket::zeroed_msghdr(),
                msg_len: 0,
            },
        );
        RecvScratch {
            msgs,
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                RECV_BATCH
            ],
            names: vec![
                socket::sockaddr_in(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                RECV_BATCH
            ],
            ctrls: vec![Control([0; RECV_CONTROL_LEN]); RECV_BATCH],
            data: vec![0; RECV_BATCH * cap],
            cap,
        }
    }

    /// Receives up to `n` (<= RECV_BATCH) datagrams from `fd` without blocking.
    fn recv(&mut self, fd: RawFd, n: usize) -> io::Result<usize> {
        let n = n.min(RECV_BATCH);
        // Pointers are rebuilt from as_mut_ptr() each call, so they are fresh and no reference outlives them.
        let data = self.data.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let ctrls = self.ctrls.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: data.wrapping_add(i * self.cap).cast(),
                iov_len: self.cap,
            };
        }
        for (i, m) in self.msgs[..n].iter_mut().enumerate() {
            let h = &mut m.msg_hdr;
            h.msg_name = names.wrapping_add(i).cast();
            h.msg_namelen = SOCKADDR_IN_LEN as libc::socklen_t;
            h.msg_iov = iovs.wrapping_add(i);
            h.msg_iovlen = 1;
            h.msg_control = ctrls.wrapping_add(i).cast();
            h.msg_controllen = RECV_CONTROL_LEN as _;
            h.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: the first `n` headers point at `n` distinct name/control/payload slots of this struct, sized as
        // their lengths say; recvmmsg writes only there and returns before we touch them again.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

pub(crate) struct FallbackIo {
    sockets: Vec<UdpSocket>,
    pollfds: Vec<libc::pollfd>,
    recv: RecvScratch,
    send: SendScratch,
    truncated: u64,
    /// Socket to read first next time, so one busy socket cannot starve the others.
    next_first: usize,
    /// The result of the last `start_sync` group, until `sync_state` takes it.
    sync_result: Option<io::Result<()>>,
}

impl FallbackIo {
    pub(crate) fn new(sockets: Vec<UdpSocket>, params: RingParams) -> io::Result<FallbackIo> {
        for s in &sockets {
            s.set_nonblocking(true)?;
        }
        let pollfds = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(FallbackIo {
            sockets,
            pollfds,
            recv: RecvScratch::new(params.max_payload()),
            send: SendScratch::default(),
            truncated: 0,
            next_first: 0,
            sync_result: None,
        })
    }

    /// ppoll on `fds`: the number of ready descriptors (0 on timeout).
    fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: `fds` is a live slice of pollfd and its length; `ts` lives for the call; no signal mask.
        let rc = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    /// Reads ready datagrams from socket `idx` until it is empty or `budget` were delivered.
    fn drain_socket(
        &mut self,
        idx: usize,
        budget: usize,
        on: &mut dyn FnMut(Received<'_>),
    ) -> usize {
        let fd = self.sockets[idx].as_raw_fd();
        let mut delivered = 0;
        while delivered < budget {
            let want = (budget - delivered).min(RECV_BATCH);
            let n = match self.recv.recv(fd, want) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock
                        && e.kind() != io::ErrorKind::Interrupted
                    {
                        // E.g. a queued ICMP error: reading it cleared it.
                        tracing::debug!("recvmmsg on socket {idx}: {e}");
                    }
                    break;
                }
            };
            for i in 0..n {
                let h = &self.recv.msgs[i];
                if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    self.truncated += 1;
                    continue;
                }
                let name = &self.recv.names[i];
                let src = SocketAddrV4::new(
                    Ipv4Addr::from(name.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(name.sin_port),
                );
                // msg_controllen is size_t on glibc but socklen_t on musl: keep the cast.
                #[allow(clippy::unnecessary_cast)]
                let ctrl_len = (h.msg_hdr.msg_controllen as usize).min(RECV_CONTROL_LEN);
                let (dst, ifindex) = socket::parse_pktinfo(&self.recv.ctrls[i].0[..ctrl_len])
                    .unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
                let len = (h.msg_len as usize).min(self.recv.cap);
                let start = i * self.recv.cap;
                on(Received {
                    data: &self.recv.data[start..start + len],
                    src,
                    dst,
                    ifindex,
                    socket: idx,
                });
                delivered += 1;
            }
            if n < want {
                break;
            }
        }
        delivered
    }

    fn wait_writable(fd: RawFd) {
        let mut p = [libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        }];
        let _ = Self::poll(&mut p, SEND_FULL_WAIT);
    }
}

impl DatagramIo for FallbackIo {
    fn backend(&self) -> Backend {
        Backend::Fallback
    }

    fn recv_batch(
        &mut self,
        max: usize,
        timeout: Duration,
        on_datagram: &mut dyn FnMut(Received<'_>),
    ) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let deadline = Instant::now().checked_add(timeout);
        let n = self.sockets.len();
        loop {
            // A finished sync group whose result is waiting to be taken ends the wait (see the trait).
            let remaining = if self.sync_result.is_some() {
                Duration::ZERO
            } else {
                deadline
                    .map_or(MAX_WAIT, |d| d.saturating_duration_since(Instant::now()))
                    .min(MAX_WAIT)
            };
            match Self::poll(&mut self.pollfds, remaining) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
                Err(e) => return Err(e),
            }
            let mut delivered = 0;
            let first = self.next_first;
            self.next_first = (first + 1) % n;
            for k in 0..n {
                let idx = (first + k) % n;
                let ready = self.pollfds[idx].revents & (libc::POLLIN | libc::POLLERR) != 0;
                if ready && delivered < max {
                    delivered += self.drain_socket(idx, max - delivered, on_datagram);
                }
            }
            if delivered > 0 || remaining.is_zero() {
                return Ok(delivered);
            }
        }
    }

    fn send_batch(&mut self, queue: &mut SendQueue) -> io::Result<SendReport> {
        let n = queue.len();
        let mut report = SendReport::default();
        if n == 0 {
            return Ok(report);
        }
        self.send.prepare(queue);
        let mut i = 0;
        while i < n {
            // A run of entries for the same socket goes out through sendmmsg calls.
            let s = socket::queue_socket(queue, i);
            let mut end = i + 1;
            while end < n && end - i < SEND_BATCH && socket::queue_socket(queue, end) == s {
                end += 1;
            }
            let Some(sock) = self.sockets.get(s) else {
                report.failed += end - i;
                i = end;
                continue;
            };
            let fd = sock.as_raw_fd();
            let mut waited = false;
            while i < end {
                let msgs = &mut self.send.msgs_mut()[i..end];
                // SAFETY: `msgs` are headers built by prepare() for this queue, pointing into the scratch and into
                // the queue's slots, all borrowed for the call; sendmmsg only reads them (and writes msg_len).
                let r =
                    unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
                if r > 0 {
                    report.sent += r as usize;
                    i += r as usize;
                    waited = false;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) if !waited => {
                        Self::wait_writable(fd);
                        waited = true;
                    }
                    _ => {
                        tracing::debug!("sendmsg failed: {e}");
                        report.failed += 1;
                        i += 1;
                        waited = false;
                    }
                }
            }
        }
        queue.clear();
        Ok(report)
    }

    fn sync_data(&mut self, fd: RawFd) -> io::Result<()> {
        fdatasync(fd)
    }

    /// Blocking: runs every fdatasync now (all of them, even after a failure) and keeps the first error.
    fn start_sync(&mut self, fds: &[RawFd]) -> io::Result<()> {
        if self.sync_result.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the previous sync group's result has not been taken (sync_state)",
            ));
        }
        let mut result = Ok(());
        for &fd in fds {
            let r = fdatasync(fd);
            if result.is_ok() {
                result = r;
            }
        }
        self.sync_result = Some(result);
        Ok(())
    }

    fn sync_state(&mut self) -> Option<SyncState> {
        self.sync_result.take().map(SyncState::Done)
    }

    fn truncated(&self) -> u64 {
        self.truncated
    }
}

/// fdatasync(fd), retried on EINTR.
fn fdatasync(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: fdatasync takes any integer; a bad fd yields EBADF.
        if unsafe { libc::fdatasync(fd) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

//! The io_uring backend: one multishot IORING_OP_RECVMSG per socket selecting buffers from one provided buffer ring
//! per worker, sends as a batch of IORING_OP_SENDMSG under one submit, fdatasync as IORING_OP_FSYNC (blocking:
//! `sync_data`; or a non-blocking group: `start_sync`/`sync_state`, whose completions any later enter picks up).
//!
//! Completions are first moved from the CQ into `stash` (a small record each) and handled from there, so a send or
//! fsync waiting for its own completion never loses receive completions that arrive meanwhile. The stash is bounded:
//! every receive completion holds a buffer (at most `buffers` of them) plus one final completion per socket.

use std::{
    collections::VecDeque,
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use crate::{
    bufring::BufRing,
    socket::{self, SendScratch, RECV_CONTROL_LEN, SOCKADDR_IN_LEN},
    Backend, DatagramIo, Received, RingParams, SendQueue, SendReport, SyncState, MIN_BUFFER_SIZE,
};

/// user_data layout: kind in the high 32 bits, index (socket or queue entry) in the low 32 bits.
const UD_RECV: u64 = 1 << 32;
const UD_SEND: u64 = 2 << 32;
const UD_FSYNC: u64 = 3 << 32;
const UD_CANCEL: u64 = 4 << 32;
/// An fsync of the `start_sync` group; the index is the fd's position in the group.
const UD_SYNC_GROUP: u64 = 5 << 32;
const UD_KIND_MASK: u64 = !0xffff_ffff;
const UD_INDEX_MASK: u64 = 0xffff_ffff;

/// The worker's buffer group id (one provided buffer ring per ring).
const BGID: u16 = 0;
/// Upper bound of the completion queue size.
const MAX_CQ_ENTRIES: u32 = 65_536;
/// Longest single wait in the kernel (longer timeouts loop).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How long teardown waits for cancelled receives before it leaks the buffers instead of unmapping them.
const DROP_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long teardown waits for a sync group in flight (an fsync cannot be cancelled once it runs). Past it the ring is
/// closed anyway: the kernel finishes the fsyncs while it tears the ring down (they reference no memory of ours).
const DROP_SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive non-transient io_uring_enter failures tolerated while sends or an fsync are in flight. Their memory
/// belongs to the caller, so we cannot return before they complete; past this bound the process aborts.
const MAX_ENTER_ERRORS: u32 = 1000;
/// How long the probe waits for its loopback datagram.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_PAYLOAD: &[u8] = b"ringlease io_uring probe";

#[derive(Clone, Copy, Debug)]
struct Cqe {
    user_data: u64,
    result: i32,
    flags: u32,
}

/// The recvmsg template for multishot receives: only msg_namelen and msg_controllen matter (they size the name and
/// control areas the kernel lays out in each buffer); the kernel reads it when the receive is armed.
struct MsgTemplate(Box<libc::msghdr>);

// SAFETY: the msghdr holds only null pointers and lengths; nothing in it is tied to a thread.
unsafe impl Send for MsgTemplate {}

/// The `start_sync` group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum SyncGroup {
    #[default]
    Idle,
    /// `pending` fsyncs have not completed; `error`: (position in the group, errno) of the first failure so far.
    InFlight {
        pending: usize,
        error: Option<(u32, i32)>,
    },
    /// Every fsync completed (Some(errno): the first failure); kept until `sync_state` takes it.
    Done(Option<i32>),
}

/// What completions told us, filled by `reap`.
#[derive(Default)]
struct Completions {
    stash: VecDeque<Cqe>,
    sends_in_flight: usize,
    send_report: SendReport,
    fsync: Option<i32>,
    sync: SyncGroup,
}

impl Completions {
    fn take(&mut self, c: Cqe) {
        match c.user_data & UD_KIND_MASK {
            UD_RECV => self.stash.push_back(c),
            UD_SEND => {
                self.sends_in_flight -= 1;
                if c.result >= 0 {
                    self.send_report.sent += 1;
                } else {
                    self.send_report.failed += 1;
                    tracing::debug!(
                        "sendmsg failed: {}",
                        io::Error::from_raw_os_error(-c.result)
                    );
                }
            }
            UD_FSYNC => self.fsync = Some(c.result),
            UD_SYNC_GROUP => self.sync_completed(c),
            _ => {} // UD_CANCEL: the cancelled receive reports itself.
        }
    }

    fn sync_completed(&mut self, c: Cqe) {
        let SyncGroup::InFlight { pending, error } = &mut self.sync else {
            // Cannot happen: a group is never abandoned while fsyncs of it are in flight.
            tracing::warn!("fsync completion without a sync group in flight");
            return;
        };
        let index = (c.user_data & UD_INDEX_MASK) as u32;
        if c.result < 0 && error.is_none_or(|(first, _)| index < first) {
            *error = Some((index, -c.result));
        }
        *pending -= 1;
        if *pending == 0 {
            let first = error.map(|(_, errno)| errno);
            self.sync = SyncGroup::Done(first);
        }
    }
}

pub(crate) struct SetupFailure {
    pub error: io::Error,
    pub reason: String,
    pub sockets: Vec<UdpSocket>,
}

pub(crate) struct UringIo {
    ring: IoUring,
    /// None only during teardown.
    bufs: Option<BufRing>,
    template: MsgTemplate,
    sockets: Vec<UdpSocket>,
    /// Whether socket i has a live multishot receive (submitted and not yet finished).
    armed: Vec<bool>,
    done: Completions,
    scratch: SendScratch,
    truncated: u64,
    exhausted: u64,
    /// A receive ended with an unexpected error; reported by the next recv_batch that delivers nothing.
    recv_error: Option<i32>,
}

/// Builds a ring; COOP_TASKRUN (5.19) keeps completion work from interrupting the thread, it runs on our next
/// io_uring_enter instead. Older kernels reject the flag with EINVAL: retry without.
fn build_ring(entries: u32, cq_entries: u32) -> io::Result<IoUring> {
    let coop = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_clamp()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries);
    match coop {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .build(entries),
        other => other,
    }
}

fn memlock_limit() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the live `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return "unknown".into();
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", lim.rlim_cur / 1024)
    }
}

/// Turns a setup error into a sentence that says what to change.
pub(crate) fn describe_setup_error(what: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => format!(
            "{what} failed with ENOSYS: this kernel has no io_uring (CONFIG_IO_URING off) or a seccomp filter hides it"
        ),
        Some(libc::EPERM) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
            match sysctl.as_deref().map(str::trim) {
                Some("2") => format!("{what} failed with EPERM: io_uring is disabled by sysctl kernel.io_uring_disabled=2"),
                Some("1") => format!(
                    "{what} failed with EPERM: sysctl kernel.io_uring_disabled=1 limits io_uring to CAP_SYS_ADMIN and \
                     members of kernel.io_uring_group"
                ),
                _ => format!(
                    "{what} failed with EPERM: blocked by a seccomp filter (container runtimes' default profiles deny \
                     io_uring_setup; allow io_uring_setup, io_uring_enter and io_uring_register)"
                ),
            }
        }
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => format!(
            "{what} failed with {e}: not enough lockable memory; raise RLIMIT_MEMLOCK (now {}: `ulimit -l`, \
             LimitMEMLOCK= in the systemd unit, memlock in /etc/security/limits.conf) or lower RingParams buffers/entries",
            memlock_limit()
        ),
        Some(libc::EINVAL) => {
            format!("{what} failed with EINVAL: the kernel lacks a needed io_uring feature (Linux 6.0+ needed)")
        }
        _ => format!("{what} failed: {e}"),
    }
}

/// Whether an io_uring_enter error is worth retrying at once.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ETIME)
    )
}

impl UringIo {
    pub(crate) fn new(
        sockets: Vec<UdpSocket>,
        params: RingParams,
    ) -> Result<UringIo, SetupFailure> {
        let fail = |error: io::Error, what: &str, sockets| SetupFailure {
            reason: describe_setup_error(what, &error),
            error,
            sockets,
        };
        // Room for every buffer's completion, a final completion per socket and a full SQ of sends: the CQ cannot
        // overflow (and IORING_FEAT_NODROP covers us if it did).
        let want_cq = u32::from(params.buffers) + 2 * sockets.len() as u32 + params.entries;
        let cq = want_cq
            .next_power_of_two()
            .clamp(2 * params.entries, MAX_CQ_ENTRIES);
        let ring = match build_ring(params.entries, cq) {
            Ok(r) => r,
            Err(e) => return Err(fail(e, "io_uring_setup", sockets)),
        };
        // SAFETY: the BufRing is stored in the returned UringIo next to the ring; Drop cancels the receives and waits
        // for them before it unregisters and unmaps the buffers (or leaks them if the receives do not finish).
        let bufs = match unsafe {
            BufRing::new(&ring.submitter(), params.buffers, params.buffer_size, BGID)
        } {
            Ok(b) => b,
            Err(e) => {
                return Err(fail(
                    e,
                    "registering the provided buffer ring (IORING_REGISTER_PBUF_RING)",
                    sockets,
                ))
            }
        };
        let mut msg = socket::zeroed_msghdr();
        msg.msg_namelen = SOCKADDR_IN_LEN as libc::socklen_t;
        msg.msg_controllen = RECV_CONTROL_LEN as _;
        let n = sockets.len();
        Ok(UringIo {
            ring,
            bufs: Some(bufs),
            template: MsgTemplate(Box::new(msg)),
            armed: vec![false; n],
            sockets,
            done: Completions {
                stash: VecDeque::with_capacity(cq as usize),
                ..Completions::default()
            },
            scratch: SendScratch::default(),
            truncated: 0,
            exhausted: 0,
            recv_error: None,
        })
    }

    fn bufs(&mut self) -> &mut BufRing {
        self.bufs.as_mut().expect("buffer ring present until drop")
    }

    /// Queues an SQE, submitting the SQ first if it is full.
    ///
    /// # Safety
    /// Whatever `sqe` points to must stay valid until its completion is reaped.
    unsafe fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Arms a multishot receive on every socket that has none. Arming happens on the thread that calls recv_batch
    /// (the worker), so the kernel runs the receive work on that thread.
    fn arm_missing(&mut self) -> io::Result<()> {
        for i in 0..self.sockets.len() {
            if self.armed[i] {
                continue;
            }
            let bgid = self.bufs().bgid();
            let sqe = opcode::RecvMsgMulti::new(
                types::Fd(self.sockets[i].as_raw_fd()),
                &*self.template.0,
                bgid,
            )
            .build()
            .user_data(UD_RECV | i as u64);
            // SAFETY: the template is boxed and owned by self (lives as long as the ring); the buffers come from the
            // registered buffer ring, which Drop keeps alive until every receive has finished.
            unsafe { self.push(&sqe)? };
            self.armed[i] = true;
        }
        Ok(())
    }

    /// Moves every available completion into `done`.
    fn reap(&mut self) {
        for c in self.ring.completion() {
            self.done.take(Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
            });
        }
    }

    /// Handles one receive completion: delivers its datagram (when `on` is given), returns its buffer, notes when the
    /// multishot ended. Returns whether a datagram was delivered.
    fn handle_recv(&mut self, c: Cqe, on: Option<&mut dyn FnMut(Received<'_>)>) -> bool {
        let socket = (c.user_data & UD_INDEX_MASK) as usize;
        let mut delivered = false;
        if let Some(bid) = cqueue::buffer_select(c.flags) {
            if c.result >= 0 {
                let bufs = self.bufs.as_ref().expect("buffer ring present until drop");
                // SAFETY: this completion handed `bid` to us and it is recycled only below, after the last use of
                // `data`; `result` is the number of bytes the kernel wrote into it.
                let data = unsafe { bufs.buffer(bid, c.result as usize) };
                match io_uring::types::RecvMsgOut::parse(data, &self.template.0) {
                    Ok(out) if out.is_payload_truncated() => self.truncated += 1,
                    Ok(out) => {
                        if let Some(on) = on {
                            let src = socket::parse_sockaddr_in(out.name_data())
                                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                            let (dst, ifindex) = socket::parse_pktinfo(out.control_data())
                                .unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
                            on(Received {
                                data: out.payload_data(),
                                src,
                                dst,
                                ifindex,
                                socket,
                            });
                            delivered = true;
                        }
                    }
                    Err(()) => {
                        tracing::debug!("malformed multishot recvmsg buffer ({} bytes)", c.result)
                    }
                }
            }
            self.bufs().recycle(bid);
        }
        if !cqueue::more(c.flags) {
            // The multishot receive is over; arm_missing re-arms it.
            if let Some(a) = self.armed.get_mut(socket) {
                *a = false;
            }
            match -c.result {
                libc::ENOBUFS => self.exhausted += 1,
                e if c.result >= 0
                    || e == libc::ECANCELED
                    || e == libc::EINTR
                    || e == libc::EAGAIN => {}
                e => {
                    tracing::debug!(
                        "multishot recvmsg on socket {socket} ended: {}",
                        io::Error::from_raw_os_error(e)
                    );
                    self.recv_error = Some(e);
                }
            }
        }
        delivered
    }

    /// Submits queued SQEs (re-arms) if there are any.
    fn flush(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits for at least `want` completions while operations that borrow caller memory are in flight; see
    /// MAX_ENTER_ERRORS for why this never returns early.
    fn wait_in_flight(&mut self, want: usize, errors: &mut u32) {
        match self.ring.submit_and_wait(want) {
            Ok(_) => *errors = 0,
            Err(e) if transient(&e) => {}
            Err(e) => {
                *errors += 1;
                if *errors > MAX_ENTER_ERRORS {
                    tracing::error!(
                        "io_uring_enter keeps failing ({e}) with operations in flight; aborting"
                    );
                    std::process::abort();
                }
            }
        }
        self.reap();
    }
}

impl DatagramIo for UringIo {
    fn backend(&self) -> Backend {
        Backend::IoUring
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
        let mut delivered = 0;
        let mut last_look = false;
        loop {
            self.reap();
            while delivered < max {
                let Some(c) = self.done.stash.pop_front() else {
                    break;
                };
                if self.handle_recv(c, Some(&mut *on_datagram)) {
                    delivered += 1;
                }
            }
            self.arm_missing()?;
            if delivered > 0 {
                self.flush()?;
                return Ok(delivered);
            }
            if let Some(e) = self.recv_error.take() {
                self.flush()?;
                return Err(io::Error::from_raw_os_error(e));
            }
            if matches!(self.done.sync, SyncGroup::Done(_)) {
                // The sync group completed (during this wait or before it, result not taken yet): the caller has
                // replies to release, do not sleep.
                self.flush()?;
                return Ok(0);
            }
            let remaining = deadline
                .map_or(MAX_WAIT, |d| d.saturating_duration_since(Instant::now()))
                .min(MAX_WAIT);
            if remaining.is_zero() {
                if last_look {
                    return Ok(0);
                }
                // One more enter: with COOP_TASKRUN, receive work queued for us runs only when we enter the kernel.
                last_look = true;
                match self.ring.submit() {
                    Ok(_) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(0),
                    Err(e) if transient(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            let ts = types::Timespec::from(remaining);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(0),
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send_batch(&mut self, queue: &mut SendQueue) -> io::Result<SendReport> {
        let n = queue.len();
        if n == 0 {
            return Ok(SendReport::default());
        }
        self.scratch.prepare(queue);
        self.done.send_report = SendReport::default();
        let mut invalid = 0;
        let mut next = 0;
        let mut errors = 0;
        while next < n || self.done.sends_in_flight > 0 {
            {
                let mut sq = self.ring.submission();
                while next < n {
                    let Some(sock) = self.sockets.get(socket::queue_socket(queue, next)) else {
                        invalid += 1;
                        next += 1;
                        continue;
                    };
                    let sqe = opcode::SendMsg::new(
                        types::Fd(sock.as_raw_fd()),
                        self.scratch.msghdr_ptr(next),
                    )
                    .build()
                    .user_data(UD_SEND | next as u64);
                    // SAFETY: the msghdr, its iovec, sockaddr and control live in self.scratch and point into the
                    // queue's slots; the queue stays borrowed and scratch untouched until this loop has reaped every
                    // send completion (sends_in_flight == 0), errors included (wait_in_flight never gives up).
                    if unsafe { sq.push(&sqe) }.is_err() {
                        break; // SQ full: submit these, then queue the rest.
                    }
                    self.done.sends_in_flight += 1;
                    next += 1;
                }
            }
            if self.done.sends_in_flight > 0 {
                let want = self.done.sends_in_flight;
                self.wait_in_flight(want, &mut errors);
            }
        }
        queue.clear();
        let mut report = self.done.send_report;
        report.failed += invalid;
        Ok(report)
    }

    fn sync_data(&mut self, fd: RawFd) -> io::Result<()> {
        self.done.fsync = None;
        let sqe = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(UD_FSYNC);
        // SAFETY: an fsync references no memory of ours.
        unsafe { self.push(&sqe)? };
        let mut errors = 0;
        loop {
            if let Some(res) = self.done.fsync.take() {
                return if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(())
                };
            }
            self.wait_in_flight(1, &mut errors);
        }
    }

    fn start_sync(&mut self, fds: &[RawFd]) -> io::Result<()> {
        match self.done.sync {
            SyncGroup::Idle => {}
            SyncGroup::InFlight { .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "a sync group is already in flight",
                ))
            }
            SyncGroup::Done(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the previous sync group's result has not been taken (sync_state)",
                ))
            }
        }
        if fds.is_empty() {
            self.done.sync = SyncGroup::Done(None);
            return Ok(());
        }
        // Nothing reaps while the SQEs are queued (push only submits), so `pending` only grows here.
        let mut pending = 0;
        let mut error = None;
        for (i, &fd) in fds.iter().enumerate() {
            let sqe = opcode::Fsync::new(types::Fd(fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(UD_SYNC_GROUP | i as u64);
            // SAFETY: an fsync references no memory of ours (the caller keeps the fd open until the group is done;
            // the kernel holds its own reference to the file meanwhile anyway).
            match unsafe { self.push(&sqe) } {
                Ok(()) => pending += 1,
                Err(e) if pending == 0 => return Err(e),
                Err(e) => {
                    // Some fsyncs are already with the kernel: keep the group, it fails with this error.
                    error = Some((i as u32, e.raw_os_error().unwrap_or(libc::EIO)));
                    break;
                }
            }
        }
        self.done.sync = SyncGroup::InFlight { pending, error };
        // Hand them to the kernel now (fsync is always punted to io-wq: this does not block). Should the enter fail,
        // the SQEs stay queued and go with the next one.
        if let Err(e) = self.flush() {
            tracing::warn!("submitting the sync group failed, retried on the next enter: {e}");
        }
        Ok(())
    }

    fn sync_state(&mut self) -> Option<SyncState> {
        if matches!(self.done.sync, SyncGroup::InFlight { .. }) {
            self.reap();
            let enter = {
                let sq = self.ring.submission();
                // Queued SQEs, completion work waiting for us (COOP_TASKRUN) or overflowed completions: only an enter
                // moves them along (it never waits here).
                !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
            };
            if enter && matches!(self.done.sync, SyncGroup::InFlight { .. }) {
                if let Err(e) = self.ring.submit() {
                    if !transient(&e) {
                        tracing::debug!("io_uring_enter in sync_state: {e}");
                    }
                }
                self.reap();
            }
        }
        match self.done.sync {
            SyncGroup::Idle => None,
            SyncGroup::InFlight { .. } => Some(SyncState::InFlight),
            SyncGroup::Done(errno) => {
                self.done.sync = SyncGroup::Idle;
                Some(SyncState::Done(match errno {
                    None => Ok(()),
                    Some(e) => Err(io::Error::from_raw_os_error(e)),
                }))
            }
        }
    }

    fn truncated(&self) -> u64 {
        self.truncated
    }

    fn ring_exhausted(&self) -> u64 {
        self.exhausted
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // Cancel the receives and wait until each has posted its final completion: only then is no buffer written.
        // Wait for a sync group in flight too (bounded).
        let deadline = Instant::now() + DROP_DRAIN_TIMEOUT;
        let sync_deadline = Instant::now() + DROP_SYNC_TIMEOUT;
        for i in 0..self.sockets.len() {
            if self.armed[i] {
                let sqe = opcode::AsyncCancel::new(UD_RECV | i as u64)
                    .build()
                    .user_data(UD_CANCEL);
                // SAFETY: a cancel references no memory.
                if unsafe { self.push(&sqe) }.is_err() {
                    break;
                }
            }
        }
        loop {
            self.reap();
            while let Some(c) = self.done.stash.pop_front() {
                self.handle_recv(c, None);
            }
            let now = Instant::now();
            let recv_busy = self.armed.iter().any(|&a| a) && now < deadline;
            let sync_busy =
                matches!(self.done.sync, SyncGroup::InFlight { .. }) && now < sync_deadline;
            let until = match (recv_busy, sync_busy) {
                (false, false) => break,
                (true, false) => deadline,
                (false, true) => sync_deadline,
                (true, true) => deadline.min(sync_deadline),
            };
            let ts = types::Timespec::from(until.saturating_duration_since(now));
            let _ = self
                .ring
                .submitter()
                .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
        }
        if matches!(self.done.sync, SyncGroup::InFlight { .. }) {
            tracing::warn!(
                "a sync group was still in flight after {DROP_SYNC_TIMEOUT:?} at teardown; the kernel finishes it"
            );
        }
        let bufs = self.bufs.take().expect("buffer ring present until drop");
        if self.armed.iter().any(|&a| a) {
            tracing::warn!("io_uring receives did not finish at teardown; leaking their buffers");
            bufs.leak();
        } else {
            let _ = self.ring.submitter().unregister_buf_ring(bufs.bgid());
            drop(bufs);
        }
    }
}

/// Required opcodes and the kernel that brought them.
const REQUIRED_OPS: [(u8, &str); 4] = [
    (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG (5.3)"),
    (opcode::SendMsg::CODE, "IORING_OP_SENDMSG (5.3)"),
    (opcode::Fsync::CODE, "IORING_OP_FSYNC (5.1)"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL (5.5)"),
];

/// The io_uring probe behind `probe_io_uring`: ring setup, features, opcodes, then a real multishot recvmsg round trip
/// over loopback (multishot recvmsg and provided buffer rings cannot be seen in the opcode probe).
pub(crate) fn probe() -> Result<(), String> {
    let ring = build_ring(8, 16).map_err(|e| describe_setup_error("io_uring_setup", &e))?;
    let params = ring.params();
    if !params.is_feature_ext_arg() {
        return Err(
            "the kernel lacks IORING_FEAT_EXT_ARG (waiting with a timeout; Linux 5.11+)".into(),
        );
    }
    if !params.is_feature_nodrop() {
        return Err("the kernel lacks IORING_FEAT_NODROP (Linux 5.5+)".into());
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| describe_setup_error("IORING_REGISTER_PROBE", &e))?;
    for (code, name) in REQUIRED_OPS {
        if !probe.is_supported(code) {
            return Err(format!("the kernel does not support {name}"));
        }
    }
    drop(ring);

    let Ok(rx) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        // No loopback (odd namespace): trust the checks above.
        tracing::debug!(
            "io_uring probe: no loopback address, skipping the multishot recvmsg round trip"
        );
        return Ok(());
    };
    let setup = |e: io::Error| format!("io_uring probe socket setup failed: {e}");
    rx.set_nonblocking(true).map_err(setup)?;
    socket::enable_pktinfo(&rx).map_err(setup)?;
    let to = rx.local_addr().map_err(setup)?;
    // A second handle on the socket, to tell "io_uring did not deliver" from "loopback traffic is filtered".
    let peek = rx.try_clone().map_err(setup)?;
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(setup)?;
    let params = RingParams {
        entries: 8,
        buffers: 2,
        buffer_size: MIN_BUFFER_SIZE,
    };
    let mut io = UringIo::new(vec![rx], params).map_err(|f| f.reason)?;
    let multishot = |e: io::Error| match e.raw_os_error() {
        Some(libc::EINVAL) => {
            "multishot recvmsg (IORING_RECV_MULTISHOT with provided buffers) is not supported: \
                               Linux 6.0+ needed"
                .to_string()
        }
        _ => format!("multishot recvmsg failed: {e}"),
    };
    let mut got = false;
    io.recv_batch(1, Duration::ZERO, &mut |_| {})
        .map_err(multishot)?;
    tx.send_to(PROBE_PAYLOAD, to).map_err(setup)?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while !got && Instant::now() < deadline {
        io.recv_batch(
            1,
            deadline.saturating_duration_since(Instant::now()),
            &mut |r| got |= r.data == PROBE_PAYLOAD,
        )
        .map_err(multishot)?;
    }
    drop(io); // cancels the receive
    if got {
        return Ok(());
    }
    let mut buf = [0u8; 64];
    match peek.recv(&mut buf) {
        Ok(_) => Err(format!(
            "multishot recvmsg did not deliver a waiting loopback datagram within {PROBE_TIMEOUT:?}"
        )),
        Err(_) => {
            tracing::debug!(
                "io_uring probe: the loopback datagram never arrived (filtered?); trusting the other checks"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_say_what_to_change() {
        let msg =
            |errno| describe_setup_error("io_uring_setup", &io::Error::from_raw_os_error(errno));
        assert!(msg(libc::ENOMEM).contains("RLIMIT_MEMLOCK"));
        assert!(msg(libc::ENOSYS).contains("ENOSYS"));
        let eperm = msg(libc::EPERM);
        assert!(
            eperm.contains("io_uring_disabled") || eperm.contains("seccomp"),
            "{eperm}"
        );
        assert!(msg(libc::EINVAL).contains("6.0"));
    }

    #[test]
    fn sync_group_reports_the_first_fd_error_once_all_completed() {
        let mut done = Completions {
            sync: SyncGroup::InFlight {
                pending: 3,
                error: None,
            },
            ..Completions::default()
        };
        let cqe = |index: u64, result| Cqe {
            user_data: UD_SYNC_GROUP | index,
            result,
            flags: 0,
        };
        done.take(cqe(2, -libc::EIO));
        done.take(cqe(0, 0));
        assert!(matches!(done.sync, SyncGroup::InFlight { pending: 1, .. }));
        done.take(cqe(1, -libc::EBADF));
        assert_eq!(done.sync, SyncGroup::Done(Some(libc::EBADF)));
        assert!(done.stash.is_empty());
    }

    #[test]
    fn user_data_kinds_do_not_overlap() {
        for kind in [UD_RECV, UD_SEND, UD_FSYNC, UD_CANCEL, UD_SYNC_GROUP] {
            assert_eq!(kind & UD_INDEX_MASK, 0);
            assert_eq!((kind | UD_INDEX_MASK) & UD_KIND_MASK, kind);
        }
    }
}
